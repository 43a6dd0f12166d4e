"""Offline data sets, splits, and the grain pipeline's determinism and resumability."""

import json

import numpy as np
import pytest

from ann import data
from ann.config import ConfigError


def fields(rows):
    return {"inputs": rows["image"], "targets": rows["label"]}


def _row_set(rows: np.ndarray) -> list[bytes]:
    return sorted(np.ascontiguousarray(r).tobytes() for r in rows)


def test_digits_splits_are_stratified_and_disjoint():
    from ann.data import splits

    loaded = {s: data.load("digits", s, cache=True) for s in ("train", "validation", "test")}
    assert [len(loaded[s]) for s in ("train", "validation", "test")] == [1221, 216, 360]
    for name in ("validation", "test"):  # stratified: each class has its share, to a row or so
        ratio = [
            np.mean(loaded[s].cached["label"] == c) for s in ("train", name) for c in range(10)
        ]
        assert np.allclose(ratio[:10], ratio[10:], atol=0.01)
    # The built splits are exactly the rows of disjoint index sets covering the data set.
    index = splits.random_splits(splits.digits()[1])
    assert sorted(np.concatenate(list(index.values())).tolist()) == list(range(1797))
    images = splits.digits()[0]
    for name, split in loaded.items():
        assert _row_set(split.cached["image"]) == _row_set(images[index[name]])


def test_digits_writer_splits_are_sequential_so_writer_disjoint():
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.uint8).reshape(1797, -1)
    parts = [
        data.load("digits", s, cache=True).cached["image"].reshape(-1, 64)
        for s in ("train_writers", "validation_writers", "test_writers")
    ]
    assert [len(p) for p in parts] == [1222, 216, 359]  # test_writers as before validation
    bounds = np.cumsum([0, *map(len, parts)])
    for part, lo, hi in zip(parts, bounds[:-1], bounds[1:]):  # consecutive blocks, in order
        assert _row_set(part) == _row_set(images[lo:hi])


@pytest.mark.parametrize(
    "name, key",
    [
        ("breast_cancer", "features"),
        ("diabetes", "features"),
        ("sensor_faults", "window"),
        ("digits_novelty", "image"),
    ],
)
def test_validation_is_carved_from_train_and_disjoint(name, key):
    rows = {s: data.load(name, s, cache=True).cached[key] for s in ("train", "validation", "test")}
    n = {s: len(r) for s, r in rows.items()}
    # About 15% of the training rows (digits_novelty's train also drops the digits 8 and 9).
    assert 0.1 < n["validation"] / (n["train"] + n["validation"]) < 0.25
    seen = {s: set(_row_set(r)) for s, r in rows.items()}
    assert not seen["validation"] & seen["train"]
    assert not seen["validation"] & seen["test"]
    if name in ("sensor_faults", "digits_novelty"):  # anomalies to choose on, as in test
        assert 0.1 < data.load(name, "validation", cache=True).cached["label"].mean() < 0.3


def test_pair_and_series_validation_shares_no_source_with_train_or_test():
    pairs = {
        s: data.load("digit_pairs", s, cache=True).cached for s in ("train", "validation", "test")
    }
    used = {
        s: set(r["image_index"].tolist()) | set(r["positive_index"].tolist())
        for s, r in pairs.items()
    }
    assert used["validation"] and not used["validation"] & (used["train"] | used["test"])
    series = {s: data.load("sensor_series", s, cache=True).cached for s in ("train", "validation")}
    # Same generator stream as train (test has its own seed), other series.
    assert not set(series["validation"]["series"].tolist()) & set(
        series["train"]["series"].tolist()
    )
    assert not _row_set(series["validation"]["history"][:50]) == _row_set(
        series["train"]["history"][:50]
    )


def test_generated_validation_comes_from_the_training_stream():
    from ann.data import digit_strings, pydoc_chars

    stream, start, stop = digit_strings.ROWS["validation"]
    assert stream == "train" and start == digit_strings.ROWS["train"][2]
    val = data.load("digit_strings", "validation", cache=True).cached
    assert len(val) and set(val["length"].tolist()) == set(digit_strings.split_lengths("train"))
    docs = pydoc_chars.split_documents()
    names = {s: {n for n, _ in d} for s, d in docs.items()}
    # Validation: the end of the training files' text, as one; test: other files, whole.
    assert names["validation"] == {"validation"} and not names["train"] & names["test"]
    train, validation = ("\n".join(t for _, t in docs[s]) for s in ("train", "validation"))
    assert 0.12 < len(validation) / (len(train) + len(validation)) < 0.2  # about 15%
    assert len(data.load("pydoc_chars", "validation")) > 0


