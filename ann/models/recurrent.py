"""Recurrent forecasters: stacked LSTM (`lstm`) or GRU (`gru`) layers over a history window.

Input [batch, history, channels] -> forecast [batch, horizon, channels]. Each layer is an
`nnx.RNN` (a `scan` of `nnx.OptimizedLSTMCell` or `nnx.GRUCell` over time); dropout sits between
layers and before the head. The head reads the last layer's final hidden state and predicts the
whole future window at once (direct multi-step): no feeding back of its own predictions, so
errors do not compound over the horizon and one forward pass gives every step.

With `highway=k` > 0, a linear map from each channel's last k values to its future, shared by
the channels, is added to the head's output (LSTNet's autoregressive "highway", Lai et al.
2018): the linear part of the forecast (repeat the season, follow the level) is learnt directly,
and the recurrence models what it misses (regime changes, the noise's memory).

With `center=True` (the default) each window's per-channel mean over the history is subtracted
before the recurrence and added back to the forecast: the network models the shape of the
series, not its level, which the tanh-bounded state would otherwise have to carry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ann.config import COUNT, ConfigError, check_choice

CELLS = {"lstm": nnx.OptimizedLSTMCell, "gru": nnx.GRUCell}


def _orthogonal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """The cells' default recurrent init (Flax's `orthogonal()`, Saxe et al. 2014), drawn in
    float32 and cast to `dtype`: its QR decomposition has no bfloat16 or float16 kernel (LAPACK
    on the CPU: "Unsupported dtype bfloat16"), so `param_dtype=bfloat16` failed at the state's
    init. The same values as before for float32."""
    return nnx.initializers.orthogonal()(key, shape, jnp.float32).astype(dtype)


class RecurrentForecaster(nnx.Module):
    """Stacked recurrent layers and a direct multi-step head; `cell` is "lstm" or "gru"."""

    RANGES = {"hidden_size": COUNT, "num_layers": COUNT}  # checked with the config, before data
    CHOICES = {"cell": tuple(CELLS)}  # likewise

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        cell: str = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.0,
        center: bool = True,
        highway: int = 0,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if len(input_shape) != 2 or len(output_shape) != 2:
            raise ConfigError(
                f"recurrent forecasters read [time, channels] windows; got input shape "
                f"{tuple(input_shape)} and output shape {tuple(output_shape)}"
            )
        check_choice("model.cell", cell, self.CHOICES["cell"])
        for key, value in (("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool):  # RANGES: >= 1
                raise ConfigError(f"config key 'model.{key}' must be an int >= 1, got {value!r}")
        valid_int = isinstance(highway, int) and not isinstance(highway, bool)
        if not valid_int or not 0 <= highway <= input_shape[0]:
            raise ConfigError(
                f"config key 'model.highway' must be an int in [0, {input_shape[0]}] (steps of "
                f"history), got {highway!r}"
            )
        channels = int(input_shape[-1])
        self.cell_name = cell
        self.hidden_size = hidden_size
        self.output_shape = tuple(int(d) for d in output_shape)
        self.center = center
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        sizes = [channels] + [hidden_size] * num_layers
        # rngs=False: the carry starts at zeros (built in __call__), so no RNG state is stored
        # in the model and eval/export stay pure functions of the parameters.
        self.layers = nnx.List(
            nnx.RNN(CELLS[cell](a, b, recurrent_kernel_init=_orthogonal, **kw), rngs=False)
            for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.dropout = nnx.Dropout(dropout)
        out_features = self.output_shape[0] * self.output_shape[1]
        self.head = nnx.Linear(hidden_size, out_features, **kw)
        self.highway = highway
        # Shared by the channels: one linear map from a channel's last `highway` values to its
        # future (LSTNet's autoregressive "highway"); the recurrence learns what it misses.
        horizon = self.output_shape[0]
        self.linear = nnx.data(nnx.Linear(highway, horizon, **kw) if highway else None)

    def _zero_carry(self, batch: int) -> jax.Array | tuple[jax.Array, jax.Array]:
        # float32 carry whatever the compute dtype: the state accumulates over every step, and
        # the cells' updates (f * c + i * g) keep it in float32 once it starts there.
        h = jnp.zeros((batch, self.hidden_size), jnp.float32)
        return (h, h) if self.cell_name == "lstm" else h

    def __call__(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        """Forecast [batch, horizon, channels] for a history [batch, time, channels]."""
        level = x.mean(axis=1, keepdims=True) if self.center else jnp.zeros_like(x[:, :1])
        h = x - level
        for i, layer in enumerate(self.layers):
            if i:  # between layers only: the raw inputs are never dropped
                h = self.dropout(h, rngs=None if rngs is None else jax.random.fold_in(rngs, i))
            carry, h = layer(h, initial_carry=self._zero_carry(x.shape[0]), return_carry=True)
        last = carry[1] if self.cell_name == "lstm" else carry  # (c, h) for the LSTM
        last = self.dropout(last, rngs=None if rngs is None else jax.random.fold_in(rngs, 0))
        out = self.head(last).reshape(x.shape[0], *self.output_shape)
        if self.linear is not None:
            recent = (x - level)[:, -self.highway :].swapaxes(1, 2)  # [batch, channels, steps]
            out = out + self.linear(recent).swapaxes(1, 2)
        return out + level.astype(out.dtype)


def _fixed_cell(cell: str) -> Callable[[type[RecurrentForecaster]], type[RecurrentForecaster]]:
    """A class decorator fixing `cell`; the new __init__ advertises the base's arguments less
    `cell`, so `models.build` still refuses unknown `model.*` keys with the accepted list."""

    def fix(cls: type[RecurrentForecaster]) -> type[RecurrentForecaster]:
        def __init__(self, **kwargs) -> None:
            RecurrentForecaster.__init__(self, cell=cell, **kwargs)

        base = inspect.signature(RecurrentForecaster.__init__).parameters
        __init__.__signature__ = inspect.Signature([p for n, p in base.items() if n != "cell"])
        cls.__init__ = __init__
        return cls

    return fix


@_fixed_cell("lstm")
class LSTMForecaster(RecurrentForecaster):
    """`RecurrentForecaster` with LSTM cells (`nnx.OptimizedLSTMCell`)."""


@_fixed_cell("gru")
class GRUForecaster(RecurrentForecaster):
    """`RecurrentForecaster` with GRU cells (`nnx.GRUCell`)."""
