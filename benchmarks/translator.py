"""CycleGAN translator speed: train steps/s and RGB->IR translate images/s at 256 px for the
`small` and `paper` generators, achieved GFLOP/s (XLA cost analysis / time) against this
machine's measured conv peak, and the same networks in PyTorch from the same weights: the
train step (`torch_train_step`: both generators from the project's export
fusionrs_jax/export/torch_translator.py, both PatchGANs, the same losses and Adam; its first
loss must equal the JAX step's) and translation of the same batch, with an output check.

  python -m benchmarks.translator [--quick] [--sizes=small,paper] [--out=translator.json]

Random weights (speed does not depend on them); synthetic images in [-1, 1]. The train step is
the trainer's (both generators, both discriminators, history pools, Adam), compiled from
`trainers/translator.step_program`. Translation times the jitted generator alone on a batch
already on the device (what `data_prep.translate` runs per batch, without decode/encode).
JAX, torch with 1 thread and torch with all cores run interleaved (A B C A B C ...), so load
from other jobs falls on every contender alike; medians over the rounds are reported and the
JAX/torch ratio is the median of the per-round ratios.

Finding (idle machine, jaxlib 0.10.2; README "Benchmarks" has the table): the JAX side was
2.5-4.5x slower than torch for three reasons, two of them outside the model. XLA:CPU's
default YNNPACK convolutions ran the generator's small-channel convs 2-5x slower than XLA's
Eigen convs; glibc mapped and unmapped each step's large temporaries afresh, ~700k page faults
and 2-5 s of kernel time per `small` train step (worse right after a torch step, which is why
the step looked slower interleaved than alone); and 7x7 convs to/from 1-3 channels run poorly
in XLA:CPU. fusionrs_jax/core/process_defaults.py fixes the first two for every command;
cyclegan.blocked_conv, row_split_conv and row_stack_conv (same params and function) the third.

Per generator stage (fwd + grads of params and input, batch 8, 256 px, `small`; JAX vs torch 2
threads, ms, one interleaved run, before the changes below): head 3->16 184 vs 140, down_0 92
vs 72, down_1 46 vs 45, one residual block 119 vs 106 (x4), up_0 74 vs 51, up_1 126 vs 84, and
the 7x7 conv to one IR channel 173 vs 237 before it was row-split (89 ms for the conv alone
after, 153 before). So the remaining gap of the `small` step was spread over the layers at
128-256 px with 16-32 channels, where memory-bound work dominates: instance norm and its
gradient, reflection-pad gradients, and the batch-minor transposes XLA adds for each conv's
weight gradient (fused with the recomputed norm: 60-100 ms each at 256 px before instance
norm got its closed-form VJP).

The gap sat where a conv meets instance norm, and worst where the conv ends in a pixel
shuffle (the sub-pixel up_i, the blocked conv_in): XLA:CPU fuses the depth-to-space index
arithmetic into every pass of the norm and its gradient, and those fused passes ran several
times slower than the same passes over a plain array. Normalising before the shuffle (a
channel's stats over its H x W x 4 phase pixels) took up_1 with gradients from 91 to 77 ms
and conv_in from 137 to 112 ms (torch 57 and 115); the stride-2 down_i convs' input gradient
as a sub-pixel transposed conv instead of XLA's conv over a zero-dilated gradient took 41 ->
24 ms at 256 px (torch 17). Both: 4-5% on a generator, 4% on the `small` step. Beware when
measuring a stage: a cotangent captured as a constant lets XLA fold its transposes at compile
time (a conv-only stage then looks 25% cheaper than it is); pass it as an argument.
What was then left (stage medians, JAX vs torch 2 threads, ms): down_0 60 vs 53, down_1 45
vs 39, one residual block 108 vs 95, up_1 77 vs 57-61; a whole generator 865 vs 871, the
generator loss with gradients 3.62 vs 3.48 s; the `small` step 0.93 of torch, `paper` 0.93.

The residual blocks' convs were all Eigen-vs-oneDNN kernel time (a block's non-conv passes
were already cheaper than torch's), so the step crossed torch only with fewer multiplies:
Winograd F(4x4, 3x3) for their forward and input gradient (cyclegan.conv3x3; forward 14.7
-> 11.1 ms at 64->64, 64 px, batch 8, torch 12.0; 25.3 -> 19.1 ms at 256->256, batch 1,
torch 22.1) and F(3x3, 4x4) for the kernel gradient from 128 channels (the 36 matmuls
contract over tiles; at 64 channels XLA inserted transposes that cost as much as they saved:
8.4 ms with the operand pre-transposed, 17 ms as written, whole dw 21-23 vs XLA's 18-20 ms).
Per generator with gradients (interleaved A/B, 7-9 rounds): `small` 1.06x, `paper` 1.17x,
then 1.12x more for the `paper` kernel gradient. The step against torch, runs of this
benchmark: `small` 1.03 and `paper` 1.12 with Winograd forward and input gradient only, then
with all three `small` 1.06, 0.94, 1.05 and `paper` 1.32, 1.28, 1.24 (the 0.94 run had both
sides slower and JAX's rounds spread 4.26-5.16 s; per-round page faults are recorded since).
Unrolled per tile row, the transforms tripled the step's compile time (small 11 -> 34 s,
paper 14 -> 78 s); as one op per axis over stacked arrays they compile 2.5-3.3x faster per
conv at the same speed (16 and 30 s per step). Tried and dropped on
the way: F(2x2, 3x3) (fewer savings: 64 channels slower than direct, 256 channels 1.1-1.2x),
the conv as 9 accumulated or one im2col matmul over the flattened padded image (1.2-1.7x
slower than XLA's conv), and fusion barriers (optimization_barrier is expanded before
fusion on XLA:CPU: the compiled HLO has none, the fusions are unchanged). The 3x3 convs' weight gradients are the largest single
piece (Eigen after batch-minor transposes: 17.8 vs 13.4 ms for a 64->64 residual conv, 23.6
vs 7.5 for down_0; torch's oneDNN runs them near the conv peak). The JAX step also leaves ~6%
of the cores idle (1.88 of 2 busy against 1.99, ~15-20k thread wake-ups per step against
~120) and, a few times early in a process, pays a burst of ~550-600k page faults (1.5-17 s
of kernel time) that torch never shows: the heap growing past a fragmented free block for the
step's 2.4 GB of temporaries (4.05 -> 5.21 GB at step 8 of one run, none after).

Tried and dropped (no gain on the whole step, interleaved A/B): splitting the batch into
micro-batches (unrolled: a single generator 20% faster at micro-batch 2, the whole step no
faster; lax.scan: 12-14x slower; unrolled with optimization barriers forcing one micro-batch
after another: 0-12% faster across four runs, temp memory unchanged at 2.44 GB), weight
gradients as per-tap dots (2-4x slower than XLA's conv), instance norm without the conv bias
it cancels, with one-pass shifted statistics, or with its reductions split in halves (all
within noise), the batch folded into the image height so weight gradients need no batch-minor
transpose (equal or 3-15% slower), the head kept in space-to-depth layout through down_0
(175 vs 176 ms), and the XLA flags onednn_fusion_type, use_onednn, the concurrency-optimised
scheduler on/off, tiling propagation (slower), prefer_vector_width=512, and YNNPACK fusion
types reduce off (slower), eltwise off and individual_dot off (noise); this round also
xla_cpu_scheduler_type=1 (4% slower per generator) and =2 (noise), the legacy fusion emitters
(noise), onednn_custom_call (no oneDNN conv appears), YNNPACK convs for weight gradients (2x
slower), weight gradients as per-tap or batch-parallel dots (1.1-2.9x slower), weight
gradients as a sum over batch slices (RGB conv_in 40 -> 28 ms and up_0 18.5 -> 15 ms at 8
slices, up_1 31 -> 22 in one run and no gain in another, stride-2 convs slower: ~1% of the
step, not taken), and optimization barriers that materialise the norm's output or its
gradient once (noise). Running each side in
its own process instead of interleaved in one does not close it either: torch 3.66-3.82 s,
JAX 4.17-4.40 s per `small` step (0.85-0.88).

The conv peak is the best time of one large 3x3 conv (jax.lax.conv_general_dilated, NHWC,
256 -> 256 channels, float32): a roof for direct convs. GFLOP/s count each step's work as
direct convs (`gflop_per_step_direct`, the step traced inside cyclegan.direct_convs(); what
torch executes), so Winograd's saved multiplies show as speed and a step can pass the peak;
XLA's count of what it executes is `gflop_per_step_xla`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import numpy as np
from absl import flags

from benchmarks.siglip_step import interleaved, ratio_of_medians, with_threads
from fusionrs_jax.cli import command
from fusionrs_jax.core import records

# Outputs in [-1, 1] agreeing this closely differ by under a quarter of one 8-bit gray level.
EQUAL_ATOL = 1e-3
# size -> (train batch, translate batch). The paper recipe trains with batch 1;
# data_prep.translate's default batch is 16 (4 for paper, ~56 GFLOP per 256 px image).
SIZES = {"tiny": (2, 2), "small": (8, 16), "paper": (1, 4)}


def _xla_flops(compiled) -> float | None:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float(analysis["flops"]) if analysis and "flops" in analysis else None


# ----------------------------------------------------------------------------
# Conv peak.
# ----------------------------------------------------------------------------


def conv_peak(batch: int, size: int, channels: int, repeats: int) -> dict:
  """Best GFLOP/s of one [batch, size, size, channels] 3x3 'SAME' conv to `channels`."""
  import jax
  import jax.numpy as jnp

  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch, size, size, channels), np.float32))
  w = jnp.asarray(rng.standard_normal((3, 3, channels, channels), np.float32) * 0.05)
  conv = jax.jit(
    lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
  )
  compiled = conv.lower(x, w).compile()
  flops = 2.0 * batch * size * size * 9 * channels * channels
  jax.block_until_ready(compiled(x, w))
  best = min(_timed_once(lambda: jax.block_until_ready(compiled(x, w))) for _ in range(repeats))
  return {
    "shape": [batch, size, size, channels],
    "kernel": [3, 3, channels, channels],
    "gflop": flops / 1e9,
    "gflop_xla": (_xla_flops(compiled) or 0.0) / 1e9,
    "best_sec": best,
    "gflop_per_sec": flops / best / 1e9,
  }


def _timed_once(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


# ----------------------------------------------------------------------------
# Train step and translation.
# ----------------------------------------------------------------------------


def _images(batch: int, size: int, channels: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return rng.uniform(-1, 1, (batch, size, size, channels)).astype(np.float32)


def train_step(size: str, image_size: int, batch: int) -> dict:
  """The translator trainer's compiled step on random weights; "call" runs one step."""
  import jax

  from configs import translator_cyclegan
  from fusionrs_jax.core import sharding
  from fusionrs_jax.losses import gan
  from fusionrs_jax.models import cyclegan
  from fusionrs_jax.trainers import common
  from fusionrs_jax.trainers import translator as trainer

  config = translator_cyclegan.get_config(f"size={size}")
  config.data.image_size, config.batch_size = image_size, batch
  mesh = sharding.make_mesh(dict(config.mesh))
  program = trainer.step_program(config, mesh)
  state, _ = common.init_state(program.init_params, program.tx, config.seed, mesh)
  pools = {
    name: gan.pool_init(config.pool_size, (image_size, image_size, channels))
    for name, channels in (("pool_ir", cyclegan.IR_CHANNELS), ("pool_rgb", cyclegan.RGB_CHANNELS))
  }
  state.update(jax.device_put(pools, sharding.replicated(mesh)))
  host = {
    "rgb": _images(batch, image_size, cyclegan.RGB_CHANNELS, 1),
    "ir": _images(batch, image_size, cyclegan.IR_CHANNELS, 2),
  }
  with sharding.activate(mesh):
    t0 = time.perf_counter()
    compiled = program.lower().compile()
    compile_s = time.perf_counter() - t0
    batch_arrays = sharding.place_batch(host, mesh)
    with cyclegan.direct_convs():  # the same step's FLOPs with direct convs
      direct_flops = _xla_flops(trainer.step_program(config, mesh).lower())
  box = {"state": state}

  def call() -> float:
    box["state"], logs = compiled(box["state"], batch_arrays)
    return float(logs["loss"])

  params = jax.device_get(state["params"])
  return {
    "call": call,
    # The step from the initial params: what the torch step must reproduce.
    "first_loss": call(),
    "compile_sec": compile_s,
    "xla_flops": _xla_flops(compiled),
    "direct_flops": direct_flops,
    "params": params,
    "batch": host,
    "loss_cfg": config.loss,
    "paired": bool(config.data.paired),
    "optim": config.optim,
  }


