"""Training losses of metric learning (retrieval), computed on the device in float32: symmetric
InfoNCE with in-batch negatives (van den Oord et al., 2018; CLIP's symmetric form, Radford et
al., 2021), batch-hard triplet (Hermans et al., 2017), and the in-batch recall@1 logged with
them."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Stands in for -inf in masked logits and distances: exp() of it is 0 and it stays finite, so no
# NaN reaches a gradient.
_BIG = 1e9


def info_nce(
    anchors: jax.Array,
    positives: jax.Array,
    labels: jax.Array,
    temperature: float,
    valid: jax.Array | None = None,
    same_class_negatives: bool = False,
) -> jax.Array:
    """Per-pair symmetric InfoNCE [B] in float32: the mean of the cross-entropy of row i and of
    column i of anchors @ positives.T / temperature, with target i. Entries of other same-class
    pairs are left out unless `same_class_negatives`; rows and columns of invalid (padding) pairs
    are left out, and an invalid pair's loss is 0."""
    anchors, positives = anchors.astype(jnp.float32), positives.astype(jnp.float32)
    n = anchors.shape[0]
    valid = jnp.ones(n, bool) if valid is None else valid.astype(bool)
    logits = anchors @ positives.T / temperature
    eye = jnp.eye(n, dtype=bool)
    drop = ~(valid[:, None] & valid[None, :])
    if not same_class_negatives:
        drop |= labels[:, None] == labels[None, :]
    logits = jnp.where(drop & ~eye, -_BIG, logits)  # the diagonal (the target) always stays
    target = jnp.diagonal(logits)
    rows = jax.nn.logsumexp(logits, axis=1) - target
    cols = jax.nn.logsumexp(logits, axis=0) - target
    return jnp.where(valid, 0.5 * (rows + cols), 0.0)


def pairwise_distances(x: jax.Array) -> jax.Array:
    """Euclidean distances [n, n] between the rows of x, in float32."""
    x = x.astype(jnp.float32)
    sq = jnp.sum(x * x, axis=-1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * x @ x.T
    # The floor keeps sqrt's gradient finite at 0 (an item and its duplicate).
    return jnp.sqrt(jnp.maximum(d2, 1e-12))


def batch_hard_triplet(
    embeddings: jax.Array, labels: jax.Array, margin: float, valid: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Batch-hard triplet loss per item [n] and whether it is active (loss > 0) [n].

    Each valid item is an anchor; its hardest positive is the farthest other valid item of its
    class, its hardest negative the nearest valid item of another class. An item without a
    positive or a negative in the batch (or invalid) has loss 0.
    """
    n = embeddings.shape[0]
    valid = jnp.ones(n, bool) if valid is None else valid.astype(bool)
    d = pairwise_distances(embeddings)
    same = labels[:, None] == labels[None, :]
    both = valid[:, None] & valid[None, :]
    is_pos = same & both & ~jnp.eye(n, dtype=bool)
    is_neg = ~same & both
    hardest_pos = jnp.max(jnp.where(is_pos, d, -_BIG), axis=1)
    hardest_neg = jnp.min(jnp.where(is_neg, d, _BIG), axis=1)
    has_triplet = valid & is_pos.any(axis=1) & is_neg.any(axis=1)
    losses = jnp.where(has_triplet, jax.nn.relu(hardest_pos - hardest_neg + margin), 0.0)
    return losses, losses > 0


def nearest_neighbour_hits(embeddings: jax.Array, labels: jax.Array) -> jax.Array:
    """Whether each row's nearest other row (cosine) has its label [n] (in-batch recall@1)."""
    e = embeddings.astype(jnp.float32)
    sims = jnp.where(jnp.eye(e.shape[0], dtype=bool), -jnp.inf, e @ e.T)
    return labels[jnp.argmax(sims, axis=1)] == labels
