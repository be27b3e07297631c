"""Captions grounded in bounding boxes, for thermal images that come with boxes but no captions
(HIT-UAV): how many people, cars and bicycles the boxes hold, in which grid regions.

Every statement is read off the boxes, under the same rule as the IR-aware captions: a caption
never names an object the boxes do not hold, and an absent class is stated as absent only
because no box of it exists. Counts are exact numbers ("three cars") or the count buckets the
zero-shot counting evaluation prompts with ("a few cars"); positions are the 3x3 grid regions of
the box centres.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Sequence

from data_prep.ir_text import lexicon
from data_prep.ir_text import stats as ir_stats
from data_prep.ir_text import templates as ir_templates

ENGINE = "boxes-v1"
# Box category -> (singular, plural) noun. Other categories (OtherVehicle, DontCare) are
# ignored: they are neither counted nor named.
NOUNS = {"Person": ("person", "people"), "Car": ("car", "cars"), "Bicycle": ("bicycle", "bicycles")}
# (lowest count, highest count or None, phrase): the buckets of fusionrs_jax.evaluators.counting.
BUCKETS = ((0, 0, "no"), (1, 1, "one"), (2, 4, "a few"), (5, None, "many"))
OPENINGS = (
  "an infrared aerial image with",
  "a thermal image from above with",
  "an overhead thermal view showing",
  "a drone infrared image of a scene with",
)


def bucket_of(count: int) -> str:
  """Count -> bucket phrase ("no", "one", "a few", "many")."""
  for low, high, phrase in BUCKETS:
    if count >= low and (high is None or count <= high):
      return phrase
  raise ValueError(f"negative count {count}")


def _noun(category: str, count: int) -> str:
  singular, plural = NOUNS[category]
  return singular if count == 1 else plural


def _join(parts: Sequence[str], word: str = "and") -> str:
  if len(parts) <= 1:
    return "".join(parts)
  return ", ".join(parts[:-1]) + f" {word} " + parts[-1]


def box_facts(objects, height: int, width: int) -> dict:
  """Counts per category of NOUNS and the grid regions (most boxes first) of each present one.

  objects: [{"category": str, "bbox": [x, y, w, h] px}] in an image of [height, width] px.
  """
  counts = dict.fromkeys(NOUNS, 0)
  regions: dict[str, collections.Counter] = {cat: collections.Counter() for cat in NOUNS}
  for obj in objects or ():
    cat = str(obj.get("category", ""))
    if cat not in NOUNS:
      continue
    x, y, w, h = obj["bbox"]
    counts[cat] += 1
    regions[cat][ir_stats.region_of(y + h / 2, x + w / 2, height, width)] += 1
  ordered = {
    cat: [r for r, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))]
    for cat, c in regions.items()
    if c
  }
  return {"counts": counts, "regions": ordered}


def _count_phrase(cat: str, n: int, exact: bool) -> str:
  if n == 0:
    return f"no {NOUNS[cat][1]}"
  amount = lexicon.number_word(n) if exact else bucket_of(n)
  return f"{amount} {_noun(cat, n)}"


def _where(cat: str, facts: dict) -> str | None:
  n, regions = facts["counts"][cat], facts["regions"].get(cat, [])
  if not regions:
    return None
  place = _join([f"the {r}" for r in regions[:2]])
  if len(regions) > 2:
    place += " and elsewhere"
  return f"{_count_phrase(cat, n, exact=True)} in {place}"


def box_captions(objects, height: int, width: int, seed, num: int = 5) -> list[tuple[str, dict]]:
  """Up to `num` distinct captions of the boxes, each with provenance {"engine", "counts",
  "regions", "form"}."""
  facts = box_facts(objects, height, width)
  rng = ir_templates.rng_for(seed)
  cats = list(NOUNS)
  present = [c for c in cats if facts["counts"][c]]
  absent = [c for c in cats if not facts["counts"][c]]
  counts = facts["counts"]
  candidates = [
    ("exact", _join([_count_phrase(c, counts[c], True) for c in cats])),
    ("bucket", _join([_count_phrase(c, counts[c], False) for c in cats])),
  ]
  wheres = [w for w in (_where(c, facts) for c in present) if w]
  if wheres:
    candidates.append(("regions", _join(wheres)))
  if present:
    candidates.append(("present", _join([_count_phrase(c, counts[c], False) for c in present])))
  if absent and present:
    missing = _join([NOUNS[c][1] for c in absent], "or")
    first = _count_phrase(present[0], counts[present[0]], True)
    candidates.append(("absent", f"{first} but no {missing}"))
  out, seen = [], set()
  for form, body in candidates[:num]:
    text = f"{rng.choice(OPENINGS)} {body}"
    if text not in seen:
      seen.add(text)
      out.append((text, {"engine": ENGINE, "form": form, **facts}))
  return out


def provenance_json(captions: list[tuple[str, dict]]) -> list[str]:
  return [json.dumps(p, sort_keys=True) for _, p in captions]


def grounding_texts(record) -> list[str]:
  """The captions that may ground object mentions: a record's own captions, or none when they
  were written from its boxes (their "no bicycles" must not count as a mention: the boxes
  themselves are the grounding then)."""
  prov = record.meta.get("caption_provenance") or []
  if prov and all(json.loads(p).get("engine") == ENGINE for p in prov):
    return []
  return list(record.captions)
