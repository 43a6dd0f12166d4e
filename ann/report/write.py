"""One report: every section of every split, slices, prediction variance, written as
report.json, index.html and the PNGs into one directory (see docs/report.md for the schema)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from ann import atomic, directory_kind
from ann.report import SCHEMA_VERSION, collect, html, jsonable, metric_text, unit_clipped
from ann.report.sections import SECTIONS, Section, sections_for

REPORT = directory_kind.REPORT_FILE
# report.json's `report` key: which command wrote it (`ann report`: "model"; `ann monitor drift`,
# `ann monitor performance`), beside each one's own integer `schema_version`.
REPORT_KINDS = ("model", "drift", "performance")


def _slices(preds: collect.Predictions, source: collect.Source) -> list[Section]:
    """One Section per entry of the config's `report.slices` (none when it names none). An
    entry these rows cannot take (`ann train` counts a streamed split's field values on a
    sample, and runs from before its check were not checked) is refused with how the trained
    run or model takes another: its config is the run's, changed on a rerun (`_rerun`)."""
    from ann.report import slices
    from ann.report.slicing import SliceRefused, refused_together

    try:
        return slices.report_slices(preds)
    except SliceRefused as e:  # every refused entry, and the rerun that replaces them all
        raise refused_together(e.parts, functools.partial(_rerun, preds.config, source)) from None


def _rerun(config: Any, source: collect.Source, refused: list[Any]) -> str:
    """How a trained run's `report.slices` changes: a rerun of its `ann train` command with
    each `refused` entry replaced by its fix (dropped without one), which trains no further;
    an export keeps its run's, so the run is exported again."""
    from ann.report.slicing import replaced_flag

    flag = replaced_flag(config, refused)
    again = f"`ann train` command again with {flag} (a finished run trains no further)"
    if source.identity["kind"] == "workdir":
        return f"run its {again}, then `ann report --workdir={source.identity['workdir']}`"
    return f"an export keeps its run's report.slices: run the run's {again}, then export it again"


def replace_directory(tmp: str, out: str, check: Callable[[], None] | None = None) -> None:
    """Puts the finished report `tmp` at `out`, replacing an earlier report there. Where another
    writer put a directory at `out` meanwhile (two reports to one new --out at once: the
    rename failed "Directory not empty" with a traceback), `check()` runs again, raising the
    FlagError that a later start would have had (a report of another kind, run or model), and
    else that one is replaced in turn."""
    from ann.cli import FlagError

    for _ in range(3):
        old = None
        if os.path.lexists(out):
            old = tempfile.mkdtemp(prefix=".report-old-", dir=os.path.dirname(out))
            with contextlib.suppress(FileNotFoundError):  # replaced by another writer meanwhile
                os.rename(out, os.path.join(old, "report"))
        try:
            os.rename(tmp, out)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if check is not None:
                check()
            continue
        finally:
            if old:
                shutil.rmtree(old, ignore_errors=True)
        atomic.sync_directory(os.path.dirname(out))
        return
    raise FlagError(f"--out={out} was written by other commands at once, again and again; rerun")


def check_out(
    out: str, kind: str = "model report", source: Mapping[str, Any] | None = None
) -> None:
    """Raises FlagError unless `out` is new, empty, or an earlier report of the same `kind`
    (holds report.json): "model report" (`ann report`), "drift report" (`ann monitor
    drift`) or "performance report" (`ann monitor performance`), which share the file name
    and would replace each other, with no file a report
    does not write (replacing the directory would delete it). With `source` (a model report's
    `model` identity, `collect.Source.identity`), an earlier report must be of the same run
    or model (`_check_same_source`)."""
    from ann.cli import FlagError

    if os.path.exists(out) and not (
        os.path.isdir(out) and (not os.listdir(out) or os.path.isfile(os.path.join(out, REPORT)))
    ):
        raise FlagError(
            f"--out={out} exists and is not an earlier report (no {REPORT}); choose a new directory"
        )
    found = _report_kind(os.path.join(out, REPORT))
    if found is not None and found != kind:
        raise FlagError(f"--out={out} holds a {found} ({REPORT}); choose another --out")
    # The directory is replaced whole: a file put beside an earlier report went with it.
    others = [n for n in directory_kind.listing(out) if not _written_by_a_report(n)]
    if others:
        listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise FlagError(
            f"--out={out} holds files a report does not write ({listed}), and a new report "
            "replaces the directory whole; move them out, or choose another --out"
        )
    if found == "model report" and source is not None:
        _check_same_source(out, source)


def check_out_flag(
    out: str, kind: str = "model report", source: Mapping[str, Any] | None = None
) -> None:
    """--out=`out` of a `kind` report (`check_out`), checked as every report command checks
    it before anything is loaded (no JAX import): not a run, export, registry or data set
    (`ann.cli.check_out`), nor a report of another kind, or (`source`) of another run or
    model. Raises FlagError."""
    from ann import cli

    cli.check_out("out", out, report=True)
    check_out(out, kind, source)


