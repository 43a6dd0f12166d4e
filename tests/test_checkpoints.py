"""Never save, export or resume a broken state: the NaN guard checks the state a checkpoint will
hold, damaged checkpoints are found and skipped, failed saves end the run with what to do."""

import asyncio
import errno
import json
import logging
import os
import pathlib
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from conftest import tiny
from flax import nnx

from ann.data import pipeline
from ann.train import checkpoint as checkpoint_lib
from ann.train import hooks, optimizers, run_status
from ann.train import state as state_lib
from ann.train.build import restore_model
from ann.train.checkpoint import CheckpointError, CheckpointSaveError
from ann.train.loop import NonFiniteLossError, train_and_evaluate
from ann.train.writers import MetricWriter, read_records


def saved_steps(workdir, kind="checkpoints"):
    return sorted(int(p.name) for p in (workdir / kind).iterdir() if p.name.isdigit())


def assert_finite_model(workdir, step):
    _, model, got, _ = restore_model(str(workdir), step)
    assert got == step
    for leaf in jax.tree.leaves(nnx.state(model)):
        if np.issubdtype(np.asarray(leaf).dtype, np.inexact):
            assert np.isfinite(np.asarray(leaf)).all(), f"checkpoint step {step} is not finite"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("leaf", ["w", "mu", "nu", "b", "half"])
def test_all_finite_finds_one_bad_value_in_any_leaf(leaf, bad):
    """The state's finiteness flag, jitted as in the train step: one NaN or infinity anywhere
    (in a leaf that shares its shape with others, or alone, in half precision too) makes it
    False; huge finite values and integer leaves do not."""
    tree = {
        "w": jnp.full((3, 4), 3e38, jnp.float32),  # finite, but their sum would overflow
        "mu": jnp.zeros((3, 4)),
        "nu": jnp.ones((3, 4)),
        "b": jnp.ones(5),
        "half": jnp.ones(7, jnp.bfloat16),
        "count": jnp.array(7, jnp.int32),
    }
    check = jax.jit(state_lib.all_finite)
    assert bool(check(tree))
    bad_tree = {**tree, leaf: tree[leaf].ravel().at[2].set(bad).reshape(tree[leaf].shape)}
    assert not bool(check(bad_tree))
    assert bool(check({"count": jnp.array(1)})) and bool(check({}))


def nan_updates_from(update: int) -> optax.GradientTransformation:
    """Appended to the optimizer: from its `update`-th update (0-based) on, every update is NaN,
    so the state that update produces (step update + 1) is the first non-finite one, while that
    step's loss (computed before the update) is still finite."""

    def init(params):
        return jnp.zeros([], jnp.int32)

    def apply(updates, count, params=None):
        return jax.tree.map(lambda u: jnp.where(count >= update, jnp.nan, u), updates), count + 1

    return optax.GradientTransformation(init, apply)


# Hooks (log, checkpoint) are due every 4 steps only, so the loop syncs with the host at steps
# 4, 8, ...: a NaN is found at the next sync, as in a real run, not at the step it appears.
@pytest.mark.parametrize(
    "update, bad_step",
    [
        (7, 8),  # the state goes bad on a sync step, while that step's loss is still finite
        (5, 6),  # the state goes bad mid-window; the loss shows it at step 7, seen at step 8
    ],
)
def test_a_nan_found_late_leaves_only_finite_checkpoints(tmp_path, monkeypatch, update, bad_step):
    make = optimizers.make
    monkeypatch.setattr(
        optimizers, "make", lambda *a, **k: optax.chain(make(*a, **k), nan_updates_from(update))
    )
    config = tiny(
        total_steps=40, log_every_steps=4, checkpoint_every_steps=4, eval_every_steps=1000
    )
    with pytest.raises(NonFiniteLossError) as e:
        train_and_evaluate(config, str(tmp_path))
    assert f"at step {bad_step}" in str(e.value) and "learning_rate" in str(e.value)
    assert f"init_from={tmp_path}:4 starts from it" in str(e.value)
    steps = saved_steps(tmp_path)
    assert steps == [4]
    for step in steps:
        assert_finite_model(tmp_path, step)
    status = run_status.read(str(tmp_path))
    assert status["status"] == "diverged" and status["step"] == bad_step
    assert status["message"] == str(e.value)


def test_a_non_finite_eval_is_never_best_and_never_counts_for_early_stopping(tmp_path):
    checkpoints = checkpoint_lib.Checkpoints(str(tmp_path), 3, "val/loss", "min")
    try:
        assert not checkpoints.save_if_best(1, None, None, {"val/loss": float("nan")})
        assert not checkpoints.save_if_best(2, None, None, {"val/loss": float("-inf")})
    finally:
        checkpoints.close()
    assert not (tmp_path / "checkpoints_best").exists() or not saved_steps(
        tmp_path, "checkpoints_best"
    )

    stopping = hooks.EarlyStopping("val/loss", "min", patience=2, min_delta=0.0)
    assert not stopping.update(1, 0.5)
    assert not stopping.update(2, float("nan"))  # neither a bad eval nor an improvement
    assert (stopping.best, stopping.best_step, stopping.bad_evals) == (0.5, 1, 0)
    assert not stopping.update(3, 0.6)
    assert stopping.update(4, 0.7)


class _Position:
    def get_state(self):
        return {"position": 0}


def test_a_stop_before_the_regular_save_of_a_best_step_keeps_the_best_a_rerun_resumes_with(
    tmp_path,
):
    """A best step (20) past the last regular one (10) deleted the best before it (10): a run
    stopped before the regular save of 20 resumed from 10 with no best, and its first eval
    (worse than 10's) became the best, unlike in a run that never stopped (trial 41b 18)."""
    state = {"w": jnp.ones(2)}
    checkpoints = checkpoint_lib.Checkpoints(str(tmp_path), 3, "val/loss", "min")
    try:
        assert checkpoints.save_if_best(10, state, _Position(), {"val/loss": 0.5})
        checkpoints.save(10, state, _Position())
        assert checkpoints.save_if_best(20, state, _Position(), {"val/loss": 0.3})
        checkpoints.wait()
    finally:
        checkpoints.close()  # stopped here: no regular save of step 20
    assert saved_steps(tmp_path, "checkpoints_best") == [10, 20]
    checkpoints = checkpoint_lib.Checkpoints(str(tmp_path), 3, "val/loss", "min")
    try:
        assert checkpoints.forget_best_after(10) == 20  # the rerun's start: step 10
        assert checkpoints.best_metrics() == {"step": 10, "val/loss": 0.5}
        assert not checkpoints.save_if_best(15, state, _Position(), {"val/loss": 0.6})
        assert checkpoints.save_if_best(20, state, _Position(), {"val/loss": 0.3})
        checkpoints.save(20, state, _Position())
        checkpoints.wait()
    finally:
        checkpoints.close()
    assert saved_steps(tmp_path, "checkpoints_best") == [20]  # 10 is kept by nothing now


def test_metrics_jsonl_keeps_non_finite_values_and_reads_them_back(tmp_path):
    writer = MetricWriter(str(tmp_path))
    writer.write(5, {"eval/loss": float("nan"), "eval/a": float("inf"), "eval/b": -np.inf})
    writer.write(6, {"eval/loss": 0.25})
    writer.close()
    raw = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert raw[0] == {"step": 5, "eval/loss": "nan", "eval/a": "inf", "eval/b": "-inf"}
    records = read_records(str(tmp_path / "metrics.jsonl"))
    assert np.isnan(records[0]["eval/loss"]) and records[0]["eval/b"] == -np.inf
    assert records[1] == {"step": 6, "eval/loss": 0.25}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 20-step run with checkpoints at 10 and 20 (a copy is made for each test)."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    train_and_evaluate(tiny(total_steps=20), str(workdir))
    return workdir


