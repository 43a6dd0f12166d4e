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

MLflow numbers its versions itself, so the mapping is written back onto ann's version, one
mapping per tracking URI (a registry may be mirrored into staging and production servers, or
moved from one to another): the tags `mlflow.KEY.tracking_uri`, `mlflow.KEY.run_id` and
`mlflow.KEY.version`, KEY the first 12 hex digits of the URI's sha256, written in one
transaction (`mirrors` reads them). Registries written before kept one mapping per version, as
`mlflow.tracking_uri`, `mlflow.run_id`, `mlflow.version`: still read, never rewritten. A URI is
recorded and compared in one spelling (`normal_uri`: `http://Host:5000/` is `http://host:5000`),
and one recorded before in another is read as that spelling. Mirroring a version twice into one
URI is a no-op; mirroring it into another adds a mapping.

A change made with `--mlflow_uri=URI` (an alias set, moved or deleted, a tag, a version
deleted) follows into MLflow at that URI only: MLflow's client takes its credentials from the
environment (`MLFLOW_TRACKING_TOKEN`, ...), one set for every URI, so sending a change to the
other servers the model was mirrored to would hand them this server's credentials (and a
retired server would hold every command up for minutes of retries). Those other servers are
named instead, in one warning line with the command that updates each (`unreached_aliases`,
`unreached_tag`, `unreached_delete`), also when a change was made without `--mlflow_uri`. The
aliases ann set at each URI, and deleted there, are recorded on the registered model
(`mlflow.KEY.aliases`, `mlflow_aliases`), so a deleted alias names only the servers that may
hold it (one set in ann's registry alone after the mirror is at none of them). A
mirror that failed
half-way (the run made but the upload failed, the version made but an alias failed) is finished
by the retry, which finds the run by its tags and the version by its run: never a second one.
The upload is a copy of exactly the files the manifest lists, checked against the sha256
recorded at registration.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shlex
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ann import artifact, atomic
from ann.registry.core import MAX_TAG_VALUE, ModelVersion, Registry, RegistryError

EXPERIMENT = "ann-registry"
# One version's mapping into the MLflow at one tracking URI: _tag_keys(uri). Registries written
# before recorded one mapping per version under these keys: read, never written.
LEGACY_URI, LEGACY_RUN, LEGACY_VERSION = "mlflow.tracking_uri", "mlflow.run_id", "mlflow.version"
# The run's own tags, by which a retry finds the run an earlier attempt made.
RUN_URI, RUN_SHA, RUN_REGISTRY = "ann.registry_uri", "ann.manifest_sha256", "ann.registry_root"
_PARAMS_PER_CALL = 100  # MLflow's log_batch limit


class MirrorError(RegistryError):
    """The MLflow side failed; ann's registry holds what the command did there (the version
    registered, the alias moved, the tag set), and the message names the retry."""


MLFLOW_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")
DATABASES = ("postgresql", "mysql", "mssql")  # SQLAlchemy's URL: SCHEME://[USER@]HOST[:PORT]/DB


_CREDENTIALS = "MLflow's MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"


def check_mlflow_uri(uri: str, given: str = "--mlflow_uri") -> None:
    """Refuses a tracking URI MLflow could not use, before anything is written anywhere: raises
    RegistryError with one line naming the fix, and where the URI came from (`given`: the
    flag, or `$ANN_MLFLOW_URI` its default comes from)."""
    why, fix = _uri_refusal(uri)
    if why:
        raise RegistryError(f"{given}={shown_uri(uri)!r} {why}; {fix}")


def _uri_refusal(uri: str) -> tuple[str, str]:
    """What is wrong with a tracking URI and the fix, ("", "") for nothing; a URI offered
    instead is one this accepts: where it has a problem of its own (the password dropped from
    `http://u:pw@h:0x50`, the port still bad), that is said too, and its fix given."""
    why, fix, instead, note = _uri_problem(uri)
    if not why or instead is None:
        return why, fix
    then, then_fix = _uri_refusal(instead) if instead != uri else ("", "")
    if then:  # the note once: a query's fix names MLflow's credentials too
        return f"{why}, and {then}", then_fix + ("" if _CREDENTIALS in then_fix else note)
    return why, fix


def _uri_problem(uri: str) -> tuple[str, str, str | None, str]:
    """(why, fix, instead, note) for one problem of a tracking URI, the first found: a fix
    that offers a URI is "give INSTEAD" and a `note` after it (`_uri_refusal` checks INSTEAD
    in turn); ("", "", None, "") for none."""
    why, instead, note = "", None, ""
    fix = (
        "give the tracking server as http(s)://HOST[:PORT] (or an MLflow store URI: file:, "
        "sqlite:, postgresql:, mysql:, mssql:, databricks)"
    )
    parts = urllib.parse.urlsplit(uri)
    # As typed (urlsplit lowers it). Schemes are case-insensitive (RFC 3986), and MLflow's
    # HTTP client reads them so; its stores compare theirs as written: `DATABRICKS` and
    # `FILE:///x` are local directories to MLflow (./FILE:/x), `SQLITE:` no dialect to
    # SQLAlchemy.
    typed = uri.partition(":")[0]
    scheme = typed.lower().split("+")[0]  # postgresql+psycopg2://...
    after = uri[len(typed) + 1 :]  # what follows "SCHEME:"
    if not uri.isprintable() or any(c.isspace() for c in uri):
        why = "holds spaces or control characters"
    elif parts.password is not None:
        # It would be recorded in registry tags and echoed in errors and retry commands.
        why = "holds a password, which ann would record in the registry's tags and print"
        if scheme in ("http", "https"):
            host = parts.netloc.rpartition("@")[2]
            instead = urllib.parse.urlunsplit(parts._replace(netloc=host))
            note = f" and set {_CREDENTIALS}"
        else:
            instead = shown_uri(uri, password=False)
            note = (
                " and the password where the database driver reads it outside the URI "
                "(PostgreSQL: PGPASSWORD or ~/.pgpass)"
            )
    elif len(uri) > MAX_TAG_VALUE:  # after MLflow did its part, the mapping could not be kept
        why = f"has {len(uri)} characters, more than the {MAX_TAG_VALUE} a registry tag holds"
    elif (
        scheme in MLFLOW_SCHEMES
        and scheme not in ("http", "https")
        and (":" in uri or scheme == "databricks")
        and typed != typed.lower()
    ):
        why = f"has the scheme {typed!r}, which MLflow reads only in lower case"
        instead = f"{typed.lower()}{uri[len(typed) :]}"
    elif scheme not in MLFLOW_SCHEMES or (":" not in uri and uri != "databricks"):
        # `databricks` alone is MLflow's spelling of the default Databricks profile
        why = (
            f"has the scheme {typed!r}, not one of {', '.join(MLFLOW_SCHEMES)}"
            if ":" in uri
            else f"has no scheme (one of {', '.join(MLFLOW_SCHEMES)})"
        )
        if scheme == "databricks-uc":  # MLflow's registry URI; its tracking store a directory
            why = "is MLflow's Unity Catalog registry URI, not a tracking URI"
            instead = f"databricks{uri[len(typed) :]}"
            note = " (MLflow's registry for it is Unity Catalog, databricks-uc)"
        elif ":" not in uri and uri.lower().endswith((".db", ".sqlite", ".sqlite3")):
            fix = f"give the SQLite file as sqlite:///{uri}"
    elif scheme in ("sqlite", *DATABASES) and after and not after.startswith("//"):
        # `sqlite:mlflow.db`: SQLAlchemy's "Could not parse", after ann's registry changed
        why = f"has no '//' after '{typed}:'"
        instead = f"{typed}:///{after}" if scheme == "sqlite" else f"{typed}://{after}"
    elif scheme in ("http", "https") or scheme in DATABASES:
        try:
            port = parts.port
        except ValueError:
            port, why = None, "has a port outside 1-65535"
        if not why and not parts.hostname and scheme not in DATABASES:
            why = "names no host"
        elif not why and port == 0:
            why = "has a port outside 1-65535"
        if why == "has a port outside 1-65535":  # a database's was told to give an http server
            fix = "give a port in 1-65535 (or none, for the scheme's default)"
        elif not why and scheme not in DATABASES and (parts.query or parts.fragment):
            # MLflow's client appends its API paths after it (`/?password=pw/api/2.0/...`), and
            # ann printed it in errors and retry commands: a secret there was shown.
            why = "has a query or fragment, which MLflow's client appends its API paths after"
            instead = urllib.parse.urlunsplit(parts._replace(query="", fragment=""))
            note = f" (credentials in {_CREDENTIALS}, or MLFLOW_TRACKING_TOKEN)"
        elif not why and scheme in DATABASES and parts.path.strip("/") == "":
            # SQLAlchemy's "Could not parse" or a connection to no database, after ann's
            # registry changed
            why = "names no database"
            fix = f"give one, e.g. {typed}://USER@HOST:PORT/mlflow"
        if not why and parts.hostname:
            from ann.serve.settings import host_problem

            problem = host_problem(parts.hostname)  # "hôst" failed in MLflow's client, later
            why = f"has the host {parts.hostname}, which {problem}" if problem else ""
    elif scheme == "sqlite":
        why, fix, instead = _sqlite_problem(parts)
    elif scheme == "file" and parts.path in ("", "/"):  # MLflow: "No such file or directory: ''"
        why, fix = "has no store directory", "give one, e.g. file:///PATH/mlruns"
    if instead is not None:
        fix = f"give {shown_uri(instead)}{note}"
    return why, fix, instead, note


def shown_uri(uri: str, password: bool = True) -> str:
    """`uri` as ann prints it: a password in its user information as `***` (`password=False`:
    left out, `http://user@host`), and each value of its query as `***` (`?password=pw`
    was printed); other URIs as they are."""
    parts = urllib.parse.urlsplit(uri)
    if parts.query:
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        query = "&".join(f"{key}=***" for key, _ in pairs) or "***"
        return shown_uri(urllib.parse.urlunsplit(parts._replace(query="")), password) + f"?{query}"
    try:
        if parts.password is None:
            return uri
    except ValueError:
        return uri
    user, _, host = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    netloc = f"{name}:***@{host}" if password else (f"{name}@{host}" if name else host)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _sqlite_problem(parts: urllib.parse.SplitResult) -> tuple[str, str, str | None]:
    """What makes a sqlite: URI name no database file MLflow could keep (SQLAlchemy's spelling:
    sqlite:///relative.db, sqlite:////absolute.db), the fix, and the URI it offers (or None);
    ("", "", None) for none. `sqlite:///`
    and `sqlite://` are an in-memory store to SQLAlchemy, as `sqlite:///:memory:` is: a mirror
    went nowhere, its mapping recorded all the same."""
    give = "give one, e.g. sqlite:///mlflow.db (relative to the working directory)"
    if parts.netloc:  # SQLAlchemy: "Invalid SQLite URL", after ann's registry changed
        # `sqlite://mlflow.db/` meant the file mlflow.db: `sqlite:///mlflow.db/` is a directory
        path = parts.netloc + ("" if parts.path == "/" else parts.path)
        return (
            f"names a host ({parts.netloc}), which a SQLite URI has none of",
            "",
            f"sqlite:///{path}",
        )
    if parts.path in ("", "/"):
        return "has no database path", give, None
    if parts.path == "/:memory:":
        return "is an in-memory store, gone when the command exits", give, None
    if parts.path.endswith("/"):
        return (
            "names a directory, not a database file",
            f"give a file in it, e.g. sqlite:///{parts.path[1:]}mlflow.db",
            None,
        )
    return "", "", None


def normal_uri(uri: str) -> str:
    """`uri` in the one spelling mirrors are recorded and compared in, so that two spellings of
    one server are one mirror: http(s) with the scheme and host in lower case, the default port
    and a trailing "/" dropped (`http://Host:80/` -> `http://host`); a file: or sqlite: store's
    path absolute and normalised (`file:///x/` -> `file:///x`; `sqlite:///m.db`, relative to
    the working directory, -> `sqlite:////DIR/m.db`); anything else as given. Never raises: a
    URI `check_mlflow_uri` would refuse, read from a registry, is kept as it is."""
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme.lower()
    base = scheme.split("+")[0]  # sqlite+pysqlite://...
    if base in ("http", "https"):
        return _normal_http(parts._replace(scheme=scheme))
    if base == "file" and parts.path:
        path = os.path.normpath(os.path.abspath(urllib.parse.unquote(parts.path)))
        return f"{scheme}://{parts.netloc}{urllib.parse.quote(path)}" + _query(parts)
    if base == "sqlite" and parts.path not in ("", "/", "/:memory:") and not parts.netloc:
        # SQLAlchemy's spelling: sqlite:///relative.db, sqlite:////absolute.db
        path = os.path.normpath(os.path.abspath(parts.path[1:]))
        return f"{scheme}:///{path}" + _query(parts)
    return uri


def _normal_http(parts: urllib.parse.SplitResult) -> str:
    """An http(s) URI's `normal_uri`; as given where its port is not a number."""
    try:
        port = parts.port
    except ValueError:
        return urllib.parse.urlunsplit(parts)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # IPv6
    user = parts.netloc.rpartition("@")[0]  # as given: a password's case counts
    netloc = (f"{user}@" if "@" in parts.netloc else "") + host
    if port is not None and port != {"http": 80, "https": 443}[parts.scheme]:
        netloc += f":{port}"
    path = parts.path.rstrip("/")
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


def _query(parts: urllib.parse.SplitResult) -> str:
    return (f"?{parts.query}" if parts.query else "") + (
        f"#{parts.fragment}" if parts.fragment else ""
    )


# MLflow's HTTP client retries an unreachable server 7 times with backoff (its default): an
# `ann registry register` waited about 4 minutes before its error and retry command, the local
# version long registered. Twice, for a command a person waits on (the printed retry command
# finishes the mirror later); `MLFLOW_HTTP_REQUEST_MAX_RETRIES` in the environment wins.
RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}


