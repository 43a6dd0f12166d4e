"""An encoder-decoder transformer on generated digit strings (`digit_strings`): reverse, sort and
add, scored by greedy exact match on lengths held out of training (`test`: strings of 3 and 6
digits, inside the trained range 1..8) and on the training lengths (`test_seen`, reported as
eval_test_seen/...), overall and per task.

    ann train --config=configs/digit_seq2seq.py --workdir=runs/digit_seq2seq
    ann generate --workdir=runs/digit_seq2seq --source="add 123+989" --beam_size=4

What makes held-out lengths work: place-value rotary positions (`model.positions = "digits"`:
each source digit sits at its distance from the units digit of its number, so output i meets the
digits of place i whatever the length) and sums written least-significant digit first (the data
set's format). Measured on held-out lengths after 1,000 steps of this model (2-core CPU):
`digits` 1.00 exact match (every task); `rope` (sequence positions, operands reversed too) 0.67
(reverse 1.00, sort 1.00, add 0.00: the operands' digits of one place are a length-dependent
distance apart); `learned` 0.52 (reverse 0.76, sort 0.80, add 0.00).
"""

from ann import config as ann_config


def get_config(arg: str | None = None):
    ann_config.variant(__file__, arg)
    c = ann_config.base()
    c.experiment = "seq2seq"
    c.model.name = "seq2seq"
    c.model.positions = "digits"
    c.model.dim = 64
    c.model.encoder_depth = 2
    c.model.decoder_depth = 2
    c.model.num_heads = 4
    c.model.mlp_dim = 256
    c.model.dropout = 0.0
    c.data.name = "digit_strings"
    c.data.train_split = "train"
    c.data.validation_split = "validation"  # chooses the best checkpoint
    c.data.eval_splits = ("test", "test_seen")
    c.batch_size = 64
    c.eval_batch_size = 500
    c.total_steps = 1200
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 2e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 100
    c.optimizer.end_learning_rate_factor = 0.01
    c.optimizer.weight_decay = 1e-2
    c.optimizer.grad_clip_norm = 1.0
    c.task.eval_beam_size = 0  # e.g. 4 adds eval/beam_exact_match (slower evals)
    c.log_every_steps = 100
    c.eval_every_steps = 600
    c.checkpoint_every_steps = 600
    c.best_metric = "val/exact_match"
    c.best_mode = "max"
    return c
