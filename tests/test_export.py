"""Export: the loaded artifact computes what the training code computes; tampering is refused."""

import json
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from conftest import fill, one_line_error, tiny

from ann import artifact, data, directory_kind
from ann.config import ConfigError
from ann.export import export
from ann.train.build import restore_model
from ann.train.loop import train_and_evaluate


def test_loaded_export_equals_training_code(digits_export):
    workdir, out = digits_export
    model = artifact.load(str(out))
    experiment, trained, step, config = restore_model(str(workdir), "best")
    experiment.temperature = model.manifest["calibration"]["temperature"]  # see test_calibration
    rows = data.load("digits", "test", cache=True).rows(np.arange(100))
    inputs = {"image": rows["image"]}
    got = model(inputs)
    want = jax.device_get(experiment.predict(trained, inputs))
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["label"], want["label"])
    # Any batch size, and ahead-of-time compiled buckets agree with the symbolic call.
    np.testing.assert_array_equal(model({"image": rows["image"][:3]})["label"], want["label"][:3])
    np.testing.assert_allclose(
        model.compile(4)({"image": rows["image"][:4]})["probabilities"],
        want["probabilities"][:4],
        rtol=1e-5,
        atol=1e-6,
    )
    # Weights compiled in (the server's default on CPU): the same outputs, and the executable
    # takes only the inputs (400 bytes of uint8 [4, 8, 8, 1] plus a few of bookkeeping).
    constant = model.compile(4, constant_weights=True)
    np.testing.assert_allclose(
        constant({"image": rows["image"][:4]})["probabilities"],
        want["probabilities"][:4],
        rtol=1e-5,
        atol=1e-6,
    )
    passed = model.compile(4).executable.memory_analysis().argument_size_in_bytes
    compiled_in = constant.executable.memory_analysis().argument_size_in_bytes
    assert passed >= model.weights_bytes > 1000 > compiled_in
    with pytest.raises(ValueError, match="input 'image' must be uint8"):
        model({"image": rows["image"].astype(np.float32)})
    # Zero rows: empty outputs of the right shapes (JAX's shape-polymorphism error before).
    empty = model({"image": rows["image"][:0]})
    assert {k: (v.shape, v.dtype) for k, v in empty.items()} == {
        k: ((0, *v.shape[1:]), v.dtype) for k, v in want.items()
    }

    m = model.manifest
    assert m["inputs"] == {"image": {"dtype": "uint8", "shape": [-1, 8, 8, 1]}}
    assert m["outputs"]["probabilities"] == {"dtype": "float32", "shape": [-1, 10]}
    assert m["outputs"]["label"]["shape"] == [-1] and len(m["outputs"]["label"]["names"]) == 10
    # --step=best: the step the validation split chose, labelled as such; the test metrics of
    # that step are reported beside it.
    selected = {"metric": "val/accuracy", "mode": "max"}
    assert m["source"] == {"workdir": str(workdir), "step": step, "selected_by": selected}
    with open(workdir / "metrics.jsonl") as f:
        evals = [r for r in map(json.loads, f) if "val/accuracy" in r]
    chosen = max(evals, key=lambda r: r["val/accuracy"])  # the first of equal values
    assert step == chosen["step"] and m["metrics"]["val/accuracy"] == chosen["val/accuracy"]
    assert m["metrics"]["eval/accuracy"] == chosen["eval/accuracy"]
    assert m["data"]["validation_split"] == "validation" and m["data"]["eval_splits"] == ["test"]
    assert m["data"]["version"] == str(data.load("digits", "train").info.version)
    assert m["config"]["model"]["name"] == "cnn" and m["config"]["total_steps"] == 20
    assert set(m["metrics"]) == {
        f"{split}/{k}"
        for split in ("val", "eval")
        for k in ("loss", "accuracy", "precision", "recall", "f1", "auroc")
    }
    assert m["versions"]["jax"] == jax.__version__ and m["versions"]["flax"]
    assert m["git"]["commit"] is None or len(m["git"]["commit"]) == 40
    assert m["platforms"] == ["cpu"]
    assert set(m["files"]) == {artifact.FUNCTION, artifact.WEIGHTS, artifact.REFERENCE}
    ref = m["reference"]
    image = ref["inputs"]["image"]
    assert image["rows"] == len(data.load("digits", "train")) and len(image["mean"]) == 64
    assert (
        len(image["histogram"]["edges"][0]) == 11
        and sum(image["histogram"]["counts"][0]) == (image["rows"])
    )
    # Outputs on the held-out validation split (216 rows), as output drift judges them.
    labels = ref["outputs"]["label"]
    validation = len(data.load("digits", "validation"))
    assert (
        sum(labels["counts"]) == validation == 216 and abs(sum(labels["distribution"]) - 1) < 1e-3
    )
    assert sum(ref["outputs"]["probabilities"]["max_histogram"]["counts"]) == validation


def test_an_array_alone_is_refused_naming_the_mapping_to_pass(digits_export):
    # model(x) said "'numpy.ndarray' object has no attribute 'items'" (a fresh-user check).
    _, out = digits_export
    model = artifact.load(str(out))
    with pytest.raises(ValueError) as e:
        model(np.zeros((2, 8, 8, 1), np.uint8))
    assert str(e.value) == (
        "inputs: expected a mapping of input name to array (image), got ndarray; call "
        "model({'image': x})"
    )


def test_an_input_of_no_numbers_or_a_wrong_name_is_said_as_it_is(digits_export):
    # None and text were told `convert it with .astype("uint8")` (they have no .astype, and no
    # cast makes numbers of them; None read "object[]"); an extra input was said with
    # "missing []" (a fresh-user check).
    _, out = digits_export
    model = artifact.load(str(out))
    must = "input 'image' must be uint8[-1, 8, 8, 1] (-1: any batch), got "
    for value, what in [(None, "None"), ("abc", "'abc'"), (["a", "b"], "text")]:
        with pytest.raises(ValueError) as e:
            model({"image": value})
        assert str(e.value) == f"{must}{what}; give numbers"
    x = np.zeros((1, 8, 8, 1), np.uint8)
    with pytest.raises(ValueError) as e:
        model({"image": x, "x": x})
    assert str(e.value) == "inputs must be ['image']; extra ['x']"
    with pytest.raises(ValueError) as e:
        model({"x": x})
    assert str(e.value) == "inputs must be ['image']; missing ['image'], extra ['x']"


def test_values_a_conversion_would_change_are_named_not_told_to_convert(digits_export):
    # An int64 id of 2**32 + 40 was told `.astype("int32")`, which made it 40, accepted
    # silently; a NaN was told the same. Pixels are uint8 0-16: whole floats in range convert.
    _, out = digits_export
    model = artifact.load(str(out))
    x = np.zeros((2, 8, 8, 1))
    must = "input 'image' must be uint8[-1, 8, 8, 1] (-1: any batch), got "
    with pytest.raises(ValueError) as e:
        model({"image": x})
    assert str(e.value) == f'{must}float64[2, 8, 8, 1]; convert it with .astype("uint8")'
    for value, dtype, got, cast in [
        (300, np.int64, "300", "44"),
        (-3, np.int64, "-3", "253"),
        (2**64 - 1, np.uint64, str(2**64 - 1), "255"),
        (1.5, np.float64, "1.5", "1"),
        (np.nan, np.float32, "nan", None),  # what NaN casts to is the platform's
    ]:
        bad = x.astype(dtype)
        bad[1, 0, 1, 0] = value
        with pytest.raises(ValueError) as e:
            model({"image": bad})
        said = str(e.value)
        fault = f"expected uint8 values in [0, 255], got {got} at flat index 65"
        made = f"would make it {cast}" if cast is not None else "would make it"
        assert said.startswith(f'{must}{dtype.__name__}[2, 8, 8, 1]; {fault} (.astype("uint8") ')
        assert made in said and said.endswith(": fix the values, not their type)"), said


