"""`train_and_evaluate(config, workdir, experiment)`: the task-free train loop.

Data -> one AOT-compiled, sharded train step -> hooks (log, eval, checkpoint). Re-running the
same command resumes from the latest checkpoint: parameters, optimizer, step, RNG and the data
iterator, so an interrupted run ends where an uninterrupted one would.

A run, top to bottom (each phase a function below, in this order):

1. `_open`: check the workdir, build the run (ann/train/build.py), check `init_from`, lock the
   workdir, compare the config with the run's record; nothing is written before these pass;
2. `_restore_or_init`: the latest checkpoint (exact resume) or a fresh state (+ `init_from`);
3. `_report_finished`: a run already finished (total_steps reached, or stopped early) only
   reports what it last evaluated;
4. `_compile_eval`, `_evaluator`: the eval step, ahead of time, and the function that scores
   the validation and reported splits;
5. `_default_hooks`: log, eval (with its listeners: best checkpoint, early stopping, a sweep's
   pruning), checkpoint, profile, then the caller's hooks;
6. `_compile_train`: which steps run together in one call (`steps_per_call`,
   ann/train/chunks.py; a call never crosses a hook's step) and the train programs that plan
   uses, ahead of time, before step 0;
7. `_report_compile`: compile times, FLOPs and memory to metrics.jsonl and the console;
8. `_train`: the loop body, one call of k steps at a time, with the one host sync per hook step;
9. `_end`: wait for saves, record how the run ended in run_status.json.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from ann import atomic, cli, compilation_cache, console, data, parallel, shadowing, sharding
from ann import config as config_lib
from ann import experiment as experiment_lib
from ann.data import data_dir as data_dir_lib
from ann.experiment import Experiment
from ann.metrics import device_peaks
from ann.train import build as build_lib
from ann.train import chunks, freezing, optimizers, resume, run_status, transfer, xla_options
from ann.train import hooks as hooks_lib
from ann.train import preemption as preemption_lib
from ann.train import startup as startup_lib
from ann.train import state as state_lib
from ann.train import step as step_lib
from ann.train import workdir as workdir_lib
from ann.train.checkpoint import CheckpointError, Checkpoints, CheckpointSaveError
from ann.train.preemption import CTRL_C, TERMINATED, Preemption, finishing
from ann.train.writers import MetricsFileError, MetricWriter, read_records


class NonFiniteLossError(FloatingPointError):
    """Training diverged; nothing after the last good checkpoint was saved. `.step` is the
    first step whose metrics or state were not finite."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


@dataclasses.dataclass(repr=False)
class Result:
    """What `train_and_evaluate` returns: how far the run got and what it last evaluated.

    - `state`: the train state at `step` (`state.params`, `state.model_state`,
      `state.opt_state`, `state.rng`: JAX arrays, on the run's devices).
    - `step`: optimizer steps done (total_steps for a finished run).
    - `eval_metrics`: the last eval, {"val/accuracy": 0.986, "eval/accuracy": ...,
      "eval/seconds": ...} (`val/`: the validation split, `eval/`: the reported ones); a rerun
      of a finished run, or a resumed segment that ran no eval, gives the run's last one
      (run_status.json's); empty where none ran.
    - `best_eval_metrics`: the best eval by `best_metric` (what `checkpoints_best/` holds,
      with its "step"); empty where none ran.
    - `interrupted`: the run stopped before total_steps and a rerun resumes it: a SIGTERM, or
      a hook's `request_stop` (a Ctrl-C raises KeyboardInterrupt instead, after its save).
      Check it before exporting: the state is not a finished run's.
    - `interruption`: why it was interrupted ("SIGTERM", "launcher gone" or the hook's
      message), "" when it was not.
    - `stop_reason`: why a hook finished the run early ("early_stopped", "pruned"), else "".
      Such a run is finished, not interrupted: rerunning it trains no further.
    """

    state: state_lib.TrainState
    step: int
    eval_metrics: dict[str, float]
    best_eval_metrics: dict[str, float]
    interrupted: bool = False  # stopped before total_steps (a signal or a hook); rerun resumes
    # Why an interrupted run stopped: "SIGTERM", "Ctrl-C" (ann/train/preemption.py) or a hook's
    # message; "" for a run that was not interrupted.
    interruption: str = ""
    # Why a hook finished the run before total_steps ("early_stopped", "pruned"), else "".
    # Such a run is not interrupted: rerunning it does not train further.
    stop_reason: str = ""

    def __repr__(self) -> str:
        """The run's summary, without the state's arrays: a notebook cell ending in the result
        printed every parameter (40 KB for the digits MLP: trial 48a)."""
        count = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(self.state.params))
        shown = {f.name: repr(getattr(self, f.name)) for f in dataclasses.fields(self)}
        shown["state"] = f"<TrainState: {count:,} parameters>"
        shown = {"step": shown.pop("step"), **shown}  # how far first
        return f"Result({', '.join(f'{k}={v}' for k, v in shown.items())})"


def _abstract_batch(
    example: dict[str, np.ndarray], global_rows: int, sharding, steps: int = 1
) -> dict:
    """Shapes and dtypes of a global batch of `global_rows` rows like `example`'s; with `steps`
    > 1, of a stack of that many batches (`[steps, rows, ...]`, ann/train/chunks.py)."""
    lead = (steps, global_rows) if steps > 1 else (global_rows,)
    return {
        k: jax.ShapeDtypeStruct((*lead, *v.shape[1:]), v.dtype, sharding=sharding)
        for k, v in example.items()
    }


def _real_rows(batches: list[dict[str, np.ndarray]], name: str) -> dict[str, np.ndarray]:
    """Per-row eval outputs of a whole split, concatenated, without the padding rows. Raises
    ConfigError naming experiment `name`'s `eval_rows` for an output of another row count
    than its batch's (an IndexError of NumPy's, here)."""
    rows = len(batches[0]["mask"])
    for key, value in batches[0].items():
        if np.ndim(value) == 0 or len(value) != rows:
            got = "a scalar" if np.ndim(value) == 0 else f"{len(value)} rows"
            raise config_lib.ConfigError(
                f"experiment {name}'s eval_rows returns {key!r} with {got} for {rows} rows; "
                "return one entry per row of the batch, the batch axis first"
            )
    keep = np.concatenate([b["mask"] for b in batches]) > 0
    return {k: np.concatenate([b[k] for b in batches])[keep] for k in batches[0] if k != "mask"}


def _check_finite(
    window: list[dict], step: int, checkpoints: Checkpoints, start_step: int = 0
) -> None:
    """Raises NonFiniteLossError if a train metric, or the state a step produced, is not finite.
    A metric of the run's first step (`start_step` + 1; computed before its update) is no
    divergence: the model or its inputs, which a lower learning rate cannot help.

    Runs at every host sync, before any hook (so before any save): the state about to be saved
    is the one the window's last step produced, and its `STATE_FINITE` flag is in the window.
    `window[i]` holds the metrics of step `step - len(window) + i + 1`; the flag is taken out
    of them (it is not a metric to log)."""
    for i, metrics in enumerate(window):
        first = step - len(window) + i + 1
        state_finite = metrics.pop(step_lib.STATE_FINITE, True)
        bad = [k for k, v in metrics.items() if not np.isfinite(v)]
        if bad:
            what = f"{', '.join(bad)} became {metrics[bad[0]]} at step {first}"
        elif not state_finite:
            what = (
                f"the train state (parameters, optimizer or model state) became non-finite at "
                f"step {first}"
            )
        else:
            continue
        last = checkpoints.latest_step()
        if bad and first == start_step + 1:  # no update was applied yet: not the learning rate
            params = "initial parameters" if start_step == 0 else f"step {start_step}'s state"
            raise NonFiniteLossError(
                f"training stopped: {', '.join(bad)} {'is' if len(bad) == 1 else 'are'} "
                f"{metrics[bad[0]]} at step "
                f"{first}, the run's first, before any update was applied (from the {params}): "
                "not the learning rate but the model's output or the inputs it was given; "
                "check the model and the experiment's loss on a batch of the data, then use "
                "a new --workdir",
                first,
            )
        raise NonFiniteLossError(
            f"training diverged: {what}; nothing non-finite was saved (last good checkpoint: "
            f"{f'step {last}' if last is not None else 'none'}). To train on, use a new --workdir "
            "with a lower optimizer.learning_rate or an optimizer.grad_clip_norm"
            + (f" (init_from={checkpoints.workdir}:{last} starts from it)" if last else ""),
            first,
        )


