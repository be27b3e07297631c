r"""How often does each local Beam running mode lose elements? JSON on stdout.

  python -m benchmarks.beam_runner_modes [--runs=6] [--elements=2100] [--bytes=60000]

Runs a Beam-only pipeline (no project code: N elements of `bytes` random-looking bytes,
Reshuffle -> FlatMap -> key by sha256 -> GroupByKey -> count) on the DirectRunner with 2
workers in multi_threading and multi_processing modes, several times each, and reports how
many elements came out. It is the evidence behind data_prep.beam.refuse_lossy_runner; a
Beam upgrade that fixes the runner shows here as zero lost elements in every mode.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time

import apache_beam as beam
from absl import app, flags
from apache_beam.options.pipeline_options import PipelineOptions


def _payload(i: int, size: int) -> tuple[int, bytes]:
  block = hashlib.sha256(str(i).encode()).digest()
  return i, block * (size // len(block))


def _count_to(path: str):
  def write(kv) -> None:
    with open(path, "w") as f:
      f.write(str(len(list(kv[1]))))

  return write


def elements_out(mode: str, elements: int, size: int, workers: int = 2) -> int:
  """Elements reaching the end of the pipeline in one run (should equal `elements`)."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "count")
    args = [f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"]
    with beam.Pipeline(options=PipelineOptions(args)) as p:
      (
        p
        | beam.Create(range(elements))
        | beam.Map(_payload, size)
        | beam.Reshuffle()
        | "Check" >> beam.FlatMap(lambda e: [e])
        | "KeyByContent" >> beam.Map(lambda e: (hashlib.sha256(e[1]).hexdigest(), e[0]))
        | "GroupByContent" >> beam.GroupByKey()
        | "Members" >> beam.FlatMap(lambda kv: list(kv[1]))
        | "OneKey" >> beam.Map(lambda i: (None, i))
        | "All" >> beam.GroupByKey()
        | "Count" >> beam.Map(_count_to(out))
      )
    with open(out) as f:
      return int(f.read())


def main(argv):
  del argv
  f = flags.FLAGS
  report = {
    "beam": beam.__version__,
    "elements": f.elements,
    "bytes_per_element": f.bytes,
    "workers": 2,
    "modes": {},
  }
  for mode in ("multi_threading", "multi_processing"):
    start = time.perf_counter()
    outs = [elements_out(mode, f.elements, f.bytes) for _ in range(f.runs)]
    report["modes"][mode] = {
      "elements_out": outs,
      "runs_short": sum(o != f.elements for o in outs),
      "elements_lost": sum(f.elements - o for o in outs),
      "seconds_per_run": round((time.perf_counter() - start) / f.runs, 2),
    }
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  flags.DEFINE_integer("runs", 6, "Runs per mode.")
  flags.DEFINE_integer("elements", 2100, "Elements per run (UCM has 2100 images).")
  flags.DEFINE_integer("bytes", 60000, "Bytes per element (a UCM record is ~60-100 kB).")
  app.run(main)
