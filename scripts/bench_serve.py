"""The model server under load: dynamic batching vs batch size 1, and vs Seldon MLServer.

    python scripts/bench_serve.py [--models=cnn,cnn_large,resnet] [--concurrency=1,8,32,64]
        [--requests=3000] [--seconds=8] [--steps=100] [--workdir=runs/bench_serve]
        [--encoding=json|binary] [--tracing] [--nobatch1] [--peer_python=PYTHON]
    python scripts/bench_serve.py --http_layer   # the fixed cost per request, in-process
    python scripts/bench_serve.py --app_layer    # the routes' and serving logic's, in-process
    python scripts/bench_serve.py --monitoring --concurrency=32   # monitoring on vs off
    python scripts/bench_serve.py --constant_weights   # the weights compiled in vs passed
    python scripts/bench_serve.py --compiled_calls --models=cnn,cnn_large   # the same, in-process
    python scripts/bench_serve.py --dispatch --models=cnn_large   # async vs inline CPU dispatch
    # ann vs MLServer (issue 16's table; MLServer in its own venv, see mlserver_runtime.py):
    python scripts/bench_serve.py --models=cnn,cnn_large --nobatch1 \
        --peer_python=/work/mlserver-venv/bin/python

For each model (configs/digits_cnn.py, "cnn_large" the same CNN wider: 2.4M parameters,
configs/digits_resnet.py; trained for `--steps` steps and exported once into `--workdir`,
reused after), it starts `python -m ann.serve` twice, with the server's default
`--max_batch_size` and `--max_queue_delay_ms` (64, 2 ms) and with `--max_batch_size=1`
(`--nobatch1`: not that one; with `--monitoring`: dynamic both times, `--monitor=off` and
`--monitor=on`, each request carrying an id so the feedback store is exercised too; without it
both servers run `--monitor=off`, as before monitoring existed), and drives
each with a load generator in another process: `c` keep-alive
connections, each sending one-row v2 requests back to back (JSON, or with `--encoding=binary`
the binary tensor data extension both ways), until `--requests` or `--seconds` run out. With 2
or more CPUs the server is pinned to core 0 and the load generator to core 1 (taskset). Printed
per level: throughput, client p50/p95/p99 latency, errors, and from the server's /metrics the
mean time per request in the queue and the rest of the server's time (compute, JSON, routing);
the server process's CPU (/proc, read by the load generator around its measured window) per
answered request and in cores (near 1.00: the server's core is saturated); and the load
generator's own CPU share (near 100% would mean it, not the server, is the limit). First, the
load generator's ceiling: its throughput at the top level against a trivial endpoint on core 0
(a fixed reply, no parsing beyond Content-Length). Overhead: at the lowest level, the server's
CPU per request minus its compute (`ann_compute_seconds`), and client p50 minus the bare
compiled batch-1 call of the same model in this process.

`--peer_python`: also serves each model with Seldon MLServer from that venv (in-process
inference, `parallel_workers: 0`, no access log, no gzip; scripts/mlserver_runtime.py calls the
same export compiled for the same batch sizes), adaptive batching off ("mlserver") and on
("mlserver-ab", the same max batch size and delay as ann), with the same load generator and
pinning, then prints per model and level ann's dynamic server against MLServer's better run.
Skipped, with the reason, when that python or its `mlserver` is missing, or with
`--encoding=binary`.

`--tracing` adds the dynamic server with OpenTelemetry traces on, twice: every request sampled
("traced") and 1% ("traced1%", `OTEL_TRACES_SAMPLER=parentbased_traceidratio`), configured as a
user would, by `OTEL_*` variables only (`OTEL_TRACES_EXPORTER=otlp`, the SDK's batch span
processor) and exporting over OTLP/HTTP to a sink in this process that answers 200 and drops what
it gets: the whole cost of tracing (spans, batching, protobuf encoding, HTTP), none of a
collector's. `--app_layer` also times a traced infer (the SDK, spans dropped by a no-op
exporter): the CPU cost of one request's spans.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import runpy
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from absl import flags

from ann import cli
from ann import config as config_lib
from ann.serve.settings import Settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
# Served models: name -> (config, overrides). "cnn" is the small CNN (151k parameters),
# "cnn_large" the same architecture wider (2.4M parameters), the issue-16 pair; any other name
# is configs/digits_NAME.py as it is.
MODELS = {
    "cnn": ("digits_cnn", []),
    "cnn_large": ("digits_cnn", ["--config.model.features=(128,256)", "--config.model.dense=512"]),
}
flags.DEFINE_list(
    "models", ["cnn", "resnet"],
    f"Models to serve: {', '.join(MODELS)} or NAME for configs/digits_NAME.py.",
)  # fmt: skip
flags.DEFINE_list("concurrency", ["1", "8", "32", "64"], "Client connections, one run each.")
flags.DEFINE_integer("requests", 3000, "Requests per run (or --seconds).", lower_bound=1)
flags.DEFINE_float("seconds", 8.0, "Seconds per run at most (or --requests).")
flags.DEFINE_integer("steps", 100, "Training steps of each model, once.", lower_bound=1)
flags.DEFINE_integer(
    "max_batch_size", Settings.max_batch_size, "The dynamic server's batch.", lower_bound=1
)
flags.DEFINE_float(
    "max_queue_delay_ms", Settings.max_queue_delay_ms, "The dynamic server's queue delay.",
    lower_bound=0,
)  # fmt: skip
flags.DEFINE_string("workdir", os.path.join(ROOT, "runs", "bench_serve"), "Runs and exports.")
flags.DEFINE_enum(
    "encoding", "json", ["json", "binary"],
    "Tensors as JSON numbers, or as binary tensor data (requests and replies).",
)  # fmt: skip
flags.DEFINE_boolean(
    "http_layer",
    False,
    "Only the in-process cost of one request's HTTP parse, limits, decode and reply (CPU "
    "microseconds, no sockets, no model): the server's fixed cost per request.",
)
flags.DEFINE_boolean(
    "app_layer",
    False,
    "Only the in-process cost of `App.handle` per request (route table, token, serving logic, "
    "decode; the batcher stubbed): an infer and a metadata request, CPU microseconds.",
)
flags.DEFINE_boolean(
    "monitoring",
    False,
    "Compare the server with monitoring off and on (both dynamic batching; windows, drift tests "
    "and the feedback store) instead of dynamic vs batch size 1: the cost of --monitor=on.",
)
flags.DEFINE_boolean(
    "constant_weights",
    False,
    "Compare the server with the weights passed on each call (--constant_weights_mb=0) and "
    "compiled into its executables (the default) instead of dynamic vs batch size 1.",
)
flags.DEFINE_boolean(
    "compiled_calls",
    False,
    "Only each model's compiled call in this process (core 0) at batch 1, 8 and 64, the "
    "weights passed vs compiled in, 7 interleaved rounds: median ms and the ratio.",
)
flags.DEFINE_boolean(
    "dispatch",
    False,
    "Only each model's compiled batch-1 call, jax's asynchronous CPU dispatch (its default) vs "
    "inline (what ann serve runs), each in fresh processes on core 0, back to back and after "
    "a 0.3 ms sleep (as a server at one client sees calls): CPU per call, 5 interleaved rounds.",
)
flags.DEFINE_enum("dispatch_child", None, ["async", "inline"], "Internal: one --dispatch run.")
flags.DEFINE_boolean(
    "tracing",
    False,
    "Also run the dynamic server with OpenTelemetry traces on (OTEL_* variables, OTLP/HTTP to "
    "a sink here that drops them): traces on vs off in the same run.",
)
flags.DEFINE_boolean(
    "batch1", True, "Also run the server at --max_batch_size=1 (--nobatch1: dynamic only)."
)
flags.DEFINE_string(
    "peer_python", "",
    "Python of a venv with Seldon MLServer (1.7.x), jax and safetensors (see "
    "scripts/mlserver_runtime.py): also serve each model with MLServer, adaptive batching off "
    "and on, and print ann vs MLServer's better run per level. Empty: skipped.",
)  # fmt: skip
# The load generator's own process (started by this script).
flags.DEFINE_boolean("loadgen", False, "Internal: run as the load generator.")
flags.DEFINE_integer("port", None, "Internal: the server's port.")
flags.DEFINE_string("path", None, "Internal: the infer path.")
flags.DEFINE_string("bodies", None, "Internal: the request bodies' file.")
flags.DEFINE_integer("server_pid", None, "Internal: the server's process, for its CPU time.")
flags.DEFINE_boolean("trivial", False, "Internal: run as the trivial endpoint (--port).")
flags.register_validator(
    "concurrency",
    lambda v: all(c.isdigit() and int(c) >= 1 for c in v),
    "--concurrency takes client counts >= 1, e.g. --concurrency=1,8,32",
)
flags.register_validator(
    "models",
    lambda v: all(
        m in MODELS or os.path.isfile(os.path.join(ROOT, "configs", f"digits_{m}.py")) for m in v
    ),
    f"--models takes {', '.join(MODELS)} or names of configs/digits_NAME.py, e.g. "
    "--models=cnn,cnn_large",
)
flags.register_validator("seconds", lambda v: v > 0, "--seconds must be > 0, e.g. --seconds=8")


def pinned(core: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core)]
    return []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- load generator (its own process) -----------------------------------------------------------


async def _load(port: int, path: str, bodies: list[bytes], concurrency: int, requests: int,
                seconds: float, server_pid: int | None = None) -> dict:  # fmt: skip
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sent = 0
    deadline = time.perf_counter() + seconds

    async def client(i: int) -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while sent < requests and time.perf_counter() < deadline:
                sent += 1
                json_length, body = bodies[(i + sent) % len(bodies)]
                binary = (
                    b""
                    if json_length is None
                    else (b"Inference-Header-Content-Length: %d\r\n" % json_length)
                )
                head = (
                    (
                        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n"
                    ).encode()
                    + binary
                    + b"\r\n"
                )
                start = time.perf_counter()
                writer.write(head + body)
                header = await reader.readuntil(b"\r\n\r\n")
                status = int(header[9:12])
                length = int(header.lower().split(b"\r\ncontent-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - start)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    server = cpu_seconds(server_pid) if server_pid else 0.0
    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    server = (cpu_seconds(server_pid) - server) if server_pid else 0.0
    latencies.sort()

    def q(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e3

    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "throughput": statuses.get(200, 0) / elapsed,  # answered, not refused
        "p50_ms": q(0.50),
        "p95_ms": q(0.95),
        "p99_ms": q(0.99),
        "mean_ms": statistics.fmean(latencies) * 1e3,
        "statuses": statuses,
        "client_cpu": cpu / elapsed,  # near 1.0: the load generator, not the server, is the limit
        # The server process's CPU (all its threads) over the same window: per answered
        # request, and in cores (near 1.0 pinned to one core: the server is the limit).
        "server_cpu_ms": server / max(statuses.get(200, 0), 1) * 1e3,
        "server_cores": server / elapsed,
    }


def loadgen_main(args: flags.FlagValues) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with open(args.bodies) as f:  # [JSON header length or null, body as latin-1]
        bodies = [(n, b.encode("latin-1")) for n, b in json.load(f)]
    asyncio.run(_load(args.port, args.path, bodies[:50], 4, 200, 5))  # warm up
    result = asyncio.run(
        _load(args.port, args.path, bodies, int(args.concurrency[0]), args.requests, args.seconds,
              args.server_pid)
    )  # fmt: skip
    print(json.dumps(result))


def trivial_main(port: int) -> None:
    """A trivial HTTP endpoint (the load generator's ceiling): answers every request at once
    with a fixed 200 reply the size of an infer reply, no parsing beyond Content-Length."""
    outputs = [
        {"name": "label", "shape": [1], "datatype": "INT32", "data": [0]},
        {"name": "probabilities", "shape": [1, 10], "datatype": "FP32", "data": [0.1] * 10},
    ]
    reply = json.dumps({"model_name": "digits", "outputs": outputs}).encode()
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    response = head % len(reply) + reply

    class Echo(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.transport, self.buffer = transport, b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while True:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buffer[:end].lower()
                length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
                if len(self.buffer) < end + 4 + length:
                    return
                self.buffer = self.buffer[end + 4 + length :]
                self.transport.write(response)

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port)
        print("ready", flush=True)
        await server.serve_forever()

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve())


def loadgen_ceiling(c: int, bodies: str, args: flags.FlagValues) -> dict:
    """The load generator at `c` connections against `trivial_main` on core 0: the most it can
    send, so a server whose throughput is near it is not what limits the run."""
    port = free_port()
    proc = subprocess.Popen(
        [*pinned(0), sys.executable, __file__, "--trivial", f"--port={port}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        proc.stdout.readline()  # "ready"
        return load(port, proc.pid, "/trivial", bodies, c, args)
    finally:
        proc.terminate()
        proc.wait(60)


# -- orchestration ------------------------------------------------------------------------------


def run(cmd: list[str]) -> None:
    """Runs a preparation step (train, export); a failure ends the benchmark in one line: the
    command and the last line it printed (its own `error: ...`)."""
    proc = subprocess.run(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        cli.fail(f"python {' '.join(cmd[1:4])} ... failed (exit {proc.returncode}): {last}")


def prepare(model: str, steps: int, workdir: str) -> str:
    """Trains (briefly) and exports `model` (`MODELS`, or configs/digits_MODEL.py) once;
    returns the export dir."""
    config, overrides = MODELS.get(model, (f"digits_{model}", []))
    run_dir, export_dir = os.path.join(workdir, model), os.path.join(workdir, f"{model}_export")
    if not os.path.exists(os.path.join(export_dir, "manifest.json")):
        shipped = runpy.run_path(os.path.join(ROOT, "configs", f"{config}.py"))["get_config"]()
        config_lib.shorten(shipped, steps)  # a shipped warmup longer than --steps is fitted
        run(
            [
                sys.executable,
                "-m",
                "ann.main",
                f"--config=configs/{config}.py",
                *overrides,
                f"--workdir={run_dir}",
                f"--config.total_steps={steps}",
                "--config.num_epochs=0",
                f"--config.optimizer.warmup_steps={shipped.optimizer.warmup_steps}",
                f"--config.eval_every_steps={steps}",
                f"--config.checkpoint_every_steps={steps}",
            ]
        )
        import jax

        # Lowered for this machine's accelerator too, or a GPU's rows would time its host CPU.
        platforms = ",".join(dict.fromkeys(["cpu", jax.export.default_export_platform()]))
        run([sys.executable, "-m", "ann.export", f"--workdir={run_dir}", f"--out={export_dir}",
             f"--name=digits_{model}", f"--platforms={platforms}"])  # fmt: skip
    return export_dir


def metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        for name in ("ann_request_duration_seconds", "ann_queue_seconds", "ann_batch_size",
                     "ann_compute_seconds"):  # fmt: skip
            for suffix in ("_sum", "_count"):
                if line.startswith(name + suffix + "{"):
                    out[name + suffix] = out.get(name + suffix, 0.0) + float(line.split()[-1])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OtlpSink:
    """An OTLP/HTTP endpoint in this process (a thread) that answers every export 200 and
    drops it; `spans` counts the spans that came (a check that the server traced)."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        sink = self
        self.spans = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                sent = ExportTraceServiceRequest.FromString(self.rfile.read(length))
                sink.spans += sum(len(s.spans) for r in sent.resource_spans for s in r.scope_spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def env(self) -> dict[str, str]:
        """The `OTEL_*` variables of a server that traces into this sink."""
        return {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": (
                f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
            ),
            "OTEL_SERVICE_NAME": "bench_serve",
        }


# The environment of the servers this script starts: its own at start, before `main` tells
# this process's JAX not to take the accelerator's memory up front.
CHILD_ENV = dict(os.environ)


def serve(
    export_dir: str, port: int, extra: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen:
    """`python -m ann.serve` on `port` (core 0), once it is ready; `env`: its `OTEL_*`
    variables (none from this process: without them, traces are off)."""
    return start(
        [*pinned(0), sys.executable, "-m", "ann.serve", f"--model={export_dir}", f"--port={port}",
         "--max_queue_rows=1024", *extra],
        port, "/v2/health/ready",
        {**{k: v for k, v in CHILD_ENV.items() if not k.startswith("OTEL_")}, **(env or {})},
    )  # fmt: skip


def start(cmd: list[str], port: int, ready: str, env: dict[str, str]) -> subprocess.Popen:
    """Starts a server and returns once `ready` answers 200. Its output goes to a file, never
    a pipe nobody reads (a full pipe would stop the server); RuntimeError with its last lines
    if it exits first, or after 300 s."""
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(log.read().decode()[-2000:])
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=2)
            return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{cmd[0]} did not turn ready")


def compiled_batch1(export_dir: str) -> Callable:
    """The export's batch-1 function, compiled as the server compiles it."""
    from ann import artifact
    from ann.serve.batcher import buckets
    from ann.serve.dataplane import constant_weights
    from ann.serve.settings import Settings

    model = artifact.load(export_dir)
    return model.compile(1, constant_weights=constant_weights(
        model, buckets(FLAGS.max_batch_size), Settings().constant_weights_mb))  # fmt: skip


def bare_call_ms(export_dir: str, x) -> float:
    """Median time of the compiled batch-1 call in this process, pinned like the server."""
    if pinned(0):
        os.sched_setaffinity(0, {0})
    fn = compiled_batch1(export_dir)
    for _ in range(50):
        fn({"image": x[:1]})
    times = []
    for i in range(500):
        start = time.perf_counter()
        fn({"image": x[i % len(x) : i % len(x) + 1]})
        times.append(time.perf_counter() - start)
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return statistics.median(times) * 1e3


# One digit as a v2 request's input tensor (its data added per request).
IMAGE = {"name": "image", "shape": [1, 8, 8, 1], "datatype": "UINT8"}


def served_device(export_dir: str) -> str:
    """Where the export runs here (`artifact.device_for` its platforms), in words."""
    from ann import artifact

    platforms = artifact.read_manifest(export_dir)["platforms"]
    return f"{artifact.device_for(platforms)} (the export's platforms: {', '.join(platforms)})"


def export_labels(export_dir: str, images) -> list[int]:
    """The label the export computes in this process for each image (batch-1 calls)."""
    fn = compiled_batch1(export_dir)
    return [int(fn({"image": images[i : i + 1]})["label"][0]) for i in range(len(images))]


def check_answers(port: int, path: str, images, expected: list[int]) -> str:
    """Sends each image once, one row a request, and compares the served `label` with the
    export's own in this process: a server that answers fast but wrong must not be timed as
    if it answered. RuntimeError naming the first row that differs (or was refused)."""
    for i, x in enumerate(images):
        body = json.dumps({"inputs": [{**IMAGE, "data": x.reshape(-1).tolist()}]})
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", body.encode(),
                                         {"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                outputs = {o["name"]: o["data"] for o in json.load(r)["outputs"]}
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"test row {i}: the server refused it: {e.read()[:300]!r}") from None
        if outputs["label"] != [expected[i]]:
            raise RuntimeError(
                f"test row {i}: the server answered label {outputs['label']}, the export "
                f"computes {expected[i]} in this process: the timings would be of wrong answers"
            )
    return f"answers checked: {len(images)} test rows, each labelled as the export labels it"


def compiled_calls(export_dirs: dict[str, str], images, rounds: int = 7) -> None:
    """Prints, per model and batch size (1, 8, 64), the median time of the compiled call with
    the weights passed on each call and compiled in (`Model.compile(constant_weights=...)`),
    each round timing both back to back (in alternating order), pinned to core 0; and the
    largest difference between their outputs."""
    import numpy as np

    from ann import artifact

    if pinned(0):
        os.sched_setaffinity(0, {0})
    print("| model | batch | passed ms | compiled in ms | ratio | compile s (passed, in) "
          "| max diff |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, export_dir in export_dirs.items():
        model = artifact.load(export_dir)
        for batch in (1, 8, 64):
            x = {"image": images[:batch]}
            fns, compile_s = [], []
            for constant in (False, True):
                start = time.perf_counter()
                fns.append(model.compile(batch, constant_weights=constant))
                compile_s.append(time.perf_counter() - start)
            outs = [fn(x) for fn in fns]
            diff = max(
                float(np.max(np.abs(outs[0][k].astype(np.float64) - outs[1][k]))) for k in outs[0]
            )
            calls = max(20, 2000 // batch)
            times: list[list[float]] = [[], []]
            for r in range(rounds):
                for i in (0, 1) if r % 2 == 0 else (1, 0):
                    for _ in range(10):
                        fns[i](x)
                    start = time.perf_counter()
                    for _ in range(calls):
                        fns[i](x)
                    times[i].append((time.perf_counter() - start) / calls * 1e3)
            passed, compiled_in = (statistics.median(t) for t in times)
            print(f"| {name} | {batch} | {passed:.4f} | {compiled_in:.4f} | "
                  f"{compiled_in / passed:.3f} | {compile_s[0]:.2f}, {compile_s[1]:.2f} | "
                  f"{diff:.2g} |")  # fmt: skip
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def dispatch_child(export_dirs: dict[str, str], images, calls: int = 1500) -> None:
    """One `--dispatch` process: per model, the process CPU per batch-1 call (results turned
    into NumPy, as the server does) back to back and after a 0.3 ms sleep; one JSON line."""
    if FLAGS.dispatch_child == "inline":
        from ann.serve.__main__ import run_cpu_computations_inline

        run_cpu_computations_inline()  # before the backend is made, as `ann serve` does
    result = {}
    for name, export_dir in export_dirs.items():
        fn = compiled_batch1(export_dir)
        for _ in range(50):
            fn({"image": images[:1]})
        for gap in (0.0, 0.0003):
            start = time.process_time()
            for i in range(calls):
                if gap:
                    time.sleep(gap)
                fn({"image": images[i % len(images) : i % len(images) + 1]})
            result[f"{name} {gap * 1e3:.1f}"] = (time.process_time() - start) / calls * 1e3
    print(json.dumps(result))


def dispatch_ab(models: list[str], rounds: int = 5) -> None:
    """`--dispatch`: fresh processes, async and inline alternating; medians and inline/async."""
    times: dict[str, dict[str, list[float]]] = {"async": {}, "inline": {}}
    for r in range(rounds):
        for mode in ("async", "inline") if r % 2 == 0 else ("inline", "async"):
            out = subprocess.run(
                [*pinned(0), sys.executable, __file__, f"--dispatch_child={mode}",
                 f"--models={','.join(models)}", f"--workdir={FLAGS.workdir}"],
                check=True, capture_output=True, text=True, cwd=ROOT,
            )  # fmt: skip
            for key, ms in json.loads(out.stdout.strip().splitlines()[-1]).items():
                times[mode].setdefault(key, []).append(ms)
    print("| model | gap ms | async CPU ms per call | inline CPU ms per call | inline / async |")
    print("|---|---|---|---|---|")
    for key in times["async"]:
        name, gap = key.split()
        a, b = (statistics.median(times[m][key]) for m in ("async", "inline"))
        print(f"| {name} | {gap} | {a:.3f} | {b:.3f} | {b / a:.3f} |")


def http_layer(requests: int = 20000, repeats: int = 7) -> None:
    """CPU time per request of `ann.serve.http.Connection` fed one-row v2 JSON requests (as
    one packet each), decoded by `protocol.decode_infer` and answered at once: what every
    request costs the server besides its batch. Best and median of `repeats` passes."""
    from ann.serve import http, protocol

    body = json.dumps({"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "UINT8",
                                   "data": [3] * 64}]}).encode()  # fmt: skip
    request = (b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: bench\r\nContent-Type: "
               b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
    signature, outputs = {"image": {"dtype": "uint8", "shape": [8, 8, 1]}}, {"label": {}}

    class Transport:
        def write(self, data: bytes) -> None:
            pass

        def can_write_eof(self) -> bool:
            return False

        def close(self) -> None:
            pass

    def handler(method, path, auth, body, too_large, respond, header_length=None, trace=None, *_):
        protocol.decode_infer(body, signature, outputs, 64, header_length)
        respond(200, b'{"model_name":"digits"}', None)

    times = []
    for _ in range(repeats):
        connection = http.Connection(http.Listener(handler, Settings()))
        connection.connection_made(Transport())
        start = time.process_time()
        for _ in range(requests):
            connection.data_received(request)
        times.append((time.process_time() - start) / requests * 1e6)
    times.sort()
    print(f"HTTP layer + decode + reply: {times[0]:.2f} us per request (best of {repeats}), "
          f"median {times[len(times) // 2]:.2f} us")  # fmt: skip


def app_layer(requests: int = 20000, repeats: int = 7) -> None:
    """CPU time per request of `App.handle` for a one-row v2 JSON infer (routed, admitted,
    decoded, queued on a stub batcher that never runs it) and for a model metadata GET: the
    routes' and the serving logic's cost per request, without HTTP parsing or a model. Then
    the same with traces on (the SDK's batch span processor, a no-op exporter), every request
    sampled and 1% of them: the metadata GET's difference is one request span's cost; the
    infer's, its request span started (never ended: the stub never answers)."""
    from ann.serve.app import App
    from ann.serve.dataplane import ServedModel

    class Model:
        name = "digits"
        inputs = {"image": {"dtype": "uint8", "shape": [-1, 8, 8, 1]}}
        outputs = {"label": {"dtype": "int32", "shape": [-1]}}
        manifest = {"platforms": ["cpu"]}

    class Future:
        def add_done_callback(self, fn) -> None:
            pass

    class StubBatcher:  # accepts every request, runs none
        def check_room(self, rows: int = 1) -> None:
            pass

        # As Batcher.submit_nowait: the stub took (inputs, rows, trace) after the batcher
        # gained timeout and request_id, and every infer timed was a 500 and its logged
        # traceback.
        def submit_nowait(self, inputs, rows, trace=None, timeout=None, request_id=None):
            return Future()

    auth = b"Bearer bench"
    body = json.dumps({"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "UINT8",
                                   "data": [3] * 64}]}).encode()  # fmt: skip
    for label, traced in [("off", None), ("on", no_op_tracing()),
                          ("on, 1% sampled", no_op_tracing(0.01))]:  # fmt: skip
        served = ServedModel("digits", "1", Model(), "bench")
        served.ready, served.batcher = True, StubBatcher()
        app = App([served], Settings(token="bench"), tracing=traced)
        replies = []
        for method, path, what in [("POST", "/v2/models/digits/infer", "infer"),
                                   ("GET", "/v2/models/digits", "metadata")]:  # fmt: skip
            _check_unanswered_or_ok(app, method, path, auth, body)
            times = []
            for _ in range(repeats):
                start = time.process_time()
                for _ in range(requests):
                    app.handle(method, path, auth, body, None, lambda *reply: None)
                times.append((time.process_time() - start) / requests * 1e6)
            times.sort()
            replies.append(f"{what} {times[0]:.2f} us (median {times[len(times) // 2]:.2f})")
        print(f"App.handle per request, traces {label}, best of {repeats}: " + ", ".join(replies))


