"""Orbax checkpoints of the train state and the data position: the latest few, and the best.

`checkpoints/` keeps the latest `max_to_keep` steps; `checkpoints_best/` keeps the step with the
best value of the configured eval metric, and, until a regular checkpoint at or past that step is
committed, the best before it (`_KeepResumable`): what a resume from checkpoints/ keeps. Orbax
writes each step to a temporary directory and renames it when complete, so an interrupted save
never shadows a good checkpoint.

Integrity: once Orbax has committed a step (for an async save, when the next save or the end of
the run waits for it), process 0 writes `STEP/ann_manifest.json` beside Orbax's files, atomically,
from a background thread (hashing reads every byte): the size and sha256 of every file of the
step. A restore verifies the files against it, then checks the restored state is finite. For
training, a damaged step (a file changed, truncated or missing, or non-finite values) is moved to
`checkpoints_damaged/` (kept, not deleted) and the run resumes from the newest intact step,
saying which file was damaged and which step it resumed from. An I/O error while reading is
reported as such and changes nothing. A step saved before manifests existed (or whose manifest
was never written, e.g. the process was killed right after
the commit) is restored unverified, with a warning; a resume then writes the manifest of the
step it resumed from and of the best checkpoint where they lack one (the best one was otherwise
read unverified by every export until a better eval replaced it).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import hashlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Collection
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import PreservationPolicy

from ann import atomic, cli, directory_kind
from ann.config import NOT_A_METRIC_OF_THIS_RUN, SELECTION_PREFIX, ConfigError, meant_metric
from ann.config import file_in as config_file_in
from ann.sharding import path_str
from ann.train import run_status
from ann.train.state import all_finite

MANIFEST = "ann_manifest.json"
DAMAGED_DIR = directory_kind.CHECKPOINTS_DAMAGED


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be saved or restored; the message says what to do."""


def mismatch_error(workdir: str, step: int, mismatch: str) -> str:
    """The line for a run whose checkpoints do not fit its config.json (edited by hand, say
    model.features): `mismatch` is `shape_mismatch`'s. Every step has the
    shapes of the config it was trained with, so no other step is offered."""
    mismatch = mismatch.replace("by the config", "by config.json")
    mismatch = mismatch.replace("in the checkpoint", f"in step {step}")
    record = os.path.join(workdir, "config.json")
    if mismatch.startswith("opt_state/"):  # the arrays Adam keeps, or a clipping's: optimizer.*
        mismatch = f"the optimizer's state, optimizer.*: {mismatch}"
    elif ":" in (model := _model_name(record)):
        # A user's model: its code, more often than config.json, changed since the run trained
        # (a layer added to the class was blamed on a config.json nobody had touched).
        module = model.partition(":")[0]
        return (
            f"{record} names model {model!r}, which now builds other shapes than the run's "
            f"checkpoints hold ({mismatch}): was its code (module {module}) changed, or "
            "config.json edited by hand, since the run trained? put back the code and the "
            "config.json the run was trained with, or train in a new --workdir"
        )
    return (
        f"{record} does not match the shapes in the run's checkpoints ({mismatch}); was it "
        "edited by hand? put back the config.json the run was trained with"
    )


def _model_name(record: str) -> str:
    """`model.name` of the run's config.json at `record`, "" where it cannot be read."""
    try:
        with open(record, encoding="utf-8") as f:
            name = json.load(f)["model"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return name if isinstance(name, str) else ""


class CheckpointSaveError(CheckpointError):
    """A save failed (disk full, permission, ...): the run cannot go on safely."""


def _save_args(state: Any, data_iter: Any) -> ocp.args.Composite:
    # The data position is the same in every process; Orbax writes JSON from the primary only,
    # so a checkpoint restores under any number of processes.
    return ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_iter.get_state())
    )


def _barrier_names(prefix: str) -> ocp.options.MultiprocessingOptions:
    # Both managers may save the same step at once; Orbax names its multi-process barriers by
    # step, so without a prefix the second save finds "barrier already ongoing" and times out.
    return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=prefix)


def _files(step_dir: str) -> list[str]:
    """Every file of a step directory, relative to it, sorted; the manifest itself excluded."""
    found = []
    for root, _, names in os.walk(step_dir):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), step_dir)
            if rel != MANIFEST and not rel.endswith(".tmp"):
                found.append(rel)
    return sorted(found)


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(step_dir: str) -> None:
    """Records the size and sha256 of every file of a committed step in `STEP/ann_manifest.json`
    (temp file + rename: a reader sees all of it or none)."""
    files = {
        rel: {
            "bytes": os.path.getsize(os.path.join(step_dir, rel)),
            "sha256": _sha256(os.path.join(step_dir, rel)),
        }
        for rel in _files(step_dir)
    }
    with atomic.replacing(os.path.join(step_dir, MANIFEST)) as f:
        json.dump({"files": files}, f, indent=1, sort_keys=True)


def _write_manifest_if_kept(step_dir: str) -> None:
    """write_manifest, unless Orbax has already rotated the step out (max_to_keep)."""
    try:
        write_manifest(step_dir)
    except FileNotFoundError:
        if os.path.isdir(step_dir):
            raise


class ManifestUnreadable(FileNotFoundError):
    """A step's ann_manifest.json that is not the JSON ann wrote (truncated, edited by hand):
    the step is unverifiable, as one without a manifest is (a FileNotFoundError to every
    caller), not damaged. It was called damaged ("file ann_manifest.json itself is
    unreadable"): export and report refused the step, and a resume moved an intact step aside
    and retrained from the one before, though Orbax's files were as saved."""


def _manifest_files(step_dir: str) -> dict | None:
    """The manifest's {file: {"bytes", "sha256"}}, None where it is not what ann writes.
    Raises FileNotFoundError where there is none, OSError where it cannot be read."""
    with open(os.path.join(step_dir, MANIFEST), "rb") as f:
        try:
            recorded = json.loads(f.read())["files"]
        except (ValueError, KeyError, TypeError):
            return None
    ok = isinstance(recorded, dict) and all(
        isinstance(v, dict) and isinstance(v.get("bytes"), int) and isinstance(v.get("sha256"), str)
        for v in recorded.values()
    )
    return recorded if ok else None


def has_manifest(step_dir: str) -> bool:
    """Whether the step has a manifest to verify it with (there, and readable)."""
    try:
        return _manifest_files(step_dir) is not None
    except OSError:
        return False


def verify_files(step_dir: str, skip: Collection[str] = ()) -> str | None:
    """What is wrong with a step's files against its manifest (one phrase naming the file), or
    None when they match; files under the top-level directories `skip` are not checked.
    Raises FileNotFoundError when the step has no manifest (ManifestUnreadable, a subclass,
    where it has one that cannot be read: unverifiable alike), and OSError when a file cannot
    be read (an I/O problem, not damage)."""
    recorded = _manifest_files(step_dir)
    if recorded is None:
        raise ManifestUnreadable(f"{MANIFEST} cannot be read (truncated, or edited by hand)")
    for rel, want in recorded.items():
        if rel.split("/", 1)[0] in skip:
            continue
        path = os.path.join(step_dir, rel)
        if not os.path.exists(path):
            return f"file {rel} is missing"
        size = os.path.getsize(path)
        if size != want["bytes"]:
            return f"file {rel} has {size} bytes, {want['bytes']} when saved (truncated or cut)"
        if _sha256(path) != want["sha256"]:
            return f"file {rel} does not match the sha256 recorded at save (bytes changed)"
    return None


