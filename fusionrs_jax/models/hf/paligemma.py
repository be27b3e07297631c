"""Dual-image captioner params -> transformers `PaliGemmaForConditionalGeneration` (config,
state dict, GemmaTokenizer from our SentencePiece model, PaliGemmaProcessor) and the inputs the
exported model takes.

Two images per prompt: PaliGemma's single vision tower embeds every image in `pixel_values`
[num_images, 3, S, S] and scatters their tokens, in order, into the `<image>` placeholders of
`input_ids`. So a prompt carries 2 x N placeholders and its RGB and IR images are consecutive in
`pixel_values` (IR replicated to 3 channels) - exactly the captioner's [RGB][IR] prefix. The
placeholder id is `vocab_size` (out of the vocabulary: transformers maps it to PAD before the
embedding lookup), so the text embedding table keeps our size. The command line is
`python -m fusionrs_jax.export.hf_paligemma`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

from fusionrs_jax.data.input_pipeline import BOS_ID, EOS_ID, PAD_ID
from fusionrs_jax.models.hf import siglip as hf_siglip

IMAGE_TOKEN = "<image>"


def _llm_table(depth: int):
  """(our path under llm, transformers key, kind) for the Gemma decoder."""
  o, h = ("llm",), "model.language_model."
  rows = [
    (o + ("embedder", "input_embedding"), f"{h}embed_tokens.weight", "id"),
    (o + ("final_norm", "scale"), f"{h}norm.weight", "id"),
  ]
  for i in range(depth):
    lo, lh = o + (f"layers_{i}",), f"{h}layers.{i}."
    rows += [
      (lo + ("pre_attention_norm", "scale"), f"{lh}input_layernorm.weight", "id"),
      (lo + ("pre_ffw_norm", "scale"), f"{lh}post_attention_layernorm.weight", "id"),
      (lo + ("attn", "q_einsum"), f"{lh}self_attn.q_proj.weight", "q"),
      (lo + ("attn", "kv_einsum"), f"{lh}self_attn.k_proj.weight", "k"),
      (lo + ("attn", "kv_einsum"), f"{lh}self_attn.v_proj.weight", "v"),
      (lo + ("attn", "attn_vec_einsum"), f"{lh}self_attn.o_proj.weight", "o"),
      (lo + ("mlp", "gating_einsum"), f"{lh}mlp.gate_proj.weight", "gate"),
      (lo + ("mlp", "gating_einsum"), f"{lh}mlp.up_proj.weight", "up"),
      (lo + ("mlp", "linear"), f"{lh}mlp.down_proj.weight", "dense"),
    ]
  return rows


def _gemma_to_hf(kind, x):
  if kind == "q":  # [H, D, Dh] -> [H*Dh, D]
    return x.transpose(0, 2, 1).reshape(-1, x.shape[1])
  if kind in ("k", "v"):  # [2, K, D, Dh] -> [K*Dh, D]
    w = x[0 if kind == "k" else 1]
    return w.transpose(0, 2, 1).reshape(-1, w.shape[1])
  if kind == "o":  # [H, Dh, D] -> [D, H*Dh]
    return x.reshape(-1, x.shape[-1]).T
  if kind in ("gate", "up"):  # [2, D, F] -> [F, D]
    return x[0 if kind == "gate" else 1].T
  if kind == "dense":
    return x.T
  return x


def to_hf_state_dict(params, vision_depth: int, llm_depth: int) -> dict[str, np.ndarray]:
  """Captioner params -> PaliGemmaForConditionalGeneration state dict (float32 numpy)."""
  p = hf_siglip.plain_params(params)
  vision = [
    r
    for r in hf_siglip.vision_table(("img",), "model.vision_tower.", vision_depth)
    if "head" not in r[0]
  ]
  sd = hf_siglip.apply_rename_table(p, vision)
  sd.update(
    hf_siglip.apply_rename_table(
      p,
      [
        (("img_head", "kernel"), "model.multi_modal_projector.linear.weight", "dense"),
        (("img_head", "bias"), "model.multi_modal_projector.linear.bias", "id"),
      ],
    )
  )
  for ours, hf, kind in _llm_table(llm_depth):
    sd[hf] = np.ascontiguousarray(
      _gemma_to_hf(kind, np.asarray(hf_siglip.get_path(p, ours), np.float32))
    )
  sd["lm_head.weight"] = sd["model.language_model.embed_tokens.weight"]  # tied
  return sd


def hf_config(model):
  """PaliGemmaConfig of a (unbound) `Captioner`."""
  from transformers import PaliGemmaConfig

  v, t = model.vision_hp, model.llm_hp
  vocab = t["vocab_size"]
  return PaliGemmaConfig(
    vision_config={
      "model_type": "siglip_vision_model",
      "hidden_size": v["width"],
      "intermediate_size": v["mlp_dim"],
      "num_hidden_layers": v["depth"],
      "num_attention_heads": v["num_heads"],
      "image_size": v["image_size"],
      "patch_size": v["patch_size"],
      "projection_dim": t["width"],
      "vision_use_head": False,
      "layer_norm_eps": 1e-6,
      "hidden_act": "gelu_pytorch_tanh",
    },
    text_config={
      "model_type": "gemma",
      "vocab_size": vocab,
      "hidden_size": t["width"],
      "intermediate_size": t["mlp_dim"],
      "num_hidden_layers": t["depth"],
      "num_attention_heads": t["num_heads"],
      "num_key_value_heads": t["num_kv_heads"],
      "head_dim": t["head_dim"],
      "hidden_act": "gelu_pytorch_tanh",
      "rms_norm_eps": 1e-6,
      "pad_token_id": PAD_ID,
      "bos_token_id": BOS_ID,
      "eos_token_id": EOS_ID,
    },
    image_token_index=vocab,
    projection_dim=t["width"],
    hidden_size=t["width"],
    pad_token_id=PAD_ID,
    bos_token_id=BOS_ID,
    eos_token_id=EOS_ID,
  )


def save_hf_paligemma(params, model, out_dir: str, tokenizer_path: str | None = None) -> None:
  """Writes the model (and, given our SentencePiece .model, tokenizer + processor) folder."""
  import torch
  from transformers import PaliGemmaForConditionalGeneration

  config = hf_config(model)
  config.captioner_inputs = model.inputs  # which images the prefix holds, in order
  processor = _processor(model, tokenizer_path) if tokenizer_path else None
  if processor is not None:
    # The processor appends <image> after our pieces; the model must use that same id.
    config.image_token_index = processor.image_token_id
    if config.image_token_index < model.llm_hp["vocab_size"]:
      raise ValueError(f"<image> id {config.image_token_index} collides with the vocabulary")
  torch_model = PaliGemmaForConditionalGeneration(config)
  sd = {
    k: torch.from_numpy(v)
    for k, v in to_hf_state_dict(params, model.vision_hp["depth"], model.llm_hp["depth"]).items()
  }
  missing, unexpected = torch_model.load_state_dict(sd, strict=False)
  if unexpected or [k for k in missing if k != "lm_head.weight"]:
    raise KeyError(f"state dict mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
  os.makedirs(out_dir, exist_ok=True)
  torch_model.save_pretrained(out_dir)
  if processor is not None:
    processor.save_pretrained(out_dir)


def _processor(model, tokenizer_path: str):
  """PaliGemmaProcessor: GemmaTokenizer over our .model, SigLIP image processing ([-1, 1],
  bilinear), image_seq_length = tokens per image (a two-image prompt holds twice that)."""
  from transformers import GemmaTokenizer, PaliGemmaProcessor, SiglipImageProcessor

  with tempfile.TemporaryDirectory() as tok_dir:
    shutil.copy(tokenizer_path, os.path.join(tok_dir, "tokenizer.model"))
    tok = GemmaTokenizer.from_pretrained(tok_dir, add_bos_token=True)
  size = model.vision_hp["image_size"]
  images = SiglipImageProcessor(
    size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=2
  )
  images.image_seq_length = (size // model.vision_hp["patch_size"]) ** 2
  return PaliGemmaProcessor(image_processor=images, tokenizer=tok)


def image_token_id(out_dir: str) -> int:
  """The exported model's <image> placeholder id."""
  with open(os.path.join(out_dir, "config.json")) as f:
    return int(json.load(f)["image_token_index"])


