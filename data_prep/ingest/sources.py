"""Readers that turn public caption/thermal dataset layouts into normalized Records.

Each reader reads and checks its whole annotation file first (InputError: nothing written),
then yields cheap `SourceItem`s, one per entry, in file order. An entry that cannot be used
becomes an item whose `load()` raises ItemRejected with a reason and the entry's position;
a usable entry's `load()` reads its image, confined to --images, so an ingest can skip
finished items on resume without re-reading.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

from data_prep.ingest import entries, inputs
from data_prep.ingest.entries import DEFAULT_LIMITS, SourceItem
from data_prep.ingest.inputs import InputError, ItemRejected, LoadedImage, load_image
from fusionrs_jax.core.records import Record
from fusionrs_jax.data.images import ImageLimits

# Re-exported: the names callers used before entries/inputs were split off.
__all__ = ["InputError", "ItemRejected", "LoadedImage", "SourceItem", "load_image", "read_source"]

# ----------------------------------------------------------------------------
# (a) Karpathy caption JSON: UCM-captions, RSICD, Sydney-captions, RSITMD.
# ----------------------------------------------------------------------------


def _sentences(entry: dict[str, Any]) -> list[Any]:
  sentences = entry.get("sentences")
  if sentences is None:
    raise ItemRejected("no_captions", "entry has no 'sentences'")
  if not isinstance(sentences, list):
    raise ItemRejected(
      "bad_type",
      f"'sentences' is a {entries.type_name(sentences)}, expected a list of {{'raw': text}}",
    )
  if not sentences:
    raise ItemRejected("no_captions", "'sentences' is empty")
  return [s.get("raw") if isinstance(s, dict) else s for s in sentences]


def _karpathy_item(entry: Any, where: str, images_dir: str, source: str, limits) -> SourceItem:
  try:
    entry = entries.as_object(entry)
    filename = entries.filename_of(entry, ("filename",))
    filepath = entries.text_field(entry, "filepath", "")
    fields = {
      "file": filename,
      "split": entries.text_field(entry, "split", "train"),
      "captions": _sentences(entry),
      "label": entries.text_field(entry, "class", ""),
      "meta": {"file": filename, "imgid": entry.get("imgid")},
    }
  except ItemRejected as e:
    name = entry.get("filename") if isinstance(entry, dict) else None
    return entries.rejected_item(source, where, str(name or ""), e)
  return entries.rgb_item(
    source, images_dir, [os.path.join(filepath, filename)], fields, where, limits
  )


def read_karpathy(
  json_path: str, images_dir: str, source: str, limits: ImageLimits = DEFAULT_LIMITS
) -> Iterator[SourceItem]:
  """{"images": [{"filename", "imgid", "split", "sentences": [{"raw"}], "class"?}]}."""
  data = inputs.load_json(json_path)
  if not isinstance(data, dict) or not isinstance(data.get("images"), list):
    raise InputError(
      f"{json_path}: top level is a {entries.type_name(data)} without an 'images' list; not a "
      "Karpathy-style caption file (use --source=nwpu or --source=folder for other layouts)"
    )
  base = os.path.basename(json_path)
  return (
    _karpathy_item(entry, f"{base} images[{i}]", images_dir, source, limits)
    for i, entry in enumerate(data["images"])
  )


# ----------------------------------------------------------------------------
# (b) NWPU-Captions: {class_name: [{"filename", "split", "raw", "raw_1".."raw_4"}]}.
# ----------------------------------------------------------------------------

_RAW_KEY = re.compile(r"^raw(?:_(\d+))?$")


def _nwpu_captions(entry: dict[str, Any]) -> list[Any]:
  keyed = [(int(m[1] or 0), entry[k]) for k in entry if (m := _RAW_KEY.match(k))]
  if not keyed:
    raise ItemRejected("no_captions", "entry has no 'raw' caption keys")
  return [text for _, text in sorted(keyed, key=lambda kv: kv[0])]


def _nwpu_item(entry, class_name, where, images_dir, source, limits) -> SourceItem:
  try:
    entry = entries.as_object(entry)
    filename = entries.filename_of(entry, ("filename",))
    fields = {
      "file": filename,
      "split": entries.text_field(entry, "split", "train"),
      "captions": _nwpu_captions(entry),
      "label": class_name,
      "meta": {"file": f"{class_name}/{filename}", "imgid": entry.get("imgid")},
    }
  except ItemRejected as e:
    name = entry.get("filename") if isinstance(entry, dict) else None
    return entries.rejected_item(source, where, str(name or ""), e)
  # Some copies flatten the class folders.
  candidates = [os.path.join(class_name, filename), filename]
  return entries.rgb_item(source, images_dir, candidates, fields, where, limits)


def read_nwpu(
  json_path: str, images_dir: str, source: str, limits: ImageLimits = DEFAULT_LIMITS
) -> Iterator[SourceItem]:
  """NWPU-Captions JSON; images live in one subfolder per class."""
  data = inputs.load_json(json_path)
  if not isinstance(data, dict) or "images" in data:
    raise InputError(
      f"{json_path}: expected class names as top-level keys (NWPU-Captions); "
      f"a file with an 'images' list is Karpathy-style, use --source=karpathy"
    )
  base = os.path.basename(json_path)

  def items() -> Iterator[SourceItem]:
    for class_name, class_entries in data.items():
      if not isinstance(class_entries, list):
        detail = (
          f"class {class_name!r} maps to a {entries.type_name(class_entries)}, expected a list"
        )
        yield entries.rejected_item(
          source, f"{base} {class_name}", "", ItemRejected("bad_type", detail)
        )
        continue
      for i, entry in enumerate(class_entries):
        where = f"{base} {class_name}[{i}]"
        yield _nwpu_item(entry, class_name, where, images_dir, source, limits)

  return items()


# ----------------------------------------------------------------------------
# (c) Custom data: a folder of images + JSONL or CSV of captions.
# ----------------------------------------------------------------------------

_FILE_KEYS = ("image", "file", "filename")


def _jsonl_rows(path: str) -> list[tuple[str, Any]]:
  """(position, parsed row or the ItemRejected of an unparsable line) per non-empty line."""
  base, rows = os.path.basename(path), []
  # Only "\n" ends a line: str.splitlines would also cut at U+2028 inside a caption.
  for line_no, line in enumerate(inputs.read_text(path).split("\n"), 1):
    if line.strip():
      try:
        rows.append((f"{base} line {line_no}", json.loads(line)))
      except (ValueError, RecursionError) as e:
        problem = ItemRejected("not_json", inputs.json_problem(e))
        rows.append((f"{base} line {line_no}", problem))
  if rows and all(isinstance(row, ItemRejected) for _, row in rows):
    raise InputError(f"{path}: no line is a JSON object ({rows[0][1].detail}); expected JSONL")
  return rows


def _csv_rows(path: str) -> list[tuple[str, Any]]:
  base = os.path.basename(path)
  reader = csv.DictReader(io.StringIO(inputs.read_text(path), newline=""), strict=True)
  try:
    if not set(_FILE_KEYS) & set(reader.fieldnames or ()):
      raise InputError(
        f"{path} line 1: the header {reader.fieldnames} has none of the columns {_FILE_KEYS}; "
        "name the image file in one of them"
      )
    return [(f"{base} line {reader.line_num}", row) for row in reader]
  except csv.Error as e:
    raise InputError(f"{path}: not CSV in the row after line {reader.line_num} ({e})") from None


def _row_captions(row: dict[str, Any], from_csv: bool) -> list[Any]:
  captions = [row["caption"]] if "caption" in row else []
  more = row.get("captions")
  if isinstance(more, str) and from_csv:  # CSV: several captions separated by "|"
    more = more.split("|")
  if more is not None and not isinstance(more, list):
    raise ItemRejected(
      "bad_type", f"'captions' is a {entries.type_name(more)}, expected a list of texts"
    )
  return captions + (more or [])


def read_folder(
  captions_path: str, images_dir: str, source: str, limits: ImageLimits = DEFAULT_LIMITS
) -> Iterator[SourceItem]:
  """Rows {image|file|filename, caption|captions, split?, label?}; one image may span rows.

  In CSV, `captions` may hold several captions separated by "|". Images keep the order
  of their first row; the first row's split and label win.
  """
  from_csv = captions_path.endswith(".csv")
  rows = _csv_rows(captions_path) if from_csv else _jsonl_rows(captions_path)
  slots: list[SourceItem | str] = []
  grouped: dict[str, dict[str, Any]] = {}
  for where, row in rows:
    try:
      if isinstance(row, ItemRejected):
        raise row
      row = entries.as_object(row)
      filename = entries.filename_of(row, _FILE_KEYS)
      captions = _row_captions(row, from_csv)
      split = entries.text_field(row, "split", "") or "train"
      label = entries.text_field(row, "label", "")
    except ItemRejected as e:
      slots.append(entries.rejected_item(source, where, "", e))
      continue
    if filename not in grouped:
      meta = {"file": filename}
      grouped[filename] = dict(file=filename, split=split, label=label, meta=meta, where=where)
      grouped[filename]["captions"] = []
      slots.append(filename)
    grouped[filename]["captions"].extend(captions)
  return (
    slot
    if isinstance(slot, SourceItem)
    else _folder_item(grouped[slot], images_dir, source, limits)
    for slot in slots
  )


def _folder_item(fields: dict[str, Any], images_dir: str, source: str, limits) -> SourceItem:
  if not fields["captions"]:
    e = ItemRejected("no_captions", f"no row gives {fields['file']!r} a caption")
    return entries.rejected_item(source, fields["where"], fields["file"], e)
  return entries.rgb_item(source, images_dir, [fields["file"]], fields, fields["where"], limits)


# ----------------------------------------------------------------------------
# (d) COCO-style thermal detection sets (HIT-UAV): the real IR domain, no captions.
# ----------------------------------------------------------------------------


def _coco_split(json_path: str, data: dict[str, Any]) -> str:
  """The split an annotation file holds: an explicit field, else its file stem."""
  info = data.get("info") if isinstance(data.get("info"), dict) else {}
  split = info.get("split") or entries.stem(os.path.basename(json_path))
  split = {"validation": "val", "valid": "val"}.get(split, split)
  if not isinstance(split, str) or not entries.SPLIT_NAME.match(split):
    raise InputError(
      f"{json_path}: split {split!r} (info.split or the file stem) is not a safe name of "
      "letters, digits and _; rename the file or set info.split"
    )
  return split


def _bbox(ann: dict[str, Any]) -> list[float]:
  box = ann.get("bbox")
  ok = isinstance(box, list) and len(box) == 4
  ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
  if not ok or not all(math.isfinite(v) for v in box) or box[2] < 0 or box[3] < 0:
    raise ItemRejected("bad_bbox", f"bbox is {box!r}, expected [x, y, width, height] numbers")
  return [float(v) for v in box]


def _coco_boxes(data: dict[str, Any], base: str, source: str):
  """(boxes per image id, ItemRejected per image id with a bad box, rejected annotations)."""
  categories = {
    c.get("id"): c.get("name")
    for c in data.get("categories") or []
    if isinstance(c, dict) and isinstance(c.get("id"), (int, str))
  }
  boxes: dict[Any, list[dict[str, Any]]] = {}
  bad: dict[Any, ItemRejected] = {}
  orphans: list[SourceItem] = []
  for i, ann in enumerate(data.get("annotation", data.get("annotations")) or []):
    where = f"{base} annotations[{i}]"
    image_id = ann.get("image_id") if isinstance(ann, dict) else None
    if not isinstance(image_id, (int, str)):
      detail = f"annotation is a {entries.type_name(ann)} without an int/str image_id"
      orphans.append(
        entries.rejected_item(source, where, "", ItemRejected("bad_annotation", detail))
      )
      continue
    try:
      box = _bbox(ann)
    except ItemRejected as e:
      bad.setdefault(image_id, ItemRejected(e.reason, f"{where}: {e.detail}"))
      continue
    category = ann.get("category_id")
    name = categories.get(category) if isinstance(category, (int, str)) else None
    boxes.setdefault(image_id, []).append({"category": str(name or category), "bbox": box})
  return boxes, bad, orphans


def _coco_data(json_path: str) -> dict[str, Any]:
  data = inputs.load_json(json_path)
  lists = ("images", "annotation", "annotations", "categories")
  if not isinstance(data, dict) or any(
    not isinstance(data.get(k), (list, type(None))) for k in lists
  ):
    raise InputError(
      f"{json_path}: top level is not a COCO object ({{'images': [...], 'annotations': [...], "
      "'categories': [...]}}); check --json"
    )
  return data


def _coco_item(entry, where, ctx: dict[str, Any]) -> SourceItem:
  """One COCO image entry; `ctx` holds the file's split, boxes and bad-box rejections."""
  source, images_dir = ctx["source"], ctx["images_dir"]
  try:
    entry = entries.as_object(entry)
    filename = entries.filename_of(entry, ("filename", "file_name"))
    coco_id = entry.get("id")
    if coco_id is not None and not isinstance(coco_id, (int, str)):
      raise ItemRejected("bad_type", f"'id' is a {entries.type_name(coco_id)}")
    if coco_id in ctx["bad"]:
      raise ctx["bad"][coco_id]
  except ItemRejected as e:
    name = entry.get("filename") or entry.get("file_name") if isinstance(entry, dict) else None
    return entries.rejected_item(source, where, str(name or ""), e)
  split, limits = ctx["split"], ctx["limits"]
  meta = {"file": filename, "coco_id": coco_id, "objects": ctx["boxes"].get(coco_id, [])}
  key = entries.stem(filename)
  # Some layouts keep all splits in one folder.
  candidates = [os.path.join(split, filename), filename]

  def load() -> Record:
    image = load_image(inputs.first_inside(images_dir, candidates), limits)
    return Record(
      id=f"{source}/{key}",
      source=source,
      split=split,
      ir=image.data,
      ir_origin="real",
      meta={**meta, "width": image.width, "height": image.height, "format": image.format},
    )

  return SourceItem(f"{source}/{key}", os.path.join(images_dir, candidates[0]), load, where)