def test_a_conversion_to_a_float_input_says_what_it_changes(digits_export):
    # An int64 (or float64) 2**24 + 1 for a float32 input was told `.astype("float32")`, which
    # makes it 2**24, without a word; and a float64 1e39 was told to convert, which makes it
    # inf (then refused as non-finite). The server's words for the same JSON numbers.
    import json

    from ann.serve import protocol
    from ann.serve.errors import ServeError

    _, out = digits_export
    model = artifact.load(str(out))
    model.inputs, model.framings = {"x": {"dtype": "float32", "shape": [-1, 2]}}, {}  # as a
    model._dtypes = {"x": np.dtype("float32")}  # tabular export's (digits' pixels are uint8)
    must = "input 'x' must be float32[-1, 2] (-1: any batch), got "
    rounded = (
        'convert it with .astype("float32"), knowing that float32 holds 16777217 at flat index '
        "1 only as 16777216 (whole numbers are exact in it up to 2**24 = 16,777,216)"
    )
    far = "expected finite float32 values, got 1e+39 at flat index 0 (out of range for float32)"
    for sent, fault in [([1, 2**24 + 1], rounded), ([1e39, 2.0], far)]:
        for x in (np.array([sent]), np.array([sent], np.float64)):
            with pytest.raises(ValueError) as e:
                model.check({"x": x})
            assert str(e.value) == f"{must}{x.dtype}[1, 2]; {fault}"
    tensor = {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1e39, 2.0]}
    served = {"x": {"dtype": "float32", "shape": [2]}}  # the server's signature entry
    with pytest.raises(ServeError) as e:
        protocol.decode_infer(json.dumps({"inputs": [tensor]}).encode(), served, {"y": {}}, 8)
    assert e.value.message == "inputs[0].data: " + far.replace("float32", "FP32")
    # What float32 holds exactly (2**25, fractions as floats round) is told to convert alone.
    for x in (np.array([[2**25, 3]]), np.array([[0.1, 3.0]])):
        with pytest.raises(ValueError, match=r'; convert it with \.astype\("float32"\)$'):
            model.check({"x": x})


def test_a_call_runs_at_a_few_padded_batch_sizes_each_compiled_once(digits_export, monkeypatch):
    # Each new batch size compiled (0.5 s) and kept its executable: a notebook's ragged
    # batches of 1-300 rows made 97 of them (+190 MB). It pads to the server's sizes now.
    _, out = digits_export
    model = artifact.load(str(out))
    rows = data.load("digits", "test", cache=True).rows(np.arange(70))["image"]
    exact = model.compile(70)({"image": rows})  # the 70 rows at their own size, unpadded
    ran, run = [], model._jitted

    def recorded(weights, inputs):
        ran.append(len(inputs["image"]))
        return run(weights, inputs)

    monkeypatch.setattr(model, "_jitted", recorded)
    calls = {n: model({"image": rows[:n]}) for n in range(1, 71)}
    assert sorted(set(ran)) == [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 80]  # `ann serve`'s
    assert ran[:6] == [1, 2, 4, 4, 8, 8]
    assert [artifact.batch_bucket(n) for n in (300, 301, 1000)] == [320, 320, 1024]
    for n, got in calls.items():  # the padding rows are cut: each row's own outputs
        assert got["label"].shape == (n,) and got["probabilities"].shape == (n, 10)
        np.testing.assert_array_equal(got["label"], exact["label"][:n])
        np.testing.assert_allclose(got["probabilities"], exact["probabilities"][:n], atol=1e-6)


def test_restore_model_names_a_workdir_that_holds_no_run(digits_export, tmp_path):
    # It was FileNotFoundError: [Errno 2] ... config.json, where its docstring promised
    # ConfigError or CheckpointError (trial 48a); now the words `ann export --workdir` has.
    from ann.train.build import restore_model

    workdir, _ = digits_export
    step = max(directory_kind.saved_steps(workdir).latest)
    for given, message in [
        (tmp_path / "nope", f"workdir={tmp_path / 'nope'} does not exist; give the directory "
         "of a trained run"),
        (workdir / "checkpoints" / str(step), f"workdir={workdir}/checkpoints/{step} is a "
         f"checkpoint of the training run at {workdir}; give workdir={workdir} step={step}"),
    ]:  # fmt: skip
        with pytest.raises(ValueError) as e:
            restore_model(str(given))
        assert str(e.value) == message


def test_compile_names_a_bad_batch_size(digits_export):
    # compile(0) was JAX's shape-polymorphism error; compile("8"), 13 KB of MLIR (trial 48a).
    model = artifact.load(str(digits_export[1]))
    for size, error, message in [
        (0, ValueError, "batch_size=0 must be at least 1"),
        (-1, ValueError, "batch_size=-1 must be at least 1"),
        ("8", TypeError, "batch_size: expected an int, got str"),
        (2.0, TypeError, "batch_size: expected an int, got float"),
    ]:
        with pytest.raises(error) as e:
            model.compile(size)
        assert str(e.value) == message
    assert model.compile(np.int64(2))({"image": np.zeros((2, 8, 8, 1), np.uint8)})[
        "label"
    ].shape == (2,)


def test_a_non_finite_output_is_refused_in_the_servers_words(digits_export, monkeypatch):
    """Finite inputs on which the model overflows to NaN or infinity are refused, naming the
    output, row and value, as the server's 422 does (`artifact.non_finite_words`): the
    loader returned NaN probabilities and argmax's label 0 (a breast-cancer MLP at 3e38)."""
    from ann.serve.app import non_finite
    from ann.serve.batcher import NonFiniteOutput

    _, out = digits_export
    model = artifact.load(str(out))
    images = np.zeros((3, 8, 8, 1), np.uint8)
    run = model._jitted

    def overflowing(weights, inputs):
        outputs = dict(run(weights, inputs))
        probabilities = np.array(outputs["probabilities"])
        probabilities[1, 4], probabilities[2, 0] = np.inf, np.nan
        return {**outputs, "probabilities": probabilities}

    monkeypatch.setattr(model, "_jitted", overflowing)
    with pytest.raises(ValueError) as e:
        model({"image": images})
    served = non_finite(NonFiniteOutput("probabilities", 1, "inf")).message
    assert served.endswith("; no answer is given for it")
    assert str(e.value) == (
        served.removesuffix("; no answer is given for it")
        + "; rows that do: 2 of 3; no outputs are returned, call it without them"
    )
    assert str(e.value).startswith("outputs.probabilities: row 1 is inf, not a finite number")


