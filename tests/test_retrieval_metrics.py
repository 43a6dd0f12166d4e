"""Retrieval losses (InfoNCE, batch-hard triplet) and recall@k / mAP against numpy and
scikit-learn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ann.metrics import retrieval_losses
from ann.metrics.retrieval import retrieval_metrics

# Jitted: one compilation per shape instead of one per eager operation.
info_nce = jax.jit(
    retrieval_losses.info_nce, static_argnames=("temperature", "same_class_negatives")
)
batch_hard_triplet = jax.jit(retrieval_losses.batch_hard_triplet, static_argnames="margin")


def _np_cross_entropy(logits: np.ndarray) -> np.ndarray:
    """Cross-entropy of each row of `logits` with target = the row's index."""
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    return lse - np.diagonal(logits)


def _np_info_nce(a, p, labels, temperature, same_class_negatives):
    logits = a.astype(np.float64) @ p.T.astype(np.float64) / temperature
    if not same_class_negatives:
        other_pair_same_class = (labels[:, None] == labels[None, :]) & ~np.eye(len(a), dtype=bool)
        logits = np.where(other_pair_same_class, -np.inf, logits)
    return 0.5 * (_np_cross_entropy(logits) + _np_cross_entropy(logits.T))


@pytest.mark.parametrize("same_class_negatives", [True, False])
def test_info_nce_is_cross_entropy_over_the_similarity_matrix(same_class_negatives):
    rng = np.random.default_rng(0)
    a, p = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(6, 4)).astype(np.float32)
    labels = np.array([0, 1, 0, 2, 1, 3], np.int32)
    got = info_nce(a, p, labels, 0.5, same_class_negatives=same_class_negatives)
    want = _np_info_nce(a, p, labels, 0.5, same_class_negatives)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
    assert got.dtype == jnp.float32
    # A padding pair (valid=False) scores 0 and is in nobody's softmax: the valid pairs' losses
    # are those of the batch without it.
    valid = np.array([1, 1, 1, 1, 0, 1], bool)
    masked = info_nce(a, p, labels, 0.5, valid=valid, same_class_negatives=same_class_negatives)
    alone = _np_info_nce(a[valid], p[valid], labels[valid], 0.5, same_class_negatives)
    np.testing.assert_allclose(np.asarray(masked)[valid], alone, rtol=1e-5)
    assert float(masked[4]) == 0.0
    # bfloat16 embeddings: the loss is still computed in float32.
    half = info_nce(jnp.bfloat16(a), jnp.bfloat16(p), labels, 0.5)
    assert half.dtype == jnp.float32


def test_batch_hard_triplet_picks_the_hardest_pair():
    # On a line: class 0 at 0, 1, 3; class 1 at 3.5, 6. Item 0's hardest positive is 3
    # (distance 3), its hardest negative 3.5 (distance 3.5).
    x = np.array([[0.0], [1.0], [3.0], [3.5], [6.0]], np.float32)
    labels = np.array([0, 0, 0, 1, 1])
    losses, active = batch_hard_triplet(x, labels, margin=1.0)
    want = []
    for i in range(len(x)):
        d = np.abs(x[:, 0] - x[i, 0])
        pos = max(d[j] for j in range(len(x)) if labels[j] == labels[i] and j != i)
        neg = min(d[j] for j in range(len(x)) if labels[j] != labels[i])
        want.append(max(pos - neg + 1.0, 0.0))
    np.testing.assert_allclose(np.asarray(losses), want, atol=1e-5)
    assert want[0] == pytest.approx(3.0 - 3.5 + 1.0) and want[3] == pytest.approx(2.5 - 0.5 + 1)
    np.testing.assert_array_equal(np.asarray(active), np.array(want) > 0)
    # Dropping item 2 (padding) changes item 0's hardest positive to 1 (distance 1); an item
    # with no positive left in the batch scores 0.
    valid = np.array([1, 1, 0, 1, 1], bool)
    masked, _ = batch_hard_triplet(x, labels, margin=1.0, valid=valid)
    assert float(masked[0]) == pytest.approx(max(1.0 - 3.5 + 1.0, 0.0), abs=1e-5)
    assert float(masked[2]) == 0.0
    lonely, _ = batch_hard_triplet(x[:4], np.array([0, 0, 0, 1]), margin=1.0)
    assert float(lonely[3]) == 0.0
    # Gradients are finite even with duplicate items (distance 0).
    dup = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    grad = jax.jit(
        jax.grad(
            lambda e: retrieval_losses.batch_hard_triplet(e, jnp.array([0, 0, 1]), 0.2)[0].sum()
        )
    )
    assert bool(jnp.isfinite(grad(dup)).all())


def test_retrieval_metrics_match_brute_force_nearest_neighbours():
    from sklearn.metrics import average_precision_score
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 60)
    x = rng.normal(size=(60, 8)) + 1.5 * np.eye(8)[labels]  # some structure, no ties
    got = retrieval_metrics(x, labels, ks=(1, 5), chunk=7)  # chunks: 7 does not divide
    nn = NearestNeighbors(n_neighbors=6, metric="cosine", algorithm="brute").fit(x)
    _, idx = nn.kneighbors(x)
    assert (idx[:, 0] == np.arange(60)).all()  # each point is its own nearest: drop it
    neighbours = labels[idx[:, 1:]] == labels[:, None]
    assert got["recall_at_1"] == pytest.approx(neighbours[:, :1].any(1).mean())
    assert got["recall_at_5"] == pytest.approx(neighbours[:, :5].any(1).mean())
    assert 0.2 < got["recall_at_1"] < 1.0  # the check above is not vacuous
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    aps = []
    for q in range(60):
        others = np.arange(60) != q
        relevant = labels[others] == labels[q]
        if relevant.any():
            aps.append(average_precision_score(relevant, unit[others] @ unit[q]))
    assert got["map"] == pytest.approx(np.mean(aps), rel=1e-9)
    assert retrieval_metrics(x, labels) == pytest.approx(got)  # one chunk, same values