def test_a_slice_of_the_train_split_serves_as_validation():
    train = data.load("breast_cancer", "train[:90%]", cache=True)
    validation = data.load("breast_cancer", "train[90%:]", cache=True)
    whole = data.load("breast_cancer", "train", cache=True)
    assert len(train) + len(validation) == len(whole) == 386
    both = np.concatenate([train.cached["features"], validation.cached["features"]])
    assert _row_set(both) == _row_set(whole.cached["features"])
    with pytest.raises(ConfigError, match="no split 'valid'"):
        data.load("breast_cancer", "valid")
    with pytest.raises(ConfigError, match="no split 'train\\[:10x\\]'"):
        data.load("breast_cancer", "train[:10x]")


def test_load_and_column_name_their_arguments():
    # Each failed inside TFDS (a TypeError from its naming module, an AttributeError), or said
    # only 'lbl', or was taken (cache="maybe") (trial 48a).
    for args, error, message in [
        ((None, "test"), TypeError, "name: expected a str, got NoneType"),
        ((5, "test"), TypeError, "name: expected a str, got int"),
        (("digits", None), TypeError, "split: expected a str, got NoneType"),
        (("digits", "test", 3), TypeError, "data_dir: expected a str or path (or None), got int"),
        (("digits", "test", None, "maybe"), ValueError, "cache='maybe' must be 'auto', 'on', "),
    ]:
        with pytest.raises(error) as e:
            data.load(*args)
        assert str(e.value).startswith(message), e.value
    split = data.load("digits", "test")
    with pytest.raises(TypeError, match="^key: expected a feature name \\(str\\), got NoneType$"):
        split.column(None)
    with pytest.raises(KeyError) as e:
        split.column("lbl")
    assert e.value.args[0] == (
        "digits:test has no feature 'lbl' (did you mean 'label'?); its features: image, label, "
        "writer_group, row_id"
    )


def test_rows_outside_a_split_or_not_integers_are_named():
    """`rows` refused an index past the split with array_record's own "Record key should be in
    [0, num_records)" (no split, no count, no index) and read row 0 for 0.5; held in memory, a
    negative index read from the end. Now one line each, streamed or in memory alike."""
    for cache in (False, True):
        test = data.load("digits", "test", cache=cache)
        assert len(test) == 360
        with pytest.raises(IndexError) as e:
            test.rows(np.arange(400))
        assert str(e.value) == (
            "rows of digits:test: it has 360 rows (indices 0 to 359), got 360 at position 360"
        )
        with pytest.raises(IndexError, match=r"got -1 at position 1$"):
            test.rows([0, -1])
        with pytest.raises(TypeError) as e:
            test.rows([0.5])
        assert str(e.value) == (
            "rows of digits:test: indices must be integers, got float64 (0.5 first)"
        )
        with pytest.raises(TypeError, match=r"got bool \(True first\); pass np.flatnonzero"):
            test.rows(np.array([True, False]))
        assert test.rows([])["image"].shape == (0, 8, 8, 1)
        assert test.rows(np.array([3, 2], np.int32))["image"].shape == (2, 8, 8, 1)
        # [1, None] failed in the message's own code (.item() of an int in an object array),
        # 2-D indices with array_record's AttributeError, rows(3) with "'int' object is not
        # iterable"; an int past int64 (an object array) was not range-checked.
        with pytest.raises(TypeError) as e:
            test.rows([1, None])
        assert str(e.value) == (
            "rows of digits:test: indices must be integers, got None at position 1"
        )
        with pytest.raises(IndexError, match=r"got 1180591620717411303424 at position 1$"):
            test.rows([0, 2**70])
        with pytest.raises(ValueError) as e:
            test.rows([[0, 1], [2, 3]])
        assert str(e.value) == (
            "rows of digits:test: indices must be one dimension, got shape (2, 2); pass "
            "np.ravel(indices) and reshape the rows' features after"
        )
        with pytest.raises(ValueError, match=r"one dimension of integers, got nested lists"):
            test.rows([[0, 1], [2]])
        one, both = test.rows(3), test.rows([3, 4])  # as x[3] and x[[3, 4]]
        assert one["image"].shape == (8, 8, 1) and one["label"].shape == ()
        assert all(np.array_equal(one[k], both[k][0]) for k in both)
        assert test.rows(np.int32(3))["label"] == one["label"]
        with pytest.raises(IndexError, match=r"\(indices 0 to 359\), got 360$"):
            test.rows(360)
        # One index is said as one, without a position, whatever is wrong with it: 0.5 was
        # "indices must be integers, got float64 (0.5 first)", True was told to pass a mask.
        for index, said in [
            (None, "None"),
            (0.5, "0.5 (float64)"),
            (True, "True (bool)"),
            ("3", "'3' (text)"),
        ]:
            with pytest.raises(TypeError) as e:
                test.rows(index)
            assert str(e.value) == f"rows of digits:test: the index must be an integer, got {said}"
        with pytest.raises(TypeError, match=r"must be integers, got text \('3' first\)$"):
            test.rows(["3"])  # its dtype named as what it holds, not '<U1'
    # A split of no rows said "(indices 0 to -1)".
    empty = data.Split("digits", "train[:0]", None, [])  # type: ignore[arg-type]
    with pytest.raises(IndexError) as e:
        empty.rows([0])
    assert str(e.value) == "rows of digits:train[:0]: it has no rows, got 0 at position 0"


