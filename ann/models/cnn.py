"""A small convolutional classifier: conv blocks, one max-pool, a dense layer, a head."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ann.config import COUNT, SIZES


def max_pool(x: jax.Array, window: tuple[int, int] = (2, 2)) -> jax.Array:
    """Non-overlapping max pool of `x` [batch, height, width, channels] (any float dtype) by a
    reshape and a max: [batch, height // wh, width // ww, channels], the values of
    `nnx.max_pool(x, window, strides=window)` (VALID: a last row or column that does not fill a
    window is dropped).

    Why not `nnx.max_pool`: its gradient is a select-and-scatter, which XLA:CPU runs as a
    reduce-window carrying argmax indices and a scatter, about 3 of 14 ms of the digits CNN's
    train step on 2 cores (docs/benchmarks.md, "Train step vs peers"); this gradient is an
    elementwise compare and select that fuses with its neighbours, on CPU and GPU alike.
    The gradients are equal except inside a window whose maximum is tied: select-and-scatter
    gives the whole gradient to one element, this splits it equally among the tied ones
    (`jax.lax.reduce_max`'s rule). After a ReLU the only likely ties are zeros, whose gradient
    the ReLU drops either way.
    """
    wh, ww = window
    n, h, w, c = x.shape
    x = x[:, : h // wh * wh, : w // ww * ww]
    return x.reshape(n, h // wh, wh, w // ww, ww, c).max(axis=(2, 4))


class CNN(nnx.Module):
    INPUT_RANK = 3  # images [height, width, channels]: `ann.models.build` checks it
    RANGES = {"features": SIZES, "dense": COUNT}  # checked with the config, before data

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
        x = max_pool(x, (2, 2))
        x = x.reshape(x.shape[0], -1)
        x = self.dropout(nnx.relu(self.dense(x)), rngs=rngs)
        return self.head(x)
