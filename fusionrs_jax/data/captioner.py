"""Captioner examples from the record shards: a per-example task mixture (scene captioning, IR-aware
captioning, instruction question -> answer) as prefix-LM token rows, and an ordered eval set with
all references. Images and tokenization reuse `input_pipeline` (Preprocess, Tokenizer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

from fusionrs_jax.core import records
from fusionrs_jax.data import input_pipeline as ip

TASKS = ("caption", "ir_caption", "instruction")
# Scene-caption prompt per captioner `inputs`; IR-aware captions always use IR_PROMPT. Every
# `inputs` trains and is scored on every task: the rgb ablation describes the IR view from
# the RGB image alone, which is the baseline the dual-image model has to beat.
CAPTION_PROMPTS = {"rgb_ir": "caption rgb ir", "rgb": "caption rgb", "ir": "caption ir"}
IR_PROMPT = "describe ir"
SEP_PIECE = "<sep>"


def sep_id(tokenizer: ip.Tokenizer) -> int:
  """Id of the one-piece prompt/answer separator: data_prep.ingest.tokenizer's <sep> user
  symbol, or in a Gemma tokenizer without it (public PaliGemma) the newline piece PaliGemma
  separates prefix and answer with."""
  for piece in (SEP_PIECE, "\n"):
    i = tokenizer.processor.piece_to_id(piece)
    if i != ip.UNK_ID:
      return i
  raise ValueError(
    f"{tokenizer.path}: no {SEP_PIECE!r} piece; retrain it with python -m data_prep.ingest.tokenizer"
  )


def encode_prompt(tokenizer: ip.Tokenizer, prompts: Sequence[str], length: int) -> np.ndarray:
  """N prompts -> int32 [N, length] rows [BOS prompt SEP] right-padded (prompt truncated)."""
  out = np.full((len(prompts), length), ip.PAD_ID, np.int32)
  sep = sep_id(tokenizer)
  for row, ids in enumerate(tokenizer.processor.encode(list(prompts))):
    ids = [ip.BOS_ID] + ids[: length - 2] + [sep]
    out[row, : len(ids)] = ids
  return out


def encode_example(
  tokenizer: ip.Tokenizer, prompt: str, answer: str, text_len: int, prompt_len: int
) -> dict[str, np.ndarray]:
  """One prefix-LM row: tokens [L] = [BOS prompt SEP answer EOS pad], mask_ar [L] (1 on answer
  + EOS), input_mask [L], loss_mask [L] (True where the token is a training target)."""
  prefix = encode_prompt(tokenizer, [prompt], prompt_len)[0]
  prefix = prefix[prefix != ip.PAD_ID]
  answer_ids = tokenizer.processor.encode(answer)[: text_len - len(prefix) - 1] + [ip.EOS_ID]
  ids = np.concatenate([prefix, np.asarray(answer_ids, np.int32)])
  tokens = np.full([text_len], ip.PAD_ID, np.int32)
  tokens[: len(ids)] = ids
  mask_ar = np.zeros([text_len], np.int32)
  mask_ar[len(prefix) : len(ids)] = 1
  return {
    "tokens": tokens,
    "mask_ar": mask_ar,
    "input_mask": tokens != ip.PAD_ID,
    "loss_mask": mask_ar.astype(bool),
  }


def candidates(rec: records.Record, inputs: str) -> dict[str, list[tuple[str, str]]]:
  """task -> [(prompt, answer), ...] available in one record."""
  return {
    "caption": [(CAPTION_PROMPTS[inputs], c) for c in rec.captions],
    "ir_caption": [(IR_PROMPT, c) for c in rec.ir_captions],
    "instruction": [(q["question"], q["answer"]) for q in rec.instructions],
  }


@dataclasses.dataclass
class CaptionerPreprocess:
  """(index, record bytes) -> example: images via input_pipeline.Preprocess, one task drawn by
  `task_weights` among the tasks the record has, one (prompt, answer) of it."""

  images: ip.Preprocess
  tokenizer: ip.Tokenizer
  inputs: str
  task_weights: dict[str, float]
  text_len: int
  prompt_len: int

  def __call__(self, item, rng: np.random.Generator) -> dict[str, np.ndarray]:
    index, data = item
    out = self.images(item, rng)
    rec = records.decode(data, where=f"{self.images.where} record #{index}")
    pairs = candidates(rec, self.inputs)
    tasks = [t for t in TASKS if pairs[t] and self.task_weights.get(t, 0) > 0]
    if not tasks:
      raise records.RecordError(
        f"record {rec.id!r} ({self.images.where}) has no text for "
        f"the tasks weighted in {self.task_weights}"
      )
    w = np.asarray([self.task_weights[t] for t in tasks], np.float64)
    task = tasks[int(rng.choice(len(tasks), p=w / w.sum()))]
    prompt, answer = pairs[task][int(rng.integers(len(pairs[task])))]
    out.update(encode_example(self.tokenizer, prompt, answer, self.text_len, self.prompt_len))
    out["task"] = np.int32(TASKS.index(task))
    return out


class _Map(grain.transforms.RandomMap):
  def __init__(self, fn):
    self.fn = fn

  def random_map(self, element, rng):
    return self.fn(element, rng)


def make_train_loader(
  data_dir: str,
  split: str,
  *,
  batch_size: int,
  image_size: int,
  seed: int,
  tokenizer_path: str,
  inputs: str,
  task_weights: dict,
  text_len: int,
  prompt_len: int,
  augment: Any = True,
  worker_count: int = 0,
) -> grain.DataLoader:
  """Shuffled repeating loader of this process's records (sharded like the SigLIP loader).

  Batches: rgb [B,S,S,3], ir [B,S,S,1] f32 in [-1,1] (+ has_rgb/has_ir [B] bool, which the
  trainer hands to the model as prefix masks), tokens/mask_ar [B,L]
  int32, input_mask/loss_mask [B,L] bool, task [B] int32 (index into TASKS), index [B].
  """
  shard_index, shard_count = ip.process_shard(None, None)
  source = ip.IndexedSource(records.list_shards(data_dir, split))
  tok = ip.Tokenizer(tokenizer_path)
  images = ip.Preprocess(
    image_size=image_size,
    tokenizer=tok,
    text_len=text_len,
    modalities=ip.MODALITIES,
    caption_fields=(),
    augment=ip.as_augment(augment),
    # A missing image becomes a zero placeholder with has_<m>=False; the captioner masks its
    # tokens out of the prefix, so the placeholder is never seen.
    missing_modality="zeros",
    where=f"{data_dir}:{split}",
  )
  fn = CaptionerPreprocess(images, tok, inputs, dict(task_weights), text_len, prompt_len)
  shard_options = grain.sharding.ShardOptions(shard_index, shard_count)
  sampler = grain.samplers.IndexSampler(
    num_records=len(source), shard_options=shard_options, shuffle=True, num_epochs=None, seed=seed
  )
  ip.ensure_absl_flags(worker_count)
  return grain.DataLoader(
    data_source=source,
    sampler=sampler,
    operations=[_Map(fn), grain.transforms.Batch(batch_size, drop_remainder=True)],
    worker_count=worker_count,
    shard_options=shard_options,
  )


@dataclasses.dataclass
class EvalItem:
  """One evaluation query: images of a record, a prompt, the references to score against."""

  record_id: str
  task: str  # "caption", "ir_caption" or the instruction's own task name
  prompt: str
  references: list[str]
  rgb: np.ndarray  # [S, S, 3] in [-1, 1]
  ir: np.ndarray  # [S, S, 1]
  # False: the record has no such image (its array is a zero placeholder the model masks out).
  has_rgb: bool = True
  has_ir: bool = True


def eval_items(
  data_dir: str,
  split: str,
  image_size: int,
  inputs: str,
  tasks: Sequence[str],
  max_records: int = 0,
) -> list[EvalItem]:
  """Every record's scene caption query (all captions as references), IR caption query and
  instruction items, in shard order; `max_records` > 0 keeps the first records only."""
  prep = ip.Preprocess(
    image_size=image_size,
    tokenizer=None,
    text_len=1,
    modalities=ip.MODALITIES,
    caption_fields=(),
    missing_modality="zeros",
    where=f"{data_dir}:{split}",
  )
  items = []
  paths = records.list_shards(data_dir, split)
  for i, rec in enumerate(records.read_records(paths)):
    if max_records and i >= max_records:
      break
    img = prep.decode_images(rec, None)
    images = {k: img[k] for k in ("rgb", "ir")}
    images.update(has_rgb=bool(img["has_rgb"]), has_ir=bool(img["has_ir"]))
    queries = []
    if "caption" in tasks and rec.captions:
      queries.append(("caption", CAPTION_PROMPTS[inputs], list(rec.captions)))
    if "ir_caption" in tasks and rec.ir_captions:
      queries.append(("ir_caption", IR_PROMPT, list(rec.ir_captions)))
    if "instruction" in tasks:
      queries += [
        (q.get("task", "instruction"), q["question"], [q["answer"]]) for q in rec.instructions
      ]
    items += [EvalItem(rec.id, task, prompt, refs, **images) for task, prompt, refs in queries]
  return items


def eval_batches(
  items: list[EvalItem], tokenizer: ip.Tokenizer, batch_size: int, prompt_len: int
) -> Iterator[tuple[dict[str, np.ndarray], list[EvalItem]]]:
  """Fixed-size numpy batches {rgb, ir, has_rgb [B], has_ir [B], prompt [B,P], prompt_mask
  [B,P]} plus their items; the last batch is padded by repeating its first item (the caller
  drops those)."""
  for start in range(0, len(items), batch_size):
    chunk = items[start : start + batch_size]
    padded = chunk + [chunk[0]] * (batch_size - len(chunk))
    prompt = encode_prompt(tokenizer, [it.prompt for it in padded], prompt_len)
    yield (
      {
        "rgb": np.stack([it.rgb for it in padded]),
        "ir": np.stack([it.ir for it in padded]),
        "has_rgb": np.array([it.has_rgb for it in padded]),
        "has_ir": np.array([it.has_ir for it in padded]),
        "prompt": prompt,
        "prompt_mask": prompt != ip.PAD_ID,
      },
      chunk,
    )
