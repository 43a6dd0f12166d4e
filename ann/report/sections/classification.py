"""Classification's report for one split: how good (per-class precision, recall, F1, support),
where it fails (confusion matrix, the most frequent confusions with example inputs), how well
it ranks (ROC and precision-recall curves: binary, or one-vs-rest per class), whether its
probabilities mean what they say (reliability diagrams before and after temperature scaling),
and, for two classes, the threshold that reaches a chosen recall.

Numbers come from scikit-learn (`precision_recall_fscore_support`, `confusion_matrix`,
`roc_curve`, `precision_recall_curve`, `average_precision_score`) and ann.metrics.calibration
(ECE, MCE, Brier, NLL, reliability bins, the temperature fit); pictures from matplotlib (Agg).
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: never a window, never a display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402

from ann.report import extreme, metric_text, tied_text  # noqa: E402
from ann.report.predictions import Predictions  # noqa: E402
from ann.report.sections import Section, report_setting  # noqa: E402

TARGET_RECALL = 0.9  # default of config.report.target_recall: binary precision at this recall
TOP_CONFUSIONS = 5  # the most frequent (true, predicted) pairs shown
EXAMPLES_PER_CONFUSION = 6  # example inputs drawn per pair (the most confident mistakes first)
MAX_LEGEND_CLASSES = 20  # above this many classes, curves are drawn without a legend


def _labels(preds: Predictions) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(true labels int64 [rows], predicted labels int64 [rows], class names) of a split."""
    experiment = preds.experiment
    y_true = np.asarray(preds.rows[experiment.label_key]).astype(np.int64).reshape(-1)
    y_pred = np.asarray(preds.outputs["label"]).astype(np.int64).reshape(-1)
    return y_true, y_pred, [str(n) for n in experiment.class_names]


def headline(preds: Predictions) -> dict[str, float | None]:
    """Accuracy and macro precision, recall and F1, in [0, 1] (scikit-learn's
    `precision_recall_fscore_support(average="macro")` with its default labels: the classes that
    occur as a true or a predicted label of these rows, as training logs `val/f1`; a class never
    predicted has precision 0). The macro means are None where the rows hold fewer than two
    true classes (a `label` slice): averaging one class's precision (1 by construction) with
    the recall-0 classes its errors name measures nothing; read accuracy, that class's recall."""
    from sklearn import metrics

    y_true, y_pred, _ = _labels(preds)
    top: dict[str, float | None] = {"accuracy": float(metrics.accuracy_score(y_true, y_pred))}
    if len(np.unique(y_true)) < 2:
        return {**top, "macro_precision": None, "macro_recall": None, "macro_f1": None}
    p, r, f, _ = metrics.precision_recall_fscore_support(
        y_true, y_pred, average="macro", zero_division=0
    )
    return {**top, "macro_precision": float(p), "macro_recall": float(r), "macro_f1": float(f)}


def per_class(preds: Predictions) -> Section:
    """Per-class precision, recall, F1 (in [0, 1]) and support (rows of that true class), from
    scikit-learn's precision_recall_fscore_support (0 where a class is never predicted or has
    no rows), plus the headline metrics."""
    from sklearn import metrics

    y_true, y_pred, names = _labels(preds)
    p, r, f, s = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=np.arange(len(names)), zero_division=0
    )
    classes = {
        name: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i, name in enumerate(names)
    }
    top = headline(preds)
    present = [n for n in names if classes[n]["support"]]
    worst, tied = extreme(present, lambda n: classes[n]["f1"])
    notes = [
        f"accuracy {top['accuracy']:.4f}, macro F1 {metric_text('f1', top['macro_f1'])} over "
        f"{len(y_true):,} rows; worst class {worst!r} "
        f"(F1 {metric_text('f1', classes[worst]['f1'])})" + tied_text(tied)
    ]
    absent = [n for n in names if not classes[n]["support"]]
    if absent:
        notes.append(f"classes without rows in this split: {', '.join(absent)}")
    metrics_ = {**top, "rows": int(len(y_true)), "classes": classes}
    return Section("Per-class metrics", metrics_, {}, notes)


def confusion(preds: Predictions) -> Section:
    """The confusion matrix (rows: true class, columns: predicted class; counts of rows) as a
    heatmap annotated with the counts."""
    from sklearn import metrics

    y_true, y_pred, names = _labels(preds)
    matrix = metrics.confusion_matrix(y_true, y_pred, labels=np.arange(len(names)))
    size = min(16.0, max(4.5, 0.55 * len(names) + 2.0))
    figure, axes = plt.subplots(figsize=(size, size * 0.9))
    display = metrics.ConfusionMatrixDisplay(matrix, display_labels=names)
    display.plot(
        ax=axes, cmap="Blues", colorbar=True, values_format="d", include_values=len(names) <= 30
    )
    display.im_.colorbar.set_label("rows")
    axes.set_title(f"Confusion matrix ({preds.split}, {len(y_true):,} rows)")
    axes.set_xlabel("Predicted class")
    axes.set_ylabel("True class")
    if max(map(len, names)) > 3:
        plt.setp(axes.get_xticklabels(), rotation=45, ha="right")
    figure.tight_layout()
    return Section(
        "Confusion matrix", {"labels": names, "matrix": matrix.tolist()}, {"heatmap": figure}
    )


def _one_vs_rest(preds: Predictions) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(class, is-that-class 0/1 [rows], its probability [rows]) for each class with both
    positive and negative rows: class 1 only for a binary model, every class otherwise."""
    y_true, _, names = _labels(preds)
    probabilities = np.asarray(preds.outputs["probabilities"], np.float64)
    classes = [1] if len(names) == 2 else range(len(names))
    curves = []
    for c in classes:
        hit = (y_true == c).astype(np.int64)
        if 0 < hit.sum() < len(hit):
            curves.append((c, hit, probabilities[:, c]))
    return curves


ZOOM_AUC = 0.98  # every class's ROC AUC at least this: the curves get a close-up inset
ZOOM = 0.2  # the inset's largest span on each axis, at the curves' corner


def _zoom(axes: Any, xlim: tuple[float, float], ylim: tuple[float, float], box: list) -> None:
    """An inset of `axes` (at `box`, axes fractions) redrawing its curves within `xlim` x
    `ylim`: at AUC near 1 every curve runs along two edges of the full plot, unreadable."""
    pad = 0.03 * (xlim[1] - xlim[0])  # a curve along the corner's edge stays off the frame
    inset = axes.inset_axes(
        box, xlim=(xlim[0] - pad, xlim[1] + pad), ylim=(ylim[0] - pad, ylim[1] + pad)
    )
    for line in axes.get_lines():
        if line.get_linestyle() == "-":  # the curves, not the chance diagonal
            inset.plot(
                *line.get_data(), lw=1.1, color=line.get_color(), drawstyle=line.get_drawstyle()
            )
    inset.set_title(
        f"the grey box enlarged ({xlim[0]:.3g}-{xlim[1]:.3g} x {ylim[0]:.3g}-{ylim[1]:.3g})",
        fontsize=7,
    )
    inset.tick_params(labelsize=7)
    inset.grid(alpha=0.3)
    # The box alone: its connector lines ran across the whole plot to the inset.
    for connector in axes.indicate_inset_zoom(inset, edgecolor="grey").connectors:
        connector.set_visible(False)


def curves(preds: Predictions) -> Section:
    """ROC and precision-recall curves (scikit-learn's roc_curve and precision_recall_curve; the
    latter drawn as steps): the positive class (1) for a binary model, one-vs-rest per class
    otherwise, with ROC AUC and average precision per class (in [0, 1]) and their macro means
    over the classes drawn. A
    class without rows (or with every row) has no curve and is listed. When every AUC is at
    least ZOOM_AUC, each plot gets an inset of its curves' corner."""
    from sklearn import metrics

    _, _, names = _labels(preds)
    figure, (roc_axes, pr_axes) = plt.subplots(1, 2, figsize=(12, 5.2))
    auc, ap = {}, {}
    corner = {"roc": [0.0], "pr": [0.0]}  # how far from its corner each curve turns
    for c, hit, score in _one_vs_rest(preds):
        fpr, tpr, _ = metrics.roc_curve(hit, score)
        precision, recall, _ = metrics.precision_recall_curve(hit, score)
        corner["roc"] += [fpr[tpr >= 1].min(), 1 - tpr[fpr <= 0].max()]
        corner["pr"] += [1 - recall[precision >= 1].max(), 1 - precision[recall >= 1].max()]
        auc[names[c]] = float(metrics.roc_auc_score(hit, score))
        ap[names[c]] = float(metrics.average_precision_score(hit, score))
        roc_axes.plot(fpr, tpr, lw=1.3, label=f"{names[c]} (AUC {auc[names[c]]:.4f})")
        # A step, as average precision sums it (scikit-learn's PrecisionRecallDisplay): a
        # straight line between two points overstates the precision between them (Davis and
        # Goadrich 2006). One point per recall, the highest precision reaching it (the one the
        # sum weighs): scikit-learn's curve also holds the lower thresholds that add only
        # negatives at the same recall, down to (1, base rate), flagging every row, drawn as a
        # vertical drop at recall 1 that average precision gives no weight.
        last = np.r_[recall[1:] != recall[:-1], True]  # recall falls along the curve
        pr_axes.plot(recall[last], precision[last], lw=1.3, drawstyle="steps-post",
                     label=f"{names[c]} (AP {ap[names[c]]:.4f})")  # fmt: skip
    roc_axes.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8, label="chance")
    kind = "positive class" if len(names) == 2 else "one-vs-rest"
    # Named: breast cancer's class 1 is `benign`, and "(positive class)" read as malignant.
    said = f"positive class {names[1]!r}" if len(names) == 2 else kind
    for axes, what, x, y in (
        (roc_axes, "ROC", "False positive rate", "True positive rate"),
        (pr_axes, "Precision-recall", "Recall", "Precision"),
    ):
        axes.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.02), xlabel=x, ylabel=y)
        axes.set_title(f"{what} ({said}, {preds.split})")
        axes.grid(alpha=0.3)
        if 0 < len(auc) <= MAX_LEGEND_CLASSES:
            axes.legend(loc="lower right" if what == "ROC" else "lower left", fontsize=8)
    if auc and min(auc.values()) >= ZOOM_AUC:  # every curve hugs the corner: show it close up
        roc, pr = (min(max(max(corner[k]) * 1.25, 0.01), ZOOM) for k in ("roc", "pr"))
        if max(corner["roc"]) > 0:  # not every curve perfect: an L in a box shows nothing
            _zoom(roc_axes, (0, roc), (1 - roc, 1), [0.3, 0.3, 0.4, 0.45])
        if max(corner["pr"]) > 0:
            _zoom(pr_axes, (1 - pr, 1), (1 - pr, 1), [0.42, 0.3, 0.4, 0.45])
    figure.tight_layout()
    missing = [n for i, n in enumerate(names) if n not in auc and (len(names) > 2 or i == 1)]
    notes = []
    if auc:
        notes.append(
            f"ROC AUC {np.mean(list(auc.values())):.4f}, average precision "
            f"{np.mean(list(ap.values())):.4f} ({said})"
        )
    if missing:
        which = f"class{'es' * (len(missing) > 1)} {', '.join(missing)}"
        notes.append(f"no ROC curve for {which}: only one kind of row")
    metrics_ = {
        "kind": kind,
        "roc_auc": auc,
        "average_precision": ap,
        "macro_roc_auc": float(np.mean(list(auc.values()))) if auc else None,
        "macro_average_precision": float(np.mean(list(ap.values()))) if ap else None,
        "classes_without_curve": missing,
    }
    return Section("ROC and precision-recall", metrics_, {"curves": figure}, notes)


