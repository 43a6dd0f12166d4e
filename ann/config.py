"""The shared config schema, its defaults, and validation before anything compiles.

Config files are plain Python (`get_config(arg)` returning a ConfigDict) that start from
`base()`. `validate` checks every key against the schema below, so a typo or a wrong type fails in
one line naming the key and the fix, not deep inside JAX.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import difflib
import json
import math
import os
import re
import shlex
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import ml_collections

from ann import atomic

NoneType = type(None)


class ConfigError(ValueError):
    """A user mistake in the config; the message names the key and the fix."""


class KeyValueError(ConfigError):
    """A refusal of one key's name or value (an unknown key, a value of another type, out of
    range, not a choice), which a config file as well as an override can make: `key`, the
    dotted key; `what`, the refusal without its command-line fix ("config key 'x' is unknown
    (did you mean 'y'?)"), which may end in a fix in words ("name each split once"); `fix`,
    the command-line fix ("e.g. --config.x=3"), appended to `what` in the message; `meant`,
    the keys an unknown name points at; `example`, a value to set the key to (None where there
    is none); `unknown`, whether the key's name, not its value, is refused; `depends_on`, the
    other keys the refusal reads (a range's bound: `optimizer.warmup_steps` below
    `total_steps`); `file_fix`, the fix in the config file's words where no `example` says it
    ("drop the line, or set optimizer.name to 'sgd'"); `also`, other keys to set with
    `example` (key -> value: a data set's experiment with the `best_metric` and `best_mode` its
    own config sets); `others`, keys refused with `key` for the same reason (a switched
    model's leftover arguments); `bound_fix`, the command-line fix where the config file set
    the key and a flag a key it depends on (`fix` is a flag's: "drop --config.KEY"). `ann.cli`
    words it for the config file where the file, not an override, set the key and the keys it
    depends on: its file and line, the fix as the file spells it."""

    def __init__(
        self,
        key: str,
        what: str,
        fix: str = "",
        *,
        meant: Sequence[str] = (),
        example: Any = None,
        unknown: bool = False,
        depends_on: Sequence[str] = (),
        file_fix: str = "",
        also: Mapping[str, Any] | None = None,
        others: Sequence[str] = (),
        bound_fix: str = "",
    ):
        super().__init__(f"{what}; {fix}" if fix else what)
        self.key, self.what, self.meant, self.example = key, what, list(meant), example
        self.unknown, self.depends_on, self.file_fix = unknown, tuple(depends_on), file_fix
        self.also, self.others, self.bound_fix = dict(also or {}), tuple(others), bound_fix


class KeyValueErrors(ConfigError):
    """Several `KeyValueError`s said in one refusal, joined by "; also " (every ignored
    setting of a config at once: fixing one to be refused for the next cost a run each);
    `errors`, the refusals. `ann.cli` words each for the config file as it would alone."""

    def __init__(self, errors: Sequence[KeyValueError]):
        super().__init__("; also ".join(str(e) for e in errors))
        self.errors = list(errors)


@contextlib.contextmanager
def from_a_record() -> Iterator[None]:
    """Refusals of a config read from a trained run's config.json (`build.restore_model`: what
    export, report and generate restore), not from the `--config` file: a `KeyValueError`
    made a plain ConfigError, so that `ann.cli.in_config_file` names no line of the
    `--config` file that sets a key of the same name."""
    try:
        yield
    except (KeyValueError, KeyValueErrors) as e:
        raise ConfigError(str(e)) from None


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
        # Hold decoded splits in memory: "auto" = those that fit in ann.data.sources'
        # CACHE_LIMIT_BYTES (1 GiB each); "on" = always; "off" = stream every split from disk.
        "cache": ("auto", str),
        "shuffle": (True, bool),
        # Threads of grain's own reading batches ahead; 0: read in the device prefetch thread,
        # which already runs ahead of the step (a thread more costs CPU: docs/benchmarks.md).
        "read_threads": (0, int),
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
    # Train steps run in one compiled call (a `jax.lax.scan` over a stack of batches; metrics
    # stay on the device until a hook needs them): fewer Python dispatches for small models.
    # 0 = auto (ann/train/chunks.py: 1 for a step over 0.2 GFLOP, else a divisor of the hook
    # periods, at most 10, the stacked batches at most 64 MiB); 1 = one step per call. A call
    # never crosses a hook's step.
    "steps_per_call": (0, int),
    "log_every_steps": (50, int),
    "eval_every_steps": (200, int),
    "checkpoint_every_steps": (200, int),
    "max_to_keep": (3, int),
    # A `val/` metric (of data.validation_split): model selection never looks at the test split.
    "best_metric": ("val/accuracy", str),
    "best_mode": ("max", str),
    # How export calibrates a classifier's probabilities (ann/calibrate.py): "temperature" fits
    # one temperature on the validation split (Guo et al. 2017) and folds it into the exported
    # graph; "none" exports softmax(logits). Tasks without class logits ignore it.
    "calibration": ("temperature", str),
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
    # Most MiB that cache's directory keeps (its least recently used executables removed past
    # it: ann/compilation_cache.py); -1 = no bound.
    "compilation_cache_max_mb": (1024.0, (float, int)),
    # Device mesh axes (-1 = the remaining devices): the batch splits over data x fsdp;
    # parameters and their optimizer state split over fsdp and tensor by `sharding_rules`.
    "mesh": {"data": (-1, int), "fsdp": (1, int), "tensor": (1, int)},
    # A preset (replicate, fsdp, fsdp+tensor) or ordered (path regex, placement) pairs; see
    # ann/sharding.py. "fsdp" with mesh.fsdp=1 (the default) replicates.
    "sharding_rules": ("fsdp", (str, tuple, list)),
    # `ann report`'s slices (ann/report/slice_spec.py): entries 'label',
    # 'feature:NAME[INDEX]:quantiles=4' or 'field:NAME'. A slice is flagged when its headline
    # score (accuracy, AUROC, recall@1, exact match) is below `slice_min`, or its headline error
    # (RMSE, MAE, bits per char) above `slice_max`; 0 = no bound. `target_recall`: the recall
    # at which a binary classifier's report gives the precision and the threshold. `lm_rows`:
    # a language model's report scores every character of the split's first `lm_rows` windows,
    # one forward pass per character (its cost grows with lm_rows x window length).
    "report": {
        "slices": ((), (tuple, list)),
        "slice_min": (0.0, (float, int)),
        "slice_max": (0.0, (float, int)),
        "target_recall": (0.9, (float, int)),
        "lm_rows": (32, int),
    },
}

CHOICES = {
    "data.cache": ("auto", "on", "off"),
    "optimizer.name": ("sgd", "adam", "adamw"),
    "optimizer.schedule": ("constant", "warmup_cosine", "step"),
    "best_mode": ("max", "min"),
    "calibration": ("temperature", "none"),
    "early_stopping.mode": ("max", "min"),
    "dtype": ("float32", "bfloat16", "float16"),
    "param_dtype": ("float32", "bfloat16", "float16"),
}


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: an interval in interval notation (`closed` says
    which ends belong to it, e.g. "[)" for 0 <= x < 1), plus `also`: single values with a
    meaning of their own (0 = unset, -1 = the remaining devices), which `means` tells the user
    (e.g. "0: num_epochs decides"). A bound may name another key
    ("total_steps"); the check then waits until that key's value is known. For a sequence
    value each element must lie in the range, in increasing order if `increasing`."""

    low: float | str = -math.inf
    high: float | str = math.inf
    closed: str = "[]"
    also: tuple[Any, ...] = ()
    increasing: bool = False
    means: str = ""
    nonempty: bool = False  # for a sequence: () is refused too (a CNN without convolutions)

    def check(
        self,
        path: str,
        value: Any,
        resolve: Callable[[str], Any],
        example: Any = None,
        accepts: Callable[[Any], bool] | None = None,
    ) -> None:
        """Raises ConfigError naming `path`, the range and an in-range value to set instead
        (see `suggest`; `example` is tried first, e.g. the key's default) if `value` is
        outside the range. `resolve(key)` gives a named bound's value; a bound still 0 (unset)
        skips the check. None (unset), a string or a bool is not checked: a wrong type is for
        the schema (or the model) to report."""
        if value is None or isinstance(value, str | bool):
            return
        low, high = (resolve(b) if isinstance(b, str) else b for b in (self.low, self.high))
        if not low and isinstance(self.low, str) or not high and isinstance(self.high, str):
            return  # e.g. total_steps comes from num_epochs once the data set is open
        items = list(value) if isinstance(value, Sequence) else [value]
        ordered = not self.increasing or all(a < b for a, b in zip(items, items[1:]))
        filled = items or not self.nonempty
        if filled and ordered and all(self._contains(x, low, high) for x in items):
            return
        # The named bound's "lower this or raise it" only where a value is past it (-1 below
        # [0, 200) was told to lower itself).
        above = any(isinstance(x, int | float) and x >= high for x in items)
        text = self._describe(low, high, resolve, above)
        if any(isinstance(x, float) and not math.isfinite(x) for x in items):
            text = f"finite and {text}"  # "must be > 0, got inf" said nothing inf is not
        if isinstance(value, Sequence):
            each = "one or more elements, each" if self.nonempty else "each element"
            text = f"{'increasing, ' if self.increasing else ''}{each} {text}"
            fix = None
            if isinstance(example, Sequence) and example and not isinstance(example, str):
                fix = tuple(example)
            if fix is None:  # as many elements, spread evenly inside the range
                fix = self._spread(items, low, high)
            hint = f"e.g. --config.{path}='{fix}'"  # quoted for the shell
        else:
            fix = self.suggest(value, low, high, example, accepts)
            hint = f"e.g. --config.{path}={fix}"
        what = f"config key '{path}' must be {text}, got {value!r}"
        bounds = [b for b in (self.low, self.high) if isinstance(b, str)]
        if "total_steps" in bounds:
            bounds.append("num_epochs")  # what total_steps may come from
        hint = hint if fix is not None else ""
        raise KeyValueError(path, what, hint, example=fix, depends_on=bounds)

    def _spread(self, items: list[Any], low: float, high: float) -> tuple | None:
        """`len(items)` values spread evenly inside (low, high), integers for integers, for a
        sequence refused with no example (`step_boundaries=(400, 600)` against
        `total_steps=50`: (16, 33)); None where they would not pass (too many for the range,
        a bound not finite, elements that are not numbers)."""
        numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in items)
        if not items or not numbers or not (math.isfinite(low) and math.isfinite(high)):
            return None
        whole = all(isinstance(x, int) for x in items)
        spread = [low + (high - low) * (i + 1) / (len(items) + 1) for i in range(len(items))]
        values = tuple(int(x) if whole else round(x, 6) for x in spread)
        increasing = all(a < b for a, b in zip(values, values[1:]))
        inside = all(self._contains(x, low, high) for x in values)
        return values if increasing and inside else None

    def suggest(
        self,
        value: float,
        low: float,
        high: float,
        example: Any = None,
        accepts: Callable[[Any], bool] | None = None,
    ) -> Any:
        """A value to suggest instead of `value`: the first of `example`, the interval's
        midpoint (of an interval at most 1000 wide), its lower end, one past it, 10, 100, 1000,
        its upper end and then `also` (values that mean "unset") that lies in the range and that
        `accepts` (the other checks with this value in place) takes; None if none does.
        Integers for an integer setting."""
        whole = isinstance(value, int) and (example is None or isinstance(example, int))
        tries = [example]
        if math.isfinite(low) and high - low <= 1000:  # not total_steps' 1073741824
            tries.append((low + high) / 2)
        tries += [low, low + 1, 10, 100, 1000, high]  # a value one would type before a bound
        # The "unset" values last (num_epochs' 0, its default and its open bound, was the
        # example for num_epochs=inf).
        tries = [x for x in tries if x not in self.also] + list(self.also)
        for x in tries:
            if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
                continue
            x = int(x) if whole and float(x).is_integer() else x
            if whole and not isinstance(x, int):
                continue
            if self._contains(x, low, high) and x != value and (accepts is None or accepts(x)):
                return x
        return None

    def _contains(self, x: float, low: float, high: float) -> bool:
        if not math.isfinite(x):  # no setting means inf: weight_decay=inf passed ">= 0"
            return x in self.also
        above = x >= low if self.closed[0] == "[" else x > low
        below = x <= high if self.closed[1] == "]" else x < high
        return (above and below) or x in self.also

    def _describe(
        self, low: float, high: float, resolve: Callable[[str], Any], above: bool = True
    ) -> str:
        low_, high_ = _number(low), _number(high)
        if high == math.inf:
            text = f"{'>=' if self.closed[0] == '[' else '>'} {low_}"
        else:
            text = f"in {self.closed[0]}{low_}, {high_}{self.closed[1]}"
            if isinstance(self.high, str):
                fix = f"; lower this or raise {self._decider(resolve)}" if above else ""
                text += f" ({self.high}={high_}{fix})"
        text += "".join(f" or {v}" for v in self.also)
        return f"{text} ({self.means})" if self.means else text

    def _decider(self, resolve: Callable[[str], Any]) -> str:
        """The key to raise for a larger upper bound: `num_epochs` when it sets total_steps."""
        if self.high == "total_steps":
            try:
                if resolve("num_epochs"):
                    return "num_epochs"
            except KeyError:  # a partial config
                pass
        return str(self.high)


def _number(x: float) -> str:
    """A bound or a count as a user would type it: whole numbers in full (4294967296, not
    4.29497e+09; num_epochs=1000000000, not 1e+09)."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


# The longest run: the train state's step counter and the optimizer's schedule count steps in
# int32 on the device (ann/train/state.py, ann/train/optimizers.py: JAX's default integers), so
# a step past 2**31 - 1 wraps negative; Orbax's step numbers (Python ints) hold more, the device
# does not. 2**31 - 1 steps of 1 ms are 25 days: no real run is refused. Also the bound on the
# steps num_epochs comes to (`check_run_steps`).
MAX_STEPS = 2**31 - 1

POSITIVE, NONNEGATIVE, FRACTION = Range(0, closed="()"), Range(0), Range(0, 1, closed="[)")
COUNT = Range(1)  # an integer count that cannot be 0
SIZES = Range(1, nonempty=True)  # layer sizes: at least one layer, each >= 1
REMAINING_DEVICES = "-1: the devices the other axes leave"

# key -> the values it may take. Keys of the open sections (`model.dropout`) are checked where a
# config sets them; `task.*` ranges are the experiments' own (`task_settings(ranges=...)`).
RANGES: dict[str, Range] = {
    "seed": Range(0, 2**32, closed="[)"),  # grain's and jax.random's seeds are unsigned 32-bit
    "batch_size": COUNT,
    "eval_batch_size": NONNEGATIVE,  # 0 = batch_size
    "total_steps": Range(1, MAX_STEPS, also=(0,), means="0: num_epochs decides the length"),
    "num_epochs": Range(0, closed="()", also=(0,), means="0: total_steps decides the length"),
    "data.read_threads": NONNEGATIVE,
    "data.prefetch_batches": NONNEGATIVE,
    "optimizer.learning_rate": POSITIVE,
    "optimizer.warmup_steps": Range(0, "total_steps", closed="[)"),
    "optimizer.end_learning_rate_factor": NONNEGATIVE,
    "optimizer.step_boundaries": Range(0, "total_steps", closed="()", increasing=True),
    "optimizer.step_factor": POSITIVE,
    "optimizer.momentum": FRACTION,
    "optimizer.b1": FRACTION,
    "optimizer.b2": FRACTION,
    "optimizer.eps": POSITIVE,
    "optimizer.weight_decay": NONNEGATIVE,
    "optimizer.grad_clip_norm": NONNEGATIVE,  # 0 = no clipping
    "optimizer.accumulate_steps": COUNT,
    # At most 100: the gain measured stops by 10 (auto's cap), a call's k batches sit on the
    # devices at once, and on the CPU a convolution step is unrolled k times, compiled before
    # step 0 (the digits CNN at 50: 63 s; 1000, at that rate, most of an hour).
    "steps_per_call": Range(1, 100, also=(0,), means="0: auto, chosen from the step's cost"),
    "log_every_steps": COUNT,
    "eval_every_steps": COUNT,
    "checkpoint_every_steps": COUNT,
    "max_to_keep": COUNT,
    "early_stopping.patience": COUNT,
    "early_stopping.min_delta": NONNEGATIVE,
    "mesh.data": Range(1, also=(-1,), means=REMAINING_DEVICES),
    "mesh.fsdp": Range(1, also=(-1,), means=REMAINING_DEVICES),
    "mesh.tensor": Range(1, also=(-1,), means=REMAINING_DEVICES),
    "model.dropout": FRACTION,  # every ann model's dropout rate (ann/models/)
    "report.slice_min": Range(0, 1),  # 0 = no bound
    "report.slice_max": NONNEGATIVE,  # 0 = no bound
    "report.target_recall": Range(0, 1, closed="(]"),
    "report.lm_rows": COUNT,
    "compilation_cache_max_mb": Range(0, closed="()", also=(-1,), means="-1: no bound"),
}


# Environment variables that win over a run's `compilation_cache_dir` and ann's
# every-program threshold (ann.train.loop): a benchmark of cold starts, or a test of the run's
# own cache, removes them from its subprocesses.
COMPILATION_CACHE_VARIABLES = (
    "JAX_COMPILATION_CACHE_DIR",
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
)

SELECTION_PREFIX = "val/"  # metrics of data.validation_split: the only ones that choose
# How a run refuses a selection metric it does not compute (ann.train.hooks.eval_metric); a
# sweep finds it in a failed trial's error line (ann.sweep.results.check_metric).
NOT_A_METRIC_OF_THIS_RUN = "is not a validation metric of this run"


# Metric names (the part after the split) that are better lower, and better higher: a mode
# against them is a mistake (val/loss with the default best_mode max kept the worst checkpoint).
LOWER_IS_BETTER = ("loss", "error", "rmse", "mae", "mse", "perplexity", "bits_per_char", "ece")
HIGHER_IS_BETTER = ("accuracy", "auroc", "f1", "precision", "recall", "exact_match")


def _check_run_settings(values: Mapping[str, Any]) -> None:
    """`profile_steps` (a pair, within the run) and `param_dtype` against the optimizer."""
    profile = values["profile_steps"]
    if profile and (len(profile) != 2 or profile[0] < 1 or profile[1] < 1):
        first, count = (list(profile) + [5])[:2]  # (20,): (20, 5)
        example = (max(first, 1), max(count, 1))
        what = (
            f"config key 'profile_steps' is {tuple(profile)}; use (first_step, num_steps), "
            "tracing steps first_step+1..first_step+num_steps, both >= 1 (the earliest trace "
            "starts at step 2: step 1 is mostly compilation), or () for off"
        )
        fix = f"e.g. --config.profile_steps='{example}'"
        raise KeyValueError("profile_steps", what, fix, example=example)
    if profile and values["total_steps"] and profile[0] > values["total_steps"]:
        what = (  # it was accepted and profiled nothing
            f"config key 'profile_steps' starts at step {profile[0]}, after the run's "
            f"{values['total_steps']} steps; profile steps within it"
        )
        fix = "e.g. --config.profile_steps='(10, 5)'"
        raise KeyValueError("profile_steps", what, fix, example=(10, 5))
    if values["param_dtype"] == "float16" and values["optimizer"]["name"] in ("adam", "adamw"):
        raise KeyValueError(
            "param_dtype",
            "config key 'param_dtype' is 'float16' with optimizer "
            f"{values['optimizer']['name']!r}: its second moments and eps (1e-8) underflow in "
            "float16 (measured: the state turns non-finite at step 2); keep parameters in "
            "float32 or bfloat16 (dtype float16 computes in float16 with float32 parameters)",
            "e.g. --config.param_dtype=bfloat16",
            example="bfloat16",
            depends_on=("optimizer.name",),
        )


def implied_mode(metric: str) -> str | None:
    """The mode a metric's name implies: "min" for one better lower (`val/loss`,
    `val/naive_rmse`), "max" for one better higher (`val/accuracy`), None where it does not
    say (`val/threshold`)."""
    name = metric.rpartition("/")[2]
    if any(name == w or name.endswith("_" + w) for w in LOWER_IS_BETTER):
        return "min"
    if any(name == w or name.endswith("_" + w) for w in HIGHER_IS_BETTER):
        return "max"
    return None


def meant_metric(metric: str, names: Sequence[str]) -> str:
    """` (did you mean 'val/accuracy'?)` for the one of `names` closest to `metric` by the name
    after the split (the shared "val/" made 'val/xyz' close to 'val/f1'), or ""."""
    bare = {n.rpartition("/")[2]: n for n in names}
    near = _near(metric.rpartition("/")[2], list(bare))
    return meant_words([bare[near[0][1]]]) if near else ""


def _mode_fault(what: str, metric: str, mode_name: str, mode: str) -> tuple[str, str] | None:
    """(the refusal without its fix, the mode wanted) where `mode` runs against what
    `metric`'s name says is better; None where it agrees or the name says nothing."""
    lower = implied_mode(metric) == "min"
    want = implied_mode(metric) or mode
    if mode == want:
        return None
    return (
        f"{what} is {metric!r}, better {'lower' if lower else 'higher'}, with "
        f"{mode_name}={mode!r}: it would keep the {'worst' if lower else 'lowest'} value",
        want,
    )


