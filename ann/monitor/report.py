"""The drift report of `ann monitor drift`: report.json, the PNGs and index.html in one directory.

Pictures (matplotlib, written and inlined by `ann.report.html`):
- `drift_summary_strength.png`: the features most past their thresholds (strength: distance /
  threshold, or log p / log 0.05; >= 1 is drift; under a correction the uncorrected strength
  as a light bar behind the adjusted one; a strength of 0 as a "0", no bar; the top SHOWN,
  said in the title), and for an image-like numeric input (one value per position, no
  projection) `drift_summary_NAME_map.png`, a map of each position's strength (a 2-D input
  much longer than wide, e.g. 96 time steps x 3 channels, with its long axis along x);
- `drift_top_features_N.png`: the top drifted features' reference and current histograms
  (shares per value for a few distinct values, else 30 common bins; a categorical input: the
  SHOWN categories whose shares differ most);
- `drift_outputs_*.png`: predicted-class shares and the confidence histogram, reference vs current;
  for another output (a regression's prediction, an embedding: each value tested), the
  histograms of its top drifted values, as the top features'.

report.json: `report` ("drift"), `schema_version` (`SCHEMA_VERSION`), `model` (spec, name,
version, path), `requests` (`files` as given, `paths`: the same files as absolute paths, links
resolved, which --out's check compares, records used, versions, skipped by reason, first and
last time, `request_log_sample`: the shares of requests the log holds, [] where it does not
record them), `outputs_from` ("log" or "model"), `method`, `result` (`DriftResult.to_json()`:
`state` "detected", "not_detected" or "too_few_rows", `rows`, `min_rows`, ...) and `figures`.
Too few rows: no tests, no pictures. Every key, its type and when it is there:
docs/monitor_reports.md (tests/test_drift.py checks a written report against it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ann import atomic, directory_kind
from ann.monitor.drift import (
    OUTPUT_VALUES_SHOWN,
    DriftResult,
    FeatureDrift,
    Reference,
    by_chance,
    by_output,
    categorical,
    category_values,
    none_moved,
    rank,
    reference_words,
    rejects,
)
from ann.monitor.features import MAX_VALUES, feature_matrix

# report.json's version (docs/monitor_reports.md), an integer under `schema_version` as `ann
# report`'s. 2: result.state and result.min_rows; result.detected and result.share are null for
# too few rows (1 had no such state: a bool from any 2 rows). 3: `schema_version` and `report`
# ("drift") replace `schema` ("ann.monitor.drift/2"); the rest is 2's. 4: `result.outputs[]`
# are tested against the model's outputs on the reference's own rows (an export's sampled
# training rows), where 3's were against its outputs on the validation split (other rows than
# the inputs' reference); `result.outputs_drifted` and `result.reference_split` added.
# 5: an output of several values is corrected as a family by Bonferroni where `correction` is
# "none" (`outputs[].drifted`, `p_adjusted`, `outputs_drifted`); `result.output_verdicts` and
# `result.reference_held_out` added.
SCHEMA_VERSION = 5
SHOWN = 20  # features in the strength chart and the table
HIST_BINS = 30
LOG_SCALE_RATIO = 50  # tallest bar / the median non-empty bar above this: a log y-axis
FEW_VALUES = 20  # at most this many distinct values: one bar per value
LONG_RATIO = 4  # a 2-D input this many times longer than wide is mapped with its long axis on x


def _describe(f: FeatureDrift) -> str:
    said = (f"{f.score:.4g}", f.p_text(), "DRIFT" if f.drifted else "ok")  # p_text "": a distance
    return f"{f.method} " + " ".join(x for x in said if x)


@dataclasses.dataclass(frozen=True)
class StrengthBar:
    """One row of the strength chart: `adjusted` (the verdict's strength: corrected where a
    correction was applied) and `raw` (the uncorrected p's; None without a correction, or for
    a test no correction touches, a distance), with each verdict."""

    label: str
    adjusted: float
    raw: float | None
    drifted: bool
    raw_drifted: bool


def strength_bars(result: DriftResult) -> list[StrengthBar]:
    """The rows of the strength chart: the SHOWN features most past their thresholds
    (`DriftResult.top`). Under a correction each corrected test also carries its uncorrected
    strength, which ranks the features whose adjusted p is 1 (strength 0)."""
    rows = []
    for f in result.top(SHOWN):
        raw = f.raw_strength if f.p_adjusted is not None else None
        raw_drifted = f.drifted if f.p_value is None else rejects(f.method, f.p_value, f.threshold)
        rows.append(
            StrengthBar(f"{f.feature} ({f.method})", f.strength, raw, f.drifted, raw_drifted)
        )
    return rows


DRIFT_COLOR, OK_COLOR = "#d62728", "#7f7f7f"


def _strength_is(features: list[FeatureDrift]) -> str:
    """What the strength of `features` is, in their methods' own words: `psi / 0.1` for PSI
    alone (it said `distance / threshold or log p / log 0.05` of PSI, which has no p),
    `log p / log 0.05` for p-value tests alone, both for a mix."""
    distances = sorted({f.method for f in features if f.p_value is None})
    thresholds = sorted({f.threshold for f in features if f.p_value is None})
    if distances:
        distance = "/".join(distances) + (
            f" / {thresholds[0]:g}" if len(thresholds) == 1 else " / its threshold"
        )
    p_thresholds = sorted({f.threshold for f in features if f.p_value is not None})
    p_said = f"log p / log {p_thresholds[0]:g}" if len(p_thresholds) == 1 else "log p / log alpha"
    if distances and p_thresholds:
        return f"{distance} or {p_said}"
    return distance if distances else p_said


def _zero_is(features: list[FeatureDrift], p: str) -> str:
    """What a strength of 0 is for `features`: `psi 0` for a distance (it said `p = 1` of PSI,
    which has no p), `p = 1` for a p-value test, both for a mix."""
    distances = sorted({f.method for f in features if f.p_value is None})
    said = [f"{'/'.join(distances)} 0"] if distances else []
    if any(f.p_value is not None for f in features):
        said.append(f"{p} = 1")
    return " or ".join(said)


def _strength_figure(result: DriftResult) -> Any:
    """Horizontal bars of `strength_bars` on a log axis. Under a correction a light bar (the
    uncorrected strength) behind a narrower solid one (the adjusted strength, the verdict's); a
    strength of 0 (p = 1, or a distance of 0) has no place on a log axis, so no bar is drawn
    for it and the row says "0" instead (the axis floor was drawn as if it were a value)."""
    import matplotlib.pyplot as plt
    from matplotlib import patches, ticker

    bars = strength_bars(result)
    corrected = result.correction != "none" and any(b.raw is not None for b in bars)
    figure, ax = plt.subplots(figsize=(7.5, 0.27 * len(bars) + 1.6), layout="constrained")
    shown = [v for b in bars for v in (b.adjusted, b.raw) if v]
    # The axis starts a decade step below the smallest bar (at most 0.5, so the threshold 1
    # has room on its left): every drawn bar has a visible length.
    floor = 10 ** math.floor(math.log10(min([0.5, *shown]) / 1.25))
    high = max([2.0, *shown]) * 1.6
    ax.set_xscale("log")
    ax.set_xlim(floor, high)
    y = np.arange(len(bars))
    color = {True: DRIFT_COLOR, False: OK_COLOR}
    if corrected:
        raw = [(i, b) for i, b in enumerate(bars) if b.raw]
        ax.barh(
            [i for i, _ in raw],
            [b.raw - floor for _, b in raw],
            height=0.8,
            left=floor,
            color=[color[b.raw_drifted] for _, b in raw],
            alpha=0.3,
            label="uncorrected",
        )
    solid = [(i, b) for i, b in enumerate(bars) if b.adjusted > 0]
    ax.barh(
        [i for i, _ in solid],
        [b.adjusted - floor for _, b in solid],
        height=0.45 if corrected else 0.8,
        left=floor,
        color=[color[b.drifted] for _, b in solid],
        label=f"{result.correction}-adjusted" if corrected else "strength",
    )
    zero = [i for i, b in enumerate(bars) if b.adjusted == 0]
    for i in zero:  # no bar: 0 is not on a log axis
        ax.text(floor * 1.08, i, "0", va="center", ha="left", fontsize=7, color="black")
    ax.set_yticks(y, [b.label for b in bars], fontsize=8)
    ax.set_ylim(len(bars) - 0.5, -0.5)
    ax.axvline(1.0, color="black", lw=1, ls="--")
    # Labelled at 1, 2 and 5 of each decade: strengths often span less than one decade, where
    # the default log axis shows only "10^0".
    # Over more than 3 decades only the decades: 1, 2, 5 of each overlapped into one smear
    # ("1e-072e-075e-07...") on a KS chart from 1e-7 to 10.
    wide = math.log10(high / floor) > 3
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    which = f"\nsolid: {result.correction}-adjusted p (the verdict's); light: uncorrected p"
    top = result.top(SHOWN)  # the rows, in order
    ax.set_xlabel(
        f"strength (>= 1: drift; {_strength_is(top)})" + (which if corrected else ""),
        fontsize=8,
    )
    # Only the kinds of bar drawn: "drifted" in red stood under a chart with no red bar.
    kinds = {b.drifted for _, b in solid}
    adjusted = f" ({result.correction}-adjusted p)" if corrected else ""
    entries = [
        (True in kinds, dict(color=DRIFT_COLOR, label=f"drifted{adjusted}")),
        (False in kinds, dict(color=OK_COLOR, label=f"not drifted{adjusted}")),
    ]
    if corrected:
        raw_kinds = {b.raw_drifted for _, b in raw}
        entries += [
            (True in raw_kinds, dict(color=DRIFT_COLOR, alpha=0.3,
                                     label="uncorrected p: past the threshold")),
            (False in raw_kinds, dict(color=OK_COLOR, alpha=0.3,
                                      label="uncorrected p: not past it")),
        ]  # fmt: skip
    handles = [patches.Patch(**style) for drawn, style in entries if drawn]
    if zero:
        p = f"{result.correction}-adjusted p" if corrected else "p"
        said = _zero_is([top[i] for i in zero], p)
        handles.append(patches.Patch(fill=False, lw=0, label=f'"0": {said} (strength 0), no bar'))
    figure.legend(handles=handles, fontsize=7, loc="outside lower center", ncols=2, frameon=False)
    drifted = sum(f.drifted for f in result.features)
    how = f", {result.correction}-corrected" if corrected else ""
    # "64 of 64 features drifted" over 20 bars: the bars are the top ones, said so.
    shown = f"\nthe top {len(bars)} by strength" if len(bars) < len(result.features) else ""
    figure.suptitle(
        f"{drifted} of {len(result.features)} features drifted{how} (share {result.share:.2f}; "
        f"dataset drift at >= 0.5: {'yes' if result.detected else 'no'}){shown}",
        fontsize=9,
    )
    return figure


def _image_maps(result: DriftResult, spec: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """name -> a map of per-position strength for each image-like input (rank 2 or 3). Under a
    correction the uncorrected strength (`raw_strength`): the adjusted p of nearly every
    unmoved position is 1, and the map of its strength 0 was blue all over, where the map is
    to show where the window differs; the verdicts are the bar chart's."""
    import matplotlib.pyplot as plt
    from matplotlib import colors, ticker

    by_name = {f.feature: f for f in result.features}
    maps = {}
    for name, entry in spec.items():
        shape = entry["shape"][1:]
        if len(shape) not in (2, 3) or int(np.prod(shape)) > MAX_VALUES:
            continue
        strength = np.array(
            [by_name[f"{name}[{','.join(map(str, i))}]"].raw_strength for i in np.ndindex(*shape)]
        ).reshape(shape)
        grid = strength.max(-1) if len(shape) == 3 else strength
        # A long 2-D input (a window of time steps x channels, e.g. forecasting's 96 x 3) was a
        # strip 3 cells wide with its ticks run together ("02 05"): its long axis runs along x,
        # cells stretched to fill the picture.
        long = grid.shape[0] > LONG_RATIO * grid.shape[1]
        if long:
            grid = grid.T
        size = (7.5, 3.2) if long else (4.5, 4)
        figure, ax = plt.subplots(figsize=size, layout="constrained")  # title beside the bar
        log_strength = np.log10(np.maximum(grid, 0.1))
        # Diverging at the threshold (strength 1, log 0): a sequential map drew a drifted
        # position near 1 as dark as one far below it when another reached 1,000 (a trial).
        norm = colors.TwoSlopeNorm(vmin=-1, vcenter=0, vmax=max(1.0, float(log_strength.max())))
        image = ax.imshow(log_strength, cmap="RdBu_r", norm=norm, aspect="auto" if long else None)
        rows, columns = "row (axis 0)", "column (axis 1)"
        if long:
            rows, columns = f"j of {name}[i,j] (axis 1)", f"i of {name}[i,j] (axis 0)"
        ax.set_xlabel(columns, fontsize=8)
        ax.set_ylabel(rows, fontsize=8)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(ticker.MaxNLocator(integer=True))
        what = "" if result.correction == "none" else f"\nbefore the {result.correction} correction"
        channels = (
            f", the largest of {shape[2]} channels" if len(shape) == 3 and shape[2] > 1 else ""
        )
        ax.set_title(f"{name}: log10 strength per position{channels}\n(red, > 0: past the "
                     f"threshold){what}", fontsize=9)  # fmt: skip
        figure.colorbar(image, ax=ax, label="log10 strength (0: the drift threshold)")
        maps[f"{name}_map"] = figure
    return maps


def _legend_below(ax: Any, *labels: str) -> None:
    """The legend under the axes, out of the bars' way: the reference's words (`train's normal
    calibration rows, held out of the loss`) took most of the width over the data."""
    ax.legend(*([list(labels)] if labels else []), fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.2), ncols=2, frameon=False)  # fmt: skip


