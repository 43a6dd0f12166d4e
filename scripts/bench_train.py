"""ann's train loop vs a bare `jax.jit` loop: same model, batch, optimizer and data, one process.

    python scripts/bench_train.py [--config=configs/digits_cnn.py] [--steps=300] [--rounds=3]
    python scripts/bench_train.py --eval [--evals=20]    # ann's eval vs a bare eval loop

Both are timed in steady state: `steps` steps after `steps` of warm-up. ann's time includes
everything its loop does per step (input pipeline, transfer to the device, the step, logging
every `log_every_steps`); eval and checkpoints are pushed past the end. The bare loop draws
batches from a NumPy array already in memory and calls one jitted, donated step.

`--eval` times one evaluation instead: ann's (`eval/seconds` of a run that evaluates every 10
steps: the validation and test splits, then the experiment's metrics) against a bare loop over
the same splits and batch size (padded batches on the device, one jitted function of the
experiment's `eval_sums` and `eval_rows`, one pull to the host per split, the same metrics),
the two alternating inside the same run (the bare one at steps 5, 15, ...), so both see the
same machine: separate runs differed by up to 20% from round to round here.
The load average (1 minute) is printed before and after: other work on the machine skews both.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from absl import flags, logging

from ann import cli
from ann import config as config_lib

if TYPE_CHECKING:
    import ml_collections

    from ann import data

# JAX and the code measured are imported where they are used, so --help and a bad flag answer
# before they load (as in every benchmark script).

FLAGS = flags.FLAGS
cli.define_config("Config to benchmark.", "configs/digits_cnn.py")
flags.DEFINE_integer("steps", 300, "Steps warmed up, then steps measured.", lower_bound=1)
flags.DEFINE_integer("rounds", 3, "Rounds; medians are reported.", lower_bound=1)
flags.DEFINE_bool("eval", False, "Time one evaluation (ann vs bare) instead of train steps.")
flags.DEFINE_integer("evals", 20, "With --eval: evaluations timed per round.", lower_bound=2)


def bare_seconds_per_step(config, steps: int) -> float:
    """A plain NNX + optax loop anyone would write: jit, donate, slice, step."""
    import jax
    import numpy as np
    import optax
    from flax import nnx

    from ann import data
    from ann import experiment as experiment_lib
    from ann.train import optimizers

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
    the loop logging every `log_every_steps` as configured (eval and checkpoints pushed out).

    The run goes `log_every_steps` past step `2 * steps`: every hook is due at the last step,
    and the final eval and checkpoint save would otherwise be timed as train steps (the clock
    is the last hook called), 0.1-2 s against ann's loop."""
    from ann.train import hooks
    from ann.train.loop import train_and_evaluate

    c = config.copy_and_resolve_references()
    c.total_steps = 2 * steps + c.log_every_steps
    c.eval_every_steps = c.checkpoint_every_steps = 10 * steps
    clock = hooks.Clock(steps)
    with tempfile.TemporaryDirectory() as workdir:
        train_and_evaluate(c, workdir, extra_hooks=[clock])
    return (clock.times[2 * steps] - clock.times[steps]) / steps


def _scored_splits(config) -> list[data.Split]:
    from ann import data

    names = [config.data.validation_split, config.data.eval_splits[0]]
    return [data.load(config.data.name, n, config.data.data_dir, cache=True) for n in names]


def bare_evaluation(config) -> Callable[[], None]:
    """One bare evaluation of the validation and test splits, ready to call (compiled)."""
    import jax
    import numpy as np
    from flax import nnx

    from ann import data
    from ann import experiment as experiment_lib

    experiment = experiment_lib.get(config.experiment)(config)
    train = data.load(config.data.name, config.data.train_split, config.data.data_dir, cache=True)
    experiment.setup(train)
    model = experiment.build_model(nnx.Rngs(params=config.seed))
    model.eval()
    graphdef, state = nnx.split(model)
    size = config.eval_batch_size or config.batch_size
    # The same padded batches ann reads, held on the device (as ann keeps a small split).
    splits = [
        [jax.device_put(b) for b in data.eval_batches(s, experiment.fields, size)]
        for s in _scored_splits(config)
    ]

    @jax.jit
    def step(state, batch):
        m = nnx.merge(graphdef, state)
        return experiment.eval_sums(m, batch), experiment.eval_rows(m, batch)

    def once():
        for batches in splits:
            sums, rows = None, []
            for batch in batches:
                s, r = step(state, batch)
                sums = s if sums is None else jax.tree.map(jax.numpy.add, sums, s)
                rows.append(r)
            sums, rows = jax.device_get((sums, rows))
            if rows[0]:
                keep = np.concatenate([np.asarray(b["mask"]) for b in batches]) > 0
                real = {k: np.concatenate([r[k] for r in rows])[keep] for k in rows[0]}
                experiment.eval_metrics(sums, real)
            else:
                experiment.eval_metrics(sums)

    once()  # compile
    return once


