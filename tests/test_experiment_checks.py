"""A researcher's own experiment (README "Add your own experiment"): what ann accepts of it, and
the one line it gives, before step 0, for what it cannot train or export."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import importable, tiny

from ann import experiment as experiment_lib
from ann.config import ConfigError
from ann.train import loop
from ann.train.checkpoint import CheckpointSaveError
from ann.train.loop import NonFiniteLossError, train_and_evaluate

Classification = experiment_lib.get("classification")


class _LooseNumbers(Classification):
    def fields(self, rows):  # a host-side transform: not in the export, and float64
        batch = super().fields(rows)
        return {**batch, "inputs": batch["inputs"].astype(np.float64) / 16.0}

    def eval_metrics(self, sums, rows=None):
        metrics = super().eval_metrics(sums, rows)
        # np.float32 (`sums["loss"] / n`), a JAX scalar, and a metric undefined on the split.
        # The np.float32 failed the best checkpoint's JSON record, worded as a full disk.
        return {
            **{k: np.float32(v) for k, v in metrics.items()},
            "halves": jnp.float32(0.5),
            "undefined": float("nan"),
        }


def test_numpy_metrics_train_and_a_nan_metric_and_a_float64_field_are_said_once(
    tmp_path, monkeypatch, caplog
):
    config = tiny(experiment=importable(monkeypatch, _LooseNumbers))
    with caplog.at_level("WARNING"):
        train_and_evaluate(config, str(tmp_path / "run"))
    status = json.loads((tmp_path / "run" / "run_status.json").read_text())
    assert status["status"] == "done", status
    best = os.listdir(tmp_path / "run" / "checkpoints_best")
    assert len(best) == 1 and best[0].isdigit(), best  # committed, its metrics recorded
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    nan = [m for m in said if "eval_metrics gives" in m]
    assert nan == [
        "experiment _LooseNumbers's eval_metrics gives val/undefined = nan (said once per "
        "metric): undefined on that split, or a fault in its eval_sums or eval_metrics"
    ], said  # two evals, three splits: one warning
    wide = [m for m in said if "float64" in m]
    assert len(wide) == 1 and wide[0].startswith(
        "experiment _LooseNumbers's fields returns 'inputs' as float64; the device computes in "
        "float32, and what fields computes on the host is not in the export"
    ), said


def test_a_save_that_fails_not_for_the_storage_says_so_and_leaves_nothing(tmp_path, monkeypatch):
    # As before metrics were made floats: Orbax's JSON of the best checkpoint's metrics fails.
    monkeypatch.setattr(loop, "_as_numbers", lambda experiment, metrics: metrics, raising=False)
    monkeypatch.setattr(_LooseNumbers, "fields", Classification.fields)
    config = tiny(experiment=importable(monkeypatch, _LooseNumbers))
    with pytest.raises(CheckpointSaveError) as e:
        train_and_evaluate(config, str(tmp_path / "run"))
    said = str(e.value)
    assert "(TypeError: Object of type float32 is not JSON serializable)" in said, said
    assert "this is no storage fault (nothing about the disk or its permissions)" in said, said
    assert "free disk space" not in said and "fix the permissions" not in said, said
    left = [d for _, dirs, _ in os.walk(tmp_path / "run") for d in dirs if "orbax" in d]
    assert left == [], left


class _RaggedFields(Classification):
    def fields(self, rows):  # a JAX traceback at the first eval: int32[32] called with [31]
        batch = super().fields(rows)
        return {**batch, "targets": batch["targets"][:-1]}


class _ObjectFields(Classification):
    def fields(self, rows):  # optax's "got object instead", inside the loss
        batch = super().fields(rows)
        return {**batch, "targets": np.array([str(t) for t in batch["targets"]], dtype=object)}


class _PredictRenamed(Classification):
    def predict(self, model, inputs):  # found only at export, where it blamed the model
        out = super().predict(model, inputs)
        return {"probs": out["probabilities"], "label": out["label"]}


class _PredictWide(Classification):
    def predict(self, model, inputs):  # [batch, 10, 2]: not the signature's [10] per row
        out = super().predict(model, inputs)
        return {**out, "probabilities": jnp.stack([out["probabilities"]] * 2, -1)}


class _PredictExtra(Classification):
    def predict(self, model, inputs):  # trained, then export's KeyError: 'p_all'
        out = super().predict(model, inputs)
        return {**out, "p_all": out["probabilities"]}


@pytest.mark.parametrize(
    "cls, message",
    [
        (_RaggedFields, "experiment _RaggedFields's fields returns 'targets' with 31 rows for "
         "32 rows; every field must have one entry per row, the batch axis first"),
        (_ObjectFields, "experiment _ObjectFields's fields returns 'targets' of dtype object; "
         "return numeric NumPy arrays (map strings or objects to numbers in fields)"),
        (_PredictRenamed, "experiment _PredictRenamed's predict returns label, probs, its "
         "output_signature declares probabilities, label; make them agree"),
        (_PredictExtra, "experiment _PredictExtra's predict returns label, p_all, "
         "probabilities, its output_signature declares probabilities, label; make them agree"),
        (_PredictWide, "experiment _PredictWide's predict returns 'probabilities' as [10, 2] "
         "float32 per row, where its output_signature declares [10] float32; make them agree "
         "(what predict makes of the output of model 'mlp', or the signature)"),
    ],
)  # fmt: skip
def test_fields_and_predict_that_cannot_train_or_export_are_one_line_before_step_0(
    tmp_path, monkeypatch, cls, message
):
    config = tiny(experiment=importable(monkeypatch, cls))
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(config, str(tmp_path / "run"))
    assert str(e.value) == message
    assert not (tmp_path / "run").exists()


class _NanFromTheStart(Classification):
    def loss(self, model, batch, rng):  # a model whose output is NaN before any update
        loss, metrics = super().loss(model, batch, rng)
        return loss * jnp.nan, {**metrics, "loss": loss * jnp.nan}


def test_a_loss_that_is_nan_before_any_update_is_not_blamed_on_the_learning_rate(
    tmp_path, monkeypatch
):
    config = tiny(experiment=importable(monkeypatch, _NanFromTheStart))
    with pytest.raises(NonFiniteLossError) as e:
        train_and_evaluate(config, str(tmp_path / "run"))
    said = str(e.value)
    assert said.startswith("training stopped: ") and "nan at step 1, the run's first," in said
    assert "before any update was applied (from the initial parameters)" in said, said
    assert "not the learning rate but the model's output or the inputs" in said, said
    assert "lower optimizer.learning_rate" not in said, said


def test_a_failed_save_whose_writes_land_after_the_failure_leaves_nothing(tmp_path):
    # Orbax reports a save's first failure (the metrics' JSON) while the state's TensorStore
    # writes are still in flight: they recreated what one rmtree removed, and
    # checkpoints_best/20.orbax-checkpoint-tmp/ was left behind.
    import threading
    import time

    from ann.train import checkpoint as checkpoint_lib

    checkpoints = checkpoint_lib.Checkpoints(str(tmp_path), 3, "val/loss", "min")
    partial = tmp_path / "checkpoints_best" / "20.orbax-checkpoint-tmp"
    (partial / "state.orbax-checkpoint-tmp").mkdir(parents=True)
    checkpoints._failed = True
    checkpoints._failed_saves.append((checkpoints.best, 20))

    def late_write():
        time.sleep(0.05)
        (partial / "state.orbax-checkpoint-tmp" / "d").mkdir(parents=True, exist_ok=True)

    writer = threading.Thread(target=late_write)
    writer.start()
    checkpoints.close()
    writer.join()
    assert os.listdir(tmp_path / "checkpoints_best") == []


class _LateFields(Classification):
    """fields that change after the checks before step 0 saw them (a filter of unlabelled
    rows, a cast in one branch): JAX's "compiled with int32[32] and called with int32[31]"
    traceback, in the train step or at an eval."""

    calls, change = 0, "rows"

    def fields(self, rows):
        batch = super().fields(rows)
        type(self).calls += 1
        if type(self).calls <= 12:  # the checks before step 0 and the first batches
            return batch
        if self.change == "rows":
            return {**batch, "targets": batch["targets"][:-1]}
        return {**batch, "targets": batch["targets"].astype(np.int64)}


@pytest.mark.parametrize(
    "change, message",
    [
        ("rows", "experiment {}'s fields returns 'targets' with 31 rows for 32 rows; every "
         "field must have one entry per row, the batch axis first"),
        ("dtype", "experiment {}'s fields returns 'targets' as int64[] per row in a later "
         "batch, where its first gave int32[] per row; every batch must give each field with "
         "the same dtype and shape"),
    ],
)  # fmt: skip
def test_fields_that_change_in_a_later_batch_are_one_line(tmp_path, monkeypatch, change, message):
    cls = type(f"_Late{change.title()}", (_LateFields,), {"calls": 0, "change": change})
    config = tiny(experiment=importable(monkeypatch, cls), total_steps=30)
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(config, str(tmp_path / "run"))
    assert str(e.value) == message.format(cls.__name__)


class _RaggedRows(Classification):
    def eval_rows(self, model, batch):  # NumPy's IndexError in the loop's padding drop
        rows = super().eval_rows(model, batch)
        return {**rows, "probabilities": rows["probabilities"][:-1]}


def test_eval_rows_of_another_row_count_is_one_line(tmp_path, monkeypatch):
    config = tiny(experiment=importable(monkeypatch, _RaggedRows))
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(config, str(tmp_path / "run"))
    assert str(e.value) == (
        "experiment _RaggedRows's eval_rows returns 'probabilities' with 31 rows for 32 rows; "
        "return one entry per row of the batch, the batch axis first"
    )


class _LaterExtra(Classification):
    extra = False

    def predict(self, model, inputs):  # an output added after the run trained
        out = super().predict(model, inputs)
        return {**out, "p_all": out["probabilities"]} if self.extra else out

    def report_sections(self, preds):  # a user's experiment is reported by its own sections
        return []


def test_a_report_of_a_predict_changed_since_training_is_refused_as_export_refuses_it(
    tmp_path, monkeypatch
):
    # `ann report --workdir` reported a predict with an undeclared output that export refuses.
    from ann.report import collect

    config = tiny(experiment=importable(monkeypatch, _LaterExtra))
    train_and_evaluate(config, str(tmp_path / "run"))
    monkeypatch.setattr(_LaterExtra, "extra", True)
    with pytest.raises(ConfigError) as e:
        collect.from_workdir(str(tmp_path / "run"))
    assert str(e.value) == (
        "experiment _LaterExtra's predict returns label, p_all, probabilities, its "
        "output_signature declares probabilities, label; make them agree"
    )