def copy_run(src, dst):
    shutil.copytree(src, dst)
    return dst


def largest_data_file(step_dir: pathlib.Path) -> pathlib.Path:
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.name != checkpoint_lib.MANIFEST]
    return max(files, key=lambda p: p.stat().st_size)


def truncate_largest(step_dir: pathlib.Path) -> pathlib.Path:
    """Damages a step: its largest data file loses its last 7 bytes; returns that file."""
    victim = largest_data_file(step_dir)
    victim.write_bytes(victim.read_bytes()[:-7])
    return victim


def test_every_committed_step_has_a_manifest_of_its_files(trained):
    for kind in ("checkpoints", "checkpoints_best"):
        for step in saved_steps(trained, kind):
            step_dir = trained / kind / str(step)
            manifest = json.loads((step_dir / checkpoint_lib.MANIFEST).read_text())["files"]
            assert manifest and set(manifest) == set(checkpoint_lib._files(str(step_dir)))
            assert checkpoint_lib.verify_files(str(step_dir)) is None


def test_a_resume_writes_the_manifest_a_best_or_resumed_step_lacks(tmp_path, trained, caplog):
    # A process killed between Orbax's commit and the manifest left the step without one: the
    # best checkpoint then stayed unverified after any number of resumes (export reads it).
    workdir = copy_run(trained, tmp_path / "run")
    best = workdir / "checkpoints_best" / str(saved_steps(workdir, "checkpoints_best")[-1])
    latest = workdir / "checkpoints" / "20"
    for step_dir in (best, latest):
        (step_dir / checkpoint_lib.MANIFEST).unlink()
    with caplog.at_level(logging.WARNING):
        train_and_evaluate(tiny(total_steps=20), str(workdir))  # finished: restores, trains none
    for step_dir in (best, latest):
        manifest = json.loads((step_dir / checkpoint_lib.MANIFEST).read_text())["files"]
        assert set(manifest) == set(checkpoint_lib._files(str(step_dir)))
        assert checkpoint_lib.verify_files(str(step_dir)) is None
        assert f"in {step_dir.parent} had no {checkpoint_lib.MANIFEST}" in caplog.text
    # Now verified: a changed byte of the best is found, where it was read unverified (and its
    # intact copy in checkpoints/ restored instead).
    victim = largest_data_file(best)
    victim.write_bytes(victim.read_bytes()[:-8])
    assert (workdir / "checkpoints" / best.name).is_dir()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        restore_model(str(workdir), "best")
    assert f"in {best.parent} is damaged (file " in caplog.text
    assert "truncated or cut" in caplog.text


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_checkpoint_falls_back_to_the_newest_intact_step(
    tmp_path, trained, caplog, damage
):
    workdir = copy_run(trained, tmp_path / "run")
    victim = largest_data_file(workdir / "checkpoints" / "20")
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        middle = len(data) // 2
        data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    else:
        data = data[: len(data) // 2]
    victim.write_bytes(bytes(data))
    shutil.rmtree(workdir / "checkpoints_best")  # no intact copy of step 20 (the best) either
    # What a save cut short leaves (a Ctrl-C during it): removed when the run is opened again.
    stale = workdir / "checkpoints" / "25.orbax-checkpoint-tmp-1764700000000000"
    (stale / "state").mkdir(parents=True)
    restore_model(str(workdir), 10)  # a reader leaves it alone
    assert stale.is_dir()

    with caplog.at_level(logging.WARNING):
        result = train_and_evaluate(tiny(total_steps=30), str(workdir))
    assert not stale.exists()
    assert result.step == 30
    said = caplog.text
    rel = str(victim.relative_to(workdir / "checkpoints" / "20"))
    assert "checkpoint step 20 is damaged" in said and rel in said
    assert "resumed from step 10" in said
    for wrong in ("learning_rate", "config", "delete"):
        assert wrong not in said.split("checkpoint step 20 is damaged")[1].split("\n")[0]
    assert (workdir / checkpoint_lib.DAMAGED_DIR / "20").is_dir()  # kept for inspection
    assert saved_steps(workdir)[-1] == 30


def test_a_damaged_newest_step_is_repaired_from_its_intact_best_copy(tmp_path, trained, caplog):
    # checkpoints/20 damaged, checkpoints_best/20 (saved from the same state) intact: the run
    # resumed from step 10, then deleted the intact best as past where it started.
    workdir = copy_run(trained, tmp_path / "run")
    assert saved_steps(workdir, "checkpoints_best") == [20]
    victim = truncate_largest(workdir / "checkpoints" / "20")
    with caplog.at_level(logging.WARNING):
        result = train_and_evaluate(tiny(total_steps=30), str(workdir))
    assert result.step == 30
    aside = workdir / checkpoint_lib.DAMAGED_DIR / "checkpoints-20"
    assert (
        f"checkpoint step 20 in {workdir}/checkpoints is damaged (file " in caplog.text
        and f"repaired from its intact copy in {workdir}/checkpoints_best (the damaged files "
        f"moved to {aside})"
        in caplog.text
    ), caplog.text
    assert "removed checkpoints_best step" not in caplog.text
    assert (aside / victim.relative_to(workdir / "checkpoints" / "20")).is_file()  # kept
    assert saved_steps(workdir) == [10, 20, 30]
    assert checkpoint_lib.verify_files(str(workdir / "checkpoints" / "20")) is None


def test_a_damaged_best_checkpoint_is_repaired_on_resume(tmp_path, trained, caplog):
    # A fresh-user trial: checkpoints_best/20 damaged, a rerun resumed without a word; once
    # max_to_keep dropped checkpoints/20, export and report failed for good.
    workdir = copy_run(trained, tmp_path / "run")
    truncate_largest(workdir / "checkpoints_best" / "20")
    with caplog.at_level(logging.WARNING):
        train_and_evaluate(tiny(total_steps=20), str(workdir))  # finished: restores only
    assert (
        f"checkpoint step 20 in {workdir}/checkpoints_best is damaged (file " in caplog.text
        and f"repaired from its intact copy in {workdir}/checkpoints (" in caplog.text
    ), caplog.text
    best = workdir / "checkpoints_best" / "20"
    assert checkpoint_lib.verify_files(str(best)) is None
    assert (best / "metrics").is_dir()  # its own metadata kept: still the best by its metric
    shutil.rmtree(workdir / "checkpoints" / "20")  # as max_to_keep drops it
    assert restore_model(str(workdir), "best")[2] == 20


def test_a_damaged_best_checkpoint_without_a_copy_is_set_aside_and_chosen_again(
    tmp_path, trained, caplog
):
    workdir = copy_run(trained, tmp_path / "run")
    # A best of step 10 (renamed: the same files), its copy in checkpoints/ gone, then damaged.
    os.rename(workdir / "checkpoints_best" / "20", workdir / "checkpoints_best" / "10")
    shutil.rmtree(workdir / "checkpoints" / "10")
    truncate_largest(workdir / "checkpoints_best" / "10")
    with caplog.at_level(logging.WARNING):
        result = train_and_evaluate(tiny(total_steps=30), str(workdir))
    assert result.step == 30
    aside = workdir / checkpoint_lib.DAMAGED_DIR / "checkpoints_best-10"
    assert (
        f"the best checkpoint, step 10 in {workdir}/checkpoints_best, is damaged (file "
        in caplog.text
        and f"has no intact copy; moved it to {aside}: the next eval chooses the best again"
        in caplog.text
    ), caplog.text
    assert aside.is_dir() and saved_steps(workdir, "checkpoints_best") == [30]


def test_a_step_damaged_outside_its_items_is_saved_again_from_its_best_copy(
    tmp_path, trained, caplog
):
    # checkpoints/20's own metadata damaged (nothing to replace it from): the resume passed
    # over it to step 10 and retrained, its intact copy in checkpoints_best/ beside it.
    workdir = copy_run(trained, tmp_path / "run")
    metadata = workdir / "checkpoints" / "20" / "_CHECKPOINT_METADATA"
    metadata.write_bytes(metadata.read_bytes().replace(b"{", b"x", 1))
    with caplog.at_level(logging.WARNING):
        result = train_and_evaluate(tiny(total_steps=20), str(workdir))  # finished: restores
    assert result.step == 20
    assert (
        f"saved checkpoint step 20 again in {workdir}/checkpoints from its intact copy in "
        f"{workdir}/checkpoints_best, resumed from it" in caplog.text
    ), caplog.text
    assert "removed checkpoints_best" not in caplog.text
    assert saved_steps(workdir) == [10, 20] and saved_steps(workdir, "checkpoints_best") == [20]
    assert checkpoint_lib.verify_files(str(workdir / "checkpoints" / "20")) is None


def test_a_best_past_damaged_steps_is_kept_aside_not_deleted(tmp_path, trained, caplog):
    # A best of step 15 (renamed: the same files; evals between checkpoints), checkpoints/20
    # damaged with no copy: the resume falls back to 10, and deleted the intact best 15 as
    # "an earlier attempt's".
    workdir = copy_run(trained, tmp_path / "run")
    os.rename(workdir / "checkpoints_best" / "20", workdir / "checkpoints_best" / "15")
    truncate_largest(workdir / "checkpoints" / "20")
    with caplog.at_level(logging.WARNING):
        result = train_and_evaluate(tiny(total_steps=30), str(workdir))
    assert result.step == 30
    aside = workdir / checkpoint_lib.DAMAGED_DIR / "checkpoints_best-15"
    assert (
        f"moved checkpoints_best step 15 to {aside}: past step 10, where this run resumes after "
        "passing over damaged steps (20)" in caplog.text
    ), caplog.text
    assert "an earlier attempt's" not in caplog.text
    assert checkpoint_lib.verify_files(str(aside)) is None  # the intact best, kept


def _damage_best_metrics(workdir):
    metrics = workdir / "checkpoints_best" / "20" / "metrics" / "metrics"
    data = bytearray(metrics.read_bytes())
    data[5] ^= 0xFF
    metrics.write_bytes(bytes(data))


def test_damaged_metrics_of_the_best_step_are_one_line_or_saved_again(tmp_path, trained, caplog):
    # Orbax reads each best step's metrics when it opens checkpoints_best/: a changed byte in
    # them crashed ann train, export and report with a UnicodeDecodeError traceback.
    workdir = copy_run(trained, tmp_path / "run")
    _damage_best_metrics(workdir)
    # A reader changes nothing, and reads no metrics to open the run: it refused every step
    # ("run the same ann train command once"), --step=latest and --step=10 too.
    assert restore_model(str(workdir), "latest")[2] == 20
    assert restore_model(str(workdir), 10)[2] == 10
    with caplog.at_level(logging.WARNING):
        assert restore_model(str(workdir), "best")[2] == 20
    assert (
        f"checkpoint step 20 in {workdir}/checkpoints_best is damaged (file metrics/metrics "
    ) in caplog.text and f"restored its copy in {workdir}/checkpoints" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        train_and_evaluate(tiny(total_steps=20), str(workdir))  # finished: restores only
    aside = workdir / checkpoint_lib.DAMAGED_DIR / "checkpoints_best-20"
    assert f"moved it to {aside}: saved again from the step a resume starts from" in caplog.text
    # A finished run evaluates no more: its best is saved again from the state resumed.
    assert "saved the best checkpoint, step 20, again in " in caplog.text, caplog.text
    assert "had no ann_manifest.json" not in caplog.text  # it was just written, not stopped
    assert checkpoint_lib.verify_files(str(workdir / "checkpoints_best" / "20")) is None
    assert restore_model(str(workdir), "best")[2] == 20


def test_a_lost_best_checkpoint_is_saved_again_from_the_step_resumed(tmp_path, trained, caplog):
    # checkpoints_best/ left empty (a Ctrl-C once deleted what a resume had set aside): the
    # finished run said "best checkpoint: step 20" and saved none; export then had no best.
    workdir = copy_run(trained, tmp_path / "run")
    shutil.rmtree(workdir / "checkpoints_best" / "20")
    with caplog.at_level(logging.WARNING):
        train_and_evaluate(tiny(total_steps=20), str(workdir))
    assert "saved the best checkpoint, step 20, again in " in caplog.text, caplog.text
    assert restore_model(str(workdir), "best")[2] == 20


def test_a_best_set_aside_and_not_saved_again_is_named_by_export(tmp_path, trained):
    workdir = copy_run(trained, tmp_path / "run")
    _damage_best_metrics(workdir)
    (workdir / "metrics.jsonl").unlink()  # no eval record to rank it by again
    train_and_evaluate(tiny(total_steps=20), str(workdir))
    aside = workdir / checkpoint_lib.DAMAGED_DIR / "checkpoints_best-20"
    # export and report said "no eval chose a best yet".
    with pytest.raises(CheckpointError) as e:
        restore_model(str(workdir), "best")
    assert str(e.value) == (
        f"no checkpoint in {workdir}/checkpoints_best: its best, step 20, was set aside as "
        f"damaged ({aside}); choose --step=20 (its copy in checkpoints/), --step=latest (step "
        "20) or one of 20, 10"
    )
    train_and_evaluate(tiny(total_steps=30), str(workdir))
    assert saved_steps(workdir, "checkpoints_best") == [30]  # the next eval chose again


def test_a_best_checkpoint_past_where_a_run_starts_is_not_taken_as_its_own(
    tmp_path, trained, caplog
):
    # An attempt stopped before its first regular checkpoint (or one whose checkpoints/ is
    # gone) leaves checkpoints_best/: the rerun, a fresh start with another config, reported
    # and exported that attempt's step as its best ("done: step 100 | best checkpoint: 150").
    workdir = copy_run(trained, tmp_path / "run")
    assert saved_steps(workdir, "checkpoints_best")[-1] > 5
    shutil.rmtree(workdir / "checkpoints")
    config = tiny(total_steps=5, eval_every_steps=5, checkpoint_every_steps=5)
    config.optimizer.learning_rate *= 0.1
    with caplog.at_level(logging.WARNING):
        result = train_and_evaluate(config, str(workdir))
    assert result.step == 5 and saved_steps(workdir, "checkpoints_best") == [5]
    assert run_status.read(str(workdir))["best_eval_metrics"]["step"] == 5
    assert "removed checkpoints_best step " in caplog.text and "past step 0" in caplog.text
    assert restore_model(str(workdir))[2] == 5  # what export and report restore
    # metrics.jsonl holds this run's records only (the earlier attempt's step-0 compile and
    # start-up records stayed beside the new ones).
    records = read_records(str(workdir / "metrics.jsonl"))
    assert sum("compile/train_step_flops" in r for r in records) == 1
    assert max(r["step"] for r in records) == 5


def test_a_damaged_step_is_an_error_naming_the_file_for_export(tmp_path, trained):
    workdir = copy_run(trained, tmp_path / "run")
    victim = truncate_largest(workdir / "checkpoints" / "20")
    shutil.rmtree(workdir / "checkpoints_best")  # no intact copy of step 20 to fall back on
    with pytest.raises(CheckpointError) as e:
        restore_model(str(workdir), "latest")
    message = str(e.value)
    assert "step 20" in message and victim.name in message and "truncated" in message
    # What to do (it ended "steps in .../checkpoints: 10", a fresh-user trial).
    assert message.endswith(f"; choose --step=N of the steps in {workdir}/checkpoints: 10")
    assert "delete" not in message and "learning_rate" not in message
    assert restore_model(str(workdir), 10)[2] == 10


def test_a_damaged_best_step_is_restored_from_its_intact_copy(tmp_path, trained, caplog):
    # checkpoints_best/N damaged, checkpoints/N intact: "ann report" said "checkpoints_best is
    # damaged (...); steps in checkpoints: <all but N>", hiding the good copy of the same state.
    workdir = copy_run(trained, tmp_path / "run")
    step = saved_steps(workdir, "checkpoints_best")[-1]
    assert step in saved_steps(workdir)
    truncate_largest(workdir / "checkpoints_best" / str(step))
    with caplog.at_level(logging.WARNING):
        assert restore_model(str(workdir), "best")[2] == step
    assert f"checkpoint step {step} in {workdir}/checkpoints_best is damaged" in caplog.text
    assert f"restored its copy in {workdir}/checkpoints" in caplog.text
    truncate_largest(workdir / "checkpoints" / str(step))  # both damaged: an error naming both
    with pytest.raises(CheckpointError, match=f"and so is its copy in {workdir}/checkpoints "):
        restore_model(str(workdir), "best")


def test_an_unreadable_manifest_leaves_the_step_unverified_not_damaged(tmp_path, trained, caplog):
    # Both copies' ann_manifest.json truncated: export and report refused step 20 ("file
    # ann_manifest.json itself is unreadable") and a resume moved the intact step aside and
    # retrained from 10. Now as a missing manifest: restored unverified, written again on resume.
    workdir = copy_run(trained, tmp_path / "run")
    copies = [workdir / d / "20" for d in CHECKPOINT_DIRS if (workdir / d / "20").is_dir()]
    for step_dir in copies:
        manifest = step_dir / checkpoint_lib.MANIFEST
        manifest.write_bytes(manifest.read_bytes()[:100])
        with pytest.raises(FileNotFoundError):  # as a missing one: unverifiable
            checkpoint_lib.verify_files(str(step_dir))
    with caplog.at_level(logging.WARNING):
        assert restore_model(str(workdir), "latest")[2] == 20
    assert (
        f"step 20 in {workdir / 'checkpoints'} cannot be verified: its ann_manifest.json cannot "
        "be read (truncated, or edited by hand); restoring it unverified"
    ) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert train_and_evaluate(tiny(total_steps=20), str(workdir)).step == 20
    assert not (workdir / checkpoint_lib.DAMAGED_DIR).exists()
    for step_dir in copies:
        assert checkpoint_lib.verify_files(str(step_dir)) is None  # written again
        assert f"in {step_dir.parent} had an unreadable ann_manifest.json" in caplog.text


def test_a_step_that_was_never_saved_is_not_called_damaged(trained):
    with pytest.raises(CheckpointError) as e:
        restore_model(str(trained), 999)
    message = str(e.value)
    assert "no checkpoint step 999" in message and "damaged" not in message
    assert "steps in" in message and "20" in message


def test_a_step_named_directory_orbax_never_wrote_is_set_aside(tmp_path, trained, caplog):
    # `mkdir checkpoints/9999` made the rerun "reached step 9999" (or, past it, a damaged
    # step); one in checkpoints_best/ was exported as the best.
    workdir = copy_run(trained, tmp_path / "run")
    for stray in ("checkpoints/9999", "checkpoints_best/1200"):
        (workdir / stray).mkdir()
        (workdir / stray / "notes.txt").write_text("mine")
    # A reader (export) passes over them: it said the stray "cannot be restored into this
    # config (KeyError: 'Item "state" was not found ...')".
    assert restore_model(str(workdir))[2] == saved_steps(trained, "checkpoints_best")[-1]
    assert restore_model(str(workdir), "latest")[2] == 20
    with pytest.raises(CheckpointError, match="no checkpoint step 9999 in "):
        restore_model(str(workdir), 9999)
    with caplog.at_level(logging.WARNING):
        result = train_and_evaluate(tiny(total_steps=30), str(workdir))
    assert result.step == 30 and saved_steps(workdir) == [10, 20, 30]
    aside = workdir / checkpoint_lib.DAMAGED_DIR
    assert (aside / "checkpoints-9999/notes.txt").read_text() == "mine"  # kept
    assert (aside / "checkpoints_best-1200/notes.txt").exists()
    assert f"{workdir / 'checkpoints/9999'} is not a checkpoint (Orbax wrote no " in caplog.text
    assert restore_model(str(workdir))[2] <= 30  # the best is a real one


def test_a_step_kept_only_as_the_best_checkpoint_is_restored_from_there(tmp_path, trained):
    # The run moved on (max_to_keep dropped the step from checkpoints/): `--step=N` said "no
    # checkpoint step N in ...; it is the best checkpoint: use --step=best".
    from ann import cli
    from ann import config as config_lib
    from ann.train import transfer

    workdir = copy_run(trained, tmp_path / "run")
    best = saved_steps(workdir, "checkpoints_best")[-1]
    shutil.rmtree(workdir / "checkpoints" / str(best))
    cli.check_trained_run(str(workdir), str(best))  # export's, report's and generate's check
    assert restore_model(str(workdir), best)[2] == best
    assert restore_model(str(workdir), str(best))[2] == best  # as a flag's text
    source = transfer.resolve(f"{workdir}:{best}")  # init_from=RUN:STEP
    assert source.step == best and "checkpoints_best" in source.directory
    with pytest.raises(CheckpointError, match="no checkpoint step 999 in ") as e:
        restore_model(str(workdir), 999)
    # A refused step's choices name the best step too (they listed checkpoints/ alone).
    also = f"; the best checkpoint: {best}"
    assert str(e.value).endswith(also)
    with pytest.raises(cli.FlagError) as e:
        cli.check_trained_run(str(workdir), "999")
    assert str(e.value).endswith(also)
    with pytest.raises(config_lib.ConfigError) as e:
        transfer.resolve(f"{workdir}:999")
    assert str(e.value).endswith(also)


def test_restoring_a_model_creates_nothing_in_the_run(tmp_path, trained):
    # export/generate read a run: no directory appears in it (here the missing best one).
    workdir = copy_run(trained, tmp_path / "run")
    shutil.rmtree(workdir / "checkpoints_best")
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    assert restore_model(str(workdir), "latest")[2] == 20
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before


def test_init_from_a_damaged_or_non_finite_step_is_refused(tmp_path, trained):
    """init_from reads another run's checkpoint as a resume reads its own: verified against
    the manifest, and finite."""
    from ann.config import ConfigError
    from ann.train import transfer

    workdir = copy_run(trained, tmp_path / "run")
    victim = largest_data_file(workdir / "checkpoints" / "20")
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="init_from.*is damaged.*does not match the sha256"):
        transfer.read(transfer.resolve(f"{workdir}:20"))
    assert transfer.read(transfer.resolve(f"{workdir}:10"))  # an intact step still loads

    class Position:
        def get_state(self):
            return {}

    nan_run = tmp_path / "nan_run"
    checkpoints = checkpoint_lib.Checkpoints(str(nan_run), 3, "val/loss", "min")
    try:
        state = {"params": {"w": jnp.array([1.0, jnp.nan])}, "model_state": {}}
        checkpoints.save(1, state, Position())
        checkpoints.wait()
    finally:
        checkpoints.close()
    (nan_run / "config.json").write_text("{}")
    assert checkpoint_lib.verify_files(str(nan_run / "checkpoints" / "1")) is None
    with pytest.raises(ConfigError, match="init_from.*non-finite values.*in w;"):
        transfer.read(transfer.resolve(f"{nan_run}:1"))


