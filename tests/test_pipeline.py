"""The end-to-end pipeline on a 16-image slice of the real UCM/HIT-UAV data (tiny profile),
plus the pieces its report relies on (noise-aware comparisons, presence metrics)."""

import json
import os

import numpy as np
import pytest

from fusionrs_jax.evaluators import presence
from fusionrs_jax.pipeline import run as pipeline
from fusionrs_jax.pipeline import stats


def test_compare_calls_differences_inside_the_seed_noise_that():
  assert stats.compare([10.0, 11.0, 12.0], [1.0, 2.0, 3.0])["verdict"] == "holds"
  assert stats.compare([1.0, 2.0, 3.0], [10.0, 11.0, 12.0])["verdict"] == "reversed"
  close = stats.compare([10.0, 14.0, 12.0], [11.0, 13.0, 11.5])
  assert close["verdict"] == "within noise"
  # noise = 2 * sqrt(sa^2/n + sb^2/n) with sample std (ddof=1).
  np.testing.assert_allclose(
    close["noise"], 2 * np.sqrt(4 / 3 + np.var([11, 13, 11.5], ddof=1) / 3)
  )
  assert "no noise estimate" in stats.compare([2.0], [1.0])["verdict"]


def test_roc_auc_matches_pairwise_definition():
  rng = np.random.default_rng(0)
  scores = np.round(rng.normal(size=60), 1)  # rounding makes ties
  labels = rng.random(60) < 0.4
  pos, neg = scores[labels], scores[~labels]
  pairwise = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
  np.testing.assert_allclose(presence.roc_auc(scores, labels), pairwise, rtol=1e-12)
  assert presence.roc_auc(np.arange(4.0), np.array([0, 0, 1, 1], bool)) == 1.0
  assert np.isnan(presence.roc_auc(np.arange(3.0), np.ones(3, bool)))


def test_presence_metrics_on_known_scores():
  labels = np.array([1, 1, 1, 0], bool)
  m = presence.class_metrics(np.array([0.3, -0.1, 0.2, -0.5]), labels)
  assert m["acc"] == 0.75 and m["chance_acc"] == 0.75 and m["prevalence"] == 0.75
  assert m["balanced_acc"] == pytest.approx((2 / 3 + 1) / 2)
  assert m["auc"] == 1.0


def test_presence_labels_need_boxes():
  from fusionrs_jax.core import records

  rec = records.Record(
    id="a",
    source="s",
    split="val",
    ir=b"x",
    ir_origin="real",
    meta={"objects": [{"category": "Car", "bbox": [0, 0, 1, 1]}]},
  )
  np.testing.assert_array_equal(presence.presence_labels([rec], ["Person", "Car"]), [[False, True]])
  with pytest.raises(records.RecordError, match="'b'.*objects"):
    presence.presence_labels(
      [records.Record(id="b", source="s", split="val", ir=b"x", ir_origin="real")], ["Car"]
    )


def _png(width: int, height: int) -> bytes:
  import io

  from PIL import Image

  buf = io.BytesIO()
  Image.new("L", (width, height)).save(buf, "PNG")
  return buf.getvalue()


def test_box_sizes_are_measured_at_the_model_input_resolution():
  from fusionrs_jax.core import records

  objs = [
    {"category": "Car", "bbox": [0, 0, 32, 16]},  # 6.4 x 4.0 px at 64 x 64
    {"category": "Car", "bbox": [10, 10, 10, 40]},  # 2.0 x 10.0 px
    {"category": "Car", "bbox": [5, 5, 15, 8]},  # 3.0 x 2.0 px
    {"category": "Person", "bbox": [1, 1, 5, 4]},
  ]
  rec = records.Record(
    id="h/1", source="h", split="val", ir=_png(320, 256), ir_origin="real", meta={"objects": objs}
  )
  got = presence.median_box_px([rec], ["Car", "Person", "Bicycle"], image_size=64)
  assert got["Car"] == pytest.approx(6.4)
  assert got["Person"] == pytest.approx(1.0)
  assert np.isnan(got["Bicycle"])
  broken = records.Record(
    id="h/2", source="h", split="val", ir=b"not an image", ir_origin="real", meta={"objects": objs}
  )
  with pytest.raises(records.RecordError, match="'h/2'.*unreadable ir"):
    presence.median_box_px([broken], ["Car"], image_size=64)


def test_caption_mentions_count_whole_words_of_each_class():
  texts = [
    "Many cars are parked.",
    "A carpet of green fields.",
    "Two people and a bike.",
    "a car near PEOPLE",
    "bicycles",
  ]
  assert presence.caption_mentions(texts, ["Person", "Car", "Bicycle"]) == {
    "Person": 2,
    "Car": 2,
    "Bicycle": 2,
  }


