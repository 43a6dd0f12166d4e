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

import dataclasses
import json
import os
from collections import deque
from collections.abc import Callable, Collection
from typing import Any

from ann import cli
from ann.sweep import definition as definition_lib
from ann.sweep import fail_fast as fail_fast_lib
from ann.sweep import grid, launch, pruning, results, space
from ann.sweep import trials as trials_lib
from ann.sweep.definition import Definition
from ann.sweep.space import SweepError
from ann.sweep.trials import Trial

STUDY = "ann"
UNLAUNCHED = "unlaunched"  # user attribute of a trial drawn but never launched (Search.counted)


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
    fail_fast: int = fail_fast_lib.DEFAULT,
) -> str:
    """Runs (or resumes) the study; returns the results table as markdown. `fail_fast`: stop
    once the first that many trials to end all failed alike (`fail_fast.FailFast`; 0: never);
    raises SweepError then."""
    params, fixed = space.params(definition.node)
    definition_lib.settle_data_dir(definition, sweep_dir)
    changes = results.changed_fixed(sweep_dir, definition.fixed)  # before sweep.json's rewrite
    os.makedirs(sweep_dir, exist_ok=True)
    url = f"sqlite:///{os.path.abspath(os.path.join(sweep_dir, 'study.db'))}"
    study = open_study(
        url, sweep_dir, metric, mode, seed, startup_trials, pruner, prune_warmup_steps, trials
    )
    search = Search(
        definition,
        sweep_dir,
        trials,
        metric,
        mode,
        url,
        study,
        {p.name: p.distribution for p in params},
        {p.name: p.decode for p in params},
        fixed,
        {"name": pruner, "startup_trials": startup_trials, "warmup_steps": prune_warmup_steps},
        log,
    )

    def said(call: Callable) -> Callable:
        """`call`, a study.db that SQLite refuses on the way said in one line (a SweepError:
        from the launcher's callbacks, it stops the sweep as any)."""

        def within(*args: Any) -> Any:
            with pruning.usable_study(url):
                return call(*args)

        return within

    said(search.prepare)(changes, fail_fast)
    try:
        launch.run(said(search.next_trial), said(search.on_end), said(search.start)(parallel),
                   log=log)  # fmt: skip
    except SweepError as stop:
        raise search.watch.said(stop, sweep_dir) from None
    text = results.write(sweep_dir)
    said(search.report_best)()
    return text


SET_ASIDE = "set_aside"  # study attribute: numbers of failed trials rerun under new overrides


def rerun_failed(study: Any, numbers: Collection[int] | None = None) -> int:
    """Sets the study's failed trials aside (their numbers in the study's `SET_ASIDE`
    attribute: not counted, not listed in the results; their workdirs kept) and queues their
    parameters again, as a grid runs its failed trials again: every one where they failed
    under fixed overrides the sweep no longer has; those `numbers` (trial numbers) where they
    failed before training under another config (`Search.check_configs`). Returns how many."""
    import optuna

    aside = set(study.user_attrs.get(SET_ASIDE, []))
    again = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        if "name" in t.user_attrs
        and t.number not in aside  # launched, not set aside before
        and (numbers is None or t.number in numbers)
    ]
    if not again:
        return 0
    # Set aside and queued again, or neither: a stop between the two lost the parameters.
    with cli.interrupts_deferred():
        study.set_user_attr(SET_ASIDE, sorted(aside | {t.number for t in again}))
        for t in again:
            study.enqueue_trial(t.params, skip_if_exists=False)
    return len(again)


