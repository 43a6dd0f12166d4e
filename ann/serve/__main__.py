"""Serve exported models over the Open Inference Protocol v2.

    ann serve --model=models:/digits@champion --registry=registry --port=8000
    ann serve --model=exports/digits_cnn --model=models:/digits/2 ...

`--model` takes a registry URI (`models:/NAME/3`, `models:/NAME@ALIAS`, `models:/NAME/latest`;
served as NAME, version 3) or an export directory (served under its manifest name, version = the
first 12 hex digits of its manifest's sha256). Give it several times to serve several models or
versions; the first version of a name answers `/v2/models/NAME/infer`. Every flag is checked
first (a bad one: one line naming the flag and the fix, exit 1), then artifacts are verified
(sha256) and loaded, all before the port opens; compiling every batch bucket happens after, and
`/v2/health/ready` turns 200 when it is done.

The token: `--token_file` (a mounted secret) or `$ANN_SERVE_TOKEN`; `--token` works too, but a
command line is visible to every user of the machine (`ps`).

Traces: OpenTelemetry, configured by the standard `OTEL_*` variables only (off unless
`OTEL_TRACES_EXPORTER` is set; ann/serve/tracing.py), e.g.
`OTEL_TRACES_EXPORTER=otlp OTEL_SERVICE_NAME=digits ann serve --model=...`.
"""

from __future__ import annotations

import resource
import sys

from absl import flags

from ann import arguments, cli

FLAGS = flags.FLAGS


def define_flags() -> None:
    """One flag per `Settings` field (its default, help and choices: `ann/serve/settings.py`
    is the one place they are written), plus `--model` and `--token_file`."""
    from ann.serve.settings import example, expected, flag_default, flag_fields

    define = {int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string}
    flags.DEFINE_multi_string("model", None, "Registry URI or export directory (repeatable).")
    for field in flag_fields():
        meta = field.metadata
        what = expected(field.name)  # the range its check refuses outside of: in its help too
        help = meta["help"] if what is None else arguments.takes(meta["help"], what)
        if "choices" in meta:
            flags.DEFINE_enum(field.name, flag_default(field), meta["choices"], help)
        else:
            define[meta["kind"]](field.name, flag_default(field), help)
        if what is not None:  # `--port=abc` said as `--port=0` is
            cli.EXPECTED[field.name] = what
            cli.EXAMPLES[field.name] = example(field.name)
    flags.DEFINE_string("token_file", None, "File holding the bearer token (a mounted secret).")
    flags.DEFINE_string(
        "admin_token_file", None, "File holding the admin token (load and unload; a secret)."
    )
    flags.mark_flags_as_required(["model"])
    cli.OWN_EMPTY.update(TOKENS)  # Settings: "expected printable ASCII ...; set --token_file ..."


# Tokens that may come from a file instead of their flag or variable.
TOKENS = {"token": "ANN_SERVE_TOKEN", "admin_token": "ANN_SERVE_ADMIN_TOKEN"}


def read_token(name: str) -> tuple[str | None, str]:
    """(`--NAME_file`'s content if given, else `--NAME` (default `$ANN_SERVE_...`), where it
    came from: `--token_file=PATH`, `--token`, `$ANN_SERVE_TOKEN`); exit 1 with one line for a
    token that is none, naming where it came from and its first bad character.
    The file and the variable alike lose the whitespace around the token (`token_text`): the
    variable kept a Kubernetes Secret's trailing newline and was refused (kserve.yaml)."""
    from ann.serve.settings import read_token_file, token_problem, token_text

    path = FLAGS[f"{name}_file"].value
    if path is None:
        token, source = FLAGS[name].value, f"--{name}"
        if token is not None and not FLAGS[name].present:  # the variable's
            token, source = token_text(token), f"${TOKENS[name]}"
    elif FLAGS[name].value is not None:
        cli.fail(f"--{name}_file and --{name} (or ${TOKENS[name]}) are both set; give one")
    else:
        source = f"--{name}_file={path}"
        try:
            token = read_token_file(f"{name}_file", path)
        except ValueError as e:  # "--token_file=/x does not exist; give the file ..."
            cli.fail(str(e))
    problem = token_problem(name, token, source)
    if problem:
        cli.fail(problem)
    return token, source


def as_typed(message: str, argv: list[str]) -> str:
    """`message`, a `Settings` refusal of a flag ("--port=70000 must be ..."), with the value
    as `argv` typed it: Settings holds the parsed number (`--max_queue_delay_ms=1e400` was
    said `=inf`, `=1e12` as `=1e+12`), as every other command's refusals quote the text."""
    said, _, rest = message.partition(" ")
    name = said.removeprefix("--").partition("=")[0]
    flag = cli.last_typed(name, argv) if said.startswith("--") else None
    if flag is None or flag.value is None or not rest.startswith("must be "):
        return message  # a range's refusal (`out_of_range`) keeps its words
    return f"{arguments.flag(name, flag.value)} {rest}"  # quoted where a shell needs it