def _client(tracking_uri: str) -> Any:
    try:
        from mlflow import MlflowClient
    except ImportError as e:
        raise MirrorError(
            "mirroring into MLflow needs its client (mlflow-skinny): pip install -e '.[mlflow]' "
            "in ann's clone"
        ) from e
    _quiet_store_logs()
    for name, value in RETRIES.items():  # the user's own settings win
        os.environ.setdefault(name, value)
    return MlflowClient(tracking_uri=tracking_uri)


@functools.cache
def _quiet_store_logs() -> None:
    """Once, after MLflow's first import, quiets the third-party logs of the mirror path: a new
    SQLite store logs "INFO mlflow.store.db.utils: Creating initial MLflow database tables..."
    to stderr, between ann registry's own lines (it runs quiet); its warnings still show."""
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    # Without Databricks credentials: "WARNING mlflow.utils.databricks_utils: Failed to create
    # databricks SDK workspace client ... Falling back to legacy authentication." above the
    # failure's own `error:` line, which says what to configure.
    logging.getLogger("mlflow.utils.databricks_utils").setLevel(logging.ERROR)
    # A server that does not answer: urllib3 logged each retry ("W1205 ... connectionpool.py:874]
    # Retrying (Retry(total=1, ...)) after connection broken by ...") above the `error:` line,
    # which names the server and the cause and gives the command to retry with.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", str(value)


