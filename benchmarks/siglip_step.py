"""SigLIP train-step speed (JAX vs transformers' PyTorch SiglipModel, same weights, batch and
optimizer), where the JAX step's time goes (--profile), and the per-device memory of the
chunked vs reference sigmoid loss on 8 devices.

  python -m benchmarks.siglip_step [--quick] [--cases=small:rgb_only,mini:rgb_only,mini:trimodal]
    [--profile] [--out=results.json]

A case is `configs/siglip_ir.py:size=<preset>,variant=<variant>` on synthetic images and
tokens. rgb_only is the RGB-text sigmoid loss, which is what `SiglipModel(return_loss=True)`
computes; trimodal adds IR (1 channel, through the shared tower) and IR-aware captions, and
the torch side computes the same three pair losses from SiglipModel's towers. JAX, torch with 1
thread and torch with all cores run interleaved (A B C A B C ...), so load from other jobs hits
every contender alike; medians over the rounds are reported, and the JAX/torch ratio is the
median of the per-round ratios. The first-step losses of both sides are compared (same
weights and batch, so they must agree to float32 tolerance).

--profile traces a few JAX steps (3 in --quick) with jax.profiler and sums each XLA op's
time (its median run times its runs per step, so a run stalled by another process does not
count) by what it computes, from the op's HLO metadata (the Flax module path): attention
projections, attention core (scores, softmax, weighted values), MLP, layer norm, embeddings,
other model ops (residual adds, heads, L2 norm), loss, optimizer (clipping, Adam, weight
decay, grad norm).

Finding (small, batch 64, rgb_only; JAX 0.10.2 XLA:CPU, 2 cores shared with a running
pipeline, so absolute times are inflated; benchmarks/results/siglip_step_profile_small.json):
of 3.64 s of op time per step (2.82 s wall; thunks overlap on the 2 cores) the MLP takes 43%,
the q/k/v/out projections 31%, the attention core (scores, softmax, weighted values) 12%,
layer norm 11%, embeddings 1%, optimizer 1.3% and the loss ~0. The step is 106 GFLOP (XLA
cost analysis), 61% of it MLP matmuls: the MLP ran at ~42 GFLOP/s and the projections at ~29,
while torch on one thread did the whole step at 44 GFLOP/s in the same interleaved rounds
(JAX 0.60x torch, paired median). So the gap is dense-matmul efficiency of XLA:CPU's dot
thunks (the top ops are all YNNPACK `ynn_fusion`s of MLP dots), not the attention formulation:
a twice-as-fast attention core would save at most ~6%. Layer norm (elementwise, no FLOPs) is
the next largest non-matmul cost. The forward's ops sum to more than the backward's (1.92 vs
1.62 s), although the backward has twice the matmul FLOPs: the forward's YNN fusions (dots
with their bias/GELU epilogues) look like the slow ones, which makes
`--xla_cpu_experimental_ynn_fusion_type=dot` (YNNPACK for plain dots only) the first XLA flag
to try. Later, idle: turning YNNPACK off or on for dots changed nothing beyond the +-15%
run-to-run noise; what did was malloc. Each step's temporaries were mapped afresh (~210k page
faults per `small` step, ~105k per `mini`); with fusionrs_jax/core/process_defaults.py's malloc
setting (applied by every command, this one included, and so to the torch side too) the JAX
steps got 15-20% faster and JAX/torch reached 1.14-1.18 (README "Benchmarks").
"""

from __future__ import annotations

import collections
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import flags

from fusionrs_jax.cli import command
from fusionrs_jax.core import records

# Fake devices for the loss-memory part only; it runs in a child process (see loss_memory).
_LOSS_CHILD_FLAG = "loss_memory_child"
VARIANTS = ("rgb_only", "trimodal")


# ----------------------------------------------------------------------------
# FLOPs.
# ----------------------------------------------------------------------------


def _encoder_macs(tokens: int, width: int, mlp: int, depth: int) -> int:
  """Multiply-accumulates of pre-LN blocks: q/k/v/out projections, scores, values, MLP."""
  per_layer = tokens * (4 * width * width + 2 * width * mlp) + 2 * tokens * tokens * width
  return depth * per_layer


