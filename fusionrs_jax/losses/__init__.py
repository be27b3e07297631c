"""Layer 2: contrastive (sigmoid) and GAN losses as pure functions."""