def reference_label(split: str | None, held_out: str | None = None) -> str:
    """The reference's name in a picture's legend: `reference (validation split, held out of
    training)`, its rows (inputs, and the model's outputs on them) as `reference_words` says
    them; `reference` where they are not known."""
    words = reference_words(split, held_out)
    return f"reference ({words})" if words else "reference"


def _histogram(ax: Any, ref: np.ndarray, cur: np.ndarray, label: str = "reference") -> None:
    """Reference and current values of one feature: side-by-side bars per value for at most
    FEW_VALUES distinct values (each value a tick, up to 10 of them), else densities on shared
    bins, the reference filled and the current outlined, on a log axis where the tallest bar
    is more than LOG_SCALE_RATIO times the median non-empty one. Ticks of integer-valued
    features are integers (the pixels were ticked -2.5, 0, 2.5). `label`: the reference's in
    the legend (`reference_label`)."""
    from matplotlib.ticker import MaxNLocator

    values = np.union1d(ref, cur)
    if len(values) <= FEW_VALUES:
        width = 0.4 * (np.min(np.diff(values)) if len(values) > 1 else 1.0)
        r = np.array([np.mean(ref == v) for v in values])
        c = np.array([np.mean(cur == v) for v in values])
        ax.bar(values - width / 2, r, width, label=label)
        ax.bar(values + width / 2, c, width, label="current")
        ax.set_ylabel("share of rows")
    else:
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins=HIST_BINS)
        # The reference filled, the current as an outline over it: two filled histograms
        # blended into a third colour the legend did not name, and hid the reference's bars.
        heights = [ax.hist(ref, edges, density=True, alpha=0.5, label=label)[0]]
        heights.append(ax.hist(cur, edges, density=True, histtype="step", linewidth=1.8,
                               label="current")[0])  # fmt: skip
        shown = np.concatenate(heights)
        shown = shown[shown > 0]
        # A long tail (an anomaly score's faulty rows) is bars too low to see on a linear axis:
        # most bars far below the tallest (by one stray bar, a bell curve's went log).
        tail = len(shown) and shown.max() > LOG_SCALE_RATIO * np.median(shown)
        if tail:
            ax.set_yscale("log")
        ax.set_ylabel("density (log)" if tail else "density")
    if len(values) <= min(FEW_VALUES, 10):
        ax.set_xticks(values, [f"{v:g}" for v in values])
    elif np.all(values == np.round(values)):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _legend_below(ax)


