"""Writes scalar metrics to TensorBoard event files and `metrics.jsonl` in the workdir.

Only process 0 writes. On resume, lines for steps after the restored checkpoint are dropped, so
the file reads as one uninterrupted run; a fresh start drops every line (an earlier attempt's,
stopped before its first checkpoint). JSON has no NaN or infinity: a non-finite value is
written as the string "nan", "inf" or "-inf" (what Python's `float()` parses), never dropped or
turned into null, and `read_records` turns those strings back into floats, so whatever replays
the file on resume (early stopping) sees what the uninterrupted run saw.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable

from ann import atomic, console

NON_FINITE = ("nan", "inf", "-inf")


def encode(value: float) -> float | str:
    """A float as metrics.jsonl stores it: itself, or "nan" / "inf" / "-inf"."""
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def decode(record: dict) -> dict:
    """A metrics.jsonl record with "nan"/"inf"/"-inf" strings turned back into floats."""
    return {k: float(v) if isinstance(v, str) and v in NON_FINITE else v for k, v in record.items()}


class MetricsFileError(ValueError):
    """A metrics.jsonl line before the last one that is not a JSON record: the file is damaged
    (a torn last line is only a crash mid-write, and is skipped); or a metrics.jsonl that
    cannot be read at all (a directory)."""


_WARNED: set[tuple[str, int]] = set()  # (file, line) of the torn lines already named


def _parse(path: str, lines: list[str]) -> list[tuple[str, dict]]:
    """(line, record) of every non-blank line of a metrics.jsonl file (`parse_lines`' rule)."""
    return parse_lines(path, lines, lambda r: "step" in r, "a metrics record", MetricsFileError)


def parse_lines(
    path: str,
    lines: list[str],
    is_record: Callable[[dict], bool],
    what: str,
    error: type[Exception],
) -> list[tuple[str, dict]]:
    """(line, record) of every non-blank line of the JSON-lines file `path` that ann appends to
    (metrics.jsonl, config_changes.jsonl), one rule for all: a last line that does not parse
    as a JSON object `is_record` accepts (its writer stopped while writing it) is skipped with
    a warning (once per file and line); any other raises `error` naming the file, the line
    number and `what` a line should be."""
    filled = [i for i, line in enumerate(lines) if line.strip()]
    parsed = []
    for i in filled:
        try:
            record = json.loads(lines[i])
            if not isinstance(record, dict) or not is_record(record):
                raise ValueError("not a record")
        except ValueError:
            if i == filled[-1]:
                if (path, i) not in _WARNED:  # resume reads the file twice: one warning
                    _WARNED.add((path, i))
                    console.warn(f"{path}: skipping line {i + 1}, torn by a crash mid-write")
                continue
            raise error(
                f"{path}: line {i + 1} is not {what}; the file is damaged (delete "
                "that line to use the rest)"
            ) from None
        parsed.append((lines[i], record))
    return parsed


def read_lines(path: str, error: type[Exception], fix: str) -> list[str] | None:
    """The lines of a JSON-lines file ann appends to (for `parse_lines`), None where it does
    not exist; raises `error` naming it, why it cannot be read (a directory, no permission, not
    UTF-8 text) and `fix`. A byte order mark an editor added is read past."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.readlines()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise error(f"{path} cannot be read ({why}); {fix}") from e


def records_and_torn(path: str) -> tuple[list[dict], bool]:
    """Every record of a metrics.jsonl file, decoded, and whether its last line was torn (and
    skipped); [] if the file does not exist. A torn last line is skipped with a warning;
    raises MetricsFileError for a damaged line before it, and for a file that cannot be read
    (a directory, no permission, not UTF-8 text), naming it and the fix: `ann export` said
    that with a traceback (IsADirectoryError)."""
    lines = read_lines(
        path,
        MetricsFileError,
        "ann train appends the run's metrics to it: put back a good copy, or move it out of "
        "the workdir (the run then has no metrics record)",
    )
    if lines is None:
        return [], False
    parsed = _parse(path, lines)
    filled = sum(1 for line in lines if line.strip())
    return [decode(record) for _, record in parsed], len(parsed) < filled


def read_records(path: str) -> list[dict]:
    """Every record of a metrics.jsonl file, decoded (`records_and_torn`'s rule and errors)."""
    return records_and_torn(path)[0]


# tensorboardX's writer thread flushes its event file this often (its default, 120 s, lost up to
# two minutes of points to a SIGKILL or a preempted machine, which metrics.jsonl, flushed per
# record, kept). A flush every 2 s while points arrive costs nothing a run would notice.
TENSORBOARD_FLUSH_SECONDS = 2


class MetricWriter:
    def __init__(self, workdir: str, resume_step: int | None = None):
        # Imported here: a reader of metrics.jsonl (a sweep, `ann registry`) needs neither.
        import jax
        import tensorboardX

        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        # A fresh start (None) keeps nothing: an earlier attempt stopped before its first
        # checkpoint left its step-0 compile and start-up records beside the new ones.
        self._truncate_after(resume_step if resume_step is not None else -1)
        self._file = open(self.path, "a")
        # TensorBoard likewise: its reader drops the earlier event files' points at steps from
        # `purge_step` on (a SessionLog START event, TensorBoard's restart mechanism), so a
        # resumed run shows no doubled stretch and a fresh start none of an earlier attempt.
        # The file's name has whole seconds: two starts in one second shared a file, and the
        # second's truncated the first's. Nanoseconds after it keep the names apart and in the
        # order of their starts, the order TensorBoard reads (and purges) them in.
        self._tb = tensorboardX.SummaryWriter(
            os.path.join(workdir, "tensorboard"),
            purge_step=resume_step + 1 if resume_step is not None else 0,
            filename_suffix=f".{time.time_ns()}",
            flush_secs=TENSORBOARD_FLUSH_SECONDS,
        )
        # What the event file's writes raised (the first OSError, named), in a list the guard's
        # wrappers share, not through `self`: tensorboardX's atexit hook holds the event writer
        # for good, and wrappers holding the MetricWriter kept it (its SummaryWriter and
        # histogram bins) alive after `close`, one per run in a notebook's or a sweep's process.
        self._tb_errors: list[OSError] = []
        self._tb_raised = False
        self._guard_event_file()

    def _guard_event_file(self) -> None:
        """Makes a failed write of the TensorBoard event file (a full disk) the run's error,
        naming the file, instead of the death of tensorboardX's writer thread: it printed a
        traceback, the run then blocked for good once its queue of 10 points was full, and its
        close raised "No space left on device" naming no file (and again at exit). Each write
        and flush of the event file, in that thread or here, records its OSError (the first)
        and skips the file's later writes; `write` and `close` raise it. Reaches into
        tensorboardX's writer (2.6): where that has changed, nothing is guarded."""
        events = getattr(
            getattr(getattr(self._tb, "file_writer", None), "event_writer", None),
            "_ev_writer",
            None,
        )
        path = getattr(events, "_file_name", None)
        if path is None:
            return
        errors = self._tb_errors  # not `self`: see __init__

        def guarded(method):
            def call(*args, **kwargs):
                if errors:
                    return None
                try:
                    return method(*args, **kwargs)
                except OSError as e:
                    if e.filename is None:
                        e.filename = path
                    errors.append(e)
                    return None

            return call

        for name in ("write_event", "flush", "close"):
            setattr(events, name, guarded(getattr(events, name)))

    def _raise_tb_error(self) -> None:
        """Raises the event file's recorded OSError, once."""
        if self._tb_errors and not self._tb_raised:
            self._tb_raised = True
            raise self._tb_errors[0]

    def _truncate_after(self, step: int) -> None:
        if not os.path.exists(self.path):
            return
        with open(self.path, encoding="utf-8-sig") as f:
            parsed = _parse(self.path, f.readlines())
        keep = [line for line, record in parsed if record["step"] <= step]
        with atomic.replacing(self.path) as f:
            f.writelines(keep)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._raise_tb_error()
        clean = {k: float(v) for k, v in metrics.items()}
        record = {"step": int(step), **{k: encode(v) for k, v in clean.items()}}
        with atomic.writing(self.path):  # a full disk's write names no file
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        for key, value in clean.items():
            self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        """Closes metrics.jsonl and the event file (both, whatever the first raises); raises
        the first OSError (a full disk), naming its file."""
        if not self.enabled:
            return
        try:
            with atomic.writing(self.path):
                self._file.close()
        except BaseException:
            self._tb.close()  # its own error, if any, after this one: not said
            raise
        self._tb.close()
        self._raise_tb_error()
