"""A bad config fails before anything compiles, in one line naming the key and the fix."""

import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, load_config, tiny

from ann import config as config_lib
from ann.config import ConfigError
from ann.train.loop import train_and_evaluate


def test_shipped_configs_validate():
    for name in ["digits_cnn", "digits_mlp", "digits_resnet", "breast_cancer_mlp"]:
        config_lib.validate(load_config(name), num_devices=4)
    config_lib.validate(load_config("digits_cnn", "writers"), num_devices=4)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update({"batch_sise": 3}), "'batch_sise' is unknown (did you mean"),
        (lambda c: c.optimizer.update({"lerning_rate": 1}), "'optimizer.lerning_rate' is unknown"),
        # Another framework's name, or ann's at the wrong level: pointed at ann's key.
        (lambda c: c.update({"lr": 0.1}), "'lr' is unknown (did you mean 'optimizer.learning_r"),
        (lambda c: c.update({"learning_rate": 0.1}), "(did you mean 'optimizer.learning_rate'?)"),
        (lambda c: c.optimizer.update({"beta2": 0.9}), "(did you mean 'optimizer.b2'?)"),
        (lambda c: c.update({"epochs": 3}), "'epochs' is unknown (did you mean 'num_epochs'?)"),
        # An exact name one level off beats a near name at the level ('dropout' is not 'report').
        (lambda c: c.update({"dropout": 0.2}), "'dropout' is unknown (did you mean 'model.drop"),
        (lambda c: c.optimizer.update({"total_steps": 9}), "(did you mean 'total_steps'?)"),
        (lambda c: c.update({"warmup_steps": 9}), "(did you mean 'optimizer.warmup_steps'?)"),
        (lambda c: c.update({"eval_batch_size": -8}), "'eval_batch_size' must be >= 0"),
        (lambda c: c.update({"batch_size": 30}), "not divisible by the 4 devices"),
        (
            lambda c: c.optimizer.update({"name": "adamm"}),
            "'optimizer.name' is 'adamm' (did you mean 'adam'?); choose",
        ),
        (lambda c: c.update({"num_epochs": 2}), "exactly one of config keys 'total_steps'"),
        # A count in full: it said num_epochs=1e+09 (a fresh-user check).
        (lambda c: c.update({"num_epochs": 1e9}), "total_steps=800, num_epochs=1000000000)"),
        (lambda c: c.update({"log_every_steps": 0}), "'log_every_steps' must be >= 1"),
        (lambda c: c.model.update({"name": ""}), "'model.name' is empty"),
        # `--config.init_from=None` is the text 'None' (a string key): it was read as a path
        # ("None does not exist; use a run directory ..."); '' is the unset value.
        (
            lambda c: c.update({"init_from": "None"}),
            "config key 'init_from' is 'None', which a string key reads as text (a name or path "
            "'None'); for none, set it empty: --config.init_from=''",
        ),
        (lambda c: c.data.update({"data_dir": "None"}), "--config.data.data_dir=''"),
        (lambda c: c.early_stopping.update({"metric": "None"}), "early_stopping.metric=''"),
    ],
)
def test_validate_names_the_key(mutate, message):
    config = load_config("digits_mlp")
    config.unlock()
    mutate(config)
    with pytest.raises(ConfigError, match=None) as e:
        config_lib.validate(config, num_devices=4)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"model.name": "transformr"},
            "unknown model 'transformr'; use one of bi_encoder, causal_lm, cnn",
        ),
        ({"model.name": "nowhere.mod:Net"}, "cannot import 'nowhere.mod:Net'"),
        ({"data.name": "no_such_data"}, "unknown data set 'no_such_data'"),
        ({"data.eval_splits": ("valid",)}, "has no split 'valid'"),
        ({"data.eval_splits": ("tset",)}, "has no split 'tset' (did you mean 'test'?)"),
        (
            {"data.eval_splits": ("test", "test")},
            "config key 'data.eval_splits' names 'test' twice; name each split once",
        ),  # fmt: skip
        ({"sharding_rules": "fdsp"}, "'sharding_rules' is 'fdsp' (did you mean 'fsdp'?)"),
        (
            {"data.validation_split": "valid"},
            "config key 'data.validation_split': data set 'digits' has no split 'valid'",
        ),
        (
            {"experiment": "regresion"},
            "unknown experiment 'regresion' (did you mean 'regression'?)",
        ),  # fmt: skip
        # A dotted path to a class: "unknown model", no hint of the module:Class spelling.
        (
            {"model.name": "ann.models.mlp.MLP"},
            "unknown model 'ann.models.mlp.MLP' (did you mean 'ann.models.mlp:MLP'?)",
        ),  # fmt: skip
        # ann's own model by its module: 'mlp:MLP' (module:Class) would not import.
        ({"model.name": "mlp.MLP"}, "unknown model 'mlp.MLP' (did you mean 'mlp'?)"),
        (
            {"model.name": "ann.models.mlp:MPL"},
            "has no 'MPL' (did you mean 'ann.models.mlp:MLP'?); name a class it defines",
        ),  # fmt: skip
        (
            {"model.name": ":MLP"},
            "config key 'model.name': ':MLP' is not "
            "package.module:ClassName (e.g. 'mynets:Wide', its module on PYTHONPATH)",
        ),  # fmt: skip
        (
            {"data.validation_split": "train[100%:]"},  # it said: "cannot be read without TF"
            "config key 'data.validation_split' is 'train[100%:]', which has no rows of data set "
            "'digits'; choose a slice with rows (e.g. 'train[90%:]', with "
            "data.train_split='train[:90%]')",
        ),
        # Slices that share rows with what trains or what is reported: names alone passed.
        (
            {"data.validation_split": "train[90%:]"},
            "config key 'data.validation_split' is 'train[90%:]', which shares rows 1099-1220 of "
            "'train' with data.train_split 'train': the split that chooses must be one of its "
            "own; carve both from 'train': --config.data.train_split='train[:90%]' "
            "--config.data.validation_split='train[90%:]'",
        ),
        (
            {"data.validation_split": "test[:50%]"},
            "shares rows 0-179 of 'test' with data.eval_splits 'test': the split that chooses "
            "must be one of its own; choose validation rows outside 'test'",
        ),
        # The digits' two partitions share rows under other names: their row_ids tell (a test
        # score of rows the model trained on, 0.99 for a run that tests unseen writers at 0.95).
        (
            {"data.train_split": "train_writers", "data.validation_split": "validation_writers"},
            "config key 'data.eval_splits' 'test' shares 239 of its 360 rows with "
            "data.train_split 'train_writers' (the same examples of digits, by their `row_id`, "
            "under another split's name), so it would report a score on rows the model trained "
            "on; take every split from one partition of digits",
        ),
        (
            {"data.validation_split": "validation_writers"},
            "config key 'data.validation_split' 'validation_writers' shares 151 of its 216 rows "
            "with data.train_split 'train' (the same examples of digits, by their `row_id`, "
            "under another split's name), so it would choose the checkpoint on rows the model "
            "trained on",
        ),
        (
            {"data.eval_splits": ("test", "test_writers")},
            "config key 'data.eval_splits' 'test_writers' shares",
        ),
        # The run's test score (eval/accuracy on the done: line) was the training accuracy.
        (
            {"data.eval_splits": ("train",)},
            "config key 'data.eval_splits' starts with 'train', which shares rows 0-1220 of "
            "'train' with data.train_split 'train': the first reported split is the run's test "
            "score (eval/...), never rows it trained on; report the train split after it, e.g. "
            "--config.data.eval_splits=\"('test', 'train')\"",
        ),
    ],
)
def test_unknown_names_fail_before_compiling(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(tiny(**overrides), str(tmp_path))
    assert message in str(e.value)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    "key, value, hint",
    [("optimizer.name", "adamW", "adamw"), ("optimizer.schedule", "warmup_cosin", "warmup_cosine"),
     ("best_mode", "maximum", "max")],
)  # fmt: skip
def test_a_choice_near_an_option_is_pointed_at_it(key, value, hint):
    config = tiny(**{key: value})
    with pytest.raises(ConfigError) as e:
        config_lib.validate(config, num_devices=4)
    assert f"config key '{key}' is '{value}' (did you mean '{hint}'?); choose one of" in str(
        e.value
    )


