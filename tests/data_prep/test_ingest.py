"""Ingest: rejects with reasons, split-safe dedup, idempotent and resumable writes, exports."""

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_prep.ingest import tfds_export
from data_prep.ingest import writer as ingest_lib
from data_prep.ingest.sources import SourceItem
from data_prep.ingest.writer import IngestOptions, ingest
from fusionrs_jax.core import records
from fusionrs_jax.core.records import Record

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _png(seed: int, size: int = 40) -> bytes:
  pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="PNG")
  return buf.getvalue()


def _records(n: int = 30) -> list[Record]:
  """Fresh synthetic captioned records: train/val/test round robin, distinct images."""
  splits = ("train", "val", "test")
  return [
    Record(
      id=f"syn/{i}",
      source="syn",
      split=splits[i % 3],
      rgb=_png(i),
      captions=[f"scene {i} with {i % 4} roads", f"caption {i}"],
      label=f"class{i % 2}",
    )
    for i in range(n)
  ]


def _opts(**kw) -> IngestOptions:
  return IngestOptions(progress=False, **{"records_per_shard": 4, "chunk_size": 8, **kw})


def _tree_bytes(root) -> dict[str, bytes]:
  """Every file under root by relative path (symlinks as their targets)."""
  out = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      rel = os.path.relpath(path, root)
      if os.path.islink(path):
        out[rel] = b"->" + os.readlink(path).encode()
      else:
        with open(path, "rb") as f:
          out[rel] = f.read()
  return out


