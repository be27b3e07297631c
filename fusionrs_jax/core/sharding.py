"""The one mesh abstraction: a (data, fsdp, model) mesh from config, the logical-axis rules
table every model annotation goes through, and placement of host-local batches."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "model")

# Logical axis name -> mesh axes. Models only ever name logical axes; this table is the
# single place that decides how they land on devices. Unlisted names are replicated.
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
  ("batch", ("data", "fsdp")),
  ("embed", "fsdp"),
  ("mlp", "model"),
  ("heads", "model"),
  ("vocab", "model"),
  ("kv", None),
  ("length", None),
  ("patch", None),
  ("channels", None),
  ("norm", None),
)


def mesh_shape(axis_sizes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolves a {data, fsdp, model} size dict (one -1 = the rest) to a full shape."""
  sizes = [int(axis_sizes.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(
        f"mesh: {num_devices} devices do not divide by the fixed axes {dict(zip(MESH_AXES, sizes))}"
      )
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(
      f"mesh: axes {dict(zip(MESH_AXES, sizes))} need {math.prod(sizes)} "
      f"devices but {num_devices} are available"
    )
  return tuple(sizes)


def make_mesh(axis_sizes: Mapping[str, int], devices: Sequence[Any] | None = None) -> Mesh:
  """Mesh over all (or the given) devices with Auto axis types.

  Auto axes keep `with_sharding_constraint` and logical annotations working (jax's
  default for make_mesh is Explicit).
  """
  devices = list(devices) if devices is not None else jax.devices()
  shape = mesh_shape(axis_sizes, len(devices))
  return jax.make_mesh(
    shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
  )


def logical_to_spec(
  names: Sequence[str | None] | None, rules: Sequence[tuple[str, Any]] = LOGICAL_RULES
) -> P:
  """Logical axis names of one array -> PartitionSpec through the rules table.

  A mesh axis is used at most once per array (the first dimension asking wins).
  """
  if names is None:
    return P()
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for name in names:
    target = table.get(name) if name is not None else None
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    axes = tuple(a for a in axes if a not in used)
    used.update(axes)
    spec.append(axes[0] if len(axes) == 1 else (axes or None))
  return P(*spec)


def _fit_spec(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
  """Drops mesh axes from dimensions they do not divide (tiny models on big meshes)."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    keep = []
    for a in names:
      if dim % (math.prod(mesh.shape[k] for k in keep) * mesh.shape[a]) == 0:
        keep.append(a)
    fitted.append(keep[0] if len(keep) == 1 else (tuple(keep) or None))
  return P(*fitted)


def param_shardings(
  abstract_params: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] = LOGICAL_RULES
) -> Any:
  """NamedShardings for a (boxed, from eval_shape) param tree with logical annotations.

  Arrays without annotations are replicated. Returns an unboxed tree of shardings.
  """

  def one(leaf):
    names = leaf.names if isinstance(leaf, nn.LogicallyPartitioned) else None
    value = leaf.value if isinstance(leaf, nn.LogicallyPartitioned) else leaf
    spec = _fit_spec(logical_to_spec(names, rules), value.shape, mesh)
    return NamedSharding(mesh, spec)

  return jax.tree.map(
    one, abstract_params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
  )


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  """Leading (batch) dimension over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def num_batch_shards(mesh: Mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]


def place_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local batch -> global arrays sharded over (data, fsdp) on the batch dim.

  Each process passes only its own rows; jax.make_array_from_process_local_data
  stitches them into one global array, so this works unchanged on many hosts.
  """
  out = {}
  for key, value in batch.items():
    value = np.asarray(value)
    if value.dtype.kind in "OUS":  # strings (ids) stay on the host.
      continue
    out[key] = jax.make_array_from_process_local_data(batch_sharding(mesh, value.ndim), value)
  return out


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Sequence[tuple[str, Any]] | None = LOGICAL_RULES):
  """Mesh + logical rules in scope, so activation annotations in models
  (nn.with_logical_constraint) become sharding constraints when traced here."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules or ()):
    yield mesh
