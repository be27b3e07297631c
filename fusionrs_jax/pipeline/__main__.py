"""`python -m fusionrs_jax.pipeline --config=configs/pipeline_fusionrs.py`."""

from absl import app

from fusionrs_jax.pipeline import run

run.define_flags()
app.run(run.main)
