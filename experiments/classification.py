"""Classification: softmax cross-entropy over integer labels, scored by loss, accuracy, macro
precision/recall/F1 (from a confusion matrix summed on the device) and AUROC (binary, or macro
one-vs-rest, over every row's probabilities).

Reads the data set's TFDS `supervised_keys` (input, label). Inputs are standardized per channel
(last axis) with statistics of the training split; that happens on the device, inside the
jitted function, and `loss`, `eval_sums` and `predict` share it, so an exported model carries
the same preprocessing as training.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from ann import models
from ann.config import ConfigError, task_settings
from ann.data import Split
from ann.metrics import classification as metrics
from experiments.common import (
    Standardizer,
    call_model,
    feature_spec,
    first_rows,
    made_for,
    mean_of,
    misfit,
    spec,
    supervised_keys,
)

STATS_ROWS = 10_000  # rows of the training split used for input statistics


class Classification:
    tokens_per_example = 0  # not a token task: the loop logs no tokens/s

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        task_settings(config, {})  # it has no task.* settings: refuse any, by name
        self.input_key = self.label_key = ""
        self.num_classes = 0
        self.input_shape: tuple[int, ...] = ()
        self.inputs: dict = {}  # the input's signature
        self.class_names: list[str] = []
        self.preprocess = Standardizer()
        # Divides the logits in `predict` (export sets it: ann/calibrate.py); a Python float, so
        # a traced predict carries it as a constant. 1.0 = softmax(logits).
        self.temperature = 1.0

    def setup(self, train: Split) -> None:
        self.input_key, self.label_key = supervised_keys(
            train, "classification", "(input, label)", config=self.config
        )
        label = train.info.features[self.label_key]
        if not hasattr(label, "num_classes"):
            raise misfit(
                f"feature {self.label_key!r} of {train.name!r} is not a ClassLabel; "
                + (
                    made_for(train.name, "classification").strip(" ()")
                    or "declare it as tfds.features.ClassLabel(num_classes=N) (or names=[...]) "
                    "in its builder"
                ),
                train.name,
                "classification",
                self.config,
            )
        if label.num_classes < 2:  # it trained to loss 0, accuracy 1 and AUROC nan
            raise ConfigError(
                f"feature {self.label_key!r} of {train.name!r} declares {label.num_classes} "
                "class; classification needs at least 2 (for one class of normal data, "
                "--config.experiment=anomaly_detection)"
            )
        self.num_classes = label.num_classes
        self.class_names = list(label.names)
        self.input_shape = tuple(train.info.features[self.input_key].shape)
        self.inputs = {self.input_key: feature_spec(train, self.input_key)}
        rows = first_rows(train, STATS_ROWS)
        self.preprocess = Standardizer.per_channel(rows[self.input_key])
        labels = train.cached[self.label_key] if train.cached is not None else rows[self.label_key]
        if np.unique(labels).size < 2:  # it trained, exit 0, to AUROC nan and chance scores
            raise ConfigError(
                f"the train split {train.split!r} of {train.name!r} holds only class "
                f"{self.class_names[int(labels[0])]!r} (of {self.num_classes}): a classifier "
                "learns nothing from one class; check its labels (for one class of normal "
                "data, --config.experiment=anomaly_detection)"
            )

    def fields(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"inputs": rows[self.input_key], "targets": rows[self.label_key].astype(np.int32)}

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        return models.from_config(
            self.config, input_shape=self.input_shape, num_classes=self.num_classes, rngs=rngs
        )

    def _logits(self, model: nnx.Module, inputs: jax.Array, rng: jax.Array | None) -> jax.Array:
        # Checked as it is traced: a model of another width trained, and was exported, with a
        # class that does not exist; integer logits have no gradient.
        logits = call_model(
            model,
            self.config.model.name,
            self.preprocess(inputs),
            rngs=rng,
            per_row=(self.num_classes,),
            needs=f"classification needs float logits [batch, {self.num_classes}] (one per "
            "class of the data set)",
        )
        return logits.astype(jnp.float32)  # loss in float32 whatever the compute dtype

    def input_signature(self) -> dict:
        return self.inputs

    def output_signature(self) -> dict:
        return {
            "probabilities": spec("float32", [self.num_classes]),
            "label": spec("int32", [], self.class_names),
        }

    def logits(self, model: nnx.Module, inputs: dict[str, jax.Array]) -> jax.Array:
        """The model's raw float32 logits [batch, classes] for a batch of raw inputs (before any
        temperature): what `predict`'s probabilities come from, and what `ann report` and
        calibration fit on."""
        return self._logits(model, inputs[self.input_key], None)

    def predict(self, model: nnx.Module, inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """probabilities float32 [batch, classes] = softmax(logits / self.temperature), and
        label int32 [batch] = argmax of the logits (a temperature > 0 never changes it)."""
        logits = self.logits(model, inputs)
        return {
            "probabilities": jax.nn.softmax(logits / self.temperature, axis=-1),
            "label": logits.argmax(-1).astype(jnp.int32),
        }

    def loss(self, model, batch, rng):
        logits = self._logits(model, batch["inputs"], rng)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        accuracy = (logits.argmax(-1) == batch["targets"]).mean()
        return losses.mean(), {"loss": losses.mean(), "accuracy": accuracy}

    def eval_sums(self, model, batch):
        logits = self._logits(model, batch["inputs"], None)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        mask = batch["mask"]
        return {
            "loss": (losses * mask).sum(),
            "confusion": metrics.confusion(
                batch["targets"], logits.argmax(-1), self.num_classes, mask
            ),
            "count": mask.sum(),
        }

    def eval_rows(self, model, batch):
        logits = self._logits(model, batch["inputs"], None)
        return {"probabilities": jax.nn.softmax(logits, axis=-1), "targets": batch["targets"]}

    def eval_metrics(self, sums, rows=None):
        matrix = np.asarray(sums["confusion"])
        return {
            "loss": mean_of(sums, "loss", "count"),
            "accuracy": float(np.trace(matrix)) / max(float(sums["count"]), 1.0),
            **metrics.summary(matrix),
            "auroc": metrics.auroc(rows["targets"], rows["probabilities"]),
        }
