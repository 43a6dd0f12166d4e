"""scikit-learn's digits as arrays, and the seeded splits the offline data sets share.

Every digits-based data set (`digits`, `digit_pairs`, `digits_novelty`) builds from the same
arrays and the same stratified splits, so none of them tests or validates on an image another
trains on. Test rows are split off first (TEST_FRACTION of all rows); the validation rows are
then carved from what is left for training (VALIDATION_FRACTION of it), so adding the
validation split left every test split exactly as it was.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

SPLIT_SEED = 0
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.15  # of the training rows: about 12% of all rows


def random_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) row indices: a seeded split, stratified by `labels`."""
    from sklearn.model_selection import train_test_split  # imported only when building

    index = np.arange(len(labels))
    train, test = train_test_split(
        index, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    return np.sort(train), np.sort(test)


def carve_validation(
    index: np.ndarray, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, validation) subsets of the row indices `index`: VALIDATION_FRACTION of
    them, seeded, stratified by `labels` (aligned with `index`) when given."""
    from sklearn.model_selection import train_test_split

    train, validation = train_test_split(
        np.asarray(index),
        test_size=VALIDATION_FRACTION,
        random_state=SPLIT_SEED,
        stratify=labels,
    )
    return np.sort(train), np.sort(validation)


def random_splits(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Sorted row indices of `train`, `validation` and `test`: `random_split`'s test rows, and
    its train rows carved into train and validation, both stratified by `labels`."""
    train, test = random_split(labels)
    train, validation = carve_validation(train, labels[train])
    return {"train": train, "validation": validation, "test": test}


def sequential_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first 80% of the rows and the last 20%."""
    cut = int(round(n * (1 - TEST_FRACTION)))
    return np.arange(cut), np.arange(cut, n)


def sequential_splits(n: int) -> dict[str, np.ndarray]:
    """`sequential_split` with the last VALIDATION_FRACTION of its train rows as validation:
    rows in order, so for data ordered by writer (the digits) train, validation and test are
    (up to the one writer at each boundary) written by different people."""
    train, test = sequential_split(n)
    cut = kept_for_training(len(train))
    return {"train": train[:cut], "validation": train[cut:], "test": test}


def kept_for_training(n: int) -> int:
    """How many of `n` training rows, in order, stay in train when the last VALIDATION_FRACTION
    of them become validation."""
    return int(round(n * (1 - VALIDATION_FRACTION)))


def stream_splits(
    sizes: Mapping[str, int], validation_rows: int | None = None
) -> dict[str, tuple[str, int, int]]:
    """The splits of generated data, where each split of `sizes` is a stream of rows drawn from
    a seed of its own: `{split: (stream, first row, stop row)}`. `validation` is the last
    `validation_rows` of the `train` stream (default: its last VALIDATION_FRACTION), `train`
    the rows before; generating the streams as before leaves every other split unchanged."""
    n = sizes["train"]
    cut = kept_for_training(n) if validation_rows is None else n - validation_rows
    rows = {"train": ("train", 0, cut), "validation": ("train", cut, n)}
    rows.update({name: (name, 0, size) for name, size in sizes.items() if name != "train"})
    return rows


DIGITS_WRITERS = 13  # scikit-learn's digits are UCI optdigits' test set: 13 writers


def writer_groups(n: int, groups: int = DIGITS_WRITERS) -> np.ndarray:
    """int32 [n]: `groups` equal blocks of consecutive rows numbered 0.. in order. For rows
    ordered by writer (the digits) a block is about one writer: the data records no writer ids,
    so block edges fall by count, not exactly between writers."""
    return (np.arange(n) * groups // max(n, 1)).astype(np.int32)


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images uint8 [1797, 8, 8, 1] (values 0..16), labels int64."""
    from sklearn.datasets import load_digits  # imported only when building

    data = load_digits()
    return data.images.astype(np.uint8)[..., None], data.target.astype(np.int64)
