"""FSDP on 8 fake devices: the B16 preset's params and Adam moments, never materialised,
take ~1/fsdp of their bytes per device when the fsdp mesh axis grows."""

import jax
import numpy as np
import pytest

from configs import siglip_ir
from fusionrs_jax.core import sharding
from fusionrs_jax.models import siglip as siglip_model
from fusionrs_jax.trainers import common
from fusionrs_jax.trainers import siglip as siglip_trainer

FSDP_SIZES = (1, 2, 4, 8)


def _per_device_bytes(shapes, shardings) -> int:
  """Bytes one device holds (device 0; every device holds an equal share here)."""
  total = 0
  for x, s in zip(jax.tree.leaves(shapes), jax.tree.leaves(shardings)):
    total += int(np.prod(s.shard_shape(x.shape))) * np.dtype(x.dtype).itemsize
  return total


@pytest.fixture(scope="module")
def b16():
  config = siglip_ir.get_config("size=B16")
  model = siglip_trainer.build_model(config)
  abstract = jax.eval_shape(
    lambda r: model.init(r, **siglip_model.dummy_inputs(model)), jax.random.PRNGKey(0)
  )
  return config, model, abstract


def test_b16_preset_config_shards_params_over_every_device(b16):
  config, _, _ = b16
  assert dict(config.mesh) == {"data": 1, "fsdp": -1, "model": 1}
  assert sharding.mesh_shape(dict(config.mesh), 8) == (1, 8, 1)


def test_param_and_adam_bytes_per_device_fall_linearly_with_fsdp(b16):
  config, _, abstract = b16
  tx = common.make_optimizer(config.optim, config.total_steps)
  unboxed = jax.tree.map(
    lambda x: x.value if hasattr(x, "value") else x, abstract, is_leaf=lambda x: hasattr(x, "names")
  )
  params_bytes, opt_bytes = [], []
  for fsdp in FSDP_SIZES:
    mesh = sharding.make_mesh({"data": 8 // fsdp, "fsdp": fsdp, "model": 1})
    param_sh = sharding.param_shardings(abstract, mesh)
    params_bytes.append(_per_device_bytes(unboxed, param_sh))
    # The optimizer state's shardings exactly as the trainer's init_state places it.
    args = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), unboxed, param_sh
    )
    opt_sh = common.optimizer_shardings(tx, args, mesh)
    compiled = jax.jit(tx.init, out_shardings=opt_sh).lower(args).compile()
    opt_bytes.append(_per_device_bytes(jax.eval_shape(tx.init, args), compiled.output_shardings))
  full = params_bytes[0]
  assert full > 150e6 * 4  # ~200M float32 params: a real ViT-B/16 + text tower
  for fsdp, p, o in zip(FSDP_SIZES, params_bytes, opt_bytes):
    # Biases, norms and the logit scale stay replicated: within 3% of exactly 1/fsdp.
    assert p == pytest.approx(full / fsdp, rel=0.03), (fsdp, p / full)
    assert o == pytest.approx(2 * p, rel=0.03), (fsdp, o / p)  # Adam: mu + nu


@pytest.mark.parametrize("kind", ["multi_transform", "masked"])
def test_optimizer_shardings_follow_params_through_masked_and_multi_transform_states(kind):
  import optax

  mesh = sharding.make_mesh({"data": 1, "fsdp": 8, "model": 1})
  fsdp = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp"))
  repl = sharding.replicated(mesh)
  params = {
    "enc": {"w": jax.ShapeDtypeStruct((16, 4), np.float32, sharding=fsdp)},
    "dec": {
      "w": jax.ShapeDtypeStruct((16, 2), np.float32, sharding=fsdp),
      "b": jax.ShapeDtypeStruct((2,), np.float32, sharding=repl),
    },
  }
  if kind == "multi_transform":
    labels = {"enc": {"w": "frozen"}, "dec": {"w": "train", "b": "train"}}
    tx = optax.multi_transform({"train": optax.adamw(1e-3), "frozen": optax.set_to_zero()}, labels)
  else:
    tx = optax.masked(optax.adamw(1e-3), {"enc": {"w": False}, "dec": {"w": True, "b": True}})
  opt_sh = common.optimizer_shardings(tx, params, mesh)
  leaves = jax.tree_util.tree_leaves_with_path(jax.eval_shape(tx.init, params))
  sh = jax.tree.leaves(opt_sh)
  assert len(leaves) == len(sh)
  by_name = {jax.tree_util.keystr(p): s for (p, _), s in zip(leaves, sh)}
  moments = [k for k in by_name if "['dec']['w']" in k]
  assert len(moments) == 2  # mu and nu of the trained 2-D weight
  assert all(by_name[k] == fsdp for k in moments)
  assert all(by_name[k] == repl for k in by_name if "['dec']['w']" not in k)
  # The frozen encoder has no moments at all.
  assert not any("['enc']" in k for k in by_name)
  jax.jit(tx.init, out_shardings=opt_sh).lower(params).compile()
