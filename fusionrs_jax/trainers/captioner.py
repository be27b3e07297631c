"""Captioner trainer: sharded prefix-LM training on the task mixture, periodic decoding eval
(captioning metrics + instruction exact match) with sample pages, checkpoints and resume."""

from __future__ import annotations

import base64
import filecmp
import html
import io
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from PIL import Image

from fusionrs_jax.core import checkpoint, fs, metrics, sharding
from fusionrs_jax.data import captioner as captioner_data
from fusionrs_jax.data import input_pipeline
from fusionrs_jax.evaluators import captioning
from fusionrs_jax.models import captioner as captioner_model
from fusionrs_jax.models import decoding, scan
from fusionrs_jax.models.hf import io as hf_io
from fusionrs_jax.models.hf import paligemma as hf_paligemma
from fusionrs_jax.trainers import common

LOSS_NORMALIZATIONS = ("per_example", "token")
# The SentencePiece model a PaliGemma folder must carry (its Gemma vocabulary).
TOKENIZER_FILE = "tokenizer.model"


def answer_loss(logits, batch, normalize: str = "per_example"):
  """Next-token cross-entropy over answer targets. logits [B, L, V]; returns (loss, n targets).

  per_example (PaliGemma): each example's mean over its own answer tokens, then the mean over
  the examples that have any, so long answers do not outweigh short ones. token: the mean over
  every answer token of the batch.
  """
  if normalize not in LOSS_NORMALIZATIONS:
    raise ValueError(f"loss normalize must be one of {LOSS_NORMALIZATIONS}, got {normalize!r}")
  targets = batch["tokens"][:, 1:]
  weights = batch["loss_mask"][:, 1:].astype(jnp.float32)  # [B, L-1]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], targets)
  n = jnp.maximum(weights.sum(), 1.0)
  if normalize == "token":
    return jnp.sum(ce * weights) / n, n
  per_row = weights.sum(1)
  row_loss = jnp.sum(ce * weights, 1) / jnp.maximum(per_row, 1.0)
  rows = (per_row > 0).astype(jnp.float32)
  return jnp.sum(row_loss * rows) / jnp.maximum(rows.sum(), 1.0), n


def make_train_step(model, tx, freeze_image_encoder: bool = False, normalize: str = "per_example"):
  """(state, batch) -> (state, metrics). A frozen image encoder gets zero updates (so not even
  weight decay moves it); its gradients are not computed (stop_gradient in the model)."""

  def loss_fn(params, batch):
    # has_rgb/has_ir mask a missing image out of the prefix (its pixels are a placeholder).
    text = (batch["tokens"], batch["input_mask"], batch["mask_ar"])
    masks = {"has_rgb": batch.get("has_rgb"), "has_ir": batch.get("has_ir")}
    logits = model.apply(params, batch["rgb"], batch["ir"], *text, **masks)
    loss, n = answer_loss(logits, batch, normalize)
    correct = (jnp.argmax(logits[:, :-1], -1) == batch["tokens"][:, 1:]) & batch["loss_mask"][:, 1:]
    return loss, {"token_accuracy": correct.sum() / n, "answer_tokens": n}

  def train_step(state, batch):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    if freeze_image_encoder:
      inner = updates["params"]
      updates = {**updates, "params": {**inner, "img": jax.tree.map(jnp.zeros_like, inner["img"])}}
    params = optax.apply_updates(state["params"], updates)
    new_state = {**state, "params": params, "opt_state": opt_state, "step": state["step"] + 1}
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}

  return train_step


