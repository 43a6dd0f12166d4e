"""HTTP for the model server: the route table, and each route's translation between HTTP and
the serving logic (`dataplane.DataPlane`), over a lean HTTP/1.1 layer (ann/serve/http.py).

Routes (`ROUTES`; every JSON reply carries `model_name` and `model_version` when a model is
addressed):

    POST /v2/models/{name}[/versions/{v}]/infer     infer (dynamic batching)
    GET  /v2/models/{name}[/versions/{v}]           model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready     model ready (200 / 503)
    GET  /v2/health/live   /v2/health/ready         process alive / some model, all compiled
    GET  /v2                                        server metadata
    GET  /metrics                                   Prometheus
    GET  /openapi.json                              this API as OpenAPI 3 (ann/serve/openapi.json)
    GET  /v2/models/{name}[/versions/{v}]/config    model configuration (Triton's shape)
    GET  /v2/models/{name}[/versions/{v}]/monitor   the last monitoring window (drift, shares,
                                                    accuracy; ann/serve/monitoring.py)
    POST /v2/models/{name}[/versions/{v}]/feedback  late labels by request id (feedback.py)
    GET  /v2/models[/{name}[/versions/{v}]]/stats   statistics (Triton's shape)
    POST /v2/repository/index                       models and their states
    POST /v2/repository/models/{name}/load|unload   load / unload (the admin token)

A path that matches no route is 404 whatever its method; a route asked with a method it does not
take is 405 with `Allow`. No framework and no ASGI cycle, because the infer path is the product:
`App.handle` takes a parsed request and a `respond` callback; an infer is decoded, queued, and
answered from its batch's future callback, with no task or coroutine of its own (under uvicorn's
ASGI cycle the per-request Python work took more of the server's one core than the model's
compute did; see docs/benchmarks.md). Refusals are `errors.ServeError`, answered `{"error":
"..."}` naming the field, what was expected and what came: 400 bad input, 401 bad token, 403
load/unload without an admin token configured, 404 unknown model or route, 405, 409 a load or
unload of that model in progress (or /monitor, /feedback with --monitor=off), 413 body or
rows too large (a compressed body also once inflated), 415 a Content-Encoding other than gzip,
deflate or identity, 400 malformed HTTP, 503 + Retry-After when the queue is full, the model is
still compiling or being loaded, or the server is draining (decided before the body is
decoded). A fault in the server itself is a 500 that
says so. The HTTP layer refuses the rest before a request gets here: 408, 414, 431 and 503 for
too many connections (ann/serve/http.py; limits in `Settings`).

Traces (ann/serve/tracing.py, when `OTEL_*` turns them on): a SERVER span per request of every
route but the probes (`Route.traced`), and an infer's queue and encode spans under it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from ann import artifact
from ann.serve import compression, openapi, protocol
from ann.serve.batcher import NonFiniteOutput, QueueTimeout
from ann.serve.dataplane import DataPlane, ServedModel, listed, version_key
from ann.serve.errors import BODY_TOO_LARGE_FIX, ServeError
from ann.serve.model_config import model_config
from ann.serve.repository import Repository
from ann.serve.request_log import RequestLog
from ann.serve.settings import Settings
from ann.serve.statistics import model_statistics
from ann.serve.tracing import RequestHead, TracedRequest, Tracing, flush_at_exit

log = logging.getLogger("ann.serve")

Respond = Callable[[int, bytes, "list | None"], None]


@dataclasses.dataclass(frozen=True)
class Route:
    """One path of the API: `pattern` with `{name}` and `{version}` parts, the `App` method
    answering each HTTP method, `public`: no token needed (health probes), `metrics_port`:
    also answered on the metrics port, `admin`: the admin token needed, `traced`: a span per
    request when tracing is on (not for health and metrics probes). A pattern with
    `{name}` addresses a served model: it is looked up (404 if unknown) before the method is
    judged, so every reply names it (repository routes say `{model}`: not necessarily served)."""

    pattern: str
    methods: dict[str, str]
    public: bool = False
    metrics_port: bool = False
    admin: bool = False  # needs the admin token (`Settings.admin_token`), not the client's
    traced: bool = True

    @property
    def parts(self) -> list[str]:
        return [p for p in self.pattern.split("/") if p]

    def answer(self, method: str) -> str | None:
        """The `App` method answering `method`: HEAD as GET wherever GET is (RFC 9110 section
        9.3.2; the HTTP layer sends its headers without the body); None: 405."""
        return self.methods.get(method) or (self.methods.get("GET") if method == "HEAD" else None)

    def allowed(self) -> str:
        """The `Allow` header of a 405: the route's methods, HEAD with GET."""
        return ", ".join(sorted({*self.methods, *(["HEAD"] if "GET" in self.methods else [])}))


def _model_routes(suffix: str, methods: dict[str, str], **kind: bool) -> list[Route]:
    return [
        Route("/v2/models/{name}" + suffix, methods, **kind),
        Route("/v2/models/{name}/versions/{version}" + suffix, methods, **kind),
    ]


