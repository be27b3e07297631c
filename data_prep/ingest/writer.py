"""Source items -> checked, de-duplicated records -> ArrayRecord shards per split.

Two passes: items are checked and staged in resumable chunks, then duplicates are kept in
one split and the final shards, dataset_info.json, rejects.jsonl and exports are written.

  python -m data_prep.ingest --source=karpathy --json=DIR/dataset_ucm.json \
      --images=DIR/images --out=/tmp/ucm --name=ucm
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from typing import Any

from absl import app, flags, logging
from tqdm import tqdm

from data_prep.ingest import sources, tfds_export
from data_prep.ingest.sources import ItemRejected, SourceItem
from fusionrs_jax.core import records
from fusionrs_jax.core.records import Record

# Bump when the staged chunk format changes, so an old work folder is never resumed.
_WORK_VERSION = 1
_SHARD_FILE = re.compile(r"^(?P<split>\w+)\.(?P<fmt>array_record|tfrecord)-\d{5}-of-\d{5}$")
REJECTS_FILE = "rejects.jsonl"


def _work_dir(out_dir: str, name: str) -> str:
  return os.path.join(out_dir, f".ingest-{name}")


# ----------------------------------------------------------------------------
# Pass 1: check each item and stage accepted records in chunks.
# ----------------------------------------------------------------------------


def reject_entry(item_id: str, file: str, reason: str, detail: str, **extra) -> dict[str, Any]:
  return {"id": item_id, "file": file, "reason": reason, "detail": detail, **extra}


def _clean_captions(record: Record, file: str) -> list[dict[str, Any]]:
  """Drops empty / non-text captions from `record` in place; returns their rejects."""
  kept, rejects = [], []
  for i, text in enumerate(record.captions):
    if not isinstance(text, str):
      rejects.append(
        reject_entry(
          record.id,
          file,
          "non_text_caption",
          f"caption {i} is a {type(text).__name__}: {text!r}",
          caption_index=i,
        )
      )
    elif not text.strip():
      rejects.append(
        reject_entry(record.id, file, "empty_caption", f"caption {i} is empty", caption_index=i)
      )
    else:
      kept.append(text.strip())
  record.captions = kept
  return rejects


def check_item(item: SourceItem | Record, min_size: int) -> tuple[Record | None, list[dict]]:
  """Loads and checks one item: (record or None when rejected, reject entries)."""
  if isinstance(item, Record):
    item_id, file = item.id, item.meta.get("file", "")
  else:
    item_id, file = item.id, item.file
  try:
    record = item if isinstance(item, Record) else item.load()
  except ItemRejected as e:
    return None, [reject_entry(item_id, file, e.reason, e.detail)]
  had_captions = bool(record.captions)
  rejects = _clean_captions(record, file)
  if had_captions and not record.captions:
    # Nothing left to train a captioner on: the whole sample goes, with one reason.
    return None, [
      reject_entry(item_id, file, rejects[0]["reason"], "every caption is empty or not text")
    ]
  try:
    record.validate()
    width, height = record.meta.get("width"), record.meta.get("height")
    if width is None or height is None:
      image, _ = sources.check_image_bytes(record.rgb or record.ir, f"record {item_id}")
      width, height = image.size
      record.meta.update(width=width, height=height)
    if min(width, height) < min_size:
      raise ItemRejected("image_too_small", f"{width}x{height} px is below --min_size={min_size}")
  except ItemRejected as e:
    return None, [reject_entry(item_id, file, e.reason, e.detail)]
  except records.RecordError as e:
    return None, [reject_entry(item_id, file, "invalid_record", str(e))]
  return record, rejects


def _chunk_paths(work: str, index: int) -> tuple[str, str]:
  stem = os.path.join(work, f"chunk-{index:05d}")
  return f"{stem}.array_record", f"{stem}.json"


def _load_chunks(work: str) -> list[dict[str, Any]]:
  """Completed chunk summaries in order; the JSON is written last, so it marks completion."""
  chunks = []
  while os.path.exists(_chunk_paths(work, len(chunks))[1]):
    with open(_chunk_paths(work, len(chunks))[1]) as f:
      chunks.append(json.load(f))
  return chunks


def _prepare_work(work: str, settings: dict[str, Any], resume: bool) -> list[dict]:
  """Fresh work folder, or the completed chunks of an interrupted run with equal settings."""
  settings_path = os.path.join(work, "settings.json")
  if resume and os.path.exists(settings_path):
    with open(settings_path) as f:
      previous = json.load(f)
    if previous != settings:
      raise ValueError(
        f"{work} was started with other settings ({previous}) than this run "
        f"({settings}); re-run with the same flags or drop --resume"
      )
    chunks = _load_chunks(work)
    logging.info(
      "resuming: %d chunks (%d items) already staged in %s",
      len(chunks),
      sum(c["items"] for c in chunks),
      work,
    )
    return chunks
  shutil.rmtree(work, ignore_errors=True)
  os.makedirs(work)
  records.write_json_atomic(settings_path, settings)
  return []


def _stage(
  items: Iterable[SourceItem | Record],
  work: str,
  chunks: list[dict],
  min_size: int,
  chunk_size: int,
  progress: bool,
) -> list[dict]:
  """Checks items chunk by chunk after the `chunks` already staged; returns all chunks."""
  seen = {e["id"] for c in chunks for e in c["accepted"]}
  seen |= {r["id"] for c in chunks for r in c["rejects"] if "caption_index" not in r}
  done = sum(c["items"] for c in chunks)
  iterator = iter(items)
  for skipped in range(done):  # SourceItems are cheap: skipping them reads no image.
    if next(iterator, None) is None:
      raise ValueError(
        f"{work} has {done} items staged but the source now yields only "
        f"{skipped}; the input changed, so re-run without --resume"
      )
  bar = tqdm(initial=done, unit="img", desc="ingest", disable=not progress)
  start, count = time.time(), 0
  while True:
    batch = [item for _, item in zip(range(chunk_size), iterator)]
    if not batch:
      break
    payloads, summary = [], {"items": len(batch), "accepted": [], "rejects": []}
    for item in batch:
      record, rejects = _check_unique(item, seen, min_size)
      summary["rejects"].extend(rejects)
      if record is not None:
        image = record.rgb or record.ir
        summary["accepted"].append(
          {"id": record.id, "split": record.split, "sha256": hashlib.sha256(image).hexdigest()}
        )
        payloads.append(records.encode(record))
    array_path, json_path = _chunk_paths(work, len(chunks))
    records.write_array_record(array_path, payloads)
    records.write_json_atomic(json_path, summary)
    chunks.append(summary)
    count += len(batch)
    bar.update(len(batch))
    logging.info(
      "staged chunk %d: %d items, %d accepted (%.1f items/s)",
      len(chunks) - 1,
      len(batch),
      len(summary["accepted"]),
      count / max(time.time() - start, 1e-9),
    )
  bar.close()
  return chunks


def _check_unique(
  item: SourceItem | Record, seen: set[str], min_size: int
) -> tuple[Record | None, list[dict]]:
  if item.id in seen:
    file = item.file if isinstance(item, SourceItem) else item.meta.get("file", "")
    return None, [reject_entry(item.id, file, "duplicate_id", "an earlier item has this id")]
  seen.add(item.id)
  return check_item(item, min_size)


# ----------------------------------------------------------------------------
# Pass 2: keep exact duplicates in one split, then write the final shards.
# ----------------------------------------------------------------------------


def plan_dedup(accepted: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
  """Final split per accepted entry so that identical images never straddle splits.

  A group of identical images goes to train when any copy is in train (no test image
  is ever seen in training), else to the split of its first occurrence.
  Returns (final split per entry, moves [{id, from, to, duplicate_of}]).
  """
  groups: dict[str, list[int]] = {}
  for i, entry in enumerate(accepted):
    groups.setdefault(entry["sha256"], []).append(i)
  final = [entry["split"] for entry in accepted]
  moves = []
  for members in groups.values():
    splits = [accepted[i]["split"] for i in members]
    if len(set(splits)) < 2:
      continue
    target = "train" if "train" in splits else splits[0]
    first = accepted[next(i for i in members if final[i] == target)]["id"]
    for i in members:
      if final[i] != target:
        moves.append(
          {"id": accepted[i]["id"], "from": final[i], "to": target, "duplicate_of": first}
        )
        final[i] = target
  moves.sort(key=lambda m: m["id"])
  return final, moves


def _split_payloads(work: str, chunks: list[dict], final: list[str], split: str) -> Iterator[bytes]:
  """Staged payloads of one final split in source order (re-encoded when moved)."""
  position = 0
  for index, chunk in enumerate(chunks):
    wanted = [final[position + j] == split for j in range(len(chunk["accepted"]))]
    position += len(chunk["accepted"])
    if not any(wanted):
      continue
    path = _chunk_paths(work, index)[0]
    for j, payload in enumerate(records.read_array_record(path)):
      if not wanted[j]:
        continue
      if chunk["accepted"][j]["split"] != split:
        record = records.decode(payload, where=f"{path}#{j}")
        record.meta["moved_from_split"] = record.split
        record.split = split
        payload = records.encode(record)
      yield payload


def _write_shards(
  out_dir: str, name: str, split: str, payloads: Iterator[bytes], total: int, records_per_shard: int
) -> list[str]:
  count = max(1, math.ceil(total / records_per_shard))
  paths = []
  for i in range(count):
    path = os.path.join(out_dir, records.shard_name(name, split, i, count))
    chunk = (p for _, p in zip(range(records_per_shard), payloads))
    records.write_array_record(path, chunk)
    paths.append(path)
  return paths


def remove_stale_shards(out_dir: str, name: str, keep: set[str]) -> None:
  """Shards of this dataset name that the current run did not write (old counts/splits)."""
  for path in glob.glob(os.path.join(glob.escape(out_dir), f"{glob.escape(name)}-*")):
    rest = os.path.basename(path)[len(name) + 1 :]
    # ".tmp-<pid>" files are half-written shards of a killed run.
    if (_SHARD_FILE.match(rest) or ".tmp-" in rest) and path not in keep:
      logging.info("removing stale shard %s", path)
      os.remove(path)


def _write_rejects(out_dir: str, chunks: list[dict]) -> dict[str, int]:
  path = os.path.join(out_dir, REJECTS_FILE)
  counts: dict[str, int] = {}
  tmp = records.temp_path(path)
  with open(tmp, "w") as f:
    for chunk in chunks:
      for reject in chunk["rejects"]:
        counts[reject["reason"]] = counts.get(reject["reason"], 0) + 1
        f.write(json.dumps(reject, sort_keys=True) + "\n")
  os.replace(tmp, path)
  return dict(sorted(counts.items()))


@dataclasses.dataclass
class IngestOptions:
  """Knobs of one ingest (the CLI flags). `source_args` is recorded in dataset_info.json."""

  records_per_shard: int = 1000
  min_size: int = 32  # pixels; images with a smaller side are rejected
  tfrecord: bool = False
  resume: bool = False
  chunk_size: int = 256  # items per staged chunk: the unit of work a resume keeps
  progress: bool = True
  source_args: dict[str, Any] = dataclasses.field(default_factory=dict)


def ingest(
  items: Iterable[SourceItem | Record],
  out_dir: str,
  name: str,
  options: IngestOptions | None = None,
) -> dict[str, Any]:
  """Writes `items` as `{name}-{split}.array_record-*` shards in `out_dir`.

  `items` are SourceItems (from data_prep.sources) or ready Records; iteration order
  must be stable for --resume. Returns a summary: records/captions per split, reject
  counts by reason, dedup moves and shard paths.
  """
  options = options or IngestOptions()
  if options.records_per_shard < 1 or options.chunk_size < 1:
    raise ValueError("records_per_shard and chunk_size must be >= 1")
  os.makedirs(out_dir, exist_ok=True)
  work = _work_dir(out_dir, name)
  settings = {
    "version": _WORK_VERSION,
    "name": name,
    "min_size": options.min_size,
    "chunk_size": options.chunk_size,
    "source_args": options.source_args,
  }
  start = time.time()
  chunks = _prepare_work(work, settings, options.resume)
  chunks = _stage(items, work, chunks, options.min_size, options.chunk_size, options.progress)
  accepted = [entry for chunk in chunks for entry in chunk["accepted"]]
  final, moves = plan_dedup(accepted)
  written = {}
  for split in sorted(set(final)):
    total = final.count(split)
    written[split] = _write_shards(
      out_dir,
      name,
      split,
      _split_payloads(work, chunks, final, split),
      total,
      options.records_per_shard,
    )
  if options.tfrecord:
    for split, paths in written.items():
      written[split] = paths + tfds_export.write_tfrecords(paths)
  remove_stale_shards(out_dir, name, {p for paths in written.values() for p in paths})
  reject_counts = _write_rejects(out_dir, chunks)
  extra = {
    "ingest": {
      "source_args": options.source_args,
      "min_size": options.min_size,
      "items": sum(c["items"] for c in chunks),
      "rejects": reject_counts,
      "dedup_moves": moves,
      "tfrecord_export": options.tfrecord,
    }
  }
  info = records.write_info(out_dir, name, extra=extra)
  if info["splits"]:
    tfds_export.write_tfds_metadata(out_dir, name, info)
  else:
    logging.warning(
      "every item of %s was rejected (see %s); no shards written",
      name,
      os.path.join(out_dir, REJECTS_FILE),
    )
  shutil.rmtree(work)
  summary = {
    "out_dir": out_dir,
    "name": name,
    "items": extra["ingest"]["items"],
    "splits": {s: v["records"] for s, v in info["splits"].items()},
    "captions": {s: v["captions"] for s, v in info["splits"].items()},
    "rejects": reject_counts,
    "dedup_moves": moves,
    "shards": written,
    "seconds": round(time.time() - start, 2),
  }
  return summary


# ----------------------------------------------------------------------------
# CLI.
# ----------------------------------------------------------------------------


def define_flags() -> None:
  """CLI flags, defined only when run as a script so importing this module (e.g. from
  data_prep.beam or a test beside other CLIs) never clashes on flag names."""
  flags.DEFINE_enum(
    "source",
    None,
    ["karpathy", "nwpu", "folder", "coco_thermal"],
    "Layout of the input (see data_prep/sources.py).",
  )
  flags.DEFINE_list(
    "json",
    None,
    "Caption/annotation file(s); coco_thermal takes one per "
    "split, comma-separated (split = file stem).",
  )
  flags.DEFINE_string("images", None, "Folder holding the images.")
  flags.DEFINE_string("out", None, "Output folder for the shards.")
  flags.DEFINE_string("name", None, "Dataset name: shard prefix and record id prefix.")
  flags.DEFINE_integer("records_per_shard", 1000, "Records per shard.")
  flags.DEFINE_bool("tfrecord", False, "Also export TFRecord shards.")
  flags.DEFINE_bool("resume", False, "Continue an interrupted ingest in --out.")
  flags.DEFINE_integer("min_size", 32, "Reject images with a side below this (px).")
  flags.DEFINE_integer("chunk_size", 256, "Items per resumable staging chunk.")


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  for name in ("source", "json", "images", "out", "name"):
    if not f[name].value:
      raise app.UsageError(f"--{name} is required")
  if not os.path.isdir(f.images):
    raise app.UsageError(f"--images={f.images} is not a folder")
  items = sources.read_source(f.source, f.json, f.images, f.name)
  source_args = {
    "source": f.source,
    "json": [os.path.abspath(p) for p in f.json],
    "images": os.path.abspath(f.images),
  }
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


if __name__ == "__main__":
  define_flags()
  app.run(main)
