"""The shared config schema, its defaults, and validation before anything compiles.

Config files are plain Python (`get_config(arg)` returning a ConfigDict) that start from
`base()`. `validate` checks every key against the schema below, so a typo or a wrong type fails in
one line naming the key and the fix, not deep inside JAX.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

NoneType = type(None)


class ConfigError(ValueError):
    """A user mistake in the config; the message names the key and the fix."""


# key -> (default, allowed types). Nested dicts are nested sections. `model` is open: its extra
# keys are the model's constructor arguments, checked against the model's signature. `task` is
# open too: the experiment's own settings (a loss name, a temperature), checked by the
# experiment through `task_settings`.
SCHEMA: dict[str, Any] = {
    "experiment": ("classification", str),
    "model": {"name": ("", str)},
    "task": {},
    "data": {
        "name": ("", str),
        "data_dir": ("", str),  # "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
        # Splits are names or TFDS slices ("train[:90%]", "train[90%:]"); see ann/data/sources.py.
        "train_split": ("train", str),
        # Chooses: the best checkpoint, early stopping and a sweep's objective read its `val/`
        # metrics. A TFDS set without one: train_split="train[:90%]", this "train[90%:]".
        "validation_split": ("validation", str),
        # Reported only (`eval/` for the first, `eval_<split>/` for more), never chosen on.
        "eval_splits": (("test",), (tuple, list)),
        "cache": (True, bool),  # hold the decoded split in memory (small data sets)
        "shuffle": (True, bool),
        "read_threads": (1, int),  # host threads reading batches ahead
        "prefetch_batches": (2, int),
    },
    "batch_size": (128, int),
    # 0 (or "") means unset rather than None, so every key can be set with --config.key=value
    # (ml_collections cannot override a key whose value is None).
    "eval_batch_size": (0, (int, NoneType)),  # 0 = batch_size
    "total_steps": (0, (int, NoneType)),  # set exactly one of total_steps and num_epochs
    "num_epochs": (0.0, (float, int, NoneType)),
    "seed": (0, int),
    # Transfer learning (ann/train/transfer.py). `init_from`: "" = off, or the parameters to
    # start from: a run directory (RUN_DIR, RUN_DIR:best, RUN_DIR:latest or RUN_DIR:STEP; best
    # by default), an export directory, or a registry URI (models:/NAME@ALIAS, models:/NAME/3;
    # the registry is $ANN_REGISTRY or ./registry). Arrays are matched by path; those missing
    # from the source or of another shape stay freshly initialized, as does every array of a
    # layer with a mismatched one and every path an `init_from_skip` regex matches in full.
    # Applied only at a fresh start: on resume the run's own checkpoint wins.
    "init_from": ("", str),
    "init_from_skip": ((), (tuple, list)),
    # Regexes over parameter paths ("convs/0/kernel"; the whole path must match) whose
    # parameters are not updated; frozen BatchNorm layers use their running statistics.
    "freeze": ((), (tuple, list)),
    "optimizer": {
        "name": ("adam", str),
        "learning_rate": (1e-3, (float, int)),
        "schedule": ("constant", str),
        "warmup_steps": (0, int),
        "end_learning_rate_factor": (0.0, (float, int)),
        "step_boundaries": ((), (tuple, list)),
        "step_factor": (0.1, (float, int)),
        "momentum": (0.9, (float, int)),
        "nesterov": (False, bool),
        "b1": (0.9, (float, int)),
        "b2": (0.999, (float, int)),
        "eps": (1e-8, (float, int)),
        "weight_decay": (0.0, (float, int)),
        "grad_clip_norm": (0.0, (float, int, NoneType)),  # 0 = no clipping
        "accumulate_steps": (1, int),
    },
    "log_every_steps": (50, int),
    "eval_every_steps": (200, int),
    "checkpoint_every_steps": (200, int),
    "max_to_keep": (3, int),
    # A `val/` metric (of data.validation_split): model selection never looks at the test split.
    "best_metric": ("val/accuracy", str),
    "best_mode": ("max", str),
    # Stop when `metric` (a `val/` metric; "" = off) has not improved by more than `min_delta`
    # for `patience` evals in a row. The run then counts as finished: a rerun does not train on.
    "early_stopping": {
        "metric": ("", str),
        "mode": ("max", str),
        "patience": (5, int),
        "min_delta": (0.0, (float, int)),
    },
    "async_checkpointing": (True, bool),
    # Mixed precision: the models compute in `dtype` and keep parameters in `param_dtype`;
    # losses are computed in float32 whatever the compute dtype.
    "dtype": ("float32", str),
    "param_dtype": ("float32", str),
    # (first step, number of steps) to trace with jax.profiler into WORKDIR/profile; () = off.
    "profile_steps": ((), (tuple, list)),
    # Persistent XLA compilation cache: "" = WORKDIR/../.jax_cache, "off" = none.
    "compilation_cache_dir": ("", str),
    # Device mesh axes (-1 = the remaining devices): the batch splits over data x fsdp;
    # parameters and their optimizer state split over fsdp and tensor by `sharding_rules`.
    "mesh": {"data": (-1, int), "fsdp": (1, int), "tensor": (1, int)},
    # A preset (replicate, fsdp, fsdp+tensor) or ordered (path regex, placement) pairs; see
    # ann/sharding.py. "fsdp" with mesh.fsdp=1 (the default) replicates.
    "sharding_rules": ("fsdp", (str, tuple, list)),
}

CHOICES = {
    "optimizer.name": ("sgd", "adam", "adamw"),
    "optimizer.schedule": ("constant", "warmup_cosine", "step"),
    "best_mode": ("max", "min"),
    "early_stopping.mode": ("max", "min"),
    "dtype": ("float32", "bfloat16", "float16"),
    "param_dtype": ("float32", "bfloat16", "float16"),
}

POSITIVE = (
    "batch_size",
    "log_every_steps",
    "eval_every_steps",
    "checkpoint_every_steps",
    "max_to_keep",
    "optimizer.accumulate_steps",
    "early_stopping.patience",
)


SELECTION_PREFIX = "val/"  # metrics of data.validation_split: the only ones that choose


def check_selection_metric(key: str, metric: str) -> None:
    """Raises ConfigError unless `metric` is a validation metric (`val/...`): what chooses a
    checkpoint, stops a run early or ranks a sweep's trials must not read the test split."""
    if not metric.startswith(SELECTION_PREFIX):
        name = metric.split("/", 1)[-1] or "accuracy"
        raise ConfigError(
            f"{key} is {metric!r}, which is not a validation metric; choosing on {metric!r} "
            f"would select on the reported split: use '{SELECTION_PREFIX}{name}' (metrics of "
            "data.validation_split)"
        )


