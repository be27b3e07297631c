"""Layout-grounded captions for demo-world scenes: five varied sentences per image, UCM style.

Every sentence is built from the layout (object counts, roof colours, sides, directions), so
a caption never names something the image does not contain. Counts are spelled as number
words up to twenty ("three cars"); larger counts become "many".
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import numpy as np

from data_prep.ir_text.lexicon import NUMBER_WORDS

# Countable category -> (singular, plural) nouns the captions may use for it.
COUNT_NOUNS = {
  "car": (("car", "cars"), ("vehicle", "vehicles")),
  "airplane": (("airplane", "airplanes"), ("plane", "planes"), ("aircraft", "aircraft")),
  "ship": (("boat", "boats"), ("ship", "ships")),
  "storage_tank": (("storage tank", "storage tanks"), ("oil tank", "oil tanks"), ("tank", "tanks")),
  "building": (("house", "houses"), ("building", "buildings")),
  "tennis_court": (("tennis court", "tennis courts"),),
}

_COLOR = {
  "roof_red": "red",
  "roof_gray": "gray",
  "roof_brown": "brown",
  "roof_white": "white",
  "roof_blue": "blue",
  "car_red": "red",
  "car_white": "white",
  "car_black": "black",
  "car_blue": "blue",
  "car_silver": "silver",
  "plane_white": "white",
  "plane_gray": "gray",
  "tank_white": "white",
  "tank_gray": "gray",
}


class _Skip(Exception):
  """A template needs something this layout lacks (e.g. a count of zero)."""


class _Ctx:
  """What captions may state about one layout, plus a seeded phrase picker."""

  def __init__(self, layout, rng: np.random.Generator):
    self.rng, self.facts = rng, layout.facts
    self.counts = collections.Counter(e.category for e in layout.elements if e.category)
    self.colors = collections.defaultdict(list)
    for e in layout.elements:
      if e.category and e.material in _COLOR:
        self.colors[e.category].append(_COLOR[e.material])
    self.materials = {e.material for e in layout.elements}
    self.classes = {e.cls for e in layout.elements}

  def pick(self, *options: str) -> str:
    return options[self.rng.integers(len(options))]

  def count(self, category: str, adjective: str = "") -> str:
    """'three red cars' / 'one plane' / 'many houses' for the true count of `category`."""
    n = self.counts[category]
    if n == 0:
      raise _Skip(category)
    singular, plural = COUNT_NOUNS[category][self.rng.integers(len(COUNT_NOUNS[category]))]
    noun = singular if n == 1 else plural
    adj = f"{adjective} " if adjective else ""
    return f"{NUMBER_WORDS[n]} {adj}{noun}" if n <= 20 else f"many {adj}{noun}"

  def verb(self, category: str, singular: str, plural: str) -> str:
    return singular if self.counts[category] == 1 else plural

  def there(self, category: str, adjective: str = "") -> str:
    return f"there {self.verb(category, 'is', 'are')} {self.count(category, adjective)}"

  def color_list(self, category: str) -> str:
    """'red and gray' from the colours present (most frequent first)."""
    names = [c for c, _ in collections.Counter(self.colors[category]).most_common(3)]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]

  def one_color(self, category: str) -> str:
    """The shared colour when every object of `category` has it, else ''."""
    names = set(self.colors[category])
    return names.pop() if len(names) == 1 else ""


Template = Callable[[_Ctx], "str | None"]


def _trees_word(c):
  return c.pick("trees", "green trees", "some trees")


POOLS: dict[str, list[Template]] = {
  "agricultural": [
    lambda c: f"the farmland is divided into {NUMBER_WORDS[c.facts['fields']]} fields",
    lambda c: f"{c.pick('many', 'several')} pieces of farmland with crops planted in rows",
    lambda c: (
      "green and yellow crops grow in neighbouring fields"
      if {"crop_green", "crop_yellow"} <= set(c.facts["crops"])
      else None
    ),
    lambda c: (
      "some fields are plowed and show brown soil" if "plowed" in c.facts["crops"] else None
    ),
    lambda c: f"rectangular {c.pick('fields', 'farmlands', 'plots')} separated by dirt tracks",
    lambda c: f"an agricultural area with {c.pick('neat', 'regular', 'parallel')} crop rows",
  ],
  "airplane": [
    lambda c: f"{c.count('airplane', c.one_color('airplane'))} parked on the apron",
    lambda c: f"{c.there('airplane')} at the airport",
    lambda c: "a runway runs along the top of the image" if "runway" in c.facts else None,
    lambda c: f"{c.count('airplane')} on gray concrete next to a strip of grass",
    lambda c: f"{c.count('airplane')} {c.verb('airplane', 'stands', 'stand')} on the apron",
    lambda c: f"the {c.color_list('airplane')} aircraft cast short shadows on the apron",
  ],
  "baseballdiamond": [
    lambda c: "a baseball diamond with a brown infield surrounded by green grass",
    lambda c: "a baseball field with white baselines and " + c.pick("a pitcher mound", "a mound"),
    lambda c: f"{_trees_word(c)} stand {c.facts['trees_side']} of the baseball field",
    lambda c: "the infield is a sector of red clay around a square of grass",
    lambda c: f"a {c.pick('sports field', 'ball park', 'baseball diamond')} on a large lawn",
  ],
  "beach": [
    lambda c: f"the sea is {c.facts['sea_side']} and a sandy beach lies next to it",
    lambda c: "white waves break along the beach",
    lambda c: f"a {c.pick('yellow', 'golden', 'pale')} beach between blue sea and green land",
    lambda c: f"the {c.pick('coastline', 'shoreline', 'beach')} curves gently",
    lambda c: f"{c.pick('green vegetation', 'grassland')} lies behind the sand",
  ],
  "chaparral": [
    lambda c: "sparse shrubs are scattered over dry bare land",
    lambda c: f"a {c.pick('dry', 'arid', 'barren')} land with small bushes",
    lambda c: "dark green shrubs dot the light brown soil",
    lambda c: "a chaparral area with scattered vegetation",
    lambda c: "many small bushes on a pale dry ground",
  ],
  "denseresidential": [
    lambda c: f"{c.there('building')} densely arranged along the roads",
    lambda c: f"a dense residential area with {c.color_list('building')} roofs",
    lambda c: f"two parallel {c.facts['roads']} roads cross the residential area",
    lambda c: f"{c.count('building')} packed closely together beside two roads",
    lambda c: f"{c.there('car')} on the roads" if c.counts["car"] else None,
    lambda c: f"houses with {c.color_list('building')} roofs line both sides of the streets",
  ],
  "forest": [
    lambda c: f"a dense forest with {c.pick('many', 'lots of', 'numerous')} trees",
    lambda c: "the trees are so dense that the ground cannot be seen",
    lambda c: "a dirt trail crosses the forest" if c.facts.get("trail") else None,
    lambda c: "dark green and light green tree crowns cover the whole image",
    lambda c: f"a {c.pick('thick', 'lush', 'dense')} woodland seen from above",
  ],
  "freeway": [
    lambda c: f"a freeway runs {c.facts['direction']} across the image",
    lambda c: f"{c.there('car')} on the freeway",
    lambda c: "two carriageways separated by a green median",
    lambda c: f"a {c.pick('highway', 'freeway', 'motorway')} with dashed white lane markings",
    lambda c: f"{c.count('car')} driving on a road through grassland",
    lambda c: "trees grow beside the freeway" if "tree" in c.classes else None,
  ],
  "golfcourse": [
    lambda c: "a golf course with a light green fairway and a putting green",
    lambda c: "sand bunkers lie near the green",
    lambda c: f"a pond is {c.facts['pond']} of the golf course" if "pond" in c.facts else None,
    lambda c: f"{_trees_word(c)} are scattered around the golf course",
    lambda c: f"a {c.pick('smooth', 'well-kept', 'lush')} golf course seen from above",
  ],
  "harbor": [
    lambda c: f"{c.there('ship')} docked beside the piers",
    lambda c: f"a harbor with {c.count('ship')} and several piers",
    lambda c: f"the quay is {c.facts['quay_side']} and piers reach into the water",
    lambda c: f"{c.count('ship')} moored in the {c.pick('blue', 'calm', 'dark blue')} water",
    lambda c: "concrete piers stretch into the harbor",
  ],
  "intersection": [
    lambda c: "two roads cross each other at an intersection with crosswalks",
    lambda c: f"{c.there('car')} near the intersection",
    lambda c: (
      f"{c.count('building')} stand at the corners of the crossroads"
      if c.counts["building"]
      else None
    ),
    lambda c: "white zebra crossings mark all four sides of the crossing",
    lambda c: f"a {c.pick('crossroads', 'road intersection', 'junction')} surrounded by grass",
  ],
  "mediumresidential": [
    lambda c: f"{c.there('building')} on both sides of the road",
    lambda c: f"a road runs {c.facts['road']} through a residential area",
    lambda c: f"houses with {c.color_list('building')} roofs and green lawns",
    lambda c: f"{c.count('building')} with {c.pick('trees', 'lawns', 'yards')} around them",
    lambda c: f"{c.there('car')} on the road" if c.counts["car"] else None,
    lambda c: f"a medium residential area with {_trees_word(c)}",
  ],
  "parkinglot": [
    lambda c: f"{c.there('car')} in the parking lot",
    lambda c: f"a strip of grass with trees lies {c.facts['grass_side']} of the parking lot",
    lambda c: f"{c.count('car')} parked in rows of white parking spaces",
    lambda c: f"a parking lot with {c.color_list('car')} cars",
    lambda c: (
      f"some parking spaces are empty and {c.count('car')} are parked"
      if c.facts["empty_stalls"]
      else None
    ),
    lambda c: f"{_trees_word(c)} and grass border the parking lot",
  ],
  "river": [
    lambda c: f"a river flows {c.facts['direction']} through the image",
    lambda c: f"a {c.pick('winding', 'curved', 'meandering')} river with trees on its banks",
    lambda c: "the river has sandy banks" if c.facts.get("sandy_banks") else None,
    lambda c: f"{c.pick('green', 'some')} trees grow along the river",
    lambda c: "a blue river crosses the land",
  ],
  "storagetanks": [
    lambda c: f"{c.there('storage_tank', c.one_color('storage_tank'))} in the yard",
    lambda c: f"{c.count('storage_tank')} on a concrete ground",
    lambda c: f"round {c.color_list('storage_tank')} tanks cast shadows on the ground",
    lambda c: f"an industrial area with {c.count('storage_tank')}",
    lambda c: "storage tanks are arranged in a grid" if c.counts["storage_tank"] > 2 else None,
  ],
  "tenniscourt": [
    lambda c: f"{c.there('tennis_court')} surrounded by grass",
    lambda c: f"{c.count('tennis_court')} with white lines",
    lambda c: "tennis courts with a net across the middle",
    lambda c: f"a sports area with {c.count('tennis_court')}",
    lambda c: "the courts are painted and marked with white lines",
  ],
}

_GENERIC: list[Template] = [
  lambda c: "an aerial image of " + c.facts["_a_name"],
  lambda c: c.facts["_a_name"] + " seen from above",
  lambda c: "this is " + c.facts["_a_name"],
  lambda c: "a remote sensing image showing " + c.facts["_a_name"],
  lambda c: "an overhead view of " + c.facts["_a_name"],
]

SCENE_NAMES = {
  "agricultural": "farmland",
  "airplane": "airport",
  "baseballdiamond": "baseball diamond",
  "beach": "beach",
  "chaparral": "chaparral",
  "denseresidential": "dense residential area",
  "forest": "forest",
  "freeway": "freeway",
  "golfcourse": "golf course",
  "harbor": "harbor",
  "intersection": "intersection",
  "mediumresidential": "residential area",
  "parkinglot": "parking lot",
  "river": "river",
  "storagetanks": "storage tank farm",
  "tenniscourt": "tennis court area",
}


def captions_for(layout, rng: np.random.Generator, n: int = 5) -> list[str]:
  """n distinct sentences about `layout`, specific templates first, generic ones to fill."""
  ctx = _Ctx(layout, rng)
  name = SCENE_NAMES[layout.scene_class]
  ctx.facts = {**layout.facts, "_a_name": ("an " if name[0] in "aeiou" else "a ") + name}
  out: list[str] = []
  for pool in (POOLS[layout.scene_class], _GENERIC):
    for k in rng.permutation(len(pool)):
      try:
        text = pool[k](ctx)
      except _Skip:
        continue
      if text and len(out) < n:
        text = text[0].upper() + text[1:] + "."
        if text not in out:
          out.append(text)
  return out
