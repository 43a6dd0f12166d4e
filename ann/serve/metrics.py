"""Prometheus metrics of the server, in base units (seconds), named `ann_*`.

| name | type | labels | what |
|---|---|---|---|
| `ann_request_duration_seconds` | histogram | model, version | infer requests, body read to reply |
| `ann_failed_request_duration_seconds` | histogram | model, version | infers refused or failed |
| `ann_queue_seconds` | histogram | model, version | time a request waited for its batch |
| `ann_compute_seconds` | histogram | model, version | one batch: pad and run |
| `ann_batch_size` | histogram | model, version | real rows per batch |
| `ann_inference_rows_total` | counter | model, version | rows of answered infers (200) |
| `ann_batch_padding_rows_total` | counter | model, version | rows added to reach a bucket |
| `ann_batch_executions_total` | counter | model, version, batch_size | batches run per size |
| `ann_batch_phase_seconds_total` | counter | model, version, batch_size, phase | see below |
| `ann_requests_total` | counter | model, version, handler, code | every HTTP request by status |
| `ann_errors_total` | counter | model, version, code, reason | json, shape, ..., header_timeout |
| `ann_queue_depth` | gauge | model, version | rows waiting |
| `ann_model_info` | gauge (1) | model, version, platforms, source | what is loaded |
| `ann_ready` | gauge | | 1 when every model is compiled and the server not draining |
| `ann_connections` | gauge | | client connections open on the main port |
| `ann_request_log_dropped_total` | counter | | sampled records dropped (the writer fell behind) |

And prometheus_client's standard process series (`process_resident_memory_bytes`,
`process_virtual_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`,
`process_max_fds`, `process_start_time_seconds`; Linux) and `python_info`.

`ann_requests_total`'s `handler` is the App method that answered (`infer`, `model_ready`,
`model_metadata`, ...; "" for a request refused before routing): the availability SLI counts
`handler="infer"` only. `ann_errors_total`'s model and version are "" for a request refused
before it named a model (HTTP limits and timeouts, an unknown route or model, a bad token).

Monitoring (`--monitor=on`, the default; ann/serve/monitoring.py; all labelled model, version):

| name | type | extra labels | what |
|---|---|---|---|
| `ann_drift_score` | gauge | feature, method | last window: top 10 features, `output:NAME`, ... |
| `ann_drift_strength` | gauge | feature, method | the same, past the threshold (>= 1: drifted) |
| `ann_feature_bin_share_ratio` | gauge | feature, bin, source | input histograms, see below |
| `ann_drift_share_ratio` | gauge | | drifted input features / all, last window (NaN: too few) |
| `ann_drift_detected` | gauge | | 1: dataset drift in the last window; 0: none; NaN: too few rows |
| `ann_drift_windows_total` | counter | | windows completed |
| `ann_drift_window_end_timestamp_seconds` | gauge | | when the last window closed (Unix) |
| `ann_prediction_share_ratio` | gauge | class | predicted-class shares in the last window |
| `ann_confidence_ratio` | histogram | | top-class probability per served row (15 bins in [0, 1]) |
| `ann_estimated_accuracy_ratio` | gauge | | mean top-class probability, last window (CBPE) |
| `ann_realized_accuracy_ratio` | gauge | window | `last` judged window, `total` (below) |
| `ann_feedback_labels_total` | counter | | labelled rows joined to their prediction |
| `ann_feedback_unmatched_total` | counter | reason | not joined: unknown, evicted, duplicate |
| `ann_model_age_seconds` | gauge | | now minus the manifest's `created` time (at scrape) |

No monitoring gauge reads 0 for "no value yet": the per-window series appear when the first
window closes, and `ann_realized_accuracy_ratio` is NaN until `--monitor_min_labels` rows are
labelled (`window="last"`: until a closed window has that many), as `/monitor`'s null; a PromQL
comparison with NaN is false, so an alert on it (`ann_realized_accuracy_ratio{window="last"} <
0.9`) cannot fire for a model that gets no labels, or a few.

`ann_drift_score`'s features: the top 10 input features by score, `output:NAME` for each output,
and `multivariate` (method mmd) with `--monitor_multivariate=on`.

`ann_feature_bin_share_ratio`: for the same top 10 input features of the last window, the share of
rows in each of 10 equal bins over the range of the reference and the window together
(`ann.monitor.drift.histogram`), `source="reference"` (the export's reference sample) and
`source="current"` (the window), on the same bins; each side sums to 1 per feature. `bin` is
the bin's ordinal and range, `"01 [0, 1.6)"` .. `"10 [14.4, 16]"`: the ordinal keeps the bins
in order where Grafana sorts by text. A categorical input (an LM's `tokens`: ids, no range to
cut) has the share of its values (all positions, padding excluded) per category instead: the
9 categories whose shares moved most, in id order, then the rest, `bin` `"01 'e'"` ..
`"10 (others)"` (`Reference.category_histograms`). At most 10 features x 10 bins x 2 sources =
200 series per model version; a feature that leaves the top 10 loses its series.

Batch phases: `input` assembling the padded batch, `infer` the model run, `output` splitting the
outputs back into requests (`ann_compute_seconds` is input + infer). `input` adds 0 for a batch
of one request of a compiled size, which needs no assembling (its arrays go to the run as they
came); the copy to the device is inside the run, so in `infer` (ann/serve/statistics.py).

`model` and `version` are only ever names the server loaded (or empty), and `batch_size` one of
its compiled sizes, so a client cannot blow up the label cardinality with made-up names. The
statistics extension (`GET /v2/models/stats`) is computed from these series, so the two agree.
"""

