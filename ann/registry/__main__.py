"""The model registry's command line:

    ann registry --registry=DIR register EXPORT_DIR [--name=digits] [--alias=champion]
                                              [--allow_duplicate] [--allow_signature_change]
    ann registry --registry=DIR list
    ann registry --registry=DIR versions NAME
    ann registry --registry=DIR alias NAME ALIAS VERSION     (--delete to remove)
    ann registry --registry=DIR tag NAME KEY VALUE [--version=N]
    ann registry --registry=DIR delete NAME VERSION
    ann registry --registry=DIR resolve models:/NAME@champion
    ann registry --registry=DIR show models:/NAME/3
    ann registry --registry=DIR mirror models:/NAME/3 --mlflow_uri=URI

The command, its arguments and every flag are checked before the registry is opened; a
mistake ends in one line (`error: ...`), exit 1. `--registry` defaults to $ANN_REGISTRY, else
./registry; `--mlflow_uri` to $ANN_MLFLOW_URI.
"""

# (This docstring is `ann registry --help`: what a maintainer needs goes here, not there.)
# `main(argv)` runs one command on flags already parsed (`check_command` first); `run()` defines
# the flags and runs `main` through `ann.cli.run` (flag parsing and the one-line error
# wrapper). The only module that imports both the registry core (ann/registry/__init__.py) and
# the MLflow mirror.

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import shlex
import time
from collections.abc import Callable, Sequence
from typing import Any

from absl import flags

from ann import arguments, artifact, cli, console, directory_kind
from ann.registry import mlflow_mirror
from ann.registry.core import (
    MAX_DESCRIPTION,
    URI,
    ModelVersion,
    Registry,
    RegistryError,
    default_root,
    files_gone,
    not_a_uri,
)
from ann.registry.spec import resolve

# A bad flag, argument, registry or export: one line, exit 1 (RegistryError, MirrorError and
# artifact.IntegrityError are ValueErrors; a missing or unreadable file is an OSError).
ERRORS = (ValueError, OSError)


def _summary(mv: ModelVersion) -> str:
    metrics = mv.lineage.get("metrics") or {}
    # As runs show them; null is a non-finite metric (manifest.json is strict JSON): nan.
    shown = " ".join(
        f"{k}={metrics[k] if metrics[k] is not None else math.nan:.4f}"
        for k in cli.metric_order(metrics)
    )
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mv.created))
    source = mv.lineage.get("source") or {}
    return (
        f"{mv.uri}  created {created}  aliases [{', '.join(mv.aliases)}]"
        + (f"  tags [{_tags(mv.tags)}]" if mv.tags else "")  # `show` had them alone
        + f"  run {source.get('workdir')} step {source.get('step')}  {shown}"
        # Listed as any other, and resolving it was the first sign its files had been removed.
        + (f"  FILES GONE from {mv.path}" if files_gone(mv.path) else "")
    )


def _tags(tags: dict[str, str]) -> str:
    """`stage=prod, team=vision`: tags as `list` and `versions` show them."""
    return ", ".join(f"{k}={v}" for k, v in sorted(_shown_tags(tags).items()))


def _shown_tags(tags: dict[str, str]) -> dict[str, str]:
    """`tags` with a password in a recorded mirror's tracking URI as `***` (ann refuses such a
    URI now; a registry may hold one recorded before)."""
    return {
        k: mlflow_mirror.shown_uri(v) if k.endswith("tracking_uri") else v for k, v in tags.items()
    }


def _check_version(command: str, text: str) -> None:
    """Refuses a VERSION argument that is not a version number as models:/NAME/VERSION reads
    one (arguments.version_number: "01" is refused, as --version=01 is)."""
    if arguments.version_number(text) is None:
        fixed = arguments.zeros_dropped(text)
        hint = f"; write {fixed}" if fixed else ""
        raise RegistryError(f"{command}: VERSION {text!r} must be a version number >= 1{hint}")


