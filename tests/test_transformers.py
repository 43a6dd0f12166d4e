"""Transformer family: ViT, causal LM and seq2seq; attention masks; decoding; their data sets."""

import json
import math
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, fill, one_line_error, tiny
from flax import nnx

from ann import data, decoding, generate, models
from ann.config import ConfigError
from ann.data import digit_strings, pydoc_chars
from ann.models import transformer
from ann.train.loop import train_and_evaluate

SMALL = {"dim": 32, "num_heads": 2, "mlp_dim": 64}


def build(name, dtype=jnp.float32, **kw):
    supplied = {
        "vit": dict(input_shape=(8, 8, 1), num_classes=10),
        "causal_lm": dict(vocab_size=20),
        "seq2seq": dict(vocab_size=20, max_len=12, pad_id=0),
    }[name]
    depth = {"seq2seq": {"encoder_depth": 1, "decoder_depth": 1}}.get(name, {"depth": 1})
    return models.build(
        name, {**SMALL, **depth, "dtype": dtype, **kw}, **supplied, rngs=nnx.Rngs(0)
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_models_run_in_dtype_with_float32_params(dtype):
    tokens = jnp.ones((2, 7), jnp.int32)
    outs = {
        "vit": build("vit", dtype)(jnp.ones((2, 8, 8, 1))),
        "causal_lm": build("causal_lm", dtype)(tokens),
        "seq2seq": build("seq2seq", dtype)(tokens, tokens),
    }
    for name, out in outs.items():
        assert out.dtype == dtype, name
        assert bool(jnp.isfinite(out.astype(jnp.float32)).all()), name
    params = nnx.state(build("vit", dtype), nnx.Param)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    assert outs["causal_lm"].shape == (2, 7, 20) and outs["vit"].shape == (2, 10)


def test_padding_mask_hides_padded_keys():
    stack = transformer.Stack(2, 16, num_heads=2, mlp_dim=32, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 16))
    valid = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], bool)
    mask = transformer.padding_mask(valid)
    noisy = jnp.where(
        valid[..., None], x, 100.0 * jax.random.normal(jax.random.PRNGKey(1), x.shape)
    )
    a, b = stack(x, mask=mask), stack(noisy, mask=mask)
    np.testing.assert_allclose(a[valid], b[valid], atol=1e-5)
    assert not np.allclose(stack(x)[valid], stack(noisy)[valid], atol=1e-3)  # unmasked: leaks


def test_causal_lm_ignores_later_and_padding_tokens():
    model = build("causal_lm")
    tokens = jnp.array([[3, 4, 5, 6, 7, 8]])
    changed = tokens.at[0, 4:].set(jnp.array([0, 0]))  # future tokens -> padding
    a, b = model(tokens), model(changed, valid=changed != 0)
    np.testing.assert_allclose(a[0, :4], b[0, :4], atol=1e-5)
    assert not np.allclose(a[0, 4:], b[0, 4:], atol=1e-3)


@pytest.mark.parametrize("attention", ["xla", "einsum-remat", "xla-remat"])
def test_causal_lm_attention_and_remat_match_the_spelled_out_masks(attention):
    """jax.nn.dot_product_attention told "causal, right padding" (and remat) computes what the
    explicit masks do: same logits at real tokens, same gradients."""
    tokens = jnp.array(np.random.default_rng(0).integers(1, 20, (3, 9)), jnp.int32)
    tokens = tokens.at[1, 6:].set(0).at[2, 3:].set(0)  # right padding
    valid = tokens != 0
    impl, _, remat = attention.partition("-")

    def loss(model):
        return (model(tokens, valid=valid) * valid[..., None]).sum()

    def run(**kw):
        model = build("causal_lm", depth=2, **kw)
        value, grads = nnx.value_and_grad(loss)(model)
        return value, jax.tree.leaves(nnx.state(grads))

    base, base_grads = run()
    value, grads = run(attention=impl, remat=bool(remat))
    assert float(value) == pytest.approx(float(base), rel=1e-5)
    for g, b in zip(grads, base_grads, strict=True):
        np.testing.assert_allclose(g, b, atol=2e-4)
    if remat:  # the blocks are really recomputed: jax.checkpoint (remat) in the program
        model = build("causal_lm", depth=2, attention=impl, remat=True)
        assert "remat" in str(jax.make_jaxpr(nnx.grad(loss))(model))


def test_attention_choices_are_checked():
    with pytest.raises(ConfigError, match="'model.attention' is 'flash'; choose one of einsum, x"):
        build("causal_lm", attention="flash")
    with pytest.raises(ValueError, match="no attention dropout"):
        build("causal_lm", attention="xla", dropout=0.1)
    # cudnn off a GPU: one line before the model is built (a traceback from tracing, "cuDNN is
    # not detected", and a failed run left behind).
    from ann import models

    if jax.default_backend() != "gpu":
        config = tiny("pydoc_lm", **{"model.attention": "cudnn"})
        with pytest.raises(ConfigError, match="'model.attention'='cudnn' needs an NVIDIA GPU"):
            models.from_config(config, vocab_size=8, max_len=16, pad_id=0, rngs=nnx.Rngs(0))


