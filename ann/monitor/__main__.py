"""`ann monitor COMMAND`: monitoring jobs run on files (`ann monitor COMMAND --help`: one
command's part of this and its flags).

    ann monitor drift --model=models:/digits@champion --requests=requests.jsonl [--out=DIR]
        [--registry=DIR] [--method=auto] [--correction=none] [--nomultivariate] [--top=6]
        [--min_rows=25]

`drift` reads the server's request log (`ann serve --request_log=FILE`; rotated files too:
`--requests=log,log.1`), keeps the model's successful requests (`ann.monitor.request_log`), tests
them against the export's reference sample (`ann.monitor.drift`: Evidently's defaults, adapted,
with the multivariate MMD test unless --nomultivariate) and writes report.json, index.html and
PNGs to --out (default ./drift-NAME-VERSION; an earlier drift report there of the same model
and logs, or their rotated files, is replaced; of another, refused: the files themselves, by the
absolute paths report.json records, from any directory), then prints a summary.
The outputs tested are the logged ones when every request logged them all,
else the model's on the logged inputs; a log without requests to --model's version is judged
against that version's reference, with a warning naming the versions it holds. Fewer than
--min_rows rows (`ann.monitor.MIN_ROWS`, 25: the chi-square rule of 5 expected counts a bin) are
not judged: the summary says "too few rows to judge drift (N rows < 25)" and report.json's
result.state is "too_few_rows" (else "detected" or "not_detected"), for a gate to read.

    ann monitor feedback --url=http://127.0.0.1:8000 --model=digits --labels=labels.jsonl
        [--version=3] [--batch=1000] [--token_file=FILE]

`feedback` sends a JSON lines file of late labels (`{"id": ..., "label": ...}`, the infer
request's id) to a running server's feedback route in batches and prints what it joined
(`ann.monitor.feedback`; --model is then the served model's name). The server joins them in
its own memory only: behind several replicas a label joins only on the replica that served its
request, and a restart forgets them; `ann monitor performance` joins the same file offline to
every replica's request log.

    ann monitor performance --model=models:/digits@champion --requests=a.jsonl,a.jsonl.1,b.jsonl
        --labels=labels.jsonl [--registry=DIR] [--out=DIR] [--min_rows=100]

`performance` joins a file of late labels (`{"id": ..., "label": ...}` a line, the infer
request's id: the file `ann monitor feedback` sends) to the request logs of every replica (`ann
serve --request_log=FILE --request_log_sample=1`; rotated files too) by request id, as the
server's feedback route joins them (`ann.monitor.performance`: class indices or names, a list
for a request of several rows, an id's latest request, the first label of an id counts), and
scores each version of the model the logs hold: realized accuracy, and ECE over 15 bins with its
reliability diagram where the logged outputs include the probabilities (the log holds only the
outputs each client asked for: without them there is no ECE, said; a request logged with the
probabilities but not the predicted class joins with their argmax, which a classification
export's class is by definition). Labels not joined are counted by reason (unknown: not in
these logs; failed: the request was refused; unlogged: no predicted class logged; duplicate).
It writes report.json, index.html and the reliability PNG to --out (default
./performance-NAME-VERSION; an earlier report there of the same model, logs and labels file is
replaced; of others, refused; files compared as drift's are) and prints what joined and each
version's scores, the version --model names tagged `(--model)`. A version with fewer than
--min_rows labelled rows (`ann.monitor.MIN_LABELS`, 100, as `ann serve --monitor_min_labels`) is
not judged: "too few labelled rows to judge", with drift's advice (the rotated files beside the
logs, else the share of requests they hold), and report.json's result.versions[V].state is
"too_few_rows" (else "measured"). result.state, for a gate to read, is --model's version's:
"measured", "too_few_rows", or "not_served" when the logs hold none of its requests: then a warning
names the versions they hold and the --model that scores one, result.versions[V] holds it with
state "not_served" (no scores), and index.html says so at its top and in its versions table.

Exit status of `ann monitor drift`: 0 whether drift is found, not found or not judged (too
few rows); 1 with one `error: ...` line for a bad or missing flag (each missing one named), a
request log that cannot be read, or an export without a reference sample.

Exit status of `ann monitor feedback`: 0 whatever the server joined (labels not joined are
counted, and warned of where the counts alone would leave you guessing); 1 with one `error: ...`
line for a bad or missing flag, a server that cannot be reached, a labels file that cannot be
read or holds a label the server would refuse, or a batch the server refuses.

Exit status of `ann monitor performance`: 0 whether each version's performance is judged or not
(too few labelled rows), and where --model's version served none of the requests (state
"not_served"); 1 with one `error: ...` line for a bad or missing flag (each missing one named),
a request log that cannot be read, an export without a categorical output, a labels file that
cannot be read or holds a label the server would refuse, or labels of which none joins a logged
request (naming why).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from absl import flags

from ann import arguments, atomic, cli
from ann import config as config_lib
from ann.monitor import (
    CORRECTIONS,
    DISTANCE_METHODS,
    DISTANCE_ROWS,
    METHODS,
    MIN_LABELS,
    MIN_ROWS,
    MIN_TEST_ROWS,
)
from ann.monitor import feedback as feedback_job

FLAGS = flags.FLAGS
PREDICT_BATCH = 512


# --min_rows's help for each command (`ann monitor COMMAND --help` lists its own; both else).
MAX_ROWS = 1_000_000  # --min_rows at most, as `ann serve --monitor_min_rows`
MIN_ROWS_HELP = {
    "drift": (
        f"drift: fewest rows judged (default {MIN_ROWS}: the chi-square rule of 5 expected counts "
        "a bin, over up to 5 values); fewer: 'too few rows to judge drift', state too_few_rows."
    ),
    "performance": (
        "performance: fewest labelled rows a version is judged on (default "
        f"{MIN_LABELS}, as `ann serve --monitor_min_labels`); fewer: 'too few labelled rows to "
        "judge', the version's state too_few_rows."
    ),
}


# --model's help for each command: an export to test or score, or a served model's name.
MODEL_HELP = {
    "drift": (
        "drift: the model whose requests are tested, an export directory or registry URI "
        "(models:/NAME/3, @alias): its export's reference sample is what they are tested "
        "against, and the log's requests to its name are the ones read."
    ),
    "feedback": (
        "feedback: the served model's name (the server's /v2/models/NAME), whose feedback route "
        "the labels are sent to; --version picks one of its versions."
    ),
    "performance": (
        "performance: the model scored, an export directory or registry URI (models:/NAME/3, "
        "@alias): every version of its name in the logs is scored, its own tagged (--model), "
        "and result.state is its version's."
    ),
}


# --out's help for each command: its own default.
OUT_HELP = {
    "drift": "drift: directory to write (default ./drift-NAME-VERSION).",
    "performance": "performance: directory to write (default ./performance-NAME-VERSION).",
}


def define_flags() -> None:
    """The monitor jobs' flags, defined only when run as a program."""
    flags.DEFINE_string("model", None, " ".join(MODEL_HELP.values()))
    flags.DEFINE_string(
        "registry",
        None,
        "drift, performance: the registry for --model URIs (default $ANN_REGISTRY, else "
        "./registry).",
    )
    flags.DEFINE_list(
        "requests",
        None,
        # absl's help adds "(a comma separated list)": said there, once.
        "drift, performance: the servers' request log files (every replica's, rotated files too).",
    )
    flags.DEFINE_string("out", None, " ".join(OUT_HELP.values()))
    flags.DEFINE_enum(
        "method",
        "auto",
        METHODS,
        "drift: the per-feature test: auto = Evidently's defaults, chosen by the smaller "
        "sample, exact where a table is sparse (README, Drift).",
    )
    flags.DEFINE_enum(
        "correction",
        "none",
        CORRECTIONS,
        "drift: the multiple-testing correction of the input features' p-values (and, apart, "
        "of each output of many values: an embedding, a forecast): none "
        "(Evidently's: about 5% of unmoved features flagged a window), bonferroni "
        "(family-wise error <= 0.05), fdr_bh / fdr_by (false discovery rate <= 0.05, "
        "Benjamini-Hochberg / -Yekutieli).",
    )
    flags.DEFINE_boolean(
        "multivariate",
        True,
        "drift: also the multivariate MMD test (jax); on by default, --nomultivariate skips it.",
    )
    cli.define_bounded("top", 6, "drift: drifted features drawn (reference vs current).", 0, 1000)
    cli.define_bounded(
        "min_rows",
        None,
        f"{MIN_ROWS_HELP['drift']} {MIN_ROWS_HELP['performance']}",
        MIN_TEST_ROWS,
        MAX_ROWS,
    )
    cli.EXAMPLES["min_rows"] = MIN_ROWS  # its default (None) is each command's own (`own_example`)
    feedback_job.define_flags()
    # Refused empty by `_need`: "performance needs --requests=...; --requests= names none".
    cli.OWN_EMPTY.update(_NEEDED)
    flags.adopt_module_key_flags(feedback_job)  # listed in `ann monitor --help` too