def _parse_tags(items: Sequence[str]) -> dict[str, str]:
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise RegistryError(f"--tag={item!r} must be KEY=VALUE")
        Registry._check_tag(key, value)
        tags[key] = value
    return tags


USAGE = {
    "register": "EXPORT_DIR",
    "list": "",
    "versions": "NAME",
    "alias": "NAME ALIAS VERSION (NAME ALIAS with --delete)",
    "tag": "NAME KEY VALUE",
    "delete": "NAME VERSION",
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
    "allow_duplicate": "register",
    "allow_signature_change": "register",
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
        "delete": 2,
        "resolve": 1,
        "show": 1,
        "mirror": 1,
    }
    if command and command not in counts:
        close = difflib.get_close_matches(command, list(counts), n=1)
        raise RegistryError(
            f"unknown registry command {command!r}"
            + (f"; did you mean `ann registry {close[0]}`?" if close else "")
            + f" (commands: {', '.join(counts)})"
        )
    usage = f"usage: ann registry --registry=DIR {'|'.join(USAGE)} ARGS; see `ann registry --help`"
    if not command:
        raise RegistryError(f"give a registry command ({usage})")
    # Before the arguments are counted: `delete --version=2 digits` is this mistake, not a
    # missing argument.
    for flag, owner in ONLY_FOR.items():
        value = getattr(f, flag)
        if command != owner and value is not None and value is not False and value != []:
            raise RegistryError(f"--{flag} is for `{owner}` only; drop it from `{command}`")
    # The read-only commands never reach MLflow: given on the command line (not from
    # $ANN_MLFLOW_URI, which they leave alone), it was ignored, even `ftp://x`.
    if command in READ_ONLY and f.mlflow_uri and f["mlflow_uri"].present:
        users = [c for c in USAGE if c not in READ_ONLY]
        raise RegistryError(
            f"--mlflow_uri is for `{'`, `'.join(users[:-1])}` and `{users[-1]}` only; "
            f"drop it from `{command}`"
        )
    if len(args) != counts[command]:
        got = " ".join(args) if args else "nothing"
        raise RegistryError(
            f"{command} takes {USAGE[command] or 'no arguments'}, got {got} ({usage})"
        )
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
    if command == "alias" and not f.delete:  # an older ann's alias (v1) can still be deleted
        Registry._check_alias(args[1])
        _check_version(command, args[2])
    if command == "delete":
        _check_version(command, args[1])
    if command in ("resolve", "show", "mirror") and not URI.match(args[0]):
        # A directory given where a registry URI goes: said as what it is, and what it takes.
        kinds = directory_kind.of(os.path.expanduser(args[0]))
        said = ""
        if directory_kind.EXPORT in kinds:
            said = (
                f"; {command} takes a registered version's URI, and {args[0]} is an export "
                f"directory (register it: ann registry register {args[0]} --name=NAME)"
            )
        elif kinds:
            said = (
                f"; {command} takes a registered version's URI, and {args[0]} is "
                f"{directory_kind.NAMES[kinds[0]]}"
            )
        raise RegistryError(not_a_uri(args[0], said))
    if command == "mirror" and not f.mlflow_uri:
        raise RegistryError("mirror: give the MLflow tracking server as --mlflow_uri=URI")
    if f.mlflow_uri and command not in READ_ONLY:
        # Named where it came from: a URI refused as "--mlflow_uri=..." that came from the
        # environment sent the user looking for a flag they never gave.
        given = "--mlflow_uri" if flags.FLAGS["mlflow_uri"].present else "$ANN_MLFLOW_URI"
        mlflow_mirror.check_mlflow_uri(f.mlflow_uri, given)


def _version(f: Any, uri: str) -> ModelVersion:
    version = resolve(uri, _given(f)).version
    assert version is not None  # check_command let only registry URIs through
    return version


