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

from ann.data.sources import Split

Batch = dict[str, np.ndarray]
Fields = Callable[[dict[str, np.ndarray]], Batch]


def _process_shard() -> tuple[int, int]:
    return jax.process_index(), jax.process_count()


class _ShuffledBatches:
    """Batch b of an endless stream, as this process's part of it.

    Every process draws the same global batch b (a slice of epoch b // per_epoch's seeded
    permutation of all rows) and keeps its own contiguous share, so the global batch, and the
    training, do not depend on how many processes there are. Indexing whole batches keeps
    per-row Python work out of the pipeline."""

    def __init__(self, num_rows: int, global_batch: int, seed: int, shuffle: bool):
        self.num_rows, self.global_batch, self.seed, self.shuffle = (
            num_rows,
            global_batch,
            seed,
            shuffle,
        )
        self.per_epoch = num_rows // global_batch  # the remainder is dropped (new one each epoch)
        index, count = _process_shard()
        local = global_batch // count
        self.local = slice(index * local, (index + 1) * local)

    def __len__(self) -> int:
        return 2**62  # endless; grain only ever asks for the next index

    @functools.lru_cache(maxsize=2)  # noqa: B019 (one instance per run; two epochs in flight)
    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_rows)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)

    def __getitem__(self, index: int) -> np.ndarray:
        epoch, b = divmod(index, self.per_epoch)
        batch = self._order(epoch)[b * self.global_batch : (b + 1) * self.global_batch]
        return batch[self.local]


def train_batches(
    split: Split,
    fields: Fields,
    global_batch_size: int,
    seed: int,
    shuffle: bool = True,
    read_threads: int = 1,
    buffer_batches: int = 4,
) -> grain.DatasetIterator:
    """An endless, checkpointable iterator of this process's share of each global batch.

    Each epoch visits every row once (less the remainder of a batch), in a new seeded order.
    """
    if len(split) < global_batch_size:
        raise ValueError(
            f"split {split.name}/{split.split} has {len(split)} rows, fewer than a batch of "
            f"{global_batch_size}; lower batch_size"
        )
    ds = grain.MapDataset.source(_ShuffledBatches(len(split), global_batch_size, seed, shuffle))
    ds = ds.map(lambda idx: fields(split.rows(idx)))
    options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=buffer_batches)
    return iter(ds.to_iter_dataset(options))


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
