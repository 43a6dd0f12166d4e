"""Retrieval's report: the recall@k curve, k = 1..K. Every row of the split is a query against
all the others (leave-one-out, cosine, `ann.metrics.retrieval.retrieval_metrics`); recall@k is
the share of queries with an item of their label among their k nearest."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ann.metrics.retrieval import retrieval_metrics
from ann.report.predictions import Predictions
from ann.report.sections import Section

MAX_K = 20


def recall_figure(ks: list[int], recall: list[float], chance: float, split: str) -> Figure:
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(ks, recall, marker="o", ms=3, label="model")
    # A random ranking: 1 - P(no same-label item among k), for the average label share.
    ax.plot(
        ks,
        [1 - (1 - chance) ** k for k in ks],
        ls="--",
        color="grey",
        label="random order (approx.)",
    )
    ax.set_xlabel("k (items retrieved)")
    ax.set_ylabel("recall@k")
    ax.set_xticks(ks if len(ks) <= 20 else ks[::2])
    ax.set_ylim(0, 1.01)
    ax.set_title(f"Recall@k ({split}: each row a query against all others)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def sections(preds: Predictions) -> list[Section]:
    """recall_at_k for k = 1..min(MAX_K, rows - 1) as a list and map."""
    labels = np.asarray(preds.rows[preds.experiment.label_key])
    embeddings = np.asarray(preds.outputs["embedding"])
    ks = list(range(1, min(MAX_K, len(labels) - 1) + 1))
    result = retrieval_metrics(embeddings, labels, tuple(ks))
    recall = [result[f"recall_at_{k}"] for k in ks]
    _, counts = np.unique(labels, return_counts=True)
    # The chance that one random other row shares the query's label, averaged over queries.
    chance = float(((counts - 1) * counts).sum() / max(len(labels) * (len(labels) - 1), 1))
    return [
        Section(
            title="Recall at k",
            metrics={"ks": ks, "recall_at_k": recall, "map": result["map"], "rows": len(labels)},
            figures={"recall_at_k": recall_figure(ks, recall, chance, preds.split)},
            notes=[
                f"recall@1 {recall[0]:.4f}, recall@{ks[-1]} {recall[-1]:.4f}, "
                f"map {result['map']:.4f} ({len(labels):,} queries)"
            ],
        )
    ]
