"""Export to transformers SiglipModel: same embeddings and logits as our forward, exact round trip."""

import flax.linen as nn
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from fusionrs_jax.models.hf import siglip as hf_siglip
from fusionrs_jax.models.siglip import SigLIP, dummy_inputs, siglip_preset


def _random_model(ir_tower="shared", ir_channels=3):
  hp = siglip_preset("tiny")
  model = SigLIP(**hp, ir_tower=ir_tower, ir_channels=ir_channels)
  params = nn.meta.unbox(model.init(jax.random.key(0), **dummy_inputs(model)))["params"]
  # Perturb every leaf so zero biases / unit LN scales also carry signal through the mapping.
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  leaves = [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  return model, hp, jax.tree_util.tree_unflatten(treedef, leaves)


def _inputs(hp, channels=3, b=3):
  s = hp["image_size"]
  k1, k2 = jax.random.split(jax.random.key(2))
  images = jax.random.uniform(k1, (b, s, s, channels), minval=-1, maxval=1)
  tokens = jax.random.randint(k2, (b, hp["text_len"]), 0, hp["vocab_size"])
  return images, tokens


def _nchw(images):
  return torch.from_numpy(np.asarray(images).transpose(0, 3, 1, 2).copy())


def _assert_same_tree(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), y), a, b)


def test_exported_siglip_matches_jax_forward_and_round_trips(tmp_path):
  model, hp, params = _random_model()
  images, tokens = _inputs(hp)
  ours = model.apply({"params": params}, rgb=images, text=tokens)
  logits = ours["t"] * ours["rgb"] @ ours["text"].T + ours["b"]  # [images, texts]

  hf_siglip.save_hf_siglip(params, hp, str(tmp_path))
  hf = transformers.SiglipModel.from_pretrained(str(tmp_path)).eval()
  with torch.no_grad():
    out = hf(input_ids=torch.tensor(np.array(tokens)).long(), pixel_values=_nchw(images))
  np.testing.assert_allclose(out.image_embeds.numpy(), ours["rgb"], atol=1e-4)
  np.testing.assert_allclose(out.text_embeds.numpy(), ours["text"], atol=1e-4)
  np.testing.assert_allclose(out.logits_per_image.numpy(), logits, atol=1e-4)

  loaded, loaded_hp = hf_siglip.load_hf_siglip(str(tmp_path))
  assert loaded_hp == {**hp, "ir_tower": "shared", "ir_channels": 3}
  _assert_same_tree(params, loaded)
  # The text config names the tokenizer's ids (Gemma layout), not CLIP's or SigLIP-spm's.
  text = hf.config.text_config
  assert (text.pad_token_id, text.eos_token_id, text.bos_token_id) == (0, 1, 2)


def test_separate_one_channel_ir_tower_exports_as_vision_model(tmp_path):
  model, hp, params = _random_model("separate", ir_channels=1)
  ir, _ = _inputs(hp, channels=1)
  ours = model.apply({"params": params}, ir=ir)["ir"]

  hf_siglip.save_hf_siglip(params, hp, str(tmp_path))
  vision = transformers.SiglipVisionModel.from_pretrained(str(tmp_path / hf_siglip.IR_SUBDIR))
  assert vision.config.num_channels == 1
  with torch.no_grad():
    pooled = vision.eval()(pixel_values=_nchw(ir)).pooler_output.numpy()
  np.testing.assert_allclose(
    pooled / np.linalg.norm(pooled, axis=-1, keepdims=True), ours, atol=1e-4
  )

  loaded, loaded_hp = hf_siglip.load_hf_siglip(str(tmp_path))
  assert (loaded_hp["ir_tower"], loaded_hp["ir_channels"]) == ("separate", 1)
  _assert_same_tree(params, loaded)
  # The loaded params drive our model directly.
  again = SigLIP(**loaded_hp).apply({"params": loaded}, ir=ir)["ir"]
  np.testing.assert_allclose(again, ours, atol=1e-6)


def test_missing_weights_name_the_keys(tmp_path):
  _, hp, params = _random_model()
  sd = hf_siglip.to_hf_state_dict(params, hp)
  del sd["text_model.head.weight"]
  with pytest.raises(KeyError, match="text_model.head.weight"):
    hf_siglip.from_hf_state_dict(sd, hp)
  with pytest.raises(FileNotFoundError, match="config.json"):
    hf_siglip.load_hf_siglip(str(tmp_path))
  hf_siglip.hf_siglip_config(hp).save_pretrained(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="safetensors"):
    hf_siglip.load_hf_siglip(str(tmp_path))


def test_load_like_starts_separate_ir_tower_from_rgb_weights(tmp_path):
  shared, hp, params = _random_model()
  hf_siglip.save_hf_siglip(params, hp, str(tmp_path))
  ir, _ = _inputs(hp, channels=1)
  expect = shared.apply({"params": params}, ir=ir)["ir"]

  separate = SigLIP(**hp, ir_tower="separate", ir_channels=1)
  like = jax.eval_shape(lambda: separate.init(jax.random.key(0), **dummy_inputs(separate)))
  loaded = hf_siglip.load_hf_siglip_like(str(tmp_path), like)
  assert loaded["params"]["ir_vision_model"]["patch_embedding"]["kernel"].shape == (8, 8, 1, 32)
  # Summed patch kernel: the 1-channel tower reproduces the shared tower on replicated IR.
  np.testing.assert_allclose(separate.apply(loaded, ir=ir)["ir"], expect, atol=1e-5)

  other = SigLIP(**{**hp, "vocab_size": 100})
  like = jax.eval_shape(lambda: other.init(jax.random.key(0), **dummy_inputs(other)))
  with pytest.raises(ValueError, match="token_embedding"):
    hf_siglip.load_hf_siglip_like(str(tmp_path), like)


def test_scanned_model_exports_through_unscan_and_imports_back(tmp_path):
  """A scan_layers=True model's stacked params export (after scan.unscan_params) to the
  same SiglipModel as the unscanned model, and come back stacked bit for bit."""
  from fusionrs_jax.models import scan

  model, hp, params = _random_model()
  scanned_model = SigLIP(**hp, ir_tower="shared", ir_channels=3, scan_layers=True)
  scanned = scan.scan_params(params)
  images, tokens = _inputs(hp)
  ours = scanned_model.apply({"params": scanned}, rgb=images, text=tokens)
  hf_siglip.save_hf_siglip(scan.unscan_params(scanned), hp, str(tmp_path))
  hf = transformers.SiglipModel.from_pretrained(str(tmp_path)).eval()
  with torch.no_grad():
    out = hf(input_ids=torch.tensor(np.array(tokens)).long(), pixel_values=_nchw(images))
  np.testing.assert_allclose(out.image_embeds.numpy(), ours["rgb"], atol=1e-4)
  np.testing.assert_allclose(out.text_embeds.numpy(), ours["text"], atol=1e-4)
  loaded, _ = hf_siglip.load_hf_siglip(str(tmp_path))
  _assert_same_tree(scanned, scan.scan_params(loaded))
