"""The grammar of `report.slices` entries: how the report cuts a split into slices.

- `label`: one slice per class of the task's label (classification, anomaly detection,
  retrieval).
- `feature:NAME[INDEX]:quantiles=Q`: one value of a row's `NAME` array (`INDEX` into its
  per-row shape, `[3]` or `[0,2]`; none for a scalar), bucketed into Q quantile bins of the
  split (Q in 2..20, default 4: quartiles).
- `field:NAME`: one slice per distinct value of a data-set field of discrete values (e.g. the
  digits' `writer_group`).

Parsed with the standard library only (no ann imports), so `ann.config` can check the entries
when a config is validated, before anything is built.
"""

from __future__ import annotations

import dataclasses
import re

KINDS = ("label", "feature", "field")
DEFAULT_QUANTILES = 4
MAX_QUANTILES = 20
FORMS = "'label', 'feature:NAME[INDEX]:quantiles=4' or 'field:NAME'"
# An index and a count in ASCII digits ([0-9]: \d matched "３", and int() read it as 3).
_FEATURE = re.compile(
    r"^([A-Za-z_][\w]*)(?:\[([0-9]+(?:\s*,\s*[0-9]+)*)\])?(?::quantiles=([0-9]+))?$"
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
    reason alone: the caller names the entry, as `config key 'report.slices' entry 'x': ...`)."""
    if not isinstance(text, str):
        raise ValueError(f"not a string; use {FORMS}")
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
            if not 2 <= q <= MAX_QUANTILES:
                raise ValueError(
                    f"quantiles={q} is outside 2..{MAX_QUANTILES}; "
                    f"e.g. 'feature:{name}{f'[{index}]' if index else ''}:quantiles=4'"
                )
            parsed = tuple(int(i) for i in index.split(",")) if index else ()
            return SliceSpec(text, "feature", name, parsed, q)
    if kind not in KINDS:
        raise ValueError(f"no kind {kind!r}; use {FORMS}")
    raise ValueError(f"not of the form {FORMS}")