def reliability_grid(panels: int) -> tuple[Any, Any]:
    """A figure of `panels` reliability diagrams side by side: (figure, axes [2, panels]), each
    column's accuracy panel above its rows-per-bin panel, for `reliability_axes`."""
    return plt.subplots(
        2,
        panels,
        figsize=(5.5 * panels, 6.5),
        sharex="col",
        gridspec_kw={"height_ratios": [3, 1]},
        squeeze=False,
    )


def reliability_axes(axes: Any, hist_axes: Any, bins: Any, title: str, classes: int) -> None:
    """Draws one reliability diagram (accuracy per confidence bin as bars, the gap from it to
    the bin's mean confidence hatched, as in Guo et al. 2017, fig. 1, so a bin whose rows are
    all wrong shows too; the mean confidence as a red mark, the diagonal where they agree) and,
    below it, the histogram of confidences (rows per bin, a log scale so a bin of one row
    shows beside one of hundreds). The x axis starts at the bin holding 1 / `classes`, the
    lowest top-class probability there is (a binary model's left half was always empty); the
    part of that bin below 1 / `classes`, which no row can reach, is shaded, and 1 / `classes`
    is a tick (the axis began at an unmarked 0.067 under ticks from 0.2)."""
    edges = np.asarray(bins.edges)
    left = float(edges[:-1][edges[:-1] <= 1 / classes].max())
    centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    filled = np.asarray(bins.counts) > 0
    accuracy, confidence = np.asarray(bins.accuracy)[filled], np.asarray(bins.confidence)[filled]
    axes.bar(
        centers[filled],
        accuracy,
        width[filled],
        color="tab:blue",
        edgecolor="black",
        lw=0.5,
        label="accuracy in bin",
    )
    axes.bar(
        centers[filled],
        confidence - accuracy,
        width[filled],
        bottom=accuracy,
        fill=False,
        hatch="//",
        edgecolor="tab:red",
        lw=0.5,
        label="gap to confidence",
    )
    axes.hlines(
        confidence,
        edges[:-1][filled],
        edges[1:][filled],
        colors="tab:red",
        lw=2.5,
        label="mean confidence in bin",
    )
    axes.plot([left, 1], [left, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    # Headroom above 1 for the legend, which covered the first bins' bars.
    axes.set(xlim=(left, 1), ylim=(0, 1.3), yticks=np.linspace(0, 1, 6), ylabel="Accuracy")
    axes.set_title(title, fontsize=11)
    axes.legend(loc="upper left", fontsize=8, ncol=2)
    axes.tick_params(labelbottom=False)
    counts = np.asarray(bins.counts)
    hist_axes.bar(centers, counts, width, color="tab:grey", edgecolor="black", lw=0.5)
    hist_axes.set_yscale("log")
    # The floor below 1: a bin of 1 or 2 rows is a bar, not a sliver at the axis (matplotlib
    # put the floor at the smallest count); plain integer ticks, not 2x10^0, 3x10^0, ...
    top = max(float(counts.max()), 1.0)
    hist_axes.set(
        xlim=(left, 1),
        ylim=(ROWS_FLOOR, top * 2),
        yticks=count_ticks(top),
        xlabel=f"Confidence (top-class probability, at least 1/{classes})",
        ylabel="Rows (log)",
    )
    hist_axes.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    hist_axes.yaxis.set_minor_formatter(ticker.NullFormatter())
    floor = 1 / classes
    for ax in (axes, hist_axes):
        ax.axvspan(left, floor, color="0.9", lw=0, zorder=0)
    ticks = [t for t in np.linspace(0, 1, 11) if t > floor + 0.05] if classes > 2 else []
    hist_axes.set_xticks([floor, *ticks] if ticks else np.linspace(0.5, 1, 6))
    hist_axes.xaxis.set_major_formatter(
        ticker.FuncFormatter(lambda v, _: f"1/{classes}" if abs(v - floor) < 1e-9 else f"{v:g}")
    )


ROWS_FLOOR = 0.4  # the rows panel's log axis starts here: a 1-row bar is 0.4 decade tall


def count_ticks(top: float, most: int = 5) -> list[int]:
    """At most `most` integer ticks in [1, `top`] for a log axis of counts: 1, 2, 5, 10, ...
    thinned to 1, 3, 10, 30, ... then to the powers of 10 as the range grows."""
    for steps in ((1, 2, 5), (1, 3), (1,)):
        ticks = [
            m * 10**k for k in range(int(np.log10(top)) + 1) for m in steps if m * 10**k <= top
        ]
        if len(ticks) <= most:
            return ticks
    return ticks[:: -(-len(ticks) // most)]


def calibration(preds: Predictions) -> Section:
    """Whether the probabilities mean what they say, before and after temperature scaling
    (Guo et al. 2017): ECE, MCE, Brier and NLL (ann.metrics.calibration.summary, 15 bins) of
    softmax(logits) and of softmax(logits / T), T fitted on the validation split's logits (this
    split's, for the validation split itself), with both reliability diagrams and confidence
    histograms; and the scores of the probabilities the model serves (`served`: an export's
    are already divided by its manifest's temperature). A fit the validation split refuses (one
    class, no optimum, as when every row is right) leaves softmax(logits)'s scores and diagram
    with the refusal as `error`; logits that cannot be scored at all get only the message.
    Under `config.calibration` "none" (softmax(logits) is what is served) no temperature is
    fitted: a T in the summary read as if the model used it."""
    from ann.metrics import calibration as calib

    y_true, _, _ = _labels(preds)
    fitted_on = preds.validation or preds
    logits = np.asarray(preds.outputs["logits"], np.float64)
    uncalibrated = preds.config.get("calibration") == "none"
    temperature, refused, short = None, "", ""
    try:
        probabilities = {"before": calib.softmax(calib.check_logits(logits))}
        try:
            if not uncalibrated:
                labels = _labels(fitted_on)[0]
                temperature = calib.fit_temperature(fitted_on.outputs["logits"], labels)
                probabilities["after"] = calib.softmax(logits, temperature)
        except calib.CalibrationError as e:
            refused = f"no temperature fitted on {fitted_on.split}: {e}"
            short = f"no temperature fitted on {fitted_on.split}: {e.short}"
        scores = {when: calib.summary(p, y_true) for when, p in probabilities.items()}
        bins = {when: calib.reliability(p, y_true) for when, p in probabilities.items()}
        served = calib.summary(np.asarray(preds.outputs["probabilities"], np.float64), y_true)
        change = None
        if temperature is not None:
            change = calib.ece_change_interval(logits, y_true, temperature)
    except calib.CalibrationError as e:
        return Section("Calibration", {"error": str(e)}, {}, [f"calibration: {e}"])
    figure, grid = reliability_grid(len(bins))
    titles = _panel_titles(scores, temperature, refused)
    served_panel = _served_panel(preds, temperature)
    if served_panel in titles:
        titles[served_panel] += ", as exported"
    for column, when in enumerate(bins):
        classes = probabilities[when].shape[1]
        reliability_axes(grid[0, column], grid[1, column], bins[when], titles[when], classes)
    figure.suptitle(f"Reliability ({preds.split}, {len(y_true):,} rows, {calib.BINS} bins)")
    figure.tight_layout()
    metrics_ = {
        # The temperature the model's own probabilities already use (an export's manifest
        # `calibration`; 1 for a checkpoint) and their scores: what is served.
        "served_temperature": float(getattr(preds.experiment, "temperature", 1.0)),
        "served": served,
        **({"calibration": "none"} if uncalibrated else {"temperature_fitted_on": fitted_on.split}),
        "bins": calib.BINS,
        **{when: scores[when] for when in scores},
        **{f"reliability_{when}": bins[when].to_json() for when in bins},
    }
    before = scores["before"]
    if refused:
        metrics_["error"] = refused
        # The reason in a few words (the fit's full message, ~300 characters, was the line,
        # on each split): report.json's `error` keeps it whole.
        note = f"calibration: ECE {before['ece']:.4f}, NLL {before['nll']:.4f}; {short}"
        if short != refused and fitted_on is preds:  # the detail's pointer said once
            note += " (more in report.json's calibration error)"
        return Section("Calibration", metrics_, {"reliability": figure}, [note])
    if uncalibrated:
        note = (
            f"calibration: ECE {before['ece']:.4f}, NLL {before['nll']:.4f} of softmax(logits) "
            "(calibration none: no temperature fitted or applied)"
        )
        return Section("Calibration", metrics_, {"reliability": figure}, [note])
    metrics_["temperature"] = float(temperature)
    metrics_["ece_change"] = {"low": change[0], "high": change[1], "confidence": 0.95}
    note = (
        f"calibration: ECE {before['ece']:.4f} -> {scores['after']['ece']:.4f}, NLL "
        f"{before['nll']:.4f} -> {scores['after']['nll']:.4f} with temperature "
        f"{metric_text('temperature', temperature)} (fitted on {fitted_on.split})"
    )
    notes = [note]
    # The fit minimises NLL, not ECE: as export says (never under calibration none, which
    # fits nothing). Beyond the ECE's sampling noise only: the interval of the change lies
    # above 0.
    # Only the split the temperature was fitted on (validation) chooses; on another (test,
    # read once as the estimate) the rise is information, not a reason to drop it.
    if change[0] > 0:
        then = (
            "on this validation evidence, ann export --calibration=none serves softmax(logits)"
            if fitted_on is preds
            else "information only (validate to choose, test once): the calibration is "
            f"chosen on {fitted_on.split}"
        )
        notes.append(
            f"note: temperature scaling raised the {preds.split} ECE ({before['ece']:.4f} -> "
            f"{scores['after']['ece']:.4f}, a rise of {change[0]:.4f} to {change[1]:.4f} at 95% "
            f"by a paired bootstrap of the rows); {then}"
        )
    return Section("Calibration", metrics_, {"reliability": figure}, notes)


def _panel_titles(scores: dict, temperature: float | None, refused: str) -> dict[str, str]:
    """The reliability panels' titles: softmax(logits)'s alone where no temperature was fitted
    (`refused` says why; else calibration none fitted none), else before and after."""
    ece = {when: f"ECE {metric_text('ece', score['ece'])}" for when, score in scores.items()}
    if temperature is None:
        why = "no temperature fitted" if refused else "calibration none"
        return {"before": f"softmax(logits), {why} ({ece['before']})"}
    return {
        "before": f"Before temperature scaling ({ece['before']})",
        "after": f"After, T = {metric_text('temperature', temperature)} ({ece['after']})",
    }


def _served_panel(preds: Predictions, temperature: float | None) -> str | None:
    """Which reliability panel draws what an export of the model serves: "before" for
    softmax(logits) (`config.calibration` "none"), "after" for the temperature fitted here (a
    run's export fits the same one on the same validation split; an export's manifest holds
    it), None for neither (no temperature fitted here, or an export's that differs)."""
    if preds.config.get("calibration") == "none":
        return "before"
    if temperature is None:
        return None
    served = float(getattr(preds.experiment, "temperature", 1.0))  # 1.0: a run's checkpoint
    if served == 1.0 or math.isclose(served, temperature, rel_tol=1e-3):
        return "after"
    return None


def _image(x: np.ndarray) -> np.ndarray | None:
    """One input as something imshow draws (H x W, or H x W x 3/4), or None when it is not an
    image (a feature vector, a sequence)."""
    x = np.asarray(x)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim == 2 and min(x.shape) >= 4 or x.ndim == 3 and x.shape[-1] in (3, 4):
        return x
    return None


def confusions(preds: Predictions) -> Section:
    """The most frequent mistakes: the TOP_CONFUSIONS (true, predicted) pairs by count (ties
    by label order), each with the row indices (in the split's order) of its most confident
    examples, drawn when the inputs are images. The note names every pair shown and how many
    other pairs there are; metrics: `errors`, `rows`, `pairs` (distinct wrong pairs), `top`."""
    y_true, y_pred, names = _labels(preds)
    confidence = np.asarray(preds.outputs["probabilities"]).max(-1)
    wrong = y_true != y_pred
    pairs, counts = np.unique(
        np.stack([y_true[wrong], y_pred[wrong]], 1), axis=0, return_counts=True
    )
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -counts))[:TOP_CONFUSIONS] if len(pairs) else []
    top = []
    for i in order:
        t, p = (int(v) for v in pairs[i])
        rows = np.flatnonzero((y_true == t) & (y_pred == p))
        rows = rows[np.argsort(-confidence[rows], kind="stable")][:EXAMPLES_PER_CONFUSION]
        top.append(
            {
                "true": names[t],
                "predicted": names[p],
                "count": int(counts[i]),
                "examples": rows.tolist(),
            }
        )
    errors = int(wrong.sum())
    metrics_ = {"errors": errors, "rows": int(len(y_true)), "pairs": len(pairs), "top": top}
    notes = ["no mistakes on this split"]
    if top:
        shown = ", ".join(f"{c['true']} -> {c['predicted']} ({c['count']}x)" for c in top)
        rest = len(pairs) - len(top)  # ties at the last count included: say so, not drop them
        last = top[-1]["count"]  # what each pair not shown has at most
        each = "1x each" if last == 1 else f"at most {last}x each"
        more = f"; {rest} more pair{'s' * (rest != 1)}, {each}" if rest else ""
        notes = [f"most frequent mistakes ({errors:,} in {len(pairs):,} pairs): {shown}{more}"]
    inputs = preds.rows[preds.experiment.input_key]
    if not top or _image(inputs[0]) is None:
        return Section("Worst confusions", metrics_, {}, notes)
    columns = max(len(pair["examples"]) for pair in top)
    figure, grid = plt.subplots(
        len(top), columns, figsize=(1.5 * columns + 1.2, 1.6 * len(top)), squeeze=False
    )
    for r, pair in enumerate(top):
        for c in range(columns):
            axes = grid[r, c]
            axes.set_xticks([])
            axes.set_yticks([])
            if c >= len(pair["examples"]):
                axes.axis("off")
                continue
            row = pair["examples"][c]
            axes.imshow(_image(inputs[row]), cmap="gray_r", interpolation="nearest")
            axes.set_title(f"row {row}, p={confidence[row]:.2f}", fontsize=8)
        grid[r, 0].set_ylabel(
            f"true {pair['true']}\n→ predicted {pair['predicted']}\n"
            f"({pair['count']} row{'s' if pair['count'] != 1 else ''})",
            fontsize=9,
        )
    figure.suptitle(f"Most frequent mistakes ({preds.split}): most confident examples")
    figure.tight_layout()
    return Section("Worst confusions", metrics_, {"examples": figure}, notes)


def _operating_point(preds: Predictions, target: float) -> dict[str, float] | None:
    """The best precision among thresholds on class 1's probability whose recall on `preds` is
    at least `target`, with that recall and threshold (scikit-learn's precision_recall_curve;
    positive when the probability >= threshold); None when class 1 is all or none of the rows."""
    from sklearn import metrics

    hit = (_labels(preds)[0] == 1).astype(np.int64)
    if not 0 < hit.sum() < len(hit):
        return None
    score = np.asarray(preds.outputs["probabilities"], np.float64)[:, 1]
    precision, recall, cut = metrics.precision_recall_curve(hit, score)
    reach = np.flatnonzero(recall[:-1] >= target)  # the last point (recall 0) has no threshold
    best = reach[np.argmax(precision[reach])]
    return {
        "precision": float(precision[best]),
        "recall": float(recall[best]),
        "threshold": float(cut[best]),
    }


def thresholds(preds: Predictions) -> Section | None:
    """Binary models only (else None): precision at a chosen recall, `config.report.
    target_recall` (default TARGET_RECALL), and the threshold on class 1's probability that
    reaches it (`_operating_point`) on this split; on the test split also the precision and
    recall here of the threshold chosen on validation (the honest number: chosen elsewhere);
    and precision and recall of the argmax (threshold 0.5)."""
    from sklearn import metrics

    y_true, y_pred, names = _labels(preds)
    if len(names) != 2:
        return None
    target = float(report_setting(preds, "target_recall", TARGET_RECALL))
    hit = (y_true == 1).astype(np.int64)
    result: dict[str, Any] = {
        "positive_class": names[1],
        "target_recall": target,
        "argmax_precision": float(metrics.precision_score(hit, y_pred, zero_division=0)),
        "argmax_recall": float(metrics.recall_score(hit, y_pred, zero_division=0)),
    }
    point = _operating_point(preds, target)
    if point is None:
        result.update(precision=None, recall=None, threshold=None)
        return Section("Threshold", result, {}, [f"no threshold: {names[1]!r} is all or none"])
    result.update(point)
    notes = [
        f"precision {point['precision']:.4f} at recall >= {target:g} (recall "
        f"{point['recall']:.4f}) with threshold {point['threshold']:.4g} on p({names[1]})"
    ]
    chosen = _operating_point(preds.validation, target) if preds.validation else None
    if chosen is not None:
        positive = np.asarray(preds.outputs["probabilities"])[:, 1] >= chosen["threshold"]
        result["validation_threshold"] = {
            "threshold": chosen["threshold"],
            "precision": float(metrics.precision_score(hit, positive, zero_division=0)),
            "recall": float(metrics.recall_score(hit, positive, zero_division=0)),
        }
        v = result["validation_threshold"]
        notes.append(
            f"validation's threshold {v['threshold']:.4g} gives precision {v['precision']:.4f}, "
            f"recall {v['recall']:.4f} here"
        )
    return Section("Threshold", result, {}, notes)


def sections(preds: Predictions) -> list[Section]:
    """Every classification section for one split (the threshold for a binary model only)."""
    found = [
        per_class(preds),
        confusion(preds),
        curves(preds),
        calibration(preds),
        confusions(preds),
    ]
    threshold = thresholds(preds)
    return found + ([threshold] if threshold else [])
