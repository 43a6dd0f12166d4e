"""The model server: Open Inference Protocol v2 over a lean HTTP/1.1 layer (ann/serve/http.py).

Routes (every JSON reply carries `model_name` and `model_version` when a model is addressed):

    POST /v2/models/{name}[/versions/{v}]/infer     infer (dynamic batching)
    GET  /v2/models/{name}[/versions/{v}]           model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready     model ready (200 / 503)
    GET  /v2/health/live   /v2/health/ready         process alive / every model compiled
    GET  /v2                                        server metadata
    GET  /metrics                                   Prometheus
    GET  /openapi.json                              this API as OpenAPI 3

No framework and no ASGI cycle, because the infer path is the product: `App.handle` takes a
parsed request and a `respond` callback; an infer is decoded, queued, and answered from its
batch's future callback, with no task or coroutine of its own (under uvicorn's ASGI cycle the
per-request Python work took more of the server's one core than the model's compute did; see
docs/benchmarks.md). Refusals are `{"error": "..."}` naming the field, what was expected and
what came: 400 bad input, 401 bad token, 404 unknown model or route, 405, 413 body or rows too
large, 400 malformed HTTP, 503 + Retry-After when the queue is full, the model is still
compiling or the server is draining (decided before the body is decoded). A fault in the server
itself is a 500 that says so. The HTTP layer refuses the rest before a request gets here: 408,
414, 431 and 503 for too many connections (ann/serve/http.py; limits in `Settings`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from ann import artifact
from ann.serve import protocol
from ann.serve.batcher import Batcher, QueueFull, Timing, buckets
from ann.serve.metrics import Metrics
from ann.serve.request_log import RequestLog

log = logging.getLogger("ann.serve")


@dataclasses.dataclass
class Settings:
    """The server's configuration, one field per flag of `python -m ann.serve`; every value is
    checked when made (`ValueError`: one line naming the flag and the fix), so a setting that
    cannot work stops the server before its port opens.

    Limits on clients (ann/serve/http.py), defaults and where they come from:
    `max_request_line_bytes` 8192 (414 above; nginx `large_client_header_buffers 4 8k`, Apache
    `LimitRequestLine 8190`); `max_header_bytes` 16384 for all header fields together (431;
    h11's and so uvicorn's `max_incomplete_event_size` 16 KiB, Node's `--max-http-header-size`
    16 KiB); `max_headers` 100 fields (431; Apache `LimitRequestFields 100`); `header_timeout_s`
    60 for a whole request head and `body_timeout_s` 60 between two reads of a body (408;
    nginx `client_header_timeout` and `client_body_timeout`, both 60 s); `keepalive_timeout_s` 5
    idle between requests (uvicorn `--timeout-keep-alive` 5 s); `max_connections` 512 open at
    once (503 above; nginx `worker_connections 512`, which also fits the common `ulimit -n` of
    1024); `max_body_bytes` 8 MiB (413).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    metrics_port: int | None = None  # /metrics and health without the token (Prometheus)
    max_batch_size: int = 64
    max_queue_delay_ms: float = 2.0
    batch_wait: str = "idle"  # "idle": stop waiting once no more requests are coming; "full"
    max_queue_rows: int | None = None  # default: 16 full batches
    max_body_bytes: int = 8 << 20
    max_request_line_bytes: int = 8192
    max_header_bytes: int = 16 << 10
    max_headers: int = 100
    header_timeout_s: float = 60.0
    body_timeout_s: float = 60.0
    keepalive_timeout_s: float = 5.0
    max_connections: int = 512
    token: str | None = None
    request_log: str | None = None
    request_log_sample: float = 0.01
    shutdown_timeout: float = 30.0
    retry_after_seconds: int = 1

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    @property
    def queue_rows(self) -> int:
        return self.max_queue_rows or 16 * self.max_batch_size

    def problem(self) -> str | None:
        """The first setting that cannot work, as one line naming the flag and the fix."""
        ranges: list[tuple[str, float, float, str]] = [
            ("port", 1, 65535, ""),
            ("max_batch_size", 1, 1 << 16, "rows per batch; each size up to it is compiled"),
            ("max_queue_delay_ms", 0, 60_000, ""),
            ("max_body_bytes", 1024, 1 << 31, "bytes; a body is held in memory"),
            ("max_request_line_bytes", 256, 1 << 20, "bytes"),
            ("max_header_bytes", 1024, 1 << 20, "bytes"),
            ("max_headers", 8, 10_000, "header fields"),
            ("header_timeout_s", 0.01, 3600, "seconds"),
            ("body_timeout_s", 0.01, 3600, "seconds"),
            ("keepalive_timeout_s", 0.01, 3600, "seconds"),
            ("max_connections", 1, 1 << 20, ""),
            ("request_log_sample", 0, 1, "a share of requests"),
            ("shutdown_timeout", 0, 3600, "seconds"),
            ("retry_after_seconds", 0, 3600, "seconds"),
        ]
        if self.metrics_port is not None:
            ranges.append(("metrics_port", 1, 65535, ""))
        if self.max_queue_rows is not None:
            ranges.append(("max_queue_rows", 1, 1 << 30, "rows"))
        for name, low, high, unit in ranges:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"--{name}={value!r}: expected a number in [{low}, {high}]"
            if not (low <= value <= high):  # also NaN
                unit = f" ({unit})" if unit else ""
                return (
                    f"--{name}={_number(value)}: expected a value in [{_number(low)}, "
                    f"{_number(high)}]{unit}"
                )
        if not self.host:
            return "--host: expected an address to bind, got an empty string"
        if self.batch_wait not in ("idle", "full"):
            return f"--batch_wait={self.batch_wait}: expected idle or full"
        if self.queue_rows < self.max_batch_size:
            return (
                f"--max_queue_rows={self.queue_rows} is below --max_batch_size="
                f"{self.max_batch_size}: a full batch could never be queued; raise "
                f"--max_queue_rows to at least {self.max_batch_size} or leave it unset"
            )
        if self.metrics_port is not None and self.metrics_port == self.port:
            return (
                f"--metrics_port={self.metrics_port} is --port too; give the metrics listener "
                "a port of its own"
            )
        if self.token is not None and not (
            self.token and all(33 <= ord(c) <= 126 for c in self.token)
        ):
            return (
                "token: expected printable ASCII without spaces (a Bearer token, RFC 6750), got "
                f"{'an empty one' if not self.token else 'other characters'}; set "
                "--token_file or $ANN_SERVE_TOKEN to a real token, or unset both for no token"
            )
        if self.request_log is not None:
            path = os.path.abspath(self.request_log)
            folder = os.path.dirname(path)
            if not os.path.isdir(folder):
                return f"--request_log={self.request_log}: its folder {folder} does not exist"
            if os.path.isdir(path):
                return f"--request_log={self.request_log}: is a folder; give a file in it"
            if not os.access(path if os.path.exists(path) else folder, os.W_OK):
                return f"--request_log={self.request_log}: not writable; give a writable path"
        return None

    def file_descriptors(self) -> int:
        """File descriptors the server may need: its connections and a reserve for the rest."""
        listeners = 2 if self.metrics_port is not None else 1
        return listeners * self.max_connections + 256


