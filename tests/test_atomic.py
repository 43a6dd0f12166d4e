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


def test_a_path_below_a_file_is_said_to_be_one_by_every_reader(tmp_path, monkeypatch):
    """A path below a regular file (`README.md/model`, `/etc/hostname/x`) was "does not exist"
    (the export loader, the registry's resolve, --workdir, init_from, a data dir), "cannot read
    it (Not a directory)" (--labels, --token_file), "is not a file" (--requests) or "no
    registry at PATH; ... `register` an export to create it there" (--registry): each now says
    that the file is one, so nothing can be below it, in the same words (`atomic.absent`)."""
    from ann import artifact, cli, registry
    from ann.data import sources
    from ann.monitor import jsonlines
    from ann.monitor.request_log import RequestLogError, read_requests
    from ann.serve import settings
    from ann.train import transfer

    afile = tmp_path / "afile"
    afile.write_text("")
    below = str(afile / "model")
    said = f"cannot exist: {afile} is a file, so nothing can be below it"
    assert atomic.absent(below) == said
    assert atomic.absent(str(afile / "a" / "b")) == said  # deeper too
    assert atomic.absent(str(afile) + os.sep) == said  # `FILE/` names a directory FILE
    assert atomic.absent(str(tmp_path / "nope" / "x")) == "does not exist"
    assert atomic.absent("/dev/null/x") == (
        "cannot exist: /dev/null is a character device, so nothing can be below it"
    )
    monkeypatch.chdir(tmp_path)  # a relative path is named as given
    assert atomic.absent("afile/model") == (
        "cannot exist: afile is a file, so nothing can be below it"
    )
    # Where a relative path was looked for (typed from another directory, it was named as
    # given and nothing more: trial 47a).
    assert atomic.absent("exports/x") == f"does not exist in the working directory, {tmp_path}"
    assert atomic.why_not_creatable(below) == f"cannot be created: {afile} is a file, so " + (
        "nothing can be below it"
    )

    def refusal(call, error=Exception) -> str:
        with pytest.raises(error) as e:
            call()
        return str(e.value)

    assert refusal(lambda: artifact.load(below), FileNotFoundError).startswith(f"{below} {said};")
    assert refusal(lambda: registry.resolve(below)).startswith(f"{below} {said};")
    assert refusal(lambda: registry.Registry(below).models()) == (  # in its argument's words
        f"no registry at {below}, which {said}; give root=DIR of an existing one, or `register` "
        "an export with root=DIR, a new or empty directory, to create one"
    )
    assert refusal(lambda: cli.check_trained_run(below, "best")) == (
        f"--workdir={below} {said}; give the directory of a trained run"
    )
    assert refusal(lambda: transfer.resolve(below)).startswith(
        f"config key 'init_from'='{below}': {below} {said}; use a run directory"
    )
    assert cli.missing_config(below) == f"--config={below} {said}"
    assert sources._what_is_in(below, "digits") == f", which {said}"
    wanted = "the late labels file"
    assert refusal(
        lambda: jsonlines.check_readable(below, f"--labels={below}", wanted, ValueError)
    ) == (f"--labels={below} {said}; give {wanted}")
    assert refusal(lambda: read_requests([below], "m", {}), RequestLogError).startswith(
        f"--requests={below} {said}; give the server's request log"
    )
    assert refusal(lambda: settings.read_token_file("token_file", below)) == (
        f"--token_file={below} {said}; give the file that holds the token"
    )
    # Its folder the file itself, or below it: it said "its folder F is a file, not a folder".
    fix = "give a file in a folder this user may write"
    for log in (f"{afile}/requests.jsonl", f"{below}/requests.jsonl"):
        assert settings.request_log_problem(log) == (
            f"--request_log={log} cannot be created: {afile} is a file, so nothing can be below "
            f"it; {fix}"
        )


def test_a_read_only_file_system_is_said_as_one_not_as_a_permission(tmp_path, monkeypatch):
    """On a `remount,ro` mount root's os.access fails too: the probe said "is not writable
    (permission denied)", and its callers "fix its permissions" (register, alias, train's
    --workdir, export's --out)."""
    import types

    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    monkeypatch.setattr(os, "statvfs", lambda path: types.SimpleNamespace(f_flag=os.ST_RDONLY))
    assert atomic.why_not_creatable(str(tmp_path)) == "is not writable (Read-only file system)"
    assert atomic.why_not_creatable(str(tmp_path / "new")) == (
        f"cannot be created in {tmp_path} (Read-only file system)"
    )
    monkeypatch.setattr(os, "statvfs", lambda path: types.SimpleNamespace(f_flag=0))
    assert atomic.why_not_creatable(str(tmp_path)) == "is not writable (permission denied)"


def test_staging_removes_what_a_killed_writer_left_and_keeps_a_live_ones(tmp_path):
    # `kill -9` of `ann report` left hidden .report-XXXX directories beside --out, and a
    # successful rerun kept them. `staging` holds its directory (flock) while it writes: the
    # next one removes the unheld, older ones of its prefix, and keeps a live writer's.
    import fcntl

    def made(name, age):
        path = tmp_path / name
        path.mkdir()
        (path / "index.html").write_text("half")
        when = os.path.getmtime(path) - age
        os.utime(path, (when, when))
        return path

    killed, live = made(".report-killed_1", 3600), made(".report-live_123", 3600)
    young = made(".report-young_12", 0)  # a writer between mkdtemp and its lock
    other = made(".export-killed_1", 3600)  # another command's: its own next run removes it
    mine = made(".report-templates", 3600)  # the user's own: not a name mkdtemp makes
    held = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with atomic.staging(str(tmp_path / "out"), ".report-") as tmp:
            assert os.path.isdir(tmp) and re.fullmatch(
                r"\.report-[a-z0-9_]{8}", os.path.basename(tmp)
            )
            os.rename(tmp, tmp_path / "out")
    finally:
        os.close(held)
    assert not killed.exists() and live.exists() and young.exists() and other.exists()
    assert mine.exists()
    # What the block raises removes its directory, naming the file's final path; the writer
    # that held .report-live has ended (its lock dropped), so this one removes it too.
    with pytest.raises(OSError) as e, atomic.staging(str(tmp_path / "o2"), ".report-") as tmp:
        raise OSError(28, "No space left on device", os.path.join(tmp, "index.html"))
    assert e.value.filename == str(tmp_path / "o2" / "index.html")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".export-killed_1", ".report-templates", ".report-young_12", "out"], left


def test_a_missing_path_names_the_entry_of_a_close_name_beside_it(tmp_path, monkeypatch):
    # `ann serve --model=exports/digits_cn`, a request log, a token file: a typo was said to
    # not exist, nothing more (only --config and, later, report's --workdir named the meant).
    (tmp_path / "exports" / "digits_cnn").mkdir(parents=True)
    (tmp_path / "requests.jsonl").write_text("")
    monkeypatch.chdir(tmp_path)
    assert atomic.absent("exports/digits_cn") == (
        f"does not exist in the working directory, {tmp_path} (did you mean exports/digits_cnn?)"
    )
    assert atomic.absent(str(tmp_path / "request.jsonl")) == (
        f"does not exist (did you mean {tmp_path / 'requests.jsonl'}?)"
    )
    assert atomic.absent(str(tmp_path / "zzz")) == "does not exist"  # nothing close
