"""OpenTelemetry traces of the model server, configured only by the standard `OTEL_*` variables.

Off unless `OTEL_TRACES_EXPORTER` names an exporter (the SDK's own reading: unset or `none` is no
exporter), or a tracer provider is already installed in the process (`opentelemetry-instrument
ann serve ...`, or a program embedding the server). Off, the server makes no span and pays one
`is None` test per request and per batch. On, `from_environment` hands the configuring to the
SDK's own code (`opentelemetry.sdk._configuration`, which `opentelemetry-instrument` and
`opentelemetry-distro` run too): exporters (`OTEL_TRACES_EXPORTER`, `OTEL_EXPORTER_OTLP_*`),
sampler (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`), resource (`OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`), batching (`OTEL_BSP_*`), span limits, `OTEL_SDK_DISABLED`. The
defaults ann adds: the `otel` extra installs the OTLP exporter over HTTP, so without
`OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` the protocol is `http/protobuf` (the specification's
default; the Python SDK alone would pick gRPC, which is not installed); and without
`OTEL_SERVICE_NAME` or a `service.name` in `OTEL_RESOURCE_ATTRIBUTES` the service is
`SERVICE_NAME`, "ann-serve" (the SDK's would be "unknown_service:python"), the name the
rendered Grafana dashboard's slow-request panel looks for by default (ann/observability/). A
configuration that fails (an unknown exporter, the SDK missing) logs one warning and the server
serves untraced; the warning names the package when an exporter's is missing (`grpc` needs
`opentelemetry-exporter-otlp-proto-grpc`). An OTLP endpoint that is not an http(s) URL is
warned of at start, naming its variable (the exporter said so only at the first export).

Spans (tracer "ann.serve"), by the HTTP semantic conventions where they have a name:

    "POST /v2/models/{name}/infer"  SERVER, one per request but /v2/health/*, /metrics and the
        metrics port; parent: the request's W3C `traceparent` (and `tracestate`) when sent.
        http.request.method, http.route, url.path, url.scheme, network.protocol.version,
        http.response.status_code; url.query when sent; server.address and server.port
        (X-Forwarded-Host or Host), client.address (the first X-Forwarded-For entry, else the
        peer), network.peer.address and .port, user_agent.original (`RequestHead`); error.type
        and status ERROR for 5xx (a 4xx is the client's error, not the server's);
        ann.model.name, ann.model.version when a model is addressed;
        ann.request.id: an infer's v2 `id` when it has one (the key feedback joins labels on).
      "queue"    submitted until its batch started; linked to the batch's span. A request
        that leaves the queue unrun has one too, until it left, with status ERROR: refused
        past its `parameters.timeout` (error.type "QueueTimeout", its exception recorded:
        the 503's wait), or cancelled while queued (error.type "cancelled")
      "encode"   the reply encoded
    "batch"   one per batch, the root of its own trace, linked to the request span of each of its
        requests (as the messaging conventions do for a batch): ann.model.name,
        ann.model.version, ann.batch.size (rows), ann.batch.requests, ann.batch.bucket (the
        compiled size it was padded to); status ERROR when the model failed.
      "compute"  the padded inputs assembled and the compiled model run

The conventions have no names for a model or a batch, hence the `ann.` names. A span costs the
SDK about 25 us of CPU (its attribute checks mostly), so the request's own steps of a few us
(routing, decoding) get none. A request the sampler drops (`OTEL_TRACES_SAMPLER=
parentbased_traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0.01`) costs a non-recording span and no
children, and a batch none of whose requests is sampled gets no span. The sampler decides a
batch span as a root: with a ratio it keeps a batch at that ratio too, whatever its requests;
sample everything (the default) and keep traces at the collector (tail sampling) to have the
batch of every kept request.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("ann.serve")

SERVICE_NAME = "ann-serve"  # resource service.name when the OTEL_* variables name none

# HTTP methods the semantic conventions know; any other is "_OTHER" (http.request.method).
KNOWN_METHODS = frozenset(
    ["CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"]
)


def from_environment() -> Tracing | None:
    """The server's tracing as the `OTEL_*` variables configure it, or None (off): see the
    module docstring. Never raises: a configuration that fails logs one warning (what failed
    and the fix) and returns None."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    installed = trace.get_tracer_provider()
    if not isinstance(installed, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return Tracing(installed)  # opentelemetry-instrument, or the embedding program
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not exporters or exporters.lower() == "none":
        return None
    try:
        from opentelemetry.sdk._configuration import _OTelSDKConfigurator
    except ImportError as e:
        log.warning(
            "tracing: OTEL_TRACES_EXPORTER=%s needs the OpenTelemetry SDK (%s); install ann's "
            "otel extra (pip install -e '.[otel]' in ann's clone). Serving without traces.",
            exporters,
            e,
        )
        return None
    if not (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    ):
        os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"  # as the distro sets "grpc"
    default_service_name(os.environ)
    if "otlp" in exporters.lower():
        problem = endpoint_problem(os.environ)
        if problem:
            log.warning("tracing: %s", problem)
    try:
        _OTelSDKConfigurator().configure()
    except Exception as e:  # any fault in a configuration must not stop the server
        fix = missing_exporter_fix(str(e), os.environ)
        log.warning(
            "tracing: the OTEL_* configuration failed (%s: %s); %s. Serving without traces.",
            type(e).__name__,
            e,
            fix or f"check OTEL_TRACES_EXPORTER={exporters} and the OTEL_EXPORTER_* variables",
        )
        return None
    return Tracing(trace.get_tracer_provider())


# The packages of the exporters the SDK names by entry point (`OTEL_TRACES_EXPORTER=otlp` is
# `otlp_proto_` and the protocol's name), for a configuration that failed without them.
EXPORTER_PACKAGES = {
    "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc",
    "otlp_proto_http": "opentelemetry-exporter-otlp-proto-http",
}


def _protocol_variable(environ: Mapping[str, str]) -> str:
    """`NAME=value` of the variable that sets the OTLP traces protocol."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if environ.get(name):
            return f"{name}={environ[name]}"
    return "OTEL_EXPORTER_OTLP_PROTOCOL"


def missing_exporter_fix(error: str, environ: Mapping[str, str]) -> str | None:
    """The fix of a configuration that failed for want of an exporter's package (the SDK's
    `Requested component 'otlp_proto_grpc' not found in entry point ...`): the package to
    install, which the warning did not name; None for another failure. `environ`: the
    variables (the protocol's is named for an OTLP exporter)."""
    import re

    found = re.search(r"Requested component '([^']+)' not found", error)
    package = EXPORTER_PACKAGES.get(found.group(1)) if found else None
    if package is None:
        return None
    fix = f"{_protocol_variable(environ)} needs {package}: pip install {package}"
    if found.group(1) == "otlp_proto_grpc":  # the extra installs the HTTP one
        fix += " (or unset it: http/protobuf, to port 4318, is installed)"
    return fix


def endpoint_problem(environ: Mapping[str, str]) -> str | None:
    """Why the OTLP endpoint the traces go to (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
    `OTEL_EXPORTER_OTLP_ENDPOINT`) is no http(s) URL with a host, naming the variable and the
    fix; None when it is one or neither is set. The SDK takes any value, and over HTTP each
    export then fails (`not-a-url` drew only the exporter's error line at the first export);
    the gRPC exporter also reads a bare `host:port`, which the specification does not give."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        value = environ.get(name)
        if not value:
            continue
        try:
            parts = urllib.parse.urlsplit(value)
            fine = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        except ValueError:  # a bad port, an unbalanced [
            fine = False
        if fine:
            return None
        grpc = _protocol_variable(environ).endswith("=grpc")  # reads a bare host:port too
        return (
            f"{name}={value} is not an http(s) URL with a host; give the collector's, e.g. "
            f"{name}=http://collector:{4317 if grpc else 4318}"
            + (" (the form the OTLP specification gives)" if grpc else ": every export fails")
        )
    return None


def flush_at_exit() -> None:
    """Ends the SDK's tracer provider as its exit hook would (`shutdown`: the batch processor's
    spans exported, the exporters closed), for a process that leaves by `os._exit`
    (`app.leave_now`), which runs no exit hooks: a server stopped while the drift process still
    started lost every span it had not yet exported. Nothing where the provider has no
    `shutdown` (the API's no-op one: tracing off)."""
    shutdown = getattr(trace.get_tracer_provider(), "shutdown", None)
    if shutdown is not None:
        try:
            shutdown()
        except Exception as e:  # an exporter's fault must not keep the process from leaving
            log.warning("tracing: exporting the last spans failed (%s: %s)", type(e).__name__, e)


def default_service_name(environ: MutableMapping[str, str]) -> None:
    """Sets `OTEL_SERVICE_NAME` to SERVICE_NAME in `environ` (the process environment, which
    the SDK reads) unless it or `OTEL_RESOURCE_ATTRIBUTES` (`key=value,...`) names a service."""
    attributes = environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    keys = {part.split("=", 1)[0].strip() for part in attributes.split(",")}
    if not environ.get("OTEL_SERVICE_NAME", "").strip() and "service.name" not in keys:
        environ["OTEL_SERVICE_NAME"] = SERVICE_NAME


def epoch_ns(perf: float) -> int:
    """A `time.perf_counter()` reading of the recent past as nanoseconds since the epoch (the
    span clock): now in `time.time_ns()` minus how long ago it was."""
    return time.time_ns() - int((time.perf_counter() - perf) * 1e9)


def _first(value: bytes) -> str:
    """The first entry of a comma-separated header value (the client's end of a proxy chain)."""
    return value.split(b",", 1)[0].strip().decode("latin-1")


@dataclasses.dataclass(frozen=True)
class RequestHead:
    """What a request's SERVER span reads besides its method and path, gathered by the HTTP
    layer only while tracing is on: `headers`, every header field as sent ((name, value)
    bytes, in order); `query`: the URL's query (after "?"), None without one; `peer`: the
    socket's peer address (`transport.get_extra_info("peername")`: (host, port, ...) for TCP),
    None when not known."""

    headers: Sequence[tuple[bytes, bytes]]
    query: bytes | None = None
    peer: Any = None

    def attributes(self, headers: Mapping[bytes, bytes]) -> dict[str, Any]:
        """The HTTP server span's attributes (OpenTelemetry semantic conventions, HTTP spans,
        stable) that come from the head; `headers`: `self.headers` by lower-case name (the
        last of a repeated one). `url.scheme` and `client.address` are the original client's
        where a proxy says (`X-Forwarded-Proto`, the first `X-Forwarded-For` entry), else the
        immediate peer's; `server.address` and `server.port` the first of `X-Forwarded-Host`
        and `Host`, the port the scheme's default when the header has none;
        `network.peer.address`/`.port` the socket's peer; `user_agent.original` and
        `url.query` as sent (ann's routes take nothing secret in a query)."""
        found: dict[str, Any] = {}
        proto = headers.get(b"x-forwarded-proto")
        if proto is not None and _first(proto).lower() in ("http", "https"):
            found["url.scheme"] = _first(proto).lower()
        host = headers.get(b"x-forwarded-host") or headers.get(b"host")
        if host:
            try:  # "name", "name:port", "[v6]:port": urllib's parsing of an authority
                authority = urllib.parse.urlsplit("//" + _first(host))
                address, port = authority.hostname, authority.port
            except ValueError:  # a port that is not one: the header is not a host
                address, port = None, None
            if address:
                found["server.address"] = address
                scheme = found.get("url.scheme", "http")
                found["server.port"] = port if port is not None else DEFAULT_PORTS[scheme]
        forwarded_for = headers.get(b"x-forwarded-for")
        peer = self.peer if isinstance(self.peer, (tuple, list)) and len(self.peer) >= 2 else None
        if forwarded_for and _first(forwarded_for):
            found["client.address"] = _first(forwarded_for)
        elif peer is not None:
            found["client.address"] = str(peer[0])
        if peer is not None:
            found["network.peer.address"], found["network.peer.port"] = str(peer[0]), peer[1]
        agent = headers.get(b"user-agent")
        if agent is not None:
            found["user_agent.original"] = agent.decode("latin-1")
        if self.query is not None:
            found["url.query"] = self.query.decode("latin-1")
        return found


DEFAULT_PORTS = {"http": 80, "https": 443}  # server.port when the Host header names none


class Tracing:
    """Makes the server's spans with a tracer of `provider` (an SDK `TracerProvider`, or any
    API one)."""

    def __init__(self, provider: trace.TracerProvider):
        import ann

        self.tracer = provider.get_tracer("ann.serve", ann.__version__)
        self._propagator = TraceContextTextMapPropagator()

    def request(
        self,
        method: str,
        path: str,
        route: str | None,
        head: RequestHead | None,
        respond: Callable[[int, bytes, Any], None],
    ) -> TracedRequest:
        """Starts the SERVER span of one request; `route`: its route's pattern (None: no route
        matched), `head`: what the span reads of the request besides its method and path (its
        trace context and the attributes of `RequestHead.attributes`); `respond` is the reply
        callback, wrapped by the returned `TracedRequest` (which ends the span)."""
        known = method if method in KNOWN_METHODS else "_OTHER"
        attributes: dict[str, Any] = {
            "http.request.method": known,
            "url.path": path,
            "url.scheme": "http",
            "network.protocol.version": "1.1",
        }
        parent = None
        if head is not None:
            headers = {name.lower(): value for name, value in head.headers}
            carrier = {
                key: headers[raw].decode("latin-1")
                for key, raw in (("traceparent", b"traceparent"), ("tracestate", b"tracestate"))
                if raw in headers
            }
            if "traceparent" in carrier:
                parent = self._propagator.extract(carrier)
            attributes.update(head.attributes(headers))
        if known == "_OTHER":
            attributes["http.request.method_original"] = method
        if route is not None:
            attributes["http.route"] = route
        name = "HTTP" if known == "_OTHER" else known
        if route is not None:
            name = f"{name} {route}"
        span = self.tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        return TracedRequest(self.tracer, span, respond)

    def batches(self, name: str, version: str) -> BatchTrace:
        """The `Batcher` hook that traces the batches of model `name` at `version`."""
        return BatchTrace(self.tracer, name, version)


class TracedRequest:
    """One request's SERVER span and its reply callback: calling it answers the request with
    `(status, body, headers)` and ends the span with the status."""

    __slots__ = ("tracer", "span", "recording", "context", "_respond")

    def __init__(self, tracer: trace.Tracer, span: trace.Span, respond: Callable):
        self.tracer, self.span, self._respond = tracer, span, respond
        self.recording = span.is_recording()  # False: sampled out, no children
        self.context = trace.set_span_in_context(span) if self.recording else None

    def model(self, name: str, version: str) -> None:
        if self.recording:
            self.span.set_attributes({"ann.model.name": name, "ann.model.version": version})

    def attribute(self, key: str, value: Any) -> None:
        if self.recording:
            self.span.set_attribute(key, value)

    def child(self, name: str, start: float) -> None:
        """A child span from `start` (a `time.perf_counter()` reading) until now."""
        if self.recording:
            self.tracer.start_span(name, context=self.context, start_time=epoch_ns(start)).end()

    def __call__(self, status: int, body: bytes, headers: Any) -> None:
        span = self.span
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))
        try:
            self._respond(status, body, headers)
        finally:
            span.end()