def _rejects(out_dir) -> list[dict]:
  with open(os.path.join(out_dir, "rejects.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_writes_splits_info_and_empty_rejects(tmp_path):
  summary = ingest(_records(), str(tmp_path), "syn", _opts())
  assert summary["splits"] == {"train": 10, "val": 10, "test": 10}
  assert summary["captions"] == {"train": 20, "val": 20, "test": 20}
  assert summary["rejects"] == {} and _rejects(tmp_path) == []
  val = list(records.read_records(records.list_shards(str(tmp_path), "val")))
  assert [r.id for r in val] == [f"syn/{i}" for i in range(1, 30, 3)]
  assert len(records.list_shards(str(tmp_path), "val")) == 3  # 10 records, 4 per shard
  info = records.read_info(str(tmp_path))
  assert info["splits"]["train"]["records"] == 10 and info["ingest"]["rejects"] == {}
  assert not os.path.exists(tmp_path / ".ingest-syn")  # work folder cleaned up


def test_duplicate_image_across_splits_is_moved_to_train(tmp_path):
  recs = _records(6)
  recs[4].rgb = recs[0].rgb  # val copy of a train image
  recs[5].rgb = recs[2].rgb  # test copy of a test image... of split "test" (2 % 3)
  recs[2].split, recs[5].split = "test", "val"  # test and val copies, no train copy
  summary = ingest(recs, str(tmp_path), "syn", _opts())
  moves = {m["id"]: m for m in summary["dedup_moves"]}
  assert moves["syn/4"] == {"id": "syn/4", "from": "val", "to": "train", "duplicate_of": "syn/0"}
  # Without a train copy, the first occurrence's split wins.
  assert moves["syn/5"] == {"id": "syn/5", "from": "val", "to": "test", "duplicate_of": "syn/2"}
  train = {r.id: r for r in records.read_records(records.list_shards(str(tmp_path), "train"))}
  assert train["syn/4"].meta["moved_from_split"] == "val"
  assert records.read_info(str(tmp_path))["ingest"]["dedup_moves"] == summary["dedup_moves"]


def test_duplicate_id_too_small_and_bad_captions_are_rejected(tmp_path):
  recs = _records(6)
  recs[1].id = "syn/0"
  recs[2].rgb = _png(2, size=16)
  recs[3].captions = ["", "  "]
  recs[4].captions = ["ok", 7, ""]
  summary = ingest(recs, str(tmp_path), "syn", _opts(min_size=32))
  assert summary["rejects"] == {
    "duplicate_id": 1,
    "empty_caption": 2,
    "image_too_small": 1,
    "non_text_caption": 1,
  }
  reasons = [(r["id"], r["reason"]) for r in _rejects(tmp_path)]
  assert reasons == [
    ("syn/0", "duplicate_id"),
    ("syn/2", "image_too_small"),
    ("syn/3", "empty_caption"),
    ("syn/4", "non_text_caption"),
    ("syn/4", "empty_caption"),
  ]
  kept = {
    r.id: r
    for s in summary["splits"]
    for r in records.read_records(records.list_shards(str(tmp_path), s))
  }
  assert sorted(kept) == ["syn/0", "syn/4", "syn/5"]
  assert kept["syn/4"].captions == ["ok"]


def test_rerun_is_idempotent_and_drops_stale_shards(tmp_path):
  ingest(_records(), str(tmp_path), "syn", _opts(records_per_shard=2))
  ingest(_records(), str(tmp_path), "syn", _opts(tfrecord=True))
  first = _tree_bytes(tmp_path)
  assert not any("-of-00005" in name for name in first)  # 2-per-shard files are gone
  ingest(_records(), str(tmp_path), "syn", _opts(tfrecord=True))
  assert _tree_bytes(tmp_path) == first


def test_cli_runs_in_separate_processes_write_identical_bytes(tmp_path):
  # Protobuf map order varies per process, so only a cross-process run proves this.
  images = tmp_path / "images"
  images.mkdir()
  rows = []
  for i in range(6):
    (images / f"{i}.png").write_bytes(_png(i))
    rows.append(
      json.dumps(
        {"image": f"{i}.png", "caption": f"scene {i}", "split": "train" if i < 4 else "val"}
      )
    )
  rows.append(json.dumps({"image": "gone.png", "caption": "missing"}))
  (tmp_path / "caps.jsonl").write_text("\n".join(rows) + "\n")
  trees = []
  for out in ("a", "b"):
    proc = subprocess.run(
      [
        sys.executable,
        "-m",
        "data_prep.ingest",
        "--source=folder",
        f"--json={tmp_path / 'caps.jsonl'}",
        f"--images={images}",
        f"--out={tmp_path / out}",
        "--name=my",
        "--tfrecord",
        "--records_per_shard=3",
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    trees.append(_tree_bytes(tmp_path / out))
  assert trees[0] == trees[1]
  assert "my-train.tfrecord-00001-of-00002" in trees[0]
  assert [r["reason"] for r in _rejects(tmp_path / "a")] == ["missing_file"]


def _crash_after(items, n):
  for i, item in enumerate(items):
    if i == n:
      raise RuntimeError("simulated crash")
    yield item


def _counted_items(recs, loads):
  """SourceItems over records that count how many images were actually loaded."""

  def make(record):
    def load():
      loads.append(record.id)
      return record

    return SourceItem(id=record.id, file=f"{record.id}.png", load=load)

  return [make(r) for r in recs]


def test_resume_after_crash_matches_uninterrupted_run(tmp_path):
  recs = _records()
  recs[7].rgb = b""  # one reject, so rejects.jsonl is compared too
  recs[7].captions = []
  recs[7].ir = b""
  reference = tmp_path / "reference"
  ingest(_counted_items(_records_like(recs), []), str(reference), "syn", _opts())
  resumed = tmp_path / "resumed"
  with pytest.raises(RuntimeError, match="simulated"):
    ingest(_crash_after(_counted_items(_records_like(recs), []), 21), str(resumed), "syn", _opts())
  assert sorted(os.listdir(resumed / ".ingest-syn"))[:2] == [
    "chunk-00000.array_record",
    "chunk-00000.json",
  ]
  loads = []
  ingest(_counted_items(_records_like(recs), loads), str(resumed), "syn", _opts(resume=True))
  assert len(loads) == 30 - 16  # the two finished chunks of 8 were not re-read
  assert _tree_bytes(resumed) == _tree_bytes(reference)
  assert _rejects(resumed)[0]["reason"] == "invalid_record"


def _records_like(recs):
  """Copies, since ingest normalizes the records it is given."""
  return [
    Record(**{**r.__dict__, "captions": list(r.captions), "meta": dict(r.meta)}) for r in recs
  ]


def test_resume_with_other_settings_is_refused(tmp_path):
  with pytest.raises(RuntimeError):
    ingest(_crash_after(_records(), 9), str(tmp_path), "syn", _opts())
  with pytest.raises(ingest_lib.ResumeError, match="changed: min_size.*without --resume"):
    ingest(_records(), str(tmp_path), "syn", _opts(resume=True, min_size=8))


def test_tfrecord_export_round_trips_with_the_tfrecord_reader(tmp_path):
  from tfrecord.reader import tfrecord_loader

  summary = ingest(_records(9), str(tmp_path), "syn", _opts(tfrecord=True))
  paths = records.list_shards(str(tmp_path), "train", fmt="tfrecord")
  assert [os.path.basename(p) for p in paths] == ["syn-train.tfrecord-00000-of-00001"]
  got = [ex for p in paths for ex in tfrecord_loader(p, None)]
  want = list(records.read_records(records.list_shards(str(tmp_path), "train")))
  assert [ex["id"].decode() for ex in got] == [r.id for r in want]
  assert [[c.decode() for c in ex["captions"]] for ex in got] == [r.captions for r in want]
  assert [ex["rgb"].tobytes() if hasattr(ex["rgb"], "tobytes") else ex["rgb"] for ex in got] == [
    r.rgb for r in want
  ]
  assert summary["splits"]["train"] == 3


def test_tfds_data_source_reads_the_same_shards(tmp_path):
  import tensorflow_datasets as tfds

  ingest(_records(12), str(tmp_path), "syn", _opts())
  tfds_folder = tfds_export.tfds_dir(str(tmp_path), "syn")
  assert os.path.realpath(
    os.path.join(tfds_folder, "syn-val.array_record-00000-of-00001")
  ) == os.path.realpath(tmp_path / "syn-val.array_record-00000-of-00001")
  for split in ("train", "val", "test"):
    source = tfds.data_source("syn", data_dir=str(tmp_path / "tfds"), split=split)
    want = list(records.read_records(records.list_shards(str(tmp_path), split)))
    got = [source[i] for i in range(len(source))]
    as_text = lambda v: v.decode() if isinstance(v, bytes) else str(v)
    assert [as_text(ex["id"]) for ex in got] == [r.id for r in want]
    assert [[as_text(c) for c in ex["captions"]] for ex in got] == [r.captions for r in want]
    assert [ex["rgb"] for ex in got] == [r.rgb for r in want]


# ----------------------------------------------------------------------------
# Real data: UCM captions and HIT-UAV thermal images.
# ----------------------------------------------------------------------------


@pytest.fixture
def broken_ucm_copy(tmp_path, shared_data):
  """20 real UCM images + 4 broken cases: truncated, zero-byte, missing, empty caption."""
  ucm = os.path.join(shared_data, "ucm_captions")
  with open(os.path.join(ucm, "dataset_ucm.json")) as f:
    entries = json.load(f)["images"][::100][:21]
  images = tmp_path / "images"
  images.mkdir()
  for entry in entries:
    shutil.copy(os.path.join(ucm, "images", entry["filename"]), images / entry["filename"])
  truncated, empty, missing = (dict(entries[-1], filename=n) for n in ("t.jpg", "z.jpg", "m.jpg"))
  data = (images / entries[-1]["filename"]).read_bytes()
  (images / "t.jpg").write_bytes(data[: len(data) // 2])
  (images / "z.jpg").write_bytes(b"")
  entries = entries[:20] + [truncated, empty, missing]
  entries[3] = dict(entries[3], sentences=[dict(s) for s in entries[3]["sentences"]])
  entries[3]["sentences"][2]["raw"] = " "
  (tmp_path / "ucm.json").write_text(json.dumps({"images": entries}))
  return tmp_path


def test_broken_ucm_copy_keeps_the_rest_and_rejects_exactly_four(broken_ucm_copy):
  from data_prep.ingest import sources

  root = broken_ucm_copy
  items = sources.read_karpathy(str(root / "ucm.json"), str(root / "images"), "ucm")
  summary = ingest(items, str(root / "out"), "ucm", _opts(records_per_shard=1000))
  assert sum(summary["splits"].values()) == 20
  assert sum(summary["captions"].values()) == 20 * 5 - 1
  with open(root / "ucm.json") as f:
    blank = os.path.splitext(json.load(f)["images"][3]["filename"])[0]
  assert sorted((r["id"], r["reason"]) for r in _rejects(root / "out")) == sorted(
    [
      ("ucm/m", "missing_file"),
      ("ucm/t", "truncated_image"),
      ("ucm/z", "empty_file"),
      (f"ucm/{blank}", "empty_caption"),
    ]
  )


@pytest.mark.slow
def test_full_ucm_ingest_via_cli(tmp_path, shared_data):
  ucm = os.path.join(shared_data, "ucm_captions")
  out = tmp_path / "ucm"
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "data_prep.ingest",
      "--source=karpathy",
      f"--json={ucm}/dataset_ucm.json",
      f"--images={ucm}/images",
      f"--out={out}",
      "--name=ucm",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  info = records.read_info(str(out))
  assert {s: v["records"] for s, v in info["splits"].items()} == {
    "train": 1680,
    "val": 210,
    "test": 210,
  }
  assert sum(v["captions"] for v in info["splits"].values()) == 10500
  assert info["ingest"]["rejects"] == {} and _rejects(out) == []
  assert "train: 1680 records, 8400 captions" in proc.stdout


@pytest.mark.slow
def test_full_hit_uav_ingest_gives_real_thermal_records(tmp_path, shared_data):
  from data_prep.ingest import sources

  hit = os.path.join(shared_data, "hit_uav")
  jsons = [os.path.join(hit, "annotations", f"{s}.json") for s in ("train", "val")]
  items = sources.read_coco_thermal(jsons, os.path.join(hit, "images"), "hit_uav")
  summary = ingest(items, str(tmp_path), "hit_uav", IngestOptions(progress=False))
  assert summary["splits"] == {"train": 2029, "val": 290}
  info = records.read_info(str(tmp_path))
  assert info["splits"]["train"]["ir_origins"] == {"real": 2029}
  assert info["splits"]["val"]["with_rgb"] == 0
  (first,) = [
    r for _, r in zip(range(1), records.read_records(records.list_shards(str(tmp_path), "val")))
  ]
  assert first.meta["width"] == 320 and first.meta["height"] == 256


def test_all_rejected_finishes_with_rejects_and_no_shards(tmp_path):
  recs = _records(2)
  for r in recs:
    r.captions = [""]
  summary = ingest(recs, str(tmp_path), "syn", _opts())
  assert summary["splits"] == {} and summary["rejects"] == {"empty_caption": 2}
  assert len(_rejects(tmp_path)) == 2


def test_resume_over_a_shorter_source_is_refused(tmp_path):
  with pytest.raises(RuntimeError):
    ingest(_crash_after(_records(), 20), str(tmp_path), "syn", _opts())
  with pytest.raises(ValueError, match="input changed"):
    ingest(_records(5), str(tmp_path), "syn", _opts(resume=True))


def test_check_item_reports_undecodable_record_bytes():
  record = Record(id="x/1", source="x", split="train", rgb=b"\xff\xd8garbage")
  kept, rejects = ingest_lib.check_item(record, min_size=32)
  assert kept is None and rejects[0]["reason"] == "unreadable_image"
