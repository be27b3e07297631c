"""The CycleGAN generator as a PyTorch nn.Module, with weight conversion from the Flax params.

  python -m fusionrs_jax.export.torch_translator --checkpoint=workdirs/translator --out=rgb_to_ir.pt

Module names equal the Flax ones (conv_in, down_i, res_i.conv_j, up_i, conv_out), so the
conversion is a kernel layout change per layer. Torch takes NCHW, Flax NHWC.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from absl import flags
from torch import nn

from fusionrs_jax.cli import command
from fusionrs_jax.core import checkpoint
from fusionrs_jax.models import cyclegan


def _norm(x: torch.Tensor) -> torch.Tensor:
  return F.instance_norm(x, eps=cyclegan.NORM_EPS)


def _pad(x: torch.Tensor, p: int) -> torch.Tensor:
  return F.pad(x, (p, p, p, p), mode="reflect")


class ResidualBlock(nn.Module):
  def __init__(self, channels: int):
    super().__init__()
    self.conv_0 = nn.Conv2d(channels, channels, 3)
    self.conv_1 = nn.Conv2d(channels, channels, 3)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(_norm(self.conv_0(_pad(x, 1))))
    return x + _norm(self.conv_1(_pad(y, 1)))


class Generator(nn.Module):
  """[B, in, H, W] in [-1, 1] -> [B, out, H, W] in [-1, 1]; same layout as cyclegan.Generator."""

  def __init__(self, in_channels: int, out_channels: int, filters: int, blocks: int):
    super().__init__()
    f = filters
    self.blocks = blocks
    self.conv_in = nn.Conv2d(in_channels, f, 7)
    self.down_0 = nn.Conv2d(f, 2 * f, 3, stride=2, padding=1)
    self.down_1 = nn.Conv2d(2 * f, 4 * f, 3, stride=2, padding=1)
    for i in range(blocks):
      self.add_module(f"res_{i}", ResidualBlock(4 * f))
    self.up_0 = nn.ConvTranspose2d(4 * f, 2 * f, 3, stride=2, padding=1, output_padding=1)
    self.up_1 = nn.ConvTranspose2d(2 * f, f, 3, stride=2, padding=1, output_padding=1)
    self.conv_out = nn.Conv2d(f, out_channels, 7)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(_norm(self.conv_in(_pad(x, 3))))
    x = F.relu(_norm(self.down_0(x)))
    x = F.relu(_norm(self.down_1(x)))
    for i in range(self.blocks):
      x = getattr(self, f"res_{i}")(x)
    x = F.relu(_norm(self.up_0(x)))
    x = F.relu(_norm(self.up_1(x)))
    return torch.tanh(self.conv_out(_pad(x, 3)))


def _conv_weight(kernel: np.ndarray) -> np.ndarray:
  """Flax conv kernel [kh, kw, in, out] -> torch Conv2d weight [out, in, kh, kw]."""
  return np.transpose(kernel, (3, 2, 0, 1))


def _transpose_weight(kernel: np.ndarray) -> np.ndarray:
  """Flax ConvTranspose kernel [kh, kw, in, out] (a plain conv over the dilated input) ->
  torch ConvTranspose2d weight [in, out, kh, kw], which torch applies spatially flipped."""
  return np.ascontiguousarray(np.transpose(kernel, (2, 3, 0, 1))[:, :, ::-1, ::-1])


def state_dict_from_flax(params: Any) -> dict[str, torch.Tensor]:
  """Flax generator params ({conv_in: {kernel, bias}, ..., res_i: {conv_j: ...}}) ->
  a state_dict for `Generator`."""
  out = {}

  def put(prefix: str, layer: dict, transpose: bool = False) -> None:
    kernel = np.asarray(layer["kernel"], np.float32)
    weight = _transpose_weight(kernel) if transpose else _conv_weight(kernel)
    out[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
    out[f"{prefix}.bias"] = torch.from_numpy(np.asarray(layer["bias"], np.float32).copy())

  for name, layer in params.items():
    if name.startswith("res_"):
      for conv, sub in layer.items():
        put(f"{name}.{conv}", sub)
    else:
      put(name, layer, transpose=name.startswith("up_"))
  return out


def generator_from_flax(params: Any) -> Generator:
  """A torch Generator (eval mode) carrying the given Flax generator params."""
  f = int(np.shape(params["conv_in"]["kernel"])[-1])
  in_c = int(np.shape(params["conv_in"]["kernel"])[2])
  out_c = int(np.shape(params["conv_out"]["kernel"])[-1])
  blocks = len([k for k in params if k.startswith("res_")])
  model = Generator(in_c, out_c, f, blocks)
  model.load_state_dict(state_dict_from_flax(params), strict=True)
  return model.eval()


def load_rgb_to_ir(path: str, step: int | None = None) -> tuple[Any, dict[str, Any]]:
  """(RGB->IR generator params as numpy, {"checkpoint", "step", "size"}) of a translator run
  folder or its checkpoints/ folder."""
  path = os.path.abspath(path)
  if os.path.basename(path) == "checkpoints" and not os.path.isfile(
    os.path.join(path, "config.json")
  ):
    path = os.path.dirname(path)
  config = checkpoint.read_run_config(path)
  if config.get("trainer") != "translator":
    raise ValueError(f"{path} is a {config.get('trainer')!r} run, not a translator run")
  step, params = checkpoint.run_params(path, step)
  provenance = {
    "checkpoint": os.path.join(path, "checkpoints"),
    "step": int(step),
    "size": config.model.size,
  }
  return params["rgb_to_ir"], provenance


def main(argv) -> None:
  del argv  # command.run refuses positional arguments
  f = flags.FLAGS
  if not f.checkpoint:
    command.fail("give --checkpoint=<translator run folder>")
  try:
    params, provenance = load_rgb_to_ir(f.checkpoint)
  except (FileNotFoundError, ValueError, KeyError) as e:
    command.fail(command.message_of(e))
  model = generator_from_flax(params)
  torch.save(
    {
      "state_dict": model.state_dict(),
      "provenance": provenance,
      "layout": "NCHW, inputs in [-1, 1]",
    },
    f.out,
  )
  print(f"wrote {f.out} ({provenance})")


def define_flags() -> None:
  """Flags of this command (defined only when it runs, so the module imports anywhere)."""
  flags.DEFINE_string("checkpoint", None, "Translator run folder or its checkpoints folder.")
  flags.DEFINE_string("out", "rgb_to_ir.pt", "Output .pt file.")


if __name__ == "__main__":
  define_flags()
  command.run(main)