class _TorchDiscriminator:
  """cyclegan.PatchDiscriminator in torch (NCHW), built from its Flax params."""

  def __init__(self, params: dict):
    import torch

    from fusionrs_jax.export import torch_translator

    names = sorted(params, key=lambda n: int(n.split("_")[1]))
    self.layers = []
    for i, name in enumerate(names):
      kernel = np.asarray(params[name]["kernel"], np.float32)
      weight = torch.from_numpy(np.ascontiguousarray(torch_translator._conv_weight(kernel)))
      bias = torch.from_numpy(np.asarray(params[name]["bias"], np.float32).copy())
      # conv_0 .. conv_{n-3} stride 2, the last two stride 1 (see PatchDiscriminator).
      stride = 2 if i < len(names) - 2 else 1
      self.layers.append((weight.requires_grad_(), bias.requires_grad_(), stride))

  def parameters(self) -> list:
    return [t for w, b, _ in self.layers for t in (w, b)]

  def __call__(self, x):
    import torch.nn.functional as F

    from fusionrs_jax.models import cyclegan

    last = len(self.layers) - 1
    for i, (w, b, stride) in enumerate(self.layers):
      x = F.conv2d(x, w, b, stride=stride, padding=1)
      if i == last:
        return x
      if i > 0:
        x = F.instance_norm(x, eps=cyclegan.NORM_EPS)
      x = F.leaky_relu(x, 0.2)


