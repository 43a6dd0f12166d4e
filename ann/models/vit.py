"""A ViT-style classifier (Dosovitskiy et al. 2021): image patches -> pre-norm transformer
encoder -> mean-pooled tokens -> linear head. Learned position embeddings, no class token."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ann.config import COUNT
from ann.models.transformer import Stack


class ViT(nnx.Module):
    INPUT_RANK = 3  # images [height, width, channels]: `ann.models.build` checks it
    RANGES = {k: COUNT for k in ("patch_size", "dim", "depth", "num_heads", "mlp_dim")}

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        num_classes: int,
        patch_size: int = 2,
        dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        mlp_dim: int = 128,
        dropout: float = 0.0,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        height, width, channels = input_shape
        if height % patch_size or width % patch_size:
            fits = ", ".join(
                str(n) for n in range(1, min(height, width) + 1) if not height % n and not width % n
            )
            raise ValueError(
                f"patch_size {patch_size} does not divide the image {height}x{width}; use one "
                f"of {fits}"
            )
        self.patch_size = patch_size
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.embed = nnx.Linear(patch_size * patch_size * channels, dim, **kw)
        num_patches = (height // patch_size) * (width // patch_size)
        init = nnx.initializers.normal(0.02)
        self.pos = nnx.Param(init(rngs.params(), (1, num_patches, dim), param_dtype))
        self.encoder = Stack(
            depth, dim, num_heads=num_heads, mlp_dim=mlp_dim, dropout=dropout, **kw
        )
        self.head = nnx.Linear(dim, num_classes, **kw)

    def patches(self, x: jax.Array) -> jax.Array:
        """[b, h, w, c] -> [b, (h/p)*(w/p), p*p*c], row-major over patches."""
        b, h, w, c = x.shape
        p = self.patch_size
        x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def __call__(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        tokens = self.embed(self.patches(x))
        tokens = tokens + self.pos[...].astype(tokens.dtype)
        return self.head(self.encoder(tokens, rngs=rngs).mean(axis=1))
