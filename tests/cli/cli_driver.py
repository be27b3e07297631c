"""Runs many command lines cheaply: imports the heavy libraries once, then forks one child
per case that runs `python -m MODULE ARGS` in its own folder (stderr to a file, exit code
recorded). Usage: python cli_driver.py CASES.json RESULTS.json, CASES a list of
{"module", "args", "cwd"}; RESULTS a list of {"code", "stderr"}."""

import json
import os
import runpy
import sys
import traceback

# Preloaded so each child starts in milliseconds; none of these define absl flags.
import jax  # noqa: F401
import numpy  # noqa: F401
import orbax.checkpoint  # noqa: F401

from fusionrs_jax.core import records  # noqa: F401
from fusionrs_jax.data import input_pipeline  # noqa: F401


def _child(case: dict, err_path: str) -> None:
  fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
  os.dup2(fd, 2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 1)
  os.chdir(case["cwd"])
  sys.argv = [case["module"], *case["args"]]
  code = 0
  try:
    runpy.run_module(case["module"], run_name="__main__", alter_sys=True)
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  except BaseException:
    traceback.print_exc()
    code = 1
  sys.stderr.flush()
  os._exit(code)


def main(cases_path: str, results_path: str) -> None:
  with open(cases_path) as f:
    cases = json.load(f)
  results = []
  for i, case in enumerate(cases):
    err_path = f"{results_path}.{i}.stderr"
    pid = os.fork()
    if pid == 0:
      _child(case, err_path)
    _, status = os.waitpid(pid, 0)
    with open(err_path, errors="replace") as f:
      results.append({"code": os.waitstatus_to_exitcode(status), "stderr": f.read()})
  with open(results_path, "w") as f:
    json.dump(results, f)


if __name__ == "__main__":
  main(*sys.argv[1:])
