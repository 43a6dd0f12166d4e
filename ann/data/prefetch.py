"""Moves host batches onto the devices as global sharded arrays, a few batches ahead.

The iterator state it reports is that of the last batch handed to the train loop, not of the
batches still waiting in its buffer, so a checkpoint resumes exactly where training stopped.
"""

from __future__ import annotations

import collections
import json
from typing import Any

import jax


def put(batch: dict, sharding: jax.sharding.Sharding) -> dict:
    """This process's rows -> one global array per leaf, sharded over the devices."""
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)  # same result, less overhead per call
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


class DeviceIterator:
    """Wraps a checkpointable host iterator; usable with `grain.checkpoint.CheckpointSave`."""

    def __init__(self, host_iter: Any, sharding: jax.sharding.Sharding, size: int = 2):
        self._host = host_iter
        self._sharding = sharding
        self._size = max(1, size)
        self._buffer: collections.deque = collections.deque()
        self._state = host_iter.get_state()

    def _put(self, batch: dict) -> dict:
        return put(batch, self._sharding)

    def __iter__(self) -> DeviceIterator:
        return self

    def __next__(self) -> dict:
        while len(self._buffer) < self._size:
            batch = next(self._host)
            self._buffer.append((self._put(batch), self._host.get_state()))
        batch, self._state = self._buffer.popleft()
        return batch

    # The grain checkpoint handler stores these bytes as this process's JSON file.
    def get_state(self) -> bytes:
        return json.dumps(self._state).encode()

    def set_state(self, state: bytes) -> None:
        self._state = json.loads(state)
        self._host.set_state(self._state)
        self._buffer.clear()

    def start_prefetch(self) -> None:
        pass
