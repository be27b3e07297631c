"""Contrastive losses: SigLIP sigmoid loss (reference and chunked across devices), CLIP softmax loss,
and the weighted RGB/IR/text multi-pair sum. Every loss takes an optional per-example `valid`
mask: an example missing a modality leaves the pairs it cannot take part in.
"""

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

PAIRS = ("rgb_text", "ir_text", "rgb_ir")


# log_sigmoid of this is exactly 0: a left-out pair adds nothing to the sum.
_LEFT_OUT = 1e30


def _log_sigmoid_terms(logits, labels, pair_valid):
  """log_sigmoid(labels * logits) [N, M], exactly 0 (with zero gradient) where pair_valid
  [N, M] is False. Masking the argument keeps garbage rows (NaN-free but arbitrary) out.

  Equal to the unmasked terms where valid; the sum may still differ from the unmasked program
  in the last bit (XLA fuses it differently), which is why `multi_pair_loss` runs the
  unmasked program when every row is valid.
  """
  z = labels * logits
  if pair_valid is not None:
    z = jnp.where(pair_valid, z, _LEFT_OUT)
  return jax.nn.log_sigmoid(z)


def sigmoid_loss(zimg, ztxt, t, b, valid=None):
  """SigLIP loss on the full batch: sum over all pairs of -log_sigmoid(label * logit) / B.

  zimg, ztxt: [B, D] (L2-normalised); t, b: scalars (t = exp(logit_scale)). Returns a scalar.
  Pair (i, i) is positive (+1), every other pair negative (-1).
  valid: optional [B] bool; a False row (e.g. an example without its IR image) takes part in
  no pair, as positive or negative, and B becomes the number of valid rows: the loss equals
  the loss of the batch with those rows removed (0 when no row is valid).
  """
  logits = t * jnp.dot(zimg, ztxt.T, preferred_element_type=jnp.float32) + b  # [B, B]
  labels = 2.0 * jnp.eye(zimg.shape[0], dtype=logits.dtype) - 1.0
  if valid is None:
    return -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / zimg.shape[0]
  valid = valid.astype(bool)
  terms = _log_sigmoid_terms(logits, labels, valid[:, None] & valid[None, :])
  return -jnp.sum(terms) / jnp.maximum(jnp.sum(valid, dtype=jnp.float32), 1.0)


def _axis_tuple(axis_names) -> tuple:
  return (axis_names,) if isinstance(axis_names, str) else tuple(axis_names)


def chunked_sigmoid_loss(zimg, ztxt, t, b, mesh, axis_names: str | Sequence[str], valid=None):
  """Same value and gradients as `sigmoid_loss`, without materialising the [B, B] logits.

  zimg, ztxt: global [B, D] arrays whose batch dim is sharded over `axis_names` of `mesh`
  (each of the n devices holds its local [B/n, D]); t, b: replicated scalars; valid: optional
  [B] bool sharded like the batch (see `sigmoid_loss`).
  Inside shard_map the text chunks (and their valid flags) travel round the ring by ppermute:
  at step k every device scores its local images against the texts of device (i + k) mod n,
  so each step needs a [B/n, B/n] logits block; only step 0 (its own texts) has positives.
  """
  axes = _axis_tuple(axis_names)
  n = 1
  for a in axes:
    n *= mesh.shape[a]
  global_batch = zimg.shape[0]
  # Receive from the next device: after k shifts a device holds chunk (i + k) mod n.
  perm = [(j, (j - 1) % n) for j in range(n)]

  def block_loss(zi, zt, t, b, vi, vt, positive):
    logits = t * jnp.dot(zi, zt.T, preferred_element_type=jnp.float32) + b
    eye = jnp.eye(zi.shape[0], dtype=logits.dtype)
    labels = jnp.where(positive, 2.0 * eye - 1.0, -jnp.ones_like(logits))
    pair_valid = None if vi is None else vi[:, None] & vt[None, :]
    return -jnp.sum(_log_sigmoid_terms(logits, labels, pair_valid))

  # Recompute each block in the backward pass instead of storing n logits blocks.
  block_loss = jax.checkpoint(block_loss, static_argnums=(6,))

  def local(zi, zt, t, b, vi=None):
    total = block_loss(zi, zt, t, b, vi, vi, True)

    def step(carry, _):
      acc, chunk = carry
      chunk = jax.lax.ppermute(chunk, axes, perm)
      return (acc + block_loss(zi, chunk[0], t, b, vi, chunk[1], False), chunk), None

    if n > 1:
      (total, _), _ = jax.lax.scan(step, (total, (zt, vi)), None, length=n - 1)
    if vi is None:
      return jax.lax.psum(total, axes) / global_batch
    count = jax.lax.psum(jnp.sum(vi, dtype=jnp.float32), axes)
    return jax.lax.psum(total, axes) / jnp.maximum(count, 1.0)

  batch_spec = P(axes if len(axes) > 1 else axes[0])
  args = (zimg, ztxt, jnp.asarray(t, jnp.float32), jnp.asarray(b, jnp.float32))
  specs = (batch_spec, batch_spec, P(), P())
  if valid is not None:
    args, specs = args + (valid.astype(bool),), specs + (batch_spec,)
  fn = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P())
  return fn(*args)


