"""Sequence to sequence: teacher-forced cross-entropy for training, greedy decoding for eval.

Reads `source` and `target` (int ids, right-padded) and `info.metadata` (`vocabulary`, `pad_id`,
`bos_id`, `eos_id`) of a data set such as `digit_strings`; a `task` ClassLabel, if present, adds
a per-task exact match. The decoder reads `<bos> target[:-1]`. Eval reports the teacher-forced
`loss` and `token_accuracy` over real target tokens, and `exact_match`: the share of rows whose
greedily decoded output (up to and including `<eos>`, padding after) equals the target exactly.
With `task.eval_beam_size` > 1 it also reports `beam_exact_match` (and per task): the same with
the best beam of `ann.decoding.beam_search`.

The model is given the ids of the vocabulary's digit tokens ('0'..'9'), which `seq2seq`'s
`positions='digits'` needs. Metadata `reversed_target_tasks` (optional) names the tasks (a
source's first token) whose targets are written reversed (digit_strings' `add`: the sum least-
significant digit first, which is easier to learn). Training, eval and beam search work in that
order; `reading_order` turns such answers back, and is the one place that does: `predict` (so
the export, the server and `artifact.Model` answer `add 12+34` with `4 6`, read "46"),
`ann generate` and `ann report` (which compares the outputs with the targets turned alike).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx

from ann import artifact, decoding, models
from ann.config import NONNEGATIVE, task_settings
from ann.data import Split
from experiments.common import Vocabulary, made_for, mean_of, misfit, spec

DEFAULTS = {"eval_beam_size": 0}  # 0 or 1: greedy exact match only
# Rows read at a time by the one pass over the training split that finds what its sources and
# targets look like (`Seq2Seq._scan`: each task's source shapes, the export's `framing.sources`
# that `encode_source` checks too, and the ids targets hold): every row, never a prefix (the
# first 2,000 rows were read, and a token or a shape only later rows have was refused by the
# export, the server and `ann generate` although the model was trained on it).
SCAN_ROWS = 8_192


class Seq2Seq:
    tokens_per_example = 0  # set from the data set in setup: the loop logs tokens/s

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.settings = task_settings(config, DEFAULTS, ranges={"eval_beam_size": NONNEGATIVE})
        self.vocab = Vocabulary()
        self.source_len = self.target_len = 0
        self.task_names: list[str] = []
        self.reversed_target_tasks: list[str] = []
        self._train: Split | None = None
        self._forms: dict[str, list[list[dict]]] | None = None
        self._target_ids: tuple[int, ...] | None = None
        self._frame: tuple[artifact.Framing | None] | None = None  # `encode_source`'s check

    def setup(self, train: Split) -> None:
        features, metadata = train.info.features, train.info.metadata or {}
        missing = [k for k in ("source", "target") if k not in features]
        if missing:
            raise misfit(
                f"data set {train.name!r} has no {' or '.join(missing)} feature; seq2seq reads "
                "token ids from source and target"
                f"{made_for(train.name, 'seq2seq') or ' (e.g. data.name=digit_strings)'}",
                train.name,
                "seq2seq",
                self.config,
            )
        self.vocab = Vocabulary.of(train, "seq2seq", needs=("bos_id", "eos_id"))
        self.source_len = features["source"].shape[0]
        self.target_len = features["target"].shape[0]
        self.tokens_per_example = self.target_len  # decoder positions: the loop logs tokens/s
        if "task" in features and hasattr(features["task"], "names"):
            self.task_names = list(features["task"].names)
        self.reversed_target_tasks = list(metadata.get("reversed_target_tasks", []))
        self._train, self._forms, self._target_ids, self._frame = train, None, None, None

    def source_shapes(self) -> dict[str, list[list[dict]]]:
        """What each task's sources look like in training (every row of the train split):
        task word -> its forms, each a list of runs of the tokens between the task word and
        <eos>, a run `{"name", "ids", "min", "max"}`: each run of digits is one DIGITS run
        (`reverse`: one run, DIGITS, 1 to 8 digits: the held-out lengths 3 and 6 inside its
        range), any other token a run of its own (`add`: DIGITS, `+`, DIGITS). The export
        records it (the source's `framing.sources`), and `ann.artifact.Framing` checks a source
        against it in the loader, the server and `encode_source` alike. Empty without task
        words. Read with `target_ids` in one pass (`_scan`)."""
        if self._forms is None:
            self._scan()
        assert self._forms is not None
        return self._forms

    def _scan(self) -> None:
        """One pass over every training row, SCAN_ROWS at a time, for `source_shapes` and
        `target_ids` together. Vectorized: a source's digits become one marker and what
        follows its first <eos> another, so the sources of one shape and run lengths are one
        key, and only the distinct keys (digit_strings: 18) are walked in Python.
        digit_strings' 28,500 training rows: about 10 ms in memory (data.cache=auto holds
        them), 1.4-1.7 s streamed from disk (data.cache=off: TFDS decodes ~60 us a row) on a
        2-core CPU; a split too large to hold in memory is read once this way at each start
        (training, export, `ann generate`, `ann report`), and the time logged."""
        self._forms, self._target_ids = {}, ()
        train = self._train
        if train is None:
            return
        started = time.perf_counter()
        tasks = dict(zip(self.task_ids, self.task_names))
        digits = np.array(sorted(self.vocab.digit_ids()), np.int64)
        DIGIT, AFTER = -1, -2  # markers: any digit; from the first <eos> on
        targets: set[int] = set()
        keys: set[bytes] = set()
        for start in range(0, len(train), SCAN_ROWS):
            stop = min(start + SCAN_ROWS, len(train))
            if train.cached is not None:  # views, not copies
                rows = {k: train.cached[k][start:stop] for k in ("source", "target")}
            else:
                rows = train.rows(np.arange(start, stop))
            targets.update(np.unique(rows["target"]).tolist())
            if not tasks:
                continue
            source = np.asarray(rows["source"], np.int32)
            eos = source == self.eos_id
            framed = np.isin(source[:, 0], list(tasks)) & eos.any(axis=1)  # else not read
            source, eos = source[framed], eos[framed]
            key = np.where(np.isin(source, digits), DIGIT, source).astype(np.int32)
            key[np.cumsum(eos, axis=1) > 0] = AFTER
            # Each row as one bytes object: a set of them is np.unique(axis=0) 70x faster.
            whole = f"V{key.itemsize * key.shape[1]}"
            keys.update(np.ascontiguousarray(key).view(whole)[:, 0].tolist())
        self._target_ids = tuple(sorted(i for i in targets if i != self.pad_id))
        found: dict[str, dict[tuple, list[list[int]]]] = {}
        for row in keys:
            key = np.frombuffer(row, np.int32).tolist()
            runs: list[list] = []  # [DIGITS or an id, its length]
            for i in key[1 : key.index(AFTER)]:
                name = "DIGITS" if i == DIGIT else i
                if name == "DIGITS" and runs and runs[-1][0] == name:
                    runs[-1][1] += 1
                else:
                    runs.append([name, 1])
            shape = tuple(name for name, _ in runs)
            ranges = found.setdefault(tasks[key[0]], {}).setdefault(
                shape, [[n, n] for _, n in runs]
            )
            for span, (_, n) in zip(ranges, runs):
                span[0], span[1] = min(span[0], n), max(span[1], n)

        def run(name, span):
            ids, shown = (
                (digits.tolist(), name) if name == "DIGITS" else ([name], self.vocab.tokens[name])
            )
            return {"name": shown, "ids": ids, "min": span[0], "max": span[1]}

        for task, shapes in sorted(found.items(), key=lambda t: self.task_names.index(t[0])):
            self._forms[task] = [
                [run(name, span) for name, span in zip(shape, shapes[shape])]
                for shape in sorted(shapes, key=str)
            ]
        if train.cached is None:
            logging.info(
                "seq2seq: read the %d rows of %s:%s for what sources and targets look like in "
                "%.1f s (streamed from disk; data.cache=on holds the split in memory)",
                len(train),
                train.name,
                train.split,
                time.perf_counter() - started,
            )

    def fields(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {"source": rows["source"].astype(np.int32), "target": rows["target"].astype(np.int32)}
        if self.task_names:
            out["task"] = rows["task"].astype(np.int32)
        return out

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        return models.from_config(
            self.config,
            vocab_size=len(self.vocab),
            max_len=max(self.source_len, self.target_len),
            pad_id=self.pad_id,
            digit_ids=self.vocab.digit_ids(),
            rngs=rngs,
        )

    # The special ids, for decoding here and in `ann generate`.
    @property
    def pad_id(self) -> int:
        return self.vocab.pad_id

    @property
    def bos_id(self) -> int:
        return self.vocab.bos_id

    @property
    def eos_id(self) -> int:
        return self.vocab.eos_id

    @property
    def task_ids(self) -> tuple[int, ...]:
        """Ids of the task words (`task` names that are vocabulary tokens), which begin a
        source: `reverse`, `sort`, `add` in digit_strings. Decoding never writes them (a beam's
        n-best list held them), and the export's `source` framing starts with one."""
        index = self.vocab.index
        return tuple(index[name] for name in self.task_names if name in index)

    @property
    def target_ids(self) -> tuple[int, ...]:
        """The ids the training targets hold (every row of the train split; <eos> included,
        <pad> not): digit_strings' targets are digits and <eos>. Decoding writes no other id
        (`+`, a source's token, was in `ann generate`'s n-best list), and the export records
        them (`outputs.tokens.target_ids`). Empty before `setup`: no restriction. Read with
        `source_shapes` in one pass (`_scan`)."""
        if self._target_ids is None:
            self._scan()
        assert self._target_ids is not None
        return self._target_ids

    @property
    def decoding_ids(self) -> dict:
        """The ids `ann.decoding.greedy` and `beam_search` take (here, in the export and in
        `ann generate`): a decoded target holds only ids the training targets hold
        (`target_ids`), never <pad>, <bos> or a task word."""
        return dict(
            bos_id=self.bos_id,
            eos_id=self.eos_id,
            pad_id=self.pad_id,
            banned=self.task_ids,
            allowed=self.target_ids or None,
        )

    def encode_source(self, text: str) -> np.ndarray:
        """'reverse 123' -> ids: whole words in the vocabulary, else characters; then <eos>.
        Raises ValueError naming a character outside the vocabulary, a source longer than the
        model's (`source_len` ids, <eos> included), or, where the data set has tasks, a source
        that does not start with a task word, has nothing after it, or is of a shape
        its task's training sources never have ('add 12' for 'add DIGITS+DIGITS', 9 digits to
        reverse: `source_shapes`, checked by the export's check, `ann.artifact.Framing`)."""
        index = self.vocab.index
        words = text.split()
        if self.task_names and (not words or words[0] not in self.task_names):
            raise ValueError(
                f"it starts with {words[0] if words else ''!r}, not a task word: begin with one "
                f"of {', '.join(self.task_names)}, e.g. '{self.task_names[0]} 12345'"
            )
        if self.task_names and len(words) == 1:
            raise ValueError(f"it has nothing after the task word; e.g. '{words[0]} 12345'")
        ids = []
        for word in words:
            unknown = [ch for ch in word if ch not in index]
            if word not in index and unknown:
                known = " ".join(t for t in self.vocab.tokens if not t.startswith("<"))
                raise ValueError(f"{unknown[0]!r} is not in the vocabulary ({known})")
            ids += [index[word]] if word in index else [index[ch] for ch in word]
        ids.append(self.eos_id)
        if len(ids) > self.source_len:
            raise ValueError(f"it is longer than the model's {self.source_len} ids (with <eos>)")
        row = np.pad(np.array(ids, np.int32), (0, self.source_len - len(ids)))
        # The export's own check ('add 12' was decoded as if it were a sum): one rule, one place.
        if self._frame is None:  # built once per setup: its automaton took ~4 ms a call
            self._frame = (artifact.framing(self.input_signature()["source"]),)
        frame = self._frame[0]
        why = frame.source_fault(row) if frame is not None else None
        if why is not None:
            raise ValueError(f"{why}; give a source of that shape")
        return row

    def decode(self, ids: np.ndarray | list[int]) -> str:
        """Text of ids up to <eos>, in the order given (`reading_order` first for a decoding's
        or a target's ids: `predict`'s outputs are in reading order already)."""
        out, tokens = [], self.vocab.tokens
        for i in np.asarray(ids).reshape(-1).tolist():
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                out.append(tokens[i] + (" " if len(tokens[i]) > 1 else ""))
        return "".join(out)

    def reading_order(self, tokens: Any, source: Any) -> jax.Array:
        """int [b, t] ids in training's order (a target's, a decoding's) -> the same ids in
        reading order, int [b, t]: in each row whose `source` (int [b, s]) begins with a task
        whose targets are written reversed (metadata `reversed_target_tasks`: digit_strings'
        `add`, its sum least-significant digit first), the ids before the first <eos> (or
        <pad>) are turned around; <eos> and the padding after it stay where they are. Other
        rows, and all rows of a data set without such tasks, come back as given. jax.numpy
        (traced inside `predict`, so the export turns them itself); numpy arrays are taken too.
        The one place the order is decided: `predict`, `ann generate` and `ann report` call it."""
        tokens = jnp.asarray(tokens)
        index = self.vocab.index
        turned_ids = [index[t] for t in self.reversed_target_tasks if t in index]
        if not turned_ids:
            return tokens
        width = tokens.shape[1]
        ends = (tokens == self.eos_id) | (tokens == self.pad_id)
        length = jnp.where(ends.any(axis=1), ends.argmax(axis=1), width)[:, None]
        position = jnp.arange(width)[None]
        turned = jnp.take_along_axis(
            tokens, jnp.where(position < length, length - 1 - position, position), axis=1
        )
        first = jnp.asarray(source)[:, :1]
        return jnp.where(jnp.isin(first, jnp.asarray(turned_ids)), turned, tokens)

    @property
    def answers_turned(self) -> list[str]:
        """The tasks (of `reversed_target_tasks` that are vocabulary words) whose answers
        `reading_order` turns: the export records them (`outputs.tokens.answers_turned`)."""
        return [t for t in self.reversed_target_tasks if t in self.vocab.index]

    def _ce(self, model, batch, rng):
        target = batch["target"]
        bos = jnp.full((target.shape[0], 1), self.bos_id, target.dtype)
        target_in = jnp.concatenate([bos, target[:, :-1]], axis=1)
        logits = model(batch["source"], target_in, rngs=rng).astype(jnp.float32)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, target)
        # <eos> is a real target; the padding after it is not.
        return nll, (target != self.pad_id).astype(jnp.float32), logits

    def loss(self, model, batch, rng):
        nll, weights, logits = self._ce(model, batch, rng)
        count = jnp.maximum(weights.sum(), 1.0)
        loss = (nll * weights).sum() / count
        accuracy = ((logits.argmax(-1) == batch["target"]) * weights).sum() / count
        return loss, {"loss": loss, "token_accuracy": accuracy}

    def _greedy(self, model, source):
        return decoding.greedy(model, source, self.target_len, **self.decoding_ids)

    def _beam(self, model, source):
        beams, _ = decoding.beam_search(
            model,
            source,
            self.target_len,
            beam_size=self.settings["eval_beam_size"],
            **self.decoding_ids,
        )
        return beams[:, 0]  # best first

    def eval_sums(self, model, batch):
        nll, weights, logits = self._ce(model, batch, None)
        mask = batch["mask"]
        weights = weights * mask[:, None]
        sums = {
            "nll": (nll * weights).sum(),
            "correct_tokens": ((logits.argmax(-1) == batch["target"]) * weights).sum(),
            "tokens": weights.sum(),
            "rows": mask.sum(),
        }
        decoded = {"exact": self._greedy(model, batch["source"])}
        if self.settings["eval_beam_size"] > 1:
            decoded["beam_exact"] = self._beam(model, batch["source"])
        for key, tokens in decoded.items():
            exact = (tokens == batch["target"]).all(-1) * mask
            sums[key] = exact.sum()
            for k, name in enumerate(self.task_names):
                sums[f"{key}_{name}"] = (exact * (batch["task"] == k)).sum()
        for k, name in enumerate(self.task_names):
            sums[f"rows_{name}"] = ((batch["task"] == k) * mask).sum()
        return sums

    def eval_rows(self, model, batch):
        return {}  # the sums are enough

    def eval_metrics(self, sums, rows=None):
        metrics = {
            "loss": mean_of(sums, "nll", "tokens"),
            "token_accuracy": mean_of(sums, "correct_tokens", "tokens"),
        }
        for key in ("exact", "beam_exact"):
            if key not in sums:
                continue
            metrics[f"{key}_match"] = mean_of(sums, key, "rows")
            for name in self.task_names:
                metrics[f"{key}_match_{name}"] = mean_of(sums, f"{key}_{name}", f"rows_{name}")
        return metrics

    def input_signature(self) -> dict:
        # Framed as training frames a source (digit_strings: `[task] digits [+ digits] <eos>`,
        # then pads): the loader and the server refuse other rows (`ann.artifact.Framing`).
        framing = {"task_ids": list(self.task_ids), "bos_id": self.bos_id, "eos_id": self.eos_id}
        if self.source_shapes():  # and, as in training, each task's tokens (`source_shapes`)
            framing["sources"] = self.source_shapes()
        return {"source": spec("int32", [self.source_len], self.vocab.tokens, self.pad_id, framing)}

    def output_signature(self) -> dict:
        # Padded after <eos> (`ann.decoding.greedy`): said, so that drift counts the decoded
        # tokens, not the padding (a row's length, one event, counted as many tokens).
        tokens = spec("int32", [self.target_len], self.vocab.tokens, self.pad_id)
        if self.target_ids:  # the only ids an answer holds before its padding
            tokens["target_ids"] = list(self.target_ids)
        if self.answers_turned:  # written reversed in training; answered in reading order
            tokens["answers_turned"] = self.answers_turned
        return {"tokens": tokens}

    def predict(self, model, inputs):
        """{"tokens": int [b, target_len]}: the greedy decoding of `inputs["source"]` in reading
        order (`reading_order`: `add 12+34` -> `4 6 <eos>`, not training's `6 4 <eos>`)."""
        source = inputs["source"].astype(jnp.int32)
        return {"tokens": self.reading_order(self._greedy(model, source), source)}
