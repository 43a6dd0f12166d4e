"""A report's sections, per task: what each experiment's part of `ann report` computes and draws.

A section function takes one split's `ann.report.predictions.Predictions` and returns a list of
`Section`s (metrics for report.json, matplotlib figures, summary lines). Functions are found by
experiment name through `SECTIONS` (imported on use: matplotlib and scikit-learn load only for a
report); a user's experiment class gives its own as a `report_sections(preds)` method.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ann.config import ConfigError
from ann.report import jsonable
from ann.report.tasks import METHOD, SECTIONS, check_experiment  # the table, here as ever

if TYPE_CHECKING:
    import matplotlib.figure

    from ann.report.predictions import Predictions


@dataclasses.dataclass
class Section:
    """One part of a report for one split."""

    title: str
    metrics: dict[str, Any]  # JSON-able; report.json's splits.SPLIT.sections.TITLE_KEY
    # name -> figure, written as SPLIT_NAME.png next to index.html and inlined in it; closed
    # once written.
    figures: dict[str, matplotlib.figure.Figure] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)  # lines for the printed summary

    @property
    def key(self) -> str:
        """The section's name in report.json: its title, lower case, words joined by '_'."""
        return "_".join("".join(c if c.isalnum() else " " for c in self.title.lower()).split())


def report_setting(preds: Predictions, key: str, default: Any) -> Any:
    """`config.report.KEY` of the run behind `preds`, or `default` where its config has none
    (an export's manifest from before the key existed)."""
    report = preds.config.get("report")
    return report.get(key, default) if report else default


def sections_for(experiment: str) -> Callable[[Predictions], list[Section]]:
    """The section function for `experiment`: SECTIONS' for ann's experiments, else the
    experiment's own `report_sections` method, its result checked. Raises ConfigError naming
    the experiments that have one (`check_experiment`)."""
    check_experiment(experiment)
    if experiment not in SECTIONS:
        return _users_sections
    target = SECTIONS[experiment]
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _users_sections(preds: Predictions) -> list[Section]:
    """A user's experiment's `report_sections(preds)`, checked: ConfigError, one line naming
    it and what is wrong, for a result that is not a list of Sections with distinct titles,
    JSON-able metrics, matplotlib figures and a list of note strings (each failed later, deep
    in the report's writing, or quietly: notes given as one string were printed a character a
    line, and a second section of one title replaced the first)."""
    from matplotlib.figure import Figure

    sections = getattr(preds.experiment, METHOD)(preds)
    where = f"experiment {preds.config.experiment!r}: {METHOD}(preds) returned"
    if not isinstance(sections, list) or not all(isinstance(s, Section) for s in sections):
        kinds = sorted({type(s).__name__ for s in sections} if isinstance(sections, list) else ())
        got = f"a list of {', '.join(kinds)}" if kinds else type(sections).__name__
        raise ConfigError(f"{where} {got}, not a list of ann.report.sections.Section")
    titles = [s.title for s in sections]
    for section in sections:
        what = f"{where} section {section.title!r}"
        if not isinstance(section.title, str) or not section.key or titles.count(section.title) > 1:
            raise ConfigError(f"{what}: expected a title of its own (report.json keys by it)")
        if not isinstance(section.metrics, dict):
            raise ConfigError(f"{what}: metrics must be a dict")
        try:
            json.dumps(jsonable(section.metrics))  # as report.json will write them
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{what}: metrics must be JSON-able numbers and text ({e})") from e
        figures = section.figures
        if not isinstance(figures, dict) or not all(
            isinstance(f, Figure) for f in figures.values()
        ):
            raise ConfigError(f"{what}: figures must map names to matplotlib Figures")
        notes = section.notes
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise ConfigError(f"{what}: notes must be a list of strings (lines)")
    # NumPy values as numbers and lists from here on: report.json and index.html's tables both
    # take them as Python values (index.html failed on a float32 after the check let it by).
    return [dataclasses.replace(s, metrics=jsonable(s.metrics)) for s in sections]
