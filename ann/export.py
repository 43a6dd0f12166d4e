"""Export a trained run for serving: one `jax.export` graph, safetensors weights, a manifest.

    ann export --workdir=runs/digits_cnn --out=exports/digits_cnn [--step=best]
        [--name=digits] [--platforms=cpu,cuda,tpu]

The graph is the experiment's `predict` (the training preprocessing, the model in eval mode,
the outputs) over `(weights, inputs)` with a symbolic batch axis, so serving runs exactly what
training evaluated. The layout and the loader (jax only) are in `ann/artifact.py`. The manifest
holds:

- `name`, `format`, `platforms`; `inputs` and `outputs`: name -> dtype and shape, -1 for batch;
- `source`: the run's workdir and step, and how that step was chosen (`selected_by`: for
  `--step=best`, the run's `best_metric`, a `val/` metric of the validation split, and its
  mode); `data`: the data set, its version and which split is which (train, validation,
  eval = test); `config`: the resolved config; `metrics`: the run's metrics at that step,
  labelled by split: `val/...` (validation, what chose it) and `eval/...` (test, reported);
  `git`: commit and dirty flag; `versions`: jax, jaxlib, flax;
- `calibration` (classification): the temperature T fitted on the validation split and folded
  into the graph (probabilities = softmax(logits / T)), and ECE, MCE, Brier and NLL before and
  after on the validation and test splits (see `ann/calibrate.py`; `config.calibration`);
- `reference`: statistics for drift checks (see `reference_statistics`) of the training
  split's inputs and of the model's outputs on the held-out reference rows, and
  `reference.sample`: what reference.safetensors holds (`sample_rows` of rows held out of
  training, `held_out_rows`: the validation split, or an anomaly detector's calibration rows;
  their inputs, `inputs/NAME`, and the model's outputs on them, `outputs/NAME`, which drift
  tests a window against; `split` and `held_out` say which rows);
- `files`: sha256 and size of every other file.

The export is written into a temporary directory next to `--out` and renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import flags

from ann import artifact, atomic, shadowing

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 10
CONFIDENCE_BINS = 15  # as ECE's bins
MAX_FEATURES = 1024  # above this many values per example, summarize per channel (last axis)
REFERENCE_ROWS = 10_000
SAMPLE_ROWS = 5_000  # reference.safetensors: at most this many held-out rows
SAMPLE_SEED = 0
PREDICT_BATCH = 512


def _round(x: np.ndarray | float) -> Any:
    """JSON-friendly numbers with 6 significant digits: the manifest stays small and readable."""
    return np.vectorize(lambda v: float(f"{v:.6g}"), otypes=[float])(np.asarray(x)).tolist()


def feature_summary(values: np.ndarray) -> dict[str, Any]:
    """Per-feature statistics of `values` [rows, ...]: each value position is a feature (or each
    channel, when an example has more than MAX_FEATURES values)."""
    rows = values.shape[0]
    per_example = int(np.prod(values.shape[1:], dtype=np.int64))
    by = "position" if per_example <= MAX_FEATURES else "channel"
    x = values.reshape(rows, -1) if by == "position" else values.reshape(-1, values.shape[-1])
    x = x.astype(np.float64)
    edges, counts = [], []
    for column in x.T:
        c, e = np.histogram(column, bins=HISTOGRAM_BINS)
        edges.append(e)
        counts.append(c)
    return {
        "rows": rows,
        "features_by": by,  # position: row-major index into the per-example shape
        "mean": _round(x.mean(0)),
        "std": _round(x.std(0)),
        "min": _round(x.min(0)),
        "max": _round(x.max(0)),
        "quantiles": {"q": list(QUANTILES), "values": _round(np.quantile(x, QUANTILES, axis=0).T)},
        "histogram": {"edges": _round(np.stack(edges)), "counts": np.stack(counts).tolist()},
    }


def _trace(
    infer: Any, weights: dict[str, np.ndarray], signature: dict[str, Any], platforms: Sequence[str]
) -> Any:
    """`infer(weights, inputs)` exported by jax.export for `platforms`, its batch symbolic."""
    import jax

    (batch,) = jax.export.symbolic_shape("batch")
    input_specs = {
        k: jax.ShapeDtypeStruct((batch, *v["shape"]), np.dtype(v["dtype"]))
        for k, v in signature.items()
    }
    weight_specs = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in weights.items()}
    return jax.export.export(jax.jit(infer), platforms=tuple(platforms))(weight_specs, input_specs)


def _check_outputs(exported: Any, experiment: Any, model: str) -> None:
    """Raises ConfigError unless the traced graph returns what the manifest will say it does
    (`experiment.output_signature()`, per row; `ann.experiment.check_outputs`): a model of the
    wrong width was exported with a manifest that misdescribed it, and served so."""
    import jax

    from ann import experiment as experiment_lib

    outputs = jax.tree_util.tree_unflatten(exported.out_tree, exported.out_avals)
    experiment_lib.check_outputs(experiment, outputs, model)


def category_summary(values: np.ndarray, spec: dict[str, Any]) -> dict[str, Any]:
    """A categorical input's or output's statistics (integer values [rows, ...] indexing
    `spec["names"]`): `rows`, and the `distribution` (shares) and `counts` of each category
    over every position, the entry's `padding` id left out (`ann.monitor.drift.category_values`,
    what drift compares)."""
    values = np.asarray(values)
    kept = values.reshape(-1)
    pad = spec.get("padding")
    if pad is not None:
        kept = kept[kept != pad["id"]]
    counts = np.bincount(kept.astype(np.int64), minlength=len(spec["names"]))
    return {
        "rows": int(values.shape[0]),
        "distribution": _round(counts / max(counts.sum(), 1)),
        "counts": counts.tolist(),
    }


def _categorical(spec: dict[str, Any]) -> bool:
    """`ann.monitor.drift.categorical`: an integer entry with `names` (classes, a vocabulary)."""
    return "names" in spec and np.issubdtype(np.dtype(spec["dtype"]), np.integer)


def reference_statistics(
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    output_signature: dict[str, dict[str, Any]],
    input_signature: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Statistics of inputs (the training split's) and of the model's outputs (on the held-out
    reference rows, in an export: `held_out_rows`), for drift checks.

    Inputs: `feature_summary` each, but a categorical input (an integer input with `names` in
    `input_signature`: token ids, class indices) its category distribution (`category_summary`:
    a token id's mean and std per position, as was written, mean nothing). Outputs: a
    categorical output (one with `names`) gets its class distribution (`category_summary`); a
    float output gets `feature_summary`, and, when it has one axis (e.g. probabilities), a
    histogram of its per-row maximum (the confidence) over 15 bins in [0, 1].
    """
    result: dict[str, Any] = {"inputs": {}, "outputs": {}}
    for name, values in inputs.items():
        spec = (input_signature or {}).get(name, {})
        if _categorical(spec):
            result["inputs"][name] = category_summary(values, spec)
        else:
            result["inputs"][name] = feature_summary(values)
    for name, values in outputs.items():
        spec = output_signature[name]
        if "names" in spec:
            result["outputs"][name] = category_summary(values, spec)
            continue
        summary = feature_summary(values)
        if len(spec["shape"]) == 1:
            c, e = np.histogram(values.max(-1), bins=CONFIDENCE_BINS, range=(0.0, 1.0))
            summary["max_histogram"] = {"edges": _round(e), "counts": c.tolist()}
        result["outputs"][name] = summary
    return result


