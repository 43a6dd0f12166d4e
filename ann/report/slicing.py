"""Which slice of a `report.slices` entry each row falls in (`assign`), and the check that
the entries can cut a data set and the bound fits the headline (`check`, which `ann train` runs
before step 0). NumPy only, and no import of the report's collection or the training code:
`ann.train.build` imports this.
`preds` here is anything with the `ann.report.predictions.Predictions` fields read: `split`,
`rows`, `experiment`, `config`."""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from absl import logging

from ann.arguments import number
from ann.config import ConfigError, KeyValueError
from ann.report import slice_spec

MAX_SLICES = 50  # a field with more distinct values is refused: bucket it into quantiles
# Experiments whose slice headline (`ann.report.task_metrics.HEADLINES`, named here) is defined
# only on rows of both classes of their label: `label` slicing is refused for them.
NEEDS_BOTH_CLASSES = {"anomaly_detection": "auroc"}


def quantile_buckets(values: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray]:
    """(bucket of each value, int [n] from 0; edges float64 [buckets + 1]): `q` bins between
    the values' quantiles (numpy's default linear interpolation), each bin [lo, hi) and the
    last [lo, hi]. Values of at most `q` distinct values get a bin each (diabetes' `sex`, 1
    or 2: its tied quantiles made one bin [1, 2], the whole split, said to be "one value on
    every row"). Otherwise tied quantiles merge their bins, and a bin no value falls in (two
    quantiles between the same two values) merges with the one below, so may be fewer than
    `q`, and none is empty (an empty slice failed the report's metrics); but where every
    quantile between the ends ties with one of them, the tied value is a bin and the rest
    another: only a constant makes one bin."""
    values = np.asarray(values, np.float64)
    distinct = np.unique(values)
    if 1 < len(distinct) <= q:  # a few values: one bin each, the last [v, v]
        return np.searchsorted(distinct, values), np.r_[distinct, distinct[-1]]
    quantiles = np.quantile(values, np.linspace(0, 1, q + 1))
    edges = np.unique(quantiles)
    if len(edges) == 1:  # one value: one bucket
        return np.zeros(len(values), np.int64), np.repeat(edges, 2)
    if len(edges) == 2:  # every inner quantile tied at one end (95% zeros): that value apart
        low, high = edges
        cut = distinct[1] if (quantiles == low).sum() > 1 else high
        edges = np.r_[low, cut, high]
    counts = np.bincount(np.searchsorted(edges[1:-1], values, "right"), minlength=len(edges) - 1)
    # An empty bin's lower edge dropped (an interpolated quantile between two values): the bin
    # below takes its range, and an upper edge at a value stays a name's bound.
    edges = np.r_[edges[:-1][np.r_[True, counts[1:] > 0]], edges[-1]]
    return np.searchsorted(edges[1:-1], values, side="right"), edges


class SliceRefused(ConfigError):
    """A `report.slices` entry the rows cannot take: `entry` (as written) and `fix`, an entry
    that cuts these rows into more than one slice in its place (None: none named); `parts`,
    every entry refused where several were (`refused_together`), else this one alone."""

    def __init__(self, message: str, entry: str, fix: str | None = None):
        super().__init__(message)
        self.entry, self.fix = entry, fix
        self.parts: list[SliceRefused] = [self]


def refused_together(
    refused: Sequence[SliceRefused], then: Callable[[list[SliceRefused]], str] | None = None
) -> SliceRefused:
    """One refusal of every entry in `refused` (each said, joined by "; also "), followed by
    `then(entries)`, what to do about all of them (a flag that replaces them all,
    `replaced_flag`: a fix for one entry that kept another bad one was refused on the next
    run); `parts`, the entries' own refusals."""
    parts = [p for r in refused for p in r.parts]
    said = "; also ".join(map(str, parts))
    if then is not None:
        said += f"; {then(parts)}"
    error = SliceRefused(said, parts[0].entry, parts[0].fix)
    error.parts = parts
    return error


def _fail(spec: slice_spec.SliceSpec, why: str, fix: str | None = None) -> SliceRefused:
    return SliceRefused(f"config key 'report.slices' entry {spec.text!r}: {why}", spec.text, fix)


