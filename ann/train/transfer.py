"""Transfer learning: start a run from another model's parameters, and freeze some of them.

`config.init_from` names the source:

- a run directory: `runs/digits_cnn` (its best checkpoint), `runs/digits_cnn:latest`,
  `runs/digits_cnn:600` (a step). Only the parameters and the model's statistics are read
  (an Orbax partial restore), so the source's optimizer, data and even model class do not
  matter, only its array paths and shapes;
- an export directory (`ann export`): its `weights.safetensors`, checked against the
  manifest's sha256 first;
- a registry URI, `models:/NAME@champion` or `models:/NAME/3`, in the registry at
  $ANN_REGISTRY (default ./registry), checked against the hash recorded at registration.

Arrays are matched by path (`convs/0/kernel`: the module path joined by "/", as an export names
its weights and `config.freeze` sees them). Every trained parameter and every floating-point
statistic (BatchNorm's mean and var) of the new model is either

- loaded (cast to the new model's dtype if the source's differs),
- missing in the source, or of another shape there: kept as freshly initialized,
- skipped: kept fresh because a regex of `config.init_from_skip` matches its whole path (a new
  head of the same shape as the old one), or because another array of its layer has another
  shape (a layer is loaded whole or not at all: no old bias under a new kernel);

source arrays no path of the new model names are reported as unused. The run logs a one-line
summary and the lists, and writes them to WORKDIR/init_from.json. A source that shares no array
with the model is refused (it is almost surely the wrong one). Loading happens only when a run
starts fresh: on resume the run's own checkpoint wins, whatever `init_from` says.

`config.freeze` keeps parameters from being updated (ann/train/freezing.py says how).

List a model's paths, what `freeze` freezes and what `init_from` would load, without training
(`describe`; the command is ann/transfer.py):

    ann transfer --config=configs/digits_finetune.py [--config.init_from=runs/digits_cnn]
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from absl import logging
from flax import nnx

from ann import arguments, artifact, atomic, cli, directory_kind, parallel, registry
from ann.config import ConfigError, recorded_config_flag
from ann.sharding import path_str, paths
from ann.train import build, checkpoint, freezing
from ann.train import state as state_lib

REPORT = "init_from.json"
STEP_CHOICES = ("best", "latest")
_OTHER_STEP = "start from another step (RUN:best, RUN:latest, RUN:STEP) or an export"


@dataclasses.dataclass(frozen=True)
class Source:
    """Where `config.init_from` points, resolved."""

    spec: str  # as written in the config
    kind: str  # "checkpoint" or "export" (a registry URI resolves to an export)
    directory: str  # the step directory or export directory read
    # The checkpoint step; for an export, the step its manifest's source names (None if none).
    step: int | None = None
    # An export's manifest sha256: what a registry recorded, else that of the manifest read.
    manifest_sha256: str | None = None
    # The run directory of a checkpoint; for an export, its manifest's source workdir.
    run: str | None = None


@dataclasses.dataclass
class Report:
    """What `init_from` did to each array of the new model, by path."""

    loaded: list[str] = dataclasses.field(default_factory=list)
    missing_in_source: list[str] = dataclasses.field(default_factory=list)
    # {"path", "source": [shape], "target": [shape]} (dtypes too when their kinds differ)
    shape_mismatched: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)  # {"path", "reason"}
    unused_in_source: list[str] = dataclasses.field(default_factory=list)
    cast: list[dict[str, str]] = dataclasses.field(default_factory=list)  # {"path", "from", "to"}
    loaded_values: int = 0
    total_values: int = 0

    def fresh(self) -> int:
        return len(self.missing_in_source) + len(self.shape_mismatched) + len(self.skipped)


def _error(spec: str, message: str) -> ConfigError:
    return ConfigError(f"config key 'init_from'={spec!r}: {message}")


# -- finding and reading the source ------------------------------------------------------------


def resolve(spec: str) -> Source:
    """Resolves `config.init_from` to a checkpoint step or an export directory on disk (a
    registry URI or an export directory through `ann.registry.resolve`)."""
    if spec.startswith(registry.URI_SCHEME):
        return _resolve_export(spec, spec)
    directory, which = spec, "best"
    head, sep, tail = spec.rpartition(":")
    if sep and head and (tail in STEP_CHOICES or arguments.digits(tail)):
        directory, which = head, tail
    kinds = directory_kind.of(directory)
    if directory_kind.EXPORT in kinds:
        if sep and directory == head:
            raise _error(
                spec, f"{directory} is an export, which holds one set of weights; drop ':{tail}'"
            )
        return _resolve_export(spec, directory)
    if directory_kind.RUN in kinds:
        return _resolve_checkpoint(spec, directory, which)
    if sep and head and directory_kind.RUN in directory_kind.of(head):  # RUN_DIR:bogus
        raise _error(
            spec, f"':{tail}' after the run {head} must be :best, :latest or a step number"
        )
    inside = _inside_run(directory)
    if inside is not None:
        raise _error(spec, inside)
    what = "is not a run or an export" if os.path.exists(directory) else atomic.absent(directory)
    raise _error(
        spec,
        f"{directory} {what}; use a run directory (with config.json and checkpoints, as "
        "RUN_DIR, RUN_DIR:best, RUN_DIR:latest or RUN_DIR:STEP), an export directory (with "
        "manifest.json) or a registry URI models:/NAME@ALIAS",
    )


def _inside_run(directory: str) -> str | None:
    """What `init_from` meant where `directory` is inside a run, not one (its step folder
    RUN/checkpoints/600 got only "is not a run or an export"): `D is a checkpoint of the run
    RUN; use --config.init_from=RUN:600` (RUN:latest for RUN/checkpoints, RUN:best for
    RUN/checkpoints_best, RUN or RUN:STEP below anything else); None outside a run."""
    found = directory_kind.inside(directory)
    if found is None or found[0] != directory_kind.RUN:
        return None
    run = found[1] if os.path.isabs(directory) else os.path.relpath(found[1])  # as given
    parts = os.path.relpath(os.path.abspath(directory), found[1]).split(os.sep)
    held = (directory_kind.CHECKPOINTS, directory_kind.CHECKPOINTS_BEST)
    if (folder := directory_kind.step_folder(directory)) is not None:
        step, saved = folder[1], directory_kind.saved_steps(found[1])
        if step not in (*saved.latest, *saved.best):  # its fix, RUN:STEP, was refused next
            steps = sorted(saved.latest)
            also = directory_kind.best_beside(sorted(saved.best), steps)
            there = f"its steps: {', '.join(map(str, steps))}{also}" if steps else also[2:]
            return f"{directory}: the run {run} has no step {step}; " + (
                there or "it holds no finished checkpoint"
            )
        return f"{directory} is a checkpoint of the run {run}; use --config.init_from={run}:{step}"
    if parts[0] in held and len(parts) == 1:
        which = "latest" if parts[0] == directory_kind.CHECKPOINTS else "best"
        return (
            f"{directory} holds the checkpoints of the run {run}; use --config.init_from="
            f"{run}:{which} (or {run}:STEP)"
        )
    return (
        f"{directory} is inside the run {run}; use --config.init_from={run} (its best "
        f"checkpoint), {run}:latest or {run}:STEP"
    )


def _resolve_checkpoint(spec: str, run_dir: str, which: str) -> Source:
    import orbax.checkpoint as ocp

    saved = directory_kind.saved_steps(run_dir)
    # The best checkpoint is the one step kept in checkpoints_best/ (see ann/train/checkpoint.py);
    # a step number is read where the run keeps it (checkpoints/, else the best step there).
    if which in STEP_CHOICES:
        sub = directory_kind.CHECKPOINTS_BEST if which == "best" else directory_kind.CHECKPOINTS
    else:
        sub = saved.holder(int(which)) or directory_kind.CHECKPOINTS
    directory = os.path.abspath(os.path.join(run_dir, sub))
    steps = sorted(saved.best if sub == directory_kind.CHECKPOINTS_BEST else saved.latest)
    if not steps:
        hint = " (the run never evaluated; try :latest)" if which == "best" else ""
        raise _error(spec, f"{directory} holds no finished checkpoint{hint}")
    step = steps[-1] if which in STEP_CHOICES else int(which)
    if step not in steps:
        steps_there = ", ".join(map(str, steps))
        also = directory_kind.best_beside(sorted(saved.best), steps)  # init_from=RUN:N takes too
        raise _error(spec, f"{directory} has no step {step}; its steps: {steps_there}{also}")
    path = ocp.step.find_step_path(directory, ocp.step.standard_name_format(), step=step)
    return Source(spec, "checkpoint", str(path / "state"), step, run=run_dir)


def _resolve_export(spec: str, model: str) -> Source:
    """A registry URI (in $ANN_REGISTRY, default ./registry) or an export directory."""
    try:
        resolved = registry.resolve(model, has_flag=False)  # ann train has no --registry
        manifest, raw = artifact.read_manifest_bytes(resolved.path, resolved.manifest_sha256)
    except (registry.RegistryError, artifact.IntegrityError) as e:
        raise _error(spec, str(e)) from e
    # The run and step the export came from, as its manifest names them (init_from.json had
    # them null), and the sha256 of the manifest read: `read` loads the weights it lists.
    made = manifest.get("source")
    made = made if isinstance(made, dict) else {}
    step, run = made.get("step"), made.get("workdir")
    return Source(
        spec,
        "export",
        resolved.path,
        step if type(step) is int else None,
        artifact.sha256_bytes(raw),
        run if isinstance(run, str) else None,
    )


def read(source: Source) -> dict[str, np.ndarray]:
    """The source's arrays by path: parameters and model state (e.g. BatchNorm statistics)."""
    if source.kind == "export":
        try:
            return artifact.load_weights(source.directory, source.manifest_sha256)
        except artifact.IntegrityError as e:
            raise _error(source.spec, str(e)) from e
    return _read_checkpoint(source)


