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
the next start (`stale_running`), not taken for a live run.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from ann import atomic

FILENAME = "run_status.json"
FINISHED_EARLY = ("early_stopped", "pruned")  # finished before total_steps; a rerun is a no-op


def path(workdir: str) -> str:
    return os.path.join(workdir, FILENAME)


def read(workdir: str) -> dict[str, Any] | None:
    """The status record, or None if the run never started (or the file is unreadable)."""
    try:
        with open(path(workdir)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "status" in record else None


def unreadable(workdir: str) -> str | None:
    """Why a run_status.json that exists is not a status record (not JSON, not an object with
    a `status`), or None (a record, or no file). `read` takes such a file for none: the start
    that finds it says so (an early-stopped run would train on without a word)."""
    try:
        with open(path(workdir), "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    try:
        record = json.loads(text)
    except ValueError:
        return "is not JSON (damaged, or edited by hand)"
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
        json.dump(record, f, indent=2, default=float)
        f.write("\n")


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
