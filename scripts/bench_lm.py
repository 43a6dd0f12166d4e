"""Tokens/s and MFU of ann's causal LM train step at a size that fills one accelerator.

    python scripts/bench_lm.py                      # --size=1b: about 0.87B parameters
    python scripts/bench_lm.py --size=350m --batch=32
    python scripts/bench_lm.py --size=tiny          # CPU smoke run (tests run this)

ann's own pieces, as `ann train` uses them: the `causal_lm` model built from a config
(`models.from_config`), the `language_modelling` experiment's loss, `optimizers.make` (AdamW),
the sharded state initializer and `step.make_train_step`, compiled ahead of time with the state
donated, data-parallel over every device. Only the data is synthetic: uniform random token ids
(no padding) generated on the device, so the number measures the step, not an input pipeline.

Compute is bfloat16 with float32 parameters and optimizer state (`config.dtype=bfloat16`);
attention is `jax.nn.dot_product_attention` (cudnn flash attention on a GPU, xla elsewhere).
`--remat=auto` first compiles without rematerialization and recompiles with it (each block
recomputed in the backward pass) only if XLA's memory estimate exceeds 90% of the device's
memory (jax's share of it: 75% of a GPU unless $XLA_PYTHON_CLIENT_MEM_FRACTION says more;
scripts/gpu_check.sh gives 0.95). Then `--warmup` steps, then `--steps` timed steps (one host
sync at the end). The state's initializer is timed apart, its compile included.

MFU follows the PaLM paper (Chowdhery et al. 2022, appendix B): model FLOPs per token
6N + 12 L H Q T (N parameters, the tied embedding counted once as the output layer; L layers,
H heads, Q head dim, T sequence length; the attention term counts the full T x T, not the causal
half), times tokens/s, over the devices' peak dense bf16 FLOP/s (ann/metrics/device_peaks.py).
Rematerialized work is not model FLOPs: XLA's own count of the compiled step is printed beside
it as "hardware FLOPs". On a CPU, or a device with no known peak, MFU is n/a.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from typing import TYPE_CHECKING

import ml_collections
from absl import flags, logging

from ann import cli
from ann import config as config_lib

if TYPE_CHECKING:
    from experiments.language_modelling import LanguageModelling

# JAX and the code measured are imported where they are used, so --help and a bad flag answer
# before they load (as in every benchmark script).

# name -> (dim, depth, heads, mlp_dim, vocab, seq, batch)
SIZES = {
    "tiny": (64, 2, 4, 256, 256, 64, 4),
    "350m": (1024, 24, 16, 4096, 32768, 2048, 32),
    "1b": (2048, 16, 16, 8192, 32768, 2048, 16),
}
MEMORY_SHARE = 0.9  # remat=auto recompiles with remat above this share of device memory

FLAGS = flags.FLAGS
flags.DEFINE_enum("size", "1b", list(SIZES), "Model size (dims in SIZES).")
flags.DEFINE_integer("seq", 0, "Sequence length (0: the size's).", lower_bound=0)
flags.DEFINE_integer("batch", 0, "Global batch in sequences (0: the size's).", lower_bound=0)
flags.DEFINE_enum("remat", "auto", ["auto", "on", "off"], "Recompute blocks in the backward pass.")
flags.DEFINE_enum(
    "attention", "auto", ["auto", "cudnn", "xla", "einsum"], "auto: cudnn on GPU, else xla."
)
flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "Compute dtype.")
flags.DEFINE_integer("warmup", 3, "Untimed steps after compiling.", lower_bound=1)
flags.DEFINE_integer("steps", 10, "Timed steps.", lower_bound=1)
flags.DEFINE_string("out", "", "Also write the results as JSON to this file.")
flags.DEFINE_string("profile", "", "Write a jax.profiler trace of the timed steps to this folder.")


def make_config(size: str, remat: bool, attention: str) -> ml_collections.ConfigDict:
    """The `causal_lm` config of a size, as a config file would set it."""
    dim, depth, heads, mlp_dim, _, _, _ = SIZES[size]
    c = config_lib.base()
    c.experiment = "language_modelling"
    c.model.name = "causal_lm"
    c.model.dim, c.model.depth, c.model.num_heads, c.model.mlp_dim = dim, depth, heads, mlp_dim
    c.model.dropout = 0.0
    c.model.attention = attention
    c.model.remat = remat
    c.dtype = FLAGS.dtype
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 3e-4
    c.optimizer.weight_decay = 0.1
    c.optimizer.grad_clip_norm = 1.0
    c.optimizer.warmup_steps = 0
    return c


def experiment_for(config, vocab: int, seq: int) -> LanguageModelling:
    """The language_modelling experiment over a synthetic vocabulary (id 0 is padding, never
    drawn) and windows of `seq + 1` tokens (`seq` predicted positions)."""
    from experiments.common import Vocabulary
    from experiments.language_modelling import LanguageModelling

    experiment = LanguageModelling(config)
    experiment.vocab = Vocabulary([f"t{i}" for i in range(vocab)], pad_id=0)
    experiment.window, experiment.tokens_per_example = seq + 1, seq
    return experiment


def compile_train_step(config, experiment, batch: int, seq: int, mesh, total_steps: int):
    """(compiled step, compile seconds, the state's initializer, number of parameters, the
    step's hyperparameters argument), AOT for `batch` x `seq + 1`."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ann import parallel
    from ann.train import optimizers, step
    from ann.train import state as state_lib

    tx = optimizers.make(config.optimizer, total_steps)
    model_def, init, abstract_state = state_lib.sharded_initializer(
        lambda: experiment.build_model(nnx.Rngs(params=0)),
        tx,
        1,
        "replicate",
        mesh,
    )
    batch_sharding, replicated = parallel.batch_sharding(mesh), parallel.replicated(mesh)
    fn = step.make_train_step(
        experiment, model_def, optimizers.for_step(config.optimizer, total_steps)
    )
    tokens = jax.ShapeDtypeStruct((batch, seq + 1), jnp.int32, sharding=batch_sharding)
    shardings = state_lib.shardings_of(abstract_state)
    hyperparameters = step.place_hyperparameters(config.optimizer, total_steps, mesh)
    compiled, seconds = step.compile_step(
        fn,
        (abstract_state, {"tokens": tokens}, hyperparameters),
        in_shardings=(shardings, batch_sharding, replicated),
        out_shardings=(shardings, replicated),
        donate_argnums=(0,),
    )
    num_params = sum(x.size for x in jax.tree.leaves(abstract_state.params))
    return compiled, seconds, init, num_params, hyperparameters


def device_memory() -> int | None:
    """Bytes one device may allocate (None where jax does not say, e.g. CPU)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("bytes_limit")


def model_flops_per_token(num_params: int, depth: int, heads: int, head_dim: int, seq: int) -> int:
    """PaLM appendix B: 6N + 12 L H Q T."""
    return 6 * num_params + 12 * depth * heads * head_dim * seq


def measure(
    compiled, init, hyperparameters, batch: int, seq: int, vocab: int, mesh
) -> dict[str, float]:
    """Warm-up, then `--steps` timed steps on two synthetic batches used in turn."""
    import jax
    import jax.numpy as jnp

    from ann import parallel

    sharding = parallel.batch_sharding(mesh)
    make = jax.jit(
        lambda key: jax.random.randint(key, (batch, seq + 1), 1, vocab, jnp.int32),
        out_shardings=sharding,
    )
    batches = [{"tokens": make(jax.random.PRNGKey(i))} for i in range(2)]
    start = time.perf_counter()
    state = jax.block_until_ready(init())
    init_seconds = time.perf_counter() - start
    print(f"state initialized in {init_seconds:.1f} s (its compile included)", flush=True)
    sync = jax.default_backend() == "cpu" and mesh.size > 1
    losses = []
    for i in range(FLAGS.warmup):
        state, metrics = compiled(state, batches[i % 2], hyperparameters)
        losses.append(float(metrics["loss"]))  # syncs: warm-up is untimed
    profile = jax.profiler.trace(FLAGS.profile) if FLAGS.profile else contextlib.nullcontext()
    with profile:
        start = time.perf_counter()
        for i in range(FLAGS.steps):
            state, metrics = compiled(state, batches[i % 2], hyperparameters)
            if sync:  # as the loop does: several CPU devices can deadlock back to back
                jax.block_until_ready(metrics)
        jax.block_until_ready(metrics)
        seconds = (time.perf_counter() - start) / FLAGS.steps
    losses.append(float(metrics["loss"]))
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "seconds_per_step": seconds,
        "init_seconds": init_seconds,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "peak_bytes_in_use": float(stats.get("peak_bytes_in_use", 0)),
    }


def report(r: dict) -> None:
    """Prints the run's results, one figure a line, then the whole as one JSON line."""
    mfu = f"{r['mfu']:.3f}" if r["mfu"] is not None else "n/a (no known peak for this device)"
    peak = f"peak {r['peak_flops'] / 1e12:.0f} TFLOP/s each" if r["peak_flops"] else "peak unknown"
    print(
        f"model: {r['num_params'] / 1e6:,.1f}M parameters (dim {r['dim']}, depth {r['depth']}, "
        f"{r['heads']} heads, mlp {r['mlp_dim']}, vocab {r['vocab']}); attention "
        f"{r['attention']}, remat {r['remat']}, compute {r['dtype']}\n"
        f"batch: {r['batch']} x {r['seq']} tokens = {r['tokens_per_step']:,} tokens per step\n"
        f"compile: {r['compile_seconds']:.1f} s; XLA memory estimate "
        f"{r['memory_bytes'] / 2**30:.2f} GiB per device (device limit "
        f"{(r['device_bytes'] or 0) / 2**30:.1f} GiB, 0: not known; peak in use "
        f"{r['peak_bytes_in_use'] / 2**30:.2f} GiB)\n"
        f"step: {r['seconds_per_step'] * 1e3:.1f} ms; {r['tokens_per_sec']:,.0f} tokens/s; "
        f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f} (ln vocab "
        f"{math.log(r['vocab']):.3f})\n"
        f"model FLOPs per token (6N + 12LHQT): {r['flops_per_token'] / 1e9:.4g} GFLOP; "
        f"{r['model_tflops_per_sec']:.4g} TFLOP/s model, {r['hardware_tflops_per_sec']:.4g} "
        f"TFLOP/s hardware (XLA's count) on {r['devices']} x {r['device_kind']} "
        f"({peak})\n"
        f"MFU: {mfu} (goal >= 0.40)"
    )
    print("json: " + json.dumps(r))


def _check_out(path: str) -> None:
    """A ConfigError unless `path` names a file in an existing folder."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise config_lib.ConfigError(f"--out={path} is a folder; give a file path")
    if not os.path.isdir(folder):
        raise config_lib.ConfigError(f"--out={path} cannot be written: there is no {folder}")


def main(argv: list[str]) -> None:
    del argv
    import jax

    from ann import parallel
    from ann.metrics import device_peaks
    from ann.train import step

    logging.set_verbosity(logging.WARNING)
    if FLAGS.out:  # before the benchmark: a bad path lost its results after the run
        _check_out(FLAGS.out)
    dim, depth, heads, mlp_dim, vocab, seq, batch = SIZES[FLAGS.size]
    seq, batch = FLAGS.seq or seq, FLAGS.batch or batch
    mesh = parallel.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    if batch % mesh.size:
        cli.fail(f"--batch={batch} must be a multiple of the {mesh.size} devices")
    kind, n = jax.devices()[0].device_kind, jax.device_count()
    attention = FLAGS.attention
    if attention == "auto":
        attention = "cudnn" if jax.default_backend() == "gpu" else "xla"
    print(f"jax {jax.__version__}; {n} x {kind} ({jax.default_backend()})", flush=True)
    limit = device_memory()
    remat = FLAGS.remat == "on"
    while True:
        config = make_config(FLAGS.size, remat, attention)
        experiment = experiment_for(config, vocab, seq)
        total = FLAGS.warmup + FLAGS.steps
        try:
            compiled, compile_seconds, init, num_params, hyperparameters = compile_train_step(
                config, experiment, batch, seq, mesh, total
            )
        except Exception as e:  # e.g. a cuDNN without this shape: still measure, say so
            if attention != "cudnn":
                raise
            print(f"attention cudnn failed ({cli.one_line(e)}); falling back to xla", flush=True)
            attention = "xla"
            continue
        analysis = step.analyze(compiled)
        memory = analysis.get("memory_bytes", 0.0)
        print(
            f"compiled remat={remat} in {compile_seconds:.1f} s: {memory / 2**30:.2f} GiB per "
            f"device (limit {f'{limit / 2**30:.1f} GiB' if limit else 'not known'})",
            flush=True,
        )
        if FLAGS.remat != "auto" or remat or limit is None or memory <= MEMORY_SHARE * limit:
            break
        remat = True
    r = measure(compiled, init, hyperparameters, batch, seq, vocab, mesh)
    tokens = batch * seq
    per_token = model_flops_per_token(num_params, depth, heads, dim // heads, seq)
    peak = device_peaks.peak_flops(kind)
    model_rate = per_token * tokens / r["seconds_per_step"]
    r.update(
        size=FLAGS.size, dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim, vocab=vocab,
        seq=seq, batch=batch, attention=attention, remat=remat, dtype=FLAGS.dtype,
        num_params=num_params, tokens_per_step=tokens, compile_seconds=compile_seconds,
        memory_bytes=memory, device_bytes=limit, devices=n, device_kind=kind,
        peak_flops=peak, flops_per_token=per_token,
        tokens_per_sec=tokens / r["seconds_per_step"],
        model_tflops_per_sec=model_rate / 1e12,
        # XLA counts the partitioned program of one device
        hardware_tflops_per_sec=analysis.get("flops", 0.0) * n / r["seconds_per_step"] / 1e12,
        mfu=model_rate / (peak * n) if peak else None,
    )  # fmt: skip
    report(r)
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            json.dump(r, f, indent=1)


if __name__ == "__main__":
    cli.run(main)
