"""The captioner's loaders carry which images a record has (has_rgb / has_ir), for training
batches and for evaluation items and batches, instead of passing a black image off as real."""

import io

import numpy as np
import pytest
from PIL import Image

from fusionrs_jax.core import records
from fusionrs_jax.data import captioner as captioner_data
from fusionrs_jax.data import input_pipeline as ip
from tests.toy_tokenizer import train_toy_spm

S = 16


def _png(img: Image.Image) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format="PNG")
  return buf.getvalue()


def _record(i: int) -> records.Record:
  """Record i has an IR image iff i is even."""
  rng = np.random.default_rng(i)
  img = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
  has_ir = i % 2 == 0
  return records.Record(
    id=f"r{i}",
    source="test",
    split="train",
    rgb=_png(img),
    ir=_png(img.convert("L")) if has_ir else b"",
    ir_origin="rendered" if has_ir else "",
    captions=[f"a red roof near the road {i}", f"green field with trees {i}"],
    ir_captions=[f"warm roof {i}"] if has_ir else [],
  )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("captioner_masks")
  recs = [_record(i) for i in range(6)]
  records.write_split(recs, str(root), "toy", "train")
  texts = [c for r in recs for c in r.captions + r.ir_captions]
  train_toy_spm(texts, str(root / "spm"), 60, [captioner_data.SEP_PIECE])
  return str(root), str(root / "spm.model")


def test_train_batches_say_which_records_have_no_ir(data):
  root, tokenizer = data
  loader = captioner_data.make_train_loader(
    root,
    "train",
    batch_size=6,
    image_size=S,
    seed=0,
    tokenizer_path=tokenizer,
    inputs="rgb_ir",
    task_weights={"caption": 1.0},
    text_len=16,
    prompt_len=6,
    augment=False,
  )
  batch = next(iter(loader))
  expected = batch["index"] % 2 == 0  # sorted shard order = record order here
  np.testing.assert_array_equal(batch["has_ir"], expected)
  assert batch["has_rgb"].all()
  assert (batch["ir"][~expected] == 0).all() and (batch["ir"][expected] != 0).any()


def test_eval_items_and_batches_carry_the_masks(data):
  root, tokenizer = data
  items = captioner_data.eval_items(root, "train", S, "rgb_ir", ("caption", "ir_caption"))
  by_record = {it.record_id: it.has_ir for it in items}
  assert by_record == {f"r{i}": i % 2 == 0 for i in range(6)}
  assert all(it.has_rgb for it in items)
  tok = ip.Tokenizer(tokenizer)
  batches = list(captioner_data.eval_batches(items, tok, batch_size=4, prompt_len=6))
  got = np.concatenate([b["has_ir"][: len(chunk)] for b, chunk in batches])
  np.testing.assert_array_equal(got, [it.has_ir for it in items])
  assert batches[0][0]["has_ir"].dtype == bool and batches[0][0]["has_rgb"].shape == (4,)
