"""Registry: versions, aliases, tags, lineage, URIs, immutability, concurrent writers."""

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys

import pytest
from conftest import fill, one_line_error

from ann import artifact
from ann.registry import Registry, RegistryError, resolve


def test_versions_aliases_tags_and_uris(digits_export, tmp_path, monkeypatch):
    workdir, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    # One string made one alias per letter: c, h, a, m, p, i, o, n.
    with pytest.raises(TypeError, match=r"aliases=\['champion'\]"):
        registry.register(str(out), "digits", aliases="champion")
    # Other wrong types named the argument nowhere ("expected string or bytes-like object").
    for kwargs, said in [
        ({"aliases": [1]}, r"aliases\[0\] is 1: an alias is a string"),
        ({"aliases": b"champion"}, "aliases must be a list of strings, got bytes"),
        ({"aliases": None}, "aliases must be a list of strings, got NoneType"),
        ({"tags": ["a"]}, "tags must be a dict of strings, got list"),
        ({"tags": {"k": 1}}, r"tags\['k'\] = 1: tag keys and values are strings"),
    ]:
        with pytest.raises(TypeError, match=said):
            registry.register(str(out), "digits", **kwargs)
    assert not registry.exists()  # refused before anything was written
    v1 = registry.register(str(out), "digits", tags={"team": "vision"}, aliases=["champion"])
    v2 = registry.register(str(out), "digits", description="retrained", allow_duplicate=True)
    assert (v1.version, v2.version) == (1, 2)
    assert v1.aliases == ["champion"] and v1.tags == {"team": "vision"}
    assert v2.description == "retrained" and v2.uri == "models:/digits/2"
    # Lineage comes from the manifest: run, step, config, data, metrics, git.
    assert v1.lineage["source"]["workdir"] == str(workdir)
    assert v1.lineage["config"]["model"]["name"] == "cnn"
    assert v1.lineage["data"]["name"] == "digits"
    assert "eval/accuracy" in v1.lineage["metrics"] and "commit" in v1.lineage["git"]
    # The fit it serves with (`registry show` left it out), as an anomaly detector's threshold.
    assert v1.lineage["calibration"] == artifact.read_manifest(str(out))["calibration"]

    assert registry.resolve("models:/digits@champion").version == 1
    assert registry.resolve("models:/digits/latest").version == 2
    registry.set_alias("digits", "champion", 2)  # move it
    registry.set_alias("digits", "challenger", 1)
    assert registry.resolve("models:/digits@champion").version == 2
    assert registry.resolve("models:/digits@challenger").version == 1
    assert registry.get_version("digits", 1).aliases == ["challenger"]
    registry.delete_alias("digits", "challenger")
    with pytest.raises(RegistryError, match="has no alias 'challenger'; its aliases: champion=2"):
        registry.resolve("models:/digits@challenger")
    # Deleting it again lists the aliases as resolve does (it said only "has no alias").
    with pytest.raises(RegistryError, match="has no alias 'challenger'; its aliases: champion=2"):
        registry.delete_alias("digits", "challenger")
    with pytest.raises(RegistryError, match="'ghost'"):
        registry.delete_alias("ghost", "champion")
    registry.set_tag("digits", "stage", "prod", version=2)
    registry.set_tag("digits", "owner", "me")
    assert registry.get_version("digits", 2).tags == {"stage": "prod"}
    [listed] = registry.models()
    assert listed["name"] == "digits" and listed["latest"] == 2
    assert listed["aliases"] == ["champion=2"] and listed["tags"] == {"owner": "me"}
    assert [v.version for v in registry.versions("digits")] == [1, 2]

    for uri, message in [
        ("models:/nope/1", "no registered model 'nope'; registered: digits"),
        ("models:/digits/7", "has no version 7; versions: 1, 2"),
        ("models:/digits/x", "version 'x' is not a version number (1, 2, ...), 'latest' or"),
        # It said "'-1' is not an integer" of an integer.
        ("models:/digits/-1", "version '-1' is not a version number (1, 2, ...)"),
        # Full-width: int() reads it, and it resolved to version 2.
        ("models:/digits/２", "version '２' is not a version number (1, 2, ...)"),
        # Leading zeros: it resolved to version 1, where --version=01 is refused.
        ("models:/digits/01", "version '01' is not a version number (1, 2, ...), 'latest' or"),
        ("models:/digits/0002", "; write models:/digits/2"),
        ("models:/digits/0", "version '0' is not a version number (1, 2, ...)"),
        # Past SQLite's INTEGER: OverflowError, a traceback, from every command taking one.
        ("models:/digits/18446744073709551616", "has no version 18446744073709551616; versions"),
        ("digits/1", "is not models:/NAME/VERSION"),
    ]:
        with pytest.raises(RegistryError, match=re.escape(message)):
            registry.resolve(uri)
    with pytest.raises(RegistryError, match="has no version 9"):
        registry.set_alias("digits", "champion", 9)
    with pytest.raises(RegistryError, match="alias 'latest' is reserved"):
        registry.set_alias("digits", "latest", 1)
    # MLflow's reserved names: they shadowed models:/digits/latest and version numbers here
    # (`@LATEST` resolved to 1 while `/latest` was 3) and the mirror failed on them for good.
    for reserved in ("Latest", "LATEST", "v1", "V2"):
        with pytest.raises(RegistryError, match=f"alias '{reserved}' is reserved: MLflow keeps"):
            registry.set_alias("digits", reserved, 1)
    registry.set_alias("digits", "v1_candidate", 1)  # not a version: taken
    registry.delete_alias("digits", "v1_candidate")
    # One an older ann took is still deleted from the command line (its check refused it).
    with monkeypatch.context() as older:
        older.setattr(Registry, "_check_alias", staticmethod(lambda alias: None))
        registry.set_alias("digits", "v1", 1)
    result = _cli(tmp_path / "reg", "alias", "digits", "v1", "--delete")
    assert result.returncode == 0, result.stderr
    assert "v1" not in registry.get_version("digits", 1).aliases
    with pytest.raises(RegistryError, match="model name 'a/b'"):
        registry.register(str(out), "a/b")

    # Copied in, read-only, and loadable with the manifest hash recorded at registration.
    path = registry.resolve("models:/digits/1").path
    assert path == str(tmp_path / "reg" / "artifacts" / "digits" / "1")
    for p in [path, *(os.path.join(path, f) for f in os.listdir(path))]:
        assert not os.stat(p).st_mode & 0o222, p
    model = resolve("models:/digits@champion", registry.root).load()
    assert model.name == "digits_cnn"


def test_resolve_takes_registry_uris_and_export_directories(digits_export, tmp_path, monkeypatch):
    """The one resolve that serving, init_from and the command line share."""
    run, out = digits_export
    reg = tmp_path / "reg"
    monkeypatch.setenv("ANN_REGISTRY", str(reg))
    default = r"no registry at .*reg \(from \$ANN_REGISTRY\) for models:/digits/1; set \$ANN"
    with pytest.raises(RegistryError, match=default):
        resolve("models:/digits/1")  # $ANN_REGISTRY names none: say where it looked
    assert os.listdir(tmp_path) == []

    direct = resolve(str(out))
    assert (direct.path, direct.manifest_sha256, direct.version) == (str(out), None, None)
    assert direct.load().name == "digits_cnn"
    for spec, message in [
        (str(tmp_path / "nope"), "nope does not exist; give an export directory"),
        ("", "^an empty path names no export; give an export directory"),  # said " does not"
        (str(tmp_path), "holds no manifest.json; give an export directory"),
        (str(run), "is a training run, not an export; export it first \\(ann export --workdir="),
    ]:
        with pytest.raises(RegistryError, match=message):
            resolve(spec)
    with pytest.raises(TypeError) as e:  # it raised AttributeError: no 'startswith'
        resolve(None)
    assert str(e.value) == (
        "spec: expected an export directory or a registry URI as a str, got NoneType"
    )
    assert resolve(out).path == str(out)  # a pathlib.Path too

    Registry(str(reg)).register(str(out), "digits", aliases=["champion"])
    by_alias = resolve("models:/digits@champion")  # in $ANN_REGISTRY
    assert by_alias.version.uri == "models:/digits/1"
    assert by_alias.path == str(reg / "artifacts" / "digits" / "1")
    assert by_alias.manifest_sha256 == by_alias.version.manifest_sha256
    assert by_alias.load().name == "digits_cnn"
    assert resolve("models:/digits/1", str(reg)).path == by_alias.path
    with pytest.raises(RegistryError, match="'models:digits/1' is not models:/NAME/VERSION"):
        resolve("models:digits/1", str(reg))
    # A model's name alone (`ann serve --model=digits`): said "digits does not exist" only.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RegistryError) as e:
        resolve("digits")
    assert str(e.value).endswith(
        f"digits does not exist in the working directory, {tmp_path}; give an export directory "
        "(ann export) or a registry URI "
        "models:/NAME/VERSION, models:/NAME@ALIAS or models:/NAME/latest; for a registered "
        "model 'digits': models:/digits/latest"
    ), e.value
    with pytest.raises(RegistryError, match=f"no registry at {tmp_path / 'other'}; give"):
        resolve("models:/digits/1", str(tmp_path / "other"))


def test_registering_a_tampered_export_fails(digits_export, tmp_path):
    _, out = digits_export
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / artifact.WEIGHTS).write_bytes(b"not weights")
    registry = Registry(str(tmp_path / "reg"))
    with pytest.raises(artifact.IntegrityError, match="weights.safetensors has 11 bytes"):
        registry.register(str(copy), "digits")
    assert sorted(os.listdir(tmp_path)) == ["copy"]  # no registry, no staged copy left