def interrupted_line(step: int, last_checkpoint: int | None, reason: str = CTRL_C) -> str:
    """The one line for a run that `reason` (Ctrl-C, SIGTERM, a hook's stop) stopped at `step`,
    `last_checkpoint` the newest step saved (what the same command resumes from): ann train's
    last line and run_status.json's message, one wording however the stop was seen."""
    if last_checkpoint == step:
        return (
            f"interrupted at step {step} ({reason}); checkpoint saved; run the same command to "
            "resume"
        )
    if last_checkpoint is None:
        return (
            f"interrupted at step {step} ({reason}) before any checkpoint was saved; run the "
            "same command to start over"
        )
    return (
        f"interrupted at step {step} ({reason}) without saving it; run the same command to "
        f"resume from the last checkpoint (step {last_checkpoint})"
    )


def _not_recorded(ended: BaseException, error: OSError, what: str = "run_status.json") -> None:
    """Says that `what` (run_status.json, the metrics) could not record `ended` (`error`): in
    `ended`'s own line, the one ann train ends with, when that is a one-line message (a full
    disk failed the save, then this write: it was a second error line); else logged."""
    name = os.path.basename(os.fsdecode(error.filename)) if error.filename else what
    said = f"{name} could not record it either ({error.strerror or error})"
    if isinstance(ended, Exception) and len(ended.args) == 1 and isinstance(ended.args[0], str):
        ended.args = (f"{ended.args[0]}; {said}",)
    else:
        logging.error("could not record the run's end in %s: %s", name, error)


def _record_end(
    workdir: str, error: BaseException, step: int, total_steps: int, checkpoints: Checkpoints
) -> None:
    """run_status.json for a run that an exception ended: `diverged` (with the first bad step),
    `interrupted` (Ctrl-C: a KeyboardInterrupt, whose message `_end` set) or `failed`, with
    the one-line message."""
    if isinstance(error, NonFiniteLossError):
        status, step = "diverged", error.step
    elif isinstance(error, KeyboardInterrupt):
        status = "interrupted"
    else:
        status = "failed"
    message = str(error) or type(error).__name__
    if status == "failed":
        # A peer process gone: ann train's line, not gloo's (schedulers and sweeps read this).
        lost = parallel.peer_lost(error)
        message = lost if lost is not None else f"{type(error).__name__}: {message}"
    run_status.write(
        workdir,
        status,
        step,
        total_steps=total_steps,
        message=message,
        last_checkpoint=checkpoints.saved_step(),
    )


def _compilation_cache_path(setting: str, workdir: str) -> str | None:
    """Where the run's compilation cache goes: `setting` (`compilation_cache.directory`: `~`
    expanded), default `.jax_cache` beside the workdir; None for 'off' (any case).

    Raises ConfigError for a setting of only blanks."""
    if not setting:
        return os.path.join(os.path.dirname(os.path.abspath(workdir)), ".jax_cache")
    try:
        return compilation_cache.directory(
            setting, f"config key 'compilation_cache_dir'={setting!r}", _CACHE_FIX
        )
    except ValueError as e:
        raise config_lib.ConfigError(str(e)) from None


_CACHE_FIX = "give a directory, or 'off'"


def _enable_compilation_cache(path: str | None, setting: str, max_mb: float) -> None:
    """XLA's persistent compilation cache for the run (`compilation_cache.enable`) in `path`
    (`_compilation_cache_path` of the config's `setting`; None: 'off', none), at most `max_mb`
    MiB (-1: no bound)."""
    if path is None:
        return
    try:
        compilation_cache.enable(
            path,
            f"config key 'compilation_cache_dir'={setting!r}",
            _CACHE_FIX,
            max_mb,
        )
    except ValueError as e:
        raise config_lib.ConfigError(str(e)) from None


@dataclasses.dataclass
class _Run:
    """What the phases of one run share once it is open."""

    config: ml_collections.ConfigDict
    workdir: str
    setup: build_lib.Setup
    checkpoints: Checkpoints
    data_iter: data.DeviceIterator
    saved_config: ml_collections.ConfigDict | None  # config.json on a rerun, else None
    config_changes: dict  # allowed changes from config.json: {key: (old, new)}
    status: dict | None = None  # run_status.json as the last run left it (None: fresh, stale)
    state: Any = None
    start_step: int = 0
    progress: _Progress | None = None  # from the loop's start
    layout: str = ""  # the parameters.tsv line, logged once the start is accepted
    _closed: bool = False

    @property
    def experiment(self) -> Experiment:
        return self.setup.experiment

    @property
    def total_steps(self) -> int:
        return self.setup.total_steps

    def close(self) -> None:
        """Stops the data reader and closes the checkpoints (once; later calls do nothing)."""
        if not self._closed:
            self._closed = True
            self.data_iter.close()
            self.checkpoints.close()


