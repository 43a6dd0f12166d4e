"""`digit_pairs`: (anchor, positive) pairs of same-class digits, for metric learning.

Built from the same seeded, stratified splits as `digits` (so its `validation` and `test` images
are exactly the `digits` validation and test images, never trained on):

- `train`: every train image as an anchor, PAIRS_PER_ANCHOR times, each with a different
  positive: another train image of the same class, drawn with a fixed seed.
- `validation`, `test`: every image of the split once, with a positive drawn from the other
  images of its class in that split (used only for the eval loss; retrieval scores the `image`
  column, each image a query against all the others of its split).

Each row holds `image` (the anchor) and `positive` (8x8x1 uint8), the shared `label`, and the
indices of both images in scikit-learn's `load_digits`, so the provenance of a pair can be
checked (no validation or test image is in any train pair).
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from ann.data import splits

PAIRS_PER_ANCHOR = 10
SEEDS = {"train": 0, "test": 1, "validation": 2}


def draw_pairs(
    labels: np.ndarray, index: np.ndarray, per_anchor: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(anchor, positive) index arrays: each of `index` as an anchor `per_anchor` times, with
    positives of its class drawn from `index` without replacement, never the anchor itself
    (fewer than `per_anchor` when its class has fewer other members)."""
    rng = np.random.default_rng(seed)
    anchors, positives = [], []
    for i in index:
        others = index[(labels[index] == labels[i]) & (index != i)]
        if not len(others):
            continue  # a class with one image has no pair
        chosen = rng.choice(others, size=min(per_anchor, len(others)), replace=False)
        anchors.extend([i] * len(chosen))
        positives.extend(chosen.tolist())
    return np.asarray(anchors, np.int64), np.asarray(positives, np.int64)


class DigitPairs(tfds.core.GeneratorBasedBuilder):
    """Same-class pairs of scikit-learn's 8x8 digits; held-out test images for retrieval."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "10 pairs per train anchor; one pair per test image.",
        "1.1.0": "validation: the digits validation images, one pair each (train anchors are "
        "the rest of the old train images); test unchanged.",
    }

    def _info(self) -> tfds.core.DatasetInfo:
        image = tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": image,
                    "positive": image,
                    "label": tfds.features.ClassLabel(num_classes=10),
                    "image_index": tfds.features.Scalar(dtype=np.int32),
                    "positive_index": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            supervised_keys=("image", "label"),
            description="Same-class (anchor, positive) pairs of scikit-learn load_digits.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        images, labels = splits.digits()
        index = splits.random_splits(labels)  # the `digits` data set's splits
        return {
            name: self._generate_examples(
                images,
                labels,
                *draw_pairs(labels, rows, PAIRS_PER_ANCHOR if name == "train" else 1, SEEDS[name]),
            )
            for name, rows in index.items()
        }

    def _generate_examples(self, images, labels, anchors, positives):
        for key, (a, p) in enumerate(zip(anchors, positives)):
            yield (
                key,
                {
                    "image": images[a],
                    "positive": images[p],
                    "label": int(labels[a]),
                    "image_index": int(a),
                    "positive_index": int(p),
                },
            )
