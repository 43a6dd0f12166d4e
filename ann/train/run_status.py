"""`WORKDIR/run_status.json`: how a run stands, written atomically by process 0.

`running` while training, then `done` (reached total_steps), `interrupted` (SIGTERM or a hook's
stop: the same command resumes), or a reason a hook gave to end the run as finished
(`early_stopped`, `pruned`): re-running the same command then does not train further. Sweeps
read this file to tell a finished trial from one that still has work to do.
"""

from __future__ import annotations

import json
import os
from typing import Any

FILENAME = "run_status.json"
FINISHED_EARLY = ("early_stopped", "pruned")  # finished before total_steps; a rerun is a no-op


def path(workdir: str) -> str:
    return os.path.join(workdir, FILENAME)


def read(workdir: str) -> dict[str, Any] | None:
    """The status record, or None if the run never started (or the file is unreadable)."""
    try:
        with open(path(workdir)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "status" in record else None


def write(workdir: str, status: str, step: int, **info: Any) -> None:
    """Replaces the record atomically (temp file + rename), so a reader never sees half of it."""
    os.makedirs(workdir, exist_ok=True)
    record = {"status": status, "step": int(step), **info}
    tmp = path(workdir) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2, sort_keys=True, default=float)
        f.write("\n")
    os.replace(tmp, path(workdir))
