"""Seed statistics for the pipeline's claims: mean/std, the two-standard-error verdict,
per-run retrieval summaries, and the machine a run was made on."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
  x = np.asarray(values, np.float64)
  return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def compare(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
  """Is mean(a) above mean(b) beyond seed noise? The noise is two standard errors of the
  difference of means; with one value per side there is no noise estimate."""
  (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
  diff = ma - mb
  if len(a) < 2 or len(b) < 2:
    return {
      "diff": diff,
      "noise": None,
      "verdict": "higher (1 seed, no noise estimate)"
      if diff > 0
      else "not higher (1 seed, no noise estimate)",
    }
  noise = 2.0 * float(np.sqrt(sa**2 / len(a) + sb**2 / len(b)))
  if diff > noise:
    verdict = "holds"
  elif diff < -noise:
    verdict = "reversed"
  else:
    verdict = "within noise"
  return {"diff": diff, "noise": noise, "verdict": verdict}


# Retrieval summaries: mean of R@1/5/10 over the listed directions.
RETRIEVAL_GROUPS = {
  "mR": None,  # the trainer's own six-direction mean
  "IR->text": ("ir2text",),
  "text->IR": ("text2ir",),
  "RGB->text": ("rgb2text",),
  "text->RGB": ("text2rgb",),
  "RGB<->IR": ("rgb2ir", "ir2rgb"),
  "IR<->IR-aware": ("ir2irtext", "irtext2ir"),
}


def retrieval_summary(
  metrics: dict[str, float], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
  out = {}
  for name, dirs in RETRIEVAL_GROUPS.items():
    if dirs is None:
      out[name] = float(metrics["mR"])
    else:
      out[name] = float(np.mean([metrics[f"{d}/R@{k}"] for d in dirs for k in ks]))
  return out


def environment() -> dict[str, Any]:
  """Where and on what the report was produced."""

  try:
    commit = subprocess.run(
      ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    commit = "unknown"
  return {
    "commit": commit,
    "python": sys.version.split()[0],
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "devices": jax.device_count(),
    "cpus": os.cpu_count(),
    "machine": platform.machine(),
  }
