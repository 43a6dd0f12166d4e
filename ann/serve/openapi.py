"""The API as an OpenAPI 3 document: `openapi.json` (package data, written by hand like
MLServer's `rest/openapi/dataplane.json`), filled with the models a server serves.

The static part is the v2 protocol's shapes and this server's routes (a test checks it lists
every route of `app.ROUTES`); `fill` adds what depends on the models: the names a `{name}` path
parameter takes and, under `x-models`, each version's input and output tensors.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable
from importlib import resources
from typing import Any

import orjson

from ann.serve import protocol


@functools.cache
def template() -> dict[str, Any]:
    """The static document, read once from the package."""
    return orjson.loads(resources.files("ann.serve").joinpath("openapi.json").read_bytes())


def fill(models: Iterable[Any]) -> dict[str, Any]:
    """The document for `models` (each with `name`, `version` and `model.inputs/outputs`)."""
    doc = copy.deepcopy(template())
    models = list(models)
    names = sorted({m.name for m in models})
    doc["components"]["parameters"]["name"]["schema"]["enum"] = names
    doc["x-models"] = {
        name: {
            m.version: {
                "inputs": protocol.tensor_metadata(m.model.inputs),
                "outputs": protocol.tensor_metadata(m.model.outputs),
            }
            for m in models
            if m.name == name
        }
        for name in names
    }
    return doc