def _bare_evals(once: Callable[[], None]):
    """A hook that times `once()` at steps 5, 15, 25, ... (its `seconds`): each bare
    evaluation, like each of ann's (steps 10, 20, ...), comes after 5 train steps of the same
    run."""
    from ann.train import hooks

    class BareEvals(hooks.Hook):
        def __init__(self):
            super().__init__(5)
            self.seconds = []

        def due(self, step: int, total_steps: int) -> bool:
            return step % 10 == 5

        def __call__(self, info: hooks.StepInfo) -> None:
            start = time.perf_counter()
            once()
            self.seconds.append(time.perf_counter() - start)

    return BareEvals()


def eval_run_config(config, evals: int) -> ml_collections.ConfigDict:
    """`config` as `eval_seconds` runs it: `evals` evaluations 10 steps apart, no checkpoint
    but the first best.

    Only the first eval saves a best checkpoint: an Orbax write takes longer than 10 train
    steps here, so with a new best at most evals (the model learning) each timed eval would
    share the CPU with the previous eval's save still in flight, which the default experiment
    (evals 200 steps apart) never does (docs/benchmarks.md, "Issue 16, session 9"). So the
    model must not learn: with a learning rate of 1e-30 an update is below float32's resolution
    of any nonzero weight (a zero bias becomes 1e-30, lost in the next sum), the validation
    loss ties at every eval, and a tie is not a best. An eval's cost does not depend
    on the weights' values. (It used `best_mode=max` on the validation loss, which the config
    now refuses as keeping the worst checkpoint.)"""
    c = config.copy_and_resolve_references()
    config_lib.shorten(c, 10 * (evals + 1))  # a warmup longer than a few evals is fitted
    c.eval_every_steps = 10
    c.checkpoint_every_steps = 100 * c.total_steps
    c.optimizer.learning_rate = 1e-30
    c.best_metric, c.best_mode = "val/loss", "min"
    return c


def eval_seconds(config, evals: int) -> tuple[float, float]:
    """(bare, ann): median seconds of one evaluation, both taken inside one ann run that
    alternates them: ann's own (`eval/seconds` at steps 10, 20, ...) and a bare one (at steps
    5, 15, ...); the first two of each left out.

    The run is `eval_run_config`'s."""
    from ann.train import writers
    from ann.train.loop import train_and_evaluate

    bare = _bare_evals(bare_evaluation(config))
    c = eval_run_config(config, evals)
    with tempfile.TemporaryDirectory() as workdir:
        train_and_evaluate(c, workdir, extra_hooks=[bare])
        ours = [
            r["eval/seconds"]
            for r in writers.read_records(os.path.join(workdir, "metrics.jsonl"))
            if "eval/seconds" in r
        ]
    return statistics.median(bare.seconds[2:]), statistics.median(ours[2:])


def _load() -> str:
    return f"load average {os.getloadavg()[0]:.2f}"


def main_eval(config) -> None:
    """Prints ann's eval time against the bare eval loop's, and the ratio: the median of the
    rounds' ratios (each round's two loops ran side by side)."""
    print(f"model {config.model.name}, eval batch {config.eval_batch_size or config.batch_size}")
    print(_load(), flush=True)
    bare, ours = [], []
    for r in range(FLAGS.rounds):
        b, o = eval_seconds(config, FLAGS.evals)
        bare.append(b)
        ours.append(o)
        print(
            f"round {r}: bare {b * 1e3:.2f} ms, ann {o * 1e3:.2f} ms, ratio {b / o:.3f}", flush=True
        )
    ratio = statistics.median(b / o for b, o in zip(bare, ours))
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"bare eval loop: {b * 1e3:.2f} ms per evaluation (validation + test splits)")
    print(f"ann evaluate:   {o * 1e3:.2f} ms per evaluation")
    print(f"ratio ann/bare eval throughput: {ratio:.3f} (median of the rounds' ratios)")
    print(_load())


def main(argv):
    del argv
    import jax

    from ann import experiment as experiment_lib

    logging.set_verbosity(logging.WARNING)
    config = FLAGS.config
    # As both loops run it; a longer warmup ends inside the untimed first half.
    config_lib.shorten(config, 2 * FLAGS.steps)
    experiment_lib.check_config(config, jax.device_count())  # before either loop starts
    if FLAGS.eval:
        main_eval(config)
        return
    print(
        f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; "
        f"model {config.model.name}, batch {config.batch_size}, {FLAGS.steps} steps"
    )
    print(_load(), flush=True)
    bare, ours = [], []
    for r in range(FLAGS.rounds):
        bare.append(bare_seconds_per_step(config, FLAGS.steps))
        ours.append(ann_seconds_per_step(config, FLAGS.steps))
        print(
            f"round {r}: bare {bare[-1] * 1e3:.2f} ms/step, ann {ours[-1] * 1e3:.2f} ms/step, "
            f"ratio {bare[-1] / ours[-1]:.3f}",
            flush=True,
        )
    ratio = statistics.median(b / o for b, o in zip(bare, ours))
    b, o = statistics.median(bare), statistics.median(ours)
    bs = config.batch_size
    print(f"bare jax.jit: {b * 1e3:.2f} ms/step, {bs / b:,.0f} examples/s")
    print(f"ann loop:     {o * 1e3:.2f} ms/step, {bs / o:,.0f} examples/s")
    print(f"ratio ann/bare throughput: {ratio:.3f} (median of the rounds' ratios)")
    print(_load())
    sys.stdout.flush()


if __name__ == "__main__":
    cli.run(main)
