"""What ann's command-line entry points share: the `--config` flag, and flag parsing and a run
that end a mistake in one line (`error: ...`, exit status 1) instead of a traceback: a bad flag
or override while absl parses, a ConfigError (or another user error the command names) while
`main` runs.

`--config.KEY=VALUE` may name a key the config file does not hold: the flag accepts it, and
`ann.config.validate` (or the model's signature, or the experiment's `task_settings`) then
refuses it by name with a "did you mean", or accepts it where the section is open (`model.*`
constructor arguments, `task.*` experiment settings).

`run` is the one wrapper every job shares (`ann JOB`, `python -m ann.X`, the benchmark scripts):

- `--help` (`-h`, `--helpshort`; `--helpfull` for every library's flags too) prints the job's
  description and its own flags, `--config` included, on stdout and exits 0;
- a missing required flag, a bad flag or override, a stray argument, a config file's unknown
  variant (`configs/NAME.py:ARG`) or failing code (its line named), or a user mistake raised
  while the job runs is one `error: ...`
  line on stderr and exit status 1, naming what to type where a near miss is likely (an
  unknown flag that is a config key or close to the job's own, a config file's near name, a
  number key given text); a bug keeps its traceback;
- libraries' INFO logging (Orbax, TFDS) is dropped, ann's own kept, and any logged traceback of a
  Ctrl-C (`quiet=True`: warnings
  only, for jobs whose output is their result; such a job says what it is doing with
  `progress`, on a terminal only);
- a reader that goes away (`ann registry list | head`) ends the job quietly: no traceback, exit
  status 141, as a Unix tool killed by SIGPIPE;
- Ctrl-C (a KeyboardInterrupt, from flag parsing to the end of `main`) is one line on stderr,
  `interrupted (Ctrl-C)` or the interrupt's own message where the job says where it stopped
  (`ann train`: the step, and what the same command resumes from), exit status 130 (128 +
  SIGINT, as a shell reports for a job stopped by Ctrl-C); no traceback. Once `main` has
  returned (its result is out) Ctrl-C is ignored, so the exit status agrees with the output.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import errno
import functools
import importlib.util
import linecache
import logging as py_logging
import numbers
import os
import re
import shlex
import socket
import sys
import traceback
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from types import FrameType
from typing import NoReturn

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags
from ml_collections.config_flags import config_flags as config_flags_impl

from ann import arguments, atomic, config_file, console, directory_kind, shadowing
from ann import config as config_lib
from ann.config import SCHEMA, ConfigError

# ann's stderr lines, passed on as cli.name_process, cli.note, cli.warn (explicit re-exports).
from ann.console import name_process as name_process
from ann.console import note as note
from ann.console import warn as warn

# The flags defined here (`define_config`, `define_bounded`, `define_names`) are the calling
# job's: its `--help` lists them as its own (absl's key flags of the module that calls).
flags.disclaim_key_flags()

# Where a --config override or value is wrong, ml_collections and absl raise these while parsing.
_PARSE_ERRORS = (flags.Error, ConfigError, AttributeError, KeyError, TypeError, ValueError, OSError)
# absl's help flags; absl's own handling of them exits 1 and leaves out --config.
_HELP = {"--help": False, "-help": False, "-h": False, "-?": False, "--helpshort": False}
_HELP.update({"-helpshort": False, "--helpfull": True, "-helpfull": True})
_REQUIRED = re.compile(r"Flag --(\w+) must have a value other than None")
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool killed by SIGPIPE


def define_config(
    help_text: str,
    default: str | None = None,
    flag_values: flags.FlagValues = flags.FLAGS,
    **kwargs,
):
    """`--config=configs/NAME.py[:ARG]` with `--config.KEY=VALUE` overrides, new keys allowed
    (checked later by name, see the module docstring); an ARG the file's get_config does not
    read is refused (`_VariantParser`). Returns the flag holder."""
    holder = config_flags.DEFINE_config_file(
        "config",
        default,
        help_text,
        flag_values=flag_values,
        lock_config=False,
        accept_new_attributes=True,
        **kwargs,
    )
    flag = flag_values["config"]
    flag.parser = _VariantParser(flag.parser)
    return holder


class _VariantParser(flags.ArgumentParser):
    """ml_collections' config file parser, raising ConfigError for a `:ARG` the file's
    get_config never hands to `ann.config.variant` (it ran the plain config as if no variant
    were given)."""

    def __init__(self, parser: flags.ArgumentParser):
        self._parser = parser

    def parse(self, argument):
        return config_lib.load_variant(argument, self._parser.parse)

    def flag_type(self) -> str:
        return self._parser.flag_type()


def unchanged_overrides(flag_values: flags.FlagValues = flags.FLAGS) -> set[str]:
    """The `--config.KEY=VALUE` keys whose value the config file already held (the file read
    again without them; `ann.config.unchanged_overrides`), and the ignorable keys the file's
    own lines set to what they held already (`config_file.set_in_file`), for
    `ann.config.validate`."""
    holder = flag_values["config"]
    config = config_flags.get_config_filename(holder)
    written = set()
    if holder.value is not None:
        written = config_file.set_in_file(config, holder.value, holder.override_values)
    if not holder.override_values:
        return written
    file_config = holder.parser.parse(config)
    return written | config_lib.unchanged_overrides(file_config, holder.override_values)


def drop_switched_model_keys(
    flag_values: flags.FlagValues = flags.FLAGS, say: bool = True
) -> list[str]:
    """Where `--config.model.name=OTHER` switches the config file's model, drops from the config
    the file's own `model.*` keys that OTHER does not take (arguments of the file's model: a
    command line cannot unset a key, so `--config=configs/digits_cnn.py --config.model.name=mlp`
    was refused for the file's model.dense); returns them, dotted, and with `say` notes them on
    stderr. Keys given on the command line stay, for the model's check to judge. Raises
    ConfigError for an unknown model."""
    holder = flag_values["config"]
    name = holder.override_values.get("model.name")
    if name is None:
        return []
    file_config = holder.parser.parse(config_flags.get_config_filename(holder))
    if name == file_config.get("model", {}).get("name"):
        return []
    from ann import models  # JAX: only for a switched model

    own = [
        key
        for key in file_config.model
        if key != "name" and f"model.{key}" not in holder.override_values
    ]
    dropped = models.not_taken(name, own)
    for key in dropped:
        del holder.value.model[key]
    if dropped and say:
        kept = [f"model.{k}={file_config.model[k]!r}" for k in own if k not in dropped]
        kept_text = f"; kept {', '.join(kept)}, which {name} takes too" if kept else ""
        note(
            f"--config.model.name={name} replaces {file_config.model.name}: left out the config "
            f"file's {', '.join(f'model.{k}' for k in dropped)} ({file_config.model.name}'s "
            f"arguments, not {name}'s){kept_text}"
        )
    return [f"model.{key}" for key in dropped]


def metric_order(names: Iterable[str]) -> list[str]:
    """Metric names in the order every job's one-line summary lists them: validation (`val/`,
    what chose the step) first, then the rest (the test split: `eval/`, `eval_<split>/`), each
    group in the given order (the order the run logged them)."""
    return sorted(names, key=lambda name: not name.startswith("val/"))


def run_summary(
    step: int, last: Mapping[str, float], best: Mapping[str, float], stop_reason: str = ""
) -> str:
    """`ann train`'s last line: how the run ended (`done`, or `early stopped` / `pruned`), at
    which step, then the kept checkpoint's step and metrics (`best`, what `ann export` and
    `ann report` read: its validation metrics chose it, its test metrics are the estimate to
    report). A run without a best checkpoint shows its last eval (`last`) instead."""
    ended = stop_reason.replace("_", " ") if stop_reason else "done"
    if best:
        metrics, where = best, f" | best checkpoint: step {best.get('step', '-')}"
    else:
        metrics, where = last, ""
    return f"{ended}: step {step}{where} | {metrics_line(metrics)}"


def metrics_line(metrics: Mapping[str, float]) -> str:
    """The validation and test metrics of a run (`val/...`, `eval.../...`, not their seconds) as
    `name value | ...` in `metric_order`: the summary `ann train` and `ann export` print."""
    shown = [k for k in metrics if k.startswith(("val/", "eval")) and "seconds" not in k]
    return " | ".join(f"{k} {metrics[k]:.4f}" for k in metric_order(shown))


def one_line(error: BaseException, argv: Sequence[str] = ()) -> str:
    """The error's text on one line. ml_collections raises AttributeError(KeyError("'key'\\nDid
    you mean \"near\" instead of \"key\"?")) for an override under an unknown section, naming
    only that part of the key: that becomes "config key 'optimzer.lr' is unknown (did you mean
    'optimizer.learning_rate'?)", as ann words its own, the whole dotted key taken from the
    override in `argv` (the arguments parsed) and the key meant found by `config.lookup` in
    the config file (every part respelt: not ml_collections' 'optimizer.lr')."""
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    text = " ".join(text.split())
    if isinstance(error, AttributeError | KeyError):
        match = re.fullmatch(r"'([^']+)'\s*(.*)", text)
        if match:
            key, rest = match.groups()
            near = re.fullmatch(r'Did you mean "([^"]+)" instead of "[^"]+"\?', rest)
            before, after = _override_around(key, argv)
            said = ".".join((*before, key, *after))
            # The closest real key, every misspelt part respelt (`optimzer.lr` is
            # `optimizer.learning_rate`; ml_collections' "optimizer" made it `optimizer.lr`).
            trees = [t for t in (_loaded_config(argv), SCHEMA) if t is not None]
            try:
                config_lib.lookup(trees[0], said, also=trees[1:])
            except config_lib.KeyLookupError as e:
                if e.meant or not near:
                    return f"config key {said!r} is unknown{_ready_flag(said, e.meant, argv)}"
            if near:  # nothing near in the config (or no config loaded): ml_collections'
                meant = ".".join((*before, near.group(1), *after))
                return f"config key {said!r} is unknown{_ready_flag(said, [meant], argv)}"
            return f"config key {said!r} is unknown" + (f"; {rest}" if rest else "")
    return text


def _ready_flag(said: str, meant: Sequence[str], argv: Sequence[str]) -> str:
    """The hint for the unknown config key `said` given the keys `meant` near it
    (`config.meant_words`: ` (did you mean 'a' or 'b'?)`), and where one is meant and `argv`
    overrides `said` with a value, the flag to give instead, the value as typed (`; e.g.
    --config.optimizer.learning_rate=0.1`: the hint alone left the flag to be retyped)."""
    given = [f for f in typed_flags(argv) if f.name == f"config.{said}" and f.value is not None]
    if len(meant) != 1 or not given:
        return config_lib.meant_words(meant)
    # The value as the key meant takes it (`=64` for a tuple: (64,)), else its default: one of
    # another kind was offered, and refused once pasted. A model's argument (no default here):
    # as typed.
    default, typed = config_lib.default(meant[0]), given[-1].value
    value = typed if default is None else _meant_value(typed, type(default))
    if value is None:
        value = default
    elif not isinstance(value, tuple):
        value = typed  # as typed (`.1`), where the key takes it
    return f"{config_lib.meant_words(meant)}; e.g. {config_lib.override(meant[0], value)}"


def _loaded_config(argv: Sequence[str]) -> ml_collections.ConfigDict | None:
    """The `--config` file loaded again, without overrides (for the words of an override that
    failed: ml_collections leaves the flag without a value then), or None. Read-only: the
    error path asks for it more than once, and the file is loaded once."""
    given = _config_given(argv)
    if not given or "config" not in flags.FLAGS:
        return None
    return _config_file(given[-1])


@functools.lru_cache(maxsize=1)
def _config_file(path: str) -> ml_collections.ConfigDict | None:
    try:
        return flags.FLAGS["config"].parser.parse(path)
    except Exception:  # the file's own error is said elsewhere
        return None


def _value_on_path(config: ml_collections.ConfigDict | None, key: str) -> tuple[str, object] | None:
    """(the dotted key, its value) of the first value (not a section) that the dotted `key`
    goes through in `config` (`model.features` for `model.features.x`), or None."""
    parts, value = key.split("."), config
    for i, part in enumerate(parts[:-1]):
        if not config_lib.is_section(value) or part not in value:
            return None
        value = value[part]
        if not config_lib.is_section(value):
            return ".".join(parts[: i + 1]), value
    return None


def _through_a_value(argv: Sequence[str]) -> str | None:
    """One line for an override that goes through a value as if it were a section
    (`--config.model.features.x=1`, features a tuple; `--config.total_steps.x=1`), which
    ml_collections words as "tuple indices must be integers or slices, not str" or "Attribute
    <class 'int'>.x does not exist ..."; None when no override does."""
    config = _loaded_config(argv)
    for flag in typed_flags(argv):
        if not flag.name.startswith("config."):
            continue
        through = _value_on_path(config, flag.name.removeprefix("config."))
        if through:
            key, value = through
            example = shlex.quote(f"--config.{key}={value!r}")
            return (
                f"{flag.typed}: '{key}' is a value ({type(value).__name__} {value!r}), not a "
                f"section; set it whole, e.g. {example}"
            )
    return None


def _override_around(part: str, argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The parts of the `--config.A.B.PART.C=...` override in `argv` before and after `part`,
    a section name ml_collections did not find (([A, B], [C])); ([], []) when none names it.
    An override where `part` is below a section the schema holds comes first: `optimizer` is
    not the unknown part of `--config.optimizer.lr=...`."""
    found = []
    for flag in typed_flags(argv):
        if not flag.name.startswith("config."):
            continue
        parts = flag.name.removeprefix("config.").split(".")
        for i, p in enumerate(parts[:-1]):
            if p == part:
                try:
                    known = config_lib.is_section(
                        config_lib.lookup(SCHEMA, ".".join(parts[: i + 1]))
                    )
                except KeyError:
                    known = False
                found.append((known, parts[:i], parts[i + 1 :]))
    found.sort(key=lambda f: f[0])  # stable: the first unknown one
    return (found[0][1], found[0][2]) if found else ([], [])


def _name_from_argv(argv: Sequence[str]) -> None:
    """`name_process` from `--process_id=I --num_processes=N` as given (`sys.argv`), before
    the flags are parsed: a launcher's processes all refusing one mistyped flag printed the
    same unnamed line N times."""
    given = {}
    for flag in typed_flags(argv):
        number = arguments.INTEGER.fullmatch(flag.value or "")
        if flag.name in ("process_id", "num_processes") and number:
            given[flag.name] = int(flag.value)
    if len(given) == 2 and 0 <= given["process_id"] < given["num_processes"]:  # else refused
        name_process(given["process_id"], given["num_processes"])


def check_package() -> None:
    """One line, exit 1, where `import ann` found a directory that is not ann's package
    (`shadowing.fault`)."""
    if (said := shadowing.fault()) is not None:
        fail(said)


def fail(message: str) -> NoReturn:
    """`error: message` on stderr, one line, exit 1: how every entry point ends a mistake."""
    print(f"error: {console.process_name()}{message}", file=sys.stderr)
    sys.exit(1)


def fail_without_teardown(message: str) -> NoReturn:
    """`fail`, exiting without the interpreter's teardown (streams and logs flushed first):
    for a multi-process run whose peer is gone, where JAX's exit handler
    (`jax.distributed.shutdown`) waits at a barrier for that peer, then aborts the process in
    C++ with a stack dump (status -6) after the heartbeat timeout."""
    print(f"error: {console.process_name()}{message}", file=sys.stderr, flush=True)
    py_logging.shutdown()
    sys.stdout.flush()
    os._exit(1)


def progress(message: str) -> None:
    """`message...` on stderr when stderr is a terminal: what a quiet job (`ann export`, `ann
    report`, `ann monitor drift`, `ann generate`) is doing through its seconds of restoring
    and compiling. Nothing when stderr is a
    pipe or file, so a script reads only the result line and an error line (the convention of
    git's and pip's progress output)."""
    if sys.stderr.isatty():
        print(f"{message}...", file=sys.stderr, flush=True)


def wants_help(argv: Sequence[str]) -> bool:
    """Whether `parse_flags` will answer `argv` (sys.argv: the program, then its arguments) with
    the help (`_show_help`): a job with subcommands tailors its docstring and flags first."""
    for arg in argv[1:]:
        if arg == "--":
            return False
        if arg in _HELP:
            return True
    return False


def _show_help(full: bool) -> NoReturn:
    """The main module's docstring and flags (with `--config`, which ann.cli defines for it) on
    stdout, exit 0; `full` lists every library's flags as well."""
    if "config" in flags.FLAGS:
        # absl lists a module's "key flags": those it defined itself (sys.argv[0] names it).
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS["config"])
    _said_in_help_only(flags.FLAGS)
    try:
        app.usage(shorthelp=not full, writeto_stdout=True)
        if not full:
            print("Try --helpfull to get a list of all flags.")
        sys.stdout.flush()
    except BrokenPipeError:
        reader_gone()
    sys.exit(0)


def _said_in_help_only(flag_values: flags.FlagValues) -> None:
    """Drops absl's own line of what a flag takes (its parser's `syntactic_help`, which absl's
    help prints after the default) from every flag whose help ends with what its check takes
    in ann's words (`EXPECTED`, `CHOICES`: `arguments.takes`): `ann sweep --help` said "Takes an
    integer in [1, 1024]." and then "(an integer in the range [1, 1024])", `ann serve --help`
    "Takes an integer in [1, 65535]." and then "(an integer)", `ann report --help` "Takes names
    among validation, test (comma-separated)." and then "(a comma separated list)". For the help
    only (it exits after): absl's refusals read `syntactic_help` too, and `_job_flag_refusal`
    words those from the same tables."""
    for name in (*EXPECTED, *CHOICES):
        if name in flag_values:  # not --slo.availability: a dict flag's key, said in its help
            flag_values[name].parser.syntactic_help = ""


def _binary_file(path: str) -> str | None:
    """Why the file `path` cannot be Python source: "it holds null bytes: a binary file" for
    one with a NUL byte in its first MiB (an export's weights.safetensors, /bin/ls: Python's
    compile raised "SyntaxError: source code string cannot contain null bytes", with a
    traceback, as it named no file); None otherwise, or where `path` is not a readable file
    (said elsewhere)."""
    try:
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            head = f.read(1 << 20)
    except OSError:
        return None
    return "it holds null bytes: a binary file" if b"\0" in head else None


def _config_file_error(error: BaseException) -> ConfigError | None:
    """The ConfigError a config file's `get_config(arg)` raised (an unknown variant), found in
    what absl and ml_collections re-raised it as (they chain it as the context)."""
    found = None
    while error is not None:
        if isinstance(error, ConfigError):
            found = error
        error = error.__cause__ or error.__context__
    return found


def _missing_flags(error: BaseException) -> str | None:
    """ "missing --a: its help; missing --b: its help" for absl's message that required flags
    are unset, else None. The help is lower-cased as it continues the line ("missing --workdir
    (A trained run (language_modelling or seq2seq))" pasted the flag's help mid-sentence)."""
    names = _REQUIRED.findall(str(error))
    if not names:
        return None
    said = {}
    for n in names:  # one line, without what absl appends to it ("repeat this option ...")
        text = " ".join(flags.FLAGS[n].help.split(";\n")[0].split()).rstrip(".")
        first = text.split(" ", 1)[0]
        said[n] = text[:1].lower() + text[1:] if len(first) == 1 or not first.isupper() else text
    what = "; ".join(f"missing --{n}: {said[n]}" for n in names)
    return f"{what}; --help lists every flag"


# The flags that name a file or directory (any job's), and the config keys that do: a leading
# `~` or `~user` in their value is expanded as the shell expands it at the start of a word
# (`--out ~/x`), which it does not after `=`: `--out=~/x` made a directory named `~` in the
# current one, while `ann serve --compilation_cache_dir=~/x` expanded it.
PATH_FLAGS = frozenset(
    {
        "workdir",
        "out",
        "registry",
        "config",
        "model",
        "requests",
        "labels",
        "summarize",
        "request_log",
        "compilation_cache_dir",
        "token_file",
        "admin_token_file",
        "runbook_base",
    }
)
PATH_KEYS = ("data.data_dir", "init_from", "compilation_cache_dir")


def home_expanded(argv: Sequence[str]) -> list[str]:
    """`argv` with a leading `~` or `~user` expanded (`os.path.expanduser`) in the value of
    each path flag (`PATH_FLAGS`, `--out=~/x` and `--out '~/x'` alike), up to `--`. Raises
    FlagError naming the flag for a `~user` of no user (`arguments.home`)."""
    argv = list(argv)
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            break
        if arg.startswith("-") and arg != "-":
            name, equals, value = arg[2 if arg.startswith("--") else 1 :].partition("=")
            if name in PATH_FLAGS and equals:
                argv[i] = arg[: len(arg) - len(value)] + _home(value, f"--{name}={value}")
            elif name in PATH_FLAGS and i + 1 < len(argv):
                argv[i + 1] = _home(argv[i + 1], f"--{name}={argv[i + 1]}")
                i += 1
        i += 1
    return argv


def _home(value: str, given: str) -> str:
    """`arguments.home`, its ValueError a FlagError (one line, exit 1)."""
    try:
        return arguments.home(value, given)
    except ValueError as e:
        raise FlagError(str(e)) from None


def expand_config_paths(config: ml_collections.ConfigDict) -> None:
    """Expands a leading `~` in the config keys that name a file or directory (`PATH_KEYS`),
    whether the config file or an override set it. Raises FlagError naming the key for a
    `~user` of no user (`arguments.home`)."""
    for key in PATH_KEYS:
        *parents, leaf = key.split(".")
        holder = config
        for part in parents:
            holder = holder.get(part) if isinstance(holder, ml_collections.ConfigDict) else None
        if isinstance(holder, ml_collections.ConfigDict) and isinstance(holder.get(leaf), str):
            holder[leaf] = _home(holder[leaf], f"config key {key!r}")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing for `app.run`, where a bad flag or override prints one line and
    exits 1, and `--help` exits 0 (see the module docstring). A config file whose own code
    fails (a syntax error, a failed import, an error in get_config) is one line naming the
    file's line and the error (`_config_code_error`); a ConfigError it raises (an unknown
    variant) is one line too. A leading `~` in a path flag or config key is expanded
    (`home_expanded`, `expand_config_paths`)."""
    try:
        argv = home_expanded(argv)
    except FlagError as e:
        fail(str(e))
    for arg in argv[1:]:
        if arg == "--":
            break
        if arg in _HELP:
            _show_help(full=_HELP[arg])
        if re.match(r"--config\.(=|$)", arg):  # ml_collections: "Could not parse ''"
            fail(f"{arg} names no key; write --config.KEY=VALUE, e.g. --config.total_steps=100")
    for given in _config_given(argv):
        path = given.partition(":")[0]  # runs/x:best, as init_from spells a run's step
        if not path.strip():  # `--config=` read as the directory `.`: "no such file; it is a
            fail(  # directory"; `--config=:writers` dropped the variant
                f"{arguments.flag('config', given)} names no file; give a config file, "
                "e.g. --config=configs/digits_cnn.py"
            )
        if os.path.isdir(path):
            named = f"--config={given}" + (f": {path}" if path != given else "")
            if directory_kind.RUN not in directory_kind.of(path):
                fail(f"{named} is a directory; give a config file (configs/NAME.py)")
            made = _recorded_config(path)
            fail(
                f"{named} is a run directory; give a config file (configs/NAME.py), the one "
                f"the run was made from{f': {made}' if made else ''}"
            )
        if os.path.exists(path) and not os.path.isfile(path):  # read whole: /dev/zero, a FIFO
            fail(
                f"--config={given}: {path} is not a regular file (a device, a pipe or a "
                "socket); give a config file (configs/NAME.py)"
            )
        if (binary := _binary_file(path)) is not None:
            fail(
                f"--config={given}: {path} is not a Python config file ({binary}); give a "
                "config file with get_config() (configs/NAME.py)"
            )
        if given.endswith((".json", ".yaml", ".yml")):
            run = os.path.dirname(given) if os.path.basename(given) == "config.json" else None
            made = _recorded_config(run) if run is not None else ""
            made = f" ({made})" if made else ""
            fail(
                f"--config={given}: a config is a Python file with get_config() "
                "(configs/NAME.py); a run's config.json records a run: give the file it was "
                f"made from{made}, with --config.KEY=VALUE for what differs"
            )
    logging.get_absl_logger().addFilter(_said_here)  # once: a logger holds a filter once
    py_logging.getLogger("asyncio").addFilter(_said_here)  # Orbax's event loops log there
    decimal_numbers(flags.FLAGS)
    try:
        rest = flags.FLAGS(argv)
    except flags.UnrecognizedFlagError as e:
        fail(_unknown_flag(e))
    except _PARSE_ERRORS as e:
        if (gone := _missing_config_file(argv)) is not None:  # an override read it first
            fail(gone)
        missing, raised = _missing_flags(e), _config_file_error(e)
        if missing and "config" in _REQUIRED.findall(str(e)) and flags.FLAGS["config"].present:
            fail(f"--config={_config_path()}: get_config() returned None; {_RETURN_A_CONFIG}")
        if missing:
            fail(missing)
        if raised is not None:
            given = _config_given(argv)
            shown = given[-1] if given else "?"
            # Quoted where it ends in ':' (an empty variant): "--config=x.py:: ..." read as a typo.
            fail(f"--config={repr(shown) if shown.endswith(':') else shown}: {raised}")
        fail(
            _config_code_error(e, argv)
            or _through_a_value(argv)
            or bad_override(one_line(e, argv), argv)
        )
    except Exception as e:  # what get_config itself raised (RuntimeError too), else a bug
        message = _missing_config_file(argv) or _config_code_error(e, argv)
        if message is None:
            raise  # not the config file's: a bug to read with its traceback
        fail(message)
    if (empty := empty_flag(flags.FLAGS)) is not None:
        fail(empty)
    if "config" in flags.FLAGS and flags.FLAGS["config"].present:
        # ml_collections defers a missing file's error to the config's first use.
        path = _config_path()
        if not os.path.isfile(path):
            fail(missing_config(config_flags.get_config_filename(flags.FLAGS["config"])))
        value = flags.FLAGS["config"].value
        if not isinstance(value, ml_collections.ConfigDict):
            returned = type(value).__name__
            fail(f"--config={path}: get_config() returned a {returned}; {_RETURN_A_CONFIG}")
        if (said := number_for_a_tuple(argv, value)) is not None:
            fail(said)
        for said in repeated_values(argv, value):
            warn(said)
        try:
            expand_config_paths(value)
        except FlagError as e:
            fail(str(e))
    return rest


class _DecimalParser:
    """absl's parser of a numeric flag, taking ASCII decimal numbers only (`arguments.INTEGER`
    for an integer flag, `arguments.NUMBER` for a float flag) and no NaN inside bounds (a float
    flag): absl reads an integer as a Python literal, so `--port=0x50` bound port 80, and `0o17`,
    `08000`, `8_000` and full-width digits were taken too (while `0b1` was refused); a float as
    float() does, so `1_0.5`, `０.１` and Arabic-Indic digits were taken; and NaN passes absl's
    bounds (every comparison is false). Refused as `int()`, `float()` and absl's bounds refuse
    (`_job_flag_refusal` words them alike); all else is the wrapped parser's."""

    def __init__(self, parser: flags.ArgumentParser):
        self._parser = parser

    def __getattr__(self, name: str):
        return getattr(self._parser, name)

    def parse(self, argument):
        integer = isinstance(self._parser, flags.IntegerParser)
        if isinstance(argument, str):
            if integer and not arguments.INTEGER.fullmatch(argument):
                raise ValueError(f"invalid literal for int() with base 10: {argument!r}")
            if not integer and not arguments.NUMBER.fullmatch(argument):
                raise ValueError(f"could not convert string to float: {argument!r}")
        value = self._parser.parse(argument)
        bounded = self._parser.lower_bound is not None or self._parser.upper_bound is not None
        if bounded and value != value:  # NaN
            raise ValueError(f"{argument} is not {self._parser.syntactic_help}")
        return value

    def flag_type(self) -> str:
        return self._parser.flag_type()


