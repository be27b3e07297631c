"""A missing image is masked out of the captioner's prefix, never shown as a black image: the
logits (and KV-cache decoding) of a row without IR are those of the prefix without IR tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fusionrs_jax.models import captioner, decoding, gemma, siglip

V = 48
# [BOS p p SEP | a a a EOS] and a right-padded shorter one; prompt = first 4 tokens.
TOKENS = jnp.array([[2, 10, 11, 4, 20, 21, 22, 1], [2, 12, 4, 23, 24, 1, 0, 0]])
MASK_AR = jnp.array([[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1]])
VALID = TOKENS != 0
HAS_IR = jnp.array([True, False])


def _model(inputs):
  """The tiny presets cut to one layer and 16 px (4 tokens per image) to compile fast."""
  vision = {**siglip.siglip_preset("tiny"), "image_size": 16, "depth": 1}
  llm = {**gemma.gemma_preset("tiny"), "depth": 1}
  return captioner.captioner_from_presets(vision, llm, V, inputs=inputs)


@pytest.fixture(scope="module")
def setup():
  """The dual-image model, its params, and the RGB-only model: one shared image tower, so
  the same params run both (the RGB-only one simply has no IR tokens in its prefix)."""
  dual, rgb_only = _model("rgb_ir"), _model("rgb")
  params = jax.jit(dual.init)(jax.random.PRNGKey(0), **captioner.dummy_inputs(dual))
  k = jax.random.split(jax.random.PRNGKey(1))
  rgb = jax.random.uniform(k[0], (2, 16, 16, 3), minval=-1, maxval=1)
  ir = jax.random.uniform(k[1], (2, 16, 16, 1), minval=-1, maxval=1)
  return dual, rgb_only, gemma.nn.unbox(params), rgb, ir


_JITTED = {}


def _logits(model, params, rgb, ir, **masks):
  """Jitted forward, compiled once per (model, which masks are given)."""
  key = (model.inputs, tuple(sorted(masks)))
  if key not in _JITTED:
    _JITTED[key] = jax.jit(lambda p, r, i, m: model.apply(p, r, i, TOKENS, VALID, MASK_AR, **m))
  return np.asarray(_JITTED[key](params, rgb, ir, masks))


def test_row_without_ir_gets_the_logits_of_the_prefix_without_ir_tokens(setup):
  dual, rgb_only, params, rgb, ir = setup
  both = jnp.ones(2, bool)
  masked = _logits(dual, params, rgb, ir, has_rgb=both, has_ir=HAS_IR)
  reference = _logits(rgb_only, params, rgb, None)
  np.testing.assert_allclose(masked[1], reference[1], atol=1e-5)
  # Whatever sits in the IR slot (zeros, noise) changes nothing for that row ...
  for other in (jnp.zeros_like(ir), -ir):
    np.testing.assert_allclose(
      _logits(dual, params, rgb, other, has_rgb=both, has_ir=HAS_IR)[1], masked[1], atol=1e-5
    )
  # ... while the row with IR still reads it, and a black IR image is not the same as none.
  assert np.abs(masked[0] - reference[0]).max() > 1e-3
  black = _logits(dual, params, rgb, jnp.zeros_like(ir))
  assert np.abs(black[1] - masked[1]).max() > 1e-3


def test_all_images_present_matches_the_unmasked_forward(setup):
  dual, _, params, rgb, ir = setup
  both = jnp.ones(2, bool)
  np.testing.assert_array_equal(
    _logits(dual, params, rgb, ir, has_rgb=both, has_ir=both), _logits(dual, params, rgb, ir)
  )


def test_kv_cache_decoding_without_ir_matches_the_rgb_only_model(setup):
  dual, rgb_only, params, rgb, ir = setup
  prompt = jnp.array([[2, 10, 11, 4], [2, 12, 4, 0]])  # right-padded [BOS prompt SEP]
  batch = {"rgb": rgb, "ir": ir, "prompt": prompt, "prompt_mask": prompt != 0, "has_ir": HAS_IR}
  cfg = decoding.DecodeConfig(max_len=3, method="greedy")
  rng = jax.random.PRNGKey(0)

  def decode(model, batch):
    run = lambda p, b: decoding._sequential(model, p, b, rng, cfg, True)
    return np.asarray(jax.jit(run)(params, batch)[1])  # step logits [B, 3, V]

  seen = decode(dual, batch)
  ref = decode(rgb_only, {k: v for k, v in batch.items() if k not in ("ir", "has_ir")})
  np.testing.assert_allclose(seen[1], ref[1], atol=1e-4)
  assert np.abs(seen[0] - ref[0]).max() > 1e-3
