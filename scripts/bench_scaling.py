"""Step time, tokens/s and MFU of the transformer LM per sharding preset, on this machine's devices.

    python scripts/bench_scaling.py [--config=configs/pydoc_lm.py] [--steps=50] \
        [--presets=replicate,fsdp,fsdp+tensor] [--config.model.dim=256 ...]

    # several CPU devices on one host, to see the sharding overheads:
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python scripts/bench_scaling.py

Each preset runs ann's own loop (input pipeline, logging, everything) with the mesh it needs
on all N devices: replicate -> data=N; fsdp -> fsdp=N; fsdp+tensor -> fsdp=N/2, tensor=2.
Timed in steady state, `steps` steps after `steps` of warm-up. The first preset is the baseline
the others are compared with. MFU = the compiled step's FLOPs (XLA's count, all devices) per
second over the devices' peak (ann/metrics/device_peaks.py), printed where the peak is known.
"""

from __future__ import annotations

import json
import os
import tempfile

from absl import flags, logging

from ann import cli
from ann import config as config_lib

# JAX and the code measured are imported where they are used, so --help and a bad flag answer
# before they load (as in every benchmark script).

FLAGS = flags.FLAGS
cli.define_config("Transformer config to run.", "configs/pydoc_lm.py")
PRESETS = ("replicate", "fsdp", "fsdp+tensor")
flags.DEFINE_integer("steps", 50, "Steps warmed up, then steps timed, per preset.", lower_bound=1)
flags.DEFINE_list("presets", list(PRESETS), "Sharding presets to run.")
flags.register_validator(
    "presets",
    lambda v: bool(v) and set(v) <= set(PRESETS),
    f"--presets takes some of {','.join(PRESETS)}",
)


def mesh_for(preset: str, devices: int) -> dict[str, int] | None:
    if preset == "replicate":
        return {"data": devices, "fsdp": 1, "tensor": 1}
    if preset == "fsdp":
        return {"data": 1, "fsdp": devices, "tensor": 1}
    if preset == "fsdp+tensor" and devices % 2 == 0:
        return {"data": 1, "fsdp": devices // 2, "tensor": 2}
    return None


def measure(config, preset: str, mesh: dict[str, int], steps: int) -> dict[str, float]:
    import jax

    from ann.train.hooks import Clock
    from ann.train.loop import train_and_evaluate

    c = config.copy_and_resolve_references()
    c.sharding_rules = preset
    for axis, size in mesh.items():
        c.mesh[axis] = size
    c.total_steps = 2 * steps
    c.log_every_steps = steps
    c.eval_every_steps = c.checkpoint_every_steps = 10 * steps
    clock = Clock(steps)
    with tempfile.TemporaryDirectory() as workdir:
        train_and_evaluate(c, workdir, extra_hooks=[clock])
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
    compiled = next(r for r in records if "compile/train_step_seconds" in r)
    seconds = (clock.times[2 * steps] - clock.times[steps]) / steps
    tokens = next(r["train/tokens_per_sec"] for r in records if "train/tokens_per_sec" in r)
    examples = next(r["train/examples_per_sec"] for r in records if "train/examples_per_sec" in r)
    # Per-device FLOPs as XLA counts the partitioned step, times the devices.
    flops = compiled.get("compile/train_step_flops", 0.0) * jax.device_count()
    return {
        "ms_per_step": seconds * 1e3,
        "tokens_per_sec": c.batch_size / seconds * tokens / examples,
        "memory_mib": compiled.get("compile/train_step_memory_bytes", 0.0) / 2**20,
        "compile_s": compiled["compile/train_step_seconds"],
        "flops": flops,
        "seconds": seconds,
    }


def main(argv):
    del argv
    config = FLAGS.config
    import jax

    from ann import experiment as experiment_lib
    from ann.metrics import device_peaks

    logging.set_verbosity(logging.WARNING)
    n = jax.device_count()
    # As `measure` runs it; a longer warmup ends inside the untimed first half.
    config_lib.shorten(config, 2 * FLAGS.steps)
    experiment_lib.check_config(config, n)  # before any preset; their meshes all fit n devices
    if "dim" not in config.model or "depth" not in config.model:  # was AttributeError: 'dim'
        raise config_lib.ConfigError(
            f"--config: model {config.model.name!r} is not a transformer (no model.dim, "
            "model.depth); this benchmark measures the transformer LM's sharding presets: "
            "--config=configs/pydoc_lm.py"
        )
    kind = jax.devices()[0].device_kind
    peak = device_peaks.peak_flops(kind)
    print(
        f"devices: {n} x {kind}; model {config.model.name} dim {config.model.dim} depth "
        f"{config.model.depth}; batch {config.batch_size}; {FLAGS.steps} steps per preset"
    )
    print("preset       mesh (data,fsdp,tensor)  ms/step  tokens/s  vs first  MiB/device  MFU")
    baseline = None
    for preset in FLAGS.presets:
        mesh = mesh_for(preset, n)
        if mesh is None:
            print(f"{preset:12s} needs an even number of devices; skipped")
            continue
        r = measure(config, preset, mesh, FLAGS.steps)
        baseline = baseline or r["tokens_per_sec"]
        mfu = f"{r['flops'] / r['seconds'] / (peak * n):.3f}" if peak and r["flops"] else "n/a"
        print(
            f"{preset:12s} {str(tuple(mesh.values())):23s} {r['ms_per_step']:8.2f} "
            f"{r['tokens_per_sec']:9,.0f} {r['tokens_per_sec'] / baseline:8.2f} "
            f"{r['memory_mib']:11.1f}  {mfu}",
            flush=True,
        )


if __name__ == "__main__":
    cli.run(main)
