"""SigLIP train-step speed (JAX vs transformers' PyTorch SiglipModel, same weights, batch and
optimizer) and the per-device memory of the chunked vs reference sigmoid loss on 8 devices.

  python -m benchmarks.siglip_step [--quick] [--out=results.json]

The step is `configs/siglip_ir.py:size=<preset>,variant=rgb_only` (RGB-text sigmoid loss, which
is what `SiglipModel(return_loss=True)` computes), on synthetic images and tokens.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
from absl import flags

from fusionrs_jax.cli import command

# Fake devices for the loss-memory part only; it runs in a child process (see loss_memory).
_LOSS_CHILD_FLAG = "loss_memory_child"


# ----------------------------------------------------------------------------
# FLOPs.
# ----------------------------------------------------------------------------


def _encoder_macs(tokens: int, width: int, mlp: int, depth: int) -> int:
  """Multiply-accumulates of pre-LN blocks: q/k/v/out projections, scores, values, MLP."""
  per_layer = tokens * (4 * width * width + 2 * width * mlp) + 2 * tokens * tokens * width
  return depth * per_layer


def analytic_train_flops(hp: dict, batch: int) -> float:
  """Matmul FLOPs of one train step: 2 * MACs forward, x3 for forward + backward."""
  n = (hp["image_size"] // hp["patch_size"]) ** 2
  d, m = hp["width"], hp["mlp_dim"]
  vision = n * hp["patch_size"] ** 2 * 3 * d + _encoder_macs(n, d, m, hp["depth"])
  # MAP head: one probe query attends over n tokens, then an MLP on that one token.
  vision += 2 * d * d + 2 * n * d * d + 2 * n * d + 2 * d * m
  L, dt = hp["text_len"], hp["text_width"]
  text = _encoder_macs(L, dt, hp["text_mlp_dim"], hp["text_depth"]) + dt * d
  loss = batch * d  # per example: one row of the [B, B] logits
  return 3.0 * 2.0 * batch * (vision + text + loss)


def _xla_flops(compiled) -> float | None:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float(analysis["flops"]) if analysis and "flops" in analysis else None


# ----------------------------------------------------------------------------
# JAX and PyTorch train steps.
# ----------------------------------------------------------------------------


def _config(preset: str, batch: int):
  from configs import siglip_ir

  config = siglip_ir.get_config(f"size={preset},variant=rgb_only")
  config.batch_size = batch
  return config


def synthetic_batch(hp: dict, batch: int, seed: int = 0) -> dict:
  """images [B, S, S, 3] in [-1, 1], tokens [B, L] (eos-terminated, 0-padded)."""
  rng = np.random.default_rng(seed)
  s, L = hp["image_size"], hp["text_len"]
  tokens = rng.integers(4, hp["vocab_size"], (batch, L)).astype(np.int32)
  lengths = rng.integers(4, L, batch)
  for row, n in zip(tokens, lengths):
    row[n - 1], row[n:] = 1, 0
  rgb = rng.uniform(-1, 1, (batch, s, s, 3)).astype(np.float32)
  return {"rgb": rgb, "tokens": tokens}


def _timed(step, steps: int) -> float:
  """Seconds per call of `step()` (which must block until its result is ready)."""
  start = time.perf_counter()
  for _ in range(steps):
    step()
  return (time.perf_counter() - start) / steps


def jax_step(preset: str, batch: int, steps: int, warmup: int) -> dict:
  import jax

  from fusionrs_jax.core import sharding
  from fusionrs_jax.models import siglip as siglip_model
  from fusionrs_jax.trainers import common
  from fusionrs_jax.trainers import siglip as trainer

  config = _config(preset, batch)
  model = siglip_model.from_config(config)
  hp = {k: getattr(model, k) for k in siglip_model.siglip_preset(preset)}
  mesh = sharding.make_mesh(dict(config.mesh))
  tx = common.make_optimizer(config.optim, config.total_steps)
  init = lambda rng: model.init(rng, **siglip_model.dummy_inputs(model))
  state, shardings = common.init_state(init, tx, config.seed, mesh)
  params0 = jax.device_get(state["params"])
  step_fn = jax.jit(
    trainer.make_train_step(model, tx, config, mesh),
    in_shardings=(shardings, None),
    out_shardings=(shardings, None),
    donate_argnums=0,
  )
  host = synthetic_batch(hp, batch)
  with sharding.activate(mesh):
    batch_arrays = sharding.place_batch(host, mesh)
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch_arrays).compile()
    compile_s = time.perf_counter() - t0
    box = {"state": state}

    def one():
      box["state"], m = compiled(box["state"], batch_arrays)
      jax.block_until_ready(m["loss"])
      return m

    first_loss = float(one()["loss"])
    for _ in range(warmup - 1):
      one()
    sec = _timed(one, steps)
  return {
    "hp": hp,
    "params0": params0,
    "batch": host,
    "sec_per_step": sec,
    "compile_s": compile_s,
    "first_loss": first_loss,
    "xla_flops": _xla_flops(compiled),
    "devices": jax.device_count(),
    "optim": config.optim,
  }


def torch_step(hp: dict, params0, host: dict, optim, steps: int, warmup: int, threads: int) -> dict:
  """The same step in transformers: SiglipModel(return_loss=True) + clip + torch AdamW."""
  import torch
  import transformers

  torch.set_num_threads(threads)

  from fusionrs_jax.models.hf import siglip as hf_siglip

  model = transformers.SiglipModel(hf_siglip.hf_siglip_config(hp))
  sd = hf_siglip.to_hf_state_dict(params0, hp)
  model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
  model.train()
  opt = torch.optim.AdamW(
    model.parameters(), lr=optim.lr, betas=(optim.b1, optim.b2), weight_decay=optim.weight_decay
  )
  pixels = torch.from_numpy(host["rgb"].transpose(0, 3, 1, 2).copy())
  tokens = torch.from_numpy(host["tokens"]).long()

  def one():
    opt.zero_grad(set_to_none=True)
    loss = model(input_ids=tokens, pixel_values=pixels, return_loss=True).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
    opt.step()
    return float(loss.detach())

  first_loss = one()
  for _ in range(warmup - 1):
    one()
  return {
    "sec_per_step": _timed(one, steps),
    "first_loss": first_loss,
    "threads": torch.get_num_threads(),
    "version": torch.__version__,
  }


# ----------------------------------------------------------------------------
# Loss memory on 8 fake devices (child process: XLA_FLAGS must precede `import jax`).
# ----------------------------------------------------------------------------


def _loss_memory_child(batch: int, dim: int) -> dict:
  import functools

  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from fusionrs_jax.losses import sigmoid as losses

  devices = jax.devices()
  # Auto axes, as the trainer's mesh: the reference loss is left to GSPMD to partition.
  mesh = jax.make_mesh(
    (len(devices),), ("data",), devices=devices, axis_types=(jax.sharding.AxisType.Auto,)
  )
  row = NamedSharding(mesh, P("data"))
  repl = NamedSharding(mesh, P())
  emb = jax.ShapeDtypeStruct((batch, dim), jnp.float32)
  scalar = jax.ShapeDtypeStruct((), jnp.float32)
  variants = {
    "chunked": (functools.partial(losses.chunked_sigmoid_loss, mesh=mesh, axis_names="data"), row),
    # What the trainer's loss.impl=reference compiles to: GSPMD decides the partitioning.
    "reference": (losses.sigmoid_loss, row),
    # The textbook all-gather: every device holds all embeddings and the full logits.
    "reference_replicated": (losses.sigmoid_loss, repl),
  }
  out = {"devices": len(devices), "global_batch": batch, "dim": dim}
  for name, (loss, emb_sharding) in variants.items():
    grad = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))
    fn = jax.jit(grad, in_shardings=(emb_sharding, emb_sharding, repl, repl))
    mem = fn.lower(emb, emb, scalar, scalar).compile().memory_analysis()
    out[name] = {
      "temp_bytes": int(mem.temp_size_in_bytes),
      "argument_bytes": int(mem.argument_size_in_bytes),
      "output_bytes": int(mem.output_size_in_bytes),
      "peak_bytes": int(
        mem.temp_size_in_bytes
        + mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        - mem.alias_size_in_bytes
      ),
    }
  out["reference_over_chunked_temp"] = out["reference_replicated"]["temp_bytes"] / max(
    1, out["chunked"]["temp_bytes"]
  )
  return out


def loss_memory(batch: int, dim: int, devices: int = 8) -> dict:
  env = dict(
    os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu"
  )
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "benchmarks.siglip_step",
      f"--{_LOSS_CHILD_FLAG}",
      f"--loss_batch={batch}",
      f"--loss_dim={dim}",
    ],
    cwd=repo,
    env=env,
    capture_output=True,
    text=True,
    check=False,
  )
  if proc.returncode:
    raise RuntimeError(f"loss-memory child failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------
# Report.
# ----------------------------------------------------------------------------


def run(preset: str, batch: int, steps: int, warmup: int, loss_batch: int) -> dict:
  load_before = os.getloadavg()
  j = jax_step(preset, batch, steps, warmup)
  # On a shared machine torch's OpenMP threads can spin against each other (2 threads can
  # be 10x slower than 1 under load), so every thread count is measured and the best kept.
  by_threads = {
    n: torch_step(j["hp"], j["params0"], j["batch"], j["optim"], steps, warmup, n)
    for n in sorted({1, os.cpu_count() or 1})
  }
  t = min(by_threads.values(), key=lambda r: r["sec_per_step"])
  analytic = analytic_train_flops(j["hp"], batch)
  flops = j["xla_flops"] or analytic
  gflops = lambda sec: flops / sec / 1e9
  result = {
    "machine": {
      "cpus": os.cpu_count(),
      "platform": platform.platform(),
      "loadavg_before": [round(x, 2) for x in load_before],
      "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    },
    "step": {
      "preset": preset,
      "variant": "rgb_only",
      "batch": batch,
      "timed_steps": steps,
      "jax_devices": j["devices"],
      "flops_source": "xla_cost_analysis" if j["xla_flops"] else "analytic",
      "gflop_per_step_xla": None if j["xla_flops"] is None else j["xla_flops"] / 1e9,
      "gflop_per_step_analytic_matmul": analytic / 1e9,
    },
    "jax": {
      "sec_per_step": j["sec_per_step"],
      "examples_per_sec": batch / j["sec_per_step"],
      "gflop_per_sec": gflops(j["sec_per_step"]),
      "compile_sec": j["compile_s"],
      "first_loss": j["first_loss"],
    },
    "torch": {
      "sec_per_step": t["sec_per_step"],
      "examples_per_sec": batch / t["sec_per_step"],
      "gflop_per_sec": gflops(t["sec_per_step"]),
      "first_loss": t["first_loss"],
      "threads": t["threads"],
      "version": t["version"],
      "sec_per_step_by_threads": {str(n): r["sec_per_step"] for n, r in by_threads.items()},
    },
    "jax_over_torch_speed": t["sec_per_step"] / j["sec_per_step"],
    "loss_memory": loss_memory(loss_batch, j["hp"]["width"]),
  }
  return result


def main(argv) -> None:
  del argv  # command.run refuses positional arguments
  f = flags.FLAGS
  if f[_LOSS_CHILD_FLAG].value:
    print(json.dumps(_loss_memory_child(f.loss_batch, f.loss_dim)))
    return
  if f.quick:
    preset, batch, steps, warmup, loss_batch = "tiny", 16, 2, 1, 256
  else:
    preset, batch, steps, warmup, loss_batch = f.preset, f.batch, f.steps, f.warmup, f.loss_batch
  result = run(preset, batch, steps, warmup, loss_batch)
  text = json.dumps(result, indent=1)
  print(text)
  if f.out:
    with open(f.out + ".tmp", "w") as out:
      out.write(text + "\n")
    os.replace(f.out + ".tmp", f.out)


def define_flags() -> None:
  """Flags of this command (defined only when it runs, so the module imports anywhere)."""
  flags.DEFINE_bool(
    "quick", False, "Tiny preset, batch 16, 2 steps, loss batch 256 (CI smoke run)."
  )
  flags.DEFINE_string("preset", "small", "SigLIP size preset.")
  flags.DEFINE_integer("batch", 64, "Global batch of the train step.")
  flags.DEFINE_integer("steps", 5, "Timed steps after warm-up.")
  flags.DEFINE_integer("warmup", 2, "Untimed steps before the timed ones (at least 1).")
  flags.DEFINE_integer("loss_batch", 4096, "Global batch of the loss part.")
  flags.DEFINE_integer(
    "loss_dim", 192, "Loss-memory child: embedding width (the parent passes the model's width)."
  )
  flags.DEFINE_string("out", None, "Also write the JSON here.")
  flags.DEFINE_bool(
    _LOSS_CHILD_FLAG, False, "Internal: be the 8-fake-device child process of loss_memory."
  )


if __name__ == "__main__":
  define_flags()
  command.run(main)