from __future__ import annotations

import threading

import numpy as np
from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
)

# ann_confidence_ratio: 15 equal bins over [0, 1], as ECE's (ann/metrics/calibration.py).
CONFIDENCE_BUCKETS = tuple(round(i / 15, 6) for i in range(1, 16))


class BulkHistogram(Collector):
    """A Prometheus histogram observed a whole array at a time (`observe`: one NumPy pass),
    for values counted off the request path by the thousand: prometheus_client's `Histogram`
    takes one value per call, about 2 µs each under the GIL the event loop needs."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...], buckets):
        self.name, self.documentation, self.labelnames = name, documentation, labels
        self.edges = np.asarray(buckets, np.float64)
        self._series: dict[tuple[str, ...], list] = {}  # labels -> [counts per bucket, sum]
        self._lock = threading.Lock()

    def observe(self, labels: tuple[str, ...], values: np.ndarray) -> None:
        """Counts `values` (any shape) into the series `labels`; the last bucket is +Inf."""
        values = np.asarray(values, np.float64).reshape(-1)
        index = np.searchsorted(self.edges, values, side="left")  # le: value <= edge
        counts = np.bincount(index, minlength=len(self.edges) + 1)
        with self._lock:
            series = self._series.setdefault(labels, [np.zeros(len(self.edges) + 1, np.int64), 0.0])
            series[0] += counts
            series[1] += float(values.sum())

    def remove(self, *labels: str) -> None:
        with self._lock:
            del self._series[labels]

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            series = [(k, v[0].cumsum(), v[1]) for k, v in self._series.items()]
        for labels, cumulative, total in series:
            les = [*(floatToGoString(e) for e in self.edges), "+Inf"]
            family.add_metric(list(labels), list(zip(les, cumulative.tolist())), total)
        yield family

    def describe(self):
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)


# prometheus_client's own process and platform collectors (its default registry's), in a
# registry of their own: the server's registry had none, so /metrics had no process_* series
# (trial 42a L4) and an operator could not alert on the server's memory or open files.
_PROCESS = CollectorRegistry()
_PROCESS.register(PROCESS_COLLECTOR)
_PROCESS.register(PLATFORM_COLLECTOR)


class Metrics:
    def __init__(self, max_batch_size: int):
        disable_created_metrics()  # `*_created` series double the output and nobody reads them
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        mv = ("model", "version")
        self.request_duration = Histogram(
            "ann_request_duration_seconds",
            "Infer request duration.",
            mv,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "ann_queue_seconds",
            "Time a request waited for its batch.",
            mv,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_seconds = Histogram(
            "ann_compute_seconds",
            "Time to run one batch.",
            mv,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        sizes = sorted({1 << i for i in range(max_batch_size.bit_length())} | {max_batch_size})
        self.batch_size = Histogram(
            "ann_batch_size", "Real rows per batch.", mv, buckets=sizes, registry=r
        )
        # Triton's inference_count: rows of successful requests only (a batch's rows include
        # one whose request was then refused, 422 for a non-finite output).
        self.inference_rows = Counter(
            "ann_inference_rows", "Rows of answered infer requests.", mv, registry=r
        )
        self.failed_duration = Histogram(
            "ann_failed_request_duration_seconds",
            "Infer requests refused or failed after their model was found.",
            mv,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_executions = Counter(
            "ann_batch_executions",
            "Batches run, by compiled batch size.",
            (*mv, "batch_size"),
            registry=r,
        )
        self.batch_phase_seconds = Counter(
            "ann_batch_phase_seconds",
            "Seconds per batch phase: input (padding), infer (the model), output (splitting).",
            (*mv, "batch_size", "phase"),
            registry=r,
        )
        self.padding = Counter(
            "ann_batch_padding_rows", "Rows of padding added to reach a bucket.", mv, registry=r
        )
        self.requests = Counter(
            "ann_requests",
            "HTTP requests by handler and status code.",
            (*mv, "handler", "code"),
            registry=r,
        )
        self.errors = Counter(
            "ann_errors",
            "Refused or failed requests by status and reason.",
            (*mv, "code", "reason"),
            registry=r,
        )
        self.queue_depth = Gauge("ann_queue_depth", "Rows waiting.", mv, registry=r)
        self.model_info = Gauge(
            "ann_model_info",
            "Loaded models (value 1).",
            (*mv, "platforms", "source"),
            registry=r,
        )
        self.ready = Gauge("ann_ready", "1 when the server is ready.", registry=r)
        self.connections = Gauge("ann_connections", "Open client connections.", registry=r)
        self.request_log_dropped = Counter(
            "ann_request_log_dropped",
            "Sampled request records dropped because the log writer fell behind.",
            registry=r,
        )

        self._monitoring(r, mv)

    def _monitoring(self, r: CollectorRegistry, mv: tuple[str, str]) -> None:
        """The monitoring series (table above)."""
        self.drift_score = Gauge(
            "ann_drift_score",
            "Drift score of the last window: top features, outputs, multivariate.",
            (*mv, "feature", "method"),
            registry=r,
        )
        # One scale for every method (the scores are a p-test's statistic or a distance, each
        # in its own units: a dashboard of them could not say which was past its threshold).
        self.drift_strength = Gauge(
            "ann_drift_strength",
            "How far past its drift threshold, comparable across methods (>= 1: drifted): "
            "distance / threshold, or log(p) / log(threshold) for p-value tests.",
            (*mv, "feature", "method"),
            registry=r,
        )
        self.feature_bin_share = Gauge(
            "ann_feature_bin_share_ratio",
            "Share of rows per bin of a top drifted input feature, last window (source=current) "
            "and the export's reference sample (source=reference), on the same bins.",
            (*mv, "feature", "bin", "source"),
            registry=r,
        )
        self.drift_share = Gauge(
            "ann_drift_share_ratio",
            "Share of drifted input features, last window (NaN: too few rows to judge).",
            mv,
            registry=r,
        )
        self.drift_detected = Gauge(
            "ann_drift_detected",
            "1 when the last window drifted (dataset drift), 0 when not; NaN: too few rows.",
            mv,
            registry=r,
        )
        self.drift_windows = Counter(
            "ann_drift_windows", "Monitoring windows completed.", mv, registry=r
        )
        self.drift_window_end = Gauge(
            "ann_drift_window_end_timestamp_seconds",
            "When the last monitoring window closed (Unix time).",
            mv,
            registry=r,
        )
        self.prediction_share = Gauge(
            "ann_prediction_share_ratio",
            "Predicted-class shares in the last window.",
            (*mv, "class"),
            registry=r,
        )
        self.confidence = BulkHistogram(
            "ann_confidence_ratio", "Top-class probability of served rows.", mv, CONFIDENCE_BUCKETS
        )
        r.register(self.confidence)
        self.estimated_accuracy = Gauge(
            "ann_estimated_accuracy_ratio",
            "Mean top-class probability of the last window (CBPE-style estimate).",
            mv,
            registry=r,
        )
        self.realized_accuracy = Gauge(
            "ann_realized_accuracy_ratio",
            "Accuracy of labelled predictions: window=last (latest closed window with labels) "
            "or total (since start).",
            (*mv, "window"),
            registry=r,
        )
        self.feedback_labels = Counter(
            "ann_feedback_labels", "Labelled rows joined to their prediction.", mv, registry=r
        )
        self.feedback_unmatched = Counter(
            "ann_feedback_unmatched",
            "Labels not joined, by reason (unknown, evicted, duplicate).",
            (*mv, "reason"),
            registry=r,
        )
        self.model_age = Gauge(
            "ann_model_age_seconds",
            "Seconds since the model was exported (manifest 'created').",
            mv,
            registry=r,
        )

    def render(self) -> bytes:
        """The /metrics text: the `ann_*` series, then prometheus_client's standard process and
        platform series (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
        `process_open_fds`, `process_max_fds`, `python_info`, ...; under 1 ms a scrape on a slow
        2-core machine), not in `registry`, so `samples` (the statistics extension) does not
        read /proc."""
        return generate_latest(self.registry) + generate_latest(_PROCESS)

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every current sample: (name, sorted labels) -> value, read in one pass."""
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in self.registry.collect()
            for s in metric.samples
        }
