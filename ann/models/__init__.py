"""Models found by name: ann's own (`mlp`, `cnn`, `resnet`, `vit`, `causal_lm`, `seq2seq`) or
a user's `package.module:Class`.

A model is a Flax NNX module whose constructor takes keyword arguments: what the experiment
supplies (e.g. `input_shape`, `num_classes`, `rngs`) plus the config's `model.*` keys.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

import jax.numpy as jnp
from flax import nnx

from ann.config import ConfigError

_REGISTRY: dict[str, type[nnx.Module]] = {}


def register(name: str) -> Callable[[type[nnx.Module]], type[nnx.Module]]:
    def add(cls: type[nnx.Module]) -> type[nnx.Module]:
        _REGISTRY[name] = cls
        return cls

    return add


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> type[nnx.Module]:
    """The model class for `name`: a registered name or `package.module:ClassName`."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(
                f"config key 'model.name': cannot import {name!r} ({e}); make sure the module is "
                "on PYTHONPATH and the class exists"
            ) from e
        return cls
    if name not in _REGISTRY:
        raise ConfigError(
            f"config key 'model.name': unknown model {name!r}; use one of {', '.join(names())} "
            "or package.module:ClassName"
        )
    return _REGISTRY[name]


def build(name: str, kwargs: dict, **supplied) -> nnx.Module:
    """Constructs model `name` from config kwargs plus what the experiment supplies.

    Config keys the constructor does not accept fail with the accepted list.
    """
    cls = get(name)
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if not takes_any:
        accepted = [k for k in params if k not in ("self", *supplied)]
        for key in kwargs:
            if key not in params:
                raise ConfigError(
                    f"config key 'model.{key}' is not an argument of model {name!r}; "
                    f"it accepts: {', '.join(accepted)}"
                )
        supplied = {k: v for k, v in supplied.items() if k in params}
    return cls(**kwargs, **supplied)


def from_config(config, **supplied) -> nnx.Module:
    """The model `config.model.name` built from the config's `model.*` keys, its `dtype` and
    `param_dtype`, and what the experiment supplies (shapes, vocabulary, `rngs`)."""
    kwargs = {k: v for k, v in config.model.to_dict().items() if k != "name"}
    return build(
        config.model.name,
        kwargs,
        dtype=jnp.dtype(config.dtype),
        param_dtype=jnp.dtype(config.param_dtype),
        **supplied,
    )


# Import for registration side effects.
from ann.models import (  # noqa: E402,F401
    autoencoder,
    cnn,
    lm,
    mlp,
    recurrent,
    resnet,
    seq2seq,
    siamese,
    vit,
)