def _category_bars(
    ax: Any,
    names: list[Any],
    ref: np.ndarray,
    cur: np.ndarray,
    unit: str = "values",
    label: str = "reference",
) -> None:
    """Reference and current shares (of `unit`) of the SHOWN categories whose shares differ
    most, each named (its token or class); `ref`, `cur`: category indices; `label`: the
    reference's in the legend."""
    size = len(names)
    r = np.bincount(np.asarray(ref, np.int64), minlength=size) / max(len(ref), 1)
    c = np.bincount(np.asarray(cur, np.int64), minlength=size) / max(len(cur), 1)
    # Most changed first, then the most common; a category neither side holds is not shown.
    order = np.lexsort((-(r + c), -np.abs(c - r)))
    shown = np.sort([i for i in order if r[i] + c[i] > 0][:SHOWN])
    x = np.arange(len(shown))
    ax.bar(x - 0.2, r[shown], 0.4, label=label)
    ax.bar(x + 0.2, c[shown], 0.4, label="current")
    labels = [str(names[i]) for i in shown]  # a space or a newline quoted: seen
    rotation = 45 if max(map(len, labels), default=0) > 3 else 0  # "<pad>" ran into "<unk>"
    ax.set_xticks(x, [repr(n) if n.isspace() else n for n in labels], fontsize=7, rotation=rotation)
    ax.set_ylabel(f"share of {unit}")
    _legend_below(ax)


