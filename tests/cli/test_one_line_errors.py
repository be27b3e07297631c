"""Every command answers a user mistake with one `error:` line on stderr naming the flag or
file, exit code 2, no traceback or usage dump, and nothing created (issue 14).

The command lines run in one driver process that imports the heavy libraries once and forks
a child per case (tests/cli/cli_driver.py), each in a folder of its own."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SIGLIP = str(REPO / "configs" / "siglip_ir.py")

# (case id, module, args, text the error line must contain). "{d}" is the case's folder,
# which holds only in.json (not JSON) and empty/ (an empty folder) before the command runs.
CASES = [
  ("main_missing_config", "fusionrs_jax.main", ["--config=nope.py"], "--config=nope.py: no such"),
  (
    "main_bad_data_dir",
    "fusionrs_jax.main",
    [
      f"--config={SIGLIP}:size=tiny",
      "--config.data.dir={d}/absent",
      "--config.data.demo_world_if_missing=False",
      "--workdir={d}/run",
    ],
    "--config.data.dir={d}/absent: no dataset_info.json",
  ),
  ("main_unknown_flag", "fusionrs_jax.main", ["--cnofig=x"], "Unknown command line flag"),
  ("pipeline", "fusionrs_jax.pipeline", ["--config=nope.py"], "--config=nope.py: no such"),
  (
    "ingest_missing_json",
    "data_prep.ingest",
    ["--source=karpathy", "--images={d}/empty", "--out={d}/out", "--name=x"],
    "--json is required",
  ),
  (
    "ingest_not_json",
    "data_prep.ingest",
    ["--source=karpathy", "--json={d}/in.json", "--images={d}/empty", "--out={d}/o", "--name=x"],
    "in.json: not JSON at line 1 column 1",
  ),
  (
    "translate",
    "data_prep.translate",
    ["--checkpoint={d}/nope", "--in={d}/empty", "--out={d}/out"],
    "--in={d}/empty: no dataset_info.json",
  ),
  ("ir_captions", "data_prep.ir_text", ["--in={d}/empty", "--out={d}/out"], "--in={d}/empty"),
  (
    "tokenizer",
    "data_prep.ingest.tokenizer",
    ["--data={d}/empty", "--out={d}/t.model"],
    "--data={d}/empty",
  ),
  (
    "retrieval",
    "fusionrs_jax.cli.evaluate",
    ["retrieval", "--checkpoint={d}/empty"],
    "--checkpoint={d}/empty: no config.json",
  ),
  (
    "presence",
    "fusionrs_jax.cli.evaluate",
    ["presence", "--checkpoint={d}/empty", "--data={d}/empty"],
    "--checkpoint={d}/empty",
  ),
  (
    "captioning",
    "fusionrs_jax.cli.evaluate",
    ["captioning", "--predictions={d}/p.jsonl"],
    "--predictions={d}/p.jsonl",
  ),
  (
    "export",
    "fusionrs_jax.export.hf_siglip",
    ["--checkpoint={d}/empty", "--out={d}/out"],
    "{d}/empty",
  ),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  """{case id: (folder, exit code, stderr, files in the folder afterwards)}."""
  root = tmp_path_factory.mktemp("cli_errors")
  cases = []
  for case_id, module, args, _ in CASES:
    folder = root / case_id
    (folder / "empty").mkdir(parents=True)
    (folder / "in.json").write_text("this is not JSON\n")
    cases.append({"module": module, "args": [a.format(d=folder) for a in args], "cwd": str(folder)})
  (root / "cases.json").write_text(json.dumps(cases))
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
  proc = subprocess.run(
    [
      sys.executable,
      str(REPO / "tests" / "cli" / "cli_driver.py"),
      str(root / "cases.json"),
      str(root / "results.json"),
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = {}
  for (case_id, *_), result in zip(CASES, json.loads((root / "results.json").read_text())):
    folder = root / case_id
    left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    out[case_id] = (folder, result["code"], result["stderr"], left)
  return out


@pytest.mark.parametrize("case_id,module,args,message", CASES, ids=[c[0] for c in CASES])
def test_user_mistake_is_one_line_exit_2_and_creates_nothing(
  results, case_id, module, args, message
):
  folder, code, stderr, left = results[case_id]
  lines = stderr.strip().splitlines()
  assert code == 2, stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
  assert message.format(d=folder) in lines[0]
  assert left == ["empty", "in.json"]
