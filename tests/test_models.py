"""Models: found by name, built from config keys, and a user's own model from outside ann/."""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, load_config, one_line_error
from flax import nnx

from ann import models
from ann.config import COUNT, ConfigError


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_models_build_and_run(name, dtype):
    model = models.build(
        name, {"dtype": dtype}, input_shape=(8, 8, 1), num_classes=10, rngs=nnx.Rngs(0)
    )
    model.train()
    out = model(jnp.ones((4, 8, 8, 1)), rngs=jax.random.PRNGKey(0))
    assert out.shape == (4, 10) and out.dtype == dtype
    params = nnx.state(model, nnx.Param)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))


def readme_file(name: str) -> str:
    """The README's ```python block that starts with `# NAME`."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    return next(b for b in blocks if b.startswith(f"# {name}\n"))


def outside_ann(directory, module: str, *flags: str) -> subprocess.CompletedProcess:
    """`python -m MODULE FLAGS` run in `directory`, outside ann, with the README's files there
    on PYTHONPATH, as its commands say."""
    return subprocess.run(
        [sys.executable, "-m", module, *flags],
        cwd=directory,
        env={**os.environ, "PYTHONPATH": str(directory)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_readme_own_model_trains_from_outside_ann(tmp_path):
    # The README's own files, so the guide and the test cannot drift apart.
    (tmp_path / "mynets.py").write_text(readme_file("mynets.py"))
    (tmp_path / "wide.py").write_text(readme_file("wide.py"))
    proc = outside_ann(tmp_path, "ann.main", "--config=wide.py", "--workdir=runs/wide",
                       "--config.model.width=64", "--config.total_steps=20",
                       "--config.batch_size=32")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "done: step 20" in proc.stdout
    assert "model mynets:Wide" in proc.stderr
    # A setting the model cannot be built from was a traceback ending in Flax's initializer
    # (ZeroDivisionError: float division by zero), unless the model raised a ValueError.
    bad = outside_ann(tmp_path, "ann.main", "--config=wide.py", "--workdir=runs/zero",
                      "--config.model.width=0")  # fmt: skip
    line = one_line_error(bad)
    assert line.startswith(
        "error: model 'mynets:Wide' cannot be built for the data's input_shape=(8, 8, 1) from "
        "its model.* settings (width=0): ZeroDivisionError: "
    ), line
    assert f"(at {tmp_path / 'mynets.py'}:" in line and "fix the setting" in line


BAD_NETS = """
import math
import jax.numpy as jnp
from flax import nnx

class WrongWidth(nnx.Module):  # one class too many: it trained, and exported a wrong manifest
    def __init__(self, input_shape, num_classes, rngs):
        self.dense = nnx.Linear(math.prod(input_shape), num_classes + 1, rngs=rngs)

    def __call__(self, x, rngs=None):
        return self.dense(x.reshape(x.shape[0], -1))

class IntOut(WrongWidth):  # integer logits: no gradient, it trained to nothing with exit 0
    def __init__(self, input_shape, num_classes, rngs):
        self.dense = nnx.Linear(math.prod(input_shape), num_classes, rngs=rngs)

    def __call__(self, x, rngs=None):
        return self.dense(x.reshape(x.shape[0], -1)).astype(jnp.int32)

class NoRngs(IntOut):  # each of these was a traceback and a half-made workdir
    def __call__(self, x):
        return self.dense(x.reshape(x.shape[0], -1))

class Dict(IntOut):
    def __call__(self, x, rngs=None):
        return {"logits": self.dense(x.reshape(x.shape[0], -1))}

class NoCall(nnx.Module):
    def __init__(self, input_shape, num_classes, rngs):
        self.w = nnx.Param(jnp.zeros(3))

class NotModule:
    def __init__(self, input_shape, num_classes, rngs):
        pass