# The Orbax items a step of checkpoints/ and its copy in checkpoints_best/ both hold, saved
# from one state (`_save_args`); the rest of a step directory is each manager's own metadata.
ITEMS = ("state", "data")


def _repairable(step_dir: str) -> bool:
    """Whether a step's damage is all within its ITEMS (else a manager's own metadata, of which
    there is no copy, or none at all: non-finite values saved)."""
    return verify_files(step_dir, skip=ITEMS) is None and verify_files(step_dir) is not None


def _repair_items(step_dir: str, twin_dir: str, aside: str) -> None:
    """Replaces the ITEMS of `step_dir` (`_repairable`) by those of `twin_dir` (the same step
    in the other directory, verified intact by the caller), moving the damaged ones to
    `aside`, and rewrites its manifest."""
    os.makedirs(aside, exist_ok=True)
    for item in ITEMS:
        fresh = os.path.join(step_dir, f"{item}.repair.tmp")
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.copytree(os.path.join(twin_dir, item), fresh)
        if os.path.exists(os.path.join(step_dir, item)):
            shutil.move(os.path.join(step_dir, item), os.path.join(aside, item))
        os.rename(fresh, os.path.join(step_dir, item))
    shutil.copy2(os.path.join(step_dir, MANIFEST), os.path.join(aside, MANIFEST))
    write_manifest(step_dir)


# One program for the whole state: called eagerly, each `x * 0`, add and sum of `all_finite`
# was its own executable (34 compiles for the digits CNN's first multi-process resume).
_all_finite = jax.jit(all_finite)


def _finite(tree: Any) -> bool:
    """Whether every floating-point array of a restored state is finite. One process checks
    its shards on the host (nothing to compile); several reduce on the devices in one compiled
    program, so that all of them reach the same answer and fall back to the same step."""
    if jax.process_count() > 1:
        return bool(jax.device_get(_all_finite(tree)))
    return all(
        np.isfinite(np.asarray(shard.data)).all()
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
        for shard in x.addressable_shards
    )


def _is_io_error(e: BaseException) -> bool:
    """An OSError anywhere in the cause chain that is about the storage, not the content."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in (
            errno.EIO,
            errno.EACCES,
            errno.EPERM,
            errno.ENOSPC,
            errno.EROFS,
            errno.ETIMEDOUT,
            errno.ESTALE,
            errno.EAGAIN,
            errno.EDQUOT,
        ):
            return True
        e = e.__cause__ or e.__context__
    return False


# How TensorStore, Orbax's writer, words an OSError: a ValueError "RESOURCE_EXHAUSTED: Error
# writing ... Failed to write 527971 bytes to file 20: No space left on device
# [os_error_code='28']".
_TENSORSTORE_ERRNO = re.compile(r"\[os_error_code='(\d+)'\]")


def _has_os_error(e: BaseException | None) -> bool:
    """Whether an OSError is anywhere in `e`'s cause chain (or TensorStore's words for one)."""
    while e is not None:
        if isinstance(e, OSError) or _TENSORSTORE_ERRNO.search(str(e)):
            return True
        e = e.__cause__ or e.__context__
    return False


def _storage_errno(e: BaseException | None) -> int | None:
    """The errno of a refused write (`atomic.STORAGE_ERRNOS`: a full disk, a quota, a read-only
    file system, permissions) anywhere in `e`'s cause chain, an OSError's or the one
    TensorStore's message carries; else None."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in atomic.STORAGE_ERRNOS:
            return e.errno
        found = _TENSORSTORE_ERRNO.search(str(e))
        if found and int(found[1]) in atomic.STORAGE_ERRNOS:
            return int(found[1])
        e = e.__cause__ or e.__context__
    return None


ORBAX_METADATA = directory_kind.ORBAX_METADATA  # what Orbax writes into every step it commits
# Where Orbax writes a step until it commits it (orbax-checkpoint 0.12: STEP.orbax-checkpoint-tmp,
# or with -TIMESTAMP after it), renamed to STEP at the commit.
_ORBAX_TMP = re.compile(r"\d+\.orbax-checkpoint-tmp.*")


def _remove_settled(path: str, tries: int = 50, pause_s: float = 0.1) -> None:
    """Removes `path` (a directory or file) until it stays gone. A save that failed in one of
    its parts (Orbax reports the first failure: the metrics' JSON) may still have the state's
    TensorStore writes in flight, which recreate what one `rmtree` removed: a
    20.orbax-checkpoint-tmp/ was left behind. Tries for at most `tries * pause_s` seconds."""
    for _ in range(tries):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.unlink(path)
        time.sleep(pause_s)  # what is still being written lands, and is removed next time
        if not os.path.lexists(path):
            return


def saved_shapes(state_dir: str) -> dict[str, Any]:
    """The shape and dtype (Orbax's ArrayMetadata) of each array of the `params` and
    `model_state` of the checkpoint in `state_dir` (a step's `state` folder, or a checkpoint
    `init_from` names), by path without its "params/" or "model_state/", from its metadata
    alone. Raises what Orbax raises for a damaged or foreign checkpoint."""
    from etils import epath

    handler = ocp.PyTreeCheckpointHandler()
    try:
        saved = handler.metadata(epath.Path(state_dir)).tree
        item = {k: saved[k] for k in ("params", "model_state") if k in saved}
    finally:
        handler.close()
    return {
        path_str(key_path).partition("/")[2]: x
        for key_path, x in jax.tree_util.tree_leaves_with_path(item)
    }


def shape_mismatch(state_dir: str, state: Any) -> str | None:
    """The first array of `state`'s model (a train state or its abstract shapes: parameters and
    model state) whose shape the checkpoint in `state_dir` (a step's `state` folder) does not
    hold, from its metadata alone: "Conv_0/kernel: (3, 3, 1, 32) in the checkpoint, (3, 3, 1,
    16) by the config" (or "none in the checkpoint", "none by the config" for an array only
    one side has); None where every shape matches, or the metadata cannot be read. What a
    refused restore names instead of Orbax's own advice (set strict=False ...)."""
    try:
        saved = saved_shapes(state_dir)
    except Exception:  # a damaged or foreign checkpoint: no shapes to compare
        return None
    every = {path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(state.params)}
    every.update(
        (path_str(p), x) for p, x in jax.tree_util.tree_leaves_with_path(state.model_state)
    )

    def shape(x: Any) -> str:
        return str(tuple(x.shape)) if x is not None else "none"

    for name in [*every, *(n for n in saved if n not in every)]:
        ours, theirs = every.get(name), saved.get(name)
        if ours is None or theirs is None or tuple(ours.shape) != tuple(theirs.shape):
            return f"{name}: {shape(theirs)} in the checkpoint, {shape(ours)} by the config"
    return None


