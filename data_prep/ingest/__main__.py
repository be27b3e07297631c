"""`python -m data_prep.ingest --source=... --out=DIR` (see data_prep/ingest/cli.py)."""

from absl import flags

from data_prep.ingest import cli
from fusionrs_jax.core import command

cli.define_flags()
flags.adopt_module_key_flags(cli)  # --help lists the ingest flags
command.run(cli.main)
