"""Zero-shot object counting in count buckets, on images with boxes (e.g. REAL thermal HIT-UAV).

For every class the SigLIP run scores one prompt per bucket, "an infrared aerial image with
{no | one | a few | many} cars", and predicts the bucket whose prompt is most similar to the
image. The true bucket comes from the record's boxes. Per class it reports

  count_acc           accuracy of the predicted bucket
  count_balanced_acc  mean over the buckets present of their recall (chance = 1 / buckets)
  count_chance_acc    accuracy of always answering the most frequent bucket

The bucket phrases are the ones data_prep.ir_text.boxes writes into box-grounded captions, so a
run trained on such captions has seen them (a test keeps the two lists equal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fusionrs_jax.core import records

# (lowest count, highest count or None, phrase).
BUCKETS = ((0, 0, "no"), (1, 1, "one"), (2, 4, "a few"), (5, None, "many"))
COUNT_PROMPT = "an infrared aerial image with {} {}"
# Box category -> (singular, plural) noun ("one car", "a few cars").
NOUNS = {"Person": ("person", "people"), "Car": ("car", "cars"), "Bicycle": ("bicycle", "bicycles")}


def box_counts(recs: Sequence[records.Record], classes: Sequence[str]) -> np.ndarray:
  """[N, C] int: boxes of class c in record n (records must carry meta['objects'])."""
  out = np.zeros([len(recs), len(classes)], np.int64)
  index = {c: i for i, c in enumerate(classes)}
  for n, rec in enumerate(recs):
    objects = rec.meta.get("objects")
    if not isinstance(objects, list):
      raise records.RecordError(f"record {rec.id!r} has no meta['objects'] box list")
    for obj in objects:
      if isinstance(obj, dict) and obj.get("category") in index:
        out[n, index[obj["category"]]] += 1
  return out


def bucket_index(counts: np.ndarray) -> np.ndarray:
  """Counts (any shape) -> index into BUCKETS, same shape."""
  out = np.full(np.shape(counts), -1, np.int64)
  for i, (low, high, _) in enumerate(BUCKETS):
    hit = (counts >= low) & (True if high is None else counts <= high)
    out = np.where(hit & (out < 0), i, out)
  return out


def prompts(category: str) -> list[str]:
  """One prompt per bucket, with the noun's number agreeing ("one car", "no cars")."""
  singular, plural = NOUNS[category]
  return [COUNT_PROMPT.format(p, singular if p == "one" else plural) for _, _, p in BUCKETS]


def bucket_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
  """[N] predicted and true bucket indices -> count_acc, count_balanced_acc, count_chance_acc."""
  present = np.unique(truth)
  recalls = [float(np.mean(pred[truth == b] == b)) for b in present]
  return {
    "count_acc": float(np.mean(pred == truth)),
    "count_balanced_acc": float(np.mean(recalls)),
    "count_chance_acc": float(max(np.mean(truth == b) for b in present)),
  }


def evaluate(
  image_emb: np.ndarray,
  embed_texts: Callable[[list[str]], np.ndarray],
  recs: Sequence[records.Record],
  classes: Sequence[str] = tuple(NOUNS),
) -> dict[str, float]:
  """image_emb [N, D] (unit norm) -> flat `{class}/count_*` plus `mean/count_*` over classes."""
  truth = bucket_index(box_counts(recs, classes))
  out: dict[str, float] = {}
  for i, cat in enumerate(classes):
    text = embed_texts(prompts(cat))  # [len(BUCKETS), D]
    pred = np.argmax(image_emb @ text.T, axis=1)
    out.update({f"{cat}/{k}": v for k, v in bucket_metrics(pred, truth[:, i]).items()})
  for k in ("count_acc", "count_balanced_acc"):
    out[f"mean/{k}"] = float(np.mean([out[f"{c}/{k}"] for c in classes]))
  return out
