"""Renders demo-world layouts as an RGB orthophoto and a physically motivated thermal image.

Thermal model: each material has an emissivity and a kinetic temperature (day / night); the
sensor sees eps*T^4 + (1-eps)*T_sky^4 (reflected cold sky), converted back to a brightness
temperature, blurred by the optics, with NETD noise, column stripes and vignetting, and
quantized with a fixed per-time-of-day gain (counts = (T_b - T_low) / K_per_count).
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageDraw

# name: (sRGB 0..1, coarse texture, fine texture, emissivity, T_day K, T_night K, T texture K)
# Temperatures follow the usual diurnal picture: dark dry surfaces heat most by day, water
# and tree canopies hold heat at night, bare metal has low emissivity and looks cold.
MATERIALS = {
  "grass": ((0.33, 0.50, 0.22), 0.10, 0.06, 0.98, 301, 283, 1.0),
  "grass_light": ((0.45, 0.62, 0.28), 0.06, 0.04, 0.98, 300, 283, 0.6),
  "grass_green": ((0.40, 0.66, 0.30), 0.03, 0.03, 0.98, 299, 283, 0.4),
  "crop_green": ((0.30, 0.52, 0.18), 0.08, 0.05, 0.98, 299, 284, 0.8),
  "crop_green_row": ((0.20, 0.38, 0.12), 0.08, 0.05, 0.98, 298, 284, 0.8),
  "crop_yellow": ((0.76, 0.68, 0.36), 0.08, 0.05, 0.96, 307, 283, 1.0),
  "crop_yellow_row": ((0.62, 0.54, 0.28), 0.08, 0.05, 0.96, 306, 283, 1.0),
  "plowed": ((0.52, 0.40, 0.28), 0.10, 0.08, 0.94, 311, 285, 1.5),
  "plowed_row": ((0.40, 0.30, 0.21), 0.10, 0.08, 0.94, 309, 286, 1.5),
  "tree_dark": ((0.12, 0.26, 0.11), 0.15, 0.12, 0.98, 296, 288, 0.8),
  "tree_mid": ((0.18, 0.34, 0.14), 0.15, 0.12, 0.98, 297, 288, 0.8),
  "tree_light": ((0.26, 0.42, 0.18), 0.15, 0.12, 0.98, 297, 288, 0.8),
  "shrub": ((0.30, 0.34, 0.20), 0.10, 0.10, 0.97, 299, 286, 0.8),
  "water": ((0.12, 0.27, 0.38), 0.06, 0.02, 0.99, 293, 292, 0.3),
  "foam": ((0.85, 0.89, 0.90), 0.05, 0.05, 0.99, 294, 291, 0.3),
  "sand": ((0.86, 0.79, 0.60), 0.05, 0.05, 0.93, 314, 283, 1.0),
  "soil": ((0.55, 0.43, 0.31), 0.10, 0.07, 0.94, 311, 284, 1.5),
  "dry_soil": ((0.70, 0.60, 0.45), 0.08, 0.06, 0.93, 315, 283, 1.5),
  "clay": ((0.72, 0.42, 0.28), 0.05, 0.04, 0.94, 313, 285, 0.8),
  "asphalt": ((0.30, 0.30, 0.32), 0.06, 0.06, 0.95, 322, 292, 1.0),
  "concrete": ((0.66, 0.65, 0.62), 0.05, 0.05, 0.92, 312, 289, 1.0),
  "paint": ((0.93, 0.93, 0.90), 0.02, 0.02, 0.92, 312, 289, 0.5),
  "roof_red": ((0.66, 0.27, 0.20), 0.06, 0.04, 0.90, 320, 282, 1.0),
  "roof_gray": ((0.44, 0.44, 0.46), 0.05, 0.04, 0.90, 321, 282, 1.0),
  "roof_brown": ((0.45, 0.32, 0.22), 0.06, 0.04, 0.90, 322, 282, 1.0),
  "roof_white": ((0.88, 0.88, 0.86), 0.03, 0.03, 0.90, 305, 281, 1.0),
  "roof_blue": ((0.25, 0.38, 0.60), 0.04, 0.03, 0.90, 318, 282, 1.0),
  "car_red": ((0.70, 0.10, 0.10), 0.0, 0.03, 0.60, 318, 284, 0.5),
  "car_white": ((0.92, 0.92, 0.92), 0.0, 0.03, 0.60, 310, 284, 0.5),
  "car_black": ((0.08, 0.08, 0.09), 0.0, 0.03, 0.60, 324, 284, 0.5),
  "car_blue": ((0.15, 0.25, 0.62), 0.0, 0.03, 0.60, 318, 284, 0.5),
  "car_silver": ((0.70, 0.71, 0.73), 0.0, 0.03, 0.45, 314, 284, 0.5),
  "plane_white": ((0.92, 0.92, 0.93), 0.0, 0.02, 0.45, 306, 281, 0.5),
  "plane_gray": ((0.70, 0.72, 0.74), 0.0, 0.02, 0.35, 308, 281, 0.5),
  "boat_white": ((0.94, 0.94, 0.94), 0.0, 0.02, 0.80, 306, 287, 0.5),
  "ship_hull": ((0.35, 0.22, 0.18), 0.0, 0.03, 0.70, 314, 288, 0.5),
  "tank_white": ((0.90, 0.90, 0.88), 0.02, 0.02, 0.30, 306, 281, 0.5),
  "tank_gray": ((0.68, 0.69, 0.70), 0.02, 0.02, 0.25, 310, 281, 0.5),
  "court_green": ((0.25, 0.45, 0.32), 0.02, 0.02, 0.93, 314, 285, 0.5),
  "court_green2": ((0.30, 0.55, 0.36), 0.02, 0.02, 0.93, 314, 285, 0.5),
  "court_blue": ((0.20, 0.35, 0.60), 0.02, 0.02, 0.93, 315, 285, 0.5),
}
MATERIAL_IDS = {name: i for i, name in enumerate(MATERIALS)}
_TABLE = np.array([(*m[0], *m[1:]) for m in MATERIALS.values()], np.float32)  # [M, 9]
_RGB, _TEX_C, _TEX_F = _TABLE[:, :3], _TABLE[:, 3], _TABLE[:, 4]
_EPS, _T_DAY, _T_NIGHT, _T_TEX = _TABLE[:, 5], _TABLE[:, 6], _TABLE[:, 7], _TABLE[:, 8]

# Sky brightness temperature seen in reflection (K) and the sensor's 8-bit window (K).
SKY_K = {"day": 265.0, "night": 245.0}
WINDOW_K = {"day": (280.0, 330.0), "night": (270.0, 300.0)}
NETD_K = 0.15  # temporal noise (std, K), an uncooled microbolometer in a UAV camera
STRIPE_K = 0.12  # fixed-pattern column offsets (std, K)
OPTICS_SIGMA_PX = 0.7
SUPERSAMPLE = 2  # layouts are drawn at 2x and averaged down (anti-aliasing)


def _scaled(shape, s: float) -> tuple:
  kind = shape[0]
  if kind == "ellipse":
    cx, cy, rx, ry = (v * s for v in shape[1])
    return [cx - rx, cy - ry, cx + rx, cy + ry]
  return [tuple(p) for p in (np.asarray(shape[1]) * s).tolist()]


def _draw(draw: ImageDraw.ImageDraw, shape, s: float, fill: int, shift=(0.0, 0.0)) -> None:
  kind = shape[0]
  if kind == "ellipse":
    x0, y0, x1, y1 = _scaled(shape, s)
    draw.ellipse([x0 + shift[0], y0 + shift[1], x1 + shift[0], y1 + shift[1]], fill=fill)
    return
  pts = [(x + shift[0], y + shift[1]) for x, y in _scaled(shape, s)]
  if kind == "poly":
    draw.polygon(pts, fill=fill)
  else:
    draw.line(pts, fill=fill, width=max(1, round(shape[2] * s)), joint="curve")


def rasterize(layout, size: int, sun: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
  """Layout -> (material ids [S, S] uint8, shadow mask [S, S] bool) at S = size * SUPERSAMPLE.

  Shadows are the footprints of raised elements moved by height * sun (image widths);
  anything drawn later on top of a shadow is lit again.
  """
  s = size * SUPERSAMPLE
  labels, shadow = Image.new("L", (s, s)), Image.new("L", (s, s))
  dl, ds = ImageDraw.Draw(labels), ImageDraw.Draw(shadow)
  shaded = False  # nothing to re-light until the first shadow is cast
  for e in layout.elements:
    mid = MATERIAL_IDS[e.material]
    if e.height > 0:
      shaded = True
      shift = (e.height * sun[0] * s, e.height * sun[1] * s)
      for shape in e.shapes:
        _draw(ds, shape, s, 255, shift)
    for shape in e.shapes:
      _draw(dl, shape, s, mid)
      if shaded:
        _draw(ds, shape, s, 0)
  return np.asarray(labels), np.asarray(shadow) > 0


def _smooth_noise(rng: np.random.Generator, s: int, cell: int) -> np.ndarray:
  """Zero-mean unit-ish value noise [s, s] with features about `cell` pixels wide."""
  n = max(2, s // cell + 1)
  small = Image.fromarray(rng.standard_normal((n, n)).astype(np.float32))
  return np.asarray(small.resize((s, s), Image.BILINEAR))


def _downsample(x: np.ndarray) -> np.ndarray:
  """[S*k, S*k, ...] -> [S, S, ...] box average over k x k blocks."""
  k = SUPERSAMPLE
  # Strided slices summed beat reshape().mean() over non-contiguous axes by ~5x.
  return sum(x[i::k, j::k] for i in range(k) for j in range(k)) * (1.0 / (k * k))


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur of [H, W] with edge padding (sigma in pixels)."""
  r = max(1, int(np.ceil(2.5 * sigma)))
  k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  k /= k.sum()
  p = np.pad(x, r, mode="edge")
  h, w = x.shape
  rows = sum(k[i] * p[:, i : i + w] for i in range(2 * r + 1))
  return sum(k[i] * rows[i : i + h] for i in range(2 * r + 1))


