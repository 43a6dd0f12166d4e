"""The server over real HTTP on loopback: protocol, batching, errors, overload, SIGTERM."""

import concurrent.futures
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ann import artifact, data
from ann.registry import Registry
from ann.serve import protocol
from ann.serve.errors import ServeError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None, headers=None, timeout=30):
    """(status, headers, parsed JSON or text) over a fresh loopback connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        kind = response.getheader("content-type", "")
        parsed = json.loads(raw) if kind.startswith("application/json") else raw.decode()
        return response.status, dict(response.getheaders()), parsed
    finally:
        conn.close()


class Server:
    """`python -m ann.serve` in a subprocess; always stopped."""

    def __init__(self, args, env=None, base_env=None, cwd=None):
        """`env` over `base_env` (default: this process's environment); run in `cwd`."""
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ann.serve", f"--port={self.port}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**(os.environ if base_env is None else base_env), **(env or {})},
            cwd=cwd,
        )

    def wait_ready(self, timeout=180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(self.proc.stdout.read().decode()[-3000:])
            try:
                if request(self.port, "GET", "/v2/health/ready", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("server did not turn ready")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


def infer_body(x, name="image", datatype="UINT8", **extra):
    return {
        "inputs": [{"name": name, "shape": list(x.shape), "datatype": datatype,
                    "data": x.reshape(-1).tolist()}],
        **extra,
    }  # fmt: skip


@pytest.fixture(scope="module")
def served(digits_export, tmp_path_factory):
    """Two registered versions (champion = 1) and the export directory, one server."""
    _, out = digits_export
    root = tmp_path_factory.mktemp("serve")
    registry = Registry(str(root / "reg"))
    registry.register(str(out), "digits", aliases=["champion"])
    registry.register(str(out), "digits", allow_duplicate=True)
    server = Server(
        [
            "--model=models:/digits@champion",
            "--model=models:/digits/2",
            f"--model={out}",
            f"--registry={root / 'reg'}",
            "--max_batch_size=8",
            "--max_queue_delay_ms=5",
            "--max_body_bytes=100000",
            f"--request_log={root / 'requests.jsonl'}",
            "--request_log_sample=1",
        ]
    )
    try:
        yield server.wait_ready(), artifact.load(str(out)), root
    finally:
        server.stop()


def test_infer_metadata_health_metrics(served):
    server, model, root = served
    port = server.port
    x = data.load("digits", "test", cache=True).rows(np.arange(5))["image"]
    want = model({"image": x})

    status, headers, body = request(port, "POST", "/v2/models/digits/infer",
                                    infer_body(x, id="req-1"))  # fmt: skip
    assert status == 200, body
    assert (body["model_name"], body["model_version"], body["id"]) == ("digits", "1", "req-1")
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["probabilities"]["shape"] == [5, 10]
    assert (
        outputs["probabilities"]["datatype"] == "FP32" and outputs["label"]["datatype"] == "INT32"
    )
    np.testing.assert_allclose(
        np.reshape(outputs["probabilities"]["data"], (5, 10)), want["probabilities"], rtol=1e-5
    )
    assert outputs["label"]["data"] == want["label"].tolist()

    # Versions are addressable; the export directory serves under its manifest name.
    status, _, body = request(port, "POST", "/v2/models/digits/versions/2/infer",
                              infer_body(x[:1], outputs=[{"name": "label"}]))  # fmt: skip
    assert status == 200 and body["model_version"] == "2"
    assert [o["name"] for o in body["outputs"]] == ["label"]
    status, _, body = request(port, "POST", "/v2/models/digits_cnn/infer", infer_body(x[:2]))
    assert status == 200 and len(body["model_version"]) == 12

    status, _, meta = request(port, "GET", "/v2/models/digits")
    assert status == 200 and meta["name"] == "digits" and meta["model_version"] == "1"
    assert meta["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, 8, 8, 1]}]
    assert {o["name"] for o in meta["outputs"]} == {"probabilities", "label"}
    # The step and how it was chosen, not the training machine's path (it showed the workdir).
    assert set(meta["parameters"]["source"]) == {"step", "selected_by"}, meta["parameters"]
    # The temperature its probabilities are divided by, as an anomaly detector's threshold is
    # shown (the threshold alone was).
    assert meta["parameters"]["calibration"]["method"] in ("temperature", "none")
    assert request(port, "GET", "/v2/models/digits/versions/2")[2]["model_version"] == "2"
    assert request(port, "GET", "/v2/models/digits/versions/2/ready")[:1] == (200,)
    assert request(port, "GET", "/v2/models/digits/ready")[2]["ready"] is True
    assert request(port, "GET", "/v2/health/live")[0] == 200
    assert request(port, "GET", "/v2/health/ready")[2] == {"ready": True}
    server_meta = request(port, "GET", "/v2")[2]
    assert server_meta["name"] == "ann" and len(server_meta["models"]) == 3
    doc = request(port, "GET", "/openapi.json")[2]
    assert doc["openapi"].startswith("3.") and "/v2/models/{name}/infer" in doc["paths"]

    # Concurrent requests of different sizes are batched together and split back correctly.
    xs = data.load("digits", "test", cache=True).rows(np.arange(40))["image"]
    sizes = [1, 3, 2, 1, 4, 1, 2, 3, 1, 2, 5, 1]
    offsets = np.cumsum([0, *sizes])
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(
            lambda i: request(port, "POST", "/v2/models/digits/infer",
                              infer_body(xs[offsets[i]:offsets[i + 1]])),
            range(len(sizes)),
        ))  # fmt: skip
    labels = model({"image": xs[: offsets[-1]]})["label"]
    for i, (status, _, body) in enumerate(results):
        assert status == 200, body
        got = {o["name"]: o["data"] for o in body["outputs"]}["label"]
        assert got == labels[offsets[i] : offsets[i + 1]].tolist()

    status, headers, text = request(port, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name in [
        'ann_request_duration_seconds_bucket{le="0.005",model="digits",version="1"}',
        "ann_queue_seconds_count",
        "ann_compute_seconds_sum",
        "ann_batch_size_bucket",
        'ann_requests_total{code="200",handler="infer",model="digits",version="1"}',
        "ann_queue_depth",
        'ann_model_info{model="digits",platforms="cpu",source="models:/digits@champion",version="1"}',
        "ann_ready 1.0",
    ]:
        assert name in text, name
    batches = float(text.split('ann_batch_size_count{model="digits",version="1"} ')[1].split()[0])
    requests = float(
        text.split('ann_queue_seconds_count{model="digits",version="1"} ')[1].split()[0]
    )
    assert batches < requests  # some requests shared a batch

    with open(root / "requests.jsonl") as f:
        logged = [json.loads(line) for line in f]
    first = next(r for r in logged if r["id"] == "req-1")
    assert first["status"] == 200 and first["inputs"]["image"]["shape"] == [5, 8, 8, 1]
    assert first["outputs"]["label"]["data"] == want["label"].tolist()
    assert first["sample"] == 1  # --request_log_sample, for `ann monitor`'s advice


def binary_body(x, outputs=None, **parameters):
    """A v2 request with `x` as binary tensor data; returns (body, JSON header length)."""
    header = {"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "UINT8",
                          "parameters": {"binary_data_size": x.nbytes}}]}  # fmt: skip
    if outputs is not None:
        header["outputs"] = outputs
    if parameters:
        header["parameters"] = parameters
    head = json.dumps(header).encode()
    return head + x.tobytes(), len(head)


def split_binary(raw: bytes, length: int) -> tuple[dict, dict[str, np.ndarray]]:
    header = json.loads(raw[:length])
    arrays, offset = {}, length
    for o in header["outputs"]:
        if "parameters" in o:
            size = o["parameters"]["binary_data_size"]
            dtype = {"FP32": "<f4", "INT32": "<i4"}[o["datatype"]]
            arrays[o["name"]] = np.frombuffer(raw[offset : offset + size], dtype).reshape(
                o["shape"]
            )
            offset += size
    assert offset == len(raw)
    return header, arrays


def test_compressed_request_bodies_and_replies(served):
    """Content-Encoding gzip and deflate are inflated (Triton's HTTP server takes both: its
    client's `request_compression_algorithm`; before, 400 "text that is not UTF-8 (byte 0x8b)");
    past --max_body_bytes inflated is 413, another encoding 415 naming the ones taken; and
    Accept-Encoding gzip gets a gzip reply."""
    import gzip
    import zlib

    server, _, _ = served
    port, path = server.port, "/v2/models/digits/infer"
    x = data.load("digits", "test", cache=True).rows(np.arange(3))["image"]
    plain = json.dumps(infer_body(x, id="c")).encode()
    status, _, want = request(port, "POST", path, plain)
    assert status == 200, want
    for encoding, packed in [
        ("gzip", gzip.compress(plain)),
        ("deflate", zlib.compress(plain)),
        ("GZip", gzip.compress(plain)),
        ("identity", plain),
        ("deflate", zlib.compress(plain)[2:-4]),
    ]:  # fmt: skip  (raw)
        status, _, body = request(port, "POST", path, packed, {"Content-Encoding": encoding})
        assert (status, body) == (200, want), (encoding, body)
    # 50 MB of zeros in ~50 KB: under the limit sent, far past it inflated.
    bomb = gzip.compress(b"0" * 50_000_000, 9)
    assert len(bomb) < 100_000
    status, _, body = request(port, "POST", path, bomb, {"Content-Encoding": "gzip"})
    assert status == 413, body
    assert body["error"] == (
        "body: expected at most 100000 bytes (--max_body_bytes) once inflated "
        "(Content-Encoding: gzip), got more; split the request, or send its tensors as binary "
        "data (Inference-Header-Content-Length), smaller than JSON numbers"
    )
    status, _, body = request(port, "POST", path, plain, {"Content-Encoding": "br"})
    assert status == 415 and body["model_name"] == "digits", body
    assert body["error"].startswith(
        "Content-Encoding: expected gzip, deflate or identity (one of them), got 'br'"
    ), body
    # Two Content-Encoding headers are one list (gzip twice): it was inflated once, then
    # "body: expected a JSON object, got text that is not UTF-8 (byte 0x8b ...)".
    twice = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        twice.putrequest("POST", path)
        for header, value in [
            ("Content-Encoding", "gzip"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", str(len(gzip.compress(gzip.compress(plain))))),
        ]:
            twice.putheader(header, value)  # fmt: skip
        twice.endheaders(gzip.compress(gzip.compress(plain)))
        response = twice.getresponse()
        said = json.loads(response.read())
        assert response.status == 415 and "got 'gzip, gzip'" in said["error"], said
    finally:
        twice.close()
    status, _, body = request(port, "POST", path, gzip.compress(plain)[:-30],
                              {"Content-Encoding": "gzip"})  # fmt: skip
    assert status == 400 and "expected complete gzip data" in body["error"], body
    status, _, body = request(port, "POST", path, b"not gzip", {"Content-Encoding": "gzip"})
    assert status == 400 and "got data it cannot inflate" in body["error"], body

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for accept, encoding, inflate in [("gzip", "gzip", gzip.decompress),
                                          ("deflate;q=1, gzip;q=0", "deflate", zlib.decompress),
                                          ("br", None, bytes)]:  # fmt: skip
            conn.request("POST", path, body=plain, headers={"Accept-Encoding": accept})
            response = conn.getresponse()
            raw = response.read()
            assert response.status == 200
            assert response.getheader("content-encoding") == encoding, accept
            assert json.loads(inflate(raw)) == want
        # Only an infer's reply, as Triton's server: tritonclient's asyncio client sends
        # aiohttp's default Accept-Encoding on every call and inflates only an infer reply.
        conn.request("GET", "/v2/models/digits", headers={"Accept-Encoding": "gzip, deflate"})
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("content-encoding") is None
        assert json.loads(response.read())["name"] == "digits"
        # An error reply stays identity: Triton's client reads it without inflating.
        conn.request("POST", path, body=b"{", headers={"Accept-Encoding": "gzip"})
        response = conn.getresponse()
        assert response.status == 400 and response.getheader("content-encoding") is None
        assert "error" in json.loads(response.read())
    finally:
        conn.close()


def test_binary_tensor_data_in_and_out(served):
    server, model, _ = served
    x = data.load("digits", "test", cache=True).rows(np.arange(3))["image"]
    # Bit for bit what the server computes: its 4-row bucket, the weights compiled in (the
    # default on CPU; the last float32 bit may differ from the weights-as-arguments call).
    padded = np.concatenate([x, np.zeros((1, *x.shape[1:]), x.dtype)])
    run = model.compile(4, constant_weights=True)
    want = {k: v[:3] for k, v in run({"image": padded}).items()}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        # Binary in, binary out (every output).
        body, length = binary_body(x, binary_data_output=True)
        conn.request("POST", "/v2/models/digits/infer", body=body,
                     headers={"Inference-Header-Content-Length": str(length)})  # fmt: skip
        response = conn.getresponse()
        raw = response.read()
        assert response.status == 200, raw
        assert response.getheader("content-type") == "application/octet-stream"
        header, arrays = split_binary(
            raw, int(response.getheader("inference-header-content-length"))
        )
        assert header["model_name"] == "digits" and header["model_version"] == "1"
        np.testing.assert_array_equal(arrays["probabilities"], want["probabilities"])
        np.testing.assert_array_equal(arrays["label"], want["label"])

        # Binary in, one output binary and one JSON, chosen per output.
        outputs = [
            {"name": "label"},
            {"name": "probabilities", "parameters": {"binary_data": True}},
        ]
        body, length = binary_body(x, outputs=outputs)
        conn.request("POST", "/v2/models/digits/infer", body=body,
                     headers={"Inference-Header-Content-Length": str(length)})  # fmt: skip
        response = conn.getresponse()
        raw = response.read()
        header, arrays = split_binary(
            raw, int(response.getheader("inference-header-content-length"))
        )
        assert header["outputs"][0]["data"] == want["label"].tolist()
        np.testing.assert_array_equal(arrays["probabilities"], want["probabilities"])

        # A 5,000-digit header length is refused, not converted (it was a 500).
        conn.request("POST", "/v2/models/digits/infer", body=body,
                     headers={"Inference-Header-Content-Length": "9" * 5000})  # fmt: skip
        response = conn.getresponse()
        reply = json.loads(response.read())
        assert response.status == 400, reply
        assert "expected Inference-Header-Content-Length between 0" in reply["error"]

        # Binary data without the header that says where the JSON ends: a 400 that says so.
        conn.request("POST", "/v2/models/digits/infer", body=body)
        response = conn.getresponse()
        reply = json.loads(response.read())
        assert response.status == 400 and "Inference-Header-Content-Length" in reply["error"]
    finally:
        conn.close()
    status, _, meta = request(server.port, "GET", "/v2")
    assert "binary_tensor_data" in meta["extensions"]


FLOAT_SIGNATURE = {"x": {"dtype": "float32", "shape": [2]}, "on": {"dtype": "bool", "shape": [1]}}


def test_token_ids_outside_the_vocabulary_are_refused():
    """An integer input whose signature names what its values index (a token vocabulary)
    takes ids in [0, len(names)), JSON and binary alike: one past the vocabulary gave a 200
    with NaN probabilities (an LM) or garbage tokens (seq2seq). The model metadata's labels
    name the vocabulary so a client can build requests."""
    from ann.serve.dataplane import ServedModel

    vocab = ["<pad>", "<unk>", "a", "b", "c"]
    signature = {"tokens": {"dtype": "int32", "shape": [3], "names": vocab}}

    def decode(data=None, raw=None):
        tensor = {"name": "tokens", "shape": [2, 3], "datatype": "INT32"}
        if raw is None:
            return protocol.decode_infer(json.dumps({"inputs": [{**tensor, "data": data}]})
                                         .encode(), signature, OUTPUTS, 8)  # fmt: skip
        head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": 24}}]})
        return protocol.decode_infer(head.encode() + raw, signature, OUTPUTS, 8,
                                     str(len(head)).encode())  # fmt: skip

    ids = [[2, 3, 4], [0, 1, 2]]
    assert decode(ids).inputs["tokens"].tolist() == ids
    assert decode(raw=np.array(ids, "<i4").tobytes()).inputs["tokens"].tolist() == ids
    ids_note = "(ids of its 5 names: the model metadata's labels)"
    for bad, value in (([[2, 3, 5], [0, 1, 2]], 5), ([[2, 3, 4], [0, -1, 2]], -1)):
        with pytest.raises(protocol.ServeError) as e:
            decode(bad)
        assert e.value.status == 400 and e.value.message == (
            f"inputs[0].data: expected INT32 values in [0, 4] {ids_note}, got {value} at flat "
            f"index {np.flatnonzero(np.array(bad).reshape(-1) == value)[0]}"
        )
        with pytest.raises(protocol.ServeError, match=r"inputs\[0\] \(binary\): expected INT32 "
                           rf"values in \[0, 4\] .*, got {value} at flat index"):  # fmt: skip
            decode(raw=np.array(bad, "<i4").tobytes())

    class Model:
        inputs = {"tokens": {"dtype": "int32", "shape": [-1, 3], "names": vocab}}
        outputs = {"next": {"dtype": "int32", "shape": [-1], "names": vocab}}
        manifest: dict = {}

    metadata = json.loads(ServedModel("lm", "1", Model(), "test").metadata)
    assert metadata["parameters"]["labels"] == {"tokens": vocab, "next": vocab}


def _decode_ids(name, ids, signature, binary):
    """`protocol.decode_infer` of one INT32 input `name` holding `ids`, as JSON or binary."""
    ids = np.array(ids, "<i4")
    tensor = {"name": name, "shape": list(ids.shape), "datatype": "INT32"}
    if not binary:
        body = json.dumps({"inputs": [{**tensor, "data": ids.ravel().tolist()}]}).encode()
        return protocol.decode_infer(body, signature, OUTPUTS, 8)
    head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": ids.nbytes}}]})
    return protocol.decode_infer(head.encode() + ids.tobytes(), signature, OUTPUTS, 8,
                                 str(len(head)).encode())  # fmt: skip


def test_token_rows_must_keep_their_right_padding():
    """A language model's `tokens` (and seq2seq's `source`) are right-padded with the pad id
    (the manifest's `padding`): the LM answers for the position before the first pad. A row
    padded on the left or in the middle was answered 200 for the wrong position, a row of pads
    alone for nothing; now 400 naming the row and the position, JSON and binary alike. The
    shape refusal of an unpadded prompt says how to pad."""
    vocab = ["<pad>", "<unk>", "a", "b", "c"]
    entry = {"dtype": "int32", "shape": [4], "names": vocab}
    padded = {"tokens": {**entry, "padding": {"id": 0, "side": "right"}}}

    def decode(ids, signature=padded, binary=False):
        return _decode_ids("tokens", ids, signature, binary)

    fine = [[2, 3, 4, 2], [2, 3, 0, 0], [4, 0, 0, 0]]
    for binary in (False, True):
        assert decode(fine, binary=binary).inputs["tokens"].tolist() == fine
    field = {False: r"inputs\[0\]\.data", True: r"inputs\[0\] \(binary\)"}
    for rows, message in [
        ([[2, 3, 0, 0], [0, 0, 2, 3]], "row 1 has the pad id 0 at position 0, before a token at "
         "position 2; pad on the right only (the tokens first, then 0s): the model reads a row "
         "up to its first pad"),
        ([[2, 0, 3, 0]], "row 0 has the pad id 0 at position 1, before a token at position 2"),
        ([[2, 3, 4, 2], [0, 0, 0, 0]], "row 1 is only padding (id 0): nothing to answer; send "
         "at least one token"),
    ]:  # fmt: skip
        for binary in (False, True):
            with pytest.raises(ServeError, match=f"^{field[binary]}: {re.escape(message)}") as e:
                decode(rows, binary=binary)
            assert e.value.status == 400 and e.value.reason == "padding"
    # An input without the contract (no `padding`) takes any arrangement, as before.
    assert decode([[0, 0, 2, 0]], {"tokens": entry}).inputs["tokens"].tolist() == [[0, 0, 2, 0]]
    body = {"inputs": [{"name": "tokens", "shape": [1, 2], "datatype": "INT32", "data": [2, 3]}]}
    with pytest.raises(ServeError) as e:
        protocol.decode_infer(json.dumps(body).encode(), padded, OUTPUTS, 8)
    assert e.value.message == (
        "inputs[0].shape: expected [-1, 4] (batch first, at least 1 row) for input 'tokens', got "
        "[1,2]; pad each row on the right with id 0 to 4 tokens (the tokens, then 0s)"
    )
    # Rows longer than the input's are not told to pad (no padding makes them fit), as the
    # loader says it (`artifact.padding_hint`).
    body["inputs"][0].update(shape=[1, 5], data=[2, 3, 4, 2, 3])
    with pytest.raises(ServeError) as e:
        protocol.decode_infer(json.dumps(body).encode(), padded, OUTPUTS, 8)
    assert e.value.message.endswith(
        "got [1,5]; each row holds at most 4 tokens, then pads (id 0): a longer one does not fit "
        "the model"
    )


def test_nested_data_is_flat_or_nested_as_its_shape():
    """[[1] * 32, [2] * 32] for shape [1, 8, 8, 1] was accepted (200): the values were read
    flat whatever their nesting. The v2 protocol has them flat or in their natural
    multi-dimensional representation; any other nesting is a 400 naming the input."""
    x = np.arange(64, dtype=np.uint8).reshape(1, 8, 8, 1)
    for values in (x.reshape(-1).tolist(), x.tolist()):
        body = json.dumps({"inputs": [{**infer_body(x)["inputs"][0], "data": values}]}).encode()
        decoded = protocol.decode_infer(body, SIGNATURE, OUTPUTS, 8)
        np.testing.assert_array_equal(decoded.inputs["image"], x)
    for values, nesting in [([[1] * 32, [2] * 32], [2, 32]), (x.reshape(1, 64).tolist(), [1, 64])]:
        tensor = {"name": "image", "shape": [1, 8, 8, 1], "datatype": "UINT8", "data": values}
        with pytest.raises(ServeError) as e:
            protocol.decode_infer(json.dumps({"inputs": [tensor]}).encode(), SIGNATURE, OUTPUTS, 8)
        assert e.value.status == 400 and e.value.message == (
            "inputs[0].data: expected the values of input 'image' flat or nested as its shape "
            f"[1, 8, 8, 1], got them nested as {nesting}"
        )
        # A request log's record of such a request, served before the check, is still read.
        read = protocol.decode_data("line 1", tensor, [1, 8, 8, 1], SIGNATURE["image"])
        np.testing.assert_array_equal(read, np.asarray(values, np.uint8).reshape(1, 8, 8, 1))
    # Ragged lists and a wrong count name the input and its shape (a trial: "got ragged lists"
    # alone; "got 1 values").
    for values, said in [
        ([[1, 2], [3]], "expected the values of input 'image' flat or nested as its shape "
         "[1, 8, 8, 1], got ragged lists"),
        ([[[[0]]]], "expected 64 values for shape [1, 8, 8, 1], got 1 value"),
    ]:  # fmt: skip
        tensor = {"name": "image", "shape": [1, 8, 8, 1], "datatype": "UINT8", "data": values}
        with pytest.raises(ServeError) as e:
            protocol.decode_infer(json.dumps({"inputs": [tensor]}).encode(), SIGNATURE, OUTPUTS, 8)
        assert e.value.message == f"inputs[0].data: {said}"


def test_binary_decoding_checks_sizes_and_values():
    def decode(tensors, raw, header=None, **extra):
        """`header`: the Inference-Header-Content-Length value; default the JSON's length."""
        head = json.dumps({"inputs": tensors, **extra}).encode()
        header = str(len(head)).encode() if header is None else header
        return protocol.decode_infer(head + raw, FLOAT_SIGNATURE, OUTPUTS, 8, header)

    def tensor(name, shape, datatype, size):
        return {"name": name, "shape": shape, "datatype": datatype,
                "parameters": {"binary_data_size": size}}  # fmt: skip

    x = np.array([[1.5, -2.0], [3.0, 4.25]], "<f4")
    on = np.array([[1], [0]], np.uint8)
    good = [tensor("x", [2, 2], "FP32", 16), tensor("on", [2, 1], "BOOL", 2)]
    decoded = decode(good, x.tobytes() + on.tobytes())
    inputs, rows, binary = decoded.inputs, decoded.rows, decoded.binary
    assert rows == 2 and binary == frozenset()
    np.testing.assert_array_equal(inputs["x"], x)
    assert inputs["on"].dtype == np.bool_ and inputs["on"].tolist() == [[True], [False]]
    # JSON and binary inputs mix in one request.
    mixed = [good[0], {"name": "on", "shape": [2, 1], "datatype": "BOOL", "data": [1, 0]}]
    assert decode(mixed, x.tobytes())[1] == 2

    nan = np.array([[1.0, np.nan], [0, 0]], "<f4").tobytes()
    for tensors, raw, header, message in [
        (good, x.tobytes() + on.tobytes(), b"1000000", "Inference-Header-Content-Length between 0"),
        (good, x.tobytes() + on.tobytes(), b"x", "Inference-Header-Content-Length between 0"),
        # It said "got an empty body" of a body with its bytes.
        (good, x.tobytes() + on.tobytes(), b"0", "got 0, which leaves none before the 214 bytes"),
        ([tensor("x", [2, 2], "FP32", 12), good[1]], x.tobytes(), None, "expected 16 bytes"),
        (good, x.tobytes(), None, "expected 2 bytes of binary data at byte offset 16, got 0 bytes"),
        (good, x.tobytes() + on.tobytes() + b"!", None, "expected 18 bytes of binary tensor"),
        (
            [{**good[0], "data": [1, 2, 3, 4]}, good[1]],
            x.tobytes() + on.tobytes(),
            None,
            "expected none with binary_data_size",
        ),
        ([good[0], good[1]], nan + on.tobytes(), None, "expected finite FP32 values, got nan"),
        ([good[0], good[1]], x.tobytes() + bytes([1, 7]), None, "expected bytes 0 or 1"),
        (
            [tensor("x", [2, 2], "FP32", -1), good[1]],
            b"",
            None,
            "expected a byte count \\(an integer >= 0\\)",
        ),
    ]:
        with pytest.raises(ServeError, match=message) as e:
            decode(tensors, raw, header)
        assert explained(e.value.message), e.value.message
    # A header that is not the JSON's length said only the parser's "got invalid JSON
    # (unexpected content after document at column 116)" (longer) or "unexpected end of data"
    # (shorter); one past the body did not say what to send.
    length = len(json.dumps({"inputs": good}))
    raw = x.tobytes() + on.tobytes()
    for header in (length + 5, length - 5):
        with pytest.raises(ServeError) as e:
            decode(good, raw, b"%d" % header)
        assert e.value.status == 400 and e.value.message == (
            "body: expected Inference-Header-Content-Length to be the JSON request's length, "
            f"{length} bytes, got {header} (the binary data starts after the JSON)"
        )
    for header in (b"%d" % (length + len(raw) + 1), b"0"):
        with pytest.raises(ServeError) as e:
            decode(good, raw, header)
        assert e.value.message.endswith(
            f"; the JSON request is {length} bytes: send Inference-Header-Content-Length: {length}"
        ), e.value.message
    with pytest.raises(ServeError, match="'binary_data_output' is true or false"):
        decode(good, x.tobytes() + on.tobytes(), parameters={"binary_data_output": "yes"})
    # An output's own binary_data wins over binary_data_output, as Triton's (its false was
    # ignored: the label came back binary).
    asked = [{"name": "probabilities"}, {"name": "label", "parameters": {"binary_data": False}}]
    decoded = decode(good, x.tobytes() + on.tobytes(), outputs=asked,
                     parameters={"binary_data_output": True})  # fmt: skip
    assert decoded.binary == frozenset({"probabilities"})

    # Encoding: binary outputs after the JSON, little-endian, sizes in their parameters.
    reply, length = protocol.encode_infer(
        "m", "1", None, {"p": x, "l": np.array([3, 4], np.int32)}, frozenset({"l"})
    )
    header = json.loads(reply[:length])
    assert header["outputs"][0]["data"] == x.reshape(-1).tolist()
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 8}
    assert np.frombuffer(reply[length:], "<i4").tolist() == [3, 4]
    assert protocol.encode_infer("m", "1", None, {"p": x})[1] is None  # all JSON: no header


def test_errors_name_the_field(served):
    server, _, _ = served
    port = server.port
    x = np.zeros((2, 8, 8, 1), np.uint8)
    cases = [
        ("POST", "/v2/models/nope/infer", infer_body(x), 404, "model: expected one of"),
        ("POST", "/v2/models/digits/versions/9/infer", infer_body(x), 404, "version: expected"),
        ("GET", "/v2/models/digits/infer", None, 405, "method: expected POST"),
        ("GET", "/nowhere", None, 404, "no route GET /nowhere"),
        ("POST", "/v2/models/digits/infer", b"{not json", 400, "body: expected a JSON object"),
        ("POST", "/v2/models/digits/infer", infer_body(x, name="img"), 400,
         'inputs[0].name: expected one of ["image"], got "img"'),
        ("POST", "/v2/models/digits/infer", infer_body(x, datatype="FP32"), 400,
         "inputs[0].datatype: expected UINT8 for input 'image', got \"FP32\""),
        ("POST", "/v2/models/digits/infer", infer_body(x.reshape(2, 8, 8)), 400,
         "inputs[0].shape: expected [-1, 8, 8, 1]"),
        ("POST", "/v2/models/digits/infer", infer_body(np.zeros((9, 8, 8, 1), np.uint8)), 413,
         "inputs[0].shape[0]: expected at most 8 rows per request"),
        ("POST", "/v2/models/digits/infer",
         {"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "UINT8",
                      "data": [300] * 64}]}, 400, "expected UINT8 values in [0, 255]"),
        # The first value out of range and where, written as sent (it said "got values in
        # [0.0, 1.8446744073709552e+19]"; a fraction, "got fractions", nowhere).
        ("POST", "/v2/models/digits/infer",
         {"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "UINT8",
                      "data": [0, 18446744073709551616] + [0] * 62}]}, 400,
         "expected UINT8 values in [0, 255], got 18446744073709551616 at flat index 1"),
        ("POST", "/v2/models/digits/infer",
         {"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "UINT8",
                      "data": [0, 0, 1.5] + [0] * 61}]}, 400,
         "expected integers for UINT8, got 1.5 at flat index 2"),
        ("POST", "/v2/models/digits/infer",
         {"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "UINT8",
                      "data": [1] * 63}]}, 400, "expected 64 values for shape [1, 8, 8, 1]"),
        # A missing field read "got None", as if null had been sent.
        ("POST", "/v2/models/digits/infer",
         {"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "data": [1] * 64}]}, 400,
         "inputs[0].datatype: expected UINT8 for input 'image', got no 'datatype' field"),
        ("POST", "/v2/models/digits/infer", {"inputs": [{}]}, 400,
         "inputs[0].name: expected one of [\"image\"], got no 'name' field"),
        ("POST", "/v2/models/digits/infer", b"x" * 200_000, 413,
         "body: expected at most 100000 bytes (--max_body_bytes), got 200000"),
        # Triton's scheduling parameters were taken and ignored: a priority, a sequence, a
        # typo'd binary_data_output, a timeout in the wrong unit.
        ("POST", "/v2/models/digits/infer", infer_body(x, parameters={"priority": 1}), 400,
         "parameters.priority: expected 0 or no priority, got 1: ann's batcher has one"),
        ("POST", "/v2/models/digits/infer", infer_body(x, parameters={"sequence_id": 7}), 400,
         "parameters.sequence_id: expected 0 or no sequence_id, got 7: ann serves stateless"),
        ("POST", "/v2/models/digits/infer", infer_body(x, parameters={"priority": False}), 400,
         "parameters.priority: expected 0 or no priority, got false"),  # not taken as 0
        ("POST", "/v2/models/digits/infer",
         infer_body(x, parameters={"binary_data_ouput": True}), 400,
         'parameters: unknown key "binary_data_ouput"; expected binary_data_output, timeout,'),
        ("POST", "/v2/models/digits/infer", infer_body(x, parameters={"timeout": 0.5}), 400,
         "parameters.timeout: expected microseconds as an integer in [0, 18446744073709551615] "
         "(0: no limit), got 0.5 microseconds"),
        ("POST", "/v2/models/digits/infer", infer_body(x, parameters=[1]), 400,
         "parameters: expected an object, got [1]"),
        # A tensor's own: a typo'd binary_data came back as JSON; shared memory was ignored.
        ("POST", "/v2/models/digits/infer",
         infer_body(x, outputs=[{"name": "label", "parameters": {"binary_dat": True}}]), 400,
         'outputs[0].parameters: unknown key "binary_dat"; expected binary_data'),
        ("POST", "/v2/models/digits/infer",
         {"inputs": [{**infer_body(x)["inputs"][0],
                      "parameters": {"shared_memory_region": "r"}}]}, 400,
         'inputs[0].parameters: unknown key "shared_memory_region"; ann has no shared-memory '
         "extension: send the tensor in the body"),
        ("POST", "/v2/models/digits/infer",
         infer_body(x, outputs=[{"name": "label", "parameters": {"classification": 2}}]), 400,
         'outputs[0].parameters: unknown key "classification"; ann has no classification '
         "extension: ask for the model's class output (its metadata's parameters.labels names "
         "each output's classes)"),
        # The protocol's own keys misspelled were ignored: every output came back for
        # "output", JSON for "paramters"; an extra key passed unseen.
        ("POST", "/v2/models/digits/infer", {**infer_body(x), "output": [{"name": "label"}]},
         400, 'body: unknown key "output"; expected id, parameters, inputs, outputs (did you '
         "mean 'outputs'?)"),
        ("POST", "/v2/models/digits/infer",
         {**infer_body(x), "paramters": {"binary_data_output": True}}, 400,
         'body: unknown key "paramters"; expected id, parameters, inputs, outputs (did you mean '
         "'parameters'?)"),
        ("POST", "/v2/models/digits/infer",
         {"inputs": [{**infer_body(x)["inputs"][0], "paramaters": {}}]}, 400,
         'inputs[0]: unknown key "paramaters"; expected name, shape, datatype, parameters, '
         "data (did you mean 'parameters'?)"),
        ("POST", "/v2/models/digits/infer",
         infer_body(x, outputs=[{"name": "label", "paramters": {"binary_data": True}}]), 400,
         'outputs[0]: unknown key "paramters"; expected name, parameters (did you mean '
         "'parameters'?)"),
        ("POST", "/v2/models/digits/infer", {**infer_body(x), "extra": 1}, 400,
         'body: unknown key "extra"; expected id, parameters, inputs, outputs'),
        # An output's misspelled name key got the generic list message; one asked for twice
        # came back once.
        ("POST", "/v2/models/digits/infer", infer_body(x, outputs=[{"nmae": "label"}]), 400,
         'outputs[0]: unknown key "nmae"; expected name, parameters (did you mean \'name\'?)'),
        ("POST", "/v2/models/digits/infer", infer_body(x, outputs=[{"name": "lable"}]), 400,
         'outputs[0].name: expected one of ["label","probabilities"], got "lable"'),
        ("POST", "/v2/models/digits/infer",
         infer_body(x, outputs=[{"name": "label"}, {"name": "label"}]), 400,
         'outputs[1].name: "label" is asked for already (outputs[0]); name each output once'),
        ("POST", "/v2/models/digits/infer", infer_body(x, outputs=["label"]), 400,
         'outputs[0]: expected an object {name}, got "label"'),
    ]  # fmt: skip
    for method, path, body, code, message in cases:
        status, _, reply = request(port, method, path, body)
        assert status == code, (path, reply)
        assert message in reply["error"], (message, reply)
        if path.startswith("/v2/models/digits/") and status != 404:
            assert reply["model_name"] == "digits" and reply["model_version"] in ("1", "2")
    # An empty `outputs` names none: every output, as Triton answers (it answered none).
    status, _, reply = request(port, "POST", "/v2/models/digits/infer", infer_body(x, outputs=[]))
    assert status == 200 and [o["name"] for o in reply["outputs"]] == ["probabilities", "label"]
    # Their defaults (what tritonclient sends unset) and a generous timeout are served.
    defaults = {"priority": 0, "sequence_id": "", "sequence_start": False, "timeout": 10**7}
    status, _, reply = request(port, "POST", "/v2/models/digits/infer",
                               infer_body(x, parameters=defaults))  # fmt: skip
    assert status == 200, reply


