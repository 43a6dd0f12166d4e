"""Start-up time: from the command to the first train step, in named parts.

`ann train` hands the loop its process's start (`process_start()`), so `startup/seconds` counts
everything a user waits for: the interpreter, imports and flags (`imports`), reading the data
(`data`), building the model and its abstract state (`build`), initializing the state at a
fresh start (`init`, its init compiled) or restoring a checkpoint on resume (`restore`),
compiling the train and eval steps (`compile`), and the rest (`other`: workdir checks, config
record, parameter layout, metric writers). A caller of
`train_and_evaluate` that gives no start is timed from that call (no `imports` part).

The persistent compilation cache's use is counted from jax's monitoring events
(ann/compilation_cache.py): `compiles` (executables the start needed: each one compiled, or
read from the cache) and `cache_hits` (of them, read from the cache).

A start-up allocates objects that live as long as the process (modules, traced and lowered
programs) and frees few, so Python's cyclic garbage collector, which runs after every 700 net
allocations and rescans the older generations every 10th and 100th time, spends its passes on
objects it cannot free: about 450 collections in `ann train`'s imports alone, about 0.4 s of a
3.75 s warm start on a loaded 2-core machine (docs/benchmarks.md, "Start-up"). It is paused
from the start (`ann train` from its first import, `Clock` for a `train_and_evaluate` call) to
the first step, and restored then: what it would have freed waits until its first pass (the
digits CNN's peak memory was the same, 422 MB).
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Iterator

from ann import compilation_cache

PARTS = ("imports", "data", "build", "init", "restore", "compile")  # in the order a start runs them


def process_start() -> float:
    """When this process started, as a `time.perf_counter()` value: from /proc/self/stat
    (Linux; 10 ms resolution, kernel clock ticks since boot against CLOCK_BOOTTIME). Where
    that cannot be read, now (the caller's own start)."""
    now = time.perf_counter()
    try:
        with open("/proc/self/stat") as f:
            # Field 22 is the start time; the command name (field 2) may hold spaces, so count
            # from the closing parenthesis.
            fields = f.read().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return now
    return now - max(0.0, age)


class Clock:
    """Seconds per start-up part, from `started` (a `time.perf_counter()` value; None: now).

    From its making to `report()` (or `close()`, or the end of a `with` block) the garbage
    collector is paused (see the module's docstring); then it is back as it was."""

    def __init__(self, started: float | None = None):
        self._gc_was_enabled: bool | None = gc.isenabled()
        gc.disable()
        compilation_cache.listen()
        now = time.perf_counter()
        self.origin = now if started is None else started
        self.seconds: dict[str, float] = {}
        if started is not None:
            self.seconds["imports"] = now - started
        self._counts = compilation_cache.totals()

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Adds the time spent in the block to part `name`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def move(self, source: str, target: str, seconds: float) -> None:
        """Moves `seconds` counted in part `source` to part `target` (a part measured inside
        another, such as the data read while building)."""
        self.seconds[source] -= seconds
        self.seconds[target] = self.seconds.get(target, 0.0) + seconds

    def __enter__(self) -> Clock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ends the start-up's garbage collector pause (done by `report()`; twice is harmless)."""
        if self._gc_was_enabled:
            gc.enable()
        self._gc_was_enabled = None

    def report(self) -> dict[str, float]:
        """`startup/seconds` (origin to now), `startup/PART_seconds` for each part and `other`
        (the rest), `startup/compiles` and `startup/cache_hits` since this clock began. The
        start-up ends here: the garbage collector runs again (`close()`)."""
        total = time.perf_counter() - self.origin
        self.close()
        out = {"startup/seconds": total}
        order = [p for p in PARTS if p in self.seconds]
        order += [p for p in self.seconds if p not in PARTS]
        out.update({f"startup/{k}_seconds": self.seconds[k] for k in order})
        out["startup/other_seconds"] = max(0.0, total - sum(self.seconds.values()))
        counts = compilation_cache.totals()
        out.update({f"startup/{k}": float(counts[k] - self._counts[k]) for k in counts})
        return out


def describe(report: dict[str, float]) -> str:
    """One console line: `start-up 1.68s to the first step: imports 1.03s, data 0.08s, ... |
    compilation cache: 7 of 7 executables read from it` (`off` without a cache directory)."""
    parts = [
        f"{key[len('startup/') : -len('_seconds')]} {value:.2f}s"
        for key, value in report.items()
        if key.endswith("_seconds")
    ]
    cache = compilation_cache.describe(report["startup/cache_hits"], report["startup/compiles"])
    return (
        f"start-up {report['startup/seconds']:.2f}s to the first step: {', '.join(parts)} | "
        f"compilation cache: {cache}"
    )
