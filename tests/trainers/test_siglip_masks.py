"""The SigLIP train step hands the batch's has_* masks to the loss: rows without IR leave the
IR pairs (as positives and negatives), rows with everything keep the unmasked loss."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fusionrs_jax.trainers import siglip as siglip_trainer

B, S, L, D = 6, 4, 5, 8
HAS_IR = np.array([1, 1, 0, 1, 0, 1], bool)


class _LinearEmbedder:
  """A stand-in for the SigLIP model: flattened inputs times fixed matrices, L2-normalised."""

  def apply(self, params, rgb, ir, text, ir_text):
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    flat = lambda x: x.reshape(x.shape[0], -1).astype(jnp.float32)
    return {
      "rgb": unit(flat(rgb) @ params["rgb"]),
      "ir": unit(flat(ir) @ params["ir"]),
      "text": unit(flat(text) @ params["text"]),
      "ir_text": unit(flat(ir_text) @ params["text"]),
      "t": jnp.float32(10.0),
      "b": jnp.float32(-10.0),
    }


def _batch(rng, rows=B):
  return {
    "rgb": rng.normal(size=(rows, S, S, 3)).astype(np.float32),
    "ir": rng.normal(size=(rows, S, S, 1)).astype(np.float32),
    "tokens": rng.integers(4, 50, (rows, L)).astype(np.int32),
    "ir_tokens": rng.integers(4, 50, (rows, L)).astype(np.int32),
    "has_rgb": np.ones(rows, bool),
    "has_ir": np.ones(rows, bool),
    "has_caption": np.ones(rows, bool),
    "has_ir_caption": np.ones(rows, bool),
  }


def _losses(batch):
  rng = np.random.default_rng(1)
  params = {
    k: jnp.asarray(rng.normal(size=(n, D)), jnp.float32)
    for k, n in (("rgb", S * S * 3), ("ir", S * S), ("text", L))
  }
  config = ml_collections.ConfigDict(
    {"loss": {"impl": "reference", "weights": {"rgb_text": 1.0, "ir_text": 1.0, "rgb_ir": 1.0}}}
  )
  tx = optax.sgd(0.0)
  step = siglip_trainer.make_train_step(_LinearEmbedder(), tx, config, mesh=None)
  state = {"params": params, "opt_state": tx.init(params), "step": 0}
  _, out = jax.jit(step)(state, {k: jnp.asarray(v) for k, v in batch.items()})
  return {k: float(v) for k, v in out.items() if k.startswith("loss")}


def test_train_step_loss_ignores_rows_without_ir_in_ir_pairs():
  batch = _batch(np.random.default_rng(0))
  full = _losses(batch)
  batch["has_ir"] = HAS_IR
  # A missing IR image arrives as zeros (input_pipeline); what is there must not matter.
  batch["ir"][~HAS_IR] = 0.0
  masked = _losses(batch)
  without = _losses({k: v[HAS_IR] for k, v in batch.items()})
  for pair in ("ir_text", "rgb_ir"):
    np.testing.assert_allclose(masked[f"loss/{pair}"], without[f"loss/{pair}"], rtol=1e-5)
    assert abs(masked[f"loss/{pair}"] - full[f"loss/{pair}"]) > 1e-3
  assert masked["loss/rgb_text"] == full["loss/rgb_text"]


def test_train_step_with_every_mask_true_matches_the_unmasked_loss_bit_for_bit():
  batch = _batch(np.random.default_rng(2))
  with_masks = _losses(batch)
  no_masks = _losses({k: v for k, v in batch.items() if not k.startswith("has_")})
  assert with_masks == no_masks


def test_input_masks_let_the_scene_caption_stand_in_for_a_missing_ir_caption():
  batch = {
    "has_rgb": jnp.array([True, True, True]),
    "has_ir": jnp.array([True, False, True]),
    "has_caption": jnp.array([True, True, False]),
    "has_ir_caption": jnp.array([False, True, False]),
  }
  masks = siglip_trainer.input_masks(batch)
  assert masks["ir"].tolist() == [True, False, True]
  assert masks["text"].tolist() == [True, True, False]
  assert masks["ir_text"].tolist() == [True, True, False]
  assert siglip_trainer.input_masks({"has_ir": batch["has_ir"]}).keys() == {"ir"}
