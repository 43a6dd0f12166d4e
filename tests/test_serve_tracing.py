"""The server's OpenTelemetry traces, in-process against the SDK's in-memory exporter: a request
span per request with queue and encode children, one batch span per batch linked to its requests
(compute under it), the HTTP conventions' attributes, the W3C traceparent honoured (a caller's
"not sampled" too), no spans for the probes, a failing model marked ERROR; and the configuration
from `OTEL_*`: a bad one warns once and the server serves (the CLI end to end: slow)."""

import asyncio
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ann.serve import tracing
from ann.serve.app import App
from ann.serve.dataplane import ServedModel
from ann.serve.settings import Settings

INFER = "/v2/models/m/infer"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class FakeModel:
    """y = 2x; a row with x[0] < 0 makes the whole batch fail (a fault in the model)."""

    name = "m"
    inputs = {"x": {"dtype": "float32", "shape": [-1, 2]}}
    outputs = {"y": {"dtype": "float32", "shape": [-1, 2]}}
    manifest = {"platforms": ["cpu"]}
    weights_bytes = 0

    def compile(self, size, constant_weights=False):
        def run(inputs):
            if (inputs["x"][:, 0] < 0).any():
                raise ValueError("negative input")
            return {"y": inputs["x"] * 2}

        return run


def body(rows, value=1.0, **extra) -> bytes:
    x = [[value, 0.5]] * rows
    return json.dumps(
        {"inputs": [{"name": "x", "shape": [rows, 2], "datatype": "FP32", "data": x}], **extra}
    ).encode()


@pytest.fixture
def exporter():
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    spans.tracing = tracing.Tracing(provider)
    return spans


def serve(tracer, requests, settings=None):
    """Answers `requests` ((method, path, body, trace headers, public_only)), all handled in one
    turn of the event loop (so the infers share one batch) by a compiled App; their replies."""

    async def main():
        app = App([ServedModel("m", "1", FakeModel(), "test")], settings or Settings(),
                  tracing=tracer)  # fmt: skip
        app.start()
        await asyncio.wait_for(app.dataplane._compile_task, 60)
        loop = asyncio.get_running_loop()
        replies = [loop.create_future() for _ in requests]
        for (method, path, data, trace, public_only), reply in zip(requests, replies):
            app.handle(method, path, None, data, None,
                       lambda *r, reply=reply: reply.set_result(r), None, trace,
                       public_only=public_only)  # fmt: skip
        answered = await asyncio.wait_for(asyncio.gather(*replies), 60)
        await app.shutdown()
        return answered

    return asyncio.run(main())


def infer(data, trace=None):
    return ("POST", INFER, data, trace, False)


def by_name(spans) -> dict[str, list]:
    found: dict[str, list] = {}
    for span in spans:
        found.setdefault(span.name, []).append(span)
    return found