def _column(preds: Any, spec: slice_spec.SliceSpec, key: str) -> np.ndarray:
    if key not in preds.rows:
        fields = ", ".join(sorted(preds.rows))
        fix = _example(preds)
        instead = f"; e.g. {fix!r}" if fix else ""
        raise _fail(
            spec, f"split {preds.split!r} has no field {key!r}; its fields: {fields}{instead}", fix
        )
    return np.asarray(preds.rows[key])


def _example(preds: Any, skip: str = "") -> str | None:
    """An entry that cuts these rows into more than one slice (`suggestion`), by the input
    first, else by the first field in name order that can, other than `skip`; None where none
    can."""
    first = getattr(preds.experiment, "input_key", None)
    for name in [first] * (first in preds.rows) + sorted(preds.rows):
        if name == skip:
            continue
        entry = suggestion(np.asarray(preds.rows[name]), name)
        if entry:
            return entry
    return None


def _label_slices(preds: Any, spec: slice_spec.SliceSpec) -> tuple[np.ndarray, list]:
    key = getattr(preds.experiment, "label_key", "")
    if not key:
        fix = _example(preds)
        raise _fail(
            spec,
            f"experiment {preds.config.experiment!r} has no class label to slice by; use "
            + (f"e.g. {fix!r}" if fix else slice_spec.FORMS.replace("'label', ", "")),
            fix,
        )
    if preds.config.experiment in NEEDS_BOTH_CLASSES:
        # Each label slice holds one class, and the headline needs both: no slice had it (an
        # empty chart, and no gap), where the slicing was accepted.
        fix = _example(preds, skip=key)
        raise _fail(
            spec,
            f"experiment {preds.config.experiment!r} scores a slice by its "
            f"{NEEDS_BOTH_CLASSES[preds.config.experiment]}, which needs rows of both classes, "
            "and each label slice holds one class; slice by a feature or a field, "
            + (f"e.g. {fix!r}" if fix else slice_spec.FORMS.replace("'label', ", "")),
            fix,
        )
    labels = _column(preds, spec, key).astype(np.int64)
    names = getattr(preds.experiment, "class_names", None) or ()
    values = np.unique(labels)
    named = [names[v] if 0 <= v < len(names) else str(v) for v in values]
    return np.searchsorted(values, labels), [f"{key}={n}" for n in named]


def suggestion(
    column: np.ndarray, name: str, quantiles: int = slice_spec.DEFAULT_QUANTILES
) -> str | None:
    """A `report.slices` entry that cuts `column` (the field `name`, rows first) into more than
    one slice, for a refusal's fix: `feature:NAME[INDEX]:quantiles=Q` for numbers, INDEX (as
    many indices as its per-row shape has) the one that cuts `column`'s rows into the most
    slices (`_cutting`: `[0,...,0]` made one slice of a digit's corner pixel, 0 on every row);
    `field:NAME` for one discrete value per row of another kind with 2 to MAX_SLICES distinct
    values; None where neither makes two slices (one value on every row, or no rows: a
    suggested `field:kind` of one value made one slice) or `name` is none an entry can give
    (`slice_spec`'s names: a letter or `_`, then word characters)."""
    if slice_spec.parse_or_none(f"field:{name}") is None:  # a name no entry can give
        return None
    shape = column.shape[1:]
    if np.issubdtype(column.dtype, np.number) and all(n > 0 for n in shape):
        at, bins = _cutting(column, quantiles)
        if bins < 2:
            return None
        index = f"[{','.join(str(int(i)) for i in np.unravel_index(at, shape))}]" if shape else ""
        return f"feature:{name}{index}:quantiles={quantiles}"
    if column.ndim == 1 and 2 <= len(np.unique(column)) <= MAX_SLICES:
        return f"field:{name}"
    return None


_BLOCK = 4096  # positions within a row `_cutting` takes at once: a big image's rows stay small


