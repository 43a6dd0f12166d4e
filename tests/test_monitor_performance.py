"""`ann monitor performance`: late labels joined offline to the request logs of every replica
give the realized accuracy the servers' live feedback joins give, per replica and together;
ECE and the reliability diagram of the joined rows; too few rows; one-line refusals."""

import json
import os
import re

import numpy as np
import pytest
import report_doc
from conftest import one_line_error
from test_cli import ann
from test_serve import Server, infer_body, request

from ann import artifact, data
from ann.cli import FlagError
from ann.metrics import calibration
from ann.monitor import __main__ as monitor_main
from ann.monitor import performance
from ann.monitor.feedback import read_labels
from ann.monitor.request_log import RequestLogError, read_requests


@pytest.fixture(scope="module")
def replicas(digits_export, tmp_path_factory):
    """Two servers of the digits export, each with its own request log (two replicas behind a
    balancer that alternates), traffic sent to both, and every label posted to both feedback
    routes; yields the logs, the labels file, the replies and what was sent."""
    _, out = digits_export
    root = tmp_path_factory.mktemp("replicas")
    logs = [root / "a.jsonl", root / "b.jsonl"]
    servers = [
        Server([f"--model={out}", "--max_batch_size=8", "--monitor_min_labels=1",
                f"--request_log={log}", "--request_log_sample=1"])
        for log in logs
    ]  # fmt: skip
    model = artifact.load(str(out))
    path = f"/v2/models/{model.name}"
    rows = data.load("digits", "test", cache=True).rows(np.arange(150))
    x, y = rows["image"], rows["label"]
    predicted = model({"image": x})["label"]
    names = model.outputs["label"]["names"]
    try:
        for server in servers:
            server.wait_ready()
        ports = [s.port for s in servers]

        def infer(replica, images, request_id=None):
            extra = {"id": request_id} if request_id is not None else {}
            status, _, reply = request(
                ports[replica], "POST", path + "/infer", infer_body(images, **extra)
            )
            return status, reply

        labels = []
        for i in range(100):  # one row a request, alternating replicas
            assert infer(i % 2, x[i : i + 1], f"r{i}")[0] == 200
            label = int(y[i]) if i % 3 else names[int(y[i])]  # by index and by class name
            labels.append({"id": f"r{i}", "label": label})
        for k, i in enumerate(range(100, 140, 8)):  # 8 rows a request
            assert infer(k % 2, x[i : i + 8], f"m{k}")[0] == 200
            labels.append({"id": f"m{k}", "label": y[i : i + 8].tolist()})
        # One id sent twice to replica 0: its latest prediction is the one a label joins.
        first, then = next(
            (i, j) for i in range(140, 150) for j in range(140, 150) if predicted[i] != predicted[j]
        )
        assert infer(0, x[first : first + 1], "again")[0] == 200
        assert infer(0, x[then : then + 1], "again")[0] == 200
        labels.append({"id": "again", "label": int(predicted[then])})
        assert infer(1, x[140:141])[0] == 200  # no id: no join key
        bad = infer_body(x[:1], id="broken")
        bad["inputs"][0]["shape"] = [1, 64]  # refused (400), logged with its id
        assert request(ports[1], "POST", path + "/infer", bad)[0] == 400
        labels += [
            {"id": "r0", "label": 3},  # a duplicate: the first label counts
            {"id": "never-sent", "label": 1},
            {"id": "broken", "label": 1},
        ]
        (root / "labels.jsonl").write_text("".join(json.dumps(lb) + "\n" for lb in labels))
        replies = []
        for port in ports:
            status, _, reply = request(port, "POST", path + "/feedback", labels)
            assert status == 200, reply
            replies.append(reply)
    finally:
        for server in servers:
            server.stop()  # the request logs are written out and closed
    yield {
        "out": out,
        "model": model,
        "logs": logs,
        "labels": root / "labels.jsonl",
        "replies": replies,
        "again": then,  # the row the repeated id's latest request sent
    }


def _offline(replicas, logs, derive=False):
    model = replicas["model"]
    requests = read_requests([str(log) for log in logs], model.name, model.outputs)
    labels = read_labels(str(replicas["labels"]))
    names = model.outputs["label"]["names"]
    return performance.join(
        requests, labels, names, "label", "probabilities", "labels.jsonl", derive
    )


def _rewritten(log, path, change):
    """A copy of the request log `log` at `path`, each record passed through `change`."""
    records = [json.loads(line) for line in log.read_text().splitlines()]
    path.write_text("".join(json.dumps(change(r)) + "\n" for r in records))
    return path


def test_each_replicas_log_gives_its_servers_realized_accuracy(replicas):
    """A label joins only in the log of the replica that served its request, as on the
    server: each log alone gives its own server's joined rows, correct rows and unjoined
    counts (the server's unknown = offline unknown + failed), a repeated id joins its latest
    request, a duplicate counts once."""
    for log, reply in zip(replicas["logs"], replicas["replies"], strict=True):
        joined = _offline(replicas, [log])
        [score] = joined.versions.values()
        served = reply["accuracy"]["total"]
        assert (score.correct, score.rows) == (served["correct"], served["labelled"]), log
        assert score.rows == reply["matched"]
        assert joined.unmatched["duplicate"] == reply["unmatched"]["duplicate"]
        unknown = joined.unmatched["unknown"] + joined.unmatched["failed"]
        assert unknown == reply["unmatched"]["unknown"], (joined.unmatched, reply)
    a, b = replicas["replies"]
    assert a["unmatched"]["duplicate"] == 1 and b["unmatched"]["duplicate"] == 0
    assert _offline(replicas, [replicas["logs"][1]]).unmatched["failed"] == 1  # "broken"