def _slice_sources(shared: str, out: str) -> tuple[str, str]:
  """UCM: 8 train / 4 val / 4 test images; HIT-UAV: 6 train / 6 val images (real files,
  linked; the JSON files are filtered copies)."""
  ucm = os.path.join(out, "ucm_captions")
  os.makedirs(ucm)
  with open(os.path.join(shared, "ucm_captions", "dataset_ucm.json")) as f:
    data = json.load(f)
  want = {"train": 8, "val": 4, "test": 4}
  keep = []
  for im in data["images"]:
    if want.get(im["split"], 0) > 0:
      want[im["split"]] -= 1
      keep.append(im)
  with open(os.path.join(ucm, "dataset_ucm.json"), "w") as f:
    json.dump({**data, "images": keep}, f)
  os.symlink(os.path.join(shared, "ucm_captions", "images"), os.path.join(ucm, "images"))
  hit = os.path.join(out, "hit_uav")
  os.makedirs(os.path.join(hit, "annotations"))
  for split in ("train", "val"):
    with open(os.path.join(shared, "hit_uav", "annotations", f"{split}.json")) as f:
      ann = json.load(f)
    images = ann["images"][:6]
    ids = {im["id"] for im in images}
    ann = {
      **ann,
      "images": images,
      "annotation": [a for a in ann["annotation"] if a["image_id"] in ids],
    }
    with open(os.path.join(hit, "annotations", f"{split}.json"), "w") as f:
      json.dump(ann, f)
  os.symlink(os.path.join(shared, "hit_uav", "images"), os.path.join(hit, "images"))
  return ucm, hit


@pytest.mark.slow
def test_tiny_pipeline_end_to_end_then_skips_finished_stages(shared_data, tmp_path):
  from configs import pipeline_fusionrs

  ucm, hit = _slice_sources(shared_data, str(tmp_path / "src"))
  c = pipeline_fusionrs.get_config("profile=tiny")
  c.ucm_dir, c.hit_uav_dir = ucm, hit
  c.out, c.results, c.docs = (str(tmp_path / d) for d in ("runs", "results", "docs"))
  pipe = pipeline.Pipeline(c)
  lines = []
  finished = pipe.run(echo=lines.append)

  names = [s.name for s in pipe.stages()]
  assert list(finished) == names
  # 7 data stages (with HIT-UAV's box captions), 3 variants x 2 seeds x (train + presence),
  # (3 inputs + scene encoder) x 2 seeds, 3 thermal arms x 1 seed x (train + presence).
  assert len(names) == 7 + 12 + 8 + 6
  assert finished["ingest_ucm"]["result"]["splits"] == {"train": 8, "val": 4, "test": 4}
  assert finished["translate"]["result"]["translated"] == 16
  summary = json.load(open(os.path.join(c.results, "summary.json")))
  for v in ("trimodal", "scene_captions", "rgb_only"):
    assert len(summary["retrieval"][v]["IR->text"]["per_seed"]) == 2
    assert 0.0 <= summary["presence"][v]["mean/auc"]["mean"] <= 1.0
    # The 8 training images' 40 scene captions + 4 IR-aware captions each.
    assert summary["presence"][v]["train_captions"] == 8 * 5 + 8 * 4
    assert summary["presence"][v]["Car/median_box_px"] > 0
  assert set(summary["captioning"]) == {
    "captioner_rgb_ir",
    "captioner_rgb",
    "captioner_ir",
    "captioner_rgb_ir_scene_encoder",
  }
  for row in summary["captioning"].values():
    assert row["seeds"] == 2 and len(row["ir_caption/CIDEr-D"]["per_seed"]) == 2
  assert {cl["claim"] for cl in summary["claims"]} == {1, 2, 3, 4}
  # Two captioner seeds per side: claim 3 has a noise estimate.
  assert all(cl["noise"] is not None for cl in summary["claims"] if cl["claim"] == 3)
  # The real-thermal arms: HIT-UAV train got captions from its boxes; each arm is scored.
  hit = finished["hit_uav_captions"]["result"]["splits"]
  assert hit["train"]["records"] == 6 and hit["train"]["ir_captions"] > 0
  assert set(summary["thermal"]) == {"translated", "real", "mixed"}
  for t in summary["thermal"].values():
    assert 0.0 <= t["mean/auc"]["mean"] <= 1.0 and 0.0 <= t["mean/count_acc"]["mean"] <= 1.0
  # Training captions: UCM's 8 x (5 + 4); HIT-UAV's 6 x (5 box + 4 IR-aware); both when mixed.
  assert summary["thermal"]["translated"]["train_captions"] == 8 * 9
  assert summary["thermal"]["real"]["train_captions"] == 6 * 9
  assert summary["thermal"]["mixed"]["train_captions"] == 8 * 9 + 6 * 9
  measures = [cl["a"] + "/" + cl["b"] for cl in summary["claims"] if cl["claim"] == 4]
  assert "mixed/real" in measures and "translated/chance" in measures
  tr = summary["translation"]
  assert set(tr["generator"]) == {"intensity_w1", "gradient_w1", "contrast_w1"}
  # Gray and inverted gray share the gradient/contrast statistics (|d(1-x)| = |dx|).
  assert tr["gray"]["gradient_w1"] == pytest.approx(tr["inverted"]["gradient_w1"], rel=1e-2)
  page = open(os.path.join(c.docs, "RESULTS.md")).read()
  assert "## The four claims" in page and "| total" in page.replace("**", "")
  assert summary["unfinished"] == [] and "Incomplete run" not in page
  assert "Can the test be passed?" in page and "## Real thermal" in page
  assert "against a budget of 90m00s" in page and "| ir_brightness |" in page
  figs = (
    "translation_grid.png",
    "retrieval.png",
    "caption_pairs.png",
    "loss_curves.png",
    "presence_roc.png",
    "thermal_roc.png",
  )
  for fig in figs:
    assert f"](results/{fig})" in page
    assert os.path.getsize(os.path.join(c.docs, "results", fig)) > 0
  for name in names:
    assert os.path.exists(os.path.join(c.results, f"{name}.json"))

  # A re-run does no work: every stage reports its earlier time, the report is rebuilt.
  again = []
  before = os.path.getmtime(os.path.join(c.out, "stages", "translator.json"))
  pipe.run(echo=again.append)
  assert all("done earlier" in line for line in again[:-1])
  assert os.path.getmtime(os.path.join(c.out, "stages", "translator.json")) == before
  # --redo forgets a stage family.
  assert pipe.forget(["presence_rgb_only"]) == ["presence_rgb_only_s0", "presence_rgb_only_s1"]