def test_http_pipelining_malformed_and_buckets(served):
    server, _, _ = served
    body = json.dumps(infer_body(np.zeros((1, 8, 8, 1), np.uint8), id="p")).encode()
    infer = (b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
             % (len(body), body))  # fmt: skip
    live = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(infer + live + infer)  # pipelined: replies must come back in request order
        reader = s.makefile("rb")
        replies = []
        for _ in range(3):
            head = reader.readline()
            length = 0
            while (line := reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            replies.append((int(head.split()[1]), json.loads(reader.read(length))))
    assert [r[0] for r in replies] == [200, 200, 200]
    assert replies[0][1]["id"] == "p" and replies[1][1] == {"live": True}
    assert replies[2][1]["model_version"] == "1"
    # HEAD as GET, without the body (it was a 405): the GET after it on the connection reads
    # whole, so nothing of the HEAD's body was sent.
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(live.replace(b"GET", b"HEAD") + live)
        reader = s.makefile("rb")
        assert reader.readline().startswith(b"HTTP/1.1 200 ")
        lines = iter(reader.readline, b"\r\n")
        assert b"content-length: 13\r\n" in list(lines)  # GET's length, as RFC 9110 says
        assert reader.readline().startswith(b"HTTP/1.1 200 ")
        while reader.readline() != b"\r\n":
            pass
        assert json.loads(reader.read(13)) == {"live": True}
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400 ") and b"expected valid HTTP/1.1" in reply

    from ann.serve.batcher import buckets

    assert buckets(8) == [1, 2, 4, 8]
    assert buckets(64) == [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]
    assert buckets(1) == [1] and buckets(10) == [1, 2, 4, 8, 10]


VALID = {"name": "image", "shape": [1, 8, 8, 1], "datatype": "UINT8", "data": [0] * 64}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
mutated_tensor = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["image", "img", ""]) | json_values,
        "shape": st.lists(st.integers(-2, 70), max_size=5) | json_values,
        "datatype": st.sampled_from(["UINT8", "FP32", "INT64", "BYTES", "uint8"]) | json_values,
        "data": st.lists(st.integers(-5, 300) | st.floats(-1e40, 1e40), max_size=70) | json_values,
    },
).map(lambda t: {**VALID, **t})
bad_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.lists(mutated_tensor, min_size=0, max_size=3).map(
        lambda ts: json.dumps({"inputs": ts}).encode()
    ),
    st.builds(
        lambda t, extra: json.dumps({"inputs": [t], **extra}).encode(),
        mutated_tensor,
        st.dictionaries(st.sampled_from(["id", "outputs", "parameters"]), json_values),
    ),
    st.builds(  # a request's parameters: Triton's keys, right and wrong
        lambda t, p: json.dumps({"inputs": [t], "parameters": p}).encode(),
        mutated_tensor,
        st.dictionaries(
            st.sampled_from(
                [
                    "binary_data_output",
                    "timeout",
                    "priority",
                    "sequence_id",
                    "sequence_end",
                    "bogus",
                ]
            ),  # fmt: skip
            st.integers(-2, 2) | json_values,
        ),
    ),
)