def _check_unanswered_or_ok(app, method: str, path: str, auth: bytes, body: bytes) -> None:
    """`--app_layer` times the path that answers 200, or (an infer, queued on the stub) not
    at all: an error reply (a 500 and its logged traceback) is not the cost to measure."""
    answered: list[int] = []
    app.handle(method, path, auth, body, None, lambda status, *_: answered.append(status))
    if answered not in ([], [200]):
        cli.fail(f"--app_layer: {method} {path} answered {answered[0]}; that is not the path timed")


def no_op_tracing(ratio: float | None = None):
    """The server's tracing with the SDK as `OTEL_TRACES_EXPORTER` sets it up (a batch span
    processor), its exporter dropping every span; `ratio`: sampled as by
    `OTEL_TRACES_SAMPLER=parentbased_traceidratio` with that `OTEL_TRACES_SAMPLER_ARG`."""
    from opentelemetry.sdk.trace import TracerProvider, sampling
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from ann.serve.tracing import Tracing

    class Drop(SpanExporter):
        def export(self, spans) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    sampler = None if ratio is None else sampling.ParentBasedTraceIdRatio(ratio)
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    return Tracing(provider)


def traces_summary(model: str, results: dict, levels: list[int], off: str, mode: str) -> str:
    """Traces off (mode `off`, the same server untraced) vs on (`mode`) at each level: p95 and
    throughput."""
    parts = []
    for c in levels:
        was, on = results[(model, off, c)], results[(model, mode, c)]
        p95 = on["p95_ms"] / was["p95_ms"] - 1
        throughput = on["throughput"] / was["throughput"] - 1
        parts.append(
            f"c={c}: p95 {was['p95_ms']:.2f} -> {on['p95_ms']:.2f} ms ({p95:+.0%}), throughput "
            f"{was['throughput']:.0f} -> {on['throughput']:.0f} req/s ({throughput:+.0%})"
        )
    return f"{model}: traces off -> {mode}: " + "; ".join(parts)