"""


@pytest.mark.parametrize(
    "model, extra, message",
    [
        ("badnets:WrongWidth", {}, "model 'badnets:WrongWidth' returns float32 of shape "
         "[32, 11] for a batch of 32; classification needs float logits [batch, 10] (one per "
         "class of the data set)"),
        ("badnets:IntOut", {}, "model 'badnets:IntOut' returns int32 of shape [32, 10]"),
        ("badnets:NoRngs", {}, "model 'badnets:NoRngs' cannot be called as ann calls it "
         "(NoRngs.__call__() got an unexpected keyword argument 'rngs'); its __call__ takes the "
         "input and rngs= (rngs: the dropout RNG, or None)"),
        ("badnets:Dict", {}, "model 'badnets:Dict' returns a dict; classification needs float "
         "logits [batch, 10]"),
        ("badnets:NoCall", {}, "model 'badnets:NoCall' is not callable: give it "
         "__call__(self, x, rngs=None)"),
        ("badnets:NotModule", {}, "model 'badnets:NotModule' built a NotModule, not a "
         "flax.nnx.Module; derive it from nnx.Module"),
        # Regression likewise: 2 predictions per row for diabetes' one target.
        ("badnets:WrongWidth", {"experiment": "regression"}, "model 'badnets:WrongWidth' "
         "returns float32 of shape [32, 2] for a batch of 32; regression needs float "
         "predictions of 1 value(s) per row (the target's shape [])"),
        # A key the model takes from elsewhere: "got multiple values for keyword argument".
        ("mlp", {"num_classes": 4}, "config key 'model.num_classes': model 'mlp' is given that "
         "argument by the experiment, from the data set; drop it"),
        ("mlp", {"dtype": "bfloat16"}, "config key 'model.dtype': model 'mlp' is given that "
         "argument by config.dtype; drop it"),
        # It said "it accepts: " and nothing.
        ("badnets:WrongWidth", {"width": 5}, "config key 'model.width' is not an argument of "
         "model 'badnets:WrongWidth'; it takes none (drop it from the config or the command "
         "line)"),
        # Vectors for a CNN: it blamed the settings alone, then "not enough values to unpack".
        ("cnn", {}, "model 'cnn' takes images, [height, width, channels], and this data set's "
         "inputs are vectors of 30 values; choose a model for them, e.g. "
         "--config.model.name=mlp"),
    ],
)  # fmt: skip
def test_a_model_that_does_not_fit_its_task_is_refused_before_step_0(
    tmp_path, monkeypatch, model, extra, message
):
    from conftest import tiny

    from ann.train.loop import train_and_evaluate

    (tmp_path / "badnets.py").write_text(BAD_NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tiny()
    if extra.pop("experiment", None):
        config = tiny("diabetes_mlp", num_epochs=0)
    config.model = {"name": model, **extra}
    if model == "cnn":
        config.data.name = "breast_cancer"
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(config, str(tmp_path / "run"))
    assert message in str(e.value), str(e.value)
    assert not (tmp_path / "run").exists()  # nothing written


def test_readme_own_experiment_trains_and_exports_from_outside_ann(tmp_path):
    for name in ("mytasks.py", "parity.py"):
        (tmp_path / name).write_text(readme_file(name))

    def ann(module: str, *flags: str) -> str:  # its stdout, once it succeeded
        proc = outside_ann(tmp_path, module, *flags)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    trained = ann("ann.main", "--config=parity.py", "--workdir=runs/parity",
                  "--config.total_steps=150", "--config.batch_size=64")  # fmt: skip
    accuracy = float(re.search(r"eval/accuracy ([0-9.]+)", trained).group(1))
    assert accuracy > 0.85, trained  # even vs odd digits: chance is 0.5
    ann("ann.export", "--workdir=runs/parity", "--out=exports/parity")

    from ann import artifact

    model = artifact.load(str(tmp_path / "exports/parity"))
    out = model({"image": np.zeros((3, 8, 8, 1), np.uint8)})
    assert out["p_odd"].shape == (3,) and np.all((out["p_odd"] >= 0) & (out["p_odd"] <= 1))
    assert model.name == "parity"  # the config file's name, as the README says
    # Its own report section (report_sections), on the export: it was refused in one line.
    said = ann("ann.report", "--model=exports/parity", "--out=report")
    report = json.loads((tmp_path / "report/report.json").read_text())
    for split in ("validation", "test"):
        shown = report["splits"][split]["sections"]["parity"]["accuracy"]
        # printed after the section's title (it said "validation: accuracy 0.98")
        assert shown > 0.85 and f"{split}: Parity: accuracy {shown:.4f}" in said, said
        assert (tmp_path / f"report/{split}_parity_p_odd.png").stat().st_size > 5000
    # A head of another width through the README's _logits (call_model): one line before step
    # 0, nothing written; the README's model(x) had been a broadcasting traceback from the
    # loss, with the workdir made (trial 47a).
    (tmp_path / "three.py").write_text(
        "from flax import nnx\n\n\nclass Three(nnx.Module):\n"
        "    def __init__(self, *, input_shape, num_classes, rngs):\n"
        "        self.out = nnx.Linear(64, 3, rngs=rngs)\n\n"
        "    def __call__(self, x, *, rngs=None):\n"
        "        return self.out(x.reshape(x.shape[0], -1))\n"
    )
    proc = outside_ann(tmp_path, "ann.main", "--config=parity.py", "--workdir=runs/three",
                       "--config.model.name=three:Three")  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.splitlines()[-1] == (
        "error: model 'three:Three' returns float32 of shape [2, 3] for a batch of 2; parity "
        "needs float logits [batch, 2]"
    ), proc.stderr[-2000:]
    assert not (tmp_path / "runs/three").exists()


# A model's own argument ranges (its RANGES) are checked with the config, before any data set is
# read or built, like every other numeric setting.
@pytest.mark.parametrize(
    "name, arg, key, value, message",
    [
        ("digits_autoencoder", None, "latent", -1, "must be >= 0, got -1"),
        ("digits_autoencoder", None, "kernel_size", 0, "must be >= 1, got 0"),
        ("digits_autoencoder", "dense", "latent", 0, "must be > 0, got 0"),
        ("digits_retrieval", None, "embedding_dim", 0, "must be >= 1, got 0"),
        ("digits_retrieval", None, "tower_dim", -2, "must be >= 0, got -2"),
        ("sensors_lstm", None, "hidden_size", 0, "must be >= 1, got 0"),
        ("sensors_lstm", "gru", "num_layers", 0, "must be >= 1, got 0"),
    ],
)
def test_model_argument_ranges_are_checked_before_data(name, arg, key, value, message):
    config = load_config(name, arg)
    config.model[key] = value
    with pytest.raises(ConfigError) as e:
        models.check_config(config)
    assert f"config key 'model.{key}' {message}" in str(e.value)


# Their text choices (CHOICES) likewise: `model.norm='none'` passed a sweep's checks and failed
# its trial once built, blaming the data's input_shape.
@pytest.mark.parametrize(
    "name, arg, key, value, message",
    [
        ("digits_mlp", None, "norm", "none", "is 'none' (did you mean None?); choose one of "
         "None, layer, batch"),
        ("digits_autoencoder", "dense", "norm", "batch", "is 'batch'; choose one of None, layer"),
        ("digits_autoencoder", None, "upsample", "bilinear", "is 'bilinear'; choose one of "
         "nearest, transpose"),
        ("digit_seq2seq", None, "positions", "rotary", "is 'rotary'; choose one of learned, "
         "rope, digits"),
        ("pydoc_lm", None, "attention", "flash", "is 'flash'; choose one of einsum, xla, cudnn"),
    ],
)  # fmt: skip
def test_model_argument_choices_are_checked_before_data(name, arg, key, value, message):
    config = load_config(name, arg)
    config.model[key] = value
    with pytest.raises(ConfigError) as e:
        models.check_config(config)
    assert str(e.value) == f"config key 'model.{key}' {message}"


def test_a_config_error_from_the_constructor_does_not_blame_the_data():
    # A key only the built model can judge (highway against the window): its own line, not
    # "model 'lstm' cannot be built for the data's input_shape=(10, 2) ...: config key ...".
    with pytest.raises(ConfigError) as e:
        models.build("lstm", {"highway": 99}, input_shape=(10, 2), output_shape=(3, 2),
                     rngs=nnx.Rngs(0))  # fmt: skip
    assert str(e.value).startswith("config key 'model.highway' must be an int in [0, 10]")


def test_a_user_model_declares_its_own_ranges(monkeypatch):
    class Ranged(nnx.Module):
        RANGES = {"width": COUNT}
        CHOICES = {"act": ("relu", "gelu")}

        def __init__(self, *, width: int = 8, act: str = "relu", rngs: nnx.Rngs):
            self.width = width

    monkeypatch.setitem(models.MODELS, "ranged_test_model", Ranged)  # this test only

    with pytest.raises(ConfigError, match="'model.width' must be >= 1, got 0; e.g. --config.m"):
        models.check_arguments("ranged_test_model", {"width": 0})
    with pytest.raises(ConfigError, match="'model.act' is 'elu' .*; choose one of relu, gelu"):
        models.check_arguments("ranged_test_model", {"act": "elu"})
    models.check_arguments("ranged_test_model", {"width": 3, "act": "gelu"})


@pytest.mark.parametrize(
    "shape, window", [((3, 8, 8, 5), (2, 2)), ((2, 7, 9, 3), (2, 2)), ((2, 9, 6, 4), (3, 2))]
)
def test_cnn_max_pool_is_nnx_max_pool_in_values_and_gradients(shape, window):
    from ann.models.cnn import max_pool

    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    cotangent = jax.random.normal(jax.random.PRNGKey(1), max_pool(x, window).shape)

    def old(x):
        return nnx.max_pool(x, window_shape=window, strides=window)

    np.testing.assert_array_equal(max_pool(x, window), old(x))
    # Random values (no ties), and after a ReLU: tied zeros whose gradient the ReLU drops.
    for act in (lambda v: v, nnx.relu):
        grads = [
            jax.grad(lambda v, pool=pool, act=act: (pool(act(v)) * cotangent).sum())(x)
            for pool in (lambda v: max_pool(v, window), old)
        ]
        np.testing.assert_array_equal(*grads)


@pytest.mark.parametrize(
    "body, raised",
    [
        ("class Wide(nnx.Module)\n    pass\n", "raised SyntaxError: expected ':' (at {file}:1)"),
        ("raise RuntimeError('no GPU here')\n", "raised RuntimeError: no GPU here (at {file}:1)"),
        (
            "import numpy as np\nX = np.flot32\n",
            "raised AttributeError: module 'numpy' has no attribute 'flot32' (at {file}:2)",
        ),  # fmt: skip
        ("import torchy\n", "raised ModuleNotFoundError: No module named 'torchy' (at {file}:1)"),
        ("x = 1\n", "module '{module}' ({file}) has no 'Wide'; name a class it defines"),
    ],
)
def test_a_user_module_that_fails_to_import_is_one_line(tmp_path, monkeypatch, body, raised):
    # A SyntaxError or an error in a user's model or experiment module printed a 50-line
    # traceback; an AttributeError inside it was "make sure the module is on PYTHONPATH".
    from ann import experiment

    module = f"usermod_{abs(hash(body))}"
    file = tmp_path / f"{module}.py"
    file.write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    for key, get, name in [
        ("model.name", models.get, "Wide"),
        ("experiment", experiment.get, "Wide"),
    ]:
        with pytest.raises(ConfigError) as e:
            get(f"{module}:{name}")
        said = str(e.value)
        assert said.startswith(f"config key '{key}': ") and "\n" not in said, said
        assert raised.format(file=file, module=module) in said, said
        sys.modules.pop(module, None)  # imported again by the next getter


def test_a_model_registered_by_a_short_name_is_recorded_by_its_class(tmp_path, monkeypatch):
    # A run trained as model.name="wide" (README: @ann.models.register) could not be exported:
    # `ann export` reads config.json and never imports the module that registered the name.
    import json
    import textwrap

    from ann.train.build import restore_model
    from ann.train.loop import train_and_evaluate

    (tmp_path / "regnets.py").write_text(textwrap.dedent("""
        import ann.models
        from flax import nnx

        @ann.models.register("regwide")
        class Wide(nnx.Module):
            def __init__(self, *, input_shape, num_classes, rngs, **kwargs):
                self.out = nnx.Linear(input_shape[0] * input_shape[1], num_classes, rngs=rngs)

            def __call__(self, x, *, rngs=None):
                return self.out(x.reshape(x.shape[0], -1))
    """))  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(models, "MODELS", dict(models.MODELS))  # the registration is undone
    import regnets
    from conftest import tiny

    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny(total_steps=2, **{"model.name": "regwide"}), workdir)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["name"] == (
        "regnets:Wide"
    )
    del models.MODELS["regwide"]  # as in `ann export`'s process: never registered there
    _, model, _, _ = restore_model(workdir)
    assert type(model) is regnets.Wide
    # The short name again (registered again) resumes the same run: the same recorded config.
    models.MODELS["regwide"] = regnets.Wide
    assert train_and_evaluate(tiny(total_steps=4, **{"model.name": "regwide"}), workdir).step == 4


def test_a_class_defined_in_main_is_warned_of_and_named_without_a_file(monkeypatch, caplog):
    # Trained from a notebook as "wide" or "__main__:Wide", a run could be restored by no other
    # process (`ann report` looked for Wide in its own __main__), said by nothing; a misspelt
    # "__main__:Wde" under `python -c` or Jupyter crashed building its message (no __file__).
    import logging
    import types

    from ann import experiment
    from ann.imports import import_named

    class Wide:
        pass

    Wide.__module__, Wide.__qualname__ = "__main__", "Wide"
    monkeypatch.setattr(models, "MODELS", {**models.MODELS, "wide": Wide})
    monkeypatch.setattr(experiment, "EXPERIMENTS", {**experiment.EXPERIMENTS, "mine": Wide})
    config = load_config("digits_mlp")
    config.model.name, config.experiment = "wide", "mine"
    with caplog.at_level(logging.WARNING):
        models.record_registered(config)
        experiment.record_registered(config)
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "config key 'model.name': 'wide' is a class defined in __main__ (this script or "
        "notebook): only a process that defines it again can resume, export, report or serve "
        "this run; define it in a module on PYTHONPATH (mynets.py) and set "
        "model.name='mynets:Wide'",
        "config key 'experiment': 'mine' is a class defined in __main__ (this script or "
        "notebook): only a process that defines it again can resume, export, report or serve "
        "this run; define it in a module on PYTHONPATH (mytasks.py) and set "
        "experiment='mytasks:Wide'",
    ]
    assert (config.model.name, config.experiment) == ("wide", "mine")  # kept: nothing better
    caplog.clear()
    config.model.name = "__main__:Wide"
    with caplog.at_level(logging.WARNING):
        models.record_registered(config)
    assert "'__main__:Wide' is a class defined in __main__" in caplog.text
    notebook = types.ModuleType("__main__")  # as Jupyter's and `python -c`'s: no __file__
    notebook.Wide = Wide
    monkeypatch.setitem(sys.modules, "__main__", notebook)
    with pytest.raises(ConfigError) as e:
        import_named("model.name", "__main__:Wde")
    assert "module '__main__' (the running script or notebook) has no 'Wde'" in str(e.value)


def test_an_experiment_registered_by_a_short_name_is_recorded_by_its_class(tmp_path, monkeypatch):
    # Models had `@ann.models.register`, experiments only `module:Class` (trial 41a L19).
    import json
    import textwrap

    from ann import experiment
    from ann.train.build import restore_model
    from ann.train.loop import train_and_evaluate

    (tmp_path / "regtasks.py").write_text(textwrap.dedent("""
        import ann.experiment
        from experiments.classification import Classification

        @ann.experiment.register("regtask")
        class Mine(Classification):
            pass
    """))  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(experiment, "EXPERIMENTS", dict(experiment.EXPERIMENTS))
    import regtasks
    from conftest import tiny

    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny(total_steps=2, experiment="regtask"), workdir)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["experiment"]
    assert recorded == "regtasks:Mine"
    del experiment.EXPERIMENTS["regtask"]  # as in `ann export`'s process: never registered there
    assert type(restore_model(workdir)[0]) is regtasks.Mine
    with pytest.raises(ValueError, match="'classification' is ann's own; register yours"):
        experiment.register("classification")


@pytest.mark.parametrize("register", ["ann.models.register", "ann.experiment.register"])
def test_a_registered_name_is_one_a_config_can_give(register, monkeypatch):
    # Accepted before (trial 42c M1): "", 123, "a:b" (read as module:Class), a str registered
    # as a class (which then made the name "ann's own"), and `@register` without its name,
    # which turned the class into the decorator's inner function without a word.
    from ann import experiment

    module = models if register == "ann.models.register" else experiment
    table = "MODELS" if module is models else "EXPERIMENTS"
    monkeypatch.setattr(module, table, dict(getattr(module, table)))
    fn = module.register
    for name in ("", "a:b", " x", 123):
        with pytest.raises(ValueError, match="a name is a non-empty str without ':'"):
            fn(name)
    with pytest.raises(TypeError, match=re.escape(f'takes the name first: @{register}("myname")')):

        @fn
        class Unnamed:
            pass

    with pytest.raises(TypeError, match="decorates a class, got str"):
        fn("mine")("notaclass")

    class Mine:
        pass

    assert fn("mine")(Mine) is Mine and fn("mine")(Mine) is Mine  # a cell run twice


def test_a_model_that_fails_to_trace_records_the_run_as_failed(tmp_path, monkeypatch):
    # Its traceback was the only trace of it: run_status.json, which sweeps and schedulers read,
    # was never written (a failure inside the loop is recorded as `failed`).
    import json
    import textwrap

    from conftest import tiny

    from ann.train.loop import train_and_evaluate

    (tmp_path / "badcall.py").write_text(textwrap.dedent("""
        from flax import nnx

        class Wide(nnx.Module):
            def __init__(self, *, input_shape, num_classes, rngs, **kwargs):
                self.out = nnx.Linear(3, num_classes, rngs=rngs)

            def __call__(self, x, *, rngs=None):
                return self.out(x.reshape(x.shape[0], -1))  # 64 features, not 3
    """))  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError):
        train_and_evaluate(tiny(**{"model.name": "badcall:Wide"}), str(tmp_path / "run"))
    status = json.loads((tmp_path / "run" / "run_status.json").read_text())
    assert status["status"] == "failed" and status["step"] == 0, status
    assert status["message"].startswith("TypeError: ")


def test_readme_dropout_and_batchnorm_model_draws_the_calls_key(tmp_path, monkeypatch):
    # The README's way to write Dropout/BatchNorm in an own model: built by ann's Rngs, random
    # in train mode with the call's key, deterministic in eval mode without one.
    (tmp_path / "dropnets.py").write_text(readme_file("dropnets.py"))
    monkeypatch.syspath_prepend(str(tmp_path))
    model = models.build("dropnets:Small", {}, input_shape=(8, 8, 1), num_classes=3,
                         rngs=nnx.Rngs(params=0))  # fmt: skip
    x = jnp.ones((4, 8, 8, 1)).at[0].set(2.0)
    model.train()
    a, b = (model(x, rngs=jax.random.key(i)) for i in (1, 2))
    assert a.shape == (4, 3) and not np.allclose(a, b)
    model.eval()
    np.testing.assert_array_equal(model(x), model(x))


def test_a_dropout_stream_asked_of_the_build_rngs_says_to_pass_the_key_at_call_time(
    monkeypatch,
):
    # `nnx.Dropout(rate, rngs=rngs)`, Flax's usual way, was "cannot be built for the data's
    # input_shape=(8, 8, 1) from its model.* settings (): KeyError: No RngStream named
    # 'dropout'...; fix the setting, or choose a model for this data": nothing was wrong with
    # either.
    class Drop(nnx.Module):
        def __init__(self, *, input_shape, num_classes, rngs: nnx.Rngs):
            self.out = nnx.Linear(64, num_classes, rngs=rngs)
            self.drop = nnx.Dropout(0.3, rngs=rngs)

    monkeypatch.setitem(models.MODELS, "drop_test_model", Drop)  # this test only
    with pytest.raises(ConfigError) as e:
        models.build("drop_test_model", {}, input_shape=(8, 8, 1), num_classes=3,
                     rngs=nnx.Rngs(params=0))  # fmt: skip
    said = str(e.value)
    assert said.startswith(
        "model 'drop_test_model' asks the rngs it is built with for a 'dropout' stream (at "
    ), said
    assert "settings" not in said and "build the layer without rngs (`nnx.Dropout(rate)`)" in said


def test_a_model_failing_without_settings_does_not_blame_settings(monkeypatch):
    class Broken(nnx.Module):
        def __init__(self, *, input_shape, num_classes, rngs: nnx.Rngs):
            raise RuntimeError("not written yet")

    monkeypatch.setitem(models.MODELS, "broken_test_model", Broken)  # this test only
    with pytest.raises(ConfigError) as e:
        models.build("broken_test_model", {}, input_shape=(8, 8, 1), num_classes=3,
                     rngs=nnx.Rngs(params=0))  # fmt: skip
    said = str(e.value)
    assert said.startswith(
        "model 'broken_test_model' cannot be built for the data's input_shape=(8, 8, 1) (it has "
        "no model.* settings): RuntimeError: not written yet (at "
    ), said
    assert said.endswith("; fix the model, or choose one for this data"), said


def test_a_constructor_requiring_what_the_experiment_does_not_pass_names_what_it_passes(
    monkeypatch,
):
    # A classifier's model under forecasting: "TypeError: Generic.__init__() missing 1 required
    # keyword-only argument: 'num_classes' (at ann/models/__init__.py:226); fix the setting".
    class Generic(nnx.Module):
        def __init__(self, *, input_shape, num_classes, extra=1, rngs: nnx.Rngs):
            pass

    monkeypatch.setitem(models.MODELS, "generic_test_model", Generic)  # this test only
    config = load_config("sensors_lstm")
    config.model = {"name": "generic_test_model"}
    with pytest.raises(ConfigError) as e:
        models.from_config(config, input_shape=(96, 3), output_shape=(24, 3), rngs=nnx.Rngs(0))
    assert str(e.value) == (
        "model 'generic_test_model' cannot be built: experiment 'forecasting' builds the model "
        "with input_shape=(96, 3), output_shape=(24, 3) (and dtype, param_dtype, rngs); "
        "Generic.__init__ also requires num_classes: give it a default or set "
        "--config.model.num_classes=..., or take the arguments this experiment passes (README "
        '"Models")'
    )


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "configs").glob("*.py")))
def test_every_shipped_model_initializes_with_bfloat16_parameters(name):
    # The LSTM and GRU cells' orthogonal init (a QR) had no bfloat16 kernel: a traceback at
    # the state's init with --config.param_dtype=bfloat16. Lowered or traced only (nothing
    # compiled).
    from conftest import tiny

    from ann.train.build import build, make_experiment

    config = tiny(name, param_dtype="bfloat16", dtype="bfloat16")
    if config.num_epochs:  # tiny sets total_steps; a config that trains by epochs is one
        config.total_steps, config.num_epochs = 20, 0
    if config.optimizer.name == "adam" or config.optimizer.name == "adamw":
        config.optimizer.eps = 1e-3  # bfloat16's own: the default 1e-8 is refused for it
    experiment = make_experiment(config)
    setup = build(config, experiment)
    setup.init.lower()
    # The train step traced abstractly (jax.eval_shape: no lowering, no FLOPs): optax's
    # clipping selected between a float32-scaled and a bfloat16 gradient (configs/digits_vit.py).
    from ann.train import freezing, optimizers
    from ann.train import step as step_lib

    batch = experiment.fields(setup.train_split.rows(np.arange(config.batch_size)))
    opt, freeze = config.optimizer, tuple(config.freeze)  # digits_finetune freezes layers
    frozen = frozenset(freezing.frozen_paths(setup.abstract_state.params, freeze))
    step = step_lib.make_train_step(
        experiment, setup.model_def, optimizers.for_step(opt, setup.total_steps, freeze), 1, frozen
    )
    hyper = optimizers.hyperparameters(opt, setup.total_steps)
    state, _ = jax.eval_shape(step, setup.abstract_state, batch, hyper)
    assert {p.dtype for p in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize("name", ["cnn", "resnet", "vit"])
def test_a_model_of_images_for_vectors_is_refused_naming_the_shapes(name):
    # digits_cnn's model on breast_cancer's 30 values a row: "cannot be built ...: not enough
    # values to unpack (expected 3, got 1)" (trial 47c).
    with pytest.raises(ConfigError) as e:
        models.build(name, {}, input_shape=(30,), num_classes=2, rngs=nnx.Rngs(0))
    assert str(e.value) == (
        f"config key 'model.name': model {name!r} takes images, [height, width, channels], and "
        "this data set's inputs are vectors of 30 values; choose a model for them, e.g. "
        "--config.model.name=mlp"
    ), e.value
    assert e.value.key == "model.name" and e.value.example == "mlp"
    # A model of any shape (the MLP flattens) builds.
    models.build("mlp", {}, input_shape=(30,), num_classes=2, rngs=nnx.Rngs(0))
