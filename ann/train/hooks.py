"""Hooks: small objects that run every N steps (and at the last step) after the train step.

Logging, evaluation and checkpointing are hooks, so new behaviour is a new hook rather than a
new branch in the loop. A hook reads and writes the shared `Context`.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging

from ann.config import SELECTION_PREFIX, ConfigError, check_selection_metric
from ann.train.checkpoint import Checkpoints
from ann.train.writers import MetricWriter, read_records


@dataclasses.dataclass
class Context:
    """What the loop shares with its hooks."""

    state: Any
    data_iter: Any
    total_steps: int
    batch_size: int
    writer: MetricWriter
    checkpoints: Checkpoints
    window: list[dict] = dataclasses.field(default_factory=list)  # host train metrics since log
    window_start: float = dataclasses.field(default_factory=time.perf_counter)
    window_first_step: int = 0
    excluded_seconds: float = 0.0  # time spent in eval/checkpoint hooks inside the window
    data_seconds: float = 0.0  # time spent waiting for batches inside the window
    eval_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    best_eval_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    stop: bool = False  # a hook sets this to save a checkpoint and end the run here
    # A hook sets `finish` to a reason ("early_stopped", "pruned") to end the run as finished:
    # saved, recorded in run_status.json, and not trained further by a rerun.
    finish: str = ""
    finish_message: str = ""
    start_step: int = 0  # the step this process started (or resumed) from
    flops_per_step: float = 0.0  # per device, from XLA's cost analysis of the train step
    peak_flops: float | None = None  # per device; None where unknown (CPU): no MFU
    tokens_per_example: int = 0  # set by token tasks: tokens/s is then logged


class Hook:
    def __init__(self, every: int):
        self.every = every

    def due(self, step: int, total_steps: int) -> bool:
        return step % self.every == 0 or step == total_steps

    def __call__(self, step: int, ctx: Context) -> None:
        raise NotImplementedError

    def close(self, ctx: Context) -> None:
        """Called once when the run ends, however it ends."""


def _eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class LogTrain(Hook):
    """Means of the train metrics since the last log, throughput, ETA; console and writer."""

    def __call__(self, step: int, ctx: Context) -> None:
        if not ctx.window:
            return
        metrics = {f"train/{k}": float(np.mean([m[k] for m in ctx.window])) for k in ctx.window[0]}
        steps = step - ctx.window_first_step
        seconds = max(time.perf_counter() - ctx.window_start - ctx.excluded_seconds, 1e-9)
        metrics["train/steps_per_sec"] = steps / seconds
        metrics["train/examples_per_sec"] = steps * ctx.batch_size / seconds
        metrics["train/data_wait_fraction"] = min(ctx.data_seconds / seconds, 1.0)
        if ctx.tokens_per_example:
            metrics["train/tokens_per_sec"] = metrics["train/examples_per_sec"] * (
                ctx.tokens_per_example
            )
        if ctx.flops_per_step and ctx.peak_flops:
            metrics["train/mfu"] = (
                ctx.flops_per_step * metrics["train/steps_per_sec"] / (ctx.peak_flops)
            )
        ctx.writer.write(step, metrics)
        shown = " | ".join(
            f"{k.split('/', 1)[1]} {v:.4f}"
            for k, v in metrics.items()
            if k in ("train/loss", "train/accuracy")
        )
        logging.info(
            "step %d/%d (%.0f%%) | %s | %s ex/s | ETA %s",
            step,
            ctx.total_steps,
            100 * step / ctx.total_steps,
            shown,
            f"{metrics['train/examples_per_sec']:,.0f}",
            _eta((ctx.total_steps - step) / metrics["train/steps_per_sec"]),
        )
        ctx.window.clear()
        ctx.window_start = time.perf_counter()
        ctx.window_first_step = step
        ctx.excluded_seconds = ctx.data_seconds = 0.0


class Evaluate(Hook):
    """Runs `evaluate(state) -> {name: value}`, writes it, and keeps the best checkpoint.

    `evaluate` scores the validation split (`val/...`, what chooses: `best_metric` is one of
    them, config validation sees to that) and the reported splits (`eval/...`, the test split,
    never chosen on); `ctx.eval_metrics` and the best checkpoint's record hold both."""

    def __init__(self, every: int, evaluate: Callable[[Any], dict[str, float]]):
        super().__init__(every)
        self.evaluate = evaluate

    def __call__(self, step: int, ctx: Context) -> None:
        start = time.perf_counter()
        metrics = self.evaluate(ctx.state)
        metrics["eval/seconds"] = time.perf_counter() - start
        ctx.writer.write(step, metrics)
        ctx.eval_metrics = metrics
        if ctx.checkpoints.save_if_best(step, ctx.state, ctx.data_iter, metrics):
            ctx.best_eval_metrics = {"step": step, **metrics}
        logging.info(
            "eval step %d | %s",
            step,
            " | ".join(f"{k} {v:.4f}" for k, v in metrics.items() if not k.endswith("seconds")),
        )
        ctx.excluded_seconds += time.perf_counter() - start


