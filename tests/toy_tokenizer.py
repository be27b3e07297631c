"""A small unigram SentencePiece model with the project's id layout, for tests' toy datasets."""

import sentencepiece as spm


def train_toy_spm(texts, prefix: str, vocab_size: int, symbols=()) -> str:
  """Trains on `texts` (pad 0, eos 1, bos 2, unk 3; `symbols` as extra pieces) -> model path."""
  with open(prefix + ".txt", "w") as f:
    f.write("\n".join(texts))
  spm.SentencePieceTrainer.train(
    input=prefix + ".txt",
    model_prefix=prefix,
    vocab_size=vocab_size,
    model_type="unigram",
    pad_id=0,
    eos_id=1,
    bos_id=2,
    unk_id=3,
    user_defined_symbols=list(symbols),
    hard_vocab_limit=False,
    minloglevel=2,
  )
  return prefix + ".model"
