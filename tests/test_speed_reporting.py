"""Mixed precision, and what a run reports about its speed: FLOPs, memory, MFU, profiles."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, tiny

from ann.metrics.device_peaks import peak_flops
from ann.train.loop import train_and_evaluate


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


def test_compile_report_and_no_mfu_on_cpu(tmp_path):
    train_and_evaluate(tiny(total_steps=5), str(tmp_path))
    first = first_record(tmp_path)
    assert first["compile/train_step_flops"] > 1e5  # an MLP step on 32 rows
    assert first["compile/train_step_memory_bytes"] > 0
    keys = set().union(*(json.loads(line) for line in open(tmp_path / "metrics.jsonl")))
    assert "train/mfu" not in keys


def test_peak_table():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("TPU v5 lite") == 197e12
    assert peak_flops("cpu") is None


def test_profile_steps_write_a_trace(tmp_path):
    train_and_evaluate(tiny(total_steps=8, profile_steps=(2, 3)), str(tmp_path))
    traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
    assert traces, "no profile written"


def test_bad_profile_steps():
    from ann import config as config_lib

    with pytest.raises(config_lib.ConfigError, match="'profile_steps'"):
        config_lib.validate(tiny(profile_steps=(0, 3)), 4)


@pytest.mark.slow
def test_persistent_compilation_cache_beside_the_workdir(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "ann.main",
        f"--config={ROOT}/configs/digits_cnn.py",
        f"--workdir={tmp_path / 'run'}",
        "--config.total_steps=2",
        "--config.optimizer.warmup_steps=1",  # the config's 50 does not fit in 2 steps
        "--config.batch_size=32",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any((tmp_path / ".jax_cache").iterdir())
