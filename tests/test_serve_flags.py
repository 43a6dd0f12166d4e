"""Every server flag is checked before anything starts: a bad one exits 1 with one line that
names the flag (and the fix), before any model is loaded or any port opened."""

import concurrent.futures
import json
import math
import os
import re
import socket
import subprocess
import sys

import pytest
from conftest import ROOT, one_line_error

from ann.serve.settings import Settings

# Flags are checked first: the model is never looked at. A registry URI (in a registry that is
# not there) is resolved after the ports; a path that does not exist is refused before them.
MISSING = "models:/absent/1"
NO_REGISTRY = {"ANN_REGISTRY": "/nonexistent/registry"}
LOG = "--request_log=/tmp/ann-serve-flags.jsonl"  # the request_log_ flags act only with it

BAD = [
    (["--port=0"], "--port=0 must be an integer in [1, 65535]; e.g. --port=8000"),
    (["--port=70000"], "--port=70000"),
    # Quoted as typed, as other commands' flags are: the parsed value said `=inf`, `=1e+12`.
    (["--max_queue_delay_ms=1e400"], "error: --max_queue_delay_ms=1e400 must be a number in"),
    (["--compilation_cache_max_mb", "1e12"], "error: --compilation_cache_max_mb=1e12 must be"),
    (["--port=eighty"], "--port"),
    (["--metrics_port=8000", "--port=8000"], "--metrics_port=8000 is --port too"),
    (["--metrics_port=-1"], "--metrics_port=-1"),
    (["--max_batch_size=0"], "--max_batch_size=0"),
    (["--max_batch_size=8", "--max_queue_rows=4"], "raise --max_queue_rows to at least 8"),
    (["--max_queue_rows=0"], "--max_queue_rows=0"),
    (["--max_queue_delay_ms=nan"], "--max_queue_delay_ms=nan"),
    (["--max_queue_delay_ms=-1"], "--max_queue_delay_ms=-1"),
    (["--max_queue_delay_ms=1e12"], "--max_queue_delay_ms=1e12 must be a number in [0, 60000]"),
    (["--batch_wait=sometimes"], "--batch_wait"),
    (["--max_body_bytes=10"], "--max_body_bytes=10"),
    (["--max_request_line_bytes=10"], "--max_request_line_bytes=10"),
    (["--max_header_bytes=10"], "--max_header_bytes=10"),
    (["--max_headers=0"], "--max_headers=0"),
    (["--header_timeout_s=0"], "--header_timeout_s=0"),
    (["--body_timeout_s=inf"], "--body_timeout_s=inf"),
    (["--keepalive_timeout_s=-5"], "--keepalive_timeout_s=-5"),
    (["--max_connections=0"], "--max_connections=0"),
    ([LOG, "--request_log_sample=1.5"], "--request_log_sample=1.5 must be a number in (0, 1]"),
    ([LOG, "--request_log_max_bytes=10"], "--request_log_max_bytes=10 must be an integer in"),
    ([LOG, "--request_log_backups=-1"], "--request_log_backups=-1"),
    (["--request_log=/nonexistent/dir/requests.jsonl"], "--request_log=/nonexistent/dir"),
    (["--request_log=/tmp"], "--request_log=/tmp is a folder; give a file in it, e.g. "),
    # A file where its folder should be was "its folder ... does not exist", then "its folder
    # F is a file, not a folder": now `atomic.below_a_file`'s words, as every reader's.
    (
        [f"--request_log={ROOT}/README.md/requests.jsonl"],
        f"--request_log={ROOT}/README.md/requests.jsonl cannot be created: {ROOT}/README.md is "
        "a file, so nothing can be below it; give a file in a folder this user may write",
    ),
    (
        [f"--request_log={ROOT}/README.md/x/requests.jsonl"],
        f"cannot be created: {ROOT}/README.md is a file, so nothing can be below it",
    ),
    (["--shutdown_timeout=-1"], "--shutdown_timeout=-1"),
    # Accepted and ignored: a setting the user believed in.
    (
        ["--monitor=off", "--monitor_min_rows=50"],
        "--monitor_min_rows=50 does nothing with --monitor=off; drop it, or leave --monitor on",
    ),
    # Before the flags' values are judged: it said to raise --monitor_window_rows, then refused
    # the raised value as doing nothing.
    (
        ["--monitor=off", "--monitor_window_rows=10"],
        "--monitor_window_rows=10 does nothing with --monitor=off; drop it, or leave --monitor on",
    ),
    (
        ["--request_log_sample=1"],
        "--request_log_sample=1 does nothing without --request_log; drop it, or add "
        "--request_log=FILE",
    ),
    (["--token="], "token: expected printable ASCII"),
    (["--token=two words"], "token: expected printable ASCII"),
    # It said "cannot read it ([Errno 2] No such file or directory: '/nonexistent/token')".
    (
        ["--token_file=/nonexistent/token"],
        "--token_file=/nonexistent/token does not exist; give the file that holds the token",
    ),
    (["--token_file=/tmp"], "--token_file=/tmp is a folder; give the file that holds the token"),
    (  # read whole: it grew without bound
        ["--token_file=/dev/zero"],
        "--token_file=/dev/zero is not a regular file (a device, a pipe or a socket); give the "
        "file that holds the token",
    ),
    (["--token_file=/dev/null", "--token=x"], "--token_file and --token"),
    (["--admin_token="], "admin_token: expected printable ASCII"),
    # Named as given (it said "admin_token: ... other than --token" of two files).
    (
        ["--admin_token=same", "--token=same"],
        "--admin_token and --token give the same token: expected an admin token of its own",
    ),
    (
        ["--admin_token_file=/etc/hostname", "--token_file=/etc/hostname"],
        "--admin_token_file=/etc/hostname and --token_file=/etc/hostname give the same token",
    ),
    (["--admin_token_file=/nonexistent/a"], "--admin_token_file=/nonexistent/a does not exist"),
    # It said "cannot listen ([Errno -2] Name or service not known)", after the models loaded;
    # then "is not an address of this machine" of what is not an address at all.
    (
        ["--host=999.1.1.1"],
        "--host=999.1.1.1 is not an IPv4 address (four numbers from 0 to 255, as 127.0.0.1); "
        "give an address of this machine, e.g. --host=127.0.0.1 (this machine only) or "
        "--host=0.0.0.0 (every address)",
    ),
    (["--host=192.0.2.1"], "--host=192.0.2.1 is not an address of this machine"),
    (["--admin_token_file=/dev/null", "--admin_token=x"], "--admin_token_file and --admin_token"),
    (["stray"], "unexpected argument 'stray': this command takes flags only"),
]


