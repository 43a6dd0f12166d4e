"""Language modelling: next-token cross-entropy on fixed-length windows of token ids.

Reads a data set with a `tokens` feature (int ids, right-padded with `pad_id`) and its
`info.metadata["vocabulary"]` (e.g. `pydoc_chars`). Position t predicts token t + 1; targets
that are padding count nowhere (loss, metrics). Eval reports the loss in nats per token,
`bits_per_char` (= loss / ln 2, per character for a character vocabulary), `perplexity`,
next-token `accuracy`, and `unigram_bits_per_char`: the cross-entropy on the eval split of the
train split's character frequencies, the baseline a model must beat.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from ann import models
from ann.config import task_settings
from ann.data import Split
from ann.metrics.baselines import unigram_log_probs
from experiments.common import Vocabulary, call_model, first_rows, made_for, mean_of, misfit, spec

STATS_ROWS = 20_000  # rows of the training split used for the unigram baseline


class LanguageModelling:
    key = "tokens"
    tokens_per_example = 0  # set from the data set in setup: the loop logs tokens/s

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        task_settings(config, {})  # it has no task.* settings: refuse any, by name
        self.vocab = Vocabulary()
        self.window = 0
        self.unigram_logp = np.zeros(())

    def setup(self, train: Split) -> None:
        features = train.info.features
        if self.key not in features or len(features[self.key].shape) != 1:
            raise misfit(
                f"data set {train.name!r} has no 1-D {self.key!r} feature; language_modelling "
                f"reads windows of token ids from it{made_for(train.name, 'language_modelling')}",
                train.name,
                "language_modelling",
                self.config,
            )
        self.vocab = Vocabulary.of(train, "language_modelling")
        self.window = features[self.key].shape[0]
        self.tokens_per_example = self.window - 1  # predicted positions: the loop logs tokens/s
        tokens = first_rows(train, STATS_ROWS)[self.key][:, 1:]
        self.unigram_logp = unigram_log_probs(tokens, len(self.vocab), self.vocab.pad_id)

    def fields(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {self.key: rows[self.key].astype(np.int32)}

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        return models.from_config(self.config, vocab_size=len(self.vocab), rngs=rngs)

    # Text <-> ids with the data set's vocabulary (for sampling; multi-character entries such as
    # "<pad>" are never produced from text).
    def encode(self, text: str) -> np.ndarray:
        """int32 [len(text)]: each character's id; one outside the vocabulary is <unk> (id 1),
        as the data set wrote the training text's rare characters (see `unknown`)."""
        index = self.vocab.index
        return np.array([index.get(ch, 1) for ch in text], np.int32)

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` outside the vocabulary (`encode` reads them as
        <unk>), sorted."""
        return sorted(set(text) - set(self.vocab.index))

    def decode(self, ids) -> str:
        tokens = self.vocab.tokens
        return "".join(
            tokens[i] if len(tokens[i]) == 1 else "\ufffd"
            for i in np.asarray(ids).reshape(-1).tolist()
            if i != self.vocab.pad_id
        )

    def _nll(self, model, tokens, rng):
        """Per-target negative log-likelihood [b, t-1], target weights, and the logits."""
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        valid = inputs != self.vocab.pad_id
        logits = call_model(
            model,
            self.config.model.name,
            inputs,
            valid=valid,
            rngs=rng,
            per_row=(inputs.shape[1], len(self.vocab)),
            needs=f"language modelling needs float logits [batch, length, {len(self.vocab)}] "
            "(one per token of the vocabulary)",
        ).astype(jnp.float32)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        return nll, (targets != self.vocab.pad_id).astype(jnp.float32), logits

    def loss(self, model, batch, rng):
        nll, weights, logits = self._nll(model, batch[self.key], rng)
        loss = (nll * weights).sum() / jnp.maximum(weights.sum(), 1.0)
        correct = (logits.argmax(-1) == batch[self.key][:, 1:]) * weights
        return loss, {
            "loss": loss,
            "bits_per_char": loss / math.log(2),
            "accuracy": correct.sum() / jnp.maximum(weights.sum(), 1.0),
        }

    def eval_sums(self, model, batch):
        nll, weights, logits = self._nll(model, batch[self.key], None)
        weights = weights * batch["mask"][:, None]  # padded rows and padding tokens count nowhere
        targets = batch[self.key][:, 1:]
        return {
            "nll": (nll * weights).sum(),
            "unigram_nll": (-jnp.asarray(self.unigram_logp)[targets] * weights).sum(),
            "correct": ((logits.argmax(-1) == targets) * weights).sum(),
            "tokens": weights.sum(),
        }

    def eval_rows(self, model, batch):
        return {}  # the sums are enough

    def eval_metrics(self, sums, rows=None):
        loss = mean_of(sums, "nll", "tokens")
        return {
            "loss": loss,
            "bits_per_char": loss / math.log(2),
            "perplexity": math.exp(loss),
            "accuracy": mean_of(sums, "correct", "tokens"),
            "unigram_bits_per_char": mean_of(sums, "unigram_nll", "tokens") / math.log(2),
        }

    # Serving: a window of ids in, the distribution of the id after its last real token out.
    def input_signature(self) -> dict:
        return {self.key: spec("int32", [self.window], self.vocab.tokens, self.vocab.pad_id)}

    def output_signature(self) -> dict:
        return {
            "probabilities": spec("float32", [len(self.vocab)]),
            "next_token": spec("int32", [], self.vocab.tokens),
        }

    def predict(self, model, inputs):
        tokens = inputs[self.key].astype(jnp.int32)
        valid = tokens != self.vocab.pad_id
        logits = model(tokens, valid=valid).astype(jnp.float32)
        last = jnp.maximum(valid.sum(-1) - 1, 0)
        logits = jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0]
        return {
            "probabilities": jax.nn.softmax(logits, axis=-1),
            "next_token": logits.argmax(-1).astype(jnp.int32),
        }