def _register(registry: Registry, f: Any, args: Sequence[str], mlflow_uri: str) -> None:
    mv = registry.register(
        args[0],
        f.name,
        f.description or "",
        _parse_tags(f.tag or []),
        f.alias or [],
        allow_duplicate=f.allow_duplicate,
        allow_signature_change=f.allow_signature_change,
    )
    print(f"registered {args[0]} as {mv.uri}" + (f" @{','.join(mv.aliases)}" * bool(mv.aliases)))
    # Allowed (a second name for one model), but more often a --name mistyped or forgotten.
    if elsewhere := registry.registered_elsewhere(mv.name, mv.manifest_sha256):
        # With --registry where given: copied without it, the command deleted from another.
        where = f" --registry={shlex.quote(f.registry)}" if _given(f) else ""
        console.note(
            f"the same export (manifest sha256) is also {', '.join(elsewhere)}; if --name was "
            f"mistyped, delete this one (ann registry{where} delete {mv.name} {mv.version})"
        )
    _warn(mlflow_mirror.unreached_aliases(registry, mv.name, mv.aliases, mv.version, mlflow_uri))
    if mlflow_uri:
        _mirror_version(registry, mv, mlflow_uri)


def _warn(warning: str | None) -> None:
    """Says a warning where there is one: which MLflow servers a change did not reach (before
    the one it reaches is tried: a failure there does not hide them), the version directories
    registry.db does not list."""
    if warning:
        cli.warn(warning)


def _mirror(registry: Registry, f: Any, args: Sequence[str], mlflow_uri: str) -> None:
    _mirror_version(registry, _version(f, args[0]), mlflow_uri)


def _mirror_version(registry: Registry, mv: ModelVersion, mlflow_uri: str) -> None:
    done = mlflow_mirror.mirrored_version(mv, mlflow_uri)  # in any spelling of the URI
    if done is not None:  # a no-op: "mirrored" said it had done something
        print(f"{mv.uri} is already in MLflow at {mlflow_uri} as version {done}")
        return
    number = mlflow_mirror.mirror(registry, mv.name, mv.version, mlflow_uri)
    print(f"mirrored {mv.uri} into MLflow at {mlflow_uri} as version {number}")


def _list(registry: Registry, f: Any, args: Sequence[str], mlflow_uri: str) -> None:
    listed: dict[str, list[int]] = {}
    for m in registry.models():
        versions = registry.versions(m["name"])
        listed[m["name"]] = [mv.version for mv in versions]
        gone = [mv.version for mv in versions if files_gone(mv.path)]
        print(
            f"{m['name']}  latest version {m['latest']}  aliases [{', '.join(m['aliases'])}]"
            + (f"  tags [{_tags(m['tags'])}]" if m["tags"] else "")  # as `versions` shows them
            # As `versions` marks them: the list said nothing of them.
            + (f"  FILES GONE: version {', '.join(map(str, gone))}" if gone else "")
        )
    _warn(registry.unlisted_line(listed))


def _versions(registry: Registry, f: Any, args: Sequence[str], mlflow_uri: str) -> None:
    versions = registry.versions(args[0])
    for mv in versions:
        print(_summary(mv))
    _warn(registry.unlisted_line({args[0]: [mv.version for mv in versions]}, args[0]))