def _feature_figures(
    result: DriftResult,
    reference: Reference,
    current: np.ndarray,
    inputs: Mapping[str, np.ndarray],
    top: int,
) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    index = {name: i for i, name in enumerate(reference.names)}
    label = reference_label(reference.split, reference.held_out)
    figures = {}
    for place, f in enumerate([f for f in result.top(top) if f.drifted], 1):
        figure, ax = plt.subplots(figsize=(6, 3.2))
        if f.feature in reference.categorical_spec:
            spec = reference.categorical_spec[f.feature]
            cur = category_values(inputs[f.feature], spec)
            _category_bars(ax, spec["names"], reference.categories[f.feature], cur, label=label)
            ax.set_xlabel(
                f"the {min(SHOWN, len(spec['names']))} categories whose shares differ most"
            )
        else:
            i = index[f.feature]
            _histogram(ax, reference.features[:, i], current[:, i], label)
            ax.set_xlabel("value")
        ax.set_title(f"{f.feature}: {_describe(f)}", fontsize=9)
        figures[str(place)] = figure
    return figures


def _output_figures(
    reference: Reference,
    outputs: Mapping[str, np.ndarray],
    tests: list[FeatureDrift],
    top: int = 6,
) -> dict[str, Any]:
    """Predicted-class shares and the confidence histogram, reference against current, each
    titled with its test's verdict (`tests`: `DriftResult.outputs`); any other output (a
    regression's prediction, an embedding, a forecast: each value its own test) the histograms
    of its `top` drifted values most past their thresholds, as the top features are drawn (a
    regression's drifted `output:prediction` had no picture)."""
    import matplotlib.pyplot as plt

    verdicts = {f.feature.removeprefix("output:"): f" | {_describe(f)}" for f in tests}
    label = reference_label(reference.split, reference.held_out)
    figures = {}
    for name, spec in reference.output_spec.items():
        if name not in outputs:
            continue
        ref, cur = reference.outputs[name], np.asarray(outputs[name])
        if categorical(spec):
            classes = np.arange(len(spec["names"]))
            # The values tested (`category_values`): one a row, or every position of a row (a
            # seq2seq output's tokens, whose 2-D rows np.bincount refused).
            ref, cur = (category_values(x, spec).astype(np.int64) for x in (ref, cur))
            unit = "rows" if ref.size == len(reference.outputs[name]) else "tokens"
            figure, ax = plt.subplots(figsize=(6, 3.2))
            if len(classes) > SHOWN:  # 98 next tokens' names ran into one another
                _category_bars(ax, spec["names"], ref, cur, unit, label)
                ax.set_xlabel(
                    f"predicted class: the {len(ax.get_xticks())} whose shares differ most"
                )
            else:
                ax.bar(classes - 0.2, np.bincount(ref, minlength=len(classes)) / len(ref), 0.4)
                ax.bar(classes + 0.2, np.bincount(cur, minlength=len(classes)) / len(cur), 0.4)
                # Short names (digits), or a few classes (normal, anomalous), level and legible;
                # many long ones turned so that they do not overlap.
                long = max(len(str(n)) for n in spec["names"]) > 3 and len(classes) > 4
                ax.set_xticks(classes, spec["names"], fontsize=7 if long else 9,
                              rotation=45 if long else 0)  # fmt: skip
                ax.set_xlabel("predicted class")
                ax.set_ylabel(f"share of {unit}")
                # The shares read off, however small (1% flagged); upright beside 5 or more
                # classes, where neighbouring labels ran into one another (0.113 over 0.110).
                upright = len(classes) > 4
                for bars in ax.containers:
                    ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90 if upright else 0,
                                 padding=2)  # fmt: skip
                ax.margins(y=0.2 if upright else 0.1)  # room above the tallest bar's label
                _legend_below(ax, label, "current")
            ax.set_title(f"{name}: predicted-class shares{verdicts.get(name, '')}", fontsize=9)
        elif name == "probabilities" and ref.ndim == 2:
            figure, ax = plt.subplots(figsize=(6, 3.2))
            edges = np.linspace(0, 1, 16)  # 15 bins, as the export's confidence histogram
            ax.hist(ref.max(-1), edges, density=True, alpha=0.5, label=label)  # as `_histogram`
            ax.hist(cur.max(-1), edges, density=True, histtype="step", linewidth=1.8,
                    label="current")  # fmt: skip
            ax.set_xlabel("confidence (largest probability)")
            # Log: a confident model's rows crowd the last bin, and on a linear axis the rest,
            # where a shift shows (what the KS test found), was a flat line.
            ax.set_yscale("log")
            ax.set_ylabel("density (area 1, log)")
            ax.set_title(f"{name}: confidence{verdicts.get(name, '')}", fontsize=9)
            _legend_below(ax)
        else:
            figures.update(_value_figures(name, spec, ref, cur, tests, top, label))
            continue
        figures[name] = figure
    return figures


