"""Classification metrics over a whole eval split, from a confusion matrix or per-row scores.

The confusion matrix is summed on the device batch by batch (padding rows masked out), so
precision, recall and F1 need no per-row data; AUROC ranks every row's score and so reads the
rows the loop gathers. Definitions follow scikit-learn (tests check against it): macro averages
over classes, a class with no predictions (or no rows) scores 0 precision (recall), and AUROC
for several classes is the macro one-vs-rest average.
"""

from __future__ import annotations

import jax
import numpy as np


def confusion(targets: jax.Array, predictions: jax.Array, num_classes: int, mask: jax.Array):
    """[true class, predicted class] counts of one batch's real rows (traced on the device)."""
    true = jax.nn.one_hot(targets, num_classes) * mask[:, None]
    return true.T @ jax.nn.one_hot(predictions, num_classes)


def _safe_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def precision_recall_f1(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix [true, predicted]."""
    matrix = np.asarray(matrix, np.float64)
    tp = np.diag(matrix)
    precision = _safe_divide(tp, matrix.sum(axis=0))
    recall = _safe_divide(tp, matrix.sum(axis=1))
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": matrix.sum(axis=1)}


def average_ranks(x: np.ndarray) -> np.ndarray:
    """The rank (1..n) of each value within its column of `x` [n, k], float64, tied values
    sharing the average of their ranks; a column holding NaN is all NaN. The same numbers as
    `scipy.stats.rankdata(x, axis=0)` (method "average", nan_policy "propagate"; the tests
    compare them), written here because importing scipy.stats cost every training process
    1.2-1.5 s on 2 cores for this one function (docs/benchmarks.md, "Issue 16, session 13").
    All columns at once: one sort, then each tie group's first and last sorted position."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, axis=0, kind="stable")
    ordered = np.take_along_axis(x, order, axis=0)
    position = np.arange(len(x))[:, None]
    starts = np.ones(x.shape, bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    ends = np.ones(x.shape, bool)
    ends[:-1] = starts[1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=0)
    last = np.minimum.accumulate(np.where(ends, position, len(x))[::-1], axis=0)[::-1]
    ranks = np.empty_like(x)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=0)
    ranks[:, np.isnan(x).any(axis=0)] = np.nan
    return ranks


def _column_aurocs(hits: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each column of `scores` [rows, k] against the bool `hits` [rows, k], from
    average ranks (Mann-Whitney U; ties count half); NaN for a column without both classes.
    All columns are ranked at once: a fixed cost paid per column had been a third of the
    digits CNN's eval (docs/benchmarks.md, "Issue 16, session 10")."""
    positives = hits.sum(axis=0)
    negatives = len(hits) - positives
    ranks = average_ranks(scores)
    u = np.where(hits, ranks, 0.0).sum(axis=0) - positives * (positives + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((positives > 0) & (negatives > 0), u / (positives * negatives), np.nan)


def binary_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the chance a random positive outscores a random negative
    (ties count half), computed from average ranks (Mann-Whitney U). NaN without both classes."""
    labels = np.asarray(labels).astype(bool)
    return float(_column_aurocs(labels[:, None], np.asarray(scores)[:, None])[0])


def auroc(targets: np.ndarray, probabilities: np.ndarray) -> float:
    """Binary AUROC of class 1's probability, or the macro one-vs-rest AUROC over the classes
    present in `targets` (scikit-learn's `roc_auc_score(multi_class="ovr")` over those).

    `targets` [rows] int class ids, `probabilities` [rows, classes] float."""
    targets, probabilities = np.asarray(targets), np.asarray(probabilities)
    if probabilities.shape[-1] == 2:
        return binary_auroc(targets == 1, probabilities[:, 1])
    present = np.unique(targets)
    hits = targets[:, None] == present[None, :]
    return float(np.mean(_column_aurocs(hits, probabilities[:, present])))


def summary(matrix: np.ndarray) -> dict[str, float]:
    """Macro precision, recall and F1 (scalars to log) from a confusion matrix, averaged over
    the classes that occur as a target or a prediction (as scikit-learn does)."""
    matrix = np.asarray(matrix)
    seen = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0
    per_class = precision_recall_f1(matrix)
    return {name: float(per_class[name][seen].mean()) for name in ("precision", "recall", "f1")}
