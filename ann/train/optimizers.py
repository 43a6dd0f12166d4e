"""The optimizer factory: sgd (+momentum), adam, adamw; schedules; clipping; weight decay;
frozen parameters (`config.freeze`, masked by ann/train/freezing.py)."""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections
import optax

from ann import config as config_lib
from ann.train import freezing


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
    return freezing.mask(chain, freeze)


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