def _outputs(model: Any, traffic: Any) -> tuple[dict[str, np.ndarray], str]:
    if traffic.outputs:
        return traffic.outputs, "log"
    rows = len(next(iter(traffic.inputs.values())))
    parts = [
        model({k: v[i : i + PREDICT_BATCH] for k, v in traffic.inputs.items()})
        for i in range(0, rows, PREDICT_BATCH)
    ]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, "model"


def _score(test: dict[str, Any], spec: str) -> str:
    """A test's score as printed; JSON holds an infinite one (Fisher's odds ratio where the
    reference never holds a value) as null."""
    return format(test["score"], spec) if test["score"] is not None else "inf"


def summary(report: dict[str, Any], path: str) -> str:
    """The printed lines: the verdict, the multivariate test, outputs, top features, files; for
    too few rows, that and what to do."""
    # imported by then: the report was computed
    from ann.monitor.drift import (
        OUTPUT_VALUES_SHOWN,
        beside_verdict,
        by_output,
        format_p,
        moved,
        none_moved,
        rank,
        reference_words,
    )
    from ann.monitor.request_log import more_requests

    r, m = report["result"], report["model"]
    rows, records = r["rows"], report["requests"]["records"]
    rows = f"{rows} row{'s' * (rows != 1)}"
    served, name = report["requests"]["versions"], m["name"]
    if report["requests"].get("served_as"):  # this export, under the name its directory gives
        name, version = report["requests"]["served_as"]
        served = f"{version} (this export, served from its directory)"
    elif m["version"] not in served:  # another version's traffic, judged against this one
        served = f"{', '.join(served)}, judged against version {m['version']}"
    else:
        served = m["version"]
    # older reports: not said
    words = reference_words(r.get("reference_split"), r.get("reference_held_out"))
    source = (
        f"{rows} from {records} request{'s' * (records != 1)} to {name} version "
        f"{served} | {r['reference_rows']} reference rows{f' ({words})' if words else ''}"
    )
    if r["state"] == "too_few_rows":
        # The shares the log holds ([] or none: it records none, or an older report)
        samples = report["requests"].get("request_log_sample") or []
        advice = more_requests(report["requests"]["files"], samples)
        return (
            f"too few rows to judge drift ({rows} < --min_rows={r['min_rows']}): not tested | "
            f"{source}\n  {advice} or lower --min_rows\n"
            f"wrote {path} and index.html"
        )
    correction = r.get("correction", "none")
    corrected = f", {correction}-corrected" if correction != "none" else ""
    # The verdict is the inputs'; the outputs' and a disagreeing multivariate test beside it
    # ("drift not detected" stood alone beside 72 of 72 drifted forecast values).
    mmd = r["multivariate"]["drifted"] if r["multivariate"] else None
    verdicts = r["output_verdicts"]
    beside = beside_verdict(
        r["detected"], mmd, [(f["feature"], f["drifted"]) for f in r["outputs"]], verdicts
    )
    lines = [
        f"drift {'DETECTED' if r['detected'] else 'not detected'}: {r['drifted']} of "
        f"{len(r['features'])} input features drifted{corrected} (share {r['share']:.2f}, "
        f"dataset drift at >= {r['drift_share']}){beside} | {source}"
    ]

    def said(f: dict[str, Any]) -> str:
        # "" for a distance; an output of many values is corrected: its adjusted p too
        p = format_p(f["p_value"], f.get("asymptotic_p"), f.get("p_adjusted"))
        verdict = "DRIFT" if f["drifted"] else "ok"
        return " ".join(x for x in (_score(f, ".4g"), p, verdict) if x)

    if r["multivariate"]:
        lines.append(f"  {r['multivariate']['feature']}: {r['multivariate']['method']} "
                     f"{said(r['multivariate'])}")  # fmt: skip
    # An output of many values (a reconstruction's 256, a forecast's 72) is one line, its
    # count and its most drifted value: it printed a line per value, 256 of them.
    for output, tests in by_output(r["outputs"], lambda f: f["feature"]).items():
        if len(tests) <= OUTPUT_VALUES_SHOWN:
            lines += [f"  {f['feature']}: {f['method']} {said(f)}" for f in tests]
            continue
        worst = min(tests, key=lambda f: rank(f["strength"], f["p_value"], f["score"]))
        moved_values = sum(f["drifted"] for f in tests)
        whole = verdicts[output]
        lines.append(
            f"  {output}: {moved_values} of {len(tests)} values drifted, "
            f"{'DRIFT' if whole else 'ok'}; most: {worst['feature']} {worst['method']} "
            f"{said(worst)}"
        )
    # How each categorical input was tested (its token frequencies, not in the MMD; numeric
    # inputs are tested value by value, as the line above says), and any test that --method
    # did not choose (the confidence's KS under --method=psi); older reports hold none.
    for name, how in r.get("tested_as", {}).items():
        if how.startswith("categorical") or "(--method=" in how:  # "output:NAME" says output
            lines.append(f"  {name if name.startswith('output:') else f'input {name}'}: {how}")
    # A feature that did not move at all (psi 0, ks 0: `moved`) is no one's "top": five
    # features all "psi 0" were listed. The report's "Top features" table reads the same rule.
    shifted = [f for f in r["features"] if moved(f["method"], f["score"])]
    top = sorted(shifted, key=lambda f: rank(f["strength"], f["p_value"], f["score"]))[:5]
    lines.append(
        "  top: "
        + (
            ", ".join(f"{f['feature']} {f['method']} {_score(f, '.3g')}" for f in top)
            or none_moved(f["method"] for f in r["features"])
        )
    )
    pictures = len(report["figures"])  # "1 pictures" was said
    lines.append(f"wrote {path}, index.html and {pictures} picture{'s' * (pictures != 1)}")
    return "\n".join(lines)