def _written_by_a_report(name: str) -> bool:
    """Whether a report (ann report's, a drift report) writes a file of this name."""
    return name in (REPORT, "index.html") or name.endswith(".png")


def _made_from(identity: Mapping[str, Any]) -> tuple[str, Any]:
    """What a report is of, from its `model` identity: a run (its workdir, at any step), or an
    exported model (its manifest's sha256: the export and its registry versions alike)."""
    if identity.get("kind") == "workdir":
        return "run", os.path.realpath(str(identity.get("workdir")))
    return "model", identity.get("manifest_sha256")


def _check_same_source(out: str, source: Mapping[str, Any]) -> None:
    """Raises FlagError when the report at `out` was made from another run or model than
    `source`: replacing it lost that report without a word. A run's own WORKDIR/report is its
    own even when the run was copied from another workdir (the report then names that)."""
    from ann.cli import FlagError

    try:
        with open(os.path.join(out, REPORT), "rb") as f:
            made = json.loads(f.read()).get("model")
    except (OSError, ValueError, AttributeError):
        return
    if not isinstance(made, dict) or _made_from(made) == _made_from(source):
        return
    own = os.path.join(str(source.get("workdir")), "report")
    if source.get("kind") == "workdir" and os.path.realpath(out) == os.path.realpath(own):
        return

    def said(identity: Mapping[str, Any]) -> str:
        if identity.get("kind") == "workdir":
            return f"run {identity.get('workdir')}"
        digest = str(identity.get("manifest_sha256"))[:12]
        return f"model {identity.get('name')} (manifest sha256 {digest})"

    # Each named ("not of this one" was a run where a model was reported; trial 46b).
    raise FlagError(
        f"--out={out} holds the report of {said(made)}, not of {said(source)}; choose another "
        f"--out, or delete {out} to replace it"
    )