@pytest.mark.parametrize(
    "host, message",
    [
        ("999.1.1.1", "is not an IPv4 address (four numbers from 0 to 255, as 127.0.0.1)"),
        ("1.2.3", "is not an IPv4 address"),  # inet_aton's shorthand for 1.2.0.3
        ("ab:cd", "is not an IPv6 address (hexadecimal groups between colons, as ::1)"),
        # A traceback: UnicodeError (encoding with 'idna' codec failed) from getaddrinfo.
        ("a..b", "is not a host name (labels of 1 to 63 letters, digits and -, not starting or "
         "ending with -, between dots)"),
        ("x" * 64, "is not a host name"),
        ("-x", "is not a host name"),
        ("hôst", "is not an ASCII host name (a host name is letters, digits, - and .; an "
         "internationalized one goes in its ASCII form, xn--hst-kna)"),
        ("[::1]", "give the IPv6 address without brackets, --host=::1"),
        ("localhost:8000", "give the port apart, --host=localhost --port=8000"),
        # Not "--port=８０００", a port that is refused in turn.
        ("localhost:８０００", "give an address of this machine, e.g. --host=127.0.0.1"),
    ],
)  # fmt: skip
def test_a_host_that_is_not_an_address_or_a_name_is_said_to_be_one(host, message):
    with pytest.raises(ValueError) as e:
        Settings(host=host)
    assert str(e.value).startswith(f"--host={host}")
    assert message in str(e.value), str(e.value)
    for fine in ("127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "my-host.example.", "svc_1"):
        Settings(host=fine)


def test_listening_beyond_this_machine_without_a_token_is_warned_of():
    from ann.serve.settings import exposure_warning

    for quiet in (Settings(), Settings(host="::1"), Settings(host="localhost"),
                  Settings(host="0.0.0.0", token="s3cret")):  # fmt: skip
        assert exposure_warning(quiet) is None, quiet.host
    from test_serve import free_port

    port = free_port()
    result = run_server(["--host=0.0.0.0", f"--port={port}"])  # warned, then the missing model
    warning, error = result.stderr.splitlines()
    assert warning == (
        "warning: --host=0.0.0.0 listens beyond this machine without a token: anyone who "
        f"reaches port {port} may infer and read the models' metadata; give --token_file (a "
        "mounted secret) or $ANN_SERVE_TOKEN"
    )
    assert error.startswith("error: ") and MISSING in error


def run_server(args, env=None, model=MISSING):
    return subprocess.run(
        [sys.executable, "-m", "ann.serve", f"--model={model}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **NO_REGISTRY, **(env or {})},
    )


def test_bad_flags_exit_1_with_one_line():
    cases = [(args, message, None) for args, message in BAD]
    cases.append(([], "$ANN_SERVE_TOKEN: expected printable ASCII", {"ANN_SERVE_TOKEN": ""}))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: run_server(c[0], c[2]), cases))
    for (args, message, _), result in zip(cases, results):
        line = one_line_error(result)
        assert message in line, (args, message, line)
        assert MISSING not in line, (args, line)  # refused before any model loads
    # Missing --model is a flag error too.
    result = subprocess.run([sys.executable, "-m", "ann.serve"], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert "--model" in one_line_error(result)


def test_a_token_is_read_alike_from_its_file_and_its_variable(tmp_path):
    """A Kubernetes Secret made `--from-file` ends in a newline: deployment.yaml's
    --token_file stripped it, kserve.yaml's $ANN_SERVE_TOKEN was refused ("got other
    characters"), a crash loop. Both drop the whitespace around the token; a token still
    refused names where it came from and its first bad character."""
    secret = tmp_path / "token"
    secret.write_text("s3cret-token\r\n")
    fine = [([f"--token_file={secret}"], None), ([], {"ANN_SERVE_TOKEN": "s3cret-token\n"}),
            ([], {"ANN_SERVE_TOKEN": "s3cret-token\r\n"}),
            ([], {"ANN_SERVE_ADMIN_TOKEN": "admin-token\n"})]  # fmt: skip
    bad_file = tmp_path / "bad"
    bad_file.write_text("s3cret tok\n", encoding="utf-8")
    said = ": expected printable ASCII without spaces (a Bearer token, RFC 6750), got "
    refused = [
        ([], {"ANN_SERVE_TOKEN": "two words\n"},
         f"error: $ANN_SERVE_TOKEN{said}a space (U+0020) at character 4 of 9; set --token_file "
         "or $ANN_SERVE_TOKEN to a real token, or unset both for none"),
        ([f"--token_file={bad_file}"], None,
         f"error: --token_file={bad_file}{said}a space (U+0020) at character 7 of 10"),
        (["--token=caf\u00e9"], None,
         f"error: --token{said}LATIN SMALL LETTER E WITH ACUTE (U+00E9) at character 4 of 4"),
        ([], {"ANN_SERVE_ADMIN_TOKEN": "a\tb"},
         f"error: $ANN_SERVE_ADMIN_TOKEN{said}a tab (U+0009) at character 2 of 3; set "
         "--admin_token_file or $ANN_SERVE_ADMIN_TOKEN"),
    ]  # fmt: skip
    cases = [(args, env) for args, env in fine] + [(args, env) for args, env, _ in refused]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: run_server(c[0], c[1]), cases))
    for (args, env), result in zip(fine, results):  # past the tokens: the missing model
        assert MISSING in one_line_error(result), (args, env, result.stderr)
    for (args, env, message), result in zip(refused, results[len(fine) :]):
        assert one_line_error(result).startswith(message), (args, env, result.stderr)
    with pytest.raises(ValueError, match=r"^token: .* got a newline \(U\+000A\) at character 2 "):
        Settings(token="a\nb")  # from Python: the field's name


