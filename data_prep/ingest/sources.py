"""Readers that turn public caption/thermal dataset layouts into normalized Records.

Each reader yields cheap `SourceItem`s (id known, image not yet read) whose `load()` reads
and checks the image, so an ingest can skip finished items on resume without re-reading.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from PIL import Image

from fusionrs_jax.core.records import Record

# Formats kept as their original bytes; anything else (TIFF, BMP, ...) is re-encoded as PNG.
KEPT_FORMATS = ("JPEG", "PNG")


class ItemRejected(Exception):
  """An item cannot become a record; `reason` is a short stable key for rejects.jsonl."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason = reason
    self.detail = detail


@dataclasses.dataclass(frozen=True)
class SourceItem:
  """One sample of a source before its image is read. `load()` may raise ItemRejected."""

  id: str
  file: str
  load: Callable[[], Record]


@dataclasses.dataclass(frozen=True)
class LoadedImage:
  data: bytes  # encoded JPEG/PNG bytes
  width: int  # pixels
  height: int  # pixels
  format: str  # "JPEG" | "PNG" (after any conversion)
  converted_from: str = ""  # original format when re-encoded as PNG


def check_image_bytes(data: bytes, where: str) -> tuple[Image.Image, str]:
  """Fully decodes encoded image bytes (truncation shows only on full decode)."""
  if not data:
    raise ItemRejected("empty_file", f"{where} has zero bytes")
  try:
    image = Image.open(io.BytesIO(data))
    fmt = image.format or ""
    image.load()
  except Exception as e:  # PIL raises OSError/SyntaxError/ValueError for broken files.
    reason = "truncated_image" if "truncated" in str(e).lower() else "unreadable_image"
    raise ItemRejected(reason, f"{where}: {e}") from e
  return image, fmt


def load_image(path: str) -> LoadedImage:
  """Reads and checks an image file; formats other than JPEG/PNG are re-encoded as PNG."""
  if not os.path.exists(path):
    raise ItemRejected("missing_file", f"{path} does not exist")
  with open(path, "rb") as f:
    data = f.read()
  image, fmt = check_image_bytes(data, path)
  if fmt in KEPT_FORMATS:
    return LoadedImage(data, image.width, image.height, fmt)
  if image.mode not in ("L", "RGB", "RGBA", "I;16"):
    image = image.convert("RGB")
  buf = io.BytesIO()
  image.save(buf, format="PNG")
  return LoadedImage(buf.getvalue(), image.width, image.height, "PNG", converted_from=fmt)


def _stem(filename: str) -> str:
  return os.path.splitext(filename.replace(os.sep, "/"))[0]


def _rgb_item(
  source: str,
  key: str,
  path: str,
  split: str,
  captions: list[Any],
  label: str,
  meta: dict[str, Any],
) -> SourceItem:
  """A captioned RGB sample; captions stay raw so the ingest can reject bad ones."""

  def load() -> Record:
    image = load_image(path)
    full_meta = {**meta, "width": image.width, "height": image.height, "format": image.format}
    if image.converted_from:
      full_meta["converted_from"] = image.converted_from
    return Record(
      id=f"{source}/{key}",
      source=source,
      split=split,
      rgb=image.data,
      captions=list(captions),
      label=label,
      meta=full_meta,
    )

  return SourceItem(id=f"{source}/{key}", file=path, load=load)


def _load_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f"caption/annotation file {path} not found; check --json") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); re-download or fix the file") from e


# ----------------------------------------------------------------------------
# (a) Karpathy caption JSON: UCM-captions, RSICD, Sydney-captions, RSITMD.
# ----------------------------------------------------------------------------


def read_karpathy(json_path: str, images_dir: str, source: str) -> Iterator[SourceItem]:
  """{"images": [{"filename", "imgid", "split", "sentences": [{"raw"}], "class"?}]}."""
  data = _load_json(json_path)
  if not isinstance(data, dict) or not isinstance(data.get("images"), list):
    raise ValueError(
      f"{json_path}: no top-level 'images' list; not a Karpathy-style caption "
      f"file (use --source=nwpu or --source=folder for other layouts)"
    )
  for entry in data["images"]:
    filename = entry["filename"]
    path = os.path.join(images_dir, entry.get("filepath", ""), filename)
    captions = [s.get("raw") if isinstance(s, dict) else s for s in entry.get("sentences", [])]
    meta = {"file": filename, "imgid": entry.get("imgid")}
    yield _rgb_item(
      source,
      _stem(filename),
      path,
      entry.get("split", "train"),
      captions,
      str(entry.get("class", "")),
      meta,
    )


# ----------------------------------------------------------------------------
# (b) NWPU-Captions: {class_name: [{"filename", "split", "raw", "raw_1".."raw_4"}]}.
# ----------------------------------------------------------------------------

_RAW_KEY = re.compile(r"^raw(?:_(\d+))?$")


def _nwpu_captions(entry: dict[str, Any]) -> list[Any]:
  keyed = [(int(m[1] or 0), entry[k]) for k in entry if (m := _RAW_KEY.match(k))]
  return [text for _, text in sorted(keyed, key=lambda kv: kv[0])]


