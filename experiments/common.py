"""What ann's experiments share: reading a data set's supervised keys and its first rows, per-
channel standardization with training statistics, calling the model with its output checked,
signature entries, means of summed metrics, and token vocabularies from a data set's
metadata."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ann.config import ConfigError, KeyValueError, lookup
from ann.data import Split
from ann.data.statistics import channel_stats, safe_std


def call_model(
    model: Any,
    name: str,
    *args: jax.Array,
    per_row: int | tuple[int, ...],
    needs: str,
    **kwargs: Any,
) -> jax.Array:
    """`model(*args, **kwargs)`, checked as the step is traced (before step 0): a float array
    with the batch axis of `args[0]` first and `per_row` per row (a shape, or a number of
    values in any shape), else ConfigError
    naming the model, what it returned, and `needs` (what the task needs, in words:
    "classification needs float logits [batch, 10] (one per class of the data set)"). A call
    that does not fit the model's signature (no `rngs=` keyword, not callable) is a ConfigError
    too; an error raised inside the model is left as it is (its traceback points at it)."""
    if not callable(model):
        raise ConfigError(f"model {name!r} is not callable: give it __call__(self, x, rngs=None)")
    try:
        out = model(*args, **kwargs)
    except TypeError as e:
        if e.__traceback__ is None or e.__traceback__.tb_next is not None:
            raise  # raised inside the model: not the call's arguments
        keywords = ", ".join(f"{k}=" for k in kwargs)
        raise ConfigError(
            f"model {name!r} cannot be called as ann calls it ({e}); its __call__ takes the "
            f"input{' and ' + keywords if keywords else ''} (rngs: the dropout RNG, or None)"
        ) from None
    rows = args[0].shape[0]
    if not isinstance(out, jax.Array):
        raise ConfigError(f"model {name!r} returns a {type(out).__name__}; {needs}")
    fits = out.shape[1:] == per_row if isinstance(per_row, tuple) else out.size == rows * per_row
    if out.shape[:1] != (rows,) or not fits or not jnp.issubdtype(out.dtype, jnp.floating):
        raise ConfigError(
            f"model {name!r} returns {out.dtype} of shape {list(out.shape)} for a batch of "
            f"{rows}; {needs}"
        )
    return out


# The experiment each of ann's offline sets (ann/data/offline.py) is made for, and its config.
MADE_FOR = {
    "digits": ("classification", "configs/digits_mlp.py"),
    "breast_cancer": ("classification", "configs/breast_cancer_mlp.py"),
    "diabetes": ("regression", "configs/diabetes_mlp.py"),
    "digit_pairs": ("retrieval", "configs/digits_retrieval.py"),
    "digits_novelty": ("anomaly_detection", "configs/digits_autoencoder.py"),
    "sensor_faults": ("anomaly_detection", "configs/sensors_autoencoder.py"),
    "sensor_series": ("forecasting", "configs/sensors_lstm.py"),
    "digit_strings": ("seq2seq", "configs/digit_seq2seq.py"),
    "pydoc_chars": ("language_modelling", "configs/pydoc_lm.py"),
}


def made_for(name: str, task: str) -> str:
    """ " (data set 'diabetes' is made for experiment 'regression', as in
    configs/diabetes_mlp.py)" where `name` is one of ann's offline sets made for another
    experiment than `task`; "" otherwise (a user's set: its refusal's own fix stands). Worded
    in neither a flag's nor a config file's spelling: `misfit` names the file's line."""
    made = MADE_FOR.get(name.partition(":")[0])
    if made is None or made[0] == task:
        return ""
    return f" (data set {name!r} is made for experiment {made[0]!r}, as in {made[1]})"


# The keys a shipped config sets for its experiment that a config written for another one
# holds wrong: said with the experiment, they took one failed run each (diabetes under a
# classification config: the experiment, then best_metric, then best_mode).
CHOSEN_WITH_EXPERIMENT = (
    "best_metric", "best_mode", "early_stopping.metric", "early_stopping.mode"
)  # fmt: skip


