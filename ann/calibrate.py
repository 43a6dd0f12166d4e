"""Calibrating a classifier at export: temperature scaling fitted on the validation split.

`ann export` reads the checkpoint the validation split chose, computes that split's logits with
the training code (`experiment.logits`), fits one temperature T by minimising their NLL
(`ann.metrics.calibration.fit_temperature`, Guo et al. 2017), and sets
`experiment.temperature = T` before the graph is traced: the exported `probabilities` are
softmax(logits / T), T a constant of the graph, and `label` (the argmax) is unchanged. The
manifest's `calibration` entry records T and the top-class ECE, MCE, Brier score and NLL before
and after, on the validation and the test split. `config.calibration="none"` keeps T = 1 and
records the metrics of the uncalibrated probabilities; so does a validation split on which
every row is already right (no T minimises the NLL: it falls as T -> 0), with a warning and the
entry's `why` (the shipped breast_cancer_mlp's export stopped on it, and the split says
nothing of calibration then; `ann report` says the same of it). Experiments without a `logits`
method (every task but classification) have no class probabilities and are not calibrated.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from ann.metrics import calibration

BATCH = 256  # rows per forward pass; the last batch is padded, so one compilation serves all


def calibratable(experiment: Any) -> bool:
    """Whether the experiment exposes raw class logits (and a `temperature` its predict uses)."""
    return callable(getattr(experiment, "logits", None)) and hasattr(experiment, "temperature")


def split_logits(
    experiment: Any,
    model: Any,
    config: ml_collections.ConfigDict,
    split: str,
    data_dir: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every row of the run's `split` ("validation": `data.validation_split`; "test": the first
    of `data.eval_splits`) through the training code, in `BATCH`-row batches as `ann report`
    reads a split (`ann.report.collect.collect`): (logits float32 [rows, classes], before any
    temperature; labels int64 [rows]), read from `data_dir` (None: the config's). Raises
    ValueError for a run without that split, or a split without rows."""
    from flax import nnx

    from ann.report import collect

    graphdef, state = nnx.split(model)
    logits_of = jax.jit(lambda state, x: experiment.logits(nnx.merge(graphdef, state), x))
    source = collect.Source(
        identity={},
        experiment=experiment,
        config=config,
        predict_batch=lambda inputs: {"logits": jax.device_get(logits_of(state, inputs))},
        batch_size=BATCH,
        data_dir=data_dir,
    )
    preds = collect.collect(source, split)
    return preds.outputs["logits"], preds.rows[experiment.label_key].astype(np.int64)


def _metrics(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, float]:
    summary = calibration.summary(calibration.softmax(logits, temperature), labels)
    return {k: float(f"{v:.6g}") for k, v in summary.items()}


def calibrate(
    experiment: Any, model: Any, config: ml_collections.ConfigDict, data_dir: str | None = None
) -> dict[str, Any] | None:
    """Fits (config.calibration="temperature") or skips ("none") the temperature, sets
    `experiment.temperature`, and returns the manifest's `calibration` entry:
    {"method", "temperature" (float, 1.0 for none), "fitted_on": {"split", "rows"} (None
    for none), "bins": 15, "metrics": {"validation"|"test": {"before": {...}, "after": {...}}}} with
    ece, mce, brier and nll (ann.metrics.calibration.summary) of softmax(logits) and of
    softmax(logits / T), and (fitted) "ece_change": {"low", "high", "confidence"}, the paired
    bootstrap interval of ECE after - before (ann.metrics.calibration.ece_change_interval).
    The splits are read from `data_dir` (None: the config's). None for an experiment without
    logits. Raises CalibrationError
    (ValueError, one line) when the fit fails (e.g. one class in the validation split)."""
    if not calibratable(experiment):
        return None
    splits = {"validation": split_logits(experiment, model, config, "validation", data_dir)}
    if config.data.eval_splits:
        splits["test"] = split_logits(experiment, model, config, "test", data_dir)
    temperature, method, why = 1.0, config.calibration, None
    if method == "temperature":
        try:
            temperature = calibration.fit_temperature(*splits["validation"])
        except calibration.CalibrationError as e:
            on = repr(config.data.validation_split)
            if e.short != calibration.EVERY_ROW_RIGHT:  # a model no better than chance, ...
                raise calibration.CalibrationError(
                    f"cannot fit the temperature on {on}: {e}; export softmax(logits) "
                    "uncalibrated instead with calibration='none' (--calibration=none)"
                ) from None
            method, why = "none", f"no temperature fitted on {on}: {e.short}"
            logging.warning(
                "no temperature fitted on %s: %s; the export serves softmax(logits) "
                "uncalibrated (its manifest's calibration.method 'none')",
                on,
                e,
            )
    experiment.temperature = temperature
    metrics = {
        split: {
            "before": _metrics(logits, labels, 1.0),
            **(
                {
                    "after": _metrics(logits, labels, temperature),
                    "ece_change": _ece_change(logits, labels, temperature),
                }
                if method == "temperature"
                else {}
            ),
        }
        for split, (logits, labels) in splits.items()
    }
    return {
        "method": method,
        "temperature": temperature,
        "fitted_on": {  # none: nothing was fitted
            "split": config.data.validation_split,
            "rows": int(len(splits["validation"][1])),
        }
        if method == "temperature"
        else None,
        "bins": calibration.BINS,
        "metrics": metrics,
        **({"why": why} if why else {}),
    }