def check_mode(what: str, metric: str, mode_name: str, mode: str, flag: str) -> None:
    """ConfigError when `mode` runs against what `metric`'s name says is better: `what` names
    the metric's setting ("config key 'best_metric'", "--metric"), `mode_name` and `flag` the
    mode's as said and as set."""
    if (fault := _mode_fault(what, metric, mode_name, mode)) is not None:
        raise ConfigError(f"{fault[0]}; set {flag}={fault[1]}")


def check_selection_metric(
    key: str,
    metric: str,
    computed: Sequence[str] | Callable[[], Sequence[str] | None] | None = None,
    mode: tuple[str, str] | None = None,
) -> None:
    """Raises ConfigError unless `metric` is a validation metric (`val/...`): what chooses a
    checkpoint, stops a run early or ranks a sweep's trials must not read the test split.
    `computed`: the `val/` metrics the run computes, where known (a sweep scores one batch for
    them, `validate` names the shipped experiment's, `experiments.metric_names`), or a function
    giving them, asked only on a refusal. The fix names `val/NAME` for an `eval.../NAME` (the
    same metric of the validation split); else the computed metric closest to what was typed,
    or the list of them; and with none known, no name at all (it said "use 'val/nope'" of
    `nope`, a metric nothing computes, so the next run was refused too). `mode`: the mode's
    setting as said and its value (`("early_stopping.mode", "max")`): a metric named against
    it is named with the mode it needs (`use 'val/loss' with early_stopping.mode='min'`: the
    fix alone was refused next for its mode)."""
    if metric.startswith(SELECTION_PREFIX):
        return
    prefix, _, name = metric.rpartition("/")
    meant = f"{SELECTION_PREFIX}{name}" if prefix.startswith("eval") and name else ""
    known: list[str] = []
    if not meant:
        known = list((computed() if callable(computed) else computed) or [])
        # By the name alone: the shared "val/" made 'nope' close to 'val/loss'.
        bare = {k.removeprefix(SELECTION_PREFIX): k for k in known}
        near = difflib.get_close_matches(name, list(bare), n=1)
        meant = bare[near[0]] if near else ""
    if meant:
        use = f"use {meant!r}"
        if mode is not None and (want := implied_mode(meant)) not in (None, mode[1]):
            use += f" with {mode[0]}={want if mode[0].startswith('--') else repr(want)}"
    elif known:
        use = f"choose one of {', '.join(known)}"
    else:
        use = "use a val/NAME metric the experiment logs"
    use += " (metrics of data.validation_split)"
    if not prefix:  # a bare name: what a run logs is always prefixed by its split
        raise ConfigError(
            f"{key} is {metric!r}, which names no split (a run's metrics are val/..., "
            f"train/... and eval/...): {use}"
        )
    split = "the reported split" if prefix.startswith("eval") else "the training batches"
    if prefix != "train" and not prefix.startswith("eval"):
        split = f"the split {prefix!r}, which no run logs"
    raise ConfigError(
        f"{key} is {metric!r}, which is not a validation metric; choosing on {metric!r} "
        f"would select on {split}: {use}"
    )


