"""Retrieval metrics over one embedded split: recall@k and mean average precision, every row a
query against all the others (leave-one-out)."""

from __future__ import annotations

import numpy as np

RECALL_AT = (1, 5)


def retrieval_metrics(
    embeddings: np.ndarray,
    labels: np.ndarray,
    ks: tuple[int, ...] = RECALL_AT,
    chunk: int = 1024,
) -> dict[str, float]:
    """Leave-one-out retrieval over one set: every row a query, all other rows the gallery.

    Cosine similarity (rows are normalised here). `recall_at_k`: share of queries with an item of
    their label among their k nearest (queries with no such item anywhere count as misses).
    `map`: mean over queries with at least one relevant item of the average precision of the
    whole ranking. Computed `chunk` queries at a time, so memory is chunk x rows.
    """
    e = np.asarray(embeddings, np.float32)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    labels = np.asarray(labels)
    n = len(e)
    if n < 2:
        raise ValueError(f"retrieval needs at least 2 rows, got {n}")
    hits = {k: 0 for k in ks}
    ap_sum, ap_count = 0.0, 0
    ranks = np.arange(1, n, dtype=np.float64)
    for start in range(0, n, chunk):
        q = np.arange(start, min(start + chunk, n))
        sims = e[q] @ e.T
        sims[np.arange(len(q)), q] = -np.inf  # the query is not its own neighbour
        order = np.argsort(-sims, axis=1, kind="stable")[:, : n - 1]  # the query sorts last
        relevant = labels[order] == labels[q][:, None]
        for k in ks:
            hits[k] += int(relevant[:, :k].any(axis=1).sum())
        num_relevant = relevant.sum(axis=1)
        precision = np.cumsum(relevant, axis=1) / ranks
        ap = (precision * relevant).sum(axis=1) / np.maximum(num_relevant, 1)
        ap_sum += float(ap[num_relevant > 0].sum())
        ap_count += int((num_relevant > 0).sum())
    return {
        **{f"recall_at_{k}": hits[k] / n for k in ks},
        "map": ap_sum / max(ap_count, 1),
    }
