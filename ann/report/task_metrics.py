"""Each task's headline metrics over any subset of a split's rows (what `ann.report.slices`
computes per slice).

A metric function takes (preds, index): the split's Predictions and the row indices of the
subset (int [m]), and returns {metric: float, or None where undefined (AUROC of rows of one
class)}; its first metric is the headline. HEADLINES says, per experiment, that metric and
whether higher is better. Per-row quantities (a retrieval query's hits, a sequence's exact
match) are computed over the whole split first, so a subset's value is the mean of its rows'
and slices weighted by their sizes add up to the whole.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from ann.metrics.baselines import seasonal_naive
from ann.metrics.regression import regression_metrics
from ann.metrics.retrieval import RECALL_AT, per_query
from ann.report.predictions import Predictions

MetricFn = Callable[[Predictions, np.ndarray], dict[str, float | None]]


def subset(preds: Predictions, index: np.ndarray) -> Predictions:
    """`preds` restricted to the rows `index` (int [m]) of its rows and outputs."""
    return dataclasses.replace(
        preds,
        rows={k: np.asarray(v)[index] for k, v in preds.rows.items()},
        outputs={k: np.asarray(v)[index] for k, v in preds.outputs.items()},
        validation=None,
    )


def classification(preds: Predictions, index: np.ndarray) -> dict[str, float | None]:
    """accuracy and macro precision, recall and F1 over every class of the task
    (`ann.report.sections.classification.headline`)."""
    from ann.report.sections.classification import headline

    return headline(subset(preds, index))


def regression(preds: Predictions, index: np.ndarray) -> dict[str, float | None]:
    """rmse, mae, r2 in the target's units (`ann.metrics.regression.regression_metrics`)."""
    target = preds.rows[preds.experiment.target_key][index]
    return regression_metrics(np.asarray(preds.outputs["prediction"])[index], target)


def naive_forecast(preds: Predictions) -> np.ndarray:
    """The seasonal-naive forecast [n, horizon, channels] of every row (`seasonal_naive`)."""
    exp = preds.experiment
    future = preds.rows[exp.future_key]
    history = np.asarray(preds.rows[exp.history_key], np.float32)
    return np.asarray(seasonal_naive(history, future.shape[1], exp.period))


def forecasting(preds: Predictions, index: np.ndarray) -> dict[str, float | None]:
    """mae and rmse of the forecast over every future point, the same mae for the
    seasonal-naive baseline, and mae_ratio = mae / naive_mae (< 1: the model beats it)."""
    from sklearn import metrics as skm  # here: `ann train` reads HEADLINES (1.4 s of sklearn)

    future = np.asarray(preds.rows[preds.experiment.future_key], np.float64)[index].reshape(-1)
    forecast = np.asarray(preds.outputs["forecast"], np.float64)[index].reshape(-1)
    naive = naive_forecast(preds)[index].reshape(-1)
    mae = float(skm.mean_absolute_error(future, forecast))
    naive_mae = float(skm.mean_absolute_error(future, naive))
    return {
        "mae": mae,
        "rmse": float(math.sqrt(skm.mean_squared_error(future, forecast))),
        "naive_mae": naive_mae,
        "mae_ratio": mae / max(naive_mae, 1e-12),
    }


def anomaly_detection(preds: Predictions, index: np.ndarray) -> dict[str, float | None]:
    """auroc of the score against the labels (None unless the subset holds both normal and
    anomalous rows), the share of anomalous rows and the mean score."""
    from sklearn import metrics as skm

    y = preds.rows[preds.experiment.label_key][index]
    score = np.asarray(preds.outputs["score"], np.float64)[index]
    both = 0 < y.sum() < len(y)
    return {
        "auroc": float(skm.roc_auc_score(y, score)) if both else None,
        "anomalous_share": float(np.mean(y)),
        "mean_score": float(score.mean()),
    }


# The last split's leave-one-out ranking, reused by every slice of it: (embeddings, per_query).
_last_queries: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []


def _queries(preds: Predictions) -> dict[str, np.ndarray]:
    embeddings = preds.outputs["embedding"]
    if not _last_queries or _last_queries[0][0] is not embeddings:
        labels = preds.rows[preds.experiment.label_key]
        _last_queries[:] = [(embeddings, per_query(np.asarray(embeddings), labels, RECALL_AT))]
    return _last_queries[0][1]


def retrieval(preds: Predictions, index: np.ndarray) -> dict[str, float | None]:
    """recall_at_k (k = 1, 5) and map of the subset's queries, each ranked against the whole
    split (`ann.metrics.retrieval.per_query`)."""
    rows = _queries(preds)
    has = rows["has_relevant"][index]
    return {
        **{f"recall_at_{k}": float(rows[f"hit_at_{k}"][index].mean()) for k in RECALL_AT},
        "map": float(rows["ap"][index][has].mean()) if has.any() else None,
    }


def target_lengths(preds: Predictions) -> np.ndarray:
    """int [n]: each target's length in tokens before `<eos>` (or its non-padding tokens)."""
    exp = preds.experiment
    target = np.asarray(preds.rows["target"])
    eos = target == exp.eos_id
    real = (target != exp.pad_id).sum(-1)
    return np.where(eos.any(-1), eos.argmax(-1), real)


def answers(preds: Predictions) -> np.ndarray:
    """int [n, t]: the split's targets in the order `predict` answers in, reading order
    (`Seq2Seq.reading_order`: digit_strings' `add` sums are stored least-significant digit
    first); the targets as stored where the experiment or the rows have nothing to turn."""
    target = np.asarray(preds.rows["target"])
    turn = getattr(preds.experiment, "reading_order", None)
    if turn is None or "source" not in preds.rows:
        return target
    return np.asarray(turn(target, np.asarray(preds.rows["source"])))


def seq2seq(preds: Predictions, index: np.ndarray) -> dict[str, float | None]:
    """exact_match: the share of rows whose greedy decoding equals the target token for token
    (`<eos>` and the padding after it included), and decoded_token_accuracy over the real
    target tokens (`<eos>` included, padding not) of that decoding: not training's
    `token_accuracy`, which is teacher-forced (each token predicted from the true ones before)."""
    target = answers(preds)[index]
    tokens = np.asarray(preds.outputs["tokens"])[index]
    real = target != preds.experiment.pad_id
    right = ((tokens == target) & real).sum()
    return {
        "exact_match": float((tokens == target).all(-1).mean()),
        "decoded_token_accuracy": float(right / max(int(real.sum()), 1)),
    }


# Headline metrics that are a share of the subset's rows (each row right or not: a row-mean of
# 0/1), so the count of right rows is round(value * size) and a binomial interval applies.
PROPORTIONS = frozenset({"accuracy", "recall_at_1", "exact_match"})

# experiment name -> (metric function, headline metric, higher is better)
HEADLINES: dict[str, tuple[MetricFn, str, bool]] = {
    "classification": (classification, "accuracy", True),
    "regression": (regression, "rmse", False),
    "forecasting": (forecasting, "mae", False),
    "anomaly_detection": (anomaly_detection, "auroc", True),
    "retrieval": (retrieval, "recall_at_1", True),
    "seq2seq": (seq2seq, "exact_match", True),
}
