"""A sweep's definition: the config file's `get_config` and `get_sweep(h)`, the keys fixed on
the sweep's command line, and each trial's config checked exactly as `ann.main` will parse it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import os
from collections.abc import Collection
from typing import Any

import ml_collections
from absl import flags

from ann import atomic, cli, config_file
from ann import config as config_lib
from ann.sweep import results, space
from ann.sweep.space import Overrides, SweepError
from ann.sweep.trials import DATA_DIR_ENV, Trial, cli_value


@dataclasses.dataclass
class Definition:
    config: str  # configs/NAME.py[:ARG]
    fixed: Overrides  # --config.KEY=VALUE given to the sweep: the same for every trial
    node: space.Node  # what get_sweep(h) returned
    base: ml_collections.ConfigDict  # get_config(arg) with the fixed keys applied
    # The absolute directory its trials read their data from, once `settle_data_dir` chose it,
    # and the data.data_dir they give for it ("", or a path).
    data_dir: str = ""
    given_data_dir: str = ""
    # Where the sweep started (sweep.json's cwd; here for a new sweep), once settled: a
    # relative directory a trial sweeps is read from there.
    start_cwd: str = ""

    def trial(self, name: str, overrides: Overrides, sweep_dir: str, **kw: Any) -> Trial:
        trial = Trial(name, overrides, self.fixed, self.config, sweep_dir, os.getcwd(), **kw)
        return self.reading_data(trial)

    def reading_data(self, trial: Trial) -> Trial:
        """`trial`, reading `data_dir`: a data.data_dir "" by its environment's $TFDS_DATA_DIR,
        always (so each of its standalone commands, command.sh, --dry_run, --emit and
        results.md's, reads the sweep's data in any shell, not only where this one resolves
        elsewhere); a relative path (the sweep's, anchored where it started) by its command's
        data.data_dir, made absolute where it resolves elsewhere here (resumed from another
        working directory). A directory of its own (get_sweep sweeps several) is anchored
        where the sweep started too."""
        given = trial.overrides.get("data.data_dir", self.base.data.data_dir)
        if not self.data_dir:
            return trial  # not settled
        if given != self.given_data_dir:  # a swept directory of its own: it reads that
            started = os.path.normpath(os.path.join(self.start_cwd, given))
            if not given or os.path.abspath(os.path.join(trial.cwd, given)) == started:
                return trial
            return dataclasses.replace(trial, data_dir=started)
        if not given:
            return dataclasses.replace(trial, env={**trial.env, DATA_DIR_ENV: self.data_dir})
        if os.path.abspath(os.path.join(trial.cwd, given)) == self.data_dir:
            return trial  # it resolves to it here: a new sweep, or one resumed where it began
        return dataclasses.replace(trial, data_dir=self.data_dir)


def given_data_dir(definition: Definition) -> str:
    """The data.data_dir the sweep's trials give: the one value get_sweep gives them all, else
    the config's (with the sweep's fixed keys). A get_sweep that sweeps several reads each."""
    if "data.data_dir" in definition.node.keys():
        for param in definition.node.params():
            if not param.searchable:  # one value
                value = param.decode(param.distribution.choices[0]).get("data.data_dir")
                if value is not None:
                    return value
    return definition.base.data.data_dir


def settle_data_dir(definition: Definition, sweep_dir: str) -> None:
    """Sets `definition.data_dir`, where the trials of the sweep in `sweep_dir` read their data
    (sweep.json records it, absolute). A new sweep's is what its trials' data.data_dir
    (`given_data_dir`) resolves to here, a relative one from the working directory it starts
    in; a resumed one's is the directory sweep.json recorded at its start while it holds
    the data set (`ann.data.data_dir.choose`: a `note:` line where this shell resolves another,
    a `warning:` where it is gone), so trials started after a resume read what the first read,
    unless the resume changed a fixed data.data_dir."""
    from ann.data import data_dir as data_dir_lib

    given, name = given_data_dir(definition), definition.base.data.name
    recorded = results.recorded(sweep_dir, "data_dir")
    if "data.data_dir" in results.changed_fixed(sweep_dir, definition.fixed):
        # A fixed data.data_dir the resumed sweep did not have (`check_same_sweep` let it
        # through: no trial trained on the old one, e.g. a directory without the data): its
        # trials read the new one, without a warning that the old one "no longer" holds it.
        recorded = None
    chosen = data_dir_lib.choose(given, name, recorded, f"the sweep at {sweep_dir}")
    definition.data_dir = data_dir_lib.resolved(chosen)
    definition.given_data_dir = given
    definition.start_cwd = results.recorded(sweep_dir, "cwd") or os.getcwd()


def load(config: str, fixed: Overrides) -> Definition:
    """Loads `configs/NAME.py[:ARG]`; an error naming the fix if it has no usable get_sweep."""
    path, _, arg = config.partition(":")
    if not os.path.isfile(path):
        if (above := atomic.below_a_file(path)) is not None:
            raise SweepError(f"--config={config} cannot exist: {above}")
        raise SweepError(f"--config={config}: no such file {path!r}")
    spec = importlib.util.spec_from_file_location("ann_sweep_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    get_sweep = getattr(module, "get_sweep", None)
    if get_sweep is None:
        raise SweepError(
            f"{path} has no get_sweep(h); add one beside get_config, e.g. "
            "def get_sweep(h): return h.sweep('optimizer.learning_rate', [1e-3, 3e-3])"
        )
    h = space.Builder()
    # get_sweep(h) or get_sweep(h, arg): a variant (configs/x.py:arg) may sweep differently.
    takes = len(inspect.signature(get_sweep).parameters)
    if takes == 0:
        raise SweepError(
            f"{path}: get_sweep() takes no argument; it is given h, the space builder: "
            "def get_sweep(h): return h.sweep('optimizer.learning_rate', [1e-3, 3e-3])"
        )
    try:
        node = get_sweep(h, arg or None) if takes > 1 else get_sweep(h)
    except SweepError:
        raise  # h's own refusal (an empty h.sweep, a range the wrong way round): one line
    except Exception as e:  # the file's own code: its line, as an error in get_config is said
        said = cli.config_code_error(e, config)
        if said is None:
            raise  # not the config file's: a bug to read with its traceback
        raise SweepError(said) from None
    if not isinstance(node, space.Node):
        raise SweepError(
            f"{path}: get_sweep(h) returned {node!r}; return h.sweep(...), h.product(...), "
            "h.zip(...) or h.random(...)"
        )
    try:
        base = checked(config, fixed)
    except config_lib.ConfigError as e:  # a key the file, not a fixed override, got wrong
        if (worded := config_file.key_error(e, config, fixed)) is not e:
            raise SweepError(str(worded)) from None
        raise
    space.check_keys(node, base, path)
    overlap = sorted(set(node.keys()) & set(fixed))
    if overlap:
        raise SweepError(
            f"--config.{overlap[0]} is fixed on the sweep command line and also swept by "
            "get_sweep; drop one of them"
        )
    return Definition(config, dict(fixed), node, base)


def parse(
    config: str, overrides: Overrides, swept: Collection[str] = ()
) -> ml_collections.ConfigDict:
    """The config `python -m ann.main --config=CONFIG --config.K=V ...` would build, parsed by
    the same flag machinery, so a value the CLI would reject fails here, before any run.
    `swept`: the keys of `overrides` that get_sweep gave (a refusal spells them in Python)."""
    argv = ["ann.main", f"--config={config}"]
    argv += [f"--config.{k}={cli_value(v)}" for k, v in overrides.items()]
    values = flags.FlagValues()
    cli.define_config("", flag_values=values, sys_argv=argv)
    try:
        values(argv)
    except (flags.Error, AttributeError, TypeError, ValueError, KeyError) as e:
        said = cli.one_line(e, argv)
        # As `ann train` says it ("--config.batch_size=big must be an integer ..."), not
        # absl's "flag --config.batch_size=big: invalid literal for int() with base 10".
        worded = cli.bad_override(said, argv)
        raise SweepError(worded if worded != said else f"{' '.join(argv[2:])}: {said}") from None
    # A number swept (or fixed) for a tuple key would run as a 1-tuple: `ann train` refuses it.
    if (said := cli.number_for_a_tuple(argv, values["config"].value, swept)) is not None:
        raise SweepError(said)
    cli.drop_switched_model_keys(values, say=False)  # a trial's config.json shows what it ran
    return values["config"].value


def checked(
    config: str, overrides: Overrides, swept: Collection[str] = ()
) -> ml_collections.ConfigDict:
    """The config `ann train` would build from `config` and `overrides` (`parse`), after the
    checks it makes before reading data (`ann.experiment.check_config`, on one device: a
    trial's devices are not known here), overrides that change nothing included
    (`ann.config.unchanged_overrides`). Raises SweepError or ConfigError."""
    from ann import experiment  # imports JAX; only a sweep that runs needs it

    built = parse(config, overrides, swept)
    unchanged = config_lib.unchanged_overrides(parse(config, {}), overrides)
    # The file's own lines, as `ann train` reads them.
    unchanged |= config_file.set_in_file(config, built, overrides)
    experiment.check_config(built, num_devices=1, unchanged=unchanged)
    return built


def check_trial(definition: Definition, trial: Trial) -> str:
    """Validates the trial's full config (types, choices, ranges); returns its config JSON."""
    try:
        config = checked(definition.config, trial.values(), set(trial.overrides))
    except (SweepError, config_lib.ConfigError) as e:
        if (worded := config_file.key_error(e, definition.config, trial.values())) is not e:
            raise SweepError(str(worded)) from None  # the config file's, every trial's
        # An unknown key's `what` names the key meant; its `fix` is a flag to type, not the
        # change to get_sweep.
        unknown = isinstance(e, config_lib.KeyValueError) and e.unknown
        said = e.what if unknown else str(e)
        raise SweepError(
            f"trial {trial.name}: {said}; change get_sweep (or the sweep's --config flags)"
        ) from None
    return config_lib.to_json(config)
