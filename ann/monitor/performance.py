"""Realized performance from late labels joined offline to the request logs of every replica:
`ann monitor performance`.

A server joins late labels (`ann monitor feedback`, `POST .../feedback`) only to the predictions
its own process holds: behind several replicas a label joins only on the replica that served
its request, and a restart forgets them. Every replica can log its requests (`ann serve
--request_log=FILE`, each record with its request's `id`, `version` and logged `outputs`); this
joins a file of labels, in the format `ann monitor feedback` sends (`{"id": ..., "label": ...}`
a line, read by `feedback.read_labels`), to those logs by request id, as production teams
handle delayed ground truth, and scores each model version on the joined rows.

The join is the server's own (`ann.serve.feedback.Predictions`, one store per model version, of
a capacity that holds every logged request): a label is a class index or a class name of the
model's categorical output (--model's manifest gives the names), a list of them for a request
of several rows (as many as its rows, else the line is refused, as the server refuses it); an
id's latest successful request is the one joined (a later request with the same id wins on the
server too), whichever version served it; the first label of an id counts, a later one is
`duplicate`. A label not joined is counted by reason (`REASONS`): `unknown` (no request with
that id in these logs: not logged, as with `--request_log_sample` below 1, in a rotated file
or a replica's log not given, or sent to another model), `failed` (its request was logged with
an error: there is no prediction; the server counts it unknown), `unlogged` (it succeeded, but
its client asked for outputs without the categorical one, so the log holds no predicted class;
the server, which keeps the class whatever was asked, would join it), `duplicate`. A request
whose client asked for the probabilities without the categorical output joins with the class
derived from them (`derive`: the argmax of the logged probabilities), where the experiment
defines the categorical output as exactly that: a classification export's `label` is the
argmax of the logits and its `probabilities` softmax(logits / T), T > 0, which keeps the
order (both argmaxes take the first of equal values; only two logits within float32
rounding of each other could tie in the probabilities and not in the logits). Such labels are
counted (`Joined.derived`). With every
request logged (`--request_log_sample=1`, the default 0.01 logs a hundredth) and every replica's
files given, the accuracy is the one the servers' live joins would give together.

Scores per version, on its labelled rows: accuracy (`correct / rows`), and, where the log holds
the requests' probabilities (the float output of one value per class), ECE and MCE over
`ann.metrics.calibration.BINS` = 15 equal-width bins of the top-class confidence
(`ann.metrics.calibration.reliability`) with its reliability diagram. A version with fewer than
`min_rows` labelled rows (`ann.monitor.MIN_LABELS`, 100, the server's --monitor_min_labels) is
not judged: state "too_few_rows", its counts given, accuracy and ECE null. The version
--model names that served none of the logged requests has state "not_served" (`NOT_SERVED`):
the logs' versions are scored, and said, but not as it.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

from ann.monitor.request_log import Requests, missing_requests
from ann.serve.errors import ServeError
from ann.serve.feedback import Predictions

# report.json's version (docs/monitor_reports.md), an integer under `schema_version` as `ann
# report`'s. 2: `schema_version` and `report` ("performance") replace `schema`
# ("ann.monitor.performance/1"); the rest is 1's.
SCHEMA_VERSION = 2
REASONS = ("unknown", "failed", "unlogged", "duplicate")
STATES = ("measured", "too_few_rows")
# Characters of the reliability figure's title (11 pt) a line per inch of figure width
SUPTITLE_CHARS_PER_INCH = 11
NOT_SERVED = "not_served"  # the state of a version that served none of the logged requests
# Experiments whose categorical output is by definition the argmax of their probability output
# (experiments/classification.py `predict`: label = argmax(logits), probabilities =
# softmax(logits / T)); `join` derives the class from logged probabilities only for these.
ARGMAX_EXPERIMENTS = ("classification",)


class LabelsError(ValueError):
    """A labels file that cannot be joined: a bad line, or no label matching a logged request
    (one line naming the file, the line, and why)."""


@dataclasses.dataclass
class VersionScore:
    """One model version's joined rows and their scores."""

    version: str
    requests: int  # its logged successful requests that carry an id and a predicted class
    labels: int  # labels joined (a label of a multi-row request counts once)
    store: Predictions  # the server's join, holding its predictions
    # the joined rows' labels (int64 [rows]) and, where logged, probabilities ([rows, classes])
    targets: list[np.ndarray] = dataclasses.field(default_factory=list)
    probabilities: list[np.ndarray] = dataclasses.field(default_factory=list)
    calibrated_targets: list[np.ndarray] = dataclasses.field(default_factory=list)

    @property
    def rows(self) -> int:
        """Labelled rows (the server's count)."""
        return self.store.total[1]

    @property
    def correct(self) -> int:
        """Labelled rows whose predicted class is the label (the server's count)."""
        return self.store.total[0]

    def reliability(self, min_rows: int) -> Any:
        """`calibration.Reliability` of the labelled rows with logged probabilities; None for
        too few labelled rows (< `min_rows`) or no probabilities logged."""
        from ann.metrics import calibration

        if self.rows < min_rows or not self.probabilities:
            return None
        p, y = np.concatenate(self.probabilities), np.concatenate(self.calibrated_targets)
        return calibration.reliability(p, y)

    def to_json(self, min_rows: int) -> dict[str, Any]:
        """`state` ("measured", "too_few_rows": fewer than `min_rows` labelled rows),
        `rows` (labelled), `min_rows`, `correct`, `accuracy`, `labels` (joined), `requests`
        (logged, with an id and a predicted class), `ece_rows` (labelled rows with logged
        probabilities), `ece`, `mce`, `bins`, `reliability` (`Reliability.to_json`): accuracy,
        ECE, MCE and reliability null for too few rows, the last three also without
        probabilities."""
        from ann.metrics.calibration import BINS

        judged = self.rows >= min_rows
        bins = self.reliability(min_rows)
        return {
            "state": "measured" if judged else "too_few_rows",
            "rows": self.rows,
            "min_rows": min_rows,
            "correct": self.correct,
            "accuracy": self.correct / self.rows if judged else None,
            "labels": self.labels,
            "requests": self.requests,
            "ece_rows": sum(len(t) for t in self.calibrated_targets),
            "ece": bins.ece if bins else None,
            "mce": bins.mce if bins else None,
            "bins": BINS,
            "reliability": bins.to_json() if bins else None,
        }