@pytest.mark.parametrize("edit", ["input_dtype", "weights_dtype"])
def test_an_export_whose_manifest_is_not_its_function_is_refused_at_register(
    digits_export, tmp_path, edit
):
    """Every hash matched (manifest.json is not hashed; the weights' entry was rewritten), so
    `register` took an export whose manifest says int8 of a function taking uint8 (or weights
    of another dtype), and a server loading the version refused it. Now the loader's one line,
    before anything is registered."""
    from safetensors.numpy import load as load_st
    from safetensors.numpy import save

    _, out = digits_export
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / artifact.MANIFEST).read_text())
    if edit == "input_dtype":  # the trial's `sed -i 's/"uint8"/"int8"/'`
        manifest["inputs"]["image"]["dtype"] = "int8"
    else:
        weights = copy / artifact.WEIGHTS
        arrays = load_st(weights.read_bytes())
        weights.write_bytes(save({**arrays, "head/bias": arrays["head/bias"].astype("float16")}))
        manifest["files"][artifact.WEIGHTS] = {
            "sha256": artifact.sha256_file(str(weights)), "bytes": weights.stat().st_size
        }  # fmt: skip
    (copy / artifact.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(artifact.IntegrityError) as loaded:
        artifact.load(str(copy))
    with pytest.raises(artifact.IntegrityError) as registered:
        Registry(str(tmp_path / "reg")).register(str(copy), "digits")
    assert str(registered.value) == str(loaded.value)
    assert "but function.jaxexport takes" in str(loaded.value)
    assert sorted(os.listdir(tmp_path)) == ["copy"]  # no registry, no staged copy left
    result = _cli(tmp_path / "reg", "register", str(copy))
    assert one_line_error(result) == f"error: {loaded.value}"
    assert sorted(os.listdir(tmp_path)) == ["copy"]


def test_a_name_that_differs_only_in_case_is_refused(digits_export, tmp_path):
    # Digits and digits were two models, artifacts/Digits and artifacts/digits: one directory
    # on macOS or Windows.
    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    registry.register(str(out), "Digits")
    with pytest.raises(RegistryError) as e:
        registry.register(str(out), "digits", allow_duplicate=True)
    assert str(e.value).startswith(
        "model name 'digits' differs only in case from registered model 'Digits' (their files "
        "would share a directory on a case-insensitive file system); register it as 'Digits'"
    )
    assert sorted(os.listdir(tmp_path / "reg/artifacts")) == ["Digits"]  # nothing staged left
    assert registry.register(str(out), "Digits", allow_duplicate=True).version == 2


def test_register_reads_each_file_once(digits_export, tmp_path, monkeypatch):
    """Each listed file is hashed once, while it is copied (not again from the copy), and the
    copied function.jaxexport once more, to check the manifest against it (the weights'
    header alone is read for that; the other copied files are opened for their size alone)."""
    _, out = digits_export
    names, read = {}, []
    open_regular, read_fd = artifact._open_regular, artifact._read_fd

    def opening(path):
        fd, size = open_regular(path)
        names[fd] = os.path.basename(path)
        return fd, size

    def reading(fd, *args, **kwargs):
        read.append(names[fd])
        return read_fd(fd, *args, **kwargs)

    monkeypatch.setattr(artifact, "_open_regular", opening)
    monkeypatch.setattr(artifact, "_read_fd", reading)
    Registry(str(tmp_path / "reg")).register(str(out), "digits")
    listed = [artifact.MANIFEST, artifact.FUNCTION, artifact.WEIGHTS, artifact.REFERENCE]
    assert sorted(read) == sorted([*listed, artifact.FUNCTION])


def _register_concurrently(reg, out, *flags, n=4):
    """`n` processes registering `out` as digits at once; returns their CompletedProcess-likes."""
    cmd = [sys.executable, "-m", "ann.registry", f"--registry={reg}", "register", str(out)]
    procs = [
        subprocess.Popen([*cmd, "--name=digits", *flags], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(n)
    ]  # fmt: skip
    for p in procs:
        p.stdout_text, p.stderr_text = p.communicate(timeout=120)
    return procs


def test_concurrent_writers_get_distinct_versions(digits_export, tmp_path):
    _, out = digits_export
    reg = tmp_path / "reg"
    # No registry yet: the writers also race to create it.
    procs = _register_concurrently(reg, out, "--allow_duplicate", n=5)
    assert [p.returncode for p in procs] == [0] * 5, [p.stderr_text[-500:] for p in procs]
    uris = sorted(p.stdout_text.split(" as ")[1].split()[0] for p in procs)
    assert uris == [f"models:/digits/{v}" for v in (1, 2, 3, 4, 5)]
    registry = Registry(str(reg))
    versions = registry.versions("digits")
    assert [v.version for v in versions] == [1, 2, 3, 4, 5]
    for v in versions:
        artifact.verify(v.path, v.manifest_sha256)


def test_two_commands_recording_mlflow_aliases_at_once_keep_both(digits_export, tmp_path):
    # The record of the aliases an MLflow server holds (a model tag) was read, changed and set
    # in two transactions: a second command's change between them was lost, and a later
    # alias deletion then left that alias in MLflow unnamed.
    import threading

    from ann.registry import mlflow_mirror

    _, out = digits_export
    Registry(str(tmp_path / "reg")).register(str(out), "digits")
    uri = "http://mlflow.example:5000"
    first_read, second_done = threading.Event(), threading.Event()

    def first(held):
        first_read.set()
        second_done.wait(2)  # the second command runs now, unless the first holds the lock
        held["champion"] = 1

    def second():
        first_read.wait(10)
        mlflow_mirror._record_aliases(
            Registry(str(tmp_path / "reg")), "digits", uri, lambda held: held.update(canary=1),
            start=True,
        )  # fmt: skip
        second_done.set()

    thread = threading.Thread(target=second)
    thread.start()
    mlflow_mirror._record_aliases(Registry(str(tmp_path / "reg")), "digits", uri, first, True)
    thread.join(30)
    held = mlflow_mirror.mlflow_aliases(Registry(str(tmp_path / "reg")), "digits", uri)
    assert held == {"canary": 1, "champion": 1}


def test_an_export_registered_again_is_refused_naming_its_version(digits_export, tmp_path):
    """The same export (same manifest sha256) under the same name: one line naming the version
    it is already, nothing changed; --allow_duplicate makes a new version anyway; another name
    is another model."""
    _, out = digits_export
    reg = tmp_path / "reg"
    # Writers racing with the same export: one version, the others refused (checked inside the
    # transaction that allocates the version, not only before copying).
    procs = _register_concurrently(reg, out, n=4)
    assert sorted(p.returncode for p in procs) == [0, 1, 1, 1], [p.stderr_text for p in procs]
    assert [v.version for v in Registry(str(reg)).versions("digits")] == [1]
    before = _tree(reg, mtimes=False)
    refused = _cli(reg, "register", str(out), "--name=digits", "--alias=champion", "--tag=a=b")
    assert one_line_error(refused) == (
        f"error: {out} is already registered as digits version 1 (the same manifest sha256); "
        "point an alias at it (alias digits ALIAS 1), or give --allow_duplicate to register it "
        "as a new version anyway"
    )
    assert _tree(reg, mtimes=False) == before  # no version, alias, tag or artifact
    again = _cli(reg, "register", str(out), "--name=digits", "--allow_duplicate")
    assert again.returncode == 0 and "as models:/digits/2" in again.stdout, again.stderr
    registry = Registry(str(reg))
    with pytest.raises(RegistryError, match="already registered as digits versions 1, 2 "):
        registry.register(str(out), "digits")
    assert registry.register(str(out), "digits_copy").uri == "models:/digits_copy/1"
    # Under another name from the command line: allowed, with a note (a --name mistyped made a
    # second model without a word).
    other = _cli(reg, "register", str(out), "--name=digitz")
    assert other.returncode == 0, other.stderr
    assert other.stderr == (
        "note: the same export (manifest sha256) is also models:/digits/1, models:/digits/2, "
        f"models:/digits_copy/1; if --name was mistyped, delete this one (ann registry "
        f"--registry={reg} delete digitz 1)\n"
    ), other.stderr
    # The same checkpoint exported again: only the manifest's `created` differs, so its sha256
    # did, and it was registered as a new version (the re-run script the check is for).
    again = tmp_path / "again"
    shutil.copytree(out, again)
    manifest = json.loads((again / "manifest.json").read_text())
    # Its time, ann's checkout state (an untracked file made git.dirty true) and how the step
    # was chosen (--step=latest of a run whose best is its latest) differ: still the same.
    source = {**manifest["source"], "selected_by": {"step": "latest"}}
    git = {**(manifest.get("git") or {}), "dirty": True}
    for changed in ({"created": "2030-01-01"}, {"source": source, "git": git}):
        (again / "manifest.json").write_text(json.dumps({**manifest, **changed}))
        with pytest.raises(RegistryError) as e:
            registry.register(str(again), "digits")
        assert str(e.value) == (  # in Python's words: it named the command's flag
            f"{again} is already registered as digits versions 1, 2 (a manifest that differs "
            "only in how it was exported: its created time, git state or how the step was "
            "chosen); point an alias at it (set_alias('digits', ALIAS, 2)), or give "
            "allow_duplicate=True to register it as a new version anyway"
        )
    # Another step of the run is another version.
    (again / "manifest.json").write_text(
        json.dumps({**manifest, "source": {**manifest["source"], "step": 1}})
    )
    assert registry.register(str(again), "digits").version == 3


def test_writers_racing_to_create_a_registry_all_create_it(tmp_path, monkeypatch):
    # The switch to WAL took a lock SQLite's busy timeout did not wait for: one of two
    # registers into a new registry failed, calling it "not an ann registry database
    # (database is locked)" (2 of 65 command-line races; 37 of 200 races of `_create`).
    # Threads racing no longer lose that race on this machine (0 of 200 against the old code,
    # at 60 s of the suite's time), so the lost race is staged: another writer creates the
    # registry while this one switches to WAL, which then fails as SQLite failed it.
    import threading

    import ann.registry.core

    connect = sqlite3.connect
    lost = []

    class Loser:
        """A connection whose first switch to WAL loses the race to another writer."""

        def __init__(self, *args, **kwargs):
            self._db = connect(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self._db, name)

        def execute(self, sql, *args):
            if sql.startswith("PRAGMA journal_mode=") and not lost:
                lost.append(sql)
                with monkeypatch.context() as m:
                    m.setattr(ann.registry.core.sqlite3, "connect", connect)
                    Registry(str(tmp_path / "staged"))._create()  # the winner
                raise sqlite3.OperationalError("database is locked")
            return self._db.execute(sql, *args)

    with monkeypatch.context() as m:
        m.setattr(ann.registry.core.sqlite3, "connect", Loser)
        Registry(str(tmp_path / "staged"))._create()
    assert lost, "the staged race never switched to WAL"
    with Registry(str(tmp_path / "staged"))._connect() as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    # And real races, threads creating registries at once (fewer: the staged race is the
    # one that reproduces the failure).
    failed = []
    for i in range(40):
        root = str(tmp_path / f"reg{i}")
        ready = threading.Barrier(6)

        def create(root=root, ready=ready):
            registry = Registry(root)
            ready.wait()
            try:
                registry._create()
            except RegistryError as e:
                failed.append(str(e))

        threads = [threading.Thread(target=create) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failed == []


def test_a_registry_another_process_is_creating_is_registered_into(digits_export, tmp_path):
    # Two registers into a new registry: one found the other's fresh, table-less registry.db
    # in its duplicate check ("no such table: model_versions") and failed (2 of 15 pairs).
    import sqlite3

    _, out = digits_export
    (tmp_path / "reg").mkdir()
    sqlite3.connect(tmp_path / "reg" / "registry.db").close()  # the file, not yet the tables
    assert Registry(str(tmp_path / "reg")).register(str(out), "digits").version == 1


def _parity_export(out, target, keep=False):
    """A whole export of other tensors, as README's parity export: the digits CNN's function
    and weights, giving p_odd float32[-1] (its probability of an odd digit); `keep`: beside
    the digits' own outputs. An edited manifest would not do: `register` checks it against
    the function."""
    import jax

    from ann import export as export_lib

    manifest = artifact.read_manifest(str(out))
    function = artifact.read_verified(str(out), manifest, artifact.FUNCTION)
    digits = jax.export.deserialize(bytearray(function))
    weights = artifact.load_weights(str(out))
    (batch,) = jax.export.symbolic_shape("batch")
    parity = jax.export.export(jax.jit(lambda w, x: _with_parity(digits.call(w, x), keep)))(
        {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in weights.items()},
        {"image": jax.ShapeDtypeStruct((batch, 8, 8, 1), "uint8")},
    )
    manifest = {k: v for k, v in manifest.items() if k not in ("files", "reference")}
    manifest["outputs"] = {
        **(manifest["outputs"] if keep else {}),
        "p_odd": {"dtype": "float32", "shape": [-1]},
    }
    export_lib.write(str(target), manifest, bytes(parity.serialize()), weights)
    return target


def _with_parity(outputs, keep):
    p_odd = outputs["probabilities"][:, 1::2].sum(-1)
    return {**outputs, "p_odd": p_odd} if keep else {"p_odd": p_odd}


def test_a_version_with_other_tensors_is_refused_unless_allowed(digits_export, tmp_path):
    # README's parity export registered as a version of another model (other inputs, other
    # outputs): accepted without a word, breaking models:/NAME@ALIAS clients when it moved.
    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    registry.register(str(out), "digits")
    other = _parity_export(out, tmp_path / "other")
    before = _tree(tmp_path / "reg", mtimes=False)
    with pytest.raises(RegistryError) as e:
        registry.register(str(other), "digits")
    assert str(e.value).startswith(f"{other} has other tensors than digits version 1 (outputs ")
    assert str(e.value).endswith(  # in Python's words: it said --name, --allow_signature_change
        "-> p_odd float32 [-1]): clients of models:/digits would not fit it; register it under "
        "another name, or give allow_signature_change=True if they are ready"
    ), str(e.value)
    refused = _cli(tmp_path / "reg", "register", str(other), "--name=digits")
    assert one_line_error(refused).endswith(  # the command's, in its flags
        "register it under another --name, or give --allow_signature_change if they are ready"
    )
    assert _tree(tmp_path / "reg", mtimes=False) == before
    assert registry.register(str(other), "digits", allow_signature_change=True).version == 2
    assert registry.register(str(other), "parity").version == 1  # another model: fine
    # An output added, the others kept: no client of them breaks unless it reads every output
    # (it said "would not fit it").
    wider = _parity_export(out, tmp_path / "wider", keep=True)
    with pytest.raises(RegistryError) as e:
        registry.register(str(wider), "parity")
    assert str(e.value).endswith(
        "(outputs p_odd float32 [-1] -> label int32 [-1], p_odd float32 [-1], probabilities "
        "float32 [-1, 10]): outputs added, label int32 [-1], probabilities float32 [-1, 10]: a "
        "client of models:/parity that reads every output may not expect them; register it "
        "under another name, or give allow_signature_change=True if they are ready"
    ), str(e.value)


def test_a_refused_register_creates_nothing(digits_export, tmp_path):
    """A register refused for its export or for the directory it would register into leaves
    no registry, database, artifacts directory or parent behind, nor changes an existing one."""
    _, out = digits_export
    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    (tampered / artifact.WEIGHTS).write_bytes(b"not weights")
    new = tmp_path / "new"
    result = _cli(new / "reg", "register", str(tampered))
    assert "weights.safetensors has 11 bytes" in one_line_error(result)
    with pytest.raises(artifact.IntegrityError):
        Registry(str(new / "reg")).register(str(tampered), "digits")
    assert not new.exists()

    empty = tmp_path / "empty"  # a directory the user made for it
    empty.mkdir()
    assert _cli(empty, "register", str(tampered)).returncode == 1
    assert os.listdir(empty) == []

    foreign = tmp_path / "foreign"  # a registry.db that is not ann's
    foreign.mkdir()
    sqlite3.connect(foreign / "registry.db").executescript("CREATE TABLE notes (text TEXT);")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "registry.db").write_bytes(b"not a database")
    for directory, message in [
        (foreign, "is not an ann registry database (it holds the table notes)"),
        (tmp_path / "garbage", "is not an ann registry database"),
    ]:
        before = _tree(directory)
        assert message in one_line_error(_cli(directory, "register", str(out)))
        assert _tree(directory) == before, directory

    reg = tmp_path / "reg"  # an existing registry
    Registry(str(reg)).register(str(out), "digits")
    before = _tree(reg, mtimes=False)
    assert _cli(reg, "register", str(tampered), "--name=digits").returncode == 1
    assert _tree(reg, mtimes=False) == before


def test_a_deleted_version_is_gone_and_its_number_never_comes_back(
    digits_export, tmp_path, monkeypatch
):
    """`delete_version` (operators removed versions with rm -rf, which left rows naming missing
    files): files and tags go, every read skips it, an aliased version is refused, and its
    number is never given to another version (the next is not MAX + 1 of what is left)."""
    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    for _ in range(3):
        registry.register(str(out), "digits", allow_duplicate=True)
    registry.set_alias("digits", "champion", 2)
    registry.set_tag("digits", "stage", "old", version=3)
    with pytest.raises(RegistryError) as e:
        registry.delete_version("digits", 2)
    assert str(e.value) == (  # in Python's words (it said the command's `alias ... --delete`)
        "models:/digits/2 is aliased (champion): point the alias at another version "
        "(set_alias('digits', 'champion', VERSION)) or delete it (delete_alias('digits', "
        "'champion')) first"
    )
    assert one_line_error(_cli(tmp_path / "reg", "delete", "digits", "2")) == (
        "error: models:/digits/2 is aliased (champion): point the alias at another version "
        "(alias digits champion VERSION) or delete it (alias digits champion --delete) first"
    )
    assert os.path.isdir(tmp_path / "reg/artifacts/digits/2")  # refused: nothing changed
    # A transaction that fails after the files were moved aside puts them back.
    from ann.registry import core

    def fail():
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(core.time, "time", fail)
        with pytest.raises(OSError, match="disk full"):
            registry.delete_version("digits", 3)
    assert sorted(os.listdir(tmp_path / "reg/artifacts/digits")) == ["1", "2", "3"]
    assert registry.get_version("digits", 3).tags == {"stage": "old"}
    deleted = registry.delete_version("digits", 3)
    assert deleted.uri == "models:/digits/3" and deleted.tags == {"stage": "old"}
    assert sorted(os.listdir(tmp_path / "reg/artifacts/digits")) == ["1", "2"]
    assert [v.version for v in registry.versions("digits")] == [1, 2]
    assert registry.resolve("models:/digits/latest").version == 2
    assert registry.models()[0]["latest"] == 2
    for act in (
        lambda: registry.resolve("models:/digits/3"),
        lambda: registry.set_alias("digits", "champion", 3),
        lambda: registry.set_tag("digits", "k", "v", version=3),
        lambda: registry.delete_version("digits", 3),
    ):
        with pytest.raises(RegistryError, match="^model 'digits' deleted its version 3; versions"):
            act()
    # The next version is 4, and a duplicate is judged against the versions that are left.
    assert registry.register(str(out), "digits", allow_duplicate=True).version == 4
    # Removing the files after the commit fails: deleted all the same, and the line says what
    # is left to remove.
    with monkeypatch.context() as m:
        m.setattr(core.shutil, "rmtree", lambda path: fail())
        with pytest.raises(RegistryError) as e:
            registry.delete_version("digits", 1)
    aside = tmp_path / "reg/artifacts/digits/.deleted-1"
    assert str(e.value) == (
        f"models:/digits/1 is deleted, but removing its files failed (disk full); remove "
        f"{aside} by hand"
    )
    shutil.rmtree(aside)
    with pytest.raises(RegistryError, match=r"already registered as digits versions 2, 4 \("):
        registry.register(str(out), "digits")
    db = sqlite3.connect(tmp_path / "reg/registry.db")
    assert db.execute("SELECT COUNT(*) FROM tags WHERE version = 3").fetchone() == (0,)
    # The same on the command line; a version that is not a number is refused before opening.
    done = _cli(tmp_path / "reg", "delete", "digits", "4")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "deleted models:/digits/4 (its files and tags; version 4 is never given again)"
    )
    assert one_line_error(_cli(tmp_path / "reg", "delete", "digits", "four")) == (
        "error: delete: VERSION 'four' must be a version number >= 1"
    )
    assert "error: models:/digits/2 is aliased (champion)" in one_line_error(
        _cli(tmp_path / "reg", "delete", "digits", "2")
    )


def test_cli(digits_export, tmp_path):
    _, out = digits_export
    reg = f"--registry={tmp_path / 'reg'}"

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "ann.registry", reg, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert "models:/digits/1 @champion" in cli("register", str(out), "--name=digits",
                                                "--alias=champion").stdout  # fmt: skip
    assert cli("resolve", "models:/digits@champion").stdout.strip().endswith("artifacts/digits/1")
    assert "digits  latest version 1  aliases [champion=1]" in cli("list").stdout
    # Metrics to 4 decimals, as a run's and an export's lines show them (it was 4 digits: .963)
    assert cli("list").stdout.strip().endswith("aliases [champion=1]")  # no "tags {}"
    assert cli("tag", "digits", "team", "vision").returncode == 0  # the model's own tag
    assert "aliases [champion=1]  tags [team=vision]" in cli("list").stdout
    assert cli("tag", "digits", "stage", "prod", "--version=1").returncode == 0
    versions = cli("versions", "digits").stdout
    assert "aliases [champion]  tags [stage=prod]  run " in versions, versions  # tags: show only
    shown = versions.split("step ", 1)[1].split()[1:]
    assert shown and all(re.fullmatch(r"[a-z_/0-9]+=-?\d+\.\d{4}", m) for m in shown), " ".join(
        shown
    )
    bad = cli("resolve", "models:/digits@nope")
    assert bad.returncode == 1 and "error: model 'digits' has no alias 'nope'" in bad.stderr
    # What an operator does by hand, which resolve printed a path for (and a Docker build then
    # baked): a modified manifest, then the version's files removed.
    version = tmp_path / "reg/artifacts/digits/1"
    os.chmod(version, 0o755)
    os.chmod(version / "manifest.json", 0o644)
    with open(version / "manifest.json", "a") as f:
        f.write(" ")
    bad = cli("resolve", "models:/digits@champion")
    assert bad.returncode == 1 and bad.stdout == "", bad.stdout
    assert "manifest.json was modified" in one_line_error(bad)
    # Emptied by hand, its directory left: taken for the whole version (listed as any other,
    # an alias accepted, the export's registration refused as a duplicate).
    for f in version.iterdir():
        f.unlink()
    assert cli("versions", "digits").stdout.rstrip().endswith(f"FILES GONE from {version}")
    assert cli("list").stdout.rstrip().endswith("FILES GONE: version 1")
    assert "are gone (removed outside the registry)" in one_line_error(
        cli("resolve", "models:/digits@champion")
    )
    shutil.rmtree(version)
    line = one_line_error(cli("resolve", "models:/digits@champion"))
    assert line.startswith(
        "error: models:/digits@champion is digits version 1, whose files at "
    ) and line.endswith(
        "are gone (removed outside the registry); point the alias at another "
        "version (ann registry alias digits ALIAS N), register the export again, or delete the "
        "version (ann registry delete digits 1)"
    )
    # `versions` listed it as any other: resolving was the first sign its files were gone.
    listed = cli("versions", "digits").stdout
    assert listed.rstrip().endswith(f"FILES GONE from {version}"), listed
    # Named by number, there is no alias to move (it said to move one all the same).
    line = one_line_error(cli("resolve", "models:/digits/1"))
    assert line.endswith("(removed outside the registry); register the export again, or delete "
                         "the version (ann registry delete digits 1)"), line  # fmt: skip
    # An alias onto it was accepted; registering the export again was refused as "already
    # registered as digits version 1; point an alias at it", the advice leading nowhere.
    line = one_line_error(cli("alias", "digits", "canary", "1"))
    assert "error: digits version 1's files at " in line and line.endswith(
        "are gone (removed outside the registry), so an alias would resolve to nothing; register "
        "the export again (a new version), or delete it (ann registry delete digits 1)"
    ), line
    again = cli("register", str(out), "--name=digits", "--alias=champion")
    assert again.returncode == 0 and "models:/digits/2 @champion" in again.stdout, again.stderr
    assert cli("resolve", "models:/digits@champion").stdout.strip().endswith("digits/2")
    unknown = cli("frobnicate")
    assert unknown.returncode == 1 and "unknown registry command 'frobnicate'" in unknown.stderr


def _cli(registry_dir, *args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "ann.registry", f"--registry={registry_dir}", *args],
        capture_output=True, text=True, timeout=60, **kwargs,
    )  # fmt: skip


