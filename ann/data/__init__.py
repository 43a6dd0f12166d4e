"""Data: sources by name, grain pipelines, and device prefetch."""

from ann.data.pipeline import check_batch_size, eval_batches, train_batches
from ann.data.prefetch import DeviceIterator, prefetch, put
from ann.data.sources import Split, check_finite, check_splits_apart, load

__all__ = [
    "DeviceIterator",
    "Split",
    "check_batch_size",
    "check_finite",
    "check_splits_apart",
    "eval_batches",
    "load",
    "prefetch",
    "put",
    "train_batches",
]
