"""The Beam pipeline (DirectRunner) writes the same records and shard layout as the local
ingest -> translate -> ir_captions path, on a synthetic source with every reject and
de-duplication case and on the real UCM captions."""

import io
import json
import os
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

beam_module = pytest.importorskip("apache_beam", reason="pip install -e '.[beam]'")

from data_prep import beam as beam_prep
from data_prep import translate
from data_prep.ingest import sources
from data_prep.ingest import writer as ingest
from data_prep.ir_text import captions as ir_captions
from fusionrs_jax.core import checkpoint, records
from fusionrs_jax.models import cyclegan


@pytest.fixture(scope="module")
def translator_run(tmp_path_factory):
  """A translator workdir with a random-init tiny generator (deterministic function)."""
  path = tmp_path_factory.mktemp("translator")
  params = cyclegan.build("tiny").init(jax.random.PRNGKey(0), 16)
  records.write_json_atomic(
    str(path / "config.json"), {"trainer": "translator", "model": {"size": "tiny"}}
  )
  ckpt = checkpoint.Checkpointer(str(path / "checkpoints"), save_every=1, async_save=False)
  ckpt.save(1, {"params": params}, force=True)
  ckpt.close()
  return str(path)


def _png(rng, size):
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
  return buf.getvalue()


@pytest.fixture(scope="module")
def karpathy_source(tmp_path_factory):
  """12 entries: a duplicate id, one image in both train and test, an all-empty caption
  set, an empty caption, a missing file and a too-small image."""
  root = tmp_path_factory.mktemp("karpathy")
  images = root / "images"
  images.mkdir()
  rng = np.random.default_rng(0)
  entries = []
  for i in range(9):
    (images / f"img{i}.png").write_bytes(_png(rng, 40 + 4 * (i % 2)))
    split = ("train", "train", "val", "test")[i % 4]
    entries.append(
      {
        "filename": f"img{i}.png",
        "imgid": i,
        "split": split,
        "class": "c",
        "sentences": [{"raw": f"scene {i} with a road"}, {"raw": f"view {i}"}],
      }
    )
  shutil.copy(images / "img1.png", images / "copy_of_1.png")  # same bytes, other split
  entries.append(
    {"filename": "copy_of_1.png", "imgid": 9, "split": "test", "sentences": [{"raw": "a copy"}]}
  )
  entries.append(dict(entries[2], imgid=10))  # duplicate id (same filename)
  entries[3]["sentences"].append({"raw": "  "})  # one empty caption, the item stays
  entries[5]["sentences"] = [{"raw": ""}]  # every caption empty: rejected
  entries.append(
    {"filename": "gone.png", "imgid": 11, "split": "train", "sentences": [{"raw": "missing"}]}
  )
  (images / "small.png").write_bytes(_png(rng, 16))
  entries.append(
    {"filename": "small.png", "imgid": 12, "split": "val", "sentences": [{"raw": "tiny"}]}
  )
  (root / "captions.json").write_text(json.dumps({"images": entries}))
  return {
    "source": "karpathy",
    "json": [str(root / "captions.json")],
    "images": str(images),
    "name": "toy",
  }


def _local_path(spec, out, per_shard, translator=None):
  """The three CLIs' functions one after another; returns the final folder."""
  items = sources.read_source(spec["source"], spec["json"], spec["images"], spec["name"])
  ingest.ingest(
    items,
    f"{out}/ingested",
    spec["name"],
    ingest.IngestOptions(records_per_shard=per_shard, progress=False),
  )
  src = f"{out}/ingested"
  if translator:
    translate.translate_folder(src, f"{out}/translated", translator, batch_size=8)
    src = f"{out}/translated"
  ir_captions.annotate_folder(src, f"{out}/final", splits=("train", "val", "test"))
  return f"{out}/final"


def _shards(data_dir, split):
  return {
    os.path.basename(p): list(records.read_array_record(p))
    for p in records.list_shards(data_dir, split)
  }


def _assert_same_dataset(local_dir, beam_dir, splits):
  for split in splits:
    local, beam = _shards(local_dir, split), _shards(beam_dir, split)
    assert sorted(local) == sorted(beam), split  # same shard names and counts
    local_set = sorted(p for ps in local.values() for p in ps)
    beam_set = sorted(p for ps in beam.values() for p in ps)
    assert len(local_set) == len(beam_set)
    assert local_set == beam_set, f"{split}: record bytes differ"


def test_beam_pipeline_writes_the_local_paths_records_and_rejects(
  karpathy_source, translator_run, tmp_path
):
  local = _local_path(karpathy_source, str(tmp_path / "local"), 3, translator_run)
  summary = beam_prep.run(
    karpathy_source,
    str(tmp_path / "beam"),
    "toy",
    beam_prep.BeamOptions(records_per_shard=3, translator=translator_run, translate_batch_size=8),
  )
  _assert_same_dataset(local, str(tmp_path / "beam"), ("train", "val", "test"))
  recs = list(records.read_records(records.list_shards(str(tmp_path / "beam"), "train")))
  assert all(r.ir_origin == "translated" and r.ir_captions for r in recs)
  assert summary["splits"] == {"train": 5, "val": 2, "test": 2}
  assert summary["rejects"] == {
    "duplicate_id": 1,
    "empty_caption": 2,
    "image_too_small": 1,
    "missing_file": 1,
  }
  assert [m["id"] for m in summary["dedup_moves"]] == ["toy/copy_of_1"]
  with open(tmp_path / "local" / "ingested" / ingest.REJECTS_FILE) as f:
    local_rejects = f.read()
  with open(tmp_path / "beam" / ingest.REJECTS_FILE) as f:
    assert f.read() == local_rejects
  info = records.read_info(str(tmp_path / "beam"))
  assert info["beam"]["counters"]["translated"] == 9


