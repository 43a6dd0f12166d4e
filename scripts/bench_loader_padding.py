"""The cost of `artifact.Model.__call__` running each call at a padded batch size
(`artifact.batch_bucket`: the server's sizes), against what it saves: a compile for each new
batch size, and that executable kept.

    python scripts/bench_loader_padding.py --model=EXPORT_DIR [--batches=1,300,513,1000]
        [--ragged=100]

Run it once per tree (PYTHONPATH=TREE) to compare a tree that pads with one that does not.
Prints, per batch size, the size it runs at and the best microseconds per call over 7 rounds
(after a first call that compiles); on a tree that pads, also the compiled function alone
(`Model.compile`: no checks, no padding) at the batch's own size and at the size it runs at,
and the padding's own work (the lookup, the copy); then, for `--ragged=N`, one call of each
size 1..N in a fresh model: the wall time of all N, how many sizes were compiled and the
process's RSS growth.
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
        model(inputs)  # compiles the size it runs at
        number = max(5, 2000 // size)

        def best(fn, number=number) -> float:
            return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6

        call = best(lambda x=inputs: model(x))
        if not padding:
            print(f"batch {size}: call {call:.1f} us")
            continue
        bucket = artifact.batch_bucket(size)
        own, at = model.compile(size), model.compile(bucket)  # unchecked, unpadded
        padded = {k: artifact._padded(v, bucket) for k, v in inputs.items()}
        bare_own = best(lambda x=inputs, f=own: f(x))
        bare_at = best(lambda x=padded, f=at: f(x))
        pad = best(lambda x=inputs, b=bucket: {k: artifact._padded(v, b) for k, v in x.items()})
        look = best(lambda s=size: artifact.batch_bucket(s), 10_000)
        print(
            f"batch {size} (runs at {bucket}): call {call:.1f} us | compiled function alone at "
            f"{size} rows {bare_own:.1f} us, at {bucket} {bare_at:.1f} us | padding the "
            f"inputs {pad:.1f} us, the size's lookup {look:.2f} us"
        )
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
