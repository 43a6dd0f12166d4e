"""Reading the server's request log (`ann serve --request_log=FILE`, written by
`ann.serve.request_log`) back into arrays: one JSON object per line, `{"time", "model",
"version", "id", "status", "seconds", "sample", "inputs", "outputs"}` (or `"error"` instead of
the outputs), each tensor `{"shape", "data"}` with the data flat, row-major; `"sample"`, the
share of requests the server logged (`--request_log_sample`), is absent from logs written
before it was recorded, which read as ever (`shares`: what too few requests' advice names).
A `"sample"` that is not a share in (0, 1] is ignored with one warning naming its file and
line. A line cut short is skipped with a warning: the last (no end of line: the server was killed
mid-write, or is writing it as the log is read), or one a restarted server ended and went on
after; another line that is not JSON is damage, refused naming the file and line, as is an
object that is not a request record (no "model" and "status": a training run's metrics.jsonl).

`read_traffic` keeps the successful records (status 200, with inputs) of one model: those of
its exact version when the log holds any, else those of its name (an export served under its
manifest name has a version made of its manifest's sha256; a registry URI names a version
number). Everything else is counted by reason, not read.

`read_requests` keeps every record of one model, all its versions, with its id, status, time and
logged outputs, for joining late labels to the predictions (`ann.monitor.performance`); the
inputs are not decoded.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ann import arguments, atomic
from ann.monitor.jsonlines import (
    check_file,
    compressed,
    join_command,
    joined_name,
    missing,
    objects,
    read_rotated,
    rotated_beside,
)
from ann.serve.errors import ServeError
from ann.serve.protocol import decode_data, not_a_number, short


class RequestLogError(ValueError):
    """A request log that cannot be read: missing, not JSON lines, or holding nothing usable."""


@dataclasses.dataclass
class Traffic:
    """What a request log holds for one model."""

    inputs: dict[str, np.ndarray]  # name -> [rows, ...], the signature's dtype
    outputs: dict[str, np.ndarray]  # name -> [rows, ...]; empty unless every record has all
    records: int  # requests used
    versions: list[str]  # versions of the model among them
    skipped: dict[str, int]  # reason -> records not used
    first: float  # time of the first and last record used (seconds since the epoch)
    last: float
    # (name, version) the requests were logged under when not the ones asked for: the same
    # export served from its directory (its manifest name and digest); None when they were.
    served_as: tuple[str, str] | None = None
    # The shares of requests the files logged (`shares`); empty: not recorded (an older log).
    samples: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Logged:
    """One logged request of a model (`read_requests`)."""

    id: str | None  # the infer request's id (None or "": none given)
    version: str
    status: int  # the HTTP status it was answered with
    time: float  # when it was logged (seconds since the epoch)
    # The outputs logged for it by name, the signature's dtype, [rows, ...]: those its client
    # asked for (all by default); none for a failed request.
    outputs: dict[str, np.ndarray]


@dataclasses.dataclass
class Requests:
    """What `read_requests` read: the model's logged requests, in the files' order."""

    logged: list[Logged]
    skipped: dict[str, int]  # reason -> records not used
    # id -> "MODEL version V" of other models' requests (to say where a label's id went)
    others: dict[str, str]
    served_as: tuple[str, str] | None = None  # as `Traffic.served_as`
    samples: list[float] = dataclasses.field(default_factory=list)  # as `Traffic.samples`


def _tensor(where: str, name: str, value: Any, spec: Mapping[str, Any]) -> np.ndarray:
    """A logged tensor as an array of the signature's dtype and per-row shape; RequestLogError
    naming what is wrong (it quoted NumPy's own errors, and read a null as NaN)."""
    if not isinstance(value, dict) or "shape" not in value or "data" not in value:
        raise RequestLogError(f"{where}: tensor {name!r} has no shape and data")
    shape, data = value["shape"], value["data"]
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise RequestLogError(
            f"{where}: tensor {name!r}: expected a shape (a list of sizes), got {short(shape)}"
        )
    try:
        array = np.asarray(data) if isinstance(data, list) else None
    except ValueError:  # ragged lists
        array = None
    if array is None or array.dtype.kind not in "biuf":
        # The first value that is not a number, and where (`[1,null,...` said neither).
        got = not_a_number(data) if array is not None else short(data)
        raise RequestLogError(
            f"{where}: tensor {name!r}: expected a JSON array of numbers, got {got}"
        )
    if array.size != math.prod(shape):
        raise RequestLogError(
            f"{where}: tensor {name!r}: expected {math.prod(shape)} values for the shape "
            f"{shape}, got {array.size}"
        )
    if np.dtype(spec["dtype"]).kind in "iu":  # the server's own integer checks: the cast
        try:  # wrapped -5 to 251 of a uint8 and cut 0.5 to 0, where the server refuses them
            array = decode_data(f"{where}: tensor {name!r}", value, shape, spec)
        except ServeError as e:
            raise RequestLogError(e.message) from None
    array = array.astype(np.dtype(spec["dtype"])).reshape(shape)
    if list(array.shape[1:]) != list(spec["shape"][1:]):
        raise RequestLogError(
            f"{where}: tensor {name!r} has the shape {list(array.shape)}, the model takes "
            f"{spec['shape']} (-1: any batch); is this the log of another model?"
        )
    return array


# A request log's record: what `ann.serve.request_log` always writes.
_FIELDS = ("model", "status")
# A hand edit (a torn line is skipped, `ann.monitor.jsonlines`): the rest of the file is fine,
# as metrics.jsonl's refusal says.
_DAMAGED = "; the file is damaged (delete that line to use the rest)"
_EXPECTED = "expected a request record (a JSON object a line, as `ann serve --request_log` writes)"


def named_twice(paths: Sequence[str]) -> str | None:
    """The refusal of `--requests` naming one file twice (as typed, or by another path to it:
    links resolved), or None: its requests were counted twice, and the verdict moved with
    them."""
    given: dict[str, str] = {}
    for path in paths:
        real = os.path.realpath(path)
        if real in given:
            again = f" (again as {path})" if path != given[real] else ""
            return f"--requests names {given[real]} twice{again}; give each file once"
        given[real] = path
    return None


def _records(paths: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """(where, record) for every line of every file, in order; RequestLogError naming the
    file and line that is not a request record: not a JSON object, or one without the model
    and status every record has (a training run's metrics.jsonl was read as requests "for
    model None"). A file's last line without its end of line that does not parse (the server
    was stopped while writing it, or is writing it now) is skipped with a warning, as
    metrics.jsonl's torn last line is, and so is a line cut short that a restarted server
    ended (`ann.monitor.jsonlines`)."""
    found, bad_shares = [], []
    torn = "the server was stopped while writing it, or is writing it now"
    given: dict[str, str] = {}
    wanted = "the server's request log (ann serve --request_log=FILE)"
    for path in paths:
        check_file(path, f"--requests={path}", wanted, RequestLogError)  # a FIFO: not waited on
        if (why := missing(path, f"--requests={path}", wanted)) is not None:  # rotated away
            raise RequestLogError(why)
        if not os.path.isfile(path):
            what = "is not a file" if os.path.exists(path) else atomic.absent(path)
            raise RequestLogError(f"--requests={path} {what}; give the server's request log")
        if (twice := named_twice([*given.values(), path])) is not None:
            raise RequestLogError(twice)
        given[os.path.realpath(path)] = path
        for number, record in objects(
            path, f"--requests={path}", _EXPECTED, RequestLogError, torn, _DAMAGED, wanted
        ):
            where = f"--requests={path} line {number}"
            if not all(k in record for k in _FIELDS) or not isinstance(record["model"], str):
                raise RequestLogError(_not_a_request(where, record))
            if "sample" in record and _share(record["sample"]) is None:
                bad_shares.append((where, record["sample"]))
            found.append((where, record))
    if bad_shares:  # once a read: every record of a damaged log may carry it
        from ann import cli

        where, value = bad_shares[0]
        more = len(bad_shares) - 1
        cli.warn(
            f'{where}: "sample" is {short(value)}, not a share of requests in (0, 1] (the '
            "server's --request_log_sample)"
            + (f", nor in {more} more line{'s' * (more > 1)}" if more else "")
            + "; ignored, as a line that does not record its share"
        )
    return found


def _not_a_request(where: str, record: dict[str, Any]) -> str:
    """Why the JSON object at `where` is not a request record, and what --requests takes."""
    missing = [k for k in _FIELDS if k not in record]
    if missing:
        why = f"it has no {' or '.join(repr(k) for k in missing)} field"
    else:
        why = f"its model is {short(record['model'])}, not a name"
    if "step" in record and missing:  # {"step": 0, "train/loss": ...}
        why += "; it looks like a training run's metrics.jsonl"
    return (
        f"{where} is not a request record of `ann serve --request_log` ({why}); give --requests "
        "the file the server's --request_log wrote"
    )


def _log_of(path: str) -> tuple[str, int]:
    """(the log `path` is a file of, its number): `FILE.N` (or logrotate's compressed
    `FILE.N.gz`) beside its log (FILE, or another file its rotation left: `ann serve
    --request_log_backups` keeps FILE.1, FILE.2, ...; logrotate FILE.1, FILE.2.gz) is (FILE,
    N); any other path is (itself, 0). FILE.1 beside FILE.2.gz alone was a log of its own, and
    its older lines went unnamed."""
    rotation = re.fullmatch(r"(.+)\.(\d+)(\.[a-z0-9]+)?", path)
    if rotation is not None and (not rotation[3] or compressed(path)):
        base, number = rotation[1], int(rotation[2])
        beside = {os.path.realpath(f) for f in rotated_beside(base)}
        if os.path.isfile(base) or beside - {os.path.realpath(path)}:
            return base, number
    return path, 0


def log_files(paths: Sequence[str]) -> list[str]:
    """Every file of the logs `paths` are files of, each log's newest first (FILE, then what
    its rotation left beside it, `jsonlines.rotated_beside`: FILE.1, FILE.2, logrotate's
    FILE.2.gz, FILE-20261205.gz), each file once: the log of `FILE` is FILE and the rotated
    files beside it, and a rotated file (`FILE.2`) given on its own is its log's too (FILE,
    FILE.1, FILE.3: it was taken for a log of its own, beside which nothing was rotated).
    Compressed files are named, not read: `_read_more` says how to join them."""
    found, seen = [], set()
    for path in paths:
        files = _files_of(_log_of(path)[0])
        if os.path.realpath(path) not in {os.path.realpath(f) for f in files}:
            files.append(path)  # not there: named as given, as the reader refuses it
        for file in files:
            if os.path.realpath(file) not in seen:
                seen.add(os.path.realpath(file))
                found.append(file)
    return found


def _files_of(base: str) -> list[str]:
    """The files of the log `base` that are there, newest first: itself, then what its rotation
    left beside it (`jsonlines.rotated_beside`)."""
    return ([base] if os.path.isfile(base) else []) + list(reversed(rotated_beside(base)))


def rotated(paths: Sequence[str]) -> list[str]:
    """The files of the logs `paths` are files of (`log_files`: a log and the files its
    rotation left, `FILE.1`, `FILE.2`, ..., compressed too) that `paths` does not name, in
    order."""
    given = {os.path.realpath(p) for p in paths}
    return [f for f in log_files(paths) if os.path.realpath(f) not in given]


def _read_more(paths: Sequence[str]) -> str | None:
    """'read ... too (--requests=...)' naming the files of the logs `paths` are of that they do
    not name (`rotated`), and --requests naming them all; None where there are none. A rotated
    file given on its own names its log and the log's other rotated files. Where a log's files
    include compressed ones (logrotate's FILE.2.gz), they are joined into one file, oldest
    first, with the command that does it (`jsonlines.join_command`, as a log rotated away is
    told), and --requests names that file: the plain FILE.N alone were named (FILE.2.gz left
    out), or nothing beside a rotated file given (FILE.1 and FILE.2.gz, FILE gone)."""
    more = rotated(paths)
    if not more:
        return None
    bases = list(dict.fromkeys(_log_of(p)[0] for p in paths))
    logs = [f for f in more if f in bases]  # a log itself: a rotated file of it given
    others = len(more) - len(logs)
    several = len({os.path.realpath(b) for b in bases}) > 1
    files = f"file{'s' * (others > 1)}"
    if logs:
        what = f"the log{'s' * (len(logs) > 1)} {', '.join(logs)}"
        if others:
            what += f" and {'their' if several else 'its'} other rotated {files}"
    else:
        what = f"the rotated {files} beside {'them' if several else 'it'}"
    given, joins = [], []
    for base in bases:
        mine = _files_of(base)
        if any(map(compressed, mine)):  # joined, oldest first
            given.append(joined_name(base))
            joins.append(join_command(list(reversed(mine)), joined_name(base)))
        else:
            given.extend(mine)
    flag = arguments.flag("requests", ",".join(dict.fromkeys(given)))
    if not joins:
        return f"read {what} too ({flag})"
    them = "each compressed log's files" if several else "them"
    return f"read {what} too: join {them} into one file ({'; '.join(joins)}) and give {flag}"


def _share(value: Any) -> float | None:
    """A record's `"sample"` as a share of requests in (0, 1], or None for any other value."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1:
        return float(value)
    return None


def shares(records: Sequence[tuple[str, dict[str, Any]]]) -> list[float]:
    """The shares of requests (`"sample"`, the server's `--request_log_sample`, in (0, 1]) that
    `records` were logged at, distinct, smallest first; empty for a log that does not record it
    (written before it did, or by another tool). A value that is not such a share (0, 2, "x",
    null) is ignored, and warned of once when the records are read (`_records`), naming its
    file and line: it was silently taken for a log that does not record its share."""
    found = {_share(r.get("sample")) for _, r in records}
    return sorted(x for x in found if x is not None)


def _percent(share: float) -> str:
    """0.1 -> "10%", 0.001 -> "0.1%"."""
    return f"{share * 100:.3g}%"


def _sampled(paths: Sequence[str], samples: Sequence[float]) -> tuple[str, str] | None:
    """(what the logs `paths` hold: "this log holds 10% of requests", the shares as the flag
    took them: "0.1") for logs of a share of requests (`samples`, `shares` of their records);
    None where they hold every request or do not record their share."""
    if not samples or min(samples) == 1:
        return None
    log = _these_logs(paths)
    held = " to ".join(dict.fromkeys((_percent(min(samples)), _percent(max(samples)))))
    return f"{log} {held} of requests", ", ".join(f"{s:g}" for s in samples)


def more_requests(paths: Sequence[str], samples: Sequence[float] = ()) -> str:
    """What to do for more requests than `paths` hold: read the rotated files beside them
    (it advised `--request_log_sample=1` for a log that sampled every request, its older
    requests in `FILE.1`, `FILE.2`), and for logs of a share of requests (`samples`: `shares`
    of their records; it named the default's, 0.01, whatever the server was given) raise it,
    even beside rotated files: their rows are not counted, and it advised reading them alone
    where all of them together held too few rows. Without rotated files: every request
    already (wait for more traffic), or the share to raise; a log that does not record its
    share (empty `samples`) is said so, with the default's share."""
    more, sampled = _read_more(paths), _sampled(paths, samples)
    raise_it = (
        f"{sampled[0]} (--request_log_sample={sampled[1]}); raise it to log more "
        "(`ann serve --request_log_sample=1` logs every one)"
        if sampled
        else None
    )
    if more:
        return f"{more}; {raise_it}" if raise_it else more
    if raise_it:
        return raise_it
    if not samples:
        return (
            "log more requests (`ann serve --request_log_sample=1` logs every one; the log does "
            "not record its share: the default 0.01 logs one in 100)"
        )
    log = _these_logs(paths)
    return f"{log} every request (--request_log_sample=1): wait for more traffic"


def missing_requests(paths: Sequence[str], samples: Sequence[float] = ()) -> str:
    """Where the requests that labels name but the logs `paths` do not hold may be, as advice:
    the rotated files beside them (named), and every replica's log; every request logged,
    for a log of a share of requests (`samples`, as `more_requests`), rotated files beside it
    or not (it named only the rotated files). It said "rotated files too: --requests=log,log.1"
    and "logged with --request_log_sample=1" whatever was there."""
    more, sampled = _read_more(paths), _sampled(paths, samples)
    every = f", logged with --request_log_sample=1 ({sampled[0]}: {sampled[1]})" if sampled else ""
    if more:
        return f"{more}, and every replica's request log{every}"
    log = _these_logs(paths)
    if not samples:
        share = "logged with --request_log_sample=1 (the log does not record its share)"
    elif not sampled:
        share = f"as {log} every request of {'their servers' if len(paths) > 1 else 'its server'}"
    else:
        share = every[2:]
    return f"give every replica's request log, {share}"


def compressed_rotation(paths: Sequence[str]) -> str | None:
    """For logs `paths` that hold no requests: where a rotation that the server's own reading
    of FILE.1, FILE.2 (`rotated`) does not cover moved their lines (logrotate's FILE.2.gz,
    FILE-20261205.gz beside them: `jsonlines.read_rotated`, with the command that joins them),
    or None where it left no such file. It said "log them with `ann serve --request_log=FILE`",
    or named only the plain FILE.1."""
    said = []
    for path in paths:
        if any(map(compressed, rotated_beside(path))):
            said.append((path, read_rotated(path, "requests")))
    if len(said) == 1 and len(paths) == 1:
        return said[0][1]
    return "; ".join(f"{path}: {why}" for path, why in said) or None


def _nothing_of(
    paths: Sequence[str],
    records: list[tuple[str, dict[str, Any]]],
    name: str,
    mine: int,
) -> str:
    """Why the logs `paths` give no request of model `name` (`mine`: its records of that
    name), and what to do (an empty one: the rotated files beside it, if any): the log's model
    names when it holds only others (it said "serve it with --request_log" for a log of the
    same export served under another name)."""
    # Named by the flag, as every other refusal of a file names it (it said "empty.jsonl holds
    # no requests").
    where, verb = arguments.flag("requests", ",".join(paths)), holds(paths)
    if not records:
        if (moved := compressed_rotation(paths)) is not None:
            return f"{where} {verb} no requests; {moved}"
        return f"{where} {verb} no requests; " + (
            more_requests(paths)
            if rotated(paths)
            else "log them with `ann serve --request_log=FILE` (--request_log_sample=1 logs "
            "every one)"
        )
    if mine:
        return (
            f"{where} {verb} no successful request of model {name!r}: "
            + (
                "its one request failed or was logged"
                if mine == 1
                else f"all {mine} of its requests failed or were logged"
            )
            + " without inputs"
        )
    counts: dict[str, int] = {}
    for _, r in records:
        counts[str(r.get("model"))] = counts.get(str(r.get("model")), 0) + 1
    held = (
        f"model {next(iter(counts))}"
        if len(counts) == 1
        else "models " + ", ".join(f"{k} ({n})" for k, n in sorted(counts.items()))
    )
    n = len(records)
    message = f"{where} {verb} no request of model {name!r}: "
    message += f"{'its' if len(paths) == 1 else 'their'} {n} request"
    message += f"{' is' if n == 1 else 's are'} for {held}, not {name}"
    return (
        f"{message}; give --model what `ann serve --model` was given (an export directory is "
        "served under its manifest name, a models:/ URI under its registered name)"
    )


def read_traffic(
    paths: Sequence[str],
    name: str,
    version: str | None,
    inputs: Mapping[str, Mapping[str, Any]],
    outputs: Mapping[str, Mapping[str, Any]],
    export: tuple[str, str] | None = None,
    min_rows: int = 1,
) -> Traffic:
    """The successful requests of model `name` (version `version` when the log holds it) in
    the request log files `paths`, their inputs and logged outputs as arrays of the model's
    signature (`inputs`, `outputs`: the manifest's); a log of only other versions of `name`
    gives their inputs without their outputs (the caller's model scores them). `export`: (the
    export's manifest name, its version as `ann serve` names an export directory's) when
    `name` is another (a models:/ URI's, a registered copy's): a log without requests of
    `name` but with some of that name and version holds this very export served from its
    directory (the version is its manifest's digest), and those are read (`served_as`).
    `min_rows`: the fewest rows of traffic the caller can use (`ann monitor drift`: 1; fewer
    than its --min_rows are a report of too few rows to judge, not a refusal).
    Raises RequestLogError with one line."""
    from ann.registry.spec import version_order

    records = _records(paths)
    mine = [(w, r) for w, r in records if r.get("model") == name]
    served_as = None
    if not mine and export is not None and export[0] != name:
        same = [(w, r) for w, r in records if (r.get("model"), str(r.get("version"))) == export]
        if same:  # this export (its manifest's digest) served from its directory
            (name, version), mine, served_as = export, same, export
    exact = [(w, r) for w, r in mine if version is not None and str(r.get("version")) == version]
    use = exact or mine
    skipped: dict[str, int] = {}
    if len(mine) < len(records):
        skipped["other models"] = len(records) - len(mine)
    if exact and len(exact) < len(mine):
        skipped["other versions"] = len(mine) - len(exact)
    ok = [(w, r) for w, r in use if r.get("status") == 200 and isinstance(r.get("inputs"), dict)]
    if len(ok) < len(use):
        skipped["failed or without inputs"] = len(use) - len(ok)
    if not ok:
        raise RequestLogError(_nothing_of(paths, records, name, len(use)))
    columns: dict[str, list[np.ndarray]] = {k: [] for k in inputs}
    logged: dict[str, list[np.ndarray]] = {k: [] for k in outputs}
    for where, record in ok:
        for key, spec in inputs.items():
            if key not in record["inputs"]:
                raise RequestLogError(f"{where}: the request has no input {key!r}")
            columns[key].append(_tensor(where, key, record["inputs"][key], spec))
        for key, spec in outputs.items():
            value = (record.get("outputs") or {}).get(key)
            if value is not None:
                logged[key].append(_tensor(where, key, value, spec))
    arrays = {k: np.concatenate(v) for k, v in columns.items()}
    rows = len(next(iter(arrays.values()))) if arrays else 0
    if rows < min_rows:
        raise RequestLogError(
            f"{', '.join(paths)} {holds(paths)} {_count(rows, 'row')} of model {name!r} (in "
            f"{_count(len(ok), 'successful request')}); at least {min_rows} are needed: "
            + more_requests(paths, shares(records))
        )
    # Another version's logged outputs are not this model's: it scores the inputs itself.
    others_only = version is not None and not exact
    complete = {
        k: np.concatenate(v) for k, v in logged.items() if len(v) == len(ok) and not others_only
    }
    times = [float(r.get("time") or 0.0) for _, r in ok]
    return Traffic(
        inputs=arrays,
        outputs=complete if len(complete) == len(outputs) else {},
        records=len(ok),
        # registry numbers by number ("2" before "10"), then export hashes
        versions=sorted({str(r.get("version")) for _, r in ok}, key=version_order),
        skipped=skipped,
        first=min(times),
        last=max(times),
        served_as=served_as,
        samples=shares(records),
    )


def read_requests(
    paths: Sequence[str],
    name: str,
    outputs: Mapping[str, Mapping[str, Any]],
    export: tuple[str, str] | None = None,
) -> Requests:
    """Every logged request of model `name`, of any version, in the request log files `paths`
    (rotated files too), with its logged outputs decoded as arrays of the model's signature
    (`outputs`: the manifest's); `export` as `read_traffic`'s (this export served from its
    directory, under its manifest name and digest). Inputs are not decoded. Raises
    RequestLogError with one line: a file that cannot be read or is not a request log, a bad
    tensor, or no request of the model (`_nothing_of`: which models the files hold)."""
    records = _records(paths)
    mine = [(w, r) for w, r in records if r.get("model") == name]
    served_as = None
    if not mine and export is not None and export[0] != name:
        same = [(w, r) for w, r in records if (r.get("model"), str(r.get("version"))) == export]
        if same:
            (name, _), mine, served_as = export, same, export
    if not mine:  # the files by name (it named "a, ., j, s, o, n, l", and no rotated file)
        raise RequestLogError(_nothing_of(paths, records, name, 0))
    others = {
        r["id"]: f"{r['model']} version {r.get('version')}"
        for _, r in records
        if r.get("model") != name and isinstance(r.get("id"), str)
    }
    logged = []
    for where, r in mine:
        ok = r.get("status") == 200
        decoded = {
            key: _tensor(where, key, value, outputs[key])
            for key, value in ((r.get("outputs") or {}) if ok else {}).items()
            if key in outputs and value is not None
        }
        request_id = r.get("id") if isinstance(r.get("id"), str) else None
        status = r["status"] if isinstance(r["status"], int) else 0
        when = float(r.get("time") or 0.0)
        logged.append(Logged(request_id, str(r.get("version")), status, when, decoded))
    skipped = {"other models": len(records) - len(mine)} if len(mine) < len(records) else {}
    return Requests(logged, skipped, others, served_as, shares(records))


def _these_logs(paths: Sequence[str]) -> str:
    """ "this log holds" for one file, "these logs hold" for several."""
    return f"{'this log' if len(paths) == 1 else 'these logs'} {holds(paths)}"


def holds(paths: Sequence[str]) -> str:
    """The verb of the files `paths`: "holds" for one, "hold" for several (it said "a.jsonl,
    a.jsonl.1 holds no request")."""
    return "holds" if len(paths) == 1 else "hold"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
