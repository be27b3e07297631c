"""Entry point: `python -m fusionrs_jax.main --config=configs/<file>.py[:arg] --workdir=DIR`.

Dispatches on `config.trainer`; errors a user can fix are one line, not a traceback.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from fusionrs_jax.core import command, distributed, records
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


def check_data_dirs(config) -> None:
  """UserError naming the field when a dataset folder of config.data (`dir`, `*_dir`) is not a
  prepared dataset and no demo world will be built there: before any run folder exists."""
  data = config.get("data")
  if data is None or data.get("demo_world_if_missing", False):
    return
  for key in sorted(data.keys()):
    path = data[key]
    if not (key == "dir" or key.endswith("_dir")) or not isinstance(path, str) or not path:
      continue
    if "://" in path:  # a bucket: checked by the trainer through its own file layer
      continue
    if not os.path.isfile(os.path.join(path, records.INFO_FILE)):
      raise UserError(
        f"--config.data.{key}={path}: no {records.INFO_FILE} there; prepare it with "
        "`python -m data_prep.ingest` (see README) or set --config.data.demo_world_if_missing=True"
      )


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    # Before anything touches jax devices (the trainers build the mesh first thing).
    distributed.initialize(
      _MULTIHOST.value, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value
    )
  except ValueError as e:
    raise UserError(str(e)) from e
  config = _CONFIG.value
  check_data_dirs(config)
  workdir = _WORKDIR.value or _default_workdir(flags.FLAGS["config"].config_filename)
  # Third-party INFO (hidden on the console unless --verbosity=1) is kept in the run folder.
  index = jax.process_index()
  command.log_to_run_folder(workdir, "log.txt" if index == 0 else f"log-{index}.txt")
  # The full config is in <workdir>/config.json; printed only with --verbosity=1.
  logging.vlog(1, "config:\n%s", config)
  result = run(config, workdir)
  if result:
    logging.info("final metrics: %s", json.dumps(result, sort_keys=True, default=float))


def entry():
  """Console-script entry; config/flag errors (missing file, malformed or misspelt
  override, failing get_config) are one line, not a traceback. --config is checked here,
  not with mark_flag_as_required: other code (grain workers) parses absl flags of its own
  process where --config is legitimately absent."""
  remaining = command.parse_flags(sys.argv)
  command.check_config_flag("config")
  app.run(command.guarded(main), argv=sys.argv, flags_parser=lambda _: remaining)


if __name__ == "__main__":
  entry()
