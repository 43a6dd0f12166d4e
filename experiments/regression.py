"""Regression: numeric inputs in, one or more continuous targets out, scored against a linear
baseline.

Reads the data set's TFDS `supervised_keys` (input, target) with a float target of any fixed
shape (a scalar for `diabetes`). Inputs are standardized per channel (last axis) and the target
per element, both with statistics of the training split, on the device, inside `loss`,
`eval_sums` and `predict` alike: the model fits a target of mean 0 and std 1, and `predict`
returns `prediction` in the target's own units, so an export carries the same scaling.

Loss, in standardized target units and in float32 whatever the compute dtype: `task.loss` =
"mse" (default) or "huber" (quadratic within `task.huber_delta` standard deviations, linear
beyond: less pulled by outlying targets).

Eval, over every row of the split (padding rows dropped), in the target's units: `rmse`, `mae`
(over all target values), `r2` (per target element, averaged, as scikit-learn's `r2_score`), and
`loss`. With `task.baseline` (default on), an ordinary least squares fit on the training split
at setup is scored on the same rows: `baseline_rmse`, and `rmse_ratio` = rmse / baseline_rmse
(< 1: the network beats the linear model).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from ann import models
from ann.config import POSITIVE, task_settings
from ann.data import Split
from ann.metrics.baselines import least_squares
from ann.metrics.regression import regression_metrics
from experiments.common import (
    Standardizer,
    call_model,
    feature_spec,
    first_rows,
    made_for,
    mean_of,
    misfit,
    spec,
    supervised_keys,
)

FIT_ROWS = 100_000  # training rows read for the statistics and the least squares baseline
LOSSES = ("mse", "huber")
SETTINGS = {
    "loss": "mse",
    "huber_delta": 1.0,  # in standard deviations of the target
    "baseline": True,  # fit and score the least squares baseline
}
# huber_delta is read by the huber loss only (ann.config.check_task_keys_apply).
READ_ONLY_WHEN = {"huber_delta": ("loss", ("huber",))}


class Regression:
    tokens_per_example = 0  # not a token task: the loop logs no tokens/s
    task_defaults, task_read_only_when = SETTINGS, READ_ONLY_WHEN

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.settings = task_settings(config, SETTINGS, {"loss": LOSSES}, {"huber_delta": POSITIVE})
        self.input_key = self.target_key = ""
        self.input_shape: tuple[int, ...] = ()
        self.target_shape: tuple[int, ...] = ()
        self.inputs: dict = {}  # the input's signature
        self.preprocess = Standardizer()  # per input channel
        self.scale_target = Standardizer()  # per target element
        self.baseline: tuple[np.ndarray, np.ndarray] | None = None

    def setup(self, train: Split) -> None:
        info = train.info
        self.input_key, self.target_key = supervised_keys(
            train, "regression", "(input, target)", " (e.g. data.name=diabetes)", self.config
        )
        target = info.features[self.target_key]
        if hasattr(target, "num_classes") or not np.issubdtype(target.np_dtype, np.floating):
            raise misfit(
                f"feature {self.target_key!r} of {train.name!r} is not a float target; "
                + (
                    made_for(train.name, "regression").strip(" ()")
                    or "use --config.experiment=classification for class labels"
                ),
                train.name,
                "regression",
                self.config,
            )
        self.input_shape = tuple(info.features[self.input_key].shape)
        self.inputs = {self.input_key: feature_spec(train, self.input_key)}
        self.target_shape = tuple(target.shape)
        rows = first_rows(train, FIT_ROWS)
        x = rows[self.input_key].astype(np.float64)
        y = rows[self.target_key].astype(np.float64)
        self.preprocess = Standardizer.per_channel(x)
        self.scale_target = Standardizer.per_element(y)
        if self.settings["baseline"]:
            # Fit on the standardized inputs (as the network sees them) for a well-conditioned
            # system; least squares is invariant to that scaling, so it is the plain OLS fit.
            weights, bias = least_squares(
                self.preprocess(x, np.float64).reshape(len(x), -1), y.reshape(len(y), -1)
            )
            self.baseline = (weights.astype(np.float32), bias.astype(np.float32))

    @property
    def target_size(self) -> int:
        return math.prod(self.target_shape)

    def fields(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "inputs": rows[self.input_key],
            "targets": rows[self.target_key].astype(np.float32),
        }

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        # `num_classes` is the width of the output layer for ann's models (one unit per target
        # value here); `output_shape` is for models that shape their own output.
        return models.from_config(
            self.config,
            input_shape=self.input_shape,
            num_classes=self.target_size,
            output_shape=self.target_shape,
            rngs=rngs,
        )

    def _scaled(self, model: nnx.Module, inputs: jax.Array, rng: jax.Array | None) -> jax.Array:
        """The prediction in standardized target units, float32 whatever the compute dtype."""
        out = call_model(
            model,
            self.config.model.name,
            self.preprocess(inputs),
            rngs=rng,
            per_row=self.target_size,
            needs=f"regression needs float predictions of {self.target_size} value(s) per row "
            f"(the target's shape {list(self.target_shape)})",
        ).astype(jnp.float32)
        return out.reshape(out.shape[0], *self.target_shape)

    def _pointwise(self, error: jax.Array) -> jax.Array:
        if self.settings["loss"] == "huber":
            return optax.huber_loss(error, delta=self.settings["huber_delta"])
        return jnp.square(error)

    def _row_loss(self, error: jax.Array) -> jax.Array:
        return self._pointwise(error).reshape(error.shape[0], -1).mean(-1)

    def input_signature(self) -> dict:
        return self.inputs

    def output_signature(self) -> dict:
        return {"prediction": spec("float32", self.target_shape)}

    def predict(self, model: nnx.Module, inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        scaled = self._scaled(model, inputs[self.input_key], None)
        return {"prediction": self.scale_target.invert(scaled)}

    def loss(self, model, batch, rng):
        error = self._scaled(model, batch["inputs"], rng) - self.scale_target(batch["targets"])
        loss = self._row_loss(error).mean()
        # The batch's RMSE in the target's units, for the progress line.
        rmse = jnp.sqrt(jnp.square(error * self.scale_target.std).mean())
        return loss, {"loss": loss, "rmse": rmse}

    def eval_sums(self, model, batch):
        error = self._scaled(model, batch["inputs"], None) - self.scale_target(batch["targets"])
        mask = batch["mask"]
        return {"loss": (self._row_loss(error) * mask).sum(), "count": mask.sum()}

    def eval_rows(self, model, batch):
        rows = {
            "prediction": self.predict(model, {self.input_key: batch["inputs"]})["prediction"],
            "targets": batch["targets"],
        }
        if self.baseline is not None:
            weights, bias = self.baseline
            x = self.preprocess(batch["inputs"]).reshape(batch["inputs"].shape[0], -1)
            # Full float32 precision: accelerators default to bfloat16 passes for matmuls.
            linear = jnp.dot(x, weights, precision=jax.lax.Precision.HIGHEST) + bias
            rows["baseline"] = linear.reshape(linear.shape[0], *self.target_shape)
        return rows

    def eval_metrics(self, sums, rows=None):
        result = {
            "loss": mean_of(sums, "loss", "count"),
            **regression_metrics(rows["prediction"], rows["targets"]),
        }
        if "baseline" in rows:
            baseline = regression_metrics(rows["baseline"], rows["targets"])["rmse"]
            result["baseline_rmse"] = baseline
            result["rmse_ratio"] = result["rmse"] / max(baseline, 1e-12)
        return result
