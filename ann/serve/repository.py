"""Triton's model repository extension, without HTTP: the index of models and their states
(those served, being loaded, unloaded or failed, and the registry's versions not loaded),
and loading or unloading a model while the server runs.

`load_model(spec, registry)` is the one way a `--model` (at start) or a repository load (later)
becomes a `ServedModel`: a registry URI resolved in the registry, or an export directory, its
files verified by sha256. A load resolves and reads the artifact and compiles every batch
bucket off the event loop; until the model is ready, requests for it get 503 + Retry-After
(`DataPlane.model`), and the server's own readiness does not change (a load is not a restart).
An unload takes the model's versions out of service at once (new requests: 404) and lets the
requests already queued finish.

States, as Triton names them: READY, LOADING, UNAVAILABLE (with the reason: unloaded, or why
loading failed).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ann import arguments, artifact
from ann.serve import protocol
from ann.serve.dataplane import DataPlane, ServedModel, compile_words
from ann.serve.errors import ServeError, unavailable

READY, LOADING, UNAVAILABLE = "READY", "LOADING", "UNAVAILABLE"

log = logging.getLogger("ann.serve")


def load_model(spec: str, registry: str | None) -> ServedModel:
    """Resolves (`ann.registry.resolve`) and verifies one model spec: `models:/NAME/3`,
    `models:/NAME@ALIAS`, `models:/NAME/latest` (served as NAME, version 3) in `registry`
    (None: the registry's default, `$ANN_REGISTRY` else ./registry), or an export directory
    (served under its manifest name, version = the first 12 hex digits of its manifest's
    sha256; a registered copy under its registry name and version: `Resolved.served_name`,
    the rule every command names a model by; `ServedModel.registry_version` says which of the
    two its version is). `registry` 'off' (`settings.no_registry`): a registry URI is refused
    (RegistryError naming the spec and the flag). Raises RegistryError, artifact.IntegrityError,
    OSError or ValueError with one line naming the spec."""
    from ann import registry as registries
    from ann.serve.settings import no_registry, registry_uri_refusal

    if no_registry(registry):
        refusal = registry_uri_refusal(spec, registry)
        if refusal is not None:
            raise registries.RegistryError(refusal)
        registry = None  # an export directory's own registry.json is read alone
    resolved = registries.resolve(spec, registry)
    model = resolved.load()
    # The digest of the manifest bytes loaded, not a second read.
    name, version = resolved.served_name(model.name, model.manifest_sha256)
    # Where it came from says whether its version is a number, not the text's look: an
    # export's hash may be all digits ("012345678901").
    registered = resolved.registered_as(model.manifest_sha256)
    source = spec if resolved.version is not None else resolved.path
    return ServedModel(name, version, model, source, None if registered is None else registered[1])


def load_models(specs: list[str], registry: str | None) -> list[ServedModel]:
    """Every `--model`, loaded (`load_model`); ValueError for a name and version given twice
    (naming both flags and the fix: it had no fix)."""
    models = [load_model(spec, registry) for spec in specs]
    seen: dict[tuple[str, str], str] = {}
    for spec, m in zip(specs, models):
        if (m.name, m.version) in seen:
            first = seen[(m.name, m.version)]
            given = f"--model={first}" + ("" if first == spec else f" and --model={spec}")
            raise ValueError(
                f"--model: {m.name} version {m.version} is given twice ({given}"
                f"{' twice' if first == spec else ''}); give it once"
            )
        seen[(m.name, m.version)] = spec
    return models


def load_sources(name: str, parameters: Any) -> list[str]:
    """The specs a load request names: `parameters.source` (a registry URI or an export
    directory, as `--model` takes), else the versions of Triton's `parameters.config`
    `version_policy.specific.versions` (`models:/NAME/V` each), else `models:/NAME/latest`.
    ServeError 400 for anything else: an ignored key ('sauce', a policy other than `specific`)
    loaded the latest version instead of the one meant."""
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise ServeError(400, f"parameters: expected an object, got {protocol.short(parameters)}")
    unknown = sorted(set(parameters) - {"source", "config"})
    if unknown:
        raise ServeError(
            400,
            "parameters: expected source (a registry URI or an export directory) or config "
            f"(Triton's, with version_policy.specific), got {protocol.short(unknown[0])}",
        )
    source = parameters.get("source")
    if source is not None:
        if not isinstance(source, str) or not source:
            raise ServeError(
                400,
                "parameters.source: expected a registry URI (models:/NAME/VERSION) or an export "
                f"directory, got {protocol.short(source)}",
            )
        return [source]
    config = parameters.get("config")
    if config is None:
        return [f"models:/{name}/latest"]
    versions = _config_versions(config)
    return [f"models:/{name}/{v}" for v in versions] or [f"models:/{name}/latest"]


def _config_versions(config: Any) -> list[int]:
    """`version_policy.specific.versions` of a Triton model config given as a JSON string."""
    import orjson

    expected = "parameters.config: expected a model configuration as a JSON string, got "
    try:
        parsed = orjson.loads(config) if isinstance(config, str) else None
    except orjson.JSONDecodeError as e:  # why, and where in the string
        why = protocol.json_error(e, config)
        raise ServeError(400, f"{expected}{protocol.short(config)}, {why}") from None
    if not isinstance(parsed, dict):
        raise ServeError(400, expected + protocol.short(config))
    protocol.refuse_duplicate_keys("parameters.config", config.encode(), parsed)
    others = sorted(set(parsed) - {"name", "version_policy"})
    if others:  # max_batch_size and the rest are the server's flags, set when it starts
        raise ServeError(
            400,
            "parameters.config: only version_policy is read (batching and limits are ann "
            f"serve's flags), got {protocol.short(others[0])}",
        )
    policy = parsed.get("version_policy") or {}
    if not isinstance(policy, dict) or set(policy) - {"specific"}:
        got = protocol.short(sorted(policy) if isinstance(policy, dict) else policy)
        raise ServeError(
            400,
            "parameters.config.version_policy: expected specific (the versions to load: "
            f'{{"specific": {{"versions": [2]}}}}), got {got}',
        )
    specific = policy.get("specific") or {}
    if not isinstance(specific, dict):
        raise ServeError(
            400,
            "parameters.config.version_policy.specific: expected an object "
            f'{{"versions": [2]}}, got {protocol.short(specific)}',
        )
    # A misspelled "versions" was ignored, and the latest version loaded instead.
    protocol.known_keys("parameters.config.version_policy.specific", specific, ("versions",))
    versions = specific.get("versions", [])
    field = "parameters.config.version_policy.specific.versions"
    if not isinstance(versions, list):
        raise ServeError(
            400, f"{field}: expected a list of version numbers, got {protocol.short(versions)}"
        )
    numbers = []
    for i, v in enumerate(versions):
        # A number, or its text (protobuf's JSON writes an int64 as a string), read as every
        # version is (`arguments.version_number`, as models:/NAME/VERSION and `ann registry`
        # read one): "01" loaded version 1, where models:/NAME/01 is refused.
        text = str(v) if isinstance(v, int) and not isinstance(v, bool) else v
        number = arguments.version_number(text) if isinstance(text, str) else None
        if number is None:
            fixed = arguments.zeros_dropped(text) if isinstance(text, str) else None
            fix = f"; write {protocol.short(fixed)}" if fixed else ""
            raise ServeError(
                400,
                f"{field}[{i}]: expected a version number (1, 2, ...), got {protocol.short(v)}"
                f"{fix}",
            )
        numbers.append(number)
    return numbers


class Repository:
    """Index, load and unload over a `DataPlane`; `registry` resolves `models:/` URIs."""

    def __init__(self, dataplane: DataPlane, registry: str | None):
        self.dataplane = dataplane
        self.registry = registry
        # (name, version) -> why it is not served (unloaded, or the error that failed its load)
        self.unavailable: dict[tuple[str, str], str] = {}
        # What a 404 read of the registry (`not_loaded`), and the registry's state then.
        self._recent: tuple[tuple, list[tuple[str, str, str]]] | None = None

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Every model the server knows: served (READY, or LOADING while it compiles), being
        loaded (LOADING; version "" until known), unloaded or failed (UNAVAILABLE + reason)."""
        from ann.registry.spec import version_order

        dp = self.dataplane
        entries = []
        # The versions whose origin says they are registry numbers (the rest: their text says).
        registered = {(m.name, m.version) for m in dp.all_models() if m.registry_version}
        for m in dp.all_models():
            if m.ready:
                entries.append(_entry(m.name, m.version, READY))
            elif dp.compile_error and not ready_only:
                entries.append(_entry(m.name, m.version, UNAVAILABLE, dp.compile_error))
            elif not ready_only:
                entries.append(_entry(m.name, m.version, LOADING))
        if not ready_only:
            for name, versions in dp.loading.items():
                entries.extend(_entry(name, v or "", LOADING) for v in versions)
            known = {(e["name"], e["version"]) for e in entries}
            for (name, version), reason in self.unavailable.items():
                if (name, version) not in known:
                    entries.append(_entry(name, version, UNAVAILABLE, reason))
            known |= set(self.unavailable)
            # A version whose export is served under another name (its directory given to
            # --model, or a load's source) says so: it read as one more model, not loaded.
            served_as = {m.model.manifest_sha256: f"{m.name}/{m.version}" for m in dp.all_models()}
            for name, version, sha256 in self._registered():
                registered.add((name, version))
                if (name, version) not in known:
                    same = served_as.get(sha256)
                    reason = f"; its export is served as {same}" if same else ""
                    entries.append(
                        _entry(name, version, UNAVAILABLE, f"not loaded (in the registry{reason})")
                    )

        def order(e: dict[str, str]) -> tuple[str, tuple[int, int, str]]:
            # By name, then version: registry numbers by number ("2" before "10", where the
            # text's order put "10" first), then export hashes by text.
            return e["name"], version_order(
                e["version"], (e["name"], e["version"]) in registered or None
            )

        return sorted(entries, key=order)

    def not_loaded(self, name: str, version: str | None) -> str:
        """For a 404 of model `name` (at `version`, the text asked for; None: any): how to load
        it where the registry holds it and it is not served (`version 2 of 'digits' is in the
        registry, not loaded: POST /v2/repository/models/digits/load ...`); "" otherwise (no
        registry, not there, or not a version number)."""
        if version is not None and arguments.version_number(version) is None:
            return ""  # an export's hash, or "02" (the 404 names the version meant)
        state = self._registry_state()
        if self._recent is None or self._recent[0] != state:
            self._recent = state, self._registered()
        versions = [v for n, v, _ in self._recent[1] if n == name]
        load = f"POST /v2/repository/models/{name}/load (the admin token)"
        if version is None:
            if not versions or name in self.dataplane.models:
                return ""
            return f"{name!r} is in the registry, not loaded: {load} loads its latest version"
        if version not in versions:
            return ""
        return (
            f"version {version} of {name!r} is in the registry, not loaded: {load} with "
            f'{{"parameters": {{"source": "models:/{name}/{version}"}}}} loads it'
        )

    def _registry_state(self) -> tuple:
        """What changes when a version is registered or deleted: registry.db's and its WAL's
        size and modification time (two stat calls), so that a 404 reads the registry again
        only then, on the event loop, whatever the 404s a client sends (a cache of 5 s left a
        version just registered without its word while the index listed it)."""
        from ann.registry import Registry, RegistryError
        from ann.serve.settings import no_registry

        if no_registry(self.registry):
            return ()
        try:
            db = Registry.at(self.registry).db_path
        except RegistryError:
            return ()
        stats = []
        for path in (db, f"{db}-wal"):
            try:
                st = os.stat(path)
                stats.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stats.append(None)
        return tuple(stats)

    def _registered(self) -> list[tuple[str, str, str]]:
        """(name, version, manifest SHA-256) of every version in the registry, if there is one
        (as Triton's index lists the models of its repository that are not loaded)."""
        from ann.registry import Registry, RegistryError
        from ann.serve.settings import no_registry

        if no_registry(self.registry):
            return []
        registry = Registry.at(self.registry)
        try:
            registry.check_readable()  # artifacts/ whose registry.db is gone: not "no registry"
            if not registry.exists():
                return []
            return [
                (m["name"], str(v.version), v.manifest_sha256)
                for m in registry.models()
                for v in registry.versions(m["name"])
            ]
        except RegistryError as e:  # the index still answers with what is served
            log.warning("repository index: the registry could not be read (%s)", e)
            return []

    def registry_line(self) -> str | None:
        """The start-up line saying which registry the index lists versions of, how many and
        how to list none, or None when it adds none (`--registry=off`, no registry, or every
        version served). A server given only an export directory, started where a ./registry
        happened to be (the default), listed that registry's models without a word."""
        from ann.registry import Registry

        served = {(m.name, m.version) for m in self.dataplane.all_models()}
        added = [(n, v) for n, v, _ in self._registered() if (n, v) not in served]
        if not added:
            return None
        models = len({n for n, _ in added})
        versions = f"{len(added)} version{'s' * (len(added) > 1)}"
        return (
            f"repository index: also lists {versions} of {models} "
            f"model{'s' * (models > 1)} not loaded from the registry at "
            f"{Registry.at(self.registry).where}; --registry=off lists only the served models"
        )

    async def load(self, name: str, parameters: Any) -> tuple[list[ServedModel], list[ServedModel]]:
        """Loads the versions a load request names (`load_sources`) and serves them; those
        already served are left as they are. Returns (the versions loaded, those already
        served: a reply of neither said nothing). ServeError: 409 while `name` is being loaded or
        unloaded, 400 for a source that cannot be loaded or names another model, 500 when
        compiling fails."""
        dp = self.dataplane
        sources = load_sources(name, parameters)
        if dp.draining:
            raise unavailable(
                "server: draining for shutdown; load elsewhere",
                "draining",
                dp.settings.retry_after_seconds,
            )
        if name in dp.loading:
            raise ServeError(409, f"model {name!r}: a load or unload is in progress; retry", "busy")
        dp.loading[name] = {None}
        try:
            models, already = [], []
            for spec in sources:
                m = await dp.in_thread(f"reading {name}", self._read, name, spec)
                if (served := dp.models.get(name, {}).get(m.version)) is not None:
                    already.append(served)  # a load is idempotent
                    continue
                dp.loading[name].add(m.version)
                models.append(m)
            dp.loading[name].discard(None)  # the versions are known now (a "" row stayed)
            for m in models:
                try:
                    await dp.compile(m)
                except Exception as e:
                    why = compile_words(e)
                    log.debug("compiling %s failed", m.name, exc_info=True)
                    self.unavailable[(m.name, m.version)] = f"compiling failed: {why}"
                    raise ServeError(
                        500, f"load {name!r}: compiling version {m.version} failed ({why})", "load"
                    ) from None
                dp.add(m)
                self.unavailable.pop((m.name, m.version), None)
            return models, already
        finally:
            del dp.loading[name]

    def _read(self, name: str, spec: str) -> ServedModel:
        """The model `spec` names, read and verified (off the event loop)."""
        from ann.registry import RegistryError

        try:
            m = load_model(spec, self.registry)
        except (RegistryError, artifact.IntegrityError, OSError, ValueError) as e:
            raise ServeError(400, f"load {name!r}: {e}", "load") from None
        if m.name != name:
            raise ServeError(
                400,
                f"load {name!r}: {protocol.short(spec)} holds model {m.name!r}; load it as "
                f"{m.name!r} or give a source of {name!r}",
                "load",
            )
        return m

    async def unload(self, name: str, version: str | None = None) -> list[ServedModel]:
        """Takes every version of `name`, or `version` alone (as the server names it: "2" a
        registry version, an export directory's hash), out of service (404 from now on; the
        name's other versions keep serving) and waits for its queued requests. ServeError: 404
        for a model or version not served (`DataPlane.model`, listing those served), 409 while
        it is being loaded."""
        dp = self.dataplane
        if name in dp.loading:
            raise ServeError(409, f"model {name!r}: a load or unload is in progress; retry", "busy")
        if version is not None or name not in dp.models:
            dp.model(name, version)  # raises the 404 naming what is served
        dp.loading[name] = {version} if version else set()
        try:
            removed = await dp.remove(name, version)
        finally:
            del dp.loading[name]
        for m in removed:
            self.unavailable[(m.name, m.version)] = "unloaded"
        return removed


def _entry(name: str, version: str, state: str, reason: str = "") -> dict[str, str]:
    return {"name": name, "version": version, "state": state, "reason": reason}
