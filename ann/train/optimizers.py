"""The optimizer factory: sgd (+momentum), adam, adamw; schedules; clipping; weight decay;
frozen parameters (`config.freeze`, masked by ann/train/freezing.py).

The train step takes the optimizer's float hyperparameters (`hyperparameters`: the learning
rate, weight decay, momentum, Adam's b1, b2 and eps, the clipping norm) as arguments at run
time instead of compiling them in as constants, and builds its optax chain from them inside
the trace (`make(..., values=...)`; optax's transformations take arrays for these).
Runs that differ only in those values therefore share one compiled train step: a sweep over the
learning rate compiles it once per model and reads it from the persistent compilation cache in
every other trial (docs/benchmarks.md, "Issue 16, session 12"). What shapes the program stays
compiled in: the optimizer's name, which parts the chain has (clipping and weight decay on or
off, momentum or none, Nesterov), the schedule's kind, steps and factors, the frozen paths.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import optax

from ann import config as config_lib
from ann.train import freezing

# A hyperparameter's value: a Python float, or a float32 scalar array (a tracer in the step).
Hyperparameters = Mapping[str, Any]


def hyperparameters(opt: ml_collections.ConfigDict) -> dict[str, float]:
    """The `optimizer.*` values the train step takes at run time, by config key (see the
    module docstring); only those of the parts the chain has (no `momentum` without momentum,
    no `grad_clip_norm` without clipping)."""
    values = {"learning_rate": float(opt.learning_rate)}
    if opt.grad_clip_norm:
        values["grad_clip_norm"] = float(opt.grad_clip_norm)
    if opt.weight_decay or opt.name == "adamw":
        values["weight_decay"] = float(opt.weight_decay)
    if opt.name in ("adam", "adamw"):
        values.update(b1=float(opt.b1), b2=float(opt.b2), eps=float(opt.eps))
    elif opt.momentum:
        values["momentum"] = float(opt.momentum)
    return values


def _unit_schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """The schedule's shape, peaking at 1.0: the learning rate is the peak times this."""
    if opt.schedule == "constant":
        if opt.warmup_steps:
            return optax.join_schedules(
                [optax.linear_schedule(0.0, 1.0, opt.warmup_steps), optax.constant_schedule(1.0)],
                [opt.warmup_steps],
            )
        return optax.constant_schedule(1.0)
    if opt.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=1.0,
            warmup_steps=opt.warmup_steps,
            decay_steps=max(total_steps, opt.warmup_steps + 1),
            end_value=float(opt.end_learning_rate_factor),
        )
    if opt.schedule == "step":
        return optax.piecewise_constant_schedule(
            1.0, {int(b): float(opt.step_factor) for b in opt.step_boundaries}
        )
    raise ValueError(f"unknown schedule {opt.schedule!r}")  # validate() catches this first


def schedule(
    opt: ml_collections.ConfigDict,
    total_steps: int,
    values: Hyperparameters | None = None,
) -> optax.Schedule:
    """The learning rate at each step: `learning_rate` (from `values`, default the config's)
    times the schedule's shape: constant with an optional linear warmup; warmup then cosine
    decay to `end_learning_rate_factor` of the peak (optax's warmup_cosine_decay_schedule);
    or `step_factor` at each of `step_boundaries`."""
    peak = (values or {}).get("learning_rate", float(opt.learning_rate))
    unit = _unit_schedule(opt, total_steps)
    return lambda count: peak * unit(count)


def make(
    opt: ml_collections.ConfigDict,
    total_steps: int,
    freeze: Sequence[str] = (),
    values: Hyperparameters | None = None,
) -> optax.GradientTransformation:
    """An optax chain built from the `optimizer.*` config keys, with the float hyperparameters
    from `values` where given (keys as `hyperparameters` returns them; arrays in the train
    step), the config's otherwise: the optimizer state's structure never depends on them.
    Parameters whose path one of `freeze`'s regexes matches in full are not updated (see the
    module docstring).

    Raises ConfigError if the schedule does not fit the run (warmup or a step boundary at or
    past `total_steps`, which num_epochs runs learn only once the data set is open)."""
    config_lib.check_ranges({"optimizer": opt.to_dict()}, total_steps=total_steps)
    values = {**hyperparameters(opt), **(values or {})}
    chain = _chain(opt, values, schedule(opt, total_steps, values))
    if not freeze:
        return chain  # the same optimizer state as ever: checkpoints without freezing restore
    return freezing.mask(chain, freeze)


def for_step(
    opt: ml_collections.ConfigDict, total_steps: int, freeze: Sequence[str] = ()
) -> Callable[[Hyperparameters], tuple[optax.GradientTransformation, optax.Schedule]]:
    """What ann/train/step.py's `make_train_step` takes: `values -> (chain, schedule)`, both
    built from the hyperparameters the step is given (`make` and `schedule`)."""

    def optimizer(values: Hyperparameters):
        return make(opt, total_steps, freeze, values), schedule(opt, total_steps, values)

    return optimizer


def _chain(
    opt: ml_collections.ConfigDict, h: Hyperparameters, lr: optax.Schedule
) -> optax.GradientTransformation:
    """An optax chain built from the `optimizer.*` config keys and the hyperparameters `h`."""
    parts = []
    if opt.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(h["grad_clip_norm"]))
    if opt.name == "sgd":
        if opt.weight_decay:
            parts.append(optax.add_decayed_weights(h["weight_decay"]))
        momentum = h["momentum"] if opt.momentum else None
        parts.append(optax.sgd(lr, momentum=momentum, nesterov=opt.nesterov))
    elif opt.name == "adam":
        if opt.weight_decay:  # L2 added to the gradient; adamw decouples it
            parts.append(optax.add_decayed_weights(h["weight_decay"]))
        parts.append(optax.adam(lr, b1=h["b1"], b2=h["b2"], eps=h["eps"]))
    elif opt.name == "adamw":
        parts.append(
            optax.adamw(lr, b1=h["b1"], b2=h["b2"], eps=h["eps"], weight_decay=h["weight_decay"])
        )
    else:
        raise ValueError(f"unknown optimizer {opt.name!r}")  # validate() catches this first
    return optax.chain(*parts)