def analytic_train_flops(hp: dict, batch: int, variant: str = "rgb_only") -> float:
  """Matmul FLOPs of one train step: 2 * MACs forward, x3 for forward + backward."""
  n = (hp["image_size"] // hp["patch_size"]) ** 2
  d, m = hp["width"], hp["mlp_dim"]
  vision = n * hp["patch_size"] ** 2 * 3 * d + _encoder_macs(n, d, m, hp["depth"])
  # MAP head: one probe query attends over n tokens, then an MLP on that one token.
  vision += 2 * d * d + 2 * n * d * d + 2 * n * d + 2 * d * m
  L, dt = hp["text_len"], hp["text_width"]
  text = _encoder_macs(L, dt, hp["text_mlp_dim"], hp["text_depth"]) + dt * d
  loss = batch * d  # per example: one row of the [B, B] logits
  if variant == "trimodal":  # RGB and IR images, two captions, three pair losses
    vision, text, loss = 2 * vision, 2 * text, 3 * loss
  return 3.0 * 2.0 * batch * (vision + text + loss)


def _xla_flops(compiled) -> float | None:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float(analysis["flops"]) if analysis and "flops" in analysis else None


# ----------------------------------------------------------------------------
# JAX and PyTorch train steps.
# ----------------------------------------------------------------------------


def _config(preset: str, variant: str, batch: int):
  from configs import siglip_ir

  config = siglip_ir.get_config(f"size={preset},variant={variant}")
  config.batch_size = batch
  return config


def synthetic_batch(hp: dict, batch: int, variant: str = "rgb_only", seed: int = 0) -> dict:
  """rgb [B, S, S, 3] in [-1, 1], tokens [B, L] (eos-terminated, 0-padded); trimodal adds
  ir [B, S, S, 1] and ir_tokens [B, L]."""
  rng = np.random.default_rng(seed)
  s, L = hp["image_size"], hp["text_len"]

  def tokens():
    out = rng.integers(4, hp["vocab_size"], (batch, L)).astype(np.int32)
    for row, n in zip(out, rng.integers(4, L, batch)):
      row[n - 1], row[n:] = 1, 0
    return out

  host = {"rgb": rng.uniform(-1, 1, (batch, s, s, 3)).astype(np.float32), "tokens": tokens()}
  if variant == "trimodal":
    host["ir"] = rng.uniform(-1, 1, (batch, s, s, 1)).astype(np.float32)
    host["ir_tokens"] = tokens()
  return host


def jax_step(preset: str, variant: str, batch: int) -> dict:
  """The trainer's jitted step, compiled; "call" runs one step and blocks on its loss."""
  import jax

  from fusionrs_jax.core import sharding
  from fusionrs_jax.models import siglip as siglip_model
  from fusionrs_jax.trainers import common
  from fusionrs_jax.trainers import siglip as trainer

  config = _config(preset, variant, batch)
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
  host = synthetic_batch(hp, batch, variant)
  with sharding.activate(mesh):
    batch_arrays = sharding.place_batch(host, mesh)
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch_arrays).compile()
    compile_s = time.perf_counter() - t0
  box = {"state": state}

  def call() -> float:
    box["state"], m = compiled(box["state"], batch_arrays)
    return float(m["loss"])

  return {
    "call": call,
    "first_loss": call(),
    "hp": hp,
    "params0": params0,
    "batch": host,
    "compiled": compiled,
    "compile_s": compile_s,
    "xla_flops": _xla_flops(compiled),
    "devices": jax.device_count(),
    "optim": config.optim,
  }


