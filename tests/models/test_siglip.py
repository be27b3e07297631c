"""SigLIP model: presets, IR tower options, normalised embeddings, t/b init, jit."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fusionrs_jax.models.siglip import SigLIP, dummy_inputs, siglip_preset


def _inputs(model, b=2):
  s = model.image_size
  k1, k2, k3 = jax.random.split(jax.random.key(7), 3)
  return {
    "rgb": jax.random.uniform(k1, (b, s, s, 3), minval=-1, maxval=1),
    "ir": jax.random.uniform(k2, (b, s, s, 1), minval=-1, maxval=1),
    "text": jax.random.randint(k3, (b, model.text_len), 0, model.vocab_size),
  }


def test_presets_have_constructor_keys_and_known_shapes():
  for name in ["tiny", "small", "B16", "So400m"]:
    SigLIP(**siglip_preset(name))  # every key is a constructor field
  b16 = siglip_preset("B16")
  assert (b16["width"], b16["depth"], b16["patch_size"], b16["image_size"]) == (768, 12, 16, 224)
  assert (b16["vocab_size"], b16["text_len"]) == (32000, 64)
  so400m = siglip_preset("So400m")
  assert (so400m["width"], so400m["depth"], so400m["mlp_dim"], so400m["patch_size"]) == (
    1152,
    27,
    4304,
    14,
  )
  with pytest.raises(ValueError, match="unknown SigLIP preset"):
    siglip_preset("huge")


def test_shared_tower_embeds_all_modalities_unit_norm():
  model = SigLIP(**siglip_preset("tiny"))
  inputs = _inputs(model)
  variables = model.init(jax.random.key(0), **dummy_inputs(model))
  params = nn.meta.unbox(variables)["params"]
  assert "ir_vision_model" not in params
  out = jax.jit(model.apply)(variables, **inputs, ir_text=inputs["text"])
  for key in ["rgb", "ir", "text", "ir_text"]:
    assert out[key].shape == (2, 32) and out[key].dtype == jnp.float32
    np.testing.assert_allclose(jnp.linalg.norm(out[key], axis=-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(out["t"], 10.0, rtol=1e-6)
  np.testing.assert_allclose(out["b"], -10.0)
  # Shared tower: 1-channel IR is the RGB tower on the IR replicated to 3 channels.
  ir3 = jnp.repeat(inputs["ir"], 3, axis=-1)
  via_rgb = model.apply(variables, ir3, "rgb", method=SigLIP.embed_image)
  np.testing.assert_allclose(out["ir"], via_rgb, atol=1e-6)
  np.testing.assert_allclose(out["text"], out["ir_text"], atol=1e-6)


def test_separate_one_channel_ir_tower_has_its_own_params():
  model = SigLIP(**siglip_preset("tiny"), ir_tower="separate", ir_channels=1)
  inputs = _inputs(model)
  variables = model.init(jax.random.key(0), **dummy_inputs(model))
  params = nn.meta.unbox(variables)["params"]
  assert params["ir_vision_model"]["patch_embedding"]["kernel"].shape == (8, 8, 1, 32)
  assert params["vision_model"]["patch_embedding"]["kernel"].shape == (8, 8, 3, 32)
  out = model.apply(variables, ir=inputs["ir"])
  assert set(out) == {"ir", "t", "b"}
  # The IR embedding depends only on the IR tower.
  zeroed = jax.tree_util.tree_map(jnp.zeros_like, params["vision_model"])
  other = model.apply({"params": {**params, "vision_model": zeroed}}, ir=inputs["ir"])
  np.testing.assert_allclose(other["ir"], out["ir"], atol=1e-6)
  with pytest.raises(ValueError, match="modality"):
    model.apply(variables, inputs["rgb"], "thermal", method=SigLIP.embed_image)


def test_invalid_ir_tower_is_rejected():
  model = SigLIP(**siglip_preset("tiny"), ir_tower="both")
  with pytest.raises(ValueError, match="ir_tower"):
    model.init(jax.random.key(0), **dummy_inputs(model))
