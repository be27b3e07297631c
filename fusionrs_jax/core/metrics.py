"""Metric writers (TensorBoard event files + metrics.jsonl), progress with rate/ETA,
and image grids a person can look at."""

from __future__ import annotations

import io
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging
from PIL import Image, ImageDraw

from fusionrs_jax.core import fs


def _scalar(value: Any) -> float:
  return float(np.asarray(value))


# Characters TensorBoard accepts in a tag; tensorboardX renames any other with a warning.
_TAG_CHARS = re.compile(r"[^-/\w.]")


def tensorboard_tag(name: str) -> str:
  """A metric name TensorBoard accepts as it is ("eval/rgb->text/R@1" -> "eval/rgb-_text/R_at_1");
  metrics.jsonl keeps the readable name."""
  return _TAG_CHARS.sub("_", name.replace("@", "_at_")).lstrip("/")


class MetricWriter:
  """Writes scalars to `<workdir>/metrics.jsonl` and TensorBoard events in `<workdir>/tb`.

  Only process 0 writes (pass `active=False` elsewhere). Each JSON line is
  {"step": int, "time": unix seconds, "<name>": float, ...}. `workdir` may be gs:// (appended
  files are re-uploaded whole at most every fs.REMOTE_APPEND_SECS, and on close).
  """

  def __init__(self, workdir: str, active: bool = True):
    self.workdir = workdir
    self.active = active
    self._tb = None
    if active:
      fs.makedirs(workdir)
      from tensorboardX import SummaryWriter, record_writer

      # tensorboardX's own gs:// writer needs google-cloud-storage and its credentials;
      # event files go through core/fs like every other file.
      record_writer.register_writer_factory("gs", _EventFileFactory())
      self._tb = SummaryWriter(fs.join(workdir, "tb"), flush_secs=10)
      self._jsonl = fs.AppendFile(fs.join(workdir, "metrics.jsonl"))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.active:
      return
    values = {k: _scalar(v) for k, v in scalars.items()}
    for name, value in values.items():
      self._tb.add_scalar(tensorboard_tag(name), value, step)
    self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **values}) + "\n")
    self._jsonl.flush()

  def write_image(self, step: int, name: str, image: np.ndarray) -> str | None:
    """Saves a uint8 [H, W, 3|1] image as `<workdir>/images/<name>_<step>.png` and to TB."""
    if not self.active:
      return None
    image = np.asarray(image)
    folder = fs.join(self.workdir, "images")
    fs.makedirs(folder)
    path = fs.join(folder, f"{name}_{step:07d}.png")
    png = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(png, "PNG")
    fs.write_bytes(path, png.getvalue())
    self._tb.add_image(tensorboard_tag(name), image, step, dataformats="HWC")
    return path

  def flush(self) -> None:
    if self.active:
      self._tb.flush()
      self._jsonl.flush(force=True)

  def close(self) -> None:
    if self.active:
      self._tb.close()
      self._jsonl.close()


def read_jsonl(path: str) -> list[dict[str, Any]]:
  return [json.loads(line) for line in fs.read_text(path).splitlines() if line.strip()]


class _EventFileFactory:
  """tensorboardX writer factory for gs:// event files (fs.AppendFile, binary)."""

  def open(self, path: str) -> fs.AppendFile:
    return fs.AppendFile(path, binary=True, every_secs=0)

  def directory_check(self, path: str) -> None:
    del path  # GCS has no folders to create


class Progress:
  """Rate and ETA for a loop of known length, logged at most every `every_secs`."""

  def __init__(self, total: int, name: str = "step", start: int = 0, every_secs: float = 10):
    self.total, self.name, self.every_secs = total, name, every_secs
    self._start_step, self._t0 = start, time.perf_counter()
    self._last_log = -math.inf

  def rate(self, step: int) -> float:
    elapsed = time.perf_counter() - self._t0
    return (step - self._start_step) / elapsed if elapsed > 0 else 0.0

  def update(self, step: int, extra: str = "", force: bool = False) -> str | None:
    now = time.perf_counter()
    if not force and now - self._last_log < self.every_secs:
      return None
    self._last_log = now
    rate = self.rate(step)
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    line = (
      f"{self.name} {step}/{self.total} ({rate:.2f} {self.name}/s, ETA {_format_secs(eta)}) {extra}"
    ).rstrip()
    logging.info(line)
    return line


def _format_secs(secs: float) -> str:
  if not math.isfinite(secs):
    return "?"
  secs = int(secs)
  return f"{secs // 3600}h{secs % 3600 // 60:02d}m{secs % 60:02d}s"


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[-1, 1] float images -> uint8, 1-channel images expanded to 3 channels."""
  images = np.asarray(images, np.float32)
  images = np.clip((images + 1) * 127.5, 0, 255).round().astype(np.uint8)
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  return images


def image_grid(columns: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
  """Columns of [N, H, W, 3] uint8 images -> one [N*(H+pad), len*(W+pad), 3] grid.

  Used for e.g. RGB | fake IR | reconstructed RGB sheets.
  """
  columns = [np.asarray(c) for c in columns]
  n, h, w, _ = columns[0].shape
  grid = np.full((n * (h + pad) + pad, len(columns) * (w + pad) + pad, 3), 255, np.uint8)
  for j, col in enumerate(columns):
    for i in range(n):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      grid[y : y + h, x : x + w] = col[i]
  return grid


def bar_chart(
  values: Mapping[str, float],
  title: str = "",
  vmax: float = 100.0,
  width: int = 480,
  bar_height: int = 22,
  label_width: int = 110,
) -> np.ndarray:
  """Horizontal bar chart of named values (e.g. R@5 per direction) as uint8 [H, W, 3]."""

  rows = list(values.items())
  height = 30 + bar_height * len(rows) + 10
  img = Image.new("RGB", (width, height), "white")
  draw = ImageDraw.Draw(img)
  draw.text((8, 8), title, fill="black")
  label_w, right = label_width, width - 60
  for i, (name, value) in enumerate(rows):
    y = 30 + i * bar_height
    draw.text((8, y + 4), name, fill="black")
    length = int((right - label_w) * max(0.0, min(value, vmax)) / vmax)
    draw.rectangle([label_w, y + 3, label_w + length, y + bar_height - 3], fill=(60, 110, 180))
    draw.text((label_w + length + 4, y + 4), f"{value:.1f}", fill="black")
  return np.asarray(img)
