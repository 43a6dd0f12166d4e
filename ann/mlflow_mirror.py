"""Mirror registry versions into an MLflow tracking server (needs the `mlflow` extra).

ann's registry stays the source of truth: the server resolves `models:/` URIs against it, and
its artifacts are the ones checked by sha256. The mirror makes each version visible where a team
already looks. Per version it writes:

- an MLflow run (experiment `ann-registry`, named NAME-vN) holding the export as artifacts under
  `model/`, the resolved config as params (`model.name`, `optimizer.learning_rate`, ...), the
  eval metrics at the trained step, and tags for the registry URI, manifest sha256, source run
  and git commit;
- a model version of the registered model of the same name, sourced from those artifacts,
  tagged with ann's version number, and carrying ann's aliases.

MLflow numbers its versions itself, so the mapping is written back onto ann's version as tags
(`mlflow.tracking_uri`, `mlflow.run_id`, `mlflow.version`): mirroring a version twice is a
no-op, and moving or deleting an alias moves or deletes it in MLflow too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ann.registry import ModelVersion, Registry, RegistryError

EXPERIMENT = "ann-registry"
TAG_URI, TAG_RUN, TAG_VERSION = "mlflow.tracking_uri", "mlflow.run_id", "mlflow.version"
_PARAMS_PER_CALL = 100  # MLflow's log_batch limit


class MirrorError(RegistryError):
    """The MLflow side failed; ann's registry already holds the change."""


def _client(tracking_uri: str) -> Any:
    try:
        from mlflow import MlflowClient
    except ImportError as e:
        raise MirrorError(
            "mirroring into MLflow needs its client: pip install 'ann[mlflow]' (mlflow-skinny)"
        ) from e
    return MlflowClient(tracking_uri=tracking_uri)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", str(value)


def _failed(mv: ModelVersion, tracking_uri: str, error: BaseException) -> MirrorError:
    return MirrorError(
        f"mirroring {mv.uri} into MLflow at {tracking_uri} failed: {error}. ann's registry "
        f"holds the change; retry with: python -m ann.registry mirror {mv.uri} "
        f"--mlflow_uri={tracking_uri}"
    )


def mirrored_version(mv: ModelVersion, tracking_uri: str) -> int | None:
    """The MLflow version `mv` was mirrored to at `tracking_uri`, if it was."""
    if mv.tags.get(TAG_URI) == tracking_uri and TAG_VERSION in mv.tags:
        return int(mv.tags[TAG_VERSION])
    return None


def mirror(registry: Registry, name: str, version: int, tracking_uri: str) -> int:
    """Mirrors one registry version (and its aliases); returns its MLflow version number."""
    mv = registry.get_version(name, version)
    done = mirrored_version(mv, tracking_uri)
    if done is not None:
        return done
    client = _client(tracking_uri)
    run_id = None
    try:
        run_id = _log_run(client, mv)
        client.log_artifacts(run_id, mv.path, "model")
        client.set_terminated(run_id, "FINISHED")
        _create_unless_exists(
            lambda: client.create_registered_model(name, tags={"ann.registry": "mirror"})
        )
        source = f"{client.get_run(run_id).info.artifact_uri}/model"
        created = client.create_model_version(
            name,
            source,
            run_id=run_id,
            tags={"ann.version": str(version), "ann.manifest_sha256": mv.manifest_sha256},
            description=mv.description or None,
        )
        number = int(created.version)
        for alias in mv.aliases:
            client.set_registered_model_alias(name, alias, str(number))
    except Exception as e:  # MlflowException, or the HTTP client's own errors
        if run_id is not None:
            try:
                client.set_terminated(run_id, "FAILED")
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
        raise _failed(mv, tracking_uri, e) from e
    for key, value in ((TAG_URI, tracking_uri), (TAG_RUN, run_id), (TAG_VERSION, number)):
        registry.set_tag(name, key, str(value), version)
    return number


