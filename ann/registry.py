"""A model registry in MLflow's words, on SQLite (standard library) and a directory.

    REGISTRY/
      registry.db                 registered models, versions, aliases, tags, lineage
      artifacts/NAME/VERSION/     an export, copied in, verified, made read-only

    python -m ann.registry --registry=DIR register EXPORT_DIR [--name=digits] [--alias=champion]
    python -m ann.registry --registry=DIR list
    python -m ann.registry --registry=DIR versions NAME
    python -m ann.registry --registry=DIR alias NAME ALIAS VERSION     (--delete to remove)
    python -m ann.registry --registry=DIR tag NAME KEY VALUE [--version=N]
    python -m ann.registry --registry=DIR resolve models:/NAME@champion
    python -m ann.registry --registry=DIR show models:/NAME/3
    python -m ann.registry --registry=DIR mirror models:/NAME/3 --mlflow_uri=URI

With `--mlflow_uri` (default `$ANN_MLFLOW_URI`), register, alias and tag are mirrored into that
MLflow tracking server too (`ann/mlflow_mirror.py`); `mirror` copies an existing version there.

A registered model has integer versions 1, 2, ...; an alias (`champion`, `challenger`) points
at one version and can be moved; tags are free key/value pairs on a model or a version. URIs:
`models:/NAME/3`, `models:/NAME@champion`, `models:/NAME/latest`. Each version keeps its
lineage from the export's manifest: the run and step (and the validation metric that chose
it), the config, the data (which split validated, which tested), the metrics labelled by split
(`val/...` validation, `eval/...` test) and the git commit. Versions are allocated inside
`BEGIN IMMEDIATE` transactions, so writers in separate processes never get the same number.

Only `register` creates a registry: `list`, `versions`, `resolve`, `show` (and the server and
`init_from`, through `Registry`) never create, migrate or change a file, and on a path holding no
registry every command says "no registry at PATH". `register` copies only the manifest and the
files it lists, each checked on the way by `ann.artifact`. The command line checks the command,
its arguments and every flag (`check_command`) before the registry is opened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import re
import shutil
import sqlite3
import stat
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ann import artifact

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
MAX_TAG_KEY, MAX_TAG_VALUE = 250, 5000  # MLflow's limits for tag keys and values
MAX_DESCRIPTION = 5000
URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS registered_models (
  name TEXT PRIMARY KEY,
  description TEXT NOT NULL DEFAULT '',
  created REAL NOT NULL,
  updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS model_versions (
  name TEXT NOT NULL REFERENCES registered_models(name),
  version INTEGER NOT NULL,
  path TEXT NOT NULL,
  manifest_sha256 TEXT NOT NULL,
  source TEXT NOT NULL,
  lineage TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '',
  created REAL NOT NULL,
  PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS aliases (
  name TEXT NOT NULL,
  alias TEXT NOT NULL,
  version INTEGER NOT NULL,
  PRIMARY KEY (name, alias),
  FOREIGN KEY (name, version) REFERENCES model_versions(name, version)
);
-- version 0 holds the registered model's own tags
CREATE TABLE IF NOT EXISTS tags (
  name TEXT NOT NULL,
  version INTEGER NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (name, version, key)
);
"""


class RegistryError(ValueError):
    """A registry request that cannot be met; the message says which name, version or alias."""


