"""ann/directory_kind.py: what a directory holds, by its marker file; the one place that looks."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from ann import artifact, directory_kind
from ann import config as config_lib
from ann.registry.core import Registry
from ann.sweep import results


def test_each_kind_is_told_by_its_marker_file(tmp_path):
    for kind, marker in directory_kind.MARKERS.items():
        folder = tmp_path / kind
        folder.mkdir()
        (folder / marker).write_text("{}")
        assert directory_kind.of(str(folder)) == (kind,)
    assert directory_kind.described(directory_kind.EXPORT) == "an export (manifest.json)"
    assert directory_kind.of(str(tmp_path)) == ()  # the markers are one level down
    assert directory_kind.of(str(tmp_path / "nowhere")) == ()
    (tmp_path / "file").write_text("")
    assert directory_kind.of(str(tmp_path / "file")) == ()


def test_the_markers_are_the_files_their_writers_write(tmp_path):
    assert directory_kind.MARKERS[directory_kind.EXPORT] == artifact.MANIFEST
    assert directory_kind.MARKERS[directory_kind.SWEEP] == results.SWEEP_FILE
    run = config_lib.file_in(str(tmp_path))
    assert directory_kind.MARKERS[directory_kind.RUN] == os.path.basename(run)
    db = Registry(str(tmp_path)).db_path
    assert directory_kind.MARKERS[directory_kind.REGISTRY] == os.path.basename(db)
    import tensorflow_datasets as tfds

    info = tfds.core.constants.DATASET_INFO_FILENAME
    assert directory_kind.MARKERS[directory_kind.DATA] == info


def test_tfds_data_is_told_two_levels_down_and_no_further(tmp_path):
    # `ann observability render --out=` a data dir (or a data set's folder) wrote its files among
    # the data sets without a word.
    data = tmp_path / "home" / "tensorflow_datasets"
    for version in ("digits/1.3.0", "glue/cola/2.0.0"):
        (data / version).mkdir(parents=True)
        (data / version / "dataset_info.json").write_text("{}")
    (data / "downloads").mkdir()
    for path in ("", "digits", "digits/1.3.0", "glue", "glue/cola", "glue/cola/2.0.0"):
        assert directory_kind.of(str(data / path)) == (directory_kind.DATA,), path
    assert directory_kind.inside(str(data / "downloads")) == (directory_kind.DATA, str(data))
    assert directory_kind.inside(str(data / "digits" / "x")) == (
        directory_kind.DATA,
        str(data / "digits"),
    )
    # The folder that holds a data dir is not one (every --out in the home directory refused).
    assert directory_kind.of(str(data.parent)) == ()
    assert directory_kind.inside(str(data.parent / "out")) is None
    # Below a folder, only a version folder's marker counts (a stray one in a project's
    # data/ made every folder two levels above it "a TFDS data directory").
    (tmp_path / "project" / "data").mkdir(parents=True)
    (tmp_path / "project" / "data" / "dataset_info.json").write_text("{}")
    assert directory_kind.of(str(tmp_path / "project" / "data")) == (directory_kind.DATA,)
    assert directory_kind.of(str(tmp_path / "project")) == ()
    assert directory_kind.of(str(tmp_path)) == ()


CONFIGURED_SET = """
import numpy as np
import tensorflow_datasets as tfds

class Pairs(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="small"), tfds.core.BuilderConfig(name="big")]

    def _info(self):
        features = tfds.features.FeaturesDict({"x": tfds.features.Tensor(shape=(), dtype=np.int32)})
        return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(3):
            yield i, {"x": i}
"""


def test_a_data_dir_of_data_sets_with_configs_is_told_at_its_root(tmp_path, monkeypatch):
    # A data dir whose data sets all have builder configs (ROOT/NAME/CONFIG/VERSION/) was told
    # only at NAME/: `--out=ROOT/report` wrote among the data sets.
    (tmp_path / "configured_sets.py").write_text(CONFIGURED_SET)
    monkeypatch.syspath_prepend(str(tmp_path))
    import configured_sets

    home = tmp_path / "home"
    data = home / "tensorflow_datasets"
    configured_sets.Pairs(
        data_dir=str(data), config="small", file_format="array_record"
    ).download_and_prepare()
    assert (data / "pairs" / "small" / "1.0.0" / "dataset_info.json").is_file()
    (data / "downloads").mkdir(exist_ok=True)
    for path in ("", "pairs", "pairs/small", "pairs/small/1.0.0"):
        assert directory_kind.of(str(data / path)) == (directory_kind.DATA,), path
    assert directory_kind.inside(str(data / "report")) == (directory_kind.DATA, str(data))
    # The home directory is still no data dir, though TFDS's file three levels down in
    # ~/tensorflow_datasets/NAME/VERSION/ has the same depth: its "configName" names no folder.
    (data / "digits" / "1.3.0").mkdir(parents=True)
    (data / "digits" / "1.3.0" / "dataset_info.json").write_text('{"name": "digits"}')
    assert directory_kind.of(str(home)) == ()
    assert directory_kind.inside(str(home / "out")) is None
    # Nor is a folder holding such a data dir whose file was written by someone else.
    (tmp_path / "project" / "sets" / "small" / "1.0.0").mkdir(parents=True)
    (tmp_path / "project" / "sets" / "small" / "1.0.0" / "dataset_info.json").write_text("{}")
    assert directory_kind.of(str(tmp_path / "project")) == ()


def test_the_deep_look_for_configs_is_bounded(tmp_path, monkeypatch):
    # Three levels down, at most MAX_DEEP_LISTINGS folders are read, however many there are: the
    # check runs on every --out and every folder above it (/tmp, /).
    for i in range(40):
        (tmp_path / f"set{i:02d}" / "config" / "sub").mkdir(parents=True)
    read = []
    real = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p: read.append(p) or real(p))
    assert directory_kind.of(str(tmp_path)) == ()
    assert len(read) == directory_kind.MAX_DEEP_LISTINGS


def test_several_kinds_are_listed_export_first_and_a_link_counts(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "manifest.json").symlink_to(tmp_path / "gone")  # broken: the reader says so
    assert directory_kind.of(str(tmp_path)) == (directory_kind.EXPORT, directory_kind.RUN)
    (tmp_path / "sweep.json").mkdir()  # a directory of the marker's name is no marker
    assert directory_kind.SWEEP not in directory_kind.of(str(tmp_path))


def test_runs_in_names_runs_and_folders_of_runs(tmp_path):
    for path in ("b_run", "a_sweep/trial_0", "c_empty/x"):
        (tmp_path / path).mkdir(parents=True)
    (tmp_path / "b_run" / "config.json").write_text("{}")
    (tmp_path / "a_sweep" / "trial_0" / "config.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("")
    assert directory_kind.runs_in(str(tmp_path)) == ["a_sweep", "b_run"]
    assert directory_kind.runs_in(str(tmp_path / "nowhere")) == []


@pytest.mark.parametrize(
    "module", ["ann.directory_kind", "ann.cli", "ann.artifact"], ids=lambda m: m
)
def test_asking_imports_no_jax(module):
    probe = f"import sys, {module}; print('jax' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.stdout.split() == ["False"], result.stderr[-2000:]
