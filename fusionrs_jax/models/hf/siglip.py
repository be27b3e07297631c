"""SigLIP params <-> transformers `SiglipModel` / `SiglipVisionModel` (save_pretrained folders).

The RGB + text towers map to `SiglipModel`; a separate IR tower is a `SiglipVisionModel` in
`<folder>/ir_vision_model`. The conversion is one rename table with per-kind reshapes; torch,
transformers and safetensors (the `export` extra) are imported only where a folder is written
or read. The command line is `python -m fusionrs_jax.export.hf_siglip`.
"""

import os
import shutil

import flax.linen as nn
import jax
import numpy as np

from fusionrs_jax.core import records
from fusionrs_jax.data.input_pipeline import BOS_ID, EOS_ID, PAD_ID
from fusionrs_jax.models.hf import io

IR_SUBDIR = "ir_vision_model"
# Keys of our hyperparameter dict (see `siglip_preset`) that describe the architecture.
HP_KEYS = (
  "image_size",
  "patch_size",
  "width",
  "depth",
  "mlp_dim",
  "num_heads",
  "text_width",
  "text_depth",
  "text_mlp_dim",
  "text_num_heads",
  "vocab_size",
  "text_len",
)

# ------------------------------------------------------------------------------------------------
# Rename table: (path in our params, transformers key, kind); `kind` picks the reshape below.
# ------------------------------------------------------------------------------------------------


def _to_hf(kind, x):
  if kind in ("dense", "out"):  # [in..., out] -> torch Linear [out, in]
    return x.reshape(-1, x.shape[-1]).T if kind == "out" else x.T
  if kind == "qkv":  # [D, H, Dh] -> [H*Dh, D]
    return x.reshape(x.shape[0], -1).T
  if kind == "qkv_bias":  # [H, Dh] -> [H*Dh]
    return x.reshape(-1)
  if kind == "conv":  # [p, p, C, D] -> [D, C, p, p]
    return x.transpose(3, 2, 0, 1)
  if kind == "probe":  # [1, D] -> [1, 1, D]
    return x[None]
  return x


def _from_hf(kind, x, heads):
  if kind == "dense":
    return x.T
  if kind == "out":  # [D, H*Dh] -> [H, Dh, D]
    return x.T.reshape(heads, -1, x.shape[0])
  if kind == "qkv":  # [H*Dh, D] -> [D, H, Dh]
    return x.T.reshape(x.shape[1], heads, -1)
  if kind == "qkv_bias":
    return x.reshape(heads, -1)
  if kind == "conv":
    return x.transpose(2, 3, 1, 0)
  if kind == "probe":
    return x[0]
  return x


def _layer_norm(ours, hf):
  return [(ours + ("scale",), f"{hf}.weight", "id"), (ours + ("bias",), f"{hf}.bias", "id")]


def _dense(ours, hf, kind="dense"):
  return [(ours + ("kernel",), f"{hf}.weight", kind), (ours + ("bias",), f"{hf}.bias", "id")]


def _attention(ours, hf):
  rows = []
  for p in ("q_proj", "k_proj", "v_proj"):
    rows += [
      (ours + (p, "kernel"), f"{hf}.{p}.weight", "qkv"),
      (ours + (p, "bias"), f"{hf}.{p}.bias", "qkv_bias"),
    ]
  return rows + _dense(ours + ("out_proj",), f"{hf}.out_proj", "out")


def _mlp(ours, hf):
  return _dense(ours + ("fc1",), f"{hf}.fc1") + _dense(ours + ("fc2",), f"{hf}.fc2")


def _encoder(ours, hf, depth):
  rows = []
  for i in range(depth):
    o, h = ours + ("encoder", f"layers_{i}"), f"{hf}encoder.layers.{i}"
    rows += _layer_norm(o + ("layer_norm1",), f"{h}.layer_norm1")
    rows += _attention(o + ("self_attn",), f"{h}.self_attn")
    rows += _layer_norm(o + ("layer_norm2",), f"{h}.layer_norm2")
    rows += _mlp(o + ("mlp",), f"{h}.mlp")
  return rows


