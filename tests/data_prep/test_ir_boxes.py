"""Box-grounded captions for thermal images with boxes and no captions (HIT-UAV)."""

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from data_prep.ir_text import boxes, captions, lexicon
from fusionrs_jax.core import records

# A 90x90 image: two cars in the upper left cell, one person in the centre, no bicycle, and a
# DontCare box that must be ignored.
OBJECTS = [
  {"category": "Car", "bbox": [5.0, 5.0, 10.0, 6.0]},
  {"category": "Car", "bbox": [15.0, 10.0, 8.0, 6.0]},
  {"category": "Person", "bbox": [44.0, 44.0, 2.0, 3.0]},
  {"category": "DontCare", "bbox": [70.0, 70.0, 10.0, 10.0]},
]


def test_box_facts_count_classes_and_place_box_centres_on_the_grid():
  facts = boxes.box_facts(OBJECTS, 90, 90)
  assert facts["counts"] == {"Person": 1, "Car": 2, "Bicycle": 0}
  assert facts["regions"] == {"Person": ["center"], "Car": ["upper left"]}


@pytest.mark.parametrize(
  "n,phrase", [(0, "no"), (1, "one"), (2, "a few"), (4, "a few"), (5, "many")]
)
def test_count_buckets(n, phrase):
  assert boxes.bucket_of(n) == phrase


def test_box_captions_state_only_what_the_boxes_hold():
  caps = boxes.box_captions(OBJECTS, 90, 90, seed="img1")
  texts = [t for t, _ in caps]
  assert len(texts) == 5 and len(set(texts)) == 5
  bodies = [t.split(" with ", 1)[-1].split(" showing ", 1)[-1] for t in texts]
  assert "one person, two cars and no bicycles" in bodies
  assert "one person, a few cars and no bicycles" in bodies
  assert any("two cars in the upper left" in t and "one person in the center" in t for t in texts)
  for text, prov in caps:
    assert prov["engine"] == boxes.ENGINE and prov["counts"]["Car"] == 2
    # Every number stated next to a noun equals the box count.
    for form, n in lexicon.stated_counts([text]).items():
      assert n == {"car": 2, "person": 1}[form], text
    if "bicycle" in text:  # bicycles only ever as absent
      assert re.search(r"\bno\b[^.]*\bbicycles\b", text), text


def _ir_png(h=90, w=90):
  img = (np.arange(h * w).reshape(h, w) % 251).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="PNG")
  return buf.getvalue()


def test_thermal_record_with_boxes_gets_grounded_captions_and_no_rgb_questions():
  rec = records.Record(
    id="t1",
    source="hit_uav",
    split="train",
    ir=_ir_png(),
    ir_origin="real",
    meta={"objects": OBJECTS},
  )
  out, stats = captions.annotate_with_stats(rec)
  assert stats is not None and len(out.captions) == 5
  assert len(out.meta["caption_provenance"]) == 5
  assert boxes.grounding_texts(out) == []
  # The absent class is never described as seen in the IR view.
  assert out.ir_captions and not any("bicycle" in c for c in out.ir_captions)
  tasks = {i["task"] for i in out.instructions}
  assert not tasks & {"describe_rgb", "compare_views"}
  presence = {
    i["question"]: i["answer"] for i in out.instructions if i["task"] == "object_presence"
  }
  for question, answer in presence.items():
    noun = question.split("any ")[1].split(" in")[0]
    present = {"people": True, "cars": True, "bicycles": False}[noun]
    assert answer == ("Yes." if present else "No."), (question, answer)
  # A record that already has captions keeps them and their grounding.
  human = records.Record(
    id="t2",
    source="x",
    split="train",
    ir=_ir_png(),
    ir_origin="real",
    captions=["two cars on a road"],
    meta={"objects": OBJECTS},
  )
  again, _ = captions.annotate_with_stats(human)
  assert again.captions == ["two cars on a road"] and "caption_provenance" not in again.meta
  assert boxes.grounding_texts(again) == ["two cars on a road"]
  json.dumps(out.meta)  # stays JSON-serializable for the record encoder
