"""Behaviour that needs its own process: SIGTERM, and different device counts."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, train_losses, with_devices

pytestmark = pytest.mark.slow

CONFIG = f"--config={ROOT}/configs/digits_mlp.py"
SMALL = [
    "--config.batch_size=32",
    "--config.log_every_steps=5",
    "--config.eval_every_steps=10",
    "--config.checkpoint_every_steps=10",
]


def command(workdir, *flags):
    return [sys.executable, "-m", "ann.main", CONFIG, f"--workdir={workdir}", *SMALL, *flags]


def cli(workdir, devices, *flags, timeout=300):
    return subprocess.run(
        command(workdir, *flags),
        env=with_devices(devices),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_endless(workdir, ready, *flags, stderr=subprocess.DEVNULL):
    """Starts a run on one device too long to end by itself (no eval either); returns the
    process once `ready()` holds (polled for at most 240 s), still running, to be signalled."""
    endless = ["--config.total_steps=100000", "--config.eval_every_steps=100000"]
    proc = subprocess.Popen(
        command(workdir, *endless, *flags),
        env=with_devices(1),
        cwd=ROOT,
        stderr=stderr,
        text=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and not ready():
        time.sleep(0.5)
    assert proc.poll() is None, "training ended before it could be signalled"
    return proc


def test_one_and_four_devices_agree_and_a_checkpoint_moves_between_them(tmp_path):
    one, four = tmp_path / "one", tmp_path / "four"
    for workdir, devices in [(one, 1), (four, 4)]:
        proc = cli(workdir, devices, "--config.total_steps=20")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"{devices} x cpu" in proc.stderr
    a, b = train_losses(one), train_losses(four)
    assert sorted(a) == sorted(b) == [5, 10, 15, 20]
    np.testing.assert_allclose([a[s] for s in a], [b[s] for s in a], rtol=1e-4)

    # Saved on 4 devices, restored on 1, and training goes on from step 20.
    proc = cli(four, 1, "--config.total_steps=30")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "at step 20" in proc.stderr and "1 x cpu" in proc.stderr
    assert 30 in train_losses(four)


def test_sigterm_saves_and_exits_143(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    proc = start_endless(
        tmp_path,
        lambda: metrics.exists() and "train/loss" in metrics.read_text(),
        "--config.checkpoint_every_steps=100000",
        stderr=subprocess.PIPE,
    )
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    # Saved but not finished: 143, as a SIGTERM's end reads. It was 0, and a Kubernetes Job
    # counted the preempted pod's index as complete (SLURM's afterok ran the next job).
    assert proc.returncode == 143, stderr[-2000:]
    assert "interrupted at step " in stderr and " (SIGTERM); checkpoint saved; run the" in stderr
    # Its last line, as Ctrl-C's is: it was a `warning:` logged at the save, Ctrl-C's plain.
    last = stderr.rstrip().splitlines()[-1]
    assert last.startswith("interrupted at step ") and last.endswith(
        " (SIGTERM); checkpoint saved; run the same command to resume"
    ), stderr[-2000:]
    assert "warning: interrupted at step" not in stderr
    assert json.loads((tmp_path / "run_status.json").read_text())["status"] == "interrupted"
    saved = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(saved) == 1 and 5 <= saved[0] < 100000

    # The same command, with a reachable end, resumes from that step.
    proc = cli(tmp_path, 1, f"--config.total_steps={saved[0] + 5}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"at step {saved[0]}" in proc.stderr


def test_a_killed_run_is_recognised_and_resumed(tmp_path):
    """SIGKILL leaves run_status.json at `running`: the next start says the run was killed
    instead of trusting it, and resumes from the last checkpoint."""
    ckpt = tmp_path / "checkpoints"

    def committed() -> bool:  # a finished step directory, not Orbax's temporary one
        return ckpt.exists() and any(p.name.isdigit() for p in ckpt.iterdir())

    proc = start_endless(tmp_path, committed)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    status = json.loads((tmp_path / "run_status.json").read_text())
    assert status["status"] == "running" and status["pid"] == proc.pid

    saved = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
    rerun = cli(tmp_path, 1, f"--config.total_steps={saved + 5}")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "killed or crashed without recording how it ended" in rerun.stderr
    assert f"pid {proc.pid}" in rerun.stderr and f"at step {saved}" in rerun.stderr
    assert json.loads((tmp_path / "run_status.json").read_text())["status"] == "done"


def test_a_second_run_in_a_busy_workdir_is_refused_and_writes_nothing(tmp_path):
    """While one run trains a workdir, a second start there is one line naming the first
    run's host and pid, exit 1, and adds nothing (no metrics lines, no restored checkpoint)."""
    metrics = tmp_path / "metrics.jsonl"
    proc = start_endless(tmp_path, lambda: metrics.exists() and metrics.stat().st_size > 0)
    try:
        second = cli(tmp_path, 1, "--config.total_steps=100000", "--config.eval_every_steps=100000")
        lines_after = metrics.read_text().count('"step"')
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    assert second.returncode == 1, second.stderr[-2000:]
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith("error: workdir ") and f"pid {proc.pid}" in last, last
    assert "restored" not in second.stderr and "resumed from" not in second.stderr
    # Whatever the first run wrote since, no line came from the second (one writer per step).
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert len(steps) >= lines_after and steps == sorted(steps)


@pytest.mark.parametrize("value", ["1", "not-a-pid", ""])
def test_a_launcher_pid_that_is_not_the_parent_is_ignored(monkeypatch, value):
    """ANN_LAUNCHER_PID inherited from further up, or copied into a shell with a launcher's
    command, must not stop a run that the named process did not start."""
    from ann.train import launcher

    monkeypatch.setenv(launcher.ENV, value)
    assert not launcher.stop_with_launcher()
