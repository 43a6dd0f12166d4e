"""Sampled request/response log: JSON lines in a size-capped, rotated file, for monitoring.

Each line: `{"time", "model", "version", "id", "status", "seconds", "sample", "inputs",
"outputs"}` (or `"error"` instead of outputs), tensors as `{"shape", "data"}`. A share `sample`
of infer requests is logged (the server's `--request_log_sample`), and each record carries it:
a reader that finds too few requests names the log's own share, not the default's. In every
record, not a header line: every rotated file keeps it, and readers that take each line for a
record (older ones too) read the log as before; a log written before it has none (readers say
so). The file rotates at `max_bytes` keeping `backups` old files (the server's
`--request_log_max_bytes` and `--request_log_backups`).

No file I/O (and no JSON encoding) on the event loop: `write` puts the record's parts on a
bounded queue and a background thread formats and writes them. When the queue is full (the disk
is slower than the sampled traffic) the record is dropped and `on_drop` is called (the server
counts it in `ann_request_log_dropped_total`) instead of the server slowing down.

One server per log: each RotatingFileHandler renames the file when it rotates, so two servers
on one file rotated it under each other (records went to a file already renamed, or into the
backups' place). A server holds an advisory lock (`flock`) on `FILE.lock` beside the log while
it runs, and a second is refused (`RequestLogInUse`); the kernel drops the lock when its
process ends, however it ends, so a crashed server leaves nothing that blocks the next. The lock
is on a file of its own because the log itself is renamed at each rotation, and its lock with it.
A clean stop (SIGTERM, SIGINT) removes `FILE.lock` (it was left beside the log); a crashed
server's stays, empty of any lock, and is taken by the next.
"""

from __future__ import annotations

import fcntl
import logging
import logging.handlers
import os
import queue
import random
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import orjson


def _tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {k: {"shape": list(v.shape), "data": v.reshape(-1).tolist()} for k, v in arrays.items()}


def _end_torn_line(path: str) -> int | None:
    """Ends a last line left without its end of line (a server killed mid-write) and returns
    its number, else None. Unended, the first record appended joined it into one line that
    could not be read; ended, only the torn record is lost, its bytes kept where they were
    (nothing is removed from a log), and readers skip it with a warning as a record cut short
    (`ann.monitor.jsonlines.cut_short`)."""
    try:
        with open(path, "rb+") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return None
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return None
            f.write(b"\n")
            f.seek(0)
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return None


class _Handler(logging.handlers.RotatingFileHandler):
    """A rotating handler that keeps what a failed write (or rotation) raised in `failed`, for
    the writer thread to say (`RequestLog._write_failed`), instead of logging's traceback."""

    failed: BaseException | None = None

    def handleError(self, record: logging.LogRecord) -> None:
        self.failed = sys.exc_info()[1]


class RequestLogInUse(OSError):
    """Another server (or `RequestLog`) holds the request log's lock."""


def _lock(path: str) -> int:
    """A descriptor holding an exclusive `flock` on `path`'s lock file (`FILE.lock`, the log's
    real path + ".lock", so two spellings of one log meet), with this process's id in it for
    the refusal of the next. Raises RequestLogInUse naming the holder, or OSError when the
    lock file cannot be made, each as one line. A clean stop removes the lock file while
    holding its lock (`_unlock`; it was left beside the log): a server that opened it just
    before, and locks it after, finds the file it locked no longer at `FILE.lock` (another
    inode, or none) and opens the path again, so two servers never hold locks on two files of
    one name."""
    lock_path = lock_file(path)
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise OSError(
                f"--request_log={path}: cannot make its lock file {lock_path} ({e.strerror}); "
                "give a path in a folder this server may write"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 20, 0).decode("ascii", "replace").strip()
            os.close(fd)
            by = f" (process {holder})" if holder.isdigit() else ""
            raise RequestLogInUse(
                f"--request_log={path} is in use by another server{by}: two would rotate one "
                "file under each other; give each server its own --request_log"
            ) from None
        try:
            here = os.stat(lock_path)
        except FileNotFoundError:
            here = None
        held = os.fstat(fd)
        if here is not None and (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)  # removed by the server that held it as it stopped: open it again
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def lock_file(path: str) -> str:
    """The lock file of the request log `path`: its real path + ".lock"."""
    return os.path.realpath(path) + ".lock"


def _unlock(fd: int, lock_path: str) -> None:
    """Removes the lock file `lock_path` while `fd` holds its lock, then releases it (`_lock`
    says why that order is safe); a lock file already gone or not removable is left."""
    try:
        os.unlink(lock_path)
    except OSError:
        pass
    os.close(fd)