class _LiteralNumbers:
    """ml_collections' parsers of a Python literal (a tuple key's override, or a key the config
    file lacks, as `task.*` mostly are), whose numbers take ASCII decimal notation as a number
    flag's do (`arguments.literal_number`): `--config.model.features='(3_2,)'` was (32,), and
    `--config.task.smoothing=1_0.5` 10.5. A tuple is refused as one that is no tuple is
    ("Error while parsing string", `bad_override`'s words); a new key keeps the text as given,
    a string, as `abc` is, for its check to refuse ("must be float like its default").
    Subclasses of ml_collections' own parsers, which it tells apart by class."""

    def parse(self, argument):
        if isinstance(argument, str) and arguments.literal_number(argument) is not None:
            if isinstance(self, config_flags.tuple_parser.TupleParser):
                raise ValueError(f"Error while parsing string: {argument} as tuple")
            return argument
        return super().parse(argument)


class _TupleNumbers(_LiteralNumbers, config_flags.tuple_parser.TupleParser):
    pass


class _NewKeyNumbers(_LiteralNumbers, config_flags_impl._LiteralParser):
    pass


def decimal_numbers(flag_values: flags.FlagValues) -> None:
    """Every numeric flag of `flag_values` takes ASCII decimal numbers only, and a bounded float
    flag no NaN (`_DecimalParser`); so does an integer or float key of a config file's or a dict
    flag's override (`--config.total_steps=0x10`, `--config.optimizer.learning_rate=０.１`,
    `--slo.availability=1_0.5`: ml_collections parses them with the parser registered for the
    key's type). `parse_flags` calls it before absl parses."""
    config_flags.register_flag_parser_for_type(int, _DecimalParser(flags.IntegerParser()))
    config_flags.register_flag_parser_for_type(float, _DecimalParser(flags.FloatParser()))
    config_flags.register_flag_parser_for_type(tuple, _TupleNumbers())
    config_flags.register_flag_parser_for_type(object, _NewKeyNumbers())
    for flag in flag_values._flags().values():
        parser = flag.parser
        if isinstance(parser, (flags.IntegerParser, flags.FloatParser)):
            flag.parser = _DecimalParser(parser)


