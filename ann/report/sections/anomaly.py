"""Anomaly detection's report: how the anomaly score (the reconstruction error) separates
normal rows (label 0) from anomalous ones (label 1): the two score distributions, and the ROC
curve with its area (scikit-learn's roc_curve and roc_auc_score). With the model at hand, the
threshold a deployment flags rows above (`deployed_threshold`: an export's manifest `threshold`,
which its `flagged` output applies, else training's `eval/threshold`; both the
`task.threshold_quantile` quantile of the calibration rows' scores), marked on the histogram,
and the precision and
recall of the anomalous class at it (scikit-learn's precision_score and recall_score), all in
the first line; with `task.breakdown`, the AUROC of each of its classes' anomalies against
every normal row, as training's `auroc_<class>`."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import precision_score, recall_score, roc_auc_score, roc_curve

from ann.report import metric_prefix, metric_text, significant
from ann.report.predictions import Predictions
from ann.report.sections import Section

BINS = 40
LOG_SPREAD = 100  # scores spread over more than this ratio get log-spaced bins and axis


def deployed_threshold(preds: Predictions) -> dict | None:
    """The threshold a deployment flags rows above, the one the model's `flagged` output
    applies (`experiment.fitted_threshold`): an export's own (its manifest's `threshold`, set by
    `collect.from_model`), or a run's, fixed as the export would (`collect.restore`); both the
    experiment's `threshold_quantile` quantile of the model's scores on its calibration rows
    (`experiment.reference`, normal training rows held out of the loss), training's
    `eval/threshold`. Without a fitted one (an experiment of its own), that quantile is computed
    here through `preds.predict`. {"value", "quantile", "calibration_rows"}; None without
    either."""
    exp = preds.experiment
    if fitted := getattr(exp, "fitted_threshold", None):  # the export's, or fixed from the run
        return {k: fitted[k] for k in ("value", "quantile", "calibration_rows")}
    reference = getattr(exp, "reference", None)
    settings = getattr(exp, "settings", None)
    if preds.predict is None or reference is None or np.ndim(reference) == 0 or not settings:
        return None
    if not len(reference):
        return None
    scores = np.asarray(preds.predict({exp.input_key: reference})["score"], np.float64)
    quantile = float(settings["threshold_quantile"])
    return {
        "value": float(np.quantile(scores, quantile)),
        "quantile": quantile,
        "calibration_rows": int(len(reference)),
    }


def histogram_figure(
    normal: np.ndarray, anomalous: np.ndarray, split: str, threshold: float | None = None
) -> Figure:
    scores = np.concatenate([normal, anomalous])
    low, high = float(scores.min()), float(scores.max())
    log = low > 0 and high / low > LOG_SPREAD
    edges = np.geomspace(low, high, BINS + 1) if log else np.linspace(low, high, BINS + 1)
    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    # Each class's share of its own rows per bin: the classes differ in size (anomalies are
    # rare), so counts would hide one, and densities mislead on log-spaced bins.
    # Normal filled, anomalous outlined over it (as the drift pictures draw reference and
    # current): two blended fills made a colour the legend did not name, and hid the normal.
    styles = (
        (normal, "normal", dict(color="#1f77b4", alpha=0.5)),
        (anomalous, "anomalous", dict(color="#d62728", histtype="step", linewidth=1.8)),
    )
    for values, name, style in styles:
        if len(values):
            weights = np.full(len(values), 1 / len(values))
            ax.hist(values, bins=edges, weights=weights, label=name, **style)
    if threshold is not None:
        label = f"deployed threshold {significant(threshold)} (flagged above)"
        ax.axvline(threshold, color="black", ls="--", lw=1.2, label=label)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("anomaly score (reconstruction MSE, standardized units)")
    ax.set_ylabel("share of the class's rows")
    ax.set_title(
        f"Score distributions ({split}, {len(normal):,} normal, {len(anomalous):,} anomalous rows)",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    return fig


def roc_figure(
    fpr: np.ndarray,
    tpr: np.ndarray,
    auroc: float,
    split: str,
    rows: str,
    deployed: tuple[float, float, float] | None = None,
) -> Figure:
    """The ROC curve; `deployed`: (threshold, its false positive rate, its true positive rate),
    the point a deployment works at, marked (the curve alone did not say where that is)."""
    fig = Figure(figsize=(4.8, 4.6), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, lw=1.5, label=f"model (AUROC {metric_text('auroc', auroc)})")
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="chance")
    if deployed is not None:
        threshold, at_fpr, at_tpr = deployed
        label = f"deployed threshold {significant(threshold)} (FPR {at_fpr:.3f}, TPR {at_tpr:.3f})"
        ax.plot([at_fpr], [at_tpr], "o", color="black", ms=6, label=label, zorder=3)
    ax.set_xlabel("false positive rate (normal rows flagged)")
    ax.set_ylabel("true positive rate (anomalies found)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title(f"ROC ({split}, {rows})", fontsize=10)  # as the histogram beside it names it
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def breakdown(preds: Predictions, labels: np.ndarray, score: np.ndarray) -> dict | None:
    """The AUROC of each class of the experiment's `task.breakdown` feature (e.g. the digit of
    `digits_novelty`) that has anomalous rows: that class's anomalous rows against every normal
    row, as training logs `val/auroc_<class>` (`AnomalyDetection.eval_metrics`). {"breakdown":
    the field, "by_class": {class: {"auroc": AUROC or None (no normal rows), "anomalous_rows"}}}
    (by_class a table in index.html); None when the experiment has no breakdown or the split's
    rows lack its field."""
    field = getattr(preds.experiment, "breakdown", "")
    names = list(getattr(preds.experiment, "breakdown_names", []))
    if not field or field not in preds.rows:
        return None
    group = np.asarray(preds.rows[field]).astype(np.int64)
    anomalous, normal = labels == 1, labels == 0
    by_class = {}
    for g in np.unique(group[anomalous]):
        name = names[g] if 0 <= g < len(names) else str(g)
        keep = normal | (anomalous & (group == g))
        by_class[name] = {
            "auroc": float(roc_auc_score(labels[keep], score[keep])) if normal.any() else None,
            "anomalous_rows": int((anomalous & (group == g)).sum()),
        }
    return {"breakdown": field, "by_class": by_class}


def sections(preds: Predictions) -> list[Section]:
    """Score quantiles per class, auroc and the ROC curve's points (None and no curve when the
    split holds only one class); with the model, the deployed threshold and the precision and
    recall at it, said in the first line; with `task.breakdown`, the AUROC per class of it."""
    labels = np.asarray(preds.rows[preds.experiment.label_key]).astype(np.int64)
    score = np.asarray(preds.outputs["score"], np.float64)
    normal, anomalous = score[labels == 0], score[labels == 1]
    quantiles = {
        name: {f"p{q}": float(np.percentile(v, q)) for q in (5, 50, 95)}
        for name, v in (("normal", normal), ("anomalous", anomalous))
        if len(v)
    }
    metrics = {
        "rows": {"normal": int(len(normal)), "anomalous": int(len(anomalous))},
        "score_quantiles": quantiles,
    }
    deployed = deployed_threshold(preds)
    threshold = deployed["value"] if deployed else None
    figures = {"score_histogram": histogram_figure(normal, anomalous, preds.split, threshold)}
    flagged = None
    if deployed:  # as the model flags them (its `flagged` output), else by the score (an
        # export made before it had one)
        served = preds.outputs.get("flagged")
        flagged = np.asarray(served, bool) if served is not None else score > threshold
    if len(normal) and len(anomalous):
        fpr, tpr, _ = roc_curve(labels, score)
        auroc = float(roc_auc_score(labels, score))
        metrics["auroc"] = auroc
        metrics["roc"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
        rows = f"{len(normal):,} normal, {len(anomalous):,} anomalous rows"
        point = None
        if flagged is not None:
            point = (threshold, flagged[labels == 0].mean(), flagged[labels == 1].mean())
        figures["roc"] = roc_figure(fpr, tpr, auroc, preds.split, rows, point)
        headline = f"auroc {auroc:.4f} ({rows})"
    else:
        metrics["auroc"] = None
        headline = (
            f"no ROC: the {preds.split} split has only "
            f"{'normal' if len(normal) else 'anomalous'} rows"
        )
    notes = []
    if deployed:
        # The number a deployment flags rows with, in the headline: it was the second line,
        # under the AUROC, which no deployment uses.
        fitted = getattr(preds.experiment, "fitted_threshold", None) or {}
        exported = bool(fitted.get("from_export"))
        deployed["flagged"] = float(flagged.mean()) if len(flagged) else None
        at = ""
        if len(anomalous):  # precision and recall of the anomalous class
            deployed["precision"] = float(precision_score(labels, flagged, zero_division=0))
            deployed["recall"] = float(recall_score(labels, flagged, zero_division=0))
            at = f"precision {deployed['precision']:.4f}, recall {deployed['recall']:.4f}, "
        metrics["threshold"] = deployed
        headline += (
            f"; deployed threshold {significant(threshold)} (flag a score above it): "
            f"{at}{int(flagged.sum()):,} of {len(flagged):,} rows flagged"
        )
        whose = (
            "the export's (its manifest's threshold, which its flagged output applies)"
            if exported
            else "training's eval/threshold (an export fixes the same as its own)"
        )
        notes.append(
            f"the deployed threshold is {whose}: the {deployed['quantile']:g} quantile of "
            f"{deployed['calibration_rows']:,} calibration rows' scores"
        )
    per_class = breakdown(preds, labels, score)
    if per_class:
        metrics.update(per_class)
        field, prefix = per_class["breakdown"], metric_prefix(preds.split)
        shown = ", ".join(
            f"{name} {metric_text('auroc', c['auroc'])} ({c['anomalous_rows']:,} rows)"
            for name, c in per_class["by_class"].items()
        )
        notes.append(
            f"auroc by {field} (its anomalous rows against every normal row: training's "
            f"{prefix}auroc_<{field}>): {shown or 'no anomalous rows'}"
        )
    return [
        Section(title="Anomaly scores", metrics=metrics, figures=figures, notes=[headline, *notes])
    ]
