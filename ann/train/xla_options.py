"""XLA compiler options ann passes per kind of program, on the CPU backend only.

Other backends get XLA's defaults (None), and a flag that `XLA_FLAGS` sets wins over ann's
setting of it. Measured in docs/benchmarks.md ("Train step vs peers"; "Issue 16, session 12").
"""

from __future__ import annotations

import os

import jax

# The train and eval steps: XLA's default YNNPACK fusions (single dots, reductions) less its
# convolutions, which then run on XLA's own (Eigen) kernels. YNNPACK's convolutions took 9.5 of
# the digits CNN's 14 ms train step on 2 cores (the second conv's weight gradient alone 4.7 ms);
# without them the step takes 7 ms, the ResNet's 29 against 32 ms, and a model without
# convolutions compiles to the same program.
STEP = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
    )
}

# The state's initializer, which runs once: LLVM at optimization level 1 instead of XLA's
# default 3 (DebugOptions.xla_backend_optimization_level). Its random initializers are long
# integer (threefry) programs that LLVM spends seconds optimizing. On 2 cores
# (`python scripts/bench_startup.py --init_compile --config=...`), compile seconds at level 3 ->
# 1: digits CNN 3.15 -> 1.10, MLP 2.11 -> 0.79, ResNet 6.20 -> 2.30, ViT 4.90 -> 2.85, causal
# LM 3.02 -> 2.21; the init ran as fast (3-7 ms) and made every value bit for bit the same.
INIT = {"xla_backend_optimization_level": "1"}


def for_cpu(options: dict[str, str]) -> dict[str, str] | None:
    """`options` (STEP or INIT) to pass to `Lowered.compile(compiler_options=...)`: on the CPU
    backend, less any flag `XLA_FLAGS` sets; None (XLA's defaults) on other backends or when
    nothing is left."""
    if jax.default_backend() != "cpu":
        return None
    env = os.environ.get("XLA_FLAGS", "")
    return {k: v for k, v in options.items() if f"--{k}" not in env} or None
