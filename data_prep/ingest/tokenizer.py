"""Trains the SentencePiece text tokenizer on train-split captions with Gemma's id layout.

Gemma's layout (pad=0, eos=1, bos=2, unk=3, byte fallback, split digits, no dummy
prefix, identity normalization) lets `transformers.GemmaTokenizer` load the same .model.

  python -m data_prep.tokenizer --data=/tmp/ucm --out=/tmp/ucm_spm.model --vocab_size=1000
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence

import sentencepiece as spm
from absl import flags, logging

from fusionrs_jax.core import command, fs, records
from fusionrs_jax.core.errors import UserError

PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3
# Gemma's own piece names, so transformers' defaults (<bos>/<eos>) name the same ids.
PAD_PIECE, EOS_PIECE, BOS_PIECE, UNK_PIECE = "<pad>", "<eos>", "<bos>", "<unk>"
# Separates prompt and answer in captioner inputs; one piece, never split.
SEP_PIECE = "<sep>"


def record_texts(record: records.Record) -> Iterator[str]:
  """Every text a model reads or writes for one record: scene + IR captions, instructions."""
  yield from record.captions
  yield from record.ir_captions
  for item in record.instructions:
    yield item["question"]
    yield item["answer"]


def train_texts(data_dirs: Sequence[str], split: str = "train") -> list[str]:
  """Texts of one split across shard folders, in shard order (so training is deterministic)."""
  texts = []
  for data_dir in data_dirs:
    for record in records.read_records(records.list_shards(data_dir, split)):
      texts.extend(t for t in record_texts(record) if t.strip())
  return texts


def train_tokenizer(
  texts: Iterable[str], out_path: str, vocab_size: int, model_type: str = "bpe"
) -> str:
  """Trains SentencePiece on `texts` and writes `out_path` atomically. Returns the path.

  Single-threaded with no input sampling or shuffling, so equal texts give equal bytes.
  `vocab_size` is an upper bound: tiny corpora yield fewer pieces (hard_vocab_limit off).
  """

  texts = [t for t in texts if t.strip()]
  if not texts:
    raise ValueError(f"no texts to train {out_path} on; are the train shards captioned?")
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(texts),
    model_writer=model,
    vocab_size=vocab_size,
    model_type=model_type,
    character_coverage=1.0,
    byte_fallback=True,
    split_digits=True,
    allow_whitespace_only_pieces=True,
    normalization_rule_name="identity",
    add_dummy_prefix=False,
    remove_extra_whitespaces=False,
    hard_vocab_limit=False,
    pad_id=PAD_ID,
    eos_id=EOS_ID,
    bos_id=BOS_ID,
    unk_id=UNK_ID,
    pad_piece=PAD_PIECE,
    eos_piece=EOS_PIECE,
    bos_piece=BOS_PIECE,
    unk_piece=UNK_PIECE,
    user_defined_symbols=[SEP_PIECE],
    num_threads=1,
    input_sentence_size=0,
    shuffle_input_sentence=False,
    minloglevel=2,
  )
  fs.makedirs(fs.dirname(fs.abspath(out_path)))
  fs.write_bytes(out_path, model.getvalue())  # atomic (local rename, or one GCS upload)
  return out_path


def load_tokenizer(path: str):
  """The trained model as a sentencepiece.SentencePieceProcessor (ids as in training)."""

  if not fs.exists(path):
    raise FileNotFoundError(
      f"tokenizer {path} not found; train it with "
      f"python -m data_prep.ingest.tokenizer --data=DIR --out={path}"
    )
  processor = spm.SentencePieceProcessor(model_proto=fs.read_bytes(path))
  if (processor.pad_id(), processor.eos_id(), processor.bos_id()) != (PAD_ID, EOS_ID, BOS_ID):
    raise ValueError(
      f"{path} does not use Gemma's ids (pad=0, eos=1, bos=2); retrain it "
      f"with data_prep.ingest.tokenizer"
    )
  return processor


def define_flags() -> None:
  """CLI flags, defined only when run as a script (importers never clash on names)."""
  flags.DEFINE_multi_string("data", None, "Shard folder(s) whose train split to read.")
  flags.DEFINE_string("out", None, "Output .model path.")
  flags.DEFINE_integer("vocab_size", 1000, "Upper bound on the vocabulary size.")
  flags.DEFINE_enum(
    "model_type", "bpe", ["bpe", "unigram"], "SentencePiece algorithm (Gemma uses bpe)."
  )


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  if not f.data or not f.out:
    raise UserError("--data and --out are required (see --help)")
  for folder in f.data:
    if not fs.isfile(fs.join(folder, records.INFO_FILE)):
      raise UserError(f"--data={folder}: no {records.INFO_FILE} there; not a prepared dataset")
  if f.vocab_size < 16:
    raise UserError(f"--vocab_size={f.vocab_size} must be >= 16")
  texts = train_texts(f.data)
  logging.info("training on %d texts from %s", len(texts), f.data)
  path = train_tokenizer(texts, f.out, f.vocab_size, f.model_type)
  size = load_tokenizer(path).get_piece_size()
  print(f"wrote {path}: {size} pieces from {len(texts)} texts")


if __name__ == "__main__":
  define_flags()
  command.run(main)
