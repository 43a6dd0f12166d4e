"""The server's route table, in-process: 404 for a path no route has whatever its method, 405
with `Allow` for a route asked with another method, the token and the metrics port judged per
route; the OpenAPI document (static package data) lists every route; `Settings` is the one
source of the server's defaults."""

import asyncio
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from ann.serve import openapi
from ann.serve.app import ROUTES, App
from ann.serve.dataplane import ServedModel
from ann.serve.settings import Settings, flag_fields

ROOT = Path(__file__).resolve().parent.parent
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


class FakeModel:
    name = "m"
    inputs = {"x": {"dtype": "float32", "shape": [-1, 2]}}
    outputs = {"y": {"dtype": "float32", "shape": [-1, 2]}}
    manifest = {"platforms": ["cpu"]}
    manifest_sha256 = "0" * 64  # of no export the registry holds


def admin_post(app, path, body=b"{}"):
    """The reply (status, body bytes, headers) of an admin POST handled in-process, answered
    from a task of the event loop (a repository load or unload)."""
    replies = []

    async def main():
        app.handle("POST", path, b"Bearer adm1n", body, None,
                   lambda *reply: replies.append(reply))  # fmt: skip
        while not replies:
            await asyncio.sleep(0)

    asyncio.run(asyncio.wait_for(main(), 10))
    [reply] = replies
    return reply


def call(app, method, path, token=None, public_only=False):
    """(status, parsed JSON or raw body, headers) of one request handled in-process."""
    replies = []
    auth = f"Bearer {token}".encode() if token else None
    app.handle(method, path, auth, b"{}", None, lambda *reply: replies.append(reply),
               public_only=public_only)  # fmt: skip
    [(status, body, headers)] = replies
    headers = dict(headers or [])
    if headers.get(b"content-type", b"application/json") == b"application/json":
        body = json.loads(body)
    return status, body, headers


def concrete(pattern: str) -> str:
    return pattern.replace("{name}", "m").replace("{version}", "1").replace("{model}", "m")


@pytest.fixture
def app():
    return App(
        [ServedModel("m", "1", FakeModel(), "test")],
        Settings(admin_token="adm1n", registry="/nonexistent/registry"),
    )


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/m//infer",  # served as /v2/models/m/infer
        "/v2//models/m/infer",
        "/v2/models/m/versions//infer",  # 404 naming "infer" as the version
        "/v2/health/live/",
        "//v2/health/live",
    ],
)
def test_an_empty_path_segment_is_no_route_and_said_so(app, path):
    """trial 42a L2: empty segments were dropped before the route was matched."""
    hint = "an empty path segment (// or a / at the end) names nothing: remove it"
    method = "POST" if path.endswith("infer") else "GET"
    for public_only in (False, True):  # the metrics port too
        status, body, _ = call(app, method, path, public_only=public_only)
        assert (status, body) == (404, {"error": f"no route {method} {path}; {hint}"})


def test_unknown_paths_are_404_whatever_the_method(app):
    for path in ["/v2/nowhere", "/v2/models/m/infer/extra", "/", "/v2/health", "/metrics/x"]:
        for method in METHODS:
            status, body, _ = call(app, method, path)
            assert status == 404, (method, path, body)
            assert body["error"].startswith(f"no route {method} "), body


def test_every_route_refuses_other_methods_with_405_and_allow(app):
    for route in ROUTES:
        path = concrete(route.pattern)
        # HEAD wherever GET is, as HTTP servers answer it (a health checker's HEAD was a 405).
        allowed = sorted({*route.methods, *(["HEAD"] if "GET" in route.methods else [])})
        for method in METHODS:
            if method in allowed:
                if method == "HEAD":
                    head = call(app, "HEAD", path, "adm1n" if route.admin else None)
                    get = call(app, "GET", path, "adm1n" if route.admin else None)
                    assert head[0] == get[0], (path, head, get)  # the body: the HTTP layer's
                continue
            status, body, headers = call(app, method, path, "adm1n" if route.admin else None)
            assert status == 405, (method, path, body)
            assert headers[b"allow"] == ", ".join(allowed).encode()
            assert (
                f"method: expected {', '.join(allowed)} for {path}, got {method}" in (body["error"])
            )
            if "{name}" in route.pattern:  # a model route names its model even in a 405
                assert (body["model_name"], body["model_version"]) == ("m", "1")