@pytest.mark.slow
def test_bench_lm_tiny_reports_tokens_and_model_flops(tmp_path):
    """scripts/bench_lm.py (the GPU LM benchmark) at its CPU size: tokens/s, the PaLM FLOPs."""
    out = tmp_path / "lm.json"
    cmd = [sys.executable, "scripts/bench_lm.py", "--size=tiny", "--warmup=1", "--steps=2"]
    proc = subprocess.run(
        [*cmd, f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tokens/s" in proc.stdout and "MFU: n/a" in proc.stdout  # no peak for a CPU
    r = json.loads(out.read_text())
    assert r["tokens_per_sec"] > 0 and r["tokens_per_step"] == r["batch"] * r["seq"]
    attention = 12 * r["depth"] * r["dim"] * r["seq"]  # 12 L H Q T with H Q = dim
    assert r["flops_per_token"] == 6 * r["num_params"] + attention
    assert r["attention"] == "xla" and r["dtype"] == "bfloat16" and r["mfu"] is None
    assert math.isfinite(r["last_loss"])


DIGIT_IDS = tuple(range(3, 13))  # digit_strings' '0'..'9'


@pytest.mark.parametrize("positions", ["learned", "rope", "digits"])
def test_seq2seq_masks_source_padding_and_future_targets(positions):
    model = build("seq2seq", positions=positions, digit_ids=DIGIT_IDS)
    source = jnp.array([[5, 6, 7, 2, 0, 0]])
    target = jnp.array([[1, 7, 6, 5, 2, 0]])
    out = model(source, target)
    # Longer padding on the source, and other tokens after position 2 of the target.
    out2 = model(jnp.pad(source, ((0, 0), (0, 4))), target.at[0, 3:].set(9))
    np.testing.assert_allclose(out[0, :3], out2[0, :3], atol=1e-5)
    assert not np.allclose(out[0, 3:], out2[0, 3:], atol=1e-3)


def test_rope_attention_depends_on_relative_position_only():
    q = jax.random.normal(jax.random.PRNGKey(0), (1, 1, 1, 8))
    k = jax.random.normal(jax.random.PRNGKey(1), (1, 1, 1, 8))

    def score(pq, pk):
        a = transformer.rope(q, jnp.array([pq]))
        b = transformer.rope(k, jnp.array([pk]))
        return float((a * b).sum())

    assert score(3, 1) == pytest.approx(score(10, 8), abs=1e-4)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)


def test_seq2seq_place_values_count_from_each_numbers_last_digit():
    vocab = {t: i for i, t in enumerate(digit_strings.VOCABULARY)}
    ids = [[vocab[t] for t in row] for row in (["reverse", *"123", "<eos>", "<pad>"],)]
    ids += [[vocab[t] for t in ["add", *"45", "+", *"6", "<eos>"]]]
    from ann.models.seq2seq import place_values

    places = place_values(jnp.array(ids), DIGIT_IDS)
    assert places.tolist() == [[-1, 2, 1, 0, -1, -1], [-1, 1, 0, -1, 0, -1]]


def test_seq2seq_source_positions_and_config_errors():
    source = jnp.array([[13, 5, 5, 2, 0], [13, 5, 5, 5, 2]])  # '+ 2 2 <eos>', '+ 2 2 2 <eos>'
    rope = build("seq2seq", positions="rope").source_positions(source)
    assert rope.tolist() == [[0, 1, 2, 3, 4]] * 2
    digits = build("seq2seq", positions="digits", digit_ids=DIGIT_IDS).source_positions(source)
    assert digits.tolist() == [[-1, 1, 0, -1, -1], [-1, 2, 1, 0, -1]]
    with pytest.raises(ConfigError, match="model.positions"):
        build("seq2seq", positions="digits")  # no digit ids in the vocabulary
    with pytest.raises(ConfigError, match="model.positions"):
        build("seq2seq", positions="absolute")


@pytest.mark.parametrize("positions", ["learned", "digits"])
def test_seq2seq_greedy_and_beam_decoding_agree(positions):
    model = build("seq2seq", positions=positions, digit_ids=DIGIT_IDS)
    model.eval()
    source = jnp.array([[5, 6, 7, 2, 0, 0], [8, 9, 2, 0, 0, 0]])
    ids = dict(bos_id=1, eos_id=2, pad_id=0)
    greedy = nnx.jit(lambda m, s: decoding.greedy(m, s, 6, **ids))(model, source)
    beam = nnx.jit(
        lambda m, s, k: decoding.beam_search(m, s, 6, beam_size=k, **ids), static_argnums=2
    )
    beams, scores = beam(model, source, 1)
    np.testing.assert_array_equal(greedy, beams[:, 0])
    beams4, scores4 = beam(model, source, 4)
    assert bool((jnp.diff(scores4, axis=1) <= 1e-6).all())  # best first
    assert bool((scores4[:, 0] >= scores[:, 0] - 1e-5).all())  # never worse than greedy


def test_decoders_never_write_the_ids_that_frame_a_text():
    """<pad> and <bos> are never written where text goes (they were, then dropped from the
    printed text: an LM's 2,000 characters came out 1,981-1,986, and a beam's n-best list held
    the same text up to three times); the n-best texts differ; a finished beam writes <pad>."""
    pad, bos, eos, vocab = 0, 1, 2, 6

    class FavoursFraming:  # a seq2seq stand-in whose best next ids are always <pad>, then <bos>
        def encode(self, source):
            return jnp.zeros((source.shape[0], 1, 4)), jnp.ones((source.shape[0], 1), bool)

        def decode(self, tokens, memory, mask):
            t = tokens.shape[1]
            favoured = jnp.array([9.0, 8.0, 1.0, 3.0, 2.5, 2.0])  # pad, bos, eos, 3, 4, 5
            return jnp.broadcast_to(favoured, (tokens.shape[0], t, vocab))

    ids = dict(bos_id=bos, eos_id=eos, pad_id=pad)
    source = jnp.array([[3, 4, 2]])
    assert decoding.greedy(FavoursFraming(), source, 4, **ids)[0].tolist() == [3, 3, 3, 3]
    beams, scores = decoding.beam_search(FavoursFraming(), source, 3, beam_size=8, **ids)
    texts = []
    for row in beams[0].tolist():
        written = row[: row.index(eos) + 1] if eos in row else row
        assert pad not in written and bos not in written, row
        assert all(t == pad for t in row[len(written) :]), row
        texts.append(tuple(written))
    assert len(set(texts)) == len(texts) and bool(jnp.isfinite(scores).all())

    def favours_pad(t):  # a causal LM stand-in: <pad> the likeliest next id everywhere
        return jnp.broadcast_to(jnp.array([9.0, 0.0, 1.0, 1.0, 1.0, 1.0]), (*t.shape, vocab))

    prompt, rng = jnp.array([[3, 4]] * 4), jax.random.PRNGKey(0)
    free = decoding.sample(favours_pad, prompt, 50, rng, temperature=1.0)
    assert (free[:, 2:] == pad).any()  # without a ban the model's favourite is written
    for temperature, top_k in ((1.0, 0), (0.0, 0), (1.0, 2)):
        out = decoding.sample(favours_pad, prompt, 50, rng, temperature=temperature,
                              top_k=top_k, banned=(pad,))  # fmt: skip
        assert not (out[:, 2:] == pad).any(), (temperature, top_k)


@pytest.mark.parametrize(
    "temperature, top_p, written",
    [
        (1.0, 1.0, {0, 1, 2, 3}),  # off: every id
        (1.0, 0.7, {0, 1}),  # 0.5 + 0.3 reach 0.7
        (1.0, 0.85, {0, 1, 2}),  # 0.5 + 0.3 + 0.15
        (1.0, 0.0, {0}),  # the likeliest only: greedy
        # At temperature 2 the probabilities flatten to 0.38, 0.29, 0.21, 0.12: three ids
        # reach 0.7 (the nucleus is taken after the temperature, as Hugging Face does).
        (2.0, 0.7, {0, 1, 2}),
    ],
)
def test_nucleus_sampling_draws_from_the_fewest_ids_reaching_top_p(temperature, top_p, written):
    def fixed(t):  # a causal LM stand-in: the same next-id probabilities everywhere
        logits = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05]))
        return jnp.broadcast_to(logits, (*t.shape, 4))

    prompt = jnp.zeros((64, 1), jnp.int32)
    out = decoding.sample(
        fixed, prompt, 50, jax.random.PRNGKey(0), temperature=temperature, top_p=top_p
    )
    assert set(np.asarray(out[:, 1:]).ravel().tolist()) == written
    # From Python, a value outside the range: 1.5 sampled all ids, -0.1 greedily, unsaid.
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"top_p=.* must be in \[0, 1\]"):
            decoding.sample(fixed, prompt, 2, jax.random.PRNGKey(0), top_p=bad)


