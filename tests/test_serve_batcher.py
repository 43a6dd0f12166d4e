"""The batcher alone, in-process: oversize requests, settings that cannot work, a model error
failing its whole batch, cancelled requests, and the order of close()."""

import asyncio

import numpy as np
import pytest

from ann.serve.batcher import Batcher, NonFiniteOutput, QueueFull, QueueTimeout, buckets


def recording_run(max_batch_size, fail_first=False):
    """Compiled functions for every bucket that double `x` and record each call's batch."""
    calls = []

    def make(size):
        def run(inputs):
            calls.append(inputs["x"].copy())
            if fail_first and len(calls) == 1:
                raise RuntimeError("model exploded")
            assert inputs["x"].shape[0] == size
            return {"y": inputs["x"] * 2}

        return run

    return {size: make(size) for size in buckets(max_batch_size)}, calls


def started(delay, wait="idle", fail_first=False):
    """A running Batcher of 8 rows (queue 64) over `recording_run`, and its calls; made inside
    the event loop."""
    run, calls = recording_run(8, fail_first)
    batcher = Batcher(run, 8, delay, 64, wait=wait)
    batcher.start()
    return batcher, calls


def rows(n, start=0):
    return {"x": np.arange(start, start + n, dtype=np.float32).reshape(n, 1)}


def test_oversize_and_empty_requests_are_refused_at_submit():
    async def main():
        batcher, calls = started(0.001)
        for n in (9, 0, -1):
            with pytest.raises(ValueError, match=r"rows: expected 1 to max_batch_size \(8\)"):
                batcher.submit_nowait(rows(max(n, 1)), n)
        assert batcher.queued_rows == 0
        # The worker still serves a request that fits.
        out, timing = await batcher.submit(rows(8), 8)
        assert out["y"].tolist() == (rows(8)["x"] * 2).tolist() and timing.bucket == 8
        await batcher.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_queue_rows": 4}, "max_queue_rows: expected at least max_batch_size"),
        ({"max_batch_size": 0}, "max_batch_size: expected at least 1"),
        ({"max_batch_size": 16}, "a compiled size that holds it"),
        ({"max_queue_delay": -1.0}, "max_queue_delay: expected seconds >= 0"),
        ({"max_queue_delay": float("nan")}, "max_queue_delay: expected seconds >= 0"),
    ],
)
def test_settings_that_cannot_work_are_refused(kwargs, message):
    run, _ = recording_run(8)
    args = {"max_batch_size": 8, "max_queue_delay": 0.001, "max_queue_rows": 64, "wait": "idle",
            **kwargs}  # fmt: skip
    with pytest.raises(ValueError, match=message):
        Batcher(run, **args)


def test_model_error_fails_every_request_of_its_batch_and_the_worker_goes_on():
    async def main():
        # wait="full" with a long delay: the three requests surely share one batch.
        batcher, calls = started(5.0, "full", fail_first=True)
        futures = [batcher.submit_nowait(rows(n), n) for n in (1, 2, 5)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert len(calls) == 1 and calls[0].shape[0] == 8
        assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)
        out, _ = await asyncio.wait_for(
            asyncio.gather(batcher.submit(rows(3), 3), batcher.submit(rows(5, 3), 5)), 30
        )
        assert out[0]["y"].ravel().tolist() == [0.0, 2.0, 4.0]
        await batcher.close()

    asyncio.run(main())


def test_cancelled_requests_are_not_run():
    async def main():
        batcher, calls = started(0.2, "full")
        first = batcher.submit_nowait(rows(1, 10), 1)
        gone = batcher.submit_nowait(rows(3, 20), 3)
        last = batcher.submit_nowait(rows(1, 30), 1)
        gone.cancel()  # its client went away while it was queued
        (a, _), (b, _) = await asyncio.wait_for(asyncio.gather(first, last), 30)
        assert [c.shape[0] for c in calls] == [2]  # 2 real rows, bucket 2: the 3 rows skipped
        assert calls[0].ravel().tolist() == [10.0, 30.0]
        assert a["y"].ravel().tolist() == [20.0] and b["y"].ravel().tolist() == [60.0]
        assert batcher.queued_rows == 0
        await batcher.close()

    asyncio.run(main())


def test_close_finishes_queued_requests_then_refuses():
    async def main():
        # A 60 s fill wait: close() must not sit it out.
        batcher, calls = started(60.0, "full")
        futures = [batcher.submit_nowait(rows(1, i), 1) for i in range(3)]
        await asyncio.sleep(0)
        await asyncio.wait_for(batcher.close(), 30)
        assert all(f.done() and not f.cancelled() for f in futures)
        assert [f.result()[0]["y"].item() for f in futures] == [0.0, 2.0, 4.0]
        with pytest.raises(QueueFull, match="shutting down"):
            batcher.submit_nowait(rows(1), 1)

    asyncio.run(main())