def logged_validation_metrics(config: Mapping[str, Any]) -> list[str] | None:
    """The `val/` metrics every run of `config` logs, from its experiment and `task.*` keys
    alone (no JAX, model or data: `experiments.metric_names`); None for a user's experiment."""
    from experiments import metric_names  # a plug-in: imported only when asked

    return metric_names.validation_metrics(config)


def check_logged_metric(
    what: str, metric: str, config: Mapping[str, Any], near_only: bool = True
) -> None:
    """Raises ConfigError `WHAT is not a validation metric of this run (did you mean 'val/X'?);
    choose one of ...` (the line a run's start gives, with the fix) where `metric`, a `val/`
    name, is not one `config`'s shipped experiment logs but close to one (difflib, by the name
    after `val/`): `--config.best_metric=val/acuracy` is refused from the config alone, not at
    the run's start once a batch is scored. `what`: the setting and its value as said
    ("config key 'best_metric': 'val/acuracy'", "--metric=val/acuracy"). Passes a user's
    experiment's metric (what it logs is known only once it scores), a name under a prefix the
    run may add from its data (`experiments.metric_names.from_data`: `val/auroc_8` of an anomaly
    detector broken down by digit), and, with `near_only`, a name close to none (a sweep's
    `--metric`, which a swept variant may log: its first trial refuses it; a run's own
    `best_metric`, whose config is whole, is checked without: refused here, with its config
    file's line, not at the run's start)."""
    from experiments import metric_names  # a plug-in: imported only when asked

    logged = metric_names.validation_metrics(config)
    if logged is None or metric in logged or metric.startswith(metric_names.from_data(config)):
        return
    meant = meant_metric(metric, logged)
    if meant or not near_only:
        raise ConfigError(
            f"{what} {NOT_A_METRIC_OF_THIS_RUN}{meant}; choose one of {', '.join(logged)}"
        )


def _check_name_then_mode(
    key: str, metric: str, mode_key: str, mode: str, values: Mapping[str, Any]
) -> None:
    """`check_mode` for config key `key`'s metric and `mode_key`'s mode, as a KeyValueError of
    `mode_key` (a config file's line of it, or of the metric where the mode is an import's),
    where a metric the run does not log is said first: `--config.best_metric=val/accuracy` in a
    regression run was told to set best_mode=max, and then, set, that val/accuracy is not a
    metric of the run."""
    fault = _mode_fault(f"config key {key!r}", metric, mode_key, mode)
    if fault is None:
        return
    with _keyed(key):
        check_logged_metric(f"config key {key!r}: {metric!r}", metric, values, near_only=False)
    what, want = fault
    fix = f"set --config.{mode_key}={want}"
    raise KeyValueError(mode_key, what, fix, example=want, depends_on=(key,))


@contextlib.contextmanager
def _keyed(key: str) -> Iterator[None]:
    """Makes a ConfigError raised inside, whose text words its fix without flags (a metric's
    name to use), a KeyValueError of config key `key`, so that a config file's line of `key`
    is named (`cli.in_config_file`)."""
    try:
        yield
    except KeyValueError:
        raise
    except ConfigError as e:
        raise KeyValueError(key, str(e)) from None


def check_workdir_selects_on_validation(workdir: str) -> None:
    """Raises ConfigError when `workdir` holds a run written before ann had validation splits
    (its config.json has no `data.validation_split`): it chose its best checkpoint on the test
    split, and the offline data sets it trained on have changed since (their train rows gave the
    validation rows), so training on there would mix two data sets and two selection rules.
    Such a run still restores and exports as it is."""
    try:
        with open(file_in(workdir)) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return  # a fresh workdir
    if isinstance(saved, dict) and "validation_split" not in (saved.get("data") or {}):
        raise ConfigError(
            f"workdir {workdir} holds a run from before validation splits (it chose its best "
            f"checkpoint on {saved.get('best_metric', 'eval/...')!r}, and its data set has "
            "changed since); train in a new --workdir (this one still restores and exports)"
        )


def variant(file: str, arg: str | None, *known: str) -> str | None:
    """The `ARG` of `--config=configs/NAME.py:ARG` if the config file `file` (its `__file__`)
    offers it among `known`, None for no variant; raises ConfigError naming the file and the
    variants it has otherwise (one line: a mistyped variant is a flag to fix, not a bug)."""
    asked = _VARIANTS_ASKED.get()
    if asked is not None:
        asked.add(arg)
    if not arg:
        return None
    if arg in known:
        return arg
    name = os.path.basename(file)
    offers = " or ".join(f":{v}" for v in known)
    raise ConfigError(
        f"{name} has no variant {arg!r}; "
        + (f"use {offers} or no variant" if known else "it takes none (drop ':" + arg + "')")
    )


# The variants `variant` was asked about while `load_variant` runs a config file's get_config.
_VARIANTS_ASKED: contextvars.ContextVar[set | None] = contextvars.ContextVar(
    "variants_asked", default=None
)


def load_variant(path: str, load: Callable[[str], Any]) -> Any:
    """`load(path)`: the config file `path` (`NAME.py[:ARG]`) loaded by calling its get_config.
    Raises ConfigError for an empty ARG (`NAME.py:`), and naming the file and the variant where
    ARG is given, get_config never
    passed it to `variant`, and it returned the same config as with no ARG: a file that reads
    no variant ran its plain config as if none were given. (A get_config that reads its ARG by
    hand, as ml_collections' own examples do, returns another config and is kept.)"""
    file, colon, arg = path.partition(":")
    if colon and not arg:  # ml_collections calls get_config("") and records "NAME.py:" as given
        raise ConfigError(f"the variant after ':' is empty; drop the ':' or give one ({file}:ARG)")
    asked = set()
    token = _VARIANTS_ASKED.set(asked)
    try:
        config = load(path)
    finally:
        _VARIANTS_ASKED.reset(token)
    if arg and arg not in asked and os.path.isfile(file):  # a missing file: said elsewhere
        if config == load(file) and _ignores_its_arg(file, load):
            raise ConfigError(
                f"{os.path.basename(file)} has no variant {arg!r}: its get_config() returns the "
                f"same config with ':{arg}' as without it (drop ':{arg}', or offer it: "
                f"ann.config.variant(__file__, arg, {arg!r}))"
            )
    return config


def _ignores_its_arg(file: str, load: Callable[[str], Any]) -> bool:
    """Whether the config file's get_config returns its plain config for an ARG no file offers
    too: a file that reads its ARG by hand with a default (`arg or "Positional"`) gives the
    plain config for `:Positional`, its default's name, and was refused as taking no variant.
    Such a file gives another config, or raises, for the probe."""
    try:
        return load(f"{file}:__ann_no_such_variant__") == load(file)
    except Exception:  # the file refused the probe: it reads its ARG
        return False


def _defaults(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: _defaults(spec) if isinstance(spec, Mapping) else _default(*spec)
        for key, spec in schema.items()
    }


def _default(value: Any, types: type | tuple[type, ...]) -> Any:
    """A key's default. A key that may be text or a tuple (`sharding_rules`: a preset or rule
    pairs) is a FieldReference of any type: ConfigDict fixes a key's type at its first value,
    and a config file's `c.sharding_rules = ((regex, placement), ...)` was refused."""
    kinds = types if isinstance(types, tuple) else (types,)
    if str in kinds and tuple in kinds:
        return ml_collections.FieldReference(value, field_type=object)
    return value


def base() -> ml_collections.ConfigDict:
    """Every shared key with its default; config files start from this."""
    return ml_collections.ConfigDict(_defaults(SCHEMA))


def did_you_mean(key: str, options: Sequence[str], prefix: str = "") -> str:
    """` (did you mean 'PREFIXx'?)` for the option closest to `key` (difflib's ratio of at
    least 0.6; an option equal to `key` but for case first: 'adamW' -> 'adamw'), or ""."""
    close = _near(key, options)
    return meant_words([f"{prefix}{close[0][1]}"]) if close else ""


def closest(key: str, options: Sequence[str]) -> str | None:
    """The option `did_you_mean` names for `key`, or None."""
    close = _near(key, options)
    return close[0][1] if close else None


def check_choice(path: str, value: Any, options: Sequence[Any]) -> None:
    """Raises KeyValueError naming `path` when `value` is not one of `options`, each written
    as `--config.PATH=` takes it: None bare, since the text None parses to None there (and
    'None' quoted, in a config file, is the string); the option a mistyped string was near to
    is its `example`."""
    if value in options:
        return
    hint, meant = "", None
    if isinstance(value, str):
        spelt = {str(o): o for o in options}
        near = _near(value, list(spelt))
        meant = spelt[near[0][1]] if near else None
        hint = f" (did you mean {meant!r}?)" if near else ""
    what = f"config key '{path}' is {value!r}{hint}; choose one of {', '.join(map(str, options))}"
    raise KeyValueError(path, what, example=meant)


