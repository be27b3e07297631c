"""Multi-host start-up: environment detection (no JAX needed) and the real main run as two
processes x 4 CPU devices, which must train exactly like one process x 8 devices."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from fusionrs_jax.core import checkpoint, distributed
from tests.conftest import REPO

# ----------------------------------------------------------------------------
# resolve(): which initialize call a process makes.
# ----------------------------------------------------------------------------


def test_plain_laptop_stays_single_process():
  assert distributed.resolve("auto", environ={}) is None
  assert distributed.resolve("off", environ={"SLURM_JOB_ID": "1", "SLURM_NTASKS": "8"}) is None


def test_one_task_slurm_job_stays_single_process():
  assert distributed.resolve(environ={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None


def test_multi_task_slurm_leaves_the_values_to_jax_auto_detection():
  args = distributed.resolve(environ={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"})
  assert args.reason == "slurm" and args.kwargs() == {}


def test_tpu_pod_is_detected_from_its_worker_list():
  args = distributed.resolve(environ={"TPU_WORKER_HOSTNAMES": "t-w-0,t-w-1,t-w-2,t-w-3"})
  assert args.reason == "tpu_pod" and args.kwargs() == {}
  assert distributed.resolve(environ={"TPU_WORKER_HOSTNAMES": "localhost"}) is None


def test_coordinator_environment_variables_are_read():
  env = {
    "JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234",
    "JAX_NUM_PROCESSES": "4",
    "JAX_PROCESS_ID": "3",
  }
  args = distributed.resolve(environ=env)
  assert args.kwargs() == {
    "coordinator_address": "10.0.0.2:1234",
    "num_processes": 4,
    "process_id": 3,
  }


def test_flags_override_the_environment():
  env = {
    "JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234",
    "JAX_NUM_PROCESSES": "4",
    "JAX_PROCESS_ID": "3",
    "SLURM_JOB_ID": "7",
    "SLURM_NTASKS": "4",
  }
  args = distributed.resolve("auto", "127.0.0.1:5555", 2, 1, environ=env)
  assert args.reason == "flags"
  assert args.kwargs() == {
    "coordinator_address": "127.0.0.1:5555",
    "num_processes": 2,
    "process_id": 1,
  }


def test_forced_mode_lets_jax_detect_everything():
  args = distributed.resolve("on", environ={})
  assert args.reason == "forced" and args.kwargs() == {}


@pytest.mark.parametrize(
  "kwargs, message",
  [
    ({"coordinator_address": "h:1"}, "num_processes, process_id"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, "not in"),
    ({"mode": "off", "num_processes": 2}, "contradicts"),
    ({"mode": "sometimes"}, "must be one of"),
  ],
)
def test_incomplete_or_contradictory_settings_are_one_line_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    distributed.resolve(environ={}, **kwargs)


# ----------------------------------------------------------------------------
# Two processes x 4 devices == one process x 8 devices.
# ----------------------------------------------------------------------------

STEPS = 3


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _main_cmd(workdir, data_dir, *extra):
  return [
    sys.executable,
    "-m",
    "fusionrs_jax.main",
    "--config=configs/siglip_ir.py:size=tiny",
    f"--workdir={workdir}",
    f"--config.data.dir={data_dir}",
    f"--config.total_steps={STEPS}",
    "--config.log_every=1",
    "--config.checkpoint_every=2",
    "--config.eval_every=1000",
    "--config.batch_size=16",
    "--config.async_checkpoints=False",
    *extra,
  ]


def _env(devices):
  return dict(
    os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}"
  )


def _train_log(workdir):
  from fusionrs_jax.core import metrics

  return [r for r in metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "loss" in r]


@pytest.mark.slow
def test_two_processes_of_4_devices_train_like_one_process_of_8(tiny_dataset, tmp_path):
  single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
  ref = subprocess.run(
    _main_cmd(single, tiny_dataset),
    cwd=REPO,
    env=_env(8),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert ref.returncode == 0, ref.stderr[-3000:]

  port = _free_port()
  procs = [
    subprocess.Popen(
      _main_cmd(
        multi,
        tiny_dataset,
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
      ),
      cwd=REPO,
      env=_env(4),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outputs = [p.communicate(timeout=600) for p in procs]
  for i, (p, (_, err)) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f"process {i}:\n{err[-3000:]}"
  assert "process 1 of 2" in outputs[1][1]

  ref_log, multi_log = _train_log(single), _train_log(multi)
  assert [r["step"] for r in multi_log] == list(range(1, STEPS + 1))
  for key in ("loss", "loss/rgb_text", "loss/ir_text", "loss/rgb_ir", "grad_norm"):
    np.testing.assert_allclose(
      [r[key] for r in multi_log], [r[key] for r in ref_log], rtol=1e-5, atol=1e-6, err_msg=key
    )
  # Both processes wrote one Orbax checkpoint together; its params equal the reference.
  (ref_step, ref_params) = checkpoint.run_params(single)
  (step, params) = checkpoint.run_params(multi)
  assert step == ref_step == STEPS
  flat_ref = dict(_flatten(ref_params))
  for path, value in _flatten(params):
    # Attention key biases get an exactly-zero gradient (softmax ignores a per-query
    # shift), so they follow float noise that Adam scales up to ~lr per step; every
    # other parameter must agree to float32 round-off.
    atol = 1e-4 if path.endswith("k_proj/bias") else 1e-6
    np.testing.assert_allclose(value, flat_ref[path], rtol=1e-5, atol=atol, err_msg=path)


def _flatten(tree, prefix=""):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from _flatten(v, f"{prefix}/{k}")
  else:
    yield prefix, np.asarray(tree)
