"""ViT and text tower: shapes, channel options, remat/bfloat16 equivalence, logical axes on every param,
scanned layers and named remat policies."""

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from fusionrs_jax.models import scan
from fusionrs_jax.models.text import TextTransformer
from fusionrs_jax.models.vit import ViT

ALLOWED_AXES = {
  "batch",
  "length",
  "embed",
  "mlp",
  "heads",
  "kv",
  "vocab",
  "patch",
  "channels",
  "norm",
}
VIT = {"image_size": 32, "patch_size": 8, "width": 32, "depth": 2, "mlp_dim": 64, "num_heads": 2}
TEXT = {
  "vocab_size": 64,
  "text_len": 8,
  "width": 24,
  "depth": 2,
  "mlp_dim": 48,
  "num_heads": 2,
  "out_dim": 32,
}


def _images(c, b=2, seed=0):
  return jax.random.uniform(jax.random.key(seed), (b, 32, 32, c), minval=-1, maxval=1)


def _assert_all_params_named(variables, allowed=ALLOWED_AXES):
  leaves = jax.tree_util.tree_leaves(
    variables, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
  )
  assert leaves
  for leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned), leaf
    assert len(leaf.names) == leaf.value.ndim
    assert set(leaf.names) <= allowed, leaf.names


def test_vit_returns_pooled_and_tokens_with_named_params():
  model = ViT(**VIT)
  variables = model.init(jax.random.key(0), _images(3))
  _assert_all_params_named(variables)
  pooled, tokens = model.apply(variables, _images(3))
  assert pooled.shape == (2, 32) and tokens.shape == (2, 16, 32)
  assert np.all(np.isfinite(pooled))
  # Each image is encoded independently of the rest of the batch.
  single, _ = model.apply(variables, _images(3)[:1])
  np.testing.assert_allclose(single, pooled[:1], atol=1e-5)


def test_vit_one_channel_patch_embedding_and_no_head():
  model = ViT(**VIT, num_channels=1, use_head=False)
  variables = nn.meta.unbox(model.init(jax.random.key(0), _images(1)))
  assert variables["params"]["patch_embedding"]["kernel"].shape == (8, 8, 1, 32)
  assert "head" not in variables["params"]
  pooled, tokens = model.apply(variables, _images(1))
  assert pooled is None and tokens.shape == (2, 16, 32)


def test_vit_remat_and_bfloat16_match_float32():
  images = _images(3)
  variables = ViT(**VIT).init(jax.random.key(1), images)
  ref, _ = ViT(**VIT).apply(variables, images)
  remat, _ = ViT(**VIT, remat=True).apply(variables, images)
  np.testing.assert_allclose(remat, ref, atol=1e-6)

  bf16_model = ViT(**VIT, dtype=jnp.bfloat16)
  bf16_vars = bf16_model.init(jax.random.key(1), images)
  # Parameters stay float32; only the compute dtype changes.
  assert {x.dtype for x in jax.tree_util.tree_leaves(nn.meta.unbox(bf16_vars))} == {
    np.dtype(np.float32)
  }
  low, _ = bf16_model.apply(variables, images)
  assert low.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(low, np.float32), ref, atol=0.1)

  grads = jax.grad(lambda v: ViT(**VIT, remat=True).apply(v, images)[0].sum())(variables)
  ref_grads = jax.grad(lambda v: ViT(**VIT).apply(v, images)[0].sum())(variables)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), grads, ref_grads)


def test_text_tower_pools_last_position_through_head():
  model = TextTransformer(**TEXT)
  tokens = jax.random.randint(jax.random.key(2), (3, 8), 0, 64)
  variables = model.init(jax.random.key(0), tokens)
  _assert_all_params_named(variables)
  pooled, seq = model.apply(variables, tokens)
  assert pooled.shape == (3, 32) and seq.shape == (3, 8, 24)
  head = nn.meta.unbox(variables)["params"]["head"]
  np.testing.assert_allclose(pooled, seq[:, -1] @ head["kernel"] + head["bias"], atol=1e-5)
  # Attention is bidirectional: the first token still changes the last-position embedding.
  changed = tokens.at[:, 0].set((tokens[:, 0] + 1) % 64)
  assert not np.allclose(model.apply(variables, changed)[0], pooled)


def _remat_policies(jaxpr) -> list:
  """Policies of every remat in a (closed) jaxpr, nested ones (scan bodies) included."""
  found = []
  for eqn in jaxpr.eqns:
    if "policy" in eqn.params:
      found.append(eqn.params["policy"])
    for value in eqn.params.values():
      for sub in value if isinstance(value, tuple | list) else (value,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          found += _remat_policies(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          found += _remat_policies(sub)
  return found


def test_scanned_encoder_stacks_named_params_and_runs_the_named_policy():
  images = _images(3)
  model = ViT(**VIT, remat=True, remat_policy="dots_with_no_batch_dims_saveable", scan_layers=True)
  boxed = model.init(jax.random.key(0), images)
  layers = boxed["params"]["encoder"]["layers"]
  assert set(boxed["params"]["encoder"]) == {"layers"}
  _assert_all_params_named(boxed, ALLOWED_AXES | {"layers"})
  for leaf in jax.tree.leaves(layers, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)):
    assert leaf.names[0] == "layers" and leaf.value.shape[0] == VIT["depth"]
  # Converting the unscanned boxed init gives the same names and shapes.
  flat = ViT(**VIT).init(jax.random.key(0), images)
  describe = lambda t: jax.tree.map(
    lambda x: (x.names, x.value.shape), t, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
  )
  assert describe(scan.scan_params(flat)) == describe(boxed)
  # One remat per (scanned) layer body, with the named policy; none without remat.
  jaxpr = jax.make_jaxpr(lambda v: model.apply(v, images))(nn.unbox(boxed)).jaxpr
  policy = jax.checkpoint_policies.dots_with_no_batch_dims_saveable
  assert _remat_policies(jaxpr) == [policy]
  plain = jax.make_jaxpr(lambda v: ViT(**VIT).apply(v, images))(nn.unbox(flat)).jaxpr
  assert _remat_policies(plain) == []
  default = jax.make_jaxpr(lambda v: ViT(**VIT, remat=True).apply(v, images))(nn.unbox(flat))
  assert _remat_policies(default.jaxpr) == [jax.checkpoint_policies.nothing_saveable] * 2


def test_unknown_remat_policy_is_a_value_error():
  model = ViT(**VIT, remat=True, remat_policy="everything")
  with pytest.raises(ValueError, match="unknown remat policy 'everything'.*everything_saveable"):
    model.init(jax.random.key(0), _images(3))