@dataclasses.dataclass
class ModelVersion:
    name: str
    version: int
    path: str  # absolute path of the read-only export
    manifest_sha256: str
    source: str  # the export directory it was copied from
    lineage: dict[str, Any]  # run, step, config, data, metrics, git, versions
    description: str
    created: float
    aliases: list[str]
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _lineage(manifest: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("source", "config", "data", "metrics", "git", "versions", "platforms", "created")
    return {k: manifest.get(k) for k in keys}


def _make_read_only(path: str) -> None:
    for root, _, files in os.walk(path):
        for f in files:
            os.chmod(os.path.join(root, f), stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    os.chmod(path, 0o555)


def _remove(path: str) -> None:
    """Removes a directory this registry made read-only."""
    if os.path.isdir(path):
        os.chmod(path, 0o755)
        shutil.rmtree(path)


class Registry:
    """The registry in `root`. Opening one touches nothing on disk: reading needs an existing
    registry (RegistryError "no registry at ROOT" otherwise) and never creates, migrates or
    changes a file; only `register` creates the directory and database."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.artifacts = os.path.join(self.root, "artifacts")
        self.db_path = os.path.join(self.root, "registry.db")

    def _create(self) -> None:
        """Creates the directory and the database (idempotent, safe across processes)."""
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise RegistryError(f"--registry={self.root} is a file, not a registry directory")
        os.makedirs(self.artifacts, exist_ok=True)
        db = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # readers do not wait for a writer
            db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise RegistryError(f"{self.db_path} is not an ann registry database ({e})") from e
        finally:
            db.close()

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One short-lived connection per operation (safe across threads and processes) to an
        existing database: `mode=rw` never creates the file. SQLite removes the WAL files it
        makes for a read when the connection closes; on a read-only mount, where it cannot make
        them, the database is opened immutable (nobody can write it there)."""
        if not os.path.isfile(self.db_path):
            raise RegistryError(
                f"no registry at {self.root}; give --registry=DIR (or $ANN_REGISTRY) of an "
                "existing one, or `register` an export to create it"
            )
        writable = os.access(self.root, os.W_OK) and os.access(self.db_path, os.W_OK)
        mode = "mode=rw" if writable else "mode=ro&immutable=1"
        try:
            db = sqlite3.connect(
                f"{pathlib.Path(self.db_path).as_uri()}?{mode}",
                uri=True,
                timeout=60,
                isolation_level=None,
            )
        except sqlite3.Error as e:
            raise RegistryError(f"cannot open {self.db_path} ({e})") from e
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        except sqlite3.DatabaseError as e:
            raise RegistryError(
                f"{self.db_path} cannot be used as an ann registry database ({e})"
            ) from e
        finally:
            db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds SQLite's write lock from its first statement."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- writing -------------------------------------------------------------------------------

    def register(
        self,
        export_dir: str,
        name: str | None = None,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        aliases: Sequence[str] = (),
    ) -> ModelVersion:
        """Copies a verified export in as the next version of `name` (default: its manifest's).

        Only the manifest and the files it lists are copied, each checked on the way (see
        `ann.artifact`): an export whose manifest names a path outside it, a symbolic link, a
        special file or a file of another size or sha256 is refused, and nothing is registered.
        Creates the registry if it does not exist yet."""
        manifest, raw = artifact.read_manifest_bytes(export_dir)
        name = name or manifest["name"]
        self._check_name(name)
        for alias in aliases:
            self._check_alias(alias)
        for key, value in (tags or {}).items():
            self._check_tag(key, value)
        if len(description) > MAX_DESCRIPTION:
            raise RegistryError(
                f"the description has {len(description)} characters, more than {MAX_DESCRIPTION}"
            )
        self._create()
        incoming = os.path.join(self.artifacts, f".incoming-{uuid.uuid4().hex}")
        try:
            os.mkdir(incoming)
            with open(os.path.join(incoming, artifact.MANIFEST), "xb") as f:
                f.write(raw)
            # Each file is hashed once, as it is copied: the bytes written are the bytes checked.
            for file_name in manifest["files"]:
                artifact.copy_verified(export_dir, manifest, file_name, incoming)
            manifest_sha = artifact.sha256_bytes(raw)
            now = time.time()
            with self._write() as db:
                db.execute(
                    "INSERT INTO registered_models (name, created, updated) VALUES (?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET updated = excluded.updated",
                    (name, now, now),
                )
                (last,) = db.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM model_versions WHERE name = ?", (name,)
                ).fetchone()
                version = last + 1
                rel = os.path.join("artifacts", name, str(version))
                db.execute(
                    "INSERT INTO model_versions (name, version, path, manifest_sha256, source, "
                    "lineage, description, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        version,
                        rel,
                        manifest_sha,
                        os.path.abspath(export_dir),
                        json.dumps(_lineage(manifest)),
                        description,
                        now,
                    ),
                )
                for key, value in (tags or {}).items():
                    self._put_tag(db, name, version, key, value)
                for alias in aliases:
                    self._put_alias(db, name, alias, version)
                target = os.path.join(self.root, rel)
                # Left by a writer that died between the rename and its commit: not in the db.
                _remove(target)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.rename(incoming, target)
                _make_read_only(target)
        finally:
            _remove(incoming)
        return self.get_version(name, version)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Points `alias` at `version` of `name`, moving it if it pointed elsewhere."""
        self._check_alias(alias)
        with self._write() as db:
            self._require_version(db, name, version)
            self._put_alias(db, name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        with self._write() as db:
            cursor = db.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
            if cursor.rowcount == 0:
                raise RegistryError(f"model {name!r} has no alias {alias!r}")

    def set_tag(self, name: str, key: str, value: str, version: int | None = None) -> None:
        """Tags the registered model, or one version of it."""
        self._check_tag(key, value)
        with self._write() as db:
            if version is None:
                self._require_model(db, name)
            else:
                self._require_version(db, name, version)
            self._put_tag(db, name, version or 0, key, value)

    def delete_tag(self, name: str, key: str, version: int | None = None) -> None:
        with self._write() as db:
            db.execute(
                "DELETE FROM tags WHERE name = ? AND version = ? AND key = ?",
                (name, version or 0, key),
            )

    # -- reading -------------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        """Every registered model: name, latest version, aliases, tags, description."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT m.name, m.description, m.created, m.updated, MAX(v.version) AS latest "
                "FROM registered_models m LEFT JOIN model_versions v ON v.name = m.name "
                "GROUP BY m.name ORDER BY m.name"
            ).fetchall()
            return [
                {
                    **dict(row),
                    "aliases": self._aliases(db, row["name"]),
                    "tags": self._tags(db, row["name"], 0),
                }
                for row in rows
            ]

    def versions(self, name: str) -> list[ModelVersion]:
        with self._connect() as db:
            self._require_model(db, name)
            rows = db.execute(
                "SELECT * FROM model_versions WHERE name = ? ORDER BY version", (name,)
            ).fetchall()
            return [self._version(db, row) for row in rows]

    def get_version(self, name: str, version: int) -> ModelVersion:
        with self._connect() as db:
            return self._version(db, self._require_version(db, name, version))

    def resolve(self, uri: str) -> ModelVersion:
        """`models:/NAME/3`, `models:/NAME@ALIAS` or `models:/NAME/latest` -> the version."""
        match = URI.match(uri)
        if not match:
            raise RegistryError(
                f"model URI {uri!r} is not models:/NAME/VERSION, models:/NAME@ALIAS or "
                "models:/NAME/latest"
            )
        name, version, alias = match["name"], match["version"], match["alias"]
        with self._connect() as db:
            self._require_model(db, name)
            if alias is not None:
                row = db.execute(
                    "SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias)
                ).fetchone()
                if row is None:
                    raise RegistryError(
                        f"model {name!r} has no alias {alias!r}; its aliases: "
                        f"{', '.join(self._aliases(db, name)) or 'none'}"
                    )
                number = row["version"]
            elif version == "latest":
                (number,) = db.execute(
                    "SELECT MAX(version) FROM model_versions WHERE name = ?", (name,)
                ).fetchone()
                if number is None:
                    raise RegistryError(f"model {name!r} has no versions yet")
            elif version.isdigit():
                number = int(version)
            else:
                raise RegistryError(f"model URI {uri!r}: version {version!r} is not an integer")
            return self._version(db, self._require_version(db, name, number))

    def load(self, uri: str) -> artifact.Model:
        """Resolves `uri` and loads it, checking the manifest's hash recorded at registration."""
        mv = self.resolve(uri)
        return artifact.load(mv.path, mv.manifest_sha256)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _check_name(name: str) -> None:
        if not NAME.match(name):
            raise RegistryError(
                f"model name {name!r} must be letters, digits, '_', '.' or '-' (at most 128), "
                "starting with a letter or digit"
            )

    @staticmethod
    def _check_alias(alias: str) -> None:
        if not ALIAS.match(alias) or alias == "latest":
            raise RegistryError(
                f"alias {alias!r} must start with a letter or '_', hold letters, digits, '_' or "
                "'-', and not be 'latest'"
            )

    @staticmethod
    def _check_tag(key: str, value: str) -> None:
        # MLflow's limits, so that every tag can be mirrored.
        if not 0 < len(key) <= MAX_TAG_KEY or key != key.strip():
            raise RegistryError(
                f"tag key {key!r} must be 1 to {MAX_TAG_KEY} characters, without surrounding spaces"
            )
        if len(value) > MAX_TAG_VALUE:
            raise RegistryError(
                f"tag {key!r}: the value has {len(value)} characters, more than {MAX_TAG_VALUE}"
            )

    @staticmethod
    def _require_model(db: sqlite3.Connection, name: str) -> None:
        if db.execute("SELECT 1 FROM registered_models WHERE name = ?", (name,)).fetchone():
            return
        known = [r[0] for r in db.execute("SELECT name FROM registered_models ORDER BY name")]
        raise RegistryError(
            f"no registered model {name!r}; registered: {', '.join(known) or 'none'}"
        )

    def _require_version(self, db: sqlite3.Connection, name: str, version: int) -> sqlite3.Row:
        self._require_model(db, name)
        row = db.execute(
            "SELECT * FROM model_versions WHERE name = ? AND version = ?", (name, int(version))
        ).fetchone()
        if row is None:
            known = [
                str(r[0])
                for r in db.execute(
                    "SELECT version FROM model_versions WHERE name = ? ORDER BY version", (name,)
                )
            ]
            raise RegistryError(
                f"model {name!r} has no version {version}; versions: {', '.join(known) or 'none'}"
            )
        return row

    @staticmethod
    def _put_alias(db: sqlite3.Connection, name: str, alias: str, version: int) -> None:
        db.execute(
            "INSERT INTO aliases (name, alias, version) VALUES (?, ?, ?) "
            "ON CONFLICT(name, alias) DO UPDATE SET version = excluded.version",
            (name, alias, version),
        )

    @staticmethod
    def _put_tag(db: sqlite3.Connection, name: str, version: int, key: str, value: str) -> None:
        db.execute(
            "INSERT INTO tags (name, version, key, value) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name, version, key) DO UPDATE SET value = excluded.value",
            (name, version, str(key), str(value)),
        )

    @staticmethod
    def _aliases(db: sqlite3.Connection, name: str, version: int | None = None) -> list[str]:
        if version is None:
            rows = db.execute(
                "SELECT alias, version FROM aliases WHERE name = ? ORDER BY alias", (name,)
            )
            return [f"{r['alias']}={r['version']}" for r in rows]
        rows = db.execute(
            "SELECT alias FROM aliases WHERE name = ? AND version = ? ORDER BY alias",
            (name, version),
        )
        return [r["alias"] for r in rows]

    @staticmethod
    def _tags(db: sqlite3.Connection, name: str, version: int) -> dict[str, str]:
        rows = db.execute(
            "SELECT key, value FROM tags WHERE name = ? AND version = ? ORDER BY key",
            (name, version),
        )
        return {r["key"]: r["value"] for r in rows}

    def _version(self, db: sqlite3.Connection, row: sqlite3.Row) -> ModelVersion:
        return ModelVersion(
            name=row["name"],
            version=row["version"],
            path=os.path.join(self.root, row["path"]),
            manifest_sha256=row["manifest_sha256"],
            source=row["source"],
            lineage=json.loads(row["lineage"]),
            description=row["description"],
            created=row["created"],
            aliases=self._aliases(db, row["name"], row["version"]),
            tags=self._tags(db, row["name"], row["version"]),
        )