def misfit(
    what: str, name: str, task: str, config: ml_collections.ConfigDict | None = None
) -> ConfigError:
    """The refusal `what` of data set `name` under experiment `task`, to raise: a
    `KeyValueError` of config key `experiment` (depending on `data.name`) where `name` is one
    of ann's offline sets made for another experiment, so that a config file's line setting
    either is named (`ann.cli.in_config_file`); a ConfigError otherwise. With the run's
    `config`, the keys of CHOSEN_WITH_EXPERIMENT the set's own config file sets otherwise are
    named too (`that config also sets best_metric='val/rmse', best_mode='min'`)."""
    if not made_for(name, task):
        return ConfigError(what)
    made, path = MADE_FOR[name.partition(":")[0]]
    shipped = _shipped_config(path) if config is not None else None
    also = {}
    if shipped is not None:
        stops = lookup(shipped, "early_stopping.metric") or lookup(config, "early_stopping.metric")
        also = {
            key: lookup(shipped, key)
            for key in CHOSEN_WITH_EXPERIMENT
            if lookup(shipped, key) != lookup(config, key)
            and (stops or key != "early_stopping.mode")  # a mode nothing reads
        }
        said = ", ".join(f"{key}={value!r}" for key, value in also.items())
        what += f"; that config also sets {said}" if also else ""
    # The fix sets them all: setting the experiment alone was refused next for its best_metric.
    fix = "e.g. " + " ".join(f"--config.{k}={v}" for k, v in {"experiment": made, **also}.items())
    return KeyValueError(
        "experiment", what, fix, example=made, depends_on=("data.name",), also=also
    )


