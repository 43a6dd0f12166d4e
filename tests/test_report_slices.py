"""`ann report`'s task sections (regression, forecasting, anomaly detection, retrieval, seq2seq,
language modelling) and its slices, on synthetic Predictions checked against hand computations
and scikit-learn. `ann report` end to end for each task family: tests/test_experiments.py."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
import types

import numpy as np
import pytest
import report_doc
from sklearn import metrics as skm

from ann import config as config_lib
from ann.config import ConfigError
from ann.report import (
    DECIMAL_METRICS,
    UNIT_METRICS,
    html,
    slice_spec,
    slices,
    slicing,
    task_metrics,
)
from ann.report.collect import Predictions
from ann.report.sections import sections_for


def make_preds(experiment: str, rows, outputs, exp, predict=None, **report) -> Predictions:
    config = config_lib.base()
    config.experiment = experiment
    for key, value in report.items():
        config.report[key] = value
    return Predictions("test", rows, outputs, exp, config, predict)


def rendered(section) -> None:
    """Every figure of the section draws to a PNG."""
    for figure in section.figures.values():
        figure.savefig(io.BytesIO(), format="png")


@pytest.fixture(scope="module")
def classified():
    """300 rows of 3 classes, ~80% right, with a group field and a 3-wide float feature."""
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 3, n)
    predicted = np.where(rng.random(n) < 0.8, y, rng.integers(0, 3, n))
    rows = {"label": y, "group": rng.integers(0, 5, n), "x": rng.normal(size=(n, 3))}
    exp = types.SimpleNamespace(label_key="label", class_names=["a", "b", "c"])
    return rows, {"label": predicted}, exp


# --- slices -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["label", "field:group", "feature:x[1]:quantiles=4"])
def test_slices_sum_to_the_whole(classified, spec):
    rows, outputs, exp = classified
    result = slices.slice_metrics(make_preds("classification", rows, outputs, exp), spec)
    sizes = [s["size"] for s in result["slices"]]
    assert sum(sizes) == len(rows["label"]) == result["overall"]["size"]
    weighted = sum(s["size"] * s["metrics"]["accuracy"] for s in result["slices"]) / sum(sizes)
    overall = skm.accuracy_score(rows["label"], outputs["label"])
    assert weighted == pytest.approx(overall) == result["overall"]["metrics"]["accuracy"]
    json.dumps(result)  # JSON-able as it is


def test_slice_macro_means_are_over_the_slices_classes_and_none_for_one_class(classified):
    """A macro mean averages the classes of the slice's rows (scikit-learn's default labels, as
    training logs val/f1), not every class of the model: a slice missing a class is not pulled
    towards 0 by it, and a one-class `label` slice has none (its precision is 1 by construction)."""
    rows, outputs, exp = classified
    y, predicted = rows["label"], outputs["label"]
    keep = (y != 2) & (predicted != 2)  # rows of two of the three classes, never predicted 2
    two = {k: v[keep] for k, v in rows.items()}
    result = slices.slice_metrics(
        make_preds("classification", two, {"label": predicted[keep]}, exp), "field:group"
    )
    for piece in result["slices"]:
        g = int(piece["name"].split("=")[1])
        in_g = two["group"] == g
        want = skm.precision_recall_fscore_support(
            two["label"][in_g], predicted[keep][in_g], average="macro", zero_division=0
        )
        got = piece["metrics"]
        assert [got["macro_precision"], got["macro_recall"], got["macro_f1"]] == pytest.approx(
            list(want[:3])
        )
    by_label = slices.slice_metrics(make_preds("classification", rows, outputs, exp), "label")
    for piece in by_label["slices"]:
        got = piece["metrics"]
        assert got["macro_precision"] is got["macro_recall"] is got["macro_f1"] is None
        assert got["accuracy"] is not None
    assert by_label["overall"]["metrics"]["macro_f1"] == pytest.approx(
        skm.f1_score(y, predicted, average="macro")
    )


def test_slice_gap_flags_and_quantile_buckets(classified):
    rows, outputs, exp = classified
    preds = make_preds("classification", rows, outputs, exp, slice_min=0.85)
    result = slices.slice_metrics(preds, "field:group")
    by_name = {s["name"]: s["metrics"]["accuracy"] for s in result["slices"]}
    for g in range(5):  # each group's accuracy by hand
        rows_g = rows["group"] == g
        assert by_name[f"group={g}"] == pytest.approx(
            (rows["label"][rows_g] == outputs["label"][rows_g]).mean()
        )
    best, worst = max(by_name, key=by_name.get), min(by_name, key=by_name.get)
    assert result["gap"] == {
        "best": best,
        "worst": worst,
        "value": pytest.approx(by_name[best] - by_name[worst]),
        "best_ties": 0,
        "worst_ties": 0,
    }
    assert result["flagged"] == [k for k, v in by_name.items() if v < 0.85] != []
    assert result["bound"] == {"slice_min": 0.85}
    quartiles = slices.slice_metrics(preds, "feature:x[1]:quantiles=4")["slices"]
    assert [s["size"] for s in quartiles] == [75] * 4
    assert quartiles[0]["name"].startswith("x[1] q1 [") and quartiles[-1]["name"].endswith("]")
    (section,) = slices.report_slices(
        make_preds("classification", rows, outputs, exp, slices=("field:group",), slice_min=0.85)
    )
    assert section.metrics["spec"] == "field:group"
    assert section.notes[-2].startswith("  flagged (slice_min 0.85; 95% CI in brackets): group=")
    rendered(section)
    # Each slice's value is written in a column right of the plot, where no line runs: beside
    # its point, its box covered the overall line (or the bound's) where the two met.
    figure = section.figures["by_slice"]
    figure.canvas.draw()
    (ax,) = figure.axes
    right = ax.get_window_extent().x1
    values = [t for t in ax.texts if t.get_text() != "n/a (not defined on this slice)"]
    assert len(values) == len(section.metrics["slices"])
    assert all(t.get_window_extent().x0 > right for t in values)


def test_slice_intervals_are_wilsons_by_hand():
    """ci95 is the Wilson score interval of the slice's right rows: hand values from Newcombe
    (1998, "Two-sided confidence intervals for the single proportion", Table I: 81/263 and
    1/29) and the closed form at 0 successes, [0, z^2 / (n + z^2)]."""
    groups = {0: (0, 10), 1: (81, 263), 2: (1, 29)}  # group -> (right rows, rows)
    group = np.concatenate([np.full(n, g) for g, (_, n) in groups.items()])
    right = np.concatenate([np.arange(n) < k for k, n in groups.values()])
    rows = {"label": np.zeros(len(group), int), "group": group}
    exp = types.SimpleNamespace(label_key="label", class_names=["a", "b"])
    outputs = {"label": np.where(right, 0, 1)}
    preds = make_preds("classification", rows, outputs, exp, slice_min=0.32)
    result = slices.slice_metrics(preds, "field:group")
    z2 = 1.959964**2
    want = [[0.0, z2 / (10 + z2)], [0.2553, 0.3662], [0.0061, 0.1718]]
    for entry, (lo, hi) in zip(result["slices"], want):
        assert entry["ci95"] == [pytest.approx(lo, abs=5e-5), pytest.approx(hi, abs=5e-5)]
    assert result["overall"]["ci95"] == slices.wilson_interval(82, 302)
    # Flags go by the point estimate (all three are below 0.32); only 81/263 = 0.308 has an
    # interval that reaches the bound, and the summary says so.
    assert result["flagged"] == ["group=0", "group=1", "group=2"]
    notes = slices._notes(result)
    assert notes[-2].startswith(
        "  flagged (slice_min 0.32; 95% CI in brackets): group=0 0.0000 [0.000"
    )
    assert (
        notes[-1]
        == "  the 95% CI reaches slice_min 0.32 for group=1: too few rows to tell from noise"
    )
    with pytest.raises(ValueError, match="0 <= successes <= rows"):
        slices.wilson_interval(3, 2)
    # Slices all alike have no best and worst: it said "gap 0 (best label=malignant, worst
    # label=benign)" of two slices at 1.0.
    tied = {**result, "gap": {"best": "group=1", "worst": "group=0", "value": 0.0}}
    tied["slices"] = [{**e, "metrics": {**e["metrics"], "accuracy": 1.0}} for e in result["slices"]]
    assert slices._notes(tied)[1] == "  accuracy gap 0.0000 (every slice's accuracy is 1.0000)"


def test_a_metric_is_written_alike_in_the_notes_and_the_chart():
    # A slice at accuracy 1 read "1" beside "0.9286" (chart) and "overall accuracy 1" where the
    # sections say "accuracy 1.0000"; an error in the data's units keeps 4 significant digits.
    from ann.report import metric_text

    result = {
        "spec": "field:group", "headline": "accuracy", "higher_is_better": True,
        "overall": {"size": 42, "metrics": {"accuracy": 1.0}, "ci95": None},
        "slices": [{"name": "group=0", "size": 28, "metrics": {"accuracy": 1.0}, "ci95": None},
                   {"name": "group=1", "size": 14, "metrics": {"accuracy": 13 / 14},
                    "ci95": None}],
        "gap": {"best": "group=0", "worst": "group=1", "value": 1 / 14},
        "bound": {}, "flagged": [], "notes": [],
    }  # fmt: skip
    assert slices._notes(result) == [
        "field:group: 2 slices, overall accuracy 1.0000",
        # The metric and each end's value said (a gap of what, between what?).
        "  accuracy gap 0.0714 (best group=0 at 1.0000, worst group=1 at 0.9286)",
    ]
    (ax,) = slices.slice_figure(result).axes
    assert [t.get_text() for t in ax.texts] == ["1.0000", "0.9286"]
    assert "overall 1.0000" in [t.get_label() for t in ax.get_lines()]
    assert (metric_text("rmse", 12.3456), metric_text("rmse", None)) == ("12.35", "n/a")
    # index.html's gap table wrote the gap with 4 significant digits ("0.07143") beside the
    # notes' "gap 0.0714".
    assert "<tr><td>value</td><td>0.0714</td></tr>" in html._metrics_tables(result)


def test_a_slice_at_0_or_1_is_drawn_whole():
    # Points at accuracy 0 sat on the axis' left edge, half cut off (the axis began at 0).
    result = {
        "spec": "label", "headline": "accuracy", "higher_is_better": True,
        "overall": {"size": 30, "metrics": {"accuracy": 0.5}, "ci95": [0.33, 0.67]},
        "slices": [{"name": "label=a", "size": 15, "metrics": {"accuracy": 0.0},
                    "ci95": [0.0, 0.2]},
                   {"name": "label=b", "size": 15, "metrics": {"accuracy": 1.0},
                    "ci95": [0.8, 1.0]}],
        "gap": None, "bound": {}, "flagged": [], "notes": [],
    }  # fmt: skip
    figure = slices.slice_figure(result, "test")
    figure.canvas.draw()
    (ax,) = figure.axes
    box = ax.get_window_extent()
    points = ax.collections[-1]  # the scatter, drawn last
    radius = np.sqrt(points.get_sizes()[0]) / 2 * figure.dpi / 72  # marker size: points^2
    xs = points.get_offset_transform().transform(points.get_offsets())[:, 0]
    assert xs.min() - radius > box.x0 and xs.max() + radius < box.x1
    lo, _ = ax.get_xlim()
    assert -0.1 < lo < 0  # a margin, not an axis of negative accuracies


def test_quantile_buckets_ties_and_edges():
    ids, edges = slicing.quantile_buckets(np.array([1.0, 1, 1, 1, 2, 3, 4, 5]), 4)
    # numpy's quantiles at 0, 1/4, 1/2, 3/4, 1: 1, 1, 1.5, 3.25, 5; the tied first two merge.
    assert edges.tolist() == [1, 1.5, 3.25, 5]
    assert ids.tolist() == [0, 0, 0, 0, 1, 1, 2, 2]
    # A value on an edge starts the bin above it: [lo, hi).
    ids, edges = slicing.quantile_buckets(np.arange(5.0), 4)
    assert edges.tolist() == [0, 1, 2, 3, 4] and ids.tolist() == [0, 1, 2, 3, 3]
    ids, edges = slicing.quantile_buckets(np.full(5, 7.0), 4)
    assert ids.tolist() == [0] * 5 and edges.tolist() == [7.0, 7.0]
    # A few values (diabetes' sex, 1 or 2): a bin each. The tied quantiles [1, 1, 2] made one
    # bin [1, 2] of every row, which the report called "one value on every row".
    ids, edges = slicing.quantile_buckets(np.array([1.0, 1, 1, 2, 2]), 2)
    assert ids.tolist() == [0, 0, 0, 1, 1] and edges.tolist() == [1, 2, 2]
    # Every quantile between the ends tied at one of them (95 zeros of 100): that value apart.
    ids, edges = slicing.quantile_buckets(np.r_[np.zeros(95), np.arange(1, 6.0)], 4)
    assert edges.tolist() == [0, 1, 5] and np.bincount(ids).tolist() == [95, 5]


def test_a_feature_of_two_values_slices_in_two():
    rows = {"target": np.arange(8.0), "sex": np.array([[1.0], [1], [1], [1], [1], [2], [2], [2]])}
    outputs = {"prediction": np.arange(8.0)}
    exp = types.SimpleNamespace(target_key="target")
    preds = make_preds("regression", rows, outputs, exp)
    result = slices.slice_metrics(preds, "feature:sex[0]:quantiles=2")
    assert [s["name"] for s in result["slices"]] == ["sex[0] q1 [1, 2)", "sex[0] q2 [2, 2]"]
    assert [s["size"] for s in result["slices"]] == [5, 3]
    # And a slicing entry is offered for it (it was "no entry can slice").
    assert slicing.suggestion(rows["sex"], "sex", 2) == "feature:sex[0]:quantiles=2"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("field:writer", "has no field 'writer'; its fields: group, label, x"),
        ("field:x", "is not one discrete value per row; use 'feature:x[0]:quantiles=4'"),
        ("feature:x:quantiles=4", "has shape (3,) per row, so it takes 1 index within it"),
        ("feature:group[0]", "has shape () per row, so it takes no index within it; e.g. "),
        ("feature:x[7]", "has shape (3,) per row, and index 7 (position 1) is outside [0, 3)"),
    ],
)
def test_slice_specs_the_data_cannot_take_are_one_line(classified, spec, message):
    rows, outputs, exp = classified
    with pytest.raises(ConfigError) as e:
        slices.slice_metrics(make_preds("classification", rows, outputs, exp), spec)
    text = str(e.value)
    assert "\n" not in text and f"'report.slices' entry {spec!r}" in text and message in text


def test_an_index_out_of_its_range_is_named_not_miscounted():
    # `feature:image[8,0,0]` was refused as "it takes 3 index(es) within it": 3 were given,
    # and the fault was 8, outside [0, 8).
    image = np.ones((20, 8, 8, 1)) * np.arange(20.0)[:, None, None, None]  # every pixel varies
    rows = {"label": np.arange(20) % 2, "image": image}
    exp = types.SimpleNamespace(label_key="label", class_names=["a", "b"])
    preds = make_preds("classification", rows, {"label": rows["label"]}, exp)
    said = {}
    for entry in ("feature:image[8,0,0]", "feature:image[0,8,1]", "feature:image[0,0]"):
        with pytest.raises(ConfigError) as e:
            slicing.assign(preds, slice_spec.parse(entry))
        said[entry] = str(e.value).split(" per row, ")[1]
    assert said == {
        "feature:image[8,0,0]": "and index 8 (position 1) is outside [0, 8); "
        "e.g. 'feature:image[0,0,0]:quantiles=4'",
        "feature:image[0,8,1]": "and index 8 (position 2) is outside [0, 8) and index 1 "
        "(position 3) is outside [0, 1); e.g. 'feature:image[0,0,0]:quantiles=4'",
        "feature:image[0,0]": "so it takes 3 indices within it; "
        "e.g. 'feature:image[0,0,0]:quantiles=4'",
    }


def _varied_rows(n: int = 120) -> dict[str, np.ndarray]:
    """Rows with a field of each kind a slice entry may be given: class labels, a small int
    field, a float vector, an 8x8x1 image (the digits'), ids distinct per row (ints and
    bytes), bytes of few values, bools, a bool matrix, a 0-wide vector, a constant."""
    rng = np.random.default_rng(1)
    return {
        "label": rng.integers(0, 3, n),
        "group": rng.integers(0, 5, n),
        "x": rng.normal(size=(n, 3)),
        "image": rng.integers(0, 17, (n, 8, 8, 1)).astype(np.float32),
        "row_id": np.arange(n),
        "key": np.array([f"k{i}".encode() for i in range(n)]),
        "kind": np.array([b"a", b"b"] * (n // 2)),
        "flag": np.arange(n) % 2 == 0,
        "mask": np.zeros((n, 2), bool),
        "empty": np.zeros((n, 0)),
    }


SUGGESTED = re.compile(r"(?:use|e\.g\.) '([^']+)'")


def test_every_entry_a_slice_refusal_suggests_is_accepted():
    # `field:image` suggested 'feature:image[0]:quantiles=4', which the check refused: the
    # image has shape (8, 8, 1) per row and takes 3 indices.
    rows = _varied_rows()
    exp = types.SimpleNamespace(label_key="label", class_names=["a", "b", "c"])
    preds = make_preds("classification", rows, {"label": rows["label"]}, exp)
    regression = make_preds(
        "regression", rows, {"prediction": rows["x"][:, 0]}, types.SimpleNamespace(input_key="x")
    )
    refused = [f"field:{name}" for name in rows if name not in ("label", "group", "kind", "flag")]
    refused += [f"feature:{name}[9]:quantiles=3" for name in rows] + ["feature:key", "feature:x"]
    suggested = {}
    for entry in refused:
        with pytest.raises(ConfigError) as e:
            slicing.assign(preds, slice_spec.parse(entry))
        text = str(e.value)
        assert "\n" not in text
        found = SUGGESTED.findall(text)
        assert len(found) <= 1, text
        if found:
            suggested[entry] = found[0]
        else:  # nothing cuts it, and the refusal says so
            assert "no entry can slice by" in text or "e.g." not in text, text
    with pytest.raises(ConfigError) as e:
        slicing.assign(regression, slice_spec.parse("label"))
    suggested["label (regression)"] = SUGGESTED.findall(str(e.value))[0]
    for fix in suggested.values():
        slicing.assign(preds, slice_spec.parse(fix))  # accepted: no ConfigError
    assert suggested["field:image"] == "feature:image[0,0,0]:quantiles=4"
    assert suggested["feature:image[9]:quantiles=3"] == "feature:image[0,0,0]:quantiles=3"
    assert suggested["field:row_id"] == "feature:row_id:quantiles=4"
    assert suggested["feature:kind[9]:quantiles=3"] == "field:kind"
    assert suggested["label (regression)"] == "feature:x[0]:quantiles=4"
    assert "field:key" not in suggested and "field:mask" not in suggested
    # A count out of range is refused with the data at hand, the entry mended whole: the
    # parser, without the shape, told 'feature:image:quantiles=1' "e.g.
    # 'feature:image:quantiles=4'", refused in turn for the image's missing index.
    said = {}
    for entry in (
        "feature:image:quantiles=1",
        "feature:image[0,2,0]:quantiles=50",
        "feature:image[9,9]:quantiles=0",
        "feature:image[-1,2,0]",
        "feature:group:quantiles=1",
        "feature:x[1]:quantiles=21",
    ):
        with pytest.raises(ConfigError) as e:
            slicing.assign(preds, slice_spec.parse(entry))
        (said[entry],) = SUGGESTED.findall(str(e.value))
        slicing.assign(preds, slice_spec.parse(said[entry]))  # accepted: no ConfigError
    assert said == {
        "feature:image:quantiles=1": "feature:image[0,0,0]:quantiles=4",
        "feature:image[0,2,0]:quantiles=50": "feature:image[0,2,0]:quantiles=20",
        "feature:image[9,9]:quantiles=0": "feature:image[0,0,0]:quantiles=4",
        "feature:image[-1,2,0]": "feature:image[0,0,0]:quantiles=4",
        "feature:group:quantiles=1": "feature:group:quantiles=4",
        "feature:x[1]:quantiles=21": "feature:x[1]:quantiles=20",
    }
    # The parser's own suggestions (did you mean) parse, and here cut the rows too.
    for typo in ("field: group", "Label", "labl", "Feature:x [1]", "fields:kind"):
        with pytest.raises(ValueError) as e:
            slice_spec.parse(typo)
        (mended,) = re.findall(r"did you mean '([^']+)'\?$", str(e.value))
        slicing.assign(preds, slice_spec.parse(mended))
    # An anomaly detector's refused `label` names a slicing by another field, which cuts.
    anomaly = make_preds(
        "anomaly_detection",
        rows,
        {"score": rows["x"][:, 0]},
        types.SimpleNamespace(
            label_key="label", input_key="image", class_names=["normal", "anomalous"]
        ),
    )
    with pytest.raises(ConfigError) as e:
        slicing.assign(anomaly, slice_spec.parse("label"))
    (fix,) = SUGGESTED.findall(str(e.value))
    assert fix == "feature:image[0,0,0]:quantiles=4" and e.value.fix == fix
    slicing.assign(anomaly, slice_spec.parse(fix))


def test_a_suggested_feature_index_is_one_that_cuts_the_rows():
    # `field:image` of the digits suggested 'feature:image[0,0,0]:quantiles=4', a corner pixel
    # that is 0 on every row: accepted, and one slice. The digits' [0,1,0] varies, but is 0 on
    # so many rows that its quartiles tie into one slice too.
    n = 40
    image = np.zeros((n, 8, 8, 1))
    image[0, 0, 0, 0] = 4.0  # varies: one bin (0 is every quartile but the top)
    image[:, 0, 1, 0] = np.where(np.arange(n) % 2, np.nan, np.arange(n))  # NaN quantiles
    image[:, 0, 2, 0] = np.arange(n) % 5  # the first position of 4 quartile bins
    image[:, 1, 0, 0] = np.arange(n)
    rows = {"label": np.arange(n) % 2, "image": image, "flat": np.zeros((n, 3))}
    exp = types.SimpleNamespace(label_key="label", class_names=["a", "b"])
    preds = make_preds("classification", rows, {"label": rows["label"]}, exp)
    with pytest.raises(ConfigError, match=r"use 'feature:image\[0,2,0\]:quantiles=4'$") as e:
        slicing.assign(preds, slice_spec.parse("field:image"))
    fix = SUGGESTED.findall(str(e.value))[0]
    assert len(slicing.assign(preds, slice_spec.parse(fix))[1]) == 4
    # The check (`ann train`, before step 0) suggests from the rows it reads, as the report.
    config = config_lib.base()
    config.experiment, config.report.slices = "classification", ("feature:image[8,0,0]",)
    split = type("Split", (), {"split": "train", "__len__": lambda self: n})()
    split.rows = lambda index: {k: v[index] for k, v in rows.items()}
    with pytest.raises(ConfigError) as e:
        slicing.check(config, exp, split)
    assert str(e.value).endswith(  # and the flag that takes it in the entry's place
        "e.g. 'feature:image[0,2,0]:quantiles=4'; run with "
        "--config.report.slices=\"('feature:image[0,2,0]:quantiles=4',)\""
    ), str(e.value)
    # Nothing varies: no entry is suggested (it would be one slice), and the refusal says so.
    assert slicing.suggestion(rows["flat"], "flat") is None
    assert slicing.suggestion(rows["flat"][:0], "flat") is None
    with pytest.raises(ConfigError, match=r"no entry can slice by 'flat' into two or more"):
        slicing.assign(preds, slice_spec.parse("field:flat"))


def test_a_feature_slice_is_named_in_the_data_set_s_words():
    # breast_cancer's slices read `features[0] q3 [13.77, 15.28)`; the data set names that
    # element `mean radius` (scikit-learn's feature_names).
    from sklearn.datasets import load_breast_cancer, load_diabetes

    from ann.data.offline import BUILDERS, element_names

    assert element_names("breast_cancer", "features") == tuple(load_breast_cancer().feature_names)
    assert element_names("diabetes", "features") == tuple(load_diabetes().feature_names)
    assert element_names("digits", "image") is None and element_names("nope", "x") is None
    assert {n for n, b in BUILDERS.items() if hasattr(b, "ELEMENT_NAMES")} == {
        "breast_cancer", "diabetes",
    }  # fmt: skip
    rng = np.random.default_rng(0)
    rows = {"label": rng.integers(0, 2, 80), "features": rng.normal(size=(80, 30))}
    exp = types.SimpleNamespace(label_key="label", class_names=["malignant", "benign"])
    preds = make_preds("classification", rows, {"label": rows["label"]}, exp)
    preds.config.data.name = "breast_cancer"
    result = slices.slice_metrics(preds, "feature:features[2]:quantiles=2")
    assert [s["name"].split(" [")[0] for s in result["slices"]] == [
        "mean perimeter q1", "mean perimeter q2",
    ]  # fmt: skip
    # Another data set's (or an index into more than one axis) keeps the feature and index.
    preds.config.data.name = "my_table"
    result = slices.slice_metrics(preds, "feature:features[2]:quantiles=2")
    assert result["slices"][0]["name"].startswith("features[2] q1 [")


def test_a_field_of_one_value_is_never_suggested():
    # A regression's `label` entry was told "use e.g. 'feature:x[0]:quantiles=4'" of an input
    # constant on every row, and without that input "use e.g. 'field:a_kind'" of a field of one
    # value (each accepted, and one slice: nothing to compare): `suggestion` offered a number's
    # first index where none varies, and any discrete field of at most 50 values, one included.
    n = 30
    rows = {
        "x": np.zeros((n, 2)),  # the input: constant
        "a_kind": np.array([b"same"] * n),  # first in name order: one value
        "b_flag": np.ones(n, bool),  # one value
        "c_tier": np.array([b"gold", b"tin", b"lead"] * (n // 3)),  # three values
    }
    regression = make_preds(
        "regression", rows, {"prediction": np.zeros(n)}, types.SimpleNamespace(input_key="x")
    )
    with pytest.raises(ConfigError) as e:
        slicing.assign(regression, slice_spec.parse("label"))
    assert str(e.value).endswith("use e.g. 'field:c_tier'"), str(e.value)
    assert len(slicing.assign(regression, slice_spec.parse("field:c_tier"))[1]) == 3
    fields = {k: v for k, v in rows.items() if k != "x"}
    no_input = make_preds(
        "regression", fields, {"prediction": np.zeros(n)}, types.SimpleNamespace()
    )
    with pytest.raises(ConfigError, match=r"use e\.g\. 'field:c_tier'$"):
        slicing.assign(no_input, slice_spec.parse("label"))
    for name in ("x", "a_kind", "b_flag"):
        assert slicing.suggestion(rows[name], name) is None
    assert slicing.suggestion(rows["c_tier"], "c_tier") == "field:c_tier"
    # Nothing in the rows cuts them: the accepted forms, no entry.
    alone = make_preds(
        "regression", {"x": rows["x"]}, {"prediction": np.zeros(n)}, types.SimpleNamespace()
    )
    with pytest.raises(ConfigError, match=r"use 'feature:NAME\[INDEX\]:quantiles=4' or "):
        slicing.assign(alone, slice_spec.parse("label"))


def _late_groups(n: int = 1200, late: int = 60) -> dict[str, np.ndarray]:
    """A train split's columns: `group` takes 5 values on the first 1,000 rows and `late` more
    after them; `tier` 5 values on every row."""
    group = np.arange(n) % 5
    group[1000:] = 5 + np.arange(n - 1000) % late
    return {"label": np.arange(n) % 2, "group": group, "tier": np.arange(n) % 5}


def _check_config(*entries: str) -> config_lib.ml_collections.ConfigDict:
    config = config_lib.base()
    config.experiment, config.report.slices = "classification", entries
    return config


def test_the_train_time_check_counts_a_field_on_the_whole_split():
    # A field with 5 values in the first 1,000 train rows and 60 more after them passed `ann
    # train` (the check read those 1,000 rows), and `ann report` then refused the trained run:
    # "field 'group' has 65 distinct values (at most 50 slices)". A split held in memory (every
    # shipped set) has the whole column at hand.
    from ann.data import sources

    data = _late_groups()
    split = sources.Split("late", "train", info=None, source=range(1200), cached=data)
    exp = types.SimpleNamespace(label_key="label", class_names=["a", "b"])
    with pytest.raises(ConfigError) as e:
        slicing.check(_check_config("label", "field:group"), exp, split)
    assert str(e.value) == (
        "config key 'report.slices' entry 'field:group': field 'group' has 65 distinct values "
        "(at most 50 slices); use 'feature:group:quantiles=4'; run with "
        "--config.report.slices=\"('label', 'feature:group:quantiles=4')\""
    )
    slicing.check(_check_config("field:tier"), exp, split)  # 5 values: accepted


def test_a_train_time_slice_refusal_gives_the_flag_that_runs():
    # configs/breast_cancer_mlp.py reused on a table of the user's: "entry
    # 'feature:features[0]:quantiles=4': split 'train' has no field 'features'; its fields:
    # input, label", and no fix.
    from ann.data import sources

    x = np.random.default_rng(0).normal(size=(100, 5)).astype(np.float32)
    rows = {"input": x, "label": (x[:, 0] > 0).astype(np.int64)}
    split = sources.Split("my_tab", "train", info=None, source=range(100), cached=rows)
    exp = types.SimpleNamespace(input_key="input", label_key="label", class_names=["a", "b"])
    with pytest.raises(ConfigError) as e:
        slicing.check(_check_config("label", "feature:features[0]:quantiles=4"), exp, split)
    assert str(e.value) == (
        "config key 'report.slices' entry 'feature:features[0]:quantiles=4': split 'train' has "
        "no field 'features'; its fields: input, label; e.g. 'feature:input[0]:quantiles=4'; "
        "run with --config.report.slices=\"('label', 'feature:input[0]:quantiles=4')\""
    )
    # Two bad entries: both said, and the flag replaces both (it kept the second, refused on
    # the next run; trial 46b).
    entries = ("feature:features[0]:quantiles=4", "field:sex")
    with pytest.raises(ConfigError) as e:
        slicing.check(_check_config(*entries), exp, split)
    said = str(e.value)
    assert (
        "; also config key 'report.slices' entry 'field:sex': split 'train' has no field " in said
    )
    assert said.endswith("run with --config.report.slices=\"('feature:input[0]:quantiles=4',)\""), (
        said
    )


@pytest.fixture(scope="module")
def streamed_split(tmp_path_factory):
    """`_late_groups`'s rows as an ArrayRecord data set of the user's, streamed (data.cache
    off): (the Split, its rows, the data dir)."""
    import tensorflow_datasets as tfds

    from ann.data import sources

    data = _late_groups()

    class LateGroups(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "label": tfds.features.ClassLabel(num_classes=2),
                        "group": tfds.features.Scalar(np.int64),
                        "tier": tfds.features.Scalar(np.int64),
                    }
                ),
                disable_shuffling=True,  # the first 1,000 rows are the generator's
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(1200), "test": self._generate_examples(40)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {k: v[i] for k, v in data.items()}

    data_dir = str(tmp_path_factory.mktemp("late_groups"))
    LateGroups(data_dir=data_dir, file_format="array_record").download_and_prepare()
    split = sources.load("late_groups", "train", data_dir, cache="off")
    assert split.cached is None
    return split, split.rows(np.arange(len(split))), data_dir


def test_a_streamed_field_is_read_whole_where_cheap_else_the_sample_is_said(
    streamed_split, monkeypatch, caplog
):
    split, rows, data_dir = streamed_split
    for key in ("label", "group"):
        column = split.column(key)
        assert np.array_equal(column, rows[key]) and column.dtype == rows[key].dtype
    assert np.array_equal(rows["group"], _late_groups()["group"])  # in the generator's order
    # Bytes on disk of a sum of splits (TFDS's SplitInfo says 0 for it): its parts'.
    from ann.data import sources

    test = sources.load("late_groups", "test", data_dir, "off")
    both = sources.load("late_groups", "train+test", data_dir, "off")
    assert both.disk_bytes() == split.disk_bytes() + test.disk_bytes() > split.disk_bytes() > 0
    halves = sources.load("late_groups", "train[:50%]+test", data_dir, "off")
    assert halves.disk_bytes() == split.disk_bytes() // 2 + test.disk_bytes()
    exp = types.SimpleNamespace(label_key="label", class_names=["a", "b"])
    # A few KiB on disk: the field's column is read, so the count is the split's.
    with pytest.raises(ConfigError, match=r"field 'group' has 65 distinct values \(at most 50"):
        slicing.check(_check_config("field:group"), exp, split)
    # Above COLUMN_BYTES only the first 1,000 rows are counted: the entry passes, and the log
    # says that it was counted on a sample, and that `ann report` counts the whole split.
    monkeypatch.setattr(slicing, "COLUMN_BYTES", 0)
    with caplog.at_level("WARNING"):
        slicing.check(_check_config("field:group"), exp, split)
    assert (
        "config key 'report.slices' entry 'field:group': its distinct values were counted on "
        "the first 1,000 of 1,200 rows of split 'train' only (it streams from disk, and "
        "reading the field on every row reads the whole split); `ann report` counts them on "
        "its whole split and refuses more than 50"
    ) in caplog.text


def test_a_refusal_the_check_could_not_see_is_counted_in_the_sample_s_words():
    # "field 'row_id' has 1000 distinct values (at most 50)" of a train split of 1,221 rows
    # that the check could not read whole: the count was of its first 1,000 rows.
    class Split:  # no `column`: only rows
        split = "train"

        def __init__(self, n):
            self.data = {"label": np.zeros(n, int), "row_id": np.arange(n)}

        def __len__(self):
            return len(self.data["row_id"])

        def rows(self, index):
            return {k: v[index] for k, v in self.data.items()}

    exp = types.SimpleNamespace(label_key="label", class_names=["a"])
    for n, said in (
        (1221, "has more than 50 distinct values in the first 1,000 of 1,221 rows"),
        (60, "has 60 distinct values"),
    ):
        with pytest.raises(ConfigError) as e:
            slicing.check(_check_config("field:row_id"), exp, Split(n))
        assert f"field 'row_id' {said} (at most 50 slices); use 'feature:row_id" in str(e.value)


def test_the_report_s_slice_refusal_says_how_the_trained_run_takes_the_fix():
    # `ann report` of a trained run refused "field 'group' has 65 distinct values (at most 50
    # slices); use 'feature:group:quantiles=4'": the run's config is not the user's to edit,
    # and a rerun of `ann train` may change report.* (it trains no further).
    from ann.report import collect, write

    data = _late_groups()
    exp = types.SimpleNamespace(label_key="label", class_names=["a", "b"])
    preds = make_preds("classification", data, {"label": data["label"]}, exp)
    preds.config.report.slices = ("label", "field:group", "field:tier")

    def source(kind: str) -> collect.Source:
        identity = {"kind": kind, "workdir": "/runs/a"}
        return collect.Source(identity, exp, preds.config, lambda batch: batch, 1)

    flag = "--config.report.slices=\"('label', 'feature:group:quantiles=4', 'field:tier')\""
    with pytest.raises(ConfigError) as e:
        write._slices(preds, source("workdir"))
    assert str(e.value).endswith(
        f"use 'feature:group:quantiles=4'; run its `ann train` command again with {flag} (a "
        "finished run trains no further), then `ann report --workdir=/runs/a`"
    )
    preds.config.report.slices = ("feature:group:quantiles=4", "field:group")  # named already
    with pytest.raises(ConfigError, match=r"slices=\"\('feature:group:quantiles=4',\)\" \(a"):
        write._slices(preds, source("workdir"))
    preds.config.report.slices = ("label", "field:group", "field:tier")
    with pytest.raises(ConfigError) as e:
        write._slices(preds, source("export"))
    assert str(e.value).endswith(
        "; an export keeps its run's report.slices: run the run's `ann train` command again "
        f"with {flag} (a finished run trains no further), then export it again"
    )
    # Two bad entries: both said, and the rerun's flag replaces both (it named one; review 46).
    preds.config.report.slices = ("field:group", "field:nosuch")
    with pytest.raises(ConfigError) as e:
        write._slices(preds, source("workdir"))
    said = str(e.value)
    assert "; also config key 'report.slices' entry 'field:nosuch': " in said, said
    assert "again with --config.report.slices=\"('feature:group:quantiles=4'" in said, said
    assert "nosuch'" not in said.split("again with")[1], said


def test_ties_name_the_first_and_say_how_many_more():
    # A 1-step digits run: "worst class '0' (F1 0.0000)" named the first of seven classes at
    # F1 0, the slices' "gap 1.0000 (best label=4, worst label=9)" the last of them.
    from ann.report import extreme
    from ann.report.sections import classification

    y = np.repeat(np.arange(4), 5)
    predicted = np.where(y == 3, 3, 2)  # classes 0, 1 never right; 2 and 3 always
    exp = types.SimpleNamespace(label_key="label", class_names=["p", "q", "r", "s"])
    rows = {"label": y, "image": np.zeros((20, 8, 8, 1))}
    preds = make_preds("classification", rows, {"label": predicted}, exp)
    note = classification.per_class(preds).notes[0]
    assert note.endswith("worst class 'p' (F1 0.0000) (and 1 more tied)")
    result = slices.slice_metrics(preds, "label")
    assert result["gap"] == {
        "best": "label=r", "worst": "label=p", "value": 1.0, "best_ties": 1, "worst_ties": 1
    }  # fmt: skip
    # A label's slice is its class's recall, said where the split's worst class is by F1.
    assert slices._notes(result) == [
        "label: 4 slices, overall accuracy 0.5000 (a label's accuracy: its recall)",
        "  accuracy gap 1.0000 (best label=r (and 1 more tied) at 1.0000, worst label=p (and 1 "
        "more tied) at 0.0000)",
    ]
    assert extreme([3, 1, 2, 1], lambda v: v) == (1, 1)
    assert extreme(["a", "bb", "cc"], len, lowest=False) == ("bb", 1)


def test_a_flagged_lone_slice_is_said_to_be_the_whole_split():
    # One slice (a constant feature) below slice_min was flagged as if a group were worse:
    # it is the model's headline on the whole split.
    result = {
        "bound": {"slice_min": 0.9},
        "headline": "accuracy",
        "slices": [{"name": "image[0,0,0]=0", "metrics": {"accuracy": 0.5}}],
        "flagged": ["image[0,0,0]=0"],
    }
    assert slices._flag_notes(result) == [
        "  flagged (slice_min 0.9): image[0,0,0]=0 0.5000 (the one slice: the whole split)"
    ]
    result["slices"].append({"name": "other", "metrics": {"accuracy": 1.0}})
    assert slices._flag_notes(result) == ["  flagged (slice_min 0.9): image[0,0,0]=0 0.5000"]


def test_slicings_that_collapse_say_why():
    # `feature:image[0,0,0]:quantiles=4` of a constant pixel said "1 slices, overall accuracy
    # 0.9778" and nothing more; `feature:image[3,3,0]:quantiles=20` "13 slices", not that
    # tied bins had merged; a split of fewer rows than bins made empty slices, and the
    # report's metrics failed on them (sklearn: "Found empty input array").
    n = 40
    y = np.arange(n) % 2
    image = np.zeros((n, 8, 8, 1))
    image[:, 3, 3, 0] = np.arange(n) % 3  # three values: 20 bins tie into 3, a value each
    exp = types.SimpleNamespace(label_key="label", class_names=["a", "b"])
    preds = make_preds("classification", {"label": y, "image": image}, {"label": y}, exp)
    result = slices.slice_metrics(preds, "feature:image[0,0,0]:quantiles=4")
    assert slices._notes(result) == [
        "feature:image[0,0,0]:quantiles=4: 1 slice, overall accuracy 1.0000",
        "  one slice: image[0,0,0] has one value on every row of this split; nothing to compare",
    ]
    # In report.json too: a gate there saw only "gap": null.
    assert result["gap"] is None and result["notes"] == [
        "one slice: image[0,0,0] has one value on every row of this split; nothing to compare"
    ]
    assert slices.slice_metrics(preds, "label")["notes"] == []
    one_class = make_preds("classification", {"label": y * 0}, {"label": y}, exp)
    assert slices.slice_metrics(one_class, "label")["notes"] == [
        "one slice: every row of this split is of one class; nothing to compare"
    ]
    result = slices.slice_metrics(preds, "feature:image[3,3,0]:quantiles=20")
    assert result["notes"] == [
        "17 of 20 quantile bins merged with a neighbour (tied or too few values), so 3 slices"
    ]
    # Three values, a slice each (their tied quantiles merged 1 and 2 into one, [1, 2]).
    assert [s["name"] for s in result["slices"]] == [
        "image[3,3,0] q1 [0, 1)",
        "image[3,3,0] q2 [1, 2)",
        "image[3,3,0] q3 [2, 2]",
    ]
    assert slices._notes(result)[1] == (
        "  17 of 20 quantile bins merged with a neighbour (tied or too few values), so 3 slices"
    )
    few = {"label": y[:5], "image": image[:5] + np.arange(5.0)[:, None, None, None] ** 3}
    result = slices.slice_metrics(
        make_preds("classification", few, {"label": y[:5]}, exp), "feature:image[0,0,0]:quantiles=8"
    )
    assert [s["size"] for s in result["slices"]] == [1] * 5  # none empty
    assert "3 of 8 quantile bins merged" in slices._notes(result)[1]
    ids, edges = slicing.quantile_buckets(np.array([0.0, 10.0]), 4)
    assert ids.tolist() == [0, 1] and edges.tolist() == [0, 10, 10]  # a value each


@pytest.mark.parametrize(
    "value, message",
    [
        # Said as the data's refusals say it (it was "'report.slices': entry 'x' has no kind").
        (("feture:x",), "slices' entry 'feture:x': no kind 'feture'; use 'label', 'feature:"),
        (
            ("field: writer_group",),
            "form 'label', 'feature:NAME[INDEX]:quantiles=4' or "
            "'field:NAME'; did you mean 'field:writer_group'?",
        ),
        (
            ("Label",),
            "no kind 'Label'; use 'label', 'feature:NAME[INDEX]:quantiles=4' or "
            "'field:NAME'; did you mean 'label'?",
        ),
        (
            ("feture:x [1]",),
            "no kind 'feture'; use 'label', 'feature:NAME[INDEX]:quantiles=4' "
            "or 'field:NAME'; did you mean 'feature:x[1]'?",
        ),
        (("field:",), "slices' entry 'field:': not of the form 'label', 'feature:NAME[INDEX]"),
        (("label:x",), "entry 'label:x': not of the form"),
        # Full-width: \d matched it, and int() read it as index 1 and 4 quantiles.
        (("feature:x[１]:quantiles=４",), "entry 'feature:x[１]:quantiles=４': not of the form"),
        ((3,), "holds 3 (int); every element must be a string"),
        # Reported twice, and "6 pictures" said where 5 were written (one over the other).
        (("label", "label"), "names 'label' twice; give it once"),
    ],
)
def test_bad_slice_specs_are_refused_at_validation_in_one_line(value, message):
    config = config_lib.base()
    config.model.name, config.data.name, config.total_steps = "mlp", "digits", 10
    config.report.slices = value
    with pytest.raises(ConfigError) as e:
        config_lib.validate(config, 1)
    assert "\n" not in str(e.value) and "config key 'report.slices'" in str(e.value)
    assert message in str(e.value)
    # A string where a tuple belongs (config.json, a dict): the command line refuses it already.
    with pytest.raises(ConfigError, match="is the string 'label'; give a tuple of entries"):
        config_lib.check_slices("label")


def test_bounds_go_with_the_headline_direction():
    rows = {"target": np.arange(8.0), "f": np.arange(8.0)}
    outputs = {"prediction": np.arange(8.0) + np.array([0, 0, 0, 0, 1, 1, 3, 3])}
    exp = types.SimpleNamespace(target_key="target")
    preds = make_preds("regression", rows, outputs, exp, slice_max=1.5)
    result = slices.slice_metrics(preds, "feature:f:quantiles=2")
    assert result["headline"] == "rmse" and result["higher_is_better"] is False
    # An error in the target's units is no proportion: no interval.
    assert result["overall"]["ci95"] is None and {s["ci95"] for s in result["slices"]} == {None}
    assert result["flagged"] == ["f q2 [3.5, 7]"] and result["gap"]["worst"] == "f q2 [3.5, 7]"
    with pytest.raises(ConfigError, match="report.slice_min'=0.5 bounds a score.*report.slice_max"):
        slices.slice_metrics(
            make_preds("regression", rows, outputs, exp, slice_min=0.5), "feature:f:quantiles=2"
        )
    with pytest.raises(ConfigError, match="has no class label to slice by"):
        slices.slice_metrics(make_preds("regression", rows, outputs, exp), "label")


def _two_groups() -> Predictions:
    """Binary predictions of two groups: 13 of 14 right in group 0, 81 of 263 in group 1."""
    groups = {0: (13, 14), 1: (81, 263)}  # group -> (right rows, rows)
    group = np.concatenate([np.full(n, g) for g, (_, n) in groups.items()])
    right = np.concatenate([np.arange(n) < k for k, n in groups.values()])
    rows = {"label": np.zeros(len(group), int), "group": group}
    exp = types.SimpleNamespace(label_key="label", class_names=["a", "b"])
    return make_preds("classification", rows, {"label": np.where(right, 0, 1)}, exp)


def test_a_flagged_slices_interval_is_written_like_its_metric():
    # The interval's ends had 3 decimals beside the slice's 4: "writer_group=0 0.9286 [0.685,
    # 0.987]" in the digits report.
    preds = _two_groups()
    preds.config.report.slice_min = 0.95
    notes = slices._notes(slices.slice_metrics(preds, "field:group"))
    assert notes[-2] == (
        "  flagged (slice_min 0.95; 95% CI in brackets): "
        "group=0 0.9286 [0.6853, 0.9873], group=1 0.3080 [0.2553, 0.3662]"
    )


def test_the_flagged_slices_whose_interval_reaches_the_bound_are_counted_in_words():
    # Two such slices read "the 95% CI reaches slice_min 0.95 for all 2".
    def said(*intervals: list[float]) -> str:
        names = [f"group={g}" for g in range(len(intervals))]
        result = {
            "headline": "accuracy", "bound": {"slice_min": 0.95}, "flagged": names,
            "slices": [{"name": n, "size": 20, "metrics": {"accuracy": 0.9}, "ci95": ci}
                       for n, ci in zip(names, intervals)],
        }  # fmt: skip
        return slices._flag_notes(result)[-1]

    reaches, short = [0.7, 0.97], [0.8, 0.93]
    tail = ": too few rows to tell from noise"
    assert said(reaches) == f"  the 95% CI reaches slice_min 0.95 for group=0{tail}"
    assert said(reaches, reaches) == f"  the 95% CI reaches slice_min 0.95 for both{tail}"
    assert said(reaches, reaches, reaches).endswith(f"0.95 for all 3{tail}")
    assert said(reaches, short, reaches).endswith(f"0.95 for group=0, group=2{tail}")


def test_index_html_has_a_table_of_the_slices():
    """index.html showed a slicing's names, sizes, headline and ci95 only in the collapsed "all
    values" JSON, unrounded ("0.9285714285714286"), and `higher_is_better | True` as Python's
    repr: a table per slicing now, written as the notes write them."""
    preds = _two_groups()
    preds.config.report.slice_min = 0.5
    page = html._metrics_tables(slices.slice_metrics(preds, "field:group"))
    assert (
        "<table><caption>by slice</caption><tr><th>slice</th><th>rows</th><th>accuracy</th>"
        "<th>ci95</th><th>flagged</th></tr>"
        "<tr><td>overall</td><td>277</td><td>0.3394</td><td>[0.2861, 0.3970]</td><td></td></tr>"
        "<tr><td>group=0</td><td>14</td><td>0.9286</td><td>[0.6853, 0.9873]</td>"
        "<td>false</td></tr>"
        "<tr><td>group=1</td><td>263</td><td>0.3080</td><td>[0.2553, 0.3662]</td>"
        "<td>true</td></tr></table>"
    ) in page
    assert "<tr><td>higher_is_better</td><td>true</td></tr>" in page


def test_index_html_says_a_slicing_s_notes_once(tmp_path):
    # A slicing that made one slice showed "one slice: image[0,0,0] has one value on every row
    # of this split; nothing to compare" in its notes and again in the "all values" JSON.
    n = 20
    exp = types.SimpleNamespace(label_key="label", class_names=["a", "b"])
    rows = {"label": np.arange(n) % 2, "image": np.zeros((n, 8, 8, 1))}
    preds = make_preds("classification", rows, {"label": rows["label"]}, exp)
    preds.config.report.slices = ("feature:image[0,0,0]", "label")
    collapsed, label = slices.report_slices(preds)
    note = "one slice: image[0,0,0] has one value on every row of this split; nothing to compare"
    assert collapsed.metrics["notes"] == [note]
    page = open(html.write_index(str(tmp_path), "t", [], {"test": [collapsed, label]}, {})).read()
    assert page.count(note) == 1
    assert page.count("all values") == 2
    # The table's rows, headlines and intervals not again in "all values" (trial 46b): a
    # classifier's slices have no other metric, so no slices there at all.
    assert "&quot;slices&quot;" not in page and "&quot;ci95&quot;" not in page
    assert label.metrics["notes"] == [] and page.count("&quot;notes&quot;: []") == 1  # none said


def test_all_values_keeps_only_the_slices_metrics_the_table_does_not_show():
    result = {
        "headline": "rmse",
        "overall": {"size": 3, "metrics": {"rmse": 2.0, "mae": 1.5}},
        "slices": [
            {"name": "a", "size": 1, "metrics": {"rmse": 1.0, "mae": 1.0}},
            {"name": "b", "size": 2, "metrics": {"rmse": 3.0, "mae": 2.0}},
        ],
    }
    page = html._metrics_tables(result)
    # The other metrics a table of their own, by slice; the rows, headline and interval only
    # in the "by slice" table (they were again in "all values", trial 46b).
    assert (
        "<table><caption>slices</caption><tr><th></th><th>mae</th></tr><tr><td>a</td>"
        "<td>1.000</td></tr><tr><td>b</td><td>2.000</td></tr></table>"
    ) in page
    assert "all values" not in page and page.count("<td>2.000</td>") == 2  # overall rmse, b mae


# --- sections -----------------------------------------------------------------------------


def test_regression_residuals_and_deciles():
    rng = np.random.default_rng(1)
    target = rng.gamma(3.0, 50.0, 200)
    prediction = target * 0.8 + 20 + rng.normal(0, 5, 200)
    exp = types.SimpleNamespace(target_key="target")
    preds = make_preds("regression", {"target": target}, {"prediction": prediction}, exp)
    residuals, deciles = sections_for("regression")(preds)
    assert residuals.metrics["rmse"] == pytest.approx(
        math.sqrt(skm.mean_squared_error(target, prediction))
    )
    assert residuals.metrics["r2"] == pytest.approx(skm.r2_score(target, prediction))
    table = deciles.metrics["deciles"]
    assert [t["count"] for t in table] == [20] * 10
    order = np.argsort(target)
    for t, index in zip(table, np.array_split(order, 10)):
        assert t["mae"] == pytest.approx(skm.mean_absolute_error(target[index], prediction[index]))
        assert t["bias"] == pytest.approx((target[index] - prediction[index]).mean())
    # The model shrinks towards the mean: it predicts too high at the bottom, too low at the top.
    assert table[0]["bias"] < 0 < table[-1]["bias"]
    rendered(residuals), rendered(deciles)
    # r2 had 3 decimals in the note ("r2 0.915") and 4 significant digits in index.html's table;
    # a score: 4 decimals in both, the errors in the target's units 4 significant digits.
    m = residuals.metrics
    assert residuals.notes == [
        f"rmse {m['rmse']:#.4g}, mae {m['mae']:#.4g}, r2 {m['r2']:.4f} over 200 points"
    ]
    assert residuals.notes[0].endswith(f"r2 {skm.r2_score(target, prediction):.4f} over 200 points")
    # 4 significant digits, trailing zeros kept: %.4g wrote 61.1995 as "61.2" and 107.0 as
    # "107" (diabetes: "rmse 61.2", "largest MAE 107 in decile 10 (263.6 to 346, bias +107)").
    from ann.report import metric_text, significant

    assert [metric_text("rmse", v) for v in (61.1995, 107.0, 346, 0.362)] == [
        "61.20", "107.0", "346.0", "0.3620",
    ]  # fmt: skip
    assert significant(107.0, sign=True) == "+107.0" and significant(1000.0) == "1000"
    worst = max(table, key=lambda t: t["mae"])
    assert deciles.notes == [
        f"largest MAE {worst['mae']:#.4g} in decile {worst['decile']} ({worst['low']:#.4g} to "
        f"{worst['high']:#.4g}, bias {worst['bias']:+#.4g}: predicted too "
        f"{'low' if worst['bias'] > 0 else 'high'})"
    ]
    from ann.report.sections import regression

    assert regression._direction(0.0) == "" and regression._direction(-1e-3).endswith("high")
    # The figure's legend says which way the bias points (it read "bias (mean residual)").
    legend = deciles.figures["error_by_decile"].axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        "MAE", "bias: mean of target - predicted (> 0: predicted too low)"
    ]  # fmt: skip
    assert "<td>r2</td><td>0.9000</td>" in html._metrics_tables({"r2": 0.9})


def test_regression_report_scores_the_least_squares_baseline():
    # Training logs val/baseline_rmse and rmse_ratio (diabetes: 52.20, 0.9915) and the manifest
    # keeps them; the report left them out, so it could not say whether the MLP beats a line.
    from sklearn.linear_model import LinearRegression

    from ann.metrics.baselines import least_squares
    from experiments.common import Standardizer

    rng = np.random.default_rng(3)
    weights = np.array([3.0, -2.0, 0.5])
    train_x = rng.normal(10, 4, (80, 3))
    train_y = train_x @ weights + rng.normal(0, 2, 80)
    x = rng.normal(10, 4, (1200, 3))
    target = x @ weights + rng.normal(0, 2, 1200)
    prediction = target + rng.normal(0, 3, 1200)  # worse than the line
    scale = Standardizer.per_channel(train_x)
    fitted = least_squares(scale(train_x, np.float64), train_y[:, None])
    exp = types.SimpleNamespace(
        target_key="target", input_key="features", preprocess=scale, baseline=fitted
    )
    rows = {"target": target, "features": x}
    residuals, _ = sections_for("regression")(
        make_preds("regression", rows, {"prediction": prediction}, exp)
    )
    line = LinearRegression().fit(train_x, train_y).predict(x)
    m = residuals.metrics
    assert m["baseline_rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(target, line)))
    assert m["baseline_mae"] == pytest.approx(skm.mean_absolute_error(target, line))
    assert m["rmse_ratio"] == pytest.approx(m["rmse"] / m["baseline_rmse"]) and m["rmse_ratio"] > 1
    assert residuals.notes == [
        f"rmse {m['rmse']:#.4g}, mae {m['mae']:#.4g}, r2 {m['r2']:.4f} over 1,200 points; "
        f"least-squares baseline rmse {m['baseline_rmse']:#.4g} (rmse_ratio "
        f"{m['rmse_ratio']:.4f}: the model does not beat it)"
    ]
    report = {"report": "model", "experiment": "regression",
              "splits": {"test": {"sections": {residuals.key: m}}}}  # fmt: skip
    assert report_doc.undocumented(report) == []
    # A run with task.baseline off has none: no key, no words.
    without = types.SimpleNamespace(**{**vars(exp), "baseline": None})
    (plain, _) = sections_for("regression")(
        make_preds("regression", rows, {"prediction": prediction}, without)
    )
    assert "baseline_rmse" not in plain.metrics and "baseline" not in plain.notes[0]


def test_forecasting_mae_by_horizon_against_seasonal_naive():
    # period 2, history [.., a, b]: the naive forecast is a, b, a, b...
    history = np.array([[[0.0], [1.0], [2.0], [3.0]], [[0.0], [0.0], [4.0], [6.0]]])
    future = np.array([[[2.0], [4.0], [2.0]], [[5.0], [6.0], [4.0]]])
    forecast = np.array([[[2.5], [4.0], [1.0]], [[5.0], [7.0], [4.0]]])
    exp = types.SimpleNamespace(history_key="history", future_key="future", period=2)
    rows = {"history": history, "future": future}
    (section,) = sections_for("forecasting")(
        make_preds("forecasting", rows, {"forecast": forecast}, exp)
    )
    m = section.metrics
    assert m["mae_by_horizon"] == pytest.approx([0.25, 0.5, 0.5])
    # naive: row 0 -> 2, 3, 2; row 1 -> 4, 6, 4
    assert m["naive_mae_by_horizon"] == pytest.approx([0.5, 0.5, 0.0])
    assert m["mae"] == pytest.approx(1.25 / 3) and m["naive_mae"] == pytest.approx(1.0 / 3)
    assert m["mae_ratio"] == pytest.approx(1.25)
    # The ratio had 3 decimals ("ratio 1.250") beside 4 significant digits for the errors.
    assert section.notes == [
        "mae 0.4167 vs seasonal naive 0.3333 (ratio 1.2500); better at 1 of 3 steps"
    ]
    assert "<td>mae_ratio</td><td>1.2500</td>" in html._metrics_tables({"mae_ratio": 1.25})
    rendered(section)


def test_anomaly_scores_and_roc():
    from experiments.anomaly_detection import AnomalyDetection

    exp = types.SimpleNamespace(label_key="label", class_names=AnomalyDetection.class_names)
    rows = {"label": np.array([0, 0, 1, 1])}
    preds = make_preds("anomaly_detection", rows, {"score": np.array([0.1, 0.4, 0.35, 0.8])}, exp)
    (section,) = sections_for("anomaly_detection")(preds)
    assert section.metrics["auroc"] == 0.75  # 3 of the 4 (normal, anomalous) pairs ordered
    assert section.metrics["rows"] == {"normal": 2, "anomalous": 2}
    assert set(section.figures) == {"score_histogram", "roc"}
    rendered(section)
    # Per slice of one class (a field that follows the label), AUROC is undefined: the chart
    # says n/a and keeps its size, each text inside the frame (the top one sat on it: the
    # y-axis kept matplotlib's 0..1 with no point drawn), and the notes say why the gap is null.
    rows = {**rows, "site": np.array([3, 3, 4, 4])}
    (sliced,) = slices.report_slices(
        make_preds("anomaly_detection", rows, preds.outputs, exp, slices=("field:site",))
    )
    assert [s["metrics"]["auroc"] for s in sliced.metrics["slices"]] == [None, None]
    assert sliced.metrics["gap"] is None and sliced.metrics["notes"] == [
        "no gap: auroc is defined on fewer than two slices (not on site=3, site=4: rows of one "
        "class only)"
    ]
    assert sliced.notes[1:] == ["  " + sliced.metrics["notes"][0]]  # printed once
    (axes,) = sliced.figures["by_slice"].axes
    low, high = axes.get_ylim()
    assert all(low < text.get_position()[1] < high for text in axes.texts), axes.get_ylim()
    png = io.BytesIO()
    sliced.figures["by_slice"].savefig(png, format="png", dpi=100, bbox_inches="tight")
    assert int.from_bytes(png.getvalue()[16:20], "big") < 1000  # width in pixels
    normal_only = make_preds(
        "anomaly_detection", {"label": np.zeros(3, int)}, {"score": np.ones(3)}, exp
    )
    (section,) = sections_for("anomaly_detection")(normal_only)
    assert section.metrics["auroc"] is None and "only normal rows" in section.notes[0]


def test_retrieval_recall_curve():
    # Four rows on a line: a, a near each other; b, b apart, nearest to an `a` each.
    embeddings = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, 0.3], [0.0, 1.0]])
    labels = np.array([0, 0, 1, 1])
    exp = types.SimpleNamespace(label_key="label")
    preds = make_preds("retrieval", {"label": labels}, {"embedding": embeddings}, exp)
    (section,) = sections_for("retrieval")(preds)
    # Nearest others: row 0 -> 1 (hit), 1 -> 0 (hit), 2 -> 1 (miss), 3 -> 2 (hit).
    assert section.metrics["ks"] == [1, 2, 3]
    assert section.metrics["recall_at_k"] == pytest.approx([0.75, 0.75, 1.0])
    rendered(section)
    # Slices of queries weighted by size give the whole split's recall@1.
    result = slices.slice_metrics(preds, "label")
    weighted = sum(s["size"] * s["metrics"]["recall_at_1"] for s in result["slices"]) / 4
    assert weighted == pytest.approx(0.75) == result["overall"]["metrics"]["recall_at_1"]


def test_seq2seq_exact_match_by_length():
    pad, eos = 0, 2
    target = np.array([[5, 2, 0, 0], [5, 6, 2, 0], [7, 8, 2, 0], [5, 6, 7, 2]])
    tokens = target.copy()
    tokens[2, 1] = 5  # a length-2 row wrong
    tokens[3, 3] = 0  # a length-3 row without its <eos>
    exp = types.SimpleNamespace(pad_id=pad, eos_id=eos, task_names=["t0", "t1"])
    rows = {"target": target, "task": np.array([0, 1, 1, 0])}
    (section,) = sections_for("seq2seq")(make_preds("seq2seq", rows, {"tokens": tokens}, exp))
    m = section.metrics
    assert m["by_length"] == [
        {"length": 1, "count": 1, "exact_match": 1.0},
        {"length": 2, "count": 2, "exact_match": 0.5},
        {"length": 3, "count": 1, "exact_match": 0.0},
    ]
    assert m["exact_match"] == 0.25 + 0.25 and m["by_task"] == {"t0": 0.5, "t1": 0.5}
    assert m["decoded_token_accuracy"] == pytest.approx(10 / 12)  # 12 real tokens, 2 wrong
    # By task, printed and charted (it was in report.json alone), and the lowest exact match
    # looked for per task and length: digit_strings' lengths 4 and 7 are all `add`.
    assert m["by_task_length"] == {
        "t0": [{"length": 1, "count": 1, "exact_match": 1.0},
               {"length": 3, "count": 1, "exact_match": 0.0}],
        "t1": [{"length": 2, "count": 2, "exact_match": 0.5}],
    }  # fmt: skip
    assert section.notes == [
        "exact match 0.5000, token accuracy of the greedy decoding 0.8333 (training's "
        "token_accuracy is teacher-forced); lowest 0.0000 for t0 at length 3 (1 rows)",
        "exact match by task: t0 0.5000 (2 rows), t1 0.5000 (2 rows)",
    ]
    figure = section.figures["exact_match_by_length"]
    assert [ax.get_title() for ax in figure.axes] == [
        "t0\n0.5000 of 2 rows",
        "t1\n0.5000 of 2 rows",
    ]
    assert [[t.get_text() for t in ax.get_xticklabels()] for ax in figure.axes] == [
        ["1", "3"],
        ["2"],
    ]
    title = "Exact match by target length, per task (greedy decoding, test)"
    assert figure.get_suptitle() == title
    # index.html's by_task table wrote each task's exact match as "0.5" beside "0.5000".
    assert "<tr><td>t0</td><td>0.5000</td></tr>" in html._metrics_tables(m)
    rendered(section)
    report = {"report": "model", "experiment": "seq2seq",
              "splits": {"test": {"sections": {section.key: m}}}}  # fmt: skip
    assert report_doc.undocumented(report) == []
    # Without a task field: one chart of every row, no by-task line.
    (plain,) = sections_for("seq2seq")(
        make_preds("seq2seq", {"target": target}, {"tokens": tokens}, exp)
    )
    assert "by_task_length" not in plain.metrics and len(plain.notes) == 1
    assert plain.notes[0].endswith("lowest 0.0000 at length 3 (1 rows)")
    assert len(plain.figures["exact_match_by_length"].axes) == 1


def test_language_model_bits_per_char():
    vocab = 8
    windows = np.array([[1, 2, 3, 4, 5], [3, 3, 0, 0, 0]])  # 4 + 1 predicted characters

    def predict(inputs):  # puts 1/2 on the last real token, the rest spread evenly
        x = inputs["tokens"]
        assert x.shape[1] == 5 and ((x == 0).cumsum(1) * (x != 0)).sum() == 0  # right-padded
        probs = np.full((len(x), vocab), 0.5 / (vocab - 1))
        probs[np.arange(len(x)), x[np.arange(len(x)), (x != 0).sum(1) - 1]] = 0.5
        return {"probabilities": probs}

    exp = types.SimpleNamespace(
        key="tokens",
        vocab=types.SimpleNamespace(pad_id=0),
        unigram_logp=np.full(vocab, -math.log(vocab)),
    )
    preds = make_preds("language_modelling", {"tokens": windows}, {}, exp, predict)
    (section,) = sections_for("language_modelling")(preds)
    # Only the repeated 3 is the last token again: 1 bit; the 4 others log2(14) bits each.
    expected = (4 * math.log2(14) + 1) / 5
    assert section.metrics["bits_per_char"] == pytest.approx(expected)
    assert section.metrics["unigram_bits_per_char"] == pytest.approx(3.0)
    assert section.metrics["chars"] == 5 and section.metrics["rows"] == 2
    # The chart's baseline read "(3.00)" where the note says "against 3.0000".
    assert section.notes[0].endswith(
        "against 3.0000 for the unigram baseline (5 characters of the first 2 of 2 rows: "
        "report.lm_rows, one forward pass per character; the run's eval/bits_per_char is over "
        "every row)"
    )
    # A report scoring fewer rows than the split holds says so: its bits per char differed
    # from training's val/bits_per_char (4.2334 against 4.0854) with "of 32 rows" only.
    preds = make_preds("language_modelling", {"tokens": windows}, {}, exp, predict, lm_rows=1)
    (first,) = sections_for("language_modelling")(preds)
    assert first.metrics["rows"] == 1 and first.metrics["chars"] == 4
    assert "(4 characters of the first 1 of 2 rows: report.lm_rows, " in first.notes[0]
    # Its picture too: titled "(test)" alone, it read as the split's.
    (ax,) = first.figures["bits_by_context"].axes
    assert ax.get_title() == "Bits per char by context length (test, first 1 of 2 rows)"
    (ax,) = section.figures["bits_by_context"].axes
    assert "unigram baseline (3.0000)" in [t.get_text() for t in ax.get_legend().get_texts()]
    rendered(section)
    (no_model,) = sections_for("language_modelling")(
        make_preds("language_modelling", {"tokens": windows}, {}, exp)
    )
    assert no_model.metrics["bits_per_char"] is None and "needs the model" in no_model.notes[0]


def test_the_language_model_note_names_the_split_s_own_metric():
    # The test split's note said "the run's val/bits_per_char is over every row": the run's
    # number for the test split is eval/bits_per_char (DESIGN.md's metric prefixes).
    from ann.report import metric_prefix

    exp = types.SimpleNamespace(
        key="tokens", vocab=types.SimpleNamespace(pad_id=0), unigram_logp=np.full(4, -math.log(4))
    )

    def predict(inputs):
        return {"probabilities": np.full((len(inputs["tokens"]), 4), 0.25)}

    rows = {"tokens": np.array([[1, 2, 3, 0]])}
    said = {}
    for split in ("validation", "test", "extra"):
        preds = dataclasses.replace(
            make_preds("language_modelling", rows, {}, exp, predict), split=split
        )
        (section,) = sections_for("language_modelling")(preds)
        said[split] = section.notes[0]
    assert "the run's val/bits_per_char is over every row" in said["validation"]
    assert "the run's eval/bits_per_char is over every row" in said["test"]
    assert "the run's eval_extra/bits_per_char is over every row" in said["extra"]
    assert [metric_prefix(s) for s in ("train", "validation", "test", "x")] == [
        "train/", "val/", "eval/", "eval_x/",
    ]  # fmt: skip


def test_every_task_with_sections_has_slice_metrics_but_language_modelling():
    from ann.report.sections import SECTIONS

    assert set(SECTIONS) - set(task_metrics.HEADLINES) == {"language_modelling"}


def test_every_task_metric_says_how_it_is_written(classified):
    # metric_text writes DECIMAL_METRICS with 4 decimals, anything else with 4 significant
    # digits: a task metric missing from both lists would read "1" beside "0.9286" (recall_at_5,
    # r2 and mae_ratio were missing). A new task needs its rows here.
    labels = np.array([0, 0, 1, 1])
    embeddings = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, 0.3], [0.0, 1.0]])
    target = np.array([[5, 2, 0], [5, 6, 2]])
    cases = {
        "classification": (*classified[:2], classified[2]),
        "regression": (
            {"target": np.array([1.0, 2.0, 4.0])},
            {"prediction": np.array([1.5, 2.0, 3.0])},
            types.SimpleNamespace(target_key="target"),
        ),
        "forecasting": (
            {"history": np.arange(8.0).reshape(2, 4, 1), "future": np.ones((2, 3, 1))},
            {"forecast": np.zeros((2, 3, 1))},
            types.SimpleNamespace(history_key="history", future_key="future", period=2),
        ),
        "anomaly_detection": (
            {"label": labels},
            {"score": np.array([0.1, 0.4, 0.35, 0.8])},
            types.SimpleNamespace(label_key="label"),
        ),
        "retrieval": (
            {"label": labels},
            {"embedding": embeddings},
            types.SimpleNamespace(label_key="label"),
        ),
        "seq2seq": (
            {"target": target},
            {"tokens": target},
            types.SimpleNamespace(pad_id=0, eos_id=2),
        ),
    }
    assert set(cases) == set(task_metrics.HEADLINES)
    assert not DECIMAL_METRICS & UNIT_METRICS
    for experiment, (rows, outputs, exp) in cases.items():
        fn, headline, _ = task_metrics.HEADLINES[experiment]
        preds = make_preds(experiment, rows, outputs, exp)
        names = set(fn(preds, np.arange(len(next(iter(rows.values()))))))
        assert headline in names
        assert names <= DECIMAL_METRICS | UNIT_METRICS, (experiment, names - DECIMAL_METRICS)


@pytest.mark.parametrize(
    "entry, message",
    [
        ("field:writer", "split 'train' has no field 'writer'; its fields: image, label, row_id"),
        ("feature:image[0,0]", "feature 'image' has shape (8, 8, 1) per row, so it takes 3"),
        # Said whole: the parser had told it "e.g. 'feature:image:quantiles=4'", refused next.
        (
            "feature:image:quantiles=1",
            "feature 'image' has shape (8, 8, 1) per row, so it takes 3 indices within it, and "
            "quantiles=1 is outside 2..20; e.g. 'feature:image[0,2,0]:quantiles=4'",
        ),
    ],
)
def test_slices_the_data_cannot_take_are_refused_before_training(tmp_path, entry, message):
    # `ann train` accepted them; `ann report` then refused the trained run, whose config the
    # report cannot change (only an edit of WORKDIR/config.json got a report out of it).
    from conftest import tiny

    from ann.train.loop import train_and_evaluate

    config = tiny("digits_mlp", **{"report.slices": ("label", entry)})
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(config, str(tmp_path / "run"))
    assert str(e.value).startswith(f"config key 'report.slices' entry {entry!r}: {message}")
    assert not (tmp_path / "run").exists()


def test_label_slices_of_an_anomaly_detector_are_refused_before_training(tmp_path):
    # Each label slice holds one class, and AUROC needs both: the report drew an empty chart
    # and wrote gap null with no note, where `ann train` had accepted the entry.
    from conftest import tiny

    from ann.train.loop import train_and_evaluate

    config = tiny("sensors_autoencoder", **{"report.slices": ("label",)})
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(config, str(tmp_path / "run"))
    assert str(e.value).startswith(
        "config key 'report.slices' entry 'label': experiment 'anomaly_detection' scores a "
        "slice by its auroc, which needs rows of both classes, and each label slice holds one "
        "class; slice by a feature or a field, e.g. 'feature:"
    ), str(e.value)
    assert not (tmp_path / "run").exists()


def test_a_restored_run_is_not_refused_for_its_report_slices():
    # Restoring a trained run (ann export, ann generate, ann report) checked report.slices
    # against the train split as `ann train` does: `ann export` of a run whose entry the data
    # cannot take (a run from before the check) was refused for a setting only `ann report`
    # reads, and `ann report` was refused without how the run takes another entry.
    from conftest import tiny

    from ann.train.build import build, make_experiment

    config = tiny("digits_mlp", **{"report.slices": ("field:row_id",)})
    build(config, make_experiment(config), for_training=False)  # not refused
    with pytest.raises(ConfigError, match="field 'row_id' has 1221 distinct values"):
        build(config, make_experiment(config))


def test_slices_for_an_experiment_without_slice_metrics_are_refused_before_training(tmp_path):
    # A language model trained with report.slices; `ann report` then refused the trained run.
    from conftest import tiny

    from ann.train.loop import train_and_evaluate

    config = tiny("pydoc_lm", **{"report.slices": ("feature:tokens[0]:quantiles=2",)})
    with pytest.raises(ConfigError, match="experiment 'language_modelling' has no slice metrics"):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("slices", [("label",), ()])
def test_a_bound_of_the_other_direction_is_refused_before_training(tmp_path, slices):
    # report.slice_max (an error's bound) on a classification run (headline accuracy): ann
    # train accepted it, and ann report then refused the trained run.
    from conftest import tiny

    from ann.train.loop import train_and_evaluate

    config = tiny("digits_mlp", **{"report.slices": slices, "report.slice_max": 0.2})
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(config, str(tmp_path / "run"))
    # Its fix turns it off: "set report.slice_min instead", done, was refused again for the
    # slice_max still set (trial 47c, a config importing digits_cnn's slice_min for diabetes).
    assert str(e.value) == (
        "config key 'report.slice_max'=0.2 bounds an error, but this task's headline 'accuracy' "
        "is a score, bounded by report.slice_min; set --config.report.slice_max=0 (off), and "
        "--config.report.slice_min to bound accuracy"
    )
    assert not (tmp_path / "run").exists()


def test_the_train_time_slice_check_imports_no_sklearn():
    # `ann train` checks report.slices before step 0 (the default config sets them); importing
    # sklearn for it was 1.4 s of every start (bench_startup's `data`, warm or cold).
    import os
    import subprocess
    import sys

    probe = (
        "import runpy, sys\nfrom ann.report import slicing\n"
        "slicing.check_experiment(runpy.run_path('configs/digits_cnn.py')['get_config']())\n"
        "print('sklearn' in sys.modules)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=root, timeout=120
    )
    assert proc.stdout.split() == ["False"], proc.stderr[-2000:]


def _title(section, figure):
    (ax,) = section.figures[figure].axes
    return ax.get_title()


def test_every_task_pictures_title_names_its_split():
    # The classification pictures said "(test, 360 rows)"; the LM, seq2seq, forecasting,
    # regression and retrieval ones did not say which split they drew.
    history = np.zeros((2, 4, 1))
    future = np.ones((2, 3, 1))
    exp = types.SimpleNamespace(history_key="history", future_key="future", period=2)
    rows = {"history": history, "future": future}
    (forecast,) = sections_for("forecasting")(
        make_preds("forecasting", rows, {"forecast": future}, exp)
    )
    assert _title(forecast, "mae_by_horizon") == "MAE by horizon (test)"
    target = np.array([[5, 2, 0], [5, 6, 2]])
    exp = types.SimpleNamespace(pad_id=0, eos_id=2, task_names=[])
    (seq,) = sections_for("seq2seq")(
        make_preds("seq2seq", {"target": target}, {"tokens": target}, exp)
    )
    assert "test" in _title(seq, "exact_match_by_length")

    def predict(inputs):
        return {"probabilities": np.full((len(inputs["tokens"]), 4), 0.25)}

    exp = types.SimpleNamespace(
        key="tokens", vocab=types.SimpleNamespace(pad_id=0), unigram_logp=np.full(4, -math.log(4))
    )
    lm_rows = {"tokens": np.array([[1, 2, 3, 0]])}
    (lm,) = sections_for("language_modelling")(
        make_preds("language_modelling", lm_rows, {}, exp, predict)
    )
    assert _title(lm, "bits_by_context") == "Bits per char by context length (test)"
    exp = types.SimpleNamespace(target_key="target")
    values = np.arange(20.0)
    residuals, deciles = sections_for("regression")(
        make_preds("regression", {"target": values}, {"prediction": values + 1}, exp)
    )
    assert "test" in _title(residuals, "residuals") and "test" in _title(deciles, "error_by_decile")
    exp = types.SimpleNamespace(label_key="label")
    embeddings = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    retrieval_rows = {"label": np.array([0, 0, 1, 1])}
    (recall,) = sections_for("retrieval")(
        make_preds("retrieval", retrieval_rows, {"embedding": embeddings}, exp)
    )
    assert "test" in _title(recall, "recall_at_k")


def test_the_anomaly_report_marks_the_deployed_threshold():
    # Training reports eval/threshold (the 0.99 quantile of the calibration rows' scores) and
    # the precision and recall at it; the report showed neither.
    from experiments.anomaly_detection import AnomalyDetection

    calibration = np.linspace(0.0, 1.0, 101)[:, None]  # scores = the row's value

    exp = types.SimpleNamespace(
        label_key="label",
        input_key="x",
        class_names=AnomalyDetection.class_names,
        reference=calibration,
        settings={"threshold_quantile": 0.9},
    )
    labels = np.array([0, 0, 0, 1, 1, 1])
    score = np.array([0.1, 0.5, 0.95, 0.3, 0.92, 0.99])

    def predict(inputs):
        return {"score": np.asarray(inputs["x"])[:, 0]}

    preds = make_preds("anomaly_detection", {"label": labels}, {"score": score}, exp, predict)
    (section,) = sections_for("anomaly_detection")(preds)
    deployed = section.metrics["threshold"]
    assert deployed["value"] == pytest.approx(0.9) and deployed["calibration_rows"] == 101
    flagged = score > 0.9
    assert deployed["precision"] == pytest.approx(skm.precision_score(labels, flagged))  # 2 of 3
    assert deployed["recall"] == pytest.approx(skm.recall_score(labels, flagged))  # 2 of 3
    assert deployed["flagged"] == pytest.approx(0.5)
    # In the headline (the first line), the number a deployment flags rows with: it was a
    # second line under the AUROC, and README calls it the number to deploy with.
    assert section.notes[0] == (
        "auroc 0.6667 (3 normal, 3 anomalous rows); deployed threshold 0.9000 (flag a score "
        "above it): precision 0.6667, recall 0.6667, 3 of 6 rows flagged"
    )
    assert section.notes[1] == (
        "the deployed threshold is training's eval/threshold (an export fixes the same as its "
        "own): the 0.9 quantile of 101 calibration rows' scores"
    )
    (ax,) = section.figures["score_histogram"].axes
    assert any(list(line.get_xdata()) == [0.9, 0.9] for line in ax.get_lines())
    assert "deployed threshold 0.9" in ax.get_legend().get_texts()[-1].get_text()
    assert "(test," in ax.get_title()
    rendered(section)
    # An export's: its manifest's threshold and the rows as its `flagged` output flags them
    # (the report recomputed its own threshold and flags, a float apart from the served ones).
    exp.fitted_threshold = {  # as collect.from_model sets an export's
        "value": 0.93, "quantile": 0.9, "calibration_rows": 101, "from_export": True
    }  # fmt: skip
    served = {"score": score, "flagged": np.array([0, 0, 1, 0, 0, 1], np.int32)}
    (section,) = sections_for("anomaly_detection")(
        make_preds("anomaly_detection", {"label": labels}, served, exp, predict)
    )
    assert section.metrics["threshold"]["value"] == 0.93
    assert section.metrics["threshold"]["flagged"] == pytest.approx(2 / 6)
    assert section.notes[0].endswith(
        "deployed threshold 0.9300 (flag a score above it): precision 0.5000, recall 0.3333, "
        "2 of 6 rows flagged"
    )
    assert section.notes[1].startswith(
        "the deployed threshold is the export's (its manifest's threshold, which its flagged "
        "output applies): the 0.9 quantile"
    )


def test_the_anomaly_report_gives_the_auroc_of_each_breakdown_class():
    # digits_autoencoder's run logs val/auroc_8 and val/auroc_9 (task.breakdown=digit); the
    # report printed the overall AUROC only.
    from experiments.anomaly_detection import AnomalyDetection

    exp = types.SimpleNamespace(
        label_key="label",
        class_names=AnomalyDetection.class_names,
        breakdown="digit",
        breakdown_names=[str(d) for d in range(10)],
    )
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    digit = np.array([1, 2, 3, 4, 8, 8, 9, 9, 9])
    score = np.array([0.1, 0.2, 0.5, 0.3, 0.6, 0.15, 0.9, 0.45, 0.8])
    rows = {"label": labels, "digit": digit}
    preds = make_preds("anomaly_detection", rows, {"score": score}, exp)
    preds = dataclasses.replace(preds, split="validation")
    (section,) = sections_for("anomaly_detection")(preds)
    by_class = section.metrics["by_class"]
    assert section.metrics["breakdown"] == "digit" and list(by_class) == ["8", "9"]
    assert [c["anomalous_rows"] for c in by_class.values()] == [2, 3]
    for name, d in (("8", 8), ("9", 9)):  # that digit's anomalies against every normal row
        keep = (labels == 0) | (digit == d)
        expected = skm.roc_auc_score(labels[keep], score[keep])
        assert by_class[name]["auroc"] == pytest.approx(expected)
    assert section.notes[-1] == (
        "auroc by digit (its anomalous rows against every normal row: training's "
        "val/auroc_<digit>): 8 0.6250 (2 rows), 9 0.9167 (3 rows)"
    )
    assert "<td>9</td><td>0.9167</td>" in html._metrics_tables(section.metrics)
    # The same numbers as training's eval_metrics (what logs val/auroc_<class>).
    trained = AnomalyDetection.eval_metrics(
        types.SimpleNamespace(
            settings={"threshold_quantile": 0.99}, breakdown="digit",
            breakdown_names=exp.breakdown_names,
        ),
        {"normal_error": 0.0, "normal_count": 4.0, "reference_scores": score, "batches": 1.0},
        {"score": score, "targets": labels, "group": digit},
    )  # fmt: skip
    assert trained["auroc_8"] == pytest.approx(by_class["8"]["auroc"])
    assert trained["auroc_9"] == pytest.approx(by_class["9"]["auroc"])
    report = {"report": "model", "experiment": "anomaly_detection",
              "splits": {"validation": {"sections": {section.key: section.metrics}}}}  # fmt: skip
    assert report_doc.undocumented(report) == []
    # Without a breakdown (or its field), no key and no line.
    (plain,) = sections_for("anomaly_detection")(
        make_preds("anomaly_detection", {"label": labels}, {"score": score}, exp)
    )
    assert "by_class" not in plain.metrics and len(plain.notes) == 1


def every_kind_sections(split: str, at_least: int = 0) -> dict[str, list]:
    """Experiment name -> the sections (with a slices section where the kind has slice metrics)
    of small synthetic Predictions of the `split`, for what holds of every report picture; each
    kind's rows repeated until there are `at_least` of them."""
    from experiments.anomaly_detection import AnomalyDetection

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), 60)
    labels = np.where(rng.random(60) < 0.7, probs.argmax(-1), rng.integers(0, 3, 60))
    values = np.arange(20.0)
    embeddings = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    target = np.array([[5, 2, 0], [5, 6, 2]])

    def lm_predict(inputs):
        return {"probabilities": np.full((len(inputs["tokens"]), 4), 0.25)}

    ns = types.SimpleNamespace
    kinds = {  # experiment: (rows, outputs, experiment, predict, slices)
        "classification": (
            {"label": labels, "x": rng.normal(size=(60, 8, 8))},
            {"probabilities": probs, "label": probs.argmax(-1), "logits": np.log(probs)},
            ns(label_key="label", input_key="x", class_names=["a", "b", "c"]),
            None,
            ("label",),
        ),
        "regression": (
            {"target": values},
            {"prediction": values + rng.normal(size=20)},
            ns(target_key="target"),
            None,
            ("feature:target:quantiles=2",),
        ),
        "forecasting": (
            {"history": np.zeros((2, 4, 1)), "future": np.ones((2, 3, 1))},
            {"forecast": np.full((2, 3, 1), 0.5)},
            ns(history_key="history", future_key="future", period=2),
            None,
            (),
        ),
        "anomaly_detection": (
            {"label": np.array([0, 0, 1, 1]), "site": np.array([0, 1, 0, 1])},
            {"score": np.array([0.1, 0.4, 0.35, 0.8])},
            ns(label_key="label", class_names=AnomalyDetection.class_names),
            None,
            ("field:site",),
        ),
        "retrieval": (
            {"label": np.array([0, 0, 1, 1])},
            {"embedding": embeddings},
            ns(label_key="label"),
            None,
            ("label",),
        ),
        "seq2seq": (
            {"target": target},
            {"tokens": target},
            ns(pad_id=0, eos_id=2, task_names=[]),
            None,
            (),
        ),
        "language_modelling": (
            {"tokens": np.array([[1, 2, 3, 0]])},
            {},
            ns(key="tokens", vocab=ns(pad_id=0), unigram_logp=np.full(4, -math.log(4))),
            lm_predict,
            (),
        ),
    }
    found = {}
    for kind, (rows, outputs, exp, predict, specs) in kinds.items():
        times = -(-at_least // len(next(iter(rows.values()))))
        if times > 1:
            rows, outputs = ({k: np.concatenate([v] * times) for k, v in d.items()}
                             for d in (rows, outputs))  # fmt: skip
        preds = make_preds(kind, rows, outputs, exp, predict, slices=specs)
        preds = dataclasses.replace(preds, split=split)
        found[kind] = sections_for(kind)(preds) + slices.report_slices(preds)
    return found


def test_counts_are_written_with_thousands_commas():
    # The language model's line said "of the first 32 of 1265 rows" where its picture's title
    # said "of 1,265 rows"; the anomaly report "93 of 1000 rows flagged".
    found = every_kind_sections("test", at_least=1000)
    texts = []
    for kind, sections in found.items():
        for section in sections:
            texts += [(kind, note) for note in section.notes]
            for figure in section.figures.values():
                titles = [figure.get_suptitle()] + [ax.get_title() for ax in figure.axes]
                labels = [t.get_text() for ax in figure.axes for t in ax.get_yticklabels()]
                texts += [(kind, text) for text in titles + labels]
    ungrouped = re.compile(r"(?<![\d.,e+-])\d{4,}(?![\d])")
    assert [(kind, text) for kind, text in texts if ungrouped.search(text)] == []
    assert any("1,000" in text for _, text in texts if _ == "language_modelling")
    grouped = [kind for kind, text in texts if re.search(r"\d,\d{3}", text)]
    assert set(grouped) >= {"classification", "regression", "retrieval", "language_modelling"}


@pytest.mark.parametrize("split", ["validation", "test"])
def test_every_report_picture_names_its_split(split):
    # The anomaly report's ROC was titled "ROC" beside "Score distributions (test, 289
    # normal, 71 anomalous rows)", and a slices chart "accuracy by slice: label": neither said
    # which split it drew.
    import matplotlib.pyplot as plt

    drawn = 0
    for kind, sections in every_kind_sections(split).items():
        for section in sections:
            for name, figure in section.figures.items():
                titles = [figure.get_suptitle()] + [ax.get_title() for ax in figure.axes]
                named = any(re.search(rf"\b{split}\b", t) for t in titles)
                assert named, (kind, section.title, name, titles)
                drawn += 1
                plt.close(figure)
    assert drawn == 16  # every kind drew its pictures


def test_no_report_picture_file_name_says_a_word_twice(tmp_path):
    # Seq2seq's picture was test_exact_match_by_target_length_exact_match_by_length.png (a fix
    # had taken the repeat out of test_mae_by_horizon.png alone); regression's
    # test_error_by_target_decile_error_by_decile.png, anomaly's
    # test_anomaly_scores_score_histogram.png and every slices chart's
    # test_slices_label_by_slice.png said words twice too.
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from ann.report.sections import Section

    files = []
    for kind, sections in every_kind_sections("test").items():
        (tmp_path / kind).mkdir()
        for names in html.write_figures(str(tmp_path / kind), "test", sections).values():
            for name in names:
                words = [w[:-1] if w.endswith("s") else w for w in name[:-4].split("_")]
                assert len(words) == len(set(words)), (kind, name)
                assert (tmp_path / kind / name).exists()
                files.append(name)
    assert {
        "test_exact_match_by_target_length.png",
        "test_error_by_target_decile.png",
        "test_bits_per_char_by_context.png",
        "test_anomaly_scores_histogram.png",
        "test_anomaly_scores_roc.png",
        "test_slices_label.png",
        "test_mae_by_horizon.png",
        "test_confusion_matrix_heatmap.png",
    } <= set(files)
    # Two figures that name the same picture file are kept apart, none written over another.
    figures = {name: Figure() for name in ("roc", "ROC curve", "roc_curve")}
    section = Section(title="ROC", metrics={}, figures=figures)
    written = html.write_figures(str(tmp_path), "test", [section])
    assert written == {"roc": ["test_roc.png", "test_roc_curve.png", "test_roc_roc_curve.png"]}
    plt.close("all")
