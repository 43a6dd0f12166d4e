"""Classification's report: per-class precision, recall, F1 and support, the confusion matrix
(scikit-learn's numbers, matplotlib's pictures)."""

from __future__ import annotations

import numpy as np

from ann.report.collect import Predictions
from ann.report.sections import Section


def _labels(preds: Predictions) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(true labels, predicted labels, class names) of a split."""
    experiment = preds.experiment
    y_true = np.asarray(preds.rows[experiment.label_key]).astype(np.int64).reshape(-1)
    y_pred = np.asarray(preds.outputs["label"]).astype(np.int64).reshape(-1)
    return y_true, y_pred, list(experiment.class_names)


def headline(preds: Predictions) -> dict[str, float]:
    """Accuracy and macro precision, recall and F1 (scikit-learn; a class never predicted has
    precision 0): what each slice is scored by."""
    from sklearn import metrics

    y_true, y_pred, names = _labels(preds)
    labels = np.arange(len(names))
    p, r, f, _ = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    return {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "macro_precision": float(p),
        "macro_recall": float(r),
        "macro_f1": float(f),
    }


def per_class(preds: Predictions) -> Section:
    """Per-class precision, recall, F1 and support (scikit-learn's precision_recall_fscore_support;
    0 where a class is never predicted or absent)."""
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
    worst = min(classes, key=lambda n: (classes[n]["f1"], n))
    notes = [
        f"accuracy {top['accuracy']:.4f}, macro F1 {top['macro_f1']:.4f} over {len(y_true)} rows; "
        f"worst class {worst!r} (F1 {classes[worst]['f1']:.3f})"
    ]
    return Section(
        "Per-class metrics", {**top, "rows": int(len(y_true)), "classes": classes}, {}, notes
    )


def confusion(preds: Predictions) -> Section:
    """The confusion matrix (rows: true class, columns: predicted), as counts and a heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    from sklearn import metrics

    y_true, y_pred, names = _labels(preds)
    matrix = metrics.confusion_matrix(y_true, y_pred, labels=np.arange(len(names)))
    display = metrics.ConfusionMatrixDisplay(matrix, display_labels=names)
    size = max(4.0, 0.5 * len(names) + 2.0)
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(size, size))
    display.plot(ax=axes, cmap="Blues", colorbar=False, values_format="d")
    axes.set_title(f"Confusion matrix ({preds.split}, {len(y_true)} rows)")
    metrics_ = {"labels": names, "matrix": matrix.tolist()}
    return Section("Confusion matrix", metrics_, {"confusion_matrix": figure}, [])


def sections(preds: Predictions) -> list[Section]:
    """Every classification section for one split."""
    return [per_class(preds), confusion(preds)]
