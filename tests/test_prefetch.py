"""The device iterator (close, errors, state) and the data position a checkpoint stores."""

import dataclasses
import json
import threading
import time

import jax
import numpy as np
import pytest

from ann import data
from ann.data.pipeline import train_batches


@dataclasses.dataclass
class RowIds:
    """A split whose rows are their own indices: which rows a batch holds is visible."""

    num_rows: int
    name: str = "ids"
    split: str = "train"

    def __len__(self):
        return self.num_rows

    def rows(self, indices):
        return {"id": np.asarray(indices, np.int64)}


def ids(batch):
    return {"id": batch["id"]}


@pytest.fixture(scope="module")
def sharding():
    mesh = jax.make_mesh((4,), ("data",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


def take(it, n):
    return [np.asarray(next(it)["id"]) for _ in range(n)]


def test_the_device_iterator_state_round_trips_through_json(sharding):
    it = data.DeviceIterator(train_batches(RowIds(100), ids, 8, seed=0), sharding, size=3)
    take(it, 5)
    saved = json.loads(json.dumps(it.get_state()))
    expected = take(it, 20)  # crosses the epoch boundary (12 batches of 8 in 100 rows)
    fresh = data.DeviceIterator(train_batches(RowIds(100), ids, 8, seed=0), sharding)
    fresh.set_state(saved)
    for want, got in zip(expected, take(fresh, 20)):
        np.testing.assert_array_equal(want, got)
    it.close()
    fresh.close()


def test_close_then_next_raises_cleanly(sharding):
    it = data.DeviceIterator(train_batches(RowIds(100), ids, 8, seed=0), sharding, size=1)
    take(it, 2)
    it.close()
    it.close()  # twice is harmless
    with pytest.raises(ValueError, match="DeviceIterator is closed"):
        next(it)
    assert not [t for t in threading.enumerate() if t.name == "device-prefetch" and t.is_alive()]


class FailsAfter:
    """A host iterator that yields `n` batches, then raises."""

    def __init__(self, n):
        self.n, self.i = n, 0

    def __next__(self):
        self.i += 1
        if self.i > self.n:
            raise OSError("the data file went away")
        return {"id": np.full(8, self.i)}

    def get_state(self):
        return {"i": self.i}

    def set_state(self, state):
        self.i = state["i"]


def test_a_host_error_reaches_the_loop_and_close_does_not_hang(sharding):
    # The queue (size 1) is full when the host raises: the reader must still stop on close.
    it = data.DeviceIterator(FailsAfter(1), sharding, size=1)
    next(it)  # the reader then fills the queue... and fails on the next read
    with pytest.raises(OSError, match="went away"):
        next(it)
    host = FailsAfter(1)
    full = data.DeviceIterator(host, sharding, size=1)
    full._start()  # reads batch 1 into the queue (now full), then fails on batch 2
    for _ in range(1000):  # bounded: until the reader has hit the error
        if host.i == 2:
            break
        time.sleep(0.01)
    closer = threading.Thread(target=full.close, daemon=True)
    closer.start()
    closer.join(60)
    assert not closer.is_alive(), "close() hung on a reader waiting to report an error"


def rows_seen(it, n):
    return np.concatenate(take(it, n)) if n else np.zeros(0, np.int64)


@pytest.mark.parametrize("new_batch", [6, 8, 20])
def test_the_data_position_is_in_rows_so_any_batch_size_resumes_without_replay(new_batch):
    first = train_batches(RowIds(100), ids, 8, seed=3)
    seen = rows_seen(first, 5)  # 40 rows of epoch 0
    position = first.get_state()
    assert position == {"epoch": 0, "example": 40}

    resumed = train_batches(RowIds(100), ids, new_batch, seed=3)
    resumed.set_state(json.loads(json.dumps(position)))
    rest = rows_seen(resumed, (100 - 40) // new_batch)  # the rest of epoch 0
    epoch0 = np.concatenate([seen, rest])
    assert len(np.unique(epoch0)) == len(epoch0), "a row of epoch 0 was replayed"
    assert len(epoch0) > 100 - new_batch  # and at most a batch's remainder is left out
    # The resumed run goes on in epoch 0's order, exactly where the first one stopped.
    order = np.random.default_rng([3, 0]).permutation(100)
    np.testing.assert_array_equal(epoch0, order[: len(epoch0)])
    nxt = np.asarray(next(resumed)["id"])  # then epoch 1 from its start
    np.testing.assert_array_equal(nxt, np.random.default_rng([3, 1]).permutation(100)[:new_batch])


def test_an_old_grain_position_resumes_as_before():
    # Checkpoints written before positions were in rows hold grain's {"next_index": batches}.
    straight = train_batches(RowIds(100), ids, 8, seed=1)
    expected = take(straight, 30)
    old = train_batches(RowIds(100), ids, 8, seed=1)
    old.set_state({"next_index": 17})
    for want, got in zip(expected[17:], take(old, 13)):
        np.testing.assert_array_equal(want, got)


def test_a_plan_of_calls_stacks_the_same_batches_and_keeps_their_position(sharding):
    mesh = sharding.mesh
    stacked = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
    single = data.DeviceIterator(train_batches(RowIds(100), ids, 8, seed=0), sharding)
    chunked = data.DeviceIterator(train_batches(RowIds(100), ids, 8, seed=0), sharding)
    plan = [4, 1, 1, 4, 4, 1]  # 15 batches: crosses the epoch boundary (12 batches)
    chunked.plan_calls(plan, stacked)
    for n in plan:
        item = np.asarray(next(chunked)["id"])
        want = np.stack(take(single, n))
        assert item.shape == ((n, 8) if n > 1 else (8,))
        np.testing.assert_array_equal(item.reshape(n, 8), want)
        assert chunked.get_state() == single.get_state()
    with pytest.raises(StopIteration):
        next(chunked)
    single.close()
    chunked.close()


def test_a_plan_made_as_it_is_read_hands_the_same_items_as_its_list(sharding):
    # The train loop hands over a chunks.Plan (made call by call), not a list of every call.
    from ann.train import chunks, hooks

    stacked = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(None, "data"))
    plan = chunks.plan([hooks.Hook(6)], 2, 17, 4)
    listed = list(plan)
    assert listed == [4, 4, 1, 1, 4, 1]  # steps 3-6, 7-10, 11, 12, 13-16, 17
    single = data.DeviceIterator(train_batches(RowIds(100), ids, 8, seed=0), sharding)
    chunked = data.DeviceIterator(train_batches(RowIds(100), ids, 8, seed=0), sharding)
    chunked.plan_calls(plan, stacked)
    for n in listed:
        item = np.asarray(next(chunked)["id"])
        np.testing.assert_array_equal(item.reshape(n, 8), np.stack(take(single, n)))
    with pytest.raises(StopIteration):
        next(chunked)
    single.close()
    chunked.close()


def test_eval_prefetch_gives_every_batch_in_order_and_stops_its_thread(sharding):
    split = RowIds(37)
    want = list(data.eval_batches(split, ids, 8))
    got = list(data.prefetch(data.eval_batches(split, ids, 8), sharding, size=2))
    assert len(got) == len(want) == 5
    for w, g in zip(want, got):
        np.testing.assert_array_equal(w["id"], np.asarray(g["id"]))
        np.testing.assert_array_equal(w["mask"], np.asarray(g["mask"]))
    early = data.prefetch(data.eval_batches(split, ids, 8), sharding, size=2)
    next(early)
    early.close()  # a loop that leaves early
    assert not [t for t in threading.enumerate() if t.name == "device-prefetch"]
