"""Drift tests (ann/monitor/drift.py): the statistics against scipy and hand values, Evidently's
choice of test, designed shifts found within a stated number of rows, few false alarms, and the
export's reference sample (checksummed; older exports without one still load)."""

import json
import math
import shutil

import numpy as np
import pytest
import report_doc
from scipy import spatial, stats

from ann import artifact, data
from ann.export import held_out_rows, reference_sample, sample_rows
from ann.monitor import drift
from ann.monitor import report as drift_report
from ann.monitor.drift import Reference
from ann.monitor.features import PROJECTED, feature_matrix, feature_names, projection

DIGITS = {"image": {"dtype": "uint8", "shape": [-1, 8, 8, 1]}}
TABLE = {"features": {"dtype": "float32", "shape": [-1, 30]}}
SEEDS = 20


def _rows(name: str, split: str, key: str) -> np.ndarray:
    source = data.load(name, split, cache=True)
    return source.rows(np.arange(len(source)))[key]


@pytest.fixture(scope="module")
def digits():
    return _rows("digits", "train", "image"), _rows("digits", "test", "image")


@pytest.fixture(scope="module")
def breast_cancer():
    return _rows("breast_cancer", "train", "features"), _rows("breast_cancer", "test", "features")


def test_each_statistic_is_scipys_or_the_hand_value():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=300), rng.normal(0.3, 1, size=200)
    d, p, threshold, drifted = drift.ks(a, b)
    assert (d, p) == pytest.approx(tuple(stats.ks_2samp(a, b)))
    assert threshold == 0.05 and drifted == (p <= 0.05)
    near = b - 0.3 + 0.16  # p = 0.044: drift at Evidently's 0.05
    assert 0.04 < drift.ks(a, near)[1] < 0.05 and drift.ks(a, near)[3]
    # Wasserstein over the reference's population std; a constant reference: over 0.001.
    score, p, threshold, drifted = drift.wasserstein(
        np.array([0.0, 1, 2, 3]), np.array([1.0, 2, 3, 4])
    )
    assert score == pytest.approx(1 / np.std([0, 1, 2, 3])) and p is None and drifted
    assert drift.wasserstein(np.zeros(10), np.full(10, 0.01))[0] == pytest.approx(10.0)
    # Two-proportion z: 30% vs 50% non-zero of 100 rows each; pooled 40%.
    ref, cur = np.repeat([0.0, 1.0], [70, 30]), np.repeat([0.0, 1.0], [50, 50])
    z, p, _, drifted = drift.z_test(ref, cur)
    assert z == pytest.approx(0.2 / math.sqrt(0.4 * 0.6 * 0.02))
    assert p == pytest.approx(0.003892, abs=1e-6) and drifted
    assert drift.z_test(np.ones(5), np.ones(7))[1:] == (1.0, 0.05, False)
    # Chi-square: expected = reference counts scaled to the current rows.
    ref, cur = np.repeat([0.0, 1, 2], [50, 30, 20]), np.repeat([0.0, 1, 2], [10, 15, 25])
    chi, p, _, _ = drift.chisquare(ref, cur)
    assert chi == pytest.approx(15**2 / 25 + 0 + 15**2 / 10)
    assert p == pytest.approx(stats.chi2.sf(chi, 2))
    # A value the reference never holds, in a table that is not sparse (brightened digits): the
    # goodness of fit's expected 0 made it inf (null in report.json); the 2 x k table's is finite.
    cur = np.repeat([0.0, 1, 2, 3], [10, 15, 15, 30])
    assert not drift.sparse(ref, cur)
    chi, p, _, drifted = drift.chisquare(ref, cur)
    want = stats.chi2_contingency([[50, 30, 20, 0], [10, 15, 15, 30]], correction=False)
    assert math.isfinite(chi) and chi == pytest.approx(want.statistic) and drifted
    assert p == pytest.approx(want.pvalue)
    # Jensen-Shannon, natural log: disjoint values are sqrt(ln 2) apart.
    assert drift.jensenshannon(np.zeros(5), np.ones(5))[0] == pytest.approx(math.sqrt(math.log(2)))
    # More than 20 distinct reference values: Sturges' bins over both samples (Evidently).
    edges = np.histogram_bin_edges(np.concatenate([a, b]), bins="sturges")
    want = spatial.distance.jensenshannon(
        np.histogram(a, edges)[0] / len(a), np.histogram(b, edges)[0] / len(b)
    )
    assert drift.jensenshannon(a, b)[0] == pytest.approx(want)
    # PSI of shares (0.5, 0.5) vs (0.25, 0.75); an empty bin is filled with 0.0001.
    want = 0.25 * math.log(2) - 0.25 * math.log(0.5 / 0.75)
    assert drift.psi(np.repeat([0.0, 1], [2, 2]), np.repeat([0.0, 1], [1, 3]))[0] == pytest.approx(
        want
    )
    filled = (1 - 0.0001) * math.log(1 / 0.0001) + (0.0001 - 1) * math.log(0.0001 / 1)
    assert drift.psi(np.zeros(4), np.ones(4))[0] == pytest.approx(filled)


@pytest.mark.parametrize(
    "reference_rows, distinct, test",
    [
        (1000, 1, "z"),
        (1000, 2, "z"),
        (1000, 3, "chisquare"),
        (1000, 5, "chisquare"),
        (1000, 6, "ks"),
        (1001, 2, "jensenshannon"),
        (1001, 5, "jensenshannon"),
        (1001, 6, "wasserstein"),
    ],
)
def test_the_default_test_is_evidentlys_by_the_smaller_sample(reference_rows, distinct, test):
    assert drift.default_test(reference_rows, distinct) == test


def test_a_sparse_table_gets_an_exact_p_value():
    """Evidently's chi-square took the reference's shares as exact: a value the reference never
    holds made it infinite, and one clean test digit of 200 with a 2 where 1,220 of 1,221
    reference digits had a 0 was "drifted" (p = 0); the z-test's normal approximation gave one
    nonzero pixel of 200 against none of 1,221 p = 0.013. Below 5 expected counts a cell
    (Cochran's rule), the p-value is exact."""
    rare = drift.test_feature("x", np.repeat([0.0, 1], [1220, 1]), np.repeat([0.0, 2], [199, 1]))
    assert rare.method == "chisquare_montecarlo" and not rare.drifted, rare
    table = [[1220, 1, 0], [199, 0, 1]]
    assert rare.score == pytest.approx(stats.chi2_contingency(table, correction=False)[0])
    assert 0.2 < rare.p_value < 0.35  # by simulation, seeded: the same on every call
    assert drift.test_feature("x", *rare_sides()).p_value == rare.p_value
    one = drift.test_feature("x", np.zeros(1221), np.repeat([0.0, 1], [199, 1]))
    assert one.method == "fisher_exact" and not one.drifted
    assert one.p_value == pytest.approx(stats.fisher_exact([[1221, 0], [199, 1]]).pvalue)
    assert one.p_value == pytest.approx(200 / 1421)  # the one nonzero row among all 1,421
    # Its odds ratio was infinite (1221 x 1 / (0 x 199)): "fisher_exact inf" as the top drift
    # of a feature that did not drift, null in report.json. Haldane-Anscombe: 0.5 a cell.
    assert one.score == pytest.approx(1221.5 * 1.5 / (0.5 * 199.5))
    assert one.to_json()["score"] == pytest.approx(one.score)
    same = drift.fisher_exact(np.repeat([0.0, 1], [100, 10]), np.repeat([0.0, 1], [50, 5]))
    assert same[0] == 1.0  # no 0 cell: the plain ratio, so unmoved stays exactly 1
    # A real change in a sparse feature is still found, exactly.
    moved = drift.test_feature("x", np.zeros(1221), np.repeat([0.0, 1], [40, 10]))
    assert moved.method == "fisher_exact" and moved.drifted and moved.p_value < 1e-10
    # Where the rule holds, Evidently's tests as they were.
    ref, cur = np.repeat([0.0, 1, 2], [50, 30, 20]), np.repeat([0.0, 1, 2], [10, 15, 25])
    assert drift.test_feature("x", ref, cur).method == "chisquare"
    assert drift.test_feature("x", ref % 2, cur % 2).method == "z"


def test_a_monte_carlo_p_at_its_floor_ranks_by_its_statistic_not_the_floor():
    # 36 of 40 rows moved off a value 97% of the reference holds: the Monte Carlo p is 1e-4,
    # its floor, which capped the strength at 3.07, below a KS test's for a mean shift of one
    # std in 40 rows (about 5): the top list put the smaller change first.
    rng = np.random.default_rng(0)
    ref = rng.choice(4, 1221, p=[0.97, 0.01, 0.01, 0.01]).astype(float)
    moved = drift.test_feature("moved", ref, rng.choice(4, 40, p=[0.1, 0.3, 0.3, 0.3]) * 1.0)
    assert moved.method == "chisquare_montecarlo" and moved.p_value == 1 / 10_000
    assert moved.asymptotic_p == pytest.approx(stats.chi2.sf(moved.score, 3))
    assert moved.p_text() == "p<=0.0001"
    shifted = drift.test_feature("shifted", rng.normal(size=1221), rng.normal(1, 1, 40))
    assert shifted.method == "ks" and 3.07 < shifted.strength < moved.strength
    assert moved.to_json()["asymptotic_p"] == moved.asymptotic_p
    # Above the floor the Monte Carlo p is the strength's, and an underflowed p says so.
    rare = drift.test_feature("x", *rare_sides())
    assert rare.asymptotic_p is None and rare.p_text() == f"p={rare.p_value:.3g}"
    assert drift.format_p(0.0) == "p<1e-300" and drift.format_p(None) == ""
    assert drift.format_p(1.48e-323) == "p<1e-300"  # a subnormal read "p=1.48e-323" beside it
    # p = 1 (two equal samples) wrote "strength": -0.0 in report.json.
    same = drift.test_feature("same", np.zeros(30), np.zeros(30))
    assert same.p_value == 1.0 and math.copysign(1.0, same.to_json()["strength"]) == 1.0


def rare_sides():
    return np.repeat([0.0, 1], [1220, 1]), np.repeat([0.0, 2], [199, 1])


def test_the_output_pictures_carry_their_verdict():
    # The class-share and confidence pictures had no verdict: a reader saw two histograms
    # while the text said DRIFT.
    from ann.monitor import report

    rng = np.random.default_rng(0)
    spec = {"x": {"dtype": "float32", "shape": [-1, 1]}}
    out_spec = {
        "label": {"dtype": "int32", "shape": [-1], "names": ["a", "b", "c"]},
        "probabilities": {"dtype": "float32", "shape": [-1, 3]},
    }
    probabilities = rng.dirichlet([5, 1, 1], 300).astype(np.float32)
    outputs = {"label": probabilities.argmax(-1), "probabilities": probabilities}
    ref = Reference({"x": rng.normal(size=(300, 1))}, outputs, spec, out_spec)
    flat = np.full((100, 3), 1 / 3, np.float32)  # every row unsure: confidence drifted
    current = {"label": np.zeros(100, np.int64), "probabilities": flat}
    result = ref.detect({"x": rng.normal(size=(100, 1))}, current)
    titles = {
        name: figure.axes[0].get_title()
        for name, figure in report._output_figures(ref, current, result.outputs).items()
    }
    assert titles["probabilities"].startswith("probabilities: confidence | ks ")
    assert titles["probabilities"].endswith(" DRIFT"), titles
    assert titles["label"].startswith("label: predicted-class shares | chisquare"), titles


def test_ten_classes_shares_are_labelled_upright_so_neighbours_do_not_overlap():
    # Level labels of 0.113 and 0.110 on neighbouring bars ran into one another (trial 46a).
    import matplotlib.pyplot as plt

    from ann.monitor import report

    rng = np.random.default_rng(0)
    spec = {"x": {"dtype": "float32", "shape": [-1, 1]}}
    for classes, rotation in ((10, 90), (2, 0)):
        out_spec = {
            "label": {"dtype": "int32", "shape": [-1], "names": list("abcdefghij")[:classes]}
        }
        ref = Reference({"x": rng.normal(size=(300, 1))}, {"label": rng.integers(0, classes, 300)},
                        spec, out_spec)  # fmt: skip
        current = {"label": rng.integers(0, classes, 100)}
        result = ref.detect({"x": rng.normal(size=(100, 1))}, current)
        (ax,) = report._output_figures(ref, current, result.outputs)["label"].axes
        labels = [t for t in ax.texts if t.get_text().startswith("0.")]
        assert len(labels) == 2 * classes, [t.get_text() for t in ax.texts]
        assert {t.get_rotation() for t in labels} == {rotation}, classes
    plt.close("all")


def _bars(figure) -> dict[int, list[tuple[float, float]]]:
    """The strength chart's bars: row -> [(right end, alpha)], a row's y its index."""
    from matplotlib.patches import Rectangle

    bars: dict[int, list[tuple[float, float]]] = {}
    for patch in figure.axes[0].patches:
        if isinstance(patch, Rectangle) and patch.get_width() > 0:
            row = round(patch.get_y() + patch.get_height() / 2)
            bars.setdefault(row, []).append((patch.get_x() + patch.get_width(), patch.get_alpha()))
    return bars


def test_the_strength_chart_shows_raw_and_adjusted_strength_and_no_bar_for_zero():
    # Under a correction most features' adjusted p is 1 (strength 0): the chart drew them all
    # as bars at the log axis's floor (0.001), as if that were a value, and showed nothing of
    # how far each feature got on its own. Now each row has its uncorrected strength (light)
    # behind the adjusted one (solid), and a strength of 0 has no bar, only a "0".
    from ann.monitor import report

    rng = np.random.default_rng(0)
    spec = {"x": {"dtype": "float32", "shape": [-1, 10]}}
    train, window = rng.normal(size=(400, 10)), rng.normal(size=(50, 10))
    train[:, 9] = window[:, 9] = 0.0  # constant on both sides: p = 1, strength 0 uncorrected too
    window[:, 0] += 1.0  # one std: drifted, corrected or not
    ref = Reference({"x": train}, {}, spec, {})
    for correction in ("bonferroni", "none"):
        result = ref.detect({"x": window}, {}, correction=correction)
        top = result.top(report.SHOWN)
        figure = report._strength_figure(result)
        bars, floor = _bars(figure), figure.axes[0].get_xlim()[0]
        zero_text = {
            round(t.get_position()[1]) for t in figure.axes[0].texts if t.get_text() == "0"
        }
        assert len(top) == 10 and top[0].feature == "x[0]" and top[0].drifted
        zero = {i for i, f in enumerate(top) if f.strength == 0}
        assert 9 in zero and (len(zero) >= 8 if correction == "bonferroni" else zero == {9})
        for i, f in enumerate(top):
            ends = sorted(bars.get(i, []))
            assert all(end > floor for end, _ in ends), (correction, f.feature, ends, floor)
            solid = [end for end, alpha in ends if alpha is None]
            assert solid == ([pytest.approx(f.strength)] if f.strength > 0 else []), ends
        for i, f in enumerate(top):
            light = [end for end, alpha in bars.get(i, []) if alpha is not None]
            raw = f.raw_strength if correction != "none" and f.raw_strength > 0 else None
            assert light == ([pytest.approx(raw)] if raw else []), (correction, f.feature, light)
        assert zero_text == zero, (correction, zero_text, zero)
        # What the chart is built from: the adjusted (verdict's) strength and the raw one.
        built = report.strength_bars(result)
        assert [b.adjusted for b in built] == [f.strength for f in top]
        if correction == "bonferroni":
            assert [b.raw for b in built] == [f.raw_strength for f in top]
            assert all(b.raw > 0 for b in built[:9]) and built[9].raw == 0
            assert all(f.raw_strength > f.strength for f in top[:9])
        else:
            assert all(b.raw is None for b in built)
            assert all(f.raw_strength == f.strength for f in top)


