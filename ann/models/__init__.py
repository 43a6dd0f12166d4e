"""Models found by name: ann's own (`mlp`, `cnn`, `resnet`, `vit`, `causal_lm`, `seq2seq`) or
a user's `package.module:Class`.

A model is a Flax NNX module whose constructor takes keyword arguments: what the experiment
supplies (e.g. `input_shape`, `num_classes`, `rngs`) plus the config's `model.*` keys.
"""

from __future__ import annotations

import inspect
import re
import traceback
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import jax
import jax.numpy as jnp
from absl import logging
from flax import nnx

from ann.config import (
    RANGES,
    ConfigError,
    KeyValueError,
    Range,
    check_choice,
    closest,
    did_you_mean,
    fitting,
    meant_words,
    override,
)
from ann.imports import import_named, in_main, registrar

# name -> `module:Class`, imported on first use (so this package imports none of its models,
# and a model module never needs this one to be found); `register` adds a user's class.
MODELS: dict[str, str | type[nnx.Module]] = {
    "mlp": "ann.models.mlp:MLP",
    "cnn": "ann.models.cnn:CNN",
    "resnet": "ann.models.resnet:ResNet",
    "vit": "ann.models.vit:ViT",
    "causal_lm": "ann.models.lm:CausalLM",
    "lm": "ann.models.lm:CausalLM",
    "seq2seq": "ann.models.seq2seq:Seq2Seq",
    "lstm": "ann.models.recurrent:LSTMForecaster",
    "gru": "ann.models.recurrent:GRUForecaster",
    "dense_autoencoder": "ann.models.autoencoder:DenseAutoencoder",
    "conv_autoencoder": "ann.models.autoencoder:ConvAutoencoder",
    "siamese": "ann.models.siamese:Siamese",
    "bi_encoder": "ann.models.siamese:Siamese",
}


# `@ann.models.register("wide")` on a user's model class: `model.name="wide"` then builds it
# (its module imported before the config is checked; a run records the class's `module:Class`
# instead, `record_registered`). ann's own names are refused, as for experiments.
register = registrar(lambda: MODELS, frozenset(MODELS), "ann.models.register")


def record_registered(config: Any) -> None:
    """Sets `config.model.name` from a registered short name to its class's `module:Class`, so
    that config.json names what a later job (`ann export`, `ann report`, a resume) can import
    without the module that registered it (a run trained as "wide" could not be exported). A
    class defined in `__main__` keeps its short name (no other process can import it)."""
    cls = MODELS.get(config.model.name)
    if (said := in_main("model.name", config.model.name, cls)) is not None:
        logging.warning("%s", said)
    if isinstance(cls, type) and cls.__module__ != "__main__":
        config.model.name = f"{cls.__module__}:{cls.__qualname__}"


def names() -> list[str]:
    return sorted(MODELS)


def near_name(name: str, options: Sequence[str]) -> str:
    """ " (did you mean 'mlp'?)" for a near option, or for a dotted path that names a class
    (`mynets.Wide`), the module:Class spelling; "" otherwise."""
    module, _, attr = name.rpartition(".")
    if module and attr[:1].isupper():  # mlp.MLP: ann's own model, by the name it is known by
        return (
            f" (did you mean {module!r}?)"
            if module in options
            else f" (did you mean '{module}:{attr}'?)"
        )
    return did_you_mean(name, options)


def get(name: str) -> type[nnx.Module]:
    """The model class for `name`: a name in `MODELS` or `package.module:ClassName`. Raises
    ConfigError naming `model.name` for an unknown name or a path that does not import."""
    target = MODELS.get(name, name)
    if isinstance(target, type):
        return target
    if ":" not in target:  # worded for the config file's line where it set it (`cli.run`)
        what = (
            f"config key 'model.name': unknown model {name!r}{near_name(name, names())}; use "
            f"one of {', '.join(names())} or package.module:ClassName"
        )
        raise KeyValueError("model.name", what, example=closest(name, names()))
    return import_named("model.name", target)