def _value_figures(
    name: str,
    spec: Mapping[str, Any],
    ref: np.ndarray,
    cur: np.ndarray,
    tests: list[FeatureDrift],
    top: int,
    label: str = "reference",
) -> dict[str, Any]:
    """Reference and current histograms of the `top` drifted values of output `name` (tested
    one by one, `output:NAME[i]`), most past their thresholds first, titled with the verdict;
    an output of one value (an anomaly score, a regression's prediction) drawn whatever its
    verdict, as a class output's shares are (a healthy window's score had no picture); figure
    names are the tests' without `output:`; `label`: the reference's in the legend."""
    import matplotlib.pyplot as plt

    r, names = feature_matrix({name: ref}, {name: spec})
    c, _ = feature_matrix({name: cur}, {name: spec})
    column = {f"output:{n}": i for i, n in enumerate(names)}
    drawn = [f for f in tests if f.feature in column and (f.drifted or len(column) == 1)]
    drawn.sort(key=lambda f: rank(f.strength, f.p_value, f.score))
    figures = {}
    for f in drawn[:top]:
        figure, ax = plt.subplots(figsize=(6, 3.2))
        _histogram(ax, r[:, column[f.feature]], c[:, column[f.feature]], label)
        ax.set_xlabel("value")
        ax.set_title(f"{f.feature}: {_describe(f)}", fontsize=9)
        figures[f.feature.removeprefix("output:")] = figure
    return figures


