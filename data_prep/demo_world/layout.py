"""Seeded scene layouts of the demo world: UCM-like land-use scenes as lists of elements.

Coordinates are in image widths ([0, 1], x right, y down), so one layout renders at any size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

ROOF_MATERIALS = ("roof_red", "roof_gray", "roof_brown", "roof_white", "roof_blue")
CAR_MATERIALS = ("car_red", "car_white", "car_black", "car_blue", "car_silver")


@dataclasses.dataclass
class Element:
  """One semantic thing in a scene (a field, a road, one car, a clump of trees).

  shapes: ("poly", [N, 2]) | ("ellipse", (cx, cy, rx, ry)) | ("line", [N, 2], width),
  all in image widths. `height` is the shadow length in image widths (0 = flat).
  """

  cls: str
  material: str
  shapes: list
  category: str | None = None
  height: float = 0.0

  def box(self) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) in image widths, clipped to the image."""
    xs, ys = [], []
    for s in self.shapes:  # plain Python: boxes are needed for every element of every sample
      if s[0] == "ellipse":
        cx, cy, rx, ry = s[1]
        xs += [cx - rx, cx + rx]
        ys += [cy - ry, cy + ry]
      else:
        half = s[2] / 2 if s[0] == "line" else 0.0
        for x, y in np.asarray(s[1]).tolist():
          xs += [x - half, x + half]
          ys += [y - half, y + half]
    clip = lambda v: min(1.0, max(0.0, v))
    return clip(min(xs)), clip(min(ys)), clip(max(xs)), clip(max(ys))


@dataclasses.dataclass
class Layout:
  scene_class: str
  elements: list[Element] = dataclasses.field(default_factory=list)
  # Scene-level facts the captions may state (sides, directions, counts of regions).
  facts: dict[str, Any] = dataclasses.field(default_factory=dict)

  def add(self, cls, material, shapes, category=None, height=0.0) -> None:
    if len(shapes):  # e.g. a field too narrow for a single crop row draws nothing
      self.elements.append(Element(cls, str(material), list(shapes), category, height))


# ----------------------------------------------------------------------------
# Geometry.
# ----------------------------------------------------------------------------


def place(local, cx: float, cy: float, angle: float = 0.0, scale: float = 1.0) -> np.ndarray:
  """Local outline [N, 2] -> rotated (radians), scaled, translated outline [N, 2]."""
  c, s = np.cos(angle), np.sin(angle)
  return np.asarray(local, np.float64) * scale @ np.array([[c, s], [-s, c]]) + (cx, cy)


def rect(cx, cy, length, width, angle=0.0) -> tuple:
  half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * (length / 2, width / 2)
  return ("poly", place(half, cx, cy, angle))


def circle(cx, cy, r) -> tuple:
  return ("ellipse", (cx, cy, r, r))


def blob(rng, cx, cy, r, n=10, jitter=0.3) -> tuple:
  """Irregular closed region around (cx, cy) with mean radius r."""
  a = np.sort(rng.uniform(0, 2 * np.pi, n))
  rr = r * (1 + jitter * rng.uniform(-1, 1, n))
  return ("poly", np.stack([cx + rr * np.cos(a), cy + rr * np.sin(a)], 1))


def _mirror(half):
  half = np.asarray(half, np.float64)
  other = half[-2:0:-1] * (1, -1)
  return np.concatenate([half, other])


# Outlines with the nose at +x, length 1.
AIRPLANE = _mirror(
  [
    (0.5, 0),
    (0.44, 0.045),
    (0.12, 0.05),
    (-0.1, 0.48),
    (-0.18, 0.48),
    (-0.07, 0.05),
    (-0.36, 0.045),
    (-0.46, 0.18),
    (-0.52, 0.18),
    (-0.5, 0.0),
  ]
)
SHIP = _mirror([(0.5, 0), (0.3, 0.5), (-0.5, 0.5), (-0.5, 0.0)])


