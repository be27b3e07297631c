"""Translator trainer: data crops, losses falling on a tiny overfit, resume equality, main."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import translator_cyclegan
from data_prep.demo_world import world as demo_world
from fusionrs_jax.core import metrics, records, sharding
from fusionrs_jax.data import translator as translator_data
from fusionrs_jax.evaluators import translation
from fusionrs_jax.models import cyclegan
from fusionrs_jax.trainers import translator

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("demo") / "demo_world.raw")
  demo_world.build_demo_world(out, num_train=16, num_val=4, num_test=8, image_size=32, seed=0)
  return out


def _config(demo_dir, **overrides):
  c = translator_cyclegan.get_config("size=tiny,runlocal=1")
  c.data.rgb_dir = c.data.ir_dir = c.eval.rgb_dir = c.eval.ref_ir_dir = demo_dir
  c.data.image_size, c.data.load_size = 16, 20
  c.async_checkpoints = False
  for key, value in overrides.items():
    target = c
    *path, leaf = key.split(".")
    for p in path:
      target = target[p]
    target[leaf] = value
  return c


def test_loader_yields_aligned_crops_in_range_and_is_deterministic(demo_dir):
  c = _config(demo_dir)
  c.data.load_size = 0
  first = next(translator_data.make_loader(c.data, local_batch=4, num_steps=2, seed=3))
  again = next(translator_data.make_loader(c.data, local_batch=4, num_steps=2, seed=3))
  assert first["rgb"].shape == (4, 16, 16, 3) and first["ir"].shape == (4, 16, 16, 1)
  assert first["rgb"].min() >= -1 and first["rgb"].max() <= 1
  np.testing.assert_array_equal(first["rgb"], again["rgb"])
  # Paired mode: the IR crop is cut from the same record and window as the RGB crop.
  rec = next(records.read_records(records.list_shards(demo_dir, "train")))
  assert rec.rgb and rec.ir and rec.ir_origin == "rendered"


def test_unpaired_loader_splits_positions_between_processes(demo_dir):
  c = _config(demo_dir, **{"data.paired": False, "data.hflip": False, "data.load_size": 0})
  a = next(
    translator_data.make_loader(
      c.data, local_batch=2, num_steps=1, seed=0, shard_index=0, shard_count=2
    )
  )
  b = next(
    translator_data.make_loader(
      c.data, local_batch=2, num_steps=1, seed=0, shard_index=1, shard_count=2
    )
  )
  assert not np.array_equal(a["rgb"], b["rgb"])


def test_losses_decrease_when_overfitting_one_batch(demo_dir):
  c = _config(demo_dir, **{"optim.lr": 2e-3, "optim.constant_frac": 1.0, "loss.paired": 10.0})
  model = cyclegan.build("tiny")
  tx = translator.make_optimizer(c.optim, 40)
  batch = next(translator_data.make_loader(c.data, local_batch=8, num_steps=1, seed=0))
  mesh = sharding.make_mesh({"data": -1})
  params = model.init(jax.random.PRNGKey(0), 16)
  state = {
    "params": params,
    "opt_state": tx.init(params),
    "step": jnp.zeros((), jnp.int32),
    "rng": jax.random.PRNGKey(1),
    "pool_ir": translator.gl.pool_init(4, (16, 16, 1)),
    "pool_rgb": translator.gl.pool_init(4, (16, 16, 3)),
  }
  step = jax.jit(
    lambda s, b: translator.train_step(s, b, model=model, tx=tx, loss_cfg=c.loss, paired=True)
  )
  placed = sharding.place_batch(batch, mesh)
  history = []
  for _ in range(40):
    state, logs = step(state, placed)
    history.append({k: float(v) for k, v in logs.items()})
  for key in ("cycle", "paired_l1", "g_total"):
    assert np.mean([h[key] for h in history[-5:]]) < 0.7 * np.mean([h[key] for h in history[:3]]), (
      key
    )
  assert all(np.isfinite(h["d_loss"]) for h in history)


def test_lr_is_constant_then_decays_linearly_to_zero(demo_dir):
  c = _config(demo_dir)
  sched = translator.lr_schedule(c.optim, 100)
  assert float(sched(0)) == float(sched(50)) == pytest.approx(2e-4)
  assert float(sched(75)) == pytest.approx(1e-4)
  assert float(sched(100)) == pytest.approx(0.0)


def test_resumed_run_matches_uninterrupted_run(demo_dir, tmp_path):
  c = _config(demo_dir, total_steps=4, checkpoint_every=2, sample_every=2, eval_every=4)
  full = translator.train_and_evaluate(c, str(tmp_path / "full"))
  # Interrupted: a 2-step run, then the same workdir continued to 4 steps.
  c2 = _config(demo_dir, total_steps=4, checkpoint_every=2, sample_every=2, eval_every=4)
  c2.total_steps = 2
  translator.train_and_evaluate(c2, str(tmp_path / "resumed"))
  c2.total_steps = 4
  resumed = translator.train_and_evaluate(c2, str(tmp_path / "resumed"))
  assert resumed["step"] == full["step"] == 4
  for key in ("train/g_total", "train/d_loss", "eval/generator/psnr"):
    assert resumed[key] == pytest.approx(full[key], rel=1e-5), key
  for key in ("eval/gray/psnr", "eval/inverted/ssim", "eval/generator/intensity_w1"):
    assert key in full
  grids = os.listdir(tmp_path / "full" / "images")
  assert "rgb_fakeir_recrgb_0000004.png" in grids
  assert metrics.read_jsonl(str(tmp_path / "full" / "metrics.jsonl"))


@pytest.mark.slow
def test_kid_on_siglip_ir_features_of_a_trained_run(tiny_siglip_run):
  _, workdir, _ = tiny_siglip_run
  features = translator.siglip_ir_features(workdir, batch_size=4)
  rng = np.random.default_rng(1)
  dark = [rng.uniform(0.0, 0.2, (40, 30, 1)).astype(np.float32) for _ in range(6)]
  bright = [rng.uniform(0.8, 1.0, (20, 20, 1)).astype(np.float32) for _ in range(6)]
  f_dark, f_bright = features(dark), features(bright)
  assert f_dark.shape == (6, 32) and np.allclose(np.linalg.norm(f_dark, axis=1), 1.0, atol=1e-5)
  # Same images give the same features, whatever the batch padding.
  np.testing.assert_allclose(features(dark[:3]), f_dark[:3], atol=1e-6)
  within = translation.kid(f_dark[:3], f_dark[3:], num_subsets=1)[0]
  across = translation.kid(f_dark, f_bright, num_subsets=1)[0]
  assert across > within


@pytest.mark.slow
def test_main_runs_two_steps_on_tiny(demo_dir, tmp_path):
  cmd = [
    sys.executable,
    "-m",
    "fusionrs_jax.main",
    "--config=configs/translator_cyclegan.py:size=tiny,runlocal=1",
    f"--workdir={tmp_path / 'w'}",
    "--config.total_steps=2",
    f"--config.data.rgb_dir={demo_dir}",
    f"--config.data.ir_dir={demo_dir}",
    f"--config.eval.rgb_dir={demo_dir}",
    f"--config.eval.ref_ir_dir={demo_dir}",
  ]
  env = {
    **os.environ,
    "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
    "JAX_PLATFORMS": "cpu",
  }
  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert os.path.isdir(tmp_path / "w" / "checkpoints" / "2")
