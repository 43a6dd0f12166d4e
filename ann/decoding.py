"""Decoding trained sequence models: sampling for causal LMs, greedy and beam search for seq2seq.

Plain functions over a model: jit them, or call them inside a jitted function (`ann generate`,
ann/generate.py, is the command line on a trained run). Sampling and greedy decoding recompute
the whole context each step instead of keeping a key/value cache: simpler, exact, and cheap at
these sequence lengths; sampling reads at most `window` ids, so its steps cost the same however
long the text gets.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def sample(
    model: nnx.Module,
    prompt: jax.Array,
    num_tokens: int,
    rng: jax.Array,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    window: int | None = None,
    banned: Sequence[int] = (),
) -> jax.Array:
    """Continues `prompt` [b, p] (int ids, no padding) by `num_tokens` ids from a causal LM.

    Each id is drawn from softmax(logits / temperature) over the `top_k` most likely ids (0, or
    at least the vocabulary's size, = all) but the `banned` ones (ids that frame a text and are
    none of it, `<pad>`: a written one was dropped from the text, then read back as padding),
    and among those from the nucleus: the fewest likeliest ids whose probabilities (at that
    temperature) sum to at least `top_p` (nucleus sampling, Holtzman et al. 2019, "The Curious
    Case of Neural Text Degeneration"; applied after top-k as in Hugging Face's
    `TopPLogitsWarper`; 1 = all, 0 = the likeliest only). Temperature 0 is greedy. `window`:
    the most ids the model reads to write the next one, the last ones (its training sequences'
    length: it then never sees a position it was not trained on, and a step costs the same
    however long the text; nanoGPT's `generate` crops the same way); None reads everything.
    Returns [b, p + num_tokens]. Raises ValueError for a `top_p` outside [0, 1] or NaN (1.5
    read as all ids, -0.1 as greedy, unsaid) and a negative or NaN `temperature` or `top_k`."""
    b, p = prompt.shape
    tokens = jnp.concatenate([prompt, jnp.zeros((b, num_tokens), prompt.dtype)], axis=1)
    return sample_range(
        model, tokens, p, p + num_tokens, rng, p, temperature=temperature, top_k=top_k,
        top_p=top_p, window=window, banned=banned,
    )  # fmt: skip


def sample_range(
    model: nnx.Module,
    tokens: jax.Array,
    start: jax.Array | int,
    stop: jax.Array | int,
    rng: jax.Array,
    prompt_len: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    window: int | None = None,
    banned: Sequence[int] = (),
) -> jax.Array:
    """`sample`'s loop over positions [start, stop) of `tokens` [b, length] (ids before
    `start` written; `start` >= `prompt_len` >= 1): the same ids as one `sample` call, so a
    long text can be written in several calls (`ann generate`: a Ctrl-C between them).
    `start` and `stop` may be traced; `prompt_len` keys each position's random draw. Raises
    ValueError as `sample` does."""
    _check_sampling(temperature, top_k, top_p)
    length = tokens.shape[1]
    width = length if window is None else min(window, length)

    def step(pos, tokens):
        # The `width` ids ending at pos - 1, or the first `width` while pos is below it (the
        # causal mask hides the not-yet-written zeros after pos - 1).
        begin = jnp.clip(pos - width, 0, length - width)
        context = jax.lax.dynamic_slice_in_dim(tokens, begin, width, axis=1)
        logits = jax.lax.dynamic_index_in_dim(model(context), pos - 1 - begin, 1, False)
        logits = _ban(logits.astype(jnp.float32), banned)
        if 0 < top_k < logits.shape[-1]:  # lax.top_k refuses a k above the vocabulary
            kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            key = jax.random.fold_in(rng, pos - prompt_len)
            logits = logits / temperature
            if top_p < 1:
                logits = _nucleus(logits, top_p)
            nxt = jax.random.categorical(key, logits)
        return jax.lax.dynamic_update_index_in_dim(tokens, nxt.astype(tokens.dtype), pos, 1)

    return jax.lax.fori_loop(start, stop, step, tokens)


def _check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """ValueError naming an argument outside its range, NaN included (`ann generate` checks
    its flags so before anything is restored)."""
    if not temperature >= 0:
        raise ValueError(f"temperature={temperature!r} must be >= 0 (0: greedy)")
    if not top_k >= 0:
        raise ValueError(f"top_k={top_k!r} must be >= 0 (0: all ids)")
    if not 0 <= top_p <= 1:
        raise ValueError(f"top_p={top_p!r} must be in [0, 1] (1: all ids, 0: the likeliest)")


def _nucleus(logits: jax.Array, top_p: float) -> jax.Array:
    """`logits` [b, vocab] (float32, -inf for ids already excluded) with every id outside the
    nucleus at -inf: the nucleus is the fewest likeliest ids whose softmax probabilities sum to
    at least `top_p`, and always holds the likeliest id (so `top_p` 0 is greedy); ids tied with
    its least likely member stay in, as `top_k` keeps ties."""
    ranked = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(ranked, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    kept = (mass_before < top_p).at[:, 0].set(True)
    cutoff = jnp.min(jnp.where(kept, ranked, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < cutoff, -jnp.inf, logits)


def _ban(logits: jax.Array, banned: Sequence[int]) -> jax.Array:
    """`logits` [..., vocab] with the `banned` ids at -inf (never chosen)."""
    if not banned:
        return logits
    return logits.at[..., jnp.asarray(banned)].set(-jnp.inf)


def _writable(
    vocab: int, blocked: Sequence[int], allowed: Sequence[int] | None = None
) -> np.ndarray:
    """The ids a decoder may write, as a bool mask [vocab] (a constant in the traced graph):
    `allowed` (None: every id) but the `blocked` ones."""
    keep = np.ones(vocab, bool) if allowed is None else np.zeros(vocab, bool)
    if allowed is not None:
        keep[np.asarray(list(allowed), np.int64)] = True
    keep[np.asarray(list(blocked), np.int64)] = False
    return keep


def _restrict(logits: jax.Array, keep: np.ndarray) -> jax.Array:
    """`logits` [..., vocab] with every id outside `keep` at -inf, before any (log-)softmax:
    the softmax of the result is the model's distribution renormalised over the kept ids."""
    return jnp.where(keep, logits, -jnp.inf)