def test_the_position_map_shows_uncorrected_strength_under_a_correction():
    # Under a correction the map of each position's adjusted strength was 0 (blue) at every
    # unmoved position: it showed nothing of where the window differs. It maps the raw
    # strength and says so; report.json carries both strengths.
    from ann.monitor import report

    rng = np.random.default_rng(0)
    spec = {"image": {"dtype": "float32", "shape": [-1, 4, 4]}}
    train, window = rng.normal(size=(400, 4, 4)), rng.normal(size=(50, 4, 4))
    window[:, 0, 0] += 1.0
    ref = Reference({"image": train}, {}, spec, {})
    result = ref.detect({"image": window}, {}, correction="bonferroni")
    figure = report._image_maps(result, spec)["image_map"]
    shown = np.asarray(figure.axes[0].images[0].get_array())
    by_name = {f.feature: f.raw_strength for f in result.features}
    raw = np.array([[by_name[f"image[{i},{j}]"] for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(shown, np.log10(np.maximum(raw, 0.1)))
    assert "before the bonferroni correction" in figure.axes[0].get_title()
    rows = result.to_json()["features"]
    assert all(r["raw_strength"] == by_name[r["feature"]] for r in rows)
    assert any(r["strength"] == 0 < r["raw_strength"] for r in rows)


def test_a_small_window_is_judged_by_p_values_not_distances():
    """Evidently chooses by the reference's rows only: a window of 30 rows against 2,000
    reference rows got Wasserstein / Jensen-Shannon, whose thresholds ignore the window's size."""
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(size=2000), rng.normal(size=30)
    assert drift.test_feature("x", ref, cur).method == "ks"
    assert drift.test_feature("x", ref, rng.normal(size=1001)).method == "wasserstein"
    assert drift.test_feature("x", cur, ref).method == "ks"  # a small reference, as before
    classes = rng.integers(0, 10, 2000).astype(float)
    # 30 rows over 10 classes: about 3 expected a class, so the chi-square's p is simulated.
    small = drift.test_feature("c", classes, classes[:30], categorical=True)
    assert small.method == "chisquare_montecarlo"
    assert drift.test_feature("c", classes, classes[:200], categorical=True).method == "chisquare"
    assert drift.test_feature("c", classes, classes[:1001], categorical=True).method == (
        "jensenshannon"
    )
    assert drift.test_feature("c", classes % 2, classes[:30] % 2, categorical=True).method == "z"
    assert drift.default_test(1001, 10, categorical=True) == "jensenshannon"
    assert drift.default_test(1000, 10, categorical=True) == "chisquare"
    # Predicted classes of unshifted traffic: Jensen-Shannon flagged 47 of 50 windows of 50 rows.
    spec = {"x": {"dtype": "float32", "shape": [-1, 1]}}
    labels = {"label": {"dtype": "int32", "shape": [-1], "names": [str(i) for i in range(10)]}}
    reference = Reference({"x": ref[:, None]}, {"label": classes}, spec, labels)
    alarms = 0
    for seed in range(SEEDS):
        window = _window(np.arange(2000), 50, seed)
        result = reference.detect({"x": ref[window, None]}, {"label": classes[window]})
        alarms += result.outputs[0].drifted
    assert result.outputs[0].method.startswith("chisquare") and alarms <= SEEDS // 10, alarms


def test_a_distance_method_on_a_small_sample_is_warned_about():
    # --method=psi on 200 unshifted digits flagged 28 of 64 pixels, and said nothing of why.
    from ann.monitor.__main__ import small_sample_warning

    said = small_sample_warning("psi", 200, 1221)
    assert said.startswith("--method=psi judges a distance against a fixed bound, which sampling")
    assert "(200 rows against 1221;" in said and said.endswith("(p-value tests at this size)")
    assert small_sample_warning("jensenshannon", 5000, 800) is not None  # a small reference
    assert small_sample_warning("psi", 1001, 1001) is None
    assert (
        small_sample_warning("auto", 200, 1221) is None
        and small_sample_warning("ks", 20, 20) is None
    )


def test_dataset_drift_at_half_the_features_and_features_named_by_position():
    rng = np.random.default_rng(0)
    spec = {"x": {"dtype": "float32", "shape": [-1, 2]}}
    train = rng.normal(size=(500, 2))
    ref = Reference({"x": train}, {}, spec, {})
    cur = train[:300] + [0, 3]  # x[0] as the reference's, x[1] moved
    result = ref.detect({"x": cur}, {})
    assert [f.feature for f in result.features] == ["x[0]", "x[1]"]
    assert [f.method for f in result.features] == ["ks", "ks"]
    assert result.share == 0.5 and result.detected  # Evidently: share >= 0.5
    assert result.top(1)[0].feature == "x[1]"
    json.dumps(result.to_json(), allow_nan=False)
    with pytest.raises(ValueError, match="input 'x' has the shape"):
        ref.detect({"x": cur[:, :1]}, {})
    with pytest.raises(ValueError, match="method='nope' must be one of auto, psi"):
        ref.detect({"x": cur}, {}, method="nope")
    assert {f.method for f in ref.detect({"x": cur}, {}, method="psi").features} == {"psi"}


def test_too_few_rows_are_not_judged_drifted_or_not():
    """2 rows were "drift DETECTED" (the tests' own minimum). Below min_rows (25 by default:
    the chi-square rule of 5 expected counts a bin over up to 5 values) nothing is tested and the
    state says so, machine-readably; at min_rows the same shift is judged."""
    rng = np.random.default_rng(0)
    spec = {"x": {"dtype": "float32", "shape": [-1, 2]}}
    train = rng.normal(size=(500, 2))
    ref = Reference({"x": train}, {}, spec, {})
    moved = train[:100] + 3  # every feature far off
    assert drift.MIN_ROWS == 25
    few = ref.detect({"x": moved[:2]}, {}, multivariate=True)
    assert (few.state, few.detected, few.share) == ("too_few_rows", None, None)
    assert few.features == few.outputs == [] and few.multivariate is None
    assert few.verdict() == "too few rows to judge drift (2 rows < 25)"
    report = json.loads(json.dumps(few.to_json(), allow_nan=False))
    assert report["state"] == "too_few_rows" and report["detected"] is None
    assert (report["rows"], report["min_rows"], report["drifted"]) == (2, 25, 0)
    assert ref.detect({"x": moved[:24]}, {}).state == "too_few_rows"
    enough = ref.detect({"x": moved[:25]}, {})
    assert (enough.state, enough.detected, enough.min_rows) == ("detected", True, 25)
    assert ref.detect({"x": train[:25]}, {}).state == "not_detected"
    # A caller's own floor, down to the 2 rows the tests need to run.
    assert ref.detect({"x": moved[:2]}, {}, min_rows=2).state == "detected"
    with pytest.raises(ValueError, match="min_rows=1: the drift tests need at least 2"):
        ref.detect({"x": moved}, {}, min_rows=1)


def test_a_window_the_model_could_not_have_made_is_refused():
    # Each was taken silently (an unknown output untested, 50 output rows beside 200 inputs,
    # all-NaN probabilities "not drifted") or said "input 'x' is missing" of an array given
    # alone (trial 48a).
    rng = np.random.default_rng(0)
    spec = {"x": {"dtype": "float32", "shape": [-1, 2]}}
    out = {
        "probabilities": {"dtype": "float32", "shape": [-1, 3]},
        "label": {"dtype": "int64", "shape": [-1]},
    }
    probabilities = rng.dirichlet(np.ones(3), 200).astype(np.float32)
    ref = Reference({"x": rng.normal(size=(200, 2))}, {"probabilities": probabilities}, spec, out)
    x = {"x": rng.normal(size=(50, 2))}
    for inputs, outputs, error, message in [
        (x["x"], {}, TypeError,
         "inputs: expected a dict of name -> array ({'x': array, ...}), got ndarray"),
        (x, [], TypeError,
         "outputs: expected a dict of name -> array ({'probabilities': array, ...}), got list"),
        (x, {"probs": probabilities[:50]}, ValueError,
         "outputs: 'probs' is not an output of the model; its outputs are probabilities, "
         "label"),
        (x, {"probabilities": probabilities}, ValueError,
         "output 'probabilities' holds 200 rows, the inputs 50: outputs are the model's on "
         "those inputs, row for row"),
        (x, {"probabilities": np.full((50, 3), np.nan, np.float32)}, ValueError,
         "output 'probabilities' holds a non-finite value (row 0: nan); drift tests a model's "
         "finite outputs (the server answers such a request 422 non_finite_output)"),
        # Each "not drifted", or a raw KeyError or NumPy's reshape error (fresh-user check).
        (x, {"probabilities": probabilities[:50, :1]}, ValueError,
         "output 'probabilities' has the shape [50, 1], expected [rows, 3], the model's"),
        ({"y": x["x"]}, {}, ValueError, "input 'x' is missing; the model's inputs are ['x']"),
        ({"x": np.full((50, 2), np.nan)}, {}, ValueError, "input feature x[0] holds a "
         "non-finite value; drift tests the inputs a model takes (the server refuses such a "
         "request)"),
        ({"x": np.zeros((0, 2))}, {}, ValueError, "the window holds no rows; give at least one"),
    ]:  # fmt: skip
        with pytest.raises(error) as e:
            ref.detect(inputs, outputs)
        assert str(e.value) == message
    assert ref.detect(x, {"label": np.zeros(50, np.int64)}).state == "not_detected"  # not sampled
    with pytest.raises(TypeError, match=r"got str: from_model\(artifact.load\(path\)\)$"):
        Reference.from_model("exports/digits")


def test_histograms_put_reference_and_traffic_on_the_same_bins():
    spec = {"x": {"dtype": "float32", "shape": [-1, 2]}}
    train = np.stack([np.arange(100.0), np.full(100, 7.0)], axis=1)  # x[1] constant
    ref = Reference({"x": train}, {}, spec, {})
    cur = np.stack([np.arange(100.0) + 100, np.r_[np.full(99, 7.0), np.nan]], axis=1)
    hist = ref.histograms({"x": cur}, ["x[0]", "x[1]"])
    edges, r, c = hist["x[0]"]
    np.testing.assert_allclose(edges, np.linspace(0, 199, 11))  # the range of both
    np.testing.assert_allclose(r, [0.2] * 5 + [0] * 5, atol=0.011)
    np.testing.assert_allclose(c, [0] * 5 + [0.2] * 5, atol=0.011)
    edges, r, c = hist["x[1]"]  # constant: NumPy's value +- 0.5; the NaN dropped
    assert (edges[0], edges[-1]) == (6.5, 7.5) and r.sum() == c.sum() == 1 and r[5] == c[5] == 1
    with pytest.raises(
        ValueError, match=r"no input feature 'x\[2\]' in the reference; .* \('x\[0\]'"
    ):
        ref.histograms({"x": cur}, ["x[2]"])


@pytest.mark.parametrize(
    "ref, cur, ticks",
    [
        # Few values: a tick per value (pixels 0 and 16 read -10, -5, 0, ..., 25).
        (np.tile([0.0, 16.0], 5), np.array([0.0, 0.0, 16.0]), ["0", "16"]),
        (np.tile([0.0, 1, 2, 3], 5), np.array([0.0, 1, 1, 3]), ["0", "1", "2", "3"]),
        # Many integer values: integer ticks (they read -2.5, 0.0, 2.5, ..., 17.5).
        (np.arange(17.0).repeat(3), np.arange(0, 17.0, 2), None),
    ],
)
def test_feature_pictures_tick_integer_features_at_integers(ref, cur, ticks):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ann.monitor.report import _histogram

    figure, ax = plt.subplots()
    _histogram(ax, ref, cur)
    figure.canvas.draw()
    shown = [t.get_text().replace("\u2212", "-") for t in ax.get_xticklabels()]
    plt.close(figure)
    if ticks is not None:
        assert shown == ticks
    else:
        assert len(shown) > 3 and all(float(t) == int(float(t)) for t in shown), shown


def test_large_inputs_are_projected_to_32_fixed_features():
    spec = {"image": {"dtype": "uint8", "shape": [-1, 32, 32, 3]}}
    x = np.random.default_rng(0).integers(0, 255, size=(5, 32, 32, 3), dtype=np.uint8)
    matrix, names = feature_matrix({"image": x}, spec)
    assert matrix.shape == (5, PROJECTED) and names[0] == "image:proj0"
    projection.cache_clear()  # the same matrix computed afresh (as in another process)
    np.testing.assert_array_equal(matrix, feature_matrix({"image": x}, spec)[0])
    assert projection(3072).std() == pytest.approx(1 / math.sqrt(3072), rel=0.02)


def test_the_reference_sample_is_seeded_and_capped_at_5000_rows():
    np.testing.assert_array_equal(sample_rows(1221), np.arange(1221))
    rows = sample_rows(60_000)
    assert len(rows) == len(np.unique(rows)) == 5000 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, sample_rows(60_000))
    assert rows.max() > 50_000  # drawn from the whole split, not its head
    assert feature_names(DIGITS)[:2] == ["image[0,0,0]", "image[0,1,0]"]


class _Rows:
    """A split of `n` rows whose feature `x` is the row's index."""

    def __init__(self, n, split="validation"):
        self.n, self.split = n, split

    def __len__(self):
        return self.n

    def rows(self, index):
        return {"x": np.asarray(index, np.float32)[:, None]}


def test_the_reference_sample_is_drawn_from_the_held_out_rows_with_the_models_outputs():
    predicted, sizes = [], []

    def call(weights, batch):  # the "exported graph": y = 2x, noting the rows it is run on
        predicted.extend(batch["x"][:, 0].tolist())
        sizes.append(len(batch["x"]))
        return {"y": 2 * batch["x"], "label": batch["x"][:, 0].astype(np.int32) % 3}

    split = _Rows(60_000, "train")
    pool = np.arange(1, 60_000, 7)  # e.g. an anomaly detector's calibration rows
    entry, arrays = reference_sample(split, pool, ["x"], call, None)
    x = arrays["inputs/x"][:, 0]
    assert entry == {"file": "reference.safetensors", "rows": 5000, "of": len(pool),
                     "split": "train", "seed": 0}  # fmt: skip
    assert set(x) <= set(pool) and len(set(x)) == 5000  # distinct rows of the pool only
    np.testing.assert_array_equal(arrays["outputs/y"][:, 0], 2 * x)  # each row's own, in order
    np.testing.assert_array_equal(arrays["outputs/label"], x.astype(np.int32) % 3)
    # In calls of one size (the last padded with a repeated row): a jitted graph compiles once.
    assert set(predicted) == set(x) and len(set(sizes)) == 1, sizes
    # Rows the export already ran (the training split's first rows) are not run again.
    known = call(None, {"x": np.arange(60_000, dtype=np.float32)[:, None]})
    predicted.clear()
    _, again = reference_sample(split, pool, ["x"], call, None, known)
    assert predicted == [] and np.array_equal(again["outputs/y"], arrays["outputs/y"])


def test_the_reference_rows_are_held_out_of_training():
    # A model is more confident on its own training rows (the digits CNN's confidence drifted
    # in 9 of 20 windows of 200 test digits against them, 1 of 20 against validation rows), and
    # an autoencoder reconstructs them better (its score drifted in 20 of 20 normal windows).
    train, validation = _Rows(1000, "train"), _Rows(216)
    split, index, words = held_out_rows(object(), train, validation)
    assert split is validation and list(index) == list(range(216))
    assert words == "validation split, held out of training"

    class Detector:  # an experiment with its own held-out training rows
        def held_out_rows(self):
            return np.array([3, 9]), "calibration rows"

    split, index, words = held_out_rows(Detector(), train, validation)
    assert split is train and list(index) == [3, 9] and words == "calibration rows"


def _window(rows: np.ndarray, size: int, seed: int) -> np.ndarray:
    return rows[np.random.default_rng(seed).choice(len(rows), size, replace=False)]


def test_digits_shifted_or_brightened_are_found_in_25_rows_and_unshifted_raise_few_alarms(digits):
    # Reference: the 1,221 training digits; current: held-out test digits. Windows of <= 1,000
    # rows are judged by KS (p-values), whatever the reference's size: by Evidently's choice
    # (Wasserstein for > 1,000 reference rows) every window of 25-47 unshifted digits was drift.
    train, test = digits
    ref = Reference({"image": train}, {}, DIGITS, {})
    for rows in (25, 47, 200):
        alarms = [ref.detect({"image": _window(test, rows, s)}, {}) for s in range(SEEDS)]
        assert sum(a.detected for a in alarms) <= SEEDS // 10, (rows, [a.share for a in alarms])
    for seed in range(5):  # 25 rows: the fewest judged (drift.MIN_ROWS)
        window = _window(test, 25, seed)
        shifted = np.roll(window, 1, axis=2)  # one pixel to the right
        brightened = np.minimum(window.astype(int) + 2, 16).astype(np.uint8)
        for moved in (shifted, brightened):
            result = ref.detect({"image": moved}, {})
            assert result.detected and result.share > 0.5, result.share
    mmd = ref.detect({"image": np.roll(_window(test, 25, 0), 1, axis=2)}, {}, multivariate=True)
    assert mmd.multivariate.drifted and mmd.multivariate.method == "mmd"


def test_the_mmd_test_is_calibrated_on_windows_drawn_at_random(digits):
    # Under no shift, p <= 0.05 in about 5% of windows and p is about uniform: windows of 40
    # test digits drawn at random against 300 training digits drawn at random (the p-value is
    # a permutation test's, valid whatever the reference's size; 300 rows keep this cheap).
    # Measured: 1 of 60, mean p 0.45; against all 1,221 training digits, 13 of 200 (6.5%),
    # deciles of p 0.12, 0.22, ..., 0.93. A served log of 40 *consecutive* test digits was
    # "drift" (p 1/201) where no feature was: consecutive rows share writers (README, Drift),
    # 28 of 60 such windows here; a real difference from the reference, not a false alarm.
    train, test = digits
    rng = np.random.default_rng(0)
    ref = feature_matrix({"image": train[rng.choice(len(train), 300, replace=False)]}, DIGITS)[0]
    current = feature_matrix({"image": test}, DIGITS)[0]
    windows = 60
    p = np.array(
        [drift.mmd_test(ref, _window(current, 40, seed)).p_value for seed in range(windows)]
    )
    # Binomial(60, 0.05) is at most 9 with probability 0.999; the mean of 60 uniform p-values
    # is 0.5 +- 0.037 (one std).
    assert np.sum(p <= 0.05) <= stats.binom.ppf(0.999, windows, 0.05) == 9, np.sort(p)[:12]
    assert 0.35 < p.mean() < 0.65, p.mean()


def test_breast_cancer_feature_moved_by_one_std_is_found_in_50_rows(breast_cancer):
    # 386 reference rows (<= 1,000: KS per feature). Moving one of 30 features is not dataset
    # drift (1/30 < 0.5): that feature is flagged, and the multivariate test notices.
    train, test = breast_cancer
    ref = Reference({"features": train}, {}, TABLE, {})
    std = train[:, 0].std()
    found, false_feature, false_dataset, false_mmd, mmd_found = 0, 0, 0, 0, 0
    for seed in range(SEEDS):
        window = _window(test, 50, seed)
        same = ref.detect({"features": window}, {}, multivariate=True)
        false_feature += same.features[0].drifted
        false_dataset += same.detected
        false_mmd += same.multivariate.drifted
        moved = window.copy()
        moved[:, 0] += std
        result = ref.detect({"features": moved}, {}, multivariate=seed < 5)
        found += result.features[0].drifted
        mmd_found += seed < 5 and result.multivariate.drifted
    assert found >= SEEDS - 1, found
    assert false_feature <= SEEDS // 10 and false_dataset == 0 and false_mmd <= SEEDS // 10
    assert mmd_found >= 4, mmd_found


def test_a_multiple_testing_correction_stops_false_flags_and_keeps_a_moved_feature(
    breast_cancer,
):
    # 30 features at p < 0.05 each: uncorrected, unmoved windows flag features (16 in 7 of 20
    # windows when measured); Bonferroni bounds the family-wise error, BH / BY the false
    # discovery rate, and a feature moved by one std in 50 rows is still found.
    train, test = breast_cancer
    ref = Reference({"features": train}, {}, TABLE, {})
    std = train[:, 0].std()
    for correction in drift.CORRECTIONS:
        flagged, found = 0, 0
        for seed in range(SEEDS):
            window = _window(test, 50, seed)
            same = ref.detect({"features": window}, {}, correction=correction)
            flagged += any(f.drifted for f in same.features)
            # Ranked by how far past the threshold, ties (adjusted p 1: strength 0) by the raw p:
            # under a correction they were listed in feature order.
            raw = sorted(f.p_value for f in same.features)
            assert [f.p_value for f in same.top(3)] == raw[:3], correction
            window[:, 0] += std
            moved = ref.detect({"features": window}, {}, correction=correction)
            found += moved.features[0].drifted
            assert moved.correction == same.correction == correction
        assert found >= SEEDS - 1, (correction, found)
        if correction == "none":
            assert flagged >= 3, flagged
        else:
            assert flagged <= SEEDS // 10, (correction, flagged)

    features = [
        drift.FeatureDrift("a", "ks", 0.5, 0.01, 0.05, True),
        drift.FeatureDrift("b", "z", 2.0, 0.04, 0.05, True),
        drift.FeatureDrift("c", "wasserstein", 0.3, None, 0.1, True),  # a distance: as it was
        drift.FeatureDrift("d", "chisquare", 1.0, 0.5, 0.05, False),
    ]
    p = np.array([0.01, 0.04, 0.5])
    for correction, adjusted in (
        ("bonferroni", [0.03, 0.12, 1.0]),
        ("fdr_bh", stats.false_discovery_control(p, method="bh")),
        ("fdr_by", stats.false_discovery_control(p, method="by")),
    ):
        out = drift.correct(features, correction)
        got = [f.p_adjusted for f in out if f.p_value is not None]
        np.testing.assert_allclose(got, adjusted)
        assert out[2] == features[2]  # the distance
        assert [f.drifted for f in out] == [got[0] < 0.05, got[1] < 0.05, True, got[2] < 0.05]
        assert out[0].strength == pytest.approx(math.log(got[0]) / math.log(0.05))
    assert drift.correct(features, "none") is features
    assert drift.format_p(0.01, None, 0.03) == "p=0.01 adjusted p=0.03"
    with pytest.raises(ValueError, match="correction='holm' must be one of none, bonferroni"):
        ref.detect({"features": test[:50]}, {}, correction="holm")


def test_the_export_holds_a_checksummed_reference_sample(digits_export, tmp_path):
    _, out = digits_export
    model = artifact.load(str(out))
    entry = model.manifest["files"][artifact.REFERENCE]
    assert entry["sha256"] == artifact.sha256_file(str(out / artifact.REFERENCE))
    sample = model.manifest["reference"]["sample"]
    assert sample == {
        "file": artifact.REFERENCE,
        "rows": 216,
        "of": 216,
        "split": "validation",
        "seed": 0,
        "held_out": "validation split, held out of training",
    }
    ref = Reference.from_model(model)
    assert ref.rows == 216 and ref.names[0] == "image[0,0,0]" and ref.split == "validation"
    assert ref.held_out == sample["held_out"]
    # Inputs and outputs are judged against one sample, rows held out of training: the sampled
    # training rows' outputs were more confident than any new traffic's (output drift in 9 of
    # 20 windows of 200 test digits), and the validation outputs beside training inputs were
    # other rows (sensor_series' splits are other series at other levels).
    stored = artifact.load_reference(str(out), model.manifest)
    assert stored["validation"] == {}  # the outputs on validation rows are `outputs/` now
    for name, values in stored["outputs"].items():
        np.testing.assert_array_equal(ref.outputs[name], values)
    assert ref.outputs["probabilities"].shape == (216, 10)
    test = _rows("digits", "test", "image")[:200]
    result = ref.detect({"image": test}, model({"image": test}))
    assert not result.detected
    assert [(f.feature, f.method) for f in result.outputs] == [
        ("output:probabilities", "ks"),
        ("output:label", "chisquare_pooled"),  # 200 rows: chi-square over classes, rare ones pooled
    ]
    # The stored outputs are the model's own on the stored inputs.
    np.testing.assert_array_equal(
        model({"image": stored["inputs"]["image"][:50]})["label"], stored["outputs"]["label"][:50]
    )

    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    blob = bytearray((tampered / artifact.REFERENCE).read_bytes())
    blob[-1] ^= 1
    (tampered / artifact.REFERENCE).write_bytes(bytes(blob))
    # Refused when the export is loaded (it loaded and served, drift alone unavailable), and
    # so is a listed reference that is gone.
    with pytest.raises(artifact.IntegrityError, match="reference.safetensors was modified"):
        artifact.load(str(tampered))
    (tampered / artifact.REFERENCE).unlink()
    with pytest.raises(artifact.IntegrityError, match="reference.safetensors"):
        artifact.load(str(tampered))

    older = tmp_path / "older"
    shutil.copytree(out, older)
    manifest = json.loads((older / artifact.MANIFEST).read_text())
    del manifest["files"][artifact.REFERENCE]
    (older / artifact.MANIFEST).write_text(json.dumps(manifest))
    (older / artifact.REFERENCE).unlink()
    with pytest.raises(drift.DriftUnavailable, match="holds no reference.safetensors"):
        Reference.from_model(artifact.load(str(older)))  # it loads; drift says why not

    # An export made before the reference was held out: a sample of training rows, which the
    # manifest names by its split alone, and whose outputs beside (`validation/`) are not read.
    from safetensors.numpy import save_file

    before = tmp_path / "before"
    shutil.copytree(out, before)
    arrays = {f"{kind}/{k}": v for kind in ("inputs", "outputs") for k, v in stored[kind].items()}
    arrays["validation/label"] = stored["outputs"]["label"][:10]
    save_file(arrays, str(before / artifact.REFERENCE))
    manifest = json.loads((before / artifact.MANIFEST).read_text())
    manifest["files"][artifact.REFERENCE] = {
        "sha256": artifact.sha256_file(str(before / artifact.REFERENCE)),
        "bytes": (before / artifact.REFERENCE).stat().st_size,
    }
    manifest["reference"]["sample"] = {**sample, "split": "train"}
    del manifest["reference"]["sample"]["held_out"]
    (before / artifact.MANIFEST).write_text(json.dumps(manifest))
    older_ref = Reference.from_model(artifact.load(str(before)))
    assert older_ref.outputs["label"].shape == (216,)
    assert (older_ref.split, older_ref.held_out) == ("train", None)
    assert drift_report.reference_label(older_ref.split, older_ref.held_out) == (
        "reference (train split)"
    )
    assert drift_report.reference_label(ref.split, ref.held_out) == (
        "reference (validation split, held out of training)"
    )


def _log(path, model, version, images, served=True):
    """A request log written by the server's own writer, 20 rows per request."""
    from ann.serve.request_log import RequestLog

    log = RequestLog(str(path), sample=1.0, max_bytes=1 << 30, backups=0)
    for i in range(0, len(images), 20):
        x = images[i : i + 20]
        log.write(model.name, version, f"r{i}", 200, 0.01, {"image": x}, model({"image": x}))
    log.write(model.name, version, "bad", 400, 0.0, None, error="bad request")
    log.write("other", "1", "o", 200, 0.01, {"image": images[:1]}, None)
    log.close()


def test_an_empty_name_in_requests_is_named():
    """`--requests=,`, `--requests=a.jsonl,`: "--requests= is not a file" (no file was
    named "")."""
    from conftest import one_line_error
    from test_cli import ann

    # An empty name in the list was "--requests= is not a file".
    for given, said in (
        (",", "`--requests=,` names no file; give the server's request log: "
         "--requests=FILE[,FILE]"),
        ("a.jsonl,", "`--requests=a.jsonl,` has an empty name after a comma; drop it"),
        (",a.jsonl", "`--requests=,a.jsonl` has an empty name before a comma; drop it"),
    ):  # fmt: skip
        line = one_line_error(ann("monitor", "drift", "--model=x", f"--requests={given}"))
        assert line == f"error: {said}", line


def test_monitor_drift_cli_writes_a_report_and_refuses_a_bad_log_in_one_line(
    digits_export, tmp_path
):
    from conftest import one_line_error
    from test_cli import ann

    workdir, out = digits_export
    model = artifact.load(str(out))
    version = model.manifest_sha256[:12]  # what `ann serve` calls an export's version
    test = _rows("digits", "test", "image")
    _log(tmp_path / "same.jsonl", model, version, test[:200])
    _log(tmp_path / "moved.jsonl", model, version, np.roll(test[200:], 1, axis=2))

    def drift_cli(log, report, *extra):
        return ann(
            "monitor", "drift", f"--model={out}", f"--requests={log}", f"--out={report}", *extra
        )

    result = drift_cli(tmp_path / "moved.jsonl", tmp_path / "moved")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("drift DETECTED: "), result.stdout
    report = json.loads((tmp_path / "moved" / "report.json").read_text())
    assert (report["report"], report["schema_version"]) == ("drift", 5)
    assert report["result"]["reference_split"] == "validation"
    assert report["result"]["reference_held_out"] == "validation split, held out of training"
    outputs = report["result"]["outputs"]
    assert report["result"]["outputs_drifted"] == sum(f["drifted"] for f in outputs)
    assert (
        f"; outputs, not in the verdict: {report['result']['outputs_drifted']} of "
        f"{len(outputs)} drifted | "
    ) in result.stdout.splitlines()[0]
    # Every key documented (docs/monitor_reports.md), every key it says is there present.
    assert report_doc.undocumented(report) == []
    assert report_doc.missing(report, {"when tested", "when tested, multivariate"}) == []
    assert report["result"]["state"] == "detected" and report["result"]["rows"] == 160
    assert report["result"]["detected"] and report["result"]["min_rows"] == 25
    assert report["requests"]["records"] == 8 and report["outputs_from"] == "log"
    assert report["requests"]["skipped"] == {"other models": 1, "failed or without inputs": 1}
    assert report["result"]["multivariate"]["drifted"]
    assert "drift_top_features_1.png" in report["figures"]
    for name in report["figures"]:
        assert (tmp_path / "moved" / name).read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in (tmp_path / "moved" / "index.html").read_text()

    result = drift_cli(
        tmp_path / "same.jsonl", tmp_path / "same", "--nomultivariate", "--correction=fdr_bh"
    )
    assert result.returncode == 0 and result.stdout.startswith("drift not detected: ")
    assert " features drifted, fdr_bh-corrected (share " in result.stdout.splitlines()[0]
    same = json.loads((tmp_path / "same" / "report.json").read_text())
    assert report_doc.undocumented(same) == [] and report_doc.missing(same, {"when tested"}) == []
    same = same["result"]
    assert same["share"] < 0.5 and same["state"] == "not_detected"
    assert same["correction"] == "fdr_bh" and report["result"]["correction"] == "none"
    tested = [f for f in same["features"] if f["p_value"] is not None]
    assert tested and all(f["p_adjusted"] >= f["p_value"] for f in tested)

    # A log of another version only: its outputs were compared with this version's reference,
    # and the summary named this version as the one the requests went to, without a word.
    _log(tmp_path / "other.jsonl", model, "c8bb31f79440", test[:200])
    result = drift_cli(tmp_path / "other.jsonl", tmp_path / "other", "--nomultivariate")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.startswith(
        f"warning: {tmp_path / 'other.jsonl'} holds no request to digits_cnn version {version}, "
        "only to version c8bb31f79440: judging their inputs against this version's reference"
    ), result.stderr
    assert (
        f"to digits_cnn version c8bb31f79440, judged against version {version} |"
        in (result.stdout.splitlines()[0])
    )
    other = json.loads((tmp_path / "other" / "report.json").read_text())
    assert other["outputs_from"] == "model" and other["requests"]["versions"] == ["c8bb31f79440"]

    (tmp_path / "bad.jsonl").write_text('{"model": "x", "status": 200}\nnot json\n')
    line = one_line_error(drift_cli(tmp_path / "bad.jsonl", tmp_path / "bad"))
    # the column, not orjson's parser state ("expected 'null'")
    assert line == (
        f"error: --requests={tmp_path / 'bad.jsonl'} line 2: expected a request record (a JSON "
        "object a line, as `ann serve --request_log` writes), got invalid JSON (expected a JSON "
        "value at column 1); the file is damaged (delete that line to use the rest)"
    ), line
    # Missing: "does not exist", as every path flag says it (it was "is not a file").
    line = one_line_error(drift_cli(tmp_path / "none.jsonl", tmp_path / "bad"))
    assert line.startswith(f"error: --requests={tmp_path / 'none.jsonl'} does not exist"), line
    line = one_line_error(drift_cli(tmp_path / "sam.jsonl", tmp_path / "bad"))  # a typo
    assert line == (
        f"error: --requests={tmp_path / 'sam.jsonl'} does not exist (did you mean "
        f"{tmp_path / 'same.jsonl'}?); give the server's request log"
    ), line  # as every missing path is said (`atomic.absent`), once
    line = one_line_error(drift_cli(tmp_path, tmp_path / "bad"))  # a directory
    assert "is not a file; give the server's request log" in line, line
    line = one_line_error(drift_cli(tmp_path / "bad.jsonl", tmp_path / "bad", "--min_rows=0"))
    # absl: "0 is not integer >= 2"; then without the upper bound and without an example.
    assert line == "error: --min_rows=0 must be an integer in [2, 1000000]; e.g. --min_rows=25"
    (tmp_path / "empty.jsonl").write_text('{"model": "x", "status": 200}\n')
    line = one_line_error(drift_cli(tmp_path / "empty.jsonl", tmp_path / "bad"))
    assert line == (
        f"error: --requests={tmp_path / 'empty.jsonl'} holds no request of model "
        "'digits_cnn': its 1 request is for model x, not digits_cnn; give --model what "
        "`ann serve --model` was given (an export directory is served under its manifest name, "
        "a models:/ URI under its registered name)"
    ), line
    # Too few rows to judge: said, and in report.json for a gate, not "drift DETECTED" (2 rows
    # were); exit 0. One row was a traceback once, then a refusal.
    _log(tmp_path / "few.jsonl", model, version, np.roll(test[:20], 1, axis=2))
    # (The default, 25, is in the detected report above; --min_rows reaches the test here.)
    result = drift_cli(tmp_path / "few.jsonl", tmp_path / "few", "--min_rows=21")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        "too few rows to judge drift (20 rows < --min_rows=21): not tested | 20 rows from 1 "
        f"request to digits_cnn version {version} | 216 reference rows (validation split, held "
        "out of training)",
        "  this log holds every request (--request_log_sample=1): wait for more traffic or "
        "lower --min_rows",
        f"wrote {tmp_path / 'few' / 'report.json'} and index.html",
    ]
    few = json.loads((tmp_path / "few" / "report.json").read_text())
    assert few["result"]["state"] == "too_few_rows" and few["result"]["detected"] is None
    assert few["result"]["features"] == [] and few["figures"] == []
    assert report_doc.undocumented(few) == [] and report_doc.missing(few) == []
    assert (
        "too few rows to judge drift (20 rows &lt; 21)"
        in (tmp_path / "few" / "index.html").read_text()
    )
    line = one_line_error(drift_cli(tmp_path / "few.jsonl", tmp_path / "bad", "--min_rows=1"))
    assert "--min_rows" in line and "2" in line, line
    # A training run's metrics file: "its 17 requests are for model None, not digits_cnn".
    line = one_line_error(drift_cli(workdir / "metrics.jsonl", tmp_path / "bad"))
    assert line.startswith(
        f"error: --requests={workdir / 'metrics.jsonl'} line 1 is not a request record of "
        "`ann serve --request_log` (it has no 'model' or 'status' field; it looks like a "
        "training run's metrics.jsonl)"
    ), line
    assert not (tmp_path / "bad").exists()


def test_a_bad_request_log_is_answered_before_jax_is_imported(digits_export, tmp_path):
    """The log is read against the export's manifest before the model is loaded: a log that is
    not one was answered after JAX's and SciPy's imports (2.2 s here, now 0.5 s)."""
    import subprocess
    import sys

    from conftest import ROOT

    _, out = digits_export
    (tmp_path / "bad.jsonl").write_text('{"model": "x", "status": 200}\nnot json\n')
    probe = (
        "import sys\nfrom ann.__main__ import main\ntry:\n    main(['ann', *sys.argv[1:]])\n"
        "except SystemExit as e:\n    code = e.code\nprint('jax' in sys.modules, code)\n"
    )
    args = ["monitor", "drift", f"--model={out}", f"--requests={tmp_path / 'bad.jsonl'}"]
    result = subprocess.run(
        [sys.executable, "-c", probe, *args, f"--out={tmp_path / 'report'}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.stdout.split() == ["False", "1"], result.stderr[-2000:]
    assert result.stderr.startswith(
        f"error: --requests={tmp_path / 'bad.jsonl'} line 2: expected a request"
    )


def test_a_torn_last_line_of_the_request_log_is_skipped_and_a_bad_one_before_it_refused(
    tmp_path, capsys
):
    from ann.monitor.request_log import RequestLogError, read_traffic

    spec = {"x": {"dtype": "float32", "shape": [-1, 2]}}
    records = [
        json.dumps({"model": "m", "version": "1", "status": 200, "time": float(i),
                    "inputs": {"x": {"shape": [1, 2], "data": [i, i]}}})
        for i in range(3)
    ]  # fmt: skip
    torn = tmp_path / "torn.jsonl"  # a server killed mid-write, or still writing
    torn.write_text("\n".join(records) + "\n" + records[0][:40])
    traffic = read_traffic([str(torn)], "m", "1", spec, {})
    assert traffic.records == 3 and traffic.inputs["x"][:, 0].tolist() == [0, 1, 2]
    # A plain line, as ann's other warnings (it carried absl's "W1202 12:00:00.000 ... ]").
    assert capsys.readouterr().err == (
        f"warning: --requests={torn} line 4: skipping it, torn (no end of line: the server was "
        "stopped while writing it, or is writing it now)\n"
    )
    # The same cut line before others (or ended by a newline: a server restarted on the log)
    # is a torn record too, skipped with a warning: it was refused as damage, and with it the
    # whole log. A cut inside a UTF-8 character is one as well.
    cut = records[0][:40]
    accented = json.dumps({"model": "m\u00e9"}, ensure_ascii=False).encode()[:9]
    for name, text in (
        ("mid.jsonl", "\n".join([records[0], cut, records[1], records[2]]) + "\n"),
        ("ended.jsonl", "\n".join([records[0], cut, *records[1:]]) + "\n"),
    ):
        (tmp_path / name).write_text(text)
        traffic = read_traffic([str(tmp_path / name)], "m", "1", spec, {})
        assert traffic.inputs["x"][:, 0].tolist() == [0, 1, 2]
        assert capsys.readouterr().err == (
            f"warning: --requests={tmp_path / name} line 2: skipping it, torn (a record cut short: "
            "its writer was stopped while writing it, and the line was ended later)\n"
        )
    (tmp_path / "utf8.jsonl").write_bytes(accented + b"\n" + records[0].encode() + b"\n")
    assert read_traffic([str(tmp_path / "utf8.jsonl")], "m", "1", spec, {}).records == 1
    assert "utf8.jsonl line 1: skipping it, torn (a record cut short" in capsys.readouterr().err
    # A line that is not JSON for another reason is damage: refused, the place on that line
    # (it said "at line 2 column 1" for line 2).
    (tmp_path / "bad.jsonl").write_text(records[0] + "\n" + records[1][:40] + "}\n")
    with pytest.raises(RequestLogError) as e:
        read_traffic([str(tmp_path / "bad.jsonl")], "m", "1", spec, {})
    assert str(e.value) == (
        f"--requests={tmp_path / 'bad.jsonl'} line 2: expected a request record (a JSON object "
        "a line, as `ann serve --request_log` writes), got invalid JSON (unexpected character, "
        "expected a JSON value at column 41); the file is damaged (delete that line to use the "
        "rest)"
    )


def test_a_pretty_printed_json_document_is_not_a_request_log(tmp_path, capsys):
    # `ann monitor drift --requests=EXPORT/manifest.json` called its line 1 ("{") torn ("its
    # writer was stopped while writing it"), then line 2 damage: the file is no log at all.
    from ann.monitor.request_log import RequestLogError, read_traffic

    spec = {"x": {"dtype": "float32", "shape": [-1, 2]}}
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"name": "d", "inputs": spec}, indent=1) + "\n")
    with pytest.raises(RequestLogError) as e:
        read_traffic([str(manifest)], "m", "1", spec, {})
    assert str(e.value) == (
        f"--requests={manifest} is one JSON document over several lines (its line 1 is no "
        "record), not JSON lines; give the server's request log (ann serve --request_log=FILE)"
    )
    assert capsys.readouterr().err == ""  # no "torn" warning before it
    # A log whose first record alone is torn is still a log: that line is skipped.
    record = json.dumps({"model": "m", "version": "1", "status": 200, "time": 1.0,
                         "inputs": {"x": {"shape": [1, 2], "data": [1, 1]}}})  # fmt: skip
    log = tmp_path / "log.jsonl"
    log.write_text(record[:30] + "\n" + record + "\n")
    assert read_traffic([str(log)], "m", "1", spec, {}).records == 1
    assert "line 1: skipping it, torn" in capsys.readouterr().err


