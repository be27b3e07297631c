"""The report's matplotlib figures: retrieval bars with seed error bars, training-loss curves
per run, and presence ROC curves per class.

Each function draws from numbers the report already holds (summary tables, metrics.jsonl rows,
saved presence scores) and writes one PNG atomically; none of them reads a stage file itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# One color per variant / arm / captioner input, stable across figures.
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")


def _pyplot():
  import matplotlib

  matplotlib.use("Agg", force=True)
  import matplotlib.pyplot as plt

  return plt


def _save(fig, path: str) -> str:
  plt = _pyplot()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}.png"
  fig.savefig(tmp, dpi=110, bbox_inches="tight")
  plt.close(fig)
  os.replace(tmp, path)
  return path


def grouped_bars(
  tables: Mapping[str, Mapping[str, Mapping[str, Any]]],
  keys: Sequence[str],
  path: str,
  title: str,
  ylabel: str,
) -> str:
  """One group of bars per key (x axis), one bar per table (a variant), height = mean and
  error bar = std over seeds, each seed's value drawn as a dot on its bar."""
  plt = _pyplot()
  names = list(tables)
  fig, ax = plt.subplots(figsize=(1.3 * len(keys) + 2.5, 4.2))
  width = 0.8 / max(1, len(names))
  x = np.arange(len(keys))
  for i, name in enumerate(names):
    means = [tables[name][k]["mean"] for k in keys]
    stds = [tables[name][k]["std"] for k in keys]
    pos = x - 0.4 + width * (i + 0.5)
    color = PALETTE[i % len(PALETTE)]
    ax.bar(pos, means, width, yerr=stds, capsize=3, label=name, color=color, alpha=0.85)
    for p, k in zip(pos, keys):
      seeds = tables[name][k].get("per_seed") or []
      ax.plot([p] * len(seeds), seeds, "k.", markersize=3)
  ax.set_xticks(x, keys, rotation=20, ha="right")
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=8, frameon=False)
  return _save(fig, path)


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
  if window <= 1 or len(y) < window:
    return y
  kernel = np.ones(window) / window
  return np.convolve(y, kernel, mode="valid")


def train_curve(
  rows: Sequence[Mapping[str, Any]], key: str = "loss", smooth: int = 10
) -> tuple[np.ndarray, np.ndarray] | None:
  """(steps, moving average of `key`) of one run's metrics rows; None when it never logged
  `key`. A resumed run logs the steps after its last checkpoint twice: the newest row wins.
  Short logs (a point every few steps) are smoothed less, so the curve keeps its start."""
  by_step = {r["step"]: r[key] for r in rows if key in r and np.isfinite(r[key])}
  if not by_step:
    return None
  steps, vals = (np.asarray(v, float) for v in zip(*sorted(by_step.items())))
  y = _smooth(vals, min(smooth, max(1, len(vals) // 8)))
  return steps[len(steps) - len(y) :], y


def loss_curves(
  panels: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
  path: str,
  key: str = "loss",
  smooth: int = 10,
) -> str:
  """One subplot per panel ({panel: {run: metrics.jsonl rows}}); one line per run of the
  training `key` against step (moving average over up to `smooth` logged points, fewer for
  short logs; the newest row per step when a resumed run logged a step twice). Runs named
  `<group>_s<seed>` share their group's color."""
  plt = _pyplot()
  panels = {p: runs for p, runs in panels.items() if runs}
  fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.6 * max(1, len(panels)), 3.6))
  axes = np.atleast_1d(axes)
  for ax, (panel, runs) in zip(axes, panels.items()):
    groups: dict[str, str] = {}
    for run, rows in runs.items():
      curve = train_curve(rows, key, smooth)
      if curve is None:
        continue
      steps, y = curve
      stem, _, seed = run.rpartition("_s")
      group = stem if stem and seed.isdigit() else run
      first = group not in groups
      color = groups.setdefault(group, PALETTE[len(groups) % len(PALETTE)])
      label = group if first else None
      ax.plot(steps, y, color=color, lw=1.2, alpha=0.8, label=label)
    ax.set_title(panel, fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel(f"train {key}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
  return _save(fig, path)


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """False- and true-positive rates over every threshold (ties advance together), from
  (0, 0) to (1, 1). Needs both classes present."""
  labels = np.asarray(labels, bool)
  order = np.argsort(-np.asarray(scores, float), kind="stable")
  s, y = np.asarray(scores, float)[order], labels[order]
  last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
  tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
  tpr = np.r_[0.0, tp / max(1, y.sum())]
  fpr = np.r_[0.0, fp / max(1, (~y).sum())]
  return fpr, tpr


def presence_roc(
  runs: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
  path: str,
  title: str,
) -> str:
  """One subplot per class; per run group ({group: [saved scores per seed]}) one ROC curve
  per seed in the group's color, labeled with the mean AUC over seeds."""
  plt = _pyplot()
  first = next(iter(runs.values()))[0]
  classes = [str(c) for c in first["classes"]]
  fig, axes = plt.subplots(1, len(classes), figsize=(3.6 * len(classes), 3.6))
  axes = np.atleast_1d(axes)
  for ci, (ax, cls) in enumerate(zip(axes, classes)):
    for gi, (group, seeds) in enumerate(runs.items()):
      color, aucs = PALETTE[gi % len(PALETTE)], []
      for saved in seeds:
        labels = np.asarray(saved["labels"])[:, ci]
        if labels.all() or not labels.any():
          continue
        fpr, tpr = roc_points(np.asarray(saved["scores"])[:, ci], labels)
        aucs.append(float(np.trapezoid(tpr, fpr)))
        ax.plot(fpr, tpr, color=color, lw=1, alpha=0.7)
      if aucs:
        ax.lines[-len(aucs)].set_label(f"{group} (AUC {np.mean(aucs):.2f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, alpha=0.5)
    ax.set_title(cls, fontsize=10)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_aspect("equal")
    ax.legend(fontsize=7, frameon=False, loc="lower right")
  fig.subplots_adjust(wspace=0.35)
  fig.suptitle(title, fontsize=10)
  return _save(fig, path)
