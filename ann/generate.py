"""Decoding trained sequence models: sampling for causal LMs, greedy and beam search for seq2seq.

Plain functions over a model (jit them, or call them inside a jitted function), and a CLI on a
trained run's workdir:

    ann generate --workdir=runs/pydoc_lm --prompt="Return the " --num_tokens=200 \\
        --temperature=0.8 --top_k=20
    ann generate --workdir=runs/digit_seq2seq --source="reverse 12345" --beam_size=4

Sampling and greedy decoding recompute the whole (fixed-length) buffer each step instead of
keeping a key/value cache: simpler, exact, and cheap at these sequence lengths.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from absl import app, flags
from flax import nnx


def sample(
    model: nnx.Module,
    prompt: jax.Array,
    num_tokens: int,
    rng: jax.Array,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
) -> jax.Array:
    """Continues `prompt` [b, p] (int ids, no padding) by `num_tokens` ids from a causal LM.

    Each id is drawn from softmax(logits / temperature) over the `top_k` most likely ids (0 = all);
    temperature 0 is greedy. Returns [b, p + num_tokens].
    """
    b, p = prompt.shape
    tokens = jnp.concatenate([prompt, jnp.zeros((b, num_tokens), prompt.dtype)], axis=1)

    def step(i, tokens):
        # The causal mask hides the not-yet-written zeros after position p - 1 + i.
        logits = model(tokens)[:, p - 1 + i].astype(jnp.float32)
        if top_k:
            kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            nxt = jax.random.categorical(jax.random.fold_in(rng, i), logits / temperature)
        return tokens.at[:, p + i].set(nxt.astype(tokens.dtype))

    return jax.lax.fori_loop(0, num_tokens, step, tokens)


def greedy(
    model: nnx.Module, source: jax.Array, target_len: int, *, bos_id: int, eos_id: int, pad_id: int
) -> jax.Array:
    """Greedy decoding of a `seq2seq` model: [b, target_len] ids, padding after <eos>."""
    memory, memory_mask = model.encode(source)
    b = source.shape[0]
    tokens = jnp.full((b, target_len + 1), pad_id, jnp.int32).at[:, 0].set(bos_id)

    def step(i, carry):
        tokens, done = carry
        logits = model.decode(tokens[:, :-1], memory, memory_mask)[:, i]
        nxt = jnp.where(done, pad_id, logits.argmax(-1).astype(jnp.int32))
        return tokens.at[:, i + 1].set(nxt), done | (nxt == eos_id)

    tokens, _ = jax.lax.fori_loop(0, target_len, step, (tokens, jnp.zeros(b, bool)))
    return tokens[:, 1:]


def beam_search(
    model: nnx.Module,
    source: jax.Array,
    target_len: int,
    *,
    beam_size: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
) -> tuple[jax.Array, jax.Array]:
    """Beam search with a `seq2seq` model: (ids [b, beam, target_len], log-probs [b, beam]),
    best first. A finished beam (one that wrote <eos>) keeps its score and writes padding.
    Scores are plain sums of log-probabilities (no length normalization)."""
    b, k = source.shape[0], beam_size
    memory, memory_mask = model.encode(source)
    # What encode returns (the mask, or under rotary positions (mask, positions)), per beam.
    memory, memory_mask = jax.tree.map(lambda a: jnp.repeat(a, k, axis=0), (memory, memory_mask))
    tokens = jnp.full((b, k, target_len + 1), pad_id, jnp.int32).at[:, :, 0].set(bos_id)
    # Only the first beam is live at the start, so the k beams do not start as copies.
    scores = jnp.full((b, k), -jnp.inf).at[:, 0].set(0.0)
    done = jnp.zeros((b, k), bool)

    def step(i, carry):
        tokens, scores, done = carry
        flat = tokens.reshape(b * k, -1)[:, :-1]
        logits = model.decode(flat, memory, memory_mask)[:, i].astype(jnp.float32)
        logp = jax.nn.log_softmax(logits).reshape(b, k, -1)
        vocab = logp.shape[-1]
        # A finished beam extends only with padding, at no cost.
        only_pad = jnp.full((vocab,), -jnp.inf).at[pad_id].set(0.0)
        logp = jnp.where(done[..., None], only_pad, logp)
        candidates = (scores[..., None] + logp).reshape(b, k * vocab)
        scores, index = jax.lax.top_k(candidates, k)
        beam, token = index // vocab, (index % vocab).astype(jnp.int32)
        tokens = jnp.take_along_axis(tokens, beam[..., None], axis=1).at[:, :, i + 1].set(token)
        done = jnp.take_along_axis(done, beam, axis=1) | (token == eos_id)
        return tokens, scores, done

    tokens, scores, _ = jax.lax.fori_loop(0, target_len, step, (tokens, scores, done))
    return tokens[:, :, 1:], scores


FLAGS = flags.FLAGS


def _define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    # Defined only when run as a program: experiments import this module next to ann.main's flags.
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("workdir", None, "A trained run (language_modelling or seq2seq).", **fv)
    flags.DEFINE_string("step", "best", "Checkpoint: best, latest or a step number.", **fv)
    flags.DEFINE_string("prompt", "", "LM: text to continue.", **fv)
    flags.DEFINE_integer("num_tokens", 200, "LM: ids to sample (>= 1).", **fv)
    flags.DEFINE_float("temperature", 0.8, "LM: softmax temperature (>= 0); 0 = greedy.", **fv)
    flags.DEFINE_integer("top_k", 20, "LM: sample among the k most likely ids; 0 = all.", **fv)
    flags.DEFINE_integer("num_samples", 1, "LM: continuations to draw (>= 1).", **fv)
    flags.DEFINE_integer("seed", 0, "LM: sampling seed, in [0, 2**32).", **fv)
    flags.DEFINE_string(
        "source", "", "seq2seq: source text, e.g. 'reverse 12345' or 'add 12+34'.", **fv
    )
    flags.DEFINE_integer("beam_size", 1, "seq2seq: beams (>= 1); 1 = greedy.", **fv)
    flags.mark_flag_as_required("workdir", flag_values=flag_values)


LM_FLAGS = ("prompt", "num_tokens", "temperature", "top_k", "num_samples", "seed")
SEQ2SEQ_FLAGS = ("source", "beam_size")
# flag -> the values it may take, low <= value < high (NaN is outside), and how to say so.
RANGES = {
    "num_tokens": (1, math.inf, ">= 1"),
    "num_samples": (1, math.inf, ">= 1"),
    "top_k": (0, math.inf, ">= 0 (0: all ids)"),
    "beam_size": (1, math.inf, ">= 1"),
    "temperature": (0, math.inf, "finite and >= 0 (0: greedy)"),
    "seed": (0, 2**32, "in [0, 2**32)"),
}


def check_flags(f: flags.FlagValues) -> str:
    """Checks every flag before a model is restored; returns the run's experiment. Raises
    FlagError with one line naming the flag and the fix."""
    from ann import cli
    from ann import config as config_lib

    for name, (low, high, allowed) in RANGES.items():
        if not low <= f[name].value < high:
            raise cli.FlagError(f"--{name}={f[name].value} must be {allowed}")
    cli.check_trained_run(f.workdir, f.step)
    experiment = config_lib.read(f.workdir).experiment
    own = {"language_modelling": LM_FLAGS, "seq2seq": SEQ2SEQ_FLAGS}.get(experiment)
    if own is None:
        raise cli.FlagError(
            f"--workdir={f.workdir} is a {experiment!r} run, which has nothing to generate; give "
            "a language_modelling or seq2seq run"
        )
    for name in LM_FLAGS + SEQ2SEQ_FLAGS:
        if f[name].present and name not in own:
            raise cli.FlagError(f"--{name} is not for {experiment} runs; drop it")
    return experiment


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from ann.train.build import restore_model

    check_flags(FLAGS)
    step = FLAGS.step if FLAGS.step in ("best", "latest") else int(FLAGS.step)
    experiment, model, step, config = restore_model(FLAGS.workdir, step)
    if config.experiment == "language_modelling":
        prompt = jnp.asarray(experiment.encode(FLAGS.prompt or "\n"))[None]
        prompt = jnp.repeat(prompt, FLAGS.num_samples, axis=0)
        fn = jax.jit(
            lambda m, p, r: sample(
                m, p, FLAGS.num_tokens, r, temperature=FLAGS.temperature, top_k=FLAGS.top_k
            )
        )
        out = fn(model, prompt, jax.random.PRNGKey(FLAGS.seed))
        for row in jax.device_get(out):
            print(experiment.decode(row))
            print("-" * 40)
    elif config.experiment == "seq2seq":
        source = jnp.asarray(experiment.encode_source(FLAGS.source))[None]
        ids = dict(bos_id=experiment.bos_id, eos_id=experiment.eos_id, pad_id=experiment.pad_id)
        beams, scores = jax.jit(
            lambda m, s: beam_search(m, s, experiment.target_len, beam_size=FLAGS.beam_size, **ids)
        )(model, source)
        for row, score in zip(jax.device_get(beams[0]), jax.device_get(scores[0])):
            # The source tells decode whether this task's target is written reversed (add).
            print(f"{score:9.4f}  {experiment.decode(row, source=source[0])}")


if __name__ == "__main__":
    _define_flags()
    from ann import cli
    from ann.train.checkpoint import CheckpointError

    # A bad flag or step: one line, exit 1; warnings only: the samples are the output.
    cli.run(main, errors=(CheckpointError,), quiet=True)
