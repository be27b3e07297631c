"""The one image decoder against numpy reference conversions, through both of its consumers'
entry points: decode_image (evaluator, translate, Beam, translator crops) and the training
loader's Preprocess.decode_images (open_image + crop_resize)."""

import io

import numpy as np
import pytest
from PIL import Image

from fusionrs_jax.core import records
from fusionrs_jax.data import images
from fusionrs_jax.data import input_pipeline as ip

LEVEL = 2 / 255  # one 8-bit level in [-1, 1]


def _encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
  buf = io.BytesIO()
  img.save(buf, fmt, **kwargs)
  return buf.getvalue()


def _loader_images(data: bytes, size: int) -> dict[str, np.ndarray]:
  """The training loader's rgb and ir of a record holding `data` in both fields, at the
  image's own size (the bilinear resize is then the identity)."""
  prep = ip.Preprocess(image_size=size, tokenizer=None, text_len=1, caption_fields=())
  rec = records.Record(id="r0", source="t", split="train", rgb=data, ir=data)
  return prep.decode_images(rec, None)


def _check_both_paths(data: bytes, want01: np.ndarray, atol: float) -> None:
  """Every consumer sees want01 ([H, W, C] in [0, 1]; C=1 is repeated for RGB)."""
  want = want01 * 2 - 1
  gray = want[..., :1] if want.shape[-1] == 1 else None
  if want.shape[-1] == 1:
    want = np.repeat(want, 3, -1)
  np.testing.assert_allclose(images.decode_image(data, 3), want, atol=atol)
  loaded = _loader_images(data, want.shape[0])
  np.testing.assert_allclose(loaded["rgb"], want, atol=atol)
  if gray is not None:
    np.testing.assert_allclose(images.decode_image(data, 1), gray, atol=atol)
    np.testing.assert_allclose(loaded["ir"], gray, atol=atol)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grayscale_scales_by_65535_in_every_consumer(fmt):
  # Radiometric thermal counts spanning the 16-bit range; 8-bit clipping would read >=255
  # as white almost everywhere (the loader's RGB path did).
  counts = np.random.default_rng(0).integers(0, 65536, (12, 12), dtype=np.uint16)
  data = _encode(Image.fromarray(counts), fmt)
  assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
  want01 = (counts.astype(np.float64) / 65535)[..., None]
  _check_both_paths(data, want01, atol=1e-5)


def test_float_tiff_scales_by_its_maximum():
  x = np.random.default_rng(1).uniform(0, 300, (10, 10)).astype(np.float32)
  want01 = (x / x.max())[..., None]
  _check_both_paths(_encode(Image.fromarray(x), "TIFF"), want01, atol=1e-5)


def test_palette_with_and_without_transparency_decodes_to_its_colours():
  rng = np.random.default_rng(2)
  palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
  index = rng.integers(0, 256, (8, 8), dtype=np.uint8)
  img = Image.fromarray(index, "P")
  img.putpalette(palette.ravel().tolist())
  want01 = palette[index] / 255.0
  _check_both_paths(_encode(img), want01, atol=1e-6)
  # A transparent index keeps its colour (alpha is dropped, not composited).
  _check_both_paths(_encode(img, transparency=int(index[0, 0])), want01, atol=1e-6)


def test_alpha_is_dropped_and_gray_is_bt601_luma():
  rng = np.random.default_rng(3)
  rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
  data = _encode(Image.fromarray(rgba, "RGBA"))
  _check_both_paths(data, rgba[..., :3] / 255.0, atol=1e-6)
  luma = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(images.decode_image(data, 1)[..., 0], luma / 127.5 - 1, atol=LEVEL)
  la = np.stack([rgba[..., 0], rgba[..., 3]], -1)
  _check_both_paths(_encode(Image.fromarray(la, "LA")), la[..., :1] / 255.0, atol=1e-6)


def test_cmyk_converts_to_rgb_multiplicatively():
  cmyk = np.random.default_rng(4).integers(0, 256, (8, 8, 4)).astype(np.uint8)
  img = Image.frombytes("CMYK", (8, 8), cmyk.tobytes())
  c = cmyk.astype(np.float64)
  want01 = (255 - c[..., :3]) * (255 - c[..., 3:]) / 255**2
  _check_both_paths(_encode(img, "TIFF"), want01, atol=LEVEL)


@pytest.mark.parametrize("orientation,turn", [(3, lambda a: a[::-1, ::-1]), (6, np.rot90)])
def test_exif_orientation_is_applied(orientation, turn):
  # Orientation 6: the stored pixels are displayed turned 90 degrees clockwise.
  rgb = np.random.default_rng(5).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  exif = Image.Exif()
  exif[images.EXIF_ORIENTATION] = orientation
  data = _encode(Image.fromarray(rgb), exif=exif.tobytes())
  want = turn(rgb) if orientation == 3 else np.rot90(rgb, -1)
  _check_both_paths(data, want / 255.0, atol=1e-6)


def test_8_bit_decoder_and_loader_agree_and_resize_is_bilinear():
  rgb = np.random.default_rng(6).integers(0, 256, (9, 14, 3), dtype=np.uint8)
  data = _encode(Image.fromarray(rgb))
  x = images.decode_image(data, 3)
  np.testing.assert_allclose((x + 1) * 127.5, rgb, atol=1e-4)
  # Loader: bilinear in 8-bit (PIL fixed point, rounded); decoder + resize: in float.
  want = np.asarray(Image.fromarray(rgb).resize((6, 6), Image.BILINEAR), np.float32)
  got = images.crop_resize(images.open_image(data), 3, 6)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_allclose((images.resize(x, 6, 6) + 1) * 127.5, want, atol=1.0)
  assert images.resize(x, 4, 7).shape == (4, 7, 3)


def test_undecodable_bytes_name_the_record():
  with pytest.raises(records.RecordError, match="rec7: undecodable image"):
    images.decode_image(b"not an image", 3, "rec7")
  truncated = _encode(Image.new("RGB", (64, 64), "red"))[:60]
  with pytest.raises(records.RecordError, match="r0"):
    _loader_images(truncated, 64)
