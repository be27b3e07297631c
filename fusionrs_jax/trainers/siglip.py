"""SigLIP RGB-IR-text trainer: sharded sigmoid-contrastive training with periodic
six-direction retrieval evaluation, checkpoints and resume."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from absl import logging

from fusionrs_jax.core import metrics, sharding
from fusionrs_jax.data import input_pipeline
from fusionrs_jax.evaluators import retrieval
from fusionrs_jax.losses import sigmoid as losses
from fusionrs_jax.models import scan
from fusionrs_jax.models import siglip as siglip_model
from fusionrs_jax.models.hf import io as hf_io
from fusionrs_jax.models.hf import siglip as hf_siglip
from fusionrs_jax.trainers import common


def _pair_loss(config, mesh):
  impl = config.loss.impl
  if impl == "chunked":
    return functools.partial(losses.chunked_sigmoid_loss, mesh=mesh, axis_names=("data", "fsdp"))
  if impl == "reference":
    return losses.sigmoid_loss
  if impl == "softmax":
    return lambda zi, zt, t, b, valid=None: losses.softmax_contrastive_loss(zi, zt, t, valid)
  raise common.UserError(f"config.loss.impl must be chunked|reference|softmax, got {impl!r}")


def input_masks(batch) -> dict:
  """Which rows of a batch have each loss input: {"rgb", "ir", "text", "ir_text"} -> [B] bool.

  The IR-aware caption falls back to the scene caption (input_pipeline), so its row has text
  when either is there. Keys whose batch field is absent are left out (treated as present).
  """
  masks = {
    "rgb": batch.get("has_rgb"),
    "ir": batch.get("has_ir"),
    "text": batch.get("has_caption"),
  }
  if batch.get("has_ir_caption") is not None and batch.get("has_caption") is not None:
    masks["ir_text"] = batch["has_ir_caption"] | batch["has_caption"]
  return {k: v for k, v in masks.items() if v is not None}


def make_train_step(model, tx, config, mesh):
  """(state, batch) -> (state, metrics); batch keys from the input pipeline."""
  weights = dict(config.loss.weights)
  pair_loss = _pair_loss(config, mesh)

  def loss_fn(params, batch):
    inputs = {
      "rgb": batch.get("rgb"),
      "ir": batch.get("ir"),
      "text": batch.get("tokens"),
      "ir_text": batch.get("ir_tokens"),
    }
    emb = model.apply(params, **inputs)
    total, per_pair = losses.multi_pair_loss(
      emb, weights, emb["t"], emb["b"], pair_loss, masks=input_masks(batch)
    )
    return total, {**{f"loss/{k}": v for k, v in per_pair.items()}, "t": emb["t"], "b": emb["b"]}

  def train_step(state, batch):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = {**state, "params": params, "opt_state": opt_state, "step": state["step"] + 1}
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}

  return train_step


def make_evaluator(config, model, mesh, data_dir: str, split: str):
  embed_images, embed_texts = siglip_model.make_embed_fns(model, mesh)
  eval_batch = config.eval.batch_size
  shards = sharding.num_batch_shards(mesh)
  eval_batch = -(-eval_batch // shards) * shards
  return retrieval.RetrievalEvaluator(
    data_dir,
    split,
    image_size=model.image_size,
    tokenizer_path=common.tokenizer_path(config.data),
    text_len=model.text_len,
    batch_size=eval_batch,
    embed_images=embed_images,
    embed_texts=embed_texts,
    ks=config.eval.ks,
    rgb_prompt=config.eval.rgb_prompt,
    ir_prompt=config.eval.ir_prompt,
  )


def init_fn(model):
  return lambda rng: model.init(rng, **siglip_model.dummy_inputs(model))


def _maybe_init_from(config, model, state, shardings):
  src = config.init_from
  if not src:
    return state
  if hf_io.is_hf_folder(src):  # model.safetensors or its shards + index
    like = jax.eval_shape(scan.unscan_params, state["params"])  # per-layer shapes, no copy
    try:
      loaded = hf_siglip.load_hf_siglip_like(src, like)
    except (ValueError, KeyError) as e:
      raise common.UserError(f"init_from {e.args[0] if e.args else e}") from e
    loaded = common.match_layer_layout(loaded, config)
  else:
    loaded = common.init_params_from_checkpoint(src, state["params"], shardings["params"], config)
  params = jax.tree.map(lambda x, s: jax.device_put(x, s), loaded, shardings["params"])
  logging.info("initialised params from %s", src)
  return {**state, "params": params}


def batch_fields(config, model) -> dict[str, tuple[tuple[int, ...], Any]]:
  """Per-example fields of the input pipeline's batches: name -> (shape, dtype)."""
  size, length = model.image_size, model.text_len
  fields: dict[str, tuple[tuple[int, ...], Any]] = {"index": ((), jnp.int32)}
  if "captions" in config.data.caption_fields:
    fields.update(tokens=((length,), jnp.int32), has_caption=((), jnp.bool_))
  if "ir_captions" in config.data.caption_fields:
    fields.update(ir_tokens=((length,), jnp.int32), has_ir_caption=((), jnp.bool_))
  for m in config.data.modalities:
    fields[m] = ((size, size, 3 if m == "rgb" else 1), jnp.float32)
    fields[f"has_{m}"] = ((), jnp.bool_)
  return fields


