"""Sweeps: definitions, the local launcher (pinning, failures, resume), results, TPE with
pruning, and the cluster scripts. Trials are real `ann.main` subprocesses of tiny configs."""

import base64
import contextlib
import csv
import itertools
import json
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
from conftest import ROOT, one_line_error, with_devices

from ann import cli
from ann.config import ConfigError
from ann.sweep import definition as definition_lib
from ann.sweep import emit, grid, launch, pruning, results, search, space
from ann.sweep import trials as trials_lib
from ann.sweep.space import SweepError
from ann.train import hooks

# How a line a person pastes runs `ann` (`Trial.standalone`): the sweep's own interpreter.
PYTHON_ANN = shlex.join(trials_lib.PYTHON_ANN)

# 20 steps of batch 32, evals at 10 and 20: a trial takes a few seconds, most of it start-up.
CONFIG = """
import importlib.util

spec = importlib.util.spec_from_file_location("digits_mlp", {base!r})
base = importlib.util.module_from_spec(spec)
spec.loader.exec_module(base)


def get_config(arg=None):
    c = base.get_config()
    c.total_steps = {steps}
    c.batch_size = 32
    c.log_every_steps = 10
    c.eval_every_steps = 10
    c.checkpoint_every_steps = {steps}
    return c


def get_sweep(h):
{sweep}
"""


def write_config(tmp_path, sweep, steps=20, name="sweep_config.py"):
    path = tmp_path / name
    body = textwrap.indent(textwrap.dedent(sweep).strip(), "    ")
    path.write_text(
        CONFIG.format(base=str(ROOT / "configs" / "digits_mlp.py"), steps=steps, sweep=body)
    )
    return str(path)


@pytest.fixture
def one_device(monkeypatch):
    """Trials run on one CPU device (the tests' 4 fake devices would slow them down)."""
    monkeypatch.setenv("XLA_FLAGS", with_devices(1)["XLA_FLAGS"])
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    from ann import data

    data.load("digits", "train")  # build the data set once, before trials race to build it


