"""Scale-out measurements as JSON: data-parallel weak scaling of the SigLIP train step on
1/2/4/8 fake CPU devices, and Beam ingest throughput with 1 vs 2 DirectRunner workers.

  python benchmarks/scaling.py [--quick] [--preset=tiny|small] [--out=scaling.json]

Caveat printed with the numbers: fake CPU devices share this machine's cores (2 here), so
weak scaling measures partitioning overhead, not speed-up; a pod's chips are independent.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import flags

from fusionrs_jax.cli import command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The flag of the child process that weak_scaling starts per device count.
_WORKER = "_worker"


def _step_worker(preset: str, per_device: int, steps: int) -> dict:
  """Runs in a child process whose XLA_FLAGS fixed the device count."""
  sys.path.insert(0, REPO)
  import jax
  import numpy as np

  from configs import siglip_ir
  from fusionrs_jax.core import sharding
  from fusionrs_jax.models import siglip as siglip_model
  from fusionrs_jax.trainers import common
  from fusionrs_jax.trainers import siglip as trainer

  config = siglip_ir.get_config(f"size={preset}")
  n = jax.device_count()
  config.batch_size = per_device * n
  mesh = sharding.make_mesh({"data": -1})
  model = siglip_model.from_config(config)
  tx = common.make_optimizer(config.optim, 1000)
  state, shardings = common.init_state(trainer.init_fn(model), tx, 0, mesh)
  step = jax.jit(
    trainer.make_train_step(model, tx, config, mesh),
    in_shardings=(shardings, None),
    out_shardings=(shardings, None),
    donate_argnums=0,
  )
  rng = np.random.default_rng(0)
  b, s, length = config.batch_size, model.image_size, model.text_len
  batch = {
    "rgb": rng.uniform(-1, 1, (b, s, s, 3)).astype(np.float32),
    "ir": rng.uniform(-1, 1, (b, s, s, 1)).astype(np.float32),
    "tokens": rng.integers(4, 100, (b, length)).astype(np.int32),
    "ir_tokens": rng.integers(4, 100, (b, length)).astype(np.int32),
  }
  with sharding.activate(mesh):
    placed = sharding.place_batch(batch, mesh)
    state, metrics = step(state, placed)  # compile
    jax.block_until_ready(metrics["loss"])
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = step(state, placed)
    jax.block_until_ready(metrics["loss"])
    seconds = time.perf_counter() - start
  return {
    "devices": n,
    "global_batch": b,
    "steps": steps,
    "step_ms": round(1000 * seconds / steps, 1),
    "examples_per_s": round(b * steps / seconds, 1),
  }


def weak_scaling(preset: str, per_device: int, steps: int) -> list[dict]:
  rows = []
  for devices in (1, 2, 4, 8):
    env = dict(
      os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}"
    )
    out = subprocess.run(
      [
        sys.executable,
        __file__,
        f"--{_WORKER}",
        f"--preset={preset}",
        f"--per_device={per_device}",
        f"--steps={steps}",
      ],
      env=env,
      capture_output=True,
      text=True,
      check=True,
    )
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
  base = rows[0]["examples_per_s"]
  for row in rows:
    # Ideal weak scaling on independent chips: examples/s grows with the device count.
    row["efficiency_vs_1_device"] = round(row["examples_per_s"] / (base * row["devices"]), 3)
  return rows


def _synthetic_source(root: str, count: int) -> dict:
  """A Karpathy-layout folder of `count` random 64 px PNGs (when ../shared/data is absent)."""
  import numpy as np
  from PIL import Image

  images = os.path.join(root, "images")
  os.makedirs(images)
  rng = np.random.default_rng(0)
  entries = []
  for i in range(count):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    with open(os.path.join(images, f"{i}.png"), "wb") as f:
      f.write(buf.getvalue())
    entries.append(
      {"filename": f"{i}.png", "imgid": i, "split": "train", "sentences": [{"raw": f"scene {i}"}]}
    )
  with open(os.path.join(root, "captions.json"), "w") as f:
    json.dump({"images": entries}, f)
  return {
    "source": "karpathy",
    "json": [os.path.join(root, "captions.json")],
    "images": images,
    "name": "synthetic",
  }


def beam_ingest(quick: bool) -> dict:
  sys.path.insert(0, REPO)
  from data_prep import beam as beam_prep

  ucm = os.path.join(REPO, "..", "shared", "data", "ucm_captions")
  with tempfile.TemporaryDirectory() as tmp:
    if os.path.isdir(ucm) and not quick:
      spec = {
        "source": "karpathy",
        "json": [os.path.join(ucm, "dataset_ucm.json")],
        "images": os.path.join(ucm, "images"),
        "name": "ucm",
      }
    else:
      spec = _synthetic_source(os.path.join(tmp, "src"), 100 if quick else 1000)
    rows = []
    for workers in (1, 2):
      args = [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
      summary = beam_prep.run(
        spec,
        os.path.join(tmp, f"out{workers}"),
        spec["name"],
        beam_prep.BeamOptions(),
        pipeline_args=args,
      )
      n = sum(summary["splits"].values())
      rows.append(
        {
          "workers": workers,
          "records": n,
          "seconds": summary["seconds"],
          "records_per_s": round(n / summary["seconds"], 1),
        }
      )
  return {"source": spec["name"], "stages": "ingest + ir_captions (no translator)", "runs": rows}


def main(argv) -> None:
  del argv  # command.run refuses positional arguments
  f = flags.FLAGS
  preset = f.preset or ("tiny" if f.quick else "small")
  per_device = f.per_device or (4 if f.quick else 8)
  steps = f.steps or (3 if f.quick else 10)
  if f[_WORKER].value:
    print(json.dumps(_step_worker(preset, per_device, steps)))
    return
  result = {
    "cpu_cores": os.cpu_count(),
    "caveat": "fake CPU devices and Beam workers share this machine's "
    f"{os.cpu_count()} cores (and other users' jobs): the numbers show "
    "overheads, not the speed-up independent chips/workers give",
    "weak_scaling": {
      "preset": preset,
      "per_device_batch": per_device,
      "rows": weak_scaling(preset, per_device, steps),
    },
    "beam_ingest": beam_ingest(f.quick),
  }
  text = json.dumps(result, indent=1)
  print(text)
  if f.out:
    with open(f.out, "w") as out:
      out.write(text + "\n")


def define_flags() -> None:
  """Flags of this command (defined only when it runs, so the module imports anywhere)."""
  flags.DEFINE_bool("quick", False, "Tiny preset, few steps, 100 images.")
  flags.DEFINE_string(
    "preset", None, "SigLIP size preset (tiny|small; default small, --quick tiny)."
  )
  flags.DEFINE_integer("per_device", None, "Examples per device (default 8, --quick 4).")
  flags.DEFINE_integer("steps", None, "Timed steps per device count (default 10, --quick 3).")
  flags.DEFINE_string("out", "", "Also write the JSON here.")
  flags.DEFINE_bool(_WORKER, False, "Internal: be the one-device-count child of weak_scaling.")


if __name__ == "__main__":
  define_flags()
  command.run(main)
