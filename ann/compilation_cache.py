"""XLA's persistent compilation cache, as `ann train` and `ann serve` turn it on, and its use.

`enable` gives jax a cache directory for every executable of the process (the first call in a
process decides; a directory set elsewhere, e.g. $JAX_COMPILATION_CACHE_DIR, wins). `ann train`
calls it with the config key `compilation_cache_dir` (default: `.jax_cache` beside the workdir),
`ann serve` with its flag `--compilation_cache_dir` (default: none, as a server may run from a
read-only image).

The directory is bounded (`MAX_MB`, 1 GiB by default; `ann train`'s config key and `ann serve`'s
flag `compilation_cache_max_mb`, -1 for no bound): past it, the least recently used entries are
removed (`prune`), at each start and whenever this process's writes take it past the bound; an
entry read from the cache counts as used (its modification time is set). Every model version a
server compiled added about 6 MB forever. Not jax's own bound (`jax_compilation_cache_max_size`,
which wins where set): in jax 0.10.2 it needs the `filelock` package (without it the cache is
off, with a warning at every compile), fails at every write on entries written without it (their
`-atime` files missing: a cache written before), and lists and reads the whole directory at every
write (the tests' cache of thousands of entries took CI from 887 to 1,235 s).

Its use is counted from jax's monitoring events: `compiles` (executables asked for: each one
compiled, or read from the cache) and `cache_hits` (of them, read from the cache), in all
(`totals`, the start-up record of ann/train/startup.py) or per thread (`counting`, a server's
ready line: its models compile on threads of their own).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import threading
from collections.abc import Iterator

import jax

from ann import arguments, atomic

# jax's own event names (jax/_src/compiler.py); jax records a request for every executable
# whenever its cache is enabled (the default), with or without a cache directory.
_EVENTS = {
    "/jax/compilation_cache/compile_requests_use_cache": "compiles",
    "/jax/compilation_cache/cache_hits": "cache_hits",
}
_totals = dict.fromkeys(_EVENTS.values(), 0)
MAX_MB = 1024  # the default bound of a cache directory: about 170 digits CNN server versions
_SUFFIX = "-cache"  # jax's name of an entry's file: KEY-cache (jax/_src/lru_cache.py)


@dataclasses.dataclass
class _Bound:
    """The bound in force (`bound`): the directory, the most bytes it keeps, and its bytes as
    this process counts them (pruned at the start, plus this process's writes)."""

    path: str
    limit: int
    counted: int


_bound: _Bound | None = None  # None: no bound
_local = threading.local()  # `counts`: this thread's, inside `counting`
_listening = False


OFF = "off"  # the value of `compilation_cache_dir` (either job's) for no cache, any case


def directory(value: str, given: str, fix: str) -> str | None:
    """The cache directory that `value`, a `compilation_cache_dir` as typed, names: the one
    rule of `ann train`'s config key and `ann serve`'s flag. None for 'off' (any case: 'OFF'
    made a directory named OFF); `~` and `~user` expanded ('~/x' made a directory named `~`
    in the current one).

    Raises ValueError, `{given}: expected a directory, got WHAT; {fix}`, for a value that is
    empty or only blanks (' ' made a directory named ' '), and `{given}: ~USER: no user ...`
    for a `~user` of no user (`arguments.home`)."""
    if value.strip().lower() == OFF:
        return None
    if not value.strip():
        what = "an empty string" if not value else f"only blanks {value!r}"
        raise ValueError(f"{given}: expected a directory, got {what}; {fix}")
    return arguments.home(value, given)


def enable(path: str, given: str, fix: str, max_mb: float = MAX_MB) -> bool:
    """Turns on the persistent cache in the directory `path` (made if missing) for every
    executable: jax keeps only compiles over 1 s by default, which left the digits CNN's eval
    step and the small jits of a start (RNG, init) to recompile on every start of a training
    run (a warm start 0.3 s slower on this 2-core CPU), and most of a server's batch sizes.
    $JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS, if set, wins. False when a directory set
    elsewhere ($JAX_COMPILATION_CACHE_DIR) wins: `path` is then left alone, and every
    executable is cached there alike (it kept jax's 1 s threshold: a server restarted with the
    variable read 0 of its 11 batch sizes).

    Raises ValueError, `{given} WHY; {fix}`, for a path that cannot be one, WHY saying what it
    is (`atomic.why_not_creatable`: "is a file, not a directory", "cannot be created: F is a
    file", "is not writable (permission denied)"): jax warned once per executable and ran
    without a cache.

    The directory in use (`path`, or the one set elsewhere) is kept to at most `max_mb` MiB
    (`bound`; -1: no bound)."""
    if jax.config.jax_compilation_cache_dir:
        _every_executable()
        bound(jax.config.jax_compilation_cache_dir, max_mb)
        return False
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as e:
        # What the path is, not the errno's words: a file was "(File exists)", a path below one
        # "(Not a directory)".
        why = atomic.why_not_creatable(path) or f"cannot be the cache's directory ({e.strerror})"
        raise ValueError(f"{given} {why}; {fix}") from None
    jax.config.update("jax_compilation_cache_dir", path)
    _every_executable()
    bound(path, max_mb)
    return True


def bound(path: str, max_mb: float) -> None:
    """Keeps the cache in `path` to at most `max_mb` MiB from now on: pruned now (`prune`), and
    again whenever this process's writes take it past the bound; each entry read from it is
    marked used. -1: no bound; nor where jax's own bound is set
    ($JAX_COMPILATION_CACHE_MAX_SIZE), which then does the same."""
    global _bound
    if max_mb == -1 or jax.config.jax_compilation_cache_max_size != -1:
        _bound = None
        return
    limit = int(max_mb * (1 << 20))
    _bound = _Bound(path, limit, prune(path, limit))
    _hook()


def current() -> tuple[str, float] | None:
    """(the cache directory this process uses, its bound in MiB, -1 for none), for a process
    it starts to use the same (`enable`); None without a cache."""
    path = jax.config.jax_compilation_cache_dir
    if not path:
        return None
    return path, (_bound.limit / (1 << 20) if _bound is not None else -1)


def prune(path: str, max_bytes: int) -> int:
    """Removes the least recently used entries (by modification time: written, or read through
    `_hook`) of the cache in `path` until they total at most `max_bytes`, the most recent one
    kept whatever its size; the bytes left. Entries another process removed meanwhile are
    skipped."""
    entries = []
    try:
        with os.scandir(path) as listing:
            for entry in listing:
                if entry.name.endswith(_SUFFIX) and entry.is_file(follow_symlinks=False):
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    entries.append((st.st_mtime_ns, st.st_size, entry.path))
    except OSError:  # removed, or not readable: nothing to prune
        return 0
    entries.sort()
    total = sum(size for _, size, _ in entries)
    for _, size, file in entries[:-1]:
        if total <= max_bytes:
            break
        for name in (file, file[: -len(_SUFFIX)] + "-atime"):  # jax's own bound's time file
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
        total -= size
    return total


def _written(key: object) -> None:
    """Counts a new entry `key` against the bound (under `_writing`); prunes when past it."""
    if _bound is None:
        return
    try:
        _bound.counted += os.stat(os.path.join(_bound.path, key + _SUFFIX)).st_size
    except (OSError, TypeError):
        return
    if _bound.counted > _bound.limit:  # other processes' writes and removals counted here too
        _bound.counted = prune(_bound.path, _bound.limit)


def _used(key: object) -> None:
    """Marks entry `key` used (read from the cache): the last to be pruned."""
    if _bound is not None:
        with contextlib.suppress(OSError, TypeError):
            os.utime(os.path.join(_bound.path, key + _SUFFIX))


def _every_executable() -> None:
    """jax's persistent cache keeps every executable, unless the environment sets the minimum
    compile time ($JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS)."""
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _count(event: str, **_: object) -> None:
    name = _EVENTS.get(event)
    if name is not None:
        _totals[name] += 1
        counts = getattr(_local, "counts", None)
        if counts is not None:
            counts[name] += 1


def listen() -> None:
    """Starts counting jax's cache events (once a process; later calls do nothing)."""
    global _listening
    if not _listening:
        jax.monitoring.register_event_listener(_count)
        _listening = True


# Held while jax writes a cache entry (`guard_writes`); `stop_writes` takes it for good.
_writing = threading.Lock()


def guard_writes() -> None:
    """Every write of a cache entry under one lock, so that a process about to exit without
    waiting for its compiling threads (`ann serve` stopped while a model compiles) can wait
    for a write in progress and let none start (`stop_writes`): jax writes an entry in place,
    once, so one cut short stayed, read as a miss with a warning on every later start and never
    rewritten (`_hook`)."""
    _hook()


def _hook() -> None:
    """Hooks jax's `put_executable_and_time` (each write under `_writing`, then counted against
    the bound: `_written`) and `get_executable_and_time` (an entry read is marked used: `_used`),
    once (jax/_src/compilation_cache.py; the calls in jax/_src/compiler.py go through the
    module): where a jax version lacks one, it is not hooked (`stop_writes` has nothing to wait
    for; the bound is kept at each start only, oldest written first)."""
    from jax._src import compilation_cache as jax_cache

    put = getattr(jax_cache, "put_executable_and_time", None)
    if put is not None and not getattr(put, "guarded", False):

        def guarded(*args: object, **kwargs: object) -> object:
            with _writing:
                result = put(*args, **kwargs)
                _written(args[0] if args else kwargs.get("cache_key"))
                return result

        guarded.guarded = True  # type: ignore[attr-defined]
        jax_cache.put_executable_and_time = guarded
    get = getattr(jax_cache, "get_executable_and_time", None)
    if get is not None and not getattr(get, "guarded", False):

        def marked(*args: object, **kwargs: object) -> object:
            result = get(*args, **kwargs)
            if isinstance(result, tuple) and result and result[0] is not None:
                _used(args[0] if args else kwargs.get("cache_key"))
            return result

        marked.guarded = True  # type: ignore[attr-defined]
        jax_cache.get_executable_and_time = marked


def stop_writes(timeout: float) -> bool:
    """Waits at most `timeout` seconds for a cache write in progress (`guard_writes`) and keeps
    every later one from starting; False if one still runs after `timeout`."""
    return _writing.acquire(timeout=timeout)


def totals() -> dict[str, int]:
    """`compiles` and `cache_hits` of every thread since `listen`."""
    return dict(_totals)


@contextlib.contextmanager
def counting() -> Iterator[dict[str, int]]:
    """`compiles` and `cache_hits` of the calling thread within the block (filled as it runs;
    jax calls the listener on the thread that compiles)."""
    listen()
    outer = getattr(_local, "counts", None)
    _local.counts = counts = dict.fromkeys(_EVENTS.values(), 0)
    try:
        yield counts
    finally:
        _local.counts = outer
        if outer is not None:
            for name, n in counts.items():
                outer[name] += n


def describe(hits: float, compiles: float) -> str:
    """How a start used the cache: `7 of 7 executables read from it`, `off` without a cache
    directory."""
    if not jax.config.jax_compilation_cache_dir:
        return "off"
    return f"{hits:.0f} of {compiles:.0f} executables read from it"
