"""What a config file (`--config=FILE[:ARG]`, a Python file whose `get_config` builds the
run's config) says, read from its text: the line that sets a key (`assignment`, by `ast`), a
refusal of a key's name or value worded for that line with the fix in the file's own spelling
(`key_error`), and the ignorable keys its own lines set to what they held (`set_in_file`,
which builds the file again without a line). `ann.cli` (the command line) and `ann.sweep` (a
sweep's trials) use it; it imports neither."""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterable

import ml_collections

from ann import config as config_lib
from ann.config import ConfigError


def set_in_file(
    config: str, values: ml_collections.ConfigDict, overrides: Collection[str] = ()
) -> set[str]:
    """The keys another setting can make ignored (`config.READ_ONLY_WHEN`, and the `task`
    keys, whose experiment says which: `check_task_keys_apply`) that a line of the config file
    `config` (`FILE[:ARG]`) sets to the value they held without it, less those `overrides` set
    (an override's value is judged by the override's rule): such a key is refused where
    ignored even at its default, as an override that changes nothing is
    (`c.optimizer.momentum = 0.9` with adam, momentum's default, trained silently while
    `--config.optimizer.momentum=0.9` was refused). A line that sets a key back to its default
    (digits_finetune.py:scratch's `c.init_from_skip = ()`, after its fine-tune's
    `('head/.*',)`) is a change, and passes. `values`: the config built from the file."""
    path, _, arg = config.partition(":")
    plain = values.to_dict() if isinstance(values, ml_collections.ConfigDict) else values
    # Only where it matters (the file is built again for each): a key read here, or at another
    # value than its default, is judged without this (refused as ever where not read).
    # Nor where an override set what decides it (`--config.optimizer.name=adamw` on a file
    # of sgd's momentum = 0.9): the user changed that, not the key, and no flag undoes a line.
    keys = [
        k for k, (decider, _) in config_lib.READ_ONLY_WHEN.items()
        if decider not in overrides and not config_lib.is_read(plain, k)
        and config_lib.at_default(plain, k)
    ]  # fmt: skip
    if not any(o.startswith("task.") for o in overrides):  # their experiment says which
        keys += [f"task.{k}" for k in plain.get("task") or {}]
    return {k for k in keys if k not in overrides and _unchanged_by(path, arg, k, values)}


def _unchanged_by(path: str, arg: str, key: str, values: object) -> bool:
    """Whether the config file `path` (variant `arg`) sets `key` by an assignment that runs
    for this variant (the last that runs: one in a branch another variant takes states
    nothing) to what `key` would hold without it: the line changes nothing. False where the
    file cannot be built without it (its code reads the key back)."""
    places = {(a[4].lineno, a[4].col_offset) for a in _assignments(path, key)}
    if not places:  # no line of the file sets it (an import does): nothing to build
        return False
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except OSError:
        return False

    def build(drop: tuple[int, int] | None) -> tuple[object, list[tuple[int, int]]]:
        """The file's config with the assignment at `drop` left out, and where the key's
        assignments that ran are, in the order they ran."""

        class _Mark(ast.NodeTransformer):  # after each of them: where it is, noted
            def visit(self, node: ast.AST) -> ast.AST | list[ast.AST]:
                place = (getattr(node, "lineno", None), getattr(node, "col_offset", None))
                if isinstance(node, ast.stmt) and place in places:
                    mark = ast.parse(f"__ann_ran__.append({place})").body[0]
                    return [*([] if place == drop else [node]), ast.copy_location(mark, node)]
                return self.generic_visit(node)

        tree = ast.fix_missing_locations(_Mark().visit(ast.parse(source)))
        ran: list[tuple[int, int]] = []
        namespace = {"__file__": path, "__name__": "ann_config_probe", "__ann_ran__": ran}
        exec(compile(tree, path, "exec"), namespace)  # noqa: S102 - the user's own config file
        get_config = namespace["get_config"]
        return (get_config(arg) if arg else get_config()), ran  # type: ignore[operator]

    try:
        _, ran = build(None)
        if not ran:
            return False
        without, _ = build(ran[-1])
    except Exception:  # noqa: BLE001 - not buildable without the line: a change, which passes
        return False
    try:
        return config_lib.lookup(without, key) == config_lib.lookup(values, key)
    except config_lib.KeyLookupError:  # a task key only the line sets: it asks for the key
        return True