def test_unknown_models_and_versions_are_404_before_the_method(app):
    assert call(app, "GET", "/v2/models/nope/infer")[:1] == (404,)
    status, body, _ = call(app, "DELETE", "/v2/models/m/versions/7/ready")
    assert status == 404 and 'version: expected one of ["1"], got "7"' in body["error"]
    # A served model's missing version (a client pinned to a rolled-back one) names the model,
    # in the reply and the metrics (it counted under model ""); the client's string is not a
    # label value: version "".
    assert (body["model_name"], body["model_version"]) == ("m", "7")
    text = app.metrics.render().decode()
    assert 'ann_errors_total{code="404",model="m",reason="version",version=""} 1.0' in text
    assert 'ann_requests_total{code="404",handler="",model="m",version=""} 1.0' in text
    assert 'version="7"' not in text


def test_token_and_metrics_port_are_judged_per_route():
    settings = Settings(token="s3cret", admin_token="adm1n")
    app = App([ServedModel("m", "1", FakeModel(), "test")], settings)
    for route in ROUTES:
        path = concrete(route.pattern)
        method = next(iter(route.methods))
        status = call(app, method, path)[0]
        assert (status != 401) == route.public, (path, status)
        if route.admin:  # the client's token is not the admin's: known, not allowed (was 401)
            status, body, _ = call(app, method, path, token="s3cret")
            assert status == 403 and "need the server's admin token" in body["error"], body
            assert call(app, method, path, token="wrong")[0] == 401
        else:  # the admin's opens every route the client's does (the index was 401 to it)
            assert call(app, method, path, token="adm1n")[0] != 401, path
        status = call(app, method, path, public_only=True)[0]
        assert (status != 404) == route.metrics_port, (path, status)
    # An unknown path asks for the token first: it tells a stranger nothing.
    assert call(app, "POST", "/v2/nowhere")[0] == 401
    assert call(app, "POST", "/v2/nowhere", token="s3cret")[0] == 404
    # A refused token is counted under the route's handler (it was handler ""), never under
    # the model a stranger named: that label is not the client's to fill.
    text = app.metrics.render().decode()
    for handler in ("infer", "repository_load", "model_metadata"):
        assert f'code="401",handler="{handler}",model="",version=""' in text, handler
    assert 'code="401",handler="",model="",version=""} 1.0' in text  # /v2/nowhere only
    # Without an admin token, load and unload are refused whoever asks.
    bare = App([ServedModel("m", "1", FakeModel(), "test")], Settings())
    status, body, _ = call(bare, "POST", "/v2/repository/models/m/load")
    assert status == 403 and "--admin_token_file" in body["error"]


def test_openapi_is_static_package_data_listing_every_route(app):
    from openapi_spec_validator import validate

    status, doc, _ = call(app, "GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    # As served (filled with the models): a valid OpenAPI 3.0 document. Four media types
    # carried a description, which 3.0 does not allow: validators and generators refused it.
    validate(doc)
    assert set(doc["paths"]) == {r.pattern for r in ROUTES}
    for route in ROUTES:
        assert set(doc["paths"][route.pattern]) == {m.lower() for m in route.methods}
    # Filled per model: the names a {name} takes, and each version's tensors.
    assert doc["components"]["parameters"]["name"]["schema"]["enum"] == ["m"]
    assert doc["x-models"]["m"]["1"]["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [-1, 2]}
    ]
    assert "enum" not in openapi.template()["components"]["parameters"]["name"]["schema"]
    # A wheel carries it: declared package data.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "openapi.json" in project["tool"]["setuptools"]["package-data"]["ann.serve"]


def test_settings_are_the_only_source_of_flag_defaults():
    code = (
        "import json\nfrom absl import flags\nimport ann.serve.__main__ as m\nm.define_flags()\n"
        "print(json.dumps({k: v.default for k, v in flags.FLAGS._flags().items()}))"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}  # no $ANN_* variables
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=env, check=True)  # fmt: skip
    defaults = json.loads(out.stdout)
    fields = flag_fields()
    assert fields and {f.name for f in dataclasses.fields(Settings)} - {f.name for f in fields} == {
        "retry_after_seconds"
    }
    for field in fields:
        assert defaults[field.name] == field.default, field.name


def test_a_model_being_loaded_is_503_with_retry_after(app):
    app.dataplane.loading["x"] = {None}  # a load of a new name, version not known yet
    status, body, headers = call(app, "POST", "/v2/models/x/infer")
    assert status == 503 and headers[b"retry-after"] == b"1", body
    assert "'x': being loaded or unloaded; retry" in body["error"]
    # Named, as every reply that addresses a model is (it had no model_name).
    assert (body["model_name"], body["model_version"]) == ("x", ""), body
    app.dataplane.loading["m"] = {"2"}  # a second version of a served name
    app.dataplane.model("m", "1").ready = True
    status, body, _ = call(app, "GET", "/v2/models/m/versions/2/ready")
    assert status == 503 and (body["model_name"], body["model_version"]) == ("m", "2"), body
    assert call(app, "GET", "/v2/models/m/ready")[0] == 200  # version 1 serves on
    assert call(app, "GET", "/v2/models/m/versions/3/ready")[0] == 404