def test_submit_before_start_and_queue_full():
    async def main():
        run, _ = recording_run(4)
        batcher = Batcher(run, 4, 60.0, 4, wait="full")
        with pytest.raises(RuntimeError, match="before start"):
            batcher.submit_nowait(rows(1), 1)
        batcher.start()
        batcher.submit_nowait(rows(1), 1)
        with pytest.raises(QueueFull, match="1 row is queued, limit 4"):  # was "1 rows are"
            batcher.check_room(4)
        batcher.submit_nowait(rows(2), 2)
        with pytest.raises(QueueFull, match="3 rows are queued, limit 4"):
            batcher.submit_nowait(rows(2), 2)
        await asyncio.wait_for(batcher.close(), 30)

    asyncio.run(main())


class GatedModel:
    """Compiled functions for every bucket of 8 that double `x`, record each call's real rows
    (non-zero: requests here never send a 0) and block on `gate` until the test opens it;
    `entered` is set when a call has started."""

    def __init__(self):
        import threading

        self.gate, self.entered = threading.Event(), threading.Event()
        self.calls: list[list[float]] = []
        self.run = {size: self._run for size in buckets(8)}

    def _run(self, inputs):
        self.calls.append([v for v in inputs["x"].ravel().tolist() if v])
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return {"y": inputs["x"] * 2}

    async def wait_entered(self):
        """Until a call has started (off the loop, so the loop keeps serving)."""
        assert await asyncio.get_running_loop().run_in_executor(None, self.entered.wait, 30)
        self.entered.clear()


def test_next_batch_starts_when_the_previous_ends_before_its_replies():
    """Work-conserving: what queued while a batch computed runs as the next batch the moment
    it ends, before the finished batch's requests hear their results (their replies are then
    encoded while the model computes), and with no pass of the event loop in between."""

    async def main():
        model = GatedModel()
        batcher = Batcher(model.run, 8, 60.0, 64, wait="idle")
        batcher.start()
        first = batcher.submit_nowait(rows(1, 1), 1)
        await model.wait_entered()  # the lone request computes; the model is busy
        queued = [batcher.submit_nowait(rows(1, 10 + i), 1) for i in range(3)]
        assert batcher.batches == 1
        model.gate.set()
        out, timing = await first
        # The moment the first batch ended, the three queued requests started as one batch.
        assert batcher.batches == 2 and batcher.queued_rows == 0
        assert out["y"].tolist() == [[2.0]] and timing.bucket == 1
        results = await asyncio.wait_for(asyncio.gather(*queued), 30)
        assert model.calls == [[1.0], [10.0, 11.0, 12.0]]
        assert [r[0]["y"].item() for r in results] == [20.0, 22.0, 24.0]
        assert all(r[1].batch_rows == 3 and r[1].bucket == 4 for r in results)
        await batcher.close()

    asyncio.run(main())


def test_a_burst_runs_as_full_batches_back_to_back():
    """20 one-row requests arriving while a batch computes: 3 more batches (8, 8, 4), each
    started as the previous ended, none waiting for company (queue delay 60 s)."""

    async def main():
        model = GatedModel()
        batcher = Batcher(model.run, 8, 60.0, 64, wait="idle")
        batcher.start()
        first = batcher.submit_nowait(rows(1, 1), 1)
        await model.wait_entered()
        burst = [batcher.submit_nowait(rows(1, 100 + i), 1) for i in range(20)]
        model.gate.set()
        await asyncio.wait_for(asyncio.gather(first, *burst), 30)
        assert batcher.batches == 4
        assert [len(c) for c in model.calls] == [1, 8, 8, 4]
        assert sum(model.calls[1:], []) == [100.0 + i for i in range(20)]  # oldest first
        await batcher.close()

    asyncio.run(main())


def test_full_wait_after_a_batch_waits_for_a_full_one():
    """wait="full": what queued while a batch computed does not run when it ends, but once a
    batch is full (or the oldest request's deadline, 60 s here, passes)."""

    async def main():
        model = GatedModel()
        batcher = Batcher(model.run, 8, 60.0, 64, wait="full")
        batcher.start()
        first = [batcher.submit_nowait(rows(1, 1 + i), 1) for i in range(8)]
        await model.wait_entered()
        later = [batcher.submit_nowait(rows(1, 20 + i), 1) for i in range(3)]
        model.gate.set()
        await asyncio.wait_for(asyncio.gather(*first), 30)
        for _ in range(5):
            await asyncio.sleep(0)
        assert batcher.batches == 1 and batcher.queued_rows == 3  # waits for company
        later += [batcher.submit_nowait(rows(1, 30 + i), 1) for i in range(5)]
        await asyncio.wait_for(asyncio.gather(*later), 30)
        assert [len(c) for c in model.calls] == [8, 8] and batcher.batches == 2
        await batcher.close()

    asyncio.run(main())


