"""Multi-host start-up: decides whether this process is one of several (TPU VM pod, SLURM,
Kubernetes JobSet, explicit coordinator) and calls `jax.distributed.initialize` before any
device is touched. Explicit arguments (main's flags) override what the environment says."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import jax
from absl import logging

MODES = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class InitArgs:
  """What `jax.distributed.initialize` gets; None fields are left to JAX's auto-detection
  (it reads SLURM_*, the TPU metadata server, Open MPI and Kubernetes itself)."""

  reason: str
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None

  def kwargs(self) -> dict:
    return {
      k: v
      for k, v in (
        ("coordinator_address", self.coordinator_address),
        ("num_processes", self.num_processes),
        ("process_id", self.process_id),
      )
      if v is not None
    }


def _int(environ: Mapping[str, str], *names: str) -> int | None:
  for name in names:
    value = environ.get(name, "").strip()
    if value:
      try:
        return int(value)
      except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None
  return None


def detect(environ: Mapping[str, str]) -> str | None:
  """Name of the multi-process launcher this process runs under, or None (single process).

  Only environments that imply more than one process count: a one-task SLURM job or a
  single-host TPU VM trains without the distributed runtime.
  """
  if environ.get("JAX_COORDINATOR_ADDRESS"):
    return "coordinator_env"
  if environ.get("SLURM_JOB_ID") and (_int(environ, "SLURM_NTASKS", "SLURM_NPROCS") or 1) > 1:
    return "slurm"
  # TPU VM pod slices (and GKE TPU node pools) list every worker of the slice; Multislice
  # sets the megascale coordinator.
  hosts = environ.get("TPU_WORKER_HOSTNAMES") or environ.get("TPU_PROCESS_ADDRESSES") or ""
  if len([h for h in hosts.split(",") if h.strip()]) > 1 or environ.get(
    "MEGASCALE_COORDINATOR_ADDRESS"
  ):
    return "tpu_pod"
  if environ.get("OMPI_COMM_WORLD_SIZE") and _int(environ, "OMPI_COMM_WORLD_SIZE") > 1:
    return "open_mpi"
  return None


def resolve(
  mode: str = "auto",
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  environ: Mapping[str, str] | None = None,
) -> InitArgs | None:
  """The initialize call to make (None: stay single-process).

  mode: "auto" (initialize when flags or the environment say multi-process), "on"
  (always; JAX auto-detects what is unset, e.g. a TPU pod through its metadata server),
  "off" (never). Flags beat JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
  JAX_PROCESS_ID, which beat the cluster's own variables.
  """
  if mode not in MODES:
    raise ValueError(f"--multihost must be one of {MODES}, got {mode!r}")
  environ = os.environ if environ is None else environ
  explicit = any(v is not None for v in (coordinator_address, num_processes, process_id))
  if mode == "off":
    if explicit:
      raise ValueError(
        "--multihost=off contradicts --coordinator_address/--num_processes/"
        "--process_id; drop one of them"
      )
    return None
  reason = "flags" if explicit else detect(environ)
  if reason is None and mode == "auto":
    return None
  coordinator_address = coordinator_address or environ.get("JAX_COORDINATOR_ADDRESS") or None
  if num_processes is None:
    num_processes = _int(environ, "JAX_NUM_PROCESSES")
  if process_id is None:
    process_id = _int(environ, "JAX_PROCESS_ID")
  if explicit or reason == "coordinator_env":
    # Without a cluster to ask, all three must be known.
    missing = [
      n
      for n, v in (
        ("coordinator_address", coordinator_address),
        ("num_processes", num_processes),
        ("process_id", process_id),
      )
      if v is None
    ]
    if (
      missing
      and detect({k: v for k, v in environ.items() if k != "JAX_COORDINATOR_ADDRESS"}) is None
    ):
      raise ValueError(
        f"multi-process start needs {', '.join(missing)} too (flags "
        f"--{' --'.join(missing)} or JAX_NUM_PROCESSES / JAX_PROCESS_ID)"
      )
  if num_processes is not None and process_id is not None and not (0 <= process_id < num_processes):
    raise ValueError(f"process_id {process_id} not in [0, num_processes={num_processes})")
  return InitArgs(reason or "forced", coordinator_address, num_processes, process_id)


def initialize(
  mode: str = "auto",
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> dict:
  """Starts the JAX distributed runtime when needed; returns {process_index, process_count,
  reason}. Must run before the first jax.devices()/computation of the process."""

  args = resolve(mode, coordinator_address, num_processes, process_id)
  if args is None:
    return {"process_index": 0, "process_count": 1, "reason": "single_process"}
  # CPU processes exchange collectives through gloo (JAX's default for CPU since 0.4.3x;
  # set explicitly so a site-wide "mpi" default cannot make a CPU test hang).
  if os.environ.get("JAX_PLATFORMS", "").split(",")[0] == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**args.kwargs())
  info = {
    "process_index": jax.process_index(),
    "process_count": jax.process_count(),
    "reason": args.reason,
  }
  logging.info(
    "jax.distributed: process %d of %d (%s), %d local / %d global devices",
    info["process_index"],
    info["process_count"],
    args.reason,
    jax.local_device_count(),
    jax.device_count(),
  )
  return info