def _shipped_config(path: str) -> ml_collections.ConfigDict | None:
    """The config of ann's own config file `path` (`configs/diabetes_mlp.py`, in the checkout
    beside this package), or None where there is no such file (an installed copy) or it does
    not load."""
    file = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), path)
    if not os.path.isfile(file):
        return None
    try:  # a copy that no longer loads: the refusal it would add to is said without it
        spec = importlib.util.spec_from_file_location("ann_shipped_config", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config()
    except Exception:  # noqa: BLE001
        return None


def supervised_keys(
    train: Split,
    task: str,
    roles: str,
    hint: str = "",
    config: ml_collections.ConfigDict | None = None,
) -> tuple[str, str]:
    """The data set's TFDS `supervised_keys` (input, target) as two feature names. Raises
    ConfigError naming the data set, the `roles` the task reads them as ("(input, label)") and
    `hint` (what to use instead) and the builder's fix (`supervised_keys=("input", "label")`)
    when it declares none, or names a feature it does not have (its features sorted by name)."""
    keys = train.info.supervised_keys
    features = train.info.features
    names = ", ".join(sorted(features.keys()))  # sorted: a prepared set's came in any order
    if not keys:
        shipped = made_for(train.name, task)
        example = ", ".join(f'"{role}"' for role in roles.strip("()").split(", "))
        raise misfit(
            f"data set {train.name!r} declares no {roles} supervised_keys; {task} needs them"
            + (
                shipped
                or f"{hint}; declare them in its builder's _info, tfds.core.DatasetInfo(..., "
                f"supervised_keys=({example})), with two of its features (its features: {names})"
            ),
            train.name,
            task,
            config,
        )
    missing = [k for k in keys if k not in features]
    if missing:  # it was TFDS's KeyError traceback from the experiment's setup
        raise ConfigError(
            f"data set {train.name!r} declares supervised_keys {tuple(keys)} but has no feature "
            f"{missing[0]!r} (its features: {names}); fix its builder"
        )
    feature = features[keys[0]]
    kind = np.dtype(feature.np_dtype).kind
    if kind not in "biuf":  # it was a traceback from the input statistics
        raise ConfigError(
            f"feature {keys[0]!r} of data set {train.name!r} holds text or strings; {task} "
            "reads numbers: declare it as tfds.features.Tensor(shape=(...), dtype=np.float32) "
            "(tokenized, or parsed, in its builder)"
        )
    return keys[0], keys[1]


def first_rows(train: Split, limit: int) -> dict[str, np.ndarray]:
    """The first `limit` rows of `train` (all when fewer): a data set's rows are stored shuffled,
    so they are a sample for statistics."""
    return train.rows(np.arange(min(len(train), limit)))


@dataclasses.dataclass
class Standardizer:
    """x -> (x - mean) / std with statistics of the training split, float32 on the device (inside
    the jitted `loss`, `eval_sums` and `predict` alike, so an export carries it). `mean` and
    `std` broadcast against the values: per channel (last axis) from `per_channel`, per element
    from `per_element`; a constant column keeps its values (std 1, `safe_std`)."""

    mean: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((), np.float32))
    std: np.ndarray = dataclasses.field(default_factory=lambda: np.ones((), np.float32))

    @classmethod
    def per_channel(cls, values: np.ndarray) -> Standardizer:
        """Statistics over every row and position of `values` [rows, ..., channels]."""
        return cls(*channel_stats(values))

    @classmethod
    def per_element(cls, values: np.ndarray) -> Standardizer:
        """Statistics over the rows (axis 0) of `values`, one per element of a row."""
        x = np.asarray(values, np.float64)
        return cls(x.mean(axis=0).astype(np.float32), safe_std(x.std(axis=0)))

    def __call__(self, x: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
        """Standardized `x`, computed in `dtype` (float32; numpy's float64 for a host-side fit)."""
        return (x.astype(dtype) - self.mean) / self.std

    def invert(self, y: jax.Array) -> jax.Array:
        """Back to the data's own units."""
        return y * self.std + self.mean


def spec(
    dtype: Any,
    shape: Sequence[int],
    names: Sequence[str] | None = None,
    pad_id: int | None = None,
    framing: Mapping[str, Any] | None = None,
) -> dict:
    """One signature entry (`ann.experiment.Signature`): numpy dtype name and per-example shape,
    plus the class or token `names` an integer input or output indexes (its values lie in
    [0, len(names)): the exported model's loader and the server refuse others), and for token
    rows padded on the right with `pad_id`, `"padding": {"id": pad_id, "side": "right"}`: the
    model reads a row up to its first pad, so the loader and the server refuse a pad before a
    token, or a row of pads alone (`ann.artifact.padding_fault`). `framing` (with `pad_id`):
    how training frames each row beyond its padding, `{"task_ids": [...], "bos_id": ...,
    "eos_id": ...}` (seq2seq's source: TASK TOKENS <eos> then pads), and optionally `"sources"`
    (what each task's tokens look like in training: `Seq2Seq.source_shapes`): the loader and the
    server refuse a row framed otherwise, or of no shape its task has (`ann.artifact.Framing`)."""
    entry: dict[str, Any] = {"dtype": np.dtype(dtype).name, "shape": list(shape)}
    if names is not None:
        entry["names"] = list(names)
    if pad_id is not None:
        entry["padding"] = {"id": int(pad_id), "side": "right"}
        if framing is not None:
            entry["framing"] = dict(framing)
    return entry


def feature_spec(train: Split, key: str) -> dict:
    """The signature entry of feature `key` as the data set stores it."""
    feature = train.info.features[key]
    return spec(feature.np_dtype, feature.shape)


def mean_of(sums: Mapping[str, Any], total: str, count: str) -> float:
    """sums[total] / sums[count] as a float; an empty split (count 0) counts as 1 row."""
    return float(sums[total]) / max(float(sums[count]), 1.0)


@dataclasses.dataclass
class Vocabulary:
    """A token data set's vocabulary from its `info.metadata`: `tokens` (id -> text), `pad_id`
    (default 0) and, where the metadata has them, `bos_id` and `eos_id` (-1 otherwise)."""

    tokens: list[str] = dataclasses.field(default_factory=list)
    pad_id: int = 0
    bos_id: int = -1
    eos_id: int = -1

    @classmethod
    def of(cls, train: Split, task: str, needs: Sequence[str] = ()) -> Vocabulary:
        """Raises ConfigError naming the data set and what it lacks: metadata `vocabulary` and
        the `needs` ("bos_id", "eos_id")."""
        metadata = train.info.metadata or {}
        missing = [k for k in ("vocabulary", *needs) if k not in metadata]
        if missing:
            raise ConfigError(
                f"data set {train.name!r} has no metadata {', '.join(missing)}; {task} reads its "
                "vocabulary from there"
            )
        return cls(
            list(metadata["vocabulary"]),
            int(metadata.get("pad_id", 0)),
            int(metadata.get("bos_id", -1)),
            int(metadata.get("eos_id", -1)),
        )

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def index(self) -> dict[str, int]:
        """Token text -> id."""
        return {t: i for i, t in enumerate(self.tokens)}

    @property
    def framing(self) -> tuple[int, ...]:
        """<pad> and (where there is one) <bos>: ids that frame a text and are none of it, so a
        decoder never writes them (`ann.decoding`'s `banned`)."""
        return tuple(i for i in (self.pad_id, self.bos_id) if i >= 0)

    def digit_ids(self) -> tuple[int, ...]:
        """Ids of the one-character decimal digit tokens."""
        return tuple(i for i, t in enumerate(self.tokens) if len(t) == 1 and t.isdecimal())
