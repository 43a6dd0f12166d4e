"""Transfer learning: init_from loads by path and reports what it did, freeze keeps parameters
(and frozen BatchNorm statistics) bit-identical, resume ignores init_from, mistakes are
ConfigErrors that say what to fix."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import ROOT, load_config, one_line_error, tiny

from ann import artifact, directory_kind
from ann import config as config_lib
from ann.config import ConfigError
from ann.sharding import path_str
from ann.train import build, hooks, optimizers, transfer
from ann.train.loop import train_and_evaluate

# Source: an MLP with BatchNorm. Target: the same first layer, a narrower second one, so the
# second layer, its BatchNorm and the head's kernel change shape.
SOURCE = {"model.features": (64, 32), "model.norm": "batch"}
TARGET = {"model.features": (64, 16), "model.norm": "batch"}
FROZEN = ("layers/0/.*", "norms/0/.*")
FSDP = {"mesh.fsdp": 2}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("transfer") / "source"
    train_and_evaluate(tiny(total_steps=10, **SOURCE), str(workdir))
    return workdir


def by_path(tree) -> dict[str, np.ndarray]:
    host = jax.device_get(tree)
    return {path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(host)}


class StopAt(hooks.Hook):
    def __call__(self, info):
        info.request_stop("a hook asked to stop")


def test_match_sorts_every_array():
    s = jax.ShapeDtypeStruct
    target = {
        "enc/kernel": s((4, 8), jnp.bfloat16),
        "enc/bias": s((8,), jnp.float32),
        "new/kernel": s((8, 2), jnp.float32),
        "head/kernel": s((8, 3), jnp.float32),
        "head/bias": s((3,), jnp.float32),  # same shape as the source's, but its layer changed
        "aux/kernel": s((8, 8), jnp.float32),
    }
    source = {
        "enc/kernel": np.ones((4, 8), np.float32),
        "enc/bias": np.ones((8,), np.float32),
        "head/kernel": np.ones((8, 5), np.float32),
        "head/bias": np.ones((3,), np.float32),
        "aux/kernel": np.ones((8, 8), np.float32),
        "old/kernel": np.ones((2, 2), np.float32),
        "rng/count": np.ones((), np.uint32),
    }
    report = transfer.match(target, source, skip=("aux/.*",), other_paths=["rng/count"])
    assert report.loaded == ["enc/kernel", "enc/bias"]
    assert report.missing_in_source == ["new/kernel"]
    assert report.shape_mismatched == [{"path": "head/kernel", "source": [8, 5], "target": [8, 3]}]
    assert report.skipped == [
        {"path": "aux/kernel", "reason": "init_from_skip 'aux/.*'"},
        {"path": "head/bias", "reason": "layer 'head' has a shape-mismatched array"},
    ]
    assert report.unused_in_source == ["old/kernel"]
    assert report.cast == [{"path": "enc/kernel", "from": "float32", "to": "bfloat16"}]
    assert report.loaded_values == 40 and report.total_values == 32 + 8 + 16 + 24 + 3 + 64
    # A skip pattern that matches nothing (a typo) loaded the layer it meant to keep fresh.
    with pytest.raises(ConfigError) as e:
        transfer.match(target, source, skip=("haed/.*",))
    assert str(e.value).startswith(
        "config key 'init_from_skip': pattern 'haed/.*' matches no array of the new model (the "
        "whole path must match, e.g. 'enc/.*'); paths are like enc/kernel, enc/bias"
    ), str(e.value)
    # An int array never loads into a float one, whatever its shape.
    mixed = transfer.match({"x": s((2,), jnp.float32)}, {"x": np.ones((2,), np.int32)})
    assert mixed.loaded == [] and mixed.shape_mismatched[0]["source_dtype"] == "int32"


def test_frozen_parameters_get_no_update_and_no_weight_decay():
    params = {"enc": {"kernel": jnp.ones((3, 3))}, "head": {"kernel": jnp.ones((3, 2))}}
    opt = config_lib.base().optimizer
    opt.name, opt.weight_decay = "adamw", 0.5
    tx = optimizers.make(opt, 10, freeze=("enc/.*",))
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    assert (new["enc"]["kernel"] == params["enc"]["kernel"]).all()
    assert (new["head"]["kernel"] != params["head"]["kernel"]).all()
    # No optimizer state is kept for frozen parameters.
    shapes = [x.shape for x in jax.tree.leaves(state)]
    assert (3, 3) not in shapes and (3, 2) in shapes
    with pytest.raises(ConfigError, match=r"'freeze': pattern 'encoder/\.\*' matches no .*enc/"):
        optimizers.make(opt, 10, freeze=("encoder/.*",)).init(params)
    with pytest.raises(ConfigError, match="freezes all 2 parameter arrays"):
        optimizers.make(opt, 10, freeze=(".*",)).init(params)


def test_init_from_loads_reports_freezes_and_resume_wins(tmp_path, source):
    # Parameters split over 2 of the 4 devices (FSDP): loaded arrays land on their shards.
    config = tiny(total_steps=10, init_from=str(source), freeze=FROZEN, **TARGET, **FSDP)
    workdir = tmp_path / "target"
    first = train_and_evaluate(config, str(workdir), extra_hooks=[StopAt(5)])
    assert first.interrupted and first.step == 5

    report = json.loads((workdir / "init_from.json").read_text())
    assert report["init_from"]["kind"] == "checkpoint" and report["init_from"]["step"] == 10
    assert sorted(report["loaded"]) == [
        "layers/0/bias",
        "layers/0/kernel",
        "norms/0/bias",
        "norms/0/mean",
        "norms/0/scale",
        "norms/0/var",
    ]
    mismatched = {m["path"]: (m["source"], m["target"]) for m in report["shape_mismatched"]}
    assert mismatched["head/kernel"] == ([32, 10], [16, 10])
    assert mismatched["layers/1/kernel"] == ([64, 32], [64, 16])
    assert set(mismatched) == {"head/kernel", *(f"layers/1/{k}" for k in ("kernel", "bias"))} | {
        f"norms/1/{k}" for k in ("scale", "bias", "mean", "var")
    }
    assert report["skipped"] == [
        {"path": "head/bias", "reason": "layer 'head' has a shape-mismatched array"}
    ]
    assert report["missing_in_source"] == [] and report["unused_in_source"] == []
    written = os.stat(workdir / "init_from.json").st_mtime_ns

    # Resume: the run's own checkpoint wins; init_from (now pointing nowhere) is not read.
    config.init_from = str(tmp_path / "no_such_run")
    second = train_and_evaluate(config, str(workdir))
    assert second.step == 10 and not second.interrupted
    assert os.stat(workdir / "init_from.json").st_mtime_ns == written

    # Loaded and frozen: still the source's values, bit for bit, through 10 updates with weight
    # decay; the frozen BatchNorm kept its statistics. The rest trained.
    theirs = transfer.read(transfer.resolve(str(source)))
    params, stats = by_path(second.state.params), by_path(second.state.model_state)
    for path in ("layers/0/kernel", "layers/0/bias", "norms/0/scale", "norms/0/bias"):
        np.testing.assert_array_equal(params[path], theirs[path], err_msg=path)
    for path in ("norms/0/mean", "norms/0/var"):
        np.testing.assert_array_equal(stats[path], theirs[path], err_msg=path)
    fresh = build.build(config, build.make_experiment(config)).state
    fresh_params, fresh_stats = by_path(fresh.params), by_path(fresh.model_state)
    for path in ("layers/1/kernel", "head/kernel", "head/bias", "norms/1/scale"):
        assert not np.array_equal(params[path], fresh_params[path]), path
    assert not np.array_equal(stats["norms/1/mean"], fresh_stats["norms/1/mean"])


def test_a_resume_that_changes_init_from_keeps_the_parent_the_weights_came_from(
    tmp_path, source, caplog
):
    # Resumed with another init_from (said to have no effect), the run recorded it all the
    # same: the latest config, so manifest.json's config and the registry's lineage, named a
    # model the weights never came from. The export's source now names what the fresh start
    # loaded (init_from.json), and the latest config keeps the fresh start's init_from.
    from ann.export import export
    from ann.registry import Registry

    config = tiny(total_steps=4, init_from=str(source), **TARGET)
    workdir = tmp_path / "target"
    train_and_evaluate(config, str(workdir), extra_hooks=[StopAt(2)])
    config.init_from = "models:/other@champion"
    with caplog.at_level(logging.INFO):
        assert train_and_evaluate(config, str(workdir)).step == 4
    assert (
        "init_from is read at a fresh start only, so this change has no effect on a resume and "
        f"is not recorded ({workdir}/init_from.json says where the run's weights came from): "
        f"init_from: '{source}' -> 'models:/other@champion'" in caplog.text
    ), caplog.text
    changes = workdir / config_lib.CONFIG_CHANGES
    assert not changes.exists()  # the one change recorded nothing
    assert config_lib.latest(str(workdir)).init_from == str(source)
    # A change an earlier ann recorded is not read as the latest config's either.
    with open(changes, "a") as f:
        line = {"step": 4, "time": "T", "changes": {"init_from": [str(source), "runs/b"]}}
        f.write(json.dumps(line) + "\n")
    assert config_lib.latest(str(workdir)).init_from == str(source)

    manifest = export(str(workdir), str(tmp_path / "out"), step="latest")
    assert manifest["config"]["init_from"] == str(source)
    parent = manifest["source"]["init_from"]
    assert (parent["spec"], parent["kind"], parent["step"]) == (str(source), "checkpoint", 10)
    assert parent["run"] == str(source)
    registry = Registry(str(tmp_path / "reg"))
    registry.register(str(tmp_path / "out"), name="ft")
    assert registry.resolve("models:/ft/1").lineage["source"]["init_from"] == parent
    # A server's metadata shows none of its paths, as it shows no workdir.
    from ann.serve.dataplane import public_source

    assert set(public_source(manifest["source"])) == {"step", "selected_by"}


def test_init_from_an_export_and_a_registry_uri(tmp_path, source, monkeypatch):
    from ann.export import export
    from ann.registry import Registry

    out = tmp_path / "export"
    export(str(source), str(out), name="digits_mlp")
    config = tiny(init_from=str(out), **TARGET)
    state = build.build(config, build.make_experiment(config)).state
    src, report, arrays = transfer.load(str(out), state)
    # The run and step its manifest names, and the manifest's sha256 (init_from.json had them
    # null for an export directory; the registry's had the sha256 alone).
    sha = artifact.sha256_bytes((out / "manifest.json").read_bytes())
    assert (src.kind, src.step, src.run, src.manifest_sha256) == ("export", 10, str(source), sha)
    assert f"(export, {out}: step 10 of the run {source})" in transfer.summary(src, report)
    _, from_checkpoint, saved = transfer.load(str(source), state)
    assert report == from_checkpoint  # the same names, shapes and verdicts
    for path in report.loaded:
        np.testing.assert_array_equal(arrays[path], saved[path])

    Registry(str(tmp_path / "reg")).register(str(out), aliases=["champion"])
    monkeypatch.setenv("ANN_REGISTRY", str(tmp_path / "reg"))
    src, by_uri, _ = transfer.load("models:/digits_mlp@champion", state)
    assert src.kind == "export" and by_uri == report
    assert (src.step, src.run, src.manifest_sha256) == (10, str(source), sha)
    with pytest.raises(ConfigError, match="has no alias 'prod'"):
        transfer.load("models:/digits_mlp@prod", state)
    with pytest.raises(ConfigError, match="holds one set of weights; drop ':best'"):
        transfer.load(f"{out}:best", state)
    # A run with a bad suffix: it said "RUN:bogus does not exist".
    with pytest.raises(ConfigError, match=f"':bogus' after the run {source} must be :best, "):
        transfer.resolve(f"{source}:bogus")
    # No registry there: `ann train` has no --registry, so only $ANN_REGISTRY is named (it
    # said "or the command's --registry", which train then refused as an unknown flag).
    monkeypatch.setenv("ANN_REGISTRY", str(tmp_path / "none"))
    with pytest.raises(ConfigError) as e:
        transfer.load("models:/digits_mlp@champion", state)
    assert str(e.value).endswith("set $ANN_REGISTRY to its directory"), e.value

    # An export whose weights are a link to a file elsewhere is refused, naming the file (the
    # loader's checks: see test_export's crafted exports).
    import shutil

    crafted, elsewhere = tmp_path / "crafted", tmp_path / "elsewhere.safetensors"
    shutil.copytree(out, crafted)
    (crafted / "weights.safetensors").rename(elsewhere)
    (crafted / "weights.safetensors").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match=r"crafted/weights.safetensors is a symbolic link"):
        transfer.read(transfer.resolve(str(crafted)))

    # Weights whose bytes match the manifest's hash but are not safetensors: one line naming the
    # file (artifact.load_weights, the loader's own deserialization check), not safetensors'.
    (crafted / "weights.safetensors").unlink()
    (crafted / "weights.safetensors").write_bytes(b"not safetensors")
    manifest = json.loads((crafted / "manifest.json").read_text())
    manifest["files"]["weights.safetensors"] = {
        "sha256": artifact.sha256_bytes(b"not safetensors"),
        "bytes": len(b"not safetensors"),
    }
    (crafted / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"crafted/weights.safetensors cannot be deserialized"):
        transfer.read(transfer.resolve(str(crafted)))


def test_init_from_a_run_that_ended_unfinished_says_so_as_export_does(tmp_path, source, capsys):
    # A diverged source loaded its best step in silence, where `ann export` of it said
    # `note: ... ended diverged at step 72 ...`: the same note, said for init_from.
    run = tmp_path / "diverged"
    shutil.copytree(source, run)
    record = json.loads((run / "run_status.json").read_text())
    (run / "run_status.json").write_text(json.dumps({**record, "status": "diverged", "step": 7}))
    config = tiny(init_from=str(run), **TARGET)
    state = build.build(config, build.make_experiment(config)).state
    capsys.readouterr()
    transfer.load(str(run), state)
    assert capsys.readouterr().err == (
        f"note: init_from: {run} ended diverged at step 7 of 10; its checkpoints so far are used\n"
    )
    transfer.load(str(source), state)  # a run that finished: nothing to say
    assert capsys.readouterr().err == ""


def test_a_step_saved_without_a_manifest_is_read_with_a_plain_warning(tmp_path, source, capsys):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(source, old)
    (step,) = [p for p in (old / "checkpoints").iterdir() if p.name.isdigit()]
    (step / "ann_manifest.json").unlink()  # a step saved before manifests
    assert set(transfer.read(transfer.resolve(f"{old}:latest"))) == set(
        transfer.read(transfer.resolve(f"{source}:latest"))
    )
    # One plain line, as ann's other warnings (it carried absl's "W1202 12:00:00.000 ... ]").
    assert capsys.readouterr().err == (
        f"warning: {step} has no ann_manifest.json: reading it unverified\n"
    )


def test_frozen_parameters_init_from_does_not_load_are_warned_about(tmp_path, source, capfd):
    """Frozen and never loaded (shape-mismatched, skipped, or no init_from at all), a layer
    kept its random initialization the whole run without a word (only ann transfer showed it).
    A frozen layer init_from loads is not named; a resumed run is not warned again."""
    frozen = (*FROZEN, "layers/1/.*")  # layers/1 is shape-mismatched: kept fresh
    config = tiny(total_steps=4, init_from=str(source), freeze=frozen, **TARGET)
    train_and_evaluate(config, str(tmp_path / "mismatched"), extra_hooks=[StopAt(2)])
    [warning] = [line for line in capfd.readouterr().err.splitlines() if "warning:" in line]
    assert warning == (
        "warning: config key 'freeze' holds 2 of 6 frozen parameter arrays at their random "
        "initialization for the whole run (init_from does not load them): layers/1/bias, "
        "layers/1/kernel; load them (init_from, init_from_skip, the model.* sizes of the "
        "source) or leave them out of freeze"
    )
    train_and_evaluate(config, str(tmp_path / "mismatched"))  # the resume: no warning again
    assert "warning:" not in capfd.readouterr().err
    train_and_evaluate(tiny(total_steps=2, freeze=FROZEN, **TARGET), str(tmp_path / "none"))
    assert (
        "(config.init_from is not set): layers/0/bias, layers/0/kernel, norms/0/bias, "
        "norms/0/scale; load them" in capfd.readouterr().err
    )
    train_and_evaluate(tiny(total_steps=2, init_from=str(source), freeze=FROZEN, **TARGET),
                       str(tmp_path / "loaded"))  # fmt: skip
    assert "warning:" not in capfd.readouterr().err


def test_a_folder_inside_a_run_is_named_with_the_run_spelling(tmp_path, monkeypatch):
    """`init_from=runs/digits_cnn/checkpoints/600` got only "is not a run or an export": the
    refusal names the run and the spelling meant, RUN:600 (as given: relative stays relative)."""
    run = tmp_path / "runs" / "cnn"
    for sub in ("checkpoints/600", "checkpoints_best/590", "tensorboard"):
        (run / sub).mkdir(parents=True)
    for step in ("checkpoints/600", "checkpoints_best/590"):  # committed, as Orbax marks it
        (run / step / directory_kind.ORBAX_METADATA).write_text("{}")
    config_lib.write(tiny(), str(run))  # config.json: what marks a run
    monkeypatch.chdir(tmp_path)
    said = {
        # A step the run does not hold: said at once (its RUN:77 was refused next for the step).
        "runs/cnn/checkpoints/77": "runs/cnn/checkpoints/77: the run runs/cnn has no step 77; "
        "its steps: 600; the best checkpoint: 590",
        "runs/cnn/checkpoints/600": "runs/cnn/checkpoints/600 is a checkpoint of the run "
        "runs/cnn; use --config.init_from=runs/cnn:600",
        "runs/cnn/checkpoints_best/590/": "runs/cnn/checkpoints_best/590/ is a checkpoint of the "
        "run runs/cnn; use --config.init_from=runs/cnn:590",
        "runs/cnn/checkpoints": "runs/cnn/checkpoints holds the checkpoints of the run runs/cnn; "
        "use --config.init_from=runs/cnn:latest (or runs/cnn:STEP)",
        "runs/cnn/checkpoints_best": "runs/cnn/checkpoints_best holds the checkpoints of the run "
        "runs/cnn; use --config.init_from=runs/cnn:best (or runs/cnn:STEP)",
        f"{run}/tensorboard": f"{run}/tensorboard is inside the run {run}; use "
        f"--config.init_from={run} (its best checkpoint), {run}:latest or {run}:STEP",
    }
    for spec, message in said.items():
        with pytest.raises(ConfigError) as e:
            transfer.resolve(spec)
        assert str(e.value) == f"config key 'init_from'={spec!r}: {message}"


def test_what_freeze_freezes_is_said_once_init_from_is_read(tmp_path, source, caplog):
    # A run whose init_from was refused said "freeze (...): ... are not updated" above the
    # refusal (trial 46c): the summary of a run that never started.
    config = tiny(total_steps=2, init_from=str(tmp_path / "nowhere"), freeze=FROZEN, **TARGET)
    with caplog.at_level(logging.INFO, logger="absl"):
        with pytest.raises(ConfigError, match="does not exist"):
            train_and_evaluate(config, str(tmp_path / "refused"))
        assert "are not updated" not in caplog.text
        config.init_from = str(source)
        train_and_evaluate(config, str(tmp_path / "run"))
    [said] = [r.getMessage() for r in caplog.records if "are not updated" in r.getMessage()]
    assert said == (
        f"freeze {tuple(FROZEN)}: 4 of 10 parameter arrays (4,288 of 5,530 values) are not "
        "updated; BatchNorm layers kept on their running statistics: norms/0"
    ), said


def test_mistakes_are_config_errors(tmp_path, source):
    with pytest.raises(ConfigError, match=r"'init_from'=.*nowhere.* does not exist; use a run"):
        transfer.resolve(str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"not a run or an export"):
        transfer.resolve(str(tmp_path))
    with pytest.raises(ConfigError, match=r"has no step 7; its steps: 10"):
        transfer.resolve(f"{source}:7")
    # Full-width: str.isdigit() passed it, and int() read it as step 10.
    with pytest.raises(ConfigError, match=f"':１０' after the run {source} must be :best, "):
        transfer.resolve(f"{source}:１０")
    # Every layer of another width: nothing would load, refused before anything compiles, with
    # the shapes (it listed the paths alone, all of which match, and pointed at `ann transfer`,
    # which refuses the same).
    other = {"model.features": (48, 24), "model.norm": "batch"}
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(tiny(init_from=str(source), **other), str(tmp_path / "b"))
    assert "no array of it matches this model by path and shape" in str(e.value)
    assert " share a path but not a shape: " in str(e.value)
    assert re.search(r"\(\d+(, \d+)*\) there, \(\d+(, \d+)*\) here", str(e.value)), str(e.value)
    assert "ann transfer" not in str(e.value)
    with pytest.raises(ConfigError, match=r"pattern 'conv/\.\*' matches no parameter"):
        train_and_evaluate(tiny(freeze=("conv/.*",), **TARGET), str(tmp_path / "c"))
    with pytest.raises(ConfigError, match=r"'freeze': '\(' is not a regex"):
        config_lib.validate(tiny(freeze=("(",)), num_devices=4)
    with pytest.raises(ConfigError, match="'init_from_skip' holds 3"):
        config_lib.validate(tiny(init_from_skip=(3,)), num_devices=4)


def test_a_source_run_that_loads_nothing_names_the_config_it_was_made_from(tmp_path, source):
    """The refusal asked "is it the source of another model?" without the config file the
    source run was made from, which its config.json records."""
    other = {"model.features": (48, 24), "model.norm": "batch"}
    with pytest.raises(ConfigError) as e:  # the fixture's run records no --config
        train_and_evaluate(tiny(init_from=str(source), **other), str(tmp_path / "a"))
    assert "is it the source of another model, or of this one" in str(e.value)
    recorded = tmp_path / "recorded"
    shutil.copytree(source, recorded)
    config_lib.write(config_lib.read(str(recorded)), str(recorded), "configs/digits_mlp.py")
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(tiny(init_from=str(recorded), **other), str(tmp_path / "b"))
    assert (
        "is it the source of another model (it was made with --config=configs/digits_mlp.py), "
        "or of this one with other sizes (the model.* settings in its config.json)?"
    ) in str(e.value)


def test_shipped_finetune_configs_validate_and_list_paths(source):
    for arg in (None, "scratch"):
        config_lib.validate(load_config("digits_finetune", arg), num_devices=4)
    config = tiny("digits_finetune", init_from="")
    lines = transfer.describe(config)
    assert lines[0] == "path\tshape\tdtype\tupdate"
    assert "convs/0/kernel\t(3, 3, 1, 32)\tfloat32\tfrozen" in lines
    assert "head/kernel\t(128, 10)\tfloat32\ttrained" in lines
    # A frozen BatchNorm layer's statistics stay fixed; the others keep updating.
    lines = transfer.describe(tiny(freeze=FROZEN, **TARGET))
    assert "norms/0/mean\t(64,)\tfloat32\tfixed statistics" in lines
    assert "norms/1/mean\t(16,)\tfloat32\tstatistics" in lines
    # A float32 source into bfloat16 parameters: the listing says the cast, as training logs it
    # (it said only "loaded").
    lines = transfer.describe(tiny(init_from=str(source), param_dtype="bfloat16", **SOURCE))
    assert "layers/0/kernel\t(64, 64)\tbfloat16\ttrained\tloaded (cast float32->bfloat16)" in lines
    assert "norms/0/mean\t(64,)\tfloat32\tstatistics\tloaded" in lines


@pytest.mark.slow
def test_finetuning_learns_faster_than_from_scratch(tmp_path):
    """configs/digits_finetune.py on a short pretrained CNN beats the same budget from random
    weights by a wide margin."""
    source = tmp_path / "source"
    train_and_evaluate(tiny("digits_cnn", total_steps=60, batch_size=64), str(source))
    budget = {"total_steps": 20, "eval_every_steps": 20}
    tuned = train_and_evaluate(
        tiny("digits_finetune", init_from=str(source), **budget), str(tmp_path / "tuned")
    )
    scratch = train_and_evaluate(
        tiny("digits_finetune", init_from="", init_from_skip=(), freeze=(), **budget),
        str(tmp_path / "scratch"),
    )
    # Measured: 0.972 against 0.886 (20 steps of 32 examples).
    tuned_accuracy = tuned.eval_metrics["eval/accuracy"]
    scratch_accuracy = scratch.eval_metrics["eval/accuracy"]
    assert tuned_accuracy >= 0.93 and tuned_accuracy >= scratch_accuracy + 0.05, (
        tuned_accuracy,
        scratch_accuracy,
    )
    assert tuned.eval_metrics["eval/loss"] < 0.5 * scratch.eval_metrics["eval/loss"]
    # The frozen convs are cut from the gradient: their backward pass is not in the step.
    flops = {
        run: json.loads(open(tmp_path / run / "metrics.jsonl").readline())[
            "compile/train_step_flops"
        ]
        for run in ("tuned", "scratch")
    }
    assert flops["tuned"] < 0.6 * flops["scratch"], flops


def test_ann_transfer_without_its_source_says_how_to_list_the_model_alone(tmp_path):
    # The shipped fine-tune config names runs/digits_cnn, absent until trained: the listing
    # failed with no way shown to see the model's own paths.
    missing = tmp_path / "no_run"
    args = ["--config=configs/digits_finetune.py", f"--config.init_from={missing}"]
    command = [sys.executable, "-m", "ann.transfer", *args]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    line = one_line_error(done)
    assert line.endswith(
        "; or --config.init_from='' --config.init_from_skip='()' lists the model's paths alone"
    ), line