# -- command line -------------------------------------------------------------------------------


def _summary(mv: ModelVersion) -> str:
    metrics = mv.lineage.get("metrics") or {}
    # Validation (what chose the step) first, then test (`eval/`): sorted puts eval before val.
    order = sorted(metrics, key=lambda k: (not k.startswith("val/"), k))
    shown = " ".join(f"{k}={metrics[k]:.4g}" for k in order)
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mv.created))
    source = mv.lineage.get("source") or {}
    return (
        f"{mv.uri}  created {created}  aliases [{', '.join(mv.aliases)}]  "
        f"run {source.get('workdir')} step {source.get('step')}  {shown}"
    )


def _parse_tags(items: Sequence[str]) -> dict[str, str]:
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise RegistryError(f"--tag={item!r} must be KEY=VALUE")
        Registry._check_tag(key, value)
        tags[key] = value
    return tags


MLFLOW_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")


def check_mlflow_uri(uri: str) -> None:
    """Refuses a tracking URI MLflow could not use, before anything is written anywhere."""
    why = ""
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme.split("+")[0]  # postgresql+psycopg2://...
    if not uri.isprintable() or any(c.isspace() for c in uri):
        why = "holds spaces or control characters"
    elif scheme not in MLFLOW_SCHEMES:
        why = f"has the scheme {parts.scheme!r}, not one of {', '.join(MLFLOW_SCHEMES)}"
    elif scheme in ("http", "https"):
        try:
            port = parts.port
        except ValueError:
            port, why = None, "has a port outside 1-65535"
        if not why and not parts.hostname:
            why = "names no host"
        elif not why and port == 0:
            why = "has a port outside 1-65535"
    if why:
        raise RegistryError(
            f"--mlflow_uri={uri!r} {why}; give the tracking server as http(s)://HOST:PORT "
            "(or an MLflow store URI: file:, sqlite:, postgresql:, mysql:, mssql:, databricks)"
        )


