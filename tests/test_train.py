"""The train loop: it learns, it resumes exactly, it never retraces, it stops on NaN."""

import contextlib
import json
import signal
import threading

import jax
import numpy as np
import pytest
from conftest import tiny

from ann.train import hooks
from ann.train.loop import NonFiniteLossError, train_and_evaluate


def read_metrics(workdir):
    with open(workdir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("digits_mlp", {"model.norm": "layer"}),
        ("digits_cnn", {}),
        ("digits_resnet", {}),
        ("breast_cancer_mlp", {"num_epochs": None}),
    ],
)
def test_one_step_for_each_model(tmp_path, name, overrides):
    result = train_and_evaluate(tiny(name, total_steps=1, **overrides), str(tmp_path))
    assert result.step == 1
    assert np.isfinite(result.eval_metrics["eval/loss"])
    assert 0.0 <= result.eval_metrics["eval/accuracy"] <= 1.0


def test_it_learns_digits(tmp_path):
    config = tiny(total_steps=150, batch_size=64, eval_every_steps=150)
    result = train_and_evaluate(config, str(tmp_path))
    assert result.eval_metrics["eval/accuracy"] >= 0.93
    losses = [m["train/loss"] for m in read_metrics(tmp_path) if "train/loss" in m]
    assert losses[-1] < 0.25 * losses[0]


def test_it_learns_breast_cancer(tmp_path):
    config = tiny("breast_cancer_mlp", num_epochs=None, total_steps=120, eval_every_steps=120)
    result = train_and_evaluate(config, str(tmp_path))
    assert result.eval_metrics["eval/accuracy"] >= 0.93
    assert result.eval_metrics["eval/auroc"] >= 0.98  # the model zoo's bar, on a small budget


def test_metrics_and_event_files(tmp_path):
    train_and_evaluate(tiny(), str(tmp_path))
    records = read_metrics(tmp_path)
    keys = set().union(*records)
    for key in [
        "train/loss",
        "train/examples_per_sec",
        "eval/loss",
        "eval/accuracy",
        "compile/train_step_seconds",
        "train/learning_rate",
        "train/grad_norm",
    ]:
        assert key in keys, key
    assert [r["step"] for r in records if "eval/loss" in r] == [10, 20]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


class StopAt(hooks.Hook):
    """Interrupts the run at a step, as a preemption would."""

    def __call__(self, info):
        info.request_stop("a hook asked to stop")


class StopFor(hooks.Hook):
    """Stops the run as a signal would, its reason the stop's message."""

    def __init__(self, every: int, reason: str):
        super().__init__(every)
        self.reason = reason

    def __call__(self, info):
        info.request_stop(self.reason)


class CtrlCAt(hooks.Hook):
    """Sends this process a Ctrl-C (SIGINT) at its step, as a notebook's interrupt does."""

    def __call__(self, info):
        signal.raise_signal(signal.SIGINT)


def test_ctrl_c_from_python_raises_once_the_step_is_saved_and_the_same_call_resumes(tmp_path):
    # A notebook's Ctrl-C returned Result(interrupted=True) and said nothing: the next cells
    # exported a half-trained model. Now it raises, with ann train's last line, after the save.
    assert threading.current_thread() is threading.main_thread()  # (the loop's handler's)
    workdir, config = str(tmp_path), tiny(total_steps=20)
    # A notebook's SIGINT handler; pytest run as a background job (`.ci/run &`) has SIGINT
    # ignored, which the loop leaves ignored (preemption.Preemption).
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt) as stopped:
            train_and_evaluate(config, workdir, extra_hooks=[CtrlCAt(7)])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's again
    finally:
        signal.signal(signal.SIGINT, handler)
    line = "interrupted at step 7 (Ctrl-C); checkpoint saved; run the same command to resume"
    assert str(stopped.value) == line
    from ann.train import run_status

    record = run_status.read(workdir)
    assert (record["status"], record["step"], record["message"]) == ("interrupted", 7, line)
    resumed = train_and_evaluate(config, workdir)
    assert (resumed.step, resumed.interrupted) == (20, False)


def test_a_stop_is_recorded_in_the_words_ann_train_says_it(tmp_path):
    # run_status.json said "Ctrl-C: saved step 290; the same command resumes" for a Ctrl-C seen at
    # a step boundary, "interrupted at step 73 (Ctrl-C); checkpoint saved; run the same command
    # to resume" (ann train's line) for one seen as a KeyboardInterrupt: two wordings, one event.
    from ann.train import run_status
    from ann.train.loop import interrupted_line

    for reason in ("Ctrl-C", "SIGTERM"):
        workdir = str(tmp_path / reason)
        line = f"interrupted at step 5 ({reason}); checkpoint saved; run the same command to resume"
        with contextlib.nullcontext() if reason == "SIGTERM" else pytest.raises(KeyboardInterrupt):
            train_and_evaluate(tiny(total_steps=20), workdir, extra_hooks=[StopFor(5, reason)])
        assert run_status.read(workdir)["message"] == line
        assert interrupted_line(5, 5, reason) == line  # ann train's own line for a Ctrl-C


