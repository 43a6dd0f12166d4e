"""`ann report`: judge a trained run or an exported model on its validation and test splits.

- `collect`: the model (checkpoint or export) and its predictions over a split;
- `sections`: per-task metrics and pictures (`SECTIONS`: experiment name -> function);
- `write`: report.json, index.html (pictures inlined) and the PNGs in one directory;
- `html`: the PNGs and the page.

report.json's schema is documented in docs/report.md; `SCHEMA_VERSION` changes with any
change that a reader of an older report would misread.
"""

SCHEMA_VERSION = 1
