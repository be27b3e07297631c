"""Translation metrics against naive independent references and known values."""

import numpy as np
import pytest
from PIL import Image
from scipy.stats import wasserstein_distance

from fusionrs_jax.data import images as image_io
from fusionrs_jax.evaluators import translation as tr


def _naive_ssim(x, y, data_range=1.0):
  """Direct transcription of Wang et al. (2004): explicit 11x11 Gaussian weights at every
  fully-inside window position, weighted sample statistics, mean of the SSIM map."""
  g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
  w = np.outer(g, g)
  w /= w.sum()
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  vals = []
  for i in range(x.shape[0] - 10):
    for j in range(x.shape[1] - 10):
      a, b = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
      ma, mb = (w * a).sum(), (w * b).sum()
      va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
      cov = (w * (a - ma) * (b - mb)).sum()
      vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
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
  per_channel = [tr.ssim(a[..., c : c + 1], b[..., c : c + 1])[0] for c in range(3)]
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
    "intensity_w1": 0.0,
    "gradient_w1": 0.0,
    "contrast_w1": 0.0,
  }


def test_baselines_match_pil_luma():
  rgb = np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  x = rgb[None] / 255.0
  gray = tr.grayscale(x)
  pil_gray = np.asarray(Image.fromarray(rgb).convert("L"), np.float32) / 255
  np.testing.assert_allclose(gray[0, ..., 0], pil_gray, atol=1 / 255 + 1e-6)
  np.testing.assert_allclose(tr.inverted_grayscale(x), 1 - gray)
  np.testing.assert_array_equal(tr.quantize(np.array([-0.5, 0.2, 1.5])), [0.0, 51 / 255, 1.0])


def _naive_mmd2(x, y):
  """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, by explicit loops."""
  d, m = x.shape[1], len(x)
  k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
  return xx + yy - 2 * xy


def test_kid_matches_naive_unbiased_mmd_and_orders_distributions():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(12, 5)), rng.normal(0.5, 1.0, size=(12, 5))
  # One subset holding every row: exactly the naive estimator.
  mean, std = tr.kid(a, b, num_subsets=1, subset_size=12)
  assert mean == pytest.approx(_naive_mmd2(a, b), rel=1e-9) and std == 0.0
  same = tr.kid(rng.normal(size=(200, 5)), rng.normal(size=(200, 5)), subset_size=50)[0]
  shifted = tr.kid(rng.normal(size=(200, 5)), rng.normal(1.0, 1.0, size=(200, 5)), subset_size=50)[
    0
  ]
  assert abs(same) < 0.05 < shifted
  with pytest.raises(ValueError, match="at least 2"):
    tr.kid(a[:1], b)


def test_embedding_features_resize_rescale_and_ignore_batch_padding():
  seen = []

  def embed(x):  # [B, S, S, C] in [-1, 1] -> [B, 2]: mean and max
    seen.append(x.shape)
    return np.stack([x.mean(axis=(1, 2, 3)), x.max(axis=(1, 2, 3))], -1)

  features = tr.embedding_features(embed, image_size=8, batch_size=4)
  rng = np.random.default_rng(4)
  imgs = [rng.uniform(0, 1, (h, 11, 1)).astype(np.float32) for h in (9, 13, 16, 8, 20)]
  got = features(imgs)
  assert got.dtype == np.float64 and got.shape == (5, 2)
  assert seen == [(4, 8, 8, 1)] * 2  # fixed-size batches, the last one padded
  want = [image_io.resize(im, 8, 8) * 2 - 1 for im in imgs]
  np.testing.assert_allclose(got[:, 0], [w.mean() for w in want], rtol=1e-6)
  np.testing.assert_allclose(features(imgs[3:]), got[3:])
