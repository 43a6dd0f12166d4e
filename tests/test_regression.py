"""Regression: the offline diabetes data set, metrics against scikit-learn over a restored model,
the least squares baseline in eval, export, config errors, and the shipped config beating OLS."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config, tiny
from flax import nnx

from ann import artifact, data, models
from ann.config import ConfigError
from ann.export import export
from ann.train.build import restore_model
from ann.train.loop import train_and_evaluate
from experiments.regression import Regression


def test_diabetes_builder_shapes_and_split():
    from sklearn.datasets import load_diabetes

    train = data.load("diabetes", "train", cache=True)
    test = data.load("diabetes", "test", cache=True)
    val = data.load("diabetes", "validation", cache=True)
    features = train.info.features
    assert train.info.supervised_keys == ("features", "target")
    assert features["features"].shape == (10,) and features["features"].np_dtype == np.float32
    assert features["target"].shape == () and features["target"].np_dtype == np.float32
    assert len(train) == 300 and len(val) == 53 and len(test) == 89
    assert train.cached["features"].shape == (300, 10) and test.cached["target"].shape == (89,)
    # Every patient once, in the original (unscaled) units.
    source = load_diabetes(scaled=False)
    both = np.concatenate([s.cached["features"] for s in (train, val, test)])
    np.testing.assert_allclose(
        both[np.lexsort(both.T)], source.data[np.lexsort(source.data.T)], rtol=1e-6
    )
    # Stratified on target deciles: each decile has 8 or 9 of the 89 test rows.
    target = np.concatenate([s.cached["target"] for s in (train, val, test)])
    edges = np.quantile(target, np.linspace(0, 1, 11)[1:-1])
    counts = np.bincount(np.digitize(test.cached["target"], edges), minlength=10)
    assert counts.min() >= 8 and counts.max() <= 9


def test_mlp_linear_skip_adds_a_linear_path():
    kw = {"features": (8,), "linear_skip": True, "dtype": jnp.bfloat16}
    model = models.build("mlp", kw, input_shape=(10,), num_classes=1, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 10))
    out = model(x)
    assert out.shape == (4, 1) and out.dtype == jnp.bfloat16
    # With the hidden path's head at zero, the model is exactly its linear path.
    model.head.kernel.value = jnp.zeros_like(model.head.kernel.value)
    model.head.bias.value = jnp.zeros_like(model.head.bias.value)
    np.testing.assert_allclose(
        np.asarray(model(x), np.float32), np.asarray(model.skip(x), np.float32)
    )
    plain = models.build(
        "mlp", {"features": (8,)}, input_shape=(10,), num_classes=1, rngs=nnx.Rngs(0)
    )
    assert plain.skip is None
    with pytest.raises(ConfigError, match="'model.norm' is 'group'"):
        models.build("mlp", {"norm": "group"}, input_shape=(10,), num_classes=1, rngs=nnx.Rngs(0))


def test_metrics_equal_scikit_learn_over_the_restored_model_and_export(tmp_path):
    """The loop's eval metrics, gathered over padded batches (eval batch 24 does not divide the
    89 test rows), equal scikit-learn's over the restored model's predictions; the baseline is
    scikit-learn's LinearRegression fit on the train split; the export predicts the same."""
    from sklearn import metrics as sk
    from sklearn.linear_model import LinearRegression

    config = tiny("diabetes_mlp", num_epochs=None, total_steps=20, eval_batch_size=24)
    result = train_and_evaluate(config, str(tmp_path / "run"))
    experiment, model, step, _ = restore_model(str(tmp_path / "run"), "best")
    assert step == 20
    train = data.load("diabetes", "train", cache=True).cached
    test = data.load("diabetes", "test", cache=True).cached
    predicted = jax.device_get(experiment.predict(model, {"features": test["features"]}))
    prediction, target = predicted["prediction"], test["target"]
    assert prediction.shape == (89,) and prediction.dtype == np.float32
    got = {k.removeprefix("eval/"): v for k, v in result.eval_metrics.items()}
    assert got["rmse"] == pytest.approx(sk.root_mean_squared_error(target, prediction), 1e-6)
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(target, prediction), 1e-6)
    assert got["r2"] == pytest.approx(sk.r2_score(target, prediction), abs=1e-6)
    # The loss is the MSE of the standardized target (train split statistics).
    scaled_mse = np.mean(np.square(prediction - target)) / train["target"].std() ** 2
    assert got["loss"] == pytest.approx(scaled_mse, 1e-4)
    ols = LinearRegression().fit(train["features"].astype(np.float64), train["target"])
    baseline = sk.root_mean_squared_error(target, ols.predict(test["features"]))
    assert got["baseline_rmse"] == pytest.approx(baseline, 1e-5)
    assert got["rmse_ratio"] == pytest.approx(got["rmse"] / baseline, 1e-5)

    manifest = export(str(tmp_path / "run"), str(tmp_path / "export"))
    assert manifest["inputs"] == {"features": {"dtype": "float32", "shape": [-1, 10]}}
    assert manifest["outputs"] == {"prediction": {"dtype": "float32", "shape": [-1]}}
    assert manifest["metrics"]["eval/rmse"] == pytest.approx(got["rmse"])
    loaded = artifact.load(str(tmp_path / "export"))
    np.testing.assert_allclose(
        loaded({"features": test["features"][:7]})["prediction"], prediction[:7], rtol=1e-5
    )


