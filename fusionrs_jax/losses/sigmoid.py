"""Contrastive losses: SigLIP sigmoid loss (reference and chunked across devices), CLIP softmax loss,
and the weighted RGB/IR/text multi-pair sum. GAN losses for the translator belong here too (later).
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

PAIRS = ("rgb_text", "ir_text", "rgb_ir")


def sigmoid_loss(zimg, ztxt, t, b):
  """SigLIP loss on the full batch: sum over all pairs of -log_sigmoid(label * logit) / B.

  zimg, ztxt: [B, D] (L2-normalised); t, b: scalars (t = exp(logit_scale)). Returns a scalar.
  Pair (i, i) is positive (+1), every other pair negative (-1).
  """
  logits = t * jnp.dot(zimg, ztxt.T, preferred_element_type=jnp.float32) + b  # [B, B]
  labels = 2.0 * jnp.eye(zimg.shape[0], dtype=logits.dtype) - 1.0
  return -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / zimg.shape[0]


def _axis_tuple(axis_names) -> tuple:
  return (axis_names,) if isinstance(axis_names, str) else tuple(axis_names)


def chunked_sigmoid_loss(zimg, ztxt, t, b, mesh, axis_names: str | Sequence[str]):
  """Same value and gradients as `sigmoid_loss`, without materialising the [B, B] logits.

  zimg, ztxt: global [B, D] arrays whose batch dim is sharded over `axis_names` of `mesh`
  (each of the n devices holds its local [B/n, D]); t, b: replicated scalars.
  Inside shard_map the text chunks travel round the ring by ppermute: at step k every device
  scores its local images against the texts of device (i + k) mod n, so each step needs a
  [B/n, B/n] logits block; only step 0 (its own texts) contains positives.
  """
  axes = _axis_tuple(axis_names)
  n = 1
  for a in axes:
    n *= mesh.shape[a]
  global_batch = zimg.shape[0]
  # Receive from the next device: after k shifts a device holds chunk (i + k) mod n.
  perm = [(j, (j - 1) % n) for j in range(n)]

  def block_loss(zi, zt, t, b, positive):
    logits = t * jnp.dot(zi, zt.T, preferred_element_type=jnp.float32) + b
    eye = jnp.eye(zi.shape[0], dtype=logits.dtype)
    labels = jnp.where(positive, 2.0 * eye - 1.0, -jnp.ones_like(logits))
    return -jnp.sum(jax.nn.log_sigmoid(labels * logits))

  # Recompute each block in the backward pass instead of storing n logits blocks.
  block_loss = jax.checkpoint(block_loss, static_argnums=(4,))

  def local(zi, zt, t, b):
    total = block_loss(zi, zt, t, b, True)

    def step(carry, _):
      acc, chunk = carry
      chunk = jax.lax.ppermute(chunk, axes, perm)
      return (acc + block_loss(zi, chunk, t, b, False), chunk), None

    if n > 1:
      (total, _), _ = jax.lax.scan(step, (total, zt), None, length=n - 1)
    return jax.lax.psum(total, axes) / global_batch

  batch_spec = P(axes if len(axes) > 1 else axes[0])
  fn = jax.shard_map(local, mesh=mesh, in_specs=(batch_spec, batch_spec, P(), P()), out_specs=P())
  return fn(zimg, ztxt, jnp.asarray(t, jnp.float32), jnp.asarray(b, jnp.float32))


def softmax_contrastive_loss(zimg, ztxt, t):
  """CLIP InfoNCE, mean of image->text and text->image cross-entropies.

  zimg, ztxt: [B, D] (L2-normalised); t: scalar temperature multiplier. Returns a scalar.
  """
  logits = t * jnp.dot(zimg, ztxt.T, preferred_element_type=jnp.float32)  # [B, B]
  diag = jnp.diagonal(logits)
  i2t = jax.nn.logsumexp(logits, axis=1) - diag
  t2i = jax.nn.logsumexp(logits, axis=0) - diag
  return 0.5 * (jnp.mean(i2t) + jnp.mean(t2i))


def multi_pair_loss(
  embeddings: dict,
  weights: dict,
  t,
  b,
  pair_loss: Callable = sigmoid_loss,
):
  """Weighted sum of pair losses over RGB, IR and text embeddings.

  embeddings: {"rgb", "ir", "text", "ir_text"} -> [B, D] (any subset; extra keys ignored).
  weights: {"rgb_text", "ir_text", "rgb_ir"} -> float; a pair with weight 0, a missing weight
  or a missing embedding is skipped. The IR side of "ir_text" uses "ir_text" captions when
  present, else the shared "text". For "rgb_ir" the IR images play the role of the texts.
  pair_loss(zimg, ztxt, t, b) -> scalar, e.g. a `functools.partial` of `chunked_sigmoid_loss`.
  Returns (total scalar, {pair: unweighted loss}).
  """
  sides = {
    "rgb_text": ("rgb", "text"),
    "ir_text": ("ir", "ir_text" if "ir_text" in embeddings else "text"),
    "rgb_ir": ("rgb", "ir"),
  }
  unknown = set(weights) - set(PAIRS)
  if unknown:
    raise ValueError(f"unknown loss pairs {sorted(unknown)}; known: {PAIRS}")
  total = jnp.zeros((), jnp.float32)
  per_pair = {}
  for pair in PAIRS:
    w = weights.get(pair, 0.0)
    left, right = sides[pair]
    if not w or left not in embeddings or right not in embeddings:
      continue
    per_pair[pair] = pair_loss(embeddings[left], embeddings[right], t, b)
    total = total + w * per_pair[pair]
  if not per_pair:
    raise ValueError(
      f"no loss pair has both a weight and embeddings: {weights}, {sorted(embeddings)}"
    )
  return total, per_pair
