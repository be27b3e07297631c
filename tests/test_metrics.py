"""Metric files a person reads: metrics.jsonl, TensorBoard events, PNG grids."""

import glob
import os

import numpy as np
from PIL import Image

from fusionrs_jax.core import metrics


def test_writer_writes_jsonl_and_tensorboard_events(tmp_path):
  w = metrics.MetricWriter(str(tmp_path))
  w.write_scalars(1, {"loss": np.float32(2.5), "lr": 1e-3})
  w.write_scalars(2, {"loss": 1.5})
  w.close()
  rows = metrics.read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert [(r["step"], r["loss"]) for r in rows] == [(1, 2.5), (2, 1.5)]
  assert rows[0]["lr"] == 1e-3
  events = glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))
  assert events and os.path.getsize(events[0]) > 0


def test_inactive_writer_writes_nothing(tmp_path):
  w = metrics.MetricWriter(str(tmp_path / "w"), active=False)
  w.write_scalars(1, {"loss": 1.0})
  assert not os.path.exists(tmp_path / "w")


def test_image_grid_places_columns_and_png_round_trips(tmp_path):
  a = np.zeros((2, 4, 5, 3), np.uint8)
  b = np.full((2, 4, 5, 3), 200, np.uint8)
  grid = metrics.image_grid([a, b], pad=1)
  assert grid.shape == (2 * 5 + 1, 2 * 6 + 1, 3)
  assert (grid[1:5, 1:6] == 0).all() and (grid[1:5, 7:12] == 200).all()
  w = metrics.MetricWriter(str(tmp_path))
  path = w.write_image(3, "sheet", grid)
  w.close()
  np.testing.assert_array_equal(np.asarray(Image.open(path)), grid)


def test_to_uint8_maps_range_and_expands_gray():
  x = np.array([[-1.0, 0.0, 1.0]], np.float32).reshape(1, 1, 3, 1)
  out = metrics.to_uint8(x)
  assert out.shape == (1, 1, 3, 3)
  assert out[0, 0, :, 0].tolist() == [0, 128, 255]


def test_progress_reports_rate_and_eta():
  p = metrics.Progress(total=100, name="step", every_secs=0)
  line = p.update(0, force=True)
  assert line.startswith("step 0/100")
  assert "ETA" in line
