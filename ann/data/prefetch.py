"""Moves host batches onto the devices as global sharded arrays, a few batches ahead.

A background thread reads the next batches and starts their transfer while the train step
runs, so the loop only dispatches. The iterator state it reports is that of the last batch
handed to the loop, not of the batches still waiting, so a checkpoint resumes exactly where
training stopped.
"""

from __future__ import annotations

import copy
import queue
import threading
from typing import Any

import jax


def put(batch: dict, sharding: jax.sharding.Sharding) -> dict:
    """This process's rows -> one global array per leaf, sharded over the devices."""
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)  # same result, less overhead per call
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class DeviceIterator:
    """Wraps a checkpointable host iterator (`get_state()` / `set_state(dict)`)."""

    def __init__(self, host_iter: Any, sharding: jax.sharding.Sharding, size: int = 2):
        self._host = host_iter
        self._sharding = sharding
        self._size = max(1, size)
        self._state = host_iter.get_state()
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _fill(self, stop: threading.Event, out: queue.Queue) -> None:
        try:
            while not stop.is_set():
                batch = next(self._host)
                item = (put(batch, self._sharding), self._host.get_state())
                while not stop.is_set():
                    try:
                        out.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # handed to the loop's thread, raised there
            out.put(_Failed(e))

    def _start(self) -> None:
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self._size)
        self._thread = threading.Thread(
            target=self._fill, args=(self._stop, self._queue), daemon=True, name="device-prefetch"
        )
        self._thread.start()

    def close(self) -> None:
        """Stops the reader thread; the next `next()` starts it again."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = self._queue = None

    def __iter__(self) -> DeviceIterator:
        return self

    def __next__(self) -> dict:
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, _Failed):
            self.close()
            raise item.error
        batch, self._state = item
        return batch

    def get_state(self) -> dict:
        """The position after the last batch handed out. Every process is at the same one (they
        step in lockstep through the same global batches), so one copy serves any topology."""
        return copy.deepcopy(self._state)

    def set_state(self, state: dict) -> None:
        self.close()  # batches read ahead belong to the old position
        self._state = copy.deepcopy(state)
        self._host.set_state(self._state)