def fitting(value: Any, default: Any) -> Any:
    """`value` as a key whose default is `default` takes it, for a fix to paste: a number for a
    tuple of them wrapped (`64` for `(64,)`), else `value` where it is of the default's kind,
    else `default` (`--config.totl_steps=abc` offered `total_steps=abc`, refused next); `value`
    where `default` is None (no kind to hold it to)."""
    if default is None:
        return value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, tuple) and number:
        return (value,)
    if isinstance(value, bool) != isinstance(default, bool):
        return default
    numeric = isinstance(default, float) and isinstance(value, int)
    return value if isinstance(value, type(default)) or numeric else default


def override(key: str, value: Any) -> str:
    """The `--config.KEY=VALUE` flag that sets `key` to `value`, quoted for a POSIX shell
    (`--config.data.eval_splits="('test',)"`, `--config.model.name='my net'`)."""
    if isinstance(value, tuple | list):
        return f'--config.{key}="{value!r}"'
    return f"--config.{key}={shlex.quote(str(value))}"


def meant_words(meant: Sequence[str]) -> str:
    """` (did you mean 'a'?)`, ` (did you mean 'a' or 'b'?)`, ` (... 'a', 'b' or 'c'?)`; "" for
    none."""
    if not meant:
        return ""
    quoted = [f"'{m}'" for m in meant]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return f" (did you mean {listed}?)"


def _near(name: str, options: Collection[str], n: int = 1) -> list[tuple[float, str]]:
    """The `n` options closest to `name` with their closeness, closest first: one equal but for
    case (closeness 1), else difflib's ratio of at least 0.6."""
    same = [o for o in options if o.lower() == name.lower()]
    if same:
        return [(1.0, same[0])]
    close = difflib.get_close_matches(name, list(options), n=n)
    return [(difflib.SequenceMatcher(None, name, c).ratio(), c) for c in close]


# Names other frameworks give ann's keys (PyTorch's and Keras' `lr`, `epochs`, `beta1`, ...):
# a key under one of them is pointed at ann's.
ALIASES = {
    "lr": "learning_rate",
    "wd": "weight_decay",
    "bs": "batch_size",
    "epochs": "num_epochs",
    "steps": "total_steps",
    "max_steps": "total_steps",
    "warmup": "warmup_steps",
    "clip_norm": "grad_clip_norm",
    "beta1": "b1",
    "beta2": "b2",
    "epsilon": "eps",
}


class KeyLookupError(KeyError):
    """A dotted key that names nothing; `hint` says what is there instead."""

    def __init__(self, key: str, hint: str, meant: Sequence[str] = (), closeness: float = 0.0):
        super().__init__(key)
        self.key, self.hint = key, hint
        self.meant, self.closeness = list(meant), closeness  # the keys `hint` names, if any

    def __str__(self) -> str:
        return f"{self.key!r} is not a key{self.hint}"


def is_section(value: Any) -> bool:
    """Whether a config value is a section (a ConfigDict or a mapping) rather than a value."""
    return isinstance(value, Mapping | ml_collections.ConfigDict)


def lookup(
    tree: Mapping[str, Any] | ml_collections.ConfigDict,
    key: str,
    also: Sequence[Mapping[str, Any]] = (),
) -> Any:
    """The value at the dotted `key` ("optimizer.learning_rate") of nested mappings (dicts,
    ConfigDicts): the one lookup of a `--config.KEY`, for config checks and sweep axes alike.
    Raises KeyLookupError (a KeyError) whose `hint` names the real keys closest to `key`, of
    `tree` or the trees in `also`, as whole dotted keys with every misspelt part respelt
    (`optimzer.lr`: " (did you mean 'optimizer.learning_rate'?)"; see `_meant_keys`), else
    the keys where the path breaks ("; keys under 'optimizer': b1, b2, ..."; "; top-level
    keys: ...")."""
    value: Any = tree
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not is_section(value) or part not in value:
            where = ".".join(parts[:i])
            meant, closeness = _meant_keys(parts, i, (tree, *also))
            options = sorted(value) if is_section(value) else []
            hint = meant_words(meant) or (
                (f"; keys under '{where}'" if where else "; top-level keys")
                + f": {', '.join(options) or 'none'}"
            )
            raise KeyLookupError(key, hint, meant, closeness)
        value = value[part]
    return value


# A suggestion that goes through a value (`model.featurs.x` -> `model.features`) counts this
# much of a whole match: a key with the path's length comes first.
_THROUGH_A_VALUE = 0.5


def _meant_keys(parts: Sequence[str], broken: int, trees: Sequence[Any]) -> tuple[list[str], float]:
    """The real dotted keys of `trees` closest to the key `parts`, which breaks at
    `parts[broken]`, and their closeness (1 for a name as it is, or ann's name for it; a
    product of difflib's ratios for the parts respelt): every part from the broken one on is
    matched at its level, so `optimzer.lr` is `optimizer.learning_rate`, a key that exists,
    not `optimizer.lr`. Where the broken part is matched, in order: the same name (or ann's
    for an alias, `ALIASES`: `lr` is `optimizer.learning_rate`) elsewhere in the tree (a key
    at the wrong level; a value, when nothing follows it: `mesh.model` is not `model`); at
    the top level, where no section was named, the closest among every key's last part (a
    misspelt key of a section, `lerning_rate`); the closest at its own level (under a section
    the user named, its own keys: `mesh.model` is no `early_stopping.mode`). Every key as
    close as the closest is returned (`name` is `data.name`, `model.name` or
    `optimizer.name`); ([], 0) when nothing is close."""
    said = ".".join(parts[: broken + 1])
    index: dict[str, bool] = {}  # dotted key -> whether it is a section
    for tree in trees:
        for k, section in _dotted_items(tree):
            if k != said and not k.startswith(f"{said}."):  # a tree in `trees` may hold it
                index[k] = index.get(k, False) or section
    children: dict[str, dict[str, str]] = {}  # section ("" the top) -> last part -> key
    for k in index:
        parent, _, last = k.rpartition(".")
        children.setdefault(parent, {})[last] = k

    def matches(part: str, names: Collection[str]) -> list[tuple[float, str]]:
        for name in (part, ALIASES.get(part)):
            if name in names:
                return [(1.0, name)]
        return _near(part, names, n=3)

    def resolve(key: str, rest: Sequence[str], score: float) -> list[tuple[float, str]]:
        if not rest:
            return [(score, key)]
        if not index[key]:  # the path goes through a value: that value is what is meant
            return [(score * _THROUGH_A_VALUE, key)]
        under = children.get(key, {})
        return [
            found
            for closeness, name in matches(rest[0], under)
            for found in resolve(under[name], rest[1:], score * closeness)
        ]

    where, part, rest = ".".join(parts[:broken]), parts[broken], parts[broken + 1 :]
    name = ALIASES.get(part, part)
    # Keys elsewhere: sections only where something follows the part.
    others = [k for k in index if rest or not index[k]]
    found = [f for k in others if k.rpartition(".")[2] == name for f in resolve(k, rest, 1.0)]
    if not found and not where:
        by_name: dict[str, list[str]] = {}
        for k in others:
            by_name.setdefault(k.rpartition(".")[2], []).append(k)
        found = [
            f
            for closeness, last in _near(name, by_name, n=3)
            for k in by_name[last]
            for f in resolve(k, rest, closeness)
        ]
    if not found and (not where or index.get(where)):
        here = children.get(where, {})
        found = [
            f for closeness, n in matches(part, here) for f in resolve(here[n], rest, closeness)
        ]
    if not found:
        return [], 0.0
    best = max(score for score, _ in found)
    return sorted({k for score, k in found if score >= best - 1e-9}), best


def _dotted_items(tree: Any, prefix: str = "") -> list[tuple[str, bool]]:
    """(dotted key, whether it is a section) for every key of `tree`, sections too."""
    found = []
    for key, value in tree.items():
        found.append((prefix + key, is_section(value)))
        if is_section(value):
            found += _dotted_items(value, f"{prefix}{key}.")
    return found