def test_wrong_type_in_a_config_that_is_not_type_safe():
    import ml_collections

    config = ml_collections.ConfigDict(load_config("digits_mlp").to_dict(), type_safe=False)
    config.eval_batch_size = "64"
    with pytest.raises(ConfigError, match="'eval_batch_size' must be int or None, got str"):
        config_lib.validate(config, num_devices=4)


@pytest.mark.parametrize("key", sorted(config_lib.ELEMENTS))
def test_a_sequence_key_names_an_element_of_the_wrong_type(key):
    # --config.data.eval_splits=3 parses as (3,): the tuple passed, TFDS then raised a traceback.
    config = load_config("digits_mlp")
    kind, _ = config_lib.ELEMENTS[key]
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = ("x",) if kind is int else (3,)
    with pytest.raises(ConfigError, match=f"config key '{key}' holds .*; every element must be"):
        config_lib.validate(config, num_devices=4)


def test_config_not_built_from_base():
    import ml_collections

    with pytest.raises(ConfigError, match="'experiment' is missing; set it .*or start the"):
        config_lib.validate(ml_collections.ConfigDict({"model": {"name": "mlp"}}), 1)


@pytest.mark.parametrize(
    "section, key, message",
    [
        ("", "data", "config key 'data' is missing; start the config from ann.config.base()"),
        ("optimizer", "learning_rate", "config key 'optimizer.learning_rate' is missing; set it "
         "(its default: 0.001) or start the config from ann.config.base()"),
        ("data", "name", "config key 'data.name' is missing; set it or start the config from "
         "ann.config.base()"),
    ],
)  # fmt: skip
def test_a_deleted_key_is_named_before_anything_reads_it(tmp_path, section, key, message):
    # A key deleted from a section was a bare KeyError ('name') or ml_collections' AttributeError
    # from deep in a run; a section deleted, from reading the data directory (trial 48a).
    from ann.train.loop import train_and_evaluate

    config = tiny()
    del (config[section] if section else config)[key]
    for check in (
        lambda: config_lib.validate(config, 4),
        lambda: train_and_evaluate(config, str(tmp_path)),
    ):
        with pytest.raises(ConfigError) as e:
            check()
        assert str(e.value) == message
    assert not list(tmp_path.iterdir())  # nothing written


def test_unknown_model_argument(tmp_path):
    config = tiny()
    config.model.widht = 3
    with pytest.raises(ConfigError, match="'model.widht' is not an argument of model 'mlp'"):
        train_and_evaluate(config, str(tmp_path))


def test_resolved_config_written(tmp_path):
    config = tiny(total_steps=2)
    train_and_evaluate(config, str(tmp_path))
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["total_steps"] == 2
    assert written["model"]["name"] == "mlp"


def test_unset_keys_can_be_set_from_the_command_line():
    # Unset is 0 or "", never None: ml_collections cannot override a key whose value is None.
    from absl import flags
    from ml_collections import config_flags

    argv = [
        "prog",
        f"--config={ROOT}/configs/digits_cnn.py",
        "--config.optimizer.grad_clip_norm=1",
        "--config.eval_batch_size=256",
        "--config.data.data_dir=/tmp/data",
    ]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=argv)
    values(argv)
    config = values.config
    assert config.optimizer.grad_clip_norm == 1.0
    assert config.eval_batch_size == 256 and config.data.data_dir == "/tmp/data"
    config_lib.validate(config, num_devices=4)


def test_unknown_best_metric_is_a_config_error_before_the_first_step(tmp_path, caplog):
    config = tiny(total_steps=2, log_every_steps=1, best_metric="val/acc")
    caplog.set_level("INFO", logger="absl")
    with pytest.raises(ConfigError, match="'best_metric': 'val/acc' is not") as e:
        train_and_evaluate(config, str(tmp_path))
    # Nothing said of the files it removes (it logged the parameters.tsv it wrote, first).
    said = [r.getMessage() for r in caplog.records if f"{os.sep}ann{os.sep}" in r.pathname]
    assert not [m for m in said if str(tmp_path) in m], said
    # Only what may choose is offered (it listed the test split's eval/ metrics too).
    assert "choose one of val/accuracy" in str(e.value) and "eval/" not in str(e.value)
    # Found before training (it was found at the first eval): no step ran, and the refused
    # start removed what it wrote (a start refused after a step keeps its metrics.jsonl).
    assert os.listdir(tmp_path) == []


def test_a_test_metric_never_chooses_the_best_checkpoint(tmp_path):
    with pytest.raises(ConfigError) as e:
        config_lib.validate(tiny(best_metric="eval/accuracy"), num_devices=4)
    assert str(e.value) == (
        "config key 'best_metric' is 'eval/accuracy', which is not a validation metric; "
        "choosing on 'eval/accuracy' would select on the reported split: use 'val/accuracy' "
        "(metrics of data.validation_split)"
    )
    with pytest.raises(ConfigError, match="'eval_test_seen/loss'.*use 'val/loss'"):
        config_lib.validate(tiny(best_metric="eval_test_seen/loss"), num_devices=4)
    # A bare name names no split (it said "would select on no split"), train/ the training
    # batches', and a prefix no run logs is named as such (it said "no split" too).
    with pytest.raises(ConfigError) as e:
        config_lib.validate(tiny(best_metric="accuracy"), num_devices=4)
    assert str(e.value) == (
        "config key 'best_metric' is 'accuracy', which names no split (a run's metrics are "
        "val/..., train/... and eval/...): use 'val/accuracy' (metrics of data.validation_split)"
    )
    with pytest.raises(ConfigError, match="the split 'test', which no run logs: use 'val/auroc'"):
        config_lib.validate(tiny(best_metric="test/auroc"), num_devices=4)
    # The metric named with the mode it needs: 'val/loss' alone was refused next for
    # best_mode='max' (two runs to one fix).
    with pytest.raises(ConfigError) as e:
        config_lib.validate(tiny(best_metric="train/loss"), num_devices=4)
    assert str(e.value).endswith(
        "select on the training batches: use 'val/loss' with best_mode='min' (metrics of "
        "data.validation_split)"
    ), e.value
    # Nor does the test split choose under another name, nor the train split.
    said = "'data.validation_split' is 'test', which is also in data.eval_splits: .*; use 'valid"
    with pytest.raises(ConfigError, match=said):  # not "drop it from data.eval_splits"
        config_lib.validate(tiny(**{"data.validation_split": "test"}), num_devices=4)
    with pytest.raises(ConfigError, match="also in data.train_split.*train\\[90%:\\]"):
        config_lib.validate(tiny(**{"data.validation_split": "train"}), num_devices=4)
    # The fix for the validation split among the eval splits is to drop it there (it said "use
    # 'validation'", the value already set).
    config = tiny(**{"data.eval_splits": ("test", "validation")})
    with pytest.raises(ConfigError) as e:
        config_lib.validate(config, num_devices=4)
    assert str(e.value).endswith(
        "also in data.eval_splits: the split that chooses must be one of its own; drop it from "
        "data.eval_splits (--config.data.eval_splits=\"('test',)\")"
    ), str(e.value)
    with pytest.raises(ConfigError, match="'test',\\)\", a split to report on\\)$"):  # not ()
        config_lib.validate(tiny(**{"data.eval_splits": ("validation",)}), num_devices=4)
    assert config_lib.base().best_metric == "val/accuracy"
    assert config_lib.base().data.validation_split == "validation"


