"""A user's class named by a config key as `package.module:Name`, imported with one clear line
for every way that can fail (a missing module, a missing name, or the module raising while it
runs: a SyntaxError, an error in its body, a failing import of its own), as `--config=FILE`'s
own errors are: the key, the target, the exception and the user's file and line."""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from ann.config import ConfigError, did_you_mean


def raised_at(error: BaseException) -> tuple[str, int] | None:
    """(file, line) of a user's code where `error` was raised: a SyntaxError's own position,
    else the innermost frame outside Python's import machinery, installed packages and ann
    itself (an error ann raised on the user's behalf points at the user's call); None when
    there is none."""
    if isinstance(error, SyntaxError) and error.filename:
        return error.filename, error.lineno or 0
    ann_dir = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frames = [
        f
        for f in traceback.extract_tb(error.__traceback__)
        if not f.filename.startswith("<frozen")
        and "-packages" + os.sep not in f.filename
        and not os.path.abspath(f.filename).startswith(ann_dir)
    ]
    return (frames[-1].filename, frames[-1].lineno or 0) if frames else None


# Set inside `recorded_in`: what recorded the config being read ("the export at DIR").
_RECORDED: contextvars.ContextVar[str | None] = contextvars.ContextVar("recorded", default=None)
_NOUNS = {"experiment": "experiment", "model.name": "model"}


@contextlib.contextmanager
def recorded_in(what: str) -> Iterator[None]:
    """Within it, a user's class that the config being read names and that does not import is
    said as `what`'s (`the export at DIR`, `the run in WORKDIR`): `ann report --model=EXPORT`
    of an export of a user's experiment said "config key 'experiment': cannot import ...", a
    config the user never gave, instead of which export needs which module."""
    token = _RECORDED.set(what)
    try:
        yield
    finally:
        _RECORDED.reset(token)


def _subject(key: str, target: str) -> str:
    """How an error names the class: the config key, or the recorded run's or export's."""
    recorded = _RECORDED.get()
    if recorded is None:
        return f"config key '{key}'"
    return f"the {_NOUNS.get(key, key)} {target!r} that {recorded} records"


def _where(error: BaseException) -> str:
    at = raised_at(error)
    return f" (at {at[0]}:{at[1]})" if at else ""


def import_named(key: str, target: str) -> Any:
    """`Name` of module `package.module` for `target` "package.module:Name". Raises
    ConfigError naming `key` when the module is not found, lacks `Name`, or raises while it is
    imported (with the exception and where it was raised)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr.isidentifier():  # ":Wide" reached importlib's own message
        example = "mytasks:Parity" if key == "experiment" else "mynets:Wide"
        raise ConfigError(
            f"config key '{key}': {target!r} is not package.module:ClassName (e.g. "
            f"'{example}', its module on PYTHONPATH)"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name or module_name.startswith(f"{e.name}."):  # the module itself
            recorded = _RECORDED.get()
            if recorded is not None:
                raise ConfigError(
                    f"{recorded} was trained with {_NOUNS.get(key, key)} {target!r}, whose "
                    f"module does not import here (no module named {e.name!r}); put the "
                    "directory of its project on PYTHONPATH (PYTHONPATH=/path/to/project before "
                    "the command, or PYTHONPATH=. from that directory)"
                ) from e
            raise ConfigError(
                f"config key '{key}': cannot import {target!r}: no module named {e.name!r}; make "
                "sure its directory is on PYTHONPATH (e.g. PYTHONPATH=. for the current one)"
            ) from e
        raise _raised(key, target, e) from e  # one the module imports
    except Exception as e:  # a SyntaxError or anything its body raised
        raise _raised(key, target, e) from e
    try:
        return getattr(module, attr)
    except AttributeError as e:
        classes = [n for n, v in vars(module).items() if isinstance(v, type) and n[0] != "_"]
        # `__main__` of a notebook or `python -c` has no file.
        where = getattr(module, "__file__", None) or "the running script or notebook"
        raise ConfigError(
            f"{_subject(key, target)}: module {module_name!r} ({where}) has no {attr!r}"
            f"{did_you_mean(attr, classes, module_name + ':')}; name a class it defines"
        ) from e


def in_main(key: str, name: str, cls: Any) -> str | None:
    """The warning for config key `key` naming `name` (a short name of `cls`, its registered
    class, or `__main__:Class`), where the class is defined in `__main__` (the running script,
    or a notebook): no other process can import it, so resuming, exporting, reporting and
    serving the run from another one fail long after it trained (`ann report` looked for the
    class in ann's own `__main__`); None for a class any process can import."""
    defined = getattr(cls, "__module__", None) == "__main__" or name.startswith("__main__:")
    if not defined:
        return None
    shown = name.partition(":")[2] or getattr(cls, "__qualname__", name)
    module = "mytasks" if key == "experiment" else "mynets"
    return (
        f"config key '{key}': {name!r} is a class defined in __main__ (this script or "
        "notebook): only a process that defines it again can resume, export, report or serve "
        f"this run; define it in a module on PYTHONPATH ({module}.py) and set "
        f"{key}='{module}:{shown}'"
    )


def _raised(key: str, target: str, error: BaseException) -> ConfigError:
    text = (error.msg if isinstance(error, SyntaxError) else str(error)).splitlines()
    return ConfigError(
        f"{_subject(key, target)}: importing {target!r} raised {type(error).__name__}: "
        f"{text[0] if text else ''}{_where(error)}; fix the module"
    )


def registrar(
    table: Callable[[], dict[str, Any]], shipped: frozenset[str], decorator: str
) -> Callable[[str], Callable[[type], type]]:
    """`decorator`'s implementation (`ann.models.register`, `ann.experiment.register`): a
    `register(name)` that returns a class decorator adding the class to `table()` (the
    module's table, read at each call) under `name`.
    Raises, in one line naming the decorator: TypeError where it is used without its name
    (`@register` on a class, which the class then silently became the decorator's inner
    function) or decorates no class; ValueError for a name a config cannot give (not a
    non-empty str without `:`, which reads as module:Class, or blanks) and for one of ann's
    own (`shipped`), which commands read by name. The same name registered again is replaced
    (a notebook cell run twice)."""

    def register(name: str) -> Callable[[type], type]:
        if isinstance(name, type) or callable(name):
            raise TypeError(f'{decorator} takes the name first: @{decorator}("myname")')
        if not isinstance(name, str) or not name.strip() or ":" in name or name != name.strip():
            raise ValueError(
                f"{decorator}({name!r}): a name is a non-empty str without ':' (which reads "
                "as module:Class) or surrounding blanks; give one a config can name"
            )
        if name in shipped:
            raise ValueError(
                f"{decorator}({name!r}): {name!r} is ann's own; register yours under another name"
            )

        def add(cls: type) -> type:
            if not isinstance(cls, type):
                raise TypeError(
                    f"{decorator}({name!r}) decorates a class, got {type(cls).__name__}"
                )
            table()[name] = cls
            return cls

        return add

    return register