def test_an_io_error_on_restore_is_reported_as_io_and_changes_nothing(
    tmp_path, trained, monkeypatch
):
    workdir = copy_run(trained, tmp_path / "run")

    def unreadable(path):
        raise OSError(errno.EIO, "Input/output error", path)

    monkeypatch.setattr(checkpoint_lib, "_sha256", unreadable)
    with pytest.raises(CheckpointError, match="I/O error") as e:
        train_and_evaluate(tiny(total_steps=30), str(workdir))
    assert "delete" not in str(e.value) and "config" not in str(e.value)
    assert saved_steps(workdir) == [10, 20]
    assert not (workdir / checkpoint_lib.DAMAGED_DIR).exists()


def test_a_permission_refused_on_restore_says_how_to_read_it(tmp_path, trained, monkeypatch):
    # A step its user may not read said "failed with an I/O error ...; check the disk or
    # mount": no fix for a file's permissions.
    workdir = copy_run(trained, tmp_path / "run")

    def refused(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    monkeypatch.setattr(checkpoint_lib, "_sha256", refused)
    with pytest.raises(CheckpointError) as e:
        train_and_evaluate(tiny(total_steps=30), str(workdir))
    checkpoints = workdir / "checkpoints"
    assert str(e.value).startswith(
        f"reading checkpoint step 20 in {checkpoints} failed: permission"
    )
    assert str(e.value).endswith(
        f"nothing was changed: give your user read permission on it (chmod -R u+rX "
        f"{checkpoints}) or ask its owner to, then rerun"
    ), str(e.value)
    assert saved_steps(workdir) == [10, 20]


def test_a_failed_save_ends_the_run_with_what_to_do(tmp_path, monkeypatch):
    real_save = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
        if step == 20 and str(self.directory).endswith("checkpoints"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    with pytest.raises(CheckpointSaveError) as e:
        train_and_evaluate(tiny(total_steps=30), str(tmp_path))
    message = str(e.value)
    assert "\n" not in message
    assert "checkpoint step 20" in message and "No space left on device" in message
    assert "last complete checkpoint is step 10" in message and "rerun" in message
    status = run_status.read(str(tmp_path))
    assert status["status"] == "failed" and "step 20" in status["message"]
    assert saved_steps(tmp_path) == [10]


def test_a_checkpoint_directory_that_became_unwritable_is_found_before_orbax_saves(
    tmp_path, monkeypatch
):
    """Orbax failed to create the step in its threads (three tracebacks), and the process then
    waited 300 s for their signals before exiting. (Root ignores permission bits, as the tests
    run: the probe's answer is what a read-only checkpoints/ gives.)"""
    from ann import atomic

    real_probe, saves = atomic.why_not_creatable, []
    real_save = ocp.CheckpointManager.save

    def probe(path):
        if path.endswith("checkpoints") and saves:
            return "is not writable (permission denied)"
        return real_probe(path)

    def save(self, step, *args, **kwargs):
        if str(self.directory).endswith("checkpoints"):
            saves.append(step)
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(atomic, "why_not_creatable", probe)
    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    with pytest.raises(CheckpointSaveError) as e:
        train_and_evaluate(tiny(total_steps=30), str(tmp_path / "run"))
    assert str(e.value).startswith(
        f"saving checkpoint step 20 to {tmp_path / 'run/checkpoints'} failed (PermissionError: "
        f"{tmp_path / 'run/checkpoints'} is not writable (permission denied)); the last "
        "complete checkpoint is step 10"
    ), str(e.value)
    assert 20 not in saves  # Orbax was never asked


def test_a_save_that_fails_in_the_background_is_reported_with_its_step(tmp_path, monkeypatch):
    """An async save fails after save() returned: Orbax raises when it is next waited for (the
    next save, or the end of the run); the error must still name step 20, not the later one."""
    real_save, real_wait = ocp.CheckpointManager.save, ocp.CheckpointManager.wait_until_finished
    failing = {}

    def save(self, step, *args, **kwargs):
        saved = real_save(self, step, *args, **kwargs)
        if step == 20 and str(self.directory).endswith("checkpoints"):
            failing["dir"] = os.path.join(str(self.directory), "20")
        return saved

    def wait_until_finished(self):
        real_wait(self)
        if failing.get("dir", "").startswith(str(self.directory)):
            shutil.rmtree(failing.pop("dir"))  # what the failed background write left: nothing
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", wait_until_finished)
    with pytest.raises(CheckpointSaveError) as e:
        train_and_evaluate(tiny(total_steps=30), str(tmp_path))
    message = str(e.value)
    assert "checkpoint step 20" in message and "No space left on device" in message
    assert "last complete checkpoint is step 10" in message
    assert run_status.read(str(tmp_path))["status"] == "failed"


CHECKPOINT_DIRS = ("checkpoints", "checkpoints_best")


def test_a_full_disk_in_orbaxs_threads_ends_the_run_with_one_line(tmp_path, monkeypatch, caplog):
    """A full disk failed the saves of checkpoints/ and checkpoints_best/ in Orbax's threads,
    then run_status.json's write: ann train said TensorStore's paragraph ("ValueError:
    RESOURCE_EXHAUSTED: Error writing ... [os_error_code='28']"), logged the best save's
    failure and "could not record the run's end in run_status.json" as two more error lines.
    Now one line: the errno's words, the last complete checkpoint, free space or another
    --workdir; run_status.json's failure said in it."""
    real_save, real_wait = ocp.CheckpointManager.save, ocp.CheckpointManager.wait_until_finished
    real_write, failing = run_status.write, []
    tensorstore = (
        'RESOURCE_EXHAUSTED: Error writing "step/0" in OCDBT database at local file "...": '
        "Failed to write 527971 bytes to file 20: No space left on device [os_error_code='28']"
    )

    def save(self, step, *args, **kwargs):
        saved = real_save(self, step, *args, **kwargs)
        if step == 20:
            failing.append(os.path.join(str(self.directory), "20"))
        return saved

    def wait_until_finished(self):
        real_wait(self)
        for step_dir in [d for d in failing if d.startswith(str(self.directory) + os.sep)]:
            failing.remove(step_dir)
            shutil.rmtree(step_dir)  # what the failed background write left: nothing
            raise ValueError(tensorstore)

    def write(workdir, status, *args, **kwargs):
        if status == "failed":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(workdir, status, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", wait_until_finished)
    monkeypatch.setattr(run_status, "write", write)
    with caplog.at_level(logging.INFO), pytest.raises(CheckpointSaveError) as e:
        train_and_evaluate(tiny(total_steps=30, eval_every_steps=10), str(tmp_path))
    failed = str(e.value).split(" failed ")[0]  # whichever save is waited for first
    assert failed in [f"saving checkpoint step 20 to {tmp_path / d}" for d in CHECKPOINT_DIRS]
    assert str(e.value) == (
        f"{failed} failed (No space left on "
        f"device); the last complete checkpoint is step 10 in {tmp_path / 'checkpoints'}; free "
        "space on its file system, then rerun the same command to resume from it, or give "
        "another --workdir (which starts over); run_status.json could not record it either "
        "(No space left on device)"
    )
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert run_status.read(str(tmp_path))["status"] == "running"  # as it was: not half-written
    assert saved_steps(tmp_path) == [10]


def test_a_save_that_failed_mid_write_leaves_nothing_it_wrote(tmp_path, monkeypatch):
    """A full disk failed the saves of step 20 in both directories after Orbax had written most
    of them: their temporary directories (20.orbax-checkpoint-tmp, what a real full disk left)
    stayed, holding the space the error asks the user to free until the rerun removed them.
    Now the failed saves' files are gone before the error; the complete step 10 is kept."""
    from orbax.checkpoint._src.path import atomicity

    real_finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self):
        if self.get_final().name == "20":  # everything written but the commit
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return await real_finalize(self)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", finalize)
    with pytest.raises(CheckpointSaveError, match="No space left on device"):
        train_and_evaluate(tiny(total_steps=30), str(tmp_path))
    for kind in CHECKPOINT_DIRS:
        assert not [p.name for p in (tmp_path / kind).iterdir() if not p.name.isdigit()], kind
    assert saved_steps(tmp_path) == [10] and saved_steps(tmp_path, "checkpoints_best") == [10]
    assert checkpoint_lib.verify_files(str(tmp_path / "checkpoints" / "10")) is None


def test_a_save_refused_as_too_large_names_the_file_size_limit(tmp_path, monkeypatch):
    """Under `ulimit -f` TensorStore's write failed with EFBIG (os_error_code 27), which was
    not a storage errno: the run ended with TensorStore's 666-character paragraph and the fix
    "free disk space or fix the permissions". Now it names the limit to raise."""
    from orbax.checkpoint._src.path import atomicity

    from ann import atomic

    real_finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self):
        if self.get_final().name == "20":
            raise ValueError(
                'OUT_OF_RANGE: Error writing "opt_state.0.0.count/0" in OCDBT database at '
                "local file: File too large [os_error_code='27']"
            )
        return await real_finalize(self)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", finalize)
    monkeypatch.setattr(atomic, "file_size_limit", lambda: 300 * 1024)
    with pytest.raises(CheckpointSaveError) as e:
        train_and_evaluate(tiny(total_steps=30), str(tmp_path))
    assert str(e.value).endswith(
        "failed (File too large); the last complete checkpoint is step 10 in "
        f"{tmp_path / 'checkpoints'}; raise this process's file size limit (ulimit -f, now 300 "
        "KiB), then rerun the same command to resume from it"
    ), str(e.value)


def test_a_best_copy_of_a_step_whose_save_failed_is_removed_with_it(tmp_path, monkeypatch):
    """Only checkpoints/20 failed; its best copy, checkpoints_best/20, was committed and kept
    holding the space, though the rerun (from step 10) deletes it as past its start. Removed,
    it left checkpoints_best/ empty (Orbax had deleted the best step 10 when it saved 20), and
    the rerun's evals chose against no best (trial 41b 18): the best step 10 is kept now, until
    a regular checkpoint at or past the newer best is committed."""
    from orbax.checkpoint._src.path import atomicity

    real_finalize, best = atomicity.AtomicRenameTemporaryPath.finalize, []

    async def finalize(self):
        final = self.get_final()
        if final.name == "20" and final.parent.name == "checkpoints":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if final.parent.name == "checkpoints_best":
            best.append(int(final.name))
        return await real_finalize(self)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", finalize)
    with pytest.raises(CheckpointSaveError, match="No space left on device"):
        train_and_evaluate(tiny(total_steps=30), str(tmp_path))
    assert 20 in best  # committed, then removed
    assert saved_steps(tmp_path) == [10]
    assert saved_steps(tmp_path, "checkpoints_best") == [10]
    assert checkpoint_lib.verify_files(str(tmp_path / "checkpoints_best" / "10")) is None


def test_orbaxs_own_words_for_a_failed_save_are_dropped_where_ann_says_it(monkeypatch):
    """Orbax's threads each logged their traceback of the failed save (about 80 lines apiece),
    and TensorStore's late callbacks raised "Event loop is closed" where nothing could catch it
    (27 tracebacks of two frames): ann train's one line says which save failed and why."""
    import sys

    from ann import cli

    for message in (
        "[process=0][thread=array_type_handler][operation_id=2] _SignalingThread.run() raised "
        "an exception: RESOURCE_EXHAUSTED: ...",
        "[process=0] Failed to run 4 Handler Commit operations or the Commit callback in "
        "background save thread, directory: /w/checkpoints/200",
        "[process=0][thread=MainThread][step=200][wait_until_finished] Save Finalize thread "
        "(save_finalize) failed.",
    ):
        record = logging.LogRecord("absl", logging.ERROR, "x.py", 1, message, None, None)
        assert not cli._said_here(record), message
    kept = logging.LogRecord("absl", logging.ERROR, "x.py", 1, "something else failed", None, None)
    assert cli._said_here(kept)
    # asyncio's, for TensorStore's writes of the failed save (one traceback each, 2 of 3 runs
    # on a full 2.3 MB file system)
    never = "_GatheringFuture exception was never retrieved\nfuture: <_GatheringFuture finished "
    tmp = "/w/checkpoints/300.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/"
    for message, dropped in ((f"{never}exception=ValueError('... {tmp} ...')>", True),
                             (f"{never}exception=ValueError('elsewhere')>", False)):  # fmt: skip
        record = logging.LogRecord("asyncio", logging.ERROR, "b.py", 1, message, None, None)
        assert cli._said_here(record) is not dropped

    said = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: said.append(str(u.exc_value)))
    cli._drop_unraisables_said_here()

    class Unraisable:
        def __init__(self, error):
            self.exc_type, self.exc_value = type(error), error

    sys.unraisablehook(Unraisable(RuntimeError("Event loop is closed")))
    sys.unraisablehook(Unraisable(RuntimeError("another")))
    assert said == ["another"]