def test_a_registry_uri_with_the_registry_off_is_one_line_before_anything_loads():
    """`--registry=off` (any case) serves no registry: a models:/ --model is refused, naming
    both, as a path that holds no export is (before the ports and any model)."""
    assert one_line_error(run_server(["--registry=Off"])) == (
        f"error: {MISSING} is a registry URI, and the server runs with --registry=Off (no "
        "registry); give --registry=DIR, or the export directory"
    )


def test_a_compilation_cache_dir_that_cannot_be_one_is_refused_before_any_model_loads(tmp_path):
    """A file, or a path below one: one line naming the flag and the fix (jax warned per
    executable and ran without a cache). $JAX_COMPILATION_CACHE_DIR (the tests' own cache)
    wins over the flag, which then does nothing at all."""
    from conftest import without_compilation_cache

    afile = tmp_path / "file"
    afile.write_text("")
    fix = "give a directory this user may write, or leave the flag out for no cache"
    # What the path is: a file said "(File exists)", a path below one "(Not a directory)".
    for given, why in (
        (afile, "is a file, not a directory"),
        (afile / "cache", f"cannot be created: {afile} is a file, so nothing can be below it"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "ann.serve", f"--model={MISSING}",
             f"--compilation_cache_dir={given}"],
            capture_output=True, text=True, timeout=60, env=without_compilation_cache(),
        )  # fmt: skip
        assert one_line_error(result) == (f"error: --compilation_cache_dir={given} {why}; {fix}")
    # Before a port in use: that was said first, and the README's example did not show.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = subprocess.run(
            [sys.executable, "-m", "ann.serve", f"--model={MISSING}",
             f"--compilation_cache_dir={afile}", f"--port={taken.getsockname()[1]}"],
            capture_output=True, text=True, timeout=60, env=without_compilation_cache(),
        )  # fmt: skip
    assert "--compilation_cache_dir=" in one_line_error(result)
    assert "JAX_COMPILATION_CACHE_DIR" in os.environ  # conftest's
    with socket.socket() as free:  # not 8000: a server of another job may hold it
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    line = one_line_error(run_server([f"--compilation_cache_dir={afile}", f"--port={port}"]))
    assert MISSING in line and "compilation_cache_dir" not in line, line
    with pytest.raises(ValueError, match="--compilation_cache_dir: expected a directory"):
        Settings(compilation_cache_dir="")


