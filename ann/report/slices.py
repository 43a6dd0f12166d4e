"""Per-slice metrics: the task's headline metrics on each slice of a split, the gap between the
best and the worst slice, and the slices worse than the config's bound (TFMA's slicing, for
"is the model worse for some group?").

`config.report.slices` lists how to cut (`ann/report/slice_spec.py`: `label`,
`feature:NAME[INDEX]:quantiles=Q`, `field:NAME`); every row falls in exactly one slice of each
entry, so the slices' sizes add up to the split and their size-weighted mean of a row-mean
metric (accuracy, MAE, recall@k, exact match) is the whole split's. `report.slice_min` bounds a
headline score from below, `report.slice_max` a headline error from above (0 = no bound).

Where the headline is a proportion (accuracy, recall@1, exact match: `task_metrics.PROPORTIONS`)
each slice also gets its 95% Wilson score interval (Wilson 1927; scipy's
`binomtest(k, n).proportion_ci(method="wilson")`), so a flagged slice of 20 rows can be told from
a real regression: flags still go by the point estimate, and the summary says when a flagged
slice's interval reaches the bound.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ann.report import extreme, interval_text, metric_text, slice_spec, task_metrics, tied_text
from ann.report.predictions import Predictions
from ann.report.sections import Section
from ann.report.slicing import (
    SliceRefused,
    assign,
    check_bound,
    check_experiment,
    refused_together,
)

CI_LEVEL = 0.95  # the slices' interval: `ci95` in report.json
EDGE_PAD = 0.04  # the chart's margin left of 0, in spans of its values: a point at 0 shows whole


def wilson_interval(successes: int, rows: int, level: float = CI_LEVEL) -> list[float]:
    """[lo, hi]: the Wilson score interval (Wilson 1927, "Probable inference, the law of
    succession, and statistical inference") of a proportion `successes` / `rows` at confidence
    `level`, from scipy.stats.binomtest(...).proportion_ci(method="wilson"). Inside [0, 1] and
    never of width 0 (unlike the normal approximation at 0 or `rows` successes). Raises
    ValueError unless 0 <= successes <= rows and rows >= 1."""
    from scipy.stats import binomtest

    if not 0 <= successes <= rows or rows < 1:
        raise ValueError(f"a proportion needs 0 <= successes <= rows >= 1; got {successes}/{rows}")
    ci = binomtest(int(successes), int(rows)).proportion_ci(confidence_level=level, method="wilson")
    return [float(ci.low), float(ci.high)]


def headline_interval(metrics: dict[str, Any], headline: str, size: int) -> list[float] | None:
    """The `ci95` of a slice: the Wilson interval of its headline when that is a proportion of
    its `size` rows (`task_metrics.PROPORTIONS`) and defined, else None."""
    value = metrics.get(headline)
    if headline not in task_metrics.PROPORTIONS or value is None or size < 1:
        return None
    return wilson_interval(round(value * size), size)


def slice_metrics(
    preds: Predictions,
    spec: str | slice_spec.SliceSpec,
    metric_fn: task_metrics.MetricFn | None = None,
) -> dict[str, Any]:
    """Metrics per slice of one `report.slices` entry (JSON-able, schema in docs/report.md).

    `metric_fn(preds, index)` defaults to the experiment's (`task_metrics.HEADLINES`); its first
    metric is the headline, higher is better unless the experiment's HEADLINES entry says not.
    Returns {spec, headline, higher_is_better, overall: {size, metrics, ci95}, slices: [{name,
    size, metrics, ci95}], gap: {best, worst, value, best_ties, worst_ties} (best and worst
    each the first in slice order among those tied, `*_ties` how many others tie: None with
    fewer than two slices that have a headline), bound: {slice_min|slice_max: value} or {},
    flagged: [names], notes: [why there are fewer slices than asked (`_collapsed`), or none]};
    ci95 is [lo, hi] (`headline_interval`) or None. Raises ValueError
    naming a `spec` string that does not parse, ConfigError one the data cannot take.
    """
    if isinstance(spec, str):
        try:
            spec = slice_spec.parse(spec)
        except ValueError as e:
            raise ValueError(f"slice {spec!r}: {e}") from None
    known = task_metrics.HEADLINES.get(preds.config.experiment)
    if metric_fn is None:
        check_experiment(preds.config)
    fn = metric_fn or known[0]
    higher = known[2] if known and fn is known[0] else True
    ids, names = assign(preds, spec)
    overall = fn(preds, np.arange(len(ids)))
    headline = next(iter(overall))
    slices = []
    for s, name in enumerate(names):
        index = np.flatnonzero(ids == s)
        metrics, size = fn(preds, index), int(len(index))
        ci95 = headline_interval(metrics, headline, size)
        slices.append({"name": name, "size": size, "metrics": metrics, "ci95": ci95})
    gaps = _gap_and_flags(preds, slices, headline, higher)
    notes = _collapsed(spec, len(slices))
    if gaps["gap"] is None and len(slices) >= 2:  # why the gap is null, where a gate reads it
        missing = [s["name"] for s in slices if s["metrics"].get(headline) is None]
        notes.append(
            f"no gap: {headline} is defined on fewer than two slices (not on "
            f"{', '.join(missing)}: {_UNDEFINED.get(headline, 'undefined there')})"
        )
    return {
        "spec": spec.text,
        "headline": headline,
        "higher_is_better": higher,
        "overall": {
            "size": int(len(ids)),
            "metrics": overall,
            "ci95": headline_interval(overall, headline, len(ids)),
        },
        "slices": slices,
        **gaps,
        "notes": notes,
    }


# Why a headline is not defined on a slice, for the note on a null gap.
_UNDEFINED = {"auroc": "rows of one class only", "map": "no query with a relevant item"}


def _gap_and_flags(
    preds: Predictions, slices: list[dict], headline: str, higher: bool
) -> dict[str, Any]:
    scored = [s for s in slices if s["metrics"].get(headline) is not None]
    gap = None
    if len(scored) >= 2:
        # Each the first in slice order among its ties (`extreme`), as every pick of the report.
        def score(s: dict) -> float:
            return s["metrics"][headline]

        best, best_ties = extreme(scored, score, lowest=not higher)
        worst, worst_ties = extreme(scored, score, lowest=higher)
        gap = {
            "best": best["name"],
            "worst": worst["name"],
            "value": abs(score(best) - score(worst)),
            "best_ties": best_ties,
            "worst_ties": worst_ties,
        }
    check_bound(preds.config, headline, higher)  # as ann train checked it before step 0
    report = preds.config.get("report", {})
    key = "slice_min" if higher else "slice_max"
    bound = float(report.get(key, 0.0) or 0.0)
    flagged = []
    if bound:
        flagged = [
            s["name"]
            for s in scored
            if (s["metrics"][headline] < bound if higher else s["metrics"][headline] > bound)
        ]
    return {"gap": gap, "bound": {key: bound} if bound else {}, "flagged": flagged}


def report_slices(
    preds: Predictions, metric_fn: task_metrics.MetricFn | None = None
) -> list[Section]:
    """One Section per `config.report.slices` entry: `slice_metrics` and a bar chart of the
    headline per slice."""
    sections, refused = [], []
    for entry in preds.config.get("report", {}).get("slices", ()):
        try:
            result = slice_metrics(preds, entry, metric_fn)
        except SliceRefused as e:  # every entry said (`slicing.refused_together`)
            refused.append(e)
            continue
        sections.append(
            Section(
                title=f"Slices: {result['spec']}",
                metrics=result,
                figures={"by_slice": slice_figure(result, preds.split)},
                notes=_notes(result),
            )
        )
    if refused:
        raise refused_together(refused)  # its caller says what to do (a rerun's flag)
    return sections


def _notes(result: dict[str, Any]) -> list[str]:
    h = result["headline"]
    overall = result["overall"]["metrics"][h]
    count = len(result["slices"])
    # A class's own slice scores its rows alone: its recall, which the split's "worst class"
    # by F1 (precision too) may not share (trial 47b read two worst classes as a contradiction).
    recall = (
        " (a label's accuracy: its recall)" if result["spec"] == "label" and h == "accuracy" else ""
    )
    notes = [
        f"{result['spec']}: {count} slice{'s' * (count != 1)}, overall {h} "
        f"{metric_text(h, overall)}{recall}"
    ]
    notes += [f"  {note}" for note in result["notes"]]
    g = result["gap"]
    if g and g["value"] == 0:  # no best and worst among equals
        (level,) = {s["metrics"][h] for s in result["slices"] if s["name"] == g["best"]}
        said = metric_text(h, level)
        notes.append(f"  {h} gap {metric_text(h, 0.0)} (every slice's {h} is {said})")
    elif g:
        at = {s["name"]: metric_text(h, s["metrics"][h]) for s in result["slices"]
              if s["name"] in (g["best"], g["worst"])}  # fmt: skip
        notes.append(
            f"  {h} gap {metric_text(h, g['value'])} (best {g['best']}"
            f"{tied_text(g.get('best_ties', 0))} at {at[g['best']]}, worst {g['worst']}"
            f"{tied_text(g.get('worst_ties', 0))} at {at[g['worst']]})"
        )
    if result["flagged"]:
        notes += _flag_notes(result)
    return notes


def _collapsed(spec: slice_spec.SliceSpec, made: int) -> list[str]:
    """Why the slicing `spec` made fewer slices (`made`) than asked: one slice (a feature
    constant on the split, a field or label of one value), nothing to compare; or quantile bins
    that tied values merged, or an empty one (`slicing.quantile_buckets`). [] when neither."""
    if made == 1:
        what = {
            "feature": f"{_feature_label(spec)} has one value on every row of this split",
            "field": f"field {spec.name!r} has one value on every row of this split",
            "label": "every row of this split is of one class",
        }[spec.kind]
        return [f"one slice: {what}; nothing to compare"]
    if spec.kind == "feature" and made < spec.quantiles:
        return [
            f"{spec.quantiles - made} of {spec.quantiles} quantile bins merged with a "
            f"neighbour (tied or too few values), so {made} slices"
        ]
    return []


def _feature_label(spec: slice_spec.SliceSpec) -> str:
    """`image[0,0,0]`: the feature and index as its slices' names write them."""
    return spec.name + (f"[{','.join(map(str, spec.index))}]" if spec.index else "")


def _flag_notes(result: dict[str, Any]) -> list[str]:
    """The flagged slices with their headline (and 95% interval, where it has one, its ends
    written like the headline: `metric_text`); a second line naming those whose interval
    reaches the bound (worse than it by chance alone, maybe)."""
    ((key, bound),) = result["bound"].items()
    h = result["headline"]
    by_name = {s["name"]: s for s in result["slices"]}
    flagged = [by_name[name] for name in result["flagged"]]
    shown = []
    for entry in flagged:
        interval = interval_text(h, entry.get("ci95"))
        shown.append(f"{entry['name']} {metric_text(h, entry['metrics'][h])} {interval}".rstrip())
    with_ci = any(entry.get("ci95") for entry in flagged)
    # One slice is the whole split: past the bound is the model's headline, not a group's.
    whole = " (the one slice: the whole split)" if len(result["slices"]) == 1 else ""
    notes = [
        f"  flagged ({key} {bound:g}{'; 95% CI in brackets' if with_ci else ''}): "
        + ", ".join(shown)
        + whole
    ]
    noise = [e["name"] for e in flagged if e.get("ci95") and e["ci95"][0] <= bound <= e["ci95"][1]]
    if noise:
        which = ", ".join(noise)
        if len(noise) == len(flagged) > 1:
            which = "both" if len(flagged) == 2 else f"all {len(flagged)}"
        notes.append(
            f"  the 95% CI reaches {key} {bound:g} for {which}: too few rows to tell from noise"
        )
    return notes


def slice_figure(result: dict[str, Any], split: str | None = None) -> Figure:
    """A dot plot of the `split`'s slices (its title names it): the headline per slice as a
    point (red: flagged) with its 95% interval as a whisker where it has one, the slice sizes,
    the overall value and the bound as vertical lines, each value in a column right of the
    axes; a slice without a headline (AUROC of one class) reads "n/a"."""
    h = result["headline"]
    slices = result["slices"]
    values = [s["metrics"][h] for s in slices]
    intervals = [s.get("ci95") for s in slices]
    fig = Figure(figsize=(7.5, 1.6 + 0.32 * len(slices)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(slices))[::-1]
    colors = ["#d62728" if s["name"] in result["flagged"] else "#1f77b4" for s in slices]
    # Points, not bars: the axis is zoomed on the values, and a bar cut off at the left edge
    # would show 0.91 as a third of 1.0.
    ax.grid(axis="y", color="#eeeeee", lw=0.8)
    _interval_bars(ax, y, values, intervals)
    shown_y = [yi for yi, v in zip(y, values) if v is not None]
    ax.scatter(
        [v for v in values if v is not None],
        shown_y,
        c=[c for c, v in zip(colors, values) if v is not None],
        s=36,
        zorder=3,
    )
    for yi, v, color in zip(y, values, colors):
        if v is None:  # at the axes' left edge: a text at x = 0 would stretch the figure
            ax.text(
                0.01,
                yi,
                "n/a (not defined on this slice)",
                va="center",
                fontsize=8,
                transform=ax.get_yaxis_transform(),
            )
        else:  # in a column right of the axes: next to its point it covered the lines
            ax.annotate(
                metric_text(h, v),
                (1.0, yi),
                xycoords=("axes fraction", "data"),
                xytext=(6, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
                color=color,
            )
    ax.set_yticks(y, [f"{s['name']}  (n={s['size']:,})" for s in slices], fontsize=8)
    # Half a row of margin: with no point drawn (no slice has the headline) the y-axis kept
    # matplotlib's 0..1, and the top slice's "n/a" sat on the frame.
    ax.set_ylim(-0.5, len(slices) - 0.5)
    overall = result["overall"]["metrics"][h]
    if overall is not None:
        said = f"overall {metric_text(h, overall)}"
        ax.axvline(overall, color="black", lw=1, ls="--", label=said)
    for key, bound in result["bound"].items():
        ax.axvline(bound, color="#d62728", lw=1, ls=":", label=f"{key} {bound:g}")
    ends = [e for ci in intervals if ci for e in ci]
    shown = [v for v in (*values, *ends, overall, *result["bound"].values()) if v is not None]
    if shown:
        # Zoomed on the values (from 0, a gap of 0.02 in accuracy would not show), the left
        # margin stopping just below 0 for values of 0 and up: a point at 0 sat on the edge,
        # half cut off, as a point at 1 would on a right edge at 1.
        low, high = min(shown), max(shown)
        span = max(high - low, abs(high) * 0.05, 1e-6)
        left = low - span * 0.3
        if low >= 0:
            left = max(left, -span * EDGE_PAD)
        ax.set_xlim(left, high + span * 0.08)
    ax.set_xlabel(f"{h} ({'higher' if result['higher_is_better'] else 'lower'} is better)")
    of = f" ({split})" if split else ""  # every report picture says which split it drew
    ax.set_title(f"{h} by slice: {result['spec']}{of}", fontsize=10)
    fig.legend(loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return fig


def _interval_bars(ax: Any, y: np.ndarray, values: list, intervals: list) -> None:
    """Error bars from each slice's ci95[0] to ci95[1] (none where it has no interval)."""
    drawn = [(yi, v, ci) for yi, v, ci in zip(y, values, intervals) if ci and v is not None]
    if not drawn:
        return
    ys, vs, cis = zip(*drawn)
    low = [v - ci[0] for v, ci in zip(vs, cis)]
    high = [ci[1] - v for v, ci in zip(vs, cis)]
    ax.errorbar(
        vs,
        ys,
        xerr=[low, high],
        fmt="none",
        ecolor="black",
        elinewidth=1,
        capsize=3,
        label=f"{CI_LEVEL:.0%} interval (Wilson)",
    )
