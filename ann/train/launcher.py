"""A run started by a launcher stops, saving, when the launcher dies.

scripts/launch_local.sh and `ann sweep` start each process of a run in a process group of its
own (so a terminal's Ctrl-C reaches only the launcher, which passes it on), and name themselves
in the environment variable ANN_LAUNCHER_PID. A launcher that dies without passing a signal on
(SIGKILL to its process group, `timeout -s KILL`, a closed terminal's SIGHUP) would otherwise
leave its processes training, holding the workdir's lock against the command that restarts it.
A daemon thread checks the parent's pid every POLL_SECONDS and, once the launcher is gone (the
process was re-parented), sends this process SIGTERM, a stop the loop names "launcher gone": it
saves a checkpoint at the next step boundary and exits (ann/train/preemption.py); the same
command resumes. (Linux's PR_SET_PDEATHSIG does this in the kernel, but only on Linux and
through ctypes.)
"""

from __future__ import annotations

import os
import signal
import threading
import time

ENV = "ANN_LAUNCHER_PID"
POLL_SECONDS = 0.5
GONE = "launcher gone"  # the stop's reason (ann/train/preemption.py) for the watch's SIGTERM
_gone = threading.Event()


def gone() -> bool:
    """Whether this process's watch found its launcher gone (and sent the SIGTERM)."""
    return _gone.is_set()


def environment() -> dict[str, str]:
    """The variables a launcher gives the processes it starts: {ENV: this process's pid}."""
    return {ENV: str(os.getpid())}


def stop_with_launcher() -> bool:
    """Starts the watch if ANN_LAUNCHER_PID names this process's parent; returns whether it
    did. A variable naming another process (inherited from further up, or copied into a shell)
    is not about this run and is ignored; so is one that is not a pid."""
    value = os.environ.get(ENV, "")
    if not value.isdigit() or int(value) != os.getppid():
        return False
    launcher = int(value)

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(POLL_SECONDS)
        _gone.set()  # before the signal: its handler names the stop after it
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()
    return True
