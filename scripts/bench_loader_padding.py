"""The cost of `artifact.Model.__call__` running each call at a padded batch size
(`artifact.batch_bucket`: the server's sizes), against what it saves: a compile for each new
batch size, and that executable kept.

    python scripts/bench_loader_padding.py --model=EXPORT_DIR [--batches=1,300,513,1000]
        [--ragged=100]

Run it once per tree (PYTHONPATH=TREE) to compare a tree that pads with one that does not.
Prints, per batch size, the size it runs at and the best microseconds per call over 7 rounds
(after a first call that compiles); then, for `--ragged=N`, one call of each size 1..N in a
fresh model: the wall time of all N, how many sizes were compiled and the process's RSS
growth.
"""

from __future__ import annotations

import time
import timeit

from absl import flags

from ann import cli

flags.DEFINE_string("model", None, "An export directory (ann export --out).", required=True)
flags.DEFINE_list("batches", ["1", "300", "513", "1000"], "Batch sizes to time.")
flags.DEFINE_integer("ragged", 100, "Call each batch size 1..N once (0: skip).")
FLAGS = flags.FLAGS


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1024


def _inputs(model, size: int, rng) -> dict:
    return {
        k: (rng.random((size, *spec["shape"][1:])) * 10).astype(spec["dtype"])
        for k, spec in model.inputs.items()
    }


def main(argv: list[str]) -> None:
    del argv
    import numpy as np

    from ann import artifact

    rng = np.random.default_rng(0)
    padding = hasattr(artifact, "batch_bucket")
    print(f"tree pads: {padding}")
    model = artifact.load(FLAGS.model)
    for size in map(int, FLAGS.batches):
        inputs = _inputs(model, size, rng)
        model(inputs)  # compiles its size
        number = max(5, 2000 // size)
        best = min(timeit.repeat(lambda x=inputs: model(x), number=number, repeat=7)) / number * 1e6
        runs_at = artifact.batch_bucket(size) if padding else size
        print(f"batch {size} (runs at {runs_at}): {best:.1f} us a call")
    if FLAGS.ragged:
        model = artifact.load(FLAGS.model)
        batches = [_inputs(model, n, rng) for n in range(1, FLAGS.ragged + 1)]
        model(batches[0])
        before, start = _rss_mb(), time.perf_counter()
        for inputs in batches:
            model(inputs)
        seconds = time.perf_counter() - start
        sizes = len(
            {artifact.batch_bucket(n) for n in range(1, FLAGS.ragged + 1)} if padding else batches
        )
        print(
            f"ragged 1..{FLAGS.ragged}: {seconds:.1f} s, {sizes} sizes compiled, RSS "
            f"+{_rss_mb() - before:.0f} MB"
        )


if __name__ == "__main__":
    cli.run(main)
