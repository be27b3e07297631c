"""Layer 1: records, sharding, checkpoints (+ load_run), metrics, multi-host start-up, errors."""
