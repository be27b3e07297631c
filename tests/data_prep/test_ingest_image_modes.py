"""Ingest stores images so that the one decoder reads them exactly as it reads the original
file: 16-bit, 32-bit and float TIFFs, palette, CMYK, gray+alpha and RGBA TIFFs (re-encoded
as PNG), and EXIF-rotated JPEGs (kept as they are, with their upright size in meta)."""

import io

import numpy as np
import pytest
from PIL import Image

from data_prep.ingest import inputs
from fusionrs_jax.data import images

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (30, 40, 3), np.uint8)


def _modes() -> dict[str, Image.Image]:
  gray16 = RNG.integers(0, 65536, (30, 40), dtype=np.uint16)
  return {
    "I;16": Image.fromarray(gray16),
    "I": Image.fromarray(gray16.astype(np.int32) * 3),
    "F": Image.fromarray(RNG.uniform(0, 300, (30, 40)).astype(np.float32)),
    "P": Image.fromarray(RGB).convert("P", palette=Image.ADAPTIVE, colors=16),
    "CMYK": Image.fromarray(RGB).convert("CMYK"),
    "LA": Image.fromarray(RGB).convert("LA"),
    "RGBA": Image.fromarray(RGB).convert("RGBA"),
  }


def _encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
  buf = io.BytesIO()
  img.save(buf, fmt, **kwargs)
  return buf.getvalue()


@pytest.mark.parametrize("mode", list(_modes()))
def test_tiff_of_each_mode_decodes_the_same_after_ingest(tmp_path, mode):
  data = _encoded(_modes()[mode], "TIFF")
  assert Image.open(io.BytesIO(data)).mode.startswith(mode[:1])
  (tmp_path / "a.tif").write_bytes(data)
  stored = inputs.load_image(str(tmp_path / "a.tif"))
  assert stored.format == "PNG" and stored.converted_from == "TIFF"
  for channels in (3, 1):
    want = images.decode_image(data, channels)
    got = images.decode_image(stored.data, channels)
    # 16-bit storage of 32-bit / float values: within half a 16-bit step
    np.testing.assert_allclose(got, want, atol=1.01 / 65535)


def test_exif_rotated_jpeg_is_kept_and_its_size_is_upright(tmp_path):
  exif = Image.Exif()
  exif[images.EXIF_ORIENTATION] = 6  # stored pixels must turn 90 degrees to stand upright
  data = _encoded(Image.fromarray(RGB), "JPEG", exif=exif)
  (tmp_path / "r.jpg").write_bytes(data)
  stored = inputs.load_image(str(tmp_path / "r.jpg"))
  assert stored.data == data and stored.format == "JPEG"
  assert (stored.width, stored.height) == (30, 40)
  assert images.decode_image(stored.data, 3).shape == (40, 30, 3)
