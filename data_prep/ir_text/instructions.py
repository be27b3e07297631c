"""Instruction (question, answer, task) items for one RGB-IR record.

Every answer is read off the scene captions, the annotated boxes or the IR measurements
(ir_stats.measure_ir); nothing is guessed, and a question without a grounded answer is skipped.
"""

from __future__ import annotations

from data_prep.ir_text import boxes as ir_boxes
from data_prep.ir_text import lexicon as ir_lexicon
from data_prep.ir_text import stats as ir_stats
from data_prep.ir_text.templates import rng_for

_Q = {
  "describe_rgb": [
    "Describe the RGB image.",
    "What does the optical image show?",
    "Give a short caption for the RGB view.",
    "Summarize the scene in the color image.",
  ],
  "describe_ir": [
    "Describe the infrared image.",
    "What does the IR view show?",
    "Give a short caption for the infrared view.",
    "How does the scene look in the infrared image?",
  ],
  "compare_views": [
    "How does the infrared view differ from the RGB view?",
    "Compare the RGB and infrared images of this scene.",
    "What changes between the optical and the infrared view?",
  ],
  "brightest_region": [
    "Which region appears brightest in the infrared image?",
    "Where is the infrared image brightest?",
    "Which part of the IR view has the highest intensity?",
  ],
  "darkest_region": [
    "Which region appears darkest in the infrared image?",
    "Where is the infrared image darkest?",
    "Which part of the IR view has the lowest intensity?",
  ],
  "ir_contrast": [
    "How strong is the contrast of the infrared image?",
    "Is the infrared image high or low in contrast?",
  ],
  "ir_brightness": [
    "Is the infrared image mostly bright, dark or medium gray?",
    "How bright is the infrared image overall?",
  ],
  "bright_spots": [
    "How many distinct bright spots does the infrared image show?",
    "Count the isolated bright patches in the IR view.",
  ],
}


def _clean(caption: str) -> str:
  """Human captions come tokenized ("trees ."); answers read as plain sentences."""
  text = " ".join(caption.split()).replace(" .", ".").replace(" ,", ",").strip()
  return text[:1].upper() + text[1:]


def _level_phrase(mean: float) -> str:
  level = ir_stats.level_word(mean)
  return "medium gray" if level == "medium" else level


def _ask(rng, task: str, answer: str, question: str | None = None) -> dict:
  return {"question": question or rng.choice(_Q[task]), "answer": answer, "task": task}


def _presence_question(noun: str, any_: bool = False) -> str:
  """Grammatical yes/no question for a lexicon noun as written ("trees", "road", "water")."""
  form = ir_lexicon.find_mentions(noun)[0]["form"]
  if ir_lexicon.pluralize(form) == form:  # mass noun
    return f"Is there {'any ' if any_ else ''}{noun} in this image?"
  if noun != form or any_:
    return f"Are there any {ir_lexicon.pluralize(form)} in this image?"
  return f"Is there {'an' if noun[0] in 'aeiou' else 'a'} {noun} in this image?"


def _presence(rng, record, present: dict[str, str]) -> list[dict]:
  """One "yes" for a mentioned class and one "no" for a safely absent one."""
  items = []
  if present:
    noun = present[rng.choice(sorted(present))]
    items.append(_ask(rng, "object_presence", "Yes.", _presence_question(noun)))
  excluded = set(present) | ir_lexicon.UBIQUITOUS
  for cls in present:
    excluded |= ir_lexicon.RELATED.get(cls, set())
  absent = sorted(set(ir_lexicon.CLASS_FORMS) - excluded)
  # Without any caption or box there is no evidence of absence at all.
  if absent and (record.captions or present):
    form = ir_lexicon.CLASS_FORMS[rng.choice(absent)][0]
    items.append(_ask(rng, "object_presence", "No.", _presence_question(form, any_=True)))
  return items