def _read_checkpoint(source: Source) -> dict[str, np.ndarray]:
    """Only `params` and `model_state` of the saved TrainState, as host arrays: the optimizer
    state is neither read nor needed to match. The step's files are verified against its
    sha256 manifest and the arrays must be finite, as on a resume (ann/train/checkpoint.py); a step
    saved before manifests is read unverified, with a warning."""
    import orbax.checkpoint as ocp
    from etils import epath

    from ann.train import checkpoint as checkpoint_lib

    path = epath.Path(source.directory)
    step_dir = str(path.parent)
    try:
        problem = checkpoint_lib.verify_files(step_dir)
    except FileNotFoundError as e:
        problem = None
        if isinstance(e, checkpoint_lib.ManifestUnreadable):  # unverifiable alike
            cli.warn(f"{step_dir}: its {e}: reading it unverified")
        else:
            cli.warn(f"{step_dir} has no {checkpoint_lib.MANIFEST}: reading it unverified")
    except OSError as e:
        raise _error(
            source.spec, f"reading {step_dir} failed with an I/O error ({e}); check the disk"
        ) from e
    if problem is not None:
        raise _error(source.spec, f"checkpoint {step_dir} is damaged ({problem}); {_OTHER_STEP}")
    handler = ocp.PyTreeCheckpointHandler()
    try:
        saved = handler.metadata(path).tree
        item = {k: saved[k] for k in ("params", "model_state") if k in saved}
        if "params" not in item:
            raise _error(source.spec, f"{source.directory} holds no 'params'; not an ann run")
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
        restored = handler.restore(
            path,
            args=ocp.args.PyTreeRestore(item=item, restore_args=as_numpy, partial_restore=True),
        )
    except ConfigError:
        raise
    except Exception as e:  # a damaged or foreign checkpoint: say which, not Orbax's internals
        raise _error(
            source.spec, f"cannot read {source.directory} ({type(e).__name__}: {e})"
        ) from e
    finally:
        handler.close()
    arrays = {}
    for key_path, value in jax.tree_util.tree_leaves_with_path(restored):
        name = path_str(key_path)
        arrays[name.partition("/")[2]] = np.asarray(value)  # drop "params/" or "model_state/"
    bad = [
        n
        for n, x in arrays.items()
        if np.issubdtype(x.dtype, np.inexact) and not np.isfinite(x).all()
    ]
    if bad:
        raise _error(
            source.spec,
            f"checkpoint {step_dir} holds non-finite values (NaN or inf) in {', '.join(bad)}; "
            + _OTHER_STEP,
        )
    return arrays