def sections(
    result: DriftResult,
    reference: Reference,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    top: int,
) -> list[Any]:
    """The report's sections (`ann.report.sections.Section`): summary, top features (the
    SHOWN features that moved, `DriftResult.top(moved_only=True)`, as the printed `top:`; a
    note `none moved (...)` where none did), outputs; the summary alone, without pictures,
    for a window of too few rows to judge (not tested)."""
    from ann.report.sections import Section

    if result.state == "too_few_rows":
        summary = {
            "state": result.state,
            "verdict": result.verdict(),
            "rows": result.rows,
            "min rows": result.min_rows,
            "reference rows": result.reference_rows,
        }
        return [Section("Summary", summary)]

    current = reference.current_features(inputs)
    mmd = result.multivariate
    summary = {
        "state": result.state,
        "rows": result.rows,
        "reference rows": result.reference_rows,
        **(
            {"reference": reference_words(reference.split, reference.held_out)}
            if reference.split
            else {}
        ),
        "verdict": result.verdict(),
        "input features drifted": (
            f"{sum(f.drifted for f in result.features)} of {len(result.features)}"
        ),
        "share": result.share,
        "dataset drift (share >= 0.5)": "yes" if result.detected else "no",
        # The outputs' count is the verdict's (`beside_verdict`): a row of its own said it twice.
        **({"multivariate": _describe(mmd)} if mmd else {}),
        **{k if k.startswith("output:") else f"input {k}": v for k, v in result.tested_as.items()},
    }
    figures = {"strength": _strength_figure(result), **_image_maps(result, reference.numeric_spec)}
    # Only features that moved, as the printed `top:` (it listed features of psi 0 or KS D 0,
    # whose traffic matched the reference exactly); where none did, said so.
    moved = result.top(SHOWN, moved_only=True)
    table = {f.feature: _describe(f) for f in moved}
    notes = [none_moved(f.method for f in result.features)] if not moved else []
    if chance := by_chance(result.features):  # healthy traffic flags about 5% of them
        notes = [chance]
    figures_top = _feature_figures(result, reference, current, inputs, top)
    return [
        Section("Summary", summary, figures),
        Section("Top features", table, figures_top, notes),
        Section(
            "Outputs",
            outputs_table(result.outputs, result.output_verdicts),
            _output_figures(reference, outputs, result.outputs, top),
            [said] if (said := by_chance(result.outputs, "outputs")) else [],
        ),
    ]


