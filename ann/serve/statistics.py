"""Triton's statistics extension (`GET /v2/models[/{name}[/versions/{v}]]/stats`), computed
from the server's Prometheus series, so a scrape of /metrics and the statistics agree:

| statistic | from |
|---|---|
| `inference_stats.success` count, ns | `ann_request_duration_seconds` count, sum |
| `inference_stats.fail` count, ns | `ann_failed_request_duration_seconds` count, sum |
| `inference_stats.queue` count, ns | `ann_queue_seconds` count, sum |
| `inference_stats.compute_*` | `ann_batch_phase_seconds_total{phase}` (count: batches) |
| `execution_count` | `ann_batch_size` count (batches) |
| `inference_count` | `ann_inference_rows_total` (rows of answered requests) |
| `batch_stats[]` per compiled size | `ann_batch_executions_total`, the phase seconds |

Nanoseconds are the seconds' sums times 1e9, rounded. Compute phases count batches, not
requests (a batch runs once for all its requests). `compute_input` is what ann does to a batch's
inputs before the run: assembling its padded arrays on the host (several requests, or rows short
of the compiled size). A batch of one request of a compiled size needs none and is passed to the
run as it came, so its `compute_input` is 0 ns, not unmeasured; the copy to the device, which
Triton counts under `compute_input`, happens inside the compiled call and is in `compute_infer`.
`last_inference`: milliseconds since the epoch of the model's last batch, 0 before any. The
response cache is not implemented, so `cache_hit` and `cache_miss` are zero. `inference_count`
counts the rows of answered requests, as Triton counts successful inferences: the batches' rows
(`ann_batch_size_sum`) also hold a row whose request was then refused (a non-finite output,
422).
"""

from __future__ import annotations

from typing import Any

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
PHASES = ("input", "infer", "output")


def model_statistics(m: Any, samples: Samples) -> dict[str, Any]:
    """One model version's statistics in Triton's JSON shape; `samples` from
    `Metrics.samples()`."""
    mv = (("model", m.name), ("version", m.version))

    def value(name: str, *extra: tuple[str, str]) -> float:
        return samples.get((name, tuple(sorted((*mv, *extra)))), 0.0)

    def duration(histogram: str) -> dict[str, int]:
        return {
            "count": int(value(f"{histogram}_count")),
            "ns": round(value(f"{histogram}_sum") * 1e9),
        }

    buckets = sorted(
        int(dict(labels)["batch_size"])
        for name, labels in samples
        if name == "ann_batch_executions_total" and set(mv) <= set(labels)
    )

    def phase(name: str, sizes: list[int]) -> dict[str, int]:
        count = ns = 0.0
        for b in sizes:
            count += value("ann_batch_executions_total", ("batch_size", str(b)))
            ns += value("ann_batch_phase_seconds_total", ("batch_size", str(b)), ("phase", name))
        return {"count": int(count), "ns": round(ns * 1e9)}

    zero = {"count": 0, "ns": 0}
    return {
        "name": m.name,
        "version": m.version,
        "last_inference": round(m.last_inference * 1000),
        "inference_count": int(value("ann_inference_rows_total")),
        "execution_count": int(value("ann_batch_size_count")),
        "inference_stats": {
            "success": duration("ann_request_duration_seconds"),
            "fail": duration("ann_failed_request_duration_seconds"),
            "queue": duration("ann_queue_seconds"),
            **{f"compute_{p}": phase(p, buckets) for p in PHASES},
            "cache_hit": dict(zero),
            "cache_miss": dict(zero),
        },
        "batch_stats": [
            {"batch_size": b, **{f"compute_{p}": phase(p, [b]) for p in PHASES}} for b in buckets
        ],
        "memory_usage": [],
    }
