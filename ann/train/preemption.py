"""SIGTERM (what schedulers send before a hard stop), or a first Ctrl-C (SIGINT), becomes a
request to save and exit; a second Ctrl-C stops at once.

While the loop trains, either signal asks it to stop at the next step boundary with a
checkpoint saved (run_status.json: `interrupted`; the same command resumes). A Ctrl-C while a
stop is already pending raises KeyboardInterrupt there and then: nothing more is saved, and the
loop records `interrupted` at the step it reached, with the last checkpoint. Outside the loop
(start-up, compiling, the last save) Ctrl-C is Python's KeyboardInterrupt as usual: waiting for
a step there could mean waiting through a long compile.

Several processes must stop at the same step, or one would save while the others wait in the
next step's collectives. So in a multi-process run the request is shared at the steps where the
loop already syncs with the host (those where a hook is due, at least every `log_every_steps`):
all processes stop at the first such step after any of them was signalled; one that got no
signal names the one the others got (Ctrl-C over SIGTERM). (JAX's own
`reached_preemption_sync_point` never fired in a test where the notice came early in the run.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import jax
import numpy as np
from jax.experimental import multihost_utils

from ann import cli
from ann.train import launcher

CTRL_C = "Ctrl-C"  # the stop's reason (`Preemption.reason`, the Stop's message) for SIGINT
# Shared between processes as the index here: the highest one any process got wins.
REASONS = ("", "SIGTERM", launcher.GONE, CTRL_C)
TERMINATED = REASONS[1:3]  # the stops a SIGTERM made: `ann train` exits 143 after the save
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _reason(signum: int) -> str:
    """The stop's name for a signal: a SIGTERM the launcher watch sent says so."""
    if signum == signal.SIGINT:
        return CTRL_C
    return launcher.GONE if launcher.gone() else "SIGTERM"


# Said at once, since the stop can be a while away: the loop sees the signal once the steps
# already dispatched to the device are done (it runs ahead of them), after the step's due hooks
# (an eval); several processes stop together at the next step where a hook is due.
_PENDING = (
    b"Ctrl-C: stopping once the steps already sent to the device are done, with a checkpoint "
    b"saved (Ctrl-C again stops at once, without saving)\n"
)
_PENDING_PROCESSES = (
    b"Ctrl-C: stopping at the next logged step (at most log_every_steps away: every process "
    b"stops at the same step) with a checkpoint saved (Ctrl-C again stops at once, without "
    b"saving)\n"
)


class Preemption:
    """Context manager: while active, SIGTERM or a first Ctrl-C asks the loop to save and stop
    (`reason` then names it: "SIGTERM", "launcher gone" or "Ctrl-C"); a Ctrl-C once a stop is
    pending raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.reason = ""
        self._previous: dict[int, object] = {}
        self._processes = jax.process_count()  # read once: stop_now runs every step
        self._console = jax.process_index() == 0  # one acknowledgement per run, not per process

    @property
    def requested(self) -> bool:
        return bool(self.reason)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if signum == signal.SIGINT and self.reason:
            raise KeyboardInterrupt  # the second: stop now (the loop records where)
        self.reason = self.reason or _reason(signum)
        if signum == signal.SIGINT and self._console:
            os.write(
                2, _PENDING if self._processes == 1 else _PENDING_PROCESSES
            )  # not print or logging: a handler may run inside either

    def stop_now(self, synced: bool) -> bool:
        """Whether to stop after this step. `synced`: every process is at a host sync here (a
        hook is due), so a tiny all-gather of the request costs nothing extra."""
        if self._processes == 1:
            return self.requested
        if not synced:
            return False
        mine = np.int32(REASONS.index(self.reason))
        shared = int(np.max(multihost_utils.process_allgather(mine)))
        if shared and not self.reason:  # another process was signalled: stop with it
            self.reason = REASONS[shared]
        return bool(shared)

    def __enter__(self) -> Preemption:
        # Signal handlers can only be installed from the main thread (tests may use others).
        # In a multi-process run this replaces JAX's own SIGTERM notifier, on purpose (above).
        # An ignored SIGINT stays ignored: a shell starts a script's background jobs (`ann train
        # ... &`) with it ignored, so that a Ctrl-C meant for the foreground leaves them alone.
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                if signum == signal.SIGINT and signal.getsignal(signum) == signal.SIG_IGN:
                    continue
                self._previous[signum] = signal.signal(signum, self._handle)
        # Read once its own handler is in place, not before: a SIGTERM between the two went to
        # `finishing`'s, was noted there, and the loop trained on to its end.
        if _finishing.pending:  # a SIGTERM came before the loop began: honour it
            self.reason = self.reason or _reason(signal.SIGTERM)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            if previous is not None:  # None: a handler installed outside Python, not restorable
                signal.signal(signum, previous)
        self._previous.clear()


class _Finishing:
    pending = False  # a SIGTERM noted by `finishing`'s handler
    entered = False  # the loop has begun (its own handling from here on), for `starting`


def starting() -> bool:
    """Whether this process's run is still starting: its loop (`finishing`) not yet entered."""
    return not _finishing.entered


def check_terminated() -> None:
    """Raises `cli.Terminated` where a SIGTERM came while the run was starting and its stop
    was dropped on the way, or only noted inside an import (`cli.note_terminated`, by ann
    train's start handler, ann/main.py): called at safe points of the start
    and as the loop begins (`finishing`). Without it, `ann train` trained every step and
    exited 0 after a scheduler's SIGTERM, under CI's load."""
    cli.check_terminated()


_finishing = _Finishing()
_FINISHING = "warning: {} while the run finishes: its last checkpoint is written first\n"


@contextlib.contextmanager
def finishing() -> Iterator[None]:
    """Around the loop and the run's end (its last saves): a SIGTERM outside `Preemption`'s
    own handling is noted, not fatal. A scheduler's SIGTERM to every process, or each process's
    launcher watch (ann/train/launcher.py), can reach one after the loop already stopped for a
    peer's signal: the default action killed it in the middle of its last save, and its peers
    waited at Orbax's commit barrier until the heartbeat timeout (a hang, then a crash, in 1 of
    12 trials). One noted before the loop begins is the loop's stop at its first step; one that
    came while starting and was dropped on the way (`check_terminated`) raises `cli.Terminated`
    on entering, before the loop."""
    if threading.current_thread() is not threading.main_thread():
        check_terminated()
        yield
        return

    def note(signum: int, frame: FrameType | None) -> None:
        del frame
        _finishing.pending = True
        os.write(2, _FINISHING.format(_reason(signum)).encode())

    _finishing.pending = False
    # Its handler first, then `starting()` False: the other way round, a SIGTERM between the
    # two met the start's handler, which ignores one once the loop has begun, and was lost.
    previous = signal.signal(signal.SIGTERM, note)
    _finishing.entered = True
    try:
        check_terminated()  # before the loop: the start's stop, nothing trained or kept
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _finishing.pending = False
        cli.forget_terminated()
