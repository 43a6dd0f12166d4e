"""A small convolutional classifier: conv blocks, one max-pool, a dense layer, a head."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


class CNN(nnx.Module):
    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        num_classes: int,
        features: Sequence[int] = (32, 64),
        dense: int = 128,
        dropout: float = 0.0,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        height, width, channels = input_shape
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        sizes = [channels, *features]
        self.convs = nnx.List(
            nnx.Conv(a, b, kernel_size=(3, 3), **kw) for a, b in zip(sizes[:-1], sizes[1:])
        )
        flat = (height // 2) * (width // 2) * features[-1]
        self.dense = nnx.Linear(flat, dense, **kw)
        self.dropout = nnx.Dropout(dropout)
        self.head = nnx.Linear(dense, num_classes, **kw)

    def __call__(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        for conv in self.convs:
            x = nnx.relu(conv(x))
        x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        x = self.dropout(nnx.relu(self.dense(x)), rngs=rngs)
        return self.head(x)
