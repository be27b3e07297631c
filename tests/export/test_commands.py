"""The export commands on run folders: a user mistake is one `error:` line and exit 2; a
translator or captioner run folder becomes the torch / transformers files it should."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from fusionrs_jax.core import checkpoint, records
from fusionrs_jax.export import torch_translator
from fusionrs_jax.models import captioner, cyclegan
from fusionrs_jax.models.hf import paligemma as hf_paligemma
from tests.conftest import REPO, tiny_config

pytestmark = pytest.mark.slow


def _cli(module, *flags):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  return subprocess.run(
    [sys.executable, "-m", f"fusionrs_jax.export.{module}", *flags],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    check=False,
  )


def _fake_run(workdir, config, params):
  """A run folder as a trainer leaves it: config.json + checkpoints/0 with state["params"]."""
  os.makedirs(workdir, exist_ok=True)
  records.write_json_atomic(os.path.join(workdir, "config.json"), config)
  ckpt = checkpoint.Checkpointer(
    os.path.join(workdir, "checkpoints"), save_every=1, async_save=False
  )
  ckpt.save(0, {"params": params}, force=True)
  ckpt.close()


@pytest.mark.parametrize(
  "module, flags, line",
  [
    ("hf_siglip", ["--checkpoint={tmp}", "--out={tmp}/o"], "config.json not found"),
    ("hf_siglip", ["--out={tmp}/o"], "give exactly one of --checkpoint"),
    ("hf_paligemma", ["--workdir={tmp}", "--out={tmp}/o"], "config.json not found"),
    ("hf_paligemma", ["--checkpoint={tmp}", "--out={tmp}/o"], "Unknown command line flag"),
    ("torch_translator", ["--checkpoint={tmp}"], "config.json not found"),
    ("torch_translator", [], "give --checkpoint"),
  ],
)
def test_user_mistake_is_one_error_line_and_exit_2(module, flags, line, tmp_path):
  proc = _cli(module, *(f.format(tmp=tmp_path) for f in flags))
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and line in lines[0], proc.stderr


def test_run_of_another_family_is_named(tmp_path):
  _fake_run(str(tmp_path), {"trainer": "siglip"}, {"x": np.zeros(2, np.float32)})
  proc = _cli("torch_translator", f"--checkpoint={tmp_path}/checkpoints")
  assert proc.returncode == 2
  assert proc.stderr.strip() == f"error: {tmp_path} is a 'siglip' run, not a translator run"


def test_translator_run_exports_a_torch_generator_with_the_same_output(tmp_path):
  gan = cyclegan.build("tiny")
  params = jax.tree.map(np.asarray, gan.init(jax.random.PRNGKey(0), 16))
  workdir = str(tmp_path / "run")
  _fake_run(workdir, {"trainer": "translator", "model": {"size": "tiny"}}, params)
  out = str(tmp_path / "g.pt")
  proc = _cli("torch_translator", f"--checkpoint={workdir}", f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-3000:]

  saved = torch.load(out)
  assert saved["provenance"] == {
    "checkpoint": os.path.join(workdir, "checkpoints"),
    "step": 0,
    "size": "tiny",
  }
  model = torch_translator.generator_from_flax(params["rgb_to_ir"])
  model.load_state_dict(saved["state_dict"], strict=True)
  x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  want = np.asarray(gan.rgb_to_ir.apply({"params": params["rgb_to_ir"]}, x))
  with torch.no_grad():
    got = model(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_captioner_run_exports_paligemma_weights_and_processor(tiny_dataset, tmp_path):
  config = tiny_config("captioner_dual", "size=tiny", tiny_dataset)
  model = captioner.from_config(config)
  variables = nn.meta.unbox(
    jax.jit(model.init)(jax.random.PRNGKey(0), **captioner.dummy_inputs(model))
  )
  variables = jax.tree.map(np.asarray, variables)
  workdir = str(tmp_path / "run")
  _fake_run(workdir, json.loads(config.to_json_best_effort()), variables)
  out = str(tmp_path / "pg")
  proc = _cli("hf_paligemma", f"--workdir={workdir}", f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
    "out": out,
    "inputs": model.inputs,
    "step": 0,
  }

  hf = transformers.PaliGemmaForConditionalGeneration.from_pretrained(out)
  want = hf_paligemma.to_hf_state_dict(variables, model.vision_hp["depth"], model.llm_hp["depth"])
  for key, value in hf.state_dict().items():
    np.testing.assert_array_equal(value.numpy(), want[key], err_msg=key)
  processor = transformers.PaliGemmaProcessor.from_pretrained(out)
  assert processor.image_token_id == hf.config.image_token_index >= model.llm_hp["vocab_size"]
