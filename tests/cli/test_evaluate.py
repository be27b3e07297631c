"""`python -m fusionrs_jax.cli.evaluate TASK`: scores, JSON output, one-line errors, and the
deprecated `python -m fusionrs_jax.evaluators.<task>` spelling."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run(*args):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  return subprocess.run(
    [sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
  )


@pytest.fixture
def predictions(tmp_path):
  path = tmp_path / "p.jsonl"
  rows = [
    {"prediction": "a red roof", "references": ["a red roof"]},
    {"prediction": "Yes.", "references": ["No."], "task": "object_presence"},
  ]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def test_captioning_prints_and_writes_the_scores(predictions, tmp_path):
  out = tmp_path / "s.json"
  proc = _run(
    "fusionrs_jax.cli.evaluate", "captioning", f"--predictions={predictions}", f"--out={out}"
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  printed = json.loads(proc.stdout)
  assert printed["caption/ROUGE-L"] == pytest.approx(1.0)
  assert printed["object_presence/exact_match"] == 0.0
  assert json.loads(out.read_text()) == printed


def test_old_module_spelling_forwards_with_a_deprecation_line(predictions):
  proc = _run("fusionrs_jax.evaluators.captioning", f"--predictions={predictions}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "deprecated: use `python -m fusionrs_jax.cli.evaluate captioning`" in proc.stderr
  assert json.loads(proc.stdout)["caption/ROUGE-L"] == pytest.approx(1.0)


@pytest.mark.parametrize(
  "args,message",
  [
    (("bogus",), "error: expected one task (retrieval|presence|captioning), got bogus"),
    (
      ("captioning", "--predictions=/nonexistent.jsonl"),
      "error: --predictions=/nonexistent.jsonl: no such file",
    ),
    (
      ("presence", "--checkpoint=/nonexistent"),
      "error: --checkpoint=/nonexistent: no config.json there",
    ),
  ],
)
def test_user_mistakes_are_one_line_and_exit_2(args, message):
  proc = _run("fusionrs_jax.cli.evaluate", *args)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