def test_sampling_greedy_top1_and_temperature_agree():
    lm = build("causal_lm")
    prompt = jnp.array([[3, 4, 5]])
    sample = nnx.jit(
        lambda m, p, r, t, k: decoding.sample(m, p, 5, r, temperature=t, top_k=k),
        static_argnums=(3, 4),
    )
    argmax = sample(lm, prompt, jax.random.PRNGKey(0), 0.0, 0)
    top1 = sample(lm, prompt, jax.random.PRNGKey(1), 1.0, 1)
    np.testing.assert_array_equal(argmax, top1)
    np.testing.assert_array_equal(argmax[:, :3], prompt)
    logits = lm(argmax)  # causal: position 2 + i predicts token 3 + i
    assert argmax[0, 3:].tolist() == logits[0, 2:7].argmax(-1).tolist()
    hot = sample(lm, jnp.repeat(prompt, 8, 0), jax.random.PRNGKey(2), 5.0, 0)
    assert len({tuple(r) for r in hot.tolist()}) > 1  # temperature samples differ
    # A top_k past the vocabulary keeps every id, as 0 does (lax.top_k raised a ValueError).
    wide = sample(lm, jnp.repeat(prompt, 8, 0), jax.random.PRNGKey(2), 5.0, 10**6)
    np.testing.assert_array_equal(wide, hot)
    # Written in several calls (`ann generate`'s chunks), the same ids as in one.
    rng, whole = (
        jax.random.PRNGKey(3),
        sample(lm, jnp.repeat(prompt, 2, 0), jax.random.PRNGKey(3), 0.8, 0),
    )
    tokens = jnp.concatenate([jnp.repeat(prompt, 2, 0), jnp.zeros((2, 5), prompt.dtype)], 1)
    for start, stop in ((3, 5), (5, 6), (6, 8)):
        tokens = decoding.sample_range(lm, tokens, start, stop, rng, 3, temperature=0.8)
    np.testing.assert_array_equal(tokens, whole)

    # A window: each id from the last `window` ids only. A causal stand-in whose logits at
    # position j favour (its context's first id + j) mod 16 shows which ids were read.
    def first_plus_position(t):
        return 10.0 * jax.nn.one_hot((t[:, :1] + jnp.arange(t.shape[1])) % 16, 16)

    start = jnp.array([[7, 1, 2]])
    ids = start[0].tolist()
    for _ in range(6):
        context = ids[-4:]
        ids.append((context[0] + len(context) - 1) % 16)
    cropped = decoding.sample(first_plus_position, start, 6, rng, temperature=0, window=4)
    assert cropped[0].tolist() == ids == [7, 1, 2, 9, 10, 4, 5, 12, 13]
    whole = decoding.sample(first_plus_position, start, 6, rng, temperature=0)
    assert whole[0].tolist() == [7, 1, 2, 9, 10, 11, 12, 13, 14]  # always from the 7


def test_pydoc_windows_cover_every_char():
    ids = np.arange(1, 300, dtype=np.int32)
    wins = list(pydoc_chars.windows(ids, 16))
    targets = np.concatenate([w[1:][w[1:] != 0] for w in wins])
    np.testing.assert_array_equal(targets, ids[1:])  # every char after the first: one target
    assert pydoc_chars.decode(pydoc_chars.encode("def f():\n")) == "def f():\n"


def test_pydoc_validation_is_the_end_of_every_training_file():
    # Version 1.2.0 held out ~20 whole files, 43% of whose text was one module's: validation
    # was no sample of the text. Now every tenth file is test, whole; every other file gives
    # its last docstrings, the fewest that reach 15% of its characters, to validation.
    docs = [(f"m{i}.py", ["a" * 50, "b" * 30, "c" * 10, "d" * 10]) for i in range(29)]
    docs.append(("one.py", ["e" * 100]))  # a single docstring stays whole in train
    split = pydoc_chars.split_documents(docs)
    assert [n for n, _ in split["test"]] == [f"m{i}.py" for i in range(0, 29, 10)]
    assert (
        split["test"][0][1]
        == "a" * 50 + "\n\n" + "b" * 30 + "\n\n" + "c" * 10 + "\n\n" + "d" * 10 + "\n"
    )
    kept = [n for n, _ in split["train"]]
    assert kept == [f"m{i}.py" for i in range(29) if i % 10] + ["one.py"]
    # 10 + 10 characters reach 15% of 100: the last two docstrings of each, as one text.
    tail = "c" * 10 + "\n\n" + "d" * 10
    assert split["validation"] == [("validation", "\n\n".join([tail] * 26) + "\n")]
    assert split["train"][0][1] == "a" * 50 + "\n\n" + "b" * 30 + "\n"
    assert split["train"][-1][1] == "e" * 100 + "\n"


