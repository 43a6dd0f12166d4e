"""The run's directory: checked before anything is written, and locked for the run's life.

Two runs in one workdir would overwrite each other's checkpoints, metrics and status, so a run
holds an exclusive `fcntl.flock` on `WORKDIR/.lock` (process 0; process i of a multi-process
run on `WORKDIR/.lock.i`, so every process of a second run is refused, not left waiting for its
peers) from before it writes anything until it ends. The operating system drops the lock when
the process exits, however it exits, so a crash never leaves a workdir locked. The file holds
the holder's host and pid, which a refused run names. (flock is advisory and, on network file
systems, only as good as their lock support; NFSv4 and Lustre carry it across hosts.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
from collections.abc import Iterator

import jax

from ann import atomic, directory_kind
from ann.config import ConfigError


class WorkdirError(ConfigError):
    """The workdir cannot hold this run: not a directory, not writable, or in use."""


def check(workdir: str) -> None:
    """Raises WorkdirError, naming the path and the fix, when `workdir` is a file or cannot be
    created or written; creates nothing."""
    if not workdir.strip():
        raise WorkdirError(
            "workdir is empty; give the run's directory (--workdir, created if missing)"
        )
    if directory_kind.EXPORT in directory_kind.of(workdir):
        raise WorkdirError(
            f"workdir {workdir!r} is an export (it holds manifest.json); choose another --workdir"
        )
    why = atomic.why_not_creatable(workdir)
    if why:
        raise WorkdirError(
            f"workdir {workdir!r} {why}; choose another --workdir (a directory, created if "
            "missing)" + (" or fix the permissions" if "permission" in why else "")
        )
    _check_entries(workdir)


# What a run keeps in its workdir (README "What a run writes"), each opened as a directory or as
# a file by a start or its run.
DIRECTORIES = (
    "checkpoints",
    "checkpoints_best",
    directory_kind.CHECKPOINTS_DAMAGED,
    "tensorboard",
    "profile",
)
FILES = (
    "config.json",
    "data_dir.json",
    "config_changes.jsonl",
    "metrics.jsonl",
    "run_status.json",
    "parameters.tsv",
    "init_from.json",
)


def _check_entries(workdir: str) -> None:
    """Raises WorkdirError where an entry the run opens is of the wrong kind: `checkpoints`
    or `tensorboard` a file ("WORKDIR/checkpoints is a file, so nothing can be below it", as
    `atomic.below_a_file` says of any such path), `.lock` or `metrics.jsonl` a directory (or
    a FIFO, which would block the start for good). Each was a traceback (NotADirectoryError,
    IsADirectoryError), `tensorboard`'s after training had begun, with run_status failed."""
    for name in (*DIRECTORIES, *FILES, os.path.basename(_lock_path(workdir))):
        path = os.path.join(workdir, name)
        try:
            kind = atomic.file_kind(os.stat(path).st_mode)
        except OSError:  # absent (or a dangling link: its own error, where it is opened)
            continue
        if name in DIRECTORIES:
            if kind == "a directory":
                continue
            why = atomic.below_a_file(os.path.join(path, ""))
        elif kind is None:
            continue
        else:
            why = f"{path} is {kind}, not a file"
        raise WorkdirError(
            f"workdir {workdir!r} cannot hold the run: {why}; move it out of the workdir, or "
            "choose another --workdir"
        )


def _lock_path(workdir: str) -> str:
    index = jax.process_index()
    return os.path.join(workdir, ".lock" if index == 0 else f".lock.{index}")


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
    """Holds this process's lock on `workdir` (created if missing) while the block runs.
    Raises WorkdirError naming the host and pid of the run that holds it. In a multi-process
    run every process raises when any one found its lock held: process i > 0 locks a file of
    its own, so it would go on alone, into collectives its refused peer never joins (a hang)."""
    os.makedirs(workdir, exist_ok=True)
    path = _lock_path(workdir)
    existed = os.path.exists(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    holder = None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "a process"
    refused_by = _first_refused(holder is not None)
    if refused_by is not None:
        os.close(fd)
        if not existed:  # not another run's file: this start made it
            with contextlib.suppress(OSError):
                os.remove(path)
        found = (
            f"{holder}, holding {path}"
            if holder is not None
            else f"process {refused_by} of {jax.process_count()} found its lock held"
        )
        raise WorkdirError(
            f"workdir {workdir} is in use by another run ({found}); wait for it to end or stop "
            "it, or choose another --workdir"
        )
    try:
        with atomic.writing(path):  # a full disk's failed write names no file
            os.ftruncate(fd, 0)
            os.write(fd, f"host {socket.gethostname()} pid {os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays, harmlessly


def _first_refused(mine: bool) -> int | None:
    """The first process whose lock was held (`mine`: this one's was), or None: shared by a
    one-number all-gather when there are several processes."""
    if jax.process_count() == 1:
        return jax.process_index() if mine else None
    import numpy as np
    from jax.experimental import multihost_utils

    flags = np.asarray(multihost_utils.process_allgather(np.int32(mine))).ravel()
    refused = np.flatnonzero(flags)
    return int(refused[0]) if refused.size else None


def entries(workdir: str) -> set[str] | None:
    """The names in `workdir`, or None if it does not exist: taken before a start writes, so
    that a refused start can remove what it added (`remove_added`)."""
    try:
        return set(os.listdir(workdir))
    except FileNotFoundError:
        return None


def remove_added(workdir: str, before: set[str] | None) -> None:
    """Removes what a start refused before its first step wrote (config.json, parameters.tsv,
    an empty metrics.jsonl, checkpoint directories): the whole workdir if the start created it
    (`before` is None), else the entries not in `before`. A refused start reads as a workdir
    that holds a run (`ann report`, `ann export`, a sweep's results) if they stay. Never
    checkpoints_damaged/: what a resume moved there is the run's (a damaged step, an intact
    best set aside), and a Ctrl-C or SIGTERM while starting deleted it with the rest."""
    if before is None:
        shutil.rmtree(workdir, ignore_errors=True)
        return
    for name in entries(workdir) or set():
        if name not in before and name != directory_kind.CHECKPOINTS_DAMAGED:
            path = os.path.join(workdir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(path)
