"""How commands start and fail: absl flags, `--help` from the module docstring, and
every user mistake (unknown flag, missing or wrong folder) as one `error: ...` line, exit 2."""

import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import app, flags


def fail(message: str) -> NoReturn:
  """Ends the command with `error: <message>` on stderr and exit code 2."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def message_of(e: Exception) -> str:
  """An exception's message (str(KeyError) would add quotes)."""
  return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


def run(main: Callable[[Sequence[str]], None]) -> None:
  """`app.run(main)`, except that a flag error is one line (absl would add a usage hint, exit 1)."""
  app.define_help_flags()
  try:
    remaining = flags.FLAGS(sys.argv)
  except flags.Error as e:
    fail(str(e))
  if len(remaining) > 1:
    fail(f"unexpected arguments: {' '.join(remaining[1:])}")
  app.run(main, argv=sys.argv, flags_parser=lambda _: remaining)
