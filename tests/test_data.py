"""Offline data sets, splits, and the grain pipeline's determinism and resumability."""

import json

import numpy as np
import pytest

from ann import data
from ann.config import ConfigError


def fields(rows):
    return {"inputs": rows["image"], "targets": rows["label"]}


def test_digits_splits_are_stratified_and_disjoint():
    train = data.load("digits", "train", cache=True)
    test = data.load("digits", "test", cache=True)
    assert len(train) + len(test) == 1797
    ratio = [np.mean(s.cached["label"] == c) for s in (train, test) for c in range(10)]
    # stratified: each class has the same share in train and test, to a row or so
    assert np.allclose(ratio[:10], ratio[10:], atol=0.01)
    both = np.concatenate([train.cached["image"], test.cached["image"]]).reshape(1797, -1)
    assert len(np.unique(both, axis=0)) >= 1790  # (a few digits images are exact duplicates)


def test_digits_writer_split_is_sequential():
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.uint8).reshape(1797, -1)
    test = data.load("digits", "test_writers", cache=True).cached["image"].reshape(-1, 64)
    tail = {row.tobytes() for row in images[-len(test) :]}
    assert len(test) == 359
    assert {row.tobytes() for row in test} == tail


def test_breast_cancer_is_tabular():
    train = data.load("breast_cancer", "train", cache=True)
    assert train.cached["features"].shape == (455, 30)
    assert set(np.unique(train.cached["label"])) == {0, 1}


def test_unknown_split_lists_the_real_ones():
    with pytest.raises(ConfigError, match="its splits are test, test_writers, train"):
        data.load("digits", "validation")


def test_train_batches_are_seeded_and_resume_exactly():
    split = data.load("digits", "train", cache=True)
    a = data.train_batches(split, fields, 32, seed=1)
    first = [next(a)["targets"] for _ in range(5)]
    state = a.get_state()
    rest = [next(a)["targets"] for _ in range(50)]  # crosses an epoch boundary (1437 rows)

    b = data.train_batches(split, fields, 32, seed=1)
    assert all((x == y).all() for x, y in zip(first, [next(b)["targets"] for _ in range(5)]))
    c = data.train_batches(split, fields, 32, seed=1)
    c.set_state(json.loads(json.dumps(state)))
    assert all((x == y).all() for x, y in zip(rest, [next(c)["targets"] for _ in range(50)]))
    d = data.train_batches(split, fields, 32, seed=2)
    assert not all((x == y).all() for x, y in zip(first, [next(d)["targets"] for _ in range(5)]))


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


# sha256 of every split's arrays, per data set and builder VERSION. TFDS reuses a prepared
# version as it is, so a builder whose output changes without a VERSION bump would leave every
# existing data_dir silently stale: change the output, bump VERSION, then update this table.
# (pydoc_chars reads this Python's own docs; the sensor sets are float math that may differ in
# the last bit between NumPy builds; neither can have one fingerprint everywhere.)
FINGERPRINTS = {
    ("digits", "1.0.0"): "1c5e822fd8455b8b27aa8864cb800d90252332c02c34f7aacaefb8b96875d2cb",
    ("breast_cancer", "1.0.0"): "6c54e7523bcf229b7bee7cf0f04c1642aa4193bbd7d097c100f1f474c6031416",
    ("diabetes", "1.0.0"): "0b95f6e79906eb239d8d0d4bc05b8e02ef52de165417c22bdcfaec53f675b097",
    ("digit_strings", "2.0.0"): "2fc61ca25f43986e4541b572a0ad2d5854afe283c8397a88efd883952f7cee7b",
    ("digit_pairs", "1.0.0"): "dbbb7dabff701fe5d90819921a9f54397818c8dfe92216d06e64497d3a4b916c",
    ("digits_novelty", "1.0.0"): "a6b8d6cf1e6a5babd8417d20acd94cdb770c702747003f2371a6f22caecf4d96",
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
