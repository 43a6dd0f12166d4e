"""Prometheus metrics of the server, in base units (seconds), named `ann_*`.

| name | type | labels | what |
|---|---|---|---|
| `ann_request_duration_seconds` | histogram | model, version | infer requests, body read to reply |
| `ann_failed_request_duration_seconds` | histogram | model, version | infers refused or failed |
| `ann_queue_seconds` | histogram | model, version | time a request waited for its batch |
| `ann_compute_seconds` | histogram | model, version | one batch: pad and run |
| `ann_batch_size` | histogram | model, version | real rows per batch |
| `ann_batch_padding_rows_total` | counter | model, version | rows added to reach a bucket |
| `ann_batch_executions_total` | counter | model, version, batch_size | batches run per size |
| `ann_batch_phase_seconds_total` | counter | model, version, batch_size, phase | see below |
| `ann_requests_total` | counter | model, version, code | every HTTP request by status |
| `ann_errors_total` | counter | code, reason | refusals: json, shape, ..., header_timeout, ... |
| `ann_queue_depth` | gauge | model, version | rows waiting |
| `ann_model_info` | gauge (1) | model, version, platforms, source | what is loaded |
| `ann_ready` | gauge | | 1 when every model is compiled and the server not draining |
| `ann_connections` | gauge | | client connections open on the main port |
| `ann_request_log_dropped_total` | counter | | sampled records dropped (the writer fell behind) |

Batch phases: `input` assembling the padded batch, `infer` the model run, `output` splitting the
outputs back into requests (`ann_compute_seconds` is input + infer).

`model` and `version` are only ever names the server loaded (or empty), and `batch_size` one of
its compiled sizes, so a client cannot blow up the label cardinality with made-up names. The
statistics extension (`GET /v2/models/stats`) is computed from these series, so the two agree.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

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
            "ann_requests", "HTTP requests by status code.", (*mv, "code"), registry=r
        )
        self.errors = Counter(
            "ann_errors", "Refused requests by status and reason.", ("code", "reason"), registry=r
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

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every current sample: (name, sorted labels) -> value, read in one pass."""
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in self.registry.collect()
            for s in metric.samples
        }
