"""Gemma decoder: RMSNorm, RoPE, masks, causality and the KV cache against full recomputation,
scanned blocks and named remat policies."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fusionrs_jax.models import gemma, scan

HP = dict(vocab_size=64, **gemma.gemma_preset("tiny"))


def _init(hp=HP, seed=0, t=6):
  model = gemma.Gemma(**hp)
  x = jnp.zeros((1, t, hp["width"]))
  pos = jnp.arange(t)[None]
  mask = jnp.ones((1, t, t), bool)
  # Touch the embedder too: __call__ takes embeddings, not tokens.
  both = lambda m, x, pos, mask: (m.embed_tokens(pos), m(x, pos, mask))
  return model, model.init(jax.random.PRNGKey(seed), x, pos, mask, method=both)


def _causal(b, t):
  return jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))


def test_rms_norm_scales_by_one_plus_scale():
  x = np.random.RandomState(0).randn(2, 3, 8).astype(np.float32)
  params = {"params": {"scale": np.linspace(-0.5, 0.5, 8).astype(np.float32)}}
  got = gemma.RMSNorm().apply(params, x)
  want = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6) * (1 + params["params"]["scale"])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_rope_scores_depend_only_on_relative_position():
  rng = np.random.RandomState(1)
  q, k = (jnp.asarray(rng.randn(1, 1, 1, 16), jnp.float32) for _ in range(2))

  def score(m, n):
    return float(
      jnp.sum(gemma.apply_rope(q, jnp.array([[m]])) * gemma.apply_rope(k, jnp.array([[n]])))
    )

  np.testing.assert_allclose(score(3, 1), score(10, 8), rtol=1e-4)
  np.testing.assert_allclose(score(0, 0), float(jnp.sum(q * k)), rtol=1e-5)
  assert abs(score(5, 0) - score(0, 0)) > 1e-3


def test_prefix_lm_mask_matches_hand_example():
  input_mask = jnp.array([[1, 1, 1, 1, 0]], bool)
  mask_ar = jnp.array([[0, 0, 1, 1, 1]])
  got = np.asarray(gemma.prefix_lm_mask(input_mask, mask_ar)[0]).astype(int)
  want = np.array(
    [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]]
  )
  np.testing.assert_array_equal(got, want)


def test_param_names_and_shapes_follow_gemma():
  _, params = _init()
  p = jax.tree.map(lambda x: x.shape, jax.tree.map(np.asarray, gemma.nn.unbox(params)))["params"]
  assert p["embedder"]["input_embedding"] == (64, 32)
  attn = p["layers_0"]["attn"]
  assert attn["q_einsum"] == (2, 32, 16)
  assert attn["kv_einsum"] == (2, 1, 32, 16)  # multi-query: one shared key/value head
  assert attn["attn_vec_einsum"] == (2, 16, 32)
  assert p["layers_1"]["mlp"]["gating_einsum"] == (2, 32, 64)
  assert p["layers_1"]["mlp"]["linear"] == (64, 32)
  assert set(p["layers_0"]) == {"attn", "mlp", "pre_attention_norm", "pre_ffw_norm"}
  assert p["final_norm"]["scale"] == (32,)


def test_embedding_is_scaled_and_tied():
  model, params = _init()
  tokens = jnp.array([[5, 7]])
  emb = model.apply(params, tokens, method=model.embed_tokens)
  table = np.asarray(gemma.nn.unbox(params)["params"]["embedder"]["input_embedding"])
  np.testing.assert_allclose(emb[0, 0], table[5] * np.sqrt(32), rtol=1e-6)
  h = jnp.ones((1, 1, 32))
  np.testing.assert_allclose(
    model.apply(params, h, method=model.logits)[0, 0], table.sum(1), rtol=1e-5, atol=1e-6
  )


def test_causal_output_ignores_future_tokens():
  model, params = _init()
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 32))
  pos = jnp.broadcast_to(jnp.arange(6), (2, 6))
  y, _ = model.apply(params, x, pos, _causal(2, 6))
  y2, _ = model.apply(params, x.at[:, 4].add(3.0), pos, _causal(2, 6))
  np.testing.assert_allclose(y[:, :4], y2[:, :4], atol=1e-6)
  assert np.abs(np.asarray(y[:, 4:] - y2[:, 4:])).max() > 1e-3


def test_grouped_query_cache_chunks_equal_full_sequence():
  hp = dict(HP, num_heads=4, num_kv_heads=2, head_dim=8)
  model, params = _init(hp)
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 7, 32))
  pos = jnp.broadcast_to(jnp.arange(7), (2, 7))
  full, _ = model.apply(params, x, pos, _causal(2, 7))
  cache = model.init_cache(2, 10)
  slots = jnp.arange(10)
  first_mask = (slots[None, :] <= jnp.arange(4)[:, None])[None].repeat(2, 0)
  a, cache = model.apply(params, x[:, :4], pos[:, :4], first_mask, cache, 0)
  outs = [a]
  for t in range(4, 7):
    m = jnp.broadcast_to(slots <= t, (2, 1, 10))
    o, cache = model.apply(params, x[:, t : t + 1], pos[:, t : t + 1], m, cache, t)
    outs.append(o)
  np.testing.assert_allclose(jnp.concatenate(outs, 1), full, atol=2e-5)


def test_scanned_blocks_match_unscanned_and_keep_the_cache_format():
  model, params = _init()
  scanned = model.clone(scan_layers=True)
  stacked = scan.scan_params(params)
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 7, 32))
  pos = jnp.broadcast_to(jnp.arange(7), (2, 7))
  full, _ = model.apply(params, x, pos, _causal(2, 7))
  np.testing.assert_allclose(scanned.apply(stacked, x, pos, _causal(2, 7))[0], full, atol=1e-5)
  # KV-cache decoding with scan: the cache stays a per-layer list, chunks equal the full pass.
  cache = scanned.init_cache(2, 10)
  slots = jnp.arange(10)
  first_mask = (slots[None, :] <= jnp.arange(4)[:, None])[None].repeat(2, 0)
  a, cache = scanned.apply(stacked, x[:, :4], pos[:, :4], first_mask, cache, 0)
  assert isinstance(cache, list) and len(cache) == 2 and cache[0]["k"].shape == (2, 10, 1, 16)
  outs = [a]
  for t in range(4, 7):
    m = jnp.broadcast_to(slots <= t, (2, 1, 10))
    o, cache = scanned.apply(stacked, x[:, t : t + 1], pos[:, t : t + 1], m, cache, t)
    outs.append(o)
  np.testing.assert_allclose(jnp.concatenate(outs, 1), full, atol=2e-5)


@pytest.mark.parametrize("policy", ["dots_saveable", "dots_with_no_batch_dims_saveable"])
@pytest.mark.parametrize("scan_layers", [False, True])
def test_remat_with_named_policy_keeps_loss_and_gradients(policy, scan_layers):
  model, params = _init()
  model = model.clone(scan_layers=scan_layers)
  params = scan.scan_params(params) if scan_layers else params
  x = jax.random.normal(jax.random.PRNGKey(4), (2, 6, 32))
  pos = jnp.broadcast_to(jnp.arange(6), (2, 6))
  targets = jax.random.randint(jax.random.PRNGKey(5), (2, 6), 0, 64)

  def loss_and_grads(m):
    def loss(p):
      logits = m.apply(p, m.apply(p, x, pos, _causal(2, 6))[0], method=m.logits)
      return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    return jax.jit(jax.value_and_grad(loss))(params)

  ref_loss, ref_grads = loss_and_grads(model)
  loss, grads = loss_and_grads(model.clone(remat=True, remat_policy=policy))
  np.testing.assert_allclose(loss, ref_loss, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grads, ref_grads)


def test_unknown_remat_policy_is_a_value_error():
  with pytest.raises(ValueError, match="unknown remat policy 'all'.*dots_saveable"):
    _init(dict(HP, remat=True, remat_policy="all"))