# -- matching ----------------------------------------------------------------------------------


def targets(state: state_lib.TrainState) -> dict[str, Any]:
    """The arrays `init_from` may fill, by path: every parameter, and the model state's
    floating-point arrays (statistics; not RNG counters or other integer state)."""
    found = {path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(state.params)}
    for key_path, x in jax.tree_util.tree_leaves_with_path(state.model_state):
        if jax.dtypes.issubdtype(x.dtype, np.floating):
            found[path_str(key_path)] = x
    return found


def _layer(path: str) -> str:
    return path.rpartition("/")[0]


def _check_skip(regexes: Sequence[re.Pattern], names: Sequence[str]) -> None:
    """A ConfigError for an `init_from_skip` pattern that matches no array of the new model,
    showing real paths (as `config.freeze`'s check does): a typo ('haed/.*') loaded the layer
    it meant to keep fresh, without a word."""
    for regex in regexes:
        if names and not any(regex.fullmatch(n) for n in names):
            raise freezing.unmatched(
                "init_from_skip", regex.pattern, "array of the new model", names
            )


def match(
    target: Mapping[str, Any],
    source: Mapping[str, np.ndarray],
    skip: Sequence[str] = (),
    other_paths: Sequence[str] = (),
) -> Report:
    """Which of `target`'s arrays (path -> array or ShapeDtypeStruct) `source` can fill.

    `other_paths`: paths of the new model that are not targets (integer state) and so are not
    "unused" in the source either.
    """
    report = Report()
    regexes = [re.compile(p) for p in skip]
    _check_skip(regexes, list(target))
    for path, x in target.items():
        report.total_values += int(np.prod(x.shape))
        hit = next((r.pattern for r in regexes if r.fullmatch(path)), None)
        if hit is not None:
            report.skipped.append({"path": path, "reason": f"init_from_skip {hit!r}"})
        elif path not in source:
            report.missing_in_source.append(path)
        elif source[path].shape != tuple(x.shape) or _kind(source[path].dtype) != _kind(x.dtype):
            entry = {"path": path, "source": list(source[path].shape), "target": list(x.shape)}
            if _kind(source[path].dtype) != _kind(x.dtype):
                entry.update(source_dtype=str(source[path].dtype), target_dtype=str(x.dtype))
            report.shape_mismatched.append(entry)
        else:
            report.loaded.append(path)
    # A layer is loaded whole or not at all: keep a mismatched kernel's bias fresh too.
    broken = {_layer(m["path"]) for m in report.shape_mismatched} - {""}
    for path in [p for p in report.loaded if _layer(p) in broken]:
        report.loaded.remove(path)
        report.skipped.append(
            {"path": path, "reason": f"layer {_layer(path)!r} has a shape-mismatched array"}
        )
    for path in report.loaded:
        report.loaded_values += int(np.prod(target[path].shape))
        if np.dtype(source[path].dtype) != np.dtype(target[path].dtype):
            report.cast.append(
                {"path": path, "from": str(source[path].dtype), "to": str(target[path].dtype)}
            )
    known = set(target) | set(other_paths)
    report.unused_in_source = sorted(p for p in source if p not in known)
    return report


