r"""Compile a config's real train step for a TPU topology on this (CPU) host and report whether
it fits: `python -m fusionrs_jax.cli.aot --config=configs/siglip_ir.py:size=So400m --topology=v5e-256`.

XLA's TPU compiler (libtpu, the `tpu` extra) runs without TPUs; `jax.experimental.topologies`
gives compile-only devices for any slice. The model, state, shardings and jitted step are the
trainers' own (`trainers.<family>.step_program`), so what compiles here is what `main` runs.
Prints one JSON object: topology, chips, mesh, global and per-chip batch, params, per-chip HBM
(arguments, temporaries, peak against capacity), FLOPs per chip per step, compile seconds.
Exit status 0 when the program fits with --min_headroom to spare, 1 when it does not (one line
on stderr says why), 2 for a usage error.
"""

from __future__ import annotations

import os

# libtpu looks for TPU metadata at start-up; these keep it quiet on a host without TPUs, and
# JAX_PLATFORMS keeps every array of this process on the CPU.
os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")
os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compile-only use of libtpu: several such processes (tests, a sweep) may run at once.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import hashlib
import importlib.metadata
import json
import math
import re
import sys
import time

import jax
from absl import app, flags, logging
from jax.experimental import topologies
from ml_collections import config_flags

from fusionrs_jax.core import records, sharding
from fusionrs_jax.trainers import captioner, siglip, translator

PROGRAMS = {"siglip": siglip, "captioner": captioner, "translator": translator}

