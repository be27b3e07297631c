"""SigLIP vision tower (ViT + MAP head) and the pre-LN transformer blocks shared with the text tower.

Parameter names follow transformers' `SiglipVisionModel` (q_proj, layer_norm1, fc1, post_layernorm,
head/probe, ...) so that export is a rename table plus reshapes; see `fusionrs_jax/export/hf_siglip.py`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fusionrs_jax.models import scan

Dtype = Any
# SigLIP (big_vision and transformers) uses eps=1e-6 in every LayerNorm.
LN_EPS = 1e-6
ACT_AXES = ("batch", "length", "embed")


def param_with_axes(init_fn, names):
  """Initializer carrying logical-axis names; the rules in `fusionrs_jax/sharding.py` map them."""
  return nn.with_logical_partitioning(init_fn, names)


def layer_norm(name: str, dtype: Dtype) -> nn.LayerNorm:
  return nn.LayerNorm(
    epsilon=LN_EPS,
    dtype=dtype,
    scale_init=param_with_axes(nn.initializers.ones, ("norm",)),
    bias_init=param_with_axes(nn.initializers.zeros, ("norm",)),
    name=name,
  )


class HeadsDense(nn.Module):
  """Projection contracting the last `in_axes` input dims, kernel [*in, *features], + bias.

  The kernel is created at its final N-D shape (xavier-uniform over the flattened fan-in and
  fan-out, like the torch Linear it exports to). flax's DenseGeneral instead initialises a
  flat 2-D kernel and reshapes it, and with logical-axis rules in scope its metadata check
  then constrains the 2-D value with N-D axis names and fails.
  """

  features: tuple
  in_axes: int
  kernel_axes: tuple
  bias_axes: tuple
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    in_shape = x.shape[x.ndim - self.in_axes :]
    fan_in, fan_out = int(np.prod(in_shape)), int(np.prod(self.features))
    limit = float(np.sqrt(6.0 / (fan_in + fan_out)))

    def init(rng, shape, dtype=jnp.float32):
      return jax.random.uniform(rng, shape, dtype, -limit, limit)

    kernel = self.param(
      "kernel", param_with_axes(init, self.kernel_axes), (*in_shape, *self.features)
    )
    bias = self.param(
      "bias", param_with_axes(nn.initializers.zeros, self.bias_axes), tuple(self.features)
    )
    y = jnp.tensordot(x.astype(self.dtype), kernel.astype(self.dtype), axes=self.in_axes)
    return y + bias.astype(self.dtype)


class MultiHeadAttention(nn.Module):
  """Multi-head attention with separate q/k/v/out projections (kernels [D, H, Dh] / [H, Dh, D])."""

  num_heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_q, x_kv):
    """x_q: [B, Nq, D], x_kv: [B, Nk, D] -> [B, Nq, D]; no mask (SigLIP attends everywhere)."""
    width = x_q.shape[-1]
    head_dim = width // self.num_heads
    if head_dim * self.num_heads != width:
      raise ValueError(f"width {width} is not divisible by num_heads {self.num_heads}")

    def proj(name):
      return HeadsDense(
        (self.num_heads, head_dim),
        1,
        ("embed", "heads", "kv"),
        ("heads", "kv"),
        self.dtype,
        name=name,
      )

    q = proj("q_proj")(x_q)  # [B, Nq, H, Dh]
    k = proj("k_proj")(x_kv)  # [B, Nk, H, Dh]
    v = proj("v_proj")(x_kv)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (head_dim**-0.5)
    # Softmax in float32 even when computing in bfloat16, as in transformers.
    weights = nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    return HeadsDense(
      (width,), 2, ("heads", "kv", "embed"), ("embed",), self.dtype, name="out_proj"
    )(out)


class MlpBlock(nn.Module):
  """fc1 -> gelu (tanh approximation, torch 'gelu_pytorch_tanh') -> fc2."""

  mlp_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    """x: [B, N, D] -> [B, N, D]."""
    width = x.shape[-1]
    h = nn.Dense(
      self.mlp_dim,
      dtype=self.dtype,
      kernel_init=param_with_axes(nn.initializers.xavier_uniform(), ("embed", "mlp")),
      bias_init=param_with_axes(nn.initializers.normal(1e-6), ("mlp",)),
      name="fc1",
    )(x)
    h = nn.gelu(h, approximate=True)
    return nn.Dense(
      width,
      dtype=self.dtype,
      kernel_init=param_with_axes(nn.initializers.xavier_uniform(), ("mlp", "embed")),
      bias_init=param_with_axes(nn.initializers.normal(1e-6), ("embed",)),
      name="fc2",
    )(h)


class EncoderLayer(nn.Module):
  """Pre-LN transformer block: x + attn(LN(x)); x + mlp(LN(x))."""

  mlp_dim: int
  num_heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    """x: [B, N, D] -> [B, N, D]."""
    x = nn.with_logical_constraint(x, ACT_AXES)
    h = layer_norm("layer_norm1", self.dtype)(x)
    x = x + MultiHeadAttention(self.num_heads, self.dtype, name="self_attn")(h, h)
    h = layer_norm("layer_norm2", self.dtype)(x)
    x = x + MlpBlock(self.mlp_dim, self.dtype, name="mlp")(h)
    return nn.with_logical_constraint(x, ACT_AXES)


class Encoder(scan.LayerStack):
  """`depth` EncoderLayers named layers_{i} (transformers: encoder.layers.{i}), or with
  scan_layers one scanned `layers` whose params carry a leading [depth] axis."""

  depth: int
  mlp_dim: int
  num_heads: int

  @nn.compact
  def __call__(self, x):
    """x: [B, N, D] -> [B, N, D] (before the final LayerNorm)."""
    # remat trades one extra forward per block for not storing block activations.
    layer_cls = scan.layer_class(EncoderLayer, self.remat, self.remat_policy, self.scan_layers)
    if self.scan_layers:
      layer = layer_cls(self.mlp_dim, self.num_heads, self.dtype, name=scan.STACK)
      x, _ = scan.scan_over_layers(lambda layer, x: (layer(x), None), self.depth)(layer, x)
      return x
    for i in range(self.depth):
      x = layer_cls(self.mlp_dim, self.num_heads, self.dtype, name=f"layers_{i}")(x)
    return x


def encoder_of(tower: nn.Module) -> "Encoder":
  """The transformer stack of a tower (ViT or text), from the tower's own fields."""
  return Encoder(
    tower.depth, tower.mlp_dim, tower.num_heads, **tower.stack_options(), name="encoder"
  )