BLOCK_FLAX = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("flax", "optax", "orbax", "experiments", "grain") or (
                # ann.directory_kind: what a directory holds, os only (artifact.not_an_export);
                # ann.arguments: a path's ~ expanded (artifact.path_argument), stdlib only
                name.startswith("ann.")
                and name not in ("ann.artifact", "ann.directory_kind", "ann.arguments")
            ):
                raise ImportError(f"{name} must not be needed to load an export")

    sys.meta_path.insert(0, Block())
    import numpy as np
    from ann import artifact

    model = artifact.load(sys.argv[1])
    x = np.load(sys.argv[2])
    np.save(sys.argv[3], model({"image": x})["probabilities"])
    print(sorted(m for m in sys.modules if m.split(".")[0] in ("flax", "experiments")))
    """
)


def test_loader_needs_only_jax(digits_export, tmp_path):
    _, out = digits_export
    x = data.load("digits", "test", cache=True).rows(np.arange(16))["image"]
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_FLAX, str(out), str(tmp_path / "x.npy"), str(tmp_path / "y")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
    np.testing.assert_allclose(
        np.load(tmp_path / "y.npy"), artifact.load(str(out))({"image": x})["probabilities"]
    )


@pytest.mark.parametrize(
    "damage, message",
    [
        ("flip_weights", "weights.safetensors was modified"),
        (
            "truncate_function",
            r"function.jaxexport has \d+ bytes, the manifest says \d+ \(truncated",
        ),
        ("delete_weights", "weights.safetensors is missing"),
        ("truncate_manifest", "manifest.json is not valid JSON"),
        ("rehash_manifest", "was modified: its sha256 is"),
        ("not_an_export", "is not an ann.export/1 manifest"),
        # Each file matches its hash, but the manifest no longer says what the function takes
        # or gives (the input's dtype edited: loaded, a call was told to convert to int8, then
        # JAX refused it, "Dtype mismatch"; a server never turned ready).
        (
            "edit_input_dtype",
            r"manifest.json: inputs.image says int8\[-1, 8, 8, 1\], but function.jaxexport takes "
            r"uint8\[batch, 8, 8, 1\]; the manifest was edited",
        ),
        (
            "edit_output_shape",
            r"manifest.json: outputs.probabilities says float32\[-1, 9\], but function.jaxexport "
            r"gives float32\[batch, 10\]",
        ),
        ("rename_input", r"'inputs' lists \['pixels'\], but function.jaxexport takes \['image'\]"),
        (
            "other_weights",
            r"weights.safetensors: 'head/bias' is float16\[10\], but function.jaxexport takes "
            r"float32\[10\]",
        ),
        # The format's number is bumped for changes an older reader would misread: it says so
        # (it said "not an ann.export/1 manifest; re-export").
        (
            "newer_format",
            r"manifest.json is ann.export/2, written by a newer ann; this ann \(.+\) reads "
            r"ann.export/1: upgrade ann to load it$",
        ),
    ],
)
def test_tampered_artifact_is_refused(digits_export, tmp_path, damage, message):
    _, out = digits_export
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    recorded = artifact.sha256_file(str(copy / artifact.MANIFEST))
    weights, function, manifest = (
        copy / artifact.WEIGHTS,
        copy / artifact.FUNCTION,
        copy / artifact.MANIFEST,
    )
    if damage == "flip_weights":
        blob = bytearray(weights.read_bytes())
        blob[-5] ^= 0x01  # one bit of one parameter: same size, valid safetensors
        weights.write_bytes(bytes(blob))
    elif damage == "truncate_function":
        function.write_bytes(function.read_bytes()[:-100])
    elif damage == "delete_weights":
        weights.unlink()
    elif damage == "truncate_manifest":
        manifest.write_bytes(manifest.read_bytes()[:500])
    elif damage == "rehash_manifest":
        # An attacker who edits a file and its hash in the manifest is caught by the hash of the
        # manifest that the registry recorded.
        blob = bytearray(weights.read_bytes())
        blob[-5] ^= 0x01
        weights.write_bytes(bytes(blob))
        m = json.loads(manifest.read_text())
        m["files"][artifact.WEIGHTS]["sha256"] = artifact.sha256_bytes(bytes(blob))
        manifest.write_text(json.dumps(m))
        artifact.load(str(copy))  # consistent on its own...
    elif damage == "edit_input_dtype":  # the trial's `sed -i 's/"uint8"/"int8"/'`
        manifest.write_text(manifest.read_text().replace('"uint8"', '"int8"'))
    elif damage in ("edit_output_shape", "rename_input", "other_weights"):
        m = json.loads(manifest.read_text())
        if damage == "edit_output_shape":
            m["outputs"]["probabilities"]["shape"] = [-1, 9]
        elif damage == "rename_input":
            m["inputs"] = {"pixels": m["inputs"]["image"]}
        else:  # weights of another dtype, their hash and size recorded: only the function knows
            from safetensors.numpy import load as load_st
            from safetensors.numpy import save

            arrays = load_st(weights.read_bytes())
            arrays["head/bias"] = arrays["head/bias"].astype(np.float16)
            weights.write_bytes(save(arrays))
            m["files"][artifact.WEIGHTS] = {
                "sha256": artifact.sha256_file(str(weights)),
                "bytes": weights.stat().st_size,
            }
        manifest.write_text(json.dumps(m))
    elif damage == "not_an_export":
        manifest.write_text(json.dumps({"format": "something else"}))
    elif damage == "newer_format":
        manifest.write_text(
            json.dumps({**json.loads(manifest.read_text()), "format": "ann.export/2"})
        )
    with pytest.raises(artifact.IntegrityError, match=message) as e:
        artifact.load(str(copy), recorded if damage == "rehash_manifest" else None)
    if damage in ("flip_weights", "truncate_function", "delete_weights"):
        # A damaged file's refusal says what to do (it said "refusing to load it").
        assert str(e.value).endswith(f": {artifact.AGAIN}"), str(e.value)
    consistent = ("edit_output_shape", "rename_input", "other_weights", "edit_input_dtype")
    if damage != "rehash_manifest" and damage not in consistent:  # their hashes match
        with pytest.raises(artifact.IntegrityError):
            artifact.verify(str(copy))


def test_a_run_stopped_before_its_first_eval_names_the_steps_it_saved(digits_export, tmp_path):
    """A run stopped (Ctrl-C) before an eval chose a best: `--step=best` (the default) said "no
    checkpoint in .../checkpoints_best; train first, or pick another step", naming neither."""
    from ann.train.checkpoint import CheckpointError

    workdir, _ = digits_export
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    shutil.rmtree(copy / "checkpoints_best")
    saved = sorted(int(p.name) for p in (copy / "checkpoints").iterdir() if p.name.isdigit())
    with pytest.raises(CheckpointError) as e:
        restore_model(str(copy), "best")
    assert str(e.value) == (
        f"no checkpoint in {copy}/checkpoints_best (the run saved none there: no eval chose a "
        f"best yet); choose --step=latest (step {saved[-1]}) or one of "
        f"{', '.join(map(str, saved[::-1]))}"
    )


@pytest.mark.parametrize("entry", ["checkpoints_best", "checkpoints"])
def test_a_checkpoint_directory_that_is_a_file_is_named_as_one(digits_export, tmp_path, entry):
    """`checkpoints_best` a file: export and report said "the run saved none there: no eval
    chose a best yet" of a run that had; `checkpoints` a file: "the run saved none; train it
    first". `ann train` says "... is a file, so nothing can be below it"."""
    from ann import cli
    from ann.train.checkpoint import CheckpointError

    workdir, _ = digits_export
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    saved = sorted(int(p.name) for p in (copy / "checkpoints").iterdir() if p.name.isdigit())
    best = [int(p.name) for p in (copy / "checkpoints_best").iterdir() if p.name.isdigit()]
    shutil.rmtree(copy / entry)
    (copy / entry).write_text("x")
    other = (
        f"--step=latest (step {saved[-1]}) or one of {', '.join(map(str, saved[::-1]))}"
        if entry == "checkpoints_best"
        else f"--step=best (step {best[0]})"
    )
    with pytest.raises(CheckpointError) as e:
        restore_model(str(copy), "best" if entry == "checkpoints_best" else "latest")
    assert str(e.value) == (
        f"no checkpoint in {copy}/{entry}: {copy}/{entry} is a file, so nothing can be below "
        f"it; move it out of the workdir (ann train refuses the run while it is there), or "
        f"choose {other}"
    )
    if entry == "checkpoints":  # a step number is told from a listing: "steps there: none"
        with pytest.raises(cli.FlagError, match=r"steps there: none \(.*/checkpoints is a file"):
            cli.check_trained_run(str(copy), str(saved[0]))


def test_a_step_the_run_never_saved_is_named_before_jax_is_imported(digits_export, tmp_path):
    """`--step=9` of a run without it was said after 12 s of imports and Orbax's managers,
    naming the absolute path of a relative --workdir: now from a listing, as the user gave it."""
    from conftest import ROOT

    workdir, _ = digits_export
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    best = [int(p.name) for p in (workdir / "checkpoints_best").iterdir() if p.name.isdigit()]
    missing = next(n for n in range(1, 1000) if n not in saved + best)
    probe = (
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom ann.__main__ import main\n"
        "try:\n    main(['ann', *sys.argv[1:]])\n"
        "except SystemExit as e:\n    code = e.code\nprint('jax' in sys.modules, code)\n"
    )
    args = ["export", f"--workdir={workdir.name}", f"--out={tmp_path / 'out'}"]
    result = subprocess.run(
        [sys.executable, "-c", probe, *args, f"--step={missing}"],
        capture_output=True, text=True, cwd=workdir.parent, timeout=60,
    )  # fmt: skip
    assert result.stdout.split()[-2:] == ["False", "1"], result.stderr[-2000:]
    steps = ", ".join(map(str, saved[::-1]))
    assert result.stderr == (
        f"error: --step={missing}: no checkpoint step {missing} in {workdir.name}/checkpoints; "
        f"steps there: {steps}\n"
    )
    assert not (tmp_path / "out").exists()