def test_a_server_restarted_on_a_torn_request_log_says_so_and_the_log_stays_readable(
    tmp_path, capsys
):
    # Its first record was appended to the torn bytes: one unreadable line of both. Then the
    # line was ended in silence, and every reader refused the log as damaged at that line.
    from ann.monitor.request_log import read_traffic
    from ann.serve.request_log import RequestLog

    spec = {"x": {"dtype": "float32", "shape": [-1, 2]}}
    path = tmp_path / "r.jsonl"
    for torn in ('{"model": "m", "sta', ""):  # torn, then a clean end: nothing added
        path.write_text(torn)
        log = RequestLog(str(path), sample=1.0, max_bytes=1 << 20, backups=1)
        log.write("m", "1", "a", 200, 0.0, {"x": np.zeros((1, 2), np.float32)})
        log.close()
        lines = path.read_text().split("\n")
        assert lines[:-2] == ([torn] if torn else []) and lines[-1] == "", lines
    assert capsys.readouterr().err == (
        f"warning: --request_log={path} line 1 was torn (a server stopped while writing it); ended "
        "it, so the records after it start a line of their own (readers skip the torn one)\n"
    )
    path.write_text('{"model": "m", "status": 200}\n{"model": "m", "sta')
    RequestLog(str(path), sample=1.0, max_bytes=1 << 20, backups=1).close()
    assert path.read_text().endswith('"sta\n')  # ended once, not per start
    RequestLog(str(path), sample=1.0, max_bytes=1 << 20, backups=1).close()
    assert capsys.readouterr().err.count("line 2 was torn") == 1
    record = {"model": "m", "version": "1", "status": 200,
              "inputs": {"x": {"shape": [1, 2], "data": [3, 4]}}}  # fmt: skip
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
    traffic = read_traffic([str(path)], "m", "1", spec, {})  # drift reads it
    assert traffic.records == 1 and traffic.inputs["x"].tolist() == [[3, 4]]
    said = capsys.readouterr().err
    assert f"--requests={path} line 2: skipping it, torn (a record cut short" in said


