"""The optimizer factory: sgd (+momentum), adam, adamw; schedules; clipping; weight decay;
frozen parameters.

Freezing (`config.freeze`): a tuple of regexes, each matched against the whole of a parameter's
path (`re.fullmatch`). A path is the module path joined by "/", with list indices as numbers:
`convs/0/kernel`, `dense/bias`, `blocks/1/bn1/scale` (the names of an export's weights, too).
`python -m ann.train.transfer --config=configs/NAME.py` lists a model's paths (every run also
writes them to WORKDIR/parameters.tsv). Frozen parameters get a zero update from
`optax.set_to_zero` under `optax.multi_transform`; the rest get the whole chain below, so weight
decay never touches a frozen parameter and gradient clipping measures only the trained ones'
norm. (`sharding_rules` regexes use `re.search`; `freeze` ones must match the whole path.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import optax

from ann import config as config_lib
from ann.config import ConfigError
from ann.sharding import path_str as path_name  # convs/0/kernel: one path format everywhere

FROZEN, TRAINABLE = "frozen", "trainable"


def schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    lr = float(opt.learning_rate)
    if opt.schedule == "constant":
        if opt.warmup_steps:
            return optax.join_schedules(
                [optax.linear_schedule(0.0, lr, opt.warmup_steps), optax.constant_schedule(lr)],
                [opt.warmup_steps],
            )
        return optax.constant_schedule(lr)
    if opt.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=lr,
            warmup_steps=opt.warmup_steps,
            decay_steps=max(total_steps, opt.warmup_steps + 1),
            end_value=lr * float(opt.end_learning_rate_factor),
        )
    if opt.schedule == "step":
        return optax.piecewise_constant_schedule(
            lr, {int(b): float(opt.step_factor) for b in opt.step_boundaries}
        )
    raise ValueError(f"unknown schedule {opt.schedule!r}")  # validate() catches this first


def paths(tree: Any) -> list[str]:
    """The path of every array in `tree` (e.g. the train state's params), in tree order."""
    return [path_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


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
            layer = names[0].split("/")[0]  # a top-level module, for the example
            raise ConfigError(
                f"config key 'freeze': pattern {pattern!r} matches no parameter (the whole path "
                f"must match, e.g. '{layer}/.*'); paths are like {', '.join(names[:6])}"
                f"{', ...' if len(names) > 6 else ''} (list them all with python -m "
                "ann.train.transfer --config=...)"
            )
        frozen |= hits
    if len(frozen) == len(names):
        raise ConfigError(
            f"config key 'freeze' {tuple(patterns)} freezes all {len(names)} parameter arrays, "
            "so nothing would train; leave at least the head out of it"
        )
    return frozen


def make(
    opt: ml_collections.ConfigDict, total_steps: int, freeze: Sequence[str] = ()
) -> optax.GradientTransformation:
    """An optax chain built from the `optimizer.*` config keys; parameters whose path one of
    `freeze`'s regexes matches in full are not updated (see the module docstring).

    Raises ConfigError if the schedule does not fit the run (warmup or a step boundary at or
    past `total_steps`, which num_epochs runs learn only once the data set is open)."""
    config_lib.check_ranges({"optimizer": opt.to_dict()}, total_steps=total_steps)
    chain = _chain(opt, total_steps)
    if not freeze:
        return chain  # the same optimizer state as ever: checkpoints without freezing restore
    patterns = tuple(freeze)

    def labels(params: Any) -> Any:
        # Called on the host by tx.init (so a bad pattern fails before anything compiles) and
        # again, with the same answer, while tracing each update.
        frozen = frozen_paths(params, patterns)
        return jax.tree_util.tree_map_with_path(
            lambda p, _: FROZEN if path_name(p) in frozen else TRAINABLE, params
        )

    return optax.multi_transform({TRAINABLE: chain, FROZEN: optax.set_to_zero()}, labels)


def _chain(opt: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """An optax chain built from the `optimizer.*` config keys."""
    lr = schedule(opt, total_steps)
    parts = []
    if opt.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(float(opt.grad_clip_norm)))
    if opt.name == "sgd":
        if opt.weight_decay:
            parts.append(optax.add_decayed_weights(float(opt.weight_decay)))
        parts.append(optax.sgd(lr, momentum=float(opt.momentum) or None, nesterov=opt.nesterov))
    elif opt.name == "adam":
        if opt.weight_decay:  # L2 added to the gradient; adamw decouples it
            parts.append(optax.add_decayed_weights(float(opt.weight_decay)))
        parts.append(optax.adam(lr, b1=float(opt.b1), b2=float(opt.b2), eps=float(opt.eps)))
    elif opt.name == "adamw":
        parts.append(
            optax.adamw(
                lr,
                b1=float(opt.b1),
                b2=float(opt.b2),
                eps=float(opt.eps),
                weight_decay=float(opt.weight_decay),
            )
        )
    else:
        raise ValueError(f"unknown optimizer {opt.name!r}")  # validate() catches this first
    return optax.chain(*parts)
