"""grain pipelines: seeded shuffle, repeat, per-process shard, batch, threaded read-ahead.

The pipeline runs over row indices and reads a whole batch at once (one gather from memory or
one multi-get from array_record), which is much cheaper than stacking rows one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grain
import jax
import numpy as np

from ann.data.sources import Split

Batch = dict[str, np.ndarray]
Fields = Callable[[dict[str, np.ndarray]], Batch]


def _process_shard() -> tuple[int, int]:
    return jax.process_index(), jax.process_count()


def train_batches(
    split: Split,
    fields: Fields,
    local_batch_size: int,
    seed: int,
    shuffle: bool = True,
    read_threads: int = 2,
    buffer_batches: int = 4,
) -> grain.DatasetIterator:
    """An endless, checkpointable iterator of this process's training batches."""
    index, count = _process_shard()
    ds = grain.MapDataset.range(len(split))[index::count]
    if len(ds) < local_batch_size:
        raise ValueError(
            f"split {split.name}/{split.split} has {len(ds)} rows for this process, fewer than "
            f"its batch of {local_batch_size}; lower batch_size"
        )
    if shuffle:
        ds = ds.shuffle(seed=seed)  # a fresh permutation every epoch
    ds = ds.repeat(None).batch(local_batch_size, drop_remainder=True)
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
