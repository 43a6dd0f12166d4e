"""A Seldon MLServer runtime serving an ann export: the peer of `scripts/bench_serve.py --peer`.

Runs inside MLServer's own virtual environment (never a dependency of ann), which needs
`mlserver`, the same `jax`/`jaxlib` as ann and `safetensors`:

    python -m venv /work/mlserver-venv
    /work/mlserver-venv/bin/pip install mlserver==1.7.1 jax==0.10.2 jaxlib==0.10.2 \
        safetensors flatbuffers

It calls the same executables as `python -m ann.serve`: `ann.artifact.load(uri)` (this
checkout is put on `sys.path`) compiled ahead of time by the server's own
`ann.serve.dataplane.compile_buckets` for the same batch sizes (`ann.serve.batcher.buckets`),
with the weights compiled in under the same rule and default (`--constant_weights_mb`), a batch
padded to the smallest size that holds it.
With MLServer's adaptive batching on (`max_batch_size` > 1 in model-settings.json), MLServer
concatenates requests into one `predict`; off, each request is its own batch of one row.
"""

from __future__ import annotations

import bisect
import os
import sys

if __name__ == "__main__":  # not a script: MLServer imports it (`bench_serve.py --peer_python`)
    try:
        print(__doc__)
    except BrokenPipeError:  # `... --help | head`
        pass
    sys.exit(0)

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ann import artifact  # noqa: E402
from ann.serve.batcher import buckets  # noqa: E402
from ann.serve.dataplane import compile_buckets  # noqa: E402
from ann.serve.settings import Settings  # noqa: E402


class AnnExport(MLModel):
    """`parameters.uri`: the export directory; compiles every bucket up to the model's
    `max_batch_size` (1 when adaptive batching is off) and runs each once at load."""

    async def load(self) -> bool:
        model = artifact.load(self.settings.parameters.uri)
        self._sizes = buckets(max(1, self.settings.max_batch_size))
        self._input = next(iter(model.inputs))
        self._run, _ = compile_buckets(model, self._sizes, Settings().constant_weights_mb)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """One (possibly adaptive-batched) request: its one input tensor, rows first; every
        output of the export, cut back to the request's rows."""
        x = NumpyCodec.decode_input(payload.inputs[0])
        rows = len(x)
        size = self._sizes[bisect.bisect_left(self._sizes, rows)]
        if size != rows:
            x = np.concatenate([x, np.zeros((size - rows, *x.shape[1:]), x.dtype)])
        outputs = self._run[size]({self._input: x})
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(k, v[:rows]) for k, v in outputs.items()],
        )