def test_a_log_of_the_export_served_from_its_directory_is_read_and_others_are_named(tmp_path):
    """A models:/ URI (or a registered copy) names the model by its registered name; the same
    export served from its directory is logged under its manifest name and digest. The refusal
    said "(models: digits_cnn); serve it with --request_log", the wrong fix; then "give
    --model=<the registered copy>", which a registered copy refused the same way (it is served
    under its registered name): those requests are this export's, and are read."""
    from ann.monitor.request_log import RequestLogError, read_traffic

    spec = {"x": {"dtype": "float32", "shape": [-1, 2]}}
    tensor = {"shape": [1, 2], "data": [0, 0]}

    def log(name, *records):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return str(path)

    served = {"model": "digits_cnn", "version": "f4c1bfaa67c2", "status": 200,
              "inputs": {"x": tensor}}  # fmt: skip
    other = {"model": "iris", "version": "2", "status": 200, "inputs": {"x": tensor}}
    export = ("digits_cnn", "f4c1bfaa67c2")

    def refusal(path, name="digits", export=export):
        with pytest.raises(RequestLogError) as e:
            read_traffic([path], name, "1", spec, {}, export)
        return str(e.value)

    elsewhere = {**served, "version": "0123456789ab"}  # another export of that name
    path = log("same.jsonl", served, served, other, elsewhere)
    traffic = read_traffic([path], "digits", "1", spec, {}, export)
    assert (traffic.records, traffic.served_as, traffic.versions) == (2, export, [export[1]])
    assert traffic.skipped == {"other models": 2}
    assert read_traffic([path], "digits_cnn", "f4c1bfaa67c2", spec, {}).served_as is None
    path = log("elsewhere.jsonl", elsewhere, other)  # not this export: refused, names them
    assert refusal(path).startswith(
        f"--requests={path} holds no request of model 'digits': its 2 requests are for "
        "models digits_cnn (1), iris (1), not digits; give --model what"
    )
    path = log("other.jsonl", other)
    assert refusal(path) == (
        f"--requests={path} holds no request of model 'digits': its 1 request is for "
        "model iris, not digits; give --model what `ann serve --model` was given (an "
        "export directory is served under its manifest name, a models:/ URI under its "
        "registered name)"
    )
    path = log("failed.jsonl", {"model": "digits", "version": "1", "status": 400}, other)
    assert refusal(path) == (
        f"--requests={path} holds no successful request of model 'digits': its one "
        "request failed or was logged without inputs"
    )
    path = log("empty.jsonl")
    assert refusal(path) == (
        f"--requests={path} holds no requests; log them with `ann serve --request_log=FILE` "
        "(--request_log_sample=1 logs every one)"
    )


def test_a_file_that_is_not_a_request_log_is_named_so_and_one_row_is_too_few(tmp_path):
    """A training run's metrics.jsonl was read as requests "for model None"; a log of one
    row failed in the drift test with a traceback (ValueError: a drift test needs at least 2
    rows of traffic, got 1)."""
    from ann.monitor.request_log import RequestLogError, read_traffic

    spec = {"x": {"dtype": "float32", "shape": [-1, 2]}}

    def refusal(text, **kwargs):
        (tmp_path / "log.jsonl").write_text(text)
        with pytest.raises(RequestLogError) as e:
            read_traffic([str(tmp_path / "log.jsonl")], "m", "1", spec, {}, **kwargs)
        return str(e.value)

    path = tmp_path / "log.jsonl"
    metrics = '{"step": 0, "model/num_params": 12.0}\n{"step": 5, "train/loss": 0.5}\n'
    assert refusal(metrics) == (
        f"--requests={path} line 1 is not a request record of `ann serve --request_log` (it has "
        "no 'model' or 'status' field; it looks like a training run's metrics.jsonl); give "
        "--requests the file the server's --request_log wrote"
    )
    request = {"model": "m", "version": "1", "status": 200,
               "inputs": {"x": {"shape": [1, 2], "data": [0, 1]}}}  # fmt: skip
    assert refusal(json.dumps(request) + '\n{"model": null, "status": 200}\n') == (
        f"--requests={path} line 2 is not a request record of `ann serve --request_log` (its "
        "model is null, not a name); give --requests the file the server's --request_log wrote"
    )
    assert refusal(json.dumps(request) + "\n", min_rows=2) == (
        f"{path} holds 1 row of model 'm' (in 1 successful request); at least 2 are needed: "
        "log more requests (`ann serve --request_log_sample=1` logs every one; the log does not "
        "record its share: the default 0.01 logs one in 100)"
    )
    two = {**request, "inputs": {"x": {"shape": [2, 2], "data": [0, 1, 2, 3]}}}
    path.write_text(json.dumps(two) + "\n")
    assert read_traffic([str(path)], "m", "1", spec, {}, min_rows=2).inputs["x"].shape == (2, 2)


