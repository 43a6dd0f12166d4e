"""Input statistics learned from a training split, for standardizing on the device."""

from __future__ import annotations

import numpy as np


def safe_std(std: np.ndarray) -> np.ndarray:
    """A standard deviation safe to divide by: constant columns keep their values (std 1)."""
    return np.where(std > 1e-6, std, 1.0).astype(np.float32)


def channel_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (last axis) float32 mean and safe std of a batch of rows; rows with no
    channel axis (one value each) count as one channel."""
    x = np.asarray(values, np.float64)
    x = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(-1, 1)
    return x.mean(axis=0).astype(np.float32), safe_std(x.std(axis=0))