def _command(registry: Registry, tracking_uri: str, *args: str) -> str:
    """The `ann registry` command line that repeats a step on this registry."""
    return shlex.join(
        ["ann", "registry", f"--registry={registry.root}", *args]
        + [f"--mlflow_uri={shown_uri(tracking_uri)}"]
    )


def _unreached(change: str, uris: Sequence[str], fix: str, commands: Sequence[str]) -> str:
    """The warning (one line) naming the servers a change did not reach, and how to fix each."""
    return (
        f"{change} in MLflow at {', '.join(map(shown_uri, uris))}, where it is mirrored too (a "
        f"command changes MLflow only at its --mlflow_uri); {fix}: {'; '.join(commands)}"
    )


def unreached_aliases(
    registry: Registry, name: str, aliases: Sequence[str], version: int | None, reached: str
) -> str | None:
    """Warns of the servers (every URI a version of `name` was mirrored to but `reached`, the
    command's --mlflow_uri or "") where `aliases` were not pointed at `version` (None: not
    deleted), with the command that updates each; None when there are none."""
    uris = [uri for uri in mirror_uris(registry, name) if uri != normal_uri(reached)]
    if not uris or not aliases:
        return None
    what = f"alias{'es' * (len(aliases) > 1)} {', '.join(map(repr, aliases))} of {name!r}"
    if version is None:
        # Only where MLflow may hold one (`mlflow_aliases`: a server it was never set at, or
        # deleted from, was named with a command that then failed, ann's alias being gone).
        held = {uri: mlflow_aliases(registry, name, uri) for uri in uris}
        there = {uri: [a for a in aliases if held[uri] is None or a in held[uri]] for uri in uris}
        uris = [uri for uri in uris if there[uri]]
        if not uris:
            return None
        commands = [
            _command(registry, uri, "alias", name, alias, "--delete")
            for uri in uris
            for alias in there[uri]
        ]
        return _unreached(f"{what} not deleted", uris, "delete there with", commands)
    mv = registry.get_version(name, version)
    there = mirrors(mv)
    held = {uri: mlflow_aliases(registry, name, uri) for uri in uris}
    # A server whose record has an alias on this version already is not named for it: a move
    # back after a move that failed there (version 2 not mirrored) warned that MLflow's alias
    # was "not moved" to version 1, where it had never left.
    missing = {
        uri: [
            a
            for a in aliases
            if uri not in there or held[uri] is None or held[uri].get(a) != version
        ]
        for uri in uris
    }
    uris = [uri for uri in uris if missing[uri]]
    if not uris:
        return None
    aliases = [a for a in aliases if any(a in missing[uri] for uri in uris)]
    what = f"alias{'es' * (len(aliases) > 1)} {', '.join(map(repr, aliases))} of {name!r}"
    commands = []
    for uri in uris:
        if uri in there:
            commands += [
                _command(registry, uri, "alias", name, a, str(version)) for a in missing[uri]
            ]
        else:  # mirroring it there sets its aliases
            commands.append(_command(registry, uri, "mirror", mv.uri))
    # "not moved" of an alias MLflow never held (a new one) said it had one to move: "not set"
    # where every server's record (`mlflow_aliases`) says it holds none of them.
    if all(held[u] is not None and not set(aliases) & set(held[u]) for u in uris):
        return _unreached(f"{what} not set to {mv.uri}", uris, "set there with", commands)
    return _unreached(f"{what} not moved to {mv.uri}", uris, "move there with", commands)


