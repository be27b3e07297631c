"""SigLIP text tower: token + position embeddings, pre-LN encoder, final LN, last-token pooling, head.

Mirrors transformers' `SiglipTextTransformer`: no attention mask and the pooled vector is the last
position of the fixed-length (padded) sequence, so captions must be padded to `text_len`.
"""

import flax.linen as nn

from fusionrs_jax.models import scan
from fusionrs_jax.models.vit import encoder_of, layer_norm, param_with_axes


class TextTransformer(scan.LayerStack):
  """tokens [B, L] int32 (L <= text_len) -> (pooled [B, out_dim], tokens [B, L, D])."""

  vocab_size: int
  text_len: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  # Size of the shared image-text space; transformers calls it projection_size (= vision width).
  out_dim: int

  @nn.compact
  def __call__(self, tokens):
    length = tokens.shape[-1]
    if length > self.text_len:
      raise ValueError(f"text length {length} exceeds the position table ({self.text_len})")
    embed = nn.Embed(
      self.vocab_size,
      self.width,
      embedding_init=param_with_axes(nn.initializers.normal(self.width**-0.5), ("vocab", "embed")),
      name="token_embedding",
    )
    pos = self.param(
      "position_embedding",
      param_with_axes(nn.initializers.normal(self.width**-0.5), ("length", "embed")),
      (self.text_len, self.width),
    )  # [text_len, D]
    x = embed(tokens).astype(self.dtype) + pos[:length].astype(self.dtype)[None]
    x = encoder_of(self)(x)
    x = layer_norm("final_layer_norm", self.dtype)(x)
    # SigLIP pools the last position, which is usually padding: it was trained that way.
    pooled = nn.Dense(
      self.out_dim,
      dtype=self.dtype,
      kernel_init=param_with_axes(nn.initializers.lecun_normal(), ("embed", "mlp")),
      bias_init=param_with_axes(nn.initializers.zeros, ("mlp",)),
      name="head",
    )(x[:, -1])
    return pooled, x
