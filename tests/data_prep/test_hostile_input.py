"""Hostile input (issue 14): a corrupted corpus, generated here, through every reader.

Each bad entry must become exactly one reject line with its reason and position, each bad
whole file one InputError naming the file and position (raised before anything is
written), and every good record must come out byte-identical to a run on the good entries
alone.
"""

import io
import json
import os
import pathlib
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from data_prep.ingest import caption_text, checks, inputs, sources
from data_prep.ingest import writer as ingest_lib
from data_prep.ingest.writer import IngestOptions, ingest
from fusionrs_jax.core import records
from fusionrs_jax.data import images as image_io

GOOD = ("g0.png", "g1.jpg", "g2.png", "g3.png")
CAPTIONS = [{"raw": "a farm with a red barn ."}, {"raw": "fields around a barn ."}]


def _png(seed: int, size: int = 40, mode: str = "RGB") -> bytes:
  rng = np.random.default_rng(seed)
  if mode == "I;16":
    img = Image.fromarray(rng.integers(0, 65536, (size, size), dtype=np.uint16))
  else:
    img = Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).convert(mode)
  buf = io.BytesIO()
  img.save(buf, "PNG" if mode != "JPEG" else "JPEG")
  return buf.getvalue()


def _jpeg(seed: int) -> bytes:
  buf = io.BytesIO()
  Image.open(io.BytesIO(_png(seed))).save(buf, "JPEG")
  return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
  """A PNG whose header claims width x height 8-bit gray pixels, with no pixel data: a size
  check that decoded first would see a truncated file, not a too-large one."""

  def chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

  ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture
def corpus(tmp_path):
  """images/ with the good files, decoys for every kind of bad entry, and a secret file
  outside images/ that nothing may read."""
  imgs = tmp_path / "images"
  (imgs / "sub").mkdir(parents=True)
  for i, name in enumerate(GOOD):
    (imgs / name).write_bytes(_jpeg(i) if name.endswith("jpg") else _png(i))
  (imgs / "thermal16.png").write_bytes(_png(9, mode="I;16"))
  for i, name in enumerate(("b_str.png", "b_nosent.png", "b_slash.png", "b_dash.png")):
    (imgs / name).write_bytes(_png(20 + i))
  for i, name in enumerate(("b_surrogate.png", "b_ctrl.png", "b_long.png")):
    (imgs / name).write_bytes(_png(30 + i))
  (imgs / "huge.png").write_bytes(_png_header_only(12000, 12000))
  (imgs / "x.jpg").write_bytes(_jpeg(40))
  (imgs / "x.png").write_bytes(_png(41))
  (tmp_path / "secret.jpg").write_bytes(_jpeg(50))
  os.symlink(tmp_path / "secret.jpg", imgs / "link_out.jpg")
  return tmp_path


def _opts(**kw) -> IngestOptions:
  return IngestOptions(progress=False, records_per_shard=3, chunk_size=4, **kw)


def _read(out) -> dict[str, bytes]:
  info = records.read_info(str(out))
  return {
    records.decode(p).id: p
    for s in info["splits"]
    for p in (
      payload
      for path in records.list_shards(str(out), s)
      for payload in records.read_array_record(path)
    )
  }


def _rejects(out) -> list[dict]:
  with open(os.path.join(out, "rejects.jsonl")) as f:
    return [json.loads(line) for line in f]


def _good_karpathy() -> list[dict]:
  entries = [{"filename": n, "split": "train", "sentences": CAPTIONS} for n in GOOD]
  entries.append({"filename": "thermal16.png", "split": "val", "sentences": CAPTIONS})
  return entries