def _kind(dtype: Any) -> str:
    """float / int / bool / ...: a float32 checkpoint loads into a bfloat16 model, not an int."""
    return "float" if jax.dtypes.issubdtype(dtype, np.floating) else np.dtype(dtype).kind


def _shape(shape: Sequence[int]) -> str:
    return str(tuple(shape))  # as WORKDIR/parameters.tsv writes shapes


def summary(source: Source, report: Report) -> str:
    """The one log line: what came from where, how much stayed fresh."""
    where = source.directory
    if source.kind == "checkpoint":
        where = f"step {source.step} of {source.directory}"
    elif source.step is not None and source.run is not None:
        where += f": step {source.step} of the run {source.run}"
    share = report.loaded_values / max(report.total_values, 1)
    return (
        f"init_from {source.spec} ({source.kind}, {where}): loaded {len(report.loaded)} of "
        f"{len(report.loaded) + report.fresh()} arrays ({share:.1%} of {report.total_values:,} "
        f"values); kept fresh: {len(report.missing_in_source)} missing in source, "
        f"{len(report.shape_mismatched)} shape-mismatched, {len(report.skipped)} skipped; "
        f"{len(report.unused_in_source)} source arrays unused"
    )


def details(report: Report) -> list[str]:
    """The lists, one log line each (empty ones left out)."""
    lines = []
    if report.loaded:
        lines.append("init_from loaded: " + ", ".join(report.loaded))
    if report.missing_in_source:
        lines.append(
            "init_from missing in source (kept fresh): " + ", ".join(report.missing_in_source)
        )
    if report.shape_mismatched:
        lines.append(
            "init_from shape-mismatched (kept fresh): "
            + ", ".join(
                f"{m['path']} {_shape(m['source'])} in source vs {_shape(m['target'])}"
                for m in report.shape_mismatched
            )
        )
    if report.skipped:
        lines.append(
            "init_from skipped (kept fresh): "
            + ", ".join(f"{s['path']} ({s['reason']})" for s in report.skipped)
        )
    if report.unused_in_source:
        lines.append("init_from unused in source: " + ", ".join(report.unused_in_source))
    if report.cast:
        lines.append(
            "init_from cast: "
            + ", ".join(f"{c['path']} {c['from']}->{c['to']}" for c in report.cast)
        )
    return lines