def _tree(root, mtimes=True):
    """Every path under `root` with its size, mtime (unless `mtimes` is False: a directory's
    changes when a staged copy inside it comes and goes) and content hash."""
    snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            digest = artifact.sha256_file(path) if os.path.isfile(path) else None
            size = None if os.path.isdir(path) else st.st_size
            snapshot[os.path.relpath(path, root)] = (size, st.st_mtime_ns * mtimes, digest)
    return snapshot


READ_COMMANDS = [
    ("list",),
    ("versions", "digits"),
    ("resolve", "models:/digits@champion"),
    ("show", "models:/digits/1"),
]


def test_commands_on_a_missing_registry_create_nothing(tmp_path):
    missing = tmp_path / "nope" / "reg"
    commands = [
        *READ_COMMANDS,
        ("alias", "digits", "champion", "1"),
        ("alias", "digits", "champion", "--delete"),
        ("tag", "digits", "stage", "prod"),
        ("mirror", "models:/digits/1", "--mlflow_uri=http://127.0.0.1:1"),
    ]
    for command in commands:
        result = _cli(missing, *command)
        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr == f"error: no registry at {missing}; give --registry=DIR (or " \
            "$ANN_REGISTRY) of an existing one, or `register` an export to create it " \
            "there\n"  # fmt: skip
        assert os.listdir(tmp_path) == [], command
    # The library refuses the same way, in its arguments' words: opening one touches nothing.
    with pytest.raises(RegistryError) as e:
        Registry(str(missing)).models()
    assert str(e.value) == (
        f"no registry at {missing}; give root=DIR of an existing one, or `register` an export "
        "to create it there"
    )
    assert os.listdir(tmp_path) == []
    # A file given as the registry: said so, as `register` says it (it was "no registry at").
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(RegistryError) as e:
        Registry(str(afile)).models()
    assert str(e.value) == f"root='{afile}' is a file, not a registry directory"


