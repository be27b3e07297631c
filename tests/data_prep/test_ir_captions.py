"""Tests of the IR caption engine, post-filter, instructions, model backends and CLI."""

import http.server
import io
import json
import os
import random
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from data_prep.ir_text import (
  captions as ir_captions,
)
from data_prep.ir_text import (
  filter as ir_filter,
)
from data_prep.ir_text import (
  lexicon as ir_lexicon,
)
from data_prep.ir_text import (
  llm as ir_llm,
)
from data_prep.ir_text import (
  stats as ir_stats,
)
from data_prep.ir_text.instructions import make_instructions
from fusionrs_jax.core import records

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _image_with_bright_cell(region: str, size: int = 90, seed: int = 0) -> np.ndarray:
  """Noisy mid-gray image whose grid cell `region` is much brighter. uint8 [size, size]."""
  rng = np.random.default_rng(seed)
  img = rng.normal(100, 8, (size, size))
  i = ir_stats.REGION_NAMES.index(region)
  cell = size // 3
  r, c = divmod(i, 3)
  img[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] += 90
  return img.clip(0, 255).astype(np.uint8)


def _png(img: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, "PNG")
  return buf.getvalue()


def _record(rid: str, captions, img=None, objects=None, split="train") -> records.Record:
  img = _image_with_bright_cell("center", seed=len(rid)) if img is None else img
  return records.Record(
    id=rid,
    source="test",
    split=split,
    ir=_png(img),
    ir_origin="rendered",
    captions=list(captions),
    meta={"objects": objects} if objects else {},
  )


def _random_captions(rng: random.Random) -> list[str]:
  forms = [f for fs in ir_lexicon.CLASS_FORMS.values() for f in fs]
  fillers = ["there is", "next to", "with some", "many", "lots of", "near the", "a green"]
  return [
    " ".join(rng.choice(fillers) + " " + rng.choice(forms) for _ in range(rng.randint(1, 3))) + " ."
    for _ in range(rng.randint(1, 5))
  ]


# ----------------------------------------------------------------------------
# Measurements and captions.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("region", ["upper left", "center", "lower right", "middle left"])
def test_caption_claims_the_measured_brightest_region(region):
  img = _image_with_bright_cell(region)
  stats = ir_stats.measure_ir(img)
  assert stats["brightest_region"] == region
  cell = img[:30, :30] if region == "upper left" else None
  if cell is not None:
    assert stats["region_means"]["upper left"] == pytest.approx(cell.mean(), abs=0.06)
  captions = ir_captions.describe_ir(
    img, ["a road next to buildings ."], None, seed=region, num_captions=5
  )
  claims = [(c, p) for c, p in captions if "brightest_region" in p["facts"]]
  claims += [
    (c, p)
    for c, p in ir_captions.describe_ir(img, [], None, seed=region + "x", num_captions=5)
    if "brightest_region" in p["facts"]
  ]
  assert claims, "no caption used the brightest region fact"
  for text, prov in claims:
    assert region in text
    assert prov["measurements"]["brightest_region"] == region
    assert prov["measurements"]["brightest_region_mean"] == stats["region_means"][region]


def test_bright_blob_count_and_region_are_measured():
  img = np.full((120, 120), 60, np.uint8)
  img[10:20, 90:100] = 240  # upper right, 100 px: the largest blob
  img[100:106, 10:16] = 240  # lower left, 36 px
  blobs = ir_stats.measure_ir(img)["bright_blobs"]
  assert blobs["count"] == 2
  assert blobs["largest_region"] == "upper right"


def test_uniform_image_still_gets_two_captions_without_region_claims():
  img = np.full((64, 64), 128, np.uint8)
  captions = ir_captions.describe_ir(img, ["a large lake ."], None, seed=1, num_captions=4)
  assert len(captions) >= 2
  for text, _ in captions:
    assert not any(r in text for r in ir_stats.REGION_NAMES if r != "center")