def _hostile_karpathy() -> list[tuple[dict | object, str | None]]:
  """(entry, expected reject reason or None when it is accepted) in file order."""
  good = _good_karpathy()
  caps = CAPTIONS
  return [
    (good[0], None),
    ("not an object", "not_an_object"),
    ({"split": "train", "sentences": caps}, "missing_filename"),
    ({"filename": "b_str.png", "sentences": "a farm"}, "bad_type"),
    ({"filename": "b_nosent.png", "split": "train"}, "no_captions"),
    (good[1], None),
    ({"filename": "b_slash.png", "split": "train/x", "sentences": caps}, "bad_split"),
    ({"filename": "b_dash.png", "split": "train-2", "sentences": caps}, "bad_split"),
    ({"filename": "../../secret.jpg", "sentences": caps}, "outside_images"),
    ({"filename": "secret.jpg", "filepath": "../..", "sentences": caps}, "outside_images"),
    ({"filename": "link_out.jpg", "sentences": caps}, "outside_images"),
    ({"filename": "/etc/hostname", "sentences": caps}, "outside_images"),
    ({"filename": "b_surrogate.png", "sentences": [{"raw": "\ud800 farm"}]}, "undecodable_caption"),
    ({"filename": "huge.png", "sentences": caps}, "too_many_pixels"),
    (good[2], None),
    ({"filename": "x.jpg", "sentences": caps}, None),
    ({"filename": "x.png", "sentences": caps}, "duplicate_id"),
    (good[3], None),
    (good[4], None),
  ]


def _write_karpathy(path, entries) -> None:
  # ensure_ascii keeps the lone surrogate as a \ud800 escape: valid JSON, invalid text.
  path.write_text(json.dumps({"images": entries}, ensure_ascii=True))


def test_karpathy_corpus_rejects_each_bad_entry_and_keeps_good_records_identical(corpus):
  cases = _hostile_karpathy()
  _write_karpathy(corpus / "bad.json", [e for e, _ in cases])
  _write_karpathy(corpus / "good.json", _good_karpathy() + [cases[15][0]])
  for name in ("bad", "good"):
    items = sources.read_karpathy(str(corpus / f"{name}.json"), str(corpus / "images"), "ucm")
    ingest(items, str(corpus / f"out_{name}"), "ucm", _opts())
  rejects = _rejects(corpus / "out_bad")
  want = [(f"bad.json images[{i}]", r) for i, (_, r) in enumerate(cases) if r]
  assert [(r["position"], r["reason"]) for r in rejects] == want
  dup = next(r for r in rejects if r["reason"] == "duplicate_id")
  assert "ucm/x" in dup["detail"] and "file name without its extension" in dup["detail"]
  assert "x.jpg" in dup["detail"] and "x.png" in dup["detail"]
  outside = [r for r in rejects if r["reason"] == "outside_images"]
  assert all("outside --images" in r["detail"] for r in outside)
  assert _read(corpus / "out_bad") == _read(corpus / "out_good")


def test_outside_paths_are_never_opened(corpus, monkeypatch):
  opened = []
  real_open = open

  def spy(path, *args, **kwargs):
    opened.append(os.path.realpath(str(path)))
    return real_open(path, *args, **kwargs)

  cases = [e for e, r in _hostile_karpathy() if r == "outside_images"]
  _write_karpathy(corpus / "out.json", cases)
  items = list(sources.read_karpathy(str(corpus / "out.json"), str(corpus / "images"), "ucm"))
  monkeypatch.setattr("builtins.open", spy)
  for item in items:
    with pytest.raises(sources.ItemRejected, match="outside"):
      item.load()
  assert str(corpus / "secret.jpg") not in opened and opened == []


