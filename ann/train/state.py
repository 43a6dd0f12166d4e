"""The train state: one pytree of arrays that Orbax saves and restores as a whole."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from ann import sharding
from ann.train import xla_options


@struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer updates done
    params: nnx.State  # trained parameters (nnx.Param)
    model_state: nnx.State  # everything else the model carries, e.g. BatchNorm statistics
    opt_state: Any
    rng: jax.Array  # raw uint32 key; the step's dropout key is fold_in(rng, step)


@struct.dataclass
class ModelDef:
    """The static halves of the model: its graph in train mode and in eval mode."""

    train: nnx.GraphDef = struct.field(pytree_node=False)
    eval: nnx.GraphDef = struct.field(pytree_node=False)


def create(model: nnx.Module, tx: optax.GradientTransformation, rng: jax.Array):
    """Splits a freshly built model into (ModelDef, TrainState) where its arrays are (on the
    host for an eagerly built model; see `create_sharded` for building it on its shardings)."""
    model.eval()
    eval_def, _, _ = nnx.split(model, nnx.Param, ...)
    model.train()
    train_def, params, model_state = nnx.split(model, nnx.Param, ...)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        model_state=model_state,
        opt_state=tx.init(params),
        rng=rng,
    )
    return ModelDef(train=train_def, eval=eval_def), state


def state_rng(seed: int) -> jax.Array:
    """The train state's RNG key for `seed` (`TrainState.rng`, the root of the steps' dropout
    keys): `fold_in(PRNGKey(seed), 1)`, apart from the model's initializers (`nnx.Rngs(seed)`)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 1)


class Initializer:
    """The jitted sharded initializer of `sharded_initializer`: `init()` is the state;
    `init.lower(lowering_platforms)` its ahead-of-time lowering (to compile with other options,
    or for another platform). Both lower the initializer's random numbers as
    `xla_options.init_lowering` says (JAX's threefry kernel on GPU)."""

    def __init__(self, jitted: Any):
        self._jitted = jitted

    def __call__(self) -> TrainState:
        with xla_options.init_lowering((jax.default_backend(),)):
            return self._jitted()

    def lower(self, lowering_platforms: tuple[str, ...] | None = None) -> jax.stages.Lowered:
        """The lowered initializer for `lowering_platforms` (default: this backend)."""
        with xla_options.init_lowering(lowering_platforms or (jax.default_backend(),)):
            return self._jitted.trace().lower(lowering_platforms=lowering_platforms)


def sharded_initializer(
    make_model: Callable[[], nnx.Module],
    tx: optax.GradientTransformation,
    seed: int,
    rules: Any,
    mesh: jax.sharding.Mesh,
) -> tuple[ModelDef, Initializer, Any]:
    """(ModelDef, init, abstract_state): `init()` builds the train state directly on its
    shardings (ann/sharding.py's `rules` over `mesh`), as one jitted function whose outputs are
    sharded, so no device ever holds more than its shards of a model that only fits sharded.
    `abstract_state` is the state as `jax.ShapeDtypeStruct`s with those shardings (from
    `jax.eval_shape`: nothing allocated, nothing compiled), all a checkpoint restore needs.
    `init` computes the same values as building the model eagerly with the same seed (same RNG
    streams, the state's key `state_rng(seed)`; tests/test_sharding.py checks it)."""

    def build() -> tuple[ModelDef, TrainState]:
        # The key is derived inside the one jitted init, not eagerly: eager PRNGKey and fold_in
        # would be 4 small executables more to compile (or read from the cache) at every start.
        return create(make_model(), tx, state_rng(seed))

    model_def, shapes = jax.eval_shape(build)
    shardings = sharding.state_shardings(shapes, rules, mesh)
    # Compiled for running once (xla_options.INIT): seconds less to a run's first step.
    options = xla_options.for_cpu(xla_options.INIT)
    init = jax.jit(lambda: build()[1], out_shardings=shardings, compiler_options=options)
    return model_def, Initializer(init), abstract(shapes, shardings)


def create_sharded(
    make_model: Callable[[], nnx.Module],
    tx: optax.GradientTransformation,
    seed: int,
    rules: Any,
    mesh: jax.sharding.Mesh,
) -> tuple[ModelDef, TrainState, Any]:
    """(ModelDef, TrainState, its shardings), the state built where it lives (see
    `sharded_initializer`). Raises ConfigError for sharding rules that do not fit the model."""
    model_def, init, abstract_state = sharded_initializer(make_model, tx, seed, rules, mesh)
    return model_def, init(), shardings_of(abstract_state)


def merge(graphdef: nnx.GraphDef, state: TrainState) -> nnx.Module:
    """The model with the state's parameters and statistics."""
    return nnx.merge(graphdef, state.params, state.model_state, copy=True)


def shardings_of(abstract_state: Any) -> Any:
    """The tree of shardings of an abstract (or a placed) state."""
    return jax.tree.map(lambda x: x.sharding, abstract_state)


def abstract(state: TrainState, shardings: Any) -> Any:
    """ShapeDtypeStructs with target shardings: what Orbax restores into (any device count)."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )


def all_finite(tree: Any) -> jax.Array:
    """One bool scalar: True when every floating-point leaf of `tree` is finite (no NaN/inf).

    Integer leaves (step counters, RNG keys) cannot be non-finite and are skipped. Inside a jit
    this reads every leaf once with no host sync. Each leaf becomes `x * 0` (0 where finite, NaN
    at a NaN or an infinity, IEEE 754), and leaves of one shape and dtype are added before one
    reduction: an optimizer's moments share their parameter's shape, so Adam's state is checked
    in one reduction per parameter, not three (and not the `isfinite` + reduce-window + reduce
    per leaf that `jnp.isfinite(x).all()` compiles to on XLA:CPU: docs/benchmarks.md, "Issue
    16, session 9"). A sum of zeros and NaNs is NaN exactly when a NaN is in it.
    """
    groups: dict[tuple, list[jax.Array]] = {}
    for x in jax.tree.leaves(tree):
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact):
            groups.setdefault((jnp.shape(x), jnp.result_type(x)), []).append(x)
    if not groups:
        return jnp.array(True)
    sums = [jnp.sum(sum(x * 0 for x in group)) for group in groups.values()]
    return jnp.isfinite(sum(sums))
