"""Anomaly detection by reconstruction: an autoencoder trained on normal rows only; a row's
anomaly score is how badly the model reconstructs it.

Reads the data set's TFDS `supervised_keys` (input, label) with a two-class ClassLabel whose
class 0 is normal (e.g. `sensor_faults`: normal/fault, `digits_novelty`: normal/anomaly). The
training split should hold normal rows only; anomalous rows found there are trained on anyway
with a warning, and left out of the statistics and the threshold. Inputs are standardized per
channel (last axis) with statistics of the training split's normal rows, on the device: `loss`,
`eval_sums` and `predict` share it, so an export carries it.

Score: the mean squared error over a row between the standardized input and its
reconstruction, in float32 whatever the compute dtype. The training loss is its mean over the
batch's rows that are not calibration rows.

Calibration rows: a `task.calibration_fraction` share (default 0.2) of the training split is
held out of the loss (weight 0), chosen by a hash of each row's content, so the same row is
held out in every epoch, on every host, and duplicates fall on the same side. The threshold
is taken from these rows' scores: rows the model never fit, as fresh normal data would be.

Eval metrics over a whole split (padding rows masked out):

- `auroc`: ranking quality of the score against the labels, threshold-free (the headline).
- `loss`: mean score of the split's normal rows (how well normal data is reconstructed).
- `threshold`, `precision`, `recall`, `f1`, `flagged`: a row is flagged as anomalous when its
  score exceeds `threshold`, the `task.threshold_quantile` quantile (default 0.99) of the scores
  of up to `task.reference_rows` normal calibration rows of the *training* split, scored by the
  model being evaluated (PyOD's rule, `threshold_` = the 1 - contamination quantile of training
  scores, here on held-out rows). The threshold uses no eval row and no eval label: it is what
  a deployment would fix before seeing any fault, and `eval/threshold` is the number to deploy
  with; it aims at 1% false alarms on normal data (`flagged` is the share of the split's rows
  flagged). Precision, recall and F1 are those of the anomalous class. With
  `calibration_fraction=0` the model trains on every row and the threshold comes from rows it
  fit, whose scores run lower than fresh normal rows': expect more false alarms.
- With `task.breakdown` naming a ClassLabel feature (e.g. `digit` of `digits_novelty`):
  `auroc_<class>` for each of its classes that has anomalous rows, that class's anomalies
  against all normal rows (which kinds of anomaly the model finds, which it misses).

Served outputs (`predict`, what an export computes): `score` [rows] float32, `reconstruction`
(the input's shape, in its units) and `flagged` [rows] int32, 1 ("anomalous") where the score
exceeds the deployed threshold, else 0 ("normal"): the decision a deployment acts on, with
the threshold fixed from the exported model's calibration rows (`fit_threshold`; the export
records it as its manifest's `threshold`), as `eval/threshold` was at the step's eval.

The calibration rows' scores come out of `eval_sums`: the loop hands `eval_metrics` no model,
so every eval batch scores the same reference rows and the host takes their mean over batches
(identical values; the cost is one pass over the reference rows per eval batch).
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from ann import models
from ann.config import COUNT, FRACTION, ConfigError, Range, task_settings
from ann.data import Split
from ann.metrics import classification as metrics
from experiments.common import (
    Standardizer,
    call_model,
    feature_spec,
    made_for,
    misfit,
    spec,
    supervised_keys,
)

STATS_ROWS = 20_000  # training rows read at setup for input statistics and the reference rows

TASK_DEFAULTS = {
    "threshold_quantile": 0.99,  # flag rows scoring above this quantile of training scores
    "calibration_fraction": 0.2,  # training rows held out of the loss, for the threshold
    "reference_rows": 1024,  # at most this many calibration rows give the threshold
    "breakdown": "",  # a ClassLabel feature to report auroc_<class> by; "" = none
}
TASK_RANGES = {
    "threshold_quantile": Range(0, 1, closed="()"),
    "calibration_fraction": FRACTION,  # 0 = train on every row
    "reference_rows": COUNT,
}


class AnomalyDetection:
    tokens_per_example = 0  # not a token task: the loop logs no tokens/s
    class_names = ("normal", "anomalous")  # labels 0 and 1, as the report's label slices name them

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.settings = task_settings(config, TASK_DEFAULTS, ranges=TASK_RANGES)
        self.breakdown = self.settings["breakdown"]
        self.input_key = self.label_key = ""
        self.input_shape: tuple[int, ...] = ()
        self.inputs: dict = {}  # the input's signature
        self.breakdown_names: list[str] = []
        self.preprocess = Standardizer()
        # The threshold's rows: raw normal calibration rows, at most task.reference_rows of them
        # (the first of a seeded shuffle); the drift reference is drawn from all of them
        # (`calibration_index`, up to the export's 5,000-row sample), so above reference_rows
        # the two are not the same rows.
        self.reference = np.zeros(())
        self.calibration_index = np.zeros(0, np.int64)  # every normal calibration row, sorted
        # {"value", "quantile", "calibration_rows"}: fixed by `fit_threshold` (or an export's
        # manifest `threshold`, as `ann report` reads one); None: the model's own, computed
        self.fitted_threshold: dict | None = None
        self._predict_compiled = nnx.jit(self._predict)

    def setup(self, train: Split) -> None:
        features = train.info.features
        self.input_key, self.label_key = supervised_keys(
            train, "anomaly_detection", "(input, label)", config=self.config
        )
        label = features[self.label_key]
        if getattr(label, "num_classes", 0) != 2:
            raise misfit(
                f"feature {self.label_key!r} of {train.name!r} must be a two-class ClassLabel "
                "(class 0 normal, class 1 anomalous) for anomaly_detection"
                f"{made_for(train.name, 'anomaly_detection')}",
                train.name,
                "anomaly_detection",
                self.config,
            )
        if self.breakdown:
            group = features[self.breakdown] if self.breakdown in features else None
            if not hasattr(group, "num_classes"):
                raise ConfigError(
                    f"config key 'task.breakdown' is {self.breakdown!r}, not a ClassLabel "
                    f"feature of {train.name!r}; use one of "
                    f"{', '.join(k for k in features if hasattr(features[k], 'num_classes'))}"
                    " or ''"
                )
            self.breakdown_names = list(group.names)
        self.input_shape = tuple(features[self.input_key].shape)
        self.inputs = {self.input_key: feature_spec(train, self.input_key)}

        # A random sample (seeded), so ordered data sets give representative statistics.
        rng = np.random.default_rng(self.config.seed)
        index = rng.permutation(len(train))[:STATS_ROWS]
        rows = train.rows(index)
        normal = rows[self.label_key] == 0
        if not normal.any():
            raise ConfigError(
                f"split {train.split!r} of {train.name!r} has no normal rows (label 0) to learn "
                "from; set data.train_split to a split of normal data"
            )
        if not normal.all():
            logging.warning(
                "%d of %d sampled rows of %s/%s are labelled anomalous: the autoencoder trains "
                "on them too; statistics and the threshold use the normal rows only",
                int((~normal).sum()),
                len(normal),
                train.name,
                train.split,
            )
        held_out = self._held_out(rows[self.input_key])
        fit = normal & ~held_out if (normal & ~held_out).any() else normal
        self.preprocess = Standardizer.per_channel(rows[self.input_key][fit])
        # Without calibration rows (fraction 0, or too few rows) the threshold falls back to
        # rows the model trains on.
        calibration = normal & held_out if (normal & held_out).any() else normal
        self.reference = rows[self.input_key][calibration][: self.settings["reference_rows"]]
        self.calibration_index = np.sort(index[normal & held_out])
        if len(self.reference) < 100:
            logging.warning(
                "the threshold comes from only %d calibration rows: its %.3g quantile is a "
                "rough estimate (raise task.calibration_fraction)",
                len(self.reference),
                self.settings["threshold_quantile"],
            )

    def held_out_rows(self) -> tuple[np.ndarray, str] | None:
        """The training rows an export's drift reference is drawn from (`ann.export.
        held_out_rows`): the normal calibration rows, held out of the loss, as fresh normal
        traffic would be (the validation split holds injected anomalies, and the rows the
        model fit score low); indices into the training split, sorted, and in words. None
        without calibration rows (`task.calibration_fraction=0`)."""
        if not len(self.calibration_index):
            return None
        return (
            self.calibration_index,
            "train's normal calibration rows, held out of the loss",
        )

    def _held_out(self, inputs: np.ndarray) -> np.ndarray:
        """Which rows are calibration rows: a content hash, the same in every epoch and host."""
        cut = self.settings["calibration_fraction"] * 2**32
        hashes = [zlib.crc32(np.ascontiguousarray(row).tobytes()) for row in inputs]
        return np.asarray(hashes, np.float64) < cut

    def fields(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = {
            "inputs": rows[self.input_key],
            "targets": rows[self.label_key].astype(np.int32),
            # 0 for calibration rows: they flow through training but are not fit.
            "weight": (~self._held_out(rows[self.input_key])).astype(np.float32),
        }
        if self.breakdown:
            batch["group"] = rows[self.breakdown].astype(np.int32)
        return batch

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        return models.from_config(self.config, input_shape=self.input_shape, rngs=rngs)

    def _reconstruct(
        self, model: nnx.Module, inputs: jax.Array, rng: jax.Array | None
    ) -> tuple[jax.Array, jax.Array]:
        """(standardized input, its reconstruction), both float32."""
        x = self.preprocess(inputs)
        needs = f"anomaly detection needs float reconstructions {list(x.shape)} of the input"
        out = call_model(
            model, self.config.model.name, x, rngs=rng, per_row=x.shape[1:], needs=needs
        )
        return x, out.astype(jnp.float32)

    def scores(
        self, model: nnx.Module, inputs: jax.Array, rng: jax.Array | None = None
    ) -> jax.Array:
        """Per-row anomaly score: mean squared reconstruction error (float32)."""
        x, y = self._reconstruct(model, inputs, rng)
        return jnp.square(y - x).reshape(x.shape[0], -1).mean(axis=1)

    def fit_threshold(self, model: nnx.Module) -> dict:
        """Fixes the threshold `predict` flags above: the `task.threshold_quantile` quantile of
        `model`'s scores on the calibration rows (`reference`), as `eval_metrics` takes
        `eval/threshold` (PyOD's `threshold_` rule). Returns {"value" (float), "quantile",
        "calibration_rows"}, what an export records as its manifest's `threshold`. Call it on a
        concrete model, outside any trace (the export does, before tracing `predict`); a later
        `predict` of another model flags against this value until it is fitted again."""
        self.fitted_threshold = {
            "value": float(np.asarray(self._threshold(model), np.float64)),
            "quantile": float(self.settings["threshold_quantile"]),
            "calibration_rows": int(len(self.reference)),
        }
        return dict(self.fitted_threshold)

    def _threshold(self, model: nnx.Module) -> jax.Array:
        """The threshold for `model` (float32 scalar), traceable: computed wherever `predict` is
        called without a fitted one (jitted, it scores the calibration rows in the graph)."""
        scores = self.scores(model, jnp.asarray(self.reference))
        return jnp.quantile(scores, self.settings["threshold_quantile"])

    def input_signature(self) -> dict:
        return self.inputs

    def output_signature(self) -> dict:
        return {
            "score": spec("float32", []),
            "reconstruction": spec("float32", self.input_shape),
            "flagged": spec("int32", [], ("normal", "anomalous")),
        }

    def predict(self, model: nnx.Module, inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        # One compiled program whether called directly or traced into an export, so the two
        # agree to the bit. Run op by op, the layers round differently, and de-standardizing
        # scales those differences by the input's spread (~1e-5 on the digits' 0..16 pixels,
        # past the export's check). The threshold is the fitted one (the export's constant),
        # else the model's own, computed in the program.
        if self.fitted_threshold is not None:
            threshold = jnp.float32(self.fitted_threshold["value"])
        else:
            threshold = self._threshold(model)
        return self._predict_compiled(model, inputs, threshold)

    def _predict(
        self, model: nnx.Module, inputs: dict[str, jax.Array], threshold: jax.Array
    ) -> dict[str, jax.Array]:
        x, y = self._reconstruct(model, inputs[self.input_key], None)
        score = jnp.square(y - x).reshape(x.shape[0], -1).mean(axis=1)
        return {
            "score": score,
            # In the input's own units, so it can be compared with the input directly.
            "reconstruction": self.preprocess.invert(y),
            "flagged": (score > threshold).astype(jnp.int32),
        }

    def loss(self, model, batch, rng):
        weight = batch["weight"]
        score = self.scores(model, batch["inputs"], rng)
        loss = (score * weight).sum() / jnp.maximum(weight.sum(), 1.0)
        return loss, {"loss": loss}

    def eval_sums(self, model, batch):
        score = self.scores(model, batch["inputs"])
        mask = batch["mask"]
        normal = mask * (batch["targets"] == 0)
        return {
            "normal_error": (score * normal).sum(),
            "normal_count": normal.sum(),
            # The same in every batch (see the module docstring); averaged on the host.
            "reference_scores": self.scores(model, jnp.asarray(self.reference)),
            "batches": jnp.ones((), jnp.float32),
        }

    def eval_rows(self, model, batch):
        rows = {"score": self.scores(model, batch["inputs"]), "targets": batch["targets"]}
        if self.breakdown:
            rows["group"] = batch["group"]
        return rows

    def eval_metrics(self, sums, rows=None):
        score, anomalous = rows["score"], rows["targets"] > 0
        reference = np.asarray(sums["reference_scores"]) / float(sums["batches"])
        threshold = float(np.quantile(reference, self.settings["threshold_quantile"]))
        flagged = score > threshold
        # [true, predicted] with class 1 = anomalous.
        matrix = np.array(
            [
                [np.sum(~anomalous & ~flagged), np.sum(~anomalous & flagged)],
                [np.sum(anomalous & ~flagged), np.sum(anomalous & flagged)],
            ]
        )
        per_class = metrics.precision_recall_f1(matrix)
        normal_count = float(sums["normal_count"])
        result = {
            "auroc": metrics.binary_auroc(anomalous, score),
            "loss": float(sums["normal_error"]) / normal_count if normal_count else float("nan"),
            "threshold": threshold,
            "precision": float(per_class["precision"][1]),
            "recall": float(per_class["recall"][1]),
            "f1": float(per_class["f1"][1]),
            "flagged": float(flagged.mean()) if len(flagged) else float("nan"),
        }
        if self.breakdown:
            for g in np.unique(rows["group"][anomalous]):
                keep = ~anomalous | (rows["group"] == g)
                name = self.breakdown_names[int(g)]
                result[f"auroc_{name}"] = metrics.binary_auroc(anomalous[keep], score[keep])
        return result
