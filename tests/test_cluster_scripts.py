"""The launch scripts parse: shell syntax, and Kubernetes manifests with the fields they need."""

import subprocess

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
    assert "srun" in text and "ann train --distributed=auto" in text


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
