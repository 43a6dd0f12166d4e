"""HTTP/1.1 for the server, written directly on httptools: one asyncio Protocol per connection.

Why not uvicorn: its ASGI cycle (a task, a scope dict, message dicts and two awaits per request)
cost more of the server's single core than the model under load. Here a request is parsed by
httptools' callbacks, handed to `App.handle` with a `respond` callback, and answered by one
`transport.write`; an infer request needs no task of its own (the batcher's future calls back).

Keep-alive and pipelining (replies leave in request order), `Expect: 100-continue`, bodies over
the limit refused from `Content-Length` (or while streaming) then the connection closed,
malformed HTTP answered 400 and closed. SIGTERM/SIGINT: stop accepting, answer 503 to new infers,
finish every queued one, then close the connections and return.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools
import orjson

log = logging.getLogger("ann.serve")

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_STATUS_LINES: dict[int, bytes] = {}
_JSON = b"content-type: application/json\r\n"


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        reason = _REASONS.get(status, b"Unknown")
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, reason)
    return line


def encode_response(status: int, body: bytes, headers: list | None, close: bool) -> bytes:
    """Status line, headers (content-type JSON unless given), content-length, body."""
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
    parts.append(body)
    return b"".join(parts)


class _Slot:
    """One request's place in its connection's reply order."""

    __slots__ = ("data", "close")

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.close = False


class Connection(asyncio.Protocol):
    """One client connection; `handler(method, path, authorization, body, too_large, respond)`."""

    def __init__(self, handler: Callable[..., None], max_body: int, connections: set):
        self._handler = handler
        self._max_body = max_body
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._auth: bytes | None = None
        self._header_length: bytes | None = None  # Inference-Header-Content-Length (binary)
        self._expect = False
        self._length: int | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._too_large: int | None = None  # body size over the limit: refuse, then close
        self._slots: collections.deque[_Slot] = collections.deque()
        self._closing = False
        self.gone = False

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self._connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # refused: what is still coming is read and dropped until the client closes
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, b'{"error":"request: expected HTTP/1.1 without upgrade"}')
        except httptools.HttpParserError as e:
            if not self._closing:
                message = f"request: expected valid HTTP/1.1, got a parse error ({e})"
                self._refuse(400, orjson.dumps({"error": message}))

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._auth = None
        self._header_length = None
        self._expect = False
        self._length: int | None = None
        self._chunks = []
        self._size = 0
        self._too_large = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 13 and name.lower() == b"authorization":
            self._auth = value
        elif len(name) == 14 and name.lower() == b"content-length" and value.isdigit():
            self._length = int(value)
        elif len(name) == 6 and name.lower() == b"expect":
            self._expect = value.lower() == b"100-continue"
        elif len(name) == 31 and name.lower() == b"inference-header-content-length":
            self._header_length = value

    def on_headers_complete(self) -> None:
        length = self._length
        if length is not None and length > self._max_body:
            self._too_large = length
            self._dispatch()  # answered 413 (after routing), then the connection closes
        elif self._expect and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._too_large is not None:
            return
        self._size += len(body)
        if self._size > self._max_body:
            self._too_large = -1  # streamed (chunked) past the limit
            self._chunks = []
            self._dispatch()
            return
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._too_large is None:
            self._dispatch()

    # -- requests and replies ------------------------------------------------------------------

    def _dispatch(self) -> None:
        slot = _Slot()
        self._slots.append(slot)
        close = self._too_large is not None or not self._parser.should_keep_alive()
        if close:
            self._closing = True

        def respond(status: int, body: bytes, headers: list | None = None) -> None:
            slot.close = close
            slot.data = encode_response(status, body, headers, close)
            self._flush()

        url = self._url
        path = url.split(b"?", 1)[0].decode("latin-1")
        if "%" in path:
            path = unquote(path)
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._handler(self._parser.get_method().decode(), path, self._auth, body,
                      self._too_large, respond, self._header_length)  # fmt: skip

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

    def _linger(self, transport: asyncio.Transport) -> None:
        """Closes after the last reply without losing it: closing with unread data sends a
        reset that can destroy the reply before the client reads it (a 413 during a large
        upload). So: send FIN, drop what still comes, close when the client does (or in 5 s)."""
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(5.0, transport.close)
        else:
            transport.close()

    def _refuse(self, status: int, body: bytes) -> None:
        """Malformed HTTP: answer after the replies already owed, then close."""
        self._closing = True
        slot = _Slot()
        slot.data, slot.close = encode_response(status, body, None, True), True
        self._slots.append(slot)
        self._flush()

    @property
    def idle(self) -> bool:
        return not self._slots

    def close(self) -> None:
        if self._transport is not None and not self.gone:
            self._transport.close()


async def serve(
    app: Any, host: str, port: int, shutdown_timeout: float, backlog: int = 2048
) -> None:
    """Runs until SIGTERM/SIGINT, then drains: see the module docstring."""
    loop = asyncio.get_running_loop()
    connections: set[Connection] = set()
    max_body = app.settings.max_body_bytes
    server = await loop.create_server(
        lambda: Connection(app.handle, max_body, connections), host, port, backlog=backlog
    )
    app.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    app.start_draining()
    server.close()  # no new connections
    deadline = time.monotonic() + shutdown_timeout
    try:
        await asyncio.wait_for(app.shutdown(), shutdown_timeout)
    except asyncio.TimeoutError:
        log.warning("shutdown: queued requests not finished after %.0fs", shutdown_timeout)
    while any(not c.idle for c in connections) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # the last replies leave
    for c in list(connections):
        c.close()
    await asyncio.sleep(0)