ROUTES: list[Route] = [
    Route("/v2/health/live", {"GET": "live"}, public=True, metrics_port=True, traced=False),
    Route(
        "/v2/health/ready", {"GET": "server_ready"}, public=True, metrics_port=True, traced=False
    ),
    Route("/v2", {"GET": "server_metadata"}),
    Route("/metrics", {"GET": "metrics_text"}, metrics_port=True, traced=False),
    Route("/openapi.json", {"GET": "openapi"}),
    *_model_routes("", {"GET": "model_metadata"}),
    # A health endpoint of the v2 protocol, as /v2/health/* are: a probe needs no token.
    *_model_routes("/ready", {"GET": "model_ready"}, public=True, traced=False),
    *_model_routes("/infer", {"POST": "infer"}),
    *_model_routes("/config", {"GET": "model_config"}),
    *_model_routes("/stats", {"GET": "statistics"}),
    *_model_routes("/monitor", {"GET": "monitor"}),
    *_model_routes("/feedback", {"POST": "feedback"}),
    Route("/v2/models/stats", {"GET": "statistics"}),
    Route("/v2/repository/index", {"POST": "repository_index"}),
    Route("/v2/repository/models/{model}/load", {"POST": "repository_load"}, admin=True),
    Route("/v2/repository/models/{model}/unload", {"POST": "repository_unload"}, admin=True),
]


class Router:
    """Matches a path to a route and its parameters: routes grouped by their number of parts,
    each compared on its literal parts only, literal-richer routes first (so a model named
    like a literal route still reaches its own routes). Matches are remembered per path (at
    most `CACHE` of them): a server sees the same few paths again and again."""

    CACHE = 4096

    def __init__(self, routes: list[Route]):
        self._by_length: dict[int, list[tuple[Route, tuple, tuple]]] = {}
        for route in routes:
            parts = route.parts
            literals = tuple((i, p) for i, p in enumerate(parts) if not p.startswith("{"))
            names = tuple((i, p[1:-1]) for i, p in enumerate(parts) if p.startswith("{"))
            self._by_length.setdefault(len(parts), []).append((route, literals, names))
        for candidates in self._by_length.values():
            candidates.sort(key=lambda c: len(c[2]))
        self._seen: dict[str, tuple[Route, dict[str, str]] | None] = {}

    def match(self, path: str) -> tuple[Route, dict[str, str]] | None:
        """(route, parameters by name) for `path`, or None; the parameters are shared by every
        request of the same path: read them, never change them."""
        try:
            return self._seen[path]
        except KeyError:
            pass
        parts = path.split("/")
        # An empty segment (`//`, a `/` at the end) is no route's: `/v2/models/digits//infer`
        # was served as `/v2/models/digits/infer`, and `.../versions//infer` read `infer` as
        # the version.
        found = None if "" in parts[1:] else self._match(parts[1:] if parts[0] == "" else parts)
        if len(self._seen) >= self.CACHE:
            self._seen.clear()
        self._seen[path] = found
        return found

    def _match(self, parts: list[str]) -> tuple[Route, dict[str, str]] | None:
        for route, literals, names in self._by_length.get(len(parts), ()):
            for i, literal in literals:
                if parts[i] != literal:
                    break
            else:
                return route, {name: parts[i] for i, name in names}
        return None


class Request:
    """One parsed HTTP request as the routes see it; `traced`: its span (tracing on), or None.
    `body` is inflated when a route first reads it, if it came compressed (`encoding`, its
    Content-Encoding; at most `limit` bytes inflated: ann/serve/compression.py), so an infer's
    cheap refusals (draining, not ready, queue full) inflate nothing."""

    __slots__ = ("method", "path", "params", "_body", "too_large", "respond", "header_length",
                 "traced", "encoding", "limit", "accept")  # fmt: skip

    def __init__(self, method, path, params, body, too_large, respond, header_length, traced,
                 encoding=None, limit=0, accept=None):  # fmt: skip
        self.method, self.path, self.params, self._body = method, path, params, body
        self.too_large, self.respond, self.header_length = too_large, respond, header_length
        self.traced, self.encoding, self.limit = traced, encoding, limit
        self.accept = accept  # Accept-Encoding: an infer's 200 reply compressed if it allows

    @property
    def body(self) -> bytes:
        if self.encoding is not None:
            self._body = compression.decompress(self._body, self.encoding, self.limit)
            self.encoding = None
        return self._body


@dataclasses.dataclass(frozen=True)
class _Unserved:
    """A served model's name with a version it does not serve (a client pinned to a version
    rolled back): the reply names both, and the metrics count it under the model with version
    "" (the client's string as a label value would let clients grow the series without bound)."""

    name: str
    version: str
    label_version: str = ""


def _addressed(params: dict[str, str]) -> _Unserved | None:
    """The model a route's path names (`{name}`, or a repository route's `{model}`) and its
    version ("" for none), as a refusal's body names it whether it is served or not (a 404 for
    a name not served had no `model_name`); the metrics count only served names (`_Unserved`).
    None for a path that names no model."""
    name = params.get("name", params.get("model"))
    if name is None:
        return None
    return _Unserved(protocol.clip(name), protocol.clip(params.get("version", "")))