def _check_out(
    out: str, kind: str, made_of: tuple[Any, ...] | None = None, given: bool = True
) -> str:
    """`out`, checked as --out of a `kind` report ("drift", "performance"): not a run, export,
    registry or data set, nor another kind of report (ann.report.write.check_out). With
    `made_of` (the model's name and version, the --requests files, and for performance the
    --labels file), an earlier report there must be of the same model, request logs and labels
    (`_check_same_traffic`). `given`: whether --out was given (else `out` is its default, and
    named as one: `cli.default_of`)."""
    from ann.report.write import check_out_flag

    with cli.default_of("out", out, given):
        check_out_flag(out, f"{kind} report")
        if made_of is not None:
            _check_same_traffic(out, kind, *made_of)
    return out


def _check_same_traffic(
    out: str, kind: str, name: str, version: str, requests: list[str], labels: str | None = None
) -> None:
    """FlagError when the report at `out` is of another model, other request logs than
    `requests` or (`labels` given: performance) another labels file: a drift report of another
    log replaced the earlier one without a word (the default --out is per model version, not
    per log), and a performance report of other labels still did; its rotated files added are
    the same log (`_logs`). Files are compared as the files themselves: the report records
    their absolute paths, links resolved (`requests.paths`, `labels.path`), beside the names as
    given (`files`, `file`), which were compared as typed, so the same file by another
    relative path (from another directory) was refused, and another file by the same relative
    name replaced the report; a report written before it recorded them is compared by those
    names, from here. The refusal names what differs, the model, the logs, the labels (a report
    of another model on the same logs was refused as if of other logs). The rule `ann report`
    has for a report of another run or model: choose another --out, or delete it to replace
    it."""
    try:
        with open(os.path.join(out, "report.json"), "rb") as f:
            earlier = json.loads(f.read())
        model, logged = earlier["model"], earlier["requests"]
        files = logged.get("paths") or logged["files"]
        made, logs = (str(model["name"]), str(model["version"])), _logs(files)
        # Compared where both name one: a drift report has none.
        was = earlier.get("labels")
        joined = (
            (was.get("path") or was.get("file"))
            if labels is not None and isinstance(was, dict)
            else None
        )
        joined_file = os.path.realpath(joined) if isinstance(joined, str) else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return  # none there, or not one of these (check_out has refused what is not)
    # What differs, the earlier report's and this run's: a report of another model on the same
    # logs was named as if of other logs ("of a.jsonl (model m version 2), not of a.jsonl").
    of, given = [], []
    if made != (name, version):
        of.append(f"model {made[0]} version {made[1]}")
        given.append(f"model {name} version {version} (--model)")
    if logs != _logs(requests):
        of.append(",".join(files))
        given.append(_as_given("--requests", requests))
    if joined_file is not None and joined_file != os.path.realpath(labels):
        of.append(str(joined))
        given.append(_as_given("--labels", [labels]))
    if not of:
        return
    model_was = f" (model {made[0]} version {made[1]})" if made == (name, version) else ""
    raise cli.FlagError(
        f"--out={out} holds the {kind} report of {' and '.join(of)}{model_was}, not of "
        f"{' and '.join(given)}; choose another --out, or delete {out} to replace it"
    )


