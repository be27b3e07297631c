"""make_optimizer: decoupled weight decay on weight matrices only (big_vision's `wd`), and
Adam's first moment in bfloat16 when asked."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from configs import common as config_common
from configs import siglip_ir
from fusionrs_jax.models import siglip
from fusionrs_jax.trainers import common


def _optim(lr, wd, **kw):
  o = config_common.adamw_config(lr, warmup_steps=0)
  o.weight_decay, o.end_lr_frac, o.grad_clip = wd, 1.0, 0.0
  o.update(kw)
  return o


@pytest.fixture(scope="module")
def siglip_params():
  model = siglip.from_config(siglip_ir.get_config("size=tiny"))
  return nn.unbox(model.init(jax.random.PRNGKey(0), **siglip.dummy_inputs(model)))


def test_only_weight_matrices_decay(siglip_params):
  mask = common.decay_mask(siglip_params)
  flat = {"/".join(str(k.key) for k in p): m for p, m in jax.tree_util.tree_leaves_with_path(mask)}
  decayed = {k for k, m in flat.items() if m}
  assert decayed and all(k.endswith("/kernel") for k in decayed)
  for name in ("logit_scale", "logit_bias", "/bias", "/scale", "position_embedding", "probe"):
    assert not any(name in k for k in decayed), name
  # Every kernel of ndim >= 2 is decayed.
  assert decayed == {k for k in flat if k.endswith("/kernel")}


@pytest.mark.parametrize("lr", [1e-3, 1e-1])
def test_decay_is_a_fraction_per_step_whatever_the_learning_rate(siglip_params, lr):
  wd = 1e-2
  tx = common.make_optimizer(_optim(lr, wd), total_steps=10)
  state = tx.init(siglip_params)
  zeros = jax.tree.map(jnp.zeros_like, siglip_params)  # Adam's update of a zero gradient is 0
  updates, _ = tx.update(zeros, state, siglip_params)
  new = jax.tree.map(lambda p, u: p + u, siglip_params, updates)
  mask = common.decay_mask(siglip_params)
  for p, n, m in zip(*(jax.tree.leaves(t) for t in (siglip_params, new, mask))):
    want = np.asarray(p) * (1.0 - wd) if m else np.asarray(p)
    np.testing.assert_allclose(np.asarray(n), want, rtol=1e-6, atol=1e-8)


def test_decay_follows_the_schedule_multiplier(siglip_params):
  """At the middle of a linear warmup (lr = peak / 2) the decay is half the configured one."""
  o = _optim(1e-3, 1e-2)
  o.warmup_steps = 4
  tx = common.make_optimizer(o, total_steps=100)
  state = tx.init(siglip_params)
  zeros = jax.tree.map(jnp.zeros_like, siglip_params)
  for _ in range(3):  # steps 0, 1, 2 -> the update applied at step 2 uses lr(2) = peak / 2
    updates, state = tx.update(zeros, state, siglip_params)
  assert np.asarray(updates["params"]["logit_scale"]) == pytest.approx(0.0)
  mask = common.decay_mask(siglip_params)
  ratios = [
    float((u / p).mean())
    for p, u, m in zip(*(jax.tree.leaves(t) for t in (siglip_params, updates, mask)))
    if m
  ]
  assert ratios and all(r == pytest.approx(-0.5e-2, rel=1e-4) for r in ratios)


def test_bfloat16_first_moment(siglip_params):
  tx = common.make_optimizer(_optim(1e-3, 1e-4, mu_dtype="bfloat16"), total_steps=10)
  state = tx.init(siglip_params)
  adam = next(
    s for s in jax.tree.leaves(state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu")
  )
  assert {x.dtype for x in jax.tree.leaves(adam.mu)} == {jnp.dtype(jnp.bfloat16)}
  assert {x.dtype for x in jax.tree.leaves(adam.nu)} == {jnp.dtype(jnp.float32)}
