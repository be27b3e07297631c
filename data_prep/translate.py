"""Runs a trained RGB->IR generator over RGB shards, writing paired shards (ir_origin="translated").

  python -m data_prep.translate --checkpoint=workdirs/translator --in=data/ucm --out=data/ucm_ir

Native resolution (reflection-padded to a multiple of 4, cropped back), batches sharded
over all local devices; one output shard per input shard, written atomically, so an
interrupted run resumes by skipping finished shards. Prints images/s.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import flags, logging
from PIL import Image

from fusionrs_jax.core import checkpoint, command, records, sharding
from fusionrs_jax.core.errors import UserError
from fusionrs_jax.data import images
from fusionrs_jax.models import cyclegan


def resolve_checkpoint(path: str) -> tuple[str, str]:
  """A run workdir or its checkpoints folder -> (checkpoints dir, config.json path)."""
  path = os.path.abspath(path)
  ckpt_dir = (
    os.path.join(path, "checkpoints") if os.path.isdir(os.path.join(path, "checkpoints")) else path
  )
  config_path = os.path.join(os.path.dirname(ckpt_dir), "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(
      f"{config_path} not found: --checkpoint must be a translator "
      f"workdir (or its checkpoints folder) written by fusionrs_jax.main"
    )
  return ckpt_dir, config_path


def load_generator(path: str) -> tuple[cyclegan.Generator, Any, dict[str, Any]]:
  """(RGB->IR module, its params as numpy, {"checkpoint", "step", "size"}) of a run."""
  ckpt_dir, config_path = resolve_checkpoint(path)
  with open(config_path) as f:
    config = json.load(f)
  if config.get("trainer") != "translator":
    raise ValueError(f"{config_path}: trainer is {config.get('trainer')!r}, not 'translator'")
  ckpt = checkpoint.Checkpointer(ckpt_dir, save_every=1, async_save=False)
  step = ckpt.latest_step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {ckpt_dir}")
  params = ckpt.restore_raw(step)["params"]["rgb_to_ir"]
  ckpt.close()
  size = config["model"]["size"]
  model = cyclegan.build(size).rgb_to_ir
  return model, params, {"checkpoint": ckpt_dir, "step": int(step), "size": size}


def pad_to_multiple(x: np.ndarray, multiple: int = 4) -> np.ndarray:
  """Reflection-pads H, W of [B,H,W,C] up to multiples of `multiple` (bottom/right)."""
  h, w = x.shape[1:3]
  ph, pw = -h % multiple, -w % multiple
  return np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect") if ph or pw else x


def encode_png(ir01: np.ndarray) -> bytes:
  """[H,W,1] float in [0,1] -> 8-bit grayscale PNG bytes."""
  buf = io.BytesIO()
  Image.fromarray(np.round(np.clip(ir01[..., 0], 0, 1) * 255).astype(np.uint8)).save(buf, "PNG")
  return buf.getvalue()


class Translator:
  """Batched, device-sharded RGB->IR at native resolution. __call__: list of [H,W,3] in
  [-1,1] (any sizes) -> list of [H,W,1] in [0,1]."""

  def __init__(self, model, params, batch_size: int, devices=None):
    self.mesh = sharding.make_mesh({"data": -1}, devices or jax.local_devices())
    shards = sharding.num_batch_shards(self.mesh)
    self.batch_size = -(-batch_size // shards) * shards
    self.params = jax.device_put(params, sharding.replicated(self.mesh))
    self._apply: Callable = jax.jit(lambda p, x: model.apply({"params": p}, x))

  def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
    out: list[np.ndarray | None] = [None] * len(images)
    by_shape: dict[tuple, list[int]] = {}
    for i, x in enumerate(images):
      by_shape.setdefault(x.shape, []).append(i)
    # One batch in flight while the previous one is copied back: JAX dispatches
    # asynchronously, so the host's stacking/padding overlaps the device's work.
    pending: list[tuple[list[int], tuple, jax.Array]] = []
    for shape, idx in by_shape.items():
      for start in range(0, len(idx), self.batch_size):
        chunk = idx[start : start + self.batch_size]
        x = np.stack([images[i] for i in chunk])
        x = np.concatenate([x, np.repeat(x[-1:], self.batch_size - len(chunk), 0)])
        x = jax.device_put(pad_to_multiple(x), sharding.batch_sharding(self.mesh, 4))
        pending.append((chunk, shape, self._apply(self.params, x)))
        if len(pending) > 1:
          self._collect(*pending.pop(0), out)
    for item in pending:
      self._collect(*item, out)
    return out

  @staticmethod
  def _collect(chunk: list[int], shape: tuple, y: jax.Array, out: list) -> None:
    y = np.asarray(y)[: len(chunk), : shape[0], : shape[1]]
    for i, img in zip(chunk, y):
      out[i] = (img + 1.0) / 2.0


def translate_records(
  recs: list[records.Record], translator: Translator, provenance: dict, overwrite_ir: bool = False
) -> int:
  """Gives every record with RGB and no IR (any IR with overwrite_ir) the translated IR, in
  place (ir_origin "translated", provenance under meta["translator"]). Returns how many."""
  todo = [r for r in recs if r.rgb and (overwrite_ir or not r.ir)]
  rgbs = [images.decode_image(r.rgb, 3, r.id) for r in todo]
  for rec, ir in zip(todo, translator(rgbs)):
    rec.ir = encode_png(ir)
    rec.ir_origin = "translated"
    rec.meta = {**rec.meta, "translator": provenance}
  return len(todo)


def translate_shard(
  in_path: str, out_path: str, translator: Translator, provenance: dict, overwrite_ir: bool = False
) -> dict[str, int]:
  """One input shard -> one output shard (atomic). Returns counts for the summary."""
  recs = list(records.read_records([in_path]))
  translated = translate_records(recs, translator, provenance, overwrite_ir)
  records.write_array_record(out_path, (records.encode(r) for r in recs))
  return {"records": len(recs), "translated": translated, "kept": len(recs) - translated}


def translate_folder(
  in_dir: str, out_dir: str, checkpoint_path: str, batch_size: int = 16, overwrite_ir: bool = False
) -> dict[str, Any]:
  """Every split of `in_dir` -> `out_dir` (same shard names + dataset_info.json)."""
  info = records.read_info(in_dir)
  name = info["name"]
  model, params, provenance = load_generator(checkpoint_path)
  translator = Translator(model, params, batch_size)
  os.makedirs(out_dir, exist_ok=True)
  totals = {"records": 0, "translated": 0, "kept": 0, "skipped_shards": 0}
  start = time.perf_counter()
  for split in sorted(info["splits"]):
    for in_path in records.list_shards(in_dir, split):
      out_path = os.path.join(out_dir, os.path.basename(in_path))
      if os.path.exists(out_path):  # finished by an earlier (interrupted) run
        totals["skipped_shards"] += 1
        continue
      counts = translate_shard(in_path, out_path, translator, provenance, overwrite_ir)
      for k, v in counts.items():
        totals[k] += v
      rate = totals["translated"] / max(time.perf_counter() - start, 1e-9)
      logging.info(
        "%s: %d records (%.1f images/s)", os.path.basename(out_path), counts["records"], rate
      )
  seconds = time.perf_counter() - start
  extra = {
    k: v
    for k, v in info.items()
    if k not in ("name", "splits", "schema_version", "format", "record_encoding")
  }
  records.write_info(
    out_dir, name, {**extra, "translated_from": os.path.abspath(in_dir), "translator": provenance}
  )
  return {
    **totals,
    "seconds": round(seconds, 2),
    "images_per_s": round(totals["translated"] / max(seconds, 1e-9), 2),
  }


def _define_flags() -> None:
  flags.DEFINE_string("checkpoint", None, "Translator workdir or its checkpoints folder.")
  flags.DEFINE_string("in", None, "Input shard folder (RGB records, dataset_info.json).")
  flags.DEFINE_string("out", None, "Output folder for the paired shards.")
  flags.DEFINE_integer("batch_size", 16, "Images per batch (rounded up to the devices).")
  flags.DEFINE_bool("overwrite_ir", False, "Also translate records that already have IR.")


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  for name in ("checkpoint", "in", "out"):
    if not f[name].value:
      raise UserError(f"--{name} is required (see --help)")
  if not os.path.isfile(os.path.join(f["in"].value, records.INFO_FILE)):
    raise UserError(f"--in={f['in'].value}: no {records.INFO_FILE} there; not a prepared dataset")
  try:
    summary = translate_folder(f["in"].value, f.out, f.checkpoint, f.batch_size, f.overwrite_ir)
  except (FileNotFoundError, ValueError) as e:
    raise UserError(str(e)) from e
  print(json.dumps(summary))


if __name__ == "__main__":
  _define_flags()
  command.run(main)