def test_registry_messages_name_where_the_directory_came_from(tmp_path):
    # A directory from $ANN_REGISTRY was named as "--registry=DIR", and `list` on a directory
    # holding other files suggested `register`, which that directory then refused.
    notreg, afile = tmp_path / "notreg", tmp_path / "afile"
    notreg.mkdir()
    (notreg / "notes.txt").write_text("")
    afile.write_text("x")
    fix = "give --registry=DIR (or $ANN_REGISTRY) of an existing one, or `register` an export"
    env = {k: v for k, v in os.environ.items() if k != "ANN_REGISTRY"}
    for flag, variable, said in [
        ([], notreg, f"no registry at {notreg} (from $ANN_REGISTRY), which holds other files "
         f"(notes.txt); {fix} with --registry=DIR, a new or empty directory, to create one"),
        ([f"--registry={notreg}"], None, f"no registry at {notreg}, which holds other files "
         f"(notes.txt); {fix} with --registry=DIR, a new or empty directory, to create one"),
        ([], afile, f"{afile} (from $ANN_REGISTRY) is a file, not a registry directory"),
        ([], None, f"no registry at {tmp_path / 'registry'} (the default: $ANN_REGISTRY is not "
         f"set); {fix} to create it there"),
        # A flag's path as typed (they said "no registry at /abs/path/nope").
        (["--registry=nope"], None, f"no registry at nope; {fix} to create it there"),
        (["--registry=notreg"], None, "no registry at notreg, which holds other files "
         f"(notes.txt); {fix} with --registry=DIR, a new or empty directory, to create one"),
        (["--registry=afile"], None, "--registry=afile is a file, not a registry directory"),
    ]:  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-m", "ann.registry", *flag, "list"], capture_output=True,
            text=True, timeout=60, cwd=tmp_path,
            env={**env, "ANN_REGISTRY": str(variable)} if variable else env,
        )  # fmt: skip
        assert one_line_error(result) == f"error: {said}"
    # What the first suggested, refused there, is what it said.
    said = f"{notreg} (from $ANN_REGISTRY) holds other files (notes.txt); a new registry goes"
    with pytest.raises(RegistryError, match=re.escape(said)):
        Registry(str(notreg), "$ANN_REGISTRY")._check_root()
    assert sorted(os.listdir(tmp_path)) == ["afile", "notreg"]


def test_registry_messages_from_python_name_its_arguments_not_the_flags(
    digits_export, tmp_path, monkeypatch
):
    """From Python, `Registry(root)` spoke in `ann registry`'s flags (trial 42c M2):
    `Registry("afile")` said `--registry=afile is a file`, a directory of other files `(e.g.
    --registry=registry)`, a second `register` of an export `give --allow_duplicate`. Its
    messages name its arguments and methods; the command's keep its flags, word for word."""
    _, out = digits_export
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("")
    new_one = "a new registry goes in a new or empty directory of its own"
    for root, python, command in [
        ("afile", "root='afile' is a file, not a registry directory",
         "--registry=afile is a file, not a registry directory"),
        ("other", f"root='other' holds other files (notes.txt); {new_one} (e.g. root='registry')",
         f"--registry=other holds other files (notes.txt); {new_one} (e.g. --registry=registry)"),
    ]:  # fmt: skip
        with pytest.raises(RegistryError) as e:
            Registry(root).register(str(out), "digits")
        assert str(e.value) == python
        refused = _cli(root, "register", str(out), "--name=digits", cwd=tmp_path)
        assert one_line_error(refused) == f"error: {command}"
    registry = Registry(tmp_path / "reg")
    registry.register(out, "digits")
    with pytest.raises(RegistryError) as e:
        registry.register(out, "digits")
    assert str(e.value) == (
        f"{out} is already registered as digits version 1 (the same manifest sha256); point an "
        "alias at it (set_alias('digits', ALIAS, 1)), or give allow_duplicate=True to register "
        "it as a new version anyway"
    )
    assert sorted(os.listdir(tmp_path)) == ["afile", "other", "reg"]


def test_registry_database_messages_name_the_registry_as_typed(tmp_path, monkeypatch):
    """registry.db's own errors named it by its absolute path ("/abs/cwd/foreign/registry.db is
    not an ann registry database"), where every other registry message names a --registry path
    as typed ("no registry at foreign"), and one from $ANN_REGISTRY with where it came from."""
    from ann import atomic

    monkeypatch.chdir(tmp_path)
    (tmp_path / "foreign").mkdir()
    db = sqlite3.connect(tmp_path / "foreign" / "registry.db")
    db.executescript("CREATE TABLE notes (text TEXT);")
    db.close()
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "registry.db").write_bytes(b"not a database")
    foreign = "is not an ann registry database (it holds the table notes); give another --registry"
    for registry, said in [
        (Registry.at("foreign"), f"foreign/registry.db {foreign}"),
        (Registry("foreign"), f"foreign/registry.db {foreign[: -len('--registry')]}root"),
        (Registry(str(tmp_path / "foreign"), "$ANN_REGISTRY"),
         f"{tmp_path}/foreign/registry.db (from $ANN_REGISTRY) {foreign}"),
        (Registry("garbage"),
         "garbage/registry.db is not an ann registry database (file is not a database)"),
    ]:  # fmt: skip
        with pytest.raises(RegistryError) as e:
            registry._check_root()  # `register`'s check
        assert str(e.value) == said
    with pytest.raises(RegistryError) as e:
        Registry("foreign").models()  # a reading command's
    assert str(e.value) == (
        "foreign/registry.db cannot be used as an ann registry database (no such table: "
        "registered_models)"
    )
    (tmp_path / "reg" / "artifacts").mkdir(parents=True)
    monkeypatch.setattr(atomic, "why_not_creatable", lambda path: "is not writable")
    with pytest.raises(RegistryError) as e:
        Registry.at("reg")._check_writable()  # a command's
    assert str(e.value) == (
        "registry reg: reg is not writable; fix its permissions, or use another --registry"
    )
    with pytest.raises(RegistryError) as e:
        Registry("reg")._check_writable()  # Python's
    assert str(e.value) == (
        "registry reg: reg is not writable; fix its permissions, or use another root"
    )


