"""Prometheus recording rules and alerts for served models, rendered from a few numbers.

SLO alerts are the multi-window, multi-burn-rate alerts of the Google SRE workbook (chapter 5,
"Alerting on SLOs", alert 6): an SLO with objective `o` has the error budget `1 - o`; an alert
fires when the share of bad events over a long window AND over a short window (1/12 of it) both
exceed `factor * (1 - o)`:

| severity | factor | long window | short window | budget spent when it fires |
|---|---|---|---|---|
| page | 14.4 | 1h | 5m | 2% of a 30-day budget in 1 hour |
| page | 6 | 6h | 30m | 5% in 6 hours |
| ticket | 1 | 3d | 6h | 10% in 3 days |

The two SLIs, per model (every version together: the budget is the service's):

- availability: the share of infer requests (`ann_requests_total{handler="infer"}`) with a
  5xx `code` (4xx are the client's mistakes and count as good); metadata, readiness, monitor
  and feedback requests are not counted, so a per-model readiness probe does not dilute it;
- latency: the share of successful infer requests slower than `latency_p95_ms`, read from the
  `ann_request_duration_seconds` histogram's bucket `le` = that threshold (so the threshold
  must be one of the histogram's buckets), with the objective 95% ("p95 under N ms").

Naming follows Prometheus's `level:metric:operations` convention, as Sloth and Pyrra do
(Sloth's `slo:sli_error:ratio_rate5m`): `ann:slo_errors:ratio_rate5m{slo="availability"}`,
one series per model and window, the window also as the `window` label. Model alerts are
tickets with a cool-off: `for` (the condition must hold that long, so one noisy window does
not open a ticket) and `keep_firing_for` (Prometheus >= 2.42: a flapping condition keeps one
alert open instead of resolving and re-firing).
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from ann.arguments import expected, flag, number, refusal
from ann.serve.metrics import LATENCY_BUCKETS

_BUCKETS_MS = [round(b * 1000, 6) for b in LATENCY_BUCKETS]
# What the numeric settings take, as their refusals say it (`ann.arguments.expected`, the words
# of every command's numeric flags); `ann observability` hands them to `cli.EXPECTED`, so that a
# value that is no number is refused in the same words.
EXPECTED = {
    "slo.availability": expected(
        float, 0, 1, "the share of requests answered without a 5xx", above=True, below=True
    ),
    "slo.latency_p95_ms": (
        "a bucket of ann_request_duration_seconds in ms: "
        + ", ".join(f"{b:g}" for b in _BUCKETS_MS)
    ),
    "alert.accuracy_min": expected(
        float, 0, 1, "a realized accuracy; at 0 the alert could never fire", above=True
    ),
}

# (severity, burn-rate factor, long window, short window): SRE workbook, table 5-8.
BURN_RATES: tuple[tuple[str, float, str, str], ...] = (
    ("page", 14.4, "1h", "5m"),
    ("page", 6.0, "6h", "30m"),
    ("ticket", 1.0, "3d", "6h"),
)
WINDOWS = ("5m", "30m", "1h", "6h", "3d")
LATENCY_OBJECTIVE = 0.95  # "p95 under N ms": 95% of requests faster than N ms
RECORD = "ann:slo_errors:ratio_rate{window}"
PERIOD = "30d"  # the SLO period the burn-rate factors assume (14.4 = 2% of 30 days in 1 hour)
# Prometheus's duration syntax; ASCII digits (\d matched "１m", which Prometheus refuses)
_UNITS = re.compile(r"(\d+)(ms|s|m|h|d|w|y)", re.ASCII)
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$", re.ASCII)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
# Each `for` setting's sensible range (seconds, and why), checked with the syntax: a page on one
# failed scrape (Prometheus scrapes every 15 s to 1 min), or a page or ticket held back for
# longer than it can help, is a setting's mistake, not a choice.
_FOR_RANGES = {
    "down_for": (60, 3600, "1m (shorter pages on one failed scrape)", "1h (a dead server unpaged)"),
    "drift_for": (60, 7 * 86400, "1m (shorter tickets on one window)", "7d"),
    "accuracy_for": (60, 7 * 86400, "1m (shorter tickets on one window)", "7d"),
    "keep_firing_for": (0, 86400, "0s (no cool-off)", "1d"),
}
# What the --alert.*_for settings take, as their help says it: a duration within _FOR_RANGES.
DURATIONS = {
    f"alert.{name}": f"a Prometheus duration from {least} to {most}"
    for name, (_, _, least, most) in _FOR_RANGES.items()
}
# What the names among the settings take, as their help and their refusal say it (_JOB).
_JOB = re.compile(r"[A-Za-z0-9_.:/-]+")
NAMES = {
    "alert.job": "a name of ASCII letters, digits and _ . : / - (prometheus.yml's job_name)",
}


def duration_seconds(value: str) -> float:
    """Seconds in a Prometheus duration (`1h30m` -> 5400.0; units ms, s, m, h, d, w, y as
    Prometheus reads them: a year is 365 days). Raises ValueError for another string."""
    if not _DURATION.match(value):
        raise ValueError(f"not a Prometheus duration: {value!r}")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in _UNITS.findall(value))


# What a runbook link may not hold as it is: whitespace, control characters, the characters
# RFC 3986 never allows unescaped in a URI, any non-ASCII character (a URI is ASCII; an IRI's
# `é` is written %C3%A9) and a `%` that starts no percent-encoding (a link with them breaks in
# Alertmanager's and Grafana's pages).
_URL_UNSAFE = re.compile(r'[\s\x00-\x1f\x7f"<>\\^`{|}]|[^\x00-\x7f]|%(?![0-9A-Fa-f]{2})')


@dataclasses.dataclass(frozen=True)
class Settings:
    """What `ann observability render` renders from (the `--slo.*` and `--alert.*` flags).

    availability: the availability objective, a share in (0, 1), e.g. 0.999.
    latency_p95_ms: 95% of successful infer requests must be faster than this many
        milliseconds; one of the `ann_request_duration_seconds` buckets.
    accuracy_min: the realized-accuracy bound (a share in (0, 1]) below which a ticket opens
        (0 would be an alert that cannot fire: no accuracy is below it).
    drift_for, accuracy_for: how long (a Prometheus duration) the condition must hold.
    down_for: how long a server may be down (its scrape failing, or its target gone) or not
        ready (`ann_ready` 0: compiling, draining, stuck) before the page.
    job: the Prometheus scrape job of the servers' `--metrics_port` (`job_name`), which the
        down alert reads `up` of.
    keep_firing_for: the cool-off: how long an alert stays firing after its condition clears.
    runbook_base: the runbooks' location (a URL or path); alerts link `BASE/NAME.md`, one
        slash between (base "/", the root: `/NAME.md`). Empty, holding what a link cannot (a
        space, `|`, a non-ASCII character: `runbook_base_unsafe`), or with a query or fragment
        (`?`, `#`: the name would land in them) is refused by `check` (ValueError, one line).
    """

    availability: float = 0.999
    latency_p95_ms: float = 200.0
    accuracy_min: float = 0.9
    drift_for: str = "30m"
    accuracy_for: str = "30m"
    keep_firing_for: str = "1h"
    down_for: str = "5m"
    job: str = "ann"
    runbook_base: str = "docs/runbooks"

    def check(self) -> None:
        """Raises ValueError with one line naming the setting and the fix."""
        checks = (
            ("slo.availability", 0.0 < self.availability < 1.0),
            ("slo.latency_p95_ms", self.latency_p95_ms in _BUCKETS_MS),
            ("alert.accuracy_min", 0.0 < self.accuracy_min <= 1.0),
        )
        for key, fine in checks:
            if not fine:
                name = key.split(".")[1]
                typed = f"--{key}={number(getattr(self, name))}"
                example = number(getattr(Settings, name))  # 200, as the list says it: not 200.0
                raise ValueError(refusal(typed, EXPECTED[key], key, example))
        if not _JOB.fullmatch(self.job):
            # As typed in a shell, as every refusal here quotes it: it said --alert.job='a+b'
            # (Python's quotes, where a shell needs none) and "e.g. ann".
            typed = flag("alert.job", self.job)
            raise ValueError(refusal(typed, NAMES["alert.job"], "alert.job", Settings.job))
        for name, (low, high, _, _) in _FOR_RANGES.items():
            # One refusal, in the help's words (DURATIONS), whether no duration or out of range:
            # "must be a Prometheus duration, e.g. 30m" and "must be from 1m to 7d" were two.
            value = getattr(self, name)
            if not (_DURATION.match(value) and low <= duration_seconds(value) <= high):
                key = f"alert.{name}"
                typed = flag(key, value)  # as typed: --alert.down_for=5m, --alert.down_for=''
                raise ValueError(refusal(typed, DURATIONS[key], key, getattr(Settings, name)))
        # A space (or a control character, or one RFC 3986 never allows in a URL: "<>\^`{|}) in
        # the base made every alert's runbook_url a broken link, rendered without a word; so did
        # a non-ASCII character (`http://x/é`, written as it was) and a `%` that starts no
        # percent-encoding.
        base, what, example = self.runbook_base, "a URL or path", Settings.runbook_base
        unsafe = runbook_base_unsafe(base)
        wrong = not base
        if unsafe and base.strip():
            wrong = True
            # The character as typed ('\\' read doubled), a `%` as what it is not (`%zz` is
            # no lone %), and the example the base so written (it was docs/runbooks).
            if unsafe == "%":
                said = "'%' outside a percent-encoding such as %20"
                fixed = re.sub(r"%(?![0-9A-Fa-f]{2})", "%25", base)
            else:
                said = "spaces" if unsafe == " " else f"'{unsafe}'"
                fixed = base.replace(unsafe, quote(unsafe))
            fix = f"write {'each' if unsafe == ' ' else 'it'} as {quote(unsafe)}"
            if not unsafe.isascii():
                fix = f"a URL is ASCII: {fix}"
            what += f" with no {said} ({fix})"
            if runbook_base_unsafe(fixed) is None and "?" not in fixed and "#" not in fixed:
                example = shlex.quote(fixed)
        elif "?" in base or "#" in base:
            wrong = True
            # `http://x/a?b=c#f` linked `http://x/a?b=c#f/drift.md`: the runbook's name inside the
            # fragment. A base is scheme://host/path; the link appends /NAME.md to its path.
            kept = urlunsplit(urlsplit(base)._replace(query="", fragment=""))
            what += " (scheme://host/path) with no query or fragment: drop " + base[len(kept) :]
            example = shlex.quote(kept) if kept else example
        # "/" (the site's root: its runbooks at /NAME.md) was refused, empty once its trailing
        # slash was stripped; only no base at all is none.
        if wrong or unsafe:
            typed = flag("runbook_base", base)  # the value, as --alert.job's refusal shows it
            raise ValueError(refusal(typed, what, "runbook_base", example))


def runbook_base_unsafe(base: str) -> str | None:
    """The first character of `base` that a link cannot hold as it is (RFC 3986): whitespace,
    a control character, one of `"<>\\^`{|}`, a non-ASCII character, a `%` that starts no
    percent-encoding, or `[`/`]` outside a bracketed host (`http://[::1]:8080/runbooks`);
    None where there is none."""
    found = _URL_UNSAFE.search(base)
    if found:
        return found.group()
    try:
        path = urlsplit(base).path
    except ValueError:  # an unclosed bracketed host: "http://[::1/runbooks"
        return "[" if "[" in base else "]"
    brackets = re.search(r"[][]", path)
    return brackets.group() if brackets else None


def le_matcher(seconds: float) -> str:
    """The `le` label matcher of a histogram bucket: prometheus_client writes 1.0 as "1.0",
    Prometheus 3 normalises it to "1" at scrape, so whole numbers match both."""
    if float(seconds).is_integer():
        whole = int(seconds)
        return f'le=~"{whole}|{whole}\\\\.0"'
    return f'le="{float(seconds)!r}"'


def sli_events(slo: str, window: str, latency_s: float) -> tuple[str, str]:
    """PromQL: (bad events per second, all events per second) over `window`, per model (`slo`:
    availability or latency). A missing bad series counts as 0 (`or ... * 0`)."""
    if slo == "availability":
        infers = 'model!="",handler="infer"'
        total = f"sum by (model) (rate(ann_requests_total{{{infers}}}[{window}]))"
        bad = f'sum by (model) (rate(ann_requests_total{{{infers},code=~"5.."}}[{window}]))'
        return f"(\n  {bad}\n  or {total} * 0\n)", total
    total = f"sum by (model) (rate(ann_request_duration_seconds_count[{window}]))"
    fast = (
        f"sum by (model) (rate(ann_request_duration_seconds_bucket{{{le_matcher(latency_s)}}}"
        f"[{window}]))"
    )
    return f"(\n  {total}\n  - {fast}\n)", total


def sli_errors(slo: str, window: str, latency_s: float) -> str:
    """PromQL: the share of bad events over `window`, per model (`sli_events`), existing
    whenever there was traffic, and only then (`/ (total > 0)`): an idle window's 0 / 0 was
    NaN, which an alert's comparison or a budget's average carried on."""
    bad, total = sli_events(slo, window, latency_s)
    return f"{bad}\n/ ({total} > 0)"


def _runbook(settings: Settings, name: str) -> str:
    """`BASE/NAME.md` (a base given with its trailing slash linked `runbooks//drift.md`; the
    base "/" links `/NAME.md`)."""
    return f"{settings.runbook_base.rstrip('/')}/{name}.md"


def recording_rules(settings: Settings) -> dict[str, Any]:
    """The SLI recording rules: one group, `ann:slo_errors:ratio_rate<W>` for every window
    the alerts read, for both SLOs, the objectives as `ann:slo_objective:ratio`, and the error
    budget left over the 30-day period, `ann:slo_error_budget_remaining:ratio` (1: untouched,
    0: spent, below 0: overspent): 1 - (bad events / events over the period) / (1 - objective),
    the SRE workbook's error budget (chapter 2), from the 5-minute event rates recorded as
    `ann:slo_bad_events:rate5m` and `ann:slo_events:rate5m` (their sums over the period weigh
    each 5 minutes by its traffic; Sloth's mean of the 5-minute ratios weighed 3 requests in
    a quiet half hour as much as 180,000 in a busy one)."""
    rules = []
    latency_s = settings.latency_p95_ms / 1000
    for slo in ("availability", "latency"):
        for window in WINDOWS:
            rules.append(
                {
                    "record": RECORD.format(window=window),
                    "expr": sli_errors(slo, window, latency_s),
                    "labels": {"slo": slo, "window": window},
                }
            )
        bad, total = sli_events(slo, "5m", latency_s)
        for record, expr in (("ann:slo_bad_events:rate5m", bad), ("ann:slo_events:rate5m", total)):
            rules.append({"record": record, "expr": expr, "labels": {"slo": slo}})
    objectives = {"availability": settings.availability, "latency": LATENCY_OBJECTIVE}
    for slo, objective in objectives.items():
        rules.append(
            {
                "record": "ann:slo_objective:ratio",
                "expr": f"vector({objective})",
                "labels": {"slo": slo},
            }
        )
    rules.append(
        {
            "record": "ann:slo_error_budget_remaining:ratio",
            "expr": (
                f"1 - (\n  sum_over_time(ann:slo_bad_events:rate5m[{PERIOD}])\n"
                f"  / (sum_over_time(ann:slo_events:rate5m[{PERIOD}]) > 0)\n)\n"
                "/ on (slo) group_left () (1 - ann:slo_objective:ratio)"
            ),
            "labels": {"period": PERIOD},
        }
    )
    return {"name": "ann-slo-sli-recordings", "rules": rules}


def shown(value: float) -> str:
    """A threshold as the rules and the dashboard write it: 12 significant digits, which
    every setting's own digits fit in and binary rounding noise does not (1 - 0.99 is
    0.010000000000000009; written 0.01). `:g`'s 6 wrote an accuracy bound 0.9999999 as 1."""
    return f"{value:.12g}"