def write_bodies(path: str, images, monitoring: bool, encoding: str) -> None:
    """The request bodies, one per test image: [JSON header length or None, body as latin-1]."""
    bodies = []
    for i, x in enumerate(images):
        ids = {"id": f"bench-{i}"} if monitoring else {}
        if encoding == "json":
            body = json.dumps({**ids, "inputs": [{**IMAGE, "data": x.reshape(-1).tolist()}]})
            bodies.append((None, body))
        else:  # binary tensor data in and out
            head = json.dumps({**ids,
                               "inputs": [{**IMAGE, "parameters": {"binary_data_size": 64}}],
                               "parameters": {"binary_data_output": True}})  # fmt: skip
            bodies.append((len(head), head + x.tobytes().decode("latin-1")))
    with open(path, "w") as f:
        json.dump(bodies, f)


def server_modes(args: flags.FlagValues) -> tuple[dict[str, list[str]], dict, OtlpSink | None]:
    """The ann servers to run, mode -> flags; the `OTEL_*` variables of traced modes; the
    OTLP sink (with --tracing)."""
    dynamic = [f"--max_batch_size={args.max_batch_size}",
               f"--max_queue_delay_ms={args.max_queue_delay_ms}"]  # fmt: skip
    modes = (
        {"mon-off": [*dynamic, "--monitor=off"], "mon-on": [*dynamic, "--monitor=on"]}
        if args.monitoring
        else {
            "dynamic": [*dynamic, "--monitor=off"],  # the weights compiled in (the default)
            "w-args": [*dynamic, "--monitor=off", "--constant_weights_mb=0"],
        }
        if args.constant_weights
        else {
            "dynamic": [*dynamic, "--monitor=off"],
            "batch-1": ["--max_batch_size=1", "--monitor=off"],  # queues every client (1024)
        }
    )
    if not args.batch1 or args.constant_weights:
        modes.pop("batch-1", None)
    sink, traced = None, {}
    if args.tracing:  # the dynamic server again, traces on (OTEL_* only): all, then 1% sampled
        sink = OtlpSink()
        ratio = {
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.01",
        }
        traced = {"traced": sink.env(), "traced1%": {**sink.env(), **ratio}}
        modes.update({mode: [*dynamic, "--monitor=off"] for mode in traced})
    return modes, traced, sink


