"""The `optimizer.*` keys do what they say: ann's optimizer against the published update rules
written out in NumPy (SGD with heavy-ball or Nesterov momentum as optax/PyTorch define them,
Adam: Kingma & Ba 2015, Alg. 1, with eps outside the square root; AdamW: Loshchilov & Hutter
2019, decay decoupled and scaled by the learning rate as in optax), and the schedules against
their formulas."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny

from ann.train import optimizers

STEPS = 5
RNG = np.random.default_rng(0)
PARAMS = RNG.normal(size=6).astype(np.float32)
GRADS = [RNG.normal(scale=2.0, size=6).astype(np.float32) for _ in range(STEPS)]


def lr_at(opt, t, total):
    """The learning rate of update t (0-based), from the schedule's formula."""
    lr, w = opt["learning_rate"], opt.get("warmup_steps", 0)
    schedule = opt.get("schedule", "constant")
    if schedule == "constant":
        return lr * t / w if t < w else lr
    if schedule == "warmup_cosine":
        if t < w:
            return lr * t / w
        end = lr * opt.get("end_learning_rate_factor", 0.0)
        decay = max(total, w + 1) - w
        return end + (lr - end) * 0.5 * (1 + math.cos(math.pi * min(t - w, decay) / decay))
    if schedule == "step":
        factor = opt.get("step_factor", 0.1)
        return lr * factor ** sum(t >= b for b in opt["step_boundaries"])
    raise ValueError(schedule)


def reference(opt, total=STEPS):
    """Params after each of the updates of GRADS, by the textbook rules, in float64."""
    p = PARAMS.astype(np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    name, wd = opt["name"], opt.get("weight_decay", 0.0)
    out = []
    for t, g in enumerate(GRADS):
        g = g.astype(np.float64)
        clip = opt.get("grad_clip_norm", 0.0)
        if clip and np.linalg.norm(g) > clip:
            g = g * clip / np.linalg.norm(g)
        lr = lr_at(opt, t, total)
        if name == "sgd":
            g = g + wd * p  # L2
            mu = opt.get("momentum", 0.9)
            if mu:
                m = g + mu * m
                step = g + mu * m if opt.get("nesterov") else m
            else:
                step = g
            p = p - lr * step
        else:
            if name == "adam":
                g = g + wd * p  # L2, coupled: it goes through Adam's scaling
            b1, b2, eps = opt.get("b1", 0.9), opt.get("b2", 0.999), opt.get("eps", 1e-8)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            adam = (m / (1 - b1 ** (t + 1))) / (np.sqrt(v / (1 - b2 ** (t + 1))) + eps)
            if name == "adamw":
                adam = adam + wd * p  # decoupled: added after Adam's scaling
            p = p - lr * adam
        out.append(p.copy())
    return out


CASES = {
    "sgd": {"name": "sgd", "momentum": 0.0},
    "sgd_momentum": {"name": "sgd", "momentum": 0.9},
    "sgd_nesterov": {"name": "sgd", "momentum": 0.9, "nesterov": True},
    "sgd_weight_decay": {"name": "sgd", "momentum": 0.5, "weight_decay": 0.1},
    "adam": {"name": "adam", "b1": 0.8, "b2": 0.99, "eps": 1e-3},
    "adam_l2": {"name": "adam", "weight_decay": 0.1},
    "adamw": {"name": "adamw", "weight_decay": 0.1},
    "clipped": {"name": "adam", "grad_clip_norm": 1.0},
    "clipped_sgd": {"name": "sgd", "grad_clip_norm": 0.5, "momentum": 0.0},
    "warmup_cosine": {
        "name": "sgd",
        "schedule": "warmup_cosine",
        "warmup_steps": 2,
        "end_learning_rate_factor": 0.1,
    },
    "warmup_constant": {"name": "adamw", "warmup_steps": 3, "weight_decay": 0.01},
    "step": {"name": "sgd", "schedule": "step", "step_boundaries": (2, 4), "step_factor": 0.5},
}


def halved(key, value):
    """Another value of the hyperparameter `key`, as valid for the same run."""
    if key in ("warmup_steps", "step_boundaries"):
        return value + 1  # still inside the run's STEPS
    return value * 0.5


@pytest.mark.parametrize("as_arguments", [False, True], ids=["constants", "arguments"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_updates_match_the_published_rules(case, as_arguments):
    """The chain from the config's values, and (as the train step builds it) from its
    hyperparameters given as arrays to the compiled update, over a config (and a run length)
    that holds other values: those arrays, not the config, set the update and its schedule."""
    opt = {"learning_rate": 0.1, **CASES[case]}
    config = tiny(**{f"optimizer.{k}": v for k, v in opt.items()})
    tx = optimizers.make(config.optimizer, total_steps=STEPS)
    params = {"w": jnp.asarray(PARAMS)}
    state = tx.init(params)
    values = optimizers.hyperparameters(config.optimizer, STEPS)
    # Every value the step takes as an argument changed in the config it compiles from.
    other = tiny(**{f"optimizer.{k}": v for k, v in opt.items()})
    for key, value in values.items():
        if key != "total_steps":
            other.optimizer[key] = halved(key, np.asarray(value)).tolist()

    @jax.jit
    def traced(grads, state, params, values):
        tx = optimizers.make(other.optimizer, 2 * STEPS, values=values)
        return tx.update(grads, state, params)

    update = functools.partial(traced, values=values) if as_arguments else jax.jit(tx.update)
    for t, (g, want) in enumerate(zip(GRADS, reference(opt))):
        updates, state = update({"w": jnp.asarray(g)}, state, params)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(
            np.asarray(params["w"]), want, rtol=1e-4, atol=1e-5, err_msg=f"{case}, update {t}"
        )


@pytest.mark.parametrize("xp", [jnp, np], ids=["jax", "numpy"])
@pytest.mark.parametrize("case", ["warmup_cosine", "warmup_constant", "step"])
def test_schedules_match_their_formulas(case, xp):
    """In a trace (jax.numpy) and on the host (numpy: resume's warning, which must not run
    a jax op: each would compile a program at the resume's start)."""
    opt = {"learning_rate": 0.1, **CASES[case]}
    config = tiny(**{f"optimizer.{k}": v for k, v in opt.items()})
    schedule = optimizers.schedule(config.optimizer, 8, xp=xp)
    for t in range(10):
        value = schedule(t)
        assert float(value) == pytest.approx(lr_at(opt, t, 8), rel=1e-5, abs=1e-9), t
        assert isinstance(value, jax.Array) == (xp is jnp)


def test_frozen_parameters_get_no_update_and_no_weight_decay():
    config = tiny(**{"optimizer.name": "adamw", "optimizer.weight_decay": 0.5})
    tx = optimizers.make(config.optimizer, total_steps=STEPS, freeze=("head/.*",))
    params = {"body": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(3)}}
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert not np.asarray(updates["head"]["w"]).any()
    assert np.asarray(updates["body"]["w"]).all()