def test_task_settings_fill_defaults_and_name_unknown_or_mistyped_keys():
    config = config_lib.base()
    config.experiment = "retrieval"
    config.task.temperature = 1  # an int where a float is expected is fine
    settings = config_lib.task_settings(config, {"loss": "infonce", "temperature": 0.1})
    assert settings == {"loss": "infonce", "temperature": 1.0}
    config.task.tempreature = 0.5
    with pytest.raises(
        config_lib.ConfigError, match="task.tempreature.*did you mean 'task.temperature'"
    ):
        config_lib.task_settings(config, {"loss": "infonce", "temperature": 0.1})
    del config.task["tempreature"]
    config.task.loss = 3
    with pytest.raises(config_lib.ConfigError, match="'task.loss' must be str"):
        config_lib.task_settings(config, {"loss": "infonce", "temperature": 0.1})


def test_a_run_written_before_new_keys_existed_still_reads(tmp_path):
    config = tiny()
    config_lib.write(config, str(tmp_path))
    values = json.loads((tmp_path / "config.json").read_text())
    del values["sharding_rules"], values["task"], values["mesh"]["fsdp"], values["freeze"]
    (tmp_path / "config.json").write_text(json.dumps(values))
    old = config_lib.read(str(tmp_path))
    assert old.sharding_rules == "fsdp" and old.mesh.fsdp == 1 and old.freeze == ()
    assert old.data.eval_splits == ("test",) and old.model.name == config.model.name
    config_lib.validate(old, 4)
    # A run from before validation splits: chose on eval/, no data.validation_split. It reads
    # and restores (its best checkpoint stays the one it chose); it does not train on.
    del values["data"]["validation_split"]
    values["best_metric"] = "eval/accuracy"
    (tmp_path / "config.json").write_text(json.dumps(values))
    old = config_lib.read(str(tmp_path))
    assert old.data.validation_split == "validation" and old.best_metric == "eval/accuracy"
    config_lib.validate(old, 1, selecting=False)
    with pytest.raises(ConfigError, match="use 'val/accuracy'"):
        config_lib.validate(old, 4)
    with pytest.raises(ConfigError, match="from before validation splits.*new --workdir"):
        train_and_evaluate(tiny(), str(tmp_path))
    assert "validation_split" not in json.loads((tmp_path / "config.json").read_text())["data"]


# Every numeric setting's range, from the one table in ann/config.py (RANGES). total_steps=100.
RANGE_CASES = [
    ("optimizer.learning_rate", 0.0, "must be > 0, got 0.0; e.g. --config.optimizer.learnin"),
    ("optimizer.learning_rate", -1e-3, "must be > 0"),
    # inf passed ">= 0" and the run diverged at step 1, told to lower the learning rate; an
    # overflowed learning rate read "must be > 0, got inf" (a fresh-user check).
    ("optimizer.weight_decay", math.inf, "must be finite and >= 0, got inf"),
    ("optimizer.end_learning_rate_factor", math.inf, "must be finite and >= 0, got inf"),
    ("optimizer.learning_rate", math.inf, "must be finite and > 0, got inf"),
    ("optimizer.warmup_steps", 100, "must be in [0, 100) (total_steps=100; lower this or"),
    ("optimizer.warmup_steps", -1, "must be in [0, 100)"),
    ("optimizer.step_boundaries", (50, 100), "must be increasing, each element in (0, 100) (total"),
    # With a fix that passes: as many boundaries spread inside the run (it gave none).
    (
        "optimizer.step_boundaries",
        (400, 600),
        "must be increasing, each element in (0, 100) (total_steps=100; lower this or raise "
        "total_steps), got (400, 600); e.g. --config.optimizer.step_boundaries='(33, 66)'",
    ),
    ("optimizer.step_boundaries", (60, 30), "must be increasing, each element in (0, 100)"),
    ("optimizer.step_boundaries", (0, 30), "must be increasing, each element in (0, 100)"),
    ("optimizer.step_factor", 0.0, "must be > 0"),
    ("optimizer.end_learning_rate_factor", -0.1, "must be >= 0"),
    ("optimizer.momentum", 1.0, "must be in [0, 1)"),
    ("optimizer.b1", 1.0, "must be in [0, 1), got 1.0; e.g. --config.optimizer.b1=0.9"),
    ("optimizer.b2", -0.1, "must be in [0, 1)"),
    ("optimizer.eps", 0.0, "must be > 0"),
    ("optimizer.weight_decay", -1e-4, "must be >= 0"),
    ("optimizer.grad_clip_norm", -1.0, "must be >= 0"),
    ("optimizer.accumulate_steps", 0, "must be >= 1"),
    ("model.dropout", 1.0, "must be in [0, 1), got 1.0"),
    ("model.dropout", -0.1, "must be in [0, 1)"),
    ("data.read_threads", -1, "must be >= 0"),
    ("data.prefetch_batches", -1, "must be >= 0"),
    ("batch_size", 0, "must be >= 1"),
    # what a value of its own means is said (it was "must be >= 1 or 0")
    (
        "total_steps",
        -5,
        "must be in [1, 2147483647] or 0 (0: num_epochs decides the length), got -5",
    ),
    ("num_epochs", -1.0, "must be > 0 or 0 (0: total_steps decides the length)"),
    # Past the int32 step counters (state, schedule): accepted, then the start hung planning.
    ("total_steps", 2**31, "must be in [1, 2147483647] or 0 (0: num_epochs decides the length)"),
    ("total_steps", 10**20, "must be in [1, 2147483647] or 0"),
    ("max_to_keep", 0, "must be >= 1"),
    ("checkpoint_every_steps", 0, "must be >= 1"),
    ("eval_every_steps", -1, "must be >= 1"),
    ("early_stopping.patience", 0, "must be >= 1"),
    ("early_stopping.min_delta", -0.5, "must be >= 0"),
    ("mesh.fsdp", 0, "must be >= 1 or -1 (-1: the devices the other axes leave)"),
    ("steps_per_call", -1, "must be in [1, 100] or 0 (0: auto, chosen from the step's cost)"),
    # On the CPU a convolution step is unrolled k times before step 0: 50 compiled for 63 s.
    ("steps_per_call", 1000, "must be in [1, 100] or 0 (0: auto, chosen from the step's cost)"),
    ("report.slice_min", 1.5, "must be in [0, 1]"),
    ("report.slice_max", -1.0, "must be >= 0"),
    ("report.target_recall", 0.0, "must be in (0, 1]"),
]


def _set(config, key, value):
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = value


@pytest.mark.parametrize("key, value, message", RANGE_CASES)
def test_every_range_is_checked_naming_the_key(key, value, message):
    config = load_config("digits_mlp")
    config.total_steps = 100
    _set(config, key, value)
    with pytest.raises(ConfigError) as e:
        config_lib.validate(config, num_devices=4)
    assert f"config key '{key}' {message}" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("key, value, message", [c for c in RANGE_CASES if np.isscalar(c[1])])
