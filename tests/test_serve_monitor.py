"""Monitoring in the server: windows of served rows, /monitor, the gauges in /metrics, late
labels joined by request id (the same accuracy as offline evaluation of the same rows), bad
feedback refused in one line, and a designed shift (brightened digits) detected."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import one_line_error
from test_serve import Server, free_port, infer_body, request
from test_serve_routes import FakeModel, call

from ann import artifact, data
from ann.serve.app import App
from ann.serve.dataplane import ServedModel
from ann.serve.errors import ServeError
from ann.serve.feedback import Predictions
from ann.serve.settings import Settings

WINDOW = 100  # rows per monitoring window in these tests
DIGITS = '("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")'  # its class names, as listed


@pytest.fixture(scope="module")
def monitored(digits_export):
    _, out = digits_export
    server = Server(
        [f"--model={out}", "--max_batch_size=8", f"--monitor_window_rows={WINDOW}",
         "--monitor_window_seconds=3600", "--monitor_feedback_capacity=1000",
         "--monitor_multivariate=on"]
    )  # fmt: skip
    try:
        model = artifact.load(str(out))
        yield server.wait_ready(), model, f"/v2/models/{model.name}"
    finally:
        server.stop()


def digits_rows():
    rows = data.load("digits", "test", cache=True).rows(np.arange(300))
    return rows["image"], rows["label"]


def wait_window(port, path, index, timeout=60):
    """The /monitor reply once window `index` has been tested (the thread ticks every 0.2 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = request(port, "GET", path + "/monitor")
        assert status == 200, body
        if body["window"] is not None and body["window"]["index"] >= index:
            return body
        time.sleep(0.1)
    raise AssertionError(f"window {index} was not tested: {body}")


def send(port, path, x, prefix, rows_per_request=1):
    """One-row (or `rows_per_request`-row) infers with ids PREFIX0, PREFIX1, ... (a lone
    request: PREFIX)."""
    for i in range(0, len(x), rows_per_request):
        request_id = prefix if len(x) == rows_per_request else f"{prefix}{i}"
        body = infer_body(x[i : i + rows_per_request], id=request_id)
        status, _, reply = request(port, "POST", path + "/infer", body)
        assert status == 200, reply


def metric(text, name, **labels):
    """The value of the sample `name{labels...}` in Prometheus text (labels: a subset)."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in /metrics")


def _samples(text, name, model):
    from prometheus_client.parser import text_string_to_metric_families

    return [
        s.labels | {"value": s.value}
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and s.labels.get("model") == model
    ]


def drift_scores(text, model):
    """(feature, method) of every ann_drift_score sample of `model`."""
    return [(s["feature"], s["method"]) for s in _samples(text, "ann_drift_score", model)]


def bin_shares(text, model):
    """ann_feature_bin_share_ratio of `model`: feature -> source -> bin -> share."""
    out = {}
    for s in _samples(text, "ann_feature_bin_share_ratio", model):
        out.setdefault(s["feature"], {}).setdefault(s["source"], {})[s["bin"]] = s["value"]
    return out


def test_feedback_joins_give_offline_accuracy_and_gauges_appear(monitored):
    server, model, path = monitored
    port = server.port
    x, y = digits_rows()
    x, y = x[:200], y[:200]
    want = model({"image": x})
    send(port, path, x[:160], "r")  # one row per request: windows 0 and most of 1
    send(port, path, x[160:], "b", rows_per_request=8)  # 5 requests of 8 rows
    names = model.outputs["label"]["names"]
    labels = [{"id": f"r{i}", "label": int(y[i])} for i in range(0, 160, 2)]
    labels += [{"id": f"r{i}", "label": names[int(y[i])]} for i in range(1, 160, 2)]  # by name
    labels += [{"id": f"b{i - 160}", "label": y[i : i + 8].tolist()} for i in range(160, 200, 8)]
    labels += [{"id": "never-sent", "label": 1}, {"id": "r0", "label": 3}]  # unknown, duplicate
    status, _, reply = request(port, "POST", path + "/feedback", labels)
    assert status == 200, reply
    assert reply["matched"] == 200
    assert reply["unmatched"] == {"unknown": 1, "evicted": 0, "duplicate": 1}
    offline = float(np.mean(want["label"] == y))
    assert reply["accuracy"]["total"] == {
        "accuracy": pytest.approx(offline, abs=1e-12),
        "correct": int(np.sum(want["label"] == y)),
        "labelled": 200,
    }
    # Window 1 (rows 100..199) is closed by its 100th row; its results match offline ones.
    body = wait_window(port, path, 1)
    assert body["window"]["rows"] == WINDOW and body["window"]["closed_by"] == "rows"
    last = slice(100, 200)
    shares = np.bincount(want["label"][last], minlength=10) / WINDOW
    np.testing.assert_allclose(list(body["predictions"]["shares"].values()), shares)
    confidence = want["probabilities"][last].max(-1).mean()
    assert body["accuracy"]["estimated"] == pytest.approx(confidence, rel=1e-6)
    assert "calibrated" in body["accuracy"]["estimated_assumptions"]
    # As the README says it: a lead in either direction (it said "optimistic otherwise").
    assert "off in either direction" in body["accuracy"]["estimated_assumptions"]
    realized_last = body["accuracy"]["realized"]["last"]
    assert realized_last["window"] == 1
    assert realized_last["accuracy"] == pytest.approx(np.mean(want["label"][last] == y[last]))
    assert body["feedback"]["labels"] == 200 and body["model_age_seconds"] > 0

    status, _, text = request(port, "GET", "/metrics")
    assert status == 200
    mv = {"model": model.name}
    assert metric(text, "ann_realized_accuracy_ratio", **mv, window="total") == pytest.approx(
        offline
    )
    assert metric(text, "ann_feedback_labels_total", **mv) == 200
    assert metric(text, "ann_feedback_unmatched_total", **mv, reason="unknown") == 1
    assert metric(text, "ann_drift_windows_total", **mv) == 2
    assert metric(text, "ann_estimated_accuracy_ratio", **mv) == pytest.approx(confidence, rel=1e-6)
    assert metric(text, "ann_prediction_share_ratio", **mv, **{"class": names[3]}) == shares[3]
    assert metric(text, "ann_confidence_ratio_count", **mv) == 200
    assert 0 < metric(text, "ann_model_age_seconds", **mv) < 30 * 86400
    assert metric(text, "ann_drift_window_end_timestamp_seconds", **mv) > 1.7e9


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{nope", "feedback: expected JSON"),
        (b"not json", "got invalid JSON (expected a JSON value at column 1)"),
        (b"[]", 'feedback: expected at least one {"id", "label"}, got []'),
        (b'{"id": "r1"}', 'feedback: expected an object with "id" and "label"'),
        (b'[{"id": "r1", "label": 1}, 7]', 'feedback[1]: expected an object with "id"'),
        (b'{"id": 5, "label": 1}', "feedback.id: expected the infer request's id"),
        (b'{"id": "r1", "label": 10}', "feedback.label: expected a class index in [0, 9]"),
        (b'{"id": "r1", "label": "ten"}', "feedback.label: expected a class index in [0, 9]"),
        (b'{"id": "r1", "label": true}', "feedback.label: expected a class index"),
        (b'{"id": "r1", "label": null}', DIGITS + ", got null"),
        (b'{"id": "r1", "label": [true]}', DIGITS + ", got true"),
        # The element's place, as other refusals give theirs (it said `feedback.label: ...`).
        (b'{"id": "two", "label": [1, "x"]}', "feedback.label[1]: expected a class index in"),
        # The field that is missing is named (it said 'got ["label"]' for a label without id).
        (
            b'{"id": "r1"}',
            'feedback: expected an object with "id" and "label" (and nothing else), got no '
            "'label' field",
        ),
        (
            b'[{"label": 1}]',
            'feedback[0]: expected an object with "id" and "label" (and '
            "nothing else), got no 'id' field",
        ),
        (
            b'{"id": "r1", "label": 1, "x": 2}',
            'feedback: expected an object with "id" and '
            '"label" (and nothing else), got other fields ["x"]',
        ),
        (
            b'{"id": null, "label": 1}',
            "feedback.id: expected the infer request's id (a non-empty string), got null",
        ),
        (b"", 'feedback: expected JSON ({"id", "label"} or a list), got an empty body'),
        # No infer kept an id this long (a million-character id was kept, and echoed).
        (
            b'{"id": "' + b"x" * 257 + b'", "label": 1}',
            "feedback.id: expected at most 256 characters (a UUID is 36), got 257",
        ),
        (
            b'{"id": "eight", "label": [1, 2]}',
            "expected 8 labels (its request had 8 rows), got 2 labels",
        ),
        # Named by its place, as every other refusal of a listed item (a client's file line).
        (
            b'[{"id": "one", "label": 1}, {"id": "eight", "label": [1, 2]}]',
            'feedback[1].label (id "eight"): expected 8 labels (its request had 8 rows), got 2 '
            "labels",
        ),
        (
            b'{"id": "one", "label": [1, 2]}',
            "expected 1 label (its request had 1 row), got 2 labels",
        ),
    ],
)
def test_bad_feedback_is_one_clear_400_and_applies_nothing(monitored, body, message):
    server, model, path = monitored
    send(server.port, path, digits_rows()[0][:8], "eight", rows_per_request=8)
    send(server.port, path, digits_rows()[0][:1], "one")
    before = request(server.port, "GET", path + "/monitor")[2]["feedback"]
    status, _, reply = request(server.port, "POST", path + "/feedback", body)
    assert status == 400 and message in reply["error"], reply
    assert "\n" not in reply["error"] and reply["model_name"] == model.name
    assert request(server.port, "GET", path + "/monitor")[2]["feedback"] == before


def test_designed_shift_is_detected_within_one_window(monitored):
    """Brightened digits (every pixel + 4, at most 16: the data's range) are detected in the
    first window of 100 one-row requests."""
    pytest.importorskip("ann.monitor.drift")
    server, model, path = monitored
    port = server.port
    x, _ = digits_rows()
    # Whatever earlier tests left in the open window is filled up with unshifted rows first,
    # so the shifted rows make a window of their own (run alone, none are left).
    opened = request(port, "GET", path + "/monitor")[2]["open_window"]
    start = opened["index"]
    if opened["rows"]:
        send(port, path, x[-(WINDOW - opened["rows"]) :], "fill")
        start += 1
    send(port, path, np.minimum(x[:WINDOW].astype(np.int32) + 4, 16).astype(np.uint8), "s")
    body = wait_window(port, path, start)
    assert body["drift"]["detected"] and body["drift"]["share"] >= 0.5, body["drift"]
    text = request(port, "GET", "/metrics")[2]
    assert metric(text, "ann_drift_detected", model=model.name) == 1
    assert metric(text, "ann_drift_share_ratio", model=model.name) >= 0.5
    # The multivariate test, which the server could not run (the dashboard had a panel for it).
    assert body["drift"]["multivariate"]["method"] == "mmd", body["drift"]["multivariate"]
    assert body["drift"]["multivariate"]["drifted"]
    assert ("multivariate", "mmd") in drift_scores(text, model.name)
    # Each test on one scale (>= 1: drifted): the raw scores are a p-test's statistic or a
    # distance, each in its own units, and the dashboard drew them on one axis.
    strength = {(s["feature"], s["method"]): s["value"]
                for s in _samples(text, "ann_drift_strength", model.name)}  # fmt: skip
    assert set(strength) == set(drift_scores(text, model.name))
    assert strength[("multivariate", "mmd")] >= 1  # it drifted
    assert max(strength.values()) >= 1 and min(strength.values()) >= 0
    # The top features' histograms, current beside reference on the same bins.
    bins = bin_shares(text, model.name)
    scored = {f for f, _ in drift_scores(text, model.name)} - {"multivariate"}
    assert set(bins) == {f for f in scored if not f.startswith("output:")}
    assert len(bins) == 10
    for feature, sources in bins.items():
        assert set(sources) == {"reference", "current"}, feature
        assert list(sources["reference"]) == list(sources["current"]), feature  # same bins
        lows = [float(b.split("[")[1].split(",")[0]) for b in sorted(sources["current"])]
        assert len(lows) == 10 and lows == sorted(lows), feature  # text order is bin order
        for shares in sources.values():
            assert sum(shares.values()) == pytest.approx(1.0)
    moved = max(
        sum(abs(s["current"][b] - s["reference"][b]) for b in s["current"]) for s in bins.values()
    )
    assert moved > 0.5, bins  # brightened pixels: mass moved to the upper bins


def test_ann_monitor_feedback_sends_a_labels_file(monitored, tmp_path):
    server, model, path = monitored
    x, y = digits_rows()
    send(server.port, path, x[:12], "cli")
    labels = tmp_path / "labels.jsonl"
    lines = [{"id": f"cli{i}", "label": int(y[i])} for i in range(12)]
    lines.append({"id": "gone", "label": 0})
    labels.write_text("".join(json.dumps(line) + "\n" for line in lines))
    url = f"--url=http://127.0.0.1:{server.port}"
    command = [sys.executable, "-m", "ann.monitor", "feedback", f"--model={model.name}", url,
               f"--labels={labels}", "--batch=5"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("13 labels sent: 12 rows joined; not joined: unknown 1,"), done
    # Why they did not join: "0 rows joined" after a restart, or behind several replicas, and
    # a file sent twice, were counts alone, exit 0.
    assert "warning: 1 of 13 labels names request ids this server does not hold. The simplest " in (
        done.stderr
    )
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert "warning: 12 of 13 labels are for rows labelled before (the first label counts): " in (
        again.stderr
    )
    send(server.port, path, x[:1], "lone")  # one row: "1 row joined" (it said "1 rows")
    labels.write_text(json.dumps({"id": "lone", "label": int(y[0])}) + "\n")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("1 label sent: 1 row joined; not joined: unknown 0,"), done
    # A batch the server refuses: its message, the lines of the batch, exit 1.
    labels.write_text(json.dumps({"id": "cli0", "label": 99}) + "\n")
    line = one_line_error(subprocess.run(command, capture_output=True, text=True, timeout=120))
    assert "line 1 refused (400): feedback[0] (line 1).label: expected a class index in" in line
    assert line.endswith("; nothing was applied"), line
    # A later batch: its file lines (a blank line counted), the label's own line, and what was
    # applied before it (it said "labels 6-10 refused ... feedback[2]", and nothing of 1-5).
    good = [json.dumps({"id": f"cli{i}", "label": int(y[i])}) for i in range(7)]
    bad = json.dumps({"id": "cli7", "label": 99})
    labels.write_text("\n".join([*good[:3], "", *good[3:], bad, ""]) + "\n")
    line = one_line_error(subprocess.run(command, capture_output=True, text=True, timeout=120))
    assert "lines 7-9 refused (400): feedback[2] (line 9).label: expected a class index" in line
    assert line.endswith(
        "; lines 1-6 were applied before them: send the file from line 7 on to go on"
    ), line
    # A bad line is worded as the server words a bad body (reason and column), not as
    # Python's json module ("not JSON (Expecting value)").
    expected = (
        f'error: --labels={labels} line 2: expected a JSON object {{"id": ..., "label": ...}}'
    )
    for text, got in [
        (b"{not json", "invalid JSON (unexpected character, expected a string key at column 2)"),
        (b"nan", "invalid JSON (expected a JSON value at column 1; NaN and Infinity are not JSON)"),
        (b'{"id": "r\xe9"}', "text that is not UTF-8 (byte 0xe9 at column 10)"),
        (b"[1, null]", "[1,null]"),
    ]:
        labels.write_bytes(b'{"id": "cli0", "label": 1}\n' + text + b"\n")
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert one_line_error(done) == f"{expected}, got {got}"
    # A URL without http:// is named as such (it said "cannot reach the server (<urlopen error
    # unknown url type: localhost>); is it running?").
    bare = [*command[:5], f"--url=localhost:{server.port}", *command[6:]]
    line = one_line_error(subprocess.run(bare, capture_output=True, text=True, timeout=120))
    assert line == (
        f"error: --url=localhost:{server.port}: expected the server's URL starting with http:// "
        f"or https://, e.g. --url=http://localhost:{server.port}"
    )
    labels.write_text(json.dumps({"id": "cli0", "label": 1}) + "\n")
    gone = [*command[:5], f"--url=http://127.0.0.1:{free_port()}", *command[6:]]
    line = one_line_error(subprocess.run(gone, capture_output=True, text=True, timeout=120))
    assert line.endswith("cannot reach the server (Connection refused); is it running?"), line


def test_ann_monitor_feedback_says_how_to_reach_the_server(monitored):
    """A plain-HTTP server asked over https:// is said to be one (it said "[SSL:
    WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"); a path in --url is said to be
    put before the route."""
    from ann.monitor.feedback import send

    server, model, _ = monitored
    items = [{"id": "nobody", "label": 0}]
    with pytest.raises(ValueError) as e:
        send(f"https://127.0.0.1:{server.port}", model.name, items)
    assert str(e.value) == (
        f"https://127.0.0.1:{server.port}/v2/models/{model.name}/feedback: the server at "
        f"127.0.0.1:{server.port} does not speak HTTPS (`ann serve` serves plain HTTP); use "
        f"--url=http://127.0.0.1:{server.port}"
    )
    with pytest.raises(ValueError) as e:
        send(f"http://127.0.0.1:{server.port}/ann/", model.name, items)
    said = str(e.value)
    assert f"line 1 refused (404): no route POST /ann/v2/models/{model.name}/feedback; " in said
    assert said.endswith(
        "(--url is the server's root URL: /ann is put before the route); nothing was applied"
    ), said


def test_a_401_names_feedbacks_own_token_flag_and_one_line_is_line_1():
    """A server with a token: it said "lines 1-1 refused (401): authorization: expected header
    'Authorization: Bearer <token>' ...", a header where this command takes a flag."""
    import http.server
    import threading

    from ann.monitor.feedback import send

    class Refuses(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = b'{"error": "authorization: expected header \'Authorization: Bearer <token>\'"}'
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    items = [{"id": "a", "label": 1}]
    try:
        with pytest.raises(ValueError) as none:
            send(url, "digits", items)
        with pytest.raises(ValueError) as wrong:
            send(url, "digits", items, token="x", token_from="$ANN_SERVE_TOKEN")
    finally:
        server.shutdown()
        server.server_close()
    assert str(none.value) == (
        f"{url}/v2/models/digits/feedback: line 1 refused (401): the server wants its token; "
        "give it with --token_file=FILE or $ANN_SERVE_TOKEN; nothing was applied"
    )
    assert "refused (401): the token sent ($ANN_SERVE_TOKEN) is not the server's; give its " in (
        str(wrong.value)
    )


@pytest.mark.parametrize(
    "url, message",
    [
        # A traceback (http.client.InvalidURL: URL can't contain control characters).
        ("http://local host:1", "expected the server's URL, got a space in it at character 13; "
         "a URL has none (remove it)"),
        ("http://a\tb:1", 'expected the server\'s URL, got the control character "\\t" in it at '
         "character 9; a URL has none (remove it)"),
        # The route is feedback's to add (the server said "no route POST /v2/v2/models/...").
        ("http://localhost:8000/v2", "expected the server's root URL, without a route (feedback "
         "adds /v2/models/NAME/feedback), e.g. --url=http://localhost:8000"),
        ("http://h:1/ann/v2/models/digits/feedback", "expected the server's root URL, without a "
         "route (feedback adds /v2/models/NAME/feedback), e.g. --url=http://h:1/ann"),
        ("http://h:1/?x=1", "expected the server's root URL, without a query (?...) or fragment "
         "(#...), e.g. --url=http://h:1"),
        # urllib's words before: "Port could not be cast to integer value as 'abc'".
        ("http://localhost:abc", "expected a port in [1, 65535] after the host, got abc"),
        ("http://localhost:0", "expected a port in [1, 65535] after the host, got 0"),
        ("http://:8000", "expected a host after http://, e.g. --url=http://127.0.0.1:8000"),
        # It said "expected the server's URL starting with http:// or https://".
        ("https://", "expected a host after https://, e.g. --url=https://127.0.0.1:8000"),
        ("http://[::1:8000", "expected an IPv6 host closed by ], e.g. --url=http://[::1]:8000"),
        # Python's "encoding with 'idna' codec failed (UnicodeError: label empty or too long)".
        ("http://a..b:8000", "the host a..b is not a host name (labels of 1 to 63 letters, "
         "digits and -, not starting or ending with -, between dots); e.g. "
         "--url=http://127.0.0.1:8000"),
        ("http://hôst:8000", "the host hôst is not an ASCII host name (a host name is letters, "
         "digits, - and .; an internationalized one goes in its ASCII form, xn--hst-kna); e.g. "
         "--url=http://127.0.0.1:8000"),
        # "cannot reach the server (Name or service not known); is it running?"
        ("https://999.1.1.1", "the host 999.1.1.1 is not an IPv4 address (four numbers from 0 "
         "to 255, as 127.0.0.1); e.g. --url=https://127.0.0.1:8000"),
    ],
)  # fmt: skip
def test_a_url_that_is_not_the_servers_root_is_refused_before_the_labels_are_read(url, message):
    from ann.monitor.feedback import check_url

    with pytest.raises(ValueError) as e:
        check_url(url)
    shown = url.replace("\t", "\\t")
    assert str(e.value) == f"--url={shown}: {message}"
    for fine in ("http://127.0.0.1:8000", "http://localhost:8000/", "https://gateway/ann/"):
        check_url(fine)


def test_ann_monitor_feedback_checks_the_url_first_in_one_line(tmp_path):
    import http.server
    import threading

    missing = tmp_path / "nowhere.jsonl"  # the URL is refused before the labels are read
    for url in ("http://local host:1", "http://localhost:1/v2"):
        command = [sys.executable, "-m", "ann.monitor", "feedback", "--model=digits",
                   f"--url={url}", f"--labels={missing}"]  # fmt: skip
        line = one_line_error(subprocess.run(command, capture_output=True, text=True, timeout=120))
        assert line.startswith(f"error: --url={url}: expected the server's "), line
    # Nothing listens: said before the labels are read (a whole file was read first, then
    # "cannot reach the server" from the first batch). A file that is not there is said first
    # (nothing read: test_monitor_performance.py); one that is there is read after the reach.
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text("not json\n")
    command[6] = f"--labels={damaged}"
    port = free_port()
    command[5] = f"--url=http://127.0.0.1:{port}"
    line = one_line_error(subprocess.run(command, capture_output=True, text=True, timeout=120))
    assert line == (
        f"error: --url=http://127.0.0.1:{port}: cannot reach the server (Connection refused); "
        "is it running?"
    ), line
    # An ann server answers its liveness route: the labels come next.
    server = http.server.HTTPServer(("127.0.0.1", 0), _foreign_server([(200, b'{"live":true}')]))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        command[5] = f"--url=http://127.0.0.1:{server.server_address[1]}"
        line = one_line_error(subprocess.run(command, capture_output=True, text=True, timeout=120))
    finally:
        server.shutdown()
        server.server_close()
    assert line.startswith(f"error: --labels={damaged} line 1: expected a JSON object"), line


def _foreign_server(answers, posted=None):
    """A handler class answering each GET with the next (status, body) of `answers` and each
    POST with `answers[-1]`; the bodies POSTed are appended to `posted`."""
    import http.server

    class Answers(http.server.BaseHTTPRequestHandler):
        def _answer(self, status, body):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._answer(*answers[0])

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if posted is not None:
                posted.append(body)
            self._answer(*answers[-1])

        def log_message(self, *args):
            pass

    return Answers


@pytest.mark.parametrize(
    "live, said",
    [
        # A 404 was taken for a live server, and the labels were POSTed to it.
        ((404, b""), 'answered 404 with a body that is not JSON, not {"live": true}'),
        ((200, b"<html>hi</html>"), 'answered 200 with a body that is not JSON, not {"live"'),
        ((200, b'{"status":"ok"}'), 'answered 200 with {"status":"ok"}, not {"live": true}'),
    ],
)
def test_a_url_that_is_not_an_ann_server_gets_no_labels_and_one_line(tmp_path, live, said):
    """trial 42a M1: a server that is not ann at --url (GET 404, POST 200 `{"ok":true}`)."""
    import http.server
    import threading

    from ann.monitor.feedback import check_reachable

    posted = []
    handler = _foreign_server([live, (200, b'{"ok":true}')], posted)
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(ValueError) as e:
            check_reachable(url)
    finally:
        server.shutdown()
        server.server_close()
    assert str(e.value).startswith(f"--url={url}: GET /v2/health/live {said}"), str(e.value)
    assert str(e.value).endswith(
        "not an ann server's answer; is --url the root URL of `ann serve`?"
    ), str(e.value)
    assert posted == []


def test_the_liveness_check_sends_the_token_as_the_feedback_requests_do():
    """A gateway in front of the server that wants the token on every route: the check, which
    now wants ann's answer, sends the token the labels go with."""
    import http.server
    import threading

    from ann.monitor.feedback import check_reachable

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.headers.get("Authorization") == "Bearer s3cret"
            body = b'{"live":true}' if ok else b'{"error":"authorization: expected a token"}'
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        check_reachable(url, token="s3cret")
        with pytest.raises(ValueError) as e:
            check_reachable(url)
    finally:
        server.shutdown()
        server.server_close()
    assert str(e.value) == (
        f"--url={url}: GET /v2/health/live answered 401: authorization: expected a token"
    )


@pytest.mark.parametrize(
    "reply, problem",
    [
        (b'{"ok":true}', 'no "matched" count'),  # a KeyError traceback
        (b"<html>hi</html>", "not JSON"),  # "error: Expecting value: line 1 column 1 (char 0)"
        (b"[1]", "a JSON list, not an object"),
    ],
)
def test_a_feedback_reply_that_is_not_anns_is_one_line_naming_the_url(reply, problem):
    import http.server
    import threading

    from ann.monitor.feedback import send

    handler = _foreign_server([(200, reply)])
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    items = [{"id": "a", "label": 1}, {"id": "b", "label": 2}]
    try:
        with pytest.raises(ValueError) as e:
            send(url, "digits", items, batch=2)
    finally:
        server.shutdown()
        server.server_close()
    assert str(e.value) == (
        f"{url}/v2/models/digits/feedback: lines 1-2 answered {reply.decode()} ({problem}): not "
        "an ann server's answer; is --url the root URL of `ann serve`?"
    )


def test_a_torn_last_line_of_a_labels_file_is_skipped_as_the_request_logs_is(tmp_path, capsys):
    """It was refused outright ("line 3: expected a JSON object ..., got invalid JSON") while
    drift skipped a request log's torn last line; both read by ann.monitor.jsonlines now."""
    from ann.monitor.feedback import read_labels

    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"id": "a", "label": 1}\n{"id": "b", "label": 2}\n{"id": "c", "la')
    assert read_labels(str(labels)) == [(1, {"id": "a", "label": 1}), (2, {"id": "b", "label": 2})]
    assert capsys.readouterr().err == (  # a plain line (it carried absl's "W1202 ... ]")
        f"warning: --labels={labels} line 3: skipping it, torn (no end of line: the file was read "
        "while being written, or its writer was stopped)\n"
    )
    # Cut short before the last line (its writer stopped, another went on): torn too, as a
    # request log's is; a line that is not JSON for another reason is damage.
    labels.write_text('{"id": "a", "la\n{"id": "b", "label": 2}\n')
    assert read_labels(str(labels)) == [(2, {"id": "b", "label": 2})]
    said = capsys.readouterr().err
    assert f"--labels={labels} line 1: skipping it, torn (a record cut short" in said
    labels.write_text('{"id": "a", la}\n{"id": "b", "label": 2}\n')
    with pytest.raises(ValueError) as e:
        read_labels(str(labels))
    assert str(e.value).startswith(
        f'--labels={labels} line 1: expected a JSON object {{"id": ..., "label": ...}}, got '
        "invalid JSON ("
    ), str(e.value)
    # A number out of range in a line's object is named by its place (it said "expected a
    # JSON object ..., got a number out of range (1e400 at column 22; ...)" of an object).
    labels.write_text('{"id": "a", "label": 1}\n{"id": "b", "label": 1e400}\n')
    with pytest.raises(ValueError) as e:
        read_labels(str(labels))
    assert str(e.value) == (
        f"--labels={labels} line 2: label: expected a number within a 64-bit float's range "
        "(at most about 1.8e308 in size), got 1e400"
    )


def test_a_jsonl_file_saved_with_a_byte_order_mark_is_read(tmp_path):
    """A labels file, request log or metrics.jsonl an editor saved with a UTF-8 BOM was refused
    ("BOM is not supported at column 1; ... delete that line"), and deleting it lost a record.
    Every JSONL reader reads past it, as utf-8-sig does."""
    from ann.monitor.feedback import read_labels
    from ann.monitor.jsonlines import objects
    from ann.train.writers import read_records

    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "label": 1}\n{"id": "b", "label": 2}\n')
    assert read_labels(str(path)) == [(1, {"id": "a", "label": 1}), (2, {"id": "b", "label": 2})]
    assert [n for n, _ in objects(str(path), "--requests", "", ValueError, "")] == [1, 2]
    path.write_bytes(b'\xef\xbb\xbf{"step": 1, "loss": 0.5}\n')
    assert read_records(str(path)) == [{"step": 1, "loss": 0.5}]


def test_monitoring_off_says_so():
    app = App([ServedModel("m", "1", FakeModel(), "test")], Settings(monitor="off"))
    for route in ("/v2/models/m/monitor", "/v2/models/m/versions/1/feedback"):
        status, body, _ = call(app, "POST" if "feedback" in route else "GET", route)
        assert status == 409 and "--monitor=off" in body["error"], body


def test_the_feedback_store_is_bounded_and_says_why_a_label_is_not_joined():
    store = Predictions(capacity=4, names=["a", "b"])  # two generations of 2
    for i in range(6):
        store.record(f"r{i}", np.array([i % 2]), window=0)
    assert 2 <= len(store) <= 4  # the last capacity / 2 at least
    ids = (0, 2, 4, 5, 5, 9)  # forgotten, evicted, kept, kept, again, never sent
    joined = store.join(store.parse([{"id": f"r{i}", "label": "b"} for i in ids]))
    assert joined == {"matched": 2, "unmatched": {"unknown": 2, "evicted": 1, "duplicate": 1}}
    assert store.realized(closed=1)["last"] == {
        "window": 0, "accuracy": 0.5, "correct": 1, "labelled": 2
    }  # fmt: skip
    assert store.realized(closed=0)["last"] is None  # window 0 still open
    assert json.dumps(store.realized(1))  # JSON-ready


def test_an_empty_request_id_keeps_no_prediction_as_feedback_refuses_it():
    # Kept, though `/feedback` refuses "" as an id: a prediction no label could reach.
    from ann.serve.metrics import Metrics
    from ann.serve.monitoring import ModelMonitor

    monitor = ModelMonitor(ServedModel("old", "1", OldExport(), "test"), Settings(), Metrics(8))
    inputs = {"x": np.zeros((1, 3), np.float32)}
    outputs = {"probabilities": np.ones((1, 2), np.float32), "label": np.zeros(1, np.int32)}
    monitor.record_batch(inputs, outputs, 1, [("", 0, 1)])
    assert monitor.report()["feedback"]["kept"] == 0
    monitor.record_batch(inputs, outputs, 1, [("r-1", 0, 1)])
    assert monitor.report()["feedback"]["kept"] == 1
    with pytest.raises(ServeError, match=r"feedback.id: expected the infer request's id \(a non"):
        monitor.feedback({"id": "", "label": 0})


def test_unknown_labels_of_a_model_with_several_versions_name_them_and_version():
    # It blamed a restart or replicas, where the ids were held by the model's other version.
    from ann.monitor.feedback import unjoined_warnings

    [line] = unjoined_warnings({"unknown": 3}, 5, ["1", "2"], "2", held_by={"1": 3})
    assert line == (
        "3 of 5 labels name request ids version 2 does not hold; version 1 holds 3 of them (the "
        "model serves versions 1, 2, each joining labels only to its own requests): send them "
        "with --version=1"
    )
    # Held by no version (the server says so): it was circular, version 2 saying to send them
    # with --version=1 and version 1 with --version=2; now the simplest cause, as for one.
    for named in (None, "1"):
        [line] = unjoined_warnings({"unknown": 3}, 3, ["1", "2"], "2", named, held_by={})
        assert line.startswith(
            "3 of 3 labels name request ids no version of the model this server serves holds "
            "(1, 2: each joins labels only to its own requests). The simplest cause: ids never "
            "sent to this server"
        ), line
        assert "--version=" not in line, line
    [line] = unjoined_warnings({"unknown": 3}, 5, ["2"], "2", None, "late.jsonl", "digits")
    # The simplest cause first: ids never sent here.
    assert line.startswith(
        "3 of 5 labels name request ids this server does not hold. The simplest cause: ids never "
        "sent to this server (a typo, or requests to another model). Else: it keeps"
    ), line
    # Behind replicas: the fix named as a whole command (it was cut off at `--requests=`, with
    # FILE for the file sent and no --model), not only the README section.
    assert line.endswith(
        "behind several replicas a label joins only on the replica that served its request: "
        "join the labels offline with `ann monitor performance --model=MODEL "
        "--labels=late.jsonl --requests=LOG[,LOG...]` (MODEL: the export directory or models:/ "
        "URI this server serves as digits; LOG: every replica's request log, rotated files too; "
        "README: Realized performance offline)"
    ), line


def test_labels_for_another_version_than_an_explicit_version_say_so(tmp_path):
    """`ann monitor feedback --version=2` with labels of version 1's requests warned of a
    restart or replicas (the served versions were only asked without --version). A stand-in
    server answers as `ann serve` does: version 2 holds none of the ids."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def _reply(self, body):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # liveness, then the model's metadata
            self._reply({"live": True} if "health" in self.path else {"versions": ["1", "2"]})

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            assert self.path == "/v2/models/m/versions/2/feedback", self.path
            self._reply({"matched": 0, "unmatched": {"unknown": 3, "evicted": 0, "duplicate": 0},
                         "unknown_held_by": {"1": 3}, "accuracy": None, "model_name": "m",
                         "model_version": "2"})  # fmt: skip

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"id": f"r{i}", "label": 0}) + "\n" for i in range(3)))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ann.monitor", "feedback", "--model=m", "--version=2",
             f"--url=http://127.0.0.1:{server.server_address[1]}", f"--labels={labels}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        "warning: 3 of 3 labels name request ids version 2 (--version=2) does not hold; version "
        "1 holds 3 of them (the model serves versions 1, 2, each joining labels only to its own "
        "requests): send them with --version=1\n"
    ), done.stderr


class OldExport:
    """A model whose export predates reference samples (its manifest lists none)."""

    name, directory = "old", "/nonexistent/old-export"
    inputs = {"x": {"dtype": "float32", "shape": [-1, 3]}}
    outputs = {
        "probabilities": {"dtype": "float32", "shape": [-1, 2]},
        "label": {"dtype": "int32", "shape": [-1], "names": ["no", "yes"]},
    }
    manifest = {"platforms": ["cpu"], "files": {}, "created": "2026-11-30T00:00:00Z"}


def test_every_row_of_a_request_past_the_window_is_tested_with_its_labels(monkeypatch):
    # A 64-row request in windows of 25: 25 rows were tested (the estimate), 64 labelled (the
    # realized accuracy), and the other 39 rows were never tested anywhere.
    from ann.serve import monitoring
    from ann.serve.metrics import Metrics

    settings = Settings(monitor_window_rows=25, monitor_min_labels=1)
    rng = np.random.default_rng(0)
    p = rng.uniform(0.5, 1.0, 64).astype(np.float32)
    inputs = {"x": rng.normal(size=(64, 3)).astype(np.float32)}
    outputs = {"probabilities": np.stack([p, 1 - p], axis=1), "label": np.zeros(64, np.int32)}
    for cap, tested in ((monitoring.MAX_WINDOW_BYTES, 74), (24 * 30, 30)):  # 24 bytes a row
        monkeypatch.setattr(monitoring, "MAX_WINDOW_BYTES", cap)
        monitor = monitoring.ModelMonitor(
            ServedModel("old", "1", OldExport(), "test"), settings, Metrics(8)
        )
        monitor.record_batch({"x": inputs["x"][:10]}, {k: v[:10] for k, v in outputs.items()}, 10)
        monitor.record_batch(inputs, outputs, 64, [("r-1", 0, 64)])  # past the window's 25 rows
        monitor.feedback({"id": "r-1", "label": [0] * 64})
        monitor.step()
        report = monitor.report()
        assert report["window"]["rows"] == 74 and report["window"]["sampled_rows"] == tested
        assert report["window"]["capped_by_memory"] == (tested < 74)
        assert report["open_window"]["rows"] == 0
        if tested == 74:  # the estimate and the realized accuracy are of the same rows
            top = np.concatenate([p[:10], p])
            assert report["accuracy"]["estimated"] == pytest.approx(top.mean(), rel=1e-6)
            assert report["accuracy"]["realized"]["last"]["labelled"] == 64


def test_a_batch_and_its_ids_join_one_window_whatever_the_thread_does():
    """The batch that filled a window was recorded, then each of its requests' ids from its
    reply: the monitoring thread could close the full window in between (the racy order is
    played here: the batch, the thread's step, the labels), and the ids then joined the next
    window, whose labels they counted for. The batch and its ids are one call now."""
    import asyncio

    from ann.serve.batcher import Batcher
    from ann.serve.metrics import Metrics
    from ann.serve.monitoring import ModelMonitor

    settings = Settings(monitor_window_rows=100, monitor_min_labels=1)
    monitor = ModelMonitor(ServedModel("old", "1", OldExport(), "test"), settings, Metrics(8))
    inputs = {"x": np.zeros((100, 3), np.float32)}
    outputs = {"probabilities": np.full((100, 2), 0.5, np.float32),
               "label": np.zeros(100, np.int32)}  # fmt: skip
    monitor.record_batch(inputs, outputs, 100, [("a", 0, 60), ("b", 60, 100), (None, 0, 0)])
    monitor.step()  # the thread closes the full window before any reply is sent
    assert monitor.window == 1
    reply = monitor.feedback([{"id": "a", "label": [0] * 60}, {"id": "b", "label": [1] * 40}])
    assert reply["accuracy"]["last"] == {"window": 0, "accuracy": 0.6, "correct": 60,
                                         "labelled": 100}  # fmt: skip

    # The batcher hands each answered request's id and rows to `on_rows` with the batch.
    seen = []

    async def main():
        run = {size: (lambda x: {"y": x["x"] * 2}) for size in (1, 2, 4, 8)}
        batcher = Batcher(run, 8, 0.05, 64, wait="full",
                          on_rows=lambda *batch: seen.append(batch))  # fmt: skip
        batcher.start()
        x = {"x": np.ones((3, 1), np.float32)}
        first = batcher.submit_nowait(x, 3, request_id="r-1")
        second = batcher.submit_nowait({"x": x["x"][:2]}, 2)
        await asyncio.gather(first, second)
        await batcher.close()

    asyncio.run(main())
    [(_, _, rows, ids)] = seen
    assert rows == 5 and ids == [("r-1", 0, 3), (None, 3, 5)]


class _HeldPool:
    """A drift process that has not read the reference yet: every submit waits for `release`."""

    def __init__(self):
        import concurrent.futures

        self.future = concurrent.futures.Future()
        self.submitted = []

    def submit(self, fn, *args):
        self.submitted.append(fn.__name__)
        return self.future

    def release(self):
        if not self.future.done():
            self.future.set_result(None)


def test_a_model_turns_ready_while_its_drift_process_still_starts(monkeypatch):
    """Starting the drift process and reading the reference (`ModelMonitor.prepare`: seconds of
    imports at niceness 19) go on beside the compile; the model is ready once compiled, without
    waiting for them (they were awaited after the compile: a third to a half of the digits MLP's
    "compiled in" seconds). A window's drift test that comes meanwhile waits for the reference
    rather than finding none."""
    import asyncio
    import threading

    from ann.serve import dataplane

    def compile_buckets(model, sizes, constant_weights_mb):
        return {size: (lambda x: {"y": x["x"]}) for size in sizes}, False

    monkeypatch.setattr(dataplane, "compile_buckets", compile_buckets)

    class Compiled(OldExport):  # what the ready line names
        device, weights_bytes = "cpu:0", 0

    served = ServedModel("m", "1", Compiled(), "test")
    dp = dataplane.DataPlane([served], Settings(monitor="on", max_batch_size=4))
    dp.monitoring.pool.shutdown()  # never started: no submit reached it
    pool = served.monitor._pool = _HeldPool()

    async def main():
        try:
            await asyncio.wait_for(dp.compile(served), 10)
            assert served.ready and dp.ready
            assert pool.submitted == ["_load_reference"] and served.monitor.reference is None
            # The monitoring thread's drift test of a first window, meanwhile: it waits.
            waiter = threading.Thread(target=served.monitor.prepare)
            waiter.start()
            waiter.join(0.3)
            assert waiter.is_alive()
            pool.release()
            waiter.join(10)
            assert not waiter.is_alive() and served.monitor.reference is not None
            assert pool.submitted == ["_load_reference"]  # read once
            await served.batcher.close()
        finally:
            pool.release()  # the executor's thread must end for asyncio.run to return

    asyncio.run(main())


def test_windows_close_by_time_and_an_old_export_says_drift_is_unavailable_once(caplog):
    from ann.serve.metrics import Metrics
    from ann.serve.monitoring import ModelMonitor

    served = ServedModel("old", "1", OldExport(), "test")
    settings = Settings(monitor_window_rows=1000, monitor_window_seconds=0.1)
    monitor = ModelMonitor(served, settings, Metrics(8))
    rng = np.random.default_rng(0)
    p = rng.uniform(0.5, 1.0, 250).astype(np.float32)
    probabilities = np.stack([p, 1 - p], axis=1)
    rows = [({"x": rng.normal(size=(1, 3)).astype(np.float32)},
             {"probabilities": probabilities[i : i + 1], "label": np.zeros(1, np.int32)})
            for i in range(250)]  # fmt: skip
    for inputs, outputs in rows[:50]:
        monitor.record_batch(inputs, outputs, 1)
    time.sleep(0.15)  # past --monitor_window_seconds, but 50 rows are fewer than 100
    monitor.step()
    assert monitor.report()["window"] is None and monitor.report()["open_window"]["rows"] == 50
    # What closes it is said beside its rows (a user waited on a window of 50 rows unknowing).
    opened = monitor.report()["open_window"]
    assert opened["open_seconds"] >= 0.1
    assert (opened["closes_at_rows"], opened["closes_after_seconds"], opened["min_rows"]) == (
        1000,
        0.1,
        100,
    )
    for inputs, outputs in rows[50:150]:
        monitor.record_batch(inputs, outputs, 1)
    monitor.step()  # 150 rows and old enough: closed by time, then handled
    report = monitor.report()
    assert report["window"]["rows"] == 150 and report["window"]["closed_by"] == "seconds"
    assert report["drift"] is None and "no reference.safetensors" in report["drift_unavailable"]
    assert report["predictions"]["shares"] == {"no": 1.0, "yes": 0.0}
    assert report["accuracy"]["estimated"] == pytest.approx(p[:150].mean(), rel=1e-6)
    assert 0 < report["model_age_seconds"]
    for inputs, outputs in rows[150:]:
        monitor.record_batch(inputs, outputs, 1)
    time.sleep(0.15)
    monitor.step()
    assert monitor.report()["window"]["index"] == 1
    said = [r for r in caplog.records if "drift unavailable" in r.getMessage()]
    assert len(said) == 1, said  # once, not once a window


def _accuracy_alert(text):
    """The models for which `min by (model, version) (ann_realized_accuracy_ratio{window="last"})
    < 0.9` (ann/observability/rules.py) is true in Prometheus text: PromQL's min skips NaN
    unless every value is NaN, and a comparison with NaN is false."""
    from prometheus_client.parser import text_string_to_metric_families

    by_model = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "ann_realized_accuracy_ratio" and s.labels["window"] == "last":
                by_model.setdefault((s.labels["model"], s.labels["version"]), []).append(s.value)
    firing = []
    for key, values in by_model.items():
        known = [v for v in values if not np.isnan(v)]
        if known and min(known) < 0.9:
            firing.append(key)
    return firing


def test_realized_accuracy_is_nan_until_labels_come_so_the_alert_cannot_fire():
    from ann.serve.metrics import Metrics
    from ann.serve.monitoring import ModelMonitor

    metrics = Metrics(8)
    served = ServedModel("old", "1", OldExport(), "test")
    monitor = ModelMonitor(served, Settings(monitor_window_rows=100), metrics)
    text = metrics.render().decode()
    mv = {"model": "old", "version": "1"}
    for window in ("last", "total"):  # NaN, as /monitor's null; never 0 ("all wrong")
        assert np.isnan(metric(text, "ann_realized_accuracy_ratio", **mv, window=window)), text
    assert _accuracy_alert(text) == []
    # No other monitoring gauge says anything before its first window.
    for name in ("ann_estimated_accuracy_ratio", "ann_prediction_share_ratio",
                 "ann_drift_share_ratio", "ann_drift_detected", "ann_drift_score",
                 "ann_drift_strength", "ann_confidence_ratio_count"):  # fmt: skip
        assert f"\n{name}{{" not in text, name

    rng = np.random.default_rng(0)
    for i in range(100):  # window 0: predicted "no" every time
        outputs = {"probabilities": np.array([[0.9, 0.1]], np.float32),
                   "label": np.zeros(1, np.int32)}  # fmt: skip
        x = {"x": rng.normal(size=(1, 3)).astype(np.float32)}
        monitor.record_batch(x, outputs, 1, [(f"r{i}", 0, 1)])
    labels = [{"id": f"r{i}", "label": "yes" if i < 20 else "no"} for i in range(100)]
    assert monitor.feedback(labels)["matched"] == 100
    text = metrics.render().decode()
    assert metric(text, "ann_realized_accuracy_ratio", **mv, window="total") == 0.8
    assert np.isnan(
        metric(text, "ann_realized_accuracy_ratio", **mv, window="last")
    )  # 0 still open
    assert _accuracy_alert(text) == []
    monitor.step()  # window 0 closes with its labels
    text = metrics.render().decode()
    assert metric(text, "ann_realized_accuracy_ratio", **mv, window="last") == 0.8
    assert _accuracy_alert(text) == [("old", "1")]
    assert metric(text, "ann_estimated_accuracy_ratio", **mv) == pytest.approx(0.9)


def test_a_window_with_few_labels_is_not_judged_so_two_wrong_labels_do_not_page():
    """Two wrong labels for a request of a new window made it the "last" window at 0.0 and
    fired the accuracy alert, with 400 correct labels before them. A window's (and the
    total's) accuracy needs --monitor_min_labels labelled rows (100)."""
    from ann.monitor.feedback import realized_text
    from ann.serve.metrics import Metrics
    from ann.serve.monitoring import ModelMonitor

    metrics = Metrics(8)
    served = ServedModel("old", "1", OldExport(), "test")
    monitor = ModelMonitor(served, Settings(monitor_window_rows=100), metrics)
    mv = {"model": "old", "version": "1"}
    rng = np.random.default_rng(0)
    outputs = {"probabilities": np.array([[0.9, 0.1]], np.float32),
               "label": np.zeros(1, np.int32)}  # fmt: skip
    for i in range(200):  # windows 0 and 1, each closed by its 100th row
        x = {"x": rng.normal(size=(1, 3)).astype(np.float32)}
        monitor.record_batch(x, outputs, 1, [(f"r{i}", 0, 1)])
        monitor.step()
    reply = monitor.feedback([{"id": f"r{i}", "label": "no"} for i in range(99)])
    assert reply["accuracy"]["total"] == {"accuracy": None, "correct": 99, "labelled": 99}
    assert reply["min_labels"] == 100 and reply["accuracy"]["last"] is None
    reply = monitor.feedback([{"id": "r99", "label": "no"}])  # window 0's 100th: judged
    assert reply["accuracy"]["last"] == {"window": 0, "accuracy": 1.0, "correct": 100,
                                         "labelled": 100}  # fmt: skip
    reply = monitor.feedback([{"id": "r100", "label": "yes"}, {"id": "r101", "label": "yes"}])
    assert reply["accuracy"]["last"]["window"] == 0  # window 1's two labels: not yet judged
    text = metrics.render().decode()
    assert metric(text, "ann_realized_accuracy_ratio", **mv, window="last") == 1.0
    assert _accuracy_alert(text) == []
    reply = monitor.feedback([{"id": f"r{i}", "label": "yes"} for i in range(102, 200)])
    text = metrics.render().decode()  # window 1 has its 100 labels, all wrong: now it pages
    assert metric(text, "ann_realized_accuracy_ratio", **mv, window="last") == 0.0
    assert _accuracy_alert(text) == [("old", "1")]
    assert monitor.report()["feedback"]["min_labels"] == 100
    # What `ann monitor feedback` says of a reply with too few labels (it said "realized
    # accuracy" of one label; then, with the accuracy null, nothing right).
    few = {"accuracy": {"total": {"accuracy": None, "correct": 1, "labelled": 1}},
           "min_labels": 100}  # fmt: skip
    assert realized_text(few) == (
        "1 labelled row, too few for a realized accuracy (the server's --monitor_min_labels: 100)"
    )
    assert realized_text(reply) == "realized accuracy 0.5000 over 200 labelled rows"


def test_drift_is_not_judged_on_too_few_rows_so_its_gauges_and_alert_cannot_fire(digits_export):
    """A window's drift was judged on any 10 rows (--monitor_window_rows' least): the gauges
    and the drift alert could fire on noise. Windows below --monitor_min_rows (25: the
    chi-square rule of 5 expected counts a bin) are refused by the settings, and one that held
    fewer anyway is not tested: state too_few_rows, share and detected NaN, no scores."""
    from ann.serve.metrics import Metrics
    from ann.serve.monitoring import ModelMonitor

    with pytest.raises(ValueError) as e:
        Settings(monitor_window_rows=10)
    assert str(e.value) == (
        "--monitor_window_rows=10 is below --monitor_min_rows=25, the fewest rows drift is "
        "judged on: no window would be; raise --monitor_window_rows to at least 25, or lower "
        "--monitor_min_rows"
    )
    assert Settings(monitor_window_rows=10, monitor_min_rows=10).monitor_min_rows == 10
    with pytest.raises(ValueError, match=r"--monitor_min_rows=1 must be an integer in \[2,"):
        Settings(monitor_min_rows=1)

    _, out = digits_export
    model = artifact.load(str(out))
    metrics = Metrics(8)
    monitor = ModelMonitor(ServedModel(model.name, "1", model, "test"), Settings(), metrics)
    assert monitor.min_rows == 100  # a window closed by time: max(100, min rows), at most rows
    monitor.rows_per_window = 30
    monitor.drift_min_rows = 40  # a window of fewer rows than drift is judged on
    x, _ = digits_rows()
    bright = np.minimum(x[:70].astype(np.int32) + 4, 16).astype(np.uint8)

    def window(rows):
        monitor.record_batch({"image": rows}, model({"image": rows}), len(rows))
        monitor.step()
        return monitor.report()["drift"], metrics.render().decode()

    drift, text = window(bright[:30])
    assert drift["state"] == "too_few_rows" and drift["detected"] is None, drift
    assert (drift["rows"], drift["min_rows"], drift["features"]) == (30, 40, [])
    mv = {"model": model.name, "version": "1"}
    assert np.isnan(metric(text, "ann_drift_detected", **mv))  # `== 1` is false for NaN
    assert np.isnan(metric(text, "ann_drift_share_ratio", **mv))
    assert drift_scores(text, model.name) == [] and bin_shares(text, model.name) == {}
    monitor.rows_per_window, monitor.drift_min_rows = 40, 25  # the same shift, enough rows
    drift, text = window(bright[30:])
    assert drift["state"] == "detected", drift["share"]
    assert metric(text, "ann_drift_detected", **mv) == 1 and drift_scores(text, model.name)
    monitor.rows_per_window, monitor.drift_min_rows = 10, 25
    drift, text = window(bright[:10])  # too few again: the last verdict's gauges are cleared
    assert drift["state"] == "too_few_rows" and np.isnan(metric(text, "ann_drift_detected", **mv))
    assert drift_scores(text, model.name) == [] and bin_shares(text, model.name) == {}


def test_monitor_correction_reaches_each_window_and_a_bad_choice_is_one_line(digits_export):
    """--monitor_correction corrects a window's per-feature p-values (the verdicts and the
    share read the corrected ones); a Settings(...) value outside a flag's choices was kept
    (--monitor_multivariate=yes ran as off)."""
    from ann.serve.metrics import Metrics
    from ann.serve.monitoring import ModelMonitor

    for name, value in (("monitor_correction", "holm"), ("monitor_multivariate", "yes")):
        with pytest.raises(ValueError) as e:
            Settings(**{name: value})
        choices = "none, bonferroni, fdr_bh, fdr_by" if value == "holm" else "on, off"
        assert str(e.value) == f"--{name}={value}: expected one of {choices}"
    _, out = digits_export
    model = artifact.load(str(out))
    settings = Settings(monitor_correction="bonferroni")
    monitor = ModelMonitor(ServedModel(model.name, "1", model, "test"), settings, Metrics(8))
    monitor.rows_per_window = 30
    x, _ = digits_rows()
    monitor.record_batch({"image": x[:30]}, model({"image": x[:30]}), 30)
    monitor.step()
    drift = monitor.report()["drift"]
    assert drift["correction"] == "bonferroni", drift
    tested = [f for f in drift["features"] if f["p_value"] is not None]
    assert tested and all(f["p_adjusted"] == min(1, f["p_value"] * len(tested)) for f in tested)


def _wait_ready(proc: subprocess.Popen, port: int, seconds: float = 180) -> None:
    """Waits for the server `proc` on `port` to be ready; fails with its output if it exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if request(port, "GET", "/v2/health/ready", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read()[-3000:]


def test_ctrl_c_stops_the_server_and_its_drift_process_without_a_traceback(digits_export):
    """A terminal's Ctrl-C sends SIGINT to the whole process group: the server drains and
    exits 0, and the drift process (spawned while the model compiled) ignores it rather than
    printing a KeyboardInterrupt traceback of its own."""
    _, out = digits_export
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ann.serve", f"--port={port}", f"--model={out}", "--monitor=on"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's job
    )
    try:
        _wait_ready(proc, port)
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, output[-3000:]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]
    # The console says when it listens, when the model is ready (requests before get 503) and
    # that it stops (it exited without a word).
    said = [line.split(" ")[0] for line in output.splitlines() if not line.startswith("W")]
    assert said == ["serving", "ready:", "stopping"], output[-3000:]
    # The ready line names the device the export runs on (artifact.device_for).
    assert re.search(r"ready: digits_cnn/\w+ on cpu:0 \(batch sizes 1, ", output), output[-3000:]
    assert "stopping (SIGINT): no new connections" in output
    deadline = time.monotonic() + 10
    while _running_in_group(proc.pid):  # the drift process was stopped, not left behind
        assert time.monotonic() < deadline, _running_in_group(proc.pid)
        time.sleep(0.2)


def test_sigterm_while_the_drift_process_starts_exits_at_once_and_says_what_a_stop_says(
    digits_export, tmp_path
):
    """The drift process's start (`ModelMonitor.prepare`, in a thread beside the compile) goes
    on after the model is ready: a SIGTERM then waited for it (seconds of imports at niceness
    19; here its start takes 300 s). The server exits at once, says what any stop says (no
    `stopped: not waiting for ...` line: nothing served waited for it) and without
    multiprocessing's "leaked semaphore objects" warning; the drift process follows it."""
    _, out = digits_export
    (tmp_path / "slow_drift.py").write_text(
        "import time\n"
        "from ann.serve import monitoring\n"
        "def start(server):\n"
        "    monitoring._start_drift_process(server)\n"
        "    time.sleep(300)\n"
    )
    port = free_port()
    code = (
        "import concurrent.futures, multiprocessing, os, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from absl import flags\n"
        "import slow_drift\n"
        "import ann.serve.__main__ as m, ann.serve.monitoring as mon\n"
        "mon._drift_pool = lambda: concurrent.futures.ProcessPoolExecutor(\n"
        "    1, mp_context=multiprocessing.get_context('spawn'), initializer=slow_drift.start,\n"
        "    initargs=(os.getpid(),))\n"
        "m.define_flags()\n"
        f"flags.FLAGS(['serve', '--model={out}', '--port={port}', '--monitor=on'])\n"
        "m.main(['serve'])\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its drift process in its group, found by `_running_in_group`
    )
    try:
        _wait_ready(proc, port)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)  # it waited for the drift process's 300 s start
        output = proc.stdout.read()  # to its end: the resource tracker's too
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, output[-3000:]
    said = [line.split(" ")[0] for line in output.splitlines() if not line.startswith("W")]
    assert said == ["serving", "ready:", "stopping"], output[-3000:]
    deadline = time.monotonic() + 10
    while _running_in_group(proc.pid):  # the drift process exits with the server
        assert time.monotonic() < deadline, _running_in_group(proc.pid)
        time.sleep(0.2)


def _running_in_group(pgid):
    """The processes of process group `pgid` that have not exited (zombies left out), from
    /proc: [(pid, command line)]."""
    running = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)"
            if int(fields[2]) == pgid and fields[0] != "Z":
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    running.append((int(entry), f.read().replace(b"\0", b" ").decode()))
        except (OSError, IndexError, ValueError):
            pass
    return running


def test_ctrl_c_while_labels_are_sent_says_what_was_applied(monkeypatch):
    # It said only "interrupted (Ctrl-C)", with thousands of labels applied (a fresh trial).
    import io
    import urllib.request

    from ann.monitor import feedback as client

    calls = []

    def urlopen(request, timeout):
        calls.append(request)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return io.BytesIO(b'{"matched": 2, "unmatched": {}, "accuracy": null}')

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    items = [{"id": f"r{i}", "label": 0} for i in range(7)]
    with pytest.raises(KeyboardInterrupt) as e:
        client.send("http://127.0.0.1:1", "m", items, batch=2, lines=[1, 2, 4, 5, 6, 7, 8])
    assert str(e.value) == (
        "interrupted (Ctrl-C): lines 1-5 were applied; lines 6-7 were in flight (applied whole "
        "or not at all): send the file from line 6 on to go on (an id labelled twice is counted "
        "as a duplicate, not twice)"
    )


def test_the_drift_process_exits_when_the_server_is_killed():
    """A server killed outside its control (`kill -9`, out of memory) never stops its pool: the
    drift process (started as the server starts it, `Monitoring`) and multiprocessing's
    resource tracker were left running under PID 1. The drift process watches the server's pid
    and exits within about a second; the tracker follows it."""
    parent = (
        "import os, sys, time\n"
        "from ann.serve.monitoring import Monitoring\n"
        "pool = Monitoring().pool\n"
        "print(pool.submit(os.getpid).result(), flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", parent],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its drift process and tracker in its process group
    )
    try:
        worker = int(proc.stdout.readline())
        assert worker in [pid for pid, _ in _running_in_group(proc.pid)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while _running_in_group(proc.pid):
            assert time.monotonic() < deadline, (
                f"left running after the server's SIGKILL: {_running_in_group(proc.pid)}"
            )
            time.sleep(0.2)
    finally:
        for pid, _ in _running_in_group(proc.pid):  # before the fix: the worker, the tracker
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_drift_process_compiles_through_the_servers_compilation_cache(tmp_path):
    """--monitor_multivariate=on's MMD test compiles in the drift process (4 executables at its
    first window, 4.2-5.5 s at each start); with --compilation_cache_dir they are read from the
    server's cache at the next start (1.0 s). The drift process used no cache at all."""
    from conftest import without_compilation_cache

    cache = tmp_path / "cache"
    code = (
        "import os, sys\n"
        "import numpy as np\n"
        "from ann import compilation_cache\n"
        "from ann.monitor.drift import mmd_test\n"
        "from ann.serve.monitoring import Monitoring\n"
        "compilation_cache.enable(sys.argv[1], '--compilation_cache_dir', 'fix', 64)\n"
        "monitoring = Monitoring()\n"
        "rng = np.random.default_rng(0)\n"
        "try:\n"
        "    x, y = rng.normal(size=(60, 3)), rng.normal(size=(40, 3))\n"
        "    monitoring.pool.submit(mmd_test, x, y, 20).result()\n"
        "finally:\n"
        "    monitoring.stop()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(cache)],
        capture_output=True,
        text=True,
        timeout=180,
        env=without_compilation_cache(),  # the tests' own cache would reach it through $JAX_...
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = os.listdir(cache)  # the server itself compiled nothing
    assert any(name.startswith("jit__mmd_permutations-") for name in written), written


def test_a_killed_drift_process_is_started_again_for_the_next_window(digits_export):
    """The drift process killed on its own (the OOM killer picks the largest): every later
    window's test raised BrokenProcessPool, drift gone for the server's life. A new one is
    started, the reference read into it again, and the window tested."""
    import signal

    from ann.serve.metrics import Metrics
    from ann.serve.monitoring import ModelMonitor, Monitoring

    _, out = digits_export
    model = artifact.load(str(out))
    monitoring = Monitoring()
    try:
        served = ServedModel(model.name, "1", model, "test")
        monitor = ModelMonitor(served, Settings(), Metrics(8), monitoring.pool)
        monitoring.add(monitor)
        monitor.prepare()
        monitor.rows_per_window = 30
        x, _ = digits_rows()

        def window(rows):
            monitor.record_batch({"image": rows}, model({"image": rows}), len(rows))
            monitor.step()
            return monitor.report()["drift"]

        assert window(x[:30])["state"] == "not_detected"
        first = monitoring.pool
        (pid,) = list(first._processes)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        assert window(x[30:60])["state"] == "not_detected"
        assert monitoring.pool is not first and monitor.drift_unavailable is None
    finally:
        monitoring.stop()


def test_a_stop_does_not_wait_for_a_drift_test_in_progress():
    """trial 42a M3: SIGTERM with monitoring on took 1.5-4 s (0.2 s with --monitor=off): the
    stop waited for the drift process (niceness 19, starved on a busy node) to finish its test
    and exit. It is told to end now (SIGTERM, which its watch thread takes: a test in progress
    is abandoned, a compilation-cache write would be waited for), and queued tests cancelled."""
    from concurrent.futures.process import BrokenProcessPool

    from ann.serve.monitoring import Monitoring, _signals_blocked

    monitoring = Monitoring()
    try:
        with _signals_blocked():  # spawned as the server spawns it (`ModelMonitor.prepare`)
            worker = monitoring.pool.submit(os.getpid).result()
        busy = monitoring.pool.submit(time.sleep, 120)  # a drift test that would take 120 s
        while not busy.running():  # handed to the worker (a queued one is cancelled, as before)
            time.sleep(0.01)
    finally:
        monitoring.stop()  # it waited the 120 s for the test, then for the process's exit
    assert isinstance(busy.exception(timeout=0), BrokenProcessPool)  # not finished: abandoned
    assert not _alive(worker)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class LanguageExport:
    """A language model's signature: tokens padded with id 0, the next token of its names."""

    names = ["<pad>", "<unk>", "\n", " ", *"abcdefghijkl"]
    name, directory = "lm", "/nonexistent/lm-export"
    inputs = {"tokens": {"dtype": "int32", "shape": [-1, 8], "names": names,
                         "padding": {"id": 0, "side": "right"}}}  # fmt: skip
    outputs = {
        "probabilities": {"dtype": "float32", "shape": [-1, len(names)]},
        "next_token": {"dtype": "int32", "shape": [-1], "names": names},
    }
    manifest = {"platforms": ["cpu"], "files": {}, "created": "2026-11-30T00:00:00Z"}


def test_the_padding_token_is_refused_as_a_label_and_class_names_are_listed_quoted():
    """A language model's feedback took `"label": "<pad>"` as a next-token label (the padding
    token never is one); its refusal listed the names as `(<pad>, <unk>, \\n,  , !, ...`, the
    space name invisible. The server's monitor and the offline join refuse alike."""
    from ann.monitor import performance
    from ann.monitor.request_log import Requests
    from ann.serve.feedback import padding_class
    from ann.serve.metrics import Metrics
    from ann.serve.monitoring import ModelMonitor

    lm = LanguageExport()
    assert padding_class(lm.inputs, lm.outputs, "next_token") == 0
    assert padding_class(OldExport.inputs, OldExport.outputs, "label") is None
    monitor = ModelMonitor(ServedModel("lm", "1", lm, "test"), Settings(), Metrics(8))
    for label in ("<pad>", 0):
        with pytest.raises(ServeError) as e:
            monitor.feedback({"id": "r-1", "label": label})
        said = json.dumps(label)
        assert e.value.message == (
            f'feedback.label: got {said}, the padding token ("<pad>", class 0), which is never a '
            "label; give the true next token's class index or name"
        ), e.value.message
    with pytest.raises(ServeError) as e:
        monitor.feedback({"id": "r-1", "label": "ab"})
    assert e.value.message == (
        'feedback.label: expected a class index in [0, 15] or a class name ("<pad>", "<unk>", '
        '"\\n", " ", "a", "b", "c", "d", "e", "f", "g", "h", ... (16 in all)), got "ab"'
    ), e.value.message
    assert monitor.feedback({"id": "r-1", "label": " "})["unmatched"]["unknown"] == 1
    # Offline, as the server: `ann monitor performance` joins with the same refusal.
    requests = Requests(logged=[], skipped={}, others={})
    with pytest.raises(performance.LabelsError, match=r"line 3: .*the padding token"):
        performance.join(requests, [(3, {"id": "r", "label": "<pad>"})], lm.names,
                         "next_token", "probabilities", "labels.jsonl", padding=0)  # fmt: skip


def test_a_feedback_reply_says_which_other_version_holds_the_unknown_ids():
    """`ann monitor feedback` named another version whenever the model had several, whether it
    held the ids or not: labels no version served were sent back and forth (v2: "with
    --version=1"; v1: "e.g. --version=2"). The reply counts, per other version, the unknown
    ids it holds."""
    app = App(
        [ServedModel("old", v, OldExport(), "test") for v in ("1", "2")],
        Settings(monitor_min_labels=1),
    )
    inputs = {"x": np.zeros((1, 3), np.float32)}
    outputs = {"probabilities": np.ones((1, 2), np.float32), "label": np.zeros(1, np.int32)}
    first = app.dataplane.models["old"]["1"].monitor
    first.record_batch(inputs, outputs, 1, [("r-1", 0, 1)])
    first.record_batch(inputs, outputs, 1, [("r-2", 0, 1)])

    def feedback(version, items):
        replies = []
        app.handle("POST", f"/v2/models/old/versions/{version}/feedback", None,
                   json.dumps(items).encode(), None, lambda *r: replies.append(r))  # fmt: skip
        [(status, body, _)] = replies
        assert status == 200, body
        return json.loads(body)

    labels = [{"id": i, "label": 0} for i in ("r-1", "r-2", "never")]
    reply = feedback("2", labels)
    assert reply["unmatched"]["unknown"] == 3 and reply["unknown_held_by"] == {"1": 2}, reply
    reply = feedback("1", labels)  # joined here; "never" is held by no other version
    assert reply["matched"] == 2 and reply["unknown_held_by"] == {}, reply


def test_windows_closed_in_one_tick_test_only_the_latest_so_the_readme_sketch_waits():
    """The README's walk-through sent its 400 requests (two windows of 200) in 0.35 s: both
    windows closed before the thread's next tick, window 0 was never drift-tested
    (`skipped_windows` 1) and its `# after window 0` output could not be had by running the
    sketch. The rule stays (at most one test a second per model); the sketch waits for each
    window's results (`GET .../monitor`) before it sends the next window's rows."""
    import pathlib

    from ann.serve.metrics import Metrics
    from ann.serve.monitoring import ModelMonitor

    monitor = ModelMonitor(
        ServedModel("old", "1", OldExport(), "test"), Settings(monitor_window_rows=25), Metrics(8)
    )
    p = np.full((25, 1), 0.9, np.float32)
    batch = ({"x": np.zeros((25, 3), np.float32)},
             {"probabilities": np.hstack([p, 1 - p]), "label": np.zeros(25, np.int32)})  # fmt: skip
    monitor.record_batch(*batch, 25)
    # Full, closed at the thread's next tick: named, where `window` was null with no word
    # (trials 47b, 47c); so is a closed one, and the one under test while its tests run (the
    # first waits for the drift process).
    assert (monitor.report()["window"], monitor.report()["testing_window"]) == (None, 0)
    monitor.record_batch(*batch, 25)  # the second window closes before the thread's tick
    assert (monitor.report()["window"], monitor.report()["testing_window"]) == (None, 1)
    said = []
    drift = monitor._drift
    monitor._drift = lambda *a: said.append(monitor.report()["testing_window"]) or drift(*a)
    monitor.step()
    assert said == [1] and monitor.report()["testing_window"] is None
    # The reply's keys are the ones /openapi.json documents (the server adds the model's two).
    from ann.serve import openapi

    schema = openapi.template()["components"]["schemas"]["Monitor"]["properties"]
    assert set(monitor.report()) | {"model_name", "model_version"} == set(schema)
    assert (monitor.report()["window"]["index"], monitor.report()["skipped_windows"]) == (1, 1)
    for _ in range(2):  # a tick between windows: each is tested
        monitor.record_batch(*batch, 25)
        monitor.step()
    assert (monitor.report()["window"]["index"], monitor.report()["skipped_windows"]) == (3, 1)

    readme = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("Send it traffic whose requests carry an `id`")
    sketch = readme[readme.index("```python", start) : readme.index("```\n", start + 200)]
    assert 'urlopen(url + "/monitor")' in sketch and "time.sleep" in sketch, sketch
    assert "$ python sketch.py   # its first line (window 0)" in readme
