"""Writing a file so that a reader, or a crash, never sees it half-written: the one way ann
replaces a file (config.json, run_status.json, parameters.tsv, checkpoint manifests, sweep
results, ...).

The text goes to a temporary file in the same directory (a rename is atomic only within one
file system), which is flushed and fsync'd, then renamed over the target (`os.replace`), and the
directory is fsync'd so that the rename itself survives a power loss. This is the sequence
SQLite and PostgreSQL rely on; see also Python's `os.replace` documentation. A failure removes
the temporary file and leaves the old file as it was.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import fcntl
import json
import math
import numbers
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from typing import IO, Any


def sync_directory(directory: str) -> None:
    """fsync `directory`, making the names created or renamed in it durable. A file system that
    cannot fsync a directory (some network ones refuse with EINVAL) is left as it is: the rename
    has happened, only its durability across a power loss is then the file system's."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: str, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """`with replacing(path) as f: f.write(...)`: `f` is a temporary file next to `path` that
    replaces `path` when the block ends without an exception (see the module docstring).
    `mode` is "w" or "wb"; `open_kwargs` go to `open` (e.g. `newline=""` for csv).
    Raises what `open`, the block or the rename raise; `path` is then unchanged."""
    directory = os.path.dirname(os.path.abspath(path))
    # Hidden, unique (several writers may race) and ending in .tmp (what readers skip).
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, mode.replace("w", "x"), **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename in (None, tmp):  # the file meant, not its temp
            e.filename = path
        raise
    sync_directory(directory)


# Errors that say the storage refused a write (a full disk, a quota, a file size limit, a
# read-only file system, permissions), not that ann or its input is wrong: `cli.run` says them
# in one line naming the file (`cli.storage_error`), with what follows their words here as the
# fix (`storage_fix`).
# What caps a file's size (EFBIG) where this process's own limit (`ulimit -f`) does not.
FILE_SIZE_CAP = "its file system caps a file's size (its format, e.g. FAT32 at 4 GiB, or a quota)"
STORAGE_ERRNOS = {
    errno.ENOSPC: "free space on its file system",
    errno.EDQUOT: "free space within your disk quota",
    errno.EFBIG: f"{FILE_SIZE_CAP}: use one without that cap",
    errno.EROFS: "its file system is mounted read-only",
    errno.EACCES: "fix its permissions",
    errno.EPERM: "fix its permissions",
}


def file_size_limit() -> int | None:
    """This process's file size limit in bytes (`ulimit -f`, RLIMIT_FSIZE), None where there is
    none (or the platform has no such limit). A write past it fails with EFBIG: Python ignores
    the SIGXFSZ signal that would otherwise kill the process at start."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if limit == resource.RLIM_INFINITY else limit


def storage_fix(code: int | None) -> str | None:
    """The fix for a write refused with errno `code` (`STORAGE_ERRNOS`), else None. For a file
    too large (EFBIG) under this process's file size limit (`file_size_limit`), the limit and
    how to raise it: the file system is then not the cause."""
    if code == errno.EFBIG:
        if (limit := file_size_limit()) is not None:
            return f"raise this process's file size limit (ulimit -f, now {limit // 1024:,} KiB)"
    return STORAGE_ERRNOS.get(code)  # type: ignore[arg-type]


def name_as_final(e: BaseException, staging: str, final: str) -> None:
    """For a directory written whole in `staging` and then renamed to `final` (an export, a
    report, a registry version): an OSError naming a file under `staging`, removed by then,
    names the path it was to have under `final`."""
    if isinstance(e, OSError) and isinstance(e.filename, str):
        inside = os.path.relpath(e.filename, staging)
        if inside == "." or not inside.startswith(os.pardir):
            e.filename = os.path.normpath(os.path.join(final, inside))


# How old an unheld staging directory must be before `staging` removes it: a writer holds its
# own from a moment after creating it (mkdtemp, then the lock); any age well above that will do.
STALE_STAGING_SECONDS = 60


