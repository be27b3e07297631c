"""The offline IR caption engine: measured facts -> varied sentences, each with its provenance.

A fact is one measurement with several phrasings (independent clauses); a caption joins 1-3
facts with an opener/structure chosen by a per-record RNG, so re-runs are identical.
"""

from __future__ import annotations

import hashlib
import random

from data_prep.ir_text import stats as ir_stats
from data_prep.ir_text.lexicon import number_word

ENGINE = "ir_template_v1"

_LEVEL = {
  "dark": [
    "the image is dominated by dark gray tones",
    "overall intensity is low, with a mean gray level of {mean:.0f}",
    "most of the scene is rendered in dark shades",
    "the infrared response is mostly dark",
  ],
  "medium": [
    "the scene is rendered in medium gray tones",
    "overall intensity sits in the middle of the gray scale",
    "most surfaces appear in mid-gray shades",
    "the mean gray level is a moderate {mean:.0f}",
  ],
  "bright": [
    "the image is dominated by bright, high-intensity tones",
    "overall intensity is high, with a mean gray level of {mean:.0f}",
    "most of the scene is rendered in light shades",
    "the infrared response is bright over most of the frame",
  ],
}
_CONTRAST = {
  "low": [
    "contrast is low, with intensities confined to a narrow gray range",
    "the gray values vary little across the scene",
    "the picture looks flat and low in contrast",
  ],
  "moderate": [
    "contrast is moderate",
    "bright and dark areas are moderately separated",
    "intensities span a moderate range from {p5:.0f} to {p95:.0f}",
  ],
  "high": [
    "strong contrast separates bright and dark areas",
    "intensities span a wide range from {p5:.0f} to {p95:.0f}",
    "the picture shows high contrast between its bright and dark parts",
  ],
}
_BRIGHTEST = [
  "the {r} shows the strongest intensity",
  "the brightest response lies in the {r}",
  "the {r} stands out as the brightest area",
  "intensity peaks in the {r} of the frame",
]
_DARKEST = [
  "the {r} is the darkest part of the scene",
  "the lowest intensities gather in the {r}",
  "the {r} appears darkest",
  "the {r} has the weakest response",
]
_BLOBS = {
  ("bright", 1): [
    "a single compact bright patch stands out in the {r}",
    "one isolated high-intensity spot appears in the {r}",
  ],
  ("bright", 2): [
    "{n} separate bright spots stand out, the largest in the {r}",
    "{n} distinct high-intensity patches are visible, the biggest in the {r}",
  ],
  ("bright", 10): [
    "many small bright spots are scattered over the image",
    "numerous bright specks are spread across the frame",
  ],
  ("dark", 1): [
    "a single dark patch sits in the {r}",
    "one isolated low-intensity spot appears in the {r}",
  ],
  ("dark", 2): [
    "{n} separate dark spots appear, the largest in the {r}",
    "{n} distinct low-intensity patches are visible, the biggest in the {r}",
  ],
  ("dark", 10): [
    "many small dark spots are scattered over the image",
    "numerous dark specks are spread across the frame",
  ],
}
_EDGES = {
  "dense": [
    "sharp structural outlines are clearly visible",
    "crisp edges outline the structures in the scene",
    "strong intensity edges trace the layout of the scene",
  ],
  "moderate": [
    "structural outlines remain moderately visible",
    "edges are moderately dense across the frame",
  ],
  "sparse": [
    "few sharp edges are visible, so the scene looks soft",
    "outlines are faint and edges are sparse",
  ],
}
_FLAT = {
  "large_anywhere": [
    "smooth, low-texture areas cover about {pct:.0f}% of the image",
    "large uniform areas with little texture fill much of the frame",
  ],
  "large": [
    "smooth, low-texture areas cover about {pct:.0f}% of the image, mostly in the {r}",
    "large uniform areas with little texture appear, especially in the {r}",
  ],
  "small": [
    "almost every part of the image shows fine texture",
    "the surface is textured throughout, with few uniform areas",
  ],
}
_BOX = {
  "brighter": [
    "the {obj} appear brighter than their surroundings",
    "the {obj} stand out as high-intensity shapes",
  ],
  "darker": [
    "the {obj} appear darker than their surroundings",
    "the {obj} show up as low-intensity shapes",
  ],
}
_OPENERS = [
  "In the infrared image",
  "In this infrared view",
  "Seen in the infrared band",
  "In the IR rendering",
  "In the infrared version of the scene",
  "Viewed in infrared",
]
_SCENE_OPENERS = [
  "In the infrared view of the {s}",
  "In this infrared image of the {s}",
  "Across the infrared rendering of the {s}",
  "Seen in infrared, with the {s}",
]


def rng_for(seed) -> random.Random:
  """A random.Random seeded stably from an int or a string (e.g. the record id)."""
  digest = hashlib.sha256(str(seed).encode()).digest()
  return random.Random(int.from_bytes(digest[:8], "big"))


def _fact(name, measurements, clauses, **fmt) -> dict:
  return {"name": name, "measurements": measurements, "clauses": [c.format(**fmt) for c in clauses]}


