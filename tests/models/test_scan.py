"""Layer stacks: named remat policies, and the scanned <-> per-layer params converter (exact round
trips on the full SigLIP and Captioner trees, optimizer states, abstract shapes, bad trees)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fusionrs_jax.core import sharding
from fusionrs_jax.models import captioner, gemma, scan, siglip


def _siglip(**kw):
  return siglip.SigLIP(**siglip.siglip_preset("tiny"), ir_tower="separate", ir_channels=1, **kw)


def _captioner(**kw):
  return captioner.captioner_from_presets(
    siglip.siglip_preset("tiny"), gemma.gemma_preset("tiny"), 48, **kw
  )


def _random_params(model, inputs_fn, seed):
  """The model's params tree (structure, shapes, dtypes) filled with random values; nothing
  is compiled."""
  init = lambda: nn.unbox(model.init(jax.random.key(0), **inputs_fn(model)))["params"]
  leaves, treedef = jax.tree.flatten(jax.eval_shape(init))
  rng = np.random.default_rng(seed)
  return treedef.unflatten([jnp.asarray(rng.standard_normal(x.shape), x.dtype) for x in leaves])


@pytest.fixture(scope="module")
def trees():
  """(unscanned, scanned) param trees of the tiny SigLIP (separate IR tower) and Captioner."""
  return {
    "siglip": (
      _random_params(_siglip(), siglip.dummy_inputs, 0),
      _random_params(_siglip(scan_layers=True), siglip.dummy_inputs, 1),
    ),
    "captioner": (
      _random_params(_captioner(), captioner.dummy_inputs, 2),
      _random_params(_captioner(scan_layers=True), captioner.dummy_inputs, 3),
    ),
  }


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_policy_names_are_the_checkpoint_policies_not_their_factories():
  names = scan.policy_names()
  for name in ("nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable"):
    assert name in names
    assert scan.checkpoint_policy(name) is getattr(jax.checkpoint_policies, name)
  assert "save_only_these_names" not in names  # needs arguments: not a policy by name
  with pytest.raises(ValueError, match="unknown remat policy 'dots'.*dots_saveable"):
    scan.checkpoint_policy("dots")


@pytest.mark.parametrize("name", ["siglip", "captioner"])
def test_scan_params_gives_the_scanned_models_layout(trees, name):
  flat, scanned_init = trees[name]
  converted = scan.scan_params(flat)
  shapes = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)
  assert shapes(converted) == shapes(scanned_init)


def test_stacked_key_names(trees):
  flat, scanned = trees["siglip"]
  for tower in ("vision_model", "ir_vision_model", "text_model"):
    assert set(flat[tower]["encoder"]) == {"layers_0", "layers_1"}
    assert set(scanned[tower]["encoder"]) == {"layers"}
    kernel = scanned[tower]["encoder"]["layers"]["self_attn"]["q_proj"]["kernel"]
    np.testing.assert_array_equal(
      scan.scan_params(flat)[tower]["encoder"]["layers"]["self_attn"]["q_proj"]["kernel"][1],
      flat[tower]["encoder"]["layers_1"]["self_attn"]["q_proj"]["kernel"],
    )
    assert kernel.shape == (2, 32, 2, 16)  # [depth, D, H, Dh]
  flat, scanned = trees["captioner"]
  assert set(scanned["img"]["encoder"]) == {"layers"}
  assert set(scanned["llm"]) == {"embedder", "final_norm", "layers"}
  assert scanned["llm"]["layers"]["attn"]["kv_einsum"].shape == (2, 2, 1, 32, 16)
  assert {"layers_0", "layers_1"} <= set(flat["llm"])


@pytest.mark.parametrize("name", ["siglip", "captioner"])
def test_round_trips_are_exact(trees, name):
  flat, scanned = trees[name]
  _assert_trees_equal(scan.unscan_params(scan.scan_params(flat)), flat)
  _assert_trees_equal(scan.scan_params(scan.unscan_params(scanned)), scanned)
  # Already in the target layout: unchanged.
  _assert_trees_equal(scan.scan_params(scanned), scanned)
  _assert_trees_equal(scan.unscan_params(flat), flat)


def test_converter_keeps_numpy_and_walks_variables_and_optimizer_states(trees):
  flat, _ = trees["captioner"]
  as_numpy = jax.tree.map(np.asarray, {"params": flat})
  stacked = scan.scan_params(as_numpy)
  leaf = stacked["params"]["llm"]["layers"]["mlp"]["linear"]
  assert isinstance(leaf, np.ndarray) and leaf.shape == (2, 64, 32)
  # Adam moments mirror the params inside namedtuples: they convert too.
  state = optax.adam(1e-3).init(flat)
  converted = scan.scan_params(state)
  assert type(converted[0]) is type(state[0])
  assert converted[0].mu["llm"]["layers"]["mlp"]["linear"].shape == (2, 64, 32)
  _assert_trees_equal(scan.unscan_params(converted), state)
  # Abstract trees (jax.eval_shape) convert without materialising anything.
  abstract = jax.eval_shape(scan.scan_params, flat)
  assert abstract["llm"]["layers"]["attn"]["q_einsum"].shape == (2, 2, 32, 16)


def test_converter_rejects_gaps_and_mixed_layouts():
  x = np.zeros((2, 3), np.float32)
  with pytest.raises(ValueError, match="enc: layer keys .* are not layers_0..N-1"):
    scan.scan_params({"enc": {"layers_0": {"w": x}, "layers_2": {"w": x}}})
  with pytest.raises(ValueError, match="differ in shape"):
    scan.scan_params({"layers_0": {"w": x}, "layers_1": {"w": x[:1]}})
  with pytest.raises(ValueError, match="both 'layers' and per-layer"):
    scan.scan_params({"layers": {"w": x}, "layers_0": {"w": x}})
  with pytest.raises(ValueError, match="disagree on the leading"):
    scan.unscan_params({"layers": {"w": x, "b": np.zeros((3,))}})
  # Other keys and leaves are left alone.
  tree = {"layers_x": x, "norm": {"scale": x}}
  assert scan.scan_params(tree) == tree and scan.unscan_params(tree) == tree


def test_scanned_params_carry_the_layers_axis_and_shard_on_8_devices():
  model = _siglip(scan_layers=True, remat=True)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "model": 2})
  init = lambda r: model.init(r, **siglip.dummy_inputs(model))
  abstract = jax.eval_shape(init, jax.random.key(0))
  shardings = sharding.param_shardings(abstract, mesh)
  fc1 = ("params", "vision_model", "encoder", "layers", "mlp", "fc1", "kernel")
  get = lambda tree: functools.reduce(lambda t, k: t[k], fc1, tree)
  assert get(abstract).names == ("layers", "embed", "mlp")
  # The stacked dim stays unsharded; the per-layer dims shard as they do unscanned.
  assert get(shardings).spec == jax.sharding.PartitionSpec(None, "fsdp", "model")
  params = jax.jit(lambda r: nn.unbox(init(r)), out_shardings=shardings)(jax.random.key(0))
  inputs = siglip.dummy_inputs(model, batch_size=4)
  ref = jax.jit(model.apply)(params, **inputs)
  # Activation constraints inside the scanned, rematted layers resolve under the mesh rules.
  with sharding.activate(mesh):
    placed = {
      k: jax.device_put(v, sharding.batch_sharding(mesh, v.ndim)) for k, v in inputs.items()
    }
    out = jax.jit(model.apply)(params, **placed)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), out, ref)
