"""CycleGAN modules: shapes, output range, full convolutionality, the published layout."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fusionrs_jax.models import cyclegan


@pytest.fixture(scope="module")
def tiny():
  model = cyclegan.build("tiny")
  return model, model.init(jax.random.PRNGKey(0), 32)


def test_generators_map_between_channel_counts_in_tanh_range(tiny):
  model, params = tiny
  rgb = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 32, 3), minval=-1, maxval=1)
  ir = model.rgb_to_ir.apply({"params": params["rgb_to_ir"]}, rgb)
  back = model.ir_to_rgb.apply({"params": params["ir_to_rgb"]}, ir)
  assert ir.shape == (2, 32, 32, 1) and back.shape == (2, 32, 32, 3)
  assert float(jnp.abs(ir).max()) <= 1.0 and float(jnp.abs(back).max()) <= 1.0


def test_generator_is_fully_convolutional_over_non_square_sizes(tiny):
  model, params = tiny
  rgb = jnp.zeros((1, 20, 44, 3))
  assert model.rgb_to_ir.apply({"params": params["rgb_to_ir"]}, rgb).shape == (1, 20, 44, 1)
  with pytest.raises(ValueError, match="divisible by 4"):
    model.rgb_to_ir.apply({"params": params["rgb_to_ir"]}, jnp.zeros((1, 30, 32, 3)))


def test_discriminator_outputs_one_score_per_patch(tiny):
  model, params = tiny
  out = model.disc_ir.apply({"params": params["disc_ir"]}, jnp.zeros((3, 32, 32, 1)))
  # tiny: 2 stride-2 layers, then two k4 s1 p1 convs each shrink by 1.
  assert out.shape == (3, 6, 6, 1)


def test_paper_preset_matches_published_architecture():
  model = cyclegan.build("paper")
  params = jax.eval_shape(lambda r: model.init(r, 256), jax.random.PRNGKey(0))
  gen = params["rgb_to_ir"]
  assert len([k for k in gen if k.startswith("res_")]) == 9
  assert gen["conv_in"]["kernel"].shape == (7, 7, 3, 64)
  assert gen["down_1"]["kernel"].shape == (3, 3, 128, 256)
  assert gen["conv_out"]["kernel"].shape == (7, 7, 64, 1)
  disc = params["disc_ir"]
  assert [disc[f"conv_{i}"]["kernel"].shape[-1] for i in range(5)] == [64, 128, 256, 512, 1]
  assert cyclegan.receptive_field(3) == 70
  out = jax.eval_shape(
    lambda p, x: model.disc_ir.apply({"params": p}, x),
    disc,
    jax.ShapeDtypeStruct((1, 256, 256, 1), jnp.float32),
  )
  assert out.shape == (1, 30, 30, 1)  # the published 30x30 patch map at 256 px


def test_instance_norm_normalises_each_sample_and_channel():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3)) * 5 + 2
  y = np.asarray(cyclegan.instance_norm(x))
  np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(y.std(axis=(1, 2)), 1, atol=1e-3)


def test_instance_norm_gradient_matches_autodiff_of_the_formula():
  """The custom VJP equals jax.grad of the plain mean/variance formula, input and output
  gradients, in float32 and bfloat16."""

  def plain(x):
    x32 = x.astype(jnp.float32)
    mean = x32.mean(axis=(1, 2), keepdims=True)
    var = jnp.square(x32 - mean).mean(axis=(1, 2), keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + cyclegan.NORM_EPS)).astype(x.dtype)

  kx, kw = jax.random.split(jax.random.PRNGKey(3))
  x = jax.random.normal(kx, (3, 9, 7, 5)) * 3 + 1
  w = jax.random.normal(kw, x.shape)
  # A loss that weights every element differently, so all terms of the VJP matter.
  loss = lambda f: lambda x: jnp.sum(jnp.sin(f(x).astype(jnp.float32)) * w)
  np.testing.assert_allclose(cyclegan.instance_norm(x), plain(x), rtol=1e-6, atol=1e-6)
  g, g_ref = jax.grad(loss(cyclegan.instance_norm))(x), jax.grad(loss(plain))(x)
  assert float(jnp.max(jnp.abs(g_ref))) > 0.1
  np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-6)
  xb = x.astype(jnp.bfloat16)
  gb = jax.grad(loss(cyclegan.instance_norm))(xb)
  assert gb.dtype == jnp.bfloat16
  np.testing.assert_allclose(
    np.asarray(gb, np.float32), np.asarray(jax.grad(loss(plain))(xb), np.float32), atol=2e-2
  )


def _assert_same_function(ours, ref, params, x, grad_atol):
  """Same outputs and same gradients (params and input) of sum(sin(module(x)))."""
  y, y_ref = ours.apply(params, x), ref.apply(params, x)
  assert y.shape == y_ref.shape
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))
  g = jax.grad(loss(ours), argnums=(0, 1))(params, x)
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=grad_atol)


def _assert_same_params_and_function(ours, ref, x, grad_atol):
  """A conv module that replaces `ref` (an nn.Conv): the same params at init (checkpoints and
  the torch export are unchanged), then with a non-zero bias the same function."""
  params = ours.init(jax.random.key(2), x)
  for a, b in zip(
    jax.tree.leaves(params), jax.tree.leaves(ref.init(jax.random.key(2), x)), strict=True
  ):
    np.testing.assert_array_equal(a, b)
  bias = jax.random.normal(jax.random.key(3), params["params"]["bias"].shape)
  _assert_same_function(ours, ref, {"params": {**params["params"], "bias": bias}}, x, grad_atol)


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (1, 4, 4, 6)])
def test_subpixel_upsample_equals_flax_conv_transpose_values_and_gradients(shape):
  """The generator's up_i layers: same params, outputs and gradients as the dilated-input
  nn.ConvTranspose they replace (which the torch export's ConvTranspose2d also matches)."""
  x = jax.random.normal(jax.random.key(1), shape)
  ours = cyclegan.Upsample2x(4)
  ref = nn.ConvTranspose(4, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)))
  params = ours.init(jax.random.key(2), x)
  bias = jax.random.normal(jax.random.key(3), (4,))
  params = {"params": {**params["params"], "bias": bias}}
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ref.init(jax.random.key(2), x))
  assert ours.apply(params, x).shape == (shape[0], 2 * shape[1], 2 * shape[2], 4)
  _assert_same_function(ours, ref, params, x, grad_atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (1, 4, 4, 6)])