def side_of(x: float, y: float) -> str:
  """Where a point (image widths) is, as a phrase: 'on the left', 'at the top right'..."""
  h = "left" if x < 0.36 else ("right" if x > 0.64 else "")
  v = "top" if y < 0.36 else ("bottom" if y > 0.64 else "")
  if h and v:
    return f"at the {v} {h}"
  if h or v:
    return f"on the {h}" if h else f"at the {v}"
  return "in the center"


def _trees(rng, lay, n, x0, y0, x1, y1, r=(0.03, 0.06), cls="tree"):
  for _ in range(n):
    cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
    lay.add(
      cls,
      rng.choice(["tree_dark", "tree_mid"]),
      [blob(rng, cx, cy, rng.uniform(*r), n=8, jitter=0.2)],
      height=0.012,
    )


def _cars_along(rng, lay, p0, p1, n, gap=0.11, length=0.065):
  """Up to n cars on the segment p0 -> p1 (image widths), spaced at least `gap` apart."""
  p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
  d = p1 - p0
  ang = np.arctan2(d[1], d[0])
  slots = np.arange(0.06, np.linalg.norm(d) - 0.06, gap) / np.linalg.norm(d)
  for t in rng.permutation(slots)[:n]:
    cx, cy = p0 + t * d
    if 0.04 < cx < 0.96 and 0.04 < cy < 0.96:
      lay.add(
        "car",
        rng.choice(CAR_MATERIALS),
        [rect(cx, cy, length, length * 0.5, ang)],
        category="car",
        height=0.006,
      )


# ----------------------------------------------------------------------------
# Scenes. Each fills `lay` back to front from the seeded rng.
# ----------------------------------------------------------------------------


def _agricultural(rng, lay):
  lay.add("bare soil", "soil", [rect(0.5, 0.5, 1.2, 1.2)])
  nx, ny = rng.integers(2, 4), rng.integers(2, 4)
  xs = np.sort(np.r_[0, rng.uniform(0.15, 0.85, nx - 1), 1]) if nx > 2 else np.r_[0, 0.5, 1]
  ys = np.linspace(0, 1, ny + 1) + np.r_[0, rng.uniform(-0.06, 0.06, ny - 1), 0]
  crops = []
  for i in range(nx):
    for j in range(ny):
      x0, x1, y0, y1 = xs[i] + 0.012, xs[i + 1] - 0.012, ys[j] + 0.012, ys[j + 1] - 0.012
      mat = rng.choice(["crop_green", "crop_yellow", "plowed"])
      crops.append(str(mat))
      lay.add("field", mat, [rect((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0)])
      rows, vertical = [], rng.random() < 0.5
      for t in np.arange(x0 if vertical else y0, x1 if vertical else y1, 0.028):
        rows.append(("line", [(t, y0), (t, y1)] if vertical else [(x0, t), (x1, t)], 0.008))
      lay.add("crop rows", f"{mat}_row", rows)
  lay.facts.update(fields=int(nx * ny), crops=sorted(set(crops)))


def _airplane(rng, lay):
  lay.add("grass", "grass", [rect(0.5, 0.5, 1.2, 1.2)])
  lay.add("apron", "concrete", [rect(0.5, 0.55, 1.2, 0.8)])
  if rng.random() < 0.6:
    lay.add("runway", "asphalt", [rect(0.5, 0.07, 1.2, 0.12)])
    lay.add(
      "runway marking",
      "paint",
      [("line", [(x, 0.07), (x + 0.06, 0.07)], 0.01) for x in np.arange(0.02, 1, 0.12)],
    )
    lay.facts["runway"] = "at the top"
  n = int(rng.integers(1, 5))
  xs = (np.arange(n) + 0.5) / n
  ang = rng.choice([-np.pi / 2, np.pi / 2, 0.0]) + rng.normal(0, 0.08)
  size = min(0.34, 0.9 / n) * rng.uniform(0.85, 1.0)
  for k, x in enumerate(xs):
    y = 0.55 + (0.12 * (k % 2) if n > 2 else 0.0) + rng.uniform(-0.05, 0.05)
    lay.add(
      "airplane",
      rng.choice(["plane_white", "plane_gray"]),
      [("poly", place(AIRPLANE, x, y, ang, size))],
      category="airplane",
      height=0.012,
    )


def _baseballdiamond(rng, lay):
  lay.add("grass", "grass", [rect(0.5, 0.5, 1.2, 1.2)])
  cx, cy, r = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6), rng.uniform(0.22, 0.3)
  ang = rng.uniform(0, 2 * np.pi)
  lay.add("infield", "clay", [("ellipse", (cx, cy, r, r))])
  lay.add("infield grass", "grass_light", [rect(cx, cy, r * 0.9, r * 0.9, ang)])
  lay.add(
    "baseline",
    "paint",
    [
      (
        "line",
        place([(0.64, 0.0), (0, 0.64), (-0.64, 0), (0, -0.64), (0.64, 0)], cx, cy, ang, r),
        0.008,
      )
    ],
  )
  lay.add("pitcher mound", "clay", [circle(cx, cy, r * 0.1)])
  side = rng.choice(["left", "right"])
  x0, x1 = (0.0, 0.15) if side == "left" else (0.85, 1.0)
  _trees(rng, lay, int(rng.integers(3, 7)), x0, 0.0, x1, 1.0)
  lay.facts["trees_side"] = f"on the {side}"