def test_no_caption_mentions_an_object_absent_from_the_scene_captions():
  rng = random.Random(0)
  report = ir_filter.FilterReport()
  for i in range(150):
    img = np.random.default_rng(i).integers(0, 256, (48, 48)).astype(np.uint8)
    if i % 3 == 0:
      img = _image_with_bright_cell(rng.choice(ir_stats.REGION_NAMES), size=48, seed=i)
    scene = _random_captions(rng) if i % 5 else []
    allowed = set(ir_lexicon.mentioned_classes(scene))
    captions = ir_captions.describe_ir(img, scene, None, seed=i, num_captions=5, report=report)
    assert len(captions) >= 2, (scene, captions)
    for text, prov in captions:
      mentioned = {m["class"] for m in ir_lexicon.find_mentions(text)}
      assert mentioned <= allowed, (text, scene)
      assert not ir_filter._TEMPERATURE.search(text) and not ir_filter._UNCERTAIN.search(text)
      assert prov["engine"] == "ir_template_v1" and prov["measurements"]
  assert report.accepted >= 300


def test_captions_are_deterministic_and_vary_between_records():
  rec = _record("scene-1", ["three white planes are parked near the runway ."])
  assert ir_captions.annotate_record(rec) == ir_captions.annotate_record(rec)
  texts = set()
  for i in range(20):
    texts.update(
      ir_captions.annotate_record(_record(f"scene-{i}", ["many buildings and trees ."])).ir_captions
    )
  assert len(texts) > 40


# ----------------------------------------------------------------------------
# Post-filter.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
  "text,reason",
  [
    ("The buildings look hot in the infrared image at night.", "temperature_claim"),
    ("The road surface is around 35 °C in this infrared view.", "temperature_claim"),
    ("Warm roofs stand out against the darker road in infrared.", "temperature_claim"),
    ("The bright patch in the center might be a large roof area.", "uncertainty"),
    ("Possibly the road is the brightest structure in this view.", "uncertainty"),
    ("Two ships appear as bright spots next to the road.", "absent_object"),
    ("The airplanes are bright against the road surface here.", "absent_object"),
    ("Bright road.", "too_short"),
    ("The road " + "is bright and " * 30 + "wide.", "too_long"),
    ("Five buildings stand out brightly beside the road in infrared.", "unsupported_count"),
    ("The brightest response lies in the lower right of the frame.", "unsupported_region"),
  ],
)
def test_filter_rejects_with_the_named_reason(text, reason):
  reasons = ir_filter.check_caption(
    text, {"road", "building"}, {"building": 3}, regions={"upper left"}
  )
  assert reason in reasons, reasons


def test_filter_accepts_grounded_captions_and_rejects_duplicates():
  good = "In the infrared view of the road, the upper left shows the strongest intensity."
  assert ir_filter.check_caption(good, {"road"}, {}, regions={"upper left"}) == []
  assert (
    ir_filter.check_caption(
      "Three buildings appear bright next to the road here.", {"road", "building"}, {"building": 3}
    )
    == []
  )
  report = ir_filter.FilterReport()
  kept = ir_filter.filter_captions(
    [good, good.upper(), "It is hot here and there, yes."], {"road"}, {}, report=report
  )
  assert kept == [0]
  assert report.to_dict()["rejected"] == {"duplicate": 1, "temperature_claim": 1}


# ----------------------------------------------------------------------------
# Instructions.
# ----------------------------------------------------------------------------


def test_presence_answers_agree_with_the_scene_captions():
  rng = random.Random(1)
  answers = []
  for i in range(60):
    rec = ir_captions.annotate_record(_record(f"p{i}", _random_captions(rng)))
    present = set(ir_lexicon.mentioned_classes(rec.captions))
    items = [it for it in rec.instructions if it["task"] == "object_presence"]
    answers += [it["answer"] for it in items]
    for it in items:
      asked = {m["class"] for m in ir_lexicon.find_mentions(it["question"])}
      assert len(asked) == 1, it
      assert (asked <= present) == (it["answer"] == "Yes."), (it, rec.captions)
  assert answers.count("Yes.") == 60 and answers.count("No.") >= 40


def test_counting_uses_meta_boxes_then_caption_counts():
  boxes = [{"category": "Car", "bbox": [5, 5, 4, 4]}] * 3 + [
    {"category": "Person", "bbox": [30, 30, 2, 4]},
    {"category": "DontCare", "bbox": [1] * 4},
  ]
  rec = ir_captions.annotate_record(_record("boxes", [], objects=boxes))
  counts = {
    it["question"]: it["answer"] for it in rec.instructions if it["task"] == "counting_boxes"
  }
  assert counts == {"How many cars are there?": "3", "How many people are there?": "1"}
  rec = ir_captions.annotate_record(
    _record("cap", ["three white planes near two tanks .", "3 planes are parked ."])
  )
  counts = {
    it["question"]: it["answer"] for it in rec.instructions if it["task"] == "counting_captions"
  }
  assert counts == {"How many planes are there?": "3", "How many tanks are there?": "2"}


