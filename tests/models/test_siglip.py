"""SigLIP model: presets, IR tower options, normalised embeddings, t/b init, jit, scanned layers
and named remat policies."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fusionrs_jax.losses.sigmoid import sigmoid_loss
from fusionrs_jax.models import scan
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


def _loss_fn(model):
  """(params, inputs) -> RGB-text + IR-text sigmoid loss through every tower."""

  def loss(params, inputs):
    out = model.apply({"params": params}, **inputs)
    return sigmoid_loss(out["rgb"], out["text"], out["t"], out["b"]) + sigmoid_loss(
      out["ir"], out["text"], out["t"], out["b"]
    )

  return jax.jit(jax.value_and_grad(loss))


@pytest.fixture(scope="module")
def separate_towers():
  """Tiny SigLIP with a separate 1-channel IR tower, its unscanned params and inputs."""
  model = SigLIP(**siglip_preset("tiny"), ir_tower="separate", ir_channels=1)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), **dummy_inputs(model)))
  return model, params["params"], _inputs(model, b=4)


def test_scanned_towers_match_unscanned_with_converted_params(separate_towers):
  model, params, inputs = separate_towers
  scanned = model.clone(scan_layers=True, remat=True, remat_policy="dots_saveable")
  stacked = scan.scan_params(params)
  ref = jax.jit(model.apply)({"params": params}, **inputs, ir_text=inputs["text"])
  out = jax.jit(scanned.apply)({"params": stacked}, **inputs, ir_text=inputs["text"])
  assert set(out) == set(ref) == {"rgb", "ir", "text", "ir_text", "t", "b"}
  for key in ref:
    np.testing.assert_allclose(out[key], ref[key], atol=1e-5)
  # Gradients agree too, layer by layer once unstacked (remat inside scan).
  ref_loss, ref_grads = _loss_fn(model)(params, inputs)
  loss, grads = _loss_fn(scanned)(stacked, inputs)
  np.testing.assert_allclose(loss, ref_loss, atol=1e-5)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), scan.unscan_params(grads), ref_grads
  )


@pytest.mark.parametrize("policy", ["dots_saveable", "dots_with_no_batch_dims_saveable"])
def test_remat_with_named_policy_keeps_loss_and_gradients(separate_towers, policy):
  model, params, inputs = separate_towers
  ref_loss, ref_grads = _loss_fn(model)(params, inputs)
  loss, grads = _loss_fn(model.clone(remat=True, remat_policy=policy))(params, inputs)
  np.testing.assert_allclose(loss, ref_loss, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grads, ref_grads)


def test_unknown_remat_policy_is_a_value_error_naming_the_valid_ones():
  model = SigLIP(**siglip_preset("tiny"), remat=True, remat_policy="save_dots")
  with pytest.raises(ValueError, match="unknown remat policy 'save_dots'.*nothing_saveable"):
    model.init(jax.random.key(0), **dummy_inputs(model))


def test_config_overrides_image_and_patch_size_and_the_token_count_follows():
  """The thermal arms' 128 px / patch 16 override: 64 patch tokens, as at 64 px / patch 8."""
  from configs import siglip_ir
  from fusionrs_jax.models import siglip as siglip_model

  config = siglip_ir.get_config("size=tiny")
  config.model.image_size, config.model.patch_size = 64, 16
  model = siglip_model.from_config(config)
  assert (model.image_size, model.patch_size) == (64, 16)
  params = nn.unbox(model.init(jax.random.key(0), **dummy_inputs(model)))
  vision = params["params"]["vision_model"]
  assert vision["patch_embedding"]["kernel"].shape[:2] == (16, 16)
  assert vision["position_embedding"].shape[0] == (64 // 16) ** 2
  emb = model.apply(params, **dummy_inputs(model, batch_size=2))
  assert emb["rgb"].shape == (2, siglip_preset("tiny")["width"])
  # 0 keeps the preset's patch.
  config.model.patch_size = 0
  assert siglip_model.from_config(config).patch_size == siglip_preset("tiny")["patch_size"]
