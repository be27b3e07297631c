"""Mechanics every trainer shares, written once: run folder, mesh, data preparation,
optimizer, the shaped-init -> shardings -> resume sequence, and the non-finite guard."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import linen as nn
from jax.experimental import multihost_utils

from data_prep.demo_world import world as demo_world
from data_prep.ingest import tokenizer
from data_prep.ir_text import captions as ir_captions
from fusionrs_jax.core import checkpoint, fs, metrics, records, sharding
from fusionrs_jax.core.errors import NonFiniteLossError, UserError
from fusionrs_jax.data import prefetch
from fusionrs_jax.models import scan


@dataclasses.dataclass
class Run:
  """What a trainer needs around its loop."""

  config: Any
  workdir: str
  mesh: jax.sharding.Mesh
  writer: metrics.MetricWriter
  ckpt: checkpoint.Checkpointer


def setup_run(config, workdir: str) -> Run:
  """Creates the workdir (local or gs://; config.json inside), the mesh, metric writer and
  checkpointer."""
  fs.makedirs(workdir)
  if jax.process_index() == 0:
    records.write_json_atomic(
      fs.join(workdir, "config.json"), json.loads(config.to_json_best_effort())
    )
  try:
    mesh = sharding.make_mesh(dict(config.mesh))
  except ValueError as e:
    raise UserError(str(e)) from e
  shards = sharding.num_batch_shards(mesh)
  if config.batch_size % shards:
    raise UserError(
      f"batch_size {config.batch_size} does not divide by the "
      f"{shards} batch shards of mesh {dict(mesh.shape)}"
    )
  logging.info(
    "mesh %s over %d devices (%d processes)",
    dict(mesh.shape),
    jax.device_count(),
    jax.process_count(),
  )
  writer = metrics.MetricWriter(workdir, active=jax.process_index() == 0)
  ckpt = checkpoint.Checkpointer(
    fs.join(workdir, "checkpoints"),
    save_every=config.checkpoint_every,
    max_to_keep=config.keep_checkpoints,
    async_save=config.async_checkpoints,
  )
  return Run(config, workdir, mesh, writer, ckpt)


def start(config, workdir: str, step_program: Callable) -> tuple[Run, str, Any, dict, Any]:
  """Run folder + mesh, the dataset (demo world built if asked), the trainer's StepProgram
  on the mesh, and its freshly initialised sharded state: (run, data_dir, program, state,
  shardings). The step main runs is the one `python -m fusionrs_jax.cli.aot` compiles."""
  run = setup_run(config, workdir)
  data_dir = prepare_dataset(config.data)
  program = step_program(config, run.mesh)
  state, shardings = init_state(program.init_params, program.tx, config.seed, run.mesh)
  return run, data_dir, program, state, shardings


def local_batch_size(config) -> int:
  """This process's share of the global batch."""
  if config.batch_size % jax.process_count():
    raise UserError(
      f"batch_size {config.batch_size} does not divide by {jax.process_count()} processes"
    )
  return config.batch_size // jax.process_count()


# ----------------------------------------------------------------------------
# Data.
# ----------------------------------------------------------------------------


def device_batches(loader, data_config, mesh) -> prefetch.DevicePrefetch:
  """The loader's batches placed on `mesh`, data_config.prefetch steps ahead (a thread)."""
  place = lambda batch: sharding.place_batch(batch, mesh)
  return prefetch.DevicePrefetch(iter(loader), place, size=data_config.get("prefetch", 2))


def worker_count(data_config) -> int:
  """Loader worker processes: data_config.worker_count, -1 = by the host's cores."""
  return prefetch.resolve_worker_count(data_config.worker_count)


def prepare_dataset(data_config) -> str:
  """Returns the dataset folder; builds the demo world there first when asked.

  `data_config.dir` absent + `data_config.demo_world_if_missing` -> generate the demo
  world (RGB + rendered IR), its IR-aware captions and instructions, and a tokenizer.
  The shards are read with ArrayRecord, so a bucket comes in through a gcsfuse mount.
  """
  data_dir = data_config.dir
  if not str(data_dir).strip():
    # An empty dir would put the demo world's .raw/ staging folder in the working directory.
    raise UserError("--config.data.dir is empty: give a prepared dataset folder")
  fs.require_local(data_dir, "--config.data.dir")  # a UserError naming the gcsfuse mount
  if not fs.exists(fs.join(data_dir, records.INFO_FILE)):
    if not data_config.get("demo_world_if_missing", False):
      raise UserError(
        f"data directory {data_dir!r} has no {records.INFO_FILE}; prepare "
        f"it with `python -m data_prep.ingest` (see README) or set "
        f"--config.data.demo_world_if_missing=True"
      )
    build_demo_dataset(data_dir, data_config)
  tok = tokenizer_path(data_config)
  if not fs.exists(tok):
    if data_config.get("demo_world_if_missing", False) and tok == _default_tok(data_dir):
      _train_tokenizer(data_dir, tok, data_config.vocab_size)
    else:
      raise UserError(
        f"tokenizer {tok!r} not found; train one with "
        f"`python -m data_prep.ingest.tokenizer --data={data_dir} --out={tok}`"
      )
  return data_dir


def _default_tok(data_dir: str) -> str:
  return fs.join(data_dir, "tokenizer.model")


def tokenizer_path(data_config) -> str:
  return data_config.get("tokenizer") or _default_tok(data_config.dir)


def build_demo_dataset(data_dir: str, data_config) -> None:
  """Demo world + IR-aware captions + tokenizer, only on process 0; others wait."""

  if jax.process_index() == 0:
    logging.info("%s is empty: building the demo world there (synthetic data)", data_dir)
    raw = data_dir.rstrip("/") + ".raw"
    demo_world.build_demo_world(
      raw,
      num_train=data_config.demo_num_train,
      num_val=data_config.demo_num_val,
      num_test=data_config.demo_num_test,
      image_size=data_config.demo_image_size,
      seed=data_config.demo_seed,
    )
    ir_captions.annotate_folder(raw, data_dir, splits=("train", "val", "test"), resume=True)
  sync_hosts("demo_world")


def _train_tokenizer(data_dir: str, path: str, vocab_size: int) -> None:

  if jax.process_index() == 0:
    tokenizer.train_tokenizer(tokenizer.train_texts([data_dir]), path, vocab_size=vocab_size)
  sync_hosts("tokenizer")


def sync_hosts(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


# ----------------------------------------------------------------------------
# Optimizer and state.
# ----------------------------------------------------------------------------


# Leaf names of weight matrices: Dense/Conv kernels and Gemma's einsum / linear weights.
# Only these are weight-decayed (big_vision's default wd mask is `.*/kernel$`); biases, norm
# scales, embeddings, position embeddings, the MAP probe and SigLIP's t and b are not.
DECAYED_LEAVES = ("kernel", "w", "gating_einsum", "linear")


def decay_mask(params: Any) -> Any:
  """Pytree of bools: True on the weight matrices that weight decay applies to."""
  return jax.tree_util.tree_map_with_path(
    lambda path, _: bool(path) and _path_names(path)[-1] in DECAYED_LEAVES, params
  )


def lr_schedule(optim, total_steps: int) -> optax.Schedule:
  """Linear warmup to optim.lr, then cosine decay to optim.lr * optim.end_lr_frac."""
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=optim.lr,
    warmup_steps=optim.warmup_steps,
    decay_steps=max(total_steps, optim.warmup_steps + 1),
    end_value=optim.lr * optim.end_lr_frac,
  )


def make_optimizer(optim, total_steps: int) -> optax.GradientTransformation:
  """Adam with the learning-rate schedule, global-norm clipping, gradient accumulation, and
  weight decay decoupled from the learning rate (as big_vision's `wd`).

  Per step a decayed weight w moves by -lr(t) * adam(g) - wd * s(t) * w, where
  s(t) = lr(t) / optim.lr is the schedule's multiplier in [0, 1]: `optim.weight_decay` is a
  per-step fraction at peak, not multiplied by the learning rate (optax.adamw would give
  lr * wd, ~1e-7 per step at lr=1e-3, wd=1e-4), and only weight matrices decay
  (DECAYED_LEAVES). optim.mu_dtype stores Adam's first moment in another dtype (bfloat16
  halves it); the second moment stays in the params' dtype (float32).
  """
  schedule = lr_schedule(optim, total_steps)
  peak = optim.lr if optim.lr > 0 else 1.0
  mu_dtype = optim.get("mu_dtype", "float32")
  tx = optax.chain(
    optax.clip_by_global_norm(optim.grad_clip) if optim.grad_clip > 0 else optax.identity(),
    optax.scale_by_adam(b1=optim.b1, b2=optim.b2, mu_dtype=jnp.dtype(mu_dtype)),
    optax.scale_by_learning_rate(schedule),
    optax.add_decayed_weights(
      lambda step: -optim.weight_decay * schedule(step) / peak, mask=decay_mask
    )
    if optim.weight_decay
    else optax.identity(),
  )
  if optim.accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=optim.accum_steps)
  return tx


