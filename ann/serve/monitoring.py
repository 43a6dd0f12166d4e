"""Watching served models: sliding windows of what they serve, tested for drift off the
request path, and late labels joined to their predictions (`feedback.Predictions`).

On the request path (the event loop), an answered infer costs one `ModelMonitor.record`: a
lock, a clock read, appending references to the request's inputs and outputs to a bounded
queue, and, when the request has an `id`, keeping its predicted classes for a later label.
Nothing is copied, tested or encoded there. One background thread (`Monitoring`) drains the
queues every `TICK_SECONDS`, assembles each closed window and tests it: drift by the export's
reference sample (`ann.monitor.drift.Reference.from_model(model).detect`, Evidently's
defaults), predicted-class shares, confidence, and the CBPE-style estimate; then it sets the
gauges (ann/serve/metrics.py) and keeps the results for `GET .../monitor`.

Windows, per model version: a window closes once it holds `--monitor_window_rows` rows (1,000),
or after `--monitor_window_seconds` (60) once it holds at least min(100, rows) rows: fewer rows
make drift tests that mostly report noise (a distance over a handful of rows is large by
chance). Memory: the open window and the one being tested, each about `monitor_window_rows`
rows of inputs and outputs (the digits' 64 bytes + 44 bytes of outputs per row: 0.1 MB), plus a
queue of at most 4 windows' requests the thread has not drained (older requests are dropped
from it when it lags, counted in `dropped`); and the feedback store (`feedback`).

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
import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ann.serve.feedback import REASONS, Predictions

if TYPE_CHECKING:
    from ann.serve.metrics import Metrics
    from ann.serve.settings import Settings

log = logging.getLogger("ann.serve")

TICK_SECONDS = 0.2  # how often the thread looks for closed windows
MIN_ROWS = 100  # a window closed by time holds at least min(MIN_ROWS, window rows) rows
TOP_FEATURES = 10  # features exported in ann_drift_score
ESTIMATE_ASSUMPTIONS = (
    "expected accuracy = mean top-class probability (CBPE); assumes calibrated probabilities "
    "and no concept drift (only the inputs moved); optimistic otherwise"
)


def _class_outputs(outputs: dict[str, dict[str, Any]]) -> tuple[str | None, str | None]:
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


def created_time(manifest: dict[str, Any]) -> float | None:
    """The manifest's `created` (`2026-12-01T03:00:00Z`, UTC) as Unix seconds, or None."""
    created = manifest.get("created")
    try:
        return float(calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


class ModelMonitor:
    """The windows and feedback of one served model version: `served` is its
    `dataplane.ServedModel` (name, version, outputs, model; not imported: dataplane imports
    this module)."""

    def __init__(self, served: Any, settings: Settings, metrics: Metrics):
        self.served = served
        self.rows_per_window = settings.monitor_window_rows
        self.seconds = settings.monitor_window_seconds
        self.min_rows = min(MIN_ROWS, self.rows_per_window)
        self.label_output, self.probability_output = _class_outputs(served.outputs)
        names = served.outputs[self.label_output]["names"] if self.label_output else []
        self.predictions = (
            Predictions(settings.monitor_feedback_capacity, names) if self.label_output else None
        )
        self.lock = threading.Lock()
        self._queue: collections.deque = collections.deque(maxlen=4 * self.rows_per_window)
        self.dropped = 0
        self.window = 0  # the open window's index
        self._rows = 0  # rows in the open window
        self._opened = time.monotonic(), time.time()
        self._bounds: dict[int, tuple[float, float, str]] = {}  # index -> start, end, why
        self._buffers: dict[int, list[tuple]] = {}  # thread only: drained requests by window
        self.last: dict[str, Any] | None = None  # the last closed window's results
        self.reference: Any = None
        self.drift_unavailable: str | None = None
        self._reference_tried = False
        self._drift_labels: set[tuple[str, str]] = set()
        self._metrics = metrics
        self._bind(metrics, served.name, served.version)

    def _bind(self, metrics: Metrics, name: str, version: str) -> None:
        """Children bound once (a labels() lookup per use costs more than the use)."""
        mv = (name, version)
        self._labels_counter = metrics.feedback_labels.labels(*mv)
        self._unmatched = {r: metrics.feedback_unmatched.labels(*mv, r) for r in REASONS}
        self._realized = {w: metrics.realized_accuracy.labels(*mv, w) for w in ("last", "total")}
        self.created = created_time(self.served.model.manifest)
        if self.created is not None:
            created = self.created
            metrics.model_age.labels(*mv).set_function(lambda: time.time() - created)

    # -- the request path (event loop) ---------------------------------------------------------

    def record(
        self,
        request_id: str | None,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        rows: int,
    ) -> None:
        """One answered infer: its arrays by reference (never changed after), its window."""
        with self.lock:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            window = self.window
            self._queue.append((window, inputs, outputs))
            self._rows += rows
            if self._rows >= self.rows_per_window:
                self._close("rows")
            if request_id is not None and self.predictions is not None:
                self.predictions.record(request_id, outputs[self.label_output], window)

    def _close(self, why: str) -> None:
        """Closes the open window (under the lock): the next request opens the next one."""
        start = self._opened[1]
        self._opened = time.monotonic(), time.time()
        self._bounds[self.window] = (start, self._opened[1], why)
        self.window += 1
        self._rows = 0

    def feedback(self, body: Any) -> dict[str, Any]:
        """Joins a parsed JSON feedback body (`feedback.Predictions.parse`); the reply."""
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
            joined = self.predictions.join(items)
            realized = self.predictions.realized(self.window)
        self._labels_counter.inc(joined["matched"])
        for reason, n in joined["unmatched"].items():
            if n:
                self._unmatched[reason].inc(n)
        self._set_realized(realized)
        return {**joined, "accuracy": realized}

    def _set_realized(self, realized: dict[str, Any]) -> None:
        for window, value in realized.items():
            if value is not None:
                self._realized[window].set(value["accuracy"])

    # -- the background thread -----------------------------------------------------------------

    def step(self) -> None:
        """Closes a window that is old enough, then tests every closed window drained so far."""
        with self.lock:
            if self._rows >= self.min_rows and time.monotonic() - self._opened[0] >= self.seconds:
                self._close("seconds")
            open_window = self.window
        queue, buffers = self._queue, self._buffers
        while queue:
            item = queue.popleft()
            buffers.setdefault(item[0], []).append(item)
        for index in sorted(w for w in buffers if w < open_window):
            items = buffers.pop(index)
            with self.lock:
                bounds = self._bounds.pop(index, (0.0, 0.0, "rows"))
            self._test(index, bounds, items)

    def _test(self, index: int, bounds: tuple[float, float, str], items: list[tuple]) -> None:
        """Tests one closed window and publishes its results (gauges and `self.last`)."""
        inputs = {k: np.concatenate([it[1][k] for it in items]) for k in items[0][1]}
        outputs = {k: np.concatenate([it[2][k] for it in items]) for k in items[0][2]}
        rows = len(next(iter(inputs.values())))
        start, end, why = bounds
        result: dict[str, Any] = {
            "window": {"index": index, "rows": rows, "start": start, "end": end, "closed_by": why}
        }
        result.update(self._predictions(outputs, rows))
        result["drift"] = self._drift(inputs, outputs)
        if self.predictions is not None:
            with self.lock:
                realized = self.predictions.realized(self.window)
            self._set_realized(realized)
        m, mv = self._metrics, (self.served.name, self.served.version)
        m.drift_windows.labels(*mv).inc()
        m.drift_window_end.labels(*mv).set(end)
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

    def _drift(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> Any:
        """The window's `DriftResult.to_json()`, gauges set; None when drift is unavailable."""
        if not self._reference_tried:
            self._reference_tried = True
            try:
                from ann.monitor.drift import Reference

                self.reference = Reference.from_model(self.served.model)
            except Exception as e:  # an old export, or no drift module: say so once
                self.drift_unavailable = f"{type(e).__name__}: {e}"
                log.warning(
                    "model %s version %s: drift unavailable (%s); shares, confidence and "
                    "feedback go on",
                    self.served.name,
                    self.served.version,
                    self.drift_unavailable,
                )
        if self.reference is None:
            return None
        result = self.reference.detect(inputs, outputs)
        self._set_drift(result)
        return result.to_json()

    def _set_drift(self, result: Any) -> None:
        """ann_drift_score (top features, outputs, multivariate), share and detected."""
        m, mv = self._metrics, (self.served.name, self.served.version)
        top = result.top(TOP_FEATURES)  # most past their thresholds, across methods
        shown = [(f.feature, f.method, f.score) for f in top]
        shown += [(f.feature, f.method, f.score) for f in result.outputs]  # "output:NAME"
        if result.multivariate is not None:
            shown.append(("multivariate", result.multivariate.method, result.multivariate.score))
        labels = set()
        for feature, method, score in shown:
            m.drift_score.labels(*mv, feature, method).set(score)
            labels.add((feature, method))
        for stale in self._drift_labels - labels:  # features no longer in the top
            try:
                m.drift_score.remove(*mv, *stale)
            except KeyError:
                pass
        self._drift_labels = labels
        m.drift_share.labels(*mv).set(result.share)
        m.drift_detected.labels(*mv).set(1 if result.detected else 0)

    # -- GET .../monitor -----------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """The last closed window's results, the open window, feedback and the model's age."""
        with self.lock:
            open_window = {"index": self.window, "rows": self._rows}
            store = self.predictions
            realized = store.realized(self.window) if store is not None else None
            feedback = (
                {
                    "capacity": store.capacity,
                    "kept": len(store),
                    "labels": store.total[1],
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
            "dropped": self.dropped,
            "model_age_seconds": time.time() - self.created if self.created else None,
        }

    def forget(self) -> None:
        """Removes this version's monitoring series (the model was unloaded)."""
        m, mv = self._metrics, (self.served.name, self.served.version)
        for metric in (m.drift_score, m.prediction_share, m.realized_accuracy,
                       m.feedback_unmatched):  # fmt: skip
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


class Monitoring:
    """The background thread testing every `ModelMonitor`'s closed windows."""

    def __init__(self) -> None:
        self.monitors: dict[tuple[str, str], ModelMonitor] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, monitor: ModelMonitor) -> None:
        self.monitors[(monitor.served.name, monitor.served.version)] = monitor

    def remove(self, monitor: ModelMonitor) -> None:
        self.monitors.pop((monitor.served.name, monitor.served.version), None)
        monitor.forget()

    def start(self) -> None:
        """Starts the thread (a daemon: it holds nothing that must outlive the server)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        failed: set[tuple[str, str]] = set()
        while not self._stop.wait(TICK_SECONDS):
            self.step(failed)

    def step(self, failed: set[tuple[str, str]] | None = None) -> None:
        """One pass over every model (the thread's body; tests call it directly)."""
        for key, monitor in list(self.monitors.items()):
            try:
                monitor.step()
            except Exception:  # a failing test must not stop the others; logged once a model
                if failed is None or key not in failed:
                    log.exception("monitoring %s version %s failed", *key)
                    if failed is not None:
                        failed.add(key)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