def not_served_json(min_rows: int) -> dict[str, Any]:
    """result.versions[V] of --model's version V that served none of the logged requests:
    `VersionScore.to_json`'s keys, state "not_served", no rows and no scores."""
    from ann.metrics.calibration import BINS

    return {
        "state": NOT_SERVED,
        "rows": 0,
        "min_rows": min_rows,
        "correct": 0,
        "accuracy": None,
        "labels": 0,
        "requests": 0,
        "ece_rows": 0,
        "ece": None,
        "mce": None,
        "bins": BINS,
        "reliability": None,
    }


@dataclasses.dataclass
class Joined:
    """Labels joined to logged requests: per version (in order of first appearance), and the
    labels not joined by reason."""

    versions: dict[str, VersionScore]
    unmatched: dict[str, int]
    sent: int  # labels read
    # Why labels did not join, for the messages: the ids of the first few unknown labels, and
    # of other models' requests among them.
    unknown_ids: list[str]
    elsewhere: dict[str, str]
    derived: int = 0  # labels joined with the class derived from logged probabilities

    @property
    def joined(self) -> int:
        return sum(v.labels for v in self.versions.values())


def _refused(path: str, line: int, error: ServeError) -> LabelsError:
    """The server's refusal of a label (`feedback.label: expected ...`) as a file line's."""
    message = error.message.removeprefix("feedback").removeprefix(".").removeprefix(": ")
    return LabelsError(f"--labels={path} line {line}: {message}")


