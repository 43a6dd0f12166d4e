"""ann's train loop vs a bare `jax.jit` loop: same model, batch, optimizer and data, one process.

    python scripts/bench_train.py [--config=configs/digits_cnn.py] [--steps=300] [--rounds=3]

Both are timed in steady state: `steps` steps after `steps` of warm-up. ann's time includes
everything its loop does per step (input pipeline, transfer to the device, the step, logging
every `log_every_steps`); eval and checkpoints are pushed past the end. The bare loop draws
batches from a NumPy array already in memory and calls one jitted, donated step.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

import jax
import numpy as np
import optax
from absl import flags, logging
from flax import nnx

from ann import cli, data
from ann import config as config_lib
from ann import experiment as experiment_lib
from ann.train import hooks, optimizers
from ann.train.loop import train_and_evaluate

FLAGS = flags.FLAGS
cli.define_config("Config to benchmark.", "configs/digits_cnn.py")
flags.DEFINE_integer("steps", 300, "Steps warmed up, then steps measured.", lower_bound=1)
flags.DEFINE_integer("rounds", 3, "Rounds; medians are reported.", lower_bound=1)


def bare_seconds_per_step(config, steps: int) -> float:
    """A plain NNX + optax loop anyone would write: jit, donate, slice, step."""
    experiment = experiment_lib.get(config.experiment)(config)
    split = data.load(config.data.name, config.data.train_split, config.data.data_dir, cache=True)
    experiment.setup(split)
    rows = experiment.fields(split.rows(np.arange(len(split))))
    model = experiment.build_model(nnx.Rngs(params=config.seed))
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optimizers.make(config.optimizer, 2 * steps)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, rest, opt_state, batch, key):
        def loss_fn(p):
            m = nnx.merge(graphdef, p, rest)
            loss, _ = experiment.loss(m, batch, key)
            return loss, nnx.state(m, nnx.Not(nnx.Param))

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1, 2))
    rng = np.random.default_rng(0)
    n, b = len(split), config.batch_size
    key = jax.random.PRNGKey(0)

    def run(count):
        nonlocal params, rest, opt_state
        loss = None
        for i in range(count):
            idx = rng.integers(0, n, b)
            batch = {k: v[idx] for k, v in rows.items()}
            params, rest, opt_state, loss = step(
                params, rest, opt_state, batch, jax.random.fold_in(key, i)
            )
        jax.block_until_ready(loss)

    run(steps)  # compile and warm up
    start = time.perf_counter()
    run(steps)
    return (time.perf_counter() - start) / steps


def ann_seconds_per_step(config, steps: int) -> float:
    """Steady state inside one run: the wall time from step `steps` to step `2 * steps`, with
    the loop logging every `log_every_steps` as configured (eval and checkpoints pushed out)."""
    c = config.copy_and_resolve_references()
    c.total_steps = 2 * steps
    c.eval_every_steps = c.checkpoint_every_steps = 10 * steps
    clock = hooks.Clock(steps)
    with tempfile.TemporaryDirectory() as workdir:
        train_and_evaluate(c, workdir, extra_hooks=[clock])
    return (clock.times[2 * steps] - clock.times[steps]) / steps


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    config = FLAGS.config
    config.total_steps = 2 * FLAGS.steps  # as both loops run it
    config_lib.fit_warmup(config)  # a longer warmup ends inside the untimed first half
    experiment_lib.check_config(config, jax.device_count())  # before either loop starts
    print(
        f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; "
        f"model {config.model.name}, batch {config.batch_size}, {FLAGS.steps} steps"
    )
    bare, ours = [], []
    for r in range(FLAGS.rounds):
        bare.append(bare_seconds_per_step(config, FLAGS.steps))
        ours.append(ann_seconds_per_step(config, FLAGS.steps))
        print(
            f"round {r}: bare {bare[-1] * 1e3:.2f} ms/step, ann {ours[-1] * 1e3:.2f} ms/step",
            flush=True,
        )
    b, o = statistics.median(bare), statistics.median(ours)
    bs = config.batch_size
    print(f"bare jax.jit: {b * 1e3:.2f} ms/step, {bs / b:,.0f} examples/s")
    print(f"ann loop:     {o * 1e3:.2f} ms/step, {bs / o:,.0f} examples/s")
    print(f"ratio ann/bare throughput: {b / o:.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    cli.run(main)