def test_breast_cancer_is_tabular():
    train = data.load("breast_cancer", "train", cache=True)
    assert train.cached["features"].shape == (386, 30)
    assert set(np.unique(train.cached["label"])) == {0, 1}


def test_unknown_split_lists_the_real_ones():
    with pytest.raises(ConfigError, match="its splits are test, test_writers, train, "):
        data.load("digits", "val")


def test_a_data_dir_that_cannot_hold_the_set_is_named_in_one_line(tmp_path):
    # It was a traceback: FileExistsError for a file, FileNotFoundError under /proc.
    from ann.data import sources

    (tmp_path / "afile").write_text("")
    # What the path is: one below a file said "(Not a directory)".
    for where, why in ((tmp_path / "afile", "it is a file, not a directory"),
                       (tmp_path / "afile" / "below",
                        f"cannot be created: {tmp_path / 'afile'} is a file, so nothing can be "
                        "below it")):  # fmt: skip
        with pytest.raises(ConfigError) as e:
            sources.load("digits", "train", data_dir=str(where), key="data.train_split")
        assert str(e.value).startswith(
            f"config key 'data.data_dir': cannot build the digits data set in {where} ({why}); "
            "give a writable directory, e.g. --config.data.data_dir="
        ), e.value
        # A Python call names its argument, not the config's key.
        with pytest.raises(ConfigError) as e:
            sources.load("digits", "train", data_dir=str(where))
        assert str(e.value).startswith(
            f"load(data_dir=...): cannot build the digits data set in {where} ({why}); give a "
            "writable directory, e.g. data_dir="
        ), e.value