def _as_given(flag: str, files: list[str]) -> str:
    """`--requests=req.jsonl (/tmp/b/req.jsonl)`: the files as given, and by their absolute
    paths (links resolved, as the report records them) when those differ: "holds the drift
    report of /tmp/a/req.jsonl ..., not of --requests=req.jsonl" read as one file named
    twice."""
    real = [os.path.realpath(f) for f in files]
    typed = ",".join(files)
    return f"{flag}={typed}" + (f" ({','.join(real)})" if real != list(files) else "")


def _logs(files: list[str]) -> set[str]:
    """The request logs `files` are of: a rotated file (`FILE.1`, `FILE.2.gz`) is its log's
    (`FILE`), and so is the file its files were joined into as advised (`req.all.jsonl` for
    `req.jsonl`: `jsonlines.joined_name`), so adding the rotated files to --requests, or giving
    them joined, is more of the same log, not another (the report of the too few rows was
    refused as another log's)."""
    logs = set()
    for path in files:
        log = re.sub(r"\.\d+(\.(gz|bz2|xz|zst))?$", "", os.path.realpath(path))
        logs.add(re.sub(r"(\.all)?(\.jsonl)?$", "", log))
    return logs


def _manifest() -> tuple[Any, dict[str, Any], str, str, str]:
    """--model's (resolved spec, manifest, manifest sha256, name, version), checked against the
    registry's hash, named as `ann serve` names it; nothing loaded (no JAX import)."""
    from ann import artifact
    from ann import registry as registries

    resolved = registries.resolve(FLAGS.model, FLAGS.registry)
    manifest, raw = artifact.read_manifest_bytes(resolved.path, resolved.manifest_sha256)
    digest = artifact.sha256_bytes(raw)
    name, version = resolved.served_name(manifest["name"], digest)
    return resolved, manifest, digest, name, version


def _note_served_as(name: str, served_as: tuple[str, str]) -> None:
    """The note of `ann monitor drift` and `performance` where the logs (`--requests`) hold no
    request of --model's `name` but some of its export served from its directory, as `ann
    serve` names it (`served_as`: name, version): those are read."""
    from ann.monitor.request_log import holds

    cli.note(
        f"{', '.join(FLAGS.requests)} {holds(FLAGS.requests)} no request of model {name!r}; "
        f"reading those of {served_as[0]} version {served_as[1]}: this export (its manifest's "
        "digest) served from its directory"
    )


def drift(args: list[str]) -> None:
    """`ann monitor drift`: the report of a request log against the model's reference."""
    # The flags first: a mistake answered after the imports below in 3.0-3.7 s, now in 0.6 s.
    cli.check_no_arguments(args)
    _need("drift", "model", "requests")
    _check_requests()
    from ann.monitor.request_log import holds, read_traffic

    if FLAGS.out:  # before the log is read
        _check_out(FLAGS.out, "drift")
    from ann import artifact
    from ann.registry.spec import export_version

    # The log is read against the manifest before the model is loaded (JAX's imports): a bad
    # log is answered in 0.4 s, not 2-3 s.
    resolved, manifest, digest, name, version = _manifest()
    # Before the log is read and the model loaded: a report of other traffic at --out was
    # refused only after the drift was computed.
    out = _check_out(
        FLAGS.out or f"drift-{name}-{version}",
        "drift",
        (name, version, FLAGS.requests),
        given=bool(FLAGS.out),
    )
    cli.progress(f"reading {', '.join(FLAGS.requests)}")
    # The export as `ann serve` names it when given its directory.
    export = (manifest["name"], export_version(digest))
    inputs, outputs = manifest["inputs"], manifest["outputs"]
    traffic = read_traffic(FLAGS.requests, name, version, inputs, outputs, export)
    if traffic.served_as is not None:
        _note_served_as(name, traffic.served_as)
    elif version not in traffic.versions:
        cli.warn(
            f"{', '.join(FLAGS.requests)} {holds(FLAGS.requests)} no request to {name} version "
            f"{version}, only "
            f"to version {', '.join(traffic.versions)}: judging their inputs against this "
            "version's reference, with its own outputs on them"
        )
    cli.progress(f"loading {FLAGS.model}, testing each feature for drift")
    from ann.monitor import report as drift_report  # JAX and SciPy
    from ann.monitor.drift import Reference

    model = artifact.load(resolved.path, digest)  # the manifest the log was read against
    reference = Reference.from_model(model)
    outputs, source = _outputs(model, traffic)
    result = reference.detect(
        traffic.inputs,
        outputs,
        method=FLAGS.method,
        multivariate=FLAGS.multivariate,
        min_rows=MIN_ROWS if FLAGS.min_rows is None else FLAGS.min_rows,
        correction=FLAGS.correction,
    )
    warning = small_sample_warning(FLAGS.method, result.rows, result.reference_rows)
    if warning:
        cli.warn(warning)
    report = {
        "report": "drift",
        "schema_version": drift_report.SCHEMA_VERSION,  # docs/monitor_reports.md
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {"spec": FLAGS.model, "name": name, "version": version, "path": model.directory},
        "requests": {
            "files": list(FLAGS.requests),
            # the same files as absolute paths, links resolved: what --out's check compares
            "paths": [os.path.realpath(p) for p in FLAGS.requests],
            "records": traffic.records,
            "versions": traffic.versions,
            # [name, version] the requests were logged under, when not the model's own: this
            # export served from its directory; null else
            "served_as": list(traffic.served_as) if traffic.served_as else None,
            "skipped": traffic.skipped,
            "first": traffic.first,
            "last": traffic.last,
            # the shares of requests the log holds (`ann serve --request_log_sample`), smallest
            # first; [] where the log does not record it (written before it did)
            "request_log_sample": traffic.samples,
        },
        "outputs_from": source,
        "method": FLAGS.method,
        "result": result.to_json(),
    }
    parts = drift_report.sections(result, reference, traffic.inputs, outputs, FLAGS.top)
    header = [
        f"{traffic.records} requests ({result.rows} rows) from {', '.join(FLAGS.requests)} "
        f"against {result.reference_rows} reference rows of {model.directory}"
        f"{reference_rows_said(reference.split, reference.held_out)}",
        tests_line(source, FLAGS.method, FLAGS.correction),
    ]
    title = f"Drift: {name} version {version}"
    path = drift_report.write(out, report, parts, title, header)
    print(summary(report, path))


