"""HTTP/1.1 for the server, written directly on httptools: one asyncio Protocol per connection.

Why not uvicorn: its ASGI cycle (a task, a scope dict, message dicts and two awaits per request)
cost more of the server's single core than the model under load. Here a request is parsed by
httptools' callbacks, handed to `App.handle` with a `respond` callback, and answered by one
`transport.write`; an infer request needs no task of its own (the batcher's future calls back).

Keep-alive and pipelining (replies leave in request order), `Expect: 100-continue`, bodies over
the limit refused from `Content-Length` (or while streaming) then the connection closed,
malformed HTTP answered 400 and closed; a client that stops reading its replies is not read
from until it drains them (asyncio's write-buffer flow control). SIGTERM/SIGINT: stop
accepting, answer 503 to new infers, finish every queued one, then close the connections and
return.

Slow, huge and hostile clients (the limits are `Settings` fields and server flags; defaults and
their sources in `ann/serve/settings.py`): a request line over `max_request_line_bytes` gets
414, more than `max_headers` header fields or `max_header_bytes` of them 431, each then closed.
A request head not complete `header_timeout_s` after its first byte (or after the connection
opened), or a body with no new bytes for `body_timeout_s`, gets 408 and the connection closes;
a keep-alive connection idle for `keepalive_timeout_s` is closed silently. Time spent by the
server itself (a request queued or computing) never counts. At `max_connections` open, a new
connection takes the place of an idle keep-alive one, or gets 503 and is closed. Deadlines are
checked by one sweep per listener (a few times per shortest timeout), not a timer per request.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import signal
import sys
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools
import orjson

from ann.serve.errors import BODY_TOO_LARGE_FIX
from ann.serve.settings import listen_error
from ann.serve.tracing import RequestHead

log = logging.getLogger("ann.serve")

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_STATUS_LINES: dict[int, bytes] = {}
_JSON = b"content-type: application/json\r\n"
# The most digits a Content-Length may have before it is converted: 2**63 has 19.
_MAX_LENGTH_DIGITS = 18


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        reason = _REASONS.get(status, b"Unknown")
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, reason)
    return line


def encode_response(
    status: int, body: bytes, headers: list | None, close: bool, head: bool = False
) -> bytes:
    """Status line, headers (content-type JSON unless given), content-length, body (not for a
    HEAD request: its length only, RFC 9110 section 9.3.2)."""
    parts = [_status_line(status)]
    typed = False
    if headers:
        for key, value in headers:
            if key == b"connection":
                continue  # said below, once
            typed = typed or key == b"content-type"
            parts.append(b"%s: %s\r\n" % (key, value))
    if not typed:
        parts.append(_JSON)
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"content-length: %d\r\n\r\n" % len(body))
    if not head:
        parts.append(body)
    return b"".join(parts)


def _error(message: str) -> bytes:
    return orjson.dumps({"error": message})


class _Slot:
    """One request's place in its connection's reply order."""

    __slots__ = ("data", "close")

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.close = False


class _Stop(Exception):
    """Raised from a parser callback after a refusal, to stop parsing."""


# What a connection's deadline means when it passes.
_IDLE, _HEAD, _BODY = 1, 2, 3


class Listener:
    """What the connections of one listening socket share: the handler, the limits (a
    `Settings`), the open connections, the deadline sweep, and `refused(status, reason)`
    (a metrics hook for refusals made here, before a request reaches the handler)."""

    def __init__(
        self,
        handler: Callable[..., None],
        settings: Any,
        refused: Callable[[int, str], None] = lambda status, reason: None,
        traced: bool = False,
    ):
        self.handler, self.settings, self.refused = handler, settings, refused
        # Tracing on: each request's head fields and peer are kept for its span (RequestHead);
        # off, none are (the fast path pays one `is None` test a header field).
        self.traced = traced
        self.connections: set[Connection] = set()
        # Set at SIGTERM: every reply from then on says `connection: close` and ends its
        # connection, so a keep-alive client reconnects (to another replica) instead of sending
        # its next request on a connection the drain is about to close.
        self.draining = False
        shortest = min(settings.header_timeout_s, settings.body_timeout_s,
                       settings.keepalive_timeout_s)  # fmt: skip
        self.tick = min(1.0, max(0.02, shortest / 4))
        self._timer: asyncio.TimerHandle | None = None
        # A clock read per sweep, not per request (as nginx caches its time). `now` may be up
        # to a tick old, so each timeout gets a tick added: a deadline is never early, and
        # passes at most two ticks late.
        self.now = time.monotonic()

    def __call__(self) -> Connection:
        return Connection(self)

    def start(self) -> None:
        self.now = time.monotonic()
        self._timer = asyncio.get_running_loop().call_later(self.tick, self._sweep)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _sweep(self) -> None:
        now = self.now = time.monotonic()
        for c in [c for c in self.connections if 0 < c.deadline < now]:
            c.timed_out()
        self._timer = asyncio.get_running_loop().call_later(self.tick, self._sweep)

    def admit(self, new: Connection) -> bool:
        """Room for `new`: under the cap, or by closing one idle keep-alive connection."""
        if len(self.connections) < self.settings.max_connections:
            return True
        for c in self.connections:
            if c.waiting is _IDLE:
                c.close()
                self.connections.discard(c)
                return True
        return False


class Connection(asyncio.Protocol):
    """One client connection; calls `listener.handler(method, path, authorization, body,
    too_large, respond, header_length, trace, content_encoding, accept_encoding)` once per
    request (`trace`: the W3C trace context headers `(traceparent, tracestate or None)` when a
    traceparent was sent, else None; `content_encoding`, `accept_encoding`: those headers as
    sent, None for none: the handler inflates the body and may compress the reply,
    ann/serve/compression.py)."""

    def __init__(self, listener: Listener):
        self._listener = listener
        settings = listener.settings
        self._handler = listener.handler
        self._max_body = settings.max_body_bytes
        self._max_line = settings.max_request_line_bytes
        self._max_header_bytes = settings.max_header_bytes
        self._max_headers = settings.max_headers
        self._max_head = self._max_line + self._max_header_bytes  # raw bytes of a whole head
        self._connections = listener.connections
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._auth: bytes | None = None
        self._header_length: bytes | None = None  # Inference-Header-Content-Length (binary)
        self._encoding: bytes | None = None  # Content-Encoding of the body (compression.py)
        self._accept: bytes | None = None  # Accept-Encoding: a reply compressed if it allows
        self._kept: list[tuple[bytes, bytes]] | None = None  # header fields, tracing on
        self._peer: Any = None  # the socket's peer address, tracing on
        self._expect = False
        self._length: int | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._too_large: int | None = None  # body size over the limit: refuse, then close
        self._slots: collections.deque[_Slot] = collections.deque()
        self._closing = False
        self._in_message = False
        self._headers = 0  # header fields of the current request
        self._header_bytes = 0
        self._head_bytes = 0  # raw bytes received while a head is incomplete (a safety net)
        tick = listener.tick
        self._header_timeout = settings.header_timeout_s + tick
        self._body_timeout = settings.body_timeout_s + tick
        self._keepalive_timeout = settings.keepalive_timeout_s + tick
        self.deadline = 0.0  # listener.now after which `waiting` times out; 0: none
        self.waiting: int | None = _HEAD
        self.gone = False

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        listener = self._listener
        if not listener.admit(self):
            limit = listener.settings.max_connections
            listener.refused(503, "connections")
            message = (
                f"connections: expected at most {limit} open at once (--max_connections), got "
                "one more; retry later"
            )
            retry = [(b"retry-after", b"%d" % listener.settings.retry_after_seconds)]
            self._transport.write(encode_response(503, _error(message), retry, True))
            self._transport.close()
            self.gone = True
            return
        self._connections.add(self)
        self.deadline = listener.now + self._header_timeout
        if listener.traced:
            self._peer = transport.get_extra_info("peername")

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.deadline = 0.0
        self._connections.discard(self)

    def pause_writing(self) -> None:
        """The client does not read its replies (the write buffer passed its high-water mark):
        read no more requests from it until it does, so what it can make the server buffer
        stays bounded (a slow reader, as a slow sender is bounded by the timeouts)."""
        if self._transport is not None and not self.gone:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self.gone:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._closing or self.gone:
            return  # refused: what is still coming is read and dropped until the client closes
        if self.waiting is not _BODY and self.waiting is not None:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, b'{"error":"request: expected HTTP/1.1 without upgrade"}', "http")
        except httptools.HttpParserError as e:
            if self._closing:
                return
            if str(e) == "Content-Length overflow":  # llhttp's: past 64 bits, before on_header
                # An honest oversized body's 413 (it was 400 "got a parse error").
                message = (
                    f"body: expected at most {self._max_body} bytes (--max_body_bytes), got more "
                    f"(Content-Length past 64 bits); {BODY_TOO_LARGE_FIX}"
                )
                self._refuse(413, _error(message), "body_too_large")
            else:
                message = f"request: expected valid HTTP/1.1, got a parse error ({e})"
                self._refuse(400, _error(message), "http")
            return
        if self.waiting is _HEAD and self._head_bytes > self._max_head:
            # httptools buffers a header line until it ends: bound what it may buffer.
            self._refuse_head(431, "request head", self._max_head, "--max_header_bytes")

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._auth = None
        self._header_length = None
        self._encoding = self._accept = None
        self._kept = [] if self._listener.traced else None
        self._expect = False
        self._length: int | None = None
        self._chunks = []
        self._size = 0
        self._too_large = None
        self._headers = self._header_bytes = 0
        self._in_message = True
        if self.waiting is not _HEAD:  # else the head began with this connection
            self.waiting = _HEAD
            self.deadline = self._listener.now + self._header_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._max_line:
            self._refuse_head(414, "request line", self._max_line, "--max_request_line_bytes")
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        # Counted here, judged once the head is complete (until then what the parser may
        # buffer is bounded by `data_received`'s count of raw bytes).
        self._headers += 1
        self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._kept is not None:
            self._kept.append((name, value))
        if len(name) == 13 and name.lower() == b"authorization":
            self._auth = value
        elif len(name) == 14 and name.lower() == b"content-length":
            # llhttp has checked it is digits that fit 64 bits; bound it before converting.
            if len(value) > _MAX_LENGTH_DIGITS:
                self._length = self._max_body + 1
            elif value.isdigit():
                self._length = int(value)
        elif len(name) == 6 and name.lower() == b"expect":
            self._expect = value.lower() == b"100-continue"
        elif len(name) == 31 and name.lower() == b"inference-header-content-length":
            self._header_length = value
        elif len(name) == 16 and name.lower() == b"content-encoding":
            # Repeated, the header is one list (RFC 9110 5.3): `gzip` twice is gzip applied
            # twice, which was inflated once.
            self._encoding = value if self._encoding is None else self._encoding + b", " + value
        elif len(name) == 15 and name.lower() == b"accept-encoding":
            self._accept = value

    def on_headers_complete(self) -> None:
        if self._headers > self._max_headers:
            self._refuse_head(431, "headers", self._max_headers, "--max_headers", "fields")
            raise _Stop
        if self._header_bytes > self._max_header_bytes:
            self._refuse_head(431, "headers", self._max_header_bytes, "--max_header_bytes")
            raise _Stop
        self._head_bytes = 0
        self.waiting = _BODY
        self.deadline = self._listener.now + self._body_timeout
        length = self._length
        if length is not None and length > self._max_body:
            self._too_large = length
            self._dispatch()  # answered 413 (after routing), then the connection closes
        elif self._expect and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._too_large is not None:
            return
        self.deadline = self._listener.now + self._body_timeout
        self._size += len(body)
        if self._size > self._max_body:
            self._too_large = -1  # streamed (chunked) past the limit
            self._chunks = []
            self._dispatch()
            return
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self.waiting = None  # the server's turn: its own time never times out
        self.deadline = 0.0
        if self._too_large is None:
            self._dispatch()

    # -- requests and replies ------------------------------------------------------------------

    def _dispatch(self) -> None:
        slot = _Slot()
        self._slots.append(slot)
        close = self._too_large is not None or not self._parser.should_keep_alive()
        if close:
            self._closing = True
        method = self._parser.get_method().decode()
        head = method == "HEAD"

        def respond(status: int, body: bytes, headers: list | None = None) -> None:
            # Draining: the connection's last owed reply closes it (an earlier pipelined one
            # that closed would drop the replies after it).
            slots = self._slots
            last = close or (self._listener.draining and bool(slots) and slot is slots[-1])
            if last:
                self._closing = True
            slot.close = last
            slot.data = encode_response(status, body, headers, last, head)
            self._flush()

        url = self._url.split(b"?", 1)
        path = url[0].decode("latin-1")
        if "%" in path:
            path = unquote(path)
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        trace = None
        if self._kept is not None:
            trace = RequestHead(self._kept, url[1] if len(url) == 2 else None, self._peer)
        self._handler(method, path, self._auth, body, self._too_large, respond,
                      self._header_length, trace, self._encoding, self._accept)  # fmt: skip

    def _flush(self) -> None:
        slots, transport = self._slots, self._transport
        while slots and slots[0].data is not None:
            slot = slots.popleft()
            if transport is None or self.gone:
                continue
            transport.write(slot.data)  # type: ignore[arg-type]
            if slot.close:
                slots.clear()
                self._linger(transport)
                return
        if not slots and not self._in_message and not self._closing:
            self.waiting = _IDLE
            self.deadline = self._listener.now + self._keepalive_timeout

    def _linger(self, transport: asyncio.Transport) -> None:
        """Closes after the last reply without losing it: closing with unread data sends a
        reset that can destroy the reply before the client reads it (a 413 during a large
        upload). So: send FIN, drop what still comes, close when the client does (or in 5 s)."""
        self.waiting, self.deadline = None, 0.0
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(5.0, transport.close)
        else:
            transport.close()

    def _refuse(self, status: int, body: bytes, reason: str) -> None:
        """Malformed or over a limit: answer after the replies already owed, then close."""
        self._closing = True
        self.waiting, self.deadline = None, 0.0
        self._listener.refused(status, reason)
        slot = _Slot()
        slot.data, slot.close = encode_response(status, body, None, True), True
        self._slots.append(slot)
        self._flush()

    def _refuse_head(
        self, status: int, what: str, limit: int, flag: str, unit: str = "bytes"
    ) -> None:
        if not self._closing:
            message = f"{what}: expected at most {limit} {unit} ({flag}), got more"
            self._refuse(status, _error(message), "too_large")

    def timed_out(self) -> None:
        """The sweep found this connection's deadline passed."""
        waiting, settings = self.waiting, self._listener.settings
        self.waiting, self.deadline = None, 0.0
        if waiting is _IDLE or self._closing or (waiting is _HEAD and not self._in_message
                                                 and not self._head_bytes):  # fmt: skip
            self.close()  # nothing asked: nothing to answer
        elif waiting is _HEAD:
            message = (
                f"request head: expected it complete within {settings.header_timeout_s:g} s "
                "(--header_timeout_s), got it incomplete"
            )
            self._refuse(408, _error(message), "header_timeout")
        elif waiting is _BODY:
            of = f" of its {self._length}" if self._length is not None else ""
            message = (
                f"body: expected more bytes within {settings.body_timeout_s:g} s "
                f"(--body_timeout_s), got {self._size}{of} bytes and then none"
            )
            self._refuse(408, _error(message), "body_timeout")

    @property
    def idle(self) -> bool:
        return not self._slots

    def close(self) -> None:
        if self._transport is not None and not self.gone:
            self._transport.close()


