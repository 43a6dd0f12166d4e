"""An encoder-decoder transformer (Vaswani et al. 2017, pre-norm): the encoder reads the source
under its padding mask; the decoder runs causal self-attention and cross-attention to the
encoder's output. Shared source/target embedding, tied output.

Positions (`positions`):

- `learned`: learned absolute position embeddings added to the inputs (the original
  transformer's scheme, learned). Generalises badly to source lengths it was not trained on: an
  output that depends on the length (reverse: output i is source digit n - i) needs a separate
  lookup for each length.
- `rope`: rotary positions (Su et al. 2021) in every attention, the sequence index of each token;
  cross-attention scores then depend on the offset between the output index and the source index.
- `digits`: rotary positions where each source digit's position is its place value, its distance
  from the last digit of its run of digits (the units digit of a number is 0, tens 1, ...; other
  tokens -1), as in Abacus embeddings (McLeish et al. 2024). The decoder's output i then meets
  the source digits of place i at offset 0 whatever the number's length, so reversing a string
  and adding numbers whose sum is written least-significant digit first need no length-specific
  lookup. Needs `digit_ids` (the experiment supplies them from the vocabulary).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ann.config import COUNT, ConfigError, check_choice
from ann.models.transformer import Stack, causal_mask, combine, padding_mask

POSITIONS = ("learned", "rope", "digits")


def place_values(source: jax.Array, digit_ids: Sequence[int]) -> jax.Array:
    """[b, s] int32: each digit's distance from the last digit of its run (0 for the last),
    -1 for every other token. `reverse 1 2 3 <eos>` -> -1 2 1 0 -1."""
    is_digit = jnp.isin(source, jnp.asarray(list(digit_ids), source.dtype))
    index = jnp.arange(source.shape[1], dtype=jnp.int32)
    # The index of the first non-digit at or after each position; a digit's place is its
    # distance to it minus one, and a non-digit's own index gives -1.
    stops = jnp.where(is_digit, source.shape[1], index[None, :])
    next_stop = jax.lax.cummin(stops, axis=1, reverse=True)
    return (next_stop - index[None, :] - 1).astype(jnp.int32)


class Seq2Seq(nnx.Module):
    RANGES = {k: COUNT for k in ("dim", "encoder_depth", "decoder_depth", "num_heads", "mlp_dim")}
    CHOICES = {"positions": POSITIONS}  # checked with the config, before data

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
        positions: str = "learned",
        digit_ids: Sequence[int] = (),
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        check_choice("model.positions", positions, POSITIONS)
        if positions == "digits" and not digit_ids:
            raise ConfigError(
                "config key 'model.positions'='digits' needs digit tokens ('0'..'9') in the data "
                "set's vocabulary; use 'rope' or 'learned' for this data set"
            )
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.vocab_size, self.max_len, self.pad_id = vocab_size, max_len, pad_id
        self.positions, self.digit_ids = positions, tuple(int(i) for i in digit_ids)
        self.embed = nnx.Embed(vocab_size, dim, **kw)
        self.source_pos = self.target_pos = nnx.data(None)
        if positions == "learned":
            self.source_pos = nnx.Embed(max_len, dim, **kw)
            self.target_pos = nnx.Embed(max_len, dim, **kw)
        rope = positions != "learned"
        block = dict(num_heads=num_heads, mlp_dim=mlp_dim, dropout=dropout, use_rope=rope, **kw)
        self.encoder = Stack(encoder_depth, dim, **block)
        self.decoder = Stack(decoder_depth, dim, cross_attention=True, cross_rope=rope, **block)

    def source_positions(self, source: jax.Array) -> jax.Array:
        """[b, s] positions of the source tokens (rotary schemes)."""
        if self.positions == "digits":
            return place_values(source, self.digit_ids)
        return jnp.broadcast_to(jnp.arange(source.shape[1], dtype=jnp.int32), source.shape)

    def encode(
        self, source: jax.Array, *, rngs: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array | tuple[jax.Array, jax.Array]]:
        """(memory [b, s, dim], memory mask [b, 1, 1, s]) for source tokens [b, s]; under rotary
        positions the second item is (mask, source positions [b, s])."""
        mask = padding_mask(source != self.pad_id)
        x = self.embed(source)
        if self.positions == "learned":
            x = x + self.source_pos(jnp.arange(source.shape[1]))
            return self.encoder(x, mask=mask, rngs=rngs), mask
        positions = self.source_positions(source)
        memory = self.encoder(x, mask=mask, positions=positions, rngs=rngs)
        return memory, (mask, positions)

    def decode(
        self,
        target_in: jax.Array,
        memory: jax.Array,
        memory_mask: jax.Array | tuple[jax.Array, jax.Array],
        *,
        rngs: jax.Array | None = None,
    ) -> jax.Array:
        """Next-token logits [b, t, vocab] for decoder inputs [b, t] (BOS + target[:-1]).
        `memory` and `memory_mask` are what `encode` returned."""
        # Causal only: target padding sits on the right, so real positions never see it.
        mask = combine(causal_mask(target_in.shape[1]))
        x = self.embed(target_in)
        if self.positions == "learned":
            x = x + self.target_pos(jnp.arange(target_in.shape[1]))
            x = self.decoder(x, mask=mask, context=memory, context_mask=memory_mask, rngs=rngs)
        else:
            context_mask, context_positions = memory_mask
            x = self.decoder(
                x,
                mask=mask,
                context=memory,
                context_mask=context_mask,
                positions=jnp.arange(target_in.shape[1]),
                context_positions=context_positions,
                rngs=rngs,
            )
        return self.embed.attend(x)

    def __call__(
        self, source: jax.Array, target_in: jax.Array, *, rngs: jax.Array | None = None
    ) -> jax.Array:
        k1, k2 = (None, None) if rngs is None else jax.random.split(rngs)
        memory, memory_mask = self.encode(source, rngs=k1)
        return self.decode(target_in, memory, memory_mask, rngs=k2)
