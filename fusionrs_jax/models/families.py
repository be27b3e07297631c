"""`from_config(config)`: the model of any run config, its family picked by config.trainer."""

from fusionrs_jax.models import captioner, cyclegan, siglip

_FAMILIES = {"siglip": siglip, "captioner": captioner, "translator": cyclegan}


def from_config(config):
  """SigLIP, Captioner or CycleGAN of a run config (config.trainer names the family)."""
  family = config.get("trainer")
  if family not in _FAMILIES:
    raise ValueError(f"config.trainer {family!r} names no model family ({', '.join(_FAMILIES)})")
  return _FAMILIES[family].from_config(config)
