"""The serving logic, without HTTP: which models are served, whether they are ready, and infer.

`app.App` translates HTTP to these calls and back (as MLServer's `rest/endpoints.py` does for its
`handlers/dataplane.py`); anything that is not about HTTP lives here, so another front end (a
gRPC one, a test, canary or shadow routing) drives the same logic. Refusals are
`errors.ServeError` carrying their status.

The seam for traffic routing: a request that names no version gets the version its
`TrafficPolicy` chooses (`DataPlane.model`). Today that is `FirstGiven`, the first version given
for the name; a canary policy would choose by weight, a shadow one would also hand a copy of the
request to a second version (after `submit`, which has the decoded request).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import orjson

from ann import arguments, artifact, console
from ann.serve import protocol
from ann.serve.batcher import Batcher, QueueFull, Timing, buckets
from ann.serve.errors import ServeError, unavailable
from ann.serve.metrics import Metrics
from ann.serve.model_config import client_source
from ann.serve.monitoring import ModelMonitor, Monitoring
from ann.serve.settings import Settings
from ann.serve.tracing import Tracing

log = logging.getLogger("ann.serve")


def version_key(m: ServedModel) -> tuple[int, int, str]:
    """The order `m`'s version is listed in among its model's versions: registry numbers by
    number ("2" before "10"), then export hashes by text (`ann.registry.spec.version_order`;
    a version with `m.registry_version` is a number whatever its look, one without is judged
    by its text)."""
    from ann.registry.spec import version_order

    return version_order(m.version, True if m.registry_version is not None else None)


def listed(versions: Mapping[str, ServedModel]) -> list[str]:
    """The versions of one model (version -> its `ServedModel`), in `version_key`'s order: as
    a 404, the metadata's `versions` and a repository load's reply list them."""
    return [m.version for m in sorted(versions.values(), key=version_key)]


class ServedModel:
    """One version of one model: its artifact, its compiled buckets and its batcher.

    `version`: the version it is served and asked for as (the text of a route's `{version}`
    and of an unload's `parameters.version`); `registry_version`: the registry's version number
    it is (a registry URI, or a registered copy with its `registry.json`; `version` is then its
    text, "3"), None for an export directory served by its manifest hash ("0a1b2c3d4e5f", all
    digits at times: "012345678901" is a hash too, never version 12345678901);
    `inputs`: the signature without the batch axis (what the codec checks requests against,
    each entry's checks made once: `protocol.Signature`);
    `metadata`: the v2 model metadata reply, encoded once."""

    def __init__(
        self,
        name: str,
        version: str,
        model: artifact.Model,
        source: str,
        registry_version: int | None = None,
    ):
        self.name, self.version, self.model, self.source = name, version, model, source
        self.registry_version = registry_version
        self.label_version = version  # its metrics' `version` label (app._Unserved's is "")
        # Each input's checks worked out once, here (`protocol.Signature`), not per request.
        self.inputs = protocol.Signature(
            {k: {**v, "shape": v["shape"][1:]} for k, v in model.inputs.items()},
            getattr(model, "framings", None),  # an artifact.Model's, built at its load
        )
        self.outputs = model.outputs
        self.batcher: Batcher | None = None
        self.ready = False
        self.last_inference = 0.0  # time.time() of its last batch; 0: none yet
        self.monitor: ModelMonitor | None = None  # windows and feedback (--monitor=on)
        self.observe_duration: Callable[[float], None] = lambda _: None
        self.observe_queue: Callable[[float], None] = lambda _: None
        self.observe_failure: Callable[[float], None] = lambda _: None
        self.count_rows: Callable[[float], None] = lambda _: None
        self.metadata = orjson.dumps(
            {
                "name": name,
                "versions": [version],
                "platform": "jax",
                "inputs": protocol.tensor_metadata(model.inputs),
                "outputs": protocol.tensor_metadata(model.outputs),
                "model_name": name,
                "model_version": version,
                "parameters": {
                    "platforms": model.manifest.get("platforms"),
                    "source": public_source(model.manifest.get("source")),
                    "metrics": model.manifest.get("metrics"),
                    # The fits its function applies (a temperature, a threshold).
                    **{
                        k: model.manifest[k]
                        for k in artifact.FITS
                        if model.manifest.get(k) is not None
                    },
                    # The names each integer input or output indexes (classes, a vocabulary).
                    "labels": {
                        k: v["names"]
                        for k, v in (*model.inputs.items(), *model.outputs.items())
                        if "names" in v
                    },
                },
            }
        )


def _info_labels(m: ServedModel) -> tuple[str, str, str, str]:
    """ann_model_info's labels: the source as a client may see it (`client_source`: an export
    directory by its name; the metrics port needs no token, and it showed the server's path)."""
    platforms = ",".join(m.model.manifest.get("platforms", []))
    return m.name, m.version, platforms, client_source(m.source)


def public_source(source: dict[str, Any] | None) -> dict[str, Any] | None:
    """The manifest's `source` as model metadata shows it: the step and how it was chosen,
    not the training machine's workdir path, nor `init_from` (the parent model's run and
    checkpoint paths) (where runs live on it is not a client's business; `ann registry show`
    and the manifest keep them)."""
    if not isinstance(source, dict):
        return source
    return {k: v for k, v in source.items() if k not in ("workdir", "init_from")}


# The v2 protocol extensions this server implements, as Triton names them.
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "model_configuration"]


# Why nothing can answer, and the fix: the readiness reply's and an infer's 404 alike.
NONE_SERVED = "(every model was unloaded); load one with POST /v2/repository/models/NAME/load"


class TrafficPolicy(Protocol):
    """Chooses the version that answers a request naming no version."""

    def choose(self, name: str, versions: Mapping[str, ServedModel]) -> ServedModel: ...


class FirstGiven:
    """The first version given for a name (`--model` order) answers its unversioned path."""

    def choose(self, name: str, versions: Mapping[str, ServedModel]) -> ServedModel:
        return next(iter(versions.values()))  # dicts keep insertion order


class DataPlane:
    """The served models and what can be asked of them: readiness, metadata, infer.

    `models`: loaded artifacts (compiled by `start`); `settings` were checked when made;
    `policy` chooses the version of an unversioned request (default `FirstGiven`); `tracing`:
    spans of batches and their requests (`tracing.from_environment()`), None for none."""

    def __init__(
        self,
        models: list[ServedModel],
        settings: Settings,
        policy: TrafficPolicy | None = None,
        tracing: Tracing | None = None,
    ):
        self.settings = settings
        self.policy: TrafficPolicy = policy or FirstGiven()
        self.tracing = tracing
        self.models: dict[str, dict[str, ServedModel]] = {}
        for m in models:
            self.models.setdefault(m.name, {})[m.version] = m
        self.metrics = Metrics(settings.max_batch_size)
        # Read at each scrape: loads and unloads change it too, not only start and drain.
        self.metrics.ready.set_function(lambda: int(self.ready))
        self.monitoring = Monitoring() if settings.monitor == "on" else None
        for m in models:
            self._bind_metrics(m)
        self.draining = False
        # What runs in a worker thread now, for whom ("compiling digits/1"): such work cannot be
        # interrupted, so a SIGTERM does not wait for it (`app.run`), and says so.
        self.busy: list[str] = []
        # Worker-thread work a stop neither waits for nor names: nothing served waits for it
        # and nothing of it is lost (the drift process's start, `ModelMonitor.prepare`: a stop
        # right after a compile waited seconds for the drift process's imports at niceness 19).
        self.background: list[str] = []
        # Set by `shutdown`: the process ends without the interpreter's exit (`app.leave_now`),
        # as work was left in a thread; decided once, so that the drift process's stop and
        # `app.run` agree even when that work ends in between.
        self.left_running = False
        self.compile_error: str | None = None
        # Set when a model given at start fails to compile: the server could never turn ready,
        # so it stops and exits 1 (`http.serve`, `app.run`); it ran on unready until signalled.
        self.start_failed = asyncio.Event()
        self._compile_task: asyncio.Task | None = None
        # Names with a repository load or unload in progress -> the versions involved (None
        # until known): a request for one of them is 503 + Retry-After, not 404.
        self.loading: dict[str, set[str | None]] = {}

    def _bind_metrics(self, m: ServedModel) -> None:
        # Children bound once: a labels() lookup per request costs more than the observe.
        m.observe_duration = self.metrics.request_duration.labels(m.name, m.version).observe
        m.observe_queue = self.metrics.queue_seconds.labels(m.name, m.version).observe
        m.observe_failure = self.metrics.failed_duration.labels(m.name, m.version).observe
        m.count_rows = self.metrics.inference_rows.labels(m.name, m.version).inc
        self.metrics.model_info.labels(*_info_labels(m)).set(1)
        if self.monitoring is not None:
            self.monitoring.add(self._monitor(m))

    def _monitor(self, m: ServedModel) -> ModelMonitor:
        """`m`'s monitor (--monitor=on), made once: by `compile` for a repository load (so its
        `prepare` runs off the loop), else when `m` is bound at start."""
        if m.monitor is None:
            pool = self.monitoring.pool if self.monitoring is not None else None
            m.monitor = ModelMonitor(m, self.settings, self.metrics, pool)
        return m.monitor

    # -- what is served --------------------------------------------------------------------------

    def model(self, name: str, version: str | None = None) -> ServedModel:
        """The served model `name` at `version` (its text exactly: `ServedModel.version`), or
        the one the traffic policy chooses when `version` is None; `ServeError` 404 naming the
        versions served otherwise (and the one meant, for a registry version written with a
        leading zero: "02"), 503 while it is being loaded or unloaded."""
        versions = self.models.get(name)
        if versions is None:
            self._loading(name, version)
            said = f"expected one of {protocol.names(self.models)}, got {protocol.short(name)}"
            if not self.models:
                said = f"got {protocol.short(name)}, but none is served {NONE_SERVED}"
            raise ServeError(404, f"model: {said}", "model")
        if version is None:
            return self.policy.choose(name, versions)
        # The text the server names it by: a registry version's number ("2", as every version
        # number is written: `arguments.version_number`), an export directory's hash.
        served = versions.get(version)
        if served is None:
            self._loading(name, version)
            fixed = arguments.zeros_dropped(version)  # "02": registry version 2, written so
            fix = ""
            if fixed in versions and versions[fixed].registry_version is not None:
                fix = f"; write {protocol.short(fixed)}"
            raise ServeError(
                404,
                f"model {name!r} version: expected one of {protocol.listed(listed(versions))}, got "
                f"{protocol.short(version)}{fix}",
                "version",
            )
        return served

    def _loading(self, name: str, version: str | None) -> None:
        """503 + Retry-After if `name` (at `version`, or any) is being loaded or unloaded."""
        versions = self.loading.get(name)
        if versions is not None and (version is None or version in versions or None in versions):
            raise unavailable(
                f"model {name!r}: being loaded or unloaded; retry",
                "loading",
                self.settings.retry_after_seconds,
            )

    def all_models(self) -> list[ServedModel]:
        return [m for versions in self.models.values() for m in versions.values()]

    @property
    def ready(self) -> bool:
        """Some model served, every model compiled, and the server not draining. Not ready with
        every model unloaded: a readiness probe would send traffic that can only get 404 (a pod
        with nothing to serve should leave the pool)."""
        models = self.all_models()
        return not self.draining and bool(models) and all(m.ready for m in models)

    def model_ready(self, m: ServedModel) -> bool:
        return m.ready and not self.draining

    def readiness(self) -> dict[str, Any]:
        """`{"ready": true}`, or `{"ready": false, "error": why}` (v2's failure body): compiling
        failed, no model is served, the server drains, or which models still compile (the
        reply said only `{"ready":false}` then, where the README promised the reason)."""
        if self.ready:
            return {"ready": True}
        if self.compile_error:
            why = f"compiling failed: {self.compile_error}"
        elif not self.models:
            why = f"server: no model is served {NONE_SERVED}"
        elif self.draining:
            why = "server: draining for shutdown; send requests to another replica"
        else:
            waiting = [f"{m.name}/{m.version}" for m in self.all_models() if not m.ready]
            why = (
                f"models: still compiling {', '.join(waiting)}; ready when each has compiled "
                "(its `ready:` line in the server's log)"
            )
        return {"ready": False, "error": why}

    def server_metadata(self) -> dict[str, Any]:
        import ann

        return {
            "name": "ann",
            "version": ann.__version__,
            "extensions": EXTENSIONS,
            "models": [
                {"name": m.name, "version": m.version, "ready": m.ready} for m in self.all_models()
            ],
        }

    # -- infer -----------------------------------------------------------------------------------

    def admit(self, m: ServedModel) -> Batcher:
        """`m`'s batcher if it may take a request now; else `ServeError` 503 + Retry-After
        (draining, still compiling, queue full): refusals that cost nothing, made before the
        request is decoded."""
        retry = self.settings.retry_after_seconds
        if self.draining:
            raise unavailable("server: draining for shutdown; retry elsewhere", "draining", retry)
        batcher = m.batcher
        if not m.ready or batcher is None:
            raise unavailable(
                f"model {m.name!r} version {m.version}: still compiling; retry", "not_ready", retry
            )
        try:
            batcher.check_room()  # no room for even one row
        except QueueFull as e:
            raise unavailable(f"queue: full ({e}); retry later", "queue_full", retry) from None
        return batcher

    def submit(
        self, batcher: Batcher, request: protocol.InferRequest, trace: Any = None
    ) -> asyncio.Future:
        """Queues a decoded request on `batcher` (from `admit`); the future gets
        (outputs by name, `Timing`). `trace`: the request's span (`tracing.TracedRequest`),
        linked from its batch's. `ServeError` 503 when the queue has no room for its rows."""
        try:
            return batcher.submit_nowait(
                request.inputs, request.rows, trace, request.timeout, request.id
            )
        except QueueFull as e:
            retry = self.settings.retry_after_seconds
            raise unavailable(f"queue: full ({e}); retry later", "queue_full", retry) from None

    @staticmethod
    def observe(m: ServedModel, seconds: float, timing: Timing, rows: int) -> None:
        """Records one answered infer of `rows` rows: `seconds` from its body read to its
        reply."""
        m.observe_duration(seconds)
        m.observe_queue(timing.queue_seconds)
        m.count_rows(rows)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts compiling every model in the background (the port is open meanwhile)."""
        self._compile_task = asyncio.get_running_loop().create_task(self._compile_all())
        if self.monitoring is not None:
            self.monitoring.start()

    async def _compile_all(self) -> None:
        """Compiles every model given at start, then turns ready. The first that fails sets
        `compile_error` (one line) and `start_failed`: the server stops and exits 1."""
        for m in self.all_models():
            try:
                await self.compile(m)
            except Exception as e:
                self.compile_error = f"model {m.name} version {m.version}: {compile_words(e)}"
                log.debug("compiling %s failed", m.name, exc_info=True)  # the whole traceback
                # The drift process's start first (seconds; a SIGTERM still stops the server):
                # an exit in the middle of its spawn left it a traceback from multiprocessing.
                deadline = time.monotonic() + 60
                while self.background and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                self.start_failed.set()
                return
        # What startup made (jax, scipy, the compiled models: ~140k objects) leaves the cyclic
        # collector's full passes. Monitoring holds each request for up to a second, which
        # promotes some to the oldest generation and so triggers full passes: over the startup
        # objects one took 0.3 s, stalling the event loop (ann/serve/monitoring.py).
        gc.freeze()

    async def compile(self, m: ServedModel) -> None:
        """Compiles and runs once every batch bucket of `m` (off the event loop), starts its
        batcher and marks it ready; raises what compiling raised."""
        sizes = buckets(self.settings.max_batch_size)
        start = time.perf_counter()
        if self.monitoring is not None:
            # The drift tests' imports and reference (`ModelMonitor.prepare`: the first model
            # spawns the drift process, which imports jax and scipy at niceness 19) go on in a
            # thread beside the compile, and the model turns ready without waiting for them:
            # that thread only waits for the drift process (the compile keeps the GIL), and a
            # window's drift test waits for `prepare` itself. Awaited after the compile, they
            # were a third to a half of the digits MLP's "compiled in" seconds
            # (docs/benchmarks.md, "Serving start-up"). `prepare` catches its own errors. Listed
            # in `background`: a stop does not wait for it (it waited for the drift process's
            # start), nor names it.
            self.in_thread(
                f"the drift tests of {m.name}/{m.version}", self._monitor(m).prepare, quiet=True
            )
        run, weights_in, cache = await self.in_thread(
            f"compiling {m.name}/{m.version}",
            _compile_counted, m.model, sizes, self.settings.constant_weights_mb,
        )  # fmt: skip
        s = self.settings
        m.batcher = Batcher(
            run,
            s.max_batch_size,
            s.max_queue_delay_ms / 1000,
            s.queue_rows,
            wait=s.batch_wait,
            on_batch=self._batch_observer(m),
            on_rows=None if m.monitor is None else m.monitor.record_batch,
            trace=None if self.tracing is None else self.tracing.batches(m.name, m.version),
        )
        m.batcher.start()
        m.ready = True
        compiled = console.bytes_text(m.model.weights_bytes * len(sizes))
        weights = (
            f"weights compiled in: {compiled}" if weights_in else "weights passed on each call"
        )
        # On the console, as the `serving ... on http://...` line: requests before it get 503
        # ("still compiling"), so an operator waits for this line (or /v2/health/ready). The
        # device says where the export runs (`artifact.device_for`: a `cpu` export on a GPU
        # machine runs on its CPU).
        print(
            f"ready: {m.name}/{m.version} on {m.model.device} (batch sizes "
            f"{', '.join(map(str, sizes))} compiled in {time.perf_counter() - start:.1f}s; "
            f"{weights}{cache})",
            file=sys.stderr,
            flush=True,
        )

    def in_thread(
        self, what: str, fn: Callable[..., Any], *args: Any, quiet: bool = False
    ) -> asyncio.Future:
        """`fn(*args)` on the loop's executor, listed in `busy` as `what` (in `background` if
        `quiet`: a stop does not name it) until the thread has finished it (not merely until
        its awaiter was cancelled: the thread runs on)."""
        listed = self.background if quiet else self.busy
        listed.append(what)

        def work() -> Any:
            try:
                return fn(*args)
            finally:
                listed.remove(what)  # one list operation: atomic under the GIL

        return asyncio.get_running_loop().run_in_executor(None, work)

    def add(self, m: ServedModel) -> None:
        """Serves `m` (compiled: `compile`) from now on, after the versions of its name."""
        self.models.setdefault(m.name, {})[m.version] = m
        self._bind_metrics(m)

    async def remove(self, name: str, version: str | None = None) -> list[ServedModel]:
        """Stops serving every version of `name`, or `version` alone (requests for it: 404
        from now on), then waits for the requests already queued."""
        versions = self.models.get(name, {})
        if version is None:
            removed = list(versions.values())
        else:
            removed = [versions.pop(version)] if version in versions else []
        if not versions or version is None:
            self.models.pop(name, None)
        for m in removed:
            m.ready = False
            # Its gauges go with it (ann_queue_depth stayed at 0 for a version unloaded).
            for gauge, labels in ((self.metrics.model_info, _info_labels(m)),
                                  (self.metrics.queue_depth, (m.name, m.version))):  # fmt: skip
                try:
                    gauge.remove(*labels)
                except KeyError:
                    pass
            if m.batcher is not None:
                await m.batcher.close()
            if self.monitoring is not None and m.monitor is not None:
                self.monitoring.remove(m.monitor)
            # On the console, as a load's `ready: ...` line (an unload was said nowhere).
            print(
                f"unloaded: {m.name}/{m.version} (its queued requests answered; requests for it "
                "get 404 now)",
                file=sys.stderr,
                flush=True,
            )
        return removed

    def _batch_observer(self, m: ServedModel) -> Callable[[Timing], None]:
        labels = (m.name, m.version)
        compute = self.metrics.compute_seconds.labels(*labels)
        size = self.metrics.batch_size.labels(*labels)
        padding = self.metrics.padding.labels(*labels)
        self.metrics.queue_depth.labels(*labels).set_function(
            lambda: m.batcher.queued_rows if m.batcher else 0
        )
        per_bucket: dict[int, tuple[Callable, ...]] = {}

        def children(bucket: int) -> tuple[Callable, ...]:
            phase = self.metrics.batch_phase_seconds
            b = str(bucket)
            return (
                self.metrics.batch_executions.labels(*labels, b).inc,
                phase.labels(*labels, b, "input").inc,
                phase.labels(*labels, b, "infer").inc,
                phase.labels(*labels, b, "output").inc,
            )

        def observe(t: Timing) -> None:
            compute.observe(t.compute_seconds)
            size.observe(t.batch_rows)
            padding.inc(t.bucket - t.batch_rows)
            found = per_bucket.get(t.bucket)
            if found is None:
                found = per_bucket[t.bucket] = children(t.bucket)
            executed, assembled, inferred, split = found
            executed()
            assembled(t.input_seconds)
            inferred(t.compute_seconds - t.input_seconds)
            split(t.output_seconds)
            m.last_inference = time.time()

        return observe

    def start_draining(self) -> None:
        """SIGTERM: ready turns false and new infers get 503; queued ones still finish."""
        self.draining = True

    async def shutdown(self) -> None:
        """Drains: every queued request finishes, then the batchers stop."""
        self.start_draining()
        for m in self.all_models():
            if m.batcher is not None:
                await m.batcher.close()
        if self._compile_task is not None and not self._compile_task.done():
            self._compile_task.cancel()
        # Work still in a thread: the process will end without the interpreter's exit
        # (`app.run`), so nothing need wait for the drift process either.
        self.left_running = bool(self.busy or self.background)
        if self.monitoring is not None:
            self.monitoring.stop(wait=not self.left_running)


def compile_words(error: BaseException) -> str:
    """A compile's exception as one line: its type and the first line of its text (XLA's and
    JAX's run on for lines; the rest is in the log at --verbosity=1)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def constant_weights(model: artifact.Model, sizes: list[int], max_mb: float) -> bool:
    """Whether `compile_buckets` compiles the weights into each executable: on the CPU backend
    only (where it was measured to pay: `artifact.Model.compile`), and only while the copies,
    `model.weights_bytes` times the number of `sizes`, total at most `max_mb` MiB."""
    import jax

    copies = model.weights_bytes * len(sizes)
    return jax.default_backend() == "cpu" and copies <= max_mb * (1 << 20)


