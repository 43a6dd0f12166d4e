"""An MLP on the offline breast cancer table (30 numeric features, 2 classes)."""

from ann import config as ann_config


def get_config(arg: str | None = None):
    ann_config.variant(__file__, arg)
    c = ann_config.base()
    c.model.name = "mlp"
    c.model.features = (64, 64)
    c.model.dropout = 0.1
    c.data.name = "breast_cancer"
    c.batch_size = 64
    c.num_epochs = 60
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.log_every_steps = 50
    c.eval_every_steps = 100
    c.checkpoint_every_steps = 100
    # `ann report`: accuracy per class and per quartile of the first feature (mean radius:
    # large tumours are mostly malignant, small ones benign); a slice below 0.9 is flagged.
    c.report.slices = ("label", "feature:features[0]:quantiles=4")
    c.report.slice_min = 0.9
    return c
