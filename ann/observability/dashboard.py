"""The Grafana dashboard of served models, as the classic dashboard JSON model (schemaVersion
39): importable from Grafana's "Import dashboard" page or a provisioning folder as it is, or
through the HTTP API wrapped as `{"dashboard": ..., "overwrite": true}`.

Variables: `datasource` (any Prometheus data source), `model` and `version` (from
`ann_model_info`; "All" matches every non-empty name; the alerts and refusals panels also
show what names no model: the server pages, a refusal before a model was found), `feature`
(the top drifted input features, from `ann_feature_bin_share_ratio`), `traces` (any Tempo data
source), `service` (the traces' service.name, default ann/serve/tracing.py's "ann-serve") and
`latency_threshold` (ms, default the latency SLO). Three rows, the three usual audiences:

- Executive: accuracy trend (realized on labelled predictions, and the CBPE estimate), model
  age per served version, drift state, firing ann alerts.
- On-call: p95 latency against the SLO threshold, 5xx share, SLO burn rate, traffic per
  version, queue depth, saturation (compute seconds per second), refusals by reason.
- Debug: drift score per feature, predicted-class shares, input histograms (per selected
  feature, the last window beside the export's reference on the same bins), the confidence
  histogram, queue wait and compute time, batch sizes and padding, monitoring windows and
  label feedback, and the slow requests' traces (a TraceQL search on Tempo; the latency panels
  link to it).

Every Prometheus expression reads the `ann_*` series of ann/serve/metrics.py, the recording
rules of ann/observability/rules.py (`ann:*`) or Prometheus's own `ALERTS`.
"""

from __future__ import annotations

from typing import Any

from ann.observability.rules import Settings, error_budget
from ann.serve.tracing import SERVICE_NAME

UID = "ann-served-models"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TRACES = {"type": "tempo", "uid": "${traces}"}
SLOW_REQUESTS = "Slow requests (traces over the latency threshold)"
# Panels whose title starts so link to SLOW_REQUESTS.
LATENCY_PANELS = ("Latency p95", "Queue wait and compute")
SEL = 'model=~"$model",version=~"$version"'
# The selection and what belongs to no model (the server's refusals before a model was found):
# "All" is `.+`, which matches no empty label.
SEL_OR_NONE = 'model=~"$model|",version=~"$version|"'
ALERTS_FIRING = 'ALERTS{alertname=~"Ann.*",alertstate="firing",model=~"$model|"}'
RATE = "$__rate_interval"
ROW_WIDTH = 24


def _target(expr: str, legend: str, ref: str, **extra: Any) -> dict[str, Any]:
    return {"refId": ref, "datasource": DATASOURCE, "expr": expr, "legendFormat": legend, **extra}


