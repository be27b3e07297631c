"""Captioner speed: train tokens/s, greedy decode tokens/s with vs without the KV cache, and the
same decode in transformers' PyTorch PaliGemma with the exported weights. Prints JSON.
  python -m benchmarks.captioner [--quick] [--size=small] [--out=bench.json]
Random weights (speed does not depend on them); every decode runs max_len steps (EOS suppressed
as with transformers' min_new_tokens).
"""

from __future__ import annotations

import json
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from fusionrs_jax.cli import command
from fusionrs_jax.models import captioner, decoding, gemma, siglip
from fusionrs_jax.trainers import captioner as trainer

SIZES = {"tiny": ("tiny", "tiny", 512), "small": ("small", "small", 2000)}


def _timed(fn, repeats: int) -> float:
  """Seconds per call after one warm-up (compile) call."""
  jax.block_until_ready(fn())
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn())
  return (time.perf_counter() - start) / repeats


def train_speed(model, params, batch, text_len, repeats):
  import optax

  tx = optax.adamw(1e-4)
  state = {"params": params, "opt_state": tx.init(params), "step": jnp.int32(0)}
  step = jax.jit(trainer.make_train_step(model, tx))
  b = batch["tokens"].shape[0]
  secs = _timed(lambda: step(state, batch)[1]["loss"], repeats)
  return b * (model.num_image_tokens + text_len) / secs


def decode_speeds(model, params, batch, max_len, repeats):
  cfg = decoding.DecodeConfig(max_len=max_len, min_len=max_len)
  cached = decoding.make_decode_fn(model, cfg)
  full = decoding.make_decode_fn(model, cfg, use_cache=False)
  b = batch["prompt"].shape[0]
  t_cache = _timed(lambda: cached(params, batch, None), repeats)
  t_full = _timed(lambda: full(params, batch, None), repeats)
  return b * max_len / t_cache, b * max_len / t_full, np.asarray(cached(params, batch, None))


def torch_speed(model, params, batch, max_len, repeats):
  import torch
  from transformers import PaliGemmaForConditionalGeneration

  from fusionrs_jax.models.hf import paligemma as hf_paligemma

  torch.set_num_threads(2)
  with tempfile.TemporaryDirectory() as out:
    hf_paligemma.save_hf_paligemma(params, model, out)
    tm = PaliGemmaForConditionalGeneration.from_pretrained(out).eval()
  prompt = np.asarray(batch["prompt"])
  inp = hf_paligemma.hf_inputs(prompt, model.num_image_tokens, model.llm_hp["vocab_size"])
  pix = hf_paligemma.pixel_values(np.asarray(batch["rgb"]), np.asarray(batch["ir"]), model.inputs)
  kwargs = {
    "input_ids": torch.from_numpy(inp["input_ids"]),
    "token_type_ids": torch.from_numpy(inp["token_type_ids"]),
    "attention_mask": torch.ones(inp["input_ids"].shape, dtype=torch.long),
    "pixel_values": torch.from_numpy(pix),
    "max_new_tokens": max_len,
    "min_new_tokens": max_len,
    "do_sample": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
  }
  with torch.no_grad():
    out = tm.generate(**kwargs)
    start = time.perf_counter()
    for _ in range(repeats):
      tm.generate(**kwargs)
  secs = (time.perf_counter() - start) / repeats
  return prompt.shape[0] * max_len / secs, out[:, inp["input_ids"].shape[1] :].numpy()


def main(argv) -> None:
  del argv  # command.run refuses positional arguments
  f = flags.FLAGS
  size = "tiny" if f.quick else f.size
  max_len = 8 if f.quick else f.max_len
  repeats = 1 if f.quick else f.repeats
  vit, llm, vocab = SIZES[size]
  model = captioner.captioner_from_presets(
    siglip.siglip_preset(vit), gemma.gemma_preset(llm), vocab
  )
  params = gemma.nn.unbox(
    jax.jit(model.init)(jax.random.PRNGKey(0), **captioner.dummy_inputs(model))
  )
  s, b, text_len = model.vision_hp["image_size"], f.batch, 32
  rng = np.random.RandomState(0)
  rgb = rng.uniform(-1, 1, (b, s, s, 3)).astype(np.float32)
  ir = rng.uniform(-1, 1, (b, s, s, 1)).astype(np.float32)
  tokens = rng.randint(5, vocab, (b, text_len)).astype(np.int32)
  mask_ar = (np.arange(text_len) >= 8).astype(np.int32)[None].repeat(b, 0)
  train_batch = {
    "rgb": rgb,
    "ir": ir,
    "tokens": tokens,
    "input_mask": np.ones_like(tokens, bool),
    "mask_ar": mask_ar,
    "loss_mask": mask_ar.astype(bool),
  }
  prompt = np.concatenate([[[2]] * b, rng.randint(5, vocab, (b, 6)), [[4]] * b], 1)
  dec_batch = {
    "rgb": rgb,
    "ir": ir,
    "prompt": prompt.astype(np.int32),
    "prompt_mask": np.ones(prompt.shape, bool),
  }
  result = {
    "size": size,
    "batch": b,
    "max_len": max_len,
    "prefix_tokens": model.num_image_tokens + prompt.shape[1],
    "devices": jax.device_count(),
  }
  result["train_tokens_per_sec"] = train_speed(model, params, train_batch, text_len, repeats)
  with_cache, without, ours = decode_speeds(model, params, dec_batch, max_len, repeats)
  result.update(
    decode_tokens_per_sec_kv_cache=with_cache,
    decode_tokens_per_sec_no_cache=without,
    kv_cache_speedup=with_cache / without,
  )
  torch_tps, theirs = torch_speed(model, params, dec_batch, max_len, repeats)
  result.update(
    torch_decode_tokens_per_sec=torch_tps,
    jax_vs_torch_decode_ratio=with_cache / torch_tps,
    greedy_tokens_equal_torch=bool((ours == theirs).all()),
  )
  text = json.dumps(
    {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}, indent=2
  )
  print(text)
  if f.out:
    with open(f.out, "w") as out:
      out.write(text + "\n")


def define_flags() -> None:
  """Flags of this command (defined only when it runs, so the module imports anywhere)."""
  flags.DEFINE_bool("quick", False, "Tiny model, few repeats (CI).")
  flags.DEFINE_enum("size", "small", sorted(SIZES), "Vision/LLM size preset.")
  flags.DEFINE_integer("batch", 8, "Examples per train step and decode call.")
  flags.DEFINE_integer("max_len", 32, "Decoded tokens per example.")
  flags.DEFINE_integer("repeats", 3, "Timed calls after the warm-up (compile) call.")
  flags.DEFINE_string("out", "", "Also write the JSON here.")


if __name__ == "__main__":
  define_flags()
  command.run(main)
