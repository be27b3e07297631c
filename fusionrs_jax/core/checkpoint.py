"""Orbax checkpointing of a whole run: train state (params, optimizer state, step, RNG)
plus the grain iterator position, so a resumed run sees the exact same batches."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from fusionrs_jax.core import fs

try:
  import grain.checkpoint as grain_ckpt
except ImportError:  # grain is a hard dependency; this keeps the error readable.
  grain_ckpt = None


class Checkpointer:
  """A run's checkpoint folder (`<workdir>/checkpoints/<step>/{state,data}`).

  Saves every `save_every` steps (and whenever `force=True`), keeps `max_to_keep`,
  writes asynchronously. `directory` may be gs:// (tensorstore writes the arrays there; its
  `TENSORSTORE_GCS_HTTP_URL` points it at an emulator). Restore takes an abstract target (ShapeDtypeStructs with
  shardings) so a checkpoint lands directly on the current mesh, resharding as needed.
  """

  def __init__(
    self, directory: str, *, save_every: int, max_to_keep: int = 3, async_save: bool = True
  ):
    self.directory = fs.abspath(directory)
    self.save_every = max(1, int(save_every))
    # The interval is decided here (Orbax would also save the very first step).
    options = ocp.CheckpointManagerOptions(
      save_interval_steps=1,
      max_to_keep=max_to_keep,
      enable_async_checkpointing=async_save,
      create=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  @property
  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iterator: Any = None, *, force: bool = False) -> bool:
    """Saves `state` (a pytree of jax/numpy arrays) and the grain iterator position
    when `step` is a multiple of `save_every` (or `force`). Returns whether it saved."""
    if not force and step % self.save_every:
      return False
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain_ckpt.CheckpointSave(data_iterator)
    saved = self._manager.save(step, args=ocp.args.Composite(**items), force=force)
    if saved:
      logging.info("checkpoint: saving step %d to %s", step, self.directory)
    return saved

  def restore(
    self, abstract_state: Any, data_iterator: Any = None, step: int | None = None
  ) -> tuple[int, Any]:
    """Restores (step, state) onto the shardings of `abstract_state`.

    `abstract_state` is a pytree of jax.ShapeDtypeStruct with `.sharding` set (from
    jax.eval_shape + the sharding rules). The data iterator is restored in place.
    """
    step = self.latest_step if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain_ckpt.CheckpointRestore(data_iterator)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    logging.info("checkpoint: restored step %d from %s", step, self.directory)
    return step, restored["state"]

  def restore_raw(self, step: int | None = None) -> Any:
    """Restores the state tree as host numpy arrays, whatever mesh or device count saved
    it (export, standalone evaluation, init from another run, a pod run on a laptop)."""
    step = self.latest_step if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    # The saved shardings name the saving job's devices; numpy restore args read the
    # same bytes on any topology.
    path = fs.join(self.directory, str(step), "state")
    reader = ocp.PyTreeCheckpointer()
    tree = reader.metadata(path).item_metadata
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return reader.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))

  def wait(self) -> None:
    """Blocks until pending async saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStruct tree carrying the given shardings (a restore target)."""
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
  )


def run_params(workdir: str, step: int | None = None) -> tuple[int, Any]:
  """(step, params as numpy) of a run folder's newest (or given) checkpoint, whatever
  topology wrote it."""
  ckpt = Checkpointer(fs.join(workdir, "checkpoints"), save_every=1, async_save=False)
  step = ckpt.latest_step if step is None else step
  if step is None:
    ckpt.close()
    raise FileNotFoundError(f"{workdir}/checkpoints holds no checkpoint yet")
  raw = ckpt.restore_raw(step)
  ckpt.close()
  return step, raw["params"]


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config.json a trainer wrote into its run folder."""
  path = fs.join(workdir, "config.json")
  if not fs.isfile(path):
    raise FileNotFoundError(
      f"{path} not found: not a run folder (the --workdir given to fusionrs_jax.main)"
    )
  return ml_collections.ConfigDict(json.loads(fs.read_text(path)))


def load_run(
  workdir: str, from_config: Callable[[Any], Any], step: int | None = None
) -> tuple[ml_collections.ConfigDict, Any, Any]:
  """(config, model, params) of a run folder's newest (or given) checkpoint.

  `from_config` is the model family's factory (`fusionrs_jax.models.families.from_config` picks it
  from config.trainer); params are jax arrays on the default device, whatever topology
  wrote them.
  """
  config = read_run_config(workdir)
  model = from_config(config)
  _, raw = run_params(workdir, step)
  return config, model, jax.tree.map(jnp.asarray, raw)