class ServedModel:
    """One version of one model: its artifact, its compiled buckets and its batcher."""

    def __init__(self, name: str, version: str, model: artifact.Model, source: str):
        self.name, self.version, self.model, self.source = name, version, model, source
        self.inputs = {k: {**v, "shape": v["shape"][1:]} for k, v in model.inputs.items()}
        self.outputs = model.outputs
        self.batcher: Batcher | None = None
        self.ready = False
        self.observe_duration: Callable[[float], None] = lambda _: None
        self.observe_queue: Callable[[float], None] = lambda _: None
        self.metadata = orjson.dumps(
            {
                "name": name,
                "versions": [version],
                "platform": "jax",
                "inputs": protocol.tensor_metadata(model.inputs),
                "outputs": protocol.tensor_metadata(model.outputs),
                "model_name": name,
                "model_version": version,
                "parameters": {
                    "platforms": model.manifest.get("platforms"),
                    "source": model.manifest.get("source"),
                    "metrics": model.manifest.get("metrics"),
                    "labels": {k: v["names"] for k, v in model.outputs.items() if "names" in v},
                },
            }
        )


class HTTPError(Exception):
    def __init__(self, status: int, message: str, reason: str, headers: list | None = None):
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers


class App:
    """The server's routes and serving logic; `models` are loaded artifacts, compiled on
    startup; `settings` were checked when made."""

    def __init__(self, models: list[ServedModel], settings: Settings):
        self.settings = settings
        self.models: dict[str, dict[str, ServedModel]] = {}
        self.default: dict[str, ServedModel] = {}  # the first version given for each name
        for m in models:
            self.models.setdefault(m.name, {})[m.version] = m
            self.default.setdefault(m.name, m)
        self.metrics = Metrics(settings.max_batch_size)
        for m in models:
            # Children bound once: a labels() lookup per request costs more than the observe.
            m.observe_duration = self.metrics.request_duration.labels(m.name, m.version).observe
            m.observe_queue = self.metrics.queue_seconds.labels(m.name, m.version).observe
            self.metrics.model_info.labels(
                m.name, m.version, ",".join(m.model.manifest.get("platforms", [])), m.source
            ).set(1)
        self.request_log = (
            RequestLog(
                settings.request_log,
                settings.request_log_sample,
                on_drop=self.metrics.request_log_dropped.inc,
            )
            if settings.request_log
            else None
        )
        self.draining = False
        self.compile_error: str | None = None
        self._compile_task: asyncio.Task | None = None
        self._token = settings.token.encode() if settings.token else None
        self._retry = [(b"retry-after", str(settings.retry_after_seconds).encode())]
        self._request_counters: dict[tuple[str, str, int], Callable[[], None]] = {}

    @property
    def ready(self) -> bool:
        return not self.draining and all(m.ready for v in self.models.values() for m in v.values())

    # -- lifecycle -----------------------------------------------------------------------------

    async def _compile_all(self) -> None:
        """Compiles every bucket of every model (off the event loop), then turns ready."""
        loop = asyncio.get_running_loop()
        sizes = buckets(self.settings.max_batch_size)
        for versions in self.models.values():
            for m in versions.values():
                start = time.perf_counter()
                try:
                    run = await loop.run_in_executor(None, _compile_buckets, m.model, sizes)
                except Exception as e:
                    self.compile_error = f"model {m.name} version {m.version}: {e}"
                    log.exception("compiling %s failed", m.name)
                    return
                m.batcher = Batcher(
                    run,
                    self.settings.max_batch_size,
                    self.settings.max_queue_delay_ms / 1000,
                    self.settings.queue_rows,
                    wait=self.settings.batch_wait,
                    on_batch=self._batch_observer(m),
                )
                m.batcher.start()
                m.ready = True
                log.warning(
                    "model %s version %s: compiled batch sizes %s in %.1fs",
                    m.name,
                    m.version,
                    sizes,
                    time.perf_counter() - start,
                )
        self.metrics.ready.set(1 if self.ready else 0)
        log.warning("ready")

    def _batch_observer(self, m: ServedModel) -> Callable[[Timing], None]:
        compute = self.metrics.compute_seconds.labels(m.name, m.version)
        size = self.metrics.batch_size.labels(m.name, m.version)
        padding = self.metrics.padding.labels(m.name, m.version)
        self.metrics.queue_depth.labels(m.name, m.version).set_function(
            lambda: m.batcher.queued_rows if m.batcher else 0
        )

        def observe(t: Timing) -> None:
            compute.observe(t.compute_seconds)
            size.observe(t.batch_rows)
            padding.inc(t.bucket - t.batch_rows)

        return observe

    def start_draining(self) -> None:
        """SIGTERM: ready turns false and new infers get 503; queued ones still finish."""
        self.draining = True
        self.metrics.ready.set(0)

    async def shutdown(self) -> None:
        self.start_draining()
        for versions in self.models.values():
            for m in versions.values():
                if m.batcher is not None:
                    await m.batcher.close()
        if self._compile_task is not None and not self._compile_task.done():
            self._compile_task.cancel()
        if self.request_log is not None:
            self.request_log.close()

    # -- requests ------------------------------------------------------------------------------

    def refused(self, status: int, reason: str) -> None:
        """Counts a refusal made by the HTTP layer (limits, timeouts, malformed HTTP), as an
        error and as a request (`ann_requests_total` counts every reply by status)."""
        self.metrics.errors.labels(str(status), reason).inc()
        self._count(None, status)

    def start(self) -> None:
        """Starts compiling every model in the background (the port is open meanwhile)."""
        self._compile_task = asyncio.get_running_loop().create_task(self._compile_all())

    def handle(
        self,
        method: str,
        path: str,
        authorization: bytes | None,
        body: bytes,
        too_large: int | None,
        respond: Callable[[int, bytes, list | None], None],
        header_length: bytes | None = None,
        public_only: bool = False,
    ) -> None:
        """One parsed HTTP request; calls `respond(status, body, headers)` once, maybe later.

        `too_large` is the body size when it is over `max_body_bytes` (-1: streamed past it);
        the request is still routed so the refusal names the model. `header_length`: the
        Inference-Header-Content-Length header (binary tensor data), if sent. `public_only`:
        the metrics port, which answers `/metrics` and `/v2/health/*` without the token and
        nothing else.
        """
        served: ServedModel | None = None
        status: int | None = 500
        try:
            parts = [p for p in path.split("/") if p]
            if public_only:
                if parts != ["metrics"] and parts[:2] != ["v2", "health"]:
                    raise _no_route(
                        method, path, "the metrics port serves /metrics and /v2/health/*"
                    )
            elif parts[:2] != ["v2", "health"]:
                self._authorize(authorization)
            if parts[:2] == ["v2", "models"] and len(parts) >= 3:
                served, rest = self._route_model(parts[2:])
                if rest == ["infer"]:
                    self._require(method, "POST", path)
                    status = None  # counted when its reply goes
                    self._infer(served, body, too_large, respond, header_length)
                    return
                self._require(method, "GET", path)
                if rest == []:
                    status = 200
                    respond(200, served.metadata, None)
                elif rest == ["ready"]:
                    status = 200 if served.ready and not self.draining else 503
                    reply = {"name": served.name, "ready": status == 200}
                    respond(status, self._with_model(reply, served), None)
                else:
                    raise _no_route(method, path)
                return
            self._require(method, "GET", path)
            status = 200
            if parts == ["v2", "health", "live"]:
                respond(200, b'{"live":true}', None)
            elif parts == ["v2", "health", "ready"]:
                status = 200 if self.ready else 503
                ready: dict[str, Any] = {"ready": status == 200}
                if self.compile_error:
                    ready["error"] = f"compiling failed: {self.compile_error}"
                respond(status, orjson.dumps(ready), None)
            elif parts == ["v2"]:
                respond(200, orjson.dumps(self._server_metadata()), None)
            elif parts == ["metrics"]:
                respond(
                    200, self.metrics.render(), [(b"content-type", b"text/plain; version=0.0.4")]
                )
            elif parts == ["openapi.json"]:
                respond(200, orjson.dumps(openapi(self)), None)
            else:
                raise _no_route(method, path)
        except HTTPError as e:
            status = e.status
            self.metrics.errors.labels(str(e.status), e.reason).inc()
            respond(e.status, self._with_model({"error": e.message}, served), e.headers)
        except Exception as e:  # a bug in the server, not in the request: say so, keep serving
            log.exception("internal error on %s %s", method, path)
            status = 500
            self.metrics.errors.labels("500", "internal").inc()
            message = f"internal server error ({type(e).__name__}: {e}); this is a server bug"
            respond(500, self._with_model({"error": message}, served), None)
        finally:
            if status is not None:
                self._count(served, status)

    def _count(self, served: ServedModel | None, status: int) -> None:
        """`ann_requests_total`, children cached: a labels() lookup costs more than the inc."""
        key = (served.name, served.version, status) if served else ("", "", status)
        counter = self._request_counters.get(key)
        if counter is None:
            counter = self._request_counters[key] = self.metrics.requests.labels(
                key[0], key[1], str(status)
            ).inc
        counter()

    # -- routes --------------------------------------------------------------------------------

    def _authorize(self, authorization: bytes | None) -> None:
        if self._token is None:
            return
        if authorization is not None:
            scheme, _, token = authorization.partition(b" ")
            if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._token):
                return
        raise HTTPError(
            401,
            "authorization: expected header 'Authorization: Bearer <token>' with the server's "
            "token, got none or a wrong one",
            "auth",
            [(b"www-authenticate", b"Bearer")],
        )

    @staticmethod
    def _require(method: str, expected: str, path: str) -> None:
        if method != expected:
            raise HTTPError(
                405,
                f"method: expected {expected} for {protocol.clip(path)}, got {method}",
                "method",
                [(b"allow", expected.encode())],
            )

    def _route_model(self, parts: list[str]) -> tuple[ServedModel, list[str]]:
        name, rest = parts[0], parts[1:]
        versions = self.models.get(name)
        if versions is None:
            raise HTTPError(
                404,
                f"model: expected one of {sorted(self.models)}, got {protocol.short(name)}",
                "model",
            )
        if rest[:1] == ["versions"]:
            if len(rest) < 2 or rest[1] not in versions:
                got = protocol.short(rest[1] if len(rest) > 1 else None)
                raise HTTPError(
                    404,
                    f"model {name!r} version: expected one of {sorted(versions)}, got {got}",
                    "version",
                )
            return versions[rest[1]], rest[2:]
        return self.default[name], rest

    def _infer(
        self,
        m: ServedModel,
        body: bytes,
        too_large: int | None,
        respond: Callable[[int, bytes, list | None], None],
        header_length: bytes | None,
    ) -> None:
        """Decodes and queues one infer; the reply is sent when its batch has run.

        Refusals that cost nothing come first, before the body is decoded: body too large,
        draining, not ready, queue full (no room for even one row)."""
        start = time.perf_counter()
        limit = self.settings.max_body_bytes
        if too_large is not None:
            got = f"got {too_large} (Content-Length)" if too_large >= 0 else "got more"
            raise HTTPError(
                413,
                f"body: expected at most {limit} bytes (--max_body_bytes), {got}",
                "body_too_large",
                [(b"connection", b"close")],
            )
        inputs, request_id = None, None
        try:
            if self.draining:
                raise HTTPError(
                    503, "server: draining for shutdown; retry elsewhere", "draining", self._retry
                )
            batcher = m.batcher
            if not m.ready or batcher is None:
                raise HTTPError(
                    503,
                    f"model {m.name!r} version {m.version}: still compiling; retry",
                    "not_ready",
                    self._retry,
                )
            try:
                batcher.check_room()  # before decoding: no room for even one row
                inputs, rows, request_id, wanted, binary = protocol.decode_infer(
                    body, m.inputs, m.outputs, self.settings.max_batch_size, header_length
                )
                future = batcher.submit_nowait(inputs, rows)
            except protocol.ProtocolError as e:
                raise HTTPError(e.status, e.message, e.reason) from None
            except QueueFull as e:
                raise HTTPError(
                    503, f"queue: full ({e}); retry later", "queue_full", self._retry
                ) from None
        except HTTPError as e:
            if self.request_log is not None and self.request_log.sampled():
                elapsed = time.perf_counter() - start
                self.request_log.write(
                    m.name, m.version, request_id, e.status, elapsed, inputs, error=e.message
                )
            raise

        def done(future: asyncio.Future) -> None:
            try:
                outputs, timing = future.result()
                selected = {k: outputs[k] for k in wanted}
                reply, json_length = protocol.encode_infer(
                    m.name, m.version, request_id, selected, binary
                )
                respond(200, reply, None if json_length is None else _binary_headers(json_length))
            except Exception as e:  # a fault in the model or the encoder: a 500 that says so
                log.exception("internal error on infer %s", m.name)
                self.metrics.errors.labels("500", "internal").inc()
                message = f"internal server error ({type(e).__name__}: {e}); this is a server bug"
                respond(500, self._with_model({"error": message}, m), None)
                self._count(m, 500)
                return
            duration = time.perf_counter() - start
            m.observe_duration(duration)
            m.observe_queue(timing.queue_seconds)
            self._count(m, 200)
            if self.request_log is not None and self.request_log.sampled():
                self.request_log.write(
                    m.name, m.version, request_id, 200, duration, inputs, selected
                )

        future.add_done_callback(done)

    @staticmethod
    def _with_model(body: dict[str, Any], served: ServedModel | None) -> bytes:
        if served is not None:
            body = {**body, "model_name": served.name, "model_version": served.version}
        return orjson.dumps(body)

    def _server_metadata(self) -> dict[str, Any]:
        import ann

        return {
            "name": "ann",
            "version": ann.__version__,
            "extensions": ["binary_tensor_data"],
            "models": [
                {"name": m.name, "version": m.version, "ready": m.ready}
                for versions in self.models.values()
                for m in versions.values()
            ],
        }


