"""ann's train step against its peers: same model, batch, data and optimizer, one command.

    python scripts/bench_peers.py [--config=configs/digits_cnn.py] [--steps=200] [--rounds=5]
        [--torch_python=/work/peers/bin/python] [--threads=2]

Times one train step (forward, backward, AdamW update), not a loop: every contender steps over
the same fixed list of batches already in memory (`--batches` batches of `batch_size` rows
drawn from the config's train split with seed 0, standardized per channel as ann does), and
each time is the median over `--rounds` rounds of `--steps` steps after `--warmup` steps.

- ann: the step ann's loop runs, built as the loop builds it (`ann.train.build.build`,
  `step.make_train_step`, `step.compile_step` with the state donated), batches on the device;
- jax.lax: a hand-written CNN of the same shape (NHWC convs, 2x2 max pool, dense, head) with
  optax AdamW, jitted with donation;
- Flax linen: the same model as `linen` modules (`nn.Conv`, `nn.max_pool`, `nn.Dense`);
- PyTorch eager and `torch.compile` (model, and model + optimizer step), in a subprocess of
  `--torch_python` (a separate venv: PyTorch is never a dependency of ann) with
  `torch.set_num_threads(--threads)`; skipped with the reason printed when it is absent.

The peers use a constant learning rate (the config's peak) and the config's dropout and weight
decay; ann runs its config's schedule (a few scalar ops). Only the digits CNN config shape is
supported by the peers: `model.name=cnn` with two conv features, a dense layer and a head.
Prints a table of ms per step, each against the fastest `torch.compile` row, and `uptime`'s
load average (other jobs on the machine slow everything).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from absl import flags, logging

from ann import cli
from ann import config as config_lib
from ann.config import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import optax

    from ann.train import build as build_lib

# JAX and the code measured are imported where they are used, so --help and a bad flag answer
# before they load (as in every benchmark script).

FLAGS = flags.FLAGS
cli.define_config("Config whose model, batch and optimizer are timed.", "configs/digits_cnn.py")
flags.DEFINE_integer("steps", 200, "Steps timed per round.", lower_bound=1)
flags.DEFINE_integer("rounds", 5, "Rounds; the median round is reported.", lower_bound=1)
flags.DEFINE_integer("warmup", 50, "Untimed steps before the first round.", lower_bound=1)
flags.DEFINE_integer("batches", 16, "Distinct batches the steps cycle over.", lower_bound=1)
flags.DEFINE_integer(
    "threads", 2, "PyTorch's intra-op threads (torch.set_num_threads).", lower_bound=1
)
flags.DEFINE_string(
    "torch_python",
    "/work/peers/bin/python",
    "A Python with PyTorch installed, for the PyTorch rows; empty skips them.",
)
flags.DEFINE_list(
    "only",
    [],
    "Run only these contenders: ann, lax, linen, torch (default: all).",
)

CONTENDERS = ("ann", "lax", "linen", "torch")


def median_ms(step: Callable[[int], object], sync: Callable[[object], None]) -> float:
    """Median over rounds of the ms per step of `step(i)` (i cycles over the batches)."""
    out = None
    for i in range(FLAGS.warmup):
        out = step(i)
    sync(out)
    rounds = []
    for r in range(FLAGS.rounds):
        start = time.perf_counter()
        for i in range(FLAGS.steps):
            out = step(r * FLAGS.steps + i)
        sync(out)
        rounds.append((time.perf_counter() - start) * 1e3 / FLAGS.steps)
    return statistics.median(rounds)


def fixed_batches(setup: build_lib.Setup, batch_size: int, count: int) -> list[dict]:
    """`count` batches of ann's fields (`experiment.fields`) from the train split, seed 0."""
    import numpy as np

    split = setup.train_split
    rng = np.random.default_rng(0)
    return [
        setup.experiment.fields(split.rows(np.sort(rng.choice(len(split), batch_size, False))))
        for _ in range(count)
    ]


def time_ann(config, setup: build_lib.Setup, batches: list[dict]) -> float:
    """ann's compiled train step, as `ann.train.loop` compiles it; batches on the device."""
    import jax

    from ann import parallel
    from ann.train import optimizers
    from ann.train import step as step_lib

    sharding = parallel.batch_sharding(setup.mesh)
    state = setup.state
    hyperparameters = step_lib.place_hyperparameters(
        config.optimizer, setup.total_steps, setup.mesh
    )
    replicated = parallel.replicated(setup.mesh)
    train_fn, _ = step_lib.compile_step(
        step_lib.make_train_step(
            setup.experiment,
            setup.model_def,
            optimizers.for_step(config.optimizer, setup.total_steps),
        ),
        (state, batches[0], hyperparameters),
        in_shardings=(setup.state_shardings, sharding, replicated),
        out_shardings=(setup.state_shardings, replicated),
        donate_argnums=(0,),
    )
    on_device = [jax.device_put(b, sharding) for b in batches]

    def step(i):
        nonlocal state
        state, metrics = train_fn(state, on_device[i % len(on_device)], hyperparameters)
        return metrics

    return median_ms(step, jax.block_until_ready)