def test_caption_hygiene_is_applied_and_counted_in_dataset_info(corpus):
  dirty = "A\x00 farm\x1b with\x07 a\u200b red\u202e barn\ufeff\t\t.\n  "
  long = " ".join(["field"] * 5000)
  entries = [
    {"filename": "b_ctrl.png", "sentences": [{"raw": dirty}]},
    {"filename": "b_long.png", "sentences": [{"raw": long}, {"raw": "a short one ."}]},
  ]
  _write_karpathy(corpus / "c.json", entries)
  items = sources.read_karpathy(str(corpus / "c.json"), str(corpus / "images"), "ucm")
  ingest(items, str(corpus / "t"), "ucm", _opts())
  got = {r.id: r.captions for r in map(records.decode, _read(corpus / "t").values())}
  assert got["ucm/b_ctrl"] == ["A farm with a red barn ."]
  assert got["ucm/b_long"] == [" ".join(["field"] * 120), "a short one ."]
  hygiene = records.read_info(str(corpus / "t"))["ingest"]["caption_hygiene"]
  assert hygiene["control_chars_removed"] == 1 and hygiene["truncated"] == 1
  assert hygiene["whitespace_normalised"] == 1
  items = sources.read_karpathy(str(corpus / "c.json"), str(corpus / "images"), "ucm")
  rules = caption_text.CaptionRules(long="reject")
  ingest(items, str(corpus / "r"), "ucm", _opts(captions=rules))
  (long_reject,) = _rejects(corpus / "r")
  assert long_reject["reason"] == "long_caption" and long_reject["caption_index"] == 0
  assert long_reject["position"] == "c.json images[1]"


@pytest.mark.parametrize(
  "content,message",
  [
    (b'{"images": [{"filename": "g0.png", "sentences": ["caf\xe9"]}]}', "not UTF-8 at byte 53"),
    (b'{"images": [', "not JSON at line 1 column 13"),
    (b'[{"filename": "g0.png"}]', "top level is a list without an 'images' list"),
    (b"[" * 100000 + b"]" * 100000, "JSON this reader refuses (nested too deeply)"),
    (b'{"images": [{"imgid": ' + b"9" * 5000 + b"}]}", "Exceeds the limit (4300 digits)"),
  ],
)
def test_unreadable_karpathy_file_is_one_error_naming_file_and_position(corpus, content, message):
  (corpus / "broken.json").write_bytes(content)
  with pytest.raises(sources.InputError) as err:
    sources.read_source("karpathy", [str(corpus / "broken.json")], str(corpus / "images"), "u")
  assert message in str(err.value) and "broken.json" in str(err.value)
  assert "\n" not in str(err.value)


def test_nwpu_corpus(corpus):
  layout = {
    "farm": [
      {"filename": "g0.png", "raw": "a farm .", "raw_1": "a barn ."},
      7,
      {"raw": "no file"},
      {"filename": "b_str.png", "split": "a/b", "raw": "x"},
      {"filename": "b_nosent.png"},
      {"filename": "../../secret.jpg", "raw": "out"},
    ],
    "lake": "not a list",
  }
  (corpus / "n.json").write_text(json.dumps(layout))
  items = sources.read_nwpu(str(corpus / "n.json"), str(corpus / "images"), "nwpu")
  ingest(items, str(corpus / "o"), "nwpu", _opts())
  assert [(r["position"], r["reason"]) for r in _rejects(corpus / "o")] == [
    ("n.json farm[1]", "not_an_object"),
    ("n.json farm[2]", "missing_filename"),
    ("n.json farm[3]", "bad_split"),
    ("n.json farm[4]", "no_captions"),
    ("n.json farm[5]", "outside_images"),
    ("n.json lake", "bad_type"),
  ]
  (rec,) = map(records.decode, _read(corpus / "o").values())
  assert rec.id == "nwpu/g0" and rec.captions == ["a farm .", "a barn ."]
  (corpus / "good.json").write_text(json.dumps({"farm": layout["farm"][:1]}))
  items = sources.read_nwpu(str(corpus / "good.json"), str(corpus / "images"), "nwpu")
  ingest(items, str(corpus / "good"), "nwpu", _opts())
  assert _read(corpus / "o") == _read(corpus / "good")


