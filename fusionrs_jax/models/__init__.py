"""Pure Flax Linen model families (no I/O, no optimizer); one family per module.

`from_config(config)` builds the model of any run config, picked by config.trainer.
"""

from fusionrs_jax.models import captioner, cyclegan, siglip

_FAMILIES = {"siglip": siglip, "captioner": captioner, "translator": cyclegan}


def from_config(config):
  """SigLIP, Captioner or CycleGAN of a run config (config.trainer names the family)."""
  family = config.get("trainer")
  if family not in _FAMILIES:
    raise ValueError(f"config.trainer {family!r} names no model family ({', '.join(_FAMILIES)})")
  return _FAMILIES[family].from_config(config)
