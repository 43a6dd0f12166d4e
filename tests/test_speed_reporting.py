"""Mixed precision, and what a run reports about its speed: FLOPs, memory, MFU, profiles."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, tiny, without_compilation_cache

from ann.metrics.device_peaks import peak_flops
from ann.train import startup
from ann.train.loop import train_and_evaluate

PARTS = ("imports", "data", "build", "init", "compile", "other")  # a fresh start's


def first_record(workdir):
    with open(workdir / "metrics.jsonl") as f:
        return json.loads(f.readline())


def test_bfloat16_cnn_still_learns(tmp_path):
    config = tiny(
        "digits_cnn", total_steps=150, batch_size=64, eval_every_steps=150, dtype="bfloat16"
    )
    result = train_and_evaluate(config, str(tmp_path))
    assert result.eval_metrics["eval/accuracy"] >= 0.9
    # parameters stay in float32; only the compute is bfloat16
    import jax

    assert {x.dtype.name for x in jax.tree.leaves(result.state.params)} == {"float32"}


def test_compile_report_and_no_mfu_on_cpu(tmp_path, caplog):
    started = time.perf_counter()
    with caplog.at_level("INFO", logger="absl"):
        train_and_evaluate(tiny(total_steps=5), str(tmp_path), started=started - 1.5)
    first = first_record(tmp_path)
    assert first["compile/train_step_flops"] > 1e5  # an MLP step on 32 rows
    assert first["compile/train_step_memory_bytes"] > 0
    # Said in units it reads in: a tiny MLP's step read "6.53e-05 GFLOP ... 0.0 MiB a call".
    from ann.console import bytes_text, flops_text

    flops, memory = first["compile/train_step_flops"], first["compile/train_step_memory_bytes"]
    said = f": {flops_text(flops)} a step and {bytes_text(memory)} a call per device | "
    assert said in caplog.text and "e-0" not in said and " 0.0 " not in said, said
    assert [flops_text(n) for n in (0.885e9, 6.53e4, 12, 2.3e12)] == [
        "885 MFLOP", "65.3 kFLOP", "12 FLOP", "2.3 TFLOP"
    ]  # fmt: skip
    assert [bytes_text(n) for n in (512, 1536, 6_606_028, 9.6e9)] == [
        "512 B", "1.5 KiB", "6.3 MiB", "8.9 GiB"
    ]  # fmt: skip
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    keys = set().union(*records)
    assert "train/mfu" not in keys
    # Start-up: one record before the first step, its parts adding up to the whole.
    (startup,) = [r for r in records if "startup/seconds" in r]
    assert startup["step"] == 0
    parts = {k: v for k, v in startup.items() if k.endswith("_seconds") and k.count("/") == 1}
    assert set(parts) == {f"startup/{p}_seconds" for p in PARTS}
    assert startup["startup/imports_seconds"] >= 1.5  # counted from `started`, before the call
    assert startup["startup/compile_seconds"] > 0 and startup["startup/init_seconds"] > 0
    assert sum(parts.values()) == pytest.approx(startup["startup/seconds"])
    # A resume restores the state instead of initializing it, and its part says so.
    train_and_evaluate(tiny(total_steps=7), str(tmp_path))
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    resumed = [r for r in records if "startup/seconds" in r][-1]
    assert resumed["step"] == 5
    assert resumed["startup/restore_seconds"] > 0 and "startup/init_seconds" not in resumed
    # A fresh start compiles its init, its eval step and its train programs, nothing more: no
    # small eager executables (the state's RNG key is derived inside the init).
    assert startup["startup/compiles"] == 2 + first["compile/train_programs"]
    # Some or all read from the tests' shared cache (conftest), never more than were asked.
    assert 0 <= startup["startup/cache_hits"] <= startup["startup/compiles"]


def test_mfu_from_the_compiled_steps_flops_where_the_peak_is_known(tmp_path, monkeypatch):
    # A device whose peak is known (a fake 1 TFLOP/s) gets train/mfu: the compiled train
    # step's FLOPs reach the log hook, whatever steps per call the run chose.
    from ann.metrics import device_peaks
    from ann.train import hooks

    monkeypatch.setattr(device_peaks, "peak_flops", lambda kind: 1e12)
    # The log hook's first window opens once the train programs exist (their FLOPs known).
    opened, start = [], hooks.LogTrain.start
    monkeypatch.setattr(
        hooks.LogTrain, "start", lambda self: (opened.append(self.flops_per_step > 0), start(self))
    )
    train_and_evaluate(tiny(total_steps=10, log_every_steps=5), str(tmp_path))
    assert opened == [True]
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    flops = records[0]["compile/train_step_flops"]
    logged = [r for r in records if "train/mfu" in r]
    assert len(logged) == 2
    for r in logged:
        assert r["train/mfu"] == pytest.approx(flops * r["train/steps_per_sec"] / 1e12)


def test_startup_clock_and_process_start():
    before = time.perf_counter()
    assert startup.process_start() < before  # this process started before this test
    clock = startup.Clock()
    with clock.part("build"):
        time.sleep(0.02)
    clock.move("build", "data", 0.01)
    report = clock.report()
    assert "startup/imports_seconds" not in report  # no start given: timed from the clock
    assert report["startup/data_seconds"] == 0.01
    assert report["startup/build_seconds"] >= 0.01
    line = startup.describe(report)
    assert line.startswith("start-up ") and ": data 0.01s, build " in line  # in a start's order
    assert line.endswith("compilation cache: 0 of 0 executables read from it")  # conftest's
    import jax

    shared = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    try:
        assert startup.describe(report).endswith("compilation cache: off")
    finally:
        jax.config.update("jax_compilation_cache_dir", shared)


def test_peak_table():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("TPU v5 lite") == 197e12
    assert peak_flops("cpu") is None


def test_profile_steps_write_a_trace(tmp_path):
    train_and_evaluate(tiny(total_steps=8, profile_steps=(2, 3)), str(tmp_path))
    traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
    assert traces, "no profile written"


def test_a_profile_that_cannot_be_written_is_a_warning_and_the_run_goes_on(tmp_path, caplog):
    """The trace is written at stop_trace: a full disk or an unwritable directory raised there,
    killed the run with a traceback, and raised again from the end-of-run close."""
    # The profile directory holds a file where the trace's directory goes, as an unwritable
    # place refuses it (`profile` itself a file is refused before the start: workdir.check).
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "plugins").write_text("not a directory")
    with caplog.at_level("WARNING"):
        state = train_and_evaluate(tiny(total_steps=8, profile_steps=(2, 3)), str(tmp_path))
    assert int(state.step) == 8
    (line,) = [r.getMessage() for r in caplog.records if "profile" in r.getMessage()]
    assert line.startswith(f"the profile from step 3 could not be written into {tmp_path}")
    assert "the run goes on without it" in line


def test_the_first_logged_rate_counts_from_the_first_step(monkeypatch):
    """The log hook is made before the train step compiles: its first window counted the
    compile as training (the digits CNN's first line said 1,653 ex/s and ETA 0:00:43, then ran
    600 steps in 16 s)."""
    from ann.train import hooks

    now = [100.0]
    monkeypatch.setattr(hooks.time, "perf_counter", lambda: now[0])
    written = []

    class Writer:
        def write(self, step, metrics):
            written.append(metrics)

    log = hooks.LogTrain(10, Writer(), batch_size=32)
    now[0] += 3.0  # the train step compiles
    log.start()  # the loop's first step is next
    now[0] += 1.0  # 10 steps
    info = hooks.StepInfo(10, 100, None, metrics=tuple({"loss": 1.0} for _ in range(10)))
    log.record(info)
    log(info)
    assert written[0]["train/steps_per_sec"] == pytest.approx(10.0)
    assert written[0]["train/examples_per_sec"] == pytest.approx(320.0)


def test_bad_profile_steps():
    from ann import config as config_lib

    # `(0, 3)` was refused as "both >= 1" while the README's (first, count) read as tracing
    # steps 1-3: the refusal says the earliest trace starts at step 2, and gives a value it takes.
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.validate(tiny(profile_steps=(0, 3)), 4)
    assert str(e.value) == (
        "config key 'profile_steps' is (0, 3); use (first_step, num_steps), tracing steps "
        "first_step+1..first_step+num_steps, both >= 1 (the earliest trace starts at step 2: "
        "step 1 is mostly compilation), or () for off; e.g. --config.profile_steps='(1, 3)'"
    )
    config_lib.validate(tiny(profile_steps=(1, 3)), 4)


@pytest.mark.slow
def test_persistent_compilation_cache_beside_the_workdir(tmp_path):
    """A second run in a fresh workdir beside the first reads every compile from the cache,
    with other optimizer hyperparameters, another warmup and more steps too (the train step
    takes them as arguments, so a sweep over them, or a resume with more steps, compiles
    once), and trains with its own values."""
    starts = []
    # name, learning rate, steps, warmup steps, other hyperparameters of the config's adamw
    runs = [
        ("cold", 0.003, 2, 1, []),
        ("warm", 0.01, 4, 2, ["weight_decay=0.05", "b2=0.99", "eps=1e-6"]),
    ]
    for name, lr, steps, warmup, others in runs:
        cmd = [
            sys.executable,
            "-m",
            "ann.main",
            f"--config={ROOT}/configs/digits_cnn.py",
            f"--workdir={tmp_path / name}",
            f"--config.total_steps={steps}",
            f"--config.optimizer.warmup_steps={warmup}",  # the config's 50 does not fit
            "--config.batch_size=32",
            f"--config.optimizer.learning_rate={lr}",
            *[f"--config.optimizer.{o}" for o in others],
        ]
        env = without_compilation_cache()  # the run's own, beside its workdir
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "start-up " in proc.stderr  # the console line
        records = [json.loads(line) for line in open(tmp_path / name / "metrics.jsonl")]
        starts.append(next(r for r in records if "startup/seconds" in r))
        # The mean of the logged steps' rates: 0 and the peak (2 steps, warmup 1); 0, half the
        # peak, the peak and half of it (4 steps, warmup 2, then the cosine over 2 steps).
        logged = [r["train/learning_rate"] for r in records if "train/learning_rate" in r]
        assert np.mean(logged) == pytest.approx(lr / 2), (name, logged)
        assert any((tmp_path / ".jax_cache").iterdir())
    cold, warm = starts
    # init, train and eval steps at least; the eval step compiles in under jax's default 1 s
    assert cold["startup/compiles"] >= 3 and cold["startup/cache_hits"] == 0
    assert warm["startup/cache_hits"] == warm["startup/compiles"] == cold["startup/compiles"]
    assert cold["startup/imports_seconds"] > 0  # ann train counts from its process's start


def test_train_steps_compile_with_xla_cpu_options(monkeypatch):
    import jax
    import jax.numpy as jnp

    from ann.train import step as step_lib
    from ann.train import xla_options

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    assert xla_options.for_cpu(xla_options.STEP) == xla_options.STEP
    # The digits CNN's second conv at batch 16: YNNPACK takes it without the options.
    x = jax.ShapeDtypeStruct((16, 8, 8, 32), jnp.float32)
    w = jax.ShapeDtypeStruct((3, 3, 32, 64), jnp.float32)

    def conv(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    compiled, _ = step_lib.compile_step(conv, (x, w), None, None)
    assert "ynn_fusion" not in compiled.as_text()  # the convolution left to XLA's own kernel
    # A setting in XLA_FLAGS wins: nothing is passed, XLA's default (YNNPACK) runs.
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot")
    assert xla_options.for_cpu(xla_options.STEP) is None


@pytest.mark.slow  # 10 s: compiles three train steps
def test_bench_peers_runs_at_a_tiny_size_without_torch():
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/bench_peers.py",
            "--steps=2",
            "--rounds=1",
            "--warmup=1",
            "--batches=2",
            "--config.batch_size=8",
            "--torch_python=",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "PyTorch: skipped: --torch_python is empty" in out, out
    for row in (
        "| ann (ann.train.step, compiled) |",
        "| jax.lax, hand-written |",
        "| Flax linen |",
    ):
        assert row in out, out
    assert "load average" in out, out


def test_startup_pauses_the_garbage_collector_until_the_first_step(tmp_path, monkeypatch):
    """No collector passes over the start-up's long-lived objects (ann/train/startup.py): off
    while the run builds, on again from the first step, and as it was after a failed start."""
    import gc

    from ann.config import ConfigError
    from ann.train import build as build_lib

    seen = []
    real_build = build_lib.build

    def build(*args, **kwargs):
        seen.append(gc.isenabled())
        return real_build(*args, **kwargs)

    monkeypatch.setattr(build_lib, "build", build)
    assert gc.isenabled()
    train_and_evaluate(tiny(total_steps=2), str(tmp_path / "run"))
    assert seen == [False] and gc.isenabled()
    with pytest.raises(ConfigError):
        train_and_evaluate(tiny(total_steps=2, batch_size=-1), str(tmp_path / "bad"))
    assert gc.isenabled()
    gc.disable()  # a caller's own choice is kept
    try:
        clock = startup.Clock()
        clock.report()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_ann_train_imports_without_garbage_collection(tmp_path):
    """`ann train` pauses the collector from its first import (its imports are most of a warm
    start); run as a program only, so importing ann.main elsewhere changes nothing."""
    code = (
        "import gc, runpy, sys\n"
        "passes = []\n"
        "gc.callbacks.append(lambda phase, info: passes.append(phase == 'start'))\n"
        "try:\n"
        "    runpy.run_module('ann.main', run_name='__main__', alter_sys=True)\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sum(passes), gc.isenabled(), 'ann.train.loop' in sys.modules)\n"
    )
    # An unknown experiment is refused once the training code is imported, before data.
    args = ["--config=configs/digits_mlp.py", f"--workdir={tmp_path}", "--config.experiment=x"]
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    passes, enabled, imported = proc.stdout.split()
    assert imported == "True" and "unknown experiment 'x'" in proc.stderr, proc.stderr[-2000:]
    # A pass may come while Python compiles ann/main.py itself, before its first line runs;
    # without the pause its imports take about 450.
    assert int(passes) <= 2 and enabled == "False", proc.stderr[-2000:]


def test_bench_train_eval_runs_a_config_the_checks_accept():
    """`bench_train.py --eval`'s run (only the first eval a best) passes the config's checks:
    it used best_mode=max on val/loss, refused since as keeping the worst checkpoint, and the
    device run of gpu_check.sh ended with that error instead of a number."""
    code = (
        "import sys; sys.path.insert(0, 'scripts'); import bench_train as b\n"
        "from conftest import load_config; from ann import config as c\n"
        "for name in ('digits_cnn', 'breast_cancer_mlp'):  # in steps; in epochs\n"
        "    r = b.eval_run_config(load_config(name), 4)\n"
        "    c.validate(r, num_devices=1); print(r.total_steps, r.eval_every_steps)"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}/tests{os.pathsep}{ROOT}"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["50", "10"] * 2, proc.stdout