def test_folder_jsonl_and_csv_corpus(corpus):
  lines = [
    # U+2028 is a line break for str.splitlines, not for JSONL: the caption keeps its line
    json.dumps({"image": "g0.png", "caption": "a farm\u2028."}, ensure_ascii=False),
    "{not json",
    json.dumps([1, 2]),
    json.dumps({"caption": "no file"}),
    json.dumps({"image": "g1.jpg", "captions": "a farm"}),
    json.dumps({"image": "link_out.jpg", "caption": "out"}),
    json.dumps({"image": "g2.png"}),
    json.dumps({"image": "g3.png", "caption": "a lake .", "split": "x-y"}),
  ]
  (corpus / "c.jsonl").write_text("\n".join(lines) + "\n")
  items = sources.read_folder(str(corpus / "c.jsonl"), str(corpus / "images"), "my")
  ingest(items, str(corpus / "o"), "my", _opts())
  assert [(r["position"], r["reason"]) for r in _rejects(corpus / "o")] == [
    ("c.jsonl line 2", "not_json"),
    ("c.jsonl line 3", "not_an_object"),
    ("c.jsonl line 4", "missing_filename"),
    ("c.jsonl line 5", "bad_type"),
    ("c.jsonl line 6", "outside_images"),
    ("c.jsonl line 7", "no_captions"),
    ("c.jsonl line 8", "bad_split"),
  ]
  assert [r.captions for r in map(records.decode, _read(corpus / "o").values())] == [["a farm ."]]
  (corpus / "good.jsonl").write_text(lines[0] + "\n")
  items = sources.read_folder(str(corpus / "good.jsonl"), str(corpus / "images"), "my")
  ingest(items, str(corpus / "good"), "my", _opts())
  assert _read(corpus / "o") == _read(corpus / "good")
  (corpus / "l.csv").write_bytes(b"file,caption\ng0.png,caf\xe9\n")
  with pytest.raises(sources.InputError, match=r"l.csv: not UTF-8 at byte 23 \(line 2\)"):
    sources.read_folder(str(corpus / "l.csv"), str(corpus / "images"), "my")
  (corpus / "bom.csv").write_bytes(b"\xef\xbb\xbffile,caption\ng0.png,a farm .\n")
  (item,) = sources.read_folder(str(corpus / "bom.csv"), str(corpus / "images"), "my")
  assert item.load().captions == ["a farm ."]
  (corpus / "bom.csv").write_bytes(b"\xef\xbb\xbffile,caption\ng0.png,caf\xe9\n")
  with pytest.raises(sources.InputError, match=r"bom.csv: not UTF-8 at byte 26 \(line 2\)"):
    sources.read_folder(str(corpus / "bom.csv"), str(corpus / "images"), "my")
  (corpus / "h.csv").write_text("picture,caption\ng0.png,a farm\n")
  with pytest.raises(sources.InputError, match="h.csv line 1: the header"):
    sources.read_folder(str(corpus / "h.csv"), str(corpus / "images"), "my")


def test_coco_corpus(corpus):
  (corpus / "images" / "val").mkdir()
  for i in range(3):
    (corpus / "images" / "val" / f"t{i}.png").write_bytes(_png(60 + i, mode="L"))
  coco = {
    "images": [
      {"file_name": "t0.png", "id": 0},
      {"file_name": "t1.png", "id": 1},
      {"id": 5},
      "nope",
      {"file_name": "t2.png", "id": 2},
    ],
    "categories": [{"id": 0, "name": "Car"}],
    "annotations": [
      {"image_id": 0, "category_id": 0, "bbox": [1, 2, 3, 4]},
      {"image_id": 1, "category_id": 0, "bbox": None},
      None,
      {"image_id": 2, "category_id": 0, "bbox": [1, 2, -3, 4]},
    ],
  }
  (corpus / "val.json").write_text(json.dumps(coco))
  items = sources.read_coco_thermal([str(corpus / "val.json")], str(corpus / "images"), "hit")
  ingest(items, str(corpus / "o"), "hit", _opts())
  assert [(r["position"], r["reason"]) for r in _rejects(corpus / "o")] == [
    ("val.json images[1]", "bad_bbox"),
    ("val.json images[2]", "missing_filename"),
    ("val.json images[3]", "not_an_object"),
    ("val.json images[4]", "bad_bbox"),
    ("val.json annotations[2]", "bad_annotation"),
  ]
  (rec,) = map(records.decode, _read(corpus / "o").values())
  assert rec.meta["objects"] == [{"category": "Car", "bbox": [1.0, 2.0, 3.0, 4.0]}]
  good = dict(coco, images=coco["images"][:1], annotations=coco["annotations"][:1])
  (corpus / "good" / "val.json").parent.mkdir()
  (corpus / "good" / "val.json").write_text(json.dumps(good))
  items = sources.read_coco_thermal(
    [str(corpus / "good" / "val.json")], str(corpus / "images"), "hit"
  )
  ingest(items, str(corpus / "good_out"), "hit", _opts())
  assert _read(corpus / "o") == _read(corpus / "good_out")
  (corpus / "train-2.json").write_text(json.dumps(coco))
  with pytest.raises(sources.InputError, match="train-2.json: split 'train-2'"):
    sources.read_coco_thermal([str(corpus / "train-2.json")], str(corpus / "images"), "hit")