def _beach(rng, lay):
  side = str(rng.choice(["left", "right", "top", "bottom"]))
  lay.add("vegetation", "grass", [rect(0.5, 0.5, 1.2, 1.2)])
  t = np.linspace(-0.1, 1.1, 14)
  edges = []
  for depth, mat, cls in (
    (rng.uniform(0.55, 0.75), "sand", "beach"),
    (rng.uniform(0.3, 0.45), "foam", "surf"),
    (None, "water", "sea"),
  ):
    d = depth if depth is not None else edges[-1] - 0.025
    d = d + 0.03 * np.sin(t * rng.uniform(6, 12) + rng.uniform(0, 6))
    edges.append(d)
    far = np.full_like(t, -0.2)
    pts = np.concatenate([np.stack([d, t], 1), np.stack([far, t], 1)[::-1]])
    if side in ("right", "bottom"):
      pts[:, 0] = 1 - pts[:, 0]
    if side in ("top", "bottom"):
      pts = pts[:, ::-1]
    lay.add(cls, mat, [("poly", pts)])
  lay.facts.update(sea_side=f"on the {side}" if side in ("left", "right") else f"at the {side}")


def _chaparral(rng, lay):
  lay.add("dry ground", "dry_soil", [rect(0.5, 0.5, 1.2, 1.2)])
  for _ in range(int(rng.integers(15, 35))):
    lay.add(
      "shrub",
      "shrub",
      [blob(rng, *rng.uniform(0, 1, 2), rng.uniform(0.015, 0.04), 7)],
      height=0.005,
    )


def _houses_along(rng, lay, p0, p1, offset, n, size=(0.08, 0.11)):
  """Houses on one side (offset, image widths) of a road p0 -> p1, evenly spaced."""
  p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
  d = (p1 - p0) / np.linalg.norm(p1 - p0)
  normal = np.array([-d[1], d[0]])
  ang = np.arctan2(d[1], d[0])
  count = 0
  for t in np.linspace(0, 1, n + 2)[1:-1]:
    c = p0 + t * (p1 - p0) + normal * offset
    w, h = rng.uniform(*size), rng.uniform(*size)
    if 0.06 < c[0] < 0.94 and 0.06 < c[1] < 0.94:
      lay.add(
        "house",
        rng.choice(ROOF_MATERIALS, p=[0.3, 0.3, 0.2, 0.1, 0.1]),
        [rect(c[0], c[1], w, h, ang)],
        category="building",
        height=0.02,
      )
      count += 1
  return count


