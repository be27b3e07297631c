"""The pipeline report's figures and tables: ROC points against the evaluator's AUC, the
matplotlib figures render readable PNGs, captioner seeds aggregate into claim rows with a
noise estimate, and the time table checks the cpu profile's budget."""

import numpy as np
import pytest
from PIL import Image

from fusionrs_jax.evaluators import presence
from fusionrs_jax.pipeline import plots
from fusionrs_jax.pipeline import report as pipeline_report


def test_roc_area_equals_the_presence_auc_with_ties():
  rng = np.random.default_rng(0)
  # Rounded scores: many ties, which must advance TPR and FPR together.
  scores = np.round(rng.normal(size=300), 1)
  labels = rng.random(300) < 0.3 + 0.2 * (scores > 0)
  fpr, tpr = plots.roc_points(scores, labels)
  assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0
  assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
  assert np.trapezoid(tpr, fpr) == pytest.approx(presence.roc_auc(scores, labels), abs=1e-12)
  # A perfect ranking is the unit square.
  fpr, tpr = plots.roc_points(np.arange(10.0), np.arange(10) >= 5)
  assert np.trapezoid(tpr, fpr) == pytest.approx(1.0)


def _png(path) -> np.ndarray:
  with Image.open(path) as im:
    arr = np.asarray(im.convert("RGB"))
  assert arr.shape[0] > 200 and arr.shape[1] > 300
  # Not a blank page: many distinct colors were drawn.
  assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 20
  return arr


def test_figures_render(tmp_path):
  stat = lambda m, *s: {"mean": m, "std": float(np.std(s)), "per_seed": list(s)}
  tables = {
    "trimodal": {"mR": stat(54, 53, 55), "IR->text": stat(17, 12, 21)},
    "rgb_only": {"mR": stat(20, 19, 21), "IR->text": stat(8, 7, 9)},
  }
  _png(plots.grouped_bars(tables, ["mR", "IR->text"], str(tmp_path / "b.png"), "t", "R"))

  rows = lambda k: [{"step": i, "loss": 10.0 * np.exp(-i / 50) + k} for i in range(1, 200)]
  panels = {"siglip": {"siglip_a_s0": rows(0), "siglip_a_s1": rows(0.1)}, "cap": {"c_s0": rows(1)}}
  _png(plots.loss_curves(panels, str(tmp_path / "l.png")))

  rng = np.random.default_rng(1)
  labels = rng.random((80, 3)) < 0.4
  saved = lambda noise: {
    "scores": labels + noise * rng.normal(size=labels.shape),
    "labels": labels,
    "classes": np.array(["Person", "Car", "Bicycle"]),
  }
  path = plots.presence_roc(
    {"real": [saved(0.5), saved(0.6)], "translated": [saved(3.0)]}, str(tmp_path / "r.png"), "t"
  )
  _png(path)


def test_captioner_seeds_give_claim_rows_with_noise():
  runs = lambda *cider: [
    {"caption/CIDEr-D": 0.5, "ir_caption/CIDEr-D": c, "ir_caption/BLEU-4": c / 2} for c in cider
  ]
  rgb_ir = pipeline_report._captioner_row("rgb_ir", "trimodal", runs(0.30, 0.32))
  rgb = pipeline_report._captioner_row("rgb", "trimodal", runs(0.10, 0.12))
  assert rgb_ir["seeds"] == 2
  assert rgb_ir["ir_caption/CIDEr-D"]["per_seed"] == [0.30, 0.32]
  assert rgb_ir["ir_caption/CIDEr-D"]["mean"] == pytest.approx(0.31)
  # Metrics a run did not report are left out, not zero.
  assert "answers/exact_match" not in rgb_ir
  rows = pipeline_report.claims({}, {}, {"captioner_rgb_ir": rgb_ir, "captioner_rgb": rgb})
  cider = next(r for r in rows if r["claim"] == 3 and "CIDEr-D" in r["measure"])
  assert cider["noise"] is not None and cider["verdict"] == "holds"
  assert cider["diff"] == pytest.approx(0.2)


def test_time_section_sums_families_and_checks_the_cpu_budget():
  secs = {
    "ingest_ucm": 60.0,
    "translator": 600.0,
    "hit_uav_captions": 30.0,
    "siglip_trimodal_s0": 1200.0,
    "presence_trimodal_s0": 60.0,
    "captioner_rgb_s0": 2000.0,
    "thermal_real_s0": 3000.0,
    "presence_thermal_real_s0": 40.0,
  }
  text = "\n".join(
    pipeline_report._time_section({"stage_seconds": secs, "total_seconds": sum(secs.values())})
  )
  assert "| SigLIP variants + presence | 2 | 21m00s |" in text
  assert "| real-thermal arms + presence | 2 | 50m40s |" in text
  # cpu profile: 60 + 600 + 1200 + 60 + 2000 s = 65m20s, within 90 minutes.
  assert "took 65m20s against a budget of 90m00s (within budget)" in text
  secs["captioner_rgb_s1"] = 2000.0
  text = "\n".join(
    pipeline_report._time_section({"stage_seconds": secs, "total_seconds": sum(secs.values())})
  )
  assert "(OVER budget)" in text


def test_train_curve_keeps_the_newest_row_of_a_resumed_step_and_its_start():
  rows = [{"step": s, "loss": 10.0 - s} for s in range(1, 7)]
  # Killed after step 6, resumed from the step-4 checkpoint: steps 5 and 6 are logged again.
  rows += [{"step": 5, "loss": 1.0}, {"step": 6, "loss": 0.5}, {"step": 7, "loss": 0.25}]
  rows.append({"step": 7, "eval/mR": 40.0})
  steps, y = plots.train_curve(rows, smooth=10)
  # 7 points: too short to smooth, so every step stays, and the re-logged values win.
  assert steps.tolist() == [1, 2, 3, 4, 5, 6, 7]
  assert y.tolist() == [9.0, 8.0, 7.0, 6.0, 1.0, 0.5, 0.25]
  long = [{"step": s, "loss": float(s % 2)} for s in range(1, 201)]
  steps, y = plots.train_curve(long, smooth=10)
  assert len(steps) == 191 and steps[0] == 10 and np.allclose(y, 0.5)
  assert plots.train_curve([{"step": 1, "eval/mR": 3.0}]) is None
