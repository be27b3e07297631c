"""The reference captioning scorers of coco-caption (the `pycocoevalcap` package), when installed.

METEOR comes from here: the real Meteor 1.5 jar (stemming, WordNet synonyms, paraphrase table)
run by Java, which no Python re-implementation matches. BLEU, ROUGE-L and CIDEr-D are also
exposed so the tests can check this project's own implementations against them. Everything is
offline: the jar and its paraphrase data ship inside the wheel (`pip install -e '.[coco]'`).
SPICE is not used (it downloads Stanford CoreNLP on first use).

Inputs are already tokenized (lists of words, as `captioning.tokenize` makes them); they are
joined with spaces, which is what coco-caption's PTB tokenizer would hand the scorers.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
from collections.abc import Sequence

Tokens = list[str]


@functools.cache
def available() -> bool:
  """pycocoevalcap is importable and a `java` runs (its METEOR needs both)."""
  return importlib.util.find_spec("pycocoevalcap") is not None and shutil.which("java") is not None


def _as_coco(hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]]):
  """-> (gts {i: [ref str]}, res {i: [hyp str]}) as the pycocoevalcap scorers take them."""
  gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
  # Meteor reads one line per item: an empty hypothesis still needs a token.
  res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
  return gts, res


@functools.cache
def _meteor():
  from pycocoevalcap.meteor.meteor import Meteor

  return Meteor()  # one Java process per Python process, reused


def meteor(hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]]) -> tuple[float, list[float]]:
  """Meteor 1.5 (-l en -norm) as coco-caption computes it: (corpus score, per-item scores).
  The corpus score is Meteor's own aggregate over the set (not the mean of the items)."""
  if not hyps:
    return 0.0, []
  gts, res = _as_coco(hyps, refs)
  score, per_item = _meteor().compute_score(gts, res)
  return float(score), [float(s) for s in per_item]


def reference_scores(hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]]) -> dict[str, float]:
  """pycocoevalcap's BLEU-1..4, ROUGE-L and CIDEr-D (no Java needed for these)."""
  from pycocoevalcap.bleu.bleu import Bleu
  from pycocoevalcap.cider.cider import Cider
  from pycocoevalcap.rouge.rouge import Rouge

  gts, res = _as_coco(hyps, refs)
  bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
  out = {f"BLEU-{n}": float(b) for n, b in enumerate(bleu, 1)}
  out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
  out["CIDEr-D"] = float(Cider().compute_score(gts, res)[0])
  return out