def _check_arguments(config: Any, workdir: Any) -> tuple[ml_collections.ConfigDict, str]:
    """`train_and_evaluate`'s `config` and `workdir` checked as `ann train` checks its flags
    (`ann.train.workdir.check`, then `cli.check_out` of --workdir in the argument's words):
    a copy of the config with a leading `~` of its path keys expanded (the caller's own is left
    as it was given), and the workdir as a str. A None or dict config raised
    "AttributeError: 'dict' object has no attribute 'compilation_cache_dir'", a None workdir
    "... has no attribute 'strip'"."""
    from ann import artifact

    if not isinstance(config, ml_collections.ConfigDict):
        raise TypeError(
            "config: expected an ml_collections.ConfigDict (a config file's get_config(), e.g. "
            f"configs/digits_cnn.py's), got {type(config).__name__}"
        )
    workdir = artifact.path_argument(workdir, "workdir", "the run's directory as a str or path")
    config_lib.check_present(config.to_dict())  # a key deleted: named before anything reads it
    if isinstance(config, ml_collections.FrozenConfigDict):  # "FrozenConfigDict is immutable"
        config = config.as_configdict()  # a copy: the caller's is left as it was given
    config = copy.deepcopy(config)  # the caller's own is left as it was given
    cli.expand_config_paths(config)  # data.data_dir="~/tfds" as `ann train` reads it
    workdir_lib.check(workdir)  # its own words for a file, an export, no permission
    with cli.as_arguments(("workdir",)):
        # Not its other files: a directory the caller prepared (`ann train` refuses them).
        cli.check_out("workdir", workdir, may_hold="a training run", others=False)
    return config, workdir


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    experiment: Experiment | None = None,
    extra_hooks: Sequence[hooks_lib.Hook] = (),
    eval_listeners: Sequence[hooks_lib.EvalListener] = (),
    started: float | None = None,
    config_flag: str = "",
) -> Result:
    """Trains `experiment` (built from `config.experiment` when None) and evaluates it; resumes
    if `workdir` has a checkpoint. `extra_hooks` run after the default hooks at their steps;
    `eval_listeners` are told each eval, after the best-checkpoint keeper and early stopping.
    `started` (a `time.perf_counter()` value; `ann train` gives its process's start) is where
    the start-up time (`startup/...` in metrics.jsonl, ann/train/startup.py) counts from; None:
    from this call. `config_flag`: the `--config` argument as given (`ann train` passes it),
    recorded in config.json at a fresh start and named where a rerun's config differs.

    Returns a `Result`: the state, the step reached, the last and best evals, and whether the
    run was interrupted (a SIGTERM or a hook's stop: saved, and the same call resumes it).

    Raises ConfigError (a bad config, workdir or `init_from`; a workdir another run holds; a
    rerun that would change what is trained, or end before the step it reached),
    CheckpointError, and NonFiniteLossError when training diverged. Checked first, as `ann
    train` checks --workdir: a `workdir` inside an export, a registry, another run's
    checkpoints/ or a report, or holding one of those, is refused with ValueError (FlagError)
    naming `workdir`; a `config` that is no ml_collections.ConfigDict or a `workdir` that is
    no path with TypeError naming the argument. Ctrl-C (SIGINT; a notebook's interrupt)
    raises KeyboardInterrupt once the run has stopped, its message `ann train`'s last line:
    after the checkpoint of the step it stopped at is saved (`interrupted at step 223
    (Ctrl-C); checkpoint saved; run the same command to resume`), or at once on a second
    Ctrl-C (`... without saving it; ...`). Calling it again with the same arguments
    resumes."""
    shadowing.check()  # a clone's root imported as `ann`: one line, not TFDS's traceback
    config, workdir = _check_arguments(config, workdir)
    # The clock pauses the garbage collector until the first step (ann/train/startup.py).
    with startup_lib.Clock(started) as clock:
        workdir_lib.check(workdir)  # before anything is created, the compilation cache included
        # What a failed start removes again where it made them and left them empty.
        cache = _compilation_cache_path(config.compilation_cache_dir, workdir)
        made = atomic.missing_from(workdir), atomic.missing_from(cache) if cache else None
        _enable_compilation_cache(
            cache, config.compilation_cache_dir, config.compilation_cache_max_mb
        )
        config_lib.check_workdir_selects_on_validation(workdir)  # before config.json is rewritten
        if experiment is None:
            experiment = build_lib.make_experiment(config)
        with clock.part("build"):
            # Where a resume reads its data: the run's record (data_dir.json), not this shell's
            # $TFDS_DATA_DIR, unless data.data_dir changed.
            data_dir = data_dir_lib.for_run(config, workdir)
            setup = build_lib.build(config, experiment, data_dir=data_dir)
        clock.move("build", "data", setup.data_seconds)
        # Read and matched before anything is written, so a bad source leaves no half-made workdir.
        source = None
        fresh_start = not resume.has_checkpoint(workdir)
        if config.init_from and fresh_start:
            source = transfer.load(
                config.init_from, setup.abstract_state, tuple(config.init_from_skip)
            )
        if setup.freeze_summary:  # once the source is read: a refused one is the only line
            logging.info("%s", setup.freeze_summary)
        if config.freeze and fresh_start and jax.process_index() == 0:
            loaded = source.report.loaded if source is not None else None
            if why := freezing.random_frozen(setup.abstract_state.params, config.freeze, loaded):
                cli.warn(why)
        before, locked = workdir_lib.entries(workdir), False
        run = None
        try:
            with workdir_lib.lock(workdir), contextlib.ExitStack() as stack:
                locked = True  # (a workdir another run holds is refused, and never touched)
                run = _open(config, workdir, setup, config_flag)
                stack.callback(run.close)
                preemption_lib.check_terminated()  # safe points: a SIGTERM dropped on the way
                # Named for what it does: a fresh start initializes the state (its init compiled).
                resuming = run.checkpoints.latest_step() is not None
                with clock.part("restore" if resuming else "init"):
                    _restore_or_init(run, source)
                preemption_lib.check_terminated()
                if _finished(run):
                    return _report_finished(run)
                return _train_compiled(run, extra_hooks, eval_listeners, clock)
        except KeyboardInterrupt as e:
            if run is not None and run.progress is not None and not e.args:
                _interrupted_after_the_loop(run, e)
            elif locked and (run is None or run.progress is None) and jax.process_count() == 1:
                workdir_lib.remove_added(workdir, before)  # stopped while starting: nothing kept
            raise
        except Exception as e:
            # Failed once open, before the loop (a user's model that fails to trace): recorded
            # `failed`, as a failure inside the loop is (`_end`), for sweeps and schedulers; a
            # refusal (a bad config, a damaged checkpoint or metrics file) records nothing.
            # A refusal leaves the workdir as it found it (one process: its peers may still be
            # writing there on their way to the same refusal).
            # A write the storage refused while starting (a full disk under .lock, config.json,
            # parameters.tsv) is one too: nothing was trained, and the workdir it made held
            # only .lock, which read as a run.
            refusal = isinstance(e, config_lib.ConfigError | CheckpointError | MetricsFileError)
            storage = isinstance(e, OSError) and e.errno in atomic.STORAGE_ERRNOS
            starting = run is None or run.progress is None
            if run is not None and run.progress is None and not refusal and not storage:
                if jax.process_index() == 0:
                    _record_end(workdir, e, run.start_step, run.total_steps, run.checkpoints)
            elif ((refusal and locked) or storage) and starting and jax.process_count() == 1:
                workdir_lib.remove_added(workdir, before)
            if jax.process_count() == 1:
                atomic.remove_if_left_empty(workdir, made[0], own=(".lock",))
                if cache is not None:  # the empty cache beside it, and the parent it made
                    atomic.remove_if_left_empty(cache, made[1])
            raise


def _interrupted_after_the_loop(run: _Run, interrupt: KeyboardInterrupt) -> None:
    """A Ctrl-C after the loop and its closing (`_end`) were done: while the run's end was
    recorded, or the workdir's lock released (a second Ctrl-C 0.2-0.3 s after the first, 3 times
    in 15). It carried no line, so ann train said "while starting, before the first step" of a
    run that had saved its checkpoint, and run_status.json could stay "running". It gets the
    run's line, and the record says so."""
    interrupt.args = (interrupted_line(run.progress.step, run.checkpoints.saved_step()),)
    if jax.process_index() == 0:
        try:
            _record_end(run.workdir, interrupt, run.progress.step, run.total_steps, run.checkpoints)
        except OSError as e:
            logging.error("could not record the run's end in run_status.json: %s", e)


def _open(
    config: ml_collections.ConfigDict, workdir: str, setup: build_lib.Setup, config_flag: str
) -> _Run:
    """Compares the config with the run's record (writing config.json at a fresh start, with
    the `--config` argument), and opens the checkpoints and the train data."""
    saved, changes = resume.compare(
        config,
        workdir,
        setup.abstract_state,
        lambda: validation_names(config, setup),
        config_flag,
    )
    if saved is None and jax.process_index() == 0:
        config_lib.write(config, workdir, config_flag)
    dc = config.data
    host_iter = data.train_batches(
        setup.train_split,
        _CheckedFields(setup.experiment),
        config.batch_size,
        seed=config.seed,
        shuffle=dc.shuffle,
        read_threads=dc.read_threads,
    )
    data_iter = data.DeviceIterator(
        host_iter, parallel.batch_sharding(setup.mesh), dc.prefetch_batches
    )
    try:
        checkpoints = Checkpoints(
            workdir,
            config.max_to_keep,
            config.best_metric,
            config.best_mode,
            async_save=config.async_checkpointing,
            config_is_record=saved is not None,
        )
    except BaseException:
        data_iter.close()
        raise
    return _Run(config, workdir, setup, checkpoints, data_iter, saved, changes)


