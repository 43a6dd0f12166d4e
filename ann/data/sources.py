"""Data sets by name: ann's offline builders, or any TFDS data set prepared as array_record.

A split is a name (`train`, `validation`, `test`) or TFDS's slicing syntax over them
(https://www.tensorflow.org/datasets/splits): `train[:90%]`, `train[90%:]`, `train[:5000]`,
`train+test`. A TFDS set without a validation split gets one that way: `data.train_split=
"train[:90%]"` with `data.validation_split="train[90%:]"` (the two slices of one split never
overlap).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import difflib
import errno
import fcntl
import hashlib
import io
import json
import logging as py_logging
import numbers
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from tensorflow_datasets.core.utils import gcs_utils

from ann import atomic, shadowing
from ann.config import ConfigError, did_you_mean
from ann.data.offline import BUILDERS


@dataclasses.dataclass
class Split:
    """One split of a data set: random access to its rows, optionally held in memory."""

    name: str
    split: str
    info: tfds.core.DatasetInfo
    source: Any  # tfds ArrayRecordDataSource: len() and __getitems__
    cached: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.source)

    def rows(self, indices: int | Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """The rows at `indices` (integers in [0, len(self)), one dimension), stacked feature by
        feature: {feature: array [len(indices), ...]}; one integer gives that row alone, without
        the leading axis, as NumPy's `x[3]` does ({feature: array [...]}; `rows([3])` keeps
        it). Raises IndexError naming the split, its row count and the first index outside it
        (array_record said only "Record key should be in [0, num_records)"; a negative one read
        from the end when held in memory), TypeError for indices that are not integers (0.5
        read row 0; `[1, None]` failed in this message's own code) and ValueError for indices
        of more than one dimension or ragged lists (array_record's AttributeError). A refusal
        names the position of the first bad one of several indices; of one index, the index
        alone (its value, and its type where that is what is wrong)."""
        where = f"rows of {self.name}:{self.split}"
        try:
            indices = np.asarray(indices)
        except ValueError:  # ragged nested lists: NumPy's own message named no argument
            raise ValueError(
                f"{where}: indices must be one dimension of integers, got nested lists of "
                "different lengths"
            ) from None
        if indices.ndim > 1:
            raise ValueError(
                f"{where}: indices must be one dimension, got shape {indices.shape}; pass "
                "np.ravel(indices) and reshape the rows' features after"
            )
        one = indices.ndim == 0  # one row, as x[3]: checked as [3], its leading axis dropped
        indices = indices.reshape(-1)
        # A refusal says "an index" of one, "indices" and the position of the first bad one of
        # several (one index was told "at position 0", or "(0.5 first)" of its only value).
        must = "the index must be an integer" if one else "indices must be integers"
        if indices.size == 0:  # `[]` is float64 to NumPy
            indices = indices.astype(np.int64)
        if indices.dtype.kind == "O":  # None among ints, or ints past int64 (2**70)
            values = indices.tolist()
            for at, value in enumerate(values):
                if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
                    at_ = "" if one else f" at position {at}"
                    raise TypeError(f"{where}: {must}, got {value!r}{at_}")
            for at, value in enumerate(values):
                if not 0 <= value < len(self):  # ints past int64 (2**70) among them
                    raise self._outside(at, value, one)
            indices = indices.astype(np.int64)
        elif indices.dtype.kind not in "iu":
            kind = {"U": "text", "S": "bytes"}.get(indices.dtype.kind, indices.dtype.name)
            first = indices[0].item()
            if one:  # a bool is no mask of one row: NumPy's x[True] adds an axis
                raise TypeError(f"{where}: {must}, got {first!r} ({kind})")
            raise TypeError(
                f"{where}: {must}, got {kind} ({first!r} first)"
                + ("; pass np.flatnonzero(mask) for a mask" if indices.dtype.kind == "b" else "")
            )
        if indices.size:
            count = len(self)
            bad = (indices < 0) | (indices >= count)
            if bad.any():
                at = int(np.argmax(bad))
                raise self._outside(at, indices[at], one)
        indices = indices.astype(np.int64, copy=False)
        if self.cached is not None:
            found = {key: value[indices] for key, value in self.cached.items()}
        elif not indices.size:  # no record to stack: one row's features, none of its rows
            return {key: value[:0] for key, value in self.rows([0]).items()}
        else:
            records = self.source.__getitems__(indices.tolist())
            found = {key: np.stack([r[key] for r in records]) for key in records[0]}
        return {key: value[0] for key, value in found.items()} if one else found

    def _outside(self, at: int, index: Any, one: bool = False) -> IndexError:
        """The refusal of `index`, outside the split's rows: at position `at` of several
        indices, or the one index given (`one`: no position)."""
        count = len(self)
        has = f"it has {count:,} rows (indices 0 to {count - 1:,})" if count else "it has no rows"
        return IndexError(
            f"rows of {self.name}:{self.split}: {has}, got {index}"
            + ("" if one else f" at position {at}")
        )

    def column(self, key: str) -> np.ndarray:
        """Feature `key` of every row, rows first ([len(self), ...]): the array held in memory,
        else every record read from disk with that feature alone parsed and decoded.
        ArrayRecord stores rows, not columns, so a streamed split's column reads all of its
        bytes (`disk_bytes`; 100,000 rows of 30 MiB: 2.5 to 4 s on a loaded 2-core machine,
        against 4.5 to 11 s to decode them whole). Raises KeyError for a feature the split does
        not have, naming the split's features (it said only 'lbl'), TypeError for a `key` that
        is no str."""
        if not isinstance(key, str):  # it was "no feature None" (a KeyError)
            raise TypeError(f"key: expected a feature name (str), got {type(key).__name__}")
        names = list(self.cached if self.cached is not None else self.info.features.keys())
        if key not in names:
            raise KeyError(
                f"{self.name}:{self.split} has no feature {key!r}"
                f"{did_you_mean(str(key), names)}; its features: {', '.join(names)}"
            )
        if self.cached is not None:
            return self.cached[key]
        from tensorflow_datasets.core import example_parser

        feature = self.info.features[key]  # KeyError: no such feature
        parser = example_parser.ExampleParserNp(
            {key: self.info.features.get_serialized_info()[key]}
        )
        raw, values = self.source.data_source, []
        for start in range(0, len(self), _COLUMN_CHUNK):
            records = raw.__getitems__(list(range(start, min(len(self), start + _COLUMN_CHUNK))))
            values += [feature.decode_example_np(parser.parse_example(r)[key]) for r in records]
        if not values:
            return self.rows([])[key]
        return np.stack([np.asarray(v) for v in values])

    def disk_bytes(self) -> int:
        """The bytes on disk of this split's records: of each named split it takes (`train`,
        `train[:50%]+validation`: TFDS gives a slice or a sum none), its rows' share."""
        total = 0
        for part in self.split.split("+"):
            whole = self.info.splits[part.split("[")[0].strip()]
            rows = int(self.info.splits[part.strip()].num_examples)
            total += int(whole.num_bytes) * rows // max(1, int(whole.num_examples))
        return total

    def cache(self) -> Split:
        """Reads the whole split into memory once (for small data sets)."""
        if self.cached is None:
            self.cached = self.rows(np.arange(len(self)))
        return self


_COLUMN_CHUNK = 4096  # records `Split.column` reads from disk at once

# data.cache="auto" holds a split in memory only when its decoded rows are estimated to take at
# most this many bytes (per split); a larger one streams from disk through array_record's random
# access. "on" always holds it, "off" never does.
CACHE_LIMIT_BYTES = 1 << 30

# Splits this process has decoded into memory, most recently used last, up to MEMO_BYTES in all:
# `ann export`, calibration and `ann report` open a run's splits again after restoring its model
# (export decoded digit_strings' 28,500 training rows twice, 7 s each on 2 cores), and a test
# session opens the same splits many times. The arrays are shared, read-only, never copied.
MEMO_BYTES = CACHE_LIMIT_BYTES
_decoded: collections.OrderedDict[tuple[str, str, str], dict[str, np.ndarray]] = (
    collections.OrderedDict()
)


def _cached(split: Split, key: tuple[str, str, str]) -> Split:
    """`split` held in memory: the arrays decoded before under `key` (data dir, set, split), in
    this process or on disk (`_on_disk`), else decoded now and remembered (the least recently
    used dropped past MEMO_BYTES)."""
    arrays = _decoded.get(key)
    if arrays is None:
        path = _on_disk(key[0], split.split)
        arrays = _read_decoded(path)
        if arrays is None:
            arrays = split.cache().cached
            _write_decoded(path, arrays)
        for value in arrays.values():
            value.setflags(write=False)
        _decoded[key] = arrays
        total = sum(v.nbytes for a in _decoded.values() for v in a.values())
        while total > MEMO_BYTES and len(_decoded) > 1:
            _, dropped = _decoded.popitem(last=False)
            total -= sum(v.nbytes for v in dropped.values())
    _decoded.move_to_end(key)
    split.cached = arrays
    return split


# A split held in memory is also kept decoded on disk, beside the set's files
# (DATA_DIR/NAME/VERSION/decoded/SPLIT.FINGERPRINT/, one .npy per feature), and the next process
# maps it from there: TFDS decodes a row at a time in Python (about 0.1 ms a row here, so
# digit_strings' 28,500 training rows took 3-7 s at every start of a run, an export or a report).
# The fingerprint covers the split and the set's files (names, sizes, modification times): a
# rebuilt set is decoded again. Bump DECODED_FORMAT when what is written changes.
DECODED_FORMAT = 1


def _on_disk(data_dir: str, split: str) -> str:
    """The directory that holds `split` of the set in `data_dir` decoded (see above)."""
    digest = hashlib.sha256(f"{DECODED_FORMAT}|{split}".encode())
    for entry in sorted(os.scandir(data_dir), key=lambda e: e.name):
        if entry.is_file():
            stat = entry.stat()
            digest.update(f"|{entry.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", split)
    return os.path.join(data_dir, "decoded", f"{name}.{digest.hexdigest()[:16]}")


def _read_decoded(path: str) -> dict[str, np.ndarray] | None:
    """The arrays `_write_decoded` left in `path`, memory-mapped read-only; None if absent or
    damaged (a file gone or cut short)."""
    try:
        with open(os.path.join(path, "features.json")) as f:
            names = json.load(f)
        return {
            k: np.load(os.path.join(path, f"{i}.npy"), mmap_mode="r") for i, k in enumerate(names)
        }
    except (OSError, ValueError):  # absent, or damaged (removed, so a new copy can take its place)
        shutil.rmtree(path, ignore_errors=True)
        return None


def _write_decoded(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Writes `arrays` into `path` whole or not at all (a directory renamed into place); a
    process that renamed first wins, and a data dir this user cannot write keeps none."""
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        name = os.path.basename(path).rsplit(".", 1)[0]
        stale = [e.path for e in os.scandir(parent) if e.name.rsplit(".", 1)[0] == name]
        tmp = tempfile.mkdtemp(dir=parent, prefix=".writing-")
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the copy from a shared data dir's users
    except OSError:
        return
    try:
        for i, value in enumerate(arrays.values()):
            np.save(os.path.join(tmp, f"{i}.npy"), value, allow_pickle=False)
        with open(os.path.join(tmp, "features.json"), "w") as f:
            json.dump(list(arrays), f)
        os.rename(tmp, path)
    except (OSError, ValueError):  # another process's copy is in place, or the disk is full
        shutil.rmtree(tmp, ignore_errors=True)
        return
    for old in stale:  # the same split of an earlier build of the set
        shutil.rmtree(old, ignore_errors=True)


def decoded_bytes(info: tfds.core.DatasetInfo, split: str) -> int:
    """Estimated bytes of `split`'s rows (a split name or a TFDS slice) once decoded: rows x the
    fixed shapes' sizes of every feature (TFDS's tensor info). A feature of variable shape makes
    it the size on disk instead (`num_bytes` of the whole split, pro rata for a slice; encoded,
    so an underestimate)."""
    rows = int(info.splits[split].num_examples)
    tensors = jax.tree.leaves(
        info.features.get_tensor_info(), is_leaf=lambda x: hasattr(x, "shape")
    )
    if any(d is None or d < 0 for t in tensors for d in t.shape):
        whole = info.splits[split.split("[")[0]]
        return int(whole.num_bytes) * rows // max(1, int(whole.num_examples))
    return rows * sum(int(np.prod(t.shape)) * np.dtype(t.np_dtype).itemsize for t in tensors)


def default_data_dir() -> str:
    """$TFDS_DATA_DIR, else ~/tensorflow_datasets (an empty variable counts as unset: it gave
    "cannot build the digits data set in  (No such file or directory)")."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


@contextlib.contextmanager
def _without_first_build_warning() -> Iterator[None]:
    """Drops TFDS's warning that a not yet built variant folder "has no dataset_info.json":
    on a first run that is expected, and the next line says the set is being built."""

    def keep(record: py_logging.LogRecord) -> bool:
        return "has no dataset_info.json" not in record.getMessage()

    logger = py_logging.getLogger("absl")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _prepare_offline(builder: tfds.core.DatasetBuilder) -> None:
    """Builds an offline set once, with one line of ours instead of TFDS's "Downloading and
    preparing dataset Unknown size ..." (nothing is downloaded) and its progress bars."""
    logging.info(
        "building data set %s %s in %s (once)", builder.name, builder.version, builder.data_dir
    )
    shown = tfds.core.utils.tqdm_utils._active  # restored: a user's own setting wins after
    tfds.display_progress_bar(False)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            builder.download_and_prepare()
    finally:
        tfds.display_progress_bar(shown)


# TFDS's DatasetInfo.initialize_from_bucket, run for every builder of a set not prepared in its
# data_dir, makes tempfile.mkdtemp("tfds") before it asks the GCS bucket for files and never
# removes it: an empty /tmp/tmpXXXXtfds per build of ann's own sets and per `tfds.builder` of a
# TFDS set not yet prepared (which ann then refuses). The method is wrapped once, at import
# (ann.data imports this module, so before any of ann's builders is made), to ask first and make
# the directory only for files to copy: with GCS off (TFDS's default) it asks nothing. One wrap
# covers every builder class (ann's, TFDS's, a user's), is thread-safe and changes nothing else;
# swapping tempfile.tempdir around `tfds.builder` would be process-wide state that other
# threads' temporary files race, and subclassing a user's class would register a second set.
def _initialize_from_bucket(info: tfds.core.DatasetInfo) -> None:
    if gcs_utils.gcs_dataset_info_files(info.full_name):  # None when GCS is off (TFDS's default)
        _TFDS_INITIALIZE_FROM_BUCKET(info)


_TFDS_INITIALIZE_FROM_BUCKET = tfds.core.DatasetInfo.initialize_from_bucket
tfds.core.DatasetInfo.initialize_from_bucket = _initialize_from_bucket


def _builder(
    name: str, data_dir: str, given: bool = False, config: bool = True
) -> tfds.core.DatasetBuilder:
    """The builder of `name` in `data_dir` (`given`: by data.data_dir, not the default, so a
    refusal points at that key rather than at $TFDS_DATA_DIR, which it overrides). `config`:
    whether the config chose them (a refusal names its keys, data.name and data.data_dir),
    else a Python call of `load` (it names the arguments, `name` and `data_dir`)."""
    name_is = "config key 'data.name'" if config else "load(name=...)"
    dir_is = "config key 'data.data_dir'" if config else "load(data_dir=...)"
    set_dir = "--config.data.data_dir=" if config else "data_dir="
    if name in BUILDERS:
        # Processes of one run (or trials of a sweep) may start on a fresh data_dir together:
        # one builds, the others wait and then read what it built.
        try:
            os.makedirs(data_dir, exist_ok=True)
            lock = open(os.path.join(data_dir, f".{name}.lock"), "w")  # noqa: SIM115
        except OSError as e:  # a file there, no such parent, no permission: not a traceback
            # A shared data dir this user may only read (permissions, a read-only mount):
            # the lock guards a build, and a set prepared there needs none. It was refused
            # with a write's fix ("give a writable directory") though only reading was asked.
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and os.path.isdir(data_dir):
                with _without_first_build_warning():
                    builder = BUILDERS[name](data_dir=data_dir, file_format="array_record")
                if builder.is_prepared():
                    return builder
            # What the path is: a path below a file said "(Not a directory)".
            why = atomic.why_not_creatable(data_dir) or e.strerror
            why = f"it {why}" if why.startswith("is ") else why
            raise ConfigError(
                f"{dir_is}: cannot build the {name} data set in {data_dir} ({why}); give a "
                f"writable directory, e.g. {set_dir}{default_data_dir()}"
            ) from e
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with _without_first_build_warning():
                builder = BUILDERS[name](data_dir=data_dir, file_format="array_record")
                if not builder.is_prepared():
                    _prepare_offline(builder)
        return builder
    try:
        with _without_first_build_warning():  # unprepared: the error below says so, with the fix
            builder = tfds.builder(name, data_dir=data_dir)
            prepared = builder.is_prepared()
    # ValueError: "3", "a b"; AssertionError: a registered builder asked for a version not there
    except (tfds.core.registered.DatasetNotFoundError, ValueError, AssertionError) as e:
        folder = os.path.join(data_dir, name.partition(":")[0])
        if os.path.isdir(folder) and not _versions(folder):
            # A prepare that failed ("No examples were yielded") or a `mkdir`: it was "unknown
            # data set 'my_tab': ..., which holds my_tab (did you mean 'my_tab'?)".
            raise ConfigError(
                f"{name_is}: data set {name!r}: {folder} holds no prepared version (no "
                "VERSION folder: a prepare that failed, or a folder made by hand); "
                "prepare it again (its builder's `MySet(data_dir=..., file_format="
                "'array_record').download_and_prepare()`, README \"Data\"), or remove the folder"
            ) from e
        # A set of the user's own, prepared elsewhere, is found by its directory alone: say
        # which one was searched (a later `ann export` in a shell without $TFDS_DATA_DIR).
        where = "data.data_dir" if config else "data_dir"
        raise ConfigError(
            f"{name_is}: unknown data set {name!r}: not one of ann's offline sets "
            f"({', '.join(sorted(BUILDERS))}), a TFDS name such as 'mnist', or a set prepared "
            f"in {data_dir} ({where}, else $TFDS_DATA_DIR, else ~/tensorflow_datasets)"
            f"{_what_is_in(data_dir, name)}; if it was prepared elsewhere, set "
            f"{set_dir.rstrip('=') if given else 'TFDS_DATA_DIR'} to that directory"
        ) from e
    if not prepared:
        raise ConfigError(
            f"data set {name!r} is not prepared in {data_dir}; prepare it there in ArrayRecord "
            f"format (where TensorFlow and internet are: `tfds build {name} "
            f"--file_format=array_record --data_dir={data_dir}`; ann does not install "
            f"TensorFlow) or set TFDS_DATA_DIR (or {set_dir.rstrip('=')}) to where it is"
        )
    return builder


def _versions(folder: str) -> list[str]:
    """The folders of a data set's folder that may hold a prepared version (`VERSION/`, or
    `CONFIG/`): not the `VERSION.incomplete...` ones a prepare in progress, or one that failed,
    leaves."""
    return sorted(
        d
        for d in os.listdir(folder)
        if os.path.isdir(os.path.join(folder, d)) and "incomplete" not in d and d[0] != "."
    )


def _what_is_in(data_dir: str, name: str) -> str:
    """What a data directory holds, as an unknown set's refusal says it: ", which does not
    exist", ", which is a file", or the sets prepared there and the one `name` is near (the
    versions prepared, for `name:VERSION`)."""
    if not os.path.isdir(data_dir):
        return (
            ", which is a file"
            if os.path.exists(data_dir)
            else f", which {atomic.absent(data_dir)}"
        )

    def folders(path: str) -> list[str]:
        return sorted(
            d
            for d in os.listdir(path)
            if os.path.isdir(os.path.join(path, d)) and d[0] != "." and d != "downloads"
        )

    sets = folders(data_dir)
    if not sets:
        return ", which holds no data set"
    base, _, version = name.partition(":")  # mnist:3.0.1 names a version
    if version and base in sets:
        return f", which holds {base} version {', '.join(folders(os.path.join(data_dir, base)))}"
    near = difflib.get_close_matches(base.lower(), sets, n=1, cutoff=0.6)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f", which holds {', '.join(sets[:10])}{', ...' * (len(sets) > 10)}{hint}"


def load(
    name: str,
    split: str,
    data_dir: str | None = None,
    cache: str | bool = False,
    key: str = "",
) -> Split:
    """Opens `split` (a name or a TFDS slice such as `train[90%:]`) of data set `name`,
    building ann's offline sets on first use. `cache` (the config's `data.cache`: "auto", "on",
    "off"; or a bool) says whether to hold it in memory; "auto" holds it when its estimated
    decoded size (`decoded_bytes`) is at most CACHE_LIMIT_BYTES. `key` names the config key
    that chose the split, for the error message; without one (a Python call) the refusals name
    the arguments (`load(name=...)`), not the config's keys. Raises ConfigError for an unknown
    data set, an unknown split, a bad slice or one without rows, and ImportError where `ann`
    was imported from a clone's root, not its package (`ann.shadowing`): TFDS's traceback.
    TypeError names the argument of another type (`name`, `split`: str; `data_dir`: a str or
    path), ValueError a `cache` that is none of its values (TFDS's own errors, or none, came of
    them: `load(None, "test")`, `cache="maybe"`)."""
    shadowing.check()
    for argument, value in (("name", name), ("split", split)):
        if not isinstance(value, str):
            raise TypeError(f"{argument}: expected a str, got {type(value).__name__}")
    if isinstance(data_dir, os.PathLike):
        data_dir = os.fspath(data_dir)
    if data_dir is not None and not isinstance(data_dir, str):
        raise TypeError(
            f"data_dir: expected a str or path (or None), got {type(data_dir).__name__}"
        )
    if cache not in ("auto", "on", "off") and not isinstance(cache, bool):
        raise ValueError(f"cache={cache!r} must be 'auto', 'on', 'off', True or False")
    given = bool(data_dir)
    data_dir = data_dir or default_data_dir()
    builder = _builder(name, data_dir, given, config=bool(key))
    try:
        # Parses slices too; raises on unknown names and bad syntax.
        rows = builder.info.splits[split].num_examples
    except (KeyError, ValueError) as e:
        names = sorted(builder.info.splits)
        where = f"config key '{key}': " if key else ""
        fix = ""
        if split == "validation" and "train" in names:
            fix = (
                "; carve one from train: --config.data.train_split='train[:90%]' "
                "--config.data.validation_split='train[90%:]'"
            )
        raise ConfigError(
            f"{where}data set {name!r} has no split {split!r}{did_you_mean(split, names)}; its "
            f"splits are {', '.join(names)} (or TFDS slices of them, e.g. 'train[90%:]'){fix}"
        ) from e
    if rows == 0:  # an empty slice: TFDS's reader fails on it with a message about paths
        where = f"config key '{key}' is " if key else ""
        raise ConfigError(
            f"{where}{split!r}, which has no rows of data set {name!r}; choose a slice with "
            "rows (e.g. 'train[90%:]', with data.train_split='train[:90%]')"
        )
    try:
        source = builder.as_data_source(split=split)
    except Exception as e:  # e.g. prepared as tfrecord, which needs TensorFlow to read
        raise ConfigError(
            f"data set {name!r} in {data_dir} cannot be read without TensorFlow ({e}); rebuild it "
            f"with `tfds build {name} --file_format=array_record`"
        ) from e
    for feature, shape in builder.info.features.shape.items():
        if None in tuple(shape):  # batches stack rows: "all input arrays must have the same shape"
            raise ConfigError(
                f"feature {feature!r} of data set {name!r} is shape {list(shape)}, of varying "
                "length; ann stacks rows into batches of one fixed shape: pad or crop it to a "
                "fixed length in its builder (tfds.features.Tensor(shape=(N,), ...))"
            )
    result = Split(name=name, split=split, info=builder.info, source=source)
    key = (os.path.abspath(builder.data_dir), name, split)
    if cache == "auto":
        size = decoded_bytes(builder.info, split)
        if size <= CACHE_LIMIT_BYTES:
            return _cached(result, key)
        logging.info(
            "data: streaming %s:%s from disk (about %.0f MiB decoded, above the %d MiB that "
            "data.cache=auto holds in memory; data.cache=on holds it anyway)",
            name,
            split,
            size / 2**20,
            CACHE_LIMIT_BYTES >> 20,
        )
        return result
    return _cached(result, key) if cache in (True, "on") else result


def _row_ranges(info: tfds.core.DatasetInfo, split: str) -> list[tuple[str, int, int]]:
    """(split name, first row, end row) of each part of `split` (a name or a TFDS slice such
    as `train[90%:]`), resolved against the data set's split sizes."""
    parts = tfds.core.ReadInstruction.from_spec(split).to_absolute(info.splits)
    return [
        (p.splitname, p.from_ or 0, info.splits[p.splitname].num_examples if p.to is None else p.to)
        for p in parts
    ]


ROW_ID = "row_id"  # a feature naming an example's row in the data set's source


def check_splits_apart(train: Split, validation: Split, evals: Sequence[Split]) -> None:
    """Raises ConfigError when the validation split shares rows with the train split or a
    reported one (`check_validation_apart`: slices of one split), or, in a data set whose
    examples carry a `row_id` feature (ann's digits: two partitions of one array), when two
    splits of different names share rows: validation with train or a reported split (choosing
    on rows it trained on, or on the rows it reports), or train with a reported split (a test
    score of rows the model trained on). A split reported under its own name as well
    (`eval_splits=("test", "train")`) is what it says, and allowed."""
    check_validation_apart(
        train.info,
        validation.split,
        [("data.train_split", train.split)] + [("data.eval_splits", e.split) for e in evals],
    )
    if evals:  # the first is the run's test score (eval/...): never rows it trained on
        _check_test_apart(train, evals[0])
    if ROW_ID not in train.info.features:
        return
    pairs = [(e, "data.eval_splits", train, "data.train_split") for e in evals]
    pairs += [(validation, "data.validation_split", train, "data.train_split")]
    pairs += [(validation, "data.validation_split", e, "data.eval_splits") for e in evals]
    for a, a_key, b, b_key in pairs:
        names = {part for part, _, _ in _row_ranges(a.info, a.split)}
        if names & {part for part, _, _ in _row_ranges(b.info, b.split)}:
            continue  # one split's own rows: the range check above judged them
        shared = np.intersect1d(_row_ids(a), _row_ids(b)).size
        if shared:
            raise ConfigError(
                f"config key '{a_key}' {a.split!r} shares {shared:,} of its {len(a):,} rows "
                f"with {b_key} {b.split!r} (the same examples of {a.name}, by their "
                f"`{ROW_ID}`, under another split's name), so {_leak(a_key, b_key)}; take "
                f"every split from one partition of {a.name}" + _PARTITIONS.get(a.name, "")
            )


def check_finite(split: Split, key: str) -> None:
    """Raises ConfigError when a floating-point feature of an in-memory split holds NaN or
    infinity (a streamed one is not read for this): a run on it "diverged" at step 1 whatever
    its learning rate, or reported a NaN score. `key`: the config key that named the split."""
    if split.cached is None:
        return
    for name, values in split.cached.items():
        if not np.issubdtype(values.dtype, np.floating):
            continue
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        if bad.any():
            raise ConfigError(
                f"{key} {split.split!r} of data set {split.name!r}: feature {name!r} holds NaN "
                f"or infinity in {int(bad.sum()):,} of its {len(values):,} rows (the first: row "
                f"{int(bad.argmax())}); ann trains and scores on finite numbers: drop or impute "
                "them in the data set"
            )


# The partitions of ann's own data sets that have more than one.
_PARTITIONS = {
    "digits": " (train, validation, test; or train_writers, validation_writers, test_writers)"
}


def _check_test_apart(train: Split, test: Split) -> None:
    """Raises ConfigError when the first reported split shares rows with the train split by
    its own name (`train`, or slices of one split that overlap): `eval/accuracy`, the test
    score of the `done:` line, was the training accuracy. A later reported split may be the
    train split (`eval_train/...`, to see overfitting)."""
    shared = _shared_rows(train.info, test.split, train.split)
    if shared is not None:
        name, low, high = shared
        raise ConfigError(
            f"config key 'data.eval_splits' starts with {test.split!r}, which shares rows "
            f"{low}-{high - 1} of {name!r} with data.train_split {train.split!r}: the first "
            "reported split is the run's test score (eval/...), never rows it trained on; "
            "report the train split after it, e.g. "
            f"--config.data.eval_splits=\"('test', '{train.split}')\""
        )


def _leak(a_key: str, b_key: str) -> str:
    """What sharing rows between the splits of two config keys would do, in words."""
    if a_key == "data.eval_splits":
        return "it would report a score on rows the model trained on"
    if b_key == "data.train_split":
        return "it would choose the checkpoint on rows the model trained on"
    return "it would choose on the rows it reports"


def _row_ids(split: Split) -> np.ndarray:
    """Every `row_id` of `split` (its cached column, else read once)."""
    if split.cached is not None:
        return split.cached[ROW_ID]
    return np.asarray([r[ROW_ID] for r in split.source.__getitems__(list(range(len(split))))])


def check_validation_apart(
    info: tfds.core.DatasetInfo, validation: str, others: Sequence[tuple[str, str]]
) -> None:
    """Raises ConfigError when the validation split (what chooses) shares rows with one of
    `others`, (config key, split) pairs: the train split or a reported one. Whole names are
    compared by the config's own check; this one resolves slices (`train[90%:]` against
    `train`, `test[:50%]` against `test`)."""
    for key, split in others:
        shared = _shared_rows(info, split, validation)
        if shared is None:
            continue
        name, low, high = shared
        fix = (
            f"carve both from {name!r}: --config.data.train_split='{name}[:90%]' "
            f"--config.data.validation_split='{name}[90%:]'"
            if key == "data.train_split"
            else f"choose validation rows outside {split!r}"
        )
        raise ConfigError(
            f"config key 'data.validation_split' is {validation!r}, which shares rows "
            f"{low}-{high - 1} of {name!r} with {key} {split!r}: the split that chooses must "
            f"be one of its own; {fix}"
        )


def _shared_rows(info: tfds.core.DatasetInfo, a: str, b: str) -> tuple[str, int, int] | None:
    """(split name, first row, end row) of the first rows two split specs share by position
    (slices of one named split that overlap), or None."""
    for name, start, end in _row_ranges(info, a):
        for other, other_start, other_end in _row_ranges(info, b):
            low, high = max(start, other_start), min(end, other_end)
            if name == other and low < high:
                return name, low, high
    return None
