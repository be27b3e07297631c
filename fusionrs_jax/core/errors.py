"""Exceptions that cross layers: what a user can fix, and a run that must stop."""


class UserError(Exception):
  """A problem the user can fix (bad config, missing data); CLIs print it as one line, exit 2."""


class NonFiniteLossError(RuntimeError):
  """The loss became NaN/inf; the message names the step and the last good checkpoint."""