def _parameters(cls: type) -> tuple[dict[str, inspect.Parameter], bool]:
    """The constructor's named parameters, and whether it takes **kwargs."""
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    return params, any(p.kind is p.VAR_KEYWORD for p in params.values())


def not_taken(name: str, keys: Sequence[str]) -> list[str]:
    """Those of `keys` (`model.*` keys, without the prefix) that model `name`'s constructor does
    not take: none for a model that takes **kwargs. Raises ConfigError for an unknown model."""
    params, takes_any = _parameters(get(name))
    return [] if takes_any else [k for k in keys if k not in params]


def argument_default(name: str, argument: str) -> Any:
    """The default of model `name`'s constructor argument `argument` (None where it has none
    or takes no such argument). Raises ConfigError for an unknown model."""
    parameter = _parameters(get(name))[0].get(argument)
    return None if parameter is None or parameter.default is parameter.empty else parameter.default


_FROM_ELSEWHERE = ("dtype", "param_dtype", "rngs")  # config.dtype, config.param_dtype, the seed


# Arguments every ann model shares (`model.dropout`), ranged once in config.RANGES.
_SHARED_RANGES = {
    key.removeprefix("model."): allowed
    for key, allowed in RANGES.items()
    if key.startswith("model.")
}


def check_arguments(
    name: str, kwargs: Mapping[str, Any], supplied: Sequence[str] = (), prefix: str = "model."
) -> None:
    """Raises ConfigError for a `model.*` key that model `name`'s constructor does not take,
    naming the key and the arguments it does take (`supplied`: what the experiment passes),
    whose value is not one of the model's own `CHOICES` (a class attribute, argument -> the
    values it takes, e.g. `{"norm": (None, "layer")}`), or whose number lies outside the
    model's own `RANGES` (a class attribute, argument -> `ann.config.Range`) or the ranges
    every model shares (`model.dropout`, config.RANGES).
    `prefix` is where the keys sit in the config (a siamese tower's: "model.encoder_kwargs.").
    A model whose arguments hold another model's (a tower) checks those in its classmethod
    `check_nested(kwargs, prefix)`."""
    cls = get(name)
    params, takes_any = _parameters(cls)
    for key, value in kwargs.items():
        if key in params:
            _check_kind(f"{prefix}{key}", value, params[key].default)
    # Text choices (`model.norm`) too, so a sweep or a run refuses them before data is read.
    for key, options in getattr(cls, "CHOICES", {}).items():
        if key in params and key in kwargs:
            check_choice(f"{prefix}{key}", kwargs[key], options)
    ranges: Mapping[str, Range] = {**_SHARED_RANGES, **getattr(cls, "RANGES", {})}
    for key, allowed in ranges.items():
        param = params.get(key)
        default = None if param is None or param.default is param.empty else param.default
        allowed.check(f"{prefix}{key}", kwargs.get(key), kwargs.__getitem__, example=default)
    if hasattr(cls, "check_nested"):
        cls.check_nested(kwargs, prefix)
    if takes_any:
        return
    # What a config may set: everything the experiment or the loop does not pass itself (when
    # that is not known, the arguments with defaults, less dtypes and RNGs).
    passed = supplied or [
        k for k, p in params.items() if p.default is p.empty or k in _FROM_ELSEWHERE
    ]
    accepted = [k for k in params if k not in passed]
    takes = f"it accepts: {', '.join(accepted)}" if accepted else "it takes none"
    for key in kwargs:
        if key in supplied:  # it was "got multiple values for keyword argument"
            _given_elsewhere(name, prefix + key, "the experiment, from the data set")
    unknown = [key for key in kwargs if key not in params]
    far = [key for key in unknown if not closest(key, accepted)]
    if prefix == "model." and far and len(far) == len(unknown):
        # Names near none: another model's arguments (a config importing digits_cnn's and
        # naming another model), all at once (each had cost a run), read against model.name.
        keys = [f"{prefix}{key}" for key in far]
        if len(keys) == 1:
            what, them = f"config key '{keys[0]}' is not an argument of model {name!r}", "it"
        else:
            quoted = ", ".join(map(repr, keys))
            what, them = f"config keys {quoted} are not arguments of model {name!r}", "them"
        raise KeyValueError(
            keys[0], what, f"{takes} (drop {them} from the config or the command line)",
            unknown=True, depends_on=("model.name",), others=keys[1:],
        )  # fmt: skip
    for key in kwargs:
        if key not in params:
            # A near name is the fix; "drop it" only where nothing is near.
            near = closest(key, accepted)
            close = [f"{prefix}{near}"] if near else []
            meant = meant_words(close)
            drop = "" if meant else " (drop it from the config or the command line)"
            if prefix != "model.":
                # A section of another model's arguments (a siamese tower's), which the config
                # file fills for its own choice: `--config.model.encoder=vit` on
                # digits_retrieval met the file's encoder_kwargs.dense; emptying the section
                # from the command line is the fix (`=None` is refused as a section's value).
                section = prefix.rstrip(".")
                raise ConfigError(  # not the file's line to fix (`cli.in_config_file`): a flag's
                    f"config key '{prefix}{key}' is not an argument of model {name!r}{meant}; "
                    f"{takes} (drop it from the config or the command line, or clear the config "
                    f"file's {section} with --config.{section}={{}})"
                )
            what = f"config key '{prefix}{key}' is not an argument of model {name!r}{meant}"
            default = params[near].default if near else None
            fit = fitting(kwargs[key], default) if default is not inspect.Parameter.empty else None
            ready = f"; e.g. {override(close[0], fit)}" if close and fit is not None else ""
            raise KeyValueError(
                f"{prefix}{key}", what, f"{takes}{drop}{ready}", meant=close, unknown=True
            )


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_kind(path: str, value: Any, default: Any) -> None:
    """ConfigError when `value` is not of the kind of the constructor's `default`: an integer
    for an int (a JAX TypeError deep in the model before), a number for a float, a tuple of
    integers for a tuple of integers. Other defaults (None, strings, bools) say nothing."""
    if value is None or isinstance(default, bool):
        return
    if _is_int(default) and not _is_int(value):
        expected, example = "an integer", default
    elif isinstance(default, float) and not (_is_int(value) or isinstance(value, float)):
        expected, example = "a number", default
    elif (
        isinstance(default, tuple)
        and default
        and all(_is_int(x) for x in default)
        and not (isinstance(value, tuple | list) and all(_is_int(x) for x in value))
    ):
        expected, example = "a tuple of integers", f"'{default}'"
    else:
        return
    if isinstance(value, tuple) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]  # text ml_collections could not read as a tuple, which it wraps in one
    what = f"config key '{path}' must be {expected}, got {value!r}"
    raise KeyValueError(path, what, f"e.g. --config.{path}={example}", example=default)