def unreached_tag(
    registry: Registry, name: str, key: str, value: str, version: int | None, reached: str
) -> str | None:
    """Warns of the servers the model (or the version) was mirrored to but `reached` where the
    tag was not set, with the commands; None when there are none."""
    if version is None:
        uris, what = mirror_uris(registry, name), repr(name)
    else:
        mv = registry.get_version(name, version)
        uris, what = sorted(mirrors(mv)), mv.uri
    uris = [uri for uri in uris if uri != normal_uri(reached)]
    if not uris:
        return None
    flag = [] if version is None else [f"--version={version}"]
    commands = [_command(registry, uri, "tag", name, key, value, *flag) for uri in uris]
    return _unreached(f"tag {key!r} of {what} not set", uris, "set it there with", commands)


def unreached_delete(mv: ModelVersion, reached: str) -> str | None:
    """Warns of the mirrors of `mv` (deleted in ann's registry, its tags read before) left in
    MLflow at every URI but `reached`; None when there are none. ann no longer knows the
    version, so they are deleted by hand."""
    reached = normal_uri(reached)
    left = {uri: number for uri, (number, _) in sorted(mirrors(mv).items()) if uri != reached}
    if not left:
        return None
    commands = [
        f"MlflowClient({shown_uri(uri)!r}).delete_model_version({mv.name!r}, '{number}')"
        for uri, number in left.items()
    ]
    return _unreached(
        f"{mv.uri}'s mirror{'s' * (len(left) > 1)} (version "
        f"{', '.join(str(n) for n in left.values())}) not deleted",
        list(left),
        "delete by hand (MLflow's UI, or in Python)",
        commands,
    )


