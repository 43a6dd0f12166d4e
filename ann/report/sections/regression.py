"""Regression's report: where the errors are. Residuals (target - prediction) against the
prediction, and the error by decile of the target (does the model shrink towards the mean?).
Every target element counts as one point (a scalar target: one per row), in the target's
units."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ann.metrics.regression import regression_metrics
from ann.report import extreme, metric_text, significant, tied_text
from ann.report.predictions import Predictions
from ann.report.sections import Section
from ann.report.slicing import quantile_buckets

DECILES = 10
MAX_POINTS = 5000  # the scatter draws at most this many points (every k-th), the metrics all


def _points(preds: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """(target, prediction) float64 [points]: every target element of every row."""
    target = np.asarray(preds.rows[preds.experiment.target_key], np.float64).reshape(-1)
    prediction = np.asarray(preds.outputs["prediction"], np.float64).reshape(-1)
    return target, prediction


def baseline_points(preds: Predictions) -> np.ndarray | None:
    """The least-squares baseline's prediction float64 [points] for the split's rows, in the
    order of `_points`: the experiment's `baseline` (weights, bias), fit on the train split's
    standardized inputs at setup as training scores it (`val/baseline_rmse`); None for a run
    with `task.baseline` off (or an experiment without one)."""
    exp = preds.experiment
    fitted = getattr(exp, "baseline", None)
    if fitted is None or getattr(exp, "input_key", "") not in preds.rows:
        return None
    weights, bias = (np.asarray(v, np.float64) for v in fitted)
    x = np.asarray(exp.preprocess(np.asarray(preds.rows[exp.input_key]), np.float64))
    return (x.reshape(len(x), -1) @ weights + bias).reshape(-1)


def by_target_decile(target: np.ndarray, prediction: np.ndarray) -> list[dict]:
    """One entry per decile of the target (`quantile_buckets`: [lo, hi), the last [lo, hi];
    tied edges merge deciles): low, high, count, rmse and mae (`regression_metrics`) and bias,
    the mean residual (target - prediction: > 0 means the model predicts too low there)."""
    bucket, edges = quantile_buckets(target, DECILES)
    table = []
    for b in range(len(edges) - 1):
        rows = bucket == b
        if not rows.any():
            continue
        m = regression_metrics(prediction[rows], target[rows])
        table.append(
            {
                "decile": b + 1,
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": int(rows.sum()),
                "rmse": m["rmse"],
                "mae": m["mae"],
                "bias": float((target[rows] - prediction[rows]).mean()),
            }
        )
    return table


def residual_figure(target: np.ndarray, prediction: np.ndarray, units: str, split: str) -> Figure:
    residual = target - prediction
    step = max(1, len(target) // MAX_POINTS)
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(prediction[::step], residual[::step], s=12, alpha=0.6, edgecolors="none")
    ax.axhline(0, color="black", lw=1)
    ax.set_xlabel(f"predicted {units}")
    ax.set_ylabel("residual (target - predicted)")
    shown = "" if step == 1 else f", every {step}th shown"
    ax.set_title(f"Residuals vs predicted ({split}, {len(target):,} points{shown})", fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def _direction(bias: float) -> str:
    """What a bias (mean of target - predicted) says of the predictions, for the note."""
    return ": predicted too low" if bias > 0 else ": predicted too high" if bias < 0 else ""


def decile_figure(table: list[dict], units: str, split: str) -> Figure:
    fig = Figure(figsize=(7.2, 4.0), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(table))
    ax.bar(x - 0.2, [t["mae"] for t in table], width=0.4, label="MAE")
    # The sign said: a bar above 0 is a decile the model predicts too low.
    label = "bias: mean of target - predicted (> 0: predicted too low)"
    ax.bar(x + 0.2, [t["bias"] for t in table], width=0.4, label=label)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, [f"{t['low']:.3g}-\n{t['high']:.3g}" for t in table], fontsize=8)
    counts = [t["count"] for t in table] or [0]
    each = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)} to {max(counts)}"
    ax.set_xlabel(f"decile of the target ({units} from-to; {each} points each)")
    ax.set_ylabel(f"error ({units} units)")
    ax.set_title(f"Error by target decile ({split})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def sections(preds: Predictions) -> list[Section]:
    """Overall rmse, mae, r2 and, where the run fit one (`task.baseline`), the least-squares
    baseline's rmse and mae and rmse_ratio (< 1: the model beats it); the residual scatter; the
    error by target decile."""
    target, prediction = _points(preds)
    units = f"{preds.experiment.target_key}"
    overall = regression_metrics(prediction, target)
    table = by_target_decile(target, prediction)
    worst, tied = extreme(table, lambda t: t["mae"], lowest=False)
    metrics = {**overall, "points": int(len(target))}
    note = (
        ", ".join(f"{k} {metric_text(k, overall[k])}" for k in ("rmse", "mae", "r2"))
        + f" over {len(target):,} points"
    )
    baseline = baseline_points(preds)
    if baseline is not None:  # training's baseline_rmse and rmse_ratio, for this split's rows
        fit = regression_metrics(baseline, target)
        ratio = overall["rmse"] / max(fit["rmse"], 1e-12)
        metrics.update(baseline_rmse=fit["rmse"], baseline_mae=fit["mae"], rmse_ratio=ratio)
        beats = "the model beats it" if ratio < 1 else "the model does not beat it"
        note += (
            f"; least-squares baseline rmse {metric_text('rmse', fit['rmse'])} (rmse_ratio "
            f"{metric_text('rmse_ratio', ratio)}: {beats})"
        )
    return [
        Section(
            title="Residuals",
            metrics=metrics,
            figures={"residuals": residual_figure(target, prediction, units, preds.split)},
            notes=[note],
        ),
        Section(
            title="Error by target decile",
            metrics={"deciles": table},
            figures={"error_by_decile": decile_figure(table, units, preds.split)},
            notes=[
                f"largest MAE {significant(worst['mae'])} in decile {worst['decile']} "
                f"({significant(worst['low'])} to {significant(worst['high'])}, bias "
                f"{significant(worst['bias'], sign=True)}{_direction(worst['bias'])})"
                + tied_text(tied)
            ],
        ),
    ]
