"""Serve exported models over the Open Inference Protocol v2.

    python -m ann.serve --model=models:/digits@champion --registry=registry --port=8000
    python -m ann.serve --model=exports/digits_cnn --model=models:/digits/2 ...

`--model` takes a registry URI (`models:/NAME/3`, `models:/NAME@ALIAS`, `models:/NAME/latest`;
served as NAME, version 3) or an export directory (served under its manifest name, version = the
first 12 hex digits of its manifest's sha256). Give it several times to serve several models or
versions; the first version of a name answers `/v2/models/NAME/infer`. Artifacts are verified
(sha256) and loaded before the port opens; compiling every batch bucket happens after, and
`/v2/health/ready` turns 200 when it is done.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags

from ann import artifact
from ann.serve.app import App, ServedModel, Settings, run

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_multi_string("model", None, "Registry URI or export directory (repeatable).")
    flags.DEFINE_string(
        "registry", os.environ.get("ANN_REGISTRY", "registry"), "Registry directory for URIs."
    )
    flags.DEFINE_string("host", "127.0.0.1", "Address to bind; 0.0.0.0 only in a container.")
    flags.DEFINE_integer("port", 8000, "Port.")
    flags.DEFINE_integer("max_batch_size", 64, "Most rows per batch (and per request).")
    flags.DEFINE_float("max_queue_delay_ms", 2.0, "Longest a request waits for its batch to fill.")
    flags.DEFINE_enum(
        "batch_wait",
        "idle",
        ["idle", "full"],
        "idle: run a batch as soon as no more requests are waiting to be read (at most "
        "max_queue_delay_ms); full: wait until it is full or max_queue_delay_ms has passed.",
    )
    flags.DEFINE_integer("max_queue_rows", None, "Rows queued before 503 (default 16 batches).")
    flags.DEFINE_integer("max_body_bytes", 8 << 20, "Largest request body (413 above).")
    flags.DEFINE_string(
        "token", os.environ.get("ANN_SERVE_TOKEN"), "Bearer token required (except health)."
    )
    flags.DEFINE_string("request_log", None, "File for sampled request/response JSON lines.")
    flags.DEFINE_float("request_log_sample", 0.01, "Share of requests logged.")
    flags.DEFINE_float("shutdown_timeout", 30.0, "Seconds SIGTERM waits for queued requests.")
    flags.mark_flags_as_required(["model"])


def load_models(specs: list[str], registry_dir: str) -> list[ServedModel]:
    """Resolves and verifies every `--model`; raises on the first that fails."""
    models = []
    for spec in specs:
        if spec.startswith("models:/"):
            from ann.registry import Registry

            if not os.path.isdir(registry_dir):
                raise FileNotFoundError(f"--registry={registry_dir} does not exist (for {spec})")
            mv = Registry(registry_dir).resolve(spec)
            model = artifact.load(mv.path, mv.manifest_sha256)
            models.append(ServedModel(mv.name, str(mv.version), model, spec))
        else:
            model = artifact.load(spec)
            digest = model.manifest_sha256  # of the bytes loaded, not a second read
            models.append(ServedModel(model.name, digest[:12], model, os.path.abspath(spec)))
    seen = set()
    for m in models:
        if (m.name, m.version) in seen:
            raise ValueError(f"--model: {m.name} version {m.version} is given twice")
        seen.add((m.name, m.version))
    return models


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s ann.serve: %(message)s")
    from ann.registry import RegistryError

    try:
        models = load_models(FLAGS.model, FLAGS.registry)
    except (RegistryError, artifact.IntegrityError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    settings = Settings(
        max_batch_size=FLAGS.max_batch_size,
        max_queue_delay_ms=FLAGS.max_queue_delay_ms,
        batch_wait=FLAGS.batch_wait,
        max_queue_rows=FLAGS.max_queue_rows,
        max_body_bytes=FLAGS.max_body_bytes,
        token=FLAGS.token,
        request_log=FLAGS.request_log,
        request_log_sample=FLAGS.request_log_sample,
    )
    names = ", ".join(f"{m.name}/{m.version}" for m in models)
    print(f"serving {names} on http://{FLAGS.host}:{FLAGS.port}", file=sys.stderr, flush=True)
    run(App(models, settings), FLAGS.host, FLAGS.port, FLAGS.shutdown_timeout)


if __name__ == "__main__":
    define_flags()
    app.run(main)
