"""The real-thermal comparison (claim 4) of the pipeline report: SigLIP trained on translated
UCM IR, on real HIT-UAV thermal, or on both, each scored zero-shot on HIT-UAV val.

`summary` reads the `presence_thermal_<arm>_s<seed>` stage results into mean ± std tables,
`claims` states the comparisons with the report's verdict rule, and `section` renders them.
"""

from __future__ import annotations

from typing import Any

from fusionrs_jax.pipeline import stats as pipeline

CLASSES = ("Person", "Car", "Bicycle")
# Per-seed metrics kept in the summary (stage keys of the presence evaluation).
KEYS = (
  *(f"{c}/auc" for c in CLASSES),
  "mean/auc",
  "mean/balanced_acc",
  *(f"{c}/count_acc" for c in CLASSES),
  "mean/count_acc",
  "mean/count_balanced_acc",
  "mean/score_corr",
)
# Data facts, equal for every seed of an arm.
FACTS = (
  "image_size",
  "patch_size",
  "train_captions",
  *(f"{c}/{m}" for c in CLASSES for m in ("median_box_px", "train_caption_mentions")),
  *(f"{c}/count_chance_acc" for c in CLASSES),
)
ARM_TEXT = {
  "translated": "translated UCM IR",
  "real": "real HIT-UAV train",
  "mixed": "translated + real",
}


def summary(pipe, finished: dict) -> dict[str, Any]:
  """{arm: {metric: {per_seed, mean, std}, fact: value}} over the arms that have results."""
  out = {}
  for arm in pipe.c.thermal.arms:
    names = [f"presence_{pipe.thermal_name(arm, s)}" for s in range(int(pipe.c.thermal.seeds))]
    runs = [finished.get(n, {}).get("result", {}) for n in names]
    runs = [r for r in runs if "mean/auc" in r]
    if not runs:
      continue
    table: dict[str, Any] = {}
    for key in KEYS:
      vals = [r[key] for r in runs if key in r]
      if vals:
        table[key] = {"per_seed": vals, **dict(zip(("mean", "std"), pipeline.mean_std(vals)))}
    table.update({k: runs[0][k] for k in FACTS if k in runs[0]})
    table["variant"] = pipe.c.thermal.variant
    out[arm] = table
  return out


def _row(measure: str, a: str, b: str, va: list[float], vb: list[float]) -> dict[str, Any]:
  (ma, sa), (mb, sb) = pipeline.mean_std(va), pipeline.mean_std(vb)
  return {
    "claim": 4,
    "measure": measure,
    "a": a,
    "b": b,
    "a_mean": ma,
    "a_std": sa,
    "b_mean": mb,
    "b_std": sb,
    **pipeline.compare(va, vb),
  }


def claims(table: dict[str, Any]) -> list[dict[str, Any]]:
  """Claim-4 rows on REAL thermal: translated vs chance, mixed vs real (does adding translated
  data help?) and translated vs real, for presence AUC and count-bucket accuracy."""
  rows = []
  auc = lambda arm: table.get(arm, {}).get("mean/auc", {}).get("per_seed")
  count = lambda arm: table.get(arm, {}).get("mean/count_balanced_acc", {}).get("per_seed")
  where = "HIT-UAV val (real thermal)"
  if auc("translated"):
    chance = [0.5] * len(auc("translated"))
    rows.append(
      _row(
        f"{where} presence AUC, mean of 3 classes",
        "translated",
        "chance",
        auc("translated"),
        chance,
      )
    )
  for a, b in (("mixed", "real"), ("translated", "real")):
    if auc(a) and auc(b):
      rows.append(_row(f"{where} presence AUC, mean of 3 classes", a, b, auc(a), auc(b)))
    if count(a) and count(b):
      rows.append(_row(f"{where} count-bucket balanced acc", a, b, count(a), count(b)))
  return rows


def _pm(entry: dict | None) -> str:
  return "-" if not entry else f"{entry['mean']:.3f} ± {entry['std']:.3f}"


def section(table: dict[str, Any], roc_figure: str | None = None) -> list[str]:
  """Markdown of the comparison (with the ROC figure's relative path when drawn); [] when no
  thermal arm ran."""
  if not table:
    return []
  first = next(iter(table.values()))
  lines = [
    "## Real thermal: translated vs real vs mixed training data (HIT-UAV val)",
    "",
    (
      f"SigLIP {first.get('variant', 'trimodal')} at {first.get('image_size', 0):.0f} px (patch "
      f"{first.get('patch_size', 0):.0f} px), the same steps and batch for every arm, trained "
      "on: " + "; ".join(f"**{a}** = {ARM_TEXT[a]}" for a in table) + ". Real HIT-UAV "
      "records have no RGB (left out of any RGB pair) and captions written from their "
      "boxes (counts and grid regions; never an object without a box). All arms are scored "
      "on the HIT-UAV val images, never seen in training."
    ),
    "",
    "| arm | "
    + " | ".join(f"{c} AUC" for c in CLASSES)
    + " | mean AUC | "
    + " | ".join(f"{c} count acc" for c in CLASSES)
    + " | mean count balanced acc |",
    "|---" * 9 + "|",
  ]
  for arm, t in table.items():
    lines.append(
      f"| {arm} | "
      + " | ".join(_pm(t.get(f"{c}/auc")) for c in CLASSES)
      + f" | {_pm(t.get('mean/auc'))} | "
      + " | ".join(_pm(t.get(f"{c}/count_acc")) for c in CLASSES)
      + f" | {_pm(t.get('mean/count_balanced_acc'))} |"
    )
  chance = [
    f"{c} {first[f'{c}/count_chance_acc']:.2f}" for c in CLASSES if f"{c}/count_chance_acc" in first
  ]
  lines += [
    "",
    "Count buckets: no / one / a few (2-4) / many (5+), prompts 'an infrared aerial image with "
    "{bucket} {noun}'; balanced accuracy's chance is 0.25"
    + (
      f"; always answering the most frequent bucket scores {', '.join(chance)}." if chance else "."
    ),
  ]
  corr = {a: t["mean/score_corr"] for a, t in table.items() if "mean/score_corr" in t}
  if corr:
    lines.append(
      "Mean correlation between the three class scores (near 1 = one image property, not the "
      "classes): " + ", ".join(f"{a} {_pm(c)}" for a, c in corr.items()) + "."
    )
  if "Person/median_box_px" in first:
    lines.append(
      "Median longest box side at the model input: "
      + ", ".join(f"{c} {first[f'{c}/median_box_px']:.1f} px" for c in CLASSES)
      + "."
    )
  if roc_figure:
    lines += ["", f"![real-thermal presence ROC]({roc_figure})"]
  return lines + [""]
