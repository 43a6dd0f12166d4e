"""The train and eval steps: pure functions over (graphdef, state), jitted once, ahead of time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ann import parallel
from ann.config import ConfigError
from ann.experiment import Experiment
from ann.sharding import path_str as path_name
from ann.train import optimizers, xla_options
from ann.train.state import ModelDef, TrainState, all_finite

# The train metric that says whether the updated state (parameters, model state such as
# BatchNorm statistics, optimizer state) is finite; the loop pops it before logging.
STATE_FINITE = "state_finite"


# The optimizer of a train step: its optax chain and learning-rate schedule, built from the
# hyperparameters the step is given (ann/train/optimizers.py `make` and `schedule`).
Optimizer = Callable[[dict], tuple[optax.GradientTransformation, optax.Schedule]]


def _check_loss(experiment: Experiment, returned: Any) -> tuple[jax.Array, dict]:
    """`experiment.loss`'s (loss, metrics), or ConfigError, as the step is traced, for one that
    returns something else, a loss that is not a float scalar, or metrics that are not a dict
    of scalars (JAX said "Gradient only defined for scalar-output functions", "iteration over
    a 0-d array", or the log line failed at the first step's record)."""
    name = type(experiment).__name__
    if not isinstance(returned, tuple | list) or len(returned) != 2:
        got = f"a {type(returned).__name__}" + (
            f" of {len(returned)}" if isinstance(returned, tuple | list) else ""
        )
        if isinstance(returned, jax.Array):
            got = f"one {returned.dtype} array of shape {list(returned.shape)}"
        raise ConfigError(
            f"experiment {name}'s loss returns {got}; it must return (loss, metrics): the "
            "batch's mean loss, a float scalar, and a dict of scalar metrics"
        )
    loss, metrics = returned
    if (
        not isinstance(loss, jax.Array)
        or loss.shape != ()
        or not jnp.issubdtype(loss.dtype, jnp.floating)
    ):
        got = (
            f"{loss.dtype} of shape {list(loss.shape)}"
            if isinstance(loss, jax.Array)
            else (f"a {type(loss).__name__}")
        )
        raise ConfigError(
            f"experiment {name}'s loss returns {got} as its loss; it must be a float scalar "
            "(the batch's mean loss), with the metrics dict beside it"
        )
    bad = [
        k
        for k, v in (metrics.items() if isinstance(metrics, dict) else ())
        if (not isinstance(v, jax.Array) or v.shape != ())
    ]
    if not isinstance(metrics, dict) or bad:
        what = f"{bad[0]!r} is not a scalar" if bad else f"got a {type(metrics).__name__}"
        raise ConfigError(
            f"experiment {name}'s loss returns metrics that are not a dict of scalars ({what}); "
            "return {name: scalar} (batch means, logged as train/NAME)"
        )
    return loss, metrics


def make_train_step(
    experiment: Experiment,
    model_def: ModelDef,
    optimizer: Optimizer,
    accumulate_steps: int = 1,
    frozen: frozenset[str] = frozenset(),
) -> Callable[[TrainState, dict, dict], tuple[TrainState, dict]]:
    """One optimizer update, `(state, batch, hyperparameters) -> (state, metrics)`; with
    `accumulate_steps` > 1 the batch is split into micro-batches whose gradients are averaged (a
    bigger effective batch in the same memory).

    `hyperparameters` (arrays by name, ann/train/optimizers.py `hyperparameters`) are
    arguments, not constants: steps that differ only in them compile to the same program, and
    `optimizer(hyperparameters)` builds the chain and schedule from them inside the trace.

    Parameters whose path is in `frozen` (`config.freeze`, resolved) are cut from the gradient:
    their gradient is zero without being computed, and a frozen backbone's whole backward pass
    drops out of the compiled step. The optimizer does not update them either way.

    The step's metrics hold `STATE_FINITE`: whether the state it returns is all finite, so the
    loop never saves a state whose loss it has not yet seen go bad."""

    def cut_frozen(params):
        return jax.tree_util.tree_map_with_path(
            lambda p, x: jax.lax.stop_gradient(x) if path_name(p) in frozen else x, params
        )

    def grads_of(params, model_state, batch, rng):
        def loss_fn(params):
            if frozen:
                params = cut_frozen(params)
            # copy=True: fresh Variables at this trace level, so BatchNorm may update them.
            model = nnx.merge(model_def.train, params, model_state, copy=True)
            loss, metrics = _check_loss(experiment, experiment.loss(model, batch, rng))
            return loss, (metrics, nnx.state(model, nnx.Not(nnx.Param)))

        (_, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return grads, metrics, model_state

    def train_step(
        state: TrainState, batch: dict, hyperparameters: dict
    ) -> tuple[TrainState, dict]:
        tx, learning_rate = optimizer(hyperparameters)
        rng = jax.random.fold_in(state.rng, state.step)
        k = accumulate_steps
        if k == 1:
            grads, metrics, model_state = grads_of(state.params, state.model_state, batch, rng)
        else:
            # Micro-batch j takes rows j, j+k, ...: every device keeps its share of each one.
            micro = jax.tree.map(
                lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1), batch
            )

            def body(carry, xs):
                total, model_state = carry
                micro_batch, i = xs
                g, m, model_state = grads_of(
                    state.params, model_state, micro_batch, jax.random.fold_in(rng, i)
                )
                return (jax.tree.map(jnp.add, total, g), model_state), m

            zeros = jax.tree.map(jnp.zeros_like, state.params)
            (grads, model_state), metrics = jax.lax.scan(
                body, (zeros, state.model_state), (micro, jnp.arange(k))
            )
            grads = jax.tree.map(lambda g: g / k, grads)
            metrics = jax.tree.map(lambda m: m.mean(0), metrics)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # The state keeps its dtypes from step to step: float32 hyperparameters (arguments,
        # not constants) promoted a float16/bfloat16 `param_dtype`'s moments to float32, and
        # the next step (or the loop of steps in one call) refused the changed types.
        params, opt_state = jax.tree.map(
            lambda new, old: new.astype(old.dtype) if hasattr(old, "dtype") else new,
            (params, opt_state),
            (state.params, state.opt_state),
        )
        metrics = {
            **metrics,
            # In float32: squares of float16 gradients summed in float16 overflow (inf, a
            # "divergence" of a run whose gradients were finite).
            "grad_norm": optax.global_norm(jax.tree.map(lambda g: g.astype(jnp.float32), grads)),
            "learning_rate": learning_rate(state.step),
        }
        new_state = state.replace(
            step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state
        )
        # What a checkpoint of new_state would hold, checked where it lives: one bool.
        metrics[STATE_FINITE] = all_finite((params, model_state, opt_state))
        return new_state, metrics

    return train_step


def place_hyperparameters(
    opt: Any, total_steps: int, mesh: jax.sharding.Mesh
) -> dict[str, jax.Array]:
    """The train step's `hyperparameters` argument for the `optimizer.*` config `opt` and a run
    of `total_steps`: ann/train/optimizers.py `hyperparameters` (float32 and int32 scalars, the
    step boundaries a vector), replicated on `mesh`."""
    values = optimizers.hyperparameters(opt, total_steps)
    replicated = parallel.replicated(mesh)
    return parallel.place(values, {k: replicated for k in values})


def make_multi_step(
    train_step: Callable[[TrainState, dict, dict], tuple[TrainState, dict]],
    unroll: bool = False,
) -> Callable[[TrainState, dict, dict], tuple[TrainState, dict]]:
    """`train_step` over a stack of batches in one call (ann/train/chunks.py): every leaf of
    the batch has a leading axis of `k` steps (`[k, batch, ...]`, the batch axis sharded as in
    one step); the metrics come back stacked, `[k]` per metric, step by step in order.

    A `jax.lax.scan`, so XLA compiles the step once as a loop body whatever `k` is; the steps
    and their RNG (folded from the state's step) are those of `k` calls of `train_step`, and
    each step's `STATE_FINITE` names the first step whose state went bad, inside a call too.
    `unroll`: the k steps as straight-line code, not a loop (ann/train/chunks.py `unroll`).
    """

    def multi_step(state: TrainState, batches: dict, hyperparameters: dict):
        def one(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
            return train_step(state, batch, hyperparameters)

        return jax.lax.scan(one, state, batches, unroll=unroll)

    return multi_step


def eval_arrays(state: TrainState) -> tuple[list[jax.Array], Any]:
    """(arrays, treedef): the parameters and model statistics the eval step reads, as a flat
    list, and the tree to rebuild them with.

    The eval step takes this list rather than the TrainState: a list of arrays is flattened by
    jax's C++ dispatch, while the TrainState's nnx.State nodes (the optimizer's moments too,
    which eval never reads) flatten in Python at every call: 0.2 ms more per eval batch of the
    digits CNN (docs/benchmarks.md, "Issue 16, session 10")."""
    return jax.tree.flatten((state.params, state.model_state))


def make_eval_step(experiment: Experiment, model_def: ModelDef, treedef: Any) -> Callable:
    """Eval step `(arrays, batch)`, `arrays` from `eval_arrays` (with its `treedef`), returning
    {"sums": ...} and, for experiments whose `eval_rows` returns something, {"rows": ...}:
    per-row outputs with the batch's `mask`, so the host can drop padding rows."""

    def eval_step(arrays: list[jax.Array], batch: dict) -> dict:
        params, model_state = jax.tree.unflatten(treedef, arrays)
        model = nnx.merge(model_def.eval, params, model_state, copy=True)
        out = {"sums": experiment.eval_sums(model, batch)}
        if not isinstance(out["sums"], dict):  # eval_metrics then failed on it, in a traceback
            got = out["sums"]
            got = "an array" if isinstance(got, jax.Array) else f"a {type(got).__name__}"
            raise ConfigError(
                f"experiment {type(experiment).__name__}'s eval_sums returns {got}; return "
                "{name: array}, each summed over the batch's rows where batch['mask'] is 1"
            )
        per_row = experiment.eval_rows(model, batch)
        if per_row:  # known while tracing: a task whose sums are enough gathers nothing
            out["rows"] = {**per_row, "mask": batch["mask"]}
        return out

    return eval_step


def analyze(compiled: jax.stages.Compiled) -> dict[str, float]:
    """FLOPs per call (per device, as XLA counts the partitioned program) and memory use."""
    report = {}
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) and cost else cost
    if isinstance(cost, dict) and cost.get("flops", -1) > 0:
        report["flops"] = float(cost["flops"])
    memory = compiled.memory_analysis()
    if memory is not None:
        report["memory_bytes"] = float(
            memory.argument_size_in_bytes
            + memory.output_size_in_bytes
            + memory.temp_size_in_bytes
            - memory.alias_size_in_bytes
        )
    return report


def compile_step(
    fn: Callable,
    args: tuple,
    in_shardings: tuple,
    out_shardings: Any,
    donate_argnums: tuple[int, ...] = (),
) -> tuple[jax.stages.Compiled, float]:
    """Lowers and compiles `fn` for these abstract args before step 0, with the step's XLA
    options (ann/train/xla_options.py); returns (compiled, secs).

    A compiled executable cannot retrace: a batch of another shape is an error, not a silent
    recompile.
    """
    start = time.perf_counter()
    lowered = lower_step(fn, args, in_shardings, out_shardings, donate_argnums)
    compiled = lowered.compile(compiler_options=xla_options.for_cpu(xla_options.STEP))
    return compiled, time.perf_counter() - start


def lower_step(
    fn: Callable,
    args: tuple,
    in_shardings: tuple,
    out_shardings: Any,
    donate_argnums: tuple[int, ...] = (),
) -> jax.stages.Lowered:
    """`fn` jitted with these shardings and lowered for these abstract args, not yet compiled
    (its cost analysis and HLO are readable; compile it with `xla_options.STEP`)."""
    jitted = jax.jit(
        fn, in_shardings=in_shardings, out_shardings=out_shardings, donate_argnums=donate_argnums
    )
    return jitted.lower(*args)