def settings_from_flags():
    """The checked `Settings`, or exit 1 with the first flag that cannot work (a port in use
    and a --host not of this machine too: before any model is loaded). A value wrong on its
    own (a --compilation_cache_dir that is a file) is refused before what depends on the rest
    of the machine (the open-file limit, a port another process holds): it was said only once
    the port was free, and the README's example refusal did not show with port 8000 taken.
    So is a --model path that holds no export (it does not exist: `spec.not_a_model`, the file
    system alone; a models:/ URI is resolved with the models, after the ports), which was said
    only once the port was free. Turns on the compilation cache (`enable_compilation_cache`)."""
    from ann.serve.settings import Settings, exposure_warning, flag_fields, listen_problem

    # Each flag field of Settings is the flag of its name (tokens may come from a file).
    named = {f.name: FLAGS[f.name].value for f in flag_fields() if f.name not in TOKENS}
    problem = ineffective_flag(named)  # first: a flag that does nothing needs no better value
    if problem:
        cli.fail(problem)
    tokens = {name: read_token(name) for name in TOKENS}
    (admin, admin_from), (token, token_from) = tokens["admin_token"], tokens["token"]
    if admin is not None and admin == token:  # named as given: it said "admin_token: ... --token"
        cli.fail(
            f"{admin_from} and {token_from} give the same token: expected an admin token of its "
            "own (it may load and unload models; a client's token must not); give each its own"
        )
    try:
        settings = Settings(**{name: value for name, (value, _) in tokens.items()}, **named)
    except ValueError as e:
        cli.fail(as_typed(str(e), sys.argv))
    enable_compilation_cache(settings.compilation_cache_dir, settings.compilation_cache_max_mb)
    from ann.registry.spec import not_a_model
    from ann.serve.settings import registry_uri_refusal

    check_registry(settings.registry)
    for spec in FLAGS.model or ():
        problem = registry_uri_refusal(spec, settings.registry) or not_a_model(spec)
        if problem:
            cli.fail(problem)
    ensure_file_descriptors(settings.file_descriptors())
    problem = listen_problem(settings)
    if problem:
        cli.fail(problem)
    warning = exposure_warning(settings)
    if warning:
        cli.warn(warning)
    return settings


def check_registry(registry: str | None) -> None:
    """Exit 1 with the registry's own line where `--registry` (or `$ANN_REGISTRY`) names one
    that every `ann registry` command refuses (`Registry.check_readable`: artifacts/ without
    its registry.db, ...): the server resolves models:/ URIs and repository loads there and
    lists its versions in the index, and took such a one in silence, listing none. The
    default ./registry, which nobody named, is left to the index, which serves on and warns
    with the same line (`repository index: the registry could not be read (...)`, at start
    and at each index request)."""
    from ann.registry import Registry, RegistryError
    from ann.registry.core import default_origin
    from ann.serve.settings import no_registry

    if no_registry(registry) or (registry is None and default_origin() == "default"):
        return
    try:
        Registry.at(registry).check_readable()
    except RegistryError as e:
        cli.fail(str(e))


# Flags that act only with another one: (its prefix, the flag it needs, that flag's value
# where they do nothing, the fix).
DEPENDENT = [
    ("monitor_", "monitor", "off", "leave --monitor on"),
    ("request_log_", "request_log", None, "add --request_log=FILE"),
]


def ineffective_flag(values: dict) -> str | None:
    """One line for a flag given where it does nothing (`--monitor_min_rows=50` with
    `--monitor=off`, `--request_log_sample=1` without `--request_log`): a setting the user
    believes in that the server would ignore."""
    for prefix, needs, idle, fix in DEPENDENT:
        if values[needs] != idle:
            continue
        for name in values:
            if name.startswith(prefix) and FLAGS[name].present:
                typed = cli.last_typed(name)  # as written
                flag = typed.typed if typed is not None else FLAGS[name].serialize()
                where = f"with --{needs}={idle}" if idle is not None else f"without --{needs}"
                return f"{flag} does nothing {where}; drop it, or {fix}"
    return None


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


def main(argv: list[str]) -> None:
    cli.check_no_arguments(argv[1:])
    settings = settings_from_flags()
    run_cpu_computations_inline()
    from ann import artifact
    from ann.registry import RegistryError
    from ann.serve.app import App, run
    from ann.serve.repository import load_models
    from ann.serve.tracing import from_environment

    try:
        models = load_models(FLAGS.model, settings.registry)
    except (RegistryError, artifact.IntegrityError, OSError, ValueError) as e:
        cli.fail(str(e))
    problem = body_too_small(models, settings.max_body_bytes)
    if problem:
        cli.fail(problem)
    try:
        app = App(models, settings, tracing=from_environment())
        line = app.repository.registry_line()  # what the index adds to the models served
        if line:
            print(line, file=sys.stderr, flush=True)
        run(app)
    except OSError as e:
        cli.fail(str(e))


def enable_compilation_cache(path: str | None, max_mb: float) -> None:
    """XLA's persistent compilation cache in `--compilation_cache_dir` (ann/compilation_cache.py:
    every executable, the directory made if missing, kept to `--compilation_cache_max_mb`),
    before any model loads; none where the flag is left out or 'off' (any case: the rule of
    `ann train`'s config key, `compilation_cache.directory`, `~` expanded too). Exit 1 with one
    line for a path that cannot be the cache's directory. The batch sizes compile on threads
    of this process (ann/serve/dataplane.py), which share its jax configuration."""
    if path is None:
        return
    from ann import compilation_cache
    from ann.serve.settings import CACHE_OFF_FIX

    given = f"--compilation_cache_dir={path}"
    try:
        path = compilation_cache.directory(path, "--compilation_cache_dir", CACHE_OFF_FIX)
        if path is not None:
            compilation_cache.enable(
                path,
                given,
                "give a directory this user may write, or leave the flag out for no cache",
                max_mb,
            )
    except ValueError as e:
        cli.fail(str(e))


def run_cpu_computations_inline() -> None:
    """Makes XLA:CPU run each compiled call on the thread that calls it (jax's
    `jax_cpu_enable_async_dispatch` off; read when the CPU backend is made, so before any model
    loads; GPU and TPU backends ignore it). A server converts every result to NumPy at once,
    so dispatching the call to XLA's own thread only added a hand-over and a wake-up of that
    thread per call: 1-6% of the large digits CNN's server CPU per request at one client
    (docs/benchmarks.md, "Issue 16, session 24")."""
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)


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
