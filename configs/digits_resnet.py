"""A small ResNet (BatchNorm) on the offline digits data."""

from ann import config as ann_config


def get_config(arg: str | None = None):
    ann_config.variant(__file__, arg)
    c = ann_config.base()
    c.model.name = "resnet"
    c.model.widths = (32, 64)
    c.model.blocks_per_stage = 2
    c.data.name = "digits"
    c.batch_size = 128
    c.total_steps = 600
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 5e-4
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 50
    return c