def test_read_only_commands_change_nothing(digits_export, tmp_path):
    _, out = digits_export
    reg = tmp_path / "reg"
    Registry(str(reg)).register(str(out), "digits", aliases=["champion"])
    before = _tree(reg)
    for command in READ_COMMANDS:
        result = _cli(reg, *command)
        assert result.returncode == 0, (command, result.stderr)
    assert _tree(reg) == before
    # A registry whose artifacts directory is gone: reading does not make it again.
    for dirpath, _, _ in os.walk(reg / "artifacts"):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(reg / "artifacts")
    before = _tree(reg)
    for command in READ_COMMANDS[:2]:
        assert _cli(reg, *command).returncode == 0, command
    assert _tree(reg) == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["frobnicate"], "unknown registry command 'frobnicate' (commands: register, list,"),
        (["alias", "digits", "champion"], "alias takes NAME ALIAS VERSION"),
        ([], "give a registry command (usage: ann registry"),  # the cause first, then usage
        (["register"], "register takes EXPORT_DIR, got nothing (usage:"),
        (["alias", "digits", "champion", "x"], "alias: VERSION 'x' must be a version number >= 1"),
        (["alias", "digits", "champion", "0"], "alias: VERSION '0' must be a version number"),
        # Full-width and superscript digits: str.isdigit() said yes, and int() read '３' as 3.
        (["alias", "digits", "champion", "３"], "alias: VERSION '３' must be a version number"),
        (["alias", "digits", "champion", "³"], "alias: VERSION '³' must be a version number"),
        (["alias", "digits", "latest", "1"], "alias 'latest' is reserved: MLflow keeps"),
        (["alias", "digits", "LATEST", "1"], "alias 'LATEST' is reserved: MLflow keeps"),
        (["alias", "digits", "V2", "1"], "alias 'V2' is reserved"),
        (
            ["tag", "digits", "k", "v", "--version=0"],
            "--version=0 must be an integer in [1, 2147483647]; e.g. --version=1",
        ),
        (["tag", "digits", "", "v"], "tag key '' must be 1 to 250 characters"),
        (["tag", "digits", "k", "v" * 5001], "the value has 5001 characters, more than 5000"),
        (["register", "EXPORT", "--name=a/b"], "model name 'a/b' must be letters"),
        (["register", "EXPORT", "--alias=9x"], "alias '9x' must start with a letter"),
        (["register", "EXPORT", "--tag=novalue"], "--tag='novalue' must be KEY=VALUE"),
        (["register", "EXPORT", "--description=" + "d" * 5001], "--description has 5001"),
        (["list", "--name=digits"], "--name is for `register` only; drop it from `list`"),
        (["list", "--version=1"], "--version is for `tag` only"),
        (["resolve", "models:/x/1", "--delete"], "--delete is for `alias` only"),
        # The flag named before the count (it said "delete takes NAME VERSION, got digits").
        (["delete", "--version=2", "digits"], "--version is for `tag` only; drop it from `delete`"),
        (["delete", "digits", "0"], "delete: VERSION '0' must be a version number >= 1"),
        (["delete", "digits", "３"], "delete: VERSION '３' must be a version number >= 1"),
        # Leading zeros, refused as --version=01 is (models:/digits/01 resolved to version 1).
        (["delete", "digits", "01"], "delete: VERSION '01' must be a version number >= 1; write 1"),
        (["alias", "digits", "champion", "007"], "alias: VERSION '007' must be a version number"),
        (["resolve", "models:/digits/01"], "version '01' is not a version number (1, 2, ...)"),
        # It was ignored (exit 0), even a bad one, as `alias` refuses it and other flags are.
        (
            ["list", "--mlflow_uri=ftp://x"],
            "--mlflow_uri is for `register`, `alias`, `tag`, `delete` and `mirror` only; "
            "drop it from `list`",
        ),
        # The URI it likely meant: a name alone, without a version, without the scheme.
        (
            ["resolve", "digits/1"],
            "model URI 'digits/1' is not models:/NAME/VERSION, "
            "models:/NAME@ALIAS or models:/NAME/latest; did you mean models:/digits/1?",
        ),
        (["resolve", "digits"], "did you mean models:/digits/latest?"),
        (["show", "models:/digits"], "did you mean models:/digits/latest?"),
        (["resolve", "models:digits@prod"], "did you mean models:/digits@prod?"),
        (["mirror", "models:/digits/1", "--mlflow_uri="], "mirror: give the MLflow tracking"),
        (["register", "EXPORT", "--mlflow_uri=http://h:99999"], "has a port outside 1-65535"),
        (["register", "EXPORT", "--mlflow_uri=ftp://h"], "has the scheme 'ftp', not one of"),
        (["register", "EXPORT", "--mlflow_uri=http://"], "names no host"),
        (
            ["register", "EXPORT", "--mlflow_uri=http://a..b:5000"],
            "has the host a..b, which is not a host name",
        ),
        (["register", "EXPORT", "--registry="], "--registry is empty"),
    ],
)
def test_flags_are_checked_before_anything_starts(tmp_path, args, message):
    """Each bad flag or argument: exit 1, one line naming it, and no registry created (not even
    for `register`, whose export here does not exist: the flags are checked first)."""
    reg = tmp_path / "reg"
    env = {**os.environ, "ANN_MLFLOW_URI": ""}
    result = _cli(reg, *fill(args, {"EXPORT": tmp_path / "export"}), env=env)
    assert message in one_line_error(result)
    assert not reg.exists()


def test_an_export_directory_given_for_a_uri_is_named_as_one(tmp_path):
    # `resolve exports/digits_cnn` said only "is not models:/NAME/VERSION, ...".
    export = tmp_path / "exports" / "digits_cnn"
    export.mkdir(parents=True)
    (export / "manifest.json").write_text("{}")
    result = _cli(tmp_path / "reg", "resolve", str(export))
    assert one_line_error(result).endswith(
        f"; resolve takes a registered version's URI, and {export} is an export directory "
        f"(register it: ann registry register {export} --name=NAME)"
    )


def test_a_repeated_alias_or_tag_says_it_is_so_already(digits_export, tmp_path, capsys):
    """A repeat that changes nothing in ann's registry said "models:/digits@champion ->
    models:/digits/1" and "tagged digits: stage=prod" again, as if it had changed something
    (the MLflow line beside it says "already"). The commands' own functions, in this process."""
    from types import SimpleNamespace

    from ann.registry import __main__ as registry_cli

    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    registry.register(str(out), "digits", aliases=["champion"])
    registry.register(str(out), "digits", allow_duplicate=True)
    capsys.readouterr()
    for version in ("1", "2", "2"):
        registry_cli._alias(
            registry, SimpleNamespace(delete=False), ["digits", "champion", version], ""
        )
    for version in (None, None, 1, 1):
        registry_cli._tag(
            registry, SimpleNamespace(version=version), ["digits", "stage", "prod"], ""
        )
    assert capsys.readouterr().out.splitlines() == [
        "models:/digits@champion points at models:/digits/1 already",
        "models:/digits@champion -> models:/digits/2",
        "models:/digits@champion points at models:/digits/2 already",
        # The model's own tag said so: a forgotten --version tagged the model (trial 46b).
        "tagged digits: stage=prod (the model's tag; --version=N tags version N)",
        "digits has stage=prod already (the model's tag; --version=N tags version N)",
        "tagged digits/1: stage=prod",
        "digits/1 has stage=prod already",
    ]
    assert registry.resolve("models:/digits@champion").version == 2


def test_a_store_uri_that_names_no_store_is_refused_naming_the_fix():
    """`--mlflow_uri=sqlite:///` was accepted: SQLAlchemy reads it (and `sqlite://`,
    `sqlite:///:memory:`) as an in-memory store, so the mirror went nowhere and its mapping was
    recorded all the same; `sqlite://mlflow.db` and `file:` failed in MLflow, after ann's
    registry had changed. Checked in this process, as `check_command` calls it."""
    from ann.registry.mlflow_mirror import check_mlflow_uri

    give = "give one, e.g. sqlite:///mlflow.db (relative to the working directory)"
    for uri, said in [
        ("sqlite:///", f"has no database path; {give}"),
        ("sqlite://", f"has no database path; {give}"),
        ("sqlite:", f"has no database path; {give}"),
        ("sqlite+pysqlite:///", f"has no database path; {give}"),
        ("sqlite:///:memory:", f"is an in-memory store, gone when the command exits; {give}"),
        ("sqlite:///runs/", "names a directory, not a database file; give a file in it, e.g. "
         "sqlite:///runs/mlflow.db"),
        ("sqlite://mlflow.db", "names a host (mlflow.db), which a SQLite URI has none of; give "
         "sqlite:///mlflow.db"),
        # It offered sqlite:///mlflow.db/, refused in turn as a directory.
        ("sqlite://mlflow.db/", "names a host (mlflow.db), which a SQLite URI has none of; "
         "give sqlite:///mlflow.db"),
        ("file:", "has no store directory; give one, e.g. file:///PATH/mlruns"),
        ("file:///", "has no store directory; give one, e.g. file:///PATH/mlruns"),
    ]:  # fmt: skip
        with pytest.raises(RegistryError) as e:
            check_mlflow_uri(uri)
        assert str(e.value) == f"--mlflow_uri={uri!r} {said}", uri
    # The README's list names `databricks` (the default profile), refused as "the scheme ''".
    for uri in ("sqlite:///mlflow.db", "sqlite:////tmp/m.db", "file:///tmp/mlruns", "databricks",
                "databricks://profile"):  # fmt: skip
        check_mlflow_uri(uri)


