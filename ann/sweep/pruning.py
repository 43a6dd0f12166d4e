"""The trial side of a sweep: its metric checked before the first step, pruned by a TPE study.

A grid's trial is launched with `ANN_SWEEP_METRIC` naming the sweep's `--metric`: `ann.main`
adds `CheckMetric`, whose metric the loop checks before the first step (`hooks.check_reads`),
so a mistyped `--metric` fails the trial and stops the sweep then (`results.check_metric`)
rather than after a whole trial. A `--search=tpe` trial gets `ANN_SWEEP_PRUNING` instead, a
JSON object naming the study's SQLite storage, the trial and the metric (a `val/` metric:
pruning chooses, so it never reads the test split): `ReportToStudy` reports each eval of the
metric to the study (its metric checked the same way) and, when the study's pruner says so,
ends the run as finished with status `pruned`. Without either variable nothing here runs and
Optuna is never imported, so the train loop stays free of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shlex
import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import ml_collections

from ann.config import ConfigError, check_selection_metric
from ann.sweep.space import SweepError

if TYPE_CHECKING:  # the loop's module (JAX, Orbax): only a trial's own loop needs it
    from ann.train.hooks import StepInfo

ENV = "ANN_SWEEP_PRUNING"
METRIC_ENV = "ANN_SWEEP_METRIC"


def storage(url: str) -> Any:
    """An Optuna RDB storage that waits for SQLite's lock instead of failing: trials report
    while the sweep asks and tells."""
    import optuna

    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})


def check_study_database(path: str) -> None:
    """Raises SweepError where the sweep's study.db at `path` is another program's SQLite
    database: it holds tables but not Optuna's `studies` (Optuna wrote its own into it, beside
    them, without a word), refused as the registry refuses another program's registry.db.
    Optuna's other table names are its storage's private schema, not read here: a study's
    database missing one of them (`alembic_version`) is damaged, which `usable_study` says.
    Nothing where it does not exist, is empty (a new study starts in it), or is no database
    SQLite can read (`usable_study` says so)."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return
    try:
        db = sqlite3.connect(f"{pathlib.Path(path).absolute().as_uri()}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return  # damaged, locked: the storage's own error, said by `usable_study`
    # SQLite's own tables (sqlite_stat1 after ANALYZE, ...) belong to any database.
    tables = sorted(r[0] for r in rows if not r[0].startswith("sqlite_"))
    if tables and "studies" not in tables:  # Optuna's own, missing others: damaged, said later
        shown = ", ".join(tables[:3]) + (", ..." if len(tables) > 3 else "")
        raise SweepError(
            f"{path} is not a TPE study's database (it holds the table"
            f"{'s' * (len(tables) > 1)} {shown}): another program's; give this sweep another "
            "--workdir"
        )


@contextlib.contextmanager
def usable_study(
    url: str, error: type[Exception] = SweepError, rerun: str = "rerun this command"
) -> Iterator[None]:
    """Turns SQLite's refusal of the study's database (`url`) into an `error` (SweepError; a
    trial's ConfigError) naming the file and the fix (`rerun`: how to run the sweep again).
    Damaged (cut short, overwritten: `database disk image is malformed`, `file is not a
    database`), it was a SQLAlchemy traceback; otherwise (a full disk, its permissions, a lock
    held past the storage's timeout) SQLite's words are given. A zeroed study.db is an empty
    database to SQLite: a new study starts in it."""
    import sqlalchemy.exc

    try:
        yield
    except (SweepError, ConfigError):
        raise  # ann's own lines (this one's, from a call within)
    except Exception as raised:
        # SQLAlchemy's, or one Optuna raised from it (a commit's: StorageInternalError).
        e: BaseException | None = raised
        while e is not None and not isinstance(e, sqlalchemy.exc.DatabaseError):
            e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
        if e is None:
            raise
        path, said = url.removeprefix("sqlite:///"), str(getattr(e, "orig", None) or e)
        if getattr(e.orig, "sqlite_errorcode", None) in (sqlite3.SQLITE_CORRUPT,
                                                          sqlite3.SQLITE_NOTADB):  # fmt: skip
            aside = f"mv {shlex.quote(path)} {shlex.quote(path + '.damaged')}"
            raise error(
                f"{path}, the TPE study's database, is damaged ({said}); restore it from a "
                f"backup, or move it aside ({aside}) and {rerun}: a new study starts, and a "
                "trial it draws again (same number and parameters, as the same --seed draws "
                "the first ones) is taken from its workdir, not retrained"
            ) from None
        raise error(
            f"{path}, the TPE study's database, cannot be used (SQLite: {said}); fix that (space "
            f"on its file system, its permissions) and {rerun}"
        ) from None


def make_pruner(name: str, startup_trials: int, warmup_steps: int) -> Any:
    """`median`: prune a trial whose eval at a step is worse than the median of the finished
    trials' evals at that step (once `startup_trials` have finished, after `warmup_steps`)."""
    import optuna

    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=startup_trials, n_warmup_steps=warmup_steps, interval_steps=1
    )