# Pending connections the kernel queues before they are accepted (listen(2)'s backlog).
BACKLOG = 2048


async def serve(app: Any) -> None:
    """Runs until SIGTERM/SIGINT, then drains: see the module docstring. Listens on
    `settings.host:port` (every route) and, when `settings.metrics_port` is set, on
    `host:metrics_port` (`/metrics` and health only, without the token: for Prometheus)."""
    loop = asyncio.get_running_loop()
    settings = app.settings
    listeners = [Listener(app.handle, settings, app.refused, app.tracing is not None)]
    connections = listeners[0].connections
    app.metrics.connections.set_function(lambda: len(connections))
    if settings.metrics_port is not None:
        public = functools.partial(app.handle, public_only=True)
        listeners.append(Listener(public, settings, app.refused))
    servers = []
    for listener, flag, port in zip(
        listeners, ("--port", "--metrics_port"), (settings.port, settings.metrics_port)
    ):
        try:
            servers.append(await loop.create_server(listener, settings.host, port, backlog=BACKLOG))
        except OSError as e:  # in use, or not an address of this machine: say which flag
            for server in servers:
                server.close()
            raise OSError(listen_error(flag, port, settings.host, e)) from e
    for listener in listeners:
        listener.start()
    names = ", ".join(f"{n}/{v}" for n, versions in app.models.items() for v in versions)
    host = settings.url_host()
    where = f"http://{host}:{settings.port}"
    if settings.metrics_port is not None:
        where += f" (metrics: http://{host}:{settings.metrics_port}/metrics)"
    print(f"serving {names} on {where}", file=sys.stderr, flush=True)
    app.start()
    stop = asyncio.Event()
    received: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda sig=sig: (received.append(sig), stop.set()))
    # A model given at start that fails to compile stops the server too (`app.run` exits 1):
    # it could never turn ready.
    waits = [asyncio.ensure_future(e.wait()) for e in (stop, app.dataplane.start_failed)]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for waiting in waits:
        waiting.cancel()
    if received:
        print(
            f"stopping ({received[0].name}): no new connections; finishing the queued requests "
            f"(at most --shutdown_timeout={settings.shutdown_timeout:g}s)",
            file=sys.stderr,
            flush=True,
        )
    app.start_draining()
    for listener in listeners:
        listener.draining = True
    for server in servers:
        server.close()  # no new connections
    shutdown_timeout = settings.shutdown_timeout
    deadline = time.monotonic() + shutdown_timeout
    try:
        await asyncio.wait_for(app.shutdown(), shutdown_timeout)
    except asyncio.TimeoutError:
        log.warning("shutdown: queued requests not finished after %.0fs", shutdown_timeout)
    every = [c for listener in listeners for c in listener.connections]
    while any(not c.idle for c in every) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # the last replies leave
    for listener in listeners:
        listener.stop()
    for c in [c for listener in listeners for c in listener.connections]:
        c.close()
    await asyncio.sleep(0)
