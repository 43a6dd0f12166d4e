"""`digits_novelty`: the 8x8 digits with held-out classes as anomalies (novelty detection).

`train` is the `digits` train split (the same seeded, stratified splits, `ann.data.splits`)
keeping only the NORMAL_DIGITS; `validation` and `test` are the whole `digits` validation and
test splits, labelled "normal" for those digits and "anomaly" for the ANOMALY_DIGITS, which no
training row shows (about 20% of their rows). Validation holds other images of the anomalous
digits than test, so choosing a checkpoint on it never looks at a test row. The original digit
is kept in the `digit` feature, so an analysis can break scores down by class.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from ann.data import splits

NORMAL_DIGITS = tuple(range(8))
ANOMALY_DIGITS = (8, 9)


class DigitsNovelty(tfds.core.GeneratorBasedBuilder):
    """Digits 0-7 to train on; the digits test split with 8 and 9 labelled as anomalies."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Digits 8 and 9 held out of train, anomalies in test.",
        "1.1.0": "validation: the digits validation rows (8 and 9 as anomalies), carved from "
        "train; test unchanged.",
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=["normal", "anomaly"]),
                    "digit": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(
                normal_digits=list(NORMAL_DIGITS), anomaly_digits=list(ANOMALY_DIGITS)
            ),
            description="scikit-learn digits; 8 and 9 never in train, anomalies in test.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        images, digits = splits.digits()
        index = splits.random_splits(digits)  # exactly the `digits` data set's splits
        index["train"] = index["train"][np.isin(digits[index["train"]], NORMAL_DIGITS)]
        return {name: self._generate_examples(images, digits, rows) for name, rows in index.items()}

    def _generate_examples(
        self, images: np.ndarray, digits: np.ndarray, index: np.ndarray
    ) -> Iterator[tuple[int, dict]]:
        for i in index:
            digit = int(digits[i])
            anomaly = int(digit in ANOMALY_DIGITS)
            yield int(i), {"image": images[i], "label": anomaly, "digit": digit}
