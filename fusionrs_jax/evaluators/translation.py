"""RGB->IR translation quality: PSNR/SSIM on aligned pairs and distribution distances to real
thermal images, for the trained generator beside the grayscale and inverted-grayscale baselines.

Images here are float arrays in [0, 1] ([N,H,W,1] for IR) unless a docstring says otherwise.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from scipy import ndimage

from fusionrs_jax.core import records, sharding
from fusionrs_jax.data import images as image_io

# ITU-R BT.601 luma, what PIL's convert("L") uses.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
K1, K2 = 0.01, 0.03
# Local-contrast statistic: intensity std in this square window (pixels).
CONTRAST_WINDOW = 7
HIST_BINS = 256


# ----------------------------------------------------------------------------
# Baselines and 8-bit quantisation.
# ----------------------------------------------------------------------------


def grayscale(rgb: np.ndarray) -> np.ndarray:
  """Baseline: luma of [N,H,W,3] in [0,1] -> [N,H,W,1]."""
  return (rgb @ LUMA)[..., None]


def inverted_grayscale(rgb: np.ndarray) -> np.ndarray:
  """Baseline: 1 - luma (hot = dark surfaces in daylight). [N,H,W,3] -> [N,H,W,1]."""
  return 1.0 - grayscale(rgb)


def quantize(x: np.ndarray) -> np.ndarray:
  """[0,1] floats -> the 8-bit values a PNG would store, back in [0,1]."""
  return np.round(np.clip(x, 0.0, 1.0) * 255.0) / 255.0


# ----------------------------------------------------------------------------
# Paired metrics.
# ----------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> np.ndarray:
  """Per-image PSNR in dB of [N,H,W,C] pairs -> [N]; identical images give +inf."""
  mse = np.mean(np.square(a.astype(np.float64) - b), axis=(1, 2, 3))
  with np.errstate(divide="ignore"):
    return 10.0 * np.log10(data_range**2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
  """Normalised 1-D Gaussian [size]."""
  x = np.arange(size) - (size - 1) / 2.0
  w = np.exp(-(x**2) / (2 * sigma**2))
  return w / w.sum()


def _local_mean(x: np.ndarray, w: np.ndarray) -> np.ndarray:
  """Gaussian-weighted mean over each full window ("valid"). [H,W] -> [H-10, W-10]."""
  y = ndimage.correlate1d(x, w, axis=0, mode="constant")
  y = ndimage.correlate1d(y, w, axis=1, mode="constant")
  r = len(w) // 2
  return y[r : y.shape[0] - r, r : y.shape[1] - r]


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> np.ndarray:
  """Per-image SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01,
  K2 0.03) averaged over window positions and channels. [N,H,W,C] pairs -> [N].

  Windows are the fully-inside ones (no padding); images need H, W >= 11.
  """
  if min(a.shape[1:3]) < SSIM_WINDOW:
    raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} px, got {a.shape}")
  w = gaussian_window()
  c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
  out = np.zeros(a.shape[0])
  for n, c in itertools.product(range(a.shape[0]), range(a.shape[-1])):
    x, y = a[n, ..., c].astype(np.float64), b[n, ..., c].astype(np.float64)
    mx, my = _local_mean(x, w), _local_mean(y, w)
    vx = _local_mean(x * x, w) - mx * mx
    vy = _local_mean(y * y, w) - my * my
    cov = _local_mean(x * y, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    out[n] += s.mean() / a.shape[-1]
  return out


# ----------------------------------------------------------------------------
# Distribution metrics (no pairs needed).
# ----------------------------------------------------------------------------


def gradient_magnitude(img: np.ndarray) -> np.ndarray:
  """Sobel gradient magnitude of one [H,W,1] image (reflected borders) -> [H,W]."""
  x = img[..., 0].astype(np.float32)
  # Sobel kernels sum |weights| to 8 per axis: /8 keeps units of intensity per pixel.
  return np.hypot(ndimage.sobel(x, 0), ndimage.sobel(x, 1)) / 8.0


def local_contrast(img: np.ndarray, window: int = CONTRAST_WINDOW) -> np.ndarray:
  """Intensity standard deviation in a window around each pixel. [H,W,1] -> [H,W]."""
  x = img[..., 0].astype(np.float64)
  mean = ndimage.uniform_filter(x, window, mode="reflect")
  sq = ndimage.uniform_filter(x * x, window, mode="reflect")
  return np.sqrt(np.maximum(sq - mean**2, 0.0)).astype(np.float32)


def histogram_w1(
  a: np.ndarray, b: np.ndarray, value_range=(0.0, 1.0), bins: int = HIST_BINS
) -> float:
  """1-D Wasserstein-1 distance between the value histograms of two arrays (any shapes).

  Equals the integral of |CDF_a - CDF_b| over the range, in the values' units.
  """
  ha, edges = np.histogram(np.clip(a, *value_range), bins, value_range)
  hb, _ = np.histogram(np.clip(b, *value_range), bins, value_range)
  cdf_a, cdf_b = np.cumsum(ha) / max(ha.sum(), 1), np.cumsum(hb) / max(hb.sum(), 1)
  return float(np.sum(np.abs(cdf_a - cdf_b)) * (edges[1] - edges[0]))


def _pooled(images, fn) -> np.ndarray:
  return np.concatenate([fn(x).ravel() for x in images])


def distribution_distances(generated, real) -> dict[str, float]:
  """W1 distances of intensity, gradient-magnitude and local-contrast histograms between
  generated and real IR images (sequences of [H,W,1] in [0,1], sizes may differ); lower
  is closer."""
  return {
    "intensity_w1": histogram_w1(_pooled(generated, np.asarray), _pooled(real, np.asarray)),
    "gradient_w1": histogram_w1(
      _pooled(generated, gradient_magnitude), _pooled(real, gradient_magnitude)
    ),
    "contrast_w1": histogram_w1(
      _pooled(generated, local_contrast), _pooled(real, local_contrast), (0.0, 0.5)
    ),
  }


def kid(
  feats_a: np.ndarray,
  feats_b: np.ndarray,
  num_subsets: int = 10,
  subset_size: int = 100,
  seed: int = 0,
) -> tuple[float, float]:
  """Kernel Inception Distance on any features: [N,D], [M,D] -> (mean, std) over subsets.

  Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3 (Binkowski et
  al. 2018), averaged over `num_subsets` random subsets of min(subset_size, N, M) rows each.
  """
  a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
  m = min(subset_size, len(a), len(b))
  if m < 2:
    raise ValueError(f"KID needs at least 2 images per set, got {len(a)} and {len(b)}")
  rng = np.random.default_rng(seed)
  kernel = lambda x, y: (x @ y.T / x.shape[1] + 1.0) ** 3
  values = []
  for _ in range(num_subsets):
    x = a[rng.choice(len(a), m, replace=False)]
    y = b[rng.choice(len(b), m, replace=False)]
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))
    values.append(off(kxx) + off(kyy) - 2.0 * kxy.mean())
  return float(np.mean(values)), float(np.std(values))


def embedding_features(
  embed: Callable[[np.ndarray], np.ndarray], image_size: int, batch_size: int = 32
) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
  """KID features from an image embedder: list of [H,W,C] in [0,1] (any sizes) -> float64
  [N, D] (float64 for the kernel sums).

  `embed` maps float32 [batch_size, image_size, image_size, C] in [-1, 1] (the SigLIP input
  range) to [batch_size, D]; the last batch is padded by repeating its last image.
  """

  def features(images: Sequence[np.ndarray]) -> np.ndarray:
    x = np.stack(
      [image_io.resize(np.asarray(im, np.float32), image_size, image_size) for im in images]
    )
    x = x * 2.0 - 1.0
    out = []
    for start in range(0, len(x), batch_size):
      chunk = x[start : start + batch_size]
      pad = batch_size - len(chunk)
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)]) if pad else chunk
      out.append(np.asarray(embed(chunk))[: batch_size - pad])
    return np.concatenate(out).astype(np.float64)

  return features


# ----------------------------------------------------------------------------
# Evaluator.
# ----------------------------------------------------------------------------


def load_split(
  data_dir: str, split: str, field: str, channels: int, image_size: int, max_images: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """Up to max_images (in shard order) of one image field, plus the paired IR when
  field == "rgb" and the record has one. Each image float32 [H,W,C] in [-1,1], resized to
  image_size unless 0. Returns (images, paired_irs)."""
  images, irs = [], []
  for rec in records.read_records(records.list_shards(data_dir, split)):
    if len(images) >= max_images:
      break
    data = getattr(rec, field)
    if not data:
      raise records.RecordError(
        f"record {rec.id!r} in {data_dir}:{split} has no {field} "
        f"image; the translation evaluator needs one"
      )
    fit = (lambda x: image_io.resize(x, image_size, image_size)) if image_size else (lambda x: x)
    images.append(fit(image_io.decode_image(data, channels, rec.id)))
    if field == "rgb" and rec.ir:
      irs.append(fit(image_io.decode_image(rec.ir, 1, rec.id)))
  return images, irs if len(irs) == len(images) else []


class TranslationEvaluator:
  """Built from a config's `eval` block; `run(generator_params) -> {name: value}`.

  `predict(params, rgb)` maps [B,H,W,3] in [-1,1] to [B,H,W,1] in [-1,1] (jit-compiled
  by the caller); batches are placed data-parallel on `mesh`. Single-process: each
  process evaluates every image (multi-host evaluation would slice them per process).
  `kid_features` (e.g. embedding_features of a SigLIP IR tower) adds KID against the
  reference IR: list of [H,W,1] in [0,1] -> [N, D].
  """

  def __init__(
    self,
    eval_config,
    predict: Callable[[Any, jax.Array], jax.Array],
    mesh,
    kid_features: Callable[[Sequence[np.ndarray]], np.ndarray] | None = None,
  ):
    e = eval_config
    self.predict, self.mesh, self.batch_size = predict, mesh, e.batch_size
    rgb, ir = load_split(e.rgb_dir, e.rgb_split, "rgb", 3, e.image_size, e.max_images)
    shapes = {x.shape for x in rgb}
    if len(shapes) != 1:
      raise ValueError(
        f"{e.rgb_dir}:{e.rgb_split} has images of sizes {sorted(shapes)}; "
        f"set eval.image_size to evaluate them at one size"
      )
    self.rgb = np.stack(rgb)
    self.ir = (np.stack(ir) + 1) / 2 if ir else None
    self.ref_ir = None
    if e.ref_ir_dir:
      ref, _ = load_split(e.ref_ir_dir, e.ref_ir_split, "ir", 1, e.image_size, e.max_images)
      # Distribution metrics only need the pixel statistics: any mix of sizes is fine.
      self.ref_ir = [(x + 1) / 2 for x in ref]
    self.kid_features, self.kid_args = None, {}
    if kid_features is not None and self.ref_ir is not None:
      self.kid_features = kid_features
      self.ref_feats = self.kid_features(self.ref_ir)
      self.kid_args = {"num_subsets": e.kid_subsets, "subset_size": e.kid_subset_size}

  def translate(self, params: Any) -> np.ndarray:
    """Generator output on all eval RGB images, in [0,1], 8-bit quantised. [N,H,W,1]."""
    shards = sharding.num_batch_shards(self.mesh)
    bs = -(-self.batch_size // shards) * shards
    outs = []
    for start in range(0, len(self.rgb), bs):
      chunk = self.rgb[start : start + bs]
      padded = np.concatenate([chunk, np.repeat(chunk[-1:], bs - len(chunk), 0)])
      batch = sharding.place_batch({"rgb": padded}, self.mesh)
      outs.append(np.asarray(self.predict(params, batch["rgb"]))[: len(chunk)])
    return quantize((np.concatenate(outs) + 1) / 2)

  def run(self, params: Any) -> dict[str, float]:
    """Metrics of generator / gray / inverted: psnr, ssim (pairs) and distribution W1s."""
    rgb01 = (self.rgb + 1) / 2
    candidates = {
      "generator": self.translate(params),
      "gray": quantize(grayscale(rgb01)),
      "inverted": quantize(inverted_grayscale(rgb01)),
    }
    out = {}
    for name, fake in candidates.items():
      if self.ir is not None:
        p = psnr(fake, self.ir)
        out[f"{name}/psnr"] = float(np.mean(np.minimum(p, 100.0)))  # inf (exact) -> 100 dB
        out[f"{name}/ssim"] = float(np.mean(ssim(fake, self.ir)))
      if self.ref_ir is not None:
        dist = distribution_distances(fake, self.ref_ir)
        out.update({f"{name}/{k}": v for k, v in dist.items()})
      if self.kid_features is not None:
        out[f"{name}/kid"], out[f"{name}/kid_std"] = kid(
          self.kid_features(list(fake)), self.ref_feats, **self.kid_args
        )
    return out