def explained(error: str) -> bool:
    """The message names the field, what was expected and what came."""
    field = error.split(":")[0].split("[")[0].split(".")[0]
    return field in ("body", "inputs", "id", "outputs", "parameters") and "expected" in error


SIGNATURE = {"image": {"dtype": "uint8", "shape": [8, 8, 1]}}
OUTPUTS = {"probabilities": {}, "label": {}}


@settings(max_examples=1500, deadline=None)
@given(body=bad_bodies)
def test_fuzzed_decoder_explains_every_refusal(body):
    # In-process and fast, so it can try many more cases than the HTTP fuzz below.
    try:
        decoded = protocol.decode_infer(body, SIGNATURE, OUTPUTS, 8)
    except ServeError as e:
        assert e.status in (400, 413) and explained(e.message), e.message
    else:
        image = decoded.inputs["image"]
        assert image.shape == (decoded.rows, 8, 8, 1) and image.dtype == np.uint8
        assert set(decoded.outputs) <= set(OUTPUTS)
        assert decoded.timeout is None or decoded.timeout > 0


@pytest.mark.parametrize(
    "body, got",
    [
        # orjson says "invalid literal, expected 'null'" for text that starts like null
        (b"not json", "invalid JSON (expected a JSON value at column 1)"),
        (b"hello", "invalid JSON (unexpected character, expected a JSON value at column 1)"),
        (b'{"inputs": []', "invalid JSON (unexpected end of data at column 14)"),
        (
            b'{\n"inputs": [],\n x}',
            "invalid JSON (unexpected character, expected a string key at line 3 column 2)",
        ),
        # The aside about NaN only where such a token is what failed.
        (
            b'{"inputs": [nan]}',
            "invalid JSON (expected a JSON value at column 13; NaN and Infinity are not JSON)",
        ),
        (
            b'{"x": -Infinity}',
            "invalid JSON (no digit after sign at column 8; NaN and Infinity are not JSON)",
        ),
        (b"", "an empty body"),  # not orjson's "Input is a zero-length, empty document"
        (b" \n", "an empty body"),
        # not orjson's "str is not valid UTF-8: surrogates not allowed", nor column 1
        (b"\xff", "text that is not UTF-8 (byte 0xff at column 1)"),
        (b'{"id": "r\xe9"}', "text that is not UTF-8 (byte 0xe9 at column 10)"),
        # Valid JSON syntax, not invalid JSON: a number no 64-bit float holds.
        (
            b"1e400",
            "a number out of range (1e400 at column 1; JSON numbers here are 64-bit floats, at "
            "most about 1.8e308 in size)",
        ),
    ],
)
def test_invalid_json_is_named_with_its_place_not_the_parsers_guess(body, got):
    with pytest.raises(ServeError) as e:
        protocol.decode_infer(body, SIGNATURE, OUTPUTS, 8)
    assert e.value.message == f"body: expected a JSON object, got {got}"
    assert e.value.status == 400 and e.value.reason == "json"