def _cutting(column: np.ndarray, quantiles: int) -> tuple[int, int]:
    """(position, bins): the position within a row (row-major, flat) of `column` (numbers, rows
    first) whose values have the most distinct `quantiles`-quantiles, the first of those, and
    how many bins those make (as `quantile_buckets` does before it merges an empty one, which
    is never the first or last: two or more bins are two or more slices); the search ends at
    one with all `quantiles` bins. (0, 1) where no position varies (a value that is NaN on
    some row never does) or there are no rows."""
    if not len(column):
        return 0, 1
    flat = column.reshape(len(column), -1)
    levels = np.linspace(0, 1, quantiles + 1)
    best, most = 0, 1
    for start in range(0, flat.shape[1], _BLOCK):
        block = flat[:, start : start + _BLOCK].astype(np.float64)
        edges = np.quantile(block, levels, axis=0)
        bins = (np.diff(edges, axis=0) > 0).sum(0)
        # As `quantile_buckets` cuts: a bin for each of at most `quantiles` distinct values, and
        # two or more wherever values differ (NaN on a row: none)
        distinct = 1 + (np.diff(np.sort(block, axis=0), axis=0) > 0).sum(0)
        bins = np.where(distinct <= quantiles, distinct, np.maximum(bins, 2))
        bins = np.where(np.isnan(block).any(0), 0, bins)
        j = int(np.argmax(bins))
        if bins[j] > most:
            best, most = start + j, int(bins[j])
        if most >= quantiles:
            break
    return best, most


def _fix(entry: str | None, name: str) -> str:
    """ "use 'ENTRY'" (`suggestion`'s `entry`), or that nothing cuts the field `name`."""
    if entry is None:
        return f"no entry can slice by {name!r} into two or more slices: slice by another field"
    return f"use {entry!r}"


def _field_slices(preds: Any, spec: slice_spec.SliceSpec) -> tuple[np.ndarray, list]:
    column = _column(preds, spec, spec.name)
    if column.ndim != 1 or np.issubdtype(column.dtype, np.floating):
        fix = suggestion(column, spec.name)
        raise _fail(
            spec,
            f"field {spec.name!r} ({column.dtype}, shape per row {column.shape[1:]}) is not one "
            f"discrete value per row; {_fix(fix, spec.name)}",
            fix,
        )
    values, ids = np.unique(column, return_inverse=True)
    if len(values) > MAX_SLICES:
        # `check` may count a sample of the rows (`check`): its count is no count of the split's.
        sample = getattr(preds, "sample", None)
        many = (
            f"more than {MAX_SLICES} distinct values in {sample}"
            if sample
            else f"{len(values)} distinct values"
        )
        fix = suggestion(column, spec.name)
        raise _fail(
            spec,
            f"field {spec.name!r} has {many} (at most {MAX_SLICES} slices); {_fix(fix, spec.name)}",
            fix,
        )
    named = [v.decode() if isinstance(v, bytes) else v for v in values.tolist()]
    return ids.reshape(-1), [f"{spec.name}={v}" for v in named]


