"""The workdir: checked before anything is written, locked while a run uses it; a bad
`init_from` leaves nothing behind."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT, tiny, with_devices, without_compilation_cache

from ann.config import ConfigError
from ann.train import workdir as workdir_lib
from ann.train.loop import train_and_evaluate


def test_a_file_as_workdir_is_one_line_and_creates_nothing(tmp_path):
    (tmp_path / "README.md").write_text("not a run\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ann.main",
            f"--config={ROOT}/configs/digits_mlp.py",
            f"--workdir={tmp_path / 'README.md'}",
        ],
        # Its own cache beside the workdir, as a user's run has: not even that is made.
        env={**without_compilation_cache(), "XLA_FLAGS": with_devices(1)["XLA_FLAGS"]},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: --workdir=") and "is a file" in lines[-1]  # no JAX
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]  # no .jax_cache


def test_an_uncreatable_workdir_is_refused_before_anything_is_made(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(workdir_lib.WorkdirError, match="cannot be created: .*file is a file"):
        train_and_evaluate(tiny(), str(tmp_path / "file" / "run"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    # An empty one would be the current directory; the line says what to give, once.
    with pytest.raises(workdir_lib.WorkdirError, match=r"^workdir is empty; give the run's dir"):
        workdir_lib.check(" ")


@pytest.mark.parametrize("name", [*workdir_lib.DIRECTORIES, *workdir_lib.FILES, ".lock"])
def test_an_entry_of_the_wrong_kind_in_the_workdir_is_one_line_before_the_start(tmp_path, name):
    # `checkpoints` or `tensorboard` a file, `.lock` a directory: a traceback (NotADirectoryError,
    # IsADirectoryError), tensorboard's after training had begun, with run_status failed.
    workdir = tmp_path / "run"
    workdir.mkdir()
    entry = workdir / name
    if name in workdir_lib.DIRECTORIES:
        entry.write_text("x\n")
        why = f"{entry} is a file, so nothing can be below it"
    else:
        entry.mkdir()
        why = f"{entry} is a directory, not a file"
    with pytest.raises(workdir_lib.WorkdirError) as e:
        train_and_evaluate(tiny(total_steps=2), str(workdir))
    assert str(e.value) == (
        f"workdir {str(workdir)!r} cannot hold the run: {why}; move it out of the workdir, or "
        "choose another --workdir"
    )
    assert [p.name for p in workdir.iterdir()] == [name]  # nothing was written


def test_a_workdir_in_use_is_refused_naming_its_holder(tmp_path):
    workdir = tmp_path / "run"
    with workdir_lib.lock(str(workdir)):  # as another run holds it
        with pytest.raises(workdir_lib.WorkdirError, match=r"in use by another run \(host .* pid"):
            train_and_evaluate(tiny(), str(workdir))
    assert [p.name for p in workdir.iterdir()] == [".lock"]  # nothing of a run was written
    # Released when the holder ends: the same workdir trains.
    assert train_and_evaluate(tiny(total_steps=2), str(workdir)).step == 2


def test_a_bad_init_from_leaves_no_half_made_workdir(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match="init_from"):
        train_and_evaluate(tiny(init_from=str(tmp_path / "nowhere")), str(workdir))
    assert not workdir.exists()


def test_a_full_disk_when_the_lock_is_written_names_the_lock(tmp_path, monkeypatch):
    # os.write names no file: a full disk here said only "no space left on device".
    import errno
    import os

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError) as e, workdir_lib.lock(str(tmp_path / "run")):
        pass
    assert e.value.errno == errno.ENOSPC
    assert e.value.filename == workdir_lib._lock_path(str(tmp_path / "run"))


def _full(*args, **kwargs):
    import errno
    import os

    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_start_the_storage_refuses_removes_the_workdir_it_made(tmp_path, monkeypatch):
    # A full disk under the lock's write left runs/new/run holding only .lock (and runs/new):
    # the next command took it for a run. A workdir the start made is removed; one that
    # existed keeps what it held, and loses only what this start added.
    import os

    made = tmp_path / "new" / "run"
    monkeypatch.setattr(os, "write", _full)
    with pytest.raises(OSError, match="No space left"):
        train_and_evaluate(tiny(), str(made))
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()

    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "notes.txt").write_text("the user's")
    monkeypatch.setattr(os, "fsync", _full)  # config.json's write, the first of the start's
    with pytest.raises(OSError, match="No space left"):
        train_and_evaluate(tiny(), str(existing))
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]


def test_a_failed_start_removes_the_empty_compilation_cache_it_made_beside_the_workdir(tmp_path):
    # `ann train --workdir=new/run` on a full disk left new/.jax_cache (empty), so new/ stayed
    # though the start made both and wrote nothing there.
    full_lock = (
        "import errno, os, runpy, sys\n"
        "def full(fd, data):\n"
        "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
        "os.write = full\n"
        "sys.argv = ['ann', *sys.argv[1:]]\n"
        "runpy.run_module('ann', run_name='__main__', alter_sys=True)\n"
    )
    workdir = tmp_path / "new" / "run"
    result = subprocess.run(
        [sys.executable, "-c", full_lock, "train", "--config=configs/digits_mlp.py",
         f"--workdir={workdir}"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env=without_compilation_cache(),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.splitlines()[-1]  # (after the session's first data build, if this is it)
    assert last.startswith(f"error: {workdir / '.lock'}: no space left"), result.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_train_and_evaluate_checks_its_arguments_as_ann_train_does(tmp_path):
    """From Python, a None or dict config raised "AttributeError: 'dict' object has no
    attribute 'compilation_cache_dir'" and a None workdir "'NoneType' object has no attribute
    'strip'", naming no argument; a workdir inside an export or inside another run (both
    refused by `ann train --workdir`) was trained into."""
    export, run = tmp_path / "export", tmp_path / "run"
    export.mkdir()
    (export / "manifest.json").write_text('{"format": 1, "files": {}}')
    run.mkdir()
    (run / "config.json").write_text('{"experiment": "classification", "total_steps": 5}')
    for config, message in [(None, "got NoneType"), ({"model": {"name": "mlp"}}, "got dict")]:
        with pytest.raises(
            TypeError, match=f"^config: expected an ml_collections.Config.*{message}"
        ):
            train_and_evaluate(config, str(tmp_path / "new"))
    with pytest.raises(TypeError, match="^workdir: expected the run's directory as a str or path"):
        train_and_evaluate(tiny(), None)
    for inside, parent, what in [(export / "run", export, "an export"),
                                 (run / "checkpoints" / "x", run, "a training run")]:  # fmt: skip
        with pytest.raises(ValueError) as e:
            train_and_evaluate(tiny(), str(inside))
        assert str(e.value) == (
            f"workdir={inside} is inside {what} at {parent}; choose a directory outside it"
        ), str(e.value)
    # A path config key as ann train reads it: ~ expanded, a ~user of no user refused (it
    # was read as ./~nouser_ann/x).
    config = tiny(**{"data.data_dir": "~nouser_ann/x"})
    with pytest.raises(ValueError, match="^config key 'data.data_dir': ~nouser_ann: no user"):
        train_and_evaluate(config, str(tmp_path / "new"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "run"]
    assert [p.name for p in run.iterdir()] == ["config.json"]
    # ~ expanded in a copy: the caller's config was changed in place (its data_dir rewritten).
    config = tiny(**{"data.data_dir": "~/tfds"})
    with pytest.raises(ValueError, match="is inside an export"):
        train_and_evaluate(config, str(export / "run"))
    assert config.data.data_dir == "~/tfds"
    from ann.train import loop

    checked, _ = loop._check_arguments(config, str(tmp_path / "new"))
    assert checked.data.data_dir == os.path.expanduser("~/tfds") and checked is not config
    # A FrozenConfigDict, as a config store hands one: "FrozenConfigDict is immutable" (48a).
    import ml_collections

    checked, _ = loop._check_arguments(
        ml_collections.FrozenConfigDict(config), str(tmp_path / "new")
    )
    assert checked.data.data_dir == os.path.expanduser("~/tfds")
    assert not isinstance(checked, ml_collections.FrozenConfigDict)


def test_a_result_prints_its_summary_not_its_arrays(tmp_path):
    # A notebook cell ending in the result printed every parameter: 40 KB, 561 lines (48a).
    result = train_and_evaluate(tiny(total_steps=2, eval_every_steps=2), str(tmp_path))
    said = repr(result)
    assert said.startswith("Result(step=2, state=<TrainState: ") and len(said) < 2000, said
    assert "parameters>, eval_metrics={'val/loss': " in said