@pytest.mark.parametrize(
    "body, key",
    [
        ('{"inputs": [], "inputs": [INPUT]}', "inputs"),
        (
            '{"inputs": [{"name": "x:0", "data": [9, 9], "shape": [1, 2], "datatype": "FP32", '
            '"data": [1, 2]}]}',
            "data",
        ),
        ('{"id": "a", "inputs": [INPUT], "id": "b"}', "id"),
        ('{"inputs": [INPUT], "parameters": {"timeout": 1, "timeout": 2}}', "timeout"),
        ('{"inputs": [INPUT], "outputs": [{"name": "y", "name": "y"}]}', "name"),
        # A second fault besides: it was reported, and the repeated key never was (which of
        # the two values the other checks read is what JSON leaves open: the repeat first).
        ('{"id": "a", "id": 5, "inputs": [INPUT]}', "id"),
        ('{"bogus": 1, "inputs": [INPUT], "inputs": []}', "inputs"),
        ('{"inputs": [{"name": "x:0", "shape": [1, 2], "shape": [1, 3], "datatype": "FP32", '
         '"data": [1, 2]}]}', "shape"),
        ('{"inputs": [INPUT], "parameters": {"timeout": -1, "timeout": -2}}', "timeout"),
        ('{"inputs": [INPUT], "outputs": [{"name": "z", "name": "z"}]}', "name"),
    ],
)  # fmt: skip
def test_a_key_given_twice_in_an_object_is_refused(body, key):
    # {"inputs": [], "inputs": [...]} was answered from the last one in silence.
    signature, outputs = {"x:0": {"dtype": "float32", "shape": [2]}}, {"y": {}}
    body = body.replace("INPUT", '{"name": "x:0", "shape": [1, 2], "datatype": "FP32", '
                        '"data": [1, 2]}').encode()  # fmt: skip
    with pytest.raises(ServeError) as e:
        protocol.decode_infer(body, signature, outputs, 8)
    assert e.value.status == 400 and e.value.message == (
        f'body: expected each key once in an object, got "{key}" twice (which one counts is left '
        "open by JSON; send it once)"
    )
    # Colons in strings (an id, TensorFlow's `x:0`) and spaces around them are no duplicates.
    fine = (b'{"id" : "2026-12-05T13:00:00", "inputs" : [{"name" : "x:0", "shape" : [1, 2], '
            b'"datatype" : "FP32", "data" : [1, 2]}], "outputs": [{"name": "y"}]}')  # fmt: skip
    assert protocol.decode_infer(fine, signature, outputs, 8).id == "2026-12-05T13:00:00"


