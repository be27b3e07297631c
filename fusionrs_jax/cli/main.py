"""Entry point: `python -m fusionrs_jax.main --config=configs/<file>.py[:arg] --workdir=DIR`.

Dispatches on `config.trainer`; errors a user can fix are one line, not a traceback.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from fusionrs_jax.core import distributed
from fusionrs_jax.core.errors import UserError

# trainer name -> module with `train_and_evaluate(config, workdir) -> dict`.
TRAINERS = {
  "siglip": "fusionrs_jax.trainers.siglip",
  "translator": "fusionrs_jax.trainers.translator",
  "captioner": "fusionrs_jax.trainers.captioner",
}

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file, e.g. configs/siglip_ir.py:size=tiny.", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
  "workdir",
  None,
  "Run folder: checkpoints, metrics.jsonl, TensorBoard events, images. "
  "Default: workdirs/<config name>.",
)
# Multi-host (see fusionrs_jax/distributed.py and launch/): explicit values override the
# environment (JAX_COORDINATOR_ADDRESS, SLURM, TPU VM pod, ...).
_MULTIHOST = flags.DEFINE_enum(
  "multihost",
  "auto",
  list(distributed.MODES),
  "auto: start jax.distributed when the "
  "flags or the environment say multi-process; on: always (JAX auto-detects the rest); "
  "off: never.",
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", None, "host:port of process 0's coordinator service."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def available_trainers() -> dict[str, str]:
  """Trainers whose module exists in this checkout."""
  return {name: mod for name, mod in TRAINERS.items() if importlib.util.find_spec(mod) is not None}


def run(config, workdir: str) -> dict:
  trainers = available_trainers()
  name = config.get("trainer")
  if name not in trainers:
    raise UserError(
      f"unknown trainer {name!r} in config; available: {', '.join(sorted(trainers)) or 'none'}"
    )
  module = importlib.import_module(trainers[name])
  return module.train_and_evaluate(config, workdir)


def _default_workdir(config_path: str) -> str:
  base = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
  return os.path.join("workdirs", base)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    # Before anything touches jax devices (the trainers build the mesh first thing).
    distributed.initialize(
      _MULTIHOST.value, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value
    )
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  config = _CONFIG.value
  workdir = _WORKDIR.value or _default_workdir(flags.FLAGS["config"].config_filename)
  logging.info("config:\n%s", config)
  try:
    result = run(config, workdir)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if result:
    logging.info("final metrics: %s", json.dumps(result, sort_keys=True, default=float))


def _one_line(e: BaseException) -> str:
  """An exception message on one line; an embedded traceback (config_flags puts the
  config file's own traceback in its message) is reduced to its final line."""
  text = str(e)
  if "Traceback (most recent call last)" in text:
    head = text.split("Traceback (most recent call last)")[0]
    last = [ln for ln in text.splitlines() if ln.strip()][-1]
    text = f"{head.strip()} {last.strip()}"
  text = " ".join(text.replace("\\n", " ").split())
  return text.replace("\\'", "'").strip("'\"")


def entry():
  """Console-script entry; config/flag errors (missing file, malformed or misspelt
  override, failing get_config) are one line, not a traceback."""
  app.define_help_flags()
  try:
    remaining = flags.FLAGS(sys.argv)
    # Checked here, not with mark_flag_as_required: other code (grain workers) parses
    # absl flags of its own process where --config is legitimately absent.
    if _CONFIG.value is None:
      raise ValueError("--config is required, e.g. --config=configs/siglip_ir.py")
    # config_flags defers errors of loading the file until first access.
    _CONFIG.value.get("trainer")
  except Exception as e:
    prefix = "config override names no such field: " if isinstance(e, AttributeError) else ""
    print(f"error: {prefix}{_one_line(e)}", file=sys.stderr)
    sys.exit(2)
  app.run(main, argv=sys.argv, flags_parser=lambda _: remaining)


if __name__ == "__main__":
  entry()