USAGE = {
    "register": "EXPORT_DIR",
    "list": "",
    "versions": "NAME",
    "alias": "NAME ALIAS VERSION (NAME ALIAS with --delete)",
    "tag": "NAME KEY VALUE",
    "resolve": "URI",
    "show": "URI",
    "mirror": "URI",
}
READ_ONLY = ("list", "versions", "resolve", "show")
# Flags that only one command reads: given to another, they would be silently ignored.
ONLY_FOR = {
    "name": "register",
    "description": "register",
    "tag": "register",
    "alias": "register",
    "version": "tag",
    "delete": "alias",
}


def check_command(command: str, args: Sequence[str], f: Any) -> None:
    """Checks the command, its arguments and every flag before the registry is opened; raises
    RegistryError with one line that names the fix."""
    counts = {
        "register": 1,
        "list": 0,
        "versions": 1,
        "alias": 2 if f.delete else 3,
        "tag": 3,
        "resolve": 1,
        "show": 1,
        "mirror": 1,
    }
    if command not in counts or len(args) != counts[command]:
        raise RegistryError(
            f"usage: python -m ann.registry --registry=DIR "
            f"{'|'.join(USAGE)} ARGS (see `python -m ann.registry --help`); got "
            f"{[command, *args] if command else []}"
            + (f"; {command} takes {USAGE[command] or 'no arguments'}" if command in USAGE else "")
        )
    for flag, owner in ONLY_FOR.items():
        value = getattr(f, flag)
        if command != owner and value is not None and value is not False and value != []:
            raise RegistryError(f"--{flag} is for `{owner}` only; drop it from `{command}`")
    if not f.registry:
        raise RegistryError("--registry is empty; give the registry directory")
    if f.name is not None:
        Registry._check_name(f.name)
    for alias in f.alias or []:
        Registry._check_alias(alias)
    _parse_tags(f.tag or [])
    if f.description is not None and len(f.description) > MAX_DESCRIPTION:
        raise RegistryError(
            f"--description has {len(f.description)} characters, more than {MAX_DESCRIPTION}"
        )
    if f.version is not None and f.version < 1:
        raise RegistryError(f"--version={f.version} must be a version number >= 1")
    if command == "alias":
        Registry._check_alias(args[1])
        if not f.delete and not (args[2].isdigit() and int(args[2]) >= 1):
            raise RegistryError(f"alias: VERSION {args[2]!r} must be a version number >= 1")
    if command in ("resolve", "show", "mirror") and not URI.match(args[0]):
        raise RegistryError(
            f"model URI {args[0]!r} is not models:/NAME/VERSION, models:/NAME@ALIAS or "
            "models:/NAME/latest"
        )
    if command == "mirror" and not f.mlflow_uri:
        raise RegistryError("mirror: give the MLflow tracking server as --mlflow_uri=URI")
    if f.mlflow_uri and command not in READ_ONLY:
        check_mlflow_uri(f.mlflow_uri)


