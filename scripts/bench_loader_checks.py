"""The cost of `artifact.Model.__call__`'s finite checks on a batch call: one `isfinite` pass
over each float input (`artifact.finite_fault`) and each float output
(`artifact.first_non_finite`), against the whole call, for batches of random rows of the
export's input dtype (values 0-10: finite outputs).

    python scripts/bench_loader_checks.py --model=EXPORT_DIR [--batches=1,64,1024]

Prints, per batch size, the best microseconds per call over 7 rounds of the checked call, of
the jitted function alone (no checks, outputs to NumPy) and of the finite checks alone.
"""

from __future__ import annotations

import timeit

from absl import flags

from ann import cli

flags.DEFINE_string("model", None, "An export directory (ann export --out).", required=True)
flags.DEFINE_list("batches", ["1", "64", "1024"], "Batch sizes.")
FLAGS = flags.FLAGS


def _best(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def _measure(model, inputs) -> str:
    import numpy as np

    from ann import artifact

    outputs = model(inputs)

    def finite() -> None:
        for x in inputs.values():
            if x.dtype.kind in artifact.FLOATING:
                artifact.finite_fault(x, str(x.dtype))
        artifact.first_non_finite(outputs)

    def unchecked() -> None:
        for v in model._jitted(model.weights, inputs).values():
            np.asarray(v)

    call = _best(lambda: model(inputs), 50)
    bare = _best(unchecked, 50)
    checks = _best(finite, 200)
    return (
        f"call {call:.1f} us, jitted alone {bare:.1f} us, finite checks {checks:.1f} us "
        f"({checks / call:.1%} of the call)"
    )


def main(argv: list[str]) -> None:
    del argv
    import numpy as np

    from ann import artifact

    model = artifact.load(FLAGS.model)
    rng = np.random.default_rng(0)
    for size in map(int, FLAGS.batches):
        inputs = {
            k: (rng.random((size, *spec["shape"][1:])) * 10).astype(spec["dtype"])
            for k, spec in model.inputs.items()
        }
        print(f"batch {size}: {_measure(model, inputs)}")


if __name__ == "__main__":
    cli.run(main)
