"""Baselines a trained model is scored against: what a model must beat to be worth having.

- `least_squares`: ordinary least squares with an intercept (regression's linear baseline).
- `seasonal_naive`: each future step repeats the value one period earlier (Hyndman &
  Athanasopoulos, "Forecasting: Principles and Practice", 3rd ed., section 5.2).
- `unigram_log_probs`: token frequencies with add-one (Laplace) smoothing (the language model's
  baseline: a model that ignores context).
"""

from __future__ import annotations

import jax
import numpy as np


def least_squares(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ordinary least squares with an intercept: (weights [features, targets], bias [targets])
    minimizing |x @ weights + bias - y|^2, fit in float64 (minimum norm when underdetermined)."""
    design = np.concatenate([x, np.ones((len(x), 1))], axis=1).astype(np.float64)
    solution, *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
    return solution[:-1], solution[-1]


def seasonal_naive(history: jax.Array, horizon: int, period: int) -> jax.Array:
    """[batch, horizon, channels]: each future step is the value one period before it, the last
    period of `history` [batch, time, channels] repeated."""
    index = history.shape[1] - period + np.arange(horizon) % period
    return history[:, index]


def unigram_log_probs(tokens: np.ndarray, vocab_size: int, pad_id: int) -> np.ndarray:
    """Natural-log unigram probabilities [vocab_size] float32 of the ids in `tokens` (any shape),
    padding left out, with add-one smoothing: an id unseen in `tokens` must not give an infinite
    cross-entropy on other data."""
    ids = np.asarray(tokens).reshape(-1)
    counts = np.bincount(ids[ids != pad_id], minlength=vocab_size)
    return np.log((counts + 1) / (counts + 1).sum()).astype(np.float32)