def test_ann_monitor_performance_joins_both_replicas_logs_as_their_servers_together(
    replicas, tmp_path
):
    a, b = (r["accuracy"]["total"] for r in replicas["replies"])
    out = tmp_path / "perf"
    logs = ",".join(str(log) for log in replicas["logs"])
    args = ["monitor", "performance", f"--model={replicas['out']}", f"--requests={logs}"]
    result = ann(*args, f"--labels={replicas['labels']}", f"--out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    version = replicas["model"].manifest_sha256[:12]
    assert (report["report"], report["schema_version"]) == ("performance", 2)
    # Every key documented (docs/monitor_reports.md), every key it says is there present.
    assert report_doc.undocumented(report) == []
    assert report_doc.missing(report, {"when `ece` is"}) == []
    assert report["result"]["state"] == "measured" and list(report["result"]["versions"]) == [
        version
    ]
    score = report["result"]["versions"][version]
    assert score["rows"] == a["labelled"] + b["labelled"] == 141
    assert score["correct"] == a["correct"] + b["correct"]
    assert score["accuracy"] == pytest.approx(score["correct"] / 141, abs=1e-12)
    assert report["labels"]["unmatched"] == {
        "unknown": 1, "failed": 1, "unlogged": 0, "duplicate": 1
    }  # fmt: skip
    # ECE of the joined rows, from the model's own probabilities on the rows sent.
    model = replicas["model"]
    rows = data.load("digits", "test", cache=True).rows(np.arange(150))
    kept = [*range(140), replicas["again"]]
    probabilities = model({"image": rows["image"][kept]})["probabilities"]
    targets = np.append(rows["label"][:140], model({"image": rows["image"][kept[-1:]]})["label"])
    assert score["ece"] == pytest.approx(calibration.ece(probabilities, targets), abs=1e-6)
    assert score["ece_rows"] == 141 and score["reliability"]["counts"] and score["bins"] == 15
    assert result.stdout.splitlines() == [
        f"106 of 109 labels joined to 109 logged requests of {model.name} in 2 log files; not "
        "joined: unknown 1, failed 1, unlogged 0, duplicate 1",
        f"  version {version} (--model): accuracy {score['accuracy']:.4f} ({score['correct']} "
        f"of 141 rows), ECE {score['ece']:.4f} over 15 bins",
        f"wrote {out / 'report.json'}, index.html and 1 picture",
    ]
    assert "1 of 109 labels names request ids these logs do not hold (e.g. 'never-sent')" in (
        result.stderr
    )
    assert report["figures"] == ["performance_versions_reliability.png"]
    assert (out / report["figures"][0]).read_bytes()[:4] == b"\x89PNG"
    page = (out / "index.html").read_text()
    assert "data:image/png;base64," in page
    # The page said "... 106 joined" only, not the breakdown, the warnings or the MCE that
    # report.json and stderr have (trial 42a L8).
    assert "106 joined, 1 unknown, 1 failed, 1 duplicate (not joined)" in page, page[:3000]
    assert "warning: 1 of 109 labels names request ids these logs do not hold" in page
    assert f"<td>mce</td><td>{score['mce']:.4f}</td>" in page, page[:3000]

    # Too few labelled rows: said, and in report.json for a gate; no accuracy, no picture.
    few = tmp_path / "few"
    result = ann(*args, f"--labels={replicas['labels']}", f"--out={few}", "--min_rows=142")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[1] == (
        f"  version {version} (--model): too few labelled rows to judge (141 rows < "
        f"--min_rows=142): {score['correct']} correct"
    )
    report = json.loads((few / "report.json").read_text())
    assert report["result"]["state"] == "too_few_rows" and report["figures"] == []
    assert report["result"]["versions"][version]["accuracy"] is None
    assert report_doc.undocumented(report) == [] and report_doc.missing(report) == []


def test_a_bad_label_an_unreadable_log_and_labels_matching_nothing_are_one_line(replicas, tmp_path):
    args = ["monitor", "performance", f"--model={replicas['out']}"]
    log = replicas["logs"][0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "r0", "label": 0}\n{"id": "r2", "label": 12}\n')
    line = one_line_error(ann(*args, f"--requests={log}", f"--labels={bad}"))
    assert line == (
        f"error: --labels={bad} line 2: label: expected a class index in [0, 9] or a class "
        'name ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"), got 12'
    ), line
    bad.write_text('{"id": "m0", "label": [1, 2]}\n')
    line = one_line_error(ann(*args, f"--requests={log}", f"--labels={bad}"))
    assert line == (
        f'error: --labels={bad} line 1: label (id "m0"): expected 8 labels (its request had 8 '
        "rows), got 2 labels"
    ), line
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text(log.read_text() + "not json\n")
    line = one_line_error(ann(*args, f"--requests={damaged}", f"--labels={replicas['labels']}"))
    assert line.startswith(f"error: --requests={damaged} line 56: expected a request record"), line
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "x1", "label": 1}\n{"id": "x2", "label": 2}\n')
    line = one_line_error(ann(*args, f"--requests={log}", f"--labels={other}"))
    assert line == (
        f"error: none of the 2 labels in {other} joined a logged request of digits_cnn "
        f"(unknown 2): the labels' ids (e.g. 'x1') are not in {log}, which holds 55 requests "
        f"with ids (e.g. 'again') to version {replicas['model'].manifest_sha256[:12]}; give "
        "every replica's request log, as this log holds every request of its server"
    ), line
    # Its rotated files are named (it said "rotated files too: --requests=log,log.1" whatever
    # was there, and "logged with --request_log_sample=1" of a log that logged every request).
    copied = tmp_path / "copied.jsonl"
    copied.write_text(log.read_text())
    (tmp_path / "copied.jsonl.1").write_text("")
    line = one_line_error(ann(*args, f"--requests={copied}", f"--labels={other}"))
    assert line.endswith(
        f"read the rotated file beside it too (--requests={copied},{copied}.1), and every "
        "replica's request log"
    ), line
    assert not (tmp_path / "perf").exists()


def test_unknown_ids_beside_rotated_files_of_a_sampled_log_name_the_share_too(
    tmp_path, monkeypatch
):
    """`ann monitor performance --requests=a.jsonl.1` of a log sampled at 0.5: the warning for
    labels of unknown ids named the rotated files, not that the log holds half the requests."""
    monkeypatch.chdir(tmp_path)
    for name in ("a.jsonl", "a.jsonl.1"):
        (tmp_path / name).write_text("")
    unknown = {"unknown": 1, "unlogged": 0, "duplicate": 0, "failed": 0}
    joined = performance.Joined({}, unknown, sent=9, unknown_ids=["x"], elsewhere={})
    said = performance.unjoined_warnings(joined, ["a.jsonl.1"], [0.5])
    assert said[0].endswith(
        "read the log a.jsonl too (--requests=a.jsonl,a.jsonl.1), and every replica's request "
        "log, logged with --request_log_sample=1 (this log holds 50% of requests: 0.5)"
    ), said[0]


def test_one_label_of_many_takes_a_singular_verb():
    """It said "1 of 109 labels name request ids ...", "1 of 13 labels are for rows ..."."""
    from ann.monitor import feedback

    one = {"unknown": 1, "unlogged": 1, "duplicate": 1, "failed": 0}
    joined = performance.Joined({}, one, sent=109, unknown_ids=["x"], elsewhere={})
    said = performance.unjoined_warnings(joined, ["a.jsonl"], [0.1])
    # The log's own share (it said "`ann serve --request_log_sample` below 1" of any log).
    assert said[0].endswith(
        "give every replica's request log, logged with --request_log_sample=1 (this log holds "
        "10% of requests: 0.1)"
    ), said[0]
    said += feedback.unjoined_warnings(one, 13) + feedback.unjoined_warnings(
        one, 13, ["1", "2"], "1"
    )
    starts = [
        "1 of 109 labels names request ids",
        "1 of 109 labels names requests whose",
        "1 of 109 labels is for rows",
        "1 of 13 labels names request ids this server",
        "1 of 13 labels is for rows",
        "1 of 13 labels names request ids version 1",
    ]
    assert [s[: len(start)] for s, start in zip(said, starts, strict=False)] == starts, said
    two = performance.Joined({}, {**one, "unknown": 2}, sent=109, unknown_ids=["x"], elsewhere={})
    assert performance.unjoined_warnings(two, ["a.jsonl"])[0].startswith(
        "2 of 109 labels name request ids"
    )


