"""Anomaly detection: the autoencoders, the digits_novelty data set, the experiment's metrics
(checked against scikit-learn on the restored model) and its export."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny
from flax import nnx

from ann import data, models
from ann.config import ConfigError
from ann.train.build import restore_model
from ann.train.loop import train_and_evaluate
from experiments.anomaly_detection import AnomalyDetection

BF16 = jnp.bfloat16


@pytest.mark.parametrize(
    "name, shape, kw, dtype",
    [
        ("dense_autoencoder", (64, 4), {"norm": "layer", "dropout": 0.1, "latent": 32}, BF16),
        # 1-D over time, 30 steps padded to 32 and cropped back.
        ("conv_autoencoder", (30, 4), {"features": (8, 16), "latent": 8}, BF16),
        # 2-D, odd sides, no dense bottleneck (the code is the deepest feature map).
        ("conv_autoencoder", (7, 9, 1), {"features": (8, 16), "latent": 0}, jnp.float32),
    ],
)
def test_autoencoders_reconstruct_the_input_shape(name, shape, kw, dtype):
    # Built abstractly, with parameters drawn by numpy: compiling JAX's random initializers
    # costs seconds per kernel shape on CPU. The training tests below run the real ones.
    model = nnx.eval_shape(
        lambda: models.build(name, {"dtype": dtype, **kw}, input_shape=shape, rngs=nnx.Rngs(0))
    )
    graphdef, abstract = nnx.split(model)
    draw = np.random.default_rng(0)
    state = jax.tree.map(
        lambda a: jnp.asarray(0.1 * draw.standard_normal(a.shape), a.dtype), abstract
    )
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state))
    model = nnx.merge(graphdef, state)
    model.train()
    train_def, state = nnx.split(model)
    model.eval()
    eval_def, _ = nnx.split(model)
    # Jitted: op-by-op dispatch of convolutions on 4 fake devices is slow.
    train = jax.jit(lambda x, key: nnx.merge(train_def, state)(x, rngs=key))
    apply = jax.jit(lambda x: nnx.merge(eval_def, state)(x).astype(jnp.float32))
    x = jnp.asarray(draw.standard_normal((3, *shape)), jnp.float32)
    out = train(x, jax.random.PRNGKey(1))
    assert out.shape == x.shape and out.dtype == dtype
    assert bool(jnp.isfinite(out.astype(jnp.float32)).all())
    # Rows are independent (no batch statistics): a row's reconstruction ignores the others.
    tol = 2e-2 if dtype == jnp.bfloat16 else 1e-5
    np.testing.assert_allclose(apply(x)[:1], apply(x[:1]), rtol=tol, atol=tol)


def test_model_config_mistakes_name_the_key():
    with pytest.raises(ConfigError, match="'model.latent' must be > 0"):
        models.build("dense_autoencoder", {"latent": 0}, input_shape=(8,), rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="'model.features'"):
        models.build("conv_autoencoder", {"features": ()}, input_shape=(8, 2), rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="use model.name=dense_autoencoder"):
        models.build("conv_autoencoder", {}, input_shape=(30,), rngs=nnx.Rngs(0))


def test_digits_novelty_holds_no_anomalies_in_train():
    train = data.load("digits_novelty", "train", cache=True).cached
    test = data.load("digits_novelty", "test", cache=True).cached
    digits_train = data.load("digits", "train", cache=True).cached
    digits_test = data.load("digits", "test", cache=True).cached
    assert set(np.unique(train["digit"])) == set(range(8))
    assert not train["label"].any()
    # The `digits` split, not a new one: train = its rows of digits 0-7, test = all its rows.
    keep = digits_train["label"] < 8
    assert sorted(map(bytes, train["image"])) == sorted(map(bytes, digits_train["image"][keep]))
    assert sorted(map(bytes, test["image"])) == sorted(map(bytes, digits_test["image"]))
    np.testing.assert_array_equal(test["label"], np.isin(test["digit"], (8, 9)))
    assert 0.15 < test["label"].mean() < 0.25


def test_calibration_rows_are_held_out_by_content():
    config = tiny("sensors_autoencoder")
    experiment = AnomalyDetection(config)
    train = data.load("sensor_faults", "train", cache=True)
    experiment.setup(train)
    rows = train.rows(np.arange(len(train)))
    weight = experiment.fields(rows)["weight"]
    assert set(np.unique(weight)) == {0.0, 1.0}
    assert 0.15 < 1 - weight.mean() < 0.25  # task.calibration_fraction = 0.2
    # The same rows in another order and batch: the same rows held out.
    order = np.random.default_rng(0).permutation(len(train))[:100]
    np.testing.assert_array_equal(experiment.fields(train.rows(order))["weight"], weight[order])
    # The threshold's reference rows are calibration rows, never fit.
    held_out = {bytes(r) for r in rows["window"][weight == 0]}
    assert len(experiment.reference) > 100
    assert all(bytes(r) in held_out for r in experiment.reference)


def test_task_mistakes_name_the_key():
    with pytest.raises(ConfigError, match="'task.treshold_quantile' is unknown"):
        AnomalyDetection(tiny("sensors_autoencoder", **{"task.treshold_quantile": 0.9}))
    experiment = AnomalyDetection(tiny("sensors_autoencoder", **{"task.breakdown": "kind"}))
    with pytest.raises(ConfigError, match="'task.breakdown' is 'kind', not a ClassLabel"):
        experiment.setup(data.load("sensor_faults", "train", cache=True))


def test_one_step_of_the_conv_autoencoder_on_digits(tmp_path):
    config = tiny("digits_autoencoder", total_steps=2, eval_every_steps=2)
    config.model.features = (8, 8)  # few distinct kernel shapes: initializers compile per shape
    result = train_and_evaluate(config, str(tmp_path))
    metrics = result.eval_metrics
    assert result.step == 2 and np.isfinite(metrics["eval/loss"])
    assert {"eval/auroc", "eval/auroc_8", "eval/auroc_9", "eval/f1"} <= set(metrics)


def test_sensor_autoencoder_detects_faults_and_exports(tmp_path):
    """The shipped sensor config on a small budget reaches AUROC >= 0.9; the loop's metrics,
    over padded eval batches (96 does not divide the 1000 test rows), equal scikit-learn's on
    the restored model's scores; the export computes the same scores."""
    from sklearn import metrics as sk

    from ann import artifact
    from ann.export import export

    workdir, out = tmp_path / "run", tmp_path / "export"
    config = tiny(
        "sensors_autoencoder",
        total_steps=600,
        batch_size=128,
        eval_every_steps=600,
        checkpoint_every_steps=600,
        log_every_steps=100,
        eval_batch_size=96,
    )
    result = train_and_evaluate(config, str(workdir))
    got = {k.removeprefix("eval/"): v for k, v in result.eval_metrics.items()}
    assert got["auroc"] >= 0.9, got

    experiment, model, step, _ = restore_model(str(workdir), "best")
    assert step == 600
    test = data.load("sensor_faults", "test", cache=True)
    rows = test.rows(np.arange(len(test)))
    predicted = jax.device_get(experiment.predict(model, {"window": rows["window"]}))
    score, labels = predicted["score"], rows["label"]
    assert score.dtype == np.float32 and predicted["reconstruction"].shape == (1000, 64, 4)
    assert got["auroc"] == pytest.approx(sk.roc_auc_score(labels, score), abs=1e-6)
    assert got["loss"] == pytest.approx(score[labels == 0].mean(), rel=1e-4)
    flagged = score > got["threshold"]
    assert got["flagged"] == pytest.approx(flagged.mean())
    for name in ("precision", "recall", "f1"):
        want = getattr(sk, f"{name}_score")(labels, flagged)
        assert got[name] == pytest.approx(want, abs=1e-6), name
    # The threshold targets 1% false alarms on fresh normal rows: check it stays near that.
    assert (score[labels == 0] > got["threshold"]).mean() < 0.05

    # The served decision: 1 above the threshold eval/threshold came from (the export served a
    # score alone, each client left to find and apply the threshold itself).
    flags = predicted["flagged"]
    near = np.abs(score - got["threshold"]) < 1e-5 * got["threshold"]  # rounding aside
    assert flags.dtype == np.int32 and flags.sum() > 0 and not near.any()
    np.testing.assert_array_equal(flags, score > got["threshold"])
    manifest = export(str(workdir), str(out))
    assert manifest["outputs"]["score"] == {"dtype": "float32", "shape": [-1]}
    assert manifest["outputs"]["flagged"] == {
        "dtype": "int32", "shape": [-1], "names": ["normal", "anomalous"]
    }  # fmt: skip
    assert manifest["threshold"]["value"] == pytest.approx(got["threshold"], rel=1e-5)
    assert manifest["threshold"]["quantile"] == 0.99
    assert manifest["inputs"] == {"window": {"dtype": "float32", "shape": [-1, 64, 4]}}
    # The drift reference: the normal calibration rows, held out of the loss. On the training
    # rows it fit (0.35% flagged there, 2.4% of fresh normal rows) a healthy window's score
    # drifted in 20 of 20 windows; the validation split holds injected faults.
    sample = manifest["reference"]["sample"]
    assert (sample["split"], sample["held_out"]) == (
        "train", "train's normal calibration rows, held out of the loss"
    )  # fmt: skip
    from ann.monitor.drift import Reference

    reference = Reference.from_model(artifact.load(str(out)))
    assert reference.rows == sample["rows"] == len(experiment.calibration_index) >= 100
    train = data.load("sensor_faults", "train", cache=True).rows(experiment.calibration_index)
    assert (train["label"] == 0).all()
    np.testing.assert_array_equal(reference.features[:, 0], train["window"][:, 0, 0])
    shares = [reference.outputs["flagged"].mean(), flags[labels == 0].mean()]
    assert max(shares) < 0.05 and abs(shares[0] - shares[1]) < 0.02, shares
    loaded = artifact.load(str(out))({"window": rows["window"][:50]})
    np.testing.assert_allclose(loaded["score"], score[:50], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(loaded["flagged"], flags[:50])
    # `ann serve`'s model metadata says the threshold its `flagged` applies.
    import orjson

    from ann.serve.dataplane import ServedModel

    served = ServedModel("faults", "1", artifact.load(str(out)), "test")
    parameters = orjson.loads(served.metadata)["parameters"]
    assert parameters["threshold"] == manifest["threshold"]
    assert parameters["labels"]["flagged"] == ["normal", "anomalous"]
    np.testing.assert_allclose(
        loaded["reconstruction"], predicted["reconstruction"][:50], rtol=1e-5, atol=1e-5
    )
    # The report marks the threshold the export was trained to deploy (its manifest's
    # eval/threshold), with precision and recall at it: it had neither.
    from ann.report import collect
    from ann.report.sections import sections_for

    preds = collect.collect(collect.from_model(str(out)), "test")
    (section,) = sections_for("anomaly_detection")(preds)
    deployed = section.metrics["threshold"]
    assert deployed["value"] == pytest.approx(manifest["metrics"]["eval/threshold"], rel=1e-4)
    assert deployed["precision"] == pytest.approx(got["precision"], abs=2e-3)
    assert deployed["recall"] == pytest.approx(got["recall"], abs=2e-3)
    assert any("deployed threshold" in note for note in section.notes)
    # The ROC marks the point the deployment works at: its TPR is the recall (trial 46b).
    (point,) = [line for line in section.figures["roc"].axes[0].lines if line.get_marker() == "o"]
    assert point.get_ydata()[0] == pytest.approx(deployed["recall"])
    assert point.get_label().startswith("deployed threshold "), point.get_label()
