"""The validation metrics `ann.config` offers in a refusal (`experiments.metric_names`, known from
the config alone) against what a run computes: one scored validation batch of every shipped
config, so the static lists cannot drift from the experiments' `eval_metrics`."""

import pytest
from conftest import ROOT, tiny

from ann import config as config_lib
from ann.config import ConfigError

CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py"))
# Names a run adds from its data, never offered (metric_names' docstring): seq2seq's per task,
# anomaly detection's per task.breakdown group.
FROM_DATA = {
    "seq2seq": ("val/exact_match_", "val/beam_exact_match_"),
    "anomaly_detection": ("val/auroc_",),
}
# Settings that change what is logged (config alone): a beam, the regression baseline off.
SETTINGS = [
    ("digit_seq2seq", {"task.eval_beam_size": 2}),
    ("diabetes_mlp", {"task.baseline": False}),
]


@pytest.mark.slow  # one validation batch scored per shipped config: ~55 s in all
@pytest.mark.parametrize(("name", "overrides"), [(n, {}) for n in CONFIGS] + SETTINGS)
def test_the_listed_metrics_are_those_one_scored_validation_batch_gives(name, overrides):
    from ann.train import loop

    config = tiny(name, num_epochs=0, **overrides)  # tiny() trains by steps
    listed = config_lib.logged_validation_metrics(config)
    scored = loop.validation_names(config)
    extra = FROM_DATA.get(config.experiment, ())
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
