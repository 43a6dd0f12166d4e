"""`digits_novelty`: the 8x8 digits with held-out classes as anomalies (novelty detection).

`train` is the `digits` train split (the same seeded, stratified 80/20 split, from
`ann.data.offline`) keeping only the NORMAL_DIGITS; `test` is the whole `digits` test split,
labelled "normal" for those digits and "anomaly" for the ANOMALY_DIGITS, which no training row
shows (about 20% of the test rows). The original digit is kept in the `digit` feature, so an
analysis can break scores down by class.
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

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Digits 8 and 9 held out of train, anomalies in test."}

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
        train, test = splits.random_split(digits)  # exactly the `digits` data set's split
        train = train[np.isin(digits[train], NORMAL_DIGITS)]
        return {
            "train": self._generate_examples(images, digits, train),
            "test": self._generate_examples(images, digits, test),
        }

    def _generate_examples(
        self, images: np.ndarray, digits: np.ndarray, index: np.ndarray
    ) -> Iterator[tuple[int, dict]]:
        for i in index:
            digit = int(digits[i])
            anomaly = int(digit in ANOMALY_DIGITS)
            yield int(i), {"image": images[i], "label": anomaly, "digit": digit}
