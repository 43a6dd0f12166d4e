"""Triton's model configuration extension (`GET /v2/models/{name}[/versions/{v}]/config`):
the configuration Triton would hold for a served model, generated from its export's manifest
(inputs, outputs, dtypes, shapes) and the server's settings (batching)."""

from __future__ import annotations

import os
from typing import Any

from ann.serve import protocol
from ann.serve.batcher import buckets
from ann.serve.settings import Settings


def model_config(m: Any, settings: Settings) -> dict[str, Any]:
    """Triton's JSON shape: name, platform, backend, max_batch_size, input and output (name,
    data_type `TYPE_<v2 datatype>`, dims without the batch axis; a tensor of one value per row is
    dims [1] with `reshape: {shape: []}`, as Triton writes it), dynamic_batching (the
    compiled sizes as preferred batch sizes, the queue delay in microseconds, the queue's
    size in rows), the version policy (a registry version only: `ServedModel.registry_version`;
    an export directory's hash is no version number) and ann's own parameters."""

    def tensors(signature: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for t in protocol.tensor_metadata(signature):
            tensor = {
                "name": t["name"],
                "data_type": "TYPE_" + t["datatype"],
                "dims": t["shape"][1:],
            }
            if not tensor["dims"]:
                # One value per row: Triton's dims may not be empty with batching; its documented
                # form is dims [1] reshaped to [] (model_configuration.md, "Reshape").
                tensor.update(dims=[1], reshape={"shape": []})
            out.append(tensor)
        return out

    config: dict[str, Any] = {
        "name": m.name,
        "platform": "jax",
        "backend": "ann",
        "max_batch_size": settings.max_batch_size,
        "input": tensors(m.model.inputs),
        "output": tensors(m.model.outputs),
        "dynamic_batching": {
            "preferred_batch_size": buckets(settings.max_batch_size),
            "max_queue_delay_microseconds": round(settings.max_queue_delay_ms * 1000),
            "default_queue_policy": {"max_queue_size": settings.queue_rows},
        },
        "parameters": {
            "source": {"string_value": client_source(m.source)},
            "batch_wait": {"string_value": settings.batch_wait},
        },
    }
    # A registry version is a number; an export's version is its manifest hash, whatever its
    # look ("012345678901" was reported as version 12345678901, its leading zero lost).
    if m.registry_version is not None:
        config["version_policy"] = {"specific": {"versions": [m.registry_version]}}
    return config


def client_source(spec: str) -> str:
    """`--model`'s spec as a client may see it: a registry URI as given, an export directory by
    its name only (its path is the server machine's layout, as a manifest's workdir is the
    training machine's: `dataplane.public_source`)."""
    if spec.startswith("models:"):
        return spec
    return os.path.basename(os.path.normpath(spec))
