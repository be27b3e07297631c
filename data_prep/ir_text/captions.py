"""IR-aware captions and instruction data for every RGB-IR record of a shard folder.

python -m data_prep.ir_captions --in=DIR --out=DIR [--splits=train,val,test]
  [--num_captions=4] [--min_captions=2] [--llm=PATH | --endpoint=URL] [--show=20] [--resume]
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import os
import random
import sys
import time

from absl import app, flags

from data_prep.ir_text import boxes as ir_boxes
from data_prep.ir_text import (
  filter as ir_filter,
)
from data_prep.ir_text import (
  lexicon as ir_lexicon,
)
from data_prep.ir_text import (
  llm as ir_llm,
)
from data_prep.ir_text import (
  stats as ir_stats,
)
from data_prep.ir_text import (
  templates as ir_templates,
)
from data_prep.ir_text.instructions import make_instructions
from fusionrs_jax.core import records

__all__ = ["annotate_folder", "annotate_record", "describe_ir", "make_instructions", "ngram_counts"]

# How many template candidates are drawn per wanted caption before the filter thins them.
CANDIDATES_PER_CAPTION = 3
EXTRA_ROUNDS = 2


def _grounding(scene_captions, objects) -> tuple[dict[str, str], dict[str, str], dict]:
  """(class -> noun as written, box category -> plural noun, singular form -> count)."""
  present = ir_lexicon.mentioned_classes(scene_captions)
  box_names = {}
  for obj in objects or ():
    cat = str(obj.get("category", ""))
    found = ir_lexicon.object_classes([obj])
    if found:
      cls, noun = next(iter(found.items()))
      present.setdefault(cls, noun)
      box_names[cat] = noun
  counts = ir_lexicon.stated_counts(scene_captions)
  for cat, box in collections.Counter(
    ir_lexicon.category_name(str(o.get("category", ""))) for o in objects or ()
  ).items():
    counts.setdefault(cat, box)
  return present, box_names, counts


def describe_ir(
  ir,
  scene_captions,
  objects=None,
  seed=0,
  num_captions: int = 4,
  stats: dict | None = None,
  report: ir_filter.FilterReport | None = None,
  rewriter: ir_llm.Rewriter | None = None,
) -> list[tuple[str, dict]]:
  """Up to `num_captions` filtered IR captions of a uint8 [H, W] image, with provenance.

  Returns [(caption, provenance)], provenance = {"engine", "facts", "measurements",
  "objects"}. Captions only name object classes of `scene_captions` / `objects` boxes.
  """
  stats = stats if stats is not None else ir_stats.measure_ir(ir, objects)
  present, box_names, counts = _grounding(scene_captions, objects)
  facts = ir_templates.measured_facts(stats, box_names)
  nouns = sorted(set(present.values()))
  accepted: list[tuple[str, dict]] = []
  seen: set[str] = set()
  if rewriter is not None:
    _accept(
      _rewritten(rewriter, facts, nouns, scene_captions, num_captions, seed, report),
      present,
      counts,
      seen,
      accepted,
      num_captions,
      report,
    )
  # Fresh template pools until enough captions pass (a pool rarely falls short).
  for round_ in range(EXTRA_ROUNDS + 1):
    if len(accepted) >= num_captions:
      break
    pool = ir_templates.template_candidates(
      facts,
      nouns,
      seed if round_ == 0 else f"{seed}:{round_}",
      CANDIDATES_PER_CAPTION * num_captions,
    )
    _accept(pool, present, counts, seen, accepted, num_captions, report)
  return accepted


def _accept(candidates, present, counts, seen, accepted, num_captions, report) -> None:
  """Appends filtered candidates to `accepted` until it holds num_captions."""
  for text, prov in candidates:
    if len(accepted) >= num_captions:
      return
    regions = {v for v in prov["measurements"].values() if v in ir_stats.REGION_NAMES}
    reasons = ir_filter.check_caption(text, present, counts, regions, seen)
    if report is not None:
      report.add(text, reasons)
    if not reasons:
      accepted.append((text, prov))
      seen.add(ir_filter.normalize(text))


def _rewritten(rewriter, facts, nouns, scene_captions, n, seed, report):
  """Model captions from one example clause per fact; [] (counted) when the model fails."""
  statements = [f["clauses"][0] for f in facts]
  measurements = {}
  for f in facts:
    measurements.update(f["measurements"])
  try:
    texts = rewriter.rewrite(
      statements, nouns, list(scene_captions), n, seed=ir_templates.rng_for(seed).randrange(2**31)
    )
  except ir_llm.RewriteError:
    if report is not None:
      report.rejected["model_failure"] += 1
    return []
  prov = {
    "engine": rewriter.name,
    "facts": [f["name"] for f in facts],
    "measurements": measurements,
    "objects": nouns,
  }
  return [(t, prov) for t in texts]


def annotate_record(
  record: records.Record,
  num_captions: int = 4,
  report: ir_filter.FilterReport | None = None,
  rewriter: ir_llm.Rewriter | None = None,
) -> records.Record:
  """A copy of `record` with ir_captions, their provenance and instructions filled.

  Records without an IR image come back unchanged.
  """
  return annotate_with_stats(record, num_captions, report, rewriter)[0]


def with_box_captions(record: records.Record, height: int, width: int) -> records.Record:
  """A record with boxes but no captions (HIT-UAV) gets captions stating its boxes' counts and
  regions; their provenance goes to meta["caption_provenance"]. Others come back unchanged."""
  objects = record.meta.get("objects") or []
  if record.captions or not objects:
    return record
  caps = ir_boxes.box_captions(objects, height, width, seed=record.id)
  meta = {**record.meta, "caption_provenance": ir_boxes.provenance_json(caps)}
  return dataclasses.replace(record, captions=[c for c, _ in caps], meta=meta)


def annotate_with_stats(record, num_captions=4, report=None, rewriter=None, box_captions=True):
  """(annotated record, its IR measurements or None when the record has no IR).

  With box_captions, a record with boxes and no captions first gets box-grounded captions.
  """
  if not record.ir:
    return record, None
  try:
    ir = ir_stats.decode_ir(record.ir)
  except Exception as e:
    raise records.RecordError(f"record {record.id!r}: IR image does not decode ({e})") from e
  if box_captions:
    record = with_box_captions(record, *ir.shape)
  objects = record.meta.get("objects") or []
  stats = ir_stats.measure_ir(ir, objects)
  captions = describe_ir(
    ir,
    ir_boxes.grounding_texts(record),
    objects,
    seed=record.id,
    num_captions=num_captions,
    stats=stats,
    report=report,
    rewriter=rewriter,
  )
  out = dataclasses.replace(
    record,
    ir_captions=[c for c, _ in captions],
    ir_caption_provenance=[json.dumps(p, sort_keys=True) for _, p in captions],
  )
  out.instructions = make_instructions(out, stats)
  return out, stats


# ----------------------------------------------------------------------------
# Vocabulary richness.
# ----------------------------------------------------------------------------


def ngram_counts(texts, max_n: int = 3) -> dict[str, int]:
  """Distinct word 1..max_n-grams over `texts`."""
  grams = {n: set() for n in range(1, max_n + 1)}
  for text in texts:
    tokens = ir_lexicon.tokenize(text)
    for n, seen in grams.items():
      seen.update(zip(*(tokens[i:] for i in range(n))))
  return {f"{n}-grams": len(g) for n, g in grams.items()}


# ----------------------------------------------------------------------------
# Shard folders (CLI).
# ----------------------------------------------------------------------------


def define_flags() -> None:
  # Defined only when run as a program, so importing this module (tests, beam) never
  # collides with other data_prep CLIs' --in/--out flags.
  flags.DEFINE_string("in", None, "Input shard folder (records with IR images).")
  flags.DEFINE_string("out", None, "Output shard folder (same shard names).")
  flags.DEFINE_list("splits", ["train", "val", "test"], "Splits to annotate (absent: skip).")
  flags.DEFINE_integer("num_captions", 4, "IR captions wanted per record (1-5).")
  flags.DEFINE_integer("min_captions", 2, "Records with fewer accepted captions are counted.")
  flags.DEFINE_string("llm", None, "Local Hugging Face model directory for rewriting.")
  flags.DEFINE_string("endpoint", None, "OpenAI-compatible server URL for rewriting.")
  flags.DEFINE_integer("show", 0, "Print this many random annotated samples.")
  flags.DEFINE_bool("resume", False, "Skip output shards already completed.")


_DONE_SUFFIX = ".ir_captions.json"


def _dataset_name(shard_path: str, split: str) -> str:
  return os.path.basename(shard_path).split(f"-{split}.array_record-")[0]


def annotate_shard(
  in_path: str, out_path: str, num_captions: int, min_captions: int, rewriter=None
) -> dict:
  """Annotates one shard into `out_path` (atomic) and returns its completion summary."""
  report = ir_filter.FilterReport()
  n = with_ir = below_min = n_captions = 0
  baseline = set()
  start = time.perf_counter()

  def annotated():
    nonlocal n, with_ir, below_min, n_captions
    for rec in records.read_records([in_path]):
      n += 1
      out, stats = annotate_with_stats(rec, num_captions, report, rewriter)
      if stats is not None:
        baseline.add(ir_templates.baseline_caption(stats))
        with_ir += 1
        n_captions += len(out.ir_captions)
        below_min += len(out.ir_captions) < min_captions
      yield records.encode(out)

  records.write_array_record(out_path, annotated())
  summary = {
    "shard": os.path.basename(out_path),
    "records": n,
    "with_ir": with_ir,
    "without_ir_passed_through": n - with_ir,
    "ir_captions": n_captions,
    "below_min_captions": below_min,
    "seconds": round(time.perf_counter() - start, 3),
    "filter": report.to_dict(),
    "baseline_captions": sorted(baseline),
  }
  records.write_json_atomic(out_path + _DONE_SUFFIX, summary)
  return summary


def _remove_stale(out_dir: str, split: str, keep: set[str]) -> None:
  """Drops output shards (and markers) of `split` the input no longer has (re-sharding)."""
  for path in glob.glob(os.path.join(out_dir, f"*-{split}.array_record-*")):
    if os.path.basename(path).removesuffix(_DONE_SUFFIX) not in keep:
      os.remove(path)


def annotate_folder(
  in_dir: str,
  out_dir: str,
  splits,
  num_captions: int = 4,
  min_captions: int = 2,
  rewriter=None,
  resume: bool = False,
) -> dict:
  """Annotates every shard of `splits`; returns the JSON report the CLI prints."""
  os.makedirs(out_dir, exist_ok=True)
  report = ir_filter.FilterReport()
  per_split, name, seconds = {}, None, 0.0
  fresh = collections.Counter()
  baseline: set[str] = set()
  for split in splits:
    try:
      shards = records.list_shards(in_dir, split)
    except FileNotFoundError:
      continue
    totals = collections.Counter()
    _remove_stale(out_dir, split, {os.path.basename(p) for p in shards})
    for path in shards:
      name = _dataset_name(path, split)
      out_path = os.path.join(out_dir, os.path.basename(path))
      marker = out_path + _DONE_SUFFIX
      if resume and os.path.exists(marker) and os.path.exists(out_path):
        with open(marker) as f:
          summary = json.load(f)
        totals["shards_resumed"] += 1
      else:
        summary = annotate_shard(path, out_path, num_captions, min_captions, rewriter)
        seconds += summary["seconds"]
        fresh.update(records=summary["records"], captions=summary["ir_captions"])
      totals.update(
        {
          k: summary[k]
          for k in (
            "records",
            "with_ir",
            "ir_captions",
            "without_ir_passed_through",
            "below_min_captions",
          )
        }
      )
      totals["shards"] += 1
      report.merge(summary["filter"])
      baseline.update(summary["baseline_captions"])
    per_split[split] = dict(totals)
  if name is None:
    raise FileNotFoundError(f"no shards of splits {list(splits)} in {in_dir!r}")
  ir_texts = [
    t
    for s in per_split
    for r in records.read_records(records.list_shards(out_dir, s))
    for t in r.ir_captions
  ]
  result = {
    "splits": per_split,
    "filter": report.to_dict(),
    "throughput": {
      k + "_per_second": round(v / seconds, 1) if seconds else None for k, v in fresh.items()
    },
    "vocabulary": {
      "ir_captions": ngram_counts(ir_texts),
      "single_template_baseline": ngram_counts(baseline),
    },
    "backend": rewriter.name if rewriter else ir_templates.ENGINE,
  }
  if rewriter is not None:
    result["backend_failures"] = dict(rewriter.failures)
  records.write_info(out_dir, name, {"ir_captions": result})
  return result


def show_samples(out_dir: str, splits, k: int, seed: int = 0, file=sys.stdout) -> None:
  """Prints k random annotated records (id, scene caption, IR captions, instructions)."""
  recs = [
    r
    for s in splits
    for r in records.read_records(records.list_shards(out_dir, s))
    if r.ir_captions
  ]
  for rec in random.Random(seed).sample(recs, min(k, len(recs))):
    print(
      json.dumps(
        {
          "id": rec.id,
          "scene_caption": rec.captions[:1],
          "ir_captions": rec.ir_captions,
          "instructions": rec.instructions[:4],
        },
        indent=1,
      ),
      file=file,
    )


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  if not FLAGS["in"].value or not FLAGS.out:
    raise app.UsageError("--in and --out are required")
  if not 1 <= FLAGS.num_captions <= 5 or FLAGS.min_captions > FLAGS.num_captions:
    raise app.UsageError("--num_captions must be 1..5 and >= --min_captions")
  rewriter = ir_llm.make_rewriter(FLAGS.llm, FLAGS.endpoint)
  result = annotate_folder(
    FLAGS["in"].value,
    FLAGS.out,
    FLAGS.splits,
    FLAGS.num_captions,
    FLAGS.min_captions,
    rewriter,
    FLAGS.resume,
  )
  print(json.dumps(result, indent=1))
  if FLAGS.show:
    show_samples(FLAGS.out, list(result["splits"]), FLAGS.show)


if __name__ == "__main__":
  define_flags()
  app.run(main)