def test_too_few_rows_beside_rotated_logs_names_them_not_the_sampling(tmp_path):
    """A log rotated by `ann serve --request_log_backups=2` (rot.jsonl.1, .2 beside it) was
    told to log every request (`--request_log_sample=1`), which it already did; the files
    beside it hold the rest, as --requests takes them (comma-separated)."""
    from ann.monitor.__main__ import summary
    from ann.monitor.request_log import RequestLogError, more_requests, read_traffic

    spec = {"x": {"dtype": "float32", "shape": [-1, 2]}}
    line = json.dumps({"model": "m", "version": "1", "status": 200,
                       "inputs": {"x": {"shape": [1, 2], "data": [0, 1]}}}) + "\n"  # fmt: skip
    rot = tmp_path / "rot.jsonl"
    for path in (rot, tmp_path / "rot.jsonl.1", tmp_path / "rot.jsonl.2"):
        path.write_text(line)
    said = f"read the rotated files beside it too (--requests={rot},{rot}.1,{rot}.2)"
    with pytest.raises(RequestLogError) as e:
        read_traffic([str(rot)], "m", "1", spec, {}, min_rows=2)
    assert str(e.value).endswith(f"at least 2 are needed: {said}"), str(e.value)
    assert more_requests([str(rot), f"{rot}.1"]) == said.replace("files", "file")  # .2 alone
    report = {
        "model": {"name": "m", "version": "1"},
        "requests": {"files": [str(rot)], "records": 1, "versions": ["1"], "served_as": None},
        "result": {"state": "too_few_rows", "rows": 1, "min_rows": 25, "reference_rows": 9},
    }
    assert summary(report, "r.json").splitlines()[1] == f"  {said} or lower --min_rows"


def test_too_few_rows_of_a_sampled_rotated_log_names_the_share_beside_the_files(
    tmp_path, monkeypatch
):
    """`--requests=req.jsonl.1` of a log sampled at 0.5 (req.jsonl, .1, .2): it advised only
    reading the log and its other rotated file, where all three together held too few rows;
    the share the log holds is named too."""
    from ann.monitor.__main__ import summary
    from ann.monitor.request_log import RequestLogError, read_traffic

    monkeypatch.chdir(tmp_path)
    spec = {"x": {"dtype": "float32", "shape": [-1, 2]}}
    line = json.dumps({"model": "m", "version": "1", "status": 200, "sample": 0.5,
                       "inputs": {"x": {"shape": [1, 2], "data": [0, 1]}}}) + "\n"  # fmt: skip
    for name in ("req.jsonl", "req.jsonl.1", "req.jsonl.2"):
        (tmp_path / name).write_text(line * 3)
    said = (
        "read the log req.jsonl and its other rotated file too (--requests=req.jsonl,"
        "req.jsonl.1,req.jsonl.2); this log holds 50% of requests (--request_log_sample=0.5); "
        "raise it to log more (`ann serve --request_log_sample=1` logs every one)"
    )
    with pytest.raises(RequestLogError) as e:
        read_traffic(["req.jsonl.1"], "m", "1", spec, {}, min_rows=500)
    assert str(e.value).endswith(f"at least 500 are needed: {said}"), str(e.value)
    report = {
        "model": {"name": "m", "version": "1"},
        "requests": {"files": ["req.jsonl.1"], "records": 3, "versions": ["1"],
                     "served_as": None, "request_log_sample": [0.5]},
        "result": {"state": "too_few_rows", "rows": 3, "min_rows": 500, "reference_rows": 9},
    }  # fmt: skip
    assert summary(report, "r.json").splitlines()[1] == f"  {said} or lower --min_rows"


@pytest.mark.parametrize("value, said", [(0, "0"), ("x", '"x"'), (2, "2"), (-1, "-1"),
                                         (None, "null")])  # fmt: skip
def test_a_bad_sample_in_a_request_log_is_warned_of_once_naming_its_line(
    tmp_path, capsys, value, said
):
    """A record's "sample" that is not a share in (0, 1] was silently read as a log that does
    not record its share (and advised with the default's 0.01): one warning names the first
    such line and counts the rest, as a torn line is warned of."""
    from ann.monitor.request_log import read_requests, read_traffic

    spec = {"x": {"dtype": "float32", "shape": [-1, 2]}}
    good = {"model": "m", "version": "1", "status": 200, "sample": 1,
            "inputs": {"x": {"shape": [1, 2], "data": [0, 1]}}}  # fmt: skip
    bad = {**good, "sample": value}
    path = tmp_path / "req.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (good, bad, bad, bad)))
    warning = (
        f'warning: --requests={path} line 2: "sample" is {said}, not a share of requests in '
        "(0, 1] (the server's --request_log_sample), nor in 2 more lines; ignored, as a line "
        "that does not record its share"
    )
    assert read_traffic([str(path)], "m", "1", spec, {}).samples == [1.0]
    assert capsys.readouterr().err.splitlines() == [warning]
    assert read_requests([str(path)], "m", {}).samples == [1.0]
    assert capsys.readouterr().err.splitlines() == [warning]


def test_too_few_rows_in_a_rotated_file_given_alone_names_its_log_and_the_other_files(
    digits_export, tmp_path
):
    """`--requests=logs/req.jsonl.2`, a rotated file given on its own, was advised
    `--request_log_sample=1` (it was taken for a log with nothing rotated beside it): its log
    and the log's other rotated files hold the rest, and are named."""
    from test_cli import ann

    _, export = digits_export
    model = artifact.load(str(export))
    version = model.manifest_sha256[:12]
    test = _rows("digits", "test", "image")
    (tmp_path / "logs").mkdir()
    names = ("req.jsonl", "req.jsonl.1", "req.jsonl.2", "req.jsonl.3")
    for n, name in enumerate(names):
        _log(tmp_path / "logs" / name, model, version, test[20 * n : 20 * n + 20])
    result = ann(
        "monitor", "drift", f"--model={export}", "--requests=logs/req.jsonl.2",
        f"--out={tmp_path / 'drift'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    files = ",".join(f"logs/{name}" for name in names)
    assert result.stdout.splitlines()[1] == (
        f"  read the log logs/req.jsonl and its other rotated files too (--requests={files}) or "
        "lower --min_rows"
    ), result.stdout


def _read_one(tmp_path, tensor, dtype="float32"):
    """read_traffic of a log of one request whose input `x` (2 values a row) is `tensor`."""
    from ann.monitor.request_log import read_traffic

    record = {"model": "m", "version": "1", "status": 200, "inputs": {"x": tensor}}
    (tmp_path / "log.jsonl").write_text(json.dumps(record) + "\n")
    spec = {"x": {"dtype": dtype, "shape": [-1, 2]}}
    return read_traffic([str(tmp_path / "log.jsonl")], "m", "1", spec, {})


@pytest.mark.parametrize(
    "tensor, message",
    [
        # A null read as NaN, silently (drift then tested a value nobody sent).
        # The first value that is not a number, and where (it quoted the array's start).
        (
            {"shape": [1, 2], "data": [1, None]},
            "expected a JSON array of numbers, got null at flat index 1",
        ),
        # NumPy's own words before: "cannot reshape array of size 3 into shape (1,2)", "'str'
        # object cannot be interpreted as an integer", "setting an array element with a
        # sequence. The requested array has an inhomogeneous shape ..."
        ({"shape": [1, 2], "data": [1, 2, 3]}, "expected 2 values for the shape [1, 2], got 3"),
        ({"shape": "x", "data": [1, 2]}, 'expected a shape (a list of sizes), got "x"'),
        ({"shape": [1, 2], "data": [[1], [2, 3]]}, "expected a JSON array of numbers, got [[1],"),
        (
            {"shape": [1, 2], "data": [1, "b"]},
            'expected a JSON array of numbers, got "b" at flat index 1',
        ),
        (
            {"shape": [1, 2], "data": [[0], [None]]},
            "expected a JSON array of numbers, got null at flat index 1",
        ),
    ],
)
def test_a_damaged_tensor_in_the_request_log_is_named_without_numpys_words(
    tmp_path, tensor, message
):
    from ann.monitor.request_log import RequestLogError

    with pytest.raises(RequestLogError) as e:
        _read_one(tmp_path, tensor)
    assert str(e.value).startswith(
        f"--requests={tmp_path / 'log.jsonl'} line 1: tensor 'x': {message}"
    )


@pytest.mark.parametrize(
    "data, message",
    [
        # As the server words them (its own checks).
        ([-5, 3], "expected UINT8 values in [0, 255], got -5 at flat index 0"),  # read as 251
        ([3, 300], "expected UINT8 values in [0, 255], got 300 at flat index 1"),  # and as 44
        ([0.5, 3], "expected integers for UINT8, got 0.5 at flat index 0"),  # and 0.5 as 0
    ],
)
def test_request_log_values_an_integer_input_cannot_hold_are_refused(tmp_path, data, message):
    from ann.monitor.request_log import RequestLogError

    with pytest.raises(RequestLogError) as e:
        _read_one(tmp_path, {"shape": [1, 2], "data": data}, "uint8")
    assert str(e.value) == f"--requests={tmp_path / 'log.jsonl'} line 1: tensor 'x': {message}"
    # Whole numbers in range, as JSON may write them: read.
    traffic = _read_one(tmp_path, {"shape": [1, 2], "data": [255.0, 0]}, "uint8")
    assert traffic.inputs["x"].tolist() == [[255, 0]]


def test_a_request_log_given_twice_is_refused(tmp_path):
    # Its requests were counted twice (400 rows from 200), and the verdict moved with them.
    from ann.monitor.request_log import RequestLogError, read_traffic

    record = {"model": "m", "version": "1", "status": 200,
              "inputs": {"x": {"shape": [1, 2], "data": [1.0, 2.0]}}}  # fmt: skip
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps(record) + "\n")
    spec = {"x": {"dtype": "float32", "shape": [-1, 2]}}
    again = f"{tmp_path}/./log.jsonl"
    with pytest.raises(RequestLogError) as e:
        read_traffic([str(log), again], "m", "1", spec, {})
    assert str(e.value) == f"--requests names {log} twice (again as {again}); give each file once"
    # From the command line, before --out is looked at: an --out holding another log's report
    # was said first, and the file named twice only on the next try (trial 46a).
    from conftest import one_line_error
    from test_cli import ann

    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    args = ["monitor", "drift", "--model=x", f"--requests={log},{log}", f"--out={out}"]
    line = one_line_error(ann(*args))
    assert line == f"error: --requests names {log} twice; give each file once", line


