r"""The FusionRS reproduction as one resumable command.

  python -m fusionrs_jax.pipeline --config=configs/pipeline_fusionrs.py

Stages run in order; each one that finishes writes `<out>/stages/<name>.json` (its result and
wall time) atomically, and a re-run skips every stage with such a file. Training stages
resume from their own checkpoints, so an interrupted run loses at most the steps since the
last checkpoint. `--redo=name,...` (a stage name or a prefix such as `siglip_`) forgets
finished stages, and the report is always rebuilt from the stage files. The report writes
`<results>/<stage>.json` per stage, `<results>/summary.json` and `<docs>/RESULTS.md` with its
figures under `<docs>/results/`.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from data_prep import translate
from data_prep.ingest import sources, tokenizer
from data_prep.ingest import writer as ingest
from data_prep.ir_text import captions as ir_captions
from fusionrs_jax.cli import evaluate
from fusionrs_jax.core import checkpoint, fs, records
from fusionrs_jax.pipeline import report as pipeline_report


def define_flags() -> None:
  """CLI flags, defined only when run as a program (fusionrs_jax.main owns --config
  whenever both modules are imported in one process, e.g. in tests)."""
  config_flags.DEFINE_config_file(
    "config",
    "configs/pipeline_fusionrs.py",
    "Pipeline config, e.g. "
    "configs/pipeline_fusionrs.py:profile=cpu; override fields with --config.seeds=1.",
  )
  flags.DEFINE_list("redo", [], "Stage names or name prefixes to run again.")
  flags.DEFINE_bool("list", False, "Print the stages and whether each is done; run none.")


@dataclasses.dataclass
class Stage:
  name: str
  fn: Callable[[], dict[str, Any]]


def _fmt_secs(secs: float) -> str:
  secs = round(secs)
  return (
    f"{secs // 3600}h{secs % 3600 // 60:02d}m{secs % 60:02d}s"
    if secs >= 3600
    else (f"{secs // 60}m{secs % 60:02d}s")
  )


def _load_experiment(name: str, arg: str) -> ml_collections.ConfigDict:
  """configs/<name>.py's get_config(arg), unlocked for the pipeline's overrides."""

  return importlib.import_module(f"configs.{name}").get_config(arg)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """The trainer named by config.trainer, in this process (as fusionrs_jax.main runs it)."""

  module = importlib.import_module(f"fusionrs_jax.trainers.{config.trainer}")
  return _floats(module.train_and_evaluate(config, workdir))


def _set_steps(c: ml_collections.ConfigDict, steps: int, evals: int = 2) -> None:
  """Overrides total_steps (0 keeps the file's own) and spreads evals/checkpoints."""
  if steps:
    c.total_steps = steps
  every = max(1, c.total_steps // evals)
  c.eval_every = c.checkpoint_every = every
  if "sample_every" in c and c.sample_every:
    c.sample_every = every


class Pipeline:
  """Stage list + runner for one pipeline config."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.c = config
    self.out = config.out
    self.data = os.path.join(self.out, "data")
    self.runs = os.path.join(self.out, "workdirs")
    self.stage_dir = os.path.join(self.out, "stages")

  # ------------------------------------------------------------------ paths
  def dataset(self, name: str) -> str:
    return os.path.join(self.data, name)

  def workdir(self, name: str) -> str:
    return os.path.join(self.runs, name)

  def seeds(self) -> list[int]:
    return list(range(int(self.c.seeds)))

  def siglip_name(self, variant: str, seed: int) -> str:
    return f"siglip_{variant}_s{seed}"

  def thermal_name(self, arm: str, seed: int) -> str:
    return f"thermal_{arm}_s{seed}"

  def captioner_base_runs(self) -> list[tuple[str, str, str]]:
    """(run name, inputs, SigLIP variant of the encoder) per captioner: one per `inputs` on
    the main encoder, plus rgb_ir on the scene-caption SigLIP when that variant runs (does
    aligning IR to IR-aware captions help IR captioning downstream?)."""
    enc = self.c.captioner.encoder_from
    runs = [(f"captioner_{inp}", inp, enc) for inp in self.c.captioner.inputs]
    if (
      "scene_captions" in self.c.siglip.variants
      and enc != "scene_captions"
      and ("rgb_ir" in self.c.captioner.inputs)
    ):
      runs.append(("captioner_rgb_ir_scene_encoder", "rgb_ir", "scene_captions"))
    return runs

  def captioner_runs(self) -> list[tuple[str, str, str, int]]:
    """(stage name `<run>_s<seed>`, inputs, encoder variant, seed) per captioner seed: the
    runs in captioner.seeded_runs (all when empty) get captioner.seeds seeds, others one."""
    seeded = tuple(self.c.captioner.get("seeded_runs", ()))
    out = []
    for name, inputs, enc in self.captioner_base_runs():
      n = int(self.c.captioner.seeds) if not seeded or name in seeded else 1
      out += [(f"{name}_s{seed}", inputs, enc, seed) for seed in range(n)]
    return out

  # ------------------------------------------------------------------ stages
  def stages(self) -> list[Stage]:
    s = [
      Stage("ingest_ucm", self.ingest_ucm),
      Stage("ingest_hit_uav", self.ingest_hit_uav),
      Stage("translator", self.train_translator),
      Stage("translate", self.translate),
      Stage("ir_captions", self.ir_captions),
    ]
    if self.c.thermal.arms:
      s.append(Stage("hit_uav_captions", self.hit_uav_captions))
    s.append(Stage("tokenizer", self.tokenizer))
    for variant in self.c.siglip.variants:
      for seed in self.seeds():
        name = self.siglip_name(variant, seed)
        s.append(Stage(name, lambda v=variant, sd=seed: self.train_siglip(v, sd)))
        s.append(Stage(f"presence_{variant}_s{seed}", lambda n=name: self.presence(n)))
    for name, inputs, enc, seed in self.captioner_runs():
      s.append(
        Stage(name, lambda n=name, i=inputs, e=enc, sd=seed: self.train_captioner(n, i, e, sd))
      )
    # Seed-major: an interrupted run has every arm's first seeds.
    for seed in range(int(self.c.thermal.seeds)):
      for arm in self.c.thermal.arms:
        name = self.thermal_name(arm, seed)
        s.append(Stage(name, lambda a=arm, sd=seed: self.train_thermal(a, sd)))
        s.append(Stage(f"presence_{name}", lambda n=name: self.presence(n)))
    return s

  def ingest_ucm(self) -> dict:

    js = os.path.join(self.c.ucm_dir, self.c.ucm_json)
    images = os.path.join(self.c.ucm_dir, "images")
    _require_file(js, "UCM-captions Karpathy JSON (config ucm_dir/ucm_json)")
    items = sources.read_source("karpathy", [js], images, "ucm")
    return _ingest_summary(
      ingest.ingest(
        items,
        self.dataset("ucm"),
        "ucm",
        ingest.IngestOptions(
          resume=True,
          source_args={
            "source": "karpathy",
            "json": [os.path.abspath(js)],
            "images": os.path.abspath(images),
          },
        ),
      )
    )

  def ingest_hit_uav(self) -> dict:

    ann = [os.path.join(self.c.hit_uav_dir, "annotations", f"{s}.json") for s in ("train", "val")]
    for p in ann:
      _require_file(p, "HIT-UAV COCO-style annotations (config hit_uav_dir)")
    images = os.path.join(self.c.hit_uav_dir, "images")
    items = sources.read_source("coco_thermal", ann, images, "hit_uav")
    return _ingest_summary(
      ingest.ingest(
        items,
        self.dataset("hit_uav"),
        "hit_uav",
        ingest.IngestOptions(
          resume=True,
          source_args={
            "source": "coco_thermal",
            "json": [os.path.abspath(p) for p in ann],
            "images": os.path.abspath(images),
          },
        ),
      )
    )

  def train_translator(self) -> dict:
    c = _load_experiment("translator_cyclegan", self.c.translator.arg)
    c.data.rgb_dir, c.data.ir_dir = self.dataset("ucm"), self.dataset("hit_uav")
    c.eval.rgb_dir, c.eval.ref_ir_dir = self.dataset("ucm"), self.dataset("hit_uav")
    _set_steps(c, self.c.translator.steps)
    return train(c, self.workdir("translator"))

  def translate(self) -> dict:

    return translate.translate_folder(
      self.dataset("ucm"),
      self.dataset("ucm_paired"),
      self.workdir("translator"),
      self.c.translate_batch,
    )

  def ir_captions(self) -> dict:

    return ir_captions.annotate_folder(
      self.dataset("ucm_paired"),
      self.dataset("ucm_ir"),
      ("train", "val", "test"),
      self.c.ir_captions,
      resume=True,
    )

  def hit_uav_captions(self) -> dict:
    """Box-grounded captions, IR-aware captions and instructions for the real thermal images
    (every split is annotated; only train ever trains a model)."""
    return ir_captions.annotate_folder(
      self.dataset("hit_uav"),
      self.dataset("hit_uav_ir"),
      ("train", "val"),
      self.c.ir_captions,
      resume=True,
    )

  def tokenizer(self) -> dict:
    folders = [self.dataset("ucm_ir")]
    if self.c.thermal.arms:
      folders.append(self.dataset("hit_uav_ir"))
    texts = tokenizer.train_texts(folders)
    path = tokenizer.train_tokenizer(
      texts, os.path.join(self.dataset("ucm_ir"), "tokenizer.model"), self.c.vocab_size
    )
    return {"texts": len(texts), "vocab_size": tokenizer.load_tokenizer(path).vocab_size()}

  def train_siglip(self, variant: str, seed: int) -> dict:
    c = _load_experiment("siglip_ir", f"{self.c.siglip.arg},variant={variant}")
    c.data.dir = self.dataset("ucm_ir")
    c.data.demo_world_if_missing = False
    c.data.vocab_size = self.c.vocab_size
    c.seed = seed
    _set_steps(c, self.c.siglip.steps)
    return train(c, self.workdir(self.siglip_name(variant, seed)))

  def train_thermal(self, arm: str, seed: int) -> dict:
    """A SigLIP of variant thermal.variant at thermal.image_size on the arm's data; records
    without RGB (real thermal) are masked out of any RGB pairs. Retrieval evals read the UCM
    test split."""
    c = _load_experiment(
      "siglip_ir", f"{self.c.thermal.siglip_arg},variant={self.c.thermal.variant}"
    )
    folders = {
      "translated": [self.dataset("ucm_ir")],
      "real": [self.dataset("hit_uav_ir")],
      "mixed": [self.dataset("ucm_ir"), self.dataset("hit_uav_ir")],
    }[arm]
    c.data.dir, c.data.mix_dirs = folders[0], tuple(folders[1:])
    c.data.eval_dir = self.dataset("ucm_ir")
    c.data.tokenizer = fs.join(self.dataset("ucm_ir"), "tokenizer.model")
    c.data.missing_modality = "zeros"
    c.data.demo_world_if_missing = False
    c.data.vocab_size = self.c.vocab_size
    c.model.image_size = int(self.c.thermal.image_size)
    c.model.patch_size = int(self.c.thermal.patch_size)
    c.seed = seed
    _set_steps(c, self.c.thermal.steps or self.c.siglip.steps)
    return train(c, self.workdir(self.thermal_name(arm, seed)))

  def presence(self, siglip_run: str) -> dict:
    """Presence metrics; the per-image scores go to `<run>/presence_<split>_scores.npz` (the
    report's ROC curves)."""
    workdir = self.workdir(siglip_run)
    split = self.c.presence_split
    return evaluate.presence_of_run(
      workdir,
      self.dataset("hit_uav"),
      split,
      scores_path=os.path.join(workdir, f"presence_{split}_scores.npz"),
    )

  def train_captioner(self, name: str, inputs: str, encoder_variant: str, seed: int) -> dict:
    """Captioner seed s starts from the encoder of SigLIP seed s (the last SigLIP seed when
    there are fewer), so its noise includes the encoder's."""
    encoder_seed = min(seed, len(self.seeds()) - 1)
    encoder_run = self.workdir(self.siglip_name(encoder_variant, encoder_seed))
    encoder_preset = checkpoint.read_run_config(encoder_run).model.preset
    c = _load_experiment("captioner_dual", f"{self.c.captioner.arg},inputs={inputs}")
    c.data.dir = self.dataset("ucm_ir")
    c.data.demo_world_if_missing = False
    c.data.vocab_size = self.c.vocab_size
    c.model.vision_preset = encoder_preset
    c.model.image_encoder_init = fs.join(encoder_run, "checkpoints")
    c.model.freeze_image_encoder = bool(self.c.captioner.freeze_image_encoder)
    c.eval.max_records = int(self.c.captioner.eval_max_records)
    c.seed = seed
    _set_steps(c, self.c.captioner.steps, evals=1)
    return train(c, self.workdir(name))

  # ------------------------------------------------------------------ runner
  def marker(self, name: str) -> str:
    return os.path.join(self.stage_dir, f"{name}.json")

  def done(self, name: str) -> dict | None:
    path = self.marker(name)
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f)

  def forget(self, patterns: Sequence[str]) -> list[str]:
    gone = []
    for stage in self.stages():
      wanted = any(stage.name == p or stage.name.startswith(p) for p in patterns)
      if wanted and os.path.exists(self.marker(stage.name)):
        os.remove(self.marker(stage.name))
        gone.append(stage.name)
    return gone

  def run(self, echo: Callable[[str], None] = print) -> dict[str, dict]:
    """Runs every unfinished stage, then the report. Returns {stage: marker dict}."""
    os.makedirs(self.stage_dir, exist_ok=True)
    stages = self.stages()
    finished = {}
    total = len(stages)
    for i, stage in enumerate(stages, 1):
      prior = self.done(stage.name)
      if prior is not None:
        echo(f"[{i}/{total}] {stage.name}: done earlier ({_fmt_secs(prior['seconds'])})")
        finished[stage.name] = prior
        continue
      echo(f"[{i}/{total}] {stage.name}: running")
      start = time.perf_counter()
      result = stage.fn()
      seconds = time.perf_counter() - start
      entry = {
        "name": stage.name,
        "seconds": seconds,
        "result": _jsonable(result),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
      }
      records.write_json_atomic(self.marker(stage.name), entry)
      finished[stage.name] = entry
      echo(f"[{i}/{total}] {stage.name}: done in {_fmt_secs(seconds)}")

    pipeline_report.write(self, finished)
    echo(
      f"report: {os.path.join(self.c.docs, 'RESULTS.md')}, "
      f"{os.path.join(self.c.results, 'summary.json')}"
    )
    return finished


def _require_file(path: str, what: str) -> None:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: the {what}")


def _ingest_summary(summary: dict) -> dict:
  keep = ("name", "items", "splits", "captions", "rejects", "seconds")
  return {k: summary[k] for k in keep if k in summary}


def _floats(result: dict | None) -> dict:
  return {k: float(v) for k, v in (result or {}).items() if np.ndim(v) == 0}


def _jsonable(x: Any) -> Any:
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, (str, int, float, bool)) or x is None:
    return x
  return str(x)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  f = flags.FLAGS
  pipe = Pipeline(f.config)
  if f.redo:
    logging.info("forgetting finished stages: %s", pipe.forget(f.redo))
  if f.list:
    for stage in pipe.stages():
      prior = pipe.done(stage.name)
      print(f"{stage.name:<40} {'done ' + _fmt_secs(prior['seconds']) if prior else '-'}")
    return
  try:
    pipe.run()
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  define_flags()
  app.run(main)
