"""The post-filter every IR caption passes (template or model): reject with named reasons.

Policy: the IR is rendered or translated, never a measured temperature, so captions speak of
intensity ("bright", "dark", "high intensity") and never of heat (hot/warm/cold/cool, heat,
temperature, degrees). They state measurements, so hedges (maybe, might, ...) are rejected.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable

from data_prep.ir_text import lexicon as ir_lexicon
from data_prep.ir_text.stats import REGION_NAMES

MIN_WORDS, MAX_WORDS = 6, 60

_TEMPERATURE = re.compile(
  r"\b(hot|hotter|hottest|warm|warmer|warmest|warmth|cold|colder|coldest|cool|cooler|"
  r"coolest|heat|heated|heating|temperatures?|degrees?|celsius|fahrenheit|kelvin|"
  r"thermal (signature|emission|radiation)s?|emit\w*|radiat\w*)\b|°|\b\d+\s*(c|f|k)\b",
  re.IGNORECASE,
)
_UNCERTAIN = re.compile(
  r"\b(maybe|perhaps|possibly|possible|probably|probable|likely|unlikely|might|may|"
  r"could|seemingly|presumably|apparently|uncertain|unclear|guess|i think|"
  r"it seems|seems to be|hard to tell)\b",
  re.IGNORECASE,
)
_REGION = re.compile(r"\b(" + "|".join(sorted(REGION_NAMES, key=len, reverse=True)) + r")\b")

REASONS = (
  "not_text",
  "too_short",
  "too_long",
  "temperature_claim",
  "uncertainty",
  "absent_object",
  "unsupported_count",
  "unsupported_region",
  "duplicate",
)


def normalize(text: str) -> str:
  return " ".join(ir_lexicon.tokenize(text))


def check_caption(
  text,
  allowed_classes: Iterable[str],
  counts: dict[str, int],
  regions: Iterable[str] | None = None,
  seen: Iterable[str] = (),
) -> list[str]:
  """Reasons `text` must be rejected (empty list: accepted).

  allowed_classes: lexicon classes grounded in the scene captions / boxes.
  counts: singular lexicon form -> count the record supports ("plane": 3).
  regions: grid region names the caption's measurements support (None: do not check).
  seen: normalized captions already accepted for this record.
  """
  if not isinstance(text, str) or not text.strip():
    return ["not_text"]
  reasons = []
  n_words = len(text.split())
  if n_words < MIN_WORDS:
    reasons.append("too_short")
  if n_words > MAX_WORDS:
    reasons.append("too_long")
  if _TEMPERATURE.search(text):
    reasons.append("temperature_claim")
  if _UNCERTAIN.search(text):
    reasons.append("uncertainty")
  allowed = set(allowed_classes)
  mentions = ir_lexicon.find_mentions(text)
  if any(m["class"] not in allowed for m in mentions):
    reasons.append("absent_object")
  if _unsupported_count(text, mentions, counts):
    reasons.append("unsupported_count")
  if regions is not None and set(_REGION.findall(text.lower())) - set(regions):
    reasons.append("unsupported_region")
  if normalize(text) in set(seen):
    reasons.append("duplicate")
  return reasons


def _unsupported_count(text: str, mentions: list[dict], counts: dict[str, int]) -> bool:
  """A number directly before an object noun must equal the count the record supports."""
  stated = ir_lexicon.stated_counts([text])
  for form, n in stated.items():
    cls = next(m["class"] for m in mentions if m["form"] == form)
    supported = {v for f, v in counts.items() if ir_lexicon.class_of(f) == cls}
    if n not in supported:
      return True
  return False


class FilterReport:
  """Counts of generated / accepted captions and rejections by reason."""

  def __init__(self):
    self.generated = 0
    self.accepted = 0
    self.rejected: collections.Counter = collections.Counter()
    self.examples: dict[str, str] = {}

  def add(self, text, reasons: list[str]) -> None:
    self.generated += 1
    if reasons:
      self.rejected.update(reasons)
      for r in reasons:
        self.examples.setdefault(r, str(text)[:200])
    else:
      self.accepted += 1

  def merge(self, other: dict) -> None:
    self.generated += other.get("generated", 0)
    self.accepted += other.get("accepted", 0)
    self.rejected.update(other.get("rejected", {}))
    for r, t in other.get("examples", {}).items():
      self.examples.setdefault(r, t)

  def to_dict(self) -> dict:
    return {
      "generated": self.generated,
      "accepted": self.accepted,
      "rejected_captions": self.generated - self.accepted,
      "rejected": dict(sorted(self.rejected.items())),
      "examples": dict(sorted(self.examples.items())),
    }


def filter_captions(
  candidates: Iterable[str],
  allowed_classes,
  counts,
  regions=None,
  report: FilterReport | None = None,
  seen: Iterable[str] = (),
) -> list[int]:
  """Indices of accepted candidates (in order); duplicates within the batch are rejected."""
  seen = set(seen)
  kept = []
  for i, text in enumerate(candidates):
    reasons = check_caption(text, allowed_classes, counts, regions, seen)
    if report is not None:
      report.add(text, reasons)
    if not reasons:
      kept.append(i)
      seen.add(normalize(text))
  return kept
