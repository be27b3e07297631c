"""`python -m data_prep.ir_text --data=DIR`: IR-aware captions and instructions for paired shards."""

from absl import app

from data_prep.ir_text import captions

captions.define_flags()
app.run(captions.main)