def _earlier_attempt(
    workdir: str, latest: int | None, start_step: int | None
) -> tuple[dict | None, list[str]]:
    """How the earlier attempt in `workdir` ended, said before the run goes on (killed or
    crashed, its status unreadable, its checkpoints deleted): its status (None where it is not
    to be trusted) and, at a fresh start (`latest` None), its files a fresh start removes."""
    status = run_status.read(workdir)
    # An earlier attempt's records a fresh start removes (`_restore_or_init`): read back, they
    # were taken for this run's (export calibrated by its last config change).
    earlier = [] if latest is not None else resume.earlier_attempt_files(workdir)
    # With no checkpoint it said "resuming from the last checkpoint (step none: ...)".
    resumes = (
        f"resuming from the last checkpoint (step {start_step})"
        if latest is not None
        else "there is no checkpoint to resume from: this run starts fresh"
        + (f" (removed the earlier attempt's {', '.join(earlier)})" if earlier else "")
    )
    if (why := run_status.unreadable(workdir)) and jax.process_index() == 0:
        logging.warning(
            "%s %s: how the previous run ended is unknown (an early stop, a divergence); %s",
            run_status.path(workdir),
            why,
            resumes,
        )
    if stale := run_status.stale_running(status):
        # The workdir lock rules out a live writer: it was killed, or crashed.
        if jax.process_index() == 0:
            logging.warning(
                "%s; %s",
                stale.replace("WORKDIR", workdir, 1),
                resumes,
            )
        status = None
    elif latest is None and not why and (status or earlier) and jax.process_index() == 0:
        # A finished attempt whose checkpoints/ was deleted: it trained again without a word.
        ended = (
            f"{run_status.path(workdir)} says an earlier attempt ended {status['status']} at "
            f"step {status.get('step')}, but {os.path.join(workdir, 'checkpoints')} holds none "
            "of its checkpoints; "
            if status and status.get("status") != "running"
            else ""
        )
        logging.warning("%s%s", ended, resumes)
    return status, earlier


def _restore_or_init(run: _Run, source: transfer.Loaded | None) -> None:
    """`run.state` and `run.start_step` from the latest checkpoint (and the data iterator's
    position with them), or a fresh state with `init_from`'s arrays (`source`) loaded;
    then `run.status`, the data directory read in WORKDIR/data_dir.json and the parameter
    layout in WORKDIR/parameters.tsv."""
    setup, workdir = run.setup, run.workdir
    if (latest := run.checkpoints.latest_step()) is not None:
        # A run cut shorter than it has trained is refused before the restore (and its line),
        # by epochs in epochs.
        config = run.config
        by_epochs = (config.num_epochs, len(setup.train_split), config.batch_size)
        config_lib.check_length(setup.total_steps, latest, workdir, *by_epochs)
        run.state, run.start_step = run.checkpoints.restore(setup.abstract_state, run.data_iter)
        config_lib.check_length(setup.total_steps, run.start_step, workdir, *by_epochs)
        if jax.process_index() == 0:  # a damaged metrics.jsonl is refused before a change is kept
            read_records(os.path.join(workdir, "metrics.jsonl"))
    status, earlier = _earlier_attempt(workdir, latest, run.start_step)
    if latest is not None:  # after the warnings that say why (a killed run): it read backwards
        logging.info("resumed from %s at step %d", run.checkpoints.latest.directory, run.start_step)
    if latest is None:
        # A fresh start: nothing of an earlier attempt is read as this run's (its status said
        # `early_stopped`, and the fresh state was reported as finished).
        status = None
        if jax.process_index() == 0:
            resume.remove_earlier_attempt(workdir, earlier)
        run.state = setup.state
        if source is not None:  # only at a fresh start: on resume the run's own checkpoint wins
            run.state = transfer.init_from(
                run.state, source, setup.tx, setup.state_shardings, workdir
            )
    # After the lines above: they say why an earlier attempt left a best behind.
    start = run.start_step or 0
    if (dropped := run.checkpoints.forget_best_after(start)) is not None:
        if jax.process_index() == 0 and run.checkpoints.best_set_aside:
            logging.warning(
                "moved checkpoints_best step %d to %s: past step %d, where this run resumes "
                "after passing over damaged steps (%s); it chooses its best again",
                dropped,
                run.checkpoints.best_set_aside,
                start,
                ", ".join(map(str, run.checkpoints.passed_over)),
            )
        elif jax.process_index() == 0:
            logging.warning(
                "removed checkpoints_best step %d: an earlier attempt's, past step %d where "
                "this run starts (it chooses its best again)",
                dropped,
                start,
            )
    run.status = status
    if latest is not None and run.saved_config is not None:
        # Once the run's status is known: a finished one trains nothing, and records no change
        # only training reads (it recorded `early_stopping.patience` it never trained with).
        resume.record(
            run.config,
            run.saved_config,
            run.config_changes,
            workdir,
            run.start_step,
            len(setup.train_split),
            trains=not _finished(run),
        )
    if jax.process_index() == 0:
        train = setup.train_split
        data_dir_lib.write(workdir, setup.data_dir, train.name, str(train.info.version))
        layout = os.path.join(workdir, "parameters.tsv")
        shardings = setup.state_shardings.params
        summary = sharding.write_layout(setup.abstract_state.params, shardings, layout)
        run.layout = f"sharding_rules {run.config.sharding_rules}: {summary} (each one: {layout})"


def _finished(run: _Run) -> bool:
    """At total_steps, or finished before it (early stopping, a sweep's pruning)."""
    early = bool(run.status) and run.status["status"] in run_status.FINISHED_EARLY
    return early or run.start_step >= run.total_steps


def _report_finished(run: _Run) -> Result:
    """A finished run: nothing to train or compile; reports what it last evaluated."""
    status = run.status or {}
    early = status.get("status") in run_status.FINISHED_EARLY
    if early:
        logging.info(
            "run %s at step %d: %s; nothing to train (delete %s to train on)",
            status["status"].replace("_", " "),
            status["step"],
            status.get("message", ""),
            run_status.path(run.workdir),
        )
    else:
        logging.info(
            "run finished at step %d of %d; nothing to train (raise total_steps to train on)",
            run.start_step,
            run.total_steps,
        )
        if jax.process_index() == 0 and status.get("status") != "done":
            # E.g. the status file was lost: the checkpoint says the run is complete.
            run_status.write(
                run.workdir,
                "done",
                run.start_step,
                total_steps=run.total_steps,
                eval_metrics=status.get("eval_metrics", {}),
                best_eval_metrics=run.checkpoints.best_metrics(),
            )
    return Result(
        state=run.state,
        step=run.start_step,
        eval_metrics=status.get("eval_metrics", {}),
        best_eval_metrics=status.get("best_eval_metrics", {}),
        stop_reason=status["status"] if early else "",
    )


@dataclasses.dataclass
class _Compiled:
    eval: jax.stages.Compiled
    eval_seconds: float
    eval_local: int  # eval rows per process and batch
    steps_per_call: int = 1
    # Steps per call -> the train program (`k` steps and/or 1: ann/train/chunks.py), filled by
    # `_compile_train` with the sizes the run's plan of calls uses.
    train: dict[int, jax.stages.Compiled] = dataclasses.field(default_factory=dict)
    train_seconds: float = 0.0
    unrolled: bool = False  # the k-step program unrolls its steps (chunks.unroll)
    # The train programs' third argument: the optimizer's hyperparameters, on the mesh.
    hyperparameters: dict[str, jax.Array] = dataclasses.field(default_factory=dict)


def _check_batch(name: str, batch: Any, rows: int) -> None:
    """Raises ConfigError unless `batch`, what experiment `name`'s `fields` returned for `rows`
    rows, is a dict of numeric NumPy arrays with `rows` rows each."""
    if not isinstance(batch, dict) or not all(isinstance(v, np.ndarray) for v in batch.values()):
        raise config_lib.ConfigError(
            f"experiment {name}'s fields returns "
            f"{'a ' + type(batch).__name__ if not isinstance(batch, dict) else 'a non-array'}; "
            "return {name: NumPy array} (the arrays its loss reads from a batch)"
        )
    for key, value in batch.items():
        if value.dtype.kind not in "biuf":  # object, str, bytes, datetime: no device type
            raise config_lib.ConfigError(
                f"experiment {name}'s fields returns {key!r} of dtype {value.dtype}; return "
                "numeric NumPy arrays (map strings or objects to numbers in fields)"
            )
        if value.ndim == 0 or len(value) != rows:
            got = "a scalar" if value.ndim == 0 else f"{len(value)} rows"
            raise config_lib.ConfigError(
                f"experiment {name}'s fields returns {key!r} with {got} for {rows} rows; every "
                "field must have one entry per row, the batch axis first"
            )


