"""Sampled request/response log: JSON lines in a size-capped, rotated file, for monitoring.

Each line: `{"time", "model", "version", "id", "status", "seconds", "inputs", "outputs"}` (or
`"error"` instead of outputs), tensors as `{"shape", "data"}`. A share `sample` of infer
requests is logged; the file rotates at `max_bytes` keeping `backups` old files.
"""

from __future__ import annotations

import logging
import logging.handlers
import random
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson


def _tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {k: {"shape": list(v.shape), "data": v.reshape(-1).tolist()} for k, v in arrays.items()}


class RequestLog:
    def __init__(self, path: str, sample: float, max_bytes: int = 50 << 20, backups: int = 3):
        self.sample = sample
        self._random = random.Random()
        self._logger = logging.getLogger(f"ann.serve.requests.{path}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(self._handler)

    def sampled(self) -> bool:
        return self.sample > 0 and self._random.random() < self.sample

    def write(
        self,
        model: str,
        version: str,
        request_id: str | None,
        status: int,
        seconds: float,
        inputs: Mapping[str, np.ndarray] | None,
        outputs: Mapping[str, np.ndarray] | None = None,
        error: str | None = None,
    ) -> None:
        record: dict[str, Any] = {
            "time": time.time(),
            "model": model,
            "version": version,
            "id": request_id,
            "status": status,
            "seconds": round(seconds, 6),
            "inputs": _tensors(inputs) if inputs is not None else None,
        }
        if outputs is not None:
            record["outputs"] = _tensors(outputs)
        if error is not None:
            record["error"] = error
        self._logger.info(orjson.dumps(record).decode())

    def close(self) -> None:
        self._logger.removeHandler(self._handler)
        self._handler.close()