def _check_input_rank(name: str, input_shape: Sequence[int] | None) -> None:
    """Refuses, as a KeyValueError of `model.name`, a model of images (its class's
    `INPUT_RANK` 3: [height, width, channels]) for data of another shape (breast_cancer's
    vectors of 30 values): it was "cannot be built ...: not enough values to unpack"."""
    rank = getattr(get(name), "INPUT_RANK", None)
    if rank is None or input_shape is None or len(input_shape) == rank:
        return
    shape = tuple(int(d) for d in input_shape)
    inputs = f"vectors of {shape[0]} values" if len(shape) == 1 else f"arrays of shape {shape}"
    what = (
        f"config key 'model.name': model {name!r} takes images, [height, width, channels], and "
        f"this data set's inputs are {inputs}"
    )
    fix = "choose a model for them, e.g. --config.model.name=mlp"
    raise KeyValueError("model.name", what, fix, example="mlp", depends_on=("data.name",))


def build(name: str, kwargs: dict, experiment: str = "", **supplied) -> nnx.Module:
    """Constructs model `name` from config kwargs plus what the experiment supplies.

    Config keys the constructor does not accept fail with the accepted list; supplied
    arguments it does not take are left out (a model need not take `dtype`, see from_config).
    A constructor argument without a default that neither the experiment (`experiment`, its
    name, for the message) nor the config gives is a ConfigError naming what the experiment
    passes (README "Models": the table of each experiment's arguments).
    A ConfigError the constructor raises (its own line, naming its key) is passed on as it is.
    A ValueError it raises about its arguments (a `dim` that `num_heads` does not divide, a
    patch that does not tile the image: combinations only it can judge, with the data's
    shapes) is a ConfigError naming the model. A layer that asks the `rngs` for a stream other
    than `params` (`nnx.Dropout(rate, rngs=rngs)`) is a ConfigError saying to pass the call's
    key instead. Any other exception from building it (a user's model given `width=0` divided
    by zero) is a ConfigError too, naming the exception and the file and line it came from,
    and the settings where there are any, since either may be at fault."""
    check_arguments(name, kwargs, tuple(supplied))
    params, takes_any = _parameters(get(name))
    offered = supplied
    if not takes_any:
        supplied = {k: v for k, v in supplied.items() if k in params}
    _check_required(name, params, kwargs, offered, experiment)
    _check_input_rank(name, supplied.get("input_shape"))
    # What the data decided, for a model that cannot be built with it (a CNN given vectors).
    given = ", ".join(f"{k}={v!r}" for k, v in supplied.items() if k in ("input_shape",))
    given = f" for the data's {given}" if given else ""
    fix = "fix the setting, or choose a model for this data"
    try:
        model = get(name)(**kwargs, **supplied)
    except ConfigError:
        raise  # the model's own line, naming its key: wrapped, it blamed the data's shape too
    except ValueError as e:
        raise ConfigError(
            f"model {name!r} cannot be built{given} from its model.* settings: {e}; {fix}"
        ) from e
    except Exception as e:
        frames = traceback.extract_tb(e.__traceback__)
        # The model's own line, not Flax's or JAX's where it reached them.
        ours = [f for f in frames if "-packages" not in f.filename] or frames
        frame = ours[-1]
        at = f"(at {frame.filename}:{frame.lineno})"
        stream = _RNG_STREAM.search(str(e)) if isinstance(e, KeyError | AttributeError) else None
        if stream:
            # ann builds with nnx.Rngs(params=seed); each step's key comes at call time (the
            # train state's, so a resumed or accumulated step draws the same mask).
            raise ConfigError(
                f"model {name!r} asks the rngs it is built with for a {stream[1]!r} stream "
                f"{at}; ann builds models with nnx.Rngs(params=seed) only and passes each "
                "step's dropout key when it calls the model: build the layer without rngs "
                "(`nnx.Dropout(rate)`) and pass the key in __call__ (`self.drop(x, "
                'rngs=rngs)`), as README "Add your own model" shows'
            ) from e
        if not kwargs:  # no setting to blame: the model's code (or the data's shape)
            raise ConfigError(
                f"model {name!r} cannot be built{given} (it has no model.* settings): "
                f"{type(e).__name__}: {e} {at}; fix the model, or choose one for this data"
            ) from e
        settings = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ConfigError(
            f"model {name!r} cannot be built{given} from its model.* settings ({settings}): "
            f"{type(e).__name__}: {e} {at}; {fix}, or the model if both are right"
        ) from e
    if not isinstance(model, nnx.Module):  # it failed later, in Flax: "has no attribute 'eval'"
        raise ConfigError(
            f"model {name!r} built a {type(model).__name__}, not a flax.nnx.Module; derive it "
            "from nnx.Module"
        )
    return model