def outputs_table(tests: list[FeatureDrift], verdicts: Mapping[str, bool]) -> dict[str, str]:
    """The page's Outputs table: each output test, but an output of more than
    OUTPUT_VALUES_SHOWN values led by one row (`output:reconstruction`: `12 of 256 values
    drifted, ok; the most drifted first`, its verdict from `verdicts`,
    `DriftResult.output_verdicts`) and its values ranked (`rank`): its 256 rows came in index
    order, the 12 drifted ones among them."""
    table = {}
    for output, group in by_output(tests, lambda f: f.feature).items():
        if len(group) > OUTPUT_VALUES_SHOWN:
            drifted = sum(f.drifted for f in group)
            verdict = "DRIFT" if verdicts[output] else "ok"
            table[output] = (
                f"{drifted} of {len(group)} values drifted, {verdict}; the most drifted first"
            )
            group = sorted(group, key=lambda f: rank(f.strength, f.p_value, f.score))
        table.update({f.feature: _describe(f) for f in group})
    return table


def write(
    out: str,
    report: dict[str, Any],
    parts: list[Any],
    title: str,
    header: list[str],
    kind: str = "drift",
) -> str:
    """Writes report.json, the PNGs of `parts` (named KIND_SECTION_NAME.png) and index.html
    into a new directory that then replaces `out` (an earlier report there is replaced; nothing
    half-written). `kind`: "drift", or "performance" (`ann monitor performance`). Returns the
    path of report.json."""
    from ann.report import html
    from ann.report.write import check_out, replace_directory

    # A killed one left its staging directory (.drift-*, .performance-*): the next removes it.
    with atomic.staging(out, f".{kind}-") as tmp:
        figures = html.write_figures(tmp, kind, parts)
        report["figures"] = [name for names in figures.values() for name in names]
        html.write_index(tmp, title, header, {kind: parts}, {kind: figures})
        atomic.write_text(
            os.path.join(tmp, directory_kind.REPORT_FILE), json.dumps(report, indent=1) + "\n"
        )
        os.chmod(tmp, 0o755)
        # Another report put there meanwhile (two at once): replaced if of this kind.
        replace_directory(tmp, os.path.abspath(out), lambda: check_out(out, f"{kind} report"))
    return os.path.join(out, directory_kind.REPORT_FILE)