def test_shards_listed_in_info_and_orphans_removed(corpus):
  out = corpus / "o"
  out.mkdir()
  orphan = out / "ucm-train-2.array_record-00000-of-00001"  # a '-' split of an older run
  orphan.write_bytes(b"stale")
  (out / "old-train.tfrecord-00000-of-00001").write_bytes(b"stale")
  _write_karpathy(corpus / "g.json", _good_karpathy())
  items = sources.read_karpathy(str(corpus / "g.json"), str(corpus / "images"), "ucm")
  ingest(items, str(out), "ucm", _opts(tfrecord=True))
  listed = set(records.read_info(str(out))["ingest"]["shards_written"])
  on_disk = {n for n in os.listdir(out) if ".array_record-" in n or ".tfrecord-" in n}
  assert listed == on_disk and len(on_disk) == 2 * 3  # train 4 -> 2 shards, val 1 -> 1


def test_resume_refuses_changed_inputs_naming_the_option(corpus):
  _write_karpathy(corpus / "g.json", _good_karpathy())
  args = {"json": [str(corpus / "g.json")], "images": str(corpus / "images")}

  def crashing():
    items = sources.read_karpathy(str(corpus / "g.json"), str(corpus / "images"), "ucm")
    for i, item in enumerate(items):
      if i == 4:
        raise RuntimeError("simulated crash")
      yield item

  with pytest.raises(RuntimeError, match="simulated"):
    ingest(crashing(), str(corpus / "o"), "ucm", _opts(source_args=args))
  changed = _good_karpathy()
  changed[0]["split"] = "test"
  _write_karpathy(corpus / "g.json", changed)
  items = sources.read_karpathy(str(corpus / "g.json"), str(corpus / "images"), "ucm")
  with pytest.raises(ingest_lib.ResumeError) as err:
    ingest(items, str(corpus / "o"), "ucm", _opts(source_args=args, resume=True))
  assert "changed: inputs (g.json)" in str(err.value)
  assert "re-run without --resume" in str(err.value) and "\n" not in str(err.value)


def test_image_limits_are_checked_from_the_header_before_decoding():
  header = _png_header_only(12000, 12000)
  with pytest.raises(image_io.ImageLimitError, match="144.0 Mpx"):
    image_io.open_image(header, "h", image_io.ImageLimits())
  with pytest.raises(image_io.ImageLimitError) as err:
    image_io.decode_image(_png(0, size=20), 3, "small", image_io.ImageLimits(min_side=32))
  assert err.value.reason == "image_too_small"
  # Past PIL's own bomb limit (2 x 89 Mpx) Image.open refuses: still too_many_pixels.
  with pytest.raises(image_io.ImageLimitError) as err:
    image_io.open_image(_png_header_only(20000, 20000), "bomb")
  assert err.value.reason == "too_many_pixels"


def test_oversized_or_unreadable_file_is_rejected(tmp_path, monkeypatch):
  (tmp_path / "big.png").write_bytes(_png(0))
  monkeypatch.setattr(inputs, "MAX_FILE_BYTES", 100)
  with pytest.raises(sources.ItemRejected) as err:
    inputs.load_image(str(tmp_path / "big.png"))
  assert err.value.reason == "file_too_large"
  monkeypatch.setattr(inputs, "MAX_FILE_BYTES", 1 << 30)

  def denied(path, *args, **kwargs):
    raise PermissionError(13, "Permission denied", str(path))

  monkeypatch.setattr("builtins.open", denied)
  with pytest.raises(sources.ItemRejected) as err:
    inputs.load_image(str(tmp_path / "big.png"))
  assert err.value.reason == "unreadable_file" and "Permission denied" in err.value.detail