def test_upsample_norm_relu_equals_norm_after_shuffle(shape):
  """norm_relu normalises before the pixel shuffle: the same values and gradients as
  ReLU(instance_norm(.)) of the shuffled output (what the published generator computes)."""
  x = jax.random.normal(jax.random.key(1), shape)
  ours = cyclegan.Upsample2x(4, norm_relu=True)
  kernel = 0.3 * jax.random.normal(jax.random.key(2), (3, 3, shape[-1], 4))
  params = {"params": {"kernel": kernel, "bias": jax.random.normal(jax.random.key(3), (4,))}}
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ours.init(jax.random.key(2), x))

  class Ref(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.relu(cyclegan.instance_norm(cyclegan.Upsample2x(4, name="inner")(x)))

  ref_params = {"params": {"inner": params["params"]}}
  y, y_ref = ours.apply(params, x), Ref().apply(ref_params, x)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  assert float(jnp.std(y_ref)) > 0.1  # not a degenerate all-zero output
  loss = lambda f, p: jnp.sum(jnp.sin(3 * f(p, x)) * jnp.arange(4))
  g = jax.grad(lambda p: loss(ours.apply, p))(params)["params"]
  g_ref = jax.grad(lambda p: loss(Ref().apply, p))(ref_params)["params"]["inner"]
  np.testing.assert_allclose(g["kernel"], g_ref["kernel"], rtol=1e-4, atol=1e-5)
  # The bias cancels under the norm: both gradients are zero up to rounding.
  scale = float(jnp.abs(g_ref["kernel"]).max())
  assert scale > 1.0
  assert float(jnp.abs(g["bias"]).max()) < 1e-5 * scale
  assert float(jnp.abs(g_ref["bias"]).max()) < 1e-5 * scale
  gx = jax.grad(lambda x: jnp.sum(jnp.sin(3 * ours.apply(params, x))))(x)
  gx_ref = jax.grad(lambda x: jnp.sum(jnp.sin(3 * Ref().apply(ref_params, x))))(x)
  np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (1, 4, 10, 5), (2, 2, 2, 1)])