@pytest.mark.parametrize("delay, inline", [(60.0, True), (0.0, False)])
def test_a_lone_request_to_a_fast_bucket_runs_on_the_loop_thread(delay, inline):
    """After one run of a bucket took less than max_queue_delay, a lone request to it runs on
    the event loop's thread (no hand-over to the executor and back); with max_queue_delay 0,
    nothing is that fast, so every batch runs on the executor's thread."""
    import threading

    threads = []

    def run(inputs):
        threads.append(threading.get_ident())
        return {"y": inputs["x"] * 2}

    async def main():
        batcher = Batcher({size: run for size in buckets(8)}, 8, delay, 64, wait="idle")
        batcher.start()
        for i in range(3):
            out, timing = await batcher.submit(rows(1, i + 1), 1)
            assert out["y"].item() == 2.0 * (i + 1) and timing.bucket == 1
        await batcher.close()

    asyncio.run(main())
    loop_thread = threading.get_ident()  # asyncio.run runs the loop on this thread
    assert threads[0] != loop_thread  # the bucket's first run: its speed is not known yet
    assert [t == loop_thread for t in threads[1:]] == [inline, inline]


def test_a_request_past_its_own_timeout_is_refused_unrun_and_the_rest_still_run():
    """Triton's request `timeout`: one that waited longer for its batch is refused (not run),
    one that did not runs, and so does one with no timeout."""

    async def main():
        model = GatedModel()
        batcher = Batcher(model.run, 8, 60.0, 64, wait="idle")
        batcher.start()
        first = batcher.submit_nowait(rows(1, 1), 1)
        await model.wait_entered()  # the model is busy: the next requests wait
        late = batcher.submit_nowait(rows(1, 10), 1, timeout=0.001)
        patient = batcher.submit_nowait(rows(1, 20), 1, timeout=60.0)
        unlimited = batcher.submit_nowait(rows(1, 30), 1)
        await asyncio.sleep(0.05)
        model.gate.set()
        await first
        with pytest.raises(QueueTimeout, match=r"waited \d+\.\d{3} ms, timeout 1\.000 ms") as e:
            await asyncio.wait_for(late, 30)
        assert e.value.waited > e.value.timeout == 0.001
        results = await asyncio.wait_for(asyncio.gather(patient, unlimited), 30)
        assert model.calls == [[1.0], [20.0, 30.0]]  # the late request never ran
        assert [r[0]["y"].item() for r in results] == [40.0, 60.0]
        assert batcher.queued_rows == 0
        await batcher.close()

    asyncio.run(main())


def test_a_non_finite_output_refuses_its_own_request_and_no_other():
    """A model that overflows on one request's input (a NaN or an infinity in a float output)
    refuses that request alone (`NonFiniteOutput`: output, row, value); the others of its batch
    get their answers, and only theirs enter monitoring's window, their ids renumbered. They
    went out as 200 with `null` in the JSON (NaN bytes in binary)."""
    seen = []

    def make(size):
        def run(inputs):
            x = inputs["x"]
            with np.errstate(over="ignore", invalid="ignore"):  # what an overflow gives
                y = np.where(x >= 1e30, x * x, x * 2).astype(np.float32)
                z = np.where(x <= -1e30, np.float32(np.nan), x)
            return {"label": np.zeros(size, np.int32), "y": y, "z": z}

        return run

    async def main():
        run = {size: make(size) for size in buckets(8)}
        batcher = Batcher(run, 8, 5.0, 64, on_rows=lambda *a: seen.append(a), wait="full")
        batcher.start()
        sent = [
            rows(2),
            {"x": np.array([[5.0], [1e30], [-1e30]], np.float32)},
            {"x": np.array([[3.0]], np.float32)},
            {"x": np.array([[-1e31]], np.float32)},
        ]
        ids = ["a", "b", "c", "d"]
        futures = [
            batcher.submit_nowait(x, len(x["x"]), request_id=i)
            for x, i in zip(sent, ids, strict=True)
        ]
        futures.append(batcher.submit_nowait(rows(2, 7), 2, request_id="e"))  # 9 rows: next batch
        results = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.close()
        return results

    first, second, third, fourth, fifth = asyncio.run(main())
    assert first[0]["y"].tolist() == [[0.0], [2.0]] and third[0]["y"].tolist() == [[6.0]]
    assert fifth[0]["y"].tolist() == [[14.0], [16.0]]
    assert isinstance(second, NonFiniteOutput) and isinstance(fourth, NonFiniteOutput)
    # The first output (in the model's order) and row that is not finite, and its value.
    assert (second.output, second.row, second.value) == ("y", 1, "inf")
    assert (fourth.output, fourth.row, fourth.value) == ("z", 0, "nan")
    # Monitoring: the answered rows alone (a: 2 rows, c: 1), ids renumbered; then the next batch.
    inputs, outputs, n, answered = seen[0]
    assert n == 3 and answered == [("a", 0, 2), ("c", 2, 3)]
    assert inputs["x"].reshape(-1).tolist() == [0.0, 1.0, 3.0]
    assert np.isfinite(outputs["y"]).all() and len(outputs["label"]) == 3
    assert seen[1][2] == 2 and seen[1][3] == [("e", 0, 2)]