class App:
    """The HTTP application: `models` are loaded artifacts, compiled on `start`; `settings`
    were checked when made; `tracing`: spans (`tracing.from_environment()`), None for none.
    The serving logic is `self.dataplane`."""

    def __init__(
        self, models: list[ServedModel], settings: Settings, tracing: Tracing | None = None
    ):
        self.settings = settings
        self.tracing = tracing
        self.dataplane = DataPlane(models, settings, tracing=tracing)
        self.repository = Repository(self.dataplane, settings.registry)
        self.metrics = self.dataplane.metrics
        self.router = Router(ROUTES)
        self.request_log = (
            RequestLog(
                settings.request_log,
                settings.request_log_sample,
                settings.request_log_max_bytes,
                settings.request_log_backups,
                on_drop=self.metrics.request_log_dropped.inc,
            )
            if settings.request_log
            else None
        )
        self._token = settings.token.encode() if settings.token else None
        self._admin_token = settings.admin_token.encode() if settings.admin_token else None
        # What a client route accepts: the client's token or the admin's (which opens them all).
        self._client_tokens = tuple(t for t in (self._token, self._admin_token) if t)
        self._request_counters: dict[tuple[str, str, str, int], Callable[[], None]] = {}
        self._tasks: set[asyncio.Task] = set()  # repository loads and unloads in progress

    @property
    def models(self) -> dict[str, dict[str, ServedModel]]:
        return self.dataplane.models

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Starts compiling every model in the background (the port is open meanwhile)."""
        self.dataplane.start()

    def start_draining(self) -> None:
        """SIGTERM: ready turns false and new infers get 503; queued ones still finish."""
        self.dataplane.start_draining()

    async def shutdown(self) -> None:
        for task in list(self._tasks):  # loads and unloads in progress
            task.cancel()
        await self.dataplane.shutdown()
        if self.request_log is not None:
            self.request_log.close()

    # -- requests ------------------------------------------------------------------------------

    def refused(self, status: int, reason: str) -> None:
        """Counts a refusal made by the HTTP layer (limits, timeouts, malformed HTTP), as an
        error and as a request (`ann_requests_total` counts every reply by status)."""
        self._error(None, status, reason)
        self._count(None, status)

    def handle(
        self,
        method: str,
        path: str,
        authorization: bytes | None,
        body: bytes,
        too_large: int | None,
        respond: Respond,
        header_length: bytes | None = None,
        trace: RequestHead | None = None,
        content_encoding: bytes | None = None,
        accept_encoding: bytes | None = None,
        public_only: bool = False,
    ) -> None:
        """One parsed HTTP request; calls `respond(status, body, headers)` once, maybe later.

        `too_large` is the body size when it is over `max_body_bytes` (-1: streamed past it);
        the request is still routed so the refusal names the model. `header_length`: the
        Inference-Header-Content-Length header (binary tensor data), if sent. `trace`: what its
        span reads of its head (tracing on; None: nothing kept). `content_encoding`: the body's
        Content-Encoding (gzip, deflate, identity; inflated when the route reads the body, 415
        for another); `accept_encoding`: its Accept-Encoding (an infer's 200 reply is compressed
        when it allows gzip or deflate; no other reply is, as Triton's server does: tritonclient's
        asyncio client sends aiohttp's default `gzip, deflate` and reads only an infer reply
        compressed). `public_only`: the metrics
        port, which answers `/metrics` and `/v2/health/*` without the token and nothing else.
        """
        served: ServedModel | _Unserved | None = None
        status: int | None = 500
        handler = ""
        params: dict[str, str] = {}
        traced = None
        request = None
        found = self.router.match(path)
        if found is not None and (not public_only or found[0].metrics_port):
            # before the token is checked: a refused token is counted under the route's handler
            handler = found[0].answer(method) or ""
        if self.tracing is not None and not public_only:
            traced = self._traced(method, path, found, trace, respond)
            if traced is not None:
                respond = traced
        try:
            route, params = self._route(method, path, found, authorization, public_only)
            if "name" in params:
                served = self._served(route, params, authorization)
                if traced is not None:
                    traced.model(served.name, served.version)
            answer = route.answer(method)
            if answer is None:
                allowed = route.allowed()
                raise ServeError(
                    405,
                    f"method: expected {allowed} for {protocol.clip(path)}, got {method}",
                    "method",
                    [(b"allow", allowed.encode())],
                )
            request = Request(method, path, params, body, too_large, respond, header_length,
                              traced, content_encoding, self.settings.max_body_bytes,
                              accept_encoding)  # fmt: skip
            status = getattr(self, answer)(request, served)
        except ServeError as e:
            status = e.status
            _as_sent(e, request)
            if served is None and e.reason == "version":  # a served name, a version it lacks
                served = _Unserved(params["name"], protocol.clip(params["version"]))
            elif served is None and e.reason == "loading":  # a name the admin is loading
                served = _Unserved(params["name"], protocol.clip(params.get("version", "")))
            elif served is None and "model" in params:  # a repository route's refusal
                served = self._repository_model(params["model"])
            self._error(served, e.status, e.reason)
            named = served or _addressed(params)
            respond(e.status, self._with_model({"error": e.message}, named), e.headers)
        except Exception as e:  # a bug in the server, not in the request: say so, keep serving
            log.exception("internal error on %s %s", method, path)
            status = 500
            self._error(served, 500, "internal")
            message = f"internal server error ({type(e).__name__}: {e}); this is a server bug"
            respond(500, self._with_model({"error": message}, served or _addressed(params)), None)
        finally:
            if status is not None:
                self._count(served, status, handler)

    def _traced(
        self,
        method: str,
        path: str,
        found: tuple[Route, dict[str, str]] | None,
        trace: RequestHead | None,
        respond: Respond,
    ) -> TracedRequest | None:
        """The request's span wrapping `respond`; None for an untraced route (the probes).
        `found`: the path's route and parameters (`Router.match`)."""
        if found is not None and not found[0].traced:
            return None
        route = None if found is None else found[0].pattern
        return self.tracing.request(method, path, route, trace, respond)

    def _route(
        self,
        method: str,
        path: str,
        found: tuple[Route, dict[str, str]] | None,
        authorization: bytes | None,
        public_only: bool,
    ) -> tuple[Route, dict[str, str]]:
        """`found` (`path`'s route and parameters, `Router.match`), once the token allows it;
        404 for a path no route has (on the metrics port: for every route it does not
        answer)."""
        if found is None and "" in path.split("/")[1:]:
            raise _no_route(method, path, "an empty path segment (// or a / at the end) names "
                            "nothing: remove it")  # fmt: skip
        if public_only:
            if found is None or not found[0].metrics_port:
                raise _no_route(method, path, "the metrics port serves /metrics and /v2/health/*")
            return found
        if found is not None and found[0].admin:
            self._authorize_admin(authorization)
        elif found is None or not found[0].public:
            self._authorize(authorization)
        if found is None:
            raise _no_route(method, path)
        return found

    def _error(self, served: ServedModel | _Unserved | None, status: int, reason: str) -> None:
        """`ann_errors_total`: a refusal or failure, by the model it named ("" when none)."""
        name, version = (served.name, served.label_version) if served else ("", "")
        self.metrics.errors.labels(name, version, str(status), reason).inc()

    def _count(
        self, served: ServedModel | _Unserved | None, status: int, handler: str = ""
    ) -> None:
        """`ann_requests_total`, children cached: a labels() lookup costs more than the inc.
        `handler`: the App method that answered (`infer`, `model_ready`, ...; "" when no route
        was reached), so the availability SLI counts infers, not a per-model readiness probe."""
        key = (
            (served.name, served.label_version, handler, status)
            if served
            else ("", "", handler, status)
        )
        counter = self._request_counters.get(key)
        if counter is None:
            counter = self._request_counters[key] = self.metrics.requests.labels(
                key[0], key[1], handler, str(status)
            ).inc
        counter()

    def _served(
        self, route: Route, params: dict[str, str], authorization: bytes | None
    ) -> ServedModel:
        """The model a route names. A public route (the per-model readiness probe) asked
        without the token, on a server that has one, is refused without the list of what is
        served: that list is for clients with the token."""
        try:
            return self.dataplane.model(params["name"], params.get("version"))
        except ServeError as e:
            if e.status != 404 or e.reason not in ("model", "version"):
                raise
            if route.public and self._token is not None:
                if not self._bears(authorization, self._client_tokens):  # not for them
                    name = protocol.short(params["name"])
                    raise ServeError(
                        404, f"model: {name} (or its version) is not served", e.reason
                    ) from e
            # In the registry, not loaded: said, with the load (a bare 404 while the index
            # listed it `not loaded (in the registry)`).
            hint = self.repository.not_loaded(params["name"], params.get("version"))
            if not hint:
                raise
            raise ServeError(404, f"{e.message}; {hint}", e.reason, e.headers) from e

    @staticmethod
    def _bears(authorization: bytes | None, accepted: tuple[bytes, ...]) -> bool:
        """Whether `authorization` is `Bearer <one of accepted>` (compared in constant time)."""
        if authorization is None:
            return False
        scheme, _, token = authorization.partition(b" ")
        return scheme.lower() == b"bearer" and any(
            hmac.compare_digest(token.strip(), t) for t in accepted
        )

    def _authorize(self, authorization: bytes | None, admin: bool = False) -> None:
        """401 unless `authorization` bears the admin token (`admin`) or either token: the admin
        token opens every route the client's does (an operator lists the repository's index
        with the token that loads from it)."""
        expected = self._admin_token if admin else self._token
        if expected is None:
            return
        if self._bears(authorization, (expected,) if admin else self._client_tokens):
            return
        # Which of the three it was: "none or a wrong one" left a client guessing.
        token = "admin token" if admin else "token"
        header = f"header 'Authorization: Bearer <token>' with the server's {token}"
        scheme = (authorization or b"").partition(b" ")[0]
        if authorization is None or not authorization.strip():
            what = f"expected {header}, got no Authorization header"
        elif scheme.lower() != b"bearer":
            what = f"expected {header}, got the {protocol.short(scheme.decode('latin-1'))} scheme"
        else:
            what = f"expected the server's {token}, got another Bearer token"
        raise ServeError(401, f"authorization: {what}", "auth", [(b"www-authenticate", b"Bearer")])

    def _authorize_admin(self, authorization: bytes | None) -> None:
        if self._admin_token is None:
            raise ServeError(
                403,
                "repository: load and unload need the server started with an admin token "
                "(--admin_token_file or $ANN_SERVE_ADMIN_TOKEN); it has none",
                "admin",
            )
        if (
            self._token is not None
            and not self._bears(authorization, (self._admin_token,))
            and self._bears(authorization, self._client_tokens)
        ):  # known, but not allowed here: 403, not 401 (RFC 9110 section 15.5.4)
            raise ServeError(
                403,
                "authorization: repository load and unload need the server's admin token; the "
                "client token is not enough",
                "admin",
            )
        self._authorize(authorization, admin=True)

    @staticmethod
    def _with_model(body: dict[str, Any], served: ServedModel | _Unserved | None) -> bytes:
        if served is not None:
            body = {**body, "model_name": served.name, "model_version": served.version}
        return orjson.dumps(body)

    # -- routes: each answers through `request.respond` and returns the status to count --------

    def live(self, request: Request, served: None) -> int:
        request.respond(200, b'{"live":true}', None)
        return 200

    def server_ready(self, request: Request, served: None) -> int:
        reply = self.dataplane.readiness()
        status = 200 if reply["ready"] else 503
        request.respond(status, orjson.dumps(reply), None)
        return status

    def server_metadata(self, request: Request, served: None) -> int:
        request.respond(200, orjson.dumps(self.dataplane.server_metadata()), None)
        return 200

    def metrics_text(self, request: Request, served: None) -> int:
        text = self.metrics.render()
        request.respond(200, text, [(b"content-type", b"text/plain; version=0.0.4")])
        return 200

    def openapi(self, request: Request, served: None) -> int:
        request.respond(200, orjson.dumps(openapi.fill(self.dataplane.all_models())), None)
        return 200

    def model_metadata(self, request: Request, served: ServedModel) -> int:
        # `versions`: every version of the name that may be asked for (v2: "the model versions
        # that may be explicitly requested"), as loads and unloads change them; registry
        # numbers by number (as text, "10" came before "2": `dataplane.listed`).
        versions = listed(self.dataplane.models.get(served.name, {}))
        body = served.metadata
        if versions != [served.version]:
            body = orjson.dumps({**orjson.loads(body), "versions": versions})
        request.respond(200, body, None)
        return 200

    def model_ready(self, request: Request, served: ServedModel) -> int:
        ready = self.dataplane.model_ready(served)
        status = 200 if ready else 503
        request.respond(
            status, self._with_model({"name": served.name, "ready": ready}, served), None
        )
        return status

    def model_config(self, request: Request, served: ServedModel) -> int:
        request.respond(200, orjson.dumps(model_config(served, self.settings)), None)
        return 200

    def statistics(self, request: Request, served: ServedModel | None) -> int:
        """All models (`/v2/models/stats`), every version of one, or one version; by name, then
        version as every listing of versions orders them (`version_key`: "2" before "10")."""
        if served is None:
            models = self.dataplane.all_models()
        elif "version" in request.params:
            models = [served]
        else:
            models = list(self.dataplane.models[served.name].values())
        models.sort(key=lambda m: (m.name, version_key(m)))
        samples = self.metrics.samples()
        stats = [model_statistics(m, samples) for m in models]
        request.respond(200, orjson.dumps({"model_stats": stats}), None)
        return 200

    def monitor(self, request: Request, served: ServedModel) -> int:
        """The last monitoring window's results (`ModelMonitor.report`)."""
        request.respond(200, self._with_model(_monitor_of(served).report(), served), None)
        return 200

    def feedback(self, request: Request, served: ServedModel) -> int:
        """Late labels: `{"id", "label"}` or a list of them, joined by request id."""
        monitor = _monitor_of(served)
        if request.too_large is not None:
            raise _body_too_large(self.settings.max_body_bytes, request.too_large)
        body = protocol.loads(request.body, "feedback", 'JSON ({"id", "label"} or a list)')
        others = [
            (other.version, other.monitor)
            for other in sorted(
                self.dataplane.models.get(served.name, {}).values(), key=version_key
            )
            if other is not served and other.monitor is not None
        ]
        request.respond(200, self._with_model(monitor.feedback(body, others), served), None)
        return 200

    def repository_index(self, request: Request, served: None) -> int:
        """Triton's index: body `{}` or empty, or `{"ready": true}` for ready models only."""
        body = _json_object(request.body, "body", ("ready",))
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise ServeError(400, f"ready: expected true or false, got {protocol.short(ready)}")
        request.respond(200, orjson.dumps(self.repository.index(ready)), None)
        return 200

    def repository_load(self, request: Request, served: None) -> None:
        """Loads from `parameters.source`, Triton's `parameters.config` version policy, or
        the registry's latest version; answered once the model is ready (or failed)."""
        name = request.params["model"]
        parameters = _json_object(request.body, "body", ("parameters",)).get("parameters")
        work = self.repository.load(name, parameters)

        def reply(result: tuple[list[ServedModel], list[ServedModel]]) -> dict[str, Any]:
            loaded, already = result  # a version served already was `"loaded": []` alone
            return {"name": name, "loaded": _versions(loaded), "already_served": _versions(already)}

        self._answer_later(request, work, reply, "repository_load")

    def _repository_model(self, name: str) -> _Unserved | None:
        """What a repository load or unload of `name` is counted under in the metrics: the
        model (version "") when `name` is served, else nothing: a name a client made up would
        grow the series without bound."""
        return _Unserved(name, "") if name in self.dataplane.models else None

    def repository_unload(self, request: Request, served: None) -> None:
        """Unloads every version of the model, or `parameters.version` alone; answered once
        its queued requests are done."""
        name = request.params["model"]
        parameters = _json_object(request.body, "body", ("parameters",)).get("parameters") or {}
        version = unload_version(parameters)
        work = self.repository.unload(name, version)
        self._answer_later(
            request,
            work,
            lambda ms: {"name": name, "unloaded": _versions(ms)},
            "repository_unload",
            version,
        )

    def _answer_later(
        self,
        request: Request,
        work: Any,
        reply: Callable[[Any], dict[str, Any]],
        handler: str,
        version: str | None = None,
    ) -> None:
        """Runs coroutine `work` as a task; answers 200 with `reply(result)` or its refusal,
        counted under the model when it was served before the work or is after it. A refusal
        of a served model names it (and `version`, the one asked for), as every reply that
        addresses a model does."""
        respond = request.respond
        served_before = self._repository_model(request.params["model"])
        # A refusal names the model asked for, served or not (the metrics only a served one).
        named = _addressed({**request.params, "version": version or ""})

        def done(task: asyncio.Task) -> None:
            error = None  # the refusal's reason for ann_errors_total
            model = self._repository_model(request.params["model"]) or served_before
            try:
                status, body, headers = 200, orjson.dumps(reply(task.result())), None
            except asyncio.CancelledError:  # the server is shutting down
                status, headers = 503, None
                message = "server: shutting down; the load was stopped"
                body = self._with_model({"error": message}, named)
            except ServeError as e:
                status, headers, error = e.status, e.headers, e.reason
                _as_sent(e, request)
                body = self._with_model({"error": e.message}, named)
            except Exception as e:  # a bug: say so
                log.exception("internal error on %s", request.path)
                status, headers, error = 500, None, "internal"
                message = f"internal server error ({e}); a server bug"
                body = self._with_model({"error": message}, named)
            if error is not None:
                self._error(model, status, error)
            respond(status, body, headers)
            self._count(model, status, handler)

        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(done)

    def infer(self, request: Request, m: ServedModel) -> None:
        """Decodes and queues one infer; the reply is sent when its batch has run (and counted
        then: returns None). Refusals that cost nothing come first, before the body is
        decoded: body too large, draining, not ready, queue full (no room for even one row)."""
        start = time.perf_counter()
        decoded = None
        try:
            if request.too_large is not None:
                raise _body_too_large(self.settings.max_body_bytes, request.too_large)
            batcher = self.dataplane.admit(m)
            decoded = protocol.decode_infer(
                request.body, m.inputs, m.outputs, self.settings.max_batch_size,
                request.header_length,
            )  # fmt: skip
            if request.traced is not None and decoded.id is not None:
                request.traced.attribute("ann.request.id", decoded.id)  # the feedback join key
            future = self.dataplane.submit(batcher, decoded, request.traced)
        except ServeError as e:
            elapsed = time.perf_counter() - start
            m.observe_failure(elapsed)
            if self.request_log is not None and self.request_log.sampled():
                inputs = decoded.inputs if decoded is not None else None
                request_id = decoded.id if decoded is not None else e.request_id
                self.request_log.write(
                    m.name, m.version, request_id, e.status, elapsed, inputs, error=e.message
                )
            raise
        future.add_done_callback(self._reply_infer(m, decoded, request, start))

    def _infer_failed(
        self,
        m: ServedModel,
        decoded: protocol.InferRequest | None,
        respond: Respond,
        start: float,
        error: ServeError,
    ) -> None:
        """Answers and counts an infer that failed after it was queued (its batch's callback,
        where `handle` no longer can); with `decoded`, the request log records it, as it does a
        refusal made before the queue."""
        self._error(m, error.status, error.reason)
        respond(error.status, self._with_model({"error": error.message}, m), None)
        elapsed = time.perf_counter() - start
        m.observe_failure(elapsed)
        self._count(m, error.status, "infer")
        if decoded is not None and self.request_log is not None and self.request_log.sampled():
            self.request_log.write(
                m.name, m.version, decoded.id, error.status, elapsed, decoded.inputs,
                error=error.message,
            )  # fmt: skip

    def _reply_infer(
        self, m: ServedModel, decoded: protocol.InferRequest, request: Request, start: float
    ) -> Callable[[asyncio.Future], None]:
        respond, traced, accept = request.respond, request.traced, request.accept

        def done(future: asyncio.Future) -> None:
            try:
                outputs, timing = future.result()
                selected = {k: outputs[k] for k in decoded.outputs}
                encoding = time.perf_counter()
                reply, json_length = protocol.encode_infer(
                    m.name, m.version, decoded.id, selected, decoded.binary
                )
                if traced is not None:
                    traced.child("encode", encoding)
                headers = None if json_length is None else _binary_headers(json_length)
                if accept is not None:
                    reply, headers = _compressed(reply, headers, accept)
                respond(200, reply, headers)
            except QueueTimeout as e:  # the client's own `parameters.timeout` ran out
                self._infer_failed(m, decoded, respond, start, timed_out(e))
                return
            except NonFiniteOutput as e:  # the model overflowed on this request's input
                refusal = non_finite(e)
                refusal.request_id = decoded.id  # the request log records it by its id
                self._infer_failed(m, decoded, respond, start, refusal)
                return
            except Exception as e:  # a fault in the model or the encoder: a 500 that says so
                log.exception("internal error on infer %s", m.name)
                message = f"internal server error ({type(e).__name__}: {e}); this is a server bug"
                self._infer_failed(m, None, respond, start, ServeError(500, message, "internal"))
                return
            duration = time.perf_counter() - start
            self.dataplane.observe(m, duration, timing, decoded.rows)
            self._count(m, 200, "infer")
            if self.request_log is not None and self.request_log.sampled():
                self.request_log.write(
                    m.name, m.version, decoded.id, 200, duration, decoded.inputs, selected
                )

        return done


