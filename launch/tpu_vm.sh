#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: create the slice, install this repo on every worker,
# run the same fusionrs_jax.main on all of them (jax.distributed finds its peers through
# the TPU metadata server), delete the slice.
#
#   launch/tpu_vm.sh [--dry-run] create|setup|train|delete|all
#
# Settings (environment): PROJECT, ZONE, TPU_NAME, ACCELERATOR (v5litepod-64 = 16 hosts x
# 4 chips), RUNTIME (TPU software version), REPO_URL, BRANCH, CONFIG, WORKDIR (a gs://
# path: every host writes its part of each Orbax checkpoint there, process 0 the metrics,
# TensorBoard events, eval files and images), DATA_DIR (gs:// or a path present on every
# worker), EXTRA_ARGS (more main flags). --dry-run prints every command instead of running
# it and needs no gcloud.
#
# Storage: WORKDIR is written straight to Cloud Storage (Orbax/tensorstore and gcsfs, which
# setup installs). ArrayRecord reads local files only, so a gs:// DATA_DIR is mounted on
# every worker with gcsfuse (read-only, at /mnt/<bucket>, as MaxText does) and main reads
# the mount. Credentials: the workers' service account (the TPU VM's, through the metadata
# server; no key files) needs read on the data bucket and object create/delete on the
# WORKDIR bucket (roles/storage.objectUser).
set -euo pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then
  DRY_RUN=1
  shift
fi
STAGE="${1:-all}"

PROJECT="${PROJECT:-my-project}"
ZONE="${ZONE:-us-central2-b}"
TPU_NAME="${TPU_NAME:-fusionrs-pod}"
ACCELERATOR="${ACCELERATOR:-v4-32}"
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"
REPO_URL="${REPO_URL:-https://github.com/example/fusionrs_jax.git}"
BRANCH="${BRANCH:-main}"
CONFIG="${CONFIG:-configs/siglip_ir.py:size=B16}"
WORKDIR="${WORKDIR:-gs://my-bucket/fusionrs/siglip_b16}"
DATA_DIR="${DATA_DIR:-gs://my-bucket/fusionrs/data/fusionrs_600k}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
# The gcsfs pin of pyproject's dev extra (gs:// work dirs).
GCSFS_PIN="gcsfs==2026.10.1"

# A gs:// DATA_DIR is read through its gcsfuse mount: gs://b/path -> /mnt/b/path.
MOUNT=""
MAIN_DATA_DIR="${DATA_DIR}"
if [[ "${DATA_DIR}" == gs://* ]]; then
  bucket="${DATA_DIR#gs://}"
  bucket="${bucket%%/*}"
  MOUNT="sudo mkdir -p /mnt/${bucket} && sudo chown \$(id -u) /mnt/${bucket} && \
(mountpoint -q /mnt/${bucket} || gcsfuse --implicit-dirs -o ro ${bucket} /mnt/${bucket})"
  MAIN_DATA_DIR="/mnt/${DATA_DIR#gs://}"
fi

# Prints the command (dry run) or runs it.
run() {
  if (( DRY_RUN )); then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# A line for the person running this: on stdout as a comment in a dry run, else on stderr.
note() {
  if (( DRY_RUN )); then
    printf '# %s\n' "$1"
  else
    printf '%s\n' "$1" >&2
  fi
}

# One command on every worker of the slice at once.
on_all_workers() {
  run gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --project="${PROJECT}" --zone="${ZONE}" \
    --worker=all --command="$1"
}

create() {
  run gcloud compute tpus tpu-vm create "${TPU_NAME}" --project="${PROJECT}" \
    --zone="${ZONE}" --accelerator-type="${ACCELERATOR}" --version="${RUNTIME}"
}

# gcsfuse from Google's apt repository (its install guide's steps).
INSTALL_GCSFUSE="command -v gcsfuse >/dev/null || { \
curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | \
sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null; \
echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] \
https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -cs) main\" | \
sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null; \
sudo apt-get update -q && sudo apt-get install -y -q gcsfuse; }"

setup() {
  on_all_workers "set -e; ${INSTALL_GCSFUSE}; rm -rf fusionrs_jax; \
git clone -q -b ${BRANCH} ${REPO_URL} fusionrs_jax; cd fusionrs_jax; python3 -m venv .venv; \
.venv/bin/pip install -q -e . 'jax[tpu]==0.10.2' '${GCSFS_PIN}'"
}

train() {
  if [[ -n "${MOUNT}" ]]; then
    note "storage: data ${DATA_DIR} is read through its gcsfuse mount ${MAIN_DATA_DIR}"
  fi
  note "storage: workdir ${WORKDIR}; the TPU VM service account needs roles/storage.objectUser \
on its bucket (and read on the data bucket)"
  # --multihost=on: every worker calls jax.distributed.initialize(), which reads the
  # coordinator, process count and index from the TPU metadata server.
  on_all_workers "set -e; ${MOUNT:-true}; cd fusionrs_jax && .venv/bin/python -m fusionrs_jax.main \
--config=${CONFIG} --workdir=${WORKDIR} --config.data.dir=${MAIN_DATA_DIR} \
--config.data.demo_world_if_missing=False --multihost=on ${EXTRA_ARGS}"
}

delete() {
  run gcloud compute tpus tpu-vm delete "${TPU_NAME}" --project="${PROJECT}" \
    --zone="${ZONE}" --quiet
}

case "${STAGE}" in
  create) create ;;
  setup) setup ;;
  train) train ;;
  delete) delete ;;
  all) create; setup; train; delete ;;
  *) echo "usage: $0 [--dry-run] create|setup|train|delete|all" >&2; exit 2 ;;
esac
