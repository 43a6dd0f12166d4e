"""`ann observability render`: the rendered Prometheus rules (checked and unit-tested with
promtool: alerts fire on synthetic series) and the Grafana dashboard (every expression reads
a series the server exports or a rule records)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, one_line_error

from ann.observability import __main__ as cli_main
from ann.observability import rules
from ann.serve.metrics import Metrics

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian: apt-get install prometheus; .ci/run installs it "
    "where apt-get is available)",
)
SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",), "gauge": ("",)}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("observability")
    cli_main.render(rules.Settings(), str(out))
    return out


def exported_series() -> set[str]:
    """Every series name the server exports (ann/serve/metrics.py, the monitoring series of
    notes/COMMON15 included): histograms as _bucket, _count, _sum; counters as _total."""
    kinds = {m.name: m.type for m in Metrics(8).registry.collect()}
    return {name + suffix for name, kind in kinds.items() for suffix in SUFFIXES[kind]}


def render(out) -> subprocess.CompletedProcess:
    """`ann observability render --out=OUT`, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "ann", "observability", "render", f"--out={out}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_render_command_writes_rules_and_dashboard(tmp_path):
    result = render(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(17 recording rules, 8 alerts)" in result.stdout and "panels)" in result.stdout
    # The README's line is this command's output (it said 20 panels of 22).
    said = result.stdout.strip().replace(str(tmp_path), "observability")
    assert said in (ROOT / "README.md").read_text().splitlines(), said
    groups = yaml.safe_load((tmp_path / cli_main.RULES_FILE).read_text())["groups"]
    names = [r.get("alert") for g in groups for r in g["rules"] if "alert" in r]
    assert names == [
        "AnnAvailabilitySLOBurnPage",
        "AnnAvailabilitySLOBurnTicket",
        "AnnLatencySLOBurnPage",
        "AnnLatencySLOBurnTicket",
        "AnnDriftDetected",
        "AnnAccuracyBelowBound",
        "AnnServerDown",
        "AnnServerNotReady",
    ]
    for rule in (r for g in groups for r in g["rules"] if "alert" in r):
        page = rule["annotations"]["runbook_url"].removeprefix("docs/runbooks/")
        assert (ROOT / "docs" / "runbooks" / page).is_file(), page


def test_a_runbook_base_with_its_trailing_slash_links_each_runbook_once(tmp_path):
    # It linked `https://x.y/runbooks//availability-slo-burn.md`.
    from ann.observability import rules

    settings = rules.Settings(runbook_base="https://x.y/runbooks/")
    urls = [r["annotations"]["runbook_url"] for g in rules.rule_file(settings)["groups"]
            for r in g["rules"] if "alert" in r]  # fmt: skip
    assert urls and all(u.startswith("https://x.y/runbooks/") and "//" not in u[8:] for u in urls)


