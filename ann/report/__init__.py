"""`ann report`: judge a trained run or an exported model on its validation and test splits.

- `collect`: the model (checkpoint or export) and its predictions over a split;
- `sections`: per-task metrics and pictures (`SECTIONS`: experiment name -> function);
- `write`: report.json, index.html (pictures inlined) and the PNGs in one directory;
- `html`: the PNGs and the page.

report.json's schema is documented in docs/report.md; `SCHEMA_VERSION` changes with any
change that a reader of an older report would misread.
"""

from typing import Any

SCHEMA_VERSION = 2

# Metrics shown with 4 decimals wherever the report shows them (the printed notes, index.html's
# tables, the charts): scores, shares and ratios (r2, mae_ratio) and the calibration scores, so a
# slice's 1.0000 stands beside 0.9286 (it read "1"). A metric in the data's units (UNIT_METRICS:
# an error such as rmse, or an anomaly score) gets 4 significant digits, and so does any other
# number. A hand list: the names metric_text is given are the keys of the sections' metrics
# (index.html's tables: decile edges, thresholds, temperatures, score quantiles too), and no
# metric declares its units where it is defined; tests/test_report_slices.py checks that every
# metric of `task_metrics.HEADLINES` is in one of the two lists.
DECIMAL_METRICS = frozenset(
    {
        "accuracy", "precision", "recall", "f1", "macro_precision", "macro_recall", "macro_f1",
        "argmax_precision", "argmax_recall",
        "roc_auc", "macro_roc_auc", "average_precision", "macro_average_precision", "auroc",
        "anomalous_share", "recall_at_1", "recall_at_5", "recall_at_k", "map",
        "exact_match", "decoded_token_accuracy", "token_accuracy",
        "r2", "mae_ratio", "rmse_ratio",
        "ece", "mce", "classwise_ece", "nll", "brier", "bits_per_char", "unigram_bits_per_char",
    }
)  # fmt: skip
UNIT_METRICS = frozenset(
    {"rmse", "mae", "naive_mae", "baseline_rmse", "baseline_mae", "mean_score", "bias"}
)


# Keys of the report's metrics whose values are documented in [0, 1] (docs/report.md): a score,
# a share, a rate or a calibration error, or a list or a dict (per class) of them, or an interval
# of them (`ci95`). `unit_clipped` clips them there: float rounding gave 1.0000000000000002 for
# an average precision (scikit-learn's sum of precision times recall steps) and a gate checking
# `ap <= 1` failed.
UNIT_INTERVAL = frozenset(
    {
        "accuracy", "precision", "recall", "f1", "macro_precision", "macro_recall", "macro_f1",
        "argmax_precision", "argmax_recall", "target_recall",
        "roc_auc", "macro_roc_auc", "average_precision", "macro_average_precision", "auroc",
        "anomalous_share", "flagged", "fpr", "tpr", "recall_at_1", "recall_at_5", "recall_at_k",
        "map", "exact_match", "decoded_token_accuracy", "token_accuracy", "by_task",
        "ece", "mce", "classwise_ece", "confidence", "ci95",
    }
)  # fmt: skip


def unit_clipped(value: Any, key: str | None = None) -> Any:
    """`value` (a section's metrics: dicts, lists, numbers) with every number under a key of
    UNIT_INTERVAL clipped into [0, 1] (None, text and other keys' numbers as they are): the one
    place the report's scores are held to their documented range."""
    if isinstance(value, dict):
        return {
            k: unit_clipped(v, k if key not in UNIT_INTERVAL else key) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(unit_clipped(v, key) for v in value)
    if key in UNIT_INTERVAL and isinstance(value, float) and value == value:
        return min(max(value, 0.0), 1.0)
    return value


def significant(value: float, sign: bool = False) -> str:
    """`value` with 4 significant digits, its trailing zeros kept ("61.20" for 61.1995, "107.0",
    "0.3620", "1.235e+04"; `%.4g` wrote "61.2" and "107", 3 digits said as if 4), a "+" before a
    positive one with `sign`."""
    text = f"{value:{'+' if sign else ''}#.4g}"
    return text[:-1] if text.endswith(".") else text  # "1000." (the # form's point) as 1000


def metric_text(name: str, value: float | None) -> str:
    """`value` of the metric `name` as the report writes it everywhere: 4 decimals for
    DECIMAL_METRICS ("1.0000", "0.9286"), else 4 significant digits (`significant`: "61.20");
    "n/a" for None."""
    if value is None:
        return "n/a"
    return f"{value:.4f}" if name in DECIMAL_METRICS else significant(value)


def extreme(items: list, key: Any, lowest: bool = True) -> tuple[Any, int]:
    """(the first of `items`, in their order, whose `key(item)` is the lowest, or the highest
    with `lowest=False`; how many other items tie with it): the one rule of every "worst" and
    "best" the report names, so a tie names the same one everywhere (a per-class note named the
    first of seven classes at F1 0, the slices' gap the last). Raises ValueError when empty."""
    values = [key(item) for item in items]
    if not values:
        raise ValueError("no items to pick an extreme from")
    target = min(values) if lowest else max(values)
    first = values.index(target)
    return items[first], values.count(target) - 1


def tied_text(others: int) -> str:
    """ " (and 2 more tied)" after a pick of `extreme` that others tie with; "" for none."""
    return f" (and {others} more tied)" if others else ""


def metric_prefix(split: str) -> str:
    """The prefix training logs `split`'s metrics under (DESIGN.md's metric prefixes): `val/`
    for validation, `eval/` for test (the first of data.eval_splits), `train/` for train,
    `eval_<split>/` for any other. A report's text naming the run's own number for a split
    names it so (the language model's test note said `val/bits_per_char`)."""
    known = {"train": "train/", "validation": "val/", "test": "eval/"}
    return known.get(split, f"eval_{split}/")


def interval_text(name: str, interval: Any) -> str:
    """A confidence interval (low, high) of the metric `name` as the report writes it, its ends
    like the metric (`metric_text`): "[0.6853, 0.9873]"; "" for None."""
    if not interval:
        return ""
    return f"[{metric_text(name, interval[0])}, {metric_text(name, interval[1])}]"


def jsonable(value: Any) -> Any:
    """NumPy scalars and arrays as Python numbers and lists, dict keys as strings; NaN and
    infinities as strings ("nan", "inf", "-inf"), so report.json is strict JSON. Anything else
    is returned as it is (`json.dumps` then names what it cannot write)."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    return value