def test_every_record_gets_two_captions_and_four_grounded_instructions():
  rng = random.Random(2)
  for i in range(30):
    captions = _random_captions(rng) if i % 4 else []
    img = _image_with_bright_cell(rng.choice(ir_stats.REGION_NAMES), seed=i)
    rec = ir_captions.annotate_record(_record(f"r{i}", captions, img))
    rec.validate()
    assert len(rec.ir_captions) >= 2 and len(rec.ir_caption_provenance) == len(rec.ir_captions)
    assert len(rec.instructions) >= 4
    stats = ir_stats.measure_ir(img)
    answers = {it["task"]: it["answer"] for it in rec.instructions}
    assert answers["brightest_region"] == f"The {stats['brightest_region']}."
    assert answers["describe_ir"] in rec.ir_captions
    assert make_instructions(rec, stats) == rec.instructions


def test_record_without_ir_passes_through_unchanged():
  rec = records.Record(id="rgb", source="t", split="train", rgb=b"jpeg", captions=["a road ."])
  assert ir_captions.annotate_record(rec) is rec


# ----------------------------------------------------------------------------
# Model backends.
# ----------------------------------------------------------------------------


class _StubServer:
  """OpenAI-compatible stub on 127.0.0.1 answering from a list of (status, content)."""

  def __init__(self, replies):
    self.replies, self.requests = list(replies), []
    stub = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def do_POST(self):
        stub.requests.append(
          (self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        )
        status, content = stub.replies.pop(0) if stub.replies else (500, "")
        body = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

      def log_message(self, *args):
        pass

    self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
    threading.Thread(target=self.server.serve_forever, daemon=True).start()

  def close(self):
    self.server.shutdown()
    self.server.server_close()


def test_parse_captions_is_tolerant():
  assert ir_llm.parse_captions('Sure!\n```json\n["a b", "c d"]\n```') == ["a b", "c d"]
  assert ir_llm.parse_captions('{"captions": ["x y"]} trailing') == ["x y"]
  assert ir_llm.parse_captions('[{"caption": "x"}, {"text": "y"}]') == ["x", "y"]
  assert ir_llm.parse_captions('noise [unclosed {"captions": ["z"]}') == ["z"]
  with pytest.raises(ValueError):
    ir_llm.parse_captions("no json here")


def test_http_backend_retries_parses_and_filters():
  good = "In the infrared view of the road, the upper left shows the strongest intensity."
  canned = json.dumps(
    [
      good,
      "The road is hot in the upper left part of the frame.",
      "Two ships appear as bright spots beside the road today.",
      "The upper left might be the brightest area of the image.",
    ]
  )
  stub = _StubServer(
    [(500, ""), (200, "I cannot answer in JSON, sorry."), (200, f"Here you go:\n{canned}\nDone.")]
  )
  try:
    rewriter = ir_llm.make_rewriter(endpoint=stub.url, backoff=0.01)
    report = ir_filter.FilterReport()
    img = _image_with_bright_cell("upper left")
    captions = ir_captions.describe_ir(
      img,
      ["a road beside a river ."],
      None,
      seed=3,
      num_captions=4,
      report=report,
      rewriter=rewriter,
    )
  finally:
    stub.close()
  assert [p for p, _ in stub.requests] == ["/v1/chat/completions"] * 3
  assert ir_llm.REWRITE_PROMPT.splitlines()[0] in stub.requests[0][1]["messages"][1]["content"]
  assert rewriter.failures == {"HTTPError": 1, "ValueError": 1}
  assert captions[0] == (good, captions[0][1]) and captions[0][1]["engine"].startswith("http:")
  assert len(captions) == 4  # templates fill up after the model's rejected captions
  rejected = report.to_dict()["rejected"]
  assert rejected["temperature_claim"] == 1 and rejected["uncertainty"] == 1
  assert rejected["absent_object"] == 1


def test_http_backend_failure_falls_back_to_templates():
  stub = _StubServer([])
  try:
    rewriter = ir_llm.HttpRewriter(stub.url + "/v1", retries=2, backoff=0.01)
    report = ir_filter.FilterReport()
    captions = ir_captions.describe_ir(
      _image_with_bright_cell("center"), [], None, seed=0, report=report, rewriter=rewriter
    )
  finally:
    stub.close()
  assert len(captions) == 4 and all(p["engine"] == "ir_template_v1" for _, p in captions)
  assert report.rejected["model_failure"] == 1 and len(stub.requests) == 2


@pytest.mark.slow
def test_local_tiny_model_backend_runs_offline(tmp_path):
  transformers = pytest.importorskip("transformers")
  tokenizers = pytest.importorskip("tokenizers")
  words = ["[UNK]", "[PAD]", "[", "]", '"', ",", "the", "road", "is", "bright", "dark"]
  tok = tokenizers.Tokenizer(
    tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]")
  )
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  fast = transformers.PreTrainedTokenizerFast(
    tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[PAD]"
  )
  config = transformers.GPT2Config(
    vocab_size=len(words), n_positions=1024, n_embd=16, n_layer=1, n_head=2
  )
  transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
  fast.save_pretrained(tmp_path)
  rewriter = ir_llm.make_rewriter(llm=str(tmp_path), max_new_tokens=8, retries=1, backoff=0)
  report = ir_filter.FilterReport()
  captions = ir_captions.describe_ir(
    _image_with_bright_cell("center"),
    ["a road ."],
    None,
    seed=0,
    num_captions=3,
    report=report,
    rewriter=rewriter,
  )
  # A random model writes no usable JSON: counted as a model failure, templates fill in.
  assert len(captions) == 3 and report.rejected["model_failure"] == 1