def peer_model(config) -> tuple[int, int, int, float]:
    """(conv1, conv2, dense, dropout) of a digits-CNN-shaped config; ConfigError otherwise."""
    m = config.model
    features = tuple(m.get("features", ()))
    if m.name != "cnn" or len(features) != 2:
        raise ConfigError(
            f"model {m.name!r} with features {features}: the peers are written for the cnn "
            "with two conv features only; use --config=configs/digits_cnn.py"
        )
    return features[0], features[1], int(m.get("dense", 128)), float(m.get("dropout", 0.0))


def adamw(config) -> optax.GradientTransformation:
    import optax

    return optax.adamw(config.optimizer.learning_rate, weight_decay=config.optimizer.weight_decay)


def time_jax_peer(config, init, apply, xs, ys) -> float:
    """A jitted, donated step of `apply(params, x, key) -> logits` with optax AdamW."""
    import jax
    import jax.numpy as jnp
    import optax

    tx = adamw(config)
    params = init(jax.random.PRNGKey(0))
    opt_state = tx.init(params)

    def train_step(params, opt_state, x, y, key):
        def loss_fn(p):
            logits = apply(p, x, key)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    train_step = jax.jit(train_step, donate_argnums=(0, 1))
    xs, ys = [jnp.asarray(x) for x in xs], [jnp.asarray(y) for y in ys]
    keys = jax.random.split(jax.random.PRNGKey(1), len(xs))

    def step(i):
        nonlocal params, opt_state
        j = i % len(xs)
        params, opt_state, loss = train_step(params, opt_state, xs[j], ys[j], keys[j])
        return loss

    return median_ms(step, jax.block_until_ready)