class BatchTrace:
    """The `Batcher`'s tracing hook for one model: `start` when a batch is formed (its span,
    linked to each request's span, and each request's "queue" span, ended), `end` when it has
    run (its "compute" span, then its own end), `unbatched` for a request that left the queue
    unrun (its "queue" span, ERROR)."""

    def __init__(self, tracer: trace.Tracer, name: str, version: str):
        self.tracer = tracer
        self.attributes = {"ann.model.name": name, "ann.model.version": version}

    def start(self, members: Sequence[Any], rows: int, bucket: int) -> trace.Span | None:
        """`members`: the batch's pending requests (`.trace`: a `TracedRequest` or None,
        `.enqueued`: their `time.perf_counter()` at submit). Returns the batch's span, None
        when none of its requests is recorded (sampled out, or untraced)."""
        traced = [p for p in members if p.trace is not None and p.trace.recording]
        if not traced:
            return None
        attributes = {
            **self.attributes,
            "ann.batch.size": rows,
            "ann.batch.requests": len(members),
            "ann.batch.bucket": bucket,
        }
        links = [Link(p.trace.span.get_span_context()) for p in traced]
        now = time.time_ns()
        span = self.tracer.start_span(
            "batch", context=_ROOT, links=links, attributes=attributes, start_time=now
        )
        to_batch = [Link(span.get_span_context())]
        for p in traced:
            waited = p.trace.tracer.start_span(
                "queue", context=p.trace.context, start_time=epoch_ns(p.enqueued), links=to_batch
            )
            waited.end(now)
        return span

    def unbatched(self, member: Any, error: Exception | None) -> None:
        """The "queue" span of `member`, a pending request that left the queue without a batch
        (as `start`'s members; its span is ended before its reply ends its request's span):
        refused with `error` (QueueTimeout: it waited past its `parameters.timeout`), or
        cancelled (None: its client went away). Nothing when its request is not recorded."""
        request = member.trace
        if request is None or not request.recording:
            return
        waited = request.tracer.start_span(
            "queue", context=request.context, start_time=epoch_ns(member.enqueued)
        )
        if error is None:
            waited.set_attribute("error.type", "cancelled")
            waited.set_status(Status(StatusCode.ERROR, "cancelled while queued"))
        else:
            waited.set_attribute("error.type", type(error).__name__)
            waited.record_exception(error)
            waited.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        waited.end()

    def end(
        self, span: trace.Span, compute_start: float, compute_end: float, error: Exception | None
    ) -> None:
        """Records the batch's compute (`time.perf_counter()` readings) and ends its span;
        `error`: what the model raised, if it did."""
        compute = self.tracer.start_span(
            "compute", context=trace.set_span_in_context(span), start_time=epoch_ns(compute_start)
        )
        if error is not None:
            for s in (compute, span):
                s.record_exception(error)
                s.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        compute.end(epoch_ns(compute_end))
        span.end()


# An empty context: a batch span starts a trace of its own, whatever is current.
_ROOT = Context()
