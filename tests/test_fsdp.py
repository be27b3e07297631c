"""FSDP on 8 fake devices: the B16 preset's params and Adam moments, never materialised,
take ~1/fsdp of their bytes per device when the fsdp mesh axis grows."""

import jax
import numpy as np
import pytest

from configs import siglip_ir
from fusionrs_jax import sharding
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
      lambda r: model.init(r, **siglip_model.dummy_inputs(model)), jax.random.PRNGKey(0))
  return config, model, abstract


def test_b16_preset_config_shards_params_over_every_device(b16):
  config, _, _ = b16
  assert dict(config.mesh) == {"data": 1, "fsdp": -1, "model": 1}
  assert sharding.mesh_shape(dict(config.mesh), 8) == (1, 8, 1)


def test_param_and_adam_bytes_per_device_fall_linearly_with_fsdp(b16):
  config, _, abstract = b16
  tx = common.make_optimizer(config.optim, config.total_steps)
  unboxed = jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, abstract,
                         is_leaf=lambda x: hasattr(x, "names"))
  params_bytes, opt_bytes = [], []
  for fsdp in FSDP_SIZES:
    mesh = sharding.make_mesh({"data": 8 // fsdp, "fsdp": fsdp, "model": 1})
    param_sh = sharding.param_shardings(abstract, mesh)
    params_bytes.append(_per_device_bytes(unboxed, param_sh))
    # The optimizer state's shardings exactly as the trainer's init_state places it.
    args = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        unboxed, param_sh)
    opt_sh = common.optimizer_shardings(tx, args, mesh)
    compiled = jax.jit(tx.init, out_shardings=opt_sh).lower(args).compile()
    opt_bytes.append(_per_device_bytes(jax.eval_shape(tx.init, args),
                                       compiled.output_shardings))
  full = params_bytes[0]
  assert full > 150e6 * 4  # ~200M float32 params: a real ViT-B/16 + text tower
  for fsdp, p, o in zip(FSDP_SIZES, params_bytes, opt_bytes):
    # Biases, norms and the logit scale stay replicated: within 3% of exactly 1/fsdp.
    assert p == pytest.approx(full / fsdp, rel=0.03), (fsdp, p / full)
    assert o == pytest.approx(2 * p, rel=0.03), (fsdp, o / p)  # Adam: mu + nu
