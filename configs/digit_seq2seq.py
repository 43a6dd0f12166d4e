"""An encoder-decoder transformer on generated digit strings (`digit_strings`): reverse, sort and
add, scored by greedy exact match on lengths held out of training (`test`) and on the training
lengths (`test_seen`, reported as eval_test_seen/...).

    python -m ann.main --config=configs/digit_seq2seq.py --workdir=runs/digit_seq2seq
    python -m ann.generate --workdir=runs/digit_seq2seq --source="add 123+989" --beam_size=4
"""

from ann import config as ann_config


def get_config(arg: str | None = None):
    if arg:
        raise ValueError(f"digit_seq2seq takes no variant, got {arg!r}")
    c = ann_config.base()
    c.experiment = "seq2seq"
    c.model.name = "seq2seq"
    c.model.dim = 64
    c.model.encoder_depth = 2
    c.model.decoder_depth = 2
    c.model.num_heads = 4
    c.model.mlp_dim = 128
    c.model.dropout = 0.0
    c.data.name = "digit_strings"
    c.data.train_split = "train"
    c.data.eval_splits = ("test", "test_seen")
    c.batch_size = 64
    c.eval_batch_size = 256
    c.total_steps = 2000
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 2e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 200
    c.optimizer.weight_decay = 1e-2
    c.optimizer.grad_clip_norm = 1.0
    c.log_every_steps = 100
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 1000
    c.best_metric = "eval/exact_match"
    c.best_mode = "max"
    return c
