"""The one mesh abstraction: a (data, fsdp, model) mesh from config, the logical-axis rules
table every model annotation goes through (with FSDP placement that falls back to another dim
and logs what it cannot place), and placement of host-local batches."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import linen as nn
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding
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

# Mesh axes every large parameter is sharded over (ZeRO-3 style) on some dim, whether or not
# the logical rules name them for one of its dims.
FSDP_AXES = ("fsdp",)

# Arrays with fewer elements than this (4 KiB in float32: LayerNorm scales and biases of
# width-sized vectors) get no fallback dim and no FSDP axes: they keep only what their
# annotation places, since gathering them costs a collective and saves next to nothing.
# Kept low on purpose: on 512 chips a ViT-B's per-chip share is ~1.3 MB, so replicating its
# 768-wide LayerNorm scales and per-head biases would add ~30% to it (2**10 gave 1.31x of
# total/#chips there, 2**9 gives under 1.2x).
MIN_SHARD_ELEMENTS = 2**9


def mesh_shape(axis_sizes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolves a {data, fsdp, model} size dict (one -1 = the rest) to a full shape.

  An optional `fsdp_max` caps fsdp; the remaining factor goes to `model` (tensor
  parallelism), so every chip still holds ~1/#chips of the params: a model whose widths
  divide by 128 but not 256 (So400m: 1152 = 2^7 * 9) runs on a 256-chip slice as
  fsdp=128 x model=2 instead of replicating over fsdp=256.
  """
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
  cap, fsdp = int(axis_sizes.get("fsdp_max", 0)), MESH_AXES.index("fsdp")
  if cap > 0 and sizes[fsdp] > cap:
    if sizes[fsdp] % cap:
      raise ValueError(f"mesh: fsdp={sizes[fsdp]} is not a multiple of fsdp_max={cap}")
    sizes[MESH_AXES.index("model")] *= sizes[fsdp] // cap
    sizes[fsdp] = cap
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


def _axes_of(entry) -> tuple[str, ...]:
  """One PartitionSpec entry (None, "fsdp" or ("data", "fsdp")) as a tuple of axis names."""
  return (entry,) if isinstance(entry, str) else tuple(entry or ())


def _entry(axes: Sequence[str]):
  return axes[0] if len(axes) == 1 else (tuple(axes) or None)


def fit_spec(
  spec: P, shape: Sequence[int], mesh: Mesh | AbstractMesh, extra_axes: Sequence[str] = ()
) -> tuple[P, tuple[str, ...]]:
  """Fits `spec` to `shape`: a mesh axis the annotated dim does not divide moves elsewhere.

  Each mesh axis of `spec` stays on its annotated dimension when the product of the axes
  kept there divides it. An axis that does not fit, and each of `extra_axes` the spec does
  not use yet, goes to the dimension with the largest per-device extent that it divides
  (other axes already on that dimension count: its extent is dim / their product). Returns
  (spec, axes that fit no dimension); those leave the array replicated over them.
  """
  dims = [list(_axes_of(e)) for e in tuple(spec) + (None,) * (len(shape) - len(spec))]
  moving = []
  for i, axes in enumerate(dims):
    kept = []
    for a in axes:
      if shape[i] % (math.prod(mesh.shape[k] for k in kept) * mesh.shape[a]) == 0:
        kept.append(a)
      else:
        moving.append(a)
    dims[i] = kept
  used = {a for axes in dims for a in axes}
  moving += [a for a in extra_axes if a not in used and a not in moving]
  unplaced = []
  for a in moving:
    local = [shape[i] // math.prod(mesh.shape[k] for k in dims[i]) for i in range(len(shape))]
    fits = [i for i in range(len(shape)) if local[i] % mesh.shape[a] == 0]
    if fits:
      # Largest per-device extent first; the earlier dimension on a tie.
      dims[max(fits, key=lambda i: (local[i], -i))].append(a)
    else:
      unplaced.append(a)
  return P(*(_entry(axes) for axes in dims)), tuple(unplaced)


def param_shardings(
  abstract_params: Any,
  mesh: Mesh | AbstractMesh,
  rules: Sequence[tuple[str, Any]] = LOGICAL_RULES,
  *,
  fsdp_axes: Sequence[str] = FSDP_AXES,
  min_shard_elements: int = MIN_SHARD_ELEMENTS,
) -> Any:
  """NamedShardings for a (boxed, from eval_shape) param tree with logical annotations.

  Annotated dims get their mesh axes through `rules` where the axes divide them. Arrays of at
  least `min_shard_elements` elements also take every `fsdp_axes` axis the rules did not
  place, and any annotated axis their dim does not divide, on their largest dim it divides
  (`fit_spec`); each one still left (partly) replicated is logged with its path, shape and
  bytes, then one warning per mesh axis sums them up. Smaller arrays keep only the placements
  their annotation gives (replicated on purpose). `mesh` may be an AbstractMesh. Returns an
  unboxed tree of shardings.
  """
  extra = tuple(a for a in fsdp_axes if mesh.shape.get(a, 1) > 1)
  arrays = []  # (path, shape, bytes, mesh axes left unplaced, large)

  def one(path, leaf):
    boxed = isinstance(leaf, nn.LogicallyPartitioned)
    value = leaf.value if boxed else leaf
    shape = tuple(value.shape)
    large = math.prod(shape) >= min_shard_elements
    spec, unplaced = fit_spec(
      logical_to_spec(leaf.names if boxed else None, rules), shape, mesh, extra if large else ()
    )
    nbytes = math.prod(shape) * np.dtype(value.dtype).itemsize
    unplaced = tuple(a for a in unplaced if mesh.shape[a] > 1)
    arrays.append((jax.tree_util.keystr(path), shape, nbytes, unplaced, large))
    return NamedSharding(mesh, spec)

  shardings = jax.tree_util.tree_map_with_path(
    one, abstract_params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
  )
  _log_replicated(arrays, mesh, min_shard_elements)
  return shardings


def _log_replicated(arrays, mesh: Mesh | AbstractMesh, min_shard_elements: int) -> None:
  """One line per large array a mesh axis fits nowhere, then one warning per such axis."""
  total = sum(a[2] for a in arrays)
  small = [a for a in arrays if a[3] and not a[4]]
  if small:
    logging.info(
      "sharding: %d arrays under %d elements (%s bytes in all) stay replicated on purpose",
      len(small),
      min_shard_elements,
      f"{sum(a[2] for a in small):,}",
    )
  left = {}  # mesh axis -> (arrays, bytes)
  for path, shape, nbytes, unplaced, large in arrays:
    if not (unplaced and large):
      continue
    logging.info(
      "sharding: %s %s (%s bytes) stays replicated over %s: no dimension is divisible by %s",
      path,
      shape,
      f"{nbytes:,}",
      "x".join(unplaced),
      "x".join(str(mesh.shape[a]) for a in unplaced),
    )
    for a in unplaced:
      count, size = left.get(a, (0, 0))
      left[a] = (count + 1, size + nbytes)
  for a, (count, nbytes) in left.items():
    logging.warning(
      "sharding: %d arrays of %d elements or more (%s bytes, %.2f%% of all parameter bytes) "
      "stay replicated over %s=%d: no dimension of theirs is divisible by it",
      count,
      min_shard_elements,
      f"{nbytes:,}",
      100 * nbytes / max(total, 1),
      a,
      mesh.shape[a],
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
