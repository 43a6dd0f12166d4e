"""A model registry in MLflow's words, on SQLite (standard library) and a directory.

    REGISTRY/
      registry.db                 registered models, versions, aliases, tags, lineage
      artifacts/NAME/VERSION/     an export, copied in, verified, made read-only

The command line (`ann registry --help`) is in `__main__.py`.

Modules: `core` (the `Registry`, `ModelVersion`, `RegistryError`), `spec` (`resolve`: the one
way a registry URI or an export directory becomes a directory to load, used by serving,
`init_from` and the command line), `mlflow_mirror` (copies versions, aliases and tags into an
MLflow tracking server), `__main__` (the command line, the only module that imports both the
core and the mirror).

With `--mlflow_uri` (default `$ANN_MLFLOW_URI`), register, alias, tag and delete are mirrored
into that MLflow tracking server too; `mirror` copies an existing version there.

A registered model has integer versions 1, 2, ...; `delete` removes one (its files and tags),
and its number is never given again (the row stays as a tombstone); an alias (`champion`,
`challenger`) points at one version and can be moved; tags are free key/value pairs on a model
or a version. URIs:
`models:/NAME/3`, `models:/NAME@champion`, `models:/NAME/latest`. Each version keeps its
lineage from the export's manifest: the run and step (and the validation metric that chose
it), the config, the data (which split validated, which tested), the metrics labelled by split
(`val/...` validation, `eval/...` test) and the git commit.

Only `register` creates a registry: `list`, `versions`, `resolve`, `show` (and the server and
`init_from`, through `resolve`) never create, migrate or change a file, and on a path holding no
registry every command says "no registry at PATH". `register` copies only the manifest and the
files it lists, each checked on the way by `ann.artifact`. The command line checks the command,
its arguments and every flag before the registry is opened.
"""

from ann.registry.core import (
    ALIAS,
    NAME,
    URI,
    URI_SCHEME,
    ModelVersion,
    Registry,
    RegistryError,
    default_root,
)
from ann.registry.spec import Resolved, resolve

__all__ = [
    "ALIAS",
    "NAME",
    "URI",
    "URI_SCHEME",
    "ModelVersion",
    "Registry",
    "RegistryError",
    "Resolved",
    "default_root",
    "resolve",
]