def lax_cnn(config, shape, classes):
    """(init, apply) of the CNN in plain jax.lax: SAME 3x3 convs, 2x2 max pool by reshape."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    c1, c2, dense, rate = peer_model(config)
    h, w, c = shape
    sizes = {"w1": (3, 3, c, c1), "w2": (3, 3, c1, c2), "w3": (h // 2 * w // 2 * c2, dense)}
    sizes["w4"] = (dense, classes)

    def init(key):
        keys = jax.random.split(key, 4)
        params = {}
        for k, (name, s) in zip(keys, sizes.items()):
            fan_in = int(np.prod(s[:-1]))
            params[name] = jax.random.normal(k, s) * np.sqrt(1.0 / fan_in)
            params["b" + name[1]] = jnp.zeros(s[-1])
        return params

    def conv(x, w, b):
        y = jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jax.nn.relu(y + b)

    def apply(p, x, key):
        x = conv(conv(x, p["w1"], p["b1"]), p["w2"], p["b2"])
        n, hh, ww, cc = x.shape
        x = x.reshape(n, hh // 2, 2, ww // 2, 2, cc).max(axis=(2, 4)).reshape(n, -1)
        x = jax.nn.relu(x @ p["w3"] + p["b3"])
        keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
        x = jnp.where(keep, x / (1.0 - rate), 0.0)
        return x @ p["w4"] + p["b4"]

    return init, apply


def linen_cnn(config, shape, classes):
    """(init, apply) of the CNN as Flax linen modules (nn.Conv, nn.max_pool, nn.Dense)."""
    import jax.numpy as jnp
    from flax import linen as nn

    c1, c2, dense, rate = peer_model(config)

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = True):
            x = nn.relu(nn.Conv(c1, (3, 3))(x))
            x = nn.relu(nn.Conv(c2, (3, 3))(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2)).reshape(x.shape[0], -1)
            x = nn.Dropout(rate, deterministic=not train)(nn.relu(nn.Dense(dense)(x)))
            return nn.Dense(classes)(x)

    model = CNN()

    def init(key):
        return model.init(key, jnp.zeros((1, *shape)), train=False)

    def apply(p, x, key):
        return model.apply(p, x, rngs={"dropout": key})

    return init, apply


def time_torch(config, x: np.ndarray, y: np.ndarray, classes: int) -> dict | str:
    """PyTorch's rows from `torch_peer.py` under `--torch_python`, or why they are
    missing (a one-line reason)."""
    import numpy as np

    python = FLAGS.torch_python
    if not python:
        return "skipped: --torch_python is empty"
    if not os.path.exists(python):
        return f"skipped: no {python} (a venv with torch; see --torch_python)"
    c1, c2, dense, rate = peer_model(config)
    spec = dict(
        features=[c1, c2], dense=dense, dropout=rate, classes=classes,
        height=x.shape[2], width=x.shape[3], channels=x.shape[4],
        learning_rate=config.optimizer.learning_rate, weight_decay=config.optimizer.weight_decay,
        threads=FLAGS.threads, steps=FLAGS.steps, rounds=FLAGS.rounds, warmup=FLAGS.warmup,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "batches.npz")
        np.savez(path, x=x, y=y)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_peer.py")
        proc = subprocess.run(
            [python, script, f"--data={path}", f"--spec={json.dumps(spec)}"],
            capture_output=True,
            text=True,
        )
    if proc.returncode:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["(no output)"]
        return f"failed: {lines[-1]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: dict[str, float], reference: str | None) -> list[str]:
    """Markdown rows: ms per step and the ratio to `reference` (>1: slower than it)."""
    lines = ["| train step | ms/step | vs torch.compile |", "|---|---|---|"]
    ref = rows.get(reference) if reference else None
    for name, ms in rows.items():
        ratio = f"{ms / ref:.2f}x" if ref else "n/a"
        lines.append(f"| {name} | {ms:.2f} | {ratio} |")
    return lines


def main(argv: list[str]) -> None:
    del argv
    import jax
    import numpy as np

    from ann.train import build as build_lib

    logging.set_verbosity(logging.WARNING)
    config = FLAGS.config
    unknown = set(FLAGS.only) - set(CONTENDERS)
    if unknown:
        raise ConfigError(f"--only: unknown {sorted(unknown)}; choose from {CONTENDERS}")
    run = set(FLAGS.only or CONTENDERS)
    if "torch" in FLAGS.only and not os.path.exists(FLAGS.torch_python or ""):
        # Asked for by name, PyTorch missing is an error, not a skip (it printed an empty
        # table and exited 0).
        raise ConfigError(
            f"--only=torch needs --torch_python to name a Python with torch; no "
            f"{FLAGS.torch_python or '(empty)'}"
        )
    if run - {"ann"}:
        peer_model(config)  # a model the peers cannot mirror: one error line before any work
    config_lib.shorten(config, FLAGS.warmup + FLAGS.rounds * FLAGS.steps)
    experiment = build_lib.make_experiment(config)
    setup = build_lib.build(config, experiment)
    batches = fixed_batches(setup, config.batch_size, FLAGS.batches)
    # The peers get the inputs standardized as ann standardizes them inside its step.
    x = np.stack([np.asarray(experiment.preprocess(b["inputs"])) for b in batches])
    y = np.stack([b["targets"] for b in batches])
    shape, classes = x.shape[2:], experiment.num_classes
    print(
        f"{jax.device_count()} x {jax.devices()[0].device_kind}, jax {jax.__version__}; "
        f"model {config.model.name}, batch {config.batch_size}, {FLAGS.rounds} rounds of "
        f"{FLAGS.steps} steps after {FLAGS.warmup}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}",
        flush=True,
    )
    rows: dict[str, float] = {}
    if "ann" in run:
        rows["ann (ann.train.step, compiled)"] = time_ann(config, setup, batches)
    if "lax" in run:
        rows["jax.lax, hand-written"] = time_jax_peer(
            config, *lax_cnn(config, shape, classes), x, y
        )
    if "linen" in run:
        rows["Flax linen"] = time_jax_peer(config, *linen_cnn(config, shape, classes), x, y)
    reference = None
    if "torch" in run:
        result = time_torch(config, x, y, classes)
        if isinstance(result, str):
            print(f"PyTorch: {result}")
        else:
            names = {"eager": "PyTorch eager", "compile": "torch.compile (model)",
                     "compile_all": "torch.compile (model + optimizer step)"}  # fmt: skip
            print(f"PyTorch {result['version']}, {result['threads']} threads")
            for key, name in names.items():
                if isinstance(result.get(key), str):
                    print(f"{name}: {result[key]}")
                elif key in result:
                    rows[name] = result[key]
            compiled = [n for k, n in names.items() if k != "eager" and n in rows]
            reference = min(compiled, key=rows.get) if compiled else None
    print("\n".join(table(rows, reference)))
    print(f"load average (1, 5, 15 min): {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    cli.run(main)
