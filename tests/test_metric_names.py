"""The validation metrics `ann.config` offers in a refusal (`experiments.metric_names`, known from
the config alone) against what a run computes: one scored validation batch of every shipped
config, so the static lists cannot drift from the experiments' `eval_metrics`."""

import pytest
from conftest import ROOT, tiny

from ann import config as config_lib
from ann.config import ConfigError

CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py"))
# Settings that change what is logged (config alone): a beam, the regression baseline off.
SETTINGS = [
    ("digit_seq2seq", {"task.eval_beam_size": 2}),
    ("diabetes_mlp", {"task.baseline": False}),
]


@pytest.mark.slow  # one validation batch scored per shipped config: ~55 s in all
@pytest.mark.parametrize(("name", "overrides"), [(n, {}) for n in CONFIGS] + SETTINGS)
def test_the_listed_metrics_are_those_one_scored_validation_batch_gives(name, overrides):
    from ann.train import loop
    from experiments import metric_names

    config = tiny(name, num_epochs=0, **overrides)  # tiny() trains by steps
    listed = config_lib.logged_validation_metrics(config)
    scored = loop.validation_names(config)
    # Names a run adds from its data (seq2seq's per task, anomaly detection's per
    # task.breakdown group) are neither offered nor refused: metric_names.from_data.
    extra = metric_names.from_data(config)
    assert sorted(n for n in scored if not n.startswith(extra)) == listed


def test_every_named_experiment_lists_its_metrics():
    from ann import experiment
    from experiments import metric_names

    assert set(metric_names.VALIDATION_METRICS) == set(experiment.EXPERIMENTS)


def test_a_metric_without_val_is_told_only_metrics_the_run_logs():
    # `--config.best_metric=nope` was told "use 'val/nope'", a metric nothing computes: the
    # next run was refused too. Now the closest logged metric, or the list of them.
    for key in ("best_metric", "early_stopping.metric"):
        with pytest.raises(ConfigError) as e:
            config_lib.validate(tiny("digits_cnn", **{key: "nope"}), num_devices=1)
        assert str(e.value).endswith(
            "choose one of val/accuracy, val/auroc, val/f1, val/loss, val/precision, "
            "val/recall (metrics of data.validation_split)"
        ), e.value
    with pytest.raises(ConfigError, match="'acuracy', which names no split.*use 'val/accuracy'"):
        config_lib.validate(tiny("digits_cnn", best_metric="acuracy"), num_devices=1)
    # A retrieval run logs no val/accuracy: its own metrics are offered.
    with pytest.raises(ConfigError, match="'train/acc'.*: choose one of val/loss, val/map, "):
        config_lib.validate(tiny("digits_retrieval", best_metric="train/acc"), num_devices=1)
    # A user's experiment: what it logs is not known before it scores, so no name is invented.
    with pytest.raises(ConfigError, match="use a val/NAME metric the experiment logs"):
        config_lib.check_selection_metric("--metric", "nope", lambda: None)


def test_a_typo_of_a_logged_metric_is_refused_from_the_config_with_the_name_meant():
    # `--config.best_metric=val/acuracy` passed the config check and was refused only at the
    # run's start, once a validation batch was scored, and with no "did you mean".
    logged = "val/accuracy, val/auroc, val/f1, val/loss, val/precision, val/recall"
    for key, typo, meant in [
        ("best_metric", "val/acuracy", "val/accuracy"),
        ("early_stopping.metric", "val/Loss", "val/loss"),
    ]:
        with pytest.raises(ConfigError) as e:
            config_lib.validate(tiny("digits_cnn", **{key: typo}), num_devices=None)
        assert str(e.value) == (
            f"config key '{key}': '{typo}' is not a validation metric of this run (did you "
            f"mean '{meant}'?); choose one of {logged}"
        )
    # By the name after val/: 'val/xyz' is close to no metric (the shared 'val/' made it close
    # to 'val/f1'): no name is offered, but the run's config is whole, so it is refused here
    # too, not at the run's start (a regression run's val/accuracy, digits_mlp's default, was
    # refused only once the data set was read, naming no line of the config file).
    with pytest.raises(ConfigError) as e:
        config_lib.validate(tiny("digits_cnn", best_metric="val/xyz"), num_devices=None)
    assert str(e.value) == (
        f"config key 'best_metric': 'val/xyz' is not a validation metric of this run; choose one "
        f"of {logged}"
    )


def test_a_metric_named_from_the_data_is_not_taken_for_a_typo():
    # val/auroc_8 (digits_autoencoder's breakdown by digit) and a seq2seq task's exact match
    # are close to val/auroc and val/exact_match, but logged by runs whose data has them.
    for name, metric in [
        ("digits_autoencoder", "val/auroc_8"),
        ("digit_seq2seq", "val/exact_match_add"),
    ]:
        config_lib.validate(tiny(name, best_metric=metric), num_devices=None)
    # Without the breakdown there is no per-group auroc: the typo check holds again.
    config = tiny("digits_autoencoder", best_metric="val/auroc_8", **{"task.breakdown": ""})
    with pytest.raises(ConfigError, match=r"'val/auroc_8' .*\(did you mean 'val/auroc'\?\)"):
        config_lib.validate(config, num_devices=None)


def test_the_runs_own_refusal_names_the_metric_meant():
    # A user's experiment's metrics are known only once a batch is scored: the run's start
    # said the list alone of a typo.
    from ann.train import hooks

    with pytest.raises(ConfigError) as e:
        hooks.eval_metric({"val/score": 1.0, "val/loss": 1.0}, "val/scor", "config key 'x'")
    assert str(e.value) == (
        "config key 'x': 'val/scor' is not a validation metric of this run (did you mean "
        "'val/score'?); choose one of val/loss, val/score"
    )


def test_a_metric_the_run_does_not_log_is_said_before_its_mode():
    # A regression run with best_metric=val/accuracy was told to set best_mode=max, and only
    # with that set, that val/accuracy is not a metric of the run.
    config = tiny("diabetes_mlp", best_metric="val/accuracy", best_mode="min", num_epochs=0)
    with pytest.raises(ConfigError) as e:
        config_lib.validate(config, num_devices=None)
    assert str(e.value) == (
        "config key 'best_metric': 'val/accuracy' is not a validation metric of this run; "
        "choose one of val/baseline_rmse, val/loss, val/mae, val/r2, val/rmse, val/rmse_ratio"
    )
    stopping = {"early_stopping.metric": "val/accuracy", "early_stopping.mode": "min"}
    config = tiny("diabetes_mlp", num_epochs=0, **stopping)
    with pytest.raises(ConfigError, match="'early_stopping.metric': 'val/accuracy' is not a val"):
        config_lib.validate(config, num_devices=None)
