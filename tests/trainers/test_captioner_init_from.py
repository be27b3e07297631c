"""The captioner starts from public-format weights: --config.init_from=<PaliGemma folder>
(tokenized with the folder's tokenizer.model) and config.model.image_encoder_init=<SigLIP
folder>; the run's first step starts at exactly the imported weights, in the scanned layout."""

import os
import shutil

import jax
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from fusionrs_jax.cli import main
from fusionrs_jax.core import checkpoint
from fusionrs_jax.core.errors import UserError
from fusionrs_jax.models import scan
from fusionrs_jax.models.hf import paligemma as hf_paligemma
from fusionrs_jax.models.hf import siglip as hf_siglip
from fusionrs_jax.trainers import captioner
from tests.conftest import tiny_config
from tests.models import hf_tiny


@pytest.fixture(scope="module")
def folders(tiny_dataset, tmp_path_factory):
  """A PaliGemma folder of the captioner's tiny sizes (vocab 512 and the tiny dataset's
  tokenizer.model, as a public folder carries its own) and a SiglipModel folder."""
  pg = tmp_path_factory.mktemp("pg")
  hf_tiny.paligemma(pg, vocab=512, heads=2, kv_heads=1, head_dim=16)
  shutil.copy(os.path.join(tiny_dataset, "tokenizer.model"), pg / "tokenizer.model")
  sg = tmp_path_factory.mktemp("siglip")
  hf_tiny.siglip(sg)
  return str(pg), str(sg)


def _config(tiny_dataset, pg, **overrides):
  """The transfer preset at the tiny size: data.tokenizer follows init_from."""
  return tiny_config(
    "captioner_dual",
    "size=tiny,runlocal=1,recipe=transfer",
    tiny_dataset,
    init_from=pg,
    **overrides,
  )


def test_transfer_preset_is_the_paligemma_recipe_and_reads_the_folders_tokenizer():
  from configs import captioner_dual

  config = captioner_dual.get_config("size=paligemma_3b,recipe=transfer")
  config.init_from = "/weights/paligemma-3b-pt-224"
  assert config.data.tokenizer == "/weights/paligemma-3b-pt-224/tokenizer.model"
  assert config.data.vocab_size == 257_216 and config.batch_size == 256
  o = config.optim
  assert (o.lr, o.b2, o.weight_decay, o.grad_clip, o.end_lr_frac) == (1e-5, 0.999, 0.0, 1.0, 0.0)
  assert o.warmup_steps == round(0.05 * config.total_steps)
  assert not config.model.freeze_image_encoder and not config.data.augment
  with pytest.raises(UserError, match="give --config.init_from"):
    captioner.check_init_from(captioner_dual.get_config("size=tiny,recipe=transfer"))


@pytest.mark.slow  # the real main for one step and its closing eval
def test_run_starts_at_the_imported_paligemma_and_siglip_weights(tiny_dataset, folders, tmp_path):
  pg, sg = folders
  # lr 0: the step-1 checkpoint holds the weights the run started from.
  config = _config(
    tiny_dataset,
    pg,
    total_steps=1,
    **{
      "optim.lr": 0.0,
      "model.scan_layers": True,
      "model.image_encoder_init": sg,
      # The shortest eval the run ends with.
      "eval.tasks": ("caption",),
      "eval.max_records": 2,
      "eval.max_decode_len": 2,
    },
  )
  main.run(config, str(tmp_path))
  _, raw = checkpoint.run_params(str(tmp_path))
  assert "layers" in raw["params"]["llm"]  # trained in the scanned layout
  got = hf_siglip.plain_params(scan.unscan_params(raw))
  want, _, _ = hf_paligemma.load_hf_paligemma(pg)
  want["img"], _ = hf_paligemma.load_hf_vision_tower(sg)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  jax.tree.map(np.testing.assert_array_equal, got, want)


def test_folder_the_run_cannot_use_is_one_clear_error(tiny_dataset, folders, tmp_path):
  pg, sg = folders
  other_tok = tmp_path / "other.model"
  other_tok.write_bytes(b"not the folder's vocabulary")
  with pytest.raises(UserError, match=r"set --config.data.tokenizer=.*pg.*/tokenizer.model"):
    captioner.check_init_from(_config(tiny_dataset, pg, **{"data.tokenizer": str(other_tok)}))
  bare = tmp_path / "bare"
  shutil.copytree(pg, bare, ignore=shutil.ignore_patterns("tokenizer.model"))
  with pytest.raises(UserError, match="has no tokenizer.model"):
    captioner.check_init_from(_config(tiny_dataset, str(bare)))
  with pytest.raises(UserError, match="'siglip' model.*image_encoder_init"):
    captioner.check_init_from(_config(tiny_dataset, sg))
  other = _config(tiny_dataset, pg, **{"data.vocab_size": 600})
  with pytest.raises(UserError, match="llm vocab_size: 512 in the folder, 600 in the config"):
    captioner.check_init_from(other)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_image_encoder_init_reads_a_siglip_folder_or_this_projects_checkpoint(
  tiny_dataset, folders, tmp_path, scan_layers
):
  from fusionrs_jax.core import sharding
  from fusionrs_jax.export import hf_siglip as export_siglip
  from fusionrs_jax.models import captioner as captioner_model

  _, sg = folders
  orbax = str(tmp_path / "orbax")
  export_siglip.import_hf(sg, orbax)  # the Orbax layout a SigLIP run of this project saves
  config = _config(tiny_dataset, "", **{"model.scan_layers": scan_layers})
  model = captioner_model.from_config(config)
  shapes = jax.eval_shape(model.init, jax.random.key(0), **captioner_model.dummy_inputs(model))
  params = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), hf_siglip.plain_params(shapes))
  repl = sharding.replicated(jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",)))
  state = {"params": {"params": params}}
  shardings = jax.tree.map(lambda _: repl, state)
  want, _ = hf_paligemma.load_hf_vision_tower(sg)
  want = scan.scan_params(want) if scan_layers else want
  for source in (sg, orbax):
    got = captioner.init_image_encoder(source, state, shardings, config, model)
    img = got["params"]["params"]["img"]
    assert jax.tree.structure(img) == jax.tree.structure(want)
    jax.tree.map(np.testing.assert_array_equal, img, want)
    assert not np.any(got["params"]["params"]["img_head"]["kernel"])  # only the tower moved
