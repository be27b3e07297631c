"""Translation metrics against naive independent references and known values."""

import numpy as np
import pytest

from fusionrs_jax.evaluators import translation as tr


def _naive_ssim(x, y, data_range=1.0):
  """Direct transcription of Wang et al. (2004): explicit 11x11 Gaussian weights at every
  fully-inside window position, weighted sample statistics, mean of the SSIM map."""
  g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2))
  w = np.outer(g, g)
  w /= w.sum()
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  vals = []
  for i in range(x.shape[0] - 10):
    for j in range(x.shape[1] - 10):
      a, b = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
      ma, mb = (w * a).sum(), (w * b).sum()
      va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
      cov = (w * (a - ma) * (b - mb)).sum()
      vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
  return np.mean(vals)


def test_ssim_matches_naive_reference():
  rng = np.random.default_rng(0)
  a = rng.random((2, 16, 19, 1))
  b = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1)
  got = tr.ssim(a, b)
  want = [_naive_ssim(a[n, ..., 0], b[n, ..., 0]) for n in range(2)]
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_ssim_is_one_for_identical_images_and_averages_channels():
  a = np.random.default_rng(1).random((1, 12, 12, 3))
  np.testing.assert_allclose(tr.ssim(a, a), [1.0])
  b = a.copy()
  b[..., 0] = 1 - b[..., 0]
  per_channel = [tr.ssim(a[..., c:c + 1], b[..., c:c + 1])[0] for c in range(3)]
  np.testing.assert_allclose(tr.ssim(a, b), [np.mean(per_channel)])
  with pytest.raises(ValueError, match="at least 11"):
    tr.ssim(a[:, :8], a[:, :8])


def test_psnr_known_values():
  a = np.zeros((2, 4, 4, 1))
  b = a.copy()
  b[1] += 0.1  # MSE 0.01 -> 20 dB
  p = tr.psnr(a, b)
  assert p[0] == np.inf
  np.testing.assert_allclose(p[1], 20.0)


def test_histogram_w1_matches_shift_and_scipy():
  from scipy.stats import wasserstein_distance

  rng = np.random.default_rng(2)
  a = rng.random(5000) * 0.5
  np.testing.assert_allclose(tr.histogram_w1(a, a + 0.25), 0.25, atol=2 / 256)
  b = rng.random(3000) ** 2
  np.testing.assert_allclose(tr.histogram_w1(a, b), wasserstein_distance(a, b), atol=2 / 256)
  assert tr.histogram_w1(a, a) == 0.0


def test_gradient_and_contrast_statistics_on_known_images():
  ramp = np.tile(np.linspace(0, 1, 32), (32, 1))[..., None]  # slope 1/31 per pixel
  np.testing.assert_allclose(tr.gradient_magnitude(ramp)[4:-4, 4:-4], 1 / 31, rtol=1e-5)
  flat = np.full((16, 16, 1), 0.3)
  np.testing.assert_allclose(tr.local_contrast(flat), 0.0, atol=1e-6)
  d = tr.distribution_distances([flat], [flat, ramp[:16, :16]])
  assert set(d) == {"intensity_w1", "gradient_w1", "contrast_w1"}
  assert tr.distribution_distances([ramp], [ramp]) == {
      "intensity_w1": 0.0, "gradient_w1": 0.0, "contrast_w1": 0.0}


def test_baselines_and_image_decoding_round_trip():
  import io
  from PIL import Image

  rgb = np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(rgb).save(buf, "PNG")
  x = tr.decode_image(buf.getvalue(), 3)
  np.testing.assert_allclose((x + 1) * 127.5, rgb, atol=1e-4)
  gray = tr.grayscale(((x + 1) / 2)[None])
  pil_gray = np.asarray(Image.fromarray(rgb).convert("L"), np.float32) / 255
  np.testing.assert_allclose(gray[0, ..., 0], pil_gray, atol=1 / 255 + 1e-6)
  np.testing.assert_allclose(tr.inverted_grayscale(((x + 1) / 2)[None]), 1 - gray)
  buf16 = io.BytesIO()
  Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(buf16, "PNG")
  np.testing.assert_allclose(tr.decode_image(buf16.getvalue(), 1), 1.0)
