"""`ann report`: the command end to end on a tiny digits run and on its registered export, its
one-line refusals, and the classification numbers against scikit-learn and hand computations."""

import base64
import copy
import json
import os
import re
import subprocess
import sys
import types

import ml_collections
import numpy as np
import pytest
import report_doc
from conftest import ROOT, one_line_error

from ann.report import collect
from ann.report.sections import classification

SECTIONS = (
    "per_class_metrics",
    "confusion_matrix",
    "roc_and_precision_recall",
    "calibration",
    "worst_confusions",
)


def ann_report(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ann", "report", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.fixture(scope="module")
def workdir_report(digits_export, tmp_path_factory):
    """`ann report --workdir` of the shared tiny digits CNN: (workdir, out, report.json)."""
    workdir, _ = digits_export
    out = tmp_path_factory.mktemp("report") / "report"
    result = ann_report(f"--workdir={workdir}", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "validation: accuracy" in result.stdout and "test: calibration: ECE" in result.stdout
    # The last line names what was written, pictures included (it named report.json, index.html).
    assert result.stdout.splitlines()[-1] == f"wrote {out}/report.json, index.html and 12 pictures"
    with open(out / "report.json") as f:
        return workdir, out, json.load(f)


def test_report_writes_json_html_and_pngs(workdir_report):
    workdir, out, report = workdir_report
    assert report["schema_version"] == 2
    assert report["model"] == {"kind": "workdir", "workdir": str(workdir), "step": 20}
    assert report["experiment"] == "classification"
    assert report["data"] == {
        "name": "digits",
        "splits": {"validation": "validation", "test": "test"},
    }
    for split, rows in (("validation", 216), ("test", 360)):
        values = report["splits"][split]
        assert values["rows"] == rows
        assert tuple(values["sections"]) == SECTIONS  # a binary model adds "threshold"
        assert values["notes"]
        # configs/digits_cnn.py's report.slices: per digit and per writer group
        assert set(values["slices"]) == {"slices_label", "slices_field_writer_group"}
    calibration = report["splits"]["test"]["sections"]["calibration"]
    assert calibration["temperature_fitted_on"] == "validation"
    assert (
        calibration["temperature"]
        == report["splits"]["validation"]["sections"]["calibration"]["temperature"]
    )
    assert sum(calibration["reliability_before"]["counts"]) == 360
    # Every picture is a PNG next to index.html and inlined in it, nothing fetched from elsewhere.
    pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    assert pngs == report["files"]["figures"] and len(pngs) == 12
    page = (out / "index.html").read_text()
    assert 'src="http' not in page and "href=" not in page
    # Nested metrics with a table's shape are tables (they were one collapsed JSON block):
    # per class (records by name), the worst confusions (a list of records), the ECE change.
    classes = report["splits"]["test"]["sections"]["per_class_metrics"]["classes"]
    assert (
        "<table><caption>classes</caption><tr><th></th><th>precision</th><th>recall</th>"
        f"<th>f1</th><th>support</th></tr><tr><td>0</td><td>{classes['0']['precision']:.4f}</td>"
    ) in page
    assert (
        "<caption>top</caption><tr><th>true</th><th>predicted</th><th>count</th><th>examples"
    ) in page
    assert "<caption>ece_change</caption><tr><th></th><th>value</th></tr><tr><td>low</td>" in page
    for name in pngs:
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert f'src="data:image/png;base64,{base64.b64encode(data).decode()}"' in page


def test_report_json_is_documented(workdir_report):
    """docs/report.md lists every key of the digits report, and the report holds every key the
    document says a classification report with slices always holds. A binary model's threshold
    section and a refused calibration (hand-made predictions) stand in for what 10 classes and a
    good fit never write."""
    report = copy.deepcopy(workdir_report[2])
    p1 = np.array([0.1, 0.3, 0.4, 0.6, 0.8, 0.9])
    binary = np.stack([1 - p1, p1], 1)
    validation = fake_predictions([0, 1, 0, 1, 1, 1], binary, "validation")
    test = fake_predictions([0, 1, 0, 1, 1, 1], binary, validation=validation)
    report["splits"]["test"]["sections"]["threshold"] = classification.thresholds(test).metrics
    one_class = fake_predictions([1, 1, 1], [[0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])
    refused = classification.calibration(one_class).metrics
    report["splits"]["validation"]["sections"]["calibration"] = refused
    assert report_doc.undocumented(report) == []
    none = copy.deepcopy(report)  # calibration none: its key is documented too
    test.config.calibration = "none"
    none["splits"]["test"]["sections"]["calibration"] = classification.calibration(test).metrics
    assert report_doc.undocumented(none) == []
    conditions = {"binary models", "binary models, test split", "when the fit is refused"}
    conditions |= {"when the fit succeeds", "unless calibration is none"}
    assert report_doc.missing(report, conditions | {"when there are errors"}) == []
    assert report_doc.missing(report, conditions | {"when the model has float outputs"}) == []
    # The check is not blind: a key the document does not list, one it lists that is gone.
    report["splits"]["test"]["sections"]["calibration"]["before"]["ece_percent"] = 1.1
    assert report_doc.undocumented(report) == [
        "splits.test.sections.calibration.before.ece_percent"
    ]
    del report["splits"]["validation"]["sections"]["per_class_metrics"]["macro_f1"]
    del report["splits"]["test"]["sections"]["per_class_metrics"]["macro_f1"]
    assert report_doc.missing(report) == ["splits.SPLIT.sections.per_class_metrics.macro_f1"]


def test_prediction_variance_is_zero_on_cpu(workdir_report):
    variance = workdir_report[2]["prediction_variance"]
    assert variance["runs"] == 3 and variance["rows"] == 216
    assert variance["max_abs_diff"] == 0.0 and variance["labels_changed"] == 0
    assert set(variance["by_output"]) == {"probabilities", "logits"}


def test_prediction_variance_sees_a_nondeterministic_model():
    """The check is not blind: noise in the outputs and a flipped label are both reported."""
    calls = iter(range(100))

    def noisy(inputs):
        n, k = len(inputs["x"]), next(calls)
        return {"score": np.full(n, 1e-3 * k, np.float32), "label": np.full(n, k % 2, np.int32)}

    experiment = types.SimpleNamespace(input_signature=lambda: {"x": {}})
    source = collect.Source({}, experiment, ml_collections.ConfigDict(), noisy, batch_size=4)
    variance = collect.prediction_variance(source, {"x": np.zeros((10, 2))})
    assert variance["rows"] == 10 and variance["labels_changed"] == 10
    # Each run is 3 batches (calls 0-2, 3-5, 6-8): run 3 differs from run 1 by 6e-3 everywhere.
    assert variance["max_abs_diff"] == pytest.approx(6e-3, rel=1e-4)


def test_per_class_metrics_equal_sklearn(workdir_report):
    """report.json's per-class numbers are scikit-learn's classification_report of the labels
    and of the argmax of the model's probabilities, recomputed here from the checkpoint."""
    from sklearn.metrics import classification_report

    workdir, _, report = workdir_report
    preds = collect.collect(collect.from_workdir(str(workdir)), "test")
    y_true = preds.rows["label"]
    y_pred = preds.outputs["probabilities"].argmax(-1)
    names = [str(c) for c in range(10)]
    want = classification_report(y_true, y_pred, target_names=names, output_dict=True)
    got = report["splits"]["test"]["sections"]["per_class_metrics"]
    for name in names:
        for key in ("precision", "recall", "f1"):
            assert got["classes"][name][key] == pytest.approx(
                want[name][f"{key}-score" if key == "f1" else key]
            )
        assert got["classes"][name]["support"] == want[name]["support"]
    assert got["accuracy"] == pytest.approx(want["accuracy"])
    assert got["macro_f1"] == pytest.approx(want["macro avg"]["f1-score"])
    matrix = np.array(report["splits"]["test"]["sections"]["confusion_matrix"]["matrix"])
    assert matrix.sum() == 360 and np.trace(matrix) == np.sum(y_true == y_pred)


def test_an_export_given_as_a_path_object_is_reported(digits_export, tmp_path):
    """`collect.from_model(pathlib.Path(...))` failed writing report.json (a PosixPath is no
    JSON) once the whole report was computed (trial 48a)."""
    from ann.report import write

    _, export_dir = digits_export
    written = write.write_report(collect.from_model(export_dir), ["validation"], tmp_path / "r")
    assert written["model"]["spec"] == str(export_dir)
    assert json.loads((tmp_path / "r" / "report.json").read_text())["model"]["spec"] == str(
        export_dir
    )


def test_registered_model_report_matches_the_run(workdir_report, digits_export, tmp_path):
    from ann.registry import Registry

    _, export_dir = digits_export
    registry = tmp_path / "registry"
    version = Registry(str(registry)).register(str(export_dir), "digits", aliases=["champion"])
    out = tmp_path / "out"
    result = ann_report(
        "--model=models:/digits@champion", f"--registry={registry}", "--split=test", f"--out={out}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    model = report["model"]
    assert (model["kind"], model["name"], model["version"]) == ("registry", "digits", 1)
    assert model["manifest_sha256"] == version.manifest_sha256 and model["path"] == version.path
    assert list(report["splits"]) == ["test"] and report["prediction_variance"]["max_abs_diff"] == 0
    assert report_doc.undocumented(report) == []
    exported = {"export, registry", "export, registry of class logits"}
    assert report_doc.missing(report, exported) == []
    # The exported graph scores the test split as the checkpoint does.
    run = workdir_report[2]["splits"]["test"]["sections"]
    got = report["splits"]["test"]["sections"]
    assert got["per_class_metrics"] == run["per_class_metrics"]
    assert got["confusion_matrix"] == run["confusion_matrix"]
    for key in ("ece", "nll", "brier"):
        assert got["calibration"]["before"][key] == pytest.approx(
            run["calibration"]["before"][key], abs=1e-6
        )
    assert got["calibration"]["temperature"] == pytest.approx(
        run["calibration"]["temperature"], rel=1e-4
    )
    # The export serves probabilities divided by the temperature its manifest records: those
    # score as the checkpoint's after scaling (the same T, fitted on the same validation logits).
    served = json.loads((export_dir / "manifest.json").read_text())["calibration"]["temperature"]
    assert got["calibration"]["served_temperature"] == pytest.approx(served)
    assert run["calibration"]["served_temperature"] == 1.0
    # Said in the summary: an export with and one without a temperature printed the same lines.
    assert model["calibration"] == {"method": "temperature", "temperature": served}
    # As export and index.html write it (the notes said 1.74 beside export's 1.736).
    assert f"\nserves softmax(logits / {served:.4g}) (calibration: temperature, " in result.stdout
    # Measured on validation's rows whatever --split says: the line says so (read as "test").
    assert (
        " rows of the validation split (read for every report, not only --split=validation)\n"
        in result.stdout
    )
    for key in ("ece", "nll"):
        assert got["calibration"]["served"][key] == pytest.approx(
            run["calibration"]["after"][key], abs=1e-5
        )


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give exactly one of --workdir"),
        (["--workdir=RUN", "--model=models:/x/1"], "both given"),
        (  # a real split, not a typo: it said "must be distinct names among ..."
            ["--workdir=RUN", "--split=train"],
            "--split=train: a report judges held-out rows, and the model was fit to train's; "
            "choose among validation, test",
        ),
        (["--workdir=RUN", "--split=test,test"], "must be distinct names"),
        (  # it said "unknown split ''; did you mean 'validation'?"
            ["--workdir=RUN", "--split=test,"],
            "error: `--split=test,` has an empty name after a comma; drop it",
        ),
        (["--workdir=NOWHERE"], "does not exist; give the directory of a trained run"),
        (["--workdir=RUN", "--step=last"], "--step='last' must be 'best', 'latest'"),
        (["--model=models:/x/1", "--step=3"], "--step applies to --workdir only"),
        (  # it was ignored without a word: read only to resolve --model
            ["--workdir=RUN", "--registry=NOREG"],
            "error: --registry=NOREG does nothing with --workdir (it resolves --model's "
            "models:/ URIs); drop it, or give --model=models:/NAME/VERSION in place of --workdir",
        ),
        (["--workdir=RUN", "--out=FILE"], "is a file, not a directory; choose another --out"),
        (["--workdir=RUN", "--out=OTHER"], "exists and is not an earlier report (no report.json)"),
        (["--model=EMPTY"], "holds no manifest.json"),
        (  # the restore's message, with the run's absolute path
            ["--workdir=RUN", "--step=999"],
            "--step=999: no checkpoint step 999 in RUN/checkpoints; steps there: ",
        ),
        (  # said only once JAX was imported and the run restored
            ["--model=models:/digits@champion", "--split=test", "--registry=NOREG"],
            "no registry at NOREG; give --registry=DIR (or $ANN_REGISTRY) of an existing one",
        ),
    ],
)
def test_bad_flags_are_one_line(args, message, digits_export, tmp_path):
    places = {
        "RUN": digits_export[0],
        "NOWHERE": tmp_path / "nowhere",
        "FILE": tmp_path / "file",
        "OTHER": tmp_path / "other",  # a directory of something else
        "EMPTY": tmp_path,
        "NOREG": tmp_path / "noreg",
    }
    (tmp_path / "file").write_text("not a report")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a report")
    filled = [
        f"{a.partition('=')[0]}={places.get(a.partition('=')[2], a.partition('=')[2])}"
        for a in args
    ]
    line = one_line_error(ann_report(*filled))
    for place in ("RUN", "NOREG"):
        message = message.replace(place, str(places[place]))
    assert message in line, line
    assert not os.path.exists(tmp_path / "nowhere")


def test_an_out_holding_another_runs_report_is_refused_before_jax(digits_export, tmp_path):
    # `--model=EXPORT --out=RUN/report` (the run's own report there) was refused only once the
    # model was loaded, 12 s in; `ann monitor drift` refuses its --out before importing JAX.
    out = tmp_path / "report"
    out.mkdir()
    earlier = {"schema_version": 1, "model": {"kind": "workdir", "workdir": "/elsewhere/run"}}
    (out / "report.json").write_text(json.dumps(earlier))
    probe = (
        "import sys\nfrom ann.__main__ import main\ntry:\n    main(['ann', *sys.argv[1:]])\n"
        "except SystemExit as e:\n    code = e.code\nprint('jax' in sys.modules, code)\n"
    )
    args = ["report", f"--model={digits_export[1]}", f"--out={out}"]
    result = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.stdout.split() == ["False", "1"], result.stderr[-2000:]
    assert result.stderr.startswith(
        f"error: --out={out} holds the report of run /elsewhere/run, not of model digits_cnn "
        "(manifest sha256 "
    ), result.stderr


# --- the sections on hand-made predictions ----------------------------------------------------


def fake_predictions(
    labels, probabilities, split="test", logits=None, validation=None, inputs=None
):
    probabilities = np.asarray(probabilities, np.float32)
    classes = probabilities.shape[1]
    experiment = types.SimpleNamespace(
        label_key="label", input_key="x", class_names=[f"c{i}" for i in range(classes)]
    )
    rows = {
        "label": np.asarray(labels),
        "x": inputs if inputs is not None else np.zeros((len(labels), 3)),
    }
    outputs = {
        "probabilities": probabilities,
        "label": probabilities.argmax(-1).astype(np.int32),
        "logits": np.log(probabilities) if logits is None else logits,
    }
    config = ml_collections.ConfigDict({"experiment": "classification"})
    return collect.Predictions(split, rows, outputs, experiment, config, validation=validation)


def test_binary_threshold_by_hand():
    # Class 1's probability per row, sorted; labels: 4 positives (rows 1, 3, 4, 5).
    p1 = np.array([0.1, 0.3, 0.4, 0.6, 0.8, 0.9])
    preds = fake_predictions([0, 1, 0, 1, 1, 1], np.stack([1 - p1, p1], 1))
    section = classification.thresholds(preds)
    # Recall >= 0.9 needs every positive: threshold 0.3 (rows 1..5 positive), precision 4/5.
    assert section.metrics["threshold"] == pytest.approx(0.3)
    assert section.metrics["precision"] == pytest.approx(0.8)
    assert section.metrics["recall"] == 1.0
    # The argmax (p1 > 0.5): rows 3, 4, 5, all positives: precision 1, recall 3/4.
    assert section.metrics["argmax_precision"] == 1.0
    assert section.metrics["argmax_recall"] == pytest.approx(0.75)
    assert classification.thresholds(fake_predictions([0, 1, 2], np.eye(3) * 0.7 + 0.1)) is None


def test_a_binary_headline_names_its_positive_class():
    # Breast cancer's class 1 is `benign`: "ROC AUC 0.9982 ... (positive class)" read as the
    # malignant class a user means.
    p1 = np.array([0.1, 0.3, 0.4, 0.6, 0.8, 0.9])
    preds = fake_predictions([0, 1, 0, 1, 1, 1], np.stack([1 - p1, p1], 1))
    preds.experiment.class_names = ["malignant", "benign"]
    section = classification.curves(preds)
    assert section.notes == ["ROC AUC 0.8750, average precision 0.9500 (positive class 'benign')"]
    assert section.metrics["kind"] == "positive class"  # report.json's value, as documented
    titles = [axes.get_title() for axes in section.figures["curves"].axes[:2]]
    assert titles == [
        "ROC (positive class 'benign', test)",
        "Precision-recall (positive class 'benign', test)",
    ]
    three = classification.curves(fake_predictions([0, 1, 2], np.eye(3) * 0.7 + 0.1))
    assert three.notes[0].endswith("(one-vs-rest)")


def test_worst_confusions_are_counted_and_drawn():
    # 2 -> 1 twice, 0 -> 2 once, every other row right; inputs are 8x8 "images".
    labels = [0, 1, 2, 2, 2, 0]
    predicted = [2, 1, 1, 1, 2, 0]
    probabilities = np.full((6, 3), 0.1)
    probabilities[np.arange(6), predicted] = 0.8
    probabilities[3, predicted[3]] = 0.7  # row 3 is the less confident 2 -> 1
    probabilities[3, [0, 2]] = 0.15
    preds = fake_predictions(labels, probabilities, inputs=np.zeros((6, 8, 8, 1), np.uint8))
    section = classification.confusions(preds)
    assert section.metrics["errors"] == 3
    assert section.metrics["top"] == [
        {"true": "c2", "predicted": "c1", "count": 2, "examples": [2, 3]},
        {"true": "c0", "predicted": "c2", "count": 1, "examples": [0]},
    ]
    assert list(section.figures) == ["examples"]
    assert section.notes == ["most frequent mistakes (3 in 2 pairs): c2 -> c1 (2x), c0 -> c2 (1x)"]


def test_confusions_say_how_many_pairs_are_not_shown(monkeypatch):
    """Pairs past the shown ones (here tied with the last shown) are counted, not dropped."""
    monkeypatch.setattr(classification, "TOP_CONFUSIONS", 2)
    labels = [0, 0, 1, 2, 2, 1]
    predicted = [1, 1, 0, 0, 1, 1]  # 0 -> 1 twice; 1 -> 0, 2 -> 0, 2 -> 1 once each
    probabilities = np.full((6, 3), 0.1)
    probabilities[np.arange(6), predicted] = 0.8
    section = classification.confusions(fake_predictions(labels, probabilities))
    assert section.metrics["pairs"] == 4
    assert section.notes == [
        "most frequent mistakes (5 in 4 pairs): c0 -> c1 (2x), c1 -> c0 (1x); "
        "2 more pairs, 1x each"  # it said "1x or fewer"
    ]
    monkeypatch.setattr(classification, "TOP_CONFUSIONS", 1)
    section = classification.confusions(fake_predictions(labels, probabilities))
    assert section.notes[0].endswith("c0 -> c1 (2x); 3 more pairs, at most 2x each")


def test_calibration_uses_the_validation_temperature():
    """An overconfident model (logits 4x too large): the temperature fitted on validation is
    near 4, and lowers the test split's ECE and NLL."""
    rng = np.random.default_rng(0)

    def split(name, rows, validation=None, overconfidence=4):
        true_logits = rng.normal(size=(rows, 3)) * 1.5
        labels = np.array([rng.choice(3, p=np.exp(z) / np.exp(z).sum()) for z in true_logits])
        logits = overconfidence * true_logits
        probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        return fake_predictions(labels, probabilities, name, logits, validation)

    validation = split("validation", 4000)
    test = split("test", 2000, validation)
    section = classification.calibration(test)
    metrics = section.metrics
    assert metrics["temperature_fitted_on"] == "validation"
    assert metrics["temperature"] == pytest.approx(4.0, rel=0.15)
    assert metrics["after"]["ece"] < metrics["before"]["ece"] / 2
    assert metrics["after"]["nll"] < metrics["before"]["nll"]
    assert list(section.figures) == ["reliability"]
    assert len(section.notes) == 1
    # The panel an export serves is marked: the temperature's, unless exported without one.
    titles = [axes.get_title() for axes in section.figures["reliability"].axes]
    assert titles[1].endswith(", as exported") and not titles[0].endswith(", as exported")
    # A split already calibrated: validation's T makes it underconfident. The report said only
    # "ECE a -> b" where export adds a note (the fit minimises NLL, not ECE).
    calibrated = classification.calibration(split("test", 2000, validation, overconfidence=1))
    rose = calibrated.metrics["after"]["ece"] > calibrated.metrics["before"]["ece"]
    assert rose and calibrated.notes[1].startswith("note: temperature scaling raised the test ECE")
    # The test split's note said "ann export --calibration=none serves softmax(logits)":
    # choosing on test. It is information; validation's own note is the one that offers it.
    assert "--calibration=none" not in calibrated.notes[1], calibrated.notes
    assert calibrated.notes[1].endswith(
        "; information only (validate to choose, test once): the calibration is chosen on "
        "validation"
    ), calibrated.notes
    # Validation's ECE raised by its own fit: 40 of 2,000 rows confidently wrong (logit 12)
    # pull T up to 1.7, which leaves the calibrated rest underconfident.
    logits = rng.normal(size=(2000, 3)) * 1.5
    labels = np.array([rng.choice(3, p=np.exp(z) / np.exp(z).sum()) for z in logits])
    logits[:40] = 0
    logits[np.arange(40), (labels[:40] + 1) % 3] = 12
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    wrong = fake_predictions(labels, probabilities, "validation", logits, None)
    on_validation = classification.calibration(wrong)
    assert on_validation.metrics["ece_change"]["low"] > 0, on_validation.notes
    assert on_validation.notes[1].endswith(
        "; on this validation evidence, ann export --calibration=none serves softmax(logits)"
    ), on_validation.notes
    assert calibrated.metrics["ece_change"]["low"] > 0
    # index.html's calibration tables wrote 4 significant digits ("0.009275", a change of
    # "0.001446") where the notes say "ECE 0.0093" and "a rise of 0.0014".
    from ann.report import html

    page = html._metrics_tables(calibrated.metrics)
    for when in ("before", "after"):
        for key in ("ece", "mce", "brier", "nll"):
            assert f"<td>{key}</td><td>{calibrated.metrics[when][key]:.4f}</td>" in page
    change = calibrated.metrics["ece_change"]
    assert f"<td>low</td><td>{change['low']:.4f}</td>" in page
    assert f"a rise of {change['low']:.4f} to {change['high']:.4f}" in calibrated.notes[1]
    # A rise within the ECE's sampling noise (300 rows, T = 1.38: ECE 0.088 -> 0.106, its
    # bootstrap interval holding 0) gets no note: it was told to drop the temperature.
    noisy = classification.calibration(
        split("test", 300, split("validation", 400, overconfidence=1.2), overconfidence=1)
    )
    change = noisy.metrics["ece_change"]
    assert noisy.metrics["after"]["ece"] > noisy.metrics["before"]["ece"]
    assert change["low"] < 0 < change["high"] and len(noisy.notes) == 1, noisy.notes
    # An export made with --calibration=none (its config says so) was told to use it.
    uncalibrated = split("test", 2000, validation, overconfidence=1)
    uncalibrated.config.calibration = "none"
    section = classification.calibration(uncalibrated)
    assert len(section.notes) == 1 and "--calibration=none" not in section.notes[0]


def test_under_calibration_none_no_temperature_is_fitted_or_shown():
    # A run trained (or an export made) with calibration=none serves softmax(logits), but the
    # summary said "ECE a -> b ... with temperature 1.5 (fitted on validation)", and report.json
    # held that temperature and its scores as if they were used.
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(300, 3)) * 4
    labels = rng.integers(0, 3, 300)
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    validation = fake_predictions(labels, probabilities, "validation", logits)
    test = fake_predictions(labels, probabilities, "test", logits, validation)
    test.config.calibration = "none"
    section = classification.calibration(test)
    before = section.metrics["before"]
    assert section.notes == [
        f"calibration: ECE {before['ece']:.4f}, NLL {before['nll']:.4f} of softmax(logits) "
        "(calibration none: no temperature fitted or applied)"
    ]
    for key in ("temperature", "after", "reliability_after", "ece_change", "temperature_fitted_on"):
        assert key not in section.metrics, key
    assert section.metrics["calibration"] == "none"
    assert section.metrics["served"]["ece"] == pytest.approx(before["ece"])  # what is served
    titles = [axes.get_title() for axes in section.figures["reliability"].axes[:1]]
    assert titles == [f"softmax(logits), calibration none (ECE {before['ece']:.4f}), as exported"]
    assert len(section.figures["reliability"].axes) == 2  # the diagram and its histogram


def test_a_reliability_bin_of_only_mistakes_is_drawn():
    """A bin with rows, all wrong (accuracy 0), must not look like an empty bin: its gap to
    the mean confidence is drawn; an empty bin draws nothing."""
    import matplotlib.pyplot as plt

    bins = types.SimpleNamespace(
        edges=[0.0, 1 / 3, 2 / 3, 1.0], counts=[0, 2, 5], accuracy=[0.0, 0.0, 1.0],
        confidence=[0.0, 0.5, 0.9],
    )  # fmt: skip
    figure, (axes, hist_axes) = plt.subplots(2)
    classification.reliability_axes(axes, hist_axes, bins, "t", classes=10)
    drawn = [p for p in axes.patches if p.get_height() != 0]
    covers = [sum(p.get_x() < x < p.get_x() + p.get_width() for p in drawn) for x in (0.2, 0.5)]
    plt.close(figure)
    assert covers[0] == 0 and covers[1] >= 1


def test_the_rows_panel_shows_every_filled_bin_with_plain_integer_ticks():
    """On a log axis whose floor sat at the smallest count, a bin of 2 rows was a sliver, and
    counts 2-64 were ticked 2x10^0, 3x10^0, ...: the floor is below 1, the ticks integers."""
    import matplotlib.pyplot as plt

    counts = [0, 0, 0, 0, 2, 3, 3, 4, 5, 7, 8, 6, 9, 6, 64]  # the trial's performance figure
    edges = np.linspace(0, 1, 16)
    bins = types.SimpleNamespace(
        edges=edges, counts=counts, accuracy=[0.5] * 15, confidence=[0.6] * 15
    )
    figure, (axes, hist_axes) = plt.subplots(2)
    classification.reliability_axes(axes, hist_axes, bins, "t", classes=10)
    figure.canvas.draw()
    low, high = hist_axes.get_ylim()
    labels = [t.get_text() for t in hist_axes.get_yticklabels() if t.get_text()]
    minor = [t.get_text() for t in hist_axes.get_yticklabels(minor=True) if t.get_text()]
    plt.close(figure)
    assert low < 1 and high > 64
    # the 2-row bar is a seventh of the panel's height at least, not a sliver
    assert np.log10(2 / low) / np.log10(high / low) > 1 / 7
    assert labels == ["1", "3", "10", "30"] and minor == [], (labels, minor)
    assert classification.count_ticks(340) == [1, 10, 100]
    assert classification.count_ticks(40) == [1, 2, 5, 10, 20]
    assert classification.count_ticks(1) == [1]


@pytest.mark.parametrize("classes, left, ticks", [
    (10, 1 / 15, ["1/10", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1"]),
    (2, 7 / 15, ["1/2", "0.6", "0.7", "0.8", "0.9", "1"]),
])  # fmt: skip
def test_the_confidence_axis_marks_its_floor_of_one_over_the_classes(classes, left, ticks):
    """The axis began at the edge of the bin holding 1/K (0.067 of 15 bins, 10 classes),
    unmarked, under ticks from 0.2: 1/K is its first tick, and the bin's part below it,
    which no top-class probability reaches, is shaded."""
    import matplotlib.pyplot as plt

    edges = np.linspace(0, 1, 16)
    bins = types.SimpleNamespace(edges=edges, counts=[1] * 15, accuracy=[0.5] * 15,
                                 confidence=[0.6] * 15)  # fmt: skip
    figure, (axes, hist_axes) = plt.subplots(2)
    classification.reliability_axes(axes, hist_axes, bins, "t", classes=classes)
    figure.canvas.draw()
    labels = [t.get_text() for t in hist_axes.get_xticklabels()]
    spans = [
        (p.get_x(), p.get_x() + p.get_width())
        for ax in (axes, hist_axes)
        for p in ax.patches
        if p.get_facecolor()[:3] == (0.9, 0.9, 0.9)
    ]
    plt.close(figure)
    assert hist_axes.get_xlim() == pytest.approx((left, 1))
    assert labels == ticks, labels
    assert np.allclose(spans, [(left, 1 / classes)] * 2), spans


def test_one_class_split_is_a_message_not_nan():
    preds = fake_predictions([1, 1, 1], [[0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])
    calibration = classification.calibration(preds)
    assert "error" in calibration.metrics and "2 classes" in calibration.notes[0]
    assert "temperature" not in calibration.metrics and "after" not in calibration.metrics
    curves = classification.curves(preds)
    assert curves.metrics["roc_auc"] == {} and curves.metrics["classes_without_curve"] == ["c1"]
    # One class or several, not "class(es)".
    assert curves.notes == ["no ROC curve for class c1: only one kind of row"]
    three = fake_predictions([0, 0], [[0.5, 0.3, 0.2], [0.6, 0.2, 0.2]])
    assert classification.curves(three).notes[-1] == (
        "no ROC curve for classes c0, c1, c2: only one kind of row"
    )
    threshold = classification.thresholds(preds)
    assert threshold.metrics["threshold"] is None


def test_curves_near_auc_1_get_a_close_up_of_their_corner():
    # At AUC ~1 (the digits CNN) every curve ran along two edges of the plot, unreadable.
    import matplotlib.pyplot as plt
    from matplotlib.inset import InsetIndicator

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 360)
    p = np.full((360, 10), 0.002)
    p[np.arange(360), labels] = 0.98
    p[:5] = 0.1
    p[np.arange(5), (labels[:5] + 1) % 10] = 0.5  # five confident mistakes
    good = classification.curves(fake_predictions(labels, p / p.sum(1, keepdims=True)))
    figure = good.figures["curves"]
    (roc,), (pr,) = (axes.child_axes for axes in figure.axes)
    # The box marks the corner; connector lines from it to the inset crossed the whole plot.
    boxes = [box for axes in figure.axes for box in axes.findobj(InsetIndicator)]
    assert len(boxes) == 2 and not any(c.get_visible() for b in boxes for c in b.connectors)
    plt.close(figure)
    assert -0.002 < roc.get_xlim()[0] < 0 and 0.01 <= roc.get_xlim()[1] <= 0.05, roc.get_xlim()
    assert 1 < pr.get_xlim()[1] == pr.get_ylim()[1] < 1.01 and pr.get_xlim()[0] >= 0.8
    assert len(roc.get_lines()) == 10  # every class's curve, not the chance line
    # Precision-recall drawn as the steps average precision sums, close up too.
    assert {line.get_drawstyle() for line in [*figure.axes[1].get_lines(), *pr.get_lines()]} == {
        "steps-post"
    }
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert any(t.endswith("(AUC 0.9997)") for t in legend), legend  # 1.000 hid it
    perfect = classification.curves(fake_predictions(labels, np.eye(10)[labels] * 0.9 + 0.01))
    figure = perfect.figures["curves"]
    assert [axes.child_axes for axes in figure.axes] == [[], []]  # an L in a box shows nothing
    plt.close(figure)
    blurred = rng.dirichlet(np.ones(10), 360)
    plain = classification.curves(fake_predictions(labels, blurred))
    figure = plain.figures["curves"]
    assert [axes.child_axes for axes in figure.axes] == [[], []]
    plt.close(figure)


def test_a_validation_split_without_mistakes_keeps_the_test_reliability_diagram():
    import matplotlib.pyplot as plt

    from ann.metrics import calibration as calibration_lib

    # Every validation row right (the breast-cancer MLP's 69): no temperature can be fitted. The
    # test split's section was the refusal alone, on its console line as if about test ("every
    # row is already right" of a split with mistakes), and the report had no reliability diagram.
    p1 = np.array([0.05, 0.1, 0.9, 0.95])
    validation = fake_predictions([0, 0, 1, 1], np.stack([1 - p1, p1], 1), "validation")
    p1 = np.array([0.2, 0.6, 0.4, 0.9, 0.7, 0.1])
    test = fake_predictions([0, 0, 1, 1, 1, 0], np.stack([1 - p1, p1], 1), validation=validation)
    section = classification.calibration(test)
    metrics = section.metrics
    assert metrics["error"].startswith("no temperature fitted on validation: "), metrics["error"]
    assert "temperature" not in metrics and "after" not in metrics
    assert sum(metrics["reliability_before"]["counts"]) == 6
    assert metrics["before"]["ece"] == pytest.approx(
        calibration_lib.summary(np.stack([1 - p1, p1], 1), np.array([0, 0, 1, 1, 1, 0]))["ece"]
    )
    assert section.notes[0].startswith("calibration: ECE ") and "on validation" in section.notes[0]
    figure = section.figures["reliability"]
    titles = [axes.get_title() for axes in figure.axes if axes.get_title()]
    # A binary model's top-class probability is at least 0.5: the axis starts at the bin
    # holding 0.5 (7/15), not at 0, where half the diagram was always empty.
    assert [axes.get_xlim() for axes in figure.axes] == [(7 / 15, 1)] * 2
    plt.close(figure)
    assert titles == [
        f"softmax(logits), no temperature fitted (ECE {metrics['before']['ece']:.4f})"
    ]


def test_a_calibration_fit_without_an_optimum_is_a_short_line_its_detail_in_report_json():
    import matplotlib.pyplot as plt

    # The breast-cancer MLP's line was one ~300-character sentence ("no temperature minimises
    # the NLL inside T in 0.01..100: it falls as T falls, to 0 nats already at T=0.0161 ...")
    # on each split; report.json's `error` keeps it, the line says the reason in a few words.
    p1 = np.array([0.05, 0.1, 0.9, 0.95])
    validation = fake_predictions([0, 0, 1, 1], np.stack([1 - p1, p1], 1), "validation")
    test = fake_predictions([0, 1, 1, 0], np.stack([1 - p1, p1], 1), validation=validation)
    notes = {}
    for preds in (validation, test):
        section = classification.calibration(preds)
        plt.close(section.figures["reliability"])
        assert "it falls as T falls" in section.metrics["error"]
        (notes[preds.split],) = section.notes
    tail = "; no temperature fitted on validation: every row is already right"
    assert notes["validation"].endswith(f"{tail} (more in report.json's calibration error)")
    assert notes["test"].endswith(tail)  # the pointer to the detail said once
    assert max(map(len, notes.values())) < 150, notes


def test_scores_documented_in_0_1_stay_there_in_report_json(monkeypatch, tmp_path):
    # Nine positives ranked first: scikit-learn's average precision, a sum of nine 1/9 steps,
    # is 1.0000000000000002, and report.json said so under a documented range of [0, 1].
    from sklearn.metrics import average_precision_score

    from ann.report import write

    labels, p1 = np.array([1] * 9 + [0] * 4), np.linspace(0.95, 0.05, 13)
    assert average_precision_score(labels, p1) > 1  # the rounding this test is about
    preds = fake_predictions(labels, np.stack([1 - p1, p1], 1), "validation")
    monkeypatch.setattr(write.collect, "collect", lambda *args: preds)
    source = types.SimpleNamespace(config=preds.config)
    report = {"splits": {}}
    shown, _, _ = write._report_splits(source, ["validation"], str(tmp_path), report)
    curves = report["splits"]["validation"]["sections"]["roc_and_precision_recall"]
    assert curves["average_precision"] == {"c1": 1.0}
    assert curves["macro_average_precision"] == 1.0 and curves["roc_auc"] == {"c1": 1.0}
    for section in shown["validation"]:  # index.html's tables show the same numbers
        if section.key == "roc_and_precision_recall":
            assert section.metrics["macro_average_precision"] == 1.0


def test_the_default_out_names_an_export_by_its_served_version():
    # An export directory's report went to ./report-NAME; `ann serve` and `ann monitor drift`
    # name the same export NAME version <the manifest's first 12 hex digits>.
    from ann.report.__main__ import default_out

    sha = "0123456789abcdef" * 4
    export = {"kind": "export", "name": "digits_cnn", "version": None, "manifest_sha256": sha}
    assert default_out(export) == "report-digits_cnn-0123456789ab"
    registry = {**export, "kind": "registry", "name": "digits", "version": 3}
    assert default_out(registry) == "report-digits-3"
    assert default_out({"kind": "workdir", "workdir": "/runs/a"}) == "/runs/a/report"
    # A run's report is named by the workdir as given, so the printed paths are the user's.
    assert default_out({"kind": "workdir", "workdir": "/x/runs/a"}, "runs/a") == "runs/a/report"


def test_a_registered_copy_is_named_as_ann_serve_names_it(digits_export, tmp_path):
    # A copy of registry/artifacts/digits/1 (with its registry.json) was reported as
    # digits_cnn, version null, into report-digits_cnn-<sha>; `ann serve`, `ann monitor` call
    # it digits/1.
    import shutil

    from ann import artifact
    from ann.registry import Registry, resolve
    from ann.report.__main__ import default_out

    version = Registry(str(tmp_path / "registry")).register(str(digits_export[1]), "digits")
    copy_dir = shutil.copytree(version.path, tmp_path / "copy1")
    resolved = resolve(str(copy_dir))
    manifest, raw = artifact.read_manifest_bytes(resolved.path, None)
    sha = artifact.sha256_bytes(raw)
    model = types.SimpleNamespace(name=manifest["name"], manifest_sha256=sha, manifest=manifest)
    identity = collect.model_identity(str(copy_dir), resolved, model)
    assert (identity["name"], identity["version"]) == ("digits", 1)
    assert resolved.served_name(manifest["name"], sha) == ("digits", "1")
    assert default_out(identity) == "report-digits-1"


def test_a_model_report_and_a_drift_report_do_not_replace_each_other(tmp_path):
    # Both write report.json: `ann monitor drift --out=RUN/report` silently replaced the model
    # report there, and the reverse.
    from ann.cli import FlagError
    from ann.report.write import check_out

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "report.json").write_text('{"schema_version": 1, "splits": {}}')
    (tmp_path / "drift").mkdir()
    (tmp_path / "drift" / "report.json").write_text('{"schema": 1, "requests": {}}')
    check_out(str(tmp_path / "model"))  # an earlier report of its own kind: replaced
    check_out(str(tmp_path / "drift"), "drift report")
    with pytest.raises(FlagError, match=r"holds a drift report \(report.json\); choose another"):
        check_out(str(tmp_path / "drift"))
    with pytest.raises(FlagError, match=r"holds a model report \(report.json\); choose another"):
        check_out(str(tmp_path / "model"), "drift report")
    # A file of the user's beside an earlier report went when the report was written again.
    (tmp_path / "drift" / "index.html").write_text("")
    (tmp_path / "drift" / "drift_summary_strength.png").write_text("")
    check_out(str(tmp_path / "drift"), "drift report")
    (tmp_path / "drift" / "mine.txt").write_text("keep")
    with pytest.raises(FlagError, match=re.escape(
        f"--out={tmp_path / 'drift'} holds files a report does not write (mine.txt), and a new "
        "report replaces the directory whole; move them out, or choose another --out"
    )):  # fmt: skip
        check_out(str(tmp_path / "drift"), "drift report")


def test_a_users_own_experiment_is_refused_in_one_line_before_restoring(tmp_path, monkeypatch):
    # README's Parity experiment without its report_sections: `ann report` restored the run,
    # then raised a ValueError traceback.
    from conftest import tiny
    from test_models import readme_file

    from ann import config as config_lib
    from ann.config import ConfigError
    from ann.report import collect
    from ann.train.checkpoint import CheckpointError

    (tmp_path / "mytasks.py").write_text(readme_file("mytasks.py"))
    (tmp_path / "plain.py").write_text(
        "import mytasks\n"
        "Parity = type('Parity', (), {k: v for k, v in vars(mytasks.Parity).items()"
        " if k != 'report_sections'})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config_lib.write(tiny(experiment="plain:Parity"), str(tmp_path))  # no checkpoint at all
    with pytest.raises(ConfigError) as e:
        collect.from_workdir(str(tmp_path))  # a restore would raise CheckpointError
    assert str(e.value).startswith(
        "ann report has sections for ann's experiments (anomaly_detection, classification, "
    ) and "not for 'plain:Parity', which defines no report_sections(preds); define it" in str(
        e.value
    )
    config_lib.write(tiny(experiment="mytasks:Parity"), str(tmp_path))
    with pytest.raises(CheckpointError):  # README's, which has them: on to the restore
        collect.from_workdir(str(tmp_path))


def test_a_recorded_experiment_that_does_not_import_here_names_the_export_or_run(
    tmp_path, monkeypatch
):
    # `ann report --model=EXPORT` of an export of a user's experiment, its project off
    # PYTHONPATH, said "config key 'experiment': cannot import ...": the user gave no config.
    from types import SimpleNamespace

    from conftest import tiny

    from ann import config as config_lib
    from ann import experiment as experiment_lib
    from ann import registry
    from ann.config import ConfigError
    from ann.report import collect
    from ann.train.build import restore_model

    config = tiny(experiment="faraway_tasks:Parity")
    run = tmp_path / "run"
    config_lib.write(config, str(run))
    fix = (
        "whose module does not import here (no module named 'faraway_tasks'); put the directory "
        "of its project on PYTHONPATH (PYTHONPATH=/path/to/project before the command, or "
        "PYTHONPATH=. from that directory)"
    )
    trained = f"was trained with experiment 'faraway_tasks:Parity', {fix}"
    for load in (collect.from_workdir, restore_model):  # ann report --workdir, export, generate
        with pytest.raises(ConfigError) as e:
            load(str(run))
        assert str(e.value) == f"the run in {run} {trained}"
    export = tmp_path / "export"
    loaded = SimpleNamespace(manifest={"config": config.to_dict()})
    resolved = SimpleNamespace(path=str(export), load=lambda: loaded)
    monkeypatch.setattr(registry, "resolve", lambda spec, where=None: resolved)
    with pytest.raises(ConfigError) as e:
        collect.from_model(str(export))
    assert str(e.value) == f"the export at {export} {trained}"
    with pytest.raises(ConfigError) as e:
        collect.from_model("models:/parity/1")
    assert str(e.value) == f"models:/parity/1 (the export at {export}) {trained}"
    # A config the user gives still names its key.
    with pytest.raises(ConfigError, match="^config key 'experiment': cannot import 'faraway"):
        experiment_lib.get(config.experiment)


@pytest.mark.parametrize(
    "returned, message",
    [
        ({"accuracy": 0.9}, "returned dict, not a list of ann.report.sections.Section"),
        ([("Parity", 0.9)], "returned a list of tuple, not a list of ann.report.sections.Section"),
        # Each failed deep in the writing (a traceback), or quietly (notes a character a line,
        # the second section of a title replacing the first).
        ([("Parity", {"m": object()}, {}, [])], "section 'Parity': metrics must be JSON-able"),
        ([("Parity", {}, {"p": "fig.png"}, [])], "section 'Parity': figures must map names to "),
        ([("Parity", {}, {}, "accuracy 0.9")], "section 'Parity': notes must be a list of "),
        ([("Parity", {}, {}, []), ("Parity", {}, {}, [])], "section 'Parity': expected a title "),
    ],
)
def test_a_users_report_sections_that_cannot_be_written_is_one_line(returned, message):
    from types import SimpleNamespace

    from ann.config import ConfigError
    from ann.report import sections

    if isinstance(returned, list) and returned and len(returned[0]) == 4:
        returned = [sections.Section(*fields) for fields in returned]
    preds = SimpleNamespace(
        experiment=SimpleNamespace(report_sections=lambda preds: returned),
        config=SimpleNamespace(experiment="mytasks:Parity"),
    )
    with pytest.raises(ConfigError) as e:
        sections._users_sections(preds)
    assert str(e.value).startswith(
        "experiment 'mytasks:Parity': report_sections(preds) returned"
    ) and message in str(e.value), str(e.value)
    fine = [sections.Section("Parity", {"accuracy": np.float32(0.5), "n": np.arange(2)})]
    preds.experiment.report_sections = lambda preds: fine
    # NumPy values are taken, as Python numbers and lists for report.json and index.html (the
    # page's table failed on a float32 after the check had let it by).
    [shown] = sections._users_sections(preds)
    assert shown.metrics == {"accuracy": 0.5, "n": [0, 1]}
    assert type(shown.metrics["accuracy"]) is float
    from ann.report import html

    assert "<td>accuracy</td><td>0.5000</td>" in html._metrics_tables(shown.metrics)


def test_the_header_says_what_an_export_serves():
    from ann.report.write import header

    def lines(calibration, kind="export"):
        report = {
            "experiment": "classification",
            "data": {"name": "digits", "splits": {"test": "test"}},
            "model": {"kind": kind, "manifest_sha256": "ab" * 32, "calibration": calibration},
            "prediction_variance": {"max_abs_diff": 0.0, "runs": 3, "rows": 216},
        }
        return header(report)[2:-1]

    assert lines({"method": "none", "temperature": 1.0}) == [
        "serves softmax(logits) (calibration: none)"
    ]
    assert lines({"method": None, "temperature": 1.0}) == [
        "serves softmax(logits) (calibration: none)"  # exported before calibration
    ]
    assert lines({"method": "temperature", "temperature": 1.2687}) == [
        "serves softmax(logits / 1.269) (calibration: temperature, fitted on validation at export)"
    ]
    assert lines(None, kind="workdir") == []  # a checkpoint serves nothing


def test_a_report_of_another_run_or_model_is_not_replaced(workdir_report, tmp_path):
    # `ann report --workdir=runs/a --out=runs/b/report` silently replaced run b's report.
    import shutil

    from ann.cli import FlagError
    from ann.report.write import check_out

    workdir, out, report = workdir_report
    other = shutil.copytree(workdir, tmp_path / "other")
    before = (out / "report.json").read_bytes()
    result = ann_report(f"--workdir={other}", f"--out={out}")
    assert one_line_error(result) == (
        f"error: --out={out} holds the report of run {workdir}, not of run {other}; choose "
        f"another --out, or delete {out} to replace it"
    )
    assert (out / "report.json").read_bytes() == before
    check_out(str(out), source={**report["model"], "step": 3})  # the same run: replaced
    model = {"kind": "export", "name": "digits", "manifest_sha256": "ab" * 32}
    # Each named: "not of this one" was said of a model as of a run (trial 46b).
    said = f"holds the report of run {workdir}, not of model digits (manifest sha256 ababab"
    with pytest.raises(FlagError, match=re.escape(said)):
        check_out(str(out), source=model)
    # A copied run's own WORKDIR/report (naming the run it was copied from) stays its own.
    shutil.copytree(out, other / "report")
    check_out(str(other / "report"), source={"kind": "workdir", "workdir": str(other)})


def test_the_summary_counts_one_picture_in_the_singular(monkeypatch):
    # `ann report` said "... and 1 pictures".
    from ann.report import write

    monkeypatch.setattr(write, "title", lambda report, workdir=None: "ann report: RUN")
    monkeypatch.setattr(write, "header", lambda report: [])
    cases = ((["a.png"], "1 picture"), (["a.png", "b.png"], "2 pictures"), ([], "no picture"))
    for figures, said in cases:  # and "0 pictures"
        report = {"splits": {}, "files": {"figures": figures}}
        assert write.summary(report, "OUT").endswith(f"index.html and {said}")


def test_a_figure_named_as_its_section_is_not_named_twice():
    # "MAE by horizon"'s figure mae_by_horizon was test_mae_by_horizon_mae_by_horizon.png.
    from ann.report.html import figure_file
    from ann.report.sections import Section

    section = Section(title="MAE by horizon", metrics={})
    assert figure_file("test", section, "mae_by_horizon") == "test_mae_by_horizon.png"
    assert figure_file("test", section, "naive") == "test_mae_by_horizon_naive.png"


def test_the_precision_recall_step_has_no_drop_at_recall_1_and_the_confusion_colorbar_a_label():
    # A vertical line at recall 1 fell to the base rate: scikit-learn's curve ends with the
    # threshold that flags every row (recall 1, precision = the base rate), which average
    # precision gives no weight. And the confusion matrix's colorbar had no label.
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.2).astype(int)
    score = np.clip(labels * 0.3 + rng.random(400) * 0.7, 0, 1)
    preds = fake_predictions(labels, np.stack([1 - score, score], 1))
    figure = classification.curves(preds).figures["curves"]
    (line,) = figure.axes[1].get_lines()
    recall, precision = line.get_xdata(), line.get_ydata()
    assert len(np.unique(recall)) == len(recall)  # one point per recall: no vertical drops
    at_1 = precision[recall == 1]
    assert len(at_1) == 1 and at_1[0] > labels.mean() + 0.05
    plt.close(figure)
    figure = classification.confusion(preds).figures["heatmap"]
    colorbar = [axes for axes in figure.axes if axes is not figure.axes[0]]
    assert [axes.get_ylabel() for axes in colorbar] == ["rows"]
    plt.close(figure)


def test_two_reports_to_one_new_out_at_once(tmp_path, monkeypatch):
    # `ann report --out=X` twice at once: the second's rename failed with a traceback ending
    # "OSError: [Errno 39] Directory not empty". Now the second checks X again: a report of
    # its own kind and source is replaced (as a later rerun's would be), another refused.
    import shutil

    from ann.cli import FlagError
    from ann.report.write import check_out, replace_directory

    out = tmp_path / "out"
    real_rename = os.rename

    def other_writer(kind):
        raced = []

        def rename(src, dst):
            if dst == str(out) and not raced:
                raced.append(dst)
                out.mkdir()
                (out / "report.json").write_text(json.dumps(kind))
            return real_rename(src, dst)

        return rename

    def staged(name):
        tmp = tmp_path / name
        tmp.mkdir()
        (tmp / "report.json").write_text('{"schema_version": 1, "splits": {}}')
        return str(tmp)

    monkeypatch.setattr(os, "rename", other_writer({"schema_version": 1, "splits": {}}))
    replace_directory(staged(".report-a"), str(out), lambda: check_out(str(out)))
    assert json.loads((out / "report.json").read_text()) == {"schema_version": 1, "splits": {}}
    shutil.rmtree(out)
    monkeypatch.setattr(os, "rename", other_writer({"schema": 1, "requests": {}}))
    with pytest.raises(FlagError, match=r"holds a drift report \(report.json\); choose another"):
        replace_directory(staged(".report-b"), str(out), lambda: check_out(str(out)))
    assert json.loads((out / "report.json").read_text()) == {"schema": 1, "requests": {}}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".report-b", "out"]  # its caller's


def test_write_report_and_from_workdir_check_their_arguments_as_ann_report_does(
    digits_export, tmp_path
):
    """From Python, `write_report` wrote into an export and into a run's checkpoints/ (`ann
    report --out` refuses both), and ["tst"] said "the run has no tst split (data.eval_splits
    is empty)" of a run whose eval_splits is ['test']; `from_workdir` took a float step and
    any workdir. Now `ann report`'s checks, in the functions' words, before anything is done."""
    from ann.report import write

    run, export = digits_export
    source = collect.Source({"kind": "workdir", "workdir": str(run), "step": 20}, None, None,
                            lambda batch: batch, 1)  # fmt: skip
    refused = [
        (["tst"], "out", "splits=tst: unknown split 'tst'; did you mean 'test'? (splits: "),
        (["test", "test"], "out", "splits='test,test' must be distinct names among"),
        (["test"], f"{export}/rep", f"out={export}/rep is inside an export at {export}"),
        (["test"], f"{run}/checkpoints/rep", f"out={run}/checkpoints/rep is inside"),
    ]
    for splits, out, message in refused:
        with pytest.raises(ValueError) as e:
            write.write_report(source, splits, str(tmp_path / out) if out == "out" else out)
        assert message in str(e.value) and "--" not in str(e.value), str(e.value)
    for arguments, message in [
        ((None, ["test"], "out"), "source: expected a collect.Source"),
        ((source, "test", "out"), "splits: expected a list of split names"),
        ((source, ["test"], None), "out: expected the report's directory"),
    ]:
        with pytest.raises(TypeError, match=message):
            write.write_report(*arguments)
    config = ml_collections.ConfigDict({"data": {"validation_split": "v", "eval_splits": ["t"]}})
    with pytest.raises(ValueError, match="^split 'tst' must be one of validation, test$"):
        collect.split_of(config, "tst")
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=f"^workdir={missing} does not exist"):
        collect.from_workdir(str(missing))
    with pytest.raises(ValueError, match="^step='bestt' must be 'best', 'latest' or a step"):
        collect.from_workdir(str(run), "bestt")
    with pytest.raises(TypeError, match="^step: expected 'best', 'latest' or a step number"):
        collect.from_workdir(str(run), 1.5)
    # A step from a NumPy array of steps is its int (np.int64(30) was refused: trial 48a).
    from ann.cli import step_argument

    assert step_argument(np.int64(30)) == 30 and type(step_argument(np.int64(30))) is int
    with pytest.raises(TypeError, match="^workdir: expected a training run's directory"):
        collect.from_workdir(None)
    assert not list(tmp_path.iterdir()) and not (export / "rep").exists()
    assert not (run / "checkpoints/rep").exists()


