"""A researcher's own experiment (README "Add your own experiment"): what ann accepts of it, and
the one line it gives, before step 0, for what it cannot train or export."""

import numpy as np
import pytest
from conftest import importable, tiny

from ann import experiment as experiment_lib
from ann.config import ConfigError
from ann.train.loop import train_and_evaluate

Classification = experiment_lib.get("classification")


class _RaggedFields(Classification):
    def fields(self, rows):  # a JAX traceback at the first eval: int32[32] called with [31]
        batch = super().fields(rows)
        return {**batch, "targets": batch["targets"][:-1]}


class _ObjectFields(Classification):
    def fields(self, rows):  # optax's "got object instead", inside the loss
        batch = super().fields(rows)
        return {**batch, "targets": np.array([str(t) for t in batch["targets"]], dtype=object)}


@pytest.mark.parametrize(
    "cls, message",
    [
        (_RaggedFields, "experiment _RaggedFields's fields returns 'targets' with 31 rows for "
         "32 rows; every field must have one entry per row, the batch axis first"),
        (_ObjectFields, "experiment _ObjectFields's fields returns 'targets' of dtype object; "
         "return numeric NumPy arrays (map strings or objects to numbers in fields)"),
    ],
)  # fmt: skip
def test_fields_that_cannot_train_are_one_line_before_step_0(tmp_path, monkeypatch, cls, message):
    config = tiny(experiment=importable(monkeypatch, cls))
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(config, str(tmp_path / "run"))
    assert str(e.value) == message
    assert not (tmp_path / "run").exists()
