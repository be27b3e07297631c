"""The --quick modes of benchmarks/translator.py and benchmarks/siglip_step.py run as the README
shows them and write JSON with the expected keys, positive rates, and JAX outputs that agree
with the same computation in PyTorch."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_quick(module: str, out: str, *extra: str) -> dict:
  # One real CPU device, as a user runs it (the test session's 8 fake devices would time
  # a sharded step instead).
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, "-m", module, "--quick", f"--out={out}", *extra],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out) as f:
    return json.load(f)


@pytest.mark.slow
def test_translator_quick_reports_rates_and_matches_torch(tmp_path):
  result = _run_quick("benchmarks.translator", str(tmp_path / "translator.json"))
  assert result["conv_peak"]["gflop_per_sec"] > 0
  (size,) = result["sizes"]
  assert size["size"] == "tiny" and size["image_size"] == 32
  train = size["train"]
  assert train["steps_per_sec"] > 0 and train["images_per_sec"] > 0
  assert train["gflop_per_step_xla"] > 0 and train["gflop_per_sec"] > 0
  # GFLOP/s count direct-conv work (at 32 px the residual convs are direct: the same count).
  assert train["gflop_per_step_direct"] == pytest.approx(train["gflop_per_step_xla"], rel=0.05)
  assert size["translate"]["gflop_per_batch_direct"] > 0
  # The torch train step (same weights, batch, losses) starts from the same loss.
  assert train[train["torch_best"]]["steps_per_sec"] > 0 and train["jax_over_torch_speed"] > 0
  assert train["first_loss_equal"], train["first_loss"]
  # Page faults and kernel time of every timed step, per contender.
  for rate in (train, train[train["torch_best"]]):  # JAX's fields sit at the top
    assert len(rate["minor_faults_all"]) == len(rate["sec_all"]) == size["rounds"]
    assert all(f >= 0 for f in rate["minor_faults_all"])
    assert len(rate["sys_sec_all"]) == size["rounds"]
  translate = size["translate"]
  for name in ("jax", translate["torch_best"]):
    assert translate[name]["images_per_sec"] > 0
    assert translate[name]["fraction_of_conv_peak"] > 0
  assert translate["jax_over_torch_speed"] > 0
  assert translate["outputs_equal_torch"], translate["max_abs_diff_vs_torch"]


@pytest.mark.slow
def test_siglip_step_quick_reports_both_variants_and_profile(tmp_path):
  result = _run_quick(
    "benchmarks.siglip_step", str(tmp_path / "siglip.json"), "--profile", "--noloss_memory"
  )
  cases = {(c["preset"], c["variant"]): c for c in result["cases"]}
  assert set(cases) == {("tiny", "rgb_only"), ("tiny", "trimodal")}
  for case in cases.values():
    for name in ("jax", case["torch_best"]):
      assert case[name]["examples_per_sec"] > 0 and case[name]["gflop_per_sec"] > 0
      assert len(case[name]["sec_per_step_all"]) == case["rounds"]
    assert case["jax_over_torch_speed"] > 0
    # Same weights and batch: the first step's loss agrees to float32 tolerance.
    assert case["first_loss_equal"], case["first_loss"]
    profile = case["profile"]
    assert {"attention_proj", "attention_core", "mlp", "layer_norm", "optimizer"} <= set(
      profile["ms_per_step"]
    )
    assert abs(sum(profile["share"].values()) - 1) < 0.01
    assert profile["share"].get("unattributed", 0) < 0.2