def key_error(error: BaseException, config: str, given: Iterable[str]) -> BaseException:
    """`ann.cli.in_config_file` for the config file `config` (`FILE[:ARG]`) and the dotted keys
    `given` that overrides set (a sweep's fixed and swept keys): `error` worded for the file
    where it is a `config.KeyValueError` whose key, and the keys it depends on (a range's
    bound), none of `given` set; where `given` sets only a bound, the command line's fix with
    the file's line of the key (`; num_epochs comes from --config=F line 7 (c.num_epochs =
    3)`); else `error` as it is. `config.KeyValueErrors`: each part
    worded so, the file named once ("--config=F line 5: ...; also line 7: ...")."""
    if isinstance(error, config_lib.KeyValueErrors):
        parts = [key_error(e, config, given) for e in error.errors]
        if all(part is e for part, e in zip(parts, error.errors, strict=True)):
            return error
        said, texts = f"--config={config.partition(':')[0]} ", []
        for part in map(str, parts):  # the file named once, where its first line is
            named = any(t.startswith(said) for t in texts)
            texts.append(part.removeprefix(said) if named else part)
        return ConfigError("; also ".join(texts))
    if not isinstance(error, config_lib.KeyValueError):
        return error
    key, path = error.key, config.partition(":")[0]

    def overridden(read: str) -> bool:
        return any(
            set_key == read or set_key.startswith(f"{read}.") or read.startswith(f"{set_key}.")
            for set_key in given
        )

    if overridden(key):
        return error  # the command line's
    found = assignment(path, key)
    if any(map(overridden, error.depends_on)):  # a bound the command line set: its fix is a flag
        if found is None:
            return error
        line, target, value = found  # and the file's line its bound was weighed against
        said = f"{error.what}; {error.bound_fix}" if error.bound_fix else str(error)
        return ConfigError(
            f"{said}; {key} comes from --config={path} line {line} ({target} = {value})"
        )
    if found is None:
        # Set by a module the file imports; a bound the file's own line set made it wrong
        # (`c.total_steps = 20` below an imported warmup of 50): that line, named.
        for bound in error.depends_on:
            if (other := assignment(path, bound)) is not None:
                line, target, value = other
                if error.unknown:  # keys of another model's, which the file's model.name made so
                    keys = (key, *error.others)
                    dels = ", ".join(_respelt(target, bound, k) or f"c.{k}" for k in keys)
                    come = "comes" if len(keys) == 1 else "come"
                    return ConfigError(
                        f"--config={path} line {line} ({target} = {value}): {error.what}; "
                        f"{', '.join(keys)} {come} from a module the file imports: delete "
                        f"{'it' if len(keys) == 1 else 'them'} after that line (del {dels})"
                    )
                spelt = _respelt(target, bound, key) or f"c.{key}"
                example = f" (e.g. {_example(spelt, error)})" if error.example is not None else ""
                return ConfigError(
                    f"--config={path} line {line} ({target} = {value}): {error.what}; {key} "
                    f"comes from a module the file imports: set it in the file too{example}, "
                    "or change that line"
                )
        if error.unknown:
            return ConfigError(
                f"--config={path}: {error.what}; fix the config file (or a module it imports)"
            )
        example = f" (e.g. {_example(f'c.{key}', error)})" if error.example is not None else ""
        return ConfigError(
            f"--config={path}: {error.what}; the file does not set {key} (a module it imports "
            f"or the default does): set it in the file{example}"
        )
    line, target, value = found
    fix = "fix the config file" if error.unknown else ""  # a value's `what` says its rule
    if error.meant:
        meant = error.meant[0]
        spelt = _respelt(target, key, meant)
        fix = f"fix the line: {spelt} = {value}" if spelt else fix
    elif error.example is not None:
        fix = f"e.g. {_example(target, error)}"
    elif error.file_fix:
        fix = error.file_fix
    elif error.unknown:  # a name with nothing near
        fix = f"drop the line ({target} = {value}), or set a key ann reads"
    return ConfigError(f"--config={path} line {line}: {error.what}" + (f"; {fix}" if fix else ""))


def _example(target: str, error: config_lib.KeyValueError) -> str:
    """`error`'s example as the config file's lines, `target` spelling its key
    (`c.experiment = 'regression'`), with those of the keys it names to set along
    (`; c.best_metric = 'val/rmse'`), each spelt as `target` is where it can be."""
    lines = [f"{target} = {error.example!r}"]
    for other, value in error.also.items():
        lines.append(f"{_respelt(target, error.key, other) or f'c.{other}'} = {value!r}")
    return "; ".join(lines)


def assignment(path: str, key: str) -> tuple[int, str, str] | None:
    """(line, target, value), as the config file `path` spells them, of its last assignment to
    the dotted `key` (`c.optimizer.lerning_rate = 0.01`, `o.lerning_rate = 0.01` matching its
    last part, `c["mystuff"] = 3`): the one that names most of the key's parts; None where the
    file sets it nowhere (a module it imports does) or cannot be read."""
    found = _assignments(path, key)
    if not found:
        return None
    named, line, target, value, _ = max(found, key=lambda a: a[:2])
    return line, target, value


def _assignments(path: str, key: str) -> list[tuple[int, int, str, str, ast.stmt]]:
    """(key parts named, line, target, value, node) of each assignment in the config file
    `path` whose target can be the dotted `key`: every name it spells is the key's tail
    (`c.optimizer.momentum`, `o.momentum`; not `c.model.momentum`, another key's). [] where
    there is none, or the file cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return []
    parts = key.split(".")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AugAssign | ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            names, inner = [], target
            while True:
                if isinstance(inner, ast.Attribute):
                    names.insert(0, inner.attr)
                    inner = inner.value
                elif (
                    isinstance(inner, ast.Subscript)
                    and isinstance(inner.slice, ast.Constant)
                    and isinstance(inner.slice.value, str)
                ):
                    names.insert(0, inner.slice.value)
                    inner = inner.value
                else:
                    break
            named = 0
            while named < min(len(names), len(parts)) and names[-1 - named] == parts[-1 - named]:
                named += 1
            if named and named in (len(names), len(parts)):
                found.append((named, node.lineno, ast.unparse(target), ast.unparse(value), node))
    return found


def _respelt(target: str, key: str, meant: str) -> str | None:
    """`target` (`c.optimizer.lerning_rate`, the file's spelling of `key`) respelt for the key
    `meant` (`c.optimizer.learning_rate`); None where the file's spelling cannot be carried
    over (an alias at another depth, reached through a variable)."""
    parts, meant_parts = key.split("."), meant.split(".")
    spelt = target.split(".")
    if spelt[-len(parts) :] == parts and len(spelt) > len(parts):
        return ".".join([*spelt[: -len(parts)], *meant_parts])
    if parts[:-1] == meant_parts[:-1] and spelt[-1] == parts[-1]:
        return ".".join([*spelt[:-1], meant_parts[-1]])
    return None