def greedy(
    model: nnx.Module,
    source: jax.Array,
    target_len: int,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    banned: Sequence[int] = (),
    allowed: Sequence[int] | None = None,
) -> jax.Array:
    """Greedy decoding of a `seq2seq` model: [b, target_len] ids, padding after <eos>; a row
    not done writes only `allowed` ids (None: any; seq2seq's: the ids its training targets
    hold), never <pad> or <bos> (they frame a target, and are none of it), nor the `banned`
    ids (ids that are never part of a target: seq2seq's task words)."""
    blocked = (pad_id, bos_id, *banned)
    memory, memory_mask = model.encode(source)
    b = source.shape[0]
    tokens = jnp.full((b, target_len + 1), pad_id, jnp.int32).at[:, 0].set(bos_id)

    def step(i, carry):
        tokens, done = carry
        logits = model.decode(tokens[:, :-1], memory, memory_mask)[:, i]
        logits = _restrict(logits, _writable(logits.shape[-1], blocked, allowed))
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
    banned: Sequence[int] = (),
    allowed: Sequence[int] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Beam search with a `seq2seq` model: (ids [b, beam, target_len], log-probs [b, beam]),
    best first. A finished beam (one that wrote <eos>) keeps its score and writes padding; a
    live one writes only `allowed` ids (None: any; seq2seq's: the ids its training targets
    hold: `+`, a source's token, was in the n-best list), never <pad> or <bos> (written, they
    were dropped from the text: the n-best list held the same text several times), nor the
    `banned` ids (never part of a target: seq2seq's task words, which the n-best list held).

    A score is the log-probability of its sequence under the model restricted to the ids a
    beam may write: each step's logits are masked (-inf) before the log-softmax, so each
    step's distribution is renormalised over those ids and sums to 1, and the scores of all
    the sequences decoding can write sum (as probabilities) to at most 1. A plain sum over
    steps (no length normalization); the blocked ids' mass was left out of it before (a score
    below the allowed distribution's). Only the first beam is live at the start; a row with
    fewer than `beam_size` sequences to write has -inf scores at its end."""
    blocked = (pad_id, bos_id, *banned)
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
        vocab = logits.shape[-1]
        # Masked before the log-softmax: log-probabilities of the allowed distribution.
        logp = jax.nn.log_softmax(_restrict(logits, _writable(vocab, blocked, allowed)))
        logp = logp.reshape(b, k, vocab)
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
