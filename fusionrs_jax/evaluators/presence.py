r"""Zero-shot object presence on images with boxes (e.g. REAL thermal HIT-UAV val).

For every class the SigLIP run's image embedding is compared with "an infrared aerial image
with cars" and with the class-free "an infrared aerial image"; the score is the cosine
difference, so "present" is predicted when naming the class brings the text closer. The
class-free baseline removes what every prompt shares (the image's affinity to the prefix)
and keeps the noun. The earlier contrast, "with cars" against "without cars", cancelled the
noun instead: for a text tower that has never seen "without" the difference is one
class-free direction, so the three class scores correlated at 0.99 (stop 23) and measured one
image property (HIT-UAV people AUC 0.85 and, as cars and people rarely share an image, car
AUC 0.11). `mean/score_corr`, the mean correlation between the class scores, flags that
failure: near 1, the scores do not tell the classes apart. Labels come from the record's
boxes (`meta["objects"][i]["category"]`). Per class it reports

  auc           ROC AUC of the score against presence (0.5 = chance, threshold-free)
  acc           accuracy of the "class prompt beats the class-free one" decision
  balanced_acc  mean of the recalls of present and absent images (0.5 = chance)
  chance_acc    accuracy of always answering the majority label (what acc must beat)
  prevalence    fraction of images with the class

zero-shot count-bucket accuracy (evaluators/counting.py: `{class}/count_acc` ...), and
two diagnostics that say whether the test can be passed at all:

  median_box_px           median longest box side at the model's input size (the whole
                          image squashed to image_size^2), against its ViT patch size
  train_caption_mentions  captions of the run's training split naming the class (any of
                          NOUN_FORMS); a class the captions never name has no trained
                          text embedding to match

Run on a finished SigLIP run folder:
  python -m fusionrs_jax.cli.evaluate presence --checkpoint=workdirs/ucm_trimodal \
    --data=data/hit_uav --split=val --out=presence.json
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from fusionrs_jax.core import records
from fusionrs_jax.data import images as image_io
from fusionrs_jax.evaluators import counting

# Box category -> plural noun used in the prompts (HIT-UAV's categories).
CLASSES = {"Person": "people", "Car": "cars", "Bicycle": "bicycles"}
WITH_PROMPT = "an infrared aerial image with {}"
# The class-free baseline each class prompt is compared with.
BASE_PROMPT = "an infrared aerial image"
# Words that count as naming a class in a training caption (whole words, lower case).
NOUN_FORMS = {
  "Person": ("people", "person", "persons", "pedestrian", "pedestrians"),
  "Car": ("car", "cars"),
  "Bicycle": ("bicycle", "bicycles", "bike", "bikes"),
}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Area under the ROC curve (Mann-Whitney U with tied scores counted half); NaN when
  only one label is present."""
  scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
  pos, neg = int(labels.sum()), int((~labels).sum())
  if not pos or not neg:
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  ranks = np.empty(len(scores), np.float64)
  sorted_scores = scores[order]
  i = 0
  while i < len(scores):
    j = i
    while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
      j += 1
    ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0  # average rank of a tie group (1-based)
    i = j + 1
  u = ranks[labels].sum() - pos * (pos + 1) / 2.0
  return float(u / (pos * neg))


def class_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """Metrics of one class from scores (>0 = predicted present) and boolean labels."""
  labels = np.asarray(labels, bool)
  pred = np.asarray(scores) > 0
  prevalence = float(labels.mean())
  recalls = [float(np.mean(pred[labels == v] == v)) for v in (True, False) if (labels == v).any()]
  return {
    "auc": roc_auc(scores, labels),
    "acc": float(np.mean(pred == labels)),
    "balanced_acc": float(np.mean(recalls)),
    "chance_acc": max(prevalence, 1.0 - prevalence),
    "prevalence": prevalence,
    "predicted_present": float(pred.mean()),
  }


def presence_labels(recs: Sequence[records.Record], classes: Sequence[str]) -> np.ndarray:
  """[N, C] bool: does record n have a box of class c. Records without an `objects` list
  are an error (presence would silently read as absent)."""
  out = np.zeros([len(recs), len(classes)], bool)
  for n, rec in enumerate(recs):
    objects = rec.meta.get("objects")
    if not isinstance(objects, list):
      raise records.RecordError(
        f"record {rec.id!r} has no meta['objects'] box list; "
        f"presence needs box annotations (e.g. HIT-UAV)"
      )
    present = {o.get("category") for o in objects if isinstance(o, dict)}
    out[n] = [c in present for c in classes]
  return out