def reference_rows_said(split: str | None, held_out: str | None = None) -> str:
    """What the reference rows are, for the drift page's header: ` (validation split, held out
    of training; sampled: their inputs, and the model's outputs on them)` (`reference_words`);
    "" where they are not known."""
    from ann.monitor.drift import reference_words

    words = reference_words(split, held_out)
    return f" ({words}; sampled: their inputs, and the model's outputs on them)" if words else ""


def tests_line(source: str, method: str, correction: str) -> str:
    """The drift page's line on how the window was tested: where the outputs came from (`source`
    "log" or "model"), the per-feature `method` and the `correction`. It said "psi (Evidently's
    defaults, adapted, when auto)" of --method=psi: only auto is Evidently's defaults."""
    origin = "request log" if source == "log" else "model on the logged inputs"
    chosen = " (Evidently's defaults, adapted)" if method == "auto" else ""
    return (
        f"outputs from the {origin}; per-feature tests: {method}{chosen}; "
        f"multiple-testing correction: {correction}"
    )


# A job's required flag as its refusal names it: (the flag, what it is).
_NEEDED = {
    "model": ("--model", "an export directory or models:/ URI"),
    "requests": (
        "--requests=FILE[,FILE]",
        "the server's request log: every replica's, rotated files too",
    ),
    "labels": ("--labels=FILE.jsonl", 'the late labels, {"id": ..., "label": ...} a line'),
}


def _need(command: str, *names: str) -> None:
    """FlagError naming those of the flags `names` that `command` needs and was not given (a
    flag given empty, `--requests=`, is said so), before anything is read."""
    missing = []
    for name in names:
        if FLAGS[name].value:
            continue
        flag, what = _NEEDED[name]
        empty = f"; --{name}= names none" if FLAGS[name].present else ""
        missing.append(f"{flag} ({what}{empty})")
    if missing:
        listed = ", ".join(missing[:-1]) + " and " + missing[-1] if len(missing) > 1 else missing[0]
        raise cli.FlagError(f"{command} needs {listed}")


def _check_requests() -> None:
    """FlagError for a --requests file that is not there or not a regular file (a FIFO: named,
    not waited on), or an empty name in the list (`--requests=a.jsonl,`: it was "--requests= is
    not a file"), before any model is loaded."""
    given = f"--requests={','.join(FLAGS.requests)}"
    if not any(FLAGS.requests):
        raise cli.FlagError(
            f"`{given}` names no file; give the server's request log: --requests=FILE[,FILE]"
        )
    if (item := cli.empty_item("requests", FLAGS.requests)) is not None:
        raise cli.FlagError(item)
    from ann.monitor.jsonlines import check_file, missing

    for path in FLAGS.requests:
        if not os.path.isdir(path):  # a folder: `near_files` offers the log in it
            check_file(path, f"--requests={path}", "the server's request log", cli.FlagError)
        # Rotated away (FILE.1.gz beside it), or below a file: said so, with what to give.
        if (why := missing(path, f"--requests={path}", "the server's request log")) is not None:
            raise cli.FlagError(why)
        if not os.path.isfile(path):  # (a missing one: as every path flag says it)
            # A missing one's near name is `atomic.absent`'s (requests.jsonl for request.jsonl);
            # a folder's, the log in it.
            there = os.path.exists(path)
            what = "is not a file" if there else atomic.absent(path)
            raise cli.FlagError(
                f"--requests={path} {what}; give the server's request log"
                + (cli.near_files(path) if there else "")
            )
    from ann.monitor.request_log import named_twice

    if (twice := named_twice(FLAGS.requests)) is not None:  # before --out's check reads it
        raise cli.FlagError(twice)