@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])  # cnn: a warmup of 50 steps
def test_every_range_error_suggests_a_value_that_is_accepted(name, key, value, message):
    # total_steps=-5 suggested 0, which the next check refused (0 means "unset"); model.dropout=1
    # suggested nothing.
    config = load_config(name)
    config.total_steps = 100
    _set(config, key, value)
    with pytest.raises(ConfigError) as e:
        config_lib.validate(config, num_devices=4)
    suggested = re.search(rf"; e\.g\. --config\.{re.escape(key)}=(\S+)$", str(e.value))
    assert suggested, str(e.value)
    _set(config, key, type(value)(float(suggested.group(1))))
    config_lib.validate(config, num_devices=4)


def test_a_wide_range_suggests_a_value_one_would_type():
    # total_steps, once bounded by 2**31-1, suggested the middle of its range, 1073741824 (a
    # fresh-user check); num_epochs=inf suggested 0.0 where a positive value also fits.
    config = load_config("digits_mlp")
    config.total_steps = -5
    with pytest.raises(ConfigError) as e:
        config_lib.validate(config, num_devices=4)
    assert str(e.value).endswith("; e.g. --config.total_steps=1"), str(e.value)
    config.total_steps, config.num_epochs = 0, math.inf
    with pytest.raises(ConfigError) as e:
        config_lib.validate(config, num_devices=4)
    assert str(e.value).endswith("; e.g. --config.num_epochs=1"), str(e.value)
    # digits_cnn's 50-step warmup refuses total_steps=1: it suggested the top, 2147483647.
    config = load_config("digits_cnn")
    config.total_steps = -1
    with pytest.raises(ConfigError) as e:
        config_lib.validate(config, num_devices=4)
    assert str(e.value).endswith("; e.g. --config.total_steps=100"), str(e.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        # digits_mlp: adam, constant schedule
        ({"optimizer.momentum": 0.5}, "'optimizer.momentum'=0.5 has no effect with optimizer.name"),
        ({"optimizer.nesterov": True}, "'optimizer.nesterov'=True has no effect with optimizer."),
        ({"optimizer.name": "sgd", "optimizer.b2": 0.99}, "'optimizer.b2'=0.99 has no effect"),
        ({"optimizer.step_boundaries": (50,)}, "'optimizer.step_boundaries'=(50,) has no effect"),
        ({"optimizer.end_learning_rate_factor": 0.1}, "'optimizer.end_learning_rate_factor'=0.1"),
        (
            {"optimizer.schedule": "step", "optimizer.warmup_steps": 10},
            "'optimizer.warmup_steps'=10 has no effect with optimizer.schedule='step' (read only "
            "by constant and warmup_cosine); drop --config.optimizer.warmup_steps or set "
            "--config.optimizer.schedule=",
        ),
        (
            {"optimizer.name": "sgd", "optimizer.momentum": 0.0, "optimizer.nesterov": True},
            "'optimizer.nesterov'=True has no effect with optimizer.momentum=0",
        ),
        # No boundary: a constant schedule, the same metrics as the plain run.
        (
            {"optimizer.schedule": "step"},
            "config key 'optimizer.schedule'='step' has no effect without optimizer."
            "step_boundaries (no boundary: the learning rate stays constant); set "
            '--config.optimizer.step_boundaries="(400, 600)" (steps in (0, total_steps), at '
            "each of which the rate is multiplied by optimizer.step_factor) or "
            "--config.optimizer.schedule=constant",
        ),
        (
            {"optimizer.schedule": "step", "optimizer.step_factor": 0.5},
            "'optimizer.schedule'='step' has no effect without optimizer.step_boundaries",
        ),
        # The same kind outside the optimizer: settings of a feature that is off.
        (
            {"early_stopping.patience": 3},
            "'early_stopping.patience'=3 has no effect with early_stopping.metric='' (read only "
            "when it is set); drop --config.early_stopping.patience or set "
            "--config.early_stopping.metric=val/loss",
        ),
        ({"init_from_skip": ("head/.*",)}, "'init_from_skip'=('head/.*',) has no effect with"),
    ],
)
def test_a_key_its_setting_ignores_is_refused(overrides, message):
    """A sweep over momentum with adam trained the same model in every trial, silently."""
    config = load_config("digits_mlp")
    for key, value in overrides.items():
        _set(config, key, value)
    with pytest.raises(ConfigError) as e:
        config_lib.validate(config, num_devices=4)
    assert message in str(e.value) and "\n" not in str(e.value)
    config_lib.validate(config, num_devices=4, selecting=False)  # a trained run still reads
    # The same keys where they are read, or at their defaults, pass.
    _set(config, "optimizer.name", "sgd")
    _set(config, "optimizer.momentum", 0.9)
    for key in ("b1", "b2", "eps", "end_learning_rate_factor", "step_boundaries"):
        _set(config, f"optimizer.{key}", config_lib.SCHEMA["optimizer"][key][0])
    _set(config, "optimizer.warmup_steps", 0)
    if config.optimizer.schedule == "step":
        _set(config, "optimizer.step_boundaries", (400, 600))
    _set(config, "early_stopping.patience", 5)
    _set(config, "init_from_skip", ())
    config_lib.validate(config, num_devices=4)


def test_every_key_a_step_schedule_ignores_or_lacks_is_said_in_one_refusal():
    """`--config.optimizer.schedule=step` on digits_cnn (warmup 50) was refused for the warmup,
    then, once warmup_steps=0 was given, for the missing step boundaries: two failed runs."""
    config = load_config("digits_cnn")
    assert config.optimizer.warmup_steps > 0
    _set(config, "optimizer.schedule", "step")
    with pytest.raises(ConfigError) as e:
        config_lib.validate(config, num_devices=1)
    said = str(e.value)
    assert said.startswith("config key 'optimizer.warmup_steps'=50 has no effect with "), said
    assert "; also config key 'optimizer.schedule'='step' has no effect without " in said, said
    assert "\n" not in said
    _set(config, "optimizer.warmup_steps", 0)
    _set(config, "optimizer.step_boundaries", (100, 200))
    config_lib.validate(config, num_devices=1)


def test_an_ignored_key_set_to_what_the_file_holds_is_refused_and_the_named_fix_passes():
    """`--config.optimizer.momentum=0.9` with adam: the user expects momentum; the value is the
    default, so only knowing the override changed nothing (`unchanged_overrides`) can tell.
    Setting a key the file had changed back to its default, the fix the message names, is a
    change and must pass."""
    config = load_config("digits_mlp")  # adam
    config_lib.validate(config, num_devices=4)  # momentum at its default, not given: fine
    unchanged = config_lib.unchanged_overrides(
        load_config("digits_mlp"), {"optimizer.momentum": 0.9}
    )
    assert unchanged == {"optimizer.momentum"}
    with pytest.raises(ConfigError) as e:
        config_lib.validate(config, num_devices=4, unchanged=unchanged)
    assert str(e.value).endswith(
        "drop --config.optimizer.momentum or set --config.optimizer.name=sgd"
    ), str(e.value)
    config_lib.validate(config, num_devices=4, unchanged={"optimizer.b1"})  # read by adam
    file_config = load_config("digits_mlp")
    file_config.early_stopping.patience = 3  # without early_stopping.metric: ignored
    with pytest.raises(ConfigError) as e:
        config_lib.validate(file_config, num_devices=4)
    # A flag's value is dropped; the file's, where a flag set early_stopping.metric, set back.
    assert str(e.value).endswith(
        "drop --config.early_stopping.patience or set --config.early_stopping.metric=val/loss"
    ), e.value
    assert e.value.bound_fix.startswith("set --config.early_stopping.patience=5 (its default) or")
    fixed = {"early_stopping.patience": 5}
    assert config_lib.unchanged_overrides(file_config, fixed) == set()
    file_config.early_stopping.patience = 5
    config_lib.validate(file_config, num_devices=4, unchanged=set())


