"""The report's pictures and its one-file HTML page.

`write_figures` saves each section's matplotlib figures as PNGs (Agg backend; each figure closed
once written); `write_index` writes index.html with every PNG inlined as a base64 data URI, so
the page is self-contained (mail it, open it offline), while the PNGs stay next to it.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from typing import Any

from ann import atomic
from ann.report import DECIMAL_METRICS, UNIT_METRICS, interval_text, metric_text
from ann.report.sections import Section

CELL_ITEMS = 10  # a table cell holds a list of at most this many scalars
# Nested metrics whose values are another metric's, written like it: a change of ECE, a task's
# exact match. (A slices section's gap is its headline's: `_metrics_tables`.)
VALUES_OF = {"ece_change": "ece", "by_task": "exact_match"}
DPI = 100  # figures are sized in inches for this: a 6.4 x 4.8 figure is 640 x 480 pixels

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
caption { text-align: left; font-weight: bold; padding: 2px 0; }
img { max-width: 100%; margin: 0.5em 0; display: block; }
pre { background: #f7f7f7; padding: 0.5em; overflow-x: auto; font-size: 0.8em; }
"""


# Words that join others ("exact match by length"): a figure name left with only these once the
# section's words are taken out says nothing of its own ("by_slice" in "Slices: label").
CONNECTIVES = frozenset({"a", "and", "at", "by", "for", "in", "of", "on", "per", "the", "to", "vs"})


def _word(word: str) -> str:
    """A word as compared for repeats: a plural as its singular ("scores", "slices")."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def figure_file(split: str, section: Section, name: str) -> str:
    """The PNG's file name: SPLIT_SECTION_NAME.png (letters, digits and '_' only), NAME without
    the words SPLIT and SECTION already say (a plural the same as its singular), and
    SPLIT_SECTION.png where nothing but joining words is left: a file name says no word twice
    ("MAE by horizon"'s mae_by_horizon was test_mae_by_horizon_mae_by_horizon.png, "Exact match
    by target length"'s exact_match_by_length test_exact_match_by_target_length_exact_match_by_
    length.png, "Anomaly scores"' score_histogram test_anomaly_scores_score_histogram.png)."""
    safe = _safe(name)
    said = {_word(w) for w in f"{split}_{section.key}".split("_")}
    rest = [w for w in safe.split("_") if w and _word(w) not in said]
    if all(w in CONNECTIVES for w in rest):
        return f"{split}_{section.key}.png"
    return f"{split}_{section.key}_{'_'.join(rest)}.png"


def _safe(name: str) -> str:
    """A figure's name in a file name: lower case, letters and digits, others as '_'."""
    return "".join(c if c.isalnum() else "_" for c in name.lower())


def write_figures(out: str, split: str, sections: list[Section]) -> dict[str, list[str]]:
    """Saves every figure of `sections` into `out` as PNG and closes it. Returns section key ->
    the file names written, in order. Two figures whose names `figure_file` makes one (a
    section's "roc" and "ROC curve" in "ROC") are kept apart: the second gets its full name
    SPLIT_SECTION_NAME.png, or a number after it."""
    import matplotlib.pyplot as plt

    written: dict[str, list[str]] = {}
    taken: set[str] = set()
    for section in sections:
        names = written.setdefault(section.key, [])
        for name, figure in section.figures.items():
            file_name = figure_file(split, section, name)
            if file_name in taken:
                file_name = f"{split}_{section.key}_{_safe(name)}.png"
                stem, number = file_name[: -len(".png")], 2
                while file_name in taken:
                    file_name, number = f"{stem}_{number}.png", number + 1
            taken.add(file_name)
            path = os.path.join(out, file_name)
            with atomic.writing(path):  # a full disk's failed write names no file
                figure.savefig(path, dpi=DPI, bbox_inches="tight")
            plt.close(figure)
            names.append(file_name)
    return written


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float | str | None)


def _cell(value: Any) -> bool:
    """A scalar, or a short list of scalars (the example rows of a confusion)."""
    if isinstance(value, list):
        return len(value) <= CELL_ITEMS and all(_scalar(v) for v in value)
    return _scalar(value)


