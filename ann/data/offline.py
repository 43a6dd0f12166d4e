"""TFDS builders over data sets that scikit-learn ships, so the defaults run with no internet.

Prepared as array_record and read with `tfds.data_source` (no TensorFlow needed). The random
train/validation/test split is seeded and stratified (`ann.data.splits`): `test` is 20% of the
rows, `validation` 15% of the rest, carved from the training rows. Train to fit, validate to
choose (best checkpoint, early stopping, sweeps), test once. The digits are ordered by writer,
so the builder also offers a sequential split (`train_writers` / `validation_writers` /
`test_writers`: in order, the first 80% split 85/15, then the last 20%) that measures transfer
to writers the model never saw, and chooses on writers it never trained on. Its
`writer_group` field (0..12) numbers 13 equal blocks of rows in that order: the copy holds the
digits of 13 writers but not who wrote which, so a group is about one writer (a slice for
`ann report`: report.slices=("field:writer_group",)). Its `row_id` field is the row of
scikit-learn's array an example came from, so splits of the two partitions that share images
are found (`ann.data.check_splits_apart`): `train_writers` holds 239 of `test`'s 360 rows.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from ann.data import splits
from ann.data.digit_pairs import DigitPairs
from ann.data.digit_strings import DigitStrings
from ann.data.digits_novelty import DigitsNovelty
from ann.data.pydoc_chars import PydocChars
from ann.data.sensor_series import SensorFaults, SensorSeries


class Digits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 handwritten digits (1,797 images, pixel values 0..16)."""

    VERSION = tfds.core.Version("1.3.0")
    RELEASE_NOTES = {
        "1.0.0": "Random stratified and sequential (by writer) splits.",
        "1.1.0": "validation (15% of train, stratified) and validation_writers (the last 15% of "
        "train_writers); test and test_writers unchanged.",
        "1.2.0": "writer_group: 13 equal blocks of rows in writer order; images, labels and "
        "splits unchanged.",
        "1.3.0": "row_id: the example's row in scikit-learn's array (what the two partitions "
        "share); everything else unchanged.",
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=10),
                    "writer_group": tfds.features.Scalar(dtype=np.int32),
                    "row_id": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            supervised_keys=("image", "label"),
            description="scikit-learn load_digits, 8x8 grey images, 10 classes.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        images, labels = splits.digits()
        named = {
            **splits.random_splits(labels),
            **{f"{k}_writers": v for k, v in splits.sequential_splits(len(labels)).items()},
        }
        return {
            name: self._generate_examples(images, labels, index) for name, index in named.items()
        }

    def _generate_examples(self, images, labels, index):
        groups = splits.writer_groups(len(labels))
        for i in index:
            yield (
                int(i),
                {
                    "image": images[i],
                    "label": int(labels[i]),
                    "writer_group": groups[i],
                    "row_id": int(i),
                },
            )


class BreastCancer(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's Wisconsin breast cancer data: 569 rows, 30 numeric features, 2 classes."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Random stratified split.",
        "1.1.0": "validation: 15% of train, stratified; test unchanged.",
    }
    # The name of each element of `features` (scikit-learn's `feature_names`, written out so
    # that reading them imports nothing): `element_names`.
    ELEMENT_NAMES = {
        "features": (
            "mean radius", "mean texture", "mean perimeter", "mean area", "mean smoothness",
            "mean compactness", "mean concavity", "mean concave points", "mean symmetry",
            "mean fractal dimension", "radius error", "texture error", "perimeter error",
            "area error", "smoothness error", "compactness error", "concavity error",
            "concave points error", "symmetry error", "fractal dimension error", "worst radius",
            "worst texture", "worst perimeter", "worst area", "worst smoothness",
            "worst compactness", "worst concavity", "worst concave points", "worst symmetry",
            "worst fractal dimension",
        )
    }  # fmt: skip

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
        return {
            name: self._generate_examples(features, labels, index)
            for name, index in splits.random_splits(labels).items()
        }

    def _generate_examples(self, features, labels, index):
        for i in index:
            yield int(i), {"features": features[i], "label": int(labels[i])}


DIABETES_BINS = 10  # target deciles to stratify the diabetes split on


class Diabetes(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's diabetes data: 442 patients, 10 baseline measurements in their original
    units (age, sex, BMI, blood pressure, six blood serum values), and a continuous target, a
    measure of disease progression one year later (25..346)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Random split stratified on target deciles.",
        "1.1.0": "validation: 15% of train, stratified on target deciles; test unchanged.",
    }
    # scikit-learn's `feature_names` (s1..s6: the six blood serum measurements).
    ELEMENT_NAMES = {"features": ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "features": tfds.features.Tensor(shape=(10,), dtype=np.float32),
                    "target": tfds.features.Scalar(dtype=np.float32),
                }
            ),
            supervised_keys=("features", "target"),
            description="scikit-learn load_diabetes(scaled=False), 10 features, regression.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        from sklearn.datasets import load_diabetes

        # Unscaled: what a user would send to a served model (sklearn's default is centred and
        # scaled over all 442 rows, test rows included). The experiment standardizes on device.
        data = load_diabetes(scaled=False)
        features = data.data.astype(np.float32)
        target = data.target.astype(np.float32)
        # The same seeded split as the classification sets, stratified on target deciles so that
        # both splits cover the whole range of a continuous target.
        edges = np.quantile(target, np.linspace(0, 1, DIABETES_BINS + 1)[1:-1])
        return {
            name: self._generate_examples(features, target, index)
            for name, index in splits.random_splits(np.digitize(target, edges)).items()
        }

    def _generate_examples(self, features, target, index):
        for i in index:
            yield int(i), {"features": features[i], "target": target[i]}


# Data set names ann builds offline; anything else is looked up in TFDS by name.
BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "digits": Digits,
    "breast_cancer": BreastCancer,
    "diabetes": Diabetes,  # regression, 10 numeric features
    "pydoc_chars": PydocChars,  # character LM corpus (ann/data/pydoc_chars.py)
    "digit_strings": DigitStrings,  # seq2seq reverse/sort/add (ann/data/digit_strings.py)
    "digit_pairs": DigitPairs,  # same-class pairs, metric learning (ann/data/digit_pairs.py)
    "sensor_series": SensorSeries,  # forecasting windows (ann/data/sensor_series.py)
    "sensor_faults": SensorFaults,  # anomaly detection windows (ann/data/sensor_series.py)
    "digits_novelty": DigitsNovelty,  # digits 8, 9 held out (ann/data/digits_novelty.py)
}


def element_names(data: str, feature: str) -> tuple[str, ...] | None:
    """The names of the elements of a 1-D `feature` of the data set `data` (`config.data.name`),
    where its builder here knows them (`ELEMENT_NAMES`: breast_cancer's and diabetes'
    `features`, in scikit-learn's words: `mean radius`, `bmi`); None for any other data set or
    feature. For words a person reads (a report's slice names) instead of `features[0]`."""
    return getattr(BUILDERS.get(data), "ELEMENT_NAMES", {}).get(feature)
