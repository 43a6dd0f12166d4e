"""scikit-learn's digits as arrays, and the seeded splits the offline data sets share.

Every digits-based data set (`digits`, `digit_pairs`, `digits_novelty`) builds from the same
arrays and the same stratified split, so none of them tests on an image another trains on.
"""

from __future__ import annotations

import numpy as np

SPLIT_SEED = 0
TEST_FRACTION = 0.2


def random_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) row indices: a seeded split, stratified by `labels`."""
    from sklearn.model_selection import train_test_split  # imported only when building

    index = np.arange(len(labels))
    train, test = train_test_split(
        index, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    return np.sort(train), np.sort(test)


def sequential_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first 80% of the rows and the last 20%."""
    cut = int(round(n * (1 - TEST_FRACTION)))
    return np.arange(cut), np.arange(cut, n)


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images uint8 [1797, 8, 8, 1] (values 0..16), labels int64."""
    from sklearn.datasets import load_digits  # imported only when building

    data = load_digits()
    return data.images.astype(np.uint8)[..., None], data.target.astype(np.int64)
