"""An MLP on the offline digits data."""

from ann import config as ann_config


def get_config(arg: str | None = None):
    ann_config.variant(__file__, arg)
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


def get_sweep(h):
    """Learning rate and dropout against width, for `ann sweep`:

        ann sweep --config=configs/digits_mlp.py --workdir=runs/mlp_sweep --parallel=2

    runs 8 trials (4 seeded log-uniform draws x 2 widths); with `--search=tpe --trials=K`,
    Optuna searches the same ranges instead of drawing them.
    """
    return h.product(
        h.random(
            4,
            h.loguniform("optimizer.learning_rate", 1e-4, 1e-2),
            h.uniform("model.dropout", 0.0, 0.3),
        ),
        h.sweep("model.features", [(128,), (256, 256)]),
    )
