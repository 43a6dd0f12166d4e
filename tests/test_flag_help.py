"""Every command's `--help` states what each of its flags takes where the flag's check refuses
a value outside a range or a set: `ann monitor --help` said "--batch: feedback: labels per
request, in [1, 100000]" by hand beside absl's bounds, `ann generate --help` wrote its ranges
apart from the table `check_flags` reads, `ann observability --help` gave no range of
--slo.availability; only `ann serve` ended each help with "Takes <what>.", from its check's
table. Each says it once: absl's own "(an integer in the range [1, 1024])", "(an integer)" or
"(a comma separated list)" followed ann's words in the help it printed."""

import concurrent.futures
import json
import re
import subprocess
import sys

from conftest import ROOT

from ann import arguments
from ann.__main__ import JOBS

# Runs `ann JOB [COMMAND] --help` with ann.cli's help replaced by a dump of the flags it lists
# (the main module's key flags): each one's help, absl's bounds, enum values and own words of
# what it takes (`syntactic_help`), and what the job's own check takes (cli.EXPECTED,
# cli.CHOICES), as defined before flags are parsed; then the help the job prints.
DUMP = r"""
import contextlib, io, json, sys
from absl import flags
from ann import cli
from ann.__main__ import main

show = cli._show_help

def dump(full):
    listed = {}
    for flag in flags.FLAGS.get_key_flags_for_module(sys.argv[0]):
        parser = getattr(flag.parser, "_parser", flag.parser)
        listed[flag.name] = {
            "help": flag.help,
            "low": getattr(parser, "lower_bound", None),
            "high": getattr(parser, "upper_bound", None),
            "integer": isinstance(parser, flags.IntegerParser),
            "enum": list(getattr(parser, "enum_values", None) or []),
            "syntactic": parser.syntactic_help,
        }
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.suppress(SystemExit):
        show(full)
    print(json.dumps({
        "flags": listed,
        "expected": cli.EXPECTED,
        "choices": getattr(cli, "CHOICES", {}),
        "commands": list(getattr(sys.modules["__main__"], "COMMANDS", {})),
        "printed": printed.getvalue(),
    }))
    sys.exit(0)

cli._show_help = dump
main(["ann", *sys.argv[1:], "--help"])
"""


