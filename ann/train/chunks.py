"""Multi-step dispatch: which train steps run together in one compiled call.

For a small model, the host work around each call (Python dispatch, flattening the train state,
the transfer of one batch, the hook checks) costs about as much as the step itself. Running `k`
steps in one call (`jax.lax.scan` over a `[k, batch, ...]` stack of batches, metrics stacked on
the device) pays it once per `k` steps: TF/Keras's `steps_per_execution`, the "steps per loop"
of TPU training loops.

A call never crosses a step where a hook is due (log, eval, checkpoint, profile, a caller's
hook), so hooks see exactly the steps they would with one step per call, and a checkpoint's
step and the data position always agree. Steps that do not fill a call of `k` (before a hook
step that `k` does not divide, or at the end) run one per call: a run compiles at most two
train programs, `k` steps and one step, and only those its plan uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

# "auto" (`steps_per_call=0`): at most this many steps per call. Measured on 2 cores with the
# digits MLP (1 ms steps): 10 steps per call recover the host work; more gained nothing
# measurable (docs/benchmarks.md, "Training loop").
AUTO_MAX_STEPS = 10
# ... and at most this many bytes of stacked batches per call (each call's batches sit on the
# device at once; `data.prefetch_batches` more calls are read ahead).
AUTO_MAX_BYTES = 64 * 2**20
# ... and only for a step of at most this many FLOPs (XLA's count of the lowered step): a larger
# one spends little of its time in host work. The digits MLP's step (0.07 GFLOP, 1 ms here) gains
# from 10 steps per call; the digits CNN's (0.89 GFLOP, 8-20 ms) measured no gain, and on XLA:CPU
# a convolution inside a loop runs on a slow path (see `unroll`).
AUTO_MAX_FLOPS = 2e8


class _Due(Protocol):
    def due(self, step: int, total_steps: int) -> bool: ...


def steps_per_call(
    setting: int, periods: Sequence[int], batch_bytes: int, step_flops: float = 0.0
) -> int:
    """The steps per call a run uses: `setting` when > 0; 0 (auto) gives 1 for a step of more
    than AUTO_MAX_FLOPS (`step_flops`), else the largest divisor of the hook periods' gcd
    (`log_every_steps`, `eval_every_steps`, `checkpoint_every_steps`) that is at most
    AUTO_MAX_STEPS and keeps `k * batch_bytes` (one global batch's bytes) within
    AUTO_MAX_BYTES, so that every call is full. At least 1."""
    if setting > 0:
        return setting
    if step_flops > AUTO_MAX_FLOPS:
        return 1
    limit = max(1, min(AUTO_MAX_STEPS, AUTO_MAX_BYTES // max(batch_bytes, 1)))
    g = math.gcd(*periods) if periods else 1
    return max(d for d in range(1, limit + 1) if g % d == 0)


def unroll(backend: str, step_hlo: str) -> bool:
    """Whether a call of k steps unrolls them instead of looping: on the CPU backend, for a step
    with a convolution. XLA:CPU ran the digits CNN's step inside a loop (`jax.lax.scan`) about
    50x slower than alone (234 against 11,900 examples/s; with or without YNNPACK), and about
    10% faster unrolled, at 5x the compile time; dense steps loop as fast as unrolled."""
    return backend == "cpu" and "convolution" in step_hlo


def plan(hooks: Sequence[_Due], start: int, total: int, k: int) -> list[int]:
    """The calls from step `start` to `total`: a list of sizes, each `k` or 1, summing to
    `total - start`. A call of `k` is made only where none of the steps it would end before its
    last is one where a hook is due (`hook.due(step, total)`); other steps get a call each.
    Costs `(total - start) * len(hooks)` calls of `due`."""
    if k < 1:
        raise ValueError(f"steps per call must be >= 1, got {k}")
    sizes: list[int] = []
    step = start
    while step < total:
        end = min(step + k, total)
        cut = next((s for s in range(step + 1, end) if any(h.due(s, total) for h in hooks)), end)
        if cut - step == k:
            sizes.append(k)
        else:
            sizes.extend([1] * (cut - step))
        step = cut
    return sizes
