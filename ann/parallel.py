"""Device mesh and shardings. The batch is split over the `data` axis; parameters replicate."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ann.config import ConfigError

BATCH_AXES = ("data",)


def make_mesh(axes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh from `{axis: size}`; one size may be -1, meaning all remaining devices."""
    devices = list(devices if devices is not None else jax.devices())
    names, sizes = list(axes), list(axes.values())
    if sizes.count(-1) > 1:
        raise ConfigError("config key 'mesh': at most one axis may have size -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ConfigError(
                f"config key 'mesh': fixed axes use {known} devices, which does not divide "
                f"the {len(devices)} available"
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ConfigError(
            f"config key 'mesh' {dict(zip(names, sizes))} needs {math.prod(sizes)} devices but "
            f"{len(devices)} are available; set one axis to -1"
        )
    return jax.make_mesh(
        tuple(sizes),
        tuple(names),
        axis_types=(jax.sharding.AxisType.Auto,) * len(names),
        devices=devices,
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the mesh's data axes."""
    axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
    return NamedSharding(mesh, PartitionSpec(axes))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES if a in mesh.axis_names)