@pytest.mark.parametrize(
    "args, message",
    [
        (["drift", "--model=x", "--requests=y", "--labels=z"],
         "error: --labels is read by `ann monitor feedback` and `ann monitor performance`, "
         "not drift; drop it"),
        (["feedback", "--model=x", "--labels=z", "--requests=y"],
         "error: --requests is read by `ann monitor drift` and `ann monitor performance`, not "
         "feedback; drop it"),
        (["performance", "--model=x", "--labels=z", "--requests=y", "--url=http://h:1"],
         "error: --url is read by `ann monitor feedback`, not performance; drop it"),
    ],
)  # fmt: skip
def test_another_monitor_commands_flag_is_refused(args, message):
    # Accepted and ignored: `ann monitor drift --labels=x` ran as if it were not there. Every
    # command that reads it is named: "--labels is read by `ann monitor feedback`" hid that
    # performance reads it too.
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run([sys.executable, "-m", "ann", "monitor", *args],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert result.returncode == 1 and result.stderr.strip() == message, result.stderr


def test_a_report_of_another_request_log_is_not_replaced_without_a_word(tmp_path):
    """The default --out is per model version: a drift report of another log replaced the
    earlier one silently. Refused as `ann report` refuses a report of another model; the
    rotated files of the same log added are the same log."""
    from ann.cli import FlagError
    from ann.monitor.__main__ import _check_out

    out = tmp_path / "drift-m-1"
    out.mkdir()
    earlier = {"schema": "ann.monitor.drift/1", "model": {"name": "m", "version": "1"},
               "requests": {"files": [str(tmp_path / "a.jsonl")]}}  # fmt: skip
    (out / "report.json").write_text(json.dumps(earlier))
    with pytest.raises(FlagError) as e:
        _check_out(str(out), "drift", ("m", "1", [str(tmp_path / "b.jsonl")]))
    assert str(e.value) == (
        f"--out={out} holds the drift report of {tmp_path / 'a.jsonl'} (model m version 1), not "
        f"of --requests={tmp_path / 'b.jsonl'}; choose another --out, or delete {out} to "
        "replace it"
    )
    a = str(tmp_path / "a.jsonl")
    assert _check_out(str(out), "drift", ("m", "1", [a, f"{a}.1"])) == str(out)
    # Another model's report on the same logs was refused as if of other logs: "of a.jsonl
    # (model m version 1), not of --requests=a.jsonl".
    with pytest.raises(FlagError) as e:
        _check_out(str(out), "drift", ("m", "2", [a]))
    assert str(e.value) == (
        f"--out={out} holds the drift report of model m version 1, not of model m version 2 "
        f"(--model); choose another --out, or delete {out} to replace it"
    )


def test_a_drift_report_at_out_is_of_the_log_file_itself_from_any_directory(
    digits_export, tmp_path, monkeypatch
):
    """--out's check compared the --requests names as typed: the same log by its absolute
    path was refused as another log's ("holds the drift report of req.jsonl.3 ..., not of
    --requests=/x/req.jsonl.3"), and another log by the same relative name, from another
    directory, replaced the report without a word. report.json records the files' absolute
    paths (requests.paths) and the check compares those; a report without them (written
    before) is compared by its names as typed, from here."""
    import os
    from pathlib import Path

    from conftest import one_line_error
    from test_cli import ann

    from ann.cli import FlagError
    from ann.monitor.__main__ import _check_out

    _, export = digits_export
    model = artifact.load(str(export))
    version = model.manifest_sha256[:12]
    root = Path(os.path.realpath(tmp_path))
    logs, elsewhere, out = root / "logs", root / "elsewhere", root / "drift"
    logs.mkdir()
    elsewhere.mkdir()
    test = _rows("digits", "test", "image")
    _log(logs / "req.jsonl.3", model, version, test[:20])  # too few rows: judged at once
    _log(elsewhere / "req.jsonl.3", model, version, test[20:40])  # another log, the same name

    def drift_cli(cwd, log):
        return ann(
            "monitor", "drift", f"--model={export}", f"--requests={log}", f"--out={out}", cwd=cwd
        )

    result = drift_cli(logs, "req.jsonl.3")
    assert result.returncode == 0, result.stderr[-2000:]
    made = json.loads((out / "report.json").read_text())["requests"]
    line = one_line_error(drift_cli(elsewhere, "req.jsonl.3"))  # replaced it silently
    assert line == (
        f"error: --out={out} holds the drift report of {logs / 'req.jsonl.3'} (model "
        f"{model.name} version {version}), not of --requests=req.jsonl.3 "
        f"({elsewhere / 'req.jsonl.3'}); choose another --out, or delete {out} to replace it"
    ), line
    result = drift_cli(elsewhere, logs / "req.jsonl.3")  # the same file: it was refused
    assert result.returncode == 0, result.stderr[-2000:]
    assert made["files"] == ["req.jsonl.3"] and made["paths"] == [str(logs / "req.jsonl.3")]

    # A report written before paths were recorded: its names as typed, from here.
    earlier = json.loads((out / "report.json").read_text())
    earlier["requests"] = {"files": ["req.jsonl.3"]}
    (out / "report.json").write_text(json.dumps(earlier))
    monkeypatch.chdir(logs)
    made_of = (model.name, version, [str(logs / "req.jsonl.3")])
    assert _check_out(str(out), "drift", made_of) == str(out)
    with pytest.raises(FlagError, match="holds the drift report of req.jsonl.3 "):
        _check_out(str(out), "drift", (model.name, version, [str(elsewhere / "req.jsonl.3")]))


def test_a_same_named_log_from_another_directory_is_named_by_its_absolute_path(
    tmp_path, monkeypatch
):
    """ "--out=... holds the drift report of /x/a/req.jsonl ..., not of --requests=req.jsonl"
    did not tell the two files apart: the log given is named by its absolute path too."""
    import os
    from pathlib import Path

    from ann.cli import FlagError
    from ann.monitor.__main__ import _check_out

    root = Path(os.path.realpath(tmp_path))
    out, a, b = root / "drift", root / "a", root / "b"
    for folder in (out, a, b):
        folder.mkdir()
    earlier = {"schema": "ann.monitor.drift/1", "model": {"name": "m", "version": "1"},
               "requests": {"files": ["req.jsonl"], "paths": [str(a / "req.jsonl")]}}  # fmt: skip
    (out / "report.json").write_text(json.dumps(earlier))
    monkeypatch.chdir(b)
    with pytest.raises(FlagError) as e:
        _check_out(str(out), "drift", ("m", "1", ["req.jsonl"]))
    assert str(e.value) == (
        f"--out={out} holds the drift report of {a / 'req.jsonl'} (model m version 1), not of "
        f"--requests=req.jsonl ({b / 'req.jsonl'}); choose another --out, or delete {out} to "
        "replace it"
    )


def test_psi_is_worded_as_psi_in_the_chart_and_the_summary(tmp_path):
    """PSI has no p: the chart's legend said `"0": p = 1 (strength 0), no bar` of it, and the
    summary's `top:` listed five features all `psi 0`, which did not move at all."""
    from ann.monitor import report
    from ann.monitor.__main__ import summary

    rng = np.random.default_rng(0)
    spec = {"x": {"dtype": "float32", "shape": [-1, 4]}}
    train = rng.integers(0, 3, size=(400, 4)).astype("float32")
    window = train[:100].copy()
    train[:, 3] = window[:, 3] = 0.0  # constant on both sides: psi 0
    ref = Reference({"x": train}, {}, spec, {})
    figure = report._strength_figure(ref.detect({"x": window}, {}, method="psi"))
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert '"0": psi 0 (strength 0), no bar' in legend, legend
    # The legend names only the kinds of bar drawn: "drifted" stood under a chart of none.
    assert "drifted" not in legend and "not drifted" in legend, legend
    assert figure.axes[0].get_xlabel() == "strength (>= 1: drift; psi / 0.1)"
    ks = report._strength_figure(ref.detect({"x": window}, {}, method="ks"))
    assert ks.axes[0].get_xlabel() == "strength (>= 1: drift; log p / log 0.05)"
    same = {"x": np.zeros((100, 4), "float32")}
    still = Reference(same, {}, spec, {}).detect(same, {}, method="psi")
    made = _drift_report(still, 100)
    assert summary(made, "r.json").splitlines()[1] == "  top: none moved (psi 0 for every feature)"


def test_the_pages_tests_line_names_the_method_that_ran(tmp_path):
    """index.html under --method=psi said "per-feature tests: psi (Evidently's defaults,
    adapted, when auto)": only auto is Evidently's defaults."""
    from ann.monitor import report
    from ann.monitor.__main__ import tests_line

    spec = {"x": {"dtype": "float32", "shape": [-1, 2]}}
    same = {"x": np.zeros((100, 2), "float32")}
    ref = Reference(same, {}, spec, {})
    made = {"model": {"name": "m", "version": "1"}, "requests": {"files": ["a"], "records": 100}}
    for method in ("psi", "auto"):
        result = ref.detect(same, {}, method=method)
        parts = report.sections(result, ref, same, {}, top=2)
        header = [tests_line("log", method, "none")]
        report.write(str(tmp_path / method), made, parts, "Drift", header)
        page = (tmp_path / method / "index.html").read_text()
        said = (
            "outputs from the request log; per-feature tests: psi; multiple-testing correction: "
            "none"
            if method == "psi"
            else "outputs from the request log; per-feature tests: auto (Evidently&#x27;s "
            "defaults, adapted); multiple-testing correction: none"
        )
        assert said in page, page[:3000]


def test_the_reports_top_features_lists_only_features_that_moved(tmp_path):
    """index.html's "Top features" table listed features of psi 0 (traffic the same as the
    reference), where the printed `top:` lists only features that moved; with none moved the
    page says so in the summary's words."""
    from ann.monitor import report
    from ann.monitor.__main__ import summary

    rng = np.random.default_rng(0)
    spec = {"x": {"dtype": "float32", "shape": [-1, 4]}}
    train = rng.integers(0, 3, size=(400, 4)).astype("float32")
    window = train[:100].copy()
    train[:, 3] = window[:, 3] = 0.0  # constant on both sides: psi 0

    def page(ref, inputs, name):
        result = ref.detect(inputs, {}, method="psi")
        made = {"model": {"name": "m", "version": "1"}, "result": result.to_json()}
        made["requests"] = {"files": ["a"], "records": 100, "versions": ["1"], "served_as": None}
        parts = report.sections(result, ref, inputs, {}, top=2)
        path = report.write(str(tmp_path / name), made, parts, "Drift", [])
        text = (tmp_path / name / "index.html").read_text()
        top = text[text.index("drift: Top features") : text.index("drift: Outputs")]
        return top, summary(made, path).splitlines()

    top, lines = page(Reference({"x": train}, {}, spec, {}), {"x": window}, "some")
    assert "x[3]" not in top and "x[0]" in top, top
    assert "x[3]" not in lines[1] and lines[1].startswith("  top: x["), lines
    same = {"x": np.zeros((100, 4), "float32")}
    top, lines = page(Reference(same, {}, spec, {}), same, "none")
    assert "x[" not in top and "<li>none moved (psi 0 for every feature)</li>" in top, top
    assert lines[1] == "  top: none moved (psi 0 for every feature)"
    # Fisher's odds ratio of two samples that do not differ is 1, not 0.
    assert not drift.moved("fisher_exact", 1.0) and drift.moved("fisher_exact", 0.0)
    assert drift.none_moved(["ks", "fisher_exact"]) == (
        "none moved (ks 0, fisher_exact 1 for every feature)"
    )


def test_too_few_rows_names_the_share_of_requests_the_log_holds(tmp_path):
    """The log did not record `--request_log_sample`, so "log more requests" named the
    default's share (0.01) whatever the server was given. The server's writer records it in
    each record, and the advice names the log's own; an older log without it still reads,
    and says it does not record its share."""
    from ann.monitor.__main__ import summary
    from ann.monitor.request_log import RequestLogError, read_traffic
    from ann.serve.request_log import RequestLog

    spec = {"x": {"dtype": "float32", "shape": [-1, 2]}}

    def advice(path, **kwargs):
        with pytest.raises(RequestLogError) as e:
            read_traffic([str(path)], "m", "1", spec, {}, min_rows=3)
        return str(e.value).split("at least 3 are needed: ")[1]

    for sample, said in (
        (0.1, "this log holds 10% of requests (--request_log_sample=0.1); raise it to log more "
              "(`ann serve --request_log_sample=1` logs every one)"),
        (1.0, "this log holds every request (--request_log_sample=1): wait for more traffic"),
    ):  # fmt: skip
        path = tmp_path / f"{sample}.jsonl"
        log = RequestLog(str(path), sample=sample, max_bytes=1 << 20, backups=1)
        log.write("m", "1", "a", 200, 0.0, {"x": np.zeros((1, 2), np.float32)})
        log.close()
        assert advice(path) == said
        traffic = read_traffic([str(path)], "m", "1", spec, {})  # read as ever
        assert traffic.records == 1 and traffic.samples == [sample]
        report = {
            "model": {"name": "m", "version": "1"},
            "requests": {"files": [str(path)], "records": 1, "versions": ["1"],
                         "served_as": None, "request_log_sample": traffic.samples},
            "result": {"state": "too_few_rows", "rows": 1, "min_rows": 3, "reference_rows": 9},
        }  # fmt: skip
        assert summary(report, "r.json").splitlines()[1] == f"  {said} or lower --min_rows"
    older = tmp_path / "older.jsonl"  # a log from before the share was recorded
    record = json.loads(path.read_text())
    del record["sample"]
    older.write_text(json.dumps(record) + "\n")
    assert read_traffic([str(older)], "m", "1", spec, {}).samples == []
    assert advice(older) == (
        "log more requests (`ann serve --request_log_sample=1` logs every one; the log does not "
        "record its share: the default 0.01 logs one in 100)"
    )


# -- categorical inputs: token ids are categories, not numbers ---------------------------------


def _pydoc_windows():
    from ann.data import pydoc_chars

    splits = pydoc_chars.split_documents()
    return {
        k: np.stack([w for _, t in docs for w in pydoc_chars.windows(pydoc_chars.encode(t))])
        for k, docs in splits.items()
    }, pydoc_chars.VOCABULARY


def test_token_ids_are_tested_as_token_frequencies_not_numbers():
    # The pydoc char LM's clean held-out windows were "tokens[87] ks 0.209" and MMD "DRIFT": a KS
    # test and a distance between token ids. Now a token input (names: its vocabulary) is one
    # feature, its token frequencies over all positions without padding, left out of the MMD;
    # clean held-out text is not drift, a shifted token distribution is.
    from experiments.common import spec as entry

    windows, vocabulary = _pydoc_windows()
    spec = {"tokens": entry("int32", [-1, windows["train"].shape[1]], vocabulary, 0)}
    rng = np.random.default_rng(0)
    # The reference an export draws, the validation split: 1.2.0's (43% one module's text)
    # flagged every window of clean test rows, and most of training rows.
    ref = Reference({"tokens": windows["validation"]}, {}, spec, {})
    for split in ("test", "train"):
        flagged = sum(
            ref.detect(
                {"tokens": windows[split][rng.choice(len(windows[split]), 100, replace=False)]}, {}
            ).detected
            for _ in range(20)
        )
        assert flagged <= 2, (split, flagged)
    held_out = windows["test"][rng.choice(len(windows["test"]), 100, replace=False)]
    result = ref.detect({"tokens": held_out}, {}, multivariate=True, correction="fdr_bh")
    assert [f.feature for f in result.features] == ["tokens"]
    assert result.features[0].method == "jensenshannon"
    assert result.multivariate is None  # no numeric input: no MMD on ids
    assert result.state == "not_detected" and not result.features[0].drifted
    assert "categorical" in result.tested_as["tokens"]
    assert "padding (id 0) excluded" in result.tested_as["tokens"]
    assert result.to_json()["tested_as"] == result.tested_as
    # 10% of the characters turned into digits: the unigram distribution moved
    shifted = held_out.copy()
    digits = [vocabulary.index(c) for c in "0123456789"]
    hit = (shifted > 2) & (rng.random(shifted.shape) < 0.1)
    shifted[hit] = rng.choice(digits, hit.sum())
    moved = ref.detect({"tokens": shifted}, {}, multivariate=True)
    assert moved.state == "detected" and moved.features[0].drifted
    # padding is no token: windows padded to the end move nothing
    padded = held_out.copy()
    padded[:, 64:] = 0
    assert not ref.detect({"tokens": padded}, {}).features[0].drifted


def test_a_categorical_input_gets_a_pooled_chisquare_beside_numeric_ones_and_mmd_on_those():
    rng = np.random.default_rng(0)
    spec = {
        "x": {"dtype": "float32", "shape": [-1, 2]},
        "colour": {"dtype": "int32", "shape": [-1], "names": [f"c{i}" for i in range(30)]},
    }
    shares = np.r_[np.full(5, 0.18), np.full(25, 0.1 / 25)]  # 25 rare categories
    train = {"x": rng.normal(size=(600, 2)), "colour": rng.choice(30, 600, p=shares)}
    ref = Reference(train, {}, spec, {})
    window = {"x": rng.normal(size=(60, 2)), "colour": rng.choice(30, 60, p=shares)}
    result = ref.detect(window, {}, multivariate=True, correction="bonferroni")
    colour = next(f for f in result.features if f.feature == "colour")
    assert colour.method == "chisquare_pooled" and colour.p_adjusted is not None
    assert not colour.drifted
    table = drift.pooled_counts(
        ref.categories["colour"], drift.category_values(window["colour"], spec["colour"])
    )
    assert stats.contingency.expected_freq(table).min() >= drift.MIN_EXPECTED
    assert colour.score == pytest.approx(stats.chi2_contingency(table, correction=False).statistic)
    assert result.multivariate is not None  # on x alone
    assert ref.features.shape[1] == 2 and ref.names == ["x[0]", "x[1]"]
    window["colour"] = rng.choice(30, 60, p=shares[::-1] / shares.sum())
    assert next(f for f in ref.detect(window, {}).features if f.feature == "colour").drifted
    # the server's dashboard histograms (numeric bins) leave a categorical input out
    assert ref.histograms(window, ["colour", "x[0]"]).keys() == {"x[0]"}


def test_drift_pictures_say_what_they_show():
    import matplotlib.pyplot as plt

    # A fresh user's trial: the forecasting map (96 x 3) was a strip 3 cells wide with its x
    # ticks run together and no axis labels; the class chart had no x label; the strength chart
    # said "288 of 288 features drifted" over 20 bars without saying they were the top 20.
    from ann.monitor import report

    rng = np.random.default_rng(0)
    spec = {"history": {"dtype": "float32", "shape": [-1, 96, 3]}}
    labels = {"label": {"dtype": "int32", "shape": [], "names": [str(i) for i in range(10)]}}
    ref = Reference(
        {"history": rng.normal(size=(300, 96, 3))},
        {"label": rng.integers(0, 10, 300)},
        spec,
        labels,
    )
    window, predicted = (
        {"history": rng.normal(size=(40, 96, 3)) + 1.0},
        {"label": rng.integers(0, 5, 40)},
    )
    result = ref.detect(window, predicted)
    summary, _, outputs = report.sections(result, ref, window, predicted, 1)
    ax = summary.figures["history_map"].axes[0]
    assert ax.get_images()[0].get_array().shape == (3, 96)  # the long axis along x
    assert ax.get_xlabel() and ax.get_ylabel()
    assert ax.get_aspect() == "auto"
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert outputs.figures["label"].axes[0].get_xlabel() == "predicted class"
    title = summary.figures["strength"]._suptitle.get_text()
    assert "of 288 features drifted" in title and f"top {report.SHOWN}" in title
    for section in (summary, outputs):
        for figure in section.figures.values():
            plt.close(figure)


def test_a_predicted_class_chart_of_many_classes_shows_the_most_changed_named():
    import matplotlib.pyplot as plt

    # The pydoc LM's next_token output (98 classes) drew 98 rotated names into one smear.
    from ann.monitor import report

    rng = np.random.default_rng(0)
    names = ["<pad>", "<unk>", *(chr(c) for c in range(32, 128))]
    spec = {"x": {"dtype": "float32", "shape": [-1, 1]}}
    out = {"next": {"dtype": "int32", "shape": [], "names": names}}
    ref = Reference({"x": rng.normal(size=(300, 1))}, {"next": rng.integers(2, 12, 300)}, spec, out)
    window, predicted = {"x": rng.normal(size=(40, 1))}, {"next": rng.integers(5, 15, 40)}
    result = ref.detect(window, predicted)
    (ax,) = report.sections(result, ref, window, predicted, 1)[2].figures["next"].axes
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert 0 < len(ticks) <= report.SHOWN and "<pad>" not in ticks  # held by neither side
    assert "predicted class" in ax.get_xlabel()
    plt.close("all")


def test_a_categorical_output_is_tested_per_class_as_categorical_inputs_are():
    # Predicted classes of more than 20 classes and more than 1,000 rows got Jensen-Shannon over
    # Sturges' ranges of class ids: classes 2k and 2k+1 trading their shares (a model that
    # now says "cat" where it said "dog") share a range, so it was "no drift" (JS 0.02). Each
    # class is its own category now, as for a categorical input, and tested_as says so.
    rng = np.random.default_rng(0)
    classes = 50
    spec = {"x": {"dtype": "float32", "shape": [-1, 1]}}
    out = {"label": {"dtype": "int32", "shape": [-1], "names": [f"c{i}" for i in range(classes)]}}
    shares = np.where(np.arange(classes) % 2, 1.0, 4.0)
    ref_labels = rng.choice(classes, 3000, p=shares / shares.sum())
    ref = Reference({"x": rng.normal(size=(3000, 1))}, {"label": ref_labels}, spec, out)
    swapped = rng.choice(classes, 2000, p=np.roll(shares, 1) / shares.sum())
    same = rng.choice(classes, 2000, p=shares / shares.sum())
    window = {"x": rng.normal(size=(2000, 1))}
    (moved,) = ref.detect(window, {"label": swapped}).outputs
    (clean,) = ref.detect(window, {"label": same}).outputs
    assert moved.method == clean.method == "jensenshannon"
    r, c = (np.bincount(x, minlength=classes) / len(x) for x in (ref_labels, swapped))
    assert moved.score == pytest.approx(spatial.distance.jensenshannon(r, c))
    assert moved.drifted and not clean.drifted, (moved, clean)
    tested = ref.detect(window, {"label": same}).tested_as["output:label"]
    assert tested.startswith("categorical: 50 classes, frequencies over rows")
    # A small window: the pooled chi-square of the class counts, as for an input.
    (small,) = ref.detect({"x": window["x"][:200]}, {"label": swapped[:200]}).outputs
    assert small.method == "chisquare_pooled" and small.drifted
    # A binary classifier's rare class, 1% of the reference and 10% of 100 rows: pooling
    # leaves one column (nothing to test), so the exact test judges it.
    binary = {"label": {"dtype": "int32", "shape": [-1], "names": ["no", "yes"]}}
    rare = Reference(
        {"x": rng.normal(size=(2000, 1))}, {"label": np.repeat([0, 1], [1980, 20])}, spec, binary
    )
    (found,) = rare.detect({"x": window["x"][:100]}, {"label": np.repeat([0, 1], [90, 10])}).outputs
    assert found.method == "fisher_exact" and found.drifted


def test_a_token_output_picture_draws_the_shares_of_its_tokens():
    # A seq2seq output's tokens ([rows, target_len], 17 names): np.bincount refused its 2-D
    # rows, so the drift report of a seq2seq export failed. Its tokens' shares are drawn now.
    import matplotlib.pyplot as plt

    from ann.monitor import report

    rng = np.random.default_rng(0)
    names = ["<pad>", "<bos>", "<eos>", *"0123456789", "reverse", "sort", "add", "x"]
    spec = {"x": {"dtype": "float32", "shape": [-1, 1]}}
    out = {"tokens": {"dtype": "int32", "shape": [-1, 8], "names": names}}
    ref = Reference(
        {"x": rng.normal(size=(300, 1))}, {"tokens": rng.integers(0, 13, (300, 8))}, spec, out
    )
    current = {"tokens": rng.integers(0, 10, (100, 8))}
    result = ref.detect({"x": rng.normal(size=(100, 1))}, current)
    (ax,) = report._output_figures(ref, current, result.outputs)["tokens"].axes
    assert ax.get_ylabel() == "share of tokens"
    heights = [p.get_height() for p in ax.patches]
    assert sum(heights) == pytest.approx(2.0)  # reference and current shares, each summing to 1
    plt.close("all")


def test_clean_next_tokens_are_not_flagged_and_moved_ones_are():
    # The pydoc LM's next_token output read p = 0.0046 on 100 clean test rows. Its test was the
    # chi-square of the sparse 2 x k table of ~50 predicted characters with a Monte Carlo p,
    # and the flagged windows were decided by characters the 1,265 validation rows predict 0-3
    # times (expected 0.07-0.4 in the window): one '=' or 'j' added 12.6 to the statistic.
    # A rare character's share is not known from a reference of a few dozen modules: rare
    # tokens come in bursts within a text (Church and Gale 1995), the rows are no independent
    # draws there. The 800-step LM's 40 random windows of 100 test rows: 8 flagged (consecutive
    # windows: 11); pooled as a categorical input's rare tokens are, 2 (1). Here the text
    # stands for a perfect model's predictions: each window's last character (the Monte Carlo
    # test: 8 of 40 windows flagged, the shift below found in 13 of 40; pooled: 1, 40).
    windows, vocabulary = _pydoc_windows()

    def next_characters(rows):  # each window's last character (padding is none)
        return rows[np.arange(len(rows)), (rows != 0).sum(1) - 1].astype(np.int64)

    spec = {"x": {"dtype": "float32", "shape": [-1, 1]}}
    out = {"next_token": {"dtype": "int32", "shape": [-1], "names": vocabulary}}
    reference = next_characters(windows["validation"])
    ref = Reference({"x": np.zeros((len(reference), 1))}, {"next_token": reference}, spec, out)
    test = next_characters(windows["test"])
    e, a = vocabulary.index("e"), vocabulary.index("a")
    rng = np.random.default_rng(0)
    alarms = found = 0
    for _ in range(SEEDS):
        window = test[rng.choice(len(test), 100, replace=False)]
        x = {"x": np.zeros((100, 1))}
        (clean,) = ref.detect(x, {"next_token": window}).outputs
        alarms += clean.drifted
        # A model that now says "a" where it said "e" (about 1 row in 10).
        (moved,) = ref.detect(x, {"next_token": np.where(window == e, a, window)}).outputs
        found += moved.drifted
    # measured: 0, 20 (against pydoc_chars 1.2.0's validation: 1, 20; the Monte Carlo test: 3, 6)
    assert alarms <= SEEDS // 10 and found >= SEEDS - 1, (alarms, found)
    assert clean.method == "chisquare_pooled"


def test_a_seq2seq_output_is_tested_on_its_tokens_without_the_padding():
    # seq2seq's tokens output is padded after <eos>, and its signature did not say so: drift
    # counted each pad as a token, a row's length (one event) as up to 8 independent draws, so
    # clean rows of digit_strings (validation against training targets) were flagged in 17 of
    # 100 windows of 30 rows (13 of 50 rows, 9 of 100). The signature says its padding now,
    # and drift leaves it out, as it does an input's: 7, 3, 2.
    import ml_collections

    from experiments.seq2seq import Seq2Seq

    train = data.load("digit_strings", "train", cache=True)
    experiment = Seq2Seq(ml_collections.ConfigDict({"task": {}}))
    experiment.setup(train)
    out = experiment.output_signature()
    assert out["tokens"]["padding"] == {"id": experiment.pad_id, "side": "right"}
    spec = {"x": {"dtype": "float32", "shape": [-1, 1]}}
    targets = train.rows(np.arange(5000))["target"]
    clean = _rows("digit_strings", "validation", "target")
    ref = Reference({"x": np.zeros((5000, 1))}, {"tokens": targets}, spec, out)
    assert "padding (id 0) excluded" in ref.tested_as()["output:tokens"]
    rng = np.random.default_rng(0)
    alarms = 0
    for _ in range(SEEDS):
        window = clean[rng.choice(len(clean), 30, replace=False)]
        (f,) = ref.detect({"x": np.zeros((30, 1))}, {"tokens": window}).outputs
        alarms += f.drifted
    assert alarms <= SEEDS // 10, alarms
    # The decoded tokens still count: a model that writes 7 for every 3 is found.
    names = out["tokens"]["names"]
    moved = np.where(window == names.index("3"), names.index("7"), window)
    (f,) = ref.detect({"x": np.zeros((30, 1))}, {"tokens": moved}).outputs
    assert f.drifted, f


def test_the_verdict_says_the_outputs_beside_it_and_the_reference_is_named():
    """The forecaster's drift report said `drift not detected` (its inputs: 14 of 288 features
    drifted) beside 72 of 72 drifted forecast values, and its pictures' legend said only
    "reference". The verdict is the inputs' (docs/monitor_reports.md: outputs are not in
    `state`); the headline, the page and report.json now say the outputs' count beside it, and
    the legend names the reference's split. A reference's outputs are the model's on its own
    input rows: outputs of other rows are refused."""
    import matplotlib.pyplot as plt

    from ann.monitor import report
    from ann.monitor.__main__ import summary

    rng = np.random.default_rng(0)
    spec = {"x": {"dtype": "float32", "shape": [-1, 1]}}
    out_spec = {"forecast": {"dtype": "float32", "shape": [-1, 4]}}
    ref = Reference(
        {"x": rng.normal(size=(300, 1))},
        {"forecast": rng.normal(size=(300, 4))},
        spec,
        out_spec,
        split="train",
    )
    window = {"x": rng.normal(size=(120, 1))}
    moved = {"forecast": rng.normal(size=(120, 4)) + 1.0}
    result = ref.detect(window, moved, correction="bonferroni")
    assert result.state == "not_detected" and all(f.drifted for f in result.outputs)
    assert result.verdict() == (
        "drift not detected (inputs); outputs, not in the verdict: 1 of 1 drifted (4 of 4 values)"
    )
    made = _drift_report(result, 60)
    assert made["result"]["outputs_drifted"] == 4 and made["result"]["reference_split"] == "train"
    first = summary(made, "r.json").splitlines()[0]
    assert first.startswith(
        "drift not detected: 0 of 1 input features drifted, bonferroni-corrected (share 0.00, "
        "dataset drift at >= 0.5); outputs, not in the verdict: 1 of 1 drifted (4 of 4 values) | "
        "120 rows from "
        "60 requests to m version 1 | 300 reference rows (train split)"
    ), first
    # The outputs, a family of 4 tests, are corrected as the inputs are.
    assert all(f.p_adjusted is not None for f in result.outputs)
    summary_section, _, outputs = report.sections(result, ref, window, moved, top=1)
    assert summary_section.metrics["verdict"] == result.verdict()
    # Said once, in the verdict (a row of its own repeated it).
    said = [k for k, v in summary_section.metrics.items() if "1 of 1 drifted" in str(v)]
    assert said == ["verdict"], said
    assert summary_section.metrics["reference"] == "train split"
    figure = next(iter(outputs.figures.values()))
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert legend == ["reference (train split)", "current"], legend
    plt.close("all")
    # No output tested: nothing said of outputs.
    bare = Reference({"x": rng.normal(size=(300, 1))}, {}, spec, {}).detect(window, {})
    assert bare.verdict() == "drift not detected (inputs)"
    with pytest.raises(ValueError, match="output 'forecast' holds 216 rows, its inputs 300"):
        Reference({"x": np.zeros((300, 1))}, {"forecast": np.zeros((216, 4))}, spec, out_spec)


def test_a_multivariate_test_that_disagrees_with_the_verdict_is_said_beside_it():
    # Two features each N(0, 1) in both, correlated +1 in the reference and -1 now: no feature
    # drifted alone, the MMD test rejected, and the headline said "drift not detected" alone.
    from ann.monitor.__main__ import summary

    rng = np.random.default_rng(0)
    spec = {"x": {"dtype": "float32", "shape": [-1, 2]}}
    a, b = rng.normal(size=(300, 1)), rng.normal(size=(120, 1))
    ref = Reference({"x": np.hstack([a, a])}, {}, spec, {})
    result = ref.detect({"x": np.hstack([b, -b])}, {}, multivariate=True)
    assert result.state == "not_detected" and result.multivariate.drifted
    assert result.verdict() == (
        "drift not detected (inputs); multivariate MMD, not in the verdict: drifted"
    )
    made = _drift_report(result, 120)
    first = summary(made, "r.json").splitlines()[0]
    assert first.startswith(
        "drift not detected: 0 of 2 input features drifted (share 0.00, dataset drift at >= "
        "0.5); multivariate MMD, not in the verdict: drifted | 120 rows"
    ), first
    agree = ref.detect({"x": np.hstack([b, b])}, {}, multivariate=True)
    assert agree.verdict() == "drift not detected (inputs)"  # it agrees: nothing beside


def test_an_output_of_many_values_prints_one_line():
    # An autoencoder's reconstruction (256 values) printed 256 lines under the verdict.
    from ann.monitor.__main__ import summary

    rng = np.random.default_rng(0)
    spec = {"x": {"dtype": "float32", "shape": [-1, 1]}}
    out = {"forecast": {"dtype": "float32", "shape": [-1, 6]}, "level": {"dtype": "float32",
           "shape": [-1, 2]}}  # fmt: skip
    ref = Reference(
        {"x": rng.normal(size=(300, 1))},
        {"forecast": rng.normal(size=(300, 6)), "level": rng.normal(size=(300, 2))},
        spec,
        out,
    )
    moved = rng.normal(size=(120, 6))
    moved[:, 2] += 3.0  # one value of six moves
    result = ref.detect(
        {"x": rng.normal(size=(120, 1))}, {"forecast": moved, "level": rng.normal(size=(120, 2))}
    )
    made = _drift_report(result, 120)
    lines = summary(made, "r.json").splitlines()
    forecast = [line for line in lines if "output:forecast" in line]
    assert len(forecast) == 1, lines
    assert forecast[0].startswith(
        "  output:forecast: 1 of 6 values drifted, DRIFT; most: output:forecast[2] ks "
    ) and forecast[0].endswith(" DRIFT"), forecast
    assert made["result"]["output_verdicts"] == {"output:forecast": True, "output:level": False}
    # An output of a few values keeps a line each.
    assert [line.split(":")[1] for line in lines if "output:level" in line] == [
        "level[0]", "level[1]"
    ]  # fmt: skip
    # The page: the output's row first, then its values, the most drifted first (they came in
    # index order, the drifted ones among them).
    from ann.monitor.report import outputs_table

    table = list(outputs_table(result.outputs, result.output_verdicts).items())
    assert table[0] == ("output:forecast", "1 of 6 values drifted, DRIFT; the most drifted first")
    assert table[1][0] == "output:forecast[2]" and table[1][1].endswith("DRIFT")
    assert [k for k, _ in table[-2:]] == ["output:level[0]", "output:level[1]"]


def test_an_output_of_many_values_drifts_with_its_family_error_bounded():
    # Uncorrected by default, a sensor autoencoder's 256-value reconstruction drifted in 17 of
    # 20 windows of 200 normal rows (each value at p <= 0.05), and a healthy window listed 40
    # values "DRIFT" under an output said "ok". Its values are a family, corrected by Bonferroni
    # where no --correction is given.
    rng = np.random.default_rng(0)
    spec = {"x": {"dtype": "float32", "shape": [-1, 1]}}
    out = {"r": {"dtype": "float32", "shape": [-1, 64]}}
    ref = Reference({"x": rng.normal(size=(400, 1))}, {"r": rng.normal(size=(400, 64))}, spec, out)
    x = {"x": rng.normal(size=(200, 1))}
    alarms = raw = 0
    for _ in range(SEEDS):
        result = ref.detect(x, {"r": rng.normal(size=(200, 64))})
        alarms += result.output_verdicts["output:r"]
        raw += any(f.p_value <= 0.05 for f in result.outputs)
        assert all(f.p_adjusted is not None for f in result.outputs)
    assert raw >= SEEDS // 2 and alarms <= SEEDS // 10, (raw, alarms)
    moved = rng.normal(size=(200, 64))
    moved[:, 5] += 1.0  # one value moved by one std
    result = ref.detect(x, {"r": moved})
    assert result.output_verdicts == {"output:r": True}
    assert [f.feature for f in result.outputs if f.drifted] == ["output:r[5]"]
    # Distances (no p to correct): the inputs' share rule.
    far = [drift.FeatureDrift(f"output:r[{i}]", "psi", d, None, 0.1, d >= 0.1)
           for i, d in enumerate([0.2] * 3 + [0.0] * 5)]  # fmt: skip
    assert not drift.output_drifted(far) and drift.output_drifted(far[:3] + far[:3] + far[3:5])
    # The headline counts outputs by their verdicts, the values after them.
    tests = [(f"output:r[{i}]", i < 3) for i in range(64)]
    assert drift.outputs_drifted(tests, {"output:r": False}) == "0 of 1 drifted (3 of 64 values)"


def test_an_output_of_many_values_is_corrected_as_one_family():
    # An embedding's 32 values are 32 tests; the correction reached the inputs only, so a clean
    # window showed a "drifted" embedding value most of the time (1 - 0.95^32 = 81%), whatever
    # --correction said. Each such output is now corrected as its own family.
    rng = np.random.default_rng(0)
    spec = {"x": {"dtype": "float32", "shape": [-1, 1]}}
    out = {"embedding": {"dtype": "float32", "shape": [-1, 32]}}
    ref = Reference(
        {"x": rng.normal(size=(1000, 1))}, {"embedding": rng.normal(size=(1000, 32))}, spec, out
    )
    alarms = found = raw = 0
    for _ in range(SEEDS):
        x, embedding = {"x": rng.normal(size=(50, 1))}, rng.normal(size=(50, 32))
        clean = ref.detect(x, {"embedding": embedding}, correction="bonferroni").outputs
        alarms += any(f.drifted for f in clean)
        raw += any(f.p_value < 0.05 for f in clean)
        embedding[:, 7] += 1.0  # one value moved by one std
        moved = ref.detect(x, {"embedding": embedding}, correction="bonferroni").outputs
        found += [f.feature for f in moved if f.drifted] == ["output:embedding[7]"]
    # measured: 16 windows with an uncorrected p < 0.05, 1 under the correction; found: 19
    assert raw >= SEEDS // 2 and alarms <= SEEDS // 10 and found >= SEEDS - 1, (raw, alarms, found)
    assert len(clean) == 32 and all(f.p_adjusted is not None for f in clean)
    # An output of one test is left as it is.
    labels = {"label": {"dtype": "int32", "shape": [-1], "names": ["a", "b", "c"]}}
    one = Reference(
        {"x": rng.normal(size=(300, 1))}, {"label": rng.integers(0, 3, 300)}, spec, labels
    )
    (f,) = one.detect(x, {"label": rng.integers(0, 3, 50)}, correction="bonferroni").outputs
    assert f.p_adjusted is None


def test_a_full_disk_under_the_request_log_is_one_line_naming_it(tmp_path, capsys):
    # Each sampled request printed logging's "--- Logging error ---" traceback ending
    # "OSError: [Errno 28] No space left on device", naming no file; nothing counted the lost
    # records. Now one warning naming --request_log, the records counted as dropped.
    import errno
    import os

    from ann.serve.request_log import RequestLog

    path = tmp_path / "requests.jsonl"
    log = RequestLog(str(path), sample=1.0, max_bytes=1 << 20, backups=0)

    class Full:
        def __init__(self, stream):
            self.stream = stream

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.stream, name)

    log._handler.stream = Full(log._handler.stream)
    for i in range(3):
        log.write("m", "1", f"r{i}", 200, 0.01, None)
    log.close()  # after the writer thread took every record
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"warning: --request_log={path}: no space left on device; records are dropped (counted "
        "in ann_request_log_dropped_total) until one can be written: free space on its file "
        "system"
    ], err
    assert log.dropped == 3