@pytest.mark.parametrize(
    "body, message",
    [
        (b"[1]", "body: expected a JSON object, got [1]"),
        (b"{nope", "body: expected a JSON object, got invalid JSON"),
        (b"nan", "body: expected a JSON object, got invalid JSON (expected a JSON value at column"),
        (b'{"parameters": 3}', "parameters: expected an object, got 3"),
        (b'{"parameters": {"source": ""}}', "parameters.source: expected a registry URI"),
        (
            b'{"parameters": {"config": "{"}}',
            "parameters.config: expected a model configuration "
            'as a JSON string, got "{", invalid JSON (unexpected end of data at column 2)',
        ),
        (
            b'{"parameters": {"config": "{\\"version_policy\\": {\\"specific\\": '
            b'{\\"versions\\": [\\"x\\"]}}}"}}',
            'version_policy.specific.versions[0]: expected a version number (1, 2, ...), got "x"',
        ),
        (  # full-width: int() read it, and version 2 was loaded
            '{"parameters": {"config": "{\\"version_policy\\": {\\"specific\\": '
            '{\\"versions\\": [\\"２\\"]}}}"}}'.encode(),
            'version_policy.specific.versions[0]: expected a version number (1, 2, ...), got "２"',
        ),
        # A leading zero: version 1 was loaded, where models:/m/01 and `ann registry` refuse it.
        (
            b'{"parameters": {"config": "{\\"version_policy\\": {\\"specific\\": '
            b'{\\"versions\\": [2, \\"01\\"]}}}"}}',
            "parameters.config.version_policy.specific.versions[1]: expected a version number "
            '(1, 2, ...), got "01"; write "1"',
        ),
        (  # not a version: was asked of the registry as models:/m/0
            b'{"parameters": {"config": "{\\"version_policy\\": {\\"specific\\": '
            b'{\\"versions\\": [0]}}}"}}',
            "version_policy.specific.versions[0]: expected a version number (1, 2, ...), got 0",
        ),
        (
            b'{"parameters": {"config": "{\\"version_policy\\": {\\"specific\\": '
            b'{\\"versions\\": 2}}}"}}',
            "version_policy.specific.versions: expected a list of version numbers, got 2",
        ),
        # Ignored, each loaded the latest version instead of the one meant (200).
        (
            b'{"parameters": {"sauce": "models:/m/2"}}',
            "parameters: expected source (a registry "
            "URI or an export directory) or config (Triton's, with version_policy.specific), got "
            '"sauce"',
        ),
        (
            b'{"parameters": {"config": "{\\"version_policy\\": {\\"all\\": {}}}"}}',
            "parameters.config.version_policy: expected specific (the versions to load: "
            '{"specific": {"versions": [2]}}), got ["all"]',
        ),
        (
            b'{"parameters": {"config": "{\\"max_batch_size\\": 8}"}}',
            "parameters.config: only version_policy is read (batching and limits are ann serve's "
            'flags), got "max_batch_size"',
        ),
        (
            b'{"parameters": {"config": "{\\"version_policy\\": {\\"specific\\": '
            b'{\\"version\\": [1]}}}"}}',
            'parameters.config.version_policy.specific: unknown key "version"; expected '
            "versions (did you mean 'versions'?)",
        ),
        # The body's own key misspelled: its source was ignored, the latest version loaded.
        (
            b'{"paramters": {"source": "models:/m/2"}}',
            "body: unknown key \"paramters\"; expected parameters (did you mean 'parameters'?)",
        ),
    ],
)
def test_load_requests_that_cannot_work_are_400(app, body, message):
    replies = []
    auth = b"Bearer adm1n"

    async def main():
        app.handle("POST", "/v2/repository/models/m/load", auth, body, None,
                   lambda *reply: replies.append(reply))  # fmt: skip
        for _ in range(100):  # answered from a task: let it run
            if replies:
                break
            await asyncio.sleep(0)

    asyncio.run(main())
    [(status, reply, _)] = replies
    assert status == 400 and message in json.loads(reply)["error"], reply