def join(
    requests: Requests,
    labels: list[tuple[int, dict[str, Any]]],
    names: list[str],
    label_output: str,
    probability_output: str | None,
    path: str,
    derive: bool = False,
    padding: int | None = None,
) -> Joined:
    """Joins `labels` ((line, object) of the labels file `path`, `feedback.read_labels`) to the
    logged `requests` of one model by id, as the server's feedback route does (module
    docstring). `names`: the categorical output's class names; `label_output`,
    `probability_output`: the outputs holding the predicted class and the probabilities
    (`class_outputs`). Raises LabelsError naming the line for a label the server would refuse
    (not `{"id", "label"}`, a class neither index nor name, a list of the wrong length).
    `derive`: a request logged with the probabilities but not the categorical output joins with
    their argmax as its predicted class (only where the experiment defines the class so:
    `ARGMAX_EXPERIMENTS`); else such a label is `unlogged`. `padding`: the class that is a
    language model's padding token (`feedback.padding_class`), refused as a label as the
    server refuses it."""
    latest: dict[str, Any] = {}  # id -> its latest successful request
    failed: set[str] = set()
    for logged in sorted(requests.logged, key=lambda r: r.time):  # rotated files: by time
        if not logged.id:  # no join key: the server keeps no prediction either
            continue
        if logged.status == 200:
            latest[logged.id] = logged
        else:
            failed.add(logged.id)
    versions: dict[str, VersionScore] = {}
    for logged in requests.logged:  # each version, in the order the logs hold them
        if logged.version not in versions:
            store = Predictions(2 * len(latest) + 2, names, padding=padding)  # never rotates
            versions[logged.version] = VersionScore(logged.version, 0, 0, store)
    derived_ids: set[str] = set()
    for request_id, logged in latest.items():
        predicted = logged.outputs.get(label_output)
        if predicted is None and derive and probability_output in logged.outputs:
            predicted = logged.outputs[probability_output].argmax(-1).astype(np.int32)
            derived_ids.add(request_id)
        if predicted is not None:
            score = versions[logged.version]
            score.store.record(request_id, predicted, 0)
            score.requests += 1
    parser = Predictions(0, names, padding=padding)
    unmatched = dict.fromkeys(REASONS, 0)
    unknown_ids: list[str] = []
    elsewhere: dict[str, str] = {}
    derived = 0
    for line, item in labels:
        try:
            ((request_id, classes),) = parser.parse(item)
        except ServeError as e:
            raise _refused(path, line, e) from None
        logged = latest.get(request_id)
        joinable = logged is not None and (
            label_output in logged.outputs or request_id in derived_ids
        )
        if not joinable:
            reason = "unlogged" if logged else "failed" if request_id in failed else "unknown"
            unmatched[reason] += 1
            if reason == "unknown":
                if len(unknown_ids) < 3:
                    unknown_ids.append(request_id)
                if request_id in requests.others:
                    elsewhere[request_id] = requests.others[request_id]
            continue
        score = versions[logged.version]
        try:
            reply = score.store.join([(request_id, classes)])
        except ServeError as e:  # a label list of another length than its request's rows
            raise _refused(path, line, e) from None
        if not reply["matched"]:
            unmatched["duplicate"] += reply["unmatched"]["duplicate"]
            continue
        score.labels += 1
        derived += request_id in derived_ids
        target = np.asarray(classes, np.int64)
        score.targets.append(target)
        if probability_output in logged.outputs:
            score.probabilities.append(logged.outputs[probability_output])
            score.calibrated_targets.append(target)
    return Joined(versions, unmatched, len(labels), unknown_ids, elsewhere, derived)


def nothing_joined(
    joined: Joined, requests: Requests, name: str, paths: Sequence[str], path: str
) -> str:
    """Why no label of `path` joined a request of model `name` in the logs `paths`, and what
    to do, as one line."""
    from ann.registry.spec import version_order

    files = ", ".join(paths)
    reasons = ", ".join(f"{k} {v}" for k, v in joined.unmatched.items() if v)
    said = (
        f"none of the {joined.sent} labels in {path} joined a logged request of {name} ({reasons})"
    )
    with_ids = [r for r in requests.logged if r.id]
    held = sorted({r.version for r in requests.logged}, key=version_order)  # "2" before "10"
    if joined.elsewhere:
        some = next(iter(joined.elsewhere.items()))
        return (
            f"{said}: {len(joined.elsewhere)} of their ids are requests to another model (id "
            f"{some[0]!r}: {some[1]}); give --model the model they were sent to"
        )
    hold = f"hold{'s' * (',' not in files)}"  # one file holds
    if joined.unmatched["unknown"] and not with_ids:
        logged = len(requests.logged)
        return (
            f"{said}: {files} {hold} {logged} request{'s' * (logged != 1)} "
            f"of {name} (version {', '.join(held)}), none with an id; a label joins by the "
            'infer request\'s id: send requests with an "id"'
        )
    if joined.unmatched["unknown"]:
        example = with_ids[-1].id
        return (
            f"{said}: the labels' ids (e.g. {joined.unknown_ids[0]!r}) are not in {files}, "
            f"which {hold} {len(with_ids)} request{'s' * (len(with_ids) != 1)} with "
            f"id{'s' * (len(with_ids) != 1)} (e.g. {example!r}) to version "
            f"{', '.join(held)}; {missing_requests(paths, requests.samples)}"
        )
    if joined.unmatched["unlogged"]:
        return (
            f"{said}: their requests' clients asked for outputs without the predicted class "
            "(or, for a classification export, the probabilities it is the argmax of), so the "
            "log holds none to join; ask for every output (the default)"
        )
    return f"{said}: every request they name failed (no prediction to join)"


