"""SigLIP fine-tuning from a transformers SiglipModel folder with the transfer preset: the
config follows the folder (tokenizer) and the run starts at exactly the folder's weights."""

import os
import shutil

import jax
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from configs import siglip_ir
from fusionrs_jax.cli import main
from fusionrs_jax.core import checkpoint
from fusionrs_jax.models import scan, siglip
from fusionrs_jax.models.hf import siglip as hf_siglip
from tests.conftest import tiny_config


def test_transfer_preset_takes_the_siglip2_shapes_and_the_folders_tokenizer():
  config = siglip_ir.get_config("size=So400m,recipe=transfer")
  config.init_from = "/weights/siglip2-so400m-patch14-224"
  assert config.data.tokenizer == "/weights/siglip2-so400m-patch14-224/tokenizer.model"
  assert (config.data.vocab_size, config.model.text_len) == (256_000, 64)
  assert (config.batch_size, config.total_steps, config.optim.warmup_steps) == (512, 5000, 150)
  o = config.optim
  assert (o.lr, o.b2, o.weight_decay, o.grad_clip, o.end_lr_frac) == (1e-5, 0.999, 0.0, 1.0, 0.0)
  model = siglip.from_config(config)
  assert (model.vocab_size, model.text_len, model.width, model.patch_size) == (
    256_000,
    64,
    1152,
    14,
  )


@pytest.mark.slow  # the real main for one step and its closing eval
def test_run_starts_at_the_folders_weights(tiny_dataset, tmp_path):
  folder = tmp_path / "siglip_folder"
  config = tiny_config(
    "siglip_ir",
    "size=tiny,runlocal=1,recipe=transfer",
    tiny_dataset,
    init_from=str(folder),
    total_steps=1,
    **{"optim.lr": 0.0, "model.scan_layers": True},
  )
  model = siglip.from_config(config)
  unscanned = model.clone(scan_layers=False)
  shapes = jax.eval_shape(unscanned.init, jax.random.key(0), **siglip.dummy_inputs(model))
  rng = np.random.RandomState(0)
  params = jax.tree.map(
    lambda x: rng.standard_normal(x.shape).astype(np.float32) * 0.1,
    hf_siglip.plain_params(shapes),
  )
  hp = {k: getattr(model, k) for k in hf_siglip.HP_KEYS}
  hf_siglip.save_hf_siglip(params, hp, str(folder))
  shutil.copy(os.path.join(tiny_dataset, "tokenizer.model"), folder / "tokenizer.model")
  assert config.data.tokenizer == str(folder / "tokenizer.model")

  main.run(config, str(tmp_path / "run"))
  _, raw = checkpoint.run_params(str(tmp_path / "run"))
  got = hf_siglip.plain_params(scan.unscan_params(raw))
  assert jax.tree.structure(got) == jax.tree.structure(params)
  jax.tree.map(np.testing.assert_array_equal, got, params)


def test_folder_of_another_shape_is_one_error_naming_the_parameters(tiny_dataset, tmp_path):
  from fusionrs_jax.core import sharding
  from fusionrs_jax.core.errors import UserError
  from fusionrs_jax.trainers import siglip as siglip_trainer

  def zeros(model):
    shapes = jax.eval_shape(model.init, jax.random.key(0), **siglip.dummy_inputs(model))
    return jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), hf_siglip.plain_params(shapes))

  config = tiny_config("siglip_ir", "size=tiny,recipe=transfer", tiny_dataset)
  model = siglip.from_config(config)  # vocabulary 512
  other = model.clone(vocab_size=600)
  hf_siglip.save_hf_siglip(
    zeros(other), {k: getattr(other, k) for k in hf_siglip.HP_KEYS}, str(tmp_path)
  )
  state = {"params": {"params": zeros(model)}}
  repl = sharding.replicated(jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",)))
  config.init_from = str(tmp_path)
  with pytest.raises(UserError, match=r"token_embedding.*\(600, 32\).*\(512, 32\)"):
    siglip_trainer._maybe_init_from(config, model, state, jax.tree.map(lambda _: repl, state))