def _alias(registry: Registry, f: Any, args: Sequence[str], mlflow_uri: str) -> None:
    name, alias = args[0], args[1]
    if f.delete:
        in_mlflow = None  # MLflow's answer, where asked: delete_alias then does not ask again
        if mlflow_uri and not _has_alias(registry, name, alias):
            in_mlflow = mlflow_mirror.has_alias(name, alias, mlflow_uri)
        if in_mlflow:
            # Deleted in ann's registry before (the command a warning named, or a retry after
            # MLflow failed): this deletes it in MLflow only. An alias in neither (a typo) is
            # refused below, as without --mlflow_uri: it said "deleted it in MLflow too".
            print(f"alias {alias!r} of {name!r} is deleted in ann's registry already")
        else:
            try:
                registry.delete_alias(name, alias)  # refused naming the model's aliases
            except RegistryError as e:
                if in_mlflow is False:  # asked: in neither (a typo, or a repeat)
                    raise RegistryError(f"{e}; nor has MLflow at {mlflow_uri}") from e
                raise
            print(f"deleted alias {alias!r} of {name!r}")
            _warn(mlflow_mirror.unreached_aliases(registry, name, [alias], None, mlflow_uri))
        if mlflow_uri:
            # As `delete` names its mirror: the line above said nothing of MLflow.
            if mlflow_mirror.delete_alias(registry, name, alias, mlflow_uri, in_mlflow):
                print(f"deleted it in MLflow at {mlflow_uri} too")
            else:
                print(
                    f"MLflow at {mlflow_uri} has no alias {alias!r} of {name!r}: nothing to delete"
                )
        return
    version = int(args[2])
    moved = not _has_alias(registry, name, alias, version)
    registry.set_alias(name, alias, version)
    # A repeat says so, as the MLflow line below does: "->" again read as a change.
    print(
        f"models:/{name}@{alias} -> models:/{name}/{version}"
        if moved
        else f"models:/{name}@{alias} points at models:/{name}/{version} already"
    )
    if moved:  # a command that changes nothing here (a warning's fix for one server) names none
        _warn(mlflow_mirror.unreached_aliases(registry, name, [alias], version, mlflow_uri))
    if mlflow_uri:
        number, changed = mlflow_mirror.set_alias(registry, name, alias, version, mlflow_uri)
        # As `delete` and `mirror` say what they did there: the line alone said nothing of it.
        print(
            f"pointed it at its mirror in MLflow at {mlflow_uri} (version {number})"
            if changed
            else f"MLflow at {mlflow_uri} points it at its mirror already (version {number})"
        )


def _has_alias(registry: Registry, name: str, alias: str, version: int | None = None) -> bool:
    """Whether `name` has `alias` (on `version`, if given; an unknown model is refused as
    one)."""
    return any(
        alias in mv.aliases and version in (None, mv.version) for mv in registry.versions(name)
    )


def _tag(registry: Registry, f: Any, args: Sequence[str], mlflow_uri: str) -> None:
    name, key, value = args
    before = _tags_of(registry, name, f.version).get(key)
    registry.set_tag(name, key, value, f.version)
    tagged = f"{name}{f'/{f.version}' if f.version else ''}"
    # The model's own tag, not a version's: said, as a forgotten --version tagged the model.
    whole = "" if f.version else " (the model's tag; --version=N tags version N)"
    # A repeat says so, as the MLflow line below does: "tagged" again read as a change.
    print(
        f"tagged {tagged}: {key}={value}{whole}"
        if before != value
        else f"{tagged} has {key}={value} already{whole}"
    )
    if before != value:  # as for an alias: a command that changes nothing here names none
        _warn(mlflow_mirror.unreached_tag(registry, name, key, value, f.version, mlflow_uri))
    if mlflow_uri:
        number, changed = mlflow_mirror.set_tag(registry, name, key, value, f.version, mlflow_uri)
        said = (
            f"tagged it in MLflow at {mlflow_uri} too"
            if changed
            else f"MLflow at {mlflow_uri} has {key}={value} already"
        )
        print(said + f" (version {number})" * bool(number))


def _tags_of(registry: Registry, name: str, version: int | None) -> dict[str, str]:
    """The tags of model `name` (None) or of its `version`; {} where there is none to read (no
    registry, model or version: set_tag refuses it then, with its own message)."""
    try:
        if version is not None:
            return registry.get_version(name, version).tags
        return next((m["tags"] for m in registry.models() if m["name"] == name), {})
    except RegistryError:
        return {}