def test_every_json_body_refuses_a_key_given_twice():
    # The repository's index, load and unload and the feedback route took the last in silence
    # (`{"ready": true, "ready": false}` listed every model); infer refused it.
    from ann.serve import repository

    for body, field, key in [
        (b'{"ready": true, "ready": false}', "body", "ready"),
        (b'{"parameters": {"version": "1", "version": "2"}}', "body", "version"),
        (b'[{"id": "r1", "label": 1, "label": 2}]', "feedback", "label"),
    ]:
        with pytest.raises(ServeError) as e:
            protocol.loads(body, field, "a JSON object")
        assert e.value.status == 400 and e.value.message.startswith(
            f'{field}: expected each key once in an object, got "{key}" twice'
        ), e.value.message
    config = '{"version_policy": {"specific": {"versions": [1], "versions": [2]}}}'
    with pytest.raises(ServeError, match='^parameters.config: expected each key once in an '
                       'object, got "versions" twice'):  # fmt: skip
        repository._config_versions(config)
    # Colons in strings, and a body without any, are no repeats.
    assert protocol.loads(b'{"id": "a:b", "label": "c:d"}', "feedback", "x") == {
        "id": "a:b", "label": "c:d"}  # fmt: skip
    assert protocol.loads(b"[1, 2]", "feedback", "x") == [1, 2]


def test_a_request_id_is_at_most_256_characters():
    # Each id is kept for the feedback join: 300 infers with an id of a million characters
    # took the server from 330 MB to 711 MB, and the reply echoed each id back.
    body = {"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "UINT8",
                        "data": [0] * 64}]}  # fmt: skip
    kept = protocol.decode_infer(json.dumps({**body, "id": "r" * 256}).encode(), SIGNATURE,
                                 OUTPUTS, 8)  # fmt: skip
    assert kept.id == "r" * 256
    with pytest.raises(ServeError) as e:
        protocol.decode_infer(json.dumps({**body, "id": "r" * 10**6}).encode(), SIGNATURE,
                              OUTPUTS, 8)  # fmt: skip
    assert e.value.status == 400
    assert e.value.message == (
        "id: expected at most 256 characters (a UUID is 36), got 1000000 characters"
    )


RANGE = "expected a number within a 64-bit float's range (at most about 1.8e308 in size)"


@pytest.mark.parametrize(
    "body, message",
    [
        # It said "body: expected a JSON object, got a number out of range (1e400 at column
        # 87; ...)" of a body that is an object: the place is named, as other refusals name it.
        (b'{"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "UINT8", '
         b'"data": [0, 1e400]}]}', f"inputs[0].data[1]: {RANGE}, got 1e400"),
        (b'{"inputs": [{"name": "image", "data": [[0], [-1e400, 2e999]]}]}',
         f"inputs[0].data[1][0]: {RANGE}, got -1e400"),  # the first of two
        (b'{"id": "x", "inputs": [], "parameters": {"p": 1' + b"0" * 400 + b"}}",
         f"parameters.p: {RANGE}, got 1{'0' * 26}..."),  # an integer's text, cut to 30
        # The body itself is the number: what came is named, as before.
        (b"1e400", "body: expected a JSON object, got a number out of range (1e400 at column "
         "1; JSON numbers here are 64-bit floats, at most about 1.8e308 in size)"),
    ],
)  # fmt: skip
def test_a_number_out_of_range_is_named_by_its_place_in_the_body(body, message):
    with pytest.raises(ServeError) as e:
        protocol.decode_infer(body, SIGNATURE, OUTPUTS, 8)
    assert e.value.message == message
    assert e.value.status == 400 and e.value.reason == "json"


def test_a_number_out_of_range_is_named_by_its_place_on_every_json_route():
    """The feedback and repository routes parse their bodies as infer does."""
    from test_serve_routes import FakeModel

    from ann.serve.app import App
    from ann.serve.dataplane import ServedModel
    from ann.serve.settings import Settings

    app = App([ServedModel("m", "1", FakeModel(), "test")], Settings(admin_token="t"))

    def refusal(path, body):
        replies = []
        app.handle("POST", path, b"Bearer t", body, None, lambda *r: replies.append(r))
        [(status, reply, _)] = replies
        assert status == 400, reply
        return json.loads(reply)["error"]

    feedback = "/v2/models/m/feedback"
    assert refusal(feedback, b'[{"id": "a", "label": 1}, {"id": "b", "label": 1e400}]') == (
        f"feedback[1].label: {RANGE}, got 1e400"
    )
    assert (
        refusal(feedback, b'{"id": "a", "label": 1e400}') == f"feedback.label: {RANGE}, got 1e400"
    )
    assert refusal("/v2/repository/index", b'{"ready": 1e400}') == f"ready: {RANGE}, got 1e400"


def image(data, **fields):
    """A request body with one `image` input of one row."""
    tensor = {"name": "image", "shape": [1, 8, 8, 1], "datatype": "UINT8", "data": data}
    return json.dumps({"inputs": [{**tensor, **fields}]}).encode()


