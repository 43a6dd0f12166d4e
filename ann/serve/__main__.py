"""Serve exported models over the Open Inference Protocol v2.

    python -m ann.serve --model=models:/digits@champion --registry=registry --port=8000
    python -m ann.serve --model=exports/digits_cnn --model=models:/digits/2 ...

`--model` takes a registry URI (`models:/NAME/3`, `models:/NAME@ALIAS`, `models:/NAME/latest`;
served as NAME, version 3) or an export directory (served under its manifest name, version = the
first 12 hex digits of its manifest's sha256). Give it several times to serve several models or
versions; the first version of a name answers `/v2/models/NAME/infer`. Every flag is checked
first (a bad one: one line naming the flag and the fix, exit 1), then artifacts are verified
(sha256) and loaded, all before the port opens; compiling every batch bucket happens after, and
`/v2/health/ready` turns 200 when it is done.

The token: `--token_file` (a mounted secret) or `$ANN_SERVE_TOKEN`; `--token` works too, but a
command line is visible to every user of the machine (`ps`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource

from absl import flags

from ann import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
    from ann.registry import default_root
    from ann.serve.app import Settings

    d = Settings()
    flags.DEFINE_multi_string("model", None, "Registry URI or export directory (repeatable).")
    flags.DEFINE_string("registry", default_root(), "Registry directory for URIs ($ANN_REGISTRY).")
    flags.DEFINE_string("host", d.host, "Address to bind; 0.0.0.0 only in a container.")
    flags.DEFINE_integer("port", d.port, "Port.")
    flags.DEFINE_integer(
        "metrics_port",
        None,
        "Second port serving /metrics and /v2/health/* without the token (for Prometheus); "
        "off by default.",
    )
    flags.DEFINE_integer("max_batch_size", d.max_batch_size, "Most rows per batch and request.")
    flags.DEFINE_float(
        "max_queue_delay_ms", d.max_queue_delay_ms, "Longest a request waits for its batch."
    )
    flags.DEFINE_enum(
        "batch_wait",
        d.batch_wait,
        ["idle", "full"],
        "idle: run a batch as soon as no more requests are waiting to be read (at most "
        "max_queue_delay_ms); full: wait until it is full or max_queue_delay_ms has passed.",
    )
    flags.DEFINE_integer("max_queue_rows", None, "Rows queued before 503 (default 16 batches).")
    flags.DEFINE_integer("max_body_bytes", d.max_body_bytes, "Largest request body (413).")
    flags.DEFINE_integer(
        "max_request_line_bytes", d.max_request_line_bytes, "Longest request URL (414)."
    )
    flags.DEFINE_integer(
        "max_header_bytes", d.max_header_bytes, "Most bytes of header fields per request (431)."
    )
    flags.DEFINE_integer("max_headers", d.max_headers, "Most header fields per request (431).")
    flags.DEFINE_float(
        "header_timeout_s", d.header_timeout_s, "Seconds to receive a whole request head (408)."
    )
    flags.DEFINE_float(
        "body_timeout_s", d.body_timeout_s, "Seconds between two reads of a body (408)."
    )
    flags.DEFINE_float(
        "keepalive_timeout_s", d.keepalive_timeout_s, "Seconds an idle connection stays open."
    )
    flags.DEFINE_integer(
        "max_connections", d.max_connections, "Connections open at once (503 above)."
    )
    flags.DEFINE_string(
        "token",
        os.environ.get("ANN_SERVE_TOKEN"),
        "Bearer token required (except health); default $ANN_SERVE_TOKEN. Prefer --token_file "
        "or the variable: a command line is visible to other users.",
    )
    flags.DEFINE_string("token_file", None, "File holding the bearer token (a mounted secret).")
    flags.DEFINE_string("request_log", None, "File for sampled request/response JSON lines.")
    flags.DEFINE_float("request_log_sample", d.request_log_sample, "Share of requests logged.")
    flags.DEFINE_float(
        "shutdown_timeout", d.shutdown_timeout, "Seconds SIGTERM waits for queued requests."
    )
    flags.mark_flags_as_required(["model"])


def read_token() -> str | None:
    if FLAGS.token_file is None:
        return FLAGS.token
    if FLAGS.token is not None:
        cli.fail("--token_file and --token (or $ANN_SERVE_TOKEN) are both set; give one")
    try:
        with open(FLAGS.token_file, encoding="utf-8") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        cli.fail(f"--token_file={FLAGS.token_file}: cannot read it ({e})")


def settings_from_flags():
    """The checked `Settings`, or exit 1 with the first flag that cannot work."""
    from ann.serve.app import Settings

    # Each Settings field is the flag of its name (retry_after_seconds has none; the token
    # may come from a file or the environment).
    named = {
        f.name: FLAGS[f.name].value
        for f in dataclasses.fields(Settings)
        if f.name in FLAGS and f.name != "token"
    }
    try:
        settings = Settings(token=read_token(), **named)
    except ValueError as e:
        cli.fail(str(e))
    ensure_file_descriptors(settings.file_descriptors())
    return settings


def ensure_file_descriptors(needed: int) -> None:
    """Raises the soft open-file limit to `needed` if the hard one allows; else exit 1."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    try:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise ValueError(f"the process may open {hard} (ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    except (ValueError, OSError) as e:  # also a kernel cap (fs.nr_open) under an unlimited -Hn
        cli.fail(
            f"--max_connections={FLAGS.max_connections} needs about {needed} open files, {e}; "
            "lower --max_connections or raise the limit"
        )


def load_models(specs: list[str], registry_dir: str) -> list:
    """Resolves (`ann.registry.resolve`) and verifies every `--model` (`ServedModel`s); raises
    on the first that fails."""
    from ann import registry
    from ann.serve.app import ServedModel

    models = []
    for spec in specs:
        resolved = registry.resolve(spec, registry_dir)
        model = resolved.load()
        if resolved.version is not None:
            mv = resolved.version
            models.append(ServedModel(mv.name, str(mv.version), model, spec))
        else:
            digest = model.manifest_sha256  # of the bytes loaded, not a second read
            models.append(ServedModel(model.name, digest[:12], model, resolved.path))
    seen = set()
    for m in models:
        if (m.name, m.version) in seen:
            raise ValueError(f"--model: {m.name} version {m.version} is given twice")
        seen.add((m.name, m.version))
    return models


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value)")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s ann.serve: %(message)s")
    settings = settings_from_flags()
    from ann import artifact
    from ann.registry import RegistryError
    from ann.serve.app import App, run

    try:
        models = load_models(FLAGS.model, FLAGS.registry)
    except (RegistryError, artifact.IntegrityError, OSError, ValueError) as e:
        cli.fail(str(e))
    problem = body_too_small(models, settings.max_body_bytes)
    if problem:
        cli.fail(problem)
    try:
        run(App(models, settings))
    except OSError as e:
        cli.fail(str(e))


def body_too_small(models: list, max_body_bytes: int) -> str | None:
    """`--max_body_bytes` too small for one row of a model, even as binary tensor data (its
    raw bytes plus a JSON header of about 100 bytes per input): no request could ever pass."""
    import numpy as np

    for m in models:
        need = sum(
            int(np.prod(spec["shape"][1:], dtype=np.int64)) * np.dtype(spec["dtype"]).itemsize + 100
            for spec in m.model.inputs.values()
        )
        if need > max_body_bytes:
            return (
                f"--max_body_bytes={max_body_bytes} cannot hold one row of model {m.name} "
                f"version {m.version} (about {need} bytes even as binary tensor data); raise it"
            )
    return None


if __name__ == "__main__":
    define_flags()
    cli.run(main)