def _feature_slices(preds: Any, spec: slice_spec.SliceSpec) -> tuple[np.ndarray, list]:
    column = _column(preds, spec, spec.name)
    shape = column.shape[1:]
    if not np.issubdtype(column.dtype, np.number):
        fix = suggestion(column, spec.name)
        raise _fail(
            spec,
            f"feature {spec.name!r} is {column.dtype}, not numbers; {_fix(fix, spec.name)}",
            fix,
        )
    outside = [(p, i, n) for p, (i, n) in enumerate(zip(spec.index, shape)) if not 0 <= i < n]
    # Out of range: the default count for too few (quantiles=1 asks for no cut), the most for
    # too many.
    q = min(spec.quantiles, slice_spec.MAX_QUANTILES)
    if q < slice_spec.MIN_QUANTILES:
        q = slice_spec.DEFAULT_QUANTILES
    whys = []
    if len(spec.index) != len(shape):
        takes = {0: "no index", 1: "1 index"}.get(len(shape), f"{len(shape)} indices")
        whys.append(
            f"feature {spec.name!r} has shape {tuple(shape)} per row, so it takes {takes} within it"
        )
    elif outside:  # as many indices as dimensions, some past its dimension's end
        whys.append(
            f"feature {spec.name!r} has shape {tuple(shape)} per row, and "
            + " and ".join(
                f"index {i} (position {p + 1}) is outside [0, {n})" for p, i, n in outside
            )
        )
    if q != spec.quantiles:
        low, high = slice_spec.MIN_QUANTILES, slice_spec.MAX_QUANTILES
        whys.append(f"quantiles={spec.quantiles} is outside {low}..{high}")
    if whys:
        # The entry mended whole (a refusal's suggestion is one the check accepts): the index
        # kept where it fits and cuts the rows into two or more slices, else the one that cuts
        # them most (`suggestion`); the count in range.
        fix = suggestion(column, spec.name, q)
        kept = (
            column[(slice(None), *spec.index)] if len(whys) == 1 and q != spec.quantiles else None
        )
        if kept is not None and len(quantile_buckets(kept, q)[1]) > 2:  # it cuts: keep it
            index = f"[{','.join(map(str, spec.index))}]" if spec.index else ""
            fix = f"feature:{spec.name}{index}:quantiles={q}"
        raise _fail(spec, ", and ".join(whys) + (f"; e.g. {fix!r}" if fix else ""), fix)
    values = column[(slice(None), *spec.index)]
    ids, edges = quantile_buckets(values, spec.quantiles)
    label = feature_label(preds, spec)
    last = len(edges) - 2
    names = [
        f"{label} q{b + 1} [{edges[b]:.4g}, {edges[b + 1]:.4g}{']' if b == last else ')'}"
        for b in range(len(edges) - 1)
    ]
    return ids, names


def feature_label(preds: Any, spec: slice_spec.SliceSpec) -> str:
    """How a `feature:` entry's slices name the value they cut: the element's name where the
    data set's builder knows it (`ann.data.offline.element_names`: breast_cancer's
    `features[0]` is `mean radius`: its slices read `mean radius q3 [13.77, 15.28)`, where
    they read `features[0] q3 ...`), else the feature and index (`image[0,2,0]`)."""
    from ann.data.offline import element_names

    data = preds.config.get("data") if hasattr(preds.config, "get") else None
    names = element_names(data.get("name"), spec.name) if data is not None else None
    if names is not None and len(spec.index) == 1 and 0 <= spec.index[0] < len(names):
        return names[spec.index[0]]
    return spec.name + (f"[{','.join(map(str, spec.index))}]" if spec.index else "")


def assign(preds: Any, spec: slice_spec.SliceSpec) -> tuple[np.ndarray, list[str]]:
    """(slice of each row, int [n] indexing `names`; names [slices]). Raises ConfigError naming
    `report.slices`, the entry and the fix when the split cannot be cut that way."""
    cut = {"label": _label_slices, "field": _field_slices, "feature": _feature_slices}[spec.kind]
    return cut(preds, spec)


CHECK_ROWS = 1_000  # rows of the train split `check` cuts (the report cuts a whole split)
# A `field:` entry's values are read on every row of the train split (the report refuses a field
# of more than MAX_SLICES values on its whole split) when that is cheap: a split held in memory,
# or one streamed from at most this many bytes on disk (ArrayRecord stores rows, so its column
# reads them all: 2.5 to 4 s for 100,000 rows of 30 MiB on a loaded 2-core machine).
COLUMN_BYTES = 64 << 20


def replaced_flag(config: Any, refused: Sequence[SliceRefused]) -> str:
    """The `--config.report.slices=...` flag that takes `config.report.slices` with each
    `refused` entry replaced by its fix (dropped without one): `"()"` when none is left."""
    fixes = {r.entry: r.fix for r in refused}
    entries = [fixes.get(e, e) for e in config.report.slices]
    kept = tuple(dict.fromkeys(e for e in entries if e))  # the fix once, if already named
    return f'--config.report.slices="{kept!r}"'


