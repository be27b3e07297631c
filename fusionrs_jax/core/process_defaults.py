"""Process-wide settings every command applies when it starts (command.parse_flags), before
JAX starts a backend: XLA:CPU flags and how glibc's malloc reuses memory. Both are about
CPU speed only; neither changes what a program computes beyond float reassociation.

XLA flags. XLA:CPU (jaxlib 0.10.2) hands each convolution to YNNPACK by default (a
`__ynn_fusion` in the optimised HLO). On the translator's convolutions YNNPACK ran 2-5x
slower than XLA's own (Eigen) convolution here: the small generator's 3x3 64->64 residual
conv at 64x64, batch 16, took 138 ms through YNNPACK and 30 ms without it (torch 2.13: 25 ms).
Removing only the `individual_convolution` fusion type keeps YNNPACK for dots and reductions:
turning YNNPACK off entirely left the SigLIP steps within noise and made the translator step
slower (6.8 vs 5.6 s). Each default is
appended to $XLA_FLAGS unless that variable already sets the same flag, so a user's own
setting wins (e.g. `--xla_cpu_experimental_ynn_fusion_type=individual_convolution` restores
JAX's choice). XLA reads $XLA_FLAGS once, when the first backend starts.

malloc. XLA:CPU allocates each step's temporaries (one buffer per program, 2.4 GB for the
small translator step at batch 8) and the convolutions' scratch (dozens of 30-140 MB blocks)
with malloc on every call. glibc serves blocks over 32 MB with a fresh mmap and returns them
on free, so every step page-faulted its memory in again: ~700k minor faults and 2-5 s of
kernel time per 6 s translator step, worse when another job (torch, in the benchmarks) freed
memory in between. With mmap off (M_MMAP_MAX=0), no trimming of the heap top and one arena,
blocks come from the heap and are reused: zero faults from the second step on. The cost is
that a process keeps its peak heap until it exits, which a training job does anyway. Set
FUSIONRS_KEEP_MALLOC=1 to leave malloc as it is (e.g. a long-lived notebook kernel).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from collections.abc import MutableMapping

# flag name -> value. The leading "-" removes one fusion type from XLA's default set.
XLA_DEFAULTS = {"--xla_cpu_experimental_ynn_fusion_type": "-individual_convolution"}
# glibc mallopt parameters (malloc.h) and the values set.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# glibc converts the int to size_t, so -1 is the largest threshold: the heap is never trimmed.
MALLOC_DEFAULTS = {_M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: -1, _M_ARENA_MAX: 1}
KEEP_MALLOC_ENV = "FUSIONRS_KEEP_MALLOC"


def with_xla_defaults(xla_flags: str) -> str:
  """`xla_flags` plus each XLA_DEFAULTS flag it does not set already."""
  present = {token.split("=", 1)[0] for token in xla_flags.split()}
  added = [f"{name}={value}" for name, value in XLA_DEFAULTS.items() if name not in present]
  return " ".join([*xla_flags.split(), *added])


def apply_xla_flags(environ: MutableMapping[str, str] = os.environ) -> str:
  """Adds XLA_DEFAULTS to environ["XLA_FLAGS"] (see with_xla_defaults); returns the value."""
  environ["XLA_FLAGS"] = with_xla_defaults(environ.get("XLA_FLAGS", ""))
  return environ["XLA_FLAGS"]


def apply_malloc() -> bool:
  """Sets MALLOC_DEFAULTS with glibc's mallopt; False (and nothing changed) off glibc or when
  $FUSIONRS_KEEP_MALLOC is set."""
  if os.environ.get(KEEP_MALLOC_ENV) or platform.libc_ver()[0] != "glibc":
    return False
  libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  return all(libc.mallopt(param, value) == 1 for param, value in MALLOC_DEFAULTS.items())


def apply() -> None:
  """Both of the above: call before JAX starts a backend (command.parse_flags does)."""
  apply_xla_flags()
  apply_malloc()
