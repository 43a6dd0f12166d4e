"""`pydoc_chars`: a character corpus of the Python standard library's docstrings, built offline.

The docstrings (module, class and function) of every top-level `.py` file in the running
Python's standard library, read with `ast` (nothing is imported), one document per file. Files
are sorted by name; every tenth (index % 10 == 0) goes to `test`, whole: test text comes from
modules the model never read. Of every other file, the last VALIDATION_FRACTION of its
docstrings (by characters, whole docstrings, at least one where it has two) go to `validation`,
joined in file order into one text, and the rest to `train`, as nanoGPT holds out the end of
its text: validation is then drawn from the same ~140 modules as training, in their
proportions. Version 1.2.0 held out ~20 whole
files instead (`splits.carve_validation`), and which ones decided what validation was: its draw
was 43% `_pydecimal.py` (doctests full of `>>>`), so it was no sample of the text, its
bits per char were worse than test's, and a drift reference drawn from it flagged 100 random
clean test rows in 100 of 100 windows (another draw of files: 1 to 36). Each document is cut
into windows of `WINDOW` token ids with a stride of `WINDOW - 1` (each character is a
next-token target exactly once); the last window of a document is right-padded with id 0.

Characters: id 0 is padding, 1 an unknown character, 2 a newline, then printable ASCII. The
vocabulary is in the data set's metadata (`info.metadata["vocabulary"]`). The text depends on
the Python version that builds it (recorded in the metadata).
"""

from __future__ import annotations

import ast
import os
import sys
import sysconfig
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from ann.data.splits import VALIDATION_FRACTION

WINDOW = 128
TEST_EVERY = 10
PAD, UNK = "<pad>", "<unk>"
VOCABULARY = [PAD, UNK, "\n", *(chr(c) for c in range(32, 127))]
_INDEX = {ch: i for i, ch in enumerate(VOCABULARY)}


def encode(text: str) -> np.ndarray:
    """Character ids of `text` (unknown characters -> 1)."""
    return np.array([_INDEX.get(ch, 1) for ch in text], np.int32)


def decode(ids: np.ndarray | list[int]) -> str:
    """Text of character ids; padding is dropped, unknown shown as U+FFFD."""
    out = []
    for i in np.asarray(ids).reshape(-1).tolist():
        if i == 0:
            continue
        out.append("\ufffd" if i == 1 or i >= len(VOCABULARY) else VOCABULARY[i])
    return "".join(out)


def _docstrings() -> list[tuple[str, list[str]]]:
    """(file name, its docstrings in `ast.walk` order) for each top-level stdlib file that has
    any."""
    root = sysconfig.get_paths()["stdlib"]
    docs = []
    for name in sorted(f for f in os.listdir(root) if f.endswith(".py")):
        try:
            with open(os.path.join(root, name), encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        strings = [ast.get_docstring(n) for n in ast.walk(tree) if isinstance(n, kinds)]
        strings = [s for s in strings if s]
        if strings:
            docs.append((name, strings))
    return docs


def windows(ids: np.ndarray, window: int = WINDOW) -> Iterator[np.ndarray]:
    """Windows of `window` ids, stride window - 1, the last right-padded with 0."""
    for start in range(0, max(len(ids) - 1, 1), window - 1):
        chunk = ids[start : start + window]
        yield np.pad(chunk, (0, window - len(chunk)))


def split_documents(
    docs: list[tuple[str, list[str]]] | None = None,
) -> dict[str, list[tuple[str, str]]]:
    """The files' docstrings (`docs`, as `_docstrings` reads them by default) as (file name,
    text) documents of train, validation and test (see the module docstring): every tenth file
    whole to test; of each other file, its last docstrings, about VALIDATION_FRACTION of its
    characters (the fewest whose characters reach it), to validation, the rest to train.
    Validation is one document, named "validation": those tails in file order."""
    docs = _docstrings() if docs is None else docs
    split: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    tails = []
    for i, (name, strings) in enumerate(docs):
        if i % TEST_EVERY == 0:
            split["test"].append((name, "\n\n".join(strings) + "\n"))
            continue
        sizes = np.cumsum([len(s) for s in strings[::-1]])
        held = int(np.searchsorted(sizes, VALIDATION_FRACTION * sizes[-1])) + 1
        held = min(held, len(strings) - 1)  # a file of one docstring stays whole in train
        split["train"].append((name, "\n\n".join(strings[: len(strings) - held]) + "\n"))
        tails += strings[len(strings) - held :]
    # One text, as nanoGPT's: ~140 short documents made 11% of validation's windows the padded
    # last window of a document (train's 3%), and so a reference that predicts the character
    # after a final newline three times as often as any traffic.
    split["validation"] = [("validation", "\n\n".join(tails) + "\n")]
    return split


class PydocChars(tfds.core.GeneratorBasedBuilder):
    """Standard-library docstrings as fixed-length character windows."""

    VERSION = tfds.core.Version("1.3.0")
    RELEASE_NOTES = {
        "1.0.0": "Top-level stdlib files, every tenth file held out for test.",
        "1.1.0": "validation: 15% of the train files (seeded); test unchanged.",
        "1.2.0": "validation files chosen by splits.carve_validation, as in every other "
        "builder (other files than 1.1.0's); test unchanged.",
        "1.3.0": "validation: the last 15% (by characters) of every train file's docstrings, "
        "not 15% of the files (1.2.0's were 43% _pydecimal.py); test unchanged.",
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {"tokens": tfds.features.Tensor(shape=(WINDOW,), dtype=np.int32)}
            ),
            metadata=tfds.core.MetadataDict(
                vocabulary=VOCABULARY,
                pad_id=0,
                python=sys.version.split()[0],
            ),
            description="Python standard library docstrings, character windows.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {name: self._generate_examples(d) for name, d in split_documents().items()}

    def _generate_examples(self, docs):
        for name, text in docs:
            for j, tokens in enumerate(windows(encode(text))):
                yield f"{name}:{j}", {"tokens": tokens}
