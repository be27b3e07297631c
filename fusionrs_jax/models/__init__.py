"""Pure Flax Linen model families (no I/O, no optimizer); one family per module."""
