"""Exported folders are clean to use: transformers loads them without warnings about their
configs, with the tokenizer's pad id, and the README's usage block run on an exported SigLIP
gives our model's embeddings."""

import logging
import os
import re
import warnings

import flax.linen as nn
import jax
import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from data_prep.ingest import tokenizer as tokenizer_training
from fusionrs_jax.data import images as image_decoding
from fusionrs_jax.data import input_pipeline
from fusionrs_jax.models import captioner, gemma, siglip
from fusionrs_jax.models.hf import paligemma as hf_paligemma
from fusionrs_jax.models.hf import siglip as hf_siglip
from tests.conftest import REPO

TEXTS = [
  f"a {c} field next to {n} roads, warm roofs" for c in ("green", "dry", "wet") for n in range(9)
]


def _random_params(model, inputs, seed):
  """Random params of `model`'s shapes (norm scales near 1), without compiling its init."""
  shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), **inputs))
  rng = np.random.RandomState(seed)

  def draw(path, x):
    base = 1.0 if jax.tree_util.keystr(path).endswith("['scale']") else 0.0
    return (base + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """(SigLIP model, params, folder, tokenizer): a random tiny SigLIP with a 1-channel IR tower
  exported as export_run writes it, and a tiny captioner exported to folder/captioner."""
  out = tmp_path_factory.mktemp("exported")
  spm = tokenizer_training.train_tokenizer(TEXTS, str(out / "spm.model"), 300)
  tok = input_pipeline.Tokenizer(spm)
  # 64 text positions: the README's captions leave padding, where the pooling matters.
  hp = {**siglip.siglip_preset("tiny"), "vocab_size": tok.vocab_size, "text_len": 64}
  model = siglip.SigLIP(**hp, ir_tower="separate", ir_channels=1)
  params = _random_params(model, siglip.dummy_inputs(model), 0)["params"]
  folder = str(out / "siglip")
  hf_siglip.save_hf_siglip(params, hp, folder)
  hf_siglip.save_hf_tokenizer(spm, folder, hp["text_len"])
  hf_siglip.save_hf_image_processor(folder, hp["image_size"])
  cap = captioner.captioner_from_presets(hp, gemma.gemma_preset("tiny"), tok.vocab_size)
  cap_params = _random_params(cap, captioner.dummy_inputs(cap), 1)
  hf_paligemma.save_hf_paligemma(cap_params, cap, str(out / "captioner"), spm)
  return model, params, folder, tok, str(out / "captioner")


def test_exported_folders_load_without_config_warnings_and_pad_with_0(exported):
  _, _, folder, tok, pg = exported
  # transformers 5.23 complains about its own default SiglipTextConfig (CLIP's bos/eos ids
  # outside SigLIP's default vocabulary) whenever it prints any SigLIP config; those lines
  # name the defaults' numbers, which no exported config holds.
  default = transformers.SiglipTextConfig()
  theirs = [
    f"(between 0 and {default.vocab_size - 1}), got {default.bos_token_id}",
    f"(between 0 and {default.vocab_size - 1}), got {default.eos_token_id}",
  ]
  transformers.utils.logging.get_logger("x").warning_once.__func__.cache_clear()
  records = []
  handler = logging.Handler(logging.WARNING)
  handler.emit = records.append
  logger = transformers.utils.logging.get_logger("transformers")
  logger.addHandler(handler)
  try:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      model = transformers.SiglipModel.from_pretrained(folder)
      ir = transformers.SiglipVisionModel.from_pretrained(f"{folder}/{hf_siglip.IR_SUBDIR}")
      hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
      transformers.AutoImageProcessor.from_pretrained(folder)
      pg_model = transformers.PaliGemmaForConditionalGeneration.from_pretrained(pg)
      pg_processor = transformers.AutoProcessor.from_pretrained(pg)
  finally:
    logger.removeHandler(handler)
  lines = [r.getMessage() for r in records] + [str(w.message) for w in caught]
  assert [m for m in lines if not any(t in m for t in theirs)] == []
  assert ir.config.num_channels == 1
  text = model.config.text_config
  assert text.pad_token_id == hf_tok.pad_token_id == input_pipeline.PAD_ID == 0
  assert (text.eos_token_id, text.bos_token_id) == (hf_tok.eos_token_id, hf_tok.bos_token_id)
  assert pg_model.config.text_config.pad_token_id == pg_processor.tokenizer.pad_token_id == 0
  assert len(hf_tok) == tok.vocab_size == text.vocab_size


def _readme_siglip_block() -> str:
  with open(os.path.join(REPO, "README.md")) as f:
    readme = f.read()
  blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
  (block,) = [b for b in blocks if "SiglipModel.from_pretrained" in b]
  return block


def test_readme_usage_block_gives_our_embeddings(exported, tmp_path):
  model, params, folder, tok, _ = exported
  block = _readme_siglip_block()
  assert 'padding="max_length"' in block
  size = model.image_size
  pixels = np.random.RandomState(0).randint(0, 256, (size, size, 3), np.uint8)
  Image.fromarray(pixels).save(tmp_path / "scene.png")
  # The block as users run it, on this folder and image.
  namespace = {}
  code = block.replace('"exported/siglip_ir"', repr(folder))
  exec(code.replace('"scene.png"', repr(str(tmp_path / "scene.png"))), namespace)
  out = namespace["out"]

  rgb = image_decoding.decode_image((tmp_path / "scene.png").read_bytes(), 3)  # [S, S, 3]
  tokens = tok.encode(namespace["captions"], model.text_len)
  assert (tokens == input_pipeline.PAD_ID).any()  # the padding is part of what is compared
  ours = model.apply({"params": params}, rgb=rgb[None], text=tokens)
  np.testing.assert_allclose(out.text_embeds.numpy(), ours["text"], atol=1e-4)
  np.testing.assert_allclose(out.image_embeds.numpy(), ours["rgb"], atol=1e-4)