class MAPHead(nn.Module):
  """Multihead attention pooling: one learned probe attends over the tokens, then LN + MLP residual."""

  mlp_dim: int
  num_heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    """x: [B, N, D] -> [B, D]."""
    batch, _, width = x.shape
    probe = self.param(
      "probe",
      param_with_axes(nn.initializers.xavier_uniform(), ("length", "embed")),
      (1, width),
    )  # [1, D]: one query token
    probe = jnp.broadcast_to(probe.astype(self.dtype), (batch, 1, width))
    h = MultiHeadAttention(self.num_heads, self.dtype, name="attention")(probe, x)
    y = layer_norm("layernorm", self.dtype)(h)
    h = h + MlpBlock(self.mlp_dim, self.dtype, name="mlp")(y)
    return h[:, 0]


class ViT(scan.LayerStack):
  """SigLIP image tower.

  Input images [B, H, W, C] already normalised (SigLIP uses [-1, 1]); H = W = image_size.
  Returns (pooled [B, D] or None when use_head=False, tokens [B, N, D] after post_layernorm).
  """

  image_size: int
  patch_size: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  num_channels: int = 3
  use_head: bool = True

  @nn.compact
  def __call__(self, images):
    if images.shape[-1] != self.num_channels:
      raise ValueError(
        f"images have {images.shape[-1]} channels, tower expects {self.num_channels}"
      )
    p = self.patch_size
    x = nn.Conv(
      self.width,
      (p, p),
      strides=(p, p),
      padding="VALID",
      dtype=self.dtype,
      kernel_init=param_with_axes(
        nn.initializers.lecun_normal(), ("patch", "patch", "channels", "embed")
      ),
      bias_init=param_with_axes(nn.initializers.zeros, ("embed",)),
      name="patch_embedding",
    )(images.astype(self.dtype))
    batch, gh, gw, _ = x.shape
    x = x.reshape(batch, gh * gw, self.width)  # row-major patches, same order as torch flatten(2)
    num_patches = (self.image_size // p) ** 2
    pos = self.param(
      "position_embedding",
      param_with_axes(nn.initializers.normal(1 / np.sqrt(self.width)), ("length", "embed")),
      (num_patches, self.width),
    )  # [N, D]
    if x.shape[1] != num_patches:
      raise ValueError(f"got {x.shape[1]} patches, position table has {num_patches}")
    x = x + pos.astype(self.dtype)[None]
    x = encoder_of(self)(x)
    tokens = layer_norm("post_layernorm", self.dtype)(x)
    pooled = None
    if self.use_head:
      pooled = MAPHead(self.mlp_dim, self.num_heads, self.dtype, name="head")(tokens)
    return pooled, tokens
