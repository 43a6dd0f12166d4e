"""Watching served models: sliding windows of what they serve, tested for drift off the
request path, and late labels joined to their predictions (`feedback.Predictions`).

On the request path (the event loop), each batch that ran costs one `ModelMonitor.record_batch`
(the batcher's `on_rows`: under a lock, its real rows copied into the open window's buffer, a
few small NumPy copies, and in the same step the predicted classes of each of its requests that
carried an `id` kept for a later label, about 1 µs each). Nothing is tested or encoded there. One
background thread (`Monitoring`, niceness 19 where the OS allows: serving comes first on a busy
core) drains the queues every `TICK_SECONDS` (1 s) and handles each closed window:
predicted-class shares, the confidence histogram and the CBPE-style estimate for every window,
and drift by the export's reference sample
(`ann.monitor.drift.Reference.from_model(model).detect`, Evidently's defaults, adapted), with
the top drifted features' histograms beside the reference's on the same bins
(`Reference.histograms`; a categorical input's shares of its categories that moved most,
`Reference.category_histograms`; for the dashboard), for the latest window closed in that tick
(windows that close faster than one a second are counted in `skipped_windows`, not
drift-tested: at most one test a second per model, about 80 ms of CPU for the digits' 64
features and 1,000 rows on a
slow 2-core machine, mostly scipy's exact KS p-values; the distances chosen before for this
reference took 30 ms). The drift tests run in a process of their own (one worker, niceness 19,
JAX on the CPU, SIGINT ignored: a terminal's Ctrl-C reaches the whole process group, and the
server stops it after draining, not waiting for its test: `Monitoring.stop`; it exits by itself
within a second of a server killed outside its control, SIGKILL included; spawned while the
first model compiles, it reads and keeps each model's reference: `prepare`, which the model's
readiness does not wait for): in the server process their GIL hand-offs cost the event loop
more than the tests cost themselves (`Monitoring`). The thread sets the gauges
(ann/serve/metrics.py) and keeps the results for `GET .../monitor`.

Windows, per model version: a window closes once it holds `--monitor_window_rows` rows (1,000;
the batch that reaches them goes into it whole, so every served row is tested in the window its
request's id joins, and a window may hold more), or after `--monitor_window_seconds` (60) once
it holds at least min(max(100, `--monitor_min_rows`), `--monitor_window_rows`) rows: fewer
rows make weak tests, which find only large shifts (the p-value tests that judge
windows of up to 1,000 rows keep their 5% false
alarms per feature at any size: for the digits, unshifted traffic's share of drifted pixels is
0.01-0.03 from 25 to 300 rows, against the 0.5 that flags a dataset; the distances Evidently
picks for a 1,221-row reference gave 0.35 at 100 rows). Drift is judged on at least
`--monitor_min_rows` rows (25, `ann.monitor.MIN_ROWS`: the chi-square rule of 5 expected counts
a bin; the settings keep every window at or above it); a window of fewer is not tested
(`DriftResult.state` "too_few_rows") and its ann_drift_share_ratio and ann_drift_detected
are NaN, so `ann_drift_detected == 1` (the drift alert) is false, as PromQL compares NaN.
Memory: a window keeps at most `MAX_WINDOW_BYTES` (64 MiB) of rows of inputs and outputs (its
first rows beyond that, and `/monitor` says so: `window.capped_by_memory`; the digits' 108 bytes
a row never get there), in buffers reused from window to window (grown, up to that, when a
batch runs past the window's rows): the open window's, and those being handled; and the
feedback store (`feedback`).

The estimate before labels (Confidence-Based Performance Estimation, NannyML's CBPE, for the
accuracy of the top class): expected accuracy = the mean top-class probability of the window's
rows. It holds when (1) the probabilities are calibrated on data like the served data (the
export folds temperature scaling in: ann/calibrate.py, `calibration` in the manifest), and (2)
only the inputs' distribution moved, not the relation between inputs and labels (no concept
drift); under concept drift or inputs far from training (where calibration does not transfer)
it is optimistic. Realized accuracy from labels is the truth when labels come.

A model whose export has no reference sample (older exports) or whose reference cannot be read:
the first window logs one line, `/monitor` carries it as `drift_unavailable`, and shares,
confidence, estimate and feedback go on.
"""

from __future__ import annotations

import calendar
import concurrent.futures
import contextlib
import logging
import math
import multiprocessing
import multiprocessing.context
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ann.serve.feedback import REASONS, Predictions, padding_class

if TYPE_CHECKING:
    from ann.serve.metrics import Metrics
    from ann.serve.settings import Settings

log = logging.getLogger("ann.serve")

