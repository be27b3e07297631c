"""Tests of the grain input pipeline on tiny shards built here (PNG pairs, IR = luminance)."""

import io

import numpy as np
import pytest
from PIL import Image

from fusionrs_jax.core import records
from fusionrs_jax.data import input_pipeline as ip
from tests.toy_tokenizer import train_toy_spm

N = 24  # records in the "train" split (3 shards of 10, 10, 4)
S, L = 16, 12  # image_size, text_len
WORDS = [
  "red",
  "roof",
  "green",
  "field",
  "river",
  "road",
  "warm",
  "cold",
  "car",
  "tree",
  "bright",
  "dark",
  "many",
  "few",
  "near",
  "a",
  "the",
  "with",
  "building",
  "parking",
]


def _png(img: Image.Image) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format="PNG")
  return buf.getvalue()


def _record(i: int, rng: np.random.Generator, rgb=True, ir=True) -> records.Record:
  # Smooth random image (upsampled noise) so bilinear resizing is well behaved; 40x48 is
  # not square, so the crop's aspect handling is exercised.
  small = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
  img = Image.fromarray(small).resize((48, 40), Image.BILINEAR)
  words = lambda k: " ".join(rng.choice(WORDS, k))
  return records.Record(
    id=f"r{i:03d}",
    source="test",
    split="train",
    rgb=_png(img) if rgb else b"",
    ir=_png(img.convert("L")) if ir else b"",
    ir_origin="rendered" if ir else "",
    captions=[f"scene {i} {words(4)}" for _ in range(3)],
    ir_captions=[f"thermal {i} {words(3)}" for _ in range(2)] if i % 2 == 0 else [],
    label=f"class{i % 3}",
  )


@pytest.fixture(scope="session")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipeline")
  rng = np.random.default_rng(0)
  train = [_record(i, rng) for i in range(N)]
  records.write_split(train, str(root), "toy", "train", records_per_shard=10)
  records.write_split([_record(i, rng, ir=False) for i in range(4)], str(root), "toy", "rgbonly")
  texts = [c for r in train for c in r.captions + r.ir_captions]
  train_toy_spm(texts, str(root / "spm"), 80)
  return {"dir": str(root), "spm": str(root / "spm.model"), "train": train}


def _loader(data, split="train", **kw):
  args = {
    "batch_size": 4,
    "image_size": S,
    "seed": 7,
    "tokenizer_path": data["spm"],
    "text_len": L,
    "shard_index": 0,
    "shard_count": 1,
  }
  args.update(kw)
  return ip.make_train_loader(data["dir"], split, **args)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _same(a, b):
  return all(
    a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a) for a, b in zip(a, b)
  )


def test_tokenizer_encodes_with_eos_pad_and_truncation(data):
  tok = ip.Tokenizer(data["spm"])
  ids = tok.processor.encode(["scene 3 red roof"])[0]
  out = tok.encode(["scene 3 red roof", "scene 3 red roof " * 10], 12)
  assert out.dtype == np.int32 and out.shape == (2, 12)
  np.testing.assert_array_equal(out[0, : len(ids) + 1], ids + [ip.EOS_ID])
  assert (out[0, len(ids) + 1 :] == ip.PAD_ID).all()
  assert out[1, -1] == ip.EOS_ID and (out[1] != ip.PAD_ID).all()
  assert tok.decode(out[:1]) == ["scene 3 red roof"]


def test_train_batch_shapes_and_normalization_range(data):
  batch = next(iter(_loader(data, with_label=True)))
  assert batch["rgb"].shape == (4, S, S, 3) and batch["rgb"].dtype == np.float32
  assert batch["ir"].shape == (4, S, S, 1) and batch["ir"].dtype == np.float32
  assert batch["tokens"].shape == (4, L) and batch["tokens"].dtype == np.int32
  assert batch["ir_tokens"].shape == (4, L) and batch["index"].shape == (4,)
  for key in ("rgb", "ir"):
    assert batch[key].min() >= -1.0 and batch[key].max() <= 1.0
    assert batch[key].max() - batch[key].min() > 0.5  # real content, not a constant
  assert batch["has_rgb"].all() and batch["has_ir"].all()
  assert list(batch["label"]) == [f"class{i % 3}" for i in batch["index"]]