def _rows_table(
    caption: str, columns: list[str], rows: list[list[Any]], metrics: list[list[str]] | None = None
) -> str:
    """`metrics`: per row, the metric each cell holds (default: its column's name), as
    `_format` writes it."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    metrics = metrics or [columns] * len(rows)
    body = "".join(
        "<tr>" + "".join(f"<td>{_format(v, m)}</td>" for v, m in zip(r, ms)) + "</tr>"
        for r, ms in zip(rows, metrics)
    )
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def _nested_table(key: str, value: Any, metric: str | None = None) -> str | None:
    """A nested metric that has a table's shape as a table: a list of records (per class, per
    decile), records by name (per task), or names to scalars (a value named by a metric,
    calibration's ece or nll, written as that metric, any other as `metric`, default `key`:
    per class); None for any other shape (curves: their picture shows them)."""
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        records = value
        if all(_cell(v) for r in records for v in r.values()):
            columns = list(dict.fromkeys(k for r in records for k in r))
            return _rows_table(key, columns, [[r.get(c) for c in columns] for r in records])
    if isinstance(value, dict) and value:
        if all(_scalar(v) for v in value.values()):
            rows = [[k, v] for k, v in value.items()]
            known = DECIMAL_METRICS | UNIT_METRICS
            metrics = [["", k if k in known else metric or key] for k in value]
            return _rows_table(key, ["", "value"], rows, metrics)
        inner = list(value.values())
        if all(isinstance(r, dict) and all(_cell(v) for v in r.values()) for r in inner):
            columns = list(dict.fromkeys(k for r in inner for k in r))
            rows = [[name, *(r.get(c) for c in columns)] for name, r in value.items()]
            return _rows_table(key, ["", *columns], rows)
    return None


def _matrix_table(labels: Any, matrix: Any) -> str | None:
    """A square matrix of counts by class (a confusion matrix: rows true, columns predicted)
    with its `labels` as a table; None for any other shape."""
    if not (isinstance(labels, list) and isinstance(matrix, list) and labels):
        return None
    if len(matrix) != len(labels) or any(
        not isinstance(r, list) or len(r) != len(labels) or not all(_scalar(v) for v in r)
        for r in matrix
    ):
        return None
    rows = [[str(name), *counts] for name, counts in zip(labels, matrix)]
    columns = ["true \\ predicted", *map(str, labels)]
    return _rows_table("matrix (rows: true class, columns: predicted class)", columns, rows)


def _metrics_tables(metrics: dict[str, Any], notes: Sequence[str] = ()) -> str:
    """The section's scalar metrics as a two-column table, each nested metric that has a
    table's shape as a table of its own (`_nested_table`), the rest in a collapsed <pre> block
    of JSON, but for lists of lines the section's `notes` (shown above it) already say (a
    slicing's `notes`: "one slice: ...")."""
    said = {n.strip() for n in notes}
    scalars = {k: v for k, v in metrics.items() if _scalar(v)}
    # VALUES_OF, and a slices section's gap: a difference of its headline metric, written like
    # it (the notes' "gap 0.0476").
    holds = dict(VALUES_OF)
    if isinstance(metrics.get("headline"), str):
        holds["gap"] = metrics["headline"]
    parts = []
    if scalars:
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{_format(v, k)}</td></tr>"
            for k, v in scalars.items()
        )
        parts.append(f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>")
    shown: set[str] = set()
    if isinstance(metrics.get("headline"), str) and isinstance(metrics.get("slices"), list):
        parts.append(_slices_table(metrics))
        metrics = {**metrics, **_slices_rest(metrics)}  # what the table did not show
    if (matrix := _matrix_table(metrics.get("labels"), metrics.get("matrix"))) is not None:
        parts.append(matrix)  # a confusion matrix: it was JSON, one number a line
        shown = {"labels", "matrix"}
    rest = {}
    for key, value in metrics.items():
        if _said(value, said) or key in shown or value is _SHOWN:
            continue
        if key not in scalars:
            table = _nested_table(key, value, holds.get(key))
            if table is None:
                rest[key] = value
            else:
                parts.append(table)
    if rest:
        text = json.dumps(rest, indent=1)
        parts.append(
            f"<details><summary>all values</summary><pre>{html.escape(text)}</pre></details>"
        )
    return "".join(parts)


def _said(value: Any, notes: set[str]) -> bool:
    """Whether `value` is a list of lines each of which is one of `notes` (stripped)."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, str) and v.strip() in notes for v in value)
    )


def _slices_table(result: dict[str, Any]) -> str:
    """A slices section's (`slices.slice_metrics`) table: per slice, after the overall row, its
    rows, its headline and 95% interval (written like the headline: `metric_text`, as the notes
    write them) and whether it is flagged; the slices' other metrics follow (`_slices_rest`)."""
    h = result["headline"]
    flagged = set(result.get("flagged") or ())

    def row(name: str, entry: dict[str, Any], flag: str) -> list[Any]:
        interval = interval_text(h, entry.get("ci95"))
        return [name, entry.get("size"), metric_text(h, entry["metrics"].get(h)), interval, flag]

    rows = [row("overall", result["overall"], "")] if result.get("overall") else []
    rows += [row(s["name"], s, _format(s["name"] in flagged)) for s in result["slices"]]
    return _rows_table("by slice", ["slice", "rows", h, "ci95", "flagged"], rows)


_SHOWN = object()  # a value a table above already shows whole


def _slices_rest(result: dict[str, Any]) -> dict[str, Any]:
    """The `overall` and `slices` of a slices section less what `_slices_table` shows (the
    rows, the headline, its interval): each slice's other metrics, by name, a table of their
    own (they were "all values" JSON, the table's repeated); `_SHOWN` for either where nothing
    else is left."""
    h = result["headline"]

    def other(entry: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in (entry.get("metrics") or {}).items() if k != h}

    slices = {s["name"]: other(s) for s in result["slices"] if other(s)}
    overall = other(result["overall"]) if result.get("overall") else {}
    return {"slices": slices or _SHOWN, "overall": overall or _SHOWN}


def _format(value: Any, metric: str = "") -> str:
    """A cell: a float of the metric named `metric` as the report writes it everywhere
    (`metric_text`), any other float with 4 significant digits."""
    if isinstance(value, list):
        return ", ".join(_format(v, metric) for v in value)
    if isinstance(value, bool):  # as report.json writes it (it said "True")
        return "true" if value else "false"
    if isinstance(value, float):
        return metric_text(metric, value)
    return html.escape(str(value))


def _image(out: str, file_name: str, what: str = "") -> str:
    """The PNG `file_name` in `out`, inlined; its alt text the picture in words: `what` (the
    split and section: "test: Error by target decile") and the file's name past its split
    ("error by decile"), not the file name a screen reader spelt out."""
    with open(os.path.join(out, file_name), "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    words = os.path.splitext(file_name)[0].replace("_", " ")
    split = what.partition(":")[0]
    words = words.removeprefix(f"{split} ") if split else words
    said = not what or words.lower() in what.lower()  # "Residuals: residuals" said it twice
    alt = html.escape(what or words if said else f"{what}: {words}")
    return f'<img alt="{alt}" title="{alt}" src="data:image/png;base64,{data}">'


def write_index(
    out: str,
    title: str,
    header: list[str],
    splits: dict[str, list[Section]],
    figures: dict[str, dict[str, list[str]]],
) -> str:
    """Writes out/index.html: `title`, the `header` lines, then per split each section's notes,
    metrics and pictures (from `figures`: split -> section key -> PNG files in `out`, inlined).
    Returns its path."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [f"<p>{html.escape(line)}</p>" for line in header]
    for split, sections in splits.items():
        for section in sections:
            body.append(f"<h2>{html.escape(split)}: {html.escape(section.title)}</h2>")
            if section.notes:
                items = "".join(f"<li>{html.escape(n)}</li>" for n in section.notes)
                body.append(f"<ul>{items}</ul>")
            body.append(_metrics_tables(section.metrics, section.notes))
            what = f"{split}: {section.title}"
            body += [_image(out, f, what) for f in figures.get(split, {}).get(section.key, [])]
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
    path = os.path.join(out, "index.html")
    atomic.write_text(path, page)
    return path
