"""The server against slow, huge and hostile clients: HTTP limits and timeouts, the connection
cap, cheap refusals before decoding, bounded numbers, the request log off the event loop, the
metrics port and the token file. Loopback only; every wait is bounded."""

import http.client
import json
import os
import resource
import socket
import threading
import zlib

import ml_dtypes  # noqa: F401  (registers bfloat16 with NumPy)
import numpy as np
import pytest
from conftest import ROOT
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_serve import Server, infer_body, request

from ann.serve import protocol
from ann.serve.app import App
from ann.serve.batcher import Batcher
from ann.serve.dataplane import ServedModel
from ann.serve.errors import ServeError
from ann.serve.settings import Settings

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INFER = "/v2/models/digits_cnn/infer"


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} open files, ulimit -Hn is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@pytest.fixture(scope="module")
def strict(digits_export, tmp_path_factory):
    """A server with short timeouts and small limits, a token file and a metrics port."""
    _, out = digits_export
    root = tmp_path_factory.mktemp("limits")
    (root / "token").write_text(TOKEN + "\n")
    raise_fd_limit(2048)
    metrics_port = __import__("test_serve").free_port()
    server = Server(
        [
            f"--model={out}",
            "--max_batch_size=4",
            f"--token_file={root / 'token'}",
            f"--metrics_port={metrics_port}",
            "--header_timeout_s=1.5",
            "--body_timeout_s=1.5",
            "--keepalive_timeout_s=1.5",
            "--max_connections=400",
            "--max_request_line_bytes=1024",
            "--max_header_bytes=4096",
            "--max_headers=30",
            "--max_body_bytes=65536",
        ]
    )
    try:
        server.wait_ready()
        server.metrics_port = metrics_port
        yield server
    finally:
        server.stop()


def one_row() -> bytes:
    return json.dumps(infer_body(np.zeros((1, 8, 8, 1), np.uint8))).encode()