def test_additions_of_a_later_ann_are_ignored(digits_export, tmp_path):
    """The format's rule: an older reader ignores what a later ann adds (a manifest key, a file,
    a reference kind), each listed file still checked. A `validation/*` reference kind, added
    after ann.export/1 was, made readers before it refuse the whole reference."""
    from safetensors.numpy import load, save

    _, out = digits_export
    later = tmp_path / "later"
    shutil.copytree(out, later)
    reference = load((later / artifact.REFERENCE).read_bytes())
    blob = save({**reference, "calibration/logits": np.zeros((3, 10), np.float32)})
    (later / artifact.REFERENCE).write_bytes(blob)
    (later / "extra.bin").write_bytes(b"later")
    manifest = json.loads((later / artifact.MANIFEST).read_text())
    manifest["files"][artifact.REFERENCE] = {
        "sha256": artifact.sha256_bytes(blob),
        "bytes": len(blob),
    }
    manifest["files"]["extra.bin"] = {"sha256": artifact.sha256_bytes(b"later"), "bytes": 5}
    manifest["a_later_key"] = {"x": 1}
    (later / artifact.MANIFEST).write_text(json.dumps(manifest))
    model = artifact.load(str(later))
    sample = artifact.load_reference(str(later), model.manifest)
    assert sorted(sample) == ["inputs", "outputs", "validation"]
    np.testing.assert_array_equal(sample["inputs"]["image"], reference["inputs/image"])
    assert artifact.verify(str(later))["a_later_key"] == {"x": 1}
    # A key that is no KIND/NAME is still refused, and an added file is still checked.
    (later / "extra.bin").write_bytes(b"LATER")
    with pytest.raises(artifact.IntegrityError, match="extra.bin was modified"):
        artifact.verify(str(later))
    blob = save({**reference, "stray": np.zeros(1, np.float32)})
    (later / artifact.REFERENCE).write_bytes(blob)
    manifest["files"][artifact.REFERENCE] = {
        "sha256": artifact.sha256_bytes(blob),
        "bytes": len(blob),
    }
    (later / artifact.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(artifact.IntegrityError, match=r"holds 'stray', not KIND/NAME"):
        artifact.load_reference(str(later), artifact.read_manifest(str(later)))


def test_a_path_that_is_no_directory_is_not_called_an_incomplete_export(tmp_path):
    # A missing path or a file is no damaged export: not an IntegrityError (it was one), and a
    # registry URI is named as one with what loads it (it "does not exist"); an empty path
    # said " does not exist; ...", naming nothing.
    (tmp_path / "file").write_text("")
    with pytest.raises(FileNotFoundError, match=r"nope does not exist; give an export dir"):
        artifact.load(str(tmp_path / "nope"))
    with pytest.raises(NotADirectoryError, match=r"file is a file; give an export directory"):
        artifact.read_manifest_bytes(str(tmp_path / "file"))
    # None named no argument: "expected str, bytes or os.PathLike object, not NoneType".
    for read in (artifact.load, artifact.read_manifest, artifact.verify, artifact.load_weights):
        with pytest.raises(TypeError) as e:
            read(None)
        assert str(e.value) == (
            "directory: expected an export directory as a str or path, got NoneType"
        )
    with pytest.raises(FileNotFoundError) as e:
        artifact.load("")
    assert (
        str(e.value)
        == "an empty path names no export; give an export directory (`ann export --out`)"
    )
    with pytest.raises(ValueError) as e:
        artifact.load("models:/digits@champion")
    assert not isinstance(e.value, artifact.IntegrityError)
    assert str(e.value) == (
        "models:/digits@champion is a registry URI, not an export directory; load it with "
        "ann.registry.resolve('models:/digits@champion', registry=REGISTRY_DIR).load() "
        "(REGISTRY_DIR defaults to $ANN_REGISTRY, else ./registry)"
    )
    # A training run's workdir is named as one, with the command that exports it (it said "the
    # export is incomplete"), and raised as the wrong directory, not as damage: it was an
    # IntegrityError, what a tampered or truncated export raises.
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "config.json").write_text("{}")
    for read in (artifact.read_manifest_bytes, artifact.load, artifact.load_weights):
        with pytest.raises(artifact.NotAnExportError) as e:
            read(str(tmp_path / "run"))
        assert not isinstance(e.value, artifact.IntegrityError)
        assert str(e.value) == (
            f"{tmp_path / 'run'} is a training run, not an export; export it first (ann export "
            f"--workdir={tmp_path / 'run'} --out=EXPORT_DIR) and give EXPORT_DIR"
        )
    # A directory inside the run (its checkpoints/, its report/) was "holds no manifest.json;
    # give an export directory", an IntegrityError: the run is named, with its export.
    (tmp_path / "run" / "report").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"experiment": "x", "total_steps": 2}')
    for inner in ("checkpoints", "report"):
        with pytest.raises(artifact.NotAnExportError) as e:
            artifact.load(str(tmp_path / "run" / inner))
        assert str(e.value) == (
            f"{tmp_path / 'run' / inner} holds no manifest.json: it is inside the training run "
            f"at {tmp_path / 'run'}; export the run first (ann export --workdir="
            f"{tmp_path / 'run'} --out=EXPORT_DIR) and give EXPORT_DIR"
        )


def test_every_command_given_a_run_where_an_export_is_wanted_says_how_to_export_it(tmp_path):
    """`ann serve --model=RUN`, `ann monitor drift|performance --model=RUN` and `ann registry
    register RUN` name the run as one with the `ann export` that makes an export of it, in one
    line (as `artifact.load` does); `ann report --model=RUN` takes it as --workdir."""
    from test_cli import ann

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"experiment": "digits", "total_steps": 20}))
    (tmp_path / "requests.jsonl").write_text('{"model": "m", "status": 200}\n')
    (tmp_path / "labels.jsonl").write_text('{"id": "a", "label": 1}\n')
    said = (
        f"error: {run} is a training run, not an export; export it first (ann export "
        f"--workdir={run} --out=EXPORT_DIR) and give EXPORT_DIR"
    )
    logs = ["--requests=requests.jsonl", "--labels=labels.jsonl"]
    for args in (
        ["serve", f"--model={run}", "--port=18765"],
        ["monitor", "drift", f"--model={run}", logs[0]],
        ["monitor", "performance", f"--model={run}", *logs],
        ["registry", "register", str(run), "--name=digits", "--registry=reg"],
    ):
        assert one_line_error(ann(*args, cwd=tmp_path)) == said, args
    # A directory inside the run: "holds no manifest.json; give an export directory".
    for args in (
        ["serve", "--model=run/checkpoints", "--port=18765"],
        ["monitor", "drift", "--model=run/checkpoints", logs[0]],
        ["registry", "register", "run/checkpoints", "--name=digits", "--registry=reg"],
    ):
        assert one_line_error(ann(*args, cwd=tmp_path)) == (
            "error: run/checkpoints holds no manifest.json: it is inside the training run at "
            "run; export the run first (ann export --workdir=run --out=EXPORT_DIR) and give "
            "EXPORT_DIR"
        ), args
    line = one_line_error(ann("report", f"--model={run}", cwd=tmp_path))
    assert line == f"error: --model={run} is a training run; give it as --workdir={run}"
    assert not (tmp_path / "reg").exists()