def init_state(
  init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation, seed: int, mesh
) -> tuple[dict, Any]:
  """Shaped init -> shardings from the logical rules -> sharded init; never unsharded.

  `init_params(rng)` returns (boxed, logically annotated) params. Returns the state
  {params, opt_state, step, rng} and the matching tree of NamedShardings.
  """
  rng = jax.random.PRNGKey(seed)
  init_rng, train_rng = jax.random.split(rng)
  # No rules in scope here: the boxes only carry names; out_shardings place the params.
  abstract = jax.eval_shape(init_params, init_rng)
  param_sh = sharding.param_shardings(abstract, mesh)
  unboxed = lambda r: nn.unbox(init_params(r))
  params = jax.jit(unboxed, out_shardings=param_sh)(init_rng)
  opt_state = jax.jit(tx.init, out_shardings=optimizer_shardings(tx, params, mesh))(params)
  repl = sharding.replicated(mesh)
  state = {
    "params": params,
    "opt_state": opt_state,
    "step": jax.device_put(jnp.zeros((), jnp.int32), repl),
    "rng": jax.device_put(train_rng, repl),
  }
  shardings = jax.tree.map(lambda x: x.sharding, state)
  return state, shardings


def abstract_state(
  init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation, mesh
) -> tuple[dict, Any]:
  """What `init_state` builds, as ShapeDtypeStructs carrying their shardings (nothing is
  allocated): for ahead-of-time compilation and memory checks. Returns (state, shardings)."""
  boxed = jax.eval_shape(init_params, jax.random.PRNGKey(0))
  param_sh = sharding.param_shardings(boxed, mesh)
  params = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(boxed), param_sh
  )
  opt_sh = optimizer_shardings(tx, params, mesh)
  opt_state = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    jax.eval_shape(tx.init, params),
    opt_sh,
  )
  repl = sharding.replicated(mesh)
  key = jax.eval_shape(jax.random.PRNGKey, 0)
  state = {
    "params": params,
    "opt_state": opt_state,
    "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=repl),
    "rng": jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=repl),
  }
  return state, jax.tree.map(lambda x: x.sharding, state)