def open_study(
    url: str,
    sweep_dir: str,
    metric: str,
    mode: str,
    seed: int,
    startup_trials: int,
    pruner: str,
    prune_warmup_steps: int,
    trials: int | None = None,
):
    """The Optuna study at `url`, created or loaded; a SweepError if it was created for
    another direction or metric than `mode` and `metric`. Other sampler settings than the
    study began with are warned about where it has draws left (`trials`, the study's size:
    fewer `counted` trials; None: always). A SweepError, too, for a study.db that SQLite
    refuses (`pruning.usable_study`)."""
    pruning.check_study_database(url.removeprefix("sqlite:///"))  # another program's
    with pruning.usable_study(url):  # a study.db SQLite refuses: one line
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # Made whole or not at all: a stop inside left study.db's tables half made.
        with cli.interrupts_deferred():
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
                # Reseeded by the trials already there, so a resumed study does not replay draws.
                sampler=optuna.samplers.TPESampler(
                    seed=seed + before, n_startup_trials=startup_trials
                ),
                pruner=pruning.make_pruner(pruner, startup_trials, prune_warmup_steps),
                load_if_exists=True,
            )
        if study.direction.name.lower() != direction:
            raise SweepError(
                f"the study in {sweep_dir} was created to {study.direction.name.lower()} "
                f"its metric; use --mode={'max' if mode == 'min' else 'min'} or a new --workdir"
            )
        scored = any(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
        if study.user_attrs.get("metric", metric) != metric and scored:  # else a corrected typo
            raise SweepError(
                f"the study in {sweep_dir} optimizes {study.user_attrs['metric']}; use "
                f"--metric={study.user_attrs['metric']} or a new --workdir"
            )
        study.set_user_attr("metric", metric)
        # Optuna keeps no sampler settings: a resume draws with this run's, which is said.
        drawn = {"seed": seed, "startup_trials": startup_trials}
        before = {k: study.user_attrs[k] for k in drawn if k in study.user_attrs}
        left = trials is None or counted(study) < trials  # nothing drawn: the seed changes nothing
        if before and before != {k: drawn[k] for k in before} and left:
            said = " ".join(f"--{k}={v}" for k, v in before.items())
            now = " ".join(f"--{k}={drawn[k]}" for k in before)
            cli.warn(
                f"the study in {sweep_dir} was started with {said}; its next draws use {now} "
                "(TPE's random start counts every trial of the study)"
            )
        for key, value in drawn.items() if left else ():  # a draw's settings
            study.set_user_attr(key, value)
        return study


def counted(study: Any) -> int:
    """The study's trials that count towards its size: all but those never launched (a Ctrl-C
    between Optuna's draw and the trial's naming left one RUNNING, nameless, for good: a
    resumed sweep skipped it yet counted it, and delivered one trial fewer), those set
    aside (`rerun_failed`) and those queued again in their place and not yet asked for
    (WAITING: they count once drawn; counted before, a study that had drawn all its trials
    never ran the parameters it queued again)."""
    trials = study.get_trials(deepcopy=False)
    aside = set(study.user_attrs.get(SET_ASIDE, []))
    return sum(
        1
        for t in trials
        if not t.user_attrs.get(UNLAUNCHED) and t.number not in aside and t.state.name != "WAITING"
    )


@dataclasses.dataclass
class Search:
    """One run of a study: asks it for trials, launches them, tells it their outcomes."""

    definition: Definition
    sweep_dir: str
    trials: int  # the study's size: finished, failed and pruned trials count
    metric: str
    mode: str
    url: str  # the study's storage
    study: Any  # optuna.Study
    distributions: dict[str, Any]  # parameter -> Optuna distribution
    decoders: dict[str, Callable[[Any], dict]]  # parameter -> its config overrides
    fixed: dict  # overrides of every trial
    prune_spec: dict
    log: Callable[[str], None]
    numbers: dict[str, int] = dataclasses.field(default_factory=dict)  # name -> trial number
    resume: deque = dataclasses.field(default_factory=deque)  # trials left RUNNING
    watch: fail_fast_lib.FailFast | None = None  # stops the study when its trials fail alike

    def prepare(self, changes: dict[str, tuple], fail_fast: int) -> None:
        """Before the first launch: the study's failed trials queued again where this sweep
        changed a fixed override (`changes`, `results.changed_fixed`) or their config
        (`check_configs`), and the watch that stops the study once its first `fail_fast`
        trials all fail alike."""
        if changes:  # `check_same_sweep` let it through: no trial trained with the old value
            aside = " (same parameters; they no longer count against --trials)"
            self.log(results.rerun_line(changes, "study", rerun_failed(self.study), aside))
        if n := rerun_failed(self.study, self.check_configs()):
            self.log(
                f"{trials_lib.n_of(n, 'failed trial')} of the study failed before training "
                f"under another config than this sweep gives {'it' if n == 1 else 'them'} (or "
                "only on the sweep's --metric): rerun with this one (same parameters; set "
                "aside, workdirs kept, no longer counted against --trials)"
            )
        scored = any(t.state.name in ("COMPLETE", "PRUNED") for t in self.study.trials)
        rerun = " (its failed trials count against --trials)"
        self.watch = fail_fast_lib.FailFast(fail_fast, scored, rerun)

    def start(self, parallel: int) -> int:
        """Queues the trials a stopped sweep left running, records the trial list, logs; returns
        how many trials run at a time: `parallel`, or fewer when fewer are left (so the cores
        are split among the trials that run, and the log says what happens)."""
        import optuna

        running = optuna.trial.TrialState.RUNNING
        for t in self.study.get_trials(deepcopy=False, states=(running,)):
            if "name" in t.user_attrs:
                self.resume.append(self.make(t, self.overrides_of(t.params)))
            else:  # drawn, then Ctrl-C before it was named: never launched, not one of the study
                orphan = optuna.trial.Trial(self.study, t._trial_id)
                orphan.set_user_attr(UNLAUNCHED, True)
                self.study.tell(orphan, state=optuna.trial.TrialState.FAIL)
        self.record_trials()
        left = len(self.resume) + max(0, self.trials - self.counted())
        parallel = max(1, min(parallel, left))
        where, counted = self.url.removeprefix("sqlite:///"), self.counted()
        if counted > self.trials and not self.resume:  # it said "5 of 3 trials so far"
            self.log(
                f"study {where}: {trials_lib.n_of(counted, 'trial')}, past "
                f"--trials={self.trials}: nothing to draw (--trials={counted + 1} or more draws "
                "again)"
            )
            return parallel
        self.log(
            f"study {where}: {counted} of {trials_lib.n_of(self.trials, 'trial')} so far"
            + (f", {len(self.resume)} to resume" if self.resume else "")
            + f"; {self.sampler_words()} over {', '.join(self.distributions)}"
            + (f", {parallel} at a time" if left else "")
        )
        return parallel

    def check_configs(self) -> set[int]:
        """A SweepError for a trial of the study that trained under another config than the
        sweep now gives its parameters (`results.check_trial_configs`: another config file, or
        this one edited). A trial whose parameters get_sweep's space no longer has, or whose
        config the sweep now refuses, is not compared.

        Returns the numbers of the failed trials to run again, as a grid runs its own
        (`grid.run`): those that failed before they trained under another config than the
        sweep now gives them (`check_trial_configs`' refits), those whose drawn config was
        refused and that the sweep now takes (`next_trial`), and those that failed only on
        the sweep's --metric (`results.failed_on_the_metric`). They counted as failed for good,
        against --trials, while a grid reran them."""
        aside = set(self.study.user_attrs.get(SET_ASIDE, []))
        pairs, numbers, again = [], {}, set()
        for t in self.study.get_trials(deepcopy=False):
            name = t.user_attrs.get("name")
            if name is None or t.number in aside or not set(t.params) <= set(self.decoders):
                continue
            trial = self.definition.trial(name, self.overrides_of(t.params), self.sweep_dir)
            failed = t.state.name == "FAIL"
            if failed and results.failed_on_the_metric(trial.workdir):
                again.add(t.number)
            started = os.path.isfile(os.path.join(trial.workdir, "config.json"))
            refused = failed and trials_lib.read_record(trial.workdir).get("refused")
            if not (started or refused):
                continue  # never started: nothing to compare, nothing to build
            try:
                config_json = definition_lib.check_trial(self.definition, trial)
            except SweepError:
                continue
            if started:
                pairs.append((trial, config_json))
                numbers[name] = t.number
            else:  # refused when drawn, taken now
                again.add(t.number)
        refit = results.check_trial_configs(self.sweep_dir, pairs)
        failed = {t.number for t in self.study.get_trials(deepcopy=False) if t.state.name == "FAIL"}
        return again | ({numbers[n] for n in refit} & failed)

    def counted(self) -> int:
        """`counted` of this study."""
        return counted(self.study)

    def sampler_words(self) -> str:
        """How the study draws: TPE draws its first `startup_trials` at random, so a study no
        larger than that is a random search."""
        startup = self.prune_spec.get("startup_trials", 0)
        if self.trials <= startup:
            return f"random draws (TPE's first {startup} are random; raise --trials for TPE)"
        return f"TPE after {startup} random draws" if startup else "TPE"

    def make(self, frozen_or_trial, overrides: dict) -> Trial:
        """The Trial of an Optuna trial: its name, and the environment that lets it report."""
        name = frozen_or_trial.user_attrs.get("name") or (
            f"{frozen_or_trial.number:03d}-{trials_lib.names([overrides])[0]}"
        )
        report = {
            "storage": self.url,
            "study": STUDY,
            # Optuna's internal id: what optuna.trial.Trial(study, id) needs.
            "trial_id": frozen_or_trial._trial_id,
            "metric": self.metric,
            "pruner": self.prune_spec,
        }
        self.numbers[name] = frozen_or_trial.number
        env = {pruning.ENV: json.dumps(report)}
        return self.definition.trial(name, overrides, self.sweep_dir, env=env)

    def overrides_of(self, values: dict) -> dict:
        out = dict(self.fixed)
        for name, value in values.items():
            out.update(self.decoders[name](value))
        return out

    def record_trials(self) -> None:
        """Rewrites the sweep file with every named trial of the study."""
        aside = set(self.study.user_attrs.get(SET_ASIDE, []))  # `rerun_failed`
        listed = [
            self.definition.trial(t.user_attrs["name"], self.overrides_of(t.params), self.sweep_dir)
            for t in self.study.get_trials(deepcopy=False)
            if "name" in t.user_attrs and t.number not in aside
        ]
        info = results.sweep_info(self.definition, "tpe", self.metric, self.mode, listed)
        results.write_sweep_file(self.sweep_dir, {**info, "study": os.path.basename(self.url)})

    def next_trial(self) -> Trial | None:
        """A trial to resume, else a new one asked of the study, else None (the study is full).
        A drawn trial whose config is refused (a combination `check_space` could not see, e.g.
        a warmup past a shorter run) is not launched: it fails in the study and in the
        results with the refusal as its error, and the next one is asked for."""
        import optuna

        if self.resume:
            return self.resume.popleft()
        while self.counted() < self.trials:
            asked = self.study.ask(self.distributions)
            trial = self.make(asked, self.overrides_of(asked.params))
            asked.set_user_attr("name", trial.name)
            try:
                config_json = definition_lib.check_trial(self.definition, trial)
            except SweepError as e:
                self.study.tell(asked, state=optuna.trial.TrialState.FAIL)
                os.makedirs(trial.workdir, exist_ok=True)
                trials_lib.update_record(trial.workdir, refused=str(e), ended=trials_lib.now())
                self.record_trials()
                self.log(f"[{asked.number + 1}/{self.trials}] refused     {e}")  # names it
                results.write(self.sweep_dir, with_plot=False)
                continue
            trial.write_files(config_json)
            self.record_trials()
            return trial
        return None

    def on_end(self, trial: Trial, outcome: launch.Outcome) -> None:
        """Tells the study how `trial` ended, logs it and rewrites the results."""
        import optuna

        number, states = self.numbers[trial.name], optuna.trial.TrialState
        if outcome.status in ("done", trials_lib.UNKNOWN):  # exited 0: its metrics count
            value, _ = results.best_of(results.evals(trial.workdir)[0], self.metric, self.mode)
            if value is None:
                self.study.tell(number, state=states.FAIL)
            else:
                self.study.tell(number, value)
        elif outcome.status == "pruned":
            self.study.tell(number, state=states.PRUNED)
        elif outcome.status == "failed":
            self.study.tell(number, state=states.FAIL)
        # interrupted: left RUNNING in the study, so the next run of the sweep resumes it.
        end = grid.end_line(trial, outcome, self.metric, self.mode)
        self.log(f"[{number + 1}/{self.trials}] {end}")
        results.write(self.sweep_dir, with_plot=outcome.status in ("done", "pruned"))
        results.check_metric(trial, outcome, self.metric)
        if self.watch:
            running = self.study.get_trials(deepcopy=False, states=(states.RUNNING,))
            more = bool(self.resume or running or self.counted() < self.trials)
            self.watch.check(trial, outcome, more)

    def report_best(self) -> None:
        try:
            best = self.study.best_trial
        except ValueError:
            self.log("no trial finished")
            return
        name = best.user_attrs.get("name")
        self.log(f"best: trial {best.number} ({name}), {self.metric} {best.value:.4f}")


def check_space(definition: Definition) -> None:
    """Checks, before a study or its workdir exists, the trials at the ends of the space:
    each searched parameter at each end of its range (every value of a categorical one), the
    others at their lowest or first value. A study draws its trials as it goes, so a value the
    config refuses would otherwise surface only as a failed trial in a workdir already made.
    Raises SweepError naming the trial, as `definition.check_trial` does."""
    params, fixed = space.params(definition.node)
    first = {p.name: _ends(p.distribution)[0] for p in params}
    decoders = {p.name: p.decode for p in params}
    seen: set[str] = set()
    for p in params:
        for value in _ends(p.distribution):
            overrides = dict(fixed)
            for name, v in {**first, p.name: value}.items():
                overrides.update(decoders[name](v))
            name = trials_lib.names([overrides])[0]
            if name not in seen:
                seen.add(name)
                definition_lib.check_trial(definition, definition.trial(name, overrides, ""))


def _ends(distribution: Any) -> list[Any]:
    """The values at the ends of an Optuna distribution: low and high of a range, every
    choice of a categorical one."""
    choices = getattr(distribution, "choices", None)
    return list(choices) if choices is not None else [distribution.low, distribution.high]
