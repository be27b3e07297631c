"""Test session set-up: 8 fake CPU devices, shared-data lookup, session-wide fixtures."""

import os
import tempfile

from fusionrs_jax.core import process_defaults

# Must happen before jax is imported anywhere: sharding tests run on 8 fake devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# What every command sets at start (fusionrs_jax/core/process_defaults.py: XLA flags, malloc),
# so in-process tests compile and run as the commands do.
process_defaults.apply()
# One persistent compilation cache per test session (inherited by subprocess runs): the many
# tiny runs that compile the same program (seeds, resumes, the pipeline's variants) compile it
# once. A fresh folder each session, so nothing stale is ever read.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="fusionrs_jax_cc_"))

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_data_dir() -> str | None:
  """../shared/data beside the checkout (or $FUSIONRS_DATA_DIR), None when absent."""
  path = os.environ.get("FUSIONRS_DATA_DIR") or os.path.join(REPO, "..", "shared", "data")
  return os.path.abspath(path) if os.path.isdir(path) else None


@pytest.fixture(scope="session")
def shared_data() -> str:
  path = shared_data_dir()
  if path is None:
    pytest.skip(
      "../shared/data is absent (set FUSIONRS_DATA_DIR to the real UCM/HIT-UAV "
      "data to run this test)"
    )
  return path


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
  """A tiny demo world (32 px; 64/16/16 records) with IR-aware captions and a tokenizer,
  built once per test session exactly as the default job builds its dataset."""
  import ml_collections

  from fusionrs_jax.trainers import common

  out = str(tmp_path_factory.mktemp("tiny_demo") / "demo_world")
  data = ml_collections.ConfigDict(
    dict(
      dir=out,
      demo_world_if_missing=True,
      demo_num_train=64,
      demo_num_val=16,
      demo_num_test=16,
      demo_image_size=32,
      demo_seed=0,
      tokenizer="",
      vocab_size=512,
    )
  )
  common.prepare_dataset(data)
  return out


@pytest.fixture(scope="session")
def tiny_siglip_run(tiny_dataset, tmp_path_factory):
  """(config, workdir, final eval dict) of one tiny SigLIP run trained by the real main;
  shared by the trainer, evaluator-CLI and export tests so it is trained once."""
  from fusionrs_jax.cli import main

  config = tiny_config("siglip_ir", "size=tiny,runlocal=1", tiny_dataset)
  workdir = str(tmp_path_factory.mktemp("tiny_siglip_run"))
  result = main.run(config, workdir)
  return config, workdir, result


def tiny_config(module: str, arg: str, data_dir: str, **overrides):
  """configs/<module>.py:<arg> pointed at the shared tiny dataset, with overrides."""
  import importlib

  config = importlib.import_module(f"configs.{module}").get_config(arg)
  config.data.dir = data_dir
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


@pytest.fixture(autouse=True)
def _restore_absl_logger_level():
  """absl's logger level is process-global. Setting the verbosity in a test (or parsing flags
  in-process) pins it, e.g. to WARNING, which would hide later tests' INFO records from caplog;
  each test gets back the level it started with (NOTSET: follow the root logger)."""
  from absl import logging as absl_logging

  logger = absl_logging.get_absl_logger()
  before = logger.level
  yield
  logger.setLevel(before)
