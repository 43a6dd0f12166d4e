"""SIGTERM (what schedulers send before a hard stop) becomes a request to save and exit.

Several processes must stop at the same step, or one would save while the others wait in the
next step's collectives. So in a multi-process run the request is shared at the steps where the
loop already syncs with the host (those where a hook is due, at least every `log_every_steps`):
all processes stop at the first such step after any of them was signalled. (JAX's own
`reached_preemption_sync_point` never fired in a test where the notice came early in the run.)
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import jax
import numpy as np
from jax.experimental import multihost_utils


class Preemption:
    """Context manager: while active, SIGTERM asks the loop to save and stop."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None
        self._processes = jax.process_count()  # read once: stop_now runs every step

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        self.requested = True

    def stop_now(self, synced: bool) -> bool:
        """Whether to stop after this step. `synced`: every process is at a host sync here (a
        hook is due), so a tiny all-gather of the request costs nothing extra."""
        if self._processes == 1:
            return self.requested
        if not synced:
            return False
        return bool(np.any(multihost_utils.process_allgather(np.int32(self.requested))))

    def __enter__(self) -> Preemption:
        # Signal handlers can only be installed from the main thread (tests may use others).
        # In a multi-process run this replaces JAX's own SIGTERM notifier, on purpose (above).
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
