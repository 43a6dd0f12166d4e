"""What a directory holds, told by the file that marks it: the one place that sniffs a directory.

    manifest.json   an export (`ann export`; ann/artifact.py)
    registry.db     a model registry (ann/registry/)
    sweep.json      a sweep (`ann sweep`; ann/sweep/results.py)
    config.json     a training run (`ann train`; ann.config.file_in)
    dataset_info.json   TFDS data (in each built version of a data set, written by TFDS), in
                    the directory or in a version folder (1.3.0/) up to three levels below
                    it: a data set's folder or a data dir's root, with or without configs

`of(path)` lists the kinds a directory holds, in that order (an export before a run: an export's
manifest is the stronger claim); `runs_in(path)` names the entries of a directory that are runs
or hold runs (a sweep's trials, a project's `runs/`). A marker counts when it is a file or a
link, broken or not (whoever reads it says what is wrong with it); a directory of that name does
not; above a path, a config.json or manifest.json must be ann's (JSON with its keys). Plain `os`,
`re` and `json` only: the command line asks before JAX is imported, and an export's loader
(ann/artifact.py, what a server imports) asks too.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from typing import NamedTuple

EXPORT, REGISTRY, SWEEP, RUN = "export", "registry", "sweep", "run"
DATA = "data"  # TFDS data: the data sets runs read (data.data_dir), no output's place
# kind -> the file that marks it, in the order `of` lists them.
MARKERS = {
    EXPORT: "manifest.json",  # ann.artifact.MANIFEST
    REGISTRY: "registry.db",  # ann.registry.core.Registry.db_path
    SWEEP: "sweep.json",  # ann.sweep.results.SWEEP_FILE
    RUN: "config.json",  # ann.config.file_in
    DATA: "dataset_info.json",  # TFDS's, in each built version of a data set (`_data`)
}
NAMES = {
    EXPORT: "an export",
    REGISTRY: "a model registry",
    SWEEP: "a sweep",
    RUN: "a training run",
    DATA: "TFDS data",  # a data dir's root or a data set's folder: "holds" / "is inside" it
}
MAX_ENTRIES = 1000  # entries of a directory `runs_in` looks at (a huge folder is not scanned)


def _marked(path: str, name: str) -> bool:
    marker = os.path.join(path, name)
    return os.path.isfile(marker) or os.path.islink(marker)


def of(path: str) -> tuple[str, ...]:
    """The kinds (EXPORT, REGISTRY, SWEEP, RUN, DATA) the directory `path` holds, by their
    marker files, in MARKERS' order; () for a directory of none, a file, or no such path."""
    return tuple(
        kind
        for kind, name in MARKERS.items()
        if (_data(path) if kind == DATA else _marked(path, name))
    )


# A built data set's version folder, as TFDS names it (NAME/1.3.0/dataset_info.json).
_VERSION = re.compile(r"\d+\.\d+\.\d+")
# A data set's and a builder config's names, as TFDS allows them (tfds.core.naming).
_SET, _CONFIG = re.compile(r"[a-zA-Z]\w*"), re.compile(r"[\w+\-][\w+\-.]*")
# For a data dir whose data sets all have builder configs (ROOT/NAME/CONFIG/VERSION/), `_data`
# tries the first CONFIGS_PER_SET entries of each data set's folder, MAX_DEEP_LISTINGS in all,
# and reads at most MAX_VERSIONS entries of each: the first data set's first config finds one,
# and a large tree (/tmp, /) is not walked.
CONFIGS_PER_SET = 3
MAX_DEEP_LISTINGS = 16
MAX_VERSIONS = 16


def _data(path: str) -> bool:
    """Whether `path` is TFDS data: a data set's version folder (it holds dataset_info.json),
    a data set's folder (VERSION/ or CONFIG/VERSION/ below it, VERSION named as TFDS names it:
    1.3.0) or a data dir's root (NAME/VERSION/ or NAME/CONFIG/VERSION/ below it). Three levels
    down, the version's dataset_info.json must name the folders above it as its data set and
    config: the home directory holds ~/tensorflow_datasets/NAME/VERSION/ at that depth and is
    no data dir. The first MAX_ENTRIES entries of each folder are looked at, and at most
    MAX_DEEP_LISTINGS folders three levels down (see there)."""
    marker = MARKERS[DATA]
    if _marked(path, marker):
        return True
    entries = listing(path)[:MAX_ENTRIES]
    if any(_VERSION.fullmatch(e) and _marked(os.path.join(path, e), marker) for e in entries):
        return True
    deep = MAX_DEEP_LISTINGS
    for name in entries:
        child = os.path.join(path, name)
        if not os.path.isdir(child):
            continue
        below = listing(child)[:MAX_ENTRIES]
        if any(_VERSION.fullmatch(e) and _marked(os.path.join(child, e), marker) for e in below):
            return True
        if deep and _SET.fullmatch(name):
            configs = (e for e in below if _CONFIG.fullmatch(e) and not _VERSION.fullmatch(e))
            for config in itertools.islice(configs, min(CONFIGS_PER_SET, deep)):
                deep -= 1
                if _config_built(os.path.join(child, config), name, config):
                    return True
    return False


def _config_built(folder: str, name: str, config: str) -> bool:
    """Whether one of the first MAX_VERSIONS entries of `folder` (as the file system lists them:
    a config's folder holds its versions, and a large folder is not read to its end) is a
    version of data set `name`'s config `config`."""
    try:
        with os.scandir(folder) as it:
            return any(
                _VERSION.fullmatch(e.name) and _built(e.path, name, config)
                for e in itertools.islice(it, MAX_VERSIONS)
            )
    except OSError:
        return False