def read_coco_thermal(
  json_paths: Sequence[str], images_dir: str, source: str, limits: ImageLimits = DEFAULT_LIMITS
) -> Iterator[SourceItem]:
  """COCO-style files (one per split); boxes go to meta["objects"] as [x, y, w, h] px.

  Every file is read and checked before the first item is yielded."""
  files = []
  for json_path in json_paths:
    data = _coco_data(json_path)
    base = os.path.basename(json_path)
    boxes, bad, orphans = _coco_boxes(data, base, source)
    ctx = dict(source=source, images_dir=images_dir, limits=limits, boxes=boxes, bad=bad)
    ctx["split"] = _coco_split(json_path, data)
    files.append((base, data.get("images") or [], ctx, orphans))
  return (
    item
    for base, images, ctx, orphans in files
    for item in [
      *(_coco_item(e, f"{base} images[{i}]", ctx) for i, e in enumerate(images)),
      *orphans,
    ]
  )


# ----------------------------------------------------------------------------
# Dispatch.
# ----------------------------------------------------------------------------


def read_source(
  kind: str,
  json_paths: Sequence[str],
  images_dir: str,
  source: str,
  limits: ImageLimits = DEFAULT_LIMITS,
) -> Iterator[SourceItem]:
  """Dispatches on the CLI's --source value; reads and checks the annotation files now."""
  if kind == "coco_thermal":
    return read_coco_thermal(json_paths, images_dir, source, limits)
  readers = {"karpathy": read_karpathy, "nwpu": read_nwpu, "folder": read_folder}
  if kind not in readers:
    raise InputError(
      f"unknown source kind {kind!r}; use one of {sorted([*readers, 'coco_thermal'])}"
    )
  if len(json_paths) != 1:
    raise InputError(f"--source={kind} takes exactly one --json file, got {list(json_paths)}")
  return readers[kind](json_paths[0], images_dir, source, limits)
