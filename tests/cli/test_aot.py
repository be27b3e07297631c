"""`python -m fusionrs_jax.cli.aot`: each trainer's real train step compiles for a small TPU
topology on this CPU host (libtpu, the `tpu` extra), and a program that cannot fit in HBM is
reported as not fitting. These compile with XLA's TPU compiler: no TPU is needed."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

# The tpu extra is part of the CI install (.ci/run); a missing libtpu is a failure, not a skip.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("xla_cache"))


def _aot(cache_dir, *args):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  return subprocess.run(
    [sys.executable, "-m", "fusionrs_jax.cli.aot", f"--cache_dir={cache_dir}", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    check=False,
  )


@pytest.mark.parametrize(
  "config",
  [
    "configs/siglip_ir.py:size=tiny",
    "configs/captioner_dual.py:size=tiny",
    "configs/translator_cyclegan.py:size=tiny",
  ],
)
def test_tiny_preset_of_each_trainer_compiles_and_fits_on_v5e_2x2(cache_dir, tmp_path, config):
  out = tmp_path / "aot.json"
  proc = _aot(cache_dir, f"--config={config}", "--topology=v5e:2x2", f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report == json.loads(proc.stdout)
  assert report["fits"] is True and report["device_kind"] == "TPU v5 lite"
  assert report["chips"] == 4 and report["libtpu_topology"] == "v5e:2x2"
  assert report["per_chip_batch"] * 4 == report["global_batch"]
  assert 0 < report["peak_bytes"] < report["hbm_capacity_bytes"]
  assert report["flops_per_chip_per_step"] > 0 and report["params"] > 0


def test_a_second_check_of_the_same_program_reads_the_report_cache(cache_dir, tmp_path):
  """The siglip case above compiled into this module's cache: the same program now comes from
  it; a different program (another batch size) is compiled."""
  args = ("--config=configs/siglip_ir.py:size=tiny", "--topology=v5e:2x2")
  fresh = json.loads(_aot(str(tmp_path / "fresh"), *args).stdout)
  _aot(cache_dir, *args)  # already cached when the case above ran first
  cached = json.loads(_aot(cache_dir, *args).stdout)
  assert cached.pop("cached") is True and "cached" not in fresh
  for key in ("peak_bytes", "temp_bytes", "argument_bytes", "flops_per_chip_per_step", "fits"):
    assert cached[key] == fresh[key], key
  other = json.loads(_aot(cache_dir, *args, "--config.batch_size=32").stdout)
  assert "cached" not in other and other["per_chip_batch"] == 8


def test_a_program_too_big_for_hbm_does_not_fit(cache_dir):
  """A million 32 px examples per step: the compiler's own out-of-memory is the answer."""
  proc = _aot(
    cache_dir,
    "--config=configs/siglip_ir.py:size=tiny",
    "--config.batch_size=1048576",
    "--topology=v5e:2x2",
  )
  assert proc.returncode == 1, proc.stderr[-3000:]
  report = json.loads(proc.stdout)
  assert report["fits"] is False and "RESOURCE_EXHAUSTED" in report["reason"]
  assert proc.stderr.strip().splitlines()[-1].startswith("does not fit: RESOURCE_EXHAUSTED")


def test_headroom_rule_can_reject_a_program_that_compiles(cache_dir):
  proc = _aot(
    cache_dir, "--config=configs/siglip_ir.py:size=tiny", "--topology=v5e:2x2", "--min_headroom=1.0"
  )
  assert proc.returncode == 1
  report = json.loads(proc.stdout)
  assert report["fits"] is False and "free (< 100%)" in report["reason"]


def test_unknown_topology_is_one_line(cache_dir):
  proc = _aot(cache_dir, "--config=configs/siglip_ir.py:size=tiny", "--topology=v9x-7")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
    "error: --topology=v9x-7: expected e.g. v5e-256, v4-128, v5p-64 or v5e:2x2"
  ]
