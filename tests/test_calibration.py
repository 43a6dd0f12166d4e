"""Calibration metrics against hand computations and scikit-learn; temperature scaling."""

import json
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import one_line_error, tiny
from scipy.special import softmax
from sklearn import calibration as skc
from sklearn import metrics as sk

from ann import artifact, calibrate, data
from ann import config as config_lib
from ann.config import ConfigError
from ann.metrics import calibration as cal
from ann.train.build import restore_model

# Four rows, three classes; confidences 0.9 (right), 0.8 (wrong), 0.5 (right), 0.4 (wrong).
HAND_P = np.array(
    [[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.2, 0.5, 0.3], [0.4, 0.35, 0.25]], np.float64
)
HAND_Y = np.array([0, 1, 1, 2])


def test_metrics_match_hand_computation():
    # 4 bins with edges exact in binary: 0.5 sits on an edge and belongs to (0.25, 0.5].
    r = cal.reliability(HAND_P, HAND_Y, bins=4)
    np.testing.assert_array_equal(r.counts, [0, 2, 0, 2])
    np.testing.assert_allclose(r.confidence[[1, 3]], [0.45, 0.85])
    np.testing.assert_allclose(r.accuracy[[1, 3]], [0.5, 0.5])
    assert np.isnan(r.confidence[0]) and r.to_json()["confidence"][0] is None
    assert cal.ece(HAND_P, HAND_Y, bins=4) == pytest.approx(0.5 * 0.05 + 0.5 * 0.35)  # not 0.4
    assert cal.mce(HAND_P, HAND_Y, bins=4) == pytest.approx(0.35)
    # Per class: 0.325 (class 0), 0.25 (class 1), 0.225 (class 2; 0.25 on an edge, bin 0).
    assert cal.classwise_ece(HAND_P, HAND_Y, bins=4) == pytest.approx(0.8 / 3)
    assert cal.brier(HAND_P, HAND_Y) == pytest.approx((0.015 + 1.46 + 0.38 + 0.845) / 4)
    assert cal.nll(HAND_P, HAND_Y) == pytest.approx(-np.log([0.9, 0.1, 0.5, 0.25]).mean())


def _random(seed, rows, classes):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    logits = rng.normal(size=(rows, classes)) + 2.0 * np.eye(classes)[labels]
    return softmax(logits, axis=1), labels


@pytest.mark.parametrize("classes", [2, 5])
def test_metrics_match_scikit_learn(classes):
    p, y = _random(classes, 400, classes)
    # Top class: calibration_curve of "prediction right" against the confidence.
    r = cal.reliability(p, y)
    want_acc, want_conf = skc.calibration_curve(
        p.argmax(1) == y, p.max(1), n_bins=cal.BINS, strategy="uniform"
    )
    np.testing.assert_allclose(r.accuracy[r.counts > 0], want_acc)
    np.testing.assert_allclose(r.confidence[r.counts > 0], want_conf)
    # One class's probability against [label == c].
    r1 = cal.reliability(p, y, class_index=1)
    want_acc, want_conf = skc.calibration_curve(y == 1, p[:, 1], n_bins=cal.BINS)
    np.testing.assert_allclose(r1.accuracy[r1.counts > 0], want_acc)
    np.testing.assert_allclose(r1.confidence[r1.counts > 0], want_conf)
    want_brier = (
        sk.brier_score_loss(y, p[:, 1])
        if classes == 2
        else sk.brier_score_loss(y, p, labels=range(classes))
    )
    assert cal.brier(p, y) == pytest.approx(want_brier)
    assert cal.nll(p, y) == pytest.approx(sk.log_loss(y, p, labels=range(classes)))
    got = cal.summary(p, y)
    assert got["ece"] == pytest.approx(r.ece) and got["brier"] == pytest.approx(want_brier)