def test_seq2seq_digit_strings_hold_out_lengths_inside_the_trained_range():
    from ann import experiment as experiment_lib

    splits = {s: data.load("digit_strings", s, cache=True) for s in ("train", "test", "test_seen")}
    lengths = {s: set(split.cached["length"].tolist()) for s, split in splits.items()}
    assert lengths["test"] == set(digit_strings.HELD_OUT)
    assert lengths["train"] == lengths["test_seen"] == set(range(1, 9)) - lengths["test"]
    # Interpolation: every held-out length has trained lengths on both sides.
    assert (
        min(lengths["train"]) < min(lengths["test"]) <= max(lengths["test"]) < max(lengths["train"])
    )
    for split in splits.values():  # 'length' is the real digit count of each source
        digits = np.isin(split.cached["source"], DIGIT_IDS).sum(-1)
        per_number = np.where(split.cached["task"] == 2, digits // 2, digits)
        np.testing.assert_array_equal(per_number, split.cached["length"])
    exp = experiment_lib.get("seq2seq")(tiny("digit_seq2seq"))
    exp.setup(splits["train"])
    assert exp.vocab.digit_ids() == DIGIT_IDS
    test = splits["test"].cached
    for i in range(30):
        source = digit_strings.decode(test["source"][i]).split(" ")
        task, arg = source[0], source[1]
        want = {"reverse": arg[::-1], "sort": "".join(sorted(arg))}.get(task)
        want = want or str(sum(int(x) for x in arg.split("+")))
        raw = digit_strings.decode(test["target"][i])
        # The sum is written least-significant digit first; decode with the task turns it back.
        assert raw == (want[::-1] if task == "add" else want)
        assert digit_strings.decode(test["target"][i], task=task) == want
        # In reading order (`reading_order`, as the export answers): add's sum turned back.
        turned = exp.reading_order(test["target"][i][None], test["source"][i][None])[0]
        assert exp.decode(turned) == want


def test_lm_eval_sums_ignore_padded_rows_and_tokens():
    from ann import experiment as experiment_lib

    config = tiny("pydoc_lm")
    exp = experiment_lib.get("language_modelling")(config)
    exp.setup(data.load("pydoc_chars", "train", cache=True))
    model = exp.build_model(nnx.Rngs(0))
    model.eval()
    tokens = jnp.array([[5, 6, 7, 8, 0, 0], [9, 9, 9, 9, 9, 9]], jnp.int32)
    both = exp.eval_sums(model, {"tokens": tokens, "mask": jnp.array([1.0, 0.0])})
    other = tokens.at[1].set(jnp.array([3, 4, 5, 6, 7, 8]))
    alone = exp.eval_sums(model, {"tokens": other, "mask": jnp.array([1.0, 0.0])})
    assert float(both["tokens"]) == 3  # 3 real targets in row 0; row 1 is padding
    np.testing.assert_allclose(float(both["nll"]), float(alone["nll"]), rtol=1e-6)


def _run(name, tmp_path, steps, **overrides):
    config = tiny(name, total_steps=steps, eval_every_steps=steps, **overrides)
    return train_and_evaluate(config, str(tmp_path))


def test_one_vit_step_runs(tmp_path):  # the token tasks run in test_experiments.py
    result = _run(
        "digits_vit", tmp_path, 1, **{"model.dim": 16, "model.mlp_dim": 32, "model.depth": 1}
    )
    assert result.step == 1
    assert math.isfinite(result.eval_metrics["eval/accuracy"])


def test_vit_learns(tmp_path):
    result = _run(
        "digits_vit", tmp_path, 150, batch_size=64, **{"model.depth": 1, "model.dropout": 0.0}
    )
    assert result.eval_metrics["eval/accuracy"] > 0.7


def test_lm_learns_below_unigram_and_generate_writes_past_its_window(tmp_path):
    import subprocess
    import sys

    result = _run("pydoc_lm", tmp_path, 80, **{"model.depth": 1, "model.dim": 32})
    m = result.eval_metrics
    assert m["eval/bits_per_char"] < m["eval/unigram_bits_per_char"] - 0.3
    assert m["eval/perplexity"] == pytest.approx(2 ** m["eval/bits_per_char"], rel=1e-6)
    # ann generate's warning (a prompt outside the vocabulary) is a plain `warning: ...` line,
    # as ann's others; it carried absl's "W1202 ...]". Past the 128-character windows the model
    # reads the last 128, in calls of 256 (it read everything: 100,000 ids asked for 330 GB).
    result = subprocess.run(
        [sys.executable, "-m", "ann.generate", f"--workdir={tmp_path}", "--step=latest",
         "--prompt=café", "--num_tokens=600", "--temperature=0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if "warning" in line.lower()]
    assert warnings == [
        "warning: --prompt has characters outside the run's vocabulary ('é'): each is read as "
        "<unk> and printed as \ufffd",
    ], result.stderr[-2000:]
    assert result.stdout.endswith("\n") and "-" * 40 not in result.stdout  # one sample
    text = result.stdout[:-1]
    assert text.startswith("caf\ufffd") and len(text) == 4 + 600, (len(text), text[-200:])
    # The same from Python, returned, not printed: ann generate had no function (trial 48a).
    [again] = generate.generate(tmp_path, "café", num_tokens=600, temperature=0, step="latest")
    assert again == text
    samples = generate.generate(tmp_path, "Return ", num_tokens=np.int64(30), num_samples=3, seed=1)
    assert len(samples) == 3 and all(t.startswith("Return ") and len(t) == 37 for t in samples)
    for kwargs, error, message in [
        ({"num_tokens": 0}, ValueError, "num_tokens=0 must be an integer in [1, 1000000]; e.g. "
         "num_tokens=200"),
        ({"num_tokens": 2.5}, TypeError, "num_tokens: expected int, got float"),
        ({"beam_size": 3}, ValueError, "beam_size is not for language_modelling runs; drop it"),
    ]:  # fmt: skip
        with pytest.raises(error) as e:
            generate.generate(tmp_path, **kwargs)
        assert str(e.value) == message


def test_seq2seq_learns_held_out_lengths(tmp_path):
    # The shipped model on a small budget, scored on the held-out lengths only.
    result = _run(
        "digit_seq2seq",
        tmp_path,
        150,
        batch_size=64,
        checkpoint_every_steps=150,
        **{"data.eval_splits": ("test",)},
    )
    m = result.eval_metrics
    # Measured: reverse 0.95, sort 0.77, add 0.00 (addition needs more steps). Learned absolute
    # positions reach 0.76 on reversing held-out lengths after 1,000 steps.
    assert m["eval/exact_match_reverse"] > 0.8
    assert m["eval/exact_match"] > 0.4
    assert m["eval/token_accuracy"] > 0.6
    # From Python: the beams as (score, text), best first, as ann generate prints them.
    beams = generate.generate(tmp_path, source="reverse 12345", beam_size=3)
    assert len(beams) == 3 and [s for s, _ in beams] == sorted((s for s, _ in beams), reverse=True)
    assert all(isinstance(text, str) for _, text in beams)
    with pytest.raises(ValueError, match="^prompt is not for seq2seq runs; drop it$"):
        generate.generate(tmp_path, "x", source="reverse 1")


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--num_tokens=0"],
            "--num_tokens=0 must be an integer in [1, 1000000]; e.g. --num_tokens=200",
        ),
        (["--num_samples=0"], "--num_samples=0 must be an integer in [1, 10000]; e.g. --num_s"),
        (["--top_k=-1"], "--top_k=-1 must be an integer in [0, 1000000] (0: all ids); e.g. "),
        (["--top_p=1.5"], "--top_p=1.5 must be a number in [0, 1] (1: all ids, 0: the likel"),
        (["--beam_size=0"], "--beam_size=0 must be an integer in [1, 1000] (1: greedy); e.g. --b"),
        (["--temperature=-0.5"], "--temperature=-0.5 must be a number in [0, 100] (0: greedy)"),
        (["--temperature=nan"], "--temperature=nan must be a number in [0, 100]"),
        (["--temperature=1e9"], "--temperature=1e+09 must be a number in [0, 100]"),
        (["--seed=-1"], "--seed=-1 must be an integer in [0, 4294967295]; e.g. --seed=0"),
        (["--step=last"], "--step='last' must be 'best', 'latest' or a step number"),
        (["--workdir=MISSING"], "does not exist; give the directory of a trained run"),
        (["--workdir=LM", "--beam_size=4"], "--beam_size is not for language_modelling runs"),
        (["--workdir=SEQ2SEQ", "--prompt=x"], "--prompt is not for seq2seq runs; drop it"),
        (["--workdir=SEQ2SEQ", "--source= "], "--source is empty; give the text to decode"),
        (["--workdir=DIGITS"], "is a 'classification' run, which has nothing to generate"),
    ],
)
def test_generate_flags_are_checked_before_a_model_is_restored(tmp_path, args, message):
    from absl import flags

    from ann import config as config_lib

    runs = {"LM": "pydoc_lm", "SEQ2SEQ": "digit_seq2seq", "DIGITS": "digits_mlp"}
    for key, name in runs.items():  # config.json is all the checks read
        config_lib.write(tiny(name), str(tmp_path / key))
    fv = flags.FlagValues()
    generate._define_flags(fv)
    named = {"MISSING": tmp_path / "missing", **{key: tmp_path / key for key in runs}}
    fv(["generate", f"--workdir={tmp_path / 'LM'}", *fill(args, named)])
    with pytest.raises(ValueError, match=re.escape(message)):
        generate.check_flags(fv)
    if args == ["--num_tokens=0"]:  # the command line: exit 1, one line, before any restore
        import subprocess
        import sys

        result = subprocess.run(
            [sys.executable, "-m", "ann.generate", f"--workdir={tmp_path / 'LM'}", *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert one_line_error(result) == f"error: {message}"


def test_greedy_decoding_says_which_sampling_flags_change_nothing(tmp_path, capsys):
    # --temperature=0 --top_k=20 --num_samples=3: accepted without a word, three identical
    # samples printed (trial 47d).
    from absl import flags

    from ann import config as config_lib

    config_lib.write(tiny("pydoc_lm"), str(tmp_path / "LM"))
    fv = flags.FlagValues()
    generate._define_flags(fv)
    fv(["generate", f"--workdir={tmp_path / 'LM'}", "--temperature=0", "--top_k=20",
        "--num_samples=3"])  # fmt: skip
    assert generate.check_flags(fv) == "language_modelling"
    assert capsys.readouterr().err == (
        "note: --temperature=0 decodes greedily: --top_k, --num_samples (every sample is the "
        "same) change nothing\n"
    )
    fv(["generate", f"--workdir={tmp_path / 'LM'}", "--temperature=0.8", "--top_k=20"])
    generate.check_flags(fv)
    assert capsys.readouterr().err == ""  # sampling: they count


@pytest.mark.parametrize("seconds_per_call, lines", [(5.0, 1), (0.01, 0)])
def test_a_long_generate_says_its_estimate_after_its_first_call(
    monkeypatch, capsys, seconds_per_call, lines
):
    """`ann generate --num_samples=2000 --num_tokens=1000000` ran for days without a word. A
    sampling that would take over ESTIMATE_ABOVE_S at its first call's pace (the call compiled
    before it) says so on a terminal, as `ann train`'s step lines; a short one says nothing.
    A fake clock: `seconds_per_call` a call (4 calls of 256 ids)."""
    import functools
    import itertools
    from types import SimpleNamespace

    clock = itertools.count(0.0, seconds_per_call).__next__
    monkeypatch.setattr(generate, "_Progress", functools.partial(generate._Progress, clock=clock))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    flags = SimpleNamespace(num_tokens=1000, temperature=0.0, top_k=0, top_p=1.0, seed=0)
    prompt = jnp.array([[3, 4, 5]] * 2, jnp.int32)
    generate._sample(build("causal_lm"), prompt, 8, (0,), lambda ids: "x" * len(ids), flags)
    out, err = capsys.readouterr()
    assert out == "x" * 1003 + "\n" + "-" * 40 + "\n" + "x" * 1003 + "\n"
    said = err.splitlines()
    assert len(said) == lines, err
    if lines:  # 256 ids of 2 samples in 5 s; 744 ids left
        assert said[0] == (
            "generated 256/1,000 ids per sample (26%) | 2 samples | 102 tokens/s | ETA 0:00:15"
        )


def test_generate_too_large_for_memory_is_one_line_naming_the_flags_to_lower():
    """`ann generate --num_tokens=1000000 --num_samples=10000` (each flag within its range)
    ended in a 54-line RESOURCE_EXHAUSTED traceback: the ids alone are checked before anything
    compiles, and XLA's out-of-memory error is one line, as `ann train` says it."""
    from ann import cli

    with pytest.raises(cli.FlagError) as e:
        generate.ids_too_large(10_000, 1, 1_000_000, 16 * 2**30)
    assert str(e.value) == (
        "--num_samples=10000 x --num_tokens=1000000 needs 37.3 GiB for the sampled ids alone, "
        "more than the device's 16.0 GiB; lower --num_samples or --num_tokens"
    )
    generate.ids_too_large(10_000, 1, 1_000_000, None)  # not known: not checked
    generate.ids_too_large(1, 1, 200, generate.device_bytes())
    oom = jax.errors.JaxRuntimeError(
        "RESOURCE_EXHAUSTED: Out of memory allocating 40000000000 bytes."
    )
    with pytest.raises(cli.FlagError) as e:
        with generate._out_of_memory("generating X", "lower --num_samples or --num_tokens"):
            raise oom
    assert str(e.value) == (
        "generating X does not fit in the device's memory (one allocation of 37.3 GiB); lower "
        "--num_samples or --num_tokens"
    )
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        with generate._out_of_memory("generating X", "lower it"):
            raise ZeroDivisionError


def test_seq2seq_decoding_never_writes_a_task_word():
    """A task word begins a source and is none of a target (digit_strings' targets are digits
    and <eos>), yet greedy and beam decoding wrote one where the model favoured it: the n-best
    list of `ann generate --beam_size` and the export's answers could hold `reverse`. The
    experiment's decoding (eval, the export's `predict`, `ann generate`) bans task words as it
    bans <pad> and <bos>."""
    from experiments.common import Vocabulary
    from experiments.seq2seq import Seq2Seq

    experiment = Seq2Seq(tiny("digit_seq2seq", **{"task.eval_beam_size": 4}))
    experiment.vocab = Vocabulary(list(digit_strings.VOCABULARY), 0, 1, 2)
    experiment.task_names, experiment.target_len = list(digit_strings.TASKS), 4
    index = experiment.vocab.index
    tasks = [index[t] for t in digit_strings.TASKS]

    class FavoursTaskWords:  # a seq2seq stand-in whose likeliest next ids are the task words
        def encode(self, source):
            return jnp.zeros((source.shape[0], 1, 4)), jnp.ones((source.shape[0], 1), bool)

        def decode(self, tokens, memory, mask):
            logits = jnp.zeros(len(index)).at[jnp.array(tasks)].set(5.0).at[index["7"]].set(3.0)
            return jnp.broadcast_to(logits, (*tokens.shape, len(index)))

    model, source = FavoursTaskWords(), jnp.array([[index["sort"], index["7"], 2, 0]])
    greedy = experiment.predict(model, {"source": source})["tokens"]
    assert greedy.tolist() == [[index["7"]] * 4]

    def assert_written_without_task_words(row):
        written = row[: row.index(2) + 1] if 2 in row else row  # then pads
        assert not set(written) & {0, 1, *tasks}, row
        assert row[len(written) :] == [0] * (len(row) - len(written)), row

    best = experiment._beam(model, source)  # eval's beam_exact_match
    assert_written_without_task_words(best[0].tolist())
    # `ann generate --beam_size` decodes with the experiment's ids: its n-best list too.
    assert experiment.decoding_ids["banned"] == tuple(tasks)
    beams, scores = decoding.beam_search(model, source, 4, beam_size=8, **experiment.decoding_ids)
    for row in beams[0].tolist():
        assert_written_without_task_words(row)
    assert bool(jnp.isfinite(scores).all())


def test_beam_scores_are_log_probabilities_of_the_allowed_distribution():
    """Blocked ids (<pad>, <bos>, `banned`) are masked before the log-softmax: each step's
    distribution is renormalised over the ids a beam may write, so a score is the sequence's
    log-probability under it, and the scores of every sequence decoding can write sum to 1.
    They were removed after the log-softmax: the blocked ids' mass was lost (here the 7
    sequences summed to 0.0075)."""
    pad, bos, eos, banned = 0, 1, 2, 5
    logits = jnp.array([4.0, 3.0, 0.5, 1.0, -0.5, 5.0])  # pad, bos, eos, 3, 4, banned

    class Fixed:  # a seq2seq stand-in: the same next-id logits everywhere
        def encode(self, source):
            return jnp.zeros((source.shape[0], 1, 4)), jnp.ones((source.shape[0], 1), bool)

        def decode(self, tokens, memory, mask):
            return jnp.broadcast_to(logits, (*tokens.shape, len(logits)))

    ids = dict(bos_id=bos, eos_id=eos, pad_id=pad, banned=(banned,))
    # Every sequence of 2 steps: <eos> first, or 3 or 4 then <eos>, 3 or 4 (7 in all).
    beams, scores = decoding.beam_search(Fixed(), jnp.array([[3, 2]]), 2, beam_size=7, **ids)
    allowed = jax.nn.log_softmax(logits[jnp.array([eos, 3, 4])])
    logp = dict(zip((eos, 3, 4), allowed.tolist()))
    for row, score in zip(beams[0].tolist(), scores[0].tolist()):
        want = logp[row[0]] + (0.0 if row[0] == eos else logp[row[1]])
        assert score == pytest.approx(want, abs=1e-5), (row, score, want)
    assert len({tuple(r) for r in beams[0].tolist()}) == 7
    assert float(jnp.exp(scores).sum()) == pytest.approx(1.0, abs=1e-5)
    assert bool((jnp.diff(scores[0]) <= 0).all())  # best first: <eos> alone, then 3 3
    assert beams[0, :2].tolist() == [[eos, pad], [3, 3]]
    # Greedy writes the likeliest allowed id each step (the banned 5 and <pad> are likelier).
    assert decoding.greedy(Fixed(), jnp.array([[3, 2]]), 2, **ids)[0].tolist() == [3, 3]


def test_seq2seq_decoding_writes_only_the_ids_its_training_targets_hold():
    """digit_strings' targets hold digits and <eos>; `+` (a source's token) was written
    where the model favoured it: `ann generate --beam_size`'s n-best list held it. The
    experiment reads the ids its training targets hold (`target_ids`), decoding writes no
    other (greedy: eval and the export's answers; beam: eval and `ann generate`), and the
    export records them (`outputs.tokens.target_ids`)."""
    from experiments.seq2seq import Seq2Seq

    config = tiny("digit_seq2seq", **{"task.eval_beam_size": 4})
    experiment = Seq2Seq(config)
    experiment.setup(data.load(config.data.name, config.data.train_split))
    index = experiment.vocab.index
    digits = [index[d] for d in "0123456789"]
    assert experiment.target_ids == tuple(sorted([index["<eos>"], *digits]))
    assert experiment.decoding_ids["allowed"] == experiment.target_ids
    assert experiment.output_signature()["tokens"]["target_ids"] == list(experiment.target_ids)
    plus = index["+"]

    class FavoursPlus:  # a seq2seq stand-in whose likeliest next id is `+`, then a task word
        def encode(self, source):
            return jnp.zeros((source.shape[0], 1, 4)), jnp.ones((source.shape[0], 1), bool)

        def decode(self, tokens, memory, mask):
            logits = jnp.zeros(len(index)).at[plus].set(6.0).at[index["add"]].set(5.0)
            logits = logits.at[index["7"]].set(3.0).at[index["<eos>"]].set(2.0)
            return jnp.broadcast_to(logits, (*tokens.shape, len(index)))

    model = FavoursPlus()
    source = jnp.asarray(experiment.encode_source("sort 17"))[None]
    allowed = {*experiment.target_ids, experiment.pad_id}  # pads after <eos>
    greedy = experiment.predict(model, {"source": source})["tokens"]
    assert set(greedy[0].tolist()) <= allowed and plus not in greedy[0].tolist()
    assert set(experiment._beam(model, source)[0].tolist()) <= allowed
    # `ann generate --beam_size` decodes with the same ids: its n-best list too.
    beams, scores = decoding.beam_search(
        model, source, experiment.target_len, beam_size=8, **experiment.decoding_ids
    )
    for row in beams[0].tolist():
        assert set(row) <= allowed, row
    assert bool(jnp.isfinite(scores).all())


def test_seq2seq_reads_what_sources_and_targets_look_like_from_every_training_row():
    """The source shapes the export records (`framing.sources`: what the loader, the server
    and `ann generate` take) and the ids decoding may write (`target_ids`) come from every
    training row: they were read from the first 2,000, so a form or a target token only a
    later row has was refused although the model was trained on it. Here row 2,500 alone has
    `sort 12+34` (a `+` in a sort source) and `+` in its target. A streamed split (not held in
    memory) is read in chunks to the same result."""
    import dataclasses

    from ann import artifact
    from ann.serve import protocol
    from experiments.seq2seq import Seq2Seq

    config = tiny("digit_seq2seq")
    split = data.load(config.data.name, config.data.train_split, cache="on")
    cached = {k: np.array(v) for k, v in split.cached.items()}
    index = {t: i for i, t in enumerate(digit_strings.VOCABULARY)}
    late = 2_500
    source = [index[t] for t in "sort 1 2 + 3 4 <eos>".split()]
    cached["source"][late] = 0
    cached["source"][late, : len(source)] = source
    cached["target"][late] = 0
    cached["target"][late, :4] = [index[t] for t in "4 + 2 <eos>".split()]
    experiment = Seq2Seq(config)
    experiment.setup(dataclasses.replace(split, cached=cached))
    plus = index["+"]
    assert plus in experiment.target_ids and plus in experiment.decoding_ids["allowed"]
    assert plus in experiment.output_signature()["tokens"]["target_ids"]
    row = experiment.encode_source("sort 12+34")  # `ann generate --source`
    assert row[: len(source)].tolist() == source
    spec = experiment.input_signature()["source"]
    forms = [[r["name"] for r in form] for form in spec["framing"]["sources"]["sort"]]
    assert sorted(forms) == [["DIGITS"], ["DIGITS", "+", "DIGITS"]]
    # The check the loader (`artifact.load(...)`) and the server make, on the exported entry.
    assert artifact.framing({**spec, "shape": [-1, *spec["shape"]]}).fault(row[None]) is None
    body = {"inputs": [{"name": "source", "shape": [1, len(row)], "datatype": "INT32",
                        "data": row.tolist()}]}  # fmt: skip
    decoded = protocol.decode_infer(json.dumps(body).encode(), {"source": spec}, {}, 8)
    assert decoded.inputs["source"].tolist() == [row.tolist()]
    # A split streamed from disk, SCAN_ROWS at a time, reads to what the held one does.
    part = f"{config.data.train_split}[:3000]"
    streamed, held = Seq2Seq(config), Seq2Seq(config)
    streamed.setup(data.load(config.data.name, part, cache="off"))
    held.setup(data.load(config.data.name, part, cache="on"))
    assert streamed._train.cached is None and held._train.cached is not None
    assert streamed.source_shapes() == held.source_shapes() != {}
    assert streamed.target_ids == held.target_ids != ()


def test_seq2seq_encode_source_builds_its_check_once_per_setup(monkeypatch):
    """`encode_source` checks a source with the export's `artifact.Framing`, built once per
    `setup` (it was built, with its automaton, on every call: ~4 ms each); a new `setup`
    (another train split) builds it again."""
    from ann import artifact
    from experiments.seq2seq import Seq2Seq

    config = tiny("digit_seq2seq")
    experiment = Seq2Seq(config)
    split = data.load(config.data.name, config.data.train_split)
    experiment.setup(split)
    experiment.encode_source("add 12+34")
    built, framing = [], artifact.framing
    monkeypatch.setattr(artifact, "framing", lambda spec: built.append(spec) or framing(spec))
    for text in ("add 12+34", "reverse 1", "sort 4321"):
        experiment.encode_source(text)
    with pytest.raises(ValueError, match="^'reverse' sources are 'reverse DIGITS'"):
        experiment.encode_source("reverse 1+2")
    assert built == []
    experiment.setup(split)
    experiment.encode_source("add 12+34")
    assert len(built) == 1


def test_a_source_outside_the_vocabulary_or_too_long_is_named():
    # `ann generate` turns these into one `error: --source=...` line (they were tracebacks).
    from experiments.seq2seq import Seq2Seq

    config = tiny("digit_seq2seq")
    experiment = Seq2Seq(config)
    experiment.setup(data.load(config.data.name, config.data.train_split))
    assert experiment.encode_source("reverse 12 3")[:5].tolist() == [
        experiment.vocab.index[t] for t in ("reverse", "1", "2", "3", "<eos>")
    ]
    known = r"\(0 1 .* reverse sort add\)"
    with pytest.raises(ValueError, match=rf"^'a' is not in the vocabulary {known}"):
        experiment.encode_source("reverse 12a45")
    with pytest.raises(ValueError, match="longer than the model's 19 ids"):
        experiment.encode_source("reverse " + "1" * 30)
    # Both were decoded as if they were sources (the model saw no task, or no number).
    with pytest.raises(ValueError, match="^it starts with '12345', not a task word: begin with "
                       "one of reverse, sort, add, e.g. 'reverse 12345'$"):  # fmt: skip
        experiment.encode_source("12345")
    with pytest.raises(ValueError, match="^it has nothing after the task word"):
        experiment.encode_source(" sort ")
    # Not a shape the task has in training: 'add 12' and 'add 12+' were decoded as sums. The
    # check is the export's (`artifact.Framing.source_fault`), with the runs' lengths: the
    # held-out 3 and 6 digits are inside the trained 1 to 8, 9 is not.
    assert experiment.encode_source("add 12+345")[0] == experiment.vocab.index["add"]
    assert experiment.encode_source("reverse 123")[4] == experiment.eos_id
    digits = "(DIGITS: 1 to 8 of 0 1 2 3 4 5 6 7 8 9)"
    nine = " (9 tokens in DIGITS, not 1 to 8)"
    for source, got in [
        ("add 12", "'add DIGITS'"),
        ("add 12+", "'add DIGITS+'"),
        ("reverse 1+2", "'reverse DIGITS+DIGITS'"),
        ("sort 123456789", "'sort DIGITS'" + nine),
        ("add 1+123456789", "'add DIGITS+DIGITS'" + nine.replace("DIGITS", "run 3 (DIGITS)")),
    ]:
        with pytest.raises(ValueError) as e:
            experiment.encode_source(source)
        task = source.split()[0]
        trained = "add DIGITS+DIGITS" if task == "add" else f"{task} DIGITS"
        assert str(e.value) == (
            f"{task!r} sources are '{trained}' {digits} as in training; got {got}; give a source "
            "of that shape"
        )


def test_a_prompt_outside_the_vocabulary_is_read_as_unk_and_named():
    # `ann generate` warns with these (a prompt with 'é' or a tab was read silently as <unk>).
    from experiments.language_modelling import LanguageModelling

    config = tiny("pydoc_lm")
    experiment = LanguageModelling(config)
    experiment.setup(data.load(config.data.name, config.data.train_split))
    assert experiment.unknown("café\tdef") == ["\t", "é"] and experiment.unknown("def") == []
    assert experiment.encode("é")[0] == experiment.vocab.index["<unk>"] == 1


def test_generate_on_a_run_without_checkpoints_is_one_line(tmp_path):
    """A CheckpointError from the restore (no step, a missing or damaged one) is the same one
    line as a bad flag, with Orbax's INFO logging silenced, and the run is left as it was."""
    import os
    import subprocess
    import sys

    from ann import config as config_lib

    run, config = tmp_path / "run", tiny("digit_seq2seq")
    config_lib.write(config, str(run))
    data.load(config.data.name, config.data.train_split)  # built here, not in the subprocess
    result = subprocess.run(
        [sys.executable, "-m", "ann.generate", f"--workdir={run}", "--source=reverse 1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert one_line_error(result) == (
        f"error: no checkpoint in {run}/checkpoints_best: the run saved none; train it first "
        f"(ann train --workdir={run} ...)"
    )
    assert os.listdir(run) == ["config.json"]


def test_generate_help_says_only_the_first_of_several_samples_streams():
    # `--num_samples=3` streamed the first sample and printed the others at the end, which
    # --help did not say ("LM: continuations to draw (>= 1)."). They are one batched call.
    from absl import flags

    fv = flags.FlagValues()
    generate._define_flags(fv)
    said = fv["num_samples"].help
    assert "sampled together in one batch: the first streams" in said, said
    assert "the others print whole after it" in said, said


def test_generate_prints_each_chunk_as_it_is_written_the_ids_of_one_call(monkeypatch):
    # `ann generate` printed nothing until its last call, and a Ctrl-C lost all of it.
    from absl import flags

    lm = build("causal_lm")
    fv = flags.FlagValues()
    generate._define_flags(fv)
    fv(["generate", "--workdir=W", "--num_tokens=600", "--temperature=0.8", "--top_k=5",
        "--top_p=0.9"])  # fmt: skip
    prompt = jnp.repeat(jnp.array([[3, 4, 5]]), 2, 0)
    printed = []
    monkeypatch.setattr(generate, "_print", printed.append)
    decode = lambda ids: "".join(chr(ord("a") + i) for i in np.asarray(ids).tolist())  # noqa: E731
    generate._sample(lm, prompt, 8, (0,), decode, fv)
    whole = decoding.sample(
        lm, prompt, 600, jax.random.PRNGKey(0), temperature=0.8, top_k=5, top_p=0.9, window=8,
        banned=(0,),
    )  # fmt: skip
    first, second = (decode(row) for row in whole)
    dashes = "-" * 40 + "\n"
    # The prompt, then the first sample in its three calls (256 + 256 + 88 ids), each printed
    # as it came; the second sample, drawn alongside it, once it is whole.
    chunks = [first[:3], first[3:259], first[259:515], first[515:]]
    # A line of dashes before each other sample, none after the last (it ended every sample,
    # --num_samples=1's too).
    assert printed == [*chunks, "\n", dashes + second + "\n"]
