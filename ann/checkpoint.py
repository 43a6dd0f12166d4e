"""Orbax checkpoints of the train state and the data position: the latest few, and the best.

`checkpoints/` keeps the latest `max_to_keep` steps; `checkpoints_best/` keeps the one step with
the best value of the configured eval metric. Orbax writes each step to a temporary directory
and renames it when complete, so an interrupted save never shadows a good checkpoint.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

from ann.config import ConfigError


class CheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be restored; the message says what to do."""


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


class Checkpoints:
    def __init__(
        self,
        workdir: str,
        max_to_keep: int,
        best_metric: str,
        best_mode: str,
        async_save: bool = True,
    ):
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.latest = ocp.CheckpointManager(
            os.path.abspath(os.path.join(workdir, "checkpoints")),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                enable_async_checkpointing=async_save,
                multiprocessing_options=_barrier_names("latest"),
            ),
        )
        self.best = ocp.CheckpointManager(
            os.path.abspath(os.path.join(workdir, "checkpoints_best")),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1,
                best_fn=lambda metrics: metrics[best_metric],
                best_mode=best_mode,
                keep_checkpoints_without_metrics=False,
                enable_async_checkpointing=async_save,
                multiprocessing_options=_barrier_names("best"),
            ),
        )
        self._best_value = self.best_metrics().get(best_metric)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def save(self, step: int, state: Any, data_iter: Any, force: bool = False) -> bool:
        if step == self.latest.latest_step():
            return False
        return self.latest.save(step, args=_save_args(state, data_iter), force=force)

    def best_metrics(self) -> dict:
        """`{"step": N, **eval metrics}` of the best checkpoint so far, or {} if there is none."""
        step = self.best.best_step()
        metrics = self.best.metrics(step) if step is not None else None
        return {"step": int(step), **metrics} if metrics else {}

    def save_if_best(self, step: int, state: Any, data_iter: Any, metrics: dict) -> bool:
        """Saves to `checkpoints_best/` when `metrics[best_metric]` beats the best so far."""
        if self.best_metric not in metrics:
            raise ConfigError(
                f"config key 'best_metric': {self.best_metric!r} is not an eval metric; "
                f"choose one of {', '.join(sorted(metrics))}"
            )
        value, best = metrics[self.best_metric], self._best_value
        better = best is None or (value > best if self.best_mode == "max" else value < best)
        if better and step != self.best.latest_step():
            self.best.save(step, args=_save_args(state, data_iter), metrics=metrics, force=True)
            self._best_value = value
        return better

    def restore(self, abstract_state: Any, data_iter: Any, step: int | None = None) -> tuple:
        """Restores (state, step) into `abstract_state`'s shapes and shardings, and the data
        iterator in place."""
        step = self.latest.latest_step() if step is None else step
        try:
            restored = self.latest.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
                ),
            )
            data_iter.set_state(restored.data)
        except Exception as e:
            raise CheckpointError(
                f"checkpoint step {step} in {self.latest.directory} cannot be restored into this "
                f"config ({type(e).__name__}: {e}); use the config it was saved with, or delete "
                "that step directory to fall back to an earlier one, or start a new --workdir"
            ) from e
        return restored.state, step

    def restore_state(self, abstract_state: Any, step: int | str = "latest") -> tuple:
        """Only the train state (no data iterator): `step` is "latest", "best" or a number."""
        manager = self.best if step == "best" else self.latest
        if step in ("best", "latest"):
            step = manager.latest_step()
        if step is None:
            raise CheckpointError(
                f"no checkpoint in {manager.directory}; train first, or pick another step"
            )
        try:
            restored = manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
            )
        except Exception as e:
            raise CheckpointError(
                f"checkpoint step {step} in {manager.directory} cannot be restored "
                f"({type(e).__name__}: {e})"
            ) from e
        return restored.state, int(step)

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()