def test_cli_lists_stages_and_names_a_missing_source_in_one_line(tmp_path):
  import subprocess
  import sys

  from tests.conftest import REPO

  base = [
    sys.executable,
    "-m",
    "fusionrs_jax.pipeline",
    "--config=configs/pipeline_fusionrs.py:profile=tiny",
    f"--config.out={tmp_path / 'runs'}",
    f"--config.results={tmp_path / 'results'}",
    f"--config.docs={tmp_path / 'docs'}",
    f"--config.ucm_dir={tmp_path / 'nowhere'}",
  ]
  listed = subprocess.run(base + ["--list"], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert listed.returncode == 0, listed.stderr
  names = [line.split()[0] for line in listed.stdout.splitlines()]
  assert names[:7] == [
    "ingest_ucm",
    "ingest_hit_uav",
    "translator",
    "translate",
    "ir_captions",
    "hit_uav_captions",
    "tokenizer",
  ]
  assert "siglip_rgb_only_s1" in names and "captioner_ir_s1" in names
  failed = subprocess.run(base, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert failed.returncode == 2
  last = failed.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "nowhere/dataset_ucm.json not found" in last
  assert "Traceback" not in failed.stderr


def test_presence_section_explains_box_sizes_without_the_training_captions():
  from fusionrs_jax.pipeline import report as pipeline_report

  stat = {"mean": 0.5, "std": 0.01, "per_seed": [0.49, 0.51]}
  row = {f"{cl}/{m}": stat for cl in pipeline_report.PRESENCE_CLASSES for m in ("auc",)}
  row.update({"mean/auc": stat, "mean/balanced_acc": stat, "image_size": 64.0, "patch_size": 8.0})
  for cl, px in zip(pipeline_report.PRESENCE_CLASSES, (2.4, 6.6, 3.5)):
    row[f"{cl}/prevalence"], row[f"{cl}/median_box_px"] = 0.5, px
  text = "\n".join(pipeline_report._presence_section({"presence": {"trimodal": row}}))
  assert "Person 2.4 px, Car 6.6 px, Bicycle 3.5 px" in text
  assert "training captions" not in text
  row.update(
    {
      "train_captions": 100.0,
      "Person/train_caption_mentions": 0.0,
      "Car/train_caption_mentions": 40.0,
      "Bicycle/train_caption_mentions": 0.0,
    }
  )
  text = "\n".join(pipeline_report._presence_section({"presence": {"trimodal": row}}))
  assert "of the 100 training captions (scene + IR-aware) 0 name Person, 40 name Car" in text


def test_captioner_seeds_go_to_the_seeded_runs_only():
  from configs import pipeline_fusionrs

  c = pipeline_fusionrs.get_config("profile=cpu")
  names = [n for n, *_ in pipeline.Pipeline(c).captioner_runs()]
  # Claim 3 compares rgb_ir with rgb: those get 2 seeds, the other runs one.
  assert names == [
    "captioner_rgb_ir_s0",
    "captioner_rgb_ir_s1",
    "captioner_rgb_s0",
    "captioner_rgb_s1",
    "captioner_ir_s0",
    "captioner_rgb_ir_scene_encoder_s0",
  ]
  c.captioner.seeded_runs, c.captioner.seeds = (), 3
  runs = pipeline.Pipeline(c).captioner_runs()
  assert len(runs) == 4 * 3 and runs[-1] == (
    "captioner_rgb_ir_scene_encoder_s2",
    "rgb_ir",
    "scene_captions",
    2,
  )