def _failed(
    what: str, tracking_uri: str, error: BaseException, retry: str, kept: str = "the change"
) -> MirrorError:
    """`kept`: what ann's registry holds regardless (`mirror` changes nothing there: it said
    "holds the change" after a failed backfill)."""
    return MirrorError(
        f"{what} at {shown_uri(tracking_uri)} failed: {_said(error).rstrip('.')}. ann's registry "
        f"holds {kept}; retry with: {retry}"
    )


def _said(error: BaseException) -> str:
    """An MLflow error's text on one line: its Databricks and SQLAlchemy errors span several
    (an `error:` line followed by more)."""
    return " ".join(str(error).split())


def _tag_keys(tracking_uri: str) -> tuple[str, str, str]:
    """The tags (tracking URI, run id, MLflow version) recording a mirror into `tracking_uri`:
    `mlflow.KEY.*`, KEY from the URI's sha256 (a URI may be longer than a tag key, and hold
    dots)."""
    key = _uri_key(tracking_uri)
    return f"mlflow.{key}.tracking_uri", f"mlflow.{key}.run_id", f"mlflow.{key}.version"


def _uri_key(tracking_uri: str) -> str:
    """KEY of the `mlflow.KEY.*` tags of one tracking URI (as spelt): its sha256's first 12."""
    return hashlib.sha256(tracking_uri.encode()).hexdigest()[:12]


def mirrors(mv: ModelVersion) -> dict[str, tuple[int, str]]:
    """Every tracking URI `mv` was mirrored to (`normal_uri`'s spelling): its MLflow version
    number and run id there. Reads the tags of registries written before (one mapping per
    version; a URI in another spelling) too; of two spellings of one URI, the first read."""
    found: dict[str, tuple[int, str]] = {}
    tags = mv.tags
    if LEGACY_URI in tags and tags.get(LEGACY_VERSION, "").isdigit():
        found[normal_uri(tags[LEGACY_URI])] = (int(tags[LEGACY_VERSION]), tags.get(LEGACY_RUN, ""))
    for key, uri in tags.items():
        if not (key.startswith("mlflow.") and key.endswith(".tracking_uri")):
            continue
        uri_key, run_key, version_key = _tag_keys(uri)  # the key of the spelling recorded
        if key == uri_key and tags.get(version_key, "").isdigit():
            found.setdefault(normal_uri(uri), (int(tags[version_key]), tags.get(run_key, "")))
    return found


def mirrored_version(mv: ModelVersion, tracking_uri: str) -> int | None:
    """The MLflow version `mv` was mirrored to at `tracking_uri` (in any spelling), if it was."""
    found = mirrors(mv).get(normal_uri(tracking_uri))
    return found[0] if found else None


def mirror_uris(registry: Registry, name: str) -> list[str]:
    """Every tracking URI a live version of `name` was mirrored to, sorted."""
    return sorted({uri for mv in registry.versions(name) for uri in mirrors(mv)})


def _aliases_key(tracking_uri: str) -> str:
    """The model tag recording the aliases MLflow at `tracking_uri` (any spelling) holds."""
    return f"mlflow.{_uri_key(normal_uri(tracking_uri))}.aliases"  # the mapping's KEY


def mlflow_aliases(registry: Registry, name: str, tracking_uri: str) -> dict[str, int] | None:
    """The aliases of `name` that MLflow at `tracking_uri` holds, each with the ann version
    whose mirror it points at, as the changes ann made there recorded them (`mirror`, `alias`
    and `delete` with that --mlflow_uri; a change made without it leaves MLflow as it was):
    the model tag `mlflow.KEY.aliases` (`champion:2,challenger:3`). None where it is not
    known: the model was mirrored there before ann recorded them, or the tag is not one."""
    tags = next((m["tags"] for m in registry.models() if m["name"] == name), {})
    return _held(tags.get(_aliases_key(tracking_uri)))


def _held(value: str | None) -> dict[str, int] | None:
    """The record `champion:2,challenger:3` as {alias: version}; None for no record or not one."""
    if value is None:
        return None
    held = {}
    for item in filter(None, value.split(",")):
        alias, _, version = item.rpartition(":")
        if not version.isdigit():
            return None
        held[alias] = int(version)
    return held


