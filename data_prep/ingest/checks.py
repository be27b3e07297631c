"""One item -> an accepted Record or reject lines: image read and checked, split name,
captions cleaned (data_prep.ingest.caption_text), schema validated. Shared by the local
ingest and the Beam pipeline."""

from __future__ import annotations

from typing import Any

from absl import logging

from data_prep.ingest import caption_text, inputs
from data_prep.ingest.caption_text import CaptionRejected, CaptionRules
from data_prep.ingest.entries import SPLIT_NAME, SourceItem
from data_prep.ingest.inputs import ItemRejected
from fusionrs_jax.core import records
from fusionrs_jax.core.records import Record

DEFAULT_CAPTION_RULES = CaptionRules()

# Every reason a rejects.jsonl line can carry (README "Bad input" lists and explains them).
REJECT_REASONS = (
  "not_an_object",
  "not_json",
  "missing_filename",
  "bad_filename",
  "bad_type",
  "no_captions",
  "bad_split",
  "outside_images",
  "missing_file",
  "empty_file",
  "file_too_large",
  "unreadable_file",
  "unreadable_image",
  "truncated_image",
  "too_many_pixels",
  "image_too_small",
  "duplicate_id",
  "bad_bbox",
  "bad_annotation",
  "invalid_record",
  "internal_error",
  # caption-level (the record is kept unless no caption is left)
  "non_text_caption",
  "empty_caption",
  "undecodable_caption",
  "long_caption",
)


def reject_entry(item_id: str, file: str, reason: str, detail: str, **extra) -> dict[str, Any]:
  """One rejects.jsonl line; `extra` adds e.g. position (where the entry sits in its
  annotation file) or caption_index (a caption-level reject: the record itself is kept)."""
  return {"id": item_id, "file": file, "reason": reason, "detail": detail, **extra}


def duplicate_id_reject(item: SourceItem | Record, earlier_file: str) -> dict[str, Any]:
  """The reject of an item whose id an earlier item already has."""
  file = item.file if isinstance(item, SourceItem) else item.meta.get("file", "")
  detail = (
    f"{file or 'this item'} and the earlier {earlier_file or 'item'} both give id {item.id!r}: "
    "ids come from the file name without its extension, so x.png beside x.jpg collide; "
    "rename one of the files"
  )
  where = {"position": item.position} if getattr(item, "position", "") else {}
  return reject_entry(item.id, file, "duplicate_id", detail, **where)


def clean_captions(record: Record, file: str, rules: CaptionRules, **where) -> list[dict]:
  """Cleans `record.captions` in place (unusable ones dropped); returns their rejects.
  What hygiene changed is counted in record.meta[caption_text.FIXES_KEY]."""
  kept, rejects, fixes = [], [], {}
  for i, text in enumerate(record.captions):
    try:
      kept.append(caption_text.clean_caption(text, rules, fixes))
    except CaptionRejected as e:
      detail = f"caption {i} {e.detail}"
      rejects.append(reject_entry(record.id, file, e.reason, detail, caption_index=i, **where))
  record.captions = kept
  if fixes:
    record.meta[caption_text.FIXES_KEY] = dict(sorted(fixes.items()))
  return rejects


def check_split(split: Any) -> None:
  if not isinstance(split, str) or not SPLIT_NAME.match(split):
    raise ItemRejected(
      "bad_split",
      f"split {split!r} is not a safe name (letters, digits, _; it becomes part of shard "
      "file names)",
    )


def _check_image_size(record: Record, min_size: int) -> None:
  """Records given ready-made (not read by a source) are checked here: decodable, big enough."""
  width, height = record.meta.get("width"), record.meta.get("height")
  if width is None or height is None:
    image, _ = inputs.check_image_bytes(record.rgb or record.ir, f"record {record.id}")
    width, height = image.size
    record.meta.update(width=width, height=height)
  if min(width, height) < min_size:
    raise ItemRejected("image_too_small", f"{width}x{height} px is below --min_size={min_size}")


def check_item(
  item: SourceItem | Record, min_size: int, rules: CaptionRules = DEFAULT_CAPTION_RULES
) -> tuple[Record | None, list[dict]]:
  """Loads and checks one item: (record or None when rejected, reject entries)."""
  if isinstance(item, Record):
    item_id, file, where = item.id, item.meta.get("file", ""), {}
  else:
    item_id, file = item.id, item.file
    where = {"position": item.position} if item.position else {}
  try:
    record = item if isinstance(item, Record) else item.load()
    check_split(record.split)
  except ItemRejected as e:
    return None, [reject_entry(item_id, file, e.reason, e.detail, **where)]
  except MemoryError:
    raise
  except Exception as e:  # a case no check foresaw: one reject, counted, never an abort
    logging.warning("%s (%s): unexpected %r while loading; rejected", item_id, file, e)
    detail = f"{type(e).__name__}: {e}"
    return None, [reject_entry(item_id, file, "internal_error", detail, **where)]
  had_captions = bool(record.captions)
  rejects = clean_captions(record, file, rules, **where)
  if had_captions and not record.captions:
    # Nothing left to train a captioner on: the whole sample goes, with one reason.
    detail = "every caption is empty, not text or rejected"
    return None, [reject_entry(item_id, file, rejects[0]["reason"], detail, **where)]
  try:
    record.validate()
    _check_image_size(record, min_size)
  except ItemRejected as e:
    return None, [reject_entry(item_id, file, e.reason, e.detail, **where)]
  except records.RecordError as e:
    return None, [reject_entry(item_id, file, "invalid_record", str(e), **where)]
  return record, rejects