def timed_out(error: QueueTimeout) -> ServeError:
    """503 for a request queued past its own `parameters.timeout` (`QueueTimeout`): both
    durations in the request's unit, microseconds, as integers (it said "past the request's 1"
    of a timeout of 1 microsecond: no unit, and 1,000 grouped as the client never wrote it)."""
    waited, timeout = round(error.waited * 1e6), round(error.timeout * 1e6)
    return ServeError(
        503,
        f"parameters.timeout: queued {_microseconds(waited)}, past the request's "
        f"{_microseconds(timeout)} (a busy queue, or a batch waiting to fill); retry, or allow "
        "more time",
        "timeout",
    )


def _microseconds(count: int) -> str:
    return f"{count} microsecond{'' if count == 1 else 's'}"


def non_finite(error: NonFiniteOutput) -> ServeError:
    """422 for a request the model gave a NaN or an infinity on (`NonFiniteOutput`): the
    request was well formed and every input finite and of its type, but no number answers it
    (JSON has none for NaN: it went out as `null`, which a client comparing a score with its
    threshold read as normal). 4xx: it is this input's doing, not the server's (a model that
    gives NaN on ordinary rows is refused at export: `ann.export`), so it burns no availability
    budget; 422, not 400, so dashboards tell it from malformed requests (reason
    `non_finite_output` in ann_errors_total)."""
    return ServeError(
        422,
        artifact.non_finite_words(error.output, error.row, error.value)  # the loader's words
        + "; no answer is given for it",
        "non_finite_output",
    )