@pytest.fixture
def launched(monkeypatch):
    """The trials `grid.run` hands the local launcher, in order; none is run."""
    trials = []

    def launch_nothing(next_trial, on_end, parallel, log):
        while (trial := next_trial()) is not None:
            trials.append(trial)

    monkeypatch.setattr(launch, "run", launch_nothing)
    return trials


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def sweep_cli(*flags, timeout=400):
    return subprocess.run(
        [sys.executable, "-m", "ann.sweep", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- definitions -------------------------------------------------------------------------


def test_product_zip_and_random_expand_to_trials():
    h = space.Builder()
    node = h.product(
        h.sweep("optimizer.learning_rate", [1e-3, 3e-3]),
        h.zip(h.sweep("model.features", [[64], (128, 128)]), h.sweep("model.dropout", [0, 0.1])),
    )
    rows = space.trials(node)
    assert len(rows) == 4
    assert rows[1] == {
        "optimizer.learning_rate": 1e-3,
        "model.features": (128, 128),
        "model.dropout": 0.1,
    }
    drawn = h.random(5, h.loguniform("optimizer.learning_rate", 1e-4, 1e-2), seed=3)
    values = [r["optimizer.learning_rate"] for r in space.trials(drawn)]
    assert values == [r["optimizer.learning_rate"] for r in space.trials(drawn)]  # seeded
    assert len(set(values)) == 5 and all(1e-4 <= v <= 1e-2 for v in values)
    assert all(v == float(f"{v:.4g}") for v in values)  # rounded to 4 significant digits
    names = trials_lib.names(rows)
    assert names[1] == "learning_rate=0.001,features=128-128,dropout=0.1"
    assert len(set(names)) == 4


def test_names_are_unique_short_and_safe():
    rows = [{"data.name": "a/b c"}, {"model.x": 0.30001}, {"model.x": 0.3}, {"a.k": "y" * 200}]
    rows.append({"model.k": 1, "data.k": 2})
    names = trials_lib.names(rows)
    assert names[0] == "name=a-b-c"
    assert names[1] != names[2] and names[1].startswith("x=0.3-")
    assert len(names[3]) <= trials_lib.MAX_NAME
    assert names[4] == "model.k=1,data.k=2"  # a shared last part keeps the full key


def _eager(node):
    """The rows as the sweeps before lazy rows built them, all at once: what existing sweep
    workdirs were named and run with."""
    if isinstance(node, space.Sweep):
        return [{node.key: v} for v in node.values]
    if isinstance(node, space.Random):
        rng = random.Random(node.seed)
        return [{d.key: d.draw(rng) for d in node.draws} for _ in range(node.n)]
    parts = [_eager(n) for n in node.nodes]
    combos = itertools.product(*parts) if isinstance(node, space.Product) else zip(*parts)
    return [{k: v for part in combo for k, v in part.items()} for combo in combos]


def test_trials_come_one_at_a_time_as_the_eager_list_had_them():
    """h.random(10**8, ...) and a product of 10**9 built every trial before the first ran
    (minutes, gigabytes; a random one was then refused for a repeated draw). Rows are now made
    as they are asked for, counted by arithmetic, and are the eager list's: same overrides,
    same order, same names, so an existing sweep's workdir resumes."""
    h = space.Builder()
    lr = h.loguniform("optimizer.learning_rate", 1e-4, 1e-1)
    drop = h.uniform("model.dropout", 0.0, 0.5)
    spaces = [
        h.random(7, lr, drop, seed=3),
        h.product(h.random(3, lr), h.sweep("model.features", [(128,), (256, 256)])),
        h.product(h.sweep("seed", [0, 1]), h.random(4, drop, h.randint("batch_size", 8, 64))),
        h.zip(h.sweep("model.features", [[64], (128, 128)]), h.sweep("model.dropout", [0, 0.1])),
        h.product(
            h.sweep("optimizer.learning_rate", [1e-3, 3e-3]),
            h.zip(h.product(h.sweep("seed", [1, 2]), h.sweep("model.norm", ["layer", ""])),
                  h.random(4, h.choice("optimizer.name", ["adam", "sgd"]), seed=1)),
            h.product(h.sweep("batch_size", [8, 16]), h.random(2, drop, seed=5)),
        ),
    ]  # fmt: skip
    for node in spaces:
        eager = _eager(node)
        assert node.size() == len(eager) and list(node.rows()) == eager == space.trials(node)
        assert trials_lib.names(list(node.rows())) == trials_lib.names(eager)
        k = len(eager) // 2
        assert list(itertools.islice(node.rows(), k)) == eager[:k]
    # The first trials of a huge space, without building it: the small one's.
    huge = h.random(10**8, lr, drop, seed=3)
    assert list(itertools.islice(huge.rows(), 7)) == _eager(spaces[0])
    product = h.product(*(h.sweep(f"model.k{i}", list(range(10))) for i in range(9)))
    assert product.size() == 10**9
    assert next(product.rows()) == {f"model.k{i}": 0 for i in range(9)}


def test_h_random_gives_n_distinct_rows_and_keeps_every_existing_sweeps_rows():
    """Draws are rounded to 4 digits, so h.random(500, h.loguniform(...)) drew a value twice
    and was refused ("gives the trial ... twice"): a repeat is now skipped and drawn again from
    the same stream. A sweep with a repeat was refused, so every existing one keeps its rows."""
    h = space.Builder()
    lr = h.loguniform("optimizer.learning_rate", 1e-4, 1e-1)
    rows = space.trials(h.random(500, lr))
    stream = _eager(h.random(1000, lr))  # the old draws, repeats and all
    firsts = list({json.dumps(r, sort_keys=True): r for r in stream}.values())  # in order
    assert len(stream) > len(firsts) >= 500 and rows == firsts[:500]
    assert len(space.trials(h.product(h.random(300, lr), h.sweep("seed", [0, 1])))) == 600
    # Spaces without a repeat: the rows they always had.
    drop = h.uniform("model.dropout", 0.0, 0.5)
    batch = h.randint("batch_size", 8, 4096)
    for node in [
        *(h.random(120, lr, drop, seed=s) for s in range(4)),
        h.random(40, batch, h.choice("optimizer.name", ["adam", "sgd"]), seed=2),
        h.product(h.sweep("seed", [0, 1]), h.random(60, lr, seed=9)),
    ]:
        eager = _eager(node)
        assert len({json.dumps(r, sort_keys=True) for r in eager}) == len(eager)
        assert list(node.rows()) == eager == space.trials(node)
    name = h.choice("optimizer.name", ["adam", "sgd"])
    drawn = h.random(
        3, lr, h.randint("batch_size", 8, 64), name, seed=7
    )  # as the code before drew it
    expected = [(0.0009365, 17, "sgd"), (0.00897, 12, "adam"), (0.00125, 11, "adam")]
    assert [tuple(r.values()) for r in drawn.rows()] == expected
    # Below an h.zip a repeat pairs with another part's row, a distinct trial: kept.
    zipped = h.zip(h.sweep("seed", [1, 2, 3, 4]), h.random(4, name, seed=1))
    assert list(zipped.rows()) == _eager(zipped) and len(space.trials(zipped)) == 4


def test_an_h_zip_of_random_draws_gives_each_trial_once():
    h = space.Builder()
    dropout = h.choice("model.dropout", [0.0, 0.1])
    norm = h.choice("model.norm", ["layer", ""])
    # Its rows repeated as a whole (its h.random parts drew an earlier row again): refused as
    # "the sweep gives the trial ... twice", naming neither the zip nor a fix. Drawn again.
    zipped = h.zip(h.random(4, dropout), h.random(4, norm, seed=1))
    rows = [tuple(r.values()) for r in space.trials(zipped)]
    assert rows == [(0.1, "layer"), (0.0, ""), (0.1, ""), (0.0, "layer")]
    assert rows == [tuple(r.values()) for r in zipped.rows()]  # seeded: the same every time
    # Beside another part's new row a repeat is kept, as ever; a study's choices are as drawn.
    kept = h.zip(h.sweep("seed", [1, 2, 3, 4]), h.random(4, norm, seed=1))
    assert list(kept.rows()) == list(kept._paired())
    assert [r["model.norm"] for r in kept.rows()] == ["layer", "layer", "", "layer"]
    with pytest.raises(SweepError) as e:
        space.trials(h.zip(h.random(5, dropout), h.random(5, norm, seed=1)))
    assert re.fullmatch(
        r"h.zip of model.dropout\+model.norm asks for 5 distinct trials, but \d+ draws of its "
        r"h.random parts gave only 4; give h.random n <= 4, or more values to draw from",
        str(e.value),
    )
    # Two parts of one seed drew from one stream: b was 10 a in every trial.
    a, b = h.uniform("model.dropout", 0, 0.5), h.uniform("optimizer.learning_rate", 0, 5)
    with pytest.raises(SweepError) as e:
        space.params(h.zip(h.random(3, a), h.random(3, b)))
    assert str(e.value) == (
        "h.zip pairs h.random(3, h.uniform('model.dropout', 0.0, 0.5)) with h.random(3, "
        "h.uniform('optimizer.learning_rate', 0.0, 5.0)), of the same seed (0): their draws come "
        "from one stream and move together (each the same fraction of its range); give one of "
        "them another seed=..., or draw their keys in one h.random(n, ...)"
    )
    assert len(space.trials(h.zip(h.random(3, a), h.random(3, b, seed=2)))) == 3


@pytest.mark.parametrize(
    "sweep, message",
    [
        (
            "h.random(10, h.choice('optimizer.name', ['adam', 'sgd', 'adam']))",
            r"h.random\(10, h.choice\('optimizer.name', \['adam', 'sgd', 'adam'\]\)\) asks for 10 "
            r"distinct trials, but its draws hold only 2; give h.random n <= 2, or list every "
            r"value with h.sweep$",
        ),
        (
            "h.product(h.sweep('seed', [0, 1]), h.random(9, h.randint('batch_size', 1, 4), "
            "h.choice('model.norm', ['layer', '']), seed=3))",
            r"h.random\(9, h.randint\('batch_size', 1, 4\), h.choice\('model.norm', \['layer', "
            r"''\]\), seed=3\) asks for 9 distinct trials, but its draws hold only 8; give "
            r"h.random n <= 8",
        ),
        (  # floats: 0.1000 ... 0.2000, found by drawing (a bounded number of times)
            "h.random(2000, h.uniform('model.dropout', 0.1, 0.2))",
            r"h.random\(2000, h.uniform\('model.dropout', 0.1, 0.2\)\) asks for 2000 distinct "
            r"trials, but \d+ draws gave only 1001 \(floats are rounded to 4 significant "
            r"digits\); give h.random n <= 1001, or wider ranges$",
        ),
    ],
)
def test_h_random_that_cannot_give_n_distinct_rows_is_refused_in_one_line(
    tmp_path, monkeypatch, sweep, message
):
    """h.random(10, h.choice(k, [1, 2, 3])) was refused for giving a trial twice; now it says
    how many distinct rows the space holds (by arithmetic, nothing drawn, for choices and
    integers) and the fix, before a workdir is made."""
    definition = definition_lib.load(write_config(tmp_path, f"return {sweep}"), {})
    if "uniform" not in sweep:
        monkeypatch.setattr(space.Draw, "draw", lambda *a: pytest.fail("a value was drawn"))
    with pytest.raises(SweepError, match="^" + message):
        grid.prepare(definition, str(tmp_path / "sweep"))
    assert not os.path.exists(tmp_path / "sweep")


def test_h_random_over_the_bound_is_told_its_distinct_rows_first(monkeypatch):
    # h.random(10**6, h.choice('model.dropout', [0.1, 0.2])) was told the grid's bound (give
    # h.random a smaller n); that it holds 2 rows was said only once n was under it.
    monkeypatch.setattr(space.Draw, "draw", lambda *a: pytest.fail("a value was drawn"))
    h = space.Builder()
    node = h.random(10**6, h.choice("model.dropout", [0.1, 0.2]))
    with pytest.raises(SweepError, match=r"^h.random\(1000000, h.choice\('model.dropout', "
                       r"\[0.1, 0.2\]\)\) asks for 1000000 distinct trials, but its draws "
                       r"hold only 2; give h.random n <= 2"):  # fmt: skip
        space.trials(h.product(h.sweep("seed", [0, 1]), node))
    # Below an h.zip a repeat is kept: there the bound is the limit.
    zipped = h.zip(node, h.sweep("seed", range(10**6)))
    with pytest.raises(SweepError, match=r"^get_sweep gives 1000000 trials, more than a grid"):
        space.trials(zipped)


def test_h_randint_takes_a_range_of_one_integer(tmp_path):
    # h.randint('batch_size', 5, 5) was refused "low must be below high", though [low, high]
    # includes both ends: it is the one value 5 (fixed, not searched, for --search=tpe).
    h = space.Builder()
    rows = space.trials(h.product(h.random(1, h.randint("batch_size", 5, 5)),
                                  h.sweep("seed", [0, 1])))  # fmt: skip
    assert rows == [{"batch_size": 5, "seed": 0}, {"batch_size": 5, "seed": 1}]
    searched, fixed = space.params(
        h.product(h.randint("batch_size", 5, 5), h.uniform("model.dropout", 0.1, 0.2))
    )
    assert [p.name for p in searched] == ["model.dropout"] and fixed == {"batch_size": 5}
    with pytest.raises(SweepError, match=r"^h.randint\('batch_size', 6, 5\): low must be at "
                       r"most high$"):  # fmt: skip
        h.randint("batch_size", 6, 5)
    with pytest.raises(SweepError, match="low must be below high"):
        h.uniform("model.dropout", 0.1, 0.1)


def test_h_random_gives_every_row_a_small_space_holds():
    h = space.Builder()
    node = h.random(8, h.randint("batch_size", 1, 4), h.choice("model.norm", ["layer", ""]))
    assert len({tuple(r.values()) for r in space.trials(node)}) == 8
    rows = space.trials(h.random(1001, h.uniform("model.dropout", 0.1, 0.2), seed=1))
    assert sorted(r["model.dropout"] for r in rows) == [
        round(0.1 + i / 1e4, 4) for i in range(1001)
    ]


def test_a_space_too_large_to_list_is_refused_at_once_building_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(space.Draw, "draw", lambda *a: pytest.fail("a trial was built"))
    message = (
        r"^get_sweep gives 100000000 trials, more than a grid lists \(at most 10000: each is "
        r"checked before the first starts, and the results list them all\); give h.random a "
        r"smaller n or h.sweep fewer values, or draw them as the search goes with --search=tpe "
        r"--trials=N \(--startup_trials=N: every one at random\)$"
    )
    path = write_config(
        tmp_path, "return h.random(10**8, h.loguniform('optimizer.learning_rate', 1e-4, 1e-1))"
    )
    definition = definition_lib.load(path, {})
    with pytest.raises(SweepError, match=message):
        grid.prepare(definition, str(tmp_path / "sweep"))
    assert not os.path.exists(tmp_path / "sweep")
    h = space.Builder()
    product = h.product(*(h.sweep(f"model.k{i}", list(range(10))) for i in range(9)))
    with pytest.raises(SweepError, match="^get_sweep gives 1000000000 trials"):
        space.trials(product)
    # A sweep that listed more trials before the bound resumes; a new one that size does not.
    monkeypatch.setattr(space, "MAX_TRIALS", 3)
    definition = definition_lib.load(write_config(tmp_path, GRID), {})
    with pytest.raises(SweepError, match=r"^get_sweep gives 4 trials, .*\(at most 3: "):
        grid.prepare(definition, str(tmp_path / "sweep"))
    listed = [{"name": f"t{i}", "overrides": {}} for i in range(4)]
    results.write_sweep_file(str(tmp_path / "sweep"), {"search": "grid", "trials": listed})
    assert len(grid.prepare(definition, str(tmp_path / "sweep"))[0]) == 4
    # A TPE study lists an h.zip's rows as one choice: bounded too.
    zipped = h.zip(h.random(10**6, h.uniform("model.dropout", 0, 1)), h.sweep("seed", range(10**6)))
    with pytest.raises(SweepError, match=r"^h.zip of model.dropout\+seed gives 1000000 rows"):
        space.params(zipped)


def test_tpe_space_from_the_same_definition():
    h = space.Builder()
    node = h.product(
        h.loguniform("optimizer.learning_rate", 1e-4, 1e-1),
        h.sweep("model.features", [(64,), (128,)]),
        h.sweep("total_steps", [30]),
    )
    params, fixed = space.params(node)
    assert [p.name for p in params] == ["optimizer.learning_rate", "model.features"]
    assert params[0].distribution.log and fixed == {"total_steps": 30}
    assert params[1].decode(1) == {"model.features": (128,)}


@pytest.mark.parametrize(
    "sweep, message",
    [
        ("return h.sweep('optimizer.lerning_rate', [1])", "did you mean 'optimizer.learning_rate'"),
        # Every misspelt part respelt: it said 'optimizer.lr', itself no key.
        ("return h.sweep('optimzer.lr', [1])", r"\(did you mean 'optimizer.learning_rate'\?\)"),
        # A name several sections hold: those keys, not the top-level ones.
        (
            "return h.sweep('name', ['x'])",
            r"'name' is unknown \(did you mean 'data.name', 'model.name' or 'optimizer.name'",
        ),
        (
            "return h.sweep('model.nrm', ['layer'])",
            r"trial nrm=layer: config key 'model.nrm' is not an argument of model 'mlp' \(did you "
            r"mean 'model.norm'\?\)",
        ),
        ("return h.sweep('optimizer', [1])", "is a section; sweep one of its keys"),
        ("return h.sweep('model.dropout', [])", r"h.sweep\('model.dropout', \[\]\) has no values"),
        (
            "return h.zip(h.sweep('model.dropout', [0.1, 0.2]), h.sweep('seed', [1]))",
            r"h.zip of unequal lengths \(model.dropout: 2, seed: 1\)",
        ),
        ("return h.uniform('model.dropout', 0, 1)", r"wrap it in h.random\(n, ...\)"),
        ("return h.sweep('optimizer.name', ['adam', 'adamx'])", "trial name=adamx: .*adamx"),
        # A value the model's constructor refuses: it passed --dry_run and failed trial 2.
        (
            "return h.sweep('model.norm', ['layer', 'none'])",
            r"trial norm=none: config key 'model.norm' is 'none' \(did you mean None\?\); "
            "choose one of None, layer, batch; change get_sweep",
        ),
        # Worded as `ann train` words it (it was absl's "invalid literal for int()").
        (
            "return h.sweep('total_steps', [2.5])",
            r"trial total_steps=2.5: --config.total_steps=2.5 must be an integer \(the key's "
            r"type in the config\); change get_sweep",
        ),
        # adam ignores momentum: a trial that sets it, even to the file's value, is refused up
        # front as `ann train` would refuse it, not once it is launched.
        (
            "return h.sweep('optimizer.momentum', [0.9])",
            "trial momentum=0.9: config key 'optimizer.momentum'=0.9 has no effect",
        ),
        (
            "return h.product(h.sweep('seed', [1]), h.sweep('seed', [2]))",
            "'seed' is swept twice",
        ),
        ("return 3", r"get_sweep\(h\) returned 3"),
        # Equal trials shared one workdir: one was refused for the other's lock, and the table
        # said "2 trials: 2 done".
        (
            "return h.sweep('optimizer.learning_rate', [1e-3, 0.001])",
            "the sweep gives the trial optimizer.learning_rate=0.001 twice",
        ),
        (
            "return h.zip(h.sweep('seed', [1, 1]), h.sweep('model.dropout', [0.1, 0.1]))",
            "the sweep gives the trial seed=1, model.dropout=0.1 twice",
        ),
        # A number for a tuple key ran as the 1-tuple (3,), as `ann train` took it unsaid.
        (
            "return h.sweep('model.features', [(64,), 3])",
            r"trial features=3: model.features=3 gives the tuple key 'model.features' one "
            r"number, which ml_collections would take as \(3,\); give get_sweep a tuple of "
            r"integers: h.sweep\('model.features', \[\(3,\), \(3, N\), ...\]\); change get_sweep",
        ),
        # A number its check refuses in turn (3.5 for integers): an integer offered instead.
        (
            "return h.sweep('model.features', [(64,), 3.5])",
            r"trial features=3.5: model.features=3.5 .* h.sweep\('model.features', \[\(\d+,\)",
        ),
    ],
)
def test_bad_definitions_fail_in_one_line(tmp_path, sweep, message):
    path = write_config(tmp_path, sweep)
    with pytest.raises(SweepError, match=message) as e:
        definition = definition_lib.load(path, {})
        grid.prepare(definition, str(tmp_path / "sweep"))
    assert "\n" not in str(e.value)


def test_a_sweep_takes_the_keys_the_command_line_takes(tmp_path):
    """`h.sweep('model.features', ...)` on a config whose get_config does not set it was refused
    ("a key must be set in get_config") where `--config.model.features=...` ran."""
    path = write_config(tmp_path, "return h.sweep('model.features', [(8,), (8, 16)])")
    text = (
        open(path).read().replace("    return c\n", "    del c.model['features']\n    return c\n")
    )
    open(path, "w").write(text)
    assert "features" not in definition_lib.parse(path, {}).model
    definition_lib.checked(path, {"model.features": (8,)})  # the command line takes it
    definition = definition_lib.load(path, {})
    _, configs = grid.prepare(definition, str(tmp_path / "sweep"))
    assert [json.loads(c)["model"]["features"] for c in configs] == [[8], [8, 16]]
    # A key the command line refuses is refused in the same words.
    with pytest.raises(ConfigError) as given:
        definition_lib.checked(path, {"model.nrm": "layer"})
    nrm = write_config(tmp_path, "return h.sweep('model.nrm', ['layer'])", name="nrm.py")
    with pytest.raises(SweepError) as swept:
        grid.prepare(definition_lib.load(nrm, {}), str(tmp_path / "sweep"))
    assert given.value.what in str(swept.value)
    # ... less the command line's ready flag: the value is get_sweep's to change.
    assert "e.g. --config.model.norm=layer" in str(given.value)
    assert "--config.model.norm" not in str(swept.value)


def test_tpe_needs_a_searchable_space(tmp_path):
    definition = definition_lib.load(write_config(tmp_path, "return h.sweep('seed', [1])"), {})
    with pytest.raises(SweepError, match="--search=tpe needs a search space.*h.loguniform"):
        search.run(definition, str(tmp_path / "s"), trials=2, metric="val/accuracy", mode="max")


def test_cli_errors_are_one_line(tmp_path):
    path = write_config(tmp_path, "return h.sweep('optimizer.lerning_rate', [1e-3])")
    proc = sweep_cli(f"--config={path}", f"--workdir={tmp_path / 's'}")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: trial lerning_rate=0.001: config key 'optimizer.lerning_rate' is unknown (did "
        "you mean 'optimizer.learning_rate'?); change get_sweep (or the sweep's --config flags)"
    ]
    proc = sweep_cli(
        f"--config={ROOT / 'configs' / 'digits_cnn.py'}", f"--workdir={tmp_path / 'nosweep'}"
    )
    assert proc.returncode == 1 and "has no get_sweep(h); add one" in proc.stderr
    # An empty --workdir was answered with "give --config=... and --workdir=DIR".
    # Needed unless --summarize is given: "drop the flag" led to "give ... --workdir=DIR".
    proc = sweep_cli(f"--config={path}", "--workdir=")
    assert proc.stderr == (
        "error: --workdir is empty; give a value (--workdir: sweep directory: one workdir per "
        "trial, results, study)\n"
    )
    proc = sweep_cli(f"--summarize={tmp_path}", "--workdir=")
    assert proc.stderr.startswith("error: --workdir is empty; give a value or drop the flag ")
    # A trial refused up front leaves no workdir (it had left one holding a lock file).
    path = write_config(tmp_path, "return h.sweep('optimizer.momentum', [0.9, 0.5])")
    proc = sweep_cli(f"--config={path}", f"--workdir={tmp_path / 'refused'}")
    assert proc.returncode == 1 and "has no effect" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "refused").exists()
    # A study draws its trials as it goes: a range whose end the config refuses (dropout 1.0)
    # is refused before the study's workdir exists, naming that end's trial.
    path = write_config(tmp_path, "return h.uniform('model.dropout', 0.0, 1.0)")
    proc = sweep_cli(f"--config={path}", f"--workdir={tmp_path / 'tpe'}", "--search=tpe")
    assert proc.returncode == 1, proc.stderr[-2000:]
    refused = "error: trial dropout=1: config key 'model.dropout' must be in [0, 1), got 1.0"
    assert proc.stderr.strip().splitlines()[-1].startswith(refused), proc.stderr[-2000:]
    assert not (tmp_path / "tpe").exists()


def test_cluster_flags_without_emit_and_values_kubernetes_refuses_are_one_line(tmp_path):
    # --image=foo without --emit ran the whole sweep here; a claim name with a space and a
    # relative image root were written into a Job that `kubectl apply` would refuse, and a Job
    # without --image ran `ann:latest`.
    path = write_config(tmp_path, "return h.sweep('optimizer.learning_rate', [1e-3])")
    base = [f"--config={path}", f"--workdir={tmp_path / 's'}"]
    for extra, said in [
        (["--image=foo"], "--image=foo is read only with --emit=k8s; add it, or drop --image"),
        (["--cluster_cpus=16"], "--cluster_cpus=16 is read only with --emit=slurm or --emit=k8s"),
        (["--emit=slurm", "--pvc=x"], "--pvc=x is read only with --emit=k8s"),
        (["--emit=k8s", "--pvc=bad name"], "--pvc='bad name' is not a PersistentVolumeClaim name"),
        (["--emit=k8s", "--image_root=app"], "--image_root=app must be an absolute path"),
        # It wrote `image: ann:latest` (Docker Hub's library/ann) without a word.
        (
            ["--emit=k8s"],
            "--emit=k8s needs --image, the container image the pods run (ann on "
            "its PATH, the project at --image_root), e.g. --image=registry.example.com/ann:1.0",
        ),
        (["--emit=k8s", "--image= "], "--emit=k8s needs --image"),
        # Accepted and ignored, as the cluster flags were.
        (["--trials=5"], "--trials is read only with --search=tpe; drop it, or add --search=tpe"),
        (["--pruner=none"], "--pruner is read only with --search=tpe"),
        (["--search=tpe", "--retry_failed"], "--retry_failed is read only with --search=grid"),
        (
            ["--summarize=x"],
            "--summarize rewrites the results of a sweep that ran; it reads no "
            "--config, --workdir: drop them",
        ),
    ]:
        line = one_line_error(sweep_cli(*base, *extra))
        assert line.startswith(f"error: {said}"), line
    assert not (tmp_path / "s").exists()
    # Nothing scored yet: the files named are those written (results.png was named, absent).
    results.write_sweep_file(str(tmp_path / "p"), {
        "config": path, "search": "grid", "metric": "val/accuracy", "mode": "max",
        "trials": [{"name": "a", "overrides": {}}]})  # fmt: skip
    proc = sweep_cli(f"--summarize={tmp_path / 'p'}")
    assert proc.stdout.rstrip().endswith(f"(results.csv and results.md in {tmp_path / 'p'})")
    assert f"`{path}`, grid search, 1 trial: 1 pending." in proc.stdout  # was "1 trials"


def test_summarize_names_a_training_run_given_as_the_sweep(tmp_path):
    # It said "RUN/sweep.json not found", where other jobs name what the directory holds.
    run = tmp_path / "runs" / "digits"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    with pytest.raises(SweepError) as e:
        results.write(str(run))
    assert str(e.value) == (
        f"--summarize={run} is a training run (config.json), not a sweep (no sweep.json): give "
        f"the --workdir of an ann sweep; its metrics: ann report --workdir={run}"
    )
    with pytest.raises(SweepError) as e:
        results.write(str(run.parent))
    assert str(e.value) == (
        f"--summarize={run.parent} holds runs (digits), not a sweep (no sweep.json): give the "
        "--workdir of an ann sweep"
    )
    with pytest.raises(SweepError, match="sweep.json not found: --summarize takes a sweep"):
        results.write(str(tmp_path / "nothing"))


def test_a_damaged_sweep_file_is_one_line_naming_it_and_the_fix(tmp_path, capsys):
    """`ann sweep --summarize` of a sweep whose sweep.json was cut short or emptied (outside ann:
    it is replaced atomically) was a JSONDecodeError traceback; a rerun rewrote it silently,
    unchecked. A damaged trial.json read as none without a word; a damaged run_status.json as
    a run that "exited without recording a status"."""
    sweep = tmp_path / "sw"
    info = {"config": "c.py", "search": "grid", "metric": "val/accuracy", "mode": "max",
            "trials": [{"name": "a", "overrides": {}}, {"name": "b", "overrides": {}}]}  # fmt: skip
    results.write_sweep_file(str(sweep), info)
    text = (sweep / "sweep.json").read_text()
    fix = (
        f"damaged; rerun the ann sweep command that made it, with the same flags (a trial's "
        f"{sweep}/TRIAL/command.sh shows its --config and overrides): it rewrites sweep.json, "
        "keeping the trials' results in their workdirs"
    )
    with pytest.raises(ValueError) as torn:
        json.loads(text[:50])
    for damaged, why in (
        (text[:50], f"is not JSON ({torn.value})"),
        ("", "is not JSON (empty)"),
        ("[]", "holds a JSON list, not a sweep's record"),
        ('{"config": "c.py"}', "holds no 'search' (missing)"),
        (text.replace('"b"', "2"), "lists a trial without its name and overrides"),
    ):
        (sweep / "sweep.json").write_text(damaged)
        with pytest.raises(SweepError) as e:
            results.write(str(sweep))
        assert str(e.value) == f"{sweep}/sweep.json {why}: {fix}"
        results.check_same_sweep(str(sweep), "grid", {}, ("val/accuracy", "max"), "c.py")
        warned = (
            f"warning: {sweep}/sweep.json {why}: damaged, so this command is not checked against "
            "the sweep's --search, --metric and --mode (each trial's config still is); a run of "
            "it rewrites the file with this command's\n"
        )
        # A JSON object: each check reads what it holds.
        assert capsys.readouterr().err == (warned if "JSON" in why else "")
    # A TPE sweep's study.db still says its kind: a grid run into it rewrote sweep.json as a
    # grid's and dropped the study's trials from the results.
    (sweep / "sweep.json").write_text("")
    (sweep / "study.db").write_bytes(b"")
    with pytest.raises(SweepError) as e:
        results.check_same_sweep(str(sweep), "grid", {}, ("val/accuracy", "max"), "c.py")
    assert str(e.value) == (
        f"--workdir={sweep} holds a tpe sweep (its study.db; its sweep.json is not JSON "
        "(empty)); resume it with --search=tpe, or give this one a new --workdir"
    )
    results.check_same_sweep(str(sweep), "tpe", {}, ("val/accuracy", "max"), "c.py")
    capsys.readouterr()
    (sweep / "study.db").unlink()
    # A trial's own records: warned about once (a sweep reads them many times), or named.
    (sweep / "sweep.json").write_text(text)
    for name, record, status in (("a", '{"returncode": 0, "wall', '{"status": "done", "step": 20}'),
                                 ("b", '{"returncode": 0}', '{"status": "do')):  # fmt: skip
        (sweep / name).mkdir()
        (sweep / name / "trial.json").write_text(record)
        (sweep / name / "run_status.json").write_text(status)
        (sweep / name / "metrics.jsonl").write_text('{"step": 20, "val/accuracy": 0.5}\n')
    rows = {r["trial"]: r for r in results.collect(str(sweep))[1]}
    results.collect(str(sweep))
    assert capsys.readouterr().err == (
        f"warning: {sweep}/a/trial.json is not JSON (Unterminated string starting at: line 1 "
        "column 19 (char 18)): damaged, read as no launch record (its command, attempts and wall "
        "time; the trial's status is read from its run's run_status.json); delete it (the sweep "
        "writes a new one when it runs the trial)\n"
    )
    assert rows["a"]["status"] == "done" and rows["b"]["status"] == "unknown"
    assert rows["b"]["error"] == (
        f"{sweep}/b/run_status.json is not JSON (damaged, or edited by hand), so how the run "
        "ended (done, early stopped, pruned) is unknown; its metrics count"
    )


def test_a_trial_whose_records_are_damaged_is_read_as_its_other_records_say(tmp_path, capsys):
    """A finished trial whose run_status.json was emptied read `failed`, and `Best:` named a
    worse trial: it exited 0 (trial.json), which ann train does only once its run ended, so it
    is `unknown` and its metrics rank with the done trials'. A failed trial whose trial.json
    was damaged read `pending`, and a resume ran it again unasked: its run_status.json says."""
    sweep = tmp_path / "sw"
    info = {"config": "c.py", "search": "grid", "metric": "val/accuracy", "mode": "max",
            "trials": [{"name": n, "overrides": {}} for n in ("good", "worse", "bad")]}  # fmt: skip
    results.write_sweep_file(str(sweep), info)
    for name, value, status in (
        ("good", 0.94, ""),
        ("worse", 0.90, '{"status": "done"}'),
        ("bad", 0.99, '{"status": "failed", "message": "E: boom"}'),
    ):
        (sweep / name).mkdir()
        (sweep / name / "trial.json").write_text('{"returncode": 0}' if value < 0.95 else "{")
        (sweep / name / "run_status.json").write_text(status)
        (sweep / name / "metrics.jsonl").write_text(f'{{"step": 20, "val/accuracy": {value}}}\n')
    (sweep / "worse" / "run_status.json").write_text('{"status": "done", "step": 20}')
    info, rows = results.collect(str(sweep))
    assert [r["status"] for r in rows] == ["unknown", "done", "failed"]
    assert rows[2]["error"] == "E: boom"
    text = results.markdown(str(sweep), info, rows, None)
    assert "1 done, 1 unknown, 1 failed" in text
    assert "Best: `good`, val/accuracy 0.9400 at step 20." in text
    (sweep / "good" / "run_status.json").unlink()  # deleted: the same
    assert trials_lib.status(str(sweep / "good"))[0] == "unknown"
    capsys.readouterr()


def test_the_objective_must_be_a_validation_metric(tmp_path):
    # Ranking trials on the test split would make the winner's test score optimistic.
    path = write_config(tmp_path, "return h.sweep('optimizer.learning_rate', [1e-3])")
    proc = sweep_cli(
        f"--config={path}", f"--workdir={tmp_path / 's'}", "--metric=eval/accuracy", "--dry_run"
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: --metric is 'eval/accuracy', which is not a validation metric; choosing on "
        "'eval/accuracy' would select on the reported split: use 'val/accuracy' (metrics of "
        "data.validation_split)"
    ]
    # A mode against the metric ranked the worst trial first, as best_mode did a checkpoint.
    proc = sweep_cli(f"--config={path}", f"--workdir={tmp_path / 's'}", "--metric=val/loss",
                     "--mode=max", "--dry_run")  # fmt: skip
    assert proc.stderr.strip().splitlines() == [
        "error: --metric is 'val/loss', better lower, with --mode='max': it would keep the "
        "worst value; set --mode=min"
    ]
    # The default objective is the config's best_metric, a validation metric.
    definition = definition_lib.load(path, {})
    assert definition.base.best_metric == "val/accuracy"
    # Named as --metric, it keeps the config's best_mode (it was refused without --mode, though
    # the README's TPE example passes the one the config has); another metric needs its --mode.
    workdir = tmp_path / "s"
    named = sweep_cli(f"--config={path}", f"--workdir={workdir}", "--metric=val/accuracy",
                      "--dry_run")  # fmt: skip
    assert named.returncode == 0 and "--config.optimizer.learning_rate=0.001" in named.stdout
    other = sweep_cli(f"--config={path}", f"--workdir={workdir}", "--metric=val/loss", "--dry_run")
    # It read "is not the config's best_metric (val/accuracy), whose --mode it has: say ...":
    # now the flag it needs, the mode the name implies, and the other fix.
    assert other.stderr.strip().splitlines()[-1] == (
        "error: --metric=val/loss is given without --mode: add --mode=min (val/loss is better "
        "lower), or drop --metric to rank by the config's best_metric, val/accuracy"
    )
    # Ranked by another metric, the trials keep their best checkpoint by it: they kept the
    # config's val/accuracy step, which export and report took while results.md named the
    # val/loss one (a fifth trial).
    by_loss = sweep_cli(f"--config={path}", f"--workdir={workdir}", "--metric=val/loss",
                        "--mode=min", "--dry_run")  # fmt: skip
    assert by_loss.returncode == 0, by_loss.stderr
    assert "--config.best_metric=val/loss --config.best_mode=min" in by_loss.stdout
    assert "best_metric" not in named.stdout  # the config's own: nothing to add
    mixed = sweep_cli(f"--config={path}", f"--workdir={workdir}", "--metric=val/loss",
                      "--mode=min", "--config.best_metric=val/accuracy", "--dry_run")  # fmt: skip
    assert mixed.stderr.strip().splitlines()[-1] == (
        "error: --config.best_metric=val/accuracy keeps each trial's best checkpoint by another "
        "metric than the sweep ranks by (--metric=val/loss); drop one of them"
    )
    # A fixed best_mode against --mode was dropped without a word; a best_metric that agrees
    # was refused, checked against the config's own mode (a fresh-user trial).
    against = sweep_cli(f"--config={path}", f"--workdir={workdir}", "--metric=val/loss",
                        "--mode=min", "--config.best_mode=max", "--dry_run")  # fmt: skip
    assert against.stderr.strip().splitlines()[-1] == (
        "error: --config.best_mode=max keeps each trial's best checkpoint by another mode than "
        "the sweep ranks by (--mode=min); drop one of them"
    )
    agrees = sweep_cli(f"--config={path}", f"--workdir={workdir}", "--metric=val/loss",
                       "--mode=min", "--config.best_metric=val/loss", "--dry_run")  # fmt: skip
    assert agrees.returncode == 0, agrees.stderr
    assert "--config.best_metric=val/loss --config.best_mode=min" in agrees.stdout
    # A typo of it, without --mode: test_a_metric_the_trials_do_not_compute_is_named_first.


def test_a_metric_the_trials_do_not_compute_is_named_first(tmp_path, one_device):
    # Without --mode, --metric=val/nope was asked for its mode, and only with one refused
    # (once a trial had run, or by --dry_run's check): the unknown metric is now said first.
    path = write_config(tmp_path, "return h.sweep('optimizer.learning_rate', [1e-3])")
    workdir = tmp_path / "s"
    for extra in ("--dry_run", "--parallel=1"):
        line = one_line_error(sweep_cli(f"--config={path}", f"--workdir={workdir}",
                                        "--metric=val/acc", extra))  # fmt: skip
        assert line == (
            "error: --metric=val/acc is not a validation metric of this run; choose one of "
            "val/accuracy, val/auroc, val/f1, val/loss, val/precision, val/recall and give its "
            "--mode=max or --mode=min (whether higher is better), or drop --metric to rank by "
            "the config's best_metric, val/accuracy"
        ), line
        assert not workdir.exists()


def test_a_typo_of_a_metric_the_trials_log_is_refused_before_any_is_scored(tmp_path):
    # --metric=val/acuracy (with its --mode) passed the sweep's checks: --dry_run scored a
    # batch to refuse it, a real sweep's first trial did, and neither said the name meant.
    # Now refused from the config alone (experiments.metric_names), with or without --mode.
    path = write_config(tmp_path, "return h.sweep('optimizer.learning_rate', [1e-3])")
    workdir = tmp_path / "s"
    for extra in (["--mode=max", "--parallel=1"], ["--dry_run"]):
        line = one_line_error(sweep_cli(f"--config={path}", f"--workdir={workdir}",
                                        "--metric=val/acuracy", *extra))  # fmt: skip
        assert line == (
            "error: --metric=val/acuracy is not a validation metric of this run (did you mean "
            "'val/accuracy'?); choose one of val/accuracy, val/auroc, val/f1, val/loss, "
            "val/precision, val/recall"
        ), line
        assert not workdir.exists()


def test_a_metric_the_experiment_does_not_log_is_the_metrics_fault_not_get_sweeps(tmp_path):
    # A regression's val/rmse on a classification config (trial 47d: val/accuracy on diabetes)
    # was refused as each trial's best_metric, "change get_sweep". Refused as --metric's,
    # unless a trial sweeps what decides the metrics (its experiment, its task.*).
    path = write_config(tmp_path, "return h.sweep('optimizer.learning_rate', [1e-3])")
    workdir = tmp_path / "s"
    line = one_line_error(sweep_cli(f"--config={path}", f"--workdir={workdir}",
                                    "--metric=val/rmse", "--mode=min", "--dry_run"))  # fmt: skip
    assert line == (
        "error: --metric=val/rmse is not a validation metric of this run; choose one of "
        "val/accuracy, val/auroc, val/f1, val/loss, val/precision, val/recall; or drop --metric "
        "to rank by the config's best_metric, val/accuracy"
    ), line
    assert not workdir.exists()


def test_a_metric_without_its_split_is_told_one_the_trials_compute(tmp_path, one_device):
    # --metric=nope was told "use 'val/nope'", a metric no trial computes: the fix is val/NAME
    # only where the trials compute it, else the list of those they do.
    path = write_config(tmp_path, "return h.sweep('optimizer.learning_rate', [1e-3])")
    workdir = tmp_path / "s"
    for metric, use in (
        ("nope", "choose one of val/accuracy, val/auroc, val/f1, val/loss, val/precision, "
                 "val/recall"),
        ("train/loss", "use 'val/loss'"),
    ):  # fmt: skip
        line = one_line_error(sweep_cli(f"--config={path}", f"--workdir={workdir}",
                                        f"--metric={metric}", "--dry_run"))  # fmt: skip
        assert line.startswith(f"error: --metric is '{metric}', which "), line
        assert line.endswith(f": {use} (metrics of data.validation_split)"), line
    assert not workdir.exists()


def test_a_dry_run_or_emit_refuses_a_metric_the_trials_do_not_compute(tmp_path, one_device):
    # --dry_run and --emit accepted --metric=val/nope, which every real trial then refused
    # before its first step: they now stop with the line a real sweep stops with, --metric's
    # (it was each trial's best_metric's, "change get_sweep").
    path = write_config(tmp_path, "return h.sweep('optimizer.learning_rate', [1e-3])")
    workdir = tmp_path / "s"
    for extra in ("--dry_run", "--emit=slurm"):
        line = one_line_error(sweep_cli(f"--config={path}", f"--workdir={workdir}",
                                        "--metric=val/nope", "--mode=max", extra))  # fmt: skip
        assert line.startswith(
            "error: --metric=val/nope is not a validation metric of this run; choose one of "
            "val/accuracy, "
        ) and line.endswith(
            "; or drop --metric to rank by the config's best_metric, val/accuracy"
        ), line
        assert not workdir.exists()  # --emit wrote no trial


def test_a_running_trials_steps_are_where_it_is_not_its_last_checkpoint(tmp_path):
    # run_status.json's step, while running, is the last checkpoint begun (200 of a trial at
    # step 290): results.md gave that as the trial's steps.
    from ann.train import run_status

    workdir = tmp_path / "sweep" / "lr=0.1"
    workdir.mkdir(parents=True)
    run_status.write(str(workdir), "running", 200, total_steps=1000)
    with open(workdir / "metrics.jsonl", "w") as f:
        for step in (100, 200, 290):
            f.write(json.dumps({"step": step, "train/loss": 1.0}) + "\n")
    row = results.trial_row(str(tmp_path / "sweep"), "lr=0.1", {}, "val/accuracy", "max")
    assert (row["status"], row["steps"]) == ("running", 290)
    # Where a killed run's record is read, its step is named for what it is.
    record = {**run_status.read(str(workdir)), "pid": None, "host": ""}
    assert "'running', step 200 of 1000 when last recorded (its start or its last checkpoint " \
        "begun)" in run_status.stale_running(record)  # fmt: skip


# ---- the launcher, with stand-in trials --------------------------------------------------


class Script(trials_lib.Trial):
    """A trial that runs a Python snippet instead of ann.main."""

    code: str = ""

    def argv(self):
        return [sys.executable, "-c", self.code]


def script_trial(tmp_path, name, code):
    trial = Script(name, {}, {}, "unused.py", str(tmp_path), str(tmp_path))
    trial.code = code
    return trial


def test_cpu_sets_are_disjoint(monkeypatch, capsys):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4})
    assert launch.cpu_sets(2) == [[0, 1, 2], [3, 4]]
    assert launch.cpu_sets(1) == [[0, 1, 2, 3, 4]]
    assert capsys.readouterr().err == ""
    assert launch.cpu_sets(7)[5:] == [[0], [1]]  # more trials than cores: shared
    # A plain line, as ann's other warnings (it carried absl's "W1202 12:00:00.000 ... ]").
    assert capsys.readouterr().err == (
        "warning: 7 trials at a time (--parallel) are more than the 5 cores available: they "
        "will share cores\n"
    )


