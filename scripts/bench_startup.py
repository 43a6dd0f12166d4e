"""Start-up time of `ann train`, cold and warm: command to the first train step, fresh processes.

    python scripts/bench_startup.py [--config=configs/digits_cnn.py] [--rounds=3] [--config.K=V]
    python scripts/bench_startup.py --warm_override=optimizer.learning_rate=0.01  # next trial
    python scripts/bench_startup.py --help_jobs [--rounds=5]   # `ann JOB --help`, each job
    python scripts/bench_startup.py --init_compile [--config=...]  # the init's compile options
    python scripts/bench_startup.py --serve_cache [--config=...]  # `ann serve` cold and warm

Each round runs `python -m ann.main` twice, each in a fresh process with a fresh workdir: cold
(an empty compilation cache directory), then warm (the cache the cold run filled). Each run
trains `--steps` steps; its `startup/...` record in metrics.jsonl (ann/train/startup.py) gives
the time from the process's start to the loop's start and its parts. The data set is prepared
once before the first round (untimed), so cold means "nothing compiled", not "nothing built".
Prints each run's parts, then the medians and warm / cold, and the floor: a fresh process that
only imports JAX, Flax NNX and optax (each round, after the warm run), and the least warm / cold
a warm start could reach above it, floor / (floor + cold - warm). `--warm_override=KEY=VALUE`
(repeatable) changes the warm run's config, as a sweep's next trial would: with the optimizer's
float hyperparameters (ann/train/optimizers.py) it still reads every program from the cache.

`--init_compile`: the config's state initializer (ann/train/state.py) compiled in this process
at LLVM optimization level 3 (XLA's default) and 1 (ann/train/xla_options.py `INIT`), `--rounds`
times each, alternating, no persistent cache: median compile seconds, the compiled init's run
time, and whether every array it makes is the same bit for bit.

`--help_jobs`: the time of `ann JOB --help` for every job, fresh processes, medians of
`--rounds`, against `python -c "import jax"` in the same command (a job under 1.0 answers before
JAX is imported).

`--serve_baseline=REV`: `ann serve`'s start-up instead, this checkout against the commit REV
(its tree from `git archive`, run with PYTHONPATH on it), alternating which goes first, `--rounds`
each: seconds from the command to `/v2/health/ready` answering 200, and the server's own
"compiled in" seconds (its ready line). The export is `--serve_export`, else the config trained
for `--steps` steps and exported (untimed). Medians, and this / baseline.

`--serve_cache`: `ann serve`'s start-up with `--compilation_cache_dir`, this checkout, the same
export: each round three fresh servers, one without the flag (`off`: every start compiles),
`cold` (an empty cache directory, which it fills) and `warm` (that directory, as a restarted
pod with its cache on a volume); `off` goes first in even rounds and last in odd ones. The same
two times as `--serve_baseline`; medians, and each round's cold / off and warm / off.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request

from absl import flags
from ml_collections import config_flags

from ann import cli
from ann import config as config_lib

FLAGS = flags.FLAGS
cli.define_config("Config to start.", "configs/digits_cnn.py")
flags.DEFINE_integer("rounds", 3, "Rounds of (cold, warm); medians are reported.", lower_bound=1)
flags.DEFINE_integer("steps", 2, "Steps each run trains (start-up ends before the first).", 1)
flags.DEFINE_bool("help_jobs", False, "Time `ann JOB --help` for every job instead.")
flags.DEFINE_bool(
    "init_compile",
    False,
    "Compile the config's state initializer at XLA's default LLVM level (3) and at ann's (1) "
    "in this process instead: compile seconds, run time, the values compared.",
)
flags.DEFINE_string(
    "serve_baseline",
    None,
    "A commit: time `ann serve`'s start-up, this checkout against that commit's tree instead.",
)
flags.DEFINE_bool(
    "serve_cache",
    False,
    "Time `ann serve`'s start-up without --compilation_cache_dir, with an empty one and with "
    "the one that filled, instead.",
)
flags.DEFINE_string(
    "serve_export", None, "The export `--serve_baseline` or `--serve_cache` serves (default: made)."
)
flags.DEFINE_multi_string(
    "warm_override",
    [],
    "KEY=VALUE for the warm run only (e.g. optimizer.learning_rate=0.01: a sweep's next trial).",
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("imports", "data", "build", "init", "restore", "compile", "other")
# What every start of a model must import before it can trace its train step.
FLOOR = "import jax, flax.nnx, optax"


def _config_args(argv: list[str]) -> list[str]:
    """--config (the default if not given) and the --config.KEY=VALUE arguments the bench was
    given, passed on verbatim."""
    # absl's `--config.KEY VALUE` spelling too (it was dropped, its value left behind).
    given = [
        f.typed if f.value is None else f"--{f.name}={f.value}"
        for f in cli.typed_flags(["bench_startup", *argv])
        if f.name.startswith("config.")
    ]
    return [f"--config={config_flags.get_config_filename(FLAGS['config'])}", *given]


def _length_args() -> list[str]:
    """The run length every run gets: `--steps`, and the warmup `main` fitted to it."""
    return [
        f"--config.total_steps={FLAGS.steps}",
        "--config.num_epochs=0",  # the length in steps, as `shorten` sets it
        f"--config.optimizer.warmup_steps={FLAGS.config.optimizer.warmup_steps}",
    ]


def _prepare_data(config_args: list[str]) -> None:
    """Builds the data set once (untimed), so that no timed run pays for it."""
    code = (
        "import sys\nfrom absl import flags\nfrom ann import cli, data\n"
        "cli.define_config('config')\nflags.FLAGS(['prepare', *sys.argv[1:]])\n"
        "dc = flags.FLAGS.config.data\ndata.load(dc.name, dc.train_split, dc.data_dir)\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, *config_args], cwd=ROOT, check=True, capture_output=True
    )


def _start(
    config_args: list[str], workdir: str, cache: str, extra: list[str] = ()
) -> dict[str, float]:
    """One fresh `ann train` process (`extra` overrides last, so they win); its start-up record
    from metrics.jsonl."""
    cmd = [
        sys.executable,
        "-m",
        "ann.main",
        *config_args,
        f"--workdir={workdir}",
        *_length_args(),
        f"--config.compilation_cache_dir={cache}",
        *extra,
    ]
    # A cache directory in the environment would win over the run's own (ann.train.loop), and a
    # "cold" start would read it.
    env = {k: v for k, v in os.environ.items() if k not in config_lib.COMPILATION_CACHE_VARIABLES}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1].removeprefix("error: ")
        cli.fail(f"the run in {workdir} ended with status {proc.returncode}: {last}")
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if "startup/seconds" in record:
                return record
    cli.fail(f"{workdir}/metrics.jsonl has no startup/seconds record")


def _describe(name: str, record: dict[str, float]) -> str:
    seconds = {p: record.get(f"startup/{p}_seconds") for p in PARTS}
    parts = ", ".join(f"{p} {s:.2f}" for p, s in seconds.items() if s is not None)
    hits, asked = record["startup/cache_hits"], record["startup/compiles"]
    total = record["startup/seconds"]
    return f"{name} {total:.2f} s ({parts}; cache {hits:.0f} of {asked:.0f})"


def _seconds(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def help_jobs() -> None:
    """`ann JOB --help` for every job against `import jax`, interleaved round by round."""
    from ann.__main__ import JOBS

    cmds = {"import jax": [sys.executable, "-c", "import jax"]}
    cmds |= {job: [sys.executable, "-m", "ann", job, "--help"] for job in JOBS}
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(FLAGS.rounds):
        for name, cmd in cmds.items():
            times[name].append(_seconds(cmd))
    base = statistics.median(times["import jax"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:>14}  {median:6.2f} s  ({median / base:.2f} of import jax)")


def init_compile() -> None:
    """The state's initializer compiled at LLVM level 3 and 1, alternating (see the docstring)."""
    import jax
    import numpy as np

    from ann.train import build

    config = FLAGS.config
    init = build.build(config, build.make_experiment(config)).init
    seconds: dict[str, list[float]] = {"3": [], "1": []}
    run_ms: dict[str, list[float]] = {"3": [], "1": []}
    values = {}
    for _ in range(FLAGS.rounds):
        for level in seconds:
            jax.clear_caches()  # jax's in-memory caches would skip the second compile
            lowered = init.lower()
            start = time.perf_counter()
            compiled = lowered.compile(compiler_options={"xla_backend_optimization_level": level})
            seconds[level].append(time.perf_counter() - start)
            jax.block_until_ready(compiled())
            start = time.perf_counter()
            values[level] = jax.block_until_ready(compiled())
            run_ms[level].append((time.perf_counter() - start) * 1e3)
    same = all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(jax.tree.leaves(values["3"]), jax.tree.leaves(values["1"]), strict=True)
    )
    for level in seconds:
        compile_s, run = statistics.median(seconds[level]), statistics.median(run_ms[level])
        print(
            f"{config.model.name} init, LLVM level {level}: "
            f"compile {compile_s:.2f} s, run {run:.1f} ms"
        )
    ratio = statistics.median(seconds["1"]) / statistics.median(seconds["3"])
    print(f"compile level 1 / level 3: {ratio:.3f}; the same values bit for bit: {same}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_start(tree: str, export: str, extra: list[str] = ()) -> tuple[float, float]:
    """One fresh `ann serve` of `export` from the source tree `tree` (`extra`: more flags):
    (seconds from the command to /v2/health/ready answering 200, the "compiled in" seconds of
    its ready line)."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": tree}
    for name in config_lib.COMPILATION_CACHE_VARIABLES:  # every start compiles, as a fresh pod
        env.pop(name, None)
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "ann", "serve", f"--model={export}", f"--port={port}", *extra],
            cwd=tree,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            while True:
                try:
                    url = f"http://127.0.0.1:{port}/v2/health/ready"
                    with urllib.request.urlopen(url, timeout=5) as reply:
                        if reply.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError):
                    pass
                if proc.poll() is not None:
                    log.seek(0)
                    last = (log.read().strip().splitlines() or ["no output"])[-1]
                    cli.fail(f"ann serve from {tree} ended with status {proc.returncode}: {last}")
                time.sleep(0.02)
            ready = time.perf_counter() - start
        finally:
            proc.terminate()
            proc.wait()
        log.seek(0)
        found = re.search(r"compiled in ([0-9.]+)s", log.read())
    return ready, float(found.group(1)) if found else float("nan")


def _serve_export(tmp: str) -> str:
    """`--serve_export`, else the config trained for `--steps` steps and exported in `tmp`."""
    if FLAGS.serve_export is not None:
        return FLAGS.serve_export
    config_lib.shorten(FLAGS.config, FLAGS.steps)  # the warmup fitted, as `main` does
    args = _config_args(sys.argv[1:])
    _prepare_data(args)
    workdir, export = os.path.join(tmp, "run"), os.path.join(tmp, "export")
    train = [sys.executable, "-m", "ann.main", *args, f"--workdir={workdir}"]
    subprocess.run([*train, *_length_args()], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(
        [sys.executable, "-m", "ann", "export", f"--workdir={workdir}", f"--out={export}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return export


def serve_cache() -> None:
    """`ann serve`'s start-up without a compilation cache, cold and warm (see the docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        export = _serve_export(tmp)
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        _serve_start(ROOT, export)  # untimed: bytecode, the page cache
        times: dict[str, list[tuple[float, float]]] = {"off": [], "cold": [], "warm": []}
        for r in range(FLAGS.rounds):
            flag = [f"--compilation_cache_dir={os.path.join(tmp, f'cache{r}')}"]
            runs = [("cold", flag), ("warm", flag)]
            runs = [("off", []), *runs] if r % 2 == 0 else [*runs, ("off", [])]
            for name, extra in runs:
                times[name].append(_serve_start(ROOT, export, extra))
            off, cold, warm = (times[name][-1] for name in times)
            print(
                f"round {r}: ready off {off[0]:.2f} s, cold {cold[0]:.2f} s, warm {warm[0]:.2f} s "
                f"(cold/off {cold[0] / off[0]:.3f}, warm/off {warm[0] / off[0]:.3f}); compiled "
                f"in {off[1]:.1f}, {cold[1]:.1f}, {warm[1]:.1f} s",
                flush=True,
            )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, values in times.items():
        ready = statistics.median(v[0] for v in values)
        compiled = statistics.median(v[1] for v in values)
        print(f"{name:>5}: median ready {ready:.2f} s, compiled in {compiled:.2f} s")
    for name in ("cold", "warm"):
        ratios = [t[0] / o[0] for o, t in zip(times["off"], times[name], strict=True)]
        print(f"{name} / off, ready: median of the rounds' ratios {statistics.median(ratios):.3f}")


def serve_startup() -> None:
    """`ann serve`'s start-up, this checkout against `--serve_baseline` (see the docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        baseline = os.path.join(tmp, "baseline")
        archive = subprocess.run(
            ["git", "archive", "--format=tar", FLAGS.serve_baseline],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(baseline, filter="data")
        export = _serve_export(tmp)
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        trees = {"baseline": baseline, "this": ROOT}
        for tree in trees.values():  # untimed: the extracted tree's bytecode, the page cache
            _serve_start(tree, export)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        for r in range(FLAGS.rounds):
            order = list(trees) if r % 2 == 0 else list(reversed(trees))
            for name in order:
                times[name].append(_serve_start(trees[name], export))
            (b_ready, b_compiled), (t_ready, t_compiled) = times["baseline"][-1], times["this"][-1]
            print(
                f"round {r}: ready baseline {b_ready:.2f} s, this {t_ready:.2f} s "
                f"({t_ready / b_ready:.3f}); compiled in {b_compiled:.1f} s, {t_compiled:.1f} s",
                flush=True,
            )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ratios = [t[0] / b[0] for b, t in zip(times["baseline"], times["this"], strict=True)]
    for name, values in times.items():
        ready = statistics.median(v[0] for v in values)
        compiled = statistics.median(v[1] for v in values)
        print(f"{name:>8} ({trees[name] if name == 'this' else FLAGS.serve_baseline}): median "
              f"ready {ready:.2f} s, compiled in {compiled:.2f} s")  # fmt: skip
    print(f"this / baseline, ready: median of the rounds' ratios {statistics.median(ratios):.3f}")


def _warm_overrides() -> list[str]:
    """`--warm_override`s as `--config.KEY=VALUE` arguments, parsed and validated with the
    rest of the config now, on the command line the warm run gets (`_start`: the run length,
    then the overrides, which win) as `ann train` would, so that a mistake is one line before
    any run. Raises FlagError naming the flag. (It validated the overrides at `--steps` with
    the warmup fitted afterwards, which the warm run does not do: `optimizer.warmup_steps=100`
    passed here and was refused by the warm run after the whole cold one.)"""
    extra = [f"--config.{o}" for o in FLAGS.warm_override]
    if not extra:
        return extra
    argv = ["bench_startup", *_config_args(sys.argv[1:]), *_length_args(), *extra]
    warm = flags.FlagValues()
    default = config_flags.get_config_filename(FLAGS["config"])
    # ml_collections reads the overrides from `sys_argv` (else sys.argv), not the parsed list.
    cli.define_config("The warm run's config.", default, flag_values=warm, sys_argv=argv)
    try:
        warm(argv)
        config_lib.validate(warm.config, num_devices=None, unchanged=cli.unchanged_overrides(warm))
    except (flags.Error, config_lib.ConfigError, AttributeError, KeyError, ValueError) as e:
        raise cli.FlagError(f"--warm_override: {cli.one_line(e, [argv[0], *extra])}") from None
    return extra


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.help_jobs:
        help_jobs()
        return
    if FLAGS.init_compile:
        init_compile()
        return
    if FLAGS.serve_baseline:
        serve_startup()
        return
    if FLAGS.serve_cache:
        serve_cache()
        return
    config = FLAGS.config
    config_lib.shorten(config, FLAGS.steps)  # a shipped warmup longer than the run is fitted
    args = _config_args(sys.argv[1:])
    extra = _warm_overrides()
    if extra:
        print(f"the warm runs add: {' '.join(extra)}", flush=True)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    cold, warm, floor = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        _prepare_data(args)
        for r in range(FLAGS.rounds):
            cache = os.path.join(tmp, f"cache{r}")
            cold.append(_start(args, os.path.join(tmp, f"cold{r}"), cache))
            warm.append(_start(args, os.path.join(tmp, f"warm{r}"), cache, extra))
            floor.append(_seconds([sys.executable, "-c", FLOOR]))
            ratio = warm[-1]["startup/seconds"] / cold[-1]["startup/seconds"]
            print(f"round {r}: {_describe('cold', cold[-1])}", flush=True)
            print(f"round {r}: {_describe('warm', warm[-1])} | warm/cold {ratio:.3f}", flush=True)
    c = statistics.median(x["startup/seconds"] for x in cold)
    w = statistics.median(x["startup/seconds"] for x in warm)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"median start-up: cold {c:.2f} s, warm {w:.2f} s, warm/cold {w / c:.3f} (goal <= 0.3)")
    # Whatever a warm start saves is also saved by the cold one, except the compiles (c - w):
    # a warm start that did nothing but the floor's imports would give floor / (floor + c - w).
    f = statistics.median(floor)
    print(
        f"floor: `python -c '{FLOOR}'` {f:.2f} s; the least warm/cold any warm start of this "
        f"config could reach here: {f / (f + c - w):.3f}"
    )


if __name__ == "__main__":
    cli.run(main)
