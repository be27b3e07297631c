"""translate step: round trip over shards (ids/captions kept, IR added), native sizes, resume."""

import io
import os

import jax
import numpy as np
import pytest
from PIL import Image

from data_prep import translate
from fusionrs_jax.core import checkpoint, records
from fusionrs_jax.models import cyclegan


def _png(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, "PNG")
  return buf.getvalue()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A translator run folder holding a (random-init) tiny checkpoint and its config.json."""
  path = tmp_path_factory.mktemp("run")
  params = cyclegan.build("tiny").init(jax.random.PRNGKey(0), 16)
  records.write_json_atomic(
    str(path / "config.json"), {"trainer": "translator", "model": {"size": "tiny"}}
  )
  ckpt = checkpoint.Checkpointer(str(path / "checkpoints"), save_every=1, async_save=False)
  ckpt.save(3, {"params": params}, force=True)
  ckpt.close()
  return str(path)


@pytest.fixture()
def rgb_dir(tmp_path):
  rng = np.random.default_rng(0)
  recs = []
  for i, (h, w) in enumerate([(30, 22), (30, 22), (16, 16), (31, 40), (16, 16)]):
    recs.append(
      records.Record(
        id=f"s{i}",
        source="t",
        split="train",
        rgb=_png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)),
        captions=[f"caption {i}"],
      )
    )
  # One record already has real IR: kept as is.
  recs[4].ir, recs[4].ir_origin = _png(np.zeros((16, 16), np.uint8)), "real"
  out = str(tmp_path / "in")
  records.write_split(recs[:3], out, "toy", "train", records_per_shard=2)
  records.write_split(recs[3:], out, "toy", "test")
  records.write_info(out, "toy")
  return out


def test_translate_round_trip_keeps_records_and_adds_native_size_ir(workdir, rgb_dir, tmp_path):
  out = str(tmp_path / "out")
  summary = translate.translate_folder(rgb_dir, out, workdir, batch_size=3)
  assert summary["records"] == 5 and summary["translated"] == 4 and summary["kept"] == 1
  for split in ("train", "test"):
    src = list(records.read_records(records.list_shards(rgb_dir, split)))
    dst = list(records.read_records(records.list_shards(out, split)))
    assert [r.id for r in src] == [r.id for r in dst]
    for a, b in zip(src, dst):
      assert a.captions == b.captions and a.rgb == b.rgb
      if a.ir:
        assert b.ir == a.ir and b.ir_origin == "real"
        continue
      ir = Image.open(io.BytesIO(b.ir))
      assert ir.mode == "L" and ir.size == Image.open(io.BytesIO(a.rgb)).size
      assert b.ir_origin == "translated" and b.meta["translator"]["step"] == 3
  info = records.read_info(out)
  assert info["splits"]["train"]["ir_origins"] == {"translated": 3}


def test_translation_matches_direct_generator_call(workdir, rgb_dir, tmp_path):
  model, params, _ = translate.load_generator(os.path.join(workdir, "checkpoints"))
  t = translate.Translator(model, params, batch_size=8)
  x = np.random.default_rng(1).uniform(-1, 1, (24, 20, 3)).astype(np.float32)
  (got,) = t([x])
  want = (np.asarray(model.apply({"params": params}, x[None]))[0] + 1) / 2
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_interrupted_run_resumes_by_skipping_finished_shards(workdir, rgb_dir, tmp_path):
  out = str(tmp_path / "out")
  translate.translate_folder(rgb_dir, out, workdir)
  first = records.list_shards(out, "train")[0]
  before = open(first, "rb").read()
  os.remove(records.list_shards(out, "test")[0])  # as if killed before this shard
  summary = translate.translate_folder(rgb_dir, out, workdir)
  assert summary["skipped_shards"] == 2 and summary["records"] == 2
  assert open(first, "rb").read() == before
  assert records.read_info(out)["splits"]["test"]["records"] == 2


def test_pad_to_multiple_reflects_and_errors_name_the_fix(tmp_path):
  x = np.arange(6.0).reshape(1, 2, 3, 1)
  y = translate.pad_to_multiple(x, 4)
  assert y.shape == (1, 4, 4, 1)
  np.testing.assert_array_equal(y[0, :2, 3, 0], x[0, :, 1, 0])  # reflection, not edge
  with pytest.raises(FileNotFoundError, match="translator workdir"):
    translate.resolve_checkpoint(str(tmp_path))
