"""The validation metrics each shipped experiment logs (`val/NAME`), known from the config
alone: no JAX, no model, no data. `ann.config` names them in the fix for a `best_metric`,
`early_stopping.metric` or sweep `--metric` that is not a `val/` metric (it said "use
'val/nope'" of `nope`, a metric nothing computes). Each list is what the experiment's
`eval_metrics` returns; tests/test_metric_names.py scores one validation batch of every
shipped config against it, so the two cannot drift apart.

Names that depend on the data are left out (a name offered here is one every run of the config
logs): anomaly detection's `auroc_GROUP` per `task.breakdown` group, seq2seq's
`exact_match_TASK` (and `beam_exact_match_TASK`) per task of a data set with a `task` feature.
`from_data` gives their prefixes: a name under one is never refused before a run scores
(`val/auroc_8` of a breakdown by digit is not a typo of `val/auroc`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ann.metrics.retrieval import RECALL_AT  # numpy only


def _task(config: Any) -> Mapping[str, Any]:
    task = config.get("task") if hasattr(config, "get") else None
    return task if task is not None else {}


def classification(config: Any) -> list[str]:
    return ["loss", "accuracy", "precision", "recall", "f1", "auroc"]


def language_modelling(config: Any) -> list[str]:
    return ["loss", "bits_per_char", "perplexity", "accuracy", "unigram_bits_per_char"]


def seq2seq(config: Any) -> list[str]:
    beam = _task(config).get("eval_beam_size", 0)
    return ["loss", "token_accuracy", "exact_match"] + (
        ["beam_exact_match"] if isinstance(beam, int) and beam > 1 else []
    )


def retrieval(config: Any) -> list[str]:
    return ["loss", *(f"recall_at_{k}" for k in RECALL_AT), "map"]


def forecasting(config: Any) -> list[str]:
    return ["loss", "mae", "rmse", "naive_mae", "naive_rmse", "mae_ratio"]


def anomaly_detection(config: Any) -> list[str]:
    return ["auroc", "loss", "threshold", "precision", "recall", "f1", "flagged"]


def regression(config: Any) -> list[str]:
    baseline = _task(config).get("baseline", True) is not False  # the default: on
    return ["loss", "rmse", "mae", "r2"] + (["baseline_rmse", "rmse_ratio"] if baseline else [])


# config.experiment -> the names (without `val/`) a run of that config logs.
VALIDATION_METRICS: dict[str, Callable[[Any], list[str]]] = {
    "classification": classification,
    "language_modelling": language_modelling,
    "seq2seq": seq2seq,
    "retrieval": retrieval,
    "forecasting": forecasting,
    "anomaly_detection": anomaly_detection,
    "regression": regression,
}


def anomaly_detection_from_data(config: Any) -> tuple[str, ...]:
    return ("auroc_",) if _task(config).get("breakdown") else ()


def seq2seq_from_data(config: Any) -> tuple[str, ...]:
    beam = "beam_exact_match" in seq2seq(config)
    return ("exact_match_", "beam_exact_match_") if beam else ("exact_match_",)


# config.experiment -> the prefixes of the names a run of that config may add from its data
# (`NAME_` + a group or task of the data set): neither offered nor refused before a run scores.
FROM_DATA: dict[str, Callable[[Any], tuple[str, ...]]] = {
    "anomaly_detection": anomaly_detection_from_data,
    "seq2seq": seq2seq_from_data,
}


def validation_metrics(config: Any) -> list[str] | None:
    """The sorted `val/NAME` metrics every run of `config` (a ConfigDict or its dict) logs, from
    its `experiment` and `task.*` keys; None for an experiment that is not shipped (a user's
    `package.module:ClassName`: what it logs is known only once it is imported and scores)."""
    names = VALIDATION_METRICS.get(config.get("experiment", ""))
    return None if names is None else sorted(f"val/{n}" for n in names(config))


def from_data(config: Any) -> tuple[str, ...]:
    """The `val/NAME_` prefixes of the metrics a run of `config` may add from its data (anomaly
    detection's `val/auroc_GROUP` with a `task.breakdown`, seq2seq's `val/exact_match_TASK`):
    names known only once the data is read, so never refused from the config alone."""
    prefixes = FROM_DATA.get(config.get("experiment", ""), lambda config: ())(config)
    return tuple(f"val/{p}" for p in prefixes)
