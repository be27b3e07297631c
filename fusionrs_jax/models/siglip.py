"""SigLIP model over RGB, infrared and text: towers, L2-normalised embeddings, learnable t and b.

`siglip_preset(name)` gives the hyperparameters (keys = `SigLIP` field names), e.g.
`SigLIP(**siglip_preset("tiny"), ir_tower="separate", ir_channels=1)`.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from fusionrs_jax.core import sharding
from fusionrs_jax.models import scan
from fusionrs_jax.models.text import TextTransformer
from fusionrs_jax.models.vit import ViT, param_with_axes

IR_TOWERS = ("shared", "separate")

_PRESETS = {
  # Unit tests: compiles and runs in seconds on CPU.
  "tiny": {
    "image_size": 32,
    "patch_size": 8,
    "width": 32,
    "depth": 2,
    "mlp_dim": 64,
    "num_heads": 2,
    "text_width": 32,
    "text_depth": 2,
    "text_mlp_dim": 64,
    "text_num_heads": 2,
    "vocab_size": 256,
    "text_len": 16,
  },
  # The default job: ~3x cheaper than small, trains on the demo world in minutes on 2 cores.
  "mini": {
    "image_size": 64,
    "patch_size": 8,
    "width": 128,
    "depth": 4,
    "mlp_dim": 512,
    "num_heads": 4,
    "text_width": 128,
    "text_depth": 4,
    "text_mlp_dim": 512,
    "text_num_heads": 4,
    "vocab_size": 2000,
    "text_len": 32,
  },
  # Trains on 2 CPU cores in under an hour on ~2k images at 64 px (64 patches per image).
  "small": {
    "image_size": 64,
    "patch_size": 8,
    "width": 192,
    "depth": 6,
    "mlp_dim": 768,
    "num_heads": 3,
    "text_width": 192,
    "text_depth": 6,
    "text_mlp_dim": 768,
    "text_num_heads": 3,
    "vocab_size": 8000,
    "text_len": 32,
  },
  # google/siglip-base-patch16-224.
  "B16": {
    "image_size": 224,
    "patch_size": 16,
    "width": 768,
    "depth": 12,
    "mlp_dim": 3072,
    "num_heads": 12,
    "text_width": 768,
    "text_depth": 12,
    "text_mlp_dim": 3072,
    "text_num_heads": 12,
    "vocab_size": 32000,
    "text_len": 64,
  },
  # google/siglip-so400m-patch14-224 (shape-optimised ViT; text length 16 at 224 px).
  "So400m": {
    "image_size": 224,
    "patch_size": 14,
    "width": 1152,
    "depth": 27,
    "mlp_dim": 4304,
    "num_heads": 16,
    "text_width": 1152,
    "text_depth": 27,
    "text_mlp_dim": 4304,
    "text_num_heads": 16,
    "vocab_size": 32000,
    "text_len": 16,
  },
}


def siglip_preset(name: str) -> dict:
  """Hyperparameters of a named size; keys are `SigLIP` constructor fields."""
  if name not in _PRESETS:
    raise ValueError(f"unknown SigLIP preset {name!r}; choose one of {sorted(_PRESETS)}")
  return dict(_PRESETS[name])


def l2_normalize(x, eps=1e-12):
  """[..., D] -> unit-norm [..., D] in float32."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def _match_channels(images, channels: int):
  """Replicate 1-channel IR to 3 channels, or average 3 channels to 1, as the tower expects."""
  c = images.shape[-1]
  if c == channels:
    return images
  if c == 1:
    return jnp.repeat(images, channels, axis=-1)
  if channels == 1:
    return jnp.mean(images, axis=-1, keepdims=True)
  raise ValueError(f"cannot feed {c}-channel images to a {channels}-channel tower")


