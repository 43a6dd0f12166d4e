"""`ann generate`: text sampled from a trained causal LM, or sequences decoded by a seq2seq
model (greedy or beam search, ann/decoding.py), from a trained run's workdir:

    ann generate --workdir=runs/pydoc_lm --prompt="Return the " --num_tokens=200 \\
        --temperature=0.8 --top_k=20 --top_p=0.95
    ann generate --workdir=runs/digit_seq2seq --source="reverse 12345" --beam_size=4

The flags are checked before JAX is imported and the model restored.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from absl import flags

FLAGS = flags.FLAGS
CHUNK = 256  # LM ids written per compiled call: a Ctrl-C waits for at most one call
# A sampling estimated after its first call to take longer than this is told its estimate then,
# and a progress line at most every PROGRESS_EVERY_S after it (on a terminal: `_Progress`).
ESTIMATE_ABOVE_S = 10.0
PROGRESS_EVERY_S = 30.0


def _define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    # Defined only when run as a program (the tests define them on a FlagValues of their own).
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("workdir", None, "A trained run (language_modelling or seq2seq).", **fv)
    flags.DEFINE_string("step", "best", "Checkpoint: best, latest or a step number.", **fv)
    flags.DEFINE_string(
        "prompt", "", "LM: text to continue (printed with it); empty: a new line.", **fv
    )
    from ann.arguments import takes

    # Each numeric flag's help ends with the range check_flags refuses outside of (RANGES).
    flags.DEFINE_integer(
        "num_tokens", 200, takes("LM: ids to sample.", expected("num_tokens")), **fv
    )
    flags.DEFINE_float(
        "temperature", 0.8, takes("LM: softmax temperature.", expected("temperature")), **fv
    )
    flags.DEFINE_integer(
        "top_k", 20, takes("LM: sample among the k most likely ids.", expected("top_k")), **fv
    )
    flags.DEFINE_float(
        "top_p",
        1.0,
        takes(
            "LM: nucleus sampling, among the fewest likeliest ids whose probabilities sum to at "
            "least p (Holtzman et al. 2019); applied after --top_k.",
            expected("top_p"),
        ),
        **fv,
    )
    flags.DEFINE_integer(
        "num_samples",
        1,
        takes(
            "LM: continuations to draw, sampled together in one batch: the first streams as it "
            "is written, the others print whole after it, each after a line of dashes.",
            expected("num_samples"),
        ),
        **fv,
    )
    flags.DEFINE_integer("seed", 0, takes("LM: sampling seed.", expected("seed")), **fv)
    flags.DEFINE_string(
        "source", "", "seq2seq: source text, e.g. 'reverse 12345' or 'add 12+34'.", **fv
    )
    flags.DEFINE_integer("beam_size", 1, takes("seq2seq: beams.", expected("beam_size")), **fv)
    flags.mark_flag_as_required("workdir", flag_values=flag_values)
    if flag_values is FLAGS:  # a value that is no number: refused in the words of one outside
        from ann import cli

        cli.EXPECTED.update({name: expected(name) for name in RANGES})


LM_FLAGS = ("prompt", "num_tokens", "temperature", "top_k", "top_p", "num_samples", "seed")
SEQ2SEQ_FLAGS = ("source", "beam_size")
# flag -> the values it may take, low <= value <= high (NaN is outside), and a note on them:
# checked after parsing (the tests parse a FlagValues of their own), worded as every command's
# numeric flags are (`arguments.expected`).
RANGES = {
    "num_tokens": (1, 1_000_000, ""),
    "num_samples": (1, 10_000, ""),
    "top_k": (0, 1_000_000, "0: all ids"),
    "top_p": (0, 1, "1: all ids, 0: the likeliest"),
    "beam_size": (1, 1000, "1: greedy"),
    "temperature": (0, 100, "0: greedy"),
    "seed": (0, 2**32 - 1, ""),
}


def expected(name: str) -> str:
    """What the numeric flag `name` takes: "an integer in [1, 1000000]"."""
    from ann import arguments

    low, high, note = RANGES[name]
    return arguments.expected(float if name in ("temperature", "top_p") else int, low, high, note)


def check_flags(f: flags.FlagValues) -> str:
    """Checks every flag before a model is restored; returns the run's experiment. Raises
    FlagError with one line naming the flag and the fix."""
    from ann import arguments, cli
    from ann import config as config_lib

    for name, (low, high, _) in RANGES.items():
        value = f[name].value
        if not low <= value <= high:
            # As typed (`NaN`, not the parsed `nan`), where the command line holds it.
            given = cli.last_typed(name)
            typed = (
                arguments.flag(name, given.value)
                if given is not None and given.value
                else f"--{name}={arguments.number(value)}"
            )
            raise cli.FlagError(arguments.refusal(typed, expected(name), name, f[name].default))
    cli.check_trained_run(f.workdir, f.step)
    experiment = config_lib.latest(f.workdir).experiment
    own = {"language_modelling": LM_FLAGS, "seq2seq": SEQ2SEQ_FLAGS}.get(experiment)
    if own is None:
        raise cli.FlagError(
            f"--workdir={f.workdir} is a {experiment!r} run, which has nothing to generate; give "
            "a language_modelling or seq2seq run"
        )
    for name in LM_FLAGS + SEQ2SEQ_FLAGS:
        if f[name].present and name not in own:
            raise cli.FlagError(f"--{name} is not for {experiment} runs; drop it")
    if experiment == "seq2seq" and not f.source.strip():
        raise cli.FlagError("--source is empty; give the text to decode, e.g. 'reverse 12345'")
    if experiment == "language_modelling" and f.temperature == 0:
        # Greedy: what the sampling flags ask for cannot happen (three identical samples of
        # --num_samples=3 were printed without a word).
        moot = [f"--{n}" for n in ("top_k", "top_p", "seed") if f[n].present]
        moot += ["--num_samples (every sample is the same)"] if f.num_samples > 1 else []
        if moot:
            cli.note(f"--temperature=0 decodes greedily: {', '.join(moot)} change nothing")
    return experiment


def generate(
    workdir: str | os.PathLike,
    prompt: str = "",
    *,
    source: str = "",
    num_tokens: int = 200,
    num_samples: int = 1,
    temperature: float = 0.8,
    top_k: int = 20,
    top_p: float = 1.0,
    seed: int = 0,
    beam_size: int = 1,
    step: int | str = "best",
) -> list[str] | list[tuple[float, str]]:
    """`ann generate` from Python: for a language_modelling run, `num_samples` texts of
    `prompt` followed by `num_tokens` sampled characters (temperature, top-k, then top-p
    (Holtzman et al. 2019); `temperature=0`: greedy); for a seq2seq run, the `beam_size` beams
    decoded from `source` as (log-probability score, text), best first. Nothing is printed.
    Checked as the command checks its flags, the refusals naming the arguments: ValueError
    (FlagError) for a value out of its range (the same ranges, `RANGES`), a workdir that holds
    no such run, an argument of the other kind of run; TypeError for an argument of another
    type (a float `num_tokens`, a non-str prompt); then ConfigError or CheckpointError from
    the restore. A warning (`warning:` on stderr) names prompt characters outside the run's
    vocabulary."""
    from ann import artifact, cli

    workdir = artifact.path_argument(workdir, "workdir", "a trained run's directory as a str")
    step = cli.step_argument(step)
    given = {"prompt": prompt, "source": source, "num_tokens": num_tokens,
             "num_samples": num_samples, "temperature": temperature, "top_k": top_k,
             "top_p": top_p, "seed": seed, "beam_size": beam_size}  # fmt: skip
    fv = flags.FlagValues()
    _define_flags(fv)
    for name, value in given.items():  # each of its flag's type (int, float, str)
        kind = type(fv[name].default)
        # A NumPy number is one (np.int64(5)); an int is a float's (1 for 1.0).
        accepted = {int: numbers.Integral, float: numbers.Real}.get(kind, kind)
        if isinstance(value, bool) or not isinstance(value, accepted):
            raise TypeError(f"{name}: expected {kind.__name__}, got {type(value).__name__}")
        given[name] = value if kind is str else kind(value)
    defaults = {name: fv[name].default for name in given}
    argv = ["generate", f"--workdir={workdir}", f"--step={step}"]
    argv += [f"--{k}={v}" for k, v in given.items() if v != defaults[k]]  # as if typed
    with cli.as_arguments(("workdir", "step", *given), given):
        fv(argv)
        check_flags(fv)
        return _generate(fv, echo=False)


def main(argv: list[str]) -> None:
    from ann import cli

    cli.check_no_arguments(argv[1:])
    check_flags(FLAGS)
    _generate(FLAGS, echo=True)


def _generate(f: flags.FlagValues, echo: bool) -> list[str] | list[tuple[float, str]]:
    """What `ann generate` does once `check_flags` passed: restores the run and samples (a
    language model: each sample's text, the prompt first) or decodes (seq2seq: each beam's
    (score, text), best first); `echo` prints them as the command does, the first sample
    streaming."""
    import jax
    import jax.numpy as jnp

    from ann import cli
    from ann.decoding import beam_search
    from ann.train.build import restore_model

    step = f.step if f.step in ("best", "latest") else int(f.step)
    if echo:
        cli.progress(f"restoring the {step} checkpoint of {f.workdir}")
    experiment, model, step, config = restore_model(f.workdir, step)
    if config.experiment == "language_modelling":
        unknown = experiment.unknown(f.prompt)
        if unknown:  # the model reads them as <unk>, as it read the training text's rare ones
            shown = " ".join(repr(ch) for ch in unknown)
            cli.warn(
                f"{'--prompt' if echo else 'prompt'} has characters outside the run's vocabulary"
                f" ({shown}): each is read as <unk> and printed as \ufffd"
            )
        prompt = jnp.asarray(experiment.encode(f.prompt or "\n"))[None]
        ids_too_large(f.num_samples, prompt.shape[1], f.num_tokens, device_bytes())
        with _out_of_memory(
            f"generating --num_samples={f.num_samples} x --num_tokens={f.num_tokens}",
            "lower --num_samples or --num_tokens",
        ):
            return _sample(
                model,
                jnp.repeat(prompt, f.num_samples, axis=0),
                experiment.window,
                experiment.vocab.framing,
                experiment.decode,
                f,
                echo=echo,
            )
    try:  # seq2seq (check_flags allows no other); the vocabulary is the data set's
        source = jnp.asarray(experiment.encode_source(f.source))[None]
    except ValueError as e:
        raise cli.FlagError(f"--source={f.source!r}: {e}") from None
    ids = experiment.decoding_ids  # <pad>, <bos> and task words are never written
    with _out_of_memory(f"decoding with --beam_size={f.beam_size}", "lower --beam_size"):
        beams, scores = jax.jit(
            lambda m, s: beam_search(m, s, experiment.target_len, beam_size=f.beam_size, **ids)
        )(model, source)
    # In reading order, as the export answers (an add's sum is decoded reversed).
    answers = experiment.reading_order(beams[0], jnp.repeat(source, beams.shape[1], axis=0))
    decoded = [
        (float(score), experiment.decode(row))
        for row, score in zip(jax.device_get(answers), jax.device_get(scores[0]))
    ]
    if echo:
        for score, text in decoded:
            print(f"{score:9.4f}  {text or '(empty: <eos> first)'}")
    return decoded


@contextlib.contextmanager
def _out_of_memory(what: str, fix: str) -> Iterator[None]:
    """Raises FlagError, `{what} does not fit in the device's memory (one allocation of G GiB);
    {fix}` (`cli.out_of_memory`, as `ann train` says it), for XLA's out-of-memory error inside:
    `--num_tokens=1000000 --num_samples=10000` ended in a 54-line RESOURCE_EXHAUSTED
    traceback. Any other error passes."""
    from ann import cli

    try:
        yield
    except Exception as e:
        line = cli.out_of_memory(e, what, fix)
        if line is None:
            raise
        raise cli.FlagError(line) from None


def device_bytes() -> int | None:
    """The bytes the first device may hold: an accelerator's `bytes_limit`; on CPU, the
    machine's physical memory; None where neither is known."""
    import jax

    device = jax.devices()[0]
    limit = (device.memory_stats() or {}).get("bytes_limit")
    if limit:
        return int(limit)
    if device.platform == "cpu":
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    return None


