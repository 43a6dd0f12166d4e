"""Several train steps in one call (`steps_per_call`, ann/train/chunks.py): the same training,
the same hook steps, exact resume and NaN steps as one step per call."""

import itertools

import jax
import numpy as np
import pytest
from conftest import tiny

from ann.train import chunks, hooks
from ann.train.loop import NonFiniteLossError, train_and_evaluate
from ann.train.writers import read_records

# Hooks every 6 and 12 steps with 4 steps per call: calls of 4 and of 1 (before steps 6, 18).
COMMON = {
    "total_steps": 24,
    "log_every_steps": 6,
    "eval_every_steps": 12,
    "checkpoint_every_steps": 12,
    "model.dropout": 0.2,  # the RNG per step must match too
}


class Seen(hooks.Hook):
    """Records each sync it is due at: (step, number of steps' metrics handed over)."""

    def __init__(self, every: int):
        super().__init__(every)
        self.calls: list[tuple[int, int]] = []
        self.since = 0

    def record(self, info):
        self.since += len(info.metrics)

    def __call__(self, info):
        self.calls.append((info.step, self.since))
        self.since = 0


class StopAt(hooks.Hook):
    def __init__(self, step: int):
        super().__init__(step)

    def __call__(self, info):
        info.request_stop("a hook asked to stop")


def run(workdir, k, extra=(), **overrides):
    config = tiny(**{**COMMON, "steps_per_call": k, **overrides})
    return train_and_evaluate(config, str(workdir), extra_hooks=list(extra))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    return run(workdir, 1), workdir


@pytest.fixture(scope="module")
def chunked(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("chunked")
    seen = Seen(5)
    return run(workdir, 4, [seen]), workdir, seen


def leaves(state):
    return jax.tree.leaves(jax.device_get((state.params, state.opt_state, state.rng)))


def assert_same(a, b):
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)


def test_calls_of_k_steps_train_as_one_step_per_call(straight, chunked):
    (one, one_dir), (four, four_dir, _) = straight, chunked
    assert one.step == four.step == 24
    assert_same(one.state, four.state)
    logs = [
        [
            (r["step"], r["train/loss"])
            for r in read_records(str(d / "metrics.jsonl"))
            if "train/loss" in r
        ]
        for d in (one_dir, four_dir)
    ]
    assert [s for s, _ in logs[1]] == [6, 12, 18, 24]
    np.testing.assert_allclose([v for _, v in logs[1]], [v for _, v in logs[0]], atol=1e-6)
    compiles = [
        r for r in read_records(str(four_dir / "metrics.jsonl")) if "compile/train_programs" in r
    ]
    assert compiles[0]["compile/train_programs"] == 2  # 4 steps, and 1 before hook steps
    assert compiles[0]["compile/steps_per_call"] == 4


def test_hooks_run_at_their_steps_whatever_the_calls(chunked):
    # A hook every 5 steps with 4 steps per call: due at 5, 10, 15, 20 and the last step,
    # each time with the metrics of every step since its previous sync.
    _, _, seen = chunked
    assert [s for s, _ in seen.calls] == [5, 10, 15, 20, 24]
    assert sum(n for _, n in seen.calls) == 24


