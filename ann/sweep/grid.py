"""A grid (or random) sweep: expand get_sweep, check every trial, run what is not finished.

Trials that are done or pruned are never run again; a failed trial is kept as failed unless
`retry_failed` (its error is usually in the config, and rerunning costs a whole run); an
interrupted or never-started trial runs (an interrupted one resumes from its checkpoint).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from ann import cli
from ann.sweep import definition as definition_lib
from ann.sweep import fail_fast as fail_fast_lib
from ann.sweep import launch, pruning, results, space
from ann.sweep import trials as trials_lib
from ann.sweep.definition import Definition
from ann.sweep.space import SweepError
from ann.sweep.trials import Trial


def prepare(definition: Definition, sweep_dir: str) -> tuple[list[Trial], list[str]]:
    """The trials and their config JSON, all checked before any of them runs. The data
    directory is settled first (`definition.settle_data_dir`: it reads sweep.json and writes
    nothing, so a refused trial still leaves no workdir), so each trial reads the sweep's. A
    space over `space.MAX_TRIALS` is refused before a trial is built, unless the sweep in
    `sweep_dir` already listed that many (it ran before the bound)."""
    definition_lib.settle_data_dir(definition, sweep_dir)
    # A sweep that listed more trials than `space.MAX_TRIALS` before the bound resumes.
    rows = space.trials(definition.node, at_most=len(results.listed(sweep_dir)))
    names = trials_lib.names(rows)
    trials = [definition.trial(n, row, sweep_dir) for n, row in zip(names, rows)]
    return trials, [definition_lib.check_trial(definition, t) for t in trials]


def _warn_left_out(sweep_dir: str, trials: list[Trial]) -> None:
    """Finished trials of an earlier get_sweep that this one no longer gives: the results left
    them out without a word (and the best line could name another trial)."""
    mine = {os.path.basename(t.workdir) for t in trials}
    gone = sorted(
        name
        for name in (os.listdir(sweep_dir) if os.path.isdir(sweep_dir) else [])
        if name not in mine
        and os.path.isfile(os.path.join(sweep_dir, name, trials_lib.RECORD))
        and trials_lib.status(os.path.join(sweep_dir, name))[0] in trials_lib.RANKED
    )
    if gone:
        cli.warn(
            f"{trials_lib.n_of(len(gone), 'finished trial')} in {sweep_dir} "
            f"{'are' if len(gone) != 1 else 'is'} no longer in get_sweep's space and left out of "
            f"the results (workdirs kept): {', '.join(gone)}; a new --workdir keeps sweeps apart"
        )


def end_line(trial: Trial, outcome: launch.Outcome, metric: str, mode: str) -> str:
    """One console line per finished trial."""
    line = f"{outcome.status:<11} {trial.name} ({outcome.seconds:.0f}s)"
    if outcome.error:
        return f"{line}: {outcome.error}"
    best, step = results.best_of(results.evals(trial.workdir)[0], metric, mode)
    return f"{line}: best {metric} {best:.4f} at step {step}" if best is not None else line


def run(
    definition: Definition,
    sweep_dir: str,
    metric: str,
    mode: str,
    parallel: int = 1,
    retry_failed: bool = False,
    log: Callable[[str], None] = print,
    prepared: tuple[list[Trial], list[str]] | None = None,
    fail_fast: int = fail_fast_lib.DEFAULT,
) -> str:
    """Runs the sweep (resuming it); returns the results table as markdown. `prepared`: what
    `prepare` returned, when the caller checked the trials before making the workdir.
    `fail_fast`: stop once the first that many trials to end all failed alike
    (`fail_fast.FailFast`; 0: never). Raises SweepError when the sweep stops early."""
    trials, configs = prepared or prepare(definition, sweep_dir)
    # Another fixed override than the sweep last ran with (`check_same_sweep` let it through:
    # no trial trained under the old one): its failed trials run again, with the new value.
    changes = results.changed_fixed(sweep_dir, definition.fixed)
    # A trial trained under another config than this sweep gives it is refused; one that
    # failed before training under another runs again, with this one.
    refit = results.check_trial_configs(sweep_dir, zip(trials, configs))
    results.write_sweep_file(
        sweep_dir, results.sweep_info(definition, "grid", metric, mode, trials)
    )
    todo, counts = [], {}
    for trial, config_json in zip(trials, configs):
        status, _ = trials_lib.status(trial.workdir)
        if status == "failed" and (
            retry_failed
            or changes
            or trial.name in refit
            or results.failed_on_the_metric(trial.workdir)
        ):
            status = "retried"  # a failed --metric was the sweep's mistake, not the trial's
        counts[status] = counts.get(status, 0) + 1
        if status in trials_lib.RANKED or status == "failed":
            continue
        trial.write_files(config_json)
        # Checked before the trial's first step: a mistyped --metric stops the sweep there.
        todo.append(dataclasses.replace(trial, env={**trial.env, pruning.METRIC_ENV: metric}))
    parallel = max(1, min(parallel, len(todo)))  # the cores split among trials that run
    message = f"sweep {sweep_dir}: {trials_lib.n_of(len(trials), 'trial')}, {len(todo)} to run"
    message += f", {parallel} at a time" if todo else ""  # none: "1 at a time" of nothing
    skipped = [f"{n} {s}" for s, n in counts.items() if s in (*trials_lib.RANKED, "failed")]
    if skipped:
        message += f"; skipping {', '.join(skipped)}"
    if counts.get("failed"):
        message += " (--retry_failed reruns failed trials)"
    if counts.get("retried"):
        message += f"; rerunning {counts['retried']} failed"
    if changes:
        log(results.rerun_line(changes, "sweep", counts.get("retried", 0)))
    log(message)
    _warn_left_out(sweep_dir, trials)
    queue = iter(todo)
    done = [0]
    finished = any(counts.get(s) for s in trials_lib.RANKED)
    watch = fail_fast_lib.FailFast(fail_fast, finished, " with --retry_failed")

    def on_end(trial: Trial, outcome: launch.Outcome) -> None:
        done[0] += 1
        log(f"[{done[0]}/{len(todo)}] " + end_line(trial, outcome, metric, mode))
        # The picture when a score came (README: rewritten as each trial ends; a sweep stopped
        # by Ctrl-C had none), not for a failure, which changes nothing in it.
        results.write(sweep_dir, with_plot=outcome.status in ("done", "pruned"))
        results.check_metric(trial, outcome, metric)
        watch.check(trial, outcome, more=done[0] < len(todo))

    try:
        launch.run(lambda: next(queue, None), on_end, parallel, log=log)
    except SweepError as stop:
        raise watch.said(stop, sweep_dir) from None
    return results.write(sweep_dir)
