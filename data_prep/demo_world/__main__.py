"""`python -m data_prep.demo_world --out=DIR`."""

from absl import app

from data_prep.demo_world import world

world.define_flags()
app.run(world.main)
