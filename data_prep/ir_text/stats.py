"""Measurements of one infrared image that IR captions and instructions are allowed to state.

Everything is in gray levels of the 8-bit image (0..255) or fractions of the image area; the
IR is often rendered or translated, so nothing here is a temperature.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

GRID = 3
# Row-major names of the 3x3 grid cells, as answers and caption phrases use them.
REGION_NAMES = (
  "upper left",
  "upper center",
  "upper right",
  "middle left",
  "center",
  "middle right",
  "lower left",
  "lower center",
  "lower right",
)

# Thresholds (gray levels / fractions). A region is only called brightest or darkest when it
# beats the runner-up by REGION_MARGIN, so a caption never hinges on noise.
REGION_MARGIN = 6.0
LEVEL_DARK, LEVEL_BRIGHT = 90.0, 165.0
CONTRAST_LOW, CONTRAST_HIGH = 22.0, 50.0
BLOB_SIGMAS = 2.0
BLOB_MIN_FRACTION = 0.0005
EDGE_GRAY_STEP = 12.0
EDGE_LOW, EDGE_HIGH = 0.06, 0.22
FLAT_STD = 4.0
FLAT_WINDOW = 7
FLAT_REGION_MARGIN = 0.1
BOX_MARGIN = 15.0


def decode_ir(data: bytes) -> np.ndarray:
  """Encoded PNG/JPEG bytes -> uint8 [H, W] grayscale."""
  with Image.open(io.BytesIO(data)) as im:
    return np.asarray(im.convert("L"), dtype=np.uint8)


def region_of(y: float, x: float, h: int, w: int) -> str:
  """Grid region name of pixel (y, x) in an [h, w] image."""
  row = min(GRID - 1, int(y * GRID / h))
  col = min(GRID - 1, int(x * GRID / w))
  return REGION_NAMES[row * GRID + col]


def _grid_means(img: np.ndarray) -> list[float]:
  h, w = img.shape
  ys = np.linspace(0, h, GRID + 1).astype(int)
  xs = np.linspace(0, w, GRID + 1).astype(int)
  return [
    float(img[ys[r] : ys[r + 1], xs[c] : xs[c + 1]].mean())
    for r in range(GRID)
    for c in range(GRID)
  ]


def _extreme_region(means: list[float], brightest: bool) -> tuple[str | None, float]:
  """(region, margin over the runner-up); region is None when the margin is too small."""
  order = np.argsort(means)[::-1] if brightest else np.argsort(means)
  margin = abs(means[order[0]] - means[order[1]])
  return (REGION_NAMES[order[0]] if margin >= REGION_MARGIN else None), round(margin, 1)


def _blobs(img: np.ndarray, bright: bool) -> dict:
  """Connected bright (or dark) components beyond BLOB_SIGMAS standard deviations."""
  f = img.astype(np.float32)
  mean, std = float(f.mean()), float(f.std())
  if std < 1.0:
    return {"count": 0, "threshold": None, "largest_fraction": 0.0, "largest_region": None}
  threshold = mean + BLOB_SIGMAS * std if bright else mean - BLOB_SIGMAS * std
  mask = f > threshold if bright else f < threshold
  labels, n = ndimage.label(mask)
  sizes = np.bincount(labels.ravel())[1:] if n else np.zeros(0, int)
  min_px = max(4, int(BLOB_MIN_FRACTION * img.size))
  keep = np.flatnonzero(sizes >= min_px) + 1
  out = {
    "count": len(keep),
    "threshold": round(threshold, 1),
    "largest_fraction": 0.0,
    "largest_region": None,
  }
  if len(keep):
    big = int(keep[np.argmax(sizes[keep - 1])])
    cy, cx = ndimage.center_of_mass(labels == big)
    out["largest_fraction"] = round(float(sizes[big - 1]) / img.size, 4)
    out["largest_region"] = region_of(cy, cx, *img.shape)
  return out


def _texture(img: np.ndarray) -> dict:
  """Edge density (Sobel) and low-texture (flat) area, overall and per grid cell."""
  f = img.astype(np.float32)
  # Sobel weights sum to 4 per direction; /8 turns the magnitude into roughly a gray step.
  mag = np.hypot(ndimage.sobel(f, 0), ndimage.sobel(f, 1)) / 8.0
  edges = mag > EDGE_GRAY_STEP
  local_mean = ndimage.uniform_filter(f, FLAT_WINDOW)
  local_var = ndimage.uniform_filter(f * f, FLAT_WINDOW) - local_mean**2
  flat = np.sqrt(np.maximum(local_var, 0)) < FLAT_STD
  flat_cells = sorted(zip(_grid_means(flat.astype(np.float32)), REGION_NAMES), reverse=True)
  # Name the flattest cell only when it clearly beats the runner-up.
  distinct = flat_cells[0][0] - flat_cells[1][0] >= FLAT_REGION_MARGIN
  return {
    "edge_density": round(float(edges.mean()), 4),
    "flat_fraction": round(float(flat.mean()), 4),
    "flattest_region": flat_cells[0][1] if distinct else None,
    "flattest_region_fraction": round(flat_cells[0][0], 4),
  }


def _box_contrast(img: np.ndarray, objects) -> dict[str, dict]:
  """Category -> mean gray inside its boxes minus the image mean (boxes are [x, y, w, h])."""
  h, w = img.shape
  sums: dict[str, list[float]] = {}
  for obj in objects or ():
    box = obj.get("bbox") or ()
    if len(box) != 4:
      continue
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(w, int(np.ceil(box[0] + box[2]))), min(h, int(np.ceil(box[1] + box[3])))
    if x1 > x0 and y1 > y0:
      patch = img[y0:y1, x0:x1]
      acc = sums.setdefault(str(obj.get("category", "")), [0.0, 0.0, 0])
      acc[0] += float(patch.sum())
      acc[1] += patch.size
      acc[2] += 1
  mean = float(img.mean())
  return {
    cat: {"boxes": n, "mean_minus_image": round(s / px - mean, 1)}
    for cat, (s, px, n) in sums.items()
  }


def measure_ir(img: np.ndarray, objects=None) -> dict:
  """All measurements of a uint8 [H, W] IR image (JSON-serializable dict).

  `objects` are meta["objects"] boxes ([{"category", "bbox": [x, y, w, h]}], pixels).
  """
  if img.ndim != 2 or img.dtype != np.uint8:
    raise ValueError(f"measure_ir wants a uint8 [H, W] image, got {img.dtype} {img.shape}")
  f = img.astype(np.float32)
  means = _grid_means(img)
  bright_region, bright_margin = _extreme_region(means, brightest=True)
  dark_region, dark_margin = _extreme_region(means, brightest=False)
  p5, p95 = np.percentile(f, [5, 95])
  stats = {
    "height": int(img.shape[0]),
    "width": int(img.shape[1]),
    "mean": round(float(f.mean()), 1),
    "std": round(float(f.std()), 1),
    "p5": round(float(p5), 1),
    "p95": round(float(p95), 1),
    "region_means": {n: round(m, 1) for n, m in zip(REGION_NAMES, means)},
    "brightest_region": bright_region,
    "brightest_margin": bright_margin,
    "darkest_region": dark_region,
    "darkest_margin": dark_margin,
    "bright_blobs": _blobs(img, bright=True),
    "dark_blobs": _blobs(img, bright=False),
    "box_contrast": _box_contrast(img, objects),
  }
  stats.update(_texture(img))
  return stats


def level_word(mean: float) -> str:
  return "dark" if mean < LEVEL_DARK else "bright" if mean > LEVEL_BRIGHT else "medium"


def contrast_word(std: float) -> str:
  return "low" if std < CONTRAST_LOW else "high" if std > CONTRAST_HIGH else "moderate"


def edge_word(density: float) -> str:
  return "sparse" if density < EDGE_LOW else "dense" if density > EDGE_HIGH else "moderate"
