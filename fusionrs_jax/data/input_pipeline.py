"""grain input pipelines over fusionrs_jax ArrayRecord shards: per-process sharding,
seeded shuffling, paired RGB/IR augmentation, caption tokenization, resumable iterators.

Train: `make_train_loader(...)` -> grain.DataLoader; `iter(loader)` is the checkpointable
iterator (get_state()/set_state(), or Orbax via grain.checkpoint.CheckpointSave/Restore).
Eval: `make_eval_batches(...)` -> one ordered, padded pass with a `mask` per example.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from typing import Any

import grain
import jax
import numpy as np
import sentencepiece as spm
from absl import flags

from fusionrs_jax.core import fs, records
from fusionrs_jax.data import images

# Gemma convention; the tokenizer trainer (data_prep.tokenizer) must use the same ids.
PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3
MODALITIES = ("rgb", "ir")
# Record text field -> batch key of its tokens.
CAPTION_KEYS = {"captions": "tokens", "ir_captions": "ir_tokens"}
MISSING_MODES = ("zeros", "error")


# ----------------------------------------------------------------------------
# Tokenizer.
# ----------------------------------------------------------------------------


class Tokenizer:
  """SentencePiece model with fixed-length int32 encoding (pad=0, eos=1, bos=2, unk=3).

  Picklable (reloads from `path`, local or gs://, in grain worker processes).
  """

  def __init__(self, path: str):
    if not fs.exists(path):
      raise FileNotFoundError(
        f"SentencePiece model {path!r} not found; train one with "
        f"python -m data_prep.ingest.tokenizer"
      )
    self.path = path
    self._sp = None
    sp = self.processor
    ids = (sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id())
    if ids != (PAD_ID, EOS_ID, BOS_ID, UNK_ID):
      raise ValueError(
        f"{path}: (pad, eos, bos, unk) ids are {ids}; fusionrs_jax needs "
        f"{(PAD_ID, EOS_ID, BOS_ID, UNK_ID)} (Gemma convention)"
      )

  @property
  def processor(self):
    if self._sp is None:
      self._sp = spm.SentencePieceProcessor(model_proto=fs.read_bytes(self.path))
    return self._sp

  @property
  def vocab_size(self) -> int:
    return self.processor.get_piece_size()

  def __getstate__(self):
    return {"path": self.path, "_sp": None}

  def encode(
    self, texts: Sequence[str], length: int, *, add_bos: bool = False, add_eos: bool = True
  ) -> np.ndarray:
    """list of N strings -> int32 [N, length]: [bos] ids [eos], truncated, 0-padded.

    Truncation keeps the eos as the last token so every row still ends a sentence.
    """
    out = np.full((len(texts), length), PAD_ID, np.int32)
    for row, ids in enumerate(self.processor.encode(list(texts))):
      ids = ([BOS_ID] if add_bos else []) + ids
      ids = ids[: length - 1] + [EOS_ID] if add_eos else ids[:length]
      out[row, : len(ids)] = ids
    return out

  def decode(self, tokens: np.ndarray) -> list[str]:
    """int [N, L] (or [L]) -> N strings, stopping at the first eos, skipping pad/bos."""
    tokens = np.atleast_2d(np.asarray(tokens))
    texts = []
    for row in tokens.tolist():
      if EOS_ID in row:
        row = row[: row.index(EOS_ID)]
      texts.append(self.processor.decode([t for t in row if t not in (PAD_ID, BOS_ID)]))
    return texts


# ----------------------------------------------------------------------------
# Per-example preprocessing.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Augment:
  """Geometric augmentation drawn once per pair and applied to RGB and IR alike."""

  # Random resized crop: fraction of the image area and aspect-ratio range (w/h).
  scale: tuple[float, float] = (0.5, 1.0)
  ratio: tuple[float, float] = (3 / 4, 4 / 3)
  hflip: bool = True
  # Overhead imagery has no "up": vertical flips and 90° rotations keep it natural.
  vflip: bool = False
  rot90: bool = False


def _crop_box(
  rng: np.random.Generator, width: int, height: int, aug: Augment
) -> tuple[float, float, float, float]:
  """Inception-style random resized crop -> (x0, y0, x1, y1) as fractions of the image."""
  area = width * height
  log_ratio = np.log(aug.ratio)
  for _ in range(10):
    target = area * rng.uniform(*aug.scale)
    ar = math.exp(rng.uniform(*log_ratio))
    w, h = round(math.sqrt(target * ar)), round(math.sqrt(target / ar))
    if 0 < w <= width and 0 < h <= height:
      x0, y0 = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
      return (x0 / width, y0 / height, (x0 + w) / width, (y0 + h) / height)
  return (0.0, 0.0, 1.0, 1.0)


@dataclasses.dataclass
class Preprocess:
  """(global index, serialized record) -> one example dict of numpy arrays (see module doc).

  With an rng: random crop/flips and a random caption; without: full image, first caption.
  """

  image_size: int
  tokenizer: Tokenizer
  text_len: int
  modalities: tuple[str, ...] = MODALITIES
  caption_fields: tuple[str, ...] = tuple(CAPTION_KEYS)
  augment: Augment | None = None
  missing_modality: str = "zeros"
  with_label: bool = False
  where: str = "shards"

  def __call__(
    self, item: tuple[int, bytes], rng: np.random.Generator | None
  ) -> dict[str, np.ndarray]:
    index, data = item
    rec = records.decode(data, where=f"{self.where} record #{index}")
    out = {"index": np.int32(index)}
    # Captions are drawn before the crop so the choice does not depend on image sizes.
    out.update(self._texts(rec, rng))
    out.update(self.decode_images(rec, rng))
    if self.with_label:
      out["label"] = np.asarray(rec.label)
    return out

  def _texts(self, rec: records.Record, rng) -> dict[str, np.ndarray]:
    pick = lambda xs: xs[int(rng.integers(len(xs)))] if rng is not None else xs[0]
    scene = pick(rec.captions) if rec.captions else None
    out = {}
    if "captions" in self.caption_fields:
      out["tokens"], out["has_caption"] = self._encode(scene)
    if "ir_captions" in self.caption_fields:
      # IR-aware caption; without one the scene caption stands in (has_ir_caption=False).
      ir_text = pick(rec.ir_captions) if rec.ir_captions else scene
      out["ir_tokens"], _ = self._encode(ir_text)
      out["has_ir_caption"] = np.bool_(bool(rec.ir_captions))
    return out

  def _encode(self, text: str | None) -> tuple[np.ndarray, np.bool_]:
    if text is None:
      return np.zeros([self.text_len], np.int32), np.bool_(False)
    return self.tokenizer.encode([text], self.text_len)[0], np.bool_(True)

  def decode_images(self, rec: records.Record, rng) -> dict[str, np.ndarray]:
    size, out = self.image_size, {}
    present = {m: getattr(rec, m) for m in self.modalities if getattr(rec, m)}
    missing = [m for m in self.modalities if m not in present]
    if missing and self.missing_modality == "error":
      raise records.RecordError(
        f"record {rec.id!r} (source {rec.source!r}, {self.where}) has no "
        f"{'/'.join(missing)} image; use missing_modality='zeros' to train on it "
        f"with a has_{missing[0]}=False mask, or drop {missing} from modalities"
      )
    where = f"record {rec.id!r} ({self.where})"
    opened = {m: images.open_image(b, f"{where} {m}") for m, b in present.items()}
    box, hflip, vflip, k = images.FULL_BOX, False, False, 0
    if rng is not None and self.augment is not None and opened:
      aug = self.augment
      # The crop is drawn in the pixel space of the first present image, then applied
      # as fractions to every modality so pairs of different resolution stay aligned.
      box = _crop_box(rng, *next(iter(opened.values())).size, aug)
      hflip = aug.hflip and rng.random() < 0.5
      vflip = aug.vflip and rng.random() < 0.5
      k = int(rng.integers(4)) if aug.rot90 else 0
    for m in self.modalities:
      channels = 3 if m == "rgb" else 1
      if m in opened:
        x = images.crop_resize(opened[m], channels, size, box, f"{where} {m}")
        x = x[:, ::-1] if hflip else x
        x = x[::-1] if vflip else x
        x = np.rot90(x, k) if k else x
        out[m] = np.ascontiguousarray(x * (2.0 / 255.0) - 1.0, np.float32)  # [S, S, C]
      else:
        out[m] = np.zeros((size, size, channels), np.float32)
      out[f"has_{m}"] = np.bool_(m in opened)
    return out


class _TrainMap(grain.transforms.RandomMap):
  """grain RandomMap: the per-record rng comes from (seed, position in the stream)."""

  def __init__(self, preprocess: Preprocess):
    self.preprocess = preprocess

  def random_map(self, element, rng: np.random.Generator):
    return self.preprocess(element, rng)


class IndexedSource(grain.sources.RandomAccessDataSource):
  """ArrayRecord shards whose items are (global record index, serialized record)."""

  def __init__(self, paths: Sequence[str]):
    self.paths = [fs.require_local(p, "ArrayRecord shard") for p in paths]
    self._source = grain.sources.ArrayRecordDataSource(self.paths)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index) -> tuple[int, bytes]:
    return int(index), self._source[index]

  def __repr__(self) -> str:
    # grain compares this repr when restoring a state: same shards or refuse.
    return f"IndexedSource(paths={self.paths!r})"


class GlobalBatchSampler:
  """grain sampler: one shuffled order of the whole split, cut into global batches, of
  which each process reads its own contiguous rows.

  grain's DataLoader asks process p (of n) for sampler[m * n + p] as its m-th record; here
  that is global stream position g = k * n * B + p * B + j (local batch k, row j). Record
  and per-example rng depend on g only, so global batch k (rows in process order, as
  jax.make_array_from_process_local_data stitches them) is the same for any process
  count: a run is a function of (config, seed, data), not of the number of hosts.
  """

  def __init__(
    self,
    num_records: int,
    batch_size: int,
    shard_count: int,
    seed: int,
    num_epochs: int | None = None,
  ):
    self._num_records, self._batch, self._count = num_records, batch_size, shard_count
    self._seed, self._num_epochs = seed, num_epochs
    self._keys = grain.MapDataset.range(num_records).shuffle(seed=seed)
    global_batch = batch_size * shard_count
    # Finite runs stop at the last full global batch, so every process yields as many
    # batches as the others (SPMD steps stay in step).
    self._len = (
      None if num_epochs is None else num_epochs * num_records // global_batch * global_batch
    )

  def __len__(self) -> int:
    return sys.maxsize if self._len is None else self._len

  def __repr__(self) -> str:
    return (
      f"GlobalBatchSampler(num_records={self._num_records}, batch_size={self._batch}, "
      f"shard_count={self._count}, seed={self._seed}, num_epochs={self._num_epochs})"
    )

  def __getitem__(self, index: int) -> grain.RecordMetadata:
    if index < 0 or (self._len is not None and index >= self._len):
      raise IndexError(f"sampler index {index} out of range [0, {len(self)})")
    process, local = index % self._count, index // self._count
    k, j = divmod(local, self._batch)
    g = (k * self._count + process) * self._batch + j
    return grain.RecordMetadata(
      index=index,
      record_key=int(self._keys[g]),
      rng=np.random.Generator(np.random.Philox(key=self._seed + g)),
    )


# ----------------------------------------------------------------------------
# Loaders.
# ----------------------------------------------------------------------------


def process_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
  """(this process's index, number of processes) unless given: which slice of the data it reads."""
  if shard_index is None or shard_count is None:
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, shard_count={shard_count})")
  return shard_index, shard_count


def ensure_absl_flags(worker_count: int) -> None:
  """grain worker processes read absl flags; parse defaults when the caller did not."""
  if worker_count > 0 and not flags.FLAGS.is_parsed():
    flags.FLAGS(sys.argv[:1])


def as_augment(augment: Any) -> Augment | None:
  """True/False, an Augment, or a mapping of Augment fields (e.g. config.data.augment)."""
  if isinstance(augment, bool):
    return Augment() if augment else None
  if isinstance(augment, Augment):
    return augment
  fields = augment.to_dict() if hasattr(augment, "to_dict") else dict(augment)
  return Augment(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def _check(modalities, caption_fields, missing_modality, batch_size, image_size, text_len) -> None:
  if not modalities or set(modalities) - set(MODALITIES):
    raise ValueError(f"modalities {modalities!r} must be a non-empty subset of {MODALITIES}")
  if set(caption_fields) - set(CAPTION_KEYS):
    raise ValueError(f"caption_fields {caption_fields!r} must be a subset of {tuple(CAPTION_KEYS)}")
  if missing_modality not in MISSING_MODES:
    raise ValueError(f"missing_modality {missing_modality!r} not in {MISSING_MODES}")
  if min(batch_size, image_size, text_len) <= 0:
    raise ValueError(
      f"batch_size={batch_size}, image_size={image_size}, text_len={text_len} must all be positive"
    )


def make_train_loader(
  data_dir: str | Sequence[str],
  split: str,
  *,
  batch_size: int,
  image_size: int,
  seed: int,
  tokenizer_path: str,
  text_len: int,
  modalities: Sequence[str] = MODALITIES,
  caption_fields: Sequence[str] = tuple(CAPTION_KEYS),
  augment: bool | Augment = True,
  missing_modality: str = "zeros",
  with_label: bool = False,
  shard_index: int | None = None,
  shard_count: int | None = None,
  worker_count: int = 0,
  worker_buffer_size: int = 2,
  read_threads: int = 4,
  num_epochs: int | None = None,
) -> grain.DataLoader:
  """Shuffled, augmented, repeating (num_epochs=None) loader of this process's records.

  `data_dir` may be several prepared folders: their `split` shards are read as one dataset.

  batch_size is per process. All processes share one order of the split, reshuffled every
  epoch with `seed`; process shard_index (defaults: jax.process_index/count) reads its
  contiguous rows of every global batch (GlobalBatchSampler). The per-example rng (crop,
  flips, caption choice) is Philox(seed + global stream position), so the global batches
  are a function of (seed, shards, global batch size) whatever the process count. The
  last partial global batch of a finite run is dropped.

  Batches (numpy): rgb [B,S,S,3] f32 in [-1,1], has_rgb [B] bool, ir [B,S,S,1] f32,
  has_ir [B] bool (per requested modality); tokens [B,L] int32, has_caption [B] bool;
  ir_tokens [B,L] int32, has_ir_caption [B] bool (per caption field); index [B] int32
  (global record index in the sorted shards); label [B] str if with_label.
  `augment`: True (Augment() defaults), False, an Augment or a mapping of its fields.
  """
  _check(modalities, caption_fields, missing_modality, batch_size, image_size, text_len)
  shard_index, shard_count = process_shard(shard_index, shard_count)
  dirs = [data_dir] if isinstance(data_dir, str) else list(data_dir)
  source = IndexedSource([p for d in dirs for p in records.list_shards(d, split)])
  data_dir = "+".join(dirs)  # how errors and logs name the data
  if len(source) < shard_count:
    raise ValueError(
      f"{data_dir!r} split {split!r} has {len(source)} records, fewer than "
      f"the {shard_count} processes reading it"
    )
  augment = as_augment(augment)
  preprocess = Preprocess(
    image_size=image_size,
    tokenizer=Tokenizer(tokenizer_path),
    text_len=text_len,
    modalities=tuple(modalities),
    caption_fields=tuple(caption_fields),
    augment=augment,
    missing_modality=missing_modality,
    with_label=with_label,
    where=f"{data_dir}:{split}",
  )
  shard_options = grain.sharding.ShardOptions(shard_index, shard_count)
  sampler = GlobalBatchSampler(len(source), batch_size, shard_count, seed, num_epochs)
  ensure_absl_flags(worker_count)
  return grain.DataLoader(
    data_source=source,
    sampler=sampler,
    operations=[_TrainMap(preprocess), grain.transforms.Batch(batch_size, drop_remainder=True)],
    worker_count=worker_count,
    worker_buffer_size=worker_buffer_size,
    shard_options=shard_options,
    read_options=grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=4 * batch_size),
  )


def eval_indices(
  num_records: int, batch_size: int, shard_index: int, shard_count: int
) -> np.ndarray:
  """This process's record indices for one eval pass, -1 = padding. int64 [P].

  Contiguous slices (the first num_records % shard_count processes get one more),
  padded so every process yields the same number of batches (SPMD steps stay in step).
  """
  start, end = (num_records * i // shard_count for i in (shard_index, shard_index + 1))
  per_process = -(-num_records // shard_count)
  padded = max(1, -(-per_process // batch_size)) * batch_size
  out = np.full([padded], -1, np.int64)
  out[: end - start] = np.arange(start, end)
  return out


@dataclasses.dataclass
class _EvalExample:
  """Eval-pass position -> example with mask; padding re-reads a real record."""

  source: IndexedSource
  indices: np.ndarray
  preprocess: Preprocess

  def __call__(self, position: int) -> dict[str, np.ndarray]:
    index = int(self.indices[position])
    real = index >= 0
    example = self.preprocess(self.source[index if real else 0], None)
    example["mask"] = np.bool_(real)
    if not real:
      example["index"] = np.int32(-1)
    return example


def make_eval_batches(
  data_dir: str,
  split: str,
  *,
  batch_size: int,
  image_size: int,
  tokenizer_path: str,
  text_len: int,
  modalities: Sequence[str] = MODALITIES,
  caption_fields: Sequence[str] = tuple(CAPTION_KEYS),
  missing_modality: str = "zeros",
  with_label: bool = False,
  shard_index: int | None = None,
  shard_count: int | None = None,
  worker_count: int = 0,
  read_threads: int = 4,
) -> grain.IterDataset:
  """One ordered pass over this process's slice of a split (re-iterable; no shuffling).

  Same keys as make_train_loader (full image resized, first caption) plus mask [B] bool:
  False rows are padding (index -1) so that across all processes every record appears
  exactly once with mask True, and every process yields the same number of batches.
  """
  _check(modalities, caption_fields, missing_modality, batch_size, image_size, text_len)
  shard_index, shard_count = process_shard(shard_index, shard_count)
  source = IndexedSource(records.list_shards(data_dir, split))
  preprocess = Preprocess(
    image_size=image_size,
    tokenizer=Tokenizer(tokenizer_path),
    text_len=text_len,
    modalities=tuple(modalities),
    caption_fields=tuple(caption_fields),
    missing_modality=missing_modality,
    with_label=with_label,
    where=f"{data_dir}:{split}",
  )
  indices = eval_indices(len(source), batch_size, shard_index, shard_count)
  ds = grain.MapDataset.range(len(indices)).map(_EvalExample(source, indices, preprocess))
  ds = ds.batch(batch_size, drop_remainder=False).to_iter_dataset(
    grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=max(2, read_threads))
  )
  if worker_count > 0:
    ensure_absl_flags(worker_count)
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return ds


def num_eval_batches(
  data_dir: str, split: str, batch_size: int, shard_count: int | None = None
) -> int:
  """Batches per process in one make_eval_batches pass."""
  if shard_count is None:
    shard_count = jax.process_count()
  n = len(IndexedSource(records.list_shards(data_dir, split)))
  return len(eval_indices(n, batch_size, 0, shard_count)) // batch_size


def loader_kwargs(data: Any) -> dict[str, Any]:
  """Keyword arguments of make_train_loader/make_eval_batches from a `config.data` dict."""
  keys = (
    "data_dir",
    "split",
    "image_size",
    "tokenizer_path",
    "text_len",
    "modalities",
    "caption_fields",
    "missing_modality",
    "worker_count",
  )
  return {
    k: (tuple(data[k]) if k in ("modalities", "caption_fields") else data[k])
    for k in keys
    if k in data
  }
