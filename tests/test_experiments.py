"""Every experiment through the same checks: found by name, refuses a bad task setting by its
key in one line, trains a step and evaluates it, exports what training computes (the exported
`predict` equals the in-process one on the same inputs), and `ann report` reads the run (one
tiny run per family serves all three). What is specific to one task lives in its own test file."""

import json
import math
import sys
import types

import jax
import numpy as np
import pytest
import report_doc
from conftest import importable, tiny
from flax import nnx

from ann import artifact, data
from ann import experiment as experiment_lib
from ann.config import ConfigError
from ann.export import export
from ann.train.build import restore_model
from ann.train.loop import train_and_evaluate

_SMALL_TRANSFORMER = {"model.dim": 16, "model.mlp_dim": 32}
# experiment -> (shipped config, overrides for a tiny model, eval metrics it must report, a bad
# task setting: key and value). Two steps: a checkpoint and an eval at step 2.
CASES = {
    "classification": (
        "digits_mlp",
        {"model.features": (16,)},
        {"loss", "accuracy", "f1", "auroc"},
        ("task.smoothing", 0.1),  # it reads no task settings
    ),
    "regression": (
        "diabetes_mlp",
        {"num_epochs": None, "model.features": (16,)},
        {"loss", "rmse", "mae", "r2", "baseline_rmse", "rmse_ratio"},
        ("task.huber_delta", 0.0),
    ),
    "forecasting": (
        "sensors_lstm",
        {"model.hidden_size": 8},
        {"loss", "mae", "rmse", "naive_mae", "naive_rmse", "mae_ratio"},
        ("task.period", -1),
    ),
    "anomaly_detection": (
        "sensors_autoencoder",
        {"model.features": (16,), "model.latent": 4},
        {"auroc", "loss", "threshold", "precision", "recall", "f1", "flagged"},
        ("task.threshold_quantile", 1.0),
    ),
    "retrieval": (
        "digits_retrieval",
        {"model.encoder_kwargs.features": (8,), "model.encoder_kwargs.dense": 32},
        {"loss", "recall_at_1", "recall_at_5", "map"},
        ("task.temperature", 0.0),
    ),
    "language_modelling": (
        "pydoc_lm",
        {**_SMALL_TRANSFORMER, "model.depth": 1},
        {"loss", "bits_per_char", "perplexity", "accuracy", "unigram_bits_per_char"},
        ("task.temperature", 1.0),  # it reads no task settings
    ),
    "seq2seq": (
        "digit_seq2seq",
        # Beam search in eval too: its exact match is reported next to greedy's.
        {
            **_SMALL_TRANSFORMER,
            "model.encoder_depth": 1,
            "model.decoder_depth": 1,
            "task.eval_beam_size": 2,
            # A seed whose barely trained model writes answers that read differently turned
            # around (seed 0's wrote 7777777777): the reading-order test needs one.
            "seed": 2,
        },
        {"loss", "token_accuracy", "exact_match", "beam_exact_match", "beam_exact_match_add"},
        ("task.eval_beam_size", -1),
    ),
}


# The report's slices of each family's run (`ann report` below); a language model's report
# scores 4 windows, each character a forward pass (the default 32 would take most of the test).
REPORT = {
    "classification": {"report.slices": ("label", "field:writer_group")},
    "regression": {"report.slices": ("feature:features[2]:quantiles=4",)},
    "forecasting": {},
    # Not `label`: each label slice holds one class, where AUROC is undefined (refused).
    "anomaly_detection": {"report.slices": ("feature:window[0,0]:quantiles=4",)},
    "retrieval": {"report.slices": ("label",)},
    "seq2seq": {"report.slices": ("field:task",)},
    "language_modelling": {"report.lm_rows": 4},
}


def _config(name, **overrides):
    config_name, small, _, _ = CASES[name]
    steps = {"total_steps": 2, "eval_every_steps": 2, "checkpoint_every_steps": 2}
    config = tiny(config_name, **{**steps, **small, **REPORT[name], **overrides})
    assert config.experiment == name
    return config


def test_the_table_names_every_case():
    assert set(CASES) == set(experiment_lib.EXPERIMENTS) == set(REPORT)


