"""Parameter sharding by rules: ordered (parameter-path regex, placement) pairs, as big_vision.

A parameter's path is its module path joined by "/", e.g. `decoder/blocks/0/attn/query/kernel`
(every run lists them with shapes and placements in `WORKDIR/parameters.tsv`). The first rule
whose regex matches (`re.search`) places the parameter:

- a tuple with one entry per leading dimension: a mesh axis name, a tuple of axis names, or
  None (not split), e.g. `("fsdp", "tensor")` for a kernel split by rows and columns;
- `"fsdp"`: split the largest dimension that the `fsdp` axis divides (ZeRO-3 style);
- `"replicate"`: a full copy on every device.

A parameter no rule matches is replicated. Optimizer state follows its parameter (Adam's `mu`
and `nu` of a kernel are placed like the kernel); everything else in the train state is
replicated. `config.sharding_rules` takes the rules or a preset name from PRESETS.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ann import atomic
from ann.config import ConfigError, did_you_mean
from ann.console import bytes_text

# Megatron-style tensor parallelism for ann's transformer blocks (ann/models/transformer.py):
# the query/key/value and MLP-up kernels split their output columns over `tensor`, the attention
# output and MLP-down kernels their input rows, so each block needs one reduction per half.
# Everything else, and the other dimension of those kernels, is split over `fsdp`.
_TENSOR_RULES = (
    (r"attn/(query|key|value)/kernel$", ("fsdp", "tensor")),
    (r"attn/(query|key|value)/bias$", ("tensor",)),
    (r"attn/out/kernel$", ("tensor", "fsdp")),
    (r"mlp/up/kernel$", ("fsdp", "tensor")),
    (r"mlp/up/bias$", ("tensor",)),
    (r"mlp/down/kernel$", ("tensor", "fsdp")),
)

PRESETS: dict[str, tuple[tuple[str, Any], ...]] = {
    "replicate": ((".*", "replicate"),),
    "fsdp": ((".*", "fsdp"),),
    "fsdp+tensor": (*_TENSOR_RULES, (".*", "fsdp")),
}

Rules = Sequence[tuple[str, Any]]


def path_str(path: tuple) -> str:
    """`decoder/blocks/0/attn/query/kernel` for a pytree key path (NNX's `.value` dropped): the
    one name of a parameter, for sharding rules, `freeze`, `init_from`, parameters.tsv and an
    export's weights alike."""
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts[:-1] if parts and parts[-1] == "value" else parts)


