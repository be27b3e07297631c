"""Input-pipeline throughput: train-loader records/s at 64 and 224 px on this machine,
over synthetic 256x256 JPEG RGB/IR shards and a tiny SentencePiece model built in a temp dir.

  python -m benchmarks.input_pipeline [--quick] [--workers=0,2] [--out=results.json]
"""

from __future__ import annotations

import gc
import io
import json
import os
import platform
import tempfile
import time

import numpy as np
from absl import flags
from PIL import Image

from fusionrs_jax.cli import command
from fusionrs_jax.core import records
from fusionrs_jax.data import input_pipeline

WORDS = (
  "building",
  "road",
  "car",
  "tree",
  "river",
  "field",
  "roof",
  "warm",
  "cold",
  "parking",
  "lot",
  "bright",
  "dark",
  "near",
  "many",
  "few",
  "white",
  "green",
)


def _jpeg(img: Image.Image) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format="JPEG", quality=90)
  return buf.getvalue()


def build_shards(out_dir: str, num_records: int, size: int = 256) -> str:
  """Writes `num_records` RGB+IR JPEG pairs with captions, trains the SentencePiece model.

  Returns the model path. Images are smooth noise plus fine noise, so JPEG sizes are
  realistic (~20-40 KB at 256 px) rather than trivially compressible.
  """
  import sentencepiece as spm

  rng = np.random.default_rng(0)
  recs = []
  for i in range(num_records):
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), float)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    words = lambda k: " ".join(rng.choice(WORDS, k))
    recs.append(
      records.Record(
        id=f"bench{i:05d}",
        source="benchmark",
        split="train",
        rgb=_jpeg(img),
        ir=_jpeg(img.convert("L")),
        ir_origin="rendered",
        captions=[f"a {words(6)}" for _ in range(5)],
        ir_captions=[f"thermal {words(5)}" for _ in range(2)],
      )
    )
  records.write_split(recs, out_dir, "bench", "train", records_per_shard=64)
  text = os.path.join(out_dir, "captions.txt")
  with open(text, "w") as f:
    f.write("\n".join(c for r in recs for c in r.captions + r.ir_captions))
  prefix = os.path.join(out_dir, "spm")
  spm.SentencePieceTrainer.train(
    input=text,
    model_prefix=prefix,
    vocab_size=200,
    model_type="unigram",
    pad_id=0,
    eos_id=1,
    bos_id=2,
    unk_id=3,
    hard_vocab_limit=False,
    minloglevel=2,
  )
  return prefix + ".model"


def measure(
  data_dir: str, spm_path: str, *, image_size: int, worker_count: int, batch_size: int, batches: int
) -> dict:
  """records/s of the train loader after one warm-up batch (worker start-up excluded)."""
  loader = input_pipeline.make_train_loader(
    data_dir,
    "train",
    batch_size=batch_size,
    image_size=image_size,
    seed=0,
    tokenizer_path=spm_path,
    text_len=32,
    shard_index=0,
    shard_count=1,
    worker_count=worker_count,
  )
  it = iter(loader)
  next(it)
  start = time.perf_counter()
  for _ in range(batches):
    batch = next(it)
  seconds = time.perf_counter() - start
  assert batch["rgb"].shape == (batch_size, image_size, image_size, 3)
  del it, loader, batch
  gc.collect()  # stop worker processes before the next configuration starts its own
  return {
    "image_size": image_size,
    "worker_count": worker_count,
    "batch_size": batch_size,
    "batches": batches,
    "records_per_s": round(batches * batch_size / seconds, 1),
  }


def main(argv) -> None:
  del argv  # command.run refuses positional arguments
  f = flags.FLAGS
  try:
    worker_counts = [int(w) for w in f.workers or (["0"] if f.quick else ["0", "2"])]
  except ValueError:
    command.fail(f"--workers={','.join(f.workers)}: expected comma-separated integers")
  num_records, batch_size, batches = (64, 16, 3) if f.quick else (256, 32, 16)
  results = []
  with tempfile.TemporaryDirectory() as tmp:
    spm_path = build_shards(tmp, num_records)
    for workers in worker_counts:
      for size in (64, 224):
        try:
          results.append(
            measure(
              tmp,
              spm_path,
              image_size=size,
              worker_count=workers,
              batch_size=batch_size,
              batches=batches,
            )
          )
        except Exception as e:
          results.append(
            {"image_size": size, "worker_count": workers, "error": f"{type(e).__name__}: {e}"}
          )
  report = {
    "benchmark": "input_pipeline",
    "quick": f.quick,
    "records": num_records,
    "source_image": "256x256 JPEG RGB + IR",
    "cpu_count": os.cpu_count(),
    "python": platform.python_version(),
    "results": results,
  }
  print(json.dumps(report, indent=1))
  if f.out:
    records.write_json_atomic(f.out, report)


def define_flags() -> None:
  """Flags of this command (defined only when it runs, so the module imports anywhere)."""
  flags.DEFINE_bool("quick", False, "Seconds-long CI run (64 records, 3 batches of 16).")
  flags.DEFINE_string("out", "", "Also write the JSON result here.")
  flags.DEFINE_list("workers", None, "Comma-separated worker counts (default 0,2; --quick: 0).")


if __name__ == "__main__":
  define_flags()
  command.run(main)
