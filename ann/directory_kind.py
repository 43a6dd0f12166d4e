"""What a directory holds, told by the file that marks it: the one place that sniffs a directory.

    manifest.json   an export (`ann export`; ann/artifact.py)
    registry.db     a model registry (ann/registry/)
    sweep.json      a sweep (`ann sweep`; ann/sweep/results.py)
    config.json     a training run (`ann train`; ann.config.file_in)

`of(path)` lists the kinds a directory holds, in that order (an export before a run: an export's
manifest is the stronger claim); `runs_in(path)` names the entries of a directory that are runs
or hold runs (a sweep's trials, a project's `runs/`). A marker counts when it is a file or a
link, broken or not (whoever reads it says what is wrong with it); a directory of that name does
not; above a path, a config.json or manifest.json must be ann's (JSON with its keys). Plain `os`
and `json` only: the command line asks before JAX is imported, and an export's loader
(ann/artifact.py, what a server imports) asks too.
"""

from __future__ import annotations

import json
import os

EXPORT, REGISTRY, SWEEP, RUN = "export", "registry", "sweep", "run"
# kind -> the file that marks it, in the order `of` lists them.
MARKERS = {
    EXPORT: "manifest.json",  # ann.artifact.MANIFEST
    REGISTRY: "registry.db",  # ann.registry.core.Registry.db_path
    SWEEP: "sweep.json",  # ann.sweep.results.SWEEP_FILE
    RUN: "config.json",  # ann.config.file_in
}
NAMES = {EXPORT: "an export", REGISTRY: "a model registry", SWEEP: "a sweep", RUN: "a training run"}
MAX_ENTRIES = 1000  # entries of a directory `runs_in` looks at (a huge folder is not scanned)


def _marked(path: str, name: str) -> bool:
    marker = os.path.join(path, name)
    return os.path.isfile(marker) or os.path.islink(marker)


def of(path: str) -> tuple[str, ...]:
    """The kinds (EXPORT, REGISTRY, SWEEP, RUN) the directory `path` holds, by their marker
    files, in MARKERS' order; () for a directory of none, a file, or no such path."""
    return tuple(kind for kind, name in MARKERS.items() if _marked(path, name))


# Keys ann's own file has (ann.config.write, ann.artifact's manifest): above a path, a
# config.json or manifest.json that is JSON without them is another tool's (a stray one in a
# project folder or $HOME refused every `ann train` below it as "inside a training run").
_OWN_KEYS = {RUN: ("experiment", "total_steps"), EXPORT: ("format", "files")}


def _foreign(path: str, kind: str) -> bool:
    """Whether `path`'s marker of `kind` is JSON another tool wrote. One that cannot be read
    or parsed still counts as ann's: a damaged file of a real run must not open it to writes."""
    keys = _OWN_KEYS.get(kind)
    if keys is None:
        return False
    try:
        with open(os.path.join(path, MARKERS[kind]), "rb") as f:
            data = json.loads(f.read(1 << 20))
    except (OSError, ValueError):
        return False
    return not (isinstance(data, dict) and all(k in data for k in keys))


def inside(path: str) -> tuple[str, str] | None:
    """(kind, directory) of the nearest directory above `path` that is a run, an export or a
    registry (a sweep above does not count: its trials are runs' directories; nor does another
    tool's config.json or manifest.json), or None."""
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        kinds = [k for k in of(parent) if k != SWEEP and not _foreign(parent, k)]
        if kinds:
            return kinds[0], parent
        if os.path.dirname(parent) == parent:
            return None
        parent = os.path.dirname(parent)


REPORT_FILE = "report.json"  # a report (`ann report`, `ann monitor drift`; ann/report/write.py)


def report_above(path: str) -> str | None:
    """The nearest directory above `path` that is a report (holds REPORT_FILE), or None. A
    report is replaced whole each time its command runs: whatever is inside it goes."""
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        if os.path.isfile(os.path.join(parent, REPORT_FILE)):
            return parent
        if os.path.dirname(parent) == parent:
            return None
        parent = os.path.dirname(parent)


def described(kind: str) -> str:
    """ "an export (manifest.json)": a kind as a message names it."""
    return f"{NAMES[kind]} ({MARKERS[kind]})"


def listing(path: str) -> list[str]:
    """The entries of the directory `path`, sorted; [] when it is missing, a file, or cannot be
    listed."""
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def runs_in(path: str) -> list[str]:
    """The entries of the directory `path` (sorted, the first MAX_ENTRIES) that are training
    runs or directories with runs one level down; [] when there are none or `path` cannot be
    listed."""
    return [e for e in listing(path)[:MAX_ENTRIES] if _holds_runs(os.path.join(path, e))]


def _holds_runs(path: str) -> bool:
    """Whether `path` is a run, or a directory of them."""
    if _marked(path, MARKERS[RUN]):
        return True
    children = listing(path)[:MAX_ENTRIES]
    return any(_marked(os.path.join(path, c), MARKERS[RUN]) for c in children)


def run_managed(path: str, run: str) -> str | None:
    """The directory of the run at `run` that `path` lies in when the run manages it (its
    checkpoints/, checkpoints_best/, checkpoints_damaged/: Orbax's and the resume's own), else
    None (its report/, or a folder of the user's, may hold other output)."""
    first = os.path.relpath(os.path.abspath(path), run).split(os.sep)[0]
    return os.path.join(run, first) if first.startswith("checkpoints") else None