def test_a_missing_flag_is_named_and_each_commands_help_is_its_own(tmp_path):
    """Every missing flag got the same line naming all three; `--requests=` (empty) too. drift
    alike. `ann monitor performance --help` printed all of `ann monitor --help`."""
    log = tmp_path / "a.jsonl"
    log.write_text("")
    model, requests, labels = "--model=exports/x", f"--requests={log}", "--labels=labels.jsonl"
    line = one_line_error(ann("monitor", "performance", model, labels))
    assert line == (
        "error: performance needs --requests=FILE[,FILE] (the server's request log: every "
        "replica's, rotated files too)"
    ), line
    line = one_line_error(ann("monitor", "performance", model, "--requests=", labels))
    assert line.endswith("(the server's request log: every replica's, rotated files too; "
                         "--requests= names none)"), line  # fmt: skip
    line = one_line_error(ann("monitor", "performance", requests))
    assert line == (
        "error: performance needs --model (an export directory or models:/ URI) and "
        '--labels=FILE.jsonl (the late labels, {"id": ..., "label": ...} a line)'
    ), line
    line = one_line_error(ann("monitor", "drift", requests))
    assert line == "error: drift needs --model (an export directory or models:/ URI)", line
    line = one_line_error(ann("monitor", "drift", model))
    assert line.startswith("error: drift needs --requests=FILE[,FILE] ("), line

    result = ann("monitor", "performance", "--help")
    assert result.returncode == 0 and not result.stderr, result.stderr
    text = result.stdout
    assert "    ann monitor performance --model=" in text and "(--model)" in text
    assert "ann monitor drift --model" not in text and "ann monitor feedback --url" not in text
    assert "--labels: feedback, performance: the late labels" in text
    assert "--method" not in text and "--url" not in text  # other commands' flags
    drift = ann("monitor", "drift", "--help").stdout
    assert "[--nomultivariate]" in drift and "[--multivariate]" not in drift
    assert "--nomultivariate skips it" in drift and "--labels" not in drift
    everything = ann("monitor", "--help").stdout
    # Each flag's help names the commands that read it first: --registry and --top began
    # "The registry..." and "Drifted features...".
    helps = [line for line in everything.splitlines() if line.startswith("  --")]
    assert len(helps) >= 14 and all(
        re.match(r"  --(\[no\])?\w+: (<[^>]*>: )?(drift|feedback|performance)[,:] [a-z]", line)
        for line in helps
    ), helps
    assert all(f"    ann monitor {c} " in everything for c in ("drift", "feedback", "performance"))
    jobs = ann("--help").stdout
    # It was 100 characters, the others <= 93.
    assert "  monitor        drift and realized performance from request logs; late labels to a " \
        "server\n" in jobs  # fmt: skip
    assert max(len(line) for line in jobs.splitlines()) <= 93
    # Each command's own exit status: drift's help told of labels files and feedback batches.
    # --model as the command reads it: every command's help described all three.
    for command, own, not_own, model_said in (
        ("drift", "Exit status of `ann monitor drift`: 0 whether drift is found", "label",
         "--model: drift: the model whose requests are tested, an export directory"),
        ("feedback", "Exit status of `ann monitor feedback`: 0 whatever the server", "drift",
         "--model: feedback: the served model's name"),
        ("performance", "Exit status of `ann monitor performance`: 0 whether each", "drift",
         "--model: performance: the model scored, an export directory"),
    ):  # fmt: skip
        said = ann("monitor", command, "--help").stdout
        status = said[said.index(own) : said.index("\n\n", said.index(own))]
        assert not_own not in status and said.count("Exit status") == 1, status
        flat = " ".join(said.split())
        model_help = flat[flat.index("--model: ") :].split(" --")[0]
        assert model_help.startswith(model_said), model_help
        others = {"drift", "feedback", "performance"} - {command}
        assert not any(f"{c}: " in model_help for c in others), model_help
        assert command == "feedback" or f"(default ./{command}-NAME-VERSION)." in flat, flat
    # Self-contained ("joins the same labels file": feedback's, not shown); --min_rows its own.
    assert "joins the same labels file" not in text and '`{"id": ..., "label": ...}` a line' in (
        text
    )
    flat = " ".join(text.split())
    assert "fewer: 'too few labelled rows to judge'" in flat and "chi-square" not in flat
    flat = " ".join(drift.split())
    assert "the chi-square rule of 5 expected counts" in flat and "Cochran" not in flat
    assert "fewer: 'too few rows to judge drift'" in flat and "labelled" not in flat
    # An empty name in --requests was "--requests= is not a file".
    line = one_line_error(ann("monitor", "performance", model, f"{requests},", labels))
    assert line == f"error: `{requests},` has an empty name after a comma; drop it", line