def error_budget(objective: float) -> float:
    """The error budget 1 - `objective` without binary rounding noise (`shown`):
    error_budget(0.99) == 0.01."""
    return float(shown(1.0 - objective))


def _burn(slo: str, factor: float, window: str, budget: float) -> str:
    """One window's condition: its error ratio above `factor` times the budget (the window's
    series, its `window` label kept: the alert's description names it)."""
    return f'{RECORD.format(window=window)}{{slo="{slo}"}} > ({factor:g} * {shown(budget)})'


def slo_alerts(settings: Settings) -> dict[str, Any]:
    """The page and ticket alerts of both SLOs (see the module docstring)."""
    alerts = []
    slos = {
        "availability": (settings.availability, "5xx responses"),
        "latency": (
            LATENCY_OBJECTIVE,
            f"infer requests slower than {settings.latency_p95_ms:g} ms",
        ),
    }
    for slo, (objective, bad) in slos.items():
        budget = error_budget(objective)
        for severity in ("page", "ticket"):
            # Each pair is its long window's series, `window` label and all (`and ignoring`:
            # the short window's only filters); the first pair that holds wins (`or ignoring`:
            # one series per model). The description names that window: it said "is 13.79%",
            # the 6h ratio of an error burst 30 minutes over, as if it were the share now.
            pairs = [
                f"(\n  {_burn(slo, f, long, budget)}\n  and ignoring (window)\n"
                f"  {_burn(slo, f, short, budget)}\n)"
                for s, f, long, short in BURN_RATES
                if s == severity
            ]
            windows = ", ".join(
                f"{f:g}x over {long} and {short}"
                for s, f, long, short in BURN_RATES
                if s == severity
            )
            alerts.append(
                {
                    "alert": f"Ann{slo.capitalize()}SLOBurn{severity.capitalize()}",
                    "expr": "\nor ignoring (window)\n".join(pairs),
                    # An empty label is no label (Prometheus's data model): the alert is one
                    # per model, whichever window fires it, as before; `$labels.window` in the
                    # annotations is the expression's.
                    "labels": {"severity": severity, "slo": slo, "window": ""},
                    "annotations": {
                        "summary": f"{{{{ $labels.model }}}}: {slo} error budget burning "
                        f"({windows})",
                        "description": f"The share of {bad} of model {{{{ $labels.model }}}} "
                        "over the last {{ $labels.window }} is "
                        f"{{{{ $value | humanizePercentage }}}}; the objective "
                        f"{shown(objective)} allows {shown(budget)}.",
                        "runbook_url": _runbook(settings, f"{slo}-slo-burn"),
                    },
                }
            )
    return {"name": "ann-slo-alerts", "rules": alerts}