def test_a_tracking_uri_mlflow_would_misread_is_refused_naming_its_spelling(tmp_path):
    """`sqlite:mlflow.db` was accepted and failed in SQLAlchemy ("Could not parse") after ann's
    registry changed, its retry repeating the URI; `mysql://` and `postgresql:///` (no
    database) were accepted; `SQLITE:///m.db` was taken for sqlite (no SQLAlchemy dialect)
    while `DATABRICKS` was refused as "the scheme ''"."""
    from ann.registry.mlflow_mirror import check_mlflow_uri

    lower = "which MLflow reads only in lower case"
    for uri, said in [
        ("sqlite:mlflow.db", "has no '//' after 'sqlite:'; give sqlite:///mlflow.db"),
        ("sqlite:/tmp/m.db", "has no '//' after 'sqlite:'; give sqlite:////tmp/m.db"),
        ("mysql:h/db", "has no '//' after 'mysql:'; give mysql://h/db"),
        ("mysql://", "names no database; give one, e.g. mysql://USER@HOST:PORT/mlflow"),
        ("postgresql:///", "names no database; give one, e.g. postgresql://USER@HOST:PORT/mlflow"),
        ("mssql://h:1433/", "names no database; give one, e.g. mssql://USER@HOST:PORT/mlflow"),
        # A database's bad port was told to give an http(s) tracking server.
        ("postgresql://h:99999/db", "has a port outside 1-65535; give a port in 1-65535 (or "
         "none, for the scheme's default)"),
        ("DATABRICKS", f"has the scheme 'DATABRICKS', {lower}; give databricks"),
        ("SQLITE:///m.db", f"has the scheme 'SQLITE', {lower}; give sqlite:///m.db"),
        ("FILE:///x", f"has the scheme 'FILE', {lower}; give file:///x"),
        # The URI offered is one ann takes: it offered sqlite:mlflow.db, refused in turn.
        ("SQLITE:mlflow.db", f"has the scheme 'SQLITE', {lower}, and has no '//' after "
         "'sqlite:'; give sqlite:///mlflow.db"),
    ]:  # fmt: skip
        with pytest.raises(RegistryError) as e:
            check_mlflow_uri(uri)
        assert str(e.value) == f"--mlflow_uri={uri!r} {said}", uri
    # A secret in a query was accepted, then printed in errors and retry commands (a
    # fresh-user trial): refused, its values shown as ***.
    with pytest.raises(RegistryError) as e:
        check_mlflow_uri("http://127.0.0.1:9/?password=pw")
    assert str(e.value).startswith(
        "--mlflow_uri='http://127.0.0.1:9/?password=***' has a query or fragment, which "
        "MLflow's client appends its API paths after; give http://127.0.0.1:9/ ("
    ), str(e.value)
    # http(s) is read in any case, and needs no port (80, 443), as URLs go; a database's query
    # is its driver's (sslmode).
    for uri in ("HTTP://h:5000", "http://h", "mysql://u@h:3306/mlflow", "postgresql:///mlflow",
                "http://h/mlflow", "postgresql://u@h/db?sslmode=require"):  # fmt: skip
        check_mlflow_uri(uri)
    # Refused before the registry is opened: nothing is made.
    refused = _cli(tmp_path / "reg", "register", str(tmp_path), "--mlflow_uri=sqlite:mlflow.db")
    assert one_line_error(refused) == (
        "error: --mlflow_uri='sqlite:mlflow.db' has no '//' after 'sqlite:'; give "
        "sqlite:///mlflow.db"
    )
    assert not (tmp_path / "reg").exists()


def test_a_registry_uri_or_a_bare_sqlite_file_is_refused_with_a_hint(tmp_path):
    """`--mlflow_uri=databricks-uc` (MLflow's Unity Catalog registry URI, a local directory as a
    tracking URI) and `--mlflow_uri=mlflow.db` were refused as "has the scheme ''", naming no
    fix for either."""
    from ann.registry.mlflow_mirror import check_mlflow_uri

    schemes = "http, https, file, sqlite, postgresql, mysql, mssql, databricks"
    uc = "(MLflow's registry for it is Unity Catalog, databricks-uc)"
    for uri, said in [
        ("databricks-uc", f"is MLflow's Unity Catalog registry URI, not a tracking URI; give "
         f"databricks {uc}"),
        ("databricks-uc://prof", f"is MLflow's Unity Catalog registry URI, not a tracking URI; "
         f"give databricks://prof {uc}"),
        ("mlflow.db", f"has no scheme (one of {schemes}); give the SQLite file as "
         "sqlite:///mlflow.db"),
        ("/tmp/m.sqlite", f"has no scheme (one of {schemes}); give the SQLite file as "
         "sqlite:////tmp/m.sqlite"),
    ]:  # fmt: skip
        with pytest.raises(RegistryError) as e:
            check_mlflow_uri(uri)
        assert str(e.value) == f"--mlflow_uri={uri!r} {said}", uri
    refused = _cli(tmp_path / "reg", "register", str(tmp_path), "--mlflow_uri=mlflow.db")
    assert one_line_error(refused).endswith("give the SQLite file as sqlite:///mlflow.db")
    assert not (tmp_path / "reg").exists()


def test_a_copy_out_of_the_registry_is_served_as_its_version(digits_export, tmp_path):
    # The Dockerfile bakes `ann registry resolve`'s directory into the image: served from
    # there it was 'digits_cnn/<sha prefix>', not 'digits/1' as `--model=models:/digits/1`
    # serves it, and the sha256 recorded at register was not checked.
    from ann.serve.repository import load_model

    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    path = registry.register(str(out), "digits").path
    baked = tmp_path / "image" / "model"
    shutil.copytree(path, baked)
    served = load_model(str(baked), None)
    assert (served.name, served.version) == ("digits", "1")
    plain = load_model(str(out), None)  # an export that was never registered: as before
    assert (plain.name, plain.version) == ("digits_cnn", plain.model.manifest_sha256[:12])
    os.chmod(baked / "manifest.json", 0o644)
    manifest = json.loads((baked / "manifest.json").read_text())
    (baked / "manifest.json").write_text(json.dumps({**manifest, "name": "other"}))
    message = "registry.json and manifest.json disagree .*; copy the version"
    with pytest.raises(artifact.IntegrityError, match=message):
        load_model(str(baked), None)


def test_a_served_versions_number_comes_from_the_registry_not_its_look(
    digits_export, tmp_path, monkeypatch
):
    # An export's version is its manifest hash's first 12 hex digits; one all digits was
    # taken for a version number: its config said version 12345678901, the leading zero lost.
    from ann.registry import spec
    from ann.serve.model_config import model_config
    from ann.serve.repository import load_model
    from ann.serve.settings import Settings

    _, out = digits_export
    monkeypatch.setattr(spec, "export_version", lambda sha256: "012345678901")
    plain = load_model(str(out), None)
    assert plain.version == "012345678901"
    assert "version_policy" not in model_config(plain, Settings())
    assert plain.registry_version is None
    path = Registry(str(tmp_path / "reg")).register(str(out), "digits").path
    shutil.copytree(path, tmp_path / "copy")  # a copy out of the registry: its version still
    for served in (load_model("models:/digits/1", str(tmp_path / "reg")),
                   load_model(str(tmp_path / "copy"), None)):  # fmt: skip
        assert (served.version, served.registry_version) == ("1", 1)
        policy = model_config(served, Settings())["version_policy"]
        assert policy == {"specific": {"versions": [1]}}


def _writable_copy(out, tmp_path):
    """A registered version of `out` copied out of the registry, writable: (the copy, its
    registry.json, that file's record)."""
    path = Registry(str(tmp_path / "reg")).register(str(out), "digits").path
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    os.chmod(copy, 0o755)
    record_file = copy / "registry.json"
    os.chmod(record_file, 0o644)
    return copy, record_file, json.loads(record_file.read_text())