def _record_aliases(
    registry: Registry,
    name: str,
    tracking_uri: str,
    change: Callable[[dict[str, int]], None],
    start: bool = False,
) -> None:
    """Applies `change` to the record of the aliases MLflow at `tracking_uri` holds (after
    MLflow made it), in one registry transaction (two commands at once each keep the other's
    change); a record not kept yet stays unknown, unless `start` (the model's first mirror
    there: MLflow holds what it set)."""

    def update(value: str | None) -> str | None:
        held = _held(value)
        if held is None and not start:
            return None
        held = held or {}
        change(held)
        text = ",".join(f"{alias}:{version}" for alias, version in sorted(held.items()))
        return text if len(text) <= MAX_TAG_VALUE else None  # more than a tag holds: unknown

    registry.update_tag(name, _aliases_key(tracking_uri), update)


def mirror(registry: Registry, name: str, version: int, tracking_uri: str) -> int:
    """Mirrors one registry version (and its aliases); returns its MLflow version number.

    Idempotent, also after a partial failure: the run is found again by its tags (registry
    directory, `models:/` URI and manifest sha256) and finished if it was not, and the model
    version by that run, so a retry never leaves a second run or version behind. Raises
    MirrorError (with the command to retry) if the MLflow side fails, and before it is
    touched artifact.IntegrityError where the version's files fail their checks or its
    manifest is not what its function takes and gives (`artifact.check_function`)."""
    mv = registry.get_version(name, version)
    done = mirrored_version(mv, tracking_uri)
    if done is not None:
        return done
    # Before MLflow is touched: a version an older ann registered without the loader's check of
    # its manifest against its function (an edited input dtype) is refused in its one line.
    artifact.check_function(mv.path, artifact.read_manifest(mv.path, mv.manifest_sha256))
    first = all(mirrored_version(other, tracking_uri) is None for other in registry.versions(name))
    try:  # the client too: MLflow 3 refuses a file: store there (MLFLOW_ALLOW_FILE_STORE)
        client = _client(tracking_uri)
        run_id = _finished_run(client, registry, mv)
        _create_unless_exists(
            lambda: client.create_registered_model(name, tags={"ann.registry": "mirror"})
        )
        number = _model_version(client, mv, run_id)
        for alias in mv.aliases:
            if Registry.mirrored_alias(alias):  # an older ann's `v1` MLflow refuses: left
                client.set_registered_model_alias(name, alias, str(number))
    except (MirrorError, artifact.IntegrityError):
        raise
    except Exception as e:  # MlflowException, or the HTTP client's own errors
        retry = _command(registry, tracking_uri, "mirror", mv.uri)
        raise _failed(f"mirroring {mv.uri} into MLflow", tracking_uri, e, retry, mv.uri) from e
    recorded = normal_uri(tracking_uri)  # one spelling recorded; messages keep the user's
    uri_key, run_key, version_key = _tag_keys(recorded)
    registry.set_tags(name, {uri_key: recorded, run_key: run_id, version_key: str(number)}, version)
    _record_aliases(
        registry,
        name,
        tracking_uri,
        lambda held: held.update(dict.fromkeys(mv.aliases, version)),
        start=first,
    )
    return number


def _experiment_id(client: Any) -> str:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        _create_unless_exists(lambda: client.create_experiment(EXPERIMENT))
        experiment = client.get_experiment_by_name(EXPERIMENT)
    return experiment.experiment_id