def test_rerun_with_fewer_records_per_shard_leaves_no_stale_shards(karpathy_source, tmp_path):
  out = str(tmp_path / "beam")
  beam_prep.run(karpathy_source, out, "toy", beam_prep.BeamOptions(ir_captions=False))
  beam_prep.run(
    karpathy_source, out, "toy", beam_prep.BeamOptions(records_per_shard=2, ir_captions=False)
  )
  # 5 train records: the one-shard file of the first run is gone.
  assert sorted(_shards(out, "train")) == [
    f"toy-train.array_record-0000{i}-of-00003" for i in range(3)
  ]


@pytest.mark.slow
@pytest.mark.shared_data
def test_beam_matches_local_ingest_and_ir_captions_on_ucm(shared_data, tmp_path):
  ucm = os.path.join(shared_data, "ucm_captions")
  spec = {
    "source": "karpathy",
    "json": [os.path.join(ucm, "dataset_ucm.json")],
    "images": os.path.join(ucm, "images"),
    "name": "ucm",
  }
  local = _local_path(spec, str(tmp_path / "local"), 500)
  summary = beam_prep.run(
    spec, str(tmp_path / "beam"), "ucm", beam_prep.BeamOptions(records_per_shard=500)
  )
  local_info = records.read_info(local)
  assert summary["splits"] == {s: v["records"] for s, v in local_info["splits"].items()}
  assert sum(summary["splits"].values()) > 2000  # 2100 images less rejects/duplicates
  _assert_same_dataset(local, str(tmp_path / "beam"), ("train", "val", "test"))


def test_a_record_lost_inside_the_runner_fails_the_run(karpathy_source, tmp_path, monkeypatch):
  real = beam_prep.place_duplicates

  def drops_one(element):
    outs = list(real(element))
    ids = [value[1].id for kind, value in outs if kind == "record"]
    # Drop the record of one image group, as the faulty runner did.
    yield from ([o for o in outs if o[0] != "record"] if "toy/img0" in ids else outs)

  monkeypatch.setattr(beam_prep, "place_duplicates", drops_one)
  with pytest.raises(beam_prep.RecordsLostError, match="accepted 9 records but wrote 8"):
    beam_prep.run(
      karpathy_source, str(tmp_path / "beam"), "toy", beam_prep.BeamOptions(ir_captions=False)
    )
  assert beam_prep.check_no_record_lost({"records_accepted": 3, "records_written": 3}) is None


def test_multi_threaded_direct_runner_is_refused_before_anything_is_written(
  karpathy_source, tmp_path
):
  out = tmp_path / "beam"
  with pytest.raises(beam_prep.LossyRunnerError, match="multi_processing"):
    beam_prep.run(
      karpathy_source,
      str(out),
      "toy",
      beam_prep.BeamOptions(ir_captions=False),
      pipeline_args=["--direct_num_workers=2", "--direct_running_mode=multi_threading"],
    )
  assert not out.exists()
  # One thread is not affected, and other runners are left to their own settings.
  for args in (
    ["--direct_num_workers=1", "--direct_running_mode=multi_threading"],
    ["--runner=FlinkRunner", "--direct_num_workers=2", "--direct_running_mode=multi_threading"],
  ):
    assert beam_prep.refuse_lossy_runner(beam_prep.PipelineOptions(args)) is None


def test_dedup_move_leaves_the_input_record_unchanged():
  rec = records.Record(id="toy/b", source="toy", split="test", rgb=b"x", captions=["c"])
  first = records.Record(id="toy/a", source="toy", split="train", rgb=b"x", captions=["c"])
  outs = list(beam_prep.place_duplicates(("sha", [(1, rec), (0, first)])))
  placed = {v[1].id: v[1] for kind, v in outs if kind == "record"}
  assert placed["toy/b"].split == "train"
  assert placed["toy/b"].meta["moved_from_split"] == "test"
  assert rec.split == "test" and "moved_from_split" not in rec.meta
  assert [v["id"] for kind, v in outs if kind == "move"] == ["toy/b"]


@pytest.mark.slow
def test_two_process_direct_runner_writes_the_local_paths_records(karpathy_source, tmp_path):
  local = _local_path(karpathy_source, str(tmp_path / "local"), 2)
  beam_prep.run(
    karpathy_source,
    str(tmp_path / "beam"),
    "toy",
    beam_prep.BeamOptions(records_per_shard=2),
    pipeline_args=["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
  )
  _assert_same_dataset(local, str(tmp_path / "beam"), ("train", "val", "test"))