def test_huber_loss_in_bfloat16_runs_a_step(tmp_path):
    config = tiny(
        "diabetes_mlp",
        num_epochs=None,
        total_steps=1,
        dtype="bfloat16",
        **{"task.loss": "huber", "task.huber_delta": 1.5, "model.norm": "layer"},
    )
    result = train_and_evaluate(config, str(tmp_path))
    metrics = result.eval_metrics
    assert result.step == 1 and np.isfinite(metrics["eval/loss"])
    assert metrics["eval/rmse"] > 0 and metrics["eval/baseline_rmse"] > 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"task.loss": "l1"}, "'task.loss' is 'l1'; choose one of mse, huber"),
        ({"task.huber": 1.0}, "'task.huber' is unknown.*did you mean 'task.huber_delta'"),
        ({"task.baseline": "yes"}, "'task.baseline' must be bool"),
    ],
)
def test_bad_task_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        Regression(tiny("diabetes_mlp", **overrides))


def test_a_huber_delta_without_the_huber_loss_is_refused():
    # It was accepted with the mse loss, which never reads it.
    from ann import config as config_lib

    config = tiny("diabetes_mlp", **{"task.huber_delta": 2.0})
    with pytest.raises(ConfigError) as e:
        config_lib.check_task_keys_apply(config, Regression(config))
    assert str(e.value) == (
        "config key 'task.huber_delta'=2.0 has no effect with task.loss='mse' (read only by "
        "huber); drop --config.task.huber_delta or set --config.task.loss=huber"
    )
    config.task.loss = "huber"
    config_lib.check_task_keys_apply(config, Regression(config))


def test_a_class_label_target_is_refused():
    experiment = Regression(tiny("breast_cancer_mlp", experiment="regression"))
    with pytest.raises(ConfigError, match="'label' of 'breast_cancer' is not a float target"):
        experiment.setup(data.load("breast_cancer", "train"))


@pytest.mark.slow
def test_diabetes_config_beats_least_squares(tmp_path):
    """The shipped config, its whole budget (200 epochs): the last step's test RMSE is below
    the OLS baseline's."""
    config = load_config("diabetes_mlp")
    result = train_and_evaluate(config, str(tmp_path))
    metrics = result.eval_metrics
    assert result.step == 1875  # 200 epochs of 300 rows (the train split less validation)
    assert metrics["eval/rmse_ratio"] < 1.0, metrics
    assert metrics["eval/r2"] > 0.55


def test_bfloat16_parameters_keep_their_dtype_from_step_to_step(tmp_path):
    # float32 hyperparameters promoted the optimizer's moments to float32, and the loop of
    # steps in one call (or the next call) refused the changed types: a traceback at step 1.
    import jax

    # With clipping on, optax's select of a float32-scaled and a bfloat16 gradient did not trace.
    config = tiny("digits_mlp", param_dtype="bfloat16", dtype="bfloat16", total_steps=6,
                  steps_per_call=3, **{"optimizer.warmup_steps": 0,
                                       "optimizer.grad_clip_norm": 0.01})  # fmt: skip
    result = train_and_evaluate(config, str(tmp_path))
    assert result.step == 6 and np.isfinite(result.eval_metrics["eval/loss"])
    dtypes = {x.dtype.name for x in jax.tree.leaves(result.state.params)}
    assert dtypes == {"bfloat16"}, dtypes
    # Its export loads and answers (safetensors.numpy.load has no BF16: the loader said
    # "weights.safetensors cannot be deserialized ('BF16')" for every such export).
    from ann import artifact
    from ann.export import export

    export(str(tmp_path), str(tmp_path / "export"), calibration="none")
    model = artifact.load(str(tmp_path / "export"))
    assert {w.dtype.name for w in artifact.load_weights(str(tmp_path / "export")).values()} == {
        "bfloat16"
    }
    images = np.zeros((2, 8, 8, 1), np.uint8)
    assert model({"image": images})["probabilities"].shape == (2, 10)
