"""The optimizer factory: sgd (+momentum), adam, adamw; schedules; clipping; weight decay;
frozen parameters (`config.freeze`, masked by ann/train/freezing.py).

The train step takes the optimizer's hyperparameters (`hyperparameters`: the learning rate,
weight decay, momentum, Adam's b1, b2 and eps, the clipping norm, and the schedule's step counts
and factors, `total_steps` among them) as arguments at run time instead of compiling them in as
constants, and builds its optax chain and schedule from them inside the trace (`make(...,
values=...)`; optax's transformations take arrays for these, the schedules are written over
arrays here). Runs that differ only in those values share one compiled train step: a sweep over
the learning rate or the warmup compiles it once per model and reads it from the persistent
compilation cache in every other trial, and a resume that raises `total_steps` reads it too
(docs/benchmarks.md, "Issue 16, session 12" and "session 13"). What shapes the program stays
compiled in: the optimizer's name, which parts the chain has (clipping and weight decay on or
off, momentum or none, Nesterov), the schedule's kind and its number of step boundaries, the
frozen paths.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ann import config as config_lib
from ann.train import freezing

# A hyperparameter's value: a Python float, or a float32 scalar array (a tracer in the step).
Hyperparameters = Mapping[str, Any]


def hyperparameters(opt: ml_collections.ConfigDict, total_steps: int) -> dict[str, np.ndarray]:
    """The values the train step takes at run time (see the module docstring), by config key,
    for a run of `total_steps` steps: float32 scalars for the learning rate, the clipping norm,
    weight decay, momentum, Adam's b1/b2/eps, the schedule's `end_learning_rate_factor` and
    `step_factor`; int32 for `warmup_steps` and `total_steps`; an int32 vector `[n]` for the
    `n` `step_boundaries`. Only those of the parts the chain and schedule have (no `momentum`
    without momentum, no `total_steps` outside warmup_cosine)."""
    f32, i32 = np.float32, np.int32
    values = {"learning_rate": f32(opt.learning_rate)}
    if opt.grad_clip_norm:
        values["grad_clip_norm"] = f32(opt.grad_clip_norm)
    if opt.weight_decay or opt.name == "adamw":
        values["weight_decay"] = f32(opt.weight_decay)
    if opt.name in ("adam", "adamw"):
        values.update(b1=f32(opt.b1), b2=f32(opt.b2), eps=f32(opt.eps))
    elif opt.momentum:
        values["momentum"] = f32(opt.momentum)
    if opt.schedule in ("constant", "warmup_cosine"):
        values["warmup_steps"] = i32(opt.warmup_steps)
    if opt.schedule == "warmup_cosine":
        values["total_steps"] = i32(total_steps)
        values["end_learning_rate_factor"] = f32(opt.end_learning_rate_factor)
    if opt.schedule == "step":
        values["step_boundaries"] = np.asarray(opt.step_boundaries, i32).reshape(-1)
        values["step_factor"] = f32(opt.step_factor)
    return values


def _warmup(count: Any, warmup_steps: Any, xp: Any) -> Any:
    """optax.linear_schedule(0.0, 1.0, warmup_steps)'s formula, over arrays."""
    w = xp.maximum(warmup_steps, 1).astype(xp.float32)  # 0: never selected, never nan
    frac = 1 - xp.clip(count, 0, w) / w
    return -1.0 * frac + 1.0