def test_down_conv_equals_flax_strided_conv_values_and_gradients(shape):
  """The generator's down_i: nn.Conv(3x3, stride 2, padding 1)'s params, values and
  gradients, with the input gradient computed as a sub-pixel transposed conv."""
  x = jax.random.normal(jax.random.key(1), shape)
  ref = nn.Conv(4, (3, 3), (2, 2), ((1, 1), (1, 1)), kernel_init=cyclegan.INIT)
  _assert_same_params_and_function(cyclegan.DownConv(4), ref, x, grad_atol=1e-5)


def test_down_conv_rejects_odd_sizes():
  with pytest.raises(ValueError, match="even"):
    cyclegan.DownConv(4).init(jax.random.key(0), jnp.zeros((1, 5, 4, 3)))


@pytest.mark.parametrize(
  "shape,grad_atol",
  # (1, 34, 35, 128): the Winograd kernel gradient (from WINOGRAD_KERNEL_GRAD_MIN_CHANNELS),
  # its entries sums of ~1000 terms of size ~1 (measured worst difference 5e-4).
  [
    ((2, 34, 34, 4), 1e-5),
    ((1, 35, 37, 3), 1e-5),
    ((1, 38, 34, 8), 1e-5),
    ((1, 34, 35, 128), 1e-3),
  ],
)
def test_conv3x3_equals_flax_conv_values_and_gradients(shape, grad_atol):
  """The residual blocks' conv_j: nn.Conv(3x3, VALID)'s params, values and gradients, with
  forward and input gradient as Winograd F(4x4, 3x3) (partial output tiles included)."""
  x = jax.random.normal(jax.random.key(1), shape)
  ref = nn.Conv(5, (3, 3), padding="VALID", kernel_init=cyclegan.INIT)
  _assert_same_params_and_function(cyclegan.Conv3x3(5), ref, x, grad_atol)


def test_winograd_conv_rounding_is_close_to_the_direct_conv():
  """Against an exact (float64) 3x3 conv, Winograd's float32 error stays a few times XLA's
  direct float32 conv error and a few 1e-6 of the output, on unit-scale data, 64 channels."""
  x = np.asarray(jax.random.normal(jax.random.key(1), (2, 18, 18, 64)))
  k = np.asarray(jax.random.normal(jax.random.key(2), (3, 3, 64, 32))) / 24
  exact = sum(
    np.einsum("bhwi,io->bhwo", x[:, i : i + 16, j : j + 16].astype(np.float64), k[i, j])
    for i in range(3)
    for j in range(3)
  )
  err = lambda y: np.sqrt(np.mean((np.asarray(y, np.float64) - exact) ** 2))
  direct = err(cyclegan._conv_valid(jnp.asarray(x), jnp.asarray(k)))
  winograd = err(cyclegan.winograd_conv3x3(jnp.asarray(x), jnp.asarray(k)))
  # Measured: 1.7e-6 vs 3.1e-7 of the output's rms (the transforms' extra roundings).
  assert direct > 0 and winograd < 8 * direct, (winograd, direct)
  assert winograd < 3e-6 * np.sqrt(np.mean(exact**2))