def _as_sent(error: ServeError, request: Request | None) -> None:
    """A 400's numbers spelled as the request's JSON body sent them (`protocol.as_sent`: 1e30,
    not 1e+30), on every route that reads one. An infer's own refusals are spelled already
    (`decode_infer`: it knows where the JSON ends before binary data); a body not read (or not
    inflated) by the route has nothing to quote."""
    if (
        request is not None
        and error.status == 400
        and request.encoding is None
        and request.header_length is None
        and request._body
        and not request.path.endswith("/infer")
    ):
        error.message = protocol.as_sent(error.message, request._body)


def _json_object(body: bytes, field: str, known: tuple[str, ...]) -> dict[str, Any]:
    """A request body that is a JSON object of `known` keys, or empty (as `{}`); 400 otherwise
    (a misspelled `parameters` of a load was ignored, and it loaded the latest version)."""
    if not body.strip():
        return {}
    value = protocol.loads(body, field, "a JSON object", prefix="")
    if not isinstance(value, dict):
        raise ServeError(
            400, f"{field}: expected a JSON object, got {protocol.short(value)}", "json"
        )
    protocol.known_keys(field, value, known)
    return value


def _monitor_of(served: ServedModel) -> Any:
    """The model's `ModelMonitor`; 409 when the server runs with `--monitor=off`."""
    if served.monitor is None:
        raise ServeError(
            409,
            "monitoring: off on this server (--monitor=off); restart it with --monitor=on",
            "monitor_off",
        )
    return served.monitor


