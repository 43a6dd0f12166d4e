"""`ann report`: judge a trained run or an exported model on its validation and test splits.

- `collect`: the model (checkpoint or export) and its predictions over a split;
- `sections`: per-task metrics and pictures (`SECTIONS`: experiment name -> function);
- `write`: report.json, index.html (pictures inlined) and the PNGs in one directory;
- `html`: the PNGs and the page.

report.json's schema is documented in docs/report.md; `SCHEMA_VERSION` changes with any
change that a reader of an older report would misread.
"""

from typing import Any

SCHEMA_VERSION = 1


def jsonable(value: Any) -> Any:
    """NumPy scalars and arrays as Python numbers and lists, dict keys as strings; NaN and
    infinities as strings ("nan", "inf", "-inf"), so report.json is strict JSON. Anything else
    is returned as it is (`json.dumps` then names what it cannot write)."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    return value
