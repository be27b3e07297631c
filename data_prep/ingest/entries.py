"""One entry of an annotation file -> a SourceItem: the checks every reader shares (entry
shape, file name, field types) and the item that carries an entry's rejection."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from data_prep.ingest import inputs
from data_prep.ingest.inputs import ItemRejected, load_image
from fusionrs_jax.core.records import Record
from fusionrs_jax.data.images import ImageLimits

# Split names become part of shard file names ({name}-{split}.array_record-...).
SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")
DEFAULT_LIMITS = ImageLimits()


@dataclasses.dataclass(frozen=True)
class SourceItem:
  """One entry of a source before its image is read. `load()` may raise ItemRejected."""

  id: str
  file: str
  load: Callable[[], Record]
  # Where the entry sits in its annotation file, e.g. "dataset_ucm.json images[12]".
  position: str = ""


def _raise(e: ItemRejected) -> Record:
  raise e


def rejected_item(source: str, position: str, file: str, e: ItemRejected) -> SourceItem:
  """An entry that cannot be used: its own id (the position) so it never shadows an image."""
  return SourceItem(f"{source}/#{position}", file, lambda: _raise(e), position)


def stem(filename: str) -> str:
  return os.path.splitext(filename.replace(os.sep, "/"))[0]


def type_name(value: Any) -> str:
  return "null" if value is None else type(value).__name__


def as_object(entry: Any) -> dict[str, Any]:
  if not isinstance(entry, dict):
    raise ItemRejected("not_an_object", f"entry is a {type_name(entry)}, expected an object")
  return entry


def filename_of(entry: dict[str, Any], keys: Sequence[str]) -> str:
  """The entry's image file name under the first present key of `keys`."""
  key = next((k for k in keys if entry.get(k) not in (None, "")), None)
  if key is None:
    raise ItemRejected("missing_filename", f"entry has none of the keys {list(keys)}")
  name = entry[key]
  if not isinstance(name, str):
    raise ItemRejected("bad_type", f"{key!r} is a {type_name(name)}, expected a file name")
  if any(ord(ch) < 32 or 0xD800 <= ord(ch) < 0xE000 for ch in name):
    raise ItemRejected("bad_filename", f"{key} {name!r} holds control or non-UTF-8 characters")
  return name


def text_field(entry: dict[str, Any], key: str, default: str) -> str:
  """An optional text field; numbers (a class id) are taken as text, other types rejected."""
  value = entry.get(key)
  if value is None:
    return default
  if isinstance(value, bool) or not isinstance(value, (str, int)):
    raise ItemRejected("bad_type", f"{key!r} is a {type_name(value)}, expected text")
  return str(value)


def rgb_item(
  source: str,
  images_dir: str,
  candidates: list[str],
  fields: dict[str, Any],
  position: str,
  limits: ImageLimits,
) -> SourceItem:
  """A captioned RGB sample; `candidates` are image paths relative to images_dir (the first
  that exists is read); captions stay raw so the ingest can reject or clean bad ones."""
  key = stem(fields["file"])

  def load() -> Record:
    image = load_image(inputs.first_inside(images_dir, candidates), limits)
    meta = {**fields["meta"], "width": image.width, "height": image.height}
    meta["format"] = image.format
    if image.converted_from:
      meta["converted_from"] = image.converted_from
    return Record(
      id=f"{source}/{key}",
      source=source,
      split=fields["split"],
      rgb=image.data,
      captions=list(fields["captions"]),
      label=fields["label"],
      meta=meta,
    )

  return SourceItem(f"{source}/{key}", os.path.join(images_dir, candidates[0]), load, position)
