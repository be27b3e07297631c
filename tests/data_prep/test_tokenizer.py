"""Tokenizer: Gemma's special ids, determinism, round trips, equality with transformers."""

import io
import itertools
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_prep.ingest import tokenizer
from data_prep.ingest.writer import IngestOptions, ingest
from fusionrs_jax.core.records import Record

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SCENES = ["farmland", "residential area", "harbor", "parking lot", "river", "runway"]
_THINGS = ["green trees", "white buildings", "boats", "cars", "a road", "2 bridges"]
PROBES = [
  "There is a piece of farmland .",
  "Many  buildings and 123 green trees near a road",
  "tab\there é ünïcode 😀 <sep> answer",
  " leading space",
  "IR: warm roofs, 37°C",
]


def _captions() -> list[str]:
  combos = itertools.product(_SCENES, _THINGS, ("near", "beside", "between"))
  return [f"A {s} with {t} {p} the {s.split()[-1]} ." for s, t, p in combos]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
  path = tmp_path_factory.mktemp("tok") / "spm.model"
  return tokenizer.train_tokenizer(_captions(), str(path), vocab_size=400)


def test_special_ids_follow_gemma(model_path):
  sp = tokenizer.load_tokenizer(model_path)
  assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<eos>", "<bos>", "<unk>"]
  assert (sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()) == (0, 1, 2, 3)
  assert sp.encode("a <sep> b").count(sp.piece_to_id("<sep>")) == 1
  pieces = [sp.id_to_piece(i) for i in sp.encode("2 bridges 2222 and 22")]
  assert not [p for p in pieces if sum(c.isdigit() for c in p) > 1]  # split_digits


@pytest.mark.parametrize("text", PROBES)
def test_encode_decode_round_trips_with_byte_fallback(model_path, text):
  sp = tokenizer.load_tokenizer(model_path)
  ids = sp.encode(text)
  assert 3 not in ids  # byte fallback: nothing becomes <unk>
  assert sp.decode(ids) == text


def test_training_is_deterministic(model_path, tmp_path):
  again = tokenizer.train_tokenizer(_captions(), str(tmp_path / "again.model"), 400)
  with open(model_path, "rb") as a, open(again, "rb") as b:
    assert a.read() == b.read()


def test_transformers_gemma_tokenizer_gives_identical_ids(model_path, tmp_path):
  transformers = pytest.importorskip("transformers")
  folder = tmp_path / "hf"
  folder.mkdir()
  shutil.copy(model_path, folder / "tokenizer.model")
  # Real Gemma checkpoints set add_bos_token in tokenizer_config.json; a bare .model does not.
  hf = transformers.GemmaTokenizer.from_pretrained(str(folder), add_bos_token=True)
  sp = tokenizer.load_tokenizer(model_path)
  assert (hf.pad_token_id, hf.eos_token_id, hf.bos_token_id, hf.unk_token_id) == (0, 1, 2, 3)
  for text in PROBES + _captions()[:5]:
    assert hf(text, add_special_tokens=False)["input_ids"] == sp.encode(text), text
    assert hf(text)["input_ids"] == [2] + sp.encode(text)  # Gemma prepends <bos>
    assert hf.decode(sp.encode(text)) == text


def test_missing_model_names_the_command(tmp_path):
  with pytest.raises(FileNotFoundError, match="data_prep.ingest.tokenizer"):
    tokenizer.load_tokenizer(str(tmp_path / "none.model"))


def _png(seed: int) -> bytes:
  buf = io.BytesIO()
  pixels = np.random.default_rng(seed).integers(0, 255, (40, 40, 3), np.uint8)
  Image.fromarray(pixels).save(buf, format="PNG")
  return buf.getvalue()


def test_cli_trains_on_train_split_texts_only(tmp_path):
  recs = [
    Record(
      id="d/0",
      source="d",
      split="train",
      rgb=_png(0),
      captions=_captions()[:40],
      ir_captions=["hot roof"],
      ir_origin="rendered",
      ir=_png(1),
      instructions=[{"question": "How many cars?", "answer": "3"}],
    ),
    Record(id="d/1", source="d", split="test", rgb=_png(2), captions=["zebra quokka"]),
  ]
  ingest(recs, str(tmp_path / "data"), "d", IngestOptions(progress=False))
  texts = tokenizer.train_texts([str(tmp_path / "data")])
  assert "hot roof" in texts and "How many cars?" in texts and "zebra quokka" not in texts
  out = tmp_path / "cli.model"
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "data_prep.ingest.tokenizer",
      f"--data={tmp_path / 'data'}",
      f"--out={out}",
      "--vocab_size=300",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert tokenizer.load_tokenizer(str(out)).bos_id() == 2