# Slice name -> (libtpu topology name, chips). v4/v5p names count TensorCores (2 per chip).
_SLICES = {
  "v5e": {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"},
  "v6e": {4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"},
  "v4": {8: "2x2x1", 16: "2x2x2", 32: "2x2x4", 64: "2x4x4", 128: "4x4x4", 256: "4x4x8"},
  "v5p": {8: "2x2x1", 16: "2x2x2", 32: "2x2x4", 64: "2x4x4", 128: "4x4x4", 256: "4x4x8"},
}
# libtpu's generation names, and the extra arguments some need: v4 compiles one device per
# TensorCore unless its two cores are fused ("megacore", how v4 pods train); v5p is fused by
# default; a single v5e chip needs its own host bounds.
_LIBTPU_NAME = {"v5e": "v5e", "v6e": "v6e", "v4": "v4", "v5p": "v5"}
_KWARGS = {"v4": {"chip_config_name": "megacore"}}
# HBM per chip that libtpu lets a program use (bytes), by device_kind; from its
# RESOURCE_EXHAUSTED messages ("available HBM (15.75G)").
HBM_BYTES = {
  "TPU v5 lite": 15.75 * 2**30,
  "TPU v4": 30.75 * 2**30,
  "TPU v5": 95.74 * 2**30,
  "TPU v6 lite": 31.25 * 2**30,
}
# Peak dense bf16 FLOP/s per chip (public spec sheets), for utilisation estimates.
PEAK_BF16 = {"TPU v5 lite": 197e12, "TPU v4": 275e12, "TPU v5": 459e12, "TPU v6 lite": 918e12}
CHIPS_PER_HOST = 4


def topology_devices(name: str) -> tuple[str, list]:
  """(libtpu topology name, compile-only devices) of a slice name such as v5e-256."""
  m = re.fullmatch(r"(v5e|v6e|v4|v5p)-(\d+)", name)
  if m:
    gen, n = m.group(1), int(m.group(2))
    if n not in _SLICES[gen]:
      raise ValueError(f"--topology={name}: known {gen} sizes are {sorted(_SLICES[gen])}")
    topo = f"{_LIBTPU_NAME[gen]}:{_SLICES[gen][n]}"
  elif re.fullmatch(r"(v5e|v6e|v4|v5):\d+x\d+(x\d+)?", name):
    topo, gen = name, {"v5": "v5p"}.get(name.split(":")[0], name.split(":")[0])
  else:
    raise ValueError(f"--topology={name}: expected e.g. v5e-256, v4-128, v5p-64 or v5e:2x2")
  kwargs = dict(_KWARGS.get(gen, {}))
  if topo == "v5e:1x1":
    kwargs["chips_per_host_bounds"] = (1, 1, 1)
  desc = topologies.get_topology_desc(topology_name=topo, platform="tpu", **kwargs)
  return topo, list(desc.devices)


def count_params(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _versions() -> str:
  try:
    tpu = importlib.metadata.version("libtpu")
  except importlib.metadata.PackageNotFoundError:
    tpu = "none"
  return f"jax {jax.__version__} libtpu {tpu}"


def compile_report(
  config, topology: str, min_headroom: float = 0.15, cache_dir: str | None = None
) -> dict:
  """Compiles config's train step for `topology`; the report's "fits" says whether the
  per-chip peak HBM leaves `min_headroom` of the chip's capacity free.

  With `cache_dir`, a report is reused when the lowered program (StableHLO text), the
  topology, the headroom rule and the jax/libtpu versions are all the same. (JAX's own
  persistent compilation cache cannot serve compile-only TPU executables on a CPU host:
  it writes entries but fails to load them.)"""
  topo, devices = topology_devices(topology)
  kind = devices[0].device_kind
  mesh = sharding.make_mesh(dict(config.mesh), devices=devices)
  program = PROGRAMS[config.trainer].step_program(config, mesh)
  report = {
    "config": config.get("size", ""),
    "trainer": config.trainer,
    "topology": topology,
    "libtpu_topology": topo,
    "device_kind": kind,
    "chips": len(devices),
    "mesh": dict(mesh.shape),
    "global_batch": config.batch_size,
    "per_chip_batch": config.batch_size / sharding.num_batch_shards(mesh),
    "params": count_params(program.state["params"]),
    "image_size": next((v.shape[1] for k, v in program.batch.items() if k in ("rgb", "ir")), 0),
    "dtype": config.model.dtype,
    "remat": config.model.get("remat", False),
    "remat_policy": config.model.get("remat_policy", ""),
    "scan_layers": config.model.get("scan_layers", False),
    "mu_dtype": config.optim.get("mu_dtype", "float32"),
    "hbm_capacity_bytes": int(HBM_BYTES.get(kind, 0)),
  }
  t0 = time.perf_counter()
  lowered = program.lower()
  key = hashlib.sha256(
    "\n".join([lowered.as_text(), topo, str(min_headroom), _versions()]).encode()
  ).hexdigest()[:24]
  cached = os.path.join(cache_dir, f"aot_{key}.json") if cache_dir else None
  if cached and os.path.isfile(cached):
    with open(cached) as f:
      return {**report, **json.load(f), "cached": True}
  report.update(_compile(lowered, report, t0, min_headroom, kind))
  if cached:
    os.makedirs(cache_dir, exist_ok=True)
    records.write_json_atomic(cached, {k: v for k, v in report.items() if k != "cached"})
  return report


def _compile(lowered, report: dict, t0: float, min_headroom: float, kind: str) -> dict:
  """The compiler's answer for one lowered program: memory, FLOPs, fit."""
  report = dict(report)
  try:
    compiled = lowered.compile()
  except Exception as e:
    text = str(e)
    if "RESOURCE_EXHAUSTED" not in text:
      raise
    report.update(fits=False, compile_seconds=round(time.perf_counter() - t0, 1))
    report["reason"] = " ".join(text.split())[:300]
    return report
  report["compile_seconds"] = round(time.perf_counter() - t0, 1)
  mem = compiled.memory_analysis()
  peak = getattr(mem, "peak_memory_in_bytes", 0) or (
    mem.argument_size_in_bytes
    + mem.output_size_in_bytes
    - mem.alias_size_in_bytes
    + mem.temp_size_in_bytes
  )
  peak += mem.generated_code_size_in_bytes
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  flops = float(cost.get("flops", 0.0))
  capacity = report["hbm_capacity_bytes"]
  report.update(
    argument_bytes=int(mem.argument_size_in_bytes),
    output_bytes=int(mem.output_size_in_bytes),
    alias_bytes=int(mem.alias_size_in_bytes),
    temp_bytes=int(mem.temp_size_in_bytes),
    peak_bytes=int(peak),
    headroom=round(1.0 - peak / capacity, 4) if capacity else None,
    flops_per_chip_per_step=flops,
  )
  report["fits"] = bool(capacity) and report["headroom"] >= min_headroom
  if not report["fits"]:
    report["reason"] = (
      f"peak {peak / 2**30:.2f} GiB per chip leaves {report['headroom']:.1%} of "
      f"{capacity / 2**30:.2f} GiB free (< {min_headroom:.0%})"
    )
  report.update(throughput_estimates(report))
  return report


def throughput_estimates(report: dict) -> dict:
  """Examples/s a 4-chip host must be fed for the compiled FLOPs per chip to run at 40% and
  55% of the chip's peak bf16 FLOP/s. Each chip's step covers global_batch / chips examples'
  worth of FLOPs (a model-parallel pair shares its examples' work)."""
  flops, kind = report.get("flops_per_chip_per_step", 0.0), report["device_kind"]
  if not flops or kind not in PEAK_BF16:
    return {}
  per_example = flops / (report["global_batch"] / report["chips"])
  return {
    f"examples_per_s_per_host_at_{int(mfu * 100)}mfu": round(
      mfu * PEAK_BF16[kind] / per_example * CHIPS_PER_HOST, 1
    )
    for mfu in (0.40, 0.55)
  }


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].")
  flags.DEFINE_string(
    "topology",
    "v5e-4",
    "TPU slice: v5e-256, v4-128 (TensorCores), v5p-64, v6e-16, or a libtpu topology name "
    "such as v5e:2x2.",
  )
  flags.DEFINE_float(
    "min_headroom", 0.15, "Fraction of HBM that must stay free for the program to fit."
  )
  flags.DEFINE_string(
    "cache_dir",
    os.path.expanduser("~/.cache/fusionrs_jax/aot"),
    "Reports of programs already compiled ( = none).",
  )
  flags.DEFINE_string("out", None, "Also write the JSON here.")


def main(argv) -> None:
  if len(argv) > 1:
    print(f"error: unexpected arguments: {' '.join(argv[1:])}", file=sys.stderr)
    sys.exit(2)
  config = flags.FLAGS.config
  if config.get("trainer") not in PROGRAMS:
    print(f"error: config.trainer {config.get('trainer')!r} has no train step", file=sys.stderr)
    sys.exit(2)
  try:
    report = compile_report(
      config, flags.FLAGS.topology, flags.FLAGS.min_headroom, flags.FLAGS.cache_dir
    )
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps(report, indent=1, sort_keys=True), flush=True)
  if flags.FLAGS.out:
    records.write_json_atomic(flags.FLAGS.out, report)
  if not report["fits"]:
    print(f"does not fit: {report['reason']}", file=sys.stderr)
    sys.exit(1)
  logging.info("fits: %.1f%% HBM headroom", 100 * report["headroom"])


def entry():
  app.define_help_flags()
  try:
    remaining = flags.FLAGS(sys.argv)
    if flags.FLAGS.config is None:
      raise ValueError("--config is required, e.g. --config=configs/siglip_ir.py:size=B16")
    flags.FLAGS.config.get("trainer")
  except Exception as e:
    print(f"error: {' '.join(str(e).split())[:300]}", file=sys.stderr)
    sys.exit(2)
  app.run(main, argv=sys.argv, flags_parser=lambda _: remaining)


if __name__ == "__main__":
  define_flags()
  entry()