def _built(version: str, name: str, config: str) -> bool:
    """Whether the folder `version` holds the dataset_info.json TFDS wrote for data set `name`'s
    builder config `config` (its JSON's "name" and "configName")."""
    try:
        with open(os.path.join(version, MARKERS[DATA]), "rb") as f:
            info = json.loads(f.read(1 << 20))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and (info.get("name"), info.get("configName")) == (name, config)


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
    """(kind, directory) of the nearest directory above `path` that is a run, an export, a
    registry or TFDS data (a sweep above does not count: its trials are runs' directories; nor
    does another tool's config.json or manifest.json), or None."""
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        kinds = [k for k in of(parent) if k != SWEEP and not _foreign(parent, k)]
        if kinds:
            return kinds[0], parent
        if os.path.dirname(parent) == parent:
            return None
        parent = os.path.dirname(parent)


def run_above(path: str) -> str | None:
    """The training run `path` is inside (its checkpoints/, report/, tensorboard/: `inside`),
    named as `path` is (relative to the current directory where `path` is relative), or None:
    what a refusal of such a directory names instead (`ann report --workdir`, an export
    wanted: `artifact.not_an_export`)."""
    above = inside(path)
    if above is None or above[0] != RUN:
        return None
    return above[1] if os.path.isabs(path) else os.path.relpath(above[1])


def step_folder(path: str) -> tuple[str, int] | None:
    """(the run, named as `path` is; the step) where `path` is the folder of one step of a
    run's checkpoints/ or checkpoints_best/ (`runs/digits_cnn/checkpoints/600`, whether that
    step is saved or not), else None: what a refusal of such a folder names instead (the
    run's RUN:600, its --step=600)."""
    run = run_above(path)
    if run is None:
        return None
    parts = os.path.relpath(os.path.abspath(path), os.path.abspath(run)).split(os.sep)
    held = len(parts) == 2 and parts[0] in (CHECKPOINTS, CHECKPOINTS_BEST)
    return (run, int(parts[1])) if held and parts[1].isascii() and parts[1].isdigit() else None


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


ORBAX_METADATA = "_CHECKPOINT_METADATA"  # what Orbax writes into every step it commits


def committed_steps(directory: str, but: int | None = None) -> list[int]:
    """The steps Orbax committed in a checkpoint directory (a run's checkpoints/ or
    checkpoints_best/), newest first, from a listing alone: step-named directories holding
    Orbax's metadata (a stray `mkdir checkpoints_best/9999` is none); [] where it cannot be
    listed. Cheap: a command checks --step with it before Orbax (and JAX) is imported."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(
        (
            int(n)
            for n in names
            if n.isdigit()
            and int(n) != but
            and os.path.exists(os.path.join(directory, n, ORBAX_METADATA))
        ),
        reverse=True,
    )


# A run's checkpoint directories (ann/train/checkpoint.py): the latest steps, the best step.
CHECKPOINTS, CHECKPOINTS_BEST = "checkpoints", "checkpoints_best"
# Where a resume moves damaged steps (ann.train.checkpoint), kept for inspection and recovery.
CHECKPOINTS_DAMAGED = "checkpoints_damaged"


class SavedSteps(NamedTuple):
    """A run's committed steps (`committed_steps`, newest first): `latest` in checkpoints/ (the
    latest max_to_keep steps), `best` in checkpoints_best/ (the best step)."""

    latest: list[int]
    best: list[int]

    def holder(self, step: int) -> str | None:
        """The subdirectory (`CHECKPOINTS` or `CHECKPOINTS_BEST`) a restore of `step` reads:
        checkpoints/ where it holds the step, else checkpoints_best/, where the best step
        outlives max_to_keep's pruning of checkpoints/ (the same state under the same
        number, so `--step=N` and init_from=RUN:N take it from there); None if neither does."""
        if step in self.latest:
            return CHECKPOINTS
        return CHECKPOINTS_BEST if step in self.best else None


def saved_steps(run_dir: str) -> SavedSteps:
    """The committed steps of the run in `run_dir` (its checkpoints/ and checkpoints_best/),
    from listings alone: the one reader of both for the commands' --step check, init_from's
    and `ann transfer`'s RUN:STEP, and `Checkpoints.restore_state`. Missing or unlistable
    directories give []."""
    return SavedSteps(
        committed_steps(os.path.join(run_dir, CHECKPOINTS)),
        committed_steps(os.path.join(run_dir, CHECKPOINTS_BEST)),
    )


def best_beside(best: list[int], saved: list[int]) -> str:
    """ "; the best checkpoint: 700" for a refused step's list of `saved` steps (checkpoints/),
    where checkpoints_best/ keeps a step max_to_keep dropped from there: `--step=N` restores it
    too, so the choices name it; "" when it is among `saved` or there is none."""
    kept = [s for s in best if s not in saved]
    return f"; the best checkpoint: {', '.join(map(str, kept))}" if kept else ""


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


def runs_below(path: str, most: int = 3) -> list[str]:
    """The training runs `runs_in(path)` finds, named by their paths under `path` (`b_run`, a
    run itself; `a_sweep/trial_0`, a run one level down), at most `most` of them: what a
    directory that holds runs holds, said truthfully (an entry that holds runs was named as if
    it were one: `--out=/` "holds other runs (tmp)")."""
    found: list[str] = []
    for entry in runs_in(path):
        inside = os.path.join(path, entry)
        if _marked(inside, MARKERS[RUN]):
            found.append(entry)
        else:
            children = listing(inside)[:MAX_ENTRIES]
            runs = [c for c in children if _marked(os.path.join(inside, c), MARKERS[RUN])]
            found += [f"{entry}/{c}" for c in runs]
        if len(found) >= most:
            break
    return found[:most]


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
