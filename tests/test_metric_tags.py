"""Metric names reach TensorBoard without tensorboardX renaming them (no "Summary name ... is
illegal" line per metric per eval), while metrics.jsonl keeps the readable names."""

import glob
import json
import logging

from tensorboardX.summary import _clean_tag

from fusionrs_jax.core import metrics


def test_tags_are_already_legal_and_jsonl_keeps_the_names(tmp_path, caplog):
  names = ["eval/rgb->text/R@1", "eval/ir→text (mR)", "/train/loss"]
  for name in names:
    tag = metrics.tensorboard_tag(name)
    assert _clean_tag(tag) == tag
  assert metrics.tensorboard_tag("eval/rgb->text/R@1") == "eval/rgb-_text/R_at_1"
  writer = metrics.MetricWriter(str(tmp_path))
  with caplog.at_level(logging.INFO):
    writer.write_scalars(3, dict.fromkeys(names, 0.5))
    writer.close()
  assert not [r for r in caplog.records if "is illegal" in r.getMessage()]
  (line,) = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert set(names) <= set(json.loads(line))
  (events,) = glob.glob(str(tmp_path / "tb" / "events.*"))
  with open(events, "rb") as f:
    assert b"eval/rgb-_text/R_at_1" in f.read()