def test_a_load_of_a_model_that_cannot_work_is_one_line(digits_export, tmp_path, monkeypatch):
    """An export whose manifest was edited (its input said int8, the function takes uint8) was
    read, then its compile failed: 500 with JAX's "Dtype mismatch for args[1]['image']". It is
    400 with the loader's line now; a compile that fails is 500 with its first line only."""
    import shutil

    import ann.serve.dataplane as dataplane

    _, out = digits_export
    app = App([ServedModel("m", "1", FakeModel(), "test")], Settings(admin_token="adm1n"))
    edited = tmp_path / "edited"
    shutil.copytree(out, edited)
    manifest = edited / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"uint8"', '"int8"'))
    body = json.dumps({"parameters": {"source": str(edited)}}).encode()
    status, reply, _ = admin_post(app, "/v2/repository/models/digits_cnn/load", body)
    assert status == 400, reply
    assert json.loads(reply)["error"] == (
        f"load 'digits_cnn': {manifest}: inputs.image says int8[-1, 8, 8, 1], but "
        "function.jaxexport takes uint8[batch, 8, 8, 1]; the manifest was edited or the files "
        "come from different exports; re-export the run"
    )

    def fail(*args):
        raise RuntimeError("RESOURCE_EXHAUSTED: out of memory\n  more\n  lines")

    monkeypatch.setattr(dataplane, "_compile_counted", fail)
    body = json.dumps({"parameters": {"source": str(out)}}).encode()
    status, reply, _ = admin_post(app, "/v2/repository/models/digits_cnn/load", body)
    error = json.loads(reply)["error"]
    assert status == 500 and error.endswith(
        "failed (RuntimeError: RESOURCE_EXHAUSTED: out of memory)"
    ), reply


def test_a_load_reads_versions_as_numbers_or_their_text():
    # Triton's JSON config writes an int64 as a string ("2"); both read as every version is.
    from ann.serve import repository

    config = '{"version_policy": {"specific": {"versions": [2, "3", "10"]}}}'
    assert repository.load_sources("m", {"config": config}) == [
        "models:/m/2", "models:/m/3", "models:/m/10"]  # fmt: skip


def test_a_load_in_progress_lists_the_version_it_loads_alone(app, monkeypatch):
    # While version 2 compiled, the index also showed a row of version "" LOADING.
    seen = []

    def read(name, spec):
        return ServedModel(name, "2", FakeModel(), spec)

    async def compile_(m):
        seen.append(app.repository.index())

    monkeypatch.setattr(app.repository, "_read", read)
    monkeypatch.setattr(app.dataplane, "compile", compile_)
    loaded, already = asyncio.run(app.repository.load("m", {"source": "models:/m/2"}))
    assert [m.version for m in loaded] == ["2"] and already == []
    loading = [(e["version"], e["state"]) for e in seen[0] if e["name"] == "m"]
    assert loading == [("1", "LOADING"), ("2", "LOADING")], seen[0]  # 1: not compiled here


def test_a_server_whose_models_were_all_unloaded_says_so(app):
    # It answered 'model: expected one of [], got "m"'.
    del app.dataplane.models["m"]
    status, body, _ = call(app, "POST", "/v2/models/m/infer")
    assert status == 404 and body["error"] == (
        'model: got "m", but none is served (every model was unloaded); load one with POST '
        "/v2/repository/models/NAME/load"
    ), body


def test_a_server_with_no_model_is_not_ready(app):
    # /v2/health/ready answered 200 {"ready": true} with every model unloaded (a readiness
    # probe kept a pod that can only answer 404 in the pool), and ann_ready stayed as it was
    # at start whatever was loaded or unloaded since.
    def ann_ready():
        text = call(app, "GET", "/metrics")[1].decode()
        return [line for line in text.splitlines() if line.startswith("ann_ready ")]

    app.dataplane.model("m", "1").ready = True
    assert call(app, "GET", "/v2/health/ready")[:2] == (200, {"ready": True})
    assert ann_ready() == ["ann_ready 1.0"]
    del app.dataplane.models["m"]
    assert call(app, "GET", "/v2/health/ready")[:2] == (503, {
        "ready": False,
        "error": "server: no model is served (every model was unloaded); load one with POST "
        "/v2/repository/models/NAME/load",
    })  # fmt: skip
    assert ann_ready() == ["ann_ready 0.0"]