def _defaults(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: _defaults(spec) if isinstance(spec, Mapping) else spec[0]
        for key, spec in schema.items()
    }


def base() -> ml_collections.ConfigDict:
    """Every shared key with its default; config files start from this."""
    return ml_collections.ConfigDict(_defaults(SCHEMA))


def _did_you_mean(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_section(values: Mapping[str, Any], schema: Mapping[str, Any], prefix: str) -> None:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in schema:
            raise ConfigError(
                f"config key '{path}' is unknown{_did_you_mean(key, list(schema))}; "
                f"known keys here: {', '.join(sorted(schema))}"
            )
        spec = schema[key]
        if isinstance(spec, Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{path}' must be a section (a ConfigDict)")
            _check_section(value, spec, path + ".")
            continue
        _, types = spec
        types = types if isinstance(types, tuple) else (types,)
        # bool is an int in Python; a flag like `batch_size=True` is still a mistake.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join("None" if t is NoneType else t.__name__ for t in types)
            raise ConfigError(
                f"config key '{path}' must be {names}, got {type(value).__name__} {value!r}; "
                f"set --config.{path}=<{names}>"
            )


def _get(config: Mapping[str, Any], path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = value[part]
    return value


def validate(config: ml_collections.ConfigDict, num_devices: int, selecting: bool = True) -> None:
    """Checks keys, types, choices and device divisibility; raises ConfigError naming the key.
    `selecting=False` (restoring a trained run) skips the check that `best_metric` and
    `early_stopping.metric` are `val/` metrics: runs from before validation splits chose on
    `eval/` and keep that choice."""
    values = config.to_dict()
    for key in SCHEMA:
        if key not in values:
            raise ConfigError(
                f"config key '{key}' is missing; start the config from ann.config.base()"
            )
    _check_section({k: v for k, v in values.items() if k not in ("model", "task")}, SCHEMA, "")
    if not isinstance(values["task"], Mapping):
        raise ConfigError("config key 'task' must be a section (a ConfigDict)")
    if not isinstance(values["model"], Mapping) or not values["model"].get("name"):
        raise ConfigError(
            "config key 'model.name' is empty; set --config.model.name=cnn (or mlp, "
            "resnet, or package.module:ClassName)"
        )
    _check_section({"name": values["model"]["name"]}, SCHEMA["model"], "model.")
    if not values["data"]["name"]:
        raise ConfigError(
            "config key 'data.name' is empty; set --config.data.name=digits "
            "(or breast_cancer, or a TFDS name such as mnist)"
        )
    for path, options in CHOICES.items():
        if _get(values, path) not in options:
            raise ConfigError(
                f"config key '{path}' is {_get(values, path)!r}; choose one of {', '.join(options)}"
            )
    for path in POSITIVE:
        if _get(values, path) <= 0:
            raise ConfigError(f"config key '{path}' must be > 0, got {_get(values, path)}")
    for key in ("total_steps", "num_epochs", "eval_batch_size", "optimizer.grad_clip_norm"):
        if (_get(values, key) or 0) < 0:
            raise ConfigError(
                f"config key '{key}' must be >= 0 (0 = unset), got {_get(values, key)}"
            )
    if bool(values["total_steps"]) == bool(values["num_epochs"]):
        raise ConfigError(
            "set exactly one of config keys 'total_steps' and 'num_epochs' to a positive value "
            f"(got total_steps={values['total_steps']}, num_epochs={values['num_epochs']})"
        )
    for key in ("batch_size", "eval_batch_size"):
        size = values[key]
        if size and size % num_devices:
            raise ConfigError(
                f"config key '{key}'={size} is not divisible by the {num_devices} devices; "
                f"use a multiple of {num_devices}, e.g. --config.{key}="
                f"{max(num_devices, size // num_devices * num_devices)}"
            )
    micro = values["optimizer"]["accumulate_steps"]
    if values["batch_size"] % (micro * num_devices):
        raise ConfigError(
            f"config key 'batch_size'={values['batch_size']} must split into "
            f"optimizer.accumulate_steps={micro} micro-batches of a multiple of {num_devices} "
            "devices; change one of them"
        )
    stopping = values["early_stopping"]
    if selecting:
        check_selection_metric("config key 'best_metric'", values["best_metric"])
        if stopping["metric"]:
            check_selection_metric("config key 'early_stopping.metric'", stopping["metric"])
    if stopping["min_delta"] < 0:
        raise ConfigError(
            f"config key 'early_stopping.min_delta' must be >= 0, got {stopping['min_delta']}"
        )
    profile = values["profile_steps"]
    if profile and (len(profile) != 2 or profile[0] < 1 or profile[1] < 1):
        raise ConfigError(
            f"config key 'profile_steps' is {tuple(profile)}; use (first_step, num_steps) with "
            "both >= 1, e.g. --config.profile_steps='(10, 5)', or () for off"
        )
    for key in ("freeze", "init_from_skip"):  # path regexes: fail here, not mid-build
        for pattern in values[key]:
            if not isinstance(pattern, str):
                raise ConfigError(
                    f"config key '{key}' holds {pattern!r}; it takes regexes over parameter "
                    f"paths, e.g. --config.{key}=\"('convs/.*',)\""
                )
            try:
                re.compile(pattern)
            except re.error as e:
                raise ConfigError(f"config key '{key}': {pattern!r} is not a regex ({e})") from e
    if not values["data"]["eval_splits"]:
        raise ConfigError("config key 'data.eval_splits' is empty; name at least one split")


def task_settings(
    config: ml_collections.ConfigDict,
    defaults: Mapping[str, Any],
    choices: Mapping[str, Sequence[Any]] | None = None,
) -> dict:
    """An experiment's settings: `defaults` updated by `config.task`, refusing unknown keys,
    values of another type than the default's, and values outside `choices[key]`, with the key
    named."""
    settings = dict(defaults)
    for key, value in config.task.to_dict().items():
        if key not in defaults:
            raise ConfigError(
                f"config key 'task.{key}' is unknown to experiment {config.experiment!r}"
                f"{_did_you_mean(key, list(defaults))}; it reads: {', '.join(sorted(defaults))}"
            )
        default = defaults[key]
        numeric = isinstance(default, float) and isinstance(value, int)
        if not (isinstance(value, type(default)) or numeric) or isinstance(
            value, bool
        ) != isinstance(default, bool):
            raise ConfigError(
                f"config key 'task.{key}' must be {type(default).__name__} like its default "
                f"{default!r}, got {type(value).__name__} {value!r}"
            )
        settings[key] = float(value) if numeric else value
    for key, allowed in (choices or {}).items():
        if settings[key] not in allowed:
            raise ConfigError(
                f"config key 'task.{key}' is {settings[key]!r}; choose one of "
                f"{', '.join(map(str, allowed))}"
            )
    return settings


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def read(workdir: str) -> ml_collections.ConfigDict:
    """A run's resolved config from `workdir/config.json`. Keys added to ann since the run was
    written take their defaults, so older runs still restore and export."""

    def fill(values: dict, schema: Mapping[str, Any]) -> None:
        for key, spec in schema.items():
            if isinstance(spec, Mapping):
                fill(values.setdefault(key, {}), spec)
            else:
                values.setdefault(key, spec[0])

    with open(os.path.join(workdir, "config.json")) as f:
        values = json.load(f)
    fill(values, SCHEMA)
    values["data"]["eval_splits"] = tuple(values["data"]["eval_splits"])  # JSON made it a list
    return ml_collections.ConfigDict(values)


def write(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes the resolved config to `workdir/config.json` atomically; returns the path."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(to_json(config) + "\n")
    os.replace(tmp, path)
    return path