def test_export_refuses_a_nonempty_out_and_keeps_batchnorm(tmp_path, digits_export):
    run, out = digits_export
    with pytest.raises(ValueError, match=r"^out=.* holds an export \(manifest.json\); choose"):
        export(str(run), str(out))  # ann export's check (it was FileExistsError)
    # ResNet: BatchNorm running statistics travel with the weights, and cuda/tpu lower too.
    workdir = tmp_path / "resnet"
    train_and_evaluate(tiny("digits_resnet", total_steps=3), str(workdir))
    manifest = export(
        str(workdir), str(tmp_path / "export"), "latest", "resnet", ("cpu", "cuda", "tpu")
    )
    assert manifest["platforms"] == ["cpu", "cuda", "tpu"] and manifest["name"] == "resnet"
    assert not list(tmp_path.glob(".export-*"))  # the temporary directory was renamed away
    model = artifact.load(str(tmp_path / "export"))
    assert any(k.endswith("bn1/mean") for k in model.weights)
    # One count of parameters: training's (it said 169,834, the export 170,794 with the
    # BatchNorm statistics counted in); the statistics apart.
    with open(workdir / "metrics.jsonl") as f:
        trained_count = next(
            r["model/num_params"] for r in map(json.loads, f) if "model/num_params" in r
        )
    statistics = sum(v.size for k, v in model.weights.items() if k.endswith(("/mean", "/var")))
    assert (manifest["num_params"], manifest["num_statistics"]) == (trained_count, statistics)
    assert statistics > 0 and sum(v.size for v in model.weights.values()) == (
        trained_count + statistics
    )
    experiment, trained, _, _ = restore_model(str(workdir), "latest")
    experiment.temperature = manifest["calibration"]["temperature"]
    x = data.load("digits", "test", cache=True).rows(np.arange(8))["image"]
    np.testing.assert_allclose(
        model({"image": x})["probabilities"],
        jax.device_get(experiment.predict(trained, {"image": x}))["probabilities"],
        rtol=1e-5,
        atol=1e-6,
    )
    # An export for an accelerator alone cannot be run here to check it: refused in one
    # line with the platforms that would run, nothing written (it was jax's ValueError
    # "exported for platforms ('cuda',) but it is used on ('cpu',)" from deep in the export).
    with pytest.raises(ValueError, match=r"; use platforms=cuda,cpu$"):
        export(str(workdir), str(tmp_path / "cuda_only"), "latest", "resnet", ("cuda",))
    assert not (tmp_path / "cuda_only").exists() and not list(tmp_path.glob(".export-*"))


def test_an_export_runs_on_a_device_of_a_platform_it_was_lowered_for(monkeypatch):
    """A `cpu` export on a GPU machine runs on the host's CPU (on an H200 `ann export` itself
    stopped: "Function 'infer' was exported for platforms ('cpu',) but it is used on
    ('cuda',)"); where neither the machine's platform nor a CPU backend is among the export's,
    one line says how to export again."""
    monkeypatch.setattr(jax.export, "default_export_platform", lambda: "cuda")
    assert artifact.device_for(("cpu",)) == jax.devices("cpu")[0]
    assert artifact.device_for(("cpu", "cuda")) == jax.devices()[0]
    with pytest.raises(artifact.PlatformError) as e:
        artifact.device_for(("tpu",))
    assert str(e.value) == (
        "the export was lowered for tpu, and this machine runs cuda: export it again with "
        "--platforms=tpu,cuda"
    )
    real = jax.devices

    def no_cpu(backend=None):
        if backend == "cpu":
            raise RuntimeError("Unknown backend cpu")
        return real(backend)

    monkeypatch.setattr(jax, "devices", no_cpu)
    with pytest.raises(artifact.PlatformError, match=r"no CPU backend .*--platforms=cpu,cuda$"):
        artifact.device_for(("cpu",))


def _craft(copy, outside, kind):
    """Makes the export in `copy` hostile in one way; returns the file the refusal must name."""
    import os

    manifest_path = copy / artifact.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    weights = copy / artifact.WEIGHTS
    blob = weights.read_bytes()
    secret = outside / "secret.bin"
    secret.write_bytes(blob)  # a file outside the export, with a sha256 the attacker knows

    def list_extra(name):
        entry = {"sha256": artifact.sha256_bytes(blob), "bytes": len(blob)}
        manifest["files"][name] = entry
        manifest_path.write_text(json.dumps(manifest))
        return name

    if kind == "absolute_path":
        return list_extra(str(secret))
    if kind == "dotdot":
        return list_extra(f"../{outside.name}/secret.bin")
    weights.unlink()
    if kind == "symlink_out":
        weights.symlink_to(secret)
    elif kind == "fifo":
        os.mkfifo(weights)
    elif kind == "directory":
        weights.mkdir()
    elif kind == "size_mismatch":
        # A sparse 256 MiB file where the manifest declares the real weights' size: refused by
        # its size before a byte is read (checked below by the memory this test allocates).
        with open(weights, "wb") as f:
            f.truncate(256 << 20)
    elif kind == "huge_declared_size":
        # A file that is as large as its manifest says, just above the limit: never read.
        size = artifact.MAX_FILE_BYTES + 1
        with open(weights, "wb") as f:
            f.truncate(size)
        manifest["files"][artifact.WEIGHTS]["bytes"] = size
        manifest_path.write_text(json.dumps(manifest))
    elif kind == "huge_manifest":
        weights.write_bytes(blob)
        manifest_path.write_text(json.dumps(manifest) + " " * artifact.MAX_MANIFEST_BYTES)
        return artifact.MANIFEST
    return artifact.WEIGHTS


def _without_blocking(call):
    """Runs `call` in a thread; a FIFO it waits on is opened for it after 60 s (so a regression
    fails instead of hanging the suite)."""
    import threading

    result = {}

    def run():
        try:
            result["value"] = call()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():
        pytest.fail("reading the export blocked (on a FIFO?)")
    if "error" in result:
        raise result["error"]
    return result.get("value")


@pytest.mark.parametrize(
    "kind, message",
    [
        ("absolute_path", r"lists the file '/[^']*secret.bin', which is not a plain file name"),
        ("dotdot", r"lists the file '\.\./[^']*secret.bin', which is not a plain file name"),
        ("symlink_out", r"weights.safetensors is a symbolic link"),
        ("fifo", r"weights.safetensors is a FIFO \(a named pipe\), not a regular file"),
        ("directory", r"weights.safetensors is a directory, not a regular file"),
        ("size_mismatch", r"weights.safetensors has 268435456 bytes, the manifest says \d+ "),
        ("huge_declared_size", r"file 'weights.safetensors' declares \d+ bytes, above the limit"),
        ("huge_manifest", r"manifest.json has \d+ bytes, above the limit of \d+ bytes"),
    ],
)
def test_crafted_export_is_refused_by_the_loader_and_the_registry(
    digits_export, tmp_path, kind, message
):
    """Each is refused with one line naming the file, before the file is read, and registering
    it leaves no version and no copy behind."""
    import tracemalloc

    from ann.registry import Registry

    _, out = digits_export
    copy, outside, reg = tmp_path / "export", tmp_path / "outside", tmp_path / "reg"
    shutil.copytree(out, copy)
    outside.mkdir()
    named = _craft(copy, outside, kind)

    tracemalloc.start()
    try:
        for check in (lambda: artifact.load(str(copy)), lambda: Registry(str(reg)).register(
                str(copy), "digits")):  # fmt: skip
            with pytest.raises(artifact.IntegrityError, match=message) as refused:
                _without_blocking(check)
            assert named in str(refused.value) and "\n" not in str(refused.value)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{peak} bytes allocated: the file was read before it was refused"
    assert not reg.exists()  # a refused register creates no registry