def test_run_status_follows_the_checkpoints_while_the_run_goes(tmp_path):
    # It said step 0 (the start's) for the whole run: a killed run's record said "step 0"
    # beside checkpoint 200.
    seen = {}

    class Look(hooks.Hook):
        def __call__(self, info):
            seen[info.step] = run_status.read(str(tmp_path))

    config = tiny(total_steps=20, checkpoint_every_steps=10, async_checkpointing=False)
    train_and_evaluate(config, str(tmp_path), extra_hooks=[Look(5)])
    assert {k: (v["status"], v["step"]) for k, v in seen.items()} == {
        5: ("running", 0), 10: ("running", 10), 15: ("running", 10), 20: ("running", 20)
    }  # fmt: skip
    assert seen[15]["total_steps"] == 20 and seen[15]["pid"] == os.getpid()
    assert run_status.read(str(tmp_path))["status"] == "done"


def test_a_committed_step_gets_its_manifest_before_the_next_save(tmp_path):
    # The manifest of step 10 waited for the save of step 20: a run killed in between left its
    # newest step to be restored unverified.
    import time

    found = {}

    class Look(hooks.Hook):
        def due(self, step, total_steps):
            return step in (15, 18)

        def __call__(self, info):
            manifest = tmp_path / "checkpoints" / "10" / checkpoint_lib.MANIFEST
            deadline = time.monotonic() + 20
            while info.step == 18 and not manifest.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            while info.step == 15 and not (tmp_path / "checkpoints" / "10").is_dir():
                time.sleep(0.05)  # Orbax's commit of step 10 (async): the sync at 18 seals it
            found[info.step] = manifest.exists()

    config = tiny(total_steps=30, checkpoint_every_steps=10, async_checkpointing=True)
    train_and_evaluate(config, str(tmp_path), extra_hooks=[Look(1)])
    assert found[18], found


