"""Fail-fast: a sweep stops once its first trials all failed the same way.

A fixed `--config.KEY=VALUE` that makes every trial fail at its start (a value the config
accepts and the run refuses, a data directory that does not hold the data) ran every trial of
the sweep to the same error, a 20-trial study twenty times. As W&B's agent stops a sweep whose
first runs all crash (3 by default) and Ray Tune's `fail_fast`, a sweep run here stops once the
first `limit` trials to end in this run all failed with the same error line (the trial's own
name and workdir aside) while no trial of the sweep has finished (done or pruned): the running
trials are stopped as Ctrl-C stops them (they save, and resume later), everything written so
far is kept (the trials' workdirs and logs, results.csv and results.md, a study's database),
and the command exits 1 with one line naming the error and the first failed trial's log, and
how to go on, worded from what the sweep has: where the error names a value the failed trials
all swept (a bad data.data_dir in get_sweep), that value, to change in the config's get_sweep
(the same command, or --retry_failed, failed the same way); else the same command (a grid's
with --retry_failed), and, only where the command has fixed overrides, the command with the
new value of the one at fault in the same workdir, which reruns the failed trials
(`results.check_same_sweep` takes it while no trial trained with the old value). Where a
trial did train (with --parallel above 1, one stopped by the stop saves a checkpoint), the
line says that the new value needs a new --workdir, naming that trial (`FailFast.said`).

Failures that differ (one learning rate diverging, another running out of memory) or any
trial that finished disarm it: the errors are then the trials' own, and the others may
finish. `limit` 0 runs every trial whatever fails.
"""

from __future__ import annotations

import os
from typing import Any

from ann.sweep import results
from ann.sweep.space import SweepError
from ann.sweep.trials import RANKED, Trial, cli_value

DEFAULT = 3  # W&B's agent: a sweep whose first 3 runs crash is stopped
FIXED = ", or, where the cause is a fixed --config.KEY=VALUE of the sweep's, with its new value"


def _swept_cause(failed: list[tuple[Trial, str]], error: str) -> str | None:
    """`KEY=VALUE` of a swept value every failed trial has and `error` names (a data.data_dir
    that holds no data, swept or set in get_sweep), else None. Values shorter than 3
    characters (0.1, 32) are not looked for: an error may name such a number by chance."""
    first = failed[0][0]
    for key, value in first.overrides.items():
        text = cli_value(value)
        if (
            len(text) >= 3
            and text in error
            and all(key in t.overrides and t.overrides[key] == value for t, _ in failed)
        ):
            return f"{key}={text}"
    return None


def _shape(trial: Trial, error: str) -> str:
    """The error with the trial's own workdir and name taken out: two trials failing on one
    cause name their own paths in it."""
    for own in (os.path.abspath(trial.workdir), trial.workdir, trial.name):
        error = error.replace(own, "<trial>")
    return error


class FailFast:
    """Watches trials end; `check` raises SweepError when the sweep should stop."""

    def __init__(self, limit: int, finished_before: bool, rerun: str) -> None:
        # A sweep with a finished trial has shown its trials can finish: nothing to watch.
        self.limit = 0 if finished_before else limit
        self.rerun = rerun  # how to go on once the cause is fixed (grid: --retry_failed)
        self.failed: list[tuple[Trial, str]] = []
        self.stop: SweepError | None = None  # what `check` raised
        # `check`'s line, in two parts around the fixed override's clause where it has one
        self._parts: tuple[str, ...] = ()

    def check(self, trial: Trial, outcome: Any, more: bool) -> None:
        """After `trial` ended with `outcome` (`launch.Outcome`); `more`: whether trials of
        this run are still running or left to start (with none, stopping saves nothing)."""
        if not self.limit:
            return
        if outcome.status in RANKED:  # done, pruned, or exited 0 (unknown)
            self.limit = 0
            return
        if outcome.status != "failed":
            return  # interrupted: stopped from outside, not an end of its own
        self.failed.append((trial, outcome.error or ""))
        if len(self.failed) < self.limit:
            return
        limit, self.limit = self.limit, 0  # judged once, on the first `limit`
        if not more or len({_shape(t, e) for t, e in self.failed}) != 1:
            return
        first, error = self.failed[0]
        log = os.path.join(first.workdir, "stderr.log")
        said = (
            f"stopping the sweep (--fail_fast={limit}): "
            + (
                f"its first {limit} trials all failed with the same error"
                if limit > 1
                else "its first trial failed"  # "its first 1 trials all failed"
            )
            + f" and none finished, so the others would too: {error} (trial "
            f"{first.name}'s log: {log}); what ran is kept (results.md); "
        )
        anyway = ", or give --fail_fast=0 to run every trial anyway"
        swept = _swept_cause(self.failed, _shape(first, error))
        if swept is not None:  # rerun as it is (--retry_failed too), it fails the same way
            self._parts = (
                f"{said}fix the cause, the swept value {swept} its error names: change it in "
                f"the config's get_sweep and run the same command again{anyway}",
            )
        elif first.fixed:  # the words before and after the fixed override's clause
            self._parts = (f"{said}fix the cause and run the same command again{self.rerun}"
                           f"{FIXED}", anyway)  # fmt: skip
        else:  # no fixed override to give a new value of
            self._parts = (f"{said}fix the cause and run the same command again{self.rerun}"
                           f"{anyway}",)  # fmt: skip
        self.stop = SweepError(" (the failed trials rerun with it)".join(self._parts))
        raise self.stop

    def said(self, stop: SweepError, sweep_dir: str) -> SweepError:
        """`stop` as the command ends with it, once the running trials stopped: `check`'s line,
        its advice for a fixed override reworded where a trial of the sweep trained under it
        (`results.trained_any`: a trial the stop interrupted saved a checkpoint, with
        --parallel above 1), which `results.check_same_sweep` then refuses in this workdir.
        Another SweepError (a wrong --metric) is returned as it is."""
        if stop is not self.stop or len(self._parts) < 2:  # no fixed override's clause
            return stop
        if not (trained := results.trained_any(sweep_dir)):
            return stop
        return SweepError(
            f" and a new --workdir (its trial {trained}: this workdir keeps its fixed "
            "overrides)".join(self._parts)
        )