def _compile_counted(
    model: artifact.Model, sizes: list[int], constant_weights_mb: float
) -> tuple[dict[int, Callable], bool, str]:
    """`compile_buckets`, and how it used the persistent compilation cache, as the end of the
    ready line: `; compilation cache: 11 of 11 executables read from it` (`ann serve
    --compilation_cache_dir`), "" without a cache directory."""
    import jax

    from ann import compilation_cache

    with compilation_cache.counting() as counts:
        run, weights_in = compile_buckets(model, sizes, constant_weights_mb)
    if not jax.config.jax_compilation_cache_dir:
        return run, weights_in, ""
    used = compilation_cache.describe(counts["cache_hits"], counts["compiles"])
    return run, weights_in, f"; compilation cache: {used}"


def compile_buckets(
    model: artifact.Model, sizes: list[int], constant_weights_mb: float
) -> tuple[dict[int, Callable], bool]:
    """AOT-compiles each bucket (weights as constants when `constant_weights` says so) and
    runs it once, so the first request pays nothing: ({batch size: function}, whether the
    weights were compiled in)."""
    constant = constant_weights(model, sizes, constant_weights_mb)
    run = {}
    for size in sizes:
        fn = model.compile(size, constant_weights=constant)
        fn({k: np.zeros((size, *v["shape"][1:]), v["dtype"]) for k, v in model.inputs.items()})
        run[size] = fn
    return run, constant