class SigLIP(scan.LayerStack):
  """Image tower(s) + text tower with sigmoid-loss temperature and bias.

  Images [B, H, W, C] normalised to [-1, 1]; IR may have C=1 or 3. Tokens [B, L] int32 padded to
  text_len. Embeddings are L2-normalised float32 [B, width].
  """

  image_size: int
  patch_size: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  text_width: int
  text_depth: int
  text_mlp_dim: int
  text_num_heads: int
  vocab_size: int
  text_len: int
  # "shared": IR goes through the RGB tower (replicated to 3 channels); "separate": its own ViT.
  ir_tower: str = "shared"
  # Input channels of the separate IR tower (1 = raw thermal).
  ir_channels: int = 3

  def setup(self):
    if self.ir_tower not in IR_TOWERS:
      raise ValueError(f"ir_tower must be one of {IR_TOWERS}, got {self.ir_tower!r}")
    vit = {
      "image_size": self.image_size,
      "patch_size": self.patch_size,
      "width": self.width,
      "depth": self.depth,
      "mlp_dim": self.mlp_dim,
      "num_heads": self.num_heads,
      **self.stack_options(),
    }
    self.vision_model = ViT(**vit, num_channels=3)
    if self.ir_tower == "separate":
      self.ir_vision_model = ViT(**vit, num_channels=self.ir_channels)
    self.text_model = TextTransformer(
      vocab_size=self.vocab_size,
      text_len=self.text_len,
      width=self.text_width,
      depth=self.text_depth,
      mlp_dim=self.text_mlp_dim,
      num_heads=self.text_num_heads,
      out_dim=self.width,
      **self.stack_options(),
    )
    # Shape [1] like transformers; t = exp(logit_scale) starts at 10, b at -10 (SigLIP paper).
    self.logit_scale = self.param(
      "logit_scale",
      param_with_axes(nn.initializers.constant(math.log(10.0)), ("norm",)),
      (1,),
    )
    self.logit_bias = self.param(
      "logit_bias", param_with_axes(nn.initializers.constant(-10.0), ("norm",)), (1,)
    )

  def embed_image(self, images, modality: str = "rgb"):
    """images [B, H, W, C] -> unit-norm [B, width]; modality is "rgb" or "ir"."""
    if modality == "rgb":
      pooled, _ = self.vision_model(_match_channels(images, 3))
    elif modality == "ir" and self.ir_tower == "separate":
      pooled, _ = self.ir_vision_model(_match_channels(images, self.ir_channels))
    elif modality == "ir":
      pooled, _ = self.vision_model(_match_channels(images, 3))
    else:
      raise ValueError(f"modality must be 'rgb' or 'ir', got {modality!r}")
    return l2_normalize(pooled)

  def embed_text(self, tokens):
    """tokens [B, L] int32 -> unit-norm [B, width]."""
    pooled, _ = self.text_model(tokens)
    return l2_normalize(pooled)

  def temperature_and_bias(self):
    """(t, b) float32 scalars for the sigmoid loss / logits = t * zimg @ ztxt.T + b."""
    return jnp.exp(self.logit_scale[0]), self.logit_bias[0]

  def __call__(self, rgb=None, ir=None, text=None, ir_text=None):
    """Embeds whichever inputs are given.

    Returns {"rgb"|"ir"|"text"|"ir_text": [B, width] unit-norm, "t": scalar, "b": scalar}.
    """
    out = {}
    if rgb is not None:
      out["rgb"] = self.embed_image(rgb, "rgb")
    if ir is not None:
      out["ir"] = self.embed_image(ir, "ir")
    if text is not None:
      out["text"] = self.embed_text(text)
    if ir_text is not None:
      out["ir_text"] = self.embed_text(ir_text)
    out["t"], out["b"] = self.temperature_and_bias()
    return out


def dummy_inputs(model: SigLIP, batch_size: int = 1) -> dict:
  """Inputs that touch every parameter, for `model.init(rng, **dummy_inputs(model))`."""
  s = model.image_size
  inputs = {
    "rgb": jnp.zeros((batch_size, s, s, 3), jnp.float32),
    "text": jnp.zeros((batch_size, model.text_len), jnp.int32),
  }
  if model.ir_tower == "separate":
    inputs["ir"] = jnp.zeros((batch_size, s, s, model.ir_channels), jnp.float32)
  return inputs


def from_config(config) -> SigLIP:
  """The SigLIP of a run config: preset (config.model.preset) plus its overrides."""
  hp = siglip_preset(config.model.preset)
  for key in ("image_size", "patch_size", "text_len"):
    if config.model.get(key):
      hp[key] = config.model[key]
  hp["vocab_size"] = config.data.vocab_size
  return SigLIP(
    **hp,
    ir_tower=config.model.ir_tower,
    ir_channels=config.model.ir_channels,
    remat=config.model.remat,
    dtype=jnp.dtype(config.model.dtype),
    remat_policy=config.model.get("remat_policy", scan.DEFAULT_POLICY),
    scan_layers=config.model.get("scan_layers", False),
  )


def make_embed_fns(model, mesh):
  """Jitted (params, images, modality) and (params, tokens) embedders for evaluation."""
  # Replicated outputs: every process can fetch the [B, D] embeddings (a batch-sharded
  # result spans other hosts' devices and cannot be read back on a multi-host mesh).
  out = sharding.replicated(mesh)

  @functools.partial(jax.jit, static_argnums=2, out_shardings=out)
  def embed_images(params, images, modality):
    return model.apply(params, images, modality, method=model.embed_image)

  @functools.partial(jax.jit, out_shardings=out)
  def embed_texts(params, tokens):
    return model.apply(params, tokens, method=model.embed_text)

  def place(x):
    return jax.device_put(x, sharding.batch_sharding(mesh, x.ndim))

  return (lambda p, x, m: embed_images(p, place(x), m), lambda p, t: embed_texts(p, place(t)))
