"""The launch scripts parse: shell syntax, and Kubernetes manifests with the fields they need."""

import os
import subprocess
import sys

import yaml
from conftest import ROOT


def test_shell_scripts_parse():
    for script in [
        "scripts/launch_local.sh",
        "scripts/cluster/slurm_train.sbatch",
        "scripts/gpu_check.sh",
        "scripts/bench_registry_alias.sh",
    ]:
        subprocess.run(["bash", "-n", str(ROOT / script)], check=True)


def test_slurm_script_runs_one_task_per_node_and_saves_on_sigterm():
    text = (ROOT / "scripts/cluster/slurm_train.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=1" in text
    assert "#SBATCH --signal=TERM@" in text


def _fake(path, body):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    path.chmod(0o755)


def test_slurm_script_runs_the_venvs_python_and_lets_every_task_finish_its_save(tmp_path):
    """It ran a bare `ann` (with `sbatch --export=NONE`, or on a node without the venv on its
    PATH: "env: 'ann': No such file or directory", as the sweep's script did), and `srun
    --kill-on-bad-exit=1`: the first task to exit 143 after a SIGTERM's save (the normal
    preemption) made srun kill the others, maybe before their save finished."""
    srun = tmp_path / "bin" / "srun"
    _fake(srun, 'printf "%s\\n" "$@" > "$SRUN_ARGS"')
    submitted = tmp_path / "project"
    _fake(submitted / ".venv" / "bin" / "python", "exit 0")  # imports ann
    other = tmp_path / "other" / "bin" / "python"
    _fake(other, "exit 0")
    env = {"PATH": f"{srun.parent}:/usr/bin:/bin", "SRUN_ARGS": str(tmp_path / "args"),
           "SLURM_SUBMIT_DIR": str(submitted)}  # fmt: skip  # --export=NONE: no venv, no ann
    flags = ["--config=configs/digits_cnn.py", "--workdir=/shared/runs/x"]

    def run(**extra):
        return subprocess.run(
            ["bash", str(ROOT / "scripts/cluster/slurm_train.sbatch"), *flags],
            env={**env, **extra}, capture_output=True, text=True, timeout=30,
        )  # fmt: skip

    for extra, python in [({}, submitted / ".venv" / "bin" / "python"),
                          ({"VIRTUAL_ENV": str(other.parent.parent)}, other),
                          ({"ANN_PYTHON": str(other)}, other)]:  # fmt: skip
        done = run(**extra)
        assert done.returncode == 0, done.stderr
        args = (tmp_path / "args").read_text().splitlines()
        assert args == ["--kill-on-bad-exit=0", str(python), "-m", "ann.main",
                        "--distributed=auto", *flags], args  # fmt: skip
    _fake(other, "exit 1")  # cannot import ann: one line naming the fix, before srun
    done = run(ANN_PYTHON=str(other))
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: slurm_train.sbatch: {other} cannot import ann;")
    assert "ANN_PYTHON=/path/to/venv/bin/python" in done.stderr


def test_k8s_job_is_indexed_and_wires_the_process_id():
    service, job = yaml.safe_load_all((ROOT / "scripts/cluster/k8s_train_job.yaml").read_text())
    assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
    spec = job["spec"]
    assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"]
    command = spec["template"]["spec"]["containers"][0]["command"]
    assert f"--num_processes={spec['completions']}" in command
    assert "--process_id=$(JOB_COMPLETION_INDEX)" in command
    assert spec["template"]["spec"]["subdomain"] == service["metadata"]["name"]


def test_launch_local_refuses_a_process_count_that_is_not_one_or_more():
    # 0 ran nothing and exited 0; "abc" was bash's "unbound variable".
    for n in ("0", "abc", "-1", "2x"):
        done = subprocess.run(
            ["bash", str(ROOT / "scripts/launch_local.sh"), n, "--", "--workdir=x"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 2, (n, done.stderr)
        assert done.stderr.startswith("usage: ") and "N: the number of processes" in done.stderr


def test_k8s_job_recreates_a_pod_that_saved_and_exited_143():
    # ann exits 143 after a SIGTERM's checkpoint (it exited 0, and the Job counted the
    # preempted pod's index as complete): such a pod must be recreated, not fail the Job.
    _, job = yaml.safe_load_all((ROOT / "scripts/cluster/k8s_train_job.yaml").read_text())
    rules = job["spec"]["podFailurePolicy"]["rules"]
    by_code = [r for r in rules if 143 in r.get("onExitCodes", {}).get("values", [])]
    assert [r["action"] for r in by_code] == ["Ignore"]
    assert by_code[0]["onExitCodes"]["operator"] == "In"
    container = job["spec"]["template"]["spec"]["containers"][0]["name"]
    assert by_code[0]["onExitCodes"]["containerName"] == container
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_launch_local_says_resume_only_where_it_holds_and_no_job_notices(tmp_path):
    """After every process refused to start (a config error, a held workdir: status 1) it said
    `... the same command resumes from the last one`, which then failed the same way, and bash
    added `launch_local.sh: line 83: 3404 Killed python3 -m ann.main ...` for the process it
    killed. Process 0 here stands in failing (or killed: 137), process 1 trains on."""
    python = tmp_path / "bin" / "python3"
    _fake(
        python,
        f"""if [ "$1" = -c ]; then exec {sys.executable} "$@"; fi
case " $* " in *" --process_id=0 "*) sleep 0.2; echo "error: bad config" >&2
  [ "$STATUS" = 1 ] && exit 1; kill -KILL $$;; esac
exec sleep 60""",
    )
    resumes = "the same command resumes from the last complete checkpoint"
    for status, why in [(1, "its error line above says why"), (137, resumes)]:
        done = subprocess.run(
            ["bash", str(ROOT / "scripts/launch_local.sh"), "2", "--", "--workdir=x"],
            env={**os.environ, "PATH": f"{python.parent}:{os.environ['PATH']}",
                 "STATUS": str(status)},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == status, done.stderr
        assert done.stderr.splitlines() == [
            "error: bad config",
            f"launch_local.sh: a process ended with status {status}; stopping the others now "
            f"(a checkpoint needs every process); {why}",
        ], done.stderr
