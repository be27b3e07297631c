"""`python -m data_prep.ingest --source=... --out=DIR` (see data_prep/ingest/cli.py)."""

from data_prep.ingest import cli
from fusionrs_jax.core import command

cli.define_flags()
command.run(cli.main)
