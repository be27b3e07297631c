"""Retrieval evaluator: recall against a naive loop, positives, table directions, zero-shot,
the evaluator on the tiny demo world with a fake embedder, and the standalone CLI."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm
from PIL import Image

from fusionrs_jax.core import records
from fusionrs_jax.evaluators import retrieval
from tests.conftest import REPO

KS = (1, 5, 10)


def _naive_recall(scores, positives, k):
  """% of queries whose best-ranked positive is in the top k; a tie ranks the lower
  gallery index first (what a stable descending sort does)."""
  hits = 0
  for s, pos in zip(scores, positives):
    ranks = [
      sum(1 for j in range(len(s)) if s[j] > s[g] or (s[j] == s[g] and j < g))
      for g in range(len(s))
      if pos[g]
    ]
    hits += bool(ranks) and min(ranks) < k
  return 100.0 * hits / len(scores)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_at_k_matches_naive_loop_with_ties_and_multiple_positives(seed):
  rng = np.random.default_rng(seed)
  scores = rng.integers(0, 4, (40, 30)).astype(np.float32)  # few values: many ties
  positives = rng.random((40, 30)) < 0.08  # 0..several positives per query
  positives[0] = False  # a query without any positive never counts
  got = retrieval.recall_at_k(scores, positives, (1, 2, 5, 10, 30))
  for k, v in got.items():
    assert v == pytest.approx(_naive_recall(scores, positives, k)), k
  assert got[30] == pytest.approx(100.0 * positives.any(1).mean())


def test_recall_ties_count_only_when_the_positive_sorts_first():
  scores = np.zeros((2, 4))
  positives = np.array([[1, 0, 0, 0], [0, 0, 0, 1]], bool)
  assert retrieval.recall_at_k(scores, positives, (1, 4)) == {1: 50.0, 4: 100.0}


def test_same_text_positives_include_identical_normalized_text_of_other_images():
  texts = ["A dog.", "a cat", "a  DOG!", "bird", "a dogs"]
  pos = retrieval.same_text_positives([[0, 1], [2], [3, 4]], texts)
  expected = np.array(
    [
      [1, 1, 1, 0, 0],  # own captions + "a  DOG!" (== "a dog")
      [1, 0, 1, 0, 0],  # own caption + "A dog."
      [0, 0, 0, 1, 1],
    ],
    bool,
  )
  np.testing.assert_array_equal(pos, expected)


def _onehot(idx, dim):
  return np.eye(dim, dtype=np.float32)[idx]


def test_perfect_embeddings_give_100_in_every_direction():
  n, d = 12, 16
  images = np.arange(n)
  emb = {
    "rgb": _onehot(images, d),
    "ir": _onehot(images, d),
    "text": _onehot(np.repeat(images, 2), d),
    "ir_text": _onehot(images, d),
  }
  caption_ids = [[2 * i, 2 * i + 1] for i in range(n)]
  texts = [f"caption {i}" for i in range(2 * n)]
  ir_ids = [[i] for i in range(n)]
  out = retrieval.both_protocols(emb, caption_ids, texts, ir_ids, texts[:n], KS)
  for prefix in ("", retrieval.SAME_TEXT):
    for d_name in retrieval.DIRECTIONS + retrieval.IR_CAPTION_DIRECTIONS:
      assert [out[f"{prefix}{d_name}/R@{k}"] for k in KS] == [100.0] * 3, d_name
    assert out[f"{prefix}mR"] == 100.0 and out[f"{prefix}mR_irtext"] == 100.0


def test_deranged_texts_score_zero_r1_while_rgb_ir_stays_perfect():
  n = 12
  perm = np.roll(np.arange(n), 1)  # no fixed point: every text looks like another image
  emb = {"rgb": _onehot(np.arange(n), n), "ir": _onehot(np.arange(n), n), "text": _onehot(perm, n)}
  out = retrieval.retrieval_table(emb, np.eye(n, dtype=bool), None, KS)
  for d_name in ("rgb2text", "text2rgb", "ir2text", "text2ir"):
    assert out[f"{d_name}/R@1"] == 0.0
  assert out["rgb2ir/R@1"] == out["ir2rgb/R@1"] == 100.0
  assert "mR_irtext" not in out


def test_random_embeddings_are_at_chance_level():
  rng = np.random.default_rng(0)
  n, d = 500, 64
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  emb = {m: unit(rng.normal(size=(n, d))) for m in ("rgb", "ir", "text")}
  out = retrieval.retrieval_table(emb, np.eye(n, dtype=bool), None, KS)
  for d_name in retrieval.DIRECTIONS:
    assert out[f"{d_name}/R@10"] < 6.0  # chance is 10/500 = 2%
  assert 0.5 < out["mR"] < 3.0


def test_directions_use_the_right_orientation():
  # Image 1's second caption (text 2) looks like image 0: images still find a right caption
  # first, but text 2 retrieves the wrong image.
  emb = {"rgb": _onehot([0, 1], 2), "ir": _onehot([0, 1], 2), "text": _onehot([0, 1, 0], 2)}
  pos = retrieval.own_caption_positives([[0], [1, 2]], 3)
  out = retrieval.retrieval_table(emb, pos, None, (1,))
  assert out["rgb2text/R@1"] == 100.0
  assert out["text2rgb/R@1"] == pytest.approx(200.0 / 3)


def test_own_caption_positives_are_each_images_own_captions_only():
  pos = retrieval.own_caption_positives([[0, 1], [2], [3, 4]], 5)
  expected = np.array([[1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 1]], bool)
  np.testing.assert_array_equal(pos, expected)


def _protocol_scores():
  """[12 images, 12 captions] similarities; caption t belongs to image t and captions 0, 1, 2
  share one normalized text. Unset entries are 0 (ties sort by index)."""
  s = np.zeros((12, 12), np.float32)
  np.fill_diagonal(s, 0.5)
  s[0, 1] = 0.9  # image 0 ranks caption 1 (same text) first ...
  s[0, 7:11] = 0.8  # ... and four unrelated captions before its own: own caption at rank 5
  s[2, 0] = 0.9  # image 2 ranks caption 0 (same text) first ...
  s[2, 2] = -0.5  # ... and its own caption last (rank 11)
  return s


def test_standard_and_same_text_protocols_on_a_hand_built_similarity_matrix():
  texts = ["Many buildings.", "many buildings", "MANY  buildings!"]
  texts += [f"scene {i}" for i in range(3, 12)]
  s = _protocol_scores()
  # rgb @ text.T == s; IR embeds like RGB, so the IR directions repeat the RGB ones.
  emb = {"rgb": s, "ir": s, "text": np.eye(12, dtype=np.float32)}
  out = retrieval.both_protocols(emb, [[i] for i in range(12)], texts, None, None, KS)
  pct = lambda hits: pytest.approx(100.0 * hits / 12)
  # image -> text. Own captions: image 0 finds its caption at rank 5 (R@10 only), image 2
  # never; the other 10 at rank 0. Same text: images 0 and 2 find caption 1 / 0 first.
  own_i2t, same_i2t = [pct(10), pct(10), pct(11)], [pct(12)] * 3
  # text -> image. Own image: captions 0, 1 and 7-10 find it at rank 1 (image 2 / image 0
  # scores higher), caption 2 at rank 11, captions 3-6 and 11 at rank 0. Same text: captions
  # 0, 1, 2 each have image 2 / 0 / 0 (tie, lowest index) of their text first.
  own_t2i, same_t2i = [pct(5), pct(11), pct(11)], [pct(8), pct(12), pct(12)]
  for d in ("rgb2text", "ir2text"):
    assert [out[f"{d}/R@{k}"] for k in KS] == own_i2t, d
    assert [out[f"same_text/{d}/R@{k}"] for k in KS] == same_i2t, d
  for d in ("text2rgb", "text2ir"):
    assert [out[f"{d}/R@{k}"] for k in KS] == own_t2i, d
    assert [out[f"same_text/{d}/R@{k}"] for k in KS] == same_t2i, d
  # RGB <-> IR positives are the sample id under both protocols.
  for d in ("rgb2ir", "ir2rgb"):
    assert [out[f"{d}/R@{k}"] for k in KS] == [out[f"same_text/{d}/R@{k}"] for k in KS]
  assert {k for k in out if k.endswith("/R@1")} == {
    f"{p}{d}/R@1" for p in ("", "same_text/") for d in retrieval.DIRECTIONS
  }
  assert out["mR"] < out["same_text/mR"]
  table = retrieval.format_table(out)
  assert table.index("own captions") < table.index("same normalized text")


def _unit_rows(rng, n, d=8):
  x = rng.normal(size=(n, d))
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_samples_without_ir_leave_the_ir_directions_only():
  rng = np.random.default_rng(3)
  n = 20
  caption_ids = [[2 * i, 2 * i + 1] for i in range(n)]
  texts = [f"caption {i // 2}" for i in range(2 * n)]  # both captions of an image share text
  base = _unit_rows(rng, n)
  emb = {m: base + 0.8 * _unit_rows(rng, n) for m in ("rgb", "ir")}
  emb["text"] = np.repeat(base, 2, axis=0) + 0.8 * _unit_rows(rng, 2 * n)
  has_ir = rng.random(n) < 0.6
  present = {"rgb": np.ones(n, bool), "ir": has_ir}
  masked = retrieval.both_protocols(emb, caption_ids, texts, None, None, KS, present)
  full = retrieval.both_protocols(emb, caption_ids, texts, None, None, KS)
  # The split without the IR-less samples (their images and captions).
  keep = np.flatnonzero(has_ir)
  sub_ids = [[2 * j, 2 * j + 1] for j in range(len(keep))]
  sub_emb = {m: emb[m][keep] for m in ("rgb", "ir")}
  sub_emb["text"] = emb["text"][np.stack([2 * keep, 2 * keep + 1], 1).ravel()]
  subset = retrieval.both_protocols(sub_emb, sub_ids, texts[: 2 * len(keep)], None, None, KS)
  for prefix in ("", retrieval.SAME_TEXT):
    for d in ("ir2text", "text2ir", "rgb2ir", "ir2rgb"):
      for k in KS:
        assert masked[f"{prefix}{d}/R@{k}"] == pytest.approx(subset[f"{prefix}{d}/R@{k}"]), d
    for d in ("rgb2text", "text2rgb"):
      for k in KS:
        assert masked[f"{prefix}{d}/R@{k}"] == full[f"{prefix}{d}/R@{k}"], d
  assert masked["ir2text/R@1"] != full["ir2text/R@1"]  # the IR-less samples did count before
  # Every sample present: the unmasked table, exactly.
  all_present = {"rgb": np.ones(n, bool), "ir": np.ones(n, bool)}
  assert retrieval.both_protocols(emb, caption_ids, texts, None, None, KS, all_present) == full


# ----------------------------------------------------------------------------
# RetrievalEvaluator on the tiny demo world with a fake embedder.
# ----------------------------------------------------------------------------


class _FakeEmbedder:
  """Embeddings known in advance, looked up by the exact pixels/tokens the evaluator passes.

  Image i -> e_i + 0.5 e_{N + class}, with the IR class shifted by one (so IR zero-shot is
  always wrong); caption (scene or IR) -> e_(first image with those tokens);
  class prompt -> e_{N + class}.
  """

  def __init__(self):
    self.image_batches, self.text_batches = [], []

  def bind(self, ev):
    self.n, self.classes = len(ev.rgb), sorted(set(ev.labels))
    self.dim = self.n + len(self.classes)
    self.pixels = {
      m: {x.tobytes(): i for i, x in reversed(list(enumerate(getattr(ev, m))))}
      for m in ("rgb", "ir")
    }
    self.class_of = [self.classes.index(c) for c in ev.labels]
    self.text_vec = {}
    for texts, ids in ((ev.captions, ev.caption_ids), (ev.ir_captions, ev.ir_caption_ids)):
      owner = [i for i, row in enumerate(ids) for _ in row]
      for t, row in enumerate(ev.tokenizer.encode(texts, ev.text_len)):
        self.text_vec.setdefault(row.tobytes(), _onehot(owner[t], self.dim))
    for _modality, prompt in zip(("rgb", "ir"), ev._prompts):
      rows = ev.tokenizer.encode(
        [prompt.format(retrieval.class_phrase(c)) for c in self.classes], ev.text_len
      )
      for c, row in enumerate(rows):
        self.text_vec[row.tobytes()] = _onehot(self.n + c, self.dim)

  def image(self, i, modality):
    c = (self.class_of[i] + (modality == "ir")) % len(self.classes)
    v = _onehot(i, self.dim) + 0.5 * _onehot(self.n + c, self.dim)
    return v / np.linalg.norm(v)

  def embed_images(self, params, images, modality):
    self.image_batches.append(images.shape[0])
    return np.stack([self.image(self.pixels[modality][x.tobytes()], modality) for x in images])

  def embed_texts(self, params, tokens):
    self.text_batches.append(tokens.shape[0])
    return np.stack([self.text_vec[row.tobytes()] for row in tokens])


def test_evaluator_on_tiny_world_reports_what_the_fake_embedder_implies(tiny_dataset):
  fake = _FakeEmbedder()
  ev = retrieval.RetrievalEvaluator(
    tiny_dataset,
    "test",
    image_size=32,
    text_len=16,
    batch_size=5,
    tokenizer_path=os.path.join(tiny_dataset, "tokenizer.model"),
    embed_images=fake.embed_images,
    embed_texts=fake.embed_texts,
  )
  fake.bind(ev)
  assert len(ev.rgb) == 16 and len(ev.captions) >= 16 and ev.has_ir_captions
  assert len(fake.classes) > 1
  out = ev.run(params=None)

  # Independent recomputation from the known embeddings (no batching, no padding).
  emb = {m: np.stack([fake.image(i, m) for i in range(fake.n)]) for m in ("rgb", "ir")}
  emb["text"] = fake.embed_texts(None, ev.tokenizer.encode(ev.captions, ev.text_len))
  emb["ir_text"] = fake.embed_texts(None, ev.tokenizer.encode(ev.ir_captions, ev.text_len))
  expected = retrieval.both_protocols(
    emb, ev.caption_ids, ev.captions, ev.ir_caption_ids, ev.ir_captions, (1, 5, 10)
  )
  assert set(out) == set(expected) | {"zeroshot_rgb/acc", "zeroshot_ir/acc"}
  for key, value in expected.items():
    assert out[key] == pytest.approx(value), key
  # Every image has a caption that embeds as itself; a caption whose 16 truncated tokens
  # equal another image's caption embeds as that image, so text2rgb may miss a few.
  assert out["rgb2text/R@1"] == 100.0 and out["text2rgb/R@1"] >= 95.0
  assert out["rgb2ir/R@1"] == out["ir2rgb/R@1"] == 100.0
  assert out["zeroshot_rgb/acc"] == 100.0
  assert out["zeroshot_ir/acc"] == 0.0
  # Fixed-size batches (the last one padded), so a jitted embedder compiles once.
  assert set(fake.image_batches[:8]) == {5}


def _png(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def _mixed_record(i: int) -> records.Record:
  """Record i: random RGB, IR (its luminance) iff i is even, two captions, a class label."""
  rgb = np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  has_ir = i % 2 == 0
  return records.Record(
    id=f"r{i}",
    source="test",
    split="test",
    rgb=_png(rgb),
    ir=_png(rgb.mean(-1).astype(np.uint8)) if has_ir else b"",
    ir_origin="rendered" if has_ir else "",
    captions=[f"roof {i} near a road", f"field {i} with trees"],
    label=f"class{(i // 2) % 2}",  # both classes among the even records too
  )


@pytest.fixture(scope="module")
def mixed_split(tmp_path_factory):
  """Split "mixed": 8 records, the odd ones without IR; split "with_ir": the even ones."""
  root = tmp_path_factory.mktemp("mixed")
  recs = [_mixed_record(i) for i in range(8)]
  records.write_split(recs, str(root), "toy", "mixed")
  records.write_split(recs[::2], str(root), "toy", "with_ir")
  (root / "texts.txt").write_text("\n".join(c for r in recs for c in r.captions))
  spm.SentencePieceTrainer.train(
    input=str(root / "texts.txt"),
    model_prefix=str(root / "spm"),
    vocab_size=40,
    pad_id=0,
    eos_id=1,
    bos_id=2,
    unk_id=3,
    hard_vocab_limit=False,
    minloglevel=2,
  )
  return str(root)


def _projection_embedder():
  """Deterministic embeddings: inputs flattened and multiplied by fixed random matrices."""
  mats = {}

  def project(key, x):
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    if key not in mats:
      mats[key] = np.random.default_rng(len(mats)).normal(size=(x.shape[1], 6))
    z = x @ mats[key] + 0.5  # never 0, even for a zero placeholder image
    return z / np.linalg.norm(z, axis=1, keepdims=True)

  return (lambda p, x, m: project(m, x)), (lambda p, t: project("text", t))


def test_evaluator_scores_ir_directions_on_the_samples_that_have_ir(mixed_split):
  embed_images, embed_texts = _projection_embedder()
  kwargs = dict(
    image_size=8,
    tokenizer_path=os.path.join(mixed_split, "spm.model"),
    text_len=8,
    batch_size=4,
    embed_images=embed_images,
    embed_texts=embed_texts,
  )
  mixed = retrieval.RetrievalEvaluator(mixed_split, "mixed", **kwargs)
  np.testing.assert_array_equal(mixed.present["ir"], np.arange(8) % 2 == 0)
  assert mixed.present["rgb"].all()
  got = mixed.run(None)
  want = retrieval.RetrievalEvaluator(mixed_split, "with_ir", **kwargs).run(None)
  for prefix in ("", retrieval.SAME_TEXT):
    for d in ("ir2text", "text2ir", "rgb2ir", "ir2rgb"):
      for k in KS:
        assert got[f"{prefix}{d}/R@{k}"] == pytest.approx(want[f"{prefix}{d}/R@{k}"]), d
  assert got["zeroshot_ir/acc"] == pytest.approx(want["zeroshot_ir/acc"])


# ----------------------------------------------------------------------------
# The standalone CLI on a run trained by the real main.
# ----------------------------------------------------------------------------


def _cli(*flags):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  return subprocess.run(
    [sys.executable, "-m", "fusionrs_jax.cli.evaluate", "retrieval", *flags],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    check=False,
  )


@pytest.mark.slow
def test_cli_reproduces_the_trainers_final_eval_and_writes_json(
  tiny_siglip_run, tiny_dataset, tmp_path
):
  _, workdir, trained = tiny_siglip_run
  out = tmp_path / "metrics.json"
  proc = _cli(f"--checkpoint={workdir}", f"--data={tiny_dataset}", "--split=test", f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "rgb2text" in proc.stdout and "mR (6 dirs)" in proc.stdout
  got = json.loads(out.read_text())
  assert set(got) == set(trained)
  for key, value in trained.items():
    assert got[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.slow
def test_cli_names_a_folder_that_is_not_a_run(tmp_path):
  proc = _cli(f"--checkpoint={tmp_path}")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
    f"error: --checkpoint={tmp_path}: no config.json there; it must be the run folder of a "
    "SigLIP training run (the --workdir given to fusionrs_jax.main)"
  ]