def test_an_unforeseen_failure_is_one_reject_not_an_abort(tmp_path):
  def load():
    raise ZeroDivisionError("a reader bug")

  good = records.Record(id="s/ok", source="s", split="train", rgb=_png(0), captions=["a farm"])
  items = [sources.SourceItem("s/bad", "bad.png", load, "s.json images[0]"), good]
  ingest(items, str(tmp_path), "s", _opts())
  (reject,) = _rejects(tmp_path)
  assert reject["reason"] == "internal_error" and "ZeroDivisionError" in reject["detail"]
  assert list(_read(tmp_path)) == ["s/ok"]


def test_readme_lists_every_reject_reason_and_the_code_uses_no_other():
  readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
  section = readme.split("### Bad input")[1].split("\n## ")[0]
  assert [r for r in checks.REJECT_REASONS if f"`{r}`" not in section] == []
  code = "".join(
    (pathlib.Path(sources.__file__).parent / f).read_text()
    for f in ("sources.py", "entries.py", "inputs.py", "checks.py", "caption_text.py")
  )
  code += pathlib.Path(image_io.__file__).read_text()
  used = set(re.findall(r'(?:ItemRejected|CaptionRejected|ImageLimitError)\(\s*"(\w+)"', code))
  assert used and used <= set(checks.REJECT_REASONS)


def test_beam_stage_functions_reject_the_corpus_as_the_local_ingest_does(corpus):
  beam_prep = pytest.importorskip("data_prep.beam", reason="pip install -e '.[beam]'")
  cases = _hostile_karpathy()
  _write_karpathy(corpus / "bad.json", [e for e, _ in cases])
  spec = {
    "source": "karpathy",
    "json": [str(corpus / "bad.json")],
    "images": str(corpus / "images"),
  }
  spec["name"] = "ucm"
  seen, reasons = set(), []
  for pos, item in beam_prep.list_items(spec):  # items travel pickled, as Beam sends them
    if item.id in seen:  # Beam's first_of_id groups duplicates; the test keeps order instead
      continue
    seen.add(item.id)
    for kind, out in beam_prep.check((pos, item), 32):
      if kind == "reject" and "caption_index" not in out[2]:
        reasons.append((out[2]["position"], out[2]["reason"]))
  want = [(f"bad.json images[{i}]", r) for i, (_, r) in enumerate(cases) if r]
  assert reasons == [w for w in want if w[1] != "duplicate_id"]


@pytest.mark.parametrize(
  "kind,name,content,message",
  [
    ("nwpu", "n.json", b'[{"filename": "g0.png"}]', "expected class names as top-level keys"),
    ("nwpu", "n.json", b'{"farm": [\xff]}', "n.json: not UTF-8 at byte 10 (line 1)"),
    ("coco_thermal", "val.json", b"[]", "val.json: top level is not a COCO object"),
    ("coco_thermal", "val.json", b'{"images": {}}', "val.json: top level is not a COCO object"),
    ("coco_thermal", "val.json", b'{"images": [}', "val.json: not JSON at line 1 column 13"),
    ("folder", "c.jsonl", b"[1,\n2]\n", "c.jsonl: no line is a JSON object"),
    ("folder", "c.csv", b'file,caption\n"g0.png,a\n', "c.csv: not CSV in the row after line 1"),
  ],
)
def test_unreadable_whole_files_of_every_reader(corpus, kind, name, content, message):
  (corpus / name).write_bytes(content)
  with pytest.raises(sources.InputError) as err:
    sources.read_source(kind, [str(corpus / name)], str(corpus / "images"), "x")
  assert message in str(err.value) and "\n" not in str(err.value)