def _denseresidential(rng, lay):
  lay.add("lawn", "grass", [rect(0.5, 0.5, 1.2, 1.2)])
  vertical = rng.random() < 0.5
  roads = rng.uniform([0.2, 0.7], [0.3, 0.8])  # >= 0.4 apart: facing houses never touch
  for r in roads:
    p0, p1 = ((r, -0.1), (r, 1.1)) if vertical else ((-0.1, r), (1.1, r))
    lay.add("road", "asphalt", [("line", [p0, p1], 0.09)])
  for r in roads:
    p0, p1 = ((r, 0), (r, 1)) if vertical else ((0, r), (1, r))
    for off in (-0.1, 0.1):
      _houses_along(rng, lay, p0, p1, off, int(rng.integers(6, 9)), size=(0.07, 0.095))
  for r in roads:
    p0, p1 = ((r + 0.02, 0), (r + 0.02, 1)) if vertical else ((0, r + 0.02), (1, r + 0.02))
    _cars_along(rng, lay, p0, p1, int(rng.integers(0, 3)))
  lay.facts["roads"] = "vertical" if vertical else "horizontal"


def _forest(rng, lay):
  lay.add("forest floor", "tree_dark", [rect(0.5, 0.5, 1.2, 1.2)])
  if rng.random() < 0.4:
    y = rng.uniform(0.2, 0.8)
    lay.add(
      "trail", "soil", [("line", [(-0.1, y), (0.5, y + rng.uniform(-0.2, 0.2)), (1.1, y)], 0.035)]
    )
    lay.facts["trail"] = True
  for _ in range(int(rng.integers(40, 70))):
    cx, cy = rng.uniform(-0.05, 1.05, 2)
    lay.add(
      "tree",
      rng.choice(["tree_dark", "tree_mid", "tree_light"], p=[0.4, 0.4, 0.2]),
      [blob(rng, cx, cy, rng.uniform(0.04, 0.08), 8, 0.2)],
      height=0.01,
    )


def _freeway(rng, lay):
  lay.add("grass", "grass", [rect(0.5, 0.5, 1.2, 1.2)])
  ang = float(rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4]))
  d, n = np.array([np.cos(ang), np.sin(ang)]), np.array([-np.sin(ang), np.cos(ang)])
  c = np.array([0.5, 0.5]) + n * rng.uniform(-0.1, 0.1)
  for off in (-0.11, 0.11):
    a, b = c + n * off - d * 0.9, c + n * off + d * 0.9
    lay.add("carriageway", "asphalt", [("line", [a, b], 0.16)])
    lay.add(
      "lane marking",
      "paint",
      [("line", [a + d * t, a + d * (t + 0.04)], 0.006) for t in np.arange(0, 1.8, 0.1)],
    )
  for off in (-0.15, -0.07, 0.07, 0.15):
    _cars_along(
      rng, lay, c + n * off - d * 0.75, c + n * off + d * 0.75, int(rng.integers(0, 4)), gap=0.13
    )
  _trees(rng, lay, int(rng.integers(2, 6)), 0, 0, 1, 1)
  lay.elements = [e for e in lay.elements if not (e.cls == "tree" and _near_line(e, c, n, 0.3))]
  names = {0.0: "horizontally", np.pi / 2: "vertically"}
  lay.facts["direction"] = names.get(ang, "diagonally")


def _near_line(e, c, n, dist):
  x0, y0, x1, y1 = e.box()
  return abs(np.dot(np.array([(x0 + x1) / 2, (y0 + y1) / 2]) - c, n)) < dist


def _golfcourse(rng, lay):
  lay.add("rough", "grass", [rect(0.5, 0.5, 1.2, 1.2)])
  lay.add("fairway", "grass_light", [blob(rng, 0.5, 0.5, rng.uniform(0.25, 0.35), 12, 0.25)])
  g = rng.uniform(0.3, 0.7, 2)
  lay.add("green", "grass_green", [circle(*g, 0.06)])
  for _ in range(int(rng.integers(1, 4))):
    lay.add("bunker", "sand", [blob(rng, *(g + rng.uniform(-0.14, 0.14, 2)), 0.035, 7, 0.3)])
  if rng.random() < 0.5:
    p = rng.choice([0.15, 0.85], 2)
    lay.add("pond", "water", [blob(rng, *p, rng.uniform(0.08, 0.13), 10, 0.2)])
    lay.facts["pond"] = side_of(*p)
  _trees(rng, lay, int(rng.integers(3, 8)), 0, 0, 1, 1)