def test_a_runbook_base_of_the_root_links_each_runbook_at_the_root(tmp_path):
    # --runbook_base=/ was refused as no base ('/' less its trailing slash was empty).
    for base in ("/", "//"):
        settings = rules.Settings(runbook_base=base)
        settings.check()
        urls = [r["annotations"]["runbook_url"] for g in rules.rule_file(settings)["groups"]
                for r in g["rules"] if "alert" in r]  # fmt: skip
        assert urls and all(re.fullmatch(r"/[a-z0-9-]+\.md", u) for u in urls), urls
    result = subprocess.run(
        [sys.executable, "-m", "ann", "observability", "render", "--runbook_base=/",
         f"--out={tmp_path}"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "prometheus-rules.yaml").read_text()
    assert "runbook_url: /availability-slo-burn.md" in text, text


@pytest.mark.parametrize(
    "args, message",
    [
        # The example as the list of buckets spells it: it said 200.0 under "100, 200, 500".
        (
            ["--slo.latency_p95_ms=150"],
            "error: --slo.latency_p95_ms=150 must be a bucket of "
            "ann_request_duration_seconds in ms: 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, "
            "2000, 5000; e.g. --slo.latency_p95_ms=200$",
        ),
        (["--slo.availability=1.5"], "error: --slo.availability=1.5 must be a number in (0, 1)"),
        (["--alert.drift_for=soon"], "error: --alert.drift_for=soon must be a Prometheus"),
        (
            ["--slo.availabilty=0.99"],
            "error: --slo.availabilty is unknown (did you mean '--slo.availability'?); ",
        ),
        (["--alert.availability=0.9"], "error: --alert.availability is unknown"),
        # It suggested --alert, which takes no value alone.
        (
            ["--alerts.drift_for=1m"],
            "error: unknown flag --alerts.drift_for; did you mean --alert.drift_for?",
        ),
        # Its reason was "at 0 the alert could never fire", for 2; now the range and its note.
        (
            ["--alert.accuracy_min=2"],
            "error: --alert.accuracy_min=2 must be a number in (0, 1] (a realized accuracy; at 0 "
            "the alert could never fire); e.g. --alert.accuracy_min=0.9",
        ),
        # Accepted, it rendered `... < 0`: an alert that could never fire.
        (["--alert.accuracy_min=0"], "error: --alert.accuracy_min=0 must be a number in (0, 1]"),
        # As every other flag says it (it was "flag --slo.availability=abc: could not convert
        # string to float: 'abc'").
        (
            ["--slo.availability=abc"],
            "error: --slo.availability=abc must be a number in (0, 1) (the share of requests "
            "answered without a 5xx); e.g. --slo.availability=0.999",
        ),
        (
            ["--runbook_base="],
            "error: --runbook_base='' must be a URL or path; e.g. --runbook_base=docs/runbooks",
        ),
        # Accepted, every alert's runbook_url was a broken link.
        (
            ["--runbook_base=https://x/y z"],
            "error: --runbook_base='https://x/y z' must be a URL or path with no spaces (write "
            "each as %20); e.g. --runbook_base=https://x/y%20z",
        ),
        (
            ["--runbook_base=https://x/a|b"],
            "error: --runbook_base='https://x/a|b' must be a URL or path with no '|' (write it as "
            "%7C)",
        ),
        # Quoted as a shell needs it, as every refusal here is (it was Python's: 'a+b').
        (
            ["--alert.job=a+b"],
            "error: --alert.job=a+b must be a name of ASCII letters, digits and _ . : / - "
            "(prometheus.yml's job_name); e.g. --alert.job=ann",
        ),
        # Accepted: written as it was, `runbook_url: "http://x/\\xE9/drift.md"`.
        (
            ["--runbook_base=http://x/é"],
            "error: --runbook_base='http://x/é' must be a URL or path with no 'é' (a URL is "
            "ASCII: write it as %C3%A9); e.g. --runbook_base=http://x/%C3%A9",
        ),
        # Accepted: it linked `http://x/a?b=c#f/drift.md`, the runbook's name in the fragment.
        (
            ["--runbook_base=http://x/a?b=c#f"],
            "error: --runbook_base='http://x/a?b=c#f' must be a URL or path (scheme://host/path) "
            "with no query or fragment: drop ?b=c#f; e.g. --runbook_base=http://x/a",
        ),
        (["--alert.job=a b"], "error: --alert.job='a b' must be a name of ASCII letters"),
        # No duration and out of range are one refusal, in the help's words (DURATIONS): they
        # were "must be a Prometheus duration, e.g. 30m, 1h, 1d" and "must be from 1m ... to
        # 1h ...; the default is 5m", the help "takes a Prometheus duration from 1m ... to 1h".
        (
            ["--alert.down_for=5"],
            "error: --alert.down_for=5 must be a Prometheus duration from 1m (shorter pages on "
            "one failed scrape) to 1h (a dead server unpaged); e.g. --alert.down_for=5m",
        ),
        # Full-width: taken as 5m, and rendered into rules Prometheus refuses.
        (["--alert.down_for=５m"], "error: --alert.down_for='５m' must be a Prometheus duration"),
        (["--alert.down_for="], "error: --alert.down_for='' must be a Prometheus duration from"),
        # Valid Prometheus, odd pages: on one failed scrape, or a year after the server died.
        (
            ["--alert.down_for=0m"],
            "error: --alert.down_for=0m must be a Prometheus duration from 1m (shorter pages on "
            "one failed scrape) to 1h (a dead server unpaged); e.g. --alert.down_for=5m",
        ),
        (["--alert.down_for=1y"], "error: --alert.down_for=1y must be a Prometheus duration from"),
        (
            ["--alert.drift_for=30s"],
            "error: --alert.drift_for=30s must be a Prometheus duration from 1m (shorter tickets "
            "on one window) to 7d; e.g. --alert.drift_for=30m",
        ),
        (
            ["--alert.keep_firing_for=2d"],
            "error: --alert.keep_firing_for=2d must be a Prometheus duration from 0s (no "
            "cool-off) to 1d; e.g. --alert.keep_firing_for=1h",
        ),
        (["NOOUT"], "error: missing --out"),
        (["--out=FILE"], "error: --out=FILE is a file, not a directory; choose another --out"),
        (["rendr"], "error: give one command: render (ann observability render --out=DIR); got"),
        # The rest of an unquoted value with a space: it said "give one command ...; got
        # render minutes".
        (
            ["--alert.accuracy_for=5", "minutes"],
            "error: unexpected argument 'minutes': this command takes flags only (--name=value); "
            'quote a value that has spaces: --name="two words"',
        ),
    ],
)
def test_bad_flags_are_one_line(tmp_path, args, message):
    command = ["render"] if args != ["rendr"] else []
    (tmp_path / "FILE").write_text("")
    out = [] if args == ["NOOUT"] or args[0].startswith("--out") else [f"--out={tmp_path / 'o'}"]
    args = [a.replace("FILE", str(tmp_path / "FILE")) for a in args if a != "NOOUT"]
    message = message.replace("=FILE", f"={tmp_path / 'FILE'}")
    result = subprocess.run(
        [sys.executable, "-m", "ann", "observability", *command, *out, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    line = one_line_error(result)
    if message.endswith("$"):  # the whole line
        assert line == message[:-1], line
    assert line.startswith(message.removesuffix("$")), line
    assert not (tmp_path / "o").exists()


def test_render_refuses_an_out_in_tfds_data(tmp_path):
    # --out=~/tensorflow_datasets (or a data set's folder) wrote the rules and the dashboard
    # among the data sets without a word.
    data = tmp_path / "tensorflow_datasets"
    (data / "digits" / "1.3.0").mkdir(parents=True)
    (data / "digits" / "1.3.0" / "dataset_info.json").write_text("{}")
    before = sorted(p for p in data.rglob("*"))
    for out, message in [
        (data, f"error: --out={data} holds TFDS data (dataset_info.json); choose "
         "another --out"),
        (data / "digits", f"error: --out={data / 'digits'} is inside TFDS data at "
         f"{data}; choose a directory outside it"),
    ]:  # fmt: skip
        assert one_line_error(render(out)) == message
    assert sorted(p for p in data.rglob("*")) == before


@pytest.mark.parametrize("key", sorted(rules.DURATIONS))
def test_a_durations_refusal_says_what_its_help_says(key):
    # The help said "takes a Prometheus duration from 1m (...) to 7d"; the refusals "must be a
    # Prometheus duration, e.g. 30m, 1h, 1d" (no duration) or "must be from 1m (...) to 7d;
    # the default is 30m" (out of range).
    name = key.split(".")[1]
    default = getattr(rules.Settings, name)
    for value in ("soon", "1y", ""):
        with pytest.raises(ValueError) as raised:
            rules.Settings(**{name: value}).check()
        shown = value or "''"
        assert str(raised.value) == (
            f"--{key}={shown} must be {rules.DURATIONS[key]}; e.g. --{key}={default}"
        )


@pytest.mark.parametrize("job", ["a+b", "a b", "it's", "", "é"])
def test_a_jobs_refusal_quotes_it_as_a_shell_needs_and_says_what_its_help_says(job):
    # It quoted the value Python's way (--alert.job='a+b', --alert.job="it's"), where the
    # --alert.*_for refusals show it as typed in a shell, and said "e.g. ann".
    with pytest.raises(ValueError) as raised:
        rules.Settings(job=job).check()
    assert str(raised.value) == (
        f"--alert.job={shlex.quote(job)} must be {rules.NAMES['alert.job']}; e.g. --alert.job=ann"
    )


@pytest.mark.parametrize(
    "base, refused",
    [
        # `%zz` was called a lone %, a backslash shown doubled ('\\\\').
        ("http://x/50%", "with no '%' outside a percent-encoding such as %20 (write it as %25)"),
        ("http://x/%zz", "(write it as %25); e.g. --runbook_base=http://x/%25zz"),
        ("http://x/a\\b", "with no '\\' (write it as %5C); e.g. --runbook_base=http://x/a%5Cb"),
        ("http://x/a[1]", "with no '[' (write it as %5B)"),
        ("http://[::1/runbooks", "with no '[' (write it as %5B)"),
        ("docs/runbooks#drift", "with no query or fragment: drop #drift"),
        ("https://x/runbooks?", "with no query or fragment: drop ?"),
        ("https://x/ä/runbooks", "with no 'ä' (a URL is ASCII: write it as %C3%A4)"),
        ("https://x/a%20b/runbooks", None),
        ("http://[::1]:8080/runbooks", None),
        ("https://git.example.com/ann/docs/runbooks/", None),
    ],
)
def test_a_runbook_base_is_a_url_a_link_can_hold(base, refused):
    # RFC 3986: a non-ASCII character, a lone %, a bracket outside the host; and a base is
    # scheme://host/path, where a query or fragment took in the runbook's name.
    if refused is None:
        rules.Settings(runbook_base=base).check()
        return
    with pytest.raises(ValueError) as raised:
        rules.Settings(runbook_base=base).check()
    assert refused in str(raised.value) and str(raised.value).startswith(
        f"--runbook_base={shlex.quote(base)} must be a URL or path"
    )


def test_derived_thresholds_are_written_as_a_person_reads_them(tmp_path):
    # --slo.availability=0.99 wrote the 5xx share's line at 0.010000000000000009 (1 - 0.99 in
    # binary floating point); and 6 significant digits wrote --alert.accuracy_min=0.9999999 as
    # `< 1` and --slo.availability=0.1234567 as a budget of 0.876543.
    settings = rules.Settings(availability=0.99, accuracy_min=0.9999999)
    cli_main.render(settings, str(tmp_path))
    text = (tmp_path / cli_main.RULES_FILE).read_text()
    assert "0.0100000" not in text and "(14.4 * 0.01)" in text and "allows 0.01." in text
    assert "< 0.9999999" in text
    model = json.loads((tmp_path / cli_main.DASHBOARD_FILE).read_text())
    [share] = [p for p in model["panels"] if p["title"] == "5xx share"]
    assert share["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] == 0.01
    odd = rules.Settings(availability=0.1234567)
    assert "(1 * 0.8765433)" in yaml.safe_dump(rules.rule_file(odd))
    assert rules.error_budget(0.99) == 0.01 and rules.error_budget(0.999) == 0.001


def test_a_failed_render_leaves_both_files_as_they_were(tmp_path, monkeypatch):
    # ulimit -f 10: the rules were replaced, then the dashboard's write failed: a mismatched
    # pair on disk, and a Prometheus reload took up the rules of a command that failed.
    import contextlib
    import errno

    from ann import atomic

    out = tmp_path / "obs"
    cli_main.render(rules.Settings(latency_p95_ms=500), str(out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    replacing = atomic.replacing

    @contextlib.contextmanager
    def failing(path, *args, **kwargs):
        with replacing(path, *args, **kwargs) as f:
            if path.endswith(cli_main.DASHBOARD_FILE):  # the second file's write fails

                def write(text):
                    raise OSError(errno.EFBIG, "File too large")

                f.write = write
            yield f

    monkeypatch.setattr(atomic, "replacing", failing)
    with pytest.raises(OSError) as raised:
        cli_main.render(rules.Settings(latency_p95_ms=100), str(out))
    assert raised.value.filename == str(out / cli_main.DASHBOARD_FILE)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temporary left
    fresh = tmp_path / "new" / "obs"
    with pytest.raises(OSError):
        cli_main.render(rules.Settings(), str(fresh))
    assert not (tmp_path / "new").exists()  # what it created, it removed


def test_the_latency_threshold_refusal_names_the_buckets():
    with pytest.raises(ValueError, match=r"in ms: 0\.5, 1, 2, 5, 10, 20, 50, 100, 200, 500"):
        rules.Settings(latency_p95_ms=150).check()
    assert rules.le_matcher(1.0) == 'le=~"1|1\\\\.0"' and rules.le_matcher(0.2) == 'le="0.2"'


@needs_promtool
def test_promtool_checks_the_rules(rendered):
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(rendered / cli_main.RULES_FILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 25 rules found" in result.stdout


def _without_value_annotations(rendered, tmp_path) -> tuple[str, dict[str, dict]]:
    """A copy of the rendered rules without the annotations that print `$value` (a float an
    expected alert would have to repeat digit for digit); returns its path and each alert's
    remaining annotations."""
    rule_file = yaml.safe_load((rendered / cli_main.RULES_FILE).read_text())
    kept = {}
    for rule in (r for g in rule_file["groups"] for r in g["rules"] if "alert" in r):
        # ($value, a float; and Go template branches, which the test's substitution cannot take)
        notes = {
            k: v for k, v in rule["annotations"].items() if "$value" not in v and "{{ if" not in v
        }
        rule["annotations"] = kept[rule["alert"]] = notes
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule_file, sort_keys=False))
    return str(path), kept


def _promtool_test(
    rendered, tmp_path, series: dict[str, str], expected: list, values: tuple = ()
) -> None:
    """Runs `promtool test rules` on the rendered rules with `series` (1m samples); `expected`
    holds (alert, eval time, labels of each firing alert: [] for none), `values` (PromQL, eval
    time, [(labels, value)]) for what recording rules hold."""
    path, annotations = _without_value_annotations(rendered, tmp_path)

    def fired(alert: str, labels: dict) -> dict:
        notes = annotations[alert]
        for key, value in labels.items():
            notes = {k: v.replace(f"{{{{ $labels.{key} }}}}", value) for k, v in notes.items()}
        return {"exp_labels": labels, "exp_annotations": notes}

    alerts = [
        {"eval_time": at, "alertname": alert, "exp_alerts": [fired(alert, x) for x in firing]}
        for alert, at, firing in expected
    ]
    test = {
        "rule_files": [path],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "alert_rule_test": alerts,
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": at,
                        "exp_samples": [{"labels": lb, "value": v} for lb, v in samples],
                    }
                    for expr, at, samples in values
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(tmp_path / "test.yaml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_the_page_fires_on_a_high_error_rate_and_not_on_a_low_one(rendered, tmp_path):
    # digits: 20% 500s > 14.4 x 0.1% = 1.44%: page. mnist: 0.5% is under both pages (6 x 0.1%
    # = 0.6%) but over the ticket's 1 x 0.1%. Probes (no model) are not counted, nor is a
    # per-model readiness probe: its 200s made mnist's share 0.05%, under the ticket's 0.1%.
    base = 'ann_requests_total{model="%s",version="1",handler="infer",code="%s"}'
    series = {
        base % ("digits", "200"): "0+80x120",
        base % ("digits", "500"): "0+20x120",
        base % ("mnist", "200"): "0+995x120",
        base % ("mnist", "500"): "0+5x120",
        base % ("", "503"): "0+1000x120",
        'ann_requests_total{model="mnist",version="1",handler="model_ready",code="200"}': (
            "0+9000x120"
        ),
    }
    page, ticket = "AnnAvailabilitySLOBurnPage", "AnnAvailabilitySLOBurnTicket"
    labels = {m: {"severity": "page", "slo": "availability", "model": m} for m in ("digits",)}
    tickets = [
        {"severity": "ticket", "slo": "availability", "model": m} for m in ("digits", "mnist")
    ]
    expected = [(page, "70m", [labels["digits"]]), (ticket, "70m", tickets)]
    # The 30-day budget: mnist spends 5 times its budget (0.5% / 0.1%): 1 - 5 left.
    budget = "ann:slo_error_budget_remaining:ratio"
    left = [('{model="mnist",period="30d",slo="availability"}', -4)]
    values = [(f'round({budget}{{model="mnist"}}, 0.001)', "70m", left)]
    _promtool_test(rendered, tmp_path, series, expected, values)


@needs_promtool
def test_an_idle_hour_leaves_the_error_budget_a_number(rendered, tmp_path):
    # No traffic for 30 minutes: every window's ratio was 0 / 0 = NaN, and the 30-day budget
    # (avg_over_time of the 5m ratio) stayed NaN for 30 days after traffic came back.
    base = 'ann_requests_total{model="digits",version="1",handler="infer",code="%s"}'
    series = {base % "200": "0+99x60 5940x30 5940+99x60", base % "500": "0+1x60 60x30 60+1x60"}
    budget = "ann:slo_error_budget_remaining:ratio"
    left = [('{model="digits",period="30d",slo="availability"}', -9)]  # 1% / 0.1%: 1 - 10
    ratio = 'ann:slo_errors:ratio_rate5m{slo="availability"}'
    values = [
        (f'round({budget}{{model="digits"}}, 0.001)', "140m", left),
        (ratio, "80m", []),  # idle: no ratio at all, rather than NaN
    ]
    _promtool_test(rendered, tmp_path, series, [], values)


@needs_promtool
def test_the_error_budget_weighs_each_window_by_its_traffic(rendered, tmp_path):
    # 30 busy minutes without an error, then 3 requests in a quiet half hour, each a 500: 3 of
    # 180,003 requests failed, 1.7% of the 0.1% budget. The mean of the 5-minute ratios (Sloth's)
    # counted the quiet windows' 100% as much as the busy ones' 0%: -243, spent 244 times over.
    base = 'ann_requests_total{model="digits",version="1",handler="infer",code="%s"}'
    series = {
        base % "200": "0+6000x30 180000x30",
        base % "500": "0x39 1x10 2x10 3",
    }
    budget = "ann:slo_error_budget_remaining:ratio"
    left = [('{model="digits",period="30d",slo="availability"}', 0.99)]  # 2-3 in 180,000
    values = [(f'round({budget}{{model="digits"}}, 0.01)', "60m", left)]
    _promtool_test(rendered, tmp_path, series, [], values)


@needs_promtool
def test_the_latency_page_fires_when_requests_are_slow(rendered, tmp_path):
    # Half the requests slower than 200 ms: 50% > 6 x 5% over 6h and 30m (not 14.4 x 5%).
    hist = 'ann_request_duration_seconds_%s{model="digits",version="1"%s}'
    series = {
        hist % ("bucket", ',le="0.2"'): "0+50x60",
        hist % ("bucket", ',le="+Inf"'): "0+100x60",
        hist % ("count", ""): "0+100x60",
    }
    labels = {"severity": "page", "slo": "latency", "model": "digits"}
    _promtool_test(rendered, tmp_path, series, [("AnnLatencySLOBurnPage", "40m", [labels])])
    fast = {**series, hist % ("bucket", ',le="0.2"'): "0+99x60"}  # 1% slow: within 5%
    _promtool_test(rendered, tmp_path, fast, [("AnnLatencySLOBurnPage", "40m", [])])


@needs_promtool
def test_drift_and_accuracy_tickets_wait_for_their_for_and_cool_off(rendered, tmp_path):
    # Drift detected from 10m to 69m: pending until `for` (30m) has passed, then firing, and
    # still firing within keep_firing_for (1h) after the gauge went back to 0 (70m).
    mv = 'model="digits",version="2"'
    series = {
        f"ann_drift_detected{{{mv}}}": "0x9 1x59 0x120",
        f'ann_realized_accuracy_ratio{{{mv},window="last"}}': "0.97x9 0.8x59",
        f'ann_realized_accuracy_ratio{{{mv},window="total"}}': "0.5x70",  # not what the alert reads
    }
    labels = [{"severity": "ticket", "model": "digits", "version": "2"}]
    expected = [
        ("AnnDriftDetected", "5m", []),
        ("AnnDriftDetected", "35m", []),  # pending
        ("AnnDriftDetected", "45m", labels),
        ("AnnDriftDetected", "100m", labels),  # cooling off
        ("AnnDriftDetected", "140m", []),
        ("AnnAccuracyBelowBound", "35m", []),  # pending
        ("AnnAccuracyBelowBound", "45m", labels),
    ]
    _promtool_test(rendered, tmp_path, series, expected)


@needs_promtool
def test_a_dead_or_never_ready_server_pages_though_no_request_burns_the_budget(rendered, tmp_path):
    # A crashed server sent no requests: every SLO ratio was empty and nothing paged.
    series = {
        'up{job="ann",instance="a:8081"}': "1x9 0x30",  # dead from 10m
        'up{job="ann",instance="b:8081"}': "1x40",
        'ann_ready{job="ann",instance="b:8081"}': "1x9 0x30",  # up, never ready again
        'up{job="other",instance="c:9100"}': "0x40",  # another job's target: not ours
    }
    down = [{"severity": "page", "job": "ann", "instance": "a:8081"}]
    not_ready = [{"severity": "page", "job": "ann", "instance": "b:8081"}]
    expected = [
        ("AnnServerDown", "12m", []),  # pending: 5m
        ("AnnServerDown", "16m", down),
        ("AnnServerNotReady", "12m", []),
        ("AnnServerNotReady", "16m", not_ready),
    ]
    _promtool_test(rendered, tmp_path, series, expected)
    gone = [{"severity": "page", "job": "ann"}]  # every target of the job gone
    _promtool_test(rendered, tmp_path, {'up{job="other"}': "1x20"}, [("AnnServerDown", "6m", gone)])


@needs_promtool
def test_each_burn_rate_alert_names_the_window_its_share_is_of(rendered, tmp_path):
    # 20% 5xx for an hour, then none. At 88m the 6h/30m page still fires (right, by the SRE
    # workbook), and its description said "The share of 5xx responses ... is 13.79%": the 6h
    # window's share, read as the share now.
    groups = yaml.safe_load((rendered / cli_main.RULES_FILE).read_text())["groups"]
    burns = [r for g in groups for r in g["rules"] if "SLOBurn" in r.get("alert", "")]
    assert len(burns) == 4
    for rule in burns:
        assert (
            " over the last {{ $labels.window }} is {{ $value" in rule["annotations"]["description"]
        )
    base = 'ann_requests_total{model="digits",version="1",handler="infer",code="%s"}'
    series = {base % "200": "0+80x60 4800+100x60", base % "500": "0+20x60 1200+0x60"}
    page = next(r for r in burns if r["alert"] == "AnnAvailabilitySLOBurnPage")

    def fired(window: str, share: str) -> list:
        notes = {
            k: v.replace("{{ $labels.model }}", "digits")
            .replace("{{ $labels.window }}", window)
            .replace("{{ $value | humanizePercentage }}", share)
            for k, v in page["annotations"].items()
        }
        labels = {"severity": "page", "slo": "availability", "model": "digits"}
        return [{"exp_labels": labels, "exp_annotations": notes}]

    test = {
        "rule_files": [str(rendered / cli_main.RULES_FILE)],
        "evaluation_interval": "1m",
        # The recordings before the alerts that read them (unordered, the alerts read the
        # previous minute's ratio in some runs: 13.95% where it is 13.79%).
        "group_eval_order": [g["name"] for g in groups],
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": k, "values": v} for k, v in series.items()],
                "alert_rule_test": [
                    {"eval_time": at, "alertname": page["alert"], "exp_alerts": alerts}
                    for at, alerts in [
                        ("30m", fired("1h", "20%")),
                        ("88m", fired("6h", "13.79%")),  # 1200 of 8700 since the start
                        ("95m", []),
                    ]
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(tmp_path / "test.yaml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _panel(rendered, title: str) -> dict:
    model = json.loads((rendered / cli_main.DASHBOARD_FILE).read_text())
    [found] = [p for p in model["panels"] if p["title"] == title]
    return found


def _as_grafana_sends(expr: str, model: str = ".+") -> str:
    """`expr` with the dashboard's variables as Grafana fills them in ("All": `.+`)."""
    for name, value in ("$__rate_interval", "5m"), ("$model", model), ("$version", ".+"):
        expr = expr.replace(name, value)
    return expr


@needs_promtool
def test_the_alerts_panel_lists_the_server_pages_one_row_each(rendered, tmp_path):
    # `model=~"$model"` with All's `.+` matched no empty label: AnnServerDown and
    # AnnServerNotReady, which have none, never showed, though the server-down runbook sends
    # the on-call to this panel. And a range query fed the table one series at a time.
    panel = _panel(rendered, "ann alerts firing")
    [target] = panel["targets"]
    assert panel["type"] == "table" and target["instant"] and target["format"] == "table"
    assert target["range"] is False
    series = {
        'up{job="ann",instance="a:8081"}': "1x9 0x30",  # dead from 10m: pages at 15m
        'ann_requests_total{model="digits",version="1",handler="infer",code="200"}': "0+80x30",
        'ann_requests_total{model="digits",version="1",handler="infer",code="500"}': "0+20x30",
    }
    down = 'ALERTS{alertname="AnnServerDown",alertstate="firing",instance="a:8081",job="ann",'
    down += 'severity="page"}'
    burns = [
        (
            f'ALERTS{{alertname="AnnAvailabilitySLOBurn{s.capitalize()}",alertstate="firing",'
            f'model="digits",severity="{s}",slo="availability"}}',
            1,
        )
        for s in ("page", "ticket")
    ]
    values = [
        (_as_grafana_sends(target["expr"]), "16m", [(down, 1), *burns]),  # All
        (_as_grafana_sends(target["expr"], "digits"), "16m", [(down, 1), *burns]),
        (_as_grafana_sends(target["expr"], "mnist"), "16m", [(down, 1)]),  # the server's still
    ]
    _promtool_test(rendered, tmp_path, series, [], values)


@needs_promtool
def test_the_5xx_share_panel_is_0_on_a_healthy_server(rendered, tmp_path):
    # No 5xx at all is no 5xx series: the bare division was empty, "No data", which an on-call
    # reads as broken monitoring.
    [target] = _panel(rendered, "5xx share")["targets"]
    expr = _as_grafana_sends(target["expr"])
    base = 'ann_requests_total{model="%s",version="1",handler="infer",code="%s"}'
    series = {
        base % ("digits", "200"): "0+100x30",
        base % ("mnist", "200"): "0+90x30",
        base % ("mnist", "503"): "0+10x30",
        'ann_requests_total{model="idle",version="1",handler="infer",code="200"}': "7x30",
    }
    shares = [('{model="digits",version="1"}', 0), ('{model="mnist",version="1"}', 0.1)]
    _promtool_test(rendered, tmp_path, series, [], [(f"round({expr}, 0.001)", "20m", shares)])


def test_every_panel_reads_the_selected_models_and_versions(rendered):
    # "Refusals by model, status and reason" read every model's and version's errors whatever
    # was selected. Each series the server writes with a model (and version) label is read
    # with the selection; `$model|` (and `$version|`) also keeps what names no model.
    from ann.serve.metrics import Metrics

    labels = {}
    for metric in vars(Metrics(8)).values():
        name = getattr(metric, "_name", None) or getattr(metric, "name", None)
        names = getattr(metric, "_labelnames", None) or getattr(metric, "labelnames", ())
        if isinstance(name, str) and name.startswith("ann_"):
            labels[name] = set(names)
    assert {"model", "version"} <= labels["ann_errors"] and labels["ann_ready"] == set()
    model = json.loads((rendered / cli_main.DASHBOARD_FILE).read_text())
    unfiltered = []
    for p in model["panels"]:
        for t in p.get("targets", []):
            for name, selector in re.findall(
                r"\b(ann_[a-z0-9_]+|ALERTS)(\{[^}]*\})?", t.get("expr", "")
            ):
                family = re.sub(r"_(bucket|count|sum|total)$", "", name)
                wanted = {"model"} if name == "ALERTS" else labels[family] & {"model", "version"}
                for label in wanted:
                    if f'{label}=~"${label}' not in selector:
                        unfiltered.append(f"{p['title']}: {name}{selector} (no {label})")
    assert not unfiltered, unfiltered


def _expressions(model: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every Prometheus target and query variable (not the Tempo ones)."""
    targets = [(p["title"], t) for p in model["panels"] for t in p.get("targets", [])]
    prometheus = [(w, t["expr"]) for w, t in targets if t["datasource"]["type"] == "prometheus"]
    assert len(prometheus) == len([t for _, t in targets if "expr" in t]) >= 20
    return prometheus + [
        (v["name"], v["definition"]) for v in model["templating"]["list"] if "definition" in v
    ]


def test_each_dashboard_panel_holds_one_unit_and_saturation_is_per_server(rendered):
    # "Seconds since the last window" (60 and more) shared an axis with windows/s (0.01),
    # which read as flat 0; drift scores of several tests' units shared one with a share; and
    # saturation summed over replicas, where "near 1: busy" holds per server.
    model = json.loads((rendered / cli_main.DASHBOARD_FILE).read_text())
    panels = {p["title"]: p for p in model["panels"]}
    since = panels["Seconds since the last monitoring window"]
    assert since["fieldConfig"]["defaults"]["unit"] == "s" and len(since["targets"]) == 1
    rates = panels["Monitoring windows and label feedback (per second)"]["targets"]
    assert all(t["expr"].count("rate(") == 1 for t in rates)
    strength = panels["Drift strength per feature (last window; >= 1: drifted)"]
    assert [t["expr"].split("{")[0] for t in strength["targets"]] == ["ann_drift_strength"]
    assert strength["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] == 1.0
    (busy, ready) = panels["Saturation: compute busy (s/s)"]["targets"]
    assert "by (model, version, instance)" in busy["expr"]
    assert ready["expr"] == "min by (instance) (ann_ready)"


def test_the_dashboard_is_an_importable_model_of_three_views(rendered):
    model = json.loads((rendered / cli_main.DASHBOARD_FILE).read_text())
    assert model["uid"] and model["title"] and model["schemaVersion"] >= 36
    variables = {v["name"]: v["type"] for v in model["templating"]["list"]}
    assert variables == {
        "datasource": "datasource",
        "model": "query",
        "version": "query",
        "feature": "query",
        "traces": "datasource",
        "service": "textbox",
        "latency_threshold": "textbox",
    }
    rows = [p["title"] for p in model["panels"] if p["type"] == "row"]
    assert rows == ["Executive", "On-call", "Debug"]
    ids = [p["id"] for p in model["panels"]]
    assert len(set(ids)) == len(ids)
    cells = set()
    for p in model["panels"]:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, p["title"]
        for dx in range(pos["w"]):
            for dy in range(pos["h"]):
                cell = (pos["x"] + dx, pos["y"] + dy)
                assert cell not in cells, f"{p['title']} overlaps another panel"
                cells.add(cell)
        if p["type"] != "row":
            uid = {"prometheus": "${datasource}", "tempo": "${traces}"}[p["datasource"]["type"]]
            assert p["targets"] and p["datasource"]["uid"] == uid, p["title"]
            assert all(t["datasource"] == p["datasource"] for t in p["targets"]), p["title"]
    titles = " | ".join(p["title"] for p in model["panels"])
    for view in (
        "Accuracy",
        "Model age",
        "Drift detected",
        "Latency p95",
        "5xx",
        "Queue depth",
        "Saturation",
        "Traffic per version",
        "Drift strength per feature",
        "Share of input features drifted",
        "Predicted-class shares",
        "Confidence",
        "Batch size",
        "Input histogram",
        "Slow requests",
    ):
        assert view in titles, view


def test_input_histograms_compare_current_and_reference_per_selected_feature(rendered):
    model = json.loads((rendered / cli_main.DASHBOARD_FILE).read_text())
    [panel] = [p for p in model["panels"] if p["title"].startswith("Input histogram")]
    assert panel["type"] == "barchart" and panel["repeat"] == "feature"
    [target] = panel["targets"]
    assert target["instant"] and target["format"] == "table"
    # =~: Grafana regex-escapes a multi-value variable (feature names hold "[", "]").
    want = 'ann_feature_bin_share_ratio{model=~"$model",version=~"$version",feature=~"$feature"}'
    assert target["expr"] == want
    grouping = next(t for t in panel["transformations"] if t["id"] == "groupingToMatrix")
    matrix = {"rowField": "bin", "columnField": "source", "valueField": "Value"}
    assert grouping["options"] == matrix
    assert panel["options"]["xField"] == "bin\\source"  # groupingToMatrix's first column
    [feature] = [v for v in model["templating"]["list"] if v["name"] == "feature"]
    assert feature["definition"].startswith("label_values(ann_feature_bin_share_ratio{")


def test_slow_requests_are_a_traceql_search_the_latency_panels_link_to(rendered):
    from ann.serve import tracing

    model = json.loads((rendered / cli_main.DASHBOARD_FILE).read_text())
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["traces"]["query"] == "tempo"
    assert variables["service"]["current"]["value"] == tracing.SERVICE_NAME == "ann-serve"
    assert variables["latency_threshold"]["current"]["value"] == "200"  # the SLO's, in ms
    [panel] = [p for p in model["panels"] if p["title"].startswith("Slow requests")]
    [target] = panel["targets"]
    assert target["datasource"] == {"type": "tempo", "uid": "${traces}"}
    assert target["queryType"] == "traceql" and target["tableType"] == "traces"
    query = target["query"]
    assert query.startswith("{ ") and query.endswith(" }")  # one spanset
    conditions = [c.strip() for c in query[2:-2].split("&&")]
    assert conditions == [
        'resource.service.name = "$service"',
        "kind = server",  # the request spans, not their children or the batches
        'span.ann.model.name =~ "$model"',
        "duration > ${latency_threshold}ms",
    ]
    linked = {p["title"] for p in model["panels"] if p.get("links")}
    assert linked == {"Latency p95 (successful infers)", "Queue wait and compute (p95)"}
    for p in model["panels"]:
        for link in p.get("links", []):
            assert f"/d/{model['uid']}/?viewPanel={panel['id']}&" in link["url"]


def test_every_dashboard_and_rule_expression_reads_series_that_exist(rendered):
    model = json.loads((rendered / cli_main.DASHBOARD_FILE).read_text())
    groups = yaml.safe_load((rendered / cli_main.RULES_FILE).read_text())["groups"]
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    exprs = _expressions(model) + [
        (r.get("record") or r["alert"], r["expr"]) for g in groups for r in g["rules"]
    ]
    known = exported_series() | recorded | {"ALERTS"}
    unknown = []
    for where, expr in exprs:
        without_strings = re.sub(r'"[^"]*"', '""', expr)
        for name in re.findall(r"\b(ann[_:][a-zA-Z0-9_:]+|ALERTS)\b", without_strings):
            if name not in known:
                unknown.append(f"{where}: {name}")
    assert not unknown, unknown
    read = {n for _, e in exprs for n in re.findall(r"\bann_[a-z0-9_]+", e)}
    assert {"ann_drift_score_total", "ann_requests"} & read == set()  # the regex is not lax
    assert "ann_requests_total" in read and "ann_confidence_ratio_bucket" in read


def _series_as_the_server_writes_them(metrics: Metrics) -> dict[str, str]:
    """Every sample of `metrics`' /metrics text as a promtool input series: counters (and
    histogram buckets, counts, sums) grow by their value each minute, gauges hold it."""
    from prometheus_client.parser import text_string_to_metric_families

    series = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            grows = family.type in ("counter", "histogram")
            values = f"0+{sample.value:g}x60" if grows else f"{sample.value:g}x60"
            series[f"{sample.name}{{{labels}}}"] = values
    return series


@needs_promtool
def test_every_alert_fires_on_the_series_the_server_writes(rendered, tmp_path):
    # The real metrics class and prometheus_client's exposition: label names, `le` spelling,
    # `_total` suffixes as a scrape of the server has them.
    metrics = Metrics(8)
    for code in ("200", "200", "200", "200", "500"):  # 20% 5xx
        metrics.requests.labels("digits", "1", "infer", code).inc()
    metrics.requests.labels("", "", "", "404").inc()  # a probe of an unknown path: no model
    for seconds in (0.1, 0.5):  # half the infers slower than 200 ms
        metrics.request_duration.labels("digits", "1").observe(seconds)
    metrics.drift_detected.labels("digits", "1").set(1)
    metrics.realized_accuracy.labels("digits", "1", "last").set(0.5)
    metrics.realized_accuracy.labels("digits", "1", "total").set(0.95)
    series = _series_as_the_server_writes_them(metrics)
    slo = {"model": "digits"}
    version = [{"severity": "ticket", "model": "digits", "version": "1"}]
    expected = [
        ("AnnAvailabilitySLOBurnPage", "40m", [{"severity": "page", "slo": "availability", **slo}]),
        ("AnnLatencySLOBurnPage", "40m", [{"severity": "page", "slo": "latency", **slo}]),
        ("AnnDriftDetected", "40m", version),
        ("AnnAccuracyBelowBound", "40m", version),
    ]
    _promtool_test(rendered, tmp_path, series, expected)


@needs_promtool
def test_every_dashboard_expression_is_promql(rendered, tmp_path):
    # Grafana's variables replaced as Grafana does before it sends a query; promtool parses
    # each expression as a recording rule's.
    model = json.loads((rendered / cli_main.DASHBOARD_FILE).read_text())
    exprs = [e for where, e in _expressions(model) if not e.startswith("label_values(")]
    variables = ("$__rate_interval", "5m"), ("$model", ".+"), ("$version", ".+")
    for name, value in (*variables, ("$feature", ".+")):
        exprs = [e.replace(name, value) for e in exprs]
    records = [{"record": f"dashboard:check_{i}:expr", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


# The server's gauges and histograms without a unit in the name, and why: Prometheus's naming
# guide puts the base unit last (`_seconds`, `_bytes`, `_ratio` for a value in [0, 1]) and has
# none for a count or a 0/1 flag.
UNITLESS = {
    "ann_batch_size": "real rows per batch: a count",
    "ann_queue_depth": "rows waiting: a count",
    "ann_connections": "connections open: a count",
    "ann_ready": "1 or 0",
    "ann_drift_detected": "1 or 0 (NaN: too few rows)",
    "ann_model_info": "an info series, always 1",
    "ann_drift_score": "each test's statistic or distance in its own units (KS D, z, ...)",
    "ann_drift_strength": "a multiple of the test's threshold",
}


def test_every_gauge_and_histogram_names_its_unit_or_is_a_count_or_a_flag():
    """`ann_confidence`, a histogram of probabilities in [0, 1], had no unit suffix against
    the README's own rule (a share ends in `_ratio`) and Prometheus's naming guide: it is
    `ann_confidence_ratio`. A counter's `_total` is its own suffix."""
    families = {f.name: f.type for f in Metrics(8).registry.collect()}
    assert "ann_confidence_ratio" in families and "ann_batch_size" in families
    unnamed = [
        name
        for name, kind in families.items()
        if kind != "counter"
        and not name.endswith(("_seconds", "_bytes", "_ratio"))
        and name not in UNITLESS
    ]
    assert unnamed == []
    assert set(UNITLESS) <= set(families)  # none listed that the server no longer has