class Profile(Hook):
    """Traces steps first+1 .. first+count with jax.profiler into `logdir` (TensorBoard's
    profile plugin reads it), starting after step `first` completes."""

    def __init__(self, first: int, count: int, logdir: str):
        super().__init__(every=first)
        self.first, self.last, self.logdir = first, first + count, logdir
        self.active = False

    def due(self, step: int, total_steps: int) -> bool:
        return step in (self.first, self.last) or (self.active and step == total_steps)

    def __call__(self, step: int, ctx: Context) -> None:
        if not self.active and step == self.first:
            jax.profiler.start_trace(self.logdir)
            self.active = True
        elif self.active:
            jax.block_until_ready(ctx.state)
            self.close(ctx)
            logging.info("profiled steps %d-%d into %s", self.first + 1, step, self.logdir)

    def close(self, ctx: Context) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False


class Clock(Hook):
    """Notes the wall time at each of its steps, right after the loop synced with the device:
    what benchmarks use to time steady-state steps of the real loop."""

    def __init__(self, every: int):
        super().__init__(every)
        self.times: dict[int, float] = {}

    def __call__(self, step: int, ctx: Context) -> None:
        self.times[step] = time.perf_counter()


class Checkpoint(Hook):
    def __call__(self, step: int, ctx: Context) -> None:
        start = time.perf_counter()
        ctx.checkpoints.save(step, ctx.state, ctx.data_iter)
        ctx.excluded_seconds += time.perf_counter() - start


class EarlyStopping(Hook):
    """Ends the run as finished when `metric` (a `val/` metric of the validation split, never a
    test one) has not improved by more than `min_delta` for `patience` evals in a row. Runs
    right after `Evaluate`, on the same steps.

    On resume it replays the eval history in `metrics.jsonl` up to the restored step, so an
    interrupted run stops where an uninterrupted one would.
    """

    def __init__(self, every: int, metric: str, mode: str, patience: int, min_delta: float):
        super().__init__(every)
        check_selection_metric("config key 'early_stopping.metric'", metric)
        self.metric, self.mode, self.patience, self.min_delta = metric, mode, patience, min_delta
        self.best: float | None = None
        self.best_step = 0
        self.bad_evals = 0
        self._replayed = False

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

    def _replay(self, ctx: Context) -> None:
        for record in read_records(ctx.writer.path):
            value = record.get(self.metric)
            if value is not None and record["step"] <= ctx.start_step:
                self.update(record["step"], value)

    def __call__(self, step: int, ctx: Context) -> None:
        if not self._replayed:
            self._replay(ctx)
            self._replayed = True
        if self.metric not in ctx.eval_metrics:
            names = sorted(k for k in ctx.eval_metrics if k.startswith(SELECTION_PREFIX))
            raise ConfigError(
                f"config key 'early_stopping.metric': {self.metric!r} is not a validation "
                f"metric of this run; choose one of {', '.join(names)}"
            )
        if self.update(step, ctx.eval_metrics[self.metric]) and step < ctx.total_steps:
            ctx.finish = "early_stopped"
            ctx.finish_message = (
                f"{self.metric} did not improve by more than {self.min_delta:g} for "
                f"{self.patience} evals (best {self.best:.4f} at step {self.best_step})"
            )
