"""The sweep's results: `results.csv`, `results.md` and `results.png` in the sweep workdir.

One row per trial: its overrides, status, the best value of the sweep's metric (a `val/`
metric: trials are ranked on the validation split) and its step, the test metrics (`eval/`)
at that step (reported, never ranked on), the final value of every validation and test
metric, steps trained, wall time, error and command. Everything
is read from the trial workdirs (metrics.jsonl, run_status.json, trial.json), so
`ann sweep --summarize=DIR` rebuilds it at any time, also after a cluster run.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import itertools
import json
import math
import os
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from ann import atomic, cli, directory_kind
from ann import config as config_lib
from ann.config import NOT_A_METRIC_OF_THIS_RUN, meant_metric
from ann.sweep import space
from ann.sweep import trials as trials_lib
from ann.sweep.space import SweepError
from ann.train.writers import MetricsFileError, read_records

SWEEP_FILE = "sweep.json"
ORDER = {"done": 0, "unknown": 1, "pruned": 2, "running": 3, "interrupted": 4, "lost": 5,
         "pending": 6, "failed": 7}  # fmt: skip


def write_sweep_file(sweep_dir: str, info: dict[str, Any]) -> None:
    """Writes sweep.json (`sweep_info`: its data_dir is the one `definition.settle_data_dir`
    chose, a resumed sweep's recorded one while it holds the data set)."""
    os.makedirs(sweep_dir, exist_ok=True)
    atomic.write_text(os.path.join(sweep_dir, SWEEP_FILE), json.dumps(info, indent=2) + "\n")


def check_same_sweep(
    sweep_dir: str,
    search: str,
    fixed: Mapping[str, Any] | None = None,
    objective: tuple[str, str] | None = None,
    config: str | None = None,
) -> None:
    """Raises SweepError when `sweep_dir` holds another sweep: of another `config` (the
    `--config` argument; None: not compared) once a trial trained under sweep.json's
    (`other_config`: another file, or variant, than the one it ran; the trials' own configs are
    compared by `check_trial_configs`); of the other kind (sweep.json's
    `search`: a grid run into a TPE study's workdir rewrote sweep.json, and results.md then
    listed only its own trials), with other fixed `--config.KEY=VALUE` overrides (`fixed`;
    None: not compared) once a trial ran under the old ones past its start (`_trained_any`:
    scored, running, or a checkpoint saved), as resuming would report it, or go on from it,
    under settings it never had (a sweep whose every trial failed at its start, a fixed
    override the cause, takes the fix: `changed_fixed`); or with another (metric, mode) `objective`
    (None: not compared): its trials were ranked (a study's also pruned and its draws chosen)
    on the first (a resume with --metric=val/loss rewrote sweep.json and ranked by it, without
    a word), unless no trial was scored on it (none done or pruned: a mistyped --metric, whose
    every trial failed on it, is corrected by running the sweep again with the right one). A
    damaged sweep.json (`damaged_sweep_file`), or one deleted beside its trials
    (`lost_sweep_file`), is warned about: nothing is compared with it (a TPE study's kind
    aside). One that is no file (a directory) is refused: the run could not replace it."""
    if (why := not_a_file(sweep_dir)) is not None:  # the run would fail to replace it
        path = os.path.join(sweep_dir, SWEEP_FILE)
        raise SweepError(f"{path} {why}: damaged; {_aside(sweep_dir)} and rerun this command")
    lost = lost_sweep_file(sweep_dir)
    if (why := damaged_sweep_file(sweep_dir, whole=False) or lost) is not None:
        # Its search kind is still known from the study's database: a grid run into a TPE
        # sweep whose sweep.json was damaged rewrote it as a grid's and dropped the study's
        # trials from the results.
        if search != "tpe" and os.path.isfile(os.path.join(sweep_dir, "study.db")):
            raise SweepError(
                f"--workdir={sweep_dir} holds a tpe sweep (its study.db; its sweep.json {why}); "
                "resume it with --search=tpe, or give this one a new --workdir"
            )
        # It was rewritten without a word, the checks below skipped (each reads what it finds).
        cli.warn(
            f"{os.path.join(sweep_dir, SWEEP_FILE)} {why}: {'deleted' if lost else 'damaged'}, "
            "so this command is not checked against the sweep's --search, --metric and --mode "
            "(each trial's config still is); a run of it rewrites the file with this command's"
        )
        return
    try:
        with open(os.path.join(sweep_dir, SWEEP_FILE)) as f:
            info = json.load(f)
        found, had = info.get("search"), info.get("fixed", {})
    except (OSError, ValueError, AttributeError):
        return  # a new workdir
    before = (info.get("metric"), info.get("mode"))
    changed = objective is not None and None not in before and tuple(before) != tuple(objective)
    if changed and _scored_any(sweep_dir, info):
        how = "pruned, ranked and drawn" if found == "tpe" else "ranked"
        raise SweepError(
            f"--workdir={sweep_dir} holds a sweep ranked by {before[0]} ({before[1]}), not "
            f"{objective[0]} ({objective[1]}): its trials were {how} on it; resume "
            f"it with --metric={before[0]} --mode={before[1]}, read the other metrics in its "
            "results.csv, or give this one a new --workdir"
        )
    if found and found != search:
        raise SweepError(
            f"--workdir={sweep_dir} holds a {found} sweep; resume it with --search={found}, "
            "or give this one a new --workdir"
        )
    recorded = info.get("config")
    if config is not None and isinstance(recorded, str) and recorded:
        # Its file as the sweep gave it, from where the sweep started (sweep.json's cwd).
        file, colon, arg = recorded.partition(":")
        at = os.path.join(info.get("cwd") or "", file) + colon + arg
        shown = recorded if os.path.abspath(info.get("cwd") or "") == os.getcwd() else at
        if other_config(at, config) and (blocking := _trained_any(sweep_dir, info)):
            raise SweepError(
                f"--workdir={sweep_dir} holds a sweep run with --config={shown} (this command: "
                f"--config={config}): its trial {blocking} with it, so results would mix "
                f"configs; give this one a new --workdir, or resume it with --config={shown}"
            )
    if fixed is None or not isinstance(had, dict):
        return
    changes = fixed_changes(had, fixed)
    blocking = _trained_any(sweep_dir, info) if changes else None
    if blocking:
        given = {k: trials_lib.cli_value(v) for k, v in fixed.items()}

        def flags(values: Mapping[str, Any]) -> str:
            return " ".join(f"--config.{k}={v}" for k, v in sorted(values.items()))

        ran = f"fixed overrides {flags(had)}" if had else "no fixed overrides"
        now = flags(given) or "none"
        # "with fixed overrides none" read as a key named none (trial 48b).
        raise SweepError(
            f"--workdir={sweep_dir} holds a sweep run with {ran} (this command: {now}): its "
            f"trial {blocking} {'with those' if had else 'without any'}, so results would mix "
            "settings; give this one a new --workdir, or resume it with the same flags"
        )


def other_config(recorded: str, given: str) -> bool:
    """Whether the `--config` argument `given` names another config than `recorded` (sweep.json's,
    its file's path from here): another `:ARG` variant, or another file with other contents. A
    file that is no longer where the sweep recorded it (moved or renamed) is not told apart
    here: each trial's record is compared with the config the sweep now gives it
    (`check_trial_configs`). A copy with the same contents is the same config."""
    (file_a, _, arg_a), (file_b, _, arg_b) = recorded.partition(":"), given.partition(":")
    if arg_a != arg_b:
        return True
    if config_lib.same_config_flag(file_a, file_b) or not os.path.isfile(file_a):
        return False
    try:
        with open(file_a, "rb") as a, open(file_b, "rb") as b:
            return a.read() != b.read()
    except OSError:
        return True


def fixed_changes(had: Mapping[str, Any], fixed: Mapping[str, Any]) -> dict[str, tuple]:
    """{key: (recorded value or None, this command's or None)} for each fixed
    `--config.KEY=VALUE` that differs from sweep.json's `had`."""
    given = {k: trials_lib.cli_value(v) for k, v in fixed.items()}
    return {
        k: (had.get(k), given.get(k)) for k in sorted({*had, *given}) if had.get(k) != given.get(k)
    }


def changed_fixed(sweep_dir: str, fixed: Mapping[str, Any]) -> dict[str, tuple]:
    """`fixed_changes` against the sweep in `sweep_dir` ({} for a new one): a resume
    `check_same_sweep` let through with another fixed override, its trials never having trained
    under the old one, whose failed trials then run again with the new value."""
    try:
        with open(os.path.join(sweep_dir, SWEEP_FILE)) as f:
            had = json.load(f).get("fixed", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return fixed_changes(had, fixed) if isinstance(had, dict) else {}


def changes_words(changes: Mapping[str, tuple]) -> str:
    """`--config.K changed from A to B` for each change (an absent side: `unset`)."""
    return ", ".join(
        f"--config.{k} changed from {'unset' if a is None else a} to {'unset' if b is None else b}"
        for k, (a, b) in changes.items()
    )


def rerun_line(changes: Mapping[str, tuple], sweep: str, n: int, aside: str = "") -> str:
    """The line a resume with `changes` (`changed_fixed`) logs: what changed, and that its `n`
    failed trials rerun with it (`aside`: what a study adds about them)."""
    value, new = ("values", "new ones") if len(changes) > 1 else ("value", "new one")
    rerun = (
        f"its {trials_lib.n_of(n, 'failed trial')} {'are' if n != 1 else 'is'} rerun with the "
        f"{new}{aside}"
        if n
        else f"its trials run with the {new}"
    )
    return (
        f"{changes_words(changes)} since this {sweep} last ran, and no trial of it trained with "
        f"the old {value}: {rerun}"
    )


def _trained_any(sweep_dir: str, info: Mapping[str, Any]) -> str | None:
    """The first trial of the sweep that ran under its settings past its start, in words
    (`NAME was scored`, `NAME is running`, `NAME saved a checkpoint`), or None where every
    one failed or was stopped before saving a step, or never started: such a sweep may take
    another fixed override, its failed trials rerun with it (a resumed trial would go on from
    a step trained with the old one)."""
    trials = info.get("trials") or []
    for name in [t.get("name") for t in trials if isinstance(t, dict)]:
        if not isinstance(name, str):
            continue
        if (trained := _trained(name, os.path.join(sweep_dir, name))) is not None:
            return trained
    return None


def _trained(name: str, workdir: str) -> str | None:
    """How trial `name` ran past its start, in words (`_trained_any`), else None."""
    status = trials_lib.status(workdir)[0]
    if status in trials_lib.FINISHED:  # unknown (exited 0): by its checkpoints, below
        return f"{name} was scored ({status})"
    if status == "running":
        return f"{name} is running"
    if trials_lib.has_checkpoint(workdir):
        return f"{name} saved a checkpoint"
    return None


# Keys in which a trial's record (config.json) may differ from the config the sweep gives it
# now, the same trial still: where it reads its data, which the sweep settles and records
# itself (`definition.settle_data_dir`; resumed from another directory, a relative one is
# given absolute).
SAME_TRIAL_MAY_DIFFER = ("data.data_dir",)
_LISTED_CHANGES = 6  # keys named in a refusal; the rest counted


def check_trial_configs(sweep_dir: str, trials: Iterable[tuple[Any, str]]) -> set[str]:
    """Compares each trial's record (its workdir's config.json, as `ann train` compares a
    rerun's config with it) with the config JSON the sweep gives it now (`trials`: (Trial,
    JSON) pairs): another config file, or the same one edited (get_config or get_sweep), gave
    the trial another config, and the sweep skipped it as done and ranked another model's
    result as its own. Raises SweepError, naming the trial, the keys that differ and the fix (a
    new --workdir), for a trial that trained under its record (scored, running or a checkpoint
    saved: `_trained`); returns the names of trials that failed before training under another
    config (they run again, with this one's). A trial without a readable record is not
    compared (never started, or damaged: the run's start says so)."""
    refit = set()
    for trial, config_json in trials:
        try:
            saved = config_lib.read(trial.workdir)
        except (OSError, config_lib.ConfigError):
            continue
        now = config_lib.from_values(json.loads(config_json))
        changes = {
            k: v
            for k, v in config_lib.diff(saved, now).items()
            if not any(k == m or k.startswith(m + ".") for m in SAME_TRIAL_MAY_DIFFER)
        }
        if not changes:
            continue
        trained = _trained(trial.name, trial.workdir)
        if trained is None:
            refit.add(trial.name)
            continue
        listed = "; ".join(
            f"{k}: {old!r} -> {new!r}" for k, (old, new) in list(changes.items())[:_LISTED_CHANGES]
        )
        if len(changes) > _LISTED_CHANGES:
            listed += f"; {len(changes) - _LISTED_CHANGES} more"
        ran = config_lib.recorded_config_flag(trial.workdir)
        raise SweepError(
            f"--workdir={sweep_dir}: its trial {trained} with another config than this sweep "
            f"gives it ({listed}), so results would report another run as this one's; give "
            "this sweep a new --workdir, or resume it with the config and flags it ran with"
            + (f" (--config={ran})" if ran else "")
        )
    return refit


def listed(sweep_dir: str) -> list[dict[str, Any]]:
    """The trials sweep.json lists (`sweep_info`: name and overrides each; [] for a new
    sweep or an unreadable sweep.json)."""
    try:
        with open(os.path.join(sweep_dir, SWEEP_FILE)) as f:
            found = json.load(f).get("trials")
    except (OSError, ValueError, AttributeError):
        return []
    return found if isinstance(found, list) else []


def trained_any(sweep_dir: str) -> str | None:
    """`_trained_any` of the sweep sweep.json describes in `sweep_dir` (None without one)."""
    try:
        return _trained_any(sweep_dir, read_sweep_file(sweep_dir))
    except (SweepError, ValueError):
        return None


def _scored_any(sweep_dir: str, info: Mapping[str, Any]) -> bool:
    """Whether a trial of the sweep was scored on its metric: done or pruned, or unknown
    (`trials.UNKNOWN`: exited 0, its run_status.json unreadable) with a value of it."""
    trials = info.get("trials") or []
    names = [t.get("name") for t in trials if isinstance(t, dict)]
    for name in names:
        if not isinstance(name, str):
            continue
        workdir = os.path.join(sweep_dir, name)
        status = trials_lib.status(workdir)[0]
        if status in trials_lib.FINISHED:
            return True
        if status == trials_lib.UNKNOWN and info.get("metric"):
            with contextlib.suppress(SweepError):  # a damaged metrics.jsonl: not scored
                if any(info["metric"] in r for r in evals(workdir)[0]):
                    return True
    return False


def recorded(sweep_dir: str, key: str) -> str | None:
    """What sweep.json recorded under `key` (`sweep_info`): `data_dir`, the absolute directory
    its trials read their data from, or `cwd`, the absolute directory the sweep started in.
    None for a new sweep, one recorded before ann kept it, or an unreadable sweep.json."""
    try:
        with open(os.path.join(sweep_dir, SWEEP_FILE)) as f:
            found = json.load(f).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, str) and found else None


# What every sweep.json holds (`sweep_info`), and what its readers take from it.
_RECORDED = {"config": str, "search": str, "metric": str, "mode": str, "trials": list}


def damaged_sweep_file(sweep_dir: str, whole: bool = True) -> str | None:
    """Why `sweep_dir`'s sweep.json, which exists, is not a sweep's record (not JSON: cut short
    or emptied outside ann, which replaces it atomically; not an object; `whole`: not with
    `_RECORDED`'s keys, trials each a name and overrides), or None: a record, or no file."""
    if (why := not_a_file(sweep_dir)) is not None:
        return why
    info, why = atomic.read_json(os.path.join(sweep_dir, SWEEP_FILE))
    if why is not None or info is None:
        return why
    if not isinstance(info, dict):
        return f"holds a JSON {type(info).__name__}, not a sweep's record"
    if not whole:
        return None
    for key, kind in _RECORDED.items():
        if not isinstance(info.get(key), kind):
            return f"holds no {key!r} ({'missing' if key not in info else 'of another type'})"
    if not all(
        isinstance(t, dict) and isinstance(t.get("name"), str)
        and isinstance(t.get("overrides"), dict)
        for t in info["trials"]
    ):  # fmt: skip
        return "lists a trial without its name and overrides"
    return None


def not_a_file(sweep_dir: str) -> str | None:
    """Why `sweep_dir`'s sweep.json is there but no file to read or replace ("is a directory,
    not a file"), or None: a file, or nothing there."""
    try:
        kind = atomic.file_kind(os.stat(os.path.join(sweep_dir, SWEEP_FILE)).st_mode)
    except OSError:
        return None
    return None if kind is None else f"is {kind}, not a file"


def _aside(sweep_dir: str) -> str:
    """How a sweep.json that is no file (`not_a_file`) is moved out of the way: a run of the
    sweep replaces the file whole, which it cannot do over a directory."""
    path = os.path.join(sweep_dir, SWEEP_FILE)
    return f"move it aside (mv {shlex.quote(path)} {shlex.quote(path + '.aside')})"


def trial_dirs(sweep_dir: str) -> list[str]:
    """The names of `sweep_dir`'s directories that hold a sweep trial's records (trial.json,
    command.sh), sorted: [] where there are none, or no such directory."""
    try:
        names = sorted(os.listdir(sweep_dir))
    except OSError:
        return []
    return [
        n
        for n in names
        if any(os.path.isfile(os.path.join(sweep_dir, n, f)) for f in (trials_lib.RECORD,
                                                                       "command.sh"))
    ]  # fmt: skip


def lost_sweep_file(sweep_dir: str) -> str | None:
    """Why `sweep_dir` is a sweep whose sweep.json is gone (deleted outside ann), or None: it
    is there, or the directory holds no trial's records (a new sweep's workdir)."""
    if os.path.lexists(os.path.join(sweep_dir, SWEEP_FILE)):
        return None
    found = trial_dirs(sweep_dir)
    if not found:
        return None
    shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
    return f"is missing, though its trials' workdirs are there ({shown})"


def _refix(sweep_dir: str) -> str:
    """The fix of a damaged or lost sweep.json: its sweep's command run again (`grid.run`,
    `Search.record_trials` and --emit each rewrite it; a trial's own files keep its results,
    and a finished trial is not run again); first, one that is no file moved aside."""
    tpe = os.path.isfile(os.path.join(sweep_dir, "study.db"))  # command.sh holds no --search
    aside = f"{_aside(sweep_dir)}, then " if not_a_file(sweep_dir) else ""
    return (
        f"{aside}rerun the ann sweep command that made it, with the same flags (a trial's "
        f"{os.path.join(sweep_dir, 'TRIAL', 'command.sh')} shows its --config and overrides"
        + ("; its study.db says --search=tpe" if tpe else "")
        + f"): it rewrites {SWEEP_FILE}, keeping the trials' results in their workdirs"
    )


def read_sweep_file(sweep_dir: str) -> dict[str, Any]:
    """sweep.json's record (`sweep_info`). Raises SweepError, one line naming the file and the
    fix: none there (what the directory holds instead), or a damaged one
    (`damaged_sweep_file`)."""
    path = os.path.join(sweep_dir, SWEEP_FILE)
    if (why := damaged_sweep_file(sweep_dir)) is not None:
        raise SweepError(f"{path} {why}: damaged; {_refix(sweep_dir)}")
    if (why := lost_sweep_file(sweep_dir)) is not None:  # it said "give the --workdir of an
        raise SweepError(f"{path} {why}: deleted; {_refix(sweep_dir)}")  # ann sweep": this is
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        held = cli.holds(sweep_dir)  # a training run, an export, a directory of runs
        if held is not None and not held.startswith("other runs"):
            fix = (
                f"; its metrics: ann report --workdir={sweep_dir}"
                if held.startswith(directory_kind.NAMES[directory_kind.RUN])
                else ""
            )
            raise SweepError(
                f"--summarize={sweep_dir} is {held}, not a sweep (no {SWEEP_FILE}): give the "
                f"--workdir of an ann sweep{fix}"
            ) from None
        if held is not None:
            raise SweepError(
                f"--summarize={sweep_dir} holds {held.removeprefix('other ')}, not a sweep (no "
                f"{SWEEP_FILE}): give the --workdir of an ann sweep"
            ) from None
        raise SweepError(
            f"{path} not found: --summarize takes a sweep workdir that ann sweep "
            "--workdir=... has written"
        ) from None


def _scored(key: str) -> bool:
    """A validation (`val/`) or reported (`eval/`, `eval_<split>/`) metric, not a timing."""
    return key.startswith(("val/", "eval")) and "seconds" not in key


def evals(workdir: str) -> tuple[list[dict], int]:
    """Eval records (validation and test metrics) from metrics.jsonl, and the last step. Raises
    SweepError naming the file and line of a damaged record (a torn last line is skipped)."""
    try:
        records = read_records(os.path.join(workdir, "metrics.jsonl"))
    except MetricsFileError as e:
        raise SweepError(str(e)) from None
    last = max((r["step"] for r in records), default=0)
    return [r for r in records if any(_scored(k) for k in r)], last


def best_of(records: list[dict], metric: str, mode: str) -> tuple[float | None, int | None]:
    values = [(r[metric], r["step"]) for r in records if isinstance(r.get(metric), int | float)]
    values = [(v, s) for v, s in values if math.isfinite(v)]
    if not values:
        return None, None
    pick = max if mode == "max" else min
    return pick(values, key=lambda vs: vs[0])


def check_metric(trial: Any, outcome: Any, metric: str) -> None:
    """Raises SweepError when a trial that ended shows the sweep's `metric` is not one of its
    runs' (a mistyped --metric): a finished trial that never logged it, or one its pruning
    listener failed on (`hooks.eval_metric`). Every trial would end the same way, so the sweep
    stops rather than training them all for nothing."""
    if outcome.status == "failed" and NOT_A_METRIC_OF_THIS_RUN in (outcome.error or ""):
        raise SweepError(f"trial {trial.name}: {outcome.error.removeprefix('error: ')}")
    if outcome.status != "done":
        return
    records, _ = evals(trial.workdir)
    if records and not any(metric in r for r in records):
        names = sorted({k for r in records for k in r if k.startswith("val/")})
        raise SweepError(
            f"--metric={metric} is not a validation metric of trial {trial.name}"
            f"{meant_metric(metric, names)}; choose one of {', '.join(names)}"
        )


def failed_on_the_metric(workdir: str) -> bool:
    """Whether the trial in `workdir` failed only because the sweep's --metric was not one of
    its metrics (`check_metric`): the sweep's mistake, so a corrected sweep runs it again."""
    return NOT_A_METRIC_OF_THIS_RUN in (trials_lib.read_record(workdir).get("error") or "")


def check_a_trial_finished(sweep_dir: str) -> None:
    """Raises SweepError (the command exits 1) when no trial of the sweep is done or pruned:
    every one failed or was refused, so there is no result to rank."""
    if not {row["status"] for row in collect(sweep_dir)[1]} & set(trials_lib.RANKED):
        raise SweepError(f"no trial of {sweep_dir} finished; see the error column of results.md")


def trial_row(
    sweep_dir: str, name: str, overrides: dict, metric: str, mode: str, cwd: str | None = None
) -> dict:
    """The results' row of trial `name`. `cwd`: where the sweep ran (sweep.json's), which its
    command's relative paths are read from."""
    workdir = os.path.join(sweep_dir, name)
    status, details = trials_lib.status(workdir)
    records, last = evals(workdir)
    best, best_step = best_of(records, metric, mode)
    record, run = details["record"], details["run"]
    row: dict[str, Any] = {"trial": name, "status": status, **overrides}
    row[f"best {metric}"] = best
    row["best step"] = best_step
    at_best = next((r for r in records if r["step"] == best_step), {})
    for key in sorted(k for k in at_best if k.startswith("eval") and "seconds" not in k):
        row[f"{key} at best step"] = at_best[key]  # the test score of the chosen step
    final = records[-1] if records else {}
    for key in sorted(k for k in final if _scored(k)):
        row[f"final {key}"] = final[key]
    # A running trial's record holds its last checkpoint begun: metrics.jsonl, where it is.
    running = run.get("status") == "running"
    row["steps"] = run.get("step", last) if run and not running else (last or None)
    row["early stop"] = run.get("status") == "early_stopped"
    row["wall seconds"] = record.get("wall_seconds")
    if status != "running":  # over: an attempt killed before it recorded its end counts too
        lost = trials_lib.unrecorded_seconds(workdir, record)
        if lost:
            row["wall seconds"] = round((row["wall seconds"] or 0.0) + lost, 2)
    row["error"] = details.get("error", "")
    row["command"] = _moved(record.get("command") or _command(workdir), workdir, cwd)
    return row


def _moved(command: str, workdir: str, cwd: str | None) -> str:
    """`command`, a trial's recorded re-run line (trial.json, command.sh), with its `--workdir`
    made `workdir`'s absolute path where the trial is no longer where the line says: its sweep
    was moved (`mv sweeps/a sweeps/b`). The results' line named the old directory, and pasted,
    it started a new run there instead of resuming the trial. A relative --workdir is read
    from the line's own `cd DIR` (`Trial.standalone`), else from `cwd` (sweep.json's; None:
    not known, and the line is left as it is)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    if len(words) > 2 and words[0] == "cd" and words[2] == "&&":
        cwd = words[1]
    given = next((w for w in words if w.startswith("--workdir=")), None)
    if given is None or cwd is None:
        return command
    old = os.path.join(cwd, given.removeprefix("--workdir="))
    if os.path.realpath(old) == os.path.realpath(workdir):
        return command
    return command.replace(shlex.quote(given), shlex.quote(f"--workdir={os.path.abspath(workdir)}"))


def _command(workdir: str) -> str:
    try:
        with open(os.path.join(workdir, "command.sh")) as f:
            line = f.read().strip().splitlines()[-1].removesuffix(' "$@"')
    except (OSError, IndexError):
        return ""
    # `cd DIR && exec ...` (`Trial.standalone`), or a sweep's before it: `exec ...`
    return line.replace(" && exec ", " && ", 1).removeprefix("exec ")


def collect(sweep_dir: str) -> tuple[dict[str, Any], list[dict]]:
    info = read_sweep_file(sweep_dir)
    rows = [
        trial_row(
            sweep_dir, t["name"], t["overrides"], info["metric"], info["mode"], info.get("cwd")
        )
        for t in info["trials"]
    ]
    return info, rows


LAST_COLUMNS = ("steps", "early stop", "wall seconds", "error", "command")


def _columns(rows: list[dict]) -> list[str]:
    """Every row's keys, in the order `trial_row` makes them whatever row has which: a failed
    first trial (no test score, no final metrics) put those columns after its error."""
    seen = dict.fromkeys(k for row in rows for k in row)
    return [k for k in seen if k not in LAST_COLUMNS] + [k for k in LAST_COLUMNS if k in seen]


def ranked_finished(rows: list[dict], metric: str) -> list[dict]:
    """The rows, in their order, of trials that finished (`trials.RANKED`: done, pruned, or
    unknown: exited 0, its run_status.json unreadable) with a value of `metric`: those the
    sweep chooses among. A failed, interrupted or running trial's value is of a run cut short
    (a sweep whose every trial failed named one of them `Best:`, whose step had no checkpoint,
    then said no trial finished)."""
    return [r for r in rows if r["status"] in trials_lib.RANKED and r[f"best {metric}"] is not None]


def _sorted(rows: list[dict], metric: str, mode: str) -> list[dict]:
    sign = -1 if mode == "max" else 1

    def key(row):
        value = row[f"best {metric}"]
        # An unknown trial (exited 0) ranks with the done ones: it read `failed`, and the best
        # line named a worse trial.
        status = "done" if row["status"] == trials_lib.UNKNOWN else row["status"]
        return (
            ORDER.get(status, 9),
            value is None,
            sign * value if value is not None else 0,
        )

    return sorted(rows, key=key)


def _cell(value: Any, column: str = "") -> str:
    if value is None or value is False:
        return ""
    if value is True:
        return "yes"
    if column == "wall seconds":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
    if isinstance(value, str) and len(value) > 8 and _number(value) is not None:
        return f"{_number(value):.4g}"  # a drawn value (TPE): 0.0007035737028722148 widened it
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 120 else text[:117] + "..."


def markdown(
    sweep_dir: str, info: dict, rows: list[dict], plot: str | None, here: str | None = None
) -> str:
    """results.md's text. `here`: the terminal's directory, for the printed copy (--summarize
    from another directory): its re-run command is led by `cd SWEEP_CWD &&`, as its paths
    are relative to where the sweep ran; the file (None) says that directory instead."""
    metric, mode = info["metric"], info["mode"]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda x: ORDER[x[0]]))
    trials = trials_lib.n_of(len(rows), "trial")
    lines = [
        f"# Sweep {sweep_dir}",
        "",
        f"`{info['config']}`, {info['search']} search, {trials}: {tally or 'none'}. "
        f"Metric: {metric} ({mode}). Sorted best first.",
        "",
    ]
    # The ranking and what it rests on; every other metric (each eval split's at the best step,
    # all at the end) is in results.csv: a table of them all ran to 28 columns.
    swept = {k for t in info["trials"] for k in t["overrides"]}
    name = metric.split("/", 1)[-1]
    essential = {f"best {metric}", "best step", f"eval/{name} at best step", "steps"}
    essential |= {"trial", "status", "early stop", "wall seconds", "error"} | swept
    shown = [c for c in _columns(rows) if c in essential]
    lines.append("| # | " + " | ".join(shown) + " |")
    lines.append("|---|" + "---|" * len(shown))
    ranked = _sorted(rows, metric, mode)
    for i, row in enumerate(ranked, 1):
        lines.append(f"| {i} | " + " | ".join(_cell(row.get(c), c) for c in shown) + " |")
    top = next(iter(ranked_finished(ranked, metric)), None)
    if top:
        command, cwd = top["command"], info.get("cwd")  # (no cwd: a sweep.json before it)
        # A command recorded before `Trial.standalone` has no `cd` of its own.
        relative = cwd and not command.startswith("cd ")
        if relative and here is not None and os.path.realpath(here) != os.path.realpath(cwd):
            command = f"cd {shlex.quote(cwd)} && {command}"
        lines += [
            "",
            f"Best: `{top['trial']}`, {metric} {top[f'best {metric}']:.4f} at step "
            f"{top['best step']}. Re-run it alone:",
            "",
            f"    {command}",
        ]
        if relative and here is None:
            lines += ["", f"(from {cwd}, where the sweep ran: its paths are relative to it)"]
    lines += ["", "Every metric, at each trial's best step and at its end: results.csv."]
    if plot:
        lines += [
            "",
            f"![{metric} (validation, ranked) and the test score at its step, against each swept "
            f"key]({os.path.basename(plot)})",
        ]
    return "\n".join(lines) + "\n"


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def log_axis(values: list[float]) -> bool:
    """Whether swept values span a decade or more (all positive): learning rates and weight
    decays are swept by factors (1e-4, 3e-4, 1e-3), and a linear axis crowds them at one end.
    What results.png goes by for a sweep.json that records no `log_keys` (written before it)."""
    return space.spans_decades(values)


def _log_scaled(info: Mapping[str, Any], key: str, xs: list[float]) -> bool:
    """Whether results.png draws `key` on a log axis: as the sweep declared it (sweep.json's
    `log_keys`, `space.log_keys`: a log-uniform draw, or listed values spanning a decade), else
    by the values drawn (`log_axis`: a log-uniform learning rate whose draws spanned less than
    a decade got a linear axis, a uniform one spanning a decade a log axis)."""
    if min(xs) <= 0:
        return False
    declared = info.get("log_keys")
    return key in declared if isinstance(declared, list) else log_axis(xs)


def plot(sweep_dir: str, info: dict, rows: list[dict]) -> str | None:
    """Writes `results.png` (see `figure`) and returns its path; None if there is nothing to
    plot (no trial finished): an earlier results.png is then removed."""
    fig = figure(info, rows)
    path = os.path.join(sweep_dir, "results.png")
    if fig is None:  # an earlier one is out of date (it starred a trial since failed)
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return None
    with atomic.replacing(path, "wb") as f:  # a reader never sees half a picture
        fig.savefig(f, format="png", dpi=100)
    return path


def figure(info: dict, rows: list[dict]) -> Any:
    """A matplotlib Figure: each trial's best validation value of the sweep's metric (what ranks
    the trials; filled markers) and its test value at that step (`eval/...`, reported only;
    hollow markers), against each swept key, the chosen trial starred, trials at the same point
    counted ("×3", validation and test alike). A grid's values (up to 8) are its ticks, on a
    linear axis too; drawn values (random, TPE) get the axis's own. None if there is nothing to
    plot yet."""
    metric, mode = info["metric"], info["mode"]
    name = metric.split("/", 1)[-1]
    test = f"eval/{name} at best step"  # the first eval split's, as trial_row records it
    keys = [k for k in dict.fromkeys(k for t in info["trials"] for k in t["overrides"])]
    keys = [k for k in keys if len({str(r.get(k)) for r in rows}) > 1]
    points = ranked_finished(rows, metric)  # only those drawn: a failed one was starred chosen
    if not keys or not points:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    chosen = _sorted(points, metric, mode)[0]
    cols = min(len(keys), 3)
    nrows = math.ceil(len(keys) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    failed = sum(r.get("status") == "failed" for r in rows)
    fig.suptitle(
        f"Ranked on {metric} (validation split, {'higher' if mode == 'max' else 'lower'} is "
        f"better)\neval/{name} (test) at that step: reported, never ranked on"
        # Left out without a word, a failed trial's value read as never tried.
        + (f"\n{trials_lib.n_of(failed, 'failed trial')} not drawn (results.md has why)"
           if failed else ""),
        fontsize=8,
    )  # fmt: skip
    for i, key in enumerate(keys):
        ax = fig.add_subplot(nrows, cols, i + 1)
        xs = [_number(r.get(key)) for r in points]
        numeric = all(x is not None for x in xs)
        if not numeric:
            labels = list(dict.fromkeys(str(r.get(key)) for r in points))
            xs = [labels.index(str(r.get(key))) for r in points]
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
        elif _log_scaled(info, key, xs):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # 3x10^-4, 4x10^-4, ... overlapped
            # A grid's values, as the config wrote them; drawn ones (0.000160, 0.000258, ...)
            # ran together as labels.
            if info.get("search") == "grid" and _fit_as_ticks(xs, log=True):
                ax.set_xticks(sorted(set(xs)), [f"{x:g}" for x in sorted(set(xs))], fontsize=8)
            else:  # 1, 2 and 5 per decade, as plain numbers: a decade and a half had one tick
                # (over more than 2 decades, 1 per decade: 1, 2, 5 ran together)
                ax.xaxis.set_major_locator(_log_locator(xs))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
                ax.tick_params(axis="x", labelsize=8)
        elif info.get("search") == "grid" and _fit_as_ticks(xs, log=False):  # as written
            ax.set_xticks(sorted(set(xs)), [f"{x:g}" for x in sorted(set(xs))], fontsize=8)
        else:  # at most 5 ticks: 0.0007 to 0.0013 in steps of 0.0001 ran together
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
            ax.tick_params(axis="x", labelsize=8)
        ax.margins(x=0.12)  # no marker or tick label at the edge
        for status, style in (("done", "o"), ("unknown", "o"), ("pruned", "x")):
            sel = [(x, r) for x, r in zip(xs, points) if r["status"] == status]
            if not sel:
                continue
            val = [(x, r[f"best {metric}"]) for x, r in sel]
            ax.scatter(*zip(*val), marker=style, color="C0", label=f"validation ({status})")
            _count_ties(ax, val, "C0", right=True)
            tested = [(x, r[test]) for x, r in sel if isinstance(r.get(test), int | float)]
            if tested:
                # A hollow circle; an "x" has no face, only its colour (an edge colour warned).
                look = {"facecolors": "none", "edgecolors": "C1"} if style == "o" else {}
                ax.scatter(
                    *zip(*tested), marker=style, color="C1", label=f"test ({status})", **look
                )
                _count_ties(ax, tested, "C1", right=False)
        x = xs[points.index(chosen)]
        # An outline: a filled star hid the chosen trial's own test marker when the two were close.
        ax.scatter([x], [chosen[f"best {metric}"]], marker="*", s=320, facecolors="none",
                   edgecolors="C3", linewidths=1.4, zorder=3,
                   label="chosen (best validation)")  # fmt: skip
        ax.set_xlabel(key)
        ax.set_ylabel(f"{name} at the trial's best step")
        ax.grid(alpha=0.3)
    # One legend under the panels, off the points (in the first panel it covered some).
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 2 * cols),
               fontsize=7)  # fmt: skip
    return fig


def _log_locator(xs: list[float]) -> Any:
    """A log axis's tick locator for values `xs`: 1 per decade over more than 2 decades, else
    1, 2 and 5 per decade, or, where those give fewer than 2 ticks among the values (a
    log-uniform draw's values within a decade, 0.0007 to 0.0013, had the one tick 0.001), at
    most 5 evenly spaced plain numbers, as a linear axis of the range has."""
    from matplotlib.ticker import LogLocator, MaxNLocator

    low, high = min(xs), max(xs)
    if math.log10(high / low) > 2:
        return LogLocator(subs=(1,))
    # Counted here, not from LogLocator.tick_values: where fewer than 2 of its ticks fit,
    # matplotlib (3.11) answers with linear ones (0.0012 to 0.0028 in steps of 0.0002, nine
    # labels running together), which passed for log ticks.
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    if sum(low <= m * 10.0**d <= high for d in decades for m in (1, 2, 5)) >= 2:
        return LogLocator(subs=(1, 2, 5))
    return MaxNLocator(nbins=4)


TICK_CHARS = 35  # tick-label characters (fontsize 8) across a panel's data range


def _fit_as_ticks(xs: list[float], log: bool) -> bool:
    """Whether a grid's values (at most 8) can each be a tick label without two running
    together: neighbours at least half their labels' widths and a character apart, on the
    axis's scale. A grid of drawn values (`h.random` inside a product) had 0.0006937 and
    0.001053 written over each other; such a grid gets the axis's own ticks."""
    values = sorted(set(xs))
    if len(values) > 8:
        return False
    if len(values) < 2:
        return True
    at = [math.log10(v) for v in values] if log else values
    span = at[-1] - at[0]
    for (a, b), (pa, pb) in zip(itertools.pairwise(values), itertools.pairwise(at)):
        need = (len(f"{a:g}") + len(f"{b:g}")) / 2 + 1
        if (pb - pa) / span * TICK_CHARS < need:
            return False
    return True


def _count_ties(ax: Any, points: list[tuple[float, float]], color: str, right: bool) -> None:
    """ "×n" beside a point that n trials share: one marker would hide the others. Validation's
    counts sit right of their point, test's left: at one x the two were drawn over each other
    (validation's above its point, test's below, met where test's value was the higher)."""
    for (x, y), count in collections.Counter(points).items():
        if count > 1:
            ax.annotate(f"×{count}", (x, y), xytext=(6, -3) if right else (-6, -3),
                        ha="left" if right else "right", textcoords="offset points",
                        fontsize=7, color=color)  # fmt: skip


def write(sweep_dir: str, with_plot: bool = True) -> str:
    """Rewrites results.csv, results.md (and results.png); returns results.md's text for the
    terminal, without its picture link. A Ctrl-C or SIGTERM while it writes is raised once all
    are written: between two, results.md named another table than results.csv."""
    with cli.interrupts_deferred():
        return _write(sweep_dir, with_plot)


def _write(sweep_dir: str, with_plot: bool) -> str:
    info, rows = collect(sweep_dir)
    columns = _columns(rows)
    with atomic.replacing(os.path.join(sweep_dir, "results.csv"), newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(
            {c: "" if row.get(c) is None else row.get(c) for c in columns} for row in rows
        )
    png = os.path.join(sweep_dir, "results.png")
    picture = plot(sweep_dir, info, rows) if with_plot else (png if os.path.exists(png) else None)
    text = markdown(sweep_dir, info, rows, picture)
    atomic.write_text(os.path.join(sweep_dir, "results.md"), text)
    return markdown(sweep_dir, info, rows, None, here=os.getcwd())


def sweep_info(definition: Any, search: str, metric: str, mode: str, trials: list) -> dict:
    """What sweep.json records: enough for --summarize and --emit to work from the workdir,
    and where its trials read their data (`definition.settle_data_dir`)."""
    return {
        "config": definition.config,
        "data_dir": definition.data_dir,
        "fixed": {k: trials_lib.cli_value(v) for k, v in definition.fixed.items()},
        "search": search,
        "metric": metric,
        "mode": mode,
        "log_keys": space.log_keys(definition.node),  # results.png's log axes
        "cwd": os.getcwd(),
        "trials": [
            {
                "name": t.name,
                "overrides": {k: trials_lib.cli_value(v) for k, v in t.overrides.items()},
            }
            for t in trials
        ],
    }