def small_sample_warning(method: str, rows: int, reference_rows: int) -> str | None:
    """The warning for a distance method (PSI, Wasserstein, Jensen-Shannon: a fixed bound, no
    sample size) on a window or reference of at most DISTANCE_ROWS rows, where sampling noise
    alone crosses the bound (PSI flagged 20-27 of 64 pixels in draws of 200 unshifted
    digits); None else."""
    if method not in DISTANCE_METHODS or min(rows, reference_rows) > DISTANCE_ROWS:
        return None
    return (
        f"--method={method} judges a distance against a fixed bound, which sampling noise alone "
        f"crosses in samples this small ({rows} rows against {reference_rows}; Evidently uses "
        f"distances above {DISTANCE_ROWS:,} rows a side): read its verdicts as leads, or use "
        "--method=auto (p-value tests at this size)"
    )


def performance(args: list[str]) -> None:
    """`ann monitor performance`: late labels joined to the request logs of every replica,
    offline; realized accuracy and calibration per model version (`ann.monitor.performance`)."""
    cli.check_no_arguments(args)
    _need("performance", "model", "requests", "labels")
    _check_requests()
    from ann.monitor.jsonlines import check_readable

    # A FIFO waited for a writer, forever, once the model was loaded; a missing file was said
    # only after --model was resolved (a --model that does not exist was said instead).
    labels = f"--labels={FLAGS.labels}"
    check_readable(FLAGS.labels, labels, feedback_job.LABELS_WANTED, cli.FlagError)

    if FLAGS.out:  # before the log is read
        _check_out(FLAGS.out, "performance")
    from ann.monitor.request_log import read_requests
    from ann.registry.spec import export_version
    from ann.serve.monitoring import class_outputs

    resolved, manifest, digest, name, version = _manifest()
    label_output, probability_output = class_outputs(manifest["outputs"])
    if label_output is None:
        raise cli.FlagError(
            f"--model={FLAGS.model} has no categorical output (one with class names) to join "
            "labels to; performance is for classification models"
        )
    try:
        numbered = feedback_job.read_labels(FLAGS.labels)
    except ValueError as e:
        cli.fail(str(e))
    cli.progress(f"reading {', '.join(FLAGS.requests)}")
    export = (manifest["name"], export_version(digest))
    requests = read_requests(FLAGS.requests, name, manifest["outputs"], export)
    if requests.served_as is not None:  # said, as drift says it: the lines name the export's
        _note_served_as(name, requests.served_as)
        name, version = requests.served_as
    # Before the join: the default --out names the version the log served.
    out = _check_out(
        FLAGS.out or f"performance-{name}-{version}",
        "performance",
        (name, version, FLAGS.requests, FLAGS.labels),
        given=bool(FLAGS.out),
    )
    from ann.monitor import performance as perf
    from ann.monitor import report as monitor_report

    names = list(manifest["outputs"][label_output]["names"])
    joined = _join(manifest, requests, numbered, label_output, probability_output, name)
    files = ", ".join(FLAGS.requests)
    warnings = perf.unjoined_warnings(joined, FLAGS.requests, requests.samples)
    for line in warnings:
        cli.warn(line)
    min_rows = MIN_LABELS if FLAGS.min_rows is None else FLAGS.min_rows
    scores = {v: s.to_json(min_rows) for v, s in joined.versions.items()}
    # result.state is --model's version's: a gate reading it must not get another version's.
    state = scores[version]["state"] if version in scores else perf.NOT_SERVED
    if version not in scores:
        warnings.append(not_served_warning(files, name, version, list(scores)))
        cli.warn(warnings[-1])
        # Listed too: the page and report.json named only the logs' versions, as if measured.
        scores[version] = perf.not_served_json(min_rows)
    logged = len(requests.logged)
    report = {
        "report": "performance",
        "schema_version": perf.SCHEMA_VERSION,  # docs/monitor_reports.md
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {"spec": FLAGS.model, "name": name, "version": version, "path": resolved.path},
        "requests": {
            "files": list(FLAGS.requests),
            # the same files as absolute paths, links resolved: what --out's check compares
            "paths": [os.path.realpath(p) for p in FLAGS.requests],
            "records": logged,
            "versions": list(joined.versions),
            "skipped": requests.skipped,
            "served_as": list(requests.served_as) if requests.served_as else None,
            # as drift's: the shares of requests the logs hold ([]: not recorded)
            "request_log_sample": requests.samples,
        },
        "labels": {
            "file": FLAGS.labels,
            "path": os.path.realpath(FLAGS.labels),  # as requests.paths
            "labels": joined.sent,
            "joined": joined.joined,
            # joined with the class derived from the logged probabilities (their argmax)
            "derived": joined.derived,
            "unmatched": joined.unmatched,
        },
        "outputs": {"predicted_class": label_output, "probabilities": probability_output},
        "result": {"state": state, "min_rows": min_rows, "versions": scores},
    }
    parts = perf.sections(joined, min_rows, len(names), name, len(FLAGS.requests), version)
    header = _performance_header(report, joined, logged, files, warnings)
    path = monitor_report.write(
        out, report, parts, f"Realized performance: {name}", header, kind="performance"
    )
    print(performance_summary(report, path))


def _join(
    manifest: dict[str, Any],
    requests: Any,
    numbered: Any,
    label_output: str,
    probability_output: str | None,
    name: str,
) -> Any:
    """`perf.join` of the labels read to the logged requests (`perf.Joined`), the class derived
    from logged probabilities where the experiment's label is their argmax; exits in one line
    where the labels are refused or none joined."""
    from ann.monitor import performance as perf
    from ann.serve.feedback import padding_class

    names = list(manifest["outputs"][label_output]["names"])
    derive = (manifest.get("config") or {}).get("experiment") in perf.ARGMAX_EXPERIMENTS
    try:
        padding = padding_class(manifest["inputs"], manifest["outputs"], label_output)
        joined = perf.join(
            requests,
            numbered,
            names,
            label_output,
            probability_output,
            FLAGS.labels,
            derive,
            padding,
        )
    except perf.LabelsError as e:
        cli.fail(str(e))
    if not joined.joined:
        cli.fail(perf.nothing_joined(joined, requests, name, FLAGS.requests, FLAGS.labels))
    return joined


