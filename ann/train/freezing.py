"""Freezing (`config.freeze`): which parameters are not trained, and what that implies.

A pattern is a regex matched against the whole of a parameter's path (`re.fullmatch`). A path
is the module path joined by "/", with list indices as numbers: `convs/0/kernel`, `dense/bias`,
`blocks/1/bn1/scale` (the names of an export's weights, too). `ann transfer
--config=configs/NAME.py` lists a model's paths (every run also writes them to
WORKDIR/parameters.tsv). (`sharding_rules` regexes use `re.search`; `freeze` ones must match the
whole path.)

Three places act on the frozen set, all from `frozen_paths`:

- the optimizer (`mask`): frozen parameters get a zero update from `optax.set_to_zero` under
  `optax.multi_transform`, the rest the whole chain, so weight decay never touches a frozen
  parameter and gradient clipping measures only the trained ones' norm;
- the train step (ann/train/step.py): frozen parameters are cut from the gradient
  (`stop_gradient`), so a frozen backbone's backward pass is not compiled at all and
  `train/grad_norm` measures the trained parameters only;
- the model (`freeze_statistics`): a BatchNorm layer whose parameters are all frozen is frozen
  whole, as Keras does for fine-tuning: in training it normalizes with its running statistics
  and stops updating them (otherwise the statistics, which are model state and not parameters,
  would drift under the frozen scale and bias).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

import jax
import optax
from flax import nnx

from ann.config import ConfigError
from ann.sharding import path_str, paths
from ann.train import state as state_lib

FROZEN, TRAINABLE = "frozen", "trainable"


def unmatched(key: str, pattern: str, what: str, names: Sequence[str]) -> ConfigError:
    """The error for a path regex of config key `key` that matches no `what` (of `names`,
    which it shows): almost surely a typo."""
    layer = names[0].split("/")[0]  # a top-level module, for the example
    return ConfigError(
        f"config key '{key}': pattern {pattern!r} matches no {what} (the whole path must match, "
        f"e.g. '{layer}/.*'); paths are like {', '.join(names[:6])}"
        f"{', ...' if len(names) > 6 else ''} (list them all with ann transfer --config=...)"
    )


def frozen_paths(params: Any, patterns: Sequence[str]) -> set[str]:
    """The paths of `params` that some pattern of `config.freeze` matches in full.

    A pattern that matches nothing is almost surely a typo, and freezing everything leaves
    nothing to train: both are ConfigErrors that show real paths to copy from.
    """
    if not patterns:
        return set()
    names = paths(params)
    frozen = set()
    for pattern in patterns:
        regex = re.compile(pattern)  # validate() has checked that it compiles
        hits = {n for n in names if regex.fullmatch(n)}
        if not hits:
            raise unmatched("freeze", pattern, "parameter", names)
        frozen |= hits
    if len(frozen) == len(names):
        raise ConfigError(
            f"config key 'freeze' {tuple(patterns)} freezes all {len(names)} parameter arrays, "
            "so nothing would train; leave at least the head out of it"
        )
    return frozen


def random_frozen(params: Any, patterns: Sequence[str], loaded: Collection[str] | None) -> str:
    """A warning (one line; "" for none) naming the parameters `patterns` freeze that no
    `init_from` loads (`loaded`: the paths it loads; None: no init_from): they keep their
    random initialization for the whole run, under a trained head that learns to read noise.
    May be meant (a fixed random projection), so a warning, not an error."""
    frozen = frozen_paths(params, patterns)
    fresh = sorted(frozen - set(loaded or ()))
    if not fresh:
        return ""
    why = "config.init_from is not set" if loaded is None else "init_from does not load them"
    shown = ", ".join(fresh[:4]) + (f" and {len(fresh) - 4} more" if len(fresh) > 4 else "")
    return (
        f"config key 'freeze' holds {len(fresh)} of {len(frozen)} frozen parameter arrays at "
        f"their random initialization for the whole run ({why}): {shown}; load them "
        "(init_from, init_from_skip, the model.* sizes of the source) or leave them out of freeze"
    )


def mask(
    chain: optax.GradientTransformation, patterns: Sequence[str]
) -> optax.GradientTransformation:
    """`chain` for the trained parameters, a zero update for those `patterns` freeze."""
    patterns = tuple(patterns)

    def labels(params: Any) -> Any:
        # Called on the host by tx.init (so a bad pattern fails before anything compiles) and
        # again, with the same answer, while tracing each update.
        frozen = frozen_paths(params, patterns)
        return jax.tree_util.tree_map_with_path(
            lambda p, _: FROZEN if path_str(p) in frozen else TRAINABLE, params
        )

    return optax.multi_transform({TRAINABLE: chain, FROZEN: optax.set_to_zero()}, labels)


def freeze_statistics(
    model_def: state_lib.ModelDef, state: state_lib.TrainState, patterns: Sequence[str]
) -> tuple[state_lib.ModelDef, str]:
    """`model_def` with every BatchNorm layer whose parameters are all frozen normalizing with
    its running statistics in training too (so they stay fixed), and the line saying what
    `freeze` freezes ("" without it), which the run logs once its `init_from` is read (said
    first, it stood above that source's refusal). Raises ConfigError for a pattern that
    matches no parameter."""
    if not patterns:
        return model_def, ""
    frozen = frozen_paths(state.params, patterns)
    model = nnx.merge(model_def.train, state.params, state.model_state)
    layers = []
    for path, module in nnx.iter_modules(model):
        if isinstance(module, nnx.BatchNorm):
            prefix = "/".join(map(str, path))
            names = [f"{prefix}/{n}" for n in paths(nnx.state(module, nnx.Param))]
            if names and all(n in frozen for n in names):
                module.use_running_average = True  # a static attribute: lands in the graphdef
                layers.append(prefix)
    sizes = {path_str(p): x.size for p, x in jax.tree_util.tree_leaves_with_path(state.params)}
    summary = (
        f"freeze {tuple(patterns)}: {len(frozen)} of {len(sizes)} parameter arrays "
        f"({sum(sizes[p] for p in frozen):,} of {sum(sizes.values()):,} values) are not updated"
        + (
            f"; BatchNorm layers kept on their running statistics: {', '.join(layers)}"
            if layers
            else ""
        )
    )
    if not layers:
        return model_def, summary
    train_def, _, _ = nnx.split(model, nnx.Param, ...)
    return model_def.replace(train=train_def), summary


def fixed_statistics(model: nnx.Module) -> set[str]:
    """The paths of the BatchNorm layers `freeze_statistics` put on their running statistics."""
    return {
        "/".join(map(str, path))
        for path, module in nnx.iter_modules(model)
        if isinstance(module, nnx.BatchNorm) and module.use_running_average
    }
