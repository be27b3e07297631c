"""Mesh construction, the logical rules table, FSDP placement and batch placement on 8 fake
devices (and abstract meshes)."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import AbstractMesh, AxisType
from jax.sharding import PartitionSpec as P

from fusionrs_jax.core import sharding


def test_mesh_shape_fills_the_minus_one_axis():
  assert sharding.mesh_shape({"data": -1, "fsdp": 2, "model": 1}, 8) == (4, 2, 1)
  assert sharding.mesh_shape({"data": 2, "fsdp": -1}, 8) == (2, 4, 1)


@pytest.mark.parametrize(
  "sizes", [{"data": -1, "fsdp": -1}, {"data": 3, "fsdp": -1}, {"data": 2, "fsdp": 2, "model": 1}]
)
def test_mesh_shape_rejects_impossible_layouts(sizes):
  with pytest.raises(ValueError, match="mesh"):
    sharding.mesh_shape(sizes, 8)


def test_make_mesh_uses_all_devices_with_auto_axes():
  mesh = sharding.make_mesh({"data": -1, "fsdp": 2, "model": 1})
  assert jax.device_count() == 8
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "model": 1}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_logical_to_spec_maps_through_rules_and_uses_each_axis_once():
  assert sharding.logical_to_spec(("embed", "mlp")) == P("fsdp", "model")
  assert sharding.logical_to_spec(("batch", "length", "embed")) == P(("data", "fsdp"), None, None)
  assert sharding.logical_to_spec(("norm",)) == P(None)
  assert sharding.logical_to_spec(None) == P()


class _Tiny(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Dense(
      16, kernel_init=nn.with_logical_partitioning(nn.initializers.normal(), ("embed", "mlp"))
    )(x)
    return nn.Dense(
      3, kernel_init=nn.with_logical_partitioning(nn.initializers.normal(), ("mlp", "norm"))
    )(x)


def test_param_shardings_follow_annotations_and_skip_indivisible_dims():
  mesh = sharding.make_mesh({"data": 1, "fsdp": 4, "model": 2})
  abstract = jax.eval_shape(_Tiny().init, jax.random.PRNGKey(0), jnp.zeros((1, 8)))
  sh = sharding.param_shardings(abstract, mesh)
  k0 = sh["params"]["Dense_0"]["kernel"]
  assert k0.spec == P("fsdp", "model")
  # Bias has no annotation -> replicated.
  assert sh["params"]["Dense_0"]["bias"].spec == P(None)
  # Dense_1 kernel [16, 3]: "mlp"->model divides 16; "norm" is replicated.
  assert sh["params"]["Dense_1"]["kernel"].spec == P("model", None)
  # An axis that divides no dimension is left off (and reported) rather than failing.
  assert sharding.fit_spec(P("fsdp"), (6,), mesh) == (P(None), ("fsdp",))


def _abstract_mesh(data, fsdp, model):
  return AbstractMesh((data, fsdp, model), sharding.MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def test_fit_spec_moves_an_indivisible_axis_to_the_largest_dim_it_divides():
  mesh = _abstract_mesh(1, 4, 2)
  assert sharding.fit_spec(P("fsdp", None, None), (6, 8, 16), mesh) == (P(None, None, "fsdp"), ())
  # Per-device extents count: dim 1 is 16 / model = 8 per device, dim 2 is 12.
  assert sharding.fit_spec(P("fsdp", "model", None), (6, 16, 12), mesh) == (
    P(None, "model", "fsdp"),
    (),
  )
  # It may join another axis on the same dim when their product divides it.
  assert sharding.fit_spec(P("fsdp", "model"), (6, 16), mesh) == (P(None, ("model", "fsdp")), ())
  # Equal extents: the earlier dim.
  assert sharding.fit_spec(P("fsdp", None, None), (6, 8, 8), mesh) == (P(None, "fsdp", None), ())
  # Placements that fit are kept as annotated, even when a larger dim would fit too.
  assert sharding.fit_spec(P("fsdp", None), (8, 64), mesh) == (P("fsdp", None), ())


def test_fit_spec_adds_extra_axes_the_spec_does_not_use():
  mesh = _abstract_mesh(1, 4, 2)
  assert sharding.fit_spec(P(None, "model"), (8, 6), mesh, ("fsdp",)) == (P("fsdp", "model"), ())
  assert sharding.fit_spec(P("fsdp"), (8, 6), mesh, ("fsdp",)) == (P("fsdp", None), ())
  assert sharding.fit_spec(P(), (3, 5), mesh, ("fsdp",)) == (P(None, None), ("fsdp",))


def _boxed(shape, names):
  return nn.LogicallyPartitioned(jax.ShapeDtypeStruct(shape, np.float32), names)


def test_param_shardings_fall_back_complete_fsdp_and_log_what_stays_replicated(caplog):
  mesh = _abstract_mesh(2, 256, 1)
  params = {
    # "embed" (1152 = 2**7 * 9) does not take 256: fsdp moves to the 4352-wide dim.
    "fits_elsewhere": _boxed((1152, 4352), ("embed", "mlp")),
    # No logical name for fsdp: a large array still gets it on its largest dim it divides.
    "unnamed_dims": _boxed((3, 512, 4), ("norm", "norm", "norm")),
    "no_annotation": jax.ShapeDtypeStruct((1024, 8), np.float32),
    # Neither 1152 nor 4304 (2**4 * 269) takes 256: replicated, and logged.
    "fits_nowhere": _boxed((1152, 4304), ("embed", "mlp")),
    # Under the size threshold: replicated on purpose, only counted.
    "small": _boxed((500,), ("embed",)),
  }
  with caplog.at_level(logging.INFO):
    sh = sharding.param_shardings(params, mesh)
  assert sh["fits_elsewhere"].spec == P(None, ("model", "fsdp"))  # model has size 1 here
  assert sh["unnamed_dims"].spec == P(None, "fsdp", None)
  assert sh["no_annotation"].spec == P("fsdp", None)
  assert sh["fits_nowhere"].spec == P(None, "model")
  assert sh["small"].spec == P(None)
  lines = [r.getMessage() for r in caplog.records]
  per_array = [m for m in lines if "stays replicated over" in m]
  assert per_array == [
    "sharding: ['fits_nowhere'] (1152, 4304) (19,832,832 bytes) stays replicated over fsdp: "
    "no dimension is divisible by 256"
  ]
  assert any("1 arrays under 512 elements (2,000 bytes in all)" in m for m in lines)
  summary = [r for r in caplog.records if r.levelno == logging.WARNING]
  assert len(summary) == 1 and "fsdp=256" in summary[0].getMessage()


def test_param_shardings_logs_nothing_when_everything_fits(caplog):
  params = {"w": _boxed((1024, 4096), ("embed", "mlp")), "b": _boxed((4096,), ("mlp",))}
  with caplog.at_level(logging.INFO):
    sh = sharding.param_shardings(params, _abstract_mesh(1, 256, 2))
  assert sh["w"].spec == P("fsdp", "model") and sh["b"].spec == P(("model", "fsdp"))
  assert not [r for r in caplog.records if "sharding:" in r.getMessage()]


def test_place_batch_builds_global_arrays_split_over_batch_shards():
  mesh = sharding.make_mesh({"data": -1, "fsdp": 2})
  batch = {
    "rgb": np.arange(16 * 3, dtype=np.float32).reshape(16, 3),
    "ids": np.array([f"id{i}" for i in range(16)]),
  }
  placed = sharding.place_batch(batch, mesh)
  assert set(placed) == {"rgb"}  # strings stay on the host.
  np.testing.assert_array_equal(np.asarray(placed["rgb"]), batch["rgb"])
  shard_rows = {s.data.shape[0] for s in placed["rgb"].addressable_shards}
  assert shard_rows == {2}  # 16 rows over 8 batch shards.


@pytest.mark.parametrize(
  "devices,want", [(256, (1, 128, 2)), (512, (1, 128, 4)), (128, (1, 128, 1)), (64, (1, 64, 1))]
)
def test_fsdp_max_moves_the_rest_of_fsdp_to_model(devices, want):
  axes = {"data": 1, "fsdp": -1, "model": 1, "fsdp_max": 128}
  assert sharding.mesh_shape(axes, devices) == want


def test_fsdp_max_must_divide_fsdp():
  with pytest.raises(ValueError, match="fsdp=96 is not a multiple of fsdp_max=64"):
    sharding.mesh_shape({"data": 1, "fsdp": -1, "model": 1, "fsdp_max": 64}, 96)
