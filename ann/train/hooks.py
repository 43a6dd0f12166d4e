"""Hooks: small objects that run every N steps (and at the last step) after the train step.

Logging, evaluation and checkpointing are hooks, so new behaviour is a new hook rather than a
new branch in the loop (levanter's callbacks are the model). A hook gets what it works with when
it is made (the metric writer, the checkpoints) and, at each of its steps, a read-only
`StepInfo`; the one thing it may ask of the loop is to stop (`StepInfo.request_stop`).

Evaluation results go to the eval hook's listeners (`EvalListener`): keeping the best
checkpoint, early stopping, a sweep's pruning. They run in the order the eval hook was given
them, right after each eval, so no behaviour depends on where a hook sits in the loop's list.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import jax
import numpy as np
from absl import logging

from ann.config import (
    NOT_A_METRIC_OF_THIS_RUN,
    SELECTION_PREFIX,
    ConfigError,
    check_selection_metric,
    meant_metric,
)
from ann.train.checkpoint import Checkpoints
from ann.train.writers import MetricWriter, read_records


@dataclasses.dataclass(frozen=True)
class Stop:
    """A request to end the run after this step's hooks, with a checkpoint saved.

    `finish` empty: interrupted, the same command resumes. `finish` a reason ("early_stopped",
    "pruned"): finished before total_steps, recorded in run_status.json; a rerun trains no
    further."""

    message: str
    finish: str = ""


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """What the loop tells its hooks at a host sync (a step where some hook is due)."""

    step: int  # optimizer steps done
    total_steps: int
    state: Any  # the train state after `step`; hooks read it, never replace it
    # Host train metrics of each step since the previous sync, oldest first (all finite).
    metrics: tuple[dict[str, float], ...] = ()
    data_seconds: float = 0.0  # waiting for batches since the previous sync
    hook_seconds: float = 0.0  # in hooks at the previous sync (eval, checkpoints): not training
    _stops: list[Stop] = dataclasses.field(default_factory=list, repr=False, compare=False)

    def request_stop(self, message: str, finish: str = "") -> None:
        """Asks the loop to save a checkpoint and end the run once this step's hooks are done
        (see `Stop`). A finishing request wins over an interrupting one; among the same kind,
        the first."""
        self._stops.append(Stop(message, finish))

    def stop(self) -> Stop | None:
        """The request the loop acts on, or None (what `request_stop` says)."""
        finishing = [s for s in self._stops if s.finish]
        return (finishing or self._stops or [None])[0]


class Hook:
    """Runs at every `every`-th step and at the last one (`due`); `record` sees every sync.

    `due(step, total_steps)` must depend on nothing else: the loop plans its calls of several
    steps (`steps_per_call`, ann/train/chunks.py) from it, so that no call crosses a step where
    a hook is due. `next_due` says the same in one answer; a subclass with its own `due` gets
    None from it (the plan then asks `due` step by step) unless it gives its own."""

    def __init__(self, every: int):
        self.every = every

    def due(self, step: int, total_steps: int) -> bool:
        return step % self.every == 0 or step == total_steps

    def next_due(self, step: int, total_steps: int) -> int | None:
        """The first step after `step` where `due` holds (at most `total_steps`), or None
        where this class's `due` is not Hook's. A subclass that gives its own must be due at
        steps whose residues modulo any k repeat within k of them (a period, as here) or at no
        more than k steps (Profile): the plan learns from a hook's first k due steps whether a
        run needs its one-step program (chunks.Plan.sizes)."""
        if type(self).due is not Hook.due:
            return None
        return min((step // self.every + 1) * self.every, total_steps)

    def record(self, info: StepInfo) -> None:
        """Called at every host sync, due or not, before the due hooks run."""

    def __call__(self, info: StepInfo) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Called once when the run ends, however it ends."""


def eta(seconds: float) -> str:
    """`0:13:05`, `2 days, 3:04:05`: the time left as the progress lines of `ann train` and
    `ann generate` show it."""
    return str(datetime.timedelta(seconds=round(seconds)))