@pytest.mark.parametrize(
    "body, message",
    [
        # What came is quoted as JSON spells it (null, true, "text"), never as Python does.
        # The first value that is not a number, and where (it quoted the array's start only).
        (image([None, *[0] * 63]), "inputs[0].data: expected numbers for UINT8, got null at flat "
         "index 0"),
        (image([*[0] * 40, "1", *[0] * 23]), 'inputs[0].data: expected numbers for UINT8, got "1" '
         "at flat index 40"),
        (image([[[[0]] * 8] * 7 + [[[0]] * 7 + [[None]]]]), "inputs[0].data: expected numbers "
         "for UINT8, got null at flat index 63"),  # nested [1, 8, 8, 1]: the row-major index
        (image(None), "inputs[0].data: expected a JSON array of numbers, got null"),
        (image("abc"), 'inputs[0].data: expected a JSON array of numbers, got "abc"'),
        (image({"a": 1}), 'inputs[0].data: expected a JSON array of numbers, got {"a":1}'),
        (image([0] * 64, datatype=True), "inputs[0].datatype: expected UINT8 for input 'image', "
         "got true"),
        (image([0] * 64, name=None), 'inputs[0].name: expected one of ["image"], got null'),
        (image([0] * 64, shape=[1, 8, 8, True]), "inputs[0].shape: expected [-1, 8, 8, 1] (batch "
         "first, at least 1 row) for input 'image', got [1,8,8,true]"),
        (b'{"id": true, "inputs": []}', "id: expected a string, got true"),
        (b"null", "body: expected a JSON object with 'inputs', got null"),
        (b"[1, 2]", "body: expected a JSON object with 'inputs', got [1,2]"),
        # A field that is absent is said to be, not quoted as null (it read "got NoneType").
        (json.dumps({"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "UINT8"}]})
         .encode(), "inputs[0].data: expected a JSON array of numbers, got no 'data' field"),
        (b"{}", "inputs: expected a non-empty list of tensors {name, shape, datatype, data}, got "
         "no 'inputs' field"),
        (b'{"inputs": null}', "inputs: expected a non-empty list of tensors {name, shape, "
         "datatype, data}, got null"),
        # An integer past 64 bits (orjson reads it as a float) quoted as sent, not as
        # 1.8446744073709552e+19.
        (image([0] * 64, shape=[18446744073709551616, 8, 8, 1]), "inputs[0].shape[0]: expected "
         "at most 8 rows per request (the server's --max_batch_size), got 18446744073709551616 "
         "rows; split the request"),
        (b'{"id": -10000000000000000000, "inputs": []}', "id: expected a string, got "
         "-10000000000000000000"),
        (image([0] * 64)[:-1] + b', "parameters": {"timeout": 100000000000000000000}}',
         "parameters.timeout: expected microseconds as an integer in [0, 18446744073709551615] "
         "(0: no limit), got 100000000000000000000 microseconds"),
    ],
)  # fmt: skip
def test_refusals_quote_what_came_in_json_spelling(body, message):
    with pytest.raises(ServeError) as e:
        protocol.decode_infer(body, SIGNATURE, OUTPUTS, 8)
    assert e.value.message.startswith(message), e.value.message
    assert "None" not in e.value.message and "True" not in e.value.message


BOOLEANS = "expected numbers for {} input {!r}, got true or false (JSON booleans are for BOOL "


def timeout(value: str) -> bytes:
    """A one-row request body whose `parameters.timeout` is the JSON number `value`."""
    return image([0] * 64)[:-1] + b', "parameters": {"timeout": %s}}' % value.encode()


def binary_image(**parameters) -> bytes:
    """A request body with one `image` input of one row sent as binary data (none follows)."""
    tensor = {"name": "image", "shape": [1, 8, 8, 1], "datatype": "UINT8", "parameters": parameters}
    return json.dumps({"inputs": [tensor]}).encode()


@pytest.mark.parametrize(
    "body, header, message",
    [
        # A byte count said in float form (it was 1e+30), and as the integer sent.
        (binary_image(binary_data_size="1e30"), True,
         "inputs[0].parameters.binary_data_size: expected at most the body's 0 bytes of binary "
         "data, got 1e30 bytes"),
        (binary_image(binary_data_size="10" + "0" * 29), True,
         "inputs[0].parameters.binary_data_size: expected at most the body's 0 bytes of binary "
         "data, got 1000000000000000000000000000000 bytes"),
        (binary_image(binary_data_size="2.50"), True,
         "inputs[0].parameters.binary_data_size: expected a byte count (an integer >= 0), got "
         "2.50"),
        # An integer past 64 bits among the data: it was 99999999999999991433150857216.
        (image(["9" * 29] + [0] * 63), False, "inputs[0].data: expected UINT8 values in [0, 255], "
         "got 99999999999999999999999999999 at flat index 0"),
        (image([0] * 64, shape=[1, "1E3", 8, 1]), False, "inputs[0].shape: expected [-1, 8, 8, 1] "
         "(batch first, at least 1 row) for input 'image', got [1,1E3,8,1]; dimensions are "
         "integers, written without a fraction or an exponent"),
        (image([0] * 64, shape=["2.0", 8, 8, 1]), False, "inputs[0].shape: expected [-1, 8, 8, "
         "1] (batch first, at least 1 row) for input 'image', got [2.0,8,8,1]; dimensions are "
         "integers, written without a fraction or an exponent"),
        # A timeout past 64 bits says the limit, and its unit.
        (timeout("1e30"), False, "parameters.timeout: expected "
         "microseconds as an integer in [0, 18446744073709551615] (0: no limit), got 1e30 "
         "microseconds"),
        (timeout("9" * 29), False, "parameters.timeout: expected "
         "microseconds as an integer in [0, 18446744073709551615] (0: no limit), got "
         "99999999999999999999999999999 microseconds"),
    ],
)  # fmt: skip
def test_numbers_are_quoted_as_sent_with_their_unit(body, header, message):
    body = re.sub(rb'"([0-9][0-9.eE+]*)"', rb"\1", body)  # numbers given as strings: unquoted
    with pytest.raises(ServeError) as e:
        protocol.decode_infer(body, SIGNATURE, OUTPUTS, 8, str(len(body)).encode() if header
                              else None)  # fmt: skip
    assert e.value.status == 400 and e.value.message == message


def test_a_number_is_respelled_only_where_the_body_tells_it_one_way():
    # The server's own numbers stay (8, and the float limit 1.8e308 beside a client's 1e400);
    # a value the body spells two ways stays as the server wrote it; digits in a string as long
    # as Python's int() refuses (4,300) cost nothing and change nothing.
    assert protocol.as_sent("x: expected 8, got 8.0", b'{"x": 8.0}') == "x: expected 8, got 8.0"
    assert protocol.as_sent("x: at most 1.8e308, got 1e400", b'{"x": 1e400}') == (
        "x: at most 1.8e308, got 1e400"
    )
    assert protocol.as_sent("x: got 1e+29", b'{"x": 1e29, "y": 1E29}') == "x: got 1e+29"
    long = b'{"id": "%s", "x": %s}' % (b"1" * 6000, b"9" * 29)
    assert protocol.as_sent("x: got 1e+29", long) == "x: got " + "9" * 29


@pytest.mark.parametrize("rows", ["1e20", "1E20", "9" * 29, "18446744073709551616", "9"])
def test_a_row_count_past_the_limit_is_413_whatever_its_spelling(rows):
    # 1e20 or an integer past 64 bits (a float to orjson) was told "at least 1 row".
    body = image([0] * 64, shape=["ROWS", 8, 8, 1]).replace(b'"ROWS"', rows.encode())
    with pytest.raises(ServeError) as e:
        protocol.decode_infer(body, SIGNATURE, OUTPUTS, 8)
    assert e.value.status == 413 and e.value.message == (
        "inputs[0].shape[0]: expected at most 8 rows per request (the server's --max_batch_size), "
        f"got {rows} rows; split the request"
    )


def test_a_queue_timeout_says_both_durations_in_microseconds():
    # It said "queued 52 microseconds, past the request's 1": the request's value had no unit.
    from ann.serve.app import timed_out
    from ann.serve.batcher import QueueTimeout

    e = timed_out(QueueTimeout(52e-6, 1e-6))
    assert e.status == 503 and e.message.startswith(
        "parameters.timeout: queued 52 microseconds, past the request's 1 microsecond (a busy "
    ), e.message
    assert "past the request's 1500 microseconds" in timed_out(QueueTimeout(2.0, 1500e-6)).message


@pytest.mark.parametrize("datatype", ["UINT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BF16"])
def test_json_booleans_are_refused_for_every_datatype_but_bool(datatype):
    """NumPy reads true and false as 1 and 0: a UINT8 input answered 200 for them."""
    dtype = {v: k for k, v in protocol.DATATYPES.items()}[datatype]
    signature = {"x": {"dtype": dtype, "shape": [2]}}

    def body(values, **extra):
        tensor = {"name": "x", "shape": [1, 2], "datatype": datatype, "data": values}
        return json.dumps({"inputs": [tensor], **extra}).encode()

    for values in ([True, False], [[True], [0]], [1, True], [False, 2.5], [[3, 4], [5, False]]):
        with pytest.raises(ServeError) as e:
            protocol.decode_infer(body(values), signature, OUTPUTS, 8)
        assert e.value.status == 400, values
        assert e.value.message.startswith("inputs[0].data: " + BOOLEANS.format(datatype, "x"))
    # Numbers go through, also when the body says true elsewhere.
    for extra in ({}, {"parameters": {"binary_data_output": True}}, {"id": "true false"}):
        inputs = protocol.decode_infer(body([1, 0], **extra), signature, OUTPUTS, 8)[0]
        assert inputs["x"].tolist() == [[1, 0]], extra
    # BOOL takes them, and 0/1.
    bools = {"b": {"dtype": "bool", "shape": [2]}}
    for values in ([True, False], [1, 0], [True, 0]):
        tensor = {"name": "b", "shape": [1, 2], "datatype": "BOOL", "data": values}
        request = json.dumps({"inputs": [tensor]}).encode()
        assert protocol.decode_infer(request, bools, OUTPUTS, 8)[0]["b"].tolist() == [[True, False]]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bad_bodies)
@example(body=json.dumps({"inputs": [VALID], "parameters": {"timeout": 1}}).encode())
def test_fuzzed_requests_never_500(served, body):
    server, _, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/v2/models/digits/infer", body=body)
        response = conn.getresponse()
        reply = json.loads(response.read())
    finally:
        conn.close()
    assert response.status in (200, 400, 413, 503), (body, reply)
    if response.status == 503:
        # A well-formed request whose own `parameters.timeout` (1 microsecond, drawn) ran out in
        # the queue: its due, and the only 503 a request may cause (it failed the test when
        # drawn, as a stored Hypothesis example replayed it: a flaky test, not a server fault).
        assert reply["error"].startswith("parameters.timeout: queued "), (body, reply)
        assert json.loads(body)["parameters"]["timeout"] > 0, (body, reply)
    elif response.status != 200:
        assert explained(reply["error"]), reply["error"]


def test_bearer_token(digits_export):
    _, out = digits_export
    server = Server([f"--model={out}", "--max_batch_size=2", "--token=s3cret"])
    try:
        port = server.wait_ready().port
        x = np.zeros((1, 8, 8, 1), np.uint8)
        status, headers, body = request(port, "POST", "/v2/models/digits_cnn/infer", infer_body(x))
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        # Which it was, none, another scheme or another token ("got none or a wrong one").
        header = "header 'Authorization: Bearer <token>' with the server's token"
        assert body["error"] == f"authorization: expected {header}, got no Authorization header"
        for sent, said in [
            ("Bearer nope", "expected the server's token, got another Bearer token"),
            ("Basic czNjcmV0", f'expected {header}, got the "Basic" scheme'),
        ]:
            path, auth = "/v2/models/digits_cnn/infer", {"Authorization": sent}
            status, _, body = request(port, "POST", path, infer_body(x), auth)
            assert status == 401 and body["error"] == f"authorization: {said}", body
        auth = {"Authorization": "Bearer s3cret"}
        assert request(port, "POST", "/v2/models/digits_cnn/infer", infer_body(x), auth)[0] == 200
        assert request(port, "GET", "/metrics", headers={"Authorization": "Bearer no"})[0] == 401
        assert request(port, "GET", "/v2/health/ready")[0] == 200  # probes need no token
        # Nor does a model's readiness, a health endpoint of the v2 protocol (it was a 401);
        # its metadata does.
        assert request(port, "GET", "/v2/models/digits_cnn/ready")[0] == 200
        assert request(port, "GET", "/v2/models/digits_cnn")[0] == 401
    finally:
        server.stop()


def test_the_default_registry_the_index_lists_is_named_at_start_and_can_be_off(
    digits_export, tmp_path
):
    """`ann serve --model=EXPORT` run where a ./registry happened to be listed that registry's
    models in the repository index (the --registry default) without a word: it says so at
    start, naming the registry, and `--registry=off` (any case) lists the served models alone
    and refuses a registry URI."""
    from ann.registry import RegistryError
    from ann.serve.repository import load_model

    _, out = digits_export
    Registry(str(tmp_path / "registry")).register(str(out), "digits")
    base = {k: v for k, v in os.environ.items() if k != "ANN_REGISTRY"}
    line = (
        "repository index: also lists 1 version of 1 model not loaded from the registry at "
        f"{tmp_path / 'registry'} (the default: $ANN_REGISTRY is not set); --registry=off lists "
        "only the served models"
    )
    served = ("digits_cnn", "READY")
    for flags, index, said in [
        ([], {served, ("digits", "UNAVAILABLE")}, True),
        (["--registry=OFF"], {served}, False),
    ]:
        server = Server([f"--model={out}", "--max_batch_size=1", *flags], base_env=base,
                        cwd=tmp_path)  # fmt: skip
        try:
            port = server.wait_ready().port
            listed = request(port, "POST", "/v2/repository/index", {})[2]
        finally:
            server.proc.terminate()
            output = server.proc.communicate(timeout=60)[0].decode()
        assert {(m["name"], m["state"]) for m in listed} == index, listed
        assert (line in output.splitlines()) == said, output
        # The registry's version is the export served: said so, not one more model.
        for m in listed:
            if m["name"] == "digits":
                served_as = next(e for e in listed if e["name"] == "digits_cnn")["version"]
                assert m["reason"] == (
                    f"not loaded (in the registry; its export is served as digits_cnn/{served_as})"
                ), m
    with pytest.raises(RegistryError) as e:
        load_model("models:/digits/1", "off")
    assert str(e.value) == (
        "models:/digits/1 is a registry URI, and the server runs with --registry=off (no "
        "registry); give --registry=DIR, or the export directory"
    )


def test_a_restart_reads_its_batch_sizes_from_the_compilation_cache(digits_export, tmp_path):
    """`--compilation_cache_dir`: the first start compiles each batch size and writes it to the
    directory (made here), a second start (batch size 1 only) reads it back; the ready line
    says so, and the weights each start compiled in, as `console.bytes_text` words them. Without
    the tests' own cache (the environment's would win, ann/compilation_cache.py), and without
    its every-program threshold: jax's default (1 s) would have cached none of these."""
    from conftest import without_compilation_cache

    _, out = digits_export
    cache = tmp_path / "made" / "cache"
    args = [f"--model={out}", "--monitor=off", f"--compilation_cache_dir={cache}"]
    lines = []
    for largest in (2, 1):  # the restart's one batch size: its weights under a MiB
        flag = f"--max_batch_size={largest}"
        server = Server([*args, flag], base_env=without_compilation_cache())
        try:
            server.wait_ready()
        finally:
            server.proc.terminate()
            output = server.proc.communicate(timeout=60)[0].decode()
            server.stop()
        lines += [line for line in output.splitlines() if line.startswith("ready: ")]
        if len(lines) == 1:
            assert len(os.listdir(cache)) >= 2, os.listdir(cache)  # one entry per batch size
    first, second = lines
    assert first.endswith("; compilation cache: 0 of 2 executables read from it)"), first
    assert second.endswith("; compilation cache: 1 of 1 executables read from it)"), second
    # The copies of the weights its executables hold, in KiB under a MiB (read "0.0 MiB").
    from ann import artifact
    from ann.console import bytes_text

    weights = artifact.load(str(out)).weights_bytes
    assert f"; weights compiled in: {bytes_text(2 * weights)}; " in first, first
    assert f"; weights compiled in: {bytes_text(weights)}; " in second, second
    assert weights < 1 << 20 and "KiB" in second, second


def test_sigterm_while_a_model_compiles_exits_within_the_shutdown_timeout(digits_export):
    """A compile in a worker thread cannot be interrupted: the server does not wait for it.
    It waited (a SIGTERM during a 57 s compile exited after 57 s, --shutdown_timeout=5 said
    and ignored: in Kubernetes, a SIGKILL). Here the compile is a 300 s sleep. Monitoring on:
    the drift process's semaphores are released on that fast exit (multiprocessing's resource
    tracker warned "There appear to be 5 leaked semaphore objects to clean up at shutdown")."""
    _, out = digits_export
    port = free_port()
    code = (
        "import time\n"
        "from absl import flags\n"
        "import ann.serve.__main__ as m, ann.serve.dataplane as d\n"
        "def compile_slowly(*args):\n"
        "    print('compiling', flush=True)\n"
        "    time.sleep(300)\n"
        "d._compile_counted = compile_slowly\n"
        "m.define_flags()\n"
        f"flags.FLAGS(['serve', '--model={out}', '--port={port}', '--shutdown_timeout=2', "
        "'--monitor=on'])\n"
        "m.main(['serve'])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline() == "compiling\n", proc.stderr.read()
        status, _, body = request(port, "GET", "/v2/health/ready")
        assert status == 503 and body["error"].startswith("models: still compiling digits_cnn/")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)  # it took the whole compile (300 s) to exit
        stderr = proc.stderr.read()  # to its end: the resource tracker's, which outlives it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0, stderr[-2000:]  # as any stop
    assert "stopping (SIGTERM)" in stderr, stderr[-2000:]
    assert re.search(r"stopped: not waiting for compiling digits_cnn/\w+ \(a thread cannot be "
                     r"interrupted; nothing of it is kept\)", stderr), stderr[-2000:]  # fmt: skip
    assert "leaked semaphore" not in stderr and "resource_tracker" not in stderr, stderr[-2000:]


def test_a_registry_that_every_registry_command_refuses_is_not_taken_in_silence(tmp_path, caplog):
    """`ann serve --model=EXPORT --registry=DIR`, DIR holding artifacts/ but no registry.db
    (which every `ann registry` command refuses), served with nothing said and the index
    listing none of its versions. A --registry or $ANN_REGISTRY named so is refused at start
    with the registry's line (here before the missing --model: no export needed); the default
    ./registry, named by nobody, is the index's warning, with the same line."""
    from ann.serve.repository import Repository

    registry = tmp_path / "registry"
    (registry / "artifacts" / "digits" / "1").mkdir(parents=True)
    lost = (
        " holds artifacts/ (the versions of digits) but no registry.db, which numbers them; "
        "restore registry.db from a backup"
    )
    base = {k: v for k, v in os.environ.items() if k != "ANN_REGISTRY"}
    for flags, env, named in [
        (["--registry=registry"], {}, "--registry=registry"),
        ([], {"ANN_REGISTRY": str(registry)}, f"{registry} (from $ANN_REGISTRY)"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "ann.serve", f"--model={tmp_path / 'none'}", *flags],
            env={**base, **env}, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 1, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: {named}{lost}")
    with caplog.at_level("WARNING", logger="ann.serve"):
        assert Repository(None, str(registry))._registered() == []
    assert f"the registry could not be read (--registry={registry}{lost}" in caplog.text


def test_a_model_that_fails_to_compile_at_start_ends_the_server_with_one_line(digits_export):
    """It logged "compiling digits_cnn failed" and a 30-line traceback, then ran on with
    /v2/health/ready at 503 until signalled, and exited 0: a server that can never turn ready
    (a fresh-user trial, with an edited manifest that `artifact.load` now refuses itself).
    Here the compile raises XLA-like text of several lines; monitoring on, so the drift
    process's start is left running in a thread (`leave_now`'s exit, status 1 too)."""
    _, out = digits_export
    code = (
        "from absl import flags\n"
        "import ann.serve.__main__ as m, ann.serve.dataplane as d\n"
        "def fail(*args):\n"
        "    raise RuntimeError('RESOURCE_EXHAUSTED: out of memory\\n  at line 2\\n  3')\n"
        "d._compile_counted = fail\n"
        "m.define_flags()\n"
        f"flags.FLAGS(['serve', '--model={out}', '--port={free_port()}', '--monitor=on'])\n"
        "m.main(['serve'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"error: compiling model digits_cnn version \w{12}: RuntimeError: RESOURCE_EXHAUSTED: "
        r"out of memory; the server cannot turn ready: fix or drop that --model",
        last,
    ), result.stderr[-2000:]


def test_a_stopping_server_lets_no_cache_write_start_or_stop_half_way(monkeypatch):
    """`leave_now` exits without waiting for a compiling thread, but not in the middle of its
    write of a compilation-cache entry: jax writes an entry once, in place, and one cut short
    would be read as a miss (with a warning) on every later start."""
    import threading

    from jax._src import compilation_cache as jax_cache

    from ann import compilation_cache

    written = []

    def put(key, *args):
        time.sleep(0.3)
        written.append(key)

    monkeypatch.setattr(jax_cache, "put_executable_and_time", put)
    compilation_cache.guard_writes()
    compilation_cache.guard_writes()  # once: not a lock taken twice
    first = threading.Thread(target=jax_cache.put_executable_and_time, args=("a",))
    first.start()
    time.sleep(0.05)
    try:
        assert compilation_cache.stop_writes(timeout=10)
        assert written == ["a"]  # the write in progress finished first
        later = threading.Thread(target=jax_cache.put_executable_and_time, args=("b",),
                                 daemon=True)  # fmt: skip
        later.start()
        later.join(0.5)
        assert later.is_alive() and written == ["a"]  # and none starts after
    finally:
        compilation_cache._writing.release()
    later.join(5)
    first.join(5)
    assert written == ["a", "b"]


@pytest.mark.slow
def test_overload_gives_503_and_sigterm_drains(digits_export):
    _, out = digits_export
    # Batches wait up to 1.5 s to fill 8 rows and the queue holds 8: a 5-row request waits, and
    # the next 5-row one (10 rows) is refused at once; then SIGTERM must still answer every
    # queued one.
    server = Server(
        [f"--model={out}", "--max_batch_size=8", "--max_queue_delay_ms=1500",
         "--batch_wait=full", "--max_queue_rows=8"]
    )  # fmt: skip
    try:
        port = server.wait_ready().port
        x = np.zeros((1, 8, 8, 1), np.uint8)
        path = "/v2/models/digits_cnn/infer"
        start = time.monotonic()
        five = infer_body(np.zeros((5, 8, 8, 1), np.uint8))
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            results = list(pool.map(lambda _: request(port, "POST", path, five), range(12)))
        assert time.monotonic() - start < 20  # no hang
        codes = sorted(r[0] for r in results)
        assert codes.count(200) >= 1 and codes.count(503) >= 1, codes
        assert set(codes) <= {200, 503}
        refused = next(r for r in results if r[0] == 503)
        assert refused[1]["retry-after"] == "1" and "queue: full" in refused[2]["error"]
        # A request's own timeout (Triton's, in microseconds) shorter than the fill wait: it is
        # refused unrun when its batch forms (it was served 1.5 s late, as if it had none).
        status, _, reply = request(port, "POST", path, infer_body(x, parameters={"timeout": 1000}))
        assert status == 503, reply
        queued = re.match(r"parameters\.timeout: queued ([\d,]+) microseconds", reply["error"])
        assert queued and int(queued[1].replace(",", "")) > 1_000_000, reply  # the fill's wait
        assert (
            "past the request's 1000 microseconds (a busy queue, or a batch waiting to fill)"
            in reply["error"]
        ), reply
        metrics = request(port, "GET", "/metrics")[2]
        assert 'ann_errors_total{code="503",model="digits_cnn",reason="timeout"' in metrics

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            pending = [pool.submit(request, port, "POST", path, infer_body(x)) for _ in range(4)]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # wait until all 4 are queued
                text = request(port, "GET", "/metrics")[2]
                if 'ann_queue_depth{model="digits_cnn"' in text and (
                    text.split('ann_queue_depth{model="digits_cnn"')[1].split("} ")[1]
                ).startswith("4.0"):
                    break
                time.sleep(0.05)
            server.proc.send_signal(signal.SIGTERM)
            answers = [p.result(timeout=30) for p in pending]
        assert [a[0] for a in answers] == [200] * 4, answers
        # Each ends its keep-alive connection: a client's next request on it was lost (reset)
        # when the drain closed the connection.
        assert [a[1].get("connection") for a in answers] == ["close"] * 4, answers
        assert server.proc.wait(30) == 0
        with pytest.raises(OSError):
            request(port, "GET", "/v2/health/live", timeout=2)
    finally:
        server.stop()


binary_bodies = st.builds(
    lambda size, shape, raw, delta, data: (
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "image",
                        "shape": shape,
                        "datatype": "UINT8",
                        "parameters": {"binary_data_size": size},
                        **data,
                    }
                ]
            }
        ).encode(),
        raw,
        delta,
    ),  # fmt: skip
    st.integers(-3, 600) | json_values,
    st.sampled_from([[1, 8, 8, 1], [2, 8, 8, 1], [1, 8, 8]]) | json_values,
    st.binary(max_size=300),
    st.integers(-5, 5),
    st.sampled_from([{}, {"data": [0] * 64}]),
)


