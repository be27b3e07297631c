"""Gemma decoder: RMSNorm(1 + scale), RoPE, multi-/grouped-query attention, GeGLU MLP, tied
embeddings scaled by sqrt(width), and an explicit key/value cache for decoding.

Parameter names follow big_vision's Gemma (embedder/input_embedding, layers_i/attn/q_einsum/w,
kv_einsum, attn_vec_einsum, mlp/gating_einsum, mlp/linear, pre_attention_norm, pre_ffw_norm,
final_norm) so export to transformers' GemmaModel is a rename table (export/hf_paligemma.py).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fusionrs_jax.models import scan
from fusionrs_jax.models.vit import param_with_axes

Dtype = Any
RMS_EPS = 1e-6
ACT_AXES = ("batch", "length", "embed")
# Masked attention logits; finite so fully masked rows (padding queries) stay NaN-free.
NEG_INF = -2.3819763e38

_PRESETS = {
  # Unit tests: compiles in seconds on CPU.
  "tiny": {
    "width": 32,
    "depth": 2,
    "mlp_dim": 64,
    "num_heads": 2,
    "num_kv_heads": 1,
    "head_dim": 16,
  },
  # Trains on 2 CPU cores in well under an hour (~6M parameters without embeddings).
  "small": {
    "width": 256,
    "depth": 4,
    "mlp_dim": 1024,
    "num_heads": 4,
    "num_kv_heads": 1,
    "head_dim": 64,
  },
  # Gemma-2B (PaliGemma-3B's decoder).
  "gemma_2b": {
    "width": 2048,
    "depth": 18,
    "mlp_dim": 16384,
    "num_heads": 8,
    "num_kv_heads": 1,
    "head_dim": 256,
  },
}


def gemma_preset(name: str) -> dict:
  """Decoder hyperparameters of a named size (keys are `Gemma` fields except vocab_size)."""
  if name not in _PRESETS:
    raise ValueError(f"unknown Gemma preset {name!r}; choose one of {sorted(_PRESETS)}")
  return dict(_PRESETS[name])


class RMSNorm(nn.Module):
  """x / rms(x) * (1 + scale); scale starts at 0 (Gemma's convention), float32 inside."""

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", param_with_axes(nn.initializers.zeros, ("norm",)), (x.shape[-1],))
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + RMS_EPS)
    return (normed * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)


def apply_rope(x, positions, base: float = 10_000.0):
  """Rotary embedding, halves convention (transformers' rotate_half).

  x [B, T, H, Dh], positions [B, T] int -> [B, T, H, Dh].
  """
  half = x.shape[-1] // 2
  freq = base ** (-jnp.arange(half, dtype=jnp.float32) * 2 / x.shape[-1])  # [Dh/2]
  angle = positions[..., None].astype(jnp.float32) * freq  # [B, T, Dh/2]
  sin, cos = jnp.sin(angle)[:, :, None], jnp.cos(angle)[:, :, None]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def _normal(stddev_axes):
  """Normal init with std 1/sqrt(prod of the fan-in dims) (indexes into the shape)."""

  def init(rng, shape, dtype=jnp.float32):
    fan_in = 1
    for a in stddev_axes:
      fan_in *= shape[a]
    return jax.random.normal(rng, shape, dtype) * fan_in**-0.5

  return init


class Embedder(nn.Module):
  """Token table [V, D]; encode scales by sqrt(D), decode is the tied output projection."""

  vocab_size: int
  width: int

  def setup(self):
    self.input_embedding = self.param(
      "input_embedding",
      param_with_axes(_normal((1,)), ("vocab", "embed")),
      (self.vocab_size, self.width),
    )

  def encode(self, tokens, dtype):
    """tokens [B, T] int -> [B, T, D] (times sqrt(D), as Gemma)."""
    x = jnp.take(self.input_embedding, tokens, axis=0).astype(dtype)
    return x * jnp.asarray(self.width**0.5, dtype)

  def decode(self, x):
    """[B, T, D] -> float32 logits [B, T, V]."""
    return jnp.dot(x, self.input_embedding.T.astype(x.dtype)).astype(jnp.float32)


class Attention(nn.Module):
  """Grouped-query attention (num_kv_heads=1: multi-query) with RoPE and optional KV cache."""

  num_heads: int
  num_kv_heads: int
  head_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, positions, mask, cache=None, write_index=None):
    """x [B, T, D], positions [B, T], mask [B, T, S] bool (True = may attend).

    Without cache S = T. With cache {"k","v": [B, S, K, Dh]} the new keys/values are written
    at slots [write_index, write_index + T) first. Returns ([B, T, D], cache or new k/v).
    """
    h, k_heads, dh, width = self.num_heads, self.num_kv_heads, self.head_dim, x.shape[-1]
    if h % k_heads:
      raise ValueError(f"num_heads {h} must be a multiple of num_kv_heads {k_heads}")
    w_q = self.param(
      "q_einsum", param_with_axes(_normal((1,)), ("heads", "embed", "kv")), (h, width, dh)
    )
    w_kv = self.param(
      "kv_einsum",
      param_with_axes(_normal((2,)), (None, "heads", "embed", "kv")),
      (2, k_heads, width, dh),
    )
    w_o = self.param(
      "attn_vec_einsum", param_with_axes(_normal((0, 1)), ("heads", "kv", "embed")), (h, dh, width)
    )
    x = x.astype(self.dtype)
    q = jnp.einsum("btd,hdk->bthk", x, w_q.astype(self.dtype))
    k, v = jnp.einsum("btd,chdk->cbthk", x, w_kv.astype(self.dtype))
    q, k = apply_rope(q, positions), apply_rope(k, positions)
    if cache is not None:
      idx = (0, write_index, 0, 0)
      k = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), idx)
      v = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), idx)
    new_cache = {"k": k, "v": v}
    b, t = q.shape[:2]
    q = q.reshape(b, t, k_heads, h // k_heads, dh) * jnp.asarray(dh**-0.5, self.dtype)
    logits = jnp.einsum("btkgd,bskd->bkgts", q, k.astype(self.dtype)).astype(jnp.float32)
    logits = jnp.where(mask[:, None, None], logits, NEG_INF)
    probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v.astype(self.dtype)).reshape(b, t, h, dh)
    return jnp.einsum("bthk,hkd->btd", out, w_o.astype(self.dtype)), new_cache


