"""`digit_strings`: generated seq2seq tasks on digit strings, with held-out lengths.

Three tasks on strings of n digits: `reverse` (123 -> 321), `sort` (312 -> 123) and `add`
(two n-digit numbers, 45+67 -> 112). A source is `[task] digits [+ digits] <eos>`, a target
`digits <eos>`, both right-padded with id 0. The sum of `add` is written least-significant digit
first (45+67 -> `2 1 1`, i.e. 112): a left-to-right decoder then meets each carry before the
digit it changes, as written addition does (the standard format for learned addition; the
operands stay in their usual order). `decode(ids, task="add")` turns it back around.

Lengths n run over 1..MAX_DIGITS; `train`, `validation` and `test_seen` use every n but
HELD_OUT, `test` only the HELD_OUT lengths: inside the training range (interpolation), never
trained on. Generated from a fixed seed per split; `validation` is the last 1,500 rows of the
training stream (carved from it: `train` is the rest), so choosing a checkpoint looks at neither
test split; the vocabulary, special ids and the tasks whose target is written
reversed (`reversed_target_tasks`) are in `info.metadata`.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from ann.data import splits

MAX_DIGITS = 8
HELD_OUT = (3, 6)
TASKS = ("reverse", "sort", "add")
VOCABULARY = ["<pad>", "<bos>", "<eos>", *"0123456789", "+", *TASKS]
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
SOURCE_LEN = 2 * MAX_DIGITS + 3  # task, digits, '+', digits, eos
TARGET_LEN = MAX_DIGITS + 2  # sum digits (one more than n) and eos
SIZES = {"train": 30_000, "test": 1_500, "test_seen": 1_500}  # train: before carving validation
SEEDS = {"train": 0, "test": 1, "test_seen": 2}
# Validation is sized like the test splits (generated data has no natural size; a larger one
# would only slow every eval's greedy decoding).
# split -> (stream it is generated from, rows [start, stop) of that stream)
ROWS = splits.stream_splits(SIZES, validation_rows=SIZES["test"])
REVERSED_TARGET = ("add",)  # targets written least-significant digit first
_INDEX = {t: i for i, t in enumerate(VOCABULARY)}


def _ids(tokens: list[str], length: int) -> np.ndarray:
    out = np.zeros(length, np.int32)
    out[: len(tokens)] = [_INDEX[t] for t in tokens]
    return out


def example(task: str, rng: np.random.Generator, n: int) -> tuple[list[str], list[str]]:
    """(source tokens, target tokens) of one `task` example on n-digit strings."""

    def number() -> str:  # no leading zero unless one digit
        first = str(rng.integers(1 if n > 1 else 0, 10))
        return first + "".join(str(d) for d in rng.integers(0, 10, n - 1))

    a = number()
    if task == "reverse":
        return [task, *a, "<eos>"], [*a[::-1], "<eos>"]
    if task == "sort":
        return [task, *a, "<eos>"], [*sorted(a), "<eos>"]
    b = number()
    return [task, *a, "+", *b, "<eos>"], [*str(int(a) + int(b))[::-1], "<eos>"]


def split_lengths(split: str) -> list[int]:
    """The string lengths n a split draws from: HELD_OUT for `test`, the others otherwise."""
    if split == "test":
        return list(HELD_OUT)
    return [n for n in range(1, MAX_DIGITS + 1) if n not in HELD_OUT]


def decode(ids: np.ndarray | list[int], task: str | None = None) -> str:
    """Readable text of ids up to the first <eos> (padding and <bos> dropped). With the `task`
    of a target whose digits are written reversed (add), the digits are turned back around."""
    out = []
    for i in np.asarray(ids).reshape(-1).tolist():
        if i == EOS_ID:
            break
        if i not in (PAD_ID, BOS_ID):
            token = VOCABULARY[i]
            out.append(f"{token} " if token in TASKS else token)
    return "".join(out[::-1] if task in REVERSED_TARGET else out)


class DigitStrings(tfds.core.GeneratorBasedBuilder):
    """Reverse, sort and add digit strings; held-out lengths in `test`."""

    VERSION = tfds.core.Version("2.1.0")
    RELEASE_NOTES = {
        "1.0.0": "reverse/sort/add, n = 1..8, lengths 3 and 6 held out.",
        "2.0.0": "The sum of add is written least-significant digit first.",
        "2.1.0": "validation: the last 1,500 rows of the train stream; test and test_seen "
        "unchanged.",
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "source": tfds.features.Tensor(shape=(SOURCE_LEN,), dtype=np.int32),
                    "target": tfds.features.Tensor(shape=(TARGET_LEN,), dtype=np.int32),
                    "task": tfds.features.ClassLabel(names=list(TASKS)),
                    "length": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            metadata=tfds.core.MetadataDict(
                vocabulary=VOCABULARY,
                pad_id=PAD_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                reversed_target_tasks=list(REVERSED_TARGET),
            ),
            description="Generated reverse/sort/add digit-string tasks.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # generated
        return {split: self._generate_examples(split) for split in ROWS}

    def _generate_examples(self, split: str):
        stream, start, stop = ROWS[split]
        rng = np.random.default_rng(SEEDS[stream])
        lengths = split_lengths(stream)
        for i in range(stop):
            task = TASKS[i % len(TASKS)]
            n = int(rng.choice(lengths))
            source, target = example(task, rng, n)
            if i < start:
                continue  # the stream's rows before this split's
            yield (
                i,
                {
                    "source": _ids(source, SOURCE_LEN),
                    "target": _ids(target, TARGET_LEN),
                    "task": TASKS.index(task),
                    "length": n,
                },
            )
