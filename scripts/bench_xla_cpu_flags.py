"""Does an XLA:CPU flag change what batching buys? Per-row cost of an exported model at batch 1
and at a large batch, under several XLA_FLAGS, each in a fresh process pinned to core 0.

    python scripts/bench_xla_cpu_flags.py --export=runs/bench_serve/resnet_export [--batch=64]

(`scripts/bench_serve.py` creates that export; a registry URI such as `models:/digits@champion`,
in $ANN_REGISTRY, works too.) Prints median ms per row at batch 1 and at
`--batch`, their ratio (the most dynamic batching can gain on compute alone), and the first
row's prediction, which must not change with the flag.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import flags

from ann import cli

flags.DEFINE_string(
    "export", None, "The export directory or registry URI to time (ann.registry.resolve)."
)
flags.DEFINE_integer("batch", 64, "The large batch, against batch 1.", lower_bound=1)
flags.DEFINE_boolean("measure", False, "Internal: time one XLA_FLAGS setting in this process.")
flags.mark_flag_as_required("export")


@flags.validator("export")
def _resolvable(spec: str | None) -> bool:
    """An export directory or a registry URI; else absl's one-line flag error, naming it."""
    from ann import registry

    if spec is not None:
        try:
            registry.resolve(spec)
        except registry.RegistryError as e:
            raise flags.ValidationError(str(e)) from e
    return True


XLA_FLAGS = [
    "",
    "--xla_cpu_use_xnnpack=true",
    "--xla_cpu_use_onednn=true",
    "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "--xla_cpu_enable_fast_math=true",
]


def measure(export: str, batch: int) -> dict:
    """In this process: median ms per row at batch 1 and `batch`, and the first prediction."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    import numpy as np

    from ann import registry

    model = registry.resolve(export).load()
    rng = np.random.default_rng(0)
    x = {
        name: rng.uniform(0, 16, (batch, *spec["shape"][1:])).astype(spec["dtype"])
        for name, spec in model.inputs.items()
    }
    out = {}
    for b, calls in ((1, 200), (batch, 40)):
        fn = model.compile(b)
        rows = {k: v[:b] for k, v in x.items()}
        for _ in range(20):
            y = fn(rows)
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            y = fn(rows)  # returns NumPy arrays: the call has finished
            times.append(time.perf_counter() - start)
        out[str(b)] = statistics.median(times) * 1e3 / b
        out[f"first_{b}"] = np.asarray(next(iter(y.values())))[0].tolist()
    return out


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS
    if args.measure:
        print(json.dumps(measure(args.export, args.batch)))
        return
    print(f"| XLA_FLAGS | batch 1 ms | batch {args.batch} ms/row | ratio | first prediction |")
    print("|---|---|---|---|---|")
    for xla_flags in XLA_FLAGS:
        env = {**os.environ, "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu"}
        cmd = [sys.executable, __file__, f"--export={args.export}", f"--batch={args.batch}",
               "--measure"]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            print(f"| `{xla_flags}` | failed: {proc.stderr.strip().splitlines()[-1]} |")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        one, many = r["1"], r[str(args.batch)]
        print(f"| `{xla_flags or '(default)'}` | {one:.3f} | {many:.3f} | {one / many:.2f} | "
              f"{r['first_1']} / {r[f'first_{args.batch}']} |")  # fmt: skip


if __name__ == "__main__":
    cli.run(main)  # a bad flag: one line, exit 1
