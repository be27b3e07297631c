"""core.command's quiet default: third-party INFO chatter (Orbax option reprs, JAX's TPU
probe) is dropped unless --verbosity >= 1; warnings and our own progress lines stay."""

import logging

import pytest
from absl import logging as absl_logging

from fusionrs_jax.core import command


def _record(path: str, level: int, name: str = "absl") -> logging.LogRecord:
  return logging.LogRecord(name, level, path, 1, "message", None, None)


@pytest.mark.parametrize(
  "path,name,level,shown",
  [
    ("/venv/site-packages/orbax/checkpoint/checkpoint_manager.py", "absl", logging.INFO, False),
    ("/venv/site-packages/jax/_src/xla_bridge.py", "jax._src.xla_bridge", logging.INFO, False),
    ("/venv/site-packages/orbax/checkpoint/checkpoint_manager.py", "absl", logging.WARNING, True),
    ("/work/main/fusionrs_jax/trainers/common.py", "absl", logging.INFO, True),
    ("/home/me/jax/fusionrs_jax/trainers/common.py", "absl", logging.INFO, True),
  ],
)
def test_third_party_info_is_quiet_unless_verbose(path, name, level, shown):
  quiet = command._ThirdPartyInfoFilter()
  before = absl_logging.get_verbosity()
  try:
    absl_logging.set_verbosity(absl_logging.INFO)
    assert quiet.filter(_record(path, level, name)) is shown
    absl_logging.set_verbosity(1)
    assert quiet.filter(_record(path, level, name)) is True
  finally:
    absl_logging.set_verbosity(before)


def test_one_line_keeps_the_last_line_of_an_embedded_traceback():
  text = "Failed loading config\nTraceback (most recent call last):\n  File x\nKeyError: 'size'"
  assert command.one_line(text) == "Failed loading config KeyError: 'size'"


def test_run_log_keeps_early_records_until_the_folder_exists(tmp_path):
  folder = tmp_path / "run"
  log = command.RunLog(str(folder))
  log.emit(_record("/venv/site-packages/orbax/checkpoint/x.py", logging.INFO))
  assert not folder.exists()  # the handler never creates the run folder
  folder.mkdir()
  log.emit(_record("/work/main/fusionrs_jax/trainers/common.py", logging.WARNING))
  log.close()
  lines = (folder / "log.txt").read_text().splitlines()
  assert len(lines) == 2 and all(line.endswith("message") for line in lines)
  assert "x.py" in lines[0] and "common.py" in lines[1]