def test_logs_without_the_named_version_are_not_served_not_measured(replicas, tmp_path):
    """--model named a version the logs never served: it printed the logged version's
    accuracy and result.state "measured", so a gate read another version's score as this
    one's. result.state is --model's version's ("not_served"); a warning names the versions the
    logs hold and how to name one."""
    version = replicas["model"].manifest_sha256[:12]

    def other(record):
        return {**record, "version": "0123456789ab"}

    logs = [_rewritten(log, tmp_path / log.name, other) for log in replicas["logs"]]
    out = tmp_path / "perf"
    files = ",".join(str(log) for log in logs)
    result = ann(
        "monitor", "performance", f"--model={replicas['out']}", f"--requests={files}",
        f"--labels={replicas['labels']}", f"--out={out}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["result"]["state"] == "not_served", report["result"]
    assert performance.NOT_SERVED == "not_served"
    assert report_doc.undocumented(report) == []
    # --model's version is listed too, not_served (the page and report.json did not name it).
    assert list(report["result"]["versions"]) == ["0123456789ab", version]
    assert report["result"]["versions"]["0123456789ab"]["state"] == "measured"
    assert report["result"]["versions"][version] == {
        **performance.not_served_json(100), "state": "not_served", "rows": 0, "accuracy": None
    }  # fmt: skip
    assert report["requests"]["versions"] == ["0123456789ab"]
    page = (out / "index.html").read_text()
    assert (
        f"--model={replicas['out']} (version {version}) served none of the 109 logged requests: "
        "not measured (state not_served); the scores below are version 0123456789ab&#x27;s"
    ) in page, page[:3000]
    assert page.index("served none of the 109") < page.index("labels from")  # at the top
    assert f"version {version} (--model)" in page and "not_served</td>" in page
    lines = result.stdout.splitlines()
    assert lines[1].startswith("  version 0123456789ab: accuracy ")  # no (--model) tag
    assert lines[2] == (
        f"  version {version} (--model): served none of the 109 logged requests (state not_served)"
    )
    assert (
        f"warning: {', '.join(str(log) for log in logs)} hold no request to digits_cnn version "
        f'{version} (--model), only to version 0123456789ab: result.state is "not_served" and '
        "the scores printed are that version's; to score it, give --model= the export directory "
        "whose manifest sha256 starts 0123456789ab (or a models:/NAME/N registered from it)\n"
    ) in result.stderr, result.stderr
    # A registry version number is named by its URI.
    said = monitor_main.not_served_warning("a.jsonl", "digits", "3", ["2"])
    assert said.endswith("to score it, give --model=models:/digits/2"), said


def test_logs_of_the_export_served_from_its_directory_are_said_as_drift_says_them(
    replicas, tmp_path
):
    """--model=models:/digits/1, whose export the logs hold as served from its directory
    (digits_cnn/HASH): drift said so in a note; performance read them without a word, and its
    lines tagged the hash "(--model)" (trial 47b)."""
    from ann.registry import Registry

    Registry(str(tmp_path / "reg")).register(str(replicas["out"]), "digits")
    files = ",".join(str(log) for log in replicas["logs"])
    result = ann(
        "monitor", "performance", "--model=models:/digits/1", f"--registry={tmp_path / 'reg'}",
        f"--requests={files}", f"--labels={replicas['labels']}", f"--out={tmp_path / 'perf'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    version = replicas["model"].manifest_sha256[:12]
    assert (
        f"note: {files.replace(',', ', ')} hold no request of model 'digits'; reading those of "
        f"digits_cnn version {version}: this export (its manifest's digest) served from its "
        "directory\n"
    ) in result.stderr, result.stderr


def test_a_logged_export_version_all_digits_is_offered_as_its_directory():
    # An export's version is its manifest hash's first 12 hex digits; one all digits was
    # offered as --model=models:/digits/012345678901, a URI that is refused (a leading zero).
    for held in ("012345678901", "123456789012"):
        said = monitor_main.not_served_warning("a.jsonl", "digits", "3", [held])
        assert said.endswith(
            f"give --model= the export directory whose manifest sha256 starts {held} (or a "
            "models:/NAME/N registered from it)"
        ), said
    said = monitor_main.not_served_warning("a.jsonl", "digits", "3", ["12"])
    assert said.endswith("to score it, give --model=models:/digits/12"), said


def test_a_class_asked_only_as_probabilities_joins_as_their_argmax(replicas, tmp_path):
    """A request whose client asked only for `probabilities` was `unlogged`, though a
    classification export's `label` is by definition the argmax of the logits, hence of
    softmax(logits / T): the class is derived from the logged probabilities and joins."""
    model = replicas["model"]
    rows = data.load("digits", "test", cache=True).rows(np.arange(150))
    outputs = model({"image": rows["image"]})
    assert (outputs["probabilities"].argmax(-1) == outputs["label"]).all()  # the definition

    def probabilities_only(record):
        if "outputs" in record:
            record = {**record, "outputs": {"probabilities": record["outputs"]["probabilities"]}}
        return record

    logs = [_rewritten(log, tmp_path / log.name, probabilities_only) for log in replicas["logs"]]
    whole = _offline(replicas, replicas["logs"])
    kept = _offline(replicas, logs)  # not derived: the log holds no class
    unlogged = whole.joined + whole.unmatched["duplicate"]  # the duplicate too: nothing joined
    assert kept.joined == 0 and kept.unmatched["unlogged"] == unlogged
    derived = _offline(replicas, logs, derive=True)
    [score], [expected] = derived.versions.values(), whole.versions.values()
    assert (score.correct, score.rows) == (expected.correct, expected.rows) == (
        score.correct, 141
    )  # fmt: skip
    assert derived.derived == derived.joined == whole.joined and whole.derived == 0
    assert derived.unmatched == whole.unmatched
    out = tmp_path / "perf"
    result = ann(
        "monitor", "performance", f"--model={replicas['out']}",
        f"--requests={','.join(str(log) for log in logs)}", f"--labels={replicas['labels']}",
        f"--out={out}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["labels"]["derived"] == whole.joined and report["result"]["state"] == "measured"
    assert report["result"]["versions"][model.manifest_sha256[:12]]["correct"] == expected.correct


def test_the_summary_says_one_row_and_no_picture():
    """ "(1 rows < --min_rows=100)" and "wrote .../report.json, index.html and 0 pictures"."""
    score = {"state": "too_few_rows", "rows": 1, "min_rows": 100, "correct": 1}
    report = {
        "labels": {"joined": 1, "labels": 1, "unmatched": {"unknown": 0}},
        "requests": {"records": 1, "files": ["req.jsonl"]},
        "model": {"name": "digits", "version": "3"},
        "result": {"state": "too_few_rows", "versions": {"3": score}},
        "outputs": {"probabilities": "probabilities"},
        "figures": [],
    }
    lines = monitor_main.performance_summary(report, "perf/report.json").splitlines()
    assert lines[0] == (
        "1 of 1 labels joined to 1 logged request of digits in 1 log file; not joined: unknown 0"
    )
    assert lines[1] == (
        "  version 3 (--model): too few labelled rows to judge (1 row < --min_rows=100): 1 correct"
    )
    assert lines[3] == (
        "wrote perf/report.json and index.html (no picture: no version judged with logged "
        "probabilities)"
    )


def test_a_performance_report_of_other_labels_is_not_replaced_without_a_word(
    digits_export, tmp_path
):
    """--out's rule compared the model and request logs only: a performance report of the
    same logs joined to other labels was replaced without a word. Refused naming both and the
    fix; the same labels (by another path too) replace it."""
    _, export = digits_export
    manifest = json.loads((export / "manifest.json").read_text())
    log = tmp_path / "a.jsonl"
    record = {"model": manifest["name"], "version": "1", "id": "r0", "status": 200,
              "outputs": {"label": {"shape": [1], "data": [3]}}}  # fmt: skip
    log.write_text(json.dumps(record) + "\n")
    first, other = tmp_path / "labels.jsonl", tmp_path / "other.jsonl"
    first.write_text('{"id": "r0", "label": 3}\n')
    other.write_text('{"id": "r0", "label": 5}\n')
    out = tmp_path / "perf"
    args = ["monitor", "performance", f"--model={export}", f"--requests={log}", f"--out={out}"]
    result = ann(*args, f"--labels={first}")
    assert result.returncode == 0, result.stderr[-2000:]
    version = json.loads((out / "report.json").read_text())["model"]["version"]
    line = one_line_error(ann(*args, f"--labels={other}"))
    assert line == (
        f"error: --out={out} holds the performance report of {first} (model {manifest['name']} "
        f"version {version}), not of --labels={other}; choose another --out, or delete {out} to "
        "replace it"
    ), line
    assert json.loads((out / "report.json").read_text())["labels"]["file"] == str(first)
    same = str(tmp_path / "." / "labels.jsonl")
    made_of = (manifest["name"], version, [str(log)], same)
    assert monitor_main._check_out(str(out), "performance", made_of) == str(out)


def test_a_performance_report_at_out_is_of_the_files_themselves_from_any_directory(
    digits_export, tmp_path
):
    """--out's check compared the earlier report's --labels path as typed, resolved from
    here, and its --requests names as typed: from another directory another labels file of
    the same relative name replaced the report without a word, and the same files by other
    paths were refused. report.json records their absolute paths (requests.paths,
    labels.path) and the check compares those."""
    import os
    from pathlib import Path

    _, export = digits_export
    manifest = json.loads((export / "manifest.json").read_text())
    root = Path(os.path.realpath(tmp_path))
    logs, elsewhere, out = root / "logs", root / "elsewhere", root / "perf"
    logs.mkdir()
    elsewhere.mkdir()
    record = {"model": manifest["name"], "version": "1", "id": "r0", "status": 200,
              "outputs": {"label": {"shape": [1], "data": [3]}}}  # fmt: skip
    (logs / "a.jsonl").write_text(json.dumps(record) + "\n")
    (elsewhere / "a.jsonl").symlink_to(logs / "a.jsonl")  # the same log
    (logs / "labels.jsonl").write_text('{"id": "r0", "label": 3}\n')
    (elsewhere / "labels.jsonl").write_text('{"id": "r0", "label": 5}\n')  # other labels

    def perf_cli(cwd, log, labels):
        return ann(
            "monitor", "performance", f"--model={export}", f"--requests={log}",
            f"--labels={labels}", f"--out={out}", cwd=cwd,
        )  # fmt: skip

    result = perf_cli(logs, "a.jsonl", "labels.jsonl")
    assert result.returncode == 0, result.stderr[-2000:]
    made = json.loads((out / "report.json").read_text())
    version = made["model"]["version"]
    line = one_line_error(perf_cli(elsewhere, "a.jsonl", "labels.jsonl"))  # replaced it
    assert line == (
        f"error: --out={out} holds the performance report of {logs / 'labels.jsonl'} (model "
        f"{manifest['name']} version {version}), not of --labels=labels.jsonl "
        f"({elsewhere / 'labels.jsonl'}); choose another --out, or delete {out} to replace it"
    ), line
    result = perf_cli(root, "logs/a.jsonl", logs / "labels.jsonl")  # the same: was refused
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "report.json").read_text())["requests"]["files"] == ["logs/a.jsonl"]
    assert made["requests"]["files"] == ["a.jsonl"]
    assert made["requests"]["paths"] == [str(logs / "a.jsonl")]
    assert made["labels"]["file"] == "labels.jsonl"
    assert made["labels"]["path"] == str(logs / "labels.jsonl")


def test_a_report_of_another_model_at_out_is_refused_naming_the_model_not_the_logs(
    digits_export, tmp_path
):
    """A report at --out of another model on the same logs was refused as if of other logs,
    contradicting itself: "holds the drift report of /x/req.jsonl (model digits version 2),
    not of --requests=/x/req.jsonl". The refusal names what differs: the model, the logs, the
    labels, each only where it differs."""
    _, export = digits_export
    manifest = json.loads((export / "manifest.json").read_text())
    name = manifest["name"]
    log, labels, out = tmp_path / "a.jsonl", tmp_path / "labels.jsonl", tmp_path / "perf"
    record = {"model": name, "version": "1", "id": "r0", "status": 200,
              "outputs": {"label": {"shape": [1], "data": [3]}}}  # fmt: skip
    log.write_text(json.dumps(record) + "\n")
    labels.write_text('{"id": "r0", "label": 3}\n')
    args = ["monitor", "performance", f"--model={export}", f"--requests={log}",
            f"--labels={labels}", f"--out={out}"]  # fmt: skip
    result = ann(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    version = report["model"]["version"]
    report["model"]["version"] = "2"  # the report of another version of the model, same files
    (out / "report.json").write_text(json.dumps(report))
    line = one_line_error(ann(*args))
    assert line == (
        f"error: --out={out} holds the performance report of model {name} version 2, not of "
        f"model {name} version {version} (--model); choose another --out, or delete {out} to "
        "replace it"
    ), line
    other = tmp_path / "b.jsonl"
    other.write_text(log.read_text())
    made_of = (name, version, [str(other)], str(labels))
    with pytest.raises(FlagError) as e:  # the model and the logs differ: both named
        monitor_main._check_out(str(out), "performance", made_of)
    assert str(e.value) == (
        f"--out={out} holds the performance report of model {name} version 2 and {log}, not of "
        f"model {name} version {version} (--model) and --requests={other}; choose another "
        f"--out, or delete {out} to replace it"
    )


def test_too_few_rows_or_an_empty_log_names_the_rotated_files_beside_it(tmp_path):
    """`ann monitor drift` names the rotated files beside a log (FILE.1, FILE.2 from `ann
    serve --request_log_backups`) when it has too few rows or an empty log; performance said
    nothing of them: too few labelled rows gave no advice, and an empty log was named "a, .,
    j, s, o, n, l" with "log them with `ann serve --request_log=FILE`"."""
    log = tmp_path / "a.jsonl"
    log.write_text("")  # rotated a moment ago: the requests are in the files beside it
    record = {"model": "digits", "version": "3", "id": "r0", "status": 200,
              "outputs": {"label": {"shape": [1], "data": [3]}}}  # fmt: skip
    for n in (1, 2):
        (tmp_path / f"a.jsonl.{n}").write_text(json.dumps(record) + "\n")
    said = f"read the rotated files beside it too (--requests={log},{log}.1,{log}.2)"
    spec = {"label": {"dtype": "int32", "shape": [-1], "names": list("0123456789")}}
    with pytest.raises(RequestLogError) as e:
        read_requests([str(log)], "digits", spec)
    assert str(e.value) == f"--requests={log} holds no requests; {said}"
    score = {"state": "too_few_rows", "rows": 1, "min_rows": 100, "correct": 1}
    report = {
        "labels": {"joined": 1, "labels": 1, "unmatched": {"unknown": 0}},
        "requests": {"records": 1, "files": [str(log), f"{log}.1"]},
        "model": {"name": "digits", "version": "3"},
        "result": {"state": "too_few_rows", "versions": {"3": score}},
        "outputs": {"probabilities": "probabilities"},
        "figures": [],
    }
    lines = monitor_main.performance_summary(report, "perf/report.json").splitlines()
    assert lines[2] == (  # .1 given: .2 named
        f"  read the rotated file beside it too (--requests={log},{log}.1,{log}.2) or lower "
        "--min_rows"
    ), lines


def test_too_few_labelled_rows_for_want_of_labels_says_to_wait_for_labels():
    # 50 labels for 401 logged requests were told "wait for more traffic" (trial 46b).
    score = {"state": "too_few_rows", "rows": 50, "min_rows": 100, "correct": 49}
    report = {
        "labels": {"joined": 50, "labels": 50, "unmatched": {"unknown": 0}},
        "requests": {"records": 401, "files": ["req.jsonl"], "request_log_sample": [1.0]},
        "model": {"name": "digits", "version": "3"},
        "result": {"state": "too_few_rows", "versions": {"3": score}},
        "outputs": {"probabilities": "probabilities"},
        "figures": [],
    }
    lines = monitor_main.performance_summary(report, "perf/report.json").splitlines()
    assert lines[2] == (
        "  351 of the 401 logged requests have no label yet: wait for more labels or lower "
        "--min_rows"
    ), lines
    # Where a label for every logged request would still fall short, the traffic is (review).
    report["requests"]["records"] = 51
    lines = monitor_main.performance_summary(report, "perf/report.json").splitlines()
    assert "wait for more labels" not in lines[2] and "wait for more traffic" in lines[2], lines


def test_empty_rotated_logs_hold_no_requests_and_a_rotated_file_alone_names_its_log(
    digits_export, tmp_path
):
    """Several files were said to "holds no requests"; a rotated file given on its own
    (`--requests=a.jsonl.1`) was told to log with `ann serve --request_log=FILE`, its log and
    the log's other rotated file unnamed."""
    _, export = digits_export
    manifest = json.loads((export / "manifest.json").read_text())
    (tmp_path / "a.jsonl").write_text("")  # rotated a moment ago
    (tmp_path / "a.jsonl.1").write_text("")
    record = {"model": manifest["name"], "version": "1", "id": "r0", "status": 200,
              "outputs": {"label": {"shape": [1], "data": [3]}}}  # fmt: skip
    (tmp_path / "a.jsonl.2").write_text(json.dumps(record) + "\n")
    (tmp_path / "labels.jsonl").write_text('{"id": "r0", "label": 3}\n')

    def perf_cli(requests):
        return ann(
            "monitor", "performance", f"--model={export}", f"--requests={requests}",
            "--labels=labels.jsonl", "--out=perf", cwd=tmp_path,
        )  # fmt: skip

    line = one_line_error(perf_cli("a.jsonl,a.jsonl.1"))
    assert line == (
        "error: --requests=a.jsonl,a.jsonl.1 hold no requests; read the rotated file beside it too "
        "(--requests=a.jsonl,a.jsonl.1,a.jsonl.2)"
    ), line
    line = one_line_error(perf_cli("a.jsonl.1"))
    assert line == (
        "error: --requests=a.jsonl.1 holds no requests; read the log a.jsonl and its other "
        "rotated file too (--requests=a.jsonl,a.jsonl.1,a.jsonl.2)"
    ), line


def test_the_reliability_picture_tags_the_model_and_fits_a_long_name():
    """The panel titles lacked the "(--model)" tag the printed lines have, and a long model
    name (the pydoc LM's) made the title wider than its one panel: the saved picture was a
    narrow plot in a wide figure. The title is wrapped to the figure's width."""
    import io

    import matplotlib.pyplot as plt
    from matplotlib import image

    from ann.serve.feedback import Predictions

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), 200)
    y = rng.integers(0, 4, 200)
    store = Predictions(10, ["a", "b", "c", "d"])
    store.total = [int((p.argmax(-1) == y).sum()), 200]
    score = performance.VersionScore("2b7f280a9119", 200, 200, store, [y], [p], [y])
    joined = performance.Joined({"2b7f280a9119": score}, {}, 200, [], {})
    name = "pydoc_chars_causal_lm_language_modelling"
    (section,) = performance.sections(joined, 100, 4, name, 1, "2b7f280a9119")
    figure = section.figures["reliability"]
    title = figure.axes[0].get_title()
    assert title.startswith("version 2b7f280a9119 (--model):\naccuracy "), title
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=50, bbox_inches="tight")
    width = image.imread(io.BytesIO(buffer.getvalue())).shape[1]
    assert width <= figure.get_figwidth() * 50 * 1.05, (width, figure.get_figwidth())
    plt.close("all")