def test_confidences_of_exactly_0_and_1_fall_in_the_end_bins():
    # A saturated float32 softmax gives exactly 1.0 and 0.0.
    p = softmax(np.array([[200.0, 0.0], [0.0, 200.0], [200.0, 0.0]], np.float32), axis=1)
    assert p.max() == 1.0 and p.min() == 0.0
    y = np.array([0, 1, 1])
    r = cal.reliability(p, y)
    assert r.counts[-1] == 3 and r.counts[:-1].sum() == 0
    assert r.accuracy[-1] == pytest.approx(2 / 3) and cal.ece(p, y) == pytest.approx(1 / 3)
    r1 = cal.reliability(p, y, class_index=1)
    np.testing.assert_array_equal(r1.counts[[0, -1]], [2, 1])
    want_acc, want_conf = skc.calibration_curve(y == 1, p[:, 1], n_bins=cal.BINS)
    np.testing.assert_allclose(r1.accuracy[r1.counts > 0], want_acc)
    np.testing.assert_allclose(r1.confidence[r1.counts > 0], want_conf)
    assert np.isfinite(cal.nll(p, y))  # the wrong row's 0 is clipped, as log_loss does
    assert cal.nll(p, y) == pytest.approx(sk.log_loss(y, p))


def test_bad_inputs_raise_one_clear_line_not_nan():
    with pytest.raises(ValueError, match="but class 2 has no rows"):  # was "class(es) 2 have"
        cal.classwise_ece(HAND_P[:3], HAND_Y[:3])
    with pytest.raises(ValueError, match="at least 2 classes"):
        cal.ece(np.ones((3, 1)), np.zeros(3, int))
    with pytest.raises(ValueError, match="at least 2 classes"):
        cal.fit_temperature(np.random.default_rng(0).normal(size=(5, 3)), np.zeros(5, int))
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        cal.brier(HAND_P, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="sums to"):
        cal.nll(HAND_P * 1.1, HAND_Y)
    with pytest.raises(ValueError, match="NaN"):
        cal.ece(np.where(HAND_P > 0.85, np.nan, HAND_P), HAND_Y)
    with pytest.raises(ValueError, match="integers"):
        cal.ece(HAND_P, HAND_Y.astype(float))
    with pytest.raises(ValueError, match="no rows"):
        cal.ece(np.zeros((0, 3)), np.zeros(0, int))
    with pytest.raises(ValueError, match="logits look like probabilities"):
        cal.fit_temperature(HAND_P, HAND_Y)
    for error in ValueError, cal.CalibrationError:
        with pytest.raises(error):
            cal.mce(HAND_P, HAND_Y[:2])


def test_temperature_scaling_fixes_an_overconfident_model_and_keeps_argmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2000, 4)) * 2.0
    # Labels drawn from softmax(logits): these logits are calibrated; times 5, overconfident.
    cumulative = softmax(logits, axis=1).cumsum(1)
    labels = np.minimum((cumulative < rng.random((2000, 1))).sum(1), 3)
    over = logits * 5.0
    t = cal.fit_temperature(over, labels)
    assert 4.0 < t < 6.0
    before, after = cal.softmax(over), cal.softmax(over, t)
    np.testing.assert_array_equal(before.argmax(1), after.argmax(1))
    assert cal.ece(after, labels) < cal.ece(before, labels) / 3
    assert cal.nll(after, labels) < cal.nll(before, labels)
    # The fitted T is the NLL minimum: nudging it either way costs.
    for other in (t * 0.95, t * 1.05):
        assert cal.scaled_nll(over, labels, other) > cal.scaled_nll(over, labels, t)