def _dump(job: list[str]) -> dict:
    result = subprocess.run([sys.executable, "-c", DUMP, *job], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, (job, result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def _missing(job: list[str], dump: dict) -> list[str]:
    """What a listed flag's help leaves out of what its check takes."""
    said = []
    flags, expected, choices = dump["flags"], dump["expected"], dump["choices"]
    for name, flag in flags.items():
        help_text = " ".join(flag["help"].split())
        low, high = flag["low"], flag["high"]
        if name in expected:  # the job's check's words (its table), or absl's bounds with a note
            if f"Takes {expected[name]}." not in help_text:
                said.append(f"--{name}: no 'Takes {expected[name]}.' in {help_text!r}")
        elif low is not None and high is not None:  # absl's bounds: refused as it parses
            what = arguments.expected(int if flag["integer"] else float, low, high)
            if f"Takes {what}" not in help_text:
                said.append(f"--{name}: no 'Takes {what}' in {help_text!r}")
        elif low is not None or high is not None:  # one bound: absl words it "an integer >= 2"
            bound = arguments.number(low if low is not None else high)
            if not re.search(rf"Takes [^.]*\b{re.escape(bound)}\b", help_text):
                said.append(f"--{name}: its bound {bound} is not in {help_text!r}")
        for value in flag["enum"] or choices.get(name, []):  # a set of allowed values
            if not re.search(rf"\b{re.escape(value)}\b", help_text):
                said.append(f"--{name}: allowed value {value!r} not in {help_text!r}")
    for key, what in expected.items():  # a dict flag's key: --slo.availability
        name = key.split(".")[0]
        if "." in key and name in flags:
            help_text = " ".join(flags[name]["help"].split())
            if f"--{key}" not in help_text or f"takes {what}" not in help_text.replace(
                "Takes", "takes"
            ):
                said.append(f"--{key}: no '--{key} ... takes {what}' in --{name}'s help")
    return [f"ann {' '.join(job)} {s}" for s in said]


def _printed_flags(printed: str) -> dict[str, str]:
    """Each flag's entry in a printed `--help` (its lines, joined), by name."""
    entries: dict[str, str] = {}
    name = None
    for line in printed.splitlines():
        start = re.match(r"  (?:-\w,)?--(?:\[no\])?([\w.]+):", line)
        if start:
            name = start.group(1)
            entries[name] = line
        elif name and line.startswith("    "):  # absl wraps after a hyphen: "comma-\nseparated"
            entries[name] += ("" if entries[name].endswith("-") else " ") + line.strip()
        else:
            name = None
    return entries


def _said_twice(job: list[str], dump: dict) -> list[str]:
    """The flags whose printed help says what they take twice: ann's words, then absl's."""
    said = []
    printed = _printed_flags(dump["printed"])
    for name, flag in dump["flags"].items():
        entry = printed.get(name, "")
        own = name in dump["expected"] or name in dump["choices"]
        absl = flag["syntactic"]
        if own and absl and f"({absl})" in entry:  # e.g. "(an integer in the range [1, 1024])"
            said.append(f"--{name}: absl's ({absl}) after ann's words in {entry!r}")
        if own and entry.count("Takes ") != 1:
            said.append(f"--{name}: not one 'Takes ' in {entry!r}")
        if "comma-separated" in entry and "(a comma separated list)" in entry:
            said.append(f"--{name}: comma-separated twice in {entry!r}")
    if not printed:
        said.append(f"no flags in its help: {dump['printed'][:300]!r}")
    return [f"ann {' '.join(job)} --help {s}" for s in said]


def test_every_commands_help_states_what_each_flags_check_takes():
    jobs = [[job] for job in JOBS]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        dumps = dict(zip(map(tuple, jobs), pool.map(_dump, jobs)))
        # `ann JOB COMMAND --help` may list that command's own flags (ann monitor drift).
        more = [[*job, command] for job, d in dumps.items() for command in d["commands"]]
        dumps.update(zip(map(tuple, more), pool.map(_dump, more)))
    checked = sum(1 for d in dumps.values() for f in d["flags"].values() if f["low"] is not None)
    assert checked >= 15, checked  # the walk saw the bounded flags (sweep's, monitor's, ...)
    assert {"sweep", "monitor", "serve", "generate", "train"} <= {j[0] for j in dumps}
    missing = [line for job, dump in dumps.items() for line in _missing(list(job), dump)]
    assert not missing, "\n".join(missing)
    twice = [line for job, dump in dumps.items() for line in _said_twice(list(job), dump)]
    assert not twice, "\n".join(twice)
    # The walk saw ann's words and absl's on flags of either kind: absl's bounds (sweep's),
    # the job's own check (serve's), a list of names (report's --split).
    # A user's help, not a maintainer's notes (`ann registry --help` told of `main(argv)`,
    # `run()` and `ann.cli.run`, trial 47b).
    notes = re.compile(r"`main\(|`run\(\)|ann\.cli\.run|\(`check_\w+`\)|this module")
    for job, dump in dumps.items():
        about = dump["printed"].partition("\nflags:")[0]
        assert not notes.search(about), (job, notes.search(about))
    printed = _printed_flags(dumps[("sweep",)]["printed"])
    assert "Takes an integer in [1, 1024]." in printed["parallel"], printed["parallel"]
    assert "Takes an integer in [1, 65535]." in _printed_flags(dumps[("serve",)]["printed"])["port"]
    assert "(comma-separated)" in _printed_flags(dumps[("report",)]["printed"])["split"]


def test_one_rule_reads_a_leading_zero_for_integer_flags_and_version_numbers():
    # Two copies of it (ann.cli's, signed, and the versions', unsigned) differed on "00".
    assert [arguments.leading_zero(t) for t in ("08", "-007", "+01", "00", "8", "0", "３")] == [
        8, -7, 1, 0, None, None, None
    ]  # fmt: skip
    # A version's fix: the number without its zeros, where there is one ("00" is no version).
    assert [arguments.zeros_dropped(t) for t in ("01", "007", "00", "1", "+01", "x")] == [
        "1", "7", None, None, None, None
    ]  # fmt: skip
    # A client's path of thousands of digits (a 404's version) is no number: int() refuses
    # 4,300 digits, and the server answered 500.
    assert (
        arguments.version_number("1" * 5000) is None and arguments.leading_zero("0" * 5000) is None
    )