@settings(max_examples=600, deadline=None)
@given(case=binary_bodies)
def test_fuzzed_binary_requests_are_explained(case):
    head, raw, delta = case
    header = str(len(head) + delta).encode()
    try:
        decoded = protocol.decode_infer(head + raw, SIGNATURE, OUTPUTS, 8, header)
    except ServeError as e:
        assert e.status in (400, 413) and explained(e.message), e.message
    else:  # (it unpacked 5 of InferRequest's 6 fields: a case that decodes failed the test)
        image = decoded.inputs["image"]
        assert image.shape == (decoded.rows, 8, 8, 1) and image.dtype == np.uint8


def test_framed_token_rows_must_keep_their_framing():
    """A seq2seq `source` is framed as training frames it (the manifest's `framing` next to its
    `padding`): a task word, its tokens, <eos>, then pads. A source without <eos> (as the
    README's "its ids, then pads" had a client send) was answered 200 with a wrong text
    (`reverse 1 2 3 4 5` -> `3 4 3 2 1`), as were tokens after <eos>, a leading <bos>, no task
    word and <eos> alone; now 400 naming the row and the framing, JSON and binary alike. An
    entry without `framing` (an older export) is checked for its padding only, as before."""
    vocab = ["<pad>", "<bos>", "<eos>", "1", "2", "+", "reverse", "add"]
    entry = {"dtype": "int32", "shape": [6], "names": vocab, "padding": {"id": 0, "side": "right"}}
    framing = {"task_ids": [6, 7], "bos_id": 1, "eos_id": 2}
    framed = {"source": {**entry, "framing": framing}}

    def decode(ids, signature=framed, binary=False):
        return _decode_ids("source", ids, signature, binary)

    fine = [[6, 3, 4, 2, 0, 0], [7, 3, 5, 4, 2, 0], [6, 3, 3, 3, 3, 2]]
    for binary in (False, True):
        assert decode(fine, binary=binary).inputs["source"].tolist() == fine
    rule = (
        "expected TASK TOKENS <eos> then pads: a task word (reverse=6, add=7), then at least one "
        "token that is none of <pad>=0, <bos>=1, <eos>=2 or a task word, then <eos> (id 2), then "
        "only pads (id 0)"
    )
    field = {False: "inputs[0].data", True: "inputs[0] (binary)"}
    for row, got in [
        ([6, 3, 4, 3, 0, 0], "[6, 3, 4, 3] then pads: no <eos> (id 2) after its tokens"),
        ([6, 3, 4, 3, 4, 3], "[6, 3, 4, 3, 4, 3]: no <eos> (id 2) after its tokens"),
        ([6, 3, 2, 4, 0, 0], "[6, 3, 2, 4] then pads: tokens after <eos>, from position 3"),
        ([1, 6, 3, 2, 0, 0], "[1, 6, 3, 2] then pads: <bos> (id 1) at position 0"),
        ([3, 3, 2, 0, 0, 0], "[3, 3, 2] then pads: it starts with 1 (id 3), not a task word"),
        ([2, 0, 0, 0, 0, 0], "[2] then pads: it starts with <eos> (id 2), not a task word"),
        ([6, 2, 0, 0, 0, 0], "[6, 2] then pads: nothing between the task word and <eos>"),
        ([6, 3, 7, 3, 2, 0], "[6, 3, 7, 3, 2] then pads: a second task word at position 2"),
    ]:
        for binary in (False, True):
            with pytest.raises(ServeError) as e:
                decode([fine[0], row], binary=binary)
            assert e.value.status == 400 and e.value.reason == "framing"
            assert e.value.message == f"{field[binary]}: row 1: {rule}; got {got}"
    # A padding fault is told as such first; an entry without `framing` takes any framing.
    with pytest.raises(ServeError) as e:
        decode([[6, 0, 3, 2, 0, 0]])
    assert e.value.reason == "padding"
    assert decode([[3, 3, 0, 0, 0, 0]], {"source": entry}).inputs["source"].tolist()[0][0] == 3
    # Without task words the framing is TOKENS <eos> then pads.
    untasked = {"source": {**entry, "framing": {"task_ids": [], "bos_id": 1, "eos_id": 2}}}
    assert decode([[3, 4, 2, 0, 0, 0]], untasked).inputs["source"].shape == (1, 6)
    with pytest.raises(ServeError, match=r"row 0: expected TOKENS <eos> then pads: at least one "
                       r"token that is none of <pad>=0, <bos>=1, <eos>=2, then .* got \[2\] then "
                       r"pads: nothing between the start and <eos>$"):  # fmt: skip
        decode([[2, 0, 0, 0, 0, 0]], untasked)