@pytest.mark.parametrize(
    "flag_args, message",
    [
        (["--step=-3"], "--step='-3' must be 'best', 'latest' or a step number"),
        (["--step=last"], "--step='last' must be"),
        (["--name=a/b"], "--name='a/b' must be letters, digits"),
        (
            ["--platforms=cpu,gpu"],
            "--platforms='cpu,gpu' must be distinct names among cpu, cuda, rocm, tpu (unknown: "
            "gpu; a GPU is 'cuda' (NVIDIA) or 'rocm' (AMD) to jax.export)",
        ),
        (["--platforms=CPU"], "(unknown: CPU (did you mean 'cpu'?))"),
        (["--platforms=cpu,cpu"], "--platforms='cpu,cpu' must be distinct names"),
        (["--platforms="], "--platforms is empty; give one or more of cpu, cuda, rocm, tpu"),
        (["--workdir=MISSING"], "does not exist; give the directory of a trained run"),
        # It said "holds no config.json" of a file.
        (["--workdir=FILE"], "is a file, not a directory; give the directory of a trained run"),
        # A run's checkpoints/ (tab completion stops there): named, with the run to give.
        (["--workdir=CKPT"], "holds no config.json: it is inside the training run at "),
        # A step's folder in it: the run and --step=N (it said "give --workdir=RUN", the step
        # lost); a step it does not hold, as --step=77 is refused.
        (["--workdir=STEP"], "is a checkpoint of the training run at "),
        (["--workdir=NOSTEP"], "checkpoints/77: no checkpoint step 77 in "),
        (["--out=FILE"], "is a file, not a directory; choose another --out"),
        (["--out=RUN"], "holds a training run (config.json); choose another --out"),
        # Once it failed after the whole export; then it said "choose another" of nothing.
        (["--out="], "--out is empty; give a value (--out: new directory to"),
        # Each was a traceback after the whole export had run.
        (
            ["--platforms=cuda"],
            "--platforms=cuda must include this machine's platform (cpu): "
            "the export runs here once, to check it and to record its reference outputs; use "
            "--platforms=cuda,cpu",
        ),
        (["--out=LINK"], "is a symbolic link (to "),
        (
            ["--out=DANGLING"],
            "is a symbolic link to /nonexistent/x, which does not exist; choose another --out",
        ),
        # Accepted (as checkpoints/ is not): an export inside Orbax's best-checkpoint directory.
        (["--out=BEST"], "checkpoints_best, which the training run at "),
    ],
)
def test_export_flags_are_checked_before_anything_starts(
    digits_export, tmp_path, flag_args, message
):
    workdir, _ = digits_export
    (tmp_path / "file").write_text("x")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "dangling").symlink_to("/nonexistent/x")
    places = {"MISSING": tmp_path / "missing", "FILE": tmp_path / "file", "RUN": workdir,
              "CKPT": workdir / "checkpoints", "LINK": tmp_path / "link",
              "DANGLING": tmp_path / "dangling",
              "BEST": workdir / "checkpoints_best/x",
              "STEP": workdir / f"checkpoints/{max(directory_kind.saved_steps(workdir).latest)}",
              "NOSTEP": workdir / "checkpoints/77"}  # fmt: skip
    args = [f"--workdir={workdir}", f"--out={tmp_path / 'out'}", *fill(flag_args, places)]
    result = subprocess.run(
        [sys.executable, "-m", "ann.export", *args], capture_output=True, text=True, timeout=120
    )
    line = one_line_error(result)
    assert message in line, line
    if "CKPT" in flag_args[0]:
        assert line.endswith(f"; give --workdir={workdir}"), line
    if "=STEP" in flag_args[0]:
        assert line.endswith(f"; give --workdir={workdir} --step={places['STEP'].name}"), line
    made = ["dangling", "file", "link", "real"]
    assert sorted(p.name for p in tmp_path.iterdir()) == made  # nothing written
    assert not any((tmp_path / "real").iterdir()) and not (workdir / "checkpoints_best/x").exists()


def test_a_config_json_that_is_a_directory_is_named_as_one(tmp_path):
    # It said "--workdir=... holds no config.json" of a run holding a config.json directory.
    from ann import cli

    (tmp_path / "config.json").mkdir()
    with pytest.raises(cli.FlagError) as e:
        cli.check_trained_run(str(tmp_path), "best")
    assert str(e.value) == (
        f"--workdir={tmp_path} holds no config.json file ({tmp_path}/config.json is a "
        "directory); give the directory of a trained run"
    )


def test_export_writes_only_what_the_loader_accepts(digits_export, tmp_path, monkeypatch):
    """A manifest above the loader's size limit, or one the loader's checks refuse, is never
    written: an export nothing could load would only fail later, at registration or serving."""
    from ann import export as export_lib

    _, out = digits_export
    manifest = artifact.read_manifest(str(out))
    function = (out / artifact.FUNCTION).read_bytes()
    weights = artifact.load_weights(str(out))
    target = tmp_path / "out"
    monkeypatch.setattr(artifact, "MAX_MANIFEST_BYTES", 1000)
    with pytest.raises(artifact.IntegrityError, match=r"above the loader's limit of 1000"):
        export_lib.write(str(target), dict(manifest), function, weights)
    monkeypatch.undo()
    with pytest.raises(artifact.IntegrityError, match=r"'name' must be 1 to 128 printable"):
        export_lib.write(str(target), {**manifest, "name": "a\nb"}, function, weights)
    assert list(tmp_path.iterdir()) == []  # no export, no temporary directory left


def test_a_nan_metric_is_null_in_manifest_json_and_read_as_undefined(digits_export, tmp_path):
    """A NaN metric (the README allows one) was written into manifest.json as a bare `NaN`,
    which strict JSON readers refuse; now null, which the registry's summary shows as nan."""
    import math

    from ann import export as export_lib
    from ann.registry import Registry
    from ann.registry.__main__ import _summary

    _, out = digits_export
    manifest = artifact.read_manifest(str(out))
    metrics = {**manifest["metrics"], "val/undef": math.nan, "eval/undef": math.inf}
    function = (out / artifact.FUNCTION).read_bytes()
    target = tmp_path / "out"
    export_lib.write(str(target), {**manifest, "metrics": metrics}, function,
                     artifact.load_weights(str(out)))  # fmt: skip

    def refuse(constant):
        raise AssertionError(f"{constant} in manifest.json")

    text = (target / artifact.MANIFEST).read_text()
    written = json.loads(text, parse_constant=refuse)["metrics"]
    assert written["val/undef"] is None and written["eval/undef"] is None
    version = Registry(str(tmp_path / "reg")).register(str(target), "digits")
    assert version.lineage["metrics"]["val/undef"] is None
    assert "val/undef=nan" in _summary(version) and "eval/undef=nan" in _summary(version)


def test_a_nan_metric_is_null_in_run_status_json_and_read_back_as_nan(tmp_path):
    # run_status.json held `"val/undef": NaN` too (json.dump's default).
    import math

    from ann.train import run_status

    run_status.write(str(tmp_path), "done", 60, eval_metrics={"val/undef": math.nan, "v": 1.0})
    text = (tmp_path / run_status.FILENAME).read_text()
    assert "NaN" not in text and json.loads(text)["eval_metrics"]["val/undef"] is None
    metrics = run_status.read(str(tmp_path))["eval_metrics"]
    assert math.isnan(metrics["val/undef"]) and metrics["v"] == 1.0


