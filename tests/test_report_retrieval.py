"""The pipeline report's retrieval tables: the headline table and the claims read the
own-caption protocol, the same_text/ metrics form the second table, and stage results from
before the own-caption protocol are named and left out."""

import ml_collections
import numpy as np

from fusionrs_jax.evaluators import retrieval
from fusionrs_jax.pipeline import report
from fusionrs_jax.pipeline import run as pipeline

KS = (1, 5, 10)


def _metrics(own: float, same: float) -> dict[str, float]:
  """A SigLIP stage result: every R@k of every direction `own`, its same_text/ twin `same`."""
  out = {}
  for prefix, value in (("", own), (retrieval.SAME_TEXT, same)):
    for d in retrieval.DIRECTIONS + retrieval.IR_CAPTION_DIRECTIONS:
      out.update({f"{prefix}{d}/R@{k}": value for k in KS})
    out[f"{prefix}mR"] = value
  return out


def _pipe(variants) -> pipeline.Pipeline:
  """A Pipeline with only the config fields the report's retrieval summary reads."""
  pipe = pipeline.Pipeline.__new__(pipeline.Pipeline)
  pipe.c = ml_collections.ConfigDict({"seeds": 2, "siglip": {"variants": list(variants)}})
  return pipe


def test_report_headline_is_own_captions_and_same_text_is_the_second_table():
  pipe = _pipe(("trimodal", "rgb_only"))
  finished = {
    "siglip_trimodal_s0": {"result": _metrics(20.0, 30.0)},
    "siglip_trimodal_s1": {"result": _metrics(22.0, 32.0)},
    "siglip_rgb_only_s0": {"result": _metrics(10.0, 15.0)},
  }
  # Evaluated before the own-caption protocol: no same_text/ metrics.
  old = {k: v for k, v in _metrics(99.0, 0.0).items() if not k.startswith(retrieval.SAME_TEXT)}
  finished["siglip_rgb_only_s1"] = {"result": old}
  own, same, stale = report._retrieval_summaries(pipe, finished)
  assert stale == ["siglip_rgb_only_s1"]
  assert own["trimodal"]["IR->text"]["per_seed"] == [20.0, 22.0]
  assert own["rgb_only"]["mR"]["per_seed"] == [10.0]
  assert same["trimodal"]["mR"]["mean"] == 31.0 and same["rgb_only"]["text->IR"]["mean"] == 15.0

  claims = report.claims(own, {}, {})
  ir_text = [cl for cl in claims if cl["measure"].startswith("IR->text")][0]
  assert "own captions" in ir_text["measure"]
  assert ir_text["a_mean"] == 21.0 and ir_text["b_mean"] == 10.0

  summary = {"retrieval": own, "retrieval_same_text": same, "retrieval_stale_runs": stale}
  text = "\n".join(report._retrieval_section(summary, {}, lambda p: p))
  assert text.index("own captions as positives") < text.index("### Second protocol")
  assert "trimodal 31.0 -> 21.0" in text and "rgb_only 15.0 -> 10.0" in text
  assert "siglip_rgb_only_s1" in text and "--redo=siglip_" in text
  assert np.isfinite(own["trimodal"]["mR"]["std"])
