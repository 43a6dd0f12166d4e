"""A siamese network / bi-encoder: one shared tower maps every input to an L2-normalised embedding.

The tower is any image model of `ann.models.MODELS`, found by name (`encoder="cnn"`, `"mlp"`,
`"resnet"`, `"vit"` or `package.module:Class`) and built with `encoder_kwargs`; its classifier head
becomes the embedding layer (its `num_classes` is the output width). Optionally a ReLU and a linear
projection follow (`tower_dim` > 0: the tower outputs `tower_dim` features and the projection maps
them to `embedding_dim`, as SimCLR's projection head). Both sides of a pair go through the same
weights, so "siamese" and "bi-encoder" are the same module here; the experiment decides what is
paired."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ann import models
from ann.config import COUNT, NONNEGATIVE, ConfigError

# What the siamese module supplies to its tower; every other tower argument is a config key.
_SUPPLIED = ("input_shape", "num_classes", "dtype", "param_dtype", "rngs")


def _check_tower(encoder: str, kwargs: Mapping[str, Any], prefix: str = "model.") -> None:
    """Refuses a tower that cannot be built, naming the `model.encoder*` key to fix: its
    arguments and their ranges are checked as a model's own, under `model.encoder_kwargs.`."""
    if encoder in ("siamese", "bi_encoder"):
        raise ConfigError(
            f"config key '{prefix}encoder' is {encoder!r}: a siamese tower cannot be a siamese "
            "network; use an image model such as cnn, mlp, resnet or vit"
        )
    try:
        models.get(encoder)
    except ConfigError as e:  # the same mistake, under the key the user set
        raise ConfigError(str(e).replace("'model.name'", f"'{prefix}encoder'", 1)) from None
    for key in kwargs:
        if key in _SUPPLIED:
            raise ConfigError(
                f"config key '{prefix}encoder_kwargs.{key}' is set by the siamese model; set the "
                "output width with model.embedding_dim (or model.tower_dim), and the dtypes with "
                "the top-level dtype and param_dtype"
            )
    models.check_arguments(encoder, kwargs, _SUPPLIED, prefix=f"{prefix}encoder_kwargs.")


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Rows scaled to unit length, in float32 (a norm in bfloat16 loses the small components)."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class Siamese(nnx.Module):
    # Checked with the config, before any data is read. tower_dim 0 = no projection.
    RANGES = {"embedding_dim": COUNT, "tower_dim": NONNEGATIVE}

    @classmethod
    def check_nested(cls, kwargs: Mapping[str, Any], prefix: str) -> None:
        """The tower's arguments (`model.encoder_kwargs`), before any data is read."""
        tower = kwargs.get("encoder_kwargs") or {}
        tower = tower.to_dict() if hasattr(tower, "to_dict") else dict(tower)
        default = inspect.signature(cls.__init__).parameters["encoder"].default
        _check_tower(kwargs.get("encoder", default), tower, prefix)

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        embedding_dim: int = 64,
        encoder: str = "cnn",
        encoder_kwargs: Mapping[str, Any] | None = None,
        tower_dim: int = 0,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kwargs = dict(encoder_kwargs or {})
        _check_tower(encoder, kwargs)
        self.embedding_dim = embedding_dim
        self.tower = models.build(
            encoder,
            kwargs,
            input_shape=tuple(input_shape),
            num_classes=tower_dim or embedding_dim,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.projection = nnx.data(
            nnx.Linear(tower_dim, embedding_dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            if tower_dim
            else None
        )

    def __call__(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        """Unit-length float32 embeddings [batch, embedding_dim] of inputs [batch, ...]."""
        h = self.tower(x, rngs=rngs)
        if self.projection is not None:
            h = self.projection(nnx.relu(h))
        return l2_normalize(h)