def torch_step(hp: dict, params0, host: dict, optim, variant: str) -> dict:
  """The same step in transformers: SiglipModel + clip + torch AdamW. rgb_only is
  SiglipModel(return_loss=True); trimodal sums the three sigmoid pair losses over the
  model's towers (IR replicated to 3 channels, as the shared JAX tower does)."""
  import torch
  import torch.nn.functional as F
  import transformers

  from fusionrs_jax.models.hf import siglip as hf_siglip

  model = transformers.SiglipModel(hf_siglip.hf_siglip_config(hp))
  sd = hf_siglip.to_hf_state_dict(params0, hp)
  model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
  model.train()
  opt = torch.optim.AdamW(
    model.parameters(), lr=optim.lr, betas=(optim.b1, optim.b2), weight_decay=optim.weight_decay
  )
  nchw = lambda x: torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  pixels, tokens = nchw(host["rgb"]), torch.from_numpy(host["tokens"]).long()

  def pair_loss(zimg, ztxt):
    logits = zimg @ ztxt.t() * model.logit_scale.exp() + model.logit_bias
    labels = 2 * torch.eye(len(zimg)) - 1
    return -F.logsigmoid(labels * logits).sum() / len(zimg)

  def trimodal_loss():
    image = lambda x: F.normalize(model.vision_model(pixel_values=x).pooler_output, dim=-1)
    text = lambda t: F.normalize(model.text_model(input_ids=t).pooler_output, dim=-1)
    rgb, ir = image(pixels), image(nchw(host["ir"]).repeat(1, 3, 1, 1))
    txt, ir_txt = text(tokens), text(torch.from_numpy(host["ir_tokens"]).long())
    return pair_loss(rgb, txt) + pair_loss(ir, ir_txt) + pair_loss(rgb, ir)

  def call() -> float:
    opt.zero_grad(set_to_none=True)
    if variant == "trimodal":
      loss = trimodal_loss()
    else:
      loss = model(input_ids=tokens, pixel_values=pixels, return_loss=True).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
    opt.step()
    return float(loss.detach())

  return {"call": call, "first_loss": call(), "version": torch.__version__}


def with_threads(call, threads: int):
  """`call` run with torch's intra-op pool at `threads` (set before every call)."""
  import torch

  def run():
    torch.set_num_threads(threads)
    return call()

  return run


def interleaved(calls: dict, rounds: int, warmup: int) -> dict:
  """{name: call} -> {name: [seconds of each timed call]}, calling A B C A B C ... so that
  load from other processes falls on every contender alike."""
  for _ in range(warmup):
    for call in calls.values():
      call()
  times = {name: [] for name in calls}
  for _ in range(rounds):
    for name, call in calls.items():
      t0 = time.perf_counter()
      call()
      times[name].append(time.perf_counter() - t0)
  return times


def ratio_of_medians(times: dict, slow: str, fast: str) -> float:
  """Median over rounds of times[slow][i] / times[fast][i] (paired by round)."""
  return statistics.median(s / f for s, f in zip(times[slow], times[fast]))


# ----------------------------------------------------------------------------
# Where the JAX step's time goes (--profile).
# ----------------------------------------------------------------------------

# Model ops by the Flax module path in their HLO op_name (first match wins).
_MODEL_CATEGORIES = (
  ("mlp", ("/mlp/",)),
  ("layer_norm", ("layer_norm", "layernorm")),
  ("embeddings", ("patch_embedding", "position_embedding", "token_embedding")),
)
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")


def op_category(op_name: str) -> str:
  """Category of one HLO op from its metadata op_name (a traced jax/Flax name stack)."""
  if "SigLIP" not in op_name:
    # Outside the model: under value_and_grad (jvp) it is the loss, else the optimizer.
    return "loss" if "jvp(" in op_name else "optimizer"
  if "self_attn" in op_name or "/attention/" in op_name:
    return "attention_proj" if "_proj/" in op_name else "attention_core"
  for category, keys in _MODEL_CATEGORIES:
    if any(k in op_name for k in keys):
      return category
  return "model_other"


