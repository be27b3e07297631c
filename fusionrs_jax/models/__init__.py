"""Pure Flax Linen model families (no I/O, no optimizer); one family per module.

Each family has `from_config(config)`; `families.from_config` picks the family by
config.trainer. (This file imports nothing, so importing one family never imports the rest.)
"""