def torch_train_step(t: dict) -> dict:
  """The translator trainer's step in torch from the same params and batch: both
  generators' adversarial + cycle (+ paired L1) loss, both discriminators' LSGAN loss on the
  fresh fakes (the JAX step's history pool returns them unchanged while it fills, and costs
  a few image copies after), gradients of G and D at the current params, one Adam update of
  all four networks. "call" runs one step and returns G + D loss, like the JAX step."""
  import torch

  from fusionrs_jax.export import torch_translator

  if t["loss_cfg"].identity > 0:
    raise ValueError("the torch step has no identity loss; benchmark with loss.identity = 0")
  params, cfg, optim = t["params"], t["loss_cfg"], t["optim"]
  gens = {
    k: torch_translator.generator_from_flax(params[k]).train() for k in ("rgb_to_ir", "ir_to_rgb")
  }
  discs = {k: _TorchDiscriminator(params[k]) for k in ("disc_ir", "disc_rgb")}
  g_params = [p for g in gens.values() for p in g.parameters()]
  d_params = [p for d in discs.values() for p in d.parameters()]
  opt = torch.optim.Adam(g_params + d_params, lr=optim.lr, betas=(optim.b1, optim.b2))
  nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
  rgb, ir = nchw(t["batch"]["rgb"]), nchw(t["batch"]["ir"])
  mse1 = lambda s: torch.mean(torch.square(s - 1.0))
  l1 = lambda a, b: torch.mean(torch.abs(a - b))

  def call() -> float:
    fake_ir, fake_rgb = gens["rgb_to_ir"](rgb), gens["ir_to_rgb"](ir)
    rec_rgb, rec_ir = gens["ir_to_rgb"](fake_ir), gens["rgb_to_ir"](fake_rgb)
    adv = mse1(discs["disc_ir"](fake_ir)) + mse1(discs["disc_rgb"](fake_rgb))
    g_total = cfg.gan * adv + cfg.cycle * (l1(rgb, rec_rgb) + l1(ir, rec_ir))
    if t["paired"]:
      g_total = g_total + cfg.paired * (l1(ir, fake_ir) + l1(rgb, fake_rgb))
    d_total = sum(
      0.5 * (mse1(discs[d](real)) + torch.mean(torch.square(discs[d](fake.detach()))))
      for d, real, fake in (("disc_ir", ir, fake_ir), ("disc_rgb", rgb, fake_rgb))
    )
    grads = torch.autograd.grad(g_total, g_params) + torch.autograd.grad(d_total, d_params)
    for p, g in zip(g_params + d_params, grads, strict=True):
      p.grad = g
    opt.step()
    return float(g_total.detach() + d_total.detach())

  return {"call": call, "first_loss": call()}