# Text flags whose job refuses an empty value in words of its own, with more to say than
# `empty_flag` (ann serve's tokens: the file and variable to set; ann monitor's needed flags).
OWN_EMPTY: set[str] = set()
# Text flags a job needs, not marked required for absl (the job says what is missing), unless
# one of other flags is given (flag -> those flags; () = always: `ann observability render
# --out`; ann sweep's --workdir unless --summarize): given empty, told to give a value, not to
# drop the flag.
NEEDED_UNLESS: dict[str, tuple[str, ...]] = {}


def empty_item(name: str, values: Sequence[str]) -> str | None:
    """The refusal of a comma-separated flag's list (`values`, as absl split it) with an empty
    name in it (`--split=test,`), naming where; None for none."""
    if "" not in values:
        return None
    if not any(values):  # `--split=,`
        return f"`--{name}={','.join(values)}` names nothing; give names, or drop the flag"
    where = (
        "after a comma"
        if values[-1] == ""
        else "before a comma"
        if values[0] == ""
        else "between two commas"
    )
    return f"`--{name}={','.join(values)}` has an empty name {where}; drop it"


def empty_flag(flag_values: flags.FlagValues) -> str | None:
    """The refusal of a text flag given empty (`--out=`, `--out=' '`, or one value of a
    repeated or comma-separated flag) whose default is None (unset: the job then uses its own
    default, or needs the flag), unless the job words it (`OWN_EMPTY`): `ann report --out=`
    silently wrote the default WORKDIR/report while `--out=' '` was refused; None when no flag
    is so given."""
    for name, flag in sorted(flag_values._flags().items()):
        if name != flag.name or not flag.present or name in OWN_EMPTY:
            continue  # a short name's entry, a flag not given, or one the job words
        if type(flag.parser) is flags.ListParser and len(flag.value or []) > 1:
            if (item := empty_item(name, flag.value)) is not None:
                return item  # `--split=test,`: "unknown split ''"
        if name in CHOICES and not flag.value:  # `--split=`: "--split='' must be distinct"
            return empty_said(name, f"one or more of {', '.join(CHOICES[name])}")
        if flag.default is not None:
            continue  # one whose "" means something
        kind = type(flag.parser)
        if kind not in (flags.ArgumentParser, flags.ListParser):  # text, not a number or enum
            continue
        value = flag.value
        values = value if isinstance(value, list) else [value]
        if not values or any(isinstance(v, str) and not v.strip() for v in values):
            text = " ".join(flag.help.split(";\n")[0].split()).rstrip(".")
            said = empty_said(name, "a value", _needed(name, flag_values))
            return f"{said} (--{name}: {text[:1].lower() + text[1:]})"
    return None


def empty_said(name: str, takes: str, needed: bool = False) -> str:
    """The one wording of `--NAME` given empty: `--split is empty; give one or more of
    validation, test, or drop the flag`; without "drop the flag" where the job `needed` it
    (dropped, it said `missing --out`)."""
    said = f"--{name} is empty; give {takes}"
    return said if needed else f"{said}{',' if ',' in takes else ''} or drop the flag"


def _needed(name: str, flag_values: flags.FlagValues = flags.FLAGS) -> bool:
    """Whether the job needs flag `name`: absl-required, or in NEEDED_UNLESS without any of
    the flags that make it unneeded."""
    others = NEEDED_UNLESS.get(name)
    return _required(flag_values[name]) or (
        others is not None and not any(flag_values[o].present for o in others)
    )


def _required(flag: flags.Flag) -> bool:
    """Whether absl's `mark_flag_as_required` marked `flag` (its validator's message)."""
    return any(
        "must have a value other than None" in str(getattr(v, "message", ""))
        for v in flag.validators
    )


def _config_given(argv: Sequence[str]) -> list[str]:
    """The value of each `--config` in `argv` (after the program's name, up to `--`), as typed
    with its `:ARG`: `--config=FILE` and absl's `--config FILE` alike (one word after the
    other, it read as no --config at all: "--config=?")."""
    return [f.value for f in typed_flags(argv) if f.name == "config" and f.value is not None]


def typed_flags(argv: Sequence[str], config: object = None) -> Iterator[arguments.Flag]:
    """The flags of `argv` (the program's name, then its arguments) as absl reads them
    (`arguments.flags_in`): a flag without `=` takes the next argument unless it is a boolean
    (`is_boolean`, a config key's type read from `config`, the parsed config, where given)."""
    return arguments.flags_in(argv[1:], lambda name: is_boolean(name, config))


def last_typed(name: str, argv: Sequence[str] | None = None) -> arguments.Flag | None:
    """The last `--NAME` of `argv` (`sys.argv` by default), the one absl reads, as typed
    (`typed_flags`): a refusal quotes the value as the user wrote it (`--port=1e400`), not as
    parsed (`inf`); None where `argv` does not give it."""
    given = [f for f in typed_flags(sys.argv if argv is None else argv) if f.name == name]
    return given[-1] if given else None


def is_boolean(name: str, config: object = None) -> bool:
    """Whether absl reads `--NAME` alone, without a value: a boolean flag this job defines
    (`--noNAME` too), or `config.KEY` for a key holding a boolean in `config` (else in the
    schema: before the config file is loaded)."""
    if name.startswith("config."):
        key = name[len("config.") :]
        if config is None:
            return isinstance(config_lib.default(key), bool)
        try:
            return isinstance(config_lib.lookup(config, key), bool)
        except KeyError:
            return False
    for flag in (name, name[2:] if name.startswith("no") else ""):
        if flag and flag in flags.FLAGS and flags.FLAGS[flag].boolean:
            return True
    return False


def _recorded_config(workdir: str) -> str:
    """ "--config=FILE", the config file `workdir`'s run was made from as its config.json
    records it, for a message that refuses the run itself as a config; "" where none is
    recorded (not a run, or one from before ann recorded it)."""
    recorded = config_lib.recorded_config_flag(workdir)
    return f"--config={recorded}" if recorded else ""


def _missing_config_file(argv: Sequence[str]) -> str | None:
    """ "--config=PATH: no such file; did you mean ...?" when the last --config names no file:
    a --config.* override loads it while the flags are parsed, where ml_collections said
    "Configuration is not available because of an earlier failure to load: ..."."""
    given = _config_given(argv)
    if not given:
        return None
    if os.path.isfile(given[-1].partition(":")[0]):
        return None
    return missing_config(given[-1])


def missing_config(given: str) -> str:
    """ "--config=PATH: no such file; did you mean ...?" for `given`, the --config argument
    (PATH, or PATH:ARG: the suggestion keeps the `:ARG` variant, `configs/digits_autoencoder:dense`
    got "did you mean configs/digits_autoencoder.py?", which trains the other variant), or for
    a PATH below a file "--config=PATH cannot exist: F is a file, so nothing can be below it"
    (`atomic.absent`). A near name is looked for beside PATH, in ./configs, and then in ann's
    own configs/ (a checkout's), named by its full path."""
    path, colon, arg = given.partition(":")
    if (above := atomic.below_a_file(path)) is not None:
        return f"--config={path} cannot exist: {above}"
    near = near_files(path, ".py", colon + arg)
    folder, name = os.path.split(path)
    # The likeliest slip, `configs/` left out or misspelt (`digits_cnn.py`, `config/...`), got
    # no suggestion: the file is looked for in ./configs too.
    if not near and os.path.normpath(folder or ".") != "configs" and os.path.isdir("configs"):
        near = near_files(os.path.join("configs", name), ".py", colon + arg)
    # From elsewhere, ann's own configs/ (a checkout's, beside the package), by its full path.
    shipped = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    if not near and not os.path.isabs(path) and os.path.isdir(shipped):
        near = near_files(os.path.join(shipped, name), ".py", colon + arg)
    return f"--config={path}: no such file{near}"


