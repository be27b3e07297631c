"""The one image decoder: encoded record images (PNG/JPEG/TIFF, 8-bit, 16-bit thermal, float,
palette, alpha, CMYK, EXIF-rotated) -> float pixels. Every consumer reads images through it:
the training loaders, the translation evaluator and the translate / Beam dataset steps.

Intensities: a 8-bit image maps 0..255 to [-1, 1]; a 16/32-bit integer image maps 0..65535;
a float image maps 0..max(1, its maximum). Alpha is dropped; grayscale repeats into RGB.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import warnings

import numpy as np
from PIL import Image, ImageOps

from fusionrs_jax.core import records

# EXIF tag 274: how the stored pixels must be turned to stand upright (1 = as stored).
EXIF_ORIENTATION = 0x0112
# Integer modes of more than 8 bits (16-bit radiometric thermal PNG/TIFF, 32-bit TIFF).
HIGH_BIT_INT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# Full-image crop box (fractions of width and height).
FULL_BOX = (0.0, 0.0, 1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class ImageLimits:
  """Size bounds checked from the image header, before any pixel is decoded."""

  # A 12000x12000 (144 Mpx) image takes ~1.7 GB as float RGB; 40 Mpx covers 6000x6000 photos.
  max_pixels: int = 40_000_000
  # pixels; a side below this is no usable training image
  min_side: int = 1


class ImageLimitError(records.RecordError):
  """An image's header size breaks ImageLimits; `reason` is too_many_pixels or image_too_small."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason

  def __reduce__(self):  # pickled with its fields (Beam, worker processes)
    return (type(self), (self.reason, str(self)))


def check_limits(img: Image.Image, limits: ImageLimits, where: str) -> None:
  """Raises ImageLimitError when the (not yet decoded) image's header size breaks `limits`."""
  width, height = img.size
  if width * height > limits.max_pixels:
    raise ImageLimitError(
      "too_many_pixels",
      f"{where}: {width}x{height} px ({width * height / 1e6:.1f} Mpx) is over the limit of "
      f"{limits.max_pixels} pixels",
    )
  if min(width, height) < limits.min_side:
    raise ImageLimitError(
      "image_too_small", f"{where}: {width}x{height} px has a side below {limits.min_side} px"
    )


@contextlib.contextmanager
def _decoding(where: str):
  """PIL errors (several types) -> one RecordError naming the record."""
  try:
    yield
  except records.RecordError:
    raise
  except Exception as e:
    raise records.RecordError(f"{where}: undecodable image ({e})") from e


def open_image(data: bytes, where: str = "image", limits: ImageLimits | None = None) -> Image.Image:
  """Encoded bytes -> PIL image, turned upright by its EXIF orientation.

  `limits` are checked from the header first. A JPEG's pixels are not decoded yet
  (crop_resize can still draft it at a lower scale), unless it has to be rotated.
  """
  with _decoding(where), warnings.catch_warnings():
    if limits is not None:  # checked here, so PIL's own size warning would only repeat it
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    try:
      img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:  # PIL refuses > 2x its own limit at open
      raise ImageLimitError("too_many_pixels", f"{where}: {e}") from e
    if limits is not None:
      check_limits(img, limits, where)
    if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
      img = ImageOps.exif_transpose(img)
    return img


def standard_mode(img: Image.Image, channels: int) -> Image.Image:
  """-> "RGB" (channels 3) or "L" (channels 1) for 8-bit images, or one-channel "F" with
  values in [0, 255] for 16/32-bit integer and float images (callers repeat it to RGB)."""
  if img.mode in HIGH_BIT_INT_MODES or img.mode == "F":
    arr = np.asarray(img, np.float32)
    if img.mode == "F":
      top = max(float(arr.max()), 1.0)
    else:  # 32-bit counts beyond the 16-bit range saturate, as negative ones do at 0
      arr, top = np.clip(arr, 0.0, 65535.0), 65535.0
    return Image.fromarray(arr * np.float32(255.0 / top))
  if img.mode == "P":
    # Palette -> its colours first (a transparent index becomes alpha, then dropped).
    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
  mode = "RGB" if channels == 3 else "L"
  return img if img.mode == mode else img.convert(mode)


def _with_channels(x: np.ndarray, channels: int) -> np.ndarray:
  """[H, W] or [H, W, C] -> [H, W, channels] (a single channel is repeated)."""
  x = x.reshape(*x.shape[:2], -1)
  return np.repeat(x, channels, -1) if x.shape[-1] != channels else x


def decode_image(
  data: bytes, channels: int, where: str = "image", limits: ImageLimits | None = None
) -> np.ndarray:
  """Encoded image -> float32 [H, W, channels] in [-1, 1] at its stored resolution."""
  img = open_image(data, where, limits)
  with _decoding(where):
    x = np.asarray(standard_mode(img, channels), np.float32) / 255.0
  return _with_channels(x, channels) * 2.0 - 1.0


def crop_resize(
  img: Image.Image,
  channels: int,
  size: int,
  box: tuple[float, float, float, float] = FULL_BOX,
  where: str = "image",
) -> np.ndarray:
  """Crops `box` (fractions of the width/height) of an open_image and resizes it (bilinear,
  in 8-bit for 8-bit images) -> float32 [size, size, channels] in [0, 255]."""
  fw, fh = box[2] - box[0], box[3] - box[1]
  with _decoding(where):
    if img.format == "JPEG":
      # Decode at 1/2, 1/4, 1/8 scale when the crop still keeps >= size pixels.
      img.draft("RGB" if channels == 3 else "L", (math.ceil(size / fw), math.ceil(size / fh)))
    img = standard_mode(img, channels)
    w, h = img.size
    pixels = (box[0] * w, box[1] * h, box[2] * w, box[3] * h)
    x = np.asarray(img.resize((size, size), Image.BILINEAR, box=pixels), np.float32)
  return _with_channels(x, channels)


def resize(x: np.ndarray, height: int, width: int) -> np.ndarray:
  """Float [H, W, C] -> float32 [height, width, C], bilinear on each channel."""
  chans = [
    np.asarray(Image.fromarray(x[..., c]).resize((width, height), Image.BILINEAR))
    for c in range(x.shape[-1])
  ]
  return np.stack(chans, -1).astype(np.float32)
