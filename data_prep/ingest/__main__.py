"""`python -m data_prep.ingest --source=... --out=DIR`."""

from absl import app

from data_prep.ingest import writer

writer.define_flags()
app.run(writer.main)