def _empty_strings(schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys of `schema` that hold a string whose default is "" (unset)."""
    found = []
    for key, spec in schema.items():
        if isinstance(spec, Mapping):
            found += _empty_strings(spec, f"{prefix}{key}.")
        elif spec[0] == "" and spec[1] is str:
            found.append(prefix + key)
    return found


def _check_section(
    values: Mapping[str, Any], schema: Mapping[str, Any], prefix: str, root: Mapping[str, Any]
) -> None:
    """Every key of `values` (the section at `prefix` of the config `root`) is in `schema`
    with its type. An unknown key is pointed at a key of the schema or of `root` (whose
    `model.*` keys the schema does not hold)."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in schema:
            try:
                lookup(SCHEMA, path, also=(root,))
            except KeyLookupError as e:
                what = f"config key '{path}' is unknown{e.hint}"
                # The flag meant, with the value given (the hint alone left it to be retyped).
                meant = e.meant[0] if len(e.meant) == 1 else None
                fit = fitting(value, default(meant)) if meant else None
                fix = f"e.g. {override(meant, fit)}" if meant and fit not in (None, "") else ""
                raise KeyValueError(path, what, fix, meant=e.meant, unknown=True) from None
        spec = schema[key]
        if isinstance(spec, Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{path}' must be a section (a ConfigDict)")
            _check_section(value, spec, path + ".", root)
            continue
        _, types = spec
        types = types if isinstance(types, tuple) else (types,)
        # bool is an int in Python; a flag like `batch_size=True` is still a mistake.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join("None" if t is NoneType else t.__name__ for t in types)
            what = f"config key '{path}' must be {names}, got {type(value).__name__} {value!r}"
            example = spec[0] if spec[0] not in (None, "", ()) else None
            if isinstance(example, tuple | list | bool | int | float | str):
                fix = f"e.g. {override(path, example)}"
            else:
                fix, example = f"set --config.{path}=<{names}>", None
            raise KeyValueError(path, what, fix, example=example)


# What each element of a sequence-valued key must be: `--config.data.eval_splits=3` parses as
# (3,), which the key's own type check (tuple or list) accepts.
ELEMENTS: dict[str, tuple[type, tuple]] = {  # key -> (element type, an example value)
    "data.eval_splits": (str, ("test",)),
    "init_from_skip": (str, ("head/.*",)),
    "freeze": (str, ("convs/.*",)),
    "optimizer.step_boundaries": (int, (1000, 2000)),
    "profile_steps": (int, (10, 5)),
    "report.slices": (str, ("label",)),
}


# Tuple keys of a fixed length: (what the elements are, the rest of an example after a first
# number). A lone number for one was told to give '(20,)', which the key's own check refused.
PAIRS: dict[str, tuple[str, str]] = {
    "profile_steps": ("(first_step, num_steps)", "5"),
}


def _check_not_a_tuple_in_a_string(path: str, element: Any) -> None:
    """Raises ConfigError when the one string of a tuple-of-strings key reads as a tuple whose
    strings were left unquoted: `--config.data.eval_splits='(test, test_writers)'` became the
    one split "(test, test_writers)" (ml_collections makes any string a 1-tuple there)."""
    if not isinstance(element, str) or "," not in element:
        return
    bracketed = element.strip()[:1] in "([" and element.strip()[-1:] in ")]"
    if not bracketed and path != "data.eval_splits":  # a regex may hold a comma: a{1,2}
        return
    meant = string_tuple(element)
    what = f"config key '{path}' got the one string {element!r}; a tuple of strings quotes each one"
    raise KeyValueError(path, what, f"e.g. {override(path, meant)}", example=meant)


def string_tuple(text: str) -> tuple[str, ...]:
    """What `text`, a tuple written with its strings unquoted ("(test, test_writers)",
    "a,b"), meant: ('test', 'test_writers'); for the fix an error line shows."""
    parts = [p.strip().strip("'\"") for p in text.strip().strip("()[]").split(",")]
    return tuple(p for p in parts if p)


def check_elements(values: Mapping[str, Any]) -> None:
    """Raises ConfigError naming the first key in ELEMENTS with an element of another type."""
    for path, (kind, example) in ELEMENTS.items():
        try:
            sequence = lookup(values, path)
        except KeyLookupError:
            continue
        if isinstance(sequence, str):
            continue  # report.slices checks its own (it names the tuple form)
        if kind is str and path != "report.slices" and len(sequence) == 1:
            _check_not_a_tuple_in_a_string(path, sequence[0])
        for element in sequence:
            if not isinstance(element, kind) or isinstance(element, bool):
                wanted = "an int" if kind is int else "a string"
                what = (
                    f"config key '{path}' holds {element!r} ({type(element).__name__}); every "
                    f"element must be {wanted}"
                )
                raise KeyValueError(path, what, f"e.g. {override(path, example)}", example=example)


def unchanged_overrides(
    file_config: Mapping[str, Any] | ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> set[str]:
    """The dotted keys of `overrides` (`--config.KEY=VALUE`) whose value `file_config`, the
    config file's own config, already holds: overrides that change nothing. A `task.*` key the
    file does not set is one too where it holds the experiment's default, which only the
    experiment knows (`check_task_keys_apply` compares it)."""

    def same(a: Any, b: Any) -> bool:
        tuples = [tuple(x) if isinstance(x, list | tuple) else x for x in (a, b)]
        return tuples[0] == tuples[1]

    found = set()
    for key, value in overrides.items():
        try:
            if same(lookup(file_config, key), value):
                found.add(key)
        except KeyError:  # a key the file does not set (model.norm): the override adds it
            if key.startswith("task."):  # unless it holds the experiment's default (its check)
                found.add(key)
    return found


def default(path: str) -> Any:
    """The schema's default for `path` (None for keys of the open sections)."""
    try:
        spec = lookup(SCHEMA, path)
    except KeyLookupError:
        return None
    return None if isinstance(spec, Mapping) else spec[0]


def check_ranges(config: Mapping[str, Any] | ml_collections.ConfigDict, **known: Any) -> None:
    """Checks every numeric setting against RANGES; raises ConfigError naming the first key out
    of range, its range and a value to set instead that its range, and every range that depends
    on it, accept (a total_steps suggestion must still exceed optimizer.warmup_steps). `known`
    gives bounds not in the config yet, e.g. the `total_steps` that `num_epochs` comes to once
    the data set's size is known (ann.train.optimizers.make)."""
    values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
    bad = _out_of_range(values, known)
    if not bad:
        return
    path = bad[0]
    *parents, leaf = path.split(".")

    # Keys whose bound is `path` may have failed only because of `path`'s bad value.
    dependants = {k for k, r in RANGES.items() if path in (r.low, r.high)}

    def accepts(x: Any) -> bool:  # no key out of range that was not before, one run length
        changed = copy.deepcopy(dict(values))
        (lookup(changed, ".".join(parents)) if parents else changed)[leaf] = x
        new = set(_out_of_range(changed, known))
        return new <= set(bad) - {path} - dependants and _run_length_error(changed) is None

    resolve = _resolver(values, known)
    RANGES[path].check(path, lookup(values, path), resolve, default(path), accepts)


def _run_length_error(values: Mapping[str, Any]) -> KeyValueError | None:
    """The mistake in how long the run is (exactly one of total_steps and num_epochs is set),
    or None; also None where `values` holds neither key (a partial config). Keyed on
    `num_epochs` where both are set (a config file's epochs line beside steps it or an import
    set), on `total_steps` where neither is."""
    if "total_steps" not in values or "num_epochs" not in values:
        return None
    steps, epochs = values["total_steps"], values["num_epochs"]
    if bool(steps) != bool(epochs):
        return None
    what = (
        "set exactly one of config keys 'total_steps' and 'num_epochs' to a positive value "
        f"(got total_steps={steps}, num_epochs={_number(epochs)})"
    )
    if steps:
        return KeyValueError(
            "num_epochs",
            what,
            "to train by epochs, set --config.total_steps=0 (or by steps, --config.num_epochs=0)",
            depends_on=("total_steps",),
            file_fix="to train by epochs, set total_steps to 0 too; by steps, drop the line",
        )
    fix = "e.g. --config.total_steps=1000 or --config.num_epochs=10"
    return KeyValueError("total_steps", what, fix, example=1000, depends_on=("num_epochs",))


def _resolver(values: Mapping[str, Any], known: Mapping[str, Any]) -> Callable[[str], Any]:
    return lambda key: known[key] if key in known else lookup(values, key)


def _out_of_range(values: Mapping[str, Any], known: Mapping[str, Any]) -> list[str]:
    """The keys of RANGES whose values `values` sets outside their ranges, in RANGES' order."""
    bad = []
    for path, allowed in RANGES.items():
        try:
            value = lookup(values, path)
        except KeyError:  # an open section's key (model.dropout) that this config does not set
            continue
        try:
            allowed.check(path, value, _resolver(values, known))
        except ConfigError:
            bad.append(path)
    return bad


def check_run_steps(
    config: Mapping[str, Any] | ml_collections.ConfigDict, steps: int, num_train: int
) -> None:
    """Refuses a run whose length `num_epochs` sets (`steps`: over `num_train` examples, in
    batches) to more than MAX_STEPS steps, naming num_epochs and the most epochs that fit
    (total_steps itself is bounded by RANGES)."""
    if steps <= MAX_STEPS or config["total_steps"]:
        return
    epochs, batch = config["num_epochs"], config["batch_size"]
    most = math.floor(MAX_STEPS * batch / max(num_train, 1))
    what = (
        f"config key 'num_epochs' must be at most {most} for {num_train} train examples in "
        f"batches of {batch}, got {_number(epochs)}: that is {steps} steps, more than {MAX_STEPS} "
        "(the step counter is int32)"
    )
    example = min(most, 100)
    fix = f"e.g. --config.num_epochs={example}"
    raise KeyValueError("num_epochs", what, fix, example=example, depends_on=("batch_size",))


def check_length(
    total_steps: int,
    step: int,
    workdir: str,
    num_epochs: float = 0.0,
    num_train: int = 0,
    batch_size: int = 0,
) -> None:
    """Raises ConfigError when a rerun's run length is below the step its checkpoint reached.
    A run by epochs (`num_epochs` over `num_train` examples in batches of `batch_size`) is
    told the epochs that reach the step (`epochs_for`), its own key, before total_steps."""
    if total_steps >= step:
        return
    if num_epochs and num_train > 0 and batch_size > 0:
        raise ConfigError(
            f"config key 'num_epochs': the run would be {total_steps} steps long "
            f"(num_epochs={_number(num_epochs)} of {num_train} train examples in batches of "
            f"{batch_size}), but {workdir} has reached step {step}; set num_epochs to at least "
            f"{_number(epochs_for(step, num_train, batch_size))} (or total_steps to at least "
            f"{step} with num_epochs=0), or use a new --workdir"
        )
    raise ConfigError(
        f"config key 'total_steps': the run would be {total_steps} steps long, but {workdir} "
        f"has reached step {step}; set total_steps (or num_epochs) to at least {step}, or "
        "use a new --workdir"
    )


def steps_for_epochs(epochs: float, num_train: int, batch_size: int) -> int:
    """The steps `num_epochs=epochs` over `num_train` examples in batches of `batch_size`
    makes: ceil(epochs * num_train / batch_size), at least 1 (a last, partial batch is a
    step)."""
    return max(1, math.ceil(epochs * num_train / batch_size))


def epochs_for(steps: int, num_train: int, batch_size: int) -> float:
    """The fewest epochs, in tenths, that `num_epochs` over `num_train` examples in batches
    of `batch_size` makes at least `steps` steps long (`steps_for_epochs`): 12.1 for 115 steps
    of 128 over 1219 examples."""
    tenths = math.ceil(steps * batch_size * 10 / num_train)
    while tenths > 1 and steps_for_epochs((tenths - 1) / 10, num_train, batch_size) >= steps:
        tenths -= 1
    while steps_for_epochs(tenths / 10, num_train, batch_size) < steps:
        tenths += 1
    return tenths / 10


def check_reached_length(
    config: ml_collections.ConfigDict,
    workdir: str,
    unchanged: Collection[str] = (),
    config_flag: str = "",
) -> None:
    """Called where `validate` refused `config`: `check_length` against the newest step in
    `workdir/checkpoints/`, read from the directory (no JAX), for a config whose length is
    `total_steps` (not num_epochs) below that step and that is otherwise valid (`validate` at
    the reached length passes): a run shortened below where it got is told so first, not about
    a key the shorter length then puts out of range (`warmup_steps` 50 at total_steps 50),
    whose suggested fix would be refused as a change to what is trained. Before it, a workdir
    trained with another config (another experiment or model) is refused as `check_resume`
    refuses it: fixing the length there only led to that refusal. Any other refusal (a
    misspelt key, a value out of range) is `validate`'s own: a comparison would call it a
    change of config."""
    try:
        steps = [int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit()]
    except OSError:
        return
    if not steps or config.get("num_epochs") or not isinstance(config.get("total_steps"), int):
        return
    if config.total_steps >= max(steps) or config.total_steps < 1:
        # The length is not what to fix; or no length at all (-1 was told "the run would be -1
        # steps long ... at least 40", not validate's range)
        return
    reached = config.copy_and_resolve_references()
    reached.total_steps = max(steps)
    try:
        validate(reached, num_devices=None, unchanged=unchanged)
    except ConfigError:
        return  # wrong at any length: validate's own error is the one to act on
    try:
        saved = read(workdir)
    except (ConfigError, OSError):  # no record, or a damaged one: the start says so
        saved = None
    if saved is not None:
        check_resume(saved, config, workdir, init_from=None, config_flag=config_flag)
    check_length(config.total_steps, max(steps), workdir)


def fit_warmup(config: ml_collections.ConfigDict) -> None:
    """For a shortened run of a shipped config (a test, a benchmark): a warmup that would not fit
    (`optimizer.warmup_steps >= total_steps`, which `validate` refuses) becomes half the run, in
    place. Other warmups, and runs whose length comes from `num_epochs`, are left as they are."""
    opt = config.optimizer
    if config.total_steps and opt.warmup_steps >= config.total_steps:
        opt.warmup_steps = config.total_steps // 2


def shorten(config: ml_collections.ConfigDict, total_steps: int) -> None:
    """A run of exactly `total_steps` steps of a shipped config (a benchmark's), in place: the
    length in steps whether the file gave it in steps or epochs (`num_epochs` 0: with both set
    the config is refused, and `breast_cancer_mlp.py`'s 60 epochs stopped every benchmark
    script), the warmup fitted to it (`fit_warmup`)."""
    config.total_steps = total_steps
    config.num_epochs = 0
    fit_warmup(config)


def _check_eval_splits(splits: list[str]) -> None:
    """At least one split, each named once (a split named twice was evaluated twice, as eval/
    and eval_SPLIT/)."""
    key = "data.eval_splits"
    if not splits:
        raise KeyValueError(key, f"config key '{key}' is empty; name at least one split")
    twice = [split for i, split in enumerate(splits) if split in splits[:i]]
    if twice:
        what = f"config key '{key}' names {twice[0]!r} twice; name each split once"
        raise KeyValueError(key, what, example=tuple(dict.fromkeys(splits)))


# String keys whose "" means off or the default; model.name and data.name, needed, are refused
# empty and by name.
_UNSET_BY_EMPTY = [k for k in _empty_strings(SCHEMA) if k not in ("model.name", "data.name")]


def _check_none_text(values: Mapping[str, Any]) -> None:
    """Refuses the text 'None' in a string key whose '' is unset (`init_from`, `data.data_dir`,
    `early_stopping.metric`, `compilation_cache_dir`): `--config.init_from=None` is the string
    'None' there, as in every string key (it was read as a path, "None does not exist"),
    while `=None` unsets a key whose default is None (`model.norm`); the fix is `=''`."""
    for path in _UNSET_BY_EMPTY:
        if lookup(values, path) == "None":
            what = (
                f"config key '{path}' is 'None', which a string key reads as text (a name or "
                "path 'None')"
            )
            fix = f"for none, set it empty: --config.{path}=''"
            raise KeyValueError(path, what, fix, example="")


def check_present(
    values: Mapping[str, Any], schema: Mapping[str, Any] = SCHEMA, prefix: str = ""
) -> None:
    """ConfigError naming the first key of `schema` (a section's keys too) that the config
    `values` (its `to_dict()`) lacks, with its default as the fix: a deleted `data.name` or
    `optimizer.learning_rate` was a bare KeyError or ml_collections' AttributeError deep in a
    run (trial 48a)."""
    for key, spec in schema.items():
        path = f"{prefix}{key}"
        if key not in values:
            # (An override cannot add a key: the fix is in the config's code.)
            if isinstance(spec, Mapping):
                fix = ""
            elif spec[0] in ("", None):
                fix = "set it or "
            else:
                fix = f"set it (its default: {spec[0]!r}) or "
            raise ConfigError(
                f"config key '{path}' is missing; {fix}start the config from ann.config.base()"
            )
        if isinstance(spec, Mapping) and isinstance(values[key], Mapping):
            check_present(values[key], spec, f"{path}.")


def validate(
    config: ml_collections.ConfigDict,
    num_devices: int | None,
    selecting: bool = True,
    unchanged: Collection[str] = (),
) -> None:
    """Checks keys, types, choices and device divisibility; raises ConfigError naming the key.
    `num_devices=None` checks all but the divisibility: a job's first look at its config,
    before JAX is imported, so that a mistyped key costs no JAX start-up. `selecting=False`
    (restoring a trained run) skips the checks that only matter for a run about to train: that
    `best_metric` and `early_stopping.metric` are `val/` metrics (runs from before validation
    splits chose on `eval/` and keep that choice), and that no key is set to a value its
    optimizer, schedule or another setting ignores (`_check_keys_apply`); `unchanged`: the
    dotted keys set to the value they already held, by the command line over the config file
    (`unchanged_overrides`) or by the file's own line (`ann.config_file.set_in_file`), refused when
    ignored even at their default value."""
    values = config.to_dict()
    check_present(values)
    _check_section(
        {k: v for k, v in values.items() if k not in ("model", "task")}, SCHEMA, "", values
    )
    if not isinstance(values["task"], Mapping):
        raise ConfigError("config key 'task' must be a section (a ConfigDict)")
    if not isinstance(values["model"], Mapping) or not values["model"].get("name"):
        raise ConfigError(
            "config key 'model.name' is empty; set --config.model.name=cnn (or mlp, "
            "resnet, or package.module:ClassName)"
        )
    _check_section({"name": values["model"]["name"]}, SCHEMA["model"], "model.", values)
    check_elements(values)
    _check_none_text(values)
    if not values["data"]["name"]:
        raise ConfigError(
            "config key 'data.name' is empty; set --config.data.name=digits "
            "(or breast_cancer, or a TFDS name such as mnist)"
        )
    for path, options in CHOICES.items():
        check_choice(path, lookup(values, path), options)
    check_ranges(values)
    if (run_length := _run_length_error(values)) is not None:
        raise run_length
    if num_devices is not None:
        _check_divisible(values, num_devices)
    if selecting:

        def logged() -> list[str] | None:  # asked only on a refusal
            return logged_validation_metrics(values)

        _check_choosing("best_metric", "best_mode", values, logged)
        if values["early_stopping"]["metric"]:
            _check_choosing("early_stopping.metric", "early_stopping.mode", values, logged)
        _check_validation_split(values["data"])
    _check_run_settings(values)
    for key in ("freeze", "init_from_skip"):  # path regexes: fail here, not mid-build
        for pattern in values[key]:
            if not isinstance(pattern, str):
                what = (
                    f"config key '{key}' holds {pattern!r}; it takes regexes over parameter paths"
                )
                fix = f"e.g. --config.{key}=\"('convs/.*',)\""
                raise KeyValueError(key, what, fix, example=("convs/.*",))
            try:
                re.compile(pattern)
            except re.error as e:
                what = f"config key '{key}': {pattern!r} is not a regex ({e})"
                raise KeyValueError(key, what) from e
    _check_eval_splits(list(values["data"]["eval_splits"]))
    check_slices(values["report"]["slices"])
    if selecting:  # a run to train (a trained run's config.json is read as it was)
        _check_keys_apply(values, unchanged)


def _check_choosing(
    key: str, mode_key: str, values: Mapping[str, Any], logged: Callable[[], Any]
) -> None:
    """The metric config key `key` chooses by (`best_metric`, `early_stopping.metric`): a
    validation metric (`check_selection_metric`), one the run logs (`check_logged_metric`),
    with `mode_key`'s mode agreeing with its name (`_check_name_then_mode`); each refusal a
    KeyValueError of the key at fault. `logged`: the run's `val/` metrics, asked only on a
    refusal."""
    metric, mode = lookup(values, key), lookup(values, mode_key)
    with _keyed(key):
        check_selection_metric(f"config key {key!r}", metric, logged, (mode_key, mode))
        # The run's config is whole: a name its experiment does not log is refused here, with
        # the config file's line, not at the run's start (a sweep's --metric may name one that
        # only a swept variant logs: that passes a name close to none).
        check_logged_metric(f"config key {key!r}: {metric!r}", metric, values, near_only=False)
    _check_name_then_mode(key, metric, mode_key, mode, values)


def _check_validation_split(dc: Mapping[str, Any]) -> None:
    """Refuses a `data.validation_split` (`dc`: the data section) that is also the train split
    or among the reported splits: the split that chooses must be one of its own."""
    for other, splits in (
        ("data.train_split", [dc["train_split"]]),
        ("data.eval_splits", dc["eval_splits"]),
    ):
        split = dc["validation_split"]
        if split in splits:
            rest = tuple(s for s in splits if s != split)
            what = (
                f"config key 'data.validation_split' is {split!r}, which is also in "
                f"{other}: the split that chooses must be one of its own"
            )
            if other == "data.eval_splits" and (rest or split == "validation"):
                shown = f'"{rest}"' if rest else "\"('test',)\", a split to report on"
                fix = f"drop it from data.eval_splits (--config.data.eval_splits={shown})"
                raise KeyValueError(
                    other,
                    what,
                    fix,
                    example=rest or ("test",),
                    depends_on=("data.validation_split",),
                )
            # The train split, or the one reported split: choose on another one.
            carve = "carve one from train: data.train_split='train[:90%]', "
            carve += "data.validation_split='train[90%:]'"
            carve = ("use 'validation', or " if split != "validation" else "") + carve
            raise KeyValueError("data.validation_split", f"{what}; {carve}", depends_on=(other,))


# Keys read only under another key's setting: key -> (that key, the values under which it is
# read; () = whenever it is set, not its default "off"). Anywhere else a value other than the
# default would be silently ignored (a sweep over momentum with adamw: equal trials).
READ_ONLY_WHEN = {
    "optimizer.momentum": ("optimizer.name", ("sgd",)),
    "optimizer.nesterov": ("optimizer.name", ("sgd",)),
    "optimizer.b1": ("optimizer.name", ("adam", "adamw")),
    "optimizer.b2": ("optimizer.name", ("adam", "adamw")),
    "optimizer.eps": ("optimizer.name", ("adam", "adamw")),
    "optimizer.warmup_steps": ("optimizer.schedule", ("constant", "warmup_cosine")),
    "optimizer.end_learning_rate_factor": ("optimizer.schedule", ("warmup_cosine",)),
    "optimizer.step_boundaries": ("optimizer.schedule", ("step",)),
    "optimizer.step_factor": ("optimizer.schedule", ("step",)),
    "early_stopping.mode": ("early_stopping.metric", ()),
    "early_stopping.patience": ("early_stopping.metric", ()),
    "early_stopping.min_delta": ("early_stopping.metric", ()),
    "init_from_skip": ("init_from", ()),
}


def at_default(values: Mapping[str, Any], key: str) -> bool:
    """Whether `key` holds its default in `values` (a sequence read from JSON as a list is
    its tuple)."""
    value = lookup(values, key)
    return (tuple(value) if isinstance(value, list | tuple) else value) == default(key)


def is_read(values: Mapping[str, Any], key: str) -> bool:
    """Whether the setting `key` of READ_ONLY_WHEN decides on is such that `key` is read in
    `values` (a config's dict): `optimizer.momentum` under sgd, `init_from_skip` with an
    `init_from`."""
    decider, readers = READ_ONLY_WHEN[key]
    setting = lookup(values, decider)
    return setting in readers if readers else setting != default(decider)


# What to set a `()` setting of `READ_ONLY_WHEN` to, in the message's fix.
_SET_EXAMPLES = {"early_stopping.metric": "val/loss", "init_from": "runs/NAME"}


def _check_keys_apply(values: Mapping[str, Any], unchanged: Collection[str] = ()) -> None:
    """Refuses a value that the setting it depends on (`READ_ONLY_WHEN`) makes ignored: one
    other than the key's default, or a key in `unchanged`, set to what it held by the command
    line or the config file's own line (`--config.optimizer.momentum=0.9` with adamw: the user
    expects momentum 0.9). Setting a key the file had changed back to its default, the fix
    this message names, is a change and passes. Every such fault is said in one refusal,
    joined by "; also ": `--config.optimizer.schedule=step` on a config with warmup was
    refused for the warmup, and once that was fixed, for the missing step boundaries (two
    failed runs)."""
    faults: list[KeyValueError] = []
    for key, (decider, readers) in READ_ONLY_WHEN.items():
        value, unset, setting = lookup(values, key), default(key), lookup(values, decider)
        value = tuple(value) if isinstance(value, list) else value  # as it is written
        if (not at_default(values, key) or key in unchanged) and not is_read(values, key):
            fix = readers[0] if readers else _SET_EXAMPLES[decider]
            reset = f"'{unset!r}'" if isinstance(unset, tuple) else unset
            faults.append(
                KeyValueError(
                    key,
                    f"config key '{key}'={value!r} has no effect with {decider}={setting!r} "
                    f"(read only {'by ' + ' and '.join(readers) if readers else 'when it is set'})",
                    # A flag's value: dropped (one set back to the default is refused too).
                    f"drop --config.{key} or set --config.{decider}={fix}",
                    depends_on=(decider,),
                    file_fix=f"drop the line, or set {decider} to {fix!r}",
                    bound_fix=(
                        f"set --config.{key}={reset} (its default) or --config.{decider}={fix}"
                    ),
                )
            )
    opt = values["optimizer"]
    if opt["name"] == "sgd" and opt["nesterov"] and not opt["momentum"]:
        faults.append(
            KeyValueError(
                "optimizer.nesterov",
                "config key 'optimizer.nesterov'=True has no effect with optimizer.momentum=0 "
                "(Nesterov momentum needs momentum)",
                "set --config.optimizer.momentum=0.9 or --config.optimizer.nesterov=False",
                depends_on=("optimizer.momentum",),
                file_fix="drop the line, or set optimizer.momentum to 0.9",
            )
        )
    if opt["schedule"] == "step" and not opt["step_boundaries"]:
        # No boundary: the rate never steps, and step_factor is read by nothing.
        total = values["total_steps"]
        example = (total // 2, total * 3 // 4) if total >= 4 else (1000, 2000)
        faults.append(
            KeyValueError(
                "optimizer.schedule",
                "config key 'optimizer.schedule'='step' has no effect without "
                "optimizer.step_boundaries (no boundary: the learning rate stays constant)",
                f'set --config.optimizer.step_boundaries="{example}" (steps in (0, '
                "total_steps), at each of which the rate is multiplied by "
                "optimizer.step_factor) or --config.optimizer.schedule=constant",
                depends_on=("optimizer.step_boundaries",),
                file_fix=f"set optimizer.step_boundaries too (e.g. {example}: steps in (0, "
                "total_steps), at each of which the rate is multiplied by "
                "optimizer.step_factor), or schedule to 'constant'",
            )
        )
    if len(faults) == 1:
        raise faults[0]
    if faults:
        raise KeyValueErrors(faults)


def check_task_keys_apply(
    config: ml_collections.ConfigDict, experiment: Any, unchanged: Collection[str] = ()
) -> None:
    """`_check_keys_apply` for an experiment's own settings, before a run trains: refuses a
    `task.*` key that another task setting makes unread (`experiment.task_read_only_when`: key
    -> (that setting, the values under which it is read), as `READ_ONLY_WHEN`), set to anything
    but its default (`experiment.task_defaults`), or given in `unchanged` (an override that
    changes nothing: `--config.task.margin=0.2` with the infonce loss, whose user expects a
    margin). `--config.task.margin=0.5` with infonce trained silently. Not for restoring a
    trained run: its config is read as it was. Experiments without these attributes (a user's
    own) are not checked."""
    defaults = getattr(experiment, "task_defaults", {})
    settings = {**defaults, **config.task.to_dict()}
    for key, (decider, readers) in getattr(experiment, "task_read_only_when", {}).items():
        value, unset, setting = settings[key], defaults[key], settings[decider]
        if setting in readers or (value == unset and f"task.{key}" not in unchanged):
            continue
        raise KeyValueError(
            f"task.{key}",
            f"config key 'task.{key}'={value!r} has no effect with task.{decider}={setting!r} "
            f"(read only by {' and '.join(readers)})",
            # A flag's value: dropped (it said to set it to its default, then refused that).
            f"drop --config.task.{key} or set --config.task.{decider}={readers[0]}",
            depends_on=(f"task.{decider}",),
            file_fix=f"drop the line, or set task.{decider} to {readers[0]!r}",
            bound_fix=(
                f"set --config.task.{key}={unset} (its default) or "
                f"--config.task.{decider}={readers[0]}"
            ),
        )


def _check_divisible(values: Mapping[str, Any], num_devices: int) -> None:
    """The batch sizes against the device count (`validate`)."""
    micro = values["optimizer"]["accumulate_steps"]
    whole = micro * num_devices  # a batch splits into micro-batches of a multiple of the devices
    # The suggested size is one the next check accepts too.
    for key, unit in (("batch_size", whole), ("eval_batch_size", num_devices)):
        size = values[key]
        if size and size % num_devices:
            what = (
                f"config key '{key}'={size} is not divisible by the {num_devices} devices; "
                f"use a multiple of {num_devices}"
            )
            example = max(unit, size // unit * unit)
            raise KeyValueError(key, what, f"e.g. {override(key, example)}", example=example)
    if values["batch_size"] % whole:
        what = (
            f"config key 'batch_size'={values['batch_size']} must split into "
            f"optimizer.accumulate_steps={micro} micro-batches, each a multiple of the "
            f"{num_devices} device{'s' * (num_devices != 1)}"
        )
        example = max(whole, values["batch_size"] // whole * whole)
        fix = f"e.g. --config.batch_size={example}"
        depends = ("optimizer.accumulate_steps",)
        raise KeyValueError("batch_size", what, fix, example=example, depends_on=depends)


def check_slices(entries: Any) -> None:
    """Raises KeyValueError naming `report.slices`, the bad entry and the accepted forms."""
    from ann.report import slice_spec  # here: importing the report package needs ann.config

    key = "report.slices"
    if isinstance(entries, str):
        what = f"config key '{key}' is the string {entries!r}; give a tuple of entries"
        fix = f'e.g. --config.{key}="({entries!r},)"'
        raise KeyValueError(key, what, fix, example=(entries,))
    seen = []
    for entry in entries:
        try:
            spec = slice_spec.parse(entry)
        except ValueError as e:
            raise KeyValueError(key, f"config key '{key}' entry {entry!r}: {e}") from None
        cut = (spec.kind, spec.name, spec.index, spec.quantiles)  # its text aside
        if cut in seen:  # it was reported twice, and one picture written over the other
            raise KeyValueError(key, f"config key '{key}' names {entry!r} twice; give it once")
        seen.append(cut)


def task_settings(
    config: ml_collections.ConfigDict,
    defaults: Mapping[str, Any],
    choices: Mapping[str, Sequence[Any]] | None = None,
    ranges: Mapping[str, Range] | None = None,
) -> dict:
    """An experiment's settings: `defaults` updated by `config.task`, refusing unknown keys,
    values of another type than the default's, values outside `choices[key]` and numbers
    outside `ranges[key]` (e.g. `{"temperature": POSITIVE}`), with the key named."""
    settings = dict(defaults)
    for key, value in config.task.to_dict().items():
        path = f"task.{key}"
        if key not in defaults:
            near = closest(key, list(defaults))
            what = (
                f"config key '{path}' is unknown to experiment {config.experiment!r}"
                f"{meant_words([f'task.{near}'] if near else [])}; "
                + (f"it reads: {', '.join(sorted(defaults))}" if defaults else "it reads none")
            )
            meant = [f"task.{near}"] if near else []
            fix = f"e.g. {override(meant[0], fitting(value, defaults[near]))}" if meant else ""
            raise KeyValueError(path, what, fix, meant=meant, unknown=True)
        default = defaults[key]
        numeric = isinstance(default, float) and isinstance(value, int)
        if not (isinstance(value, type(default)) or numeric) or isinstance(
            value, bool
        ) != isinstance(default, bool):
            what = (
                f"config key '{path}' must be {type(default).__name__} like its default "
                f"{default!r}, got {type(value).__name__} {value!r}"
            )
            raise KeyValueError(path, what, example=default)
        settings[key] = float(value) if numeric else value
    for key, allowed in (choices or {}).items():
        check_choice(f"task.{key}", settings[key], allowed)
    for key, allowed in (ranges or {}).items():
        allowed.check(f"task.{key}", settings[key], settings.__getitem__, example=defaults[key])
    return settings


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def read(workdir: str) -> ml_collections.ConfigDict:
    """A run's resolved config from `workdir/config.json`: its record, as the fresh start wrote
    it (what a rerun compares with). Keys added to ann since the run was written take their
    defaults, so older runs still restore and export. Readers of the trained run (report,
    export, generate, restore) want `latest`."""
    return from_values(_record_values(workdir))


def latest(workdir: str) -> ml_collections.ConfigDict:
    """The config `workdir`'s run was last trained with: config.json plus the changes in the
    last line of config_changes.jsonl (`report.*`, `calibration`, lengths, ...), which a rerun
    records there and not in config.json."""
    return from_values(with_changes(_record_values(workdir), last_changes(workdir) or {}))


CONFIG_CHANGES = "config_changes.jsonl"  # appended by ann.train.resume.record


def last_changes(workdir: str) -> dict[str, list] | None:
    """The last line's changes from config.json ({key: [old, new]}), None where none is
    recorded. The file is read by metrics.jsonl's rule (`ann.train.writers.parse_lines`): a
    torn last line (a rerun stopped while appending it, before it trained) is skipped with a
    warning, so the line before it stands; raises ConfigError naming the file and the line of
    a damaged line before the last, and for a file that cannot be read (a directory): a
    damaged file read as none recorded used config.json alone, and exported a run with the
    calibration its last rerun had turned off."""
    records = changes_records(workdir)
    return last_of(records) if records else None


def last_of(records: Sequence[tuple[str, dict]]) -> dict[str, list]:
    """The changes of the last of `records` (`changes_records`), {} for none, less any
    fresh-start-only key an earlier ann recorded (the weights never came from it)."""
    changes = records[-1][1]["changes"] if records else {}
    return {k: v for k, v in changes.items() if not fresh_start_only(k)}


def changes_records(workdir: str) -> list[tuple[str, dict]]:
    """(line, record) of each good line of the run's config_changes.jsonl, [] where there is
    none (`last_changes`' rule and errors)."""
    from ann.train.writers import parse_lines, read_lines

    path = os.path.join(workdir, CONFIG_CHANGES)
    lines = read_lines(
        path,
        ConfigError,
        "ann train appends it on a rerun that changes the config: put back a good copy, or "
        "delete it to read config.json alone",
    )
    if lines is None:
        return []

    def is_record(record: dict) -> bool:
        changes = record.get("changes")
        return isinstance(changes, dict) and all(
            isinstance(v, list) and len(v) == 2 for v in changes.values()
        )

    return parse_lines(path, lines, is_record, "a record of config changes", ConfigError)


def with_changes(values: dict[str, Any], changes: Mapping[str, Sequence]) -> dict[str, Any]:
    """`values` (a config's JSON values, changed in place and returned) with each dotted key set
    to its new value; a key the new config lacks ("<unset>") is removed."""
    for key, (_, new) in changes.items():
        *parents, leaf = key.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        if new == UNSET:
            node.pop(leaf, None)
        else:
            node[leaf] = new
    return values


def _record_values(workdir: str) -> dict[str, Any]:
    path = file_in(workdir)
    with open(path) as f:
        text = f.read()
    try:
        values = json.loads(text)
    except ValueError as e:  # a torn or hand-edited file: named, with where, not a traceback
        where = f" (line {e.lineno} column {e.colno}: {e.msg})" if hasattr(e, "lineno") else ""
        raise ConfigError(
            f"{path} is not valid JSON{where}; ann train writes it once, at the run's fresh "
            "start: put back a good copy, or train into a new --workdir"
        ) from e
    if not isinstance(values, dict):
        raise ConfigError(f"{path} holds {type(values).__name__}, not a config's JSON object")
    values.pop(CONFIG_FLAG, None)  # the run's record of its --config argument, not a key
    values.pop(CONFIG_FILE, None)
    return values


def from_values(values: dict[str, Any]) -> ml_collections.ConfigDict:
    """A resolved config from its JSON values (config.json, an export's manifest `config`),
    keys added to ann since it was written filled with their defaults."""

    def fill(values: dict, schema: Mapping[str, Any]) -> None:
        for key, spec in schema.items():
            if isinstance(spec, Mapping):
                fill(values.setdefault(key, {}), spec)
            else:
                values.setdefault(key, spec[0])

    values = json.loads(json.dumps(values))  # a copy: the caller's dict is left as it was
    cache = values.get("data", {}).get("cache")
    if isinstance(cache, bool):  # written when data.cache was a bool
        values["data"]["cache"] = "on" if cache else "off"
    fill(values, SCHEMA)
    values["data"]["eval_splits"] = tuple(values["data"]["eval_splits"])  # JSON made it a list
    return ml_collections.ConfigDict(values)


def file_in(workdir: str) -> str:
    """The path of a run's config record, `workdir/config.json`."""
    return os.path.join(workdir, "config.json")


# config.json's entry for the `--config` argument that made the run, as given (the file and its
# `:ARG` variant): not a config key (none is spelt so), dropped where the record is read as a
# config. Runs written before it have none.
CONFIG_FLAG = "--config"
# ... and the absolute path of its file: the as-given path is relative to the directory the run
# was started from, and a message read from another directory named a file that was not there.
CONFIG_FILE = "--config file"


def write(config: ml_collections.ConfigDict, workdir: str, config_flag: str = "") -> str:
    """Writes the resolved config to `workdir/config.json` atomically, with `config_flag` (the
    `--config` argument as given, "configs/digits_cnn.py:writers") and its file's absolute path
    where known; returns the path."""
    os.makedirs(workdir, exist_ok=True)
    path = file_in(workdir)
    values = json.loads(to_json(config))
    if config_flag:
        values[CONFIG_FLAG] = config_flag
        values[CONFIG_FILE] = os.path.abspath(config_flag.partition(":")[0])
    atomic.write_text(path, json.dumps(values, indent=2, sort_keys=True) + "\n")
    return path


def recorded_config_flag(workdir: str) -> str:
    """The `--config` argument `workdir`'s run was started with, for a message to name: as given
    where that path reaches the same file from the current directory, else the recorded file's
    path from here (relative below it, else absolute), with the same `:ARG`; "" where config.json
    does not record it (a run written before ann recorded it, or made by a caller without
    one). A run recorded without its absolute path gets the argument as given."""
    try:
        with open(file_in(workdir)) as f:
            values = json.load(f)
    except (OSError, ValueError):
        return ""
    values = values if isinstance(values, dict) else {}
    flag, file = values.get(CONFIG_FLAG), values.get(CONFIG_FILE)
    if not isinstance(flag, str):
        return ""
    given, colon, arg = flag.partition(":")
    if not isinstance(file, str) or not file or _same_file(given, file):
        return flag
    here = os.path.relpath(file)
    return (file if here.startswith(os.pardir) else here) + colon + arg


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def same_config_flag(a: str, b: str) -> bool:
    """Whether two `--config` arguments name the same file (from the current directory) and
    the same `:ARG` variant: `./configs/x.py` and `configs/x.py` are one config."""
    (file_a, _, arg_a), (file_b, _, arg_b) = a.partition(":"), b.partition(":")
    return arg_a == arg_b and _same_file(file_a, file_b)


# Keys a rerun of an existing workdir may change: they change how a run is watched, saved or
# laid out, not what it trains (`total_steps`/`num_epochs` extend or cut the run; a decaying
# schedule is then rebuilt, with a warning). A key is covered by its own entry or a section's.
# Every other key (model, task, data, optimizer, batch_size, seed, experiment, dtype, freeze,
# best_metric, ...) is refused by `check_resume`.
RESUME_MAY_CHANGE = (
    "total_steps",
    "num_epochs",
    "steps_per_call",  # the same steps, grouped into calls differently
    "log_every_steps",
    "eval_every_steps",
    "checkpoint_every_steps",
    "max_to_keep",
    "eval_batch_size",
    "early_stopping.patience",
    "early_stopping.min_delta",
    "async_checkpointing",
    "profile_steps",
    "compilation_cache_dir",
    "compilation_cache_max_mb",
    "mesh",
    "sharding_rules",
    "data.data_dir",
    "data.cache",
    "data.read_threads",
    "data.prefetch_batches",
    "data.eval_splits",
    # Read only at a fresh start: on resume the run's own checkpoint wins, so they change nothing.
    "init_from",
    "init_from_skip",
    "report",  # read by `ann report` only
    "calibration",  # read by `ann export` only
)

# Of RESUME_MAY_CHANGE, the keys a resumed run does not read at all, and who does: a change
# to them is recorded with that said.
READ_ELSEWHERE = {
    "report": "read by ann report",
    "calibration": "read by ann export",
}

# Of RESUME_MAY_CHANGE, the keys only a fresh start reads: a resume's change to them has no
# effect and is not recorded (`ann.train.resume.record` warns), so the latest config keeps the
# fresh start's, where the weights came from (WORKDIR/init_from.json). Recorded, a changed
# init_from was exported (manifest.json's config) and registered as the model's parent.
FRESH_START_ONLY = ("init_from", "init_from_skip")


def fresh_start_only(key: str) -> bool:
    """Whether only a fresh start reads `key` (dotted; `FRESH_START_ONLY`)."""
    return key in FRESH_START_ONLY


# Of RESUME_MAY_CHANGE, the keys only training reads: a rerun of a finished run (early stopped,
# pruned, or at total_steps), which trains nothing, has no use for a change to them and records
# none (`ann.train.resume.record`); the others (report, calibration, data, ...) are read by
# `ann report`, `ann export` and `ann generate` from the latest run's config, and are recorded.
TRAINING_ONLY = (
    "total_steps",
    "num_epochs",
    "steps_per_call",
    "log_every_steps",
    "eval_every_steps",
    "checkpoint_every_steps",
    "max_to_keep",
    "early_stopping.patience",
    "early_stopping.min_delta",
    "async_checkpointing",
    "profile_steps",
    "init_from",
    "init_from_skip",
)


def training_only(key: str) -> bool:
    """Whether only training reads `key` (dotted; `TRAINING_ONLY`)."""
    return any(key == k or key.startswith(k + ".") for k in TRAINING_ONLY)


def read_elsewhere(key: str) -> str | None:
    """Who reads `key` (dotted) when a resumed run does not (`READ_ELSEWHERE`), else None."""
    return READ_ELSEWHERE.get(key) or READ_ELSEWHERE.get(key.split(".", 1)[0])


UNSET = "<unset>"  # what `diff` gives for a key one config lacks


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def plain(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` (a ConfigDict or a dict) as config.json stores it: a plain dict of JSON values
    (tuples as lists, anything else JSON lacks as its str)."""
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.loads(json.dumps(values, default=str))


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """`{dotted key: (old value, new value)}` for every key whose value differs between two
    configs (ConfigDicts or plain dicts); a key absent on one side shows as "<unset>". Values are
    compared as config.json stores them (tuples and lists alike)."""
    a, b = (_flat(plain(c)) for c in (old, new))
    return {
        key: (a.get(key, UNSET), b.get(key, UNSET))
        for key in sorted(set(a) | set(b))
        if a.get(key, UNSET) != b.get(key, UNSET)
    }


def _may_change(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUME_MAY_CHANGE)


def check_resume(
    saved: ml_collections.ConfigDict,
    config: ml_collections.ConfigDict,
    workdir: str,
    init_from: Callable[[], str | None] | None = lambda: None,
    config_flag: str = "",
) -> dict[str, tuple[Any, Any]]:
    """Compares a rerun's config with the one `workdir` was started with (`read(workdir)`).
    `config_flag`: this run's `--config` argument; where config.json records another one, the
    refusal names the recorded one (the likely mix-up: `configs/digits_cnn.py` resuming a run
    made with `configs/digits_cnn.py:writers`); a caller that gives none is told the values.

    Returns the allowed changes (keys in `RESUME_MAY_CHANGE`) as `{key: (old, new)}`; raises
    ConfigError, in one line naming each other changed key with its old and new value, when the
    rerun would train something else than the run's record (config.json) says. The fix it names
    is a new --workdir, with `--config.init_from=SPEC` where `init_from()` (asked only then)
    gives a SPEC from which this run's weights load into the new config's model
    (`ann.train.resume.init_from_spec`), and without it where they do not (None); `init_from`
    None: nothing is said of the weights (the caller cannot tell without JAX)."""
    changes = diff(saved, config)
    refused = {k: v for k, v in changes.items() if not _may_change(k)}
    if refused:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        spec = init_from() if init_from is not None else ""
        start = (
            f" (add --config.init_from={spec} to start from this run's weights)"
            if spec
            else ""
            if init_from is None
            else " (this run's weights do not fit the new model: init_from would load none)"
        )
        recorded = recorded_config_flag(workdir)
        if recorded and config_flag and not same_config_flag(recorded, config_flag):
            raise ConfigError(
                f"{workdir} was trained with --config={recorded}, another config ({listed}), "
                f"and resuming would mix two runs in one record; use a new --workdir{start}, or "
                f"rerun with --config={recorded} (and the values in {workdir}/config.json)"
            )
        raise ConfigError(
            f"{workdir} was trained with another config ({listed}), and resuming would mix two "
            f"runs in one record; use a new --workdir{start}, or rerun with the values in "
            f"{workdir}/config.json"
        )
    return changes
