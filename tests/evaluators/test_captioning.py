"""Caption metrics against hand-computed cases and known properties; the JSON CLI."""

import math

import pytest

from fusionrs_jax.evaluators import captioning as cap

T = cap.tokenize


def test_tokenize_lowercases_and_drops_punctuation():
  assert T("The Cat, sat.") == ["the", "cat", "sat"]


def test_bleu_hand_computed_precisions_and_brevity_penalty():
  b = cap.bleu([T("the cat sat on the mat")], [[T("the cat is on the mat")]])
  # unigram 5/6; bigrams "the cat", "on the", "the mat" match: 3/5; same length: bp = 1.
  assert b[0] == pytest.approx(5 / 6)
  assert b[1] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
  short = cap.bleu([T("the cat")], [[T("the cat sat on the mat")]])
  assert short[0] == pytest.approx(math.exp(1 - 6 / 2))


def test_bleu_clips_counts_and_uses_closest_reference_length():
  b = cap.bleu([T("the the the")], [[T("the cat"), T("a the dog")]])
  # "the" occurs at most once in any reference: 1/3; closest reference length is 3: bp = 1.
  assert b[0] == pytest.approx(1 / 3)


def test_identical_caption_scores_maximal():
  s = cap.caption_metrics(["a red roof near the road"], [["a red roof near the road"]])
  for n in range(1, 5):
    assert s[f"BLEU-{n}"] == pytest.approx(1.0)
  assert s["ROUGE-L"] == pytest.approx(1.0)
  exact = cap.caption_metrics(
    ["a red roof near the road"], [["a red roof near the road"]], official_meteor=False
  )
  assert "METEOR" not in exact
  assert exact["METEOR-exact"] == pytest.approx(1 - 0.5 * (1 / 6) ** 3)


def test_rouge_l_hand_computed():
  p, r = 3 / 4, 3 / 5  # LCS of "a b c d" and "a c d e f" is "a c d"
  want = (1 + 1.44) * p * r / (r + 1.44 * p)
  assert cap.rouge_l_single(T("a b c d"), [T("a c d e f")]) == pytest.approx(want)


def test_meteor_fragmentation_penalty_counts_chunks():
  # All 4 words match in 2 chunks ("c d", "a b"): penalty 0.5 * (2/4)^3.
  assert cap.meteor_single(T("a b c d"), T("c d a b")) == pytest.approx(1 - 0.5 * 0.125)
  # Recall-weighted harmonic mean: P = 1, R = 2/4, one chunk.
  fmean = 1 * 0.5 / (0.9 * 1 + 0.1 * 0.5)
  assert cap.meteor_single(T("a b"), T("a b c d")) == pytest.approx(
    fmean * (1 - 0.5 * (1 / 2) ** 3)
  )
  assert cap.meteor_single(T("x y"), T("a b")) == 0.0


def test_cider_d_is_10_for_a_unique_exact_match_and_ignores_common_ngrams():
  # Four words, so every n = 1..4 has n-grams (shorter captions get 0 for the missing n).
  hyps = [T("red roof near road"), T("blue lake with trees")]
  refs = [[T("red roof near road")], [T("blue lake with trees")]]
  score, per_item = cap.cider_d(hyps, refs)
  assert per_item == pytest.approx([10.0, 10.0]) and score == pytest.approx(10.0)
  # "image" appears in every reference: idf 0, so it earns nothing.
  hyps = [T("image"), T("image")]
  refs = [[T("image red")], [T("image blue")]]
  assert cap.cider_d(hyps, refs)[0] == pytest.approx(0.0)


def test_cider_d_length_penalty_and_clipping():
  refs = [[T("red roof")], [T("blue lake")]]
  repeated = cap.cider_d([T("red roof red roof"), T("blue lake")], refs)[1][0]
  # Clipping caps the repeated n-grams, and the 2-token length gap costs exp(-4/72).
  assert repeated < 10.0 * math.exp(-4 / 72) + 1e-9


def test_exact_match_and_token_f1():
  assert cap.exact_match("Yes.", ["yes"]) == 1.0
  assert cap.exact_match("the lake", ["lake"]) == 1.0
  assert cap.exact_match("no", ["yes"]) == 0.0
  assert cap.token_f1("3 cars", ["3"]) == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_score_by_task_splits_captions_and_answers():
  rows = [
    {"task": "caption", "prediction": "a red roof", "references": ["a red roof"]},
    {"task": "object_presence", "prediction": "Yes.", "references": ["Yes."]},
    {"task": "counting_captions", "prediction": "4", "references": ["3"]},
  ]
  s = cap.score_by_task(rows)
  assert s["caption/BLEU-1"] == pytest.approx(1.0)
  assert s["object_presence/exact_match"] == 1.0
  assert s["answers/exact_match"] == 0.5