def test_compilation_cache_dir_has_one_rule_in_serve_and_train(tmp_path, monkeypatch):
    """' ', '~/x' and 'OFF' were directory names made in the current directory by `ann train`
    (a literal `~` there invites `rm -rf ~`), and `ann serve --compilation_cache_dir=off` made
    one named off while for train 'off' meant no cache: blanks refused, `~` expanded, 'off'
    in any case no cache, in both."""
    import jax

    from ann.config import ConfigError
    from ann.serve.__main__ import enable_compilation_cache
    from ann.train.loop import _compilation_cache_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for off in ("off", "OFF", "Off"):
        assert _compilation_cache_path(off, "runs/a") is None
        Settings(compilation_cache_dir=off)  # accepted
        enable_compilation_cache(off, 1024)  # nothing made, nothing turned on
    assert _compilation_cache_path("~/cc", "runs/a") == str(tmp_path / "home" / "cc")
    assert _compilation_cache_path("", "runs/a") == str(tmp_path / "runs" / ".jax_cache")
    with pytest.raises(ConfigError) as e:
        _compilation_cache_path(" ", "runs/a")
    assert str(e.value) == (
        "config key 'compilation_cache_dir'=' ': expected a directory, got only blanks ' '; "
        "give a directory, or 'off'"
    )
    with pytest.raises(ValueError, match="^--compilation_cache_dir: expected a directory, got "):
        Settings(compilation_cache_dir=" ")
    assert os.listdir(tmp_path) == []
    assert jax.config.jax_compilation_cache_dir == os.environ.get("JAX_COMPILATION_CACHE_DIR")


def test_a_compilation_cache_dir_this_user_may_not_write_is_refused(tmp_path, monkeypatch):
    """As a user without write access sees it (the tests may run as root, who may write
    anywhere); the tests' own cache directory is put aside for the call, as it would win."""
    import jax

    from ann import compilation_cache

    monkeypatch.setattr(os, "access", lambda path, mode: False)
    shared = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    try:
        with pytest.raises(ValueError) as e:
            compilation_cache.enable(str(tmp_path), "--compilation_cache_dir=D", "give another")
    finally:
        jax.config.update("jax_compilation_cache_dir", shared)
    assert str(e.value) == (
        "--compilation_cache_dir=D is not writable (permission denied); give another"
    )


def test_a_cache_directory_set_elsewhere_still_keeps_every_executable(tmp_path, monkeypatch):
    """$JAX_COMPILATION_CACHE_DIR wins over the flag (and training's default), and jax's 1 s
    threshold stayed: a server restarted with the variable read 0 of its 11 batch sizes."""
    import jax

    from ann import compilation_cache

    monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")
    threshold = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)  # jax's default
    try:
        assert not compilation_cache.enable(str(tmp_path / "d"), "--f=D", "fix")
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", threshold)
    assert not (tmp_path / "d").exists()  # the directory set elsewhere is the one used


