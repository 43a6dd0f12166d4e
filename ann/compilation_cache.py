"""XLA's persistent compilation cache, as `ann train` and `ann serve` turn it on, and its use.

`enable` gives jax a cache directory for every executable of the process (the first call in a
process decides; a directory set elsewhere, e.g. $JAX_COMPILATION_CACHE_DIR, wins). `ann train`
calls it with the config key `compilation_cache_dir` (default: `.jax_cache` beside the workdir),
`ann serve` with its flag `--compilation_cache_dir` (default: none, as a server may run from a
read-only image).

Its use is counted from jax's monitoring events: `compiles` (executables asked for: each one
compiled, or read from the cache) and `cache_hits` (of them, read from the cache), in all
(`totals`, the start-up record of ann/train/startup.py) or per thread (`counting`, a server's
ready line: its models compile on threads of their own).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator

import jax

# jax's own event names (jax/_src/compiler.py); jax records a request for every executable
# whenever its cache is enabled (the default), with or without a cache directory.
_EVENTS = {
    "/jax/compilation_cache/compile_requests_use_cache": "compiles",
    "/jax/compilation_cache/cache_hits": "cache_hits",
}
_totals = dict.fromkeys(_EVENTS.values(), 0)
_local = threading.local()  # `counts`: this thread's, inside `counting`
_listening = False


def enable(path: str, given: str, fix: str) -> bool:
    """Turns on the persistent cache in the directory `path` (made if missing) for every
    executable: jax keeps only compiles over 1 s by default, which left the digits CNN's eval
    step and the small jits of a start (RNG, init) to recompile on every start of a training
    run (a warm start 0.3 s slower on this 2-core CPU), and most of a server's batch sizes.
    $JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS, if set, wins. False when a directory set
    elsewhere ($JAX_COMPILATION_CACHE_DIR) wins: `path` is then left alone, and every
    executable is cached there alike (it kept jax's 1 s threshold: a server restarted with the
    variable read 0 of its 11 batch sizes).

    Raises ValueError, `{given} cannot be the cache's directory (why); {fix}`, for a path that
    cannot be one (a file, a path below one, a directory this user may not write): jax warned
    once per executable and ran without a cache."""
    if jax.config.jax_compilation_cache_dir:
        _every_executable()
        return False
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as e:
        raise ValueError(f"{given} cannot be the cache's directory ({e.strerror}); {fix}") from None
    jax.config.update("jax_compilation_cache_dir", path)
    _every_executable()
    return True


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
    rewritten. Hooks jax's `put_executable_and_time` (jax/_src/compilation_cache.py; the call
    in jax/_src/compiler.py goes through the module): where a jax version lacks it, nothing is
    hooked and `stop_writes` has nothing to wait for."""
    from jax._src import compilation_cache as jax_cache

    put = getattr(jax_cache, "put_executable_and_time", None)
    if put is None or getattr(put, "guarded", False):
        return

    def guarded(*args: object, **kwargs: object) -> object:
        with _writing:
            return put(*args, **kwargs)

    guarded.guarded = True  # type: ignore[attr-defined]
    jax_cache.put_executable_and_time = guarded


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