# Messages of libraries that ann says in its own words: ml_collections' warning for a
# get_config() that returned None (parse_flags' one line), and Orbax's error for a step whose
# metadata is damaged (the resume's warning names the file, what it did and what follows; the
# Orbax line came first, as "E1205 ... Failed to read Metadata file: ... can't decode byte").
_SAID_HERE = (
    "get_config() returned None",
    "Failed to read Metadata file",
    "Failed to json parse Metadata file",
    # A save that failed in Orbax's threads (a full disk): each thread logged its traceback,
    # about 80 lines apiece, before ann train's one line (CheckpointSaveError) said which step's
    # save failed, why, and from which step the same command resumes.
    "_SignalingThread.run() raised an exception",
    "Commit callback in background save thread",
    "Finalize thread (save_finalize) failed",
)


def _said_here(record: py_logging.LogRecord) -> bool:
    """Drops a library's log record that ann says in its own words (`_SAID_HERE`), and
    asyncio's "exception was never retrieved" for a write into a checkpoint step Orbax had not
    committed (a full disk: TensorStore's writes of the failed save, one traceback each, after
    ann train's line)."""
    message = record.getMessage()
    if "exception was never retrieved" in message and ".orbax-checkpoint-tmp" in message:
        return False
    return not any(said in message for said in _SAID_HERE)


_RETURN_A_CONFIG = (
    "return an ml_collections.ConfigDict (start from ann.config.base(), as configs/digits_cnn.py "
    "does)"
)


def _config_path() -> str:
    """The --config file's path, without its `:ARG`."""
    return config_flags.get_config_filename(flags.FLAGS["config"]).partition(":")[0]


def config_code_error(error: BaseException, config: str) -> str | None:
    """`_config_code_error` for an exception raised by code of the `--config=CONFIG` file that a
    job calls itself (`ann sweep`'s get_sweep): "--config=PATH line N: ZeroDivisionError: ...;
    fix the config file", as an error in its get_config is said; None where it did not come
    from that file (or a module it imports)."""
    return _config_code_error(error, ["ann", f"--config={config}"])


def _config_code_error(error: BaseException, argv: Sequence[str]) -> str | None:
    """One line for an exception the `--config` file's own code raised (a syntax error, a
    failed import, an error in get_config), naming the file's line: "--config=PATH line N:
    NameError: ...; fix the config file"; and for a file without get_config, what to add.
    None when the error did not come from the config file."""
    given = _config_given(argv)
    if not given:
        return None
    path = given[-1].partition(":")[0]
    if isinstance(error, AttributeError) and "attribute 'get_config'" in str(error):
        return (
            f"--config={path} has no get_config(); define get_config() returning the "
            "ml_collections.ConfigDict to train (as configs/digits_cnn.py does)"
        )
    variant = given[-1].partition(":")[2]
    cause = error
    while cause is not None:  # get_config called with the variant it does not take
        # ml_collections words it inside its own error, the traceback as text.
        said = re.search(r"get_config\(\) takes \d+ positional arguments? but \d+ w\w+ given",
                         str(cause))  # fmt: skip
        if said:
            return (
                # The bare file name, as the other variant errors (config.py) name it.
                f"--config={given[-1]}: {os.path.basename(path)}'s get_config() takes no "
                f"argument ({said[0]}); "
                f"drop ':{variant}', or give it one: def get_config(arg=None)"
            )
        cause = cause.__cause__ or cause.__context__
    target = os.path.realpath(path)
    while error is not None:  # absl re-raises what get_config raised as a flag error
        if isinstance(error, SyntaxError) and os.path.realpath(error.filename or "") == target:
            line, text = error.lineno, error.msg
            break
        tb = traceback.extract_tb(error.__traceback__)
        frames = [f for f in tb if os.path.realpath(f.filename) == target]
        if frames:
            line, text = frames[-1].lineno, one_line(error)
            break
        error = error.__cause__ or error.__context__
    else:
        return None
    if (wrong := _wrong_type(error, target)) is not None:
        return f"--config={path} line {line}: {wrong}"
    from ann.imports import raised_at

    fix, inside = "fix the config file", ""
    at = raised_at(error)
    if at and os.path.realpath(at[0]) != target:  # in a module the config imports or calls
        inside, fix = f" (in {at[0]} line {at[1]})", f"fix {os.path.basename(at[0])}"
        text = error.msg if isinstance(error, SyntaxError) else text
    if isinstance(error, ModuleNotFoundError):  # `from configs import digits_cnn`, a user module
        fix = _module_fix(error.name or "", os.path.dirname(os.path.abspath(path)))
    if isinstance(error, SyntaxError) and not inside and not target.endswith(".py"):
        # `--config=README.md`: "fix the config file" told the user to edit the README.
        fix = "--config takes a Python file with get_config() (configs/NAME.py), not this one"
    if isinstance(error, AttributeError) and not inside and text.startswith("config key "):
        # `c.optimzer.learning_rate = 0.1` read a key that is not there: worded as the file's
        # other unknown keys are, the line respelt (it said "AttributeError: ...; fix the
        # config file").
        return f"--config={path} line {line}: {text}; {_respelt_line(target, line, text)}"
    return f"--config={path} line {line}{inside}: {type(error).__name__}: {text}; {fix}"


def _respelt_line(path: str, line: int, text: str) -> str:
    """The fix for line `line` of the config file `path`, which reads a key `text` (`config
    key 'optimzer' is unknown (did you mean 'optimizer'?)`) says is not there: `fix the line:`
    and the line with the key meant, where one is meant and its parts can be put in place;
    else "fix the line"."""
    said = re.match(r"config key '([^']+)' is unknown \(did you mean '([^']+)'\?\)", text)
    source = linecache.getline(path, line).strip()
    if not said or not source:
        return "fix the line"
    wrong, meant = said[1].split("."), said[2].split(".")
    if len(wrong) != len(meant):
        return "fix the line"
    for was, now in zip(wrong, meant, strict=True):
        if was != now:
            source = re.sub(rf"\.{re.escape(was)}\b", f".{now}", source, count=1)
    return f"fix the line: {source}"


def _module_fix(name: str, beside: str) -> str:
    """The fix for a config file's import of the module `name` that Python did not find, the
    file being in the directory `beside`: ml_collections loads a config file by its path and,
    unlike `python FILE.py`, puts not its directory on sys.path, so a module beside it
    (`import mybase` next to mychild.py) needs `PYTHONPATH=DIR` naming that directory; ann's
    `configs` package needs the repository's root (`PYTHONPATH=.` there); anything else, the
    directory that holds it."""
    top = name.partition(".")[0]

    def added(directory: str) -> str:  # PYTHONPATH with it, kept as it was besides
        shown = shlex.quote(directory)
        return (
            f"PYTHONPATH={shown}:$PYTHONPATH"
            if os.environ.get("PYTHONPATH")
            else (f"PYTHONPATH={shown}")
        )

    if top and (
        os.path.isfile(os.path.join(beside, f"{top}.py"))
        or os.path.isdir(os.path.join(beside, top))
    ):
        return (
            f"{top!r} is beside the config file, whose directory is not on sys.path (the file "
            f"is loaded by its path): put that directory on it, {added(beside)}"
        )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if top == "configs" and os.path.isdir(os.path.join(root, "configs")):
        # Its path, not "PYTHONPATH=. from the repository's root": run from there, a config
        # file's own modules beside it were lost instead (trial 47a).
        return f"put ann's repository root, which holds configs/, on PYTHONPATH: {added(root)}"
    if top == "configs":  # an installed copy: configs/ is not a package it ships
        return f"put the directory that holds {name!r} (ann's repository root) on PYTHONPATH"
    return f"put the directory that holds {name!r} on PYTHONPATH"


def in_config_file(
    error: BaseException, flag_values: flags.FlagValues = flags.FLAGS
) -> BaseException:
    """`error` worded for the config file where it refuses a key's name or value
    (`config.KeyValueError`) that the `--config` file, not an override, set: the file and the
    line that sets the key ("--config=FILE line 5: config key 'optimizer.lerning_rate' is
    unknown (did you mean 'optimizer.learning_rate'?); fix the line: c.optimizer.learning_rate
    = 0.01"), with a fix written as the file spells it, not a `--config.KEY=<type>` flag (it was
    worded as if typed on the command line, without the file). Any other error, or one an
    override made, is returned as it is."""
    if "config" not in flag_values or not flag_values["config"].present:
        return error
    holder = flag_values["config"]
    config = config_flags.get_config_filename(holder)
    return config_file.key_error(error, config, holder.override_values)


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _wrong_type(error: BaseException, target: str) -> str | None:
    """ml_collections' refusal of `c.KEY = VALUE` in the config file `target` (a real path)
    where VALUE is not of the key's type ("Could not override field 'batch_size' (reference).
    128 is of original type <class 'str'> and cannot be casted to type <class 'int'>") in the
    words of a bad `--config.KEY=` override: "config key 'batch_size' must be an integer, got
    '128' (a str); e.g. c.batch_size = 128", the key's whole dotted path (found from the
    config file's own ConfigDicts) and the assignment as the file spells it. None for another
    error."""
    if not isinstance(error, TypeError) or not str(error).startswith("Could not override"):
        return None
    frames = [frame for frame, _ in traceback.walk_tb(error.__traceback__)]
    setting = [
        f for f in frames
        if f.f_code.co_name == "__setitem__"
        and isinstance(f.f_locals.get("self"), ml_collections.ConfigDict)
    ]  # fmt: skip
    own = [f for f in frames if os.path.realpath(f.f_code.co_filename) == target]
    if not setting or not own:
        return None
    section, name, value = (setting[-1].f_locals.get(n) for n in ("self", "key", "value"))
    field = section._fields.get(name)  # noqa: SLF001  (what ml_collections cast to)
    current = field.get() if isinstance(field, ml_collections.FieldReference) else field
    wanted = type(current)
    # The dotted key: the path to `section` from a ConfigDict the config file holds.
    paths = [
        p for held in own[-1].f_locals.values() if isinstance(held, ml_collections.ConfigDict)
        for p in [_path_to(held, section)] if p is not None
    ]  # fmt: skip
    key = ".".join((*max(paths, key=len, default=()), name))
    line = traceback.extract_tb(error.__traceback__)
    said = [f.line for f in line if os.path.realpath(f.filename) == target][-1:]
    spelt = f"c.{key}"
    with contextlib.suppress(SyntaxError):  # the target as the file spells it (o.learning_rate)
        for node in ast.walk(ast.parse((said or [""])[0].strip())):
            if isinstance(node, ast.Attribute) and node.attr == name:
                spelt = ast.unparse(node)
    if isinstance(current, ml_collections.ConfigDict):  # c.optimizer = "adam", as bad_override
        inner = "name" if "name" in current and isinstance(value, str) else next(iter(current), "")
        shown = f"{value!r}" if inner == "name" else f"{current[inner]!r}" if inner else "..."
        return (
            f"config key {key!r} is a section, not a value; set its keys, e.g. "
            f"{spelt}.{inner or 'KEY'} = {shown}"
        )
    words = _TYPE_WORDS.get(wanted, f"a {wanted.__name__}")
    kind = type(value).__name__
    got = f"got {value!r} ({'an' if kind[0] in 'aeiou' else 'a'} {kind})"
    example = _meant_value(value, wanted)
    example = current if example is None else example
    return f"config key {key!r} must be {words}, {got}; e.g. {spelt} = {example!r}"


def _path_to(root: ml_collections.ConfigDict, section: object) -> tuple[str, ...] | None:
    """The keys from `root` down to the ConfigDict `section` (the object itself), () for
    `root`; None where `root` does not hold it."""
    if root is section:
        return ()
    for key, value in root.items():
        if isinstance(value, ml_collections.ConfigDict):
            below = _path_to(value, section)
            if below is not None:
                return (key, *below)
    return None


def _meant_value(value: object, wanted: type) -> object | None:
    """`value` as the type `wanted` where it plainly means one ('128' for an int, 100.0 for
    100, 'true' for True, 'label' or 64 for a tuple: ('label',), (64,)), else None."""
    if isinstance(value, str):
        text = value.strip()
        if wanted is bool and text.lower() in ("true", "false"):
            return text.lower() == "true"
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return (text,) if wanted is tuple else None  # a tuple's one string, unwrapped
    if isinstance(value, bool) or wanted is bool:
        return None
    if wanted is tuple and isinstance(value, int | float | str):  # `c.model.features = 64`
        return (value,)  # it was offered the key's current value, (256, 256)
    if wanted is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if wanted is float and isinstance(value, int):
        return float(value)
    return value if type(value) is wanted else None