def optimizer_mismatch(state_dir: str, state: Any) -> str | None:
    """`shape_mismatch` for the optimizer's state (`state.opt_state` against the checkpoint's
    `opt_state`, by path): "opt_state/0/1/mu/head/bias: none in the checkpoint, (10,) by the
    config" (another optimizer, or `optimizer.grad_clip_norm` turned on, by a hand edit of
    config.json); None where all match or the metadata cannot be read. Asked only after Orbax
    refused a restore, to name the cause instead of its advice (`partial_restore=True`)."""
    from etils import epath

    handler = ocp.PyTreeCheckpointHandler()
    try:
        saved_tree = handler.metadata(epath.Path(state_dir)).tree.get("opt_state")
    except Exception:  # a damaged or foreign checkpoint: nothing to compare
        return None
    finally:
        handler.close()
    saved = {
        f"opt_state/{path_str(p)}": x for p, x in jax.tree_util.tree_leaves_with_path(saved_tree)
    }
    every = {
        f"opt_state/{path_str(p)}": x
        for p, x in jax.tree_util.tree_leaves_with_path(state.opt_state)
    }
    for name in [*every, *(n for n in saved if n not in every)]:
        ours, theirs = every.get(name), saved.get(name)
        if ours is None or theirs is None or tuple(ours.shape) != tuple(theirs.shape):
            shown = [str(tuple(x.shape)) if x is not None else "none" for x in (theirs, ours)]
            return f"{name}: {shown[0]} in the checkpoint, {shown[1]} by the config"
    return None


def _aside_path(workdir: str, name: str) -> str:
    """A path under checkpoints_damaged/ no earlier one took: `name`, else `name.2`, ..."""
    base = os.path.join(workdir, DAMAGED_DIR, name)
    target, n = base, 1
    while os.path.exists(target):
        n += 1
        target = f"{base}.{n}"
    return target


