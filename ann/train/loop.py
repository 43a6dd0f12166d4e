"""`train_and_evaluate(config, workdir)`: the task-free train loop.

Data -> one AOT-compiled, sharded train step -> hooks (log, eval, checkpoint). Re-running the
same command resumes from the latest checkpoint: parameters, optimizer, step, RNG and the data
iterator, so an interrupted run ends where an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from ann import config as config_lib
from ann import data, parallel, sharding
from ann.experiment import Experiment
from ann.metrics import device_peaks
from ann.train import build as build_lib
from ann.train import freezing, optimizers, run_status, transfer
from ann.train import hooks as hooks_lib
from ann.train import state as state_lib
from ann.train import step as step_lib
from ann.train.checkpoint import Checkpoints, CheckpointSaveError
from ann.train.preemption import Preemption
from ann.train.writers import MetricWriter


class NonFiniteLossError(FloatingPointError):
    """Training diverged; nothing after the last good checkpoint was saved. `.step` is the
    first step whose metrics or state were not finite."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


@dataclasses.dataclass
class Result:
    state: state_lib.TrainState
    step: int
    eval_metrics: dict[str, float]
    best_eval_metrics: dict[str, float]
    interrupted: bool = False  # stopped before total_steps (SIGTERM or a hook); rerun resumes
    # Why a hook finished the run before total_steps ("early_stopped", "pruned"), else "".
    # Such a run is not interrupted: rerunning it does not train further.
    stop_reason: str = ""


def _abstract_batch(example: dict[str, np.ndarray], global_rows: int, sharding) -> dict:
    return {
        k: jax.ShapeDtypeStruct((global_rows, *v.shape[1:]), v.dtype, sharding=sharding)
        for k, v in example.items()
    }


