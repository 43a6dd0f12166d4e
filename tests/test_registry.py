"""Registry: versions, aliases, tags, lineage, URIs, immutability, concurrent writers."""

import os
import subprocess
import sys

import pytest

from ann import artifact
from ann.registry import Registry, RegistryError


def test_versions_aliases_tags_and_uris(digits_export, tmp_path):
    workdir, out = digits_export
    registry = Registry(str(tmp_path / "reg"))
    v1 = registry.register(str(out), "digits", tags={"team": "vision"}, aliases=["champion"])
    v2 = registry.register(str(out), "digits", description="retrained")
    assert (v1.version, v2.version) == (1, 2)
    assert v1.aliases == ["champion"] and v1.tags == {"team": "vision"}
    assert v2.description == "retrained" and v2.uri == "models:/digits/2"
    # Lineage comes from the manifest: run, step, config, data, metrics, git.
    assert v1.lineage["source"]["workdir"] == str(workdir)
    assert v1.lineage["config"]["model"]["name"] == "cnn"
    assert v1.lineage["data"]["name"] == "digits"
    assert "eval/accuracy" in v1.lineage["metrics"] and "commit" in v1.lineage["git"]

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
        ("models:/digits/x", "is not an integer"),
        ("digits/1", "is not models:/NAME/VERSION"),
    ]:
        with pytest.raises(RegistryError, match=message):
            registry.resolve(uri)
    with pytest.raises(RegistryError, match="has no version 9"):
        registry.set_alias("digits", "champion", 9)
    with pytest.raises(RegistryError, match="alias 'latest' must"):
        registry.set_alias("digits", "latest", 1)
    with pytest.raises(RegistryError, match="model name 'a/b'"):
        registry.register(str(out), "a/b")

    # Copied in, read-only, and loadable with the manifest hash recorded at registration.
    path = registry.resolve("models:/digits/1").path
    assert path == str(tmp_path / "reg" / "artifacts" / "digits" / "1")
    for p in [path, *(os.path.join(path, f) for f in os.listdir(path))]:
        assert not os.stat(p).st_mode & 0o222, p
    model = registry.load("models:/digits@champion")
    assert model.name == "digits_cnn"


def test_registering_a_tampered_export_fails(digits_export, tmp_path):
    import shutil

    _, out = digits_export
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / artifact.WEIGHTS).write_bytes(b"not weights")
    registry = Registry(str(tmp_path / "reg"))
    with pytest.raises(artifact.IntegrityError, match="weights.safetensors has 11 bytes"):
        registry.register(str(copy), "digits")
    assert registry.models() == []
    assert not [p for p in os.listdir(registry.artifacts) if p.startswith(".incoming")]


def test_concurrent_writers_get_distinct_versions(digits_export, tmp_path):
    _, out = digits_export
    reg = tmp_path / "reg"
    # No registry yet: the writers also race to create it.
    cmd = [sys.executable, "-m", "ann.registry", f"--registry={reg}", "register", str(out)]
    procs = [
        subprocess.Popen([*cmd, "--name=digits"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(5)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 5, [o[1][-500:] for o in outputs]
    uris = sorted(o[0].decode().split(" as ")[1].split()[0] for o in outputs)
    assert uris == [f"models:/digits/{v}" for v in (1, 2, 3, 4, 5)]
    registry = Registry(str(reg))
    versions = registry.versions("digits")
    assert [v.version for v in versions] == [1, 2, 3, 4, 5]
    for v in versions:
        artifact.verify(v.path, v.manifest_sha256)


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
    bad = cli("resolve", "models:/digits@nope")
    assert bad.returncode == 1 and "error: model 'digits' has no alias 'nope'" in bad.stderr
    usage = cli("frobnicate")
    assert usage.returncode == 1 and "usage:" in usage.stderr
