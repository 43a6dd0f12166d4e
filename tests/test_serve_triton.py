"""Conformance: ann's server driven by NVIDIA's own v2 client (`tritonclient[http]`) through
every call it makes, JSON and binary, sync, async (gevent) and asyncio (`tritonclient.http.aio`),
the repository, statistics and configuration extensions, and the error cases, each raised by
the client as an exception carrying the server's message. Loopback only."""

import asyncio
import json
import re

import numpy as np
import pytest
from test_serve import Server, request

from ann import artifact, data
from ann.registry import Registry

tritonclient = pytest.importorskip("tritonclient.http")
from tritonclient.http import aio  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

ADMIN = "adm1n-t0ken"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def triton(digits_export, tmp_path_factory):
    """A server with registry versions 1 and 2 of `digits` (3 registered, not served), the
    admin token, and a Triton client on it."""
    _, out = digits_export
    root = tmp_path_factory.mktemp("triton")
    registry = Registry(str(root / "reg"))
    for _ in range(3):
        registry.register(str(out), "digits", allow_duplicate=True)
    (root / "admin").write_text(ADMIN)
    server = Server(
        [
            "--model=models:/digits/1",
            "--model=models:/digits/2",
            f"--registry={root / 'reg'}",
            f"--admin_token_file={root / 'admin'}",
            "--max_batch_size=8",
            "--max_queue_delay_ms=3",
        ]
    )
    try:
        server.wait_ready()
        client = tritonclient.InferenceServerClient(f"127.0.0.1:{server.port}", concurrency=4)
        yield server, client, artifact.load(str(out)), str(out)
        client.close()
    finally:
        server.stop()


def images(n: int) -> np.ndarray:
    return data.load("digits", "test", cache=True).rows(np.arange(n))["image"]


