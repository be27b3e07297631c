"""How commands start and fail: absl flags, `--help` from the module docstring, every user
mistake (unknown flag, missing file, wrong folder: app.UsageError or UserError) as one
`error: ...` line on stderr with exit code 2, and third-party INFO chatter kept quiet.

Layer 1, so data_prep commands (layer 3) and fusionrs_jax.cli (layer 6) start the same way.
"""

from __future__ import annotations

import logging as py_logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import app, flags
from absl import logging as absl_logging

from fusionrs_jax.core import process_defaults
from fusionrs_jax.core.errors import UserError

# Below WARNING, records from these packages are shown only with --verbosity >= 1: Orbax
# prints its option reprs per checkpoint, JAX probes for a TPU on every start.
QUIET_PACKAGES = ("orbax", "jax", "jaxlib", "grain")
# An installed package's files (a checkout that happens to sit in a folder named jax is ours).
_INSTALLED = re.compile(r"/(?:site|dist)-packages/([^/]+)/")


def fail(message: str) -> NoReturn:
  """Ends the command with `error: <message>` on stderr and exit code 2."""
  print(f"error: {one_line(message)}", file=sys.stderr)
  sys.exit(2)


def message_of(e: BaseException) -> str:
  """An exception's message (str(KeyError) would add quotes)."""
  return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


def one_line(text: str) -> str:
  """A message on one line; an embedded traceback (config_flags puts the config file's own
  traceback in its message) is reduced to its final line."""
  if "Traceback (most recent call last)" in text:
    head = text.split("Traceback (most recent call last)")[0]
    last = [ln for ln in text.splitlines() if ln.strip()][-1]
    text = f"{head.strip()} {last.strip()}"
  return " ".join(text.replace("\\n", " ").split())


class _ThirdPartyInfoFilter(py_logging.Filter):
  """Drops INFO/DEBUG records of QUIET_PACKAGES unless --verbosity >= 1."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.levelno >= py_logging.WARNING or absl_logging.get_verbosity() >= 1:
      return True
    package = _INSTALLED.search(record.pathname.replace(os.sep, "/"))
    name = record.name.split(".")[0]
    return name not in QUIET_PACKAGES and not (package and package[1] in QUIET_PACKAGES)


_FILTER = _ThirdPartyInfoFilter()


def quiet_third_party() -> None:
  """Installs the filter on absl's handler and the root logger's (idempotent)."""
  for handler in [absl_logging.get_absl_handler(), *py_logging.getLogger().handlers]:
    if _FILTER not in handler.filters:
      handler.addFilter(_FILTER)


class RunLog(py_logging.Handler):
  """Every log record (third-party INFO included) appended to `<folder>/<name>`; records
  logged before the folder exists wait in memory (the last 2000) so that creating the run
  folder stays the trainer's job, after its checks."""

  def __init__(self, folder: str, name: str = "log.txt"):
    super().__init__()
    self.folder, self.path = folder, os.path.join(folder, name)
    self.setFormatter(absl_logging.PythonFormatter())
    self._pending: list[str] = []
    self._file = None

  def emit(self, record: py_logging.LogRecord) -> None:
    try:
      line = self.format(record)
      if self._file is None:
        if not os.path.isdir(self.folder):
          self._pending = [*self._pending[-1999:], line]
          return
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._file.writelines(p + "\n" for p in self._pending)
        self._pending = []
      self._file.write(line + "\n")
      self._file.flush()
    except Exception:
      self.handleError(record)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    super().close()


def log_to_run_folder(folder: str, name: str = "log.txt") -> RunLog | None:
  """Adds a RunLog on the root logger for a local `folder` (None for a bucket path)."""
  if "://" in folder:
    return None
  handler = RunLog(folder, name)
  py_logging.getLogger().addHandler(handler)
  return handler


def parse_flags(argv: Sequence[str], positional: int = 0) -> list[str]:
  """Parses absl flags; a flag error or an unexpected argument is one line, exit 2. Applies
  core/process_defaults.py first (XLA flags, malloc): every command starts here, before JAX
  starts a backend."""
  process_defaults.apply()
  app.define_help_flags()
  try:
    remaining = flags.FLAGS(list(argv))
  except flags.Error as e:
    fail(str(e))
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # A config-file flag's override (--config.optim.lrr=1) fails inside ml_collections.
    fail(_config_error(e))
  if len(remaining) - 1 > positional:
    fail(f"unexpected arguments: {' '.join(remaining[1 + positional :])}")
  return remaining


def _config_error(e: Exception) -> str:
  prefix = "config override names no such field: " if isinstance(e, AttributeError) else ""
  return prefix + one_line(message_of(e)).strip("'\"")


def check_config_flag(name: str = "config") -> None:
  """Loads the ml_collections config file flag `name` now: a missing file, a failing
  get_config or a misspelt override is one line (config_flags would report a missing file
  later, as "Failed loading config file config_config ...")."""
  flag = flags.FLAGS[name]
  path = getattr(flag, "config_filename", None)
  if not path:
    fail(f"--{name} is required, e.g. --{name}=configs/siglip_ir.py")
  file = path.split(":")[0]
  if not os.path.isfile(file):
    fail(f"--{name}={path}: no such file {file!r}; give a config file, e.g. configs/siglip_ir.py")
  try:
    flag.value.get("trainer")  # config_flags defers loading errors until first access
  except Exception as e:
    fail(_config_error(e))


def guarded(main: Callable[[Sequence[str]], None]) -> Callable[[Sequence[str]], None]:
  """`main` with app.UsageError / UserError turned into one line and exit code 2 (absl would
  print the module docstring and the flag help first)."""

  def run_main(argv: Sequence[str]) -> None:
    quiet_third_party()
    try:
      main(argv)
    except (app.UsageError, UserError) as e:
      fail(message_of(e))

  return run_main


def run(
  main: Callable[[Sequence[str]], None], positional: int = 0, config_flag: str | None = None
) -> None:
  """`app.run(main)` with one-line user errors; `positional` arguments are allowed
  (e.g. the task of `cli.evaluate TASK`); `config_flag` names a config file flag checked
  before main runs."""
  remaining = parse_flags(sys.argv, positional)
  if config_flag:
    check_config_flag(config_flag)
  app.run(guarded(main), argv=sys.argv, flags_parser=lambda _: remaining)
