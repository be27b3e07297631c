"""README promises that CI keeps: its test command is the one .ci/run runs."""

import os
import re

from tests.conftest import REPO


def _read(path):
  with open(os.path.join(REPO, path)) as f:
    return f.read()


def test_ci_runs_the_readme_test_command_verbatim():
  readme, ci = _read("README.md"), _read(".ci/run")
  blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
  assert "fusionrs_jax.main --config=configs/siglip_ir.py" in blocks[0]
  test_cmd = blocks[1].strip()
  assert "pytest" in test_cmd and "pip install" in test_cmd
  ci_lines = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.startswith("#")]
  assert test_cmd in ci_lines


def test_readme_pod_preset_table_is_the_committed_aot_json():
  """The scale-out table is generated from benchmarks/results/aot/*.json (the AOT compiler's
  reports), and every pod preset there fits its topology with >= 15% HBM headroom."""
  import json

  from benchmarks import aot_presets

  out_dir = os.path.join(REPO, "benchmarks", "results", "aot")
  reports = {}
  for name in aot_presets.PRESETS:
    with open(os.path.join(out_dir, f"{name}.json")) as f:
      reports[name] = json.load(f)
  for name, r in reports.items():
    assert r["fits"] and r["headroom"] >= 0.15, (name, r.get("reason"))
  readme = _read("README.md")
  block = re.search(r"<!-- aot-table[^>]*-->\n(.*?)<!-- /aot-table -->", readme, re.S).group(1)
  rate = os.path.join(REPO, "benchmarks", "results", "input_pipeline.json")
  assert block.strip() == aot_presets.table(out_dir, rate).strip()
