"""The flags of a command line as absl reads them, for the checks that look at the arguments
themselves (what was typed, before or beside absl's parse): one reader, so that each accepts
absl's spellings alike.

absl reads `--NAME=VALUE` and `-NAME=VALUE`; `--NAME VALUE` (the next argument is the value,
whatever it is, `--` too) for a flag that takes a value; `--NAME` alone for a boolean; and
nothing after `--`. An argument that does not start with `-` (or is `-` itself) is positional.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import os
import re
import shlex
import tokenize
from collections.abc import Callable, Iterator, Sequence

# A number as ann takes one from what a person types (a flag, a positional argument, a URL's
# path): ASCII only. Python's int() and float() also read full-width ('３') and other scripts'
# digits ('٣'), underscores ('1_0.5') and spaces around; int() in absl, '0x50' too.
# An integer: decimal digits, an optional sign, no leading zero ('08000' read as octal).
INTEGER = re.compile(r"[+-]?(0|[1-9][0-9]*)", re.ASCII)
# A float: decimal or scientific notation (1e-3, .5, -2.5E+3), and float()'s inf and nan
# (whatever a flag then allows of them: a bounded flag refuses NaN).
NUMBER = re.compile(
    r"[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|inf|infinity|nan)", re.ASCII | re.I
)


def home(value: str, given: str) -> str:
    """`value`, a path as typed, with a leading `~` or `~user` expanded as the shell expands it
    (`os.path.expanduser`); other values as they are. Raises ValueError, `{given}: ...; give
    the path in full`, for a `~user` of no user of this machine (or a `~` with no home
    directory to find): `os.path.expanduser` leaves it as it is, and `--out=~nouser/x` made a
    directory named `~nouser` in the current one, without a word."""
    if not value.startswith("~"):
        return value
    expanded = os.path.expanduser(value)
    if not expanded.startswith("~"):
        return expanded
    user = value[1:].split("/", 1)[0]
    what = f"~{user}: no user {user!r} on this machine" if user else "~: no home directory ($HOME)"
    raise ValueError(f"{given}: {what} to expand it to; give the path in full")


def literal_number(text: str) -> str | None:
    """The first number in `text`, a Python literal ("(32, 64)", a tuple key's or a new key's
    override, which ml_collections reads with ast.literal_eval), that is not ASCII decimal
    notation (`NUMBER`): "1_0" in "(1_0, 2)", "0x10"; None where every number is, or `text` is
    no literal (a string, to ml_collections)."""
    try:
        ast.literal_eval(text)
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, tokenize.TokenError):
        return None
    numbers = (t.string for t in tokens if t.type == tokenize.NUMBER)
    return next((n for n in numbers if not NUMBER.fullmatch(n)), None)


def flag(name: str, value: str) -> str:
    """`--NAME=VALUE` as a suggestion a person pastes into a shell: the value quoted where it
    needs it (`--request_log='/tmp/sp ace/requests.jsonl'`; unquoted, the shell split it)."""
    return f"--{name}={shlex.quote(value)}"


def digits(text: str) -> bool:
    """Whether `text` is ASCII digits only ("3", "0042"): a version, a step, a count as typed.
    str.isdigit() is also true for '³', '３' and '٣', and int() reads the last two."""
    return text.isascii() and text.isdigit()


def version_number(text: str) -> int | None:
    """`text` as a model version number (1, 2, ...), as an integer flag reads a number: ASCII
    digits without a leading zero, 64 at most; None for anything else ("01", "0", "+1", "３").
    One rule for models:/NAME/VERSION and the registry's VERSION arguments: `models:/digits/01`
    resolved to version 1 where --version=01 is refused."""
    if not (digits(text) and INTEGER.fullmatch(text)) or text == "0" or len(text) > 64:
        return None  # bounded: int() refuses 4,300 digits, and a client's path may hold more
    return int(text)


def leading_zero(text: str) -> int | None:
    """The integer `text` means where it is ASCII decimal digits with a leading zero, signed
    or not (`08`, `-007`, `00`), which an integer flag or key and a version number refuse
    (absl would read `017` as a Python literal, and `08` not at all); else None."""
    if len(text) <= 40 and re.fullmatch(r"[+-]?0[0-9]+", text, re.ASCII):
        return int(text)  # (bounded: int() refuses 4,300 digits, a client's path may hold more)
    return None


def zeros_dropped(text: str) -> str | None:
    """`text`, a version number with leading zeros ("01"), without them ("1"): the fix a
    refusal of it by `version_number` offers; None for anything else ("00", "1", "+01", "x")."""
    number = leading_zero(text) if digits(text) else None
    return str(number) if number else None


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


def number(value: float) -> str:
    """12, 0.5, nan, inf, 1e+12: a number as a flag would be written (a float 1e12 was echoed
    as 1000000000000)."""
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e6):
        return str(int(value))
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def expected(
    kind: type, low: float, high: float, note: str = "", above: bool = False, below: bool = False
) -> str:
    """What a numeric flag takes, as every refusal of one says it: "an integer in [1, 65535]",
    "a number in (0, 1] (a share of requests)": `kind` int or float, `above` where `low` itself
    is outside, `below` where `high` is, `note` (a unit, or what a value means) in parentheses
    after it."""
    bounds = f"{'(' if above else '['}{number(low)}, {number(high)}{')' if below else ']'}"
    what = "an integer" if kind is int else "a number"
    return f"{what} in {bounds}" + (f" ({note})" if note else "")


def takes(help_text: str, what: str) -> str:
    """A flag's help ending with what its check takes, in its refusal's words (`what`, mostly
    `expected`): "Port. Takes an integer in [1, 65535]." Every command's `--help` states a
    flag's range or allowed values so, from the table or bounds its check uses."""
    return f"{help_text} Takes {what}."


def refusal(typed: str, what: str, name: str, example: object = None) -> str:
    """The one refusal of a numeric flag's value, whether no number or out of its range:
    `typed` as given ("--port=70000"), `what` it takes (`expected`), an example of the flag
    `name` (its default, mostly): "--port=70000 must be an integer in [1, 65535]; e.g.
    --port=8000"."""
    return f"{typed} must be {what}" + (f"; e.g. --{name}={example}" if example is not None else "")


def process_flags_fault(
    coordinator_address: str, num_processes: int, process_id: int, auto: bool
) -> str | None:
    """What is wrong with a multi-process run's flags, in one line, or None: the three explicit
    ones (`--coordinator_address`, `--num_processes` above 0, `--process_id` from 0) go
    together, the missing ones named, and not with `--distributed=auto`, which finds the
    processes in the cluster's environment (the explicit ones won without a word). Checked
    before JAX is imported (`ann train`) and by `parallel.initialize_distributed`."""
    given = {
        "--coordinator_address": bool(coordinator_address),
        "--num_processes": num_processes > 0,
        "--process_id": process_id >= 0,
    }
    named = [name for name, present in given.items() if present]
    if named and auto:
        return (
            f"--distributed=auto finds the processes in the cluster's environment, and "
            f"{', '.join(named)} name{'s' * (len(named) == 1)} them: give one or the other"
        )
    if named and len(named) < len(given):
        missing = [name for name, present in given.items() if not present]
        return (
            "a multi-process run needs all of --coordinator_address=HOST:PORT, "
            "--num_processes=N and --process_id=I (or --distributed=auto on a cluster); "
            f"missing or at the one-process default: {', '.join(missing)}"
        )
    return None