def panel(
    title: str,
    targets: list[tuple[str, str]],
    *,
    kind: str = "timeseries",
    unit: str = "short",
    width: int = 8,
    description: str = "",
    threshold: float | None = None,
    good_above: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """One panel (position filled in by `layout`): `targets` are (PromQL, legend) pairs;
    `threshold` draws a line (timeseries) or colours the value (stat) at that value: red above
    it, or below it when `good_above`."""
    defaults: dict[str, Any] = {"unit": unit}
    if threshold is not None:
        low, high = ("red", "green") if good_above else ("green", "red")
        steps = [{"color": low, "value": None}, {"color": high, "value": threshold}]
        defaults["thresholds"] = {"mode": "absolute", "steps": steps}
        if kind == "timeseries":
            defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    fmt = {"format": "heatmap"} if kind == "heatmap" else {}
    refs = "ABCDEFGH"
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": width, "x": 0, "y": 0},
        "targets": [_target(e, legend, refs[i], **fmt) for i, (e, legend) in enumerate(targets)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
    }


def _quantile(q: float, histogram: str, by: str = "model, version") -> str:
    return (
        f"histogram_quantile({q:g}, sum by (le, {by}) (rate({histogram}_bucket{{{SEL}}}[{RATE}])))"
    )


def executive(settings: Settings) -> list[dict[str, Any]]:
    """Accuracy trend, model version and age, drift and alerts."""
    mv = "{{model}} v{{version}}"
    return [
        panel(
            "Accuracy: realized and estimated",
            [
                (
                    f'ann_realized_accuracy_ratio{{{SEL},window="last"}}',
                    f"{mv} realized (last window)",
                ),
                (
                    f'ann_realized_accuracy_ratio{{{SEL},window="total"}}',
                    f"{mv} realized (since start)",
                ),
                (f"ann_estimated_accuracy_ratio{{{SEL}}}", f"{mv} estimated (CBPE)"),
            ],
            unit="percentunit",
            width=12,
            threshold=settings.accuracy_min,
            description="Realized: labelled predictions (POST .../feedback). Estimated: mean "
            "top-class probability, right when the model is calibrated. Red: the alert bound.",
        ),
        panel(
            "Model age per served version",
            [(f"ann_model_age_seconds{{{SEL}}}", mv)],
            kind="stat",
            unit="s",
            width=6,
            description="Now minus the manifest's export time (model freshness).",
        ),
        panel(
            "Drift detected",
            [(f"ann_drift_detected{{{SEL}}}", mv)],
            kind="state-timeline",
            width=6,
            threshold=1,
            description="1: the last window drifted (dataset drift); 0: it did not; no value "
            "(NaN): it held too few rows to judge (ann serve --monitor_min_rows).",
        ),
        panel(
            "SLO error budget left (30 days)",
            [('ann:slo_error_budget_remaining:ratio{model=~"$model"}', "{{model}} {{slo}}")],
            kind="stat",
            unit="percentunit",
            width=12,
            threshold=0,
            good_above=True,
            description="1 - (mean error ratio over 30 days) / (1 - objective): 100% untouched, "
            "0 spent.",
        ),
        alerts_firing(),
    ]


def alerts_firing() -> dict[str, Any]:
    """The firing ann alerts, one row each: an instant query in table format (a range query
    fed the table one series at a time, behind a picker), its labels as the columns. The
    server pages (`AnnServerDown`, `AnnServerNotReady`) have no `model` label, and "All"
    (`.+`) matches no empty one: `$model|` lists them whichever models are selected (the
    server-down runbook sends the on-call here)."""
    table = panel(
        "ann alerts firing",
        [(ALERTS_FIRING, "{{alertname}}")],
        kind="table",
        width=12,
        description="Page and ticket alerts of the rendered rules, the server alerts (no "
        "model) whichever models are selected (runbooks: docs/runbooks/).",
    )
    table["targets"][0].update({"instant": True, "range": False, "format": "table"})
    hidden = {"Time": True, "Value": True, "__name__": True, "alertstate": True}
    table["transformations"] = [{"id": "organize", "options": {"excludeByName": hidden}}]
    return table


def oncall(settings: Settings) -> list[dict[str, Any]]:
    """p95, errors, burn rate, per-version traffic, queue depth, saturation."""
    requests = f'ann_requests_total{{{SEL},handler="infer"}}'  # as the availability SLI
    fivexx = f'ann_requests_total{{{SEL},handler="infer",code=~"5.."}}'
    traffic = f"sum by (model, version) (rate({requests}[{RATE}]))"
    burn = (
        'ann:slo_errors:ratio_rate1h{model=~"$model"} '
        "/ on (slo) group_left () (1 - ann:slo_objective:ratio)"
    )
    return [
        panel(
            "Latency p95 (successful infers)",
            [(_quantile(0.95, "ann_request_duration_seconds"), "{{model}} v{{version}}")],
            unit="s",
            threshold=settings.latency_p95_ms / 1000,
            description="Red: the latency SLO threshold (--slo.latency_p95_ms).",
        ),
        panel(
            "5xx share",
            [
                (
                    # No 5xx at all is no 5xx series: 0 (as the availability SLI's recording
                    # rules count it), where the bare division was empty ("No data").
                    f"(\n  sum by (model, version) (rate({fivexx}[{RATE}]))\n"
                    f"  or {traffic} * 0\n)\n/ ({traffic} > 0)",
                    "{{model}} v{{version}}",
                )
            ],
            unit="percentunit",
            threshold=error_budget(settings.availability),
        ),
        panel(
            "SLO burn rate (1h window)",
            [(burn, "{{model}} {{slo}}")],
            threshold=14.4,
            description="Error ratio over the budget: 1 spends the budget in the SLO period; "
            "14.4 over 1h (and 5m) pages.",
        ),
        panel(
            "Traffic per version (req/s)",
            [(traffic, "{{model}} v{{version}}")],
            unit="reqps",
            stacking={"mode": "normal"},
        ),
        panel(
            "Queue depth (rows waiting)",
            [(f"ann_queue_depth{{{SEL}}}", "{{model}} v{{version}}")],
        ),
        panel(
            "Saturation: compute busy (s/s)",
            [
                (  # per server (instance): summed over replicas, 1 was not "busy"
                    f"sum by (model, version, instance) (rate(ann_batch_phase_seconds_total"
                    f"{{{SEL}}}[{RATE}]))",
                    "{{model}} v{{version}} {{instance}}",
                ),
                ("min by (instance) (ann_ready)", "{{instance}} ready"),
            ],
            description="Seconds of batch work per second, per server: near 1 that server's "
            "device is busy all the time and requests queue.",
        ),
        panel(
            "Refusals by model, status and reason",
            [
                (
                    f"sum by (model, code, reason) (rate(ann_errors_total{{{SEL_OR_NONE}}}"
                    f"[{RATE}]))",
                    "{{model}} {{code}} {{reason}}",
                )
            ],
            unit="reqps",
            width=24,
            description="Refusals of the selected models and versions, and those that named "
            "no model (no model label: a missing token, a body too large, malformed HTTP).",
        ),
    ]


def debug() -> list[dict[str, Any]]:
    """Drift per feature, prediction shares, confidence, queue and batch, windows, feedback."""
    mv = "{{model}} v{{version}}"
    return [
        panel(
            "Drift strength per feature (last window; >= 1: drifted)",
            [(f"ann_drift_strength{{{SEL}}}", "{{feature}} ({{method}})")],
            width=12,
            threshold=1.0,
            description="Top 10 input features, output:NAME, multivariate (MMD) when on, each "
            "as how far past its test's threshold (distance / threshold, or log p / log "
            "threshold): one scale for every method, where the raw scores (ann_drift_score: a "
            "statistic or a distance, each in its own units) are not comparable. Compare: ann "
            "monitor drift on a request log.",
        ),
        panel(
            "Share of input features drifted (last window)",
            [(f"ann_drift_share_ratio{{{SEL}}}", mv)],
            unit="percentunit",
            width=12,
            threshold=0.5,
            description="Drifted input features / all; at 0.5 or more the window is dataset "
            "drift (ann_drift_detected), as Evidently's drift_share. It shared the strength "
            "panel's axis, a share beside scores of other units.",
        ),
        panel(
            "Predicted-class shares (last window)",
            [(f"ann_prediction_share_ratio{{{SEL}}}", "{{class}}")],
            unit="percentunit",
            width=12,
            stacking={"mode": "normal"},
        ),
        input_histograms(),
        panel(
            "Confidence (top-class probability) histogram",
            [(f"sum by (le) (increase(ann_confidence_ratio_bucket{{{SEL}}}[{RATE}]))", "{{le}}")],
            kind="heatmap",
            calculate=False,
            yAxis={"unit": "percentunit"},
        ),
        panel(
            "Queue wait and compute (p95)",
            [
                (_quantile(0.95, "ann_queue_seconds"), f"{mv} queue wait"),
                (_quantile(0.95, "ann_compute_seconds"), f"{mv} compute"),
            ],
            unit="s",
        ),
        panel(
            "Batch size (rows) and padding",
            [
                (_quantile(0.5, "ann_batch_size"), f"{mv} p50"),
                (_quantile(0.95, "ann_batch_size"), f"{mv} p95"),
                (f"rate(ann_batch_padding_rows_total{{{SEL}}}[{RATE}])", f"{mv} padding rows/s"),
            ],
        ),
        panel(
            "Seconds since the last monitoring window",
            [
                (
                    f"time() - ann_drift_window_end_timestamp_seconds{{{SEL}}}",
                    f"{mv} {{{{instance}}}}",
                ),
            ],
            unit="s",
            width=8,
            description="A window closes every --monitor_window_rows rows or "
            "--monitor_window_seconds: a growing line is a model without traffic, or a stuck "
            "monitoring thread. (It shared an axis with the rates beside it, which read as 0.)",
        ),
        panel(
            "Monitoring windows and label feedback (per second)",
            [
                (f"rate(ann_drift_windows_total{{{SEL}}}[{RATE}])", f"{mv} windows/s"),
                (f"rate(ann_feedback_labels_total{{{SEL}}}[{RATE}])", f"{mv} labels joined/s"),
                (
                    f"sum by (model, version, reason) "
                    f"(rate(ann_feedback_unmatched_total{{{SEL}}}[{RATE}]))",
                    f"{mv} unmatched ({{{{reason}}}})/s",
                ),
            ],
            width=16,
        ),
        slow_requests(),
    ]


def input_histograms() -> dict[str, Any]:
    """A bar chart per feature of the `feature` variable (repeated across the row): the last
    window's share of rows per bin beside the reference's, on the same bins
    (`ann_feature_bin_share_ratio`, an instant query as a table; the bins sorted by their label,
    whose ordinal prefix is the bin order, then one column per source). Grafana's
    groupingToMatrix keeps rows in the order it first sees them and names its first field
    `ROW\\COLUMN` (grafana-data transformers/groupingToMatrix.ts), hence the sortBy before it
    and the bar chart's xField `bin\\source`."""
    histogram = panel(
        "Input histogram: $feature (reference vs last window)",
        [(f'ann_feature_bin_share_ratio{{{SEL},feature=~"$feature"}}', "{{source}}")],
        kind="barchart",
        unit="percentunit",
        width=ROW_WIDTH,  # Grafana splits the row among the repeats (maxPerRow per row)
        description="Top 10 drifted input features of the last window (the `feature` "
        "variable; its All repeats the panel per feature). Bars: share of rows per bin, "
        "10 equal bins over both ranges; a categorical input (tokens): share of its values "
        "per category, the 9 that moved most and the rest. Pick one model and version: bins "
        "differ per version.",
        xField="bin\\source",
        orientation="vertical",
        showValue="never",
        legend={"displayMode": "list", "placement": "bottom", "showLegend": True},
    )
    histogram["targets"][0].update({"instant": True, "range": False, "format": "table"})
    histogram["transformations"] = [
        {"id": "sortBy", "options": {"sort": [{"field": "bin"}]}},
        {
            "id": "groupingToMatrix",
            "options": {"rowField": "bin", "columnField": "source", "valueField": "Value"},
        },
    ]
    histogram.update({"repeat": "feature", "repeatDirection": "h", "maxPerRow": 4})
    return histogram


def slow_query() -> str:
    """TraceQL: the SERVER spans (one per request, ann/serve/tracing.py) of the `service`
    variable's service and the selected models slower than `latency_threshold` ms. `=~` for
    the model: Grafana writes a multi-value variable into a Tempo query as `a|b`
    (VariableFormatID.Pipe in the Tempo data source's applyVariables) and "All" as `.+`."""
    return (
        '{ resource.service.name = "$service" && kind = server && '
        'span.ann.model.name =~ "$model" && duration > ${latency_threshold}ms }'
    )


def slow_requests() -> dict[str, Any]:
    """The slowest requests' traces: a table of a TraceQL search on the `traces` (Tempo) data
    source (Grafana's Tempo query model: queryType traceql, tableType traces)."""
    return {
        "type": "table",
        "title": SLOW_REQUESTS,
        "description": "Infer requests slower than the latency_threshold variable (ms; default "
        "the latency SLO), from the traces the server emits (OTEL_TRACES_EXPORTER, service "
        f"name OTEL_SERVICE_NAME, default {SERVICE_NAME}). Open a trace to see its queue "
        "wait, encode and the linked batch's compute.",
        "datasource": TRACES,
        "gridPos": {"h": 10, "w": ROW_WIDTH, "x": 0, "y": 0},
        "targets": [
            {
                "refId": "A",
                "datasource": TRACES,
                "queryType": "traceql",
                "query": slow_query(),
                "limit": 20,
                "tableType": "traces",
            }
        ],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True, "sortBy": [{"displayName": "Duration", "desc": True}]},
    }


