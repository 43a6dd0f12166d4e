"""`ann report`: how good a model is, where it fails, whether its probabilities mean what they
say; report.json, index.html (pictures inlined) and the PNGs.

    ann report --workdir=runs/digits_cnn                      # best checkpoint, validation + test
    ann report --workdir=runs/digits_cnn --step=latest --split=test
    ann report --model=models:/digits@champion --split=test   # a registered model (or an export)

Writes WORKDIR/report (for --model: ./report-NAME-VERSION), or --out, replacing an earlier
report of the same run or model there (one of another is refused), and prints a short summary.
report.json's schema: docs/report.md.
"""

from __future__ import annotations

import os

from absl import flags

from ann import arguments, cli, directory_kind
from ann.report import collect

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "A trained run to report on (holds config.json).")
    flags.DEFINE_string(
        "model",
        None,
        "Instead of --workdir: an export directory or models:/NAME/3, models:/NAME@alias.",
    )
    flags.DEFINE_string(
        "registry", None, "The registry for --model URIs (default $ANN_REGISTRY, else ./registry)."
    )
    flags.DEFINE_string("step", "best", "With --workdir: 'best', 'latest' or a step number.")
    cli.NEEDED_UNLESS.update(workdir=("model",), model=("workdir",))  # one of the two
    cli.define_names("split", collect.SPLITS, collect.SPLITS, "The splits to report.")
    flags.DEFINE_string(
        "out", None, "Directory to write (default WORKDIR/report, ./report-NAME-V)."
    )


def check_flags(
    workdir: str | None,
    model: str | None,
    step: str,
    splits: list[str],
    registry: str | None = None,
) -> None:
    """Raises FlagError (RegistryError for --model) with one line naming the flag and the fix;
    reads directories and the registry, imports nothing heavy (no JAX)."""
    if (workdir is None) == (model is None):
        said = "both" if workdir else "neither"
        raise cli.FlagError(
            f"give exactly one of --workdir (a trained run) or --model (an export directory or "
            f"models:/ URI); {said} given"
        )
    if model is not None and step != "best":
        raise cli.FlagError("--step applies to --workdir only; an export is one step already")
    if workdir is not None and registry is not None:  # read only to resolve --model: ignored
        raise cli.FlagError(
            f"--registry={registry} does nothing with --workdir (it resolves --model's models:/ "
            "URIs); drop it, or give --model=models:/NAME/VERSION in place of --workdir"
        )
    if model is not None and directory_kind.of(model) == (directory_kind.RUN,):
        # A report reads a run as well as an export (it said: export it first).
        instead = arguments.flag("workdir", model)
        raise cli.FlagError(f"--model={model} is a training run; give it as {instead}")
    collect.check_splits(splits)
    if workdir is not None:
        cli.check_trained_run(workdir, step, export_flag="model")
    else:  # a missing registry, model or alias was said after 9 s of imports and loading
        from ann.registry import resolve

        resolve(model, registry)


def default_out(identity: dict, workdir: str | None = None) -> str:
    """WORKDIR/report for a run (as the user wrote WORKDIR, so what is printed is the path they
    gave), report-NAME-VERSION in the current directory for a model."""
    if identity["kind"] == "workdir":
        return os.path.join(workdir or identity["workdir"], "report")
    # Named as `ann serve` and `ann monitor` name it (`Resolved.served_name`): a registry
    # version (or a registered copy) by its number, an export directory by its manifest's first
    # 12 hex digits (report.json's model.version stays null for it).
    from ann.registry.spec import export_version

    version = identity.get("version") or export_version(identity["manifest_sha256"])
    return f"report-{identity['name']}-{version}"


def made_from(workdir: str | None, model: str | None, registry: str | None) -> dict:
    """What the report will be of, as `write.check_out` compares an earlier report at --out
    with it: the run, or the model's manifest sha256 (read and hashed, nothing loaded: no JAX
    import). An --out holding another model's report was refused only once the model was
    loaded (12 s)."""
    if workdir is not None:
        return {"kind": "workdir", "workdir": workdir}
    from ann import artifact
    from ann.registry import resolve

    resolved = resolve(model, registry)
    manifest, raw = artifact.read_manifest_bytes(resolved.path, resolved.manifest_sha256)
    name = manifest.get("name")  # for the refusal's words
    return {"kind": "export", "name": name, "manifest_sha256": artifact.sha256_bytes(raw)}


def main(argv: list[str]) -> None:
    cli.check_no_arguments(argv[1:])
    check_flags(FLAGS.workdir, FLAGS.model, FLAGS.step, FLAGS.split, FLAGS.registry)
    from ann.report import write  # after the flags are known to be good

    if FLAGS.out:  # as `ann monitor drift` checks its --out: before JAX is imported
        made = made_from(FLAGS.workdir, FLAGS.model, FLAGS.registry)
        write.check_out_flag(FLAGS.out, source=made)
    if FLAGS.workdir is not None:
        step: int | str = int(FLAGS.step) if FLAGS.step.isdigit() else FLAGS.step
        cli.progress(f"restoring the {step} checkpoint of {FLAGS.workdir}")
        source = collect.restore(FLAGS.workdir, step)  # checked above
    else:
        cli.progress(f"loading {FLAGS.model}")
        source = collect.from_model(FLAGS.model, FLAGS.registry)
    out = FLAGS.out or default_out(source.identity, FLAGS.workdir)
    with cli.default_of("out", out, given=bool(FLAGS.out)):
        cli.check_out("out", out, report=True)  # before the splits are scored
        cli.progress(f"scoring {' and '.join(FLAGS.split)}, drawing the pictures into {out}")
        report = write.write_report(source, FLAGS.split, out)
    print(write.summary(report, out, FLAGS.workdir))


if __name__ == "__main__":
    define_flags()
    # By name: the checkpoint code (JAX, Orbax) is imported only once a run is read.
    errors = (
        "ann.train.checkpoint:CheckpointError",
        "ann.artifact:IntegrityError",
        "ann.artifact:PlatformError",
        "ann.registry.core:RegistryError",
    )
    cli.run(main, errors=errors, quiet=True)