def hlo_op_categories(hlo_text: str) -> dict[str, tuple[str, bool]]:
  """Compiled HLO text -> {instruction name: (category, is_backward)}. A fusion takes the
  most common category among the ops fused into it (its own metadata names only its root)."""
  by_computation: dict[str, list[str]] = collections.defaultdict(list)
  own: dict[str, tuple[str | None, str | None]] = {}
  current = None
  for line in hlo_text.splitlines():
    head = _COMPUTATION.match(line)
    if head and not line.startswith(" "):
      current = head.group(1)
      continue
    inst = _INSTRUCTION.match(line)
    if not inst or current is None:
      continue
    name, rest = inst.groups()
    op_name = re.search(r'op_name="([^"]*)"', rest)
    calls = re.search(r"calls=%?([\w.\-]+)", rest)
    if op_name:
      by_computation[current].append(op_name.group(1))
    own[name] = (op_name.group(1) if op_name else None, calls.group(1) if calls else None)
  out = {}
  for name, (op_name, calls) in own.items():
    names = by_computation.get(calls) or ([op_name] if op_name else [])
    if not names:
      out[name] = ("unattributed", False)
      continue
    votes = collections.Counter(op_category(n) for n in names)
    backward = sum("transpose(" in n for n in names) * 2 > len(names)
    out[name] = (votes.most_common(1)[0][0], backward)
  return out