def median_box_px(
  recs: Sequence[records.Record], classes: Sequence[str], image_size: int, modality: str = "ir"
) -> dict[str, float]:
  """Median longest side, in model-input pixels, of each class's boxes ([x, y, w, h] in the
  stored image's pixels) once the `modality` image is resized to image_size x image_size.
  NaN for a class without boxes."""
  sides: dict[str, list[float]] = {c: [] for c in classes}
  for rec in recs:
    data = getattr(rec, modality)
    # The one decoder's size: what the loader resizes (upright by EXIF orientation).
    width, height = image_io.open_image(
      data, f"record {rec.id!r}: unreadable {modality} image"
    ).size
    for obj in rec.meta.get("objects") or []:
      if isinstance(obj, dict) and obj.get("category") in sides:
        w, h = obj["bbox"][2:4]
        sides[obj["category"]].append(max(w * image_size / width, h * image_size / height))
  return {c: float(np.median(v)) if v else float("nan") for c, v in sides.items()}


def caption_mentions(
  texts: Sequence[str], classes: Sequence[str], forms: dict[str, Sequence[str]] = NOUN_FORMS
) -> dict[str, int]:
  """How many of `texts` name each class (any of its word forms, whole words)."""
  patterns = {c: re.compile(r"\b(" + "|".join(map(re.escape, forms[c])) + r")\b") for c in classes}
  return {c: sum(bool(p.search(t.lower())) for t in texts) for c, p in patterns.items()}


def training_captions(data_dir: str, split: str = "train") -> list[str]:
  """Scene and IR-aware captions of a dataset split (what the text tower was trained on)."""
  return [
    t
    for rec in records.read_records(records.list_shards(data_dir, split))
    for t in (*rec.captions, *rec.ir_captions)
  ]


def presence_scores(
  image_emb: np.ndarray, with_emb: np.ndarray, base_emb: np.ndarray
) -> np.ndarray:
  """[N, D] images, [C, D] class prompts, [D] (or [1, D]) class-free prompt (unit norm) ->
  [N, C] scores: cos(image, class prompt) - cos(image, base prompt)."""
  return image_emb @ with_emb.T - image_emb @ np.reshape(base_emb, (-1, 1))


def score_correlation(scores: np.ndarray) -> float:
  """Mean Pearson correlation between the columns (classes) of [N, C] scores; NaN with one
  class or a constant column."""
  if scores.shape[1] < 2 or np.any(np.std(scores, axis=0) == 0):
    return float("nan")
  corr = np.corrcoef(scores.T)
  return float(np.mean(corr[np.triu_indices(scores.shape[1], 1)]))


def evaluate(
  embed_images: Callable[[np.ndarray], np.ndarray],
  embed_texts: Callable[[list[str]], np.ndarray],
  recs: Sequence[records.Record],
  images: np.ndarray,
  classes: dict[str, str] = CLASSES,
  with_prompt: str = WITH_PROMPT,
  base_prompt: str = BASE_PROMPT,
  scores_sink: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
  """Flat metrics `{class}/{metric}` plus `mean/{auc,balanced_acc}` over classes.
  `scores_sink`, when given, receives the per-image scores [N, C], the labels [N, C] and the
  class names (for ROC curves)."""
  names = list(classes)
  labels = presence_labels(recs, names)
  img = embed_images(images)
  w = embed_texts([with_prompt.format(classes[c]) for c in names])
  base = embed_texts([base_prompt])[0]
  scores = presence_scores(img, w, base)
  if scores_sink is not None:
    scores_sink.update(
      scores=np.asarray(scores), labels=np.asarray(labels), classes=np.array(names)
    )
  out: dict[str, float] = {"images": float(len(recs))}
  for i, name in enumerate(names):
    out.update({f"{name}/{k}": v for k, v in class_metrics(scores[:, i], labels[:, i]).items()})
  for k in ("auc", "balanced_acc"):
    out[f"mean/{k}"] = float(np.nanmean([out[f"{n}/{k}"] for n in names]))
  out["mean/score_corr"] = score_correlation(np.asarray(scores))
  if set(names) <= set(counting.NOUNS):
    out.update(counting.evaluate(img, embed_texts, recs, names))
  return out


def format_table(metrics: dict[str, float]) -> str:
  names = [c for c in CLASSES if f"{c}/auc" in metrics]
  cols = tuple(
    c
    for c in (
      "prevalence",
      "auc",
      "acc",
      "chance_acc",
      "balanced_acc",
      "median_box_px",
      "train_caption_mentions",
    )
    if f"{names[0]}/{c}" in metrics
  )
  widths = [max(14, len(c) + 2) for c in cols]
  lines = [f"{'class':<10}" + "".join(f"{c:>{w}}" for c, w in zip(cols, widths))]
  for n in names:
    lines.append(
      f"{n:<10}" + "".join(f"{metrics[f'{n}/{c}']:{w}.3f}" for c, w in zip(cols, widths))
    )
  return "\n".join(lines)


if __name__ == "__main__":
  import runpy
  import sys

  print("deprecated: use `python -m fusionrs_jax.cli.evaluate presence`", file=sys.stderr)
  sys.argv.insert(1, "presence")
  runpy.run_module("fusionrs_jax.cli.evaluate", run_name="__main__", alter_sys=True)