def _delete(registry: Registry, f: Any, args: Sequence[str], mlflow_uri: str) -> None:
    mv = registry.delete_version(args[0], int(args[1]))
    print(f"deleted {mv.uri} (its files and tags; version {mv.version} is never given again)")
    _warn(mlflow_mirror.unreached_delete(mv, mlflow_uri))
    if mlflow_uri:
        number = mlflow_mirror.delete_version(registry, mv, mlflow_uri)
        # As `alias --delete` says so: silence read as "deleted there too".
        print(
            f"MLflow at {mlflow_uri} has no mirror of {mv.uri}: nothing to delete there"
            if number is None
            else f"deleted its mirror in MLflow at {mlflow_uri} (version {number})"
        )


def _resolve(registry: Registry, f: Any, args: Sequence[str], mlflow_uri: str) -> None:
    # Its path goes into builds (the Dockerfile's EXPORT): checked against the sha256 recorded
    # at register first, every file read, as serving would, so a modified version is not baked.
    resolved = resolve(args[0], _given(f))
    artifact.verify(resolved.path, resolved.manifest_sha256)
    print(resolved.path)


def _show(registry: Registry, f: Any, args: Sequence[str], mlflow_uri: str) -> None:
    mv = _version(f, args[0])
    shown = {**dataclasses.asdict(mv), "tags": _shown_tags(mv.tags)}
    print(json.dumps(shown, indent=1, default=str))


COMMANDS: dict[str, Callable[[Registry, Any, Sequence[str], str], None]] = {
    "register": _register,
    "list": _list,
    "versions": _versions,
    "alias": _alias,
    "tag": _tag,
    "delete": _delete,
    "resolve": _resolve,
    "show": _show,
    "mirror": _mirror,
}


def _given(f: Any) -> str | None:
    """--registry as given on the command line, or None where its default ($ANN_REGISTRY, else
    ./registry) stands: messages then name where the directory came from."""
    return f.registry if f["registry"].present else None


def main(argv: list[str]) -> None:
    """Runs `argv[1]` with the arguments `argv[2:]` on the parsed flags (absl's `main`)."""
    f = flags.FLAGS
    command, args = (argv[1], argv[2:]) if len(argv) > 1 else ("", [])
    check_command(command, args, f)
    mlflow_uri = f.mlflow_uri if command not in READ_ONLY else ""
    COMMANDS[command](Registry.at(_given(f)), f, args, mlflow_uri)


def define_flags() -> None:
    """The registry's flags (`--registry`, `--name`, ..., `--mlflow_uri`)."""
    flags.DEFINE_string("registry", default_root(), "Registry directory ($ANN_REGISTRY).")
    flags.DEFINE_string("name", None, "register: model name (default: the export's name).")
    flags.DEFINE_string("description", None, "register: a description of the version.")
    flags.DEFINE_multi_string("tag", None, "register: KEY=VALUE tags for the version.")
    flags.DEFINE_multi_string("alias", None, "register: aliases to point at the new version.")
    flags.DEFINE_boolean(
        "allow_duplicate",
        False,
        "register: make a new version even if this export (its manifest sha256) is already "
        "a version of the model (refused by default, naming that version).",
    )
    flags.DEFINE_boolean(
        "allow_signature_change",
        False,
        "register: make a new version even if its inputs or outputs differ from the latest "
        "version's (refused by default: its clients would not fit it).",
    )
    cli.define_bounded("version", None, "tag: tag this version instead of the model.", 1, 2**31 - 1)
    cli.EXAMPLES["version"] = 1
    flags.DEFINE_boolean("delete", False, "alias: delete the alias NAME ALIAS.")
    flags.DEFINE_string(
        "mlflow_uri",
        os.environ.get("ANN_MLFLOW_URI", ""),
        "MLflow tracking server to mirror register/alias/tag into, and for `mirror`.",
    )


def run() -> None:
    """`ann registry ...`: defines the flags, parses `sys.argv` and runs `main`
    through `ann.cli.run` (one-line errors, exit 1)."""
    define_flags()
    cli.run(main, errors=ERRORS, quiet=True)  # its output is its result: no absl log lines


if __name__ == "__main__":
    run()