def load(port: int, pid: int, path: str, bodies: str, c: int, args: flags.FlagValues) -> dict:
    """One level: the load generator (core 1) against the server `pid` on `port`."""
    out = subprocess.run(
        [*pinned(1), sys.executable, __file__, "--loadgen", f"--port={port}", f"--path={path}",
         f"--bodies={bodies}", f"--concurrency={c}", f"--requests={args.requests}",
         f"--seconds={args.seconds}", f"--server_pid={pid}"],
        check=True, capture_output=True, text=True, timeout=args.seconds + 120,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_level(model: str, mode: str, c: int, r: dict) -> None:
    errors = sum(v for k, v in r["statuses"].items() if k != "200")
    server = (
        f"queue {r['queue_ms']:5.2f} rest {r['server_rest_ms']:5.2f} ms " if "queue_ms" in r else ""
    )
    batch = f"batch {r['mean_batch']:5.1f} | " if "mean_batch" in r else ""
    print(
        f"{model:9s} {mode:11s} c={c:3d} | {r['throughput']:8.0f} req/s | p50 "
        f"{r['p50_ms']:6.2f} p95 {r['p95_ms']:6.2f} p99 {r['p99_ms']:6.2f} ms | server: {server}"
        f"cpu {r['server_cpu_ms']:5.3f} ms/req, {r['server_cores']:4.2f} cores | {batch}"
        f"client cpu {r['client_cpu']:4.0%} | errors {errors}",
        flush=True,
    )


def run_ann(model: str, export_dir: str, mode: str, extra: list[str], env: dict | None,
            levels: list[int], bodies: str, args: flags.FlagValues,
            answers: tuple | None = None) -> dict:  # fmt: skip
    """Every level against one ann server; results by level, with the server's own split of
    each request's time (/metrics). `answers` (images, their labels): checked first
    (`check_answers`)."""
    results = {}
    port = free_port()
    proc = serve(export_dir, port, extra, env)
    try:
        if answers is not None:
            print(f"{model:9s} {mode:11s} {check_answers(port, _path(model), *answers)}")
        for c in levels:
            before = metrics(port)
            r = load(port, proc.pid, _path(model), bodies, c, args)
            after = metrics(port)
            d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
            n = max(d["ann_request_duration_seconds_count"], 1)
            r["queue_ms"] = d["ann_queue_seconds_sum"] / n * 1e3
            r["server_rest_ms"] = (
                (d["ann_request_duration_seconds_sum"] - d["ann_queue_seconds_sum"]) / n * 1e3
            )
            r["mean_batch"] = d["ann_batch_size_sum"] / max(d["ann_batch_size_count"], 1)
            # The part of the server's CPU that was not the model (HTTP, JSON, routing,
            # batching, metrics): its own overhead. Only meaningful at c=1: under load the
            # compute's wall time also counts the event loop's turns on the same core.
            r["overhead_ms"] = r["server_cpu_ms"] - d["ann_compute_seconds_sum"] / n * 1e3
            results[c] = r
            print_level(model, mode, c, r)
    finally:
        proc.terminate()
        proc.wait(60)
    return results


def _path(model: str) -> str:
    return f"/v2/models/digits_{model}/infer"


def run_peer(model: str, export_dir: str, adaptive: bool, levels: list[int], bodies: str,
             args: flags.FlagValues) -> dict:  # fmt: skip
    """Every level against Seldon MLServer (`--peer_python`'s venv, in-process inference,
    scripts/mlserver_runtime.py calling the same export), adaptive batching on (the same
    `--max_batch_size` and `--max_queue_delay_ms` as ann) or off."""
    results = {}
    name = f"digits_{model}"
    with tempfile.TemporaryDirectory() as root:
        port, grpc, metrics_port = free_port(), free_port(), free_port()
        with open(os.path.join(root, "settings.json"), "w") as f:
            json.dump({"http_port": port, "grpc_port": grpc, "metrics_port": metrics_port,
                       "parallel_workers": 0, "debug": False, "gzip_enabled": False},
                      f)  # fmt: skip
        os.makedirs(os.path.join(root, name))
        with open(os.path.join(root, name, "model-settings.json"), "w") as f:
            batching = (
                {"max_batch_size": args.max_batch_size,
                 "max_batch_time": args.max_queue_delay_ms / 1000} if adaptive else {}
            )  # fmt: skip
            json.dump({"name": name, "implementation": "mlserver_runtime.AnnExport",
                       "parameters": {"uri": export_dir}, **batching}, f)  # fmt: skip
        mlserver = os.path.join(os.path.dirname(args.peer_python), "mlserver")
        env = {**CHILD_ENV, "PYTHONPATH": os.path.join(ROOT, "scripts")}
        proc = start([*pinned(0), mlserver, "start", root], port, f"/v2/models/{name}/ready", env)
        mode = "mlserver-ab" if adaptive else "mlserver"
        try:
            for c in levels:
                results[c] = load(port, proc.pid, f"/v2/models/{name}/infer", bodies, c, args)
                print_level(model, mode, c, results[c])
        finally:
            proc.terminate()
            proc.wait(60)
    return results


def peer_skipped(args: flags.FlagValues) -> str | None:
    """Why the MLServer runs are skipped (None: they run)."""
    if not args.peer_python:
        return "no --peer_python (MLServer's venv; see scripts/mlserver_runtime.py)"
    mlserver = os.path.join(os.path.dirname(args.peer_python), "mlserver")
    if not os.path.isfile(args.peer_python) or not os.path.isfile(mlserver):
        return f"--peer_python={args.peer_python}: no python with mlserver beside it"
    if args.encoding != "json":
        return "--encoding=binary: MLServer's REST has no binary tensor data extension"
    return None


def peer_table(results: dict, models: list[str], levels: list[int]) -> str:
    """ann (dynamic) vs MLServer's better run (adaptive batching on or off) per row."""
    lines = [
        "| model | c | ann req/s | MLServer best req/s | ratio | ann p95 ms | MLServer p95 ms "
        "| ann server CPU (cores) | ann CPU ms/req | MLServer CPU ms/req |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in models:
        for c in levels:
            ann = results[(model, "dynamic", c)]
            peer = max((results[(model, m, c)] for m in ("mlserver", "mlserver-ab")),
                       key=lambda r: r["throughput"])  # fmt: skip
            lines.append(
                f"| {model} | {c} | {ann['throughput']:,.0f} | {peer['throughput']:,.0f} | "
                f"{ann['throughput'] / peer['throughput']:.2f}x | {ann['p95_ms']:.2f} | "
                f"{peer['p95_ms']:.2f} | {ann['server_cores']:.2f} | {ann['server_cpu_ms']:.3f}"
                f" | {peer['server_cpu_ms']:.3f} |"
            )
    return "\n".join(lines)


def summarize(model: str, results: dict, levels: list[int], bare: float,
              args: flags.FlagValues, traced: dict) -> list[str]:  # fmt: skip
    """The per-model summary lines (traces, monitoring, or dynamic vs batch-1)."""
    top = max(levels)
    summary = []
    if traced:
        off = "mon-off" if args.monitoring else "dynamic"
        summary += [traces_summary(model, results, levels, off, mode) for mode in traced]
    if args.monitoring:
        on, off = results[(model, "mon-on", top)], results[(model, "mon-off", top)]
        summary.append(
            f"{model} c={top}: monitoring on/off throughput {on['throughput']:.0f}/"
            f"{off['throughput']:.0f} req/s ({on['throughput'] / off['throughput'] - 1:+.1%}),"
            f" p95 {on['p95_ms']:.2f}/{off['p95_ms']:.2f} ms "
            f"({on['p95_ms'] / off['p95_ms'] - 1:+.1%}), server CPU per request "
            f"{on['server_cpu_ms']:.3f}/{off['server_cpu_ms']:.3f} ms"
        )
        return summary
    if args.constant_weights:
        for c in levels:
            on, off = results[(model, "dynamic", c)], results[(model, "w-args", c)]
            summary.append(
                f"{model} c={c}: weights compiled in/passed: throughput {on['throughput']:.0f}/"
                f"{off['throughput']:.0f} req/s ({on['throughput'] / off['throughput']:.3f}x), "
                f"p95 {on['p95_ms']:.2f}/{off['p95_ms']:.2f} ms, server CPU per request "
                f"{on['server_cpu_ms']:.3f}/{off['server_cpu_ms']:.3f} ms"
            )
        return summary
    dyn, one = results[(model, "dynamic", top)], results[(model, "dynamic", min(levels))]
    line = (
        f"{model}: bare compiled batch-1 call {bare:.3f} ms; at c={min(levels)} (dynamic) the "
        f"server's CPU per request {one['server_cpu_ms']:.3f} ms, of it not the model "
        f"{one['overhead_ms']:.3f} ms, client p50 minus bare call {one['p50_ms'] - bare:.3f} ms;"
        f" at c={top}: server CPU per request {dyn['server_cpu_ms']:.3f} ms"
    )
    if args.batch1:
        b1 = results[(model, "batch-1", top)]
        line += (
            f", batch-1 {b1['server_cpu_ms']:.3f} ms; dynamic/batch-1 throughput "
            f"{dyn['throughput'] / b1['throughput']:.2f}x, dynamic p95 {dyn['p95_ms']:.1f} ms"
        )
    return [*summary, line]


def main(argv: list[str]) -> None:
    del argv
    args = FLAGS
    if args.loadgen:
        loadgen_main(args)
        return
    if args.trivial:
        trivial_main(args.port)
        return
    if args.http_layer:
        http_layer()
        return
    if args.app_layer:
        app_layer()
        return

    # This process's compiled calls (the bare call; the labels served answers are checked
    # against) must leave a GPU's memory to the servers it starts: JAX takes 75% of it at its
    # first use, and a server started beside that could not get its own 75%.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import numpy as np

    from ann import data

    os.makedirs(args.workdir, exist_ok=True)
    images = data.load("digits", "test", cache=True).rows(np.arange(256))["image"]
    if args.compiled_calls:
        compiled_calls({m: prepare(m, args.steps, args.workdir) for m in args.models}, images)
        return
    if args.dispatch_child:
        dispatch_child({m: prepare(m, args.steps, args.workdir) for m in args.models}, images)
        return
    if args.dispatch:
        for m in args.models:
            prepare(m, args.steps, args.workdir)  # once, before any timed process
        dispatch_ab(args.models)
        return
    bodies = os.path.join(args.workdir, "bodies.json")
    write_bodies(bodies, images, args.monitoring, args.encoding)
    levels = [int(c) for c in args.concurrency]
    modes, traced, sink = server_modes(args)
    skipped = peer_skipped(args)
    print(f"{os.cpu_count()} CPUs; server on core 0, load generator on core 1"
          if pinned(0) else "not pinned (taskset missing or 1 CPU)")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f} (1, 5, 15 min)")  # fmt: skip
    ceiling = loadgen_ceiling(max(levels), bodies, args)
    print(
        f"load generator ceiling at c={max(levels)} (a trivial endpoint on core 0): "
        f"{ceiling['throughput']:,.0f} req/s, client cpu {ceiling['client_cpu']:.0%}"
    )
    summary, results = [], {}
    for model in args.models:
        export_dir = prepare(model, args.steps, args.workdir)
        bare = bare_call_ms(export_dir, images)
        print(f"{model}: served on {served_device(export_dir)}")
        answers = (images, export_labels(export_dir, images))
        for mode, extra in modes.items():
            found = run_ann(model, export_dir, mode, extra, traced.get(mode), levels, bodies, args,
                            answers)  # fmt: skip
            results.update({(model, mode, c): r for c, r in found.items()})
        if skipped is None and not args.monitoring:
            for adaptive in (False, True):
                found = run_peer(model, export_dir, adaptive, levels, bodies, args)
                mode = "mlserver-ab" if adaptive else "mlserver"
                results.update({(model, mode, c): r for c, r in found.items()})
        summary += summarize(model, results, levels, bare, args, traced)
    if sink is not None:
        summary.append(f"{sink.spans} spans exported")
    if skipped is not None:
        summary.append(f"MLServer comparison skipped: {skipped}")
    elif not args.monitoring:
        summary.append(peer_table(results, args.models, levels))
    print("\n".join(summary))
    print(f"load average at the end {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}")  # fmt: skip


if __name__ == "__main__":
    cli.run(main)  # a bad flag: one line, exit 1