def test_a_running_status_left_by_a_killed_process_is_not_trusted(tmp_path):
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run_status.write(str(tmp_path), "running", 7)
    record = run_status.read(str(tmp_path))
    assert record["pid"] == os.getpid() and record["host"]
    record["pid"] = gone.pid
    (tmp_path / run_status.FILENAME).write_text(json.dumps(record))
    record = run_status.read(str(tmp_path))
    said = run_status.stale_running(record)
    assert "killed or crashed" in said and f"pid {gone.pid}" in said and "step 7" in said
    assert run_status.live_owner(record) is None

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record["pid"] = alive.pid
        assert run_status.live_owner(record) == alive.pid
        assert run_status.stale_running(record) == ""
    finally:
        alive.kill()
        alive.wait()


def _killed_at(workdir, step: int) -> None:
    """`workdir`'s run_status.json as a run killed (-9) at `step` leaves it: `running`, by a
    process no longer there."""
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    record = {**json.loads((workdir / run_status.FILENAME).read_text()), "pid": gone.pid}
    record.update(status="running", step=step)
    (workdir / run_status.FILENAME).write_text(json.dumps(record))


def test_a_killed_run_with_no_checkpoint_is_said_to_start_fresh(tmp_path, trained, caplog):
    # Killed (-9) before its first regular checkpoint, a best saved: the resume said "not
    # trusted; resuming from the last checkpoint (step none: starting over)", and "removed
    # checkpoints_best step 20: an earlier attempt's" came before the line saying why.
    workdir = copy_run(trained, tmp_path / "run")
    shutil.rmtree(workdir / "checkpoints")
    _killed_at(workdir, 0)
    with caplog.at_level(logging.WARNING):
        train_and_evaluate(tiny(total_steps=20), str(workdir))
    said = caplog.text
    stale = "killed or crashed without recording how it ended; not trusted; there is no "
    assert f"{stale}checkpoint to resume from: this run starts fresh" in said, said
    assert "resuming from the last checkpoint" not in said
    assert said.index("killed or crashed") < said.index("removed checkpoints_best step 20: an")


