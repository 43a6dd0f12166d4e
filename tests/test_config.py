"""A bad config fails before anything compiles, in one line naming the key and the fix."""

import json
import subprocess
import sys

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
        (lambda c: c.update({"eval_batch_size": -8}), "'eval_batch_size' must be >= 0"),
        (lambda c: c.update({"batch_size": 30}), "not divisible by the 4 devices"),
        (lambda c: c.optimizer.update({"name": "adamm"}), "'optimizer.name' is 'adamm'; choose"),
        (lambda c: c.update({"num_epochs": 2}), "exactly one of config keys 'total_steps'"),
        (lambda c: c.update({"log_every_steps": 0}), "'log_every_steps' must be > 0"),
        (lambda c: c.model.update({"name": ""}), "'model.name' is empty"),
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
        (
            {"data.validation_split": "valid"},
            "config key 'data.validation_split': data set 'digits' has no split 'valid'",
        ),
        ({"experiment": "regresion"}, "unknown experiment 'regresion'"),
    ],
)
def test_unknown_names_fail_before_compiling(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(tiny(**overrides), str(tmp_path))
    assert message in str(e.value)
    assert not (tmp_path / "checkpoints").exists()


def test_wrong_type_in_a_config_that_is_not_type_safe():
    import ml_collections

    config = ml_collections.ConfigDict(load_config("digits_mlp").to_dict(), type_safe=False)
    config.eval_batch_size = "64"
    with pytest.raises(ConfigError, match="'eval_batch_size' must be int or None, got str"):
        config_lib.validate(config, num_devices=4)


def test_config_not_built_from_base():
    import ml_collections

    with pytest.raises(ConfigError, match="'experiment' is missing; start the config from"):
        config_lib.validate(ml_collections.ConfigDict({"model": {"name": "mlp"}}), 1)


def test_unknown_model_argument(tmp_path):
    config = tiny()
    config.model.widht = 3
    with pytest.raises(ConfigError, match="'model.widht' is not an argument of model 'mlp'"):
        train_and_evaluate(config, str(tmp_path))


def test_cli_reports_one_line_and_exit_code(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ann.main",
            f"--config={ROOT}/configs/digits_mlp.py",
            f"--workdir={tmp_path}",
            "--config.batch_size=30",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "error: config key 'batch_size'=30 is not divisible" in proc.stderr
    assert "Traceback" not in proc.stderr


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


def test_unknown_best_metric_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="'best_metric': 'val/acc' is not"):
        train_and_evaluate(tiny(total_steps=2, best_metric="val/acc"), str(tmp_path))


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
        config_lib.ConfigError, match="task.tempreature.*did you mean 'temperature'"
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