class _CheckedFields:
    """An experiment's `fields` whose every batch is checked (`_check_batch`) and held to the
    first batch's keys, dtypes and per-row shapes: a `fields` that dropped a row from its 31st
    batch on (a filter of unlabelled rows) ended in JAX's "compiled with int32[128] and called
    with int32[127]" traceback, as one that changes a field's dtype or leaves one out would.
    Called from the data pipeline's threads (grain's, eval's): the first batch's spec is
    taken under a lock. A few comparisons per field, a batch."""

    def __init__(self, experiment: Experiment):
        import threading

        self.fields, self.name = experiment.fields, type(experiment).__name__
        self.first: dict[str, tuple] | None = None
        self.lock = threading.Lock()

    def __call__(self, rows: Any) -> dict[str, np.ndarray]:
        batch = self.fields(rows)
        _check_batch(self.name, batch, len(next(iter(rows.values()))))
        spec = {k: (v.dtype, v.shape[1:]) for k, v in batch.items()}
        with self.lock:
            if self.first is None:
                self.first = spec
        if spec != self.first:
            key = next(k for k in [*self.first, *spec] if spec.get(k) != self.first.get(k))

            def said(entry: tuple | None) -> str:
                return "nothing" if entry is None else f"{entry[0]}{list(entry[1])} per row"

            raise config_lib.ConfigError(
                f"experiment {self.name}'s fields returns {key!r} as {said(spec.get(key))} in a "
                f"later batch, where its first gave {said(self.first.get(key))}; every batch "
                "must give each field with the same dtype and shape"
            )
        return batch


def _example(run: _Run, rows: int, warn: bool = False) -> dict[str, np.ndarray]:
    """`rows` train rows as the experiment feeds them: the shapes and dtypes to compile for.
    ConfigError for a `fields` that returns other than a dict of numeric arrays with `rows`
    rows each (a JAX traceback at the first eval, or in the experiment's loss); `warn`: one
    warning for a float64 field of a user's experiment (the device computes float32, and it is
    usually a host-side transform, missing from the export; ann's own pass the data's dtype)."""
    name = type(run.experiment).__name__
    batch = run.experiment.fields(run.setup.train_split.rows(np.arange(rows)))
    _check_batch(name, batch, rows)
    wide = [key for key, value in batch.items() if value.dtype == np.float64]
    if warn and wide and not experiment_lib.is_shipped(run.experiment):  # a user's fields
        logging.warning(
            "experiment %s's fields returns %s as float64; the device computes in float32, and "
            "what fields computes on the host is not in the export (predict gets the raw "
            "inputs): do transforms in loss and predict, on the device",
            name,
            ", ".join(map(repr, wide)),
        )
    return batch


def _check_predict(run: _Run) -> None:
    """Raises ConfigError, before step 0, for a `predict` whose outputs are not what the
    experiment's `output_signature()` declares (`experiment_lib.check_outputs`): traced
    abstractly (`jax.eval_shape`, no FLOPs) for a batch of 2 rows of its input_signature.
    It was found only at export, worded as the model's fault. A predict that cannot be traced
    here is left to export, which says so with its traceback. A user's experiment only: ann's
    own predicts are checked by the tests, and the trace would lengthen every start."""
    setup, experiment = run.setup, run.experiment
    if experiment_lib.is_shipped(experiment):
        return
    arrays, treedef = step_lib.eval_arrays(run.state)

    def predict(inputs: dict) -> Any:
        params, model_state = jax.tree.unflatten(treedef, arrays)
        model = nnx.merge(setup.model_def.eval, params, model_state, copy=True)
        return experiment.predict(model, inputs)

    try:
        outputs = experiment_lib.predict_outputs(experiment, predict)
    except config_lib.ConfigError:
        raise
    except Exception as e:  # export traces it again and shows the traceback
        logging.debug("predict not checked before step 0: %r", e)
        return
    experiment_lib.check_outputs(experiment, outputs, run.config.model.name)


def _compile_eval(run: _Run) -> _Compiled:
    """The eval step, compiled ahead of time for the run's shardings, before step 0 (and
    `predict` checked against its output_signature: `_check_predict`)."""
    config, setup, state = run.config, run.setup, run.state
    _check_predict(run)
    batch_sharding = parallel.batch_sharding(setup.mesh)
    eval_batch = config.eval_batch_size or config.batch_size
    eval_local = eval_batch // jax.process_count()
    eval_example = {**_example(run, eval_local, warn=True), "mask": np.ones(eval_local, np.float32)}
    arrays, treedef = step_lib.eval_arrays(state)
    eval_fn, eval_seconds = step_lib.compile_step(
        step_lib.make_eval_step(run.experiment, setup.model_def, treedef),
        (arrays, _abstract_batch(eval_example, eval_batch, batch_sharding)),
        in_shardings=(step_lib.eval_arrays(setup.state_shardings)[0], batch_sharding),
        out_shardings=parallel.replicated(setup.mesh),
    )
    return _Compiled(eval_fn, eval_seconds, eval_local)


def _compile_train(run: _Run, compiled: _Compiled, hooks: Sequence[hooks_lib.Hook]) -> chunks.Plan:
    """Plans the calls from the start step to the end (`steps_per_call`, or auto from the step's
    FLOPs, the hook periods and the size of a batch: ann/train/chunks.py) and compiles the train
    programs the plan uses (k steps and/or 1) ahead of time for the run's shardings, before
    step 0, into `compiled.train`. Returns the plan: steps per call, call by call, made as the
    run goes (not listed here: that took 59 s before step 0 for 10^8 steps)."""
    config, setup, state = run.config, run.setup, run.state
    state_shardings, replicated = setup.state_shardings, parallel.replicated(setup.mesh)
    example = _example(run, config.batch_size // jax.process_count())
    opt, freeze = config.optimizer, tuple(config.freeze)
    step = step_lib.make_train_step(
        run.experiment,
        setup.model_def,
        optimizers.for_step(opt, setup.total_steps, freeze),
        opt.accumulate_steps,
        frozenset(freezing.frozen_paths(state.params, freeze)),
    )
    # Arguments, not constants: runs that differ only in these share the compiled step.
    compiled.hyperparameters = step_lib.place_hyperparameters(opt, setup.total_steps, setup.mesh)

    def lower(fn: Callable, n: int) -> jax.stages.Lowered:
        sharding = parallel.batch_sharding(setup.mesh, stacked=n > 1)
        batch = _abstract_batch(example, config.batch_size, sharding, n)
        return step_lib.lower_step(
            fn,
            (state, batch, compiled.hyperparameters),
            (state_shardings, sharding, replicated),
            (state_shardings, replicated),
            (0,),
        )

    start = time.perf_counter()
    single = lower(step, 1)  # lowering only: its FLOPs and ops choose k
    cost = single.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, list | tuple) and cost else cost
    batch_bytes = sum(v.nbytes for v in _example(run, 1).values()) * config.batch_size
    periods = (config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps)
    k = chunks.steps_per_call(
        config.steps_per_call, periods, batch_bytes, float(cost.get("flops", 0.0))
    )
    calls = chunks.plan(hooks, run.start_step, run.total_steps, k)
    sizes = calls.sizes()
    options = xla_options.for_cpu(xla_options.STEP)
    if 1 in sizes:
        compiled.train[1] = single.compile(compiler_options=options)
    if k in sizes and k > 1:
        compiled.unrolled = chunks.unroll(jax.default_backend(), single.as_text())
        multi = lower(step_lib.make_multi_step(step, compiled.unrolled), k)
        compiled.train[k] = multi.compile(compiler_options=options)
    if k > 1 and k not in sizes:
        if config.steps_per_call > 1:  # asked for, and never possible: say so
            logging.warning(
                "steps_per_call=%d: no call of %d steps fits between the steps where a hook is "
                "due (log, eval and checkpoint periods: %s) from step %d to %d; every step runs "
                "alone. Use a divisor of those periods, or --config.steps_per_call=0 (auto)",
                k,
                k,
                ", ".join(map(str, sorted(set(periods)))),
                run.start_step,
                run.total_steps,
            )
        k = 1
        calls = chunks.plan(hooks, run.start_step, run.total_steps, 1)  # the same calls
    compiled.steps_per_call = k  # what the run uses, not what was asked for
    compiled.train_seconds += time.perf_counter() - start
    return calls