def _number(value: float) -> str:
    """12, 0.5, nan, inf: as a flag would be written."""
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e18):
        return str(int(value))
    return repr(float(value))


def _no_route(method: str, path: str, hint: str = "see /openapi.json") -> HTTPError:
    return HTTPError(404, f"no route {method} {protocol.clip(path)}; {hint}", "route")


def _binary_headers(json_length: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", b"%d" % json_length),
    ]


def _compile_buckets(model: artifact.Model, sizes: list[int]) -> dict[int, Callable]:
    """AOT-compiles each bucket and runs it once, so the first request pays nothing."""
    run = {}
    for size in sizes:
        fn = model.compile(size)
        fn({k: np.zeros((size, *v["shape"][1:]), v["dtype"]) for k, v in model.inputs.items()})
        run[size] = fn
    return run


def openapi(app: App) -> dict[str, Any]:
    """The API as an OpenAPI 3 document (the v2 protocol's shapes, this server's models)."""
    # `data`, or `parameters.binary_data_size` with the bytes after the JSON (binary extension)
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "datatype": {"type": "string", "enum": sorted(set(protocol.DATATYPES.values()))},
            "data": {"type": "array", "items": {}},
            "parameters": {
                "type": "object",
                "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
            },
        },
    }
    binary = {
        "description": "binary tensor data extension: the JSON request (its length in the "
        "Inference-Header-Content-Length header), then each binary input's bytes, in order",
        "schema": {"type": "string", "format": "binary"},
    }
    error = {"type": "object", "properties": {"error": {"type": "string"}}}
    ref = {"$ref": "#/components/schemas/Error"}

    def responses(ok: str, *codes: int) -> dict[str, Any]:
        out: dict[str, Any] = {"200": {"description": ok}}
        for code in codes:
            out[str(code)] = {
                "description": "error",
                "content": {"application/json": {"schema": ref}},
            }
        return out

    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": sorted(app.models)},
    }
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    header_length = {
        "name": "Inference-Header-Content-Length",
        "in": "header",
        "required": False,
        "schema": {"type": "integer", "minimum": 0},
    }
    infer = {
        "post": {
            "summary": "Infer (Open Inference Protocol v2)",
            "parameters": [name, header_length],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
                    "application/octet-stream": binary,
                },
            },
            "responses": {
                **responses("outputs", 400, 401, 404, 413, 503),
                "200": {
                    "description": "outputs",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/InferResponse"}
                        },
                        "application/octet-stream": binary,
                    },
                },
            },
        }
    }
    versioned = {"post": {**infer["post"], "parameters": [name, version, header_length]}}

    def get(summary: str, *params: dict) -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "parameters": list(params),
                "responses": responses(summary, 401, 404, 503),
            }
        }

    return {
        "openapi": "3.0.3",
        "info": {"title": "ann model server", "version": "2"},
        "paths": {
            "/v2/health/live": get("Server live"),
            "/v2/health/ready": get("Server ready"),
            "/v2": get("Server metadata"),
            "/v2/models/{name}": get("Model metadata", name),
            "/v2/models/{name}/ready": get("Model ready", name),
            "/v2/models/{name}/infer": infer,
            "/v2/models/{name}/versions/{version}": get("Model metadata", name, version),
            "/v2/models/{name}/versions/{version}/ready": get("Model ready", name, version),
            "/v2/models/{name}/versions/{version}/infer": versioned,
            "/metrics": get("Prometheus metrics"),
        },
        "components": {
            "schemas": {
                "Error": error,
                "InferRequest": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {"type": "array", "items": tensor},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "parameters": {
                                        "type": "object",
                                        "properties": {"binary_data": {"type": "boolean"}},
                                    },
                                },
                            },
                        },
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data_output": {"type": "boolean"}},
                        },
                    },
                },
                "InferResponse": {
                    "type": "object",
                    "properties": {
                        "model_name": {"type": "string"},
                        "model_version": {"type": "string"},
                        "id": {"type": "string"},
                        "outputs": {"type": "array", "items": tensor},
                    },
                },
            }
        },
        "x-models": {
            n: {
                v: {
                    "inputs": protocol.tensor_metadata(m.model.inputs),
                    "outputs": protocol.tensor_metadata(m.model.outputs),
                }
                for v, m in vs.items()
            }
            for n, vs in app.models.items()
        },
    }


def run(app: App) -> None:
    """Serves `app` on `app.settings.host:port` until SIGTERM/SIGINT: stop accepting, finish
    queued requests, exit."""
    from ann.serve.http import serve

    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(app))