def _harbor(rng, lay):
  lay.add("water", "water", [rect(0.5, 0.5, 1.2, 1.2)])
  side = str(rng.choice(["left", "right", "top", "bottom"]))
  flip = lambda p: _orient(p, side)
  depth = rng.uniform(0.15, 0.25)
  lay.add(
    "quay", "concrete", [("poly", flip([(-0.1, -0.1), (depth, -0.1), (depth, 1.1), (-0.1, 1.1)]))]
  )
  n_piers = int(rng.integers(2, 4))
  slots = []
  for y in (np.arange(n_piers) + 0.5) / n_piers:
    length = rng.uniform(0.45, 0.65)
    lay.add(
      "pier",
      "concrete",
      [
        (
          "poly",
          flip(
            [
              (depth, y - 0.025),
              (depth + length, y - 0.025),
              (depth + length, y + 0.025),
              (depth, y + 0.025),
            ]
          ),
        )
      ],
    )
    for x in np.arange(depth + 0.09, depth + length - 0.05, 0.15):
      slots += [(x, y - 0.07), (x, y + 0.07)]
  n = int(rng.integers(1, min(9, len(slots) + 1)))
  for k in rng.permutation(len(slots))[:n]:
    ((cx, cy),) = flip([slots[k]])
    angle = 0.0 if side in ("left", "right") else np.pi / 2
    lay.add(
      "ship",
      rng.choice(["boat_white", "ship_hull"], p=[0.7, 0.3]),
      [("poly", place(SHIP * (1, 0.35), cx, cy, angle, 0.12))],
      category="ship",
      height=0.006,
    )
  lay.facts["quay_side"] = f"on the {side}" if side in ("left", "right") else f"at the {side}"


def _orient(points, side: str) -> np.ndarray:
  """Points drawn for a 'left' layout [N, 2] -> the same layout against `side`."""
  p = np.array(points, np.float64)
  if side in ("right", "bottom"):
    p[:, 0] = 1 - p[:, 0]
  if side in ("top", "bottom"):
    p = p[:, ::-1].copy()
  return p


def _intersection(rng, lay):
  lay.add("ground", "grass", [rect(0.5, 0.5, 1.2, 1.2)])
  c = rng.uniform(0.4, 0.6, 2)
  corners = [(0.17, 0.17), (0.83, 0.17), (0.17, 0.83), (0.83, 0.83)]
  for x, y in corners:
    if rng.random() < 0.7:
      lay.add(
        "building",
        rng.choice(["roof_gray", "roof_white", "roof_brown"]),
        [
          rect(
            x + (c[0] - 0.5) * 0.5,
            y + (c[1] - 0.5) * 0.5,
            rng.uniform(0.14, 0.22),
            rng.uniform(0.14, 0.22),
          )
        ],
        category="building",
        height=0.03,
      )
  lay.add(
    "road",
    "asphalt",
    [("line", [(-0.1, c[1]), (1.1, c[1])], 0.16), ("line", [(c[0], -0.1), (c[0], 1.1)], 0.16)],
  )
  w = 0.08
  stripes = []
  for s in np.arange(-0.065, 0.07, 0.026):
    for sign in (-1, 1):
      stripes.append(
        (
          "line",
          [(c[0] + s, c[1] + sign * (w + 0.02)), (c[0] + s, c[1] + sign * (w + 0.045))],
          0.012,
        )
      )
      stripes.append(
        (
          "line",
          [(c[0] + sign * (w + 0.02), c[1] + s), (c[0] + sign * (w + 0.045), c[1] + s)],
          0.012,
        )
      )
  lay.add("crosswalk", "paint", stripes)
  for p0, p1 in (
    ((0, c[1] + 0.04), (c[0] - 0.15, c[1] + 0.04)),
    ((c[0] + 0.15, c[1] - 0.04), (1, c[1] - 0.04)),
    ((c[0] - 0.04, 0), (c[0] - 0.04, c[1] - 0.15)),
    ((c[0] + 0.04, c[1] + 0.15), (c[0] + 0.04, 1)),
  ):
    _cars_along(rng, lay, p0, p1, int(rng.integers(0, 3)), gap=0.1)