def _unknown_flag(error: flags.UnrecognizedFlagError) -> str:
    """absl's message for an unknown flag, with a suggestion: `--config.KEY` where the name is
    a config key (`--total_steps` for `--config.total_steps`), else the job's closest flag."""
    name, typed = error.flagname, (error.flagvalue or f"--{error.flagname}").split("=")[0]
    # The value as typed, for the flag meant (`--config.total_steps=5`, ready to paste).
    _, equals, value = (error.flagvalue or "").partition("=")
    value = shlex.quote(value) if equals else "..."
    message = f"unknown flag {typed}"  # as typed: absl's name drops the dashes (-1 -> 1)
    if name.startswith("config.") and "config" not in flags.FLAGS:
        return (
            f"{message}: config keys are set where a run is made (ann train, ann transfer, ann "
            "sweep: --config.KEY=VALUE); this job reads what the run's config.json recorded"
        )
    if name.startswith("config.") and "config" in flags.FLAGS:  # no --config to override
        return f"{message}: {typed} overrides a key of --config=FILE; give the config file too"
    if _is_number(name):
        return (
            f"{message}: an argument that starts with '-' is read as a flag; give a negative "
            "value as --flag=-1, or positional arguments after '--' (ann JOB [flags] -- ARGS)"
        )
    meant, closeness = _config_keys_meant(name) if "config" in flags.FLAGS else ([], 0.0)
    if closeness == 1.0:  # a config key's name as it is, or ann's for it (--name, --lr)
        return f"{message}; config keys are set as {_either(meant, value)}"
    own = list(flags.FLAGS.get_key_flags_for_module(sys.argv[0])) + [
        flags.FLAGS[n] for n in ("config",) if n in flags.FLAGS
    ]
    names = sorted({f.name for f in own})
    head, dot, rest = name.partition(".")
    near_dict = difflib.get_close_matches(head, names, n=1, cutoff=0.6) if dot else []
    # --alerts.drift_for: a dict flag's (ml_collections) key under a near name of it.
    if near_dict and near_dict[0] != head:
        return f"{message}; did you mean --{near_dict[0]}.{rest}? (--help lists this job's flags)"
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)  # 0.5: --bogus, "--out?"
    close = close or [n for n in names if n.startswith(name) or name.startswith(n)][:1]
    if close:
        return f"{message}; did you mean --{close[0]}? (--help lists this job's flags)"
    if closeness >= 0.8:  # a near miss of a config key given as a flag: --totl_steps
        return f"{message}; did you mean {_either(meant, value)}?"
    return f"{message} (--help lists this job's flags)"


def _config_keys_meant(name: str) -> tuple[list[str], float]:
    """The config keys (values, not sections) a flag `--NAME` may mean, as `config.lookup`
    finds them in the schema (every one of a name several sections hold: --name is
    data.name, model.name or optimizer.name), and their closeness (1: the name as it is)."""
    try:
        found = config_lib.lookup(SCHEMA, name)
    except config_lib.KeyLookupError as e:
        meant = [k for k in e.meant if not config_lib.is_section(config_lib.lookup(SCHEMA, k))]
        return meant, e.closeness if meant else 0.0
    return ([], 0.0) if config_lib.is_section(found) else ([name], 1.0)


def _either(keys: Sequence[str], value: str = "...") -> str:
    """ "--config.a=VALUE" or "--config.a=VALUE, --config.b=VALUE or --config.c=VALUE"."""
    said = [f"--config.{k}={value}" for k in keys]
    return said[0] if len(said) == 1 else f"{', '.join(said[:-1])} or {said[-1]}"


def _is_number(text: str) -> bool:
    return arguments.NUMBER.fullmatch(text) is not None


def _dotted(tree: dict, prefix: str = "") -> list[str]:
    """Every key of a nested dict as a dotted path ("optimizer.learning_rate")."""
    keys = []
    for key, value in tree.items():
        path = prefix + key
        keys += _dotted(value, path + ".") if isinstance(value, dict) else [path]
    return keys


_CONVERSIONS = {  # the start of what absl or ml_collections says -> what the key takes
    "invalid literal for int()": "an integer",
    "could not convert string to float": "a number",
    # absl's booleans take 1 and 0 (and t, f) too: `=0` was taken while `=1.5` was told
    # "true or false".
    "('Non-boolean argument to boolean flag'": "true or false, or 1 or 0",
    "Error while parsing string": "a tuple such as '(32, 64)', quoted for the shell",
}


def _example(key: str, argv: Sequence[str]) -> object | None:
    """A number or boolean to show for `--config.KEY`: the config file's value, else the
    schema's default; not the range's "unset" value (total_steps=0), not a tuple."""
    given: object = _loaded_config(argv)
    for part in key.split("."):
        given = given[part] if config_lib.is_section(given) and part in given else None
    allowed = config_lib.RANGES.get(key)
    for value in (given, config_lib.default(key)):
        if type(value) in (int, float, bool) and not (allowed and value in allowed.also):
            return value
    return None


# What a job's numeric flag takes where the job checks its range itself (ann serve's settings:
# "an integer in [1, 65535]"; `arguments.expected`), or where a note follows its bounds, so that
# a value that is no number is refused in the words of one out of range. A flag with absl's
# lower and upper bounds needs none: its refusals name them in the same words.
EXPECTED: dict[str, str] = {}
# The example a numeric flag's refusal shows where its default is None (unset); else the default.
EXAMPLES: dict[str, object] = {}
# A list flag's allowed names, as its check refuses others (`define_names`): `--platforms`.
CHOICES: dict[str, tuple[str, ...]] = {}


def define_bounded(
    name: str,
    default: float | None,
    help_text: str,
    low: float,
    high: float,
    note: str = "",
    *,
    kind: type = int,
    flag_values: flags.FlagValues = flags.FLAGS,
) -> str:
    """A numeric flag refused outside [low, high] by absl as it parses (its lower and upper
    bounds), whose help ends with what it takes ("Takes an integer in [1, 4096] (GiB).",
    `arguments.takes`) and whose refusals say the same (`EXPECTED`, the `note` included): the
    bounds written once, for the check, the help and the refusal (absl's own "(an integer in
    the range [1, 4096])" is left out of `--help`: `_said_in_help_only`). `kind` int or float.
    Returns the words."""
    what = arguments.expected(kind, low, high, note)
    define = flags.DEFINE_integer if kind is int else flags.DEFINE_float
    define(
        name,
        default,
        arguments.takes(help_text, what),
        lower_bound=low,
        upper_bound=high,
        flag_values=flag_values,
    )
    if flag_values is flags.FLAGS:
        EXPECTED[name] = what
    return what


def among(values: Sequence[str]) -> str:
    """What a list flag of `values` takes: "names among cpu, cuda, rocm, tpu (comma-separated)"."""
    return f"names among {', '.join(values)} (comma-separated)"


def define_names(
    name: str, default: Sequence[str] | None, values: Sequence[str], help_text: str
) -> None:
    """A comma-separated list flag whose check (the job's) refuses a name not in `values`; its
    help ends with them (`among`), from the same tuple the check reads (`CHOICES` records it)."""
    flags.DEFINE_list(
        name,
        list(default) if default is not None else None,
        arguments.takes(help_text, among(values)),
    )
    CHOICES[name] = tuple(values)


def _bounds(parser: object) -> str | None:
    """absl's lower and upper bounds of a numeric flag's parser in `arguments.expected`'s words
    ("an integer in [1, 1024]"); None without both."""
    low, high = getattr(parser, "lower_bound", None), getattr(parser, "upper_bound", None)
    if low is None or high is None:
        return None
    integer = isinstance(getattr(parser, "_parser", parser), flags.IntegerParser)
    return arguments.expected(int if integer else float, low, high)


def _job_flag_refusal(typed: str, name: str, said: str) -> str | None:
    """absl's refusal of a job's own flag's value (`said`, of `typed`: "--port=abc") as one
    style, whether the value is no number or out of the flag's bounds: "--port=abc must be an
    integer in [1, 65535]; e.g. --port=8000" (`arguments.refusal`: the flag's default, or its
    `EXAMPLES` entry, as the example); None where absl's words are not one of these."""
    choices = re.fullmatch(r"value should be one of <(.*)>", said)  # an enum flag
    if choices:
        options, value = choices.group(1).split("|"), typed.partition("=")[2]
        if not value.strip():  # as `empty_flag` words a text flag's: not "--emit= must be"
            return empty_said(name, f"one of {', '.join(options)}", _needed(name))
        near = difflib.get_close_matches(value.lower(), [o.lower() for o in options], n=1)
        near = [o for o in options if near and o.lower() == near[0]]
        meant = f" (did you mean {near[0]!r}?)" if near else ""
        return f"{typed} must be one of {', '.join(options)}{meant}"
    # A flag's lower or upper bound; absl writes "a positive integer", "integer >= 2".
    bound = re.fullmatch(r"\S+ is not (?:an? )?(.*)", said)
    wanted = next((w for start, w in _CONVERSIONS.items() if said.startswith(start)), None)
    if not bound and wanted is None:
        return None
    typed = arguments.flag(name, typed.partition("=")[2])  # `--top_p='1.0 '`: its space shown
    parser = flags.FLAGS[name].parser
    bounded = getattr(parser, "lower_bound", None) is not None or (
        getattr(parser, "upper_bound", None) is not None
    )
    what = bound.group(1) if bound else parser.syntactic_help if bounded else None
    if what is not None:  # absl's own words for the bounds, given their article
        what = re.sub(r"^an? ", "", what)
        what = f"{'an' if what[0] in 'aeiou' else 'a'} {what}"
    what = EXPECTED.get(name) or _bounds(parser) or what or wanted
    example = EXAMPLES.get(name, flags.FLAGS[name].default)
    if (meant := arguments.leading_zero(typed.partition("=")[2])) is not None and "integer" in what:
        what, example = f"{what} without a leading zero", meant
    return arguments.refusal(typed, what, name, example)


def bad_override(text: str, argv: Sequence[str]) -> str:
    """ "flag --config.total_steps=abc: invalid literal for int() ..." as "--config.total_steps=abc
    must be an integer ..."; other messages unchanged."""
    match = re.fullmatch(r"flag (--config\.([\w.]+)=.*?): (.*)", text)
    if match and match.group(3).startswith("Failed to parse"):  # a value for a whole section
        key = match.group(2)
        inside = [k for k in _dotted(SCHEMA) if k.startswith(f"{key}.")]
        shown = [(k, config_lib.default(k)) for k in inside if config_lib.default(k) not in ("",)]
        value = match.group(1).split("=", 1)[1]
        # optimizer=sgd, model=mlp: the section's name, as typed
        named = [(f"{key}.name", value)] if f"{key}.name" in inside and value else []
        shown = named or shown
        example = f"--config.{shown[-1][0]}={shown[-1][1]}" if shown else f"--config.{key}.NAME=V"
        return f"{match.group(1)}: '{key}' is a section, not a value; set its keys, e.g. {example}"
    missing = re.fullmatch(r"Missing value for flag (--[\w.]+)", text)
    if missing:
        return f"{missing.group(1)} needs a value: {missing.group(1)}=VALUE"
    job_flag = re.fullmatch(r"flag (--(\w+)=.*?): (.*)", text)  # the job's own (serve --port)
    if job_flag and (said := _job_flag_refusal(*job_flag.groups())):
        return said
    section = re.fullmatch(r"flag (--(\w+)\.([\w.]+)=.*?): (.*)", text)  # --alert.accuracy_min
    if section and not match and (said := _bad_section_value(*section.groups())):
        return said
    if match:
        for said, wanted in _CONVERSIONS.items():
            if match.group(3).startswith(said):
                key = match.group(2)
                strings = config_lib.ELEMENTS.get(key, (None,))[0] is str
                if strings and said == "Error while parsing string":
                    # A tuple of strings, not of numbers: each string quoted inside the tuple.
                    given = config_lib.string_tuple(match.group(1).split("=", 1)[1])
                    example = repr(given or config_lib.ELEMENTS[key][1])
                    return (
                        f"{match.group(1)} must be a tuple of quoted strings, the whole quoted "
                        f'for the shell: --config.{key}="{example}"'
                    )
                example = _example(key, argv)
                typed = match.group(1).split("=", 1)[1]
                if wanted == "an integer" and (meant := arguments.leading_zero(typed)) is not None:
                    return (
                        f"{match.group(1)} must be an integer without a leading zero; e.g. "
                        f"--config.{key}={meant}"
                    )
                example = f"; e.g. --config.{key}={example}" if example is not None else ""
                return f"{match.group(1)} must be {wanted} (the key's type in the config){example}"
    return text