def test_a_prepared_set_in_a_data_dir_this_user_may_only_read_is_read(
    data_dir, tmp_path, monkeypatch
):
    # Its build lock could not be made (EACCES, a read-only mount), and a set prepared there
    # was refused with a write's fix: "cannot build the digits data set in ... (Permission
    # denied); give a writable directory". Reading needs no lock. Unprepared, it is refused.
    import builtins
    import errno
    import os

    from ann.data import sources

    def refused(path, *args, **kwargs):
        if os.path.basename(str(path)).endswith(".lock"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return builtins.open(path, *args, **kwargs)

    sources.load("digits", "train", data_dir=data_dir)  # prepared (once a session)
    monkeypatch.setattr(sources, "open", refused, raising=False)
    sources.load("digits", "train", data_dir=data_dir)
    with pytest.raises(ConfigError, match="cannot build the digits data set"):
        sources.load("digits", "train", data_dir=str(tmp_path))


def test_train_batches_are_seeded_and_resume_exactly():
    split = data.load("digits", "train", cache=True)
    a = data.train_batches(split, fields, 32, seed=1)
    first = [next(a)["targets"] for _ in range(5)]
    state = a.get_state()
    rest = [next(a)["targets"] for _ in range(50)]  # crosses an epoch boundary (1221 rows)

    b = data.train_batches(split, fields, 32, seed=1)
    assert all((x == y).all() for x, y in zip(first, [next(b)["targets"] for _ in range(5)]))
    c = data.train_batches(split, fields, 32, seed=1)
    c.set_state(json.loads(json.dumps(state)))
    assert all((x == y).all() for x, y in zip(rest, [next(c)["targets"] for _ in range(50)]))
    d = data.train_batches(split, fields, 32, seed=2)
    assert not all((x == y).all() for x, y in zip(first, [next(d)["targets"] for _ in range(5)]))


def test_train_batches_keep_nothing_alive_once_dropped():
    # The epoch order's cache was a class-wide lru_cache on the method: it held the last two
    # iterators' batch sources, and their orders (8 bytes a row), after their run had ended.
    import gc
    import weakref

    split = data.load("digits", "train", cache=True)
    it = data.train_batches(split, fields, 32, seed=1)
    next(it)
    source = weakref.ref(it._source)
    del it
    gc.collect()
    assert source() is None


def test_each_epoch_visits_every_row_once():
    split = data.load("breast_cancer", "train", cache=True)
    it = data.train_batches(split, lambda r: {"x": r["features"]}, 5, seed=0)
    rows = np.concatenate([next(it)["x"] for _ in range(len(split) // 5)])
    assert len(np.unique(rows, axis=0)) == len(rows)


def test_eval_batches_cover_the_split_once_with_a_mask():
    split = data.load("digits", "test", cache=True)
    batches = list(data.eval_batches(split, fields, 64))
    assert len(batches) == 6  # 360 rows -> 5 full batches and one padded
    assert sum(b["mask"].sum() for b in batches) == len(split)
    labels = np.concatenate([b["targets"][b["mask"] > 0] for b in batches])
    assert (np.sort(labels) == np.sort(split.cached["label"])).all()


def test_device_iterator_state_is_that_of_the_consumed_batch():
    import jax

    split = data.load("digits", "train", cache=True)
    mesh = jax.make_mesh((4,), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    it = data.DeviceIterator(data.train_batches(split, fields, 32, seed=0), sharding, size=3)
    next(it)
    saved = it.get_state()
    expected = next(it)["targets"]
    assert expected.sharding == sharding and expected.shape == (32,)
    fresh = data.DeviceIterator(data.train_batches(split, fields, 32, seed=0), sharding)
    fresh.set_state(saved)
    assert (np.asarray(next(fresh)["targets"]) == np.asarray(expected)).all()
    it.close(), fresh.close()  # their reader threads would outlive the test


# sha256 of every split's arrays, per data set and builder VERSION. TFDS reuses a prepared
# version as it is, so a builder whose output changes without a VERSION bump would leave every
# existing data_dir silently stale: change the output, bump VERSION, then update this table.
# (pydoc_chars reads this Python's own docs; the sensor sets are float math that may differ in
# the last bit between NumPy builds; neither can have one fingerprint everywhere.)
FINGERPRINTS = {
    ("digits", "1.3.0"): "6967abad62aebd5675adc55b1780a8aeb9d9e0095bd952a497f4f06de1705154",
    ("breast_cancer", "1.1.0"): "9bcf573f0f8ae27918eb2ad2d6601e8c206219eb317dee2a3fb0dcf0e802ccc1",
    ("diabetes", "1.1.0"): "20761e5017137f56c36a5e2006eb3818efbb2c12bdd44799bdd031873f3f1b31",
    ("digit_strings", "2.1.0"): "7b561c7563d9ef5986905d6a10bb83f0f3bd7157ccb51d27d2f4643802a5d42d",
    ("digit_pairs", "1.1.0"): "4fcd0f5d9b1a76384a5d9403925b9a36da8bf1384927e3ae174a289d221e508b",
    ("digits_novelty", "1.1.0"): "1a72fb0e410ff51c6d7a9b98e577db898cdefd8b8350e9dd3b5cfcbf7936611d",
}


@pytest.mark.parametrize("name", sorted({name for name, _ in FINGERPRINTS}))
def test_builder_output_changes_only_with_its_version(name):
    import hashlib

    digest = hashlib.sha256()
    info = data.load(name, "train").info
    for split in sorted(info.splits):
        rows = data.load(name, split, cache=True).cached
        for key in sorted(rows):
            array = np.ascontiguousarray(rows[key])
            digest.update(f"{split}/{key}/{array.dtype}/{array.shape}".encode())
            digest.update(array.tobytes())
    version = str(info.version)
    assert (name, version) in FINGERPRINTS, f"new version {version} of {name}: add its sha256"
    assert digest.hexdigest() == FINGERPRINTS[name, version], (
        f"{name} {version} builds different data than when its fingerprint was taken: bump its "
        "builder's VERSION (so prepared copies are rebuilt) and update FINGERPRINTS"
    )


def test_a_first_build_prints_one_line_of_ours_not_tfds_download_messages(tmp_path, capfd):
    # TFDS printed "Downloading and preparing dataset Unknown size ..." and progress bars for a
    # set that is built offline; and warned that the new folder "has no dataset_info.json".
    from ann.data import sources

    sources.load("diabetes", "train", data_dir=str(tmp_path))
    out, err = capfd.readouterr()
    assert "Downloading" not in out + err and "dataset_info.json" not in out + err
    assert "%" not in err  # no progress bar


def test_a_build_or_an_unprepared_tfds_set_leaves_no_temporary_directory(tmp_path, monkeypatch):
    # TFDS's GCS lookup made an empty /tmp/tmpXXXXtfds for every builder of a set not yet
    # prepared (443 in a day): ann's own, built here, and a TFDS set's, refused as unprepared.
    import tempfile

    from ann.data import sources

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # private: tests run in parallel
    data_dir = str(tmp_path / "tfds")
    sources.BUILDERS["breast_cancer"](data_dir=data_dir, file_format="array_record")
    with pytest.raises(ConfigError, match="data set 'mnist' is not prepared"):
        sources.load("mnist", "train", data_dir=data_dir)
    assert not list(tmp_path.glob("tmp*tfds"))


def test_row_ids_are_the_source_rows_and_a_split_reported_by_its_own_name_is_allowed():
    from ann.data import splits

    images, _ = splits.digits()
    parts = {s: data.load("digits", s, cache=True) for s in ("train", "validation", "test")}
    for part in parts.values():  # each example's row_id is its row of scikit-learn's array
        np.testing.assert_array_equal(images[part.cached["row_id"]], part.cached["image"])
    ids = [set(p.cached["row_id"].tolist()) for p in parts.values()]
    assert sum(map(len, ids)) == len(set.union(*ids)) == len(images)  # one partition of all
    # The train split reported as well (eval_train/...), under its own name: what it says.
    data.check_splits_apart(parts["train"], parts["validation"], [parts["test"], parts["train"]])


NAN_SET = """
import numpy as np
import tensorflow_datasets as tfds

class NanTab(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "input": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                "label": tfds.features.ClassLabel(num_classes=2),
            }),
            supervised_keys=("input", "label"),
        )

    def _split_generators(self, dl_manager):
        sizes = {"train": 200, "validation": 60, "test": 60}
        return {s: self._generate_examples(n, s) for s, n in sizes.items()}

    def _generate_examples(self, n, split):
        rng = np.random.default_rng(len(split))
        for i in range(n):
            x = rng.normal(size=4).astype(np.float32)
            if split == "train" and i % 50 == 7:  # 4 rows with a missing value
                x[1] = np.nan
            yield i, {"input": x, "label": int(x[0] > 0)}


class OneClassTab(NanTab):  # one declared class: it trained to loss 0 and AUROC nan, exit 0
    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "input": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                "label": tfds.features.ClassLabel(num_classes=1),
            }),
            supervised_keys=("input", "label"),
        )

    def _generate_examples(self, n, split):
        for i, row in super()._generate_examples(n, "test"):  # no NaN
            yield i, {**row, "label": 0}


class AllOneTab(NanTab):  # 2 classes declared, every training label 1: it trained, exit 0
    def _generate_examples(self, n, split):
        for i, row in super()._generate_examples(n, "test"):
            yield i, {**row, "label": 1 if split == "train" else row["label"]}


class VarLenTab(NanTab):  # rows of different lengths: "all input arrays must have the same shape"
    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "input": tfds.features.Tensor(shape=(None,), dtype=np.float32),
                "label": tfds.features.ClassLabel(num_classes=2),
            }),
            supervised_keys=("input", "label"),
        )

    def _generate_examples(self, n, split):
        for i, row in super()._generate_examples(n, "test"):
            yield i, {**row, "input": row["input"][: 2 + i % 3]}


class NoLabelTab(NanTab):  # supervised_keys name a feature it lacks: TFDS's KeyError: 'label'
    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "weight": tfds.features.Scalar(dtype=np.float32),
                "input": tfds.features.Tensor(shape=(4,), dtype=np.float32),
            }),
            supervised_keys=("input", "label"),
        )

    def _generate_examples(self, n, split):
        for i, row in super()._generate_examples(n, "test"):
            yield i, {"input": row["input"], "weight": 1.0}


class NoKeysTab(NanTab):  # no supervised_keys: the refusal gave no fix
    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "x": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                "label": tfds.features.ClassLabel(num_classes=2),
            }),
        )

    def _generate_examples(self, n, split):
        for i, row in super()._generate_examples(n, "test"):
            yield i, {"x": row["input"], "label": row["label"]}


class TextTab(NanTab):  # a CSV line as text: "could not convert string to float"
    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "input": tfds.features.Text(),
                "label": tfds.features.ClassLabel(num_classes=2),
            }),
            supervised_keys=("input", "label"),
        )

    def _generate_examples(self, n, split):
        for i, row in super()._generate_examples(n, "test"):
            yield i, {**row, "input": ",".join(map(str, row["input"]))}
"""


@pytest.mark.parametrize(
    "builder, name, message",
    [
        # "training diverged ... use a lower optimizer.learning_rate", which cannot help.
        ("NanTab", "nan_tab", "data.train_split 'train' of data set 'nan_tab': feature 'input' "
         "holds NaN or infinity in 4 of its 200 rows (the first: row "),
        ("OneClassTab", "one_class_tab", "feature 'label' of 'one_class_tab' declares 1 class; "
         "classification needs at least 2"),
        ("AllOneTab", "all_one_tab", "the train split 'train' of 'all_one_tab' holds only class "
         "'1' (of 2): a classifier learns nothing from one class; check its labels"),
        ("VarLenTab", "var_len_tab", "feature 'input' of data set 'var_len_tab' is shape "
         "[None], of varying length; ann stacks rows into batches of one fixed shape: pad or "
         "crop it to a fixed length in its builder"),
        ("TextTab", "text_tab", "feature 'input' of data set 'text_tab' holds text or "
         "strings; classification reads numbers"),
        # Its features sorted: they came in another order each run.
        ("NoLabelTab", "no_label_tab", "data set 'no_label_tab' declares supervised_keys "
         "('input', 'label') but has no feature 'label' (its features: input, weight); fix its "
         "builder"),
        ("NoKeysTab", "no_keys_tab", "data set 'no_keys_tab' declares no (input, label) "
         "supervised_keys; classification needs them; declare them in its builder's _info, "
         "tfds.core.DatasetInfo(..., supervised_keys=(\"input\", \"label\")), with two of its "
         "features (its features: label, x)"),
    ],
)  # fmt: skip
def test_a_user_data_set_that_cannot_train_is_refused_before_anything_is_written(
    tmp_path, monkeypatch, builder, name, message
):
    """A user's own TFDS builder, prepared the README's way."""
    from conftest import tiny

    from ann.config import ConfigError
    from ann.train.loop import train_and_evaluate

    (tmp_path / "user_sets.py").write_text(NAN_SET)
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_sets

    data_dir = str(tmp_path / "tfds")
    made = getattr(user_sets, builder)(data_dir=data_dir, file_format="array_record")
    made.download_and_prepare()
    config = tiny()
    config.data.name, config.data.data_dir = name, data_dir
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(config, str(tmp_path / "run"))
    assert str(e.value).startswith(message), str(e.value)
    assert not (tmp_path / "run").exists()


def test_an_unknown_set_says_what_its_data_dir_holds(tmp_path, monkeypatch):
    """It named the directory alone: a missing one, a file, a set spelt in another case and a
    version not prepared all read as "unknown data set". Also for a registered builder (the
    user_sets module above registers nan_tab): a version not prepared was TFDS's
    AssertionError."""
    from ann.config import ConfigError
    from ann.data import sources

    (tmp_path / "tfds/prepared_tab/1.0.0").mkdir(parents=True)
    (tmp_path / "file").write_text("")
    for name, data_dir, said in [
        ("good_tab", tmp_path / "nowhere", "(data_dir, else $TFDS_DATA_DIR, else "
         "~/tensorflow_datasets), which does not exist; if it"),
        ("good_tab", tmp_path / "file", "~/tensorflow_datasets), which is a file; if it"),
        ("Prepared_Tab", tmp_path / "tfds", "which holds prepared_tab (did you mean "
         "'prepared_tab'?); if it"),
        ("prepared_tab:2.0.0", tmp_path / "tfds", "which holds prepared_tab version 1.0.0; if "
         "it"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError, match="unknown data set") as e:
            sources.load(name, "train", data_dir=str(data_dir))
        assert said in str(e.value), str(e.value)
        # A Python call names its arguments (it said "config key 'data.name'").
        assert str(e.value).startswith(f"load(name=...): unknown data set {name!r}: not one")
        assert str(e.value).endswith("if it was prepared elsewhere, set data_dir to that directory")
    with pytest.raises(ConfigError) as e:  # the config's keys where the config chose them
        sources.load("good_tab", "train", data_dir=str(tmp_path / "nowhere"), key="data.x")
    assert str(e.value).startswith("config key 'data.name': unknown data set 'good_tab': not")
    assert "(data.data_dir, else $TFDS_DATA_DIR" in str(e.value)
    assert str(e.value).endswith("set --config.data.data_dir to that directory")
    (tmp_path / "user_sets.py").write_text(NAN_SET)
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_sets  # noqa: F401  (registers nan_tab with TFDS, as a user's import does)

    with pytest.raises(ConfigError, match="unknown data set 'nan_tab:2.0.0'"):
        sources.load("nan_tab:2.0.0", "train", data_dir=str(tmp_path / "tfds"))


def test_an_empty_tfds_data_dir_counts_as_unset(monkeypatch):
    # It said "cannot build the digits data set in  (No such file or directory); give a
    # writable directory, e.g. --config.data.data_dir=" (blank, twice).
    import os

    from ann.data import sources

    monkeypatch.setenv("TFDS_DATA_DIR", "")
    assert sources.default_data_dir() == os.path.expanduser("~/tensorflow_datasets")


@pytest.mark.parametrize("left", [(), ("1.0.0.incompleteABC12",)])
def test_a_data_set_folder_without_a_prepared_version_says_to_prepare_it_again(tmp_path, left):
    # `mkdir DATA_DIR/my_tab`, or a prepare that failed (TFDS "No examples were yielded"): it
    # was "unknown data set 'my_tab': ... which holds my_tab (did you mean 'my_tab'?)".
    from ann.config import ConfigError
    from ann.data import sources

    (tmp_path / "my_tab").mkdir()
    for folder in left:
        (tmp_path / "my_tab" / folder).mkdir()
    with pytest.raises(ConfigError) as e:
        sources.load("my_tab", "train", data_dir=str(tmp_path), key="data.train_split")
    assert str(e.value) == (
        f"config key 'data.name': data set 'my_tab': {tmp_path / 'my_tab'} holds no prepared "
        "version (no VERSION folder: a prepare that failed, or a folder made by hand); prepare "
        "it again (its builder's `MySet(data_dir=..., file_format='array_record')."
        'download_and_prepare()`, README "Data"), or remove the folder'
    )


def test_the_readme_builder_of_own_arrays_prepares_and_trains(tmp_path, monkeypatch):
    # README "Data" described a builder in prose only: a newcomer's first one failed in TFDS.
    # Its my_tab.py, on a CSV of the README's layout, prepared its way and trained on.
    import re
    import subprocess
    import sys
    import textwrap

    from conftest import ROOT, tiny

    from ann.train.loop import train_and_evaluate

    readme = (ROOT / "README.md").read_text()
    code = re.search(r"\n( *)```python\n\1# my_tab\.py\n(.*?)\n\1```", readme, flags=re.S)
    (tmp_path / "my_tab.py").write_text(textwrap.dedent(code[0].split("```python\n")[1][:-3]))
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_tab

    data_dir = str(tmp_path / "data")
    prepare = [sys.executable, "my_tab.py", "data"]  # the README's command
    assert re.search(r"\n *python my_tab\.py data\n", readme), "README Data: the prepare line"

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(prepare, capture_output=True, text=True, cwd=tmp_path, timeout=300)

    # A header-only CSV: the README's line, not "zero-size array to reduction operation", nor
    # NumPy's "loadtxt: input contained no data" warning and a traceback before it.
    (tmp_path / "my_tab.csv").write_text("a,b,c,d,class\n")
    with pytest.raises(ValueError, match=r"my_tab\.csv holds no rows below its header"):
        my_tab.MyTab(data_dir=data_dir, file_format="array_record").download_and_prepare()
    done = run()
    assert (done.returncode, done.stderr) == (
        1, f"error: {tmp_path / 'my_tab.csv'} holds no rows below its header\n"
    )  # fmt: skip
    said = re.search(r"`error: \.\.\./my_tab\.csv holds no rows below its header`", readme)
    assert said, "README Data: the empty CSV's line"
    assert not (tmp_path / "data").exists()
    # 3 rows: a split left empty, TFDS's "No examples were yielded" traceback after writing.
    np.savetxt(tmp_path / "my_tab.csv", np.eye(3, 5), delimiter=",", header="a,b,c,d,class")
    done = run()
    assert (done.returncode, done.stderr) == (
        1, f"error: {tmp_path / 'my_tab.csv'} holds 3 rows; the 70/15/15 split needs 4 or more\n"
    )  # fmt: skip
    said = r"`error: \.\.\./my_tab\.csv holds 3 rows; the 70/15/15 split\s+needs 4 or more`"
    assert re.search(said, readme), "README Data: the 3-row CSV's line"
    assert not (tmp_path / "data").exists()
    csv = tmp_path / "my_tab.csv"
    csv.write_text("a,b,c,d,class\n1,2,3,4,0\n")  # it said "holds 1 rows"
    with pytest.raises(ValueError, match=r"my_tab\.csv holds 1 row; the 70/15/15 split needs"):
        my_tab.arrays()
    # A bad cell: NumPy's "could not convert string 'x' to float64 at row 4, column 2", naming
    # neither the file nor its line (row 4 of those below the header, blank ones skipped).
    good = "".join(f"{i},1,2,3,{i % 2}\n" for i in range(5))
    csv.write_text("a,b,c,d,class\n" + good + "\n0.1,x,2,3,1\n")
    done = run()
    assert (done.returncode, done.stderr) == (
        1, f"error: {csv} line 8 is not numbers: '0.1,x,2,3,1'\n"
    )  # fmt: skip
    assert "`error: .../my_tab.csv line 7 is not numbers: '0.1,x,2,3,1'`" in readme.replace(
        "\n  ", " "
    )
    csv.write_text("a,b,c,d,class\n" + good + "0.1,2,3,1\n")
    with pytest.raises(ValueError, match=r"my_tab\.csv line 7 has 4 values, not 5$"):
        my_tab.arrays()
    assert not (tmp_path / "data").exists()
    x = np.random.default_rng(0).normal(size=(200, 4))
    table = np.c_[x, (x[:, 0] > 0) + (x[:, 1] > 0.5)]
    np.savetxt(tmp_path / "my_tab.csv", table, delimiter=",", header="a,b,c,d,class")
    done = run()
    assert done.returncode == 0, done.stderr[-2000:]
    command = re.search(r"--config.data.name=my_tab .*?--workdir", readme, flags=re.S)[0]
    assert "--config.report.slices=\"('label',)\"" in command
    config = tiny("breast_cancer_mlp", **{"data.name": "my_tab", "data.data_dir": data_dir,
                                         "report.slices": ("label",), "num_epochs": 0})  # fmt: skip
    state = train_and_evaluate(config, str(tmp_path / "run"))
    assert state.step == 20


class _NoClasses:  # a float feature: no num_classes
    shape, np_dtype = (), np.float32


@pytest.mark.parametrize(
    "config, name, supervised, features, said",
    [
        # "declare it as tfds.features.ClassLabel(...) in its builder": ann's own builder.
        ("digits_mlp", "diabetes", ("features", "target"),
         {"features": _NoClasses(), "target": _NoClasses()},
         "feature 'target' of 'diabetes' is not a ClassLabel; data set 'diabetes' is made for "
         "experiment 'regression', as in configs/diabetes_mlp.py"),
        ("digits_mlp", "sensor_series", ("history", "future"),
         {"history": _NoClasses(), "future": _NoClasses()},
         "is made for experiment 'forecasting', as in configs/sensors_lstm.py"),
        # "declares no (input, label) supervised_keys; classification needs them" and no more.
        ("digits_mlp", "digit_strings", None, {}, "declares no (input, label) supervised_keys; "
         "classification needs them (data set 'digit_strings' is made for "
         "experiment 'seq2seq', as in configs/digit_seq2seq.py)"),
        ("breast_cancer_mlp", "pydoc_chars", None, {},
         "is made for experiment 'language_modelling', as in configs/pydoc_lm.py"),
        ("diabetes_mlp", "pydoc_chars", None, {}, "is made for "
         "experiment 'language_modelling'"),
        ("digit_seq2seq", "digits", None, {}, "has no source or target feature; seq2seq reads "
         "token ids from source and target (data set 'digits' is made for "
         "experiment 'classification', as in configs/digits_mlp.py)"),
    ],
)  # fmt: skip
def test_a_shipped_set_under_another_experiment_names_the_one_it_is_made_for(
    config, name, supervised, features, said
):
    # As digits_novelty's refusal already named anomaly_detection, every shipped set does.
    import types

    from conftest import load_config

    from ann.config import ConfigError
    from ann.train.build import make_experiment

    info = types.SimpleNamespace(supervised_keys=supervised, features=features, metadata={})
    train = types.SimpleNamespace(name=name, split="train", info=info)
    with pytest.raises(ConfigError) as e:
        make_experiment(load_config(config)).setup(train)
    assert said in str(e.value), str(e.value)