def test_launcher_pins_trials_and_records_failures(tmp_path):
    show = (
        "import os; print(sorted(os.sched_getaffinity(0)), os.environ['OMP_NUM_THREADS'],"
        " os.environ.get('ANN_LAUNCHER_PID') == str(os.getppid()))"  # stops if the sweep dies
        "\nimport time; time.sleep(0.5)"
    )
    fail = "import sys; print('error: bad thing happened', file=sys.stderr); sys.exit(1)"
    todo = iter(
        [
            script_trial(tmp_path, "a", show),
            script_trial(tmp_path, "b", show),
            script_trial(tmp_path, "c", fail),
        ]
    )
    ended = {}
    import jax

    jax.devices()  # as in a process that started JAX's backend: its fork check is armed
    with warnings.catch_warnings(record=True) as caught:
        # The pinning ran Python between fork and exec (preexec_fn): JAX warned of a deadlock.
        warnings.simplefilter("always")
        launch.run(lambda: next(todo, None), lambda t, o: ended.setdefault(t.name, o), parallel=2)
    assert not [w for w in caught if "fork" in str(w.message)], [str(w.message) for w in caught]
    assert sorted(ended) == ["a", "b", "c"]
    assert ended["c"].status == "failed" and ended["c"].error == "bad thing happened"
    assert trials_lib.read_record(str(tmp_path / "c"))["returncode"] == 1
    cores = sorted(os.sched_getaffinity(0))  # this thread's own, as before the sweep
    seen = []
    for name in "ab":
        out = (tmp_path / name / "stdout.log").read_text().splitlines()[-1]
        pinned, threads, watches = out.rsplit(" ", 2)
        seen.append(json.loads(pinned))
        assert int(threads) == len(seen[-1])
        assert watches == "True"  # the trial's ann.main would watch this sweep's pid
    if len(cores) >= 2:  # two at a time on disjoint halves of the machine
        assert not set(seen[0]) & set(seen[1])
        assert sorted(seen[0] + seen[1]) == cores


def test_ctrl_c_stops_running_trials_as_interrupted_not_failed(tmp_path, capsys):
    sleeper = script_trial(tmp_path, "slow", "import time; time.sleep(60)")
    calls = []

    def next_trial():
        calls.append(1)
        if len(calls) == 1:
            return sleeper
        raise KeyboardInterrupt  # as if Ctrl-C arrived while the trial runs

    ended = {}
    with pytest.raises(KeyboardInterrupt):
        launch.run(next_trial, lambda t, o: ended.setdefault(t.name, o), parallel=2)
    # Killed by the sweep's SIGTERM before it could save: resumable, not a failure.
    assert ended["slow"].status == "interrupted" and ended["slow"].returncode < 0
    assert trials_lib.status(sleeper.workdir)[0] == "interrupted"
    # A plain line, as Ctrl-C's other lines (it was an absl warning, "W1202 ... ] interrupted").
    said = capsys.readouterr()
    assert said.err == (
        "interrupted (Ctrl-C): stopping 1 running trial (each saves a checkpoint and exits)\n"
    )
    # The start, a line as the sweep's others ("[1/4] done ..."): it was absl's "I1203 ... ]".
    assert said.out.startswith("started slow on cores "), said.out


def test_a_sigterm_stops_running_trials_as_ctrl_c_does(tmp_path, capsys):
    # `kill`, `timeout` or `docker stop` ended the sweep at once: no line, trials left
    # "running" in its records (their processes stopped by the launcher watch).
    sleeper = script_trial(tmp_path, "slow", "import time; time.sleep(60)")
    queue = [sleeper]

    def next_trial():
        if queue:
            return queue.pop()
        os.kill(os.getpid(), signal.SIGTERM)  # while the trial runs (raised once this returns)
        return None

    ended = {}
    with pytest.raises(cli.Terminated), cli.sigterm_as_interrupt():
        launch.run(next_trial, lambda t, o: ended.setdefault(t.name, o), parallel=2)
    assert ended["slow"].status == "interrupted"
    assert trials_lib.status(sleeper.workdir)[0] == "interrupted"
    assert capsys.readouterr().err == (
        "terminated (SIGTERM): stopping 1 running trial (each saves a checkpoint and exits)\n"
    )


def test_a_sigterm_whose_stop_code_drops_still_stops_the_sweep_and_its_trials(tmp_path):
    # Raised where the sweep was, a SIGTERM's stop that code there caught (a library's `except
    # BaseException`, a callback, a finalizer) was lost: the sweep ran its trials to their end.
    sleeper = script_trial(tmp_path, "slow", "import time; time.sleep(30)")
    queue = [sleeper]

    def log(line):
        try:
            signal.raise_signal(signal.SIGTERM)
        except BaseException:
            pass  # as code that catches everything would

    ended = {}
    with pytest.raises(cli.Terminated), cli.sigterm_as_interrupt():
        launch.run(
            lambda: queue.pop() if queue else None,
            lambda t, o: ended.setdefault(t.name, o),
            parallel=2,
            log=log,
        )
    assert ended["slow"].status == "interrupted"


def test_a_sigterm_dropped_after_the_sweeps_last_safe_point_still_ends_it():
    # A body that went on to its end after its SIGTERM's stop was dropped exited 0.
    with pytest.raises(cli.Terminated, match=r"^terminated \(SIGTERM\)$"):
        with cli.sigterm_as_interrupt():
            try:
                signal.raise_signal(signal.SIGTERM)
            except cli.Terminated:
                pass
            signal.raise_signal(signal.SIGTERM)  # a second is ignored: the first is on its way
    assert not cli._terminated  # (forgotten with its handler)


def test_a_sigterm_as_a_trial_starts_stops_that_trial_too(tmp_path, monkeypatch):
    # Raised between the trial's Popen and the launcher keeping track of it, the stop left the
    # trial training, unstopped and unrecorded, holding its workdir's lock against the resume.
    sleeper = script_trial(tmp_path, "slow", "import time; time.sleep(30)")
    queue = [sleeper]
    real = subprocess.Popen

    def popen(*args, **kwargs):
        proc = real(*args, **kwargs)
        signal.raise_signal(signal.SIGTERM)
        return proc

    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    ended = {}
    with pytest.raises(cli.Terminated), cli.sigterm_as_interrupt():
        launch.run(
            lambda: queue.pop() if queue else None,
            lambda t, o: ended.setdefault(t.name, o),
            parallel=1,
        )
    assert ended["slow"].status == "interrupted"
    assert trials_lib.status(sleeper.workdir)[0] == "interrupted"


def test_a_sigterm_while_the_sweep_stops_its_trials_waits_for_them(tmp_path):
    # A failed sweep (or a Ctrl-C) stopping its trials, then a SIGTERM: raised as the first
    # trial's end was recorded, it left the second unwaited and its end unrecorded.
    queue = [script_trial(tmp_path, n, "import time; time.sleep(30)") for n in "ab"]
    queue.append(script_trial(tmp_path, "bad", "import sys; sys.exit(1)"))
    ended = {}

    def on_end(trial, outcome):
        ended[trial.name] = outcome
        if outcome.status == "failed":
            raise SweepError("every trial would fail")
        if len(ended) == 2:  # the first stopped trial's end: the SIGTERM comes
            signal.raise_signal(signal.SIGTERM)

    with pytest.raises(cli.Terminated), cli.sigterm_as_interrupt():
        launch.run(lambda: queue.pop() if queue else None, on_end, parallel=3)
    assert {n: o.status for n, o in ended.items()} == {
        "bad": "failed",
        "a": "interrupted",
        "b": "interrupted",
    }


def test_a_stop_while_the_results_are_written_comes_once_all_are(tmp_path, monkeypatch):
    # Raised between results.csv and results.md, the two named other tables.
    info = {"config": "c.py", "search": "grid", "metric": "val/accuracy", "mode": "max"}
    info["trials"] = [{"name": "a", "overrides": {"model.dropout": 0.1}}]
    (tmp_path / "sweep.json").write_text(json.dumps(info))

    def plot(*args):
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(results, "plot", plot)
    with pytest.raises(cli.Terminated), cli.sigterm_as_interrupt():
        results.write(str(tmp_path))
    assert "| a | pending |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.csv").read_text().startswith("trial,")


def test_a_trial_of_a_sweep_that_ignores_ctrl_c_ignores_it_too(tmp_path):
    # A background sweep (`ann sweep ... &` in a script) ignores SIGINT, and so did its trials;
    # started inside `interrupts_deferred` (which notes SIGINT), they would not have.
    code = "import signal; print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)"
    queue = [script_trial(tmp_path, "t", code)]
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        launch.run(lambda: queue.pop() if queue else None, lambda t, o: None, log=lambda _: None)
    finally:
        signal.signal(signal.SIGINT, before)
    assert (tmp_path / "t" / "stdout.log").read_text().splitlines()[-1] == "True"


def test_a_sigterm_as_a_study_queues_its_failed_trials_again_comes_once_all_are(tmp_path):
    # Raised between setting the failed trials aside and queueing their parameters again, the
    # stop lost the parameters: a resumed study drew others in their place.
    import optuna

    url = f"sqlite:///{tmp_path}/study.db"
    study = search.open_study(url, str(tmp_path), "val/accuracy", "max", 0, 2, "median", 0)
    for name in ("a", "b"):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        trial.set_user_attr("name", name)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    enqueue = study.enqueue_trial

    def enqueue_trial(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)
        enqueue(*args, **kwargs)

    study.enqueue_trial = enqueue_trial
    with pytest.raises(cli.Terminated), cli.sigterm_as_interrupt():
        search.rerun_failed(study)
    assert study.user_attrs[search.SET_ASIDE] == [0, 1]
    assert [t.state.name for t in study.trials].count("WAITING") == 2


def test_an_attempt_killed_with_its_sweep_keeps_its_wall_time(tmp_path):
    # A sweep SIGKILLed (or OOM-killed) never recorded its running trial's end: the attempt's
    # time was missing from results.csv's wall seconds, and from the resumed trial's record.
    trial = script_trial(
        tmp_path, "t", "import sys, time; time.sleep(1.5); print('x', file=sys.stderr)"
    )
    run = launch._start(trial, sorted(os.sched_getaffinity(0)))  # the sweep, killed: no _finish
    run.proc.wait()
    for f in run.logs:
        f.close()
    row = results.trial_row(str(tmp_path), "t", {}, "val/accuracy", "max")
    assert row["status"] == "interrupted" and 1.4 <= row["wall seconds"] < 30, row
    trial.code = "pass"  # resumed: the attempt's time stays in the record
    queue = [trial]
    launch.run(lambda: queue.pop() if queue else None, lambda t, o: None, log=lambda line: None)
    record = trials_lib.read_record(trial.workdir)
    assert record["attempts"] == 2 and 1.4 <= record["wall_seconds"] < 30, record


def test_a_trial_whose_process_is_gone_is_not_running(tmp_path):
    # A sweep killed with SIGKILL left `started` without an end: `--summarize` said "1
    # running" for good, with no process left.
    workdir = tmp_path / "trial"
    workdir.mkdir()
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    trials_lib.update_record(
        str(workdir), started=trials_lib.now(), returncode=None, pid=int(done.stdout),
        host=socket.gethostname(),
    )  # fmt: skip
    assert trials_lib.status(str(workdir))[0] == "interrupted"
    trials_lib.update_record(str(workdir), pid=os.getpid())  # alive: still running
    assert trials_lib.status(str(workdir))[0] == "running"


@pytest.mark.parametrize("returncode", [143, 130])
def test_a_trial_a_cluster_stopped_with_its_checkpoint_saved_is_interrupted(tmp_path, returncode):
    # A SLURM or Kubernetes trial that a SIGTERM stopped (saved, exit 143) read as "failed",
    # and a resubmitted sweep's summary called it an error.
    workdir = tmp_path / "trial"
    workdir.mkdir()
    (workdir / "run_status.json").write_text(json.dumps({"status": "interrupted", "step": 40}))
    trials_lib.update_record(str(workdir), launcher="slurm", returncode=returncode)
    assert trials_lib.status(str(workdir))[0] == "interrupted"
    trials_lib.update_record(str(workdir), returncode=1)  # a crash after the save still fails
    assert trials_lib.status(str(workdir))[0] == "failed"


@pytest.mark.parametrize("returncode", [143, 130])
def test_a_trial_a_cluster_stopped_before_it_started_is_interrupted(tmp_path, returncode):
    # An emitted k8s or SLURM script SIGTERMed before its trial started records 143 and no
    # run_status.json exists: `--summarize` said `failed ... exited with status 143`.
    workdir = tmp_path / "trial"
    workdir.mkdir()
    trials_lib.update_record(str(workdir), launcher="kubernetes", attempts=1, returncode=returncode)
    status, details = trials_lib.status(str(workdir))
    assert status == "interrupted" and "error" not in details
    assert status not in trials_lib.RANKED  # so a rerun runs it
    trials_lib.update_record(str(workdir), returncode=1)  # a failure before the start still fails
    assert trials_lib.status(str(workdir))[0] == "failed"


def test_a_trial_that_recorded_its_end_is_done_though_the_stop_killed_its_exit(
    tmp_path, monkeypatch
):
    # A run that recorded its end (done) and was still exiting when the sweep's SIGTERM landed
    # was "failed, killed by SIGTERM", in the study too, and a resumed sweep did not rerun it.
    exiting = script_trial(tmp_path, "exiting", "import time; time.sleep(60)")
    os.makedirs(exiting.workdir)
    with open(os.path.join(exiting.workdir, "run_status.json"), "w") as f:
        f.write(json.dumps({"status": "done", "step": 60}))
    queue = [exiting]

    def next_trial():
        if queue:
            return queue.pop()
        raise KeyboardInterrupt  # Ctrl-C, with the trial still running

    cores = sorted(os.sched_getaffinity(0))
    monkeypatch.setattr(launch, "cpu_sets", lambda parallel: [cores] * parallel)
    ended = {}
    with pytest.raises(KeyboardInterrupt):
        launch.run(next_trial, lambda t, o: ended.setdefault(t.name, o), parallel=2)
    assert ended["exiting"].status == "done" and ended["exiting"].returncode < 0
    assert trials_lib.status(exiting.workdir)[0] == "done"


def test_a_sweep_stops_its_trials_when_one_shows_the_metric_is_wrong(tmp_path):
    # A mistyped --metric ran every trial to the end (grid: exit 0, an empty ranking column).
    sleeper = script_trial(tmp_path, "slow", "import time; time.sleep(60)")
    done = script_trial(tmp_path, "done", "pass")
    os.makedirs(done.workdir)
    with open(os.path.join(done.workdir, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"step": 10, "val/accuracy": 0.5, "val/loss": 1.0}) + "\n")
    with open(os.path.join(done.workdir, "run_status.json"), "w") as f:
        f.write(json.dumps({"status": "done", "step": 10}))
    queue = iter([sleeper, done])

    def on_end(trial, outcome):
        results.check_metric(trial, outcome, "val/acuracy")

    with pytest.raises(SweepError, match=r"--metric=val/acuracy is not a validation metric of "
                       r"trial done \(did you mean 'val/accuracy'\?\); choose one of "
                       r"val/accuracy, val/loss"):  # fmt: skip
        launch.run(lambda: next(queue, None), on_end, parallel=2)
    assert trials_lib.status(sleeper.workdir)[0] == "interrupted"  # stopped, not left running
    # A trial whose pruning listener failed on the metric stops the sweep too.
    failed = launch.Outcome("failed", 1, "sweep --metric: 'val/x' is not a validation metric "
                            "of this run; choose one of val/accuracy", 3.0)  # fmt: skip
    with pytest.raises(SweepError, match="trial done: sweep --metric: 'val/x' is not"):
        results.check_metric(done, failed, "val/x")
    results.check_metric(done, launch.Outcome("done", 0, None, 3.0), "val/loss")  # present


def test_a_workdir_of_the_other_search_and_a_sweep_without_a_result_are_refused(tmp_path):
    results.write_sweep_file(str(tmp_path), {"search": "tpe", "trials": []})
    with pytest.raises(SweepError, match="holds a tpe sweep; resume it with --search=tpe"):
        results.check_same_sweep(str(tmp_path), "grid")
    results.check_same_sweep(str(tmp_path), "tpe")
    results.check_same_sweep(str(tmp_path / "new"), "grid")
    # Resumed with other fixed overrides, its finished trials were reported as if trained so.
    os.makedirs(tmp_path / "t")
    (tmp_path / "t" / "run_status.json").write_text(json.dumps({"status": "done", "step": 20}))
    scored = {"search": "tpe", "fixed": {"total_steps": "20"}, "trials": [{"name": "t"}]}
    results.write_sweep_file(str(tmp_path), scored)
    results.check_same_sweep(str(tmp_path), "tpe", {"total_steps": 20})
    with pytest.raises(SweepError) as e:
        results.check_same_sweep(str(tmp_path), "tpe", {"total_steps": 30})
    assert str(e.value) == (
        f"--workdir={tmp_path} holds a sweep run with fixed overrides --config.total_steps=20 "
        "(this command: --config.total_steps=30): its trial t was scored (done) with those, so "
        "results would mix settings; give this one a new --workdir, or resume it with the same "
        "flags"
    )
    # It said "..., not none".
    with pytest.raises(SweepError, match=r"overrides --config.total_steps=20 \(this command: "
                       r"none\)"):  # fmt: skip
        results.check_same_sweep(str(tmp_path), "tpe", {})
    # A sweep run without any said "with fixed overrides none" (trial 48b).
    results.write_sweep_file(str(tmp_path), {**scored, "fixed": {}})
    with pytest.raises(SweepError) as e:
        results.check_same_sweep(str(tmp_path), "tpe", {"total_steps": 30})
    assert str(e.value).startswith(
        f"--workdir={tmp_path} holds a sweep run with no fixed overrides (this command: "
        "--config.total_steps=30): its trial t was scored (done) without any, so results"
    ), e.value
    # Every trial failed: the command exits 1 rather than 0 with nothing ranked.
    info = {"config": "c.py", "search": "grid", "metric": "val/accuracy", "mode": "max",
            "trials": [{"name": "a", "overrides": {}}, {"name": "b", "overrides": {}}]}  # fmt: skip
    results.write_sweep_file(str(tmp_path), info)
    for name in ("a", "b"):
        os.makedirs(tmp_path / name)
        trials_lib.update_record(str(tmp_path / name), returncode=1, error="boom")
    with pytest.raises(SweepError, match="no trial of .* finished"):
        results.check_a_trial_finished(str(tmp_path))
    trials_lib.update_record(str(tmp_path / "b"), returncode=0)
    # No trial scored on the sweep's metric (a mistyped one fails them all): run again with the
    # right one, as the README says (it was refused, and told to resume with the typo).
    results.check_same_sweep(str(tmp_path), "grid", None, ("val/loss", "min"))
    # A mistyped --metric with its --mode also fixed best_metric and best_mode (`keep_best_by`);
    # the right one, the config's own, fixes neither: it was refused as other fixed overrides.
    typo = {**info, "fixed": {"best_metric": "val/acuracy", "best_mode": "max"}}
    results.write_sweep_file(str(tmp_path), typo)
    results.check_same_sweep(str(tmp_path), "grid", {}, ("val/accuracy", "max"))
    run_status_file = tmp_path / "b" / "run_status.json"
    run_status_file.write_text(json.dumps({"status": "done", "step": 20}))
    results.check_a_trial_finished(str(tmp_path))
    # Resumed with another objective once a trial was ranked on it: refused (sweep.json was
    # rewritten and the trials ranked by the new one, without a word).
    results.check_same_sweep(str(tmp_path), "grid", None, ("val/accuracy", "max"))
    with pytest.raises(SweepError) as e:
        results.check_same_sweep(str(tmp_path), "grid", None, ("val/loss", "min"))
    assert str(e.value) == (
        f"--workdir={tmp_path} holds a sweep ranked by val/accuracy (max), not val/loss (min): "
        "its trials were ranked on it; resume it with --metric=val/accuracy "
        "--mode=max, read the other metrics in its results.csv, or give this one a new --workdir"
    )


