r"""Public caption/thermal layouts -> checked ArrayRecord shards, rejects.jsonl, dataset_info.

  python -m data_prep.ingest --source=karpathy --json=DIR/dataset_ucm.json \
      --images=DIR/images --out=/tmp/ucm --name=ucm

Every flag and input file is checked before anything is written; a mistake is one
`error: ...` line and exit code 2. Unusable entries become rejects.jsonl lines.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from absl import flags

from data_prep.ingest import caption_text, sources
from data_prep.ingest.writer import REJECTS_FILE, IngestOptions, ingest
from fusionrs_jax.core.errors import UserError
from fusionrs_jax.data.images import ImageLimits

_REQUIRED = ("source", "json", "images", "out", "name")


def define_flags() -> None:
  """CLI flags, defined only when run as a script so importing the ingest modules (e.g. from
  data_prep.beam or a test beside other CLIs) never clashes on flag names."""
  flags.DEFINE_enum(
    "source",
    None,
    ["karpathy", "nwpu", "folder", "coco_thermal"],
    "Layout of the input (see data_prep/ingest/sources.py).",
  )
  flags.DEFINE_list(
    "json",
    None,
    "Caption/annotation file(s); coco_thermal takes one per "
    "split, comma-separated (split = file stem).",
  )
  flags.DEFINE_string("images", None, "Folder holding the images; nothing outside it is read.")
  flags.DEFINE_string("out", None, "Output folder for the shards (one dataset per folder).")
  flags.DEFINE_string("name", None, "Dataset name: shard prefix and record id prefix.")
  flags.DEFINE_integer("records_per_shard", 1000, "Records per shard.")
  flags.DEFINE_bool("tfrecord", False, "Also export TFRecord shards.")
  flags.DEFINE_bool("resume", False, "Continue an interrupted ingest in --out.")
  flags.DEFINE_integer("min_size", 32, "Reject images with a side below this (px).")
  flags.DEFINE_integer(
    "max_pixels",
    ImageLimits.max_pixels,
    "Reject images with more pixels than this (read from the header, before decoding).",
  )
  flags.DEFINE_integer("chunk_size", 256, "Items per resumable staging chunk.")
  flags.DEFINE_integer(
    "max_caption_words", caption_text.CaptionRules.max_words, "Longest caption kept, in words."
  )
  flags.DEFINE_enum(
    "long_captions",
    caption_text.CaptionRules.long,
    list(caption_text.LONG_CAPTION_MODES),
    "A caption over --max_caption_words is truncated, or rejected.",
  )


def _check_flags(f) -> None:
  """UserError for the first flag mistake (nothing has been written yet)."""
  for name in _REQUIRED:
    if not f[name].value:
      raise UserError(f"--{name} is required (see --help)")
  if not os.path.isdir(f.images):
    raise UserError(f"--images={f.images} is not a folder")
  for path in f.json:
    if not os.path.isfile(path):
      raise UserError(f"--json: {path} is not a file")
  if os.path.exists(f.out) and not os.path.isdir(f.out):
    raise UserError(f"--out={f.out} exists and is not a folder")
  if not sources.entries.SPLIT_NAME.match(f.name.replace("-", "_")):
    raise UserError(f"--name={f.name!r}: use letters, digits, '_' and '-' only")
  for name in ("records_per_shard", "chunk_size", "min_size", "max_pixels", "max_caption_words"):
    if f[name].value < 1:
      raise UserError(f"--{name}={f[name].value} must be >= 1")


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  _check_flags(f)
  limits = ImageLimits(max_pixels=f.max_pixels, min_side=f.min_size)
  # Reads and checks every annotation file: a broken one stops here, before any write.
  items = sources.read_source(f.source, f.json, f.images, f.name, limits)
  source_args = {
    "source": f.source,
    "json": [os.path.abspath(p) for p in f.json],
    "images": os.path.abspath(f.images),
    "max_pixels": f.max_pixels,
  }
  rules = caption_text.CaptionRules(max_words=f.max_caption_words, long=f.long_captions)
  summary = ingest(
    items,
    f.out,
    f.name,
    IngestOptions(
      records_per_shard=f.records_per_shard,
      min_size=f.min_size,
      tfrecord=f.tfrecord,
      resume=f.resume,
      chunk_size=f.chunk_size,
      source_args=source_args,
      captions=rules,
    ),
  )
  print(f"{summary['name']}: {summary['items']} items in {summary['seconds']} s")
  for split, n in sorted(summary["splits"].items()):
    print(f"  {split}: {n} records, {summary['captions'][split]} captions")
  print(
    f"  rejects: {summary['rejects'] or 'none'} "
    f"(see {os.path.join(summary['out_dir'], REJECTS_FILE)})"
  )
  print(f"  duplicate images moved between splits: {len(summary['dedup_moves'])}")