def test_a_copys_registry_json_is_held_to_the_registrys_rules(digits_export, tmp_path):
    # A copy's registry.json was trusted: "name": "x/../../../zz" made `ann report` write
    # report-x/../../../zz-1 three directories above the working directory and `ann serve`
    # serve a model no /v2/models/{name} URL reaches; "version" -3, true or "name" "" were
    # taken as they came (report-digits--3, "digits version True", report--1).
    from ann.serve.repository import load_model

    copy, record_file, good = _writable_copy(digits_export[1], tmp_path)
    workdir = tmp_path / "sand" / "a" / "b"
    workdir.mkdir(parents=True)
    name_rule = "letters, digits, '_', '.' or '-' (at most 128), starting with a letter or digit"
    again = "copy the version again from the registry (ann registry resolve)"
    for field, value, said in [
        ("name", "x/../../../zz", f'"x/../../../zz" is not a model name ({name_rule})'),
        ("name", "../../etc", f'"../../etc" is not a model name ({name_rule})'),
        ("name", "", f'"" is not a model name ({name_rule})'),
        ("name", "digits\n", f'"digits\\n" is not a model name ({name_rule})'),
        ("version", -3, "-3 is not a version number (1, 2, ...)"),
        ("version", True, "true is not a version number (1, 2, ...)"),
        ("version", "1", '"1" is not a version number (1, 2, ...)'),
        ("manifest_sha256", "../x", '"../x" is not a sha256 (64 hex digits)'),
    ]:
        record_file.write_text(json.dumps({**good, field: value}))
        line = f'error: {record_file}: "{field}" {said}; {again}'
        with pytest.raises(RegistryError) as e:
            load_model(str(copy), None)  # ann serve --model=COPY
        assert f"error: {e.value}" == line, (field, value)
        report = subprocess.run(
            [sys.executable, "-m", "ann.report", f"--model={copy}", "--split=test"],
            cwd=workdir, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert one_line_error(report) == line, (field, value)
        assert sorted(p.name for p in (tmp_path / "sand").rglob("*")) == ["a", "b"]
    record_file.write_text(json.dumps(good))
    served = load_model(str(copy), None)
    assert (served.name, served.version) == ("digits", "1")


def test_a_copys_registry_json_says_what_is_wrong_in_json_terms(digits_export, tmp_path):
    """registry.json's messages showed Python's reprs (`"name" None` for a missing or null name,
    `"version" True`); an upper-case manifest_sha256 was refused as "not a sha256 (64 hex
    digits)"; a wrong but well-formed one said "manifest.json was modified after it was
    registered" though registry.json was the file edited, and only after JAX's import and the
    model's load (2.7 s where the other checks take 0.3 s)."""
    from ann.serve.repository import load_model

    copy, record_file, good = _writable_copy(digits_export[1], tmp_path)
    again = "copy the version again from the registry (ann registry resolve)"
    name_rule = "letters, digits, '_', '.' or '-' (at most 128), starting with a letter or digit"
    for record, said in [
        ({k: v for k, v in good.items() if k != "name"}, '"name" is missing'),
        ({**good, "name": None}, f'"name" null is not a model name ({name_rule})'),
        ({**good, "version": None}, '"version" null is not a version number (1, 2, ...)'),
    ]:
        record_file.write_text(json.dumps(record))
        with pytest.raises(RegistryError) as e:
            load_model(str(copy), None)
        assert str(e.value) == f"{record_file}: {said}; {again}"
    record_file.write_text(json.dumps({**good, "manifest_sha256": good["manifest_sha256"].upper()}))
    served = load_model(str(copy), None)
    assert (served.name, served.version) == ("digits", "1")
    wrong = "0" * 64
    record_file.write_text(json.dumps({**good, "manifest_sha256": wrong}))
    # Said before JAX is imported: `resolve` checks it, as `ann report` and `ann serve` call it.
    script = (
        "import sys\nfrom ann.registry import resolve\ntry:\n    resolve(sys.argv[1])\n"
        "except ValueError as e:\n    print(e)\nprint('jax' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(copy)], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.splitlines() == [
        f"{copy}: registry.json and manifest.json disagree (registry.json records digits "
        f"version 1 with the manifest sha256 {wrong}, manifest.json's is "
        f"{good['manifest_sha256']}): one of them was modified after the copy was made; {again}",
        "False",
    ], result.stderr


def test_a_registry_on_a_read_only_file_system_is_refused_naming_the_flag(
    digits_export, tmp_path, monkeypatch
):
    """A registry not made yet under a read-only directory said "[Errno 30] Read-only file
    system: '/ro/.ann-registry-incoming-...'", naming neither --registry nor a fix. The
    file system is simulated: every directory made under ro/ fails as on a read-only mount."""
    import errno

    _, out = digits_export
    ro = tmp_path / "ro"
    ro.mkdir()
    mkdir = os.mkdir

    def read_only(path, *args, **kw):
        if os.fspath(path).startswith(str(ro)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return mkdir(path, *args, **kw)

    monkeypatch.setattr(os, "mkdir", read_only)
    with pytest.raises(RegistryError) as e:
        Registry.at(str(ro / "reg")).register(str(out), "d")  # the command's
    assert str(e.value) == (
        f"--registry={ro / 'reg'} cannot be created in {ro} (Read-only file system); choose "
        "another --registry"
    )
    with pytest.raises(RegistryError) as e:
        Registry(str(ro / "reg")).register(str(out), "d")  # Python's: its argument
    assert str(e.value) == (
        f"root='{ro / 'reg'}' cannot be created in {ro} (Read-only file system); choose "
        "another root"
    )
    assert os.listdir(ro) == []


def test_a_registry_that_cannot_be_written_is_named_for_every_write(
    digits_export, tmp_path, monkeypatch
):
    """It said "[Errno 13] Permission denied: .../.ann-registry-incoming-0ff6..." (register),
    "cannot be used as an ann registry database (attempt to write a readonly database)" (alias,
    tag). Root ignores permission bits, as the tests run: the probe answers as for a chmod -w."""
    from ann import atomic

    _, out = digits_export
    registry = Registry.at(str(tmp_path / "reg"))  # as a command opens it
    registry.register(str(out), "digits")
    denied = "is not writable (permission denied)"
    monkeypatch.setattr(atomic, "why_not_creatable", lambda path: denied)
    said = f"registry {tmp_path / 'reg'}: {tmp_path / 'reg'} {denied}; "
    for write in (
        lambda: registry.register(str(out), "digits", allow_duplicate=True),
        lambda: registry.set_alias("digits", "champion", 1),
        lambda: registry.delete_version("digits", 1),
    ):
        with pytest.raises(RegistryError) as e:
            write()
        assert str(e.value) == said + "fix its permissions, or use another --registry"
    assert [v.version for v in registry.versions("digits")] == [1]


def test_a_first_register_the_storage_refuses_leaves_no_registry(digits_export, tmp_path):
    # A full disk under the first register's version left an empty but valid registry.db (and
    # artifacts/): the next command took the directory for a registry. Now nothing is left
    # where the register made the directory, and an empty directory of the user's stays empty.
    import errno

    _, export = digits_export

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    for root, existed in ((tmp_path / "new" / "reg", False), (tmp_path / "mine", True)):
        if existed:
            root.mkdir()
        real = os.fsync
        os.fsync = full  # registry.json's atomic write, after the database was made
        try:
            with pytest.raises(OSError, match="No space left"):
                Registry(str(root)).register(str(export), name="digits")
        finally:
            os.fsync = real
        if existed:
            assert list(root.iterdir()) == []
        else:
            assert not (tmp_path / "new").exists()
        assert not Registry(str(root)).exists()


@pytest.mark.parametrize("loss", ["removed", "emptied", "tables dropped"])
def test_a_lost_database_beside_artifacts_is_refused_and_nothing_is_written(
    digits_export, tmp_path, loss
):
    """With registry.db removed (or emptied) beside artifacts/, `register` started a new
    database and wrote its version 1 over artifacts/d/1, another model ("registered ... as
    models:/d/1"), and `list` said there was no registry, suggesting `register` there."""
    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    registry.register(str(out), "d")
    if loss == "removed":
        os.remove(registry.db_path)
    elif loss == "emptied":
        open(registry.db_path, "w").close()
    else:
        db = sqlite3.connect(registry.db_path)
        for table in ("aliases", "tags", "model_versions", "registered_models"):
            db.execute(f"DROP TABLE {table}")
        db.commit()
        db.close()
    before = _tree(tmp_path / "reg")
    state = {
        "removed": "no registry.db",
        "emptied": "an empty registry.db",
        "tables dropped": "a registry.db without its tables",
    }[loss]
    said = (  # in Python's words: it said --registry=... of Registry(root)
        f"root='{tmp_path / 'reg'}' holds artifacts/ (the versions of d) but {state}, which "
        "numbers them; restore registry.db from a backup (a new one would give their numbers to "
        "other models), or give another root"
    )
    with pytest.raises(RegistryError, match=re.escape(said)):
        registry.register(str(out), "d", allow_duplicate=True)
    assert _tree(tmp_path / "reg") == before
    if loss != "tables dropped":  # the readers' own line for a database without tables
        with pytest.raises(RegistryError, match=re.escape(said)):
            registry.models()


def test_a_version_directory_the_database_does_not_know_is_never_written_over(
    digits_export, tmp_path
):
    """registry.db restored from a backup older than version 2: the next `register` got
    number 2 again and replaced artifacts/d/2's files (another model's) with its own."""
    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    registry.register(str(out), "d")
    shutil.copy(registry.db_path, tmp_path / "backup.db")
    registry.register(str(out), "d", allow_duplicate=True)
    two = _tree(tmp_path / "reg" / "artifacts" / "d" / "2")
    shutil.copy(tmp_path / "backup.db", registry.db_path)  # knows version 1 only
    assert registry.register(str(out), "d", allow_duplicate=True).version == 3
    assert _tree(tmp_path / "reg" / "artifacts" / "d" / "2") == two
    assert [v.version for v in registry.versions("d")] == [1, 3]


def test_an_alias_is_not_pointed_at_a_version_the_loader_refuses(
    digits_export, tmp_path, monkeypatch
):
    """A version an older ann registered unchecked (its manifest says int8 of a function taking
    uint8) took an alias (champion): servers resolving it then refused the model. `alias` runs
    `register`'s check now; the alias stays where it was."""
    _, out = digits_export
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = copy / artifact.MANIFEST
    manifest.write_text(manifest.read_text().replace('"uint8"', '"int8"'))
    registry = Registry(str(tmp_path / "reg"))
    registry.register(str(out), "digits", aliases=["champion"])
    with monkeypatch.context() as older:  # the register of an ann before the check
        older.setattr(artifact, "check_function", lambda *args, **kwargs: None)
        mv = registry.register(str(copy), "digits", allow_signature_change=True)
    with pytest.raises(RegistryError) as e:
        registry.set_alias("digits", "champion", 2)
    assert str(e.value).startswith(
        f"models:/digits/2 would not load ({mv.path}/manifest.json: inputs.image says "
        "int8[-1, 8, 8, 1], but function.jaxexport takes uint8[batch, 8, 8, 1]"
    )
    assert str(e.value).endswith(
        "re-export the run), so alias 'champion' was not pointed at it: point it at another "
        "version, or register a new export of the run and point it at that"
    ), str(e.value)
    assert registry.resolve("models:/digits@champion").version == 1
    registry.set_alias("digits", "previous", 1)  # a loadable version is aliased as before


def test_a_damaged_version_in_the_registry_is_named_as_the_registrys_copy(digits_export, tmp_path):
    """A registered version's file damaged in the registry was told "export it again from its
    run (ann export), or copy it again from the registry" (it is the registry's copy); and
    with weights.safetensors gone, `alias` said it "cannot be deserialized (No such file ...)".
    A missing listed file is said missing, and the fix is the registry's."""
    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    path = registry.register(str(out), "digits").path
    fix = (
        "the registry's own copy of this version is damaged: register the export again (a new "
        f"version), or restore {path} from a backup"
    )
    for name in (artifact.WEIGHTS, artifact.REFERENCE):  # every listed file, not only weights
        os.chmod(path, 0o755)
        os.rename(os.path.join(path, name), tmp_path / name)
        with pytest.raises(RegistryError) as e:
            registry.set_alias("digits", "champion", 1)
        missing = f"{path}/{name} is missing or unreadable (No such file or directory); the "
        assert f"{missing}export is incomplete: {fix})" in str(e.value), str(e.value)
        with pytest.raises(artifact.IntegrityError, match=re.escape(fix)):
            resolve("models:/digits/1", registry=str(tmp_path / "reg")).load()
        os.rename(tmp_path / name, os.path.join(path, name))
    weights = os.path.join(path, artifact.WEIGHTS)
    os.chmod(weights, 0o644)
    with open(weights, "ab") as f:
        f.write(b"x")
    with pytest.raises(RegistryError, match=re.escape(f"(truncated or replaced?): {fix})")):
        registry.set_alias("digits", "champion", 1)
    # A byte changed in place (same size): its sha256 refuses the alias too (it was pointed,
    # and every server resolving it refused the model), and registering the export again, the
    # fix said, makes a new version (it was refused as "already registered as version 1").
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) - 1)
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(RegistryError, match=re.escape("was modified: sha256 ")):
        registry.set_alias("digits", "champion", 1)
    assert registry.register(str(out), "digits").version == 2
    registry.set_alias("digits", "champion", 2)
    # A copy taken out of the registry is still told to copy it again from the registry.
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    with pytest.raises(artifact.IntegrityError, match=re.escape(artifact.AGAIN)):
        artifact.load(str(copy))


