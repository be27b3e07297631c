"""`python -m data_prep.ir_text --in=DIR --out=DIR`: IR-aware captions and instructions."""

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
flags.adopt_module_key_flags(captions)  # --help lists the ir_text flags
command.run(main)
