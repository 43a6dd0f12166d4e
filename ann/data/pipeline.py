"""grain pipelines: seeded shuffle per epoch, global batches split across processes, threaded
read-ahead.

The pipeline runs over whole batches of row indices and reads each batch at once (one gather
from memory, or one multi-get from array_record), which is much cheaper than handling rows one
by one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import grain
import jax
import numpy as np

from ann.config import ConfigError
from ann.data.sources import Split

Batch = dict[str, np.ndarray]
Fields = Callable[[dict[str, np.ndarray]], Batch]


def _process_shard() -> tuple[int, int]:
    return jax.process_index(), jax.process_count()


class _ShuffledBatches:
    """Batch i of an endless stream that starts at a position (epoch, example), as this
    process's part of it.

    Every process draws the same global batch (a slice of an epoch's seeded permutation of all
    rows) and keeps its own contiguous share, so the global batch, and the training, do not
    depend on how many processes there are. Each epoch's rows that do not fill a whole batch are
    dropped. Indexing whole batches keeps per-row Python work out of the pipeline."""

    def __init__(
        self,
        num_rows: int,
        global_batch: int,
        seed: int,
        shuffle: bool,
        epoch: int = 0,
        example: int = 0,
    ):
        self.num_rows, self.global_batch, self.seed, self.shuffle = (
            num_rows,
            global_batch,
            seed,
            shuffle,
        )
        self.epoch, self.example = epoch, example  # where batch 0 starts
        self.per_epoch = num_rows // global_batch
        self.first_epoch_batches = (num_rows - example) // global_batch  # left in `epoch`
        index, count = _process_shard()
        local = global_batch // count
        self.local = slice(index * local, (index + 1) * local)
        # Each instance's own cache (two epochs in flight at an epoch's end): a class-wide
        # `lru_cache` on the method held its last two instances, and their epochs' orders (8
        # bytes a row), after their run had ended.
        self._order = functools.lru_cache(maxsize=2)(self._epoch_order)

    def __len__(self) -> int:
        return 2**62  # endless; grain only ever asks for the next index

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_rows)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)

    def position(self, batches: int) -> dict[str, int]:
        """The position after `batches` batches from the start: {"epoch": e, "example": o}, the
        first `o` rows of epoch e's order are used. It counts rows, not batches, so a run
        resumed with another batch size (or number of processes) goes on from the same row."""
        if batches <= self.first_epoch_batches:
            return {"epoch": self.epoch, "example": self.example + batches * self.global_batch}
        epochs, b = divmod(batches - self.first_epoch_batches, self.per_epoch)
        return {"epoch": self.epoch + 1 + epochs, "example": b * self.global_batch}

    def __getitem__(self, index: int) -> np.ndarray:
        at = self.position(index)
        if at["example"] + self.global_batch > self.num_rows:  # the epoch's remainder: skip it
            at = {"epoch": at["epoch"] + 1, "example": 0}
        start = at["example"]
        batch = self._order(at["epoch"])[start : start + self.global_batch]
        return batch[self.local]


class TrainBatches:
    """An endless, checkpointable iterator of this process's share of each global batch.

    `get_state()` is the position in rows, `{"epoch": e, "example": o}`: the same for every
    process and free of the batch size, so a checkpoint resumes at the same row under another
    batch size or process count (no row replayed, none skipped within the epoch). `set_state`
    also takes the grain state older checkpoints hold (`{"next_index": batches}`), read with
    this iterator's batch size, which the run's config compare has kept unchanged."""

    def __init__(
        self,
        split: Split,
        fields: Fields,
        global_batch_size: int,
        seed: int,
        shuffle: bool,
        read_threads: int,
        buffer_batches: int,
    ):
        self._split, self._fields = split, fields
        self._batch, self._seed, self._shuffle = global_batch_size, seed, shuffle
        self._options = grain.ReadOptions(
            num_threads=read_threads, prefetch_buffer_size=buffer_batches
        )
        self._start(0, 0)

    def _start(self, epoch: int, example: int) -> None:
        self._source = _ShuffledBatches(
            len(self._split), self._batch, self._seed, self._shuffle, epoch, example
        )
        ds = grain.MapDataset.source(self._source)
        ds = ds.map(lambda idx: self._fields(self._split.rows(idx)))
        self._iter = iter(ds.to_iter_dataset(self._options))

    def __iter__(self) -> TrainBatches:
        return self

    def __next__(self) -> Batch:
        return next(self._iter)

    def get_state(self) -> dict[str, int]:
        return self._source.position(int(self._iter.get_state()["next_index"]))

    def set_state(self, state: dict) -> None:
        if "next_index" in state:  # a grain state: batches of this size since the start
            start = _ShuffledBatches(len(self._split), self._batch, self._seed, self._shuffle)
            state = start.position(int(state["next_index"]))
        epoch, example = int(state["epoch"]), int(state["example"])
        if epoch < 0 or not 0 <= example <= len(self._split):
            raise ValueError(
                f"data position {state} is outside split {self._split.name}/"
                f"{self._split.split} of {len(self._split)} rows"
            )
        self._start(epoch, example)


def check_batch_size(split: Split, global_batch_size: int) -> None:
    """Raises ConfigError when `split` cannot fill one batch of `global_batch_size` rows (a
    training run checks it before its workdir is written)."""
    if len(split) < global_batch_size:
        raise ConfigError(
            f"split {split.name}/{split.split} has {len(split)} rows, fewer than a batch of "
            f"{global_batch_size}; lower --config.batch_size"
        )


def train_batches(
    split: Split,
    fields: Fields,
    global_batch_size: int,
    seed: int,
    shuffle: bool = True,
    read_threads: int = 0,
    buffer_batches: int = 4,
) -> TrainBatches:
    """An endless, checkpointable iterator of this process's share of each global batch.

    Each epoch visits every row once (less the remainder of a batch), in a new seeded order.
    """
    check_batch_size(split, global_batch_size)
    return TrainBatches(
        split, fields, global_batch_size, seed, shuffle, read_threads, buffer_batches
    )


def eval_batches(split: Split, fields: Fields, local_batch_size: int) -> Iterator[Batch]:
    """Every row of the split once, in order, padded to full batches; `mask` marks real rows.

    Each process yields the same number of batches, so collective eval steps line up.
    """
    index, count = _process_shard()
    rows = np.arange(len(split))[index::count]
    per_process = -(-len(split) // count)
    num_batches = -(-per_process // local_batch_size)
    for b in range(num_batches):
        idx = rows[b * local_batch_size : (b + 1) * local_batch_size]
        real = len(idx)
        padded = (
            np.concatenate([idx, np.zeros(local_batch_size - real, idx.dtype)])
            if real
            else (np.zeros(local_batch_size, np.int64))
        )
        batch = fields(split.rows(padded))
        batch["mask"] = (np.arange(local_batch_size) < real).astype(np.float32)
        yield batch