def test_spans_parents_links_and_attributes(exporter):
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()
    replies = serve(
        exporter.tracing,
        [
            infer(
                body(1),
                tracing.RequestHead([(b"traceparent", traceparent), (b"TraceState", b"vendor=1")]),
            ),  # fmt: skip
            infer(body(2, id="two")),
            infer(body(3)),
        ],
    )
    assert [status for status, _, _ in replies] == [200, 200, 200]
    spans = by_name(exporter.get_finished_spans())
    assert sorted(spans) == ["POST /v2/models/{name}/infer", "batch", "compute", "encode",
                             "queue"]  # fmt: skip
    requests = spans["POST /v2/models/{name}/infer"]
    assert len(requests) == 3 and all(s.kind is SpanKind.SERVER for s in requests)
    for span in requests:
        assert {k: span.attributes[k] for k in (
            "http.request.method", "http.route", "url.path", "http.response.status_code",
            "ann.model.name", "ann.model.version")} == {
            "http.request.method": "POST", "http.route": "/v2/models/{name}/infer",
            "url.path": INFER, "http.response.status_code": 200, "ann.model.name": "m",
            "ann.model.version": "1"}  # fmt: skip
        assert span.status.status_code is StatusCode.UNSET
        for child in ("queue", "encode"):  # each request has one of each, under it
            [mine] = [s for s in spans[child] if s.parent.span_id == span.context.span_id]
            assert mine.context.trace_id == span.context.trace_id
    # The traceparent sent: that request's span continues the caller's trace.
    continued = [s for s in requests if s.context.trace_id == int(TRACE_ID, 16)]
    assert len(continued) == 1 and continued[0].parent.span_id == int(PARENT_ID, 16)
    assert continued[0].parent.is_remote and continued[0].context.trace_state.get("vendor") == "1"
    assert len({s.context.trace_id for s in requests}) == 3
    assert [s.attributes.get("ann.request.id") for s in requests].count("two") == 1
    # One batch of the three, a trace of its own, linked to each request; compute under it.
    [batch], [compute] = spans["batch"], spans["compute"]
    assert batch.parent is None
    assert batch.context.trace_id not in {s.context.trace_id for s in requests}
    assert {link.context.span_id for link in batch.links} == {s.context.span_id for s in requests}
    assert dict(batch.attributes) == {"ann.model.name": "m", "ann.model.version": "1",
                                      "ann.batch.size": 6, "ann.batch.requests": 3,
                                      "ann.batch.bucket": 8}  # fmt: skip
    assert compute.parent.span_id == batch.context.span_id
    for queue in spans["queue"]:  # each request's wait links to the batch that ran it
        assert [link.context.span_id for link in queue.links] == [batch.context.span_id]