def test_a_killed_runs_resume_says_why_before_it_says_where(tmp_path, trained, caplog):
    # "resumed from ... at step 20" came before the warning that the earlier process was
    # killed: the order read backwards (trial 46c).
    workdir = copy_run(trained, tmp_path / "run")
    _killed_at(workdir, 20)
    with caplog.at_level(logging.INFO):
        train_and_evaluate(tiny(total_steps=30), str(workdir))
    said = caplog.text
    assert said.index("killed or crashed") < said.index("resumed from "), said


def test_a_restored_runs_config_refusal_is_no_config_file_lines(tmp_path, trained):
    # Its refusal, raised while a command given --config=FILE restores the run, was a
    # KeyValueError that `config_file.key_error` pinned on FILE's line of the same key.
    from ann import config as config_lib
    from ann.config_file import key_error
    from ann.train.build import restore_model

    workdir = copy_run(trained, tmp_path / "run")
    saved = json.loads((workdir / "config.json").read_text())
    saved["optimizer"]["learning_rate"] = -1.0
    (workdir / "config.json").write_text(json.dumps(saved))
    mine = tmp_path / "mine.py"
    mine.write_text("def get_config():\n    c = base()\n    c.optimizer.learning_rate = 0.1\n")
    with pytest.raises(config_lib.ConfigError) as e:
        restore_model(str(workdir), "best")
    assert "'optimizer.learning_rate' must be > 0, got -1.0" in str(e.value)
    assert key_error(e.value, str(mine), ()) is e.value  # said as it is, no line of mine


