"""A decoder-only causal language model: token embedding, pre-norm blocks with causal
self-attention and RoPE positions, final LayerNorm, output tied to the embedding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ann.config import COUNT
from ann.models.transformer import ATTENTION, Stack, causal_mask, combine, padding_mask


class CausalLM(nnx.Module):
    """`attention`: "einsum" (masks spelled out), "xla" or "cudnn" (jax.nn.dot_product_attention
    told the mask is causal with right padding; cudnn is flash attention on NVIDIA GPUs in
    bfloat16: `--config.dtype=bfloat16`). `remat`: recompute each block in the backward pass."""

    RANGES = {k: COUNT for k in ("dim", "depth", "num_heads", "mlp_dim")}
    CHOICES = {"attention": ATTENTION}  # checked with the config, before data

    def __init__(
        self,
        *,
        vocab_size: int,
        dim: int = 128,
        depth: int = 4,
        num_heads: int = 4,
        mlp_dim: int = 512,
        dropout: float = 0.0,
        attention: str = "einsum",
        remat: bool = False,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.vocab_size = vocab_size
        self.attention = attention
        self.embed = nnx.Embed(vocab_size, dim, **kw)
        self.decoder = Stack(
            depth,
            dim,
            num_heads=num_heads,
            mlp_dim=mlp_dim,
            dropout=dropout,
            use_rope=True,
            attention=attention,
            remat=remat,
            **kw,
        )

    def __call__(
        self,
        tokens: jax.Array,
        *,
        valid: jax.Array | None = None,
        rngs: jax.Array | None = None,
    ) -> jax.Array:
        """Next-token logits [b, t, vocab] for tokens [b, t]. `valid` [b, t] (True = real token)
        also hides padding keys; with right padding the causal mask alone already does (the
        "xla" and "cudnn" attentions assume right padding: keys from `valid.sum(-1)` on are
        hidden)."""
        x = self.embed(tokens)
        if self.attention == "einsum":
            mask = combine(
                causal_mask(tokens.shape[1]), None if valid is None else padding_mask(valid)
            )
            x = self.decoder(x, mask=mask, rngs=rngs)
        else:
            lengths = None if valid is None else valid.sum(-1).astype(jnp.int32)
            x = self.decoder(x, causal=True, lengths=lengths, rngs=rngs)
        return self.embed.attend(x)  # tied output embedding