def repeated_values(argv: Sequence[str], config: object) -> list[str]:
    """The warning for `--config.KEY=...` given more than once where KEY does not hold a tuple
    in `config` (the parsed config): ml_collections keeps the last value, as absl does for any
    flag, and said nothing (`--config.total_steps=100 --config.total_steps=200` trained 200
    steps), where repeating the flag is how a tuple key takes several elements
    (`number_for_a_tuple`). Warned, not refused: a wrapper's defaults followed by the user's
    flags are the usual way to override them. One warning per such key, in the order given
    (it warned of the first alone)."""
    given: dict[str, list[arguments.Flag]] = {}
    for flag in typed_flags(argv, config):
        if re.fullmatch(r"config\.[\w.]+", flag.name):
            given.setdefault(flag.name[len("config.") :], []).append(flag)
    said = []
    for key, repeats in given.items():
        if len(repeats) < 2:
            continue
        try:
            value = config_lib.lookup(config, key)
        except KeyError:
            continue  # refused by name elsewhere
        if isinstance(value, tuple | list):
            continue
        typed, last = " ".join(f.typed for f in repeats), repeats[-1].value
        said.append(
            f"--config.{key} is given {len(repeats)} times ({typed}): the last, {last}, is "
            "taken (a key that is not a tuple takes one value)"
        )
    return said


def number_for_a_tuple(
    argv: Sequence[str], config: object, swept: Collection[str] = ()
) -> str | None:
    """The refusal of `--config.KEY=3` where KEY holds a tuple in `config` (the parsed config:
    model.features, (32, 64)) and is given once: ml_collections makes a lone value the 1-tuple
    (3,) without a word, where a number reads as a size or a count. A comma says "tuple" (`=3,`,
    `='(3,)'`), and so does the flag given twice (`=32 --config.KEY=64`, ml_collections' own
    spelling); a string for a tuple of strings (`data.eval_splits=test`) names one thing and is
    kept. The spellings offered are ones the key's check accepts (a tuple of integers gets an
    integer, not 3.5), and a key in `swept` (a sweep's get_sweep gave it) is spelt in Python,
    as get_sweep writes it. `--config.KEY 3` (absl's other spelling) counts as `=3`. None when
    there is no such override."""
    given: dict[str, list[tuple[str, str]]] = {}  # key: (value, as typed) per flag
    for flag in typed_flags(argv, config):
        if re.fullmatch(r"config\.[\w.]+", flag.name) and flag.value is not None:
            given.setdefault(flag.name[len("config.") :], []).append((flag.value, flag.typed))
    for key, texts in given.items():
        strings = config_lib.ELEMENTS.get(key, (None,))[0] is str  # their check names the type
        if len(texts) != 1 or not _is_number(texts[0][0].strip()) or strings:
            continue
        try:
            value = config_lib.lookup(config, key)
        except config_lib.KeyLookupError:
            continue
        if isinstance(value, tuple):
            return _one_number_refusal(key, *texts[0], value, config, key in swept)
    return None


def _one_number_refusal(
    key: str, text: str, typed: str, value: tuple, config: object, swept: bool
) -> str:
    number, kind = text.strip(), ""
    example = _integer_example(key, config)
    if example is not None:
        kind = " of integers"
        if not arguments.INTEGER.fullmatch(number):  # '(3.5,)' would be refused in turn
            number = str(example)
    if key in config_lib.PAIRS:  # '(20,)' would be refused in turn: the key takes a pair
        what, rest = config_lib.PAIRS[key]
        pair = f"({number}, {rest})"
        fix = f"h.sweep('{key}', [{pair}, ...])" if swept else f"--config.{key}='{pair}'"
        return (
            f"{typed if not swept else f'{key}={text}'} gives the key '{key}' one number; it "
            f"takes {what}, e.g. {fix}"
        )
    if swept:
        return (
            f"{key}={text} gives the tuple key '{key}' one number, which ml_collections would "
            f"take as {value!r}; give get_sweep a tuple{kind}: h.sweep('{key}', [({number},), "
            f"({number}, N), ...])"
        )
    flag = f"--config.{key}"
    return (
        f"{typed} gives the tuple key '{key}' one number, which ml_collections would "
        f"take as {value!r}; give a tuple{kind}: {flag}='({number},)' (or ={number},) for one "
        f"element; for more, {flag}='({number}, N)' or the flag once per element "
        f"({flag}={number} {flag}=N)"
    )


def _integer_example(key: str, config: object) -> int | None:
    """An integer for `key` where its elements must be integers (`config_lib.ELEMENTS`, or a
    model argument whose default is a tuple of integers), else None (any number may do)."""
    if key in config_lib.ELEMENTS:
        kind, example = config_lib.ELEMENTS[key]
        return example[0] if kind is int else None
    if not key.startswith("model.") or key.count(".") != 1:
        return None
    from ann import models  # flax: only for this refusal

    try:
        default = models.argument_default(config_lib.lookup(config, "model.name"), key[6:])
    except (config_lib.KeyLookupError, ConfigError, ImportError, TypeError, ValueError):
        return None
    ints = isinstance(default, tuple) and default
    ints = ints and all(isinstance(x, int) and not isinstance(x, bool) for x in default)
    return default[0] if ints else None


def _bad_section_value(flag: str, name: str, key: str, said: str) -> str | None:
    """ "flag --alert.accuracy_min=abc: could not convert ..." (a job's dict flag other than
    --config) as "--alert.accuracy_min=abc must be a number; e.g. --alert.accuracy_min=0.9"."""
    for start, wanted in _CONVERSIONS.items():
        if said.startswith(start):
            value: object = flags.FLAGS[name].value if name in flags.FLAGS else None
            for part in key.split("."):
                value = value[part] if config_lib.is_section(value) and part in value else None
            shown = type(value) in (int, float, bool)
            what = EXPECTED.get(f"{name}.{key}", wanted)  # a range, as one outside it says
            return arguments.refusal(flag, what, f"{name}.{key}", value if shown else None)
    return None


def near_files(path: str, suffix: str = "", tail: str = "") -> str:
    """ "; did you mean configs/digits_cnn.py?" for a file in `path`'s folder (ending in
    `suffix`) whose name is close to `path`'s (`atomic.near_sibling`); for a
    directory, "; it is a directory", and "did you mean DIR/FILE?" where it holds one file
    ending in `suffix` (a directory was offered as itself); else "". `tail` follows the file
    suggested (a --config's `:ARG`: "did you mean configs/digits_autoencoder.py:dense?")."""
    if os.path.isdir(path):
        inside = _files(path, suffix)
        one = f": did you mean {os.path.join(path, inside[0])}{tail}?" if len(inside) == 1 else ""
        return f"; it is a directory{one}"
    close = atomic.near_sibling(path, lambda p: p.endswith(suffix) and os.path.isfile(p))
    return f"; did you mean {close}{tail}?" if close else ""


