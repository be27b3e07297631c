"""Captioner trainer on the tiny demo world: data mixture rows, loss falls on a tiny overfit,
the real main for 2 steps with samples and metrics, resume equals an uninterrupted run."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fusionrs_jax.cli import main
from fusionrs_jax.core import checkpoint, metrics, sharding
from fusionrs_jax.data import captioner as captioner_data
from fusionrs_jax.data import input_pipeline
from fusionrs_jax.models import captioner as captioner_model
from fusionrs_jax.trainers import captioner, common
from tests.conftest import tiny_config


def test_training_rows_are_prefix_lm_with_loss_on_the_answer(tiny_dataset):
  tok = input_pipeline.Tokenizer(os.path.join(tiny_dataset, "tokenizer.model"))
  ex = captioner_data.encode_example(tok, "caption rgb ir", "a red roof", 16, 8)
  sep = captioner_data.sep_id(tok)
  tokens = ex["tokens"].tolist()
  assert tokens[0] == input_pipeline.BOS_ID and sep in tokens
  s = tokens.index(sep)
  assert ex["mask_ar"][: s + 1].sum() == 0 and ex["mask_ar"][s + 1] == 1
  assert tok.decode(np.array([tokens[s + 1 :]]))[0] == "a red roof"
  assert ex["loss_mask"].sum() == tokens.index(input_pipeline.EOS_ID) - s
  loader = captioner_data.make_train_loader(
    tiny_dataset,
    "train",
    batch_size=8,
    image_size=32,
    seed=0,
    tokenizer_path=os.path.join(tiny_dataset, "tokenizer.model"),
    inputs="rgb_ir",
    task_weights={"caption": 1.0, "ir_caption": 1.0, "instruction": 1.0},
    text_len=32,
    prompt_len=12,
  )
  batch = next(iter(loader))
  assert batch["rgb"].shape == (8, 32, 32, 3) and batch["ir"].shape == (8, 32, 32, 1)
  assert batch["tokens"].shape == batch["mask_ar"].shape == (8, 32)
  assert len(set(batch["task"].tolist())) > 1  # the mixture draws several tasks


def test_every_inputs_ablation_gets_the_same_tasks_only_the_prompt_names_the_images():
  from fusionrs_jax.core import records

  rec = records.Record(
    id="r",
    source="s",
    split="test",
    rgb=b"x",
    ir=b"y",
    ir_origin="translated",
    captions=["a farm"],
    ir_captions=["dark fields"],
    instructions=[{"question": "is it bright?", "answer": "no"}],
  )
  got = {inputs: captioner_data.candidates(rec, inputs) for inputs in ("rgb_ir", "rgb", "ir")}
  for inputs, pairs in got.items():
    assert pairs["caption"] == [(captioner_data.CAPTION_PROMPTS[inputs], "a farm")]
    # The RGB-only ablation also learns (and is scored on) IR-aware captions: describing the
    # IR view from RGB alone is the baseline the dual-image model has to beat.
    assert pairs["ir_caption"] == [(captioner_data.IR_PROMPT, "dark fields")]
    assert pairs["instruction"] == [("is it bright?", "no")]


def _tiny_loader(tiny_dataset, config, batch_size):
  return captioner_data.make_train_loader(
    tiny_dataset,
    "train",
    batch_size=batch_size,
    image_size=32,
    seed=0,
    tokenizer_path=os.path.join(tiny_dataset, "tokenizer.model"),
    inputs="rgb_ir",
    task_weights=dict(config.data.task_weights),
    text_len=32,
    prompt_len=12,
    augment=config.data.augment,
  )


def test_loss_falls_when_overfitting_one_batch(tiny_dataset):
  config = tiny_config(
    "captioner_dual",
    "size=tiny",
    tiny_dataset,
    total_steps=30,
    **{"optim.lr": 3e-3, "optim.warmup_steps": 1, "data.augment": False},
  )
  model = captioner_model.from_config(config)
  tx = common.make_optimizer(config.optim, config.total_steps)
  mesh = sharding.make_mesh(dict(config.mesh))
  state, shardings = common.init_state(captioner.init_fn(model), tx, 0, mesh)
  loader = _tiny_loader(tiny_dataset, config, batch_size=16)
  step = jax.jit(
    captioner.make_train_step(model, tx),
    in_shardings=(shardings, None),
    out_shardings=(shardings, None),
    donate_argnums=0,
  )
  with sharding.activate(mesh):
    batch = sharding.place_batch(next(iter(loader)), mesh)
    losses = []
    for _ in range(30):
      state, m = step(state, batch)
      losses.append(float(m["loss"]))
  assert losses[-1] < 0.6 * losses[0], losses


def test_frozen_image_encoder_does_not_move(tiny_dataset):
  config = tiny_config(
    "captioner_dual", "size=tiny", tiny_dataset, **{"model.freeze_image_encoder": True}
  )
  model = captioner_model.from_config(config)
  tx = common.make_optimizer(config.optim, config.total_steps)
  mesh = sharding.make_mesh(dict(config.mesh))
  state, _ = common.init_state(captioner.init_fn(model), tx, 0, mesh)
  before = jax.tree.map(np.asarray, state["params"])
  loader = _tiny_loader(tiny_dataset, config, batch_size=8)
  step = jax.jit(captioner.make_train_step(model, tx, freeze_image_encoder=True))
  with sharding.activate(mesh):
    batch = sharding.place_batch(next(iter(loader)), mesh)
    for _ in range(2):  # the first step has learning rate 0 (warmup starts at 0)
      state, _ = step(state, batch)
  after = jax.tree.map(np.asarray, state["params"])
  for a, b in zip(
    jax.tree.leaves(before["params"]["img"]), jax.tree.leaves(after["params"]["img"])
  ):
    np.testing.assert_array_equal(a, b)
  moved = [
    np.abs(a - b).max()
    for a, b in zip(
      jax.tree.leaves(before["params"]["llm"]), jax.tree.leaves(after["params"]["llm"])
    )
  ]
  assert max(moved) > 0


@pytest.mark.slow
def test_main_two_steps_writes_metrics_samples_and_resumes_exactly(tiny_dataset, tmp_path):
  over = {
    "total_steps": 2,
    "eval_every": 2,
    "checkpoint_every": 1,
    "batch_size": 8,
    "async_checkpoints": False,
  }
  config = tiny_config("captioner_dual", "size=tiny,runlocal=1", tiny_dataset, **over)
  result = main.run(config, str(tmp_path / "a"))
  assert "caption/CIDEr-D" in result and "answers/exact_match" in result
  rows = metrics.read_jsonl(str(tmp_path / "a" / "metrics.jsonl"))
  assert [r["step"] for r in rows if "loss" in r] == [1, 2]
  samples = tmp_path / "a" / "samples"
  lines = (samples / "step_0000002.jsonl").read_text().splitlines()
  assert {"prediction", "references", "prompt", "task"} <= set(json.loads(lines[0]))
  assert "base64" in (samples / "step_0000002.html").read_text()
  # Resume: 1 step, then continue to 2 == 2 straight steps (data iterator restored too).
  config1 = tiny_config(
    "captioner_dual",
    "size=tiny,runlocal=1",
    tiny_dataset,
    **{**over, "total_steps": 1, "eval_every": 100},
  )
  main.run(config1, str(tmp_path / "b"))
  config2 = tiny_config(
    "captioner_dual", "size=tiny,runlocal=1", tiny_dataset, **{**over, "eval_every": 100}
  )
  main.run(config2, str(tmp_path / "b"))
  (sa, a) = checkpoint.run_params(str(tmp_path / "a"))
  (sb, b) = checkpoint.run_params(str(tmp_path / "b"))
  assert sa == sb == 2
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_answer_loss_normalises_per_example_or_per_token():
  """Two answers of 1 and 3 tokens with per-token losses 2 and (1, 1, 1): per example the
  mean of (2, 1), per token (2 + 3) / 4; a row without targets counts in neither."""
  v = 4
  tokens = jnp.array([[0, 1, 0, 0], [0, 2, 2, 2], [0, 0, 0, 0]])
  mask = jnp.array([[0, 1, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0]], bool)
  # logits at position t predict tokens[t + 1]; pick values giving ce 2 (row 0) and 1 (row 1).
  logits = np.zeros((3, 4, v), np.float32)

  def logits_for_ce(target, ce):
    # softmax CE of a one-hot-boosted row: -log(e^a / (e^a + (v - 1))) = ce
    a = np.log((v - 1) / (np.exp(ce) - 1))
    row = np.zeros(v, np.float32)
    row[target] = a
    return row

  logits[0, 0] = logits_for_ce(1, 2.0)
  for t in range(3):
    logits[1, t] = logits_for_ce(2, 1.0)
  batch = {"tokens": tokens, "loss_mask": mask}
  per_example, n = captioner.answer_loss(jnp.asarray(logits), batch, "per_example")
  per_token, _ = captioner.answer_loss(jnp.asarray(logits), batch, "token")
  assert float(n) == 4
  assert float(per_example) == pytest.approx(1.5, rel=1e-5)
  assert float(per_token) == pytest.approx(5 / 4, rel=1e-5)
  with pytest.raises(ValueError, match="per_example"):
    captioner.answer_loss(jnp.asarray(logits), batch, "sum")