class LogTrain(Hook):
    """Means of the train metrics since the last log, throughput, ETA; console and writer.

    Throughput counts training time only: time spent in hooks (eval, checkpoints) is taken
    out. `tokens_per_example` > 0 adds tokens/s; `flops_per_step` with `peak_flops` (per
    device, None where unknown) adds MFU."""

    def __init__(
        self,
        every: int,
        writer: MetricWriter,
        batch_size: int,
        flops_per_step: float = 0.0,
        peak_flops: float | None = None,
        tokens_per_example: int = 0,
    ):
        super().__init__(every)
        self.writer, self.batch_size = writer, batch_size
        self.flops_per_step, self.peak_flops = flops_per_step, peak_flops
        self.tokens_per_example = tokens_per_example
        self._open_window()

    def start(self) -> None:
        """Opens the first window again, once the loop's train programs are compiled: the hook
        is made before that, and the first window's rate and ETA had counted the compile as
        training (1,653 ex/s and ETA 0:00:43 for the digits CNN, which then ran its 600 steps in
        16 s)."""
        self._open_window()

    def _open_window(self) -> None:
        """The metrics and training time until the next log start from now."""
        self.window: list[dict[str, float]] = []
        self.window_start = time.perf_counter()
        self.excluded_seconds = self.data_seconds = 0.0

    def record(self, info: StepInfo) -> None:
        self.window.extend(info.metrics)
        self.data_seconds += info.data_seconds
        self.excluded_seconds += info.hook_seconds

    def _metrics(self, steps: int) -> dict[str, float]:
        w = self.window
        metrics = {f"train/{k}": float(np.mean([m[k] for m in w])) for k in w[0]}
        seconds = max(time.perf_counter() - self.window_start - self.excluded_seconds, 1e-9)
        metrics["train/steps_per_sec"] = steps / seconds
        metrics["train/examples_per_sec"] = steps * self.batch_size / seconds
        metrics["train/data_wait_fraction"] = min(self.data_seconds / seconds, 1.0)
        if self.tokens_per_example:
            metrics["train/tokens_per_sec"] = (
                metrics["train/examples_per_sec"] * self.tokens_per_example
            )
        if self.flops_per_step and self.peak_flops:
            metrics["train/mfu"] = (
                self.flops_per_step * metrics["train/steps_per_sec"] / self.peak_flops
            )
        return metrics

    def __call__(self, info: StepInfo) -> None:
        if not self.window:
            return
        metrics = self._metrics(len(self.window))
        self.writer.write(info.step, metrics)
        shown = " | ".join(
            f"{k.split('/', 1)[1]} {v:.4f}"
            for k, v in metrics.items()
            if k in ("train/loss", "train/accuracy")
        )
        logging.info(
            "step %d/%d (%.0f%%) | %s | %s ex/s | ETA %s",
            info.step,
            info.total_steps,
            100 * info.step / info.total_steps,
            shown,
            f"{metrics['train/examples_per_sec']:,.0f}",
            eta((info.total_steps - info.step) / metrics["train/steps_per_sec"]),
        )
        self._open_window()


class EvalListener(Protocol):
    """Told each eval's metrics (`val/...`, `eval/...`, `eval/seconds`) right after it.

    A listener that reads one metric may name it in a `reads` attribute, `(what, metric)`
    (`what`: the config key or flag that chose it): the loop checks that the run has it before
    the first step (`check_reads`), so a misspelt name is one line at the start, not at the first
    eval."""

    def on_eval(self, info: StepInfo, metrics: dict[str, float]) -> None: ...


