"""A rerun's config against the run's record: what may change on resume, and what changed.

`config.json` is written once, at a fresh start: the run's record (export and restore read it).
A rerun may change only the keys in `ann.config.RESUME_MAY_CHANGE` (how long, how often, where);
each resume whose config differs from the previous run's appends a line to
`WORKDIR/config_changes.jsonl`: {step, time, changes: {key: [value in config.json, new value]}},
so the record plus the last line is the latest run's config.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from ann import atomic, directory_kind
from ann import config as config_lib
from ann.train import build, hooks, optimizers, run_status, transfer, writers

CONFIG_CHANGES = config_lib.CONFIG_CHANGES


def has_checkpoint(workdir: str) -> bool:
    """Whether `workdir` holds a saved step, i.e. this is a rerun, not a fresh start."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    return os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir))


# What an earlier attempt in the workdir recorded that a reader takes for the run's own (README
# "What a run writes"): a fresh start (no checkpoint to resume from: checkpoints/ deleted, or
# an attempt stopped before its first one) removes them. config_changes.jsonl's last line was
# read as the new run's latest config (export calibrated as the earlier attempt's rerun had
# said), run_status.json as how it ended (a fresh state reported `early_stopped`), and
# init_from.json as where its weights came from. The rest is rewritten at each start
# (config.json, data_dir.json, parameters.tsv), dropped by the start (metrics.jsonl's lines,
# TensorBoard's points, checkpoints_best/'s steps past 0: `Checkpoints.forget_best_after`), or
# kept as what it is (checkpoints_damaged/, kept for inspection; report/, a dated report of
# the model it names; profile/, traces in directories named by their time).
EARLIER_ATTEMPT = (CONFIG_CHANGES, run_status.FILENAME, transfer.REPORT)


def earlier_attempt_files(workdir: str) -> list[str]:
    """The names of `EARLIER_ATTEMPT` in `workdir`: at a fresh start, an earlier attempt's."""
    return [n for n in EARLIER_ATTEMPT if os.path.lexists(os.path.join(workdir, n))]


def remove_earlier_attempt(workdir: str, names: Iterable[str]) -> None:
    """Removes `names` (`earlier_attempt_files`) from `workdir`, at a fresh start (process 0)."""
    for name in names:
        try:
            os.remove(os.path.join(workdir, name))
        except FileNotFoundError:
            pass


def compare(
    config: ml_collections.ConfigDict,
    workdir: str,
    state: Any,
    validation_names: Callable[[], Iterable[str]] | None = None,
    config_flag: str = "",
) -> tuple[ml_collections.ConfigDict | None, dict]:
    """On a rerun: (the saved config, the allowed changes from it as {key: (old, new)}), or a
    ConfigError naming each key that would change what is trained, and `init_from` where the
    run's weights load into `state`'s model (the config's abstract train state). A misspelt
    selection metric is named first (`check_selection_metrics`; `validation_names()` gives the
    `val/` names a run of `config` computes, asked only where the run has recorded none). At a
    fresh start (None, {})."""
    if has_checkpoint(workdir) and directory_kind.RUN in directory_kind.of(workdir):
        saved = config_lib.read(workdir)
        # A damaged config_changes.jsonl is refused here, before the restore moves or writes
        # anything (`record` reads it once the run is restored).
        config_lib.changes_records(workdir)
        # A misspelt metric is not a config change.
        check_selection_metrics(config, workdir, saved, validation_names)
        skip = tuple(config.init_from_skip)
        # Another experiment or model family: a workdir given by mistake, not a run to start
        # from (a seq2seq run's decoder loads into a causal LM by the rule, which nobody means).
        same_kind = saved.get("experiment") == config.get("experiment") and saved.get(
            "model", {}
        ).get("name") == config.get("model", {}).get("name")
        try:
            return saved, config_lib.check_resume(
                saved,
                config,
                workdir,
                (lambda: init_from_spec(workdir, state, skip)) if same_kind else None,
                config_flag,
            )
        except config_lib.ConfigError:
            if same_kind:  # config.json edited by hand: "rerun with its values" cannot restore
                _check_record_fits(saved, workdir)
            raise
    return None, {}


