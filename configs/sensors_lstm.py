"""An LSTM (or, with `:gru`, a GRU) forecasting the next 24 steps of generated sensor series.

    ann train --config=configs/sensors_lstm.py --workdir=runs/sensors_lstm
    ann train --config=configs/sensors_lstm.py:gru --workdir=runs/sensors_gru

Three channels, 96 steps of history, period 24 (ann/data/sensor_series.py). Scored by MAE
against the seasonal-naive forecast (`eval/mae_ratio` < 1 beats it); the best checkpoint is the
one with the lowest validation MAE (`val/mae`; test metrics are `eval/`, reported only). The
model adds a linear "highway" over the whole history to the recurrent head
(ann/models/recurrent.py): without it (`--config.model.highway=0`) the LSTM alone only draws
level with the seasonal-naive forecast in this budget (mae_ratio 1.00 against 0.84).
"""

from ann import config as ann_config


def get_config(arg: str | None = None):
    arg = ann_config.variant(__file__, arg, "gru", "lstm")
    c = ann_config.base()
    c.experiment = "forecasting"
    c.model.name = "gru" if arg == "gru" else "lstm"
    c.model.hidden_size = 64
    c.model.num_layers = 1
    c.model.dropout = 0.0
    c.model.highway = 96
    c.data.name = "sensor_series"
    c.data.train_split = "train"
    c.data.validation_split = "validation"  # chooses the best checkpoint
    c.data.eval_splits = ("test",)
    c.task.loss = "mse"
    c.batch_size = 64
    c.total_steps = 1500
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 100
    c.optimizer.grad_clip_norm = 1.0
    c.log_every_steps = 100
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    c.best_metric = "val/mae"
    c.best_mode = "min"
    return c