def test_a_mistimed_run_length_names_the_fix():
    config = load_config("digits_mlp")
    config.num_epochs = 3  # total_steps still set by the file
    with pytest.raises(ConfigError) as e:
        config_lib.validate(config, num_devices=4)
    assert "num_epochs=3)" in str(e.value) and "set --config.total_steps=0" in str(e.value)
    # Once the data set gives the epochs' length, a warmup past it names num_epochs to raise.
    config.total_steps, config.optimizer.warmup_steps = 0, 50
    with pytest.raises(ConfigError) as e:
        config_lib.check_ranges(config.to_dict(), total_steps=29)
    assert "(total_steps=29; lower this or raise num_epochs)" in str(e.value), str(e.value)
    # Below the range, the bound is named without "lower this" (-1 was told to lower itself).
    config.optimizer.warmup_steps = -1
    with pytest.raises(ConfigError) as e:
        config_lib.check_ranges(config.to_dict(), total_steps=29)
    assert str(e.value).startswith(
        "config key 'optimizer.warmup_steps' must be in [0, 29) (total_steps=29), got -1; "
    ), str(e.value)


def test_the_steps_num_epochs_comes_to_are_bounded_as_total_steps_is():
    # num_epochs=1e9 over the digits (1,221 examples, batches of 128): 9.5e9 steps, past the
    # int32 step counters; refused in one line naming num_epochs and the most that fit.
    from ann.train import build

    config = load_config("digits_mlp")
    config.total_steps, config.num_epochs = 0, 1e9
    steps = build.total_steps(config, 1221)
    with pytest.raises(ConfigError) as e:
        config_lib.check_run_steps(config, steps, 1221)
    assert str(e.value) == (
        "config key 'num_epochs' must be at most 225125230 for 1221 train examples in batches "
        "of 128, got 1000000000: that is 9539062500 steps, more than 2147483647 (the step "
        "counter is int32); e.g. --config.num_epochs=100"
    )
    config.num_epochs = 225125230
    config_lib.check_run_steps(config, build.total_steps(config, 1221), 1221)  # the most: kept


def test_a_shortened_run_fits_a_shipped_warmup():
    # bench_scaling's default: pydoc_lm (warmup 100) run for 2 x 50 steps.
    config = load_config("pydoc_lm")
    config.total_steps = 100
    with pytest.raises(ConfigError, match="'optimizer.warmup_steps' must be in"):
        config_lib.validate(config, num_devices=4)
    config_lib.fit_warmup(config)
    assert config.optimizer.warmup_steps == 50
    config_lib.validate(config, num_devices=4)
    config.total_steps = 400  # a warmup that fits is left as it is
    config_lib.fit_warmup(config)
    assert config.optimizer.warmup_steps == 50


def test_a_benchmarks_run_length_is_its_steps_whatever_the_file_gave():
    # breast_cancer_mlp.py runs 60 epochs: a benchmark's total_steps beside them was refused.
    config = load_config("breast_cancer_mlp")
    config.total_steps = 10
    with pytest.raises(ConfigError, match="total_steps"):
        config_lib.validate(config, num_devices=4)
    config_lib.shorten(config, 10)
    config_lib.validate(config, num_devices=4)
    assert (config.total_steps, config.num_epochs) == (10, 0)
    assert config.optimizer.warmup_steps < 10


def test_schedule_of_a_num_epochs_run_is_checked_once_its_length_is_known(tmp_path):
    # total_steps comes from num_epochs and the data set's size: 1 epoch of digits' train / 32.
    config = tiny(total_steps=0, num_epochs=1)
    config.optimizer.schedule = "warmup_cosine"
    config.optimizer.warmup_steps = 500
    config_lib.validate(config, num_devices=4)  # not knowable yet
    with pytest.raises(
        ConfigError, match=r"'optimizer.warmup_steps' must be in \[0, [34]\d\) \(total_steps="
    ):
        train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_task_settings_check_ranges():
    config = config_lib.base()
    config.experiment = "retrieval"
    config.task.temperature = 0.0
    defaults = {"temperature": 0.1}
    with pytest.raises(ConfigError, match=r"'task.temperature' must be > 0, got 0.0; e.g. .*=0.1"):
        config_lib.task_settings(config, defaults, ranges={"temperature": config_lib.POSITIVE})
    config.task.temperature = 0.5
    assert config_lib.task_settings(config, defaults, ranges={"temperature": config_lib.POSITIVE})


_NO_CONFIG = ("scripts/bench_serve.py", "scripts/bench_xla_cpu_flags.py", "scripts/bench_lm.py")