def test_exported_metrics_read_non_finite_values_as_numbers(tmp_path):
    """metrics.jsonl stores NaN as the string "nan" (ann.train.writers); the manifest's
    metrics (printed by export, summarized by the registry with :.4g) must be numbers."""
    import math

    from ann import export as export_lib

    lines = [{"step": 10, "val/loss": 0.5, "eval/loss": "nan", "eval/seconds": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    metrics = export_lib._eval_metrics(str(tmp_path), 10)
    assert metrics["val/loss"] == 0.5 and math.isnan(metrics["eval/loss"])
    assert sorted(metrics) == ["eval/loss", "val/loss"]
    assert f"{metrics['eval/loss']:.4g}" == "nan"


def test_an_emptied_or_missing_metrics_file_is_warned_about(tmp_path, capsys):
    # An emptied metrics.jsonl exported with no metrics in the line or the manifest, no word.
    from ann import export as export_lib

    path = tmp_path / "metrics.jsonl"
    for made, what in ((False, "does not exist"), (True, "holds no record (emptied?)")):
        if made:
            path.write_text("\n")
        assert export_lib._eval_metrics(str(tmp_path), 60) == {}
        assert capsys.readouterr().err == (
            f"warning: {path} {what}: the export carries no metrics of step 60 (`ann report` "
            "computes them anew from the checkpoint)\n"
        )


def test_a_torn_line_that_held_the_steps_eval_is_warned_about(tmp_path, capsys):
    # The chosen step's eval torn by a crash: only "skipping line 2, torn" was said, and the
    # export carried no metrics (the emptied file's warning says so).
    from ann import export as export_lib

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 60, "train/loss": 0.5}\n{"step": 60, "val/loss": 0.')
    assert export_lib._eval_metrics(str(tmp_path), 60) == {}
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"warning: {path} holds no eval record of step 60 (its torn last line may have held "
        "it): the export carries no metrics of step 60 (`ann report` computes them anew from "
        "the checkpoint)"
    )


def test_a_metrics_file_that_is_a_directory_is_one_line(tmp_path):
    # `ann export` of such a run: a traceback (IsADirectoryError from read_records).
    from ann import export as export_lib
    from ann.train.writers import MetricsFileError

    path = tmp_path / "metrics.jsonl"
    path.mkdir()
    with pytest.raises(MetricsFileError) as e:
        export_lib._eval_metrics(str(tmp_path), 60)
    assert str(e.value) == (
        f"{path} cannot be read (Is a directory); ann train appends the run's metrics to it: "
        "put back a good copy, or move it out of the workdir (the run then has no metrics "
        "record)"
    )


def test_default_names_keep_two_tasks_on_one_data_set_and_model_apart():
    # README's parity experiment (an MLP on digits) exported as 'digits_mlp', the digits MLP
    # classifier's name: registered without --name, it became that model's next version.
    from conftest import load_config

    from ann.export import default_name
    from ann.registry import NAME

    names = {
        default_name(load_config("digits_mlp")),
        default_name(tiny(experiment="mytasks:Parity")),
        default_name(load_config("diabetes_mlp")),
        default_name(tiny("diabetes_mlp", experiment="my.tasks:Dose")),
    }
    assert names == {"digits_mlp", "digits_mlp_parity", "diabetes_mlp_regression",
                     "diabetes_mlp_dose"}  # fmt: skip
    assert all(NAME.match(name) for name in names)


def test_the_default_name_is_the_config_file_and_variant_a_run_recorded(digits_export, tmp_path):
    # `ann export --workdir=runs/digits_finetune` was named `digits_cnn` (DATA_MODEL), the name
    # of the CNN it was fine-tuned from: served together as two versions of one model, and
    # registered without --name as models:/digits_cnn/1. seq2seq's was
    # `digit_strings_seq2seq_seq2seq`. A run that recorded its --config is named by that file.
    from ann import config as config_lib
    from ann.export import default_name

    config = tiny("digits_cnn")
    for flag, name in [
        ("configs/digits_finetune.py", "digits_finetune"),
        ("configs/digits_cnn.py", "digits_cnn"),
        ("/abs/configs/digits_cnn.py:writers", "digits_cnn_writers"),
        ("configs/digits_autoencoder.py:dense", "digits_autoencoder_dense"),
        ("configs/digit_seq2seq.py", "digit_seq2seq"),
        ("my.configs/_x y.py:a.b", "x_y_a_b"),
        ("", "digits_cnn"),  # no record (trained from Python, or an older run): DATA_MODEL
    ]:
        assert default_name(config, flag) == name, flag
    # Through `ann export`: the recorded flag names the export; an export made before keeps
    # its manifest's name (the manifest is what the server and the registry read).
    workdir, old = digits_export
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    values = json.loads((run / "config.json").read_text())
    values[config_lib.CONFIG_FLAG] = "configs/digits_finetune.py"
    (run / "config.json").write_text(json.dumps(values))
    assert export(str(run), str(tmp_path / "export"))["name"] == "digits_finetune"
    assert artifact.load(str(old)).name == "digits_cnn"


def test_a_model_registered_by_a_short_name_exports_by_it(monkeypatch):
    # `@ann.models.register("mywide")` on mynets2.Registered exported as
    # 'digits_mynets2_Registered': the run records the class, and the name was made from it.
    from flax import nnx

    from ann import models
    from ann.export import default_name

    class Registered(nnx.Module):
        pass

    monkeypatch.setitem(models.MODELS, "mywide", Registered)  # this test only
    recorded = f"{Registered.__module__}:{Registered.__qualname__}"  # as record_registered does
    assert default_name(tiny(**{"model.name": recorded})) == "digits_mywide"
    assert default_name(tiny(**{"model.name": "mynets:Wide"})) == "digits_mynets_Wide"


def test_an_explicit_calibration_an_experiment_cannot_apply_is_refused(tmp_path, capsys):
    # README's Parity (and any experiment without class logits) exported with
    # --calibration=temperature: exit 0, no note, no calibration in the manifest.
    from ann import cli
    from ann.export import check_flags

    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny("diabetes_mlp", num_epochs=None, total_steps=2), workdir)
    out = str(tmp_path / "out")
    with pytest.raises(cli.FlagError) as e:
        check_flags(workdir, out, "best", None, ["cpu"], "temperature")
    assert str(e.value) == (
        "--calibration=temperature: experiment 'regression' has no class logits whose "
        "temperature could be fitted (only classification's); drop the flag"
    )
    capsys.readouterr()
    # Asks for nothing: accepted, but said (it was accepted without a word, while temperature
    # was refused: one no-op flag, two behaviours).
    check_flags(workdir, out, "best", None, ["cpu"], "none")
    assert capsys.readouterr().err == (
        "note: --calibration=none: experiment 'regression' has no class logits, so nothing is "
        "calibrated with or without it; the flag changes nothing\n"
    )


def test_a_graph_that_returns_other_than_its_signature_is_not_exported():
    """The manifest's outputs are the experiment's signature: a graph that returns another
    shape was exported with a manifest that misdescribed it (and served so). The fault is said
    where it comes from: the model, under ann's own experiments' predict; a user's `predict`
    (it blamed the model for a predict that returned 'prob_odd' where 'p_odd' was declared)."""
    import jax
    import jax.numpy as jnp

    from ann import experiment as experiment_lib
    from ann.export import _check_outputs

    (batch,) = jax.export.symbolic_shape("batch")
    x = jax.ShapeDtypeStruct((batch, 4), jnp.float32)
    exported = jax.export.export(jax.jit(lambda x: {"probabilities": jnp.tile(x, 2)[:, :3]}))(x)

    def experiment(cls: type, signature: dict):
        made = object.__new__(cls)
        made.output_signature = lambda: signature
        return made

    shipped = experiment_lib.get("classification")
    user = type("Mine", (shipped,), {})
    _check_outputs(
        exported, experiment(shipped, {"probabilities": {"dtype": "float32", "shape": [3]}}), "m"
    )
    for signature, said in [
        ({"probabilities": {"dtype": "float32", "shape": [2]}}, "as [3] float32 per row"),
        ({"probabilities": {"dtype": "int32", "shape": [3]}}, "says [3] int32"),
    ]:
        with pytest.raises(ConfigError, match="model 'm' gives ") as e:
            _check_outputs(exported, experiment(shipped, signature), "m")
        assert said in str(e.value) and "fix the model's output" in str(e.value)
    with pytest.raises(ConfigError) as e:
        _check_outputs(
            exported, experiment(user, {"probabilities": {"dtype": "float32", "shape": [2]}}), "m"
        )
    assert str(e.value) == (
        "experiment Mine's predict returns 'probabilities' as [3] float32 per row, where its "
        "output_signature declares [2] float32; make them agree (what predict makes of the "
        "output of model 'm', or the signature)"
    )
    for cls in (shipped, user):
        with pytest.raises(ConfigError) as e:
            _check_outputs(
                exported, experiment(cls, {"label": {"dtype": "int32", "shape": []}}), "m"
            )
        assert str(e.value) == (
            f"experiment {cls.__name__}'s predict returns probabilities, its output_signature "
            "declares label; make them agree"
        )


