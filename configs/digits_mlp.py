"""An MLP on the offline digits data."""

from ann import config as ann_config


def get_config(arg: str | None = None):
    del arg
    c = ann_config.base()
    c.model.name = "mlp"
    c.model.features = (256, 256)
    c.model.dropout = 0.1
    c.data.name = "digits"
    c.batch_size = 128
    c.total_steps = 800
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.eval_every_steps = 200
    return c
