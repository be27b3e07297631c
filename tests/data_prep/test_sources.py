"""Source readers: each public layout becomes Records with ids, splits, captions and sizes."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from data_prep.ingest import sources


def _image_bytes(seed: int, size=(40, 30), fmt="JPEG", mode="RGB") -> bytes:
  pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), np.uint8)
  image = Image.fromarray(pixels)
  image = image.convert(mode) if mode != "RGB" else image
  buf = io.BytesIO()
  image.save(buf, format=fmt)
  return buf.getvalue()


def _write(path, data: bytes) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)


def test_karpathy_keeps_jpeg_bytes_and_class_label(tmp_path):
  jpeg = _image_bytes(0)
  _write(tmp_path / "imgs" / "7.jpg", jpeg)
  layout = {
    "images": [
      {
        "filename": "7.jpg",
        "imgid": 6,
        "split": "test",
        "class": "beach",
        "sentences": [{"raw": "A beach ."}, {"raw": "Waves ."}],
      }
    ]
  }
  (tmp_path / "d.json").write_text(json.dumps(layout))
  (item,) = sources.read_karpathy(str(tmp_path / "d.json"), str(tmp_path / "imgs"), "ucm")
  assert item.id == "ucm/7"
  record = item.load()
  assert (record.id, record.split, record.label) == ("ucm/7", "test", "beach")
  assert record.captions == ["A beach .", "Waves ."]
  assert record.rgb == jpeg and not record.ir
  assert record.meta["width"] == 40 and record.meta["height"] == 30
  assert record.meta["imgid"] == 6


def test_tiff_is_reencoded_as_png(tmp_path):
  _write(tmp_path / "a.tif", _image_bytes(1, fmt="TIFF"))
  image = sources.load_image(str(tmp_path / "a.tif"))
  assert image.format == "PNG" and image.converted_from == "TIFF"
  assert Image.open(io.BytesIO(image.data)).format == "PNG"
  assert (image.width, image.height) == (40, 30)


def test_nwpu_layout_reads_class_folders_and_raw_keys(tmp_path):
  for cls, name in (("airport", "airport_001.jpg"), ("beach", "beach_002.jpg")):
    _write(tmp_path / "imgs" / cls / name, _image_bytes(len(name) + len(cls)))
  layout = {
    "airport": [
      {
        "filename": "airport_001.jpg",
        "imgid": 0,
        "split": "train",
        "raw": "c0",
        "raw_1": "c1",
        "raw_2": "c2",
        "raw_3": "c3",
        "raw_4": "c4",
        "sentids": 0,
        "sentids_1": 1,
      }
    ],
    "beach": [
      {
        "filename": "beach_002.jpg",
        "imgid": 1,
        "split": "val",
        "raw_4": "e",
        "raw": "a",
        "raw_2": "c",
        "raw_1": "b",
        "raw_3": "d",
      }
    ],
  }
  (tmp_path / "n.json").write_text(json.dumps(layout))
  items = list(sources.read_nwpu(str(tmp_path / "n.json"), str(tmp_path / "imgs"), "nwpu"))
  recs = [item.load() for item in items]
  assert [r.id for r in recs] == ["nwpu/airport_001", "nwpu/beach_002"]
  assert [r.label for r in recs] == ["airport", "beach"]
  assert [r.split for r in recs] == ["train", "val"]
  assert recs[0].captions == ["c0", "c1", "c2", "c3", "c4"]
  assert recs[1].captions == ["a", "b", "c", "d", "e"]


def test_nwpu_rejects_karpathy_file_with_a_hint(tmp_path):
  (tmp_path / "k.json").write_text(json.dumps({"images": []}))
  with pytest.raises(ValueError, match="source=karpathy"):
    list(sources.read_nwpu(str(tmp_path / "k.json"), str(tmp_path), "nwpu"))


def test_folder_jsonl_and_csv_group_captions_per_image(tmp_path):
  for name in ("a.png", "b.jpg"):
    _write(tmp_path / name, _image_bytes(len(name), fmt="PNG" if name.endswith("png") else "JPEG"))
  rows = [
    {"image": "a.png", "caption": "first", "split": "val"},
    {"file": "b.jpg", "captions": ["x", "y"]},
    {"image": "a.png", "caption": "second", "split": "train"},
  ]
  (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  recs = [i.load() for i in sources.read_folder(str(tmp_path / "c.jsonl"), str(tmp_path), "my")]
  assert [(r.id, r.split, r.captions) for r in recs] == [
    ("my/a", "val", ["first", "second"]),
    ("my/b", "train", ["x", "y"]),
  ]
  (tmp_path / "c.csv").write_text("file,captions,label\nb.jpg,one|two,road\n")
  (rec,) = [i.load() for i in sources.read_folder(str(tmp_path / "c.csv"), str(tmp_path), "my")]
  assert (rec.captions, rec.label, rec.split) == (["one", "two"], "road", "train")


def test_folder_row_without_image_column_is_a_reject_at_its_line(tmp_path):
  (tmp_path / "c.jsonl").write_text(json.dumps({"caption": "orphan"}) + "\n")
  (item,) = sources.read_folder(str(tmp_path / "c.jsonl"), str(tmp_path), "my")
  assert item.position == "c.jsonl line 1"
  with pytest.raises(sources.ItemRejected) as err:
    item.load()
  assert err.value.reason == "missing_filename"


def test_coco_thermal_records_are_real_ir_with_boxes(tmp_path):
  _write(tmp_path / "images" / "val" / "0_60_30_0_1.jpg", _image_bytes(3, mode="L"))
  coco = {
    "images": [{"filename": "0_60_30_0_1.jpg", "id": 5, "height": 30, "width": 40}],
    "categories": [{"id": 0, "name": "Person"}, {"id": 1, "name": "Car"}],
    "annotation": [{"image_id": 5, "category_id": 1, "bbox": [1, 2, 3.5, 4], "id": 0}],
  }
  (tmp_path / "val.json").write_text(json.dumps(coco))
  (item,) = sources.read_coco_thermal(
    [str(tmp_path / "val.json")], str(tmp_path / "images"), "hit_uav"
  )
  record = item.load()
  assert (record.id, record.split, record.ir_origin) == ("hit_uav/0_60_30_0_1", "val", "real")
  assert record.rgb == b"" and record.ir and not record.captions
  assert record.meta["objects"] == [{"category": "Car", "bbox": [1.0, 2.0, 3.5, 4.0]}]
  assert (record.meta["width"], record.meta["height"]) == (40, 30)


@pytest.mark.parametrize(
  "case,reason",
  [
    ("missing", "missing_file"),
    ("empty", "empty_file"),
    ("truncated", "truncated_image"),
    ("garbage", "unreadable_image"),
  ],
)
def test_broken_images_raise_item_rejected_with_reason(tmp_path, case, reason):
  path = tmp_path / "x.jpg"
  data = {
    "empty": b"",
    "truncated": _image_bytes(4, size=(64, 64))[:600],
    "garbage": b"not an image at all",
  }.get(case)
  if data is not None:
    _write(path, data)
  with pytest.raises(sources.ItemRejected) as err:
    sources.load_image(str(path))
  assert err.value.reason == reason and "x.jpg" in err.value.detail


def test_unknown_source_kind_lists_the_valid_ones():
  with pytest.raises(ValueError, match="coco_thermal"):
    sources.read_source("kaggle", ["a.json"], "imgs", "x")


def test_real_ucm_and_hit_uav_layouts_are_understood(shared_data):
  ucm = os.path.join(shared_data, "ucm_captions")
  items = list(
    sources.read_karpathy(os.path.join(ucm, "dataset_ucm.json"), os.path.join(ucm, "images"), "ucm")
  )
  assert len(items) == 2100 and len({i.id for i in items}) == 2100
  first = items[0].load()
  assert len(first.captions) == 5 and first.label and first.meta["width"] > 200
  hit = os.path.join(shared_data, "hit_uav")
  jsons = [os.path.join(hit, "annotations", f"{s}.json") for s in ("train", "val")]
  thermal = list(sources.read_coco_thermal(jsons, os.path.join(hit, "images"), "hit_uav"))
  assert len(thermal) == 2029 + 290
  record = thermal[0].load()
  assert record.split == "train" and record.ir_origin == "real"
  assert {o["category"] for o in record.meta["objects"]} <= {
    "Person",
    "Car",
    "Bicycle",
    "OtherVehicle",
    "DontCare",
  }
