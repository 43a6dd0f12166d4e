"""Model inputs as a table of numeric features: the columns every drift test compares.

Each value position of each input is one feature, named like the array element it is:
`image[3,4,0]`, `features[2]` (row-major order, inputs in the signature's order). An input with
more than MAX_VALUES values per example (a 32x32x3 image has 3,072) becomes PROJECTED features
instead, `NAME:proj0` .. `NAME:proj31`: the flattened values times a fixed Gaussian matrix
(seed PROJECTION_SEED, entries N(0, 1/D) for D values per example, so a feature keeps the
scale of one value). A random projection keeps distances between examples approximately
(Johnson-Lindenstrauss), so a shift of the inputs' distribution moves the projected features
too, while a handful of tests stays cheap; it does not say which pixel moved.

The export (its reference sample) and the server (its traffic) call `feature_matrix` with the
same signature, so reference and current columns match one to one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

MAX_VALUES = 1024  # per example and input; above it, PROJECTED features
PROJECTED = 32
PROJECTION_SEED = 0


@functools.lru_cache(maxsize=8)
def projection(values: int) -> np.ndarray:
    """The fixed projection for inputs of `values` values per example: float64
    [values, PROJECTED], entries N(0, 1/values), seeded (PROJECTION_SEED), the same in every
    process."""
    rng = np.random.default_rng([PROJECTION_SEED, values])
    matrix = rng.standard_normal((values, PROJECTED)) / np.sqrt(values)
    matrix.setflags(write=False)
    return matrix


def feature_names(spec: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The features' names for an input signature `spec` (name -> {"dtype", "shape"}, shape
    with or without the leading -1 batch axis as the manifest writes it)."""
    names: list[str] = []
    for name, entry in spec.items():
        shape = example_shape(entry)
        size = int(np.prod(shape, dtype=np.int64))
        if size > MAX_VALUES:
            names += [f"{name}:proj{i}" for i in range(PROJECTED)]
        elif not shape:
            names.append(name)
        else:
            names += [f"{name}[{','.join(map(str, i))}]" for i in np.ndindex(*shape)]
    return names


def example_shape(entry: Mapping[str, Any]) -> tuple[int, ...]:
    """The per-example shape of a signature entry (without the batch axis -1)."""
    shape = list(entry["shape"])
    return tuple(shape[1:] if shape and shape[0] == -1 else shape)


def feature_matrix(
    inputs: Mapping[str, np.ndarray], spec: Mapping[str, Mapping[str, Any]]
) -> tuple[np.ndarray, list[str]]:
    """The inputs `inputs` (name -> [rows, *shape] of any numeric dtype) as features: float64
    [rows, F] and the F names (`feature_names(spec)`). Raises ValueError naming an input that
    is missing or whose per-example shape is not the signature's."""
    columns = []
    rows = None
    for name, entry in spec.items():
        if name not in inputs:
            raise ValueError(f"input {name!r} is missing; the model's inputs are {sorted(spec)}")
        x = np.asarray(inputs[name])
        shape = example_shape(entry)
        if x.shape[1:] != shape or (rows is not None and x.shape[0] != rows):
            raise ValueError(
                f"input {name!r} has the shape {list(x.shape)}, expected [rows, "
                f"{', '.join(map(str, shape))}] with as many rows as the other inputs"
            )
        rows = x.shape[0]
        flat = x.reshape(rows, math.prod(shape)).astype(np.float64)  # -1 fails on 0 rows
        columns.append(flat @ projection(flat.shape[1]) if flat.shape[1] > MAX_VALUES else flat)
    matrix = np.concatenate(columns, axis=1) if columns else np.zeros((0, 0))
    return matrix, feature_names(spec)
