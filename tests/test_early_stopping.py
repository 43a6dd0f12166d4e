"""Early stopping: it stops on a validation metric, keeps and reports the best checkpoint, and
a rerun trains no more."""

import dataclasses
import json
import logging
import os

import jax
import pytest
from conftest import tiny

from ann.config import ConfigError
from ann.train import hooks
from ann.train.loop import train_and_evaluate


def stopping(**overrides):
    # min_delta=1 on accuracy: nothing after the first eval counts as an improvement, so the
    # run must stop at the (1 + patience)-th eval, at step 15 with evals every 5 steps.
    return tiny(
        total_steps=100,
        eval_every_steps=5,
        checkpoint_every_steps=50,
        **{
            "early_stopping.metric": "val/accuracy",
            "early_stopping.mode": "max",
            "early_stopping.patience": 2,
            "early_stopping.min_delta": 1.0,
            **overrides,
        },
    )


def eval_steps(workdir):
    with open(workdir / "metrics.jsonl") as f:
        return [r["step"] for r in map(json.loads, f) if "val/accuracy" in r]


def test_early_stopping_stops_and_a_rerun_does_not_train(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        result = train_and_evaluate(stopping(), str(tmp_path))
    assert not [r for r in caplog.records if "early stopping watches" in r.getMessage()]
    assert result.step == 15 and result.stop_reason == "early_stopped"
    # An ending, not a problem: it was printed as "warning: early_stopped at step 15 ...".
    said = [r.levelname for r in caplog.records if "early_stopped at step 15" in r.getMessage()]
    assert said == ["INFO"], said
    assert not result.interrupted
    assert eval_steps(tmp_path) == [5, 10, 15]
    status = json.loads((tmp_path / "run_status.json").read_text())
    assert status["status"] == "early_stopped" and status["step"] == 15
    assert "did not improve" in status["message"]
    # The best checkpoint is kept and reported, with the metrics it was saved with.
    best = result.best_eval_metrics
    best_dirs = [p.name for p in (tmp_path / "checkpoints_best").iterdir() if p.name.isdigit()]
    assert best_dirs == [str(best["step"])]
    assert status["best_eval_metrics"]["step"] == best["step"]
    assert "15" in [p.name for p in (tmp_path / "checkpoints").iterdir()]

    again = train_and_evaluate(stopping(), str(tmp_path))
    assert again.step == 15 and again.stop_reason == "early_stopped"
    assert again.best_eval_metrics["step"] == best["step"]
    assert eval_steps(tmp_path) == [5, 10, 15]  # nothing new was trained or evaluated


def test_a_rerun_that_trains_nothing_records_no_change_only_training_reads(tmp_path, caplog):
    """An early-stopped run rerun with early_stopping.patience=10 trained nothing, said so, and
    still appended the change to config_changes.jsonl, as if the run had gone on with it. A
    finished run's rerun now records only what is read after training (report.*, ...)."""
    from ann import config as config_lib

    train_and_evaluate(stopping(), str(tmp_path))
    changes = tmp_path / config_lib.CONFIG_CHANGES
    with caplog.at_level(logging.INFO):
        again = train_and_evaluate(stopping(**{"early_stopping.patience": 10}), str(tmp_path))
    assert again.step == 15 and again.stop_reason == "early_stopped"
    assert not changes.exists()
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert (
        "the run is finished and trains nothing, so these config changes have no effect and are "
        "not recorded: early_stopping.patience: 2 -> 10" in said
    ), said
    # `ann report` reads report.* from the latest config: recorded, the patience not.
    again = train_and_evaluate(
        stopping(**{"early_stopping.patience": 10, "report.slice_min": 0.5}), str(tmp_path)
    )
    lines = changes.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["changes"] == {"report.slice_min": [0.0, 0.5]}
    latest = config_lib.latest(str(tmp_path))
    assert latest.early_stopping.patience == 2 and latest.report.slice_min == 0.5
    assert eval_steps(tmp_path) == [5, 10, 15]  # nothing trained


def test_a_rerun_of_a_run_at_total_steps_records_no_change_only_training_reads(tmp_path):
    """The same for a run with no steps left: a new eval period changes nothing it does."""
    from ann import config as config_lib

    train_and_evaluate(tiny(total_steps=10), str(tmp_path))
    again = train_and_evaluate(tiny(total_steps=10, eval_every_steps=5), str(tmp_path))
    assert again.step == 10
    assert not (tmp_path / config_lib.CONFIG_CHANGES).exists()
    # Raised past it, the run goes on, and its changes are recorded.
    train_and_evaluate(tiny(total_steps=15, eval_every_steps=5), str(tmp_path))
    assert config_lib.last_changes(str(tmp_path)) == {
        "total_steps": [10, 15],
        "eval_every_steps": [10, 5],
    }


class StopAt(hooks.Hook):
    def __call__(self, info):
        info.request_stop("a hook asked to stop")


class TerminatedAt(hooks.Hook):
    """Sends this process a SIGTERM from inside its due call at `every` (as a scheduler's
    preemption arriving then)."""

    def __call__(self, info):
        import signal

        os.kill(os.getpid(), signal.SIGTERM)


def test_a_sigterm_at_the_last_step_finds_the_run_done(tmp_path):
    # All 20 steps, the final eval and checkpoint done: it was recorded "interrupted at step
    # 20 (SIGTERM)", which a sweep or scheduler counts as unfinished (trial 46c).
    last = tmp_path / "last"
    result = train_and_evaluate(tiny(), str(last), extra_hooks=[TerminatedAt(20)])
    assert result.step == 20 and not result.interrupted, result
    assert json.loads((last / "run_status.json").read_text())["status"] == "done"
    # Before the last step it stops there, saved, as ever.
    other = tmp_path / "other"
    result = train_and_evaluate(tiny(), str(other), extra_hooks=[TerminatedAt(10)])
    assert result.interrupted and result.step == 10


def test_patience_survives_an_interruption(tmp_path):
    # Interrupted after the second eval (one bad eval so far), the resumed run must replay that
    # history and stop one eval later, exactly where an uninterrupted run stops.
    first = train_and_evaluate(stopping(), str(tmp_path), extra_hooks=[StopAt(10)])
    assert first.interrupted and first.step == 10 and not first.stop_reason
    assert json.loads((tmp_path / "run_status.json").read_text())["status"] == "interrupted"
    second = train_and_evaluate(stopping(), str(tmp_path))
    assert second.step == 15 and second.stop_reason == "early_stopped"
    assert second.best_eval_metrics  # the best checkpoint from before the interruption


def test_off_by_default_and_a_finished_run_reports_done(tmp_path):
    result = train_and_evaluate(tiny(), str(tmp_path))
    assert result.step == 20 and not result.stop_reason
    assert json.loads((tmp_path / "run_status.json").read_text())["status"] == "done"
    # A rerun reports the run's last eval and compiles nothing: no train or eval step, and no
    # state init (the checkpoint is restored into the abstract state).
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        again = train_and_evaluate(tiny(), str(tmp_path))
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert again.step == 20 and again.eval_metrics == result.eval_metrics
    assert compiles == []


def test_early_stopping_reads_the_validation_split_not_test(tmp_path, caplog):
    # patience=1, min_delta=0: the run stops at the first eval whose val/loss is no lower than
    # the best before it; whatever the test loss does.
    config = tiny(
        total_steps=200,
        eval_every_steps=5,
        checkpoint_every_steps=100,
        **{"early_stopping.metric": "val/loss", "early_stopping.mode": "min"},
        **{"early_stopping.patience": 1, "optimizer.learning_rate": 0.05},
    )
    with caplog.at_level(logging.WARNING):
        result = train_and_evaluate(config, str(tmp_path))
    # It stops on val/loss while the best checkpoint is chosen by val/accuracy: said at the start.
    said = [r.getMessage() for r in caplog.records if "early stopping watches" in r.getMessage()]
    assert said == [
        "early stopping watches val/loss (min), the best checkpoint, which export and report "
        "read, is chosen by best_metric val/accuracy (max); for the two to agree, set "
        "--config.best_metric=val/loss --config.best_mode=min"
    ]
    with open(tmp_path / "metrics.jsonl") as f:
        evals = [r for r in map(json.loads, f) if "val/loss" in r]
    assert all("eval/loss" in r for r in evals)  # test reported beside validation
    val = [r["val/loss"] for r in evals]
    stop = next(i for i in range(1, len(val)) if val[i] >= min(val[:i]))
    assert result.stop_reason == "early_stopped" and result.step == evals[stop]["step"]
    status = json.loads((tmp_path / "run_status.json").read_text())
    assert status["message"].startswith("val/loss did not improve")


def test_early_stopping_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="early_stopping.metric.*names no split.*val/accuracy"):
        train_and_evaluate(tiny(**{"early_stopping.metric": "accuracy"}), str(tmp_path / "a"))
    with pytest.raises(ConfigError, match="early_stopping.mode"):
        train_and_evaluate(
            tiny(**{"early_stopping.metric": "val/loss", "early_stopping.mode": "down"}),
            str(tmp_path / "b"),
        )
    # Refused before the first step, after the workdir was opened: what it wrote is removed
    # (config.json and empty checkpoint dirs read as a run), the user's own files stay.
    with pytest.raises(ConfigError, match="'val/acc' is not a validation metric of this run"):
        train_and_evaluate(tiny(**{"early_stopping.metric": "val/acc"}), str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="'val/acc' is not a validation metric of this run"):
        train_and_evaluate(tiny(**{"early_stopping.metric": "val/acc"}), str(tmp_path / "mine"))
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]
    # A test metric never stops a run: refused before anything compiles, with the fix.
    with pytest.raises(
        ConfigError,
        match="config key 'early_stopping.metric' is 'eval/accuracy', which is not a validation "
        "metric.*use 'val/accuracy'",
    ):
        train_and_evaluate(tiny(**{"early_stopping.metric": "eval/accuracy"}), str(tmp_path / "d"))


def test_min_mode_and_min_delta():
    stop = hooks.EarlyStopping("val/loss", "min", patience=2, min_delta=0.1)
    assert not stop.update(1, 1.0)
    assert not stop.update(2, 0.95)  # better, but not by more than min_delta
    assert not stop.update(3, 0.85)  # by more than min_delta from 1.0: counter resets
    assert stop.best == 0.85 and stop.bad_evals == 0
    assert not stop.update(4, 0.80)
    assert stop.update(5, 0.90)


def test_a_hook_reads_a_frozen_step_record_and_asks_to_stop_through_it():
    info = hooks.StepInfo(step=10, total_steps=20, state=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.step = 11
    assert info.stop() is None
    info.request_stop("a hook asked to stop")
    info.request_stop("patience ran out", finish="early_stopped")
    info.request_stop("the pruner said so", finish="pruned")
    # Finishing wins over interrupting, whichever asked first; among finishes, the first.
    assert info.stop() == hooks.Stop("patience ran out", "early_stopped")