def model_alerts(settings: Settings) -> dict[str, Any]:
    """Drift and realized-accuracy tickets, per model version, with their cool-off."""
    drift = {
        "alert": "AnnDriftDetected",
        "expr": "max by (model, version) (ann_drift_detected) == 1",
        "for": settings.drift_for,
        "keep_firing_for": settings.keep_firing_for,
        "labels": {"severity": "ticket"},
        "annotations": {
            "summary": "{{ $labels.model }} version {{ $labels.version }}: input drift",
            "description": "Dataset drift was detected in the serving windows for "
            f"{settings.drift_for} (ann_drift_detected = 1).",
            "runbook_url": _runbook(settings, "drift"),
        },
    }
    accuracy = {
        "alert": "AnnAccuracyBelowBound",
        "expr": f'min by (model, version) (ann_realized_accuracy_ratio{{window="last"}}) '
        f"< {shown(settings.accuracy_min)}",
        "for": settings.accuracy_for,
        "keep_firing_for": settings.keep_firing_for,
        "labels": {"severity": "ticket"},
        "annotations": {
            "summary": "{{ $labels.model }} version {{ $labels.version }}: realized accuracy "
            "{{ $value | humanizePercentage }}",
            "description": f"Accuracy on labelled predictions (last window) is below "
            f"{shown(settings.accuracy_min)} for {settings.accuracy_for}.",
            "runbook_url": _runbook(settings, "accuracy-drop"),
        },
    }
    return {"name": "ann-model-alerts", "rules": [drift, accuracy]}


