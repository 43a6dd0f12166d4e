"""What ann's command-line entry points share: the `--config` flag, and flag parsing and a run
that end a mistake in one line (`error: ...`, exit status 1) instead of a traceback: a bad flag
or override while absl parses, a ConfigError (or another user error the command names) while
`main` runs.

`--config.KEY=VALUE` may name a key the config file does not hold: the flag accepts it, and
`ann.config.validate` (or the model's signature, or the experiment's `task_settings`) then
refuses it by name with a "did you mean", or accepts it where the section is open (`model.*`
constructor arguments, `task.*` experiment settings).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import NoReturn

from absl import app, flags
from ml_collections import config_flags

from ann.config import ConfigError

# Where a --config override or value is wrong, ml_collections and absl raise these while parsing.
_PARSE_ERRORS = (flags.Error, ConfigError, AttributeError, KeyError, TypeError, ValueError, OSError)


def define_config(
    help_text: str,
    default: str | None = None,
    flag_values: flags.FlagValues = flags.FLAGS,
    **kwargs,
):
    """`--config=configs/NAME.py[:ARG]` with `--config.KEY=VALUE` overrides, new keys allowed
    (checked later by name, see the module docstring). Returns the flag holder."""
    return config_flags.DEFINE_config_file(
        "config",
        default,
        help_text,
        flag_values=flag_values,
        lock_config=False,
        accept_new_attributes=True,
        **kwargs,
    )


def one_line(error: BaseException) -> str:
    """The error's text on one line. ml_collections raises AttributeError(KeyError("'key'\\nDid
    you mean ...")) for an override under an unknown section: that becomes "config key 'key' is
    unknown; Did you mean ..."."""
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    text = " ".join(text.split())
    if isinstance(error, AttributeError | KeyError):
        match = re.fullmatch(r"'([^']+)'\s*(.*)", text)
        if match:
            key, rest = match.groups()
            return f"config key {key!r} is unknown" + (f"; {rest}" if rest else "")
    return text


def fail(message: str) -> NoReturn:
    """`error: message` on stderr, one line, exit 1: how every entry point ends a mistake."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing for `app.run`, where a bad flag or override prints one line and
    exits 1. A config file whose own code fails keeps its traceback (ml_collections puts it in
    the message), since that is a bug to read in the file, not a flag to fix."""
    try:
        rest = flags.FLAGS(argv)
    except _PARSE_ERRORS as e:
        if "Error whilst parsing config file" in str(e):
            fail(str(e))
        fail(one_line(e))
    if "config" in flags.FLAGS and flags.FLAGS["config"].present:
        # ml_collections defers a missing file's error to the config's first use.
        path = config_flags.get_config_filename(flags.FLAGS["config"]).partition(":")[0]
        if not os.path.isfile(path):
            fail(f"--config={path}: no such file")
    return rest


def check_trained_run(workdir: str, step: str) -> None:
    """`--workdir` and `--step` of a command that restores a trained run (export, generate):
    raises ValueError with one line naming the flag and the fix."""
    if not (step in ("best", "latest") or step.isdigit()):
        raise ValueError(f"--step={step!r} must be 'best', 'latest' or a step number (>= 0)")
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        what = "does not exist" if not os.path.exists(workdir) else "holds no config.json"
        raise ValueError(f"--workdir={workdir} {what}; give the directory of a trained run")


def run(main: Callable[[list[str]], None], errors: tuple[type[BaseException], ...] = ()) -> None:
    """`absl.app.run(main)` with `parse_flags`. A ConfigError, or one of `errors` (the mistakes
    the command reports itself, e.g. a diverged run), that `main` raises prints `error: ...` on
    one line and exits 1; anything else keeps its traceback (a bug to read, not a flag to fix)."""

    def guarded(argv: list[str]) -> None:
        try:
            main(argv)
        except (ConfigError, *errors) as e:
            fail(str(e))

    app.run(guarded, flags_parser=parse_flags)