def hf_inputs(
  prompt_ids: np.ndarray,
  num_image_tokens: int,
  image_token_id: int,
  answer_ids: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
  """[BOS prompt SEP] ids [B, P] (+ answer [B, A]) -> input_ids with the image placeholders
  first, and token_type_ids (0 = prefix, 1 = answer) for PaliGemma's prefix-LM mask."""
  b = prompt_ids.shape[0]
  parts = [np.full((b, num_image_tokens), image_token_id, np.int64), prompt_ids]
  types = [np.zeros((b, num_image_tokens + prompt_ids.shape[1]), np.int64)]
  if answer_ids is not None:
    parts.append(answer_ids)
    types.append(np.ones(answer_ids.shape, np.int64))
  return {
    "input_ids": np.concatenate(parts, 1).astype(np.int64),
    "token_type_ids": np.concatenate(types, 1),
  }


def pixel_values(rgb: np.ndarray | None, ir: np.ndarray | None, inputs: str) -> np.ndarray:
  """Images [B, S, S, C] in [-1, 1] -> torch layout [B * n_images, 3, S, S], per prompt
  RGB then IR (IR replicated to 3 channels)."""
  chosen = {"rgb_ir": (rgb, ir), "rgb": (rgb,), "ir": (ir,)}[inputs]
  three = [np.repeat(x, 3, -1) if x.shape[-1] == 1 else x for x in chosen]
  stacked = np.stack(three, axis=1)  # [B, n, S, S, 3]
  return stacked.reshape(-1, *stacked.shape[2:]).transpose(0, 3, 1, 2).astype(np.float32)
