"""CycleGAN RGB->IR translator training: unpaired (or paired, with pix2pix L1) random crops,
one jit-compiled data-parallel step updating both generators and both discriminators."""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from data_prep.demo_world import world as demo_world
from fusionrs_jax.core import checkpoint, metrics, records, sharding
from fusionrs_jax.data import translator as translator_data
from fusionrs_jax.evaluators import translation
from fusionrs_jax.losses import gan as gl
from fusionrs_jax.models import cyclegan
from fusionrs_jax.models import siglip as siglip_model
from fusionrs_jax.trainers import common

# ----------------------------------------------------------------------------
# Data: the demo world when asked (crops: fusionrs_jax.data.translator).
# ----------------------------------------------------------------------------


def ensure_demo_world(data) -> None:
  """Builds the demo world (RGB + rendered IR) in data.rgb_dir when asked and missing."""
  if not data.demo_world_if_missing:
    return
  if os.path.exists(os.path.join(data.rgb_dir, records.INFO_FILE)):
    return
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
  # "loss" (G + D) is what the non-finite guard watches.
  return new_state, {**logs, "d_loss": d_loss, "loss": logs["g_total"] + d_loss}


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
# Evaluation.
# ----------------------------------------------------------------------------


def siglip_ir_features(workdir: str, batch_size: int = 32):
  """KID features on the IR tower of a SigLIP run: list of [H,W,1] in [0,1] -> [N, D], the
  L2-normalised pooled IR embeddings (what retrieval compares) at the run's image size."""
  _, model, params = checkpoint.load_run(workdir, siglip_model.from_config)
  embed = jax.jit(lambda p, x: model.apply(p, x, "ir", method=model.embed_image))
  return translation.embedding_features(
    lambda x: np.asarray(embed(params, x)), model.image_size, batch_size
  )


def _evaluator(config, run: common.Run, model: cyclegan.CycleGAN):
  e = config.eval
  if not e.rgb_dir:
    return None
  predict = jax.jit(lambda p, x: model.rgb_to_ir.apply({"params": p}, x))
  try:
    kid_features = siglip_ir_features(e.kid_siglip) if e.kid_siglip and e.ref_ir_dir else None
    return translation.TranslationEvaluator(e, predict, run.mesh, kid_features)
  except FileNotFoundError as err:
    raise common.UserError(f"translator eval data: {err}") from err


def _evaluate(run: common.Run, evaluator, params, step: int) -> dict[str, float]:
  results = evaluator.run(params["rgb_to_ir"])
  common.write_eval(run, step, results)
  logging.info(
    "eval at step %d: %s", step, " ".join(f"{k}={v:.4f}" for k, v in sorted(results.items()))
  )
  return results


# ----------------------------------------------------------------------------
# The loop.
# ----------------------------------------------------------------------------


def _pools(config) -> dict[str, dict]:
  """The discriminators' two history pools of generated images (empty)."""
  size = config.data.image_size
  return {
    name: gl.pool_init(config.pool_size, (size, size, channels))
    for name, channels in (("pool_ir", cyclegan.IR_CHANNELS), ("pool_rgb", cyclegan.RGB_CHANNELS))
  }


def _init(config, run: common.Run, model: cyclegan.CycleGAN, tx) -> tuple[dict, Any]:
  """Shaped init of the four networks + Adam, plus the two (replicated) history pools."""
  size = config.data.image_size
  state, _ = common.init_state(lambda r: model.init(r, size), tx, config.seed, run.mesh)
  state.update(jax.device_put(_pools(config), sharding.replicated(run.mesh)))
  return state, jax.tree.map(lambda x: x.sharding, state)


def _jit_train_step(config, model: cyclegan.CycleGAN, tx, shardings):
  step = functools.partial(
    train_step, model=model, tx=tx, loss_cfg=config.loss, paired=config.data.paired
  )
  return common.jit_step(step, shardings)


def step_program(config, mesh) -> common.StepProgram:
  """The jitted train step of `config` on `mesh` with abstract state and global batch."""
  model = cyclegan.from_config(config)
  tx = make_optimizer(config.optim, config.total_steps)
  size = config.data.image_size
  state, _ = common.abstract_state(lambda r: model.init(r, size), tx, mesh)
  repl = sharding.replicated(mesh)
  pools = jax.eval_shape(lambda: _pools(config))
  state.update(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), pools))
  shardings = jax.tree.map(lambda x: x.sharding, state)
  fields = {
    "rgb": ((size, size, cyclegan.RGB_CHANNELS), jnp.float32),
    "ir": ((size, size, cyclegan.IR_CHANNELS), jnp.float32),
  }
  batch = common.batch_struct(mesh, config.batch_size, fields)
  step = _jit_train_step(config, model, tx, shardings)
  return common.StepProgram(model, step, state, batch, mesh, tx, lambda r: model.init(r, size))


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Trains config.total_steps steps (resuming when possible) -> final losses + eval metrics."""
  # ---------------------------------------------------------------- setup
  if config.data.image_size % 4:
    raise common.UserError(f"data.image_size={config.data.image_size} must divide by 4")
  ensure_demo_world(config.data)
  run = common.setup_run(config, workdir)
  model = cyclegan.from_config(config)
  tx = make_optimizer(config.optim, config.total_steps)
  state, shardings = _init(config, run, model, tx)
  loader = translator_data.make_loader(
    config.data,
    local_batch=common.local_batch_size(config),
    num_steps=config.total_steps,
    seed=config.seed,
  )
  state, step = common.restore_or_init(run, state, shardings, loader)
  step_fn = _jit_train_step(config, model, tx, shardings)
  evaluator = _evaluator(config, run, model)
  # Grid rows: fixed held-out images when there is an eval set, else the first batch.
  samples, n = None, config.num_samples
  if evaluator is not None:
    samples = (evaluator.rgb[:n], None if evaluator.ir is None else evaluator.ir[:n] * 2 - 1)
  schedule = lr_schedule(config.optim, config.total_steps)
  progress = metrics.Progress(config.total_steps, start=step)
  logs, results = {}, {}

  # ---------------------------------------------------------------- loop
  while step < config.total_steps:
    host_batch = next(loader)
    if samples is None:
      samples = (host_batch["rgb"][:n], host_batch["ir"][:n])
    state, logs = step_fn(state, sharding.place_batch(host_batch, run.mesh))
    step += 1
    last = step == config.total_steps
    if step % config.log_every == 0 or last:
      lr = {"lr": float(schedule(step))}
      logs = common.log_train_step(run, step, logs, progress, config.batch_size, lr)
    if config.sample_every and (step % config.sample_every == 0 or last):
      run.writer.write_image(
        step, "rgb_fakeir_recrgb", sample_grid(state["params"], model, *samples)
      )
    if evaluator is not None and (step % config.eval_every == 0 or last):
      results = _evaluate(run, evaluator, state["params"], step)
    run.ckpt.save(step, state, loader, force=last)

  # ---------------------------------------------------------------- finish
  if evaluator is not None and not results:  # resumed a finished run: report it again.
    results = evaluator.run(state["params"]["rgb_to_ir"])
  run.ckpt.close()
  run.writer.close()
  return {
    "step": step,
    **{f"train/{k}": float(v) for k, v in logs.items()},
    **{f"eval/{k}": v for k, v in results.items()},
  }