def params_of(result):
    return jax.tree.leaves(jax.device_get(result.state.params))


def assert_same_state(a, b, atol=1e-6):
    """The whole train state: step, RNG, parameters, model state (BatchNorm statistics) and
    optimizer state (Adam's moments and count), leaf by leaf, with paths in the message."""
    for part in ("step", "rng", "params", "model_state", "opt_state"):
        got, want = jax.device_get(getattr(a, part)), jax.device_get(getattr(b, part))
        got_leaves = jax.tree_util.tree_leaves_with_path(got)
        want_leaves = jax.tree_util.tree_leaves_with_path(want)
        assert [p for p, _ in got_leaves] == [p for p, _ in want_leaves], part
        assert got_leaves, part
        for (path, x), (_, y) in zip(got_leaves, want_leaves):
            np.testing.assert_allclose(
                x, y, atol=atol, rtol=0, err_msg=f"{part}{jax.tree_util.keystr(path)}"
            )


def test_resume_is_exact(tmp_path):
    # Dropout (RNG), BatchNorm statistics (model state), Adam moments and the data order must
    # all come back for the two runs to agree: the whole state and the final eval.
    config = tiny(total_steps=30, **{"model.norm": "batch", "model.dropout": 0.2})
    straight = train_and_evaluate(config, str(tmp_path / "straight"))

    first = train_and_evaluate(config, str(tmp_path / "resumed"), extra_hooks=[StopAt(13)])
    assert first.interrupted and first.step == 13
    second = train_and_evaluate(config, str(tmp_path / "resumed"))
    assert second.step == 30 and not second.interrupted
    assert jax.tree.leaves(second.state.model_state), "no BatchNorm statistics to compare"
    assert_same_state(straight.state, second.state)
    evals = {k: v for k, v in straight.eval_metrics.items() if not k.endswith("seconds")}
    assert evals and {k: second.eval_metrics[k] for k in evals} == pytest.approx(evals, abs=1e-6)
    assert second.best_eval_metrics["step"] == straight.best_eval_metrics["step"]
    # the metrics file reads as one run: each step once, the same evals at the same steps
    steps = [r["step"] for r in read_metrics(tmp_path / "resumed") if "train/loss" in r]
    assert steps == sorted(set(steps))
    resumed_evals = [r for r in read_metrics(tmp_path / "resumed") if "eval/loss" in r]
    straight_evals = [r for r in read_metrics(tmp_path / "straight") if "eval/loss" in r]
    assert [r["step"] for r in resumed_evals] == [r["step"] for r in straight_evals]
    for r, s in zip(resumed_evals, straight_evals):
        assert r["eval/loss"] == pytest.approx(s["eval/loss"], abs=1e-6)


def test_no_retrace_after_the_first_step(tmp_path):
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        # A first run compiles what any run shares (jnp helpers cached per process), so the
        # count does not depend on which tests ran before this one.
        train_and_evaluate(tiny(total_steps=2, eval_every_steps=1), str(tmp_path / "warm"))
        compiles.clear()
        train_and_evaluate(tiny(total_steps=2, eval_every_steps=1), str(tmp_path / "a"))
        short = len(compiles)
        compiles.clear()
        train_and_evaluate(tiny(total_steps=25, eval_every_steps=1), str(tmp_path / "b"))
        long = len(compiles)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert short > 0
    assert long == short, f"{long - short} extra compilations in 23 more steps"


def test_nan_stops_training_before_saving(tmp_path):
    config = tiny(
        total_steps=50,
        checkpoint_every_steps=1,
        log_every_steps=1,
        **{"optimizer.name": "sgd", "optimizer.learning_rate": 1e30},
    )
    with pytest.raises(NonFiniteLossError, match="training diverged: .* at step (\\d+)") as e:
        train_and_evaluate(config, str(tmp_path))
    bad_step = int(str(e.value).split(" at step ")[1].split(";")[0])
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and max(saved) < bad_step


