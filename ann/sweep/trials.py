"""A trial: one `ann train` run of the sweep's config with some keys overridden.

Its workdir is named after its overrides (`learning_rate=0.003,features=128-128`), and holds,
beside what `ann.main` writes there:

    command.sh    the command that re-runs (or resumes) this trial alone (`Trial.standalone`)
    config.json   the resolved config (ann.main rewrites it when it starts)
    trial.json    what the launcher recorded: attempts, cores, exit status, error, wall time
    stdout.log, stderr.log

Its status is derived from those files (see `status`), so a sweep resumed later, or run by
SLURM or Kubernetes, reads the same way.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import re
import shlex
import signal
import socket
import sys
import time
from typing import Any

from ann import atomic, cli
from ann import config as config_lib
from ann.sweep.space import Overrides
from ann.train import run_status

RECORD = "trial.json"
DATA_DIR_ENV = "TFDS_DATA_DIR"  # what a config's data.data_dir "" resolves to (ann.data.sources)
MAX_NAME = 80
FINISHED = ("done", "pruned")  # a resumed sweep does not run these again
# A trial whose launcher recorded exit status 0 (`ann train` gives it only once its run ended:
# done, early stopped or pruned) but whose run_status.json cannot be read (damaged or deleted
# outside ann): not known to have failed. Its metrics.jsonl is whole, so it is ranked with the
# done trials; a resumed sweep does not run it again (an early-stopped run would train on).
UNKNOWN = "unknown"
RANKED = (*FINISHED, UNKNOWN)  # the trials `results` chooses the best among
# `ann.__main__.main` without the working directory first on sys.path: `python -m ann.main`
# put it there, and a directory named `ann` in it (the parent of a clone) shadowed the
# installed package in every trial. `-P` does the same only from Python 3.11. The guard: with
# PYTHONSAFEPATH set, sys.path[0] is a real entry.
_ANN_MAIN = (
    "import sys\n"
    "if sys.path and sys.path[0] == '':\n"
    "    del sys.path[0]\n"
    "from ann.__main__ import main\n"
    "main()"
)

# What a line a person pastes runs (`Trial.standalone`): `ann train` in the interpreter the
# sweep ran in, as the launcher's trials do (`Trial.argv`). `ann` by name was not found in a
# fresh shell where the sweep's virtual environment was not activated (or found another
# install). `-P` (Python 3.11+) keeps the working directory, where the line `cd`s, off sys.path
# as the launcher's trials keep it (`_ANN_MAIN`).
PYTHON_ANN = [sys.executable, *(["-P"] if sys.version_info >= (3, 11) else []), "-m", "ann"]


def n_of(n: int, noun: str, plural: str = "") -> str:
    """`n` and `noun` agreeing: "1 trial", "2 trials" (`plural`, where not noun + "s")."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def cli_value(value: Any) -> str:
    """The text after `--config.KEY=` that ml_collections parses back to `value`."""
    if isinstance(value, bool | int | str):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple | list):
        return repr(tuple(value))
    return repr(value)


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple | list):
        return "-".join(_label(v) for v in value) or "none"
    return str(value)


