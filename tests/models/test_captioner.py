"""Captioner (PaliGemma recipe): prefix-LM masking, padding, the inputs switch, scanned layers
(forward and KV-cache decoding) and named remat policies."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fusionrs_jax.models import captioner, decoding, gemma, scan, siglip

V = 48


_JITTED = {}


def FWD(model, params, *args):
  """Jitted forward, one compiled function per model (eager dispatch is far slower on CPU)."""
  if id(model) not in _JITTED:
    _JITTED[id(model)] = (model, jax.jit(model.apply))
  return _JITTED[id(model)][1](params, *args)


def _model(inputs="rgb_ir"):
  return captioner.captioner_from_presets(
    siglip.siglip_preset("tiny"), gemma.gemma_preset("tiny"), V, inputs=inputs
  )


@pytest.fixture(scope="module")
def model_params():
  model = _model()
  params = jax.jit(model.init)(jax.random.PRNGKey(0), **captioner.dummy_inputs(model))
  return model, gemma.nn.unbox(params)


def _images(seed, b=2):
  r = jax.random.split(jax.random.PRNGKey(seed))
  return (
    jax.random.uniform(r[0], (b, 32, 32, 3), minval=-1, maxval=1),
    jax.random.uniform(r[1], (b, 32, 32, 1), minval=-1, maxval=1),
  )


# [BOS p p SEP | a a a EOS]: prompt = first 4 tokens.
TOKENS = jnp.array([[2, 10, 11, 4, 20, 21, 22, 1], [2, 12, 13, 4, 23, 24, 25, 1]])
MASK_AR = jnp.array([[0, 0, 0, 0, 1, 1, 1, 1]] * 2)
VALID = jnp.ones((2, 8), bool)


def test_forward_shapes_and_image_token_count(model_params):
  model, params = model_params
  rgb, ir = _images(1)
  logits = FWD(model, params, rgb, ir, TOKENS, VALID, MASK_AR)
  assert logits.shape == (2, 8, V) and logits.dtype == jnp.float32
  assert model.num_image_tokens == 2 * 16
  assert set(params["params"]) == {"img", "img_head", "llm"}
  assert "head" not in params["params"]["img"]  # PaliGemma uses the patch tokens, no MAP head


def test_prefix_is_bidirectional_and_answer_cannot_see_future(model_params):
  model, params = model_params
  rgb, ir = _images(2)
  base = FWD(model, params, rgb, ir, TOKENS, VALID, MASK_AR)
  # Changing the last prompt token changes the first prompt position: the prefix attends fully.
  prompt_change = FWD(model, params, rgb, ir, TOKENS.at[:, 2].set(30), VALID, MASK_AR)
  assert np.abs(np.asarray(prompt_change[:, 0] - base[:, 0])).max() > 1e-4
  # Changing answer token 6 leaves every earlier position (prompt and answer) unchanged.
  future = FWD(model, params, rgb, ir, TOKENS.at[:, 6].set(30), VALID, MASK_AR)
  np.testing.assert_allclose(future[:, :6], base[:, :6], atol=1e-5)
  assert np.abs(np.asarray(future[:, 6:] - base[:, 6:])).max() > 1e-4
  # Both images are part of the prefix.
  ir_change = FWD(model, params, rgb, -ir, TOKENS, VALID, MASK_AR)
  assert np.abs(np.asarray(ir_change[:, 0] - base[:, 0])).max() > 1e-4


def test_causal_answer_matches_plain_causal_lm_when_prompt_is_empty(model_params):
  # With every text token causal, the text part is a plain LM over the image prefix:
  # position t must not change when any later token changes.
  model, params = model_params
  rgb, ir = _images(3)
  ar = jnp.ones((2, 8), jnp.int32)
  a = FWD(model, params, rgb, ir, TOKENS, VALID, ar)
  b = FWD(model, params, rgb, ir, TOKENS.at[:, 3:].set(7), VALID, ar)
  np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-5)


def test_padding_inside_the_text_changes_nothing(model_params):
  model, params = model_params
  rgb, ir = _images(4)
  base = FWD(model, params, rgb, ir, TOKENS, VALID, MASK_AR)
  padded = jnp.concatenate([TOKENS, jnp.zeros((2, 3), jnp.int32)], 1)
  valid = jnp.concatenate([VALID, jnp.zeros((2, 3), bool)], 1)
  ar = jnp.concatenate([MASK_AR, jnp.ones((2, 3), jnp.int32)], 1)
  np.testing.assert_allclose(FWD(model, params, rgb, ir, padded, valid, ar)[:, :8], base, atol=1e-5)


def test_single_image_inputs_ignore_the_other_modality():
  model = _model("rgb")
  params = model.init(jax.random.PRNGKey(0), **captioner.dummy_inputs(model))
  rgb, ir = _images(5)
  a = FWD(model, params, rgb, ir, TOKENS, VALID, MASK_AR)
  b = FWD(model, params, rgb, None, TOKENS, VALID, MASK_AR)
  np.testing.assert_array_equal(a, b)
  assert model.num_image_tokens == 16


def test_scanned_captioner_matches_unscanned_forward_and_decoding(model_params):
  model, params = model_params
  scanned = model.clone(scan_layers=True, remat=True, remat_policy="dots_saveable")
  stacked = scan.scan_params(params)
  assert set(stacked["params"]["llm"]) == {"embedder", "final_norm", "layers"}
  rgb, ir = _images(6)
  ref = FWD(model, params, rgb, ir, TOKENS, VALID, MASK_AR)
  np.testing.assert_allclose(FWD(scanned, stacked, rgb, ir, TOKENS, VALID, MASK_AR), ref, atol=1e-5)
  # KV-cache decoding runs scanned too (the cache stays a per-layer list).
  batch = {"rgb": rgb, "ir": ir, "prompt": TOKENS[:, :4], "prompt_mask": VALID[:, :4]}
  greedy = decoding.DecodeConfig(max_len=5)
  want, want_logits = decoding.make_decode_fn(model, greedy, keep_logits=True)(params, batch, None)
  got, logits = decoding.make_decode_fn(scanned, greedy, keep_logits=True)(stacked, batch, None)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_allclose(logits, want_logits, atol=1e-5)
  beam = decoding.DecodeConfig(max_len=5, method="beam", beam_size=2)
  np.testing.assert_array_equal(
    decoding.make_decode_fn(scanned, beam)(stacked, batch, None),
    decoding.make_decode_fn(model, beam)(params, batch, None),
  )


@pytest.mark.parametrize("policy", ["dots_saveable", "dots_with_no_batch_dims_saveable"])
def test_remat_with_named_policy_keeps_loss_and_gradients(model_params, policy):
  model, params = model_params
  rgb, ir = _images(7)

  def loss_and_grads(m, p):
    def loss(p):
      logits = m.apply(p, rgb, ir, TOKENS, VALID, MASK_AR)[:, :-1]
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, TOKENS[:, 1:])
      return jnp.mean(ce * MASK_AR[:, 1:])

    return jax.jit(jax.value_and_grad(loss))(p)

  ref_loss, ref_grads = loss_and_grads(model, params)
  loss, grads = loss_and_grads(model.clone(remat=True, remat_policy=policy), params)
  np.testing.assert_allclose(loss, ref_loss, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grads, ref_grads)
