"""transformers PaliGemma / SigLIP folders -> captioner params: the imported captioner gives
the folder's logits within 1e-4, import -> export -> import is exact, the Hub's older key
names import the same, and a SigLIP image tower comes from a SiglipModel or PaliGemma folder."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from fusionrs_jax.models import captioner
from fusionrs_jax.models.hf import paligemma as hf_paligemma
from fusionrs_jax.models.vit import ViT
from tests.models import hf_tiny

V = 48


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  out = tmp_path_factory.mktemp("hf_pg")
  return str(out), hf_tiny.paligemma(out, vocab=V)


def _assert_same_tree(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_imported_captioner_logits_match_the_folder_within_1e4(folder):
  path, torch_model = folder
  params, vision_hp, llm_hp = hf_paligemma.load_hf_paligemma(path)
  assert llm_hp == dict(
    vocab_size=V, width=32, depth=2, mlp_dim=64, num_heads=4, num_kv_heads=2, head_dim=8
  )
  model = captioner.Captioner(vision_hp=vision_hp, llm_hp=llm_hp)
  rgb, ir = hf_tiny.images(0)
  prompt = np.array([[2, 10, 11, 4], [2, 12, 13, 4]], np.int32)
  answer = np.array([[20, 21, 22], [23, 24, 1]], np.int32)
  tokens = np.concatenate([prompt, answer], 1)
  mask_ar = np.concatenate([np.zeros_like(prompt), np.ones_like(answer)], 1)
  ours = model.apply({"params": params}, rgb, ir, tokens, np.ones(tokens.shape, bool), mask_ar)
  inp = hf_paligemma.hf_inputs(prompt, model.num_image_tokens, V, answer)
  with torch.no_grad():
    theirs = torch_model(
      input_ids=torch.from_numpy(inp["input_ids"]),
      token_type_ids=torch.from_numpy(inp["token_type_ids"]),
      pixel_values=torch.from_numpy(hf_paligemma.pixel_values(rgb, ir, "rgb_ir")),
    ).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), theirs[:, model.num_image_tokens :], atol=1e-4)


def test_import_export_import_is_the_identity(folder):
  path, torch_model = folder
  params, vision_hp, llm_hp = hf_paligemma.load_hf_paligemma(path)
  exported = hf_paligemma.to_hf_state_dict(params, vision_hp["depth"], llm_hp["depth"])
  # Export gives back the folder's tensors bit for bit ...
  theirs = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  assert set(exported) == set(theirs)
  for k, v in theirs.items():
    np.testing.assert_array_equal(exported[k], v, err_msg=k)
  # ... and importing them again gives the same params.
  _assert_same_tree(hf_paligemma.from_hf_state_dict(exported, vision_hp, llm_hp), params)


def test_older_hub_key_names_import_the_same(folder, tmp_path):
  """Public PaliGemma weights were saved as vision_tower.vision_model.*,
  language_model.model.*, multi_modal_projector.*; transformers renames them on load."""
  from safetensors.numpy import save_file

  path, torch_model = folder
  params, _, _ = hf_paligemma.load_hf_paligemma(path)
  old = {}
  for k, v in torch_model.state_dict().items():
    k = k.replace("model.vision_tower.", "vision_tower.vision_model.")
    k = k.replace("model.language_model.", "language_model.model.")
    k = k.replace("model.multi_modal_projector.", "multi_modal_projector.")
    old[k.replace("lm_head.", "language_model.lm_head.")] = v.numpy()
  torch_model.config.save_pretrained(str(tmp_path))
  save_file(old, str(tmp_path / "model.safetensors"))
  again, _, _ = hf_paligemma.load_hf_paligemma(str(tmp_path))
  _assert_same_tree(again, params)


def test_hyperparameters_that_differ_from_the_config_are_named(folder):
  path, _ = folder
  _, vision_hp, llm_hp = hf_paligemma.load_hf_paligemma(path)
  other = captioner.Captioner(
    vision_hp={**vision_hp, "depth": 3}, llm_hp={**llm_hp, "vocab_size": 64}
  )
  with pytest.raises(ValueError) as e:
    hf_paligemma.load_hf_paligemma_for(path, other)
  assert "vision depth: 2 in the folder, 3 in the config" in str(e.value)
  assert "llm vocab_size: 48 in the folder, 64 in the config" in str(e.value)


def test_vision_tower_imports_from_a_siglip_or_a_paligemma_folder(folder, tmp_path):
  path, _ = folder
  params, _, _ = hf_paligemma.load_hf_paligemma(path)
  tower, vision_hp = hf_paligemma.load_hf_vision_tower(path)
  _assert_same_tree(tower, params["img"])

  siglip_model = hf_tiny.siglip(tmp_path)
  tower, vision_hp = hf_paligemma.load_hf_vision_tower(str(tmp_path))
  rgb, _ = hf_tiny.images(1)
  _, ours = ViT(**vision_hp, num_channels=3, use_head=False).apply({"params": tower}, rgb)
  with torch.no_grad():
    pixels = torch.from_numpy(rgb.transpose(0, 3, 1, 2).copy())
    theirs = siglip_model.vision_model(pixel_values=pixels).last_hidden_state.numpy()
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4)

  (tmp_path / "gemma").mkdir()
  (tmp_path / "gemma" / "config.json").write_text('{"model_type": "gemma"}')
  with pytest.raises(ValueError, match="'gemma' model"):
    hf_paligemma.load_hf_vision_tower(str(tmp_path / "gemma"))


def test_a_sharded_folder_is_a_transformers_folder(tmp_path):
  from fusionrs_jax.models.hf import io as hf_io

  (tmp_path / "config.json").write_text("{}")
  assert not hf_io.is_hf_folder(str(tmp_path))
  (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": {}}')
  assert hf_io.is_hf_folder(str(tmp_path))