def _finished_run(client: Any, registry: Registry, mv: ModelVersion) -> str:
    """The id of the run holding `mv`: an earlier attempt's if there is one (finished here if it
    was not), else a new one."""
    experiment_id = _experiment_id(client)
    # The URI and sha256 cannot hold quotes (core.NAME, hex); the directory can, so it is
    # compared here rather than in the filter.
    found = [
        run
        for run in client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{RUN_URI}` = '{mv.uri}' and "
            f"tags.`{RUN_SHA}` = '{mv.manifest_sha256}'",
            max_results=1000,
        )
        if run.data.tags.get(RUN_REGISTRY) == registry.root
    ]
    found.sort(key=lambda run: (run.info.status != "FINISHED", run.info.start_time))
    if found and found[0].info.status == "FINISHED":
        return found[0].info.run_id
    run = found[0] if found else _create_run(client, experiment_id, registry, mv)
    run_id = run.info.run_id
    try:
        _log_run(client, run, mv)
        _upload(client, run_id, mv)
        client.set_terminated(run_id, "FINISHED")
    except Exception:
        try:  # shown as failed until a retry finds and finishes it
            client.set_terminated(run_id, "FAILED")
        except Exception:  # noqa: BLE001 - the first error is the one to report
            pass
        raise
    return run_id


def _create_run(client: Any, experiment_id: str, registry: Registry, mv: ModelVersion) -> Any:
    lineage = mv.lineage
    source = lineage.get("source") or {}
    tags = {
        RUN_URI: mv.uri,
        RUN_SHA: mv.manifest_sha256,
        RUN_REGISTRY: registry.root,
        "ann.source_workdir": str(source.get("workdir")),
        "ann.source_step": str(source.get("step")),
        "mlflow.source.git.commit": str((lineage.get("git") or {}).get("commit")),
    }
    return client.create_run(experiment_id, run_name=f"{mv.name}-v{mv.version}", tags=tags)


def _log_run(client: Any, run: Any, mv: ModelVersion) -> None:
    """Logs the config as params and the eval metrics, skipping what an earlier attempt logged
    (MLflow refuses a param logged twice only if its value changed; a metric would repeat)."""
    from mlflow.entities import Metric, Param, RunTag

    lineage = mv.lineage
    step = int((lineage.get("source") or {}).get("step") or 0)
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), now, step)
        for key, value in (lineage.get("metrics") or {}).items()
        if isinstance(value, (int, float)) and key not in run.data.metrics
    ]
    params = [
        Param(key, value)
        for key, value in _flatten(lineage.get("config") or {})
        if key not in run.data.params
    ]
    for i in range(0, max(len(params), 1), _PARAMS_PER_CALL):
        client.log_batch(
            run.info.run_id,
            metrics=metrics if i == 0 else [],
            params=params[i : i + _PARAMS_PER_CALL],
            tags=[RunTag("ann.kind", "registry-version")] if i == 0 else [],
        )


def _upload(client: Any, run_id: str, mv: ModelVersion) -> None:
    """Uploads the export under `model/`: a copy of exactly the files its manifest lists, each
    checked against the sha256 recorded at registration on the way (`ann.artifact`)."""
    manifest, raw = artifact.read_manifest_bytes(mv.path, mv.manifest_sha256)
    with tempfile.TemporaryDirectory(prefix="ann-mirror-") as tmp:
        staged = os.path.join(tmp, artifact.MANIFEST)  # in $TMPDIR: a full one is named
        with atomic.writing(staged), open(staged, "xb") as f:
            f.write(raw)
        for file_name in manifest["files"]:
            artifact.copy_verified(mv.path, manifest, file_name, tmp)
        client.log_artifacts(run_id, tmp, "model")  # overwrites an earlier attempt's files


def _model_version(client: Any, mv: ModelVersion, run_id: str) -> int:
    """The MLflow version made from `run_id` by an earlier attempt, or a new one."""
    found = client.search_model_versions(f"name = '{mv.name}' and run_id = '{run_id}'")
    if found:
        return min(int(v.version) for v in found)
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    created = client.create_model_version(
        mv.name,
        source,
        run_id=run_id,
        tags={"ann.version": str(mv.version), "ann.manifest_sha256": mv.manifest_sha256},
        description=mv.description or None,
    )
    return int(created.version)


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


def _require_mirrored(
    registry: Registry,
    mv: ModelVersion,
    tracking_uri: str,
    change: str,
    left: str,
    then: str = "",
) -> int:
    """The MLflow version `mv` was mirrored to at `tracking_uri`. Raises MirrorError where it
    was not, saying that ann's registry holds `change` (made before MLflow is asked: the
    registry is the source of truth) and MLflow at the URI does not (`left`: what stayed as it
    was there), with the fix: mirror it (which sets its aliases there), then `then` (the
    command to repeat, or "" where the mirror is the whole fix)."""
    number = mirrored_version(mv, tracking_uri)
    if number is None:
        fix = _command(registry, tracking_uri, "mirror", mv.uri)
        fix = (
            f", then repeat this: {fix}; {then}"
            if then
            else f" (that sets its aliases there): {fix}"
        )
        raise MirrorError(
            f"{change} in ann's registry only: {mv.uri} was not mirrored into MLflow at "
            f"{shown_uri(tracking_uri)}, where {left}; mirror it first{fix}"
        )
    return number


def set_alias(
    registry: Registry, name: str, alias: str, version: int, tracking_uri: str
) -> tuple[int, bool]:
    """Points `alias` at the MLflow version mirrored from ann's `version` (already aliased);
    returns that MLflow version's number and whether MLflow changed (False: it pointed there
    already, so a repeat says "already" rather than claiming a change)."""
    mv = registry.get_version(name, version)
    change = f"models:/{name}@{alias} -> {mv.uri}"
    held = mlflow_aliases(registry, name, tracking_uri)  # None: not recorded
    left = (
        "the alias was left as it was"
        if held is None
        else f"it still points at models:/{name}/{held[alias]}'s mirror"
        if alias in held
        else "the alias was not set"
    )
    number = _require_mirrored(registry, mv, tracking_uri, change, left)
    try:
        client = _client(tracking_uri)
        changed = _alias_version(client, name, alias) != str(number)
        if changed:
            client.set_registered_model_alias(name, alias, str(number))
    except MirrorError:
        raise
    except Exception as e:
        # `mirror` would be a no-op on a mirrored version: the retry is this command again.
        retry = _command(registry, tracking_uri, "alias", name, alias, str(version))
        raise _failed(
            f"pointing alias {alias!r} at {mv.uri} in MLflow", tracking_uri, e, retry
        ) from e
    _record_aliases(registry, name, tracking_uri, lambda held: held.update({alias: version}))
    return number, changed


def _alias_version(client: Any, name: str, alias: str) -> str | None:
    """The MLflow version `alias` of `name` points at there (a string), None where it has none."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception as e:
        # MLflow 3 says INVALID_PARAMETER_VALUE "Registered model alias X not found."
        if _code(e) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") and (
            "not found" in str(e)
        ):
            return None
        raise


def has_alias(name: str, alias: str, tracking_uri: str) -> bool:
    """Whether model `name` in MLflow at `tracking_uri` has `alias` (False where it has no such
    model either). Raises MirrorError where MLflow cannot be asked."""
    try:
        return _alias_version(_client(tracking_uri), name, alias) is not None
    except MirrorError:
        raise
    except Exception as e:
        if _code(e) == "RESOURCE_DOES_NOT_EXIST":
            return False  # no such model there
        raise MirrorError(
            f"reading alias {alias!r} of {name!r} in MLflow at {tracking_uri} failed: {_said(e)}"
        ) from e


def delete_alias(
    registry: Registry, name: str, alias: str, tracking_uri: str, has: bool | None = None
) -> bool:
    """Deletes `alias` in MLflow too (already deleted in ann's registry); False where MLflow
    had no such alias (asked first: a SQLite store deletes a missing alias without a word).
    `has`: `has_alias`'s answer where the caller asked it already (not asked again: one round
    trip), None where it did not. Either way MLflow holds no such alias after it
    (`mlflow_aliases`)."""
    deleted = has is not False
    try:
        if deleted:
            client = _client(tracking_uri)
            if has is None and _alias_version(client, name, alias) is None:
                deleted = False
            else:
                client.delete_registered_model_alias(name, alias)
    except MirrorError:
        raise
    except Exception as e:
        if _code(e) != "RESOURCE_DOES_NOT_EXIST":  # never mirrored, or deleted there already
            raise MirrorError(
                f"deleting alias {alias!r} of {name!r} in MLflow at {tracking_uri} failed: "
                f"{_said(e)}"
            ) from e
        deleted = False
    _record_aliases(registry, name, tracking_uri, lambda held: held.pop(alias, None))
    return deleted


def delete_version(registry: Registry, mv: ModelVersion, tracking_uri: str) -> int | None:
    """Deletes the MLflow version `mv` (already deleted in ann's registry, its tags read
    before) was mirrored to at `tracking_uri`; returns its number, None when it was not
    mirrored there (or is gone there already). MLflow's aliases of it go with it
    (`mlflow_aliases`)."""
    number = mirrored_version(mv, tracking_uri)
    if number is None:
        return None
    try:
        _client(tracking_uri).delete_model_version(mv.name, str(number))
    except Exception as e:
        if _code(e) != "RESOURCE_DOES_NOT_EXIST":
            raise MirrorError(
                f"deleting {mv.uri}'s mirror (version {number}) in MLflow at {tracking_uri} "
                f"failed: {_said(e)}; delete it there by hand"
            ) from e
        number = None

    def gone(held: dict[str, int]) -> None:
        for alias in [a for a, v in held.items() if v == mv.version]:
            del held[alias]

    _record_aliases(registry, mv.name, tracking_uri, gone)
    return number


def set_tag(
    registry: Registry, name: str, key: str, value: str, version: int | None, tracking_uri: str
) -> tuple[int | None, bool]:
    """Sets a model tag, or a version tag on the mirrored version, in MLflow too; returns the
    MLflow version tagged (None for a model tag) and whether MLflow changed (False: the tag
    held `value` there already)."""
    if version is None:
        try:
            client = _client(tracking_uri)
            if client.get_registered_model(name).tags.get(key) == value:
                return None, False
            client.set_registered_model_tag(name, key, value)
        except MirrorError:
            raise
        except Exception as e:
            hint = "; mirror a version of it first" if _code(e) == "RESOURCE_DOES_NOT_EXIST" else ""
            raise MirrorError(
                f"tagging {name!r} in MLflow at {tracking_uri} failed: {_said(e)}{hint}"
            ) from e
        return None, True
    mv = registry.get_version(name, version)
    again = _command(registry, tracking_uri, "tag", name, key, value, f"--version={version}")
    number = _require_mirrored(
        registry, mv, tracking_uri, f"tag {key}={value} of {mv.uri}", "nothing was tagged", again
    )
    try:
        client = _client(tracking_uri)
        if client.get_model_version(name, str(number)).tags.get(key) == value:
            return number, False
        client.set_model_version_tag(name, str(number), key, value)
    except MirrorError:
        raise
    except Exception as e:
        retry = _command(registry, tracking_uri, "tag", name, key, value, f"--version={version}")
        raise _failed(f"tagging {mv.uri} in MLflow", tracking_uri, e, retry) from e
    return number, True
