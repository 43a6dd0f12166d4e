"""metrics.jsonl read back by one reader (export, resume, sweep results): a last line torn by a
crash mid-write is skipped with a warning; a damaged line before it is one error naming the
file and the line."""

import json
import os

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


def _full(*args, **kwargs):
    import errno
    import os

    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullFile:
    """metrics.jsonl's file on a full disk: its flush raises ENOSPC naming no file."""

    def __init__(self, f):
        self._f = f

    def write(self, text):
        return self._f.write(text)

    flush = close = _full


def test_a_full_disk_under_metrics_jsonl_names_the_file(tmp_path):
    # A failed append to metrics.jsonl said only "no space left on device; ... write
    # elsewhere": the file and --workdir named by neither the error nor the one line.
    writer = MetricWriter(str(tmp_path))
    writer._file = _FullFile(writer._file)
    with pytest.raises(OSError) as e:
        writer.write(5, {"train/loss": 1.0})
    assert e.value.filename == str(tmp_path / "metrics.jsonl")
    with pytest.raises(OSError) as e:
        writer.close()
    assert e.value.filename == str(tmp_path / "metrics.jsonl")


def test_a_closed_writer_is_not_kept_alive(tmp_path):
    # tensorboardX's atexit hook holds each event writer for good; the full-disk guard's
    # wrappers on it held the MetricWriter, so each run in one process (a notebook, a sweep
    # driver) kept its writer, SummaryWriter and histogram bins: about 50 kB a run.
    import gc
    import weakref

    writer = MetricWriter(str(tmp_path))
    writer.write(1, {"train/loss": 1.0})
    writer.close()
    alive = weakref.ref(writer), weakref.ref(writer._tb)
    del writer
    gc.collect()
    assert [ref() for ref in alive] == [None, None]


def test_a_full_disk_under_the_tensorboard_event_file_names_it(tmp_path, monkeypatch):
    # tensorboardX writes in its own thread: a full disk killed that thread with a traceback
    # (after which the eleventh point blocked the run for good on its full queue), and its
    # close raised "no space left on device" naming no file, twice more at exit.
    import threading

    from tensorboardX import record_writer

    crashed = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))
    writer = MetricWriter(str(tmp_path))
    monkeypatch.setattr(record_writer.RecordWriter, "flush", _full)
    with pytest.raises(OSError) as e:
        for step in range(40):  # past the writer's queue of 10, which no dead thread drains
            writer.write(step, {"train/loss": 1.0})
            writer._tb.flush()  # the thread's periodic flush, now
        writer.close()
    event_file = e.value.filename
    assert os.path.dirname(event_file) == str(tmp_path / "tensorboard"), event_file
    assert os.path.basename(event_file).startswith("events.out.tfevents."), event_file
    assert not crashed


def test_a_full_disk_under_tensorboard_ends_a_run_naming_the_event_file(tmp_path, monkeypatch):
    # The run's error named no file ("no space left on device; ... write elsewhere"), and
    # where a failed save ended the run first, replaced that save's line.
    from conftest import tiny
    from tensorboardX import record_writer

    from ann.train.loop import train_and_evaluate

    monkeypatch.setattr(record_writer.RecordWriter, "flush", _full)
    with pytest.raises(OSError) as e:
        train_and_evaluate(tiny(total_steps=10), str(tmp_path))
    assert os.path.dirname(e.value.filename) == str(tmp_path / "tensorboard")
