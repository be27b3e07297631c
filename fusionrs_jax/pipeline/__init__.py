"""Layer 6: the FusionRS reproduction end to end (`python -m fusionrs_jax.pipeline`)."""