def step_program(config, mesh) -> common.StepProgram:
  """The jitted train step of `config` on `mesh` with abstract state and global batch."""
  model = siglip_model.from_config(config)
  fields = batch_fields(config, model)
  make_step = lambda tx: make_train_step(model, tx, config, mesh)
  return common.step_program(config, mesh, model, init_fn(model), make_step, fields)


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  # ---------------------------------------------------------------- setup
  run, data_dir, program, state, shardings = common.start(config, workdir, step_program)
  model = program.model
  loader = input_pipeline.make_train_loader(
    [data_dir, *config.data.get("mix_dirs", ())],
    config.data.train_split,
    batch_size=common.local_batch_size(config),
    image_size=model.image_size,
    seed=config.seed,
    tokenizer_path=common.tokenizer_path(config.data),
    text_len=model.text_len,
    modalities=tuple(config.data.modalities),
    caption_fields=tuple(config.data.caption_fields),
    augment=config.data.augment,
    missing_modality=config.data.missing_modality,
    worker_count=common.worker_count(config.data),
  )
  data_iter = common.device_batches(loader, config.data, run.mesh)
  state, step = common.restore_or_init(run, state, shardings, data_iter)
  if step == 0:
    state = _maybe_init_from(config, model, state, shardings)
  eval_dir = config.data.get("eval_dir") or data_dir
  evaluator = make_evaluator(config, model, run.mesh, eval_dir, config.data.eval_split)

  train_step = program.step
  progress = metrics.Progress(config.total_steps, start=step)
  result: dict[str, Any] = {}

  # ---------------------------------------------------------------- loop
  with sharding.activate(run.mesh):
    while step < config.total_steps:
      batch = next(data_iter)
      state, train_metrics = train_step(state, batch)
      step += 1
      if step % config.log_every == 0 or step == config.total_steps:
        common.log_train_step(run, step, train_metrics, progress, config.batch_size)
      if step % config.eval_every == 0 or step == config.total_steps:
        result = _evaluate(run, evaluator, state["params"], step)
      run.ckpt.save(step, state, data_iter, force=step == config.total_steps)

  # ---------------------------------------------------------------- finish
  data_iter.close()
  run.ckpt.close()
  run.writer.close()
  if result:
    print(retrieval.format_table(result, tuple(config.eval.ks)), flush=True)
  return result


def _evaluate(run: common.Run, evaluator, params, step: int) -> dict[str, float]:
  result = evaluator.run(params)
  common.write_eval(run, step, result)
  directions = [d for d in retrieval.DIRECTIONS if f"{d}/R@1" in result]
  plot = metrics.bar_chart({d: result[f"{d}/R@5"] for d in directions}, title=f"R@5 at step {step}")
  run.writer.write_image(step, "retrieval_R5", plot)
  logging.info("eval step %d: mR %.2f", step, result["mR"])
  return result
