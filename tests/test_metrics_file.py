"""metrics.jsonl read back by one reader (export, resume, sweep results): a last line torn by a
crash mid-write is skipped with a warning; a damaged line before it is one error naming the
file and the line."""

import json

import pytest

from ann.export import _eval_metrics
from ann.sweep import results
from ann.sweep.space import SweepError
from ann.train.writers import MetricsFileError, MetricWriter, read_records

RECORDS = [
    {"step": 5, "train/loss": 1.0},
    {"step": 10, "val/accuracy": 0.5, "eval/accuracy": "nan"},
    {"step": 15, "train/loss": 0.5},
]


def _write(tmp_path, tail: str) -> str:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS) + tail)
    return str(path)


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path, capsys):
    path = _write(tmp_path, '{"step": 20, "val/accu')
    records = read_records(path)
    assert [r["step"] for r in records] == [5, 10, 15]
    # A plain line, as ann's other warnings (it carried absl's "W1202 12:00:00.000 ... ]").
    assert capsys.readouterr().err == (
        f"warning: {path}: skipping line 4, torn by a crash mid-write\n"
    )
    assert _eval_metrics(str(tmp_path), 10)["val/accuracy"] == 0.5  # export reads it
    evals, last = results.evals(str(tmp_path))  # so does the sweep's results table
    assert [r["step"] for r in evals] == [10] and last == 15
    MetricWriter(str(tmp_path), resume_step=10).close()  # resuming drops it with the later lines
    assert [r["step"] for r in read_records(path)] == [5, 10]
    # Named once: a resume checks the file, then its writer drops the line (it said so twice).
    assert "torn" not in capsys.readouterr().err


def test_a_damaged_line_before_the_last_names_the_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps(r) for r in RECORDS]
    lines[1] = lines[1][:12]
    path.write_text("\n".join(lines) + "\n\n")
    with pytest.raises(MetricsFileError, match=rf"^{path}: line 2 is not a metrics record") as e:
        read_records(str(path))
    assert "\n" not in str(e.value)
    with pytest.raises(SweepError, match="line 2"):
        results.evals(str(tmp_path))
    with pytest.raises(MetricsFileError, match="line 2"):
        MetricWriter(str(tmp_path), resume_step=10)