def test_a_fifo_or_device_given_as_a_monitor_file_is_refused_not_waited_on(tmp_path):
    """`--labels=fifo.jsonl` (performance, feedback) hung forever, waiting for a writer, where
    `--requests=fifo.jsonl` was refused at once. Each file flag's reader, and the commands, run
    in a subprocess under a timeout, so that a regression fails instead of hanging the suite."""
    import os
    import subprocess
    import sys

    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    log = tmp_path / "requests.jsonl"
    log.write_text(json.dumps({"model": "m", "status": 200}) + "\n")
    script = (
        "import sys\n"
        "from ann.monitor.feedback import read_labels\n"
        "from ann.monitor.request_log import RequestLogError, _records\n"
        "for read in (read_labels, lambda p: _records([p])):\n"
        "    for path in sys.argv[1:]:\n"
        "        try:\n"
        "            read(path)\n"
        "        except (ValueError, RequestLogError) as e:\n"
        "            print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(fifo), "/dev/null"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    wanted = 'the late labels file, {"id": ..., "label": ...} a line'
    assert done.stdout.splitlines() == [
        f"--labels={fifo} is a FIFO (a named pipe), not a file; give {wanted}",
        f"--labels=/dev/null is a character device, not a file; give {wanted}",
        f"--requests={fifo} is a FIFO (a named pipe), not a file; give the server's request "
        "log (ann serve --request_log=FILE)",
        "--requests=/dev/null is a character device, not a file; give the server's request "
        "log (ann serve --request_log=FILE)",
    ], done.stdout
    # The commands: before the model is loaded (--model=x is no export), and for --requests.
    line = one_line_error(
        ann("monitor", "performance", "--model=x", f"--requests={log}", f"--labels={fifo}")
    )
    assert line == f"error: --labels={fifo} is a FIFO (a named pipe), not a file; give {wanted}"
    line = one_line_error(ann("monitor", "drift", "--model=x", f"--requests={fifo}"))
    assert line == (
        f"error: --requests={fifo} is a FIFO (a named pipe), not a file; give the server's "
        "request log"
    ), line


def test_a_missing_labels_or_token_file_is_refused_before_the_model_or_the_server(tmp_path):
    """`--labels=missing.jsonl` was said only after --model was resolved (performance: a
    --model that does not exist was said instead) or the server reached (feedback: an
    unreachable --url was said instead); a missing --token_file too. --model=x is no export,
    and port 1 answers no one: each refusal here is the file's."""
    log = tmp_path / "requests.jsonl"
    log.write_text(json.dumps({"model": "m", "status": 200}) + "\n")
    labels = tmp_path / "labels.jsonl"
    missing = tmp_path / "missing.jsonl"
    wanted = 'the late labels file, {"id": ..., "label": ...} a line'
    line = one_line_error(
        ann("monitor", "performance", "--model=x", f"--requests={log}", f"--labels={missing}")
    )
    assert line == f"error: --labels={missing} does not exist; give {wanted}", line
    url = "--url=http://127.0.0.1:1"
    line = one_line_error(ann("monitor", "feedback", "--model=m", url, f"--labels={missing}"))
    assert line == f"error: --labels={missing} does not exist; give {wanted}", line
    labels.write_text(json.dumps({"id": "a", "label": 1}) + "\n")
    line = one_line_error(
        ann("monitor", "feedback", "--model=m", url, f"--labels={labels}",
            f"--token_file={missing}")
    )  # fmt: skip
    assert line == (
        f"error: --token_file={missing} does not exist; give the file that holds the token"
    ), line


def test_feedback_reads_the_token_variable_as_ann_serve_does(tmp_path):
    """$ANN_SERVE_TOKEN from a Secret made `--from-file` ends in a newline: it went out in the
    header ("Invalid header value"); now stripped, as `ann serve` strips it (port 1 answers no
    one: past the token, the reach is what fails). A token still bad is named with where it
    came from and its first bad character."""
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"id": "a", "label": 1}) + "\n")
    args = ("monitor", "feedback", "--model=m", "--url=http://127.0.0.1:1", f"--labels={labels}")
    env = {**os.environ, "ANN_SERVE_TOKEN": "s3cret-token\n"}
    assert "cannot reach the server" in one_line_error(ann(*args, env=env))
    env["ANN_SERVE_TOKEN"] = "two words"
    assert one_line_error(ann(*args, env=env)).startswith(
        "error: $ANN_SERVE_TOKEN: expected printable ASCII without spaces (a Bearer token, RFC "
        "6750), got a space (U+0020) at character 4 of 9"
    )