@contextlib.contextmanager
def staging(final: str, prefix: str) -> Iterator[str]:
    """`with staging(final, ".export-") as tmp:` a new hidden directory beside `final`
    (`PARENT/PREFIXxxxxxxxx`) to write a directory whole in, and then rename to `final` in the
    block (an export, a report): what the block raises removes `tmp` (an OSError naming a file
    in it names the file's final path, `name_as_final`). The block holds an exclusive `flock`
    on `tmp`, which the operating system drops however the process ends, so that the next
    `staging` of that `prefix` in the same parent removes what a killed writer (kill -9, a
    power loss) left there: the directories of that prefix nobody holds, older than
    STALE_STAGING_SECONDS. Another writer's, running, is held and kept."""
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    remove_stale_staging(parent, prefix)
    tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    held = os.open(tmp, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # a file system without flock: nothing removes it
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield tmp
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        name_as_final(e, tmp, final)
        raise
    finally:
        os.close(held)


def remove_stale_staging(parent: str, prefix: str) -> None:
    """Removes the directories `PREFIX*` in `parent` that a killed writer left (`staging`):
    named as `staging` names them, not held by a live writer's lock and older than
    STALE_STAGING_SECONDS. Anything it cannot
    tell (a lock refused for another reason, a race with another cleaner) is left."""
    # Only names as mkdtemp makes them (8 of its characters after the prefix): a user's own
    # `.report-templates` beside --out is never taken for one.
    name = re.compile(re.escape(prefix) + r"[a-z0-9_]{8}")
    try:
        entries = [e for e in os.scandir(parent) if name.fullmatch(e.name)]
    except OSError:
        return
    for entry in entries:
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if time.time() - entry.stat(follow_symlinks=False).st_mtime < STALE_STAGING_SECONDS:
                continue
            fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: a writer is at work in it
            continue
        else:
            shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(fd)


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
    """An OSError raised in the block without a file name gets `path` as its file name: a
    failed `write` or `close` (ENOSPC, EDQUOT) names none, and the one-line error
    (`cli.storage_error`) names the file or directory being written."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = path
        raise


def write_text(path: str, text: str) -> None:
    """Replaces `path` with `text` (UTF-8) atomically and durably."""
    with replacing(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_bytes(path: str, data: bytes) -> None:
    """Replaces `path` with `data` atomically and durably."""
    with replacing(path, "wb") as f:
        f.write(data)


def missing_from(path: str) -> str | None:
    """The topmost directory of `path` that does not exist yet (what `os.makedirs(path)` would
    create first), or None where `path` exists: taken before a command creates `path`, so that
    a failed start can remove what it created (`remove_if_left_empty`)."""
    path = os.path.abspath(path)
    if os.path.lexists(path):
        return None
    while not os.path.lexists(os.path.dirname(path)) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def remove_if_left_empty(directory: str, made: str | None, own: Collection[str] = ()) -> None:
    """After a failed start: removes `directory`, which the command created (`made`, its
    `missing_from` taken before, is not None), where it holds nothing but the names in `own`
    (its lock files), and then the empty directories above it up to `made` that it created
    too. A full disk left a workdir holding only `.lock`, which the next command took for a
    run or a sweep. Never a directory that existed before, nor anything the command did not
    name in `own`."""
    if made is None:
        return
    directory = os.path.abspath(directory)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:  # removed already (`remove_added`): the parents made are left
        names = []
    except OSError:
        return
    if any(name not in own for name in names):
        return
    for name in names:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(directory, name))
    while True:
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            pass
        except OSError:
            return
        if directory == made or not directory.startswith(made + os.sep):
            return
        directory = os.path.dirname(directory)


# How `why_not_creatable` says a read-only file system (EROFS's words, as the probe's error
# says them): what a caller tests for before offering "fix its permissions".
READ_ONLY = os.strerror(errno.EROFS)


def read_only(path: str) -> bool:
    """Whether the file system holding `path` (which exists) is mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def why_not_creatable(path: str) -> str | None:
    """Why the directory `path` cannot be used or created (what follows its name in a message:
    "is a file, not a directory", "cannot be created: PARENT is a file, so nothing can be below
    it" (`below_a_file`), "is not writable (permission denied)", "cannot be created in P
    (Read-only file system)": a read-only mount is said as one, `READ_ONLY`), or None when it
    can. Leaves nothing behind: it makes and removes a probe directory in the nearest existing
    parent, the one test that a read-only or special file system (/proc) answers truly, and
    root, whom permission bits do not stop."""
    if not path.strip():  # abspath would make it the current directory
        return "is empty"
    path = os.path.abspath(path)
    if os.path.islink(path) and not os.path.exists(path):  # it failed later: "File exists"
        return f"is a symbolic link to {os.readlink(path)}, which does not exist"
    if os.path.exists(path) and not os.path.isdir(path):
        return "is a file, not a directory"
    if (above := below_a_file(path)) is not None:
        return f"cannot be created: {above}"
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        # A read-only mount refuses root too, and is no permission to fix: EROFS's own words.
        why = READ_ONLY if read_only(existing) else "permission denied"
        if existing == path:
            return f"is not writable ({why})"
        return f"cannot be created in {existing} ({why})"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ann-probe-", dir=existing))
    except OSError as e:  # a full disk, a special file system: "REG cannot be created in REG"
        if existing == path:
            return f"cannot be written ({e.strerror or e})"
        return f"cannot be created in {existing} ({e.strerror or e})"
    return None


def file_kind(mode: int) -> str | None:
    """What a file of `os.stat` mode `mode` is, where it is not a regular file ("a directory",
    "a FIFO (a named pipe)", "a character device", "a block device", "a socket", else "not a
    regular file"), None for a regular file: how a refusal names a path given as a file (opening
    a FIFO waits for a writer, forever; reading a device may never end)."""
    for test, kind in (
        (stat.S_ISREG, None),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (a named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def file_above(path: str) -> tuple[str, str] | None:
    """(the nearest existing path above `path`, what it is: "a file", "a FIFO (a named pipe)",
    ... as `file_kind` says it) where that is not a directory, so that `path` cannot exist
    (`/etc/hostname/x`, `README.md/model`: the system says ENOTDIR, "Not a directory"); None
    where it is a directory (or nothing above exists). The path above is named as `path`
    spells it (a relative path stays relative); links are followed."""
    stripped = path.rstrip(os.sep)
    # `FILE/` names a directory FILE: the file itself is what is above it.
    above = stripped if stripped and stripped != path else os.path.dirname(stripped)
    while above:
        try:
            mode = os.stat(above).st_mode
        except (OSError, ValueError):
            if os.path.dirname(above) == above:
                return None
            above = os.path.dirname(above)
            continue
        kind = file_kind(mode)
        return None if kind == "a directory" else (above, kind or "a file")
    return None


def below_a_file(path: str) -> str | None:
    """ "/etc/hostname is a file, so nothing can be below it" for a `path` below a file (or a
    FIFO, a device: `file_above`), else None: how every refusal of such a path says it (the
    export loader, the registry, --workdir, data.data_dir, the monitor's and the server's files;
    they said "does not exist", "cannot read it (Not a directory)" or "no registry at PATH; ...
    `register` an export to create it there")."""
    found = file_above(path)
    if found is None:
        return None
    return f"{found[0]} is {found[1]}, so nothing can be below it"


def absent(path: str) -> str:
    """What a refusal says of `path`, which does not exist, after its name: "cannot exist:
    /etc/hostname is a file, so nothing can be below it" (`below_a_file`), else "does not
    exist", for a relative path where it was looked for ("does not exist in the working
    directory, /home/me": a path typed from another directory was named unresolved), and the
    entry beside it of a close name (`near_sibling`: " (did you mean runs/pydoc_lm?)", a
    mistyped run, export or log was named as missing, nothing more)."""
    above = below_a_file(path)
    if above is not None:
        return f"cannot exist: {above}"
    try:
        here = "" if os.path.isabs(path) or not path else os.getcwd()
    except OSError:  # a working directory removed since
        here = ""
    said = f"does not exist in the working directory, {here}" if here else "does not exist"
    near = near_sibling(path)
    return f"{said} (did you mean {near}?)" if near else said


def near_sibling(path: str, keep: Callable[[str], bool] = os.path.exists) -> str | None:
    """The path, spelt as `path`'s folder is, of the entry beside `path` whose name is close to
    its (difflib's ratio of at least 0.8: a typo or two; at its default 0.6 a shared /tmp
    offered conftest.py for config.py) and that `keep` keeps; None where none is, or the
    folder cannot be read. Sorted names, at most MAX_SIBLINGS of them read."""
    folder, name = os.path.split(path.rstrip(os.sep))
    try:
        names = sorted(os.listdir(folder or "."))[:MAX_SIBLINGS]
    except OSError:
        return None
    names = [n for n in names if keep(os.path.join(folder, n))]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.8)
    return os.path.join(folder, close[0]) if close else None


MAX_SIBLINGS = 10_000  # a folder of more is read no further for a near name


def read_json(path: str) -> tuple[Any, str | None]:
    """(the JSON value of the file `path`, None), (None, None) where it does not exist, or
    (None, why it is not JSON: "cannot be read (Is a directory)", "is not JSON (empty)", "is
    not JSON (Expecting value: line 1 column 1 (char 0))"): for the records ann replaces whole
    (`replacing`), which only damage outside ann can cut short."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"cannot be read ({e.strerror})"
    try:
        return json.loads(text), None
    except ValueError as e:
        return None, f"is not JSON ({'empty' if not text.strip() else e})"


def finite(value: Any) -> Any:
    """`value` (dicts, lists and tuples walked) with every non-finite float (NaN, infinities;
    NumPy's too) as None: JSON has no NaN, and Python's `json` wrote a bare `NaN`, which strict
    readers refuse. A reader of such a file takes null for an undefined value."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return float(value) if math.isfinite(value) else None
    return value


def json_text(value: Any, **kwargs: Any) -> str:
    """`json.dumps(value, **kwargs)` as strict JSON: non-finite floats written as null
    (`finite`); raises ValueError for one it cannot convert (`allow_nan=False`), never a bare
    NaN."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
