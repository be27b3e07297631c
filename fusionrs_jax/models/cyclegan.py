"""CycleGAN (Zhu et al. 2017) for RGB<->IR translation: ResNet-block generators and
PatchGAN discriminators with instance norm, fully convolutional over any H, W divisible by 4.

Module names (conv_in, down_i, res_i/conv_j, up_i, conv_out; disc conv_i) are mirrored by
`fusionrs_jax/export/torch_translator.py`, so export is a kernel transpose per layer.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
# The published code initialises every conv with N(0, 0.02) and zero bias.
INIT = nn.initializers.normal(0.02)
# torch.nn.InstanceNorm2d's epsilon; matching it keeps the torch export exact.
NORM_EPS = 1e-5
RGB_CHANNELS, IR_CHANNELS = 3, 1


@dataclasses.dataclass(frozen=True)
class Size:
  """Width/depth of one CycleGAN preset."""

  gen_filters: int
  gen_blocks: int
  disc_filters: int
  # Stride-2 conv layers in the discriminator after the first one (3 = 70x70 PatchGAN).
  disc_layers: int


SIZES = {
  "tiny": Size(gen_filters=8, gen_blocks=1, disc_filters=8, disc_layers=2),
  "small": Size(gen_filters=16, gen_blocks=4, disc_filters=16, disc_layers=3),
  "paper": Size(gen_filters=64, gen_blocks=9, disc_filters=64, disc_layers=3),
}


def _norm_axes(x: jax.Array) -> tuple[int, ...]:
  # [B, H, W, C] -> (1, 2); [B, H, W, G, C] (G pixels per channel, see Upsample2x) -> (1, 2, 3).
  return tuple(range(1, x.ndim - 1))


def _instance_norm_fwd(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  axes = _norm_axes(x)
  mean = x.mean(axis=axes, keepdims=True)
  var = jnp.square(x - mean).mean(axis=axes, keepdims=True)  # biased, like torch
  rstd = jax.lax.rsqrt(var + NORM_EPS)
  y = (x - mean) * rstd
  return y, (y, rstd)


def _instance_norm_bwd(residuals, g: jax.Array) -> tuple[jax.Array]:
  # d/dx of (x - mean) * rstd, written in the output y: two per-channel means of the
  # incoming gradient and one elementwise pass.
  y, rstd = residuals
  axes = _norm_axes(y)
  g_mean = g.mean(axis=axes, keepdims=True)
  gy_mean = (g * y).mean(axis=axes, keepdims=True)
  return (rstd * (g - g_mean - y * gy_mean),)


@jax.custom_vjp
def _instance_norm_f32(x: jax.Array) -> jax.Array:
  return _instance_norm_fwd(x)[0]


_instance_norm_f32.defvjp(_instance_norm_fwd, _instance_norm_bwd)


def instance_norm(x: jax.Array) -> jax.Array:
  """Per-sample, per-channel normalisation over H, W (no affine, as published). [B,H,W,C];
  also [B,H,W,G,C], normalised over H, W and G (a channel's pixels held in G groups).

  Its gradient is the closed form in the normalised output (custom VJP) rather than autodiff
  of mean and variance: XLA then keeps the output instead of recomputing the normalisation
  inside every consumer of the backward pass, 9-10% less CPU per generator step at 256 px
  (benchmarks/translator.py). Same values and gradients to float rounding.
  """
  return _instance_norm_f32(x.astype(jnp.float32)).astype(x.dtype)


def _norm_relu(x: jax.Array) -> jax.Array:
  """ReLU(instance_norm(x)): what follows every generator conv but the last."""
  return nn.relu(instance_norm(x))


def _norm_relu_phases(y: jax.Array, channels: int) -> jax.Array:
  """ReLU(instance_norm(.)) of a conv output whose pixels are still held as phases before a
  pixel shuffle ([B, h, w, ...] with phases x `channels` values per position): each channel
  normalised over h, w and its phases, which is the norm of the shuffled image."""
  b, h, w = y.shape[:3]
  return nn.relu(instance_norm(y.reshape(b, h, w, -1, channels))).reshape(y.shape)


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """Reflection padding of H and W by `pad` pixels. [B,H,W,C] -> [B,H+2p,W+2p,C]."""
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def _conv(features: int, kernel: int, stride: int, padding, dtype, name: str) -> nn.Conv:
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=(stride, stride),
    padding=padding,
    kernel_init=INIT,
    dtype=dtype,
    name=name,
  )


# Kernel row (or column) of a 3x3, stride-2 transposed conv that reaches output phase a
# (even/odd row) from input offset d (0: row i, 1: row i + 1); None = no tap. With the
# dilated input padded (1, 2), even outputs see x[i] through row 1, odd outputs x[i]
# through row 0 and x[i + 1] through row 2.
_PHASE_TAPS = ((1, None), (0, 2))


def subpixel_kernel(kernel: jax.Array) -> jax.Array:
  """[3, 3, I, O] transposed-conv kernel -> [2, 2, I, 4*O] kernel of a plain 2x2 conv whose
  output channels are the four (row phase, column phase, O) output pixels."""
  zeros = jnp.zeros_like(kernel[0, 0])
  rows = []
  for dy in range(2):
    cols = []
    for dx in range(2):
      phases = []
      for a in range(2):
        for b in range(2):
          ry, rx = _PHASE_TAPS[a][dy], _PHASE_TAPS[b][dx]
          phases.append(zeros if ry is None or rx is None else kernel[ry, rx])
      cols.append(jnp.concatenate(phases, axis=-1))
    rows.append(jnp.stack(cols))
  return jnp.stack(rows)


def _conv_valid(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(
    x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def space_to_depth(x: jax.Array, block: int) -> jax.Array:
  """[B, H, W, C] -> [B, H/block, W/block, block*block*C], channels ordered (row, col, C)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // block, block, w // block, block, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // block, w // block, block * block * c)


def depth_to_space(x: jax.Array, block: int) -> jax.Array:
  """Inverse of space_to_depth: [B, H, W, block*block*C] -> [B, H*block, W*block, C]."""
  b, h, w, c = x.shape
  c //= block * block
  x = x.reshape(b, h, w, block, block, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * block, w * block, c)


def _blocked_taps(size: int, block: int, stride: int) -> np.ndarray:
  """[taps, block(r), out_phase(p)] kernel row index of a blocked conv, -1 = no tap: a stride-1
  conv's output phase p reads input phase r of block u through kernel row block*u + r - p; a
  stride-`block` conv (one output phase) through row block*u + r."""
  phases = block if stride == 1 else 1
  taps = (size + phases - 2) // block + 1
  rows = np.full((taps, block, phases), -1, np.int32)
  for u in range(taps):
    for r in range(block):
      for p in range(phases):
        i = block * u + r - p
        rows[u, r, p] = i if 0 <= i < size else -1
  return rows


def blocked_kernel(kernel: jax.Array, block: int, stride: int) -> jax.Array:
  """[K, K, I, O] kernel -> [T, T, block*block*I, P*P*O] kernel of the same VALID conv on
  space_to_depth(input, block): P = block output phases for stride 1 (depth_to_space the
  result), 1 for stride == block."""
  rows = _blocked_taps(kernel.shape[0], block, stride)
  taps, _, phases = rows.shape
  # Row -1 picks the appended zero row (and column).
  padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
  k = padded[rows][:, :, :, rows]  # [u, r, p, v, r2, q, I, O]
  k = k.transpose(0, 3, 1, 4, 6, 2, 5, 7)  # [u, v, r, r2, I, p, q, O]
  i, o = kernel.shape[2], kernel.shape[3]
  return k.reshape(taps, taps, block * block * i, phases * phases * o)


def _blocked_conv_blocks(
  x: jax.Array, kernel: jax.Array, stride: int, block: int
) -> tuple[jax.Array, int, int]:
  """blocked_conv before its depth-to-space and crop: the conv output on blocks
  [B, h, w, P*P*O] (P = block for stride 1, else 1) and the output size out_h, out_w."""
  if stride not in (1, block):
    raise ValueError(f"blocked_conv: stride {stride} must be 1 or the block {block}")
  b, h, w, _ = x.shape
  k = kernel.shape[0]
  out_h, out_w = (h - k) // stride + 1, (w - k) // stride + 1
  taps = _blocked_taps(k, block, stride).shape[0]
  if stride == 1:  # each output block holds block x block pixels
    out_bh, out_bw = -(-out_h // block), -(-out_w // block)
  else:
    out_bh, out_bw = out_h, out_w
  # The input rows/cols the output blocks read, zero-padded or cropped to that.
  need_h, need_w = (out_bh + taps - 1) * block, (out_bw + taps - 1) * block
  x = jnp.pad(x, ((0, 0), (0, max(need_h - h, 0)), (0, max(need_w - w, 0)), (0, 0)))
  x = x[:, :need_h, :need_w]
  y = _conv_valid(space_to_depth(x, block), blocked_kernel(kernel, block, stride).astype(x.dtype))
  return y, out_h, out_w


def blocked_conv(x: jax.Array, kernel: jax.Array, stride: int, block: int) -> jax.Array:
  """The VALID conv of x [B, H, W, I] with kernel [K, K, I, O] at stride 1 or `block`,
  computed on space_to_depth(x, block) with blocked_kernel: a conv with block^2 times the
  channels and ~K/block taps, which XLA:CPU runs far faster when I or O is small (a 7x7 conv
  to 3 channels: 2.6x forward, 1.8x with its gradients). Same result to float rounding."""
  y, out_h, out_w = _blocked_conv_blocks(x, kernel, stride, block)
  if stride == 1:
    y = depth_to_space(y, block)
  return y[:, :out_h, :out_w]


def _conv_params_and_padded_input(module: nn.Module, x: jax.Array):
  """For a conv module with nn.Conv's params (features, kernel_size, padding, dtype fields):
  x zero-padded and cast, and its kernel [K, K, I, O] and bias [O] (N(0, 0.02) and zero init)
  in the module's dtype. Call from the module's compact __call__."""
  k, p = module.kernel_size, module.padding
  # float32 params, as nn.Conv's param_dtype (also under jax_enable_x64).
  kernel = module.param("kernel", INIT, (k, k, x.shape[-1], module.features), jnp.float32)
  bias = module.param("bias", nn.initializers.zeros, (module.features,), jnp.float32)
  x = x.astype(module.dtype)
  x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0))) if p else x
  return x, kernel.astype(module.dtype), bias.astype(module.dtype)


