"""Caption hygiene: invisible control/format characters removed, whitespace normalised,
over-long captions truncated or rejected; every change is counted on the record."""

from __future__ import annotations

import dataclasses
import unicodedata

from data_prep.ingest.inputs import ItemRejected

# Unicode categories removed from captions: Cc controls (NUL, BEL, ESC, ...) and Cf format
# characters (zero-width space/joiners, BOM, bidi overrides such as U+202E).
REMOVED_CATEGORIES = ("Cc", "Cf")
LONG_CAPTION_MODES = ("truncate", "reject")
# record.meta key counting what hygiene changed in the record's captions
FIXES_KEY = "caption_fixes"


@dataclasses.dataclass(frozen=True)
class CaptionRules:
  # words (whitespace-separated); remote-sensing captions run 10-40 words
  max_words: int = 120
  # what happens to a caption over max_words: "truncate" (keep its first words) or "reject"
  long: str = "truncate"

  def __post_init__(self):
    if self.long not in LONG_CAPTION_MODES or self.max_words < 1:
      raise ValueError(
        f"caption rules: long must be one of {LONG_CAPTION_MODES} and max_words >= 1, "
        f"got {self.long!r}, {self.max_words}"
      )


class CaptionRejected(ItemRejected):
  """A caption that cannot be used (its reason goes to rejects.jsonl like an item's)."""


def _without_invisibles(text: str) -> str:
  # Whitespace controls (tab, newline) stay: they separate words until whitespace is normalised.
  return "".join(
    ch for ch in text if ch.isspace() or unicodedata.category(ch) not in REMOVED_CATEGORIES
  )


def clean_caption(text: object, rules: CaptionRules, fixes: dict[str, int]) -> str:
  """A usable caption from raw input, counting changes in `fixes`; CaptionRejected else."""
  if not isinstance(text, str):
    raise CaptionRejected("non_text_caption", f"is a {type(text).__name__}: {text!r:.80}")
  try:
    text.encode("utf-8")
  except UnicodeEncodeError as e:
    raise CaptionRejected(
      "undecodable_caption", f"holds {text[e.start]!r} at {e.start}, which is not valid UTF-8"
    ) from None
  visible = _without_invisibles(text)
  if visible != text:
    fixes["control_chars_removed"] = fixes.get("control_chars_removed", 0) + 1
  words = visible.split()
  cleaned = " ".join(words)
  if cleaned != visible.strip():
    fixes["whitespace_normalised"] = fixes.get("whitespace_normalised", 0) + 1
  if not cleaned:
    raise CaptionRejected("empty_caption", "is empty")
  if len(words) > rules.max_words:
    if rules.long == "reject":
      raise CaptionRejected(
        "long_caption", f"has {len(words)} words, over --max_caption_words={rules.max_words}"
      )
    fixes["truncated"] = fixes.get("truncated", 0) + 1
    cleaned = " ".join(words[: rules.max_words])
  return cleaned