# -- the loop's entry points -------------------------------------------------------------------


class Loaded(NamedTuple):
    """A source read and matched against a model (`load`), ready for `init_from`."""

    source: Source
    report: Report
    arrays: dict[str, np.ndarray]


def _match_state(state: Any, source: Mapping[str, Any], skip: Sequence[str]) -> Report:
    """`match` of `state`'s arrays against the source's (arrays, or anything with a shape and
    a dtype): `load` refuses a source of which this loads nothing."""
    every = paths(state.params) + paths(state.model_state)
    return match(targets(state), source, skip, every)


def load(spec: str, state: Any, skip: Sequence[str] = ()) -> Loaded:
    """Resolves and reads `spec` and matches it against `state` (a train state, or its
    abstract shapes); refuses, with a ConfigError, a source that shares nothing with the model."""
    source = resolve(spec)
    arrays = read(source)
    target = targets(state)
    report = _match_state(state, arrays, skip)
    if not report.loaded:
        theirs, ours = sorted(arrays), list(target)
        same_path = ""
        if report.shape_mismatched:  # the same layer, another size: the likelier mistake
            shown = ", ".join(
                f"{m['path']} {_shape(m['source'])} there, {_shape(m['target'])} here"
                for m in report.shape_mismatched[:3]
            )
            same_path = f"; {len(report.shape_mismatched)} share a path but not a shape: {shown}"
        # The config file a source run was made from tells its model at a glance.
        recorded = recorded_config_flag(source.run) if source.run is not None else ""
        made = f" (it was made with --config={recorded})" if recorded else ""
        raise _error(
            spec,
            f"no array of it matches this model by path and shape, so nothing would load "
            f"(source: {len(theirs)} arrays such as "
            f"{', '.join(f'{p} {_shape(np.shape(arrays[p]))}' for p in theirs[:4])}; this "
            f"model: {', '.join(f'{p} {_shape(target[p].shape)}' for p in ours[:4])}"
            f"{same_path}); is it the source of another model{made}, or of this one with other "
            "sizes (the model.* settings in its config.json)?",
        )
    if source.run is not None and source.kind == "checkpoint" and jax.process_index() == 0:
        # A diverged or interrupted source loaded in silence; `ann export` of it says so.
        cli.note_unfinished(source.run, "init_from: ")
    return Loaded(source, report, arrays)


def loads_into(spec: str, state: Any, skip: Sequence[str] = ()) -> bool:
    """Whether `init_from=spec` would load anything into `state`'s model, by `load`'s own rule
    (some array of the model matches one of the source by path, shape and kind), judged from the
    source's shapes: a checkpoint's metadata, not its arrays. False when `spec` does not resolve
    or cannot be read."""
    try:
        source = resolve(spec)
        shapes = read(source) if source.kind == "export" else _checkpoint_shapes(source)
    except ConfigError:
        return False
    return bool(_match_state(state, shapes, skip).loaded)


