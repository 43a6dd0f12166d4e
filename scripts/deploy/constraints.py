"""Writes the pins of the images' pip installs (`-c`): scripts/deploy/constraints.txt for the
serving image, the exact version installed here of every package its Dockerfile's `pip install`
names and of everything they require; scripts/cluster/constraints.txt for the training image
(scripts/cluster/Dockerfile.train), the same for ann's own requirements (pyproject.toml's
`[project] dependencies`, as installed here: reinstall after changing them). Markers are
evaluated here: run it under the images' Python, 3.11, on Linux.

Run it in the environment that makes the exports (its jax and jaxlib are the ones each
export's manifest records), from the repository root:

    python scripts/deploy/constraints.py

The Dockerfile's `>=` floors say what ann works with; the constraints say what the image gets,
so two builds of one commit install the same packages (unpinned, an image got whatever was
newest at build time). Exit 1 with one line when a package it needs is not installed here.
"""

import pathlib
import re
import shlex
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = HERE / "constraints.txt"
TRAIN_OUT = ROOT / "scripts" / "cluster" / "constraints.txt"
# pip install's options that take a value as the next argument.
_VALUED = {"-c", "--constraint", "-r", "--requirement", "-i", "--index-url", "-e", "--editable"}


def dockerfile_requirements(text: str) -> list[str]:
    """The requirements (`"jax>=0.7"`, ...) that a Dockerfile's `RUN pip install` lines name:
    not their options (and an option's value), nor a path (`.`)."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        argv = shlex.split(line.strip(), comments=True)
        if argv[:1] != ["RUN"] or "install" not in argv:
            continue
        skip = False
        for arg in argv[argv.index("install") + 1 :]:
            if skip or arg.startswith("-") or arg == "." or arg.startswith(("./", "/")):
                skip = not skip and arg in _VALUED
                continue
            found.append(arg)
    return found


def closure(requirements: list[str]) -> dict[str, str]:
    """Canonical name -> installed version of `requirements` and all they require (extras
    where asked). KeyError (metadata.PackageNotFoundError) for one not installed here."""
    found: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        extras = [e for e in ["", *req.extras] if (name, e) not in seen]
        if not extras:
            continue
        seen.update((name, e) for e in extras)
        found[name] = metadata.version(req.name)
        for text in metadata.requires(req.name) or []:
            todo += [(Requirement(text), e) for e in extras]
    return found


def main() -> None:
    # (what the image installs, where its pins go, the image's Dockerfile)
    images = [
        (
            dockerfile_requirements((HERE / "Dockerfile").read_text()),
            OUT,
            "scripts/deploy/Dockerfile",
        ),
        # ann's installed requirements, its extras' left out (`pip install .`), ann itself too
        (["ann"], TRAIN_OUT, "scripts/cluster/Dockerfile.train"),
    ]
    written = []
    for requirements, out, dockerfile in images:
        try:
            pins = closure(requirements)
            pins.pop("ann", None)
        except metadata.PackageNotFoundError as e:
            sys.exit(
                f"error: {e.name} is not installed here; run this in the environment that makes "
                "the exports (with ann's otel extra)"
            )
        lines = [f"{name}=={version}" for name, version in sorted(pins.items())]
        header = (
            f"# The image's pins ({dockerfile}'s pip install -c): what the environment\n"
            "# that makes the exports has. Regenerate: python scripts/deploy/constraints.py\n"
        )
        written.append((out, header + "\n".join(lines) + "\n", len(lines)))
    for out, text, count in written:  # both or neither
        out.write_text(text)
        print(f"{out.relative_to(ROOT)}: {count} pins", file=sys.stderr)


if __name__ == "__main__":
    main()
