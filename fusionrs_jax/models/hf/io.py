"""Reading transformers save_pretrained folders: the config, and the weights of a
model.safetensors file or of the shards a model.safetensors.index.json names (float32 numpy).

torch, transformers and safetensors (the `export` extra) are imported inside the functions.
"""

import json
import os

import flax.linen as nn
import jax
import numpy as np

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def is_hf_folder(path: str) -> bool:
  """True when `path` holds config.json and model.safetensors (or its shard index)."""
  weights = os.path.join(path, WEIGHTS_FILE)
  return os.path.isfile(os.path.join(path, CONFIG_FILE)) and (
    os.path.isfile(weights) or os.path.isfile(weights + ".index.json")
  )


def model_type(folder: str) -> str:
  """config.json's model_type ("siglip", "paligemma", "siglip_vision_model", ...)."""
  path = os.path.join(folder, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: not a save_pretrained directory")
  with open(path) as f:
    return json.load(f).get("model_type", "")


def read_config(folder: str):
  """The folder's transformers config (defaults filled in, as transformers loads it).

  transformers would fall back to a default config when config.json is absent; refused here.
  """
  from transformers import AutoConfig

  model_type(folder)  # FileNotFoundError without config.json
  return AutoConfig.from_pretrained(folder)


def to_numpy(v) -> np.ndarray:
  """A torch tensor (any float dtype, bfloat16 included) or array -> float32 numpy."""
  if hasattr(v, "detach"):
    return v.detach().cpu().float().numpy()
  return np.asarray(v, np.float32)


def _weight_files(folder: str) -> list[str]:
  single = os.path.join(folder, WEIGHTS_FILE)
  index = single + ".index.json"
  if os.path.isfile(single):
    return [single]
  if os.path.isfile(index):
    with open(index) as f:
      return [os.path.join(folder, n) for n in sorted(set(json.load(f)["weight_map"].values()))]
  raise FileNotFoundError(
    f"{folder} has no {WEIGHTS_FILE}(.index.json); re-save the checkpoint with "
    "transformers' save_pretrained(..., safe_serialization=True)"
  )


def load_safetensors(folder: str, keep=lambda key: True) -> dict[str, np.ndarray]:
  """{key: float32 numpy} of the folder's weights whose key `keep` accepts.

  Read through torch so that bfloat16/float16 checkpoints (numpy has no bfloat16) load too.
  """
  from safetensors import safe_open

  sd = {}
  for path in _weight_files(folder):
    with safe_open(path, framework="pt") as f:
      names = f.keys()  # safe_open is not iterable
      for key in names:
        if keep(key):
          sd[key] = to_numpy(f.get_tensor(key))
  return sd


def hp_differences(got: dict, want: dict, what: str) -> list[str]:
  """'<what> <key>: <folder value> in the folder, <config value> in the config' lines."""
  return [
    f"{what} {k}: {got.get(k)} in the folder, {want[k]} in the config"
    for k in want
    if got.get(k) != want[k]
  ]


def fit_to(loaded: dict, like, source: str) -> dict:
  """`loaded` (a numpy tree) cast to the dtypes of `like` (the same tree of arrays or shapes,
  boxed or not); ValueError naming every missing, unexpected or mis-shaped array."""
  like = nn.meta.unbox(like)
  want = dict(jax.tree_util.tree_flatten_with_path(like)[0])
  got = dict(jax.tree_util.tree_flatten_with_path(loaded)[0])
  keystr = jax.tree_util.keystr
  problems = [f"{keystr(k)}: missing" for k in want if k not in got]
  problems += [f"{keystr(k)}: unexpected" for k in got if k not in want]
  problems += [
    f"{keystr(k)}: {got[k].shape} in {source}, model wants {want[k].shape}"
    for k in want
    if k in got and tuple(got[k].shape) != tuple(want[k].shape)
  ]
  if problems:
    raise ValueError(f"{source} does not fit this model: " + "; ".join(problems[:10]))
  return jax.tree_util.tree_map(lambda w, g: np.asarray(g, w.dtype), like, loaded)