def _files(folder: str, suffix: str) -> list[str]:
    """The names of the files in `folder` ending in `suffix`, sorted; [] where it is unreadable."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [n for n in names if n.endswith(suffix) and os.path.isfile(os.path.join(folder, n))]


class FlagError(ValueError):
    """A command-line flag's value is wrong; the message names the flag and the fix. `run`
    prints it as one line (like a ConfigError), whichever job raises it."""


@contextlib.contextmanager
def as_arguments(
    names: Mapping[str, str] | Iterable[str], values: Mapping[str, object] | None = None
) -> Iterator[None]:
    """Around a command's flag checks run for a Python function (`ann.export.export`,
    `ann.report.write.write_report`): a FlagError raised inside is raised again with each
    `--FLAG` of `names` (flag -> argument, or flag names that are the argument's own) written
    as the argument (`--out=DIR is inside ...; e.g. --out=X` as `out=DIR ...; e.g. out=X`),
    outside backticks (a command quoted whole): one check for the command and the function,
    in the words of whichever was called. `values` (flag -> the argument's value): a str
    value written bare after `--FLAG=` is quoted as Python writes it (`--calibration=None` as
    `calibration='None'`: it read as if the argument None were refused)."""
    pairs = dict(names) if isinstance(names, Mapping) else {n: n for n in names}
    quoted = {f: v for f, v in (values or {}).items() if isinstance(v, str)}
    try:
        yield
    except FlagError as e:
        parts = str(e).split("`")  # a command quoted in backticks keeps its flags
        for i in range(0, len(parts), 2):
            for flag, argument in pairs.items():
                if flag in quoted:
                    parts[i] = re.sub(
                        rf"--{re.escape(flag)}={re.escape(quoted[flag])}(?![\w.-])",
                        lambda _, a=argument, v=quoted[flag]: f"{a}={v!r}",
                        parts[i],
                    )
                parts[i] = re.sub(rf"--{re.escape(flag)}(?![\w.-])", argument, parts[i])
        raise type(e)("`".join(parts)) from None


def step_argument(step: object) -> int | str:
    """A Python function's `step` of a trained run ("best", "latest", a step number as an int
    or a str of digits) as its command takes `--step`: a str of digits as the int, any other
    str as it is (`check_trained_run` refuses a bad one, "bestt" included). Raises TypeError
    naming the argument for another type: a float was truncated (1.5 read as step 1). A NumPy
    integer (`np.int64(30)`, from an array of steps) is its int."""
    if isinstance(step, str):
        number = arguments.digits(step) and arguments.INTEGER.fullmatch(step)
        return int(step) if number else step  # "007", "３": refused as typed
    if isinstance(step, numbers.Integral) and not isinstance(step, bool):
        return int(step)
    raise TypeError(
        f"step: expected 'best', 'latest' or a step number (an int >= 0), got "
        f"{type(step).__name__} {step!r}"
    )


def check_no_arguments(args: Sequence[str]) -> None:
    """Raises FlagError when a command that takes flags only is given other words (`args`, the
    command line after the job's name): most often the rest of an unquoted value with spaces
    (`--prompt=Return the` leaves `the`)."""
    if args:
        words = " ".join(repr(a) for a in args)
        raise FlagError(
            f"unexpected argument{'s' if len(args) > 1 else ''} {words}: this command takes "
            'flags only (--name=value); quote a value that has spaces: --name="two words"'
        )


def check_trained_run(workdir: str, step: str, export_flag: str | None = None) -> None:
    """`--workdir` and `--step` of a command that restores a trained run (export, generate,
    report): raises FlagError with one line naming the flag and the fix. An export given as
    the run is named as one, with the run it came from, and `--export_flag` where the command
    also takes an export (report's --model)."""
    number = arguments.digits(step) and arguments.INTEGER.fullmatch(step)  # not "３", "0x10"
    takes = "'best', 'latest' or a step number"
    if not step.strip():  # as an empty text flag is said (`empty_flag`)
        raise FlagError(empty_said("step", takes))
    if not (step in ("best", "latest") or number):
        raise FlagError(f"--step={step!r} must be {takes} (>= 0)")
    kinds = directory_kind.of(workdir)
    if directory_kind.RUN in kinds:
        note_unfinished(workdir)
        if number:
            _check_step_saved(workdir, int(step))
        return
    if directory_kind.EXPORT in kinds:
        source = _export_source(workdir)
        came = f" (its run: --workdir={source})" if source else ""
        instead = f", or give the export as --{export_flag}={workdir}" if export_flag else ""
        raise FlagError(
            f"--workdir={workdir} is an export, not a training run; give the run's directory"
            f"{came}{instead}"
        )
    if not os.path.exists(workdir):
        what = atomic.absent(workdir)  # "cannot exist: F is a file, ..." below a file
    elif not os.path.isdir(workdir):
        what = "is a file, not a directory"
    elif (held := holds(workdir)) is not None:  # a registry, a sweep, a directory of runs
        runs = held.startswith("other runs")
        what = f"holds {held.removeprefix('other ')}" if runs else f"is {held}, not a training run"
    elif os.path.exists(os.path.join(workdir, directory_kind.REPORT_FILE)):
        what = f"is a report ({directory_kind.REPORT_FILE}), not a training run"
    elif os.path.isdir(config := os.path.join(workdir, "config.json")):  # "no config.json"
        what = f"holds no config.json file ({config} is a directory)"
    else:
        what = "holds no config.json"
    run = directory_kind.run_above(workdir)
    if (folder := directory_kind.step_folder(workdir)) is not None:  # RUN/checkpoints/600
        run, number = folder
        _check_step_saved(run, number, f"--workdir={workdir}")  # as --step=N, where not saved
        raise FlagError(
            f"--workdir={workdir} is a checkpoint of the training run at {run}; give "
            f"--workdir={run} --step={number}"
        )
    if run is not None:  # its checkpoints/, tensorboard/
        raise FlagError(
            f"--workdir={workdir} {what}: it is inside the training run at "
            f"{directory_kind.inside(workdir)[1]}; give --workdir={run}"
        )
    raise FlagError(f"--workdir={workdir} {what}; give the directory of a trained run")


def _check_step_saved(workdir: str, step: int, said: str = "") -> None:
    """FlagError unless the run's checkpoints/ holds `step`, or checkpoints_best/ does (the best
    step, kept there after checkpoints/ pruned it): `--step=N` restores from either. Told from a
    listing, before Orbax's managers (seconds of imports and opening) are; named with the
    workdir as the user gave it (the restore's error named its absolute path), after `said`,
    the flag that asked for the step (`--step=N` by default)."""
    steps = directory_kind.saved_steps(workdir)
    if steps.holder(step) is not None:
        return
    directory = os.path.join(workdir, directory_kind.CHECKPOINTS)
    file = atomic.below_a_file(os.path.join(directory, ""))  # "none" said of a file
    raise FlagError(
        f"{said or f'--step={step}'}: no checkpoint step {step} in {directory}; steps there: "
        f"{', '.join(map(str, steps.latest)) or 'none'}"
        + (f" ({file}: move it out of the workdir)" if file else "")
        + f"{directory_kind.best_beside(steps.best, steps.latest)}"
    )


def note_unfinished(workdir: str, who: str = "") -> None:
    """A `note:` line on stderr when the run is still training (its checkpoints, the best one
    included, may still change) or ended before its length (interrupted, diverged, failed):
    what is restored is then the best so far, which the user should know. `who`: what reads
    the run, said first ("init_from: "; export, report and generate say nothing)."""
    from ann.train import run_status  # json and os only: no JAX

    record = run_status.read(workdir)
    if record is None or record.get("status") in ("done", *run_status.FINISHED_EARLY):
        return
    step, total = record.get("step"), record.get("total_steps")
    at = f"step {step}" + (f" of {total}" if total else "")
    pid = run_status.live_owner(record)
    if pid is not None:  # a running record's step: its start's, then each save's
        what = f"is still training (pid {pid}; {run_status.recorded_at(record)})"
    elif record.get("status") == "running":
        dead = record.get("pid")
        if record.get("host") != socket.gethostname() or not isinstance(dead, int):
            return  # another machine's run: it may be training there
        # Its process is gone without recording an end: SIGKILL, out of memory, a crash.
        what = (
            f"stopped without recording its end ({run_status.recorded_at(record)}; its process, "
            f"pid {dead}, is gone: killed, or out of memory?)"
        )
    else:
        what = f"ended {record['status']} at {at}"
        saved = record.get("last_checkpoint")
        if isinstance(saved, int) and not isinstance(saved, bool) and saved != step:
            # A failed asynchronous save surfaces steps later: "ended failed at step 80" of a
            # run whose save of step 60 failed read as if step 80 were saved.
            what += f" (its last complete checkpoint: step {saved})"
    note(f"{who}{workdir} {what}; its checkpoints so far are used")


def _export_source(path: str) -> str | None:
    """The workdir an export's manifest says it came from, if it can be read."""
    import json

    try:
        with open(os.path.join(path, directory_kind.MARKERS[directory_kind.EXPORT]), "rb") as f:
            source = json.loads(f.read(1 << 20)).get("source", {}).get("workdir")
    except (OSError, ValueError, AttributeError):
        return None
    return source if isinstance(source, str) else None


# What a directory already holds (ann.directory_kind): a job writes into none of them but its own
# kind (`check_out`'s `may_hold`), or the two would mix (checkpoints beside a registry).
def holds(path: str) -> str | None:
    """What the directory `path` holds ("an export (manifest.json)", "other runs (a, b)": runs
    in it; "other runs under it (runs/a, ...)": runs one level further down), or None: nothing
    ann made, or no such directory."""
    kinds = directory_kind.of(path)
    if kinds:
        return directory_kind.described(kinds[0])
    entries = directory_kind.runs_in(path)
    if not entries:
        return None
    runs = directory_kind.runs_below(path, 4)
    shown = ", ".join(runs[:3]) + (", ..." if len(runs) > 3 or len(entries) > 3 else "")
    under = any("/" in run for run in runs)  # a folder of runs (a clone's runs/, a sweep)
    return f"other runs{' under it' if under else ''} ({shown})"


def _inside(flag: str, path: str, out: bool = False) -> str | None:
    """The refusal of `--flag=path` for the run, export or registry a directory above `path`
    is, or None; a sweep above it is not one (its trials are its runs' directories). `out`:
    for an output directory, which may sit in a run (its report/) but not in what the run
    manages (checkpoints/, checkpoints_best/, checkpoints_damaged/: named, with a place beside
    them to use instead), nor in an export or a registry (a registered version's files are
    fixed)."""
    found = directory_kind.inside(path)
    if found is None:
        return None
    kind, parent = found
    parent = parent if os.path.isabs(path) else os.path.relpath(parent)  # as the user gave it
    if out and kind == directory_kind.RUN:
        managed = directory_kind.run_managed(path, parent)
        if managed is None:
            return None
        # The run is no objection (its report/ is a fine --out): the managed folder is.
        name = os.path.basename(os.path.normpath(path))
        instead = os.path.join(parent, "out" if name.startswith("checkpoints") else name)
        return (
            f"--{flag}={path} is inside {managed}, which the training run at {parent} manages "
            f"(its checkpoints); choose a directory outside it, e.g. --{flag}={instead}"
        )
    return (
        f"--{flag}={path} is inside {directory_kind.NAMES[kind]} at {parent}; choose a "
        "directory outside it"
    )


def check_out(
    flag: str, path: str, may_hold: str | None = None, report: bool = False, others: bool = True
) -> None:  # fmt: skip
    """Raises FlagError naming `--flag` when the directory `path` cannot be created or written
    (a file in the way, no permission), already holds something ann made (`holds`) other
    than `may_hold` ("a training run" for `ann train`, "a sweep" for `ann sweep`), or a report
    (report.json) unless `report` (the job writes one: its own write checks which kind), or is
    inside a report (replaced whole on its next run, it would take `path` with it); creates
    nothing. Checked before a job computes. With `may_hold`, a directory holding files that
    are not its kind's is refused too, unless not `others` (`train_and_evaluate` from Python:
    a directory a notebook or test prepared)."""

    if not path.strip():
        raise FlagError(f"--{flag} is empty; give the directory to write")
    inside = _inside(flag, path, out=not may_hold)  # an --out may sit in a run (its report/)
    if inside is not None:
        raise FlagError(inside)
    above = directory_kind.report_above(path)
    if above is not None:
        raise FlagError(
            f"--{flag}={path} is inside the report at {above}, which its next run replaces "
            "whole; choose a directory outside it"
        )
    if not report and os.path.isfile(os.path.join(path, directory_kind.REPORT_FILE)):
        raise FlagError(
            f"--{flag}={path} holds a report ({directory_kind.REPORT_FILE}); choose another "
            f"--{flag}"
        )
    found = holds(path)
    if found is not None and not (may_hold and found.startswith(may_hold)):
        raise FlagError(f"--{flag}={path} holds {found}; choose another --{flag}")
    if may_hold and others and found is None and os.path.isdir(path):  # new or empty
        others = sorted(e for e in os.listdir(path) if not e.startswith("."))  # .lock, caches
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise FlagError(
                f"--{flag}={path} holds files that are not {may_hold}'s ({shown}); give a new or "
                f"empty directory, e.g. --{flag}={os.path.join(path, 'NAME')}"
            )
    why = atomic.why_not_creatable(path)
    if why:
        raise FlagError(f"--{flag}={path} {why}; choose another --{flag}")


@contextlib.contextmanager
def default_of(flag: str, path: str, given: bool) -> Iterator[None]:
    """Around the checks of a directory flag's `path`: where the user did not give the flag
    (not `given`) and `path` is its default, a FlagError naming `--flag=path` names it as the
    default ("PATH (the default --flag: none was given) cannot be created in ... (Read-only
    file system); give --flag=DIR elsewhere"): `ann report --workdir=RUN` on a read-only RUN
    said `--out=RUN/report cannot be created`, a flag the user never gave."""
    try:
        yield
    except FlagError as e:
        named = f"--{flag}={path}"
        if given or not str(e).startswith(named):
            raise
        text = f"{path} (the default --{flag}: none was given){str(e)[len(named) :]}"
        for fix in (f"choose another --{flag}", "choose a new directory"):
            text = text.replace(fix, f"give --{flag}=DIR elsewhere")
        raise FlagError(text) from e


class _LibraryInfoFilter(py_logging.Filter):
    """Keeps every warning, but INFO lines only from ann, experiments/ and the job itself
    (Orbax and TFDS log pages of INFO while restoring and reading), and no record of a
    KeyboardInterrupt (Ctrl-C is one line, the job's own)."""

    def __init__(self) -> None:
        super().__init__()
        # experiments/ is ann's sibling (found, not imported: it imports the framework).
        spec = importlib.util.find_spec("experiments")
        here = [os.path.dirname(os.path.abspath(__file__))]
        here += list(spec.submodule_search_locations or []) if spec else []
        self.own = tuple(os.path.abspath(d) + os.sep for d in here)
        job = getattr(sys.modules.get("__main__"), "__file__", None)  # e.g. a benchmark script
        self.job = os.path.abspath(job) if job else None

    def filter(self, record: py_logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            # A library's report of the Ctrl-C it was stopped by (Orbax: "Save Finalize thread
            # failed" and a traceback, when Ctrl-C interrupts its wait for a save): the job
            # says it in one line.
            return False
        if record.levelno >= py_logging.WARNING:
            return True
        return self.ours(record)

    def ours(self, record: py_logging.LogRecord) -> bool:
        """Whether ann, experiments/ or the job itself logged `record`."""
        path = os.path.abspath(record.pathname)
        return path.startswith(self.own) or path == self.job


class _ConsoleFormatter(logging.PythonFormatter):
    """absl's format, except ann's own warnings: `warning: MESSAGE`, as `warn` writes them (a
    warning a user must act on read `W1202 21:22:57.165131 139850074315648 resume.py:122] ...`
    among the training log). A library's warning keeps absl's prefix, naming where it came
    from; a record with a traceback keeps it."""

    def __init__(self, own: _LibraryInfoFilter) -> None:
        super().__init__()
        self.own = own

    def format(self, record: py_logging.LogRecord) -> str:
        if record.levelno == py_logging.WARNING and not record.exc_info and self.own.ours(record):
            return f"warning: {console.process_name()}{record.getMessage()}"
        return super().format(record)


def quiet_libraries(quiet: bool = False) -> None:
    """Drops libraries' INFO logging (see _LibraryInfoFilter) and writes ann's own warnings as
    `warning:` lines (_ConsoleFormatter), once; `quiet` keeps warnings only, ann's own INFO
    lines too."""
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _LibraryInfoFilter) for f in handler.filters):
        own = _LibraryInfoFilter()
        handler.addFilter(own)
        handler.setFormatter(_ConsoleFormatter(own))
    if quiet:
        logging.set_verbosity(logging.WARNING)


def show_progress() -> None:
    """From Python (a notebook, a script): ann's own INFO lines (start-up, each logged step,
    each eval, the run's end) on stderr as `ann train` prints them, through absl's handler with
    libraries' INFO left out (`quiet_libraries`). `train_and_evaluate` said nothing, and absl
    at INFO alone wrote pages of Orbax's and TFDS's lines around each step (trial 48a). Once
    is enough; calling it again changes nothing."""
    logging.use_absl_handler()
    logging.set_verbosity(logging.INFO)
    quiet_libraries()


def reader_gone() -> NoReturn:
    """stdout's reader closed the pipe (`| head`): stop quietly. stdout is pointed at /dev/null
    so that the interpreter's last flush does not fail again (Python's documented recipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(EXIT_BROKEN_PIPE)


EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a job stopped by Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM ended


class Terminated(KeyboardInterrupt):
    """A SIGTERM made into a stop, as Ctrl-C's KeyboardInterrupt (`sigterm_as_interrupt`)."""


_terminated: list[Terminated] = []  # the SIGTERM's stop noted (`note_terminated`), or none


def note_terminated(stop: Terminated | None = None) -> bool:
    """Notes that a SIGTERM made a stop (`stop`, the Terminated its handler raises; by default
    one without a message): True for the first, False once one is noted (a later SIGTERM is
    then ignored, so that it cannot cut the stop's cleanup short). A SIGTERM handler notes it
    before it raises: the raise lands wherever the program is, and code there may drop it (a
    library's `except BaseException`, a `__del__` or garbage-collection callback, where Python
    can only print it); `check_terminated` raises it again at the program's next safe point.
    One mechanism for every job: `ann train`'s start (ann/train/preemption.py), `ann sweep`
    (`sigterm_as_interrupt`)."""
    if _terminated:
        return False
    _terminated.append(stop or Terminated())
    return True


def check_terminated() -> None:
    """Raises the noted SIGTERM's stop (`note_terminated`) again, as a new `Terminated` with
    its message: called at a job's safe points, where its raise may have been dropped on the
    way. Nothing where none is noted."""
    if _terminated:
        raise Terminated(*_terminated[0].args)


def forget_terminated() -> None:
    """Clears the note (`note_terminated`): its stop has been handled, or its handler is gone."""
    _terminated.clear()


def importing(frame: FrameType | None) -> bool:
    """Whether `frame` (a signal handler's: where the main thread was) is inside an import. A
    SIGTERM handler notes its stop and leaves the raise to the next safe point there
    (`check_terminated`): raised inside a module's import (jaxlib's C extensions) it crashed the
    process at exit (a segmentation fault, "Fatal Python error"), or left a partly imported
    module that the stop's own imports failed on (`cannot import name 'typeof' from partially
    initialized module 'jax._src.core'`, exit 1)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def sigterm_as_interrupt(message: str = "terminated (SIGTERM)") -> Iterator[None]:
    """While active (main thread only), the first SIGTERM raises `Terminated(message)` where
    the program is, so it stops as on Ctrl-C (its cleanup runs); later ones are ignored, so a
    second cannot cut that cleanup short. The SIGTERM is noted first (`note_terminated`): a
    raise that code inside drops (a library's `except BaseException`, a finalizer) is raised
    again at the body's safe points (`check_terminated`), and at the latest on leaving, so a
    body that went on to its end still stops (`ann sweep` trained every trial and exited 0
    after a SIGTERM whose raise a callback caught). The previous handler is restored after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        if note_terminated(Terminated(message)) and not importing(frame):
            raise Terminated(message)  # (inside an import: raised at the next safe point)

    forget_terminated()
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
        check_terminated()  # one dropped after the body's last safe point
    finally:
        signal.signal(signal.SIGTERM, previous)
        forget_terminated()


@contextlib.contextmanager
def interrupts_deferred(signals: tuple[str, ...] = ("SIGINT", "SIGTERM")) -> Iterator[None]:
    """A Ctrl-C or SIGTERM (`signals`, by name) that arrives inside is delivered on leaving, to
    the handler it would have met (main thread only; elsewhere signals do not land): for a step
    that starts background work and waits for it, which a stop between the two would leave
    running, or that writes several records that must agree. Orbax's checkpoint managers start
    a thread at open that removes stale temporary saves: a SIGTERM there left it listing a
    workdir the stopped start then removed, and its traceback followed `ann train`'s one line.
    `ann sweep` starts a trial and keeps track of it, or records a trial's end and tells its
    study, inside one (ann/sweep/launch.py)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def note(signum: int, frame: object) -> None:
        caught.append(signum)

    # An ignored signal stays ignored: a process started inside (a sweep's trial) inherits it.
    mine = [getattr(signal, n) for n in signals]
    previous = {s: signal.signal(s, note) for s in mine if signal.getsignal(s) != signal.SIG_IGN}
    try:
        yield
    finally:
        for signum, handler in previous.items():  # None: set outside Python, as the default
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if caught:
            signal.raise_signal(caught[0])  # its handler raises here, or exits, as it would have


def interrupted(
    message: str = "", skip_teardown: bool = False, status: int = EXIT_INTERRUPTED
) -> NoReturn:
    """Ctrl-C ended the job: `message` (one line saying where things stand; by default
    `interrupted (Ctrl-C)`) on stderr, exit status 130. Another Ctrl-C from here on ends the
    process at once (the signal's default action), without a traceback from the exit.

    `status`: the exit status (143 for a SIGTERM). `skip_teardown`: exit without the
    interpreter's teardown (streams and logs flushed first),
    for a job cut short while JAX's start-up work may still run in native threads: `ann train`
    stopped while compiling crashed in that teardown ("Fatal Python error: Segmentation fault",
    exit 139) in 7 of 9 tries of a fresh-user trial."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    # Each process of a multi-process run says it: named, as its warning and error lines are.
    print(
        f"{console.process_name()}{message or 'interrupted (Ctrl-C)'}", file=sys.stderr, flush=True
    )
    if skip_teardown:
        py_logging.shutdown()
        sys.stdout.flush()
        os._exit(status)
    sys.exit(status)


def ignore_interrupts() -> None:
    """Ctrl-C does nothing from here on: the job's work is done (a Ctrl-C in the interpreter's
    exit once left its result printed but the exit status 130, or a traceback from JAX's exit
    handler; `ann train` calls it once the run has ended, before it says how)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _handle_interrupts() -> None:
    """How Ctrl-C reaches `main`: as a KeyboardInterrupt, but never inside an import, and never
    lost. Left alone where SIGINT is ignored (a script's background job) or handled by others.

    - During an import the interrupt waits for it to finish: raised inside one it can crash the
      process (a SIGINT while JAX's compiled extension loads: "Segmentation fault", every time
      in a test) or leave a module half made.
    - A KeyboardInterrupt that Python must drop (raised where no caller can get it, in a
      garbage-collection callback or a `__del__`: seen in JAX's `_xla_gc_callback` during `ann
      train`'s start-up, which printed "Exception ignored ... KeyboardInterrupt" and trained on
      to the end) is not lost.

    Both are delivered again a moment later, from a thread (at once, it would land where it
    is), and again until they land where they can be raised. A dropped `Terminated` (a
    SIGTERM's stop) is raised again as itself: made a plain KeyboardInterrupt, a scheduler's
    SIGTERM ended `ann train` as a Ctrl-C (130, not 143)."""
    import _thread
    import signal
    import threading

    dropped: list[KeyboardInterrupt] = []  # a Terminated to raise again, rather than Ctrl-C's

    def again() -> None:
        timer = threading.Timer(0.01, _thread.interrupt_main)  # nothing if SIGINT is ignored
        timer.daemon = True
        timer.start()

    def handler(signum: int, frame) -> None:
        while frame is not None:
            if frame.f_code.co_filename.startswith("<frozen importlib"):
                again()
                return
            frame = frame.f_back
        raise dropped.pop() if dropped else KeyboardInterrupt

    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if issubclass(unraisable.exc_type, KeyboardInterrupt):
            if issubclass(unraisable.exc_type, Terminated):
                dropped[:] = [unraisable.exc_value]
            again()
        else:
            previous(unraisable)

    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, handler)
    sys.unraisablehook = hook


def _drop_unraisables_said_here() -> None:
    """Drops an exception Python could not raise anywhere that ann says in its own words:
    "RuntimeError: Event loop is closed", which TensorStore's callbacks raise into Orbax's
    event loop after a failed checkpoint save closed it (a full disk: up to 27 tracebacks of two
    frames each, after ann train's one line naming the failed save)."""
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == (
            "Event loop is closed"
        ):
            return
        previous(unraisable)

    sys.unraisablehook = hook


def run(
    main: Callable[[list[str]], None],
    errors: tuple[type[BaseException] | str, ...] = (),
    quiet: bool = False,
) -> None:
    """`absl.app.run(main)` with `parse_flags`, logging as `quiet_libraries(quiet)` sets it, and
    a reader that goes away handled (see the module docstring). A ConfigError or FlagError, or
    one of `errors` (the mistakes the command reports itself, e.g. a diverged run), that `main`
    raises prints `error: ...` on one line and exits 1; anything else keeps its traceback (a
    bug to read, not a flag to fix). A KeyboardInterrupt is `interrupted(its message)`: one
    line, exit status 130, without the interpreter's teardown once JAX is imported (its native
    threads may still be compiling or computing: `ann generate --beam_size=5000` stopped while
    compiling crashed in the teardown, "Fatal Python error: Segmentation fault", 8 of 8 tries).

    An error may be named "module:Class" instead of given: a job then need not import a heavy
    module (JAX, Orbax) before its flags are parsed, so `--help` and a mistyped flag answer in
    a fraction of a second. The name is looked up only when `main` raises, and only if the
    module was imported by then (else nothing raised can be that class)."""

    def guarded(argv: list[str]) -> None:
        quiet_libraries(quiet)
        try:
            main(argv)
            ignore_interrupts()
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        except BrokenPipeError:
            reader_gone()
        except Exception as e:
            if isinstance(e, OSError) and (line := storage_error(e)) is not None:
                fail(line)
            if isinstance(e, ConfigError):  # a key the config file set: its file and line
                fail(str(in_config_file(e)))
            if isinstance(e, (FlagError, *error_classes(errors))):
                fail(str(e))
            raise

    _drop_unraisables_said_here()
    _handle_interrupts()
    _name_from_argv(sys.argv)
    check_package()
    try:
        app.run(guarded, flags_parser=parse_flags)
    except KeyboardInterrupt as e:  # Ctrl-C while flags are parsed or `main` runs
        interrupted(str(e), skip_teardown="jax" in sys.modules)


def out_of_memory(error: BaseException, what: str, fix: str) -> str | None:
    """One line for XLA's out-of-memory error (a job too large for the device: "Out of memory
    allocating N bytes", RESOURCE_EXHAUSTED): `{what} does not fit in the device's memory (one
    allocation of G GiB); {fix}`, `fix` naming what to lower. None for any other error (a bug
    keeps its traceback). Every job's: `ann train`'s run, `ann generate`'s samples."""
    text = str(error)
    if type(error).__name__ not in ("JaxRuntimeError", "XlaRuntimeError") or not (
        "Out of memory" in text or "RESOURCE_EXHAUSTED" in text
    ):
        return None
    size = re.search(r"allocating (\d+) bytes", text)
    asked = f" (one allocation of {int(size.group(1)) / 2**30:,.1f} GiB)" if size else ""
    return f"{what} does not fit in the device's memory{asked}; {fix}"


def storage_error(e: OSError) -> str | None:
    """One line for an OSError that says the storage refused a write (`atomic.STORAGE_ERRNOS`:
    a full disk, a quota, a file size limit, a read-only file system, permissions), whichever
    command's write raised it: the file (`e.filename`), the errno's words and the fix (a file
    too large: the `ulimit -f` to raise, else the file system's cap), naming the flag whose
    directory holds the file (`--out`, `--workdir`, `--registry`, ...) as the other place to
    write. A permission refused on a file or directory that exists and that this user may not
    read is a refused read (`_unreadable`), said as one with its fix (chmod), not a write's.
    None for any other OSError (a bug's keeps its traceback, or the command's own `errors`
    say it). Said here, once, for every command, rather than at every write."""

    fix = atomic.storage_fix(e.errno)
    if fix is None:
        return None
    words = (e.strerror or os.strerror(e.errno)).rstrip(".")
    words = words[:1].lower() + words[1:]
    path = os.fsdecode(e.filename) if e.filename is not None else None
    flag = _flag_holding(path) if path is not None else None
    if e.errno in (errno.EACCES, errno.EPERM) and path is not None and (how := _unreadable(path)):
        # A read refused: a write's fix (free space, write elsewhere) was no fix for it.
        given = f" (--{flag[0]}={flag[1]})" if flag else ""
        return (
            f"{path}: {words} reading it{given}; give your user read permission ({how} "
            f"{path}) or ask its owner to, then rerun"
        )
    elsewhere = f"choose another --{flag[0]}" if flag else "write elsewhere"
    if e.errno == errno.EROFS:
        fix, elsewhere = f"{elsewhere} on a writable file system", ""
    elif e.errno == errno.EFBIG:  # another place on the same file system has the same cap
        if atomic.file_size_limit() is None:
            fix = f"{atomic.FILE_SIZE_CAP}: {elsewhere} on a file system without that cap"
        elsewhere = ""
    else:
        elsewhere = f", or {elsewhere}"
    shown = f"{path}: " if path is not None else ""
    given = f" (--{flag[0]}={flag[1]})" if flag else ""
    return f"{shown}{words}{given}; {fix}{elsewhere}, then rerun"


def _unreadable(path: str) -> str | None:
    """The chmod that would let this user read `path` ("chmod u+r", "chmod u+rx" for a
    directory) where `path` exists and this user may not read it (a refused read, not a
    refused write), else None."""
    try:
        directory = os.path.isdir(path)
        if not os.path.lexists(path):
            return None
    except OSError:
        return None
    need = os.R_OK | (os.X_OK if directory else 0)
    if os.access(path, need):
        return None
    return "chmod u+rx" if directory else "chmod u+r"


def _flag_holding(path: str) -> tuple[str, str] | None:
    """(name, value) of the flag given on the command line whose path is `path` or a directory
    above it (the deepest such), else None."""
    target = os.path.abspath(path)
    best = None
    for name in flags.FLAGS:
        flag = flags.FLAGS[name]
        value = flag.value
        if not flag.present or not isinstance(value, str) or not value.strip():
            continue
        place = os.path.abspath(value)
        if target == place or target.startswith(place.rstrip(os.sep) + os.sep):
            if best is None or len(place) > len(best[2]):
                best = (name, value, place)
    return best[:2] if best else None


def error_classes(errors: Iterable[type[BaseException] | str]) -> list[type[BaseException]]:
    """`errors` as classes: a "module:Class" name resolves only where the module is imported
    (`run`'s reported errors; ann train's stop handler asks which errors are refusals)."""
    classes = []
    for error in errors:
        if isinstance(error, str):
            module, name = error.split(":")
            if module in sys.modules:
                classes.append(getattr(sys.modules[module], name))
        else:
            classes.append(error)
    return classes
