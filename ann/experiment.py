"""The protocol between a task (an experiment) and the task-free train loop.

An experiment says what is trained and how it is scored: which fields of the data it reads, the
model it builds, its loss, and its eval metrics. The loop only calls these methods, so new tasks
(language modelling, seq2seq, anomaly detection, metric learning) need no change to the loop.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import numpy as np
from flax import nnx

from ann.data import Split

Batch = dict[str, np.ndarray]
# name -> {"dtype": numpy dtype name, "shape": per-example shape}: what serving accepts and returns
Signature = dict[str, dict[str, Any]]


class Experiment(Protocol):
    def setup(self, train: Split) -> None:
        """Learns what the task needs from the training split (classes, input statistics)."""

    def fields(self, rows: dict[str, np.ndarray]) -> Batch:
        """Host side: picks and casts the arrays the model and loss read from a batch of rows."""

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        """The Flax NNX module, built from the config's `model.*` keys."""

    def loss(
        self, model: nnx.Module, batch: dict[str, jax.Array], rng: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Scalar training loss and per-batch metrics (means), traced inside the train step."""

    def eval_sums(self, model: nnx.Module, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Per-batch sums over the rows where `batch['mask']` is 1, added up across batches."""

    def eval_metrics(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
        """Final metrics over a whole split from the summed `eval_sums`.

        An experiment whose metrics need every row (AUROC, recall@k) also defines
        `eval_rows(model, batch) -> {name: per-row array}`; the loop then gathers those rows
        over the whole split, padding dropped, and calls `eval_metrics(sums, rows)`.
        """

    # What export and serving need. `predict` runs the same on-device preprocessing as `loss`, so
    # an exported model cannot drift from the trained one.

    def input_signature(self) -> Signature:
        """The inputs `predict` reads, per example (no batch axis), from the data set's features."""

    def output_signature(self) -> Signature:
        """The outputs `predict` returns, per example."""

    def predict(self, model: nnx.Module, inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Eval-mode outputs for a batch of raw inputs (as the data set stores them)."""
