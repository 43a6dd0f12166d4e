"""ann's classification metrics against scikit-learn's, including the awkward cases."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as sk

from ann.metrics import classification as cm


def _random(seed, n, classes, missing=()):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, n)
    for c in missing:
        targets[targets == c] = (c + 1) % classes
    scores = rng.random((n, classes)) + 0.8 * np.eye(classes)[targets]
    return targets, scores / scores.sum(1, keepdims=True)


@pytest.mark.parametrize("classes,missing", [(2, ()), (5, ()), (6, (3,))])
def test_metrics_match_scikit_learn(classes, missing):
    targets, probabilities = _random(classes, 300, classes, missing)
    predictions = probabilities.argmax(1)
    mask = np.ones(len(targets), np.float32)
    matrix = np.asarray(cm.confusion(jnp.asarray(targets), jnp.asarray(predictions), classes, mask))
    np.testing.assert_array_equal(
        matrix, sk.confusion_matrix(targets, predictions, labels=range(classes))
    )
    got = cm.summary(matrix)
    for name in ("precision", "recall", "f1"):
        want = getattr(sk, f"{name}_score")(targets, predictions, average="macro", zero_division=0)
        assert got[name] == pytest.approx(want), name
    if classes == 2:
        want_auroc = sk.roc_auc_score(targets, probabilities[:, 1])
    elif not missing:
        want_auroc = sk.roc_auc_score(targets, probabilities, multi_class="ovr")
    else:  # scikit-learn refuses a class without rows; ann averages over the classes present
        want_auroc = np.mean(
            [sk.roc_auc_score(targets == c, probabilities[:, c]) for c in np.unique(targets)]
        )
    assert cm.auroc(targets, probabilities) == pytest.approx(want_auroc)


def test_auroc_counts_ties_half_and_is_nan_with_one_class():
    assert cm.binary_auroc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    labels, scores = np.array([0, 0, 1, 1, 1]), np.array([0.1, 0.4, 0.4, 0.8, 0.3])
    assert cm.binary_auroc(labels, scores) == pytest.approx(sk.roc_auc_score(labels, scores))
    assert np.isnan(cm.binary_auroc(np.ones(4), np.arange(4)))


def test_confusion_ignores_masked_rows():
    targets, predictions = jnp.array([0, 1, 1, 2]), jnp.array([0, 1, 0, 2])
    matrix = cm.confusion(targets, predictions, 3, jnp.array([1.0, 1.0, 1.0, 0.0]))
    assert float(matrix.sum()) == 3 and float(matrix[2, 2]) == 0


@pytest.mark.parametrize("rows,columns,decimals", [(1, 1, 2), (7, 3, 0), (216, 10, 2), (500, 2, 6)])
def test_average_ranks_are_scipys_rankdata(rows, columns, decimals):
    """Ties (values rounded), one row, a column of one value, and a column with NaN."""
    from scipy.stats import rankdata

    x = np.random.default_rng(rows).random((rows, columns)).round(decimals)
    x[:, 0] = 0.5
    if rows > 1:
        x[rows // 2, -1] = np.nan
    np.testing.assert_array_equal(cm.average_ranks(x), rankdata(x, axis=0))


def test_auroc_does_not_import_scipy_stats():
    """It cost every training process 1.2-1.5 s on 2 cores, for one ranking."""
    code = (
        "import sys, numpy as np; from ann.metrics import classification as cm; "
        "t = np.array([0, 1, 2, 1]); p = np.eye(3)[t] * 0.5 + 0.1; cm.auroc(t, p); "
        "cm.binary_auroc(t == 1, p[:, 1]); print('scipy.stats' in sys.modules)"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