def test_augmentation_is_identical_for_rgb_and_ir(data):
  aug = ip.Augment(scale=(0.2, 0.6), hflip=True, vflip=True, rot90=True)
  batches = _take(iter(_loader(data, augment=aug, batch_size=8)), 3)
  plain = {
    int(i): r
    for b in ip.make_eval_batches(
      data["dir"],
      "train",
      batch_size=8,
      image_size=S,
      tokenizer_path=data["spm"],
      text_len=L,
      shard_index=0,
      shard_count=1,
    )
    for i, r in zip(b["index"], b["rgb"])
  }
  changed = 0
  for b in batches:
    rgb = (b["rgb"].astype(np.float64) + 1) * 127.5
    ir = (b["ir"][..., 0].astype(np.float64) + 1) * 127.5
    lum = rgb @ np.array([0.299, 0.587, 0.114])  # PIL's "L" conversion
    # Each image is rounded to uint8 after decoding, conversion and resizing: <= 2 levels.
    np.testing.assert_allclose(ir, lum, atol=2.0)
    assert np.abs(ir - lum).mean() < 0.5
    assert np.abs(ir - lum[:, :, ::-1]).mean() > 5  # a flip of one alone would show
    changed += sum(
      not np.allclose(r, plain[int(i)], atol=0.05) for i, r in zip(b["index"], b["rgb"])
    )
  assert changed >= 20  # the augmentation really moved pixels (24 examples seen)


def test_eval_images_match_a_direct_pil_resize(data):
  batch = next(
    iter(
      ip.make_eval_batches(
        data["dir"],
        "train",
        batch_size=4,
        image_size=S,
        tokenizer_path=data["spm"],
        text_len=L,
        shard_index=0,
        shard_count=1,
      )
    )
  )
  for i, rgb in zip(batch["index"], batch["rgb"]):
    img = Image.open(io.BytesIO(data["train"][i].rgb)).resize((S, S), Image.BILINEAR)
    np.testing.assert_allclose(rgb, np.asarray(img) / 127.5 - 1, atol=1e-5)


def test_tokens_are_one_of_the_records_captions(data):
  tok = ip.Tokenizer(data["spm"])
  seen_choices = set()
  for b in _take(iter(_loader(data, batch_size=8)), 6):
    for row, i in enumerate(b["index"]):
      rec = data["train"][i]
      scene = [t.tolist() for t in tok.encode(rec.captions, L)]
      assert b["tokens"][row].tolist() in scene
      seen_choices.add(scene.index(b["tokens"][row].tolist()))
      ir_candidates = rec.ir_captions or rec.captions
      assert b["ir_tokens"][row].tolist() in [t.tolist() for t in tok.encode(ir_candidates, L)]
      assert b["has_ir_caption"][row] == bool(rec.ir_captions)
  assert seen_choices == {0, 1, 2}  # captions are sampled, not always the first


def test_same_seed_same_batches_other_seed_other_order(data):
  a = _take(iter(_loader(data)), 4)
  b = _take(iter(_loader(data)), 4)
  c = _take(iter(_loader(data, seed=8)), 4)
  assert _same(a, b)
  assert not all(np.array_equal(x["index"], y["index"]) for x, y in zip(a, c))


def test_training_repeats_and_reshuffles_epochs(data):
  batches = _take(iter(_loader(data)), 12)  # 2 epochs of 24
  first = np.concatenate([b["index"] for b in batches[:6]])
  second = np.concatenate([b["index"] for b in batches[6:]])
  assert sorted(first) == sorted(second) == list(range(N))
  assert not np.array_equal(first, second)


def test_process_shards_are_disjoint_and_cover_the_split(data):
  seen = []
  for p in range(3):
    batches = list(_loader(data, shard_index=p, shard_count=3, num_epochs=1))
    seen.append(np.concatenate([b["index"] for b in batches]))
  assert sum(len(s) for s in seen) == N
  assert sorted(np.concatenate(seen)) == list(range(N))