def test_a_server_that_is_not_ready_says_why(app):
    # While its models compiled, /v2/health/ready said only 503 {"ready":false}: the README
    # promised the reason (v2: a 4xx/5xx reply's body is {"error": ...}).
    app.dataplane.add(ServedModel("m", "2", FakeModel(), "test"))
    app.dataplane.model("m", "2").ready = True
    assert call(app, "GET", "/v2/health/ready")[:2] == (503, {
        "ready": False,
        "error": "models: still compiling m/1; ready when each has compiled (its `ready:` line "
        "in the server's log)",
    })  # fmt: skip
    app.dataplane.model("m", "1").ready = True
    assert call(app, "GET", "/v2/health/ready")[:2] == (200, {"ready": True})
    app.start_draining()
    assert call(app, "GET", "/v2/health/ready")[:2] == (503, {
        "ready": False,
        "error": "server: draining for shutdown; send requests to another replica",
    })  # fmt: skip


def test_repository_index_states(app):
    repository = app.repository
    app.dataplane.loading["new"] = {None}
    repository.unavailable[("old", "3")] = "unloaded"
    index = {(e["name"], e["version"]): (e["state"], e["reason"]) for e in repository.index()}
    assert index == {
        ("m", "1"): ("LOADING", ""),  # given at start, still compiling
        ("new", ""): ("LOADING", ""),
        ("old", "3"): ("UNAVAILABLE", "unloaded"),
    }
    assert repository.index(ready_only=True) == []
    app.dataplane.model("m", "1").ready = True
    assert repository.index(ready_only=True) == [
        {"name": "m", "version": "1", "state": "READY", "reason": ""}
    ]
    app.dataplane.start_draining()
    status, reply, _ = admin_post(app, "/v2/repository/models/x/load", b"")
    assert status == 503 and b"draining" in reply


def test_repository_unloads_are_said_as_loads_are_and_refusals_name_the_model(capsys):
    """A load printed `ready: m/2 ...` on stderr, an unload nothing. A repository refusal of a
    name not served had no `model_name` (a served one's had), nor had a model route's 404."""
    app = App(
        [ServedModel("m", "1", FakeModel(), "test"), ServedModel("m", "2", FakeModel(), "t")],
        Settings(admin_token="adm1n", registry="/nonexistent/registry"),
    )
    for m in app.dataplane.all_models():
        m.ready = True  # as if compiled

    def post(path, body=b""):
        status, reply, _ = admin_post(app, path, body)
        return status, json.loads(reply)

    assert post("/v2/repository/models/m/unload", b'{"parameters": {"version": "2"}}')[0] == 200
    assert capsys.readouterr().err == (
        "unloaded: m/2 (its queued requests answered; requests for it get 404 now)\n"
    )
    for path, body, status, version in (
        ("/v2/repository/models/x/unload", b"", 404, ""),
        ("/v2/repository/models/x/unload", b'{"parameters": {"version": "3"}}', 404, "3"),
        ("/v2/repository/models/x/load", b'{"parameters": {"source": "/nonexistent/x"}}', 400, ""),
        ("/v2/models/x/infer", b"", 404, ""),
        ("/v2/models/x/versions/3/infer", b"", 404, "3"),
    ):
        got, reply = post(path, body)
        assert got == status and (reply["model_name"], reply["model_version"]) == ("x", version), (
            path,
            reply,
        )
    assert 'model="x"' not in app.metrics.render().decode()  # a client's name: never a series


