"""Batched autoregressive decoding for the captioner under jit: greedy, temperature/top-k
sampling and beam search over a KV cache, plus greedy by full recomputation (the reference and
the no-cache baseline of benchmarks/captioner.py).

Prompts come as right-padded [BOS prompt SEP] token rows with a mask; optional has_rgb/has_ir
[B] bool in the batch mask a missing image out of the prefix. Outputs are [B, max_len] int32
rows ending with EOS then PAD (or cut at max_len).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fusionrs_jax.data.input_pipeline import EOS_ID, PAD_ID
from fusionrs_jax.models.captioner import Captioner

METHODS = ("greedy", "sample", "beam")


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  """How to decode; `method` is one of METHODS."""

  max_len: int = 32
  # EOS is suppressed before this many tokens (transformers' min_new_tokens).
  min_len: int = 0
  method: str = "greedy"
  # Sampling: logits / temperature, keep the top_k tokens (0 = all).
  temperature: float = 1.0
  top_k: int = 0
  # Beam search: beams per row; final scores are log p / length**length_penalty.
  beam_size: int = 4
  length_penalty: float = 0.0
  # Repetition controls over the tokens generated so far (the prompt is not counted):
  # a logit of an already generated token is divided by this when positive and multiplied by it
  # when negative (CTRL's penalty, transformers' repetition_penalty); 1.0 = off.
  repetition_penalty: float = 1.0
  # Never emit a token that would repeat an n-gram of this size already generated; 0 = off.
  no_repeat_ngram_size: int = 0


def _prefill(model, params, batch, max_len):
  size = model.num_image_tokens + batch["prompt"].shape[1] + max_len
  return model.apply(
    params,
    batch.get("rgb"),
    batch.get("ir"),
    batch["prompt"],
    batch["prompt_mask"],
    size,
    has_rgb=batch.get("has_rgb"),
    has_ir=batch.get("has_ir"),
    method=Captioner.prefill,
  )


def _no_early_eos(logits, t, min_len: int):
  """[B, V] logits with EOS masked while step t < min_len."""
  return jnp.where((t < min_len) & (jnp.arange(logits.shape[-1]) == EOS_ID), -jnp.inf, logits)


def _penalise_repeats(logits, out, t, penalty: float):
  """CTRL repetition penalty on every token among out[:, :t]. logits [N, V], out [N, max_len]."""
  rows = jnp.arange(out.shape[0])[:, None]
  written = jnp.broadcast_to(jnp.arange(out.shape[1])[None] < t, out.shape)  # out[:, :t]
  seen = jnp.zeros(logits.shape, bool).at[rows, out].max(written)
  scaled = jnp.where(logits > 0, logits / penalty, logits * penalty)
  return jnp.where(seen, scaled, logits)


def _ban_repeated_ngrams(logits, out, t, n: int):
  """Masks every token that would complete an n-gram already in out[:, :t].

  For each start j with j + n <= t, the window out[:, j:j+n-1] is compared with the last n-1
  generated tokens; on a match the token that followed it, out[:, j+n-1], is banned.
  """
  width = out.shape[1] - n + 1
  if width <= 0:
    return logits
  windows = jnp.stack([out[:, i : i + width] for i in range(n - 1)], axis=-1)  # [N, W, n-1]
  follow = out[:, n - 1 :]  # [N, W]
  last = jax.lax.dynamic_slice_in_dim(out, jnp.maximum(t - (n - 1), 0), n - 1, axis=1)
  match = jnp.all(windows == last[:, None, :], axis=-1) & (jnp.arange(width)[None] + n <= t)
  rows = jnp.arange(out.shape[0])[:, None]
  banned = jnp.zeros(logits.shape, bool).at[rows, follow].max(match)
  return jnp.where(banned, -jnp.inf, logits)


def _controlled(logits, out, t, cfg: DecodeConfig):
  """Step-t logits [N, V] after min_len and the repetition controls, given out [N, max_len]."""
  logits = _no_early_eos(logits, t, cfg.min_len)
  if cfg.repetition_penalty != 1.0:
    logits = _penalise_repeats(logits, out, t, cfg.repetition_penalty)
  if cfg.no_repeat_ngram_size > 0:
    logits = _ban_repeated_ngrams(logits, out, t, cfg.no_repeat_ngram_size)
  return logits


def _select(logits, rng, cfg: DecodeConfig):
  """[B, V] float32 -> [B] int32 (greedy argmax, or a temperature/top-k sample)."""
  if cfg.method == "greedy":
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / max(cfg.temperature, 1e-6)
  if cfg.top_k > 0:
    kth = jax.lax.top_k(logits, cfg.top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def _sequential(model, params, batch, rng, cfg: DecodeConfig, keep_logits: bool):
  """Greedy or sampling with the cache; stops early once every row emitted EOS."""
  logits, cache, slot_mask, pos = _prefill(model, params, batch, cfg.max_len)
  b, start = logits.shape[0], model.num_image_tokens + batch["prompt"].shape[1]
  out = jnp.full((b, cfg.max_len), PAD_ID, jnp.int32)
  seen = jnp.zeros((b, cfg.max_len, logits.shape[-1]) if keep_logits else (0,), jnp.float32)

  def cond(s):
    return (s["t"] < cfg.max_len) & ~jnp.all(s["done"])

  def body(s):
    t = s["t"]
    tok = _select(_controlled(s["logits"], s["out"], t, cfg), jax.random.fold_in(rng, t), cfg)
    tok = jnp.where(s["done"], PAD_ID, tok)
    upd = {"out": s["out"].at[:, t].set(tok), "done": s["done"] | (tok == EOS_ID), "t": t + 1}
    if keep_logits:
      upd["seen"] = s["seen"].at[:, t].set(s["logits"])
    mask = s["slot_mask"].at[:, start + t].set(True)
    nxt, cache = model.apply(
      params, tok, s["pos"] + t, s["cache"], mask, start + t, method=Captioner.extend
    )
    return {**s, **upd, "logits": nxt, "cache": cache, "slot_mask": mask}

  state = {
    "t": jnp.int32(0),
    "logits": logits,
    "cache": cache,
    "slot_mask": slot_mask,
    "pos": pos,
    "out": out,
    "done": jnp.zeros((b,), bool),
    "seen": seen,
  }
  state = jax.lax.while_loop(cond, body, state)
  return state["out"], state["seen"]


def greedy_no_cache(
  model, params, batch, max_len: int, keep_logits: bool = False, cfg: DecodeConfig | None = None
):
  """Greedy decoding that re-runs the full sequence every step (no KV cache). `cfg` supplies
  min_len and the repetition controls (its max_len and method are not read).

  Returns (tokens [B, max_len], step logits [B, max_len, V] if keep_logits else [0]).
  """
  prompt, pmask = batch["prompt"], batch["prompt_mask"].astype(bool)
  b, p = prompt.shape
  tokens = jnp.concatenate([prompt, jnp.zeros((b, max_len), jnp.int32)], axis=1)
  mask_ar = jnp.concatenate(
    [jnp.zeros((b, p), jnp.int32), jnp.ones((b, max_len), jnp.int32)], axis=1
  )
  length = jnp.sum(pmask, axis=1)
  v = model.llm_hp["vocab_size"]
  cfg = cfg or DecodeConfig(max_len=max_len)
  seen = jnp.zeros((b, max_len, v) if keep_logits else (0,), jnp.float32)

  def body(t, s):
    toks, out, done, seen = s
    generated = jnp.broadcast_to(jnp.arange(max_len)[None] < t, (b, max_len))
    valid = jnp.concatenate([pmask, generated], axis=1)
    images = (batch.get("rgb"), batch.get("ir"))
    masks = {"has_rgb": batch.get("has_rgb"), "has_ir": batch.get("has_ir")}
    logits = model.apply(params, *images, toks, valid, mask_ar, **masks)
    at = jnp.where(t == 0, length - 1, p + t - 1)
    step_logits = jnp.take_along_axis(logits, at[:, None, None], axis=1)[:, 0]
    choice = jnp.argmax(_controlled(step_logits, out, t, cfg), -1).astype(jnp.int32)
    tok = jnp.where(done, PAD_ID, choice)
    if keep_logits:
      seen = seen.at[:, t].set(step_logits)
    return (toks.at[:, p + t].set(tok), out.at[:, t].set(tok), done | (tok == EOS_ID), seen)

  init = (tokens, jnp.full((b, max_len), PAD_ID, jnp.int32), jnp.zeros((b,), bool), seen)
  _, out, _, seen = jax.lax.fori_loop(0, max_len, body, init)
  return out, seen


def beam_search(model, params, batch, cfg: DecodeConfig):
  """Beam search with the cache. Returns (best tokens [B, max_len], scores [B])."""
  k, max_len = cfg.beam_size, cfg.max_len
  logits, cache, slot_mask, pos = _prefill(model, params, batch, max_len)
  b, v = logits.shape
  start = model.num_image_tokens + batch["prompt"].shape[1]
  rep = lambda x: jnp.repeat(x, k, axis=0)  # [B, ...] -> [B*K, ...], beams of a row adjacent
  cache, slot_mask, pos, logits = jax.tree.map(rep, (cache, slot_mask, pos, logits))
  # Only beam 0 is live at first, so the K beams do not start as K copies of one hypothesis.
  scores = jnp.tile(jnp.array([0.0] + [-jnp.inf] * (k - 1)), (b, 1))  # [B, K]
  out = jnp.full((b, k, max_len), PAD_ID, jnp.int32)
  done = jnp.zeros((b, k), bool)
  lengths = jnp.zeros((b, k), jnp.int32)

  def body(t, s):
    logits, cache, slot_mask, scores, out, done, lengths = s
    logits = _controlled(logits, out.reshape(b * k, max_len), t, cfg)
    logp = jax.nn.log_softmax(logits, axis=-1).reshape(b, k, v)
    # A finished beam continues only with PAD at no cost, keeping its score.
    pad_only = jnp.full((v,), -jnp.inf).at[PAD_ID].set(0.0)
    logp = jnp.where(done[..., None], pad_only, logp)
    cand = (scores[..., None] + logp).reshape(b, k * v)
    scores, flat = jax.lax.top_k(cand, k)  # [B, K]
    beam, tok = flat // v, (flat % v).astype(jnp.int32)
    take = lambda x: jnp.take_along_axis(x, beam.reshape(b, k, *([1] * (x.ndim - 2))), axis=1)
    out = take(out).at[:, :, t].set(tok)
    was_done = take(done)
    lengths = take(lengths) + (~was_done).astype(jnp.int32)
    done = was_done | (tok == EOS_ID)
    rows = (jnp.arange(b)[:, None] * k + beam).reshape(-1)
    cache = jax.tree.map(lambda c: c[rows], cache)
    slot_mask = slot_mask[rows].at[:, start + t].set(True)
    logits, cache = model.apply(
      params, tok.reshape(-1), pos + t, cache, slot_mask, start + t, method=Captioner.extend
    )
    return logits, cache, slot_mask, scores, out, done, lengths

  init = (logits, cache, slot_mask, scores, out, done, lengths)
  _, _, _, scores, out, done, lengths = jax.lax.fori_loop(0, max_len, body, init)
  final = scores / jnp.maximum(lengths, 1).astype(jnp.float32) ** cfg.length_penalty
  best = jnp.argmax(final, axis=1)
  return (
    jnp.take_along_axis(out, best[:, None, None], axis=1)[:, 0],
    jnp.take_along_axis(final, best[:, None], axis=1)[:, 0],
  )


def make_decode_fn(
  model: Captioner, cfg: DecodeConfig, use_cache: bool = True, keep_logits: bool = False
):
  """jit-compiled (params, batch, rng) -> tokens [B, max_len] int32.

  batch: rgb/ir [B, S, S, C] as the model's inputs need, prompt [B, P] int32, prompt_mask
  [B, P] bool. With keep_logits (greedy only) returns (tokens, step logits [B, max_len, V]).
  """
  if cfg.method not in METHODS:
    raise ValueError(f"decode method must be one of {METHODS}, got {cfg.method!r}")

  def run(params, batch, rng):
    rng = jax.random.PRNGKey(0) if rng is None else rng  # only sampling reads it
    if not use_cache:
      if cfg.method != "greedy":
        raise ValueError("decoding without a KV cache is implemented for greedy only")
      out, seen = greedy_no_cache(model, params, batch, cfg.max_len, keep_logits, cfg)
    elif cfg.method == "beam":
      out, seen = beam_search(model, params, batch, cfg)[0], None
    else:
      out, seen = _sequential(model, params, batch, rng, cfg, keep_logits)
    return (out, seen) if keep_logits else out

  return jax.jit(run)
