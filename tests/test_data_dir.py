"""ann/data/data_dir.py: where a run read its data is recorded, and its later readers read there."""

import json
import os

from conftest import tiny

from ann import config as config_lib
from ann.data import data_dir as data_dir_lib


def test_readers_in_another_shell_read_the_data_the_run_trained_on(
    tmp_path, monkeypatch, capsys, data_dir
):
    # A run trained with data.data_dir "" recorded nothing of where "" led: ann export in a shell
    # with another $TFDS_DATA_DIR built (or read) another digits there for its reference sample,
    # self-check and temperature, and said nothing.
    from ann.export import export
    from ann.report import collect
    from ann.train.loop import train_and_evaluate

    workdir, out = tmp_path / "run", tmp_path / "export"
    train_and_evaluate(tiny(), str(workdir))
    assert config_lib.read(str(workdir)).data.data_dir == ""  # config.json: as the user wrote it
    record = json.loads((workdir / data_dir_lib.FILENAME).read_text())
    assert record["data_dir"] == data_dir and record["name"] == "digits", record

    other = tmp_path / "other_tfds"
    other.mkdir()
    monkeypatch.setenv("TFDS_DATA_DIR", str(other))
    capsys.readouterr()
    manifest = export(str(workdir), str(out))
    assert manifest["data"]["data_dir"] == data_dir
    assert manifest["config"]["data"]["data_dir"] == ""  # portable: another machine resolves it
    source = collect.from_model(str(out))  # ann report --model
    assert source.data_dir == data_dir
    assert len(collect.collect(source, "validation").rows["label"]) > 0
    assert os.listdir(other) == []  # nothing read or built there
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert lines and all(
        f"reading data set 'digits' from {data_dir}," in line and str(other) in line
        for line in lines
    ), lines


def test_a_resume_reads_the_recorded_directory_unless_data_dir_changed(
    tmp_path, monkeypatch, capsys, data_dir
):
    workdir = str(tmp_path / "run")
    config = tiny()
    config_lib.write(config, workdir)
    data_dir_lib.write(workdir, "", "digits", "1.3.0")  # resolved: the session's data dir
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "elsewhere"))
    assert data_dir_lib.for_run(config, workdir) == data_dir
    assert "note: reading data set 'digits' from" in capsys.readouterr().err
    moved = tiny()
    moved.data.data_dir = str(tmp_path / "moved")  # changed on this resume: the user's word
    assert data_dir_lib.for_run(moved, workdir) == moved.data.data_dir
    assert capsys.readouterr().err == ""
    # A run with no record (trained before it existed) reads what its config resolves to.
    assert data_dir_lib.for_run(config, str(tmp_path / "fresh")) == ""


def test_a_recorded_directory_that_lost_the_data_is_said_in_one_line(tmp_path, capsys):
    gone = str(tmp_path / "gone")
    chosen = data_dir_lib.choose("", "digits", gone, "the run at runs/a")
    assert chosen == ""
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: the run at runs/a read data set 'digits'")
    assert f"from {gone}, which no longer holds it" in err[0], err
    assert data_dir_lib.choose("", "digits", None, "x") == ""  # nothing recorded: as before


def test_the_lost_data_warning_says_what_the_fallback_holds_and_where_to_restore(tmp_path, capsys):
    # It said the fallback "may hold other data" even where it was empty and the set was then
    # built there, and "put the run's data back there" named no directory.
    gone, empty, full = tmp_path / "gone", tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    (full / "digits").mkdir(parents=True)
    restore = f"(to read what the run at runs/a read, restore the data set to {gone})"
    data_dir_lib.choose(str(empty), "digits", str(gone), "the run at runs/a")
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(
        f"; {empty} (data.data_dir={empty}) does not hold it either: it will be built there "
        f"anew from its source, which may differ from what was read {restore}"
    ), line
    data_dir_lib.choose(str(full), "digits:1.3.0", str(gone), "the run at runs/a")
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(
        f"; reading the copy already in {full} (data.data_dir={full}) instead, which may be "
        f"other data under the same name {restore}"
    ), line


def test_a_record_that_is_a_directory_is_not_called_torn(tmp_path, capsys):
    # It said "cannot be read (Is a directory: torn, or edited by hand)".
    record = tmp_path / data_dir_lib.FILENAME
    record.mkdir()
    data_dir_lib._WARNED.clear()
    assert data_dir_lib.recorded(str(tmp_path)) is None
    [line] = capsys.readouterr().err.splitlines()
    assert line == (
        f"warning: {record} cannot be read (Is a directory): reading the data where "
        "data.data_dir points from here, which may not be where the run read it (move it out "
        "of the workdir: the run's next ann train writes the record again)"
    )


def test_a_damaged_record_is_warned_about_once_not_read_as_none_in_silence(tmp_path, capsys):
    # A torn data_dir.json was read as a run that recorded nothing: export, report and a resume
    # read this shell's directory without a word.
    record = tmp_path / data_dir_lib.FILENAME
    assert data_dir_lib.recorded(str(tmp_path)) is None  # none: a run from before the record
    assert capsys.readouterr().err == ""
    for text, why in (('{"data_dir": "/tmp/tr', "not a JSON record with a data_dir"),
                      ('{"name": "digits"}', "not a JSON record with a data_dir")):  # fmt: skip
        record.write_text(text)
        data_dir_lib._WARNED.clear()
        assert data_dir_lib.recorded(str(tmp_path)) is None
        assert data_dir_lib.recorded(str(tmp_path)) is None  # read again: said once
        [line] = capsys.readouterr().err.splitlines()
        assert line == (
            f"warning: {record} cannot be read ({why}: torn, or edited by hand): reading the "
            "data where data.data_dir points from here, which may not be where the run read it "
            "(the run's next ann train writes the record again)"
        )