def _sync_each_step(mesh: jax.sharding.Mesh) -> bool:
    # On CPU with several devices, back-to-back collective steps can deadlock: sync each step.
    return jax.default_backend() == "cpu" and mesh.size > 1


# An eval split whose rows take at most this many bytes is transferred to the devices once and
# kept there between evals (the digits splits: under 0.2 MiB); a larger one is read again,
# prefetched, at each eval.
EVAL_KEEP_BYTES = 64 * 2**20


def _evaluator(
    run: _Run, compiled: _Compiled
) -> tuple[Callable[[Any], dict[str, float]], Callable[[Any], list[str]]]:
    """`evaluate(state) -> {prefix/name: value}` over every scored split: `val/` metrics (the
    validation split) choose (best checkpoint, early stopping, a sweep's objective); `eval/`
    (the first of data.eval_splits, the test split by default) and `eval_<split>/` report.
    And `validation_names(state)`: the `val/` names an eval gives, from the validation split's
    first batch alone (what `hooks.check_reads` checks before the first step)."""
    setup, experiment = run.setup, run.experiment
    fields = _CheckedFields(experiment)  # each batch held to the first's keys, dtypes, shapes
    scored = [("val", setup.validation_split)] + [
        ("eval" if i == 0 else f"eval_{split.split}", split)
        for i, split in enumerate(setup.eval_splits)
    ]
    batch_sharding = parallel.batch_sharding(setup.mesh)
    sync = _sync_each_step(setup.mesh)
    ahead = run.config.data.prefetch_batches
    row_bytes = sum(v.nbytes for v in _example(run, 1).values())
    kept: dict[str, list[dict]] = {}  # prefix -> a small split's batches, on the devices

    def batches(prefix: str, split: data.Split) -> Iterable[dict]:
        """The split's padded batches on the devices: transferred ahead by a thread, as
        training batches are; a split within EVAL_KEEP_BYTES stays there for the next eval."""
        if prefix in kept:
            return kept[prefix]
        host = data.eval_batches(split, fields, compiled.eval_local)
        device = data.prefetch(host, batch_sharding, ahead)
        if len(split) * row_bytes <= EVAL_KEEP_BYTES:
            kept[prefix] = list(device)
            return kept[prefix]
        return device

    def score(arrays: Any, device_batches: Iterable[dict]) -> dict[str, float]:
        sums, rows = None, []
        # Pulled to the host once per split: the loop only dispatches.
        for batch in device_batches:
            out = compiled.eval(arrays, batch)
            sums = out["sums"] if sums is None else jax.tree.map(jnp.add, sums, out["sums"])
            if "rows" in out:
                rows.append(out["rows"])
            if sync:
                jax.block_until_ready(out)
        sums, rows = jax.device_get((sums, rows))
        if rows:
            real = _real_rows(rows, type(experiment).__name__)
            return _as_numbers(experiment, _eval_metrics(experiment, sums, real))
        return _as_numbers(experiment, _eval_metrics(experiment, sums))

    warned: set[str] = set()  # the metrics a non-finite value was said of

    def evaluate(state: Any) -> dict[str, float]:
        results = {}
        arrays, _ = step_lib.eval_arrays(state)  # once, not per batch
        for prefix, split in scored:
            metrics = score(arrays, batches(prefix, split))
            results.update({f"{prefix}/{k}": v for k, v in metrics.items()})
        # Else only TensorBoard's "NaN or Inf found in input tensor", naming nothing.
        for key in [k for k, v in results.items() if not math.isfinite(v)]:  # val/ first
            if key.partition("/")[2] not in warned:
                warned.add(key.partition("/")[2])
                logging.warning(
                    "experiment %s's eval_metrics gives %s = %s (said once per metric): "
                    "undefined on that split, or a fault in its eval_sums or eval_metrics",
                    type(experiment).__name__,
                    key,
                    results[key],
                )
        return results

    def validation_names(state: Any) -> list[str]:
        host = data.eval_batches(setup.validation_split, fields, compiled.eval_local)
        first = data.put(next(host), batch_sharding)
        metrics = score(step_lib.eval_arrays(state)[0], [first])
        return [f"val/{k}" for k in metrics]

    return evaluate, validation_names


def validation_names(
    config: ml_collections.ConfigDict, setup: build_lib.Setup | None = None
) -> list[str]:
    """The `val/` metric names a run of `config` computes, found as its start finds them: the
    model freshly initialized, the eval step compiled, the validation split's first batch
    scored (seconds: what a sweep's --dry_run and --emit spend to check --metric without
    running a trial, and a rerun to check a changed metric before the run's first eval).
    `setup`: the run's, already built from `config`. Raises ConfigError for a bad config."""
    setup = setup or build_lib.build(config, build_lib.make_experiment(config))
    # No workdir, checkpoints or train data: only what compiling and scoring an eval reads.
    run = _Run(config, "", setup, None, None, None, {}, state=setup.state)  # type: ignore[arg-type]
    _, names = _evaluator(run, _compile_eval(run))
    return names(run.state)


def _eval_metrics(experiment: Experiment, sums: dict, *rows: dict[str, np.ndarray]) -> Any:
    """`experiment.eval_metrics(sums, *rows)` (a call that does not fit its signature: one
    ConfigError, `experiment_lib.call`). A sum is added up in the shape `eval_sums` gives
    it (a confusion matrix stays a matrix), so a TypeError or ValueError there while some sum
    is not a scalar (`float(sums["loss"])` of a [3] sum: "only 0-dimensional arrays can be
    converted to Python scalars", in a traceback) is a ConfigError naming that sum's shape, the
    error and the line of eval_metrics it came from; other errors are left as they are."""
    try:
        return experiment_lib.call(experiment, "eval_metrics", sums, *rows)
    except (TypeError, ValueError) as e:
        shaped = [f"{k!r} of shape {list(np.shape(v))}" for k, v in sums.items() if np.ndim(v)]
        if not shaped:
            raise
        frames = traceback.extract_tb(e.__traceback__)
        code = getattr(type(experiment).eval_metrics, "__code__", None)
        source = getattr(code, "co_filename", None)
        frame = next((f for f in reversed(frames) if f.filename == source), frames[-1])
        raise config_lib.ConfigError(
            f"experiment {type(experiment).__name__}'s eval_sums returns {', '.join(shaped)}, "
            f"and its eval_metrics fails ({type(e).__name__}: {e}; at "
            f"{frame.filename}:{frame.lineno}); each sum "
            "eval_metrics reads as a number must be a scalar, summed over the batch's rows "
            "where batch['mask'] is 1"
        ) from e