def ids_too_large(samples: int, prompt_len: int, num_tokens: int, limit: int | None) -> None:
    """Raises FlagError, before anything is compiled, where the sampled ids alone (int32,
    `samples` x (`prompt_len` + `num_tokens`), the least `_sample` holds) exceed `limit`
    bytes (`device_bytes`; None: not checked): each flag is within its range, their product
    was 40 GB."""
    from ann import cli

    need = samples * (prompt_len + num_tokens) * 4
    if limit is not None and need > limit:
        raise cli.FlagError(
            f"--num_samples={samples} x --num_tokens={num_tokens} needs {need / 2**30:,.1f} GiB "
            f"for the sampled ids alone, more than the device's {limit / 2**30:,.1f} GiB; lower "
            "--num_samples or --num_tokens"
        )


def _sample(
    model: Any,
    prompt: Any,
    window: int,
    banned: tuple[int, ...],
    decode: Callable[[Any], str],
    f: flags.FlagValues,
    echo: bool = True,
) -> list[str]:
    """Returns, and with `echo` prints, `f.num_tokens` ids sampled after `prompt` [samples, p]
    as text (`decode`; each sample's text, the prompt's first), none
    of them `banned` (<pad>: one written was dropped from the text, which came out short), each
    from the last `window` ids (the training windows' length: no position the model never saw,
    and every step costs the same). CHUNK ids are written per compiled call (one call of
    100,000 ids, reading every id before each, ran out of memory: 330 GB), and the first
    sample's are printed and flushed as each call ends: the text streams, and a Ctrl-C (raised
    between calls) leaves what was printed, its line ended. It printed nothing until the last
    call, and a Ctrl-C lost everything. The other samples follow in full, each after a line
    of dashes, as they are sampled together (the same ids as one by one would not be)."""
    import jax
    import jax.numpy as jnp

    from ann.decoding import sample_range

    samples, p = prompt.shape
    length = p + f.num_tokens
    width = min(CHUNK, f.num_tokens)  # each call's new ids come back in one copy

    def write(m, t, start, stop, r):
        t = sample_range(
            m, t, start, stop, r, p, temperature=f.temperature, top_k=f.top_k,
            top_p=f.top_p, window=window, banned=banned,
        )  # fmt: skip
        return t, jax.lax.dynamic_slice_in_dim(t, jnp.minimum(start, length - width), width, 1)

    tokens = jnp.concatenate([prompt, jnp.zeros((samples, f.num_tokens), prompt.dtype)], 1)
    rng = jax.random.PRNGKey(f.seed)
    # Compiled before the first call, so that call's time is the sampling's alone (`_Progress`).
    bounds = (jnp.int32(p), jnp.int32(min(p + CHUNK, length)))
    write = jax.jit(write).lower(model, tokens, *bounds, rng).compile()
    say = _print if echo else (lambda text: None)
    rows = [[decode(row)] for row in jax.device_get(prompt)]
    say(rows[0][0])
    progress = _Progress(f.num_tokens, samples)
    try:
        for start in range(p, length, CHUNK):
            stop = min(start + CHUNK, length)
            tokens, new = write(model, tokens, jnp.int32(start), jnp.int32(stop), rng)
            # The slice starts at min(start, length - width): the last call's may hold earlier
            # ids. Copying it waits for the call: a Ctrl-C is raised here, between calls.
            offset = start - min(start, length - width)
            new = jax.device_get(new)[:, offset : offset + stop - start]
            for row, ids in zip(rows, new):
                row.append(decode(ids))
            say(rows[0][-1])
            progress.written(stop - p)
    except KeyboardInterrupt:
        say("\n")  # the `interrupted` line starts a line of its own
        raise
    say("\n")
    for row in rows[1:]:  # each after a line of dashes; none after the last
        say("-" * 40 + "\n" + "".join(row) + "\n")
    return ["".join(row) for row in rows]


