"""The one way a model spec becomes an export directory on disk, for every command that takes
one (serving's `--model`, `config.init_from`, the registry's `resolve`):

- a registry URI, `models:/NAME/3`, `models:/NAME@ALIAS` or `models:/NAME/latest`, in the
  registry at `registry` (default `$ANN_REGISTRY`, else `./registry`): the version's read-only
  copy, with the manifest sha256 recorded at registration to load it against;
- an export directory (`ann export`, holding manifest.json): itself.
"""

from __future__ import annotations

import dataclasses
import os

from ann import artifact
from ann.registry.core import (
    URI_SCHEME,
    ModelVersion,
    Registry,
    RegistryError,
    files_gone,
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

    def load(self) -> artifact.Model:
        """Loads the export, checking every file's sha256 (and the recorded manifest hash);
        raises artifact.IntegrityError (a ValueError) on any mismatch."""
        return artifact.load(self.path, self.manifest_sha256)


def resolve(spec: str, registry: str | None = None, has_flag: bool = True) -> Resolved:
    """Resolves a registry URI in `registry` (default `default_root()`) or an export directory.
    `has_flag`: whether the command has a --registry flag to name (`init_from` has none).

    Raises RegistryError with one line: no registry there, no such model, version or alias, a
    version whose files were removed, a malformed URI, or a directory that is not an export.
    Never creates or changes a file."""
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
        return Resolved(spec, mv.path, mv.manifest_sha256, mv)
    give = (
        "give an export directory (ann export) or a registry URI models:/NAME/VERSION, "
        "models:/NAME@ALIAS or models:/NAME/latest"
    )
    why = artifact.not_an_export(spec, give)
    if why is not None:
        raise RegistryError(why)
    return Resolved(spec, os.path.abspath(spec), None, None)