_BOUNDED = """
import json, os, sys, time
import numpy as np, jax, jax.numpy as jnp
from ann import compilation_cache
path, max_mb = sys.argv[1], float(sys.argv[2])
compilation_cache.enable(path, "--compilation_cache_dir", "fix", max_mb)
compilation_cache.listen()
entries = {}
for k in map(int, sys.argv[3].split(",")):
    before = set(os.listdir(path))
    jax.jit(lambda x: jnp.sin(x) * k + k)(np.ones(4, np.float32)).block_until_ready()
    entries[k] = sorted(set(os.listdir(path)) - before)
    time.sleep(0.02)  # each entry's time its own
print(json.dumps({"entries": entries, "hits": compilation_cache.totals()["cache_hits"]}))
"""


def test_the_cache_keeps_to_its_bound_removing_the_least_recently_used(tmp_path):
    """--compilation_cache_dir never pruned: every model version added its executables (about
    6 MB for the digits CNN) for good. Past --compilation_cache_max_mb (training's config key
    of the same name) the least recently used entries go, at the start and as new ones are
    written; an entry read counts as used."""
    from conftest import without_compilation_cache

    cache = tmp_path / "cache"

    def run(max_mb, ks):
        result = subprocess.run(
            [sys.executable, "-c", _BOUNDED, str(cache), str(max_mb), ks],
            capture_output=True, text=True, timeout=120, env=without_compilation_cache(),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Warning" not in result.stderr, result.stderr[-3000:]
        return json.loads(result.stdout)

    written = run(-1, "0,1,2,3")["entries"]  # no bound: one entry per function, all kept
    files = {int(k): names for k, names in written.items()}
    assert all(len(names) == 1 for names in files.values()), files
    files = {k: names[0] for k, names in files.items()}
    size = {k: os.path.getsize(cache / name) for k, name in files.items()}
    limit = size[1] + size[2] + size[3]
    # Bounded to three of them: the oldest (0) goes at the start; 1 is read (a hit: used now),
    # so writing 4 removes 2, the least recently used, not 1.
    second = run(limit / (1 << 20), "1,4")
    assert second["hits"] == 1 and second["entries"]["1"] == [], second
    left = {name for name in os.listdir(cache) if name.endswith("-cache")}
    assert files[0] not in left and files[2] not in left, (files, left)
    assert files[1] in left and set(second["entries"]["4"]) <= left, (files, left)
    assert sum(os.path.getsize(cache / name) for name in left) <= limit


def test_settings_check_every_field():
    assert Settings().problem() is None
    with pytest.raises(ValueError, match="raise --max_queue_rows to at least 64"):
        Settings(max_queue_rows=63)
    with pytest.raises(ValueError, match="--max_connections=0"):
        Settings(max_connections=0)
    assert Settings(max_queue_rows=64).queue_rows == 64
    for bad in (0, -2, math.inf, math.nan, 1e12):  # 1e12 MiB was taken (a fresh-user check)
        with pytest.raises(ValueError) as e:
            Settings(compilation_cache_max_mb=bad)
        assert "must be a number in (0, 16777216] (MiB; or -1 for no bound)" in str(e.value)
    assert Settings(compilation_cache_max_mb=-1).problem() is None  # no bound
    assert Settings(metrics_port=8001).file_descriptors() > 2 * Settings().max_connections


def test_a_port_in_use_is_named_before_any_model_loads_and_at_the_bind_too():
    """It said "cannot listen ([Errno 98] error while attempting to bind on address
    ('127.0.0.1', 18431): address already in use)", once the models had loaded."""
    import asyncio

    from test_serve_routes import FakeModel

    from ann.serve.app import App
    from ann.serve.dataplane import ServedModel
    from ann.serve.http import serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        said = f"--port={port} is in use by another process; choose another --port"
        assert one_line_error(run_server([f"--port={port}"])) == f"error: {said}"
        with socket.socket() as free:  # --port itself free (8000 may be taken here)
            free.bind(("127.0.0.1", 0))
            other = free.getsockname()[1]
        line = one_line_error(run_server([f"--port={other}", f"--metrics_port={port}"]))
        assert line == f"error: --metrics_port={port} is in use by another process; choose " + (
            "another --metrics_port"
        )
        # Taken between the check and the server's own bind: the same words.
        app = App([ServedModel("m", "1", FakeModel(), "test")], Settings(port=port))
        with pytest.raises(OSError) as e:
            asyncio.run(serve(app))
        assert str(e.value) == said


def test_a_model_path_that_holds_no_export_is_refused_before_a_port_in_use(tmp_path):
    """`--model=/path/that/does/not/exist` with the port taken said the port was in use; only
    once it was free did it say the path does not exist. A path is judged on the file system
    alone, before the ports; a registry URI keeps its place, after them."""
    missing = str(tmp_path / "nowhere")
    give = (
        "give an export directory (ann export) or a registry URI models:/NAME/VERSION, "
        "models:/NAME@ALIAS or models:/NAME/latest"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = f"--port={taken.getsockname()[1]}"
        cases = [(m, extra) for m in (missing, tmp_path) for extra in ([], [f"--model={MISSING}"])]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:  # alone, and beside a URI
            results = list(pool.map(lambda c: run_server([port, *c[1]], model=c[0]), cases))
            uri = run_server([port])
    said = [f"error: {missing} does not exist; {give}"] * 2
    said += [f"error: {tmp_path} holds no manifest.json; {give}"] * 2  # a folder, no export
    assert [one_line_error(r) for r in results] == said
    assert "is in use by another process" in one_line_error(uri)


def test_settings_that_need_the_model():
    from ann.serve.__main__ import body_too_small

    class Wide:
        name, version = "wide", "1"
        model = type("M", (), {"inputs": {"x": {"shape": [-1, 1000], "dtype": "float32"}}})

    assert "--max_body_bytes=1024 cannot hold one row of model wide" in body_too_small([Wide], 1024)
    assert body_too_small([Wide], 8 << 20) is None


def test_an_open_file_limit_the_kernel_refuses_is_one_line():
    # Under an unlimited `ulimit -Hn` the kernel (fs.nr_open) may still refuse the raise.
    from test_serve import free_port

    code = (
        "import resource, sys\n"
        "from absl import flags\n"
        "import ann.serve.__main__ as m\n"
        # A port of its own: the default, 8000, may be in use here (a trial's server had it).
        f"m.define_flags(); flags.FLAGS(['serve', '--model=x', '--port={free_port()}'])\n"
        "resource.getrlimit = lambda kind: (1024, resource.RLIM_INFINITY)\n"
        "def refuse(*args): raise ValueError('not allowed to raise maximum limit')\n"
        "resource.setrlimit = refuse\n"
        "m.ensure_file_descriptors(5000)\n"
    )
    line = one_line_error(_python(code))
    assert "--max_connections=512 needs about 5000 open files" in line, line
    assert "not allowed to raise maximum limit" in line, line


def test_weights_are_compiled_in_while_the_copies_fit_constant_weights_mb(digits_export):
    from ann import artifact
    from ann.serve.batcher import buckets
    from ann.serve.dataplane import compile_buckets, constant_weights

    model = artifact.load(str(digits_export[1]))
    sizes = buckets(64)
    copies_mb = model.weights_bytes * len(sizes) / (1 << 20)
    assert constant_weights(model, sizes, copies_mb)
    assert not constant_weights(model, sizes, copies_mb * 0.99)
    assert not constant_weights(model, sizes, 0)

    def argument_bytes(max_mb: float) -> list[int]:
        run, weights_in = compile_buckets(model, [1, 2], max_mb)
        assert weights_in == (max_mb > 0)  # what the log line says
        return [run[n].executable.memory_analysis().argument_size_in_bytes for n in (1, 2)]

    assert min(argument_bytes(0)) >= model.weights_bytes > 1000 > max(argument_bytes(256))
    with pytest.raises(ValueError, match=r"--constant_weights_mb=-1 must be .*\(MiB\)"):
        Settings(constant_weights_mb=-1)


def test_an_ipv6_host_is_bracketed_in_urls():
    # `serving ... on http://::1:8000` was printed: a URL no client can use.
    assert Settings(host="::1").url_host() == "[::1]"
    assert Settings(host="127.0.0.1").url_host() == "127.0.0.1"
    assert Settings(host="localhost").url_host() == "localhost"


def test_the_server_runs_cpu_computations_on_the_calling_thread():
    """`ann serve` turns XLA:CPU's asynchronous dispatch off before the CPU backend exists
    (jax reads the setting only when it makes the backend)."""
    from test_serve import free_port

    code = (
        "import sys\n"
        "from absl import flags\n"
        "from jax._src import xla_bridge\n"
        "import ann.serve.__main__ as m, ann.serve.repository as r\n"
        "def load(*args):\n"
        "    print('backend made before:', bool(xla_bridge._backends))\n"
        "    print('async:', xla_bridge._CPU_ENABLE_ASYNC_DISPATCH.value)\n"
        "    sys.exit(0)\n"
        "r.load_models = load\n"
        # A port of its own: the default, 8000, may be in use here (a trial's server had it).
        # A registry URI: a path that does not exist is refused before the models are loaded.
        f"m.define_flags(); flags.FLAGS(['serve', '--model=models:/x/1', '--port={free_port()}'])\n"
        "m.main(['serve'])\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "backend made before: False" in result.stdout, result.stdout
    assert "async: False" in result.stdout, result.stdout


def _python(code: str) -> subprocess.CompletedProcess:
    """`python -c code` in a fresh process (what a server process's setup does, away from this
    test process's jax and flags)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "flags, message",
    [
        # RotatingFileHandler never rotates with no backup: the log grew without bound.
        ({"request_log_backups": 0}, "--request_log_backups=0 must be an integer in [1, 1000]"),
        # An empty log, accepted in silence.
        ({"request_log_sample": 0}, "--request_log_sample=0 must be a number in (0, 1]"),
        # Every label was then counted unknown.
        ({"monitor_feedback_capacity": 0}, "--monitor_feedback_capacity=0 must be an integer in"),
    ],
)
def test_request_log_and_feedback_settings_that_do_nothing_are_refused(tmp_path, flags, message):
    with pytest.raises(ValueError) as e:
        Settings(request_log=str(tmp_path / "r.jsonl"), **flags)
    assert str(e.value).startswith(message), str(e.value)


def test_a_request_log_inside_a_runs_checkpoints_is_refused(tmp_path):
    # It was accepted there, where an export, a registry or a report refuses it.
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text('{"experiment": "x", "total_steps": 1}')
    with pytest.raises(ValueError) as e:
        Settings(request_log=str(run / "checkpoints" / "log.jsonl"))
    assert str(e.value) == (
        f"--request_log={run / 'checkpoints' / 'log.jsonl'} is inside the checkpoints of the "
        f"training run at {run}, which the run manages; give a path outside {run / 'checkpoints'}"
    )
    Settings(request_log=str(run / "requests.jsonl"))  # beside them, in the run: accepted


def test_a_folder_given_as_request_log_gets_a_file_that_is_accepted(tmp_path):
    """`--request_log=RUN/checkpoints` said "is a folder; give a file in it", and a file in it
    was then refused (the run manages its checkpoints). Every folder's refusal now names a
    file, and that file is accepted."""
    run, export, report = tmp_path / "run", tmp_path / "export", tmp_path / "report"
    (run / "checkpoints" / "10").mkdir(parents=True)
    (run / "config.json").write_text('{"experiment": "x", "total_steps": 1}')
    (export / "sub").mkdir(parents=True)
    (export / "manifest.json").write_text('{"format": "ann-export", "files": {}}')
    report.mkdir()
    (report / "report.json").write_text("{}")
    with pytest.raises(ValueError) as e:
        Settings(request_log=str(run / "checkpoints"))
    assert str(e.value) == (
        f"--request_log={run / 'checkpoints'} is a folder, and a file in it would be inside the "
        f"checkpoints of the training run at {run}, which the run manages; give a file outside "
        f"{run / 'checkpoints'}, e.g. --request_log={run / 'requests.jsonl'}"
    )
    for folder in (tmp_path, run, run / "checkpoints", run / "checkpoints" / "10", export,
                   export / "sub", report):  # fmt: skip
        with pytest.raises(ValueError) as e:
            Settings(request_log=str(folder))
        message = str(e.value)
        assert message.startswith(f"--request_log={folder} is a folder"), message
        suggested = message.split(", e.g. --request_log=")[1]
        Settings(request_log=suggested)  # accepted
    # Pasteable: a path with a space is quoted for the shell (it split it in two).
    spaced = tmp_path / "sp ace"
    spaced.mkdir()
    with pytest.raises(ValueError) as e:
        Settings(request_log=str(spaced))
    assert str(e.value).endswith(f"e.g. --request_log='{spaced / 'requests.jsonl'}'"), e.value


def test_the_request_log_sample_range_is_stated_as_it_is_checked():
    # It said "expected a value in [0, 1]" though 0 is refused.
    from ann.serve.settings import flag_fields

    log = "/tmp/ann-serve-flags.jsonl"
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError) as e:
            Settings(request_log=log, request_log_sample=bad)
        assert str(e.value).startswith(
            f"--request_log_sample={bad} must be a number in (0, 1] (a share of requests"
        ), str(e.value)
    Settings(request_log=log, request_log_sample=1e-9)
    Settings(request_log=log, request_log_sample=1)
    assert "request_log_sample" in [f.name for f in flag_fields()]


def test_help_states_each_range_the_check_refuses_outside_of():
    # `ann serve --help` gave no range of a flag whose refusal states one (--port, the batch
    # sizes, the timeouts): each help now ends with the range and unit the check uses.
    from ann.serve.settings import RANGES, expected, flag_fields

    result = subprocess.run([sys.executable, "-m", "ann.serve", "--help"], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # absl wraps the help at 80 columns
    flags = {f.name for f in flag_fields()}
    for name in [name for name, *_ in RANGES if name in flags]:
        own = re.split(r" --\w+: ", text.split(f"--{name}: ", 1)[1], maxsplit=1)[0]  # its own
        assert f"Takes {expected(name)}." in own, (name, own)
    assert "--port: Port. Takes an integer in [1, 65535]." in text
    assert "Takes a number in [0, 60000] (milliseconds)." in text


def test_a_value_that_is_no_number_and_one_out_of_range_are_refused_alike():
    """`--port=abc` said "must be an integer; e.g. --port=8000" and `--port=70000` said
    ": expected a value in [1, 65535]": each now names the flag, the value, what it takes and
    an example; so do a monitor flag's (absl's bounds: `--batch=abc` did not name them)."""
    cases = [
        (["--port=abc"], "--port=abc must be an integer in [1, 65535]; e.g. --port=8000"),
        (["--port=70000"], "--port=70000 must be an integer in [1, 65535]; e.g. --port=8000"),
        (
            ["--max_queue_delay_ms=soon"],
            "--max_queue_delay_ms=soon must be a number in [0, 60000] (milliseconds); e.g. "
            "--max_queue_delay_ms=2.0",
        ),
        (  # unset by default: an example of its own (it had none)
            ["--metrics_port=x"],
            "--metrics_port=x must be an integer in [1, 65535]; e.g. --metrics_port=9100",
        ),
    ]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: run_server(c[0], None), cases))
    for (args, message), result in zip(cases, results):
        assert one_line_error(result) == f"error: {message}", args
    for args, message in [
        (
            ["feedback", "--batch=abc"],
            "--batch=abc must be an integer in [1, 100000]; e.g. --batch=1000",
        ),
        (
            ["feedback", "--batch=0"],
            "--batch=0 must be an integer in [1, 100000]; e.g. --batch=1000",
        ),
        (["drift", "--top=x"], "--top=x must be an integer in [0, 1000]; e.g. --top=6"),
    ]:
        result = subprocess.run([sys.executable, "-m", "ann", "monitor", *args],
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert one_line_error(result) == f"error: {message}", args


def test_a_model_given_twice_names_both_flags_and_the_fix(monkeypatch):
    """trial 42a L7: `--model=exports/digits_cnn --model=exports/digits_cnn` said only "is
    given twice", with no fix."""
    import types

    from ann.serve import repository

    def load(spec, registry):
        return types.SimpleNamespace(name="digits_cnn", version="e67fe90eced7")

    monkeypatch.setattr(repository, "load_model", load)
    said = "--model: digits_cnn version e67fe90eced7 is given twice"
    for specs, given in [
        (["exports/d", "exports/d"], "--model=exports/d twice"),
        (
            ["exports/d", "models:/digits_cnn/1"],
            "--model=exports/d and --model=models:/digits_cnn/1",
        ),
    ]:
        with pytest.raises(ValueError) as e:
            repository.load_models(specs, None)
        assert str(e.value) == f"{said} ({given}); give it once"