def test_a_step_that_does_not_fit_the_config_names_the_runs_config_json(tmp_path, trained):
    workdir = copy_run(trained, tmp_path / "run")
    (workdir / "config.json").unlink()  # (with it, the config compare refuses the change first)
    with pytest.raises(CheckpointError, match="does not fit this config") as e:
        train_and_evaluate(tiny(total_steps=30, **{"model.features": (64,)}), str(workdir))
    assert f"({workdir / 'config.json'})" in str(e.value)
    # The first array that differs, not Orbax's API advice ("set `strict=False` in ...").
    assert "(head/kernel: (256, 10) in the checkpoint, (64, 10) by the config)" in str(e.value)
    assert "strict" not in str(e.value)
    assert saved_steps(workdir) == [10, 20]


def test_a_torn_config_json_is_named_with_its_line_not_a_traceback(tmp_path, trained):
    # json.decoder.JSONDecodeError: Expecting value: line 2 column 1, in 20 lines of traceback.
    from ann.config import ConfigError

    workdir = copy_run(trained, tmp_path / "run")
    (workdir / "config.json").write_text('{"model": \n')
    said = f"{workdir / 'config.json'} is not valid JSON (line 2 column 1: Expecting value); "
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(tiny(total_steps=30), str(workdir))
    assert str(e.value).startswith(said) and "a new --workdir" in str(e.value)
    with pytest.raises(ConfigError, match="is not valid JSON"):
        restore_model(str(workdir))  # export and report read it the same way
    assert saved_steps(workdir) == [10, 20]


def test_a_damaged_metrics_file_is_refused_before_a_config_change_is_kept(tmp_path, trained):
    # The run failed on metrics.jsonl after appending its total_steps change to
    # config_changes.jsonl: a change of a run that never ran.
    from ann.train.writers import MetricsFileError

    workdir = copy_run(trained, tmp_path / "run")
    lines = (workdir / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[1] = "{torn\n"
    (workdir / "metrics.jsonl").write_text("".join(lines))
    with pytest.raises(MetricsFileError, match="line 2 is not a metrics record"):
        train_and_evaluate(tiny(total_steps=30), str(workdir))
    assert not (workdir / "config_changes.jsonl").exists()
    assert saved_steps(workdir) == [10, 20]


def test_a_data_position_the_split_lacks_names_the_runs_config_json(tmp_path, trained, monkeypatch):
    workdir = copy_run(trained, tmp_path / "run")

    def outside(self, state):
        raise ValueError(f"data position {state} is outside split digits/train")

    monkeypatch.setattr(pipeline.TrainBatches, "set_state", outside)
    with pytest.raises(CheckpointError, match="holds a data position") as e:
        train_and_evaluate(tiny(total_steps=30), str(workdir))
    assert f"({workdir / 'config.json'})" in str(e.value)
    assert saved_steps(workdir) == [10, 20]


def test_restoring_a_run_that_has_saved_nothing_yet_says_it_is_still_training(tmp_path):
    # `ann report` of a run still starting said "train first", as for a run never trained.
    import socket
    import subprocess
    import sys

    from ann.train import run_status

    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"status": "running", "step": 0, "pid": writer.pid, "host": socket.gethostname()}
        (tmp_path / run_status.FILENAME).write_text(json.dumps(record))
        checkpoints = checkpoint_lib.Checkpoints(str(tmp_path), 3, "val/loss", "min")
        with pytest.raises(checkpoint_lib.CheckpointError) as e:
            checkpoints.restore_state(None, "best")
        assert (
            f"yet: the run is still training (pid {writer.pid}) and has saved none; try "
            "again after its first eval" in str(e.value)
        )
        checkpoints.close()
    finally:
        writer.kill()
        writer.wait()


