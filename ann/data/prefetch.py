"""Moves host batches onto the devices as global sharded arrays, a few batches ahead.

A background thread reads the next batches and starts their transfer while the train step
runs, so the loop only dispatches. The iterator state it reports is that of the last batch
handed to the loop, not of the batches still waiting, so a checkpoint resumes exactly where
training stopped.

With a plan of calls (`plan_calls`, ann/train/chunks.py), an item is the stack of the next `k`
batches (`[k, batch, ...]`, one transfer), or one batch where the plan says 1. The same class
prefetches an eval split (an iterator without `get_state`), `prefetch` below.
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np


def put(batch: dict, sharding: jax.sharding.Sharding) -> dict:
    """This process's rows -> one global array per leaf, sharded over the devices."""
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)  # same result, less overhead per call
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def _stack(batches: list[dict]) -> dict:
    return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


class DeviceIterator:
    """Wraps a host iterator, checkpointable (`get_state()` / `set_state(dict)`) for training;
    one without `get_state` (an eval split) reads through but has no position."""

    def __init__(self, host_iter: Any, sharding: jax.sharding.Sharding, size: int = 2):
        self._host = host_iter
        self._sharding = sharding
        self._size = max(1, size)
        self._checkpointable = hasattr(host_iter, "get_state")
        self._state = host_iter.get_state() if self._checkpointable else None
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._calls: Any = None  # the plan of calls; None = one batch per item
        self._stacked_sharding: jax.sharding.Sharding | None = None
        self._handed = 0  # items handed to the loop since the plan was set
        self._handed_steps = 0  # ... and the batches in them

    def plan_calls(self, sizes: Any, stacked_sharding: jax.sharding.Sharding) -> None:
        """From the current position on, item i is the stack of the next `sizes[i]` batches
        (leading axis `sizes[i]`, placed with `stacked_sharding`), or one batch (no stack axis)
        where `sizes[i]` is 1; after the plan's last item, `next()` raises StopIteration.
        `sizes`: a sequence, or a plan made as it is read (ann/train/chunks.py `Plan`: its
        `calls(step)` from `start` plus the batches handed)."""
        self._stop_reader()  # items read ahead were cut by the old plan
        self._calls = sizes if hasattr(sizes, "calls") else (tuple(sizes) or None)
        self._stacked_sharding, self._handed, self._handed_steps = stacked_sharding, 0, 0

    def _planned(self) -> Iterator[int]:
        """The plan's sizes after the items already handed."""
        if isinstance(self._calls, tuple):
            return iter(self._calls[self._handed :])
        return self._calls.calls(self._calls.start + self._handed_steps)

    def _read(self, n: int) -> tuple[dict, Any, int]:
        """The next item of `n` batches on the devices, with the host position after it (and
        `n`)."""
        if n == 1:
            batch = put(next(self._host), self._sharding)
        else:
            batch = put(_stack([next(self._host) for _ in range(n)]), self._stacked_sharding)
        return batch, (self._host.get_state() if self._checkpointable else None), n

    def _fill(self, stop: threading.Event, out: queue.Queue) -> None:
        def hand_over(item: Any) -> None:  # waits for room, but never past a stop
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        try:
            if self._calls is not None:
                for n in self._planned():
                    if stop.is_set():
                        return
                    hand_over(self._read(n))
                raise StopIteration
            while not stop.is_set():
                hand_over(self._read(1))
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
        batch, self._state, n = item
        self._handed += 1
        self._handed_steps += n
        return batch

    def get_state(self) -> dict:
        """The position after the last batch handed out. Every process is at the same one (they
        step in lockstep through the same global batches), so one copy serves any topology."""
        return copy.deepcopy(self._state)

    def set_state(self, state: dict) -> None:
        """Moves to a position `get_state()` gave (of this or another iterator); a plan of
        calls is dropped (set the new position's with `plan_calls`)."""
        self._stop_reader()  # batches read ahead belong to the old position
        self._calls, self._handed, self._handed_steps = None, 0, 0
        self._state = copy.deepcopy(state)
        self._host.set_state(self._state)


def prefetch(batches: Iterator[dict], sharding: jax.sharding.Sharding, size: int = 2):
    """Yields each host batch of `batches` on the devices, transferred up to `size` batches
    ahead by a background thread (what the train loop gets from DeviceIterator), so a loop of
    eval steps only dispatches. The thread stops when the loop ends or leaves early."""
    device_iter = DeviceIterator(batches, sharding, size)
    try:
        yield from device_iter
    finally:
        device_iter.close()
