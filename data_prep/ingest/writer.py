"""Source items -> checked, de-duplicated records -> ArrayRecord shards per split.

Two passes: items are checked and staged in resumable chunks, then duplicates are kept in
one split and the final shards, dataset_info.json, rejects.jsonl and exports are written.

  python -m data_prep.ingest --source=karpathy --json=DIR/dataset_ucm.json \
      --images=DIR/images --out=/tmp/ucm --name=ucm
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any

from absl import logging
from tqdm import tqdm

from data_prep.ingest import caption_text, inputs, tfds_export
from data_prep.ingest.caption_text import CaptionRules
from data_prep.ingest.checks import check_item, duplicate_id_reject, reject_entry
from data_prep.ingest.sources import SourceItem
from fusionrs_jax.core import fs, records
from fusionrs_jax.core.errors import UserError
from fusionrs_jax.core.records import Record

__all__ = ["IngestOptions", "check_item", "duplicate_id_reject", "ingest", "reject_entry"]

# Bump when the staged chunk format changes, so an old work folder is never resumed.
_WORK_VERSION = 2
# Any dataset's shard files (an --out folder holds one dataset: one dataset_info.json).
_SHARD_FILE = re.compile(r"^.+\.(?P<fmt>array_record|tfrecord)-\d{5}-of-\d{5}$")
REJECTS_FILE = "rejects.jsonl"


class ResumeError(UserError, ValueError):
  """--resume over a work folder staged from other inputs or settings."""


def _work_dir(out_dir: str, name: str) -> str:
  return fs.join(out_dir, f".ingest-{name}")


# ----------------------------------------------------------------------------
# Pass 1: check each item and stage accepted records in chunks.
# ----------------------------------------------------------------------------


def _chunk_paths(work: str, index: int) -> tuple[str, str]:
  stem = fs.join(work, f"chunk-{index:05d}")
  return f"{stem}.array_record", f"{stem}.json"


def _load_chunks(work: str) -> list[dict[str, Any]]:
  """Completed chunk summaries in order; the JSON is written last, so it marks completion."""
  chunks = []
  while fs.exists(_chunk_paths(work, len(chunks))[1]):
    with fs.open(_chunk_paths(work, len(chunks))[1]) as f:
      chunks.append(json.load(f))
  return chunks


_LISTING = " (image listing)"


def input_fingerprint(source_args: dict[str, Any]) -> dict[str, str]:
  """sha256 of every annotation file in source_args["json"], and of the listing (names,
  sizes, mtimes) of source_args["images"]: what --resume must find unchanged."""
  out = {}
  for path in source_args.get("json") or []:
    out[path] = inputs.file_sha256(path) if os.path.isfile(path) else "missing"
  images = source_args.get("images")
  if images and os.path.isdir(images):
    out[f"{images}{_LISTING}"] = inputs.folder_listing_sha256(images)
  return out


def _changed(previous: dict[str, Any], settings: dict[str, Any]) -> str:
  """Which settings differ, named briefly (the keys, and files for the inputs)."""
  names = [k for k in sorted(set(previous) | set(settings)) if previous.get(k) != settings.get(k)]
  before, now = previous.get("inputs") or {}, settings.get("inputs") or {}
  files = [os.path.basename(p.removesuffix(_LISTING)) for p in now if before.get(p) != now[p]]
  return ", ".join(f"inputs ({', '.join(files)})" if n == "inputs" and files else n for n in names)


def _prepare_work(work: str, settings: dict[str, Any], resume: bool) -> list[dict]:
  """Fresh work folder, or the completed chunks of an interrupted run with equal settings."""
  settings_path = fs.join(work, "settings.json")
  if resume and fs.exists(settings_path):
    with fs.open(settings_path) as f:
      previous = json.load(f)
    if previous != settings:
      raise ResumeError(
        f"--resume: {work} was staged from other inputs or settings (changed: "
        f"{_changed(previous, settings)}); re-run without --resume to start over"
      )
    chunks = _load_chunks(work)
    logging.info(
      "resuming: %d chunks (%d items) already staged in %s",
      len(chunks),
      sum(c["items"] for c in chunks),
      work,
    )
    return chunks
  fs.rmtree(work)
  fs.makedirs(work)
  records.write_json_atomic(settings_path, settings)
  return []


def _skip_staged(iterator: Iterator, done: int, work: str) -> None:
  for skipped in range(done):  # SourceItems are cheap: skipping them reads no image.
    if next(iterator, None) is None:
      raise ResumeError(
        f"--resume: {work} has {done} items staged but the source now yields only "
        f"{skipped}; the input changed, so re-run without --resume to start over"
      )


def _stage_chunk(batch: list, seen: dict[str, str], options: IngestOptions) -> tuple[list, dict]:
  """(record payloads, chunk summary) of one batch of items."""
  payloads, summary = [], {"items": len(batch), "accepted": [], "rejects": [], "caption_fixes": {}}
  for item in batch:
    record, rejects = _check_unique(item, seen, options)
    summary["rejects"].extend(rejects)
    if record is None:
      continue
    image = record.rgb or record.ir
    summary["accepted"].append(
      {
        "id": record.id,
        "split": record.split,
        "sha256": hashlib.sha256(image).hexdigest(),
        "file": item.file if isinstance(item, SourceItem) else record.meta.get("file", ""),
      }
    )
    for key, n in record.meta.get(caption_text.FIXES_KEY, {}).items():
      summary["caption_fixes"][key] = summary["caption_fixes"].get(key, 0) + n
    payloads.append(records.encode(record))
  return payloads, summary


def _stage(
  items: Iterable[SourceItem | Record], work: str, chunks: list[dict], options: IngestOptions
) -> list[dict]:
  """Checks items chunk by chunk after the `chunks` already staged; returns all chunks."""
  seen = {e["id"]: e.get("file", "") for c in chunks for e in c["accepted"]}
  seen |= {r["id"]: r["file"] for c in chunks for r in c["rejects"] if "caption_index" not in r}
  done = sum(c["items"] for c in chunks)
  iterator = iter(items)
  _skip_staged(iterator, done, work)
  bar = tqdm(initial=done, unit="img", desc="ingest", disable=not options.progress)
  start, count = time.time(), 0
  while batch := [item for _, item in zip(range(options.chunk_size), iterator)]:
    payloads, summary = _stage_chunk(batch, seen, options)
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
  item: SourceItem | Record, seen: dict[str, str], options: IngestOptions
) -> tuple[Record | None, list[dict]]:
  if item.id in seen:
    return None, [duplicate_id_reject(item, seen[item.id])]
  file = item.file if isinstance(item, SourceItem) else item.meta.get("file", "")
  seen[item.id] = file
  return check_item(item, options.min_size, options.captions)


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
    path = fs.join(out_dir, records.shard_name(name, split, i, count))
    chunk = (p for _, p in zip(range(records_per_shard), payloads))
    records.write_array_record(path, chunk)
    paths.append(path)
  return paths


def remove_stale_shards(out_dir: str, name: str, keep: set[str]) -> None:
  """Shard files in `out_dir` that the run writing dataset `name` did not write: old counts,
  old splits (also ones a split name with '-' once made unreadable), an earlier --name."""
  for path in fs.glob(fs.join(fs.escape(out_dir), "*")):
    base = fs.basename(path)
    # ".tmp-<pid>" files are half-written shards of a killed run.
    is_shard = _SHARD_FILE.match(base) or _SHARD_FILE.match(base.split(".tmp-")[0])
    if is_shard and fs.isfile(path) and path not in keep:
      logging.info("removing %s: not part of dataset %s as now written", path, name)
      fs.remove(path)


def _write_rejects(out_dir: str, chunks: list[dict]) -> dict[str, int]:
  path = fs.join(out_dir, REJECTS_FILE)
  counts: dict[str, int] = {}
  with fs.staged_file(path) as tmp, open(tmp, "w") as f:
    for chunk in chunks:
      for reject in chunk["rejects"]:
        counts[reject["reason"]] = counts.get(reject["reason"], 0) + 1
        f.write(json.dumps(reject, sort_keys=True) + "\n")
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
  # caption hygiene: word limit and what happens over it (truncate | reject)
  captions: CaptionRules = dataclasses.field(default_factory=CaptionRules)


def _write_splits(
  out_dir: str, name: str, work: str, chunks: list[dict], final: list[str], options
) -> dict[str, list[str]]:
  """The final shards of every split (+ TFRecord copies): {split: paths}."""
  written = {}
  for split in sorted(set(final)):
    payloads = _split_payloads(work, chunks, final, split)
    total = final.count(split)
    written[split] = _write_shards(out_dir, name, split, payloads, total, options.records_per_shard)
    if options.tfrecord:
      written[split] += tfds_export.write_tfrecords(written[split])
  return written


def _ingest_info(options, chunks, reject_counts, shard_paths, moves) -> dict[str, Any]:
  """dataset_info.json's "ingest" entry."""
  fixes: dict[str, int] = {}
  for chunk in chunks:
    for key, n in chunk["caption_fixes"].items():
      fixes[key] = fixes.get(key, 0) + n
  return {
    "source_args": options.source_args,
    "min_size": options.min_size,
    "items": sum(c["items"] for c in chunks),
    "rejects": reject_counts,
    # captions changed by hygiene (data_prep.ingest.caption_text), by kind
    "caption_hygiene": {
      "rules": dataclasses.asdict(options.captions),
      **dict(sorted(fixes.items())),
    },
    # every shard file this run wrote (ArrayRecord and any TFRecord export)
    "shards_written": [os.path.basename(p) for p in shard_paths],
    "dedup_moves": moves,
    "tfrecord_export": options.tfrecord,
  }


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
  fs.makedirs(out_dir)
  work = _work_dir(out_dir, name)
  settings = {
    "version": _WORK_VERSION,
    "name": name,
    "min_size": options.min_size,
    "chunk_size": options.chunk_size,
    "captions": dataclasses.asdict(options.captions),
    "source_args": options.source_args,
    "inputs": input_fingerprint(options.source_args),
  }
  start = time.time()
  chunks = _prepare_work(work, settings, options.resume)
  chunks = _stage(items, work, chunks, options)
  accepted = [entry for chunk in chunks for entry in chunk["accepted"]]
  final, moves = plan_dedup(accepted)
  written = _write_splits(out_dir, name, work, chunks, final, options)
  shard_paths = sorted(p for paths in written.values() for p in paths)
  remove_stale_shards(out_dir, name, set(shard_paths))
  reject_counts = _write_rejects(out_dir, chunks)
  extra = {"ingest": _ingest_info(options, chunks, reject_counts, shard_paths, moves)}
  info = records.write_info(out_dir, name, extra=extra)
  if not info["splits"]:
    logging.warning(
      "every item of %s was rejected (see %s); no shards written",
      name,
      fs.join(out_dir, REJECTS_FILE),
    )
  elif not fs.is_remote(out_dir):  # the tfds view links the shards: GCS has no symlinks
    tfds_export.write_tfds_metadata(out_dir, name, info)
  fs.rmtree(work)
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