def _move_aside(workdir: str, path: str, name: str) -> str:
    """Moves `path` into checkpoints_damaged/ as `name` (`_aside_path`), kept for inspection
    and recovery; returns where it went. Process 0's to call."""
    target = _aside_path(workdir, name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(path, target)
    return target


def _io_error(
    step: int, where: object, detail: object, cause: BaseException | None = None
) -> CheckpointError:
    """A read that failed with an I/O error (`detail`; `cause`, the error, where `detail` is
    not it): said as such, advising nothing destructive. A permission refused (EACCES, EPERM)
    says so and how to give it: "check the disk or mount" was no fix for it."""
    cause = cause if cause is not None else detail if isinstance(detail, BaseException) else None
    if _storage_errno(cause) in (errno.EACCES, errno.EPERM):
        return CheckpointError(
            f"reading checkpoint step {step} in {where} failed: permission denied ({detail}); "
            f"nothing was changed: give your user read permission on it (chmod -R u+rX "
            f"{where}) or ask its owner to, then rerun"
        )
    return CheckpointError(
        f"reading checkpoint step {step} in {where} failed with an I/O error ({detail}); nothing "
        "was changed: check the disk or mount and rerun"
    )


def _set_aside_strays(workdir: str) -> None:
    """Moves a step-named directory without Orbax's metadata out of checkpoints/ and
    checkpoints_best/ into checkpoints_damaged/ (kept), with a warning, before Orbax lists
    them: a `mkdir checkpoints/9999` made the run "reached step 9999" (or a damaged step), and
    one in checkpoints_best/ was exported as the best."""
    if jax.process_index() == 0:
        for sub in ("checkpoints", "checkpoints_best"):
            directory = os.path.join(workdir, sub)
            try:
                names = sorted(os.listdir(directory))
            except OSError:
                continue
            for name in names:
                path = os.path.join(directory, name)
                if not name.isdigit() or not os.path.isdir(path):
                    continue
                if os.path.exists(os.path.join(path, ORBAX_METADATA)):
                    continue
                target = _move_aside(workdir, path, f"{sub}-{name}")
                logging.warning(
                    "%s is not a checkpoint (Orbax wrote no %s in it); moved it to %s",
                    path,
                    ORBAX_METADATA,
                    target,
                )
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("ann_checkpoint_strays")


def _set_aside_damaged_best(workdir: str) -> None:
    """Before a writer's Orbax opens checkpoints_best/, which reads each step's metrics to
    rank it: a step whose metadata or metrics differ from its manifest crashed every command
    that opened the run (train, export, report) with Orbax's UnicodeDecodeError or
    JSONDecodeError traceback. It is moved to checkpoints_damaged/ with a warning (the run
    chooses its best again). Only the small files outside the step's ITEMS are hashed
    (`Checkpoints.restore` saves the best again where it is the step resumed from:
    `_resave_best`). A reader's Orbax reads no step's metadata at open (`_manager`)."""
    directory = os.path.join(workdir, "checkpoints_best")
    for step in directory_kind.committed_steps(directory):
        step_dir = os.path.join(directory, str(step))
        try:
            problem = verify_files(step_dir, skip=ITEMS)
        except OSError:
            continue  # no manifest (written on resume), or unreadable: Orbax's to say
        if problem is None:
            continue
        copy = os.path.join(workdir, "checkpoints", str(step))
        same = f"; the same step is in {copy}" if os.path.isdir(copy) else ""
        if jax.process_index() == 0:
            target = _move_aside(workdir, step_dir, f"checkpoints_best-{step}")
            logging.warning(
                "the best checkpoint, step %d in %s, is damaged (%s); moved it to %s: saved "
                "again from the step a resume starts from where that is the best, else the "
                "next eval chooses the best again%s",
                step,
                directory,
                problem,
                target,
                same,
            )
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("ann_checkpoint_damaged_best")


def _check_not_a_file(directory: str, steps: Any, best: bool) -> None:
    """Raises CheckpointError where the run's `directory` (checkpoints/, or checkpoints_best/
    where `best`) is a file, or another non-directory: "DIR is a file, so nothing can be below
    it" (`atomic.below_a_file`, as `ann train` says it), with the steps the other directory
    holds to choose instead. A best one was said to be "no eval chose a best yet" of a run
    that had, a latest one "the run saved none; train it first"."""
    why = atomic.below_a_file(os.path.join(directory, ""))
    if why is None:
        return
    other, flag = (steps.latest, "latest") if best else (steps.best, "best")
    instead = f", or choose --step={flag} (step {other[0]})" if other else ""
    if len(other) > 1:
        instead += f" or one of {', '.join(map(str, other))}"
    raise CheckpointError(
        f"no checkpoint in {directory}: {why}; move it out of the workdir (ann train refuses "
        f"the run while it is there){instead}"
    )


def _best_set_aside(workdir: str) -> tuple[int, str] | None:
    """(step, directory) of the newest best step set aside in checkpoints_damaged/ (as
    checkpoints_best-STEP[.N]), or None."""
    found = []
    try:
        names = os.listdir(os.path.join(workdir, DAMAGED_DIR))
    except OSError:
        return None
    for name in names:
        if (m := re.fullmatch(r"checkpoints_best-(\d+)(\.\d+)?", name)) is not None:
            found.append((int(m[1]), os.path.join(workdir, DAMAGED_DIR, name)))
    return max(found) if found else None


@dataclasses.dataclass
class _KeepResumable(PreservationPolicy):
    """checkpoints_best/'s preservation policy: keeps the newest best step (each one saved beat
    the one before) and the newest best step at or before `resumable()`, the newest committed
    step of checkpoints/, where a rerun resumes. Orbax kept only the newest: a best step past
    the last regular one deleted the best before it, so a save of that step that failed (a
    full disk), or a stop before it, left a rerun with no best at all, and its evals then chose
    against none (a worse one became the best) until the one deleted was beaten again."""

    resumable: Any  # () -> int: the newest committed step of checkpoints/ (-1: none)

    def should_preserve(self, checkpoints: Any, *, context: Any) -> list[bool]:
        steps = [info.step for info in checkpoints]
        last = self.resumable()
        kept = {max(steps, default=None), max((s for s in steps if s <= last), default=None)}
        return [step in kept for step in steps]


class Checkpoints:
    def __init__(
        self,
        workdir: str,
        max_to_keep: int,
        best_metric: str,
        best_mode: str,
        async_save: bool = True,
        create: bool = True,
        config_is_record: bool = True,
    ):
        """`create=False` for a reader (restore_state only): no directory is made in `workdir`,
        and a step's damage is found when that step is restored (`restore_state`). A writer
        first sets aside step-named directories Orbax never wrote (`_set_aside_strays`) and
        best steps whose metadata is damaged (`_set_aside_damaged_best`). `config_is_record`:
        the model restored into is the one the run's config.json describes (a reader's, a
        rerun's that the config compare passed), so a step that does not fit it says that
        config.json does not match the checkpoints (`mismatch_error`); False where this start
        wrote config.json (it found none beside checkpoints)."""
        self.workdir = os.path.abspath(workdir)
        self._config_is_record = config_is_record
        self._writer = create
        if create:
            _set_aside_strays(self.workdir)
            _set_aside_damaged_best(self.workdir)
        self.best_metric = best_metric
        self.best_mode = best_mode
        # The newest committed step of checkpoints/, where a rerun resumes (`_KeepResumable`).
        self._resumable = -1
        # A stop (Ctrl-C, SIGTERM) while opening lands once each manager's removal of stale
        # temporary saves, begun in a thread at open, is done: a stopped start removes its
        # workdir, and that thread must not be listing it then.
        with cli.interrupts_deferred():
            self.latest = _manager(self.workdir, "latest", create, async_save, max_to_keep)
            try:
                self.best = _manager(
                    self.workdir,
                    "best",
                    create,
                    async_save,
                    max_to_keep=None,
                    best_fn=lambda metrics: metrics[best_metric],
                    best_mode=best_mode,
                    keep_checkpoints_without_metrics=False,
                    preservation_policy=_KeepResumable(lambda: self._resumable),
                )
            finally:
                _await_tmp_cleanup(self.latest)
            _await_tmp_cleanup(self.best)
        if create:
            self._resumable = next(iter(self._complete_steps(self.latest)), -1)
        best = self.best_metrics().get(best_metric)
        # Saved steps whose commit (and manifest) is not yet confirmed, per manager.
        self._unsealed: dict[int, list[int]] = {id(self.latest): [], id(self.best): []}
        self._failed = False  # a save failed and was reported
        self._failed_saves: list[tuple[ocp.CheckpointManager, int]] = []  # removed at `close`
        self._hasher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="manifest")
        self._manifests: list[tuple[ocp.CheckpointManager, int, concurrent.futures.Future]] = []
        self._best_value = best if isinstance(best, int | float) and math.isfinite(best) else None
        self.passed_over: list[int] = []  # damaged steps the resume passed over (`restore`)
        self.best_set_aside: str | None = None  # where `forget_best_after` moved the best

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def saved_step(self) -> int | None:
        """The newest step committed on disk: what a rerun resumes from. After `close`, where
        `latest_step` may not know a save that a Ctrl-C interrupted the wait for (Orbax then
        drops the step from its list, though its finalize thread goes on to commit it)."""
        steps = self._complete_steps(self.latest)
        return steps[0] if steps else None

    def _step_dir(self, manager: ocp.CheckpointManager, step: int) -> str:
        return os.path.join(str(manager.directory), str(step))

    def _complete_steps(self, manager: ocp.CheckpointManager, but: int | None = None) -> list[int]:
        """Committed steps on disk (newest first), from the directory itself: step-named
        directories Orbax wrote (a stray `mkdir checkpoints_best/9999` is none)."""
        return directory_kind.committed_steps(str(manager.directory), but)

    def _save_failed(self, manager: ocp.CheckpointManager, step: int, e: BaseException) -> str:
        last = self._complete_steps(self.latest, but=step)
        where = (
            f"the last complete checkpoint is step {last[0]} in {self.latest.directory}"
            if last
            else "there is no complete checkpoint yet"
        )
        code = _storage_errno(e)
        if code is None and not _has_os_error(e):
            # Not the storage: what was saved (a metric the best checkpoint records as JSON
            # was an np.float32), so no disk or permission advice; the traceback is logged.
            logging.error("saving checkpoint step %d failed", step, exc_info=e)
            return (
                f"saving checkpoint step {step} to {manager.directory} failed "
                f"({type(e).__name__}: {e}); {where}; this is no storage fault (nothing about "
                "the disk or its permissions) but one in what was saved: the run's state or "
                "the metrics the best checkpoint records (the traceback above says which); "
                "nothing of the save was kept"
            )
        if code is None:
            detail = f"{type(e).__name__}: {e}"
            fix = f"check the disk or mount of {manager.directory}"
        else:  # the errno's words, not Orbax's or TensorStore's paragraph around them
            detail = os.strerror(code)
            fix = {
                errno.EACCES: f"fix the permissions of {manager.directory}",
                errno.EPERM: f"fix the permissions of {manager.directory}",
                errno.EROFS: "make its file system writable",
            }.get(code) or atomic.storage_fix(code)
        rerun = "to resume from it" if last else "(it starts over)"
        # Another workdir is no way around this process's own file size limit (`ulimit -f`).
        limited = code == errno.EFBIG and atomic.file_size_limit() is not None
        elsewhere = "" if code is None or limited else ", or give another --workdir"
        if elsewhere and last:
            elsewhere += " (which starts over)"
        return (
            f"saving checkpoint step {step} to {manager.directory} failed ({detail}); {where}; "
            f"{fix}, then rerun the same command {rerun}{elsewhere}"
        )

    def _fail(
        self, manager: ocp.CheckpointManager, step: int, e: BaseException
    ) -> CheckpointSaveError:
        """The error for a failed save of `step` (`_save_failed`), recorded: `close` removes
        what the save wrote."""
        self._failed = True
        self._failed_saves.append((manager, step))
        return CheckpointSaveError(self._save_failed(manager, step, e))

    def _remove_failed_saves(self) -> None:
        """Removes what failed saves wrote, once no save is in flight (`close`): Orbax's
        temporary directories (STEP.orbax-checkpoint-tmp*) in both directories, a failed
        step's directory that Orbax never committed (no metadata), and a best step past the
        newest complete step of checkpoints/ (the best copy of a step whose regular save
        failed: the rerun, which resumes from that newest step, deletes it as past its start,
        `forget_best_after`). A full disk left them holding the space its error asks the user
        to free, until the rerun removed them (the workdir's lock makes this run their only
        writer). The steps a rerun resumes from, and the best at or before them, are kept
        (`_prune_best`). Process 0's to call."""
        for manager in (self.latest, self.best):
            directory = str(manager.directory)
            failed = {step for m, step in self._failed_saves if m is manager}
            committed = set(self._complete_steps(manager))
            try:
                names = os.listdir(directory)
            except OSError:
                continue
            for name in names:
                partial = name.isdigit() and int(name) in failed - committed
                if partial or _ORBAX_TMP.fullmatch(name):
                    _remove_settled(os.path.join(directory, name))

    def _prune_best(self) -> None:
        """Leaves in checkpoints_best/, once no save is in flight (`close`), what
        `_KeepResumable` keeps: the newest best step at or before the newest complete step of
        checkpoints/ (what a rerun resumes from keeps), and the newest best step, unless a
        save failed and left it past that step (the rerun deletes it as past its start,
        `forget_best_after`, so it only held the space the error asks the user to free). A
        best past damaged steps passed over is this run's own, kept. Process 0's to call."""
        steps = self._complete_steps(self.best)
        newest = next(iter(self._complete_steps(self.latest)), -1)
        kept = {*[s for s in steps if s <= newest][:1]}
        if steps and (not self._failed or self.passed_over):
            kept.add(steps[0])
        for step in steps:
            if step not in kept:
                shutil.rmtree(self._step_dir(self.best, step), ignore_errors=True)

    def _seal(self, manager: ocp.CheckpointManager) -> None:
        """Waits for the manager's save in flight; then writes the manifest of each step it has
        committed. A failed async save surfaces here, as a CheckpointSaveError naming it."""
        pending = self._unsealed[id(manager)]
        try:
            manager.wait_until_finished()
        except Exception as e:
            step = pending[-1] if pending else -1
            pending.clear()
            raise self._fail(manager, step, e) from e
        while pending:
            step = pending.pop(0)
            if manager is self.latest:  # committed: a rerun resumes from it (`_KeepResumable`)
                self._resumable = max(self._resumable, step)
            if jax.process_index() == 0:  # hashed off the loop's thread: it reads every byte
                step_dir = self._step_dir(manager, step)
                future = self._hasher.submit(_write_manifest_if_kept, step_dir)
                self._manifests.append((manager, step, future))
        self._check_manifests(block=False)

    def seal_finished(self) -> None:
        """Writes the manifests of saves Orbax has finished committing, without waiting: the
        training loop calls it at every host sync. Else a step's manifest waited for the next
        save, and a run killed in between left its newest step to be restored unverified. One
        process only: in a multi-process run, waiting is a collective the processes must
        enter together, so manifests are written at the next save there."""
        if jax.process_count() > 1:
            return
        for manager in (self.latest, self.best):
            if self._unsealed[id(manager)] and not manager.is_saving_in_progress():
                self._seal(manager)

    def _check_manifests(self, block: bool) -> None:
        """Raises a CheckpointSaveError for a manifest that could not be written (waiting for
        those in progress when `block`)."""
        while self._manifests and (block or self._manifests[0][2].done()):
            manager, step, future = self._manifests.pop(0)
            try:
                future.result()
            except OSError as e:
                raise self._fail(manager, step, e) from e

    def _save(self, manager: ocp.CheckpointManager, step: int, args: Any, **kw: Any) -> bool:
        self._seal(manager)
        # Probed first (a directory made and removed): a directory Orbax cannot create its
        # step in failed in its threads, with three tracebacks, and the process then waited
        # 300 s on their signals before it exited.
        why = atomic.why_not_creatable(str(manager.directory))
        if why is not None:
            error = PermissionError(f"{manager.directory} {why}")
            if atomic.READ_ONLY in why:  # said as one: "make its file system writable"
                error = OSError(errno.EROFS, f"{manager.directory} {why}")
            raise self._fail(manager, step, error)
        try:
            saved = manager.save(step, args=args, **kw)
        except Exception as e:
            raise self._fail(manager, step, e) from e
        if saved:
            self._unsealed[id(manager)].append(step)
        return saved

    def save(self, step: int, state: Any, data_iter: Any, force: bool = False) -> bool:
        """Saves (async where configured) `state` and the data position as step `step`. The
        caller has checked that `state` is finite. Raises CheckpointSaveError if this save, or
        the previous async one, failed."""
        if step == self.latest.latest_step():
            return False
        return self._save(self.latest, step, _save_args(state, data_iter), force=force)

    def best_metrics(self) -> dict:
        """`{"step": N, **eval metrics}` of the best checkpoint so far, or {} if there is none."""
        step = self.best.best_step()
        metrics = self.best.metrics(step) if step is not None else None
        return {"step": int(step), **metrics} if metrics else {}

    def forget_best_after(self, step: int) -> int | None:
        """Deletes the best checkpoints past `step`, where training (re)starts: an earlier
        attempt's, stopped before its first regular checkpoint (a fresh start, step 0) or after
        its last one. A rerun with another config reported and exported it as its own best.
        The best at or before `step` (`_KeepResumable` kept it) is then the one the next eval
        must beat, as in a run that never stopped. Returns the newest step deleted, or None.
        Where this start passed over damaged steps (`restore`: `passed_over`), the best is this
        run's own, past them: moved to checkpoints_damaged/ instead (`best_set_aside`, the
        newest's place), not deleted as an earlier attempt's."""
        past = sorted((s for s in self.best.all_steps() if s > step), reverse=True)
        if not past:
            return None
        self._seal(self.best)
        if self.passed_over:  # this run's own best, past damaged steps: kept, not deleted
            for best in past:
                target = _aside_path(self.workdir, f"checkpoints_best-{best}")
                if jax.process_index() == 0:
                    _move_aside(
                        self.workdir, self._step_dir(self.best, best), f"checkpoints_best-{best}"
                    )
                self.best_set_aside = self.best_set_aside or target  # the newest's
            if jax.process_count() > 1:
                multihost_utils.sync_global_devices("ann_checkpoint_best_past_damage")
            self.best.reload()
        else:
            for best in past:
                self.best.delete(best)
        # The best at or before `step` that `_KeepResumable` kept, as a run that never
        # stopped there had it: the next eval must beat it, not none.
        value = self.best_metrics().get(self.best_metric)
        self._best_value = (
            value if isinstance(value, int | float) and math.isfinite(value) else None
        )
        return past[0]

    def save_if_best(self, step: int, state: Any, data_iter: Any, metrics: dict) -> bool:
        """Saves to `checkpoints_best/` when `metrics[best_metric]` beats the best so far. A
        non-finite value (NaN, inf) is never the best."""
        if self.best_metric not in metrics:  # only validation metrics choose (config.py)
            names = sorted(k for k in metrics if k.startswith(SELECTION_PREFIX))
            raise ConfigError(
                f"config key 'best_metric': {self.best_metric!r} {NOT_A_METRIC_OF_THIS_RUN}"
                f"{meant_metric(self.best_metric, names)}; choose one of {', '.join(names)}"
            )
        value, best = metrics[self.best_metric], self._best_value
        if not math.isfinite(value):
            logging.warning("eval at step %d: %s is %s; not a best", step, self.best_metric, value)
            return False
        better = best is None or (value > best if self.best_mode == "max" else value < best)
        if better and step != self.best.latest_step():
            # The regular save in flight (an earlier step's: the eval hook runs first) is
            # committed, so `_KeepResumable` keeps the best before this one that a resume from
            # it keeps. Begun `checkpoint_every_steps` ago, it is mostly done: no wait.
            self._seal(self.latest)
            self._save(self.best, step, _save_args(state, data_iter), metrics=metrics, force=True)
            self._best_value = value
        return better

    def _check(self, manager: ocp.CheckpointManager, step: int) -> str | None:
        """The damage found in a step's files (None: intact or unverifiable). I/O errors raise
        a CheckpointError that says so and advises nothing destructive."""
        step_dir = self._step_dir(manager, step)
        try:
            return verify_files(step_dir)
        except FileNotFoundError as e:
            if os.path.isdir(step_dir):
                why = (
                    f"its {e}"
                    if isinstance(e, ManifestUnreadable)
                    else f"it has no {MANIFEST} (the run is still saving it, the process "
                    "stopped right after the save, or it was saved before manifests)"
                )
                logging.warning(
                    "checkpoint step %d in %s cannot be verified: %s; restoring it unverified "
                    "(a resume from it writes the manifest again from its files)",
                    step,
                    manager.directory,
                    why,
                )
                return None
            return "the step directory is missing"
        except OSError as e:
            raise _io_error(step, manager.directory, e) from e

    def _read(self, manager: ocp.CheckpointManager, step: int, args: Any) -> Any:
        """Orbax's restore of `args` (a Composite whose `state` is a StandardRestore), with its
        errors sorted: I/O, or a state that does not fit. A model of other shapes than the
        step's (config.json edited by hand) is refused from the step's metadata before Orbax is
        asked (`shape_mismatch`): Orbax refused it too, but the reads of the other arrays it
        had started were left pending, and their coroutines, collected at some later point,
        printed "Exception ignored in: <coroutine object _read_array_index_and_device_put>"
        with a traceback each (about 1,200 lines) after the one-line error, now and then."""
        mismatch = shape_mismatch(
            os.path.join(self._step_dir(manager, step), "state"), args.state.item
        )
        if mismatch is not None:
            raise _Unreadable(f"the model's shapes differ: {mismatch}")
        try:
            return manager.restore(step, args=args)
        except Exception as e:
            if _is_io_error(e):
                raise _io_error(step, manager.directory, f"{type(e).__name__}: {e}", e) from e
            raise _Unreadable(f"{type(e).__name__}: {e}") from e

    def _load(self, step: int, abstract_state: Any) -> tuple[Any, str | None]:
        """(restored state and data position, None) for an intact step of `checkpoints/`, or
        (None, what is wrong) for a damaged one. Raises CheckpointError for an I/O error and
        for an intact step that does not fit `abstract_state`."""
        problem = self._check(self.latest, step)
        if problem is not None:
            return None, problem
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
        )
        try:
            restored = self._read(self.latest, step, args)
        except _Unreadable as e:
            step_dir = self._step_dir(self.latest, step)
            if not has_manifest(step_dir):
                return None, f"it cannot be read and has no manifest to tell why ({e})"
            state_dir = os.path.join(step_dir, "state")
            mismatch = shape_mismatch(state_dir, abstract_state) or optimizer_mismatch(
                state_dir, abstract_state
            )
            record = config_file_in(self.workdir)
            if mismatch is not None and self._config_is_record:
                # The rerun's model is config.json's (the config compare refuses any other):
                # config.json was edited, and the rerun given its values.
                raise CheckpointError(mismatch_error(self.workdir, step, mismatch)) from e
            # Its files are as saved: the config, not the bytes, differs.
            raise CheckpointError(
                f"checkpoint step {step} in {self.latest.directory} is intact but does not fit "
                f"this config ({mismatch or e}); rerun with the config it was saved with "
                f"({record}), or start a new --workdir"
            ) from e
        if not _finite(restored.state):
            return None, "it holds non-finite values (NaN or inf)"
        return restored, None

    def restore(self, abstract_state: Any, data_iter: Any) -> tuple:
        """Restores (state, step) from the newest intact step into `abstract_state`'s shapes and
        shardings, and the data iterator in place. A damaged step with an intact copy in the
        other directory (the best step is saved to both) is repaired from it (`_repair`); other
        damaged steps are moved to `checkpoints_damaged/` with a warning naming the file, and
        passed over; the step resumed from is logged. Then the best checkpoint a resume keeps
        is verified, and repaired or set aside (`_check_best`)."""
        damaged: list[tuple[int, str]] = []
        for step in self._complete_steps(self.latest):
            restored, problem = self._load(step, abstract_state)
            # Passed over, the run resumed from an older step and then deleted the intact
            # best copy of this step as a best "past where training starts".
            if problem is not None and self._repair(self.latest, step, problem):
                restored, problem = self._load(step, abstract_state)
            copied = problem is not None and (restored := self._best_copy(step, abstract_state))
            if restored is None:
                damaged.append((step, problem))
                continue
            try:
                data_iter.set_state(restored.data)
            except (ValueError, KeyError, TypeError) as e:
                raise CheckpointError(
                    f"checkpoint step {step} in {self.latest.directory} holds a data position "
                    f"this data set does not have ({e}); rerun with the data config it was "
                    f"saved with ({config_file_in(self.workdir)})"
                ) from e
            if copied:  # damage outside its items (its own metadata): saved again by Orbax
                self._set_aside([*damaged, (step, problem)], step)
                self._save(self.latest, step, _save_args(restored.state, data_iter), force=True)
                self._seal(self.latest)
                if jax.process_index() == 0:
                    logging.warning(
                        "saved checkpoint step %d again in %s from its intact copy in %s, "
                        "resumed from it",
                        step,
                        self.latest.directory,
                        self.best.directory,
                    )
            else:
                self._set_aside(damaged, step)
            self.passed_over = [s for s, _ in damaged]
            self._resumable = step  # not a damaged step passed over (`_KeepResumable`)
            self._check_best(step)
            self._write_missing_manifests(step)  # before: a best saved again has its own
            self._resave_best(step, restored.state, data_iter)
            return restored.state, step
        listing = "; ".join(f"step {s}: {p}" for s, p in damaged)
        raise CheckpointError(
            f"no checkpoint in {self.latest.directory} can be restored ({listing}); they are "
            f"left in place: start a new --workdir, or rerun here with init_from set to an "
            "export or another run"
        )

    def _best_copy(self, step: int, abstract_state: Any) -> Any:
        """The state and data position of `step` from its copy in checkpoints_best/, where that
        copy is intact and finite, else None: a step of checkpoints/ damaged outside the items
        `_repair` replaces (Orbax's metadata, ann's manifest) was passed over, the run
        retraining from an older step with an intact copy beside it."""
        if step not in self._complete_steps(self.best):
            return None
        try:
            if verify_files(self._step_dir(self.best, step)) is not None:
                return None
        except OSError:
            return None  # no manifest (unverifiable) or unreadable: not a copy to trust
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
        )
        try:
            restored = self._read(self.best, step, args)
        except _Unreadable:
            return None
        return restored if _finite(restored.state) else None

    def _repair(self, manager: ocp.CheckpointManager, step: int, problem: str) -> bool:
        """Repairs a damaged step of `manager` from its intact copy in the other directory
        (`_repair_items`), with a warning naming both; process 0 writes, every process then
        reads it back. Returns whether it was repaired."""
        other = self.best if manager is self.latest else self.latest
        if step not in self._complete_steps(other):
            return False
        step_dir, twin = self._step_dir(manager, step), self._step_dir(other, step)
        # Decided alike by every process (the files are shared): each then reads the step
        # again, and a multi-process read is collective.
        try:
            if verify_files(twin) is not None or not _repairable(step_dir):
                return False  # the copy damaged too, or damage outside the items
        except FileNotFoundError:
            return False  # a manifest missing: unverifiable, no repair
        except OSError as e:
            raise _io_error(step, f"{manager.directory} or {other.directory}", e) from e
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("ann_checkpoint_repairing")
        aside = _aside_path(self.workdir, f"{os.path.basename(str(manager.directory))}-{step}")
        if jax.process_index() == 0:
            _repair_items(step_dir, twin, aside)
            logging.warning(
                "checkpoint step %d in %s is damaged (%s); repaired from its intact copy in %s "
                "(the damaged files moved to %s)",
                step,
                manager.directory,
                problem,
                other.directory,
                aside,
            )
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("ann_checkpoint_repaired")
        return True

    def _resave_best(self, resumed: int, state: Any, data_iter: Any) -> None:
        """Saves the best checkpoint again where checkpoints_best/ holds none and the step
        resumed from, whose intact state and data position are in hand, is the best of the
        evals metrics.jsonl recorded up to it (by `best_metric` and `best_mode`; the first of
        equals, as `save_if_best` keeps it), with that eval's metrics: one set aside for
        damaged metadata (`_set_aside_damaged_best`), or lost (a Ctrl-C deleted it, or a
        hand), left a finished run, which evaluates no more, with no best. Else the next eval
        chooses it."""
        if self.best.latest_step() is not None:
            return
        from ann.train.writers import read_records

        best: dict = {}
        for record in read_records(os.path.join(self.workdir, "metrics.jsonl")):
            value, step = record.get(self.best_metric), record.get("step")
            if not isinstance(step, int) or step > resumed:
                continue
            if not isinstance(value, int | float) or not math.isfinite(value):
                continue
            kept = best.get(self.best_metric)
            if kept is None or (value > kept if self.best_mode == "max" else value < kept):
                best = record
        if best.get("step") != resumed:
            return
        metrics = {k: v for k, v in best.items() if k != "step"}
        self._save(self.best, resumed, _save_args(state, data_iter), metrics=metrics, force=True)
        self._seal(self.best)
        self._best_value = metrics[self.best_metric]
        if jax.process_index() == 0:
            logging.warning(
                "saved the best checkpoint, step %d, again in %s from the state resumed (its "
                "%s %s, the best metrics.jsonl records up to it)",
                resumed,
                self.best.directory,
                self.best_metric,
                self._best_value,
            )

    def _check_best(self, resumed: int) -> None:
        """Verifies the best checkpoint a resume keeps (the newest best step at or before
        `resumed`): it was read only by export and report, so a damaged one stayed while
        max_to_keep removed its intact copy from checkpoints/, and export failed for good. A
        damaged best is repaired from that copy (`_repair`); without one it is moved to
        checkpoints_damaged/ with a warning, and the next eval chooses the best again. Costs
        the hashing of one step's files."""
        kept = [s for s in self._complete_steps(self.best) if s <= resumed][:1]
        if not kept:
            return
        step = kept[0]
        try:
            problem = verify_files(self._step_dir(self.best, step))
        except FileNotFoundError:
            return  # no manifest: `_write_missing_manifests` writes one from its files
        except OSError as e:
            raise _io_error(step, self.best.directory, e) from e
        if problem is None or self._repair(self.best, step, problem):
            return
        if jax.process_index() == 0:
            target = _move_aside(
                self.workdir, self._step_dir(self.best, step), f"checkpoints_best-{step}"
            )
            logging.warning(
                "the best checkpoint, step %d in %s, is damaged (%s) and has no intact copy; "
                "moved it to %s: the next eval chooses the best again (until then export and "
                "report take --step=latest or a step number)",
                step,
                self.best.directory,
                problem,
                target,
            )
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("ann_checkpoint_best_set_aside")
        self.best.reload()
        self._best_value = None

    def _write_missing_manifests(self, resumed: int) -> None:
        """On resume, writes the manifest of the step resumed from (its files were just read
        back whole and finite) and of the best checkpoint (committed: Orbax wrote its metadata)
        where it lacks one (the process stopped between the commit and the manifest, or the
        step predates manifests), with a warning: else each stayed unverified for good, the
        best one (export's and report's default) until beaten. A best past `resumed` is left:
        the run removes it (`forget_best_after`). Process 0, on the hashing thread."""
        if jax.process_index() > 0:
            return
        best = [s for s in self._complete_steps(self.best) if s <= resumed][:1]
        for manager, step in [(self.latest, resumed), *((self.best, s) for s in best)]:
            step_dir = self._step_dir(manager, step)
            if has_manifest(step_dir):
                continue
            why = (
                f"an unreadable {MANIFEST} (truncated, or edited by hand)"
                if os.path.exists(os.path.join(step_dir, MANIFEST))
                else f"no {MANIFEST} (the process stopped right after saving it, or it was "
                "saved before manifests)"
            )
            logging.warning(
                "checkpoint step %d in %s had %s; writing one from its files as they are now, "
                "so later reads verify them",
                step,
                manager.directory,
                why,
            )
            future = self._hasher.submit(_write_manifest_if_kept, step_dir)
            self._manifests.append((manager, step, future))

    def _set_aside(self, damaged: list[tuple[int, str]], resumed: int) -> None:
        """Moves damaged steps out of Orbax's way (so training can save those step numbers
        again), keeping their files for inspection, and says what happened."""
        if not damaged:
            return
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("ann_checkpoint_restored")
        for step, problem in damaged:
            target = _aside_path(self.workdir, str(step))
            if jax.process_index() == 0:
                _move_aside(self.workdir, self._step_dir(self.latest, step), str(step))
            logging.warning(
                "checkpoint step %d is damaged (%s); moved it to %s; resumed from step %d, the "
                "newest intact checkpoint",
                step,
                problem,
                target,
                resumed,
            )
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("ann_checkpoint_set_aside")
        self.latest.reload()

    def restore_state(self, abstract_state: Any, step: int | str = "latest") -> tuple:
        """Only the train state (no data iterator): `step` is "latest", "best" or a number (in
        checkpoints/, or the best step in checkpoints_best/ after checkpoints/ dropped it).
        Verified like `restore`, but with no fallback to another step: a damaged step is
        restored from its intact copy in the other directory (the best step is in both), else
        an error naming the file and the other steps to choose from instead."""
        manager = self.best if step == "best" else self.latest
        steps = directory_kind.saved_steps(self.workdir)  # (a stray step-named one is none)
        if step not in ("best", "latest"):
            step = int(step)
            # A step checkpoints/ dropped may be the best, restored from checkpoints_best/.
            if steps.holder(step) == directory_kind.CHECKPOINTS_BEST:
                manager = self.best
        in_manager = steps.best if manager is self.best else steps.latest
        if step in ("best", "latest"):  # the newest Orbax wrote
            step = next(iter(in_manager), None)
        if step is None:
            _check_not_a_file(manager.directory, steps, manager is self.best)
            pid = run_status.live_owner(run_status.read(self.workdir))
            if pid is not None:  # its first save is still to come
                raise CheckpointError(
                    f"no checkpoint in {manager.directory} yet: the run is still training (pid "
                    f"{pid}) and has saved none; try again after its first "
                    f"{'eval' if manager is self.best else 'checkpoint'}"
                )
            aside = _best_set_aside(self.workdir) if manager is self.best else None
            if aside is not None and steps.latest:  # not "no eval chose a best yet"
                step, where = aside
                copy = f"--step={step} (its copy in checkpoints/), " if step in steps.latest else ""
                raise CheckpointError(
                    f"no checkpoint in {manager.directory}: its best, step {step}, was set aside "
                    f"as damaged ({where}); choose {copy}--step=latest (step {steps.latest[0]}) "
                    f"or one of {', '.join(map(str, steps.latest))}"
                )
            if steps.latest:  # stopped before its first eval chose a best
                raise CheckpointError(
                    f"no checkpoint in {manager.directory} (the run saved none there: no eval "
                    f"chose a best yet); choose --step=latest (step {steps.latest[0]}) or one "
                    f"of {', '.join(map(str, steps.latest))}"
                )
            record = run_status.read(self.workdir) or {}
            if record.get("status") == "diverged":  # "train it first" there would diverge again
                raise CheckpointError(
                    f"no checkpoint in {manager.directory}: the run diverged at step "
                    f"{record.get('step')} before its first save; train again in a new --workdir "
                    "(a lower learning rate, see its run_status.json)"
                )
            raise CheckpointError(
                f"no checkpoint in {manager.directory}: the run saved none; train it first "
                f"(ann train --workdir={self.workdir} ...)"
            )
        step = int(step)
        others = [s for s in steps.latest if s != step]
        # What to do, not only what is there: with both copies of a step damaged, the error
        # ended "steps in ...: 400, 200".
        choose = (
            f"; choose --step=N of the steps in {self.latest.directory}: "
            f"{', '.join(map(str, others))}"
            if others
            else f"; steps in {self.latest.directory}: none"
        )
        best = [s for s in steps.best if s != step]
        choose += directory_kind.best_beside(best, others)  # restorable by number too
        if step not in in_manager:
            raise CheckpointError(f"no checkpoint step {step} in {manager.directory}{choose}")
        # The best step is saved to both directories from one state (a best past a restart is
        # deleted, `forget_best_after`): a damaged copy falls back on the other's, verified
        # alike, and the error (both damaged) lists the other steps only.
        copies = [manager] + [
            m
            for m in (self.latest, self.best)
            if m is not manager and step in self._complete_steps(m)
        ]
        damaged: list[str] = []
        for copy in copies:
            state, problem = self._restore_copy(copy, step, abstract_state, choose)
            if problem is None:
                if damaged:
                    logging.warning(
                        "checkpoint step %d in %s is damaged (%s); restored its copy in %s",
                        step,
                        manager.directory,
                        damaged[0],
                        copy.directory,
                    )
                return state, step
            damaged.append(problem)
        also = "".join(
            f", and so is its copy in {m.directory} ({p})" for m, p in zip(copies[1:], damaged[1:])
        )
        raise CheckpointError(
            f"checkpoint step {step} in {manager.directory} is damaged ({damaged[0]}){also}{choose}"
        )

    def _restore_copy(
        self, manager: ocp.CheckpointManager, step: int, abstract_state: Any, choose: str
    ) -> tuple[Any, str | None]:
        """(the train state of `step` in `manager`, None), or (None, what is damaged). Raises
        CheckpointError for an intact step that does not fit `abstract_state`."""
        problem = self._check(manager, step)
        if problem is not None:
            return None, problem
        try:
            restored = self._read(
                manager, step, ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
            )
        except _Unreadable as e:
            state_dir = os.path.join(self._step_dir(manager, step), "state")
            mismatch = shape_mismatch(state_dir, abstract_state) or optimizer_mismatch(
                state_dir, abstract_state
            )
            if mismatch is not None:  # not Orbax's advice (set strict=False ...), nor --step
                raise CheckpointError(mismatch_error(self.workdir, step, mismatch)) from e
            raise CheckpointError(
                f"checkpoint step {step} in {manager.directory} cannot be restored into "
                f"this config ({e}){choose}"
            ) from e
        if not _finite(restored.state):
            return None, "it holds non-finite values (NaN or inf)"
        return restored.state, None

    def wait(self) -> None:
        """Waits for saves in flight and their manifests; raises CheckpointSaveError if one
        failed."""
        try:
            self._seal(self.latest)
        finally:
            self._seal(self.best)
        self._check_manifests(block=True)

    def close(self) -> None:
        """Finishes the saves in flight and closes. A step whose wait a Ctrl-C interrupted (left
        unsealed) is committed by the managers' closing: its manifest is written then."""
        for manager in (self.latest, self.best):
            try:
                manager.close()
            except Exception:
                if not self._failed:  # else already raised as a CheckpointSaveError
                    raise
        self._hasher.shutdown(wait=True)
        if self._failed and jax.process_index() == 0:
            self._remove_failed_saves()
        if self._writer and jax.process_index() == 0:  # a reader changes nothing
            self._prune_best()
        if jax.process_index() == 0:
            for manager in (self.latest, self.best):
                committed = self._complete_steps(manager)
                for step in self._unsealed[id(manager)]:
                    if step in committed:
                        _write_manifest_if_kept(self._step_dir(manager, step))


