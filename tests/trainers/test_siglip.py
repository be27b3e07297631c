"""SigLIP trainer end to end on the tiny demo world: the real main, metrics, checkpoints,
resume (including after SIGKILL) and learning."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from fusionrs_jax.cli import main
from fusionrs_jax.core import checkpoint, metrics
from tests.conftest import REPO


@pytest.mark.slow
def test_main_runs_tiny_preset_and_writes_metrics_checkpoint_and_table(tiny_siglip_run):
  config, workdir, result = tiny_siglip_run
  tmp_path = pathlib.Path(workdir)
  rows = metrics.read_jsonl(str(tmp_path / "metrics.jsonl"))
  train_rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
  assert all(np.isfinite(r["loss"]) for r in train_rows)
  for key in ("loss/rgb_text", "loss/ir_text", "loss/rgb_ir", "t", "b"):
    assert key in train_rows[0]
  for d in ("rgb2text", "text2rgb", "ir2text", "text2ir", "rgb2ir", "ir2rgb"):
    assert 0.0 <= result[f"{d}/R@1"] <= result[f"{d}/R@5"] <= result[f"{d}/R@10"] <= 100.0
  assert os.path.exists(tmp_path / "images" / "retrieval_R5_0000004.png")
  step, params = checkpoint.run_params(str(tmp_path))
  assert step == 4
  assert "vision_model" in params["params"]
  # A finished run resumed with the same config does no more steps.
  again = main.run(config, str(tmp_path))
  assert len([r for r in metrics.read_jsonl(str(tmp_path / "metrics.jsonl")) if "loss" in r]) == 4
  assert again == {}


def _cli(workdir, data_dir, steps, extra=()):
  return [
    sys.executable,
    "-m",
    "fusionrs_jax.main",
    "--config=configs/siglip_ir.py:size=tiny",
    f"--workdir={workdir}",
    f"--config.data.dir={data_dir}",
    f"--config.total_steps={steps}",
    "--config.checkpoint_every=2",
    "--config.eval_every=1000",
    "--config.log_every=1",
    "--config.batch_size=16",
    "--config.async_checkpoints=False",
    *extra,
  ]


@pytest.mark.slow
def test_run_killed_with_sigkill_and_resumed_matches_uninterrupted_run(tiny_dataset, tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  steps = 8
  straight = tmp_path / "straight"
  subprocess.run(
    _cli(straight, tiny_dataset, steps), cwd=REPO, env=env, check=True, capture_output=True
  )

  killed = tmp_path / "killed"
  proc = subprocess.Popen(
    _cli(killed, tiny_dataset, steps),
    cwd=REPO,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  ckpt4 = killed / "checkpoints" / "4"
  deadline = time.time() + 300
  while not ckpt4.exists() and time.time() < deadline and proc.poll() is None:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert ckpt4.exists(), "the run never reached its step-4 checkpoint"
  rows = metrics.read_jsonl(str(killed / "metrics.jsonl"))
  assert max(r["step"] for r in rows) < steps, "the run finished before it was killed"

  subprocess.run(
    _cli(killed, tiny_dataset, steps), cwd=REPO, env=env, check=True, capture_output=True
  )
  step_a, a = checkpoint.run_params(str(straight))
  step_b, b = checkpoint.run_params(str(killed))
  assert step_a == step_b == steps
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _error_line(args, tmp_path):
  proc = subprocess.run(
    [sys.executable, "-m", "fusionrs_jax.main", *args, f"--workdir={tmp_path / 'w'}"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  return lines[0]


def test_unknown_trainer_is_a_one_line_error(tmp_path):
  line = _error_line(["--config=configs/siglip_ir.py:size=tiny", "--config.trainer=nope"], tmp_path)
  assert "unknown trainer 'nope'" in line and "siglip" in line


def test_missing_data_directory_is_a_one_line_error(tmp_path):
  line = _error_line(
    [
      "--config=configs/siglip_ir.py:size=tiny",
      f"--config.data.dir={tmp_path / 'absent'}",
      "--config.data.demo_world_if_missing=False",
    ],
    tmp_path,
  )
  assert "absent" in line and "data_prep.ingest" in line


@pytest.mark.parametrize(
  "override,expect",
  [
    ("--config.optim.lr=fast", "could not convert"),
    ("--config.optim.lrr=1e-3", "lrr"),
  ],
)
def test_malformed_override_is_a_one_line_error(tmp_path, override, expect):
  line = _error_line(["--config=configs/siglip_ir.py:size=tiny", override], tmp_path)
  assert expect in line


def test_unknown_preset_arg_is_a_one_line_error(tmp_path):
  line = _error_line(["--config=configs/siglip_ir.py:size=huge"], tmp_path)
  assert "huge" in line and "tiny" in line
