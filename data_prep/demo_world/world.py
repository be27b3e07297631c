"""The embedded default dataset: procedural aerial scenes with paired rendered thermal images
and layout-grounded captions, written as fusionrs_jax records in seconds with no download.

A synthetic fixture and demo, never real data: every record says so in `meta` and
`ir_origin="rendered"`. Run:
  python -m data_prep.demo_world --out=/tmp/demo_world --num_train=1000 --image_size=64
"""

from __future__ import annotations

import io
import json
import os
import time
from typing import Any

import numpy as np
from absl import app, flags, logging
from PIL import Image

from data_prep.demo_world import captions as captions_lib
from data_prep.demo_world import layout as layout_lib
from data_prep.demo_world import render
from fusionrs_jax.core import records

NAME = "demo_world"
SCENE_CLASSES = layout_lib.SCENE_CLASSES
SPLITS = ("train", "val", "test")
# Keeps the per-sample random streams of the splits apart (part of the seed sequence).
_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}
MIN_SIZE, MAX_SIZE = 32, 256


def _sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
  return np.random.default_rng([seed, _SPLIT_STREAM.get(split, 3), index])


def _round_box(box, size: int) -> list[float]:
  """(x0, y0, x1, y1) in image widths -> [x, y, w, h] in pixels (0.1 px precision)."""
  x0, y0, x1, y1 = (v * size for v in box)
  return [round(x0, 1), round(y0, 1), round(x1 - x0, 1), round(y1 - y0, 1)]


def layout_meta(layout, size: int) -> tuple[list[dict], list[dict]]:
  """Layout -> (layout entries, countable objects), boxes [x, y, w, h] in pixels."""
  entries, objects = [], []
  for e in layout.elements:
    box = _round_box(e.box(), size)
    entries.append(
      {
        "class": e.cls,
        "material": e.material,
        "box": box,
        "count": len(e.shapes) if e.cls in ("crop rows", "parking lines") else 1,
      }
    )
    if e.category:
      objects.append({"category": e.category, "bbox": box})
  return entries, objects


