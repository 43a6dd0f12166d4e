"""Fine-tuning: the digits CNN's trained conv encoder under a new classifier head.

    ann train --config=configs/digits_cnn.py --workdir=runs/digits_cnn
    ann train --config=configs/digits_finetune.py --workdir=runs/digits_finetune \
        --config.init_from=runs/digits_cnn
    ann train --config=configs/digits_finetune.py:scratch \
        --workdir=runs/digits_scratch

The model is the digits CNN with a new head: the conv layers and the dense layer come from the
source run (its best checkpoint; `RUN_DIR:latest`, `RUN_DIR:STEP`, an export directory or
`models:/NAME@ALIAS` work too); the head is re-initialized (`init_from_skip`); the conv layers
are frozen, so only the dense layer and the head train, on a small budget (100 steps of 32).
WORKDIR/init_from.json says what was loaded. The source never saw the test split, so the
comparison with `:scratch` (the same model and budget from random weights, nothing frozen) is
fair. `ann transfer --config=configs/digits_finetune.py` lists the parameter
paths that `freeze` and `init_from_skip` match against.
"""

from ann import config as ann_config


def get_config(arg: str | None = None):
    arg = ann_config.variant(__file__, arg, "scratch")
    c = ann_config.base()
    c.experiment = "classification"
    # The source's architecture (configs/digits_cnn.py): paths and shapes must match to load.
    c.model.name = "cnn"
    c.model.features = (32, 64)
    c.model.dense = 128
    c.model.dropout = 0.1
    c.data.name = "digits"
    c.data.train_split = "train"
    c.data.validation_split = "validation"  # chooses the best checkpoint
    c.data.eval_splits = ("test",)
    c.init_from = "runs/digits_cnn"
    c.init_from_skip = ("head/.*",)  # a new head: same shape as the old one, so skip it by name
    c.freeze = ("convs/.*",)  # the encoder keeps its features; dense and head adapt
    c.batch_size = 32
    c.total_steps = 100
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 10
    c.optimizer.weight_decay = 1e-4
    c.log_every_steps = 25
    c.eval_every_steps = 50
    c.checkpoint_every_steps = 50
    if arg == "scratch":  # the baseline: the same model and budget, from random weights
        c.init_from = ""
        c.init_from_skip = ()
        c.freeze = ()
    return c
