"""The registry itself: `Registry` (SQLite database and read-only artifact directories),
`ModelVersion`, `RegistryError` and the name, alias and URI rules. See `ann/registry/__init__.py`
for the layout and the command line.

Versions are allocated inside `BEGIN IMMEDIATE` transactions, so writers in separate processes
never get the same number. Opening a `Registry` touches nothing on disk: reading needs an
existing registry and never creates, migrates or changes a file; only `register` creates one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import numbers
import os
import pathlib
import re
import shutil
import sqlite3
import stat
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from ann import arguments, artifact, atomic, directory_kind

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
VERSION_LIKE = re.compile(r"^[vV][0-9]+$")  # MLflow's `_REGISTERED_MODEL_ALIAS_VERSION_REGEX`
MAX_TAG_KEY, MAX_TAG_VALUE = 250, 5000  # MLflow's limits for tag keys and values
MAX_DESCRIPTION = 5000
# What `_check_name` and `identity` say of a name NAME refuses.
NAME_RULE = "letters, digits, '_', '.' or '-' (at most 128), starting with a letter or digit"
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A spec starting with it is a registry URI, anything else a directory.
URI_SCHEME = artifact.REGISTRY_URI_SCHEME
URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))$")


def uri_meant(text: str) -> str | None:
    """The registry URI `text` most likely meant, or None: a model's name alone (`digits`) or
    without a version (`models:/digits`) is `models:/digits/latest`, as MLflow's
    `models:/NAME/latest`; a URI without its scheme or its slash (`digits/1`,
    `models:digits@prod`) is the URI with them; anything else (a name NAME refuses) None."""
    body = re.sub(r"^models:/?", "", text)
    if NAME.fullmatch(body):
        return f"{URI_SCHEME}/{body}/latest"
    meant = f"{URI_SCHEME}/{body}"
    match = URI.fullmatch(meant)
    if not match or not NAME.fullmatch(match["name"]):
        return None
    version = match["version"]  # a path's `exports/x` is no version, nor `01` (refused)
    numbered = version is not None and arguments.version_number(version) is not None
    return meant if version in (None, "latest") or numbered else None


def not_a_uri(uri: str, said: str = "") -> str:
    """The refusal of `uri`, not of a registry URI's form, with `said` (what it is instead:
    an export directory) or the URI it likely meant (`uri_meant`)."""
    meant = uri_meant(uri) if not said else None
    return (
        f"model URI {uri!r} is not models:/NAME/VERSION, models:/NAME@ALIAS or "
        f"models:/NAME/latest{said}" + (f"; did you mean {meant}?" if meant else "")
    )


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


def default_root() -> str:
    """The registry directory when none is given: `$ANN_REGISTRY` (unless empty; a leading `~`
    expanded as in a path flag: a Dockerfile's `ENV ANN_REGISTRY=~/r` is not expanded by any
    shell), else `./registry`. A `~user` of no user stays as it is: `Registry.at` refuses it
    where a command reads it (this is a flag's default too, read as the flags are defined)."""
    value = os.environ.get("ANN_REGISTRY") or "registry"
    try:
        return arguments.home(value, "$ANN_REGISTRY")
    except ValueError:
        return value


def default_origin() -> str:
    """Where `default_root()` came from, as a `Registry`'s `origin`: "$ANN_REGISTRY" when the
    variable is set (not empty), else "default"."""
    return "$ANN_REGISTRY" if os.environ.get("ANN_REGISTRY") else "default"


TABLES = ("registered_models", "model_versions", "aliases", "tags")  # what SCHEMA creates
# A deleted version keeps its row with this path (a tombstone): its number stays taken, as
# MLflow never reuses one, so models:/NAME/3 can never name two different models. Older ann
# versions read such a row as a version whose files are gone (one line), not as another model.
DELETED = ""
LIVE = "path != ''"  # the SQL condition for the versions that were not deleted


def _entries(path: str) -> list[str]:
    """The entries of the directory `path` that a registry does not make itself (registry.db
    and its journals, artifacts/, a staged copy, a probe), sorted: [] when there are none."""
    own = ("registry.db", "artifacts", ".ann-")  # another register may be creating it now
    return [n for n in directory_kind.listing(path) if not n.startswith(own)]


# The `origin` of a root given from Python (`Registry(root)`, the constructor's default): its
# messages name the method's arguments (`root='regs'`, `allow_duplicate=True`) and methods
# (`set_alias(...)`), where a command's (`Registry.at`) name its flags and subcommands.
PYTHON = "python"
# A flag of `ann registry` a message names, as the Python argument it is (the others keep
# their name: `--allow_duplicate` is `allow_duplicate=True`).
ARGUMENTS = {"registry": "root"}


class RegistryError(ValueError):
    """A registry request that cannot be met; the message says which name, version or alias."""


def files_gone(path: str) -> bool:
    """Whether a version's files at `path` were removed outside the registry: its directory, or
    the manifest in it (a directory emptied by hand was taken for the whole version)."""
    return not os.path.isfile(os.path.join(path, artifact.MANIFEST))


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


def _tensors(signature: Mapping[str, Any] | None) -> str:
    """ "image uint8 [8, 8, 1], ..." for a manifest's inputs or outputs: what a client sends or
    reads (names, dtypes, per-row shapes)."""
    return ", ".join(
        f"{k} {v.get('dtype')} {list(v.get('shape', []))}"
        for k, v in sorted((signature or {}).items())
    )


def _lineage(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What `show` and the MLflow mirror read of a manifest; with the post-training fits it
    serves with where it has them (a classifier's `calibration`, an anomaly detector's
    `threshold`: `registry show` left them out)."""
    keys = ("source", "config", "data", "metrics", "git", "versions", "platforms", "created")
    fits = {k: manifest[k] for k in artifact.FITS if k in manifest}
    return {**{k: manifest.get(k) for k in keys}, **fits}


# Beside the manifest in each registered copy (not one of its files, so its sha256 is the
# export's): which version of which model the copy is. A copy taken out of the registry (the
# Dockerfile's EXPORT) is then served under that name and version, as `--model=models:/...`
# serves it, and its manifest still checked against the sha256 recorded at register.
IDENTITY = "registry.json"


def _write_identity(directory: str, name: str, version: int, manifest_sha: str) -> None:
    record = {"name": name, "version": version, "manifest_sha256": manifest_sha}
    atomic.write_text(os.path.join(directory, IDENTITY), json.dumps(record, indent=1) + "\n")


def identity(directory: str) -> dict[str, Any] | None:
    """The registry's record in a registered copy (`registry.json`: name, version and the
    manifest's sha256 at register), or None for a directory without one (a plain export, or
    a version registered before the record existed). The one reader of that file: a copy can
    be edited, and its name and version name a report's directory and a served model, so both
    are held to the rules `register` enforces. Raises RegistryError (one line naming the file,
    the field and the fix) for one that cannot be read or breaks them."""
    path = os.path.join(directory, IDENTITY)
    again = "copy the version again from the registry (ann registry resolve)"
    try:
        with open(path, "rb") as f:
            record = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RegistryError(f"{path} cannot be read ({e}); {again}") from e
    if not isinstance(record, dict):
        raise RegistryError(f"{path} is not a registry record (a JSON object); {again}")
    name, version, sha = record.get("name"), record.get("version"), record.get("manifest_sha256")
    lowered = sha.lower() if isinstance(sha, str) else None  # hex digits in either case
    missing = [key for key in ("name", "version", "manifest_sha256") if key not in record]
    why = ""
    if missing:
        why = f'"{missing[0]}" is missing'
    elif not (isinstance(name, str) and NAME.fullmatch(name)):
        why = f'"name" {_json(name)} is not a model name ({NAME_RULE})'
    elif not (type(version) is int and 1 <= version < 2**63):  # bool is an int to isinstance
        why = f'"version" {_json(version)} is not a version number (1, 2, ...)'
    elif not (lowered and SHA256.fullmatch(lowered)):
        why = f'"manifest_sha256" {_json(sha)} is not a sha256 (64 hex digits)'
    if why:
        raise RegistryError(f"{path}: {why}; {again}")
    return {**record, "manifest_sha256": lowered}


def _json(value: Any) -> str:
    """A value of a JSON file as it is written there (`null`, `true`, `"1"`), not Python's
    repr of it."""
    return json.dumps(value, ensure_ascii=False)


# How an export was made, not what it is: when (`created`), from which state of ann's own
# checkout (`git`: an untracked file beside it made `dirty` true), and how its step was chosen
# (`source.selected_by`: `--step=latest` of a run whose best is its latest is the same step).
# The files' sha256, the signature, calibration, config and the step itself stay.
_PROVENANCE = ("created", "git")


def _content(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A manifest apart from how it was made (_PROVENANCE): what makes two exports one."""
    content = {k: v for k, v in manifest.items() if k not in _PROVENANCE}
    source = content.get("source")
    if isinstance(source, Mapping):
        content["source"] = {k: v for k, v in source.items() if k != "selected_by"}
    return content


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
    changes a file; only `register` creates the directory and database.

    `origin` is where `root` came from, which messages name: `PYTHON` (the default: this
    constructor's argument), or a command's, as `Registry.at` tells it: "--registry" (a flag),
    "$ANN_REGISTRY" or "default" (./registry, neither given). Messages speak in the caller's
    words (`_option`): from Python `root='regs' is a file, not a registry directory`, `give
    allow_duplicate=True to register it as a new version anyway`, `point an alias at it
    (set_alias('digits', ALIAS, 3))`; from a command `--registry=regs is a file ...`,
    `give --allow_duplicate ...`, `(alias digits ALIAS 3)`. A `root` that is no str or path
    (None) raises TypeError naming it, and so does a `version` that is no int (1.5 was read as
    version 1) given to a method."""

    def __init__(self, root: str, origin: str = PYTHON):
        # None said os's "expected str, bytes or os.PathLike object, not NoneType".
        root = artifact.path_argument(root, "root", "a registry directory as a str or path")
        if not root.strip():  # "" was the current directory, said as "no registry at ,"
            raise ValueError(f"root: expected a registry directory, got {root!r}")
        self.root = os.path.abspath(root)
        self.artifacts = os.path.join(self.root, "artifacts")
        self.db_path = os.path.join(self.root, "registry.db")
        # Messages name the root as it came (they said --registry=DIR of $ANN_REGISTRY's):
        # `where` after "at", `named` as a subject ("--registry=DIR is a file", from Python
        # "root='DIR' is a file"), `shown` for a file in it ("regs/registry.db is not ...").
        # A flag's or an argument's path reads as typed (--registry=regs: "no registry at
        # regs"); one the user did not type is absolute, with where it came from.
        self._python = origin == PYTHON
        typed = origin in ("--registry", PYTHON)
        self._typed = root if typed else self.root
        self._came_from = {
            PYTHON: "",
            "--registry": "",
            "$ANN_REGISTRY": " (from $ANN_REGISTRY)",
            "default": " (the default: $ANN_REGISTRY is not set)",
        }[origin]
        self.where = self.shown(self.root)
        self.named = self._option("registry", root) if typed else self.where

    def _option(self, flag: str, value: Any = None, placeholder: bool = False) -> str:
        """The `ann registry` flag `flag` (no dashes: "registry", "allow_duplicate", "name")
        as the caller knows it, for a message: from a command `--allow_duplicate`,
        `--registry=regs`; from Python (`PYTHON`) the argument, `allow_duplicate=True`,
        `root='regs'`. `value`: None names the option alone (`--name`, `name`), True a
        switch given, anything else its value (Python's repr of it, unless `placeholder`: a
        word standing for one, DIR)."""
        if self._python:
            argument = ARGUMENTS.get(flag, flag)
            if value is None:
                return argument
            return f"{argument}={value if placeholder else repr(value)}"
        if value is None or value is True:
            return f"--{flag}"
        return f"--{flag}={value}"

    def _said(self, command: str, python: str) -> str:
        """What a message tells the caller to do, in its words: `command` (`ann registry`'s
        subcommand, "alias digits ALIAS 3") from a command, `python` (the method's call,
        "set_alias('digits', ALIAS, 3)") from Python."""
        return python if self._python else command

    def _new_one(self) -> str:
        """Where a new registry may go (`register` creates one nowhere else)."""
        example = self._option("registry", "registry")
        return f"a new registry goes in a new or empty directory of its own (e.g. {example})"

    def shown(self, path: str, came_from: bool = True) -> str:
        """`path` (the root or a path under it) as messages name it: under the root as typed
        for a --registry path, absolute otherwise, followed by where the root came from (unless
        not `came_from`)."""
        inside = os.path.relpath(path, self.root)
        typed = self._typed if inside == "." else os.path.join(self._typed, inside)
        return typed + self._came_from * came_from

    @classmethod
    def at(cls, registry: str | None) -> Registry:
        """The registry a command's --registry flag gives (`registry`), or, where it gave none
        (None), `default_root()`'s, named for where it came from. Raises RegistryError for a
        $ANN_REGISTRY of a `~user` of no user (`arguments.home`: it made a directory named
        `~user` in the current one)."""
        if registry is None:
            value = os.environ.get("ANN_REGISTRY") or "registry"
            try:
                arguments.home(value, f"$ANN_REGISTRY={value}")
            except ValueError as e:
                raise RegistryError(f"{e} (or unset $ANN_REGISTRY)") from None
            return cls(default_root(), default_origin())
        return cls(registry, "--registry")

    def exists(self) -> bool:
        """Whether `root` holds a registry (its database); looks, touches nothing."""
        return os.path.isfile(self.db_path)

    def _has_tables(self) -> bool:
        """Whether the database exists with its tables: another process creating the registry
        makes the file first (its `sqlite3.connect`), then the tables, and a check read
        between the two found "no such table: model_versions"."""
        if not self.exists():
            return False
        with self._connect() as db:
            return self._tables_in(db)

    def _check_root(self) -> None:
        """Refuses, before anything is written, a root that is a file, a directory where a new
        registry may not go (`_no_new_one`), or holds a registry.db that is not an ann
        registry (another program's database, or not SQLite at all)."""
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise RegistryError(f"{self.named} is a file, not a registry directory")
        self._refuse_lost_database()
        if not self.exists() and (why := self._no_new_one()) is not None:
            raise RegistryError(f"{self.named} {why}; {self._new_one()}")
        if self.exists():
            with self._connect() as db:
                self._check_tables(db)
                if self._held() and not self._tables_in(db):  # a database emptied of them
                    self._refuse_lost_database(state="a registry.db without its tables")

    def check_readable(self) -> None:
        """Raises RegistryError, as every reading command would, where `root` holds a registry
        or what is left of one that cannot be read: a file, versions in artifacts/ without the
        registry.db that numbers them (missing, empty or without its tables), a registry.db
        that is not an ann registry's. Nothing where it holds none at all (no registry.db, no
        versions) or a readable one. Writes nothing (the server's start checks its
        `--registry` so: it took a lost database in silence, and listed none of its models)."""
        if os.path.isfile(self.root):
            raise RegistryError(f"{self.named} is a file, not a registry directory")
        self._refuse_lost_database()
        if self.exists():
            with self._connect() as db:
                self._check_tables(db)
                if self._held() and not self._tables_in(db):
                    self._refuse_lost_database(state="a registry.db without its tables")

    def _held(self) -> list[str]:
        """The models' directories in artifacts/ (not a staged copy, `.ann-...`): [] where
        there is none, or no artifacts/."""
        try:
            return sorted(n for n in os.listdir(self.artifacts) if not n.startswith("."))
        except OSError:
            return []

    @staticmethod
    def _tables_in(db: sqlite3.Connection) -> bool:
        found = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'model_versions'"
        ).fetchone()
        return found is not None

    def _refuse_lost_database(self, state: str | None = None) -> None:
        """RegistryError where artifacts/ holds versions but the database that numbers them is
        gone (`state` None: missing, or an empty file) or holds no tables (`state` says so): a
        `register` started a new database there and wrote its version 1 over artifacts/NAME/1,
        another model, and `list` said "no registry"."""
        if state is None:
            if not self.exists():
                state = "no registry.db"
            elif os.path.getsize(self.db_path) == 0:  # `: > registry.db`, a restore cut short
                state = "an empty registry.db"
            else:
                return
        held = self._held()
        if not held:
            return
        shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise RegistryError(
            f"{self.named} holds artifacts/ (the versions of {shown}) but {state}, which "
            "numbers them; restore registry.db from a backup (a new one would give their "
            f"numbers to other models), or give another {self._option('registry')}"
        )

    def _no_new_one(self) -> str | None:
        """Why no new registry may go at `root` ("is a training run", "holds other files (a,
        b)", "cannot exist: F is a file, so nothing can be below it"), or None: a new or empty
        directory of its own."""
        if (above := atomic.below_a_file(self.root)) is not None:  # it said "`register` an
            return f"cannot exist: {above}"  # export to create it there"
        kinds = [k for k in directory_kind.of(self.root) if k != directory_kind.REGISTRY]
        found = (kinds[0], self.root) if kinds else directory_kind.inside(self.root)
        if found is not None:  # not in a run's, an export's or a registry's directory
            kind, where = found
            name = directory_kind.NAMES[kind]
            return f"is {name}" if where == self.root else f"is inside {name} at {where}"
        # Everything under a registry is the registry's: a new one in a directory of runs
        # or exports (or the project's root) made each of them "inside a model registry".
        entries = _entries(self.root)
        if entries:
            listed = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            return f"holds other files ({listed})"
        return None

    def _check_tables(self, db: sqlite3.Connection) -> None:
        try:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        except sqlite3.DatabaseError as e:
            raise RegistryError(
                f"{self.shown(self.db_path)} is not an ann registry database ({e})"
            ) from e
        # SQLite's own tables (sqlite_stat1 after ANALYZE, ...) belong to any database.
        ours = set(TABLES)
        foreign = sorted(r[0] for r in rows if r[0] not in ours and not r[0].startswith("sqlite_"))
        if foreign:
            raise RegistryError(
                f"{self.shown(self.db_path)} is not an ann registry database (it holds the table"
                f"{'s' * (len(foreign) > 1)} {', '.join(foreign)}); give another "
                f"{self._option('registry')}"
            )

    def _create(self) -> None:
        """Creates the directory and the database (idempotent, safe across processes); an
        existing database must be an ann registry's, and is left as it is otherwise."""
        self._check_root()
        os.makedirs(self.root, exist_ok=True)
        db = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
        try:
            self._check_tables(db)
            # Several processes creating one registry: the switch to WAL takes a lock SQLite's
            # busy timeout does not wait for ("database is locked", 2 of 60 three-way races);
            # the loser waits and finds it done.
            for wait in (*(0.05 * 2**i for i in range(8)), None):
                try:
                    if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                        db.execute("PRAGMA journal_mode=WAL")  # readers do not wait for a writer
                    db.executescript(SCHEMA)
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or wait is None:
                        raise
                    time.sleep(wait)
        except sqlite3.OperationalError as e:
            if self._no_space(e):
                raise self._no_space_error() from e
            raise RegistryError(
                f"cannot create the registry database {self.shown(self.db_path)} ({e})"
            ) from e
        except sqlite3.DatabaseError as e:
            raise RegistryError(
                f"{self.shown(self.db_path)} is not an ann registry database ({e})"
            ) from e
        finally:
            db.close()
        os.makedirs(self.artifacts, exist_ok=True)

    @contextlib.contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One short-lived connection per operation (safe across threads and processes) to an
        existing database: `mode=rw` never creates the file. SQLite removes the WAL files it
        makes for a read when the connection closes; on a read-only mount, where it cannot make
        them, the database is opened immutable (nobody can write it there), and so it is on a
        full disk where they cannot grow, for a read (not `write`) when no write waits in the
        WAL (the database file then holds every version): "disk I/O error" refused even
        `versions`. A write there, or a read that cannot be served so, is an OSError ENOSPC
        naming registry.db (`cli.storage_error`'s line: "no space left on device ...")."""
        if os.path.isfile(self.root):
            raise RegistryError(f"{self.named} is a file, not a registry directory")
        self._refuse_lost_database()
        if not self.exists():
            given = self._option("registry", "DIR", placeholder=True)
            existing = f"give {given}{self._said(' (or $ANN_REGISTRY)', '')} of an existing one"
            if (why := self._no_new_one()) is not None:  # `register` would refuse it too
                raise RegistryError(
                    f"no registry at {self.where}, which {why}; {existing}, or `register` an "
                    f"export with {given}, a new or empty directory, to create one"
                )
            raise RegistryError(
                f"no registry at {self.where}; {existing}, or `register` an export to create it "
                "there"
            )
        writable = os.access(self.root, os.W_OK) and os.access(self.db_path, os.W_OK)
        db = self._open("mode=rw" if writable else "mode=ro&immutable=1")
        try:
            try:  # the first read takes SQLite's shared memory (registry.db-shm): a full disk
                db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # fails it here
            except sqlite3.DatabaseError as e:  # any other: said where the database is used
                if self._no_space(e):  # ("is not an ann registry database", `_check_tables`)
                    wal = self.db_path + "-wal"
                    if write or (os.path.isfile(wal) and os.path.getsize(wal) > 0):
                        raise self._no_space_error() from e
                    db.close()
                    db = self._open("mode=ro&immutable=1")
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        except sqlite3.DatabaseError as e:
            if self._no_space(e):
                raise self._no_space_error() from e
            raise RegistryError(
                f"{self.shown(self.db_path)} cannot be used as an ann registry database ({e})"
            ) from e
        finally:
            db.close()

    def _open(self, mode: str) -> sqlite3.Connection:
        try:
            return sqlite3.connect(
                f"{pathlib.Path(self.db_path).as_uri()}?{mode}",
                uri=True,
                timeout=60,
                isolation_level=None,
            )
        except sqlite3.Error as e:
            raise RegistryError(f"cannot open {self.shown(self.db_path)} ({e})") from e

    def _no_space(self, error: sqlite3.Error) -> bool:
        """Whether SQLite's `error` is the registry's file system being full: SQLITE_FULL, or an
        I/O error (SQLITE_IOERR_SHMSIZE: registry.db-shm could not grow; "disk I/O error") with
        less than 1 MiB free there."""
        name = getattr(error, "sqlite_errorname", "") or ""
        if name == "SQLITE_FULL":
            return True
        if not name.startswith("SQLITE_IOERR"):
            return False
        try:
            fs = os.statvfs(self.root)
        except OSError:
            return False
        return fs.f_bavail * fs.f_frsize < 2**20

    def _no_space_error(self, path: str | None = None) -> OSError:
        """ENOSPC naming `path` (default registry.db): said as every full disk is (`ann.cli`)."""
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path or self.db_path)

    def _check_writable(self) -> None:
        """RegistryError naming the registry when it cannot be written (checked before a
        write: it said "[Errno 13] Permission denied: .../.ann-registry-incoming-0ff6..." or
        "cannot be used as an ann registry database (attempt to write a readonly database)").
        A registry not made yet is checked where it would be created (on a read-only file
        system: "[Errno 30] Read-only file system: '/ro/.ann-registry-incoming-...'")."""
        other = self._option("registry")
        if not os.path.isdir(self.root):
            if (why := atomic.why_not_creatable(self.root)) is not None:
                raise RegistryError(f"{self.named} {why}; choose another {other}")
            return
        for place in (self.root, self.artifacts):
            if os.path.isdir(place) and (why := atomic.why_not_creatable(place)) is not None:
                fix = f"fix its permissions, or use another {other}"
                if atomic.READ_ONLY in why:  # a mount, not a permission: it said "permission"
                    fix = f"use another {other} on a writable file system"
                for code in (errno.ENOSPC, errno.EDQUOT):  # the probe's mkdir on a full disk
                    if os.strerror(code) in why:
                        fix = f"{atomic.STORAGE_ERRNOS[code]}, or use another {other}"
                raise RegistryError(
                    f"registry {self.where}: {self.shown(place, came_from=False)} {why}; {fix}"
                )

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds SQLite's write lock from its first statement."""
        self._check_writable()
        with self._connect(write=True) as db:
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
        allow_duplicate: bool = False,
        allow_signature_change: bool = False,
    ) -> ModelVersion:
        """Copies a verified export in as the next version of `name` (default: its manifest's).

        Only the manifest and the files it lists are copied, each checked on the way (see
        `ann.artifact`): an export whose manifest names a path outside it, a symbolic link, a
        special file or a file of another size or sha256 is refused (artifact.IntegrityError),
        and so is one whose manifest's inputs, outputs or weights are not what its
        function.jaxexport takes and gives (the loader's check, the same one line).
        An export already registered under `name` (the same manifest sha256) is refused with
        RegistryError naming its version, unless `allow_duplicate`; so is one whose inputs or
        outputs (names, dtypes, shapes) differ from the latest version's, which its clients
        would no longer fit, unless `allow_signature_change`. `aliases` is a sequence of
        aliases (a lone string: TypeError, not one alias per letter). Creates the registry if it
        does not exist yet, but only once the copy is verified: a refused register creates
        and changes nothing (the copy is staged next to the registry and removed)."""
        export_dir = artifact.path_argument(export_dir, "export_dir", "an export directory")
        manifest, raw = artifact.read_manifest_bytes(export_dir)
        name = name or manifest["name"]
        self._check_request(name, description, tags or {}, aliases)
        self._check_root()
        self._check_writable()  # before the staged copy, which would fail on it
        manifest_sha = artifact.sha256_bytes(raw)
        if not allow_duplicate and self._has_tables():  # before copying anything
            with self._connect() as db:
                self._refuse_duplicate(db, name, manifest, manifest_sha, export_dir)
        created, made = not self.exists(), atomic.missing_from(self.root)
        # Where the version will be, as a failed write names it (a full disk, a file size
        # limit): it named REGISTRY/artifacts/weights.safetensors, a path that never exists.
        final = os.path.join(self.artifacts, name, str(self._expected_version(name)))
        incoming = self._stage(export_dir, manifest, raw, final)
        try:
            self._create()
            with self._write() as db:
                if not allow_duplicate:  # another writer may have registered it meanwhile
                    self._refuse_duplicate(db, name, manifest, manifest_sha, export_dir)
                if not allow_signature_change:  # against the version this one would follow
                    self._refuse_signature_change(db, name, manifest, export_dir)
                version = self._insert_version(db, name, export_dir, manifest, manifest_sha,
                                               description)  # fmt: skip
                for key, value in (tags or {}).items():
                    self._put_tag(db, name, version, key, value)
                for alias in aliases:
                    self._put_alias(db, name, alias, version)
                _write_identity(incoming, name, version, manifest_sha)
                final = target = os.path.join(self.artifacts, name, str(version))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.rename(incoming, target)  # `_next_version`: target does not exist
                _make_read_only(target)
        except BaseException as e:
            atomic.name_as_final(e, incoming, final)  # removed below
            if created:
                self._remove_unused(made)
            raise
        finally:
            _remove(incoming)
        return self.get_version(name, version)

    def _remove_unused(self, made: str | None) -> None:
        """Removes the registry a failed first `register` created (a full disk, a refusal),
        while it holds no version: its registry.db (and SQLite's journals), its empty
        artifacts/ and, where the command made it (`made`), its directory. Left, the empty but
        valid database made the next command take the directory for a registry (`list` showed
        nothing, `register` elsewhere refused the directory as "inside a model registry").
        A version another process registered meanwhile keeps all of it."""
        try:
            with self._connect() as db:
                if db.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0]:
                    return
        except (RegistryError, sqlite3.Error):
            pass  # no tables yet (its creation failed): nothing in it
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.db_path + suffix)
        if os.path.isdir(self.artifacts):
            for entry in os.listdir(self.artifacts):  # a model's directory, made for the rename
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(self.artifacts, entry))
            with contextlib.suppress(OSError):
                os.rmdir(self.artifacts)
        atomic.remove_if_left_empty(self.root, made)

    def _expected_version(self, name: str) -> int:
        """The number `register` expects to give `name`'s next version (another writer may
        take it first): for messages only."""
        if not self._has_tables():
            return 1
        with self._connect() as db:
            return self._next_version(db, name)

    def _stage(self, export_dir: str, manifest: Mapping[str, Any], raw: bytes, final: str) -> str:
        """A verified copy of the export (the manifest and the files it lists) in a new
        directory on the registry's file system, so that moving it in is a rename: in
        `artifacts/` if it exists, else in the nearest existing directory above it. Each file
        is hashed once, as it is copied: the bytes written are the bytes checked. The manifest's
        inputs, outputs and weights are then checked against function.jaxexport as the loader
        checks them (`artifact.check_function`: no weight loaded, nothing compiled). Nothing is
        left behind if a file is refused. A failed write names the file under `final`, the
        version's directory, not the staged copy's."""
        parent = self.artifacts
        while not os.path.isdir(parent):
            parent = os.path.dirname(parent)
        incoming = os.path.join(parent, f".ann-registry-incoming-{uuid.uuid4().hex}")
        os.mkdir(incoming)
        try:
            staged = os.path.join(incoming, artifact.MANIFEST)
            with atomic.writing(staged), open(staged, "xb") as f:  # a full disk names no file
                f.write(raw)
            for file_name in manifest["files"]:
                artifact.copy_verified(export_dir, manifest, file_name, incoming)
            # The loader's check of the manifest against the function, on the bytes copied: an
            # edited manifest (inputs said int8, the function takes uint8) with every hash
            # matching was registered, and refused only when a server loaded it.
            artifact.check_function(incoming, manifest, named=export_dir)
        except BaseException as e:
            _remove(incoming)
            atomic.name_as_final(e, incoming, final)  # the staged copy is gone
            raise
        return incoming

    def _insert_version(
        self,
        db: sqlite3.Connection,
        name: str,
        export_dir: str,
        manifest: Mapping[str, Any],
        manifest_sha: str,
        description: str,
    ) -> int:
        """Adds the next version of `name` (and `name` itself if new); returns its number: one
        above both the database's last and any artifacts/NAME/N directory (`_next_version`)."""
        now = time.time()
        # Names that differ only in case would share artifacts/NAME on a case-insensitive file
        # system (macOS, Windows): one is refused, naming the other.
        other = db.execute(
            "SELECT name FROM registered_models WHERE lower(name) = lower(?) AND name != ?",
            (name, name),
        ).fetchone()
        if other is not None:
            raise RegistryError(
                f"model name {name!r} differs only in case from registered model {other[0]!r} "
                f"(their files would share a directory on a case-insensitive file system); "
                f"register it as {other[0]!r}, or under another name"
            )
        db.execute(
            "INSERT INTO registered_models (name, created, updated) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET updated = excluded.updated",
            (name, now, now),
        )
        version = self._next_version(db, name)
        db.execute(
            "INSERT INTO model_versions (name, version, path, manifest_sha256, source, "
            "lineage, description, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                version,
                os.path.join("artifacts", name, str(version)),
                manifest_sha,
                os.path.abspath(export_dir),
                atomic.json_text(_lineage(manifest)),  # a NaN metric as null
                description,
                now,
            ),
        )
        return version

    def _next_version(self, db: sqlite3.Connection, name: str) -> int:
        """The number the next version of `name` gets: one above the database's last (a
        deleted version's counts) and above every artifacts/NAME/N directory, whatever the
        database says of it. A directory is never written over: one the database does not
        know (a database restored from an older backup, a register killed between moving its
        copy in and its commit) keeps its number and its files, so models:/NAME/N never
        names a second model."""
        (last,) = db.execute(
            "SELECT COALESCE(MAX(version), 0) FROM model_versions WHERE name = ?", (name,)
        ).fetchone()
        # No directory yet (or unreadable: the rename then says so) holds no numbers.
        return max([last, *(n for _, n in self.version_dirs(name))]) + 1

    def registered_elsewhere(self, name: str, manifest_sha: str) -> list[str]:
        """The URIs of the versions of models other than `name` whose manifest sha256 is
        `manifest_sha` (the same export registered under another name), by name then version;
        [] where there is no registry yet."""
        if not self._has_tables():
            return []
        with self._connect() as db:
            rows = db.execute(
                "SELECT name, version FROM model_versions WHERE name != ? AND "
                f"manifest_sha256 = ? AND {LIVE} ORDER BY name, version",
                (name, manifest_sha),
            ).fetchall()
        return [f"{URI_SCHEME}/{row['name']}/{row['version']}" for row in rows]

    def _refuse_duplicate(
        self, db: sqlite3.Connection, name: str, manifest: Mapping[str, Any], manifest_sha: str,
        export_dir: str,
    ) -> None:  # fmt: skip
        """Raises RegistryError if `name` already has a version with this manifest sha256, or
        whose manifest differs only in its `created` time: the same checkpoint exported again
        (the files, their sha256, the signature, calibration and lineage all equal). A version
        whose files were removed outside the registry does not count (its resolve says to
        register the export again, which this refused: "point an alias at it")."""
        content = _content(manifest)
        same, exported_again = [], []
        for row in db.execute(
            f"SELECT version, manifest_sha256, path FROM model_versions WHERE name = ? AND {LIVE} "
            "ORDER BY version",
            (name,),
        ):
            if files_gone(os.path.join(self.root, row["path"])):
                continue  # its files are gone: registering the export again restores it
            if row["manifest_sha256"] == manifest_sha:
                if self._damaged(row["path"], manifest_sha):
                    continue  # so is a copy changed on disk (its resolve says so)
                same.append(str(row["version"]))
            elif (stored := self._stored_manifest(row["path"])) and _content(stored) == content:
                exported_again.append(str(row["version"]))
        if same or exported_again:
            versions = same or exported_again
            why = "the same manifest sha256"
            if not same:
                why = (
                    "a manifest that differs only in how it was exported: its created time, "
                    "git state or how the step was chosen"
                )
            point = self._said(
                f"alias {name} ALIAS {versions[-1]}", f"set_alias({name!r}, ALIAS, {versions[-1]})"
            )
            raise RegistryError(
                f"{export_dir} is already registered as {name} "
                f"version{'s' * (len(versions) > 1)} {', '.join(versions)} "
                f"({why}); point an alias at it ({point}), or give "
                f"{self._option('allow_duplicate', True)} to register it as a new version anyway"
            )

    def _damaged(self, path: str, manifest_sha: str) -> bool:
        """Whether the version stored at `path` (relative to the root) fails its files' checks
        (a byte changed on disk: `artifact.verify`)."""
        try:
            artifact.verify(os.path.join(self.root, path), manifest_sha)
        except artifact.IntegrityError:
            return True
        return False

    def _stored_manifest(self, path: str) -> dict[str, Any] | None:
        """The manifest of the version stored at `path` (relative to the root), or None when
        it cannot be read (removed or damaged by hand: `resolve` and loading report that, and
        it is no reason to refuse a register)."""
        try:
            with open(os.path.join(self.root, path, artifact.MANIFEST), "rb") as f:
                manifest = json.loads(f.read())
        except (OSError, ValueError):
            return None
        return manifest if isinstance(manifest, dict) else None

    def _refuse_signature_change(
        self, db: sqlite3.Connection, name: str, manifest: Mapping[str, Any], export_dir: str
    ) -> None:
        """Raises RegistryError if `name`'s latest version takes or gives other tensors than
        `manifest` does: a client of models:/NAME@ALIAS breaks when the alias moves to it."""
        row = db.execute(
            f"SELECT version, path FROM model_versions WHERE name = ? AND {LIVE} "
            "ORDER BY version DESC",
            (name,),
        ).fetchone()
        before = self._stored_manifest(row["path"]) if row else None
        if before is None:
            return
        latest = row["version"]
        changed = [
            f"{side} {_tensors(before.get(side))} -> {_tensors(manifest.get(side))}"
            for side in ("inputs", "outputs")
            if _tensors(before.get(side)) != _tensors(manifest.get(side))
        ]
        if not changed:
            return
        # Outputs added, nothing else changed: a client of the old ones still fits unless it
        # reads every output ("would not fit it" said more than that).
        old_out, new_out = before.get("outputs") or {}, manifest.get("outputs") or {}
        added = {k: v for k, v in new_out.items() if k not in old_out}
        kept = {k: v for k, v in new_out.items() if k in old_out}
        if changed[0].startswith("outputs") and added and _tensors(kept) == _tensors(old_out):
            effect = (
                f"outputs added, {_tensors(added)}: a client of models:/{name} that reads every "
                "output may not expect them"
            )
        else:
            effect = f"clients of models:/{name} would not fit it"
        raise RegistryError(
            f"{export_dir} has other tensors than {name} version {latest} "
            f"({'; '.join(changed)}): {effect}; register it under another "
            f"{self._option('name')}, or give {self._option('allow_signature_change', True)} if "
            "they are ready"
        )

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Points `alias` at `version` of `name`, moving it if it pointed elsewhere. Raises
        RegistryError for an unknown model or version, one whose files are gone, and one the
        loader would refuse: a file changed (its sha256), its manifest changed, or not what its
        function takes and gives
        (`artifact.check_function`, as `register` checks an export; a version an older ann
        registered unchecked), so a champion alias never sends servers to a model that does
        not load. The check imports JAX (about 1 s; docs/benchmarks.md)."""
        self._check_alias(alias)
        with self._connect() as db:
            row = self._require_version(db, name, version)
            path, sha = os.path.join(self.root, row["path"]), row["manifest_sha256"]
        if not files_gone(path):  # said below, in the transaction
            try:
                # Every file's sha256 too: a changed weight byte was pointed at, and every
                # server resolving the alias then refused it.
                artifact.check_function(path, artifact.verify(path, sha))
            except artifact.IntegrityError as e:
                raise RegistryError(
                    f"models:/{name}/{version} would not load ({e}), so alias {alias!r} was not "
                    "pointed at it: point it at another version, or register a new export of "
                    "the run and point it at that"
                ) from e
        with self._write() as db:
            row = self._require_version(db, name, version)
            if files_gone(os.path.join(self.root, row["path"])):  # it was accepted
                raise RegistryError(
                    f"{name} version {version}'s files at {os.path.join(self.root, row['path'])} "
                    "are gone (removed outside the registry), so an alias would resolve to "
                    f"nothing; register the export again (a new version), or delete it ("
                    + self._said(
                        f"ann registry delete {name} {version}",
                        f"delete_version({name!r}, {version})",
                    )
                    + ")"
                )
            self._put_alias(db, name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        with self._write() as db:
            cursor = db.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
            if cursor.rowcount == 0:
                self._require_model(db, name)  # an unknown model is named as one
                raise RegistryError(
                    f"model {name!r} has no alias {alias!r}; its aliases: "
                    f"{', '.join(self._aliases(db, name)) or 'none'}"
                )

    def delete_version(self, name: str, version: int) -> ModelVersion:
        """Deletes `version` of `name`: its files and tags; its number stays taken (the row is
        kept as a tombstone, `DELETED`), so the next register gets a new one and a URI never
        names two models. Refused with RegistryError while an alias points at it (move or
        delete the alias first: a server resolving it would lose its model) and for a version
        that does not exist or was deleted. Returns the version as it was (its tags, for the
        MLflow mirror). The directory is renamed aside inside the transaction (nothing changes
        if that fails) and removed after it commits (a failure there is a RegistryError naming
        what is left to remove; the version is deleted)."""
        moved, aside = None, ""
        try:
            with self._write() as db:
                mv = self._version(db, self._require_version(db, name, version))
                if mv.aliases:
                    alias = mv.aliases[0]
                    point = self._said(
                        f"alias {name} {alias} VERSION", f"set_alias({name!r}, {alias!r}, VERSION)"
                    )
                    delete = self._said(
                        f"alias {name} {alias} --delete", f"delete_alias({name!r}, {alias!r})"
                    )
                    raise RegistryError(
                        f"{mv.uri} is aliased ({', '.join(mv.aliases)}): point the alias at "
                        f"another version ({point}) or delete it ({delete}) first"
                    )
                # A delete killed between this rename and its commit left the files here and
                # the version live: deleting it again removes them after the commit.
                aside = os.path.join(os.path.dirname(mv.path), f".deleted-{version}")
                if os.path.isdir(mv.path):
                    os.rename(mv.path, aside)  # same parent: a read-only directory may move
                    moved = mv.path
                db.execute(
                    "UPDATE model_versions SET path = ? WHERE name = ? AND version = ?",
                    (DELETED, name, version),
                )
                db.execute("DELETE FROM tags WHERE name = ? AND version = ?", (name, version))
                db.execute(
                    "UPDATE registered_models SET updated = ? WHERE name = ?", (time.time(), name)
                )
        except BaseException:
            if moved:  # the transaction rolled back: the version stays as it was
                os.rename(aside, moved)
            raise
        try:
            _remove(aside)
        except OSError as e:
            raise RegistryError(
                f"{mv.uri} is deleted, but removing its files failed ({e}); remove {aside} by hand"
            ) from e
        return mv

    def set_tag(self, name: str, key: str, value: str, version: int | None = None) -> None:
        """Tags the registered model, or one version of it."""
        self.set_tags(name, {key: value}, version)

    def set_tags(self, name: str, tags: Mapping[str, str], version: int | None = None) -> None:
        """Sets several tags of the model, or of one version, in one transaction: all or none."""
        for key, value in tags.items():
            self._check_tag(key, value)
        with self._write() as db:
            if version is None:
                self._require_model(db, name)
            else:
                self._require_version(db, name, version)
            for key, value in tags.items():
                self._put_tag(db, name, version or 0, key, value)

    def update_tag(
        self,
        name: str,
        key: str,
        change: Callable[[str | None], str | None],
        version: int | None = None,
    ) -> None:
        """Sets the tag `key` of the model (or of one version) to `change(its value)` (None:
        the tag is absent), in one transaction: two commands changing one tag at once each see
        the other's change (a read, then `set_tags`, lost one). `change` returning None
        deletes the tag. Raises RegistryError as `set_tags` does."""
        with self._write() as db:
            if version is None:
                self._require_model(db, name)
            else:
                self._require_version(db, name, version)
            value = self._tags(db, name, version or 0).get(key)
            new = change(value)
            if new is None:
                db.execute(
                    "DELETE FROM tags WHERE name = ? AND version = ? AND key = ?",
                    (name, version or 0, key),
                )
            elif new != value:
                self._check_tag(key, new)
                self._put_tag(db, name, version or 0, key, new)

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
                f"AND v.{LIVE} "
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
        """The live versions of model `name`, oldest first (a deleted one is left out):
        `ModelVersion`s with `version`, `uri`, `path` (the read-only export), `aliases`,
        `tags`, `lineage` (run, step, metrics, git). Raises RegistryError for a model not
        registered (naming the ones that are) or no registry at the root."""
        with self._connect() as db:
            self._require_model(db, name)
            rows = db.execute(
                f"SELECT * FROM model_versions WHERE name = ? AND {LIVE} ORDER BY version", (name,)
            ).fetchall()
            return [self._version(db, row) for row in rows]

    def version_dirs(self, name: str | None = None) -> list[tuple[str, int]]:
        """(NAME, N) of each version directory in artifacts/ (`NAME/N`, of `name` only where
        given), from listings alone (one per model directory; nothing read from the database),
        sorted by name, then number."""
        found = []
        for model in [name] if name is not None else self._held():
            try:
                entries = os.listdir(os.path.join(self.artifacts, model))
            except OSError:  # none yet, or a file: not a model's versions
                continue
            numbers = [arguments.version_number(entry) for entry in entries]
            found += [(model, n) for n in numbers if n is not None]
        return sorted(found)

    def unlisted_line(
        self, listed: Mapping[str, Collection[int]], name: str | None = None
    ) -> str | None:
        """One line naming the version directories (`version_dirs`) that registry.db does not
        list, given what it lists (`listed`: each model's live version numbers, as `list` or
        `versions` read them), what they are and what to do; None where there are none. Left
        by a registry.db restored from an older backup, or by a register stopped between
        moving its copy in and its commit: `register` never writes over them
        (`_next_version`), but `list` and `versions` said nothing of them."""
        unlisted = [f"{m}/{n}" for m, n in self.version_dirs(name) if n not in listed.get(m, ())]
        if not unlisted:
            return None
        return (
            f"{self.shown(self.artifacts)} holds version directories registry.db does not list: "
            f"{', '.join(unlisted)} (a registry.db restored from an older backup, or a register "
            "stopped before its commit; never reused: a new register gets a higher number); "
            "restore the registry.db that lists them, or register each again ("
            + self._said("ann registry register DIR --name=NAME", "register(DIR, name=NAME)")
            + ": a new number) and remove the directory"
        )

    def get_version(self, name: str, version: int) -> ModelVersion:
        with self._connect() as db:
            return self._version(db, self._require_version(db, name, version))

    def resolve(self, uri: str) -> ModelVersion:
        """`models:/NAME/3`, `models:/NAME@ALIAS` or `models:/NAME/latest` -> the version in
        this registry; raises RegistryError naming what is missing. Commands that take a model
        (a URI or an export directory) go through `ann.registry.resolve`, which calls this."""
        match = URI.match(uri)
        if not match:
            raise RegistryError(not_a_uri(uri))
        name, version, alias = match["name"], match["version"], match["alias"]
        # Not "３" (int() reads it as 3), nor "01" (as an integer flag, refused): checked before
        # the registry is opened, as the URI's form is.
        if version not in (None, "latest") and arguments.version_number(version) is None:
            fixed = arguments.zeros_dropped(version)
            hint = f"; write models:/{name}/{fixed}" if fixed else ""
            raise RegistryError(
                f"model URI {uri!r}: version {version!r} is not a version number (1, 2, "
                f"...), 'latest' or @ALIAS{hint}"
            )
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
                    f"SELECT MAX(version) FROM model_versions WHERE name = ? AND {LIVE}", (name,)
                ).fetchone()
                if number is None:
                    raise RegistryError(f"model {name!r} has no versions yet")
            else:
                number = arguments.version_number(version)
            return self._version(db, self._require_version(db, name, number))

    # -- helpers -------------------------------------------------------------------------------

    @classmethod
    def _check_request(
        cls, name: str, description: str, tags: Mapping[str, str], aliases: Sequence[str]
    ) -> None:
        cls._check_name(name)
        if isinstance(aliases, str):  # iterated, "champion" made 8 one-letter aliases
            raise TypeError(f"aliases must be a list of aliases: aliases=[{aliases!r}]")
        if not isinstance(aliases, list | tuple):  # bytes were iterated as ints; None raised
            raise TypeError(f"aliases must be a list of strings, got {type(aliases).__name__}")
        for i, alias in enumerate(aliases):
            if not isinstance(alias, str):  # "expected string or bytes-like object"
                raise TypeError(f"aliases[{i}] is {alias!r}: an alias is a string")
        if not isinstance(tags, Mapping):  # "'list' object has no attribute 'items'"
            raise TypeError(f"tags must be a dict of strings, got {type(tags).__name__}")
        for key, value in tags.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"tags[{key!r}] = {value!r}: tag keys and values are strings")
        for alias in aliases:
            cls._check_alias(alias)
        for key, value in tags.items():
            cls._check_tag(key, value)
        if len(description) > MAX_DESCRIPTION:
            raise RegistryError(
                f"the description has {len(description)} characters, more than {MAX_DESCRIPTION}"
            )

    @staticmethod
    def _check_name(name: str) -> None:
        if not NAME.fullmatch(name):  # match's $ let "digits\n" through
            raise RegistryError(f"model name {name!r} must be {NAME_RULE}")

    @staticmethod
    def mirrored_alias(alias: str) -> bool:
        """Whether MLflow takes `alias`: not one of its reserved names (`_check_alias`), which
        an ann before 2026-12-06 let an alias be."""
        return alias.lower() != "latest" and not VERSION_LIKE.match(alias)

    @staticmethod
    def _check_alias(alias: str) -> None:
        # MLflow's reserved names too (`latest` in any case, `v1`), which shadowed the URIs'
        # `/latest` and version numbers here and could never be mirrored.
        if ALIAS.match(alias) and not Registry.mirrored_alias(alias):  # the rule it broke, named
            raise RegistryError(
                f"alias {alias!r} is reserved: MLflow keeps 'latest' (in any case) and versions "
                "(v1, V2) for itself, and here it would shadow models:/NAME/latest or a version; "
                "choose another name"
            )
        if not ALIAS.match(alias):
            raise RegistryError(
                f"alias {alias!r} must start with a letter or '_', hold letters, digits, '_' or "
                "'-', and be neither 'latest' (in any case) nor a version (v1, V2: MLflow's "
                "reserved names)"
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
        if not isinstance(version, numbers.Integral) or isinstance(version, bool):  # 1.5 as 1
            raise TypeError(
                f"version: expected a version number (an int >= 1), got "
                f"{type(version).__name__} {version!r}"
            )
        self._require_model(db, name)
        row = None
        if 0 <= int(version) < 2**63:  # SQLite's INTEGER: past it, OverflowError (a traceback)
            row = db.execute(
                "SELECT * FROM model_versions WHERE name = ? AND version = ?", (name, int(version))
            ).fetchone()
        if row is None or row["path"] == DELETED:
            known = [
                str(r[0])
                for r in db.execute(
                    f"SELECT version FROM model_versions WHERE name = ? AND {LIVE} "
                    "ORDER BY version",
                    (name,),
                )
            ]
            said = "has no version" if row is None else "deleted its version"
            raise RegistryError(
                f"model {name!r} {said} {version}; versions: {', '.join(known) or 'none'}"
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