class _Progress:
    """How far a long sampling is, on stderr, as `ann train`'s step lines say it: `generated
    512/1,000,000 ids per sample (0%) | 2,000 samples | 5,120 tokens/s | ETA 4 days, 12:27:05`.
    The first after the first call, where the whole sampling would take more than
    ESTIMATE_ABOVE_S at that call's pace (`--num_samples=2000 --num_tokens=1000000` ran for
    days without a word); then one at most every PROGRESS_EVERY_S. A short one says nothing.
    On a terminal only, as `cli.progress` (the first sample streams on stdout; a script reads
    stdout and an `error:` line). Read where the loop waits for each call anyway (it prints
    the call's ids): no host sync of its own. `clock`: seconds (the tests' fake)."""

    def __init__(self, total: int, samples: int, clock: Callable[[], float] | None = None):
        import time

        self.total, self.samples = total, samples
        self.clock = clock or time.perf_counter
        self.start = self.clock()
        self.last: float | None = None  # when the last line was written

    def written(self, done: int) -> None:
        """`done` ids per sample written so far (each call's end)."""
        if done >= self.total or not sys.stderr.isatty():
            return
        now = self.clock()
        seconds = max(now - self.start, 1e-9)
        left = (self.total - done) * seconds / done
        if self.last is None and left <= ESTIMATE_ABOVE_S:
            self.last = now  # short: the periodic line alone, were it to slow down
            return
        if self.last is not None and now - self.last < PROGRESS_EVERY_S:
            return
        from ann.train.hooks import eta

        self.last = now
        line = (
            f"generated {done:,}/{self.total:,} ids per sample ({100 * done / self.total:.0f}%) "
            f"| {self.samples:,} sample{'s' * (self.samples > 1)} | "
            f"{done * self.samples / seconds:,.0f} tokens/s | ETA {eta(left)}"
        )
        # Below the first sample's text where it streams on the same terminal, not inside it.
        newline = "\n" if sys.stdout.isatty() else ""
        print(newline + line, file=sys.stderr, flush=True)


def _print(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


if __name__ == "__main__":
    _define_flags()
    from ann import cli

    # A bad flag or step: one line, exit 1; warnings only: the samples are the output.
    cli.run(main, errors=("ann.train.checkpoint:CheckpointError",), quiet=True)