def paths(tree: Any) -> list[str]:
    """The `path_str` of every array in `tree` (e.g. the train state's params), in tree order."""
    return [path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


def resolve(rules: str | Rules) -> tuple[tuple[re.Pattern, Any], ...]:
    """Checks `config.sharding_rules` (a preset name or pairs) and compiles the regexes."""
    if isinstance(rules, str):
        if rules not in PRESETS:
            raise ConfigError(
                f"config key 'sharding_rules' is {rules!r}{did_you_mean(rules, list(PRESETS))}; "
                f"use a preset ({', '.join(PRESETS)}) or a tuple of (path regex, placement) pairs"
            )
        rules = PRESETS[rules]
    compiled = []
    for i, rule in enumerate(rules):
        if not (isinstance(rule, Sequence) and len(rule) == 2 and isinstance(rule[0], str)):
            raise ConfigError(
                f"config key 'sharding_rules'[{i}] is {rule!r}; each rule is a pair "
                "(path regex, placement), e.g. ('mlp/up/kernel$', ('fsdp', 'tensor'))"
            )
        pattern, placement = rule
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise ConfigError(
                f"config key 'sharding_rules'[{i}]: {pattern!r} is not a regex ({e})"
            ) from e
        if isinstance(placement, str) and placement not in ("fsdp", "replicate"):
            raise ConfigError(
                f"config key 'sharding_rules'[{i}]: placement {placement!r} is unknown; use "
                "'fsdp', 'replicate' or a tuple of mesh axis names (None = not split)"
            )
        compiled.append((regex, placement if isinstance(placement, str) else tuple(placement)))
    return tuple(compiled)


def _axis_size(mesh: Mesh, axes: Any) -> int:
    size = 1
    for axis in axes if isinstance(axes, tuple | list) else (axes,):
        if axis not in mesh.shape:
            raise ConfigError(
                f"config key 'sharding_rules' names mesh axis {axis!r}, but the mesh has "
                f"{', '.join(mesh.axis_names)}"
            )
        size *= mesh.shape[axis]
    return size


def spec_for(path: str, shape: tuple[int, ...], rules, mesh: Mesh) -> PartitionSpec:
    """The partition spec the first matching rule gives one parameter."""
    for regex, placement in rules:
        if not regex.search(path):
            continue
        if placement == "replicate":
            return PartitionSpec()
        if placement == "fsdp":
            size = _axis_size(mesh, "fsdp")
            dims = [d for d in range(len(shape)) if shape[d] % size == 0 and shape[d] >= size]
            if size == 1 or not dims:
                return PartitionSpec()
            split = max(dims, key=lambda d: shape[d])
            return PartitionSpec(*(["fsdp" if d == split else None for d in range(len(shape))]))
        if len(placement) > len(shape):
            raise ConfigError(
                f"sharding rule {regex.pattern!r} gives {placement} for parameter {path} of "
                f"shape {shape}: more entries than dimensions"
            )
        for dim, axes in enumerate(placement):
            if axes is not None and shape[dim] % _axis_size(mesh, axes):
                raise ConfigError(
                    f"sharding rule {regex.pattern!r}: dimension {dim} of parameter {path} "
                    f"(shape {shape}) does not split over {axes!r} of size "
                    f"{_axis_size(mesh, axes)}; change the rule or the mesh"
                )
        return PartitionSpec(*placement)
    return PartitionSpec()


def param_shardings(params: Any, rules, mesh: Mesh) -> Any:
    """A NamedSharding per parameter leaf, by rule."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(mesh, spec_for(path_str(path), x.shape, rules, mesh)),
        params,
    )


def state_shardings(state: Any, rules: str | Rules, mesh: Mesh) -> Any:
    """Shardings for a whole TrainState: parameters by rule; optimizer state entries whose path
    ends with a parameter's path and whose shape matches it follow that parameter; the rest
    (step, counts, RNG, BatchNorm statistics) is replicated."""
    compiled = resolve(rules)
    by_path: dict[str, tuple[tuple[int, ...], NamedSharding]] = {}
    params = param_shardings(state.params, compiled, mesh)
    for (path, x), (_, sharding) in zip(
        jax.tree_util.tree_leaves_with_path(state.params),
        jax.tree_util.tree_leaves_with_path(params),
    ):
        by_path[path_str(path)] = (x.shape, sharding)
    if not isinstance(rules, str):  # a preset serves many models; a rule of one's own, one
        for i, (regex, _) in enumerate(compiled):
            if not any(regex.search(p) for p in by_path):  # a typo: the model replicated
                names = list(by_path)
                raise ConfigError(
                    f"config key 'sharding_rules'[{i}]: {regex.pattern!r} matches no parameter "
                    f"path (re.search); paths are like {', '.join(names[:6])}"
                    f"{', ...' if len(names) > 6 else ''} (list them all with ann transfer "
                    "--config=...)"
                )
    replicated = NamedSharding(mesh, PartitionSpec())

    def follow(path, x):
        parts = path_str(path).split("/")
        for i in range(len(parts)):  # the longest path suffix that names a parameter
            shape, sharding = by_path.get("/".join(parts[i:]), (None, None))
            if shape == x.shape:
                return sharding
        return replicated

    return state.replace(
        step=replicated,
        params=params,
        model_state=jax.tree.map(lambda _: replicated, state.model_state),
        opt_state=jax.tree_util.tree_map_with_path(follow, state.opt_state),
        rng=replicated,
    )


def write_layout(params: Any, shardings: Any, path: str) -> str:
    """Writes `path, shape, dtype, partition spec` per parameter as TSV (atomically); returns
    a one-line summary: how many parameter arrays are split and the bytes each device holds of
    all of them (`console.bytes_text`: `each device holds 151.0 KiB of the 591.0 KiB`)."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    specs = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    lines, split, total, per_device = ["path\tshape\tdtype\tspec"], 0, 0, 0
    for (key, x), s in zip(leaves, specs):
        size = int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
        shard = s.shard_shape(x.shape)
        total += size
        per_device += int(np.prod(shard)) * np.dtype(x.dtype).itemsize
        split += shard != tuple(x.shape)
        lines.append(f"{path_str(key)}\t{tuple(x.shape)}\t{np.dtype(x.dtype).name}\t{s.spec}")
    atomic.write_text(path, "\n".join(lines) + "\n")
    return (
        f"{split} of {len(leaves)} parameter arrays split; each device holds "
        f"{bytes_text(per_device)} of the {bytes_text(total)} of parameters"
    )