def translate_fns(size: str, params, images: np.ndarray) -> dict:
  """JAX and torch RGB->IR on the same batch [B, S, S, 3] -> their calls and outputs."""
  import jax
  import torch

  from fusionrs_jax.export import torch_translator
  from fusionrs_jax.models import cyclegan

  gen = cyclegan.build(size).rgb_to_ir
  apply = jax.jit(lambda p, x: gen.apply({"params": p}, x))
  x = jax.device_put(images)
  p = jax.device_put(params)
  t0 = time.perf_counter()
  compiled = apply.lower(p, x).compile()
  compile_s = time.perf_counter() - t0
  with cyclegan.direct_convs():
    direct_flops = _xla_flops(jax.jit(lambda p, x: gen.apply({"params": p}, x)).lower(p, x))
  jax_call = lambda: jax.block_until_ready(compiled(p, x))
  torch_gen = torch_translator.generator_from_flax(params)
  x_t = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))

  def torch_call():
    with torch.no_grad():
      return torch_gen(x_t)

  ours = np.asarray(jax_call())
  theirs = torch_call().numpy().transpose(0, 2, 3, 1)
  calls = {"jax": jax_call}
  for n in sorted({1, os.cpu_count() or 1}):
    calls[f"torch_{n}t"] = with_threads(torch_call, n)
  return {
    "calls": calls,
    "compile_sec": compile_s,
    "xla_flops": _xla_flops(compiled),
    "direct_flops": direct_flops,
    "max_abs_diff": float(np.max(np.abs(ours - theirs))),
    "torch_version": torch.__version__,
  }