def _check_record_fits(saved: ml_collections.ConfigDict, workdir: str) -> None:
    """Raises ConfigError (`checkpoint.mismatch_error`) where the run's config.json (`saved`)
    builds a model its latest checkpoint does not fit: a hand edit of model.features, which a
    rerun's refusal took for the run's config and asked to rerun with. Asked only on the way
    to a refusal (it builds `saved`'s model); says nothing where it cannot tell."""
    from ann.data import data_dir as data_dir_lib
    from ann.train import checkpoint

    try:
        source = transfer.resolve(f"{workdir}:latest")
        data_dir = data_dir_lib.for_run(saved, workdir)
        setup = build.build(saved, build.make_experiment(saved), for_training=False,
                            data_dir=data_dir)  # fmt: skip
        mismatch = checkpoint.shape_mismatch(source.directory, setup.abstract_state)
    except Exception:  # noqa: BLE001 - the refusal being raised says the rest
        return
    if mismatch is not None:
        raise config_lib.ConfigError(checkpoint.mismatch_error(workdir, source.step, mismatch))


def check_selection_metrics(
    config: ml_collections.ConfigDict,
    workdir: str,
    saved: ml_collections.ConfigDict | None = None,
    validation_names: Callable[[], Iterable[str]] | None = None,
) -> None:
    """On a rerun, `best_metric` and `early_stopping.metric` against the validation metrics the
    run's metrics.jsonl records: a ConfigError naming the unknown one and those there are
    (what a fresh start says before step 0), where the comparison with the record said
    "trained with another config". Before the run's first eval none are recorded: a metric
    changed from `saved`'s (the run's record) is checked against `validation_names()` (what a
    start computes from one validation batch), and without it refused in a line that says it
    cannot be checked yet. Nothing is checked in a damaged metrics.jsonl (refused once the run
    opens)."""
    try:
        records = writers.read_records(os.path.join(workdir, "metrics.jsonl"))
    except (OSError, writers.MetricsFileError):
        return
    names = {k for r in records for k in r if k.startswith(config_lib.SELECTION_PREFIX)}
    if names:
        hooks.check_selection_metrics(config, names)
        return
    changed = [
        (key, new, old)
        for key in ("best_metric", "early_stopping.metric")
        if saved is not None and (new := _get(config, key)) and new != (old := _get(saved, key))
    ]
    if not changed:
        return  # unchanged: the start checks it against one validation batch
    if validation_names is not None:
        hooks.check_selection_metrics(config, validation_names())
        return  # a metric the run computes: the comparison refuses the change
    key, new, old = changed[0]
    reset = old or "''"  # early stopping was off
    raise config_lib.ConfigError(
        f"config key {key!r} is {new!r}, not the {old!r} {workdir} was started with, and the "
        f"run has not evaluated yet: {new!r} cannot be checked against its validation metrics; "
        f"resume with --config.{key}={reset}, or train into a new --workdir (a fresh start "
        "checks it)"
    )


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
    """The value at the dotted `key` of `config`, "" where it has none."""
    try:
        return config_lib.lookup(config, key)
    except KeyError:
        return ""


def init_from_spec(workdir: str, state: Any, skip: Sequence[str] = ()) -> str | None:
    """The `init_from` that starts a new run from `workdir`'s weights (its best checkpoint,
    else its latest), or None where `init_from` would load none of them into `state`'s model
    (another model family, other shapes: `transfer.loads_into`, the rule `init_from` applies)."""
    for spec in (workdir, f"{workdir}:latest"):
        if transfer.loads_into(spec, state, skip):
            return spec
    return None


