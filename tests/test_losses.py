"""Sigmoid / softmax contrastive losses: naive numpy references and the chunked loss on 8 devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fusionrs_jax.losses import sigmoid as losses


def _unit(key, shape):
  x = jax.random.normal(key, shape)
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def _numpy_sigmoid_loss(zi, zt, t, b):
  zi, zt = np.asarray(zi, np.float64), np.asarray(zt, np.float64)
  total = 0.0
  for i in range(len(zi)):
    for j in range(len(zt)):
      z = (1.0 if i == j else -1.0) * (t * zi[i] @ zt[j] + b)
      total += np.log1p(np.exp(-z))  # -log_sigmoid(z)
  return total / len(zi)


def _numpy_softmax_loss(zi, zt, t):
  logits = t * np.asarray(zi, np.float64) @ np.asarray(zt, np.float64).T

  def ce(logit):
    return np.mean(np.log(np.exp(logit).sum(1)) - np.diag(logit))

  return 0.5 * (ce(logits) + ce(logits.T))


def test_sigmoid_loss_matches_numpy_double_loop():
  ki, kt = jax.random.split(jax.random.key(0))
  zi, zt = _unit(ki, (6, 5)), _unit(kt, (6, 5))
  got = losses.sigmoid_loss(zi, zt, 10.0, -10.0)
  np.testing.assert_allclose(got, _numpy_sigmoid_loss(zi, zt, 10.0, -10.0), rtol=1e-5)


def test_sigmoid_loss_prefers_aligned_pairs():
  z = _unit(jax.random.key(1), (8, 16))
  aligned = losses.sigmoid_loss(z, z, 10.0, -5.0)
  shuffled = losses.sigmoid_loss(z, jnp.roll(z, 1, axis=0), 10.0, -5.0)
  assert aligned < shuffled


def test_softmax_contrastive_loss_matches_numpy():
  ki, kt = jax.random.split(jax.random.key(2))
  zi, zt = _unit(ki, (7, 4)), _unit(kt, (7, 4))
  got = losses.softmax_contrastive_loss(zi, zt, 5.0)
  np.testing.assert_allclose(got, _numpy_softmax_loss(zi, zt, 5.0), rtol=1e-5)


def _mesh(shape, names):
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
  return jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Auto,) * len(names))


@pytest.mark.parametrize(
  "shape,names", [((8,), ("data",)), ((2, 4), ("data", "fsdp"))], ids=["1axis", "2axes"]
)
def test_chunked_loss_matches_reference_on_8_devices(shape, names):
  mesh = _mesh(shape, names)
  batch, dim = 32, 8  # 4 examples per device
  ki, kt = jax.random.split(jax.random.key(3))
  zi, zt = _unit(ki, (batch, dim)), _unit(kt, (batch, dim))
  sharding = NamedSharding(mesh, P(names))
  zi_s, zt_s = jax.device_put(zi, sharding), jax.device_put(zt, sharding)
  t, b = jnp.float32(7.0), jnp.float32(-3.0)

  chunked = functools.partial(losses.chunked_sigmoid_loss, mesh=mesh, axis_names=names)
  ref_val, ref_grads = jax.value_and_grad(losses.sigmoid_loss, argnums=(0, 1, 2, 3))(zi, zt, t, b)
  val, grads = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1, 2, 3)))(zi_s, zt_s, t, b)

  np.testing.assert_allclose(val, ref_val, rtol=1e-5, atol=1e-5)
  for g, rg, name in zip(grads, ref_grads, ["zimg", "ztxt", "t", "b"]):
    np.testing.assert_allclose(g, rg, rtol=1e-5, atol=1e-5, err_msg=name)
  # Non-trivial gradients, so the comparison above means something.
  assert float(jnp.abs(ref_grads[0]).max()) > 1e-3


def test_multi_pair_loss_weights_each_pair():
  keys = jax.random.split(jax.random.key(4), 4)
  emb = {k: _unit(key, (5, 8)) for k, key in zip(["rgb", "ir", "text", "ir_text"], keys)}
  weights = {"rgb_text": 1.0, "ir_text": 0.5, "rgb_ir": 0.25}
  total, per_pair = losses.multi_pair_loss(emb, weights, 10.0, -10.0)

  expect = {
    "rgb_text": losses.sigmoid_loss(emb["rgb"], emb["text"], 10.0, -10.0),
    "ir_text": losses.sigmoid_loss(emb["ir"], emb["ir_text"], 10.0, -10.0),
    "rgb_ir": losses.sigmoid_loss(emb["rgb"], emb["ir"], 10.0, -10.0),
  }
  for k, value in expect.items():
    np.testing.assert_allclose(per_pair[k], value, rtol=1e-6)
  np.testing.assert_allclose(total, sum(weights[k] * expect[k] for k in expect), rtol=1e-6)


def test_multi_pair_loss_skips_zero_weight_and_falls_back_to_text():
  keys = jax.random.split(jax.random.key(5), 3)
  emb = {k: _unit(key, (5, 8)) for k, key in zip(["rgb", "ir", "text"], keys)}
  total, per_pair = losses.multi_pair_loss(emb, {"rgb_text": 0.0, "ir_text": 2.0}, 10.0, -10.0)
  assert set(per_pair) == {"ir_text"}
  expect = losses.sigmoid_loss(emb["ir"], emb["text"], 10.0, -10.0)
  np.testing.assert_allclose(total, 2.0 * expect, rtol=1e-6)
  with pytest.raises(ValueError, match="unknown loss pairs"):
    losses.multi_pair_loss(emb, {"rgb_txt": 1.0}, 10.0, -10.0)


# ----------------------------------------------------------------------------
# Missing-modality masks: a False row leaves the pairs it cannot take part in.
# ----------------------------------------------------------------------------

_VALID = np.array([1, 0, 1, 1, 0, 1, 1, 0], bool)


def _masked_pair_inputs(seed, batch=8, dim=6):
  ki, kt = jax.random.split(jax.random.key(seed))
  return _unit(ki, (batch, dim)), _unit(kt, (batch, dim))


@pytest.mark.parametrize("name", ["sigmoid", "softmax"])
def test_masked_loss_equals_the_loss_of_the_batch_without_those_rows(name):
  zi, zt = _masked_pair_inputs(6)
  if name == "sigmoid":
    loss = lambda a, c, valid=None: losses.sigmoid_loss(a, c, 10.0, -10.0, valid)
  else:
    loss = lambda a, c, valid=None: losses.softmax_contrastive_loss(a, c, 10.0, valid)
  masked = loss(zi, zt, jnp.asarray(_VALID))
  dropped = loss(zi[_VALID], zt[_VALID])
  np.testing.assert_allclose(masked, dropped, rtol=1e-6)
  # Whatever sits in the missing rows (a black image's embedding, garbage) changes nothing.
  noise = _unit(jax.random.key(7), zi.shape)
  garbage = jnp.where(jnp.asarray(_VALID)[:, None], zi, noise)
  np.testing.assert_allclose(loss(garbage, zt, jnp.asarray(_VALID)), masked, rtol=1e-6)
  assert not np.isclose(loss(garbage, zt), loss(zi, zt))


def test_all_rows_valid_give_the_unmasked_loss_bit_for_bit():
  zi, zt = _masked_pair_inputs(8, batch=32)
  all_true = jnp.ones(zi.shape[0], bool)
  ref = losses.sigmoid_loss(zi, zt, 10.0, -10.0)
  assert float(losses.sigmoid_loss(zi, zt, 10.0, -10.0, all_true)) == float(ref)

  # As the trainer runs it: jitted, with masks for every input (all present).
  emb = {"rgb": zi, "ir": zt, "text": zt[::-1]}
  weights = {"rgb_ir": 1.0, "rgb_text": 0.5}

  def run(masks):
    fn = lambda e, m: losses.multi_pair_loss(e, weights, 10.0, -10.0, masks=m)
    total = jax.jit(jax.value_and_grad(lambda e, m: fn(e, m)[0]))(emb, masks)[0]
    return float(total), jax.jit(fn)(emb, masks)[1]

  masked_total, masked_pairs = run(dict.fromkeys(("rgb", "ir", "text"), all_true))
  ref_total, ref_pairs = run(None)
  assert masked_total == ref_total
  assert {k: float(v) for k, v in masked_pairs.items()} == {
    k: float(v) for k, v in ref_pairs.items()
  }


def test_sigmoid_loss_with_no_valid_row_is_zero_not_nan():
  zi, zt = _masked_pair_inputs(9)
  assert float(losses.sigmoid_loss(zi, zt, 10.0, -10.0, jnp.zeros(8, bool))) == 0.0


def test_multi_pair_loss_drops_rows_without_ir_from_ir_pairs_only():
  keys = jax.random.split(jax.random.key(10), 3)
  emb = {k: _unit(key, (8, 6)) for k, key in zip(["rgb", "ir", "text"], keys)}
  has_ir = jnp.asarray(_VALID)
  weights = {"rgb_text": 1.0, "ir_text": 0.5, "rgb_ir": 0.25}
  total, per_pair = losses.multi_pair_loss(emb, weights, 10.0, -10.0, masks={"ir": has_ir})
  kept = {k: v[_VALID] for k, v in emb.items()}
  _, dropped = losses.multi_pair_loss(kept, weights, 10.0, -10.0)
  _, full = losses.multi_pair_loss(emb, weights, 10.0, -10.0)
  np.testing.assert_allclose(per_pair["ir_text"], dropped["ir_text"], rtol=1e-6)
  np.testing.assert_allclose(per_pair["rgb_ir"], dropped["rgb_ir"], rtol=1e-6)
  # RGB-text keeps every row: all of them have RGB and a caption.
  assert float(per_pair["rgb_text"]) == float(full["rgb_text"])
  np.testing.assert_allclose(total, sum(weights[k] * per_pair[k] for k in weights), rtol=1e-6)


def test_masked_chunked_loss_matches_masked_reference_on_8_devices():
  # Two mesh axes: the valid flags travel the same 8-device ring as the text chunks.
  names = ("data", "fsdp")
  mesh = _mesh((2, 4), names)
  batch = 32
  zi, zt = _masked_pair_inputs(11, batch=batch, dim=8)
  valid = jnp.asarray(np.random.default_rng(0).random(batch) < 0.6)
  sharding = NamedSharding(mesh, P(names))
  zi_s, zt_s, valid_s = (jax.device_put(x, sharding) for x in (zi, zt, valid))
  t, b = jnp.float32(7.0), jnp.float32(-3.0)

  def chunked(zi, zt, t, b, valid):
    return losses.chunked_sigmoid_loss(zi, zt, t, b, mesh, names, valid=valid)

  grad = lambda f: jax.value_and_grad(f, argnums=(0, 1, 2, 3))
  ref_val, ref_grads = grad(losses.sigmoid_loss)(zi, zt, t, b, valid)
  val, grads = jax.jit(grad(chunked))(zi_s, zt_s, t, b, valid_s)
  np.testing.assert_allclose(val, ref_val, rtol=1e-5, atol=1e-5)
  for g, rg, name in zip(grads, ref_grads, ["zimg", "ztxt", "t", "b"]):
    np.testing.assert_allclose(g, rg, rtol=1e-5, atol=1e-5, err_msg=name)
  # Rows left out get no gradient at all; the others do.
  assert float(jnp.abs(grads[0][~valid]).max()) == 0.0
  assert float(jnp.abs(grads[0][valid]).max()) > 1e-3
  np.testing.assert_allclose(
    val, losses.sigmoid_loss(zi[valid], zt[valid], t, b), rtol=1e-5, atol=1e-5
  )