def infer_inputs(x: np.ndarray, binary: bool, datatype: str = "UINT8"):
    tensor = tritonclient.InferInput("image", list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    return [tensor]


def outputs(binary: bool):
    return [tritonclient.InferRequestedOutput(n, binary_data=binary)
            for n in ("probabilities", "label")]  # fmt: skip


def test_health_and_metadata(triton):
    _, client, _, _ = triton
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "ann"
    assert {"binary_tensor_data", "model_repository", "statistics", "model_configuration"} <= set(
        meta["extensions"]
    )
    assert client.is_model_ready("digits") and client.is_model_ready("digits", "2")
    model = client.get_model_metadata("digits", "2")
    # Every version that may be asked for, as Triton lists its loaded ones (it said ["2"]).
    assert model["name"] == "digits" and model["versions"] == ["1", "2"]
    assert model["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, 8, 8, 1]}]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_sync_and_gevent_async(triton, binary):
    _, client, model, _ = triton
    x = images(4)
    want = model({"image": x})
    result = client.infer("digits", infer_inputs(x, binary), outputs=outputs(binary),
                          request_id="r1", timeout=10**7)  # fmt: skip
    assert result.get_response()["id"] == "r1"
    # A priority the batcher cannot give is refused, not ignored.
    with pytest.raises(InferenceServerException, match="parameters.priority: expected 0") as e:
        client.infer("digits", infer_inputs(x, binary), priority=1)
    assert e.value.status() == "400"
    np.testing.assert_allclose(result.as_numpy("probabilities"), want["probabilities"], rtol=1e-5)
    np.testing.assert_array_equal(result.as_numpy("label"), want["label"])
    # Versions by number; async_infer (gevent greenlets) several at once.
    pending = [
        client.async_infer("digits", infer_inputs(x[i : i + 1], binary), model_version="2",
                           outputs=outputs(binary))
        for i in range(4)
    ]  # fmt: skip
    for i, p in enumerate(pending):
        r = p.get_result()
        assert r.get_response()["model_version"] == "2"
        np.testing.assert_array_equal(r.as_numpy("label"), want["label"][i : i + 1])


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_and_replies(triton, binary, algorithm):
    """The client's `request_compression_algorithm` (Content-Encoding; binary data's
    Inference-Header-Content-Length counts the uncompressed body) and
    `response_compression_algorithm` (Accept-Encoding): a compressed request was 400 "expected
    a JSON object, got text that is not UTF-8 (byte 0x8b at column 2)"."""
    _, client, model, _ = triton
    x = images(3)
    want = model({"image": x})
    for sent, asked in [(algorithm, None), (None, algorithm), (algorithm, algorithm)]:
        result = client.infer("digits", infer_inputs(x, binary), outputs=outputs(binary),
                              request_compression_algorithm=sent,
                              response_compression_algorithm=asked)  # fmt: skip
        np.testing.assert_array_equal(result.as_numpy("label"), want["label"])
        np.testing.assert_allclose(result.as_numpy("probabilities"), want["probabilities"],
                                   rtol=1e-5)  # fmt: skip
    # A refusal of a compressed request reads as any other (the error reply is not compressed).
    raises(
        "400",
        "inputs[0].shape: expected [-1, 8, 8, 1]",
        client.infer,
        "digits",
        infer_inputs(x.reshape(3, 64, 1, 1), binary),
        request_compression_algorithm=algorithm,
        response_compression_algorithm=algorithm,
    )


def test_asyncio_client(triton):
    server, _, model, _ = triton
    x = images(3)
    want = model({"image": x})["label"]

    async def main():
        client = aio.InferenceServerClient(f"127.0.0.1:{server.port}")
        try:
            assert await client.is_server_ready()
            assert (await client.get_model_metadata("digits"))["name"] == "digits"
            results = await asyncio.gather(*[
                client.infer("digits", infer_inputs(x[i : i + 1], binary=i % 2 == 0),
                             outputs=outputs(binary=i % 2 == 1))
                for i in range(3)
            ])  # fmt: skip
            with pytest.raises(InferenceServerException, match="model: expected one of"):
                await client.infer("nope", infer_inputs(x, True))
            return [r.as_numpy("label") for r in results]
        finally:
            await client.close()

    labels = asyncio.run(main())
    np.testing.assert_array_equal(np.concatenate(labels), want)


def raises(status: str, message: str, call, *args, **kwargs) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as e:
        call(*args, **kwargs)
    assert e.value.status() == status, (e.value.status(), e.value.message())
    assert message in e.value.message(), e.value.message()
    return e.value


def test_errors_are_client_exceptions_with_the_servers_message(triton):
    _, client, _, _ = triton
    x = images(2)
    raises("404", 'model: expected one of ["digits"], got "nope"', client.infer, "nope",
           infer_inputs(x, False))  # fmt: skip
    raises("404", 'version: expected one of ["1","2"], got "9"', client.infer, "digits",
           infer_inputs(x, True), model_version="9")  # fmt: skip
    raises("400", "inputs[0].datatype: expected UINT8 for input 'image', got \"FP32\"",
           client.infer, "digits", infer_inputs(x.astype(np.float32), False, "FP32"))  # fmt: skip
    raises("400", "inputs[0].shape: expected [-1, 8, 8, 1]", client.infer, "digits",
           infer_inputs(x.reshape(2, 8, 8), True))  # fmt: skip
    raises("413", "expected at most 8 rows per request", client.infer, "digits",
           infer_inputs(images(9), False))  # fmt: skip
    raises("404", "model: expected one of", client.get_model_metadata, "nope")
    raises("404", "version: expected one of", client.get_model_config, "digits", "7")
    raises("404", "model: expected one of", client.get_inference_statistics, "nope")
    assert not client.is_model_ready("nope")


def test_model_configuration(triton):
    _, client, _, out = triton
    config = client.get_model_config("digits", "2")
    assert config["name"] == "digits" and config["max_batch_size"] == 8
    assert config["input"] == [{"name": "image", "data_type": "TYPE_UINT8", "dims": [8, 8, 1]}]
    assert {o["name"]: o["data_type"] for o in config["output"]} == {
        "probabilities": "TYPE_FP32",
        "label": "TYPE_INT32",
    }
    # One label per row: Triton's form for it (dims were [], which Triton's config refuses).
    outputs = {o["name"]: o for o in config["output"]}
    assert outputs["label"]["dims"] == [1] and outputs["label"]["reshape"] == {"shape": []}
    assert outputs["probabilities"]["dims"] == [10] and "reshape" not in outputs["probabilities"]
    batching = config["dynamic_batching"]
    assert batching["max_queue_delay_microseconds"] == 3000
    assert batching["preferred_batch_size"] == [1, 2, 4, 8]
    assert config["version_policy"] == {"specific": {"versions": [2]}}


def metric(text: str, name: str, **labels) -> float:
    """One sample of a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_statistics_agree_with_metrics(triton):
    server, client, _, _ = triton
    x = images(3)
    for i in range(3):
        client.infer("digits", infer_inputs(x[: i + 1], True), model_version="1")
    with pytest.raises(InferenceServerException):
        client.infer("digits", infer_inputs(x.astype(np.float32), False, "FP32"), "1")
    every = client.get_inference_statistics()["model_stats"]
    assert {(s["name"], s["version"]) for s in every} == {("digits", "1"), ("digits", "2")}
    assert len(client.get_inference_statistics("digits")["model_stats"]) == 2
    [stats] = client.get_inference_statistics("digits", "1")["model_stats"]
    text = request(server.port, "GET", "/metrics")[2]
    mv = {"model": "digits", "version": "1"}
    inference = stats["inference_stats"]
    for key, series in [
        ("success", "ann_request_duration_seconds"),
        ("fail", "ann_failed_request_duration_seconds"),
        ("queue", "ann_queue_seconds"),
    ]:
        assert inference[key]["count"] == metric(text, series + "_count", **mv), key
        assert inference[key]["ns"] == round(metric(text, series + "_sum", **mv) * 1e9), key
    assert inference["success"]["count"] >= 3 and inference["fail"]["count"] >= 1
    assert stats["execution_count"] == metric(text, "ann_batch_size_count", **mv)
    assert stats["inference_count"] == metric(text, "ann_inference_rows_total", **mv) >= 1 + 2 + 3
    assert stats["last_inference"] > 0
    sizes = {b["batch_size"]: b for b in stats["batch_stats"]}
    assert sizes and set(sizes) <= {1, 2, 4, 8}
    for size, b in sizes.items():
        runs = metric(text, "ann_batch_executions_total", **mv, batch_size=str(size))
        assert b["compute_infer"]["count"] == runs > 0
        seconds = metric(text, "ann_batch_phase_seconds_total", **mv, batch_size=str(size),
                         phase="infer")  # fmt: skip
        assert b["compute_infer"]["ns"] == round(seconds * 1e9)
    assert sum(b["compute_infer"]["count"] for b in sizes.values()) == stats["execution_count"]


def test_repository_index_load_and_unload(triton):
    server, client, model, out = triton
    index = client.get_model_repository_index()
    assert {(m["name"], m["version"], m["state"], m["reason"]) for m in index} == {
        ("digits", "1", "READY", ""),
        ("digits", "2", "READY", ""),
        # As Triton lists its repository; the fixture registered one export as 2 and 3.
        ("digits", "3", "UNAVAILABLE", "not loaded (in the registry; its export is served as "
         "digits/2)"),
    }  # fmt: skip
    # Version 3 asked for before it is loaded: the 404 says the registry holds it, and how to
    # load it (it listed the versions served alone, trial 47b).
    status, _, body = request(server.port, "POST", "/v2/models/digits/versions/3/infer", {})
    assert status == 404 and body["error"] == (
        'model \'digits\' version: expected one of ["1","2"], got "3"; version 3 of \'digits\' '
        "is in the registry, not loaded: POST /v2/repository/models/digits/load (the admin "
        'token) with {"parameters": {"source": "models:/digits/3"}} loads it'
    ), body
    status, _, body = request(server.port, "POST", "/v2/models/digits/versions/4/infer", {})
    assert status == 404 and body["error"].endswith('got "4"'), body  # not in the registry
    # Load and unload need the admin token; the client's calls carry it as a header.
    raises("401", "admin token", client.load_model, "digits")
    # Version 3 from the registry, named the Triton way (the config's version policy).
    config = json.dumps({"version_policy": {"specific": {"versions": [3]}}})
    client.load_model("digits", headers=ADMIN_HEADERS, config=config)
    assert client.is_model_ready("digits", "3")
    x = images(2)
    result = client.infer("digits", infer_inputs(x, True), model_version="3")
    np.testing.assert_array_equal(result.as_numpy("label"), model({"image": x})["label"])
    # An export directory, by ann's own parameter: served under its manifest name.
    status, _, reply = request(
        server.port, "POST", "/v2/repository/models/digits_cnn/load",
        {"parameters": {"source": out}}, ADMIN_HEADERS,
    )  # fmt: skip
    assert status == 200 and reply["name"] == "digits_cnn", reply
    assert client.is_model_ready("digits_cnn")
    # Its version is its manifest's hash: addressed and unloaded by it (an unload naming it was
    # 400 'expected a version such as "2"'); no version number in its config.
    [version] = reply["loaded"]
    assert client.is_model_ready("digits_cnn", version)
    assert "version_policy" not in client.get_model_config("digits_cnn", version)
    # Loaded again: left as it is, and the reply says so ("loaded": [] alone said nothing).
    status, _, reply = request(
        server.port, "POST", "/v2/repository/models/digits_cnn/load",
        {"parameters": {"source": out}}, ADMIN_HEADERS,
    )  # fmt: skip
    assert (status, reply) == (
        200, {"name": "digits_cnn", "loaded": [], "already_served": [version]}
    ), reply  # fmt: skip
    status, _, reply = request(
        server.port, "POST", "/v2/repository/models/digits_cnn/unload",
        {"parameters": {"version": version}}, ADMIN_HEADERS,
    )  # fmt: skip
    assert (status, reply) == (200, {"name": "digits_cnn", "unloaded": [version]}), reply
    assert not client.is_model_ready("digits_cnn", version)
    status, _, reply = request(
        server.port, "POST", "/v2/repository/models/digits_cnn/load",
        {"parameters": {"source": out}}, ADMIN_HEADERS,
    )  # fmt: skip
    assert (status, reply["loaded"]) == (200, [version]), reply
    status, _, reply = request(
        server.port, "POST", "/v2/repository/models/other/load",
        {"parameters": {"source": out}}, ADMIN_HEADERS,
    )  # fmt: skip
    assert status == 400 and "holds model 'digits_cnn'" in reply["error"], reply
    raises("400", "no version 99", client.load_model, "digits", headers=ADMIN_HEADERS,
           config=json.dumps({"version_policy": {"specific": {"versions": [99]}}}))  # fmt: skip

    client.unload_model("digits_cnn", headers=ADMIN_HEADERS)
    assert not client.is_model_ready("digits_cnn")
    raises("404", 'model: expected one of ["digits"], got "digits_cnn"', client.infer,
           "digits_cnn", infer_inputs(x, True))  # fmt: skip
    states = {(m["name"], m["version"]): m for m in client.get_model_repository_index()}
    gone = [m for (name, _), m in states.items() if name == "digits_cnn"]
    assert gone and all(m["state"] == "UNAVAILABLE" and m["reason"] == "unloaded" for m in gone)
    assert states[("digits", "3")]["state"] == "READY"
    status, _, ready = request(server.port, "POST", "/v2/repository/index", {"ready": True})
    assert status == 200 and ready and all(m["state"] == "READY" for m in ready)
    raises("404", "model: expected one of", client.unload_model, "nope", headers=ADMIN_HEADERS)
    # The server stayed ready throughout: a load is not a restart.
    assert client.is_server_ready()
    # Version 3 out again: the module's other tests (in any order, under --dist worksteal)
    # see the versions the fixture serves (metadata listed 1, 2, 3 after this test).
    status, _, reply = request(
        server.port, "POST", "/v2/repository/models/digits/unload",
        {"parameters": {"version": "3"}}, ADMIN_HEADERS,
    )  # fmt: skip
    assert status == 200, reply
    assert client.get_model_metadata("digits")["versions"] == ["1", "2"]
