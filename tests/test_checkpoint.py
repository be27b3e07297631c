"""Checkpoints restore bit-exact, onto another mesh, with the data iterator position."""

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from fusionrs_jax.core import checkpoint, sharding
from fusionrs_jax.trainers import common


class _Mlp(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Dense(
      32, kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp"))
    )(x)
    return nn.Dense(
      8, kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("mlp", "embed"))
    )(nn.gelu(x))


def _state(mesh, seed=0):
  model = _Mlp()
  init = lambda r: model.init(r, jnp.zeros((1, 8)))
  tx = optax.adamw(1e-2)
  state, shardings = common.init_state(init, tx, seed, mesh)
  # One real update so optimizer moments are non-trivial.
  grads = jax.grad(lambda p: jnp.sum(model.apply(p, jnp.ones((4, 8))) ** 2))(state["params"])
  updates, state["opt_state"] = tx.update(grads, state["opt_state"], state["params"])
  state["params"] = optax.apply_updates(state["params"], updates)
  state["step"] = state["step"] + 1
  return state, shardings


def _iterator():
  return grain.MapDataset.range(50).shuffle(seed=3).batch(4).to_iter_dataset().__iter__()


def _leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_restore_is_bit_exact_and_continues_data_sequence(tmp_path):
  mesh = sharding.make_mesh({"data": -1, "fsdp": 2})
  state, shardings = _state(mesh)
  it = _iterator()
  for _ in range(3):
    next(it)
  ckpt = checkpoint.Checkpointer(str(tmp_path), save_every=1)
  assert ckpt.save(1, state, it)
  ckpt.wait()
  expected_next = [next(it) for _ in range(3)]

  fresh, _ = _state(mesh, seed=1)  # different values, same structure
  target = checkpoint.abstract_with_shardings(fresh, shardings)
  it2 = _iterator()
  step, restored = ckpt.restore(target, it2)
  ckpt.close()
  assert step == 1
  _leaves_equal(restored, state)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(shardings)):
    assert a.sharding == b
  for want in expected_next:
    np.testing.assert_array_equal(next(it2), want)


def test_restore_reshards_onto_a_different_mesh(tmp_path):
  mesh_a = sharding.make_mesh({"data": 1, "fsdp": 8})
  state, _ = _state(mesh_a)
  ckpt = checkpoint.Checkpointer(str(tmp_path), save_every=1, async_save=False)
  ckpt.save(5, state)
  mesh_b = sharding.make_mesh({"data": 2, "fsdp": 2, "model": 2})
  fresh, shardings_b = _state(mesh_b, seed=7)
  step, restored = ckpt.restore(checkpoint.abstract_with_shardings(fresh, shardings_b))
  ckpt.close()
  assert step == 5
  _leaves_equal(restored, state)
  kernel = restored["params"]["params"]["Dense_0"]["kernel"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "model")
  assert kernel.sharding.mesh.shape == mesh_b.shape


def test_max_to_keep_and_save_interval(tmp_path):
  mesh = sharding.make_mesh({"data": -1})
  state, _ = _state(mesh)
  ckpt = checkpoint.Checkpointer(str(tmp_path), save_every=2, max_to_keep=2, async_save=False)
  saved = [s for s in range(1, 8) if ckpt.save(s, state)]
  ckpt.close()
  assert saved == [2, 4, 6]
  assert ckpt.all_steps() == [4, 6]


def test_restore_raw_reads_an_8_device_checkpoint_in_a_1_device_process(tmp_path):
  import subprocess
  import sys

  from tests.conftest import REPO

  mesh = sharding.make_mesh({"data": 1, "fsdp": 8})
  state, _ = _state(mesh)
  ckpt = checkpoint.Checkpointer(str(tmp_path), save_every=1, async_save=False)
  ckpt.save(3, state)
  ckpt.close()
  np.save(tmp_path / "want.npy", np.asarray(state["params"]["params"]["Dense_0"]["kernel"]))
  code = (
    "import numpy as np, sys; from fusionrs_jax.core import checkpoint; "
    f"c = checkpoint.Checkpointer({str(tmp_path)!r}, save_every=1, async_save=False); "
    "raw = c.restore_raw(); import jax; assert jax.device_count() == 1; "
    f"np.testing.assert_array_equal(np.asarray(raw['params']['params']['Dense_0']['kernel']),"
    f" np.load({str(tmp_path / 'want.npy')!r})); print('ok')"
  )
  env = {k: v for k, v in __import__("os").environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run(
    [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
  )
  assert out.stdout.strip().endswith("ok"), out.stderr[-3000:]
