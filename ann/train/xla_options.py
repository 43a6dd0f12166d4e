"""XLA compiler options ann passes per kind of program, on the CPU backend only, and the
state initializer's random-number lowering on GPU.

Other backends get XLA's defaults (None), and a flag that `XLA_FLAGS` sets wins over ann's
setting of it. Measured in docs/benchmarks.md ("Train step vs peers"; "Issue 16, session 12";
"Issue 16, session 28" for the GPU initializer).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

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


# The state's initializer on GPU draws its random bits with JAX's threefry kernel
# (`jax_threefry_gpu_kernel_lowering`: one custom call per initializer) instead of XLA's inlined
# 20-round hash inside every initializer's fusion. On an H200 (jax 0.11.2) the inlined init of
# the 0.87B causal LM had not finished compiling after 500 s, the GPU idle, against 31 s for its
# whole train step. The kernel computes the same hash, so the same values; JAX's help for the
# flag: "makes compile times faster at a potential runtime memory cost" (the bits are
# materialized), paid once at the start. A JAX_THREEFRY_GPU_KERNEL_LOWERING the user sets wins.
_KERNEL_FLAG = "jax_threefry_gpu_kernel_lowering"
_GPU_PLATFORMS = frozenset({"gpu", "cuda", "rocm"})


@contextlib.contextmanager
def init_lowering(platforms: tuple[str, ...]) -> Iterator[None]:
    """Context for tracing and lowering the state's initializer for `platforms` (jax platform
    names, e.g. `("cuda",)`, or `jax.default_backend()`'s): on a GPU platform, with JAX's
    threefry kernel, then the flag as it was; elsewhere, or where the user's environment sets
    the flag, nothing changes."""
    wanted = not _GPU_PLATFORMS.isdisjoint(platforms)
    before = getattr(jax.config, _KERNEL_FLAG, None)  # None: a JAX without the flag
    if not wanted or before is None or _KERNEL_FLAG.upper() in os.environ:
        yield
        return
    jax.config.update(_KERNEL_FLAG, True)
    try:
        yield
    finally:
        jax.config.update(_KERNEL_FLAG, before)