def _checkpoint_shapes(source: Source) -> dict[str, Any]:
    """`checkpoint.saved_shapes` of `source`'s checkpoint; ConfigError naming it where its
    metadata cannot be read (a damaged or foreign checkpoint)."""
    try:
        return checkpoint.saved_shapes(source.directory)
    except Exception as e:
        raise _error(source.spec, f"cannot read {source.directory} ({type(e).__name__})") from e


def init_from(
    state: state_lib.TrainState,
    loaded: Loaded,
    tx: optax.GradientTransformation,
    shardings: Any,
    workdir: str,
) -> state_lib.TrainState:
    """The fresh, placed `state` with `loaded`'s matching arrays put onto their shardings and
    the optimizer state re-initialized; logs and writes WORKDIR/init_from.json."""
    source, report, arrays = loaded.source, loaded.report, loaded.arrays
    loaded_paths = set(report.loaded)

    def fill(key_path: tuple, x: Any, sharding: Any) -> Any:
        name = path_str(key_path)
        if name not in loaded_paths:
            return x  # already on its sharding
        # Host data, the same in every process: `place` builds the global array without a
        # collective, however the parameter is split.
        return parallel.place(np.asarray(arrays[name], dtype=x.dtype), sharding)

    params = jax.tree_util.tree_map_with_path(fill, state.params, shardings.params)
    model_state = jax.tree_util.tree_map_with_path(fill, state.model_state, shardings.model_state)
    # Adam's moments do not depend on the values, but an optimizer may (a parameter average):
    # initialize it again, on the device, straight onto the optimizer state's shardings.
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    logging.info("%s", summary(source, report))
    for line in details(report):
        logging.info("%s", line)
    if jax.process_index() == 0:
        write_report(workdir, source, report)
    return state.replace(params=params, model_state=model_state, opt_state=opt_state)


def write_report(workdir: str, source: Source, report: Report) -> str:
    """WORKDIR/init_from.json, written atomically; returns its path."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, REPORT)
    record = {"init_from": dataclasses.asdict(source), **dataclasses.asdict(report)}
    with atomic.replacing(path) as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    return path


# -- listing paths -----------------------------------------------------------------------------


def describe(config: Any) -> list[str]:
    """One tab-separated line per array of the config's model: path, shape, dtype, whether it
    changes in training (trained / frozen parameter; statistics / fixed statistics of a frozen
    BatchNorm; other state) and, with `init_from` set, where it starts."""
    setup = build.build(config, build.make_experiment(config), for_training=False)
    state = setup.state
    frozen = freezing.frozen_paths(state.params, tuple(config.freeze))
    fixed = freezing.fixed_statistics(
        nnx.merge(setup.model_def.train, state.params, state.model_state)
    )
    start: dict[str, str] = {}
    if config.init_from:
        report = load(config.init_from, state, tuple(config.init_from_skip)).report
        start.update({p: "loaded" for p in report.loaded})
        start.update({c["path"]: f"loaded (cast {c['from']}->{c['to']})" for c in report.cast})
        start.update({p: "fresh (missing in source)" for p in report.missing_in_source})
        start.update(
            {m["path"]: f"fresh (source {_shape(m['source'])})" for m in report.shape_mismatched}
        )
        start.update({s["path"]: f"fresh ({s['reason']})" for s in report.skipped})
    lines = ["path\tshape\tdtype\tupdate" + ("\tinit_from" if config.init_from else "")]
    for part, tree in (("params", state.params), ("model_state", state.model_state)):
        for key_path, x in jax.tree_util.tree_leaves_with_path(tree):
            name = path_str(key_path)
            if part == "params":
                update = "frozen" if name in frozen else "trained"
            elif not jax.dtypes.issubdtype(x.dtype, np.floating):
                update = "state"
            else:
                update = "fixed statistics" if _layer(name) in fixed else "statistics"
            line = f"{name}\t{_shape(x.shape)}\t{np.dtype(x.dtype).name}\t{update}"
            lines.append(line + (f"\t{start.get(name, 'fresh')}" if config.init_from else ""))
    return lines