class Evaluate(Hook):
    """Runs `evaluate(state) -> {name: value}`, writes and logs it, then tells `listeners`.

    `evaluate` scores the validation split (`val/...`, what chooses: `best_metric` is one of
    them, config validation sees to that) and the reported splits (`eval/...`, the test split,
    never chosen on). `last` holds the latest eval's metrics ({} before the first)."""

    def __init__(
        self,
        every: int,
        evaluate: Callable[[Any], dict[str, float]],
        writer: MetricWriter,
        listeners: Sequence[EvalListener] = (),
    ):
        super().__init__(every)
        self.evaluate, self.writer, self.listeners = evaluate, writer, tuple(listeners)
        self.last: dict[str, float] = {}

    def __call__(self, info: StepInfo) -> None:
        start = time.perf_counter()
        metrics = self.evaluate(info.state)
        metrics["eval/seconds"] = time.perf_counter() - start
        self.writer.write(info.step, metrics)
        self.last = metrics
        logging.info(
            "eval step %d | %s",
            info.step,
            " | ".join(f"{k} {v:.4f}" for k, v in metrics.items() if not k.endswith("seconds")),
        )
        for listener in self.listeners:
            listener.on_eval(info, metrics)


class KeepBest:
    """Eval listener: saves the state as the best checkpoint when `best_metric` improved.
    `best` is the best eval's record ({"step": ..., metrics}); on resume, the best so far."""

    def __init__(self, checkpoints: Checkpoints, data_iter: Any):
        self.checkpoints, self.data_iter = checkpoints, data_iter
        self.best = checkpoints.best_metrics()
        self.reads = ("config key 'best_metric'", checkpoints.best_metric)

    def on_eval(self, info: StepInfo, metrics: dict[str, float]) -> None:
        if self.checkpoints.save_if_best(info.step, info.state, self.data_iter, metrics):
            self.best = {"step": info.step, **metrics}


def eval_metric(metrics: dict[str, float], metric: str, what: str) -> float:
    """`metrics[metric]`; a ConfigError naming `what` and the validation metrics there are,
    when this run has no such metric."""
    if metric not in metrics:
        names = sorted(k for k in metrics if k.startswith(SELECTION_PREFIX))
        raise ConfigError(
            f"{what}: {metric!r} {NOT_A_METRIC_OF_THIS_RUN}{meant_metric(metric, names)}; "
            f"choose one of {', '.join(names)}"
        )
    return float(metrics[metric])


def check_reads(listeners: Sequence[EvalListener], names: Iterable[str]) -> None:
    """A ConfigError (`eval_metric`'s) for the first listener whose `reads` metric is not among
    `names` (the validation metrics this run computes); listeners without `reads` pass."""
    metrics = dict.fromkeys(names, 0.0)
    for listener in listeners:
        if (reads := getattr(listener, "reads", None)) is not None:
            what, metric = reads
            eval_metric(metrics, metric, what)


def check_selection_metrics(config: Any, names: Iterable[str]) -> None:
    """`config.best_metric`, then `early_stopping.metric` where early stopping is on, against
    `names` (the validation metrics a run of `config` computes): a ConfigError (`eval_metric`'s,
    the line a run's start gives) for the first that is not among them."""
    metrics = dict.fromkeys(names, 0.0)
    chosen = {"best_metric": config.best_metric}
    if "early_stopping" in config and config.early_stopping.metric:  # '': early stopping off
        chosen["early_stopping.metric"] = config.early_stopping.metric
    for key, metric in chosen.items():
        eval_metric(metrics, metric, f"config key {key!r}")