def test_a_compressed_or_binary_file_is_named_with_its_fix_not_called_damaged(tmp_path):
    """`--requests=req.jsonl.gz` was told "got text that is not UTF-8 (byte 0x8b at column 2);
    the file is damaged (delete that line to use the rest)"; a binary file without a newline was
    skipped as a torn line, then "holds no requests; log them with ann serve --request_log". The
    labels file read the same way."""
    import gzip

    record = json.dumps({"model": "m", "status": 200}) + "\n"
    packed = tmp_path / "req.jsonl.gz"
    packed.write_bytes(gzip.compress(record.encode()))
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(b for b in range(256) if b != 10) * 4)  # no end of line
    wide = tmp_path / "wide.jsonl"
    wide.write_bytes(record.encode("utf-16"))  # Windows' "Unicode": a byte order mark first
    for path, said in (
        (packed, f"is gzip-compressed; decompress it first (gunzip -k {packed}) and give the "
                 "file it writes"),
        (binary, "is a binary file (it holds null bytes), not JSON lines text; give "),
        (wide, f"is UTF-16 text; save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8 {wide})"),
    ):  # fmt: skip
        with pytest.raises(RequestLogError) as e:
            read_requests([str(path)], "m", {})
        assert str(e.value).startswith(f"--requests={path} {said}"), e.value
        with pytest.raises(ValueError) as e:
            read_labels(str(path))
        assert str(e.value).startswith(f"--labels={path} {said}"), e.value