@dataclasses.dataclass
class StepProgram:
  """A trainer's jitted train step with abstract arguments: `step.lower(state, batch)`
  compiles exactly what the training loop runs (see fusionrs_jax.cli.aot)."""

  model: Any
  step: Any  # jax.jit-wrapped (state, batch) -> (state, metrics), state donated
  state: dict  # ShapeDtypeStructs with shardings
  batch: dict  # global batch, ShapeDtypeStructs with the batch sharding
  mesh: Any
  tx: optax.GradientTransformation
  init_params: Callable[[jax.Array], Any]  # rng -> boxed params, for init_state

  def lower(self):
    """Traces the step as the training loop does: inside sharding.activate(mesh), so the
    models' logical activation constraints (batch-sharded activations) are in force."""
    with sharding.activate(self.mesh):
      return self.step.lower(self.state, self.batch)


def step_program(config, mesh, model, init_params, make_step, fields) -> StepProgram:
  """A StepProgram of `model` on `mesh`: abstract state from `init_params` and the config's
  optimizer, `make_step(tx)` -> the (state, batch) step, `fields` per-example batch fields."""
  tx = make_optimizer(config.optim, config.total_steps)
  state, shardings = abstract_state(init_params, tx, mesh)
  batch = batch_struct(mesh, config.batch_size, fields)
  step = jit_step(make_step(tx), shardings)
  return StepProgram(model, step, state, batch, mesh, tx, init_params)


def jit_step(fn: Callable, shardings: Any) -> Any:
  """The train step as every trainer jits it: state in/out with its shardings, donated."""
  return jax.jit(
    fn, in_shardings=(shardings, None), out_shardings=(shardings, None), donate_argnums=0
  )


def batch_struct(mesh, global_batch: int, fields: dict[str, tuple[tuple[int, ...], Any]]) -> dict:
  """{name: ShapeDtypeStruct([global_batch, *shape], dtype)} sharded as place_batch shards."""
  return {
    k: jax.ShapeDtypeStruct(
      (global_batch, *shape), dtype, sharding=sharding.batch_sharding(mesh, 1 + len(shape))
    )
    for k, (shape, dtype) in fields.items()
  }


def _path_names(path) -> tuple:
  """A pytree key path as plain names: dict keys, attribute names, sequence indices."""
  out = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        out.append(getattr(k, attr))
        break
  return tuple(out)


