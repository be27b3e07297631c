"""SigLIP run folder <-> transformers `SiglipModel` folder, from the command line.

  python -m fusionrs_jax.export.hf_siglip --checkpoint=<SigLIP run folder> --out=DIR
  python -m fusionrs_jax.export.hf_siglip --import_hf=DIR --out=<Orbax checkpoint folder>

The conversion itself is `fusionrs_jax.models.hf.siglip`; needs the `export` extra.
"""

import json
import os

import jax
import numpy as np
from absl import flags

from fusionrs_jax.cli import command
from fusionrs_jax.core import checkpoint, records
from fusionrs_jax.models import families, scan
from fusionrs_jax.models.hf import siglip as hf_siglip


def run_tokenizer(config, override: str | None = None) -> str:
  """The SentencePiece model a run trained with (config.data.tokenizer, or
  <data.dir>/tokenizer.model); FileNotFoundError naming the fix when it is gone."""
  path = (
    override or config.data.get("tokenizer") or os.path.join(config.data.dir, "tokenizer.model")
  )
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"the run's tokenizer {path!r} is gone; pass --tokenizer=<its tokenizer.model>"
    )
  return path


def export_run(workdir: str, out_dir: str, step=None, tokenizer: str | None = None) -> dict:
  """A SigLIP run folder (config.json + checkpoints/) -> `SiglipModel` directory.

  Writes config.json + model.safetensors (+ ir_vision_model/ for a separate IR tower),
  tokenizer.model + tokenizer_config.json (GemmaTokenizer) and preprocessor_config.json.
  Returns a summary dict (step, hp, files).
  """
  config = checkpoint.read_run_config(workdir)
  if config.get("trainer") != "siglip":
    raise ValueError(f"{workdir} is a {config.get('trainer')!r} run, not a SigLIP run")
  spm_path = run_tokenizer(config, tokenizer)
  model = families.from_config(config)
  hp = {k: getattr(model, k) for k in hf_siglip.HP_KEYS}
  step, raw = checkpoint.run_params(workdir, step)
  # HF names are per layer: a scanned run's stacked layers are split first.
  params = jax.tree_util.tree_map(np.asarray, hf_siglip.plain_params(scan.unscan_params(raw)))
  hf_siglip.save_hf_siglip(params, hp, out_dir)
  hf_siglip.save_hf_tokenizer(spm_path, out_dir, hp["text_len"])
  hf_siglip.save_hf_image_processor(out_dir, hp["image_size"])
  return {
    "step": int(step),
    "hp": hp,
    "ir_tower": model.ir_tower,
    "out": out_dir,
    "files": sorted(os.listdir(out_dir)),
  }


def import_hf(model_dir: str, out_dir: str) -> dict:
  """`SiglipModel` directory -> Orbax checkpoint folder usable as `--config.init_from`.

  Writes step 0 with state {"params": {"params": ...}} (the trainer's layout) and
  hf_hyperparameters.json (the preset keys the training config must match).
  """
  params, hp = hf_siglip.load_hf_siglip(model_dir)
  ckpt = checkpoint.Checkpointer(out_dir, save_every=1, async_save=False)
  ckpt.save(0, {"params": {"params": params}}, force=True)
  ckpt.close()
  records.write_json_atomic(os.path.join(out_dir, "hf_hyperparameters.json"), hp)
  return {"out": out_dir, "hp": hp}


def main(argv) -> None:
  del argv  # command.run refuses positional arguments
  f = flags.FLAGS
  if bool(f.checkpoint) == bool(f.import_hf):
    command.fail("give exactly one of --checkpoint (export) or --import_hf (import)")
  if not f.out:
    command.fail("--out is required (the output directory)")
  try:
    if f.checkpoint:
      summary = export_run(f.checkpoint, f.out, step=f.step, tokenizer=f.tokenizer)
    else:
      summary = import_hf(f.import_hf, f.out)
  except (FileNotFoundError, ValueError, KeyError) as e:
    command.fail(command.message_of(e))
  print(json.dumps(summary, indent=1, sort_keys=True))


def define_flags() -> None:
  """Flags of this command (defined only when it runs, so the module imports anywhere)."""
  flags.DEFINE_string(
    "checkpoint",
    None,
    "Run folder of a SigLIP training run to export (config.json + checkpoints/).",
  )
  flags.DEFINE_string(
    "import_hf",
    None,
    "A SiglipModel save_pretrained directory to import "
    "into an Orbax checkpoint folder (for --config.init_from).",
  )
  flags.DEFINE_string("out", None, "Output directory.")
  flags.DEFINE_integer("step", None, "Checkpoint step to export (default: newest).")
  flags.DEFINE_string(
    "tokenizer",
    None,
    "SentencePiece model (default: the run's config.data.tokenizer or <data.dir>/tokenizer.model).",
  )


if __name__ == "__main__":
  define_flags()
  command.run(main)
