"""One split's rows and what a model predicted for them (`Predictions`): what every report
section and slice metric reads. Built by `ann.report.collect`; kept apart from it so the
metric functions (`ann.report.task_metrics`), which `ann train` consults, import no training
code."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Predictions:
    """One split's rows and what the model predicted for them."""

    split: str  # "validation" | "test"
    # The split's raw rows (inputs, labels, other fields such as the digits' writer group),
    # every array with the rows first, in the data set's order.
    rows: dict[str, np.ndarray]
    # What the experiment's predict returned for those rows (rows first), plus, for
    # classification, "logits": float32 [rows, classes] before any temperature.
    outputs: dict[str, np.ndarray]
    experiment: Any  # the built Experiment (class names, keys, signatures)
    config: ml_collections.ConfigDict
    # The model itself: raw inputs (rows first, any count) -> outputs, batched as above; for a
    # section that must run the model on inputs of its own (an LM's prefixes). None: not given.
    predict: Callable[[Batch], Batch] | None = None
    # The validation split's Predictions of the same model, for what is fitted there and applied
    # to this split (the temperature); None on the validation split itself.
    validation: Predictions | None = None
