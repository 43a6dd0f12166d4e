"""Task definitions, found by name (`config.experiment`) or as `package.module:ClassName`."""

from __future__ import annotations

import importlib
from typing import Any

import ml_collections

from ann import config as config_lib
from ann import models
from ann.config import ConfigError

_EXPERIMENTS = {
    "classification": "experiments.classification:Classification",
    "language_modelling": "experiments.language_modelling:LanguageModelling",
    "seq2seq": "experiments.seq2seq:Seq2Seq",
    "retrieval": "experiments.retrieval:Retrieval",
    "forecasting": "experiments.forecasting:Forecasting",
    "anomaly_detection": "experiments.anomaly_detection:AnomalyDetection",
    "regression": "experiments.regression:Regression",
}


def get(name: str) -> type:
    """The experiment class for `name`."""
    target = _EXPERIMENTS.get(name, name)
    if ":" not in target:
        raise ConfigError(
            f"config key 'experiment': unknown experiment {name!r}; use one of "
            f"{', '.join(sorted(_EXPERIMENTS))} or package.module:ClassName"
        )
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"config key 'experiment': cannot import {target!r} ({e})") from e


def check_config(config: ml_collections.ConfigDict, num_devices: int) -> Any:
    """Everything a command can check before it reads data: the config's keys, types, choices
    and ranges (`ann.config.validate`, the batch against `num_devices`), the model's arguments,
    their ranges and dtypes (`ann.models.check_config`), and the experiment's `task.*`
    settings. Returns the experiment, built from the config; raises ConfigError."""
    config_lib.validate(config, num_devices)
    models.check_config(config)
    return get(config.experiment)(config)
