"""`WORKDIR/run_status.json`: how a run stands, written atomically by process 0.

`running` while training (its `step`: the start's, then each checkpoint's as its save begins,
not the step training is at: `recorded_at` words it), then `done` (reached total_steps),
`interrupted` (SIGTERM, Ctrl-C or a hook's stop: the same command resumes), `diverged` (the
loss or the train state became non-finite; nothing non-finite was saved), `failed` (an error
ended the run, e.g. a checkpoint save that failed; the message says which and how to resume),
or a reason a hook gave to end the run as finished (`early_stopped`, `pruned`): re-running the
same command then does not train further. Sweeps read this file to tell a finished trial from
one that still has work to do.

Every record carries the `host` and `pid` of the process that wrote it, so a `running` record
left by a process that was killed (no chance to write anything else) is recognised as stale on
the next start (`stale_running`), not taken for a live run. A start that ends before its first
step (a stop, or a failure before the run is open) replaces an earlier process's record with its
own (`replace_earlier`): it stayed, naming that process and how it had ended.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import socket
from typing import Any

from ann import atomic, directory_kind

FILENAME = "run_status.json"
FINISHED_EARLY = ("early_stopped", "pruned")  # finished before total_steps; a rerun is a no-op
TERMINATED_STARTING = "terminated (SIGTERM)"
STOPPED_STARTING = "interrupted (Ctrl-C)"


def path(workdir: str) -> str:
    return os.path.join(workdir, FILENAME)


METRICS = ("eval_metrics", "best_eval_metrics")  # {name: value} each; a NaN one written null


def read(workdir: str) -> dict[str, Any] | None:
    """The status record, or None if the run never started (or the file is unreadable); a null
    metric (NaN, written by `write` as null) is read as NaN."""
    try:
        with open(path(workdir)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if not (isinstance(record, dict) and "status" in record):
        return None
    for key in METRICS:  # null: a non-finite metric (`write`), NaN again as the run had it
        if isinstance(record.get(key), dict):
            record[key] = {k: math.nan if v is None else v for k, v in record[key].items()}
    return record


def unreadable(workdir: str) -> str | None:
    """Why a run_status.json that exists is not a status record (not JSON, not an object with
    a `status`), or None (a record, or no file). `read` takes such a file for none: the start
    that finds it says so (an early-stopped run would train on without a word)."""
    record, why = atomic.read_json(path(workdir))
    if why is not None and why.startswith("is not JSON"):
        return "is not JSON (damaged, or edited by hand)"
    if why is not None or record is None:
        return why
    if not isinstance(record, dict) or "status" not in record:
        return "holds no status record"
    return None


def write(workdir: str, status: str, step: int, **info: Any) -> None:
    """Replaces the record atomically (temp file + rename), so a reader never sees half of it."""
    os.makedirs(workdir, exist_ok=True)
    record = {
        "status": status,
        "step": int(step),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        **info,
    }
    with atomic.replacing(path(workdir)) as f:
        # Insertion order kept: a finished run's rerun prints its metrics in the order the run did.
        # A NaN metric as null (a bare NaN is not JSON); `read` takes null back as NaN.
        f.write(atomic.json_text(record, indent=2, default=float))
        f.write("\n")


def finished(
    record: dict[str, Any] | None, total_steps: int | None, newest: int | None = None
) -> bool:
    """Whether `record` is a finished run's, which a start with `total_steps` (None: not known,
    e.g. num_epochs decides) trains no further: early_stopped, pruned, and done unless
    `total_steps` goes past its step. `newest`: the newest committed checkpoint, where known;
    one older than the record's step (damaged steps set aside by a resume) trains on from it:
    "the run is finished (done at step 600)" was said of a run resuming from step 400."""
    if record is None:
        return False
    step = record.get("step")
    if isinstance(step, int) and newest is not None and newest < step:
        return False
    trains_on = bool(total_steps) and isinstance(step, int) and total_steps > step
    return record["status"] in FINISHED_EARLY or (record["status"] == "done" and not trains_on)


def stopped_starting(how: str, workdir: str, total_steps: int | None = None) -> str:
    """The line for a run stopped (`how`: `STOPPED_STARTING` or `TERMINATED_STARTING`) before
    its first step: ann train's last line, and the record's message where one is rewritten
    (`replace_earlier`, called by ann/main.py). A resumed run's start keeps its checkpoints,
    so the same command resumes from the newest; it said "start again", beside
    run_status.json's "checkpoint saved; run the same command to resume". A finished run's
    (`finished`, with this start's `total_steps`) says so: it said "run the same command to
    resume from step 600" of a run that was done, whose record stays done."""
    record = read(workdir)
    steps = directory_kind.committed_steps(os.path.join(workdir, "checkpoints"))
    if finished(record, total_steps, steps[0] if steps else None):
        return (
            f"{how} while starting, before the first step; the run is finished "
            f"({record['status']} at step {record.get('step')}): nothing to resume"
        )
    then = f"resume from step {steps[0]}" if steps else "start again"
    return f"{how} while starting, before the first step; run the same command to {then}"


def replace_earlier(
    workdir: str, status: str, message: str, total_steps: int | None = None
) -> bool:
    """Rewrites the record an earlier process left, for a start that ended before its first
    step (`status` "interrupted" for a stop, with `stopped_starting`'s line; "failed" for an
    error): at the newest committed checkpoint, with this process's host and pid, and the
    earlier record's `eval_metrics` and `best_eval_metrics` (they describe the checkpoints,
    which the start left as they were: a rerun that reaches total_steps reports them). The
    earlier record stayed: a resumed run stopped while starting left the run before's pid and
    ending in place ("interrupted at step 850 (Ctrl-C); checkpoint saved; ..." or a failure),
    beside ann train's own "resume from step 850" line. `total_steps`: this start's (None:
    not known, e.g. num_epochs decides). Returns whether it wrote.

    Left as they are: no file (a fresh workdir's start leaves none); a file that is no record
    (the next start warns of it); a finished run's record (early_stopped, pruned, and done
    unless `total_steps` goes past its step: a rerun trains nothing, and a sweep skips the
    trial, by it); this process's own record, unless `running` (the loop recorded its end,
    e.g. `failed` once the run was open); and a workdir whose lock another run holds (the
    record is that run's). Process 0's: it tries the lock process 0 of a run takes
    (WORKDIR/.lock, ann/train/workdir.py) without JAX, which ann train's stop handler may not
    have imported. Raises OSError if the record cannot be written."""
    if not os.path.exists(path(workdir)):
        return False
    fd = os.open(os.path.join(workdir, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # another run holds the workdir
        os.ftruncate(fd, 0)  # who holds it, as a run's lock says (a refused start names it)
        os.write(fd, f"host {socket.gethostname()} pid {os.getpid()}\n".encode())
        record = read(workdir)
        saved = directory_kind.committed_steps(os.path.join(workdir, "checkpoints"))
        last = saved[0] if saved else None
        if record is None or finished(record, total_steps, last):
            return False
        own = record.get("pid") == os.getpid() and record.get("host") == socket.gethostname()
        if own and record["status"] != "running":
            return False
        info = {"total_steps": total_steps} if total_steps else {}
        kept = {k: record[k] for k in METRICS if k in record}
        write(workdir, status, last or 0, **info, message=message, last_checkpoint=last, **kept)
        return True
    finally:
        os.close(fd)  # releases the lock


def alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (signal 0; another user's counts)."""
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def live_owner(record: dict[str, Any] | None) -> int | None:
    """The pid of another live process on this host whose `running` record this is, else None."""
    if not record or record.get("status") != "running":
        return None
    pid = record.get("pid")
    if record.get("host") == socket.gethostname() and isinstance(pid, int):
        if pid != os.getpid() and alive(pid):
            return pid
    return None


def stale_running(record: dict[str, Any] | None) -> str:
    """For a `running` record whose writer is gone (or may be: it ran on another host, or is
    this very process, whose earlier run raised): one line saying so; "" for any other record
    and for a live writer on this host (see `live_owner`)."""
    if not record or record.get("status") != "running" or live_owner(record) is not None:
        return ""
    host, pid = record.get("host"), record.get("pid")
    if not host:
        who = "a process that recorded no host or pid"
    elif host == socket.gethostname():
        who = f"pid {pid} on this host, which is no longer running"
    else:
        who = f"pid {pid} on host {host}; this is {socket.gethostname()}, so it cannot be checked"
    return (
        f"{path('WORKDIR')} says 'running', {recorded_at(record)} ({who}): that run was killed "
        "or crashed without recording how it ended; not trusted"
    )


def recorded_at(record: dict[str, Any]) -> str:
    """Where a `running` record's step is from, in words: it is written at the run's start and
    as each checkpoint save begins, not as training goes ("step 200 of 1000 when last
    recorded (its start or its last checkpoint begun)"); a reader took it for the step
    training was at."""
    total = record.get("total_steps")
    of = f" of {total}" if total else ""
    return (
        f"step {record.get('step')}{of} when last recorded (its start or its last checkpoint begun)"
    )