@pytest.mark.parametrize(
    "tool, suffix", [("gzip", ".gz"), ("bzip2", ".bz2"), ("xz", ".xz"), ("zstd", ".zst")]
)
def test_the_decompress_command_works_whatever_the_file_is_named(tmp_path, tool, suffix):
    """A gzip file named disguised.jsonl was told "decompress it first (gunzip -k
    disguised.jsonl)", which gzip refuses ("unknown suffix -- ignored"); unxz and unzstd refuse
    such a name too. Each command said, run in a shell, writes the plain file."""
    import shutil
    import subprocess

    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    record = json.dumps({"model": "m", "status": 200}) + "\n"
    plain = tmp_path / "plain"
    plain.write_text(record)
    packed = subprocess.run([tool, "-c", str(plain)], capture_output=True, check=True).stdout
    for name, writes in (
        (f"req.jsonl{suffix}", "req.jsonl"),
        ("disguised.jsonl", "disguised.plain.jsonl"),
        ("my log", "my log.jsonl"),
    ):
        path = tmp_path / name
        path.write_bytes(packed)
        with pytest.raises(RequestLogError) as e:
            read_requests([str(path)], "m", {})
        said = re.search(r"decompress it first \((.*)\) and give", str(e.value))
        assert said, e.value
        command = said[1]
        assert (" -k " in command) == name.endswith(suffix), command
        done = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, (command, done.stderr)
        assert (tmp_path / writes).read_text() == record, command
        assert path.read_bytes() == packed, command  # kept


def test_a_binary_file_without_null_bytes_is_named_not_called_a_damaged_line(tmp_path):
    """Random bytes without a null byte (`head -c 2000 /dev/urandom | tr -d '\\0'`) were told
    "line 1: ... got text that is not UTF-8 ...; the file is damaged (delete that line to use
    the rest)", as if one line of a log were bad. More than a third of the first bytes not text
    (Perl's -B rule) and no line a JSON object: a binary file. A damaged line in a log, short or
    long, is still refused by its number with that fix."""
    rng = np.random.default_rng(0)
    noise = bytes(b for b in rng.integers(0, 256, 2000, dtype=np.uint8).tobytes() if b)
    binary = tmp_path / "x.jsonl"
    binary.write_bytes(noise)
    for read, name in (
        (lambda p: read_requests([p], "m", {}), "requests"),
        (read_labels, "labels"),
    ):
        with pytest.raises(ValueError) as e:  # RequestLogError is a ValueError
            read(str(binary))
        said = re.fullmatch(
            rf"--{name}={re.escape(str(binary))} is a binary file \((\d+)% of its first "
            rf"{len(noise):,} bytes are not UTF-8 text\), not JSON lines text; give .*",
            str(e.value),
        )
        assert said and 40 <= int(said[1]) <= 70, e.value
    record = json.dumps({"model": "m", "status": 200}) + "\n"
    garbage = bytes(b for b in noise[:300] if b != 10) + b"\n"
    for good in (1, 200):  # one good line beside the damage, or a log of many
        log = tmp_path / f"log{good}.jsonl"
        log.write_bytes(record.encode() + garbage + record.encode() * (good - 1))
        with pytest.raises(RequestLogError) as e:
            read_requests([str(log)], "m", {})
        assert str(e.value).startswith(f"--requests={log} line 2: expected a request record"), e
        assert str(e.value).endswith("the file is damaged (delete that line to use the rest)")


