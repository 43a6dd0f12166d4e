"""docs/report.md against a generated report.json (tests/test_report.py, test_report_slices.py),
and docs/monitor_reports.md against a drift or performance report's (tests/test_drift.py,
test_monitor_performance.py): every key a report holds is documented, and every key the document
says a report holds is there.

The document's tables list keys as paths (`before.ece`, `top[].count`) under the path(s) in
backticks in the heading above them (none: the top level); its `## ` headings are the parts
(`Every report`, each task family, `Slices`, `Prediction variance`); a key's "present" cell says
when a report holds it. Upper-case path parts (`SPLIT`, `CLASS`) stand for any name.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterator
from typing import Any

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "report.md"
MONITOR_DOC = DOC.parent / "monitor_reports.md"  # `ann monitor drift`'s and performance's
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")
Path = tuple[str, ...]


def split_path(text: str) -> Path:
    """`top[].count` -> ("top", "[]", "count")."""
    parts: list[str] = []
    for part in text.split("."):
        name, lists = part.removesuffix("[]" * part.count("[]")), part.count("[]")
        parts += [name] + ["[]"] * lists
    return tuple(parts)


def documented(
    text: str | None = None, doc: pathlib.Path = DOC
) -> dict[str, list[tuple[Path, str]]]:
    """part (the `## ` heading, lower case, `_` between words) -> [(key path, present)], of
    `text` or else the file `doc`."""
    text = doc.read_text() if text is None else text
    parts: dict[str, list[tuple[Path, str]]] = {}
    part, prefixes = "", [()]
    for line in text.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip()
            if line.startswith("## "):
                part = re.sub(r"\W+", "_", title.lower()).strip("_")
            prefixes = [split_path(p) for p in re.findall(r"`([^`]+)`", title)] or [()]
        elif line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            key = re.match(r"`([^`]+)`", cells[0]).group(1)
            parts.setdefault(part, []).extend((p + split_path(key), cells[3]) for p in prefixes)
    return parts


def leaves(value: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """(path, value) of every leaf of a report; a list of objects contributes "[]" to the path,
    and an empty object, empty list or null is a leaf itself."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for item in value:
            yield from leaves(item, (*path, "[]"))
    else:
        yield path, value


def show(path: Path) -> str:
    """("top", "[]", "count") -> "top[].count"."""
    return ".".join(path).replace(".[]", "[]")


def _matches(pattern: Path, path: Path) -> bool:
    return len(pattern) == len(path) and all(
        p == c or (PLACEHOLDER.fullmatch(p) is not None and c != "[]")
        for p, c in zip(pattern, path)
    )


def _parts(report: dict[str, Any]) -> tuple[pathlib.Path, list[str]]:
    """The document of `report` (by its `report` key: which command wrote it) and its parts."""
    kind = report.get("report", "model")
    if kind in ("drift", "performance"):
        return MONITOR_DOC, ["both_reports", f"{kind}_report"]
    return DOC, ["every_report", report["experiment"], "slices", "prediction_variance"]


def undocumented(report: dict[str, Any]) -> list[str]:
    """Keys of `report` that its document does not list (for its family): a leaf must match a
    documented path; an empty object, empty list or null may instead begin one."""
    path, parts = _parts(report)
    doc = documented(doc=path)
    patterns = [p for part in parts for p, _ in doc.get(part, [])]
    found = []
    for path, value in leaves(report):
        empty = value is None or value == {} or value == []
        if not any(
            _matches(p, path) or (empty and len(p) > len(path) and _matches(p[: len(path)], path))
            for p in patterns
        ):
            found.append(show(path))
    return sorted(set(found))


def missing(report: dict[str, Any], conditions: set[str] = frozenset()) -> list[str]:
    """Keys its document lists for `report`'s family as present "always" (or "with slices",
    when a split has slices, or under one of `conditions`) that `report` does not hold; a
    documented object (`splits.SPLIT.sections`) is held when some key is under it."""
    met = {"always", *conditions}
    if any(split["slices"] for split in report.get("splits", {}).values()):
        met.add("with slices")
    paths = [path for path, _ in leaves(report)]
    file, parts = _parts(report)
    doc = documented(doc=file)
    return sorted(
        show(pattern)
        for part in parts
        for pattern, present in doc.get(part, [])
        if present in met and not any(_matches(pattern, path[: len(pattern)]) for path in paths)
    )
