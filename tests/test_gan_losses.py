"""GAN losses (known values) and the history pool's fill / swap behaviour."""

import jax
import jax.numpy as jnp
import numpy as np

from fusionrs_jax.losses import gan as gl


def test_lsgan_losses_are_zero_at_their_targets_and_match_formula():
  ones, zeros = jnp.ones((2, 3, 3, 1)), jnp.zeros((2, 3, 3, 1))
  assert float(gl.lsgan_d_loss(ones, zeros)) == 0.0
  assert float(gl.lsgan_g_loss(ones)) == 0.0
  real, fake = jnp.full((1, 2, 2, 1), 0.5), jnp.full((1, 2, 2, 1), 0.25)
  np.testing.assert_allclose(gl.lsgan_d_loss(real, fake), 0.5 * (0.25 + 0.0625))
  np.testing.assert_allclose(gl.lsgan_g_loss(fake), 0.5625)


def test_l1_terms_and_channel_adaptation():
  a, b = jnp.zeros((1, 2, 2, 3)), jnp.full((1, 2, 2, 3), -0.5)
  for fn in (gl.l1, gl.cycle_loss, gl.identity_loss, gl.paired_l1):
    np.testing.assert_allclose(fn(a, b), 0.5)
  rgb = jnp.arange(6.0).reshape(1, 1, 2, 3)
  np.testing.assert_allclose(gl.as_channels(rgb, 1)[..., 0], [[[1.0, 4.0]]])
  assert gl.as_channels(jnp.ones((1, 2, 2, 1)), 3).shape == (1, 2, 2, 3)


def _batch(start, n):
  """n images whose every pixel holds its id, so outputs can be traced back."""
  return jnp.arange(start, start + n, dtype=jnp.float32)[:, None, None, None] * jnp.ones(
    (n, 2, 2, 1)
  )


def test_pool_returns_new_images_while_filling_then_mixes_in_old_ones():
  pool = gl.pool_init(4, (2, 2, 1))
  query = jax.jit(gl.pool_query)
  pool, out = query(pool, _batch(0, 3), jax.random.PRNGKey(0))
  np.testing.assert_array_equal(out, _batch(0, 3))
  assert int(pool["count"]) == 3
  # Two more: one fills the last slot (returned as is), the other may swap.
  pool, out = query(pool, _batch(3, 2), jax.random.PRNGKey(1))
  assert int(pool["count"]) == 4 and float(out[0, 0, 0, 0]) == 3.0
  seen_old, seen_new = 0, 0
  for step in range(40):
    ids = np.arange(10 + 2 * step, 12 + 2 * step)
    before = set(np.asarray(pool["images"])[:, 0, 0, 0].tolist())
    pool, out = query(pool, _batch(int(ids[0]), 2), jax.random.PRNGKey(100 + step))
    after = set(np.asarray(pool["images"])[:, 0, 0, 0].tolist())
    for value in np.asarray(out)[:, 0, 0, 0]:
      if value in ids:
        seen_new += 1
      else:
        # An old image comes back only from the pool, and its slot gets the new one.
        assert value in before and value not in after
        seen_old += 1
  assert int(pool["count"]) == 4
  # Each query returns an old image with probability 1/2 (80 draws).
  assert 25 <= seen_old <= 55 and seen_old + seen_new == 80


def test_pool_of_size_zero_passes_images_through():
  pool = gl.pool_init(0, (2, 2, 1))
  _, out = gl.pool_query(pool, _batch(5, 2), jax.random.PRNGKey(0))
  np.testing.assert_array_equal(out, _batch(5, 2))
