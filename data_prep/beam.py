r"""ingest -> translate -> IR captions as one Apache Beam pipeline: the same sources, checks,
de-duplication and shard layout as data_prep.ingest + translate + ir_captions, for runs
too large for one machine (DirectRunner here; Dataflow, Flink or Spark at scale).

  python -m data_prep.beam --source=karpathy --json=DIR/dataset_ucm.json \
      --images=DIR/images --out=/tmp/ucm_beam --name=ucm \
      [--translator=workdirs/translator] [--noir_captions] \
      --direct_num_workers=2 --direct_running_mode=multi_processing

Flags this module does not know go to Beam's PipelineOptions. Other runners (images,
--out and the translator workdir must be paths every worker can read/write, e.g. a
gcsfuse/Filestore/NFS mount; workers need this package: --setup_file=./setup.py or a
custom --sdk_container_image with `pip install .[beam]`):
  Dataflow  --runner=DataflowRunner --project=P --region=us-central1
            --temp_location=gs://B/tmp --max_num_workers=100 --machine_type=n2-standard-8
            (GPU translation: --dataflow_service_options="worker_accelerator=type:
            nvidia-l4;count:1;install-nvidia-driver" + a container with jax[cuda12])
  Flink     --runner=FlinkRunner --flink_master=HOST:8081 --parallelism=64
            --environment_type=DOCKER --environment_config=IMAGE
  Spark     --runner=SparkRunner --spark_master_url=spark://HOST:7077
            --environment_type=DOCKER --environment_config=IMAGE
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import cloudpickle
from absl import app, flags
from apache_beam.options.pipeline_options import PipelineOptions

from data_prep import translate
from data_prep.ingest import sources, tfds_export
from data_prep.ingest import writer as local_ingest
from data_prep.ir_text import captions as ir_captions
from fusionrs_jax.core import fs, records

_NS = "fusionrs"


@dataclasses.dataclass
class BeamOptions:
  """What the pipeline does besides ingesting (ingest knobs: data_prep.ingest.writer.IngestOptions)."""

  records_per_shard: int = 1000
  min_size: int = 32  # pixels
  # Translator run folder (RGB->IR generator); "" = no translation stage.
  translator: str = ""
  translate_batch_size: int = 16  # images per jitted generator call on a worker
  overwrite_ir: bool = False
  ir_captions: bool = True
  num_captions: int = 4


# ----------------------------------------------------------------------------
# Stage functions (pure, one element at a time, so any runner can fuse/distribute them).
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PickledItem:
  """A SourceItem in transit: its `load` is a closure, which Beam's element coder (plain
  pickle) refuses, so it travels cloudpickled and is rebuilt where it is loaded."""

  id: str
  file: str
  payload: bytes

  @classmethod
  def wrap(cls, item: sources.SourceItem) -> PickledItem:
    return cls(item.id, item.file, cloudpickle.dumps(item))

  def unwrap(self) -> sources.SourceItem:
    return cloudpickle.loads(self.payload)


def list_items(spec: dict[str, Any]) -> Iterator[tuple[int, PickledItem]]:
  """Source spec -> (position in source order, item). Reads only the annotation file."""
  items = sources.read_source(spec["source"], spec["json"], spec["images"], spec["name"])
  for pos, item in enumerate(items):
    yield pos, PickledItem.wrap(item)


def first_of_id(element) -> Iterator[tuple[str, Any]]:
  """(id, [(pos, item)]) -> the earliest item, and a duplicate_id reject for the rest
  (the local ingest keeps the first occurrence in source order the same way)."""
  _, members = element
  members = sorted(members, key=lambda m: m[0])
  yield "item", members[0]
  for pos, item in members[1:]:
    yield "reject", (pos, 0, local_ingest.duplicate_id_reject(item.unwrap(), members[0][1].file))


def check(element, min_size: int) -> Iterator[tuple[str, Any]]:
  """(pos, item) -> ("record", (pos, Record)) and ("reject", (pos, i, entry)) outputs."""
  pos, item = element
  record, rejects = local_ingest.check_item(item.unwrap(), min_size)
  for i, reject in enumerate(rejects):
    # Caption rejects come before their item's rejection, as in rejects.jsonl locally.
    yield "reject", (pos, i + 1, reject)
  if record is not None:
    beam.metrics.Metrics.counter(_NS, "records_accepted").inc()
    yield "record", (pos, record)


def _image_sha(record: records.Record) -> str:
  return hashlib.sha256(record.rgb or record.ir).hexdigest()


def place_duplicates(element) -> Iterator[tuple[str, Any]]:
  """(sha256, [(pos, Record)]) -> records in their final split (+ dedup moves), decided by
  data_prep.ingest.writer.plan_dedup on the group exactly as the local ingest decides it."""
  _, members = element
  members = sorted(members, key=lambda m: m[0])
  entries = [{"id": r.id, "split": r.split, "sha256": ""} for _, r in members]
  final, moves = local_ingest.plan_dedup(entries)
  for (pos, record), split in zip(members, final):
    if split != record.split:
      # A new Record: Beam forbids changing an input element in place.
      record = dataclasses.replace(
        record, split=split, meta={**record.meta, "moved_from_split": record.split}
      )
    yield "record", (pos, record)
  for move in moves:
    yield "move", move


class TranslateFn(beam.DoFn):
  """Batches of (pos, Record) -> the same with translated IR. The generator is loaded and
  jitted once per worker (setup); each call runs it over a whole batch on the local
  accelerators (data_prep.translate.Translator)."""

  def __init__(self, checkpoint: str, batch_size: int, overwrite_ir: bool):
    self._checkpoint, self._batch, self._overwrite = checkpoint, batch_size, overwrite_ir

  def setup(self):
    model, params, self._provenance = translate.load_generator(self._checkpoint)
    self._translator = translate.Translator(model, params, self._batch)

  def process(self, batch):
    recs = [r for _, r in batch]
    n = translate.translate_records(recs, self._translator, self._provenance, self._overwrite)
    beam.metrics.Metrics.counter(_NS, "translated").inc(n)
    yield from zip((p for p, _ in batch), recs)


def annotate(element, num_captions: int):
  pos, record = element
  out = ir_captions.annotate_record(record, num_captions=num_captions)
  beam.metrics.Metrics.counter(_NS, "ir_captions").inc(len(out.ir_captions))
  return pos, out


def shard_key(element, positions: dict[str, list[int]], records_per_shard: int):
  """(pos, Record) -> ((split, shard index, shard count), (pos, bytes)): rank in the
  split's source order // records_per_shard, i.e. the local ingest's shard layout."""
  pos, record = element
  split_positions = positions[record.split]
  rank = bisect.bisect_left(split_positions, pos)
  count = max(1, math.ceil(len(split_positions) / records_per_shard))
  return (record.split, rank // records_per_shard, count), (pos, records.encode(record))


def write_shard(element, out_dir: str, name: str) -> tuple[str, int]:
  (split, index, count), members = element
  path = fs.join(out_dir, records.shard_name(name, split, index, count))
  n = records.write_array_record(path, (p for _, p in sorted(members)))
  beam.metrics.Metrics.counter(_NS, "records_written").inc(n)
  return path, n


def write_jsonl(element, path: str) -> str:
  """(key, [(sort key..., entry)]) -> one JSON-lines file in that order (atomic)."""
  _, rows = element
  with fs.staged_file(path) as tmp, open(tmp, "w") as f:
    for row in sorted(rows, key=lambda r: r[:-1]):
      f.write(json.dumps(row[-1], sort_keys=True) + "\n")
  return path


# ----------------------------------------------------------------------------
# Pipeline.
# ----------------------------------------------------------------------------


def build(
  p: beam.Pipeline, spec: dict[str, Any], out_dir: str, name: str, options: BeamOptions, work: str
) -> None:
  """Adds the ingest -> [translate] -> [IR captions] -> shards stages to `p`."""
  items = (
    p
    | "Spec" >> beam.Create([spec])
    | "ListItems" >> beam.FlatMap(list_items)
    | "KeyById" >> beam.Map(lambda e: (e[1].id, e))
    | "GroupById" >> beam.GroupByKey()
    | "FirstOfId" >> beam.FlatMap(first_of_id)
  )
  checked = (
    items
    | "Items" >> beam.FlatMap(lambda t: [t[1]] if t[0] == "item" else [])
    | "Spread" >> beam.Reshuffle()
    | "Check" >> beam.FlatMap(check, options.min_size)
  )
  recs = (
    checked
    | "Accepted" >> beam.FlatMap(lambda t: [t[1]] if t[0] == "record" else [])
    | "KeyByImage" >> beam.Map(lambda e: (_image_sha(e[1]), e))
    | "GroupByImage" >> beam.GroupByKey()
    | "PlaceDuplicates" >> beam.FlatMap(place_duplicates)
  )
  final = recs | "Placed" >> beam.FlatMap(lambda t: [t[1]] if t[0] == "record" else [])
  if options.translator:
    final = (
      final
      | "Batch"
      >> beam.BatchElements(
        min_batch_size=options.translate_batch_size, max_batch_size=options.translate_batch_size
      )
      | "Translate"
      >> beam.ParDo(
        TranslateFn(options.translator, options.translate_batch_size, options.overwrite_ir)
      )
    )
  if options.ir_captions:
    final = final | "IrCaptions" >> beam.Map(annotate, options.num_captions)
  positions = (
    final
    | "SplitPos" >> beam.Map(lambda e: (e[1].split, e[0]))
    | "GroupSplit" >> beam.GroupByKey()
    | "SortPos" >> beam.MapTuple(lambda s, ps: (s, sorted(ps)))
  )
  (
    final
    | "ShardKey" >> beam.Map(shard_key, beam.pvalue.AsDict(positions), options.records_per_shard)
    | "GroupShard" >> beam.GroupByKey()
    | "WriteShard" >> beam.Map(write_shard, out_dir, name)
    | "OneShardList" >> beam.Map(lambda w: (None, (w[0], {"path": w[0], "records": w[1]})))
    | "GroupShards" >> beam.GroupByKey()
    | "WriteShardList" >> beam.Map(write_jsonl, fs.join(work, "shards.jsonl"))
  )
  rejects = items | "DupRejects" >> beam.FlatMap(lambda t: [t[1]] if t[0] == "reject" else [])
  check_rejects = checked | "CheckRejects" >> beam.FlatMap(
    lambda t: [t[1]] if t[0] == "reject" else []
  )
  (
    (rejects, check_rejects)
    | "AllRejects" >> beam.Flatten()
    | "OneRejectFile" >> beam.Map(lambda r: (None, r))
    | "GroupRejects" >> beam.GroupByKey()
    | "WriteRejects" >> beam.Map(write_jsonl, fs.join(work, "rejects.jsonl"))
  )
  (
    recs
    | "Moves" >> beam.FlatMap(lambda t: [(t[1]["id"], t[1])] if t[0] == "move" else [])
    | "OneMoveFile" >> beam.Map(lambda m: (None, m))
    | "GroupMoves" >> beam.GroupByKey()
    | "WriteMoves" >> beam.Map(write_jsonl, fs.join(work, "moves.jsonl"))
  )


class RecordsLostError(RuntimeError):
  pass


def check_no_record_lost(counters: dict[str, int]) -> None:
  """Every accepted record must reach a shard (dedup, translation and captions are 1:1).

  A last line of defence: a runner that drops elements (see refuse_lossy_runner) fails
  the run here instead of leaving a silently short dataset.
  """
  accepted, written = counters.get("records_accepted", 0), counters.get("records_written", 0)
  if accepted != written:
    raise RecordsLostError(
      f"Beam pipeline accepted {accepted} records but wrote {written}: records were lost "
      f"inside the runner. Re-run (the shards are rewritten atomically) on another "
      f"runner or running mode"
    )


class LossyRunnerError(ValueError):
  pass


def refuse_lossy_runner(pipeline_options: PipelineOptions) -> None:
  """Rejects the local runner setting known to lose elements.

  Beam 2.77's DirectRunner with --direct_running_mode=multi_threading and more than one
  worker drops elements with no error once they are large: a Beam-only pipeline (2100
  elements of 60 kB, Reshuffle -> FlatMap -> GroupByKey) came out short in 4 of 9 runs (by
  3 to 89 elements), and UCM ingest lost 1 of 2100 records in 2 of 5. With 100-byte
  elements, or in multi_processing mode, nothing was lost (benchmarks/beam_runner_modes.py
  measures it). multi_processing is also the mode that runs Python work in parallel.
  """
  opts = pipeline_options.get_all_options()
  runner = str(opts.get("runner") or "DirectRunner")
  workers = opts.get("direct_num_workers") or 1
  if (
    runner.lower().removesuffix("runner") in ("direct", "")
    and workers != 1
    and opts.get("direct_running_mode") == "multi_threading"
  ):
    raise LossyRunnerError(
      f"--direct_running_mode=multi_threading with --direct_num_workers={workers} loses "
      f"records in this Beam version (a runner bug; see data_prep.beam.refuse_lossy_runner); "
      f"use --direct_running_mode=multi_processing for parallel local runs"
    )


def _read_jsonl(path: str) -> list[dict]:
  if not fs.exists(path):  # no element reached the writer: nothing was rejected
    return []
  with fs.open(path) as f:
    return [json.loads(line) for line in f]


def run(
  spec: dict[str, Any],
  out_dir: str,
  name: str,
  options: BeamOptions | None = None,
  pipeline_args: Iterable[str] = (),
) -> dict[str, Any]:
  """Runs the pipeline to completion and writes rejects.jsonl + dataset_info.json.

  spec: {"source": karpathy|nwpu|folder|coco_thermal, "json": [paths], "images": dir,
  "name": record id prefix} (the ingest CLI's flags). Returns a summary like ingest's.
  """
  options = options or BeamOptions()
  pipeline_options = PipelineOptions(list(pipeline_args))
  refuse_lossy_runner(pipeline_options)
  fs.makedirs(out_dir)
  work = fs.join(out_dir, f".beam-{name}")
  fs.rmtree(work)  # lists of an interrupted earlier run
  fs.makedirs(work)
  start = time.time()
  with beam.Pipeline(options=pipeline_options) as p:
    build(p, spec, out_dir, name, options, work)
  result = p.result
  counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}
  check_no_record_lost(counters)
  seconds = time.time() - start
  rejects = _read_jsonl(fs.join(work, "rejects.jsonl"))
  moves = _read_jsonl(fs.join(work, "moves.jsonl"))
  reject_counts: dict[str, int] = {}
  for r in rejects:
    reject_counts[r["reason"]] = reject_counts.get(r["reason"], 0) + 1
  _write_lines(fs.join(out_dir, local_ingest.REJECTS_FILE), rejects)
  written = {row["path"] for row in _read_jsonl(fs.join(work, "shards.jsonl"))}
  local_ingest.remove_stale_shards(out_dir, name, written)
  extra = {
    "ingest": {
      "source_args": spec,
      "min_size": options.min_size,
      "rejects": dict(sorted(reject_counts.items())),
      "dedup_moves": moves,
      "tfrecord_export": False,
    },
    "beam": {
      "runner": pipeline_options.get_all_options().get("runner") or "DirectRunner",
      "translator": options.translator or None,
      "ir_captions": options.ir_captions,
      "counters": counters,
    },
  }
  info = records.write_info(out_dir, name, extra=extra)
  if info["splits"] and not fs.is_remote(out_dir):  # the tfds view's symlinks need a filesystem
    tfds_export.write_tfds_metadata(out_dir, name, info)
  fs.rmtree(work)
  return {
    "out_dir": out_dir,
    "name": name,
    "splits": {s: v["records"] for s, v in info["splits"].items()},
    "rejects": reject_counts,
    "dedup_moves": moves,
    "counters": counters,
    "seconds": round(seconds, 2),
  }


def _write_lines(path: str, rows: list[dict]) -> None:
  with fs.staged_file(path) as tmp, open(tmp, "w") as f:
    for row in rows:
      f.write(json.dumps(row, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------
# CLI.
# ----------------------------------------------------------------------------


def define_flags() -> None:
  local_ingest.define_flags()
  flags.DEFINE_string("translator", "", "Translator workdir: adds the RGB->IR stage.")
  flags.DEFINE_integer("translate_batch_size", 16, "Images per generator call per worker.")
  flags.DEFINE_bool("overwrite_ir", False, "Also translate records that already have IR.")
  flags.DEFINE_bool("ir_captions", True, "Add IR-aware captions + instructions.")
  flags.DEFINE_integer("num_captions", 4, "IR captions per record (1-5).")


def main(argv: list[str]) -> None:
  f = flags.FLAGS
  for name in ("source", "json", "images", "out", "name"):
    if not f[name].value:
      raise app.UsageError(f"--{name} is required")
  if not os.path.isdir(f.images):
    raise app.UsageError(f"--images={f.images} is not a folder")
  spec = {
    "source": f.source,
    "json": [os.path.abspath(p) for p in f.json],
    "images": os.path.abspath(f.images),
    "name": f.name,
  }
  options = BeamOptions(
    records_per_shard=f.records_per_shard,
    min_size=f.min_size,
    translator=f.translator,
    translate_batch_size=f.translate_batch_size,
    overwrite_ir=f.overwrite_ir,
    ir_captions=f.ir_captions,
    num_captions=f.num_captions,
  )
  try:
    summary = run(spec, f.out, f.name, options, pipeline_args=argv[1:])
  except LossyRunnerError as e:
    raise app.UsageError(str(e)) from e
  print(json.dumps(summary, indent=1))


def _parse(argv: list[str]) -> list[str]:
  """absl parses its flags; the rest (--runner=..., --project=...) is Beam's."""
  return flags.FLAGS(argv, known_only=True)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=_parse)
