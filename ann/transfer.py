"""`ann transfer`: a config's model, array by array, without training: each path's shape and
dtype, whether training updates it (trained, frozen, statistics), and with `init_from` set,
whether it is loaded from the source or starts fresh (and why). The library is
ann/train/transfer.py.

    ann transfer --config=configs/digits_finetune.py [--config.init_from=runs/digits_cnn]

The flags and the config's keys are checked before JAX is imported and the model built.
"""

from __future__ import annotations

from absl import flags

from ann import cli
from ann import config as config_lib

FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    cli.check_no_arguments(argv[1:])
    # A config about to be trained (what it would load and freeze): every check `ann train` makes
    # before importing JAX, so an override it would refuse is refused here too.
    cli.drop_switched_model_keys(FLAGS)
    # A key the config file set is refused with its file and line (`cli.run`).
    config_lib.validate(FLAGS.config, num_devices=None, unchanged=cli.unchanged_overrides(FLAGS))
    from ann.train import transfer

    try:
        lines = transfer.describe(FLAGS.config)
    except config_lib.ConfigError as e:
        if FLAGS.config.init_from and str(e).startswith("config key 'init_from'"):
            # The source is not there yet (the config's default run untrained): the model's
            # own paths are still worth a look.
            alone = "--config.init_from=''"
            if FLAGS.config.init_from_skip:  # refused without a source
                alone += " --config.init_from_skip='()'"
            raise config_lib.ConfigError(f"{e}; or {alone} lists the model's paths alone") from None
        raise
    print("\n".join(lines))


if __name__ == "__main__":
    cli.define_config("Config file (configs/NAME.py[:ARG]).")
    flags.mark_flags_as_required(["config"])
    # A bad config or source checkpoint: one line; warnings only: the table is the output.
    cli.run(main, errors=("ann.train.checkpoint:CheckpointError",), quiet=True)