# Flax's "No RngStream named 'dropout' found in Rngs." (a KeyError, or AttributeError for
# `rngs.dropout`).
_RNG_STREAM = re.compile(r"No RngStream named '([^']*)'")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_required(
    name: str,
    params: Mapping[str, inspect.Parameter],
    kwargs: Mapping[str, Any],
    offered: Mapping[str, Any],
    experiment: str,
) -> None:
    """Raises ConfigError for constructor arguments without a default that neither the config
    (`kwargs`) nor the experiment (`offered`) gives: it was Python's "missing 1 required
    keyword-only argument", pointing into ann and naming none of what was passed."""
    missing = [
        k
        for k, p in params.items()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and k not in kwargs
        and k not in offered
    ]
    if not missing:
        return
    values = ", ".join(f"{k}={_shown(v)}" for k, v in offered.items() if k not in _FROM_ELSEWHERE)
    rest = ", ".join(k for k in offered if k in _FROM_ELSEWHERE)
    builder = f"experiment {experiment!r}" if experiment else "its caller"
    cls = get(name)
    raise ConfigError(
        f"model {name!r} cannot be built: {builder} builds the model with "
        f"{values or 'no data arguments'}{f' (and {rest})' if rest else ''}; "
        f"{cls.__name__}.__init__ also requires {', '.join(missing)}: give "
        f"{'it' if len(missing) == 1 else 'them'} a default or set --config.model."
        f'{missing[0]}=..., or take the arguments this experiment passes (README "Models")'
    )


