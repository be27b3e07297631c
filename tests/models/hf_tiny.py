"""Random tiny transformers models saved as save_pretrained folders (built here, never
downloaded), for the import tests: PaliGemma with the captioner's tiny sizes, SiglipModel."""

import numpy as np


def _perturb(model, seed):
  """Adds noise to every weight so that unit norms / zero biases also test the mapping."""
  import torch

  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn(p.shape, generator=gen))
  return model.eval()


# The captioner's tiny SigLIP tower (siglip_preset("tiny")) in transformers' names.
TINY_VISION = {
  "hidden_size": 32,
  "intermediate_size": 64,
  "num_hidden_layers": 2,
  "num_attention_heads": 2,
  "image_size": 32,
  "patch_size": 8,
}


def paligemma(folder, vocab=48, heads=4, kv_heads=2, head_dim=8, seed=0):
  """A random PaliGemmaForConditionalGeneration (tiny SigLIP tower, 2-layer Gemma of width 32)
  saved to `folder`; returns the torch model. Config fields left out take transformers'
  defaults, as a public config.json leaves them out."""
  import transformers

  config = transformers.PaliGemmaConfig(
    vision_config={
      "model_type": "siglip_vision_model",
      **TINY_VISION,
      "projection_dim": 32,
      "vision_use_head": False,  # as the public PaliGemma configs
    },
    text_config={
      "model_type": "gemma",
      "vocab_size": vocab,
      "hidden_size": 32,
      "intermediate_size": 64,
      "num_hidden_layers": 2,
      "num_attention_heads": heads,
      "num_key_value_heads": kv_heads,
      "head_dim": head_dim,
    },
    image_token_index=vocab,
    projection_dim=32,
  )
  model = _perturb(transformers.PaliGemmaForConditionalGeneration(config), seed)
  model.save_pretrained(str(folder))
  return model


def siglip(folder, seed=1):
  """A random SiglipModel (tiny towers) saved to `folder`; returns the torch model."""
  import transformers

  config = transformers.SiglipConfig(
    vision_config=TINY_VISION,
    text_config={
      "vocab_size": 64,
      "hidden_size": 32,
      "intermediate_size": 64,
      "num_hidden_layers": 1,
      "num_attention_heads": 2,
      "max_position_embeddings": 16,
      # Gemma-layout ids inside the vocabulary (the defaults are CLIP's 49406/49407).
      "pad_token_id": 0,
      "eos_token_id": 1,
      "bos_token_id": 2,
    },
  )
  model = _perturb(transformers.SiglipModel(config), seed)
  model.save_pretrained(str(folder))
  return model


def images(seed, b=2, size=32):
  """RGB [B, S, S, 3] and IR [B, S, S, 1] in [-1, 1]."""
  rng = np.random.RandomState(seed)
  rgb = rng.uniform(-1, 1, (b, size, size, 3)).astype(np.float32)
  ir = rng.uniform(-1, 1, (b, size, size, 1)).astype(np.float32)
  return rgb, ir