def test_the_plan_cuts_calls_at_hook_steps():
    assert list(chunks.plan([hooks.Hook(6)], 0, 24, 4)) == [4, 1, 1, 4, 1, 1, 4, 1, 1, 4, 1, 1]
    assert list(chunks.plan([hooks.Hook(8)], 3, 20, 4)) == [4, 1, 4, 4, 4]  # 3-7, 8, 9-12, ...
    assert sum(chunks.plan([hooks.Hook(7), hooks.Hook(5)], 0, 100, 10)) == 100
    # auto: a divisor of the hook periods, at most 10, within the bytes for a call
    assert chunks.steps_per_call(0, (50, 200, 200), 1000) == 10
    assert chunks.steps_per_call(0, (5, 10, 10), 1000) == 5
    assert chunks.steps_per_call(0, (13,), 1000) == 1
    assert chunks.steps_per_call(0, (50,), chunks.AUTO_MAX_BYTES // 3) == 2
    assert chunks.steps_per_call(7, (50,), 1000) == 7
    assert chunks.steps_per_call(0, (50,), 1000, step_flops=2 * chunks.AUTO_MAX_FLOPS) == 1
    # XLA:CPU loops a convolution on a slow path: a step with one is unrolled there
    assert chunks.unroll("cpu", "%0 = stablehlo.convolution(%a, %b)")
    assert not chunks.unroll("gpu", "%0 = stablehlo.convolution(%a, %b)")
    assert not chunks.unroll("cpu", "%0 = stablehlo.dot_general(%a, %b)")


def test_a_run_stopped_inside_the_calls_resumes_exactly(straight, tmp_path):
    # Stopped at step 10, right after a call of 4 (1-4, 5, 6, 7-10): the checkpoint holds the
    # data position after that call's last batch. Resumed with 3 steps per call (11, 12, 13-15,
    # ...), the run ends as the straight one did.
    first = run(tmp_path, 4, [StopAt(10)])
    assert first.interrupted and first.step == 10
    second = run(tmp_path, 3)
    assert second.step == 24
    assert_same(straight[0].state, second.state)


def test_a_nan_is_named_at_its_own_step_inside_a_call(tmp_path):
    bad = {}
    for k in (1, 8):
        with pytest.raises(NonFiniteLossError) as e:
            run(
                tmp_path / str(k),
                k,
                total_steps=16,
                log_every_steps=8,
                eval_every_steps=8,
                checkpoint_every_steps=8,
                **{"optimizer.name": "sgd", "optimizer.learning_rate": 1e30},
            )
        bad[k] = e.value.step
    assert bad[8] == bad[1]
    assert bad[8] % 8 != 0, "the first bad step should be inside a call of 8"


def test_steps_per_call_that_never_fits_runs_single_steps_and_says_so(tmp_path, caplog):
    # 7 steps never fit between hook steps 6 apart: the run reports the one step per call it
    # uses (not the 7 asked for) and warns with the fix.
    with caplog.at_level("WARNING"):
        run(tmp_path, 7, total_steps=12)
    (record,) = [
        r for r in read_records(str(tmp_path / "metrics.jsonl")) if "compile/steps_per_call" in r
    ]
    assert record["compile/steps_per_call"] == 1 and record["compile/train_programs"] == 1
    assert "steps_per_call=7: no call of 7 steps fits" in caplog.text
    assert "--config.steps_per_call=0 (auto)" in caplog.text


def _listed(hook_list, start, total, k):
    """The plan as it was made before step 0 (one `due` per step and hook): the reference."""
    sizes, step = [], start
    while step < total:
        end = min(step + k, total)
        cut = next(
            (s for s in range(step + 1, end) if any(h.due(s, total) for h in hook_list)), end
        )
        sizes.extend([k] if cut - step == k else [1] * (cut - step))
        step = cut
    return sizes


class Only(hooks.Hook):
    """A hook with its own `due` (no `next_due`): the plan asks it step by step."""

    def __init__(self, steps):
        super().__init__(1)
        self.steps = set(steps)

    def due(self, step, total_steps):
        return step in self.steps


@pytest.mark.parametrize(
    "make, start, total, k",
    [
        (lambda: [hooks.Hook(6)], 0, 24, 4),
        (lambda: [hooks.Hook(8)], 3, 20, 4),
        (lambda: [hooks.Hook(7), hooks.Hook(5)], 0, 100, 10),
        (lambda: [hooks.Hook(10), hooks.Hook(50)], 0, 600, 10),
        (lambda: [hooks.Hook(10), hooks.Hook(50)], 13, 600, 10),
        (lambda: [hooks.Hook(10), hooks.Hook(30)], 0, 605, 5),
        (lambda: [hooks.Hook(100), hooks.Profile(7, 3, "unused")], 0, 400, 10),
        (lambda: [hooks.Hook(20), Only({33, 34, 90})], 0, 200, 4),
        (lambda: [hooks.Hook(3)], 0, 50, 4),
        (lambda: [hooks.Hook(4)], 2, 2, 4),
    ],
)
def test_the_plan_made_as_the_run_goes_is_the_listed_one(make, start, total, k):
    want = _listed(make(), start, total, k)
    plan = chunks.plan(make(), start, total, k)
    assert list(plan) == want
    assert plan.sizes() == set(want)
    # resumed by a reader from any step a call ends at, the rest is the same
    ends = itertools.accumulate(want, initial=start)
    for i, step in enumerate(ends):
        assert list(plan.calls(step)) == want[i:]


def test_the_sizes_of_a_long_plans_calls_are_known_without_walking_it():
    # 10^12 steps: listing the calls before step 0 hung the start (59 s for 10^8 steps); the
    # programs to compile are known from a bounded look ahead and each hook's first due steps.
    class Counted(hooks.Hook):
        asked = 0

        def next_due(self, step, total_steps):
            Counted.asked += 1
            return super().next_due(step, total_steps)

    assert chunks.plan([Counted(10), Counted(50)], 0, 10**12, 10).sizes() == {10}
    assert chunks.plan([Counted(10), Counted(55)], 0, 10**12, 10).sizes() == {1, 10}
    assert chunks.plan([Counted(10)], 3, 10**12, 10).sizes() == {1, 10}
    assert Counted.asked < 3 * (chunks.LOOKAHEAD_CALLS + 100)
    first = list(itertools.islice(chunks.plan([Counted(10)], 0, 10**12, 10), 5))
    assert first == [10] * 5