def test_metadata_lists_every_version_and_an_unload_may_name_one():
    # Metadata said "versions": ["1"] with 1 and 2 served; an unload naming a version took
    # every version of the model offline (the parameter was ignored).
    app = App(
        [
            ServedModel("m", "1", FakeModel(), "test"),
            ServedModel("m", "2", FakeModel(), "/srv/exports/m2"),
        ],  # fmt: skip
        Settings(admin_token="adm1n", registry="/nonexistent/registry"),
    )
    for m in app.dataplane.all_models():
        m.ready = True  # as if compiled
    for path in ("/v2/models/m", "/v2/models/m/versions/2"):
        assert call(app, "GET", path)[1]["versions"] == ["1", "2"], path
    # The metrics port needs no token: ann_model_info named the export by its server path.
    text = app.metrics.render().decode()
    assert 'source="m2",version="2"} 1.0' in text and "/srv/exports" not in text, text
    app.metrics.queue_depth.labels("m", "2").set(0)  # as a version's batcher sets it

    def unload(parameters, key="parameters"):
        replies = []
        body = json.dumps({key: parameters}).encode()

        async def main():
            app.handle("POST", "/v2/repository/models/m/unload", b"Bearer adm1n", body, None,
                       lambda *reply: replies.append(reply))  # fmt: skip
            for _ in range(100):
                if replies:
                    break
                await asyncio.sleep(0)

        asyncio.run(main())
        [(status, reply, _)] = replies
        return status, json.loads(reply)

    status, reply = unload({"versoin": "2"})
    assert status == 400 and reply["error"] == (
        'parameters: expected version (unload one version) or unload_dependents, got "versoin"'
    )
    status, reply = unload({"version": "7"})  # named, as infer's 404 is (it was not)
    assert status == 404 and (reply["model_name"], reply["model_version"]) == ("m", "7"), reply
    assert unload({"version": 2}) == (400, {
        "error": 'parameters.version: expected a version as the server names it ("2" for a '
        'registry version, 12 hex digits for an export), got 2; write "2"',
        "model_name": "m", "model_version": "",
    })  # fmt: skip
    # Full-width: a version no model is served as, refused as any other (it was 400 'expected a
    # version such as "2"', as an export's hash was).
    assert unload({"version": "２"}) == (404, {
        "error": 'model \'m\' version: expected one of ["1","2"], got "２"',
        "model_name": "m", "model_version": "２",
    })  # fmt: skip
    assert unload({"version": "2"}) == (200, {"name": "m", "unloaded": ["2"]})
    # Its gauges go with it (ann_queue_depth stayed, at 0, for the version unloaded).
    text = app.metrics.render().decode()
    assert 'ann_queue_depth{model="m",version="2"}' not in text
    assert 'source="m2"' not in text
    assert call(app, "GET", "/v2/models/m/versions/2/ready")[0] == 404
    assert call(app, "GET", "/v2/models/m/ready")[0] == 200  # version 1 serves on
    assert call(app, "GET", "/v2/models/m")[1]["versions"] == ["1"]
    assert unload({"unload_dependents": False}) == (200, {"name": "m", "unloaded": ["1"]})
    assert call(app, "GET", "/v2/models/m/ready")[0] == 404
    # Refusals of a served model's unload are counted under it (they were under model "").
    text = app.metrics.render().decode()
    for line in (
        'ann_requests_total{code="400",handler="repository_unload",model="m",version=""} 2.0',
        'ann_errors_total{code="400",model="m",reason="bad_request",version=""} 2.0',
        'ann_requests_total{code="404",handler="repository_unload",model="m",version=""} 2.0',
        # the last unload took the model's last version: counted under the model it was
        'ann_requests_total{code="200",handler="repository_unload",model="m",version=""} 2.0',
    ):
        assert line in text, line
    assert 'handler="repository_unload",model=""' not in text
    # The body's own key misspelled: ignored, it unloaded every version (refused first now).
    status, reply = unload({"version": "2"}, key="parameter")
    assert status == 400 and reply["error"] == (
        "body: unknown key \"parameter\"; expected parameters (did you mean 'parameters'?)"
    )
    replies = []
    app.handle("POST", "/v2/repository/index", b"Bearer adm1n", b'{"redy": true}', None,
               lambda *reply: replies.append(reply))  # fmt: skip
    [(status, reply, _)] = replies  # the ready filter was silently off
    assert status == 400 and 'unknown key "redy"; expected ready' in json.loads(reply)["error"]


def test_an_export_version_is_addressed_and_unloaded_by_its_hash():
    """An export directory is served with the first 12 hex digits of its manifest's sha256 as
    its version: an unload naming it was 400 'expected a version such as "2"' (only digits
    passed), so it could only go with every version of its name; one all digits
    ("012345678901") passed, and its config said version 12345678901."""
    hashes = ("3f2a9c0b1d4e", "012345678901")
    app = App(
        [ServedModel("m", "1", FakeModel(), "models:/m/1", registry_version=1)]
        + [ServedModel("m", h, FakeModel(), f"/srv/exports/m{h}") for h in hashes],
        Settings(admin_token="adm1n", registry="/nonexistent/registry"),
    )
    for m in app.dataplane.all_models():
        m.ready = True  # as if compiled
    for version in ("1", *hashes):
        route = f"/v2/models/m/versions/{version}"
        for path in (route, route + "/ready", route + "/config", route + "/stats"):
            status, body, _ = call(app, "GET", path)
            assert status == 200, (path, body)
        assert call(app, "GET", route)[1]["model_version"] == version
        assert call(app, "GET", route + "/stats")[1]["model_stats"][0]["version"] == version
        # A registry version is a number; a hash is none, whatever its look (leading zero lost).
        policy = call(app, "GET", route + "/config")[1].get("version_policy")
        assert policy == ({"specific": {"versions": [1]}} if version == "1" else None), policy

    def unload(parameters):
        replies = []

        async def main():
            app.handle("POST", "/v2/repository/models/m/unload", b"Bearer adm1n",
                       json.dumps({"parameters": parameters}).encode(), None,
                       lambda *reply: replies.append(reply))  # fmt: skip
            while not replies:
                await asyncio.sleep(0)

        asyncio.run(asyncio.wait_for(main(), 10))
        [(status, reply, _)] = replies
        return status, json.loads(reply)["error" if status != 200 else "unloaded"]

    served = '["1","012345678901","3f2a9c0b1d4e"]'  # registry numbers, then hashes by text
    # Only the versions served, by their text: a registry version as version numbers are
    # written (no leading zero), a hash as it is (not as the number it looks like).
    for version, fix in (("01", '; write "1"'), ("12345678901", ""), ("3F2A9C0B1D4E", "")):
        assert unload({"version": version}) == (
            404, f'model \'m\' version: expected one of {served}, got "{version}"{fix}'
        )  # fmt: skip
    assert call(app, "GET", "/v2/models/m/versions/01/ready", "adm1n")[1]["error"].endswith(
        '; write "1"'
    )
    assert unload({"version": ""})[0] == 400
    for version in hashes:
        assert unload({"version": version}) == (200, [version])
        assert call(app, "GET", f"/v2/models/m/versions/{version}/ready")[0] == 404
    assert call(app, "GET", "/v2/models/m")[1]["versions"] == ["1"]  # version 1 serves on
    assert unload({"version": "1"}) == (200, ["1"])