def _cli(module: str, tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    """`python -m module`, or `python scripts/NAME.py` for a script, on digits_mlp."""
    extra = {"ann.sweep": ["--dry_run"]}.get(module, [])
    script = module.endswith(".py")
    takes_workdir = not script and module != "ann.transfer"
    workdir = [f"--workdir={tmp_path}"] if takes_workdir else []
    config = [] if module in _NO_CONFIG else [f"--config={ROOT}/configs/digits_mlp.py"]
    command = [sys.executable, *([module] if script else ["-m", module])]
    return subprocess.run(
        command + [*config, *overrides, *workdir, *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


@pytest.mark.parametrize(
    "module, override, message",
    [
        # The README's own example of a misspelt key.
        (
            "ann.main",
            "--config.optimizer.lerning_rate=0.01",
            "error: config key 'optimizer.lerning_rate' is unknown (did you mean "
            "'optimizer.learning_rate'?)",
        ),
        (
            "ann.sweep",
            "--config.optimizer.lerning_rate=0.01",
            "error: config key 'optimizer.lerning_rate' is unknown (did you mean "
            "'optimizer.learning_rate'?)",
        ),
        (
            "ann.transfer",
            "--config.optimizer.lerning_rate=0.01",
            "error: config key 'optimizer.lerning_rate' is unknown (did you mean "
            "'optimizer.learning_rate'?)",
        ),
        # A section that does not exist.
        (
            "ann.main",
            "--config.optimzer.learning_rate=0.01",
            "error: config key 'optimzer.learning_rate' is unknown (did you mean "
            "'optimizer.learning_rate'?)",
        ),
        # ... and a misspelt key under it: the key meant, not 'optimizer.lr' (which a rerun
        # then refused as "did you mean 'optimizer.learning_rate'?").
        (
            "ann.main",
            "--config.optimzer.lr=0.01",
            "error: config key 'optimzer.lr' is unknown (did you mean 'optimizer.learning_rate'?)",
        ),
        (
            "ann.sweep",
            "--config.optimzer.lr=0.01",
            "error: config key 'optimzer.lr' is unknown (did you mean 'optimizer.learning_rate'?)",
        ),
        # A name several sections hold: those keys, not the ~30 top-level ones.
        (
            "ann.main",
            "--config.name=x",
            "error: config key 'name' is unknown (did you mean 'data.name', 'model.name' or "
            "'optimizer.name'?)",
        ),
        # An undeclared model argument the model does not take; a task key the experiment lacks.
        (
            "ann.main",
            "--config.model.nrm=batch",
            "error: config key 'model.nrm' is not an argument of model 'mlp' (did you mean "
            "'model.norm'?)",
        ),
        ("ann.sweep", "--config.model.nrm=batch", "error: config key 'model.nrm' is not an"),
        # A near miss is named as the user types it, the whole dotted key at any depth (it was
        # the bare name: "did you mean 'features'?").
        (
            "ann.main",
            "--config.model.featurs=16",
            "error: config key 'model.featurs' is not an argument of model 'mlp' (did you mean "
            "'model.features'?)",
        ),
        # ... but not through a value: `model.features.x` was suggested, and refused in
        # ml_collections' words ("tuple indices must be integers or slices, not str").
        (
            "ann.main",
            "--config.model.featurs.x=1",
            "error: config key 'model.featurs.x' is unknown (did you mean 'model.features'?)",
        ),
        (
            "ann.main",
            "--config.model.features.x=1",
            "error: --config.model.features.x=1: 'model.features' is a value (tuple (256, 256)), "
            "not a section; set it whole, e.g. '--config.model.features=(256, 256)'",
        ),
        (
            "ann.sweep",
            "--config.total_steps.x=1",
            "error: --config.total_steps.x=1: 'total_steps' is a value (int ",
        ),
        (
            "ann.main",
            "--config.early_stopping.patiense.x=1",
            "error: config key 'early_stopping.patiense.x' is unknown (did you mean "
            "'early_stopping.patience'?)",
        ),
        ("ann.main", "--config.model.nested.x=1", "error: config key 'model.nested.x' is unknown"),
        ("ann.main", "--config.task.margin=1.0", "error: config key 'task.margin' is unknown"),
        ("ann.main", "--config.batch_size=abc", "error: --config.batch_size=abc must be an int"),
        # A value that does not fit the 4 devices (the tests' XLA_FLAGS reach the subprocess).
        ("ann.main", "--config.batch_size=30", "error: config key 'batch_size'=30 is not divisib"),
        ("ann.sweep", "--config.optimizer.b2=1.0", "error: config key 'optimizer.b2' must be in"),
        # The benchmarks are entry points too: a ConfigError raised inside main is one line.
        (
            "scripts/bench_train.py",
            "--config.optimizer.learning_rate=-1",
            "error: config key 'optimizer.learning_rate' must be > 0",
        ),
        (
            "scripts/bench_scaling.py",
            "--config.optimizer.lerning_rate=0.01",
            "error: config key 'optimizer.lerning_rate' is unknown (did you mean "
            "'optimizer.learning_rate'?)",
        ),
        ("scripts/bench_scaling.py", "--steps=0", "error: --steps=0 must be a positive integer"),
        # Numeric flags of the commands themselves: bounds checked while parsing.
        ("ann.sweep", "--trials=0", "error: --trials=0 must be an integer in [1, 100000]; e.g."),
        ("ann.sweep", "--cluster_cpus=0", "error: --cluster_cpus=0 must be an integer in [1, 1"),
        ("ann.main", "--distributed_timeout=0", "error: --distributed_timeout=0 must be an int"),
        # ml_collections: "Could not parse '': SyntaxError('invalid syntax', ...)"
        ("ann.main", "--config.=1", "error: --config.=1 names no key; write --config.KEY=VALUE"),
        # absl said "flag --search=bayes: value should be one of <grid|tpe>"
        ("ann.sweep", "--search=bayes", "error: --search=bayes must be one of grid, tpe"),
        (
            "ann.sweep",
            "--emit=slurmm",
            "error: --emit=slurmm must be one of slurm, k8s (did you mean 'slurm'?)",
        ),
        # Empty: told as a text flag's empty value is (it said "--emit= must be one of").
        (
            "ann.sweep",
            "--emit=",
            "error: --emit is empty; give one of slurm, k8s, or drop the flag",
        ),
        # The benchmarks without a config: their flags and ranges, through the same parser.
        ("scripts/bench_serve.py", "--requests=abc", "error: --requests=abc must be a positive"),
        ("scripts/bench_serve.py", "--concurrency=0,8", "error: flag --concurrency=['0', '8']"),
        ("scripts/bench_xla_cpu_flags.py", "--batch=0", "error: --batch=0 must be a positive int"),
        # Errors found before the work, not a traceback after it (helper audit, session 21):
        # digits_mlp is no transformer (AttributeError: 'dim'); a results file in no folder
        # (FileNotFoundError after 17 s); the one contender asked for, missing (exit 0).
        ("scripts/bench_scaling.py", "--steps=1", "error: --config: model 'mlp' is not a trans"),
        (
            "scripts/bench_lm.py",
            "--out=/nonexistent/x.json",
            "error: --out=/nonexistent/x.json cannot be written: there is no /nonexistent",
        ),
    ],
)
def test_every_entry_point_refuses_a_bad_override_in_one_line(tmp_path, module, override, message):
    proc = _cli(module, tmp_path, override)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_bench_peers_refuses_the_one_contender_it_cannot_run(tmp_path):
    # --only=torch without PyTorch printed "PyTorch: skipped", an empty table, and exited 0.
    proc = _cli("scripts/bench_peers.py", tmp_path, "--only=torch", "--torch_python=/no/python")
    assert proc.stderr.strip().splitlines() == [
        "error: --only=torch needs --torch_python to name a Python with torch; no /no/python"
    ]
    assert proc.returncode == 1


def test_a_missing_config_file_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ann.main", "--config=configs/nope.py", f"--workdir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: --config=configs/nope.py: no such file"


def test_an_undeclared_model_argument_the_model_takes_is_accepted(tmp_path):
    # digits_mlp.py does not set model.norm; MLP takes it.
    proc = _cli(
        "ann.main",
        tmp_path,
        "--config.model.norm=batch",
        "--config.total_steps=2",
        "--config.eval_every_steps=2",
        "--config.compilation_cache_dir=off",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "config.json").read_text())["model"]["norm"] == "batch"
    layout = (tmp_path / "parameters.tsv").read_text()
    assert "norms/0/scale" in layout or "norm" in layout


class _NoDtypeNet:
    """A user model whose constructor takes no dtype or param_dtype."""

    def __init__(self, input_shape, num_classes, width: int = 8, *, rngs):
        del input_shape, num_classes, width, rngs


@pytest.mark.parametrize("key", ["dtype", "param_dtype"])
def test_a_dtype_the_model_cannot_take_is_refused(key):
    from ann import models

    config = load_config("digits_mlp")
    config.model = {"name": f"{__name__}:_NoDtypeNet", "width": 4}
    models.check_config(config)  # float32: nothing is lost
    config[key] = "bfloat16"
    with pytest.raises(ConfigError) as e:
        models.check_config(config)
    assert str(e.value).startswith(
        f"config key '{key}'='bfloat16': model '{__name__}:_NoDtypeNet' takes no '{key}'"
    )
    config.model.widht = 4
    config[key] = "float32"
    with pytest.raises(
        ConfigError, match="'model.widht' is not an argument.*did you mean 'model.width'"
    ):
        models.check_config(config)


def test_a_split_is_decoded_once_per_process_within_the_memo_budget(monkeypatch):
    from ann.data import sources

    monkeypatch.setattr(sources, "_decoded", sources.collections.OrderedDict())
    monkeypatch.setattr(sources, "_read_decoded", lambda path: None)  # no copy on disk either
    reads = []
    real = sources.Split.rows

    def rows(split, indices):  # counts whole-split reads (decodes)
        if len(indices) == len(split):
            reads.append(split.split)
        return real(split, indices)

    monkeypatch.setattr(sources.Split, "rows", rows)
    first = sources.load("digits", "test", cache="on")
    again = sources.load("digits", "test", cache="auto")
    assert reads == ["test"] and again.cached is first.cached  # shared, not decoded again
    assert not first.cached["image"].flags.writeable  # nobody can change what others read
    np.testing.assert_array_equal(again.rows([3, 1])["label"], first.cached["label"][[3, 1]])
    # Past the budget the least recently used split is dropped, and decoded again when asked.
    monkeypatch.setattr(sources, "MEMO_BYTES", 1)
    sources.load("digits", "train", cache="on")
    assert list(sources._decoded) == [
        (sources.os.path.abspath(first.info.data_dir), "digits", "train")
    ]
    sources.load("digits", "test", cache="on")
    assert reads == ["test", "train", "test"]


def test_a_decoded_split_is_kept_on_disk_for_the_next_process(monkeypatch, tmp_path):
    from ann.data import sources

    def new_process():
        monkeypatch.setattr(sources, "_decoded", sources.collections.OrderedDict())

    new_process()
    first = sources.load("digits", "test", data_dir=str(tmp_path), cache="on")
    want = {k: np.array(v) for k, v in first.cached.items()}
    decoded = tmp_path / "digits" / str(first.info.version) / "decoded"
    (copy,) = decoded.iterdir()
    assert copy.stat().st_mode & 0o777 == 0o755  # readable by a shared data dir's other users
    # The next process maps the arrays from disk: nothing is decoded again.
    new_process()
    with monkeypatch.context() as m:
        m.setattr(sources.Split, "cache", lambda split: pytest.fail("decoded again"))
        again = sources.load("digits", "test", data_dir=str(tmp_path), cache="on")
    assert set(again.cached) == set(want)
    for key, value in want.items():
        assert again.cached[key].dtype == value.dtype and not again.cached[key].flags.writeable
        np.testing.assert_array_equal(again.cached[key], value)
    # A damaged copy is decoded again and replaced.
    (copy / "0.npy").unlink()
    new_process()
    damaged = sources.load("digits", "test", data_dir=str(tmp_path), cache="on")
    np.testing.assert_array_equal(damaged.cached["image"], want["image"])
    assert (copy / "0.npy").exists() and not isinstance(damaged.cached["image"], np.memmap)
    # A rebuilt set (its files changed) is decoded again, and the old copy goes.
    info = tmp_path / "digits" / str(first.info.version) / "dataset_info.json"
    os.utime(info, ns=(0, info.stat().st_mtime_ns + 10**9))
    new_process()
    sources.load("digits", "test", data_dir=str(tmp_path), cache="on")
    (rebuilt,) = decoded.iterdir()
    assert rebuilt.name != copy.name and rebuilt.name.startswith("test.")
    # A copy that cannot be written is no copy: no half-written directory, the split still loads.
    shutil.rmtree(decoded)
    new_process()
    monkeypatch.setattr(sources.np, "save", lambda *a, **k: (_ for _ in ()).throw(OSError(28)))
    split = sources.load("digits", "test", data_dir=str(tmp_path), cache="on")
    assert list(decoded.iterdir()) == [] and len(split.rows([0, 1])["label"]) == 2


def test_data_cache_auto_holds_only_splits_under_the_limit(monkeypatch, tmp_path):
    from ann.data import sources

    split = sources.load("digits", "train", cache="auto")
    # Each row: an 8x8x1 uint8 image, an int64 label, an int32 writer group and row id.
    row = 64 + 8 + 4 + 4
    size = len(split) * row
    assert sources.decoded_bytes(split.info, "train") == size
    assert sources.decoded_bytes(split.info, "train[:50%]") == len(split) // 2 * row
    assert split.cached is not None  # far under the 1 GiB limit
    monkeypatch.setattr(sources, "CACHE_LIMIT_BYTES", size - 1)  # a set just too large
    assert sources.load("digits", "train", cache="auto").cached is None  # streams
    assert sources.load("digits", "train", cache="on").cached is not None
    assert sources.load("digits", "test", cache="auto").cached is not None  # smaller: fits
    assert sources.load("digits", "test", cache="off").cached is None
    assert config_lib.base().data.cache == "auto"
    config = tiny()
    config.data.cache = "yes"
    with pytest.raises(ConfigError, match="'data.cache' is 'yes'; choose one of auto, on, off"):
        config_lib.validate(config, num_devices=4)
    # A run written when data.cache was a bool still reads and validates.
    config.data.cache = "auto"
    config_lib.write(config, str(tmp_path))
    values = json.loads((tmp_path / "config.json").read_text())
    values["data"]["cache"] = False
    (tmp_path / "config.json").write_text(json.dumps(values))
    assert config_lib.read(str(tmp_path)).data.cache == "off"


def test_one_dotted_key_lookup_with_did_you_mean():
    config = load_config("digits_mlp")
    assert config_lib.lookup(config, "optimizer.learning_rate") == config.optimizer.learning_rate
    with pytest.raises(KeyError) as e:
        config_lib.lookup(config, "optimizer.lerning_rate")
    assert e.value.hint == " (did you mean 'optimizer.learning_rate'?)"
    with pytest.raises(KeyError) as e:
        config_lib.lookup(config, "optimizer.zzz")
    assert e.value.hint.startswith("; keys under 'optimizer': accumulate_steps, b1, b2")
    with pytest.raises(KeyError) as e:
        config_lib.lookup(config, "batch_size.x")  # a value, not a section
    assert e.value.hint == "; keys under 'batch_size': none"
    # The config's check names the whole key, as a sweep axis does (the same lookup).
    # Its fix is the flag meant, with the value given (the hint alone had it retyped).
    config.optimizer.lerning_rate = 0.1
    with pytest.raises(ConfigError, match=r"\(did you mean 'optimizer.learning_rate'\?\); "
                       r"e.g. --config.optimizer.learning_rate=0.1$"):  # fmt: skip
        config_lib.validate(config, num_devices=4)


def test_a_misspelt_top_level_key_is_pointed_at_the_section_key():
    # `--config.lerning_rate` listed the top-level keys "under '(top)'"; the right spelling
    # lives under optimizer, as `--config.optimizer.lerning_rate` and `--config.lr` are told.
    config = load_config("digits_cnn")
    for key, meant in [
        ("lerning_rate", "optimizer.learning_rate"),
        ("warmup_step", "optimizer.warmup_steps"),
        ("metrc", "early_stopping.metric"),
        ("bach_size", "batch_size"),
    ]:
        with pytest.raises(KeyError) as e:
            config_lib.lookup(config, key)
        assert e.value.hint == f" (did you mean '{meant}'?)", key
    with pytest.raises(KeyError) as e:  # nothing close: the top-level keys, called that
        config_lib.lookup(config, "zzz")
    assert e.value.hint.startswith("; top-level keys: async_checkpointing, batch_size")
    with pytest.raises(KeyError) as e:  # under a named section, that section's keys
        config_lib.lookup(config, "mesh.model")
    assert e.value.hint == "; keys under 'mesh': data, fsdp, tensor"
    config.lerning_rate = 0.01
    with pytest.raises(ConfigError) as e:
        config_lib.validate(config, num_devices=4)
    assert str(e.value) == (
        "config key 'lerning_rate' is unknown (did you mean 'optimizer.learning_rate'?); "
        "e.g. --config.optimizer.learning_rate=0.01"
    )


def test_a_suggestion_names_a_key_that_exists():
    # `optimzer.lr` was "did you mean 'optimizer.lr'?" (the section respelt, not its key), and
    # that rerun "did you mean 'optimizer.learning_rate'?": every part is respelt at once.
    config = load_config("digits_cnn")
    for key, meant in [
        ("optimzer.lr", "optimizer.learning_rate"),
        ("optimzer.lerning_rte", "optimizer.learning_rate"),
        ("optimizer.lr", "optimizer.learning_rate"),
        ("erly_stopping.patiense", "early_stopping.patience"),
        ("early_stopping.patiense.x", "early_stopping.patience"),  # through a value
    ]:
        with pytest.raises(KeyError) as e:
            config_lib.lookup(config, key)
        assert e.value.hint == f" (did you mean '{meant}'?)", key
        config_lib.lookup(config, meant)  # the key suggested exists


def test_a_top_level_name_that_sections_hold_is_pointed_at_each():
    # `--config.name=x` listed the ~30 top-level keys: `name` is a key of several sections.
    config = load_config("digits_cnn")
    with pytest.raises(KeyError) as e:
        config_lib.lookup(config, "name")
    assert e.value.hint == " (did you mean 'data.name', 'model.name' or 'optimizer.name'?)"
    config.name = "x"
    with pytest.raises(ConfigError) as e:
        config_lib.validate(config, num_devices=4)
    assert str(e.value) == (
        "config key 'name' is unknown (did you mean 'data.name', 'model.name' or 'optimizer.name'?)"
    )


def test_a_near_model_argument_is_the_fix_not_dropping_it():
    # "did you mean 'model.features'?); it accepts: ... (drop it from the config ...)": the
    # advice to drop it beside a misspelling; it is the advice only where nothing is near.
    from ann import models

    config = load_config("digits_cnn")
    config.model.featurs = 3
    with pytest.raises(ConfigError) as e:
        models.check_config(config)
    assert str(e.value) == (
        "config key 'model.featurs' is not an argument of model 'cnn' (did you mean "
        "'model.features'?); it accepts: features, dense, dropout; e.g. "
        '--config.model.features="(3,)"'
    )
    del config.model.featurs
    config.model.zzzz = 3
    with pytest.raises(ConfigError) as e:
        models.check_config(config)
    assert str(e.value) == (
        "config key 'model.zzzz' is not an argument of model 'cnn'; it accepts: features, "
        "dense, dropout (drop it from the config or the command line)"
    )


@pytest.mark.parametrize(
    "batch_size, accumulate_steps", [(30, 1), (30, 2), (36, 4), (2, 2), (100, 4)]
)
def test_a_batch_size_suggestion_is_accepted(batch_size, accumulate_steps):
    # batch_size=30 with 2 micro-batches suggested 28, which the micro-batch check then
    # refused (28 does not split into 2 x 4 devices); that check suggested nothing.
    config = load_config("digits_mlp")
    config.batch_size, config.optimizer.accumulate_steps = batch_size, accumulate_steps
    with pytest.raises(ConfigError) as e:
        config_lib.validate(config, num_devices=4)
    suggested = re.search(r"e\.g\. --config\.batch_size=(\d+)$", str(e.value))
    assert suggested, str(e.value)
    config.batch_size = int(suggested.group(1))
    config_lib.validate(config, num_devices=4)


def test_a_config_file_gives_its_own_sharding_rules_as_the_readme_shows():
    # ConfigDict fixed the key's type at its default, "fsdp": the README's
    # `c.sharding_rules = ((regex, placement), ...)` was refused ("cannot be casted to str").
    c = config_lib.base()
    rules = (("embed/embedding$", ("tensor", "fsdp")), (".*", "fsdp"))
    c.sharding_rules = rules
    assert c.sharding_rules == rules
    c.sharding_rules = "replicate"  # and back to a preset
    assert c.sharding_rules == "replicate"
    c.sharding_rules = rules
    again = config_lib.from_values(json.loads(config_lib.to_json(c)))  # config.json's way back
    assert json.dumps(again.sharding_rules) == json.dumps(rules)


@pytest.mark.parametrize(
    "overrides, message",
    [
        # It kept the highest validation loss of the run (step 20 of 100).
        (
            {"best_metric": "val/loss"},
            "config key 'best_metric' is 'val/loss', better lower, "
            "with best_mode='max': it would keep the worst value; set --config.best_mode=min",
        ),
        (
            {"early_stopping.metric": "val/loss", "early_stopping.patience": 3},
            "set --config.early_stopping.mode=min",
        ),
        ({"best_mode": "min"}, "'val/accuracy', better higher, with best_mode='min'"),
        # Accepted, and profiled nothing.
        ({"profile_steps": (900, 5), "total_steps": 20}, "'profile_steps' starts at step 900"),
        # Adam's state turned non-finite at step 2.
        ({"param_dtype": "float16"}, "config key 'param_dtype' is 'float16' with optimizer"),
    ],
)
def test_settings_that_would_train_wrong_are_refused(overrides, message):
    config = load_config("digits_mlp")
    for key, value in overrides.items():
        section, _, leaf = key.rpartition(".")
        (config[section] if section else config)[leaf] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_lib.validate(config, num_devices=None)
    config_lib.validate(load_config("digits_mlp"), num_devices=None)  # the file itself passes


def test_device_counts_are_said_in_plain_words():
    # "needs 2 devices but 1 are available"; "micro-batches of a multiple of 1 devices".
    import jax

    from ann import parallel

    with pytest.raises(ConfigError) as e:
        parallel.make_mesh({"data": 2}, jax.devices()[:1])
    assert "needs 2 devices, not the 1 this run has (it uses them all)" in str(e.value)
    config = load_config("digits_mlp")
    config.batch_size, config.optimizer.accumulate_steps = 31, 2
    with pytest.raises(ConfigError) as e:
        config_lib.validate(config, num_devices=1)
    assert "2 micro-batches, each a multiple of the 1 device;" in str(e.value), str(e.value)


def test_mesh_axes_that_do_not_divide_the_devices_name_a_fix():
    # `--config.mesh.fsdp=3` on 4 devices said only "fixed axes use 3 devices, which does not
    # divide the 4 available".
    from ann import parallel

    four = [object()] * 4  # only counted before the mesh is made
    with pytest.raises(ConfigError) as e:
        parallel.make_mesh({"data": -1, "fsdp": 3, "tensor": 1}, four)
    assert str(e.value) == (
        "config key 'mesh': fixed axes use 3 devices, which does not divide the 4 available; "
        "use sizes whose product divides 4 (1, 2 or 4), e.g. --config.mesh.fsdp=2"
    )
    with pytest.raises(ConfigError, match=r"divides 4 \(1, 2 or 4\), e.g. --config.mesh.tensor=2$"):
        parallel.make_mesh({"data": -1, "fsdp": 1, "tensor": 3}, four)
    with pytest.raises(ConfigError, match=r"e.g. --config.mesh.fsdp=1$"):
        parallel.make_mesh({"data": -1, "fsdp": 3, "tensor": 4}, four)


def test_a_model_switched_on_the_command_line_leaves_out_the_files_own_arguments():
    """`--config=configs/digits_cnn.py --config.model.name=mlp` was refused for the file's
    model.dense, which no flag can unset (and a sweep over model.name could not run): the file's
    keys the new model does not take are left out, with a note; the command line's are judged."""
    from test_cli import ann

    from ann.sweep.definition import checked

    result = ann("transfer", "--config=configs/digits_cnn.py", "--config.model.name=mlp")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.splitlines()[0] == (
        "note: --config.model.name=mlp replaces cnn: left out the config file's model.dense "
        "(cnn's arguments, not mlp's); kept model.dropout=0.5, model.features=(32, 64), which "
        "mlp takes too"
    )
    assert result.stdout.startswith("path\tshape\tdtype\tupdate\nhead/bias\t(10,)")
    config = checked("configs/digits_cnn.py", {"model.name": "mlp"})  # a sweep's trial
    assert "dense" not in config.model and tuple(config.model.features) == (32, 64)
    with pytest.raises(ConfigError, match="'model.dense' is not an argument of model 'mlp'"):
        checked("configs/digits_cnn.py", {"model.name": "mlp", "model.dense": 4})