class BlockedConv(nn.Module):
  """nn.Conv's function and params (kernel [K, K, I, O], bias [O]; N(0, 0.02) init) with
  explicit zero `padding`, computed by blocked_conv (block >= 2; see conv_layer for 1).

  With `norm_relu` (stride 1), ReLU(instance_norm(.)) of that, normalised on the blocks
  before their depth-to-space, as Upsample2x does (same function to float rounding)."""

  features: int
  kernel_size: int
  stride: int
  padding: int
  block: int
  norm_relu: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x, kernel, bias = _conv_params_and_padded_input(self, x)
    if not self.norm_relu:
      return blocked_conv(x, kernel, self.stride, self.block) + bias
    if self.stride != 1:
      raise ValueError("BlockedConv: norm_relu needs stride 1")
    y, out_h, out_w = _blocked_conv_blocks(x, kernel, 1, self.block)
    n = self.block
    if out_h % n or out_w % n:  # partial edge blocks: normalise the cropped image
      return _norm_relu(depth_to_space(y, n)[:, :out_h, :out_w] + bias)
    y = y[:, : out_h // n, : out_w // n] + jnp.tile(bias, n * n)
    return depth_to_space(_norm_relu_phases(y, self.features), n)


def row_split_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The stride-1 VALID conv of x [B, H, W, I] with kernel [K, K, I, O], computed as one
  1 x K conv to K*O channels (one group of O per kernel row) and a sum of the K groups, each
  shifted by its row. For O = 1-3 (a generator's last layer) XLA:CPU runs that conv far
  faster than the K x K one: 7x7 16->3 at 256 px 2.1x and 16->1 1.3x forward, 1.8x and 1.7x
  with gradients. Same result to float rounding."""
  k, _, i, o = kernel.shape
  rows = _conv_valid(x, kernel.transpose(1, 2, 0, 3).reshape(1, k, i, k * o))
  out_h = x.shape[1] - k + 1
  return sum(rows[:, r : r + out_h, :, r * o : (r + 1) * o] for r in range(k))


def row_stack_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The stride-1 VALID conv of x [B, H, W, I] with kernel [K, K, I, O], computed as a 1 x K
  conv over the K row-shifted copies of x stacked as channels (K*I). For I = 1 (the IR
  generator's first layer) that is 1.25x faster than the 7x7 conv with its gradients."""
  k, _, i, o = kernel.shape
  out_h = x.shape[1] - k + 1
  stacked = jnp.concatenate([x[:, r : r + out_h] for r in range(k)], axis=-1)
  return _conv_valid(stacked, kernel.transpose(1, 0, 2, 3).reshape(1, k, k * i, o))


class RowConv(nn.Module):
  """nn.Conv's function and params (kernel [K, K, I, O], bias [O]; N(0, 0.02) init), stride
  1 with explicit zero `padding`, computed by row_split_conv (split=True) or row_stack_conv."""

  features: int
  kernel_size: int
  padding: int
  split: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x, kernel, bias = _conv_params_and_padded_input(self, x)
    conv = row_split_conv if self.split else row_stack_conv
    return conv(x, kernel) + bias


def conv_layer(features: int, kernel: int, stride: int, padding: int, block: int, dtype, name):
  """A conv layer with zero `padding`: plain (_conv) for block 1, else BlockedConv. Both have
  the same params, so the choice never changes checkpoints or the torch export."""
  if block == 1:
    return _conv(features, kernel, stride, ((padding, padding),) * 2, dtype, name)
  return BlockedConv(features, kernel, stride, padding, block, dtype=dtype, name=name)


def _transposed_conv_s2_phases(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """transposed_conv_s2 before its pixel shuffle: [B, H, W, 2, 2, O], output pixel
  (2h + a, 2w + b) at [:, h, w, a, b]."""
  padded = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
  y = _conv_valid(padded, subpixel_kernel(kernel).astype(x.dtype))
  batch, h, w, _ = y.shape
  return y.reshape(batch, h, w, 2, 2, kernel.shape[-1])


def _shuffle_phases(y: jax.Array) -> jax.Array:
  """[B, H, W, 2, 2, O] phases -> [B, 2H, 2W, O] image."""
  batch, h, w, _, _, out = y.shape
  return y.transpose(0, 1, 3, 2, 4, 5).reshape(batch, 2 * h, 2 * w, out)


def transposed_conv_s2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3 transposed conv, stride 2, output exactly 2H x 2W (torch's ConvTranspose2d(k3, s2, p1,
  output_padding=1); nn.ConvTranspose(O, (3, 3), (2, 2), ((1, 2), (1, 2))) without bias):
  [B, H, W, I] x [3, 3, I, O] -> [B, 2H, 2W, O]. Computed sub-pixel: one 2x2 conv over the
  undilated input to 4*O channels, then a depth-to-space shuffle, which skips the zeros of the
  dilated input (2.25x fewer FLOPs) and is a plain conv for XLA:CPU."""
  return _shuffle_phases(_transposed_conv_s2_phases(x, kernel))


# Winograd F(4x4, 3x3) (Lavin & Gray 2016, points 0, +-1, +-2, inf): a 4x4 output tile of a
# 3x3 conv is AT [(G k G^T) * (BT d BT^T)] AT^T for its 6x6 input tile d, so the conv becomes
# 36 channel matmuls over all tiles with 4x fewer multiplies than the direct conv.
_WINO_BT = np.array(
  [
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
  ],
  np.float32,
)
_WINO_G = np.array(
  [
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
  ],
  np.float32,
)
_WINO_AT = np.array(
  [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
  np.float32,
)
_WINO_OUT, _WINO_IN = _WINO_AT.shape
# conv3x3 takes its kernel gradient by Winograd from this many input channels, XLA's direct
# one below: per generator with gradients, 256 channels (`paper`, batch 1) ran 1.085x
# faster, 64 (`small`, batch 8) 0.98x (benchmarks/translator.py).
WINOGRAD_KERNEL_GRAD_MIN_CHANNELS = 128


def _combine(matrix: np.ndarray, parts: list) -> list:
  """[sum_j matrix[i, j] * parts[j] for each row i] of arrays, skipping zero terms."""
  rows = []
  for coefs in matrix:
    terms = [p if c == 1 else -p if c == -1 else p * c for c, p in zip(coefs, parts) if c]
    rows.append(sum(terms[1:], terms[0]))
  return rows


def _transform(matrix: np.ndarray, x: jax.Array, axis: int) -> jax.Array:
  """x with its `axis` mapped by `matrix` (rows: output index): _combine along one axis."""
  parts = [jax.lax.index_in_dim(x, j, axis, keepdims=False) for j in range(x.shape[axis])]
  return jnp.stack(_combine(matrix, parts), axis=axis)


def _winograd_tiles(x: jax.Array) -> tuple[jax.Array, int, int]:
  """x [B, H, W, I] (H, W >= 3) -> (its 6x6 input tiles transformed, BT d BT^T, as [36,
  B*th*tw, I], th, tw): one tile per 4x4 block of the VALID 3x3 conv's output, x zero-
  padded at the bottom/right to whole blocks."""
  m, n = _WINO_OUT, _WINO_IN
  b, h, w, i = x.shape
  th, tw = -(-(h - 2) // m), -(-(w - 2) // m)
  x = jnp.pad(x, ((0, 0), (0, m * th + 2 - h), (0, m * tw + 2 - w), (0, 0)))
  # Whole-array transforms (one per axis, not per tile row) keep the traced program small:
  # XLA fuses them all the same, and compile time grows with the op count.
  rows = jnp.stack([x[:, r : r + m * (th - 1) + 1 : m] for r in range(n)])  # [n, B, th, W', I]
  rows = _transform(_WINO_BT, rows, 0)
  tiles = jnp.stack([rows[:, :, :, c : c + m * (tw - 1) + 1 : m] for c in range(n)], axis=1)
  return _transform(_WINO_BT, tiles, 1).reshape(n * n, b * th * tw, i), th, tw


def _channel_matmuls(a: jax.Array, b: jax.Array, contract: int) -> jax.Array:
  """One matmul per tile position (leading axis 36): contracting a's and b's axis
  `contract` (2: channels, a conv; 1: tiles, a kernel gradient)."""
  dims = (((2,), (1,)) if contract == 2 else ((1,), (1,)), ((0,), (0,)))
  return jax.lax.dot_general(a, b, dims)


def winograd_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The VALID 3x3 stride-1 conv of x [B, H, W, I] with kernel [3, 3, I, O] -> [B, H-2,
  W-2, O], computed as Winograd F(4x4, 3x3): the input cut into overlapping 6x6 tiles (zero-
  padded to whole 4x4 output tiles), each tile and the kernel transformed, one batched
  matmul over the 36 tile positions, each product transformed back to its 4x4 outputs.
  Float32 only: the transforms' extra roundings give ~5x the direct conv's error (rms 1.7e-6
  vs 3e-7 of the output at 64 channels; tests/models/test_cyclegan.py), too loose for
  bfloat16. Through a whole generator's gradients that is 1.4-2x the direct conv's float32
  error against float64 (worst kernel gradient 3.9% vs 2.8% at `paper`, 1.3% vs 0.7% at
  `small`: deep instance-normed nets amplify rounding either way)."""
  m, n = _WINO_OUT, _WINO_IN
  b, h, w, _ = x.shape
  tiles, th, tw = _winograd_tiles(x)
  g = jnp.asarray(_WINO_G)
  k = jnp.einsum("ai,ijco,bj->abco", g, kernel, g, precision=jax.lax.Precision.HIGHEST)
  prod = _channel_matmuls(tiles, k.reshape(n * n, *kernel.shape[2:]), contract=2)
  prod = prod.reshape(n, n, b, th, tw, -1)
  y = _transform(_WINO_AT, _transform(_WINO_AT, prod, 0), 1)  # [m, m, B, th, tw, O]
  y = y.transpose(2, 3, 0, 4, 1, 5)  # [B, th, m, tw, m, O]
  return y.reshape(b, m * th, m * tw, -1)[:, : h - 2, : w - 2]


def winograd_conv3x3_kernel_grad(x: jax.Array, g: jax.Array) -> jax.Array:
  """The kernel gradient [3, 3, I, O] of winograd_conv3x3(x, kernel) for the output
  gradient g [B, H-2, W-2, O]: sum over pixels of x[h + i, w + j] g[h, w], computed by the
  transposed algorithm F(3x3, 4x4): G^T [sum over tiles (A g A^T) * (BT d BT^T)] G, i.e.
  the forward's input tiles, g's 4x4 blocks transformed to 6x6, and one matmul over the
  tiles per tile position (4x fewer multiplies than the direct sum)."""
  m, n = _WINO_OUT, _WINO_IN
  tiles, th, tw = _winograd_tiles(x)
  b, gh, gw, o = g.shape
  g = jnp.pad(g, ((0, 0), (0, m * th - gh), (0, m * tw - gw), (0, 0)))
  g = g.reshape(b, th, m, tw, m, o).transpose(2, 4, 0, 1, 3, 5)  # [m, m, B, th, tw, O]
  g_tiles = _transform(_WINO_AT.T, _transform(_WINO_AT.T, g, 0), 1)
  g_tiles = g_tiles.reshape(n * n, b * th * tw, o)
  prod = _channel_matmuls(tiles, g_tiles, contract=1).reshape(n, n, tiles.shape[-1], o)
  gm = jnp.asarray(_WINO_G)
  return jnp.einsum("ai,abco,bj->ijco", gm, prod, gm, precision=jax.lax.Precision.HIGHEST)


def _conv3x3_fwd(x: jax.Array, kernel: jax.Array):
  return winograd_conv3x3(x, kernel), (x, kernel)


def _conv3x3_bwd(residuals, g: jax.Array):
  x, kernel = residuals
  # The input gradient is the full conv of g with the flipped, in/out-swapped kernel: also
  # a 3x3 stride-1 conv, so Winograd too.
  padded = jnp.pad(g, ((0, 0), (2, 2), (2, 2), (0, 0)))
  dx = winograd_conv3x3(padded, kernel[::-1, ::-1].swapaxes(2, 3))
  if x.shape[-1] >= WINOGRAD_KERNEL_GRAD_MIN_CHANNELS:
    return dx, winograd_conv3x3_kernel_grad(x, g)
  _, kernel_vjp = jax.vjp(lambda k: _conv_valid(x, k), kernel)
  return dx, kernel_vjp(g)[0]


@jax.custom_vjp
def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """VALID 3x3 stride-1 conv ([B, H, W, I] x [3, 3, I, O] -> [B, H-2, W-2, O]) whose forward
  and input gradient run as Winograd F(4x4, 3x3) (winograd_conv3x3) and whose kernel
  gradient runs as F(3x3, 4x4) from WINOGRAD_KERNEL_GRAD_MIN_CHANNELS input channels (XLA's
  below): the residual blocks' convs, 1.3x faster forward than XLA:CPU's direct conv at 64
  px (64 and 256 channels; benchmarks/translator.py)."""
  return winograd_conv3x3(x, kernel)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


_WINOGRAD = {"on": True}
# Conv3x3 uses Winograd from this many output pixels (the 256 px recipe's residual blocks run
# at 64 x 64, where it was measured); smaller maps (32-64 px crops: tests, demo configs) keep
# the direct conv, which compiles faster (the `tiny` translator step: 7.7 vs 10.2 s).
WINOGRAD_MIN_PIXELS = 32 * 32


@contextlib.contextmanager
def direct_convs():
  """Within this context Conv3x3 traces XLA's direct conv instead of Winograd: for FLOP
  counts in direct-conv terms (benchmarks/translator.py) and direct-conv rounding."""
  before = _WINOGRAD["on"]
  _WINOGRAD["on"] = False
  try:
    yield
  finally:
    _WINOGRAD["on"] = before


class Conv3x3(nn.Module):
  """nn.Conv(features, (3, 3), padding="VALID")'s params and function (a residual block's
  conv_j), computed by conv3x3 in float32 from WINOGRAD_MIN_PIXELS output pixels (XLA's conv
  for other dtypes, smaller maps, or inside direct_convs())."""

  features: int
  dtype: Dtype = jnp.float32
  # Read by _conv_params_and_padded_input.
  kernel_size = 3
  padding = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x, kernel, bias = _conv_params_and_padded_input(self, x)
    pixels = (x.shape[1] - 2) * (x.shape[2] - 2)
    winograd = x.dtype == jnp.float32 and _WINOGRAD["on"] and pixels >= WINOGRAD_MIN_PIXELS
    conv = conv3x3 if winograd else _conv_valid
    return conv(x, kernel) + bias


def _conv_s2_plain(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(
    x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def _conv_s2_fwd(x: jax.Array, kernel: jax.Array):
  return _conv_s2_plain(x, kernel), (x, kernel)


def _conv_s2_bwd(residuals, g: jax.Array):
  x, kernel = residuals
  # The input gradient of a stride-2 conv is the transposed conv of g with the kernel
  # flipped and its in/out channels swapped: computed sub-pixel instead of XLA's conv over a
  # zero-dilated g (1.7x faster at 256 px, 16->32 channels).
  dx = transposed_conv_s2(g, kernel[::-1, ::-1].swapaxes(2, 3))
  _, kernel_vjp = jax.vjp(lambda k: _conv_s2_plain(x, k), kernel)
  return dx, kernel_vjp(g)[0]


@jax.custom_vjp
def conv_s2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3 conv, stride 2, zero padding 1 (nn.Conv(O, (3, 3), (2, 2), ((1, 1), (1, 1))) without
  bias): [B, H, W, I] x [3, 3, I, O] -> [B, H/2, W/2, O], H and W even. XLA's conv forward
  and kernel gradient; the input gradient sub-pixel (see _conv_s2_bwd)."""
  return _conv_s2_plain(x, kernel)


conv_s2.defvjp(_conv_s2_fwd, _conv_s2_bwd)


class DownConv(nn.Module):
  """nn.Conv(features, (3, 3), (2, 2), ((1, 1), (1, 1)))'s params and function (the
  generator's down_i), computed by conv_s2. [B, H, W, I] -> [B, H/2, W/2, features]."""

  features: int
  dtype: Dtype = jnp.float32
  # Read by _conv_params_and_padded_input; conv_s2 pads by itself.
  kernel_size = 3
  padding = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.shape[1] % 2 or x.shape[2] % 2:
      raise ValueError(f"DownConv input H, W must be even, got {x.shape}")
    x, kernel, bias = _conv_params_and_padded_input(self, x)
    return conv_s2(x, kernel) + bias


class Upsample2x(nn.Module):
  """3x3 transposed conv, stride 2, output exactly 2H x 2W: the same function and params
  (kernel [3, 3, I, O], bias [O]) as `nn.ConvTranspose(O, (3, 3), (2, 2), ((1, 2), (1, 2)))`
  and torch's ConvTranspose2d(k3, s2, p1, output_padding=1), computed by transposed_conv_s2.

  With `norm_relu`, ReLU(instance_norm(.)) of that, normalised before the pixel shuffle (the
  stats of a channel over the 2H x 2W output are those over its H x W x 4 phase pixels): the
  norm's passes then read plain arrays instead of shuffled ones, 15-20% faster with gradients
  at 128 -> 256 px (benchmarks/translator.py). Same function to float rounding.
  """

  features: int
  norm_relu: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", INIT, (3, 3, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    y = _transposed_conv_s2_phases(x.astype(self.dtype), kernel.astype(self.dtype))
    y = y + bias.astype(self.dtype)
    if self.norm_relu:
      y = _norm_relu_phases(y, self.features)
    return _shuffle_phases(y)


class ResidualBlock(nn.Module):
  """x + IN(conv3(pad(ReLU(IN(conv3(pad(x))))))) with reflection padding. [B,H,W,C]."""

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    y = Conv3x3(c, self.dtype, name="conv_0")(reflect_pad(x, 1))
    y = _norm_relu(y)
    y = Conv3x3(c, self.dtype, name="conv_1")(reflect_pad(y, 1))
    return x + instance_norm(y)


class Generator(nn.Module):
  """c7s1-k, d2k, d4k, R4k x blocks, u2k, uk, c7s1-out -> tanh.

  [B,H,W,in] in [-1, 1] -> [B,H,W,out_channels] in [-1, 1]; H, W divisible by 4.
  """

  out_channels: int
  filters: int = 64
  blocks: int = 9
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.shape[1] % 4 or x.shape[2] % 4:
      raise ValueError(
        f"generator input H, W must be divisible by 4, got {x.shape}; "
        f"pad (data_prep.translate pads with reflection) or crop first"
      )
    f = self.filters
    x = x.astype(self.dtype)
    # The 7x7 convs to/from 1-3 channels are computed in forms XLA:CPU runs faster (same
    # params and function): from 1 channel on row-stacked input, from 3 blocked (normalised on
    # its blocks), to 1-3 channels as row-split sums. Measured per layer in
    # benchmarks/translator.py's docstring.
    if x.shape[-1] == 1:
      conv_in = RowConv(f, 7, 0, split=False, dtype=self.dtype, name="conv_in")
      x = _norm_relu(conv_in(reflect_pad(x, 3)))
    else:
      conv_in = BlockedConv(f, 7, 1, 0, 2, norm_relu=True, dtype=self.dtype, name="conv_in")
      x = conv_in(reflect_pad(x, 3))
    for i, mult in enumerate((2, 4)):
      x = DownConv(f * mult, self.dtype, name=f"down_{i}")(x)
      x = _norm_relu(x)
    for i in range(self.blocks):
      x = ResidualBlock(self.dtype, name=f"res_{i}")(x)
    for i, mult in enumerate((2, 1)):
      x = Upsample2x(f * mult, norm_relu=True, dtype=self.dtype, name=f"up_{i}")(x)
    conv_out = RowConv(self.out_channels, 7, 0, split=True, dtype=self.dtype, name="conv_out")
    x = conv_out(reflect_pad(x, 3))
    return jnp.tanh(x.astype(jnp.float32))


class PatchDiscriminator(nn.Module):
  """PatchGAN: C64 (no norm) - C128 - C256 - C512 (stride 1) - conv to 1 logit per patch.

  With layers=3 each output logit sees a 70x70 input patch. [B,H,W,C] -> [B,h,w,1]
  (raw scores for the least-squares loss, no sigmoid).
  """

  filters: int = 64
  layers: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(self.dtype)
    # Stride-2 layers run blocked (see blocked_conv): 1.1-2.5x faster with their gradients.
    conv = lambda features, stride, name: conv_layer(
      features, 4, stride, 1, stride, self.dtype, name
    )
    x = nn.leaky_relu(conv(self.filters, 2, "conv_0")(x), 0.2)
    for i in range(1, self.layers + 1):
      stride = 2 if i < self.layers else 1
      mult = min(2**i, 8)
      x = conv(self.filters * mult, stride, f"conv_{i}")(x)
      x = nn.leaky_relu(instance_norm(x), 0.2)
    x = conv(1, 1, f"conv_{self.layers + 1}")(x)
    return x.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class CycleGAN:
  """The four networks. Param tree keys: rgb_to_ir, ir_to_rgb, disc_ir, disc_rgb."""

  rgb_to_ir: Generator
  ir_to_rgb: Generator
  disc_ir: PatchDiscriminator
  disc_rgb: PatchDiscriminator

  def init(self, rng: jax.Array, image_size: int) -> dict:
    """Params for all four networks (traced on [1, S, S, C] dummies)."""
    keys = jax.random.split(rng, 4)
    rgb = jnp.zeros((1, image_size, image_size, RGB_CHANNELS))
    ir = jnp.zeros((1, image_size, image_size, IR_CHANNELS))
    return {
      "rgb_to_ir": self.rgb_to_ir.init(keys[0], rgb)["params"],
      "ir_to_rgb": self.ir_to_rgb.init(keys[1], ir)["params"],
      "disc_ir": self.disc_ir.init(keys[2], ir)["params"],
      "disc_rgb": self.disc_rgb.init(keys[3], rgb)["params"],
    }


def build(size: Size | str, dtype: Dtype = jnp.float32) -> CycleGAN:
  """The four modules of a preset name (tiny|small|paper) or an explicit Size."""
  if isinstance(size, str):
    if size not in SIZES:
      raise ValueError(f"unknown CycleGAN size {size!r}; choose one of {', '.join(SIZES)}")
    size = SIZES[size]
  gen = lambda out: Generator(out, size.gen_filters, size.gen_blocks, dtype)
  disc = lambda: PatchDiscriminator(size.disc_filters, size.disc_layers, dtype)
  return CycleGAN(gen(IR_CHANNELS), gen(RGB_CHANNELS), disc(), disc())


def receptive_field(layers: int) -> int:
  """Input patch side seen by one PatchDiscriminator logit (70 for layers=3)."""
  rf = 1
  # Walk back from the output: final conv (k4 s1), then layers at stride 1/2.
  strides = [2] * layers + [1, 1]
  for s in reversed(strides):
    rf = (rf - 1) * s + 4
  return rf


def from_config(config) -> CycleGAN:
  """The CycleGAN of a translator run config (config.model.size, config.model.dtype)."""
  return build(config.model.size, jnp.dtype(config.model.dtype))
