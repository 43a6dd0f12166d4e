"""Where a run's data was read from, and where its later readers read it.

`data.data_dir` is kept in config.json as the user wrote it, often "" (= $TFDS_DATA_DIR, else
~/tensorflow_datasets): what the config means, and what an export carries to another machine.
What that resolved to when the run trained is the run's record, `WORKDIR/data_dir.json`
({"data_dir": absolute path, "name", "version"}), written at every start (fresh or resumed) by
process 0; an export records the directory it read in its manifest (`data.data_dir`).

A later reader of the run (a resume, `ann export`, `ann report`, a restore) reads the recorded
directory, not whatever its own shell's $TFDS_DATA_DIR or working directory resolves to: a
reference sample, a self-check or a report read from another directory could be other data
under the same name, without a word. It says so in one `note:` line when the two differ. Where
the recorded directory no longer holds the data set (moved, or another machine), it reads the
one it resolves and says so in one `warning:` line: whether that one already holds a copy (it
may be other data under the same name) or will build the set anew, and which directory to
restore the data to. A resume whose `data.data_dir` differs from
the run's last config reads the new one: the user changed it (config_changes.jsonl records it).
"""

from __future__ import annotations

import json
import os
from typing import Any

from ann import atomic

FILENAME = "data_dir.json"


def resolved(data_dir: str) -> str:
    """The absolute directory `data_dir` (a config's data.data_dir) means here and now."""
    from ann.data.sources import default_data_dir

    return os.path.abspath(data_dir or default_data_dir())


def path(workdir: str) -> str:
    return os.path.join(workdir, FILENAME)


def write(workdir: str, data_dir: str, name: str, version: str) -> None:
    """Records the directory a run reads (`data_dir`, resolved) atomically."""
    record = {"data_dir": resolved(data_dir), "name": name, "version": version}
    atomic.write_text(path(workdir), json.dumps(record, indent=2) + "\n")


_WARNED: set[str] = set()  # the damaged records already named (a reader reads it more than once)


def recorded(workdir: str) -> str | None:
    """The directory the run in `workdir` last read its data from; None for a run that recorded
    none (one trained before this record existed) or an unreadable record, which is warned
    about once (a torn file read as none was said nowhere, and the data then read from this
    shell's directory)."""
    file = path(workdir)
    try:
        with open(file, "rb") as f:
            record = json.loads(f.read(1 << 20))
        found = record.get("data_dir") if isinstance(record, dict) else None
        if not (isinstance(found, str) and found):
            raise ValueError("no data_dir")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        if file not in _WARNED:
            _WARNED.add(file)
            from ann import cli

            # "torn, or edited by hand" fits a bad text, not a directory in its place.
            why, again = (
                (e.strerror, "move it out of the workdir: the run's next ann train writes the "
                 "record again")
                if isinstance(e, OSError)
                else ("not a JSON record with a data_dir: torn, or edited by hand",
                      "the run's next ann train writes the record again")
            )  # fmt: skip
            cli.warn(
                f"{file} cannot be read ({why}): reading the data where data.data_dir points "
                f"from here, which may not be where the run read it ({again})"
            )
        return None
    return found


def choose(data_dir: str, name: str, recorded_dir: str | None, whose: str) -> str:
    """The data_dir a reader of `whose` data (a run, an export) passes to `data.load`: the
    config's `data_dir` where it resolves to `recorded_dir` (or nothing is recorded), else the
    recorded directory while it holds data set `name`, else the config's with a warning."""
    if recorded_dir is None or resolved(data_dir) == recorded_dir:
        return data_dir
    from ann import cli

    here = f"{resolved(data_dir)} ({_said(data_dir)})"
    if os.path.isdir(os.path.join(recorded_dir, name.split(":")[0])):
        cli.note(
            f"reading data set {name!r} from {recorded_dir}, where {whose} read it, not {here}"
        )
        return recorded_dir
    fallback = resolved(data_dir)
    if os.path.isdir(os.path.join(fallback, name.split(":")[0])):
        instead = (
            f"reading the copy already in {here} instead, which may be other data under the "
            "same name"
        )
    else:
        instead = (
            f"{here} does not hold it either: it will be built there anew from its source, "
            "which may differ from what was read"
        )
    cli.warn(
        f"{whose} read data set {name!r} from {recorded_dir}, which no longer holds it; "
        f"{instead} (to read what {whose} read, restore the data set to {recorded_dir})"
    )
    return data_dir


def for_run(config: Any, workdir: str) -> str:
    """The data_dir to read `config`'s data with for the run in `workdir` (`choose`): a resume
    or a reader of the run reads what the run last read, unless this config's data.data_dir
    differs from the run's last config (a resume that moves the data)."""
    from ann import config as config_lib

    recorded_dir = recorded(workdir)
    data_dir = config.data.data_dir
    if recorded_dir is None:
        return data_dir
    try:
        last = config_lib.latest(workdir).data.data_dir
    except (OSError, config_lib.ConfigError):
        last = data_dir
    if data_dir != last:
        return data_dir
    return choose(data_dir, config.data.name, recorded_dir, f"the run at {workdir}")


def _said(data_dir: str) -> str:
    """Where a data_dir came from, as a message names it."""
    if data_dir:
        return f"data.data_dir={data_dir}"
    if os.environ.get("TFDS_DATA_DIR"):
        return "$TFDS_DATA_DIR"
    return "the default, ~/tensorflow_datasets: $TFDS_DATA_DIR is unset"
