"""Shared transformer parts: multi-head attention with masks and RoPE, pre-norm blocks.

Used by `vit` (encoder), `causal_lm` (decoder-only) and `seq2seq` (encoder-decoder). Masks are
boolean, broadcastable to [batch, heads, queries, keys], True where a query may attend. Logits and
the softmax are computed in float32 whatever the compute dtype, and masked logits are a large
finite negative rather than -inf, so a fully masked (padding) query gives zeros, not NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

NEG_INF = -1e9  # finite: a row with every key masked softmaxes to uniform, never NaN
# How attention is computed: "einsum" spells it out (float32 logits, attention dropout);
# "xla" and "cudnn" call jax.nn.dot_product_attention with that implementation (cudnn: fused
# flash attention on NVIDIA GPUs, bfloat16/float16 only; no attention dropout).
ATTENTION = ("einsum", "xla", "cudnn")


def padding_mask(valid: jax.Array) -> jax.Array:
    """[batch, keys] bool (True = real token) -> [batch, 1, 1, keys] attention mask."""
    return valid[:, None, None, :]


def causal_mask(length: int) -> jax.Array:
    """[1, 1, length, length]: query i sees keys 0..i."""
    return jnp.tril(jnp.ones((length, length), bool))[None, None]


def combine(*masks: jax.Array | None) -> jax.Array | None:
    """Logical AND of the masks that are not None (None = attend everywhere)."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    out = present[0]
    for m in present[1:]:
        out = jnp.logical_and(out, m)
    return out


def rope(x: jax.Array, positions: jax.Array, base: float = 10_000.0) -> jax.Array:
    """Rotary position embedding (Su et al. 2021) of x [batch, length, heads, head_dim].

    `positions` [length] or [batch, length]. Rotates pairs (i, i + head_dim/2), computed in
    float32 and cast back to x's dtype.
    """
    half = x.shape[-1] // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions.astype(jnp.float32)[..., None] * freqs  # [(batch,) length, half]
    if angles.ndim == 2:
        angles = angles[None]
    sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