def vision_table(ours: tuple, hf: str, depth: int):
  """Rows for one ViT; `hf` is the key prefix ("vision_model." or "" for SiglipVisionModel).

  The MAP head's q/k/v rows use unfused names; `_fuse_head` packs them into torch's in_proj.
  """
  rows = _dense(ours + ("patch_embedding",), f"{hf}embeddings.patch_embedding", "conv")
  rows += [(ours + ("position_embedding",), f"{hf}embeddings.position_embedding.weight", "id")]
  rows += _encoder(ours, hf, depth)
  rows += _layer_norm(ours + ("post_layernorm",), f"{hf}post_layernorm")
  rows += [(ours + ("head", "probe"), f"{hf}head.probe", "probe")]
  rows += _attention(ours + ("head", "attention"), f"{hf}head.attention")
  rows += _layer_norm(ours + ("head", "layernorm"), f"{hf}head.layernorm")
  return rows + _mlp(ours + ("head", "mlp"), f"{hf}head.mlp")


def text_table(depth: int):
  t = ("text_model",)
  rows = [
    (
      t + ("token_embedding", "embedding"),
      "text_model.embeddings.token_embedding.weight",
      "id",
    ),
    (t + ("position_embedding",), "text_model.embeddings.position_embedding.weight", "id"),
  ]
  rows += _encoder(t, "text_model.", depth)
  rows += _layer_norm(t + ("final_layer_norm",), "text_model.final_layer_norm")
  return rows + _dense(t + ("head",), "text_model.head")


def siglip_table(hp: dict):
  """Rows for `SiglipModel`: RGB tower, text tower, logit scale and bias."""
  return (
    vision_table(("vision_model",), "vision_model.", hp["depth"])
    + text_table(hp["text_depth"])
    + [(("logit_scale",), "logit_scale", "id"), (("logit_bias",), "logit_bias", "id")]
  )


def _head_attention_keys(hf_prefix):
  base = f"{hf_prefix}head.attention"
  return [f"{base}.{p}_proj.{w}" for w in ("weight", "bias") for p in "qkv"], base


def _fuse_head(sd, hf_prefix):
  """torch.nn.MultiheadAttention stores q, k, v stacked as in_proj_weight [3D, D], in_proj_bias."""
  keys, base = _head_attention_keys(hf_prefix)
  w, b = [sd.pop(k) for k in keys[:3]], [sd.pop(k) for k in keys[3:]]
  sd[f"{base}.in_proj_weight"] = np.concatenate(w, 0)
  sd[f"{base}.in_proj_bias"] = np.concatenate(b, 0)


def _unfuse_head(sd, hf_prefix):
  keys, base = _head_attention_keys(hf_prefix)
  sd = dict(sd)
  for k, part in zip(keys[:3], np.split(sd.pop(f"{base}.in_proj_weight"), 3, 0)):
    sd[k] = part
  for k, part in zip(keys[3:], np.split(sd.pop(f"{base}.in_proj_bias"), 3, 0)):
    sd[k] = part
  return sd


# ------------------------------------------------------------------------------------------------
# Pytree <-> state dict
# ------------------------------------------------------------------------------------------------


def plain_params(params):
  """Accepts {"params": ...} or the params tree, boxed (LogicallyPartitioned) or not."""
  params = nn.meta.unbox(params)
  return params.get("params", params)