def _performance_header(
    report: dict[str, Any], joined: Any, logged: int, files: str, warnings: Sequence[str] = ()
) -> list[str]:
    """The lines atop the performance page: a not-served --model version first (a reader of the
    page thought it measured), what was joined and the labels not joined by reason, how it is
    scored, then the `warnings` printed on stderr (the page had neither: trial 42a L8)."""
    from ann.monitor import performance as perf

    version, name = report["model"]["version"], report["model"]["name"]
    label_output = report["outputs"]["predicted_class"]
    probability_output = report["outputs"]["probabilities"]
    header = []
    if report["result"]["state"] == perf.NOT_SERVED:
        header.append(
            f"--model={FLAGS.model} (version {version}) served none of the {logged} logged "
            f"requests: not measured (state {perf.NOT_SERVED}); the scores below are version "
            f"{', '.join(joined.versions)}'s"
        )
    header += [
        f"{joined.sent} labels from {FLAGS.labels} joined by request id to {logged} logged "
        f"requests of {name} in {files}: {joined.joined} joined"
        + "".join(f", {n} {reason}" for reason, n in joined.unmatched.items() if n)
        + (" (not joined)" if any(joined.unmatched.values()) else ""),
        "accuracy: the predicted class of the categorical output "
        f"{label_output!r} against the label; ECE over 15 equal-width bins of the top-class "
        f"probability ({probability_output!r}), where the log holds it",
    ]
    if joined.derived:
        header.append(
            f"{joined.derived} labels joined requests logged without {label_output!r}: their "
            f"predicted class is the argmax of the logged {probability_output!r}, as the "
            "classification export defines it"
        )
    return header + [f"warning: {line}" for line in warnings]


def not_served_warning(files: str, name: str, version: str, held: list[str]) -> str:
    """The warning for logs that hold no request to --model's version `version` of `name`,
    only to versions `held`: what result.state then says, and how to name one they hold (a
    registry version number by its models:/ URI; an export served from its directory, whose
    version is its manifest's sha256, by that directory or a models:/ URI registered from it)."""
    from ann.monitor.performance import NOT_SERVED
    from ann.registry.spec import looks_exported

    first = held[0]
    # A registry version as version numbers are written; an export's hash may be all digits
    # ("012345678901" was offered as models:/NAME/012345678901, a URI that is refused).
    registered = arguments.version_number(first) is not None and not looks_exported(first)
    how = (
        f"--model=models:/{name}/{first}"
        if registered
        else f"--model= the export directory whose manifest sha256 starts {first} (or a "
        "models:/NAME/N registered from it)"
    )
    return (
        f"{files} hold{'' if ',' in files else 's'} no request to {name} version {version} "
        f'(--model), only to version {", ".join(held)}: result.state is "{NOT_SERVED}" and '
        f"the scores printed are {'that version' if len(held) == 1 else 'those versions'}'s; "
        f"to score {'it' if len(held) == 1 else 'one'}, give {how}"
    )


def performance_summary(report: dict[str, Any], path: str) -> str:
    """The printed lines: labels joined and not by reason, then per version its accuracy and
    ECE (or too few rows to judge, or why there is no ECE), where a version has too few rows
    what to do (drift's advice, `more_requests`: the rotated files beside the logs, else the
    share of requests they hold), then the files written."""
    labels, r, m = report["labels"], report["result"], report["model"]
    unmatched = ", ".join(f"{k} {v}" for k, v in labels["unmatched"].items())
    from ann.monitor.performance import NOT_SERVED
    from ann.monitor.request_log import more_requests

    records = report["requests"]["records"]
    lines = [
        f"{labels['joined']} of {labels['labels']} labels joined to {records} logged "
        f"request{'s' * (records != 1)} of {m['name']} in "
        f"{len(report['requests']['files'])} log file"
        f"{'s' * (len(report['requests']['files']) != 1)}; not joined: {unmatched}"
    ]
    for version, s in r["versions"].items():
        this = " (--model)" if version == m["version"] else ""
        head = f"  version {version}{this}: "
        rows = f"{s['rows']} row{'s' * (s['rows'] != 1)}"  # "(1 rows < ...)" was said
        if s["state"] == NOT_SERVED:
            lines.append(f"{head}served none of the {records} logged requests (state {s['state']})")
            continue
        if s["state"] == "too_few_rows":
            lines.append(
                f"{head}too few labelled rows to judge ({rows} < --min_rows="
                f"{s['min_rows']}): {s['correct']} correct"
            )
            continue
        said = f"{head}accuracy {s['accuracy']:.4f} ({s['correct']} of {rows})"
        if s["ece"] is None:
            said += (
                f", no ECE: the log holds no probabilities ({report['outputs']['probabilities']}) "
                "for its labelled requests (their clients asked for other outputs)"
                if report["outputs"]["probabilities"]
                else ", no ECE: the model has no probability output"
            )
        else:
            some = "" if s["ece_rows"] == s["rows"] else f" of the {s['ece_rows']} logging them"
            said += f", ECE {s['ece']:.4f} over {s['bins']} bins{some}"
        lines.append(said)
    short = [s for s in r["versions"].values() if s["state"] == "too_few_rows"]
    if short:
        # The labels are short, not the traffic, where the logs hold enough requests to judge
        # had each its label (a request holds a row or more).
        unlabelled = records - labels["joined"]
        if unlabelled > 0 and records >= max(s["min_rows"] for s in short):
            have = "has" if unlabelled == 1 else "have"
            advice = (
                f"{unlabelled} of the {records} logged requests {have} no label yet: wait for "
                "more labels"
            )
        else:  # said nothing of the rotated files beside the logs, where drift names them
            samples = report["requests"].get("request_log_sample") or []
            advice = more_requests(report["requests"]["files"], samples)
        lines.append(f"  {advice} or lower --min_rows")
    pictures = len(report["figures"])
    if pictures:
        lines.append(f"wrote {path}, index.html and {pictures} picture{'s' * (pictures != 1)}")
    else:  # "and 0 pictures" was said
        lines.append(
            f"wrote {path} and index.html (no picture: no version judged with logged probabilities)"
        )
    return "\n".join(lines)


