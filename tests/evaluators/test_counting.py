"""Zero-shot count buckets: bucket edges, prompts and metrics on hand-built embeddings."""

import numpy as np
import pytest

from data_prep.ir_text import boxes
from fusionrs_jax.core import records
from fusionrs_jax.evaluators import counting, presence


def test_buckets_and_prompts_match_the_box_captions_the_model_trains_on():
  assert counting.BUCKETS == boxes.BUCKETS and counting.NOUNS == boxes.NOUNS
  np.testing.assert_array_equal(
    counting.bucket_index(np.array([0, 1, 2, 4, 5, 9])), [0, 1, 2, 2, 3, 3]
  )
  assert counting.prompts("Car") == [
    "an infrared aerial image with no cars",
    "an infrared aerial image with one car",
    "an infrared aerial image with a few cars",
    "an infrared aerial image with many cars",
  ]


def _recs(car_counts):
  objs = lambda n: [{"category": "Car", "bbox": [0, 0, 4, 4]}] * n
  return [
    records.Record(
      id=f"r{i}", source="t", split="val", ir=b"x", ir_origin="real", meta={"objects": objs(n)}
    )
    for i, n in enumerate(car_counts)
  ]


def test_count_metrics_on_embeddings_with_known_answers():
  """Cars 0, 1, 3, 7 (buckets 0..3); the images point at buckets 0, 1, 2, 2."""
  classes = list(counting.NOUNS)
  dims = {p: i for i, p in enumerate(p for c in classes for p in counting.prompts(c))}
  embed_texts = lambda texts: np.eye(len(dims))[[dims[t] for t in texts]]
  image = np.zeros((4, len(dims)))
  for n, b in enumerate([0, 1, 2, 2]):
    image[n, dims[counting.prompts("Car")[b]]] = 1.0
  out = counting.evaluate(image, embed_texts, _recs([0, 1, 3, 7]), classes)
  assert out["Car/count_acc"] == pytest.approx(0.75)
  assert out["Car/count_balanced_acc"] == pytest.approx(0.75)  # recalls 1, 1, 1, 0
  assert out["Car/count_chance_acc"] == pytest.approx(0.25)
  # No person anywhere; ties resolve to the first bucket ("no"), which is right.
  assert out["Person/count_acc"] == 1.0 and out["Person/count_chance_acc"] == 1.0
  assert out["mean/count_acc"] == pytest.approx((0.75 + 1 + 1) / 3)


def test_presence_evaluate_reports_count_buckets_too():
  classes = dict(presence.CLASSES)
  recs = _recs([0, 2, 6])
  rng = np.random.default_rng(0)
  table: dict[str, np.ndarray] = {}

  def embed_texts(texts):
    return np.stack([table.setdefault(t, rng.normal(size=8)) for t in texts])

  out = presence.evaluate(lambda x: x, embed_texts, recs, rng.normal(size=(3, 8)), classes)
  assert {"Car/auc", "Car/count_acc", "mean/count_balanced_acc"} <= set(out)


def test_presence_scores_are_class_specific_where_with_vs_without_was_not():
  """A bag-of-words text tower (prompt = sum of word vectors, as a tower that never saw
  "without" behaves): each image shows the nouns of its boxes. The class-free baseline keeps
  each class's noun (AUC 1 for every class); a "with X" vs "without X" contrast would cancel
  the noun and give every class the same score."""
  dim, vec = 64, {}
  word = lambda w: vec.setdefault(w, np.eye(dim)[len(vec)])  # one axis per word
  norm = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  embed_texts = lambda texts: norm(np.stack([sum(word(w) for w in t.split()) for t in texts]))
  kinds = [("Person",), ("Car",), ("Person", "Bicycle"), ("Car", "Bicycle"), ()] * 3
  recs = [
    records.Record(
      id=f"r{i}",
      source="t",
      split="val",
      ir=b"x",
      ir_origin="real",
      meta={"objects": [{"category": c, "bbox": [0, 0, 4, 4]} for c in k]},
    )
    for i, k in enumerate(kinds)
  ]
  nouns = presence.CLASSES
  shown = [word("image") + sum((word(nouns[c]) for c in k), np.zeros(dim)) for k in kinds]
  noise = 0.01 * np.random.default_rng(0).normal(size=(len(kinds), dim))
  images = norm(np.stack(shown) + noise)
  out = presence.evaluate(lambda x: x, embed_texts, recs, images)
  for c in nouns:
    assert out[f"{c}/auc"] == 1.0 and out[f"{c}/balanced_acc"] == 1.0, c
  assert out["mean/score_corr"] < 0.5
  w = embed_texts([f"an infrared aerial image with {n}" for n in nouns.values()])
  wo = embed_texts([f"an infrared aerial image without {n}" for n in nouns.values()])
  old = images @ w.T - images @ wo.T
  np.testing.assert_allclose(old, old[:, :1] * np.ones((1, 3)), atol=1e-12)