def measured_facts(stats: dict, box_names: dict[str, str] | None = None) -> list[dict]:
  """Facts ({"name", "measurements", "clauses"}) supported by `stats` (ir_stats.measure_ir).

  box_names maps a box category to the plural noun used for it ("Car" -> "cars").
  """
  level, contrast = ir_stats.level_word(stats["mean"]), ir_stats.contrast_word(stats["std"])
  facts = [
    _fact("level", {"mean": stats["mean"], "level": level}, _LEVEL[level], mean=stats["mean"]),
    _fact(
      "contrast",
      {"std": stats["std"], "p5": stats["p5"], "p95": stats["p95"], "contrast": contrast},
      _CONTRAST[contrast],
      p5=stats["p5"],
      p95=stats["p95"],
    ),
  ]
  for key, phrases in (("brightest", _BRIGHTEST), ("darkest", _DARKEST)):
    region = stats[f"{key}_region"]
    if region:
      facts.append(
        _fact(
          f"{key}_region",
          {
            f"{key}_region": region,
            f"{key}_region_mean": stats["region_means"][region],
            f"{key}_margin": stats[f"{key}_margin"],
          },
          phrases,
          r=region,
        )
      )
  for kind in ("bright", "dark"):
    blobs = stats[f"{kind}_blobs"]
    if blobs["count"]:
      bucket = 1 if blobs["count"] == 1 else 2 if blobs["count"] < 10 else 10
      facts.append(
        _fact(
          f"{kind}_blobs",
          {
            f"{kind}_blob_count": blobs["count"],
            f"{kind}_blob_threshold": blobs["threshold"],
            f"{kind}_blob_largest_region": blobs["largest_region"],
          },
          _BLOBS[(kind, bucket)],
          n=number_word(blobs["count"]),
          r=blobs["largest_region"],
        )
      )
  edges = ir_stats.edge_word(stats["edge_density"])
  facts.append(
    _fact("edges", {"edge_density": stats["edge_density"], "edges": edges}, _EDGES[edges])
  )
  flat = stats["flat_fraction"]
  if flat >= 0.3 or flat < 0.05:
    size = "large" if flat >= 0.3 else "small"
    m = {"flat_fraction": flat}
    if size == "large" and not stats["flattest_region"]:
      size = "large_anywhere"
    elif size == "large":
      m.update(
        flattest_region=stats["flattest_region"],
        flattest_region_fraction=stats["flattest_region_fraction"],
      )
    facts.append(_fact("low_texture", m, _FLAT[size], pct=100 * flat, r=stats["flattest_region"]))
  for cat, box in sorted(stats.get("box_contrast", {}).items()):
    noun = (box_names or {}).get(cat)
    delta = box["mean_minus_image"]
    if noun and abs(delta) >= ir_stats.BOX_MARGIN:
      facts.append(
        _fact(
          f"box_contrast:{cat}",
          {f"box_mean_minus_image:{cat}": delta, f"boxes:{cat}": box["boxes"]},
          _BOX["brighter" if delta > 0 else "darker"],
          obj=noun,
        )
      )
  return facts


def _cap(text: str) -> str:
  return text[:1].upper() + text[1:]


def scene_phrase(nouns: list[str]) -> str:
  """["buildings", "road"] -> "buildings and the road" (used after "the")."""
  if len(nouns) == 1:
    return nouns[0]
  return ", the ".join(nouns[:-1]) + " and the " + nouns[-1]


def compose(rng: random.Random, clauses: list[str], scene: str | None) -> str:
  """One sentence from 1-3 independent clauses, with a randomly chosen structure."""
  c = clauses
  patterns = [
    lambda o: (
      f"{o}, {c[0]}"
      + (f", and {c[1]}" if len(c) > 1 else "")
      + (f"; {c[2]}" if len(c) > 2 else "")
      + "."
    )
  ]
  if len(c) >= 2:
    patterns.append(
      lambda o: f"{o}, {c[0]}, while {c[1]}" + (f", and {c[2]}" if len(c) > 2 else "") + "."
    )
    patterns.append(
      lambda o: (
        f"{_cap(c[0])}; {c[1]}"
        + (f", and {c[2]}" if len(c) > 2 else "")
        + f" ({o[0].lower()}{o[1:]})."
      )
    )
  if len(c) == 1:
    patterns.append(lambda o: f"{o}: {c[0]}.")
  if scene:
    patterns.append(lambda o: f"The infrared image shows the {scene}: " + ", and ".join(c) + ".")
    openers = [s.format(s=scene) for s in _SCENE_OPENERS]
  else:
    openers = _OPENERS
  return rng.choice(patterns)(rng.choice(openers))


def template_candidates(
  facts: list[dict], scene_nouns: list[str], seed, count: int
) -> list[tuple[str, dict]]:
  """`count` candidate (caption, provenance) pairs, cycling through the facts for variety."""
  rng = rng_for(seed)
  out = []
  order = list(range(len(facts)))
  rng.shuffle(order)
  cursor = 0
  for _ in range(count):
    k = rng.choice((1, 2, 2, 3))
    picked = [facts[order[(cursor + j) % len(order)]] for j in range(min(k, len(order)))]
    cursor += len(picked)
    clauses = [rng.choice(f["clauses"]) for f in picked]
    nouns = rng.sample(scene_nouns, min(len(scene_nouns), rng.choice((1, 2, 3))))
    use_scene = bool(nouns) and rng.random() < 0.7
    text = compose(rng, clauses, scene_phrase(nouns) if use_scene else None)
    measurements = {}
    for f in picked:
      measurements.update(f["measurements"])
    out.append(
      (
        text,
        {
          "engine": ENGINE,
          "facts": [f["name"] for f in picked],
          "measurements": measurements,
          "objects": nouns if use_scene else [],
        },
      )
    )
  return out


def baseline_caption(stats: dict) -> str:
  """The single-template baseline that vocabulary richness is compared against."""
  return (
    f"The infrared image is {ir_stats.level_word(stats['mean'])} with "
    f"{ir_stats.contrast_word(stats['std'])} contrast."
  )