def raw_request(port, data: bytes, timeout=20.0) -> tuple[int, dict, bytes]:
    """Sends raw bytes, reads one HTTP response: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        response = http.client.HTTPResponse(s)
        response.begin()
        return response.status, dict(response.getheaders()), response.read()


def head(path=INFER, headers=(), method="POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: t"]
    lines += [k + b": " + v for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def test_token_file_and_metrics_port(strict):
    port = strict.port
    body = one_row()
    assert request(port, "POST", INFER, body)[0] == 401
    assert request(port, "POST", INFER, body, AUTH)[0] == 200
    assert request(port, "GET", "/metrics")[0] == 401  # the main port keeps its token
    status, headers, text = request(strict.metrics_port, "GET", "/metrics")
    assert status == 200 and "ann_connections" in text and "ann_requests_total" in text
    assert request(strict.metrics_port, "GET", "/v2/health/ready")[0] == 200
    status, _, reply = request(strict.metrics_port, "POST", INFER, body, AUTH)
    assert status == 404 and "metrics port" in reply["error"]


def test_request_line_and_header_limits(strict):
    port = strict.port
    auth = (b"Authorization", f"Bearer {TOKEN}".encode())
    cases = [
        (head("/v2/" + "a" * 2000, [auth], "GET"), 414,
         "request line: expected at most 1024 bytes (--max_request_line_bytes)"),
        (head(headers=[auth] + [(b"X-%d" % i, b"1") for i in range(40)]), 431,
         "headers: expected at most 30 fields (--max_headers)"),
        (head(headers=[auth, (b"X-Big", b"v" * 5000)]), 431,
         "expected at most 4096 bytes (--max_header_bytes)"),
        (head(headers=[auth] + [(b"X-%d" % i, b"v" * 400) for i in range(20)]), 431,
         "headers: expected at most 4096 bytes (--max_header_bytes)"),
        # One header line that never ends: bounded by what the parser may buffer.
        (head(headers=[auth])[:-2] + b"X-Endless: " + b"v" * 200_000, 431, "request head"),
        # Past 64 bits, refused by llhttp: 413 as any body over the limit (it was 400, "got a
        # parse error (Content-Length overflow)").
        (head(headers=[auth, (b"Content-Length", b"9" * 5000)]), 413, "(--max_body_bytes), "
         "got more (Content-Length past 64 bits)"),
        (head(headers=[auth, (b"Content-Length", b"99999999999999999999")]), 413,
         "body: expected at most 65536 bytes"),
        (head(headers=[auth, (b"Content-Length", b"999999999999")]), 413,
         "body: expected at most 65536 bytes"),
    ]  # fmt: skip
    for data, code, message in cases:
        status, headers, body = raw_request(port, data)
        assert status == code, (data[:80], body)
        assert message in json.loads(body)["error"], (message, body)
        assert headers.get("connection") == "close"


def test_huge_numbers_in_headers_are_refused_not_500(strict):
    body = one_row()
    # (5,000 digits are over this server's --max_header_bytes: see test_serve.py for those)
    for value in [b"9" * 3000, b"1" + b"0" * 30, b"-1", b"0x10", b"\xd9\xa1\xd9\xa2"]:
        status, _, reply = raw_request(
            strict.port,
            head(headers=[(b"Authorization", f"Bearer {TOKEN}".encode()),
                          (b"Content-Length", b"%d" % len(body)),
                          (b"Inference-Header-Content-Length", value)]) + body,
        )  # fmt: skip
        assert status == 400, (value, reply)
        assert "Inference-Header-Content-Length between 0" in json.loads(reply)["error"]


def test_slow_clients_are_dropped_and_do_not_block_others(strict):
    """300 clients send `Content-Length: 1000`, 10 bytes, then nothing; a normal client is
    served meanwhile, and every slow one gets 408 and is closed after --body_timeout_s."""
    slow = head(headers=[(b"Authorization", f"Bearer {TOKEN}".encode()),
                         (b"Content-Length", b"1000")]) + b"0123456789"  # fmt: skip
    sockets = []
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", strict.port), timeout=30)
            s.sendall(slow)
            sockets.append(s)
        status, _, reply = request(strict.port, "POST", INFER, one_row(), AUTH)
        assert status == 200, reply
        for s in sockets:
            data = b""
            while chunk := s.recv(65536):  # the server closes: recv ends (or times out: fail)
                data += chunk
            assert data.startswith(b"HTTP/1.1 408 "), data[:200]
            assert b"--body_timeout_s" in data and b"got 10 of its 1000 bytes and then none" in data
    finally:
        for s in sockets:
            s.close()


def test_connection_flood_is_capped_and_recovers(strict):
    """500 connections that send nothing: 400 are kept (--max_connections), the rest get 503;
    all are dropped after --header_timeout_s; the server's open files stay bounded; a normal
    client is served after."""
    sockets, refused = [], 0
    fds = len(os.listdir(f"/proc/{strict.proc.pid}/fd"))
    try:
        for _ in range(500):
            sockets.append(socket.create_connection(("127.0.0.1", strict.port), timeout=30))
        for s in sockets:
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            if data:
                assert data.startswith(b"HTTP/1.1 503 ") and b"--max_connections" in data, data
                refused += 1
    finally:
        for s in sockets:
            s.close()
    assert 100 <= refused < 500
    status, _, reply = request(strict.port, "POST", INFER, one_row(), AUTH)
    assert status == 200, reply
    assert len(os.listdir(f"/proc/{strict.proc.pid}/fd")) <= fds + 10
    text = request(strict.metrics_port, "GET", "/metrics")[2]
    assert 'ann_errors_total{code="503",model="",reason="connections",version=""}' in text


def test_idle_keepalive_is_closed_and_header_timeout_answers_408(strict):
    with socket.create_connection(("127.0.0.1", strict.port), timeout=30) as s:
        s.sendall(head("/v2/health/live", method="GET"))
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        assert s.recv(65536) == b""  # idle past --keepalive_timeout_s: closed, no reply
    with socket.create_connection(("127.0.0.1", strict.port), timeout=30) as s:
        s.sendall(b"POST /v2/models/digits_cnn/infer HTTP/1.1\r\nHost: t\r\n")  # no end
        data = s.recv(65536)
        assert data.startswith(b"HTTP/1.1 408 ") and b"--header_timeout_s" in data


# -- header fuzz: in-process (many cases) and over HTTP (fewer) ---------------------------------

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
numbers = st.one_of(
    st.integers(-10, 10**30).map(lambda n: str(n).encode()),
    st.integers(1, 6000).map(lambda n: b"9" * n),
    st.sampled_from([b"", b" 12", b"12 ", b"0x10", b"1e3", b"+5", b"\xd9\xa1", b"1,2", b"\x00"]),
)
header_names = st.one_of(
    st.text(TOKEN_CHARS, min_size=1, max_size=40).map(str.encode),
    st.sampled_from([b"Content-Length", b"Inference-Header-Content-Length", b"Transfer-Encoding",
                     b"Expect", b"Authorization", b"Connection", b"Content-Encoding",
                     b"Accept-Encoding"]),
    st.binary(min_size=0, max_size=10),
)  # fmt: skip
header_values = st.one_of(
    numbers,
    st.sampled_from([b"chunked", b"gzip", b"chunked, gzip", b"identity", b"deflate",
                     b"100-continue", b"close", b"keep-alive", b"Bearer " + TOKEN.encode(),
                     b"upgrade"]),
    st.text(max_size=30).map(lambda t: t.encode("utf-8")),
    st.text(max_size=30).map(lambda t: t.encode("latin-1", "replace")),
    st.integers(0, 6000).map(lambda n: b"v" * n),
    st.binary(max_size=30),
)  # fmt: skip
fuzzed_heads = st.builds(
    lambda method, path, headers, repeat: (method, path, headers * repeat),
    st.sampled_from([b"POST", b"GET", b"PUT", b"BREW"]),
    st.sampled_from([b"/v2/models/digits_cnn/infer", b"/v2/health/live", b"/%ff%00", b"*"])
    | st.integers(0, 3000).map(lambda n: b"/" + b"a" * n),
    st.lists(st.tuples(header_names, header_values), max_size=12),
    st.integers(1, 15),
)


class FakeTransport:
    def __init__(self):
        self.data, self.closed, self.reading = b"", False, True

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    def write(self, data):
        self.data += data

    def can_write_eof(self):
        return False

    def close(self):
        self.closed = True


@settings(max_examples=600, deadline=None)
@given(case=fuzzed_heads, body=st.binary(max_size=300), split=st.integers(1, 50))
def test_fuzzed_headers_in_process_are_answered_or_awaited(case, body, split):
    from ann.serve.http import Connection, Listener

    limits = Settings(max_body_bytes=65536, max_request_line_bytes=1024, max_header_bytes=4096,
                      max_headers=30)  # fmt: skip
    method, path, headers = case
    seen = []

    def handler(method, path, auth, body, too_large, respond, header_length=None, trace=None, *_):
        seen.append((too_large, header_length))
        respond(413 if too_large is not None else 200, b"{}", None)

    conn = Connection(Listener(handler, limits))
    transport = FakeTransport()
    conn.connection_made(transport)
    data = method + b" " + path + b" HTTP/1.1\r\n"
    data += b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n" + body
    for i in range(0, len(data), split * 97):
        conn.data_received(data[i : i + split * 97])  # never raises
    statuses = [int(line.split()[1]) for line in transport.data.split(b"\r\n")
                if line.startswith(b"HTTP/1.1 ")]  # fmt: skip
    assert set(statuses) <= {100, 200, 400, 413, 414, 431}, transport.data[:300]
    if set(statuses) - {100, 200, 413}:
        assert b'"error":"' in transport.data and b"expected" in transport.data
        assert transport.closed
    if len(path) > 1024 and method != b"BREW":  # (an unknown method is refused first)
        assert 414 in statuses and not seen
    plain = not any(b"\r" in k + v or b"\n" in k + v for k, v in headers)  # (CRLF: a new head)
    if plain and sum(len(k) + len(v) + 4 for k, v in headers) > 4096 + 1024 + 200:
        assert not seen  # no request with that many header bytes reaches the handler


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(headers=st.lists(st.tuples(header_names, header_values), max_size=40),
       binary=st.booleans())  # fmt: skip
@example(headers=[(b"0", b"\r\n")], binary=False)  # found by a CI run: the head ends early
def test_fuzzed_headers_over_http_never_500(strict, headers, binary):
    """Random extra headers on a valid infer whose body length is always right: never a 500,
    every refusal explained."""
    x = np.zeros((1, 8, 8, 1), np.uint8)
    if binary:
        top = json.dumps({"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype":
                          "UINT8", "parameters": {"binary_data_size": 64}}]}).encode()  # fmt: skip
        body = top + x.tobytes()
    else:
        body = json.dumps(infer_body(x)).encode()
    # The length is always right and always last: what matters is what comes before it.
    skip = {b"content-length", b"transfer-encoding", b"connection", b"expect", b"authorization"}
    extra = [(k, v) for k, v in headers if k.lower() not in skip]
    fixed = [(b"Authorization", f"Bearer {TOKEN}".encode()), (b"Connection", b"close"),
             (b"Content-Length", b"%d" % len(body))]  # fmt: skip
    if binary:
        fixed.append((b"Inference-Header-Content-Length", b"%d" % len(top)))
    try:
        status, _, reply = raw_request(strict.port, head(headers=extra + fixed) + body)
    except (http.client.RemoteDisconnected, ConnectionResetError):
        return  # a header the parser refused may close before the reply is read in full
    allowed = {200, 400, 413, 414, 431}
    if any(b"\r" in k + v or b"\n" in k + v for k, v in extra):
        allowed.add(401)  # a CRLF ends the head early: the token arrives in the body, or not at all
    if any(k.lower() == b"content-encoding" for k, _ in extra):
        allowed.add(415)  # an encoding the server does not take (gzip, deflate, identity)
    assert status in allowed, (status, reply)
    if status != 200:
        assert "expected" in json.loads(reply)["error"], reply


# -- in-process: cheap refusals, numbers, BF16, the request log --------------------------------


class FakeModel:
    name = "m"
    inputs = {"x": {"dtype": "float32", "shape": [-1, 2]}}
    outputs = {"y": {"dtype": "float32", "shape": [-1, 2]}}
    manifest = {"platforms": ["cpu"]}


def test_cheap_refusals_come_before_decoding(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the body was decoded")

    monkeypatch.setattr(protocol, "decode_infer", never)
    model = ServedModel("m", "1", FakeModel(), "test")
    app = App([model], Settings())
    replies = []

    def infer(body=b"{not json"):
        app.handle("POST", "/v2/models/m/infer", None, body, None,
                   lambda *reply: replies.append(reply))  # fmt: skip
        status, body, headers = replies.pop()
        return status, json.loads(body)["error"], dict(headers or [])

    status, error, headers = infer()
    assert status == 503 and "still compiling" in error and headers[b"retry-after"] == b"1"
    # Never started: nothing runs.
    full = Batcher({64: lambda inputs: inputs}, 64, 0.0, 64, wait="idle")
    full.queued_rows = 64
    model.ready, model.batcher = True, full
    status, error, _ = infer()
    assert status == 503 and "queue: full (64 rows are queued, limit 64)" in error
    app.start_draining()
    status, error, _ = infer()
    assert status == 503 and "draining" in error
    # Each refusal is counted against the model it named (one series for all models before).
    text = app.metrics.render().decode()
    for reason in ("not_ready", "queue_full", "draining"):
        assert f'ann_errors_total{{code="503",model="m",reason="{reason}",version="1"}} 1.0' in text


def test_refusals_quote_a_clients_path_and_names_clipped():
    app = App([ServedModel("m", "1", FakeModel(), "test")], Settings())
    replies = []
    for method, path in [("GET", "/" + "a" * 5000), ("GET", "/v2/models/m/infer" + "b" * 5000),
                         ("GET", "/v2/models/" + "c" * 5000),
                         ("GET", "/v2/models/m/versions/" + "9" * 5000)]:  # fmt: skip
        app.handle(method, path, None, b"", None, lambda *reply: replies.append(reply))
        status, body, _ = replies.pop()
        error = json.loads(body)["error"]
        assert status in (404, 405) and len(error) < 300 and "..." in error, (status, error)


def test_http_layer_refusals_count_as_requests_and_errors():
    app = App([ServedModel("m", "1", FakeModel(), "test")], Settings())
    app.refused(408, "body_timeout")
    text = app.metrics.render().decode()
    assert 'ann_errors_total{code="408",model="",reason="body_timeout",version=""} 1.0' in text
    assert 'ann_requests_total{code="408",handler="",model="",version=""} 1.0' in text


def test_binary_bf16_gets_the_finite_check():
    signature = {"x": {"dtype": "bfloat16", "shape": [2]}}
    for bad in (np.inf, -np.inf, np.nan):
        raw = np.array([[1.0, bad]], ml_dtypes.bfloat16).tobytes()
        tensor = {"name": "x", "shape": [1, 2], "datatype": "BF16",
                  "parameters": {"binary_data_size": 4}}  # fmt: skip
        head_ = json.dumps({"inputs": [tensor]}).encode()
        with pytest.raises(ServeError, match="expected finite BF16 values"):
            protocol.decode_infer(head_ + raw, signature, {"y": {}}, 8, b"%d" % len(head_))
    with pytest.raises(ServeError, match="expected finite BF16 values"):
        body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BF16", "data": [1, 1e39]}]}
        protocol.decode_infer(json.dumps(body).encode(), signature, {"y": {}}, 8)


def test_header_length_with_5000_digits_is_a_400():
    body = json.dumps(infer_body(np.zeros((1, 8, 8, 1), np.uint8))).encode()
    signature = {"image": {"dtype": "uint8", "shape": [8, 8, 1]}}
    for value in (b"9" * 5000, b"0" * 5000, b"1" * 30):
        with pytest.raises(ServeError, match="Inference-Header-Content-Length") as e:
            protocol.decode_infer(body, signature, {"label": {}}, 8, value)
        assert e.value.status == 400


def test_request_log_writes_off_the_caller_thread_and_counts_drops(tmp_path):
    from ann.serve.request_log import RequestLog

    dropped = []
    log = RequestLog(str(tmp_path / "r.jsonl"), 1.0, 1 << 20, 1, queue_size=2,
                     on_drop=lambda: dropped.append(1))  # fmt: skip
    release, writers = threading.Event(), []
    emit = log._handler.emit

    def slow_emit(record):
        writers.append(threading.current_thread())
        release.wait(30)  # a disk that stalls
        emit(record)

    log._handler.emit = slow_emit
    x = {"x": np.zeros((1, 2), np.float32)}
    for i in range(6):
        log.write("m", "1", f"r{i}", 200, 0.001, x, x)  # returns at once although the disk stalls
    assert dropped and log.dropped == len(dropped) and len(dropped) <= 4
    release.set()
    log.close()
    assert writers and threading.current_thread() not in writers
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 6 - len(dropped) and json.loads(lines[0])["id"] == "r0"


def test_a_second_server_on_one_request_log_is_refused_until_the_first_ends(tmp_path):
    """Two servers on one --request_log were both accepted, and their RotatingFileHandlers
    rotated the file under each other. The lock is the kernel's (flock): closing the log, or
    its process dying (SIGKILL here), releases it."""
    import signal
    import subprocess
    import sys

    from ann.serve.request_log import RequestLog

    path = tmp_path / "r.jsonl"
    first = RequestLog(str(path), 1.0, 1 << 20, 1)
    for spelling in (path, tmp_path / "." / "r.jsonl"):  # one log, however it is written
        with pytest.raises(OSError) as e:  # RequestLogInUse
            RequestLog(str(spelling), 1.0, 1 << 20, 1)
        assert str(e.value) == (
            f"--request_log={spelling} is in use by another server (process {os.getpid()}): "
            "two would rotate one file under each other; give each server its own --request_log"
        )
    model = ServedModel("m", "1", FakeModel(), "test")
    with pytest.raises(OSError, match="is in use by another server"):  # `ann serve`: one line
        App([model], Settings(request_log=str(path), request_log_sample=1))
    assert os.path.exists(f"{path}.lock")
    first.close()
    assert not os.path.exists(f"{path}.lock")  # a clean stop removes it: it was left behind
    RequestLog(str(path), 1.0, 1 << 20, 1).close()  # released by close
    crash = (
        "import os, signal, sys\nfrom ann.serve.request_log import RequestLog\n"
        "RequestLog(sys.argv[1], 1.0, 1 << 20, 1)\nprint('locked', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", crash, str(path)], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.stdout == "locked\n" and result.returncode == -signal.SIGKILL, result.stderr
    assert os.path.exists(f"{path}.lock")  # a crash leaves the file, not the lock
    RequestLog(str(path), 1.0, 1 << 20, 1).close()  # the dead server's lock is gone
    assert not os.path.exists(f"{path}.lock")


def test_a_lock_file_removed_as_its_holder_stops_is_not_the_one_the_next_server_holds(
    tmp_path, monkeypatch
):
    """A clean stop removes FILE.lock: a server that opened it just before, and locks it just
    after, holds a removed file's lock, so it opens FILE.lock again (two servers could else
    hold locks on two files of one name)."""
    from ann.serve import request_log

    path = str(tmp_path / "r.jsonl")
    first = request_log.RequestLog(path, 1.0, 1 << 20, 1)
    real, stopped = request_log.fcntl.flock, []

    def flock(fd, operation):
        if not stopped:  # opened by the second; the first stops before it locks
            stopped.append(fd)
            first.close()
        return real(fd, operation)

    monkeypatch.setattr(request_log.fcntl, "flock", flock)
    second = request_log.RequestLog(path, 1.0, 1 << 20, 1)
    monkeypatch.setattr(request_log.fcntl, "flock", real)
    assert os.stat(f"{path}.lock").st_ino == os.fstat(second._lock).st_ino
    second.close()
    assert not os.path.exists(f"{path}.lock")


def test_connection_cap_evicts_idle_keepalive_first():
    from ann.serve.http import Connection, Listener

    refused = []

    def handler(method, path, auth, body, too_large, respond, header_length=None, trace=None, *_):
        respond(200, b"{}", None)

    listener = Listener(handler, Settings(max_connections=2, retry_after_seconds=3),
                        lambda status, reason: refused.append((status, reason)))  # fmt: skip
    idle, busy, new, extra = (Connection(listener) for _ in range(4))
    transports = [FakeTransport() for _ in range(4)]
    idle.connection_made(transports[0])
    idle.data_received(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")  # answered: idle now
    busy.connection_made(transports[1])
    busy.data_received(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n")  # head incomplete
    new.connection_made(transports[2])  # takes the idle one's place
    assert transports[0].closed and not transports[1].closed and not transports[2].closed
    assert listener.connections == {busy, new}
    extra.connection_made(transports[3])  # no idle one left: refused
    assert transports[3].closed and transports[3].data.startswith(b"HTTP/1.1 503 ")
    assert b"--max_connections" in transports[3].data and refused == [(503, "connections")]
    assert b"\r\nretry-after: 3\r\n" in transports[3].data  # as the app's 503s say it


def test_a_client_that_does_not_read_its_replies_is_not_read_from():
    from ann.serve.http import Connection, Listener

    def handler(method, path, auth, body, too_large, respond, header_length=None, trace=None, *_):
        respond(200, b"{}", None)

    conn, transport = Connection(Listener(handler, Settings())), FakeTransport()
    conn.connection_made(transport)
    conn.pause_writing()  # asyncio: the write buffer passed its high-water mark
    assert not transport.reading
    conn.resume_writing()  # drained
    assert transport.reading


def test_pipelined_requests_of_a_client_that_does_not_read_stop_being_read():
    """Loopback: 2,000 pipelined GETs (100 at a time) whose 100 kB replies are never read. The
    server reads no more once its write buffer is full: it must not answer (and hold) them all."""
    import asyncio

    from ann.serve.http import Listener

    handled = []

    def handler(method, path, auth, body, too_large, respond, header_length=None, trace=None, *_):
        handled.append(path)
        respond(200, b"x" * 100_000, None)

    async def main():
        listener = Listener(handler, Settings())
        server = await asyncio.get_running_loop().create_server(listener, "127.0.0.1", 0)
        listener.start()
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(20):
                writer.write(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n" * 100)
                await asyncio.sleep(0.01)
        finally:
            writer.transport.abort()
            listener.stop()
            server.close()

    asyncio.run(main())
    assert 0 < len(handled) <= 500, len(handled)


def test_a_refused_infer_is_logged_with_its_id(tmp_path):
    # It was logged with "id": null, though the body named one.
    log = tmp_path / "r.jsonl"
    model = ServedModel("m", "1", FakeModel(), "test")
    app = App([model], Settings(request_log=str(log), request_log_sample=1))
    model.ready = True
    model.batcher = Batcher({64: lambda inputs: inputs}, 64, 0.0, 64, wait="idle")
    replies = []
    for body in (
        {"id": "r-1", "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                                  "data": [1, 2, 3]}]},  # wrong shape
        {"id": 5, "inputs": []},  # an id that is not one: none to log
    ):  # fmt: skip
        app.handle("POST", "/v2/models/m/infer", None, json.dumps(body).encode(), None,
                   lambda *reply: replies.append(reply))  # fmt: skip
    app.request_log.close()
    assert [status for status, _, _ in replies] == [400, 400]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["id"], r["status"]) for r in records] == [("r-1", 400), (None, 400)]


def test_the_repository_index_quotes_numbers_as_sent_and_refuses_a_key_given_twice():
    # `{"ready": 1e30}` was quoted as 1e+30; `{"ready": true, "ready": false}` listed every
    # model (the last value, in silence), where an infer body refused it.
    model = ServedModel("m", "1", FakeModel(), "test")
    app = App([model], Settings())
    replies = []
    for body in (b'{"ready": 1e30}', b'{"ready": true, "ready": false}', b'{"ready": 1E30}'):
        app.handle("POST", "/v2/repository/index", None, body, None,
                   lambda *reply: replies.append(reply))  # fmt: skip
    assert [(status, json.loads(body)["error"]) for status, body, _ in replies] == [
        (400, "ready: expected true or false, got 1e30"),
        (400, 'body: expected each key once in an object, got "ready" twice (which one counts '
              "is left open by JSON; send it once)"),
        (400, "ready: expected true or false, got 1E30"),
    ]  # fmt: skip


def test_a_body_too_large_says_its_size_in_bytes():
    # It said "expected at most 1024 bytes (--max_body_bytes), got 5000 (Content-Length)".
    from ann.serve.app import _body_too_large

    assert _body_too_large(1024, 5000).message == (
        "body: expected at most 1024 bytes (--max_body_bytes), got 5000 bytes (Content-Length); "
        "split the request, or send its tensors as binary data (Inference-Header-Content-Length), "
        "smaller than JSON numbers"
    )  # with the client's fix, as a 413 for its rows had (trial 47b)


def test_a_content_length_past_64_bits_is_413_naming_the_limit():
    """trial 42a L1: llhttp refuses it before the header reaches ann (it was 400 "got a parse
    error (Content-Length overflow)"); an honest body over the limit gets 413 naming the flag."""
    from ann.serve.http import Connection, Listener

    refused = []
    listener = Listener(lambda *args: pytest.fail("dispatched"), Settings(max_body_bytes=1024),
                        lambda status, reason: refused.append((status, reason)))  # fmt: skip
    connection, transport = Connection(listener), FakeTransport()
    connection.connection_made(transport)
    connection.data_received(head(headers=[(b"Content-Length", b"9" * 23)]))
    assert transport.data.startswith(b"HTTP/1.1 413 "), transport.data
    assert transport.data.endswith(
        b'{"error":"body: expected at most 1024 bytes (--max_body_bytes), got more (Content-Length '
        b"past 64 bits); split the request, or send its tensors as binary data "
        b'(Inference-Header-Content-Length), smaller than JSON numbers"}'
    ), transport.data
    assert refused == [(413, "body_too_large")] and b"\r\nconnection: close\r\n" in transport.data


def test_a_compressed_body_is_inflated_no_further_than_the_limit():
    """A zip bomb (1 GB of zeros in ~1 MB of gzip) is refused 413 having inflated at most the
    limit plus a byte: zlib's `max_length`, not an inflate-then-measure."""
    import gzip
    import tracemalloc

    from ann.serve import compression

    deflater = zlib.compressobj(9, wbits=31)
    chunk = bytes(1 << 20)
    bomb = b"".join([*(deflater.compress(chunk) for _ in range(1024)), deflater.flush()])
    assert len(bomb) < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ServeError) as e:
            compression.decompress(bomb, b"gzip", 1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert e.value.status == 413 and "once inflated (Content-Encoding: gzip)" in e.value.message
    assert peak < 8 << 20, peak  # the bomb itself is ~1 MB; inflated whole, 1 GB
    # Several gzip members one after another are one body (RFC 1952), held to the limit in all.
    two = gzip.compress(b"a" * 600) + gzip.compress(b"b" * 600)
    assert compression.decompress(two, b"gzip", 1200) == b"a" * 600 + b"b" * 600
    with pytest.raises(ServeError, match="at most 1199 bytes"):
        compression.decompress(two, b"gzip", 1199)
    assert compression.accepted(b"gzip;q=0, deflate") == b"deflate"
    assert compression.accepted(b"identity, gzip;q=0.0") is None
    assert compression.accepted(b"*") == b"gzip"


def test_bytes_after_the_compressed_data_are_named_not_called_uninflatable():
    """Junk after a gzip stream was "got data it cannot inflate (... incorrect header check)";
    after a deflate stream it was dropped unread (the body answered from its first part)."""
    import gzip

    from ann.serve import compression

    body = b'{"inputs": []}'
    for data, encoding, tail in [
        (gzip.compress(body) + b"junk", "gzip", "4 bytes after the end of the gzip stream (6a 75 "
         "6e 6b, not another gzip member)"),
        (zlib.compress(body) + b"junk!more", "deflate", "9 bytes after the end of the deflate "
         "stream (6a 75 6e 6b 21 6d 6f 72...)"),
        (zlib.compress(body, wbits=-15) + b"junk", "deflate", "4 bytes after the end of the "
         "deflate stream (6a 75 6e 6b)"),  # raw deflate, as some clients send
    ]:  # fmt: skip
        with pytest.raises(ServeError) as e:
            compression.decompress(data, encoding.encode(), 1 << 20)
        assert e.value.status == 400 and e.value.message == (
            f"body: expected only {encoding} data (Content-Encoding: {encoding}), got {tail}; "
            "send the compressed body alone"
        ), e.value.message
    # Zero padding after the last member is read, as Python's gzip module reads it; a second
    # member is a member.
    assert compression.decompress(gzip.compress(body) + bytes(7), b"gzip", 1 << 20) == body
    assert gzip.decompress(gzip.compress(body) + bytes(7)) == body
    two = gzip.compress(body) + gzip.compress(body)
    assert compression.decompress(two, b"gzip", 1 << 20) == body * 2


def test_content_type_is_not_read_as_tritons_server_does_not_read_it(strict):
    """An infer's Content-Type is not read (`curl -d` sends x-www-form-urlencoded): a JSON body
    is answered whatever type it is sent as, one that is not JSON refused as not JSON. This was
    not said anywhere (trial 42a L9); the README says so now."""
    for kind in ("application/json", "text/plain", "application/xml",
                 "application/x-www-form-urlencoded", "application/octet-stream"):  # fmt: skip
        status, _, reply = request(strict.port, "POST", INFER, one_row(),
                                   {**AUTH, "Content-Type": kind})  # fmt: skip
        assert status == 200, (kind, reply)
    status, _, reply = request(strict.port, "POST", INFER, b"<infer/>",
                               {**AUTH, "Content-Type": "application/xml"})  # fmt: skip
    assert status == 400 and reply["error"].startswith("body: "), reply
    readme = (ROOT / "README.md").read_text()
    assert "A request's `Content-Type` is not read, as Triton's server does not read it" in readme