def link_latency_to_traces(panels: list[dict[str, Any]]) -> None:
    """Adds a link to the slow-requests panel (opened alone, same time range and variables)
    to the latency panels (LATENCY_PANELS)."""
    target = next(p["id"] for p in panels if p["title"] == SLOW_REQUESTS)
    url = f"/d/{UID}/?viewPanel={target}&${{__url_time_range}}&${{__all_variables}}"
    for p in panels:
        if p["title"].startswith(LATENCY_PANELS):
            p["links"] = [{"title": "Slow-request traces", "url": url}]


def layout(rows: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Row panels and their panels with ids and grid positions, left to right, wrapping at
    Grafana's 24 columns."""
    panels: list[dict[str, Any]] = []
    y = 0
    for title, members in rows:
        panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": ROW_WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        y, x, line = y + 1, 0, 0  # line: the height of the current line of panels
        for member in members:
            pos = member["gridPos"]
            if x + pos["w"] > ROW_WIDTH:
                y, x, line = y + line, 0, 0
            pos["x"], pos["y"] = x, y
            x += pos["w"]
            line = max(line, pos["h"])
            panels.append(member)
        y += line
    for i, p in enumerate(panels, start=1):
        p["id"] = i
    return panels


def _variable(name: str, query: str, label: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,  # on time range change
        "includeAll": True,
        "allValue": ".+",
        "multi": True,
        "sort": 1,
        "current": {},
        "options": [],
        "hide": 0,
    }


def _textbox(name: str, value: str, label: str) -> dict[str, Any]:
    """A free-text variable holding `value` until the user types another."""
    current = {"text": value, "value": value}
    return {
        "name": name,
        "label": label,
        "type": "textbox",
        "query": value,
        "current": current,
        "options": [{**current, "selected": True}],
        "hide": 0,
    }


def dashboard(settings: Settings) -> dict[str, Any]:
    """The dashboard JSON model (a dict for json.dump)."""
    templating = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "options": [],
            "hide": 0,
        },
        _variable("model", "label_values(ann_model_info, model)", "Model"),
        _variable("version", 'label_values(ann_model_info{model=~"$model"}, version)', "Version"),
        _variable(
            "feature",
            f"label_values(ann_feature_bin_share_ratio{{{SEL}}}, feature)",
            "Feature (input histograms)",
        ),
        {
            "name": "traces",
            "label": "Traces data source",
            "type": "datasource",
            "query": "tempo",
            "current": {},
            "options": [],
            "hide": 0,
        },
        _textbox("service", SERVICE_NAME, "Service (traces)"),
        _textbox("latency_threshold", f"{settings.latency_p95_ms:g}", "Slow request (ms)"),
    ]
    rows = [
        ("Executive", executive(settings)),
        ("On-call", oncall(settings)),
        ("Debug", debug()),
    ]
    panels = layout(rows)
    link_latency_to_traces(panels)
    return {
        "uid": UID,
        "title": "ann: served models",
        "description": "Rendered by `ann observability render`; do not edit by hand.",
        "tags": ["ann", "serving", "slo"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "timezone": "browser",
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": templating},
        "annotations": {"list": []},
        "panels": panels,
    }
