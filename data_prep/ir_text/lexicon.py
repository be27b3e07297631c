"""Remote-sensing object lexicon: which object classes a caption mentions, and stated counts.

IR captions and instructions may only name classes found here in the scene captions (or in
the record's annotated boxes), so this one table decides what "mentioned" means.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# class -> singular surface forms (plurals are generated). Multi-word forms win over their
# parts ("baseball field" is a sports field, not farmland; "parking lot" is not a lot).
CLASS_FORMS: dict[str, tuple[str, ...]] = {
  "road": ("road", "street", "highway", "freeway", "avenue", "roadway", "motorway"),
  "intersection": ("intersection", "crossroad", "crossing", "junction"),
  "overpass": ("overpass", "viaduct", "interchange"),
  "bridge": ("bridge",),
  "railway": ("railway", "railroad", "rail", "train", "railway track", "railroad track"),
  "building": (
    "building",
    "house",
    "home",
    "apartment",
    "villa",
    "skyscraper",
    "mobile home",
    "residence",
    "warehouse",
    "factory",
  ),
  "water": (
    "water",
    "river",
    "lake",
    "sea",
    "ocean",
    "pond",
    "stream",
    "reservoir",
    "canal",
    "waterway",
  ),
  "pool": ("swimming pool", "pool"),
  "vegetation": (
    "vegetation",
    "tree",
    "grass",
    "grassland",
    "lawn",
    "forest",
    "woods",
    "bush",
    "shrub",
    "plant",
    "greenery",
    "meadow",
    "woodland",
  ),
  "farmland": ("farmland", "field", "crop", "cropland", "farm", "agricultural land"),
  "vehicle": ("vehicle", "car", "truck", "bus", "van", "other vehicle", "luggage car"),
  "airplane": ("airplane", "plane", "aircraft", "jet", "airliner", "aeroplane"),
  "runway": ("runway", "airstrip", "taxiway"),
  "airport": ("airport", "airfield"),
  "ship": ("ship", "boat", "vessel", "yacht"),
  "harbor": ("harbor", "harbour", "port", "dock", "pier", "marina", "wharf"),
  "bare_ground": (
    "bare soil",
    "soil",
    "sand",
    "beach",
    "dirt",
    "bare land",
    "bare ground",
    "desert",
  ),
  "parking_lot": ("parking lot", "parking area", "car park", "parking"),
  "tank": ("storage tank", "oil tank", "tank"),
  "sports_field": (
    "tennis court",
    "basketball court",
    "court",
    "baseball field",
    "baseball diamond",
    "football field",
    "soccer field",
    "sports field",
    "playground",
    "stadium",
    "running track",
  ),
  "golf_course": ("golf course",),
  "person": ("person", "pedestrian"),
  "bicycle": ("bicycle", "bike"),
}

# Irregular plurals and mass nouns that keep their form.
_IRREGULAR = {
  "person": "people",
  "woods": "woods",
  "aircraft": "aircraft",
  "grass": "grass",
  "water": "water",
  "vegetation": "vegetation",
  "greenery": "greenery",
  "sand": "sand",
  "soil": "soil",
  "dirt": "dirt",
  "farmland": "farmland",
  "cropland": "cropland",
  "grassland": "grassland",
  "parking": "parking",
  "bare soil": "bare soil",
  "bare land": "bare land",
  "bare ground": "bare ground",
  "agricultural land": "agricultural land",
  "woodland": "woodland",
}

# Classes so common in aerial scenes that captions often leave them unsaid: never used as
# "no" answers, because absence from the captions is weak evidence of absence in the image.
UBIQUITOUS = frozenset(
  {
    "road",
    "building",
    "vegetation",
    "vehicle",
    "water",
    "person",
    "bare_ground",
    "farmland",
    "intersection",
    "bicycle",
    "parking_lot",
  }
)

# A present class implies these may be present too; none of them is a safe "no".
RELATED = {
  "airport": {"runway", "airplane"},
  "runway": {"airport", "airplane"},
  "airplane": {"airport", "runway"},
  "harbor": {"ship", "water"},
  "ship": {"harbor", "water"},
  "water": {"ship", "bridge", "harbor", "pool"},
  "bridge": {"water", "overpass"},
  "overpass": {"bridge", "intersection"},
  "sports_field": {"golf_course", "pool"},
  "golf_course": {"sports_field", "pool"},
  "building": {"pool", "tank"},
  "tank": {"building"},
  "railway": {"bridge"},
}

# Number words 0..20, as both caption writers spell counts.
NUMBER_WORDS = (
  "zero",
  "one",
  "two",
  "three",
  "four",
  "five",
  "six",
  "seven",
  "eight",
  "nine",
  "ten",
  "eleven",
  "twelve",
  "thirteen",
  "fourteen",
  "fifteen",
  "sixteen",
  "seventeen",
  "eighteen",
  "nineteen",
  "twenty",
)
NUMBER_VALUE = {w: i for i, w in enumerate(NUMBER_WORDS)}
NUMBER_VALUE["single"] = 1
# Words that end a noun phrase: a number before them does not count the next noun.
_PHRASE_BREAKS = frozenset(
  {
    "and",
    "or",
    "with",
    "of",
    "in",
    "on",
    "at",
    "by",
    "near",
    "beside",
    "the",
    "is",
    "are",
    "there",
    "some",
    "many",
    "lots",
  }
)
_NEGATIONS = frozenset({"no", "not", "without", "none", "nor", "never"})


def pluralize(form: str) -> str:
  if form in _IRREGULAR:
    return _IRREGULAR[form]
  head, _, last = form.rpartition(" ")
  if last.endswith(("s", "sh", "ch", "x", "z")):
    last += "es"
  elif last.endswith("y") and last[-2:-1] not in tuple("aeiou"):
    last = last[:-1] + "ies"
  else:
    last += "s"
  return f"{head} {last}".strip()


def _build_index() -> dict[tuple[str, ...], tuple[str, str]]:
  """Token tuple -> (class, singular form) over singular and plural forms."""
  index = {}
  for cls, forms in CLASS_FORMS.items():
    for form in forms:
      for surface in (form, pluralize(form)):
        index[tuple(surface.split())] = (cls, form)
  return index


_INDEX = _build_index()
_MAX_LEN = max(len(k) for k in _INDEX)


def class_of(form: str) -> str | None:
  """Lexicon class of a surface form ("planes" -> "airplane"), None when unknown."""
  hit = _INDEX.get(tuple(tokenize(form)))
  return hit[0] if hit else None


def tokenize(text: str) -> list[str]:
  return re.findall(r"[a-z]+|\d+", text.lower())


def find_mentions(text: str) -> list[dict]:
  """Lexicon mentions in `text`, longest match first.

  Returns [{"class", "form" (singular), "surface" (as written), "start" (token index),
  "negated" (a no/not/without within the two tokens before)}].
  """
  tokens = tokenize(text)
  out, i = [], 0
  while i < len(tokens):
    for n in range(min(_MAX_LEN, len(tokens) - i), 0, -1):
      hit = _INDEX.get(tuple(tokens[i : i + n]))
      if hit:
        negated = bool(_NEGATIONS & set(tokens[max(0, i - 2) : i]))
        out.append(
          {
            "class": hit[0],
            "form": hit[1],
            "surface": " ".join(tokens[i : i + n]),
            "start": i,
            "negated": negated,
          }
        )
        i += n
        break
    else:
      i += 1
  return out


def mentioned_classes(texts: Iterable[str]) -> dict[str, str]:
  """Class -> first surface form used, over the non-negated mentions in `texts`."""
  found: dict[str, str] = {}
  for text in texts:
    for m in find_mentions(text):
      if not m["negated"]:
        found.setdefault(m["class"], m["surface"])
  return found


def object_classes(objects: Iterable[dict]) -> dict[str, str]:
  """Class -> surface form for annotated boxes ({"category": "Car"} -> vehicle: cars)."""
  found: dict[str, str] = {}
  for obj in objects or ():
    name = category_name(str(obj.get("category", "")))
    for m in find_mentions(name):
      found.setdefault(m["class"], pluralize(m["form"]))
  return found


def category_name(category: str) -> str:
  """Box category -> lower-case words: "OtherVehicle" -> "other vehicle"."""
  return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", category).replace("_", " ").lower().strip()


def stated_counts(texts: Iterable[str]) -> dict[str, int]:
  """Singular form -> count stated as "three planes" / "2 tanks" ("a/one X" counts too).

  A form stated with different counts in different captions is dropped (no consensus).
  """
  seen: dict[str, set[int]] = {}
  for text in texts:
    tokens = tokenize(text)
    mentions = find_mentions(text)
    taken = {m["start"] + k for m in mentions for k in range(len(m["surface"].split()))}
    for m in mentions:
      # The number may be separated from the noun by up to two adjectives.
      for back in range(1, 4):
        j = m["start"] - back
        if j < 0 or j in taken or tokens[j] in _PHRASE_BREAKS:
          break
        value = int(tokens[j]) if tokens[j].isdigit() else NUMBER_VALUE.get(tokens[j])
        if value is not None and value > 0:
          seen.setdefault(m["form"], set()).add(value)
          break
  return {form: values.pop() for form, values in seen.items() if len(values) == 1}


def number_word(n: int) -> str:
  return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)
