"""Several processes on one machine (gloo collectives on CPU): same training as one process."""

import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import ROOT, train_losses, with_devices

pytestmark = pytest.mark.slow

FLAGS = [
    f"--config={ROOT}/configs/digits_mlp.py",
    "--config.total_steps=20",
    "--config.batch_size=32",
    "--config.log_every_steps=5",
    "--config.eval_every_steps=10",
    "--config.checkpoint_every_steps=10",
    "--config.compilation_cache_dir=off",
]


@pytest.mark.skipif(
    not os.environ.get("ANN_TEST_MULTIPROCESS"),
    reason="opt-in (ANN_TEST_MULTIPROCESS=1): passed in one clean CI run and hung in the next "
    "(2 processes, gloo on CPU); the hang is not understood yet",
)
def test_two_processes_train_like_one_and_hand_over_to_one_device(tmp_path):
    from ann.train.loop import restore_model

    multi, single = tmp_path / "multi", tmp_path / "single"
    proc = subprocess.run(
        ["bash", "scripts/launch_local.sh", "2", "--", f"--workdir={multi}", *FLAGS],
        env={**os.environ, "ANN_DEVICES_PER_PROCESS": "1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("2 x cpu, mesh {'data': 2}") == 2  # both processes, one mesh
    proc = subprocess.run(
        [sys.executable, "-m", "ann.main", f"--workdir={single}", *FLAGS],
        env=with_devices(2),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    a, b = train_losses(multi), train_losses(single)
    assert sorted(a) == sorted(b) == [5, 10, 15, 20]
    np.testing.assert_allclose([a[s] for s in a], [b[s] for s in a], rtol=1e-5)
    for x, y in zip(
        jax.tree.leaves(jax.device_get(nnx_params(restore_model(str(multi), "latest")[1]))),
        jax.tree.leaves(jax.device_get(nnx_params(restore_model(str(single), "latest")[1]))),
        strict=True,
    ):
        np.testing.assert_allclose(x, y, atol=1e-6)

    # Saved by 2 processes, continued by 1 process with 1 device.
    proc = subprocess.run(
        [sys.executable, "-m", "ann.main", f"--workdir={multi}", *FLAGS, "--config.total_steps=30"],
        env=with_devices(1),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and "at step 20" in proc.stderr
    assert 30 in train_losses(multi)


def nnx_params(model):
    from flax import nnx

    return nnx.state(model, nnx.Param)


def test_a_missing_peer_ends_start_up_with_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.time()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ann.main",
            f"--workdir={tmp_path}",
            *FLAGS,
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            "--process_id=0",
            "--distributed_timeout=5",
        ],
        env=with_devices(1),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # JAX's coordination client aborts the process (a C++ fatal error) once the timeout passes;
    # ann's own line before it says what the process was waiting for.
    assert proc.returncode != 0, proc.stderr[-3000:]
    assert "joining a multi-process run (process 0 of 2" in proc.stderr
    assert "DEADLINE_EXCEEDED" in proc.stderr or "could not join" in proc.stderr
    assert time.time() - start < 90


def test_half_given_multi_process_flags_are_refused(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ann.main", f"--workdir={tmp_path}", *FLAGS, "--num_processes=2"],
        env=with_devices(1),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "needs all of --coordinator_address" in proc.stderr
