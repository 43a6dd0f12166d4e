"""Every experiment through the same checks: found by name, refuses a bad task setting by key,
trains a step, and exports what training computes. Task-specific checks live in each task's own
test file."""

import types

import pytest
from conftest import tiny

from ann import experiment as experiment_lib
from ann.config import ConfigError


def test_every_name_in_the_table_imports_a_complete_experiment():
    for name in experiment_lib.EXPERIMENTS:
        cls = experiment_lib.get(name)
        assert all(hasattr(cls, m) for m in ("eval_rows", "eval_metrics", "tokens_per_example"))


def test_a_class_lacking_protocol_members_is_refused_by_name(monkeypatch):
    module = types.ModuleType("half_done_tasks")
    module.Half = type("Half", (), {"setup": lambda self, train: None})
    monkeypatch.setitem(__import__("sys").modules, "half_done_tasks", module)
    with pytest.raises(
        ConfigError, match=r"'half_done_tasks:Half' lacks tokens_per_example, .*eval_rows"
    ):
        experiment_lib.get("half_done_tasks:Half")


def test_unknown_experiment_names_the_key_and_the_choices():
    with pytest.raises(
        ConfigError, match=r"config key 'experiment': unknown experiment 'regresion'"
    ):
        experiment_lib.check_config(tiny(experiment="regresion"), 4)
