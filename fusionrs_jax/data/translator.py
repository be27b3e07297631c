"""The translator's input pipeline: random crops of RGB-domain and IR-domain records (unpaired,
or paired for pix2pix L1), as a checkpointable grain iterator of fixed-size batches."""

from __future__ import annotations

import dataclasses

import grain
import jax
import numpy as np

from fusionrs_jax.core import fs, records
from fusionrs_jax.core.errors import UserError
from fusionrs_jax.data import images


def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


@dataclasses.dataclass
class CropExamples:
  """Stream position -> {"rgb": [S,S,3], "ir": [S,S,1]} float32 in [-1, 1].

  Each domain walks its own reshuffled-every-epoch order (unpaired); `paired` reads RGB
  and IR from the same record and crops them alike. Positions interleave processes
  (position * count + index), so each process sees a disjoint share of every epoch.
  """

  rgb_paths: list[str]
  ir_paths: list[str]
  paired: bool
  image_size: int
  load_size: int
  hflip: bool
  seed: int
  shard_index: int
  shard_count: int

  def __post_init__(self):
    for path in (*self.rgb_paths, *self.ir_paths):
      fs.require_local(path, "ArrayRecord shard")
    self._rgb = grain.sources.ArrayRecordDataSource(self.rgb_paths)
    self._ir = self._rgb if self.paired else grain.sources.ArrayRecordDataSource(self.ir_paths)
    self._perms: dict[tuple[int, int], np.ndarray] = {}

  def _record(self, domain: int, position: int) -> records.Record:
    source = (self._rgb, self._ir)[domain]
    n = len(source)
    epoch = position // n
    key = (domain, epoch)
    if key not in self._perms:
      self._perms = {k: v for k, v in self._perms.items() if k[0] != domain}
      self._perms[key] = _epoch_permutation(n, self.seed + 7919 * domain, epoch)
    index = int(self._perms[key][position % n])
    where = f"{(self.rgb_paths, self.ir_paths)[domain][0]}...#{index}"
    return records.decode(source[index], where=where)

  def _image(self, rec: records.Record, field: str) -> np.ndarray:
    data = getattr(rec, field)
    if not data:
      raise records.RecordError(
        f"record {rec.id!r} (source {rec.source!r}) has no {field} "
        f"image; the {field.upper()} domain needs one in every record"
      )
    return images.decode_image(data, 3 if field == "rgb" else 1, rec.id)

  def _crop(self, imgs: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Resize (shorter side -> load_size) and one random crop + flip applied to all."""
    out = []
    h, w = imgs[0].shape[:2]
    if self.load_size:
      scale = self.load_size / min(h, w)
      h, w = max(self.image_size, round(h * scale)), max(self.image_size, round(w * scale))
    if min(h, w) < self.image_size:
      raise records.RecordError(
        f"image of {imgs[0].shape[:2]} px is smaller than the "
        f"{self.image_size} px crop; set data.load_size"
      )
    y, x = rng.integers(0, h - self.image_size + 1), rng.integers(0, w - self.image_size + 1)
    flip = self.hflip and rng.random() < 0.5
    for img in imgs:
      if img.shape[:2] != (h, w):
        img = images.resize(img, h, w)
      img = img[y : y + self.image_size, x : x + self.image_size]
      out.append(np.ascontiguousarray(img[:, ::-1] if flip else img))
    return out

  def __call__(self, position: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    g = position * self.shard_count + self.shard_index
    rgb_rec = self._record(0, g)
    if self.paired:
      rgb, ir = self._crop([self._image(rgb_rec, "rgb"), self._image(rgb_rec, "ir")], rng)
    else:
      (rgb,) = self._crop([self._image(rgb_rec, "rgb")], rng)
      (ir,) = self._crop([self._image(self._record(1, g), "ir")], rng)
    return {"rgb": rgb, "ir": ir}


def make_loader(
  data,
  *,
  local_batch: int,
  num_steps: int,
  seed: int,
  shard_index: int | None = None,
  shard_count: int | None = None,
):
  """Checkpointable iterator of num_steps batches {rgb [B,S,S,3], ir [B,S,S,1]} (numpy).

  `data` is a translator config's data block (rgb_dir/split, ir_dir/split, paired,
  image_size, load_size, hflip, read_threads); shard_index/count default to this
  process and the process count.
  """
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  try:
    rgb_paths = records.list_shards(data.rgb_dir, data.rgb_split)
    ir_paths = [] if data.paired else records.list_shards(data.ir_dir, data.ir_split)
  except FileNotFoundError as e:
    raise UserError(str(e)) from e
  examples = CropExamples(
    rgb_paths,
    ir_paths,
    data.paired,
    data.image_size,
    data.load_size,
    data.hflip,
    seed,
    shard_index,
    shard_count,
  )
  ds = grain.MapDataset.range(num_steps * local_batch).random_map(examples, seed=seed)
  ds = ds.batch(local_batch, drop_remainder=True)
  return iter(
    ds.to_iter_dataset(
      grain.ReadOptions(
        num_threads=data.read_threads, prefetch_buffer_size=max(2, data.read_threads)
      )
    )
  )