def _log_run(client: Any, mv: ModelVersion) -> str:
    from mlflow.entities import Metric, Param, RunTag

    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        _create_unless_exists(lambda: client.create_experiment(EXPERIMENT))
        experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id
    lineage = mv.lineage
    source = lineage.get("source") or {}
    tags = {
        "ann.registry_uri": mv.uri,
        "ann.manifest_sha256": mv.manifest_sha256,
        "ann.source_workdir": str(source.get("workdir")),
        "ann.source_step": str(source.get("step")),
        "mlflow.source.git.commit": str((lineage.get("git") or {}).get("commit")),
    }
    run = client.create_run(experiment_id, run_name=f"{mv.name}-v{mv.version}", tags=tags)
    run_id = run.info.run_id
    step = int(source.get("step") or 0)
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), now, step)
        for key, value in (lineage.get("metrics") or {}).items()
        if isinstance(value, (int, float))
    ]
    params = [Param(key, value) for key, value in _flatten(lineage.get("config") or {})]
    for i in range(0, max(len(params), 1), _PARAMS_PER_CALL):
        client.log_batch(
            run_id,
            metrics=metrics if i == 0 else [],
            params=params[i : i + _PARAMS_PER_CALL],
            tags=[RunTag("ann.kind", "registry-version")] if i == 0 else [],
        )
    return run_id


def _code(error: Exception) -> str | None:
    """MLflow's error code (RESOURCE_ALREADY_EXISTS, ...), if the error carries one."""
    return getattr(error, "error_code", None)


def _create_unless_exists(create: Callable[[], Any]) -> None:
    """Runs `create`; an object that exists already (made earlier, or by another writer just
    now) is what was wanted."""
    try:
        create()
    except Exception as e:
        if _code(e) != "RESOURCE_ALREADY_EXISTS":
            raise


def _require_mirrored(mv: ModelVersion, tracking_uri: str) -> int:
    number = mirrored_version(mv, tracking_uri)
    if number is None:
        raise MirrorError(
            f"{mv.uri} was not mirrored into MLflow at {tracking_uri}; mirror it first: "
            f"python -m ann.registry mirror {mv.uri} --mlflow_uri={tracking_uri}"
        )
    return number


def set_alias(registry: Registry, name: str, alias: str, version: int, tracking_uri: str) -> None:
    """Points `alias` at the MLflow version mirrored from ann's `version` (already aliased)."""
    mv = registry.get_version(name, version)
    number = _require_mirrored(mv, tracking_uri)
    client = _client(tracking_uri)
    try:
        client.set_registered_model_alias(name, alias, str(number))
    except Exception as e:
        raise _failed(mv, tracking_uri, e) from e


def delete_alias(name: str, alias: str, tracking_uri: str) -> None:
    """Deletes `alias` in MLflow too (already deleted in ann's registry)."""
    client = _client(tracking_uri)
    try:
        client.delete_registered_model_alias(name, alias)
    except Exception as e:
        if _code(e) == "RESOURCE_DOES_NOT_EXIST":
            return  # never mirrored, or deleted there already
        raise MirrorError(
            f"deleting alias {alias!r} of {name!r} in MLflow at {tracking_uri} failed: {e}"
        ) from e


def set_tag(
    registry: Registry, name: str, key: str, value: str, version: int | None, tracking_uri: str
) -> None:
    """Sets a model tag, or a version tag on the mirrored version, in MLflow too."""
    client = _client(tracking_uri)
    if version is None:
        try:
            client.set_registered_model_tag(name, key, value)
        except Exception as e:
            hint = "; mirror a version of it first" if _code(e) == "RESOURCE_DOES_NOT_EXIST" else ""
            raise MirrorError(
                f"tagging {name!r} in MLflow at {tracking_uri} failed: {e}{hint}"
            ) from e
        return
    mv = registry.get_version(name, version)
    number = _require_mirrored(mv, tracking_uri)
    try:
        client.set_model_version_tag(name, str(number), key, value)
    except Exception as e:
        raise _failed(mv, tracking_uri, e) from e
