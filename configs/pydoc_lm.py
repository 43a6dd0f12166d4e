"""A character-level causal LM on the standard library's docstrings (`pydoc_chars`).

    ann train --config=configs/pydoc_lm.py --workdir=runs/pydoc_lm
    ann generate --workdir=runs/pydoc_lm --prompt="Return the " --top_k=20

Scored by eval/bits_per_char on held-out modules; eval/unigram_bits_per_char is the baseline.
"""

from ann import config as ann_config


def get_config(arg: str | None = None):
    ann_config.variant(__file__, arg)
    c = ann_config.base()
    c.experiment = "language_modelling"
    c.model.name = "causal_lm"
    c.model.dim = 64
    c.model.depth = 2
    c.model.num_heads = 4
    c.model.mlp_dim = 256
    c.model.dropout = 0.0
    c.data.name = "pydoc_chars"
    c.data.train_split = "train"
    c.data.validation_split = "validation"  # chooses the best checkpoint
    c.data.eval_splits = ("test",)
    c.batch_size = 32
    c.eval_batch_size = 64
    c.total_steps = 800
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 100
    c.optimizer.weight_decay = 1e-2
    c.optimizer.grad_clip_norm = 1.0
    c.log_every_steps = 100
    c.eval_every_steps = 400
    c.checkpoint_every_steps = 400
    c.best_metric = "val/bits_per_char"
    c.best_mode = "min"
    return c