def test_server_span_attributes_follow_the_http_conventions(exporter):
    """OpenTelemetry's HTTP server span: server.address/.port from X-Forwarded-Host or Host
    (the scheme's default port when it names none), client.address the first X-Forwarded-For
    entry else the peer, network.peer.*, user_agent.original, url.query, url.scheme from
    X-Forwarded-Proto; none of them from a head that does not say."""
    heads = [
        tracing.RequestHead(
            [(b"Host", b"models.example:8443"), (b"User-Agent", b"loadgen/1.0"),
             (b"X-Forwarded-For", b"203.0.113.7, 10.0.0.2")],
            b"debug=1", ("10.0.0.2", 51234),
        ),
        tracing.RequestHead(
            [(b"host", b"[::1]:8000"), (b"x-forwarded-host", b"api.example.com"),
             (b"x-forwarded-proto", b"https")],
            None, ("::1", 40000, 0, 0),
        ),
        tracing.RequestHead([(b"Host", b"name:notaport")], None, None),
    ]  # fmt: skip
    serve(exporter.tracing, [infer(body(1), head) for head in heads] + [infer(body(1))])
    spans = [s.attributes for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    by_peer = {a.get("network.peer.address"): a for a in spans}
    first, second = by_peer["10.0.0.2"], by_peer["::1"]
    assert {
        k: first[k]
        for k in (
            "server.address",
            "server.port",
            "client.address",
            "network.peer.port",
            "user_agent.original",
            "url.query",
            "url.scheme",
        )
    } == {
        "server.address": "models.example",
        "server.port": 8443,
        "client.address": "203.0.113.7",
        "network.peer.port": 51234,
        "user_agent.original": "loadgen/1.0",
        "url.query": "debug=1",
        "url.scheme": "http",
    }
    assert {k: second[k] for k in ("server.address", "server.port", "client.address",
                                   "url.scheme")} == {
        "server.address": "api.example.com", "server.port": 443, "client.address": "::1",
        "url.scheme": "https"}  # fmt: skip
    assert "url.query" not in second and "user_agent.original" not in second
    bare = [a for a in spans if "network.peer.address" not in a]
    assert len(bare) == 2
    for attributes in bare:  # a Host that is no host, and no head at all
        assert not {"server.address", "server.port", "client.address"} & set(attributes)


def test_the_http_layer_keeps_a_request_head_only_while_tracing():
    """With tracing on, the connection hands the handler every header field, the query and the
    socket's peer (RequestHead); off, nothing (not even a traceparent it was sent)."""
    from ann.serve.http import Listener

    got = []

    def handler(method, path, auth, body, too_large, respond, header_length=None, trace=None, *_):
        got.append((path, trace))
        respond(200, b"{}", None)

    async def main(traced):
        listener = Listener(handler, Settings(), traced=traced)
        server = await asyncio.get_running_loop().create_server(listener, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                b"POST /v2/models/m/infer?debug=1 HTTP/1.1\r\nHost: models.example:8443\r\n"
                b"traceparent: 00-" + TRACE_ID.encode() + b"-" + PARENT_ID.encode() + b"-01\r\n"
                b"Content-Length: 2\r\n\r\n{}"
            )
            await writer.drain()
            await asyncio.wait_for(reader.readuntil(b"{}"), 30)
        finally:
            writer.close()
            server.close()

    asyncio.run(main(True))
    [(path, head)] = got
    assert path == "/v2/models/m/infer" and isinstance(head, tracing.RequestHead)
    assert head.query == b"debug=1" and head.peer[0] == "127.0.0.1"
    assert (b"Host", b"models.example:8443") in head.headers
    assert any(name == b"traceparent" for name, _ in head.headers)
    got.clear()
    asyncio.run(main(False))
    assert got == [("/v2/models/m/infer", None)]


def test_requests_sampled_out_cost_no_children_and_no_batch(exporter):
    # the caller did not sample
    unsampled = tracing.RequestHead([(b"traceparent", f"00-{TRACE_ID}-{PARENT_ID}-00".encode())])
    serve(exporter.tracing, [infer(body(1), unsampled), infer(body(2))])
    spans = by_name(exporter.get_finished_spans())  # the default sampler follows the caller
    [kept] = spans.pop("POST /v2/models/{name}/infer")
    [batch] = spans.pop("batch")
    assert [link.context.span_id for link in batch.links] == [kept.context.span_id]
    assert batch.attributes["ann.batch.requests"] == 2 and batch.attributes["ann.batch.size"] == 3
    assert {n: len(s) for n, s in spans.items()} == {"queue": 1, "encode": 1, "compute": 1}
    exporter.clear()
    serve(exporter.tracing, [infer(body(1), unsampled), infer(body(1), unsampled)])
    assert exporter.get_finished_spans() == ()


def test_no_spans_for_probes_and_the_metrics_port(exporter):
    probes = [
        ("GET", path, b"", None, public_only)
        for path in ("/v2/health/live", "/v2/health/ready", "/metrics")
        for public_only in (False, True)
    ]
    probes.append(("POST", INFER, body(1), None, True))  # the metrics port: 404, no span
    statuses = [status for status, _, _ in serve(exporter.tracing, probes)]
    assert statuses == [200] * 6 + [404]
    assert exporter.get_finished_spans() == ()
    serve(exporter.tracing, [("GET", "/v2/models/m", b"", None, False)])  # not a probe: a span
    [span] = exporter.get_finished_spans()
    assert span.name == "GET /v2/models/{name}" and span.attributes["ann.model.name"] == "m"


def test_refusals_and_a_failing_model(exporter):
    replies = serve(exporter.tracing, [
        ("GET", "/nowhere", b"", None, False), ("BREW", INFER, b"", None, False),
        infer(b"{not json"), infer(body(1, value=-1.0)), infer(body(1))])  # fmt: skip
    assert [status for status, _, _ in replies] == [404, 405, 400, 500, 500]
    spans = by_name(exporter.get_finished_spans())
    [unrouted] = spans["GET"]  # no route: the method alone, no http.route
    assert "http.route" not in unrouted.attributes
    assert unrouted.attributes["http.response.status_code"] == 404
    [other] = spans["HTTP /v2/models/{name}/infer"]  # a method the conventions do not know
    assert other.attributes["http.request.method"] == "_OTHER"
    assert other.attributes["http.request.method_original"] == "BREW"
    requests = spans["POST /v2/models/{name}/infer"]
    codes = sorted(s.attributes["http.response.status_code"] for s in requests)
    assert codes == [400, 500, 500]
    for span in requests + [unrouted, other]:  # a 4xx is the client's error, a 5xx the server's
        failed = span.attributes["http.response.status_code"] >= 500
        assert (span.status.status_code is StatusCode.ERROR) == failed
        assert ("error.type" in span.attributes) == failed
    [batch], [compute] = spans["batch"], spans["compute"]  # the two good rows ran as one batch
    for span in (batch, compute):
        assert span.status.status_code is StatusCode.ERROR
        assert "negative input" in span.status.description
    assert compute.events[0].name == "exception"


def test_a_request_that_leaves_the_queue_unrun_has_its_queue_span(exporter):
    """A request refused (503) past its `parameters.timeout` waited in the queue, and that
    wait was untraced: no "queue" span under its SERVER span. It has one, ERROR, with the
    QueueTimeout recorded; so has a request cancelled while queued (its client went away)."""
    replies = serve(exporter.tracing, [infer(body(1, parameters={"timeout": 1})), infer(body(1))])
    assert [status for status, _, _ in replies] == [503, 200]
    spans = by_name(exporter.get_finished_spans())
    requests = spans["POST /v2/models/{name}/infer"]
    [refused] = [s for s in requests if s.attributes["http.response.status_code"] == 503]
    [waited] = [s for s in spans["queue"] if s.parent.span_id == refused.context.span_id]
    assert waited.status.status_code is StatusCode.ERROR and not waited.links  # no batch ran it
    assert waited.status.description.startswith("QueueTimeout: waited ")
    assert waited.attributes["error.type"] == "QueueTimeout"
    assert waited.events[0].name == "exception" and waited.end_time <= refused.end_time
    assert len(spans["queue"]) == 2 and len(spans["batch"]) == 1  # the other one ran

    async def cancelled():  # the batcher alone: a cancelled future, dropped at its batch
        from ann.serve.batcher import Batcher

        exporter.clear()
        batcher = Batcher({1: lambda x: x}, 1, 0.0, 1, wait="idle",
                          trace=exporter.tracing.batches("m", "1"))  # fmt: skip
        batcher.start()
        request = exporter.tracing.request("POST", INFER, "/r", None, lambda *_: None)
        batcher.submit_nowait({"x": np.ones((1, 2))}, 1, request).cancel()
        await batcher.close()
        request(499, b"", None)

    asyncio.run(cancelled())
    [waited] = by_name(exporter.get_finished_spans())["queue"]
    assert waited.status.status_code is StatusCode.ERROR
    assert waited.attributes["error.type"] == "cancelled"


@pytest.fixture
def clean_env(monkeypatch):
    """No OTEL_* variable this file's tests read or `from_environment` sets, before and after
    (setenv first, so that monkeypatch also removes what the code under test sets)."""
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL",
                 "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SERVICE_NAME",
                 "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):  # fmt: skip
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


def test_configuration_from_the_environment(clean_env, caplog):
    monkeypatch = clean_env
    monkeypatch.setattr(tracing.trace, "get_tracer_provider", tracing.trace.ProxyTracerProvider)
    assert tracing.from_environment() is None  # no exporter named: off, no warning
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing.from_environment() is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.from_environment() is None
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    # A provider installed before (opentelemetry-instrument, an embedding program) is used.
    installed = TracerProvider()
    monkeypatch.setattr(tracing.trace, "get_tracer_provider", lambda: installed)
    assert tracing.from_environment().tracer.resource is installed.resource
    assert caplog.records == []


@pytest.mark.parametrize(
    "env, name",
    [
        ({}, "ann-serve"),
        ({"OTEL_SERVICE_NAME": " "}, "ann-serve"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod"}, "ann-serve"),
        ({"OTEL_SERVICE_NAME": "digits"}, "digits"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "team=ml, service.name=digits"}, None),
    ],
)
def test_the_service_is_named_ann_serve_unless_the_variables_name_one(env, name):
    # The rendered dashboard's slow-request panel looks for service.name = ann-serve.
    environ = dict(env)
    tracing.default_service_name(environ)
    assert environ.get("OTEL_SERVICE_NAME") == name  # None: the attributes name it


def bad(monkeypatch, caplog, **env):
    """`from_environment` with `env`: off, and the one warning it logged."""
    monkeypatch.setattr(tracing.trace, "get_tracer_provider", tracing.trace.ProxyTracerProvider)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ann.serve"):
        assert tracing.from_environment() is None
    [record] = [r for r in caplog.records if r.name == "ann.serve"]
    return record.getMessage()


def test_a_bad_configuration_warns_once_and_serving_goes_on(clean_env, caplog):
    monkeypatch = clean_env
    message = bad(monkeypatch, caplog, OTEL_TRACES_EXPORTER="no_such_exporter")
    assert "no_such_exporter" in message and "Serving without traces" in message
    message = bad(monkeypatch, caplog, OTEL_TRACES_EXPORTER="otlp",
                  OTEL_EXPORTER_OTLP_PROTOCOL="carrier_pigeon")  # fmt: skip
    assert "carrier_pigeon" in message
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk._configuration", None)  # no SDK
    message = bad(monkeypatch, caplog, OTEL_TRACES_EXPORTER="otlp")
    assert "pip install -e '.[otel]' in ann's clone" in message  # ('ann[otel]' is on no index)
    # What the server does with it: serve, untraced.
    [(status, reply, _)] = serve(None, [infer(body(2))])
    assert status == 200 and json.loads(reply)["outputs"][0]["data"] == [2.0, 1.0] * 2


def test_a_missing_exporter_package_is_named_in_the_warning(clean_env, caplog):
    """`OTEL_EXPORTER_OTLP_PROTOCOL=grpc` without the gRPC exporter said "Requested component
    'otlp_proto_grpc' not found ...; check OTEL_TRACES_EXPORTER=otlp and the OTEL_EXPORTER_*
    variables": not the package to install, which the README's table names."""
    grpc = "opentelemetry-exporter-otlp-proto-grpc"
    said = "Requested component 'otlp_proto_grpc' not found in entry point 'x'"
    environ = {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}
    assert tracing.missing_exporter_fix(said, environ) == (
        f"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc needs {grpc}: pip install {grpc} (or unset "
        "it: http/protobuf, to port 4318, is installed)"
    )
    assert tracing.missing_exporter_fix("Unsupported OTLP protocol 'x'", environ) is None
    import importlib.util

    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is None:
        message = bad(clean_env, caplog, OTEL_TRACES_EXPORTER="otlp",
                      OTEL_EXPORTER_OTLP_PROTOCOL="grpc")  # fmt: skip
        assert f"; OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs {grpc}: pip install {grpc}" in message
        assert message.endswith("Serving without traces.")


ENDPOINT, TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"


@pytest.mark.parametrize(
    "env, warned",
    [
        ({ENDPOINT: "not-a-url"}, f"{ENDPOINT}=not-a-url"),
        ({TRACES_ENDPOINT: "ftp://x:21"}, f"{TRACES_ENDPOINT}=ftp://x:21"),
        ({ENDPOINT: "http://[x"}, f"{ENDPOINT}=http://[x"),
        ({ENDPOINT: "http://collector:4318"}, None),
        # The traces' own endpoint wins: the other one is not where they go.
        ({TRACES_ENDPOINT: "https://c/v1/traces", ENDPOINT: "bad"}, None),
    ],
)
def test_an_endpoint_that_is_no_url_is_warned_of_at_start(clean_env, caplog, env, warned):
    """`OTEL_EXPORTER_OTLP_ENDPOINT=not-a-url` drew no warning at start, only the exporter's
    error line at the first export. Tracing stays on (the SDK's configuration, not run here:
    it would install the process's tracer provider)."""
    from opentelemetry.sdk._configuration import _OTelSDKConfigurator

    clean_env.setattr(tracing.trace, "get_tracer_provider", tracing.trace.ProxyTracerProvider)
    clean_env.setattr(_OTelSDKConfigurator, "configure", lambda self: None)
    clean_env.setenv("OTEL_TRACES_EXPORTER", "otlp")
    for name, value in env.items():
        clean_env.setenv(name, value)
    with caplog.at_level(logging.WARNING, logger="ann.serve"):
        assert tracing.from_environment() is not None
    messages = [r.getMessage() for r in caplog.records if r.name == "ann.serve"]
    if warned is None:
        assert messages == []
    else:
        [message] = messages
        assert message.startswith(f"tracing: {next(iter(env))}=") and warned in message
        assert "is not an http(s) URL with a host; give the collector's, e.g. " in message
        assert message.endswith("=http://collector:4318: every export fails")


@pytest.mark.slow
def test_the_command_line_traces_by_otel_variables(digits_export):
    """`ann serve` with OTEL_TRACES_EXPORTER=console: spans on stdout; with an unknown
    exporter: one warning, and it serves."""
    from test_serve import Server, infer_body, request

    _, out = digits_export
    x = infer_body(np.zeros((1, 8, 8, 1), np.uint8))
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "digits-test"}
    server = Server([f"--model={out}"], env)
    try:
        server.wait_ready()
        status = request(server.port, "POST", "/v2/models/digits_cnn/infer",
                         json.dumps(x).encode(), {"traceparent": traceparent})[0]  # fmt: skip
        assert status == 200
        request(server.port, "GET", "/v2/health/ready")
    finally:
        server.proc.terminate()
        printed = server.proc.communicate(timeout=60)[0].decode()
    names = re.findall(r'"name": "([^"]+)"', printed)
    assert {"POST /v2/models/{name}/infer", "queue", "batch", "compute", "encode"} <= set(names)
    assert not any("health" in n for n in names)
    assert f'"trace_id": "0x{TRACE_ID}"' in printed and '"service.name": "digits-test"' in printed
    assert '"client.address": "127.0.0.1"' in printed  # the socket's peer, through the server
    assert f'"server.port": {server.port}' in printed  # from the Host header http.client sent
    server = Server([f"--model={out}"], {"OTEL_TRACES_EXPORTER": "no_such_exporter"})
    try:
        server.wait_ready()
        status = request(server.port, "POST", "/v2/models/digits_cnn/infer",
                         json.dumps(x).encode())[0]  # fmt: skip
        assert status == 200
    finally:
        server.proc.terminate()
        printed = server.proc.communicate(timeout=60)[0].decode()
    warnings = [line for line in printed.splitlines() if "tracing:" in line]
    assert len(warnings) == 1 and "no_such_exporter" in warnings[0], printed[-2000:]


