"""The one error type of the server: a refusal carrying its HTTP status and reason.

Raised by the codec (`protocol`), the serving logic (`dataplane`) and the routes (`app`) alike;
`app.App.handle` turns it into `{"error": message}` with `status` and `headers`, and counts it in
`ann_errors_total{model, version, code, reason}`. As MLServer's `MLServerError` carries a status
code, so the layer that knows what went wrong says what it means for the client, once.
"""

from __future__ import annotations

RETRY_AFTER = b"retry-after"


# The client's way past a 413 for the body's size (the server's own is --max_body_bytes).
BODY_TOO_LARGE_FIX = (
    "split the request, or send its tensors as binary data (Inference-Header-Content-Length), "
    "smaller than JSON numbers"
)


class ServeError(Exception):
    """A request the server refuses.

    `status`: the HTTP status (400, 401, 404, 405, 413, 503, ...); `message`: one line naming
    the field, what was expected and what came; `reason`: a short label for the errors metric
    (a fixed word, never client text); `headers`: extra reply headers as (name, value) bytes
    pairs, e.g. `Retry-After` or `Allow`; `request_id`: the infer request's `id` when the body
    parsed far enough to have one (the request log records it with the refusal).
    """

    request_id: str | None = None

    def __init__(
        self,
        status: int,
        message: str,
        reason: str = "bad_request",
        headers: list[tuple[bytes, bytes]] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers


def unavailable(message: str, reason: str, retry_after_seconds: int) -> ServeError:
    """503 with `Retry-After`: the request may succeed later (queue full, loading, draining)."""
    return ServeError(503, message, reason, [(RETRY_AFTER, b"%d" % retry_after_seconds)])