def test_a_model_that_gives_nan_on_its_own_data_is_not_exported():
    """A broken model (NaN weights, an overflow on ordinary rows) gives non-finite outputs on
    the training split: refused at export, naming the output and how many rows, so a server's
    422 `non_finite_output` means an input far outside the data, never such a model. It was
    refused only by accident, as "exported output 'score' differs from the training code's"
    (NaN != NaN), or not at all where only the validation rows overflowed."""
    from ann.export import _check_finite

    fine = {"score": np.ones(4, np.float32), "label": np.zeros(4, np.int32)}
    _check_finite(fine, "training (train)")
    broken = {**fine, "score": np.array([1, np.nan, np.inf, 2], np.float32)}
    with pytest.raises(ConfigError) as e:
        _check_finite(broken, "training (train)")
    assert str(e.value) == (
        "the exported model gives non-finite 'score' (NaN or infinity) on 2 of 4 training "
        "(train) rows (the first: row 1); it cannot serve. Check the run (its loss, its "
        "weights) and export a good step"
    )
    # The drift reference's rows (held out of training) are named by their own row numbers.
    with pytest.raises(ConfigError, match=r"on 2 of 4 held-out \(validation\) rows \(the first: "
                       r"row 30\)"):  # fmt: skip
        _check_finite(broken, "held-out (validation)", np.array([10, 30, 50, 70]))


def test_the_agreement_check_allows_an_accelerators_precision_and_no_more():
    """Export checks its graph against the training code on the device it runs on: on a GPU
    (TF32 matmuls by default) or TPU two compilations agree to ~1e-3, not the CPU's 1e-5; a
    wrong graph (a difference of 0.1) is refused on every platform."""
    from ann.export import _check_agrees

    x = {"x": np.linspace(0.1, 1.0, 8, dtype=np.float32)}

    def infer(weights, inputs):
        return {"y": inputs["x"] * weights["w"]}

    weights = {"w": np.float32(1.0)}
    for offset, platforms_that_agree in ((4e-4, {"gpu", "tpu"}), (0.1, set())):
        got = {"y": x["x"] + np.float32(offset)}
        for platform in ("cpu", "gpu", "tpu"):
            if platform in platforms_that_agree:
                _check_agrees(infer, weights, x, got, platform)
            else:
                with pytest.raises(AssertionError, match="'y' differs"):
                    _check_agrees(infer, weights, x, got, platform)


def test_a_categorical_inputs_reference_statistics_are_its_category_shares():
    """The pydoc LM's manifest held per-position mean and std of token ids (`tokens`: mean
    59.2, ...), which mean nothing for categories; a categorical input (integer, with names)
    gets its category distribution and counts over all positions, padding excluded, as drift
    compares it, and a padded categorical output the same."""
    from ann.export import reference_statistics
    from experiments.common import spec

    tokens = np.array([[1, 2, 2, 0], [3, 1, 0, 0]], np.int32)
    signature = {"tokens": spec("int32", [4], ["<pad>", "a", "b", "c"], 0)}
    outputs = {"next": tokens, "p": np.full((2, 4), 0.25, np.float32)}
    out_spec = {"next": spec("int32", [4], ["<pad>", "a", "b", "c"], 0), "p": spec("float32", [4])}
    stats = reference_statistics({"tokens": tokens}, outputs, out_spec, signature)
    want = {"rows": 2, "distribution": [0.0, 0.4, 0.4, 0.2], "counts": [0, 2, 2, 1]}
    assert stats["inputs"]["tokens"] == want
    assert stats["outputs"]["next"] == want
    assert "mean" in stats["outputs"]["p"]  # a float output: per-value statistics still
    numeric = reference_statistics({"tokens": tokens.astype(np.float32)}, {}, {})
    assert "mean" in numeric["inputs"]["tokens"]  # no signature: numbers, as before


def test_two_exports_to_one_new_out_at_once_refuse_the_second_in_one_line(
    digits_export, tmp_path, monkeypatch
):
    """`ann export --out=X & ann export --out=X`: both found X new, and the second's rename
    failed with a traceback ending "OSError: [Errno 39] Directory not empty". It is now the line
    a second export to an existing --out gets, and nothing of it is left."""
    import os

    from ann import export as export_lib
    from ann.cli import FlagError

    _, out = digits_export
    manifest = artifact.read_manifest(str(out))
    function = (out / artifact.FUNCTION).read_bytes()
    weights = artifact.load_weights(str(out))
    target = tmp_path / "same"
    real_rename = os.rename

    def rename(src, dst):  # the other export renames its own into place first
        if dst == str(target) and not target.exists():
            shutil.copytree(out, target)
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(FlagError) as e:
        export_lib.write(str(target), dict(manifest), function, weights)
    assert str(e.value) == (
        f"--out={target} holds an export (manifest.json); choose another --out"
    ), str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same"]  # no temporary left


def test_a_killed_exports_staging_directory_is_removed_by_the_next(digits_export, tmp_path):
    """`kill -9` of an export while it wrote left its hidden .export-* directory beside --out,
    and nothing removed it. The next export there removes it; a live export's is kept."""
    import os

    from ann import export as export_lib

    _, out = digits_export
    manifest = artifact.read_manifest(str(out))
    function = (out / artifact.FUNCTION).read_bytes()
    weights = artifact.load_weights(str(out))
    stale = tmp_path / ".export-killed_1"
    stale.mkdir()
    (stale / "weights.safetensors").write_bytes(b"x")
    old = os.path.getmtime(stale) - 3600
    os.utime(stale, (old, old))
    export_lib.write(str(tmp_path / "next"), dict(manifest), function, weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["next"]


def test_export_from_python_checks_its_arguments_as_ann_export_does(digits_export, tmp_path):
    """`ann.export.export` skipped every check of `ann export`'s flags: calibration="platt"
    wrote an export whose manifest said platt and served uncalibrated probabilities; an `out`
    inside the run's checkpoints/ or in another export was written; step="bestt" was int()'s
    ValueError, 1.5 was read as 1, platforms="cpu" as c, p, u. Now one check, in the
    function's words, and nothing is written."""
    workdir, other = digits_export
    new = str(tmp_path / "new")
    refused = [
        ({"calibration": "platt"}, "calibration='platt' must be one of temperature, none"),
        # A str, quoted: `calibration=None must be ...` read as if None were refused.
        ({"calibration": "None"}, "calibration='None' must be one of temperature, none"),
        ({"out": f"{workdir}/checkpoints/x"}, f"out={workdir}/checkpoints/x is inside"),
        ({"out": f"{other}/sub"}, f"out={other}/sub is inside an export at {other}"),
        ({"out": str(workdir)}, f"out={workdir} holds a training run"),
        ({"name": "bad name/x"}, "name='bad name/x' must be letters, digits"),
        ({"step": "bestt"}, "step='bestt' must be 'best', 'latest' or a step number"),
        ({"step": -1}, "step='-1' must be 'best', 'latest' or a step number"),
        ({"step": 7}, f"step=7: no checkpoint step 7 in {workdir}/checkpoints"),
        ({"platforms": ("gpu",)}, "a GPU is 'cuda' (NVIDIA) or 'rocm' (AMD)"),
        ({"platforms": ()}, "platforms='' must be distinct names among cpu, cuda"),
        ({"workdir": str(tmp_path / "nope")}, f"workdir={tmp_path / 'nope'} does not exist"),
    ]
    for change, message in refused:
        arguments = {"workdir": str(workdir), "out": new, **change}
        with pytest.raises(ValueError) as e:
            export(**arguments)
        assert message in str(e.value) and "--" not in str(e.value), (change, str(e.value))
    wrong_types = [
        ({"workdir": None}, "workdir: expected a training run's directory"),
        ({"out": None}, "out: expected a new directory"),
        ({"step": 1.5}, "step: expected 'best', 'latest' or a step number"),
        ({"platforms": "cpu"}, "platforms: expected a sequence of platform names"),
        ({"name": 3}, "name: expected a str or None, got int"),
    ]
    for change, message in wrong_types:
        with pytest.raises(TypeError, match=message):
            export(**{"workdir": str(workdir), "out": new, **change})
    assert not list(tmp_path.iterdir()) and not (workdir / "checkpoints/x").exists()
    assert not (other / "sub").exists()