def test_the_ece_change_interval_tells_a_real_rise_from_sampling_noise():
    """The paired bootstrap interval of ECE(T) - ECE(1): above 0 where a temperature makes
    calibrated logits underconfident (T = 3), around 0 for T = 1.05 on 300 rows, where the
    ECE still moves; exactly 0 for T = 1; seeded, so the same inputs give the same interval."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(300, 4)) * 2.0
    cumulative = softmax(logits, axis=1).cumsum(1)
    labels = np.minimum((cumulative < rng.random((300, 1))).sum(1), 3)
    low, high = cal.ece_change_interval(logits, labels, 3.0)
    assert 0 < low < high
    low, high = cal.ece_change_interval(logits, labels, 1.05)
    assert low < 0 < high
    assert cal.ece(cal.softmax(logits, 1.05), labels) != cal.ece(cal.softmax(logits), labels)
    assert cal.ece_change_interval(logits, labels, 1.0) == (0.0, 0.0)
    assert cal.ece_change_interval(logits, labels, 1.05) == (low, high)
    with pytest.raises(cal.CalibrationError, match="at least 2 rows"):
        cal.ece_change_interval(logits[:1], labels[:1], 2.0)


def test_a_fit_without_interior_optimum_is_refused():
    # Every row right by a wide margin: NLL falls without end as T -> 0, and in float64 it is 0
    # below some T, where the search stops: it said "found no NLL optimum inside T in 0.01..100
    # (stopped at T=0.088)", a T inside the range, as if that were the fault.
    logits = np.array([[5.0, 0.0], [0.0, 5.0], [6.0, 1.0]])
    inside = "no temperature minimises the NLL inside T in 0.01..100: it falls as T"
    right = ": every row is already right, so sharper is always better"
    with pytest.raises(ValueError) as e:
        cal.fit_temperature(logits, np.array([0, 1, 0]))
    assert re.fullmatch(
        re.escape(f"{inside} falls, to 0 nats already at T=") + r"0\.[0-9]+"
        + re.escape(" (float64 rounds each row's probability of its label to 1), no lower down "
                    f"to 0.01{right}"),
        str(e.value),
    ), str(e.value)  # fmt: skip
    # Right by small margins: the NLL still falls at the low end, which is named.
    with pytest.raises(ValueError) as e:
        cal.fit_temperature(logits / 1000, np.array([0, 1, 0]))
    assert str(e.value) == f"{inside} falls, to 0.474 nats at T=0.01, the range's low end{right}"
    # Every row wrong with confidence (a collapsed model): the fit stops at the large end, and
    # was said to have every row right.
    with pytest.raises(ValueError) as e:
        cal.fit_temperature(logits, np.array([1, 0, 1]))
    assert str(e.value) == (
        f"{inside} rises, to 0.718 nats at T=100, the range's high end: the model's ranking of "
        "the classes is no better than chance on this split (a collapsed or untrained model), "
        "so uniform probabilities are best"
    )


# --- at export: fitted on the validation split, folded into the graph --------------------------


def test_export_folds_the_validation_temperature_into_the_graph(digits_export):
    workdir, out = digits_export
    model = artifact.load(str(out))
    entry = model.manifest["calibration"]
    t = entry["temperature"]
    experiment, trained, _, config = restore_model(str(workdir), "best")
    logits, labels = calibrate.split_logits(experiment, trained, config, "validation")
    assert entry["method"] == "temperature" and entry["fitted_on"]["rows"] == len(labels)
    assert t == pytest.approx(cal.fit_temperature(logits, labels), rel=1e-5)
    assert abs(t - 1) > 0.05  # else the checks below could not tell calibrated from not
    # The training code's calibrated probabilities are what the export serves; argmax unchanged.
    x = {"image": data.load("digits", "test", cache=True).rows(np.arange(64))["image"]}
    raw = np.asarray(jax.device_get(experiment.logits(trained, x)))
    got = model(x)
    np.testing.assert_allclose(got["probabilities"], softmax(raw / t, axis=1), rtol=1e-5, atol=1e-6)
    assert not np.allclose(got["probabilities"], softmax(raw, axis=1), rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(got["label"], raw.argmax(1))
    # Before/after on both splits, as recomputed here; the fit cannot raise validation NLL.
    val = entry["metrics"]["validation"]
    assert set(entry["metrics"]) == {"validation", "test"}
    for key, value in cal.summary(softmax(logits, axis=1), labels).items():
        assert val["before"][key] == pytest.approx(value, rel=1e-5), key
    assert val["before"]["nll"] == pytest.approx(model.manifest["metrics"]["val/loss"], rel=1e-4)
    assert val["after"]["nll"] <= val["before"]["nll"]
    test_logits, test_labels = calibrate.split_logits(experiment, trained, config, "test")
    after = cal.summary(cal.softmax(test_logits, t), test_labels)
    assert entry["metrics"]["test"]["after"]["ece"] == pytest.approx(after["ece"], rel=1e-5)


def test_export_says_the_fit_is_to_nll_and_notes_a_split_whose_ece_rose(digits_export):
    _, out = digits_export
    entry = artifact.load(str(out)).manifest["calibration"]
    # stdout is the result line alone (the summary and notes were on it, read by a script);
    # they are on stderr, after whatever else ann export said there.
    assert len((out.parent / "export.stdout").read_text().splitlines()) == 1
    said = (out.parent / "export.stderr").read_text().splitlines()
    printed = ["", *said[-len(calibrate.summary_lines(entry)) :]]
    assert printed[1:] == calibrate.summary_lines(entry), said
    val, test = entry["metrics"]["validation"], entry["metrics"]["test"]
    assert printed[1].startswith(f"calibration: temperature {entry['temperature']:.4g}, fitted")
    assert "to the NLL of validation" in printed[1]
    assert f"test {test['before']['ece']:.4f} -> {test['after']['ece']:.4f}" in printed[1]
    # A split whose ECE rose gets a note naming it. Only validation's names the way back to
    # softmax(logits): test's said "to export softmax(logits) instead, export again with
    # --calibration=none", choosing the calibration on the test split (validate to choose,
    # test once).
    same = {"ece": 0.02, "mce": 0.1, "brier": 0.01, "nll": 0.05}
    worse = {"before": same, "after": {**same, "ece": 0.03}}
    rose = {**entry, "metrics": {"validation": {"before": same, "after": same}, "test": worse}}
    lines = calibrate.summary_lines(rose)
    assert len(lines) == 2 and lines[1].startswith("note: temperature scaling raised the test ECE")
    assert "0.0200 -> 0.0300" in lines[1] and "--calibration=none" not in lines[1]
    assert lines[1].endswith(
        "; information only (validate to choose, test once): the calibration is chosen on "
        "validation, where it did not raise the ECE beyond its noise (ECE 0.0200 -> 0.0200, "
        "NLL 0.0500 -> 0.0500), so this export keeps it"
    ), lines[1]
    both = calibrate.summary_lines({**rose, "metrics": {"validation": worse, "test": worse}})
    assert both[1].startswith("note: temperature scaling raised the validation ECE"), both
    assert both[1].endswith(
        "; on this validation evidence, to export softmax(logits) instead, export again with "
        "--calibration=none"
    )
    assert both[2].endswith("the calibration is chosen on validation (the note above)"), both
    assert len(calibrate.summary_lines({**rose, "metrics": {"test": val}})) == 1
    # A rise the ECE's own noise explains (its bootstrap interval holds 0) is no reason to
    # export softmax(logits) instead: no note; one beyond it names the interval.
    noise = {**worse, "ece_change": {"low": -0.004, "high": 0.021, "confidence": 0.95}}
    assert len(calibrate.summary_lines({**rose, "metrics": {"test": noise}})) == 1
    real = {**worse, "ece_change": {"low": 0.002, "high": 0.018, "confidence": 0.95}}
    (_, line) = calibrate.summary_lines({**rose, "metrics": {"test": real}})
    assert "a rise of 0.0020 to 0.0180 at 95% by a paired bootstrap of the rows" in line
    assert set(test["ece_change"]) == {"low", "high", "confidence"}
    none = {"method": "none", "metrics": {"validation": {"before": same}}}
    assert calibrate.summary_lines(none) == [
        "calibration: none (softmax of the logits); ECE validation 0.0200"
    ]


def _run_validated_on(digits_export, tmp_path, split):
    """A copy of the digits run whose config.json names `split` as its validation split."""
    workdir, _ = digits_export
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    values = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(
        json.dumps({**values, "data": {**values["data"], "validation_split": split}})
    )
    return run


def test_calibration_none_and_a_fit_that_fails(digits_export, tmp_path):
    # One validation row: one class, no temperature to fit: one line, nothing written.
    run = _run_validated_on(digits_export, tmp_path, "validation[:1]")

    def export_cli(out, *flags):
        command = [sys.executable, "-m", "ann.export", f"--workdir={run}", f"--out={out}"]
        return subprocess.run([*command, *flags], capture_output=True, text=True, timeout=300)

    line = one_line_error(export_cli(tmp_path / "bad"))
    # It ended "...; or export softmax(logits) uncalibrated with --calibration=none", an "or"
    # after a reason, not after a first fix.
    assert "at least 2 classes" in line and line.endswith(
        "; export softmax(logits) uncalibrated instead with calibration='none' (--calibration=none)"
    ), line
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".export-*"))
    # The fix the line names, on the command line: the run's config.json was the only way.
    exported = export_cli(tmp_path / "export", "--calibration=none")
    assert exported.returncode == 0, exported.stderr[-2000:]
    manifest = artifact.load(str(tmp_path / "export")).manifest
    entry = manifest["calibration"]
    assert entry["method"] == "none" and entry["temperature"] == 1.0
    assert entry["fitted_on"] is None  # it named the validation split, though nothing was fitted
    assert manifest["config"]["calibration"] == "none"  # the export says what it did
    assert json.loads((run / "config.json").read_text())["calibration"] == "temperature"
    assert set(entry["metrics"]["validation"]) == {"before"}  # nothing was fitted
    experiment, trained, _, _ = restore_model(str(run), "best")
    x = {"image": data.load("digits", "test", cache=True).rows(np.arange(16))["image"]}
    raw = np.asarray(jax.device_get(experiment.logits(trained, x)))
    got = artifact.load(str(tmp_path / "export"))(x)["probabilities"]
    np.testing.assert_allclose(got, softmax(raw, axis=1), rtol=1e-5, atol=1e-6)


def test_a_validation_split_all_right_exports_uncalibrated_with_a_warning(digits_export, tmp_path):
    # The shipped breast_cancer_mlp has every validation row right: no T minimises the NLL,
    # and its export stopped there, by default (trial 48a). It exports uncalibrated now, says
    # so, and its manifest records why, as `ann report` says of such a split.
    run = _run_validated_on(digits_export, tmp_path, "validation[:12]")
    command = [sys.executable, "-m", "ann.export", f"--workdir={run}", f"--out={tmp_path / 'e'}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    warned = [line for line in result.stderr.splitlines() if "no temperature fitted" in line]
    assert len(warned) == 1, result.stderr[-2000:]
    assert warned[0].startswith("warning: no temperature fitted on 'validation[:12]': ")
    assert "every row is already right" in warned[0]
    assert warned[0].endswith(
        "; the export serves softmax(logits) uncalibrated (its manifest's calibration.method "
        "'none')"
    )
    manifest = artifact.load(str(tmp_path / "e")).manifest
    entry = manifest["calibration"]
    assert manifest["config"]["calibration"] == "none"  # what it serves, as --calibration=none
    assert entry["method"] == "none" and entry["temperature"] == 1.0 and entry["fitted_on"] is None
    assert entry["why"] == "no temperature fitted on 'validation[:12]': every row is already right"
    assert set(entry["metrics"]["validation"]) == {"before"}


def test_config_calibration_is_a_choice():
    config = tiny("digits_cnn", calibration="platt")
    with pytest.raises(ConfigError, match="'calibration' is 'platt'; choose one of temperature"):
        config_lib.validate(config, 1)