def _mediumresidential(rng, lay):
  lay.add("lawn", "grass", [rect(0.5, 0.5, 1.2, 1.2)])
  vertical = rng.random() < 0.5
  r = rng.uniform(0.42, 0.58)
  p0, p1 = ((r, 0.0), (r, 1.0)) if vertical else ((0.0, r), (1.0, r))
  lay.add("road", "asphalt", [("line", [p0, p1], 0.08)])
  for off in (-0.2, 0.2):
    _houses_along(rng, lay, p0, p1, off, int(rng.integers(2, 5)), size=(0.1, 0.14))
  for off in (-0.38, 0.38):
    lo, hi = r + off - 0.05, r + off + 0.05
    box = (lo, 0, hi, 1) if vertical else (0, lo, 1, hi)
    _trees(rng, lay, int(rng.integers(1, 4)), *box)
  _cars_along(
    rng,
    lay,
    (p0[0] + 0.02 * vertical, p0[1] + 0.02 * (not vertical)),
    (p1[0] + 0.02 * vertical, p1[1] + 0.02 * (not vertical)),
    int(rng.integers(0, 3)),
  )
  lay.facts["road"] = "vertically" if vertical else "horizontally"


def _parkinglot(rng, lay):
  lay.add("grass", "grass", [rect(0.5, 0.5, 1.2, 1.2)])
  side = str(rng.choice(["left", "right", "top", "bottom"]))
  margin = rng.uniform(0.15, 0.25)
  lay.add(
    "parking lot",
    "asphalt",
    [("poly", _orient([(margin, -0.1), (1.1, -0.1), (1.1, 1.1), (margin, 1.1)], side))],
  )
  _trees(rng, lay, int(rng.integers(2, 5)), *_box_on(side, margin))
  vertical_rows = side in ("top", "bottom")
  occupancy = rng.uniform(0.15, 0.6)
  lines, cars, empty = [], [], 0
  for row in np.arange(margin + 0.1, 0.95, 0.25):
    for t in np.arange(0.07, 0.95, 0.095):
      for sgn in (-1, 1):
        if row + sgn * 0.06 > 0.94:
          continue
        lines.append(
          ("line", _orient([(row, t - 0.0475), (row + sgn * 0.11, t - 0.0475)], side), 0.006)
        )
        if rng.random() < occupancy:
          cars.append(_orient([(row + sgn * 0.06, t)], side)[0])
        else:
          empty += 1
  lay.add("parking lines", "paint", lines)
  for cx, cy in cars:
    lay.add(
      "car",
      rng.choice(CAR_MATERIALS),
      [rect(cx, cy, 0.08, 0.042, 0.0 if not vertical_rows else np.pi / 2)],
      category="car",
      height=0.006,
    )
  lay.facts["empty_stalls"] = empty
  lay.facts["grass_side"] = f"on the {side}" if side in ("left", "right") else f"at the {side}"


def _box_on(side, margin):
  """(x0, y0, x1, y1) of the strip of width margin against `side`."""
  m = margin - 0.06
  return {
    "left": (0, 0, m, 1),
    "right": (1 - m, 0, 1, 1),
    "top": (0, 0, 1, m),
    "bottom": (0, 1 - m, 1, 1),
  }[side]


def _river(rng, lay):
  lay.add("land", rng.choice(["grass", "tree_dark"], p=[0.6, 0.4]), [rect(0.5, 0.5, 1.2, 1.2)])
  vertical = rng.random() < 0.5
  t = np.linspace(-0.1, 1.1, 12)
  u = 0.5 + rng.uniform(0.08, 0.18) * np.sin(t * rng.uniform(3, 7) + rng.uniform(0, 6))
  pts = np.stack([u, t] if vertical else [t, u], 1)
  width = rng.uniform(0.12, 0.24)
  if rng.random() < 0.5:
    lay.add("river bank", "sand", [("line", pts, width + 0.05)])
    lay.facts["sandy_banks"] = True
  lay.add("river", "water", [("line", pts, width)])
  for _ in range(int(rng.integers(4, 10))):
    k = rng.integers(1, 11)
    off = rng.choice([-1, 1]) * (width / 2 + rng.uniform(0.07, 0.2))
    x, y = (pts[k, 0] + off, pts[k, 1]) if vertical else (pts[k, 0], pts[k, 1] + off)
    lay.add(
      "tree", rng.choice(["tree_dark", "tree_mid"]), [blob(rng, x, y, 0.05, 8, 0.2)], height=0.012
    )
  lay.facts["direction"] = "from top to bottom" if vertical else "from left to right"