def _box_presence(rng, record) -> list[dict]:
  """Presence questions about the box classes only (a box set says nothing about trees): one
  present and one absent class when the boxes have both."""
  counts = ir_boxes.box_facts(record.meta.get("objects"), 1, 1)["counts"]
  items = []
  for answer in ("Yes.", "No."):
    cats = sorted(c for c, n in counts.items() if bool(n) == (answer == "Yes."))
    if cats:
      noun = ir_boxes.NOUNS[rng.choice(cats)][1]
      items.append(_ask(rng, "object_presence", answer, f"Are there any {noun} in this image?"))
  return items


def _counting(rng, record) -> list[dict]:
  """Counts from annotated boxes, else counts the scene captions state."""
  objects = [
    o
    for o in record.meta.get("objects", []) or []
    if isinstance(o, dict)
    and o.get("category")
    and ir_lexicon.category_name(str(o["category"])) not in ("dont care", "dontcare")
  ]
  counts: dict[str, int] = {}
  for o in objects:
    name = ir_lexicon.category_name(str(o["category"]))
    counts[name] = counts.get(name, 0) + 1
  source = "boxes"
  if not counts:
    counts, source = ir_lexicon.stated_counts(record.captions), "captions"
  items = []
  names = sorted(counts) if len(counts) <= 2 else rng.sample(sorted(counts), 2)
  for name in names:
    items.append(
      {
        "question": f"How many {ir_lexicon.pluralize(name)} are there?",
        "answer": str(counts[name]),
        "task": f"counting_{source}",
      }
    )
  return items


def _compare(rng, record, stats: dict) -> dict | None:
  if not record.captions:
    return None
  level = ir_stats.level_word(stats["mean"])
  scene = _clean(record.captions[0]).rstrip(".")
  parts = [
    f"Both views show the same scene: {scene[:1].lower() + scene[1:]}.",
    (
      f"The infrared view replaces color with grayscale intensity; it is {level} "
      f"overall with {ir_stats.contrast_word(stats['std'])} contrast"
    ),
  ]
  if stats["brightest_region"]:
    parts[-1] += f", brightest in the {stats['brightest_region']}"
  return _ask(rng, "compare_views", " ".join(parts) + ".")


def make_instructions(record, stats: dict | None) -> list[dict]:
  """Instruction items for `record` (with ir_captions already filled) and its IR `stats`.

  Returns [{"question", "answer", "task"}]; IR questions are skipped when stats is None.
  """
  rng = rng_for(f"instructions:{record.id}")
  items = []
  # No RGB image (real thermal records): nothing to describe or compare on the RGB side.
  if record.captions and record.rgb:
    items.append(_ask(rng, "describe_rgb", _clean(rng.choice(record.captions))))
  if record.ir_captions:
    items.append(_ask(rng, "describe_ir", rng.choice(record.ir_captions)))
  if record.captions and not ir_boxes.grounding_texts(record):
    items.extend(_box_presence(rng, record))
  else:
    present = ir_lexicon.mentioned_classes(record.captions)
    for cls, noun in ir_lexicon.object_classes(record.meta.get("objects") or []).items():
      present.setdefault(cls, noun)
    items.extend(_presence(rng, record, present))
  items.extend(_counting(rng, record))
  if stats is not None:
    compare = _compare(rng, record, stats) if record.rgb else None
    if compare:
      items.append(compare)
    for key in ("brightest", "darkest"):
      if stats[f"{key}_region"]:
        items.append(_ask(rng, f"{key}_region", f"The {stats[f'{key}_region']}."))
    items.append(
      _ask(rng, "ir_contrast", f"{ir_stats.contrast_word(stats['std']).capitalize()} contrast.")
    )
    items.append(_ask(rng, "ir_brightness", f"Mostly {_level_phrase(stats['mean'])}."))
    blobs = stats["bright_blobs"]["count"]
    if blobs and blobs < 10:
      items.append(_ask(rng, "bright_spots", str(blobs)))
  return items