class Attention(nnx.Module):
    """Multi-head (self- or cross-) attention; optional RoPE on queries and keys; computed as
    `implementation` says (one of ATTENTION)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        use_rope: bool = False,
        dropout: float = 0.0,
        implementation: str = "einsum",
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if dim % num_heads:
            fits = ", ".join(str(n) for n in range(1, min(dim, 64) + 1) if dim % n == 0)
            raise ValueError(
                f"model dim {dim} is not divisible by num_heads {num_heads}; use num_heads in "
                f"{fits}, or a dim that {num_heads} divides"
            )
        if implementation not in ATTENTION:
            raise ValueError(f"attention {implementation!r}: use one of {', '.join(ATTENTION)}")
        if implementation != "einsum" and dropout:
            raise ValueError(
                f"attention {implementation!r} has no attention dropout; use dropout=0 or "
                "attention='einsum'"
            )
        self.num_heads, self.head_dim, self.use_rope = num_heads, dim // num_heads, use_rope
        self.implementation = implementation
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.query = nnx.Linear(dim, dim, **kw)
        self.key = nnx.Linear(dim, dim, **kw)
        self.value = nnx.Linear(dim, dim, **kw)
        self.out = nnx.Linear(dim, dim, **kw)
        self.dropout = nnx.Dropout(dropout)

    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        *,
        mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        context_positions: jax.Array | None = None,
        causal: bool = False,
        lengths: jax.Array | None = None,
        rngs: jax.Array | None = None,
    ) -> jax.Array:
        """`mask` as the module docstring says; `causal` adds the causal mask and `lengths`
        [batch] int32 hides keys at and after each row's length (right padding): the two masks
        `jax.nn.dot_product_attention` (cudnn) takes without building them."""
        context = x if context is None else context
        b, tq, tk = x.shape[0], x.shape[1], context.shape[1]
        q = self.query(x).reshape(b, tq, self.num_heads, self.head_dim)
        k = self.key(context).reshape(b, tk, self.num_heads, self.head_dim)
        v = self.value(context).reshape(b, tk, self.num_heads, self.head_dim)
        if self.use_rope:
            q = rope(q, jnp.arange(tq) if positions is None else positions)
            kpos = context_positions if context_positions is not None else positions
            k = rope(k, jnp.arange(tk) if kpos is None else kpos)
        if self.implementation != "einsum":
            y = jax.nn.dot_product_attention(
                q,
                k,
                v,
                mask=mask,
                is_causal=causal,
                key_value_seq_lengths=lengths,
                implementation=self.implementation,
            )
            return self.out(y.reshape(b, tq, -1))
        if causal:
            mask = combine(mask, causal_mask(tq))
        if lengths is not None:
            mask = combine(mask, (jnp.arange(tk) < lengths[:, None])[:, None, None, :])
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
        logits = logits / jnp.sqrt(jnp.float32(self.head_dim))
        if mask is not None:
            logits = jnp.where(mask, logits, NEG_INF)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        weights = self.dropout(weights, rngs=rngs)
        y = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, tq, -1)
        return self.out(y)


class MLP(nnx.Module):
    def __init__(self, dim: int, hidden: int, dropout: float, kw: dict):
        self.up = nnx.Linear(dim, hidden, **kw)
        self.down = nnx.Linear(hidden, dim, **kw)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, rngs: jax.Array | None = None) -> jax.Array:
        return self.dropout(self.down(nnx.gelu(self.up(x))), rngs=rngs)


def _keys(rngs: jax.Array | None, n: int) -> list[jax.Array | None]:
    # One independent dropout key per sub-layer; None in eval.
    return [None] * n if rngs is None else list(jax.random.split(rngs, n))


class Block(nnx.Module):
    """Pre-norm transformer block: self-attention, optional cross-attention, MLP; residuals."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        cross_attention: bool = False,
        use_rope: bool = False,
        cross_rope: bool = False,
        dropout: float = 0.0,
        attention: str = "einsum",
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = nnx.LayerNorm(dim, **kw)
        self.attn = Attention(
            dim, num_heads, use_rope=use_rope, dropout=dropout, implementation=attention, **kw
        )
        self.cross_norm = self.cross = nnx.data(None)
        if cross_attention:
            self.cross_norm = nnx.LayerNorm(dim, **kw)
            # RoPE here rotates queries by `positions` and keys by `context_positions`, so a
            # decoder can align with its source by relative offset (seq2seq).
            self.cross = Attention(dim, num_heads, use_rope=cross_rope, dropout=dropout, **kw)
        self.norm2 = nnx.LayerNorm(dim, **kw)
        self.mlp = MLP(dim, mlp_dim, dropout, kw)
        self.dropout = nnx.Dropout(dropout)

    def __call__(
        self,
        x: jax.Array,
        *,
        mask: jax.Array | None = None,
        context: jax.Array | None = None,
        context_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        context_positions: jax.Array | None = None,
        causal: bool = False,
        lengths: jax.Array | None = None,
        rngs: jax.Array | None = None,
    ) -> jax.Array:
        k = _keys(rngs, 6)
        h = self.attn(
            self.norm1(x),
            mask=mask,
            positions=positions,
            causal=causal,
            lengths=lengths,
            rngs=k[0],
        )
        x = x + self.dropout(h, rngs=k[1])
        if self.cross is not None:
            h = self.cross(
                self.cross_norm(x),
                context,
                mask=context_mask,
                positions=positions,
                context_positions=context_positions,
                rngs=k[2],
            )
            x = x + self.dropout(h, rngs=k[3])
        return x + self.mlp(self.norm2(x), rngs=k[4])


class Stack(nnx.Module):
    """`depth` blocks and a final LayerNorm (pre-norm transformers need one at the end).

    `remat`: each block's activations are recomputed in the backward pass instead of kept
    (`nnx.remat`, i.e. jax.checkpoint): about a third more compute for a block's activations'
    memory, so a larger batch or sequence fits."""

    def __init__(self, depth: int, dim: int, *, remat: bool = False, **block_kw):
        self.remat = remat
        self.blocks = nnx.List(Block(dim, **block_kw) for _ in range(depth))
        self.norm = nnx.LayerNorm(
            dim,
            dtype=block_kw.get("dtype"),
            param_dtype=block_kw.get("param_dtype", jnp.float32),
            rngs=block_kw["rngs"],
        )

    def __call__(self, x: jax.Array, *, rngs: jax.Array | None = None, **kwargs) -> jax.Array:
        def run(block: Block, x: jax.Array, key: jax.Array | None) -> jax.Array:
            return block(x, rngs=key, **kwargs)

        if self.remat:
            run = nnx.remat(run)
        for block, key in zip(self.blocks, _keys(rngs, len(self.blocks))):
            x = run(block, x, key)
        return self.norm(x)
