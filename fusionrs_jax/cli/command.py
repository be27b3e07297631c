"""How commands start and fail (see fusionrs_jax.core.command, where it lives so that the
data_prep commands below this layer start the same way)."""

from fusionrs_jax.core.command import fail, guarded, message_of, one_line, parse_flags, run

__all__ = ["fail", "guarded", "message_of", "one_line", "parse_flags", "run"]