def feedback(args: list[str]) -> None:
    """`ann monitor feedback`: a labels file sent to a server (`ann.monitor.feedback`)."""
    feedback_job.feedback(args)


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "drift": drift,
    "feedback": feedback,
    "performance": performance,
}


def main(argv: list[str]) -> None:
    """Runs the command `argv[1]` with the arguments `argv[2:]` on the parsed flags."""
    command = argv[1] if len(argv) > 1 else ""
    if command not in COMMANDS:
        what = "no command given"
        if command:
            what = f"unknown command {command!r}{config_lib.did_you_mean(command, COMMANDS)}"
        raise cli.FlagError(f"{what}; commands: {', '.join(COMMANDS)} (ann monitor --help)")
    mine = OWN_FLAGS[command]
    for name in dict.fromkeys(n for names in OWN_FLAGS.values() for n in names):
        if name in mine or not FLAGS[name].present:
            continue
        # Accepted and ignored: `drift --labels=x` ran as if it were not there. Every command
        # that reads it is named (it said "read by `ann monitor feedback`" alone of --labels,
        # which performance reads too).
        readers = [f"`ann monitor {c}`" for c, names in OWN_FLAGS.items() if name in names]
        raise cli.FlagError(f"--{name} is read by {' and '.join(readers)}, not {command}; drop it")
    COMMANDS[command](argv[2:])


# Each command's flags (--model is every one's); another command's is refused.
OWN_FLAGS = {
    "drift": (
        "registry",
        "requests",
        "out",
        "method",
        "correction",
        "multivariate",
        "top",
        "min_rows",
    ),
    "feedback": ("url", "version", "labels", "batch", "token_file"),
    "performance": ("registry", "requests", "out", "labels", "min_rows"),
}


def command_help(command: str) -> str:
    """`ann monitor COMMAND --help`'s text: a line naming it, the module docstring's part from
    `command`'s usage lines to the next command's, and its own exit status paragraph."""
    doc = __doc__ or ""
    paragraphs = doc.split("\n\n")
    start = next(i for i, p in enumerate(paragraphs) if p.startswith(f"    ann monitor {command}"))
    end = next(
        i
        for i, p in enumerate(paragraphs[start + 1 :], start + 1)
        if p.startswith(("    ann ", "Exit status of "))
    )
    # Its own exit status (drift's help told of labels files and feedback batches).
    status = next(p for p in paragraphs if p.startswith(f"Exit status of `ann monitor {command}`"))
    head = f"`ann monitor {command}` (`ann monitor --help`: every monitor command)."
    kept = [head, *paragraphs[start:end], status]
    return "\n\n".join(kept).rstrip() + "\n"


def _help_for_command(argv: list[str]) -> None:
    """For `ann monitor COMMAND --help`: only that command's part of the docstring and its own
    flags (--model and OWN_FLAGS[COMMAND]), --model, --out and --min_rows as it reads them, are
    listed; the others are dropped (the help exits before anything runs). `ann monitor --help`
    lists everything."""
    command = next((a for a in argv[1:] if not a.startswith("-")), None)
    if command not in COMMANDS or not cli.wants_help(argv):
        return
    globals()["__doc__"] = command_help(command)  # what absl prints: __main__.__doc__
    # Its own: what --model names (an export, or a served name), --out's default, drift's rule
    # or performance's labelled rows for --min_rows.
    for name, helps in (("model", MODEL_HELP), ("out", OUT_HELP), ("min_rows", MIN_ROWS_HELP)):
        if command in helps:  # what it takes (--min_rows' range) kept at its end
            own = helps[command]
            FLAGS[name].help = (
                arguments.takes(own, cli.EXPECTED[name]) if name in cli.EXPECTED else own
            )
    kept = {"model", *OWN_FLAGS[command]}
    for flag in FLAGS.get_key_flags_for_module(argv[0]):
        if flag.name not in kept and flag.name in FLAGS:
            delattr(FLAGS, flag.name)


def own_example(argv: list[str]) -> None:
    """--min_rows's example in a refusal of its value is the command's own default (drift's
    MIN_ROWS, performance's MIN_LABELS): `performance --min_rows=0` suggested drift's 25."""
    command = next((a for a in argv[1:] if not a.startswith("-")), None)
    cli.EXAMPLES["min_rows"] = MIN_LABELS if command == "performance" else MIN_ROWS


if __name__ == "__main__":
    import sys

    from ann.artifact import IntegrityError, PlatformError
    from ann.monitor.request_log import RequestLogError
    from ann.registry.core import RegistryError

    define_flags()
    _help_for_command(sys.argv)
    own_example(sys.argv)
    # A bad --model (RegistryError), export (IntegrityError, no reference sample) or request
    # log: one line, exit 1. The drift tests (SciPy, JAX) are imported when they run.
    errors = (
        IntegrityError,
        PlatformError,
        RegistryError,
        "ann.monitor.drift:DriftUnavailable",
        "ann.monitor.performance:LabelsError",
        RequestLogError,
        OSError,
    )
    cli.run(main, errors=errors, quiet=True)