def _ece_change(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, float]:
    """{"low", "high", "confidence"}: the paired bootstrap interval of ECE after - before."""
    low, high = calibration.ece_change_interval(logits, labels, temperature)
    return {"low": low, "high": high, "confidence": 0.95}


def raised_ece(split_metrics: dict[str, Any]) -> bool:
    """Whether temperature scaling raised a split's ECE beyond its sampling noise: the
    interval of the change (`ece_change`) lies above 0. A manifest written before the interval
    existed: any rise."""
    change = split_metrics.get("ece_change")
    if change is None:
        return split_metrics["after"]["ece"] > split_metrics["before"]["ece"]
    return change["low"] > 0


def summary_lines(entry: dict[str, Any]) -> list[str]:
    """What `ann export` prints of its manifest's `calibration` entry (`calibrate`'s return): a
    line with the temperature and each split's ECE before -> after, and a `note:` line for each
    split whose ECE rose beyond its sampling noise (`raised_ece`). The fit minimises the
    validation split's NLL (Guo et al. 2017), not ECE, a binned and noisy score on a few hundred
    rows: it can rise, and the user decides on validation (its note names --calibration=none);
    the test split's note is information only (validate to choose, test once)."""
    metrics = entry["metrics"]
    if entry["method"] != "temperature":
        eces = ", ".join(f"{split} {m['before']['ece']:.4f}" for split, m in metrics.items())
        return [f"calibration: none (softmax of the logits); ECE {eces}"]
    eces = ", ".join(
        f"{split} {m['before']['ece']:.4f} -> {m['after']['ece']:.4f}"
        for split, m in metrics.items()
    )
    fitted = entry["fitted_on"]
    lines = [
        f"calibration: temperature {entry['temperature']:.4g}, fitted to the NLL of "
        f"{fitted['split']} ({fitted['rows']} rows; Guo et al. 2017); ECE {eces}"
    ]
    for split, m in metrics.items():
        if not raised_ece(m):
            continue
        before, after = m["before"], m["after"]
        rose = (
            f"note: temperature scaling raised the {split} ECE ({before['ece']:.4f} -> "
            f"{after['ece']:.4f}{_interval(m)}; NLL {before['nll']:.4f} -> {after['nll']:.4f})"
        )
        if split == "validation":  # the split that chooses: the evidence for dropping it
            lines.append(
                f"{rose}; on this validation evidence, to export softmax(logits) instead, "
                "export again with --calibration=none"
            )
            continue
        # The test split is read once, as the estimate: never a reason to choose.
        chosen = metrics.get("validation")
        if chosen is None or raised_ece(chosen):
            why = "" if chosen is None else " (the note above)"
        else:
            why = (
                f", where it did not raise the ECE beyond its noise ({_ece_nll(chosen)}), so "
                "this export keeps it"
            )
        lines.append(
            f"{rose}; information only (validate to choose, test once): the calibration is "
            f"chosen on validation{why}"
        )
    return lines


def _ece_nll(split_metrics: dict[str, Any]) -> str:
    before, after = split_metrics["before"], split_metrics["after"]
    return (
        f"ECE {before['ece']:.4f} -> {after['ece']:.4f}, NLL {before['nll']:.4f} -> "
        f"{after['nll']:.4f}"
    )


def _interval(split_metrics: dict[str, Any]) -> str:
    change = split_metrics.get("ece_change")
    if change is None:
        return ""
    return (
        f", a rise of {change['low']:.4f} to {change['high']:.4f} at "
        f"{change['confidence']:.0%} by a paired bootstrap of the rows"
    )
