"""PaliGemma-style dual-image captioner: a SigLIP ViT embeds the RGB and the IR image (one shared
tower, as PaliGemma has one), a linear layer projects the patch tokens to the Gemma width, and the
decoder reads [RGB tokens][IR tokens][BOS prompt SEP] as a fully attended prefix, then the answer
causally. Inputs `rgb_ir`, `rgb` or `ir` choose which images form the prefix; an example without
one of them (has_rgb / has_ir False) has that image's tokens masked out of the prefix.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fusionrs_jax.models import gemma, scan, siglip
from fusionrs_jax.models.siglip import _match_channels
from fusionrs_jax.models.vit import ViT, param_with_axes

# inputs setting -> image modalities in prefix order.
INPUTS = {"rgb_ir": ("rgb", "ir"), "rgb": ("rgb",), "ir": ("ir",)}


class Captioner(scan.LayerStack):
  """Params: img (SigLIP ViT, no head), img_head (projection), llm (Gemma).

  Used unbound for its fields; `.apply(params, ..., method=...)` for prefill/extend.

  Images [B, S, S, C] in [-1, 1] (IR may have C=1: it is replicated to 3 channels).
  """

  # ViT fields: image_size, patch_size, width, depth, mlp_dim, num_heads.
  vision_hp: dict
  # Gemma fields: vocab_size, width, depth, mlp_dim, num_heads, num_kv_heads, head_dim.
  llm_hp: dict
  inputs: str = "rgb_ir"
  # No gradient through the image tower (the projection and decoder still learn).
  freeze_image_encoder: bool = False

  def setup(self):
    if self.inputs not in INPUTS:
      raise ValueError(f"inputs must be one of {sorted(INPUTS)}, got {self.inputs!r}")
    stack = self.stack_options()
    self.img = ViT(**self.vision_hp, num_channels=3, use_head=False, **stack)
    self.img_head = nn.Dense(
      self.llm_hp["width"],
      dtype=self.dtype,
      kernel_init=param_with_axes(nn.initializers.xavier_uniform(), ("channels", "embed")),
      bias_init=param_with_axes(nn.initializers.zeros, ("embed",)),
    )
    self.llm = gemma.Gemma(**self.llm_hp, **stack)

  @property
  def modalities(self) -> tuple[str, ...]:
    return INPUTS[self.inputs]

  @property
  def num_image_tokens(self) -> int:
    """Prefix tokens from images: patches per image x images."""
    per_image = (self.vision_hp["image_size"] // self.vision_hp["patch_size"]) ** 2
    return per_image * len(INPUTS[self.inputs])

  def embed_images(self, rgb=None, ir=None):
    """The configured images -> projected tokens [B, N_img, D_llm] (RGB first, then IR).

    Not scaled by sqrt(D): only text embeddings are (as PaliGemma).
    """
    given = {"rgb": rgb, "ir": ir}
    tokens = []
    for m in self.modalities:
      if given[m] is None:
        raise ValueError(f"captioner with inputs={self.inputs!r} needs a {m!r} image")
      _, t = self.img(_match_channels(given[m], 3))
      if self.freeze_image_encoder:
        t = jax.lax.stop_gradient(t)
      tokens.append(self.img_head(t))
    return jnp.concatenate(tokens, axis=1)

  def image_mask(self, batch_size: int, has_rgb=None, has_ir=None):
    """[B, N_img] bool: False on the tokens of an image the example does not have.

    has_rgb, has_ir: [B] bool or None (= every example has it). A missing image's tokens are
    never attended, so it is left out of the prefix rather than shown as a black image.
    """
    per_image = self.num_image_tokens // len(self.modalities)
    given = {"rgb": has_rgb, "ir": has_ir}
    masks = [
      jnp.ones((batch_size, per_image), bool)
      if given[m] is None
      else jnp.broadcast_to(jnp.asarray(given[m], bool)[:, None], (batch_size, per_image))
      for m in self.modalities
    ]
    return jnp.concatenate(masks, axis=1)

  def embed_prefix(self, rgb, ir, tokens, input_mask, has_rgb=None, has_ir=None):
    """Images + text tokens [B, L] -> (x [B, N_img+L, D], full input mask [B, N_img+L])."""
    img = self.embed_images(rgb, ir)
    txt = self.llm.embed_tokens(tokens)
    img_mask = self.image_mask(tokens.shape[0], has_rgb, has_ir)
    return (
      jnp.concatenate([img.astype(txt.dtype), txt], axis=1),
      jnp.concatenate([img_mask, input_mask.astype(bool)], axis=1),
    )

  def __call__(self, rgb, ir, tokens, input_mask, mask_ar, has_rgb=None, has_ir=None):
    """Training/scoring forward over the whole sequence.

    tokens [B, L] = [BOS prompt SEP answer EOS pad...]; input_mask [B, L] (False = pad);
    mask_ar [B, L] (1 on the answer: causal, 0 on the prompt: prefix); has_rgb, has_ir [B]
    bool or None (see `image_mask`): positions count present tokens only, so a row without
    IR gets the logits of a prefix without IR tokens.
    Returns float32 logits of the text positions [B, L, V] (position t predicts t + 1).
    """
    x, full_mask = self.embed_prefix(rgb, ir, tokens, input_mask, has_rgb, has_ir)
    n_img = x.shape[1] - tokens.shape[1]
    ar = jnp.concatenate([jnp.zeros((x.shape[0], n_img), mask_ar.dtype), mask_ar], axis=1)
    attn = gemma.prefix_lm_mask(full_mask, ar)
    positions = jnp.cumsum(full_mask, axis=1) - 1
    hidden, _ = self.llm(x, positions, attn)
    return self.llm.logits(hidden[:, n_img:])

  def prefill(self, rgb, ir, tokens, input_mask, cache_size: int, has_rgb=None, has_ir=None):
    """Runs the prefix [images][BOS prompt SEP + right padding] and fills a fresh KV cache.

    tokens/input_mask [B, P]; has_rgb, has_ir as in `__call__`. Returns (logits at each
    row's last real prefix token [B, V], cache with slots [0, N_img + P) written, slot mask
    [B, cache_size] bool, next position [B] int32).
    """
    x, full_mask = self.embed_prefix(rgb, ir, tokens, input_mask, has_rgb, has_ir)
    b, t = full_mask.shape
    attn = gemma.prefix_lm_mask(full_mask, jnp.zeros_like(full_mask))
    attn = jnp.pad(attn, ((0, 0), (0, 0), (0, cache_size - t)))
    positions = jnp.cumsum(full_mask, axis=1) - 1
    cache = self.llm.init_cache(b, cache_size, self.dtype)
    hidden, cache = self.llm(x, positions, attn, cache, 0)
    # The prompt is right-padded: its last real token sits at slot N_img + (#prompt) - 1.
    last_slot = t - tokens.shape[1] + jnp.sum(input_mask.astype(jnp.int32), axis=1) - 1
    last = jnp.take_along_axis(hidden, last_slot[:, None, None], axis=1)
    slot_mask = jnp.pad(full_mask, ((0, 0), (0, cache_size - t)))
    length = jnp.sum(full_mask, axis=1)  # present tokens = the next position
    return self.llm.logits(last)[:, 0], cache, slot_mask, length.astype(jnp.int32)

  def extend(self, token, position, cache, slot_mask, write_index):
    """One decoding step: token [B] at `position` [B], written into cache slot `write_index`.

    slot_mask [B, S] must already include the new slot. Returns (logits [B, V], cache).
    """
    x = self.llm.embed_tokens(token[:, None])
    hidden, cache = self.llm(x, position[:, None], slot_mask[:, None, :], cache, write_index)
    return self.llm.logits(hidden)[:, 0], cache


def captioner_from_presets(vision: dict, llm: dict, vocab_size: int, **kwargs) -> Captioner:
  """Captioner from a SigLIP preset dict (image keys are picked) and a Gemma preset dict."""
  keys = ("image_size", "patch_size", "width", "depth", "mlp_dim", "num_heads")
  return Captioner(
    vision_hp={k: vision[k] for k in keys}, llm_hp={**llm, "vocab_size": vocab_size}, **kwargs
  )


def dummy_inputs(model: Captioner, batch_size: int = 1, text_len: int = 8) -> dict:
  """Inputs touching every parameter, for `model.init(rng, **dummy_inputs(model))`."""
  s = model.vision_hp["image_size"]
  return {
    "rgb": jnp.zeros((batch_size, s, s, 3), jnp.float32),
    "ir": jnp.zeros((batch_size, s, s, 1), jnp.float32),
    "tokens": jnp.zeros((batch_size, text_len), jnp.int32),
    "input_mask": jnp.ones((batch_size, text_len), bool),
    "mask_ar": jnp.zeros((batch_size, text_len), jnp.int32),
  }


def from_config(config) -> Captioner:
  """The captioner of a run config: SigLIP vision preset + Gemma preset + options."""
  vit = siglip.siglip_preset(config.model.vision_preset)
  if config.model.get("image_size"):
    vit["image_size"] = config.model.image_size
  return captioner_from_presets(
    vit,
    gemma.gemma_preset(config.model.llm_preset),
    config.data.vocab_size,
    inputs=config.model.inputs,
    freeze_image_encoder=config.model.freeze_image_encoder,
    remat=config.model.remat,
    dtype=jnp.dtype(config.model.dtype),
    remat_policy=config.model.get("remat_policy", scan.DEFAULT_POLICY),
    scan_layers=config.model.get("scan_layers", False),
  )
