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
