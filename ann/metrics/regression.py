"""Regression metrics over a whole split, in the target's own units."""

from __future__ import annotations

import numpy as np


def regression_metrics(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """rmse and mae over all values, r2 per target element averaged; rows on axis 0."""
    rows = max(len(target), 1)
    error = prediction.astype(np.float64).reshape(rows, -1) - target.reshape(rows, -1)
    target = target.astype(np.float64).reshape(rows, -1)
    residual = np.square(error).sum(0)
    total = np.square(target - target.mean(0)).sum(0)
    # A constant target: r2 is 1 for an exact fit and 0 otherwise (scikit-learn's convention).
    safe = np.where(total > 0, total, 1.0)
    r2 = np.where(total > 0, 1.0 - residual / safe, np.where(residual == 0, 1.0, 0.0))
    return {
        "rmse": float(np.sqrt(np.square(error).mean())),
        "mae": float(np.abs(error).mean()),
        "r2": float(r2.mean()),
    }
