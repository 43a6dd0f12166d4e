"""Dynamic batching: requests queue up and run together, padded to a few compiled sizes.

One worker per model, work-conserving (as Triton's dynamic batcher and TF-Serving's batch
scheduler): one batch computes at a time, on a thread (XLA releases the GIL), while new requests
keep queuing; the moment it finishes, the next batch starts with whatever queued meanwhile, and
only then are the finished batch's results handed out, so its replies are encoded and written
while the next one computes. The model therefore never waits for the event loop while requests
wait, and under load the batch is whatever arrived while the previous one ran.

When the model is idle, the oldest request lets the batch fill first: with `wait="idle"` (the
server's default, `Settings.batch_wait`) for as long as each pass of the event loop brings more
requests, i.e. until no one else is waiting to be read; with `wait="full"` until
`max_batch_size` rows are queued (and after a batch, the next also waits to be full); either
way at most until that request has waited `max_queue_delay` seconds. A lone request therefore
runs at once instead of waiting `max_queue_delay` for company that is not coming. A batch takes
whole requests up to `max_batch_size` rows, padded to the smallest compiled bucket that holds
them. The worker's event is set only when it sleeps, not once per request. `batches` counts the
batches started. A request that would push the queue past `max_queue_rows` is refused at once
(the caller answers 503 + Retry-After).

Defensive, although the server refuses such requests before they get here: a request of more
than `max_batch_size` rows (or none) is refused at `submit_nowait` (`ValueError`), since no
batch could ever take it; settings that cannot work (`max_queue_rows < max_batch_size`, no
compiled size that holds `max_batch_size`) are refused when the batcher is made. A request whose
future was cancelled (its client went away) is dropped from the queue unrun; one that waited
past its own `timeout` (Triton's request timeout) is refused unrun (QueueTimeout) when the batch
it would have joined is formed. A model error
fails every request of its batch, and the worker goes on with the next.

Tracing (ann/serve/tracing.py): a request may carry an opaque `trace` (its span), and a batcher
made with a `trace` hook (`BatchTracer`) calls it when a batch is formed and when it has run,
and for a request that leaves the queue unrun (timed out, or cancelled).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from ann import artifact
from ann.artifact import buckets as buckets  # the compiled sizes (the loader's too)

log = logging.getLogger("ann.serve")

RunFn = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
# A batch's answered requests as `on_rows` gets them: (id or None, first row, row after last).
RowIds = list[tuple[str | None, int, int]]


class QueueFull(Exception):
    """The queue holds `max_queue_rows` rows already."""


class NonFiniteOutput(Exception):
    """The model gave a NaN or an infinity in a float output on one of a request's rows: no
    number to answer with (JSON has none for it, and `null` read as a number compared false).
    The request is refused; the others of its batch get their answers. `output`: the output's
    name, `row`: the row in the request, `value`: "nan", "inf" or "-inf"."""

    def __init__(self, output: str, row: int, value: str):
        super().__init__(f"output {output!r} row {row}: {value}")
        self.output, self.row, self.value = output, row, value


# Float outputs' dtype kinds (`artifact.FLOATING`: "f", and "V" for bfloat16). `dtype.name`
# cost 7 us a call, more than the check it guarded.
_FLOATING = artifact.FLOATING
_all = np.logical_and.reduce


def non_finite_rows(outputs: Mapping[str, np.ndarray], rows: int) -> np.ndarray | None:
    """Which of the first `rows` rows hold a non-finite value in a float output (a bool mask),
    or None when none does: one `isfinite(...).all()` per float output of the batch, the rows
    found only when that fails (a model that overflowed on an input far outside its data)."""
    bad = None
    for value in outputs.values():
        if value.dtype.kind not in _FLOATING:
            continue
        real = value[:rows]
        if _all(np.isfinite(real), axis=None):  # the ufunc: `.all()` cost 4x as much
            continue
        rows_bad = ~np.isfinite(real.reshape(rows, -1)).all(axis=1)
        bad = rows_bad if bad is None else bad | rows_bad
    return bad


def _non_finite(outputs: Mapping[str, np.ndarray], first: int, last: int) -> NonFiniteOutput:
    """The refusal of rows [first, last) of a batch: the first output, row and value that is
    not finite (in the outputs' order: `artifact.first_non_finite`, as the loader finds it)."""
    found = artifact.first_non_finite(outputs, first, last)
    if found is None:
        raise AssertionError("no non-finite value in these rows")
    return NonFiniteOutput(*found)


class QueueTimeout(Exception):
    """A request waited in the queue past its own timeout before its batch was formed (Triton's
    request `timeout`, its queue policy's REJECT): it is refused unrun. `waited`, `timeout`:
    seconds."""

    def __init__(self, waited: float, timeout: float):
        super().__init__(f"waited {waited * 1e3:.3f} ms, timeout {timeout * 1e3:.3f} ms")
        self.waited, self.timeout = waited, timeout


@dataclasses.dataclass
class Timing:
    queue_seconds: float  # from submit until its batch started
    compute_seconds: float  # the batch's inputs assembled (padding) and the model run
    batch_rows: int  # real rows in the batch
    bucket: int  # compiled size it ran at
    # Parts, in the batch's own Timing (`on_batch`) only: assembling the padded inputs (part of
    # compute_seconds), and splitting the outputs back into requests (after it).
    input_seconds: float = 0.0
    output_seconds: float = 0.0


@dataclasses.dataclass
class _Pending:
    inputs: Mapping[str, np.ndarray]
    rows: int
    future: asyncio.Future
    enqueued: float
    trace: Any = None  # the request's span (tracing.TracedRequest), or None
    timeout: float | None = None  # seconds it may wait for its batch
    id: str | None = None  # the request's `id` (the feedback join key), handed to `on_rows`


@dataclasses.dataclass
class _Running:
    """A batch handed to the executor: its requests, real rows, compiled size, trace token,
    `time.perf_counter()` when handed over, and the future of `Batcher._compute`."""

    batch: list[_Pending]
    rows: int
    bucket: int
    traced: Any
    start: float
    future: asyncio.Future


class BatchTracer(Protocol):
    """Traces batches (`tracing.BatchTrace`): `start` when one is formed from `members`, with
    `rows` real rows padded to `bucket`, returning a token (None: nothing to trace); `end` with
    that token once it has run (`time.perf_counter()` readings around its compute; `error`:
    what the model raised); `unbatched` for a request that left the queue unrun (its wait is
    where its time went: a timed-out request had no "queue" span)."""

    def start(self, members: Sequence[_Pending], rows: int, bucket: int) -> Any: ...

    def end(
        self, token: Any, compute_start: float, compute_end: float, error: Exception | None
    ) -> None: ...

    def unbatched(self, member: _Pending, error: QueueTimeout | None) -> None:
        """`member` left the queue without a batch: refused with `error` (its timeout ran
        out), or cancelled (None: its client went away)."""


class Batcher:
    def __init__(
        self,
        run: Mapping[int, RunFn],
        max_batch_size: int,
        max_queue_delay: float,
        max_queue_rows: int,
        on_batch: Callable[[Timing], None] | None = None,
        on_rows: Callable[[Mapping[str, np.ndarray], dict[str, np.ndarray], int, RowIds], None]
        | None = None,
        *,
        wait: str,
        trace: BatchTracer | None = None,
    ):
        if wait not in ("idle", "full"):
            raise ValueError(f"wait: expected 'idle' or 'full', got {wait!r}")
        if max_batch_size < 1 or not run or max(run) < max_batch_size:
            raise ValueError(
                f"max_batch_size: expected at least 1 and a compiled size that holds it, got "
                f"{max_batch_size} with sizes {sorted(run)}"
            )
        if max_queue_rows < max_batch_size:
            raise ValueError(
                f"max_queue_rows: expected at least max_batch_size ({max_batch_size}) so a full "
                f"batch can queue, got {max_queue_rows}"
            )
        if not max_queue_delay >= 0:
            raise ValueError(f"max_queue_delay: expected seconds >= 0, got {max_queue_delay}")
        self.wait = wait
        self._run = dict(run)  # bucket size -> compiled function
        self._sizes = sorted(self._run)
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay
        self.max_queue_rows = max_queue_rows
        self._on_batch = on_batch
        # Sees each batch's inputs and outputs (padded: the first `rows` rows are real) and
        # its answered requests' ids with their rows, after they have their results:
        # monitoring records a batch and its ids in one step, not each request.
        self._on_rows = on_rows
        self._trace = trace
        self._items: collections.deque[_Pending] = collections.deque()
        self.queued_rows = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batcher")
        self._worker: asyncio.Task | None = None
        self._waiting = False
        self._loop_ref: asyncio.AbstractEventLoop | None = None
        self.batches = 0  # batches started so far
        # Bucket -> whether its last run took less than max_queue_delay (see `_dispatch`).
        self._fast: dict[int, bool] = {}

    def start(self) -> None:
        self._loop_ref = asyncio.get_running_loop()
        self._worker = self._loop_ref.create_task(self._loop())

    async def submit(
        self, inputs: Mapping[str, np.ndarray], rows: int
    ) -> tuple[dict[str, np.ndarray], Timing]:
        """Queues one request; returns its outputs (its own rows) and how long it took."""
        return await self.submit_nowait(inputs, rows)

    def submit_nowait(
        self,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        trace: Any = None,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> asyncio.Future:
        """Queues one request; its future gets (outputs, timing), or QueueTimeout when its
        batch is formed more than `timeout` seconds after this call (None: no limit). `trace`:
        the request's span, for the batcher's `trace` hook; `request_id`: its `id`, handed
        with its rows to `on_rows`. Raises QueueFull at once when the
        queue has no room or the batcher is closing; ValueError for `rows` outside
        [1, max_batch_size]; RuntimeError before `start`."""
        if not 1 <= rows <= self.max_batch_size:
            raise ValueError(
                f"rows: expected 1 to max_batch_size ({self.max_batch_size}) per request, got "
                f"{rows}"
            )
        if self._loop_ref is None:
            raise RuntimeError("Batcher.submit_nowait before start()")
        self.check_room(rows)
        future = self._loop_ref.create_future()
        now = time.perf_counter()
        self._items.append(_Pending(inputs, rows, future, now, trace, timeout, request_id))
        self.queued_rows += rows
        if self._waiting:  # wake the worker only when it sleeps, not once per request
            self._waiting = False
            self._wakeup.set()
        return future

    def check_room(self, rows: int = 1) -> None:
        """Raises QueueFull unless `rows` more rows may be queued now: the one place that
        decides it (the server asks with 1 row before decoding a body, `submit_nowait` with
        the request's rows after)."""
        if self._closing:
            raise QueueFull("the server is shutting down")
        if self.queued_rows + rows > self.max_queue_rows:
            n = self.queued_rows
            queued = f"{n} row is" if n == 1 else f"{n} rows are"
            raise QueueFull(f"{queued} queued, limit {self.max_queue_rows}")

    async def close(self) -> None:
        """Refuses new requests, finishes every queued one, then stops the worker."""
        self._closing = True
        self._waiting = False
        self._wakeup.set()
        if self._worker is not None:
            await self._worker
        self._executor.shutdown(wait=True)

    async def _loop(self) -> None:
        """The worker: one batch computes at a time (on the executor's thread, the model's
        core); the moment it finishes, the next starts with whatever queued meanwhile, and
        only then are the finished batch's results handed out, so its replies are encoded
        while the next one computes (work-conserving: the model never waits for the loop)."""
        loop = asyncio.get_running_loop()
        running: _Running | None = None
        while True:
            if running is None:
                if not self._items:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    self._waiting = True
                    await self._wakeup.wait()
                    continue
                await self._fill()  # the model is idle: let the batch fill (`wait`)
                running = self._dispatch(loop)
                continue
            try:
                result, error = await running.future, None
            except Exception as e:  # a fault in the model: every request of the batch hears it
                result, error = None, e
            finished, running = running, self._dispatch(loop) if self._due() else None
            self._finish(finished, result, error)

    async def _fill(self) -> None:
        """Lets the batch fill while the model is idle: while requests keep coming, each pass
        letting the event loop read every socket that is ready. Stops when it is full, when a
        pass brought nothing new (no one else is waiting to be read, so waiting longer only
        adds latency), or at the oldest request's deadline; with `wait="full"`, only when full
        or at the deadline."""
        deadline = self._items[0].enqueued + self.max_queue_delay
        seen = -1
        while self.queued_rows < self.max_batch_size and not self._closing:
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or (self.wait == "idle" and self.queued_rows == seen):
                return
            seen = self.queued_rows
            if self.wait == "idle":
                await asyncio.sleep(0)
                continue
            self._wakeup.clear()
            self._waiting = True
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _due(self) -> bool:
        """Whether the queued requests run as the next batch the moment the model is free:
        always with `wait="idle"` (they queued while it computed); with `wait="full"` when a
        batch is full or the oldest request's deadline has passed (else `_fill` waits)."""
        if not self._items:
            return False
        if self.wait == "idle" or self._closing or self.queued_rows >= self.max_batch_size:
            return True
        return time.perf_counter() >= self._items[0].enqueued + self.max_queue_delay

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> _Running | None:
        """Takes whole requests (oldest first; cancelled ones dropped, those past their timeout
        refused) up to `max_batch_size` rows and starts them computing; None when none is left.

        On the executor's thread, except a lone request (nothing else queued) whose bucket's
        last run took less than `max_queue_delay`: that one runs here, on the event loop's
        thread, since handing it over and back costs four thread switches (at concurrency 1
        on one core, ~0.1 ms of the server's CPU per request, 8% of the 2.4M-parameter CNN's
        and 20% of the 151k one's), while the loop is held no longer than a request may wait
        for its batch anyway, and nothing else is waiting to be computed."""
        batch, rows = [], 0
        now = time.perf_counter()
        while self._items and rows + self._items[0].rows <= self.max_batch_size:
            item = self._items.popleft()
            self.queued_rows -= item.rows
            if item.future.done():  # cancelled: its client is gone, its rows need no run
                if self._trace is not None and item.trace is not None:
                    self._trace.unbatched(item, None)
                continue
            if item.timeout is not None and now - item.enqueued > item.timeout:
                error = QueueTimeout(now - item.enqueued, item.timeout)
                if self._trace is not None and item.trace is not None:
                    self._trace.unbatched(item, error)  # before the reply ends its parent
                item.future.set_exception(error)
                continue
            batch.append(item)
            rows += item.rows
        if not batch:
            return None
        bucket = self._sizes[bisect.bisect_left(self._sizes, rows)]
        traced = None if self._trace is None else self._trace.start(batch, rows, bucket)
        start = time.perf_counter()  # after the spans: tracing is no part of compute
        self.batches += 1
        if len(batch) == 1 and not self._items and self._fast.get(bucket, False):
            future = loop.create_future()  # a lone request to a fast bucket: on this thread
            try:
                future.set_result(self._compute(batch, bucket))
            except Exception as e:
                future.set_exception(e)
            return _Running(batch, rows, bucket, traced, start, future)
        future = loop.run_in_executor(self._executor, self._compute, batch, bucket)
        return _Running(batch, rows, bucket, traced, start, future)

    def _finish(self, done: _Running, result: Any, error: Exception | None) -> None:
        """Hands a computed batch's rows to its requests (or its error to all of them), then
        the trace, monitoring and metrics hooks (none of which may stop the worker)."""
        if error is not None:
            for item in done.batch:
                if not item.future.done():
                    item.future.set_exception(error)
            if done.traced is not None:
                self._trace.end(done.traced, done.start, time.perf_counter(), error)
            return
        outputs, assembled, inputs, compute_start, compute_end = result
        split = time.perf_counter()
        compute = compute_end - compute_start
        self._fast[done.bucket] = compute < self.max_queue_delay
        bad = non_finite_rows(outputs, done.rows)  # None: every row has its answer
        refused = None if bad is None else np.zeros(done.rows, bool)
        offset, ids = 0, []
        for item in done.batch:
            timing = Timing(compute_start - item.enqueued, compute, done.rows, done.bucket)
            end = offset + item.rows
            if bad is not None and bad[offset:end].any():
                refused[offset:end] = True  # none of its rows was answered
                if not item.future.done():
                    item.future.set_exception(_non_finite(outputs, offset, end))
                offset = end
                continue
            mine = {k: v[offset:end] for k, v in outputs.items()}
            if not item.future.done():  # the client may have gone
                item.future.set_result((mine, timing))
                ids.append((item.id, offset, end))
            offset = end
        if done.traced is not None:
            self._trace.end(done.traced, compute_start, compute_end, None)
        if self._on_rows is not None:
            try:
                if refused is None:
                    self._on_rows(inputs, outputs, done.rows, ids)
                else:  # the refused requests' rows enter no window: they were not answered
                    self._on_rows(*_answered(inputs, outputs, refused, ids))
            except Exception:  # monitoring must not stop the worker
                log.exception("batch rows observer failed")
        if self._on_batch is not None:
            try:
                output = time.perf_counter() - split
                timing = Timing(0.0, compute, done.rows, done.bucket, assembled, output)
                self._on_batch(timing)
            except Exception:  # metrics must not stop the worker
                log.exception("batch observer failed")

    def _compute(
        self, batch: list[_Pending], bucket: int
    ) -> tuple[dict[str, np.ndarray], float, Mapping[str, np.ndarray], float, float]:
        """On the executor's thread: (the batch's outputs, seconds spent assembling its padded
        inputs, those inputs, `time.perf_counter()` before assembling and after the run)."""
        start = time.perf_counter()
        if len(batch) == 1 and batch[0].rows == bucket:
            outputs = self._run[bucket](batch[0].inputs)
            return outputs, 0.0, batch[0].inputs, start, time.perf_counter()
        inputs = {}
        for name, first in batch[0].inputs.items():
            array = np.zeros((bucket, *first.shape[1:]), first.dtype)  # padding rows are zeros
            offset = 0
            for item in batch:
                array[offset : offset + item.rows] = item.inputs[name]
                offset += item.rows
            inputs[name] = array
        assembled = time.perf_counter() - start
        return self._run[bucket](inputs), assembled, inputs, start, time.perf_counter()


def _answered(
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    refused: np.ndarray,
    ids: RowIds,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int, RowIds]:
    """What `on_rows` gets of a batch some of whose requests were refused (`refused`: a mask
    of its real rows): the other rows alone, and the answered requests' rows renumbered."""
    keep = np.flatnonzero(~refused)
    before = np.cumsum(refused)  # refused rows up to and including each row
    moved = [(i, first - int(before[first]), last - int(before[first])) for i, first, last in ids]
    return (
        {k: v[keep] for k, v in inputs.items()},
        {k: v[keep] for k, v in outputs.items()},
        len(keep),
        moved,
    )
