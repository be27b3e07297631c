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
from fusionrs_jax.models.gemma import RMS_EPS
from fusionrs_jax.models.hf import io as hf_io
from fusionrs_jax.models.hf import siglip as hf_siglip

IMAGE_TOKEN = "<image>"
# apply_rope's base in models/gemma.py: an imported decoder must share it and RMS_EPS.
ROPE_BASE = 10_000.0


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
  sd = hf_siglip.apply_rename_table(p, vision_rows(VISION_PREFIX, vision_depth))
  sd.update(hf_siglip.apply_rename_table(p, _projector_rows()))
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
    k: torch.tensor(v)  # a copy: the arrays exported from jax are read-only
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


# ------------------------------------------------------------------------------------------------
# Import: a PaliGemmaForConditionalGeneration folder -> captioner params
# ------------------------------------------------------------------------------------------------

# Key prefixes on disk -> the module names `to_hf_state_dict` uses; the first matching prefix
# is replaced. The public PaliGemma weights (older transformers) say vision_tower.vision_model.*,
# transformers 5 saves vision_tower.*; both save language_model.model.* and the projector bare.
LEGACY_PREFIXES = (
  ("language_model.lm_head.", "lm_head."),
  ("language_model.model.", "model.language_model."),
  ("model.vision_tower.vision_model.", "model.vision_tower."),
  ("vision_tower.vision_model.", "model.vision_tower."),
  ("vision_tower.", "model.vision_tower."),
  ("multi_modal_projector.", "model.multi_modal_projector."),
)
VISION_PREFIX = "model.vision_tower."
# Vision keys of each folder type, after `current_names` for PaliGemma.
VISION_PREFIXES = {
  "paligemma": VISION_PREFIX,
  "siglip": "vision_model.",
  "siglip_vision_model": "",
}


def current_names(sd: dict) -> dict:
  """A PaliGemma state dict with either key layout -> the current transformers names."""
  out = {}
  for k, v in sd.items():
    for old, new in LEGACY_PREFIXES:
      if k.startswith(old):
        k = new + k[len(old) :]
        break
    out[k] = v
  return out


def _gemma_from_hf(kind, xs, heads):
  """Inverse of `_gemma_to_hf`; `xs` holds the transformers matrices the kind reads."""
  if kind == "q":  # [H*Dh, D] -> [H, D, Dh]
    (x,) = xs
    return x.reshape(heads, -1, x.shape[1]).transpose(0, 2, 1)
  if kind == "kv":  # k, v [K*Dh, D] -> [2, K, D, Dh]
    return np.stack([_gemma_from_hf("q", (x,), heads) for x in xs])
  if kind == "o":  # [D, H*Dh] -> [H, Dh, D]
    (x,) = xs
    return x.T.reshape(heads, -1, x.shape[0])
  if kind == "gating":  # gate, up [F, D] -> [2, D, F]
    return np.stack([x.T for x in xs])
  if kind == "dense":
    return xs[0].T
  return xs[0]


def _llm_import_rows(depth: int):
  """(our path, transformers keys, kind) for `_gemma_from_hf`; k/v and gate/up combine."""
  rows, pending = [], {}
  for ours, hf, kind in _llm_table(depth):
    if kind in ("k", "v", "gate", "up"):
      pending.setdefault(ours, []).append(hf)
      if len(pending[ours]) == 2:
        rows.append((ours, tuple(pending.pop(ours)), "kv" if kind == "v" else "gating"))
    else:
      rows.append((ours, (hf,), kind))
  return rows


def vision_rows(prefix: str, depth: int, ours: tuple = ("img",)):
  """The SigLIP vision tower rows without the MAP head (PaliGemma uses every patch token)."""
  return [r for r in hf_siglip.vision_table(ours, prefix, depth) if "head" not in r[0]]


def from_hf_state_dict(sd: dict, vision_hp: dict, llm_hp: dict) -> dict:
  """PaliGemma state dict (either key layout; numpy or torch) -> captioner params (numpy
  float32: img, img_head, llm)."""
  sd = current_names({k: hf_io.to_numpy(v) for k, v in sd.items()})
  params = hf_siglip.read_table(
    sd,
    vision_rows(VISION_PREFIX, vision_hp["depth"]) + _projector_rows(),
    lambda path: vision_hp["num_heads"],
  )
  rows = _llm_import_rows(llm_hp["depth"])
  missing = [k for _, keys, _ in rows for k in keys if k not in sd]
  if missing:
    raise KeyError(f"state dict lacks {len(missing)} expected keys, e.g. {missing[:3]}")
  for ours, keys, kind in rows:
    heads = llm_hp["num_heads"] if kind in ("q", "o") else llm_hp["num_kv_heads"]
    hf_siglip.set_path(params, ours, _gemma_from_hf(kind, [sd[k] for k in keys], heads))
  embed = sd["model.language_model.embed_tokens.weight"]
  head = sd.get("lm_head.weight")
  if head is not None and not np.array_equal(head, embed):
    raise ValueError("lm_head.weight differs from embed_tokens: the captioner ties them")
  return params