@pytest.mark.parametrize("shape", [(2, 10, 12, 3, 5), (1, 9, 7, 4, 2), (1, 3, 3, 2, 2)])
def test_winograd_kernel_gradient_equals_the_direct_one(shape):
  """F(3x3, 4x4) kernel gradient = XLA's gradient of the direct conv (partial tiles too)."""
  b, h, w, i, o = shape
  x = jax.random.normal(jax.random.key(1), (b, h, w, i))
  g = jax.random.normal(jax.random.key(2), (b, h - 2, w - 2, o))
  kernel = jnp.zeros((3, 3, i, o))
  ref = jax.vjp(lambda k: cyclegan._conv_valid(x, k), kernel)[1](g)[0]
  ours = cyclegan.winograd_conv3x3_kernel_grad(x, g)
  assert ours.shape == (3, 3, i, o)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5 * float(jnp.abs(ref).max()))


def test_conv3x3_uses_the_direct_conv_below_float32():
  """bfloat16 layers skip Winograd (its rounding is too loose there): same as nn.Conv."""
  x = jax.random.normal(jax.random.key(1), (1, 10, 10, 4)).astype(jnp.bfloat16)
  ours = cyclegan.Conv3x3(4, dtype=jnp.bfloat16)
  ref = nn.Conv(4, (3, 3), padding="VALID", kernel_init=cyclegan.INIT, dtype=jnp.bfloat16)
  params = ours.init(jax.random.key(2), x)
  y, y_ref = ours.apply(params, x), ref.apply(params, x)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(y_ref, np.float32))


def test_conv3x3_below_the_winograd_size_is_the_direct_conv():
  """Maps under WINOGRAD_MIN_PIXELS output pixels compute nn.Conv bit for bit."""
  x = jax.random.normal(jax.random.key(1), (2, 18, 18, 8))  # 16 x 16 outputs
  ours = cyclegan.Conv3x3(8)
  ref = nn.Conv(8, (3, 3), padding="VALID", kernel_init=cyclegan.INIT)
  params = ours.init(jax.random.key(2), x)
  np.testing.assert_array_equal(ours.apply(params, x), ref.apply(params, x))


def test_direct_convs_traces_the_direct_conv():
  """Inside direct_convs() Conv3x3 computes nn.Conv bit for bit (Winograd does not)."""
  x = jax.random.normal(jax.random.key(1), (1, 34, 34, 8))
  ours = cyclegan.Conv3x3(8)
  ref = nn.Conv(8, (3, 3), padding="VALID", kernel_init=cyclegan.INIT)
  params = ours.init(jax.random.key(2), x)
  with cyclegan.direct_convs():
    np.testing.assert_array_equal(ours.apply(params, x), ref.apply(params, x))
  assert not np.array_equal(ours.apply(params, x), ref.apply(params, x))


@pytest.mark.parametrize(
  # (input shape, kernel, stride, block, zero padding)
  "shape,kernel,stride,block,pad",
  [
    ((2, 14, 14, 3), 7, 1, 2, 0),  # conv_in
    ((1, 13, 11, 5), 7, 1, 2, 0),  # odd sizes: output blocks cropped
    ((2, 14, 14, 5), 7, 1, 4, 0),
    ((2, 10, 10, 2), 3, 1, 2, 1),
    ((2, 16, 16, 3), 4, 2, 2, 1),  # PatchGAN conv_0
    ((1, 9, 7, 4), 4, 2, 2, 1),
    ((2, 12, 12, 4), 3, 2, 2, 1),
  ],
)
def test_blocked_conv_equals_flax_conv_values_and_gradients(shape, kernel, stride, block, pad):
  """The generator's conv_in/conv_out and the PatchGAN's stride-2 layers: same params,
  outputs and gradients (input and kernel) as the nn.Conv they replace."""
  x = jax.random.normal(jax.random.key(1), shape)
  ours = cyclegan.BlockedConv(6, kernel, stride, pad, block)
  ref = nn.Conv(
    6, (kernel, kernel), (stride, stride), ((pad, pad), (pad, pad)), kernel_init=cyclegan.INIT
  )
  _assert_same_params_and_function(ours, ref, x, grad_atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 14, 14, 3), (1, 13, 11, 2)])  # whole / partial blocks