TICK_SECONDS = 1.0  # how often the thread looks for closed windows (drift-tests the latest)
MAX_WINDOW_BYTES = 64 << 20  # rows a window keeps: its first ones beyond 64 MiB
NICE = 19  # the thread's niceness: it yields to serving on a busy core
PARENT_CHECK_SECONDS = 1.0  # how often the drift process checks that the server lives
# How long `Monitoring.stop` waits for the drift process to end once told to (SIGTERM), before
# it kills it: only a process still starting (not yet listening for the signal, nothing written
# yet) or a compilation-cache write in progress (`stop_writes`' 2 s) takes this long.
STOP_SECONDS = 3.0
# Blocked in the drift process from its spawn (every thread of it inherits the mask), taken by
# its watch thread (`_exit_with_server`), which ends the process at once (a drift test in
# progress is not waited for) but not in the middle of a compilation-cache write.
_STOP_SIGNALS = {signal.SIGTERM} if hasattr(signal, "sigtimedwait") else set()
TIME_WINDOW_ROWS = 100  # a window closed by time holds at least min(max(this, min rows), rows)
TOP_FEATURES = 10  # features exported in ann_drift_score and ann_feature_bin_share_ratio
ESTIMATE_ASSUMPTIONS = (
    "expected accuracy = mean top-class probability (CBPE); assumes calibrated probabilities "
    "and no concept drift (only the inputs moved); otherwise a lead, off in either direction "
    "(most often optimistic: a model is overconfident on inputs far from its training)"
)


def class_outputs(outputs: dict[str, dict[str, Any]]) -> tuple[str | None, str | None]:
    """(the categorical output: one with class names and one value per row; the probability
    output: a float output of one axis per row, as many as the classes when both exist)."""
    label = next((k for k, v in outputs.items() if "names" in v and len(v["shape"]) == 1), None)
    classes = len(outputs[label]["names"]) if label else None
    probabilities = next(
        (
            k
            for k, v in outputs.items()
            if str(v["dtype"]).startswith(("float", "bfloat"))
            and len(v["shape"]) == 2
            and (classes is None or v["shape"][1] == classes)
        ),
        None,
    )
    return label, probabilities


def _row_bytes(spec: dict[str, Any]) -> int:
    """Bytes of one row of a tensor whose signature is `spec` (batch axis first)."""
    return int(np.prod(spec["shape"][1:], dtype=np.int64)) * np.dtype(spec["dtype"]).itemsize


def _length(buffer: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]) -> int:
    """Rows a window's buffer has room for."""
    return len(next(iter(buffer[1].values())))


def created_time(manifest: dict[str, Any]) -> float | None:
    """The manifest's `created` (`2026-12-01T03:00:00Z`, UTC) as Unix seconds, or None."""
    created = manifest.get("created")
    try:
        return float(calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


def bin_names(edges: np.ndarray) -> list[str]:
    """The `bin` labels of ann_feature_bin_share_ratio for bin edges [bins + 1]: ordinal (2 digits,
    so text order is bin order) and range, half-open but the last, e.g. `"01 [0, 1.6)"`,
    `"10 [14.4, 16]"` (4 significant digits)."""
    last = len(edges) - 2
    return [
        f"{i + 1:02d} [{lo:.4g}, {hi:.4g}{']' if i == last else ')'}"
        for i, (lo, hi) in enumerate(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))
    ]


