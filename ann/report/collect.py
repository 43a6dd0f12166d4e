"""What a report is computed from: a model (a trained run's checkpoint, or an export) and its
predictions over whole data splits.

`from_workdir` restores a run (`ann.train.build.restore_model`) and runs its experiment's
`predict`; `from_model` resolves an export directory or a registry URI (`ann.registry.resolve`),
rebuilds the experiment and the data split from the manifest's config and data, and runs the
exported function, so the report scores exactly what is served. Both give a `Source`;
`collect(source, "validation" | "test")` its `Predictions` over one split, and
`prediction_variance` how much repeated inference on the same rows differs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
import numpy as np

from ann.report.predictions import Batch, Predictions

SPLITS = ("validation", "test")  # what --split accepts: the run's validation and test splits
VARIANCE_RUNS = 3  # inference repeated this many times on the same rows (issue 14, part 5)
VARIANCE_ROWS = 512  # on at most this many rows of the validation split
TINY = np.finfo(np.float32).tiny  # log(p) of an export's probability: p clipped here, not log 0


@dataclasses.dataclass(frozen=True)
class Source:
    """A model to report on: who it is, its experiment and config, and a batch predictor."""

    identity: dict[str, Any]  # report.json's "model" (see docs/report.md)
    experiment: Any
    config: ml_collections.ConfigDict
    # One batch of raw inputs (exactly `batch_size` rows) -> outputs as host arrays.
    predict_batch: Callable[[Batch], Batch]
    batch_size: int
    # Where its splits are read (ann.data.data_dir: where the run or export read them); None:
    # the config's data.data_dir.
    data_dir: str | None = None


def check_splits(splits: Sequence[str]) -> None:
    """Raises FlagError (a ValueError) unless `splits` are distinct names among SPLITS, with
    one line naming `--split` (`ann report`'s) and the fix; `cli.as_arguments` names it as
    `write_report`'s `splits`. Raises TypeError for a str or another type than a sequence of
    str (a str "test" was read as its letters)."""
    import difflib

    from ann.cli import FlagError

    if isinstance(splits, str) or not (
        isinstance(splits, Sequence) and all(isinstance(s, str) for s in splits)
    ):
        raise TypeError(
            f"splits: expected a list of split names among {', '.join(SPLITS)}, e.g. "
            f"['test'], got {splits!r}"
        )
    unknown = [s for s in splits if s not in SPLITS]
    if "train" in unknown:  # a real split, not a typo: said why it is not offered
        raise FlagError(
            f"--split={','.join(splits)}: a report judges held-out rows, and the model was fit "
            f"to train's; choose among {', '.join(SPLITS)}"
        )
    close = [
        [n for n in SPLITS if n.startswith(s)] or difflib.get_close_matches(s, SPLITS, n=1)
        for s in unknown
    ]
    if unknown and all(close):
        raise FlagError(
            f"--split={','.join(splits)}: unknown split {unknown[0]!r}; did you mean "
            f"{close[0][0]!r}? (splits: {', '.join(SPLITS)})"
        )
    if not splits or unknown or len(set(splits)) != len(splits):
        raise FlagError(
            f"--split={','.join(splits)!r} must be distinct names among "
            f"{', '.join(SPLITS)}" + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )


def _batch_size(config: ml_collections.ConfigDict) -> int:
    return max(1, min(int(config.batch_size), 512))


def from_workdir(workdir: str, step: int | str = "best") -> Source:
    """The run in `workdir` at `step` ("best", "latest" or a step number), checked first as
    `ann report --workdir --step` checks them: ValueError (FlagError) naming the argument for
    a `workdir` that is no trained run (missing, an export, a registry, ...) or a `step` it
    did not save, TypeError for a wrong type (None, a float step). Then ConfigError
    (config.json) or CheckpointError (the checkpoint)."""
    from ann import artifact, cli

    workdir = artifact.path_argument(workdir, "workdir", "a training run's directory as a str")
    step = cli.step_argument(step)
    with cli.as_arguments(("workdir", "step")):
        cli.check_trained_run(workdir, str(step))
    return restore(workdir, step)


def restore(workdir: str, step: int | str = "best") -> Source:
    """`from_workdir` without its checks (`ann report` checked its flags so already)."""
    import jax
    from flax import nnx

    from ann import config as config_lib
    from ann.data import data_dir as data_dir_lib
    from ann.experiment import check_outputs, predict_outputs
    from ann.imports import recorded_in
    from ann.report.tasks import check_experiment
    from ann.train.build import restore_model

    latest = config_lib.latest(workdir)
    with recorded_in(f"the run in {workdir}"):  # not a config the user gave
        check_experiment(latest.experiment)  # before a checkpoint is restored
    data_dir = data_dir_lib.for_run(latest, workdir)  # the run's data, not this shell's
    experiment, model, step, config = restore_model(workdir, step, data_dir)
    graphdef, state = nnx.split(model)
    has_logits = callable(getattr(experiment, "logits", None))
    # As export and train check it: a run trained before train did was reported with an output
    # its output_signature does not declare, which export refuses.
    outputs = predict_outputs(
        experiment, lambda i: experiment.predict(nnx.merge(graphdef, state, copy=True), i)
    )
    check_outputs(experiment, outputs, config.model.name)
    # Fixed once, as an export fixes it: predict then flags against a constant, not a threshold
    # over the calibration rows computed again in every batch's program.
    if callable(fit := getattr(experiment, "fit_threshold", None)):
        fit(model)

    @jax.jit
    def infer(state: Any, inputs: Batch) -> Batch:
        module = nnx.merge(graphdef, state)
        outputs = dict(experiment.predict(module, inputs))
        if has_logits:
            outputs["logits"] = experiment.logits(module, inputs)
        return outputs

    identity = {"kind": "workdir", "workdir": os.path.abspath(workdir), "step": int(step)}
    return Source(
        identity=identity,
        experiment=experiment,
        config=config,
        predict_batch=lambda inputs: jax.device_get(infer(state, inputs)),
        batch_size=_batch_size(config),
        data_dir=data_dir,
    )


def from_model(spec: str | os.PathLike, registry: str | None = None) -> Source:
    """An export directory (a str or path) or a registry URI (models:/NAME/3, models:/NAME@alias),
    TypeError naming `spec` for another type. The config
    and data split come from the manifest; outputs from the exported function. For
    classification, "logits" is log(probabilities) (clipped at float32's tiny), times the
    manifest's `calibration.temperature` when it has one: the raw logits up to a per-row
    constant, which softmax and the calibration metrics ignore. Raises RegistryError (spec),
    IntegrityError (files), ConfigError (config)."""
    from ann import artifact, data
    from ann import config as config_lib
    from ann.data import data_dir as data_dir_lib
    from ann.imports import recorded_in
    from ann.registry import resolve
    from ann.report.tasks import check_experiment
    from ann.train.build import make_experiment

    # A pathlib.Path as a str: the report's identity keeps it, and JSON wrote no Path (it
    # failed once the whole report was computed).
    spec = artifact.path_argument(spec, "spec", "an export directory or a registry URI as a str")
    resolved = resolve(spec, registry)
    model = resolved.load()
    config = config_lib.from_values(model.manifest["config"])
    # The manifest's config, not one the user gave: an experiment of the user's own that does
    # not import here is the export's (its project off PYTHONPATH).
    where = f"the export at {resolved.path}"
    if os.path.abspath(spec) != os.path.abspath(resolved.path):  # a registry URI
        where = f"{spec} ({where})"
    with recorded_in(where):
        check_experiment(config.experiment)  # before its data is read and its function compiled
        experiment = make_experiment(config)
    dc = config.data
    # The data the export read (its manifest's data.data_dir), not this shell's $TFDS_DATA_DIR.
    recorded = model.manifest.get("data", {}).get("data_dir")
    data_dir = data_dir_lib.choose(dc.data_dir, dc.name, recorded, f"the export at {resolved.path}")
    experiment.setup(data.load(dc.name, dc.train_split, data_dir, dc.cache, "data.train_split"))
    temperature = float((model.manifest.get("calibration") or {}).get("temperature") or 1.0)
    if hasattr(experiment, "temperature"):
        experiment.temperature = temperature  # what the exported graph divides the logits by
    if hasattr(experiment, "fitted_threshold") and model.manifest.get("threshold"):
        # What its `flagged` applies, said to be the export's (`deployed_threshold`).
        experiment.fitted_threshold = {**model.manifest["threshold"], "from_export": True}
    batch_size = _batch_size(config)
    run = model.compile(batch_size)
    has_logits = callable(getattr(experiment, "logits", None))
    # An export written before seq2seq's answers were turned into reading order in its graph
    # (no `outputs.tokens.answers_turned`) answers `add` least-significant digit first: turned
    # here, as the targets are compared in reading order (`task_metrics.answers`).
    tokens_spec = model.manifest.get("outputs", {}).get("tokens", {})
    turn = bool(getattr(experiment, "answers_turned", None)) and (
        "answers_turned" not in tokens_spec
    )

    def predict_batch(inputs: Batch) -> Batch:
        outputs = run(inputs)
        if turn:
            turned = experiment.reading_order(outputs["tokens"], inputs["source"])
            outputs["tokens"] = np.asarray(turned, outputs["tokens"].dtype)
        if has_logits and "probabilities" in outputs:
            probabilities = outputs["probabilities"].astype(np.float32)
            outputs["logits"] = np.log(np.maximum(probabilities, TINY)) * temperature
        return outputs

    identity = model_identity(spec, resolved, model)
    if has_logits:  # what the export serves; a regression's `prediction` has no softmax
        method = (model.manifest.get("calibration") or {}).get("method")
        identity["calibration"] = {"method": method, "temperature": temperature}
    return Source(identity, experiment, config, predict_batch, batch_size, data_dir)


def model_identity(spec: str, resolved: Any, model: Any) -> dict[str, Any]:
    """report.json's `model` for `--model=spec` (`resolved` by `ann.registry.resolve`, `model`
    its loaded `artifact.Model`): named as every other command names it
    (`Resolved.registered_as`): a registry URI, or a registered copy taken out of the registry
    (its `registry.json`), by its registry name and version; a plain export by its manifest's
    name, version null. Raises IntegrityError for a copy whose manifest is not the one
    registered."""
    registered = resolved.registered_as(model.manifest_sha256)
    name, version = registered or (model.name, None)
    source = model.manifest.get("source", {})
    return {
        "kind": "registry" if resolved.version else "export",
        "spec": spec,
        "path": resolved.path,
        "name": name,
        "version": version,
        "manifest_sha256": model.manifest_sha256,
        "workdir": source.get("workdir"),
        "step": source.get("step"),
    }


def split_of(config: ml_collections.ConfigDict, split: str) -> str:
    """The data set's split (TFDS syntax) that `split` ("validation" or "test") names for this
    run: `data.validation_split`, or the first of `data.eval_splits`. Raises ValueError."""
    if split == "validation":
        return config.data.validation_split
    if split not in SPLITS:  # "tst" was "the run has no tst split (data.eval_splits is empty)"
        raise ValueError(f"split {split!r} must be one of {', '.join(SPLITS)}")
    if config.data.eval_splits:
        return config.data.eval_splits[0]
    raise ValueError(f"the run has no {split} split (data.eval_splits is empty)")


def predict(source: Source, rows: Batch) -> Batch:
    """`source`'s outputs for every row of `rows` (raw, rows first), in fixed-size batches (the
    last padded with copies of its first row, the padding dropped): one compilation."""
    keys = list(source.experiment.input_signature())
    count = len(rows[keys[0]])
    size = source.batch_size
    parts: list[Batch] = []
    for start in range(0, count, size):
        batch = {k: rows[k][start : start + size] for k in keys}
        used = len(batch[keys[0]])
        if used < size:
            batch = {
                k: np.concatenate([v, np.repeat(v[:1], size - used, 0)]) for k, v in batch.items()
            }
        outputs = source.predict_batch(batch)
        parts.append({k: np.asarray(v)[:used] for k, v in outputs.items()})
    if not parts:
        raise ValueError("the split has no rows")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def collect(source: Source, split: str, validation: Predictions | None = None) -> Predictions:
    """`source`'s Predictions over the run's `split` ("validation" or "test"), every row;
    `validation` (the validation split's, for a test split) is kept in it."""
    from ann import data

    dc = source.config.data
    name = split_of(source.config, split)
    key = "data.validation_split" if split == "validation" else "data.eval_splits"
    data_dir = dc.data_dir if source.data_dir is None else source.data_dir
    table = data.load(dc.name, name, data_dir, dc.cache, key)
    rows = table.rows(np.arange(len(table)))
    return Predictions(
        split,
        rows,
        predict(source, rows),
        source.experiment,
        source.config,
        predict=lambda inputs: predict(source, inputs),
        validation=None if split == "validation" else validation,
    )


def prediction_variance(
    source: Source, rows: Batch, runs: int = VARIANCE_RUNS, limit: int = VARIANCE_ROWS
) -> dict[str, Any]:
    """Runs inference `runs` times on the same (at most `limit`) rows and returns
    {"runs", "rows", "max_abs_diff": the largest |difference| from the first run over every
    float output (0.0 when inference is deterministic, as on CPU), "by_output": the same per
    output, "labels_changed": rows whose integer outputs differ in any run}."""
    keys = list(source.experiment.input_signature())
    sample = {k: rows[k][:limit] for k in keys}
    results = [predict(source, sample) for _ in range(runs)]
    by_output: dict[str, float] = {}
    changed = np.zeros(len(sample[keys[0]]), bool)
    for name, first in results[0].items():
        if np.issubdtype(first.dtype, np.floating):
            diffs = [
                np.max(np.abs(r[name].astype(np.float64) - first), initial=0.0) for r in results
            ]
            by_output[name] = float(max(diffs))
        else:
            for r in results[1:]:
                changed |= (r[name] != first).reshape(len(changed), -1).any(-1)
    return {
        "runs": runs,
        "rows": int(len(changed)),
        "max_abs_diff": max(by_output.values(), default=0.0),
        "by_output": by_output,
        "labels_changed": int(changed.sum()),
    }