class EarlyStopping:
    """Eval listener: ends the run as finished when `metric` (a `val/` metric of the validation
    split, never a test one) has not improved by more than `min_delta` for `patience` evals in
    a row.

    With `history` (a metrics.jsonl path) it first replays the evals there up to `start_step`,
    so a resumed run stops where an uninterrupted one would.
    """

    def __init__(
        self,
        metric: str,
        mode: str,
        patience: int,
        min_delta: float,
        history: str = "",
        start_step: int = 0,
    ):
        check_selection_metric("config key 'early_stopping.metric'", metric)
        self.metric, self.mode, self.patience, self.min_delta = metric, mode, patience, min_delta
        self.reads = ("config key 'early_stopping.metric'", metric)
        self.best: float | None = None
        self.best_step = 0
        self.bad_evals = 0
        self._history, self._start_step = history, start_step

    def update(self, step: int, value: float) -> bool:
        """Takes one eval's value; True when patience has run out. A non-finite value (a NaN
        eval) neither counts as an improvement nor uses up patience: it is not a measurement."""
        if not np.isfinite(value):
            return False
        improved = self.best is None or (
            value > self.best + self.min_delta
            if self.mode == "max"
            else value < self.best - self.min_delta
        )
        if improved:
            self.best, self.best_step, self.bad_evals = value, step, 0
        else:
            self.bad_evals += 1
        return self.bad_evals >= self.patience

    def _replay(self) -> None:
        for record in read_records(self._history):
            value = record.get(self.metric)
            if value is not None and record["step"] <= self._start_step:
                self.update(record["step"], value)

    def on_eval(self, info: StepInfo, metrics: dict[str, float]) -> None:
        if self._history:
            self._replay()
            self._history = ""
        value = eval_metric(metrics, self.metric, "config key 'early_stopping.metric'")
        if self.update(info.step, value) and info.step < info.total_steps:
            info.request_stop(
                f"{self.metric} did not improve by more than {self.min_delta:g} for "
                f"{self.patience} evals (best {self.best:.4f} at step {self.best_step})",
                finish="early_stopped",
            )


class Checkpoint(Hook):
    """Saves the latest checkpoint (state and data iterator) every `every` steps, then calls
    `saved(step)` (the loop's: run_status.json's step, which stayed at the start's for the
    whole run, so a reader of a killed run saw step 0 beside checkpoint 200)."""

    def __init__(
        self,
        every: int,
        checkpoints: Checkpoints,
        data_iter: Any,
        saved: Callable[[int], None] | None = None,
    ):
        super().__init__(every)
        self.checkpoints, self.data_iter, self.saved = checkpoints, data_iter, saved

    def record(self, info: StepInfo) -> None:
        self.checkpoints.seal_finished()  # a committed step's manifest, written in the background

    def __call__(self, info: StepInfo) -> None:
        if self.checkpoints.save(info.step, info.state, self.data_iter) and self.saved:
            self.saved(info.step)


class Profile(Hook):
    """Traces steps first+1 .. first+count with jax.profiler into `logdir` (TensorBoard's
    profile plugin reads it), starting after step `first` completes."""

    def __init__(self, first: int, count: int, logdir: str):
        super().__init__(every=first)
        self.first, self.last, self.logdir = first, first + count, logdir
        self.active = False

    def due(self, step: int, total_steps: int) -> bool:
        return step in (self.first, self.last) or (self.active and step == total_steps)

    def next_due(self, step: int, total_steps: int) -> int:
        # The last step counted as due whether or not a trace is active: a call ends there
        # anyway, so the plan is the same.
        return min(s for s in (self.first, self.last, total_steps) if s > step)

    def __call__(self, info: StepInfo) -> None:
        if not self.active and info.step == self.first:
            jax.profiler.start_trace(self.logdir)
            self.active = True
        elif self.active:
            jax.block_until_ready(info.state)
            if self._stop():
                logging.info("profiled steps %d-%d into %s", self.first + 1, info.step, self.logdir)

    def close(self) -> None:
        self._stop()

    def _stop(self) -> bool:
        """Stops the trace and writes it; False where the write failed (a full disk, the
        directory not writable), which is logged as a warning naming the directory: a lost
        profile is no reason to lose the run, which goes on."""
        if not self.active:
            return False
        self.active = False  # stopped either way: a second stop_trace raises "no trace"
        try:
            jax.profiler.stop_trace()
        except jax.errors.JaxRuntimeError as e:
            logging.warning(
                "the profile from step %d could not be written into %s (%s); the run goes "
                "on without it: free space there, or make it a writable directory",
                self.first + 1,
                self.logdir,
                str(e).splitlines()[0],
            )
            return False
        return True


class Clock(Hook):
    """Notes the wall time at each of its steps, right after the loop synced with the device:
    what benchmarks use to time steady-state steps of the real loop."""

    def __init__(self, every: int):
        super().__init__(every)
        self.times: dict[int, float] = {}

    def __call__(self, info: StepInfo) -> None:
        self.times[info.step] = time.perf_counter()
