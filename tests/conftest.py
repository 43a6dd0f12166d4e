"""Tests run on CPU with 4 fake devices; data sets are built once per session, offline."""

import os

# LLVM's default (top) optimization level makes XLA:CPU compile these small models about 3x
# slower (a ViT train step: 10 s against 3 s) and gains nothing at test sizes. Subprocesses get
# the same flag through `with_devices`.
FAST_COMPILE = "--xla_backend_optimization_level=1"
os.environ["XLA_FLAGS"] = (
    f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE} --xla_force_host_platform_device_count=4"
).strip()
os.environ["JAX_PLATFORMS"] = "cpu"

import importlib.util  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory, worker_id):
    """Every test (and subprocess) reads data sets from one session directory, shared by the
    session's xdist workers (their base directories' parent), so each set is built once: a
    worker that needs a set another is building waits for it (ann.data.sources locks builds)."""
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent
    path = root / "tensorflow_datasets"
    path.mkdir(exist_ok=True)
    os.environ["TFDS_DATA_DIR"] = str(path)
    return str(path)


# Servers a session's workers share (tests/test_mlflow_mirror.py's MLflow server), each named
# by a `NAME.json` holding its process group ("pgid") in this directory of the session's shared
# directory; stopped when the session ends (after the last xdist worker).
SESSION_SERVERS = "session-servers"


def stop_session_servers(shared) -> None:
    """Stops the servers named in `shared`'s SESSION_SERVERS directory."""
    import signal

    for record in (pathlib.Path(shared) / SESSION_SERVERS).glob("*.json"):
        pgid = json.loads(record.read_text())["pgid"]
        record.unlink()
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(300):  # up to 30 s
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)


def pytest_sessionfinish(session):
    """The shared servers stop with the session: in xdist's controller, or a run without
    workers (a worker's session ends while the other may still use them)."""
    if hasattr(session.config, "workerinput"):
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None and factory._basetemp is not None:
        stop_session_servers(factory.getbasetemp())


def pytest_collection_finish(session):
    """The test modules and the libraries they imported (JAX, Flax, TFDS, Optuna, MLflow) live
    for the whole session: moved out of the garbage collector's reach, with young collections
    rarer, so the collector stops rescanning them through every compile (about 4% of a subset's
    time here; `ann train` pauses it over its start-up for the same reason)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


@pytest.fixture(autouse=True)
def _close_figures():
    """Closes the figures a test left open, as `ann report` does once it writes them: a
    worker's tests together held more than matplotlib's 20 and it warned ("More than 20
    figures have been opened")."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory, worker_id):
    """Every test and subprocess compiles through one persistent XLA compilation cache, shared
    by the session's workers like the data sets: the tests train the same tiny models many
    times, and XLA:CPU's compiles were most of a tiny run's time (a digits MLP's 20 steps: 9-14
    s cold, 4.4 s from the cache, on 2 cores). Through the environment for `ann train` and
    other subprocesses (where it wins over a run's own cache, ann.train.loop); tests of that
    cache remove it from their subprocesses' environment (`without_compilation_cache`)."""
    import jax

    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent
    path = str(root / "jax_cache")
    # jax writes an entry in place: a process reading it half-written warns and compiles it
    # again (checked: a truncated entry gives that warning and the right result). jax's LRU
    # mode would lock each read and write, but it lists and reads the whole directory at every
    # write, thousands of entries here: `.ci/run` took 1,235 s of pytest instead of 887.
    settings = {
        "jax_compilation_cache_dir": path,
        "jax_persistent_cache_min_compile_time_secs": 0,  # every program, not only slow ones
    }
    for name, value in settings.items():
        jax.config.update(name, value)
        os.environ[name.upper()] = str(value)
    return path


def without_compilation_cache() -> dict[str, str]:
    """The environment for a subprocess that must use its run's own compilation cache."""
    from ann.config import COMPILATION_CACHE_VARIABLES

    return {k: v for k, v in os.environ.items() if k not in COMPILATION_CACHE_VARIABLES}


def load_config(name: str, arg: str | None = None):
    """`get_config(arg)` of configs/NAME.py, as `--config=configs/NAME.py:arg` would."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def importable(monkeypatch, cls: type) -> str:
    """`cls` (a class of a test file) as config.experiment names a user's: "module:Name"."""
    module = types.ModuleType(f"user_tasks_{cls.__name__.lower()}")
    setattr(module, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return f"{module.__name__}:{cls.__name__}"


def tiny(name: str = "digits_mlp", **overrides):
    """A fast variant of a shipped config: few steps, hooks every few steps."""
    config = load_config(name)
    config.total_steps = 20
    config.log_every_steps = 5
    config.eval_every_steps = 10
    config.checkpoint_every_steps = 10
    config.batch_size = 32
    config.async_checkpointing = True
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    if "optimizer.warmup_steps" not in overrides:
        # A shipped warmup longer than the short run would be refused (warmup < total_steps).
        from ann.config import fit_warmup

        fit_warmup(config)
    return config


@pytest.fixture(scope="session")
def digits_export(tmp_path_factory, worker_id):
    """A tiny trained digits CNN and its export via the CLI (export, registry, serving tests).
    Made once for the session's workers, as the data sets are (the first worker to need it
    makes it under a lock, the other waits and reads it): tests only read it, or copy it."""
    import fcntl
    import subprocess
    import sys

    from ann.train.loop import train_and_evaluate

    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        shared = shared.parent
    root = shared / "digits_export"
    workdir, out = root / "run", root / "export"
    with open(shared / "digits_export.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "done").exists():
            return workdir, out
        if root.exists():  # a worker that stopped half-way
            import shutil

            shutil.rmtree(root)
        root.mkdir()
        train_and_evaluate(tiny("digits_cnn"), str(workdir))
        result = subprocess.run(
            [sys.executable, "-m", "ann.export", f"--workdir={workdir}", f"--out={out}"],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        (root / "export.stdout").write_text(result.stdout)  # what ann export printed
        (root / "export.stderr").write_text(result.stderr)
        (root / "done").touch()
    return workdir, out


def with_devices(devices: int) -> dict:
    """The environment for a subprocess that sees `devices` fake CPU devices."""
    return {
        **os.environ,
        "XLA_FLAGS": f"{FAST_COMPILE} --xla_force_host_platform_device_count={devices}",
    }


def train_losses(workdir) -> dict:
    """step -> train/loss from a run's metrics.jsonl."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {r["step"]: r["train/loss"] for r in map(json.loads, f) if "train/loss" in r}


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The refusal a command printed, checked to be the project's form: exit status 1 and
    `error: ...` as the only line on stderr (no traceback, no warning). Returns the line."""
    context = (result.args, result.stderr[-2000:])
    assert result.returncode == 1, context
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, context
    assert result.stderr.endswith("\n"), context
    return result.stderr[:-1]


def fill(args: list[str], places: dict) -> list[str]:
    """Command-line arguments with placeholders replaced: a bare `RUN`, or the value of
    `--flag=RUN`, becomes `str(places["RUN"])` (the flag tables name paths a test makes)."""
    filled = []
    for arg in args:
        key, sep, value = arg.partition("=")
        filled.append(f"{key}={places.get(value, value)}" if sep else str(places.get(arg, arg)))
    return filled
