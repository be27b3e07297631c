#!/usr/bin/env bash
# Renders launch/gke/jobset.yaml with the settings below and submits it with kubectl.
#
#   launch/gke/submit.sh [--dry-run]        # --dry-run prints the manifest and commands
#
# Settings (environment): JOB_NAME, IMAGE (a container with this repo, jax[tpu]==0.10.2 and
# gcsfs==2026.10.1), TPU_ACCELERATOR, TPU_TOPOLOGY, NUM_HOSTS, CHIPS_PER_HOST, CONFIG,
# WORKDIR (gs://), DATA_DIR (gs://; mounted by the Cloud Storage FUSE CSI driver at
# /mnt/<bucket>, which main reads), KSA (the Kubernetes service account the pods run as,
# bound by Workload Identity to a Google service account with roles/storage.objectUser on
# both buckets). The defaults describe a v5e 8x8 slice (16 hosts x 4).
set -euo pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then
  DRY_RUN=1
fi

export JOB_NAME="${JOB_NAME:-fusionrs-siglip-b16}"
export IMAGE="${IMAGE:-us-docker.pkg.dev/my-project/fusionrs/fusionrs_jax:latest}"
export TPU_ACCELERATOR="${TPU_ACCELERATOR:-tpu-v5-lite-podslice}"
export TPU_TOPOLOGY="${TPU_TOPOLOGY:-8x8}"
export NUM_HOSTS="${NUM_HOSTS:-16}"
export CHIPS_PER_HOST="${CHIPS_PER_HOST:-4}"
export CONFIG="${CONFIG:-configs/siglip_ir.py:size=B16}"
export WORKDIR="${WORKDIR:-gs://my-bucket/fusionrs/siglip_b16}"
export DATA_DIR="${DATA_DIR:-gs://my-bucket/fusionrs/data/fusionrs_600k}"
export KSA="${KSA:-fusionrs-trainer}"

if [[ "${DATA_DIR}" != gs://* ]]; then
  echo "error: DATA_DIR=${DATA_DIR}: GKE pods read data from a gs:// bucket (gcsfuse CSI mount)" >&2
  exit 2
fi
bucket="${DATA_DIR#gs://}"
export DATA_BUCKET="${bucket%%/*}"
export DATA_MOUNT="/mnt/${DATA_BUCKET}"
export MAIN_DATA_DIR="/mnt/${DATA_DIR#gs://}"

here="$(cd "$(dirname "$0")" && pwd)"
# Plain ${VAR} substitution of the names above (no envsubst dependency).
manifest="$(python3 - "${here}/jobset.yaml" <<'PY'
import os, re, sys
text = open(sys.argv[1]).read()
print(re.sub(r"\$\{(\w+)\}", lambda m: os.environ[m.group(1)], text), end="")
PY
)"

if (( DRY_RUN )); then
  printf '%s\n' "${manifest}"
  echo "# storage: data ${DATA_DIR} mounted at ${DATA_MOUNT}; workdir ${WORKDIR} written directly"
  echo "# credentials: service account ${KSA} needs Workload Identity + roles/storage.objectUser"
  echo "+ kubectl apply -f - (the manifest above)"
  echo "+ kubectl get jobset ${JOB_NAME} -w"
else
  printf '%s\n' "${manifest}" | kubectl apply -f -
  kubectl get jobset "${JOB_NAME}"
fi
