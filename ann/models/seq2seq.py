"""An encoder-decoder transformer (Vaswani et al. 2017, pre-norm): the encoder reads the source
under its padding mask; the decoder runs causal self-attention and cross-attention to the
encoder's output. Learned absolute positions, shared source/target embedding, tied output."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ann.models import register
from ann.models.transformer import Stack, causal_mask, combine, padding_mask


@register("seq2seq")
class Seq2Seq(nnx.Module):
    def __init__(
        self,
        *,
        vocab_size: int,
        max_len: int,
        pad_id: int = 0,
        dim: int = 128,
        encoder_depth: int = 3,
        decoder_depth: int = 3,
        num_heads: int = 4,
        mlp_dim: int = 512,
        dropout: float = 0.0,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.vocab_size, self.max_len, self.pad_id = vocab_size, max_len, pad_id
        self.embed = nnx.Embed(vocab_size, dim, **kw)
        self.source_pos = nnx.Embed(max_len, dim, **kw)
        self.target_pos = nnx.Embed(max_len, dim, **kw)
        block = dict(num_heads=num_heads, mlp_dim=mlp_dim, dropout=dropout, **kw)
        self.encoder = Stack(encoder_depth, dim, **block)
        self.decoder = Stack(decoder_depth, dim, cross_attention=True, **block)

    def encode(
        self, source: jax.Array, *, rngs: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """(memory [b, s, dim], memory mask [b, 1, 1, s]) for source tokens [b, s]."""
        mask = padding_mask(source != self.pad_id)
        x = self.embed(source) + self.source_pos(jnp.arange(source.shape[1]))
        return self.encoder(x, mask=mask, rngs=rngs), mask

    def decode(
        self,
        target_in: jax.Array,
        memory: jax.Array,
        memory_mask: jax.Array,
        *,
        rngs: jax.Array | None = None,
    ) -> jax.Array:
        """Next-token logits [b, t, vocab] for decoder inputs [b, t] (BOS + target[:-1])."""
        # Causal only: target padding sits on the right, so real positions never see it.
        mask = combine(causal_mask(target_in.shape[1]))
        x = self.embed(target_in) + self.target_pos(jnp.arange(target_in.shape[1]))
        x = self.decoder(x, mask=mask, context=memory, context_mask=memory_mask, rngs=rngs)
        return self.embed.attend(x)

    def __call__(
        self, source: jax.Array, target_in: jax.Array, *, rngs: jax.Array | None = None
    ) -> jax.Array:
        k1, k2 = (None, None) if rngs is None else jax.random.split(rngs)
        memory, memory_mask = self.encode(source, rngs=k1)
        return self.decode(target_in, memory, memory_mask, rngs=k2)
