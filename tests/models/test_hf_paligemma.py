"""Captioner -> transformers PaliGemma: logits agree within 1e-4 and greedy decoding agrees
token for token, with two images (RGB, IR) per prompt."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from fusionrs_jax.models import (
  captioner,
  decoding,
  gemma,
  siglip,
)
from fusionrs_jax.models.hf import paligemma as hf_paligemma

V = 48


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  llm = dict(gemma.gemma_preset("tiny"), num_heads=4, num_kv_heads=2, head_dim=8)
  model = captioner.captioner_from_presets(siglip.siglip_preset("tiny"), llm, V)
  params = gemma.nn.unbox(
    jax.jit(model.init)(jax.random.PRNGKey(0), **captioner.dummy_inputs(model))
  )
  # Non-zero norm scales and biases so every parameter matters in the comparison.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(
    tree, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  )
  out = str(tmp_path_factory.mktemp("pg"))
  hf_paligemma.save_hf_paligemma(params, model, out)
  torch_model = transformers.PaliGemmaForConditionalGeneration.from_pretrained(out).eval()
  return model, params, torch_model


def _inputs(seed, b=2):
  rng = np.random.RandomState(seed)
  rgb = rng.uniform(-1, 1, (b, 32, 32, 3)).astype(np.float32)
  ir = rng.uniform(-1, 1, (b, 32, 32, 1)).astype(np.float32)
  prompt = np.array([[2, 10, 11, 4], [2, 12, 13, 4]], np.int32)[:b]
  return rgb, ir, prompt


def test_logits_match_pytorch_within_1e4(exported):
  model, params, torch_model = exported
  rgb, ir, prompt = _inputs(0)
  answer = np.array([[20, 21, 22], [23, 24, 1]], np.int32)
  tokens = np.concatenate([prompt, answer], 1)
  mask_ar = np.concatenate([np.zeros_like(prompt), np.ones_like(answer)], 1)
  ours = jax.jit(model.apply)(params, rgb, ir, tokens, np.ones(tokens.shape, bool), mask_ar)
  inp = hf_paligemma.hf_inputs(prompt, model.num_image_tokens, V, answer)
  with torch.no_grad():
    theirs = torch_model(
      input_ids=torch.from_numpy(inp["input_ids"]),
      token_type_ids=torch.from_numpy(inp["token_type_ids"]),
      pixel_values=torch.from_numpy(hf_paligemma.pixel_values(rgb, ir, "rgb_ir")),
    ).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), theirs[:, model.num_image_tokens :], atol=1e-4)


def test_greedy_decoding_matches_transformers_generate(exported):
  model, params, torch_model = exported
  rgb, ir, prompt = _inputs(1)
  max_len = 6
  ours = decoding.make_decode_fn(model, decoding.DecodeConfig(max_len=max_len))(
    params,
    {
      "rgb": jnp.asarray(rgb),
      "ir": jnp.asarray(ir),
      "prompt": jnp.asarray(prompt),
      "prompt_mask": jnp.asarray(prompt != 0),
    },
    None,
  )
  inp = hf_paligemma.hf_inputs(prompt, model.num_image_tokens, V)
  with torch.no_grad():
    gen = torch_model.generate(
      input_ids=torch.from_numpy(inp["input_ids"]),
      token_type_ids=torch.from_numpy(inp["token_type_ids"]),
      attention_mask=torch.ones(inp["input_ids"].shape, dtype=torch.long),
      pixel_values=torch.from_numpy(hf_paligemma.pixel_values(rgb, ir, "rgb_ir")),
      max_new_tokens=max_len,
      do_sample=False,
      pad_token_id=0,
      eos_token_id=1,
    )
  new = gen[:, inp["input_ids"].shape[1] :].numpy()
  new = np.pad(new, ((0, 0), (0, max_len - new.shape[1])))
  np.testing.assert_array_equal(np.asarray(ours), new)


def test_state_dict_names_match_a_fresh_paligemma(exported):
  model, params, torch_model = exported
  sd = hf_paligemma.to_hf_state_dict(params, 2, 2)
  assert set(sd) == set(torch_model.state_dict())
  for k, v in torch_model.state_dict().items():
    assert tuple(v.shape) == sd[k].shape, k
