"""CycleGAN RGB->IR translator training: unpaired (or paired, with pix2pix L1) random crops,
one jit-compiled data-parallel step updating both generators and both discriminators."""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import grain
import jax
import numpy as np
import optax
from absl import logging
from PIL import Image

from fusionrs_jax.core import metrics, records, sharding
from fusionrs_jax.evaluators import translation
from fusionrs_jax.losses import gan as gl
from fusionrs_jax.models import cyclegan
from fusionrs_jax.trainers import common

# ----------------------------------------------------------------------------
# Data: random crops of RGB-domain and IR-domain records.
# ----------------------------------------------------------------------------


def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


@dataclasses.dataclass
class CropExamples:
  """Stream position -> {"rgb": [S,S,3], "ir": [S,S,1]} float32 in [-1, 1].

  Each domain walks its own reshuffled-every-epoch order (unpaired); `paired` reads RGB
  and IR from the same record and crops them alike. Positions interleave processes
  (position * count + index), so each process sees a disjoint share of every epoch.
  """

  rgb_paths: list[str]
  ir_paths: list[str]
  paired: bool
  image_size: int
  load_size: int
  hflip: bool
  seed: int
  shard_index: int
  shard_count: int

  def __post_init__(self):
    self._rgb = grain.sources.ArrayRecordDataSource(self.rgb_paths)
    self._ir = self._rgb if self.paired else grain.sources.ArrayRecordDataSource(self.ir_paths)
    self._perms: dict[tuple[int, int], np.ndarray] = {}

  def _record(self, domain: int, position: int) -> records.Record:
    source = (self._rgb, self._ir)[domain]
    n = len(source)
    epoch = position // n
    key = (domain, epoch)
    if key not in self._perms:
      self._perms = {k: v for k, v in self._perms.items() if k[0] != domain}
      self._perms[key] = _epoch_permutation(n, self.seed + 7919 * domain, epoch)
    index = int(self._perms[key][position % n])
    where = f"{(self.rgb_paths, self.ir_paths)[domain][0]}...#{index}"
    return records.decode(source[index], where=where)

  def _image(self, rec: records.Record, field: str) -> np.ndarray:
    data = getattr(rec, field)
    if not data:
      raise records.RecordError(
        f"record {rec.id!r} (source {rec.source!r}) has no {field} "
        f"image; the {field.upper()} domain needs one in every record"
      )
    return translation.decode_image(data, 3 if field == "rgb" else 1, rec.id)

  def _crop(self, images: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Resize (shorter side -> load_size) and one random crop + flip applied to all."""
    out = []
    h, w = images[0].shape[:2]
    if self.load_size:
      scale = self.load_size / min(h, w)
      h, w = max(self.image_size, round(h * scale)), max(self.image_size, round(w * scale))
    if min(h, w) < self.image_size:
      raise records.RecordError(
        f"image of {images[0].shape[:2]} px is smaller than the "
        f"{self.image_size} px crop; set data.load_size"
      )
    y, x = rng.integers(0, h - self.image_size + 1), rng.integers(0, w - self.image_size + 1)
    flip = self.hflip and rng.random() < 0.5
    for img in images:
      if img.shape[:2] != (h, w):
        img = _resize_hw(img, h, w)
      img = img[y : y + self.image_size, x : x + self.image_size]
      out.append(np.ascontiguousarray(img[:, ::-1] if flip else img))
    return out

  def __call__(self, position: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    g = position * self.shard_count + self.shard_index
    rgb_rec = self._record(0, g)
    if self.paired:
      rgb, ir = self._crop([self._image(rgb_rec, "rgb"), self._image(rgb_rec, "ir")], rng)
    else:
      (rgb,) = self._crop([self._image(rgb_rec, "rgb")], rng)
      (ir,) = self._crop([self._image(self._record(1, g), "ir")], rng)
    return {"rgb": rgb, "ir": ir}


def _resize_hw(img: np.ndarray, h: int, w: int) -> np.ndarray:
  chans = [
    np.asarray(Image.fromarray(img[..., c]).resize((w, h), Image.BILINEAR))
    for c in range(img.shape[-1])
  ]
  return np.stack(chans, -1).astype(np.float32)


def make_loader(
  data,
  *,
  local_batch: int,
  num_steps: int,
  seed: int,
  shard_index: int | None = None,
  shard_count: int | None = None,
):
  """Checkpointable iterator of num_steps batches {rgb [B,S,S,3], ir [B,S,S,1]} (numpy)."""
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  try:
    rgb_paths = records.list_shards(data.rgb_dir, data.rgb_split)
    ir_paths = [] if data.paired else records.list_shards(data.ir_dir, data.ir_split)
  except FileNotFoundError as e:
    raise common.UserError(str(e)) from e
  examples = CropExamples(
    rgb_paths,
    ir_paths,
    data.paired,
    data.image_size,
    data.load_size,
    data.hflip,
    seed,
    shard_index,
    shard_count,
  )
  ds = grain.MapDataset.range(num_steps * local_batch).random_map(examples, seed=seed)
  ds = ds.batch(local_batch, drop_remainder=True)
  return iter(
    ds.to_iter_dataset(
      grain.ReadOptions(
        num_threads=data.read_threads, prefetch_buffer_size=max(2, data.read_threads)
      )
    )
  )


def ensure_demo_world(data) -> None:
  """Builds the demo world (RGB + rendered IR) in data.rgb_dir when asked and missing."""
  if not data.demo_world_if_missing:
    return
  if os.path.exists(os.path.join(data.rgb_dir, records.INFO_FILE)):
    return
  from data_prep.demo_world import world as demo_world

  if jax.process_index() == 0:
    logging.info("building the demo world in %s (synthetic data)", data.rgb_dir)
    demo_world.build_demo_world(
      data.rgb_dir,
      num_train=data.demo_num_train,
      num_val=data.demo_num_val,
      num_test=data.demo_num_test,
      image_size=data.demo_image_size,
      seed=data.demo_seed,
    )
  common.sync_hosts("translator_demo_world")


# ----------------------------------------------------------------------------
# Optimizer and train step.
# ----------------------------------------------------------------------------


def lr_schedule(optim, total_steps: int) -> optax.Schedule:
  """Constant lr for constant_frac of the run, then linear to 0 (as published)."""
  constant = int(total_steps * optim.constant_frac)
  return optax.join_schedules(
    [
      optax.constant_schedule(optim.lr),
      optax.linear_schedule(optim.lr, 0.0, max(1, total_steps - constant)),
    ],
    [constant],
  )


def make_optimizer(optim, total_steps: int) -> optax.GradientTransformation:
  """One Adam over all four networks: per-parameter, so it equals separate G and D Adams."""
  return optax.adam(lr_schedule(optim, total_steps), b1=optim.b1, b2=optim.b2)


def generator_loss(
  gen_params: dict, params: dict, model: cyclegan.CycleGAN, batch: dict, loss_cfg, paired: bool
) -> tuple[jax.Array, tuple[dict, dict]]:
  """Adversarial + cycle + identity (+ paired L1) for both generators; D params fixed."""
  g, f = gen_params["rgb_to_ir"], gen_params["ir_to_rgb"]
  rgb_to_ir = lambda x: model.rgb_to_ir.apply({"params": g}, x)
  ir_to_rgb = lambda x: model.ir_to_rgb.apply({"params": f}, x)
  rgb, ir = batch["rgb"], batch["ir"]
  fake_ir, fake_rgb = rgb_to_ir(rgb), ir_to_rgb(ir)
  rec_rgb, rec_ir = ir_to_rgb(fake_ir), rgb_to_ir(fake_rgb)
  adv = gl.lsgan_g_loss(
    model.disc_ir.apply({"params": params["disc_ir"]}, fake_ir)
  ) + gl.lsgan_g_loss(model.disc_rgb.apply({"params": params["disc_rgb"]}, fake_rgb))
  cyc = gl.cycle_loss(rgb, rec_rgb) + gl.cycle_loss(ir, rec_ir)
  total = loss_cfg.gan * adv + loss_cfg.cycle * cyc
  logs = {"g_adv": adv, "cycle": cyc}
  if loss_cfg.identity > 0:
    idt = gl.identity_loss(ir, rgb_to_ir(gl.as_channels(ir, 3))) + gl.identity_loss(
      rgb, ir_to_rgb(gl.as_channels(rgb, 1))
    )
    total += loss_cfg.identity * loss_cfg.cycle * idt
    logs["identity"] = idt
  if paired:
    pair = gl.paired_l1(ir, fake_ir) + gl.paired_l1(rgb, fake_rgb)
    total += loss_cfg.paired * pair
    logs["paired_l1"] = pair
  logs["g_total"] = total
  return total, (logs, {"fake_ir": fake_ir, "fake_rgb": fake_rgb})


def discriminator_loss(
  disc_params: dict, model: cyclegan.CycleGAN, batch: dict, fake_ir: jax.Array, fake_rgb: jax.Array
) -> jax.Array:
  d_ir = lambda x: model.disc_ir.apply({"params": disc_params["disc_ir"]}, x)
  d_rgb = lambda x: model.disc_rgb.apply({"params": disc_params["disc_rgb"]}, x)
  return gl.lsgan_d_loss(d_ir(batch["ir"]), d_ir(fake_ir)) + gl.lsgan_d_loss(
    d_rgb(batch["rgb"]), d_rgb(fake_rgb)
  )


def train_step(state: dict, batch: dict, *, model, tx, loss_cfg, paired: bool) -> tuple[dict, dict]:
  """One simultaneous update: G from its loss at the current D, D on pooled fakes of the
  current G (what the published alternating step computes too). batch: rgb [B,S,S,3],
  ir [B,S,S,1]."""
  params = state["params"]
  rng, rng_ir, rng_rgb = jax.random.split(state["rng"], 3)
  gen = {k: params[k] for k in ("rgb_to_ir", "ir_to_rgb")}
  (_, (logs, fakes)), g_grads = jax.value_and_grad(generator_loss, has_aux=True)(
    gen, params, model, batch, loss_cfg, paired
  )
  pool_ir, fake_ir = gl.pool_query(
    state["pool_ir"], jax.lax.stop_gradient(fakes["fake_ir"]), rng_ir
  )
  pool_rgb, fake_rgb = gl.pool_query(
    state["pool_rgb"], jax.lax.stop_gradient(fakes["fake_rgb"]), rng_rgb
  )
  disc = {k: params[k] for k in ("disc_ir", "disc_rgb")}
  d_loss, d_grads = jax.value_and_grad(discriminator_loss)(disc, model, batch, fake_ir, fake_rgb)
  updates, opt_state = tx.update({**g_grads, **d_grads}, state["opt_state"], params)
  new_state = {
    "params": optax.apply_updates(params, updates),
    "opt_state": opt_state,
    "step": state["step"] + 1,
    "rng": rng,
    "pool_ir": pool_ir,
    "pool_rgb": pool_rgb,
  }
  return new_state, {**logs, "d_loss": d_loss}


# ----------------------------------------------------------------------------
# Samples.
# ----------------------------------------------------------------------------


def sample_grid(params: dict, model, rgb: np.ndarray, ir: np.ndarray | None) -> np.ndarray:
  """RGB | fake IR | reconstructed RGB (| real IR) rows as one uint8 image.

  rgb [N,H,W,3], ir [N,H,W,1] in [-1, 1] -> uint8 [N*(H+2)+2, cols*(W+2)+2, 3].
  """
  fake_ir = model.rgb_to_ir.apply({"params": params["rgb_to_ir"]}, rgb)
  rec = model.ir_to_rgb.apply({"params": params["ir_to_rgb"]}, fake_ir)
  cols = [rgb, fake_ir, rec] + ([ir] if ir is not None else [])
  return metrics.image_grid([metrics.to_uint8(np.asarray(c)) for c in cols])


# ----------------------------------------------------------------------------
# The loop.
# ----------------------------------------------------------------------------


def _init(config, run: common.Run, model: cyclegan.CycleGAN, tx) -> tuple[dict, Any]:
  """Shaped init of the four networks + Adam, plus the two (replicated) history pools."""
  size = config.data.image_size
  state, _ = common.init_state(lambda r: model.init(r, size), tx, config.seed, run.mesh)
  repl = sharding.replicated(run.mesh)
  for name, channels in (("pool_ir", cyclegan.IR_CHANNELS), ("pool_rgb", cyclegan.RGB_CHANNELS)):
    state[name] = jax.device_put(gl.pool_init(config.pool_size, (size, size, channels)), repl)
  # jit(tx.init) leaves scalars (Adam's count) on one device; the step's out_shardings
  # need every leaf on the mesh.
  on_mesh = lambda x: (
    x if isinstance(x.sharding, jax.sharding.NamedSharding) else (jax.device_put(x, repl))
  )
  state = jax.tree.map(on_mesh, state)
  return state, jax.tree.map(lambda x: x.sharding, state)


def _evaluator(config, run: common.Run, model: cyclegan.CycleGAN):
  if not config.eval.rgb_dir:
    return None
  predict = jax.jit(lambda p, x: model.rgb_to_ir.apply({"params": p}, x))
  try:
    return translation.TranslationEvaluator(config.eval, predict, run.mesh)
  except FileNotFoundError as e:
    raise common.UserError(f"translator eval data: {e}") from e


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Trains config.total_steps steps (resuming when possible) -> final losses + eval metrics."""
  if config.data.image_size % 4:
    raise common.UserError(f"data.image_size={config.data.image_size} must divide by 4")
  ensure_demo_world(config.data)
  run = common.setup_run(config, workdir)
  model = cyclegan.from_config(config)
  tx = make_optimizer(config.optim, config.total_steps)
  state, shardings = _init(config, run, model, tx)
  loader = make_loader(
    config.data,
    local_batch=common.local_batch_size(config),
    num_steps=config.total_steps,
    seed=config.seed,
  )
  state, step = common.restore_or_init(run, state, shardings, loader)
  step_fn = jax.jit(
    functools.partial(
      train_step, model=model, tx=tx, loss_cfg=config.loss, paired=config.data.paired
    ),
    out_shardings=(shardings, sharding.replicated(run.mesh)),
    donate_argnums=0,
  )
  evaluator = _evaluator(config, run, model)
  # Grid rows: fixed held-out images when there is an eval set, else the first batch.
  samples, n = None, config.num_samples
  if evaluator is not None:
    samples = (evaluator.rgb[:n], None if evaluator.ir is None else evaluator.ir[:n] * 2 - 1)
  schedule = lr_schedule(config.optim, config.total_steps)
  progress = metrics.Progress(config.total_steps, start=step)
  logs, results = {}, {}
  while step < config.total_steps:
    host_batch = next(loader)
    if samples is None:
      samples = (host_batch["rgb"][:n], host_batch["ir"][:n])
    state, logs = step_fn(state, sharding.place_batch(host_batch, run.mesh))
    step += 1
    last = step == config.total_steps
    if step % config.log_every == 0 or last:
      logs = {k: float(v) for k, v in jax.device_get(logs).items()}
      common.check_finite(logs["g_total"] + logs["d_loss"], step, run)
      run.writer.write_scalars(
        step, {**{f"train/{k}": v for k, v in logs.items()}, "train/lr": float(schedule(step))}
      )
      progress.update(step, f"G {logs['g_total']:.3f} D {logs['d_loss']:.3f}", force=last)
    if config.sample_every and (step % config.sample_every == 0 or last):
      run.writer.write_image(
        step, "rgb_fakeir_recrgb", sample_grid(state["params"], model, *samples)
      )
    if evaluator is not None and (step % config.eval_every == 0 or last):
      results = evaluator.run(state["params"]["rgb_to_ir"])
      run.writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()})
      logging.info("eval at step %d: %s", step, _format(results))
    run.ckpt.save(step, state, loader, force=last)
  if evaluator is not None and not results:  # resumed a finished run: report it again.
    results = evaluator.run(state["params"]["rgb_to_ir"])
  run.ckpt.close()
  run.writer.close()
  return {
    "step": step,
    **{f"train/{k}": float(v) for k, v in logs.items()},
    **{f"eval/{k}": v for k, v in results.items()},
  }


def _format(results: dict[str, float]) -> str:
  return " ".join(f"{k}={v:.4f}" for k, v in sorted(results.items()))