def init_image_encoder(path: str, state: dict, shardings: dict, config, model) -> dict:
  """Copies a SigLIP image tower into params/img: the RGB tower of this project's SigLIP
  Orbax checkpoint, or the vision tower of a transformers SiglipModel / SiglipVisionModel /
  PaliGemma folder (config.json + model.safetensors)."""
  if hf_io.is_hf_folder(path):
    try:
      src, vision_hp = hf_paligemma.load_hf_vision_tower(path)
    except (ValueError, KeyError) as e:
      raise common.UserError(f"image_encoder_init {path!r}: {e}") from e
    problems = hf_io.hp_differences(vision_hp, model.vision_hp, "vision")
    if problems:
      raise common.UserError(
        f"image_encoder_init {path!r} does not match config.model.vision_preset/image_size: "
        + "; ".join(problems)
      )
    src = common.match_layer_layout(src, config)
  else:
    ckpt = checkpoint.Checkpointer(path, save_every=1, async_save=False)
    raw = ckpt.restore_raw()
    ckpt.close()
    src = common.match_layer_layout(raw["params"], config)["params"].get("vision_model")
    if src is None:
      raise common.UserError(f"{path!r} holds no SigLIP vision_model params")
    src = {k: v for k, v in src.items() if k != "head"}
  dst, dst_sh = state["params"]["params"]["img"], shardings["params"]["params"]["img"]
  try:
    img = jax.tree.map(
      lambda new, old, s: jax.device_put(np.asarray(old, new.dtype), s), dst, src, dst_sh
    )
  except ValueError as e:
    raise common.UserError(
      f"SigLIP checkpoint {path!r} does not match the captioner's image "
      f"encoder (check config.model.vision_preset/image_size): {e}"
    ) from e
  for a, b in zip(jax.tree.leaves(dst), jax.tree.leaves(img)):
    if a.shape != b.shape:
      raise common.UserError(f"SigLIP checkpoint {path!r}: shape {b.shape} != {a.shape}")
  params = {**state["params"], "params": {**state["params"]["params"], "img": img}}
  logging.info("image encoder initialised from %s", path)
  return {**state, "params": params}


def check_init_from(config) -> None:
  """Refuses, in one line and before any work, an init_from PaliGemma folder the run cannot
  use as configured: not a PaliGemma model, hyperparameters other than the config's (each
  named), or a run that would not tokenize with its tokenizer.model (the vocabulary its
  embeddings index)."""
  src = config.init_from
  tok = common.tokenizer_path(config.data)
  if not src:
    # The transfer preset's tokenizer is "<init_from>/tokenizer.model": init_from is unset.
    if tok == "/" + TOKENIZER_FILE:
      raise common.UserError("give --config.init_from=<PaliGemma save_pretrained folder>")
    return
  if not hf_io.is_hf_folder(src):
    return  # an Orbax checkpoint folder of this project: same tokenizer as its run
  kind = hf_io.model_type(src)
  if kind != "paligemma":
    raise common.UserError(
      f"init_from {src!r} holds a {kind!r} model; the captioner starts from a PaliGemma "
      "folder (a SigLIP image tower goes to config.model.image_encoder_init)"
    )
  model = captioner_model.from_config(config)
  try:
    vision_hp, llm_hp = hf_paligemma.hp_from_hf_config(hf_io.read_config(src))
  except ValueError as e:
    raise common.UserError(f"init_from {src!r}: {e}") from e
  problems = hf_io.hp_differences(vision_hp, model.vision_hp, "vision")
  problems += hf_io.hp_differences(llm_hp, model.llm_hp, "llm")
  if problems:
    raise common.UserError(
      f"init_from {src!r} does not match the config (model.vision_preset, model.image_size, "
      "model.llm_preset, data.vocab_size): " + "; ".join(problems)
    )
  folder_tok = os.path.join(src, TOKENIZER_FILE)
  if not os.path.isfile(folder_tok):
    raise common.UserError(
      f"{src} has no {TOKENIZER_FILE}: the run must tokenize with the SentencePiece model of "
      "the weights' vocabulary; copy the model release's tokenizer.model into that folder"
    )
  if not os.path.isfile(tok) or not filecmp.cmp(tok, folder_tok, shallow=False):
    raise common.UserError(
      f"config.data.tokenizer {tok!r} is not {folder_tok}; set "
      f"--config.data.tokenizer={folder_tok} (the vocabulary the weights were trained with)"
    )