def optimizer_shardings(tx: optax.GradientTransformation, params: Any, mesh) -> Any:
  """Shardings of tx.init(params): every leaf whose key path ends in a param's key path
  (with that param's shape) takes the param's sharding (Adam mu/nu, ...); the rest (step
  counts, scalars) is replicated.

  Matching by key path, not by tree structure, also covers optax.masked / multi_transform
  states, whose masked-out subtrees are MaskedNode placeholders. Explicit at all, because jit
  does not propagate input shardings to outputs that do not depend on input values
  (zeros_like), which would leave FSDP moments replicated on every chip.
  """
  by_path = {
    _path_names(path): (x.shape, x.sharding)
    for path, x in jax.tree_util.tree_leaves_with_path(params)
  }
  repl = sharding.replicated(mesh)

  def pick(path, leaf):
    names = _path_names(path)
    for start in range(len(names)):  # longest matching suffix first
      hit = by_path.get(names[start:])
      if hit is not None and hit[0] == leaf.shape:
        return hit[1]
    return repl

  return jax.tree_util.tree_map_with_path(pick, jax.eval_shape(tx.init, params))


def restore_or_init(run: Run, state: dict, shardings: Any, data_iterator=None) -> tuple[dict, int]:
  """Resumes from the newest checkpoint of this run when there is one (bit-exact)."""
  if run.config.resume and run.ckpt.latest_step is not None:
    target = checkpoint.abstract_with_shardings(state, shardings)
    step, state = run.ckpt.restore(target, data_iterator)
    logging.info("resumed at step %d", step)
    return state, step
  return state, 0


def match_layer_layout(params: Any, config) -> Any:
  """Params in the layer layout config.model.scan_layers asks for (stacked `layers` or
  per-layer `layers_<i>`), whichever layout they were saved in."""
  if config.model.get("scan_layers", False):
    return scan.scan_params(params)
  return scan.unscan_params(params)


def init_params_from_checkpoint(path: str, params: Any, param_shardings: Any, config) -> Any:
  """Params of another run's Orbax checkpoint folder (`.../checkpoints`), resharded and in
  this config's layer layout."""
  ckpt = checkpoint.Checkpointer(path, save_every=1, async_save=False)
  raw = ckpt.restore_raw()
  ckpt.close()
  src = match_layer_layout(raw.get("params", raw), config)
  try:
    return jax.tree.map(
      lambda new, old, s: jax.device_put(np.asarray(old, new.dtype), s),
      params,
      src,
      param_shardings,
    )
  except ValueError as e:
    raise UserError(f"checkpoint {path!r} does not match this model's parameters: {e}") from e


def check_finite(loss: float, step: int, run: Run) -> None:
  """Stops the run on a NaN/inf loss, naming the step and the last good checkpoint."""
  if not np.isfinite(loss):
    last = run.ckpt.latest_step
    where = (
      f"last good checkpoint: step {last} in {run.ckpt.directory}"
      if last is not None
      else "no checkpoint was saved yet"
    )
    raise NonFiniteLossError(f"loss is {loss} at step {step}; stopping ({where})")


# ----------------------------------------------------------------------------
# Loop pieces.
# ----------------------------------------------------------------------------


def log_train_step(
  run: Run,
  step: int,
  train_metrics: Any,
  progress: metrics.Progress,
  examples_per_step: int,
  extra: dict[str, float] | None = None,
) -> dict:
  """Fetches the step's metrics, stops on a non-finite loss, writes them with throughput.

  `train_metrics` must hold "loss". Returns the host-side scalars.
  """
  scalars = {k: float(v) for k, v in jax.device_get(train_metrics).items()}
  check_finite(scalars["loss"], step, run)
  scalars["examples_per_sec"] = progress.rate(step) * examples_per_step
  scalars.update(extra or {})
  run.writer.write_scalars(step, scalars)
  progress.update(step, f"loss {scalars['loss']:.4f}", force=step == run.config.total_steps)
  return scalars


def write_eval(run: Run, step: int, result: dict[str, float]) -> None:
  """An eval's metrics to TensorBoard/metrics.jsonl (as eval/*) and to eval.jsonl."""
  run.writer.write_scalars(step, {f"eval/{k}": v for k, v in result.items()})
  if jax.process_index() == 0:
    with fs.AppendFile(fs.join(run.workdir, "eval.jsonl")) as f:
      f.write(json.dumps({"step": step, **result}) + "\n")