def test_list_and_versions_name_the_version_directories_the_database_does_not_list(
    digits_export, tmp_path, capsys
):
    """After a registry.db restored from an older backup, `list` and `versions` said nothing of
    artifacts/d/2 and 3, on disk but not in it (trial 41d 11). One warning line now names them
    and the fix; registering one again (what it says) lists it under a new number."""
    from types import SimpleNamespace

    from ann.registry import __main__ as registry_cli

    _, out = digits_export
    registry = Registry.at(str(tmp_path / "reg"))  # as a command opens it
    registry.register(str(out), "d")
    capsys.readouterr()
    registry_cli._list(registry, SimpleNamespace(), [], "")
    registry_cli._versions(registry, SimpleNamespace(), ["d"], "")
    assert capsys.readouterr().err == ""  # nothing to say: the common case
    shutil.copy(registry.db_path, tmp_path / "backup.db")
    for _ in range(2):
        registry.register(str(out), "d", allow_duplicate=True)
    shutil.copy(tmp_path / "backup.db", registry.db_path)  # knows version 1 only
    capsys.readouterr()
    registry_cli._list(registry, SimpleNamespace(), [], "")
    registry_cli._versions(registry, SimpleNamespace(), ["d"], "")
    said = capsys.readouterr()
    warning = (
        f"warning: {tmp_path / 'reg' / 'artifacts'} holds version directories registry.db does "
        "not list: d/2, d/3 (a registry.db restored from an older backup, or a register stopped "
        "before its commit; never reused: a new register gets a higher number); restore the "
        "registry.db that lists them, or register each again (ann registry register DIR "
        "--name=NAME: a new number) and remove the directory"
    )
    assert said.err.splitlines() == [warning, warning], said.err
    assert "d/2" not in said.out and said.out.startswith("d  latest version 1 ")
    two = tmp_path / "reg" / "artifacts" / "d" / "2"
    assert registry.register(str(two), "d", allow_duplicate=True).version == 4
    listed = {"d": [v.version for v in registry.versions("d")]}
    assert listed == {"d": [1, 4]} and "d/2, d/3 " in registry.unlisted_line(listed)


def _full_disk(monkeypatch):
    """The registry's file system full, as on a full tmpfs: SQLite cannot size its shared
    memory file (registry.db-shm) for a connection that is not immutable ("disk I/O error",
    SQLITE_IOERR_SHMSIZE), and the file system has no block free."""
    import types

    connect = sqlite3.connect

    class Full:
        def __init__(self, db):
            self.db = db

        def execute(self, *args):
            error = sqlite3.OperationalError("disk I/O error")
            error.sqlite_errorname = "SQLITE_IOERR_SHMSIZE"
            raise error

        def close(self):
            self.db.close()

    def full(database, *args, **kwargs):
        db = connect(database, *args, **kwargs)
        return db if "immutable=1" in str(database) else Full(db)

    free = types.SimpleNamespace(f_bavail=0, f_bfree=0, f_frsize=4096, f_flag=0)
    monkeypatch.setattr(sqlite3, "connect", full)
    monkeypatch.setattr(os, "statvfs", lambda path: free)


def test_a_full_disk_leaves_reads_working_and_writes_say_it(digits_export, tmp_path, monkeypatch):
    """On a full disk every registry command, `versions` and `list` too, said "registry.db
    cannot be used as an ann registry database (disk I/O error)"."""
    import errno

    from ann import cli

    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    registry.register(str(out), "d")
    _full_disk(monkeypatch)
    assert [v.version for v in registry.versions("d")] == [1]
    assert [m["name"] for m in registry.models()] == ["d"]
    assert resolve("models:/d/1", str(tmp_path / "reg")).version.version == 1
    for write in (
        lambda: registry.set_alias("d", "prod", 1),
        lambda: registry.set_tag("d", "k", "v"),
        lambda: registry.delete_version("d", 1),
    ):
        with pytest.raises(OSError) as e:
            write()
        assert (e.value.errno, e.value.filename) == (errno.ENOSPC, registry.db_path)
        assert "no space left on device" in cli.storage_error(e.value)


def test_a_failed_write_of_a_version_names_its_directory(digits_export, tmp_path, monkeypatch):
    """A full disk under a register named REGISTRY/artifacts/weights.safetensors, a path that
    never exists; it names the file in the version's directory, artifacts/NAME/VERSION."""
    import errno

    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    registry.register(str(out), "d")
    copy = artifact.copy_verified

    def full(directory, manifest, name, dest):
        if name == "weights.safetensors":
            path = os.path.join(dest, name)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        copy(directory, manifest, name, dest)

    monkeypatch.setattr(artifact, "copy_verified", full)
    with pytest.raises(OSError) as e:
        registry.register(str(out), "d", allow_duplicate=True)
    assert e.value.filename == str(tmp_path / "reg/artifacts/d/2/weights.safetensors")
    monkeypatch.undo()

    def no_fsync(fd):  # registry.json's write, once the version has its number
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_fsync)
    with pytest.raises(OSError) as e:
        registry.register(str(out), "d", allow_duplicate=True)
    assert os.path.dirname(e.value.filename) == str(tmp_path / "reg/artifacts/d/2")
    monkeypatch.undo()
    assert [v.version for v in registry.versions("d")] == [1]


@pytest.mark.parametrize(
    "field, value", [("version", 2), ("name", "other"), ("manifest_sha256", "0" * 64)]
)
def test_an_edited_registry_json_in_the_registry_is_refused_at_resolve(
    digits_export, tmp_path, field, value
):
    """Version 1's registry.json edited to "version": 2 passed `resolve` (its output goes into
    images), and a copy of that directory was then served as digits/2."""
    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    path = registry.register(str(out), "digits").path
    record_file = os.path.join(path, "registry.json")
    record = json.loads(open(record_file).read())
    os.chmod(path, 0o755)
    os.chmod(record_file, 0o644)
    with open(record_file, "w") as f:
        json.dump({**record, field: value}, f)
    said = (
        f'{record_file}: "{field}" is {json.dumps(value)}, but the registry\'s models:/digits/1 '
        f"has {json.dumps(record[field])}: the file was modified after register; write back "
        f"{json.dumps(record)}"
    )
    with pytest.raises(RegistryError, match=re.escape(said)):
        resolve("models:/digits/1", str(tmp_path / "reg"))
    assert said in one_line_error(_cli(tmp_path / "reg", "resolve", "models:/digits/1"))


def test_a_registry_on_a_read_only_mount_is_not_told_to_fix_permissions(
    digits_export, tmp_path, monkeypatch
):
    """On a `remount,ro` file system register, alias, tag and delete said "is not writable
    (permission denied); fix its permissions"."""
    from ann import atomic

    _, out = digits_export
    registry = Registry.at(str(tmp_path / "reg"))  # as a command opens it
    registry.register(str(out), "digits")
    read_only = f"is not writable ({atomic.READ_ONLY})"
    monkeypatch.setattr(atomic, "why_not_creatable", lambda path: read_only)
    with pytest.raises(RegistryError) as e:
        registry.set_alias("digits", "champion", 1)
    assert str(e.value) == (
        f"registry {tmp_path / 'reg'}: {tmp_path / 'reg'} is not writable (Read-only file "
        "system); use another --registry on a writable file system"
    )


def test_a_registry_on_a_full_disk_is_not_told_to_fix_permissions(
    digits_export, tmp_path, monkeypatch
):
    """Where a full disk refuses even a directory (ext4), the write probe's answer "cannot be
    created in REG (No space left on device)" was followed by "fix its permissions"."""
    import errno
    import tempfile

    _, out = digits_export
    registry = Registry.at(str(tmp_path / "reg"))  # as a command opens it
    registry.register(str(out), "digits")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    with pytest.raises(RegistryError) as e:
        registry.set_alias("digits", "champion", 1)
    assert str(e.value) == (
        f"registry {tmp_path / 'reg'}: {tmp_path / 'reg'} cannot be written (No space left on "
        "device); free space on its file system, or use another --registry"
    )


def test_a_registry_from_python_names_a_wrong_argument(digits_export, tmp_path):
    """`Registry(None)` raised os's "expected str, bytes or os.PathLike object, not NoneType",
    and a version 1.5 was read as version 1 (get_version, set_alias, delete_version)."""
    _, out = digits_export
    with pytest.raises(TypeError, match="^root: expected a registry directory as a str or path"):
        Registry(None)
    registry = Registry(tmp_path / "reg")  # a pathlib.Path too
    registry.register(str(out), "digits")
    for call in (lambda: registry.get_version("digits", 1.5),
                 lambda: registry.set_alias("digits", "champion", "1"),
                 lambda: registry.delete_version("digits", True)):  # fmt: skip
        with pytest.raises(TypeError, match=r"^version: expected a version number \(an int"):
            call()
    assert registry.get_version("digits", 1).aliases == []


def test_a_registry_root_from_python_expands_home_and_refuses_an_empty_one(tmp_path, monkeypatch):
    # Registry("~/r") made ./~/r, Registry("~nouser/r") ./~nouser/r, and Registry("") was the
    # current directory ("no registry at , ..."), where the commands expand and refuse (42c H1).
    from ann import artifact

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert Registry("~/r").root == str(tmp_path / "r")
    with pytest.raises(ValueError, match=r"^root=~nouser_ann/r: ~nouser_ann: no user"):
        Registry("~nouser_ann/r")
    with pytest.raises(ValueError, match=r"^root: expected a registry directory, got ''$"):
        Registry("")
    # Every Python path argument goes through the same expansion (export, write_report,
    # train_and_evaluate, from_workdir, load, resolve).
    assert artifact.path_argument("~/x", "out", "a path") == str(tmp_path / "x")
    assert not (tmp_path / "~").exists()
    # register's export_dir too (it was told its export was incomplete; trial 42d).
    with pytest.raises(ValueError, match=r"^export_dir=~nouser_ann/e: ~nouser_ann: no user"):
        Registry("~/r").register("~nouser_ann/e")