def generate_sample(
  seed: int | np.random.Generator,
  index: int,
  scene_class: str | None = None,
  image_size: int = 64,
  split: str = "train",
  time_of_day: str | None = None,
) -> records.Record:
  """One synthetic record; identical bytes for the same (seed, split, index, options).

  `seed` may be a Generator (then it alone drives the randomness). scene_class=None picks
  SCENE_CLASSES[index % 16] and time_of_day=None alternates day/night per class cycle, so
  consecutive indices are class- and day/night-balanced. Images: RGB [S, S, 3] and thermal
  [S, S] PNGs with S = image_size.
  """
  if not MIN_SIZE <= image_size <= MAX_SIZE:
    raise ValueError(f"image_size {image_size} outside [{MIN_SIZE}, {MAX_SIZE}]")
  n = len(SCENE_CLASSES)
  scene_class = scene_class or SCENE_CLASSES[index % n]
  time_of_day = time_of_day or ("day" if (index // n) % 2 == 0 else "night")
  if time_of_day not in ("day", "night"):
    raise ValueError(f"time_of_day must be 'day' or 'night', got {time_of_day!r}")
  if isinstance(seed, np.random.Generator):
    rng, seed_meta = seed, None
  else:
    rng, seed_meta = _sample_rng(int(seed), split, index), int(seed)
  layout = layout_lib.make_layout(rng, scene_class)
  sun_angle = rng.uniform(0, 2 * np.pi)
  sun = (float(np.cos(sun_angle)), float(np.sin(sun_angle)))
  labels, shadow = render.rasterize(layout, image_size, sun)
  rgb = render.render_rgb(labels, shadow, rng)
  ir, sensor = render.render_thermal(labels, shadow, rng, time_of_day)
  texts = captions_lib.captions_for(layout, rng)
  entries, objects = layout_meta(layout, image_size)
  meta = {
    "synthetic": True,
    "generator": NAME,
    "seed": seed_meta,
    "index": index,
    "time_of_day": time_of_day,
    "rgb_time_of_day": "day",
    "width": image_size,
    "height": image_size,
    "layout": entries,
    "objects": objects,
    "facts": dict(layout.facts),
    "sun_direction": [round(v, 3) for v in sun],
    "thermal_sensor": sensor,
    "note": "procedurally generated fixture, not real imagery",
  }
  prefix = f"s{seed_meta}" if seed_meta is not None else "rng"
  return records.Record(
    id=f"{NAME}-{split}-{prefix}-{index:06d}",
    source=NAME,
    split=split,
    rgb=render.png_bytes(rgb),
    ir=render.png_bytes(ir),
    ir_origin="rendered",
    captions=texts,
    label=scene_class,
    meta=meta,
  )


def _config(num_train, num_val, num_test, image_size, seed, records_per_shard) -> dict:
  return {
    "num_train": num_train,
    "num_val": num_val,
    "num_test": num_test,
    "image_size": image_size,
    "seed": seed,
    "records_per_shard": records_per_shard,
  }


def _already_built(out_dir: str, config: dict) -> dict | None:
  """The existing dataset_info.json when out_dir holds exactly this build, else None."""
  try:
    info = records.read_info(out_dir)
  except (FileNotFoundError, json.JSONDecodeError):
    return None
  if info.get("generator_config") != config:
    return None
  for split in info.get("splits", {}).values():
    for shard in split["shards"]:
      if not os.path.exists(os.path.join(out_dir, shard["file"])):
        return None
  return info


def build_demo_world(
  out_dir: str,
  num_train: int = 1000,
  num_val: int = 100,
  num_test: int = 100,
  image_size: int = 64,
  seed: int = 0,
  records_per_shard: int = 1000,
  force: bool = False,
) -> dict[str, Any]:
  """Writes train/val/test shards named "demo_world" and dataset_info.json; returns the info.

  Idempotent: a folder already holding this exact build is left as is (unless force);
  otherwise each split is rewritten atomically shard by shard.
  """
  config = _config(num_train, num_val, num_test, image_size, seed, records_per_shard)
  for key, value in config.items():
    if value < 0 or (key in ("records_per_shard", "image_size") and value == 0):
      raise ValueError(f"build_demo_world: {key}={value} must be positive")
  if not force and (info := _already_built(out_dir, config)):
    logging.info("demo_world: %s already holds this build; nothing to do", out_dir)
    return info
  start, cpu_start, total = time.perf_counter(), time.process_time(), 0
  for split, count in zip(SPLITS, (num_train, num_val, num_test)):
    if count == 0:
      continue
    recs = [generate_sample(seed, i, image_size=image_size, split=split) for i in range(count)]
    records.write_split(recs, out_dir, NAME, split, records_per_shard)
    total += count
  elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
  # CPU-time rate too: on a shared machine the wall-clock rate mostly measures the neighbours.
  logging.info(
    "demo_world: %d samples in %.1f s (%.0f samples/s wall, %.0f per CPU-second) -> %s",
    total,
    elapsed,
    total / max(elapsed, 1e-9),
    total / max(cpu, 1e-9),
    out_dir,
  )
  extra = {
    "synthetic": True,
    "generator": NAME,
    "generator_config": config,
    "scene_classes": list(SCENE_CLASSES),
    "image_size": image_size,
    "ir_origin": "rendered",
    "note": "procedural demo world: a fixture and demo, not real remote-sensing data",
  }
  return records.write_info(out_dir, NAME, extra)


def contact_sheet(recs, path: str) -> None:
  """Saves a PNG with each record's RGB above its thermal image (thermal shown in gray)."""

  tiles = []
  for r in recs:
    rgb = Image.open(io.BytesIO(r.rgb)).convert("RGB")
    ir = Image.open(io.BytesIO(r.ir)).convert("RGB")
    tiles.append(np.concatenate([np.asarray(rgb), np.asarray(ir)], 0))
  Image.fromarray(np.concatenate(tiles, 1)).save(path)


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("out", None, "Output folder for shards and dataset_info.json.")
  flags.DEFINE_integer("num_train", 1000, "Train samples.")
  flags.DEFINE_integer("num_val", 100, "Validation samples.")
  flags.DEFINE_integer("num_test", 100, "Test samples.")
  flags.DEFINE_integer("image_size", 64, f"Square image side in pixels ({MIN_SIZE}..{MAX_SIZE}).")
  flags.DEFINE_integer("seed", 0, "Dataset seed.")
  flags.DEFINE_integer("records_per_shard", 1000, "Records per ArrayRecord shard.")
  flags.DEFINE_bool("force", False, "Rebuild even when --out already holds this build.")
  flags.DEFINE_string("sheet", None, "Optional PNG path: contact sheet of 8 train samples.")


def main(argv) -> None:
  del argv
  if not FLAGS.out:
    raise app.UsageError("--out is required (folder for the demo_world shards)")
  if not MIN_SIZE <= FLAGS.image_size <= MAX_SIZE:
    raise app.UsageError(f"--image_size={FLAGS.image_size} outside [{MIN_SIZE}, {MAX_SIZE}]")
  info = build_demo_world(
    FLAGS.out,
    FLAGS.num_train,
    FLAGS.num_val,
    FLAGS.num_test,
    FLAGS.image_size,
    FLAGS.seed,
    FLAGS.records_per_shard,
    FLAGS.force,
  )
  for split, s in info["splits"].items():
    logging.info("demo_world %s: %d records in %d shards", split, s["records"], len(s["shards"]))
  if FLAGS.sheet:
    contact_sheet(
      [generate_sample(FLAGS.seed, i, image_size=FLAGS.image_size) for i in range(8)], FLAGS.sheet
    )
    logging.info("contact sheet -> %s", FLAGS.sheet)


if __name__ == "__main__":
  define_flags()
  app.run(main)
