"""Building a run: validate the config, open the data, build the model and its train state.

What training, export, generation and transfer share, without the loop: `build` makes a `Setup`
(nothing compiled, no data flowing), `restore_model` a trained run's model from its workdir.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import ml_collections
from flax import nnx

from ann import config as config_lib
from ann import data, models, parallel
from ann import experiment as experiment_lib
from ann.data import data_dir as data_dir_lib
from ann.experiment import Experiment
from ann.train import freezing, optimizers
from ann.train import state as state_lib
from ann.train.checkpoint import Checkpoints


def make_experiment(config: ml_collections.ConfigDict) -> Experiment:
    """The experiment `config.experiment` names, built from the config. Raises ConfigError."""
    return experiment_lib.call(experiment_lib.get(config.experiment), "__init__", config)


def total_steps(config: ml_collections.ConfigDict, num_train: int) -> int:
    """`config.total_steps`, or `num_epochs` over `num_train` examples in batches, at least 1."""
    if config.total_steps:
        return int(config.total_steps)
    return config_lib.steps_for_epochs(config.num_epochs, num_train, config.batch_size)


@dataclasses.dataclass
class Setup:
    """Everything a run is built from, before any data flows or anything compiles."""

    experiment: Experiment
    mesh: jax.sharding.Mesh
    train_split: data.Split
    validation_split: data.Split | None  # chooses (`val/` metrics); None when not training
    eval_splits: list[data.Split]  # reported (`eval/`, `eval_<split>/`); [] when not training
    total_steps: int
    tx: Any
    model_def: state_lib.ModelDef
    init: state_lib.Initializer  # the jitted sharded init; runs on `.state` only
    abstract_state: Any  # shapes, dtypes, shardings: what a checkpoint restores into
    data_seconds: float = 0.0  # of building it, the time spent opening the data splits
    data_dir: str = ""  # what the splits were read from (data.load's; ann.data.data_dir)
    freeze_summary: str = ""  # what `freeze` freezes, for the run's log ("" without it)

    @property
    def state_shardings(self) -> Any:
        return state_lib.shardings_of(self.abstract_state)

    @functools.cached_property
    def state(self) -> state_lib.TrainState:
        """A freshly initialized state, placed on the mesh: compiled and computed on first use
        (a resumed or finished run restores into `abstract_state` and never needs it)."""
        return self.init()


def build(
    config: ml_collections.ConfigDict,
    experiment: Experiment,
    for_training: bool = True,
    data_dir: str | None = None,
) -> Setup:
    """Validates the config, opens the data, and builds the model and its train state.

    `data_dir` is where the data is read from (`ann.data.data_dir.for_run`: a run's record
    wins over today's $TFDS_DATA_DIR); None: the config's `data.data_dir`.

    `for_training=False` (restoring a model to use it) skips the checks that only matter for
    training here, such as the batch dividing this machine's device count, the selection
    metrics being `val/` ones (older runs chose on `eval/`) and `report.slices` (the report
    checks its own splits), opens only the train split, and
    replicates the model over this machine's devices whatever mesh it was trained on.
    Raises ConfigError for a bad config.
    """
    config_lib.validate(config, jax.device_count() if for_training else 1, selecting=for_training)
    models.record_registered(config)  # config.json names the class, not its short name
    experiment_lib.record_registered(config)
    models.check_config(config)  # model.* keys and dtypes, before any data is read
    if for_training:
        config_lib.check_task_keys_apply(config, experiment)
        mesh = parallel.make_mesh(config.mesh.to_dict())
        rules = config.sharding_rules
    else:
        mesh, rules = parallel.make_mesh({"data": -1, "fsdp": 1, "tensor": 1}), "replicate"
    # Data first: the experiment learns its classes and input statistics from the train split.
    dc = config.data
    data_dir = dc.data_dir if data_dir is None else data_dir
    data_start = time.perf_counter()
    train_split = data.load(dc.name, dc.train_split, data_dir, dc.cache, "data.train_split")
    validation_split, eval_splits = None, []
    if for_training:
        data.check_batch_size(train_split, config.batch_size)  # before the workdir is written
        validation_split = data.load(
            dc.name, dc.validation_split, data_dir, dc.cache, "data.validation_split"
        )
        eval_splits = [
            data.load(dc.name, s, data_dir, dc.cache, "data.eval_splits") for s in dc.eval_splits
        ]
        data.check_splits_apart(train_split, validation_split, eval_splits)
        data.check_finite(train_split, "data.train_split")
        data.check_finite(validation_split, "data.validation_split")
        for split in eval_splits:
            data.check_finite(split, "data.eval_splits")

    experiment_lib.call(experiment, "setup", train_split)
    experiment_lib.check_inputs(experiment, train_split)
    report = config.report
    # Only before training: a trained run's model restored (export, generate, report) does not
    # use report.* here, and `ann report` refuses what its own splits cannot take, saying how
    # the run takes another entry (a rerun): export refused a run for its report setting.
    if for_training and (report.slices or report.slice_min or report.slice_max):
        from ann.report import slicing

        slicing.check(config, experiment, train_split)
    data_seconds = time.perf_counter() - data_start
    steps = total_steps(config, len(train_split))
    config_lib.check_run_steps(
        config, steps, len(train_split)
    )  # num_epochs=1e8: one line, not a hung start
    # The schedule against the run's length, now known: a bound past it names num_epochs too.
    config_lib.check_ranges(config.to_dict(), total_steps=steps)
    tx = optimizers.make(config.optimizer, steps, freeze=tuple(config.freeze))
    # Built on the devices, each holding only its shards (a model too big for one can start),
    # and only when no checkpoint is restored instead (Setup.state).
    model_def, init, abstract_state = state_lib.sharded_initializer(
        lambda: experiment.build_model(nnx.Rngs(params=config.seed)),
        tx,
        config.seed,
        rules,
        mesh,
    )
    # Frozen BatchNorm layers: decided from paths alone.
    model_def, freeze_summary = freezing.freeze_statistics(model_def, abstract_state, config.freeze)
    return Setup(
        experiment=experiment,
        mesh=mesh,
        train_split=train_split,
        validation_split=validation_split,
        eval_splits=eval_splits,
        total_steps=steps,
        tx=tx,
        model_def=model_def,
        init=init,
        abstract_state=abstract_state,
        data_seconds=data_seconds,
        data_dir=data_dir,
        freeze_summary=freeze_summary,
    )


def restore_model(
    workdir: str, step: int | str = "best", data_dir: str | None = None
) -> tuple[Experiment, nnx.Module, int, ml_collections.ConfigDict]:
    """A trained run's model in eval mode, from its latest config (`config_lib.latest`: a
    rerun's changes included) and a checkpoint: `step` is "best", "latest" or a step number;
    its train split (what the experiment learns its classes from) read from `data_dir`, None:
    where the run read it (`ann.data.data_dir.for_run`). Returns (experiment, model, step,
    config). Raises ConfigError (config.json) or CheckpointError (no such step, a damaged
    one); ValueError (`cli.FlagError`) naming `workdir` where it holds no run (missing, an
    export, a run's checkpoints/: it was a FileNotFoundError of its config.json)."""
    from ann import cli, directory_kind
    from ann.imports import recorded_in

    if directory_kind.RUN not in directory_kind.of(workdir):  # a run's own checks say nothing
        with cli.as_arguments(("workdir", "step")):
            cli.check_trained_run(workdir, "best")
    config = config_lib.latest(workdir)  # with a rerun's report/calibration changes
    if data_dir is None:
        data_dir = data_dir_lib.for_run(config, workdir)
    # Its experiment or model a user's, elsewhere? Its config.json's refusals name no line of a
    # --config file.
    with recorded_in(f"the run in {workdir}"), config_lib.from_a_record():
        setup = build(config, make_experiment(config), for_training=False, data_dir=data_dir)
    checkpoints = Checkpoints(
        workdir, config.max_to_keep, config.best_metric, config.best_mode, create=False
    )
    try:
        state, step = checkpoints.restore_state(setup.abstract_state, step)
    finally:
        checkpoints.close()
    return setup.experiment, state_lib.merge(setup.model_def.eval, state), step, config
