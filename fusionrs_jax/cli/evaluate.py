r"""Evaluate a finished run folder: `python -m fusionrs_jax.cli.evaluate TASK --flags`.

  retrieval   six-direction retrieval + zero-shot classification of a SigLIP run
              --checkpoint=RUN [--data=DIR] [--split=test] [--step=N] [--out=metrics.json]
  presence    zero-shot object presence of a SigLIP run on images with boxes
              --checkpoint=RUN --data=DIR [--split=val] [--modality=ir] [--out=...]
  captioning  BLEU/METEOR/ROUGE-L/CIDEr-D of a predictions JSONL (prediction, references, task)
              --predictions=FILE [--out=scores.json]

A user mistake (no such run folder, no dataset, unknown task) is one line on stderr, exit 2.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence

import numpy as np
from absl import flags, logging

from fusionrs_jax.core import checkpoint, command, fs, records, sharding
from fusionrs_jax.data import input_pipeline
from fusionrs_jax.evaluators import captioning, presence, retrieval
from fusionrs_jax.models import siglip
from fusionrs_jax.trainers import common
from fusionrs_jax.trainers import siglip as siglip_trainer

TASKS = ("retrieval", "presence", "captioning")


def retrieval_of_run(
  workdir: str, split: str = "test", data_dir: str | None = None, step: int | None = None
) -> dict[str, float]:
  """The SigLIP trainer's retrieval evaluation of a run folder's checkpoint."""
  config, model, params = checkpoint.load_run(workdir, siglip.from_config, step)
  if data_dir:
    config.data.dir = data_dir
  mesh = sharding.make_mesh(dict(config.mesh))
  evaluator = siglip_trainer.make_evaluator(config, model, mesh, config.data.dir, split)
  with sharding.activate(mesh):
    return evaluator.run(params)


def presence_of_run(
  workdir: str,
  data_dir: str,
  split: str = "val",
  modality: str = "ir",
  step: int | None = None,
  batch_size: int = 64,
  scores_path: str | None = None,
) -> dict[str, float]:
  """Presence metrics of a SigLIP run folder's newest (or given) checkpoint on the
  `modality` images of `data_dir:split`; `scores_path` (.npz, written atomically) keeps the
  per-image scores and labels."""
  if step is None:
    step, _ = checkpoint.run_params(workdir)
  config, model, params = checkpoint.load_run(workdir, siglip.from_config, step)
  mesh = sharding.make_mesh(dict(config.mesh))
  tok = input_pipeline.Tokenizer(common.tokenizer_path(config.data))
  pre = input_pipeline.Preprocess(
    image_size=model.image_size,
    tokenizer=None,
    text_len=1,
    modalities=(modality,),
    caption_fields=(),
    missing_modality="error",
    where=f"{data_dir}:{split}",
  )
  recs, images = [], []
  shards = records.list_shards(data_dir, split)
  for i, data in enumerate(d for p in shards for d in records.read_array_record(p)):
    recs.append(records.decode(data, where=f"{data_dir}:{split} record #{i}"))
    images.append(pre((i, data), None)[modality])
  if not recs:
    raise ValueError(f"{data_dir}:{split} has no records")
  embed_images, embed_texts = siglip.make_embed_fns(model, mesh)
  n_shards = sharding.num_batch_shards(mesh)
  bs = -(-batch_size // n_shards) * n_shards
  sink: dict[str, np.ndarray] = {}
  with sharding.activate(mesh):
    out = presence.evaluate(
      lambda x: retrieval.batched(lambda c: embed_images(params, c, modality), x, bs),
      lambda texts: retrieval.batched(
        lambda t: embed_texts(params, t), tok.encode(texts, model.text_len), bs
      ),
      recs,
      np.stack(images),
      scores_sink=sink,
    )
  if scores_path:
    buf = io.BytesIO()
    np.savez(buf, **sink)
    fs.write_bytes(scores_path, buf.getvalue())
  out["step"] = float(step)
  names = list(presence.CLASSES)
  out["image_size"], out["patch_size"] = float(model.image_size), float(model.patch_size)
  for c, px in presence.median_box_px(recs, names, model.image_size, modality).items():
    out[f"{c}/median_box_px"] = px
  train_dirs = [config.data.dir, *config.data.get("mix_dirs", ())]
  train_dir = next((d for d in train_dirs if not os.path.isdir(d)), None)
  if train_dir is None:
    texts = [t for d in train_dirs for t in presence.training_captions(d)]
    out["train_captions"] = float(len(texts))
    for c, n in presence.caption_mentions(texts, names).items():
      out[f"{c}/train_caption_mentions"] = float(n)
  else:
    logging.warning("training data %s not found: caption mentions not counted", train_dir)
  return out


def captioning_of_file(path: str) -> dict:
  """Scores of a predictions JSONL, per task; ValueError names a malformed line."""
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  for i, row in enumerate(rows):
    if not isinstance(row.get("references"), list) or "prediction" not in row:
      raise ValueError(f"{path} line {i + 1} needs 'prediction' and a 'references' list")
    row.setdefault("task", "caption")
  return captioning.score_by_task(rows)


def check_run_and_data(run: str | None, data: str | None, data_required: bool = False) -> None:
  """ValueError unless `run` is a SigLIP run folder and `data` (if given) a dataset."""
  if not run or not os.path.isfile(os.path.join(run, "config.json")):
    raise ValueError(
      f"--checkpoint={run}: no config.json there; it must be the run folder of a SigLIP "
      "training run (the --workdir given to fusionrs_jax.main)"
    )
  if data_required and not data:
    raise ValueError("--data is required: a dataset folder whose records carry boxes")
  if data and not os.path.isfile(os.path.join(data, records.INFO_FILE)):
    raise ValueError(f"--data={data} has no {records.INFO_FILE}: not a prepared dataset")


def define_flags() -> None:
  flags.DEFINE_string("checkpoint", None, "Run folder of a SigLIP training run.")
  flags.DEFINE_alias("workdir", "checkpoint")
  flags.DEFINE_string("data", None, "Dataset folder (retrieval default: the run's data).")
  flags.DEFINE_string("split", None, "Split to evaluate (retrieval: test, presence: val).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
  flags.DEFINE_enum("modality", "ir", ["ir", "rgb"], "presence: image field to score.")
  flags.DEFINE_string("predictions", None, "captioning: JSONL of prediction/references/task.")
  flags.DEFINE_string("out", None, "Also write the metrics JSON here.")


def run_task(task: str, f) -> tuple[dict, str]:
  """(metrics, printable table) of one task; ValueError/FileNotFoundError for user mistakes."""
  if task == "retrieval":
    check_run_and_data(f.checkpoint, f.data)
    result = retrieval_of_run(f.checkpoint, f.split or "test", f.data, f.step)
    return result, retrieval.format_table(result)
  if task == "presence":
    check_run_and_data(f.checkpoint, f.data, data_required=True)
    result = presence_of_run(f.checkpoint, f.data, f.split or "val", f.modality, f.step)
    return result, presence.format_table(result)
  if not f.predictions or not os.path.isfile(f.predictions):
    raise ValueError(f"--predictions={f.predictions}: no such file")
  result = captioning_of_file(f.predictions)
  return result, ""


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2 or argv[1] not in TASKS:
    got = " ".join(argv[1:]) or "nothing"
    command.fail(f"expected one task ({'|'.join(TASKS)}), got {got}")
  try:
    result, table = run_task(argv[1], flags.FLAGS)
  except (ValueError, FileNotFoundError) as e:
    command.fail(command.message_of(e))
  if table:
    print(table)
  print(json.dumps(result, indent=1, sort_keys=True))
  if flags.FLAGS.out:
    records.write_json_atomic(flags.FLAGS.out, result)


if __name__ == "__main__":
  define_flags()
  command.run(main, positional=1)
