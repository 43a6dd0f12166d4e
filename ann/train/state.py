"""The train state: one pytree of arrays that Orbax saves and restores as a whole."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct


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
    """Splits a freshly built model into (ModelDef, TrainState) on the host."""
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


def merge(graphdef: nnx.GraphDef, state: TrainState) -> nnx.Module:
    """The model with the state's parameters and statistics."""
    return nnx.merge(graphdef, state.params, state.model_state, copy=True)


def abstract(state: TrainState, shardings: Any) -> Any:
    """ShapeDtypeStructs with target shardings: what Orbax restores into (any device count)."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )
