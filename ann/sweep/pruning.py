"""Pruning a trial from its intermediate evals: the trial side of a `--search=tpe` study.

The sweep launches a trial with `ANN_SWEEP_PRUNING` set to a JSON object naming the study's
SQLite storage, the trial and the metric (a `val/` metric: pruning chooses, so it never reads
the test split). `ann.main` then adds `ReportToStudy`, which reports
each eval of the metric to the study and, when the study's pruner says so, ends the run as
finished with status `pruned`. Without that variable nothing here runs and Optuna is never
imported, so the train loop stays free of it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from ann.config import SELECTION_PREFIX, ConfigError, check_selection_metric
from ann.train.hooks import Context, Hook

ENV = "ANN_SWEEP_PRUNING"


def storage(url: str) -> Any:
    """An Optuna RDB storage that waits for SQLite's lock instead of failing: trials report
    while the sweep asks and tells."""
    import optuna

    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})


def make_pruner(name: str, startup_trials: int, warmup_steps: int) -> Any:
    """`median`: prune a trial whose eval at a step is worse than the median of the finished
    trials' evals at that step (once `startup_trials` have finished, after `warmup_steps`)."""
    import optuna

    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=startup_trials, n_warmup_steps=warmup_steps, interval_steps=1
    )


class ReportToStudy(Hook):
    """After each eval: report `metric` to the trial; finish the run as pruned if told to."""

    def __init__(self, every: int, trial: Any, metric: str):
        super().__init__(every)
        check_selection_metric("sweep --metric", metric)  # prune on validation, never test
        self.trial, self.metric = trial, metric

    def __call__(self, step: int, ctx: Context) -> None:
        if self.metric not in ctx.eval_metrics:
            names = sorted(k for k in ctx.eval_metrics if k.startswith(SELECTION_PREFIX))
            raise ConfigError(
                f"sweep --metric={self.metric} is not a validation metric of this run; use one of "
                f"{', '.join(names)}"
            )
        value = float(ctx.eval_metrics[self.metric])
        self.trial.report(value, step)
        # The last eval is the trial's result, not a reason to prune it.
        if step < ctx.total_steps and self.trial.should_prune():
            ctx.finish = "pruned"
            ctx.finish_message = (
                f"the sweep's pruner stopped it: {self.metric} {value:.4f} at step {step} is "
                "worse than the median of finished trials"
            )


def hooks_from_env(config: ml_collections.ConfigDict) -> list[Hook]:
    """The hooks a sweep asked for through `ANN_SWEEP_PRUNING`; [] when it is not set."""
    spec = os.environ.get(ENV)
    if not spec:
        return []
    import optuna

    info = json.loads(spec)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=info["study"],
        storage=storage(info["storage"]),
        pruner=make_pruner(**info["pruner"]),
    )
    # Optuna has no public constructor from a trial number; its id is what `ask` returned.
    trial = optuna.trial.Trial(study, int(info["trial_id"]))
    return [ReportToStudy(config.eval_every_steps, trial, info["metric"])]