def test_versions_are_listed_registry_numbers_by_number_then_hashes(monkeypatch):
    """Every listing of a model's versions sorted them as text: version 10 came before 2 (the
    repository index, metadata's `versions`, a 404's "expected one of", a load's reply). An
    all-digit hash ("012345678901") is no number: it is listed among the hashes."""
    hashes = ("3f2a9c0b1d4e", "012345678901")
    numbers = (10, 2)
    app = App(
        [ServedModel("m", str(n), FakeModel(), f"models:/m/{n}", registry_version=n)
         for n in numbers]
        + [ServedModel("m", h, FakeModel(), f"/srv/exports/m{h}") for h in hashes],
        Settings(admin_token="adm1n", registry="/nonexistent/registry"),
    )  # fmt: skip
    for m in app.dataplane.all_models():
        m.ready = True  # as if compiled
    # Registry versions not loaded are listed too (version 9 also unloaded earlier).
    monkeypatch.setattr(
        app.repository, "_registered", lambda: [("m", "11", "1" * 64), ("m", "9", "9" * 64)]
    )
    app.repository.unavailable[("m", "9")] = "unloaded"
    order = ["2", "9", "10", "11", "012345678901", "3f2a9c0b1d4e"]
    assert [e["version"] for e in app.repository.index()] == order
    assert [e["version"] for e in app.repository.index(ready_only=True)] == [
        v for v in order if v not in ("9", "11")
    ]
    served = [v for v in order if v not in ("9", "11")]
    for version in ("10", "2", hashes[0]):
        assert call(app, "GET", f"/v2/models/m/versions/{version}")[1]["versions"] == served
    for path in ("/v2/models/stats", "/v2/models/m/stats"):
        stats = call(app, "GET", path)[1]["model_stats"]
        assert [s["version"] for s in stats] == served, path
    status, body, _ = call(app, "GET", "/v2/models/m/versions/7")
    assert status == 404 and body["error"] == (
        f"model 'm' version: expected one of {json.dumps(served, separators=(',', ':'))}, got \"7\""
    )
    reply = admin_post(app, "/v2/repository/models/m/unload")[1]
    assert json.loads(reply) == {"name": "m", "unloaded": served}
    # Every version unloaded: the model's 404 says the registry holds it (trial 47b).
    status, body, _ = call(app, "GET", "/v2/models/m")
    assert status == 404 and body["error"].endswith(
        "; 'm' is in the registry, not loaded: POST /v2/repository/models/m/load (the admin "
        "token) loads its latest version"
    ), body
    other = call(app, "GET", "/v2/models/other")[1]["error"]
    assert "in the registry" not in other, other  # a name the registry does not hold
    # On the event loop, a flood of 404s reads the registry once while it is unchanged, and
    # again as soon as it changes (a version registered: a 5 s cache missed it, trial 47e).
    reads, state = [], [(1, 100)]
    monkeypatch.setattr(app.repository, "_registered", lambda: reads.append(1) or [])
    monkeypatch.setattr(app.repository, "_registry_state", lambda: tuple(state))
    app.repository._recent = None
    for _ in range(50):
        call(app, "GET", "/v2/models/other")
    assert len(reads) == 1
    state.append((2, 200))
    call(app, "GET", "/v2/models/other")
    assert len(reads) == 2


