"""An exported model on disk: its layout, its integrity check, and a loader that needs only jax.

    DIR/
      manifest.json          what the model is (written by `ann.export`), with the sha256 and
                             size of every other file
      function.jaxexport     the inference function, serialized by `jax.export` (symbolic batch)
      weights.safetensors    the weights, flat, keyed by parameter path ("blocks/0/bn1/scale")
      reference.safetensors  the drift reference: a seeded sample of rows held out of training
                             (of training rows before 2026-12-06), `inputs/NAME` (raw model
                             inputs) and `outputs/NAME` (the model's outputs on them); in
                             exports of before then also `validation/NAME` (its outputs on the
                             validation split); optional (exports before it still load), read
                             by `load_reference` through the same checks

The format's rule for changes (as Protocol Buffers' for fields): an addition an older reader
can ignore (a manifest key, a listed file, a reference.safetensors kind) keeps `FORMAT`, and
readers ignore what they do not know (each listed file is still size- and sha256-checked); a
change an older reader would misread (a key renamed or given another meaning, a file that must
be read differently) bumps its number, and a reader refuses a newer number in one line that
says to upgrade ann, rather than failing later on what it cannot read.

Nothing read here is trusted. The manifest is read only if it is a regular file of at most
MAX_MANIFEST_BYTES, and its structure is checked before use. Each file it lists must be a plain
name in DIR itself (no '/', no '..', no absolute path), a regular file (not a symbolic link,
FIFO, device or directory), of the size the manifest declares (at most MAX_FILE_BYTES, checked
with fstat before a byte is read), with the declared sha256. Loading reads each file once and
deserializes those same bytes, so a file changed between the check and the use is not possible.
Nothing here imports flax or the training code: a server needs jax, numpy and safetensors.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import functools
import hashlib
import json
import os
import re
import stat
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

MANIFEST = "manifest.json"
FUNCTION = "function.jaxexport"
WEIGHTS = "weights.safetensors"
REFERENCE = "reference.safetensors"
# The manifest's post-training fits the exported function applies, where it has them: a
# classifier's temperature (`calibration`), an anomaly detector's `threshold`. What serves or
# lists a version shows them (model metadata, `registry show`).
FITS = ("calibration", "threshold")
FORMAT = "ann.export/1"
_FORMAT_NUMBER = re.compile(r"^ann\.export/([0-9]{1,6})$")
# A manifest holds signatures, config, metrics and reference statistics (about 40 KB for the
# digits CNN; per-feature statistics are capped by `ann.export.MAX_FEATURES`).
MAX_MANIFEST_BYTES = 16 << 20
# The largest file an export may list: above it, a declared size is refused before any read.
MAX_FILE_BYTES = 64 << 30
# A registry URI (`models:/NAME/3`, `ann.registry`) starts with it; `load` takes a directory.
REGISTRY_URI_SCHEME = "models:"
FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # a plain name inside the export
SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


# What to do about an export's damaged or missing file: its bytes are not to be trusted, so
# the only fix is a fresh copy (a refusal said "refusing to load it" and no more).
AGAIN = "export it again from its run (ann export), or copy it again from the registry"


def again(directory: str) -> str:
    """What to do about a damaged or missing file of the export in `directory`: `AGAIN`, or,
    for a version inside a model registry (REGISTRY/artifacts/NAME/VERSION), that the
    registry's own copy is damaged, with the registry's fixes: a version's copy was told to
    "copy it again from the registry", the copy it named. Plain `os` (`directory_kind`);
    called on a refusal only (it looks at the directories above)."""
    from ann import directory_kind  # os only

    above = directory_kind.inside(directory)
    if above is None or above[0] != directory_kind.REGISTRY:
        return AGAIN
    return (
        "the registry's own copy of this version is damaged: register the export again (a "
        f"new version), or restore {directory} from a backup"
    )


class IntegrityError(ValueError):
    """An artifact is missing a file, truncated, tampered with, or not an ann export."""


class NotAnExportError(ValueError):
    """A directory given as an export is a training run's workdir (config.json, checkpoints/,
    no manifest.json), or a directory inside one (RUN/checkpoints, RUN/report): nothing is
    damaged, it is the wrong directory; the message names the run and how to export it (`ann
    export --workdir=RUN --out=EXPORT_DIR`). Not an IntegrityError: it said
    the run was "not an ann export" in the words of a damaged or incomplete one."""


class PlatformError(ValueError):
    """An export was lowered for none of the platforms this machine can run it on."""


def device_for(platforms: Sequence[str]) -> Any:
    """The device an export lowered for `platforms` (jax.export's names: cpu, cuda, rocm, tpu)
    runs on here: the default device where its platform is among them (a `cpu,cuda` export on
    a GPU machine runs on the GPU), else the host's CPU where `cpu` is (the default `ann
    export` made or served on a GPU machine: jax.export refuses to call a function on a
    platform it was not lowered for, "exported for platforms ('cpu',) but it is used on
    ('cuda',)", which stopped `ann export` on an H200). Raises PlatformError naming the
    platforms and the re-export that runs here."""
    import jax

    here = jax.export.default_export_platform()
    if here in platforms:
        return jax.devices()[0]
    if "cpu" in platforms:
        try:
            return jax.devices("cpu")[0]
        except RuntimeError:  # JAX_PLATFORMS names the accelerator alone
            pass
    raise PlatformError(
        f"the export was lowered for {', '.join(platforms)}, and this machine runs {here}"
        + (" with no CPU backend (JAX_PLATFORMS)" if "cpu" in platforms else "")
        + f": export it again with --platforms={','.join(dict.fromkeys([*platforms, here]))}"
    )


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _open_regular(path: str) -> tuple[int, int]:
    """(fd, size) of `path`, refused unless it is a regular file and not a symbolic link.

    O_NOFOLLOW refuses a link; O_NONBLOCK keeps opening a FIFO from waiting for a writer."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise IntegrityError(
                f"{path} is a symbolic link; an export holds regular files only: "
                f"{again(os.path.dirname(path))}"
            ) from e
        raise IntegrityError(
            f"{path} is missing or unreadable ({e.strerror}); the export is incomplete: "
            f"{again(os.path.dirname(path))}"
        ) from e
    mode, size = (st := os.fstat(fd)).st_mode, st.st_size
    if not stat.S_ISREG(mode):
        from ann import atomic  # os only

        os.close(fd)
        raise IntegrityError(
            f"{path} is {atomic.file_kind(mode)}, not a regular file: "
            f"{again(os.path.dirname(path))}"
        )
    return fd, size


def _read_fd(fd: int, size: int, sink: Callable[[bytes], None], chunk_bytes: int = _CHUNK) -> int:
    """Feeds at most `size` + 1 bytes of `fd` to `sink` (the +1 notices a file that grew)."""
    left, seen = size + 1, 0
    with os.fdopen(fd, "rb", buffering=0) as f:
        while left > 0:
            chunk = f.read(min(chunk_bytes, left))
            if not chunk:
                break
            sink(chunk)
            seen += len(chunk)
            left -= len(chunk)
    return seen


def _check_signature(path: str, key: str, value: Any) -> None:
    def bad(why: str) -> IntegrityError:
        return IntegrityError(f"{path}: {key!r} {why}; re-export with `ann.export`")

    if not isinstance(value, dict) or not value:
        raise bad("must map each name to its dtype and shape")
    for name, spec in value.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("dtype"), str):
            raise bad(f"entry {name!r} has no dtype")
        try:
            np.dtype(spec["dtype"])
        except TypeError as e:
            raise bad(f"entry {name!r} has the unknown dtype {spec['dtype']!r}") from e
        shape = spec.get("shape")
        if (
            not isinstance(shape, list)
            or not shape
            or shape[0] != -1
            or not all(type(d) is int and d >= (-1 if i == 0 else 0) for i, d in enumerate(shape))
        ):
            raise bad(f"entry {name!r} has the shape {shape!r}, not [-1, d1, d2, ...] (d >= 0)")


def check_manifest(path: str, manifest: Any) -> None:
    """Refuses a manifest whose structure the loader, the registry or a server would trip on
    (IntegrityError naming `path` and the key). `ann.export` runs it on what it writes."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        given = manifest.get("format") if isinstance(manifest, dict) else None
        newer = _FORMAT_NUMBER.match(given) if isinstance(given, str) else None
        if newer and int(newer[1]) > int(_FORMAT_NUMBER.match(FORMAT)[1]):
            from ann import __version__

            raise IntegrityError(
                f"{path} is {given}, written by a newer ann; this ann ({__version__}) reads "
                f"{FORMAT}: upgrade ann to load it"
            )
        raise IntegrityError(f"{path} is not an {FORMAT} manifest; re-export with `ann.export`")
    name = manifest.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 128 or not name.isprintable():
        raise IntegrityError(f"{path}: 'name' must be 1 to 128 printable characters, got {name!r}")
    for key in ("inputs", "outputs"):
        _check_signature(path, key, manifest.get(key))
    files = manifest.get("files")
    if not isinstance(files, dict) or not {FUNCTION, WEIGHTS} <= set(files):
        raise IntegrityError(
            f"{path}: 'files' must list {FUNCTION} and {WEIGHTS} with their sha256 and bytes; "
            "re-export with `ann.export`"
        )
    for file_name, entry in files.items():
        if not FILE_NAME.match(file_name) or file_name == MANIFEST:
            raise IntegrityError(
                f"{path} lists the file {file_name!r}, which is not a plain file name inside the "
                "export (no '/', '..', absolute path or leading '.'); refusing it"
            )
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not SHA256.match(entry["sha256"])
            or type(entry.get("bytes")) is not int
            or entry["bytes"] < 0
        ):
            raise IntegrityError(
                f"{path}: file {file_name!r} needs 'sha256' (64 hex digits) and 'bytes' (an "
                f"integer >= 0), got {entry!r}; re-export with `ann.export`"
            )
        if entry["bytes"] > MAX_FILE_BYTES:
            raise IntegrityError(
                f"{path}: file {file_name!r} declares {entry['bytes']} bytes, above the limit of "
                f"{MAX_FILE_BYTES} bytes for a file of an export; refusing to read it"
            )


def not_an_export(
    directory: str, give: str = "give an export directory (`ann export --out`)"
) -> str | None:
    """One line saying why `directory` holds no export and what to give instead (`give`), or
    None when it has a manifest.json (whose checks come when it is read). A training run's
    workdir (its config.json, no manifest) is named as one, with the command that exports it."""
    from ann import directory_kind  # os only

    if not os.fspath(directory):  # it said " does not exist; ...", naming nothing
        return f"an empty path names no export; {give}"
    if not os.path.isdir(directory):
        from ann import atomic  # os only; not imported by a load that finds its export

        what = "is a file" if os.path.exists(directory) else atomic.absent(directory)
        return f"{directory} {what}; {give}"
    kinds = directory_kind.of(directory)
    if directory_kind.EXPORT in kinds:
        return None
    if directory_kind.RUN in kinds:
        return (
            f"{directory} is a training run, not an export; export it first (ann export "
            f"--workdir={directory} --out=EXPORT_DIR) and give EXPORT_DIR"
        )
    # A directory of a run (RUN/checkpoints, RUN/report) was "holds no manifest.json; give an
    # export directory", an IntegrityError, as if an export were damaged.
    if (run := directory_kind.run_above(directory)) is not None:
        return (
            f"{directory} holds no {MANIFEST}: it is inside the training run at {run}; export "
            f"the run first (ann export --workdir={run} --out=EXPORT_DIR) and give EXPORT_DIR"
        )
    return f"{directory} holds no {MANIFEST}; {give}"


def _not_an_export_error(directory: str, why: str) -> Exception:
    """The exception for a `directory` that holds no export (`why`: `not_an_export`'s line):
    a registry URI (the loader takes a directory: it was told the URI "does not exist", as an
    IntegrityError) is a ValueError naming what loads one; a path that does not exist a
    FileNotFoundError (below a file too: "cannot exist: F is a file, ..."), a file a
    NotADirectoryError (nothing there was damaged); a training run's workdir a NotAnExportError
    (it was an IntegrityError, as if a run were a damaged export); any other directory without
    a manifest an IntegrityError: not an ann export (or one whose manifest.json was lost)."""
    if (
        isinstance(directory, str)
        and directory.startswith(REGISTRY_URI_SCHEME)
        and not os.path.exists(directory)
    ):
        return ValueError(
            f"{directory} is a registry URI, not an export directory; load it with "
            f"ann.registry.resolve({directory!r}, registry=REGISTRY_DIR).load() (REGISTRY_DIR "
            "defaults to $ANN_REGISTRY, else ./registry)"
        )
    if not os.path.lexists(directory):
        return FileNotFoundError(why)
    if not os.path.isdir(directory):
        return NotADirectoryError(why)
    from ann import directory_kind  # os only

    if directory_kind.RUN in directory_kind.of(directory) or directory_kind.run_above(directory):
        return NotAnExportError(why)
    return IntegrityError(why)


def path_argument(value: Any, name: str, expected: str) -> str:
    """`value` as a str (an `os.PathLike` too), a leading `~` or `~user` expanded as the
    commands expand their path flags (`arguments.home`: from Python, `export(run, "~/x")`
    wrote into a directory named `~` in the current one). TypeError naming the argument `name`
    and what it takes (`expected`) for any other type: None said only "expected str, bytes or
    os.PathLike object, not NoneType" (`load`), or raised AttributeError (`registry.resolve`);
    ValueError naming it for a `~user` of no user of this machine."""
    from ann import arguments

    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected {expected}, got {type(value).__name__}")
    return arguments.home(value, f"{name}={value}")


def _directory(directory: Any) -> str:
    """`directory` as a str (`path_argument`)."""
    return path_argument(directory, "directory", "an export directory as a str or path")


def read_manifest_bytes(
    directory: str, manifest_sha256: str | None = None
) -> tuple[dict[str, Any], bytes]:
    """The checked manifest and its exact bytes (what a registry hashes and copies).

    Raises FileNotFoundError where `directory` does not exist, NotADirectoryError where it is a
    file, ValueError where it is a registry URI (`models:/...`: `ann.registry.resolve` loads
    one), NotAnExportError where it is a training run's workdir or a directory inside one (the
    message names the run and the `ann export` that makes one), IntegrityError where any other
    directory holds no manifest.json or manifest.json is not a regular file of at most
    MAX_MANIFEST_BYTES, is not JSON, is not an ann.export/1 manifest of the expected structure
    (a newer format's is named so), or (given `manifest_sha256`, as a
    registry records it) does not have that sha256; TypeError where `directory` is not a str
    or path (None)."""
    directory = _directory(directory)
    path = os.path.join(directory, MANIFEST)
    why = not_an_export(directory)
    if why is not None:
        raise _not_an_export_error(directory, why)
    try:
        fd, size = _open_regular(path)
    except IntegrityError as e:
        raise IntegrityError(f"{directory} is not an ann export: {e}") from e
    if size > MAX_MANIFEST_BYTES:
        os.close(fd)
        raise IntegrityError(
            f"{path} has {size} bytes, above the limit of {MAX_MANIFEST_BYTES} bytes for a "
            "manifest; refusing to read it"
        )
    parts: list[bytes] = []
    _read_fd(fd, MAX_MANIFEST_BYTES, parts.append)
    raw = b"".join(parts)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"{path} grew past {MAX_MANIFEST_BYTES} bytes while being read")
    if manifest_sha256 is not None and sha256_bytes(raw) != manifest_sha256:
        raise IntegrityError(
            f"{path} was modified: its sha256 is {sha256_bytes(raw)}, the registry recorded "
            f"{manifest_sha256}; re-register a fresh export"
        )
    try:
        manifest = json.loads(raw)
    except ValueError as e:
        raise IntegrityError(f"{path} is not valid JSON (truncated or edited?): {e}") from e
    check_manifest(path, manifest)
    return manifest, raw


def read_manifest(directory: str, manifest_sha256: str | None = None) -> dict[str, Any]:
    """The parsed, checked manifest (see `read_manifest_bytes`)."""
    return read_manifest_bytes(directory, manifest_sha256)[0]


def _open_listed(directory: str, manifest: Mapping[str, Any], name: str) -> tuple[int, int]:
    """(fd, size) of the listed file `name`, refused (IntegrityError naming it) where the
    manifest does not list it, it is missing, not a regular file, or not of the listed size."""
    entry = manifest["files"].get(name)
    if entry is None:
        raise IntegrityError(f"{MANIFEST} in {directory} lists no file {name!r}")
    path = os.path.join(directory, name)
    fd, size = _open_regular(path)
    if size != entry["bytes"]:
        os.close(fd)
        raise IntegrityError(
            f"{path} has {size} bytes, the manifest says {entry['bytes']} (truncated or "
            f"replaced?): {again(directory)}"
        )
    return fd, size


def _stream_verified(
    directory: str,
    manifest: Mapping[str, Any],
    name: str,
    sink: Callable[[bytes], None],
    chunk_bytes: int = _CHUNK,
) -> None:
    """Feeds file `name` to `sink` in chunks, then checks its size and sha256.

    The size is checked with fstat before the first read, so a file of another size (a huge
    one included) is never read; the caller must discard what `sink` got if this raises."""
    fd, size = _open_listed(directory, manifest, name)
    entry, path = manifest["files"][name], os.path.join(directory, name)
    digest = hashlib.sha256()

    def both(chunk: bytes) -> None:
        digest.update(chunk)
        sink(chunk)

    seen = _read_fd(fd, size, both, chunk_bytes)
    if seen != size:
        raise IntegrityError(
            f"{path} changed size while being read ({seen} bytes, the manifest says {size}): "
            f"{again(directory)}"
        )
    if digest.hexdigest() != entry["sha256"]:
        raise IntegrityError(
            f"{path} was modified: sha256 {digest.hexdigest()}, the manifest says "
            f"{entry['sha256']}: {again(directory)}"
        )


def read_verified(directory: str, manifest: Mapping[str, Any], name: str) -> bytes:
    """The bytes of file `name`, after checking its size and sha256 against the manifest."""
    chunks: list[bytes] = []
    # One read (Linux returns up to ~2 GiB) keeps a single copy of the bytes in memory.
    _stream_verified(directory, manifest, name, chunks.append, chunk_bytes=1 << 31)
    return b"".join(chunks)


def copy_verified(directory: str, manifest: Mapping[str, Any], name: str, dest: str) -> None:
    """Copies file `name` into the directory `dest` (which must not hold it yet), checking it
    on the way; a file that fails the check is removed again."""
    from ann import atomic  # here: loading an export needs jax alone (a server's image)

    target = os.path.join(dest, name)
    with open(target, "xb") as out:
        try:

            def write(chunk: bytes) -> None:
                with atomic.writing(target):  # a full disk's write names no file
                    out.write(chunk)

            _stream_verified(directory, manifest, name, write)
        except BaseException:
            with contextlib.suppress(OSError):  # its buffer's flush fails again (a full disk)
                out.close()
            os.unlink(target)
            raise


def verify(directory: str, manifest_sha256: str | None = None) -> dict[str, Any]:
    """Checks every file the manifest lists (without deserializing); returns the manifest."""
    manifest = read_manifest(directory, manifest_sha256)
    for name in manifest["files"]:
        _stream_verified(directory, manifest, name, lambda chunk: None)
    return manifest


def pad_id(spec: Mapping[str, Any]) -> int | None:
    """The pad id of a signature entry whose rows are right-padded token ids (the manifest's
    `"padding": {"id": 0, "side": "right"}` on a language model's `tokens`, seq2seq's
    `source`), else None. The model reads each row up to its first pad: a language model
    answers for the position before it."""
    padding = spec.get("padding")
    if isinstance(padding, dict) and padding.get("side") == "right":
        value = padding.get("id")
        if type(value) is int:
            return value
    return None


def padding_hint(pad: int | None, shape: Sequence[int], got: Sequence[Any] | None = None) -> str:
    """What a shape refusal of an input padded on the right with id `pad` (None: not padded:
    "") and of `shape` per row adds: how to pad (a prompt of 11 tokens was refused as
    `expected [-1, 128] ... got [1, 11]`, without saying that the input takes padding). `got`:
    the per-row shape given, where known; rows longer than `shape` are told that they do not
    fit (padding them was no fix), in the loader's and the server's refusals alike."""
    if pad is None:
        return ""
    width = " x ".join(map(str, shape))
    if (
        got is not None
        and len(got) == len(shape)
        and all(type(g) is int for g in got)
        and any(g > n for g, n in zip(got, shape))
    ):
        return (
            f"; each row holds at most {width} tokens, then pads (id {pad}): a longer one does "
            "not fit the model"
        )
    return f"; pad each row on the right with id {pad} to {width} tokens (the tokens, then {pad}s)"


def ids_fault(flat: np.ndarray, count: int, datatype: str, names: str) -> str | None:
    """Why integer inputs `flat` (one dimension) are not ids of `count` names: the first value
    outside [0, count), where it is, and the range, in the words the loader and the server both
    use ("expected int32 values in [0, 16] (ids of its 17 names: the manifest's
    inputs.source.names), got 17 at flat index 4"; `datatype` and `names` say the dtype and
    where the names are as the reader knows them); None when every value is one. One id past
    the vocabulary gave NaN probabilities or garbage tokens without an error."""
    if not flat.size:
        return None
    bad = (flat < 0) | (flat >= count)
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    return (
        f"expected {datatype} values in [0, {count - 1}] (ids of its {count} names: {names}), "
        f"got {flat[i]} at flat index {i}"
    )


_all = np.logical_and.reduce  # over a whole array: `.all()` cost 4x as much (ann.serve.batcher)
# Float dtype kinds: "f", and "V" for bfloat16 (ml_dtypes; a model's arrays are never structured).
FLOATING = ("f", "V")


def finite_fault(array: np.ndarray, datatype: str, sent: np.ndarray | None = None) -> str | None:
    """Why float values `array` are not all finite, in the words the loader and the server both
    use ("expected finite float32 values, got nan at flat index 3"; `datatype` as the reader
    knows it: float32 or FP32), or None when every value is. `sent`: the values before a cast
    to `array`'s dtype, where there was one (the server's JSON numbers): a finite one there is
    named as out of the type's range. One `isfinite` pass over the array; the value found only
    on a fault. A NaN input gave NaN probabilities and a confident label without an error."""
    if _all(np.isfinite(array), axis=None):
        return None
    flat = array.reshape(-1)
    bad = int(np.flatnonzero(~np.isfinite(flat))[0])
    value = sent.reshape(-1)[bad] if sent is not None else flat[bad]
    why = f" (out of range for {datatype})" if np.isfinite(value) else ""
    return f"expected finite {datatype} values, got {value} at flat index {bad}{why}"


# Significand bits of each float dtype (the implicit one included), by (kind, itemsize): every
# whole number up to 2**bits is exact in it. float16, bfloat16 (ml_dtypes: kind "V"), float32,
# float64.
_SIGNIFICAND_BITS = {("f", 2): 11, ("V", 2): 8, ("f", 4): 24, ("f", 8): 53}


def _number(value: Any) -> str:
    """A number as written: 16777216, not 16777216.0 (a whole float), 1e+39, 0.5."""
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and np.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def _inexact_words(sent: np.ndarray, cast: np.ndarray, datatype: str) -> str | None:
    """What converting numbers `sent` (integers, or floats) to a float input's dtype (`cast`:
    the converted values, finite) changes beyond a float's usual rounding: the first whole
    number it changes, where it is and what it becomes ("float32 holds 16777217 at flat index 1
    only as 16777216 (whole numbers are exact in it up to 2**24 = 16,777,216)"; `datatype` as
    the reader knows it); None when every whole number survives. float32 holds every whole
    number only up to 2**24 (IEEE 754 binary32's 24-bit significand): an id, a count or a
    timestamp past it becomes another. Said, not refused: training's own cast to float32
    rounds the same way (the server, like Triton, rounds JSON numbers silently). Fractions
    round as floats do and are not named, nor whole floats past 2**53. On the loader's error
    path only: it reads every value."""
    if not sent.size or sent.dtype.kind not in "iuf":
        return None
    flat, made = sent.reshape(-1), cast.reshape(-1)
    with np.errstate(invalid="ignore", over="ignore"):
        if sent.dtype.kind in "iu":  # the round trip changes it
            bad = made.astype(sent.dtype) != flat
        else:
            whole = (flat == np.trunc(flat)) & (np.abs(flat) <= 2.0**53)
            bad = whole & (made.astype(np.float64) != flat)
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    bits = _SIGNIFICAND_BITS[(cast.dtype.kind, cast.dtype.itemsize)]
    return (
        f"{datatype} holds {_number(flat[i])} at flat index {i} only as "
        f"{_number(made[i].astype(np.float64))} (whole numbers are exact in it up to "
        f"2**{bits} = {2**bits:,})"
    )


def first_non_finite(
    outputs: Mapping[str, np.ndarray], first: int = 0, last: int | None = None
) -> tuple[str, int, str] | None:
    """The first float output, row (counted from `first`) and value ("nan", "inf", "-inf") that
    is not finite among rows [first, last) of `outputs` (in the outputs' order), or None when
    every value is: one `isfinite` pass per float output, the row found only on a fault."""
    for name, value in outputs.items():
        if value.dtype.kind not in FLOATING:
            continue
        mine = value[first:last]
        if _all(np.isfinite(mine), axis=None):
            continue
        bad = ~np.isfinite(mine.reshape(len(mine), -1))
        row, column = np.argwhere(bad)[0]
        found = float(mine.reshape(len(mine), -1)[row, column])
        return name, int(row), str(found) if found == found else "nan"
    return None


def non_finite_words(output: str, row: int, value: str) -> str:
    """What the loader and the server say of a row the model gave a NaN or an infinity on in
    float `output` (its inputs were finite and of their type: the model overflowed)."""
    return (
        f"outputs.{output}: row {row} is {value}, not a finite number: the model overflowed on "
        "this input (its values are far outside what it was trained on)"
    )


def padding_fault(array: np.ndarray, pad: int) -> str | None:
    """Why `array` (rows of token ids, batch first) breaks its right-padding contract with pad
    id `pad`, naming the first row that does: a pad before a real token (the model would read
    the row only up to it: a language model answered for the wrong position), or a row of
    pads alone (nothing to answer); None when every row is its tokens then pads. Vectorized:
    one comparison and a few reductions over the int array, the row found only on a fault."""
    if not array.size:
        return None
    is_pad = array.reshape(len(array), -1) == pad
    if not is_pad.any():  # full rows: the common case
        return None
    broken = (is_pad[:, :-1] & ~is_pad[:, 1:]).any(axis=1) | is_pad.all(axis=1)
    if not broken.any():
        return None
    row = int(np.argmax(broken))
    where = is_pad[row]
    if where.all():
        return f"row {row} is only padding (id {pad}): nothing to answer; send at least one token"
    first = int(np.argmax(where))
    after = first + 1 + int(np.argmax(~where[first + 1 :]))
    return (
        f"row {row} has the pad id {pad} at position {first}, before a token at position "
        f"{after}; pad on the right only (the tokens first, then {pad}s): the model reads a row up "
        "to its first pad"
    )


_TOKEN, _PAD, _EOS, _TASK, _BOS = range(5)  # what an id is to a `Framing`


class Framing:
    """How each row of a token input is framed, beyond its right padding (the manifest's
    `"framing": {"task_ids": [...], "bos_id": 1, "eos_id": 2}` on seq2seq's `source`, next to
    its `padding`): a task word first (one of `task_ids`; none when the list is empty), then at
    least one other token (none of pad, <bos>, <eos> or a task word), then <eos>, then only
    pads, as training frames a source. A row framed otherwise was answered 200 with a
    meaningless text (no <eos>: `reverse 1 2 3 4 5` gave `3 4 3 2 1`). Built from an entry by
    `framing` (None: no framing stated, as in exports written before it was).

    `sources` (the entry's `"sources"`, written at export from the training rows; None in
    exports written before it was: framing alone is checked): what each task's tokens between
    its task word and <eos> look like, {task id: [form, ...]}, a form a list of runs, each
    `Run(name, ids, low, high)`: `low` to `high` tokens of `ids` (digit_strings' `reverse`:
    one run, DIGITS, 1 to 8 digits; `add`: DIGITS, `+`, DIGITS). A framed row of no form of its
    task (`reverse 1+2`: `reverse` is trained on digits only) was answered with a meaningless
    text, while `ann generate` refused it: both check here (`fault`, `source_fault`)."""

    def __init__(
        self,
        pad: int,
        eos: int,
        bos: int | None,
        tasks: Sequence[int],
        names: Sequence[str] | None = None,
        sources: Mapping[int, Sequence[Sequence[Run]]] | None = None,
    ):
        self.pad, self.eos, self.bos, self.tasks = pad, eos, bos, tuple(tasks)
        self.names = tuple(names) if names is not None else None
        self.sources = (
            None
            if sources is None
            else {int(t): tuple(tuple(form) for form in forms) for t, forms in sources.items()}
        )
        frozen = None if self.sources is None else tuple(sorted(self.sources.items()))
        self.key = (pad, eos, bos, self.tasks, self.names, frozen)
        special = [pad, eos, *self.tasks, *([] if bos is None else [bos])]
        # One entry past the largest id: ids beyond it (np.take clips them there) are tokens.
        size = max(len(self.names or ()), max(special) + 1) + 1
        self._parts = np.full(size, _TOKEN, np.uint8)
        self._parts[list(self.tasks)] = _TASK
        if bos is not None:
            self._parts[bos] = _BOS
        self._parts[eos], self._parts[pad] = _EOS, _PAD
        self._size = size

    @functools.cached_property
    def _table(self) -> np.ndarray | None:
        """`_automaton`, built on first use (once per loaded model: `Model.framings`, which the
        server's `protocol.Signature` shares); None where no record is to be checked (an older
        export, no task words): framing alone."""
        return self._automaton(self._size) if self.sources and self.tasks else None

    @functools.cached_property
    def _table_lists(self) -> list[list[int]]:
        return self._table.tolist() if self._table is not None else []

    def _automaton(self, size: int) -> np.ndarray | None:
        """The `sources` check as a deterministic automaton over a whole row (task word,
        tokens, <eos>, pads): table [states, size] of next states; state 0 rejects, 1 starts,
        2 accepts (<eos> ended a form of the row's task, pads since). Built once per load by
        the subset construction over the forms' (task, form, run, count) states: small (the
        digit_strings export: 39 states); None past MAX_STATES (a hand-made record ann does
        not write: framing alone is checked)."""
        sources = self.sources or {}
        nfa: dict[tuple, dict[int, set]] = {}  # state -> id -> next states
        ACCEPT, START = ("accept",), ("start",)
        nfa[ACCEPT] = {self.pad: {ACCEPT}}
        nfa[START] = {}
        for task in self.tasks:
            if task not in sources:  # a task with no record: framing alone
                nfa[START][task] = {("any",)}
        any_state = nfa.setdefault(("any",), {})
        for i in range(size):
            if self._parts[i] == _TOKEN:
                any_state[i] = {("any",)}
        any_state[self.eos] = {ACCEPT}
        for task, forms in sources.items():
            for f, form in enumerate(forms):
                nfa[START].setdefault(task, set()).add((task, f, -1, 0))
                for r in range(-1, len(form)):
                    for c in range(0 if r < 0 else 1, 1 if r < 0 else form[r].high + 1):
                        moves = nfa.setdefault((task, f, r, c), {})
                        done = r < 0 or c >= form[r].low
                        if r >= 0 and c < form[r].high:
                            for i in form[r].ids:
                                moves.setdefault(i, set()).add((task, f, r, c + 1))
                        if done and r + 1 < len(form):
                            for i in form[r + 1].ids:
                                moves.setdefault(i, set()).add((task, f, r + 1, 1))
                        if done and r == len(form) - 1:
                            moves.setdefault(self.eos, set()).add(ACCEPT)
        states = [frozenset(), frozenset([START]), frozenset([ACCEPT])]
        number = {s: n for n, s in enumerate(states)}
        rows: list[list[int]] = []
        while len(rows) < len(states):
            here = states[len(rows)]
            row = []
            for i in range(size):
                nxt = frozenset(t for q in here for t in nfa.get(q, {}).get(i, ()))
                if nxt not in number:
                    if len(states) >= MAX_STATES:
                        return None
                    number[nxt] = len(states)
                    states.append(nxt)
                row.append(number[nxt])
            rows.append(row)
        return np.array(rows, np.int32)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Framing) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def _name(self, i: int) -> str:
        return self.names[i] if self.names is not None and 0 <= i < len(self.names) else str(i)

    def _ids(self, ids: Sequence[int]) -> str:
        return ", ".join(f"{self._name(i)}={i}" for i in ids)

    @property
    def rule(self) -> str:
        """The framing a row needs, with the ids, as a refusal states it."""
        special = [self.pad, *([] if self.bos is None else [self.bos]), self.eos]
        first = task = other = ""
        if self.tasks:
            first, other = "TASK ", " or a task word"
            task = f"a task word ({self._ids(self.tasks)}), then "
        return (
            f"expected {first}TOKENS <eos> then pads: {task}at least one token that is none of "
            f"{self._ids(special)}{other}, then <eos> (id {self.eos}), then only pads (id "
            f"{self.pad})"
        )

    def fault(self, array: np.ndarray) -> str | None:
        """Why `array` (rows of token ids, batch first, already right-padded: `padding_fault`
        found nothing) breaks the framing, naming the first row that does; None when every
        row keeps it. Vectorized: one table look-up, a few comparisons and reductions over the
        int array (the row's reason is worked out in Python only on a fault): about 40 us for
        1 or 64 rows of 19 ids on a busy 2-core CPU, `padding_fault` 16-26 us."""
        if not array.size:
            return None
        x = array.reshape(len(array), -1)
        # Each id's part: a token, pad, <eos>, task word or <bos>. `names` (checked before)
        # keeps ids inside the table; without it, ids past the table read as tokens.
        parts = np.take(self._parts, x, mode="clip")
        pads = (parts == _PAD).sum(axis=1)
        length = x.shape[1] - pads  # the real ids: they come before the pads
        last = parts[np.arange(len(x)), np.maximum(length - 1, 0)]
        # One task word first (where there are task words), one <eos> last, tokens between.
        head = 1 if self.tasks else 0
        ok = (last == _EOS) & ((parts != _TOKEN).sum(axis=1) == pads + 1 + head)
        ok &= length >= 2 + head
        if self.tasks:
            ok &= parts[:, 0] == _TASK
        if not ok.all():
            row = int(np.argmin(ok))
            return f"row {row}: {self.rule}; got {self._row(x[row])}: {self._why(x[row])}"
        if self._table is None:
            return None
        # Each row through the automaton up to the longest row's <eos> (shorter rows' pads keep
        # them accepted): a few rows id by id in Python (a one-row request: ~3 us, where numpy's
        # per-column look-ups took ~30), more one column at a time (a look-up per column).
        ids = np.minimum(x, len(self._parts) - 1)[:, : int(length.max())]
        if ids.size <= 256:
            table = self._table_lists
            ok = np.array([_walk(table, row) == 2 for row in ids.tolist()])
        else:
            state = np.ones(len(ids), np.intp)
            for column in ids.T:
                state = self._table[state, column]
            ok = state == 2
        if ok.all():
            return None
        row = int(np.argmin(ok))
        return (
            f"row {row}: {self.source_fault(x[row])} in {self._row(x[row])}; send a source of "
            "that shape"
        )

    def source_fault(self, ids: np.ndarray | Sequence[int]) -> str | None:
        """What is wrong with one framed row (TASK TOKENS <eos> then pads) of no form its task
        has in `sources` ("'reverse' sources are 'reverse DIGITS' (DIGITS: 1 to 8 of 0 1 2 3 4
        5 6 7 8 9) as in training; got 'reverse DIGITS+DIGITS'"); None when it has one (or
        nothing is recorded). `ann generate` words a `--source` with it, `fault` a row."""
        real = [int(i) for i in np.asarray(ids).reshape(-1)]
        if self._table is None or not real or self.sources is None:
            return None
        top = len(self._parts) - 1
        if (
            _walk(self._table_lists, [min(i, top) for i in real]) == 2
            or real[0] not in self.sources
        ):
            return None
        task, forms = real[0], self.sources[real[0]]
        body = real[1 : real.index(self.eos)] if self.eos in real else real[1:]
        runs: list[tuple[Run | None, int, list[int]]] = []  # (its run, its id, the ids)
        for i in body:
            run = next((r for form in forms for r in form if i in r.ids), None)
            if runs and run is not None and len(run.ids) > 1 and runs[-1][0] == run:
                runs[-1][2].append(i)
            else:
                runs.append((run, i, [i]))
        got = "".join(self._name(i) if run is None else run.name for run, i, _ in runs)
        detail = ""
        for form in forms:  # the same runs, a length outside a run's range
            if [r.name for r in form] == [run.name if run else None for run, _, _ in runs]:
                bad = next(
                    (k for k, r in enumerate(form) if not r.low <= len(runs[k][2]) <= r.high), None
                )
                if bad is not None:
                    n, r = len(runs[bad][2]), form[bad]
                    which = f"run {bad + 1} ({r.name})" if len(form) > 1 else r.name
                    detail = f" ({n} tokens in {which}, not {r.low} to {r.high})"
                    break
        return (
            f"{self._name(task)!r} sources are {self._forms(task)} as in training; got "
            f"'{self._name(task)} {got}'{detail}"
        )

    def _forms(self, task: int) -> str:
        """A task's recorded forms, as `source_fault` states them."""
        forms = (self.sources or {}).get(task, ())
        shown = " or ".join(f"'{self._name(task)} {''.join(r.name for r in f)}'" for f in forms)
        runs = dict.fromkeys(r for f in forms for r in f if len(r.ids) > 1 or r.high > 1)
        said = "; ".join(
            f"{r.name}: {r.low} to {r.high} of {' '.join(self._name(i) for i in r.ids)}"
            for r in runs
        )
        return shown + (f" ({said})" if said else "")

    def _row(self, ids: np.ndarray) -> str:
        real = ids.tolist()
        while real and real[-1] == self.pad:
            real.pop()
        shown = f"[{', '.join(map(str, real))}]"
        return shown + (" then pads" if len(real) < len(ids) else "")

    def _why(self, ids: np.ndarray) -> str:
        """What is wrong with one row that breaks the framing (`fault`)."""
        real = ids.tolist()
        while real and real[-1] == self.pad:
            real.pop()
        if not real:
            return f"only pads (id {self.pad})"
        if self.bos is not None and self.bos in real:
            return f"{self._name(self.bos)} (id {self.bos}) at position {real.index(self.bos)}"
        if self.tasks and real[0] not in self.tasks:
            return f"it starts with {self._name(real[0])} (id {real[0]}), not a task word"
        if self.eos not in real:
            return f"no <eos> (id {self.eos}) after its tokens"
        end = real.index(self.eos)
        if end < len(real) - 1:
            return f"tokens after <eos>, from position {end + 1}"
        tasks = [i for i, t in enumerate(real) if t in self.tasks]
        if len(tasks) > 1:
            return f"a second task word at position {tasks[1]}"
        return (
            "nothing between "
            + ("the task word and " if self.tasks else "the start and ")
            + "<eos>"
        )


def framing(spec: Mapping[str, Any]) -> Framing | None:
    """The `Framing` a signature entry states (its `framing`, on an entry with right
    `padding`), else None: exports written before framing was recorded load and are checked
    as before (padding only)."""
    entry, pad = spec.get("framing"), pad_id(spec)
    if not isinstance(entry, dict) or pad is None or type(entry.get("eos_id")) is not int:
        return None
    bos, tasks = entry.get("bos_id"), entry.get("task_ids") or []
    ids = [entry["eos_id"], *tasks, *([bos] if bos is not None else [])]
    if not isinstance(tasks, list) or not all(type(i) is int and 0 <= i < 1 << 20 for i in ids):
        return None  # not one ann writes (a hand-made manifest): padding checked alone
    names = spec.get("names")
    return Framing(
        pad,
        entry["eos_id"],
        bos if type(bos) is int else None,
        tasks,
        names,
        _sources(entry.get("sources"), names, tasks),
    )


def _walk(table: list[list[int]], ids: Sequence[int]) -> int:
    """The state a `Framing` source automaton (`table`, as lists) ends in on `ids`."""
    state = 1
    for i in ids:
        state = table[state][i]
    return state


class Run(NamedTuple):
    """One run of a source form (`Framing.sources`): `low` to `high` tokens, each one of
    `ids`, shown as `name` (DIGITS: 1 to 8 of the digits)."""

    name: str
    ids: tuple[int, ...]
    low: int
    high: int


MAX_RUN = 1 << 10  # the longest run a manifest may state (a source row is shorter)
MAX_STATES = 1 << 14  # the largest source automaton built (digit_strings': 39 states)


def _sources(
    entry: Any, names: Sequence[str] | None, tasks: Sequence[int]
) -> dict[int, list[list[Run]]] | None:
    """The framing's `sources` ({task word: [[{"name", "ids", "min", "max"}, ...], ...]}) as
    {task id: forms}; None where there is none (an export written before it was) or it is not
    one ann writes (a hand-made manifest: framing checked alone)."""
    if not isinstance(entry, dict) or not isinstance(names, list):
        return None
    index = {n: i for i, n in enumerate(names)}
    out: dict[int, list[list[Run]]] = {}
    for word, forms in entry.items():
        if index.get(word) not in tasks or not isinstance(forms, list) or not forms:
            return None
        out[index[word]] = []
        for form in forms:
            if not isinstance(form, list) or not form:
                return None
            runs = []
            for run in form:
                if not isinstance(run, dict) or not isinstance(run.get("name"), str):
                    return None
                ids, low, high = run.get("ids"), run.get("min"), run.get("max")
                if not isinstance(ids, list) or not ids or type(low) is not int:
                    return None
                if type(high) is not int or not 1 <= low <= high <= MAX_RUN:
                    return None
                if not all(type(i) is int and 0 <= i < len(names) for i in ids):
                    return None
                runs.append(Run(run["name"], tuple(ids), low, high))
            out[index[word]].append(runs)
    return out


def buckets(max_batch_size: int) -> list[int]:
    """Compiled batch sizes: powers of two below `step`, then every multiple of `step` up to
    `max_batch_size` (step = max(8, max_batch_size // 8)), and `max_batch_size` itself.

    Finer than powers of two above 8 because padding is paid in full: with rows costing about
    the same from 16 up, a batch of 33 rows padded to 64 wasted 48% of its compute; to 40, 18%.
    For 64: 1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64. The server's (`ann serve`), and the
    loader's through `batch_bucket`."""
    step = max(8, max_batch_size // 8)
    sizes = {1 << i for i in range(step.bit_length()) if 1 << i < min(step, max_batch_size)}
    sizes |= set(range(step, max_batch_size, step))
    return sorted({*sizes, max_batch_size})


@functools.lru_cache(maxsize=4096)
def batch_bucket(rows: int) -> int:
    """The batch size a loaded model's call of `rows` rows (>= 1) runs at: the smallest of
    `buckets(P)` that holds it, P the power of two at or above `rows`, as the server pads to
    its own sizes (the same ones up to its default 64 rows). 1, 2, 4 and each power of two
    run as they are; 5 rows run as 8, 20 as 24, 300 as 320: at most 7 rows more up to 64,
    under a quarter more above. About 8 sizes a doubling, each compiled once, where each new
    batch size compiled (0.5 s) and kept its executable (+190 MB over 97 sizes, in a trial)."""
    sizes = buckets(1 << (rows - 1).bit_length())
    return sizes[bisect.bisect_left(sizes, rows)]


def _padded(array: np.ndarray, rows: int) -> np.ndarray:
    """`array` [n, ...] followed by rows of zeros, to `rows` rows (a padded batch's rows are
    run as any other and dropped: each row's outputs are its own at inference)."""
    out = np.zeros((rows, *array.shape[1:]), array.dtype)
    out[: len(array)] = array
    return out


class Model:
    """A loaded export: call it on a dict of NumPy arrays with any batch size (the manifest's
    -1). A call runs at a bounded set of batch sizes, padded with rows of zeros that are cut
    from the outputs (`batch_bucket`: 5 rows run as 8, 300 as 320); the first call at each
    size compiles it (about 0.5 s for the digits CNN on a CPU), later ones reuse it."""

    def __init__(
        self,
        directory: str,
        manifest: dict[str, Any],
        exported: Any,
        weights: dict,
        manifest_sha256: str,
    ):
        import jax

        self.directory = directory
        self.manifest = manifest
        self.manifest_sha256 = manifest_sha256  # of the bytes this model was loaded from
        self.name: str = manifest["name"]
        self.inputs: dict[str, dict[str, Any]] = manifest["inputs"]  # shapes: -1 = batch
        self.outputs: dict[str, dict[str, Any]] = manifest["outputs"]
        # Inputs whose rows are framed (seq2seq's `source`: TASK TOKENS <eos> then pads), each
        # `Framing` built once per load (the server checks requests with these too).
        self.framings: dict[str, Framing] = {
            k: f for k, spec in self.inputs.items() if (f := framing(spec))
        }
        self._exported = exported
        # Where it runs (`device_for`): the weights placed there carry every call there.
        self.device = device_for(exported.platforms)
        self.weights = jax.device_put(weights, self.device)
        self._jitted = jax.jit(exported.call)
        # Each input's dtype made once: `np.dtype(...)` and `str(x.dtype)` on every call were
        # 7 of a batch-1 call's 88 us (docs/benchmarks.md, "The Python API's call").
        self._dtypes = {k: np.dtype(spec["dtype"]) for k, spec in self.inputs.items()}

    def check(self, inputs: Mapping[str, np.ndarray]) -> int:
        """Raises ValueError, one line naming the input that does not match and the fix (its
        dtype or shape: `_shape_fault`, batch size, a NaN or infinity in a float input:
        `finite_fault`, an id outside the names it indexes:
        `ids_fault`, a row that breaks its right padding: `padding_fault`, or its framing:
        `Framing`), in the server's words where it has the same fault; returns the batch
        size."""
        self._check_names(inputs)
        rows = None
        for name, spec in self.inputs.items():
            x = inputs[name]
            wrong_dtype = x.dtype != self._dtypes[name]
            if (
                wrong_dtype
                or x.ndim != len(spec["shape"])
                or list(x.shape[1:]) != spec["shape"][1:]
            ):
                raise ValueError(_shape_fault(name, spec, x, wrong_dtype))
            if rows is not None and x.shape[0] != rows:
                raise ValueError(f"inputs have different batch sizes ({rows} and {x.shape[0]})")
            rows = x.shape[0]
            if x.dtype.kind in FLOATING and (fault := finite_fault(x, spec["dtype"])):
                raise ValueError(f"input {name!r}: {fault}")
            names = spec.get("names")
            if names is not None and x.size and (x.min() < 0 or x.max() >= len(names)):
                where = f"the manifest's inputs.{name}.names"
                raise ValueError(
                    f"input {name!r}: {ids_fault(x.reshape(-1), len(names), str(x.dtype), where)}"
                )
            pad = pad_id(spec)
            fault = None if pad is None else padding_fault(x, pad)
            if fault is None and (frame := self.framings.get(name)) is not None:
                fault = frame.fault(x)
            if fault is not None:
                raise ValueError(f"input {name!r}: {fault}")
        return int(rows or 0)

    def _check_names(self, inputs: Mapping[str, Any]) -> None:
        missing = sorted(set(self.inputs) - set(inputs))
        extra = sorted(set(inputs) - set(self.inputs))
        if missing or extra:  # only what is wrong ("missing [], extra ['x']" said both)
            said = [f"missing {missing}"] * bool(missing) + [f"extra {extra}"] * bool(extra)
            raise ValueError(f"inputs must be {sorted(self.inputs)}; {', '.join(said)}")

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{input name: array [rows, ...]} -> {output name: NumPy array [rows, ...]}, run at
        `batch_bucket(rows)` rows (padded, compiled once per size: the class's note); zero rows
        give empty outputs (the exported function's batch is at least 1: JAX refused 0 with
        its shape-polymorphism message). Raises ValueError as `check` does (a NaN or infinite
        float input among them), for inputs that are not a mapping (an array alone: it said
        "'numpy.ndarray' object has no attribute 'items'"), and where the model gives a NaN or
        an infinity in a float output on any row (it overflowed on finite inputs far outside
        its data): the server refuses such a request (422), and a NaN row's label was
        argmax's 0, confident and wrong. The checks cost one `isfinite` pass over each float
        input and output (docs/benchmarks.md, "Finite checks in the loader")."""
        if not isinstance(inputs, Mapping):
            name = next(iter(self.inputs))
            raise ValueError(
                f"inputs: expected a mapping of input name to array ({', '.join(self.inputs)}), "
                f"got {type(inputs).__name__}; call model({{{name!r}: x}})"
            )
        self._check_names(inputs)
        arrays = {}
        for name, value in inputs.items():
            try:
                arrays[name] = np.asarray(value)
            except ValueError:  # ragged lists: NumPy's own message named no input
                spec = self.inputs[name]
                raise ValueError(
                    f"input {name!r} must be {spec['dtype']}{spec['shape']} (-1: any batch), got "
                    "nested lists of different lengths"
                    + padding_hint(pad_id(spec), spec["shape"][1:])
                ) from None
        inputs = arrays
        rows = self.check(inputs)
        if rows == 0:
            # One row of zeros, run unchecked: a padded input refuses a row of pads alone.
            one = {k: np.zeros((1, *v.shape[1:]), v.dtype) for k, v in inputs.items()}
            return {k: np.asarray(v)[:0] for k, v in self._jitted(self.weights, one).items()}
        size = batch_bucket(rows)
        if size != rows:  # padded with rows of zeros (`batch_bucket`), run, and cut back
            inputs = {k: _padded(v, size) for k, v in inputs.items()}
        run = self._jitted(self.weights, inputs).items()
        outputs = {k: np.asarray(v)[:rows] for k, v in run}
        found = first_non_finite(outputs)
        if found is not None:  # the server refuses such a request (422 non_finite_output)
            raise ValueError(f"{non_finite_words(*found)}; {_rows_refused(outputs, rows)}")
        return outputs

    @property
    def weights_bytes(self) -> int:
        """Bytes of all the weights together (what each constant-weights executable copies)."""
        return sum(int(w.nbytes) for w in self.weights.values())

    def compile(
        self, batch_size: int, *, constant_weights: bool = False
    ) -> Callable[[Mapping[str, np.ndarray]], dict]:
        """The function compiled ahead of time for exactly `batch_size` rows (no retracing):
        {input name: array [batch_size, ...]} -> {output name: NumPy array}.

        `constant_weights`: the weights are compiled into the executable as constants instead
        of passed on each call. XLA:CPU then lays them out once, at compile time: YNNPACK no
        longer repacks the convolutions' weights on every call, which made the digits CNNs'
        batch-1 calls 11-19% faster on a 2-core CPU, batch 8 3-32%, batch 64 3-4%
        (docs/benchmarks.md, "Weights compiled in"). The cost is a copy of the weights
        (`weights_bytes`) in each executable; outputs may differ from the default's in the
        last float32 bit (kernels are chosen for the layout). The returned function's
        `executable` is the jax `Compiled` (for `memory_analysis()`, `as_text()`).

        The returned function is the fast path under `__call__` and checks nothing: inputs
        must already be the signature's dtypes at exactly `batch_size` rows (jax raises its
        own TypeError otherwise), and non-finite outputs are returned as they are (`__call__`
        raises ValueError for them; the server answers 422 `non_finite_output` itself).
        `batch_size` of another type than int is a TypeError, below 1 a ValueError, naming it
        (JAX's shape-polymorphism error, or 13 KB of MLIR, before)."""
        import jax

        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise TypeError(f"batch_size: expected an int, got {type(batch_size).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        batch_size = int(batch_size)
        on = jax.sharding.SingleDeviceSharding(self.device)
        specs = {
            name: jax.ShapeDtypeStruct(
                (batch_size, *spec["shape"][1:]), np.dtype(spec["dtype"]), sharding=on
            )
            for name, spec in self.inputs.items()
        }
        if constant_weights:
            weights = self.weights  # closed over: jit embeds closed-over arrays as constants
            compiled = jax.jit(lambda inputs: self._exported.call(weights, inputs))
            compiled = compiled.lower(specs).compile()

            def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
                return {k: np.asarray(v) for k, v in compiled(dict(inputs)).items()}

        else:
            compiled = self._jitted.lower(self.weights, specs).compile()
            weights = self.weights

            def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
                return {k: np.asarray(v) for k, v in compiled(weights, dict(inputs)).items()}

        run.executable = compiled  # type: ignore[attr-defined]
        return run


def _rows_refused(outputs: Mapping[str, np.ndarray], rows: int) -> str:
    """How many of a call's `rows` rows gave a non-finite float output (on the error path
    only), and the fix: the call returns nothing, as the server answers no such request."""
    bad = np.zeros(rows, bool)
    for value in outputs.values():
        if value.dtype.kind in FLOATING:
            bad |= ~np.isfinite(value.reshape(rows, -1)).all(axis=1)
    return (
        f"rows that do: {int(bad.sum()):,} of {rows:,}; no outputs are returned, call it "
        "without them"
    )


def _shape_fault(name: str, spec: Mapping[str, Any], x: np.ndarray, wrong_dtype: bool) -> str:
    """The refusal of input `name`'s array `x` of another dtype or shape than its signature
    entry `spec`, with the fix: the conversion (NumPy makes Python ints int64, a seq2seq source
    or LM prompt takes int32) where every value survives it, else the first value that does
    not (`_cast_fault`: an id out of range, NaN, a fraction), the batch axis a single row lacks,
    or how to pad a token row (`padding_hint`; a dtype alone said how to pad, which was no
    fix)."""
    dtype, shape = spec["dtype"], spec["shape"]
    fixes = []
    if wrong_dtype and x.dtype.kind in "USO" and spec.get("names") is not None:
        fixes.append(
            f"; map each token to its id (its index in the manifest's inputs.{name}.names)"
        )
    elif wrong_dtype and x.dtype.kind in "USO":  # None, text, objects: no cast makes numbers
        what = repr(x.item()) if x.ndim == 0 else "text" if x.dtype.kind in "US" else "objects"
        return f"input {name!r} must be {dtype}{shape} (-1: any batch), got {what}; give numbers"
    elif wrong_dtype and (fault := _cast_fault(x, spec, name)) is not None:
        fixes.append(f"; {fault}")
    elif wrong_dtype:
        fixes.append(f'; convert it with .astype("{dtype}")')
    row = shape[1:]
    if x.ndim != len(shape) or list(x.shape[1:]) != row:
        if list(x.shape) == row:
            fixes.append("; add the batch axis for a single row (x[None])")
        elif x.ndim != len(shape):
            fixes.append(f"; give {len(shape)} dimensions, the batch first")
        else:
            fixes.append(padding_hint(pad_id(spec), row, list(x.shape[1:])))
    return (
        f"input {name!r} must be {dtype}{shape} (-1: any batch), got {x.dtype}{list(x.shape)}"
        + "".join(fixes)
    )


def _cast_fault(x: np.ndarray, spec: Mapping[str, Any], name: str) -> str | None:
    """Why `x` (of another dtype than its signature entry `spec`'s) cannot just be converted
    with `.astype`. For integers: its first value outside the entry's range (the dtype's, and
    [0, len(names)) for ids: `ids_fault`'s words), not a whole number, or NaN, where it is,
    and what the conversion would make of it. An int64 id of 2**32 + 40 was told to convert,
    and `.astype("int32")` made it 40, accepted silently; a NaN became -2147483648. For floats,
    in the server's words for the same JSON numbers: a value that is not finite, or finite
    but out of the type's range (`finite_fault`: 1e39 as float32); the conversion, naming a
    whole number it changes (`_inexact_words`: 2**24 + 1 as float32 becomes 2**24). None when
    every value survives it (then converting is the fix). Only on the error path: it reads
    every value."""
    dtype = np.dtype(spec["dtype"])
    if dtype.kind in FLOATING and x.dtype.kind in "iuf" and x.size:
        # Numbers a float input takes only changed: out of its range (inf, as the server
        # says it), or a whole number it cannot hold (2**24 + 1 as float32).
        with np.errstate(over="ignore", invalid="ignore"):
            cast = x.astype(dtype)
        if (fault := finite_fault(cast, str(dtype), x)) is not None:
            return fault
        if (rounded := _inexact_words(x, cast, str(dtype))) is not None:
            return f'convert it with .astype("{dtype}"), knowing that {rounded}'
        return None
    if dtype.kind not in "iu" or x.dtype.kind not in "biufV" or not x.size:
        return None
    flat = x.reshape(-1)
    info = np.iinfo(dtype)
    names = spec.get("names")
    low, high = int(info.min), int(info.max)
    if names is not None:
        low, high = max(low, 0), min(high, len(names) - 1)
    if x.dtype.kind in "fV":  # bfloat16 (kind "V") compares as float32
        values = flat.astype(np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values) | (values != np.trunc(values))
            bad |= (values < low) | (values > high)
    else:
        bad = (flat < low) | (flat > high)
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    if names is not None:
        count = len(names)
        where = f" (ids of its {count} names: the manifest's inputs.{name}.names)"
    else:
        where = ""
    with np.errstate(invalid="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NumPy warns of a NaN or overflow in the cast
        cast = flat[i : i + 1].astype(dtype)[0]
    what = "ids" if names is not None else "values"
    fault = f"expected {dtype} values in [{low}, {high}]{where}, got {flat[i]} at flat index {i}"
    if cast == flat[i]:  # kept as it is (-1): out of range whatever its type
        return fault
    return f'{fault} (.astype("{dtype}") would make it {cast}: fix the {what}, not their type)'


def _deserialize(directory: str, name: str, parse: Callable[[], Any]) -> Any:
    try:
        return parse()
    except Exception as e:  # the bytes matched their hash, so the writer made a bad artifact
        path = os.path.join(directory, name)
        raise IntegrityError(f"{path} cannot be deserialized ({e}); re-export the run") from e


def _stored_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a safetensors dtype name ("F32", "BF16"; the format's list:
    github.com/huggingface/safetensors, README "Format"). safetensors.numpy.load has no entry
    for BF16 or the float8 types (0.8: KeyError 'BF16'), though its save writes them, so a
    model trained with param_dtype=bfloat16 exported but never loaded; ml_dtypes (JAX's) has
    them. Raises KeyError for a name outside the list."""
    import ml_dtypes

    special = {"BF16": ml_dtypes.bfloat16, "F8_E4M3": ml_dtypes.float8_e4m3fn,
               "F8_E5M2": ml_dtypes.float8_e5m2, "BOOL": np.bool_}  # fmt: skip
    if name in special:
        return np.dtype(special[name])
    kind, bits = {"F": "f", "I": "i", "U": "u", "C": "c"}[name[0]], int(name[1:])
    return np.dtype(f"{kind}{bits // 8}")


def _load_safetensors(data: bytes) -> dict[str, np.ndarray]:
    """safetensors bytes as {name: read-only NumPy array} (as safetensors.numpy.load gives,
    with every dtype the format stores: `_stored_dtype`)."""
    from safetensors import deserialize

    return {
        name: np.frombuffer(v["data"], dtype=_stored_dtype(v["dtype"])).reshape(v["shape"])
        for name, v in deserialize(data)
    }


def _weights(directory: str, manifest: Mapping[str, Any]) -> dict[str, np.ndarray]:
    data = read_verified(directory, manifest, WEIGHTS)
    return _deserialize(directory, WEIGHTS, lambda: _load_safetensors(data))


def load_weights(directory: str, manifest_sha256: str | None = None) -> dict[str, np.ndarray]:
    """The export's weights, parameter path -> host array (e.g. "blocks/0/bn1/scale": float32
    [C]), read through the same checks as `load` (what `init_from` uses). Raises
    IntegrityError naming the file that fails a check or cannot be deserialized."""
    return _weights(directory, read_manifest(directory, manifest_sha256))


def _aval_words(aval: Any) -> str:
    """`uint8[batch, 8, 8, 1]`: an exported argument's or result's dtype and shape."""
    return f"{np.dtype(aval.dtype)}[{', '.join(map(str, aval.shape))}]"


def _check_against_function(
    directory: str, manifest: Mapping[str, Any], exported: Any, weights: Mapping[str, Any]
) -> None:
    """Raises IntegrityError, one line naming the entry and both values, where the manifest's
    `inputs`/`outputs` (dtype, shape [-1, ...]) or the weights (name, dtype, shape: arrays, or
    anything with a NumPy `dtype` and a tuple `shape`, as `_weight_specs` reads them) are not
    what function.jaxexport takes and gives (`in_avals`/`out_avals`, its batch symbolic).
    Each file matched its sha256, so such an export had its manifest edited, or mixes files of
    two exports: loaded, a call was told to convert to the manifest's dtype, then JAX refused
    the converted array ("Dtype mismatch"), and a server never turned ready."""
    import jax

    path = os.path.join(directory, MANIFEST)
    again = "the manifest was edited or the files come from different exports; re-export the run"
    unflatten = jax.tree_util.tree_unflatten
    try:
        (taken_weights, taken), _ = unflatten(exported.in_tree, exported.in_avals)
        given = unflatten(exported.out_tree, exported.out_avals)
        structured = all(isinstance(t, dict) for t in (taken_weights, taken, given))
    except (TypeError, ValueError):
        structured = False
    if not structured:
        raise IntegrityError(
            f"{os.path.join(directory, FUNCTION)} is not infer(weights, inputs) -> outputs with "
            f"each a dict (takes {exported.in_tree}); {again}"
        )
    for key, avals in (("inputs", taken), ("outputs", given)):
        if set(manifest[key]) != set(avals):
            raise IntegrityError(
                f"{path}: {key!r} lists {sorted(manifest[key])}, but {FUNCTION} "
                f"{'takes' if key == 'inputs' else 'gives'} {sorted(avals)}; {again}"
            )
        for name, spec in manifest[key].items():
            aval, shape = avals[name], spec["shape"]
            if not (
                np.dtype(spec["dtype"]) == np.dtype(aval.dtype)
                and len(shape) == len(aval.shape)
                and not isinstance(aval.shape[0], int)  # the batch: symbolic, -1 in the manifest
                and all(type(d) is int and d == m for d, m in zip(aval.shape[1:], shape[1:]))
            ):
                raise IntegrityError(
                    f"{path}: {key}.{name} says {spec['dtype']}{shape}, but {FUNCTION} "
                    f"{'takes' if key == 'inputs' else 'gives'} {_aval_words(aval)}; {again}"
                )
    for name, aval in taken_weights.items():
        array = weights.get(name)
        if array is None or (array.dtype, array.shape) != (np.dtype(aval.dtype), aval.shape):
            got = "nothing" if array is None else f"{array.dtype}{list(array.shape)}"
            raise IntegrityError(
                f"{os.path.join(directory, WEIGHTS)}: {name!r} is {got}, but {FUNCTION} takes "
                f"{_aval_words(aval)}; {again}"
            )


def _weight_specs(directory: str, named: str) -> dict[str, Any]:
    """{name: jax.ShapeDtypeStruct} of `directory`'s weights.safetensors, from its header alone
    (no weight is read), as `_load_safetensors` types them; IntegrityError naming it
    (under `named`) when the header cannot be read."""
    import jax
    from safetensors import safe_open

    def read() -> dict[str, Any]:
        with safe_open(os.path.join(directory, WEIGHTS), framework="numpy") as f:
            slices = {name: f.get_slice(name) for name in f.keys()}  # noqa: SIM118
            return {
                name: jax.ShapeDtypeStruct(tuple(s.get_shape()), _stored_dtype(s.get_dtype()))
                for name, s in slices.items()
            }

    return _deserialize(named, WEIGHTS, read)


def check_function(directory: str, manifest: Mapping[str, Any], named: str | None = None) -> None:
    """The loader's check of the manifest's `inputs`/`outputs` and the weights against what
    function.jaxexport takes and gives (`load`'s IntegrityError, one line naming the entry and
    both values), without loading the weights or compiling anything: function.jaxexport is
    read (size and sha256 checked) and deserialized, every other listed file must be there, a
    regular file of its listed size (IntegrityError naming a missing one as missing), and
    weights.safetensors' header alone is read. What `ann registry register` runs on its staged
    copy (`directory`), whose files were checked as they were copied; messages name the export
    as `named` (default `directory`). Imports JAX (about 1 s)."""
    from jax import export

    named = directory if named is None else named
    function = read_verified(directory, manifest, FUNCTION)
    for name in manifest["files"]:  # each one there, of its size (a stat, no read)
        if name != FUNCTION:
            os.close(_open_listed(directory, manifest, name)[0])
    exported = _deserialize(named, FUNCTION, lambda: export.deserialize(bytearray(function)))
    _check_against_function(named, manifest, exported, _weight_specs(directory, named))


def load(directory: str, manifest_sha256: str | None = None) -> Model:
    """Verifies every file the manifest lists (size and sha256: a changed, truncated or
    missing one, the drift reference included, raises IntegrityError naming it), checks the
    manifest's inputs and outputs and the weights against what function.jaxexport takes and
    gives (dtype and shape, the batch symbolic: IntegrityError naming the entry and both) and
    loads the
    export in `directory` (jax only, no flax). A `directory` that does not exist raises
    FileNotFoundError, a file NotADirectoryError, a registry URI ValueError naming what loads
    one (`ann.registry.resolve(uri).load()`), a training run's workdir NotAnExportError (with
    the `ann export` command that exports it), another directory with no manifest.json
    IntegrityError, and one that is not a str or path (None) TypeError naming the argument."""
    from jax import export

    directory = _directory(directory)
    manifest, raw = read_manifest_bytes(directory, manifest_sha256)
    function = read_verified(directory, manifest, FUNCTION)
    exported = _deserialize(directory, FUNCTION, lambda: export.deserialize(bytearray(function)))
    arrays = _weights(directory, manifest)
    _check_against_function(directory, manifest, exported, arrays)
    for name in manifest["files"]:  # the rest too (the drift reference): one export, all of it
        if name not in (FUNCTION, WEIGHTS):
            _stream_verified(directory, manifest, name, lambda chunk: None)
    # Given, the recorded hash was just checked against these bytes: no second hash.
    return Model(directory, manifest, exported, arrays, manifest_sha256 or sha256_bytes(raw))


def load_reference(
    directory: str, manifest: Mapping[str, Any]
) -> dict[str, dict[str, np.ndarray]] | None:
    """The export's reference sample, {"inputs": {name: array}, "outputs": {name: array},
    "validation": {name: array}} (rows first; "outputs": the model's on the inputs,
    "validation": on the validation split, held only by some exports made before
    2026-12-06, empty in others), read through the
    manifest's size and sha256 checks (IntegrityError when a check fails, the file cannot be
    deserialized or a key is not KIND/NAME); None when the manifest lists no
    reference.safetensors (an export written before it existed). Kinds added by a later ann
    are skipped (the format's rule, above)."""
    if REFERENCE not in manifest["files"]:
        return None
    data = read_verified(directory, manifest, REFERENCE)
    arrays = _deserialize(directory, REFERENCE, lambda: _load_safetensors(data))
    sample: dict[str, dict[str, np.ndarray]] = {"inputs": {}, "outputs": {}, "validation": {}}
    for key, value in arrays.items():
        kind, _, name = key.partition("/")
        if not kind or not name:
            raise IntegrityError(
                f"{os.path.join(directory, REFERENCE)} holds {key!r}, not KIND/NAME (inputs/NAME, "
                "outputs/NAME, validation/NAME); re-export the run"
            )
        if kind in sample:  # a kind a later ann added is not this one's to read
            sample[kind][name] = value
    return sample
