"""Retrieval metrics over one embedded split: recall@k and mean average precision, every row a
query against all the others (leave-one-out)."""

from __future__ import annotations

import numpy as np

RECALL_AT = (1, 5)


def per_query(
    embeddings: np.ndarray,
    labels: np.ndarray,
    ks: tuple[int, ...] = RECALL_AT,
    chunk: int = 1024,
) -> dict[str, np.ndarray]:
    """Leave-one-out retrieval over one set, per query: every row a query, all other rows the
    gallery, cosine similarity (rows are normalised here).

    Returns `hit_at_k` bool [n] for each k (an item of the query's label among its k nearest),
    `ap` float64 [n] (average precision of the whole ranking; 0 without a relevant item) and
    `has_relevant` bool [n]. Computed `chunk` queries at a time, so memory is chunk x rows.
    Raises ValueError for fewer than 2 rows.
    """
    e = np.asarray(embeddings, np.float32)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    labels = np.asarray(labels)
    n = len(e)
    if n < 2:
        raise ValueError(f"retrieval needs at least 2 rows, got {n}")
    out = {f"hit_at_{k}": np.zeros(n, bool) for k in ks}
    out["ap"], out["has_relevant"] = np.zeros(n), np.zeros(n, bool)
    ranks = np.arange(1, n, dtype=np.float64)
    for start in range(0, n, chunk):
        q = np.arange(start, min(start + chunk, n))
        sims = e[q] @ e.T
        sims[np.arange(len(q)), q] = -np.inf  # the query is not its own neighbour
        order = np.argsort(-sims, axis=1, kind="stable")[:, : n - 1]  # the query sorts last
        relevant = labels[order] == labels[q][:, None]
        for k in ks:
            out[f"hit_at_{k}"][q] = relevant[:, :k].any(axis=1)
        num_relevant = relevant.sum(axis=1)
        precision = np.cumsum(relevant, axis=1) / ranks
        out["ap"][q] = (precision * relevant).sum(axis=1) / np.maximum(num_relevant, 1)
        out["has_relevant"][q] = num_relevant > 0
    return out


def retrieval_metrics(
    embeddings: np.ndarray,
    labels: np.ndarray,
    ks: tuple[int, ...] = RECALL_AT,
    chunk: int = 1024,
) -> dict[str, float]:
    """`per_query`'s means: `recall_at_k`, the share of queries with an item of their label
    among their k nearest (queries with no such item anywhere count as misses), and `map`, the
    mean average precision over queries with at least one relevant item."""
    rows = per_query(embeddings, labels, ks, chunk)
    has = rows["has_relevant"]
    return {
        **{f"recall_at_{k}": float(rows[f"hit_at_{k}"].mean()) for k in ks},
        "map": float(rows["ap"][has].sum() / max(int(has.sum()), 1)),
    }