def test_best_checkpoint_is_kept(tmp_path):
    # Chosen on the validation split's loss (the default best_metric is val/accuracy); the test
    # split's metrics are recorded beside it and never choose.
    config = tiny(total_steps=40, eval_every_steps=5, max_to_keep=1)
    config.best_metric, config.best_mode = "val/loss", "min"
    result = train_and_evaluate(config, str(tmp_path))
    evals = [r for r in read_metrics(tmp_path) if "val/loss" in r]
    best = min(evals, key=lambda r: r["val/loss"])
    best_dirs = [p.name for p in (tmp_path / "checkpoints_best").iterdir() if p.name.isdigit()]
    assert best_dirs == [str(best["step"])] == [str(result.best_eval_metrics["step"])]
    assert result.best_eval_metrics["val/loss"] == best["val/loss"]
    assert result.best_eval_metrics["eval/loss"] == best["eval/loss"]  # test, reported
    status = json.loads((tmp_path / "run_status.json").read_text())
    assert status["best_eval_metrics"]["val/loss"] == best["val/loss"]
    assert {"val/accuracy", "eval/accuracy"} <= set(status["eval_metrics"])
    latest = [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    assert latest == ["40"]


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    common = {"total_steps": 5, "model.dropout": 0.0}
    full = train_and_evaluate(tiny(**common), str(tmp_path / "full"))
    micro = train_and_evaluate(
        tiny(**common, **{"optimizer.accumulate_steps": 2}), str(tmp_path / "micro")
    )
    for a, b in zip(params_of(full), params_of(micro)):
        np.testing.assert_allclose(a, b, atol=2e-5)


@pytest.mark.parametrize("schedule", ["constant", "warmup_cosine", "step"])
@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_optimizers_and_schedules_build(name, schedule):
    from ann.train import optimizers

    config = tiny(
        **{
            "optimizer.name": name,
            "optimizer.schedule": schedule,
            "optimizer.warmup_steps": 2,
            "optimizer.step_boundaries": (5,),
            "optimizer.grad_clip_norm": 1.0,
            "optimizer.weight_decay": 1e-4,
        }
    )
    tx = optimizers.make(config.optimizer, total_steps=10)
    params = {"w": jax.numpy.ones(3)}
    updates, _ = tx.update({"w": jax.numpy.ones(3)}, tx.init(params), params)
    assert np.isfinite(np.asarray(updates["w"])).all()
    lr = optimizers.schedule(config.optimizer, 10)
    if schedule == "step":
        assert lr(6) == pytest.approx(0.1 * lr(4))
    if schedule == "warmup_cosine":
        assert lr(0) == 0.0 and lr(2) == pytest.approx(config.optimizer.learning_rate)


def test_num_epochs_sets_the_steps(tmp_path):
    config = tiny(total_steps=None, num_epochs=1)
    result = train_and_evaluate(config, str(tmp_path))
    assert result.step == -(-1221 // 32)  # the digits train split: 1,221 rows


def test_restore_model_gives_the_evaluated_model(tmp_path):
    """The loop's eval metrics, summed over padded batches (eval batch 64 does not divide the
    360 test rows), equal scikit-learn's over the restored model's predictions of every row."""
    from sklearn import metrics as sk

    from ann import data
    from ann.train.build import restore_model

    # Two evals: the second reads the test batches the first left on the devices.
    config = tiny(total_steps=20, eval_every_steps=10, eval_batch_size=64)
    result = train_and_evaluate(config, str(tmp_path))
    experiment, model, step, config = restore_model(str(tmp_path), "best")
    assert step == 20 and config.model.name == "mlp"
    test = data.load("digits", "test", cache=True)
    rows = test.rows(np.arange(len(test)))
    predicted = jax.device_get(experiment.predict(model, {"image": rows["image"]}))
    labels, probabilities = rows["label"], predicted["probabilities"]
    got = {k.removeprefix("eval/"): v for k, v in result.eval_metrics.items()}
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(labels, predicted["label"]))
    for name in ("precision", "recall", "f1"):
        want = getattr(sk, f"{name}_score")(labels, predicted["label"], average="macro")
        assert got[name] == pytest.approx(want, abs=1e-6), name
    want_auroc = sk.roc_auc_score(labels, probabilities, multi_class="ovr")
    assert got["auroc"] == pytest.approx(want_auroc, abs=1e-5)
    assert got["loss"] == pytest.approx(sk.log_loss(labels, probabilities, labels=range(10)), 1e-4)

    # Using a model needs no batch that divides this machine's devices (4 here).
    config_file = tmp_path / "config.json"
    config_file.write_text(config_file.read_text().replace('"batch_size": 32', '"batch_size": 30'))
    assert restore_model(str(tmp_path), "latest")[2] == 20


def test_finished_runs_rerun_prints_the_done_line_of_the_run(tmp_path):
    """The `done:` line of a rerun (ann/main.py, from the metrics read back from
    run_status.json) lists the metrics as the run itself did: validation first, in the
    experiment's order, then test."""
    from ann.train import run_status

    metrics = {"val/loss": 0.1, "val/accuracy": 0.9, "eval/loss": 0.2, "eval/accuracy": 0.8}
    run_status.write(str(tmp_path), "finished", 600, eval_metrics=metrics)
    assert list(run_status.read(str(tmp_path))["eval_metrics"]) == list(metrics)