def test_blocked_conv_norm_relu_equals_norm_after_conv(shape):
  """The RGB generator's conv_in normalises on its blocks: the same values and gradients as
  ReLU(instance_norm(.)) of the plain conv."""
  x = jax.random.normal(jax.random.key(1), shape)
  ours = cyclegan.BlockedConv(4, 7, 1, 0, 2, norm_relu=True)
  kernel = 0.2 * jax.random.normal(jax.random.key(2), (7, 7, shape[-1], 4))
  params = {"params": {"kernel": kernel, "bias": jax.random.normal(jax.random.key(3), (4,))}}
  ref = nn.Conv(4, (7, 7), padding="VALID")
  ref_fn = lambda p, x: nn.relu(cyclegan.instance_norm(ref.apply(p, x)))
  y, y_ref = ours.apply(params, x), ref_fn(params, x)
  assert y.shape == (shape[0], shape[1] - 6, shape[2] - 6, 4)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda p, x: jnp.sum(jnp.sin(3 * f(p, x)) * jnp.arange(4))
  (g, gx), (g_ref, gx_ref) = (
    jax.grad(loss(f), argnums=(0, 1))(params, x) for f in (ours.apply, ref_fn)
  )
  scale = float(jnp.abs(g_ref["params"]["kernel"]).max())
  np.testing.assert_allclose(g["params"]["kernel"], g_ref["params"]["kernel"], atol=1e-5 * scale)
  np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
  # (input shape, kernel, features, zero padding, split)
  "shape,kernel,features,pad,split",
  [
    ((2, 14, 14, 16), 7, 1, 0, True),  # the IR generator's conv_out
    ((2, 14, 14, 16), 7, 3, 0, True),  # the RGB generator's conv_out
    ((1, 13, 9, 4), 3, 2, 1, True),  # odd sizes, padding
    ((2, 14, 14, 1), 7, 6, 0, False),  # the IR generator's conv_in
    ((1, 9, 13, 3), 5, 4, 2, False),
  ],
)
def test_row_conv_equals_flax_conv_values_and_gradients(shape, kernel, features, pad, split):
  """The generator's conv_in (1 channel) and conv_out: same init, params, outputs and
  gradients (input and kernel) as the nn.Conv they replace."""
  x = jax.random.normal(jax.random.key(1), shape)
  ours = cyclegan.RowConv(features, kernel, pad, split)
  ref = nn.Conv(
    features, (kernel, kernel), padding=((pad, pad), (pad, pad)), kernel_init=cyclegan.INIT
  )
  params = ours.init(jax.random.key(2), x)
  for a, b in zip(
    jax.tree.leaves(params), jax.tree.leaves(ref.init(jax.random.key(2), x)), strict=True
  ):
    np.testing.assert_array_equal(a, b)
  bias = jax.random.normal(jax.random.key(3), (features,))
  params = {"params": {**params["params"], "bias": bias}}
  _assert_same_function(ours, ref, params, x, grad_atol=1e-4)


def test_space_to_depth_round_trips():
  x = jax.random.normal(jax.random.key(0), (2, 6, 4, 3))
  s = cyclegan.space_to_depth(x, 2)
  assert s.shape == (2, 3, 2, 12)
  np.testing.assert_array_equal(s[0, 1, 0, 3:6], x[0, 2, 1])  # block (1, 0), pixel (0, 1)
  np.testing.assert_array_equal(cyclegan.depth_to_space(s, 2), x)