class ModelMonitor:
    """The windows and feedback of one served model version: `served` is its
    `dataplane.ServedModel` (name, version, outputs, model; not imported: dataplane imports
    this module)."""

    def __init__(
        self,
        served: Any,
        settings: Settings,
        metrics: Metrics,
        pool: concurrent.futures.Executor | None = None,
    ):
        self.served = served
        self._pool = pool  # the drift process (`Monitoring.pool`); None: tests run here
        # `Monitoring.replace_pool` (set by `Monitoring.add`): a new drift process for one that
        # ended (killed, out of memory); None: a broken pool's error propagates.
        self.replace_pool: Any = None
        self._key = f"{served.name}/{served.version}"
        self.rows_per_window = settings.monitor_window_rows
        self.seconds = settings.monitor_window_seconds
        self.drift_min_rows = settings.monitor_min_rows  # fewer: drift not judged
        self.multivariate = settings.monitor_multivariate == "on"  # MMD over every input feature
        self.correction = settings.monitor_correction  # of the per-feature p-values
        self.min_rows = min(max(TIME_WINDOW_ROWS, self.drift_min_rows), self.rows_per_window)
        self.label_output, self.probability_output = class_outputs(served.outputs)
        names = served.outputs[self.label_output]["names"] if self.label_output else []
        self.predictions = (
            Predictions(
                settings.monitor_feedback_capacity,
                names,
                settings.monitor_min_labels,
                padding_class(served.inputs, served.outputs, self.label_output),
            )
            if self.label_output
            else None
        )
        self.lock = threading.Lock()
        self.skipped = 0  # closed windows not drift-tested: a later one closed in the same tick
        # Rows of inputs and outputs a window keeps (its first ones beyond it): at most
        # MAX_WINDOW_BYTES, at least min_rows; a buffer starts at the window's rows, or fewer.
        # The model's signature (batch axis first), as the buffers: `served.inputs` has none,
        # and counted the first axis of a row only.
        row_bytes = sum(_row_bytes(spec) for spec in (*served.model.inputs.values(),
                                                      *served.outputs.values()))  # fmt: skip
        self.max_rows = max(self.min_rows, MAX_WINDOW_BYTES // max(row_bytes, 1))
        self.keep_rows = min(self.rows_per_window, self.max_rows)
        self.window = 0  # the open window's index
        self._rows = 0  # rows in the open window
        self._opened = time.monotonic(), time.time()
        # The open window's rows are copied into a buffer (inputs and outputs by name, arrays of
        # keep_rows rows, reused once the thread is done with them: the server's own arrays
        # are freed at once and their memory reused while still in cache; keeping references
        # to every batch cost the event loop about 5 µs a request).
        self._free: list[tuple[dict, dict]] = []
        self._buffer = self._new_buffer(self.keep_rows)
        self._filled = 0  # rows copied into the open window's buffer
        self._closed: dict[int, tuple] = {}  # index -> buffer, rows copied, (start, end, why, rows)
        self._testing: int | None = None  # the closed window being tested, until it publishes
        self.last: dict[str, Any] | None = None  # the last closed window's results
        self.reference: Any = None
        self.drift_unavailable: str | None = None
        self._reference_tried = False
        # `prepare` runs in a thread beside the compile and may still be reading when the model
        # turns ready: a window's drift test (the monitoring thread) waits for it here.
        self._prepare_lock = threading.Lock()
        self._drift_labels: set[tuple[str, str]] = set()
        self._bin_labels: set[tuple[str, str, str]] = set()
        self._metrics = metrics
        self._bind(metrics, served.name, served.version)

    def _bind(self, metrics: Metrics, name: str, version: str) -> None:
        """Children bound once (a labels() lookup per use costs more than the use)."""
        mv = (name, version)
        self._labels_counter = metrics.feedback_labels.labels(*mv)
        self._unmatched = {r: metrics.feedback_unmatched.labels(*mv, r) for r in REASONS}
        # NaN until labels come: a gauge at 0 read as "every prediction wrong" (the accuracy
        # alert fired for every model that got no labels); PromQL comparisons with NaN are false.
        self._realized = {w: metrics.realized_accuracy.labels(*mv, w) for w in ("last", "total")}
        for child in self._realized.values():
            child.set(math.nan)
        self.created = created_time(self.served.model.manifest)
        if self.created is not None:
            created = self.created
            metrics.model_age.labels(*mv).set_function(lambda: time.time() - created)

    # -- the request path (event loop) ---------------------------------------------------------

    def record_batch(
        self,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        rows: int,
        ids: Sequence[tuple[str | None, int, int]] = (),
    ) -> None:
        """One batch that ran (the batcher's `on_rows`): its arrays by reference, padded (the
        first `rows` rows are real; never changed after), into the open window, and with them
        the predicted classes of its requests that carried an id, kept for a label: `ids` is
        (id, first row, row after the last) per request. One step under the lock: the ids were
        recorded later, from each reply, and a window the thread closed in between (the batch
        had filled it) left them to the next one, whose labels they then counted for. An empty
        id (the v2 protocol allows it) is no join key: `/feedback` refuses it, so its
        prediction, which no label could reach, is not kept. A window that reached its rows
        closes here, before the next batch."""
        with self.lock:
            if self._rows >= self.rows_per_window:
                self._close("rows")
            # All of the batch: rows past the window's were dropped, and never tested.
            take = min(rows, self.max_rows - self._filled)
            if take > 0:
                end = self._filled + take
                if end > _length(self._buffer):  # a batch past the window's rows
                    self._grow(end)
                kept_inputs, kept_outputs = self._buffer
                for name, array in inputs.items():
                    kept_inputs[name][self._filled : end] = array[:take]
                for name, array in outputs.items():
                    kept_outputs[name][self._filled : end] = array[:take]
                self._filled = end
            self._rows += rows
            if self.predictions is not None:
                predicted = outputs[self.label_output]
                for request_id, first, last in ids:
                    if request_id:
                        self.predictions.record(request_id, predicted[first:last], self.window)

    def _new_buffer(self, rows: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Arrays for one window's rows: (inputs, outputs) by name, `rows` rows each."""
        return tuple(
            {k: np.empty((rows, *v["shape"][1:]), v["dtype"]) for k, v in sig.items()}
            for sig in (self.served.model.inputs, self.served.outputs)
        )  # type: ignore[return-value]

    def _grow(self, rows: int) -> None:
        """The open window's buffer, with room for at least `rows` rows (at most `max_rows`);
        the rows copied so far kept. Rare: a grown buffer is reused by later windows."""
        bigger = self._new_buffer(min(self.max_rows, max(rows, 2 * _length(self._buffer))))
        for old, new in zip(self._buffer, bigger, strict=True):
            for name, array in old.items():
                new[name][: self._filled] = array[: self._filled]
        self._buffer = bigger

    def _close(self, why: str) -> None:
        """Closes the open window (under the lock): the next batch opens the next one."""
        start = self._opened[1]
        self._opened = time.monotonic(), time.time()
        bounds = (start, self._opened[1], why, self._rows)
        self._closed[self.window] = (self._buffer, self._filled, bounds)
        self._buffer = self._free.pop() if self._free else self._new_buffer(self.keep_rows)
        self._filled = 0
        self.window += 1
        self._rows = 0

    def feedback(
        self, body: Any, others: Sequence[tuple[str, ModelMonitor]] = ()
    ) -> dict[str, Any]:
        """Joins a parsed JSON feedback body (`feedback.Predictions.parse`); the reply, with
        `unknown_held_by`: for each of `others` ((version, monitor) of the model's other served
        versions) that holds some of the labels' ids this version does not know, how many ({}
        when none does: `ann monitor feedback` then says the ids were never served, rather than
        naming another version, which said to send them back here)."""
        from ann.serve.errors import ServeError

        if self.predictions is None:
            raise ServeError(
                400,
                f"feedback: model {self.served.name!r} has no categorical output (one with "
                "class names) to join labels to; feedback is for classification models",
                "feedback",
            )
        items = self.predictions.parse(body)
        with self.lock:
            joined = self.predictions.join(items, listed=isinstance(body, list))
            realized = self.predictions.realized(self.window)
            unknown = (
                self.predictions.unknown([i for i, _ in items])
                if joined["unmatched"]["unknown"]
                else []
            )
        held_by = {}
        for version, other in others if unknown else ():  # one lock at a time: no deadlock
            if other.predictions is not None:
                with other.lock:
                    held = other.predictions.holds(unknown)
                if held:
                    held_by[version] = held
        self._labels_counter.inc(joined["matched"])
        for reason, n in joined["unmatched"].items():
            if n:
                self._unmatched[reason].inc(n)
        self._set_realized(realized)
        return {
            **joined,
            "unknown_held_by": held_by,
            "accuracy": realized,
            "min_labels": self.predictions.min_labelled,
        }

    def _set_realized(self, realized: dict[str, Any]) -> None:
        """ann_realized_accuracy_ratio from `Predictions.realized`: NaN where too few rows
        are labelled (as `/monitor`'s null)."""
        for window, value in realized.items():
            accuracy = None if value is None else value["accuracy"]
            self._realized[window].set(math.nan if accuracy is None else accuracy)

    # -- the background thread -----------------------------------------------------------------

    def step(self) -> None:
        """Closes a window that is old enough, then tests every closed window drained so far."""
        with self.lock:
            if self._rows >= self.rows_per_window:  # no batch came after the one that filled it
                self._close("rows")
            elif self._rows >= self.min_rows and time.monotonic() - self._opened[0] >= self.seconds:
                self._close("seconds")
            closed, self._closed = self._closed, {}
            if closed:  # what /monitor names until its results replace the last window's
                self._testing = max(closed)
        for index in sorted(closed):
            buffer, filled, bounds = closed[index]
            m, mv = self._metrics, (self.served.name, self.served.version)
            m.drift_windows.labels(*mv).inc()
            m.drift_window_end.labels(*mv).set(bounds[1])
            # Windows closing faster than the thread ticks: drift tests only the latest.
            latest = index == max(closed)
            self.skipped += not latest
            inputs, outputs = ({k: v[:filled] for k, v in part.items()} for part in buffer)
            try:
                self._test(index, bounds, inputs, outputs, drift=latest)
            finally:
                with self.lock:
                    self._free.append(buffer)
                    if latest:
                        self._testing = None

    def _test(
        self,
        index: int,
        bounds: tuple[float, float, str, int],
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        drift: bool,
    ) -> None:
        """Tests one closed window's kept rows (drift too if `drift`) and publishes its results
        (gauges; `self.last` when drift was tested)."""
        rows = len(next(iter(outputs.values())))
        start, end, why, served = bounds
        result: dict[str, Any] = {
            "window": {
                "index": index,
                "rows": served,
                "sampled_rows": rows,  # the rows tested: all but beyond MAX_WINDOW_BYTES
                "capped_by_memory": rows < served,
                "start": start,
                "end": end,
                "closed_by": why,
            }
        }
        result.update(self._predictions(outputs, rows))
        if not drift:
            return
        result["drift"] = self._drift(inputs, outputs)
        if self.predictions is not None:
            with self.lock:
                realized = self.predictions.realized(self.window)
            self._set_realized(realized)
        self.last = result

    def _predictions(self, outputs: dict[str, np.ndarray], rows: int) -> dict[str, Any]:
        """Predicted-class shares, confidence and the CBPE estimate of one window."""
        m, mv = self._metrics, (self.served.name, self.served.version)
        part: dict[str, Any] = {"predictions": None, "confidence": None}
        if self.label_output is not None:
            names = self.served.outputs[self.label_output]["names"]
            counts = np.bincount(outputs[self.label_output].reshape(-1), minlength=len(names))
            shares = counts[: len(names)] / max(rows, 1)
            part["predictions"] = {"shares": dict(zip(names, shares.tolist(), strict=True))}
            for name, share in zip(names, shares.tolist(), strict=True):
                m.prediction_share.labels(*mv, name).set(share)
        if self.probability_output is not None:
            top = np.asarray(outputs[self.probability_output], np.float64).max(axis=-1)
            m.confidence.observe(mv, top)
            estimate = float(top.mean())
            m.estimated_accuracy.labels(*mv).set(estimate)
            part["confidence"] = {
                "mean": estimate,
                "quantiles": dict(
                    zip(("p05", "p50", "p95"), np.quantile(top, [0.05, 0.5, 0.95]).tolist())
                ),
            }
        return part

    def prepare(self) -> None:
        """Reads the export's reference sample into the drift process (here, without a pool),
        starting that process for the first model: seconds (spawning, importing the tests), so
        the server calls it off the event loop while the model compiles, and does not wait for
        it to mark the model ready. A second caller (the first window's drift test) waits for
        the first. An export without a sample, or a sample that fails its check: one line,
        once."""
        with self._prepare_lock:
            if not self._reference_tried:
                self._reference_tried = True
                self._prepare()

    def _prepare(self) -> None:
        try:
            if self._pool is None:
                from ann.monitor.drift import Reference

                self.reference = Reference.from_model(self.served.model)
            else:  # read in the drift process, which keeps it
                m = self.served.model
                view = types.SimpleNamespace(
                    directory=m.directory, manifest=m.manifest, inputs=m.inputs, outputs=m.outputs
                )
                with _signals_blocked():  # the first submit spawns the drift process
                    future = self._pool.submit(_load_reference, self._key, view)
                future.result()
                self.reference = self._key
        except Exception as e:  # an old export, or a reference that fails its check
            self.drift_unavailable = f"{type(e).__name__}: {e}"
            if getattr(self._pool, "stopped", False):  # the server's stop ended it (`_end`)
                return
            log.warning(
                "model %s version %s: drift unavailable (%s); shares, confidence and feedback "
                "go on",
                self.served.name,
                self.served.version,
                self.drift_unavailable,
            )

    def _drift(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> Any:
        """The window's `DriftResult.to_json()`, gauges set; None when drift is unavailable."""
        self.prepare()
        if self.reference is None:
            return None
        tests = (self.drift_min_rows, self.multivariate, self.correction)
        if self._pool is None:
            result, histograms = _window_drift(self.reference, inputs, outputs, *tests)
        else:  # the monitoring thread waits without the GIL; the tests hold another process's
            try:
                future = self._pool.submit(_detect, self._key, inputs, outputs, *tests)
                result, histograms = future.result()
            except concurrent.futures.BrokenExecutor:
                # The drift process ended (killed, out of memory): drift was unavailable for the
                # server's life. A new one, the reference read into it again, this window tested.
                if self.replace_pool is None:
                    raise
                self.replace_pool(self._pool)
                self.prepare()
                if self.reference is None:
                    return None
                future = self._pool.submit(_detect, self._key, inputs, outputs, *tests)
                result, histograms = future.result()
        self._set_drift(result)
        self._set_histograms(histograms)
        return result.to_json()

    def _set_drift(self, result: Any) -> None:
        """ann_drift_score (top features, outputs, multivariate), share and detected; for a
        window of too few rows (not tested) no scores, and share and detected NaN: the drift
        alert (`ann_drift_detected == 1`) cannot fire on it."""
        m, mv = self._metrics, (self.served.name, self.served.version)
        top = result.top(TOP_FEATURES)  # most past their thresholds, across methods
        shown = [(f.feature, f) for f in [*top, *result.outputs]]  # outputs: "output:NAME"
        if result.multivariate is not None:
            shown.append(("multivariate", result.multivariate))
        labels = set()
        for feature, test in shown:
            m.drift_score.labels(*mv, feature, test.method).set(test.score)
            m.drift_strength.labels(*mv, feature, test.method).set(test.strength)
            labels.add((feature, test.method))
        for stale in self._drift_labels - labels:  # features no longer in the top
            for gauge in (m.drift_score, m.drift_strength):
                try:
                    gauge.remove(*mv, *stale)
                except KeyError:
                    pass
        self._drift_labels = labels
        judged = result.detected is not None
        m.drift_share.labels(*mv).set(result.share if judged else math.nan)
        m.drift_detected.labels(*mv).set((1 if result.detected else 0) if judged else math.nan)

    def _set_histograms(self, histograms: dict[str, tuple]) -> None:
        """ann_feature_bin_share_ratio: reference and current shares per bin of the top features
        (`_window_drift`: feature -> (bin names, reference shares, current shares)); series of
        features or bins no longer shown are removed."""
        gauge, mv = self._metrics.feature_bin_share, (self.served.name, self.served.version)
        labels = set()
        for feature, (bins, reference, current) in histograms.items():
            for i, name in enumerate(bins):
                for source, shares in (("reference", reference), ("current", current)):
                    gauge.labels(*mv, feature, name, source).set(float(shares[i]))
                    labels.add((feature, name, source))
        for stale in self._bin_labels - labels:
            try:
                gauge.remove(*mv, *stale)
            except KeyError:
                pass
        self._bin_labels = labels

    # -- GET .../monitor -----------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """The last closed window's results, the open window, feedback and the model's age."""
        with self.lock:
            # What closes it, said beside its rows (a window of 40 rows said not when it would
            # be tested): `closes_at_rows`, or `closes_after_seconds` of being open once it holds
            # `min_rows` (the thread's `step`).
            open_window = {
                "index": self.window,
                "rows": self._rows,
                "open_seconds": round(time.monotonic() - self._opened[0], 1),
                "closes_at_rows": self.rows_per_window,
                "closes_after_seconds": self.seconds,
                "min_rows": self.min_rows,
            }
            # The latest window whose tests have not published: full (closed at the thread's
            # next tick), closed, or under test (the first waits for the drift process to
            # start). `window` was null, or the one before, with no word of it.
            waiting = [
                *self._closed,
                *([self.window] if self._rows >= self.rows_per_window else []),
            ]
            testing = max(waiting, default=self._testing)
            store = self.predictions
            realized = store.realized(self.window) if store is not None else None
            feedback = (
                {
                    "capacity": store.capacity,
                    "kept": len(store),
                    "labels": store.total[1],
                    "min_labels": store.min_labelled,
                    "unmatched": dict(store.unmatched),
                }
                if store is not None
                else None
            )
        last = self.last or {}
        confidence = last.get("confidence")
        return {
            "monitor": "on",
            "window": last.get("window"),
            "open_window": open_window,
            "testing_window": testing,
            "drift": last.get("drift"),
            "drift_unavailable": self.drift_unavailable,
            "predictions": last.get("predictions"),
            "confidence": confidence,
            "accuracy": {
                "estimated": confidence["mean"] if confidence else None,
                "estimated_assumptions": ESTIMATE_ASSUMPTIONS,
                "realized": realized,
            },
            "feedback": feedback,
            "skipped_windows": self.skipped,
            "model_age_seconds": time.time() - self.created if self.created else None,
        }

    def use_pool(self, pool: concurrent.futures.Executor) -> None:
        """Takes `pool`, a new drift process (`Monitoring.replace_pool`): the reference is read
        into it again at the next `prepare`."""
        with self._prepare_lock:
            self._pool = pool
            self._reference_tried, self.reference, self.drift_unavailable = False, None, None

    def forget(self) -> None:
        """Removes this version's monitoring series (the model was unloaded)."""
        m, mv = self._metrics, (self.served.name, self.served.version)
        for metric in (m.drift_score, m.drift_strength, m.feature_bin_share, m.prediction_share,
                       m.realized_accuracy, m.feedback_unmatched):  # fmt: skip
            for labels in list(metric._metrics):  # prometheus_client keeps children there
                if labels[:2] == mv:
                    metric.remove(*labels)
        plain = (m.drift_share, m.drift_detected, m.drift_windows, m.drift_window_end,
                 m.confidence, m.estimated_accuracy, m.feedback_labels, m.model_age)  # fmt: skip
        for metric in plain:
            try:
                metric.remove(*mv)
            except KeyError:
                pass


# -- the drift process ------------------------------------------------------------------------

_REFERENCES: dict[str, Any] = {}  # in the drift process: "name/version" -> Reference


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """SIGINT (and SIGTERM: `_STOP_SIGNALS`) blocked in the calling thread (any thread: the main
    thread handles the server's signals meanwhile), so that a process spawned here starts with
    them blocked: a Ctrl-C while it imports, before `_start_drift_process` ignores SIGINT, would
    print its traceback; SIGTERM stays blocked in every thread of it, for its watch thread to
    take (`_exit_with_server`)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, *_STOP_SIGNALS})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _start_drift_process(server: int, cache: tuple[str, float] | None = None) -> None:
    """The drift process's start: SIGINT ignored (a terminal's Ctrl-C goes to the whole process
    group; the server drains and then stops this process, which printed a KeyboardInterrupt
    traceback of its own), a watch that ends it when the server (pid `server`) is gone, the
    lowest CPU priority, JAX on the CPU only (the drift tests never take an accelerator from
    the model), the server's compilation cache (`cache`: its directory and bound, as
    `compilation_cache.current` gives them; `--monitor_multivariate=on`'s MMD test compiled 4
    executables at its first window, 4.2-5.5 s at each start, 1.0 s read from the cache), the
    tests imported."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Blocked already where the server spawned it (`_signals_blocked`); here too for a pool
    # used otherwise, before any thread of ours (they inherit it).
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    threading.Thread(
        target=_exit_with_server, args=(server,), name="server-watch", daemon=True
    ).start()
    # Spawned with SIGINT blocked (`_signals_blocked`): one that came before the line above
    # stayed pending, and is now discarded. SIGTERM stays blocked: the watch thread takes it.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    os.environ["JAX_PLATFORMS"] = "cpu"
    try:
        os.nice(NICE)
    except OSError:
        pass
    if cache is not None:
        from ann import compilation_cache

        try:
            compilation_cache.enable(cache[0], "the server's cache", "", cache[1])
            compilation_cache.guard_writes()  # `_exit_with_server` leaves no entry half written
        except ValueError:  # gone since the server checked it: the tests compile as before
            pass
    import ann.monitor.drift  # noqa: F401


def _exit_with_server(server: int) -> None:
    """Ends the drift process once the server is gone, or at once when told to (SIGTERM, from
    `Monitoring.stop`: a drift test in progress is not waited for, a compilation-cache write in
    progress is; the server's stop waited for the test to end, seconds at niceness 19 on a busy
    node, and for the interpreter's exit with JAX loaded, 1.5 s idle). A server killed outside
    its control
    (SIGKILL, out of memory) never stops its pool: the drift process (about 240 MB) and
    multiprocessing's resource tracker (which exits once the last process holding its pipe is
    gone) lived on under PID 1. The server's pid is checked against the parent's every
    PARENT_CHECK_SECONDS (a pid handed in, not read here: a server that died before this
    process started is caught too), as ann/train/launcher.py watches a launcher. Not Linux's
    PR_SET_PDEATHSIG: Linux only, through ctypes, and it fires when the *thread* that spawned
    the child ends, here the short-lived thread that runs the first model's `prepare`."""
    while os.getppid() == server:
        if not _STOP_SIGNALS:
            time.sleep(PARENT_CHECK_SECONDS)
        elif signal.sigtimedwait(_STOP_SIGNALS, PARENT_CHECK_SECONDS) is not None:
            break
    try:  # a compilation-cache write in progress ends first (`_start_drift_process`)
        stop_writes = getattr(sys.modules.get("ann.compilation_cache"), "stop_writes", None)
        if stop_writes is not None:  # None too while the start still imports it
            stop_writes(timeout=2.0)
    finally:
        os._exit(1)


def _load_reference(key: str, model: Any) -> None:
    """Reads a model's reference sample into the drift process (`Reference.from_model`)."""
    from ann.monitor.drift import Reference

    _REFERENCES[key] = Reference.from_model(model)


def _window_drift(
    reference: Any,
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    min_rows: int,
    multivariate: bool = False,
    correction: str = "none",
) -> tuple[Any, dict[str, tuple]]:
    """A window's `DriftResult` and the histograms of its top features, feature -> (bin names,
    reference shares, current shares) (`Reference.detect`; `Reference.histograms` named by
    `bin_names`, and a categorical input's `Reference.category_histograms`; with the MMD test
    when `multivariate`, the p-values corrected by `correction`); none for a window of fewer
    than `min_rows` rows (not tested)."""
    result = reference.detect(
        inputs, outputs, multivariate=multivariate, min_rows=min_rows, correction=correction
    )
    top = [f.feature for f in result.top(TOP_FEATURES)]
    # Numeric features on 10 equal bins; a categorical input (an LM's tokens) on its 9
    # categories that moved most and the rest (its panel stayed empty while tokens drifted).
    numeric = {
        feature: (bin_names(edges), reference_shares, current_shares)
        for feature, (edges, reference_shares, current_shares) in reference.histograms(
            inputs, top
        ).items()
    }
    return result, {**numeric, **reference.category_histograms(inputs, top)}


def _detect(
    key: str,
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    min_rows: int,
    multivariate: bool = False,
    correction: str = "none",
) -> tuple[Any, dict[str, tuple]]:
    """`_window_drift` in the drift process, against the reference it keeps for `key`."""
    return _window_drift(_REFERENCES[key], inputs, outputs, min_rows, multivariate, correction)


class _SpawnContext(multiprocessing.context.SpawnContext):
    """multiprocessing's spawn context, keeping the processes it makes (`processes`): the pool's
    worker, which `Monitoring.stop` ends without waiting for its work."""

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[multiprocessing.process.BaseProcess] = []

    def Process(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 (multiprocessing's name)
        process = super().Process(*args, **kwargs)
        self.processes.append(process)
        return process


def _drift_pool() -> concurrent.futures.ProcessPoolExecutor:
    """The drift process: one spawned worker (`_start_drift_process`), which ends with the
    server and uses its compilation cache, if any; its processes in `pool.started` (the
    context's list)."""
    from ann import compilation_cache

    context = _SpawnContext()
    pool = concurrent.futures.ProcessPoolExecutor(
        1,
        mp_context=context,
        initializer=_start_drift_process,
        initargs=(os.getpid(), compilation_cache.current()),
    )
    pool.started = context.processes  # type: ignore[attr-defined]
    return pool


def _end(pool: concurrent.futures.Executor, wait: bool) -> None:
    """Ends `pool`'s drift process without waiting for its work: queued tests cancelled, the
    worker told to end (SIGTERM: it ends at once, or after a compilation-cache write in progress,
    `_exit_with_server`) and, with `wait`, waited for at most STOP_SECONDS, then killed (one
    still starting: nothing written yet)."""
    pool.stopped = True  # type: ignore[attr-defined]  # a test it breaks is no failure
    processes = list(getattr(pool, "started", []))
    for process in processes:
        if process.is_alive():
            process.terminate()
    if wait:
        deadline = time.monotonic() + STOP_SECONDS
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
    # The pool's own shutdown is waited for (with wait=False, the interpreter's exit could wake
    # the pool's manager through a pipe it had already closed: "OSError: [Errno 9] Bad file
    # descriptor" in concurrent.futures' atexit hook, a traceback on Ctrl-C, once in a CI run);
    # its worker has ended, so this is prompt.
    pool.shutdown(wait=wait, cancel_futures=True)


class _Stopped(Exception):
    """A drift test's process ended by `Monitoring.stop`."""


class Monitoring:
    """The background thread handling every `ModelMonitor`'s closed windows, and the process
    that runs their drift tests (`pool`: one worker, started by the first model's `prepare`).

    The tests run in a process of their own, not in the thread, because of the GIL: run in
    the server process, their many short NumPy and SciPy calls handed the GIL back and forth
    with the event loop, and the event loop's CPU per request rose by about 10 µs while the
    tests themselves took 4 (measured per thread; throughput at c=32 fell 8-19%)."""

    def __init__(self) -> None:
        self.monitors: dict[tuple[str, str], ModelMonitor] = {}
        self.pool = _drift_pool()
        self._pool_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, monitor: ModelMonitor) -> None:
        self.monitors[(monitor.served.name, monitor.served.version)] = monitor
        monitor.replace_pool = self.replace_pool

    def replace_pool(self, broken: concurrent.futures.Executor) -> None:
        """Starts a new drift process where `broken`'s ended (once, whichever model found it)
        and hands it to every model's monitor, which reads its reference into it again."""
        with self._pool_lock:
            if self._stop.is_set():  # `stop` ended it: not replaced, the window not tested
                raise _Stopped()
            if self.pool is not broken:
                return  # another model's test replaced it already
            broken.shutdown(wait=False, cancel_futures=True)
            self.pool = _drift_pool()
            log.warning("the drift process ended; started a new one (the references read again)")
            for monitor in list(self.monitors.values()):
                monitor.use_pool(self.pool)

    def remove(self, monitor: ModelMonitor) -> None:
        self.monitors.pop((monitor.served.name, monitor.served.version), None)
        monitor.forget()

    def start(self) -> None:
        """Starts the thread (a daemon: it holds nothing that must outlive the server)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:  # Linux: per-thread niceness; serving comes first when the cores are busy
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        except (AttributeError, OSError):
            pass
        failed: set[tuple[str, str]] = set()
        while not self._stop.wait(TICK_SECONDS):
            self.step(failed)

    def step(self, failed: set[tuple[str, str]] | None = None) -> None:
        """One pass over every model (the thread's body; tests call it directly)."""
        for key, monitor in list(self.monitors.items()):
            try:
                monitor.step()
            except Exception:  # a failing test must not stop the others; logged once a model
                if self._stop.is_set():  # the drift process ended by `stop`: nothing failed
                    return
                if failed is None or key not in failed:
                    log.exception("monitoring %s version %s failed", *key)
                    if failed is not None:
                        failed.add(key)

    def stop(self, wait: bool = True) -> None:
        """Stops the windows' thread and the drift process, without waiting for a drift test
        (queued ones cancelled, a running one abandoned: its window is not tested; the stop
        waited for it, 1.5-4 s at niceness 19 on a busy node, trial 42a M3): the process is
        told to end and, with `wait`, waited for at most STOP_SECONDS (only one still starting,
        or in a compilation-cache write, takes that long), then killed. `wait=False`: only for
        a process that ends without the interpreter's exit (`app.leave_now`)."""
        with self._pool_lock:
            self._stop.set()
            pool = self.pool
        _end(pool, wait)
        if self._thread is not None:  # its drift test, if any, ended with the process
            self._thread.join(5)