class FeedForward(nn.Module):
  """GeGLU: linear(gelu_tanh(x @ gate[0]) * (x @ gate[1]))."""

  mlp_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    """x [B, T, D] -> [B, T, D]."""
    width = x.shape[-1]
    w_gate = self.param(
      "gating_einsum",
      param_with_axes(_normal((1,)), (None, "embed", "mlp")),
      (2, width, self.mlp_dim),
    )
    w_out = self.param(
      "linear", param_with_axes(_normal((0,)), ("mlp", "embed")), (self.mlp_dim, width)
    )
    w_gate = w_gate.astype(self.dtype)
    gate = nn.gelu(jnp.dot(x, w_gate[0]), approximate=True)
    return jnp.dot(gate * jnp.dot(x, w_gate[1]), w_out.astype(self.dtype))


class Block(nn.Module):
  """x + attn(norm(x)); x + mlp(norm(x))."""

  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, positions, mask, cache=None, write_index=None):
    x = nn.with_logical_constraint(x, ACT_AXES)
    attn, cache = Attention(
      self.num_heads, self.num_kv_heads, self.head_dim, self.dtype, name="attn"
    )(RMSNorm(name="pre_attention_norm")(x), positions, mask, cache, write_index)
    x = x + attn
    x = x + FeedForward(self.mlp_dim, self.dtype, name="mlp")(RMSNorm(name="pre_ffw_norm")(x))
    return nn.with_logical_constraint(x, ACT_AXES), cache


class Gemma(scan.LayerStack):
  """Decoder over already-embedded inputs (text via `embed_tokens`, images projected outside).

  `__call__(x [B, T, D], positions [B, T], mask [B, T, S], cache=None, write_index=None)`
  -> (final-normed hidden [B, T, D], cache: list per layer of {"k","v": [B, S, K, Dh]}).
  The cache keeps that per-layer list form with scan_layers too (stacked only inside the call).
  """

  vocab_size: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  num_kv_heads: int
  head_dim: int

  def setup(self):
    self.embedder = Embedder(self.vocab_size, self.width)
    block = scan.layer_class(Block, self.remat, self.remat_policy, self.scan_layers)
    hp = (self.num_heads, self.num_kv_heads, self.head_dim, self.mlp_dim, self.dtype)
    if self.scan_layers:
      # Block(x, positions, mask, cache, write_index) -> (x, cache): x is the carry, each
      # layer reads its own cache slice, the rest is the same for every layer.
      in_axes = (nn.broadcast, nn.broadcast, 0, nn.broadcast)
      self.layers = scan.scan_over_layers(block, self.depth, in_axes)(*hp)
    else:
      self.layers = [block(*hp, name=f"layers_{i}") for i in range(self.depth)]
    self.final_norm = RMSNorm()

  def embed_tokens(self, tokens):
    """tokens [B, T] -> [B, T, D] scaled by sqrt(D)."""
    return self.embedder.encode(tokens, self.dtype)

  def logits(self, hidden):
    """[B, T, D] -> float32 [B, T, V] through the tied embedding."""
    return self.embedder.decode(hidden)

  def __call__(self, x, positions, mask, cache=None, write_index=None):
    x = x.astype(self.dtype)
    if self.scan_layers:
      # [depth, B, S, K, Dh] per key; one copy in and out of the per-layer list form.
      stacked = None if cache is None else jax.tree.map(lambda *c: jnp.stack(c), *cache)
      x, stacked = self.layers(x, positions, mask, stacked, write_index)
      new_cache = [jax.tree.map(lambda c, i=i: c[i], stacked) for i in range(self.depth)]
      return self.final_norm(x), new_cache
    new_cache = []
    for i, layer in enumerate(self.layers):
      x, c = layer(x, positions, mask, None if cache is None else cache[i], write_index)
      new_cache.append(c)
    return self.final_norm(x), new_cache

  def init_cache(self, batch: int, size: int, dtype=jnp.float32):
    """Empty cache for `size` slots: list per layer of {"k","v": zeros [B, S, K, Dh]}."""
    shape = (batch, size, self.num_kv_heads, self.head_dim)
    return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in range(self.depth)]


def prefix_lm_mask(input_mask, mask_ar):
  """big_vision's prefix-LM mask: tokens with mask_ar=0 form a fully attended prefix, each
  mask_ar=1 token starts a causal step; padding (input_mask=0) is never attended.

  input_mask, mask_ar [B, T] -> bool [B, T, T] (query, key).
  """
  step = jnp.cumsum(mask_ar.astype(jnp.int32), axis=1)
  mask = step[:, None, :] <= step[:, :, None]
  return mask & input_mask[:, None, :].astype(bool)
