"""TFDS builders over data sets that scikit-learn ships, so the defaults run with no internet.

Prepared as array_record and read with `tfds.data_source` (no TensorFlow needed). The random
train/test split is seeded and stratified. The digits are ordered by writer, so the builder also
offers a sequential split (`train_writers` / `test_writers`: the first 80% / the last 20%) that
measures transfer to writers the model never saw.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from ann.data.digit_strings import DigitStrings
from ann.data.pydoc_chars import PydocChars

SPLIT_SEED = 0
TEST_FRACTION = 0.2


def _random_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split  # imported only when building

    index = np.arange(len(labels))
    train, test = train_test_split(
        index, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    return np.sort(train), np.sort(test)


def _sequential_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    cut = int(round(n * (1 - TEST_FRACTION)))
    return np.arange(cut), np.arange(cut, n)


class Digits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 handwritten digits (1,797 images, pixel values 0..16)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Random stratified and sequential (by writer) splits."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            description="scikit-learn load_digits, 8x8 grey images, 10 classes.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        from sklearn.datasets import load_digits  # imported only when building

        data = load_digits()
        images = data.images.astype(np.uint8)[..., None]
        labels = data.target.astype(np.int64)
        train, test = _random_split(labels)
        train_w, test_w = _sequential_split(len(labels))
        return {
            name: self._generate_examples(images, labels, index)
            for name, index in [
                ("train", train),
                ("test", test),
                ("train_writers", train_w),
                ("test_writers", test_w),
            ]
        }

    def _generate_examples(self, images, labels, index):
        for i in index:
            yield int(i), {"image": images[i], "label": int(labels[i])}


class BreastCancer(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's Wisconsin breast cancer data: 569 rows, 30 numeric features, 2 classes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Random stratified split."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "features": tfds.features.Tensor(shape=(30,), dtype=np.float32),
                    "label": tfds.features.ClassLabel(names=["malignant", "benign"]),
                }
            ),
            supervised_keys=("features", "label"),
            description="scikit-learn load_breast_cancer, 30 numeric features, 2 classes.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        features = data.data.astype(np.float32)
        labels = data.target.astype(np.int64)
        train, test = _random_split(labels)
        return {
            "train": self._generate_examples(features, labels, train),
            "test": self._generate_examples(features, labels, test),
        }

    def _generate_examples(self, features, labels, index):
        for i in index:
            yield int(i), {"features": features[i], "label": int(labels[i])}


# Data set names ann builds offline; anything else is looked up in TFDS by name.
BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "digits": Digits,
    "breast_cancer": BreastCancer,
    "pydoc_chars": PydocChars,  # character LM corpus (ann/data/pydoc_chars.py)
    "digit_strings": DigitStrings,  # seq2seq reverse/sort/add (ann/data/digit_strings.py)
}