def _rate(times: list[float], unit: str, items: int, flops: float | None, peak: float) -> dict:
  """Median seconds per call, `unit` = items / median, achieved GFLOP/s and share of peak.
  `flops` counts the work in direct-conv terms (what torch executes), so a Winograd conv's
  saved multiplies show as speed, the convention for fast conv algorithms."""
  median = statistics.median(times)
  out = {"sec": median, "sec_all": [round(t, 4) for t in times], unit: items / median}
  if flops:
    out["gflop_per_sec"] = flops / median / 1e9
    out["fraction_of_conv_peak"] = flops / median / 1e9 / peak
  return out


def _with_faults(call, log: list):
  """`call` that appends (minor page faults, kernel CPU seconds) of each call to `log`: the
  JAX step's occasional heap-growth bursts (README "Benchmarks") show up as its slow rounds."""
  import resource

  def run():
    before = resource.getrusage(resource.RUSAGE_SELF)
    out = call()
    after = resource.getrusage(resource.RUSAGE_SELF)
    log.append((after.ru_minflt - before.ru_minflt, round(after.ru_stime - before.ru_stime, 3)))
    return out

  return run


def run_size(size: str, image_size: int, rounds: int, peak: float) -> dict:
  train_batch, translate_batch = SIZES[size]
  load_before = os.getloadavg()
  t = train_step(size, image_size, train_batch)
  torch_t = torch_train_step(t)
  train_calls = {"jax": t["call"]}
  for n in sorted({1, os.cpu_count() or 1}):
    train_calls[f"torch_{n}t"] = with_threads(torch_t["call"], n)
  faults = {name: [] for name in train_calls}
  train_calls = {name: _with_faults(call, faults[name]) for name, call in train_calls.items()}
  # Two warm-up steps: the heap can still grow (one-off page faults) on the second one.
  train_all = interleaved(train_calls, rounds, warmup=2)
  # Per timed round (after the warm-ups): minor page faults and kernel seconds.
  faults = {name: log[-rounds:] for name, log in faults.items()}
  train_best = min(
    (k for k in train_all if k != "jax"), key=lambda k: statistics.median(train_all[k])
  )

  def train_rate(name: str) -> dict:
    rate = _rate(train_all[name], "steps_per_sec", 1, t["direct_flops"], peak)
    rate["minor_faults_all"] = [f for f, _ in faults[name]]
    rate["sys_sec_all"] = [sys_s for _, sys_s in faults[name]]
    return rate

  images = _images(translate_batch, image_size, 3, 0)
  tr = translate_fns(size, t["params"]["rgb_to_ir"], images)
  times = interleaved(tr["calls"], rounds, warmup=1)
  torch_names = [k for k in tr["calls"] if k != "jax"]
  best = min(torch_names, key=lambda k: statistics.median(times[k]))
  rate = lambda name, n: _rate(times[name], "images_per_sec", n, tr["direct_flops"], peak)
  return {
    "size": size,
    "image_size": image_size,
    "rounds": rounds,
    "loadavg_before": [round(x, 2) for x in load_before],
    "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    "train": {
      "batch": train_batch,
      **train_rate("jax"),
      "images_per_sec": train_batch / statistics.median(train_all["jax"]),
      # What XLA executes (Winograd residual convs) and the direct-conv equivalent.
      "gflop_per_step_xla": (t["xla_flops"] or 0.0) / 1e9,
      "gflop_per_step_direct": (t["direct_flops"] or 0.0) / 1e9,
      "compile_sec": t["compile_sec"],
      **{name: train_rate(name) for name in train_all if name != "jax"},
      "torch_best": train_best,
      # > 1 means the JAX step is faster (paired per-round ratio, median).
      "jax_over_torch_speed": ratio_of_medians(train_all, train_best, "jax"),
      "first_loss": {"jax": t["first_loss"], "torch": torch_t["first_loss"]},
      "first_loss_equal": bool(
        np.isclose(t["first_loss"], torch_t["first_loss"], rtol=1e-4, atol=1e-5)
      ),
    },
    "translate": {
      "batch": translate_batch,
      "gflop_per_batch_xla": (tr["xla_flops"] or 0.0) / 1e9,
      "gflop_per_batch_direct": (tr["direct_flops"] or 0.0) / 1e9,
      "compile_sec": tr["compile_sec"],
      **{name: rate(name, translate_batch) for name in tr["calls"]},
      "torch_best": best,
      "torch_version": tr["torch_version"],
      # Median over rounds of torch_best / jax seconds: > 1 means JAX is faster.
      "jax_over_torch_speed": ratio_of_medians(times, best, "jax"),
      "max_abs_diff_vs_torch": tr["max_abs_diff"],
      "outputs_equal_torch": tr["max_abs_diff"] < EQUAL_ATOL,
    },
  }


