"""Device mesh, batch sharding and multi-process start-up. The batch is split over the `data`
and `fsdp` axes (each fsdp group sees different rows); parameters are placed by
ann/sharding.py's rules."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import flags, logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ann import arguments
from ann import config as config_lib
from ann.config import ConfigError

BATCH_AXES = ("data", "fsdp")


def make_mesh(axes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh from `{axis: size}`; one size may be -1, meaning all remaining devices."""
    devices = list(devices if devices is not None else jax.devices())
    names, sizes = list(axes), list(axes.values())
    if sizes.count(-1) > 1:
        raise ConfigError("config key 'mesh': at most one axis may have size -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ConfigError(
                f"config key 'mesh': fixed axes use {known} devices, which does not divide "
                f"the {len(devices)} available; {_dividing(axes, len(devices))}"
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ConfigError(
            f"config key 'mesh' {dict(zip(names, sizes))} needs {math.prod(sizes)} devices, not "
            f"the {len(devices)} this run has (it uses them all); set one axis to -1"
        )
    return jax.make_mesh(
        tuple(sizes),
        tuple(names),
        axis_types=(jax.sharding.AxisType.Auto,) * len(names),
        devices=devices,
    )


def _dividing(axes: Mapping[str, int], count: int) -> str:
    """The fix for fixed mesh axes whose product does not divide `count` devices: `use sizes
    whose product divides 4 (1, 2 or 4), e.g. --config.mesh.fsdp=2`, the example the largest
    size at most the axis's own that divides with the other fixed axes."""
    divisors = [d for d in range(1, count + 1) if count % d == 0]
    listed = ", ".join(map(str, divisors[:-1])) + f" or {count}" if count > 1 else "1"
    fixed = {name: size for name, size in axes.items() if size != -1}
    example = ""
    for name, size in fixed.items():
        others = math.prod(fixed.values()) // size
        if size != 1 and count % others == 0:
            fit = max(d for d in divisors if (count // others) % d == 0 and d <= size)
            example = f", e.g. --config.mesh.{name}={fit}"
            break
    return f"use sizes whose product divides {count} ({listed}){example}"


def batch_sharding(mesh: Mesh, stacked: bool = False) -> NamedSharding:
    """Leading (batch) dimension split over the mesh's data axes; `stacked`: a stack of
    batches (`[steps, batch, ...]`, ann/train/chunks.py), the second dimension split."""
    axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
    return NamedSharding(mesh, PartitionSpec(None, axes) if stacked else PartitionSpec(axes))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def initialize_distributed(
    coordinator_address: str = "",
    num_processes: int = 0,
    process_id: int = -1,
    auto: bool = False,
    timeout_seconds: int = 300,
    config: Mapping[str, Any] | None = None,
    config_flag: str = "",
) -> None:
    """Joins a multi-process run before any other JAX call.

    Explicit: all three of coordinator_address, num_processes, process_id. `auto`: JAX reads the
    cluster's own variables (SLURM, Open MPI, Kubernetes, TPU VMs). A peer that never arrives
    ends start-up after `timeout_seconds`; a peer that dies mid-run ends the others after the
    same heartbeat timeout, instead of a silent hang. The wait for the peers is interruptible:
    SIGTERM's and SIGINT's Python handlers run in it (`_interruptible`). Once joined, every
    process checks that all were given the same `config` (the resolved run config, a
    ConfigDict or dict; None: not checked) and number of processes, else raises ConfigError
    naming what differs (`_check_same_run`; first the `--config` argument, `config_flag`, where
    the processes were given different files), before anything is built or written.
    """
    explicit = bool(coordinator_address) or num_processes > 0 or process_id >= 0
    if not explicit and not auto:
        return
    fault = arguments.process_flags_fault(coordinator_address, num_processes, process_id, auto)
    if fault is not None:
        raise ConfigError(fault)
    host, _, port = coordinator_address.rpartition(":")
    if explicit and host and arguments.digits(port) and not 0 < int(port) < 65536:
        raise ConfigError(  # it said "must be HOST:PORT", naming no range
            f"--coordinator_address={coordinator_address}: port {int(port)} is outside 1-65535; "
            "give a free port in that range, e.g. --coordinator_address="
            f"{host}:1234"
        )
    if explicit and not (host and arguments.digits(port)):
        raise ConfigError(  # JAX: "IndexError: list index out of range" after the wait
            f"--coordinator_address={coordinator_address} must be HOST:PORT (process 0's host "
            "and a free port), e.g. --coordinator_address=10.0.0.1:1234"
        )
    if explicit:
        _check_host(coordinator_address, host.strip("[]"))
    if explicit and process_id == 0:
        _check_port_free(coordinator_address, int(port))
    if explicit and process_id >= num_processes:
        raise ConfigError(
            f"--process_id={process_id} with --num_processes={num_processes}: process ids run "
            f"0..{num_processes - 1}"
        )
    # Collectives between CPU devices of different processes go through gloo; GPUs and TPUs
    # use their own (NCCL, ICI), which this setting does not touch.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    _c_stdout_to_stderr()
    # JAX's client gets a longer timeout than ann's watchdog (`_join_watchdog`): when a peer
    # never registers, JAX aborts the process in C++ (a stack dump, status 134, "another task
    # died"), which no Python code can catch; the watchdog ends it first with one line.
    wait = timeout_seconds
    kwargs = dict(
        initialization_timeout=timeout_seconds + _JAX_GRACE_SECONDS,
        heartbeat_timeout_seconds=timeout_seconds,
    )
    logging.info(
        "joining a multi-process run (%s): waiting up to %ds for all processes to register",
        f"process {process_id} of {num_processes} at {coordinator_address}" if explicit else "auto",
        timeout_seconds,
    )
    if explicit and process_id > 0:  # process 0 hosts the coordinator: the others reach it
        wait = _wait_for_coordinator(
            coordinator_address, host.strip("[]"), int(port), timeout_seconds
        )
        kwargs["initialization_timeout"] = wait + _JAX_GRACE_SECONDS
    watchdog = _join_watchdog(
        wait, timeout_seconds, num_processes if explicit else 0, process_id, coordinator_address
    )
    # The SIGTERM handler in place (ann train's start's), restored once joined: JAX's client
    # installs its own preemption notifier, which only `reached_preemption_sync_point` reads.
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        if explicit:
            _interruptible(
                lambda: jax.distributed.initialize(
                    coordinator_address, num_processes, process_id, **kwargs
                )
            )
        else:
            _interruptible(lambda: jax.distributed.initialize(**kwargs))
    except Exception as e:  # start-up failures surface as one clear line
        if not explicit and isinstance(e, ValueError) and "defined" in str(e):
            raise ConfigError(  # JAX: "coordinator_address should be defined."
                "--distributed=auto found no cluster environment here (JAX reads SLURM's, "
                "Open MPI's, a TPU VM's or another cluster's variables, and none is set); "
                "off a cluster give every process --coordinator_address=HOST:PORT, "
                "--num_processes=N and --process_id=I instead of --distributed=auto"
            ) from e
        raise ConfigError(
            f"could not join the multi-process run ({type(e).__name__}: {e}); check that every "
            f"process started with the same --coordinator_address and --num_processes, and "
            f"that the coordinator is reachable (timeout {timeout_seconds}s)"
        ) from e
    finally:
        watchdog.cancel()
    # ann shares a SIGTERM's request itself (train/preemption.py). Until training starts, a
    # SIGTERM ends the process as in a single-process run, with ann train's line: set to
    # SIG_DFL here, it killed the processes just after they joined silently (status 143, no
    # line, no run_status.json).
    if main_thread:
        signal.signal(signal.SIGTERM, sigterm if sigterm is not None else signal.SIG_DFL)
    _check_same_run(config, timeout_seconds, config_flag)
    _orbax_barriers_without_collectives()
    _introduce(timeout_seconds)


def _interruptible(call: Callable[[], None]) -> None:
    """Runs `call` (JAX's join, which blocks in C++ until every process registered) in a thread
    while the main thread waits for it in short steps, so that a SIGTERM's or Ctrl-C's Python
    handler runs meanwhile and its exception (`cli.Terminated`, KeyboardInterrupt) ends the
    wait; the thread, which cannot be cancelled, is left to the process's exit (the caller's
    `os._exit`). Run in the main thread, the handlers waited for the join: process 0 ignored
    SIGTERM and Ctrl-C until --distributed_timeout ran out (57 s of 60; 303 s by default).
    `call`'s exception is raised here. Off the main thread (no handlers there) it runs there."""
    if threading.current_thread() is not threading.main_thread():
        call()
        return
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as e:  # handed to the waiting main thread
            raised.append(e)

    joining = threading.Thread(target=run, name="ann-join", daemon=True)
    joining.start()
    while joining.is_alive():
        joining.join(0.1)  # signal handlers run between (and during) the waits
    if raised:
        raise raised[0]


_RUN_KEY = "ann/run/{index}"
_SHOWN_KEYS = 3  # config keys a mismatch's line names, at most


def _check_same_run(
    config: Mapping[str, Any] | None, timeout_seconds: int, config_flag: str = ""
) -> None:
    """ConfigError, in every process, where the processes were given different configs
    (`config`: this process's resolved config; None: not compared) or --num_processes: each
    tells the others its own through the coordination service's key-value store and compares
    theirs with process 0's. Without it, processes given another learning rate trained
    together and exited 0 with a wrong model (config.json recording process 0's), and another
    total_steps ended in a C++ abort (gloo: "distributed collective mismatch"). Where the configs
    differ, the `--config` arguments (`config_flag`: this process's) are named first when they
    name different files: the likely cause (the same file at other paths, with the same values,
    is not refused). A failure of the exchange itself (a private JAX API) is logged and skips
    the check."""
    try:
        from jax._src import distributed as jax_distributed  # the client jax.distributed made

        state = jax_distributed.global_state
        client, index, count = state.client, state.process_id, state.num_processes
        plain = None if config is None else config_lib.plain(config)
        mine = {"num_processes": count, "config": plain, "config_flag": config_flag}
        client.key_value_set(_RUN_KEY.format(index=index), json.dumps(mine, sort_keys=True))

        def read(other: int) -> dict:
            if other == index:
                return mine
            text = client.blocking_key_value_get(
                _RUN_KEY.format(index=other), timeout_seconds * 1000
            )
            return json.loads(text)

        first = read(0)
        # A process given another count reads process 0's alone: the keys of the processes it
        # counts may never come (process 0's count is the service's, who registered).
        if first["num_processes"] != count:
            runs = {0: first, index: mine}
        else:
            runs = {i: read(i) for i in range(count)}
    except Exception as e:  # a private JAX API: its change must not stop a run
        logging.warning("the processes could not compare their configs (%s): a process given "
                        "another config will not be refused", e)  # fmt: skip
        return

    def this(i: int) -> str:
        return " (this one)" if i == index else ""

    for other, theirs in runs.items():
        if theirs["num_processes"] != first["num_processes"]:
            raise ConfigError(
                f"the processes were given different --num_processes: {first['num_processes']} "
                f"in process 0{this(0)} and {theirs['num_processes']} in process "
                f"{other}{this(other)}; give every process the same --num_processes"
            )
    for other, theirs in runs.items():
        if theirs["config"] is None or first["config"] is None:
            continue
        differ = config_lib.diff(first["config"], theirs["config"])
        if not differ:
            continue
        shown = [
            f"{key} is {_shown(a)} in process 0{this(0)} and {_shown(b)} in process "
            f"{other}{this(other)}"
            for key, (a, b) in list(differ.items())[:_SHOWN_KEYS]
        ]
        more = len(differ) - len(shown)
        # Two --config files (digits_cnn.py and digits_mlp.py) differ in many keys: the cause,
        # named first (it named only keys, "and 8 more keys").
        flags_given = first.get("config_flag") or "", theirs.get("config_flag") or ""
        if all(flags_given) and not config_lib.same_config_flag(*flags_given):
            shown.insert(
                0,
                f"--config is {flags_given[0]} in process 0{this(0)} and {flags_given[1]} in "
                f"process {other}{this(other)}",
            )
        raise ConfigError(
            "the processes were given different configs: "
            + "; ".join(shown)
            + (f"; and {more} more key{'s' if more > 1 else ''}" if more else "")
            + "; give every process the same --config and --config.KEY=VALUE flags"
        )


def _shown(value: Any) -> str:
    """A config value in a message: a string in JSON quotes, a key one config lacks as `unset`
    (it read `"<unset>"`, as if the value were that string)."""
    if value == config_lib.UNSET:
        return "unset"
    return json.dumps(value) if isinstance(value, str) else str(value)


# Seconds JAX's own registration timeout runs past ann's watchdog (`_join_watchdog`).
_JAX_GRACE_SECONDS = 30


def _join_watchdog(
    wait: int, timeout_seconds: int, num_processes: int, process_id: int, address: str
) -> threading.Timer:
    """A started timer that, unless cancelled within `wait` seconds (the processes joined,
    or JAX raised), ends this process with one `error:` line naming the processes that did not
    join within --distributed_timeout (`timeout_seconds`) and exit status 1. JAX's own end
    for that case is a C++ abort from inside `jax.distributed.initialize` (it holds no
    Python lock meanwhile, so this thread runs): "Terminating process because the JAX
    distributed service detected fatal errors ... another task died", a stack dump, status
    134. JAX's hook that would replace the abort (`missed_heartbeat_callback` of its client)
    fails with std::bad_cast in jaxlib 0.10.2: it cannot hand the status to Python, and from
    its heartbeat thread that would be a std::terminate. `num_processes` 0:
    `--distributed=auto` (the count is the cluster's)."""
    if num_processes == 2:
        missing = f"process {1 - process_id} of 2 did not join"
    elif num_processes:
        others = f"0..{num_processes - 1} except {process_id}"
        missing = f"not every other process ({others}) joined"
    else:
        missing = "not every process of the cluster joined"
    fix = (
        f"start every process with the same --coordinator_address={address} and "
        f"--num_processes={num_processes}, each with its own --process_id"
        if num_processes
        else "check that the cluster started every process"
    )
    line = (
        f"{missing} within --distributed_timeout={timeout_seconds}s; {fix}, or raise "
        "--distributed_timeout if they start later"
    )

    def end() -> None:
        from ann import cli

        cli.fail_without_teardown(line)

    timer = threading.Timer(wait, end)
    timer.daemon = True
    timer.start()
    return timer


# A collective between processes whose connection to a peer broke (gloo on CPU): the peer's
# process is gone (killed outside the launcher, or crashed). Gloo names the connection's far
# end: "Gloo AllGather failed: [.../pair.cc:538] Read error [127.0.0.1]:10658: Connection reset
# by peer": the peer's host (the address its host name resolves to, which gloo binds), and a
# port that may be the peer's listener's or its own connection's, so naming no process.
_PEER_LOST = re.compile(r"Gloo ([\w-]+) failed: (?:\[[^\]]*\] )?(.*)")
_PEER_ADDRESS = re.compile(r"\[([0-9A-Fa-f.:]+)\]:(\d+)")
# Every process of the run, by index, as it introduced itself when it joined (`_introduce`):
# {"host": its host name, "pid": its process id, "addresses": what the host name resolves to}.
# Empty in a single-process run, or where the introductions could not be exchanged.
_peers: dict[int, dict] = {}
_PEERS_KEY = "ann/peers/{index}"


def _introduce(timeout_seconds: int) -> None:
    """Tells the other processes of the run who this one is (host name, pid, the addresses its
    host name resolves to) through the coordination service's key-value store, and reads theirs
    into `_peers`: a peer lost mid-run is then named by index (`peer_lost`). A failure here
    only leaves the peers unnamed (logged); it never stops the run."""
    try:
        from jax._src import distributed as jax_distributed  # the client jax.distributed made

        client = jax_distributed.global_state.client
        me = {"host": socket.gethostname(), "pid": os.getpid(), "addresses": _host_addresses()}
        client.key_value_set(_PEERS_KEY.format(index=jax.process_index()), json.dumps(me))
        found = {}
        for index in range(jax.process_count()):
            text = client.blocking_key_value_get(
                _PEERS_KEY.format(index=index), timeout_seconds * 1000
            )
            found[index] = json.loads(text)
    except Exception as e:  # a private JAX API: its change must not stop a run
        logging.warning("the processes could not introduce themselves (%s): a lost peer "
                        "will not be named", e)  # fmt: skip
        return
    _peers.clear()
    _peers.update(found)


def _host_addresses() -> list[str]:
    """The addresses this machine's host name resolves to: the one gloo listens at is among
    them (it binds the first it can); [] where the name does not resolve."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return sorted({info[4][0] for info in infos})


def _gone(pid: int) -> bool:
    """Whether the process `pid` of this machine has ended: no such process, or a zombie (killed,
    not yet reaped by its launcher)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def lost_peer(message: str, count: int, index: int) -> int | None:
    """The index of the process whose connection broke, as gloo's `message` names it, where it
    can be told: the other one of two; else the process (of `_peers`) whose host name resolves
    to the address gloo names, and among several on this machine (one host, loopback
    addresses) the one whose process has ended. None where it cannot be told."""
    if count == 2:
        return 1 - index
    found = _PEER_ADDRESS.search(message)
    if found is None or index not in _peers:
        return None
    others = [i for i in _peers if i != index]
    address = found.group(1)
    here = _peers[index]["host"]
    loopback = address.startswith("127.") or address == "::1"
    candidates = [
        i
        for i in others
        if (_peers[i]["host"] == here if loopback else address in _peers[i]["addresses"])
    ]
    if len(candidates) > 1 and all(_peers[i]["host"] == here for i in candidates):
        candidates = [i for i in candidates if _gone(_peers[i]["pid"])]
    return candidates[0] if len(candidates) == 1 else None


def peer_lost(error: BaseException) -> str | None:
    """One line for an error of a multi-process run's collective whose peer process is gone
    (its connection reset or closed: `kill -9` of one process, a crash), naming the peer where
    it can be told (`lost_peer`), else "one of the other N-1 processes" on the host gloo
    names; None for any other error. Matched on the text: JAX raises it as a JaxRuntimeError
    from a blocking wait, as a ValueError from a jit's dispatch (`process_allgather`)."""
    said = _PEER_LOST.search(str(error))
    if said is None or jax.process_count() < 2:
        return None
    count, index = jax.process_count(), jax.process_index()
    first = said.group(2).splitlines()[0]
    lost = lost_peer(first, count, index)
    if lost is not None:
        peer = f"process {lost} of {count}"
    else:
        address = _PEER_ADDRESS.search(first)  # the host, at least (the port may be its end's)
        peer = f"one of the other {count - 1} processes" + (
            f" (on {address.group(1)})" if address else ""
        )
    # "Read error [ADDRESS]: Connection reset by peer", "Connection closed by peer [ADDRESS]"
    reason = _PEER_ADDRESS.sub("", first.rsplit(": ", 1)[-1]).strip()
    return (
        f"{peer} is gone mid-run: the {said.group(1)} with it failed ({reason}); it was killed "
        "or crashed outside the launcher (its own log says which); run the same command on "
        "every process to resume from the last checkpoint"
    )


def _check_host(address: str, host: str) -> None:
    """ConfigError when `host` has no address here: JAX's client retried it until its timeout,
    then aborted the process in C++ (a stack dump, status 134)."""
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as e:
        reason = e.strerror if isinstance(e, socket.gaierror) else str(e)
        raise ConfigError(
            f"--coordinator_address={address}: the host {host!r} has no address here "
            f"({reason}); give process 0's host name or IP address as the others can reach it"
        ) from None


def _wait_for_coordinator(address: str, host: str, port: int, timeout_seconds: int) -> int:
    """Connects to the coordinator (process 0's, at `address`) over TCP until it answers, for
    up to `timeout_seconds` (process 0 may start later); returns the seconds left for the
    processes to register. ConfigError when it never answers: JAX's client retried until its
    timeout, then aborted the process in C++ (a 36-line stack dump, status 134)."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=min(1.0, max(0.1, left))):
                return max(1, math.ceil(deadline - time.monotonic()))
        except OSError as e:
            reason = e.strerror or str(e) or type(e).__name__
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"--coordinator_address={address}: the coordinator could not be reached in "
                f"{timeout_seconds}s ({reason}); start process 0 first (it hosts the "
                "coordinator), or check the address: process 0's host as this one reaches it, "
                "and the same port on every process"
            )
        time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))


def _check_port_free(address: str, port: int) -> None:
    """ConfigError when `port` is in use on this machine, where process 0 hosts JAX's
    coordination service (gRPC, on every interface): the service's failure to bind crashed
    the process ("Failed to add port to server", then a segmentation fault, 5 of 6 tries).
    Bound as gRPC binds (both IP versions, SO_REUSEADDR: a closing connection's port is free)
    and released at once; a port taken in between still fails in JAX."""
    families = [(socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")] if socket.has_ipv6 else []
    families = families or [(socket.AF_INET, "0.0.0.0")]
    for family, anywhere in families:
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 on this machine: IPv4 is what gRPC gets
            continue
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            try:
                probe.bind((anywhere, port))
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    continue  # e.g. IPv6 disabled: try IPv4
                raise ConfigError(
                    f"--coordinator_address={address}: port {port} is in use on this machine, "
                    "where process 0 hosts the coordinator; give every process another free "
                    "port"
                ) from None
            return


def _c_stdout_to_stderr() -> None:
    """Gloo's rendezvous prints `[Gloo] Rank 0 is connected to 1 peer ranks ...` on file
    descriptor 1 whenever it connects the processes, interleaved across processes, into the
    run's stdout, which holds its one `done:` line (scripts capture it). From here on what C
    code writes to descriptor 1 goes to stderr; Python's `sys.stdout` keeps the original."""
    sys.stdout.flush()
    original = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(original, "w", buffering=1, encoding=sys.stdout.encoding)


def _orbax_barriers_without_collectives() -> None:
    """Orbax's default barrier is a device collective (`sync_global_devices`), run from its
    async-save thread. Interleaved with the train step's own collectives, the processes can
    enter them in different orders and deadlock (seen with gloo on CPU). The coordination
    service's barrier has no device collective, and a timeout."""
    import orbax.checkpoint  # noqa: F401  (defines the flag)

    if flags.FLAGS.is_parsed():
        flags.FLAGS.experimental_orbax_use_distributed_barrier = True
    else:  # a library caller: the flag cannot be set before absl parses the command line
        logging.warning(
            "multi-process run without absl flags parsed: pass "
            "--experimental_orbax_use_distributed_barrier=true, or Orbax's async checkpoint "
            "barriers may deadlock with training collectives"
        )


def place(tree, shardings):
    """Puts host-built arrays (the same in every process) onto their shardings.

    Across processes this builds each global array from local data with no collective: plain
    `jax.device_put` would first check, collectively, that all processes hold equal values.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(x, sharding):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree, shardings)
