"""The captioner train step hands has_rgb / has_ir to the model, so the loss of a record
without IR does not depend on what sits in its IR slot."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fusionrs_jax.trainers import captioner as captioner_trainer

B, L, V = 4, 6, 11


class _ImageSensitiveLM:
  """Logits [B, L, V] = w * (mean RGB + mean IR of the images the row has): a model that
  reads an image exactly when its mask says the image is there (masks default to present)."""

  def apply(self, params, rgb, ir, tokens, input_mask, mask_ar, has_rgb=None, has_ir=None):
    present = lambda x, has: x.mean((1, 2, 3)) * (1.0 if has is None else has.astype(x.dtype))
    signal = present(rgb, has_rgb) + present(ir, has_ir)  # [B]
    return signal[:, None, None] * params["w"][None] + 0.0 * tokens[..., None]


_TX = optax.sgd(0.0)
_STEP = jax.jit(captioner_trainer.make_train_step(_ImageSensitiveLM(), _TX))


def _loss(batch):
  params = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(L, V)), jnp.float32)}
  state = {"params": params, "opt_state": _TX.init(params), "step": 0}
  return float(_STEP(state, batch)[1]["loss"])


def _batch(ir_fill: float, has_ir):
  rng = np.random.default_rng(1)
  ir = rng.normal(size=(B, 8, 8, 1)).astype(np.float32)
  ir[~has_ir] = ir_fill
  return {
    "rgb": jnp.asarray(rng.normal(size=(B, 8, 8, 3)), jnp.float32),
    "ir": jnp.asarray(ir),
    "has_rgb": jnp.ones(B, bool),
    "has_ir": jnp.asarray(has_ir),
    "tokens": jnp.asarray(rng.integers(1, V, (B, L)), jnp.int32),
    "input_mask": jnp.ones((B, L), bool),
    "mask_ar": jnp.asarray([[0, 0, 1, 1, 1, 1]] * B, jnp.int32),
    "loss_mask": jnp.asarray([[False, False, True, True, True, True]] * B),
  }


def test_loss_of_records_without_ir_ignores_the_ir_slot():
  has_ir = np.array([True, False, True, False])
  assert _loss(_batch(0.0, has_ir)) == _loss(_batch(5.0, has_ir))
  # Without the masks the placeholder would be read as an image (the comparison above can fail).
  unmasked = lambda b: {k: v for k, v in b.items() if k not in ("has_rgb", "has_ir")}
  assert _loss(unmasked(_batch(0.0, has_ir))) != _loss(unmasked(_batch(5.0, has_ir)))