def test_eval_pass_sees_every_record_once_across_processes(data):
  counts, batches_per_process = np.zeros(N, int), []
  for p in range(3):
    batches = list(
      ip.make_eval_batches(
        data["dir"],
        "train",
        batch_size=5,
        image_size=S,
        tokenizer_path=data["spm"],
        text_len=L,
        shard_index=p,
        shard_count=3,
      )
    )
    batches_per_process.append(len(batches))
    for b in batches:
      assert b["rgb"].shape == (5, S, S, 3)
      np.add.at(counts, b["index"][b["mask"]], 1)
      assert (b["index"][~b["mask"]] == -1).all()
  assert (counts == 1).all()
  assert batches_per_process == [2, 2, 2]
  assert ip.num_eval_batches(data["dir"], "train", 5, shard_count=3) == 2


def test_restored_iterator_continues_the_identical_sequence(data):
  it = iter(_loader(data, augment=ip.Augment(vflip=True, rot90=True)))
  _take(it, 3)
  state = it.get_state()
  expected = _take(it, 5)  # crosses the epoch boundary (6 batches per epoch)
  resumed = iter(_loader(data, augment=ip.Augment(vflip=True, rot90=True)))
  resumed.set_state(state)
  assert _same(_take(resumed, 5), expected)


def test_orbax_checkpoint_manager_round_trips_the_iterator(data, tmp_path):
  import grain
  import orbax.checkpoint as ocp

  # The way checkpoint.py saves the data iterator beside the train state.
  manager = ocp.CheckpointManager(
    tmp_path, item_names=("data",), item_handlers={"data": grain.checkpoint.CheckpointHandler()}
  )
  it = iter(_loader(data))
  _take(it, 2)
  manager.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  manager.wait_until_finished()
  expected = _take(it, 2)
  resumed = iter(_loader(data))
  manager.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
  assert _same(_take(resumed, 2), expected)


@pytest.mark.slow  # spawns 4 worker processes (~10 s on 2 cores)
def test_worker_processes_resume_and_cover_every_record(data):
  it = iter(_loader(data, worker_count=2))
  first = _take(it, 6)  # one epoch
  assert sorted(np.concatenate([b["index"] for b in first])) == list(range(N))
  state = it.get_state()
  expected = _take(it, 2)
  resumed = iter(_loader(data, worker_count=2))
  resumed.set_state(state)
  assert _same(_take(resumed, 2), expected)
  del it, resumed


def test_missing_modality_zero_filled_with_mask_or_clear_error(data):
  batch = next(iter(_loader(data, split="rgbonly", batch_size=2)))
  assert batch["has_rgb"].all() and not batch["has_ir"].any()
  assert (batch["ir"] == 0).all()
  with pytest.raises(records.RecordError, match=r"record 'r00\d'.*no ir image"):
    next(iter(_loader(data, split="rgbonly", batch_size=2, missing_modality="error")))
  only_rgb = next(
    iter(
      _loader(data, split="rgbonly", batch_size=2, modalities=("rgb",), missing_modality="error")
    )
  )
  assert "ir" not in only_rgb and "has_ir" not in only_rgb


def test_bad_arguments_fail_with_clear_messages(data):
  with pytest.raises(ValueError, match="modalities"):
    _loader(data, modalities=("depth",))
  with pytest.raises(FileNotFoundError, match="SentencePiece"):
    _loader(data, tokenizer_path=data["dir"] + "/nope.model")
  with pytest.raises(FileNotFoundError, match="no array_record shards"):
    _loader(data, split="nosuchsplit")


def test_several_folders_train_as_one_dataset(data, tmp_path):
  """data.dir + data.mix_dirs: one epoch reads every record of both folders once; the IR-less
  folder's rows arrive with has_ir False."""
  rng = np.random.default_rng(1)
  extra = [_record(100 + i, rng, ir=False) for i in range(6)]
  records.write_split(extra, str(tmp_path), "extra", "train")
  args = {"batch_size": 2, "image_size": S, "seed": 7, "tokenizer_path": data["spm"]}
  loader = ip.make_train_loader(
    [data["dir"], str(tmp_path)],
    "train",
    text_len=L,
    shard_index=0,
    shard_count=1,
    num_epochs=1,
    **args,
  )
  batches = list(loader)
  index = np.concatenate([b["index"] for b in batches])
  has_ir = np.concatenate([b["has_ir"] for b in batches])
  assert sorted(index.tolist()) == list(range(N + 6))
  # Indices past the first folder's N records are the extra folder's, all without IR.
  assert not has_ir[index >= N].any() and has_ir[index < N].all()