def sample_rows(rows: int, size: int = SAMPLE_ROWS, seed: int = SAMPLE_SEED) -> np.ndarray:
    """The rows of the drift reference sample, of `rows` held out: `min(size, rows)` distinct
    indices into them,
    sorted, drawn uniformly without replacement by a generator seeded with `seed`: the
    distribution a reservoir sample (Vitter's algorithm R) of the split read in order has; the
    split is read by index, so the indices are drawn directly. The same in every export of the
    same split size."""
    if rows <= size:
        return np.arange(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, size, replace=False))


def _predict_all(call: Any, weights: dict, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The exported function on every row of `inputs`, PREDICT_BATCH rows at a time (fewer
    when there are fewer rows). The last chunk is padded with copies of its last row to the
    same size, so `call` (jitted) compiles once."""
    import jax

    rows = len(next(iter(inputs.values())))
    size = min(rows, PREDICT_BATCH)
    outputs = []
    for start in range(0, rows, size):
        index = np.minimum(np.arange(start, start + size), rows - 1)
        got = jax.device_get(call(weights, {k: v[index] for k, v in inputs.items()}))
        outputs.append({k: v[: rows - start] for k, v in got.items()})
    return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}


def reference_sample(
    split: Any,
    pool: np.ndarray,
    names: Sequence[str],
    call: Any,
    weights: dict,
    known: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The drift reference sample: `sample_rows` of the rows `pool` (indices into the split
    `split`, e.g. every row of the validation split), their manifest entry and the arrays of
    reference.safetensors, `inputs/NAME` (the raw model inputs `names`, as the signature takes
    them) and `outputs/NAME` (the exported graph `call`'s outputs on them). `known`: `call`'s
    outputs on the split's first rows, taken for the sampled rows among them (an anomaly
    detector's calibration rows, of the training split the export already ran) instead of
    predicted again."""
    index = np.asarray(pool)[sample_rows(len(pool))]
    rows = split.rows(index)
    inputs = {k: np.ascontiguousarray(rows[k]) for k in names}
    have = len(next(iter(known.values()))) if known else 0
    if have and index.max() < have:
        outputs = {k: v[index] for k, v in known.items()}
    else:
        outputs = _predict_all(call, weights, inputs)
    _check_finite(outputs, f"held-out ({split.split})", index)
    arrays = {f"inputs/{k}": v for k, v in inputs.items()}
    arrays.update({f"outputs/{k}": v for k, v in outputs.items()})
    entry = {
        "file": artifact.REFERENCE,
        "rows": len(index),
        "of": len(pool),
        "split": split.split,
        "seed": SAMPLE_SEED,
    }
    return entry, arrays


def held_out_rows(experiment: Any, train: Any, validation: Any) -> tuple[Any, np.ndarray, str]:
    """The rows the drift reference is drawn from, held out of training: a model is more
    confident on the rows it fit than on anything new (the digits CNN's confidence on 20
    windows of 200 test digits read as drifted in 9 against its training rows), and an anomaly
    detector scores them lower (the sensor autoencoder's `output:score` in 20 of 20 windows of
    normal test rows). (split, indices into it, in words): the experiment's own held-out
    training rows where it has them (`experiment.held_out_rows()`: an anomaly detector's normal
    calibration rows, which its validation split's injected anomalies are not like), else the
    whole validation split, which every data set carves from its training rows (NannyML's
    rule: the reference is a held-out evaluation set, never the training set)."""
    own = getattr(experiment, "held_out_rows", None)
    found = own() if own is not None else None
    if found is not None:
        index, words = found
        return train, np.asarray(index), words
    return (
        validation,
        np.arange(len(validation)),
        f"{validation.split} split, held out of training",
    )


def _git() -> dict[str, Any]:
    """The commit of the code that exported (ann's checkout), and whether it had local edits."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(
            ["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "-C", here, "status", "--porcelain"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def init_from_source(workdir: str) -> dict[str, Any]:
    """{"init_from": where the run's fresh start took its weights}, as WORKDIR/init_from.json
    records it (`spec` as written, `kind` checkpoint or export, the `directory` read, its
    `step`, `run` and `manifest_sha256` where known), or {} for a run started from random
    weights: the export's `source` names its parent model by what was loaded. The config's
    `init_from` names what the fresh start was given, which a resume cannot change. A file
    that is no such record (damaged, edited) is one `warning:` line and {}."""
    from ann import cli
    from ann.train import transfer

    path = os.path.join(workdir, transfer.REPORT)
    record, why = atomic.read_json(path)
    if record is None and why is None:
        return {}
    source = record.get("init_from") if isinstance(record, dict) else None
    if not isinstance(source, dict):
        cli.warn(
            f"{path} {why or 'holds no init_from record'}: the export's source names no "
            "init_from (where the run's weights were loaded from)"
        )
        return {}
    return {"init_from": source}


def _eval_metrics(workdir: str, step: int) -> dict[str, float]:
    """The validation (`val/`) and test (`eval/`, `eval_<split>/`) metrics the run logged at
    `step` (metrics.jsonl). A file that is missing or holds no record (emptied) is warned
    about: the export then carries no metrics, which it did in silence; so is one whose torn
    last line (skipped) may have held the step's eval, where no other record has it. Raises
    MetricsFileError for a damaged line or a file that cannot be read (`read_records`' rule)."""
    from ann.train.writers import records_and_torn  # "nan"/"inf" strings back to floats

    path = os.path.join(workdir, "metrics.jsonl")
    records, torn = records_and_torn(path)
    if not records:  # a run that trained logged its start-up at step 0 at least
        from ann import cli

        what = "holds no record (emptied?)" if os.path.exists(path) else "does not exist"
        cli.warn(
            f"{path} {what}: the export carries no metrics of step {step} (`ann report` "
            "computes them anew from the checkpoint)"
        )
    metrics: dict[str, float] = {}
    for record in records:
        if record.get("step") == step:
            metrics.update(
                {
                    k: v
                    for k, v in record.items()
                    if k.startswith(("val/", "eval")) and not k.endswith("/seconds")
                }
            )
    if records and torn and not metrics:
        from ann import cli

        cli.warn(
            f"{path} holds no eval record of step {step} (its torn last line may have held "
            f"it): the export carries no metrics of step {step} (`ann report` computes them "
            "anew from the checkpoint)"
        )
    return metrics


def _signature_json(signature: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: {**v, "shape": [-1, *v["shape"]]} for k, v in signature.items()}


def _check_agrees(
    infer: Any, weights: dict, inputs: dict, exported: dict, platform: str = "cpu"
) -> None:
    """The exported graph's outputs on `inputs` must be the training code's (`infer`: its
    predict, the temperature included, compiled apart from the export), both run on a device
    of `platform` ("cpu", "gpu", "tpu"), or nothing is written: raises AssertionError naming
    the output."""
    import jax

    sample = {k: v[:PREDICT_BATCH] for k, v in inputs.items()}
    # Jitted: run eagerly, a decoder's predict compiled each of its ~1,000 ops on its own (8 s).
    expected = jax.device_get(jax.jit(infer)(weights, sample))
    # On an accelerator float32 matmuls and convolutions run at JAX's default precision (TF32
    # on NVIDIA GPUs, a 10-bit mantissa; bfloat16 passes on TPUs) and each compilation picks
    # its own kernels: two compilations agree to about 1e-3, not 1e-5. A wrong graph differs
    # by far more either way.
    rtol, atol = (1e-5, 1e-6) if platform == "cpu" else (1e-2, 1e-3)
    for k, v in expected.items():
        # float32 round-off of two compilations grows with the outputs' scale (a forecast in
        # the data's units, ~10, differs by ~5e-6 where it crosses zero): atol scales with it.
        scale = max(1.0, float(np.max(np.abs(v)))) if np.size(v) else 1.0
        if not np.allclose(v, exported[k][: len(v)], rtol=rtol, atol=atol * scale):
            raise AssertionError(f"exported output {k!r} differs from the training code's")


def _check_finite(
    outputs: dict[str, np.ndarray], split: str, index: np.ndarray | None = None
) -> None:
    """Raises ConfigError when an output of the exported graph on `split`'s rows (those of
    `index`, else its first ones) holds a NaN or an infinity: a model that does not answer its
    own data is broken, and a server would refuse every such request (422
    `non_finite_output`, ann/serve/app.py) instead of answering it. Checked here so that a
    model giving NaN everywhere never reaches a server, and a server's 422 means an input far
    outside the data, not a broken model."""
    from ann.config import ConfigError

    for name, value in outputs.items():
        if value.dtype.kind != "f" or np.isfinite(value).all():
            continue
        bad = ~np.isfinite(value.reshape(len(value), -1)).all(axis=1)
        first = int(np.argmax(bad))
        first = int(index[first]) if index is not None else first
        raise ConfigError(
            f"the exported model gives non-finite {name!r} (NaN or infinity) on {int(bad.sum()):,}"
            f" of {len(value):,} {split} rows (the first: row {first}); it cannot serve. Check "
            "the run (its loss, its weights) and export a good step"
        )


def _reference(
    exported: Any, infer: Any, weights: dict, train: Any, validation: Any, experiment: Any
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest's reference statistics and the drift reference sample, computed by the
    exported graph itself: on the training split's first rows (at most REFERENCE_ROWS), its
    agreement with the training code (`_check_agrees`) and the inputs' statistics; on the rows
    `held_out_rows` names, the sample (inputs and outputs, the rows drift tests both against:
    `ann.monitor.drift.Reference.from_model`) and the outputs' statistics."""
    import jax

    from ann import cli

    inputs = list(experiment.input_signature())
    rows = train.rows(np.arange(min(len(train), REFERENCE_ROWS)))
    ref_inputs = {k: rows[k] for k in inputs}
    cli.progress(
        f"running the export on {len(rows[inputs[0]]):,} training rows and the held-out "
        "reference rows: its agreement with the training code, the drift reference"
    )
    call = jax.jit(exported.call)
    # Where a server would run it (a `cpu` export on a GPU machine: the host's CPU), the
    # training code's outputs computed there too, so the two differ only by compilation.
    device = artifact.device_for(exported.platforms)
    weights = jax.device_put(weights, device)
    ref_outputs = _predict_all(call, weights, ref_inputs)
    _check_finite(ref_outputs, f"training ({train.split})")
    _check_agrees(infer, weights, ref_inputs, ref_outputs, device.platform)
    split, pool, words = held_out_rows(experiment, train, validation)
    known = ref_outputs if split is train else None  # the training rows' outputs, run above
    entry, sample = reference_sample(split, pool, inputs, call, weights, known)
    entry["held_out"] = words
    outputs = {k.partition("/")[2]: v for k, v in sample.items() if k.startswith("outputs/")}
    reference = reference_statistics(
        ref_inputs, outputs, experiment.output_signature(), experiment.input_signature()
    )
    reference["sample"] = entry
    return reference, sample


def _short_model_name(name: str) -> str:
    """The name `module:Class` was registered by (`ann.models.register`), else `name`."""
    from ann import models

    for short, target in models.MODELS.items():
        if isinstance(target, type) and f"{target.__module__}:{target.__qualname__}" == name:
            return short
    return name


def default_name(config: Any, config_flag: str = "") -> str:
    """The manifest's name when `--name` is not given. For a run that recorded its `--config`
    argument (`config_flag`, as `ann.config.recorded_config_flag` reads it from config.json):
    the config file's name and its `:ARG` variant (`configs/digits_finetune.py` ->
    `digits_finetune`, `configs/digits_cnn.py:writers` -> `digits_cnn_writers`, README's
    `parity.py` -> `parity`), so runs of two configs never register or serve as versions of one
    model: the fine-tune of the digits CNN exported as `digits_cnn`, its base model's name.
    Otherwise (a run trained from Python without a config file, or written before the record):
    DATA_MODEL (`digits_cnn`) for the default experiment, classification; DATA_MODEL_EXPERIMENT
    otherwise (`diabetes_mlp_regression`, `digits_mlp_parity` for `mytasks:Parity`). A model
    registered by a short name (`@ann.models.register("wide")`, recorded as its `module:Class`)
    is named by it (`digits_wide`) where its module is imported (by restoring the run).
    Characters the registry refuses (`:`, `.`, ...) become `_`."""
    file, _, variant = config_flag.partition(":")
    stem = os.path.splitext(os.path.basename(file.rstrip("/\\")))[0]
    name = re.sub(r"[^A-Za-z0-9_-]", "_", "_".join(filter(None, [stem, variant])))
    if name.lstrip("_-"):  # a name the registry takes starts with a letter or digit
        return name.lstrip("_-")[:128]
    name = f"{config.data.name}_{_short_model_name(config.model.name)}"
    experiment = config.experiment
    if experiment != "classification":
        name += "_" + experiment.rpartition(":")[2].lower()
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:128]


def export(
    workdir: str,
    out: str,
    step: int | str = "best",
    name: str | None = None,
    platforms: Sequence[str] = ("cpu",),
    calibration: str | None = None,
) -> dict[str, Any]:
    """Exports the run in `workdir` at `step` into `out` (a new or empty directory, written in
    a hidden sibling and renamed into place), and returns the manifest it wrote (the dict in
    `out/manifest.json`: "name", "inputs", "outputs", "platforms", "source", "metrics",
    "calibration", "git", ...; README, "Export").

    - `step`: "best" (the step `best_metric` chose on the validation split), "latest", or a
      step number the run saved.
    - `name`: the manifest's name, what the server serves and the registry registers it as;
      None: `default_name` (the run's config file and variant, "digits_cnn_writers").
    - `platforms`: the JAX platforms ("cpu", "cuda", "rocm", "tpu") the function is lowered
      for, this machine's included; the loader and the server run it on a device of one of
      them.
    - `calibration`: "temperature" or "none" overrides the run's `config.calibration`; None
      keeps it.

    Every argument is checked first, as `ann export` checks its flags (`check_flags`): a
    ValueError (FlagError) names the argument and the fix for a bad value (a `step` that is not
    'best', 'latest' or a saved step; a `workdir` that is no trained run; an `out` that is not
    new or empty, or inside the run's checkpoints/, an export, a registry or a report; a
    `name` the registry refuses; an unknown `calibration` or platform); a TypeError for an
    argument of the wrong type (None for a path, a str for `platforms`, a float step). Then
    ConfigError (the run's config.json; a model that gives NaN or infinity on its own data),
    CheckpointError (a damaged checkpoint), CalibrationError, artifact.IntegrityError (a
    manifest no loader would accept: nothing is written) and AssertionError (the exported
    graph's outputs differ from the training code's: nothing is written). A Ctrl-C raises
    KeyboardInterrupt and leaves nothing."""
    shadowing.check()  # a clone's root imported as `ann`: one line, not a traceback midway
    workdir, out, step, name, platforms, calibration = _arguments(
        workdir, out, step, name, platforms, calibration
    )
    with _as_arguments(calibration):
        check_flags(workdir, out, str(step), name, platforms, calibration)
    return _export(workdir, out, step, name, platforms, calibration)


def _as_arguments(calibration: str | None = None) -> Any:
    """`check_flags`' refusals in `export`'s words: its arguments, not `ann export`'s flags
    (a str `calibration` quoted: `calibration='None' must be one of ...`)."""
    from ann import cli

    return cli.as_arguments(
        ("workdir", "out", "step", "name", "platforms", "calibration"),
        {"calibration": calibration},
    )


def _arguments(
    workdir: Any, out: Any, step: Any, name: Any, platforms: Any, calibration: Any
) -> tuple[str, str, int | str, str | None, list[str], str | None]:
    """`export`'s arguments as `check_flags` takes them; TypeError naming the argument for a
    wrong type: None as a path raised FileNotFoundError of config.json, a float step was
    truncated (1.5 as 1), a str `platforms` was read as its letters ("cpu" as c, p, u)."""
    from ann import cli

    workdir = artifact.path_argument(
        workdir, "workdir", "a training run's directory as a str or path"
    )
    out = artifact.path_argument(out, "out", "a new directory as a str or path")
    step = cli.step_argument(step)
    for key, value in (("name", name), ("calibration", calibration)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{key}: expected a str or None, got {type(value).__name__}")
    names = isinstance(platforms, Sequence) and all(isinstance(p, str) for p in platforms)
    if isinstance(platforms, str) or not names:
        shown = repr(platforms) if isinstance(platforms, str) else type(platforms).__name__
        raise TypeError(
            f"platforms: expected a sequence of platform names, e.g. ('cpu',) or "
            f"('cpu', 'cuda'), got {shown}"
        )
    return workdir, out, step, name, list(platforms), calibration


def _fit_before_trace(
    experiment: Any, model: Any, config: Any, data_dir: str | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The post-training fits `predict` then applies, set on `experiment` before the graph is
    traced, and their manifest entries: a classifier's temperature (`calibrate`: predict
    divides the logits by it) and an anomaly detector's threshold (`fit_threshold`: predict
    flags rows above it); None for an experiment without one."""
    from ann.calibrate import calibrate

    calibrated = calibrate(experiment, model, config, data_dir)
    fit_threshold = getattr(experiment, "fit_threshold", None)
    return calibrated, (fit_threshold(model) if fit_threshold is not None else None)


def _export(
    workdir: str,
    out: str,
    step: int | str,
    name: str | None,
    platforms: Sequence[str],
    calibration: str | None,
) -> dict[str, Any]:
    """`export` once its arguments are checked (`check_flags`)."""
    # Imported on use: `ann export --help` and a bad flag answer without JAX.
    import flax
    import jax
    import jaxlib
    from flax import nnx

    from ann import cli, data
    from ann import config as config_lib
    from ann.data import data_dir as data_dir_lib
    from ann.sharding import path_str
    from ann.train.build import restore_model

    if os.path.exists(out) and os.listdir(out):
        raise FileExistsError(f"--out={out} exists and is not empty; choose a new directory")
    requested = step
    cli.progress(f"restoring the {step} checkpoint of {workdir}")
    # The data the run read (its data_dir.json), not this shell's $TFDS_DATA_DIR: the reference
    # sample, the temperature and the self-check come from it.
    data_dir = data_dir_lib.for_run(config_lib.latest(workdir), workdir)
    experiment, model, step, config = restore_model(workdir, step, data_dir)
    if calibration is not None:
        config = config.copy_and_resolve_references()  # the manifest records the override
        config.calibration = calibration
    calibrated, threshold = _fit_before_trace(experiment, model, config, data_dir)
    if calibrated and calibrated["method"] != config.calibration:  # no T to fit: served as none
        config = config.copy_and_resolve_references()  # the manifest says what it serves
        config.calibration = calibrated["method"]
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    keys = [path_str(path) for path, _ in leaves]  # as sharding rules and `freeze` name them
    weights = {k: np.asarray(jax.device_get(v)) for k, (_, v) in zip(keys, leaves)}
    if len(weights) != len(keys):
        raise ValueError("two parameters flatten to the same name; cannot export this model")

    def infer(weights: dict[str, jax.Array], inputs: dict[str, jax.Array]) -> dict:
        state = jax.tree_util.tree_unflatten(treedef, [weights[k] for k in keys])
        return experiment.predict(nnx.merge(graphdef, state), inputs)

    input_signature = experiment.input_signature()
    output_signature = experiment.output_signature()
    cli.progress(f"step {step}: tracing the model for {', '.join(platforms)} (jax.export)")
    exported = _trace(infer, weights, input_signature, platforms)
    _check_outputs(exported, experiment, config.model.name)

    dc = config.data
    train = data.load(dc.name, dc.train_split, data_dir, dc.cache, "data.train_split")
    validation = data.load(
        dc.name, dc.validation_split, data_dir, dc.cache, "data.validation_split"
    )
    reference, sample = _reference(exported, infer, weights, train, validation, experiment)

    manifest: dict[str, Any] = {
        "format": artifact.FORMAT,
        "name": name or default_name(config, config_lib.recorded_config_flag(workdir)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platforms": list(exported.platforms),
        "inputs": _signature_json(input_signature),
        "outputs": _signature_json(output_signature),
        "source": {
            "workdir": os.path.abspath(workdir),
            "step": int(step),
            "selected_by": (
                {"metric": config.best_metric, "mode": config.best_mode}
                if requested == "best"
                else {"step": requested}
            ),
            **init_from_source(workdir),
        },
        "data": {
            "name": dc.name,
            "version": str(train.info.version),
            "data_dir": data_dir_lib.resolved(data_dir),  # what the reference was read from
            "train_split": dc.train_split,
            "validation_split": dc.validation_split,  # chose the step (val/ metrics)
            "eval_splits": list(dc.eval_splits),  # reported only (eval/ metrics: test)
        },
        "config": json.loads(config_lib.to_json(config)),
        "metrics": _eval_metrics(workdir, int(step)),
        **({"calibration": calibrated} if calibrated else {}),
        **({"threshold": threshold} if threshold else {}),
        "git": _git(),
        "versions": {
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "flax": flax.__version__,
            "python": sys.version.split()[0],
        },
        **parameter_counts(model),  # as `ann train` counts them, BatchNorm statistics apart
        "reference": reference,
    }
    return write(out, manifest, bytes(exported.serialize()), weights, sample)


def parameter_counts(model: Any) -> dict[str, int]:
    """{"num_params": the `nnx.Module` model's `nnx.Param` elements (trained: what `ann train`
    counts), "num_statistics": the other arrays' elements (BatchNorm's running averages)}, the
    second left out when 0."""
    import jax
    from flax import nnx

    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    others = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Not(nnx.Param))))
    return {"num_params": int(params), **({"num_statistics": int(others)} if others else {})}


def write(
    out: str,
    manifest: dict[str, Any],
    function: bytes,
    weights: dict,
    reference: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Writes the artifact into a temporary sibling of `out`, then renames it into place;
    `reference` (`inputs/NAME`, `outputs/NAME` arrays) becomes reference.safetensors.

    The manifest must pass the loader's own checks (`ann.artifact.check_manifest` and its
    MAX_MANIFEST_BYTES): an export nothing could load is refused with IntegrityError and
    nothing is written. An `out` that another writer filled meanwhile (two exports to one new
    directory at once) is refused with FlagError, as `check_flags` refuses it, and nothing of
    this one is left."""
    from safetensors.numpy import save as save_safetensors

    parent = os.path.dirname(os.path.abspath(out))
    # A killed export left its staging directory (.export-*): the next one removes it.
    with atomic.staging(out, ".export-") as tmp:
        files = {artifact.FUNCTION: function, artifact.WEIGHTS: save_safetensors(weights)}
        if reference is not None:
            files[artifact.REFERENCE] = save_safetensors(reference)
        manifest["files"] = {}
        for file_name, blob in files.items():
            atomic.write_bytes(os.path.join(tmp, file_name), blob)
            manifest["files"][file_name] = {
                "sha256": artifact.sha256_bytes(blob),
                "bytes": len(blob),
            }
        path = os.path.join(out, artifact.MANIFEST)
        artifact.check_manifest(path, manifest)
        # A NaN metric as null: a bare NaN (json.dumps) is not JSON.
        text = (atomic.json_text(manifest, indent=1) + "\n").encode()
        if len(text) > artifact.MAX_MANIFEST_BYTES:
            raise artifact.IntegrityError(
                f"{path} would have {len(text)} bytes, above the loader's limit of "
                f"{artifact.MAX_MANIFEST_BYTES} (ann.artifact.MAX_MANIFEST_BYTES); nothing written"
            )
        atomic.write_bytes(os.path.join(tmp, artifact.MANIFEST), text)
        os.chmod(tmp, 0o755)  # mkdtemp's 0o700 would hide the export from other users
        if os.path.isdir(out) and not os.listdir(out):
            with contextlib.suppress(OSError):  # another export's, or filled: the rename says
                os.rmdir(out)
        # The whole directory appears at once, its files written durably (ann.atomic) first.
        try:
            os.rename(tmp, out)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            _taken(out)
        atomic.sync_directory(parent)
    return manifest


def _taken(out: str) -> None:
    """Raises FlagError for an `out` that another writer filled after it was checked (two
    `ann export` to one new --out at once: the second's rename failed "Directory not empty"
    with a traceback): the line the second would have had, had it started later."""
    from ann import cli

    cli.check_out("out", out)
    raise cli.FlagError(f"--out={out} exists and is not an empty directory; choose a new one")


FLAGS = flags.FLAGS


def define_flags() -> None:
    """CLI flags, defined only when run as a program (ann.main defines --workdir too)."""
    flags.DEFINE_string("workdir", None, "The run to export (holds config.json and checkpoints).")
    flags.DEFINE_string("out", None, "New directory to write the export into.")
    flags.DEFINE_string("step", "best", "'best', 'latest' or a step number.")
    flags.DEFINE_string(
        "name",
        None,
        "Model name in the manifest (default: the run's --config file and variant, "
        "digits_cnn_writers for configs/digits_cnn.py:writers; DATA_MODEL[_EXPERIMENT] for a run "
        "that recorded none); a valid registry name.",
    )
    from ann import cli

    cli.define_names("platforms", ["cpu"], PLATFORMS, "Platforms to lower for.")
    flags.DEFINE_enum(
        "calibration",
        None,
        list(CALIBRATIONS),
        "Overrides the run's config.calibration: temperature (fit T on the validation split) or "
        "none (export softmax(logits)); unset keeps the run's.",
    )
    flags.mark_flags_as_required(["workdir", "out"])


PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # what jax.export lowers for
CALIBRATIONS = ("temperature", "none")  # export's `calibration`, ann export's --calibration


def _check_runs_here(platforms: list[str]) -> None:
    """FlagError unless `platforms` holds this machine's (the export is run here once, to
    check it and record its reference outputs: a CUDA-only export on a CPU failed after all
    the work with a traceback)."""
    from ann import cli

    if "cpu" in platforms:  # runs anywhere (`artifact.device_for`): jax is not imported
        return
    try:
        artifact.device_for(platforms)  # the rule a server loading it will apply
    except artifact.PlatformError:
        import jax

        here = jax.export.default_export_platform()
        raise cli.FlagError(
            f"--platforms={','.join(platforms)} must include this machine's platform ({here}): "
            "the export runs here once, to check it and to record its reference outputs; use "
            f"--platforms={','.join([*platforms, here])}"
        ) from None


def check_flags(
    workdir: str,
    out: str,
    step: str,
    name: str | None,
    platforms: list[str],
    calibration: str | None = None,
) -> None:
    """Checks every flag before a model is restored or anything is written; raises FlagError
    with one line that names the flag and the fix."""
    from ann import cli
    from ann.registry import NAME

    cli.check_trained_run(workdir, step)
    if calibration not in (None, *CALIBRATIONS):  # absl's enum refuses it on the command line
        raise cli.FlagError(f"--calibration={calibration} must be one of {', '.join(CALIBRATIONS)}")
    if name is not None and not NAME.match(name):
        raise cli.FlagError(
            f"--name={name!r} must be letters, digits, '_', '.' or '-' (at most 128), starting "
            "with a letter or digit (a name the registry and the server accept)"
        )
    unknown = [p for p in platforms if p not in PLATFORMS]
    if not platforms or unknown or len(set(platforms)) != len(platforms):
        from ann.config import did_you_mean

        hint = (
            "; a GPU is 'cuda' (NVIDIA) or 'rocm' (AMD) to jax.export"
            if "gpu" in (p.lower() for p in unknown)
            else did_you_mean(unknown[0], PLATFORMS)
            if unknown
            else ""  # 'CPU': 'cpu'
        )
        raise cli.FlagError(
            f"--platforms={','.join(platforms)!r} must be distinct names among "
            f"{', '.join(PLATFORMS)}"
            + (f" (unknown: {', '.join(unknown)}{hint})" if unknown else "")
        )
    _check_runs_here(platforms)
    if os.path.islink(out) and os.path.isdir(out):  # the finished export replaces --out
        raise cli.FlagError(
            f"--out={out} is a symbolic link (to {os.readlink(out)}); give the directory itself"
        )
    cli.check_out("out", out)
    if os.path.exists(out) and os.listdir(out):
        raise cli.FlagError(f"--out={out} exists and is not an empty directory; choose a new one")
    if os.path.realpath(out) == os.path.realpath(workdir):
        raise cli.FlagError(f"--out={out} is the run's own directory; choose a new one")
    # One rule for the flag on an experiment without class logits (it was refused for
    # `temperature`, accepted without a word for `none`): what it asks for is said. A
    # temperature cannot be fitted: refused. `none` (no temperature) is what such an export
    # serves anyway: harmless, so accepted (a script exporting every run with it still runs),
    # with a note that it changes nothing.
    if calibration is not None:
        from ann import config as config_lib
        from ann.calibrate import calibratable
        from ann.imports import recorded_in
        from ann.train.build import make_experiment

        config = config_lib.latest(workdir)
        with recorded_in(f"the run in {workdir}"):
            experiment = make_experiment(config)
        if calibratable(experiment):
            return
        if calibration == "temperature":
            raise cli.FlagError(
                f"--calibration=temperature: experiment {config.experiment!r} has no class "
                "logits whose temperature could be fitted (only classification's); drop the "
                "flag"
            )
        cli.note(
            f"--calibration=none: experiment {config.experiment!r} has no class logits, so "
            "nothing is calibrated with or without it; the flag changes nothing"
        )


def main(argv: list[str]) -> None:
    from ann import cli

    cli.check_no_arguments(argv[1:])
    check_flags(
        FLAGS.workdir, FLAGS.out, FLAGS.step, FLAGS.name, FLAGS.platforms, FLAGS.calibration
    )
    step: int | str = int(FLAGS.step) if FLAGS.step.isdigit() else FLAGS.step
    manifest = _export(
        FLAGS.workdir, FLAGS.out, step, FLAGS.name, FLAGS.platforms, FLAGS.calibration
    )
    shown = cli.metrics_line(manifest["metrics"])
    print(
        f"exported {manifest['name']} (step {manifest['source']['step']}, "
        f"{manifest['num_params']:,} parameters"
        + (f" + {manifest['num_statistics']:,} statistics" if "num_statistics" in manifest else "")
        + f", {', '.join(manifest['platforms'])}) to "
        f"{FLAGS.out}" + (f" | {shown}" if shown else "")
    )
    if "calibration" in manifest:
        from ann.calibrate import summary_lines

        # Notes on the result, not the result: stdout stays the one line a script reads.
        print("\n".join(summary_lines(manifest["calibration"])), file=sys.stderr)


if __name__ == "__main__":
    from ann import cli
    from ann.train.writers import MetricsFileError

    define_flags()
    # A bad flag, run or step, a damaged run file, a temperature that cannot be fitted: one
    # line, exit 1 (FlagError and ConfigError: see cli.run); warnings only: the result line is
    # the output. The checkpoint and calibration code (JAX) is imported once a run is read.
    errors = (
        FileExistsError,
        FileNotFoundError,
        artifact.IntegrityError,
        artifact.PlatformError,
        MetricsFileError,
    )
    named = ("ann.train.checkpoint:CheckpointError", "ann.metrics.calibration:CalibrationError")
    cli.run(main, errors=(*named, *errors), quiet=True)
