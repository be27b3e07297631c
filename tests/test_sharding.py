"""Mesh construction, the logical rules table and batch placement on 8 fake devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
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
  # An axis that does not divide the dimension is dropped rather than failing.
  assert sharding._fit_spec(P("fsdp"), (6,), mesh) == P(None)


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
