"""Times `ann serve`'s drift process (ann/serve/monitoring.py) from its spawn to its first
window's result, without the server's compilation cache and with it (cold: an empty directory;
warm: the one a previous start filled), each start in a fresh process, rounds alternating.

    python scripts/bench_drift_start.py --model=EXPORT_DIR [--rounds=3] [--multivariate=on]

Prints, per start: the drift process's start (spawn, imports, the reference read: `prepare`),
its first window's drift test, and the executables it compiled and read from the cache; then
the medians per mode and the ratios cold/off and warm/off.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import flags

from ann import cli

flags.DEFINE_string("model", None, "An export directory (ann export --out).", required=True)
flags.DEFINE_integer("rounds", 3, "Rounds of off, cold and warm starts.", lower_bound=1)
flags.DEFINE_enum("multivariate", "on", ["on", "off"], "The window's MMD test too.")
flags.DEFINE_integer("rows", 100, "Rows of the first window (digits test rows).", lower_bound=2)
FLAGS = flags.FLAGS

ONE_START = """
import json, sys, time, types
import numpy as np
from ann import artifact, compilation_cache, data
from ann.serve import monitoring
model_dir, cache, rows = sys.argv[1], sys.argv[2], int(sys.argv[4])
multivariate = sys.argv[3] == "on"
if cache:
    compilation_cache.enable(cache, "--compilation_cache_dir", "")
model = artifact.load(model_dir)
x = data.load("digits", "test", cache=True).rows(np.arange(rows))["image"]
outputs = model({"image": x})
view = types.SimpleNamespace(directory=model.directory, manifest=model.manifest,
                             inputs=model.inputs, outputs=model.outputs)
start = time.perf_counter()
pool = monitoring._drift_pool()
pool.submit(monitoring._load_reference, "m/1", view).result()
started = time.perf_counter()
pool.submit(compilation_cache.listen).result()
window = {"image": x}
pool.submit(monitoring._detect, "m/1", window, outputs, 25, multivariate).result()
tested = time.perf_counter()
counts = pool.submit(compilation_cache.totals).result()
pool.shutdown()
print(json.dumps({"start": started - start, "window": tested - started,
                  "compiles": counts["compiles"], "hits": counts["cache_hits"]}))
"""


def one(cache: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    out = subprocess.run(
        [sys.executable, "-c", ONE_START, FLAGS.model, cache, FLAGS.multivariate, str(FLAGS.rows)],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    del argv
    times: dict[str, list[dict]] = {"off": [], "cold": [], "warm": []}
    for r in range(FLAGS.rounds):
        with tempfile.TemporaryDirectory() as cache:
            order = ["off", "cold", "warm"] if r % 2 == 0 else ["cold", "warm", "off"]
            for mode in order:
                t = one("" if mode == "off" else cache)
                times[mode].append(t)
                print(f"round {r + 1} {mode:4}: start {t['start']:.2f}s, first window "
                      f"{t['window']:.2f}s ({t['compiles']} compiled, {t['hits']} read from the "
                      "cache)", flush=True)  # fmt: skip
    med = {m: {k: statistics.median(t[k] for t in ts) for k in ("start", "window")}
           for m, ts in times.items()}  # fmt: skip
    for mode in ("off", "cold", "warm"):
        total = med[mode]["start"] + med[mode]["window"]
        print(f"median {mode:4}: start {med[mode]['start']:.2f}s, first window "
              f"{med[mode]['window']:.2f}s, both {total:.2f}s "
              f"({total / (med['off']['start'] + med['off']['window']):.2f} of off)")  # fmt: skip


if __name__ == "__main__":
    cli.run(main)
