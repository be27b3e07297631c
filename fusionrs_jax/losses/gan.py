"""GAN losses for the RGB<->IR translator: least-squares adversarial terms, cycle, identity
and paired (pix2pix) L1, plus the jittable history pool of generated images (Shrivastava
et al. 2017) that the CycleGAN discriminators are trained on."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def lsgan_d_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
  """Discriminator: 0.5 * (E[(D(real) - 1)^2] + E[D(fake)^2]). Scores [B,h,w,1] -> scalar.

  The 0.5 halves D's pace relative to G, as in the published training recipe.
  """
  return 0.5 * (jnp.mean(jnp.square(real_scores - 1.0)) + jnp.mean(jnp.square(fake_scores)))


def lsgan_g_loss(fake_scores: jax.Array) -> jax.Array:
  """Generator: E[(D(G(x)) - 1)^2]. Scores [B,h,w,1] -> scalar."""
  return jnp.mean(jnp.square(fake_scores - 1.0))


def l1(a: jax.Array, b: jax.Array) -> jax.Array:
  """Mean absolute difference of two same-shaped image batches [B,H,W,C] -> scalar."""
  return jnp.mean(jnp.abs(a - b))


def cycle_loss(real: jax.Array, reconstructed: jax.Array) -> jax.Array:
  """||F(G(x)) - x||_1: the reconstruction after a round trip. [B,H,W,C] -> scalar."""
  return l1(real, reconstructed)


def identity_loss(target: jax.Array, mapped: jax.Array) -> jax.Array:
  """||G(y) - y||_1 for a real image y of the target domain. [B,H,W,C] -> scalar.

  RGB and IR differ in channels, so callers feed G the other domain's image with its
  channels adapted (IR tiled to 3 channels, RGB averaged to 1); see `as_channels`.
  """
  return l1(target, mapped)


def paired_l1(target: jax.Array, generated: jax.Array) -> jax.Array:
  """pix2pix reconstruction term for aligned pairs: ||G(x) - y||_1. [B,H,W,C] -> scalar."""
  return l1(target, generated)


def as_channels(x: jax.Array, channels: int) -> jax.Array:
  """[B,H,W,c] -> [B,H,W,channels]: tile a 1-channel image or average to 1 channel."""
  if x.shape[-1] == channels:
    return x
  if x.shape[-1] == 1:
    return jnp.repeat(x, channels, axis=-1)
  if channels == 1:
    return x.mean(axis=-1, keepdims=True)
  raise ValueError(f"cannot adapt {x.shape[-1]} channels to {channels}")


# ----------------------------------------------------------------------------
# History pool.
# ----------------------------------------------------------------------------


def pool_init(size: int, image_shape: tuple[int, ...], dtype=jnp.float32) -> dict:
  """Empty pool state: images [size, H, W, C] and how many slots are filled (int32)."""
  return {"images": jnp.zeros((size, *image_shape), dtype), "count": jnp.zeros((), jnp.int32)}


def pool_query(pool: dict, images: jax.Array, rng: jax.Array) -> tuple[dict, jax.Array]:
  """Mixes freshly generated images with ones from earlier steps (jittable).

  Image by image: while the pool is not full, store it and return it; afterwards with
  probability 1/2 return it unchanged, else return a random stored image and store the
  new one in its place. A pool of size 0 returns `images`. images [B,H,W,C] ->
  (new pool, [B,H,W,C]).
  """
  size = pool["images"].shape[0]
  if size == 0:
    return pool, images

  def one(carry, inputs):
    stored, count = carry
    image, key = inputs
    swap_key, slot_key = jax.random.split(key)
    filling = count < size
    swap = jax.random.uniform(swap_key) < 0.5
    slot = jnp.where(filling, count, jax.random.randint(slot_key, (), 0, size))
    old = stored[slot]
    out = jnp.where(filling | ~swap, image, old)
    write = filling | swap
    stored = stored.at[slot].set(jnp.where(write, image, old))
    return (stored, jnp.minimum(count + 1, size)), out

  keys = jax.random.split(rng, images.shape[0])
  (stored, count), out = jax.lax.scan(
    one, (pool["images"], pool["count"]), (images.astype(pool["images"].dtype), keys)
  )
  return {"images": stored, "count": count}, out.astype(images.dtype)
