"""Deprecated spelling of `python -m data_prep.ir_text`; forwards to it."""

import runpy
import sys

if __name__ == "__main__":
  print("deprecated: use `python -m data_prep.ir_text`", file=sys.stderr)
  runpy.run_module("data_prep.ir_text", run_name="__main__", alter_sys=True)