def profile_step(call, compiled, steps: int) -> dict:
  """Traces `steps` calls of the compiled step; per-category op milliseconds per step."""
  import jax

  categories = hlo_op_categories(compiled.as_text())
  with tempfile.TemporaryDirectory() as trace_dir:
    t0 = time.perf_counter()
    with jax.profiler.trace(trace_dir):
      for _ in range(steps):
        call()
    wall = (time.perf_counter() - t0) / steps
    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    data = jax.profiler.ProfileData.from_file(path)
  durations = collections.defaultdict(list)
  for plane in data.planes:
    for line in plane.lines:
      for event in line.events:
        stats = dict(event.stats)
        op = stats.get("hlo_op")
        if op is not None and "train_step" in str(stats.get("hlo_module", "")):
          durations[op].append(event.duration_ns / 1e6)
  ms = collections.Counter()
  direction = collections.Counter()
  per_op = collections.Counter()
  for op, times in durations.items():
    category, backward = categories.get(op, ("unattributed", False))
    # The median run of the op times its runs per step: one run stalled by another process
    # on this shared CPU does not count as the op's cost.
    t = statistics.median(times) * len(times) / steps
    ms[category] += t
    per_op[(op, category)] += t
    if category not in ("optimizer", "unattributed"):
      direction["backward" if backward else "forward"] += t
  total = sum(ms.values())
  return {
    "steps_traced": steps,
    "wall_ms_per_step_traced": 1e3 * wall,
    # Ops of the thunk runtime may overlap on the 2 cores, so this can exceed the wall time.
    "op_ms_per_step": total,
    "ms_per_step": {k: round(v, 2) for k, v in ms.most_common()},
    "share": {k: round(v / total, 4) for k, v in ms.most_common()},
    "model_and_loss_ms_forward_backward": {k: round(v, 2) for k, v in direction.items()},
    "top_ops": [
      {"op": op, "category": c, "ms": round(t, 2)} for (op, c), t in per_op.most_common(12)
    ],
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


def _rates(times: list[float], batch: int, flops: float) -> dict:
  median = statistics.median(times)
  return {
    "sec_per_step": median,
    "sec_per_step_mean": statistics.fmean(times),
    "sec_per_step_all": [round(t, 4) for t in times],
    "examples_per_sec": batch / median,
    "gflop_per_sec": flops / median / 1e9,
  }


def run_case(preset: str, variant: str, batch: int, rounds: int, warmup: int, profile: int):
  """One (preset, variant): JAX and torch (1 thread, all cores) interleaved, same weights."""
  j = jax_step(preset, variant, batch)
  t = torch_step(j["hp"], j["params0"], j["batch"], j["optim"], variant)
  calls = {"jax": j["call"]}
  for n in sorted({1, os.cpu_count() or 1}):
    calls[f"torch_{n}t"] = with_threads(t["call"], n)
  load_before = os.getloadavg()
  times = interleaved(calls, rounds, max(0, warmup - 1))  # both sides already ran one step
  analytic = analytic_train_flops(j["hp"], batch, variant)
  flops = j["xla_flops"] or analytic
  torch_names = [k for k in calls if k != "jax"]
  best = min(torch_names, key=lambda k: statistics.median(times[k]))
  diff = abs(j["first_loss"] - t["first_loss"])
  result = {
    "preset": preset,
    "variant": variant,
    "batch": batch,
    "rounds": rounds,
    "loadavg_before": [round(x, 2) for x in load_before],
    "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    "jax_devices": j["devices"],
    "flops_source": "xla_cost_analysis" if j["xla_flops"] else "analytic",
    "gflop_per_step_xla": None if j["xla_flops"] is None else j["xla_flops"] / 1e9,
    "gflop_per_step_analytic_matmul": analytic / 1e9,
    "jax": {**_rates(times["jax"], batch, flops), "compile_sec": j["compile_s"]},
    **{name: _rates(times[name], batch, flops) for name in torch_names},
    "torch_version": t["version"],
    "torch_best": best,
    # Median over rounds of torch_best / jax seconds: > 1 means JAX is faster.
    "jax_over_torch_speed": ratio_of_medians(times, best, "jax"),
    "first_loss": {"jax": j["first_loss"], "torch": t["first_loss"], "abs_diff": diff},
    "first_loss_equal": diff <= 1e-4 * max(1.0, abs(t["first_loss"])),
  }
  if profile:
    result["profile"] = profile_step(j["call"], j["compiled"], profile)
  return result


def parse_cases(text: str) -> list[tuple[str, str]]:
  """ "small:rgb_only,mini:trimodal" -> [("small", "rgb_only"), ("mini", "trimodal")]."""
  cases = []
  for item in filter(None, (s.strip() for s in text.split(","))):
    preset, _, variant = item.partition(":")
    if variant not in VARIANTS:
      command.fail(f"--cases: {item!r} must be <preset>:<variant>, variant one of {VARIANTS}")
    cases.append((preset, variant))
  if not cases:
    command.fail("--cases is empty")
  return cases


def main(argv) -> None:
  del argv  # command.run refuses positional arguments
  f = flags.FLAGS
  if f[_LOSS_CHILD_FLAG].value:
    print(json.dumps(_loss_memory_child(f.loss_batch, f.loss_dim)))
    return
  if f.quick:
    cases, batch, rounds, warmup, loss_batch = (
      parse_cases("tiny:rgb_only,tiny:trimodal"),
      16,
      2,
      1,
      256,
    )
  else:
    cases, batch, rounds, warmup = parse_cases(f.cases), f.batch, f.rounds, f.warmup
    loss_batch = f.loss_batch
  profile = (3 if f.quick else f.profile_steps) if f.profile else 0
  result = {
    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    "cases": [run_case(p, v, batch, rounds, warmup, profile) for p, v in cases],
  }
  if f.loss_memory:
    from fusionrs_jax.models import siglip as siglip_model

    width = siglip_model.siglip_preset(cases[0][0])["width"]
    result["loss_memory"] = loss_memory(loss_batch, width)
  print(json.dumps(result, indent=1))
  if f.out:
    records.write_json_atomic(f.out, result)


def define_flags() -> None:
  """Flags of this command (defined only when it runs, so the module imports anywhere)."""
  flags.DEFINE_bool(
    "quick", False, "Tiny preset (both variants), batch 16, 2 rounds, loss batch 256 (CI)."
  )
  flags.DEFINE_string(
    "cases",
    "small:rgb_only,mini:rgb_only,mini:trimodal",
    "Comma-separated <size preset>:<rgb_only|trimodal> of configs/siglip_ir.py.",
  )
  flags.DEFINE_integer("batch", 64, "Global batch of the train step.")
  flags.DEFINE_integer("rounds", 5, "Timed interleaved rounds (one step per contender each).")
  flags.DEFINE_integer("warmup", 2, "Untimed steps per contender before the rounds (>= 1).")
  flags.DEFINE_bool("profile", False, "Also trace the JAX step and break its time down by op.")
  flags.DEFINE_integer("profile_steps", 3, "Steps traced by --profile.")
  flags.DEFINE_bool("loss_memory", True, "Also measure the chunked vs reference loss memory.")
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
