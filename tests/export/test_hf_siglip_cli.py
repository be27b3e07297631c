"""Export CLI end to end: a run trained by the real main -> SiglipModel directory that
transformers loads with the same embeddings, logits, tokenizer ids and pixels; import back."""

import io
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from fusionrs_jax.core import checkpoint, records
from fusionrs_jax.data import input_pipeline
from fusionrs_jax.models import siglip
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _cli(*flags):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  return subprocess.run(
    [sys.executable, "-m", "fusionrs_jax.export.hf_siglip", *flags],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    check=False,
  )


@pytest.fixture(scope="module")
def run(tiny_siglip_run, tmp_path_factory):
  """(config, workdir, exported dir) of the shared tiny SigLIP run trained by the real main."""
  config, workdir, _ = tiny_siglip_run
  out = str(tmp_path_factory.mktemp("exported") / "hf")
  proc = _cli(f"--checkpoint={workdir}", f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return config, workdir, out


def _params_in(ckpt_dir):
  ckpt = checkpoint.Checkpointer(ckpt_dir, save_every=1, async_save=False)
  raw = ckpt.restore_raw()
  ckpt.close()
  return jax.tree.map(np.asarray, raw["params"])  # {"params": ...}


def _test_split(data_dir, n=8):
  recs = list(records.read_records(records.list_shards(data_dir, "test")))[:n]
  return recs, [r.captions[0] for r in recs]


def test_exported_model_gives_same_embeddings_and_logits_as_jax(run):
  config, workdir, out = run
  assert {
    "config.json",
    "model.safetensors",
    "tokenizer.model",
    "tokenizer_config.json",
    "preprocessor_config.json",
  } <= set(os.listdir(out))
  model = siglip.from_config(config)
  params = _params_in(os.path.join(workdir, "checkpoints"))
  recs, captions = _test_split(config.data.dir)
  tok = input_pipeline.Tokenizer(os.path.join(config.data.dir, "tokenizer.model"))
  tokens = tok.encode(captions, model.text_len)
  pre = input_pipeline.Preprocess(
    image_size=model.image_size, tokenizer=tok, text_len=model.text_len, caption_fields=()
  )
  images = np.stack([pre((i, records.encode(r)), None)["rgb"] for i, r in enumerate(recs)])
  ours = model.apply(params, rgb=images, text=tokens)
  logits = ours["t"] * ours["rgb"] @ ours["text"].T + ours["b"]

  hf = transformers.SiglipModel.from_pretrained(out).eval()
  pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    got = hf(input_ids=torch.from_numpy(tokens).long(), pixel_values=pixels)
  np.testing.assert_allclose(got.image_embeds.numpy(), ours["rgb"], atol=1e-4)
  np.testing.assert_allclose(got.text_embeds.numpy(), ours["text"], atol=1e-4)
  np.testing.assert_allclose(got.logits_per_image.numpy(), logits, atol=1e-4)


def test_exported_tokenizer_and_image_processor_match_the_input_pipeline(run):
  config, _, out = run
  model = siglip.from_config(config)
  tok = input_pipeline.Tokenizer(os.path.join(config.data.dir, "tokenizer.model"))
  hf_tok = transformers.AutoTokenizer.from_pretrained(out)
  assert isinstance(hf_tok, transformers.GemmaTokenizer)
  assert len(hf_tok) == tok.vocab_size == config.data.vocab_size
  recs, captions = _test_split(config.data.dir)
  # Include a caption longer than text_len: both truncate keeping <eos> last.
  texts = captions + ["IR: warm roofs, 37°C " * 8, "Tab\tand  spaces ."]
  got = hf_tok(texts, padding="max_length", truncation=True, max_length=model.text_len)
  np.testing.assert_array_equal(np.asarray(got["input_ids"]), tok.encode(texts, model.text_len))

  processor = transformers.AutoImageProcessor.from_pretrained(out)
  pre = input_pipeline.Preprocess(
    image_size=model.image_size, tokenizer=tok, text_len=model.text_len, caption_fields=()
  )
  for i, r in enumerate(recs[:3]):
    ours = pre((i, records.encode(r)), None)["rgb"]
    theirs = processor(Image.open(io.BytesIO(r.rgb)), return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(theirs.transpose(1, 2, 0), ours, atol=1e-5)


def test_import_writes_orbax_checkpoint_equal_to_exported_weights(run, tmp_path):
  _, workdir, out = run
  ckpt_dir = str(tmp_path / "imported")
  proc = _cli(f"--import_hf={out}", f"--out={ckpt_dir}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  imported = _params_in(ckpt_dir)
  expected = _params_in(os.path.join(workdir, "checkpoints"))
  assert jax.tree.structure(imported) == jax.tree.structure(expected)
  jax.tree.map(np.testing.assert_array_equal, imported, expected)
  # The trainer's --config.init_from reads this folder the same way.
  assert os.path.isdir(os.path.join(ckpt_dir, "0"))
