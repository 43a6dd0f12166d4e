"""A ViT-style patch classifier on the offline digits: 2x2 patches of the 8x8 image (16 tokens).

ann train --config=configs/digits_vit.py --workdir=runs/digits_vit
"""

from ann import config as ann_config


def get_config(arg: str | None = None):
    ann_config.variant(__file__, arg)
    c = ann_config.base()
    c.experiment = "classification"
    c.model.name = "vit"
    c.model.patch_size = 2
    c.model.dim = 64
    c.model.depth = 2
    c.model.num_heads = 4
    c.model.mlp_dim = 128
    c.model.dropout = 0.1
    c.data.name = "digits"
    c.data.train_split = "train"
    c.data.validation_split = "validation"  # chooses the best checkpoint
    c.data.eval_splits = ("test",)
    c.batch_size = 64
    c.total_steps = 1000
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 2e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 100
    c.optimizer.weight_decay = 1e-4
    c.optimizer.grad_clip_norm = 1.0
    c.log_every_steps = 100
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    return c