@pytest.mark.parametrize("method", ["auto", "psi", "ks", "wasserstein", "jensenshannon"])
def test_tested_as_and_the_summary_say_the_test_that_ran(method, tmp_path):
    """--method=psi printed `output:label: psi 0.01476 ok` and then `output:label: categorical:
    ...; chi-square (rare ones pooled) or Jensen-Shannon per class`, as did result.tested_as
    and index.html; --method=ks kept Jensen-Shannon for an LM's tokens without a word. Each
    categorical test's words now name the method that ran, and a method not used says so."""
    from ann.monitor import report
    from ann.monitor.__main__ import summary
    from experiments.common import spec as entry

    rng = np.random.default_rng(0)
    names = [f"t{i}" for i in range(8)]
    spec = {"x": {"dtype": "float32", "shape": [-1, 1]}, "tokens": entry("int32", [-1, 4], names)}
    out_spec = {
        "label": {"dtype": "int32", "shape": [-1], "names": ["a", "b", "c"]},
        "probabilities": {"dtype": "float32", "shape": [-1, 3]},
    }
    p = rng.dirichlet([5, 1, 1], 300).astype(np.float32)
    inputs = {"x": rng.normal(size=(300, 1)), "tokens": rng.integers(0, 8, (300, 4))}
    ref = Reference(inputs, {"label": p.argmax(-1), "probabilities": p}, spec, out_spec)
    window = {k: v[:100] for k, v in inputs.items()}
    outputs = {"label": p[:100].argmax(-1), "probabilities": p[:100]}
    result = ref.detect(window, outputs, method=method)
    ran = {f.feature: f.method for f in [*result.features, *result.outputs]}
    for name in ("tokens", "output:label"):
        said = result.tested_as[name]
        assert f"; {ran[name]}: " in said, (name, said)
        assert ran[name] == ("psi" if method == "psi" else "chisquare_pooled")
        assert ("(--method=" in said) == (method not in ("auto", "psi")), said
    confidence = result.tested_as["output:probabilities"]
    assert ran["output:probabilities"] == "ks" and "; ks" in confidence
    assert ("(--method=" in confidence) == (method not in ("auto", "ks")), confidence
    made = _drift_report(result, 100)
    lines = summary(made, "r.json").splitlines()
    assert f"  output:label: {result.tested_as['output:label']}" in lines
    assert f"  input tokens: {result.tested_as['tokens']}" in lines
    shown = f"  output:probabilities: {confidence}" in lines
    assert shown == (method not in ("auto", "ks")), lines
    summary_section = report.sections(result, ref, window, outputs, top=1)[0]
    assert summary_section.metrics["output:label"] == result.tested_as["output:label"]
    # Too few rows: nothing ran; the words are what the method would run.
    few = ref.detect({k: v[:3] for k, v in window.items()}, {}, method=method).tested_as
    assert ("psi: " in few["tokens"]) == (method == "psi"), few


