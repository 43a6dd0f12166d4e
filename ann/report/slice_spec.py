"""The grammar of `report.slices` entries: how the report cuts a split into slices.

- `label`: one slice per class of the task's label (classification, anomaly detection,
  retrieval).
- `feature:NAME[INDEX]:quantiles=Q`: one value of a row's `NAME` array (`INDEX` into its
  per-row shape, `[3]` or `[0,2]`; none for a scalar), bucketed into Q quantile bins of the
  split (Q in 2..20, default 4: quartiles; checked with the data, `ann.report.slicing`, so
  that the refusal can name an entry of the right index too).
- `field:NAME`: one slice per distinct value of a data-set field of discrete values (e.g. the
  digits' `writer_group`).

Parsed with the standard library only (no ann imports), so `ann.config` can check the entries
when a config is validated, before anything is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import re

KINDS = ("label", "feature", "field")
DEFAULT_QUANTILES = 4
MIN_QUANTILES, MAX_QUANTILES = 2, 20
FORMS = "'label', 'feature:NAME[INDEX]:quantiles=4' or 'field:NAME'"
# An index and a count in ASCII digits ([0-9]: \d matched "３", and int() read it as 3). An
# index may be negative, so that the data's check names it as outside its range.
_FEATURE = re.compile(
    r"^([A-Za-z_][\w]*)(?:\[(-?[0-9]+(?:\s*,\s*-?[0-9]+)*)\])?(?::quantiles=([0-9]+))?$"
)
_NAME = re.compile(r"^[A-Za-z_][\w]*$")


@dataclasses.dataclass(frozen=True)
class SliceSpec:
    """One parsed entry: `kind` in KINDS; `name` the row key (feature and field); `index` into
    the feature's per-row shape (() for a scalar); `quantiles` the feature's bin count."""

    text: str
    kind: str
    name: str = ""
    index: tuple[int, ...] = ()
    quantiles: int = 0


def parse(text: object) -> SliceSpec:
    """Parses one entry; raises ValueError with a one-line reason and the accepted forms (the
    reason alone: the caller names the entry, as `config key 'report.slices' entry 'x': ...`),
    and a "did you mean" entry that parses where one is near (spaces dropped, the kind's case
    or spelling mended: 'field: writer_group', 'Label', 'feture:x'). A feature's quantiles and
    indices are read, not bounded: the data's check (`ann.report.slicing.assign`) refuses one
    out of range with an entry that it accepts."""
    if not isinstance(text, str):
        raise ValueError(f"not a string; use {FORMS}")
    spec = parse_or_none(text)
    if spec is not None:
        return spec
    kind = text.strip().partition(":")[0]
    mean = _near(text)
    said = f"; did you mean {mean!r}?" if mean else ""
    if kind not in KINDS:
        raise ValueError(f"no kind {kind!r}; use {FORMS}{said}")
    raise ValueError(f"not of the form {FORMS}{said}")


def parse_or_none(text: str) -> SliceSpec | None:
    """`parse`'s SliceSpec, or None for an entry it refuses (no reason said)."""
    kind, _, rest = text.strip().partition(":")
    if kind == "label" and not rest:
        return SliceSpec(text, "label")
    if kind == "field" and _NAME.match(rest):
        return SliceSpec(text, "field", rest)
    if kind == "feature":
        match = _FEATURE.match(rest.replace(" ", ""))
        if match:
            name, index, quantiles = match.groups()
            q = int(quantiles) if quantiles else DEFAULT_QUANTILES
            parsed = tuple(int(i) for i in index.split(",")) if index else ()
            return SliceSpec(text, "feature", name, parsed, q)
    return None


def _near(text: str) -> str | None:
    """An entry that parses, near `text`: white space around its `:[],=` dropped, its kind
    matched without case or by spelling (difflib); None where none is."""
    tight = re.sub(r"\s*([:\[\],=])\s*", r"\1", text.strip())
    kind, colon, rest = tight.partition(":")
    kinds = [k for k in KINDS if k == kind.lower()] or difflib.get_close_matches(
        kind.lower(), KINDS, n=1, cutoff=0.6
    )
    for candidate in (kind + colon + rest, *(k + colon + rest for k in kinds)):
        if candidate != text and parse_or_none(candidate) is not None:
            return candidate
    return None