_RGB_LIT_SHADED = np.stack([_RGB, _RGB * np.array([0.50, 0.53, 0.62], np.float32)], 1).reshape(
  -1, 3
)


@functools.lru_cache(maxsize=8)
def _grid(s: int) -> tuple[np.ndarray, np.ndarray]:
  """(y, x) pixel-centre coordinates [s, s] in image widths."""
  yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
  return yy, xx


def render_rgb(labels, shadow, rng: np.random.Generator) -> np.ndarray:
  """Material ids + shadow mask [S, S] -> sRGB image [S/k, S/k, 3] uint8 (daylight)."""
  s = labels.shape[0]
  coarse = _smooth_noise(rng, s, 12)
  fine = rng.standard_normal((s, s), np.float32)
  gain = 1 + _TEX_C[labels] * coarse + _TEX_F[labels] * fine  # [S, S] texture
  water = labels == MATERIAL_IDS["water"]
  if water.any():  # wind ripples: oriented sinusoid, slightly warped by the coarse noise
    yy, xx = _grid(s)
    a = rng.uniform(0, np.pi)
    # 14 crests per image width; Python floats keep the arithmetic in float32.
    kx, ky = float(2 * np.pi * 14 * np.cos(a)), float(2 * np.pi * 14 * np.sin(a))
    ripple = np.sin(xx[water] * kx + yy[water] * ky + 1.5 * coarse[water])
    gain[water] *= 1 + 0.08 * ripple
  # Shadows are lit by blue skylight only: one lookup in a [2M, 3] table (lit, shaded).
  rgb = _RGB_LIT_SHADED[labels.astype(np.intp) * 2 + shadow] * gain[..., None]
  rgb = _downsample(rgb) * rng.uniform(0.92, 1.08)
  return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def render_thermal(
  labels, shadow, rng: np.random.Generator, time_of_day: str
) -> tuple[np.ndarray, dict]:
  """Material ids + shadow mask [S, S] -> 8-bit thermal image [S/k, S/k] and sensor facts.

  Returns (counts uint8 [S/k, S/k], {"sky_k", "window_k", "ambient_offset_k", ...}).
  """
  s = labels.shape[0]
  t_kin = (_T_DAY if time_of_day == "day" else _T_NIGHT)[labels]
  offset = rng.normal(0.0, 1.5)  # weather / season shifts every surface together (K)
  t_kin = t_kin + offset + _T_TEX[labels] * _smooth_noise(rng, s, 10)
  if time_of_day == "day":
    t_kin = t_kin - 6.0 * shadow  # shaded ground misses the sun's heating
  eps, sky = _EPS[labels], SKY_K[time_of_day]
  # Stefan-Boltzmann: sigma cancels when converting radiance back to brightness temperature.
  radiance = eps * t_kin**4 + (1 - eps) * sky**4
  t_b = _downsample(radiance**0.25)
  t_b = gaussian_blur(t_b, OPTICS_SIGMA_PX)
  h, w = t_b.shape
  yy, xx = _grid(h)
  r2 = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 4  # 1 at the edge midpoints
  t_b = t_b - 1.5 * r2  # vignetting (cos^4 falloff of the lens, ~1.5 K at the edge midpoints)
  t_b = t_b + rng.normal(0, STRIPE_K, (1, w)) + rng.normal(0, NETD_K, (h, w))
  lo, hi = WINDOW_K[time_of_day]
  counts = np.clip((t_b - lo) / (hi - lo) * 255 + 0.5, 0, 255).astype(np.uint8)
  return counts, {
    "sky_k": sky,
    "window_k": [lo, hi],
    "ambient_offset_k": round(offset, 2),
    "netd_k": NETD_K,
    "kelvin_per_count": round((hi - lo) / 255, 4),
  }


def png_bytes(image: np.ndarray) -> bytes:
  """uint8 [H, W] or [H, W, 3] -> PNG bytes (deterministic for equal pixels)."""
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG", compress_level=1)
  return buf.getvalue()
