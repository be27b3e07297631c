"""The same shards for TensorFlow users: TFRecord copies and tfds metadata (no TF needed).

tfds keeps its own `dataset_info.json`, which would clash with ours, so its metadata lives
in `<out>/tfds/<name>/1.0.0/` beside relative symlinks to the ArrayRecord shards:
`tfds.data_source(name, data_dir=<out>/tfds)` then reads the very same files.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
from tfrecord.writer import TFRecordWriter

from fusionrs_jax.core import records

TFDS_SUBDIR = "tfds"
TFDS_VERSION = "1.0.0"


def write_tfrecords(array_record_paths: Sequence[str]) -> list[str]:
  """Copies each ArrayRecord shard to `...tfrecord-i-of-n` beside it; returns the paths.

  The Example bytes are copied as they are (not rebuilt from a dict by the tfrecord
  writer), so both formats hold identical records and re-runs give identical files.
  """

  out = []
  for path in array_record_paths:
    target = path.replace(".array_record-", ".tfrecord-")
    tmp = records.temp_path(target)
    writer = TFRecordWriter(tmp)
    try:
      for payload in records.read_array_record(path):
        _write_serialized(writer, payload)
    finally:
      writer.close()
    os.replace(tmp, target)
    out.append(target)
  return out


def _write_serialized(writer, payload: bytes) -> None:
  """TFRecord framing (length, masked crc32c, data, masked crc32c) of `payload`."""
  length = struct.pack("<Q", len(payload))
  writer.file.write(length)
  writer.file.write(writer.masked_crc(length))
  writer.file.write(payload)
  writer.file.write(writer.masked_crc(payload))


def tfds_features():
  """tfds view of records.encode: images stay encoded bytes (b"" when absent)."""
  import tensorflow_datasets as tfds

  text = tfds.features.Text()
  texts = lambda: tfds.features.Sequence(tfds.features.Text())
  return tfds.features.FeaturesDict(
    {
      "id": text,
      "source": text,
      "split": text,
      "ir_origin": text,
      "label": text,
      # Encoded JPEG/PNG; a tfds Image would fail on the b"" of an absent modality.
      "rgb": tfds.features.Tensor(shape=(), dtype=np.object_),
      "ir": tfds.features.Tensor(shape=(), dtype=np.object_),
      "captions": texts(),
      "ir_captions": texts(),
      "ir_caption_provenance": texts(),
      # Nested dicts flatten to the "instruction/question" keys records.encode writes.
      "instruction": {"question": texts(), "answer": texts(), "task": texts()},
      "meta": text,  # JSON
      "schema_version": tfds.features.Scalar(dtype=np.int64),
    }
  )


def tfds_dir(out_dir: str, name: str) -> str:
  return os.path.join(out_dir, TFDS_SUBDIR, name, TFDS_VERSION)


def write_tfds_metadata(out_dir: str, name: str, info: dict[str, Any]) -> str:
  """tfds metadata + shard symlinks under <out>/tfds/<name>/1.0.0 from our dataset_info."""
  import tensorflow_datasets as tfds

  target = tfds_dir(out_dir, name)
  tmp = records.temp_path(target)
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  split_infos = []
  for split, split_info in sorted(info["splits"].items()):
    for shard in split_info["shards"]:
      # Relative links keep the folder movable as a whole.
      os.symlink(os.path.join("..", "..", "..", shard["file"]), os.path.join(tmp, shard["file"]))
    split_infos.append(
      tfds.core.SplitInfo(
        name=split,
        shard_lengths=[s["records"] for s in split_info["shards"]],
        num_bytes=0,
        filename_template=None,
      )
    )
  tfds.folder_dataset.write_metadata(
    data_dir=tmp,
    features=tfds_features(),
    split_infos=split_infos,
    version=TFDS_VERSION,
    check_data=False,
    description=f"fusionrs_jax records of {name} (see ../../../dataset_info.json)",
  )
  shutil.rmtree(target, ignore_errors=True)
  os.replace(tmp, target)
  return target