def server_alerts(settings: Settings) -> dict[str, Any]:
    """Pages for a server that is down or never ready. The SLO alerts cannot see either: a
    dead server sends no requests to count, so its error share is empty, not high."""
    job = f'job="{settings.job}"'

    def page(alert: str, expr: str, summary: str, description: str) -> dict[str, Any]:
        return {
            "alert": alert,
            "expr": expr,
            "for": settings.down_for,
            "labels": {"severity": "page"},
            "annotations": {
                "summary": summary,
                "description": description,
                "runbook_url": _runbook(settings, "server-down"),
            },
        }

    down = page(
        "AnnServerDown",
        # `absent`: every target of the job gone (a Deployment scaled to 0, pods evicted).
        f"up{{{job}}} == 0\nor\nabsent(up{{{job}}})",
        "ann server down (job {{ $labels.job }}: {{ if $labels.instance }}"
        "{{ $labels.instance }}{{ else }}no targets{{ end }})",
        f"Prometheus could not scrape it, or the job has no targets, for {settings.down_for}.",
    )
    not_ready = page(
        "AnnServerNotReady",
        f"max by (job, instance) (ann_ready{{{job}}}) == 0",
        "ann server {{ $labels.instance }} is up but not ready",
        f"ann_ready has been 0 for {settings.down_for}: still compiling, draining, or stuck; "
        "it gets no traffic from a readiness-checking balancer.",
    )
    return {"name": "ann-server-alerts", "rules": [down, not_ready]}


def rule_file(settings: Settings) -> dict[str, Any]:
    """The whole Prometheus rule file (`rule_files:` in prometheus.yml) as a dict."""
    settings.check()
    groups = [recording_rules(settings), slo_alerts(settings), model_alerts(settings)]
    return {"groups": [*groups, server_alerts(settings)]}