def _versions(models: list[ServedModel]) -> list[str]:
    """The versions a load or unload touched, as every listing orders them (`dataplane.listed`:
    registry numbers by number)."""
    return [m.version for m in sorted(models, key=version_key)]


def _no_route(method: str, path: str, hint: str = "see /openapi.json") -> ServeError:
    return ServeError(404, f"no route {method} {protocol.clip(path)}; {hint}", "route")


def _body_too_large(limit: int, too_large: int) -> ServeError:
    got = f"got {too_large} bytes (Content-Length)" if too_large >= 0 else "got more"
    return ServeError(
        413,
        f"body: expected at most {limit} bytes (--max_body_bytes), {got}; {BODY_TOO_LARGE_FIX}",
        "body_too_large",
        [(b"connection", b"close")],
    )


def _compressed(reply: bytes, headers: list | None, accept: bytes) -> tuple[bytes, list | None]:
    """An infer's 200 reply compressed as `accept` (Accept-Encoding) allows, with its
    Content-Encoding; as it was when it allows neither gzip nor deflate. Binary data's
    Inference-Header-Content-Length still counts the uncompressed reply (Triton's client reads
    it so)."""
    encoding = compression.accepted(accept)
    if encoding is None:
        return reply, headers
    return compression.compress(reply, encoding), [
        *(headers or ()),
        (b"content-encoding", encoding),
    ]