def unjoined_warnings(
    joined: Joined, paths: Sequence[str], samples: Sequence[float] = ()
) -> list[str]:
    """Why some labels did not join (when others did), as `feedback.unjoined_warnings` says it
    for a server; where the missing requests may be, from the logs `paths` and the shares of
    requests they hold (`samples`: `request_log.missing_requests`)."""
    said, sent = [], joined.sent
    unknown, duplicate = joined.unmatched["unknown"], joined.unmatched["duplicate"]
    unlogged = joined.unmatched["unlogged"]
    if unknown:
        said.append(
            f"{unknown} of {sent} labels name{'s' * (unknown == 1)} request ids these logs do not "
            f"hold (e.g. {joined.unknown_ids[0]!r}): requests not logged, in files not given, "
            f"or sent to another model; {missing_requests(paths, samples)}"
        )
    if unlogged:
        said.append(
            f"{unlogged} of {sent} labels name{'s' * (unlogged == 1)} requests whose clients asked "
            "for outputs without the predicted class (or, for a classification export, the "
            "probabilities it is the argmax of): the log holds none to join (the server's live "
            "join would have counted them)"
        )
    if duplicate:
        said.append(
            f"{duplicate} of {sent} labels {'is' if duplicate == 1 else 'are'} for rows labelled "
            "before (the first label counts): is an id in the file twice?"
        )
    return said


def sections(
    joined: Joined,
    min_rows: int,
    classes: int,
    name: str,
    logs: int,
    model_version: str | None = None,
) -> list[Any]:
    """The report's sections: a table of each version's scores, and the reliability diagram
    of each version judged with logged probabilities (accuracy per confidence bin, the gap to
    its mean confidence, the rows per bin: `reliability_axes`, as `ann report` draws it), side
    by side. `model_version`: --model's, tagged "(--model)"; where it served none of the
    requests, a row of its own, state "not_served", and the diagram's title says so."""
    from ann.metrics.calibration import BINS
    from ann.report.sections import Section
    from ann.report.sections.classification import reliability_axes, reliability_grid

    columns = ("state", "rows", "correct", "accuracy", "ece", "mce", "ece_rows")
    table = {}
    for version, score in joined.versions.items():
        scores = score.to_json(min_rows)
        tag = " (--model)" if version == model_version else ""
        table[f"version {version}{tag}"] = {k: scores[k] for k in columns}
    served = model_version is None or model_version in joined.versions
    if not served:  # the page named only the logs' versions: a reader thought it measured
        scores = not_served_json(min_rows)
        table[f"version {model_version} (--model)"] = {k: scores[k] for k in columns}
    drawn = {v: s for v, s in joined.versions.items() if s.reliability(min_rows) is not None}
    figures = {}
    if drawn:
        figure, grid = reliability_grid(len(drawn))
        for column, (version, score) in enumerate(drawn.items()):
            bins = score.reliability(min_rows)
            rows = int(bins.counts.sum())
            tag = " (--model)" if version == model_version else ""  # as the table's and lines'
            title = (
                f"version {version}{tag}:\naccuracy {score.correct / score.rows:.4f}, "
                f"ECE {bins.ece:.4f} ({rows} rows)"
            )
            reliability_axes(grid[0, column], grid[1, column], bins, title, classes)
        said = [
            f"Realized reliability of {name}: late labels joined to {logs} request log"
            f"{'s' * (logs != 1)} ({BINS} bins)"
        ]
        if not served:
            said.append(
                f"version {model_version} (--model) served none of the requests: not drawn "
                f"({NOT_SERVED})"
            )
        # Wrapped to the figure's width: the LM's long name made one line wider than its one
        # panel, and the saved picture (bbox "tight") was a narrow plot in a wide figure.
        width = int(figure.get_figwidth() * SUPTITLE_CHARS_PER_INCH)
        lines = [textwrap.fill(line, width, break_long_words=False) for line in said]
        figure.suptitle("\n".join(lines), fontsize=11)
        figure.tight_layout()
        figures["reliability"] = figure
    return [Section("Versions", table, figures)]