# ----------------------------------------------------------------------------
# CLI over shard folders.
# ----------------------------------------------------------------------------


def _write_dataset(root: str) -> None:
  for split, n in (("train", 5), ("val", 3)):
    recs = [
      _record(
        f"{split}-{i}",
        ["a tennis court surrounded by trees and a road ."],
        _image_with_bright_cell(ir_stats.REGION_NAMES[i], seed=i),
        split=split,
      )
      for i in range(n)
    ]
    recs.append(
      records.Record(
        id=f"{split}-rgb", source="test", split=split, rgb=b"\xff", captions=["two planes ."]
      )
    )
    records.write_split(recs, root, "tiny", split, records_per_shard=3)


def test_cli_round_trips_shards_and_resumes(tmp_path):
  src, dst = str(tmp_path / "in"), str(tmp_path / "out")
  _write_dataset(src)
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "data_prep.ir_text.captions",
      f"--in={src}",
      f"--out={dst}",
      "--splits=train,val,test",
      "--show=2",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=True,
  )
  report, end = json.JSONDecoder().raw_decode(proc.stdout)
  assert proc.stdout[end:].count('"ir_captions"') == 2
  assert report["splits"]["train"]["records"] == 6 and report["splits"]["val"]["records"] == 4
  assert report["splits"]["train"]["without_ir_passed_through"] == 1
  assert report["filter"]["accepted"] == 4 * 8
  vocab = report["vocabulary"]
  assert vocab["ir_captions"]["3-grams"] > 3 * vocab["single_template_baseline"]["3-grams"]
  for split in ("train", "val"):
    ins, outs = records.list_shards(src, split), records.list_shards(dst, split)
    assert [os.path.basename(p) for p in ins] == [os.path.basename(p) for p in outs]
    for a, b in zip(records.read_records(ins), records.read_records(outs)):
      assert (a.id, a.captions, a.ir, a.rgb) == (b.id, b.captions, b.ir, b.rgb)
      assert b == (a if not a.ir else ir_captions.annotate_record(a))
  info = records.read_info(dst)
  assert info["splits"]["train"]["ir_captions"] == 20

  before = {p: os.path.getmtime(p) for p in records.list_shards(dst, "train")}
  again = ir_captions.annotate_folder(src, dst, ["train", "val"], resume=True)
  assert again["splits"]["train"]["shards_resumed"] == 2
  assert again["filter"] == report["filter"] and again["vocabulary"] == vocab
  assert before == {p: os.path.getmtime(p) for p in records.list_shards(dst, "train")}

  # Re-sharded input: stale output shards go, the rest is annotated again.
  records.write_split(
    list(records.read_records(records.list_shards(src, "train"))),
    src,
    "tiny",
    "train",
    records_per_shard=10,
  )
  again = ir_captions.annotate_folder(src, dst, ["train"], resume=True)
  assert (
    again["splits"]["train"]["shards"] == 1 and "shards_resumed" not in again["splits"]["train"]
  )
  assert len(records.list_shards(dst, "train")) == 1
  assert records.read_info(dst)["splits"]["train"]["ir_captions"] == 20