def _digest(overrides: Overrides) -> str:
    text = json.dumps({k: cli_value(v) for k, v in overrides.items()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def names(rows: list[Overrides]) -> list[str]:
    """Short, filesystem-safe, unique workdir names, each a function of its own overrides
    (so a trial keeps its name when the sweep definition grows)."""
    keys = [k for row in rows for k in row]
    leaves = [k.rsplit(".", 1)[-1] for k in dict.fromkeys(keys)]
    # The last part of a key (learning_rate) unless two keys share it (model.x vs data.x).
    short = {
        k: k.rsplit(".", 1)[-1] if leaves.count(k.rsplit(".", 1)[-1]) == 1 else k for k in keys
    }
    out = []
    for row in rows:
        name = ",".join(f"{short[k]}={_label(v)}" for k, v in row.items()) or "base"
        name = re.sub(r"[^A-Za-z0-9._+=,-]+", "-", name)
        if len(name) > MAX_NAME:
            name = f"{name[: MAX_NAME - 9]}-{_digest(row)}"
        out.append(name)
    # Different values that print alike (0.30001 and 0.3 at 4 digits) get their digest added.
    # (Counted once: `out.count` per name took 1.8 s for 10,000 trials, quadratic.)
    counts = collections.Counter(out)
    return [
        f"{n}-{_digest(row)}" if counts[n] > 1 and len(n) <= MAX_NAME - 9 else n
        for n, row in zip(out, rows)
    ]


@dataclasses.dataclass
class Trial:
    name: str
    overrides: Overrides  # the swept keys
    fixed: Overrides  # --config.KEY=VALUE given to the sweep command: every trial gets them
    config: str  # configs/NAME.py[:ARG], as given to the sweep
    sweep_dir: str
    cwd: str  # where the sweep ran: relative paths in the command are relative to it
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # e.g. the pruning spec
    # Set: the absolute directory its relative data.data_dir means, where the sweep started
    # (`Definition.reading_data`); its command gives it in place of the relative one.
    data_dir: str = ""

    @property
    def workdir(self) -> str:
        return os.path.join(self.sweep_dir, self.name)

    def values(self) -> Overrides:
        """The config keys its command sets: the sweep's fixed ones, then its own, and its
        data.data_dir made absolute where `data_dir` is set."""
        values = {**self.fixed, **self.overrides}
        if self.data_dir:
            values["data.data_dir"] = self.data_dir
        return values

    def flags(self) -> list[str]:
        return [
            f"--config={self.config}",
            f"--workdir={self.workdir}",
            *(f"--config.{k}={cli_value(v)}" for k, v in self.values().items()),
        ]

    def argv(self) -> list[str]:
        """What the local launcher runs: `ann train` as the console script runs it, in this
        interpreter, so no environment is assumed."""
        return [sys.executable, "-c", _ANN_MAIN, "train", *self.flags()]

    def command(self, image: bool = False) -> str:
        """The same run as one line of a cluster script that has already gone to `cwd` and
        exported the sweep's PYTHONPATH: `ann train` in the sweep's own interpreter
        (`PYTHON_ANN`, as command.sh runs it: an sbatch task on a node whose shell has not the
        sweep's virtual environment on its PATH, or run with `--export=NONE`, failed with
        "env: 'ann': No such file or directory"), led by `env TFDS_DATA_DIR=DIR` where the
        trial reads the sweep's data directory by it (`Definition.reading_data`), whatever the
        shell's says. `image`: a pod's line, `ann train` by name, the container image's own
        install (this machine's interpreter path means nothing there). What a person pastes
        is `standalone`."""
        return shlex.join(self._words({}, ["ann"] if image else PYTHON_ANN))

    def standalone(self, script: bool = False) -> str:
        """The one line that re-runs (or resumes) this trial alone, pasted into a fresh shell
        in any directory: `cd CWD && env PYTHONPATH=... TFDS_DATA_DIR=DIR PYTHON -P -m ann
        train ...`, its relative paths read where the sweep ran, its modules (a user's
        experiment) on the sweep's PYTHONPATH, and ann the sweep's own (`PYTHON_ANN`: no
        activated environment needed). Every copy a person is shown renders it here:
        --dry_run's lines, command.sh, trial.json's `command` and results.md's "Re-run it
        alone:" line (each had its own near-copy, and two lacked the cd or the PYTHONPATH).
        `script`: command.sh's form, which `exec`s it (with a lone help flag, the only argument
        `refuse_arguments` lets through)."""
        entries = pythonpath(self.cwd)
        env = {"PYTHONPATH": os.pathsep.join(entries)} if entries else {}
        line = shlex.join(self._words(env, PYTHON_ANN))
        if script:
            line = f'exec {line} "$@"'
        return f"cd {shlex.quote(self.cwd)} && {line}"

    def _words(self, env: dict[str, str], ann: list[str]) -> list[str]:
        env = {**env, **{k: v for k, v in self.env.items() if k == DATA_DIR_ENV}}
        words = [*ann, "train", *self.flags()]
        return ["env", *(f"{k}={v}" for k, v in env.items()), *words] if env else words

    def write_files(self, config_json: str) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        atomic.write_text(config_lib.file_in(self.workdir), config_json + "\n")
        script = (
            "#!/usr/bin/env bash\n"
            f"# Trial {self.name} of the sweep in {self.sweep_dir}: runs (or resumes) it alone,\n"
            "# exactly as the sweep ran it. A variant (other flags) is another run: give the last\n"
            "# line your flags and a --workdir of its own.\n"
            f"{refuse_arguments(self.name)}"
            f"{refuse_moved(self.name, os.path.join(self.cwd, self.workdir))}"
            f"{self.standalone(script=True)}\n"
        )
        path = os.path.join(self.workdir, "command.sh")
        atomic.write_text(path, script)
        os.chmod(path, 0o755)


def refuse_arguments(name: str) -> str:
    """command.sh's guard: it took extra flags (`./command.sh --config.total_steps=5000`) and
    passed them on, so the trial's workdir held a run that results.csv and trial.json described
    as the sweep's, trained with settings nothing recorded. Any argument but a lone help flag
    (which trains nothing) is refused in one line saying how to run a variant; exit status 1,
    as ann's refusals."""
    message = (
        f"error: command.sh reruns trial {name} exactly as the sweep ran it (results.csv "
        "describes its workdir), so it takes no flags (got: $*); for a variant, run this "
        "script's last line with your flags added and a --workdir of its own"
    )
    return (
        'case "$*" in\n'
        '  ""|--help|--helpshort|--helpfull) ;;\n'
        f'  *) echo "{message}" >&2\n'
        "     exit 1 ;;\n"
        "esac\n"
    )


def refuse_moved(name: str, workdir: str) -> str:
    """command.sh's guard against its sweep having been moved or copied (`mv sweeps/a
    sweeps/b`): its line names the trial's workdir where the sweep wrote it (`workdir`,
    absolute), so run from the new place it started a new run at the old path (or went on
    with the original's), without a word. Refused in one line naming both places and where
    the line for the new one is (results.csv's command column, which --summarize rewrites
    from where the trial is: `results._moved`); exit status 1."""
    message = (
        f"error: command.sh reruns trial {name} in %s, where its sweep wrote it, but it is in "
        "%s now (the sweep was moved or copied); its line for here is in the command column of "
        "results.csv, which ann sweep --summarize=%s rewrites\\n"
    )
    old = shlex.quote(workdir)
    # Only where the script runs as a file (its $0): its text pasted into a shell (`bash -c
    # "$(cat command.sh)"`) has no place of its own.
    return (
        'if [ "${0##*/}" = command.sh ]; then\n'
        '  here=$(CDPATH= cd "$(dirname "$0")" && pwd -P)\n'
        f'  if [ "$here" != "$(CDPATH= cd {old} 2>/dev/null && pwd -P)" ]; then\n'
        f'    printf \'{message}\' {old} "$here" "$(dirname "$here")" >&2\n'
        "    exit 1\n"
        "  fi\n"
        "fi\n"
    )


def pythonpath(cwd: str) -> list[str]:
    """The sweep's own `$PYTHONPATH` entries (a user's model, experiment or config modules),
    made absolute from `cwd`, where the sweep runs: a command standing alone (command.sh, an
    sbatch script, a pod) without them failed in a fresh shell with "No module named ...".
    An empty entry (`PYTHONPATH=:`, or one ending in `:`) is the working directory, as Python
    reads it: it was dropped, so a sweep that imported a user's module that way printed
    commands that could not. An empty `$PYTHONPATH` adds nothing, as in Python."""
    value = os.environ.get("PYTHONPATH", "")
    if not value:
        return []
    entries = [os.path.normpath(os.path.join(cwd, p)) for p in value.split(os.pathsep)]
    return list(dict.fromkeys(entries))  # `:` is the working directory twice


def export_pythonpath(entries: list[str]) -> str:
    """The shell line that sets `$PYTHONPATH` to `entries` (nothing where there are none)."""
    return f"export PYTHONPATH={shlex.quote(os.pathsep.join(entries))}\n" if entries else ""


_WARNED: set[str] = set()  # damaged records warned about (a sweep reads each many times)


def read_record(workdir: str) -> dict[str, Any]:
    """The trial's launch record (trial.json: command, attempts, times, exit status), {} where
    there is none. One that is damaged (not a JSON object: cut short or edited outside ann,
    whose launchers replace it whole) reads as none, with a warning naming it, once a process:
    the trial's status then comes from its run's own files (run_status.json), and the sweep
    rewrites the record when it runs the trial again."""
    path = os.path.join(workdir, RECORD)
    try:
        with open(path) as f:
            record = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        record = e
    if isinstance(record, dict):
        return record
    if path not in _WARNED:
        _WARNED.add(path)
        why = (
            f"is not JSON ({record})" if isinstance(record, ValueError)
            else f"cannot be read ({record.strerror})" if isinstance(record, OSError)
            else "is not a JSON object"
        )  # fmt: skip
        cli.warn(
            f"{path} {why}: damaged, read as no launch record (its command, attempts and wall "
            "time; the trial's status is read from its run's run_status.json); delete it (the "
            "sweep writes a new one when it runs the trial)"
        )
    return {}


def update_record(workdir: str, **fields: Any) -> dict[str, Any]:
    record = {**read_record(workdir), **fields}
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    atomic.write_text(os.path.join(workdir, RECORD), text)
    return record


# An emitted launcher's attempt (`ann.sweep.emit`) touches this file every HEARTBEAT_SECONDS
# while it runs, and trial.json records the period (`heartbeat_seconds`); the file stops with
# the attempt, a pod or job killed whole included.
HEARTBEAT = "heartbeat"
HEARTBEAT_SECONDS = 60
# A heartbeat this many periods old (and no end recorded) is an attempt that is over: `lost`.
# Generous, as the machine that reads it (--summarize) may keep another clock than the file
# system's, and a busy node may run the loop late.
LOST_AFTER_BEATS = 5

# What a trial's attempt writes as it runs: the last write to one of them is its last sign of
# life (trial.json is left out: the launcher writes it at the start).
SIGNS_OF_LIFE = ("stdout.log", "stderr.log", "metrics.jsonl", "run_status.json", HEARTBEAT)


def unrecorded_seconds(workdir: str, record: dict[str, Any]) -> float:
    """Wall seconds of the last attempt where it started (`started_at`) and never recorded its
    end (`ended`): killed with whatever would record it (a sweep SIGKILLed or OOM-killed, so
    its trials stopped themselves; a pod or job killed whole on a cluster). Its time, from its
    start to its last write (`SIGNS_OF_LIFE`), went missing from `wall_seconds`. 0 where it
    recorded its end (or predates `started_at`). Call it once the attempt is over. The
    emitted scripts' `record_trial` (`ann.sweep.emit`) computes the same in a python3 that
    imports no ann; tests/test_sweep.py holds the two equal."""
    start = record.get("started_at")
    if not isinstance(start, int | float) or record.get("ended") is not None:
        return 0.0
    times = []
    for name in SIGNS_OF_LIFE:
        try:
            times.append(os.path.getmtime(os.path.join(workdir, name)))
        except OSError:
            pass
    return max(0.0, max(times, default=start) - start)


def has_checkpoint(workdir: str) -> bool:
    """Whether the trial's run saved a step (`ann.train.resume.has_checkpoint`, without
    importing JAX): a rerun goes on from it."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    return os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir))


def error_line(stderr: str, returncode: int | None) -> str:
    """The one line that says why a trial failed: ann's `error: ...` line, else the last line
    (a traceback's exception), else how the process died."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: ") :]
    if returncode is not None and returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return lines[-1] if lines else f"exited with status {returncode}"


def stderr_tail(workdir: str, size: int = 20000) -> str:
    try:
        with open(os.path.join(workdir, "stderr.log"), "rb") as f:
            f.seek(max(0, os.path.getsize(f.name) - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


_INTERRUPTED = (cli.EXIT_TERMINATED, cli.EXIT_INTERRUPTED)  # ann.main's saved stops


def status(workdir: str) -> tuple[str, dict[str, Any]]:
    """(status, details) of a trial from its files: done, pruned, failed, interrupted,
    lost (an emitted launcher's attempt whose heartbeat stopped without an end: `_lost`),
    running, unknown (`UNKNOWN`: exited 0, its run_status.json unreadable) or pending.
    `details` has the run status record and the launcher's record."""
    record = read_record(workdir)
    run = run_status.read(workdir) or {}
    returncode = record.get("returncode")
    details = {"record": record, "run": run}
    state = run.get("status")
    finished = state in ("done", *run_status.FINISHED_EARLY)
    if record.get("refused"):  # a drawn config that validation refused: never launched
        details["error"] = record["refused"]
        return "failed", details
    stopped = record.get("stopped_by_sweep")
    if stopped and not finished:
        return "interrupted", details
    # Saved and stopped by a signal from elsewhere (a cluster's SIGTERM, a Ctrl-C): `ann train`
    # exits 143 or 130 then, and the trial resumes; it read as failed.
    if state == "interrupted" and returncode in _INTERRUPTED:
        return "interrupted", details
    # Stopped so before `ann train` wrote a run_status.json: an emitted launcher's SIGTERM before
    # the trial started (its script records 143) or one while ann started. Nothing ran, and a
    # rerun runs it; it read as failed, `exited with status 143`.
    if state is None and returncode in _INTERRUPTED:
        return "interrupted", details
    # Stopped after it recorded its end (its last save done): the SIGTERM killed only its exit.
    if returncode not in (None, 0) and not stopped:
        details["error"] = record.get("error") or error_line(stderr_tail(workdir), returncode)
        return "failed", details
    if finished:
        return ("pruned" if state == "pruned" else "done"), details
    if state == "interrupted":
        return "interrupted", details
    if (record.get("started") and returncode is None) or state == "running":
        if _gone(record):  # its sweep was killed before it could record the end
            return "interrupted", details
        if (lost := _lost(workdir, record)) is not None:
            details["error"] = lost
            return "lost", details
        return "running", details
    if returncode == 0:
        # Damaged or deleted outside ann (it is replaced whole): the run exited 0, which ann
        # train does only once it ended, so it is not known to have failed (it read `failed`,
        # and the best line named a worse trial).
        why = run_status.unreadable(workdir) or "is missing"
        details["error"] = (
            f"{run_status.path(workdir)} {why}, so how the run ended (done, early stopped, "
            "pruned) is unknown; its metrics count"
        )
        return UNKNOWN, details
    if state in ("failed", "diverged"):  # its trial.json damaged (read as none): it read
        # `pending`, and a resume ran it again unasked (a failed trial is kept there)
        details["error"] = run.get("message") or f"{state} (its run_status.json says so)"
        return "failed", details
    return "pending", details


def _gone(record: dict[str, Any]) -> bool:
    """Whether the trial's process (recorded by the local launcher) no longer exists."""
    pid = record.get("pid")
    if not isinstance(pid, int) or record.get("host") != socket.gethostname():
        return False  # an emitted launcher's trial, or another machine's: not ours to say
    return not run_status.alive(pid)


def _lost(workdir: str, record: dict[str, Any]) -> str | None:
    """Why an emitted launcher's attempt with no recorded end is over (its heartbeat stopped
    `LOST_AFTER_BEATS` periods ago: a pod or job killed whole, by OOM, a time limit or a lost
    node, or a job suspended), or None where that cannot be told: a heartbeat still beating,
    or an attempt that keeps none (a local launcher's, whose pid `_gone` reads; one an older
    script started), which reads `running` as before."""
    beat = record.get("heartbeat_seconds")
    start = record.get("started_at")
    if not isinstance(beat, int | float) or beat <= 0 or record.get("ended") is not None:
        return None
    try:
        last = os.path.getmtime(os.path.join(workdir, HEARTBEAT))
    except OSError:
        last = start if isinstance(start, int | float) else None
    if last is None or time.time() - last < LOST_AFTER_BEATS * beat:
        return None
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last))
    return (
        f"its attempt's heartbeat stopped at {at} with no end recorded: killed whole (out of "
        "memory, a time limit, a lost node) or suspended; resubmit the sweep to resume it"
    )


def now() -> str:
    """UTC, ISO 8601 with its `Z`, as report.json and the manifests write time (it was local
    time without a zone)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