def _projector_rows():
  return [
    (("img_head", "kernel"), "model.multi_modal_projector.linear.weight", "dense"),
    (("img_head", "bias"), "model.multi_modal_projector.linear.bias", "id"),
  ]


def hp_from_hf_config(config) -> tuple[dict, dict]:
  """PaliGemmaConfig -> (vision_hp, llm_hp) of the matching `Captioner`."""
  t = config.text_config
  if t.model_type != "gemma":
    raise ValueError(
      f"text model {t.model_type!r} unsupported: the captioner's decoder is Gemma (PaliGemma 1)"
    )
  hf_siglip.check_activation("text", getattr(t, "hidden_activation", None) or t.hidden_act)
  # Our Gemma's fixed constants (gemma.RMS_EPS, apply_rope's base); transformers 5 keeps the
  # RoPE base in rope_parameters, older versions in rope_theta.
  rope = getattr(t, "rope_theta", None) or (getattr(t, "rope_parameters", None) or {}).get(
    "rope_theta", ROPE_BASE
  )
  if t.rms_norm_eps != RMS_EPS or rope != ROPE_BASE:
    raise ValueError(
      f"Gemma rms_norm_eps {t.rms_norm_eps} / RoPE base {rope} unsupported ({RMS_EPS} / {ROPE_BASE})"
    )
  if config.projection_dim != t.hidden_size:
    raise ValueError(f"projection_dim {config.projection_dim} != Gemma width {t.hidden_size}")
  llm = {
    "vocab_size": t.vocab_size,
    "width": t.hidden_size,
    "depth": t.num_hidden_layers,
    "mlp_dim": t.intermediate_size,
    "num_heads": t.num_attention_heads,
    "num_kv_heads": t.num_key_value_heads,
    "head_dim": t.head_dim,
  }
  return hf_siglip.vision_hp_from_hf(config.vision_config), llm


def load_hf_paligemma(model_dir: str) -> tuple[dict, dict, dict]:
  """A PaliGemmaForConditionalGeneration save_pretrained folder -> (params, vision_hp,
  llm_hp): params is a numpy float32 tree for `Captioner(vision_hp, llm_hp)`."""
  config = hf_io.read_config(model_dir)
  if config.model_type != "paligemma":
    raise ValueError(f"{model_dir} holds a {config.model_type!r} model, not a PaliGemma one")
  vision_hp, llm_hp = hp_from_hf_config(config)
  params = from_hf_state_dict(hf_io.load_safetensors(model_dir), vision_hp, llm_hp)
  return params, vision_hp, llm_hp


def load_hf_paligemma_for(model_dir: str, model) -> dict:
  """Captioner params (numpy, per-layer layout) of a PaliGemma folder for the unbound
  `model`; ValueError listing every hyperparameter in which the folder and model differ."""
  config = hf_io.read_config(model_dir)
  if config.model_type != "paligemma":
    raise ValueError(f"{model_dir} holds a {config.model_type!r} model, not a PaliGemma one")
  vision_hp, llm_hp = hp_from_hf_config(config)
  problems = hf_io.hp_differences(vision_hp, model.vision_hp, "vision") + hf_io.hp_differences(
    llm_hp, model.llm_hp, "llm"
  )
  if problems:
    raise ValueError(f"{model_dir} does not match the captioner config: " + "; ".join(problems))
  params, _, _ = load_hf_paligemma(model_dir)
  return params


def load_hf_vision_tower(model_dir: str) -> tuple[dict, dict]:
  """The SigLIP image tower of a SiglipModel, SiglipVisionModel or PaliGemma folder ->
  (params of the captioner's `img` ViT (no MAP head), its hyperparameters)."""
  kind = hf_io.model_type(model_dir)
  if kind not in VISION_PREFIXES:
    raise ValueError(
      f"{model_dir} holds a {kind!r} model; a SigLIP image tower comes from a "
      f"{' / '.join(VISION_PREFIXES)} folder"
    )
  config = hf_io.read_config(model_dir)
  vision_hp = hf_siglip.vision_hp_from_hf(getattr(config, "vision_config", config))
  prefix = VISION_PREFIXES[kind]
  if kind == "paligemma":
    keep = lambda k: "vision_tower" in k
    fix = current_names
  else:
    keep = lambda k: k.startswith(prefix) or kind == "siglip_vision_model"
    # Older SiglipVisionModel folders name their keys "vision_model.*".
    fix = lambda sd: {
      k.removeprefix("vision_model.") if not prefix else k: v for k, v in sd.items()
    }
  sd = fix(hf_io.load_safetensors(model_dir, keep))
  tower = hf_siglip.read_table(
    sd, vision_rows(prefix, vision_hp["depth"]), lambda path: vision_hp["num_heads"]
  )
  return tower["img"], vision_hp