def _unit_schedule(opt: ml_collections.ConfigDict, h: Hyperparameters, xp: Any) -> optax.Schedule:
    """The schedule's shape, peaking at 1.0 (the learning rate is the peak times this), from
    the step counts and factors in `h`, arrays in the train step. The formulas are optax's
    (warmup_cosine_decay_schedule: linear_schedule then cosine_decay_schedule, Loshchilov &
    Hutter 2017, joined by join_schedules; piecewise_constant_schedule) written over arrays:
    optax's constructors branch in Python on the step counts, which would compile them into
    the step, so a run with more steps (or a resume that raises total_steps) would compile it
    again."""
    if opt.schedule == "constant":
        w = h["warmup_steps"]
        return lambda count: xp.where(count < w, _warmup(count, w, xp), 1.0)
    if opt.schedule == "warmup_cosine":
        w, end = h["warmup_steps"], h["end_learning_rate_factor"]

        def warmup_cosine(count):  # every op inside: no eager op (and compile) when built
            decay = (xp.maximum(h["total_steps"], w + 1) - w).astype(xp.float32)
            t = xp.minimum(xp.asarray(count - w).astype(xp.float32), decay)
            cosine = 0.5 * (1 + xp.cos(xp.pi * t / decay))
            return xp.where(count < w, _warmup(count, w, xp), (1 - end) * cosine + end)

        return warmup_cosine
    if opt.schedule == "step":

        def step(count):
            value = xp.float32(1.0)
            for i in range(len(opt.step_boundaries)):  # how many is the program's shape
                boundary = h["step_boundaries"][i]
                value = xp.where(count < boundary, value, value * h["step_factor"])
            return value

        return step
    raise ValueError(f"unknown schedule {opt.schedule!r}")  # validate() catches this first


def schedule(
    opt: ml_collections.ConfigDict,
    total_steps: int,
    values: Hyperparameters | None = None,
    xp: Any = jnp,
) -> optax.Schedule:
    """The learning rate at each step: `learning_rate` times the schedule's shape: constant
    with an optional linear warmup; warmup then cosine decay to `end_learning_rate_factor` of
    the peak (optax's warmup_cosine_decay_schedule); or `step_factor` at each of
    `step_boundaries`. Every value from `values` where given (arrays in the train step), the
    config's otherwise. `xp`: jax.numpy, or numpy for a value on the host that compiles
    nothing (each eager jax op would compile a program)."""
    values = {**hyperparameters(opt, total_steps), **(values or {})}
    peak, unit = values["learning_rate"], _unit_schedule(opt, values, xp)
    return lambda count: peak * unit(count)


def make(
    opt: ml_collections.ConfigDict,
    total_steps: int,
    freeze: Sequence[str] = (),
    values: Hyperparameters | None = None,
) -> optax.GradientTransformation:
    """An optax chain built from the `optimizer.*` config keys, with the hyperparameters
    from `values` where given (keys as `hyperparameters` returns them; arrays in the train
    step), the config's otherwise: the optimizer state's structure never depends on them.
    Parameters whose path one of `freeze`'s regexes matches in full are not updated (see the
    module docstring).

    Raises ConfigError if the schedule does not fit the run (warmup or a step boundary at or
    past `total_steps`, which num_epochs runs learn only once the data set is open)."""
    config_lib.check_ranges({"optimizer": opt.to_dict()}, total_steps=total_steps)
    values = {**hyperparameters(opt, total_steps), **(values or {})}
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
        parts.append(_clip_by_global_norm(h["grad_clip_norm"]))
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


def _clip_by_global_norm(max_norm: Any) -> optax.GradientTransformation:
    """`optax.clip_by_global_norm(max_norm)` over float32 copies of the gradients, each update
    cast back to its gradient's dtype. optax (0.2.8) scales a gradient by the float32
    `max_norm` (an argument of the step, not a Python float) and then `lax.select`s between
    the scaled float32 and the unscaled bfloat16/float16 gradient: with `param_dtype=bfloat16`
    and clipping on (configs/digits_vit.py) the step failed to trace ("lax.select requires
    arguments to have the same dtypes")."""
    inner = optax.clip_by_global_norm(max_norm)

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        wide = jax.tree.map(lambda u: u.astype(jnp.promote_types(u.dtype, jnp.float32)), updates)
        clipped, state = inner.update(wide, state, params)
        return jax.tree.map(lambda c, u: c.astype(u.dtype), clipped, updates), state

    return optax.GradientTransformation(inner.init, update)