def main(argv) -> None:
  del argv  # command.run refuses positional arguments
  f = flags.FLAGS
  sizes = ["tiny"] if f.quick else [s.strip() for s in f.sizes.split(",") if s.strip()]
  unknown = [s for s in sizes if s not in SIZES]
  if unknown:
    command.fail(f"--sizes: unknown {unknown}; choose from {sorted(SIZES)}")
  image_size = 32 if f.quick else f.image_size
  if image_size % 4:
    command.fail(f"--image_size={image_size} must divide by 4 (the generator's two stride-2 convs)")
  rounds = 1 if f.quick else f.rounds
  peak = conv_peak(*((2, 16, 64) if f.quick else (8, 64, 256)), repeats=2 if f.quick else 5)
  result = {
    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    "conv_peak": peak,
    "sizes": [run_size(s, image_size, rounds, peak["gflop_per_sec"]) for s in sizes],
  }
  print(json.dumps(result, indent=1))
  if f.out:
    records.write_json_atomic(f.out, result)


def define_flags() -> None:
  """Flags of this command (defined only when it runs, so the module imports anywhere)."""
  flags.DEFINE_bool("quick", False, "Tiny generator at 32 px, 1 round, small conv peak (CI).")
  flags.DEFINE_string("sizes", "small,paper", "Comma-separated cyclegan.SIZES presets.")
  flags.DEFINE_integer("image_size", 256, "Square image side in pixels (divisible by 4).")
  flags.DEFINE_integer("rounds", 3, "Timed interleaved rounds after one warm-up call each.")
  flags.DEFINE_string("out", None, "Also write the JSON here.")


if __name__ == "__main__":
  define_flags()
  command.run(main)
