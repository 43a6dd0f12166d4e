"""SIGTERM (what schedulers send before a hard stop) becomes a request to save and exit."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class Preemption:
    """Context manager: while active, SIGTERM sets `requested` instead of killing the process."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        self.requested = True

    def __enter__(self) -> Preemption:
        # Signal handlers can only be installed from the main thread (tests may use others).
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
