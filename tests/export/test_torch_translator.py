"""Torch export of the CycleGAN generator: same outputs as JAX within 1e-4."""

import jax
import numpy as np
import pytest
import torch

from fusionrs_jax.export import torch_translator
from fusionrs_jax.models import cyclegan


@pytest.mark.parametrize(
  "direction, in_c, hw", [("rgb_to_ir", 3, (32, 24)), ("ir_to_rgb", 1, (20, 36))]
)
def test_torch_generator_matches_jax(direction, in_c, hw):
  # Non-trivial biases/kernels: perturb every param so a transposed or flipped kernel shows.
  model = getattr(cyclegan.build(cyclegan.Size(8, 2, 8, 2)), direction)
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 16, 16, in_c)))["params"]
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(
    tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  )
  x = np.random.default_rng(0).uniform(-1, 1, (2, *hw, in_c)).astype(np.float32)
  want = np.asarray(model.apply({"params": params}, x))
  torch_model = torch_translator.generator_from_flax(params)
  with torch.no_grad():
    got = torch_model(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_state_dict_names_mirror_flax_modules():
  params = cyclegan.build("tiny").init(jax.random.PRNGKey(0), 16)["rgb_to_ir"]
  names = set(torch_translator.state_dict_from_flax(params))
  assert {"conv_in.weight", "res_0.conv_1.bias", "up_1.weight", "conv_out.bias"} <= names