def test_the_public_readiness_probe_does_not_list_the_models_without_the_token():
    # /v2/models/NAME/ready needs no token (a probe), and its 404 listed every served model.
    app = App([ServedModel("m", "1", FakeModel(), "test")], Settings(token="s3cret"))
    for path in ("/v2/models/nope/ready", "/v2/models/m/versions/7/ready"):
        status, body, _ = call(app, "GET", path)
        assert status == 404 and "expected one of" not in body["error"], body  # no list
        assert body["error"].endswith("(or its version) is not served"), body
        status, body, _ = call(app, "GET", path, token="s3cret")  # the client: the whole answer
        assert status == 404 and "expected one of" in body["error"], body
    assert call(app, "GET", "/v2/models/nope/infer")[0] == 401  # other routes: the token first


def test_model_configuration_names_an_export_directory_without_its_path():
    # It showed the server's --model path (/srv/...), as metadata showed the training workdir.
    for source, shown in (
        ("/srv/exports/digits_cnn/", "digits_cnn"),
        ("models:/d/2", "models:/d/2"),
    ):
        app = App([ServedModel("m", "1", FakeModel(), source)], Settings())
        status, body, _ = call(app, "GET", "/v2/models/m/config")
        assert status == 200 and body["parameters"]["source"] == {"string_value": shown}, body


def test_an_output_the_model_overflowed_on_is_refused_422_and_its_batch_mates_answered():
    """Finite inputs far outside the data (3e38) made the model's output infinite or NaN: it
    was answered 200 with `null` in the JSON (NaN bytes in binary), which a client comparing a
    score with a threshold read as normal. Now 422 naming the output, the row and the value,
    JSON and binary alike, counted under its own reason; a request batched with it is answered."""
    import numpy as np

    from ann.serve.batcher import Batcher, buckets

    def run(inputs):
        with np.errstate(over="ignore", invalid="ignore"):
            return {"y": inputs["x"] * inputs["x"]}  # 3e38 squared: inf in float32

    app = App([ServedModel("m", "1", FakeModel(), "test")], Settings(monitor="off"))
    [m] = app.dataplane.all_models()
    replies = {}

    def infer(key, x, binary=False):
        x = np.asarray(x, np.float32)
        tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP32"}
        if binary:
            head = json.dumps(
                {
                    "id": key,
                    "inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}],
                    "parameters": {"binary_data_output": True},
                }
            )
            body, length = head.encode() + x.tobytes(), str(len(head)).encode()
        else:
            body = json.dumps({"id": key, "inputs": [{**tensor, "data": x.ravel().tolist()}]})
            body, length = body.encode(), None
        app.handle("POST", "/v2/models/m/infer", None, body, None,
                   lambda *reply: replies.__setitem__(key, reply), length)  # fmt: skip

    async def main():
        m.batcher = Batcher({s: run for s in buckets(8)}, 8, 5.0, 64, wait="full")
        m.batcher.start()
        m.ready = True
        infer("fine", [[1, 2]])
        infer("huge", [[1, 2], [3e38, 1]])
        infer("binary", [[-3e38, 0]], binary=True)
        await m.batcher.close()

    asyncio.run(main())
    status, body, _ = replies["fine"]
    assert status == 200 and json.loads(body)["outputs"][0]["data"] == [1.0, 4.0]
    for key, row, value in (("huge", 1, "inf"), ("binary", 0, "inf")):
        status, body, headers = replies[key]
        assert status == 422 and headers is None, (key, status, body)
        assert json.loads(body) == {
            "error": f"outputs.y: row {row} is {value}, not a finite number: the model overflowed "
            "on this input (its values are far outside what it was trained on); no answer is "
            "given for it",
            "model_name": "m",
            "model_version": "1",
        }
    text = app.metrics.render().decode()
    errors = 'ann_errors_total{code="422",model="m",reason="non_finite_output",version="1"} 2.0'
    assert errors in text
    assert 'ann_requests_total{code="422",handler="infer",model="m",version="1"} 2.0' in text


def test_metrics_carry_the_standard_process_series():
    """trial 42a L4: /metrics had no process_* series (the server's own registry, without
    prometheus_client's process and platform collectors): no alert on its memory or files."""
    from prometheus_client.parser import text_string_to_metric_families

    from ann.serve.metrics import Metrics

    metrics = Metrics(8)
    names = {f.name for f in text_string_to_metric_families(metrics.render().decode())}
    expected = {"process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds",
                "process_max_fds", "process_start_time_seconds", "python_info"}  # fmt: skip
    assert expected <= names, names
    assert not any(name.startswith("process_") for name, _ in metrics.samples())  # /stats'
