"""This project's BLEU / ROUGE-L / CIDEr-D equal coco-caption's reference scorers
(pycocoevalcap), and METEOR comes from its Meteor 1.5 jar."""

import random

import pytest

from fusionrs_jax.evaluators import captioning as cap
from fusionrs_jax.evaluators import coco_caption

pytest.importorskip("pycocoevalcap", reason="pip install -e '.[coco]'")

WORDS = [
  "a",
  "the",
  "many",
  "green",
  "trees",
  "are",
  "around",
  "building",
  "road",
  "river",
  "cars",
  "parked",
  "lot",
  "with",
  "some",
  "and",
  "of",
  "in",
  "two",
  "white",
  "plane",
  "runway",
]


def _random_set(seed: int, items: int = 80):
  rng = random.Random(seed)
  refs = [
    [[rng.choice(WORDS) for _ in range(rng.randint(4, 14))] for _ in range(5)] for _ in range(items)
  ]
  # Hypotheses share n-grams with their references, some are short, one is empty.
  hyps = [rng.choice(rs)[: rng.randint(1, 12)] + [rng.choice(WORDS)] for rs in refs]
  hyps[3] = []
  return hyps, refs


@pytest.mark.parametrize("seed", [0, 1])
def test_bleu_rouge_cider_equal_pycocoevalcap(seed):
  hyps, refs = _random_set(seed)
  theirs = coco_caption.reference_scores(hyps, refs)
  ours = {f"BLEU-{n}": s for n, s in enumerate(cap.bleu(hyps, refs), 1)}
  ours["ROUGE-L"] = cap.rouge_l(hyps, refs)
  ours["CIDEr-D"] = cap.cider_d(hyps, refs)[0]
  assert set(ours) == set(theirs)
  for k in ours:
    assert ours[k] == pytest.approx(theirs[k], rel=1e-9, abs=1e-12), k
  assert 0.05 < ours["BLEU-4"] < 0.95 and ours["CIDEr-D"] > 0.1  # not a degenerate case


@pytest.mark.skipif(not coco_caption.available(), reason="Meteor 1.5 needs Java")
def test_meteor_is_meteor_15_from_the_jar():
  same = [["two", "white", "planes", "on", "the", "runway"]]
  score, items = coco_caption.meteor(same, [same])
  assert score == pytest.approx(1.0) and items == [pytest.approx(1.0)]
  # Stemming: "planes" matches "plane" in Meteor 1.5, not in exact matching.
  stem, _ = coco_caption.meteor([["a", "plane"]], [[["a", "planes"]]])
  none, _ = coco_caption.meteor([["a", "cat"]], [[["a", "planes"]]])
  assert stem > none
  assert cap.meteor_single(["a", "plane"], ["a", "planes"]) == cap.meteor_single(
    ["a", "cat"], ["a", "planes"]
  )
  # caption_metrics reports it under "METEOR" when available.
  m = cap.caption_metrics(["a plane"], [["a planes"]])
  assert m["METEOR"] == pytest.approx(stem) and "METEOR-exact" not in m
