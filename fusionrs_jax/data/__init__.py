"""Layer 2: one grain input pipeline per task and the one image decoder."""
