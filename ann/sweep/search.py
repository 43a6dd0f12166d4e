"""Bayesian search: an Optuna study (TPE sampler, median pruner) over get_sweep's space.

The study lives in `SWEEP_DIR/study.db` (SQLite), so the same command resumes it: trials it
finished are kept, trials that were running when the sweep stopped run again (resuming from
their checkpoints), and new trials are asked for until the study holds `trials` of them
(failed and pruned ones count). Each trial is an `ann.main` subprocess like a grid trial; it
reports its evals to the study and stops itself when pruned (`pruning.py`). A finished trial's
objective is the best value of the metric (a `val/` metric of the validation split, never a
test one) over its evals: the one its best checkpoint holds when the metric is also
`best_metric`.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable

from ann.sweep import definition as definition_lib
from ann.sweep import grid, launch, pruning, results, space
from ann.sweep import trials as trials_lib
from ann.sweep.definition import Definition
from ann.sweep.space import SweepError
from ann.sweep.trials import Trial

STUDY = "ann"


def run(
    definition: Definition,
    sweep_dir: str,
    trials: int,
    metric: str,
    mode: str,
    parallel: int = 1,
    seed: int = 0,
    startup_trials: int = 5,
    pruner: str = "median",
    prune_warmup_steps: int = 0,
    log: Callable[[str], None] = print,
) -> str:
    """Runs (or resumes) the study; returns the results table as markdown."""
    import optuna

    params, fixed = space.params(definition.node)
    distributions = {p.name: p.distribution for p in params}
    decoders = {p.name: p.decode for p in params}
    os.makedirs(sweep_dir, exist_ok=True)
    url = f"sqlite:///{os.path.abspath(os.path.join(sweep_dir, 'study.db'))}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = pruning.storage(url)
    try:
        before = len(optuna.load_study(study_name=STUDY, storage=storage).trials)
    except KeyError:
        before = 0
    direction = "maximize" if mode == "max" else "minimize"
    study = optuna.create_study(
        storage=storage,
        study_name=STUDY,
        direction=direction,
        # Reseeded by the trials already there, so a resumed study does not replay its draws.
        sampler=optuna.samplers.TPESampler(seed=seed + before, n_startup_trials=startup_trials),
        pruner=pruning.make_pruner(pruner, startup_trials, prune_warmup_steps),
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction:
        raise SweepError(
            f"the study in {sweep_dir} was created to {study.direction.name.lower()} "
            f"its metric; use --mode={'max' if mode == 'min' else 'min'} or a new --workdir"
        )
    if study.user_attrs.get("metric", metric) != metric:
        raise SweepError(
            f"the study in {sweep_dir} optimizes {study.user_attrs['metric']}; use "
            f"--metric={study.user_attrs['metric']} or a new --workdir"
        )
    study.set_user_attr("metric", metric)
    prune_spec = {
        "name": pruner,
        "startup_trials": startup_trials,
        "warmup_steps": prune_warmup_steps,
    }
    numbers: dict[str, int] = {}  # trial name -> Optuna trial number

    def make(frozen_or_trial, overrides: dict) -> Trial:
        name = frozen_or_trial.user_attrs.get("name") or (
            f"{frozen_or_trial.number:03d}-{trials_lib.names([overrides])[0]}"
        )
        env = {
            pruning.ENV: json.dumps(
                {
                    "storage": url,
                    "study": STUDY,
                    # Optuna's internal id: what optuna.trial.Trial(study, id) needs.
                    "trial_id": frozen_or_trial._trial_id,
                    "metric": metric,
                    "pruner": prune_spec,
                }
            )
        }
        numbers[name] = frozen_or_trial.number
        return definition.trial(name, overrides, sweep_dir, env=env)

    def overrides_of(values: dict) -> dict:
        out = dict(fixed)
        for name, value in values.items():
            out.update(decoders[name](value))
        return out

    def record_trials() -> None:
        listed = [
            definition.trial(t.user_attrs["name"], overrides_of(t.params), sweep_dir)
            for t in study.get_trials(deepcopy=False)
            if "name" in t.user_attrs
        ]
        info = results.sweep_info(definition, "tpe", metric, mode, listed)
        results.write_sweep_file(sweep_dir, {**info, "study": os.path.basename(url)})

    running = optuna.trial.TrialState.RUNNING
    resume = deque(
        make(t, overrides_of(t.params))
        for t in study.get_trials(deepcopy=False, states=(running,))
        if "name" in t.user_attrs
    )
    record_trials()
    log(
        f"study {url.removeprefix('sqlite:///')}: {len(study.trials)} of {trials} trials so far"
        + (f", {len(resume)} to resume" if resume else "")
        + f"; TPE over {', '.join(distributions)}, {parallel} at a time"
    )

    def next_trial() -> Trial | None:
        if resume:
            return resume.popleft()
        if len(study.trials) >= trials:
            return None
        asked = study.ask(distributions)
        overrides = overrides_of(asked.params)
        trial = make(asked, overrides)
        asked.set_user_attr("name", trial.name)
        try:
            config_json = definition_lib.check_trial(definition, trial)
        except SweepError:
            study.tell(asked, state=optuna.trial.TrialState.FAIL)
            raise
        trial.write_files(config_json)
        record_trials()
        return trial

    def on_end(trial: Trial, outcome: launch.Outcome) -> None:
        number = numbers[trial.name]
        if outcome.status == "done":
            value, _ = results.best_of(results.evals(trial.workdir)[0], metric, mode)
            if value is None:
                study.tell(number, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(number, value)
        elif outcome.status == "pruned":
            study.tell(number, state=optuna.trial.TrialState.PRUNED)
        elif outcome.status == "failed":
            study.tell(number, state=optuna.trial.TrialState.FAIL)
        # interrupted: left RUNNING in the study, so the next run of the sweep resumes it.
        log(f"[{number + 1}/{trials}] " + grid.end_line(trial, outcome, metric, mode))
        results.write(sweep_dir, with_plot=False)

    launch.run(next_trial, on_end, parallel)
    text = results.write(sweep_dir)
    try:
        best = study.best_trial
        log(f"best: trial {best.number} ({best.user_attrs.get('name')}), {metric} {best.value:.4f}")
    except ValueError:
        log("no trial finished")
    return text
