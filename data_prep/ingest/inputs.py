"""What an ingest reads from disk, read defensively: annotation files (strict UTF-8 JSON with
the error position), image paths confined to --images, image files checked against limits.

Two kinds of failure: `InputError` (a whole file cannot be read: the command stops before
writing anything) and `ItemRejected` (one entry or image is unusable: a rejects.jsonl line).
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import io
import json
import os
from typing import Any

import numpy as np
from PIL import Image

from fusionrs_jax.core.errors import UserError
from fusionrs_jax.data import images

# Formats kept as their original bytes; anything else (TIFF, BMP, ...) is re-encoded as PNG.
KEPT_FORMATS = ("JPEG", "PNG")
# bytes; an image file is read whole, so a larger one (no image within the pixel limit needs
# this much) is rejected before reading.
MAX_FILE_BYTES = 1 << 30
# Modes a PNG can hold as they are (16-bit thermal stays 16-bit); others become RGB.
PNG_MODES = ("L", "RGB", "RGBA", "I;16")


class ItemRejected(Exception):
  """An item cannot become a record; `reason` is a short stable key for rejects.jsonl."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason = reason
    self.detail = detail

  def __reduce__(self):  # pickled with its fields (Beam, worker processes)
    return (type(self), (self.reason, self.detail))


class InputError(UserError, ValueError):
  """A whole input file cannot be read; the message names the file and the position."""


# ----------------------------------------------------------------------------
# Annotation files.
# ----------------------------------------------------------------------------


def read_text(path: str, flag: str = "--json") -> str:
  """A text file decoded as strict UTF-8 (a leading BOM dropped); InputError names the byte
  offset otherwise."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise InputError(f"{path} not found; check {flag}") from None
  except IsADirectoryError:
    raise InputError(f"{path} is a folder; {flag} takes a file") from None
  bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0  # Windows editors
  try:
    return data[bom:].decode("utf-8")
  except UnicodeDecodeError as e:
    at = bom + e.start
    line = data[:at].count(b"\n") + 1
    raise InputError(
      f"{path}: not UTF-8 at byte {at} (line {line}); re-save the file as UTF-8"
    ) from None


def load_json(path: str) -> Any:
  """A whole JSON file; InputError names the line and column of a syntax error."""
  text = read_text(path)
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise InputError(
      f"{path}: not JSON at line {e.lineno} column {e.colno} ({e.msg}); fix or re-download it"
    ) from None
  except (ValueError, RecursionError) as e:  # a 5000-digit number, arrays nested 10^5 deep
    raise InputError(f"{path}: JSON this reader refuses ({json_problem(e)})") from None


def json_problem(e: Exception) -> str:
  """What is wrong with a JSON text, from json.loads' exception, on one line."""
  if isinstance(e, json.JSONDecodeError):
    return f"{e.msg} at character {e.pos}"
  if isinstance(e, RecursionError):
    return "nested too deeply"
  return " ".join(str(e).split())[:200]


def file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def folder_listing_sha256(folder: str) -> str:
  """Hash of every file's relative path, size and mtime under `folder` (no content read):
  cheap enough for --resume to notice images added, removed or replaced."""
  h = hashlib.sha256()
  for root, dirs, files in os.walk(folder):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(root, name)
      try:
        st = os.stat(path)
      except OSError:  # dangling symlink: its name still counts
        st = None
      rel = os.path.relpath(path, folder)
      h.update(f"{rel}\0{st and st.st_size}\0{st and st.st_mtime_ns}\n".encode(errors="replace"))
  return h.hexdigest()


# ----------------------------------------------------------------------------
# Image paths and files.
# ----------------------------------------------------------------------------


def inside_images(images_dir: str, relative: str) -> str:
  """The real path of `relative` under `images_dir`; ItemRejected("outside_images") when it
  leaves the folder after resolving `..`, absolute parts and symlinks (nothing is opened)."""
  root = os.path.realpath(images_dir)
  path = os.path.realpath(os.path.join(root, relative))
  if os.path.commonpath([root, path]) != root:
    raise ItemRejected(
      "outside_images",
      f"{relative!r} resolves to {path}, outside --images={images_dir}; "
      "only files inside the images folder are read",
    )
  return path


def first_inside(images_dir: str, candidates: list[str]) -> str:
  """The first candidate path that exists (else the first), each confined to images_dir."""
  paths = [inside_images(images_dir, c) for c in candidates]
  return next((p for p in paths if os.path.exists(p)), paths[0])


@dataclasses.dataclass(frozen=True)
class LoadedImage:
  data: bytes  # encoded JPEG/PNG bytes
  width: int  # pixels, upright (after EXIF orientation)
  height: int  # pixels
  format: str  # "JPEG" | "PNG" (after any conversion)
  converted_from: str = ""  # original format when re-encoded as PNG


def check_image_bytes(
  data: bytes, where: str, limits: images.ImageLimits | None = None
) -> tuple[Image.Image, str]:
  """Opens encoded bytes with the one decoder (limits checked from the header), then decodes
  every pixel (truncation shows only on full decode) -> (PIL image, original format)."""
  if not data:
    raise ItemRejected("empty_file", f"{where} has zero bytes")
  try:
    image = images.open_image(data, where, limits)
    fmt = image.format or ""
    image.load()
  except images.ImageLimitError as e:
    raise ItemRejected(e.reason, str(e)) from e
  except Exception as e:  # RecordError from the decoder, OSError from load()
    reason = "truncated_image" if "truncated" in str(e).lower() else "unreadable_image"
    raise ItemRejected(reason, f"{where}: {e}" if where not in str(e) else str(e)) from e
  # A rotated image is a transposed copy that has lost its format.
  if not fmt:
    with Image.open(io.BytesIO(data)) as original:
      fmt = original.format or ""
  return image, fmt


def _read_file(path: str) -> bytes:
  if not os.path.isfile(path):
    raise ItemRejected("missing_file", f"{path} does not exist")
  try:
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
      raise ItemRejected(
        "file_too_large", f"{path} has {size} bytes, over {MAX_FILE_BYTES}; not read"
      )
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:  # permissions, I/O errors, a file removed meanwhile
    raise ItemRejected("unreadable_file", f"{path}: {e.strerror or e}") from e


def _as_png(image: Image.Image) -> Image.Image:
  """An image PNG holds so that the one decoder reads it as it reads the original."""
  if image.mode in images.HIGH_BIT_INT_MODES + ("F",) and image.mode != "I;16":
    # 32-bit / float / big-endian 16-bit: PNG holds them as 16-bit gray scaled exactly as
    # the decoder scales them, so the stored image decodes to the same values.
    scaled = np.asarray(images.standard_mode(image, 1), np.float32)  # [H, W] in [0, 255]
    return Image.fromarray(np.clip(np.round(scaled * 257.0), 0, 65535).astype(np.uint16))
  return image if image.mode in PNG_MODES else image.convert("RGB")


def load_image(path: str, limits: images.ImageLimits | None = None) -> LoadedImage:
  """Reads and checks an image file (already confined by inside_images); formats other than
  JPEG/PNG are re-encoded as PNG."""
  data = _read_file(path)
  image, fmt = check_image_bytes(data, path, limits)
  if fmt in KEPT_FORMATS:
    return LoadedImage(data, image.width, image.height, fmt)
  try:
    image = _as_png(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
  except Exception as e:  # PIL raises several types for modes it cannot convert or save
    raise ItemRejected(
      "unreadable_image", f"{path}: {fmt} {image.mode} not convertible ({e})"
    ) from e
  return LoadedImage(buf.getvalue(), image.width, image.height, "PNG", converted_from=fmt)
