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
        self._closed = False

    def _fill(self, stop: threading.Event, out: queue.Queue) -> None:
        def hand_over(item: Any) -> None:  # waits for room, but never past a stop
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        try:
            while not stop.is_set():
                batch = next(self._host)
                hand_over((put(batch, self._sharding), self._host.get_state()))
        except BaseException as e:  # handed to the loop's thread, raised there
            hand_over(_Failed(e))

    def _start(self) -> None:
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self._size)
        self._thread = threading.Thread(
            target=self._fill, args=(self._stop, self._queue), daemon=True, name="device-prefetch"
        )
        self._thread.start()

    def _stop_reader(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = self._queue = None

    def close(self) -> None:
        """Stops the reader thread for good (also one waiting on a full queue); `next()` then
        raises ValueError. Closing twice is harmless."""
        self._stop_reader()
        self._closed = True

    def __iter__(self) -> DeviceIterator:
        return self

    def __next__(self) -> dict:
        """The next global batch. Raises what the host iterator raised (the reader stops; a
        later call starts it again), or ValueError once the iterator is closed."""
        if self._closed:
            raise ValueError("DeviceIterator is closed; make a new one to read more batches")
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, _Failed):
            self._stop_reader()
            raise item.error
        batch, self._state = item
        return batch

    def get_state(self) -> dict:
        """The position after the last batch handed out. Every process is at the same one (they
        step in lockstep through the same global batches), so one copy serves any topology."""
        return copy.deepcopy(self._state)

    def set_state(self, state: dict) -> None:
        """Moves to a position `get_state()` gave (of this or another iterator)."""
        self._stop_reader()  # batches read ahead belong to the old position
        self._state = copy.deepcopy(state)
        self._host.set_state(self._state)