def main(argv: list[str]) -> None:
    from absl import flags

    f = flags.FLAGS
    command, args = (argv[1], argv[2:]) if len(argv) > 1 else ("", [])
    check_command(command, args, f)
    registry = Registry(f.registry)
    mlflow_uri = f.mlflow_uri if command not in READ_ONLY else ""
    if mlflow_uri:
        from ann import mlflow_mirror
    if command == "register":
        mv = registry.register(
            args[0], f.name, f.description or "", _parse_tags(f.tag or []), f.alias or []
        )
        print(
            f"registered {args[0]} as {mv.uri}" + (f" @{','.join(mv.aliases)}" * bool(mv.aliases))
        )
        if mlflow_uri:
            number = mlflow_mirror.mirror(registry, mv.name, mv.version, mlflow_uri)
            print(f"mirrored {mv.uri} into MLflow at {mlflow_uri} as version {number}")
    elif command == "mirror":
        mv = registry.resolve(args[0])
        number = mlflow_mirror.mirror(registry, mv.name, mv.version, mlflow_uri)
        print(f"mirrored {mv.uri} into MLflow at {mlflow_uri} as version {number}")
    elif command == "list":
        for m in registry.models():
            print(
                f"{m['name']}  latest version {m['latest']}  aliases [{', '.join(m['aliases'])}]"
                f"  tags {m['tags']}"
            )
    elif command == "versions":
        for mv in registry.versions(args[0]):
            print(_summary(mv))
    elif command == "alias":
        if f.delete:
            registry.delete_alias(args[0], args[1])
            print(f"deleted alias {args[1]!r} of {args[0]!r}")
            if mlflow_uri:
                mlflow_mirror.delete_alias(args[0], args[1], mlflow_uri)
        else:
            registry.set_alias(args[0], args[1], int(args[2]))
            print(f"models:/{args[0]}@{args[1]} -> models:/{args[0]}/{int(args[2])}")
            if mlflow_uri:
                mlflow_mirror.set_alias(registry, args[0], args[1], int(args[2]), mlflow_uri)
    elif command == "tag":
        registry.set_tag(args[0], args[1], args[2], f.version)
        print(f"tagged {args[0]}{f'/{f.version}' if f.version else ''}: {args[1]}={args[2]}")
        if mlflow_uri:
            mlflow_mirror.set_tag(registry, args[0], args[1], args[2], f.version, mlflow_uri)
    elif command == "resolve":
        print(registry.resolve(args[0]).path)
    elif command == "show":
        print(json.dumps(dataclasses.asdict(registry.resolve(args[0])), indent=1, default=str))


def _run() -> None:
    from absl import flags

    flags.DEFINE_string(
        "registry", os.environ.get("ANN_REGISTRY", "registry"), "Registry directory."
    )
    flags.DEFINE_string("name", None, "register: model name (default: the export's name).")
    flags.DEFINE_string("description", None, "register: a description of the version.")
    flags.DEFINE_multi_string("tag", None, "register: KEY=VALUE tags for the version.")
    flags.DEFINE_multi_string("alias", None, "register: aliases to point at the new version.")
    flags.DEFINE_integer("version", None, "tag: tag this version (>= 1) instead of the model.")
    flags.DEFINE_boolean("delete", False, "alias: delete the alias NAME ALIAS.")
    flags.DEFINE_string(
        "mlflow_uri",
        os.environ.get("ANN_MLFLOW_URI", ""),
        "MLflow tracking server to mirror register/alias/tag into, and for `mirror`.",
    )

    from ann import cli

    # A bad flag, argument, registry or export: one line, exit 1 (RegistryError and
    # IntegrityError are ValueErrors).
    cli.run(main, errors=(ValueError, OSError))


if __name__ == "__main__":
    _run()
