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
