"""bf16 compute (the pod presets' dtype) does not change training: a few steps of the real
SigLIP and captioner train steps track the float32 run's loss from the same init and batches.

Tolerance: 2% relative per step. bf16 keeps 8 bits of mantissa (~0.4% per rounding) while
params and Adam state stay float32. Measured over these 6 steps: SigLIP at most 0.9% apart
(its loss falls 25.0 -> 16.4), the captioner at most 0.04% (6.72 -> 6.61).
"""

import jax
import numpy as np
import pytest

from configs import captioner_dual, siglip_ir
from fusionrs_jax.core import sharding
from fusionrs_jax.trainers import captioner, common, siglip

STEPS, RTOL = 6, 0.02


def _batch(fields, batch_size, vocab, rng):
  out = {}
  for name, (shape, dtype) in fields.items():
    shape = (batch_size, *shape)
    if np.dtype(dtype) == np.float32:
      out[name] = rng.uniform(-1, 1, shape).astype(np.float32)
    elif np.dtype(dtype) == np.bool_:
      out[name] = np.ones(shape, bool)
    else:
      out[name] = rng.integers(1, vocab, shape).astype(np.int32)
  return out


def _losses(trainer, config, make_step, dtype):
  config.model.dtype = dtype
  mesh = sharding.make_mesh(dict(config.mesh))
  model = trainer.step_program(config, mesh).model
  tx = common.make_optimizer(config.optim, config.total_steps)
  state, shardings = common.init_state(trainer.init_fn(model), tx, 0, mesh)
  step = common.jit_step(make_step(model, tx, config, mesh), shardings)
  rng, losses = np.random.default_rng(0), []
  fields = trainer.batch_fields(config, model)
  with sharding.activate(mesh):
    for _ in range(STEPS):
      batch = sharding.place_batch(_batch(fields, config.batch_size, 64, rng), mesh)
      if "mask_ar" in batch:  # a prefix-LM row: prompt then answer
        batch["mask_ar"] = jax.numpy.zeros_like(batch["mask_ar"]).at[:, 4:].set(1)
        batch["loss_mask"] = batch["mask_ar"].astype(bool)
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss"]))
  return np.asarray(losses)


@pytest.mark.parametrize(
  "trainer,config,make_step",
  [
    (siglip, lambda: siglip_ir.get_config("size=tiny"), siglip.make_train_step),
    (
      captioner,
      lambda: captioner_dual.get_config("size=tiny"),
      lambda model, tx, config, mesh: captioner.make_train_step(model, tx),
    ),
  ],
  ids=["siglip", "captioner"],
)
def test_bf16_tracks_float32_loss(trainer, config, make_step):
  f32 = _losses(trainer, config(), make_step, "float32")
  bf16 = _losses(trainer, config(), make_step, "bfloat16")
  assert np.all(np.isfinite(bf16))
  np.testing.assert_allclose(bf16, f32, rtol=RTOL)
  # The runs train: the loss moves by more than the runs differ, so agreeing is not trivial.
  assert abs(f32[-1] - f32[0]) > 3 * np.max(np.abs(bf16 - f32))
