"""Transformer layer stacks the way big_vision and MaxText build them for pods: remat with a named
`jax.checkpoint_policies` policy, optional `nn.scan` over the layers, and the converter between
the two parameter layouts.

Unscanned, layer i's params live under `layers_{i}` (the names export and the public
checkpoints use); scanned, one `layers` subtree holds them stacked on a leading [depth] axis whose
logical axis name is `STACK_AXIS`. `scan_params` / `unscan_params` convert either way, exactly.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Param key of a scanned stack; per-layer keys are f"{STACK}_{i}".
STACK = "layers"
# Logical axis name of the stacked layer dim (unlisted in the sharding rules: replicated).
STACK_AXIS = "layers"
DEFAULT_POLICY = "nothing_saveable"


class LayerStack(nn.Module):
  """How a transformer stack is built (remat, dtype, scan), shared by every tower and decoder.

  The fields are keyword-only so that a subclass keeps its own positional fields first.
  """

  remat: bool = dataclasses.field(default=False, kw_only=True)
  dtype: Any = dataclasses.field(default=jnp.float32, kw_only=True)
  # A `jax.checkpoint_policies` name: what remat keeps from the forward pass.
  remat_policy: str = dataclasses.field(default=DEFAULT_POLICY, kw_only=True)
  # nn.scan over the layers: params stacked under `layers` with a leading [depth] axis.
  scan_layers: bool = dataclasses.field(default=False, kw_only=True)

  def stack_options(self) -> dict[str, Any]:
    """The four fields as keyword arguments for an inner stack."""
    return {
      "remat": self.remat,
      "dtype": self.dtype,
      "remat_policy": self.remat_policy,
      "scan_layers": self.scan_layers,
    }


def policy_names() -> tuple[str, ...]:
  """Names in `jax.checkpoint_policies` that are policies themselves (not factories such as
  save_only_these_names, which build a policy from arguments)."""
  names = []
  for name in dir(jax.checkpoint_policies):
    fn = getattr(jax.checkpoint_policies, name)
    if name.startswith("_") or not callable(fn):
      continue
    # A policy is called as policy(prim, *args, **params); factories take no **kwargs.
    kinds = {p.kind for p in inspect.signature(fn).parameters.values()}
    if inspect.Parameter.VAR_KEYWORD in kinds:
      names.append(name)
  return tuple(sorted(names))


def checkpoint_policy(name: str) -> Callable[..., bool]:
  """`jax.checkpoint_policies.<name>`; ValueError naming the valid ones for anything else."""
  valid = policy_names()
  if name not in valid:
    raise ValueError(
      f"unknown remat policy {name!r}: model.remat_policy must name one of "
      f"jax.checkpoint_policies' policies: {', '.join(valid)}"
    )
  return getattr(jax.checkpoint_policies, name)


def layer_class(layer_cls, remat: bool, policy: str, scanned: bool = False):
  """`layer_cls`, or `nn.remat` of it with the named policy when `remat` is on.

  The policy name is validated even without remat, so a misspelt config fails at once.
  Inside `nn.scan` the loop already keeps XLA from merging the recomputation back into the
  forward pass, so prevent_cse=False there (as jax's docs and big_vision do) drops barriers
  that would only cost speed.
  """
  policy_fn = checkpoint_policy(policy)
  if not remat:
    return layer_cls
  return nn.remat(layer_cls, policy=policy_fn, prevent_cse=not scanned)


def scan_over_layers(target, depth: int, in_axes: Any = ()):
  """`nn.scan` of a layer class (or of a fn(layer, carry, *xs)) over `depth` layers.

  The body maps (carry, *xs) -> (carry, ys); params get a leading [depth] axis named
  `STACK_AXIS` and independent init rngs per layer. `in_axes`: one entry per xs argument
  (0 = sliced per layer, nn.broadcast = the same for every layer).
  """
  return nn.scan(
    target,
    variable_axes={"params": 0},
    split_rngs={"params": True},
    in_axes=in_axes,
    length=depth,
    metadata_params={nn.PARTITION_NAME: STACK_AXIS},
  )


# ---------------------------------------------------------------------------------------------
# Params converter.
# ---------------------------------------------------------------------------------------------


def _layer_index(key: str, name: str) -> int | None:
  m = re.fullmatch(rf"{re.escape(name)}_(\d+)", key) if isinstance(key, str) else None
  return int(m.group(1)) if m else None


def _is_box(x) -> bool:
  return isinstance(x, nn.Partitioned)


def _stack(layers: list, where: str):
  """Per-layer trees (same structure and shapes) -> one tree with a leading [depth] axis."""
  structures = {jax.tree.structure(t, is_leaf=_is_box) for t in layers}
  if len(structures) != 1:
    raise ValueError(f"{where}: the per-layer param trees differ in structure")

  def stack(*xs):
    if _is_box(xs[0]):  # logical names (flax boxes) gain the stacked axis in front
      if len({x.names for x in xs}) != 1:
        raise ValueError(f"{where}: per-layer arrays differ in their logical axis names")
      return xs[0].replace(value=stack(*(x.value for x in xs)), names=(STACK_AXIS, *xs[0].names))
    if len({(np.shape(x), np.dtype(x.dtype)) for x in xs}) != 1:
      raise ValueError(f"{where}: per-layer arrays differ in shape or dtype")
    if all(isinstance(x, np.ndarray | np.generic) for x in xs):
      return np.stack(xs)
    return jnp.stack(xs)

  return jax.tree.map(stack, *layers, is_leaf=_is_box)


def _unstack(stacked, where: str) -> list:
  """One tree with a leading [depth] axis -> list of depth per-layer trees."""
  leaves = jax.tree.leaves(stacked, is_leaf=_is_box)
  depths = {np.shape(x.value if _is_box(x) else x)[:1] for x in leaves}
  if len(depths) != 1 or () in depths:
    raise ValueError(f"{where}: stacked arrays disagree on the leading (layer) dim: {depths}")
  ((depth,),) = depths

  def take(x, i):
    if _is_box(x):
      return x.replace(value=x.value[i], names=x.names[1:])
    return x[i]

  return [jax.tree.map(lambda x, i=i: take(x, i), stacked, is_leaf=_is_box) for i in range(depth)]


def _map_dicts(tree, fn, path=()):
  """Applies fn(dict, path) bottom-up to every Mapping in tree (through lists and tuples)."""
  if isinstance(tree, Mapping):
    return fn({k: _map_dicts(v, fn, (*path, k)) for k, v in tree.items()}, path)
  if isinstance(tree, list | tuple):
    items = [_map_dicts(v, fn, (*path, i)) for i, v in enumerate(tree)]
    if hasattr(tree, "_fields"):  # namedtuple (optax states)
      return type(tree)(*items)
    return type(tree)(items)
  return tree


def scan_params(params, name: str = STACK):
  """Per-layer params (`{name}_0` ... `{name}_{N-1}`) -> stacked `{name}` with leading [N] axis.

  Works on any nested dict/list/tuple of arrays (a model's params, {"params": ...} variables,
  a whole train state with optimizer moments): every dict holding `{name}_i` keys is converted,
  so the full SigLIP (image, IR and text towers) or Captioner (ViT and Gemma) tree converts in
  one call. Trees without such keys come back unchanged (idempotent on scanned trees). numpy
  leaves stay numpy; jax arrays (or tracers, so `jax.eval_shape` works) are stacked with jnp;
  flax logical-axis boxes (a model's boxed init) gain `STACK_AXIS` in front of their names.
  Returns plain dicts.
  """

  def convert(d, path):
    idx = {k: _layer_index(k, name) for k in d}
    layers = {i: k for k, i in idx.items() if i is not None}
    if not layers:
      return d
    where = "/".join(map(str, path)) or "<root>"
    if sorted(layers) != list(range(len(layers))):
      raise ValueError(f"{where}: layer keys {sorted(layers.values())} are not {name}_0..N-1")
    if name in d:
      raise ValueError(f"{where}: holds both {name!r} and per-layer {name}_i keys")
    out = {k: v for k, v in d.items() if idx[k] is None}
    out[name] = _stack([d[layers[i]] for i in range(len(layers))], where)
    return out

  return _map_dicts(params, convert)


def unscan_params(params, name: str = STACK):
  """Stacked `{name}` subtrees (leading [N] axis) -> per-layer `{name}_0` ... `{name}_{N-1}`.

  The inverse of `scan_params` (exactly: slicing copies values), on the same kinds of trees;
  trees without a `{name}` dict come back unchanged. Use it before the HF export, which reads
  the per-layer names.
  """

  def convert(d, path):
    if not isinstance(d.get(name), Mapping):
      return d
    where = "/".join(map(str, (*path, name)))
    clash = [k for k in d if _layer_index(k, name) is not None]
    if clash:
      raise ValueError(f"{where}: per-layer keys {clash} exist next to the stacked {name!r}")
    out = {k: v for k, v in d.items() if k != name}
    for i, layer in enumerate(_unstack(d[name], where)):
      out[f"{name}_{i}"] = layer
    return out

  return _map_dicts(params, convert)
