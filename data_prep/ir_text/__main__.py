"""`python -m data_prep.ir_text --data=DIR`: IR-aware captions and instructions for paired shards."""

import os

from absl import flags

from data_prep.ir_text import captions
from fusionrs_jax.core import command, records
from fusionrs_jax.core.errors import UserError


def main(argv) -> None:
  """captions.main, after --in is checked to be a prepared dataset (nothing written before)."""
  folder = flags.FLAGS["in"].value
  if folder and not os.path.isfile(os.path.join(folder, records.INFO_FILE)):
    raise UserError(f"--in={folder}: no {records.INFO_FILE} there; not a prepared dataset")
  captions.main(argv)


captions.define_flags()
command.run(main)
