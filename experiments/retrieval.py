"""Retrieval / metric learning: a bi-encoder trained on (anchor, positive) pairs, scored by
held-out nearest-neighbour retrieval.

Reads a data set with supervised_keys (input, label) and a `positive` feature shaped like the
input: another example of the label's class (`digit_pairs`). Both sides of every pair go through
the same model (`model.name=siamese`) in one call. Two losses, chosen by `task.loss`:

- `infonce` (default): symmetric InfoNCE with in-batch negatives. Row i of the similarity matrix
  anchors @ positives.T / `task.temperature` is a softmax classification of i's own positive
  among the batch's positives, and column i the same from the positive's side; the loss is the
  mean of the two cross-entropies. With few classes a batch holds many pairs of one class, so by
  default the other same-class entries are left out of the softmax rather than pushed away
  (`task.same_class_negatives=True` counts them as negatives, as plain InfoNCE does).
- `triplet`: batch-hard triplet loss (Hermans et al., 2017) over the 2B embeddings of the batch:
  each one's farthest same-class and nearest other-class embedding (Euclidean), hinged at
  `task.margin`.

Eval embeds the split's `input` column and scores each row as a query against all the others
(cosine, the query itself excluded): `recall_at_1`, `recall_at_5` (share of queries with a
same-class item among their k nearest) and `map` (mean average precision over the full ranking).
The loss on the eval pairs is reported too. Inputs are standardised per channel with train
statistics on the device, inside `loss`, `eval_sums` and `predict` alike, so an export embeds
exactly as training did.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from ann import models
from ann.config import NONNEGATIVE, POSITIVE, ConfigError, task_settings
from ann.data import Split
from ann.metrics.retrieval import retrieval_metrics
from ann.metrics.retrieval_losses import batch_hard_triplet, info_nce, nearest_neighbour_hits
from experiments.common import (
    Standardizer,
    feature_spec,
    first_rows,
    made_for,
    mean_of,
    misfit,
    spec,
    supervised_keys,
)

STATS_ROWS = 10_000  # rows of the training split used for input statistics
POSITIVE_KEY = "positive"
LOSSES = ("infonce", "triplet")
SETTINGS = {
    "loss": "infonce",
    "temperature": 0.1,  # infonce: softmax temperature over cosine similarities
    "same_class_negatives": False,  # infonce: other pairs of the anchor's class are negatives
    "margin": 0.2,  # triplet: hinge margin on Euclidean distances of unit embeddings
}
# Settings only one loss reads (ann.config.check_task_keys_apply refuses them with the other).
READ_ONLY_WHEN = {
    "temperature": ("loss", ("infonce",)),
    "same_class_negatives": ("loss", ("infonce",)),
    "margin": ("loss", ("triplet",)),
}


class Retrieval:
    tokens_per_example = 0  # not a token task: the loop logs no tokens/s
    task_defaults, task_read_only_when = SETTINGS, READ_ONLY_WHEN

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.settings = task_settings(
            config, SETTINGS, {"loss": LOSSES}, {"temperature": POSITIVE, "margin": NONNEGATIVE}
        )
        self.input_key = self.label_key = ""
        self.input_shape: tuple[int, ...] = ()
        self.inputs: dict = {}  # the input's signature
        self.embedding_dim = 0
        self.preprocess = Standardizer()

    def setup(self, train: Split) -> None:
        info = train.info
        self.input_key, self.label_key = supervised_keys(
            train, "retrieval", "(input, label)", " (use data.name=digit_pairs)", self.config
        )
        features = info.features
        inputs = features[self.input_key]
        positive = features[POSITIVE_KEY] if POSITIVE_KEY in features else None
        if positive is None or positive.shape != inputs.shape:
            raise misfit(
                f"data set {train.name!r} has no {POSITIVE_KEY!r} feature shaped like "
                f"{self.input_key!r}; retrieval trains on (anchor, positive) pairs: use "
                "data.name=digit_pairs, or a data set with such a feature"
                f"{made_for(train.name, 'retrieval')}",
                train.name,
                "retrieval",
                self.config,
            )
        if not np.issubdtype(np.dtype(features[self.label_key].np_dtype), np.integer):
            raise ConfigError(f"feature {self.label_key!r} of {train.name!r} is not an integer")
        self.input_shape = tuple(inputs.shape)
        self.inputs = {self.input_key: feature_spec(train, self.input_key)}
        self.preprocess = Standardizer.per_channel(first_rows(train, STATS_ROWS)[self.input_key])

    def fields(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "anchor": rows[self.input_key],
            "positive": rows[POSITIVE_KEY],
            "label": rows[self.label_key].astype(np.int32),
        }

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        """The embedding model: one that takes `embedding_dim` (checked before building, so a
        classifier named here fails clearly) and returns [batch, embedding_dim]. The exported
        output's width is read from what the model returns (an abstract call, no compute), not
        from an attribute. Raises ConfigError for a model of another kind or output shape."""
        name = self.config.model.name
        if "embedding_dim" not in inspect.signature(models.get(name).__init__).parameters:
            raise ConfigError(
                f"config key 'model.name': {name!r} is not an embedding model (it takes no "
                f"embedding_dim); use model.name=siamese with model.encoder={name!r} as its tower"
            )
        model = models.from_config(self.config, input_shape=self.input_shape, rngs=rngs)
        self.embedding_dim = self._output_width(model)
        return model

    def _output_width(self, model: nnx.Module) -> int:
        """embedding_dim of [batch, embedding_dim], from jax.eval_shape of an eval-mode copy
        on two rows of the input's shape and dtype; ConfigError for any other output."""
        graphdef, state = nnx.split(model)
        spec_ = self.inputs[self.input_key]
        rows = jax.ShapeDtypeStruct((2, *self.input_shape), np.dtype(spec_["dtype"]))

        def embed(state, inputs):
            copy = nnx.merge(graphdef, state)
            copy.eval()
            return self._embed(copy, inputs, None)

        out = jax.eval_shape(embed, state, rows)
        if not isinstance(out, jax.ShapeDtypeStruct) or len(out.shape) != 2:
            shape = list(out.shape) if isinstance(out, jax.ShapeDtypeStruct) else type(out)
            raise ConfigError(
                f"config key 'model.name': {self.config.model.name!r} returns {shape} for "
                f"inputs {list(rows.shape)}; retrieval needs one embedding per row, "
                "[batch, embedding_dim]"
            )
        return int(out.shape[1])

    def _embed(self, model: nnx.Module, inputs: jax.Array, rng: jax.Array | None) -> jax.Array:
        return model(self.preprocess(inputs), rngs=rng).astype(
            jnp.float32
        )  # losses in float32 whatever the dtype

    def _pair_losses(self, model, batch, rng, valid):
        """Per-pair losses [B] and per-batch diagnostics, anchors and positives in one call (one
        pass, so BatchNorm towers see both sides in one set of batch statistics)."""
        b = batch["anchor"].shape[0]
        both = self._embed(model, jnp.concatenate([batch["anchor"], batch["positive"]]), rng)
        anchors, positives = both[:b], both[b:]
        labels = batch["label"]
        s = self.settings
        diagnostics = {}
        if s["loss"] == "infonce":
            losses = info_nce(
                anchors, positives, labels, s["temperature"], valid, s["same_class_negatives"]
            )
        else:
            item_losses, active = batch_hard_triplet(
                both, jnp.concatenate([labels, labels]), s["margin"], jnp.concatenate([valid] * 2)
            )
            losses = 0.5 * (item_losses[:b] + item_losses[b:])
            diagnostics["active_triplets"] = active.mean()
        return losses, both, diagnostics

    def loss(self, model, batch, rng):
        b = batch["label"].shape[0]
        losses, both, diagnostics = self._pair_losses(model, batch, rng, jnp.ones(b, bool))
        labels = jnp.concatenate([batch["label"]] * 2)
        hits = nearest_neighbour_hits(jax.lax.stop_gradient(both), labels)
        loss = losses.mean()
        return loss, {"loss": loss, "batch_recall_at_1": hits.mean(), **diagnostics}

    def eval_sums(self, model, batch):
        mask = batch["mask"]
        losses, _, _ = self._pair_losses(model, batch, None, mask > 0)
        return {"loss": (losses * mask).sum(), "count": mask.sum()}

    def eval_rows(self, model, batch):
        return {"embedding": self._embed(model, batch["anchor"], None), "label": batch["label"]}

    def eval_metrics(self, sums, rows=None):
        return {
            "loss": mean_of(sums, "loss", "count"),
            **retrieval_metrics(rows["embedding"], rows["label"]),
        }

    # Serving: an input in, its embedding out (compare embeddings by dot product: unit length).
    def input_signature(self) -> dict:
        return self.inputs

    def output_signature(self) -> dict:
        return {"embedding": spec("float32", [self.embedding_dim])}

    def predict(self, model: nnx.Module, inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        return {"embedding": self._embed(model, inputs[self.input_key], None)}
