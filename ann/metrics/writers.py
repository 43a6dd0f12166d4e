"""Writes scalar metrics to TensorBoard event files and `metrics.jsonl` in the workdir.

Only process 0 writes. On resume, lines for steps after the restored checkpoint are dropped, so
the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os

import jax
import tensorboardX


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
        # JSON has no NaN; write null so the line stays parseable.
        finite = {k: v if math.isfinite(v) else None for k, v in clean.items()}
        record = {"step": int(step), **finite}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for key, value in clean.items():
            self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._tb.close()