def _manager(
    workdir: str, kind: str, create: bool, async_save: bool, max_to_keep: int | None, **options: Any
) -> ocp.CheckpointManager:
    """The Orbax manager of WORKDIR/checkpoints (`kind` "latest") or checkpoints_best ("best")."""
    return ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints" if kind == "latest" else "checkpoints_best"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            multiprocessing_options=_barrier_names(kind),
            create=create,
            # A save cut short (Ctrl-C, a kill) leaves STEP.orbax-checkpoint-tmp-*: the
            # workdir's lock makes this the only writer, so one found at open is stale.
            cleanup_tmp_directories=create,
            # A reader ranks no steps: reading every step's metadata and metrics at open made
            # one damaged best step refuse every step of the run (export --step=latest too).
            lightweight_initialize=not create,
            **options,
        ),
    )


def _await_tmp_cleanup(manager: ocp.CheckpointManager) -> None:
    """Waits for the removal of stale temporary save directories that Orbax starts in a thread
    at open (`cleanup_tmp_directories`); Orbax itself waits only at the first save, and its
    `close` not at all (orbax-checkpoint 0.11-0.12), so a start stopped before its first save
    removed its workdir under that thread, whose FileNotFoundError traceback then followed
    ann train's line."""
    wait = getattr(manager, "_maybe_await_cleanup_tmp_directory", None)  # private: may go
    if wait is not None:
        wait()


class _Unreadable(Exception):
    """Orbax could not restore a step for a reason other than I/O."""
