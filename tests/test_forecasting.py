"""Forecasting: the generated sensor data sets, LSTM/GRU forecasters, learning to beat the
seasonal-naive baseline, export, and config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config, tiny
from flax import nnx

from ann import artifact, data, models
from ann import config as ann_config
from ann import experiment as experiment_lib
from ann.config import ConfigError
from ann.data import sensor_series
from ann.export import export
from ann.train.build import restore_model
from ann.train.loop import train_and_evaluate


@pytest.fixture(scope="module")
def series_train():
    return data.load("sensor_series", "train", cache=True)


def test_sensor_series_windows_and_splits(series_train):
    train = series_train
    test = data.load("sensor_series", "test", cache=True)
    h, f = sensor_series.HISTORY, sensor_series.HORIZON
    c = sensor_series.SERIES_CHANNELS
    assert train.info.supervised_keys == ("history", "future")
    assert train.info.metadata["period"] == sensor_series.PERIOD == 24
    assert train.cached["history"].shape == (len(train), h, c)
    assert test.cached["future"].shape == (len(test), f, c)
    assert train.cached["history"].dtype == np.float32 and len(train) > 5 * len(test)
    # Windows of one series overlap: the next window's history continues this one's (rows are
    # stored shuffled; `series` and `start` find them).
    series, start = train.cached["series"], train.cached["start"]
    stride = sensor_series.STRIDE["train"]
    a = np.flatnonzero((series == 3) & (start == 0))[0]
    b = np.flatnonzero((series == 3) & (start == stride))[0]
    history = train.cached["history"]
    np.testing.assert_array_equal(history[a, stride:], history[b, :-stride])
    # No leakage: train and test are different series, so no test window occurs in train.
    seen = {w.tobytes() for w in train.cached["history"][:, :8]}
    assert not any(w.tobytes() in seen for w in test.cached["history"][:, :8])


def test_sensor_faults_labels_and_kinds():
    train = data.load("sensor_faults", "train", cache=True)
    test = data.load("sensor_faults", "test", cache=True)
    features = train.info.features
    assert set(features) == {"window", "label"}
    assert features["label"].names == ["normal", "fault"]
    assert train.info.supervised_keys == ("window", "label")
    w = sensor_series.FAULT_WINDOW, sensor_series.FAULT_CHANNELS
    assert train.cached["window"].shape == (1700, *w) and test.cached["window"].shape == (1000, *w)
    assert train.cached["label"].sum() == 0  # normal windows only
    fault_rate = test.cached["label"].mean()
    assert 0.15 <= fault_rate <= 0.21
    kinds = sensor_series.fault_kinds(test.cached["window"])
    np.testing.assert_array_equal(kinds > 0, test.cached["label"] == 1)
    assert set(kinds.tolist()) == set(range(len(sensor_series.FAULT_KINDS)))  # every kind occurs
    # Faults are a few noise std, not huge: fault windows stay in the normal windows' range.
    normal = train.cached["window"]
    faulty = test.cached["window"][test.cached["label"] == 1]
    assert (
        np.abs(faulty - normal.mean((0, 1))).max()
        < 1.5 * np.abs(normal - normal.mean((0, 1))).max()
    )


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_forecasters_shapes_dtypes_and_centering(name):
    kw = {"hidden_size": 8, "num_layers": 2, "dropout": 0.1, "highway": 12}
    shapes = dict(input_shape=(24, 2), output_shape=(6, 2))
    model = models.build(name, kw, **shapes, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 24, 2))
    train_out = model(x, rngs=jax.random.PRNGKey(1))
    model.eval()
    out = model(x)
    assert out.shape == train_out.shape == (4, 6, 2) and out.dtype == jnp.float32
    assert not np.allclose(out, train_out)  # dropout is on in training only
    assert not jax.tree.leaves(nnx.state(model, nnx.Not(nnx.Param)))  # pure: no RNG state
    # Centering: a level added to the whole history moves the forecast by the same level.
    np.testing.assert_allclose(model(x + 5.0), out + 5.0, atol=1e-4)
    half = models.build(name, {**kw, "dtype": jnp.bfloat16}, **shapes, rngs=nnx.Rngs(0))
    half.eval()
    assert half(x).dtype == jnp.bfloat16
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(half, nnx.Param)))
    # bfloat16 parameters: the recurrent kernels' orthogonal init (a QR) had no bfloat16
    # kernel ("Unsupported dtype bfloat16"): drawn in float32, then cast.
    low = models.build(name, {**kw, "param_dtype": jnp.bfloat16}, **shapes, rngs=nnx.Rngs(0))
    low_params = jax.tree.leaves(nnx.state(low, nnx.Param))
    assert {p.dtype for p in low_params} == {jnp.dtype(jnp.bfloat16)}
    low.eval()
    assert np.isfinite(np.asarray(low(x), np.float32)).all()


def sensors(arg=None, **overrides):
    config = tiny("sensors_lstm", **overrides)
    if arg:  # the config's `:gru` variant differs from the default in the model's name only
        config.model.name = load_config("sensors_lstm", arg).model.name
    return config


def test_one_gru_step_runs(tmp_path):  # the LSTM runs in test_experiments.py
    config = sensors("gru", total_steps=1, **{"model.hidden_size": 8})
    result = train_and_evaluate(config, str(tmp_path))
    metrics = result.eval_metrics
    assert result.step == 1
    for key in ("loss", "mae", "rmse", "naive_mae", "naive_rmse", "mae_ratio"):
        assert np.isfinite(metrics[f"eval/{key}"]), key
    assert metrics["eval/rmse"] >= metrics["eval/mae"] > 0
    assert metrics["eval/mae_ratio"] == pytest.approx(
        metrics["eval/mae"] / metrics["eval/naive_mae"]
    )


def test_eval_ignores_padding_rows(series_train):
    config = sensors(**{"model.hidden_size": 8})
    exp = experiment_lib.get("forecasting")(config)
    exp.setup(series_train)
    model = exp.build_model(nnx.Rngs(0))
    model.eval()
    rows = exp.fields(data.load("sensor_series", "test", cache=True).rows(np.arange(8)))
    real = {**rows, "mask": np.ones(8, np.float32)}
    padded = {k: np.concatenate([v, 100 * np.ones_like(v[:4])]) for k, v in rows.items()}
    padded["mask"] = np.r_[np.ones(8), np.zeros(4)].astype(np.float32)
    a, b = (
        exp.eval_metrics(exp.eval_sums(model, real)),
        exp.eval_metrics(exp.eval_sums(model, padded)),
    )
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-5), key


@pytest.mark.slow
def test_lstm_beats_seasonal_naive_and_exports(tmp_path):
    config = sensors(total_steps=300, batch_size=64, eval_every_steps=300)
    workdir = tmp_path / "run"
    result = train_and_evaluate(config, str(workdir))
    metrics = result.eval_metrics
    assert metrics["eval/mae_ratio"] < 0.95, metrics
    assert metrics["eval/naive_mae"] == pytest.approx(
        _numpy_naive_mae(data.load("sensor_series", "test", cache=True)), rel=1e-4
    )
    # The export carries the standardization: it predicts in the data's units, as training does.
    out = tmp_path / "export"
    manifest = export(str(workdir), str(out))
    assert manifest["inputs"] == {"history": {"dtype": "float32", "shape": [-1, 96, 3]}}
    assert manifest["outputs"] == {"forecast": {"dtype": "float32", "shape": [-1, 24, 3]}}
    loaded = artifact.load(str(out))
    experiment, trained, _, _ = restore_model(str(workdir), "best")
    test = data.load("sensor_series", "test", cache=True).rows(np.arange(16))
    got = loaded({"history": test["history"]})["forecast"]
    want = jax.device_get(experiment.predict(trained, {"history": test["history"]}))["forecast"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(got - test["future"]).mean() < np.abs(got).mean()  # original units, not scaled


def _numpy_naive_mae(split) -> float:
    history, future = split.cached["history"], split.cached["future"]
    period = sensor_series.PERIOD
    naive = history[:, -period:][:, : future.shape[1]]
    return float(np.abs(naive - future).mean())


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model.hidden_size": 0}, "model.hidden_size"),
        ({"model.num_layers": -1}, "model.num_layers"),
        ({"model.highway": 200}, "model.highway"),
        ({"model.dropout": 1.0}, "model.dropout"),
        ({"task.loss": "huber"}, "task.loss"),
        ({"task.period": 500}, "task.period"),
    ],
)
def test_bad_config_is_a_config_error(series_train, overrides, message):
    config = sensors(**overrides)
    with pytest.raises(ConfigError, match=message):
        ann_config.validate(config, 1)  # ranges written once in config.RANGES (model.dropout)
        exp = experiment_lib.get("forecasting")(config)
        exp.setup(series_train)
        exp.build_model(nnx.Rngs(0))


def test_unknown_model_key_is_a_config_error(series_train):
    config = sensors()
    config.model.cell = "rnn"  # the cell is the model's name (lstm, gru), not a key
    exp = experiment_lib.get("forecasting")(config)
    exp.setup(series_train)
    with pytest.raises(ConfigError, match="model.cell"):
        exp.build_model(nnx.Rngs(0))


def test_a_period_longer_than_the_history_names_the_fix_for_the_flag_and_the_file(
    series_train, tmp_path
):
    # It said only what was wrong; unset (0) reads the data set's own period, which fits.
    from ann.config_file import key_error

    exp = experiment_lib.get("forecasting")(sensors(**{"task.period": 500}))
    with pytest.raises(ConfigError) as e:
        exp.setup(series_train)
    said = str(e.value)
    assert said.endswith("needs one period; set --config.task.period=0 (the data set's own, 24)")
    path = tmp_path / "long.py"
    path.write_text("def get_config():\n    c = base()\n    c.task.period = 500\n")
    assert str(key_error(e.value, str(path), ())) == (
        f"--config={path} line 3: config key 'task.period'=500 is longer than the history (96 "
        "steps); the seasonal-naive baseline needs one period; drop the line (the data set's own "
        "period, 24, is read)"
    )
