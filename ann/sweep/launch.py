"""The local launcher: trial subprocesses, N at a time, each pinned to its own cores.

With `--parallel=N`, the cores this process may use are split into N disjoint sets and each
running trial is pinned to one (`sched_setaffinity` in the child before it starts Python), so N
trials do not oversubscribe the machine. XLA's CPU thread pool sizes itself from the affinity
mask (measured with jax 0.10: one `tf_XLAEigen` thread per allowed core), and the BLAS/OpenMP
variables below cap numpy's threads to match.

A failing trial is recorded (exit status and its error line in trial.json) and the others go
on, unless the first trials all failed alike (`fail_fast.py`: `on_end` then stops the sweep).
Ctrl-C sends SIGTERM to the running trials, which save a checkpoint and exit; the same sweep
command resumes them. A SIGTERM to the sweep does the same (`cli.sigterm_as_interrupt`): its
stop is raised where the sweep is, but never between a trial's start and its tracking, or
between a trial's end and its record (`cli.interrupts_deferred`), and raised again at the next
turn of the loop where code on the way dropped it (`cli.check_terminated`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from ann import atomic, cli
from ann.sweep import trials as trials_lib
from ann.sweep.space import SweepError
from ann.sweep.trials import Trial
from ann.train import launcher

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_sets(parallel: int) -> list[list[int]]:
    """`parallel` disjoint sets of the cores this process may use (shared round-robin only if
    there are fewer cores than trials)."""
    cpus = sorted(os.sched_getaffinity(0))
    if parallel > len(cpus):
        cli.warn(
            # `parallel` is what runs (--parallel capped at the trials left): not the flag.
            f"{parallel} trials at a time (--parallel) are more than the {len(cpus)} cores "
            "available: they will share cores"
        )
        return [[cpus[i % len(cpus)]] for i in range(parallel)]
    size, extra = divmod(len(cpus), parallel)
    sets, start = [], 0
    for i in range(parallel):
        end = start + size + (i < extra)
        sets.append(cpus[start:end])
        start = end
    return sets


@dataclasses.dataclass
class Outcome:
    status: str  # done, pruned, failed, interrupted
    returncode: int
    error: str | None
    seconds: float


@dataclasses.dataclass
class _Running:
    trial: Trial
    proc: subprocess.Popen
    start: float
    stderr_offset: int
    logs: list


def _start(trial: Trial, cpus: list[int]) -> _Running:
    workdir = trial.workdir
    os.makedirs(workdir, exist_ok=True)
    record = trials_lib.read_record(workdir)
    attempt = record.get("attempts", 0) + 1
    # The attempt before, killed with the sweep that would have recorded its end: its time.
    lost = trials_lib.unrecorded_seconds(workdir, record)
    credit = {"wall_seconds": round(record.get("wall_seconds", 0.0) + lost, 2)} if lost else {}
    trials_lib.update_record(  # one write: the credit cannot be given twice
        workdir,
        **credit,
        name=trial.name,
        command=trial.standalone(),  # results.md's re-run line, from any shell
        attempts=attempt,
        cpus=cpus,
        started=trials_lib.now(),
        started_at=time.time(),  # where an attempt that records no end ran from
        ended=None,
        returncode=None,
        error=None,
        stopped_by_sweep=False,
        heartbeat_seconds=None,  # keeps none: a cluster attempt's period is not this one's
    )
    header = f"=== attempt {attempt} at {trials_lib.now()} on cores {cpus}\n".encode()
    logs = []
    try:
        for name in ("stdout.log", "stderr.log"):
            path = os.path.join(workdir, name)
            logs.append(open(path, "ab"))  # noqa: SIM115 (the trial's, closed by _finish)
            with atomic.writing(path):  # a full disk's write names no file
                logs[-1].write(header)
                logs[-1].flush()
    except BaseException:
        for f in logs:
            with contextlib.suppress(OSError):  # its flush fails again: said above
                f.close()
        raise
    stdout, stderr = logs
    offset = stderr.tell()
    threads = str(len(cpus))
    env = {
        **os.environ,
        **dict.fromkeys(THREAD_VARS, threads),
        **trial.env,
        **launcher.environment(),  # a trial stops, saving, if this sweep is killed
    }
    # Pinned before the interpreter starts, so every thread it creates inherits the cores: a
    # child inherits the affinity of the thread that starts it, so this thread holds the
    # trial's cores for the call. Not a preexec_fn, which runs Python between fork and exec
    # (unsafe beside threads; where JAX is imported, it warned of a deadlock).
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        proc = subprocess.Popen(
            trial.argv(),
            cwd=trial.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            # Its own session: a Ctrl-C in the terminal reaches the sweep, which stops trials
            # with SIGTERM (save and exit) rather than killing them mid-save.
            start_new_session=True,
        )
    finally:
        os.sched_setaffinity(0, mine)
    # Whose trial this is: a sweep killed outside Python (SIGKILL) leaves `started` without an
    # end, and the trial read as running for good.
    trials_lib.update_record(workdir, pid=proc.pid, host=socket.gethostname())
    return _Running(trial, proc, time.monotonic(), offset, [stdout, stderr])


def _finish(run: _Running, stopped: bool = False) -> Outcome:
    for f in run.logs:
        f.close()
    returncode = run.proc.returncode
    seconds = time.monotonic() - run.start
    workdir = run.trial.workdir
    error = None
    if returncode != 0 and not stopped:
        with open(os.path.join(workdir, "stderr.log"), "rb") as f:
            f.seek(run.stderr_offset)
            error = trials_lib.error_line(f.read().decode(errors="replace"), returncode)
    record = trials_lib.read_record(workdir)
    trials_lib.update_record(
        workdir,
        returncode=returncode,
        error=error,
        ended=trials_lib.now(),
        # SIGTERM from the sweep can land before ann.main handles it: not the trial's fault.
        stopped_by_sweep=stopped,
        wall_seconds=round(record.get("wall_seconds", 0.0) + seconds, 2),
    )
    status, _ = trials_lib.status(workdir)
    return Outcome(status, returncode, error, seconds)


def run(
    next_trial: Callable[[], Trial | None],
    on_end: Callable[[Trial, Outcome], None],
    parallel: int = 1,
    poll_seconds: float = 0.2,
    log: Callable[[str], None] = print,
) -> None:
    """Runs trials from `next_trial()` (None: nothing to start now) until none is left or
    running; calls `on_end(trial, outcome)` as each ends; `log`s each start, as the sweep's
    other lines."""
    slots = cpu_sets(parallel)
    running: dict[int, _Running] = {}
    try:
        while True:
            # A safe point: a SIGTERM whose stop was raised where code dropped it (a library's
            # `except BaseException`, a finalizer, a `log` callback) stops the sweep here.
            cli.check_terminated()
            for slot in range(parallel):
                if slot in running:
                    continue
                # Drawn, recorded, started and kept track of, or none of it: a stop between
                # Popen and `running` left the trial training unstopped, unrecorded, its lock
                # held against the resume (and a study's draw between `ask` and its files).
                with cli.interrupts_deferred():
                    trial = next_trial()
                    if trial is not None:
                        running[slot] = _start(trial, slots[slot])
                if trial is None:
                    break
                log(f"started {trial.name} on cores {slots[slot]}")
            if not running:
                return
            time.sleep(poll_seconds)
            for slot, run_ in list(running.items()):
                if run_.proc.poll() is not None:
                    # Its end recorded and told (the study, the results), or not yet seen: a
                    # stop between the two left a finished trial running in the study.
                    with cli.interrupts_deferred():
                        del running[slot]
                        on_end(run_.trial, _finish(run_))
    except (KeyboardInterrupt, SweepError) as stop:  # Ctrl-C, or on_end stopping the sweep
        if not running:
            raise
        why = "sweep stopped"
        if isinstance(stop, KeyboardInterrupt):
            why = str(stop) if isinstance(stop, cli.Terminated) else "interrupted (Ctrl-C)"
        print(
            f"{why}: stopping {trials_lib.n_of(len(running), 'running trial')} (each "
            "saves a checkpoint and exits)",
            file=sys.stderr,
            flush=True,
        )
        # A SIGTERM while they stop (a Ctrl-C's or a failed sweep's) waits for them: raised
        # here, it left them unwaited and their ends unrecorded. A second Ctrl-C still stops
        # the sweep at once.
        with cli.interrupts_deferred(("SIGTERM",)):
            for run_ in running.values():
                run_.proc.send_signal(signal.SIGTERM)
            for run_ in running.values():
                run_.proc.wait()
                try:
                    on_end(run_.trial, _finish(run_, stopped=True))
                except SweepError:
                    pass  # the first reason to stop is the one reported
        raise