def init_from(config, model, state: dict, shardings: dict) -> dict:
  """Params from config.init_from: a PaliGemma save_pretrained folder (hyperparameters must
  match the config) or an Orbax checkpoint folder of this project; either layer layout."""
  src = config.init_from
  if hf_io.is_hf_folder(src):
    like = jax.eval_shape(scan.unscan_params, state["params"])["params"]  # per-layer shapes
    try:
      loaded = hf_io.fit_to(hf_paligemma.load_hf_paligemma_for(src, model), like, src)
    except (ValueError, KeyError) as e:
      raise common.UserError(f"init_from {e.args[0] if e.args else e}") from e
    loaded = common.match_layer_layout({"params": loaded}, config)
    params = jax.tree.map(jax.device_put, loaded, shardings["params"])
  else:
    params = common.init_params_from_checkpoint(src, state["params"], shardings["params"], config)
  logging.info("initialised params from %s", src)
  return {**state, "params": params}


def make_evaluator(config, model, mesh, data_dir: str, split: str):
  tok = input_pipeline.Tokenizer(common.tokenizer_path(config.data))
  items = captioner_data.eval_items(
    data_dir,
    split,
    model.vision_hp["image_size"],
    model.inputs,
    tuple(config.eval.tasks),
    config.eval.max_records,
  )
  shards = sharding.num_batch_shards(mesh)
  batch_size = -(-config.eval.batch_size // shards) * shards
  cfg = decoding.DecodeConfig(
    max_len=config.eval.max_decode_len,
    method=config.eval.decode_method,
    temperature=config.eval.temperature,
    top_k=config.eval.top_k,
    beam_size=config.eval.beam_size,
    no_repeat_ngram_size=config.eval.get("no_repeat_ngram_size", 0),
    repetition_penalty=config.eval.get("repetition_penalty", 1.0),
  )
  decode = decoding.make_decode_fn(model, cfg)

  def generate(params, batch):
    placed = {k: jax.device_put(v, sharding.batch_sharding(mesh, v.ndim)) for k, v in batch.items()}
    return tok.decode(np.asarray(decode(params, placed, jax.random.PRNGKey(config.seed))))

  batches = lambda: captioner_data.eval_batches(items, tok, batch_size, config.data.prompt_len)
  return captioning.CaptioningEvaluator(items, batches, generate)


def init_fn(model):
  return lambda rng: model.init(rng, **captioner_model.dummy_inputs(model))


def batch_fields(config, model) -> dict[str, tuple[tuple[int, ...], Any]]:
  """Per-example fields of the captioner input pipeline's batches: name -> (shape, dtype)."""
  size, length = model.vision_hp["image_size"], config.data.text_len
  fields: dict[str, tuple[tuple[int, ...], Any]] = {"index": ((), jnp.int32)}
  for m in input_pipeline.MODALITIES:
    fields[m] = ((size, size, 3 if m == "rgb" else 1), jnp.float32)
    fields[f"has_{m}"] = ((), jnp.bool_)
  fields.update(
    tokens=((length,), jnp.int32),
    mask_ar=((length,), jnp.int32),
    input_mask=((length,), jnp.bool_),
    loss_mask=((length,), jnp.bool_),
    task=((), jnp.int32),
  )
  return fields


def step_program(config, mesh) -> common.StepProgram:
  """The jitted train step of `config` on `mesh` with abstract state and global batch."""
  model = captioner_model.from_config(config)
  fields = batch_fields(config, model)
  make_step = lambda tx: make_train_step(
    model, tx, config.model.freeze_image_encoder, config.loss.normalize
  )
  return common.step_program(config, mesh, model, init_fn(model), make_step, fields)


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  # ---------------------------------------------------------------- setup
  check_init_from(config)
  run, data_dir, program, state, shardings = common.start(config, workdir, step_program)
  model = program.model
  loader = captioner_data.make_train_loader(
    data_dir,
    config.data.train_split,
    batch_size=common.local_batch_size(config),
    image_size=model.vision_hp["image_size"],
    seed=config.seed,
    tokenizer_path=common.tokenizer_path(config.data),
    inputs=model.inputs,
    task_weights=dict(config.data.task_weights),
    text_len=config.data.text_len,
    prompt_len=config.data.prompt_len,
    augment=config.data.augment,
    worker_count=common.worker_count(config.data),
  )
  data_iter = common.device_batches(loader, config.data, run.mesh)
  state, step = common.restore_or_init(run, state, shardings, data_iter)
  if step == 0 and config.init_from:
    state = init_from(config, model, state, shardings)
  if step == 0 and config.model.image_encoder_init:
    state = init_image_encoder(config.model.image_encoder_init, state, shardings, config, model)
  evaluator = make_evaluator(config, model, run.mesh, data_dir, config.data.eval_split)
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
        tokens = config.batch_size * (model.num_image_tokens + config.data.text_len)
        common.log_train_step(
          run,
          step,
          train_metrics,
          progress,
          config.batch_size,
          {"tokens_per_sec": progress.rate(step) * tokens},
        )
      if step % config.eval_every == 0 or step == config.total_steps:
        result = _evaluate(run, evaluator, state["params"], step)
      run.ckpt.save(step, state, data_iter, force=step == config.total_steps)

  # ---------------------------------------------------------------- finish
  data_iter.close()
  run.ckpt.close()
  run.writer.close()
  return result


def _evaluate(run: common.Run, evaluator, params, step: int) -> dict[str, float]:
  result = evaluator.run(params)
  common.write_eval(run, step, result)
  if jax.process_index() == 0:
    write_samples(
      fs.join(run.workdir, "samples"),
      step,
      evaluator.rows,
      {it.record_id: it for it in evaluator.items},
      run.config.eval.html_rows,
    )
  logging.info(
    "eval step %d: %s",
    step,
    {k: round(v, 4) for k, v in result.items() if k.endswith(("CIDEr-D", "exact_match"))},
  )
  return result


def _png_b64(image: np.ndarray) -> str:
  buf = io.BytesIO()
  img = metrics.to_uint8(image)
  Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(buf, "PNG")
  return base64.b64encode(buf.getvalue()).decode()


def write_samples(
  folder: str, step: int, rows: list[dict], items_by_id: dict, html_rows: int
) -> tuple[str, str]:
  """All predictions as `step_N.jsonl` and the first `html_rows` as a self-contained HTML page
  (RGB and IR as base64 PNG, prompt, prediction, references). Returns both paths."""
  fs.makedirs(folder)
  jsonl = fs.join(folder, f"step_{step:07d}.jsonl")
  fs.write_text(jsonl, "".join(json.dumps(row) + "\n" for row in rows))
  cells = []
  for row in rows[:html_rows]:
    it = items_by_id[row["record_id"]]
    refs = "".join(f"<li>{html.escape(r)}</li>" for r in row["references"])
    cells.append(
      f"<tr><td><img src='data:image/png;base64,{_png_b64(it.rgb)}' width=128>"
      f"<img src='data:image/png;base64,{_png_b64(it.ir)}' width=128><br>"
      f"{html.escape(row['record_id'])}</td><td>{html.escape(row['task'])}</td>"
      f"<td>{html.escape(row['prompt'])}</td><td><b>{html.escape(row['prediction'])}</b></td>"
      f"<td><ul>{refs}</ul></td></tr>"
    )
  page = fs.join(folder, f"step_{step:07d}.html")
  with fs.open(page, "w") as f:
    f.write(
      f"<html><meta charset='utf-8'><body><h2>Captioner samples, step {step}</h2>"
      "<table border=1 cellpadding=4><tr><th>RGB | IR</th><th>task</th><th>prompt</th>"
      f"<th>prediction</th><th>references</th></tr>{''.join(cells)}</table></body></html>"
    )
  return jsonl, page