def read_nwpu(json_path: str, images_dir: str, source: str) -> Iterator[SourceItem]:
  """NWPU-Captions JSON; images live in one subfolder per class."""
  data = _load_json(json_path)
  if not isinstance(data, dict) or "images" in data:
    raise ValueError(
      f"{json_path}: expected class names as top-level keys (NWPU-Captions); "
      f"a file with an 'images' list is Karpathy-style, use --source=karpathy"
    )
  for class_name, entries in data.items():
    if not isinstance(entries, list):
      raise ValueError(
        f"{json_path}: class {class_name!r} maps to a "
        f"{type(entries).__name__}, expected a list of image entries"
      )
    for entry in entries:
      filename = entry["filename"]
      path = os.path.join(images_dir, class_name, filename)
      if not os.path.exists(path):  # Some copies flatten the class folders.
        flat = os.path.join(images_dir, filename)
        path = flat if os.path.exists(flat) else path
      meta = {"file": f"{class_name}/{filename}", "imgid": entry.get("imgid")}
      yield _rgb_item(
        source,
        _stem(filename),
        path,
        entry.get("split", "train"),
        _nwpu_captions(entry),
        class_name,
        meta,
      )


# ----------------------------------------------------------------------------
# (c) Custom data: a folder of images + JSONL or CSV of captions.
# ----------------------------------------------------------------------------

_FILE_KEYS = ("image", "file", "filename")


def _caption_rows(path: str) -> Iterator[dict[str, Any]]:
  if path.endswith(".csv"):
    with open(path, newline="") as f:
      yield from csv.DictReader(f)
    return
  with open(path) as f:
    for line_no, line in enumerate(f, 1):
      if line.strip():
        try:
          yield json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{line_no} is not a JSON object ({e})") from e


def read_folder(captions_path: str, images_dir: str, source: str) -> Iterator[SourceItem]:
  """Rows {image|file|filename, caption|captions, split?, label?}; one image may span rows.

  In CSV, `captions` may hold several captions separated by "|". Images keep the order
  of their first row; the first row's split and label win.
  """
  grouped: dict[str, dict[str, Any]] = {}
  for row_no, row in enumerate(_caption_rows(captions_path), 1):
    filename = next((row[k] for k in _FILE_KEYS if row.get(k)), None)
    if not filename:
      raise ValueError(
        f"{captions_path} row {row_no} has none of the columns {_FILE_KEYS}; "
        f"name the image file in one of them"
      )
    item = grouped.setdefault(
      filename,
      {"captions": [], "split": row.get("split") or "train", "label": row.get("label") or ""},
    )
    if "caption" in row:
      item["captions"].append(row["caption"])
    captions = row.get("captions")
    if isinstance(captions, str):
      captions = captions.split("|")
    item["captions"].extend(captions or [])
  for filename, item in grouped.items():
    yield _rgb_item(
      source,
      _stem(filename),
      os.path.join(images_dir, filename),
      item["split"],
      item["captions"],
      str(item["label"]),
      {"file": filename},
    )


# ----------------------------------------------------------------------------
# (d) COCO-style thermal detection sets (HIT-UAV): the real IR domain, no captions.
# ----------------------------------------------------------------------------


def _coco_split(json_path: str, data: dict[str, Any]) -> str:
  """The split an annotation file holds: an explicit field, else its file stem."""
  split = (data.get("info") or {}).get("split") or _stem(os.path.basename(json_path))
  return {"validation": "val", "valid": "val"}.get(split, split)


def read_coco_thermal(
  json_paths: Sequence[str], images_dir: str, source: str
) -> Iterator[SourceItem]:
  """COCO-style files (one per split); boxes go to meta["objects"] as [x, y, w, h] px."""
  for json_path in json_paths:
    data = _load_json(json_path)
    split = _coco_split(json_path, data)
    categories = {c["id"]: c["name"] for c in data.get("categories", [])}
    boxes: dict[Any, list[dict[str, Any]]] = {}
    for ann in data.get("annotation", data.get("annotations", [])):
      boxes.setdefault(ann["image_id"], []).append(
        {
          "category": categories.get(ann["category_id"], str(ann["category_id"])),
          "bbox": [float(v) for v in ann["bbox"]],
        }
      )
    for entry in data.get("images", []):
      filename = entry.get("filename") or entry["file_name"]
      path = os.path.join(images_dir, split, filename)
      if not os.path.exists(path):  # Some layouts keep all splits in one folder.
        flat = os.path.join(images_dir, filename)
        path = flat if os.path.exists(flat) else path
      yield _thermal_item(
        source,
        filename,
        path,
        split,
        {"file": filename, "coco_id": entry.get("id"), "objects": boxes.get(entry.get("id"), [])},
      )


def _thermal_item(
  source: str, filename: str, path: str, split: str, meta: dict[str, Any]
) -> SourceItem:
  key = _stem(filename)

  def load() -> Record:
    image = load_image(path)
    return Record(
      id=f"{source}/{key}",
      source=source,
      split=split,
      ir=image.data,
      ir_origin="real",
      meta={**meta, "width": image.width, "height": image.height, "format": image.format},
    )

  return SourceItem(id=f"{source}/{key}", file=path, load=load)


def read_source(
  kind: str, json_paths: Sequence[str], images_dir: str, source: str
) -> Iterator[SourceItem]:
  """Dispatches on the CLI's --source value."""
  if kind == "coco_thermal":
    return read_coco_thermal(json_paths, images_dir, source)
  readers = {"karpathy": read_karpathy, "nwpu": read_nwpu, "folder": read_folder}
  if kind not in readers:
    raise ValueError(
      f"unknown source kind {kind!r}; use one of {sorted([*readers, 'coco_thermal'])}"
    )
  if len(json_paths) != 1:
    raise ValueError(f"--source={kind} takes exactly one --json file, got {list(json_paths)}")
  return readers[kind](json_paths[0], images_dir, source)