def get_path(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def set_path(tree, path, value):
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def apply_rename_table(params, rows):
  return {
    hf: np.ascontiguousarray(_to_hf(kind, np.asarray(get_path(params, ours), np.float32)))
    for ours, hf, kind in rows
  }


def read_table(sd, rows, heads_of, out=None):
  out = {} if out is None else out
  missing = [hf for _, hf, _ in rows if hf not in sd]
  if missing:
    raise KeyError(f"state dict lacks {len(missing)} expected keys, e.g. {missing[:3]}")
  for ours, hf, kind in rows:
    set_path(out, ours, np.asarray(_from_hf(kind, np.asarray(sd[hf], np.float32), heads_of(ours))))
  return out


def to_hf_state_dict(params, hp: dict) -> dict:
  """Our params (RGB + text towers) -> `SiglipModel` state dict of float32 numpy arrays."""
  sd = apply_rename_table(plain_params(params), siglip_table(hp))
  _fuse_head(sd, "vision_model.")
  return sd


def ir_to_hf_state_dict(params, hp: dict) -> dict:
  """The separate IR tower -> `SiglipVisionModel` state dict."""
  sd = apply_rename_table(plain_params(params), vision_table(("ir_vision_model",), "", hp["depth"]))
  _fuse_head(sd, "")
  return sd


def from_hf_state_dict(sd: dict, hp: dict) -> dict:
  """`SiglipModel` state dict (numpy or torch values) -> our params tree (numpy float32)."""
  sd = _unfuse_head({k: io.to_numpy(v) for k, v in sd.items()}, "vision_model.")
  return read_table(sd, siglip_table(hp), _heads_for(hp))


def ir_from_hf_state_dict(sd: dict, hp: dict, out: dict | None = None) -> dict:
  """`SiglipVisionModel` state dict -> {"ir_vision_model": ...} (added to `out` if given)."""
  # Older transformers saved SiglipVisionModel weights under a "vision_model." prefix.
  sd = {k.removeprefix("vision_model."): io.to_numpy(v) for k, v in sd.items()}
  sd = _unfuse_head(sd, "")
  return read_table(sd, vision_table(("ir_vision_model",), "", hp["depth"]), _heads_for(hp), out)


def _heads_for(hp):
  return lambda path: hp["text_num_heads"] if path[0] == "text_model" else hp["num_heads"]


# ------------------------------------------------------------------------------------------------
# Configs and save_pretrained directories
# ------------------------------------------------------------------------------------------------


def hf_vision_config(hp: dict, num_channels: int = 3):
  from transformers import SiglipVisionConfig

  return SiglipVisionConfig(
    hidden_size=hp["width"],
    intermediate_size=hp["mlp_dim"],
    num_hidden_layers=hp["depth"],
    num_attention_heads=hp["num_heads"],
    num_channels=num_channels,
    image_size=hp["image_size"],
    patch_size=hp["patch_size"],
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6,
  )


def hf_siglip_config(hp: dict):
  """Our hyperparameters (`siglip_preset` keys) -> transformers `SiglipConfig`."""
  from transformers import SiglipConfig

  text = {
    "vocab_size": hp["vocab_size"],
    "hidden_size": hp["text_width"],
    "intermediate_size": hp["text_mlp_dim"],
    "num_hidden_layers": hp["text_depth"],
    "num_attention_heads": hp["text_num_heads"],
    "max_position_embeddings": hp["text_len"],
    "projection_size": hp["width"],
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    # The ids of this project's tokenizer (Gemma layout: pad 0, eos 1, bos 2), which the
    # exported tokenizer files carry too.
    "pad_token_id": PAD_ID,
    "bos_token_id": BOS_ID,
    "eos_token_id": EOS_ID,
  }
  return SiglipConfig(text_config=text, vision_config=hf_vision_config(hp).to_dict())


# transformers' names of the tanh-approximated GELU our towers compute.
TANH_GELUS = ("gelu_pytorch_tanh", "gelu_fast", "gelu_new")


def check_activation(name: str, act) -> None:
  if act not in TANH_GELUS:
    raise ValueError(f"{name} activation {act!r} unsupported (tanh-approximated GELU only)")


def vision_hp_from_hf(v) -> dict:
  """A transformers SiglipVisionConfig -> our ViT hyperparameters (`Captioner.vision_hp`)."""
  check_activation("vision", v.hidden_act)
  return {
    "image_size": v.image_size,
    "patch_size": v.patch_size,
    "width": v.hidden_size,
    "depth": v.num_hidden_layers,
    "mlp_dim": v.intermediate_size,
    "num_heads": v.num_attention_heads,
  }


def hp_from_hf_config(config) -> dict:
  """transformers `SiglipConfig` -> our hyperparameter dict (`SigLIP` constructor keys)."""
  v, t = config.vision_config, config.text_config
  if t.projection_size != v.hidden_size:
    raise ValueError(f"text projection_size {t.projection_size} != vision width {v.hidden_size}")
  check_activation("text", t.hidden_act)
  return {
    **vision_hp_from_hf(v),
    "text_width": t.hidden_size,
    "text_depth": t.num_hidden_layers,
    "text_mlp_dim": t.intermediate_size,
    "text_num_heads": t.num_attention_heads,
    "vocab_size": t.vocab_size,
    "text_len": t.max_position_embeddings,
  }


def _save_torch(model_cls, config, sd, out_dir):
  import torch

  model = model_cls(config)
  model.load_state_dict({k: torch.tensor(v) for k, v in sd.items()}, strict=True)
  model.save_pretrained(out_dir)


def save_hf_siglip(params, hp: dict, out_dir: str) -> None:
  """Writes `out_dir` as a `SiglipModel` save_pretrained directory (config.json + safetensors).

  params: our SigLIP params (boxed or not). With a separate IR tower, it is written to
  `out_dir/ir_vision_model` as a `SiglipVisionModel` (its num_channels may be 1).
  """
  from transformers import SiglipModel, SiglipVisionModel

  params = plain_params(params)
  _save_torch(SiglipModel, hf_siglip_config(hp), to_hf_state_dict(params, hp), out_dir)
  if "ir_vision_model" in params:
    channels = params["ir_vision_model"]["patch_embedding"]["kernel"].shape[2]
    _save_torch(
      SiglipVisionModel,
      hf_vision_config(hp, channels),
      ir_to_hf_state_dict(params, hp),
      os.path.join(out_dir, IR_SUBDIR),
    )


def load_hf_siglip(model_dir: str) -> tuple[dict, dict]:
  """Reads a `SiglipModel` save_pretrained directory (e.g. public SigLIP weights on disk).

  Returns (params, hp): params is a plain numpy tree for `SigLIP(**hp)`; hp has the
  `siglip_preset` keys plus ir_tower/ir_channels ("separate" if `ir_vision_model/` exists).
  """
  from transformers import SiglipConfig, SiglipVisionConfig

  io.model_type(model_dir)  # FileNotFoundError without config.json
  hp = hp_from_hf_config(SiglipConfig.from_pretrained(model_dir))
  params = from_hf_state_dict(io.load_safetensors(model_dir), hp)
  hp.update(ir_tower="shared", ir_channels=3)
  ir_dir = os.path.join(model_dir, IR_SUBDIR)
  if os.path.isfile(os.path.join(ir_dir, "config.json")):
    ir_config = SiglipVisionConfig.from_pretrained(ir_dir)
    ir_from_hf_state_dict(io.load_safetensors(ir_dir), hp, out=params)
    hp.update(ir_tower="separate", ir_channels=ir_config.num_channels)
  return params, hp


def ir_tower_from_rgb(vision_params: dict, channels: int) -> dict:
  """A separate IR tower initialised from RGB tower params ([p, p, 3, D] patch kernel).

  For 1 channel the patch kernel is summed over RGB, so the IR tower on a thermal image equals
  the RGB tower on that image replicated to 3 channels (the "shared" behaviour) at step 0.
  """
  tower = jax.tree_util.tree_map(np.array, vision_params)
  if channels == 1:
    kernel = tower["patch_embedding"]["kernel"]
    tower["patch_embedding"]["kernel"] = kernel.sum(axis=2, keepdims=True)
  elif channels != 3:
    raise ValueError(f"IR tower channels must be 1 or 3, got {channels}")
  return tower


def load_hf_siglip_like(model_dir: str, like) -> dict:
  """`load_hf_siglip` shaped as `like` (our params: {"params": ...} or bare; arrays or shapes).

  A separate IR tower that the directory lacks (e.g. public SigLIP weights) starts from the RGB
  tower via `ir_tower_from_rgb`. Shape mismatches (vocab, image size, width) raise ValueError
  naming every differing parameter. Returns numpy arrays in `like`'s dtypes.
  """
  loaded, _ = load_hf_siglip(model_dir)
  like = nn.meta.unbox(like)
  wrapped = "params" in like
  target = like["params"] if wrapped else like
  if "ir_vision_model" in target and "ir_vision_model" not in loaded:
    channels = target["ir_vision_model"]["patch_embedding"]["kernel"].shape[2]
    loaded["ir_vision_model"] = ir_tower_from_rgb(loaded["vision_model"], channels)
  if "ir_vision_model" not in target:
    loaded.pop("ir_vision_model", None)

  out = io.fit_to(loaded, target, model_dir)
  return {"params": out} if wrapped else out


# ------------------------------------------------------------------------------------------------
# Tokenizer and image processor files
# ------------------------------------------------------------------------------------------------

# Our SentencePiece models use Gemma's ids and piece names (pad=0 <pad>, eos=1 <eos>, bos=2 <bos>,
# unk=3 <unk>); the pipeline appends <eos>, never <bos>, and right-pads with <pad> to text_len.
# GemmaTokenizer reproduces that exactly. SiglipTokenizer would not: it lowercases and strips
# punctuation before SentencePiece, so it yields other ids than the ones the model was trained on.
TOKENIZER_FILE = "tokenizer.model"


def hf_tokenizer_config(text_len: int) -> dict:
  """tokenizer_config.json for `AutoTokenizer` (-> GemmaTokenizer) matching our pipeline."""
  return {
    "tokenizer_class": "GemmaTokenizer",
    "add_bos_token": False,
    "add_eos_token": True,
    "model_max_length": text_len,
    "padding_side": "right",
    "truncation_side": "right",
    "pad_token": "<pad>",
    "eos_token": "<eos>",
    "bos_token": "<bos>",
    "unk_token": "<unk>",
    # GemmaTokenizer would otherwise add a <mask> token outside the model's vocabulary.
    "mask_token": None,
    # No attention_mask: the text tower attends over the padding, as it was trained (and pools
    # the last position, so texts are padded to max_length); a mask would change embeddings.
    "model_input_names": ["input_ids"],
  }


def hf_image_processor_config(image_size: int) -> dict:
  """preprocessor_config.json: bilinear resize to image_size, pixels / 127.5 - 1 (our range)."""
  return {
    "image_processor_type": "SiglipImageProcessor",
    "do_resize": True,
    "size": {"height": image_size, "width": image_size},
    "resample": 2,  # PIL.Image.BILINEAR, as the input pipeline resizes
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "do_convert_rgb": True,
  }


def save_hf_tokenizer(spm_path: str, out_dir: str, text_len: int) -> None:
  """Copies the SentencePiece model and writes tokenizer_config.json (GemmaTokenizer)."""
  os.makedirs(out_dir, exist_ok=True)
  shutil.copyfile(spm_path, os.path.join(out_dir, TOKENIZER_FILE))
  records.write_json_atomic(
    os.path.join(out_dir, "tokenizer_config.json"), hf_tokenizer_config(text_len)
  )


def save_hf_image_processor(out_dir: str, image_size: int) -> None:
  """Writes preprocessor_config.json (`SiglipImageProcessor` matching the input pipeline)."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "preprocessor_config.json")
  records.write_json_atomic(path, hf_image_processor_config(image_size))
