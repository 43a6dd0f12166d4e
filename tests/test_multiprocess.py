"""Several processes on one machine (gloo collectives on CPU): same training as one process."""

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import FAST_COMPILE, ROOT, one_line_error, train_losses, with_devices
from test_serve import free_port

pytestmark = pytest.mark.slow

FLAGS = [
    f"--config={ROOT}/configs/digits_mlp.py",
    "--config.total_steps=20",
    "--config.batch_size=32",
    "--config.log_every_steps=5",
    "--config.eval_every_steps=10",
    "--config.checkpoint_every_steps=10",
]


def test_two_processes_of_two_devices_train_like_one_and_hand_over_to_one_device(tmp_path):
    """2 processes x 2 devices give the losses and parameters of 1 process x 4 devices with the
    same global batch; the run then continues on 1 process x 1 device from their checkpoint."""
    from ann.train.build import restore_model

    multi, single = tmp_path / "multi", tmp_path / "single"
    launcher = _launch(["bash"], multi, ANN_DEVICES_PER_PROCESS="2")
    try:
        stdout, stderr = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:  # timed out: stop the launcher and both processes
            _kill_launcher(launcher)
    assert launcher.returncode == 0, stderr[-3000:]
    # One mesh over both processes' devices; only process 0 logs and sums up (both printed it).
    assert stderr.count("4 x cpu, mesh {'data': 4") == 1
    assert stdout.count("done: step 20") == 1, stdout
    # Only that line: Gloo's rendezvous printed "[Gloo] Rank 0 is connected to ..." there too.
    assert stdout.splitlines() == [line for line in stdout.splitlines() if "done:" in line]
    proc = subprocess.run(
        [sys.executable, "-m", "ann.main", f"--workdir={single}", *FLAGS],
        env=with_devices(4),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    a, b = train_losses(multi), train_losses(single)
    assert sorted(a) == sorted(b) == [5, 10, 15, 20]
    # The logged losses follow the parameters (below): equal up to the order of float32 sums
    # (measured 1.4e-5 relative at step 20 on one CPU, under 1e-5 on another).
    np.testing.assert_allclose([a[s] for s in a], [b[s] for s in a], rtol=1e-4)
    # The trained models, compared by what they compute: the sums run in another order over
    # 2 x 2 devices than over 1 x 4, and Adam divides a near-zero gradient by its own tiny
    # second moment, so single parameters may differ by a few Adam steps (lr 1e-3: up to 1.7e-3
    # on one CPU, 2.7e-5 on another) while the models' outputs agree to round-off.
    from ann import data

    test = data.load("digits", "test", cache=True)
    inputs = {"image": test.rows(np.arange(len(test)))["image"]}
    outputs = []
    for workdir in (multi, single):
        experiment, model, _, _ = restore_model(str(workdir), "latest")
        outputs.append(jax.device_get(experiment.predict(model, inputs)))
    assert (outputs[0]["label"] == outputs[1]["label"]).mean() >= 0.995
    np.testing.assert_allclose(outputs[0]["probabilities"], outputs[1]["probabilities"], atol=1e-3)

    # Saved by 2 processes x 2 devices, continued by 1 process with 1 device.
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


def test_a_peer_that_dies_mid_run_ends_the_other_with_an_error(tmp_path):
    """Process 1 is killed once training runs (outside the launcher); process 0 must exit 1
    with one line naming it, instead of waiting forever in a collective. It printed gloo's
    traceback, then JAX's exit handler waited out the heartbeat timeout at a barrier for the
    dead peer and aborted in C++ (a stack dump, status -6). No save is in flight when it dies:
    one at a barrier with the dead peer is ended by JAX's coordination service itself, once the
    heartbeat times out (README, "Several processes and clusters"); half the runs killed it
    there with saves every 10 steps (the best checkpoint's after each eval too)."""
    procs = _two_processes(
        tmp_path,
        "--config.total_steps=100000",
        "--config.log_every_steps=1",
        "--config.checkpoint_every_steps=100000",
        "--config.eval_every_steps=100000",  # nor a best checkpoint's
    )
    try:
        _wait_for_training(tmp_path, procs)
        procs[1].kill()
        killed = time.time()
        _, stderr = procs[0].communicate(timeout=150)
        assert time.time() - killed < 150
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert procs[0].returncode == 1, stderr[-3000:]
    assert re.match(
        r"error: process 0 of 2: process 1 of 2 is gone mid-run: the [\w-]+ with it failed "
        r"\(.+\); it was killed or crashed outside the launcher",
        stderr.strip().splitlines()[-1],
    ), stderr[-3000:]
    assert "Traceback" not in stderr and "Check failure" not in stderr, stderr[-3000:]
    status = json.load(open(tmp_path / "run_status.json"))
    assert status["status"] == "failed"
    # The same line, not gloo's "JaxRuntimeError: UNKNOWN: Gloo all-reduce failed: ..." (48b).
    assert status["message"].startswith("process 1 of 2 is gone mid-run: "), status["message"]


def test_sigterm_to_one_process_stops_all_at_the_same_step_with_a_checkpoint(tmp_path):
    """A scheduler preempting one process: every process saves the same step and exits 143
    (saved, not finished)."""
    procs = _two_processes(tmp_path, "--config.total_steps=100000", "--config.log_every_steps=20")
    try:
        _wait_for_training(tmp_path, procs)
        procs[1].send_signal(signal.SIGTERM)
        errs = [p.communicate(timeout=120)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [p.returncode for p in procs] == [143, 143], errs[0][-2000:] + errs[1][-2000:]
    saved = r"interrupted at step (\d+) \(SIGTERM\); checkpoint saved"
    stops = [re.findall(saved, e) for e in errs]
    assert stops[0] and stops[0] == stops[1], errs[0][-2000:]
    assert json.load(open(tmp_path / "run_status.json"))["status"] == "interrupted"
    assert os.path.isdir(tmp_path / "checkpoints" / stops[0][0])


def test_ctrl_c_to_the_launcher_interrupts_every_process_at_one_saved_step(tmp_path):
    """Ctrl-C in the terminal of scripts/launch_local.sh (SIGINT to its process group): it
    stopped every process with SIGTERM wording and exit status 0, as if the run had ended."""
    from test_interrupt import AS_IN_A_TERMINAL  # SIGINT at its default, as a terminal's job

    launcher = _launch([*AS_IN_A_TERMINAL, shutil.which("bash")], tmp_path, *ENDLESS)
    try:
        _wait_for_training(tmp_path, [launcher])
        os.killpg(launcher.pid, signal.SIGINT)  # what the terminal's Ctrl-C sends
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            _kill_launcher(launcher)
    assert launcher.returncode == 130, stderr[-3000:]
    # One line per process, each naming it (the two lines were alike).
    found = re.findall(
        r"^process (\d) of 2: interrupted at step (\d+) \(Ctrl-C\); checkpoint saved", stderr, re.M
    )
    assert sorted(p for p, _ in found) == ["0", "1"], stderr[-3000:]
    lines = [step for _, step in found]
    assert lines[0] == lines[1], stderr[-3000:]
    assert "SIGTERM" not in stderr
    assert os.path.isdir(tmp_path / "checkpoints" / lines[0])


def test_a_killed_launcher_stops_every_process_at_one_saved_step(tmp_path):
    """SIGKILL to scripts/launch_local.sh's process group reaches the launcher alone (its
    processes have groups of their own): each sees it gone, saves the same step and exits,
    leaving the workdir unlocked for the command that resumes it."""
    launcher = _launch([shutil.which("bash")], tmp_path, *ENDLESS)
    try:
        _wait_for_training(tmp_path, [launcher])
        processes = _children(launcher.pid)
        os.killpg(launcher.pid, signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=120)  # ends when the processes close stderr
    finally:
        for pid in processes:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    stops = re.findall(r"interrupted at step (\d+) \(launcher gone\); checkpoint saved", stderr)
    assert len(stops) == 2 and stops[0] == stops[1], stderr[-3000:]
    assert json.load(open(tmp_path / "run_status.json"))["status"] == "interrupted"
    assert os.path.isdir(tmp_path / "checkpoints" / stops[0])
    with open(tmp_path / ".lock") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while a process holds it


# A run too long to end by itself, saving only when stopped: the launcher tests signal it.
ENDLESS = (
    "--config.total_steps=100000",
    "--config.log_every_steps=20",
    "--config.checkpoint_every_steps=100000",
)


def test_a_workdir_another_run_holds_refuses_every_process(tmp_path):
    """Process 0 found the lock held and said so, but process 1 locks `.lock.1`, went on alone
    and waited in Orbax's first barrier: the launch hung (then aborted after 5 minutes)."""
    tmp_path.mkdir(exist_ok=True)
    with open(tmp_path / ".lock", "w") as held:  # another run, holding the workdir
        held.write("host elsewhere pid 1\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        procs = _two_processes(tmp_path)
        errs = _stderr_of(procs)
    assert [p.returncode for p in procs] == [1, 1], errs
    lines = [e.strip().splitlines()[-1] for e in errs]
    found = f"error: process 0 of 2: workdir {tmp_path} is in use by another run (host elsewhere"
    assert lines[0].startswith(f"{found} pid 1, holding "), lines
    assert lines[1] == (
        f"error: process 1 of 2: workdir {tmp_path} is in use by another run (process 0 of 2 "
        "found its lock held); wait for it to end or stop it, or choose another --workdir"
    ), lines
    assert sorted(os.listdir(tmp_path)) == [".lock"]  # no .lock.1 left in the other run's


@pytest.mark.parametrize(
    "second, said",
    [
        (
            ["--config.optimizer.learning_rate=0.5"],
            "the processes were given different configs: optimizer.learning_rate is 0.001 in "
            "process 0{0} and 0.5 in process 1{1}; give every process the same --config and "
            "--config.KEY=VALUE flags",
        ),
        (
            ["--num_processes=3"],
            "the processes were given different --num_processes: 2 in process 0{0} and 3 in "
            "process 1{1}; give every process the same --num_processes",
        ),
    ],
)
def test_processes_given_different_configs_or_counts_are_refused(tmp_path, second, said):
    """Process 1 given another learning rate trained with process 0 and both exited 0, with a
    wrong model (loss 2547) and config.json recording process 0's; another --num_processes
    (3 against 2) trained too, process 1 calling itself `process 1 of 3`."""
    procs = _two_processes(tmp_path / "run", second=second)
    errs = _stderr_of(procs)
    assert [p.returncode for p in procs] == [1, 1], errs
    this = " (this one)"
    assert [e.strip().splitlines()[-1] for e in errs] == [
        f"error: process 0 of 2: {said.format(this, '')}",
        f"error: process 1 of {3 if '3' in second[0] else 2}: {said.format('', this)}",
    ], errs
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_the_config_check_names_the_process_that_differs(monkeypatch):
    """Among three processes, one whose config is process 0's still refuses, naming the one
    that differs; many differing keys are cut short."""
    from jax._src import distributed as jax_distributed

    from ann import parallel
    from ann.config import ConfigError

    class Client:  # the coordination service's key-value store, every process's key set
        def __init__(self, runs):
            self.store = {parallel._RUN_KEY.format(index=i): json.dumps(r) for i, r in runs}

        def key_value_set(self, key, value):
            self.store[key] = value

        def blocking_key_value_get(self, key, timeout_ms):
            return self.store[key]

    same = {"a": 1, "b": {"c": "x"}, "d": 2, "e": 3}
    other = {"b": {"c": "y"}, "d": 3, "e": 4}
    state = jax_distributed.global_state
    files = ["configs/digits_cnn.py", "configs/digits_mlp.py", "./configs/digits_cnn.py"]
    runs = [
        (i, {"num_processes": 3, "config": c, "config_flag": f})
        for i, (c, f) in enumerate(zip([same, other, same], files))
    ]
    monkeypatch.setattr(state, "client", Client(runs))
    monkeypatch.setattr(state, "process_id", 2)
    monkeypatch.setattr(state, "num_processes", 3)
    with pytest.raises(ConfigError) as e:
        parallel._check_same_run(same, 10, files[2])
    # It named keys alone ("and 8 more keys"), not the two files, and an absent key `"<unset>"`.
    assert str(e.value) == (
        "the processes were given different configs: --config is configs/digits_cnn.py in "
        "process 0 and configs/digits_mlp.py in process 1; a is 1 in process 0 and unset in "
        'process 1; b.c is "x" in process 0 and "y" in process 1; d is 2 in process 0 and 3 in '
        "process 1; and 1 more key; give every process the same --config and "
        "--config.KEY=VALUE flags"
    )
    monkeypatch.setattr(state, "client", Client([(i, runs[0][1]) for i in range(3)]))
    parallel._check_same_run(same, 10)  # all alike: no error


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_process_0_waiting_for_its_peers_stops_at_once_on_sigterm_or_ctrl_c(
    tmp_path, signum, status
):
    """Process 0 waits in JAX's join, in C++: SIGTERM and Ctrl-C waited for it, until
    --distributed_timeout ran out (57 s of 60; 303 s by default), then `did not join`, exit 1.
    Process 1, waiting for the coordinator, stopped at once: now both do."""
    from test_interrupt import AS_IN_A_TERMINAL  # SIGINT at its default, as a terminal's job

    proc = subprocess.Popen(
        [
            *AS_IN_A_TERMINAL,
            sys.executable,
            "-m",
            "ann.main",
            f"--workdir={tmp_path / 'run'}",
            *FLAGS,
            f"--coordinator_address=127.0.0.1:{free_port()}",
            "--num_processes=2",
            "--process_id=0",
            "--distributed_timeout=300",
        ],
        env=with_devices(1),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stderr.readline()  # the `joining ...` line: JAX's join follows
        assert "joining a multi-process run (process 0 of 2" in first, first
        time.sleep(1)  # into the join
        proc.send_signal(signum)
        rest = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
        proc.wait()
    how = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted (Ctrl-C)"
    assert (proc.returncode, rest.splitlines()) == (
        status,
        [f"process 0 of 2: {how} while starting, before the first step; run the same command "
         "to start again"],
    ), rest  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_the_start_s_sigterm_handler_is_back_once_the_processes_joined():
    """The join set SIGTERM to its default once the processes joined: a SIGTERM then (0-3 s
    after the `[Gloo]` lines) ended them with status 143 and no line, no run_status.json,
    where ann train's start says `terminated (SIGTERM) while starting`."""
    script = (
        "import signal\n"
        "from ann import parallel\n"
        "def handler(signum, frame): pass\n"
        "signal.signal(signal.SIGTERM, handler)\n"
        f"parallel.initialize_distributed('127.0.0.1:{free_port()}', 1, 0, timeout_seconds=30)\n"
        "print(signal.getsignal(signal.SIGTERM) is handler)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=with_devices(1),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (proc.returncode, proc.stdout) == (0, "True\n"), proc.stderr[-3000:]


def _launch(bash: list[str], workdir, *flags: str, **env: str) -> subprocess.Popen:
    """scripts/launch_local.sh (run by `bash`) starting 2 processes of a run in `workdir`, in a
    session of its own, its output piped."""
    return subprocess.Popen(
        [*bash, "scripts/launch_local.sh", "2", "--", f"--workdir={workdir}", *FLAGS, *flags],
        env={**os.environ, "XLA_FLAGS": FAST_COMPILE, **env},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _kill_launcher(launcher: subprocess.Popen) -> None:
    """Kills launch_local.sh and its processes (each in a process group of its own)."""
    for pid in [launcher.pid, *_children(launcher.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    launcher.wait()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def _stderr_of(procs: list[subprocess.Popen]) -> list[str]:
    """Each process's stderr once it ended (at most 120 s each); killed if it did not."""
    try:
        return [p.communicate(timeout=120)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _two_processes(workdir, *flags, second=()) -> list[subprocess.Popen]:
    """Two processes of one run on 1 fake device each, started without the launcher;
    `second`: flags for process 1 alone, after the others."""
    port = free_port()
    common = [
        sys.executable,
        "-m",
        "ann.main",
        f"--workdir={workdir}",
        *FLAGS,
        *flags,
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        "--distributed_timeout=20",
    ]
    return [
        subprocess.Popen(
            [*common, f"--process_id={i}", *(second if i else ())],
            env=with_devices(1),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]


def _wait_for_training(workdir, procs) -> None:
    deadline = time.time() + 240
    while not train_losses_or_empty(workdir) and time.time() < deadline:
        assert all(p.poll() is None for p in procs), "a process ended early"
        time.sleep(0.5)
    assert train_losses_or_empty(workdir), "training never started"


def train_losses_or_empty(workdir) -> dict:
    try:
        return train_losses(workdir)
    except (FileNotFoundError, KeyError, ValueError):
        return {}


def test_a_missing_peer_ends_start_up_with_a_clear_error(tmp_path):
    port = free_port()
    start = time.time()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ann.main",
            f"--workdir={tmp_path / 'run'}",
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
    # JAX's coordination client aborted the process in C++ once the timeout passed ("another
    # task died", a stack dump, status 134); ann's watchdog ends it first with one line.
    lines = proc.stderr.splitlines()
    assert (proc.returncode, len(lines)) == (1, 2), proc.stderr[-3000:]
    assert "joining a multi-process run (process 0 of 2" in lines[0]  # what it waits for
    assert lines[1] == (
        "error: process 0 of 2: process 1 of 2 did not join within --distributed_timeout=5s; "
        f"start every process with the same --coordinator_address=127.0.0.1:{port} and "
        "--num_processes=2, each with its own --process_id, or raise --distributed_timeout if "
        "they start later"
    )
    assert time.time() - start < 90 and not (tmp_path / "run").exists()


def test_the_join_watchdog_names_who_is_missing(monkeypatch):
    """Among more than two processes, and under --distributed=auto, the line names what can be
    told (one process cannot see which peers registered)."""
    import threading

    from ann import cli, parallel

    said, done = [], threading.Event()
    monkeypatch.setattr(cli, "fail_without_teardown", lambda line: (said.append(line), done.set()))
    for count in (4, 0):
        done.clear()
        parallel._join_watchdog(0.01, 7, count, 2, "h:1234")
        assert done.wait(10)
    assert said == [
        "not every other process (0..3 except 2) joined within --distributed_timeout=7s; start "
        "every process with the same --coordinator_address=h:1234 and --num_processes=4, each "
        "with its own --process_id, or raise --distributed_timeout if they start later",
        "not every process of the cluster joined within --distributed_timeout=7s; check that the "
        "cluster started every process, or raise --distributed_timeout if they start later",
    ]
    timer = parallel._join_watchdog(0.5, 7, 2, 0, "h:1234")
    timer.cancel()  # the processes joined in time: nothing is said
    timer.join()
    assert len(said) == 2


def test_distributed_auto_off_a_cluster_names_the_three_flags(tmp_path):
    # It said "could not join the multi-process run (ValueError: coordinator_address should be
    # defined.); check that every process started with the same --coordinator_address ...".
    env = {k: v for k, v in with_devices(1).items() if not k.startswith(("SLURM_", "OMPI_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "ann.main", f"--workdir={tmp_path / 'run'}", *FLAGS,
         "--distributed=auto"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = proc.stderr.splitlines()
    assert (proc.returncode, len(lines)) == (1, 2), proc.stderr[-3000:]
    assert "joining a multi-process run (auto)" in lines[0]  # what it looked for
    assert lines[1] == (
        "error: --distributed=auto found no cluster environment here (JAX reads SLURM's, Open "
        "MPI's, a TPU VM's or another cluster's variables, and none is set); off a cluster give "
        "every process --coordinator_address=HOST:PORT, --num_processes=N and --process_id=I "
        "instead of --distributed=auto"
    )
    assert not (tmp_path / "run").exists()


def test_half_given_multi_process_flags_are_refused(tmp_path):
    # It named none of the missing flags, and said so after importing JAX (3 s); with
    # --distributed=auto the explicit flags won without a word.
    base = [sys.executable, "-m", "ann.main", f"--workdir={tmp_path}", *FLAGS]
    for args, said in [
        (
            ["--num_processes=2"],
            "error: a multi-process run needs all of --coordinator_address=HOST:PORT, "
            "--num_processes=N and --process_id=I (or --distributed=auto on a cluster); "
            "missing or at the one-process default: --coordinator_address, --process_id",
        ),
        (
            ["--distributed=auto", "--coordinator_address=h:1234"],
            "error: --distributed=auto finds the processes in the cluster's environment, and "
            "--coordinator_address names them: give one or the other",
        ),
    ]:
        proc = subprocess.run(
            [*base, *args], env=with_devices(1), cwd=ROOT, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert (proc.returncode, proc.stderr) == (1, said + "\n"), args
    from ann.config import ConfigError
    from ann.parallel import initialize_distributed

    with pytest.raises(ConfigError, match=r"--distributed=auto .*--coordinator_address, --num"):
        initialize_distributed("h:1234", 2, 0, auto=True)
    assert not os.listdir(tmp_path)


def test_a_coordinator_address_without_a_port_is_refused_in_one_line(tmp_path):
    # JAX waited, then: "could not join the multi-process run (IndexError: list index out of
    # range)", which never said the port was missing.
    from ann.config import ConfigError
    from ann.parallel import initialize_distributed

    for address in ("nohost", "nohost:", ":1234", "host:port", "host:１２３４"):
        with pytest.raises(ConfigError) as e:
            initialize_distributed(coordinator_address=address, num_processes=2, process_id=0)
        assert str(e.value) == (
            f"--coordinator_address={address} must be HOST:PORT (process 0's host and a free "
            "port), e.g. --coordinator_address=10.0.0.1:1234"
        )
    # A port out of range said the same, naming no range.
    for port in ("0", "70000", "99999"):
        with pytest.raises(ConfigError) as e:
            initialize_distributed(coordinator_address=f"h:{port}", num_processes=2, process_id=0)
        assert str(e.value) == (
            f"--coordinator_address=h:{port}: port {port} is outside 1-65535; give a free port in "
            "that range, e.g. --coordinator_address=h:1234"
        )


def test_a_coordinator_host_with_no_address_is_refused_in_one_line():
    # JAX's client retried it until its timeout, then aborted in C++ (a stack dump, status 134).
    from ann.config import ConfigError
    from ann.parallel import initialize_distributed

    with pytest.raises(ConfigError) as e:
        initialize_distributed(
            coordinator_address="nosuchhost.invalid:29556", num_processes=2, process_id=1
        )
    assert str(e.value).startswith(
        "--coordinator_address=nosuchhost.invalid:29556: the host 'nosuchhost.invalid' has no "
        "address here ("
    ), str(e.value)
    assert str(e.value).endswith("give process 0's host name or IP address as the others can "
                                 "reach it")  # fmt: skip


def test_a_coordinator_port_in_use_is_refused_in_one_line(tmp_path):
    # gRPC failed to bind ("Failed to add port to server"), then the process crashed
    # ("Fatal Python error: Segmentation fault", 5 of 6 tries); the one line it once printed
    # ("Failed to start RPC server") did not say the port was taken.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "ann.main", f"--workdir={tmp_path / 'run'}", *FLAGS,
             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", "--process_id=0",
             "--distributed_timeout=5"],
            env=with_devices(1), cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert one_line_error(proc) == (
        f"error: process 0 of 2: --coordinator_address=127.0.0.1:{port}: port {port} is in use "
        "on this machine, where process 0 hosts the coordinator; give every process another "
        "free port"
    )
    assert not (tmp_path / "run").exists()


def test_an_unreachable_coordinator_is_one_error_line_within_the_timeout(tmp_path):
    # Process 1 with nothing at the address: JAX's client retried until the timeout, then
    # aborted in C++ (a 36-line stack dump, status 134).
    port = free_port()
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "ann.main", f"--workdir={tmp_path / 'run'}", *FLAGS,
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", "--process_id=1",
         "--distributed_timeout=3"],
        env=with_devices(1), cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = proc.stderr.splitlines()
    assert (proc.returncode, len(lines)) == (1, 2), proc.stderr[-3000:]
    assert "joining a multi-process run (process 1 of 2" in lines[0]  # what it waits for
    assert lines[1] == (
        f"error: process 1 of 2: --coordinator_address=127.0.0.1:{port}: the coordinator could "
        "not be reached in 3s (Connection refused); start process 0 first (it hosts the "
        "coordinator), or check the address: process 0's host as this one reaches it, and the "
        "same port on every process"
    )
    assert time.time() - start < 60 and not (tmp_path / "run").exists()


def test_a_process_killed_under_the_launcher_stops_the_others_at_once(tmp_path):
    """launch_local.sh used to SIGTERM the survivors of a failed process: they tried to save,
    waited for the dead peer at Orbax's commit barrier until the heartbeat timeout (4 min 37 s
    at the default 300 s), then crashed with a C++ dump (2 of 2 trials, killed while saving).
    It kills them now; the last complete checkpoint resumes."""
    launcher = _launch(["bash"], tmp_path / "run", "--config.total_steps=100000",
                       "--config.checkpoint_every_steps=5", "--config.log_every_steps=5",
                       "--distributed_timeout=60")  # fmt: skip
    try:
        deadline = time.time() + 240
        while not train_losses_or_empty(tmp_path / "run") and time.time() < deadline:
            assert launcher.poll() is None, launcher.communicate()[1][-2000:]
            time.sleep(0.5)
        time.sleep(1.0)  # saves every 5 steps: the kill likely lands in one
        processes = [
            pid
            for pid in _children(launcher.pid)
            if b"ann.main" in open(f"/proc/{pid}/cmdline", "rb").read()
        ]  # not the launcher's `sleep`
        assert len(processes) == 2
        os.kill(processes[1], signal.SIGKILL)
        killed = time.time()
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            _kill_launcher(launcher)
    assert time.time() - killed < 30, stderr[-2000:]
    assert launcher.returncode == 137, stderr[-2000:]
    assert "launch_local.sh: a process ended with status 137; stopping the others now" in stderr
    for pid in processes:  # gone (a zombie at most, until its parent reaps it)
        assert (
            not os.path.exists(f"/proc/{pid}")
            or open(f"/proc/{pid}/stat").read().split()[2] in "ZX"
        )
