"""A multi-layer perceptron with optional dropout and layer or batch norm."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ann.config import COUNT, check_choice


class MLP(nnx.Module):
    """Flattened input -> `features` hidden ReLU layers (each optionally normalized, then
    dropped out) -> a linear head of `num_classes` units: class logits, or, for regression, one
    unit per target value (the regression experiment passes the target's size).

    `linear_skip` adds a linear map from the input straight to the head's output ("wide and
    deep"): the hidden path only has to learn what a linear model misses, which helps on small
    tabular data where a linear model is already strong.
    """

    RANGES = {"features": COUNT}  # checked with the config, before any data is read
    CHOICES = {"norm": (None, "layer", "batch")}  # likewise

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        num_classes: int,
        features: Sequence[int] = (256, 256),
        dropout: float = 0.0,
        norm: str | None = None,
        linear_skip: bool = False,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        check_choice("model.norm", norm, self.CHOICES["norm"])  # built without the config
        sizes = [int(np.prod(input_shape)), *features]
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List(nnx.Linear(a, b, **kw) for a, b in zip(sizes[:-1], sizes[1:]))
        norms = {"layer": nnx.LayerNorm, "batch": nnx.BatchNorm}
        self.norms = nnx.data(nnx.List(norms[norm](b, **kw) for b in features) if norm else None)
        self.dropout = nnx.Dropout(dropout)
        self.head = nnx.Linear(sizes[-1], num_classes, **kw)
        self.skip = nnx.data(nnx.Linear(sizes[0], num_classes, **kw) if linear_skip else None)

    def __call__(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        x = inputs = x.reshape(x.shape[0], -1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.norms is not None:
                x = self.norms[i](x)
            x = self.dropout(nnx.relu(x), rngs=rngs)
        out = self.head(x)
        return out if self.skip is None else out + self.skip(inputs)
