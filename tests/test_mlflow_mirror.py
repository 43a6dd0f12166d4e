"""Mirroring registry versions into a real MLflow tracking server, started on loopback."""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from types import SimpleNamespace

import pytest
from conftest import SESSION_SERVERS, one_line_error, stop_session_servers

from ann import artifact
from ann.registry import Registry, RegistryError, mlflow_mirror
from ann.registry import __main__ as registry_cli
from ann.registry.mlflow_mirror import MirrorError, mirror

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_STARTED: list[subprocess.Popen] = []


def _healthy(uri: str) -> bool:
    try:
        urllib.request.urlopen(f"{uri}/health", timeout=2).read()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, worker_id):
    """`mlflow server` with a SQLite store and proxied artifacts: its URI. One server
    for the session's workers (it takes 25-55 s to start here): the first worker to need it
    starts it and names it in the session directory; `pytest_sessionfinish` in conftest stops
    it after the last worker (tests share it by using model names of their own)."""
    import fcntl
    import json

    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        shared = shared.parent
    record = shared / SESSION_SERVERS / "mlflow.json"
    record.parent.mkdir(exist_ok=True)
    with open(shared / SESSION_SERVERS / "mlflow.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if record.exists() and _healthy(uri := json.loads(record.read_text())["uri"]):
            return uri
        root = tmp_path_factory.mktemp("mlflow")
        port = _free_port()
        uri = f"http://127.0.0.1:{port}"
        with open(root / "server.log", "w") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host=127.0.0.1", f"--port={port}",
                 f"--backend-store-uri=sqlite:///{root / 'mlflow.db'}",
                 f"--artifacts-destination={root / 'artifacts'}", "--workers=1"],
                cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                # No background job runner (8 more processes): registry calls do not use it.
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            )  # fmt: skip
        record.write_text(json.dumps({"uri": uri, "pgid": server.pid}))
        deadline = time.time() + 180
        while not _healthy(uri):
            if server.poll() is not None or time.time() > deadline:
                stop_session_servers(shared)
                raise RuntimeError(
                    f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        _STARTED.append(server)  # held, not collected: it outlives this worker's session
    return uri


def test_versions_aliases_tags_and_lineage_appear_in_mlflow(digits_export, mlflow_server, tmp_path):
    from mlflow import MlflowClient

    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    client = MlflowClient(mlflow_server)
    v1 = registry.register(str(out), "digits", aliases=["champion"], description="first")
    assert mirror(registry, "digits", 1, mlflow_server) == 1
    registry.register(str(out), "digits", allow_duplicate=True)
    assert mirror(registry, "digits", 2, mlflow_server) == 2
    assert mirror(registry, "digits", 1, mlflow_server) == 1  # again: a no-op, not version 3

    versions = client.search_model_versions("name='digits'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    first = client.get_model_version_by_alias("digits", "champion")
    assert first.version == "1" and first.tags["ann.version"] == "1"
    assert first.tags["ann.manifest_sha256"] == v1.manifest_sha256
    assert first.description == "first"
    # ann's version records where it went.
    mirrors = mlflow_mirror.mirrors(registry.get_version("digits", 1))
    assert mirrors == {mlflow_server: (1, first.run_id)}

    # The run carries the lineage: config as params, eval metrics at the trained step, the export.
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "digits-v1"
    assert run.data.params["model.name"] == "cnn" and run.data.params["data.name"] == "digits"
    for key, value in v1.lineage["metrics"].items():
        assert run.data.metrics[key] == pytest.approx(value)
    assert run.data.tags["ann.registry_uri"] == "models:/digits/1"
    assert run.data.tags["mlflow.source.git.commit"] == v1.lineage["git"]["commit"]
    downloaded = client.download_artifacts(first.run_id, "model", str(tmp_path / "dl"))
    artifact.verify(downloaded, v1.manifest_sha256)  # the same bytes as the registry's copy

    # Aliases and tags follow; a version never mirrored is refused with the command that fixes it.
    registry.set_alias("digits", "challenger", 2)
    mlflow_mirror.set_alias(registry, "digits", "challenger", 2, mlflow_server)
    assert client.get_model_version_by_alias("digits", "challenger").version == "2"
    mlflow_mirror.set_tag(registry, "digits", "stage", "prod", 2, mlflow_server)
    mlflow_mirror.set_tag(registry, "digits", "owner", "me", None, mlflow_server)
    assert client.get_model_version("digits", "2").tags["stage"] == "prod"
    assert client.get_registered_model("digits").tags["owner"] == "me"
    registry.delete_alias("digits", "challenger")
    mlflow_mirror.delete_alias(registry, "digits", "challenger", mlflow_server)
    assert client.get_registered_model("digits").aliases == {"champion": "1"}
    registry.register(str(out), "digits", allow_duplicate=True)
    with pytest.raises(MirrorError, match=r"models:/digits/3 was not mirrored .* mirror it first"):
        mlflow_mirror.set_alias(registry, "digits", "champion", 3, mlflow_server)


def test_cli_mirrors_and_says_how_to_retry(digits_export, mlflow_server, tmp_path):
    from mlflow import MlflowClient

    _, out = digits_export

    def cli(*args, env=None):
        return subprocess.run(
            [sys.executable, "-m", "ann.registry", f"--registry={tmp_path / 'reg'}", *args],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip

    # A name the other test does not use: both share the server.
    uri = f"--mlflow_uri={mlflow_server}"
    done = cli("register", str(out), "--name=cli_digits", "--alias=champion", uri)
    assert done.returncode == 0, done.stderr
    assert f"mirrored models:/cli_digits/1 into MLflow at {mlflow_server} as version 1" in (
        done.stdout
    )
    assert cli("mirror", "models:/cli_digits/1", uri).returncode == 0  # already there: a no-op
    assert cli("tag", "cli_digits", "stage", "prod", "--version=1", uri).returncode == 0
    version = MlflowClient(mlflow_server).get_model_version_by_alias("cli_digits", "champion")
    assert version.version == "1" and version.tags["stage"] == "prod"

    # An unreachable server: ann's registry keeps the version, the error says how to retry.
    dead = f"http://127.0.0.1:{_free_port()}"
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    failed = cli("register", str(out), "--name=cli_digits", "--allow_duplicate",
                 f"--mlflow_uri={dead}", env=env)  # fmt: skip
    assert failed.returncode == 1 and "registered" in failed.stdout
    assert f"mirroring models:/cli_digits/2 into MLflow at {dead} failed" in failed.stderr
    retry = f"--registry={tmp_path / 'reg'} mirror models:/cli_digits/2 --mlflow_uri={dead}"
    assert retry in failed.stderr  # on this registry, not ./registry
    assert Registry(str(tmp_path / "reg")).resolve("models:/cli_digits/latest").version == 2
    missing = cli("mirror", "models:/cli_digits/2")
    assert missing.returncode == 1 and "--mlflow_uri=URI" in missing.stderr

    # Deleting a version deletes its mirror; one never mirrored there is deleted in ann only,
    # and says so (it said nothing of MLflow, as if deleted there too).
    deleted = cli("delete", "cli_digits", "2", uri)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.splitlines()[-1] == (
        f"MLflow at {mlflow_server} has no mirror of models:/cli_digits/2: nothing to delete there"
    )
    assert cli("alias", "cli_digits", "champion", "--delete", uri).returncode == 0
    deleted = cli("delete", "cli_digits", "1", uri)
    assert deleted.returncode == 0, deleted.stderr
    assert f"deleted its mirror in MLflow at {mlflow_server} (version 1)" in deleted.stdout
    assert not MlflowClient(mlflow_server).search_model_versions("name = 'cli_digits'")


def test_without_the_mlflow_client_the_error_says_what_to_install(
    digits_export, tmp_path, monkeypatch
):
    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    registry.register(str(out), "digits")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    # 'ann[mlflow]' is on no package index: a clone installs its extra (README's own words)
    with pytest.raises(MirrorError, match=r"pip install -e '\.\[mlflow\]' in ann's clone"):
        mirror(registry, "digits", 1, "http://127.0.0.1:1")


def test_a_store_the_mlflow_client_refuses_is_one_error_with_the_retry(
    digits_export, tmp_path, monkeypatch
):
    # MLflow 3 refuses a file: store in the client's constructor unless MLFLOW_ALLOW_FILE_STORE
    # is set: a 50-line traceback after "registered", and no retry command.
    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    registry.register(str(out), "digits")
    store = f"file:{tmp_path / 'mlruns'}"
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    import mlflow

    def refusing(*args, **kwargs):
        raise mlflow.exceptions.MlflowException("the filesystem tracking backend is refused.")

    monkeypatch.setattr(mlflow, "MlflowClient", refusing)
    for call in (
        lambda: mirror(registry, "digits", 1, store),
        lambda: mlflow_mirror.set_tag(registry, "digits", "stage", "prod", None, store),
        lambda: mlflow_mirror.delete_alias(registry, "digits", "champion", store),
    ):
        with pytest.raises(MirrorError) as e:
            call()
        assert "the filesystem tracking backend is refused" in str(e.value)
        assert ".." not in str(e.value)
    with pytest.raises(MirrorError) as e:
        mirror(registry, "digits", 1, store)
    assert str(e.value).endswith(
        # `mirror` changes nothing in ann's registry: it said "holds the change".
        f"ann's registry holds models:/digits/1; retry with: ann registry "
        f"--registry={registry.root} mirror models:/digits/1 --mlflow_uri={store}"
    )


def test_a_retry_after_a_partial_failure_leaves_one_run_and_one_version(
    digits_export, mlflow_server, tmp_path, monkeypatch
):
    """Failures injected in-process at each step after the run exists; each retry finishes the
    same run and version instead of making another."""
    from mlflow import MlflowClient

    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    registry.register(str(out), "retry_digits", aliases=["champion"])
    client = MlflowClient(mlflow_server)

    def fail(*args, **kwargs):
        raise RuntimeError("injected failure")

    for owner, method in [
        (MlflowClient, "log_artifacts"),  # the run exists, its upload fails
        (MlflowClient, "set_registered_model_alias"),  # the version exists, its alias fails
        (Registry, "set_tags"),  # MLflow is done, writing the mapping back into ann fails
    ]:
        with monkeypatch.context() as patch:
            patch.setattr(owner, method, fail)
            with pytest.raises((MirrorError, RuntimeError), match="injected failure"):
                mirror(registry, "retry_digits", 1, mlflow_server)
    assert mirror(registry, "retry_digits", 1, mlflow_server) == 1
    assert mirror(registry, "retry_digits", 1, mlflow_server) == 1  # and again: a no-op

    experiment = client.get_experiment_by_name(mlflow_mirror.EXPERIMENT)
    runs = client.search_runs(
        [experiment.experiment_id], "tags.`ann.registry_uri` = 'models:/retry_digits/1'"
    )
    assert [r.info.status for r in runs] == ["FINISHED"]
    [version] = client.search_model_versions("name = 'retry_digits'")
    assert version.version == "1" and version.run_id == runs[0].info.run_id
    assert client.get_model_version_by_alias("retry_digits", "champion").version == "1"
    mirrors = mlflow_mirror.mirrors(registry.get_version("retry_digits", 1))
    assert mirrors == {mlflow_server: (1, runs[0].info.run_id)}
    downloaded = client.download_artifacts(version.run_id, "model", str(tmp_path / "dl"))
    assert sorted(os.listdir(downloaded)) == sorted(
        [artifact.MANIFEST, artifact.FUNCTION, artifact.WEIGHTS, artifact.REFERENCE]
    )


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory, worker_id):
    """An MLflow SQLite store with its tables made and nothing in them, made once for the
    session's workers (as conftest's data sets are): making the tables runs MLflow's
    migrations, 8-15 s on this machine; a copy of the file is a fresh store."""
    import fcntl
    import shutil

    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent
    path = root / "mlflow-empty-store.db"
    with open(root / "mlflow-empty-store.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            from mlflow import MlflowClient

            making = root / f"mlflow-empty-store.{os.getpid()}.db"
            MlflowClient(f"sqlite:///{making}").search_experiments()  # makes the tables
            shutil.move(making, path)
    return path


def _store(tmp_path, name, empty_store):
    """A local MLflow store (SQLite, artifacts under tmp_path) standing for one server: a second
    `mlflow server` would take 25-55 s to start."""
    import shutil

    from mlflow import MlflowClient

    shutil.copyfile(empty_store, tmp_path / f"{name}.db")
    uri = f"sqlite:///{tmp_path / name}.db"
    location = (tmp_path / f"{name}-artifacts").as_uri()
    MlflowClient(uri).create_experiment(mlflow_mirror.EXPERIMENT, artifact_location=location)
    return uri


def test_a_version_registered_without_the_function_check_is_not_mirrored(
    digits_export, tmp_path, empty_store, monkeypatch
):
    """A version an older ann registered (it checked hashes only) whose manifest says int8 of
    a function taking uint8 is refused in the loader's one line before MLflow is touched."""
    import shutil

    from mlflow import MlflowClient

    _, out = digits_export
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = copy / artifact.MANIFEST
    manifest.write_text(manifest.read_text().replace('"uint8"', '"int8"'))
    registry = Registry(str(tmp_path / "reg"))
    with monkeypatch.context() as older:  # the register of an ann before the check
        older.setattr(artifact, "check_function", lambda *args, **kwargs: None)
        mv = registry.register(str(copy), "digits")
    store = _store(tmp_path, "store", empty_store)
    with pytest.raises(artifact.IntegrityError) as e:
        mirror(registry, "digits", 1, store)
    assert str(e.value).startswith(
        f"{mv.path}/manifest.json: inputs.image says int8[-1, 8, 8, 1], but function.jaxexport "
        "takes uint8[batch, 8, 8, 1]"
    )
    assert MlflowClient(store).search_registered_models() == []


def test_a_version_mirrored_into_two_servers_knows_both(digits_export, tmp_path, empty_store):
    from mlflow import MlflowClient

    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    registry.register(str(out), "digits", aliases=["champion"])
    staging, production = (
        _store(tmp_path, "staging", empty_store),
        _store(tmp_path, "production", empty_store),
    )
    assert mirror(registry, "digits", 1, staging) == 1
    assert mirror(registry, "digits", 1, production) == 1
    mv = registry.get_version("digits", 1)
    # The second mirror did not make the version forget the first.
    assert mlflow_mirror.mirrored_version(mv, staging) == 1
    assert mlflow_mirror.mirrored_version(mv, production) == 1
    assert sorted(mlflow_mirror.mirrors(mv)) == sorted([staging, production])
    for uri in (staging, production):
        run_id = MlflowClient(uri).get_model_version("digits", "1").run_id
        assert mlflow_mirror.mirrors(mv)[uri] == (1, run_id)
    # Idempotent per server: neither makes a second run or version, and the tags stay as they are.
    tags = dict(mv.tags)
    for uri in (staging, production, staging):
        assert mirror(registry, "digits", 1, uri) == 1
    assert registry.get_version("digits", 1).tags == tags
    for uri in (staging, production):
        client = MlflowClient(uri)
        assert [str(v.version) for v in client.search_model_versions("name = 'digits'")] == ["1"]
        experiment = client.get_experiment_by_name(mlflow_mirror.EXPERIMENT).experiment_id
        assert len(client.search_runs([experiment])) == 1


def test_a_registry_written_before_keeps_its_one_mirror(digits_export, tmp_path, empty_store):
    """A version mirrored by an earlier ann holds `mlflow.tracking_uri`, `mlflow.run_id`,
    `mlflow.version`: still its mirror there; another server adds a mapping beside it."""
    from mlflow import MlflowClient

    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    registry.register(str(out), "digits", aliases=["champion"])
    staging, production = (
        _store(tmp_path, "staging", empty_store),
        _store(tmp_path, "production", empty_store),
    )
    assert mirror(registry, "digits", 1, staging) == 1
    run_id = MlflowClient(staging).get_model_version("digits", "1").run_id
    for key in list(registry.get_version("digits", 1).tags):  # as the earlier ann wrote them
        registry.delete_tag("digits", key, 1)
    legacy = {"mlflow.tracking_uri": staging, "mlflow.run_id": run_id, "mlflow.version": "1"}
    registry.set_tags("digits", legacy, 1)

    mv = registry.get_version("digits", 1)
    assert mlflow_mirror.mirrors(mv) == {staging: (1, run_id)}
    assert mirror(registry, "digits", 1, staging) == 1
    assert registry.get_version("digits", 1).tags == legacy  # a no-op: nothing rewritten
    registry.register(str(out), "digits", allow_duplicate=True)
    mirror(registry, "digits", 2, staging)
    mlflow_mirror.set_alias(registry, "digits", "champion", 1, staging)  # known there
    assert mirror(registry, "digits", 1, production) == 1
    mv = registry.get_version("digits", 1)
    assert sorted(mlflow_mirror.mirrors(mv)) == sorted([staging, production])
    assert {k: mv.tags[k] for k in legacy} == legacy
    assert len(MlflowClient(staging).search_model_versions("name = 'digits'")) == 2


def test_an_alias_change_names_the_servers_it_did_not_reach(
    digits_export, tmp_path, empty_store, capsys
):
    from mlflow import MlflowClient

    _, out = digits_export
    reg = tmp_path / "reg"
    registry = Registry(str(reg))
    registry.register(str(out), "digits", aliases=["champion"])
    registry.register(str(out), "digits", allow_duplicate=True)
    staging, production = (
        _store(tmp_path, "staging", empty_store),
        _store(tmp_path, "production", empty_store),
    )
    for uri in (staging, production):
        mirror(registry, "digits", 1, uri)
    mirror(registry, "digits", 2, staging)

    said = []  # each command's stdout

    def cli(*args):
        done = subprocess.run(
            [sys.executable, "-m", "ann.registry", f"--registry={reg}", *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        said.append(done.stdout)
        warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) <= 1, done.stderr
        return warnings[0] if warnings else ""

    def champion(uri):
        version = MlflowClient(uri).get_registered_model("digits").aliases.get("champion")
        return None if version is None else str(version)  # an int from a SQLite store

    # Moved at staging; production, which has not got version 2, is named with the fix.
    warning = cli("alias", "digits", "champion", "2", f"--mlflow_uri={staging}")
    assert champion(staging) == "2" and champion(production) == "1"
    # It says MLflow was changed too (as `mirror` and `delete` do): the line named ann's alone.
    assert said[-1].splitlines() == [
        "models:/digits@champion -> models:/digits/2",
        f"pointed it at its mirror in MLflow at {staging} (version 2)",
    ]
    fix = f"ann registry --registry={reg} mirror models:/digits/2 --mlflow_uri={production}"
    assert warning.startswith(
        "warning: alias 'champion' of 'digits' not moved to models:/digits/2 in MLflow at "
        f"{production}, where it is mirrored too"
    )
    assert warning.endswith(f"move there with: {fix}") and staging not in warning
    assert cli(*fix.split()[2:]) == ""  # the command it gave: every server up to date
    assert champion(production) == "2"
    # With the version at both, the fix is an alias command, which changes nothing in ann's
    # registry and names no server: it named the first one again (a trial went round in circles).
    warning = cli("alias", "digits", "champion", "1", f"--mlflow_uri={staging}")
    fix = f"ann registry --registry={reg} alias digits champion 1 --mlflow_uri={production}"
    assert warning.endswith(f"move there with: {fix}")
    assert cli(*fix.split()[2:]) == ""
    assert champion(production) == "1" and champion(staging) == "1"
    assert cli("tag", "digits", "stage", "prod", f"--mlflow_uri={staging}").startswith("warning")
    assert cli("tag", "digits", "stage", "prod", f"--mlflow_uri={production}") == ""
    assert f"tagged it in MLflow at {production} too" in said[-1]
    # A repeat changes nothing there and says so (it said "pointed"/"tagged" again). The
    # commands' own functions, in this process: each `ann registry` above imports MLflow.
    capsys.readouterr()
    registry_cli._tag(
        registry, SimpleNamespace(version=None), ["digits", "stage", "prod"], production
    )
    registry_cli._alias(
        registry, SimpleNamespace(delete=False), ["digits", "champion", "1"], production
    )
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == (  # ann's own line too
        "digits has stage=prod already (the model's tag; --version=N tags version N)"
    ), printed
    assert printed[1] == f"MLflow at {production} has stage=prod already", printed
    assert printed[2] == "models:/digits@champion points at models:/digits/1 already", printed
    assert printed[3].startswith(
        f"MLflow at {production} points it at its mirror already (version "
    )

    # Deleted at production; staging is named with the command that deletes it there.
    warning = cli("alias", "digits", "champion", "--delete", f"--mlflow_uri={production}")
    assert champion(production) is None and champion(staging) == "1"
    fix = f"ann registry --registry={reg} alias digits champion --delete --mlflow_uri={staging}"
    assert warning.endswith(f"delete there with: {fix}") and f"at {staging}," in warning
    assert said[-1].splitlines()[-1] == f"deleted it in MLflow at {production} too"
    assert cli(*fix.split()[2:]) == ""
    assert champion(staging) is None
    # Again, or a typo: in neither, refused as without --mlflow_uri (a SQLite store deletes a
    # missing alias without a word, and it said "deleted it in MLflow at ... too").
    again = subprocess.run(
        [sys.executable, "-m", "ann.registry", *fix.split()[2:]],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 1 and again.stdout == "", again.stdout
    assert again.stderr.startswith("error: model 'digits' has no alias 'champion'"), again.stderr

    # Without --mlflow_uri both are named; a tag set at one server names the other; a deleted
    # version's mirror left at another server is named with how to delete it there.
    registry.set_alias("digits", "challenger", 1)
    warning = mlflow_mirror.unreached_aliases(registry, "digits", ["challenger"], 1, "")
    assert f"at {production}, {staging}, where" in warning
    warning = mlflow_mirror.unreached_tag(registry, "digits", "stage", "prod", 2, staging)
    assert (
        warning.endswith(f"tag digits stage prod --version=2 --mlflow_uri={production}")
        and f"at {staging}" not in warning
    )
    registry.delete_alias("digits", "challenger")
    warning = cli("delete", "digits", "1", f"--mlflow_uri={staging}")
    assert warning.endswith(f"MlflowClient({production!r}).delete_model_version('digits', '1')")
    left = MlflowClient(staging).search_model_versions("name='digits'")
    assert [str(v.version) for v in left] == ["2"]
    versions = MlflowClient(production).search_model_versions("name='digits'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]  # what the warning says is left


def test_an_alias_mlflow_never_had_is_not_named_as_left_there(digits_export, tmp_path, empty_store):
    """`alias digits challenger --delete` of an alias set after the version was mirrored (so
    never in MLflow) warned "alias 'challenger' of 'digits' not deleted in MLflow at URI, where
    it is mirrored too ...; delete there with: ann registry ... --delete --mlflow_uri=URI", and
    that command failed: "error: model 'digits' has no alias 'challenger'". ann records the
    aliases it set in MLflow (`mlflow_aliases`) and names a server only where one may be."""
    from mlflow import MlflowClient

    _, out = digits_export
    reg = tmp_path / "reg"
    registry = Registry(str(reg))
    registry.register(str(out), "digits", aliases=["champion"])
    store = _store(tmp_path, "store", empty_store)
    mirror(registry, "digits", 1, store)  # champion goes along

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "ann.registry", f"--registry={reg}", *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    registry.set_alias("digits", "challenger", 1)  # in ann's registry alone
    deleted = cli("alias", "digits", "challenger", "--delete")
    assert (deleted.returncode, deleted.stderr) == (0, ""), deleted.stderr
    assert deleted.stdout == "deleted alias 'challenger' of 'digits'\n"
    assert mlflow_mirror.mlflow_aliases(registry, "digits", store) == {"champion": 1}
    # One MLflow holds is named, with the command that deletes it there, which does.
    deleted = cli("alias", "digits", "champion", "--delete")
    fix = f"ann registry --registry={reg} alias digits champion --delete --mlflow_uri={store}"
    assert deleted.returncode == 0 and deleted.stderr.endswith(f"delete there with: {fix}\n")
    done = cli(*fix.split()[2:])
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout.splitlines()[-1] == f"deleted it in MLflow at {store} too"
    assert MlflowClient(store).get_registered_model("digits").aliases == {}
    assert mlflow_mirror.mlflow_aliases(registry, "digits", store) == {}
    again = cli(*fix.split()[2:])  # in neither now: refused, naming both
    assert one_line_error(again) == (
        f"error: model 'digits' has no alias 'champion'; its aliases: none; nor has MLflow at "
        f"{store}"
    )
    # Set there and deleted there: named no more.
    registry.set_alias("digits", "champion", 1)
    mlflow_mirror.set_alias(registry, "digits", "champion", 1, store)
    assert mlflow_mirror.mlflow_aliases(registry, "digits", store) == {"champion": 1}
    mlflow_mirror.delete_alias(registry, "digits", "champion", store)
    registry.delete_alias("digits", "champion")
    assert mlflow_mirror.unreached_aliases(registry, "digits", ["champion"], None, "") is None


def test_two_spellings_of_one_server_are_one_mirror(digits_export, tmp_path, monkeypatch):
    """`http://host:5000/` and `http://host:5000` (or a relative and an absolute SQLite path)
    were two servers: a second mirror into the same one, and a warning naming the server the
    command had just changed. Mirrors recorded in another spelling are read as the one."""
    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    registry.register(str(out), "digits")
    monkeypatch.chdir(tmp_path)
    for spelling, number in (("http://Host:5000/", "3"), ("sqlite:///m.db", "4")):  # as recorded
        uri_key, run_key, version_key = mlflow_mirror._tag_keys(spelling)
        registry.set_tags("digits", {uri_key: spelling, run_key: "r", version_key: number}, 1)
    mv = registry.get_version("digits", 1)
    sqlite = f"sqlite:///{tmp_path / 'm.db'}"
    assert mlflow_mirror.mirrors(mv) == {"http://host:5000": (3, "r"), sqlite: (4, "r")}
    assert mlflow_mirror.mirrored_version(mv, "http://host:5000") == 3
    assert mirror(registry, "digits", 1, "HTTP://host:5000") == 3  # known: MLflow not called
    assert mirror(registry, "digits", 1, sqlite) == 4
    # The command says so: "mirrored ... as version 4" claimed a mirror it had not made.
    again = subprocess.run(
        [sys.executable, "-m", "ann.registry", f"--registry={tmp_path / 'reg'}", "mirror",
         "models:/digits/1", f"--mlflow_uri={sqlite}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"models:/digits/1 is already in MLflow at {sqlite} as version 4\n"
    warning = mlflow_mirror.unreached_aliases(registry, "digits", ["a"], None, "http://host:5000")
    assert warning.startswith(f"alias 'a' of 'digits' not deleted in MLflow at {sqlite}, "), warning
    assert mlflow_mirror.normal_uri("file:///x/runs/") == "file:///x/runs"


def test_a_store_mlflow_cannot_use_fails_in_one_line(digits_export, tmp_path):
    """`--mlflow_uri=databricks` without Databricks credentials printed MLflow's
    "2026/12/05 ... WARNING mlflow.utils.databricks_utils: Failed to create databricks SDK
    workspace client ..." line and an `error:` spanning two lines: one `error:` line now."""
    _, out = digits_export
    Registry(str(tmp_path / "reg")).register(str(out), "digits")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS")}
    env["HOME"] = str(tmp_path)  # no ~/.databrickscfg
    result = subprocess.run(
        [sys.executable, "-m", "ann.registry", f"--registry={tmp_path / 'reg'}", "mirror",
         "models:/digits/1", "--mlflow_uri=databricks"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    line = one_line_error(result)
    assert line.startswith("error: mirroring models:/digits/1 into MLflow at databricks failed: ")
    retry = f"ann registry --registry={tmp_path / 'reg'} mirror models:/digits/1"
    assert line.endswith(f"retry with: {retry} --mlflow_uri=databricks"), line


def test_an_alias_deleted_in_mlflow_alone_asks_mlflow_once(
    digits_export, tmp_path, monkeypatch, capsys
):
    """`alias --delete --mlflow_uri` of an alias gone from ann's registry but not from MLflow
    asked MLflow twice whether it had it (`has_alias`, then `delete_alias`'s own question): once
    now. A stand-in client counts the calls (no store to make)."""
    _, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    registry.register(str(out), "digits")
    calls = []

    class Client:
        def get_model_version_by_alias(self, name, alias):
            calls.append("get_model_version_by_alias")
            return SimpleNamespace(version=1)

        def delete_registered_model_alias(self, name, alias):
            calls.append("delete_registered_model_alias")

    monkeypatch.setattr(mlflow_mirror, "_client", lambda uri: Client())
    uri = "sqlite:///m.db"
    for in_ann, said in [
        (False, "alias 'champion' of 'digits' is deleted in ann's registry already"),
        (True, "deleted alias 'champion' of 'digits'"),  # ann's registry not asking MLflow
    ]:
        if in_ann:
            registry.set_alias("digits", "champion", 1)
        calls.clear()
        registry_cli._alias(registry, SimpleNamespace(delete=True), ["digits", "champion"], uri)
        assert calls == ["get_model_version_by_alias", "delete_registered_model_alias"]
        assert capsys.readouterr().out.splitlines() == [said, f"deleted it in MLflow at {uri} too"]


def test_a_password_in_a_tracking_uri_is_refused_and_never_printed(digits_export, tmp_path):
    """`--mlflow_uri=http://user:pw@h` echoed the password in the error and in the retry
    command (and recorded it in the registry's tags). Now refused before anything is made,
    the password shown as `***`, naming MLflow's variables; a URI recorded with one before
    (an older registry) is shown redacted in warnings, `versions` and `show`."""
    _, out = digits_export
    reg = tmp_path / "reg"
    cli = [sys.executable, "-m", "ann.registry", f"--registry={reg}"]
    # Before, MLflow was asked (and failed at once here: no retries, a closed port).
    env = {**os.environ, "ANN_MLFLOW_URI": "", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    for uri, said in [
        ("http://ann:s3cret@127.0.0.1:9", "give http://127.0.0.1:9 and set MLflow's "
         "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
        ("postgresql://ann:s3cret@h/mlflow", "give postgresql://ann@h/mlflow and the password "
         "where the database driver reads it outside the URI (PostgreSQL: PGPASSWORD or "
         "~/.pgpass)"),
    ]:  # fmt: skip
        result = subprocess.run(
            [*cli, "register", str(out), f"--mlflow_uri={uri}"],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        shown = uri.replace("s3cret", "***")
        assert one_line_error(result) == (
            f"error: --mlflow_uri='{shown}' holds a password, which ann would record in the "
            f"registry's tags and print; {said}"
        )
        assert "s3cret" not in result.stdout + result.stderr
        assert not reg.exists()
    # The URI offered without the password is one ann takes: it kept a bad port
    # ("give http://h:0x50/ and set ..."), refused in turn.
    for uri, wrong in [
        ("http://ann:s3cret@h:0x50/", "has a port outside 1-65535"),
        ("http://ann:s3cret@h:5000/?db=x", "has a query or fragment, which MLflow's client "
         "appends its API paths after"),
    ]:  # fmt: skip
        with pytest.raises(RegistryError) as e:
            mlflow_mirror.check_mlflow_uri(uri)
        said = str(e.value)
        assert said.startswith(
            f"--mlflow_uri='{mlflow_mirror.shown_uri(uri)}' holds a password, which ann would "
            f"record in the registry's tags and print, and {wrong}; give "
        ), said
        offered = re.search(r"; give (\S+:\S*)", said)
        if offered:
            mlflow_mirror.check_mlflow_uri(offered.group(1))
        assert "s3cret" not in said and "0x50/ and" not in said
        assert said.count("MLFLOW_TRACKING_PASSWORD") == 1
    # From the environment: named as such (it said "--mlflow_uri=", a flag not given).
    result = subprocess.run(
        [*cli, "register", str(out)], capture_output=True, text=True, timeout=120,
        env={**env, "ANN_MLFLOW_URI": "http://ann:s3cret@127.0.0.1:9"},
    )  # fmt: skip
    assert one_line_error(result).startswith(
        "error: $ANN_MLFLOW_URI='http://ann:***@127.0.0.1:9' holds a password"
    ), result.stderr
    # Recorded by an older ann: never printed.
    registry = Registry(str(reg))
    registry.register(str(out), "digits")
    uri_key, run_key, version_key = mlflow_mirror._tag_keys("http://ann:s3cret@127.0.0.1:9")
    registry.set_tags(
        "digits", {uri_key: "http://ann:s3cret@127.0.0.1:9", run_key: "r", version_key: "1"}, 1
    )
    for args in (
        ["alias", "digits", "y", "1"],
        ["versions", "digits"],
        ["show", "models:/digits/1"],
    ):
        result = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0, result.stderr
        assert "s3cret" not in result.stdout + result.stderr, args
        assert "http://ann:***@127.0.0.1:9" in result.stdout + result.stderr, args


def _mirrored_twice(digits_export, tmp_path):
    """A registry of two digits versions, champion on 1, with version 1 and its alias recorded
    as mirrored into an MLflow store (the tags `mirror` writes; no MLflow needed): (the
    registry's folder, the store's URI, an environment without ANN_MLFLOW_URI)."""
    _, out = digits_export
    reg = tmp_path / "reg"
    registry = Registry(str(reg))
    registry.register(str(out), "digits", aliases=["champion"])
    registry.register(str(out), "digits", allow_duplicate=True)
    store = f"sqlite:///{tmp_path / 'm.db'}"
    uri_key, run_key, version_key = mlflow_mirror._tag_keys(store)
    registry.set_tags("digits", {uri_key: store, run_key: "r", version_key: "1"}, 1)
    registry.set_tags("digits", {mlflow_mirror._aliases_key(store): "champion:1"})
    return reg, store, {**os.environ, "ANN_MLFLOW_URI": ""}


def test_a_new_alias_not_sent_to_mlflow_is_said_not_set_there(digits_export, tmp_path):
    """An alias set without --mlflow_uri on a model mirrored elsewhere warned "alias 'y' of
    'digits' not moved ... in MLflow" for an alias MLflow never held: "not set" now, "not
    moved" still for one it holds. The mirror is recorded in the tags as `mirror` writes them
    (no MLflow needed: the warning reads only ann's registry)."""
    reg, store, env = _mirrored_twice(digits_export, tmp_path)

    def warning(*args):
        done = subprocess.run(
            [sys.executable, "-m", "ann.registry", f"--registry={reg}", "alias", "digits", *args],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stderr.strip()

    fix = f"ann registry --registry={reg} alias digits y 1 --mlflow_uri={store}"
    assert warning("y", "1") == (
        f"warning: alias 'y' of 'digits' not set to models:/digits/1 in MLflow at {store}, "
        "where it is mirrored too (a command changes MLflow only at its --mlflow_uri); set "
        f"there with: {fix}"
    )
    fix = f"ann registry --registry={reg} mirror models:/digits/2 --mlflow_uri={store}"
    assert warning("champion", "2") == (
        f"warning: alias 'champion' of 'digits' not moved to models:/digits/2 in MLflow at "
        f"{store}, where it is mirrored too (a command changes MLflow only at its "
        f"--mlflow_uri); move there with: {fix}"
    )


def test_an_alias_move_mlflow_refused_says_so_and_a_move_back_warns_of_nothing(
    digits_export, tmp_path
):
    """A trial: `alias digits champion 2 --mlflow_uri=M` (version 2 not mirrored at M) moved
    ann's alias and failed with "models:/digits/2 was not mirrored into MLflow at M; mirror it
    first: ...", nothing said of the alias; `alias digits champion 1` then warned "alias
    'champion' of 'digits' not moved to models:/digits/1 in MLflow at M", where MLflow's had
    never left version 1. ann's record of M's aliases (no MLflow needed: the version is found
    unmirrored before MLflow is asked) says where it is."""
    reg, store, env = _mirrored_twice(digits_export, tmp_path)

    def alias(*args):
        return subprocess.run(
            [sys.executable, "-m", "ann.registry", f"--registry={reg}", "alias", "digits", *args],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip

    failed = alias("champion", "2", f"--mlflow_uri={store}")
    assert failed.stdout == "models:/digits@champion -> models:/digits/2\n"
    fix = f"ann registry --registry={reg} mirror models:/digits/2 --mlflow_uri={store}"
    assert one_line_error(failed) == (
        "error: models:/digits@champion -> models:/digits/2 in ann's registry only: "
        f"models:/digits/2 was not mirrored into MLflow at {store}, where it still points at "
        f"models:/digits/1's mirror; mirror it first (that sets its aliases there): {fix}"
    )
    back = alias("champion", "1")
    assert back.returncode == 0 and back.stderr == "", back.stderr
    assert back.stdout == "models:/digits@champion -> models:/digits/1\n"
    # A move MLflow's record does not have is still named.
    assert "not moved to models:/digits/2" in alias("champion", "2").stderr


def test_an_unreachable_server_fails_in_one_line_after_two_retries(digits_export, tmp_path):
    # MLflow's client retried a dead server 7 times with backoff: register's error and retry
    # command came after about 4 minutes. Twice now, unless the environment says otherwise.
    _, out = digits_export
    dead = f"http://127.0.0.1:{_free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_HTTP_REQUEST_MAX_RETRIES"}
    result = subprocess.run(
        [sys.executable, "-m", "ann.registry", f"--registry={tmp_path / 'reg'}", "register",
         str(out), "--name=digits", f"--mlflow_uri={dead}"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 1 and f"into MLflow at {dead} failed" in result.stderr
    # ... and says so in its one `error:` line: urllib3's absl-style "W1205 ...
    # connectionpool.py:874] Retrying (Retry(total=1, ...)) ..." lines came before it.
    assert "Retrying (" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    mirror = subprocess.run(
        [sys.executable, "-m", "ann.registry", f"--registry={tmp_path / 'reg'}", "mirror",
         "models:/digits/1", f"--mlflow_uri={dead}"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert mirror.returncode == 1 and mirror.stderr.startswith("error: mirroring models:/digits/1")
    assert mirror.stderr.count("\n") == 1, mirror.stderr