def test_bench_serve_tracing_summary_reads_the_results_main_records():
    """`bench_serve.py --tracing`'s summary, on results keyed as `main` records them (model,
    mode, level): it looked them up by (mode, level) and ended every --tracing run with a
    KeyError after all its servers had run (no test ran that path); past that, the summary of
    dynamic vs batch 1 replaced the traces' lines instead of following them."""
    code = (
        "import sys, types; sys.path.insert(0, 'scripts'); import bench_serve as b\n"
        "r = dict(p95_ms=2.0, p50_ms=1.0, throughput=100.0, server_cpu_ms=0.5, "
        "overhead_ms=0.2, server_cores=0.9)\n"
        "modes, levels = ('dynamic', 'batch-1', 'traced', 'traced1%'), [1, 8]\n"
        "results = {('cnn', m, c): r for m in modes for c in levels}\n"
        "args = types.SimpleNamespace(monitoring=False, constant_weights=False, batch1=True)\n"
        "print('\\n'.join(b.summarize('cnn', results, levels, 0.3, args, "
        "{'traced': {}, 'traced1%': {}})))\n"
    )
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("cnn: traces off -> traced: c=1: p95 2.00 -> 2.00 ms"), lines
    assert lines[1].startswith("cnn: traces off -> traced1%: c=1:"), lines
    assert lines[2].startswith("cnn: bare compiled batch-1 call 0.300 ms"), lines


def test_bench_serve_app_layer_times_the_paths_it_names():
    """`bench_serve.py --app_layer` at one request: its stub batcher takes what the dataplane
    submits. The stub lagged Batcher.submit_nowait (no timeout, request_id) and every infer it
    timed was a TypeError, a 500 and a logged traceback, printed as the infer's cost."""
    code = "import sys; sys.path.insert(0, 'scripts'); import bench_serve as b; b.app_layer(1, 1)"
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120
    )
    assert proc.returncode == 0 and "internal error" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 and all("App.handle per request" in x for x in lines), lines
