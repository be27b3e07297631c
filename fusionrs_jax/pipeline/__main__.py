"""`python -m fusionrs_jax.pipeline --config=configs/pipeline_fusionrs.py`."""

from fusionrs_jax.core import command
from fusionrs_jax.pipeline import run

run.define_flags()
command.run(run.main, config_flag="config")
