"""Whether `import ann` found ann's own package: a clone named `ann` whose parent directory is
on sys.path makes that clone's root the package `ann` (a namespace package, without
__init__.py), while setuptools' editable install finds ann's modules apart, so they import;
every job, and every Python function, that then looked for a file beside its modules died in a
traceback (TFDS: "No such file or directory: '.../ann/data'"), after training had started.
`fault` says so in one line, naming what put the parent there; `check` raises it."""

from __future__ import annotations

import os
import sys


def fault() -> str | None:
    """The line saying that `ann` was imported from a directory that is not ann's package, and
    the fix (`_cause`); None where it is ann's own."""
    here = os.path.dirname(os.path.realpath(__file__))
    package = sys.modules.get("ann")
    found = getattr(package, "__file__", None)
    if package is None or (found and os.path.dirname(os.path.realpath(found)) == here):
        return None
    where = os.path.dirname(found) if found else next(iter(getattr(package, "__path__", [])), "?")
    return (
        f"'ann' was imported from {where}, a directory that is not ann's package ({here}); "
        + _cause(os.path.realpath(os.path.dirname(where)))
    )


def package_fault(module: str) -> str | None:
    """The line saying that `module` of ann's shipped top-level package (`experiments.
    classification`) would be imported from another directory of that package's name (a
    project's own `experiments/` in the working directory, or on PYTHONPATH, comes first on
    sys.path), and the fix; None where it is ann's, or is not found (the import says so). It
    ran the user's module and then said it lacked ann's class (`module
    'experiments.classification' (/home/me/experiments/classification.py) has no
    'Classification'`), pointing at the user's own file. Finding it imports no module but the
    package above it."""
    import importlib.util

    package = module.partition(".")[0]
    ours = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), package)
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    origin = os.path.realpath(spec.origin) if spec is not None and spec.origin else None
    if origin is None or origin.startswith(ours + os.sep):
        return None
    where = os.path.dirname(origin)
    return (
        f"'{module}' would be imported from {where}, not ann's {package} ({ours}): a "
        f"directory named {package} in the working directory or on PYTHONPATH hides ann's "
        f"shipped {package}; rename yours (e.g. my_{package}), or run from another directory"
    )


def check() -> None:
    """Raises ImportError with `fault`'s line where there is one: first thing in the Python
    functions that read ann's own files (`train_and_evaluate`, `export`, `write_report`,
    `data.load`); the commands say it in one line first (`cli.check_package`)."""
    if (said := fault()) is not None:
        raise ImportError(said)


def _cause(parent: str) -> str:
    """What put `parent` (the directory above the clone that shadows ann) on sys.path, and the
    fix: a PYTHONPATH entry naming it (`.` run there), else `python -m` (or `-c`) run there,
    which puts the working directory first, or a script there, whose directory Python puts
    first. It blamed PYTHONPATH for `python -m ann.main` run from the directory above a clone
    with no PYTHONPATH set."""
    cwd = os.getcwd()
    entries = [e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    named = [e for e in entries if os.path.realpath(os.path.join(cwd, e)) == parent]
    if named:
        return (
            f"PYTHONPATH={os.environ['PYTHONPATH']} puts {parent}, the directory above a clone, "
            "on sys.path: unset PYTHONPATH, or run from the clone's root"
        )
    script = sys.argv[0] if sys.argv and sys.argv[0].endswith(".py") else ""
    if script and os.path.realpath(os.path.dirname(os.path.abspath(script))) == parent:
        return (
            f"a script in {parent}, the directory above a clone, does this (Python puts its "
            "directory first on sys.path): move the script out of that directory, e.g. into "
            "the clone"
        )
    if sys.path and sys.path[0] in ("", cwd) and os.path.realpath(cwd) == parent:
        return (
            "`python -m` run from the directory above a clone does this (it puts the working "
            "directory first on sys.path): cd into the clone, or use the `ann` command"
        )
    return (
        f"{parent}, the directory above a clone, is on sys.path: take it off, or run from the "
        "clone's root"
    )
