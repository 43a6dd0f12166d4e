"""What each `train_and_evaluate` leaves behind in a process that runs many (a notebook, a
sweep driver): N tiny digits MLP runs (20 steps, the tests' `tiny` settings), each in a new
workdir under one root, one after another in this process.

    python scripts/bench_runs_in_one_process.py [--runs=8] [--trim]

Run it once per tree (PYTHONPATH=TREE) to compare. Prints, after each run and a
`gc.collect()`: the process's RSS, jax's live arrays, the threads, the garbage collector's
objects, and the objects of ann's and tensorboardX's classes still alive. `--trim` also asks
glibc to return its free memory (`malloc_trim(0)`), so that the RSS counts what is kept, not
what the allocator holds.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import os
import pathlib
import tempfile
import threading
import time

from absl import flags

from ann import cli

flags.DEFINE_integer("runs", 8, "How many runs, one after another.")
flags.DEFINE_bool("trim", False, "malloc_trim(0) after each run.")
FLAGS = flags.FLAGS

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _config():
    import importlib.util

    from ann import config as ann_config

    spec = importlib.util.spec_from_file_location("digits_mlp", ROOT / "configs" / "digits_mlp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.total_steps, config.batch_size, config.async_checkpointing = 20, 32, True
    config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps = 5, 10, 10
    ann_config.fit_warmup(config)
    return config


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _kept() -> dict[str, int]:
    kinds = collections.Counter(
        type(o).__qualname__
        for o in gc.get_objects()
        if str(type(o).__module__).startswith(("ann.", "tensorboardX."))
    )
    return dict(sorted(kinds.items()))


def main(_) -> None:
    import jax

    from ann.train.loop import train_and_evaluate

    root = tempfile.mkdtemp(prefix="bench_runs_")
    for i in range(1, FLAGS.runs + 1):
        start = time.perf_counter()
        train_and_evaluate(_config(), os.path.join(root, f"run{i}"))
        gc.collect()
        if FLAGS.trim:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        print(
            f"run {i}: {time.perf_counter() - start:.1f} s, RSS {_rss_mb():.1f} MB, "
            f"live arrays {len(jax.live_arrays())}, threads {threading.active_count()}, "
            f"objects {len(gc.get_objects())}, kept {_kept()}",
            flush=True,
        )


if __name__ == "__main__":
    cli.run(main)