def _as_numbers(experiment: Experiment, metrics: Any) -> dict[str, float]:
    """`eval_metrics`' result as {name: float}, checked: ConfigError unless it is a dict of
    names to real numbers (a string failed at the first eval's record, after steps had run;
    NaN is a number and stays). NumPy and JAX scalars (`sums["loss"] / n` is an np.float32)
    become floats (ints, for integer ones) here, once: an np.float32 failed the best
    checkpoint's JSON record, worded as a full disk."""
    name = type(experiment).__name__
    if not isinstance(metrics, dict):
        raise config_lib.ConfigError(
            f"experiment {name}'s eval_metrics returns a {type(metrics).__name__}; return "
            "{name: number} (logged as val/NAME)"
        )
    numbers = {}
    for key, value in metrics.items():
        kind = getattr(value, "dtype", None)
        if (
            not isinstance(key, str)
            or isinstance(value, bool | np.bool_)
            or not (
                isinstance(value, int | float)
                or (kind is not None and np.ndim(value) == 0 and np.dtype(kind).kind in "iuf")
            )
        ):
            raise config_lib.ConfigError(
                f"experiment {name}'s eval_metrics gives {key!r} = {value!r}; each metric must "
                "be a real number (a float or int, or a NumPy or JAX scalar; NaN where it is "
                "undefined)"
            )
        whole = isinstance(value, int) or (kind is not None and np.dtype(kind).kind in "iu")
        numbers[key] = int(value) if whole else float(value)
    return numbers


def _report_compile(run: _Run, compiled: _Compiled, writer: MetricWriter) -> dict[str, float]:
    """Writes compile times, the train step's cost analysis (FLOPs per step; memory per call)
    and the parameter count at the start step, logs them in one line; returns the cost
    analysis (`flops`, `memory_bytes`: per call)."""
    config, mesh = run.config, run.setup.mesh
    # XLA counts a loop's body once: a call of k steps looped reports one step's FLOPs,
    # unrolled k steps' FLOPs.
    largest = max(compiled.train)
    report = step_lib.analyze(compiled.train[largest])
    if "flops" in report and compiled.unrolled:
        report["flops"] /= largest
    num_params = sum(x.size for x in jax.tree.leaves(run.setup.abstract_state.params))
    writer.write(
        run.start_step,
        {
            "compile/train_step_seconds": compiled.train_seconds,
            "compile/eval_step_seconds": compiled.eval_seconds,
            "compile/train_programs": len(compiled.train),
            "compile/steps_per_call": compiled.steps_per_call,
            **{f"compile/train_step_{k}": v for k, v in report.items()},
            "model/num_params": num_params,
        },
    )
    k = compiled.steps_per_call
    per_call = "one step per call" if k == 1 else f"{k} steps per call"
    if k > 1 and 1 in compiled.train:
        per_call += f", single steps where a call of {k} would cross a hook step"
    # "ready": traced, lowered, then compiled or read from the compilation cache (the start-up
    # line counts which), so a warm start does not claim a compile it skipped.
    logging.info(
        "model %s: %s parameters | %d x %s, mesh %s | train step ready in %.2fs (%s): "
        "%s a step and %s a call per device | eval step ready in %.2fs | %d steps of %d examples",
        config.model.name,
        f"{num_params:,}",
        mesh.size,
        jax.devices()[0].device_kind,
        dict(mesh.shape),
        compiled.train_seconds,
        per_call,
        console.flops_text(report.get("flops", 0.0)),
        console.bytes_text(report.get("memory_bytes", 0.0)),
        compiled.eval_seconds,
        run.total_steps,
        config.batch_size,
    )
    return report


def _default_hooks(
    run: _Run,
    evaluate: Callable[[Any], dict[str, float]],
    writer: MetricWriter,
    eval_listeners: Sequence[hooks_lib.EvalListener],
) -> tuple[list[hooks_lib.Hook], hooks_lib.Evaluate, hooks_lib.KeepBest]:
    """Log, eval (best checkpoint, early stopping and `eval_listeners` listening), checkpoint
    and profile hooks; returns (hooks, the eval hook, the best-checkpoint keeper). The log
    hook learns the step's FLOPs once the train step is compiled."""
    config, checkpoints, data_iter = run.config, run.checkpoints, run.data_iter
    experiment = run.experiment
    keep_best = hooks_lib.KeepBest(checkpoints, data_iter)
    listeners: list[hooks_lib.EvalListener] = [keep_best]
    if config.early_stopping.metric:
        watched = (config.early_stopping.metric, config.early_stopping.mode)
        if watched != (config.best_metric, config.best_mode):
            # Each is kept as set (stopping on val/loss, keeping the best by accuracy is a
            # choice), but a stop at "best 0.0499 at step 200" beside a best checkpoint of
            # step 250 read as a mistake (trial 48b).
            logging.warning(
                "early stopping watches %s (%s), the best checkpoint, which export and report "
                "read, is chosen by best_metric %s (%s); for the two to agree, set "
                "--config.best_metric=%s --config.best_mode=%s",
                *watched, config.best_metric, config.best_mode, *watched,
            )  # fmt: skip
        listeners.append(
            hooks_lib.EarlyStopping(
                **config.early_stopping.to_dict(), history=writer.path, start_step=run.start_step
            )
        )
    evaluate_hook = hooks_lib.Evaluate(
        config.eval_every_steps, evaluate, writer, [*listeners, *eval_listeners]
    )
    hooks = [
        hooks_lib.LogTrain(
            config.log_every_steps,
            writer,
            config.batch_size,
            peak_flops=device_peaks.peak_flops(jax.devices()[0].device_kind),
            tokens_per_example=experiment.tokens_per_example,
        ),
        evaluate_hook,
        hooks_lib.Checkpoint(
            config.checkpoint_every_steps, checkpoints, data_iter, _status_writer(run)
        ),
    ]
    if config.profile_steps:
        profile_dir = os.path.join(run.workdir, "profile")
        hooks.append(hooks_lib.Profile(*config.profile_steps, profile_dir))
    return hooks, evaluate_hook, keep_best


def _train_compiled(
    run: _Run,
    extra_hooks: Sequence[hooks_lib.Hook],
    eval_listeners: Sequence[hooks_lib.EvalListener],
    clock: startup_lib.Clock,
) -> Result:
    """Compiles, reports, trains from `run.start_step` to the end (or a stop), records it."""
    with clock.part("compile"):
        compiled = _compile_eval(run)
    writer = MetricWriter(run.workdir, resume_step=run.start_step or None)  # None: fresh
    evaluate, validation_names = _evaluator(run, compiled)
    hooks, evaluate_hook, keep_best = _default_hooks(run, evaluate, writer, eval_listeners)
    hooks += extra_hooks
    # A misspelt best_metric, early_stopping.metric or sweep --metric: one line now, not at the
    # first eval (one validation batch evaluated: about 0.04 s of the digits CNN's start).
    hooks_lib.check_reads(evaluate_hook.listeners, validation_names(run.state))
    if run.layout:  # not before: a refused start removes the file it names
        logging.info("%s", run.layout)
    with clock.part("compile"):
        calls = _compile_train(run, compiled, hooks)
    report = _report_compile(run, compiled, writer)
    for hook in hooks:  # the log hook's MFU needs the compiled step's FLOPs
        if isinstance(hook, hooks_lib.LogTrain):
            hook.flops_per_step = report.get("flops", 0.0)
            hook.start()  # its first window: from here, not from before the compile
    if (write_status := _status_writer(run)) is not None:
        write_status(run.start_step)
    started = clock.report()  # to the loop's start: the first step is next
    writer.write(run.start_step, started)
    logging.info("%s", startup_lib.describe(started))
    ended: BaseException | None = None
    # A SIGTERM after the loop must not kill its last save; one the start dropped raises on
    # entering, while `run.progress` is None: a stop while starting (nothing kept).
    with finishing():
        progress = run.progress = _Progress(run.state, run.start_step)
        try:
            _train(run, compiled, calls, hooks, progress)
        except BaseException as e:
            ended = e
            raise
        finally:
            _end(run, hooks, writer, progress, ended)
    result = Result(
        state=progress.state,
        step=progress.step,
        # A resumed segment that ran no eval reports the run's last one.
        eval_metrics=evaluate_hook.last or (run.status or {}).get("eval_metrics", {}),
        best_eval_metrics=keep_best.best,
        interrupted=progress.stop is not None and not progress.stop.finish,
        interruption=progress.stop.message if progress.stop and not progress.stop.finish else "",
        stop_reason=progress.stop.finish if progress.stop else "",
    )
    if jax.process_index() == 0:  # after checkpoints.wait(): "done" never precedes the save
        finish = result.stop_reason or ("interrupted" if result.interrupted else "done")
        message = progress.stop.message if progress.stop and progress.stop.finish else ""
        if result.interrupted:
            # The words of a Ctrl-C seen as a KeyboardInterrupt (`_end`): it read as another event.
            message = interrupted_line(result.step, result.step, progress.stop.message)
        run_status.write(
            run.workdir,
            finish,
            result.step,
            total_steps=run.total_steps,
            message=message,
            eval_metrics=result.eval_metrics,
            best_eval_metrics=result.best_eval_metrics,
        )
    if result.interruption == CTRL_C:
        # Saved: raised as Python raises a Ctrl-C, so that a caller's next lines (a notebook's
        # export of the run) do not go on with a half-trained state; ann train says this line
        # and exits 130. It returned a Result with `interrupted` set, and said nothing.
        raise KeyboardInterrupt(interrupted_line(result.step, result.step))
    return result


