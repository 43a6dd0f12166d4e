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
train programs, `k` steps and one step, and only those its plan uses. The plan is made call by
call as the run goes (`Plan`), so start-up costs the same for 600 steps as for 10^8.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
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


# A plan looks this many calls ahead before step 0 to learn which train programs (k steps, 1
# step) its run uses; past them, sizes not yet seen are decided in closed form where the hooks
# allow it (`Plan.sizes`), and compiled anyway where they don't.
LOOKAHEAD_CALLS = 4096


def _next_due(hook: _Due, step: int, total: int, end: int) -> int:
    """The first step in (step, end) where `hook` is due, else `end`: by the hook's
    `next_due(step, total)` where it answers one (a step or None), else by asking `due` for each
    step (at most `end - step - 1` of them)."""
    ask = getattr(hook, "next_due", None)
    due_at = ask(step, total) if ask is not None else None
    if due_at is not None:
        return min(max(due_at, step + 1), end)
    return next((s for s in range(step + 1, end) if hook.due(s, total)), end)


class Plan:
    """The calls from step `start` to `total`: sizes, each `k` or 1, summing to `total - start`,
    made as the run goes (iterate it, or `calls(step)` from a step it reaches), not listed
    before step 0, so a run's start-up does not grow with its length. A call of `k` is made only
    where none of the steps it would end before its last is one where a hook is due
    (`hook.due(step, total)`); other steps get a call each. Each call costs at most `k` calls of
    `due` per hook, or one of `next_due` for a hook that has it (hooks.Hook)."""

    def __init__(self, hooks: Sequence[_Due], start: int, total: int, k: int):
        if k < 1:
            raise ValueError(f"steps per call must be >= 1, got {k}")
        self.hooks, self.start, self.total, self.k = tuple(hooks), start, total, k

    def calls(self, step: int) -> Iterator[int]:
        """The sizes of the calls from `step` (the start, or a step a call of this plan ends
        at) to the end: the plan's only state is the step, so a reader that stopped at one
        picks up where it stopped."""
        k, total = self.k, self.total
        while step < total:
            end = min(step + k, total)
            cut = end
            for hook in self.hooks:
                cut = _next_due(hook, step, total, cut)
            if cut - step == k:
                yield k
            else:
                yield from itertools.repeat(1, cut - step)
            step = cut

    def __iter__(self) -> Iterator[int]:
        return self.calls(self.start)

    def sizes(self) -> frozenset[int]:
        """The call sizes the plan uses (the train programs to compile): exact from the first
        LOOKAHEAD_CALLS calls; past them, a size not yet seen counts as used, except 1 where
        every hook gives `next_due`: the plan then makes a call of 1 only if some hook is due at
        a step not congruent to `start` modulo `k` (a gap between due steps that `k` does not
        divide), which each hook's first `k` due steps decide (a periodic hook's residues
        repeat within `k` of them)."""
        seen: set[int] = set()
        for i, n in enumerate(self):
            seen.add(n)
            if len(seen) == 2 or self.k == 1:
                return frozenset(seen)
            if i + 1 == LOOKAHEAD_CALLS:
                break
        else:
            return frozenset(seen)  # the whole plan was seen
        unseen = {1, self.k} - seen
        if 1 in unseen and all(getattr(h, "next_due", None) for h in self.hooks):
            if not self._off_residue():
                unseen.discard(1)
        return frozenset(seen | unseen)

    def _off_residue(self) -> bool:
        """Whether a hook is due at a step after `start` that is not `start` modulo `k`."""
        start, total, k = self.start, self.total, self.k
        if (total - start) % k:
            return True  # the run ends at `total`, due or not
        for hook in self.hooks:
            step = start
            for _ in range(k):
                due_at = hook.next_due(step, total)
                if due_at is None:
                    return True  # it could not say: assume the worst
                if due_at >= total:
                    break
                if (due_at - start) % k:
                    return True
                step = due_at
        return False


def plan(hooks: Sequence[_Due], start: int, total: int, k: int) -> Plan:
    """The plan of calls from step `start` to `total` (`Plan`)."""
    return Plan(hooks, start, total, k)
