"""The protocol between a task (an experiment) and the task-free train loop.

An experiment says what is trained and how it is scored: which fields of the data it reads, the
model it builds, its loss, and its eval metrics. The loop only calls these methods, so new tasks
(language modelling, seq2seq, anomaly detection, metric learning) need no change to the loop.

Experiments are found by name (`config.experiment`) through one table of dotted paths, imported
only when asked for (the framework never imports its plug-ins at module level), or given as a
user's `package.module:ClassName` or a short name the user's class registered (`register`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from ann import config as config_lib
from ann import models
from ann.config import ConfigError
from ann.data import Split
from ann.imports import import_named, in_main, registrar

Batch = dict[str, np.ndarray]
# name -> {"dtype": numpy dtype name, "shape": per-example shape}: what serving accepts and returns
Signature = dict[str, dict[str, Any]]


class Experiment(Protocol):
    def setup(self, train: Split) -> None:
        """Learns what the task needs from the training split (classes, input statistics)."""

    def fields(self, rows: dict[str, np.ndarray]) -> Batch:
        """Host side: picks and casts the arrays the model and loss read from a batch of rows:
        {name: numeric NumPy array with one entry per row, the batch axis first} (else a
        ConfigError before step 0). Not part of the export: `predict` gets the raw inputs, so
        transforms of the inputs belong on the device, in `loss` and `predict`."""

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        """The Flax NNX module, built from the config's `model.*` keys."""

    def loss(
        self, model: nnx.Module, batch: dict[str, jax.Array], rng: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Scalar training loss and per-batch metrics (means), traced inside the train step."""

    def eval_sums(self, model: nnx.Module, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Per-batch sums over the rows where `batch['mask']` is 1, added up across batches."""

    def eval_rows(self, model: nnx.Module, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Per-row outputs for metrics that need every row (AUROC, recall@k): {name: array with
        the batch axis first}. The loop gathers them over the whole split, padding dropped, and
        passes them to `eval_metrics`. `{}` when the sums are enough (nothing is gathered)."""

    def eval_metrics(
        self, sums: dict[str, np.ndarray], rows: dict[str, np.ndarray] | None = None
    ) -> dict[str, float]:
        """Final metrics over a whole split from the summed `eval_sums` and, when `eval_rows`
        returns something, the gathered rows (None otherwise): {name: number}, a float or int
        or a NumPy or JAX scalar (recorded as a float); NaN where it is undefined."""

    # Token positions trained per example (the loop then logs tokens/s); 0 for tasks that are
    # not about tokens.
    tokens_per_example: int

    # What export and serving need. `predict` runs the same on-device preprocessing as `loss`, so
    # an exported model cannot drift from the trained one.

    def input_signature(self) -> Signature:
        """The inputs `predict` reads, per example (no batch axis), from the data set's features."""

    def output_signature(self) -> Signature:
        """The outputs `predict` returns, per example."""

    def predict(self, model: nnx.Module, inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Eval-mode outputs for a batch of raw inputs (as the data set stores them)."""


# What the loop, export and serving use; a class attribute or method each (checked by `get`).
_MEMBERS = tuple(
    name for name in (*Experiment.__annotations__, *vars(Experiment)) if not name.startswith("_")
)

# Each also lists its validation metrics in experiments.metric_names.VALIDATION_METRICS.
EXPERIMENTS = {
    "classification": "experiments.classification:Classification",
    "language_modelling": "experiments.language_modelling:LanguageModelling",
    "seq2seq": "experiments.seq2seq:Seq2Seq",
    "retrieval": "experiments.retrieval:Retrieval",
    "forecasting": "experiments.forecasting:Forecasting",
    "anomaly_detection": "experiments.anomaly_detection:AnomalyDetection",
    "regression": "experiments.regression:Regression",
}


# `@ann.experiment.register("parity")` on a user's experiment class: `experiment="parity"` then
# builds it (its module imported before the config is checked, e.g. by the config file; a run
# records the class's `module:Class`, `record_registered`), as `ann.models.register` does for
# models; ann's own names are refused (commands read them by name: metrics, report sections).
register = registrar(lambda: EXPERIMENTS, frozenset(EXPERIMENTS), "ann.experiment.register")


def record_registered(config: Any) -> None:
    """Sets `config.experiment` from a registered short name to its class's `module:Class`, so
    that config.json names what a later job (`ann export`, `ann report`, a resume) can import
    without the module that registered it. A class defined in `__main__` keeps its short name
    (no other process can import it)."""
    cls = EXPERIMENTS.get(config.experiment)
    if (said := in_main("experiment", config.experiment, cls)) is not None:
        logging.warning("%s", said)
    if isinstance(cls, type) and cls.__module__ != "__main__":
        config.experiment = f"{cls.__module__}:{cls.__qualname__}"


def call(experiment: Any, member: str, *args: Any) -> Any:
    """`experiment.member(*args)` (`member` "__init__": the class called to build one), with a
    call that does not fit the member's signature (`setup(self)` with no split) one ConfigError
    naming the member and what ann passes; an error raised inside it is left as it is."""
    fn = experiment if member == "__init__" else getattr(experiment, member)
    try:
        return fn(*args)
    except TypeError as e:
        if e.__traceback__ is None or e.__traceback__.tb_next is not None:
            raise  # raised inside the member: its traceback points at it
        cls = experiment if isinstance(experiment, type) else type(experiment)
        takes = {"__init__": "(self, config)", "setup": "(self, train)"}.get(member, "")
        raise ConfigError(
            f"experiment {cls.__name__}.{member} cannot be called as ann calls it ({e}); it "
            f"takes {takes or 'what the protocol (ann.experiment.Experiment) says'}"
        ) from None


def check_inputs(experiment: Any, train: Split) -> None:
    """Raises ConfigError, before training, for an `input_signature()` that declares no input
    or one the data set has no feature of: export, calibration, the reference sample and
    `ann report` read each input from the data by its name (it failed only at export, with a
    KeyError or IndexError traceback)."""
    name, features = type(experiment).__name__, train.info.features
    signature = experiment.input_signature()
    if not signature:
        raise ConfigError(
            f"experiment {name}'s input_signature() declares no inputs; declare each input "
            "predict reads, by the data set's feature name"
        )
    for key in signature:
        if key not in features:
            raise ConfigError(
                f"experiment {name}'s input_signature() declares {key!r}, which data set "
                f"{train.name!r} has no feature of (it has {', '.join(map(repr, features))}); "
                "name inputs by the data set's features"
            )


def is_shipped(experiment: Any) -> bool:
    """Whether `experiment` (an instance) is one of ann's own (`EXPERIMENTS`), whose protocol
    methods the test suite checks, not a user's `module:Class`."""
    kind = type(experiment)
    return f"{kind.__module__}:{kind.__qualname__}" in EXPERIMENTS.values()


def check_outputs(experiment: Any, outputs: Any, model: str) -> None:
    """Raises ConfigError unless `outputs`, what `predict` returns for a batch (arrays or
    jax.ShapeDtypeStructs, the batch axis first), holds each output `output_signature()`
    declares, of its per-row shape and dtype. Where they differ, the experiment's `predict`
    (and its signature) is named, not the model, unless the experiment is one of ann's own
    (`EXPERIMENTS`), whose predict passes on what the model gives: ann train checks it before
    step 0 (`jax.eval_shape`), ann export on the traced graph (it blamed the model for a
    user's predict that returned 'prob_odd' where the signature declared 'p_odd')."""
    name, signature = type(experiment).__name__, experiment.output_signature()
    if not isinstance(outputs, dict):
        raise ConfigError(
            f"experiment {name}'s predict returns a {type(outputs).__name__}; return "
            f"{{name: array}} as its output_signature declares ({', '.join(signature)})"
        )
    missing = [key for key in signature if key not in outputs]
    extra = [key for key in outputs if key not in signature]
    if missing or extra:  # an extra one was served undeclared (export's KeyError: 'p_all')
        raise ConfigError(
            f"experiment {name}'s predict returns {', '.join(map(str, outputs)) or 'nothing'}, "
            f"its output_signature declares {', '.join(signature)}; make them agree"
        )
    for key, spec in signature.items():
        got, want = outputs[key], (list(spec["shape"]), np.dtype(spec["dtype"]))
        said = (list(got.shape[1:]), np.dtype(got.dtype))
        if said == want:
            continue
        if is_shipped(experiment):  # ann's own predict: the model's output
            raise ConfigError(
                f"model {model!r} gives {key!r} as {said[0]} {said[1]} per row, where its "
                f"experiment's output signature says {want[0]} {want[1]}; fix the model's output"
            )
        raise ConfigError(
            f"experiment {name}'s predict returns {key!r} as {said[0]} {said[1]} per row, where "
            f"its output_signature declares {want[0]} {want[1]}; make them agree (what "
            f"predict makes of the output of model {model!r}, or the signature)"
        )


def predict_outputs(experiment: Any, predict: Any) -> Any:
    """What `predict(inputs)` (the experiment's predict on a model the caller holds) returns
    for 2 rows of `input_signature()`, traced abstractly (`jax.eval_shape`, no FLOPs):
    jax.ShapeDtypeStructs by name, for `check_outputs`."""
    inputs = {
        k: jax.ShapeDtypeStruct((2, *v["shape"]), np.dtype(v["dtype"]))
        for k, v in experiment.input_signature().items()
    }
    return jax.eval_shape(predict, inputs)


def _check_shipped(module: str) -> None:
    """ConfigError naming `experiment` where ann's shipped `module` would be another
    directory's (`ann.shadowing.package_fault`)."""
    from ann import shadowing

    if (fault := shadowing.package_fault(module)) is not None:
        raise ConfigError(f"config key 'experiment': {fault}")


def get(name: str) -> type:
    """The experiment class for `name`: a name in `EXPERIMENTS` or `package.module:ClassName`,
    imported on first use, or the class registered as `name` (`register`). Raises ConfigError
    naming `experiment` for an unknown name, a path that does not import, or a class that lacks
    a member of the protocol."""
    target = EXPERIMENTS.get(name, name)
    if isinstance(target, type):
        cls = target
    elif ":" not in target:
        raise ConfigError(
            f"config key 'experiment': unknown experiment {name!r}"
            f"{models.near_name(name, sorted(EXPERIMENTS))}; use one of "
            f"{', '.join(sorted(EXPERIMENTS))} or package.module:ClassName"
        )
    else:
        if name in EXPERIMENTS:  # ann's own: a project's `experiments/` must not stand in
            _check_shipped(target.partition(":")[0])
        cls = import_named("experiment", target)
    missing = [m for m in _MEMBERS if not hasattr(cls, m)]
    if missing:
        raise ConfigError(
            f"config key 'experiment': {name!r} lacks {', '.join(missing)} of the experiment "
            "protocol (ann.experiment.Experiment)"
        )
    # A method set to something else (`predict = None`) passed, and trained, until the export.
    methods = [m for m in _MEMBERS if callable(getattr(Experiment, m, None))]
    if not_methods := [m for m in methods if not callable(getattr(cls, m))]:
        held = ", ".join(f"{m} = {getattr(cls, m)!r}" for m in not_methods)
        raise ConfigError(
            f"config key 'experiment': {name!r} holds {held}, where the experiment protocol "
            "(ann.experiment.Experiment) has a method: define it with def"
        )
    return cls


def check_config(
    config: ml_collections.ConfigDict, num_devices: int, unchanged: Collection[str] = ()
) -> Experiment:
    """Everything a command can check before it reads data: the config's keys, types, choices
    and ranges (`ann.config.validate`, the batch against `num_devices`, `unchanged` overrides),
    the model's arguments, their ranges and dtypes (`ann.models.check_config`), and the
    experiment's `task.*` settings (`ann.config.check_task_keys_apply` too). Returns the
    experiment, built from the config; raises ConfigError."""
    config_lib.validate(config, num_devices, unchanged=unchanged)
    models.check_config(config)
    experiment = get(config.experiment)(config)
    config_lib.check_task_keys_apply(config, experiment, unchanged)
    return experiment
