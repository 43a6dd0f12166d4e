"""`ann observability render`: Prometheus rules and alerts, and the Grafana dashboard, as files.

    ann observability render --out=observability
    ann observability render --out=obs --slo.availability=0.995 --slo.latency_p95_ms=500 \\
        --alert.accuracy_min=0.95 --runbook_base=https://git.example.com/ann/docs/runbooks

Writes OUT/prometheus-rules.yaml (recording rules, SLO burn-rate alerts, drift and accuracy
tickets: ann/observability/rules.py) and OUT/grafana-dashboard.json (ann/observability/
dashboard.py), replacing earlier ones, and prints what it wrote. Check the rules with
`promtool check rules OUT/prometheus-rules.yaml`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os

import yaml
from absl import flags
from ml_collections import ConfigDict, config_flags

from ann import atomic, cli
from ann.config import did_you_mean
from ann.observability import dashboard, rules

FLAGS = flags.FLAGS
COMMANDS = ("render",)
RULES_FILE = "prometheus-rules.yaml"
DASHBOARD_FILE = "grafana-dashboard.json"
_DEFAULTS = rules.Settings()
# The keys of --slo.* and --alert.* (rules.Settings fields).
SECTIONS = {
    "slo": ("availability", "latency_p95_ms"),
    "alert": ("accuracy_min", "drift_for", "accuracy_for", "keep_firing_for", "down_for", "job"),
}


def define_flags() -> None:
    """`--out`, `--slo.*`, `--alert.*` (ml_collections dicts: typed, unknown keys refused by
    name in settings_from_flags) and `--runbook_base`; defaults from rules.Settings."""
    flags.DEFINE_string("out", None, "Directory to write the rules and the dashboard to.")
    cli.NEEDED_UNLESS["out"] = ()  # checked by the job: "missing --out"
    slo = ConfigDict({key: getattr(_DEFAULTS, key) for key in SECTIONS["slo"]})
    config_flags.DEFINE_config_dict(
        "slo",
        slo,
        # What each key takes, from the table its check refuses outside of (rules.EXPECTED).
        f"SLOs: --slo.availability (e.g. 0.999) takes {rules.EXPECTED['slo.availability']}; "
        "--slo.latency_p95_ms (95% of infers faster than this) takes "
        f"{rules.EXPECTED['slo.latency_p95_ms']}.",
        lock_config=False,
        accept_new_attributes=True,  # an unknown key is refused by name in settings_from_flags
    )
    alert = ConfigDict({key: getattr(_DEFAULTS, key) for key in SECTIONS["alert"]})
    config_flags.DEFINE_config_dict(
        "alert",
        alert,
        f"Model alerts: --alert.accuracy_min takes {rules.EXPECTED['alert.accuracy_min']}; "
        "--alert.drift_for and --alert.accuracy_for (how long before a ticket) each takes "
        f"{rules.DURATIONS['alert.drift_for']}; --alert.keep_firing_for (cool-off) takes "
        f"{rules.DURATIONS['alert.keep_firing_for']}; server pages: --alert.down_for (down or "
        f"not ready that long) takes {rules.DURATIONS['alert.down_for']}; --alert.job (the "
        f"scrape job of the servers' metrics port) takes {rules.NAMES['alert.job']}.",
        lock_config=False,
        accept_new_attributes=True,
    )
    flags.DEFINE_string(
        "runbook_base", _DEFAULTS.runbook_base, "Where the runbooks are (URL or path)."
    )
    cli.EXPECTED.update(rules.EXPECTED)  # --slo.availability=abc: in the words of =1.5
    cli.EXPECTED.update(rules.DURATIONS)  # what --help says of them, as their refusals do
    cli.EXPECTED.update(rules.NAMES)


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper with multi-line strings (PromQL) as `|` blocks."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def settings_from_flags() -> rules.Settings:
    """rules.Settings from --slo.*, --alert.* and --runbook_base; raises FlagError (one line)."""
    values = {"runbook_base": FLAGS.runbook_base}
    for section, keys in SECTIONS.items():
        for key, value in FLAGS[section].value.items():
            if key not in keys:
                raise cli.FlagError(
                    f"--{section}.{key} is unknown{did_you_mean(key, keys, f'--{section}.')}; "
                    f"--{section}.* keys: {', '.join(keys)}"
                )
            values[key] = value
    settings = rules.Settings(**values)
    try:
        settings.check()
    except ValueError as e:
        raise cli.FlagError(str(e)) from None
    return settings


def render(settings: rules.Settings, out: str) -> dict[str, int]:
    """Writes OUT/prometheus-rules.yaml and OUT/grafana-dashboard.json, both or neither: each
    is written whole to a temporary file beside it first, and only then are both renamed over
    the old ones (`atomic.replacing`), so that a failed write (a full disk, `ulimit -f`) leaves
    the old pair as it was. It replaced the rules, then failed on the dashboard: a mismatched
    pair, and a Prometheus reload took up rules from a command that said it failed. Returns
    counts (recording rules, alerts, panels) for the summary line; raises OSError (the file
    named) for a write refused."""
    rule_file = rules.rule_file(settings)
    given = json.dumps(dataclasses.asdict(settings))
    header = f"# Rendered by `ann observability render` from {given}; do not edit by hand.\n"
    text = yaml.dump(rule_file, Dumper=_Dumper, sort_keys=False, width=1000)
    model = dashboard.dashboard(settings)
    files = {RULES_FILE: header + text, DASHBOARD_FILE: json.dumps(model, indent=2) + "\n"}
    made = atomic.missing_from(out)  # a directory this command creates, removed if it fails
    try:
        os.makedirs(out, exist_ok=True)
        with contextlib.ExitStack() as stack:
            # Every file written, flushed and fsync'd before the first rename (the renames
            # happen as the stack unwinds); an exception on the way removes every temporary.
            for name, content in files.items():
                path = os.path.join(out, name)
                f = stack.enter_context(atomic.replacing(path, encoding="utf-8"))
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
    except BaseException:
        atomic.remove_if_left_empty(out, made)
        raise
    found = [r for group in rule_file["groups"] for r in group["rules"]]
    return {
        "recording rules": sum("record" in r for r in found),
        "alerts": sum("alert" in r for r in found),
        "panels": sum(p["type"] != "row" for p in model["panels"]),
    }


def main(argv: list[str]) -> None:
    """`ann observability render`: checks the command and flags (FlagError: one line), renders,
    prints what it wrote."""
    if len(argv) > 2 and argv[1] in COMMANDS:  # `--alert.accuracy_for=5 minutes` left "minutes"
        cli.check_no_arguments(argv[2:])
    if len(argv) != 2 or argv[1] not in COMMANDS:
        given = " ".join(argv[1:]) or "nothing"
        raise cli.FlagError(
            f"give one command: {', '.join(COMMANDS)} (ann observability render --out=DIR); "
            f"got {given}"
        )
    if not FLAGS.out:
        raise cli.FlagError("missing --out (the directory to write the rules and dashboard to)")
    cli.check_out("out", FLAGS.out)
    settings = settings_from_flags()
    counts = render(settings, FLAGS.out)
    print(
        f"wrote {os.path.join(FLAGS.out, RULES_FILE)} ({counts['recording rules']} recording "
        f"rules, {counts['alerts']} alerts) and {os.path.join(FLAGS.out, DASHBOARD_FILE)} "
        f"({counts['panels']} panels)"
    )


if __name__ == "__main__":
    define_flags()
    cli.run(main, errors=(OSError,), quiet=True)