def test_each_served_seq2seq_model_checks_with_its_own_framing_built_once(monkeypatch):
    """A served model's input checks are worked out once, when it is loaded
    (`protocol.Signature`, sharing the loaded model's `artifact.Framing`): the server built a
    `Framing` per seq2seq request to look its cached check up (~11 us of a one-row request).
    Two seq2seq models loaded at once keep their own framing: `reverse` trained on 1 to 2
    digits refuses 3, the other model (1 to 4) takes them, and the reverse."""
    from ann.serve.dataplane import ServedModel

    vocab = ["<pad>", "<bos>", "<eos>", "1", "2", "+", "reverse"]

    def stub(most: int, share: bool):
        digits = {"name": "DIGITS", "ids": [3, 4], "min": 1, "max": most}
        framing = {"task_ids": [6], "bos_id": 1, "eos_id": 2, "sources": {"reverse": [[digits]]}}
        entry = {"dtype": "int32", "shape": [-1, 7], "names": vocab, "framing": framing,
                 "padding": {"id": 0, "side": "right"}}  # fmt: skip

        class Model:
            inputs = {"source": entry}
            outputs = {"tokens": {"dtype": "int32", "shape": [-1, 4], "names": vocab}}
            manifest: dict = {}

        if share:  # an artifact.Model's, built at its load
            Model.framings = {"source": artifact.framing(entry)}  # type: ignore[attr-defined]
        return Model()

    short, long = stub(2, share=True), stub(4, share=False)
    served = {m: ServedModel("s2s", v, m, "test") for v, m in (("1", short), ("2", long))}
    built = []
    monkeypatch.setattr(artifact, "framing", lambda *a: built.append(a))  # none per request
    three, one = [6, 3, 4, 3, 2, 0, 0], [6, 4, 2, 0, 0, 0, 0]
    for binary in (False, True):
        for m in (short, long):
            signature = served[m].inputs
            assert _decode_ids("source", [one], signature, binary).inputs["source"].tolist()
        assert _decode_ids("source", [three], served[long].inputs, binary).rows == 1
        with pytest.raises(ServeError) as e:
            _decode_ids("source", [three], served[short].inputs, binary)
        assert e.value.reason == "framing" and "(3 tokens in DIGITS, not 1 to 2)" in str(e.value)
    assert built == []
    assert served[short].inputs.specs["source"].framing is short.framings["source"]
    # The signature reads as the entries it was made from (the request log, metadata).
    assert served[long].inputs == {"source": {**long.inputs["source"], "shape": [7]}}


def test_framed_token_rows_must_be_of_a_shape_their_task_has():
    """The framing's `sources` (written at export from the training rows) states what each
    task's tokens look like: runs of tokens with their length ranges. A framed row of another
    shape (`reverse 1+2` where `reverse` is trained on digits only, more digits than training
    ever had) was answered 200 while `ann generate` refused it; now 400 naming the row, the
    task's shapes and the fix, JSON and binary alike. A task without a record, and a record
    ann does not write, leave the framing alone checked (as an older export's)."""
    vocab = ["<pad>", "<bos>", "<eos>", "1", "2", "+", "reverse", "add", "sort"]
    entry = {"dtype": "int32", "shape": [7], "names": vocab, "padding": {"id": 0, "side": "right"}}
    digits = {"name": "DIGITS", "ids": [3, 4], "min": 1, "max": 2}
    plus = {"name": "+", "ids": [5], "min": 1, "max": 1}
    sources = {"reverse": [[digits]], "add": [[digits, plus, digits]]}  # sort: none recorded
    framing = {"task_ids": [6, 7, 8], "bos_id": 1, "eos_id": 2, "sources": sources}
    framed = {"source": {**entry, "framing": framing}}
    fine = [[6, 3, 4, 2, 0, 0, 0], [7, 3, 5, 4, 3, 2, 0], [6, 4, 2, 0, 0, 0, 0]]
    fine.append([8, 3, 5, 5, 3, 2, 0])  # sort has no record: framing alone
    for binary in (False, True):
        got = _decode_ids("source", fine, framed, binary).inputs["source"].tolist()
        assert got == fine
    field = {False: "inputs[0].data", True: "inputs[0] (binary)"}
    reverse = "'reverse' sources are 'reverse DIGITS' (DIGITS: 1 to 2 of 1 2) as in training"
    add = "'add' sources are 'add DIGITS+DIGITS' (DIGITS: 1 to 2 of 1 2) as in training"
    for row, why in [
        ([6, 3, 5, 4, 2, 0, 0], f"{reverse}; got 'reverse DIGITS+DIGITS' in [6, 3, 5, 4, 2]"),
        # "outside 1 to 2 in [ids]" read as a range of the ids (a fresh-user check)
        ([6, 3, 4, 3, 2, 0, 0], f"{reverse}; got 'reverse DIGITS' (3 tokens in DIGITS, not 1 "
                                "to 2) in [6, 3, 4, 3, 2]"),
        ([7, 3, 4, 2, 0, 0, 0], f"{add}; got 'add DIGITS' in [7, 3, 4, 2]"),
        ([7, 3, 5, 2, 0, 0, 0], f"{add}; got 'add DIGITS+' in [7, 3, 5, 2]"),
    ]:  # fmt: skip
        for binary in (False, True):
            with pytest.raises(ServeError) as e:
                _decode_ids("source", [*fine, row], framed, binary)
            assert e.value.status == 400 and e.value.reason == "framing"
            assert e.value.message == (
                f"{field[binary]}: row 4: {why} then pads; send a source of that shape"
            )
    # Many rows are walked a column at a time, a few one by one: the same answer (the loader's).
    frame, many = artifact.framing(framed["source"]), np.array(fine * 10, np.int32)  # 280 ids
    assert frame.fault(many) is None
    many[37] = [7, 3, 5, 2, 0, 0, 0]
    want = f"{add}; got 'add DIGITS+' in [7, 3, 5, 2] then pads; send a source of that shape"
    assert frame.fault(many) == f"row 37: {want}"  # 40 rows: a column at a time
    assert frame.fault(many[30:38]) == f"row 7: {want}"  # 8 rows: one by one
    # Framing faults come first; a record ann does not write (a run of 0 to 2) is ignored.
    with pytest.raises(ServeError, match=r"row 0: expected TASK TOKENS <eos> then pads"):
        _decode_ids("source", [[6, 3, 5, 4, 0, 0, 0]], framed, False)
    odd = {"reverse": [[{**digits, "min": 0}]]}
    loose = {"source": {**entry, "framing": {**framing, "sources": odd}}}
    assert _decode_ids("source", [[6, 3, 5, 4, 2, 0, 0]], loose, False).rows == 1


def test_the_ready_lines_weights_read_in_kib_below_a_mib():
    # diabetes' 11 batch sizes of its 20 KiB of weights read "weights compiled in: 0.0 MiB".
    from ann.console import bytes_text

    assert bytes_text(11 * 20_992) == "225.5 KiB"
    assert bytes_text(6_606_028) == "6.3 MiB"
    assert bytes_text(1 << 20) == "1.0 MiB"
    assert bytes_text(512) == "512 B"
