"""What every command sets at start (fusionrs_jax/core/process_defaults.py)."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fusionrs_jax.core import process_defaults

YNN = "--xla_cpu_experimental_ynn_fusion_type"
NO_YNN_CONV = f"{YNN}=-individual_convolution"


def test_xla_defaults_are_appended_and_a_users_own_setting_wins():
  assert process_defaults.with_xla_defaults("") == NO_YNN_CONV
  flags = process_defaults.with_xla_defaults("--xla_force_host_platform_device_count=8")
  assert flags.split() == ["--xla_force_host_platform_device_count=8", NO_YNN_CONV]
  own = f"{YNN}=individual_convolution --xla_force_host_platform_device_count=2"
  assert process_defaults.with_xla_defaults(own) == own
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  expected = f"--xla_force_host_platform_device_count=4 {NO_YNN_CONV}"
  assert process_defaults.apply_xla_flags(env) == expected
  assert process_defaults.apply_xla_flags(env) == expected  # idempotent


def test_convolutions_compile_without_ynnpack_and_match_a_reference():
  """The test session applies the defaults (conftest.py), as commands do: this jaxlib must
  accept the flag and compile a conv without YNNPACK, to the same values."""
  assert NO_YNN_CONV in os.environ["XLA_FLAGS"]
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 10, 10, 8), np.float32)
  w = rng.standard_normal((3, 3, 8, 16), np.float32)
  conv = jax.jit(
    lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
  )
  hlo = conv.lower(x, w).compile().as_text()
  assert "convolution(" in hlo and "__ynn_fusion" not in hlo
  ref = np.zeros((2, 8, 8, 16), np.float64)
  for dy in range(3):
    for dx in range(3):
      ref += np.einsum("bhwc,co->bhwo", x[:, dy : dy + 8, dx : dx + 8], w[dy, dx])
  np.testing.assert_allclose(np.asarray(conv(jnp.asarray(x), jnp.asarray(w))), ref, atol=1e-4)


# Mallocs and frees a 96 MB block 4 times, touching every page; prints the minor page faults
# of the last 3 rounds. glibc by default maps such a block afresh each time (~24.6k faults a
# round); with the project's settings the freed block is reused.
_FAULTS = """
import ctypes, resource, sys
from fusionrs_jax.core import process_defaults
print(process_defaults.apply_malloc(), file=sys.stderr)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 96 << 20
for i in range(4):
  if i == 1:
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  block = libc.malloc(size)
  ctypes.memset(block, 1, size)
  libc.free(block)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_malloc_settings_stop_large_blocks_faulting_in_every_time():
  def faults(**env) -> int:
    run_env = {k: v for k, v in os.environ.items() if k != process_defaults.KEEP_MALLOC_ENV}
    out = subprocess.run(
      [sys.executable, "-c", _FAULTS], env={**run_env, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout)

  pages = 3 * (96 << 20) // 4096
  assert faults(**{process_defaults.KEEP_MALLOC_ENV: "1"}) > 0.9 * pages
  assert faults() < 0.05 * pages