def softmax_contrastive_loss(zimg, ztxt, t, valid=None):
  """CLIP InfoNCE, mean of image->text and text->image cross-entropies.

  zimg, ztxt: [B, D] (L2-normalised); t: scalar temperature multiplier; valid: optional [B]
  bool, False rows are left out as queries and as candidates. Returns a scalar.
  """
  logits = t * jnp.dot(zimg, ztxt.T, preferred_element_type=jnp.float32)  # [B, B]
  diag = jnp.diagonal(logits)
  if valid is None:
    i2t = jax.nn.logsumexp(logits, axis=1) - diag
    t2i = jax.nn.logsumexp(logits, axis=0) - diag
    return 0.5 * (jnp.mean(i2t) + jnp.mean(t2i))
  valid = valid.astype(bool)
  # The diagonal stays in so a left-out row's logsumexp is finite (it is then dropped).
  keep = (valid[:, None] & valid[None, :]) | jnp.eye(zimg.shape[0], dtype=bool)
  logits = jnp.where(keep, logits, -jnp.inf)
  i2t = jax.nn.logsumexp(logits, axis=1) - diag
  t2i = jax.nn.logsumexp(logits, axis=0) - diag
  count = jnp.maximum(jnp.sum(valid, dtype=jnp.float32), 1.0)
  return 0.5 * jnp.sum(jnp.where(valid, i2t + t2i, 0.0)) / count


def multi_pair_loss(
  embeddings: dict,
  weights: dict,
  t,
  b,
  pair_loss: Callable = sigmoid_loss,
  masks: dict | None = None,
):
  """Weighted sum of pair losses over RGB, IR and text embeddings.

  embeddings: {"rgb", "ir", "text", "ir_text"} -> [B, D] (any subset; extra keys ignored).
  weights: {"rgb_text", "ir_text", "rgb_ir"} -> float; a pair with weight 0, a missing weight
  or a missing embedding is skipped. The IR side of "ir_text" uses "ir_text" captions when
  present, else the shared "text". For "rgb_ir" the IR images play the role of the texts.
  masks: optional, same keys as embeddings -> [B] bool (False = that input is missing, e.g.
  has_ir); a pair keeps the rows where both of its sides are present (`valid` of pair_loss).
  A pair none of whose sides has a mask, or whose rows are all present, runs pair_loss
  without `valid`.
  pair_loss(zimg, ztxt, t, b, valid=None) -> scalar, e.g. a `functools.partial` of
  `chunked_sigmoid_loss`.
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
  masks = {k: v for k, v in (masks or {}).items() if v is not None}
  total = jnp.zeros((), jnp.float32)
  per_pair = {}
  for pair in PAIRS:
    w = weights.get(pair, 0.0)
    left, right = sides[pair]
    if not w or left not in embeddings or right not in embeddings:
      continue
    loss = functools.partial(pair_loss, embeddings[left], embeddings[right], t, b)
    side_masks = [masks[k].astype(bool) for k in (left, right) if k in masks]
    if side_masks:
      valid = functools.reduce(jnp.logical_and, side_masks)
      # A batch with every input present runs the unmasked program: same loss bit for bit.
      per_pair[pair] = jax.lax.cond(jnp.all(valid), loss, functools.partial(loss, valid=valid))
    else:
      per_pair[pair] = loss()
    total = total + w * per_pair[pair]
  if not per_pair:
    raise ValueError(
      f"no loss pair has both a weight and embeddings: {weights}, {sorted(embeddings)}"
    )
  return total, per_pair