def test_a_damaged_study_database_is_one_line_naming_it_and_the_fix(tmp_path, monkeypatch):
    """A TPE sweep rerun on a study.db cut short (`truncate -s 8192 study.db`) was a SQLAlchemy
    traceback ending `database disk image is malformed [SQL: PRAGMA main.table_info(...)]`."""
    path = str(tmp_path / "study.db")
    url = f"sqlite:///{path}"
    search.open_study(url, str(tmp_path), "val/accuracy", "max", 0, 2, "median", 0).ask()
    monkeypatch.setenv(pruning.ENV, json.dumps({
        "storage": url, "study": search.STUDY, "trial_id": 1, "metric": "val/accuracy",
        "pruner": {"name": "median", "startup_trials": 2, "warmup_steps": 0}}))  # fmt: skip
    [listener] = pruning.listeners_from_env(None)  # a trial's, reporting its evals
    size = os.path.getsize(path)
    fix = (
        f"restore it from a backup, or move it aside (mv {path} {path}.damaged) and rerun this "
        "command: a new study starts, and a trial it draws again (same number and parameters, "
        "as the same --seed draws the first ones) is taken from its workdir, not retrained"
    )
    for damage, said in ((lambda f: f.truncate(size // 2), "database disk image is malformed"),
                         (lambda f: f.write(b"x" * 4096), "file is not a database")):  # fmt: skip
        with open(path, "r+b") as f:
            damage(f)
        with pytest.raises(SweepError) as e:
            search.open_study(url, str(tmp_path), "val/accuracy", "max", 0, 2, "median", 0)
        assert str(e.value) == f"{path}, the TPE study's database, is damaged ({said}); {fix}"
    # Damaged while a trial starts or reports: its run fails in one line (the sweep's error
    # column).
    said = f"{path}, the TPE study's database, is damaged (file is not a database); " + (
        fix.replace("rerun this command", "rerun the sweep's command")
    )
    with pytest.raises(ConfigError) as e:
        pruning.listeners_from_env(None)
    assert str(e.value) == said
    with pytest.raises(ConfigError) as e:
        listener.on_eval(hooks.StepInfo(step=10, total_steps=20, state=None), {"val/accuracy": 1})
    assert str(e.value) == said
    # Damaged while the sweep runs: it stops in one line, as on any SweepError.
    os.remove(path)
    definition = definition_lib.load(
        write_config(tmp_path, 'return h.uniform("optimizer.learning_rate", 1e-4, 1e-2)'), {}
    )

    def damaged_then_asked(next_trial, on_end, parallel, log):
        with open(path, "r+b") as f:
            f.truncate(size // 2)
        next_trial()

    monkeypatch.setattr(launch, "run", damaged_then_asked)
    with pytest.raises(SweepError, match=r"is damaged \(database disk image is malformed\)"):
        search.run(definition, str(tmp_path), 3, "val/accuracy", "max", log=lambda line: None)


def test_another_programs_database_as_study_db_is_refused_untouched(tmp_path):
    """A study.db that another program made (an SQLite file with its own tables) got Optuna's
    tables written into it without a word; the registry refuses such a registry.db."""
    import sqlite3

    path = tmp_path / "study.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE x (a INTEGER)")
        db.commit()
    before = path.read_bytes()
    with pytest.raises(SweepError) as e:
        search.open_study(f"sqlite:///{path}", str(tmp_path), "val/accuracy", "max", 0, 2,
                          "median", 0)  # fmt: skip
    assert str(e.value) == (
        f"{path} is not a TPE study's database (it holds the table x): another program's; give "
        "this sweep another --workdir"
    )
    assert path.read_bytes() == before
    # Optuna's own tables, and SQLite's, are a study's.
    path.unlink()
    url = f"sqlite:///{path}"
    search.open_study(url, str(tmp_path), "val/accuracy", "max", 0, 2, "median", 0).ask()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("ANALYZE")
    search.open_study(url, str(tmp_path), "val/accuracy", "max", 0, 2, "median", 0)


def test_a_study_whose_metric_scored_nothing_takes_the_corrected_one(tmp_path, capsys):
    # A mistyped --metric failed every trial; the study then refused the right one ("use
    # --metric=val/acc"). Once a trial completed on a metric, another is refused.
    import optuna

    url = f"sqlite:///{tmp_path}/study.db"
    study = search.open_study(url, str(tmp_path), "val/acc", "max", 0, 2, "median", 0)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    study = search.open_study(url, str(tmp_path), "val/accuracy", "max", 0, 2, "median", 0)
    assert study.user_attrs["metric"] == "val/accuracy"
    study.tell(study.ask(), 0.9)
    with pytest.raises(SweepError, match="optimizes val/accuracy; use --metric=val/accuracy"):
        search.open_study(url, str(tmp_path), "val/loss", "max", 0, 2, "median", 0)
    # Resumed with another seed or random start: said (it was taken without a word, and the
    # header claimed "TPE after 3 random draws" of a study begun with 2).
    assert "warning" not in capsys.readouterr().err
    search.open_study(url, str(tmp_path), "val/accuracy", "max", 3, 3, "median", 0)
    assert (
        f"warning: the study in {tmp_path} was started with --seed=0 --startup_trials=2; its "
        "next draws use --seed=3 --startup_trials=3"
    ) in capsys.readouterr().err
    # A study whose trials are all there draws nothing: it warned of "its next draws" anyway.
    search.open_study(url, str(tmp_path), "val/accuracy", "max", 5, 3, "median", 0, trials=2)
    assert "warning" not in capsys.readouterr().err
    search.open_study(url, str(tmp_path), "val/accuracy", "max", 6, 3, "median", 0, trials=3)
    assert "started with --seed=3 --startup_trials=3; its next draws use --seed=6" in (
        capsys.readouterr().err
    )


def test_a_drawn_trial_the_config_refuses_fails_in_the_study_and_the_next_is_drawn(tmp_path):
    # A warmup past a shorter run: the space's ends pass (check_space), some draws do not.
    # Such a draw stopped the whole sweep, and a rerun showed it as pending forever.
    import optuna

    sweep = """
    return h.product(h.choice("total_steps", [20, 4]), h.randint("optimizer.warmup_steps", 0, 15))
    """
    definition = definition_lib.load(write_config(tmp_path, sweep), {})
    search.check_space(definition)
    workdir = str(tmp_path / "tpe")
    params, fixed = space.params(definition.node)
    url = f"sqlite:///{workdir}/study.db"
    os.makedirs(workdir)
    study = search.open_study(url, workdir, "val/accuracy", "max", 0, 8, "median", 0)
    lines = []
    s = search.Search(definition, workdir, 8, "val/accuracy", "max", url, study,
                      {p.name: p.distribution for p in params}, {p.name: p.decode for p in params},
                      fixed, {"startup_trials": 8}, lines.append)  # fmt: skip
    launched = []
    while (trial := s.next_trial()) is not None:
        launched.append(trial)
    s.start(1)  # its header says what 8 trials with 8 startup trials are
    assert "random draws (TPE's first 8 are random; raise --trials for TPE)" in lines[-1]
    refused = [line for line in lines if " refused " in line]
    assert launched and refused and len(launched) + len(refused) == 8, lines
    assert all("must be in [0, 4)" in line for line in refused)
    states = [t.state.name for t in study.trials]
    assert states.count("FAIL") == len(refused) and states.count("RUNNING") == len(launched)
    rows = {r["trial"]: r for r in read_csv(os.path.join(workdir, "results.csv"))}
    failed = [r for r in rows.values() if r["status"] == "failed"]
    assert len(failed) == len(refused) and all("[0, 4)" in r["error"] for r in failed)
    # Resumed with fewer --trials than the study holds: it said "8 of 3 trials so far" and
    # "random draws (TPE's first 8 ...)".
    for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, 0.5)
    fewer = search.Search(definition, workdir, 3, "val/accuracy", "max", url, study,
                          {p.name: p.distribution for p in params},
                          {p.name: p.decode for p in params}, fixed, {"startup_trials": 8},
                          lines.append)  # fmt: skip
    fewer.start(1)
    assert lines[-1].endswith(": 8 trials, past --trials=3: nothing to draw (--trials=9 or more "
                              "draws again)"), lines[-1]  # fmt: skip


# ---- real sweeps ---------------------------------------------------------------------------


GRID = """
return h.product(
    h.sweep("optimizer.learning_rate", [1e-3, 3e-3]),
    h.sweep("model.features", [(32,), (64,)]),
)
"""


def test_results_plot_shows_validation_and_test_apart(tmp_path):
    info = {
        "config": "configs/digits_mlp.py",
        "search": "grid",
        "metric": "val/accuracy",
        "mode": "max",
        "trials": [{"name": n, "overrides": {"optimizer.learning_rate": lr}} for n, lr in
                   (("a", 0.001), ("b", 0.01), ("c", 0.1))],
    }  # fmt: skip
    rows = [
        {"trial": "a", "status": "done", "optimizer.learning_rate": 0.001,
         "best val/accuracy": 0.8, "eval/accuracy at best step": 0.78},
        {"trial": "b", "status": "done", "optimizer.learning_rate": 0.01,
         "best val/accuracy": 0.9, "eval/accuracy at best step": 0.86, "best step": 20,
         "command": "python -m ann.main"},
        {"trial": "c", "status": "pruned", "optimizer.learning_rate": 0.1,
         "best val/accuracy": 0.5},
    ]  # fmt: skip
    path = results.plot(str(tmp_path), info, rows)
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "not drawn" not in results.figure(info, rows).get_suptitle()
    # A failed trial was left out of the picture without a word.
    with_failed = [*rows, {"trial": "d", "status": "failed", "optimizer.learning_rate": 1.0,
                           "best val/accuracy": None}]  # fmt: skip
    title = results.figure(info, with_failed).get_suptitle()
    assert title.endswith("\n1 failed trial not drawn (results.md has why)"), title
    # A decade of learning rates on a log axis (3e-4..3e-3 had a linear one); dropout stays.
    assert results.log_axis([3e-4, 1e-3, 3e-3]) and not results.log_axis([0.1, 0.3, 0.5])
    rows[1]["final val/loss"], rows[1]["eval_extra/accuracy at best step"] = 0.3, 0.7
    text = results.markdown(str(tmp_path), info, rows, path)
    assert "(validation, ranked) and the test score" in text
    # The table: what ranks and its test score; the other metrics only in results.csv.
    header = next(line for line in text.splitlines() if line.startswith("| # |"))
    assert header == (
        "| # | trial | status | optimizer.learning_rate | best val/accuracy | "
        "eval/accuracy at best step | best step |"
    ), header
    # A first trial that failed (no test score): its columns came after the error column.
    tail = {"steps": None, "early stop": False, "wall seconds": 1.0, "error": "", "command": ""}
    failed = {"trial": "a", "status": "failed", "optimizer.learning_rate": 0.001,
              "best val/accuracy": None, "best step": None, **tail, "error": "boom"}  # fmt: skip
    done = {**rows[1], **tail, "steps": 20}
    text = results.markdown(str(tmp_path), info, [failed, done], path)
    header = next(line for line in text.splitlines() if line.startswith("| # |"))
    assert header.endswith(
        "| best val/accuracy | best step | eval/accuracy at best step | steps | early stop | "
        "wall seconds | error |"
    ), header


def test_summarize_from_elsewhere_prints_a_rerun_command_that_works_there(tmp_path):
    """`ann sweep --summarize=../sw1` printed the best trial's command with paths relative to
    where the sweep ran (`--config=cfgs/tiny.py --workdir=sw1/...`): pasted where the user was,
    it failed. The print leads it with `cd` there; results.md names that directory."""
    ran = str(tmp_path / "project")
    info = {"config": "cfgs/tiny.py", "search": "grid", "metric": "val/accuracy", "mode": "max",
            "cwd": ran, "trials": [{"name": "t0", "overrides": {}}]}  # fmt: skip
    command = "ann train --config=cfgs/tiny.py --workdir=sw1/t0"
    rows = [{"trial": "t0", "status": "done", "best val/accuracy": 0.9, "best step": 20,
             "command": command}]  # fmt: skip
    elsewhere = results.markdown("../sw1", info, rows, None, here=str(tmp_path))
    assert f"    cd {ran} && {command}\n" in elsewhere
    there = results.markdown("sw1", info, rows, None, here=ran)
    assert f"    {command}\n" in there and "cd " not in there
    file = results.markdown("sw1", info, rows, None)
    assert f"    {command}\n\n(from {ran}, where the sweep ran: its paths are relative to it)" in (
        file
    )
    # A sweep's record since `Trial.standalone`: its own `cd`, shown as it is everywhere.
    rows[0]["command"] = f"cd {ran} && {command}"
    for here in (str(tmp_path), ran, None):
        text = results.markdown("sw1", info, rows, None, here=here)
        assert f"\n    cd {ran} && {command}\n" in text and "(from " not in text


def test_a_moved_sweeps_rerun_lines_name_where_its_trials_are_now(tmp_path, monkeypatch):
    """After `mv sweeps/a sweeps/b`, `--summarize=sweeps/b` (and a resume) printed `Re-run it
    alone: ... --workdir=sweeps/a/NAME`: pasted, it started a new run at the old path. The
    line and the command column name the trial's workdir where it is now; its command.sh,
    which ran it at the old path too, refuses to."""
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    info = {"config": "c.py", "search": "grid", "metric": "val/accuracy", "mode": "max",
            "cwd": str(project), "trials": [{"name": "t0", "overrides": {}}]}  # fmt: skip
    for i, sweep_dir in enumerate(("sweeps/a", str(tmp_path / "abs"))):  # relative, absolute
        trial = trials_lib.Trial("t0", {}, {}, "c.py", sweep_dir, str(project))
        results.write_sweep_file(sweep_dir, info)
        trial.write_files("{}")
        trials_lib.update_record(trial.workdir, returncode=0, command=trial.standalone())
        (project / trial.workdir / "run_status.json").write_text('{"status": "done", "step": 2}')
        (project / trial.workdir / "metrics.jsonl").write_text('{"step": 2, "val/accuracy": 0.5}\n')
        assert results.collect(sweep_dir)[1][0]["command"] == trial.standalone()  # in place
        moved = str(tmp_path / "moved")
        os.rename(sweep_dir, moved)
        text = results.write("../moved")
        now = trial.standalone().replace(
            shlex.quote(f"--workdir={trial.workdir}"), shlex.quote(f"--workdir={moved}/t0")
        )
        assert now != trial.standalone() and f"\n    {now}\n" in text
        assert read_csv(f"{moved}/results.csv")[0]["command"] == now
        # Its command.sh too: refused in one line, where it ran the trial at the old path.
        proc = subprocess.run([f"{moved}/t0/command.sh"], capture_output=True, text=True)
        moved = os.path.realpath(moved)  # as `pwd -P` gives it
        assert one_line_error(proc) == (
            f"error: command.sh reruns trial t0 in {project / trial.workdir}, where its sweep "
            f"wrote it, but it is in {moved}/t0 now (the sweep was moved or copied); its line "
            f"for here is in the command column of results.csv, which ann sweep "
            f"--summarize={moved} rewrites"
        )
        assert not os.path.exists(trial.workdir)
        os.rename(moved, tmp_path / f"gone{i}")


def test_a_sweep_whose_trials_did_not_finish_names_no_best(tmp_path):
    """A sweep whose every trial failed after an eval printed `Best: learning_rate=0.01,
    val/accuracy 0.8704 at step 10. Re-run it alone: ...` (a failed trial's partial value, a
    step with no checkpoint), then `error: no trial ... finished`; results.png starred it."""
    info = {"config": "c.py", "search": "grid", "metric": "val/accuracy", "mode": "max",
            "trials": [{"name": f"t{i}", "overrides": {"optimizer.learning_rate": lr}}
                       for i, lr in enumerate((0.001, 0.01, 0.1))]}  # fmt: skip
    rows = [
        {"trial": f"t{i}", "status": status, "optimizer.learning_rate": lr,
         "best val/accuracy": value, "best step": 10, "command": f"ann train t{i}"}
        for i, (status, lr, value) in enumerate(
            (("failed", 0.001, 0.9), ("interrupted", 0.01, 0.8), ("running", 0.1, 0.7)))
    ]  # fmt: skip
    text = results.markdown("sw", info, rows, None)
    assert "Best:" not in text and "Re-run it alone" not in text
    assert results.figure(info, rows) is None  # nothing finished: nothing starred
    (tmp_path / "results.png").write_bytes(b"an earlier picture, a trial since failed starred")
    assert results.plot(str(tmp_path), info, rows) is None
    assert not (tmp_path / "results.png").exists()
    # A finished trial is chosen over a failed one with a better value.
    rows.append({"trial": "t3", "status": "done", "optimizer.learning_rate": 1.0,
                 "best val/accuracy": 0.5, "best step": 20, "command": "ann train t3"})  # fmt: skip
    info["trials"].append({"name": "t3", "overrides": {"optimizer.learning_rate": 1.0}})
    assert "Best: `t3`, val/accuracy 0.5000 at step 20." in results.markdown("sw", info, rows, None)
    [star] = [c for c in results.figure(info, rows).axes[0].collections
              if c.get_label().startswith("chosen")]  # fmt: skip
    assert star.get_offsets().tolist() == [[1.0, 0.5]]


def test_results_plot_ticks_a_grid_at_its_values_and_counts_ties():
    # TPE's drawn values were ticked one by one, unrounded: "0.000160.0002582380.000703504".
    lrs = [0.000160, 0.000258238, 0.000703504, 0.00301, 0.00412]
    info = {"search": "tpe", "metric": "val/accuracy", "mode": "max",
            "trials": [{"name": f"t{i}", "overrides": {"optimizer.learning_rate": lr,
                                                       "model.features": "(128,)"}}
                       for i, lr in enumerate(lrs)]}  # fmt: skip
    rows = [
        {"trial": f"t{i}", "status": "done", "optimizer.learning_rate": lr,
         "model.features": "(128,)" if i else "(64,)", "best val/accuracy": 0.5 if i > 1 else 0.9}
        for i, lr in enumerate(lrs)
    ]  # fmt: skip
    drawn = results.figure(info, rows)
    ticks = [t.get_text() for t in drawn.axes[0].get_xticklabels()]
    assert not {f"{lr:g}" for lr in lrs} & set(ticks), ticks
    assert {"0.0002", "0.0005", "0.001", "0.002"} <= set(ticks), ticks  # 1, 2, 5 per decade
    # Three trials at one point of the features panel: counted, not one marker for three.
    counts = [t.get_text() for t in drawn.axes[1].texts]
    assert counts == ["×3"], counts
    # The legend sits under the panels, not over the first panel's points.
    assert drawn.axes[0].get_legend() is None and len(drawn.legends) == 1
    # The chosen trial's star is an outline: filled, it hid that trial's test marker.
    [star] = [c for c in drawn.axes[0].collections if c.get_label().startswith("chosen")]
    assert star.get_facecolor().size == 0 or star.get_facecolor()[0][3] == 0
    # Over more than 2 decades, one tick per decade (1, 2 and 5 per decade ran together).
    wide = [dict(row, **{"optimizer.learning_rate": lr})
            for row, lr in zip(rows, [1e-6, 1e-5, 1e-4, 1e-3, 5e-3])]  # fmt: skip
    drawn = results.figure(info, wide)
    drawn.canvas.draw()
    ticks = [t.get_text() for t in drawn.axes[0].get_xticklabels() if t.get_text()]
    assert not {"2e-06", "5e-06", "0.0002", "0.0005"} & set(ticks), ticks
    assert {"1e-05", "0.0001", "0.001"} <= set(ticks), ticks
    # Their test values too (hollow markers at one point were one circle, uncounted).
    for row in rows:
        row["eval/accuracy at best step"] = 0.8
    counts = [t.get_text() for t in results.figure(info, rows).axes[1].texts]
    assert counts == ["×3", "×4"], counts  # 4 trials at (128,), 0.8
    # A test value just above validation's at one point: the two counts drew over each other
    # (validation's above its point, test's below) and read as "×3" (trial 48b).
    for row in rows:
        row["eval/accuracy at best step"] = 0.515
    drawn = results.figure(info, rows)
    drawn.canvas.draw()
    boxes = [t.get_window_extent() for t in drawn.axes[1].texts]
    assert len(boxes) == 2 and not boxes[0].overlaps(boxes[1]), boxes
    info["search"] = "grid"
    spread = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    for row, lr in zip(rows, spread):
        row["optimizer.learning_rate"] = lr
    ticks = [t.get_text() for t in results.figure(info, rows).axes[0].get_xticklabels()]
    assert ticks == [f"{lr:g}" for lr in spread], ticks
    # A grid of drawn values (h.random in a product): as ticks, 0.0006937 and 0.001053 ran
    # together ("0.0006931053"); the axis's own ticks then.
    for row, lr in zip(rows, [0.000160, 0.0006937, 0.001053, 0.00301, 0.00412]):
        row["optimizer.learning_rate"] = lr
    drawn = results.figure(info, rows)
    drawn.canvas.draw()
    ticks = [t.get_text() for t in drawn.axes[0].get_xticklabels() if t.get_text()]
    assert "0.0006937" not in ticks and {"0.0002", "0.0005", "0.001"} <= set(ticks), ticks
    # A grid on a linear axis is ticked at its values too (0.001 and 0.003 were ticked 0.0008,
    # 0.0016, 0.0024, 0.0032).
    for row, lr in zip(rows, [0.001, 0.003, 0.001, 0.003, 0.002]):
        row["optimizer.learning_rate"] = lr
    ticks = [t.get_text() for t in results.figure(info, rows).axes[0].get_xticklabels()]
    assert ticks == ["0.001", "0.002", "0.003"], ticks
    # Drawn values under a decade, a linear axis: its default ticks, 0.0007 to 0.0013 by 0.0001,
    # ran together.
    info["search"] = "tpe"
    for row, lr in zip(rows, [0.000693, 0.00081, 0.00097, 0.00112, 0.001252]):
        row["optimizer.learning_rate"] = lr
    ticks = [t.get_text() for t in results.figure(info, rows).axes[0].get_xticklabels()]
    assert 3 <= len(ticks) <= 6 and "0.001" in ticks, ticks
    # results.md's cell of a drawn value: 4 significant digits (all 19 widened the table).
    assert results._cell("0.0007035737028722148") == "0.0007036"
    assert results._cell("(64,)") == "(64,)" and results._cell("0.001") == "0.001"
    assert trials_lib.now().endswith("Z")  # trial.json's times: UTC, as report.json's


def test_results_plot_draws_log_distributed_keys_on_log_axes(tmp_path):
    # A learning rate drawn log-uniform was drawn on a linear axis: its five draws (0.000693 to
    # 0.001252) spanned less than a decade, and the axis went by the values alone. And a
    # uniform draw spanning a decade got a log axis.
    import types

    h = space.Builder()
    node = h.product(
        h.random(
            5,
            h.loguniform("optimizer.learning_rate", 1e-4, 1e-2),
            h.uniform("model.dropout", 0.01, 0.5),
            h.choice("model.features", [(32,), (64,)]),
        ),
        h.sweep("optimizer.weight_decay", [1e-5, 1e-4, 1e-3]),
        h.sweep("batch_size", [32, 64]),
    )
    logged = ["optimizer.learning_rate", "optimizer.weight_decay"]
    assert space.log_keys(node) == logged
    definition = types.SimpleNamespace(config="c.py", data_dir=None, fixed={}, node=node)
    info = results.sweep_info(definition, "tpe", "val/accuracy", "max", [])
    assert info["log_keys"] == logged  # sweep.json records them: --summarize draws alike
    lrs = [0.000693, 0.00081, 0.00097, 0.00112, 0.001252]
    dropouts = [0.02, 0.05, 0.1, 0.2, 0.4]
    info["trials"] = [
        {"name": f"t{i}", "overrides": {"optimizer.learning_rate": lr, "model.dropout": d}}
        for i, (lr, d) in enumerate(zip(lrs, dropouts))
    ]
    rows = [
        {"trial": f"t{i}", "status": "done", "optimizer.learning_rate": lr, "model.dropout": d,
         "best val/accuracy": 0.5 + i / 10}
        for i, (lr, d) in enumerate(zip(lrs, dropouts))
    ]  # fmt: skip
    drawn = results.figure(info, rows)
    lr_axes, dropout_axes = drawn.axes[:2]
    assert lr_axes.get_xscale() == "log" and dropout_axes.get_xscale() == "linear"
    drawn.canvas.draw()
    ticks = [t.get_text() for t in lr_axes.get_xticklabels() if t.get_text()]
    assert 3 <= len(ticks) <= 6 and "0.001" in ticks, ticks  # 0.001 alone, 1-2-5 per decade
    assert results.plot(str(tmp_path), info, rows)
    # Draws with one 1-2-5 tick among them (0.002): matplotlib's log locator answered nine
    # linear ticks, 0.0012 to 0.0028, two labels printed over each other (a fresh-user check).
    for row, lr in zip(rows, [0.0012, 0.0016, 0.002, 0.0024, 0.0028]):
        row["optimizer.learning_rate"] = lr
    drawn = results.figure(info, rows)
    drawn.canvas.draw()
    low, high = drawn.axes[0].get_xlim()
    ticks = [
        t.get_text() for t in drawn.axes[0].get_xticklabels() if low <= t.get_position()[0] <= high
    ]
    assert 2 <= len(ticks) <= 5, ticks
    for row, lr in zip(rows, lrs):
        row["optimizer.learning_rate"] = lr
    # A sweep.json from before log_keys: the values decide, as they did.
    del info["log_keys"]
    drawn = results.figure(info, rows)
    assert [ax.get_xscale() for ax in drawn.axes[:2]] == ["linear", "log"]


@pytest.mark.slow
def test_grid_sweep_runs_resumes_and_summarizes(tmp_path, one_device):
    config = write_config(tmp_path, GRID)
    workdir = tmp_path / "sweep"
    proc = sweep_cli(f"--config={config}", f"--workdir={workdir}", "--parallel=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv(workdir / "results.csv")
    assert len(rows) == 4
    for row in rows:
        assert row["status"] == "done", row
        assert 0.1 < float(row["best val/accuracy"]) <= 1.0  # ranked on validation
        assert 0.1 < float(row["eval/accuracy at best step"]) <= 1.0  # test, reported
        assert float(row["final eval/loss"]) > 0 and float(row["final val/loss"]) > 0
        assert row["steps"] == "20"
        assert float(row["wall seconds"]) > 0
    assert {r["optimizer.learning_rate"] for r in rows} == {"0.001", "0.003"}
    assert {r["model.features"] for r in rows} == {"(32,)", "(64,)"}
    table = (workdir / "results.md").read_text()
    assert table.count("| done |") == 4 and f"Re-run it alone:\n\n    cd {ROOT} && env " in table
    assert (workdir / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Each trial is a full run of its own: config, command, workdir named after its overrides.
    trial = workdir / "learning_rate=0.003,features=64"
    assert json.loads((trial / "config.json").read_text())["optimizer"]["learning_rate"] == 0.003
    command = (trial / "command.sh").read_text()
    assert f"\ncd {ROOT} && exec env " in command  # standalone: where it ran, in any shell
    assert " TFDS_DATA_DIR=" in command  # the sweep's data, whatever the shell's
    assert f" ann train --config={config} --workdir={trial}" in command
    assert "'--config.model.features=(64,)'" in command
    assert "--config.optimizer.learning_rate=0.003" in command
    assert json.loads((trial / "run_status.json").read_text())["status"] == "done"

    # Resume: a trial lost with its workdir runs again; the three finished ones do not.
    for path in (workdir / "learning_rate=0.001,features=32").iterdir():
        if path.is_file():
            path.unlink()
    proc = sweep_cli(f"--config={config}", f"--workdir={workdir}", "--parallel=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # One trial left runs alone on every core (it said "2 at a time" and split them).
    assert "4 trials, 1 to run, 1 at a time" in proc.stdout and "skipping 3 done" in proc.stdout
    attempts = {
        p.name: trials_lib.read_record(str(p))["attempts"]
        for p in workdir.iterdir()
        if p.is_dir() and not p.name.startswith(".")  # .jax_cache: the trials' shared cache
    }
    assert sorted(attempts.values()) == [1, 1, 1, 1]
    assert all(r["status"] == "done" for r in read_csv(workdir / "results.csv"))

    proc = sweep_cli(f"--summarize={workdir}")
    assert proc.returncode == 0 and proc.stdout.count("| done |") == 4
    # The terminal gets the table and where the picture is, not markdown's image link.
    assert "![" not in proc.stdout and "![" in table
    assert proc.stdout.rstrip().endswith(f"(results.csv, results.md and results.png in {workdir})")


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_others_finish(tmp_path, one_device):
    sweep = """
    return h.zip(
        h.sweep("optimizer.name", ["sgd", "adam"]),
        h.sweep("optimizer.learning_rate", [1e30, 1e-3]),
    )
    """
    definition = definition_lib.load(write_config(tmp_path, sweep), {})
    workdir = str(tmp_path / "sweep")
    lines = []
    grid.run(definition, workdir, "val/accuracy", "max", parallel=2, log=lines.append)
    rows = {r["trial"]: r for r in read_csv(os.path.join(workdir, "results.csv"))}
    bad, good = rows["name=sgd,learning_rate=1e+30"], rows["name=adam,learning_rate=0.001"]
    assert bad["status"] == "failed" and "training diverged" in bad["error"]
    assert good["status"] == "done" and float(good["best val/accuracy"]) > 0.1
    assert any(line.startswith("[") and "failed" in line for line in lines)
    # Resumed, it runs nothing: done is done, and a failed trial stays failed unless retried.
    lines.clear()
    grid.run(definition, workdir, "val/accuracy", "max", log=lines.append)
    assert "2 trials, 0 to run; skipping" in lines[0] and "--retry_failed" in lines[0]


@pytest.mark.slow
def test_tpe_study_prunes_the_bad_region_and_resumes(tmp_path, one_device):
    # Learning rates below ~1e-4 barely move in 40 steps: most of this range is bad, and the
    # median pruner must stop some of those trials at their first eval.
    sweep = """
    return h.product(
        h.loguniform("optimizer.learning_rate", 1e-7, 3e-2),
        h.sweep("model.features", [(32,), (64,)]),
    )
    """
    definition = definition_lib.load(write_config(tmp_path, sweep, steps=40), {})
    workdir = str(tmp_path / "tpe")
    options = dict(metric="val/accuracy", mode="max", startup_trials=2, seed=0)
    search.run(definition, workdir, trials=6, log=lambda line: None, **options)

    import optuna

    study = optuna.load_study(study_name="ann", storage=f"sqlite:///{workdir}/study.db")
    states = [t.state.name for t in study.trials]
    assert len(states) == 6 and "PRUNED" in states and "COMPLETE" in states, states
    rows = read_csv(os.path.join(workdir, "results.csv"))
    assert len(rows) == 6
    pruned = [r for r in rows if r["status"] == "pruned"]
    assert pruned and all(int(r["steps"]) < 40 for r in pruned)
    done = [r for r in rows if r["status"] == "done"]
    best = max(float(r["best val/accuracy"]) for r in done)
    assert study.best_value == pytest.approx(best)
    # Resumed with the same size, the study has nothing left to run.
    lines = []
    search.run(definition, workdir, trials=6, parallel=4, log=lines.append, **options)
    assert "6 of 6 trials so far" in lines[0] and "TPE after 2 random draws over" in lines[0]
    assert "at a time" not in lines[0], lines[0]  # none left: not "4 at a time", nor "1"
    assert len(optuna.load_study(study_name="ann", storage=study._storage).trials) == 6


def test_a_trial_drawn_but_never_launched_does_not_count_against_the_study(tmp_path, monkeypatch):
    # Ctrl-C between Optuna's draw and the trial's naming left it RUNNING and nameless: the
    # resumed sweep skipped it but counted it, and a study of 6 delivered 5 (a fresh-user trial).
    sweep = 'return h.loguniform("optimizer.learning_rate", 1e-4, 1e-2)'
    definition = definition_lib.load(write_config(tmp_path, sweep), {})
    workdir = str(tmp_path / "tpe")
    options = dict(metric="val/accuracy", mode="max", startup_trials=2, seed=0)
    started = []

    def launch_run(next_trial, on_end, parallel, log):  # names what would run, runs nothing
        while (trial := next_trial()) is not None:
            started.append(trial.name)

    monkeypatch.setattr(launch, "run", launch_run)
    monkeypatch.setattr(results, "write", lambda *args, **kwargs: "")
    os.makedirs(workdir)
    url = f"sqlite:///{workdir}/study.db"
    study = search.open_study(url, workdir, pruner="median", prune_warmup_steps=0, **options)
    study.ask({p.name: p.distribution for p in space.params(definition.node)[0]})  # no name
    lines = []
    search.run(definition, workdir, trials=3, log=lines.append, **options)
    assert "0 of 3 trials so far" in lines[0], lines[0]
    assert len(started) == 3 and all(name.startswith(("001-", "002-", "003-")) for name in started)
    import optuna

    states = [
        t.state.name for t in optuna.load_study(study_name="ann", storage=study._storage).trials
    ]
    assert states == ["FAIL", "RUNNING", "RUNNING", "RUNNING"], states


class FakeTrial:
    def __init__(self, prune):
        self.prune, self.reports = prune, []

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return self.prune


def test_pruning_listener_reports_and_finishes_the_run():
    metrics = {"val/accuracy": 0.5, "eval/accuracy": 0.9, "eval/seconds": 1.0}
    info = hooks.StepInfo(step=10, total_steps=100, state=None)
    listener = pruning.ReportToStudy(FakeTrial(prune=True), "val/accuracy")
    listener.on_eval(info, metrics)
    # The study sees the validation value, never the test one.
    assert listener.trial.reports == [(10, 0.5)] and info.stop().finish == "pruned"
    last = hooks.StepInfo(step=100, total_steps=100, state=None)
    listener.on_eval(last, metrics)  # the last eval is the result, never a reason to prune
    assert last.stop() is None
    assert pruning.listeners_from_env(None) == []  # no sweep, no listener, no Optuna
    with pytest.raises(ConfigError, match="use 'val/accuracy'"):
        pruning.ReportToStudy(FakeTrial(prune=True), "eval/accuracy")


def test_a_grid_trial_checks_the_sweep_metric_before_its_first_step(
    tmp_path, monkeypatch, launched
):
    # A mistyped --metric cost a grid a whole trial before the sweep stopped; now the trial
    # fails before its first step, which stops the sweep (results.check_metric, above).
    definition = definition_lib.load(write_config(tmp_path, GRID), {})
    grid.run(definition, str(tmp_path / "sweep"), "val/acuracy", "max", log=lambda line: None)
    assert len(launched) == 4
    assert all(t.env[pruning.METRIC_ENV] == "val/acuracy" for t in launched)
    monkeypatch.setenv(pruning.METRIC_ENV, "val/acuracy")  # what the trial's ann.main reads
    # The trial's loop checks it against its validation metrics before its first step.
    listeners = pruning.listeners_from_env(None)
    with pytest.raises(ConfigError, match=r"^sweep --metric: 'val/acuracy' is not a validation "
                       r"metric of this run \(did you mean 'val/accuracy'\?\); choose one of "
                       r"val/accuracy$"):  # fmt: skip
        hooks.check_reads(listeners, ["val/accuracy"])
    hooks.check_reads(listeners, ["val/acuracy"])  # there: the run goes on
    monkeypatch.delenv(pruning.METRIC_ENV)
    assert pruning.listeners_from_env(None) == []


def test_trials_started_after_a_resume_read_the_data_directory_the_sweep_started_with(
    tmp_path, monkeypatch, capsys, launched
):
    # A sweep resumed from a shell with another $TFDS_DATA_DIR started its new trials on that
    # shell's data: other data under the same name, without a word.
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "digits").mkdir(parents=True)  # what `choose` asks of it: it holds the data set
    definition = definition_lib.load(write_config(tmp_path, GRID), {})
    sweep_dir = str(tmp_path / "sweep")
    monkeypatch.setenv("TFDS_DATA_DIR", str(first))
    grid.run(definition, sweep_dir, "val/accuracy", "max", log=lambda line: None)
    assert all(t.env["TFDS_DATA_DIR"] == str(first) for t in launched)  # named, not assumed
    launched.clear()
    capsys.readouterr()
    monkeypatch.setenv("TFDS_DATA_DIR", str(second))
    grid.run(definition, sweep_dir, "val/accuracy", "max", log=lambda line: None)
    assert len(launched) == 4 and all(t.env["TFDS_DATA_DIR"] == str(first) for t in launched)
    script = open(f"{launched[0].workdir}/command.sh").read()
    assert f" TFDS_DATA_DIR={first} {PYTHON_ANN} train" in script
    with open(os.path.join(sweep_dir, results.SWEEP_FILE)) as f:
        assert json.load(f)["data_dir"] == str(first)  # kept: the sweep's, not the resumer's
    assert capsys.readouterr().err == (
        f"note: reading data set 'digits' from {first}, where the sweep at {sweep_dir} read it, "
        f"not {second} ($TFDS_DATA_DIR)\n"
    )


@pytest.mark.parametrize("given_by", ["flag", "get_sweep"])
def test_a_relative_data_dir_is_read_where_the_sweep_started_after_a_resume_elsewhere(
    tmp_path, monkeypatch, capsys, given_by, launched
):
    # data.data_dir=tfds_here (a --config flag, or one value from get_sweep) resumed from another
    # working directory: sweep.json recorded FIRST/tfds_here, but the trials started after the
    # resume read SECOND/tfds_here, other data (or a new build) under the same name.
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "tfds_here" / "digits").mkdir(parents=True)  # `choose`: it holds the data set
    second.mkdir()
    if given_by == "flag":
        path, fixed = write_config(tmp_path, GRID), {"data.data_dir": "tfds_here"}
    else:
        sweep = GRID.replace("h.product(", "h.product(h.sweep('data.data_dir', ['tfds_here']),")
        path, fixed = write_config(tmp_path, sweep), {}
    sweep_dir = str(tmp_path / "sweep")
    monkeypatch.chdir(first)
    grid.run(definition_lib.load(path, fixed), sweep_dir, "val/accuracy", "max", log=print)
    assert len(launched) == 4 and all(  # where it started: its commands as they were
        "--config.data.data_dir=tfds_here" in t.command() for t in launched
    )
    with open(os.path.join(sweep_dir, results.SWEEP_FILE)) as f:
        assert json.load(f)["data_dir"] == str(first / "tfds_here")
    launched.clear()
    capsys.readouterr()
    monkeypatch.chdir(second)
    grid.run(definition_lib.load(path, fixed), sweep_dir, "val/accuracy", "max", log=print)
    flag = f"--config.data.data_dir={first / 'tfds_here'}"
    assert len(launched) == 4 and all(flag in t.command() for t in launched), launched[0]
    assert flag in open(f"{launched[0].workdir}/command.sh").read()
    with open(os.path.join(sweep_dir, results.SWEEP_FILE)) as f:
        assert json.load(f)["data_dir"] == str(first / "tfds_here")
    assert f"note: reading data set 'digits' from {first / 'tfds_here'}" in capsys.readouterr().err


def test_relative_data_dirs_a_sweep_sweeps_are_read_where_it_started_after_a_resume_elsewhere(
    tmp_path, monkeypatch, launched
):
    # get_sweep sweeping data.data_dir over ['a', 'b'], resumed from another working directory:
    # the trials started after the resume read SECOND/a and SECOND/b (sweep.json records one
    # data directory, the one they share, not theirs).
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    sweep = "return h.sweep('data.data_dir', ['a', 'b'])"
    path, sweep_dir = write_config(tmp_path, sweep), str(tmp_path / "sweep")
    monkeypatch.chdir(first)
    grid.run(definition_lib.load(path, {}), sweep_dir, "val/accuracy", "max", log=print)
    assert [t.values()["data.data_dir"] for t in launched] == ["a", "b"]  # as they were
    launched.clear()
    monkeypatch.chdir(second)
    grid.run(definition_lib.load(path, {}), sweep_dir, "val/accuracy", "max", log=print)
    assert [t.values()["data.data_dir"] for t in launched] == [str(first / "a"), str(first / "b")]
    assert f"--config.data.data_dir={first / 'b'}" in launched[1].command()


def test_dry_run_and_emit_read_and_name_the_data_directory_the_sweep_started_with(
    tmp_path, monkeypatch, data_dir
):
    """`--dry_run` and `--emit` on an existing sweep built its data set in this shell's
    $TFDS_DATA_DIR (for the metric check), and their commands named no data directory, where a
    resume reads sweep.json's and command.sh exports it."""
    from ann import data

    data.load("digits", "train")  # the sweep's data, in the session's directory
    path = write_config(tmp_path, GRID)
    sweep_dir = str(tmp_path / "sweep")
    monkeypatch.setattr(launch, "run", lambda next_trial, on_end, parallel, log: None)
    grid.run(definition_lib.load(path, {}), sweep_dir, "val/accuracy", "max", log=print)
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("TFDS_DATA_DIR", str(other))
    monkeypatch.delenv("PYTHONPATH", raising=False)  # a dry run's lines: no env PYTHONPATH=
    note = f"note: reading data set 'digits' from {data_dir}, where the sweep at {sweep_dir}"
    proc = sweep_cli(f"--config={path}", f"--workdir={sweep_dir}", "--dry_run")
    assert proc.returncode == 0, proc.stderr
    assert note in proc.stderr and "building" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 and all(
        line.startswith(f"cd {ROOT} && env TFDS_DATA_DIR={data_dir} {PYTHON_ANN} train --config=")
        for line in lines
    )
    proc = sweep_cli(f"--config={path}", f"--workdir={sweep_dir}", "--emit=slurm")
    assert proc.returncode == 0, proc.stderr
    assert note in proc.stderr and "building" not in proc.stderr
    # Without --parallel (whose --help default, 1, is this machine's) every task may run at
    # once, as the line now says.
    assert "(4 array tasks, all at once; --parallel=N runs N at a time)" in proc.stdout
    sbatch = open(os.path.join(sweep_dir, "sweep.sbatch")).read()
    assert sbatch.count(f" env TFDS_DATA_DIR={data_dir} {PYTHON_ANN} train --config=") == 4
    assert os.listdir(other) == []  # nothing built, nothing read there
    with open(os.path.join(sweep_dir, results.SWEEP_FILE)) as f:
        assert json.load(f)["data_dir"] == data_dir


def test_every_standalone_command_of_a_new_sweep_names_its_data_directory(tmp_path, monkeypatch):
    """A new sweep's --dry_run and --emit lines, its command.sh and results.md's re-run line read
    the pasting shell's $TFDS_DATA_DIR: only a resume from a shell resolving elsewhere named
    sweep.json's directory (so two trials of one sweep had different command.sh)."""
    data = tmp_path / "tfds"
    monkeypatch.setenv("TFDS_DATA_DIR", str(data))
    monkeypatch.delenv("PYTHONPATH", raising=False)  # its env word would come first
    sweep_dir = str(tmp_path / "sweep")
    trials, configs = grid.prepare(definition_lib.load(write_config(tmp_path, GRID), {}), sweep_dir)
    lead = f"env TFDS_DATA_DIR={data} {PYTHON_ANN} train --config="
    assert all(t.command().startswith(lead) for t in trials)  # the sbatch script's lines
    assert emit.slurm(trials, sweep_dir, str(tmp_path), 0, 1, "1G").count(f" {lead}") == 4
    trials[0].write_files(configs[0])
    assert f" && exec {lead}" in open(f"{trials[0].workdir}/command.sh").read()
    row = results.trial_row(sweep_dir, trials[0].name, {}, "val/accuracy", "max")
    # results.md's "Re-run it alone:" line (here from command.sh: no launcher recorded it)
    command = trials[0].command()
    assert row["command"] == trials[0].standalone() == f"cd {os.getcwd()} && {command}"


def test_a_pasted_line_runs_the_sweeps_python_without_its_environment_activated(
    tmp_path, monkeypatch
):
    """The lines a person pastes (--dry_run's, command.sh, results.md's re-run line) called
    `ann train` by name: in a fresh shell where the sweep's virtual environment was not
    activated, "ann: command not found" (or another install's ann). They run the sweep's own
    interpreter now, as its trials do (`Trial.argv`)."""
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # this checkout's ann, carried by the line
    sweep_dir = str(tmp_path / "sweep")
    trials, configs = grid.prepare(definition_lib.load(write_config(tmp_path, GRID), {}), sweep_dir)
    trials[0].write_files(configs[0])
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no `ann` on it
    for text in (trials[0].standalone(), f"{trials[0].workdir}/command.sh"):
        proc = subprocess.run(
            ["bash", "--norc", "-c", f"{text} --helpshort"], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0 and "--config" in proc.stdout, (text, proc.stderr)
    assert f" {shlex.quote(sys.executable)} " in trials[0].standalone()


def test_a_sweep_whose_first_trials_all_fail_alike_stops(tmp_path, monkeypatch):
    # A fixed override that failed every trial at its start ran all of them to the same error.
    def failing(error):
        code = f"import sys; print('error: ' + {error}, file=sys.stderr); sys.exit(1)"
        argv = lambda t: [sys.executable, "-c", code, t.workdir, str(t.overrides)]  # noqa: E731
        monkeypatch.setattr(trials_lib.Trial, "argv", argv)

    definition = definition_lib.load(write_config(tmp_path, GRID), {})
    sweep_dir = str(tmp_path / "sweep")
    # Each names its own workdir: the same cause, said alike.
    failing("'data directory ' + sys.argv[1] + '/tfds holds no digits'")
    trials, _ = grid.prepare(definition, sweep_dir)
    with pytest.raises(SweepError) as e:
        grid.run(definition, sweep_dir, "val/accuracy", "max", log=lambda line: None)
    first = trials[0]
    assert str(e.value) == (
        "stopping the sweep (--fail_fast=3): its first 3 trials all failed with the same error "
        f"and none finished, so the others would too: data directory {first.workdir}/tfds holds "
        f"no digits (trial {first.name}'s log: {first.workdir}/stderr.log); what ran is kept "
        "(results.md); fix the cause and run the same command again with --retry_failed, or "
        "give --fail_fast=0 to run every trial anyway"
    )  # no fixed override: none is advised (it said "a fixed --config.KEY=VALUE of the sweep's")
    rows = read_csv(os.path.join(sweep_dir, "results.csv"))  # what ran is kept
    assert [r["status"] for r in rows] == ["failed", "failed", "failed", "pending"]
    assert not os.path.exists(os.path.join(trials[3].workdir, "stderr.log"))  # never started
    # --fail_fast=0 runs every trial; so do failures that differ (each trial's own).
    for n, (error, limit) in enumerate([("'same'", 0), ("'bad ' + sys.argv[2]", 3)]):
        failing(error)
        other = str(tmp_path / f"other{n}")
        grid.run(definition, other, "val/accuracy", "max", log=lambda line: None, fail_fast=limit)
        assert [r["status"] for r in read_csv(os.path.join(other, "results.csv"))] == ["failed"] * 4


def test_fail_fast_names_the_swept_value_its_error_names(tmp_path, monkeypatch):
    # A bad data.data_dir in get_sweep was told to rerun with --retry_failed (which fails the
    # same way) or give "a fixed --config.KEY=VALUE" the command did not have.
    code = "import sys; sys.exit('error: no data set in /nope/tfds')"
    monkeypatch.setattr(trials_lib.Trial, "argv", lambda t: [sys.executable, "-c", code])
    sweep = """
    return h.product(
        h.sweep("data.data_dir", ["/nope"]),
        h.sweep("optimizer.learning_rate", [1e-3, 3e-3, 1e-2, 3e-2]),
    )
    """
    definition = definition_lib.load(write_config(tmp_path, sweep), {})
    with pytest.raises(SweepError) as e:
        grid.run(definition, str(tmp_path / "s"), "val/accuracy", "max", log=lambda line: None)
    assert str(e.value).endswith(
        "what ran is kept (results.md); fix the cause, the swept value data.data_dir=/nope its "
        "error names: change it in the config's get_sweep and run the same command again, or "
        "give --fail_fast=0 to run every trial anyway"
    ), e.value


def test_a_sweep_stopped_by_a_bad_fixed_override_takes_the_fixed_value(tmp_path, monkeypatch):
    """Fail-fast said "fix the cause and run the same command again", but a fix that was a
    fixed `--config.KEY=VALUE` of the sweep was refused in that workdir ("resume it with the same
    flags"), though no trial had trained with the bad value. Now its failed trials rerun with
    the new one, said in one line; once a trial trained (scored, or a checkpoint saved), another
    value is still refused, naming the fix."""
    code = (
        "import json, sys; w = sys.argv[1]; d = json.load(open(w + '/config.json'))['data']"
        "['data_dir']\nif d == '/nope': sys.exit('error: no data set in ' + d)\n"
        "open(w + '/metrics.jsonl', 'w').write('{\"step\": 10, \"val/accuracy\": 0.5}\\n')\n"
        "open(w + '/run_status.json', 'w').write('{\"status\": \"done\", \"step\": 10}')"
    )
    monkeypatch.setattr(trials_lib.Trial, "argv", lambda t: [sys.executable, "-c", code, t.workdir])
    sweep_dir = str(tmp_path / "sweep")
    config = write_config(tmp_path, GRID)

    def grid_run(data_dir, lines):
        definition = definition_lib.load(config, {"data.data_dir": data_dir})
        results.check_same_sweep(sweep_dir, "grid", definition.fixed, ("val/accuracy", "max"))
        grid.run(definition, sweep_dir, "val/accuracy", "max", log=lines.append)

    with pytest.raises(SweepError, match=r"run the same command again with --retry_failed, or, "
                       r"where the cause is a fixed --config.KEY=VALUE of the sweep's, with its "
                       r"new value \(the failed trials rerun with it\)"):  # fmt: skip
        grid_run("/nope", [])
    statuses = [r["status"] for r in read_csv(os.path.join(sweep_dir, "results.csv"))]
    assert statuses == ["failed", "failed", "failed", "pending"]
    lines = []
    grid_run(str(tmp_path / "tfds"), lines)
    assert lines[0] == (
        f"--config.data.data_dir changed from /nope to {tmp_path / 'tfds'} since this sweep last "
        "ran, and no trial of it trained with the old value: its 3 failed trials are rerun with "
        "the new one"
    )
    rows = read_csv(os.path.join(sweep_dir, "results.csv"))
    assert [r["status"] for r in rows] == ["done"] * 4  # the 3 failed and the one never run
    # A trial that was scored (or saved a checkpoint) trained with the value: refused.
    with pytest.raises(SweepError, match=f"its trial {re.escape(rows[0]['trial'])} was scored "
                       r"\(done\) with those"):  # fmt: skip
        grid_run("/nope", [])
    for row in rows:
        os.remove(os.path.join(sweep_dir, row["trial"], "run_status.json"))
        trials_lib.update_record(os.path.join(sweep_dir, row["trial"]), returncode=1)
    os.makedirs(os.path.join(sweep_dir, rows[0]["trial"], "checkpoints", "10"))
    with pytest.raises(SweepError) as e:
        grid_run("/nope", [])
    assert str(e.value) == (
        f"--workdir={sweep_dir} holds a sweep run with fixed overrides --config.data.data_dir="
        f"{tmp_path / 'tfds'} (this command: --config.data.data_dir=/nope): its trial "
        f"{rows[0]['trial']} saved a checkpoint with those, so results would mix settings; give "
        "this one a new --workdir, or resume it with the same flags"
    )


def test_fail_fast_says_a_new_workdir_once_a_stopped_trial_saved_a_checkpoint(
    tmp_path, monkeypatch
):
    """With --parallel=2, a trial still running when fail-fast stopped the sweep saved a
    checkpoint as it stopped, so the fixed override's fix was refused in that workdir, while
    the line told the user to give it there."""
    code = (
        "import os, signal, sys, time\n"
        "def saved(*_):\n"
        "    os.makedirs(os.path.join(sys.argv[1], 'checkpoints', '10'))\n"
        "    sys.exit(143)\n"
        "if sys.argv[2] == 'slow':\n"
        "    signal.signal(signal.SIGTERM, saved)\n"
        "    time.sleep(120)\n"
        "sys.exit('error: no data set in /nope')"
    )
    definition = definition_lib.load(write_config(tmp_path, GRID), {"data.data_dir": "/nope"})
    sweep_dir = str(tmp_path / "sweep")
    trials, _ = grid.prepare(definition, sweep_dir)
    slow = trials[1].name  # runs beside the first three, which fail one after another

    def argv(trial):
        return [sys.executable, "-c", code, trial.workdir, "slow" if trial.name == slow else ""]

    monkeypatch.setattr(trials_lib.Trial, "argv", argv)
    with pytest.raises(SweepError) as e:
        grid.run(definition, sweep_dir, "val/accuracy", "max", parallel=2, log=lambda _: None)
    assert str(e.value).endswith(
        "fix the cause and run the same command again with --retry_failed, or, where the cause "
        "is a fixed --config.KEY=VALUE of the sweep's, with its new value and a new --workdir "
        f"(its trial {slow} saved a checkpoint: this workdir keeps its fixed overrides), or give "
        "--fail_fast=0 to run every trial anyway"
    )
    with pytest.raises(SweepError, match=f"its trial {re.escape(slow)} saved a checkpoint"):
        results.check_same_sweep(sweep_dir, "grid", {"data.data_dir": "/data"})


def test_a_study_stopped_by_a_bad_fixed_override_reruns_its_failed_draws(tmp_path, monkeypatch):
    # The study refused the fixed value's fix in its workdir too; its failed trials counted
    # against --trials. Now they are set aside and their parameters run again with the fix.
    code = (
        "import json, sys; w = sys.argv[1]; d = json.load(open(w + '/config.json'))['data']"
        "['data_dir']\nif d == '/nope': sys.exit('error: no data set in ' + d)\n"
        "open(w + '/metrics.jsonl', 'w').write('{\"step\": 10, \"val/accuracy\": 0.5}\\n')\n"
        "open(w + '/run_status.json', 'w').write('{\"status\": \"done\", \"step\": 10}')"
    )
    monkeypatch.setattr(trials_lib.Trial, "argv", lambda t: [sys.executable, "-c", code, t.workdir])
    sweep_dir, config = str(tmp_path / "tpe"), write_config(tmp_path, GRID)

    def study(data_dir, lines):
        definition = definition_lib.load(config, {"data.data_dir": data_dir})
        results.check_same_sweep(sweep_dir, "tpe", definition.fixed, ("val/accuracy", "max"))
        search.run(definition, sweep_dir, 4, "val/accuracy", "max", log=lines.append)

    with pytest.raises(SweepError, match=r"count against --trials\), or, where the cause is a "
                       r"fixed --config.KEY=VALUE of the sweep's, with its new value"):  # fmt: skip
        study("/nope", [])
    failed = read_csv(os.path.join(sweep_dir, "results.csv"))
    assert [r["status"] for r in failed] == ["failed"] * 3
    lines = []
    study(str(tmp_path / "tfds"), lines)
    assert lines[0] == (
        f"--config.data.data_dir changed from /nope to {tmp_path / 'tfds'} since this study last "
        "ran, and no trial of it trained with the old value: its 3 failed trials are rerun with "
        "the new one (same parameters; they no longer count against --trials)"
    )
    rows = read_csv(os.path.join(sweep_dir, "results.csv"))
    assert [r["status"] for r in rows] == ["done"] * 4  # the 3 set aside are not listed
    swept = ("optimizer.learning_rate", "model.features")
    redrawn = [tuple(r[k] for k in swept) for r in rows[:3]]
    assert redrawn == [tuple(r[k] for k in swept) for r in failed]


def test_a_study_whose_first_trials_all_fail_alike_stops(tmp_path, monkeypatch):
    code = "import sys; print('error: no such data set', file=sys.stderr); sys.exit(1)"
    monkeypatch.setattr(trials_lib.Trial, "argv", lambda t: [sys.executable, "-c", code])
    definition = definition_lib.load(write_config(tmp_path, GRID), {})
    sweep_dir = str(tmp_path / "tpe")
    with pytest.raises(SweepError, match=r"^stopping the sweep \(--fail_fast=3\): its first 3 "
                       r"trials all failed with the same error and none finished, so the others "
                       r"would too: no such data set \(trial 000-.*its failed trials count "
                       r"against --trials"):  # fmt: skip
        search.run(definition, sweep_dir, 5, "val/accuracy", "max", log=lambda line: None)
    rows = read_csv(os.path.join(sweep_dir, "results.csv"))
    assert [r["status"] for r in rows] == ["failed"] * 3  # 2 never drawn
    # Nothing runs a cluster's trials here: --fail_fast with --emit is refused, not ignored.
    proc = sweep_cli("--config=configs/digits_mlp.py", f"--workdir={tmp_path / 'e'}",
                     "--emit=slurm", "--fail_fast=2")  # fmt: skip
    assert one_line_error(proc) == (
        "error: --fail_fast stops a sweep run here; --emit=slurm runs none (a cluster's trials "
        "run apart): drop --fail_fast"
    )


def test_a_trials_command_sh_refuses_flags_that_would_change_it_unrecorded(tmp_path, monkeypatch):
    # `./command.sh --config.total_steps=5000` passed the flag on ("$@"): the trial's workdir
    # then held a run that results.csv and trial.json described as the sweep's own.
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.chdir(tmp_path)  # where the trial's command runs (unrefused, it trained there)
    sweep_dir = str(tmp_path / "sweep")
    trials, configs = grid.prepare(definition_lib.load(write_config(tmp_path, GRID), {}), sweep_dir)
    trials[0].write_files(configs[0])
    before = sorted(os.listdir(trials[0].workdir))
    script = os.path.join(trials[0].workdir, "command.sh")
    proc = subprocess.run([script, "--config.total_steps=5", "--workdir=x"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert one_line_error(proc) == (
        f"error: command.sh reruns trial {trials[0].name} exactly as the sweep ran it "
        "(results.csv describes its workdir), so it takes no flags (got: "
        "--config.total_steps=5 --workdir=x); for a variant, run this script's last line with "
        "your flags added and a --workdir of its own"
    )
    assert sorted(os.listdir(trials[0].workdir)) == before  # nothing ran
    assert results._command(trials[0].workdir) == trials[0].standalone()  # results' copy


def test_a_trial_failed_by_the_sweeps_metric_runs_again_and_retries_are_not_skips(
    tmp_path, launched
):
    definition = definition_lib.load(write_config(tmp_path, GRID), {})
    sweep_dir = str(tmp_path / "sweep")
    trials, _ = grid.prepare(definition, sweep_dir)
    # One trial failed on a mistyped --metric (the sweep's mistake), one on its own error.
    metric_error = "sweep --metric: 'val/acuracy' is not a validation metric of this run; ..."
    for trial in trials[:2]:
        os.makedirs(trial.workdir)
    trials_lib.update_record(trials[0].workdir, returncode=1, error=metric_error)
    trials_lib.update_record(trials[1].workdir, returncode=1, error="boom")
    lines = []
    grid.run(definition, sweep_dir, "val/accuracy", "max", log=lines.append)
    names = [t.name for t in launched]
    assert trials[0].name in names and trials[1].name not in names
    assert "skipping 1 failed (--retry_failed reruns failed trials); rerunning 1 failed" in lines[0]
    launched.clear()
    grid.run(definition, sweep_dir, "val/accuracy", "max", retry_failed=True, log=lines.append)
    assert trials[1].name in [t.name for t in launched] and "skipping" not in lines[-1], lines[-1]


def test_finished_trials_an_edited_sweep_no_longer_gives_are_named(tmp_path, monkeypatch, capsys):
    # Editing get_sweep's values and rerunning dropped the finished trials from the results
    # without a word ("2 trials: 2 done"), and the best line could name another trial.
    sweep_dir = tmp_path / "sweep"
    before = definition_lib.load(write_config(tmp_path, GRID), {})
    trials, _ = grid.prepare(before, str(sweep_dir))
    for trial in trials[:2]:
        os.makedirs(trial.workdir)
        (sweep_dir / trial.name / "run_status.json").write_text('{"status": "done", "step": 1}')
        trials_lib.update_record(trial.workdir, returncode=0)
    edited = definition_lib.load(
        write_config(tmp_path, "return h.sweep('optimizer.learning_rate', [1e-2])"), {}
    )
    monkeypatch.setattr(launch, "run", lambda *a, **k: None)
    grid.run(edited, str(sweep_dir), "val/accuracy", "max", log=lambda line: None)
    err = capsys.readouterr().err
    assert err.startswith(
        f"warning: 2 finished trials in {sweep_dir} are no longer in get_sweep's space and left "
        f"out of the results (workdirs kept): {', '.join(sorted(t.name for t in trials[:2]))}"
    ), err


def _done(trial):
    """`trial`'s workdir as a finished run leaves it (its config.json as the sweep wrote it)."""
    with open(os.path.join(trial.workdir, "run_status.json"), "w") as f:
        json.dump({"status": "done", "step": 20}, f)
    trials_lib.update_record(trial.workdir, returncode=0)


def test_a_sweep_whose_sweep_json_was_deleted_or_is_no_file_is_told_its_rerun(
    tmp_path, launched, capsys, one_device
):
    """`rm sweep.json; ann sweep --summarize=SWEEP` said "holds runs (...), not a sweep (no
    sweep.json): give the --workdir of an ann sweep", and the rerun was refused as "holds
    runs": it is a sweep, whose rerun rewrites the file, as for an emptied one. A directory
    named sweep.json was told the rerun too, which cannot replace it."""
    sweep_dir = str(tmp_path / "sweep")
    config = write_config(tmp_path, "return h.sweep('optimizer.learning_rate', [1e-3, 3e-3])")
    grid.run(definition_lib.load(config, {}), sweep_dir, "val/accuracy", "max", log=print)
    _done(launched[0])
    os.remove(f"{sweep_dir}/sweep.json")
    names = ", ".join(sorted(t.name for t in launched))
    rerun = (
        f"rerun the ann sweep command that made it, with the same flags (a trial's {sweep_dir}/"
        "TRIAL/command.sh shows its --config and overrides): it rewrites sweep.json, keeping "
        "the trials' results in their workdirs"
    )
    with pytest.raises(SweepError) as e:
        results.write(sweep_dir)
    missing = f"{sweep_dir}/sweep.json is missing, though its trials' workdirs are there ({names})"
    assert str(e.value) == f"{missing}: deleted; {rerun}"
    capsys.readouterr()
    results.check_same_sweep(sweep_dir, "grid", {}, ("val/accuracy", "max"), config)
    assert capsys.readouterr().err.startswith(f"warning: {missing}: deleted, so this command ")
    (tmp_path / "sweep" / "study.db").write_bytes(b"")  # a TPE study's: not run as a grid
    with pytest.raises(SweepError, match=r"holds a tpe sweep \(its study.db; its sweep.json is "):
        results.check_same_sweep(sweep_dir, "grid", {}, ("val/accuracy", "max"), config)
    os.remove(f"{sweep_dir}/study.db")
    proc = sweep_cli(f"--config={config}", f"--workdir={sweep_dir}", "--dry_run")
    assert proc.returncode == 0 and "deleted, so this command" in proc.stderr, proc.stderr
    # A directory in its place: moved aside first (a run replaces the file whole).
    os.mkdir(f"{sweep_dir}/sweep.json")
    aside = f"move it aside (mv {sweep_dir}/sweep.json {sweep_dir}/sweep.json.aside)"
    with pytest.raises(SweepError) as e:
        results.write(sweep_dir)
    assert str(e.value) == (
        f"{sweep_dir}/sweep.json is a directory, not a file: damaged; {aside}, then {rerun}"
    )
    proc = sweep_cli(f"--config={config}", f"--workdir={sweep_dir}", "--dry_run")
    assert one_line_error(proc) == (
        f"error: {sweep_dir}/sweep.json is a directory, not a file: damaged; {aside} and rerun "
        "this command"
    )


def test_a_workdir_refuses_another_config_and_a_trial_trained_under_another(tmp_path, launched):
    # A sweep of another config file in a workdir skipped its done trial (another model's) as
    # done, ranked that result as its own and rewrote sweep.json's config, without a word.
    sweep_dir = str(tmp_path / "sweep")
    first = write_config(tmp_path, GRID)
    grid.run(definition_lib.load(first, {}), sweep_dir, "val/accuracy", "max", log=print)
    trials = list(launched)
    _done(trials[0])
    other = write_config(tmp_path, GRID, steps=30, name="other.py")
    with pytest.raises(SweepError) as e:
        results.check_same_sweep(sweep_dir, "grid", {}, None, config=other)
    assert str(e.value) == (
        f"--workdir={sweep_dir} holds a sweep run with --config={first} (this command: "
        f"--config={other}): its trial {trials[0].name} was scored (done) with it, so results "
        f"would mix configs; give this one a new --workdir, or resume it with --config={first}"
    )
    # Below it, each trial's record against the config the sweep now gives it: another file,
    # or this one edited (get_config here), gave the done trial another config.
    refused = (
        f"--workdir={sweep_dir}: its trial {trials[0].name} was scored (done) with another "
        "config than this sweep gives it (checkpoint_every_steps: 20 -> 30; total_steps: 20 -> "
        "30), so results would report another run as this one's; give this sweep a new "
        "--workdir, or resume it with the config and flags it ran with"
    )
    with pytest.raises(SweepError) as e:
        grid.run(definition_lib.load(other, {}), sweep_dir, "val/accuracy", "max", log=print)
    assert str(e.value) == refused
    write_config(tmp_path, GRID, steps=30)  # the same file, edited
    results.check_same_sweep(sweep_dir, "grid", {}, None, config=first)
    with pytest.raises(SweepError) as e:
        grid.run(definition_lib.load(first, {}), sweep_dir, "val/accuracy", "max", log=print)
    assert str(e.value) == refused
    # A copy of the file, or the file moved elsewhere, is the same config: it resumes.
    write_config(tmp_path, GRID)
    copy = write_config(tmp_path, GRID, name="copy.py")
    results.check_same_sweep(sweep_dir, "grid", {}, None, config=copy)
    moved = str(tmp_path / "moved.py")
    os.rename(first, moved)
    results.check_same_sweep(sweep_dir, "grid", {}, None, config=moved)
    launched.clear()
    lines = []
    grid.run(definition_lib.load(moved, {}), sweep_dir, "val/accuracy", "max", log=lines.append)
    assert [t.name for t in launched] == [t.name for t in trials[1:]]
    assert "4 trials, 3 to run, 1 at a time; skipping 1 done" in lines[0], lines
    # A trial that failed before it trained under another config runs again, with this one.
    os.remove(os.path.join(trials[0].workdir, "run_status.json"))
    trials_lib.update_record(trials[0].workdir, returncode=1, error="boom")
    launched.clear()
    grid.run(definition_lib.load(other, {}), sweep_dir, "val/accuracy", "max", log=lines.append)
    assert trials[0].name in [t.name for t in launched]
    with open(os.path.join(trials[0].workdir, "config.json")) as f:
        assert json.load(f)["total_steps"] == 30


def test_a_study_refuses_a_trial_trained_under_another_config(tmp_path, launched):
    sweep_dir = str(tmp_path / "tpe")
    first = write_config(tmp_path, "return h.loguniform('optimizer.learning_rate', 1e-3, 1e-2)")
    search.run(definition_lib.load(first, {}), sweep_dir, 2, "val/accuracy", "max", log=print)
    _done(launched[0])
    edited = write_config(tmp_path, "return h.loguniform('optimizer.learning_rate', 1e-3, 1e-2)",
                          steps=30)  # fmt: skip
    with pytest.raises(SweepError, match=f"its trial {re.escape(launched[0].name)} was scored "
                       r"\(done\) with another config than this sweep gives it "
                       r"\(checkpoint_every_steps: 20 -> 30; total_steps: 20 -> 30\)"):  # fmt: skip
        search.run(definition_lib.load(edited, {}), sweep_dir, 3, "val/accuracy", "max")
    write_config(tmp_path, "return h.loguniform('optimizer.learning_rate', 1e-3, 1e-2)")
    search.run(definition_lib.load(first, {}), sweep_dir, 3, "val/accuracy", "max", log=print)


@pytest.mark.parametrize("warmup", ["0, 11", "12, 15"], ids=["launched", "refused"])
def test_a_study_reruns_a_trial_that_failed_before_training_under_another_config(
    tmp_path, monkeypatch, warmup
):
    # A grid reran such a trial with the config it now gives; a study kept it failed for good,
    # counted against --trials (here it drew nothing more: 4 of 4 trials, all failed).
    code = (
        "import json, sys; w = sys.argv[1]; c = json.load(open(w + '/config.json'))\n"
        "if c['total_steps'] == 12: sys.exit('error: boom')\n"
        "open(w + '/metrics.jsonl', 'w').write('{\"step\": 10, \"val/accuracy\": 0.5}\\n')\n"
        "open(w + '/run_status.json', 'w').write('{\"status\": \"done\", \"step\": 10}')"
    )
    monkeypatch.setattr(trials_lib.Trial, "argv", lambda t: [sys.executable, "-c", code, t.workdir])
    sweep_dir = str(tmp_path / "tpe")
    space_ = f"return h.randint('optimizer.warmup_steps', {warmup})"

    def study(steps, lines):
        definition = definition_lib.load(write_config(tmp_path, space_, steps=steps), {})
        search.run(definition, sweep_dir, 4, "val/accuracy", "max", log=lines.append, fail_fast=0)
        return read_csv(os.path.join(sweep_dir, "results.csv"))

    # 12 steps: the launched trials fail before training, or a warmup of 12 steps or more is
    # refused when drawn; at 30 steps they run, with the same parameters.
    first = study(12, [])
    assert {r["status"] for r in first} == {"failed"}, first
    refused = [r for r in first if "must be in [0, 12)" in r["error"]]
    assert len(refused) == (4 if warmup == "12, 15" else 0), first
    before = sorted(r["optimizer.warmup_steps"] for r in first)
    lines = []
    rows = study(30, lines)
    assert [r["status"] for r in rows] == ["done"] * 4, rows
    assert sorted(r["optimizer.warmup_steps"] for r in rows) == before
    assert lines[0] == (
        "4 failed trials of the study failed before training under another config than this "
        "sweep gives them (or only on the sweep's --metric): rerun with this one (same "
        "parameters; set aside, workdirs kept, no longer counted against --trials)"
    )


def test_an_error_in_get_sweep_is_one_line_naming_its_line(tmp_path):
    path = write_config(tmp_path, "return 1 / 0")
    line = open(path).read().splitlines().index("    return 1 / 0") + 1
    said = f"--config={path} line {line}: ZeroDivisionError: division by zero; fix the config file"
    with pytest.raises(SweepError) as e:
        definition_lib.load(path, {})
    assert str(e.value) == said
    for extra in ("--dry_run", "--search=tpe"):  # it was a 30-line traceback
        proc = sweep_cli(f"--config={path}", f"--workdir={tmp_path / 's'}", extra)
        assert one_line_error(proc) == f"error: {said}"
    assert not os.path.exists(tmp_path / "s")
    no_h = write_config(tmp_path, "return None", name="no_h.py")
    text = open(no_h).read().replace("def get_sweep(h):", "def get_sweep():")
    open(no_h, "w").write(text)
    with pytest.raises(SweepError, match=r"get_sweep\(\) takes no argument; it is given h"):
        definition_lib.load(no_h, {})


def test_the_picture_is_drawn_as_each_trial_scores_not_only_at_the_end(tmp_path, monkeypatch):
    # A sweep stopped by Ctrl-C after trials had scored left results.csv and no results.png.
    definition = definition_lib.load(write_config(tmp_path, GRID), {})
    sweep_dir = tmp_path / "sweep"
    trials, _ = grid.prepare(definition, str(sweep_dir))

    def one_then_ctrl_c(next_trial, on_end, parallel, log):
        trial = next_trial()
        os.makedirs(trial.workdir, exist_ok=True)
        with open(os.path.join(trial.workdir, "metrics.jsonl"), "w") as f:
            f.write(json.dumps({"step": 10, "val/accuracy": 0.5, "eval/accuracy": 0.4}) + "\n")
        with open(os.path.join(trial.workdir, "run_status.json"), "w") as f:
            f.write(json.dumps({"status": "done", "step": 10}))
        trials_lib.update_record(trial.workdir, returncode=0)
        on_end(trial, launch.Outcome("done", 0, None, 1.0))
        raise KeyboardInterrupt

    monkeypatch.setattr(launch, "run", one_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        grid.run(definition, str(sweep_dir), "val/accuracy", "max", log=lambda line: None)
    assert (sweep_dir / "results.png").exists()


# ---- cluster scripts -----------------------------------------------------------------------


@pytest.fixture
def fake_python(tmp_path, monkeypatch):
    """`python` and `ann` on PATH that print their arguments, `python` the sweep's interpreter
    too: run the emitted scripts (whose trials are `PYTHON -P -m ann train ...` in SLURM, the
    image's `ann train ...` in a pod) without training."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python", "ann"):
        (bin_dir / name).write_text('#!/usr/bin/env bash\necho "ARGS $*"\n')
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(trials_lib, "PYTHON_ANN", [str(bin_dir / "python"), "-P", "-m", "ann"])


def test_slurm_and_kubernetes_run_the_trial_commands(tmp_path, fake_python, monkeypatch):
    import yaml

    monkeypatch.chdir(tmp_path)  # the project: its config is in the image (`pod_trials`)
    definition = definition_lib.load(write_config(tmp_path, GRID), {"seed": 3})
    trials, _ = grid.prepare(definition, str(tmp_path / "sweep"))
    sbatch = emit.write(
        "slurm", trials, str(tmp_path / "sweep"), cwd=str(ROOT), parallel=2, cpus=4, memory="8G"
    )
    text = open(sbatch).read()
    assert "#SBATCH --array=0-3%2" in text and "#SBATCH --cpus-per-task=4" in text
    # The log path absolute: sbatch reads a relative one from where it is submitted (trial 46c).
    relative = emit.write("slurm", trials, "sweep", cwd=str(tmp_path), parallel=2, cpus=4,
                          memory="8G")  # fmt: skip
    assert f"\n#SBATCH --output={tmp_path}/sweep/slurm-%A_%a.out\n" in open(relative).read()
    # A project path with a space or a % (sbatch split the line at the space and read the %
    # as a pattern): quoted as sbatch's directive parser groups it, the % doubled.
    odd = tmp_path / "my 100% project"
    odd.mkdir()
    quoted = emit.write("slurm", trials, "sweep", cwd=str(odd), parallel=2, cpus=4, memory="8G")
    [line] = [x for x in open(quoted).read().splitlines() if x.startswith("#SBATCH --output=")]
    assert line == f'#SBATCH --output="{tmp_path}/my 100%% project/sweep/slurm-%A_%a.out"', line
    # SIGTERM to the shell (which passes it on) before the time limit, as a pod's grace period:
    # the trial saves; without it it had SLURM's KillWait, 30 s.
    assert f"\n#SBATCH --signal=B:TERM@{emit.GRACE_SECONDS}\n" in text
    for trial in trials:
        assert trial.command() in text
        assert "--config.seed=3" in trial.command()  # fixed on the sweep's command line
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "2"}
    proc = subprocess.run(["bash", sbatch], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ran = trials[2].workdir
    assert f"--workdir={ran}" in open(os.path.join(ran, "stdout.log")).read()
    record = trials_lib.read_record(ran)
    # The stand-in python returns at once, but a loaded machine can still take a second.
    assert 0 <= record.pop("wall_seconds") < 60
    assert isinstance(record.pop("started_at"), float) and record.pop("started")
    assert record.pop("ended") and record.pop("heartbeat_seconds") == 60
    assert record == {"launcher": "slurm", "returncode": 0, "attempts": 1}
    # Resubmitted (every index runs again): an unfinished trial resumes and adds an attempt and
    # its time, keeping the record's other fields; a finished one is skipped, untouched. The
    # rerun wrote a record of its own 2 seconds and nothing else. An attempt killed whole (an
    # OOM-killed pod, its record's end never written) lost its time: it counts to its last write.
    killed_at = time.time() - 30
    trials_lib.update_record(ran, name="kept", wall_seconds=6.5, started_at=killed_at, ended=None)
    for name in ("stdout.log", "stderr.log", "heartbeat"):
        os.utime(os.path.join(ran, name), (killed_at + 4, killed_at + 4))
    assert subprocess.run(["bash", sbatch], env=env, capture_output=True).returncode == 0
    record = trials_lib.read_record(ran)
    assert record["attempts"] == 2 and record["name"] == "kept"
    assert 6.5 + 4 <= record["wall_seconds"] < 6.5 + 30, record
    with open(os.path.join(ran, "run_status.json"), "w") as f:
        json.dump({"status": "done", "step": 20}, f)
    log = open(os.path.join(ran, "stdout.log")).read()
    proc = subprocess.run(["bash", sbatch], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and "is finished: nothing to run" in proc.stderr, proc.stderr
    assert trials_lib.read_record(ran) == record
    assert open(os.path.join(ran, "stdout.log")).read() == log  # not run
    env["SLURM_ARRAY_TASK_ID"] = "4"
    assert subprocess.run(["bash", sbatch], env=env, capture_output=True).returncode == 2

    manifest = emit.write(
        "k8s",
        trials,
        str(tmp_path / "sweep"),
        parallel=2,
        cpus=4,
        memory="8Gi",
        image="ann:test",
        pvc="runs",
        root=str(ROOT),
    )
    job = yaml.safe_load(open(manifest))
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == 4 and job["spec"]["parallelism"] == 2
    assert job["spec"]["backoffLimitPerIndex"] == 1  # one failing trial does not end the rest
    # A preempted trial (saved, exit 143) is recreated without spending its index's retry.
    (by_code,) = [r for r in job["spec"]["podFailurePolicy"]["rules"] if "onExitCodes" in r]
    assert by_code["action"] == "Ignore" and by_code["onExitCodes"]["values"] == [143]
    assert (
        by_code["onExitCodes"]["containerName"]
        == job["spec"]["template"]["spec"]["containers"][0]["name"]
    )
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ann:test"
    script = container["command"][2]
    env = {**os.environ, "JOB_COMPLETION_INDEX": "1"}
    proc = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert trials_lib.read_record(trials[1].workdir)["launcher"] == "kubernetes"


# A trial that saves on SIGTERM: it says it started (its pid), and on SIGTERM leaves `term` and
# exits 143 as ann does.
SAVES_ON_SIGTERM = """#!/usr/bin/env bash
trap 'echo saved > "$MARKS/term"; exit 143' TERM
echo $$ > "$MARKS/started.tmp" && mv "$MARKS/started.tmp" "$MARKS/started"
while :; do sleep 0.05; done
"""


@pytest.mark.parametrize("launcher", ["k8s", "slurm"])
def test_a_sigterm_to_the_emitted_script_reaches_the_trial(tmp_path, monkeypatch, launcher):
    """A pod runs its script as `bash -c SCRIPT`, bash its PID 1, which the kernel spares any
    signal it has no handler for: the kubelet's SIGTERM was dropped, ann trained on until the
    SIGKILL (no checkpoint, `running` in run_status.json, exit 137 counted as a failure), and
    the Job waited 30 s, not the training Job's 120. (A shell that is not PID 1 died of it,
    its trial training on alone.) The shell passes it on, waits, and records the 143."""
    import yaml

    monkeypatch.chdir(tmp_path)
    bin_dir, marks = tmp_path / "bin", tmp_path / "marks"
    bin_dir.mkdir()
    marks.mkdir()
    for name in ("python", "ann"):
        (bin_dir / name).write_text(SAVES_ON_SIGTERM)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(trials_lib, "PYTHON_ANN", [str(bin_dir / "python"), "-P", "-m", "ann"])
    definition = definition_lib.load(write_config(tmp_path, GRID), {})
    trials, _ = grid.prepare(definition, "sweep")
    options = dict(parallel=0, cpus=1)
    if launcher == "k8s":
        options.update(memory="1Gi", image="ann:test", pvc="runs", root=str(tmp_path))
        job = yaml.safe_load(open(emit.write("k8s", trials, "sweep", **options)))
        pod = job["spec"]["template"]["spec"]
        command = pod["containers"][0]["command"]
        index = {"JOB_COMPLETION_INDEX": "1"}
    else:
        command = ["bash", emit.write("slurm", trials, "sweep", cwd=str(tmp_path), memory="1G",
                                      **options)]  # fmt: skip
        index = {"SLURM_ARRAY_TASK_ID": "1"}
    shell = subprocess.Popen(command, env={**os.environ, **index, "MARKS": str(marks)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    started = marks / "started"
    try:
        for _ in range(600):
            if started.exists() or shell.poll() is not None:
                break
            time.sleep(0.05)
        assert started.exists(), shell.communicate()
        shell.send_signal(signal.SIGTERM)
        _, err = shell.communicate(timeout=30)
        assert (marks / "term").exists(), err  # the trial got it, and saved
        assert shell.returncode == 143, err  # preempted: recreated, not counted as a failure
        record = trials_lib.read_record(trials[1].workdir)
        assert record["returncode"] == 143 and record["ended"], record
        if launcher == "k8s":  # and the time to save before the SIGKILL
            assert pod["terminationGracePeriodSeconds"] == emit.GRACE_SECONDS >= 120
    finally:
        if shell.poll() is None:
            shell.kill()
        if started.exists():  # a trial left training (it was, before)
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(started.read_text()), signal.SIGKILL)


def test_a_slurm_task_runs_the_sweeps_python_as_command_sh_does(tmp_path, monkeypatch):
    """sweep.sbatch ran a bare `ann train ...` from PATH where the trial's command.sh runs the
    sweep's own interpreter (`PYTHON -P -m ann train ...`): on a node whose shell had not the
    sweep's virtual environment on its PATH (or sbatch --export=NONE) every task failed with
    "env: 'ann': No such file or directory", exit status 127."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    trials, configs = grid.prepare(definition_lib.load(write_config(tmp_path, GRID), {}), "sweep")
    trials[0].write_files(configs[0])
    options = dict(cwd=str(tmp_path), parallel=0, cpus=1, memory="1G")
    text = open(emit.write("slurm", trials, "sweep", **options)).read()
    alone = open(os.path.join(trials[0].workdir, "command.sh")).read().splitlines()[-1]
    line = alone.split(" && exec ", 1)[1].removesuffix(' "$@"')
    assert f"  0) run_trial {shlex.quote(trials[0].workdir)} {line} ;;\n" in text
    assert f" {PYTHON_ANN} train --config=" in line
    # Run as a node runs it: the sweep's interpreter (a stand-in) by its path, not on PATH.
    python = tmp_path / "venv" / "bin" / "python3"
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "ARGS $*"\n')
    python.chmod(0o755)
    monkeypatch.setattr(trials_lib, "PYTHON_ANN", [str(python), "-P", "-m", "ann"])
    sbatch = emit.write("slurm", trials, "sweep", **options)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SLURM_ARRAY_TASK_ID": "0"}
    proc = subprocess.run(["bash", os.path.abspath(sbatch)], cwd="/", env=env, capture_output=True,
                          text=True)  # fmt: skip
    log = trials[0].workdir
    assert proc.returncode == 0, open(os.path.join(log, "stderr.log")).read()
    assert "ARGS -P -m ann train --config=" in open(os.path.join(log, "stdout.log")).read()
    assert trials_lib.read_record(log)["returncode"] == 0


def _many_trials(tmp_path, n):
    return [
        trials_lib.Trial(f"t{i}", {"seed": i}, {}, "cfg.py", "sweep", str(tmp_path))
        for i in range(n)
    ]


def test_a_slurm_sweep_over_the_default_array_limit_is_submitted_in_chunks(
    tmp_path, fake_python, monkeypatch
):
    """SLURM's default MaxArraySize is 1001 (indices 0-1000): `#SBATCH --array=0-2499%8` was
    refused by sbatch. The trials are now submitted by submit.sh as array jobs of at most 1000
    tasks, each after the one before (so --parallel still caps the whole sweep), task i of the
    one given ANN_ARRAY_OFFSET=K running trial K + i."""
    monkeypatch.chdir(tmp_path)
    trials = _many_trials(tmp_path, 2500)
    sbatch = emit.write("slurm", trials, "sweep", cwd=str(tmp_path), parallel=8, cpus=1,
                        memory="1G")  # fmt: skip
    text = open(sbatch).read()
    assert "\n#SBATCH --array=0-0\n" in text  # submitted alone: one task, which says how
    submit = tmp_path / "sweep" / emit.SLURM_SUBMIT
    assert os.access(submit, os.X_OK)
    calls = tmp_path / "sbatch.calls"
    (tmp_path / "bin" / "sbatch").write_text(
        f'#!/usr/bin/env bash\necho "$*" >>{calls}\necho "$((7 + $(wc -l <{calls})));c1"\n'
    )
    (tmp_path / "bin" / "sbatch").chmod(0o755)
    proc = subprocess.run(["bash", str(submit)], cwd="/", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert calls.read_text().splitlines() == [
        "--parsable --array=0-999%8 --export=ALL,ANN_ARRAY_OFFSET=0 sweep/sweep.sbatch",
        "--parsable --dependency=afterany:8 --array=0-999%8 --export=ALL,ANN_ARRAY_OFFSET=1000 "
        "sweep/sweep.sbatch",
        "--parsable --dependency=afterany:9 --array=0-499%8 --export=ALL,ANN_ARRAY_OFFSET=2000 "
        "sweep/sweep.sbatch",
    ]
    assert proc.stdout.splitlines()[-1] == "submitted trials 2000-2499 of 2500: array job 10"
    calls.unlink()  # a cluster of another limit
    env = {**os.environ, "ANN_ARRAY_CHUNK": "600"}
    subprocess.run(["bash", str(submit)], env=env, check=True, capture_output=True)
    lines = calls.read_text().splitlines()
    assert len(lines) == 5 and "--array=0-99%8 --export=ALL,ANN_ARRAY_OFFSET=2400 " in lines[-1]
    # ANN_ARRAY_CHUNK=0 submitted --array=0--1%8 forever; abc was "unbound variable".
    calls.unlink()
    for chunk in ("0", "abc", "-5", "1.5", "08", "9" * 20):
        env = {**os.environ, "ANN_ARRAY_CHUNK": chunk}
        proc = subprocess.run(["bash", str(submit)], env=env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert proc.returncode == 2 and proc.stderr.splitlines() == [
            f"error: ANN_ARRAY_CHUNK={chunk} is not a positive whole number of trials per array "
            "job; set it to at most your cluster's MaxArraySize, e.g. ANN_ARRAY_CHUNK=1000"
        ], (chunk, proc.stderr)
        assert not calls.exists()
    calls.touch()
    # Task 499 of the third array job runs trial 2499; the script submitted alone says how.
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "499", "ANN_ARRAY_OFFSET": "2000"}
    proc = subprocess.run(["bash", sbatch], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "--workdir=sweep/t2499 " in open(tmp_path / "sweep" / "t2499" / "stdout.log").read()
    del env["ANN_ARRAY_OFFSET"]
    proc = subprocess.run(["bash", sbatch], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "this sweep has 2500 trials, more than one SLURM array holds by default (MaxArray" \
        "Size 1001): submit it with bash sweep/submit.sh" in proc.stderr  # fmt: skip
    # Uncapped: side by side. Emitted again with trials one array holds: no submit.sh.
    calls.unlink()
    emit.write("slurm", trials, "sweep", cwd=str(tmp_path), parallel=0, cpus=1, memory="1G")
    subprocess.run(["bash", str(submit)], check=True, capture_output=True)
    assert "--dependency" not in calls.read_text() and "%" not in calls.read_text()
    emit.write("slurm", trials[:1001], "sweep", cwd=str(tmp_path), parallel=2, cpus=1,
               memory="1G")  # fmt: skip
    assert "\n#SBATCH --array=0-1000%2\n" in open(sbatch).read() and not submit.exists()


def test_a_slurm_script_over_the_default_script_size_is_warned_about(tmp_path, monkeypatch, capsys):
    """sbatch refuses a script over max_script_size (4 MiB by default): about 10,000 trials
    of long commands. Said when it is written, as the cluster's limit may be higher."""
    monkeypatch.chdir(tmp_path)
    trials = _many_trials(tmp_path, 30)
    # Between the script of 30 trials and that of 60.
    monkeypatch.setattr(emit, "SLURM_MAX_SCRIPT_BYTES", len(emit.slurm(trials, "sweep", str(
        tmp_path), 0, 1, "1G").encode()) + 15 * len(trials[0].command().encode()))  # fmt: skip
    emit.write("slurm", trials, "sweep", cwd=str(tmp_path), parallel=0, cpus=1, memory="1G")
    assert capsys.readouterr().err == ""
    emit.write("slurm", _many_trials(tmp_path, 60), "sweep", cwd=str(tmp_path), parallel=0,
               cpus=1, memory="1G")  # fmt: skip
    assert re.fullmatch(
        r"warning: sweep/sweep.sbatch is 0.0 MiB \(60 trials' commands\), over SLURM's default "
        r"max_script_size, 4 MiB \(SchedulerParameters\), which sbatch refuses; split "
        r"get_sweep into sweeps of fewer trials, each with its own --workdir, unless your "
        r"cluster's limit is higher\n",
        capsys.readouterr().err,
    )


def test_a_kubernetes_job_of_many_trials_reads_them_from_a_configmap(tmp_path, fake_python):
    """The pod ran every trial's command as one `bash -c` argument: over 128 KiB (about 400
    trials) Linux refuses it ("Argument list too long") and the container never starts, and
    `kubectl apply` refuses a manifest over 256 KiB. A larger script goes gzipped into a
    ConfigMap the pods mount, applied server-side."""
    import yaml

    trials = _many_trials(tmp_path, 3000)
    k8s = dict(parallel=8, cpus=1, memory="1Gi", image="ann:test", pvc="runs", root=str(tmp_path))
    path = emit.write("k8s", trials, str(tmp_path / "sweep"), **k8s)
    text = open(path).read()
    *_, job = yaml.safe_load_all(text)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert max(len(arg.encode()) for arg in container["command"]) < 128 * 1024
    assert len(text) < 256 * 1024 and f"kubectl apply --server-side -f {path}" in text
    assert emit.apply_command(path) == f"kubectl apply --server-side -f {path}"
    configmap, job = yaml.safe_load_all(text)
    assert configmap["kind"] == "ConfigMap" and job["spec"]["completions"] == 3000
    pod = job["spec"]["template"]["spec"]
    assert {"name": "trials", "configMap": {"name": configmap["metadata"]["name"]}} in pod[
        "volumes"
    ]
    assert {"name": "trials", "mountPath": emit.K8S_SCRIPTS} in container["volumeMounts"]
    # The pod: the ConfigMap's file where it is mounted, index 2999 runs trial 2999.
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    packed = base64.b64decode(configmap["binaryData"]["trials.sh.gz"])
    (mounted / "trials.sh.gz").write_bytes(packed)
    script = container["command"][2].replace(emit.K8S_SCRIPTS, str(mounted))
    env = {**os.environ, "JOB_COMPLETION_INDEX": "2999"}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert "--workdir=sweep/t2999 " in (tmp_path / "sweep" / "t2999" / "stdout.log").read_text()
    # A few trials: inline, as before.
    path = emit.write("k8s", trials[:4], str(tmp_path / "sweep"), **k8s)
    assert emit.apply_command(path) == f"kubectl apply -f {path}"
    assert [d["kind"] for d in yaml.safe_load_all(open(path))] == ["Job"]


def test_a_cluster_trial_killed_whole_reads_lost_once_its_heartbeat_stops(tmp_path, monkeypatch):
    """An array task or pod killed whole (OOM, a time limit) never recorded its attempt's end:
    `--summarize` said `running` until the sweep was resubmitted. The emitted script keeps a
    heartbeat beside the trial while it runs; one that stopped reads `lost`, with the attempt's
    time to its last sign of life."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ann").write_text("#!/usr/bin/env bash\necho started; exec sleep 60\n")
    (bin_dir / "ann").chmod(0o755)
    monkeypatch.setattr(trials_lib, "PYTHON_ANN", [str(bin_dir / "ann")])  # the sweep's python
    sweep_dir = str(tmp_path / "sweep")
    trials, _ = grid.prepare(definition_lib.load(write_config(tmp_path, GRID), {}), sweep_dir)
    sbatch = emit.write("slurm", trials, sweep_dir, cwd=str(ROOT), parallel=0, cpus=1, memory="1G")
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0"}
    task = subprocess.Popen(["bash", sbatch], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    ran = trials[0].workdir
    stdout = os.path.join(ran, "stdout.log")
    for _ in range(600):
        if os.path.exists(stdout) and "started" in open(stdout).read():
            break
        time.sleep(0.1)
    os.killpg(task.pid, signal.SIGKILL)  # the whole task: its record's end never written
    task.wait()
    record = trials_lib.read_record(ran)
    assert record["ended"] is None and record["heartbeat_seconds"] == 60, record
    assert trials_lib.status(ran)[0] == "running"  # its heartbeat is fresh: cannot be told
    start = time.time() - 400  # as if it had started 400 s ago and beaten for 5 s
    trials_lib.update_record(ran, started_at=start)
    for name in trials_lib.SIGNS_OF_LIFE:
        if os.path.exists(os.path.join(ran, name)):
            os.utime(os.path.join(ran, name), (start + 5, start + 5))
    row = results.trial_row(sweep_dir, trials[0].name, {}, "val/accuracy", "max")
    beat = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + 5))
    assert row["status"] == "lost" and row["wall seconds"] == 5.0, row
    assert row["error"] == (
        f"its attempt's heartbeat stopped at {beat} with no end recorded: killed whole (out of "
        "memory, a time limit, a lost node) or suspended; resubmit the sweep to resume it"
    )
    # Resumed by a sweep run here, whose attempts keep no heartbeat: running while it runs.
    local = script_trial(tmp_path / "sweep", trials[0].name, "import time; time.sleep(30)")
    run = launch._start(local, sorted(os.sched_getaffinity(0)))
    try:
        assert trials_lib.status(ran)[0] == "running"
    finally:
        run.proc.kill()
        run.proc.wait()
        for f in run.logs:
            f.close()


def test_the_emitted_record_credits_a_killed_attempt_as_trials_lib_does(tmp_path):
    """The time of an attempt killed before it recorded its end is estimated twice: by
    `trials.unrecorded_seconds` (the local launcher, results) and by the emitted script's
    `record_trial`, whose python3 imports no ann (the node's python3 need not have it, and the
    record must be written where ann fails to import). Both give the same on the same files."""
    script = emit._cases([], "slurm")
    function = script[script.index("record_trial() {") : script.index("\n}\n") + 3]
    start = time.time() - 1000
    cases = [  # (trial.json, {sign of life: seconds after the start})
        ({"started_at": start, "ended": None, "wall_seconds": 3.5},
         {"stdout.log": 5, "heartbeat": 12.25, "metrics.jsonl": 7}),
        ({"started_at": start, "ended": None}, {}),  # nothing written: no time
        ({"started_at": int(start), "ended": None}, {"run_status.json": 40}),
        ({"started_at": start, "ended": None, "wall_seconds": 2}, {"stderr.log": -30}),
        ({"started_at": start, "ended": "2026-01-01T00:00:00Z", "wall_seconds": 9}, {"x": 1}),
        ({"wall_seconds": 9}, {"stdout.log": 50}),  # before started_at was recorded
    ]  # fmt: skip
    for n, (record, signs) in enumerate(cases):
        workdir = tmp_path / f"t{n}"
        workdir.mkdir()
        (workdir / trials_lib.RECORD).write_text(json.dumps(record))
        for name, after in signs.items():
            (workdir / name).write_text("")
            os.utime(workdir / name, (start + after,) * 2)
        credit = round(record.get("wall_seconds", 0) + trials_lib.unrecorded_seconds(
            str(workdir), record), 2)  # fmt: skip
        subprocess.run(["bash", "-c", f'{function}record_trial "$1" start', "-", str(workdir)],
                       check=True)  # fmt: skip
        assert trials_lib.read_record(str(workdir))["wall_seconds"] == credit, (n, credit)


def test_a_kubernetes_job_names_only_paths_its_pods_have(tmp_path, monkeypatch, capsys):
    """--emit=k8s wrote this machine's paths into the pods' commands without a word: a --config
    outside the project (the image holds it at --image_root) and the sweep's TFDS_DATA_DIR."""
    import yaml

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))  # this machine's, not the PVC
    k8s = dict(parallel=0, cpus=1, memory="1Gi", image="ann:test", pvc="runs", root="/app")

    def job(config: str) -> tuple[list[trials_lib.Trial], str]:
        trials, _ = grid.prepare(definition_lib.load(config, {}), "runs/s")
        return trials, emit.kubernetes(trials, "runs/s", **k8s)

    with pytest.raises(SweepError) as refused:
        job(write_config(elsewhere, GRID))
    assert str(refused.value) == (
        f"--emit=k8s: --config={elsewhere}/sweep_config.py is outside {project}, the project "
        "the image holds at --image_root=/app, so no pod has it; copy it into the project "
        f"before the image is built, e.g. cp {elsewhere}/sweep_config.py {project}/configs/ and "
        "--config=configs/sweep_config.py"
    )
    trials, text = job(write_config(project, GRID))  # absolute, in the project: relative there
    script = yaml.safe_load(text)["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert script.count(") run_trial runs/s/") == 4 and "TFDS_DATA_DIR" not in script
    assert script.count(" ann train --config=sweep_config.py --workdir=runs/s/") == 4
    assert '\n# A trial whose data.data_dir is "" reads the image\'s $TFDS_DATA_DIR' in text
    assert capsys.readouterr().err.startswith(
        f"note: the pods read their data from the image's $TFDS_DATA_DIR (ann's offline sets are "
        f"built there), not this machine's {tmp_path / 'tfds'}, which they do not have"
    )
    here = f"env TFDS_DATA_DIR={tmp_path / 'tfds'} {PYTHON_ANN} train"  # SLURM's line
    assert trials[0].command().startswith(here)
    monkeypatch.setenv("TFDS_DATA_DIR", "runs/s/tfds")  # on the PVC: where the pods mount it
    _, text = job(write_config(project, GRID))
    assert text.count(" env TFDS_DATA_DIR=/app/runs/s/tfds ann train --config=") == 4


def test_a_trials_command_carries_the_sweeps_pythonpath(tmp_path, monkeypatch, capsys):
    # A sweep over a user's own model (PYTHONPATH=. ann sweep ...): its command.sh, "re-runs it
    # alone", failed in a fresh shell with "No module named ...", and so did its sbatch array
    # tasks and pods.
    import yaml

    monkeypatch.chdir(tmp_path)  # the project
    definition = definition_lib.load(write_config(tmp_path, GRID), {})
    trials, _ = grid.prepare(definition, "sweep")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([".", "/opt/mine", "src"]))
    trials[0].write_files("{}")
    script = open(os.path.join(trials[0].workdir, "command.sh")).read()
    here = os.pathsep.join([str(tmp_path), "/opt/mine", str(tmp_path / "src")])
    assert f"\ncd {tmp_path} && exec env PYTHONPATH={here} " in script, script
    sbatch = open(emit.write("slurm", trials, "sweep", cwd=str(tmp_path), parallel=0, cpus=1,
                             memory="1G")).read()  # fmt: skip
    assert f"\ncd {tmp_path}\nexport PYTHONPATH={here}\n" in sbatch, sbatch
    # A pod has the project at --image_root, not this machine's /opt/mine: left out, said so.
    text = emit.kubernetes(trials, "sweep", parallel=0, cpus=1, memory="1Gi", image="ann:test",
                           pvc="runs", root="/app")  # fmt: skip
    pod = yaml.safe_load(text)["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert f"set -uo pipefail\nexport PYTHONPATH=/app{os.pathsep}/app/src\n" in pod, pod
    assert (
        f"note: the pods' PYTHONPATH leaves out /opt/mine: outside {tmp_path}, the project the "
        "image holds at --image_root=/app, so no pod has it"
    ) in capsys.readouterr().err
    monkeypatch.delenv("PYTHONPATH")
    trials[0].write_files("{}")
    assert "PYTHONPATH" not in open(os.path.join(trials[0].workdir, "command.sh")).read()
    assert "PYTHONPATH" not in emit.slurm(trials, "sweep", str(tmp_path), 0, 1, "1G")


def test_a_dry_runs_lines_carry_the_sweeps_pythonpath(tmp_path, monkeypatch, one_device):
    # `PYTHONPATH=. ann sweep --config=wide.py --dry_run` (a model of the user's own, mynets.py)
    # printed its trials' `ann train` lines without it, where command.sh exports it: pasted into
    # a fresh shell, each failed "cannot import 'mynets:Wide'". Each line now carries it, as
    # command.sh does (it was one `export PYTHONPATH=...` line before them).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([".", str(tmp_path)]))  # from ROOT
    path = write_config(tmp_path, GRID)
    proc = sweep_cli(f"--config={path}", f"--workdir={tmp_path / 'sweep'}", "--dry_run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    lead = f"cd {ROOT} && env PYTHONPATH={ROOT}{os.pathsep}{tmp_path} "
    assert len(lines) == 4 and all(line.startswith(lead) for line in lines), proc.stdout
    assert all(f" ann train --config={path} " in line for line in lines)


def _dry_run(tmp_path, project, pythonpath):
    """`ann sweep --config=parity.py --dry_run` of the user's project, run there."""
    return subprocess.run(
        [sys.executable, "-m", "ann.sweep", "--config=parity.py", f"--workdir={tmp_path / 'sw'}",
         "--config.total_steps=50", "--dry_run"],
        cwd=project, env={**os.environ, "PYTHONPATH": pythonpath}, capture_output=True,
        text=True, timeout=400,
    )  # fmt: skip


def test_a_dry_runs_lines_of_a_users_experiment_work_pasted_into_a_fresh_shell(
    tmp_path, one_device
):
    """`cd u && PYTHONPATH=. ann sweep --config=parity.py --dry_run` printed `export
    PYTHONPATH=DIR` and then `env TFDS_DATA_DIR=... ann train --config=parity.py ...`, without
    the `cd` its relative config path needs: pasted into a fresh shell in $HOME, "error:
    --config=parity.py: no such file". Each line now stands alone, as command.sh."""
    project = users_project(tmp_path)
    proc = _dry_run(tmp_path, project, f".{os.pathsep}{ROOT}")  # ROOT: this checkout's ann
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(" ann train --config=parity.py ") == 2, proc.stdout
    pasted = paste(proc.stdout, tmp_path)  # the whole print, as a user copies it
    assert pasted.stdout == "config loaded\n" * 2, (proc.stdout, pasted.stderr)


def test_a_trial_imports_the_sweeps_ann_whatever_its_working_directory_holds(tmp_path, monkeypatch):
    # Started beside a directory named `ann` (the parent of a clone), every trial imported it:
    # `python -m ann.main` puts the working directory first on sys.path.
    decoy = tmp_path / "ann"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("import sys; print('decoy ann'); sys.exit(3)\n")
    trial = trials_lib.Trial("t", {}, {}, "unused.py", str(tmp_path / "sweep"), str(tmp_path))
    monkeypatch.setattr(trials_lib.Trial, "flags", lambda self: ["--help"])  # no run needed
    proc = subprocess.run(trial.argv(), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--workdir" in proc.stdout and "decoy" not in proc.stdout


def test_an_earlier_emit_for_the_other_launcher_is_said(tmp_path, monkeypatch, capsys):
    # --emit=k8s into a sweep folder that held an earlier --emit=slurm's script left it there
    # without a word: both submitted, two jobs train the same trials into the same workdirs.
    monkeypatch.chdir(tmp_path)
    sweep_dir = str(tmp_path / "sweep")
    trials, _ = grid.prepare(definition_lib.load(write_config(tmp_path, GRID), {}), sweep_dir)
    emit.write("slurm", trials, sweep_dir, cwd=str(tmp_path), parallel=0, cpus=1, memory="1G")
    assert "still there" not in capsys.readouterr().err
    k8s = dict(cpus=1, memory="1Gi", image="ann:test", pvc="runs", root=str(tmp_path))
    emit.write("k8s", trials, sweep_dir, parallel=0, **k8s)
    said = capsys.readouterr().err
    assert f"{sweep_dir}/sweep.sbatch, from an earlier --emit=slurm, is still there" in said
    emit.write("slurm", trials, sweep_dir, cwd=str(tmp_path), parallel=0, cpus=1, memory="1G")
    assert "sweep-job.yaml, from an earlier --emit=k8s, is still there" in capsys.readouterr().err


def test_parallel_and_cluster_resources_have_upper_bounds(tmp_path, monkeypatch):
    """`--parallel=99999999999` wrote `#SBATCH --array=0-3%99999999999` and
    `--cluster_memory_gb=99999999` wrote `--mem=99999999G`: no upper bound. More trials at a time
    than the trials is written as the trials' count; the resource flags are bounded, refused in
    the one style of every numeric flag."""
    import yaml

    monkeypatch.chdir(tmp_path)
    sweep_dir = str(tmp_path / "sweep")
    trials, _ = grid.prepare(definition_lib.load(write_config(tmp_path, GRID), {}), sweep_dir)
    assert len(trials) == 4
    text = emit.slurm(trials, sweep_dir, str(tmp_path), 99_999_999_999, 1, "1G")
    assert "#SBATCH --array=0-3%4\n" in text
    k8s = dict(cpus=1, memory="1Gi", image="ann:test", pvc="runs", root=str(tmp_path))
    job = yaml.safe_load(emit.kubernetes(trials, sweep_dir, parallel=99_999_999_999, **k8s))
    assert job["spec"]["parallelism"] == 4
    path = write_config(tmp_path, "return h.sweep('optimizer.learning_rate', [1e-3])")
    proc = sweep_cli(
        f"--config={path}", f"--workdir={tmp_path / 's'}", "--emit=slurm",
        "--cluster_memory_gb=99999999",
    )  # fmt: skip
    assert one_line_error(proc) == (
        "error: --cluster_memory_gb=99999999 must be an integer in [1, 4096] (GiB); e.g. "
        "--cluster_memory_gb=8"
    )
    assert not (tmp_path / "s").exists()


# ---- the lines a person pastes -------------------------------------------------------------

# `ann train` as far as its config: the --config file, read from where the pasted line went,
# and the experiment it names, imported as ann imports it, from the line's own PYTHONPATH.
# This checkout's ann comes last on sys.path, so only the line can put `mytasks` there.
FAKE_ANN = """\
#!{python}
import runpy, sys
sys.path.append({root!r})
from ann import imports
assert sys.argv[1] == "train", sys.argv
path = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--config="))
try:
    config = runpy.run_path(path)["get_config"]()
    imports.import_named("experiment", config.experiment)
except Exception as e:
    sys.exit(f"error: --config={{path}}: {{e}}")
print("config loaded")
"""


def users_project(tmp_path):
    """A directory of a user's own: mytasks.py and parity.py as the README's "Add your own
    experiment" writes them, and a sweep over the task's smoothing."""
    readme = (ROOT / "README.md").read_text()
    project = tmp_path / "u"
    project.mkdir()
    for name in ("mytasks.py", "parity.py"):
        start = readme.index(f"```python\n# {name}\n") + len("```python\n")
        (project / name).write_text(readme[start : readme.index("```", start)])
    with open(project / "parity.py", "a") as f:
        f.write('\n\ndef get_sweep(h):\n    return h.sweep("task.smoothing", [0.0, 0.1])\n')
    return project


def paste(text, tmp_path):
    """`text` (or the script at that path: command.sh) pasted into a fresh shell (no
    environment but PATH and HOME) in another directory, with the sweep's `python -P -m ann`
    the FAKE_ANN: its output, its stderr and its status."""
    if os.path.isfile(text):
        text = open(text).read()
    text = text.replace(f"{PYTHON_ANN} train ", "ann train ")
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    if not bin_dir.exists():
        bin_dir.mkdir()
        home.mkdir()
        (bin_dir / "ann").write_text(FAKE_ANN.format(python=sys.executable, root=str(ROOT)))
        (bin_dir / "ann").chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(home)}
    proc = subprocess.run(["bash", "--norc", "-c", text], cwd=home, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    return proc


def test_results_rerun_line_of_a_users_experiment_works_pasted_into_a_fresh_shell(
    tmp_path, monkeypatch
):
    """`PYTHONPATH=. ann sweep --config=parity.py` (mytasks.py beside it), then `ann sweep
    --summarize` from another directory: its "Re-run it alone:" line was `cd DIR && env
    TFDS_DATA_DIR=... ann train ...`, without the PYTHONPATH command.sh exports; pasted into a
    fresh shell it failed "cannot import 'mytasks:Parity': no module named 'mytasks'"."""
    project = users_project(tmp_path)
    monkeypatch.chdir(project)
    monkeypatch.setenv("PYTHONPATH", ".")
    monkeypatch.syspath_prepend(str(project))  # as that PYTHONPATH put it, for this process
    monkeypatch.setitem(sys.modules, "mytasks", None)  # no other test's: imported afresh
    del sys.modules["mytasks"]
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    # Each trial a quick stand-in for `ann train` (its metrics and its end), run by the local
    # launcher, which records the command results.md shows.
    fake = (
        f"import json, sys; sys.path.append({str(ROOT)!r})\n"
        "from ann.train import run_status\n"
        "workdir = next(a.split('=', 1)[1] for a in sys.argv if a.startswith('--workdir='))\n"
        "with open(workdir + '/metrics.jsonl', 'a') as f:\n"
        "    f.write(json.dumps({'step': 50, 'val/accuracy': 0.5}) + '\\n')\n"
        "run_status.write(workdir, 'done', 50)\n"
    )
    argv = lambda trial: [sys.executable, "-c", fake, *trial.flags()]  # noqa: E731
    monkeypatch.setattr(trials_lib.Trial, "argv", argv)
    definition = definition_lib.load("parity.py", {"total_steps": 50})
    sweep_dir = str(tmp_path / "sw1")
    grid.run(definition, sweep_dir, "val/accuracy", "max", log=lambda line: None)
    monkeypatch.chdir("/")  # ann sweep --summarize=DIR, from elsewhere
    monkeypatch.delenv("PYTHONPATH")
    text = results.write(sweep_dir)
    line = text.split("Re-run it alone:\n\n    ", 1)[1].splitlines()[0]
    assert " ann train --config=parity.py " in line, text
    proc = paste(line, tmp_path)
    assert proc.returncode == 0 and proc.stdout == "config loaded\n", (line, proc.stderr)
    # results.md's own copy and each trial's command.sh: the same line, pasted the same way.
    saved = (tmp_path / "sw1" / "results.md").read_text()
    assert f"\n    {line}\n" in saved, saved
    for name in os.listdir(sweep_dir):
        if os.path.isdir(os.path.join(sweep_dir, name)):
            proc = paste(os.path.join(sweep_dir, name, "command.sh"), tmp_path)
            assert proc.stdout == "config loaded\n", proc.stderr


def test_an_empty_pythonpath_entry_is_the_working_directory_in_every_exported_pythonpath(
    tmp_path, monkeypatch, one_device
):
    """An empty PYTHONPATH entry is the current directory (`PYTHONPATH=: ann sweep ...` imports
    mytasks.py there), but the sweep dropped it: `--dry_run` printed no PYTHONPATH, and
    `PYTHONPATH=/nonexistent:u:` lost its trailing entry, in command.sh, sbatch and pods too;
    the printed lines failed "no module named 'mytasks'" in a fresh shell."""
    import yaml

    project = users_project(tmp_path)
    # The sweep's own `ann` from ROOT, the user's modules from the empty entry after it.
    proc = _dry_run(tmp_path, project, f"{ROOT}{os.pathsep}")
    assert proc.returncode == 0, proc.stderr
    pasted = paste(proc.stdout, tmp_path)
    assert pasted.stdout == "config loaded\n" * 2, (proc.stdout, pasted.stderr)
    assert proc.stdout.count(f" PYTHONPATH={ROOT}{os.pathsep}{project} ") == 2, proc.stdout

    # As Python reads it: `/nonexistent:u:` from tmp_path, and `:`.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/nonexistent", "u", ""]))
    here = os.pathsep.join(["/nonexistent", str(project), str(tmp_path)])
    assert trials_lib.pythonpath(str(tmp_path)) == here.split(os.pathsep)
    monkeypatch.setenv("PYTHONPATH", os.pathsep)
    assert trials_lib.pythonpath(str(tmp_path)) == [str(tmp_path)]
    monkeypatch.setenv("PYTHONPATH", "")
    assert trials_lib.pythonpath(str(tmp_path)) == []  # Python adds nothing for it either
    # Everywhere it is exported: command.sh, the sbatch script, the pods.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/nonexistent", "u", ""]))
    trials, _ = grid.prepare(definition_lib.load(write_config(tmp_path, GRID), {}), "sweep")
    trials[0].write_files("{}")
    script = open(os.path.join(trials[0].workdir, "command.sh")).read()
    assert f" && exec env PYTHONPATH={here} " in script, script
    sbatch = emit.slurm(trials, "sweep", str(tmp_path), 0, 1, "1G")
    assert f"\nexport PYTHONPATH={here}\n" in sbatch, sbatch
    text = emit.kubernetes(trials, "sweep", parallel=0, cpus=1, memory="1Gi", image="ann:test",
                           pvc="runs", root="/app")  # fmt: skip
    pod = yaml.safe_load(text)["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert f"\nexport PYTHONPATH=/app/u{os.pathsep}/app\n" in pod, pod


def test_a_full_disk_under_a_trials_stdout_log_names_it(tmp_path, monkeypatch):
    # The attempt's header written to stdout.log failed with "no space left on device",
    # naming no file: the sweep's one line could name neither the log nor --workdir.
    import builtins
    import errno

    class Full:
        def __init__(self, f):
            self._f = f

        def write(self, data):
            return len(data)

        def flush(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self):
            self._f.close()

    def full_logs(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        return Full(f) if str(path).endswith(".log") else f

    monkeypatch.setattr(launch, "open", full_logs, raising=False)
    trial = script_trial(tmp_path, "a", "print('never')")
    with pytest.raises(OSError) as e:
        launch._start(trial, sorted(os.sched_getaffinity(0))[:1])
    assert e.value.filename == str(tmp_path / "a" / "stdout.log")


def test_the_rerun_line_of_two_changed_overrides_says_values():
    # It said "no trial of it trained with the old value" of two changed keys (a fresh-user
    # check).
    line = results.rerun_line(
        {"data.data_dir": ("/a", "/b"), "total_steps": (None, 20)}, "sweep", 2
    )
    assert line == (
        "--config.data.data_dir changed from /a to /b, --config.total_steps changed from unset to "
        "20 since this sweep last ran, and no trial of it trained with the old values: its 2 "
        "failed trials are rerun with the new ones"
    )


def test_a_second_sweep_in_a_workdir_names_the_one_running(tmp_path):
    # It said "another sweep is running" without who, where a run names its holder (48b).
    import socket

    from ann.sweep.__main__ import _lock

    held = _lock(str(tmp_path))
    try:
        with pytest.raises(SweepError) as e:
            _lock(str(tmp_path))
        assert str(e.value) == (
            f"another sweep is running in {tmp_path} (host {socket.gethostname()} pid "
            f"{os.getpid()}); wait for it or use another --workdir"
        )
    finally:
        held.close()
    _lock(str(tmp_path)).close()  # free again


def test_a_ctrl_c_ends_a_sweep_with_the_line_every_job_ends_with(monkeypatch, capsys):
    # Its last line was "interrupted; run the same command to resume" (48b), where SIGTERM's
    # says "terminated (SIGTERM)" and every other job "interrupted (Ctrl-C)".
    from ann.sweep import __main__ as sweep_main

    def stopped(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_main, "sweep", stopped)
    with pytest.raises(SystemExit) as e:
        sweep_main.main(["ann sweep"])
    assert e.value.code == 130
    assert capsys.readouterr().err == "interrupted (Ctrl-C); run the same command to resume\n"
