"""The one way a model spec becomes an export directory on disk, for every command that takes
one (serving's `--model`, `config.init_from`, the registry's `resolve`):

- a registry URI, `models:/NAME/3`, `models:/NAME@ALIAS` or `models:/NAME/latest`, in the
  registry at `registry` (default `$ANN_REGISTRY`, else `./registry`): the version's read-only
  copy, with the manifest sha256 recorded at registration to load it against;
- an export directory (`ann export`, holding manifest.json): itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from ann import arguments, artifact
from ann.registry.core import (
    IDENTITY,
    NAME,
    URI_SCHEME,
    ModelVersion,
    Registry,
    RegistryError,
    files_gone,
    identity,
    uri_meant,
)


@dataclasses.dataclass(frozen=True)
class Resolved:
    """What a spec names."""

    spec: str  # as given
    path: str  # the absolute export directory
    # The manifest's sha256 recorded at registration, checked when loading; None for a bare
    # export directory (its manifest is what it is, the files are still checked against it).
    manifest_sha256: str | None
    version: ModelVersion | None  # the registry version a URI resolved to; None for a directory
    # A directory's `registry.json` (a registered copy taken out of the registry), read and
    # checked once, by `resolve` (`core.identity`); None for a URI or a plain export.
    record: dict[str, Any] | None = None

    def load(self) -> artifact.Model:
        """Loads the export, checking every file's sha256 (and the recorded manifest hash);
        raises artifact.IntegrityError (a ValueError) on any mismatch."""
        return artifact.load(self.path, self.manifest_sha256)

    def registered_as(self, manifest_sha256: str) -> tuple[str, int] | None:
        """(name, version) of the registry version this is: the URI's, or for a directory
        the one its `registry.json` records (a registered copy taken out of the registry,
        e.g. baked into an image from `ann registry resolve`); None for a plain export.
        `manifest_sha256`: the digest of the manifest bytes read. Raises IntegrityError for a
        registered copy whose manifest is not the one registered (its `registry.json` was
        checked by `resolve`)."""
        if self.version is not None:
            return self.version.name, self.version.version
        record = self.record
        if record is None:
            return None
        check_record(self.path, record, manifest_sha256)
        return record["name"], record["version"]

    def served_name(self, manifest_name: str, manifest_sha256: str) -> tuple[str, str]:
        """(name, version) every command names this model by (`ann serve`, `ann monitor`,
        `ann report`): the registry version's (`registered_as`), else the manifest's name and
        the first 12 hex digits of its sha256 (`export_version`)."""
        registered = self.registered_as(manifest_sha256)
        if registered is None:
            return manifest_name, export_version(manifest_sha256)
        return registered[0], str(registered[1])


def check_record(path: str, record: dict[str, Any], manifest_sha256: str) -> None:
    """Raises IntegrityError where a registered copy's `registry.json` (`record`, checked by
    `identity`) does not hold the sha256 of its manifest's bytes: one of the two files was
    changed after the copy was made."""
    if record["manifest_sha256"] != manifest_sha256:
        raise artifact.IntegrityError(
            f"{path}: {IDENTITY} and {artifact.MANIFEST} disagree ({IDENTITY} records "
            f"{record['name']} version {record['version']} with the manifest sha256 "
            f"{record['manifest_sha256']}, {artifact.MANIFEST}'s is {manifest_sha256}): one of "
            "them was modified after the copy was made; copy the version again from the "
            "registry (ann registry resolve)"
        )


def check_registered(mv: ModelVersion) -> None:
    """Raises RegistryError where the `registry.json` in a version's directory does not record
    that version (its name, number and manifest sha256 in the database): one edited in the
    registry (a "version": 2 in version 1's) passed `resolve`, and a copy of the directory was
    then served as the version it named. A version registered before the record existed has
    none, and passes."""
    record = identity(mv.path)
    if record is None:
        return
    found = (record["name"], record["version"], record["manifest_sha256"])
    if found == (mv.name, mv.version, mv.manifest_sha256):
        return
    field = ("name", "version", "manifest_sha256")[
        [a != b for a, b in zip(found, (mv.name, mv.version, mv.manifest_sha256))].index(True)
    ]
    expected = {"name": mv.name, "version": mv.version, "manifest_sha256": mv.manifest_sha256}
    raise RegistryError(
        f'{os.path.join(mv.path, IDENTITY)}: "{field}" is {json.dumps(record[field])}, but '
        f"the registry's {mv.uri} has {json.dumps(expected[field])}: the file was modified "
        f"after register; write back {json.dumps(expected)} (chmod u+w first), or register "
        "the export again"
    )


def export_version(manifest_sha256: str) -> str:
    """The version an unregistered export directory is named by: its manifest's first 12 hex
    digits."""
    return manifest_sha256[:12]


def looks_exported(version: str) -> bool:
    """Whether a version known only by its text (a request log's) has `export_version`'s form,
    12 lowercase hex digits, so it names an export directory, not a registry version, even
    when all digits ("012345678901" is no version 12345678901). Where the served model is at
    hand, its origin says it instead (`ann.serve.dataplane.ServedModel.registry_version`)."""
    return len(version) == 12 and all(c in "0123456789abcdef" for c in version)


def version_order(version: str, registered: bool | None = None) -> tuple[int, int, str]:
    """The sort key every listing of a model's versions sorts by: registry version numbers
    first, by number ("2" before "10"; as text "10" came first), then the rest (an export
    directory's 12 hex digits, "" for a version not yet known) by text. `registered`: whether
    `version` is a registry number, from its origin where that is at hand
    (`ann.serve.dataplane.ServedModel.registry_version`); None judges by its text
    (`looks_exported`, `arguments.version_number`), as for a request log's."""
    if registered is None:
        registered = not looks_exported(version)
    number = arguments.version_number(version) if registered else None
    return (0, number, "") if number is not None else (1, 0, version)


# What a spec that names no model should be, as `resolve` and `not_a_model` end their refusals.
GIVE = (
    "give an export directory (ann export) or a registry URI models:/NAME/VERSION, "
    "models:/NAME@ALIAS or models:/NAME/latest"
)


def not_a_model(spec: str) -> str | None:
    """Why `spec`, a path (not a `models:/` URI), names no export, in `resolve`'s one line
    (`artifact.not_an_export`: it does not exist, is a file, or a directory without a
    manifest), from the file system alone; None for a registry URI (the registry says, at
    `resolve`) or a directory holding a manifest (its checks come when it is read). What a
    command checks before what depends on the rest of the machine (`ann serve`'s ports)."""
    if spec.startswith(URI_SCHEME):
        return None
    why = artifact.not_an_export(spec, GIVE)
    if why is not None and NAME.match(spec) and not os.path.exists(spec):
        # A name alone, as MLflow and the registry's own commands write models: the URI.
        why += f"; for a registered model {spec!r}: {uri_meant(spec)}"
    return why


def resolve(spec: str, registry: str | None = None, has_flag: bool = True) -> Resolved:
    """Resolves a registry URI in `registry` (default `default_root()`) or an export directory.
    `has_flag`: whether the command has a --registry flag to name (`init_from` has none).

    Raises RegistryError with one line: no registry there, no such model, version or alias, a
    version whose files were removed, a malformed URI, a directory that is not an export, or a
    registered copy whose `registry.json` cannot be read or breaks the name and version rules
    `register` enforces (its name and version name served models and report directories), or
    an empty spec; TypeError for a spec that is not a str or path (None raised AttributeError).
    Never creates or changes a file."""
    spec = artifact.path_argument(spec, "spec", "an export directory or a registry URI as a str")
    if spec.startswith(URI_SCHEME):
        store = Registry.at(registry)
        if registry is None and not store.exists():  # no flag named it: say where it looked
            flag = ", or the command's --registry," if has_flag else ""
            raise RegistryError(
                f"no registry at {store.where} for {spec}; set $ANN_REGISTRY{flag} to its directory"
            )
        mv = store.resolve(spec)
        if files_gone(mv.path):  # removed by hand: the record outlived the files
            # An alias can be moved; a number or `latest` names this version for good.
            move = f"point the alias at another version (ann registry alias {mv.name} ALIAS N), "
            raise RegistryError(
                f"{spec} is {mv.name} version {mv.version}, whose files at {mv.path} are gone "
                f"(removed outside the registry); {move if '@' in spec else ''}register the "
                f"export again, or delete the version (ann registry delete {mv.name} "
                f"{mv.version})"
            )
        check_registered(mv)
        return Resolved(spec, mv.path, mv.manifest_sha256, mv)
    why = not_a_model(spec)
    if why is not None:
        raise RegistryError(why)
    path = os.path.abspath(spec)
    record = identity(path)
    if record is not None:  # here, not after loading: a second, not JAX's import
        _, raw = artifact.read_manifest_bytes(path)
        check_record(path, record, artifact.sha256_bytes(raw))
    return Resolved(spec, path, None, None, record)