# Records waiting for the writer thread before new ones are dropped.
QUEUE_SIZE = 1024


class RequestLog:
    """`path` rotates at `max_bytes` keeping `backups` files (`Settings.request_log_*`).
    Raises RequestLogInUse while another holds the log (until it is closed or its process
    ends), OSError when the file cannot be opened."""

    def __init__(
        self,
        path: str,
        sample: float,
        max_bytes: int,
        backups: int,
        queue_size: int = QUEUE_SIZE,
        on_drop: Callable[[], None] = lambda: None,
    ):
        self.sample = sample
        self.dropped = 0
        self._on_drop = on_drop
        self._random = random.Random()
        self._logger = logging.getLogger(f"ann.serve.requests.{path}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._lock = _lock(path)  # first: a torn line is only ended by the log's one writer
        self._lock_path = lock_file(path)
        try:
            self._handler = self._open(path, max_bytes, backups)
        except BaseException:
            _unlock(self._lock, self._lock_path)
            raise
        self._logger.addHandler(self._handler)
        self._failing = False  # the last record could not be written (`_write_failed`)
        self._queue: queue.Queue[tuple | None] = queue.Queue(queue_size)
        self._thread = threading.Thread(target=self._drain, name="request-log", daemon=True)
        self._thread.start()

    @staticmethod
    def _open(path: str, max_bytes: int, backups: int) -> logging.Handler:
        """The rotating handler of `path`, its torn last line ended first (said on stderr)."""
        torn = _end_torn_line(path)
        if torn is not None:  # said, not done in silence: that record is lost
            from ann import cli

            cli.warn(
                f"--request_log={path} line {torn} was torn (a server stopped while writing it); "
                "ended it, so the records after it start a line of their own (readers skip the "
                "torn one)"
            )
        handler = _Handler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        return handler

    def sampled(self) -> bool:
        return self.sample > 0 and self._random.random() < self.sample

    def write(
        self,
        model: str,
        version: str,
        request_id: str | None,
        status: int,
        seconds: float,
        inputs: Mapping[str, np.ndarray] | None,
        outputs: Mapping[str, np.ndarray] | None = None,
        error: str | None = None,
    ) -> None:
        """Queues one record (the arrays by reference: the server never changes them after)."""
        record = (time.time(), model, version, request_id, status, seconds, inputs, outputs, error)
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            self._on_drop()

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._handler.failed = None
                self._logger.info(self._format(*item, sample=self.sample))
            except Exception:  # a record that cannot be written must not stop the writer
                logging.getLogger("ann.serve").exception("request log: writing failed")
                continue
            if self._handler.failed is not None:
                self._write_failed(self._handler.failed)
            elif self._failing:
                self._failing = False
                from ann import cli

                cli.note(f"--request_log={self._handler.baseFilename}: written again")

    def _write_failed(self, error: BaseException) -> None:
        """A record the file refused (a full disk, a quota, a read-only file system): dropped
        and counted as a full queue's are, and said once, in one line naming the file, until a
        record is written again. logging printed a "--- Logging error ---" traceback naming no
        file for every record sampled."""
        self.dropped += 1
        self._on_drop()
        if self._failing:
            return
        self._failing = True
        from ann import atomic, cli

        fix = atomic.storage_fix(getattr(error, "errno", None))
        words = getattr(error, "strerror", None) or f"{type(error).__name__}: {error}"
        cli.warn(
            f"--request_log={self._handler.baseFilename}: {words[:1].lower()}{words[1:]}; "
            "records are dropped (counted in ann_request_log_dropped_total) until one can be "
            f"written{': ' + fix if fix else ''}"
        )

    @staticmethod
    def _format(
        when, model, version, request_id, status, seconds, inputs, outputs, error, sample
    ) -> str:
        record: dict[str, Any] = {
            "time": when,
            "model": model,
            "version": version,
            "id": request_id,
            "status": status,
            "seconds": round(seconds, 6),
            "sample": sample,  # the share of requests logged (`--request_log_sample`)
            "inputs": _tensors(inputs) if inputs is not None else None,
        }
        if outputs is not None:
            record["outputs"] = _tensors(outputs)
        if error is not None:
            record["error"] = error
        return orjson.dumps(record).decode()

    def close(self) -> None:
        """Writes what is queued, then closes the file."""
        self._queue.put(None)
        self._thread.join()
        self._logger.removeHandler(self._handler)
        self._handler.close()
        _unlock(self._lock, self._lock_path)  # the next server may take the log now