def _given_elsewhere(name: str, key: str, source: str) -> NoReturn:
    """Refuses a `model.*` key the model gets from `source` instead."""
    raise ConfigError(
        f"config key '{key}': model {name!r} is given that argument by {source}; drop it"
    )


def check_config(config) -> None:
    """What can be checked of the config's model before any data is read: its `model.*` keys
    against the constructor, and that a non-float32 `dtype` or `param_dtype` reaches a model
    that takes it. A model without a `dtype` argument would run in float32 whatever the config
    says (mixed precision that does nothing), so that is a ConfigError too."""
    name = config.model.name
    for key in _FROM_ELSEWHERE:
        if key in config.model:
            _given_elsewhere(
                name, f"model.{key}", "config.seed" if key == "rngs" else f"config.{key}"
            )
    check_arguments(name, {k: v for k, v in config.model.items() if k != "name"})
    params, takes_any = _parameters(get(name))
    for key in ("dtype", "param_dtype"):
        value = config[key]
        if value != "float32" and not takes_any and key not in params:
            raise ConfigError(
                f"config key '{key}'={value!r}: model {name!r} takes no {key!r} argument, so "
                f"it would run in float32; add `{key}` to its constructor or set "
                f"--config.{key}=float32"
            )


def from_config(config, **supplied) -> nnx.Module:
    """The model `config.model.name` built from the config's `model.*` keys, its `dtype` and
    `param_dtype`, and what the experiment supplies (shapes, vocabulary, `rngs`).

    Raises ConfigError as `check_config` does, and for `model.attention='cudnn'` off an
    NVIDIA GPU (it failed in tracing with a traceback: "cuDNN is not detected")."""
    check_config(config)
    if config.model.get("attention") == "cudnn" and jax.default_backend() != "gpu":
        raise ConfigError(
            f"config key 'model.attention'='cudnn' needs an NVIDIA GPU with cuDNN; this run's "
            f"backend is {jax.default_backend()}: use --config.model.attention=xla (or einsum)"
        )
    kwargs = {k: v for k, v in config.model.to_dict().items() if k != "name"}
    return build(
        config.model.name,
        kwargs,
        experiment=config.experiment,
        dtype=jnp.dtype(config.dtype),
        param_dtype=jnp.dtype(config.param_dtype),
        **supplied,
    )