def _binary_headers(json_length: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", b"%d" % json_length),
    ]


def run(app: App) -> None:
    """Serves `app` on `app.settings.host:port` until SIGTERM/SIGINT: stop accepting, finish
    queued requests (at most `--shutdown_timeout`), exit. A model still compiling (or being
    read) in a worker thread is not waited for, as no thread can be interrupted: closing the
    loop would wait for its executor, and the interpreter's exit for its threads (a SIGTERM
    during a 57 s compile exited after 57 s, not --shutdown_timeout=5: in Kubernetes, a
    SIGKILL). The process then ends at once, exit status 0 as any stop (`leave_now`). A model
    given at start that fails to compile stops it as a signal would, with one line (`error:
    compiling model NAME version V failed: ...`) and exit status 1: it could never turn ready
    (it ran on, not ready, until signalled, and exited 0)."""
    from ann import compilation_cache
    from ann.serve.http import serve

    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    compilation_cache.guard_writes()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(app))
        dp = app.dataplane
        status = 0
        if dp.start_failed.is_set():
            status = 1
            print(
                f"error: compiling {dp.compile_error}; the server cannot turn ready: fix or drop "
                "that --model",
                file=sys.stderr,
                flush=True,
            )
        if dp.left_running or dp.busy or dp.background:
            leave_now(list(dp.busy), status)
    if status:
        sys.exit(status)