@pytest.fixture(scope="module", params=sorted(CASES))
def trained(request, tmp_path_factory):
    """(name, workdir, result, export directory, manifest) of a two-step run and its export."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    result = train_and_evaluate(_config(name), str(root / "run"))
    manifest = export(str(root / "run"), str(root / "export"))
    return name, root / "run", result, root / "export", manifest


def test_trains_and_evaluates(trained):
    name, _, result, _, _ = trained
    assert result.step == 2
    metrics = {k.removeprefix("eval/"): v for k, v in result.eval_metrics.items()}
    assert CASES[name][2] <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values()), metrics


def test_export_predicts_as_the_training_code(trained):
    name, workdir, _, out, manifest = trained
    experiment, model, step, config = restore_model(str(workdir), "best")
    assert step == 2
    # A classifier's export divides its logits by the temperature fitted at export.
    assert ("calibration" in manifest) == (name == "classification")
    if "calibration" in manifest:
        experiment.temperature = manifest["calibration"]["temperature"]
    split = data.load(config.data.name, config.data.train_split, cache=True)
    inputs = {k: v for k, v in split.rows(np.arange(5)).items() if k in manifest["inputs"]}
    assert set(inputs) == set(manifest["inputs"])
    got = artifact.load(str(out))(inputs)
    # Jitted as `ann report` runs it: eagerly, a decoder compiles each of its ops on its own.
    want = jax.device_get(nnx.jit(experiment.predict)(model, inputs))
    assert set(got) == set(want) == set(manifest["outputs"])
    for key in want:
        if np.issubdtype(want[key].dtype, np.integer):
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        else:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5, err_msg=key)


def _framed(spec: dict) -> list[int]:
    """Three ids a token input takes as a row's start: seq2seq's framing (a task word, a
    digit, <eos>) where the manifest states one, else three of a token."""
    framing = spec.get("framing")
    if framing is None:
        return [1, 1, 1]
    return [framing["task_ids"][0], spec["names"].index("1"), framing["eos_id"]]


def test_a_token_model_export_names_its_vocabulary_and_refuses_ids_outside_it(trained):
    """The manifest names the vocabulary a token model's integer inputs (and seq2seq's output)
    index, and the loader refuses ids outside it: one past it gave NaN probabilities (an LM)
    or garbage (seq2seq) without an error."""
    name, _, _, out, manifest = trained
    indexed = {k: v["names"] for k, v in manifest["inputs"].items() if "names" in v}
    assert bool(indexed) == (name in ("language_modelling", "seq2seq")), indexed
    if name == "seq2seq":
        assert manifest["outputs"]["tokens"]["names"] == indexed["source"]
    model = artifact.load(str(out))
    for key, names in indexed.items():
        assert names[0] == "<pad>" and len(set(names)) == len(names)
        ids = np.zeros([2, *manifest["inputs"][key]["shape"][1:]], np.int32)
        ids[:, :3] = _framed(manifest["inputs"][key])  # tokens, then padding
        model.check({key: ids})
        ids[1, 3] = len(names)
        with pytest.raises(ValueError) as e:
            model.check({key: ids})
        assert str(e.value) == (
            f"input {key!r}: expected int32 values in [0, {len(names) - 1}] (ids of its "
            f"{len(names)} names: the manifest's inputs.{key}.names), got {len(names)} at flat "
            f"index {ids.shape[1] + 3}"
        )


def test_a_token_model_export_states_its_padding_and_refuses_rows_that_break_it(trained):
    """The manifest states the right padding a token input takes (`padding`: id 0, right);
    the loader refuses a pad before a token (a language model answered for the wrong position)
    and a row of pads alone (seq2seq decoded tokens from nothing), as the server does; a
    prompt of the wrong length is told how to pad."""
    name, _, _, out, manifest = trained
    padded = {k: v["padding"] for k, v in manifest["inputs"].items() if "padding" in v}
    key = {"language_modelling": "tokens", "seq2seq": "source"}.get(name)
    assert padded == ({key: {"id": 0, "side": "right"}} if key else {}), padded
    if key is None:
        return
    model = artifact.load(str(out))
    width = manifest["inputs"][key]["shape"][1]
    ids = np.zeros([2, width], np.int32)
    ids[:, :3] = _framed(manifest["inputs"][key])
    assert model({key: ids})  # tokens first, then pads
    # Rows padded right but int64 (NumPy's default) are told to convert, not to pad (an LM's
    # `tokens` was told "pad each row on the right with id 0 ..." in a trial).
    with pytest.raises(ValueError) as e:
        model({key: ids.astype(np.int64)})
    assert str(e.value) == (
        f"input {key!r} must be int32[-1, {width}] (-1: any batch), got int64[2, {width}]; "
        'convert it with .astype("int32")'
    )
    # Zero rows give empty outputs (the row of zeros run in their place was refused as padding).
    empty = model({key: ids[:0]})
    assert set(empty) == set(manifest["outputs"]) and all(len(v) == 0 for v in empty.values())
    ids[1] = 0
    ids[1, 3] = 1  # pads before a token
    with pytest.raises(ValueError) as e:
        model({key: ids})
    assert str(e.value) == (
        f"input {key!r}: row 1 has the pad id 0 at position 0, before a token at position 3; "
        "pad on the right only (the tokens first, then 0s): the model reads a row up to its "
        "first pad"
    )
    ids[1] = 0
    with pytest.raises(ValueError, match=r"row 1 is only padding \(id 0\): nothing to answer"):
        model({key: ids})
    with pytest.raises(ValueError) as e:
        model({key: np.ones([1, 11], np.int32)})
    assert str(e.value).endswith(
        f"got int32[1, 11]; pad each row on the right with id 0 to {width} tokens (the tokens, "
        "then 0s)"
    )


def test_an_export_refuses_non_finite_float_inputs_in_the_servers_words(trained):
    """A NaN or an infinity in a float input is refused in one line naming the input and where,
    as the server refuses it (`artifact.finite_fault`): the loader gave NaN probabilities and
    a confident label (argmax's 0) for it (a fresh-user trial, a breast-cancer MLP)."""
    name, _, _, out, manifest = trained
    floats = [k for k, v in manifest["inputs"].items() if np.dtype(v["dtype"]).kind == "f"]
    assert bool(floats) == (name in ("regression", "forecasting", "anomaly_detection")), floats
    if not floats:
        return
    model = artifact.load(str(out))
    rows = {k: v[:2] for k, v in artifact.load_reference(str(out), manifest)["inputs"].items()}
    model(rows)
    key = floats[0]
    for value in (np.nan, np.inf, -np.inf):
        bad = {k: v.copy() for k, v in rows.items()}
        bad[key].reshape(-1)[3] = value
        with pytest.raises(ValueError) as e:
            model(bad)
        assert str(e.value) == (
            f"input {key!r}: expected finite {bad[key].dtype} values, got {value} at flat index 3"
        )


def test_a_seq2seq_export_refuses_ids_of_another_kind_in_one_line_with_the_fix(trained):
    """`artifact.load(...)` on a seq2seq export refuses ids outside the vocabulary, negative
    ids, rows of another length, another dtype or number of dimensions, and ragged lists in one
    line naming the input and the fix, the server's words where it has the same fault: an
    int64 array (NumPy's default for Python ints) was told how to pad, which was no fix, a row
    too long to be padded too, and ragged lists raised NumPy's own error naming no input."""
    from ann.serve import protocol
    from ann.serve.dataplane import ServedModel
    from ann.serve.errors import ServeError

    name, _, _, out, manifest = trained
    if name != "seq2seq":
        return
    spec = manifest["inputs"]["source"]
    size, width = len(spec["names"]), spec["shape"][1]
    good = _framed(spec) + [0] * (width - 3)
    model = artifact.load(str(out))
    served = ServedModel("s2s", "1", model, "test").inputs

    def served_refusal(rows: list) -> str:
        body = {"inputs": [{"name": "source", "shape": [len(rows), len(rows[0])],
                            "datatype": "INT32", "data": sum(rows, [])}]}  # fmt: skip
        with pytest.raises(ServeError) as e:
            protocol.decode_infer(json.dumps(body).encode(), served, {}, 8)
        return e.value.message

    must = f"input 'source' must be int32[-1, {width}] (-1: any batch), got "
    pad = f"; pad each row on the right with id 0 to {width} tokens (the tokens, then 0s)"
    long = f"; each row holds at most {width} tokens, then pads (id 0): a longer one does not fit"
    ids = f"values in [0, {size - 1}] (ids of its {size} names: "
    with np.errstate(invalid="ignore"):
        nan_cast = np.array([np.nan], np.float32).astype(np.int32)[0]  # the platform's
    for given, message, server in [
        (np.array([good[:3] + [size] + good[4:]], np.int32),
         f"input 'source': expected int32 {ids}the manifest's inputs.source.names), got {size} "
         "at flat index 3", f"inputs[0].data: expected INT32 {ids}the model metadata's labels), "
         f"got {size} at flat index 3"),
        (np.array([[-1] + good[1:]], np.int32),
         f"input 'source': expected int32 {ids}the manifest's inputs.source.names), got -1 at "
         "flat index 0", f"inputs[0].data: expected INT32 {ids}the model metadata's labels), "
         "got -1 at flat index 0"),
        (np.array([good[:11]], np.int32), f"{must}int32[1, 11]{pad}", pad),
        (np.array([good + [0]], np.int32), f"{must}int32[1, {width + 1}]{long} the model",
         long + " the model"),
        (np.array([good], np.int64), f'{must}int64[1, {width}]; convert it with .astype("int32")',
         None),
        ([good], f'{must}int64[1, {width}]; convert it with .astype("int32")', None),
        (np.array([good], np.float32),
         f'{must}float32[1, {width}]; convert it with .astype("int32")', None),
        # Ids that .astype would change are named, not told to convert: 2**32 + 1 became 1,
        # a valid row answered silently; NaN became -2147483648, 2.5 became 2.
        (np.array([good[:1] + [2**32 + good[1]] + good[2:]], np.int64),
         f"{must}int64[1, {width}]; expected int32 {ids}the manifest's inputs.source.names), got "
         f'{2**32 + good[1]} at flat index 1 (.astype("int32") would make it {good[1]}: fix the '
         "ids, not their type)", f"inputs[0].data: expected INT32 {ids}the model metadata's "
         f"labels), got {2**32 + good[1]} at flat index 1"),
        (np.array([good[:2] + [np.nan] + good[3:]], np.float32),
         f"{must}float32[1, {width}]; expected int32 {ids}the manifest's inputs.source.names), "
         f'got nan at flat index 2 (.astype("int32") would make it {nan_cast}: fix the ids, not '
         "their type)", None),
        (np.array([good[:2] + [2.5] + good[3:]], np.float64),
         f"{must}float64[1, {width}]; expected int32 {ids}the manifest's inputs.source.names), "
         'got 2.5 at flat index 2 (.astype("int32") would make it 2: fix the ids, not their '
         "type)", None),
        (np.array([[-1] + good[1:]], np.int64), f"{must}int64[1, {width}]; expected int32 {ids}"
         "the manifest's inputs.source.names), got -1 at flat index 0", None),
        (np.array(good, np.int32), f"{must}int32[{width}]; add the batch axis for a single row "
         "(x[None])", None),
        (np.array([[good]], np.int32), f"{must}int32[1, 1, {width}]; give 2 dimensions, the "
         "batch first", None),
        ([good, good[:5]], f"{must}nested lists of different lengths{pad}", None),
        (np.array([["reverse"] * width]), f"{must}<U7[1, {width}]; map each token to its id "
         "(its index in the manifest's inputs.source.names)", None),
    ]:  # fmt: skip
        with pytest.raises(ValueError) as e:
            model({"source": given})
        assert str(e.value) == message and "\n" not in message
        if server is not None:  # the same fault sent to `ann serve`: the same words
            assert served_refusal(np.asarray(given).tolist()).endswith(server)


def test_a_seq2seq_export_refuses_sources_not_framed_as_in_training(trained):
    """digit_strings frames a source `TASK digits [+ digits] <eos>`, then pads; the manifest
    records the ids that framing needs (`framing`, beside `padding` and `names`), and the
    loader and the server refuse a source framed otherwise, naming the row and the framing. A
    source sent as "its ids, then pads" (no <eos>) was answered with a wrong text (`reverse
    1 2 3 4 5` -> `3 4 3 2 1`), as were tokens after <eos>, a leading <bos>, no task word and
    <eos> alone."""
    from ann.serve import protocol
    from ann.serve.dataplane import ServedModel
    from ann.serve.errors import ServeError

    name, _, _, out, manifest = trained
    if name != "seq2seq":
        assert all("framing" not in v for v in manifest["inputs"].values())
        return
    spec = manifest["inputs"]["source"]
    index = {t: i for i, t in enumerate(spec["names"])}
    width = spec["shape"][1]

    def row(text: str) -> list[int]:
        ids = [index[t] for t in text.split()]
        return ids + [0] * (width - len(ids))

    good = [row("reverse 1 2 3 4 5 <eos>"), row("add 1 2 + 3 4 <eos>"), row("sort 9 <eos>")]
    model = artifact.load(str(out))
    assert model({"source": np.array(good, np.int32)})["tokens"].shape[0] == 3
    served_inputs = ServedModel("s2s", "1", model, "test").inputs  # what `ann serve` checks
    for bad, why in [
        ("reverse 1 2 3 4 5", "no <eos> (id 2) after its tokens"),
        ("reverse 1 2 <eos> 3", "tokens after <eos>, from position 4"),
        ("<bos> reverse 1 2 <eos>", "<bos> (id 1) at position 0"),
        ("5 <eos>", "it starts with 5 (id 8), not a task word"),
        ("<eos>", "it starts with <eos> (id 2), not a task word"),
        ("sort <eos>", "nothing between the task word and <eos>"),
    ]:
        batch = np.array([good[0], row(bad)], np.int32)
        with pytest.raises(ValueError) as e:
            model({"source": batch})
        message = str(e.value)
        assert message.startswith("input 'source': row 1: expected TASK TOKENS <eos> then pads: ")
        assert "a task word (reverse=14, sort=15, add=16)" in message
        assert message.endswith(f": {why}"), message
        body = {"inputs": [{"name": "source", "shape": [2, width], "datatype": "INT32",
                            "data": batch.ravel().tolist()}]}  # fmt: skip
        with pytest.raises(ServeError) as served:
            protocol.decode_infer(json.dumps(body).encode(), served_inputs, {}, 8)
        assert served.value.status == 400
        assert served.value.message.removeprefix("inputs[0].data: ") == message.removeprefix(
            "input 'source': "
        )
    assert {k: v for k, v in spec["framing"].items() if k != "sources"} == {
        "task_ids": [index["reverse"], index["sort"], index["add"]],
        "bos_id": index["<bos>"],
        "eos_id": index["<eos>"],
    }
    # An export written before `framing` was recorded loads, and is checked for padding only.
    older = {k: v for k, v in spec.items() if k != "framing"}
    old = artifact.Model(
        str(out), {**manifest, "inputs": {"source": older}}, model._exported, model.weights, ""
    )
    assert old.check({"source": np.array([row("reverse 1 2 3 4 5")], np.int32)}) == 1


def test_a_seq2seq_export_answers_in_reading_order_as_generate_does(trained, monkeypatch, capsys):
    """digit_strings' `add` is trained on sums written least-significant digit first. `ann
    generate` turned its answers around, the export did not: `artifact.load(...)` answered
    `add 12+34` with the ids of "63" where `ann generate --source="add 12+34"` printed 36, and
    the server sent the same reversed ids. The exported function turns them itself now
    (`Seq2Seq.reading_order` in `predict`), the manifest names the tasks it turns, and
    generate prints what the export answers, turned once."""
    from absl import flags

    from ann import decoding, generate

    name, workdir, _, out, manifest = trained
    if name != "seq2seq":
        return
    experiment, model, *_ = restore_model(str(workdir), "best")
    sources = ["add 12+34", "add 5+678", "add 1234+98", "add 7+7", "reverse 1234", "sort 3142"]
    rows = np.stack([experiment.encode_source(s) for s in sources])
    answers = artifact.load(str(out))({"source": rows})["tokens"]
    texts = [experiment.decode(row) for row in answers]
    # What the decoder writes, in training's order: an add's answer is the export's turned.
    greedy = jax.device_get(
        nnx.jit(
            lambda m, s: decoding.greedy(m, s, experiment.target_len, **experiment.decoding_ids)
        )(model, rows)
    )
    written = [experiment.decode(row) for row in greedy]
    for source, text, raw in zip(sources, texts, written):
        assert text == (raw[::-1] if source.startswith("add") else raw), source
    assert any(t != t[::-1] for s, t in zip(sources, texts) if s.startswith("add")), texts
    fv = flags.FlagValues()
    generate._define_flags(fv)
    monkeypatch.setattr(generate, "FLAGS", fv)
    for source, text in zip(sources, texts):
        fv.unparse_flags()
        fv(["generate", f"--workdir={workdir}", f"--source={source}"])
        generate.main(["generate"])
        printed = capsys.readouterr().out.strip().split("  ", 1)[1].strip()
        assert printed == (text or "(empty: <eos> first)"), source
    assert manifest["outputs"]["tokens"]["answers_turned"] == ["add"]


def test_the_report_of_an_export_that_did_not_turn_add_answers_turns_them(trained, tmp_path):
    """`ann report` compares the answers with the targets in reading order. An export written
    before the graph turned `add` answers (no `outputs.tokens.answers_turned`) answers least-
    significant digit first: `ann report --model` turns them (once); a current export's
    answers are taken as they come."""
    import shutil

    from ann.report import collect

    name, _, _, out, manifest = trained
    if name != "seq2seq":
        return
    old = tmp_path / "old"
    shutil.copytree(out, old)
    tokens = {k: v for k, v in manifest["outputs"]["tokens"].items() if k != "answers_turned"}
    written = {**manifest, "outputs": {**manifest["outputs"], "tokens": tokens}}
    (old / "manifest.json").write_text(json.dumps(written))
    now, before = collect.from_model(str(out)), collect.from_model(str(old))
    rows = np.stack([now.experiment.encode_source(s) for s in ("add 12+34", "add 5+678")])
    rows = np.concatenate([rows, np.repeat(rows[-1:], now.batch_size - 2, 0)])
    got = now.predict_batch({"source": rows})["tokens"]
    turned = np.asarray(now.experiment.reading_order(got, rows))
    assert (got != turned).any()  # non-palindromic answers: the test tells the two apart
    np.testing.assert_array_equal(before.predict_batch({"source": rows})["tokens"], turned)


def test_a_seq2seq_export_refuses_sources_of_a_shape_their_task_never_has(trained):
    """The manifest records what each task's sources look like in training (`framing.sources`:
    runs of tokens with their length ranges), and the loader, the server and `ann generate`
    refuse a framed source of another shape with the same words (`Framing.source_fault`):
    `reverse 1+2` (reverse is trained on digits only) was answered by the server while
    `ann generate` refused it. An export written before the record loads as before. The
    answers' ids are recorded too (`outputs.tokens.target_ids`: the training targets' ids)."""
    from ann.serve import protocol
    from ann.serve.dataplane import ServedModel
    from ann.serve.errors import ServeError

    name, workdir, _, out, manifest = trained
    if name != "seq2seq":
        return
    spec = manifest["inputs"]["source"]
    index = {t: i for i, t in enumerate(spec["names"])}
    digits = [index[d] for d in "0123456789"]
    assert manifest["outputs"]["tokens"]["target_ids"] == sorted([index["<eos>"], *digits])
    run = {"name": "DIGITS", "ids": digits, "min": 1, "max": 8}
    plus = {"name": "+", "ids": [index["+"]], "min": 1, "max": 1}
    assert spec["framing"]["sources"] == {
        "reverse": [[run]], "sort": [[run]], "add": [[run, plus, run]]
    }  # fmt: skip
    width = spec["shape"][1]

    def row(text: str) -> list[int]:
        ids = [index[t] for t in text.split()]
        return ids + [0] * (width - len(ids))

    good = [row("reverse 1 2 3 <eos>"), row("add 1 2 + 3 4 5 <eos>"), row("sort 9 <eos>")]
    model = artifact.load(str(out))
    assert model({"source": np.array(good, np.int32)})["tokens"].shape[0] == 3
    served_inputs = ServedModel("s2s", "1", model, "test").inputs
    experiment, *_ = restore_model(str(workdir), "best")  # what `ann generate` encodes with
    rule = "(DIGITS: 1 to 8 of 0 1 2 3 4 5 6 7 8 9) as in training"
    for text, source, got in [
        ("reverse 1 + 2", "reverse 1+2", "'reverse DIGITS+DIGITS'"),
        ("add 1 2", "add 12", "'add DIGITS'"),
        ("sort " + " ".join("123456789"), "sort 123456789",
         "'sort DIGITS' (9 tokens in DIGITS, not 1 to 8)"),
    ]:  # fmt: skip
        task = text.split()[0]
        trained = "'add DIGITS+DIGITS'" if task == "add" else f"'{task} DIGITS'"
        why = f"{task!r} sources are {trained} {rule}; got {got}"
        batch = np.array([good[0], row(text + " <eos>")], np.int32)
        real = [i for i in batch[1].tolist() if i]
        message = (
            f"input 'source': row 1: {why} in [{', '.join(map(str, real))}] then pads; send a "
            "source of that shape"
        )
        with pytest.raises(ValueError) as e:
            model({"source": batch})
        assert str(e.value) == message
        body = {"inputs": [{"name": "source", "shape": [2, width], "datatype": "INT32",
                            "data": batch.ravel().tolist()}]}  # fmt: skip
        with pytest.raises(ServeError) as served:
            protocol.decode_infer(json.dumps(body).encode(), served_inputs, {}, 8)
        assert served.value.status == 400 and served.value.reason == "framing"
        assert served.value.message == "inputs[0].data: " + message.removeprefix("input 'source': ")
        with pytest.raises(ValueError) as e:
            experiment.encode_source(source)
        assert str(e.value) == f"{why}; give a source of that shape"
    # An export written before `sources` was recorded loads, and is checked for framing only.
    older = {**spec, "framing": {k: v for k, v in spec["framing"].items() if k != "sources"}}
    old = artifact.Model(
        str(out), {**manifest, "inputs": {"source": older}}, model._exported, model.weights, ""
    )
    assert old.check({"source": np.array([row("reverse 1 + 2 <eos>")], np.int32)}) == 1


def test_ann_report_reads_the_run(trained, tmp_path):
    from ann.report import collect, write

    name, workdir, _, _, _ = trained
    out = tmp_path / "report"
    write.write_report(collect.from_workdir(str(workdir)), ["validation", "test"], str(out))
    report = json.loads((out / "report.json").read_text())
    slices = REPORT[name].get("report.slices", ())
    for split in ("validation", "test"):
        assert report["splits"][split]["sections"], (name, split)
        assert len(report["splits"][split]["slices"]) == len(slices)
        for result in report["splits"][split]["slices"].values():
            sizes = [s["size"] for s in result["slices"]]
            assert sum(sizes) == result["overall"]["size"]
    assert list(out.glob("*.png")) and (out / "index.html").exists()
    if name == "language_modelling":
        assert report["splits"]["test"]["sections"]["bits_per_char"]["rows"] == 4
    # docs/report.md documents every key, and lists none this family always writes that is gone.
    assert report_doc.undocumented(report) == []
    assert report_doc.missing(report) == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_bad_task_setting_is_one_line_naming_its_key(name):
    key, value = CASES[name][3]
    with pytest.raises(ConfigError) as error:
        experiment_lib.check_config(_config(name, **{key: value}), 4)
    message = str(error.value)
    assert f"'{key}'" in message and "\n" not in message


def test_every_name_in_the_table_imports_a_complete_experiment():
    for name in experiment_lib.EXPERIMENTS:
        cls = experiment_lib.get(name)
        assert all(hasattr(cls, m) for m in ("eval_rows", "eval_metrics", "tokens_per_example"))


def test_a_class_lacking_protocol_members_is_refused_by_name(monkeypatch):
    module = types.ModuleType("half_done_tasks")
    module.Half = type("Half", (), {"setup": lambda self, train: None})
    monkeypatch.setitem(sys.modules, "half_done_tasks", module)
    with pytest.raises(
        ConfigError, match=r"'half_done_tasks:Half' lacks tokens_per_example, .*eval_rows"
    ):
        experiment_lib.get("half_done_tasks:Half")


def test_a_protocol_method_set_to_something_else_is_refused_by_name(monkeypatch):
    # `predict = None` in a subclass passed, trained to the end, and failed in `ann export`
    # with "'NoneType' object is not callable" (trial 47a).
    from experiments.classification import Classification

    module = types.ModuleType("no_predict_tasks")
    module.NoPredict = type("NoPredict", (Classification,), {"predict": None})
    monkeypatch.setitem(sys.modules, "no_predict_tasks", module)
    with pytest.raises(ConfigError) as e:
        experiment_lib.get("no_predict_tasks:NoPredict")
    assert str(e.value) == (
        "config key 'experiment': 'no_predict_tasks:NoPredict' holds predict = None, where the "
        "experiment protocol (ann.experiment.Experiment) has a method: define it with def"
    )


def test_unknown_experiment_names_the_key_and_the_choices():
    with pytest.raises(
        ConfigError, match=r"config key 'experiment': unknown experiment 'regresion'"
    ):
        experiment_lib.check_config(tiny(experiment="regresion"), 4)


_importable = importable  # conftest's: a class of this file as a user's "module:Name"


class _VectorLoss(experiment_lib.get("classification")):
    def loss(self, model, batch, rng):  # per-row losses, not their mean
        loss, metrics = super().loss(model, batch, rng)
        return jax.numpy.full((3,), loss), metrics


class _ArrayMetric(experiment_lib.get("classification")):
    def loss(self, model, batch, rng):
        loss, metrics = super().loss(model, batch, rng)
        return loss, {**metrics, "per_row": jax.numpy.zeros(batch["targets"].shape)}


class _BareLoss(experiment_lib.get("classification")):
    def loss(self, model, batch, rng):  # the loss alone: "iteration over a 0-d array"
        return super().loss(model, batch, rng)[0]


class _SumsNotDict(experiment_lib.get("classification")):
    def eval_sums(self, model, batch):  # eval_metrics failed on it: "only integers, slices..."
        return super().eval_sums(model, batch)["loss"]


class _FieldsNotDict(experiment_lib.get("classification")):
    def fields(self, rows):  # "'numpy.ndarray' object is not a mapping"
        return rows["image"]


@pytest.mark.parametrize(
    "name, message",
    [
        ("_BareLoss", "experiment _BareLoss's loss returns one float32 array of shape []; it "
         "must return (loss, metrics)"),
        ("_SumsNotDict", "experiment _SumsNotDict's eval_sums returns an array; return "
         "{name: array}, each summed over the batch's rows where batch['mask'] is 1"),
        ("_FieldsNotDict", "experiment _FieldsNotDict's fields returns a ndarray; return "
         "{name: NumPy array}"),
        # JAX said "Gradient only defined for scalar-output functions. Output had shape: (3,)".
        ("_VectorLoss", "experiment _VectorLoss's loss returns float32 of shape [3] as its "
         "loss; it must be a float scalar (the batch's mean loss)"),
        ("_ArrayMetric", "experiment _ArrayMetric's loss returns metrics that are not a dict of "
         "scalars ('per_row' is not a scalar)"),
    ],
)  # fmt: skip
def test_a_loss_that_breaks_the_protocol_is_refused_before_step_0(
    tmp_path, monkeypatch, name, message
):
    experiment = _importable(monkeypatch, globals()[name])
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(tiny(experiment=experiment), str(tmp_path / "run"))
    assert message in str(e.value), str(e.value)
    assert not (tmp_path / "run").exists()


class _SumsVector(experiment_lib.get("classification")):
    def eval_sums(self, model, batch):  # a [3] loss: float() of it in eval_metrics, a traceback
        sums = super().eval_sums(model, batch)
        return {**sums, "loss": sums["loss"] * jax.numpy.ones(3)}


def test_an_eval_sum_of_another_shape_than_eval_metrics_reads_is_one_line(tmp_path, monkeypatch):
    experiment = _importable(monkeypatch, _SumsVector)
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(tiny(experiment=experiment), str(tmp_path / "run"))
    message = str(e.value)
    assert message.startswith(  # every sum not a scalar, by name
        "experiment _SumsVector's eval_sums returns 'confusion' of shape [10, 10], 'loss' of "
        "shape [3], and its eval_metrics fails (TypeError: "
    ), message
    # then NumPy's words, and the line of eval_metrics (in the experiment's file) it failed at
    assert "classification.py:" in message and "\n" not in message
    assert message.endswith(
        "each sum eval_metrics reads as a number must be a scalar, summed over the batch's rows "
        "where batch['mask'] is 1"
    )
    assert not (tmp_path / "run").exists()


class _WordMetric(experiment_lib.get("classification")):
    def eval_metrics(self, sums, rows=None):  # a grade in words: it failed after 10 steps
        return {**super().eval_metrics(sums, rows), "grade": "low"}


def test_an_eval_metric_that_is_not_a_number_is_refused_before_step_0(tmp_path, monkeypatch):
    experiment = _importable(monkeypatch, _WordMetric)
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(tiny(experiment=experiment), str(tmp_path / "run"))
    assert str(e.value) == (
        "experiment _WordMetric's eval_metrics gives 'grade' = 'low'; each metric must be a real "
        "number (a float or int, or a NumPy or JAX scalar; NaN where it is undefined)"
    )
    assert not (tmp_path / "run").exists()


class _SetupNoArg(experiment_lib.get("classification")):
    def setup(self):  # the split forgotten: "setup() takes 1 positional argument but 2 were given"
        pass


class _InitTakesNothing(experiment_lib.get("classification")):
    def __init__(self):
        pass


@pytest.mark.parametrize(
    "name, message",
    [
        ("_SetupNoArg", "experiment _SetupNoArg.setup cannot be called as ann calls it "
         "(_SetupNoArg.setup() takes 1 positional argument but 2 were given); it takes "
         "(self, train)"),
        ("_InitTakesNothing", "experiment _InitTakesNothing.__init__ cannot be called as ann "
         "calls it (_InitTakesNothing.__init__() takes 1 positional argument but 2 were "
         "given); it takes (self, config)"),
    ],
)  # fmt: skip
def test_an_experiment_method_of_the_wrong_signature_is_one_line(
    tmp_path, monkeypatch, name, message
):
    experiment = _importable(monkeypatch, globals()[name])
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(tiny(experiment=experiment), str(tmp_path / "run"))
    assert str(e.value) == message
    assert not (tmp_path / "run").exists()


class _RenamedInput(experiment_lib.get("classification")):
    def input_signature(self):  # predict reads "image": the export raised KeyError: 'img'
        return {"img": super().input_signature()["image"]}


class _NoInputs(experiment_lib.get("classification")):
    def input_signature(self):  # the export raised IndexError: list index out of range
        return {}


@pytest.mark.parametrize(
    "name, message",
    [
        ("_RenamedInput", "experiment _RenamedInput's input_signature() declares 'img', which "
         "data set 'digits' has no feature of (it has 'image', 'label', 'writer_group', "
         "'row_id'); name inputs by the data set's features"),
        ("_NoInputs", "experiment _NoInputs's input_signature() declares no inputs; declare "
         "each input predict reads, by the data set's feature name"),
    ],
)  # fmt: skip
def test_inputs_that_are_not_the_data_sets_are_one_line_before_training(
    tmp_path, monkeypatch, name, message
):
    # Found only at export, after the whole run, as a KeyError or IndexError traceback.
    experiment = _importable(monkeypatch, globals()[name])
    config = tiny(experiment=experiment, total_steps=2, eval_every_steps=2)
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(config, str(tmp_path / "run"))
    assert str(e.value) == message
    assert not (tmp_path / "run").exists()


def test_a_report_of_an_export_says_no_softmax_for_a_model_without_class_logits(trained):
    # A regression export's report said "serves softmax(logits) (calibration: none)" and
    # recorded model.calibration {"method": null, ...}: "an export made before calibration".
    from ann.calibrate import calibratable
    from ann.report import collect, write

    name, _, _, export_dir, manifest = trained
    source = collect.from_model(str(export_dir))
    report = {
        "model": source.identity,
        "prediction_variance": {"max_abs_diff": 0.0, "runs": 2, "rows": 1},
        "data": {"name": "d", "splits": {}},
        "experiment": name,
    }
    said = "\n".join(write.header(report))
    if calibratable(source.experiment):
        assert source.identity["calibration"]["method"] == manifest["calibration"]["method"]
        assert "serves softmax(logits" in said
    else:
        assert "calibration" not in source.identity, name
        assert "softmax" not in said and "calibration" not in said
