r"""The pod presets, compiled for their TPU topologies on this CPU host, and the README table.

  python -m benchmarks.aot_presets [--only=NAME,...] [--out_dir=benchmarks/results/aot] [--force]
      runs `python -m fusionrs_jax.cli.aot` for every preset below (each writes its JSON;
      a preset whose JSON already exists is skipped unless --force)
  python -m benchmarks.aot_presets --table [--input_rate=benchmarks/results/input_pipeline.json]
      prints the README's scale-out table from those JSONs

Every number in the table except the last two columns comes from XLA's TPU compiler
(memory_analysis / cost_analysis of the real train step). "ex/s per host" is an estimate:
the examples per second a 4-chip host must be fed for the compiled FLOPs per chip to run at
40% / 55% of the chip's peak bf16 FLOP/s; "cores" divides that by the measured
records/s of one input-pipeline core at the preset's resolution.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from absl import flags

from fusionrs_jax.cli import command

# name -> (config, topology, extra overrides)
PRESETS = {
  "siglip_B16_v5e-256": ("configs/siglip_ir.py:size=B16", "v5e-256", ()),
  "siglip_So400m_v5e-256": ("configs/siglip_ir.py:size=So400m", "v5e-256", ()),
  "siglip_So400m_v4-128": ("configs/siglip_ir.py:size=So400m", "v4-128", ()),
  "captioner_paligemma_3b_v5e-256": ("configs/captioner_dual.py:size=paligemma_3b", "v5e-256", ()),
  "captioner_paligemma_3b_v4-128": ("configs/captioner_dual.py:size=paligemma_3b", "v4-128", ()),
  "translator_paper_v5e-1": ("configs/translator_cyclegan.py:size=paper", "v5e-1", ()),
}
OUT_DIR = os.path.join("benchmarks", "results", "aot")
INPUT_RATE = os.path.join("benchmarks", "results", "input_pipeline.json")


def run(names, out_dir: str, force: bool) -> int:
  failed = 0
  for name in names:
    config, topology, extra = PRESETS[name]
    out = os.path.join(out_dir, f"{name}.json")
    if os.path.exists(out) and not force:
      print(f"{name}: {out} exists (--force to recompile)", flush=True)
      continue
    cmd = [
      sys.executable,
      "-m",
      "fusionrs_jax.cli.aot",
      f"--config={config}",
      f"--topology={topology}",
      *extra,
      f"--out={out}",
    ]
    print(" ".join(cmd[1:]), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 1) or not os.path.exists(out):
      print(f"{name}: aot failed:\n{proc.stderr[-2000:]}", flush=True)
      failed += 1
      continue
    with open(out) as f:
      report = json.load(f)
    print(
      f"{name}: fits={report['fits']} headroom={report.get('headroom')} "
      f"compile {report['compile_seconds']} s",
      flush=True,
    )
    failed += not report["fits"]
  return failed


def _cores(rate: dict, image_size: int, need: float) -> str:
  per_core = rate.get(image_size)
  return f"{need / per_core:.0f}" if per_core else "n/a"


def table(out_dir: str, input_rate: str | None) -> str:
  rate = {}
  if input_rate and os.path.exists(input_rate):
    with open(input_rate) as f:
      results = json.load(f)["results"]
    for r in results:
      if r.get("worker_count") == 0 and "records_per_s" in r:
        rate[r["image_size"]] = r["records_per_s"]
  head = (
    "| preset | topology | chips | mesh (data,fsdp,model) | global batch / per batch shard | "
    "params | peak HBM / chip | headroom | TFLOP / chip / step | "
    "ex/s per host at 40% / 55% MFU | input cores per host at 40% / 55% |"
  )
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for name in PRESETS:
    path = os.path.join(out_dir, f"{name}.json")
    if not os.path.exists(path):
      continue
    with open(path) as f:
      r = json.load(f)
    m = r["mesh"]
    size = r.get("image_size", 0)
    if r["fits"]:
      mem = f"{r['peak_bytes'] / 2**30:.2f} / {r['hbm_capacity_bytes'] / 2**30:.2f} GiB"
      room = f"{100 * r['headroom']:.0f}%"
    else:
      mem, room = "does not fit", r.get("reason", "")[:60]
    e40 = r.get("examples_per_s_per_host_at_40mfu")
    e55 = r.get("examples_per_s_per_host_at_55mfu")
    ex = f"{e40:,.0f} / {e55:,.0f}" if e40 else "n/a"
    cores = f"{_cores(rate, size, e40)} / {_cores(rate, size, e55)}" if e40 else "n/a"
    lines.append(
      f"| {r['config']} {r['trainer']} | {r['topology']} | {r['chips']} | "
      f"{m['data']},{m['fsdp']},{m['model']} | {r['global_batch']:,} / {r['per_chip_batch']:g} | "
      f"{r['params'] / 1e6:,.0f} M | {mem} | {room} | "
      f"{r.get('flops_per_chip_per_step', 0) / 1e12:.2f} | {ex} | {cores} |"
    )
  return "\n".join(lines)


def main(argv) -> int:
  del argv  # command.run refuses positional arguments
  f = flags.FLAGS
  if f.table:
    print(table(f.out_dir, f.input_rate))
    return 0
  names = [n for n in f.only.split(",") if n] or list(PRESETS)
  unknown = [n for n in names if n not in PRESETS]
  if unknown:
    command.fail(f"unknown preset(s) {unknown}; known: {', '.join(PRESETS)}")
  return 1 if run(names, f.out_dir, f.force) else 0


def define_flags() -> None:
  """Flags of this command (defined only when it runs, so the module imports anywhere)."""
  flags.DEFINE_string("only", "", "Comma-separated preset names (default: every preset).")
  flags.DEFINE_string("out_dir", OUT_DIR, "Folder of the per-preset AOT JSON reports.")
  flags.DEFINE_bool("force", False, "Recompile presets whose JSON already exists.")
  flags.DEFINE_bool("table", False, "Print the README table from --out_dir instead of compiling.")
  flags.DEFINE_string(
    "input_rate", INPUT_RATE, "benchmarks.input_pipeline JSON (records/s of one input core)."
  )


if __name__ == "__main__":
  define_flags()
  command.run(main)
