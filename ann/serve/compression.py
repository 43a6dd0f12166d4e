"""Compressed bodies, as Triton's HTTP server takes and gives them: a request body sent with
`Content-Encoding: gzip` or `deflate` (what `tritonclient.http`'s
`request_compression_algorithm` sends, curl's `--data-binary @x.gz -H 'Content-Encoding: gzip'`),
and an infer's 200 reply compressed when the request's `Accept-Encoding` asks for gzip or
deflate (the client's `response_compression_algorithm`). Standard library only (zlib).

A request body is inflated at most to `--max_body_bytes`, the limit its compressed size was held
to: a small body that would inflate past it (a zip bomb) is refused 413 having inflated no more
than the limit plus one byte. Binary tensor data's `Inference-Header-Content-Length` counts the
uncompressed body, as Triton's client sends it: the body is inflated before it is split.
Bytes after the end of the compressed data are refused, naming them (Python's `gzip` module
refuses them too, "Not a gzipped file", and reads zero padding after the last gzip member, as
ann does; Triton's server stops at the end of the first stream and drops the rest unread, and
`zlib.decompress` drops it too: a body cut from a longer file, or two bodies glued together,
would be answered from its first part in silence).
A reply is compressed only when asked, and only an infer's 200 reply, as Triton's server
does: tritonclient's asyncio client sends aiohttp's default `Accept-Encoding: gzip, deflate` on
every call but inflates only an infer reply (its model metadata call failed on a gzip reply),
and it reads an error body without inflating it. A request without `Accept-Encoding` pays one
`is None` test.
"""

from __future__ import annotations

import zlib

from ann.serve.errors import BODY_TOO_LARGE_FIX, ServeError

# Content-Encoding -> zlib's wbits: gzip's header and trailer; deflate as RFC 9110 defines it,
# the zlib format (what Triton's client sends: `zlib.compress`).
_WBITS = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}
ACCEPTED = "gzip, deflate or identity"
# The first two bytes of every gzip member (RFC 1952 section 2.3.1).
_GZIP_MAGIC = b"\x1f\x8b"


def decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    """`body` as sent with `Content-Encoding: encoding`, inflated; ServeError 415 for an
    encoding not accepted, 413 past `limit` bytes inflated (without inflating more than
    `limit + 1`), 400 for data that is not what its encoding says."""
    name = encoding.strip().lower()
    if name == b"identity" or (not body and name in _WBITS):
        return body
    wbits = _WBITS.get(name)
    if wbits is None:
        got = encoding.decode("latin-1")[:60]
        raise ServeError(
            415,
            f"Content-Encoding: expected {ACCEPTED} (one of them), got {got!r}; send the body "
            "uncompressed or compressed with one of those",
            "content_encoding",
        )
    said = name.decode()
    parts, size, data = [], 0, body
    while data:  # gzip allows several members one after another (RFC 1952 section 2.2)
        inflater = zlib.decompressobj(wbits)
        try:
            part = inflater.decompress(data, limit - size + 1)
        except zlib.error as e:
            if name == b"deflate" and not parts:  # some clients send raw deflate (no zlib header)
                wbits, name = -zlib.MAX_WBITS, b"raw deflate"
                continue
            raise ServeError(
                400, f"body: expected {said} data (Content-Encoding: {said}), got data it cannot "
                f"inflate ({e})", "content_encoding"
            ) from None  # fmt: skip
        size += len(part)
        if size > limit:
            raise ServeError(
                413,
                f"body: expected at most {limit} bytes (--max_body_bytes) once inflated "
                f"(Content-Encoding: {said}), got more; {BODY_TOO_LARGE_FIX}",
                "body_too_large",
            )
        if not inflater.eof:
            raise ServeError(
                400,
                f"body: expected complete {said} data (Content-Encoding: {said}), got it cut "
                f"short after {size} bytes inflated",
                "content_encoding",
            )
        parts.append(part)
        data = inflater.unused_data
        if data and (wbits != _WBITS[b"gzip"] or data[:2] != _GZIP_MAGIC):
            if wbits == _WBITS[b"gzip"] and not data.strip(b"\0"):
                break  # zero padding after the last member, as Python's gzip module reads it
            member = ", not another gzip member" if wbits == _WBITS[b"gzip"] else ""
            raise ServeError(
                400,
                f"body: expected only {said} data (Content-Encoding: {said}), got {len(data)} "
                f"bytes after the end of the {said} stream ({data[:8].hex(' ')}"
                f"{'...' if len(data) > 8 else ''}{member}); send the compressed body alone",
                "content_encoding",
            )
    return parts[0] if len(parts) == 1 else b"".join(parts)


def accepted(accept_encoding: bytes) -> bytes | None:
    """The encoding a reply is compressed with for this `Accept-Encoding` (RFC 9110 section
    12.5.3): gzip if allowed (also as `*`), else deflate; None: identity (none allowed, or
    every one given `q=0`)."""
    allowed = set()
    for item in accept_encoding.lower().split(b","):
        coding, _, params = item.partition(b";")
        q = params.strip()
        if q.startswith(b"q=") and q[2:].strip().rstrip(b"0").rstrip(b".") in (b"0", b""):
            continue  # q=0, q=0.0, q=0.000: not acceptable
        allowed.add(coding.strip())
    if b"gzip" in allowed or b"x-gzip" in allowed or b"*" in allowed:
        return b"gzip"
    if b"deflate" in allowed:
        return b"deflate"
    return None


def compress(body: bytes, encoding: bytes) -> bytes:
    """`body` compressed as `encoding` (`accepted`'s answer), at zlib's fastest level: the
    server's core is the scarce resource, and level 1 keeps most of the saving on tensor JSON."""
    return zlib.compress(body, 1, wbits=16 + zlib.MAX_WBITS if encoding == b"gzip" else 15)
