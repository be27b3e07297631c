"""The one record schema of fusionrs_jax: a sample id with its RGB/IR images and texts.

Records are serialized as `tf.train.Example` protos (without TensorFlow), so the same
bytes live in ArrayRecord shards (primary, random access), TFRecord exports and tfds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from array_record.python import array_record_module
from tensorflow_datasets.proto import tf_example_pb2

from fusionrs_jax.core import fs

SCHEMA_VERSION = 1

# Where the IR image of a record came from. Never blur "rendered"/"translated" with "real".
IR_ORIGINS = ("", "real", "rendered", "translated")

# Shard file naming is tfds-compatible: {name}-{split}.array_record-{i:05d}-of-{n:05d}.
_SHARD_RE = re.compile(
  r"^(?P<name>.+)-(?P<split>[\w]+)\.(?P<fmt>array_record|tfrecord)-"
  r"(?P<index>\d{5})-of-(?P<count>\d{5})$"
)


class RecordError(ValueError):
  """A record is malformed; the message names the record and the problem."""


@dataclasses.dataclass
class Record:
  """One sample. Images stay encoded (PNG/JPEG bytes); b"" means absent."""

  id: str
  source: str
  split: str
  rgb: bytes = b""
  ir: bytes = b""
  # One of IR_ORIGINS: "real" (thermal camera), "rendered" (demo world), "translated".
  ir_origin: str = ""
  captions: list[str] = dataclasses.field(default_factory=list)
  ir_captions: list[str] = dataclasses.field(default_factory=list)
  # One JSON string per IR caption: which image measurements the caption states.
  ir_caption_provenance: list[str] = dataclasses.field(default_factory=list)
  # [{"question": str, "answer": str, "task": str}, ...]
  instructions: list[dict[str, str]] = dataclasses.field(default_factory=list)
  label: str = ""
  # Free-form JSON-serializable metadata (image size, boxes, scene layout, ...).
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)

  def validate(self) -> None:
    """Raises RecordError naming this record if a field breaks the schema."""
    where = f"record {self.id!r} (source {self.source!r})"
    if not self.id:
      raise RecordError(f"{where}: empty id")
    if not self.rgb and not self.ir:
      raise RecordError(f"{where}: has neither an RGB nor an IR image")
    if self.ir_origin not in IR_ORIGINS:
      raise RecordError(f"{where}: ir_origin {self.ir_origin!r} not in {IR_ORIGINS}")
    if self.ir and not self.ir_origin:
      raise RecordError(f"{where}: has an IR image but no ir_origin")
    for field in ("captions", "ir_captions", "ir_caption_provenance"):
      for text in getattr(self, field):
        if not isinstance(text, str):
          raise RecordError(f"{where}: {field} holds a non-string {text!r}")
    if self.ir_caption_provenance and (len(self.ir_caption_provenance) != len(self.ir_captions)):
      raise RecordError(
        f"{where}: {len(self.ir_captions)} ir_captions but "
        f"{len(self.ir_caption_provenance)} provenance entries"
      )
    for item in self.instructions:
      if not isinstance(item, dict) or not {"question", "answer"} <= set(item):
        raise RecordError(f"{where}: instruction {item!r} lacks question/answer")


def _bytes(feature, values: Iterable[bytes | str]) -> None:
  feature.bytes_list.value.extend(v.encode("utf-8") if isinstance(v, str) else v for v in values)


def encode(record: Record) -> bytes:
  """Record -> serialized tf.train.Example bytes (validates first)."""
  record.validate()
  example = tf_example_pb2.Example()
  f = example.features.feature
  for key in ("id", "source", "split", "rgb", "ir", "ir_origin", "label"):
    _bytes(f[key], [getattr(record, key)])
  _bytes(f["captions"], record.captions)
  _bytes(f["ir_captions"], record.ir_captions)
  _bytes(f["ir_caption_provenance"], record.ir_caption_provenance)
  # Instructions as parallel lists so tfds/TF readers need no JSON.
  _bytes(f["instruction/question"], [i["question"] for i in record.instructions])
  _bytes(f["instruction/answer"], [i["answer"] for i in record.instructions])
  _bytes(f["instruction/task"], [i.get("task", "") for i in record.instructions])
  _bytes(f["meta"], [json.dumps(record.meta, sort_keys=True)])
  f["schema_version"].int64_list.value.append(SCHEMA_VERSION)
  # deterministic: the same record gives the same bytes in every process (idempotent shards).
  return example.SerializeToString(deterministic=True)


def _strings(f, key: str) -> list[str]:
  return [v.decode("utf-8") for v in f[key].bytes_list.value] if key in f else []


def decode(data: bytes, where: str = "record") -> Record:
  """Serialized tf.train.Example bytes -> Record. `where` names the source in errors."""
  try:
    example = tf_example_pb2.Example.FromString(bytes(data))
  except Exception as e:  # protobuf raises DecodeError; keep the message specific.
    raise RecordError(f"{where}: not a serialized tf.train.Example ({e})") from e
  f = example.features.feature
  if "id" not in f:
    raise RecordError(f"{where}: no 'id' feature; not a fusionrs_jax record")
  version = f["schema_version"].int64_list.value[0] if "schema_version" in f else 0
  if version > SCHEMA_VERSION:
    raise RecordError(
      f"{where}: schema_version {version} is newer than this code "
      f"({SCHEMA_VERSION}); update fusionrs_jax"
    )
  one = lambda k: f[k].bytes_list.value[0] if k in f and f[k].bytes_list.value else b""
  questions = _strings(f, "instruction/question")
  answers = _strings(f, "instruction/answer")
  tasks = _strings(f, "instruction/task") or [""] * len(questions)
  return Record(
    id=one("id").decode(),
    source=one("source").decode(),
    split=one("split").decode(),
    rgb=one("rgb"),
    ir=one("ir"),
    ir_origin=one("ir_origin").decode(),
    captions=_strings(f, "captions"),
    ir_captions=_strings(f, "ir_captions"),
    ir_caption_provenance=_strings(f, "ir_caption_provenance"),
    instructions=[
      {"question": q, "answer": a, "task": t} for q, a, t in zip(questions, answers, tasks)
    ],
    label=one("label").decode(),
    meta=json.loads(one("meta").decode() or "{}"),
  )


# ----------------------------------------------------------------------------
# Shard files.
# ----------------------------------------------------------------------------


def shard_name(name: str, split: str, index: int, count: int, fmt: str = "array_record") -> str:
  return f"{name}-{split}.{fmt}-{index:05d}-of-{count:05d}"


def list_shards(data_dir: str, split: str, fmt: str = "array_record") -> list[str]:
  """Sorted shard paths of one split in `data_dir` (local or gs://; raises if there are none)."""
  paths = []
  for path in fs.glob(fs.join(fs.escape(data_dir), f"*-{split}.{fmt}-*")):
    m = _SHARD_RE.match(fs.basename(path))
    if m and m["split"] == split and m["fmt"] == fmt:
      paths.append(path)
  if not paths:
    raise FileNotFoundError(
      f"no {fmt} shards for split {split!r} in {data_dir!r}; run data_prep.ingest "
      f"(or data_prep.demo_world) to create them"
    )
  return paths


# A sibling temp name unique to this process and thread (stale ones match `*.tmp-*`).
temp_path = fs.temp_path


def write_array_record(path: str, payloads: Iterable[bytes]) -> int:
  """Atomically writes one ArrayRecord file (local temp file, then renamed or uploaded to
  `path`, local or gs://). Returns the count."""
  with fs.staged_file(path) as tmp:
    writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
    n = 0
    try:
      for payload in payloads:
        writer.write(payload)
        n += 1
    finally:
      writer.close()
  return n


def read_array_record(path: str) -> Iterator[bytes]:
  """Yields the serialized records of one ArrayRecord file in order (a gs:// file is read
  from a downloaded temp copy)."""
  with fs.local_copy(path) as local:
    reader = array_record_module.ArrayRecordReader(local)
    try:
      for start in range(0, reader.num_records(), 256):
        yield from reader.read(list(range(start, min(start + 256, reader.num_records()))))
    finally:
      reader.close()


def read_records(paths: Sequence[str]) -> Iterator[Record]:
  """Decoded records of ArrayRecord shards, in shard order."""
  for path in paths:
    for i, data in enumerate(read_array_record(path)):
      yield decode(data, where=f"{path}#{i}")


def write_split(
  records: Sequence[Record], out_dir: str, name: str, split: str, records_per_shard: int = 1000
) -> list[str]:
  """Writes one split as ArrayRecord shards (atomically, one file at a time).

  Returns the shard paths. Stale shards of the same split with another shard count
  are removed, so re-running with a different size leaves a consistent folder.
  """
  fs.makedirs(out_dir)
  count = max(1, -(-len(records) // records_per_shard))
  paths = []
  for i in range(count):
    path = fs.join(out_dir, shard_name(name, split, i, count))
    chunk = records[i * records_per_shard : (i + 1) * records_per_shard]
    write_array_record(path, (encode(r) for r in chunk))
    paths.append(path)
  for stale in fs.glob(fs.join(fs.escape(out_dir), f"{fs.escape(name)}-{split}.array_record-*")):
    if stale not in paths and _SHARD_RE.match(fs.basename(stale)):
      fs.remove(stale)
  return paths


def write_json_atomic(path: str, obj: Any) -> None:
  """JSON file replaced atomically: locally a temp file, fsynced, renamed over `path`; on gs://
  one object upload (readers see the old or the new file whole; see core/fs.py)."""
  fs.write_text(path, json.dumps(obj, indent=1, sort_keys=True))


INFO_FILE = "dataset_info.json"


def read_info(data_dir: str) -> dict[str, Any]:
  """The dataset_info.json of a shard folder (clear error when missing)."""
  path = fs.join(data_dir, INFO_FILE)
  if not fs.exists(path):
    raise FileNotFoundError(
      f"{path} not found: {data_dir!r} is not a prepared dataset "
      f"folder (run data_prep.ingest or data_prep.demo_world)"
    )
  return json.loads(fs.read_text(path))


def _sha256(path: str) -> str:

  h = hashlib.sha256()
  with fs.open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _count_shard(path: str, s: dict[str, Any]) -> None:
  """Adds one shard's counts and its {file, records, sha256} entry to split summary `s`."""
  n = 0
  with fs.local_copy(path) as local:  # one download of a gs:// shard for both passes
    for i, data in enumerate(read_array_record(local)):
      rec = decode(data, where=f"{path}#{i}")
      n += 1
      s["captions"] += len(rec.captions)
      s["ir_captions"] += len(rec.ir_captions)
      s["instructions"] += len(rec.instructions)
      s["with_rgb"] += bool(rec.rgb)
      s["with_ir"] += bool(rec.ir)
      if rec.ir_origin:
        s["ir_origins"][rec.ir_origin] = s["ir_origins"].get(rec.ir_origin, 0) + 1
    sha = _sha256(local)
  s["records"] += n
  s["shards"].append({"file": fs.basename(path), "records": n, "sha256": sha})


def write_info(data_dir: str, name: str, extra: dict[str, Any] | None = None) -> dict:
  """Scans the ArrayRecord shards in `data_dir` and writes dataset_info.json.

  Per split: record count, caption / IR-caption / instruction counts, IR origins and
  the shard list with sha256 checksums. `extra` (e.g. sources, reject counts) is merged in.
  """
  splits = {}
  for path in fs.glob(fs.join(fs.escape(data_dir), f"{fs.escape(name)}-*.array_record-*")):
    m = _SHARD_RE.match(fs.basename(path))
    if not m or m["name"] != name:
      continue
    s = splits.setdefault(
      m["split"],
      {
        "records": 0,
        "captions": 0,
        "ir_captions": 0,
        "instructions": 0,
        "with_rgb": 0,
        "with_ir": 0,
        "ir_origins": {},
        "shards": [],
      },
    )
    _count_shard(path, s)
  info = {
    "name": name,
    "schema_version": SCHEMA_VERSION,
    "format": "array_record",
    "record_encoding": "tf.train.Example",
    "splits": splits,
    **(extra or {}),
  }
  write_json_atomic(fs.join(data_dir, INFO_FILE), info)
  return info