def previous(saved: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
    """The config the run was last trained with: config.json with the last recorded changes."""
    values = config_lib.plain(saved)
    return ml_collections.ConfigDict(
        config_lib.with_changes(values, config_lib.last_changes(workdir) or {})
    )


def record(
    config: ml_collections.ConfigDict,
    saved: ml_collections.ConfigDict,
    changes: dict[str, tuple[Any, Any]],
    workdir: str,
    step: int,
    num_train: int,
    trains: bool = True,
) -> None:
    """Logs what changed since the previous run and, when that differs from the last line,
    appends the changes from config.json to config_changes.jsonl. A new run length under a
    schedule that depends on it (warmup_cosine) is warned about with the learning rate at the
    resume step under the old and the new schedule. `trains`: False for a finished run (early
    stopped, pruned, or at total_steps), which trains nothing: a change to a key only training
    reads (`config.TRAINING_ONLY`: early_stopping.patience, total_steps, ...) has no effect, is
    warned about and not recorded (the latest config keeps the last run's value), where it was
    appended as if the run had gone on with it; the others (report.*, calibration, ...: read
    after training) are recorded. A change to what only a fresh start reads
    (`config.FRESH_START_ONLY`: init_from, init_from_skip) is warned about and never recorded:
    the latest config keeps the fresh start's, where the weights came from. Process 0 only:
    another process could read the file after process 0 appended to it, and then see no
    change."""
    if jax.process_index() > 0:
        return
    last = previous(saved, workdir)
    since = config_lib.diff(last, config)
    unused = {k: v for k, v in since.items() if not trains and config_lib.training_only(k)}
    since = {k: v for k, v in since.items() if k not in unused}
    if unused:
        logging.warning(
            "the run is finished and trains nothing, so these config changes have no effect "
            "and are not recorded: %s",
            "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in unused.items()),
        )
    # Read at a fresh start only: recorded, a changed init_from became the latest config's,
    # and export and the registry named it as the model's parent.
    unread = {k: v for k, v in since.items() if config_lib.fresh_start_only(k)}
    since = {k: v for k, v in since.items() if k not in unread}
    if unread:
        report = os.path.join(workdir, transfer.REPORT)
        logging.warning(
            "%s %s read at a fresh start only, so this change has no effect on a resume and is "
            "not recorded (%s): %s",
            " and ".join(unread),
            "are" if len(unread) > 1 else "is",
            f"{report} says where the run's weights came from"
            if os.path.exists(report)
            else "the run started from its random initialization",
            "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in unread.items()),
        )
    if since:
        said = {k: config_lib.read_elsewhere(k) for k in since}
        logging.info(
            "%s: %s",
            "resuming with config changes" if trains else "recording config changes",
            "; ".join(
                f"{k}: {old!r} -> {new!r}" + (f" ({said[k]})" if said[k] else "")
                for k, (old, new) in since.items()
            ),
        )
    old_total, new_total = build.total_steps(last, num_train), build.total_steps(config, num_train)
    if trains and old_total != new_total:
        before = float(optimizers.schedule(last.optimizer, old_total, xp=np)(step))
        after = float(optimizers.schedule(config.optimizer, new_total, xp=np)(step))
        if before != after:
            logging.warning(
                "the run's length changed from %d to %d steps: the %s learning-rate schedule is "
                "rebuilt over the new length; at the resume step %d the learning rate was %.6g "
                "and is now %.6g",
                old_total,
                new_total,
                config.optimizer.schedule,
                step,
                before,
                after,
            )
    path = os.path.join(workdir, CONFIG_CHANGES)
    records = config_lib.changes_records(workdir)
    _drop_torn_line(path, [line for line, _ in records])
    recorded = config_lib.last_of(records)
    entry = {
        k: list(v)
        for k, v in changes.items()
        if (trains or not config_lib.training_only(k)) and not config_lib.fresh_start_only(k)
    }
    if not trains:  # what only training reads stays as the last run left it
        entry.update({k: v for k, v in recorded.items() if config_lib.training_only(k)})
    if entry == recorded:
        return  # the same config as the last run: nothing new to record
    line = {"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changes": entry}
    with atomic.writing(path), open(path, "a") as f:  # a full disk's write names no file
        f.write(json.dumps(line, default=str) + "\n")


def _drop_torn_line(path: str, good: list[str]) -> None:
    """Rewrites config_changes.jsonl as its `good` lines (`config_lib.changes_records`) where
    it holds more, or its last lacks its end of line: the torn last line a stopped rerun left
    (skipped, with a warning, by every reader) is dropped before a line is appended after it,
    as a resume drops metrics.jsonl's. Appended to, the torn line became a damaged line before
    the last (or, without its end of line, took the new one into it)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = [line for line in f.readlines() if line.strip()]
    except FileNotFoundError:
        return
    if lines == good and all(line.endswith("\n") for line in good):
        return
    with atomic.replacing(path) as f:
        f.writelines(line if line.endswith("\n") else line + "\n" for line in good)