def test_tensorboard_points_reach_the_disk_within_seconds_not_at_close(tmp_path):
    # A run killed (SIGKILL, a preempted machine) lost up to 120 s of TensorBoard's points,
    # tensorboardX's default flush interval, though metrics.jsonl had them.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ann.train.writers import TENSORBOARD_FLUSH_SECONDS

    writer = MetricWriter(str(tmp_path))
    writer.write(10, {"train/loss": 1.5})
    time.sleep(TENSORBOARD_FLUSH_SECONDS + 1)
    events = EventAccumulator(str(tmp_path / "tensorboard"))  # read before any close
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(10, 1.5)]
    writer.close()


def test_tensorboard_shows_one_run_after_a_resume_and_a_fresh_start(tmp_path):
    # TensorBoard showed an earlier attempt's points beside the run's own (a doubled stretch
    # after a resume; a fresh start's curve over the abandoned one's).
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def write(resume_step, values):
        writer = MetricWriter(str(tmp_path), resume_step=resume_step)
        for step, value in values.items():
            writer.write(step, {"train/loss": value})
        writer.close()

    def shown():
        events = EventAccumulator(str(tmp_path / "tensorboard"))
        events.Reload()
        return {e.step: e.value for e in events.Scalars("train/loss")}

    write(None, {0: 1.0, 100: 2.0, 200: 3.0, 300: 4.0})  # saved at 100, then stopped at 300
    write(100, {200: 5.0})  # resumed from the checkpoint at 100
    assert shown() == {0: 1.0, 100: 2.0, 200: 5.0}
    write(None, {0: 6.0})  # a fresh start in the same workdir
    assert shown() == {0: 6.0}


def test_the_multi_process_finite_check_of_a_restored_state_is_one_program(monkeypatch):
    """Several processes check a restored state on the devices: in one compiled program, not
    one per eager operation (it was 34 executables for the digits CNN, each compiled at the
    first resume of a config: 1.4 s of its start-up)."""
    from ann.train import checkpoint

    host = {f"w{i}": np.ones((3, i + 1), np.float32) for i in range(4)}
    host |= {"b": np.ones(5, np.float32), "mu": np.zeros((3, 1), np.float32)}
    bad = {**host, "b": np.array([1, np.nan, 1, 1, 1], np.float32)}
    tree, bad = jax.device_put(host), jax.device_put(bad)
    compiles = []

    def listener(event, *_, **__):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    jax.clear_caches()
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        assert checkpoint._finite(tree) and not checkpoint._finite(bad)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert len(compiles) == 1  # the same shapes: the same program


def test_a_run_that_diverged_before_saving_says_so_not_train_it_first(tmp_path):
    # `ann report` on such a run said "the run saved none; train it first", where training
    # again in that workdir diverges the same way (its own error says to use a new one).
    from ann.train import run_status

    run_status.write(str(tmp_path), "diverged", 3, total_steps=100)
    checkpoints = checkpoint_lib.Checkpoints(str(tmp_path), 3, "val/loss", "min")
    with pytest.raises(checkpoint_lib.CheckpointError) as e:
        checkpoints.restore_state(None, "best")
    checkpoints.close()
    assert str(e.value) == (
        f"no checkpoint in {tmp_path}/checkpoints_best: the run diverged at step 3 before its "
        "first save; train again in a new --workdir (a lower learning rate, see its "
        "run_status.json)"
    )


def test_a_damaged_run_status_is_said_at_the_next_start(tmp_path, caplog):
    # It was taken for no record without a word: an early-stopped run trained on.
    config = tiny(total_steps=10, checkpoint_every_steps=10, eval_every_steps=10)
    train_and_evaluate(config, str(tmp_path))
    (tmp_path / run_status.FILENAME).write_text('{"status": "early_st')  # cut short
    with caplog.at_level("WARNING"):
        train_and_evaluate(config, str(tmp_path))
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(
        m.startswith(f"{tmp_path / run_status.FILENAME} is not JSON (damaged, or edited by hand): "
                     "how the previous run ended is unknown") and m.endswith("(step 10)")
        for m in said
    ), said  # fmt: skip


def test_open_waits_for_the_cleanup_of_stale_saves_it_begins(tmp_path, monkeypatch):
    # Orbax removes a cut-short save's temporary directories in a thread it starts at open, and
    # waits for it only at the first save: a start stopped before one (a SIGTERM) removed its
    # workdir under that thread, whose FileNotFoundError traceback then followed ann train's
    # one line (tests/test_interrupt.py, about 1 CI run in 3).
    from orbax.checkpoint._src.path import temporary_paths

    cleanup, finished = temporary_paths.cleanup_temporary_paths, []

    async def slow_cleanup(directory, **kwargs):
        await asyncio.sleep(0.5)
        await cleanup(directory, **kwargs)
        finished.append(str(directory))

    monkeypatch.setattr(temporary_paths, "cleanup_temporary_paths", slow_cleanup)
    checkpoints = checkpoint_lib.Checkpoints(str(tmp_path), 3, "val/loss", "min")
    assert sorted(finished) == [str(tmp_path / "checkpoints"), str(tmp_path / "checkpoints_best")]
    checkpoints.close()


def test_a_start_stopped_after_setting_damaged_steps_aside_keeps_them(tmp_path):
    # A Ctrl-C or SIGTERM while starting removes what the start added: it deleted
    # checkpoints_damaged/ too, with the intact best a resume had just moved there.
    from ann.train import workdir as workdir_lib

    (tmp_path / "checkpoints" / "400").mkdir(parents=True)
    before = workdir_lib.entries(str(tmp_path))
    (tmp_path / checkpoint_lib.DAMAGED_DIR / "checkpoints_best-600").mkdir(parents=True)
    (tmp_path / "parameters.tsv").write_text("")
    workdir_lib.remove_added(str(tmp_path), before)
    assert sorted(os.listdir(tmp_path)) == ["checkpoints", checkpoint_lib.DAMAGED_DIR]
    assert (tmp_path / checkpoint_lib.DAMAGED_DIR / "checkpoints_best-600").is_dir()


def test_orbaxs_own_line_for_damaged_metadata_is_not_shown_beside_anns(tmp_path, trained):
    # "E1205 ... checkpoint.py:209] Failed to read Metadata file: ... can't decode byte" came
    # before ann's own warning, which names the file and what was done.
    import subprocess
    import sys

    workdir = copy_run(trained, tmp_path / "run")
    metadata = workdir / "checkpoints" / "20" / "_CHECKPOINT_METADATA"
    data = bytearray(metadata.read_bytes())
    data[10] ^= 0xFF
    metadata.write_bytes(bytes(data))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-m", "ann", "export", f"--workdir={workdir}", "--step=20",
         f"--out={tmp_path / 'export'}"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "restored its copy in" in proc.stderr, proc.stderr[-2000:]
    assert "Metadata file" not in proc.stderr, proc.stderr[-2000:]
