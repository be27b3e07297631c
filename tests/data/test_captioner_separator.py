"""The prompt/answer separator of a Gemma tokenizer without our <sep> piece (a public
PaliGemma tokenizer.model) is its newline piece, as PaliGemma separates prefix and answer."""

import io

import numpy as np
import pytest
import sentencepiece as spm

from fusionrs_jax.data import captioner as captioner_data
from fusionrs_jax.data import input_pipeline as ip


def _train(path, symbols):
  texts = [f"a {c} field next to {n} roads" for c in ("green", "dry", "wet") for n in range(30)]
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(texts),
    model_writer=model,
    vocab_size=48,
    pad_id=ip.PAD_ID,
    eos_id=ip.EOS_ID,
    bos_id=ip.BOS_ID,
    unk_id=ip.UNK_ID,
    user_defined_symbols=symbols,
    minloglevel=2,
  )
  path.write_bytes(model.getvalue())
  return ip.Tokenizer(str(path))


def test_newline_piece_separates_when_there_is_no_sep_piece(tmp_path):
  tok = _train(tmp_path / "gemma_like.model", ["\n"])
  newline = tok.processor.piece_to_id("\n")
  assert newline != ip.UNK_ID
  assert captioner_data.sep_id(tok) == newline
  row = captioner_data.encode_prompt(tok, ["a field"], 8)[0]
  assert row[0] == ip.BOS_ID and row[np.flatnonzero(row)[-1]] == newline

  ours = _train(tmp_path / "ours.model", [captioner_data.SEP_PIECE, "\n"])
  assert captioner_data.sep_id(ours) == ours.processor.piece_to_id(captioner_data.SEP_PIECE)
  with pytest.raises(ValueError, match="no '<sep>' piece"):
    captioner_data.sep_id(_train(tmp_path / "none.model", []))
