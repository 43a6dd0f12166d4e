"""Regression metrics and the baselines (least squares, seasonal naive, unigram) against
scikit-learn and hand-computed values."""

import jax.numpy as jnp
import numpy as np
import pytest

from ann.metrics.baselines import least_squares, seasonal_naive, unigram_log_probs
from ann.metrics.regression import regression_metrics


def test_metric_helpers_equal_scikit_learn():
    from sklearn import metrics as sk
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))
    y = x @ rng.normal(size=(4, 3)) + rng.normal(size=(50, 3))
    prediction = y + rng.normal(size=y.shape)
    got = regression_metrics(prediction, y)
    assert got["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(y, prediction)))
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(y, prediction))
    assert got["r2"] == pytest.approx(sk.r2_score(y, prediction))  # per target, averaged
    # A constant target: r2 is 1 for an exact fit, 0 otherwise (scikit-learn's convention).
    assert regression_metrics(np.ones(5), np.ones(5))["r2"] == 1.0
    assert regression_metrics(np.zeros(5), np.ones(5))["r2"] == 0.0
    weights, bias = least_squares(x, y)
    ols = LinearRegression().fit(x, y)
    np.testing.assert_allclose(weights, ols.coef_.T, rtol=1e-8)
    np.testing.assert_allclose(bias, ols.intercept_, rtol=1e-8)


def test_seasonal_naive_repeats_the_last_period():
    history = np.arange(10, dtype=np.float32).reshape(1, 10, 1)  # 0..9
    out = np.asarray(seasonal_naive(jnp.asarray(history), 5, 3))
    np.testing.assert_array_equal(out[0, :, 0], [7, 8, 9, 7, 8])


def test_unigram_log_probs_count_real_tokens_with_add_one_smoothing():
    tokens = np.array([[1, 1, 2, 0], [2, 2, 0, 0]])  # 0 is padding
    got = unigram_log_probs(tokens, vocab_size=4, pad_id=0)
    np.testing.assert_allclose(np.exp(got), np.array([1, 3, 4, 1]) / 9, rtol=1e-6)
    assert got.dtype == np.float32 and np.isfinite(got).all()
