"""Which experiments `ann report` has sections for (`SECTIONS`), and the one-line refusal of
any other: a table apart from the section functions, so that reading a run or an export
(`ann.report.collect`) can check before a restore without importing them."""

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


def check_experiment(experiment: str) -> None:
    """Raises ConfigError, one line, unless `experiment` has sections (a name in SECTIONS): a
    user's own experiment has none, and is judged by its own eval metrics."""
    if experiment not in SECTIONS:
        raise ConfigError(
            f"ann report has sections for ann's experiments ({', '.join(sorted(SECTIONS))}), "
            f"not for {experiment!r}; its eval metrics per split are in the run's "
            "metrics.jsonl (and run_status.json), or add its section function to SECTIONS in "
            "ann/report/tasks.py"
        )