def _real_rows(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-row eval outputs of a whole split, concatenated, without the padding rows."""
    keep = np.concatenate([b["mask"] for b in batches]) > 0
    return {k: np.concatenate([b[k] for b in batches])[keep] for k in batches[0] if k != "mask"}


def _check_finite(window: list[dict], step: int, checkpoints: Checkpoints) -> None:
    """Raises NonFiniteLossError if a train metric, or the state a step produced, is not finite.

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
        raise NonFiniteLossError(
            f"training diverged: {what}; nothing non-finite was saved (last good checkpoint: "
            f"{f'step {last}' if last is not None else 'none'}). To train on, use a new --workdir "
            "with a lower optimizer.learning_rate or an optimizer.grad_clip_norm"
            + (f" (init_from=WORKDIR:{last} starts from that checkpoint)" if last else ""),
            first,
        )


CONFIG_CHANGES = "config_changes.jsonl"


def _compare_config(
    config: ml_collections.ConfigDict, workdir: str
) -> tuple[ml_collections.ConfigDict | None, dict]:
    """At a fresh start (no checkpoint yet) writes config.json, the run's record; on a rerun
    compares `config` with it: (saved config, allowed changes), or a ConfigError naming each
    key that would change what is trained."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    started = os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir))
    if started and os.path.exists(os.path.join(workdir, "config.json")):
        saved = config_lib.read(workdir)
        return saved, config_lib.check_resume(saved, config, workdir)
    if jax.process_index() == 0:
        config_lib.write(config, workdir)
    return None, {}


def _record_config_changes(
    config: ml_collections.ConfigDict,
    saved: ml_collections.ConfigDict,
    changes: dict,
    workdir: str,
    step: int,
    num_train: int,
) -> None:
    """Logs the allowed changes and appends them to WORKDIR/config_changes.jsonl (one line per
    resume that changed something new: step, time, {key: [old, new]}). A new run length under a
    schedule that depends on it (warmup_cosine) is warned about with the learning rate at the
    resume step under the old and the new schedule."""
    logging.info(
        "resuming with config changes: %s",
        "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items()),
    )
    old_total, new_total = (
        build_lib.total_steps(saved, num_train),
        build_lib.total_steps(config, num_train),
    )
    if old_total != new_total:
        before = float(optimizers.schedule(saved.optimizer, old_total)(step))
        after = float(optimizers.schedule(config.optimizer, new_total)(step))
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
    if jax.process_index() > 0:
        return
    path = os.path.join(workdir, CONFIG_CHANGES)
    record = {k: list(v) for k, v in changes.items()}
    try:
        with open(path) as f:
            last = [json.loads(line) for line in f if line.strip()][-1:]
    except (OSError, ValueError):
        last = []
    if last and last[0].get("changes") == record:
        return  # the same changes as the last resume: already recorded
    entry = {"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changes": record}
    with open(path, "a") as f:
        f.write(json.dumps(entry, default=str) + "\n")


def _record_end(
    workdir: str, error: BaseException, step: int, total_steps: int, checkpoints: Checkpoints
) -> None:
    """run_status.json for a run that an exception ended: `diverged` (with the first bad step),
    `interrupted` (Ctrl-C) or `failed`, with the one-line message."""
    if isinstance(error, NonFiniteLossError):
        status, step = "diverged", error.step
    elif isinstance(error, KeyboardInterrupt):
        status = "interrupted"
    else:
        status = "failed"
    message = str(error) or type(error).__name__
    if status == "interrupted":
        message = "interrupted (Ctrl-C); the same command resumes from the last checkpoint"
    run_status.write(
        workdir,
        status,
        step,
        total_steps=total_steps,
        message=message if status != "failed" else f"{type(error).__name__}: {message}",
        last_checkpoint=checkpoints.latest_step(),
    )


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    extra_hooks: Sequence[hooks_lib.Hook] = (),
) -> Result:
    """Trains `config.experiment` and evaluates it; resumes if `workdir` has a checkpoint."""
    return run(config, workdir, build_lib.make_experiment(config), extra_hooks)


def _enable_compilation_cache(setting: str, workdir: str) -> None:
    """Turns on XLA's persistent compilation cache (first use in a process decides; a cache
    directory set elsewhere, e.g. $JAX_COMPILATION_CACHE_DIR, wins)."""
    if setting == "off" or jax.config.jax_compilation_cache_dir:
        return
    path = setting or os.path.join(os.path.dirname(os.path.abspath(workdir)), ".jax_cache")
    jax.config.update("jax_compilation_cache_dir", path)


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    experiment: Experiment,
    extra_hooks: Sequence[hooks_lib.Hook] = (),
) -> Result:
    _enable_compilation_cache(config.compilation_cache_dir, workdir)
    config_lib.check_workdir_selects_on_validation(workdir)  # before config.json is rewritten
    setup = build_lib.build(config, experiment)
    mesh, abstract_state, state_shardings = setup.mesh, setup.abstract_state, setup.state_shardings
    saved_config, config_changes = _compare_config(config, workdir)
    if jax.process_index() == 0:
        layout = os.path.join(workdir, "parameters.tsv")
        summary = sharding.write_layout(abstract_state.params, state_shardings.params, layout)
        logging.info("sharding_rules %s: %s (each one: %s)", config.sharding_rules, summary, layout)
    train_split, eval_splits, total_steps = setup.train_split, setup.eval_splits, setup.total_steps
    model_def, tx, dc = setup.model_def, setup.tx, config.data
    replicated = parallel.replicated(mesh)
    num_params = sum(x.size for x in jax.tree.leaves(abstract_state.params))

    batch_sharding = parallel.batch_sharding(mesh)
    local_batch = config.batch_size // jax.process_count()
    host_iter = data.train_batches(
        train_split,
        experiment.fields,
        config.batch_size,
        seed=config.seed,
        shuffle=dc.shuffle,
        read_threads=dc.read_threads,
    )
    data_iter = data.DeviceIterator(host_iter, batch_sharding, dc.prefetch_batches)

    checkpoints = Checkpoints(
        workdir,
        config.max_to_keep,
        config.best_metric,
        config.best_mode,
        async_save=config.async_checkpointing,
    )
    start_step = 0
    if checkpoints.latest_step() is not None:
        state, start_step = checkpoints.restore(abstract_state, data_iter)
        logging.info("resumed from %s at step %d", checkpoints.latest.directory, start_step)
        if config_changes:
            _record_config_changes(
                config, saved_config, config_changes, workdir, start_step, len(train_split)
            )
    else:
        state = setup.state
        if config.init_from:  # only at a fresh start: on resume the run's own checkpoint wins
            state = transfer.init_from(state, config, tx, state_shardings, workdir)
    status = run_status.read(workdir)
    if run_status.stale_running(status):
        if jax.process_index() == 0:
            logging.warning(
                "%s; resuming from the last checkpoint (step %s)",
                run_status.stale_running(status).replace("WORKDIR", workdir, 1),
                start_step or "none: starting over",
            )
        status = None
    elif (owner := run_status.live_owner(status)) is not None and jax.process_index() == 0:
        logging.warning(
            "%s says pid %d on this host is training this workdir and that process is alive: "
            "two runs in one workdir overwrite each other's checkpoints; stop one of them",
            run_status.path(workdir),
            owner,
        )
    early = bool(status) and status["status"] in run_status.FINISHED_EARLY
    if early or start_step >= total_steps:
        # Finished: at total_steps, or before it (early stopping, a sweep's pruning). Nothing
        # to train or compile; report what the run last evaluated.
        data_iter.close()
        if early:
            logging.info(
                "run %s at step %d: %s; nothing to train (delete %s to train on)",
                status["status"].replace("_", " "),
                status["step"],
                status.get("message", ""),
                run_status.path(workdir),
            )
        else:
            logging.info(
                "run finished at step %d of %d; nothing to train (raise total_steps to train on)",
                start_step,
                total_steps,
            )
            if jax.process_index() == 0 and (status or {}).get("status") != "done":
                # E.g. the status file was lost: the checkpoint says the run is complete.
                run_status.write(
                    workdir,
                    "done",
                    start_step,
                    total_steps=total_steps,
                    eval_metrics=(status or {}).get("eval_metrics", {}),
                    best_eval_metrics=checkpoints.best_metrics(),
                )
        checkpoints.close()
        return Result(
            state=state,
            step=start_step,
            eval_metrics=(status or {}).get("eval_metrics", {}),
            best_eval_metrics=(status or {}).get("best_eval_metrics", {}),
            stop_reason=status["status"] if early else "",
        )

    # Compile both steps ahead of time, before step 0.
    example = experiment.fields(train_split.rows(np.arange(local_batch)))
    train_fn, train_compile = step_lib.compile_step(
        step_lib.make_train_step(
            experiment,
            model_def,
            tx,
            optimizers.schedule(config.optimizer, total_steps),
            config.optimizer.accumulate_steps,
            frozenset(freezing.frozen_paths(state.params, tuple(config.freeze))),
        ),
        (state, _abstract_batch(example, config.batch_size, batch_sharding)),
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, replicated),
        donate_argnums=(0,),
    )
    eval_batch = config.eval_batch_size or config.batch_size
    eval_local = eval_batch // jax.process_count()
    eval_example = {
        **experiment.fields(train_split.rows(np.arange(eval_local))),
        "mask": np.ones(eval_local, np.float32),
    }
    eval_fn, eval_compile = step_lib.compile_step(
        step_lib.make_eval_step(experiment, model_def),
        (state, _abstract_batch(eval_example, eval_batch, batch_sharding)),
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=replicated,
    )
    # On CPU with several devices, back-to-back collective steps can deadlock: sync each step.
    sync_each_step = jax.default_backend() == "cpu" and mesh.size > 1

    # `val/` metrics choose (best checkpoint, early stopping, a sweep's objective); `eval/` (the
    # first of data.eval_splits, the test split by default) and `eval_<split>/` are reported.
    scored = [("val", setup.validation_split)] + [
        ("eval" if i == 0 else f"eval_{split.split}", split) for i, split in enumerate(eval_splits)
    ]

    def evaluate(state) -> dict[str, float]:
        results = {}
        for prefix, split in scored:
            sums, rows = None, []
            for batch in data.eval_batches(split, experiment.fields, eval_local):
                out = eval_fn(state, data.put(batch, batch_sharding))
                sums = out["sums"] if sums is None else jax.tree.map(jnp.add, sums, out["sums"])
                if "rows" in out:
                    rows.append(jax.device_get(out["rows"]))
                elif sync_each_step:
                    jax.block_until_ready(sums)
            sums = jax.device_get(sums)
            if rows:
                metrics = experiment.eval_metrics(sums, _real_rows(rows))
            else:
                metrics = experiment.eval_metrics(sums)
            results.update({f"{prefix}/{k}": v for k, v in metrics.items()})
        return results

    report = step_lib.analyze(train_fn)
    peak = device_peaks.peak_flops(jax.devices()[0].device_kind)
    writer = MetricWriter(workdir, resume_step=start_step)
    writer.write(
        start_step,
        {
            "compile/train_step_seconds": train_compile,
            "compile/eval_step_seconds": eval_compile,
            **{f"compile/train_step_{k}": v for k, v in report.items()},
            "model/num_params": num_params,
        },
    )
    logging.info(
        "model %s: %s parameters | %d x %s, mesh %s | train step compiled in %.2fs: %.3g "
        "GFLOP and %.1f MiB per device | eval compiled in %.2fs | %d steps of %d examples",
        config.model.name,
        f"{num_params:,}",
        mesh.size,
        jax.devices()[0].device_kind,
        dict(mesh.shape),
        train_compile,
        report.get("flops", 0.0) / 1e9,
        report.get("memory_bytes", 0.0) / 2**20,
        eval_compile,
        total_steps,
        config.batch_size,
    )

    ctx = hooks_lib.Context(
        state=state,
        data_iter=data_iter,
        total_steps=total_steps,
        batch_size=config.batch_size,
        writer=writer,
        checkpoints=checkpoints,
        window_first_step=start_step,
        start_step=start_step,
        best_eval_metrics=checkpoints.best_metrics(),  # on resume, the best so far
        flops_per_step=report.get("flops", 0.0),
        peak_flops=peak,
        tokens_per_example=experiment.tokens_per_example,
    )
    hooks = [
        hooks_lib.LogTrain(config.log_every_steps),
        hooks_lib.Evaluate(config.eval_every_steps, evaluate),
        *(
            [hooks_lib.EarlyStopping(config.eval_every_steps, **config.early_stopping.to_dict())]
            if config.early_stopping.metric
            else []
        ),
        hooks_lib.Checkpoint(config.checkpoint_every_steps),
        *(
            [hooks_lib.Profile(*config.profile_steps, os.path.join(workdir, "profile"))]
            if config.profile_steps
            else []
        ),
        *extra_hooks,
    ]
    pending: list[dict] = []  # device metrics of steps not yet pulled to the host
    step = start_step
    interrupted = False
    if jax.process_index() == 0:
        run_status.write(workdir, "running", step, total_steps=total_steps)
    ended: BaseException | None = None
    try:
        with Preemption() as preemption:
            while step < total_steps:
                t0 = time.perf_counter()
                batch = next(data_iter)
                ctx.data_seconds += time.perf_counter() - t0
                state, metrics = train_fn(state, batch)
                step += 1
                pending.append(metrics)
                if sync_each_step:
                    jax.block_until_ready(metrics)
                due = [h for h in hooks if h.due(step, total_steps)]
                preempted = preemption.stop_now(synced=bool(due))
                if not due and not preempted:
                    continue
                # The only host sync in the loop: pull metrics, refuse to go on past a NaN in
                # them or in the state, before any hook can save that state.
                pulled = jax.device_get(pending)
                pending.clear()
                _check_finite(pulled, step, checkpoints)
                ctx.window.extend(pulled)
                ctx.state = state
                for hook in due:
                    hook(step, ctx)
                if ctx.finish:
                    checkpoints.save(step, state, data_iter, force=True)
                    logging.warning("%s at step %d: %s", ctx.finish, step, ctx.finish_message)
                    break
                if preempted or ctx.stop:
                    checkpoints.save(step, state, data_iter, force=True)
                    why = "SIGTERM" if preempted else "a hook asked to stop"
                    logging.warning("%s: saved a checkpoint at step %d and stopped", why, step)
                    interrupted = True
                    break
    except BaseException as e:
        ended = e
        raise
    finally:
        for hook in hooks:
            hook.close(ctx)
        data_iter.close()
        try:
            checkpoints.wait()  # a save in flight that failed raises here
        except CheckpointSaveError as e:
            if ended is None:
                ended = e
                raise
            logging.error("%s", e)  # after another error; that one propagates
        finally:
            if ended is not None and jax.process_index() == 0:
                try:
                    _record_end(workdir, ended, step, total_steps, checkpoints)
                except OSError as e:  # e.g. the disk that failed the save: keep the first error
                    logging.error("could not record the run's end in run_status.json: %s", e)
            checkpoints.close()
            writer.close()
    result = Result(
        state=state,
        step=step,
        # A resumed segment that ran no eval reports the run's last one.
        eval_metrics=ctx.eval_metrics or (status or {}).get("eval_metrics", {}),
        best_eval_metrics=ctx.best_eval_metrics,
        interrupted=interrupted,
        stop_reason=ctx.finish,
    )
    if jax.process_index() == 0:  # after checkpoints.wait(): "done" never precedes the save
        run_status.write(
            workdir,
            ctx.finish or ("interrupted" if interrupted else "done"),
            step,
            total_steps=total_steps,
            message=ctx.finish_message,
            eval_metrics=result.eval_metrics,
            best_eval_metrics=result.best_eval_metrics,
        )
    return result