def leave_now(busy: list[str], status: int = 0) -> None:
    """Ends the process without waiting for the worker threads' work, named by `busy` (none
    for background work only: the drift process's start, which nothing served waits for):
    after a cache write in progress (`compilation_cache.stop_writes`: no entry is left half
    written; a compile's executables are otherwise in memory only), with multiprocessing's
    semaphores released (`release_semaphores`), the spans exported (`flush_at_exit`)
    and the logs and streams flushed, exit status `status` (0: a stop)."""
    from ann import compilation_cache

    if busy:
        print(
            f"stopped: not waiting for {', '.join(busy)} (a thread cannot be interrupted; nothing "
            "of it is kept)",
            file=sys.stderr,
            flush=True,
        )
    compilation_cache.stop_writes(timeout=2.0)
    release_semaphores()
    flush_at_exit()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def release_semaphores() -> None:
    """multiprocessing's first step at the interpreter's exit, which `os._exit` skips: its
    finalizers of priority 0 and up, among them each named semaphore's (the drift process's
    queues hold 5: unlinked, and unregistered from multiprocessing's resource tracker, which
    otherwise warned at the server's exit "There appear to be 5 leaked semaphore objects to
    clean up at shutdown" and unlinked them itself). Not its later steps: they join the drift
    process (which exits within a second of the server: `monitoring._exit_with_server`) and
    the queues' feeder threads, which may wait on a full pipe."""
    import multiprocessing.util

    run_finalizers = getattr(multiprocessing.util, "_run_finalizers", None)
    if run_finalizers is not None:  # CPython's, since 2.6
        run_finalizers(0)


def unload_version(parameters: Any) -> str | None:
    """The version an unload's `parameters` name, as the server names it (`{"version": "2"}` a
    registry version, `{"version": "3f2a9c0b1d4e"}` an export directory's), None for every
    version; whether it is served is the unload's to say (`DataPlane.model`: 404 listing the
    versions served). ServeError 400 for anything but a version's text (an ignored key had
    unloaded every version; a number is not the text the server names versions by). Triton's
    `unload_dependents` is accepted: no model here depends on another."""
    if not isinstance(parameters, dict):
        raise ServeError(400, f"parameters: expected an object, got {protocol.short(parameters)}")
    unknown = sorted(set(parameters) - {"version", "unload_dependents"})
    if unknown:
        raise ServeError(
            400,
            f"parameters: expected version (unload one version) or unload_dependents, got "
            f"{protocol.short(unknown[0])}",
        )
    version = parameters.get("version")
    # Any text: an export's version is 12 hex digits ("3f2a9c0b1d4e" was refused as no version,
    # where only digits passed), and what is served is checked by the lookup.
    if version is not None and not (isinstance(version, str) and version):
        number = isinstance(version, int) and not isinstance(version, bool)
        fix = f"; write {protocol.short(str(version))}" if number else ""
        raise ServeError(
            400,
            'parameters.version: expected a version as the server names it ("2" for a registry '
            f"version, 12 hex digits for an export), got {protocol.short(version)}{fix}",
        )
    return version