def check_experiment(config: Any) -> None:
    """Raises ConfigError when `config.report.slices` is set for an experiment without slice
    metrics (`ann.report.task_metrics.HEADLINES`: a language model's has none), or the bound
    set does not fit the direction of the experiment's headline (`check_bound`)."""
    from ann.report import task_metrics  # sklearn: only where slices or a bound are asked for

    known = task_metrics.HEADLINES.get(config.experiment)
    if config.report.slices and known is None:
        tasks = ", ".join(task_metrics.HEADLINES)
        raise ConfigError(
            f"config key 'report.slices': experiment {config.experiment!r} has no slice "
            f"metrics (those of {tasks} have); set --config.report.slices='()'"
        )
    if known is not None:
        check_bound(config, known[1], known[2])


def check_bound(config: Any, headline: str, higher: bool) -> None:
    """Raises ConfigError when `config.report` sets the bound of the other direction than
    `headline`'s: `slice_max` (an error's) for a score (`higher` is better), `slice_min` for an
    error. `ann train` checks it before step 0 (`check`), the report per headline."""
    report = config.get("report", {})
    key, other = ("slice_min", "slice_max") if higher else ("slice_max", "slice_min")
    if value := float(report.get(other, 0.0) or 0.0):
        # Its fix turns it off: "set report.slice_max instead", done, was refused again for the
        # slice_min an imported config still set (trial 47c).
        what = (
            f"config key 'report.{other}'={number(value)} bounds "
            f"{'an error' if higher else 'a score'}, but this task's headline {headline!r} is "
            f"{'a score' if higher else 'an error'}, bounded by report.{key}"
        )
        fix = f"set --config.report.{other}=0 (off), and --config.report.{key} to bound {headline}"
        raise KeyValueError(f"report.{other}", what, fix, example=0.0)


def check(config: Any, experiment: Any, split: Any) -> None:
    """Raises ConfigError (as the report would, naming the entry and the fix) when
    `config.report.slices` is set for an experiment without slice metrics, or an entry cannot
    cut `split` (an `ann.data` Split: its fields and shapes) for this experiment: `ann train`
    checks before step 0, where the report found it only once the run was trained, and a run's
    config cannot be changed there. Entries are cut on the first CHECK_ROWS rows, a `field:`
    entry's values counted on every row (`_whole_field`) unless that means reading a streamed
    split of more than COLUMN_BYTES, where a warning says that only a sample was counted. A
    bound of the wrong direction is refused with or without entries (`check_bound`)."""
    check_experiment(config)
    entries = list(config.report.slices)
    if not entries:
        return
    first = split.rows(np.arange(min(len(split), CHECK_ROWS)))
    refused = []  # every entry's, so that the flag offered runs (it kept another bad entry)
    for entry in entries:
        spec = slice_spec.parse(entry)
        rows, sample = first, None
        if len(split) > CHECK_ROWS:
            sample = f"the first {CHECK_ROWS:,} of {len(split):,} rows"
        if spec.kind == "field" and spec.name in first and sample:
            whole = _whole_field(split, spec.name)
            if whole is not None:
                rows, sample = {**first, spec.name: whole}, None
        preds = types.SimpleNamespace(
            split=split.split, rows=rows, experiment=experiment, config=config, sample=sample
        )
        try:
            assign(preds, spec)
        except SliceRefused as e:
            refused.append(e)
            continue
        if spec.kind == "field" and sample:
            logging.warning(
                "config key 'report.slices' entry %r: its distinct values were counted on %s "
                "of split %r only (it streams from disk, and reading the field on every row "
                "reads the whole split); `ann report` counts them on its whole split and "
                "refuses more than %d",
                entry,
                sample,
                split.split,
                MAX_SLICES,
            )
    if refused:  # each entry and why; and the flag that runs (a config reused on another data
        # set: "split 'train' has no field 'features'" and no fix)
        raise refused_together(refused, lambda parts: f"run with {replaced_flag(config, parts)}")


def _whole_field(split: Any, name: str) -> np.ndarray | None:
    """Field `name` on every row of `split` where that is cheap (`Split.column`): the split is
    held in memory, or streams from at most COLUMN_BYTES on disk; else None."""
    column = getattr(split, "column", None)
    if column is None:
        return None
    if getattr(split, "cached", None) is None and split.disk_bytes() > COLUMN_BYTES:
        return None
    return column(name)