def test_a_drifted_output_of_values_gets_its_picture():
    """A regression's drift report drew no picture of its drifted `output:prediction` (the
    summary and the top features only): an output tested value by value (a prediction, an
    embedding) now gets the histograms of its drifted values, titled with the verdict."""
    import matplotlib.pyplot as plt

    from ann.monitor import report

    rng = np.random.default_rng(0)
    spec = {"x": {"dtype": "float32", "shape": [-1, 1]}}
    out_spec = {
        "prediction": {"dtype": "float32", "shape": [-1]},
        "embedding": {"dtype": "float32", "shape": [-1, 3]},
    }
    outputs = {"prediction": rng.normal(size=300), "embedding": rng.normal(size=(300, 3))}
    ref = Reference({"x": rng.normal(size=(300, 1))}, outputs, spec, out_spec)
    moved = {"prediction": rng.normal(size=100) + 2, "embedding": rng.normal(size=(100, 3))}
    moved["embedding"][:, 1] += 2
    window = {"x": rng.normal(size=(100, 1))}
    result = ref.detect(window, moved)
    drifted = sorted(f.feature for f in result.outputs if f.drifted)
    assert drifted == ["output:embedding[1]", "output:prediction"], result.outputs
    figures = report.sections(result, ref, window, moved, top=6)[2].figures
    assert sorted(figures) == ["embedding[1]", "prediction"], figures
    title = figures["prediction"].axes[0].get_title()
    assert title.startswith("output:prediction: ks ") and title.endswith(" DRIFT"), title
    # An output of one value is drawn on a healthy window too (an anomaly score had no
    # picture unless it drifted); one of several values, only its drifted ones.
    healthy = {"prediction": rng.normal(size=100), "embedding": rng.normal(size=(100, 3))}
    result = ref.detect(window, healthy)
    assert not any(f.drifted for f in result.outputs), result.outputs
    figures = report.sections(result, ref, window, healthy, top=6)[2].figures
    assert sorted(figures) == ["prediction"], figures
    assert figures["prediction"].axes[0].get_title().endswith(" ok")
    plt.close("all")


def test_input_features_flagged_one_by_one_are_set_against_what_chance_flags():
    """On traffic like the reference's, about 5% of the input features are titled DRIFT (each
    tested alone at p <= 0.05) while the verdict says no drift: the page said nothing of it.
    The Top features section now says how many chance alone would flag."""
    import matplotlib.pyplot as plt

    from ann.monitor import report

    rng = np.random.default_rng(1)
    spec = {"x": {"dtype": "float32", "shape": [-1, 40]}}
    ref = Reference({"x": rng.normal(size=(400, 40))}, {}, spec, {})
    window = {"x": rng.normal(size=(200, 40))}
    result = ref.detect(window, {}, method="ks")
    flagged = sum(f.drifted for f in result.features)
    assert 0 < flagged < 20 and not result.detected, flagged
    notes = report.sections(result, ref, window, {}, top=1)[1].notes
    assert notes == [
        f"{flagged} of 40 features flagged DRIFT, each alone at p <= 0.05 (no correction): about "
        "2 of 40 would be on traffic like the reference's, by chance; the inputs' verdict is "
        "the share flagged (dataset drift at >= 0.5), not one feature's flag"
    ], notes
    # Corrected, the flags are the family's: no such note.
    result = ref.detect(window, {}, method="ks", correction="bonferroni")
    assert not report.sections(result, ref, window, {}, top=1)[1].notes
    # An output flagged alone is set against chance too (trial 46a: a clean window's
    # output:label at p=0.02 read "1 of 2 drifted" without a word).
    out_spec = {"score": {"dtype": "float32", "shape": [-1]}}
    scores = rng.normal(size=400)
    ref = Reference({"x": rng.normal(size=(400, 40))}, {"score": scores}, spec, out_spec)
    current = {"score": rng.normal(size=200) + 0.3}  # a small shift: KS flags it
    result = ref.detect(window, current, method="ks")
    assert result.outputs[0].drifted, result.outputs
    notes = report.sections(result, ref, window, current, top=1)[2].notes
    assert notes == [
        "1 of 1 outputs flagged DRIFT, each alone at p <= 0.05 (no correction): about 0.05 of 1 "
        "would be on traffic like the reference's, by chance"
    ], notes
    plt.close("all")


def test_a_categorical_input_gets_the_dashboards_share_series():
    """The pydoc LM's `tokens` had no ann_feature_bin_share_ratio series (the histograms were
    numeric bins only), so the dashboard's input-histogram panel stayed empty while tokens
    drifted (JS 0.31). A categorical input's bins are its categories that moved most, in id
    order, then the rest: each side sums to 1, the ordinal keeps them in order."""
    from ann.serve.monitoring import _window_drift, bin_names
    from experiments.common import spec as entry

    rng = np.random.default_rng(0)
    names = ["<pad>", " ", "\n", *"abcdefghijklmnopqrstuvwxyz"]
    spec = {
        "x": {"dtype": "float32", "shape": [-1, 1]},
        "tokens": entry("int32", [-1, 8], names, 0),
    }
    train = rng.integers(1, len(names), (400, 8))
    train[:, -2:] = 0  # padding: not a token
    ref = Reference({"x": rng.normal(size=(400, 1)), "tokens": train}, {}, spec, {})
    window = train[:100].copy()
    window[:, :3] = names.index("e")  # 'e' everywhere: drifted
    inputs = {"x": rng.normal(size=(100, 1)), "tokens": window}
    result, histograms = _window_drift(ref, inputs, {}, 25)
    assert next(f for f in result.features if f.feature == "tokens").drifted
    assert set(histograms) == {"tokens", "x[0]"}
    bins, reference, current = histograms["tokens"]
    assert len(bins) == 10 and bins == sorted(bins) and bins[-1] == "10 (others)", bins
    assert "05 'e'" not in bins and any(b.endswith(" e") for b in bins), bins
    assert "<pad>" not in " ".join(bins)
    assert reference.sum() == pytest.approx(1.0) and current.sum() == pytest.approx(1.0)
    e = next(i for i, b in enumerate(bins) if b.endswith(" e"))
    assert current[e] > 0.3 > reference[e]
    edges, *_ = ref.histograms(inputs, ["x[0]"])["x[0]"]
    assert histograms["x[0]"][0] == bin_names(edges)  # numeric: named by their ranges
    # Few categories: each its own bin, no "(others)"; a whitespace one quoted.
    small = {"tokens": entry("int32", [-1, 2], names[:4], 0)}
    few = Reference({"tokens": np.array([[1, 2], [3, 0]])}, {}, small, {})
    got = few.category_histograms({"tokens": np.array([[1, 1]])}, ["tokens", "x[0]"])
    assert list(got) == ["tokens"]
    assert got["tokens"][0] == ["01 ' '", "02 '\\n'", "03 a"], got


def test_the_logged_versions_are_listed_registry_numbers_by_number_then_hashes(tmp_path):
    # As text, version 10 came before 2 in report.json's requests.versions and the warnings.
    from ann.monitor.request_log import read_traffic

    spec = {"x": {"dtype": "float32", "shape": [-1, 2]}}
    log = tmp_path / "requests.jsonl"
    log.write_text(
        "".join(
            json.dumps({"model": "m", "version": v, "status": 200, "time": 1.0,
                        "inputs": {"x": {"shape": [1, 2], "data": [0, 0]}}}) + "\n"
            for v in ("3f2a9c0b1d4e", "10", "012345678901", "2")
        )
    )  # fmt: skip
    traffic = read_traffic([str(log)], "m", "7", spec, {})  # none of its version: all
    assert traffic.versions == ["2", "10", "012345678901", "3f2a9c0b1d4e"]


def test_each_report_kind_is_read_by_its_report_key_and_an_older_one_by_its_schema(tmp_path):
    """report.json says which command wrote it in `report` (docs/monitor_reports.md): a drift or
    performance report now carries an integer `schema_version` as `ann report`'s does, so the
    keys alone would read it as a model report, and `ann report --out` would replace it. A
    report written before (`schema` "ann.monitor.drift/2", ...) is still read by its keys."""
    from ann.cli import FlagError
    from ann.report.write import check_out

    reports = {
        "model report": [{"report": "model", "schema_version": 2, "splits": {}},
                         {"schema_version": 1, "splits": {}}],
        "drift report": [{"report": "drift", "schema_version": 3, "requests": {}},
                         {"schema": "ann.monitor.drift/2", "requests": {}}],
        "performance report": [{"report": "performance", "schema_version": 2, "requests": {}},
                               {"schema": "ann.monitor.performance/1", "requests": {}}],
    }  # fmt: skip
    for kind, written in reports.items():
        for i, report in enumerate(written):
            out = tmp_path / f"{kind.split()[0]}{i}"
            out.mkdir()
            (out / "report.json").write_text(json.dumps(report))
            check_out(str(out), kind)  # an earlier report of its own kind: replaced
            for other in set(reports) - {kind}:
                with pytest.raises(FlagError, match=f"holds a {kind} \\(report.json\\); choose"):
                    check_out(str(out), other)


def _drift_report(result, records: int) -> dict:
    """The report.json `ann monitor drift` writes for `result` (a DriftResult) over `records`
    requests to model m version 1, as `summary` reads it."""
    return {
        "model": {"name": "m", "version": "1"},
        "requests": {"files": ["a"], "records": records, "versions": ["1"], "served_as": None},
        "result": {**result.to_json(), "drift_share": 0.5},
        "figures": [],
    }


def test_a_histogram_goes_log_for_a_long_tail_not_for_one_stray_bar():
    # One stray row beside a bell curve switched its axis to log (the tallest bar was more
    # than 50 times the smallest); a long tail of low bars (faulty anomaly scores) needs it.
    import matplotlib.pyplot as plt

    from ann.monitor import report

    rng = np.random.default_rng(0)
    bell = rng.normal(size=2000)
    _, ax = plt.subplots()
    report._histogram(ax, bell, np.r_[rng.normal(size=199), 3.5])
    assert ax.get_yscale() == "linear"
    _, ax = plt.subplots()
    tail = np.r_[np.full(190, 0.05) + rng.normal(0, 0.005, 190), rng.uniform(0.1, 0.6, 10)]
    report._histogram(ax, np.full(300, 0.05) + rng.normal(0, 0.005, 300), tail)
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "density (log)"
    plt.close("all")
