"""The record schema: encode/decode round trips, validation messages, shards, dataset_info."""

import json
import os

import pytest

from fusionrs_jax.core import records


def _record(i=0, **kw):
  base = dict(
    id=f"demo/{i}",
    source="demo",
    split="train",
    rgb=b"\x89PNGrgb",
    ir=b"\x89PNGir",
    ir_origin="rendered",
    captions=["a red roof", "two cars"],
    ir_captions=["bright roads"],
    ir_caption_provenance=['{"mean": 0.7}'],
    instructions=[{"question": "Is there a car?", "answer": "yes", "task": "presence"}],
    label="parkinglot",
    meta={"objects": [{"category": "car", "bbox": [1, 2, 3, 4]}]},
  )
  base.update(kw)
  return records.Record(**base)


def test_encode_decode_round_trips_every_field_and_is_deterministic():
  rec = _record(captions=["ünïcode façade ✓", ""])
  data = records.encode(rec)
  assert records.decode(data) == rec
  assert records.encode(records.decode(data)) == data


@pytest.mark.parametrize(
  "change,message",
  [
    (dict(id=""), "empty id"),
    (dict(rgb=b"", ir=b""), "neither an RGB nor an IR"),
    (dict(ir_origin="guessed"), "ir_origin"),
    (dict(ir_origin=""), "no ir_origin"),
    (dict(captions=["ok", 3]), "non-string"),
    (dict(ir_caption_provenance=[]), None),
    (dict(ir_caption_provenance=["{}", "{}"]), "provenance"),
    (dict(instructions=[{"question": "q"}]), "question/answer"),
  ],
)
def test_validate_names_the_record_and_the_problem(change, message):
  rec = _record(**change)
  if message is None:
    rec.validate()
    return
  with pytest.raises(records.RecordError, match=message) as err:
    records.encode(rec)
  assert "demo" in str(err.value)


def test_decode_rejects_foreign_bytes_with_location():
  with pytest.raises(records.RecordError, match="shard-7#3"):
    records.decode(b"\xff\xfe not a proto", where="shard-7#3")


def test_write_split_shards_atomically_and_info_counts(tmp_path):
  recs = [_record(i) for i in range(5)]
  paths = records.write_split(recs, str(tmp_path), "demo", "train", records_per_shard=2)
  assert [os.path.basename(p) for p in paths] == [
    f"demo-train.array_record-0000{i}-of-00003" for i in range(3)
  ]
  assert [r.id for r in records.read_records(records.list_shards(str(tmp_path), "train"))] == [
    r.id for r in recs
  ]
  # Re-writing with another shard count leaves no stale shard behind.
  records.write_split(recs, str(tmp_path), "demo", "train", records_per_shard=10)
  assert len(records.list_shards(str(tmp_path), "train")) == 1
  assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]
  info = records.write_info(str(tmp_path), "demo", {"note": "x"})
  on_disk = records.read_info(str(tmp_path))
  assert on_disk == json.loads(json.dumps(info))
  split = on_disk["splits"]["train"]
  assert (split["records"], split["captions"], split["ir_captions"], split["instructions"]) == (
    5,
    10,
    5,
    5,
  )
  assert split["ir_origins"] == {"rendered": 5}
  assert len(split["shards"][0]["sha256"]) == 64


def test_missing_shards_and_info_errors_say_what_to_run(tmp_path):
  with pytest.raises(FileNotFoundError, match="data_prep.ingest"):
    records.list_shards(str(tmp_path), "train")
  with pytest.raises(FileNotFoundError, match="data_prep.ingest"):
    records.read_info(str(tmp_path))
