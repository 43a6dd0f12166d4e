"""Forecasting's report: the mean absolute error at each step ahead, against the seasonal-naive
baseline (each future step repeats the value one period earlier, `ann.metrics.baselines`).
Errors in the data's units, over every row and channel."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import mean_absolute_error

from ann.report import metric_text
from ann.report.predictions import Predictions
from ann.report.sections import Section
from ann.report.task_metrics import forecasting, naive_forecast


def mae_by_horizon(future: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    """float64 [horizon]: MAE at each step ahead over rows and channels ([rows, horizon,
    channels] inputs; scikit-learn's mean_absolute_error, one output per step)."""
    horizon = future.shape[1]
    as_outputs = np.moveaxis(np.asarray(future, np.float64), 1, -1).reshape(-1, horizon)
    predicted = np.moveaxis(np.asarray(forecast, np.float64), 1, -1).reshape(-1, horizon)
    return mean_absolute_error(as_outputs, predicted, multioutput="raw_values")


def horizon_figure(model: np.ndarray, naive: np.ndarray, period: int, split: str) -> Figure:
    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    steps = np.arange(1, len(model) + 1)
    ax.plot(steps, model, marker="o", ms=3, label="model")
    ax.plot(steps, naive, marker="s", ms=3, ls="--", label=f"seasonal naive (period {period})")
    ax.set_xlabel("steps ahead")
    ax.set_ylabel("MAE")
    ax.set_ylim(bottom=0)
    ax.set_title(f"MAE by horizon ({split})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def sections(preds: Predictions) -> list[Section]:
    """Overall mae, rmse, naive_mae and mae_ratio (`task_metrics.forecasting`); the MAE at each
    step ahead for the model and the baseline."""
    exp = preds.experiment
    future = np.asarray(preds.rows[exp.future_key])
    model = mae_by_horizon(future, preds.outputs["forecast"])
    naive = mae_by_horizon(future, naive_forecast(preds))
    overall = forecasting(preds, np.arange(len(future)))
    beats = int((model < naive).sum())
    return [
        Section(
            title="MAE by horizon",
            metrics={
                **overall,
                "period": int(exp.period),
                "mae_by_horizon": model.tolist(),
                "naive_mae_by_horizon": naive.tolist(),
            },
            figures={"mae_by_horizon": horizon_figure(model, naive, exp.period, preds.split)},
            notes=[
                f"mae {metric_text('mae', overall['mae'])} vs seasonal naive "
                f"{metric_text('naive_mae', overall['naive_mae'])} (ratio "
                f"{metric_text('mae_ratio', overall['mae_ratio'])}); better at {beats} of "
                f"{len(model)} steps",
            ],
        )
    ]
