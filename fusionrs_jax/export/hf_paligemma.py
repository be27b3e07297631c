"""Captioner run folder -> transformers `PaliGemmaForConditionalGeneration` folder (config,
model.safetensors, GemmaTokenizer from the run's SentencePiece model, PaliGemmaProcessor).

  python -m fusionrs_jax.export.hf_paligemma --workdir=workdirs/captioner --out=/tmp/pg

The conversion, and `hf_inputs` / `pixel_values` to feed the exported model two images per
prompt, are in `fusionrs_jax.models.hf.paligemma`; needs the `export` extra.
"""

from __future__ import annotations

import json

import jax
import numpy as np
from absl import flags

from fusionrs_jax.cli import command
from fusionrs_jax.core import checkpoint
from fusionrs_jax.export.hf_siglip import run_tokenizer
from fusionrs_jax.models import families, scan
from fusionrs_jax.models.hf import paligemma as hf_paligemma


def export_run(workdir: str, out_dir: str, step: int | None = None) -> dict:
  """A captioner run folder (config.json + checkpoints/) -> PaliGemma folder; returns a
  summary dict (out, inputs, step)."""
  config = checkpoint.read_run_config(workdir)
  if config.get("trainer") != "captioner":
    raise ValueError(f"{workdir} is a {config.get('trainer')!r} run, not a captioner run")
  spm_path = run_tokenizer(config)
  model = families.from_config(config)
  step, raw = checkpoint.run_params(workdir, step)
  # HF names are per layer: a scanned run's stacked layers are split first.
  params = jax.tree.map(np.asarray, scan.unscan_params(raw))
  hf_paligemma.save_hf_paligemma(params, model, out_dir, spm_path)
  return {"out": out_dir, "inputs": model.inputs, "step": int(step)}


def main(argv) -> None:
  del argv  # command.run refuses positional arguments
  f = flags.FLAGS
  if not f.workdir or not f.out:
    command.fail("give --workdir=<captioner run folder> and --out=<output directory>")
  try:
    summary = export_run(f.workdir, f.out, f.step)
  except (FileNotFoundError, ValueError, KeyError) as e:
    command.fail(command.message_of(e))
  print(json.dumps(summary))


def define_flags() -> None:
  """Flags of this command (defined only when it runs, so the module imports anywhere)."""
  flags.DEFINE_string(
    "workdir", None, "Run folder of a captioner training run (config.json + checkpoints/)."
  )
  flags.DEFINE_string("out", None, "Output directory.")
  flags.DEFINE_integer("step", None, "Checkpoint step to export (default: newest).")


if __name__ == "__main__":
  define_flags()
  command.run(main)