def _storagetanks(rng, lay):
  lay.add("ground", rng.choice(["soil", "dry_soil"]), [rect(0.5, 0.5, 1.2, 1.2)])
  lay.add("yard", "concrete", [rect(0.5, 0.5, 0.9, 0.9)])
  nx, ny = int(rng.integers(1, 4)), int(rng.integers(1, 4))
  r = min(0.8 / nx, 0.8 / ny) * rng.uniform(0.28, 0.38)
  for i in range(nx):
    for j in range(ny):
      if nx * ny > 2 and rng.random() < 0.15:
        continue
      lay.add(
        "storage tank",
        rng.choice(["tank_white", "tank_white", "tank_gray"]),
        [circle(0.1 + 0.8 * (i + 0.5) / nx, 0.1 + 0.8 * (j + 0.5) / ny, r)],
        category="storage_tank",
        height=r * 0.5,
      )


def _tenniscourt(rng, lay):
  lay.add("ground", "grass", [rect(0.5, 0.5, 1.2, 1.2)])
  n = int(rng.integers(1, 5))
  vertical = rng.random() < 0.5
  cols = 2 if n == 4 else n
  rows = 2 if n == 4 else 1
  lay.add("court surround", rng.choice(["clay", "court_green"]), [rect(0.5, 0.5, 0.88, 0.88)])
  mat = rng.choice(["court_blue", "court_green2"])
  for k in range(n):
    u = (k % cols + 0.5) / cols
    v = (k // cols + 0.5) / rows
    cx, cy = (0.1 + 0.8 * u, 0.1 + 0.8 * v) if not vertical else (0.1 + 0.8 * v, 0.1 + 0.8 * u)
    length, width = min(0.36, 0.8 / rows), min(0.18, 0.7 / cols)
    ang = 0.0 if vertical else np.pi / 2
    lay.add("tennis court", mat, [rect(cx, cy, length, width, ang)], category="tennis_court")
    outline = place([(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5), (-0.5, -0.5)], 0, 0, 0) * (
      length * 0.9,
      width * 0.85,
    )
    lay.add(
      "court lines",
      "paint",
      [
        ("line", place(outline, cx, cy, ang), 0.006),
        ("line", place([(0, -width / 2), (0, width / 2)], cx, cy, ang), 0.006),
      ],
    )
  _trees(rng, lay, int(rng.integers(0, 4)), 0, 0, 1, 0.05)


SCENES: dict[str, Callable] = {
  "agricultural": _agricultural,
  "airplane": _airplane,
  "baseballdiamond": _baseballdiamond,
  "beach": _beach,
  "chaparral": _chaparral,
  "denseresidential": _denseresidential,
  "forest": _forest,
  "freeway": _freeway,
  "golfcourse": _golfcourse,
  "harbor": _harbor,
  "intersection": _intersection,
  "mediumresidential": _mediumresidential,
  "parkinglot": _parkinglot,
  "river": _river,
  "storagetanks": _storagetanks,
  "tenniscourt": _tenniscourt,
}
SCENE_CLASSES = tuple(SCENES)


def make_layout(rng: np.random.Generator, scene_class: str) -> Layout:
  """A seeded layout of one scene class (UCM-style names, see SCENE_CLASSES)."""
  if scene_class not in SCENES:
    raise ValueError(f"unknown scene class {scene_class!r}; choose from {SCENE_CLASSES}")
  lay = Layout(scene_class)
  SCENES[scene_class](rng, lay)
  return lay