def _report_kind(path: str) -> str | None:
    """Which report a report.json is, by its `report` key ("model": ann report's, docs/
    report.md; "drift", "performance": ann monitor's, docs/monitor_reports.md), or for a
    report written before that key (ann report's schema_version 1-2; drift's `schema`
    "ann.monitor.drift/1"-"/2", performance's "ann.monitor.performance/1") by its other keys;
    None when absent or unreadable."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("report") in REPORT_KINDS:
        return f"{data['report']} report"
    if "schema" in data and "requests" in data:  # ann monitor's: the schema names the command
        performance = str(data["schema"]).startswith("ann.monitor.performance/")
        return "performance report" if performance else "drift report"
    return "model report" if "schema_version" in data else None


def _report_splits(
    source: collect.Source, splits: list[str], tmp: str, report: dict[str, Any]
) -> tuple[dict[str, list[Section]], dict[str, dict[str, list[str]]], dict[str, Any]]:
    """Collects and scores each split into `report["splits"]`, writing its PNGs into `tmp`.
    The validation split is always collected (the test split's temperature is fitted there).
    Returns (split -> sections shown, split -> section key -> PNG files, rows for the
    prediction variance)."""
    section_fn = sections_for(source.config.experiment)
    # A user's section notes are printed after its title: they are its own words ("accuracy
    # 0.98"), where ann's sections' notes are sentences that say what they measure.
    titled = source.config.experiment not in SECTIONS
    validation = collect.collect(source, "validation")
    shown: dict[str, list[Section]] = {}
    figures: dict[str, dict[str, list[str]]] = {}
    for split in splits:
        preds = validation if split == "validation" else collect.collect(source, split, validation)
        # Scores held to [0, 1] here, before report.json and index.html's tables take them.
        sections, slices = (
            [dataclasses.replace(s, metrics=unit_clipped(s.metrics)) for s in made]
            for made in (section_fn(preds), _slices(preds, source))
        )
        shown[split] = sections + slices
        figures[split] = html.write_figures(tmp, split, shown[split])
        report["splits"][split] = {
            "rows": len(next(iter(preds.outputs.values()))),
            "sections": {s.key: s.metrics for s in sections},
            "slices": {s.key: s.metrics for s in slices},
            "notes": [
                f"{s.title}: {note}" if titled and s in sections else note
                for s in shown[split]
                for note in s.notes
            ],
        }
    return shown, figures, validation.rows


def write_report(source: collect.Source, splits: list[str], out: str) -> dict[str, Any]:
    """Collects `splits`, computes their sections, slices and the prediction variance, and
    writes `out`/report.json, index.html and the PNGs (into a temporary sibling first, then
    renamed into place: nothing half-written). Returns the report.json contents (a dict:
    "model", "data", "splits": {split: its sections}, "prediction_variance", "files").

    `source`: `collect.from_workdir(workdir)` or `collect.from_model(export_or_uri)`;
    `splits`: names among `collect.SPLITS` (validation, test). Checked first, as `ann report`
    checks --split and --out: ValueError (FlagError) naming the argument for an unknown or
    repeated split, an `out` inside a run's checkpoints/, an export, a registry or another
    report, or holding anything but an earlier report of this run or model; TypeError for a
    `source` that is no `collect.Source`, a str `splits` or an `out` that is no path. Then
    ConfigError (a `report.slices` entry these rows cannot take: SliceRefused, with its fix),
    and KeyboardInterrupt on Ctrl-C, leaving nothing."""
    from ann import artifact, cli, shadowing

    shadowing.check()  # a clone's root imported as `ann`: one line, not a traceback midway

    if not isinstance(source, collect.Source):
        raise TypeError(
            "source: expected a collect.Source (collect.from_workdir(WORKDIR) or "
            f"collect.from_model(SPEC)), got {type(source).__name__}"
        )
    out = artifact.path_argument(out, "out", "the report's directory as a str or path")
    with cli.as_arguments({"split": "splits", "out": "out"}):
        collect.check_splits(splits)
        cli.check_out("out", out, report=True)  # not in a run's checkpoints/, an export, ...
        out = os.path.abspath(out)
        check_out(out, source=source.identity)  # a report of another run or model is kept
    config = source.config
    # A killed report left its staging directory (.report-*): the next one removes it.
    with atomic.staging(out, ".report-") as tmp:
        report: dict[str, Any] = {
            "report": "model",
            "schema_version": SCHEMA_VERSION,
            "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "model": source.identity,
            "experiment": config.experiment,
            "data": {
                "name": config.data.name,
                "splits": {s: collect.split_of(config, s) for s in splits},
            },
            "splits": {},
        }
        shown, figures, rows = _report_splits(source, splits, tmp, report)
        report["prediction_variance"] = collect.prediction_variance(source, rows)
        report["files"] = {
            "index": "index.html",
            "figures": sorted(f for split in figures.values() for fs in split.values() for f in fs),
        }
        report = jsonable(report)
        html.write_index(tmp, title(report), header(report), shown, figures)
        atomic.write_text(os.path.join(tmp, REPORT), json.dumps(report, indent=1) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp's 0o700 would hide the report from other users
        replace_directory(tmp, out, lambda: check_out(out, source=source.identity))
    return report


def title(report: dict[str, Any], workdir: str | None = None) -> str:
    """The report's first line, naming a run by `workdir` as the user wrote it (the terminal's)
    or else by the full path recorded (index.html's)."""
    model = report["model"]
    if model["kind"] == "workdir":
        return f"ann report: {workdir or model['workdir']} (step {model['step']})"
    version = f" version {model['version']}" if model.get("version") else ""
    return f"ann report: {model['name']}{version} ({model['spec']})"


def header(report: dict[str, Any]) -> list[str]:
    """The lines under the title: experiment, data, model identity, prediction variance."""
    model, variance = report["model"], report["prediction_variance"]
    splits = ", ".join(f"{k} = {v}" for k, v in report["data"]["splits"].items())
    lines = [f"{report['experiment']} on {report['data']['name']} ({splits})"]
    if model.get("manifest_sha256"):
        lines.append(f"manifest sha256 {model['manifest_sha256']}")
    served = model.get("calibration")
    if served and served.get("method") == "temperature":  # the calibration notes' after
        temperature = metric_text("temperature", served["temperature"])  # as export says it
        lines.append(
            f"serves softmax(logits / {temperature}) (calibration: temperature, fitted on "
            "validation at export)"
        )
    elif served:  # an export without one serves the calibration notes' before
        lines.append(f"serves softmax(logits) (calibration: {served.get('method') or 'none'})")
    # Measured on the validation split's rows whatever --split reports (it is always read: the
    # test split's temperature is fitted there); `--split=test` read as "of the test split".
    unreported = "validation" not in report["data"]["splits"]  # the splits it reports
    lines.append(
        f"prediction variance: largest difference {variance['max_abs_diff']:.3g} over "
        f"{variance['runs']} runs on {variance['rows']:,} rows of the validation split"
        + (" (read for every report, not only --split=validation)" if unreported else "")
    )
    return lines


def summary(report: dict[str, Any], out: str, workdir: str | None = None) -> str:
    """The printed summary: the title, header lines, each split's notes, where it was written;
    a run is named by `workdir` as given on the command line."""
    lines = [title(report, workdir), *header(report)]
    for split, values in report["splits"].items():
        lines += [f"{split}: {note}" for note in values["notes"]]
    pictures = len(report["files"]["figures"])
    # As `ann monitor drift` says it; index.html holds every picture and table.
    # "1 pictures" was said, and "0 pictures"
    said = f"{pictures} picture{'s' * (pictures != 1)}" if pictures else "no picture"
    lines.append(f"wrote {os.path.join(out, REPORT)}, index.html and {said}")
    return "\n".join(lines)