def test_a_log_rotated_away_names_the_rotated_files_and_how_to_read_them(tmp_path):
    """A log that logrotate rotated (the file gone or empty; FILE.1, FILE.2.gz or
    FILE-20261205.gz beside it) was "is not a file; give the server's request log" or "holds no
    requests; log them with `ann serve --request_log=FILE`". The files are named, with a
    command that joins them (run here: it reads back every record) or, plain, the flag that
    reads them; the labels file likewise, joined (--labels takes one file)."""
    import gzip
    import subprocess

    def records(ids):
        return "".join(
            json.dumps({"model": "m", "version": "1", "id": i, "status": 200}) + "\n" for i in ids
        ).encode()

    folder = tmp_path / "logs"
    folder.mkdir()
    log = folder / "requests.jsonl"
    (folder / "requests.jsonl.1").write_bytes(records(["c"]))  # delaycompress: .1 plain
    (folder / "requests.jsonl.2.gz").write_bytes(gzip.compress(records(["b"])))
    (folder / "requests.jsonl.3.gz").write_bytes(gzip.compress(records(["a"])))
    (folder / "other.jsonl.1.gz").write_bytes(gzip.compress(records(["z"])))  # not its
    files = [f"{log}.3.gz", f"{log}.2.gz", f"{log}.1"]
    joined = folder / "requests.all.jsonl"
    command = f"zcat -f {' '.join(files)} > {joined}"
    rotated = (
        f"it was rotated: its lines are in {', '.join(files)} beside it; join them into one "
        f"file ({command}) and give --requests={joined}"
    )
    with pytest.raises(RequestLogError) as e:
        read_requests([str(log)], "m", {})
    assert str(e.value) == f"--requests={log} does not exist; {rotated}"
    log.write_text("")  # rotated with `create`: an empty log
    with pytest.raises(RequestLogError) as e:
        read_requests([str(log)], "m", {})
    assert str(e.value) == f"--requests={log} holds no requests; {rotated}"
    subprocess.run(command, shell=True, check=True)
    read = read_requests([str(joined)], "m", {})
    assert [r.id for r in read.logged] == ["a", "b", "c"]  # oldest first

    dated = tmp_path / "dated"
    dated.mkdir()
    for day, i in (("20261205", "y"), ("20261204", "x")):  # dateext, compressed
        (dated / f"labels.jsonl-{day}.gz").write_bytes(
            gzip.compress((json.dumps({"id": i, "label": 1}) + "\n").encode())
        )
    labels = dated / "labels.jsonl"
    with pytest.raises(ValueError) as e:
        read_labels(str(labels))
    days = [f"{labels}-20261204.gz", f"{labels}-20261205.gz"]
    assert str(e.value) == (
        f"--labels={labels} does not exist; it was rotated: its lines are in {', '.join(days)} "
        f"beside it; join them into one file (zcat -f {' '.join(days)} > "
        f"{dated / 'labels.all.jsonl'}) and give --labels={dated / 'labels.all.jsonl'}"
    )
    labels.write_text("")
    with pytest.raises(ValueError, match=r"labels.jsonl: holds no labels; it was rotated: "):
        read_labels(str(labels))

    plain = tmp_path / "plain"  # the server's own rotation: the files read as they are
    plain.mkdir()
    for n in (1, 2):
        (plain / f"a.jsonl.{n}").write_bytes(records([f"r{n}"]))
    line = one_line_error(
        ann("monitor", "performance", "--model=x", "--requests=a.jsonl", "--labels=b.jsonl",
            cwd=plain)
    )  # fmt: skip
    assert line == (
        "error: --requests=a.jsonl does not exist; it was rotated: its lines are in a.jsonl.2, "
        "a.jsonl.1 beside it; give them (--requests=a.jsonl.1,a.jsonl.2)"
    ), line


def test_a_bad_min_rows_is_given_its_own_commands_default_as_the_example(tmp_path):
    """`performance --min_rows=0` suggested `--min_rows=25`, drift's default (its is 100)."""
    line = one_line_error(ann("monitor", "performance", "--min_rows=0"))
    assert line == "error: --min_rows=0 must be an integer in [2, 1000000]; e.g. --min_rows=100"
    line = one_line_error(ann("monitor", "drift", "--min_rows=0"))
    assert line.endswith("; e.g. --min_rows=25"), line


def test_a_log_of_no_requests_is_named_by_its_flag(tmp_path):
    """`--requests=empty.jsonl` was refused as "empty.jsonl holds no requests": the one refusal
    of a --requests file that did not name the flag."""
    log = tmp_path / "empty.jsonl"
    log.write_text("")
    with pytest.raises(RequestLogError) as e:
        read_requests([str(log)], "m", {})
    assert str(e.value).startswith(f"--requests={log} holds no requests; "), e.value


def test_compressed_rotated_files_are_named_in_every_advice_with_the_command_that_joins_them(
    tmp_path, monkeypatch
):
    """logrotate's FILE.2.gz was named only where the log was missing: too few rows beside
    FILE.1 given (FILE gone) said nothing of it (no advice at all), unknown label ids named no
    file, and FILE with FILE.1 and FILE.2.gz named FILE.1 alone."""
    import gzip
    import subprocess

    from ann.monitor.request_log import missing_requests, more_requests

    monkeypatch.chdir(tmp_path)
    for folder in ("rot", "rot3", "rot2"):
        os.mkdir(folder)
        with open(f"{folder}/req.jsonl.1", "w") as f:
            f.write('{"n": 1}\n')
    for folder in ("rot", "rot3"):
        with gzip.open(f"{folder}/req.jsonl.2.gz", "wt") as f:
            f.write('{"n": 2}\n')
    with open("rot3/req.jsonl", "w") as f:
        f.write('{"n": 0}\n')
    with open("rot2/req.jsonl.2", "w") as f:
        f.write('{"n": 2}\n')
    join = "zcat -f rot/req.jsonl.2.gz rot/req.jsonl.1 > rot/req.all.jsonl"
    assert more_requests(["rot/req.jsonl.1"], [1.0]) == (
        f"read the rotated file beside it too: join them into one file ({join}) and give "
        "--requests=rot/req.all.jsonl"
    )
    assert missing_requests(["rot/req.jsonl.1"], [1.0]).startswith(
        f"read the rotated file beside it too: join them into one file ({join}) and give "
        "--requests=rot/req.all.jsonl, and every replica's request log"
    )
    join3 = "zcat -f rot3/req.jsonl.2.gz rot3/req.jsonl.1 rot3/req.jsonl > rot3/req.all.jsonl"
    assert more_requests(["rot3/req.jsonl"], [1.0]) == (
        f"read the rotated files beside it too: join them into one file ({join3}) and give "
        "--requests=rot3/req.all.jsonl"
    )
    subprocess.run(join3, shell=True, check=True)  # the command works: oldest line first
    assert open("rot3/req.all.jsonl").read() == '{"n": 2}\n{"n": 1}\n{"n": 0}\n'
    # Plain files only: given as they are, as before.
    assert more_requests(["rot2/req.jsonl.1"], [1.0]) == (
        "read the rotated file beside it too (--requests=rot2/req.jsonl.1,rot2/req.jsonl.2)"
    )
    # The joined file is the same log's: the report of its too few rows is not another log's.
    assert monitor_main._logs(["rot3/req.jsonl"]) == monitor_main._logs(["rot3/req.all.jsonl"])
    assert monitor_main._logs(["rot/req.jsonl.2.gz"]) == monitor_main._logs(["rot/req.jsonl"])
