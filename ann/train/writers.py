"""Writes scalar metrics to TensorBoard event files and `metrics.jsonl` in the workdir.

Only process 0 writes. On resume, lines for steps after the restored checkpoint are dropped, so
the file reads as one uninterrupted run. JSON has no NaN or infinity: a non-finite value is
written as the string "nan", "inf" or "-inf" (what Python's `float()` parses), never dropped or
turned into null, and `read_records` turns those strings back into floats, so whatever replays
the file on resume (early stopping) sees what the uninterrupted run saw.
"""

from __future__ import annotations

import json
import math
import os

import jax
import tensorboardX

NON_FINITE = ("nan", "inf", "-inf")


def encode(value: float) -> float | str:
    """A float as metrics.jsonl stores it: itself, or "nan" / "inf" / "-inf"."""
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def decode(record: dict) -> dict:
    """A metrics.jsonl record with "nan"/"inf"/"-inf" strings turned back into floats."""
    return {k: float(v) if isinstance(v, str) and v in NON_FINITE else v for k, v in record.items()}


def read_records(path: str) -> list[dict]:
    """Every record of a metrics.jsonl file, decoded; [] if the file does not exist."""
    try:
        with open(path) as f:
            return [decode(json.loads(line)) for line in f if line.strip()]
    except FileNotFoundError:
        return []


class MetricWriter:
    def __init__(self, workdir: str, resume_step: int | None = None):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self._truncate_after(resume_step or 0)
        self._file = open(self.path, "a")
        self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))

    def _truncate_after(self, step: int) -> None:
        if not os.path.exists(self.path):
            return
        with open(self.path) as f:
            keep = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, self.path)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in metrics.items()}
        record = {"step": int(step), **{k: encode(v) for k, v in clean.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for key, value in clean.items():
            self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._tb.close()