class CheckMetric:
    """Eval listener that only names the sweep's `metric` in `reads`: the loop checks the run
    has it before the first step (`hooks.check_reads`; a ConfigError, so the trial fails and
    the sweep stops)."""

    def __init__(self, metric: str):
        check_selection_metric("sweep --metric", metric)
        self.reads = ("sweep --metric", metric)

    def on_eval(self, info: StepInfo, metrics: dict[str, float]) -> None:
        pass


class ReportToStudy:
    """Eval listener: reports `metric` to the trial after each eval; finishes the run as
    pruned when the study's pruner says so."""

    def __init__(self, trial: Any, metric: str, url: str = ""):
        check_selection_metric("sweep --metric", metric)  # prune on validation, never test
        self.trial, self.metric, self.url = trial, metric, url  # url: the study's storage
        self.reads = ("sweep --metric", metric)

    def on_eval(self, info: StepInfo, metrics: dict[str, float]) -> None:
        from ann.train.hooks import eval_metric  # imported by the trial's loop already

        value = eval_metric(metrics, self.metric, "sweep --metric")
        with trial_study(self.url) if self.url else contextlib.nullcontext():
            self.trial.report(value, info.step)
            # The last eval is the trial's result, not a reason to prune it.
            prune = info.step < info.total_steps and self.trial.should_prune()
        if prune:
            info.request_stop(
                f"the sweep's pruner stopped it: {self.metric} {value:.4f} at step {info.step} "
                "is worse than the median of finished trials",
                finish="pruned",
            )


def listeners_from_env(config: ml_collections.ConfigDict) -> list[CheckMetric | ReportToStudy]:
    """The eval listeners a sweep asked for through `ANN_SWEEP_PRUNING` or `ANN_SWEEP_METRIC`;
    [] when neither is set."""
    spec = os.environ.get(ENV)
    if not spec:
        metric = os.environ.get(METRIC_ENV)
        return [CheckMetric(metric)] if metric else []
    import optuna

    info = json.loads(spec)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with trial_study(info["storage"]):
        study = optuna.load_study(
            study_name=info["study"],
            storage=storage(info["storage"]),
            pruner=make_pruner(**info["pruner"]),
        )
        # Optuna has no public constructor from a trial number; its id is what `ask` returned.
        trial = optuna.trial.Trial(study, int(info["trial_id"]))
    return [ReportToStudy(trial, info["metric"], info["storage"])]


def trial_study(url: str) -> contextlib.AbstractContextManager:
    """`usable_study` as a trial says it: a ConfigError (its run fails in one line, which the
    sweep's error column shows), the fix the sweep's to run again."""
    return usable_study(url, ConfigError, "rerun the sweep's command")