def _status_writer(run: _Run) -> Callable[[int], None] | None:
    """run_status.json's `running` record at a step (process 0's writer; None elsewhere)."""
    if jax.process_index() != 0:
        return None
    return lambda step: run_status.write(run.workdir, "running", step, total_steps=run.total_steps)


@dataclasses.dataclass
class _Progress:
    """Where the loop is: kept up to date step by step, so a run that raises still knows."""

    state: Any
    step: int
    stop: hooks_lib.Stop | None = None


def _per_step(pulled: list[tuple[int, dict]]) -> list[dict]:
    """Host metrics of each step, oldest first, from calls' metrics (stacked `[n]` per metric
    for a call of n > 1 steps)."""
    steps: list[dict] = []
    for n, metrics in pulled:
        if n == 1:
            steps.append(metrics)
        else:
            steps.extend(jax.tree.map(lambda v, i=i: v[i], metrics) for i in range(n))
    return steps


def _train(
    run: _Run,
    compiled: _Compiled,
    calls: chunks.Plan,
    hooks: list[hooks_lib.Hook],
    progress: _Progress,
) -> None:
    """The loop body: one call per entry of `calls` (steps per call, ann/train/chunks.py: a
    call never crosses a hook's step), and at the steps where a hook is due (or a SIGTERM is
    shared) the one host sync: pull the metrics, refuse a non-finite one, run the due hooks,
    stop if asked."""
    data_iter, total, sync = run.data_iter, run.total_steps, _sync_each_step(run.setup.mesh)
    train_fns, hyperparameters = compiled.train, compiled.hyperparameters
    state, step = progress.state, progress.step
    data_iter.plan_calls(calls, parallel.batch_sharding(run.setup.mesh, stacked=True))
    pending: list[tuple[int, dict]] = []  # (steps, device metrics) of calls not yet pulled
    data_seconds = hook_seconds = 0.0
    with Preemption() as preemption:
        for n in calls:
            t0 = time.perf_counter()
            batch = next(data_iter)
            data_seconds += time.perf_counter() - t0
            state, metrics = train_fns[n](state, batch, hyperparameters)
            progress.state, progress.step = state, step + n
            step += n
            pending.append((n, metrics))
            if sync:
                jax.block_until_ready(metrics)
            due = [h for h in hooks if h.due(step, total)]
            if not due and not preemption.stop_now(synced=False):
                continue
            pulled = _per_step(jax.device_get(pending))
            pending.clear()
            # Before any hook can save the state.
            _check_finite(pulled, step, run.checkpoints, run.start_step)
            info = hooks_lib.StepInfo(step, total, state, tuple(pulled), data_seconds, hook_seconds)
            t1 = time.perf_counter()
            for hook in hooks:
                hook.record(info)
            for hook in due:
                hook(info)
            # Asked after the wait for the device and the due hooks, not before: a signal that
            # came during them (Python dispatches ahead, so this wait can be the device running
            # up to log_every_steps steps) stops here, at the step just logged; asked before,
            # the run went on to the next step (checkpoint 301 for a last log line at 300).
            preempted = preemption.stop_now(synced=True)
            if preempted:  # the stop's step gets its train log and metrics line, as a log step
                for hook in hooks:
                    if isinstance(hook, hooks_lib.LogTrain) and hook not in due:
                        hook(info)
            data_seconds, hook_seconds = 0.0, time.perf_counter() - t1
            # A signal at the last step, its hooks (the final eval and checkpoint) done, finds
            # the run finished: "done", not "interrupted at step 3000", which a scheduler
            # counted as unfinished (trial 46c).
            preempted = preempted and step < total
            stop = info.stop() or (hooks_lib.Stop(preemption.reason) if preempted else None)
            if stop is not None:
                _stop(run, state, step, stop)
                progress.stop = stop
                return


def _stop(run: _Run, state: Any, step: int, stop: hooks_lib.Stop) -> None:
    """Saves a checkpoint at `step` and says why the run stops there (for Ctrl-C or SIGTERM,
    ann train says it once: `interrupted_line`, its last line; a SIGTERM's was a `warning:`
    beside Ctrl-C's plain line)."""
    run.checkpoints.save(step, state, run.data_iter, force=True)
    if stop.finish:  # early stopping or a sweep's pruning: an ending, not a problem
        logging.info("%s at step %d: %s", stop.finish, step, stop.message)
    elif stop.message not in (CTRL_C, *TERMINATED):
        logging.warning("%s", interrupted_line(step, step, stop.message))


def _end(
    run: _Run,
    hooks: list[hooks_lib.Hook],
    writer: MetricWriter,
    progress: _Progress,
    ended: BaseException | None,
) -> None:
    """However the loop ended: close the hooks, wait for saves in flight (a failed one raises,
    unless another error already does), close, record an error's end in run_status.json.

    A KeyboardInterrupt (Ctrl-C outside the loop's own handling, or a second one in it; also
    while waiting or closing here) is given its one line (`interrupted_line`), for ann train's
    console and run_status.json alike, once the checkpoints are closed: the closing finishes a
    save in flight, so the line names the step a rerun resumes from."""
    interrupts = [ended] if isinstance(ended, KeyboardInterrupt) else []
    for hook in hooks:
        hook.close()
    run.data_iter.close()
    try:
        run.checkpoints.wait()  # a save in flight that failed raises here
    except CheckpointSaveError as e:
        if ended is None:
            ended = e
            raise
        if isinstance(ended, CheckpointSaveError):  # the other save, the same cause (a full disk)
            logging.info("%s", e)
        else:
            logging.error("%s", e)  # after another error; that one propagates
    except KeyboardInterrupt as e:  # Ctrl-C while the last saves finish
        interrupts.append(e)
        ended = ended or e
        raise
    finally:
        try:
            run.close()
        except KeyboardInterrupt as e:  # Ctrl-C while the closing finishes a save
            interrupts.append(e)
            ended = ended or e
            raise
        finally:
            for interrupt in interrupts:
                interrupt.args = (interrupted_line(progress.step, run.checkpoints.saved_step()),)
            if ended is not None and jax.process_index() == 0:
                try:
                    _record_end(run.workdir, ended, progress.step, run.total_steps, run.checkpoints)
                except OSError as e:  # e.g. the disk that failed the save: keep the first error
                    _not_recorded(ended, e)
            try:
                writer.close()
            except OSError as e:
                if ended is None:
                    raise
                # The same full disk, after the error ann train ends with: it replaced that
                # line (a failed save's) with "no space left on device" naming no file.
                _not_recorded(ended, e, "the metrics")
