"""The flags of a command line as absl reads them, for the checks that look at the arguments
themselves (what was typed, before or beside absl's parse): one reader, so that each accepts
absl's spellings alike.

absl reads `--NAME=VALUE` and `-NAME=VALUE`; `--NAME VALUE` (the next argument is the value,
whatever it is, `--` too) for a flag that takes a value; `--NAME` alone for a boolean; and
nothing after `--`. An argument that does not start with `-` (or is `-` itself) is positional.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence


@dataclasses.dataclass(frozen=True)
class Flag:
    name: str  # without its dashes: "config", "config.model.features", "port"
    value: str | None  # after `=`, or the next argument; None for a boolean, or none left
    typed: str  # as the user wrote it: "--port=80", "--config.model.features 3"


def flags_in(
    args: Sequence[str], boolean: Callable[[str], bool] = lambda name: False
) -> Iterator[Flag]:
    """The flags in `args` (the arguments, without the program's name), up to `--`. A flag
    written without `=` takes the next argument as its value unless `boolean(name)` says it is
    a boolean (absl knows which of its flags are; the caller says what it knows of them)."""
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            return
        if not arg.startswith("-") or arg == "-":
            continue
        name, equals, value = arg[2 if arg.startswith("--") else 1 :].partition("=")
        if equals:
            yield Flag(name, value, arg)
        elif boolean(name) or (following := next(rest, None)) is None:
            yield Flag(name, None, arg)
        else:
            yield Flag(name, following, f"{arg} {following}")
