"""Which experiments `ann report` has sections for (`SECTIONS`, and a user's class with a
`report_sections` method), and the one-line refusal of any other: a table apart from the
section functions, so that reading a run or an export (`ann.report.collect`) can check before
a restore without importing them."""

from __future__ import annotations

from ann.config import ConfigError

# experiment name -> "module:function" taking (preds: Predictions) and returning list[Section].
SECTIONS: dict[str, str] = {
    "classification": "ann.report.sections.classification:sections",
    "regression": "ann.report.sections.regression:sections",
    "forecasting": "ann.report.sections.forecasting:sections",
    "anomaly_detection": "ann.report.sections.anomaly:sections",
    "retrieval": "ann.report.sections.retrieval:sections",
    "seq2seq": "ann.report.sections.sequences:seq2seq",
    "language_modelling": "ann.report.sections.sequences:language_modelling",
}


# A user's experiment class gives its own sections through this method: report_sections(self,
# preds: Predictions) -> list[Section], called once per split.
METHOD = "report_sections"


def check_experiment(experiment: str) -> None:
    """Raises ConfigError, one line, unless `experiment` has sections: a name in SECTIONS, or a
    user's `module:Class` that defines `report_sections(preds)` (imported to see; a module
    that does not import is its own one line, from `ann.experiment.get`)."""
    if experiment in SECTIONS:
        return
    from ann import experiment as experiment_lib

    if hasattr(experiment_lib.get(experiment), METHOD):
        return
    raise ConfigError(
        f"ann report has sections for ann's experiments ({', '.join(sorted(SECTIONS))}), "
        f'not for {experiment!r}, which defines no {METHOD}(preds); define it (README, "Add '
        "your own experiment\"), or read its eval metrics per split in the run's metrics.jsonl "
        "(and run_status.json)"
    )
