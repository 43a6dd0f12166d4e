"""Forecasting: a history window [time, channels] in, the next `horizon` steps out.

Reads a data set whose TFDS `supervised_keys` are (history, future), both [time, channels] with
the same channels (`sensor_series`). Values are standardized per channel with the training
split's mean and std, on the device, inside `loss`, `eval_sums` and `predict` alike, so an
export carries the same scaling; `predict` returns the forecast in the data's own units.

Loss: `task.loss` = "mse" (default) or "mae", over every future point in standardized units, in
float32 whatever the compute dtype. Eval, in the data's units, over every future point of the
split (padding rows masked): `mae`, `rmse`, and the same for the seasonal-naive baseline
(`naive_mae`, `naive_rmse`: each future step repeats the value one period earlier, taken from the
history's last period) and `mae_ratio` = mae / naive_mae (< 1: the model beats the baseline).
The period is `task.period`, or, when that is 0 (the default), the data set's
`info.metadata["period"]`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from ann import models
from ann.config import NONNEGATIVE, ConfigError, KeyValueError, task_settings
from ann.data import Split
from ann.metrics.baselines import seasonal_naive
from experiments.common import (
    Standardizer,
    call_model,
    first_rows,
    made_for,
    mean_of,
    misfit,
    spec,
    supervised_keys,
)

STATS_ROWS = 10_000  # rows of the training split used for the channel statistics
LOSSES = ("mse", "mae")
SETTINGS = {
    "period": 0,  # seasonal period of the naive baseline; 0 = the data set's metadata
    "loss": "mse",
}


class Forecasting:
    tokens_per_example = 0  # not a token task: the loop logs no tokens/s

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.settings = task_settings(config, SETTINGS, {"loss": LOSSES}, {"period": NONNEGATIVE})
        self.history_key = self.future_key = ""
        self.history_shape: tuple[int, ...] = ()
        self.future_shape: tuple[int, ...] = ()
        self.period = 0
        self.standardize = Standardizer()

    def setup(self, train: Split) -> None:
        info = train.info
        self.history_key, self.future_key = supervised_keys(
            train, "forecasting", "(history, future)", " (use data.name=sensor_series)", self.config
        )
        self.history_shape = tuple(info.features[self.history_key].shape)
        self.future_shape = tuple(info.features[self.future_key].shape)
        if (
            len(self.history_shape) != 2
            or len(self.future_shape) != 2
            or self.history_shape[1] != self.future_shape[1]
        ):
            raise misfit(
                f"data set {train.name!r}: forecasting needs [time, channels] history and future "
                f"with the same channels, got {self.history_shape} and {self.future_shape}"
                f"{made_for(train.name, 'forecasting')}",
                train.name,
                "forecasting",
                self.config,
            )
        recorded = int((info.metadata or {}).get("period", 0))
        period = self.settings["period"] or recorded
        if not period:
            raise ConfigError(
                f"data set {train.name!r} records no seasonal period in its metadata; set "
                "--config.task.period=<steps per season>"
            )
        steps = self.history_shape[0]
        if period > steps:
            # Unset reads the data set's own period, where it fits in the history.
            own = 0 < recorded <= steps
            raise KeyValueError(
                "task.period",
                f"config key 'task.period'={period} is longer than the history ({steps} "
                "steps); the seasonal-naive baseline needs one period",
                f"set --config.task.period=0 (the data set's own, {recorded})"
                if own
                else f"e.g. --config.task.period={steps}",
                example=None if own else steps,
                file_fix=f"drop the line (the data set's own period, {recorded}, is read)",
            )
        self.period = period
        self.standardize = Standardizer.per_channel(first_rows(train, STATS_ROWS)[self.history_key])

    def fields(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "history": rows[self.history_key].astype(np.float32),
            "future": rows[self.future_key].astype(np.float32),
        }

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        return models.from_config(
            self.config,
            input_shape=self.history_shape,
            output_shape=self.future_shape,
            rngs=rngs,
        )

    def _forecast(self, model: nnx.Module, history: jax.Array, rng: jax.Array | None) -> jax.Array:
        """The forecast in standardized units, float32 whatever the compute dtype."""
        return call_model(
            model,
            self.config.model.name,
            self.standardize(history),
            rngs=rng,
            per_row=self.future_shape,
            needs=f"forecasting needs float forecasts [batch, *{list(self.future_shape)}] "
            "(the future's shape)",
        ).astype(jnp.float32)

    def input_signature(self) -> dict:
        return {self.history_key: spec("float32", self.history_shape)}

    def output_signature(self) -> dict:
        return {"forecast": spec("float32", self.future_shape)}

    def predict(self, model: nnx.Module, inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        scaled = self._forecast(model, inputs[self.history_key], None)
        return {"forecast": self.standardize.invert(scaled)}

    def _pointwise(self, error: jax.Array) -> jax.Array:
        return jnp.abs(error) if self.settings["loss"] == "mae" else jnp.square(error)

    def loss(self, model, batch, rng):
        error = self._forecast(model, batch["history"], rng) - self.standardize(batch["future"])
        loss = self._pointwise(error).mean()
        return loss, {"loss": loss, "mae_scaled": jnp.abs(error).mean()}

    def eval_sums(self, model, batch):
        future = batch["future"].astype(jnp.float32)
        scaled = self._forecast(model, batch["history"], None)
        error = self.standardize.invert(scaled) - future
        naive = seasonal_naive(batch["history"].astype(jnp.float32), future.shape[1], self.period)
        naive_error = naive - future
        mask = batch["mask"][:, None, None]
        points = mask.sum() * future.shape[1] * future.shape[2]
        return {
            "loss": (self._pointwise(scaled - self.standardize(future)) * mask).sum(),
            "abs": (jnp.abs(error) * mask).sum(),
            "sq": (jnp.square(error) * mask).sum(),
            "naive_abs": (jnp.abs(naive_error) * mask).sum(),
            "naive_sq": (jnp.square(naive_error) * mask).sum(),
            "points": points,
        }

    def eval_rows(self, model, batch):
        return {}  # the sums are enough

    def eval_metrics(self, sums, rows=None):
        mae, naive_mae = mean_of(sums, "abs", "points"), mean_of(sums, "naive_abs", "points")
        return {
            "loss": mean_of(sums, "loss", "points"),
            "mae": mae,
            "rmse": float(np.sqrt(mean_of(sums, "sq", "points"))),
            "naive_mae": naive_mae,
            "naive_rmse": float(np.sqrt(mean_of(sums, "naive_sq", "points"))),
            "mae_ratio": mae / max(naive_mae, 1e-12),
        }
