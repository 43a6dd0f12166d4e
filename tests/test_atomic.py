"""ann.atomic: the one way ann replaces a file."""

import os
import pathlib
import re

import pytest

from ann import atomic

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "status.json"
    path.write_text("old")
    atomic.write_text(str(path), "new")
    atomic.write_bytes(str(tmp_path / "blob"), b"\x00\x01")
    assert path.read_text() == "new" and (tmp_path / "blob").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob", "status.json"]
    # Made as open() makes a file (umask applies), not mkstemp's owner-only 0600.
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic.replacing(str(path)) as f:
        f.write("half")
        raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_the_file_and_its_directory_are_synced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}"))
                        or real(fd))  # fmt: skip
    atomic.write_text(str(tmp_path / "a"), "x")
    assert synced[0].endswith(".tmp") and synced[-1] == str(tmp_path)


def test_no_module_replaces_a_file_by_hand():
    # Seven modules each had their own temp-file-and-rename (some without fsync).
    for path in (ROOT / "ann").rglob("*.py"):
        if path.name == "atomic.py":
            continue
        text = path.read_text()
        assert "os.replace(" not in text, path
        assert not re.search(r"""\+ ["']\.tmp["']""", text), path


def test_a_full_disk_names_the_file_and_leaves_the_old_one(tmp_path, monkeypatch):
    # A failed write or fsync names no file (ENOSPC, EDQUOT): the error names the file meant,
    # not its temporary, which is removed; the old file stays as it was.
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    path = tmp_path / "sweep.json"
    path.write_text("old")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:
        atomic.write_text(str(path), "new")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.json"]