def test_a_confusion_matrix_is_a_table_on_the_page():
    # It was JSON in the collapsed "all values" block, one number a line, while the README says
    # a section's numbers are tables.
    from ann.report import html

    page = html._metrics_tables({"labels": ["cat", "dog"], "matrix": [[5, 1], [2, 7]]})
    assert "<caption>matrix (rows: true class, columns: predicted class)</caption>" in page
    assert "<th>true \\ predicted</th><th>cat</th><th>dog</th>" in page
    assert "<tr><td>dog</td><td>2</td><td>7</td></tr>" in page and "all values" not in page
    # Not a square matrix of its labels: as before.
    assert "all values" in html._metrics_tables({"labels": ["a"], "matrix": [[1, 2]]})


def test_a_pictures_alt_text_says_what_it_shows_not_its_file_name(tmp_path):
    # alt="test_mae_by_horizon.png": a screen reader spelt the file out (trial 47d).
    from ann.report import html
    from ann.report.sections import Section

    (tmp_path / "test_error_by_target_decile.png").write_bytes(b"\x89PNG")
    (tmp_path / "test_calibration_reliability.png").write_bytes(b"\x89PNG")
    sections = [Section("Error by target decile", {}), Section("Calibration", {})]
    figures = {"test": {"error_by_target_decile": ["test_error_by_target_decile.png"],
                        "calibration": ["test_calibration_reliability.png"]}}  # fmt: skip
    page = open(html.write_index(str(tmp_path), "t", [], {"test": sections}, figures)).read()
    alts = re.findall(r'alt="([^"]*)"', page)
    assert alts == ["test: Error by target decile", "test: Calibration: calibration reliability"]
