"""An exported model on disk: its layout, its integrity check, and a loader that needs only jax.

    DIR/
      manifest.json          what the model is (written by `ann.export`), with the sha256 and
                             size of every other file
      function.jaxexport     the inference function, serialized by `jax.export` (symbolic batch)
      weights.safetensors    the weights, flat, keyed by parameter path ("blocks/0/bn1/scale")

Loading reads each file once, checks its size and sha256 against the manifest, and only then
deserializes those same bytes, so a file changed between the check and the use is not possible.
Nothing here imports flax or the training code: a server needs jax, numpy and safetensors.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

MANIFEST = "manifest.json"
FUNCTION = "function.jaxexport"
WEIGHTS = "weights.safetensors"
FORMAT = "ann.export/1"


class IntegrityError(ValueError):
    """An artifact is missing a file, truncated, tampered with, or not an ann export."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory: str, manifest_sha256: str | None = None) -> dict[str, Any]:
    """The parsed manifest; with `manifest_sha256` (as a registry records it) also its hash."""
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise IntegrityError(
            f"{directory} is not an ann export: cannot read {MANIFEST} ({e})"
        ) from e
    if manifest_sha256 is not None and sha256_bytes(raw) != manifest_sha256:
        raise IntegrityError(
            f"{path} was modified: its sha256 is {sha256_bytes(raw)}, the registry recorded "
            f"{manifest_sha256}; re-register a fresh export"
        )
    try:
        manifest = json.loads(raw)
    except ValueError as e:
        raise IntegrityError(f"{path} is not valid JSON (truncated or edited?): {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IntegrityError(f"{path} is not an {FORMAT} manifest; re-export with `ann.export`")
    return manifest


def read_verified(directory: str, manifest: Mapping[str, Any], name: str) -> bytes:
    """The bytes of file `name`, after checking its size and sha256 against the manifest."""
    entry = manifest["files"].get(name)
    if entry is None:
        raise IntegrityError(f"{MANIFEST} in {directory} lists no file {name!r}")
    path = os.path.join(directory, name)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise IntegrityError(
            f"{path} is missing or unreadable ({e}); the export is incomplete"
        ) from e
    if len(data) != entry["bytes"]:
        raise IntegrityError(
            f"{path} has {len(data)} bytes, the manifest says {entry['bytes']} (truncated?); "
            "refusing to load it"
        )
    digest = sha256_bytes(data)
    if digest != entry["sha256"]:
        raise IntegrityError(
            f"{path} was modified: sha256 {digest}, the manifest says {entry['sha256']}; "
            "refusing to load it"
        )
    return data


def verify(directory: str, manifest_sha256: str | None = None) -> dict[str, Any]:
    """Checks every file the manifest lists (without deserializing); returns the manifest."""
    manifest = read_manifest(directory, manifest_sha256)
    for name in manifest["files"]:
        read_verified(directory, manifest, name)
    return manifest


class Model:
    """A loaded export: call it on a dict of NumPy arrays with any batch size."""

    def __init__(self, directory: str, manifest: dict[str, Any], exported: Any, weights: dict):
        import jax

        self.directory = directory
        self.manifest = manifest
        self.name: str = manifest["name"]
        self.inputs: dict[str, dict[str, Any]] = manifest["inputs"]  # shapes: -1 = batch
        self.outputs: dict[str, dict[str, Any]] = manifest["outputs"]
        self._exported = exported
        self.weights = jax.device_put(weights)
        self._jitted = jax.jit(exported.call)

    def check(self, inputs: Mapping[str, np.ndarray]) -> int:
        """Raises ValueError naming the input that does not match; returns the batch size."""
        missing = sorted(set(self.inputs) - set(inputs))
        extra = sorted(set(inputs) - set(self.inputs))
        if missing or extra:
            raise ValueError(
                f"inputs must be {sorted(self.inputs)}; missing {missing}, extra {extra}"
            )
        rows = None
        for name, spec in self.inputs.items():
            x = inputs[name]
            if x.dtype != np.dtype(spec["dtype"]) or list(x.shape[1:]) != spec["shape"][1:]:
                raise ValueError(
                    f"input {name!r} must be {spec['dtype']}{spec['shape']} (-1: any batch), "
                    f"got {x.dtype}{list(x.shape)}"
                )
            if rows is not None and x.shape[0] != rows:
                raise ValueError(f"inputs have different batch sizes ({rows} and {x.shape[0]})")
            rows = x.shape[0]
        return int(rows or 0)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {k: np.asarray(v) for k, v in inputs.items()}
        self.check(inputs)
        return {k: np.asarray(v) for k, v in self._jitted(self.weights, inputs).items()}

    def compile(self, batch_size: int) -> Callable[[Mapping[str, np.ndarray]], dict]:
        """The function compiled ahead of time for exactly `batch_size` rows (no retracing)."""
        import jax

        specs = {
            name: jax.ShapeDtypeStruct((batch_size, *spec["shape"][1:]), np.dtype(spec["dtype"]))
            for name, spec in self.inputs.items()
        }
        compiled = self._jitted.lower(self.weights, specs).compile()
        weights = self.weights

        def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {k: np.asarray(v) for k, v in compiled(weights, dict(inputs)).items()}

        return run


def load(directory: str, manifest_sha256: str | None = None) -> Model:
    """Verifies every file's sha256 and loads the export in `directory` (jax only, no flax)."""
    from jax import export
    from safetensors.numpy import load as load_safetensors

    manifest = read_manifest(directory, manifest_sha256)
    function = read_verified(directory, manifest, FUNCTION)
    weights = read_verified(directory, manifest, WEIGHTS)
    try:
        exported = export.deserialize(bytearray(function))
        arrays = load_safetensors(weights)
    except Exception as e:  # the bytes matched their hash, so the writer made a bad artifact
        raise IntegrityError(f"{directory}: cannot deserialize the export ({e})") from e
    return Model(directory, manifest, exported, arrays)
