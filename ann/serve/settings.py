"""The server's settings: the one place where each default is written.

Every field is a flag of `ann serve` of the same name (`ann/serve/__main__.py` defines
the flags from these fields: their defaults, help and choices), except those marked `flag=False`.
Values are checked when a `Settings` is made (`ValueError`: one line naming the flag and the
fix), so a setting that cannot work stops the server before its port opens.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from ann import arguments, atomic, directory_kind
from ann.monitor import CORRECTIONS, MIN_LABELS, MIN_TEST_ROWS
from ann.monitor import MIN_ROWS as DRIFT_MIN_ROWS


def _flag(default: Any, help: str, kind: type | None = None, **extra: Any) -> Any:
    """A field that is also a flag: `kind` (int, float, str) when the default is None;
    `choices` for an enum flag; `env` names a variable that overrides the default;
    `flag=False` for a setting without a flag."""
    metadata = {"help": help, "kind": kind or type(default), **extra}
    return dataclasses.field(default=default, metadata=metadata)


# The fix of a --compilation_cache_dir that cannot be a directory.
# `--registry=off` (any case): no registry, as `--compilation_cache_dir=off` is no cache.
REGISTRY_OFF = "off"


def no_registry(registry: str | None) -> bool:
    """Whether a `--registry` value (None: not given) turns the registry off."""
    return registry is not None and registry.strip().lower() == REGISTRY_OFF


def registry_uri_refusal(spec: str, registry: str | None) -> str | None:
    """The one line refusing a model `spec` that is a registry URI (`models:/...`) where
    `registry` is off (`no_registry`), else None: a `--model` (before anything loads) and a
    repository load's source alike."""
    from ann.artifact import REGISTRY_URI_SCHEME  # os and numpy only

    if no_registry(registry) and spec.startswith(REGISTRY_URI_SCHEME):
        return (
            f"{spec} is a registry URI, and the server runs with --registry={registry} (no "
            "registry); give --registry=DIR, or the export directory"
        )
    return None


CACHE_OFF_FIX = "give one, or leave the flag out (or give 'off') for no cache"


@dataclasses.dataclass
class Settings:
    """The server's configuration, one field per flag of `ann serve`.

    Limits on clients (ann/serve/http.py), defaults and where they come from:
    `max_request_line_bytes` 8192 (414 above; nginx `large_client_header_buffers 4 8k`, Apache
    `LimitRequestLine 8190`); `max_header_bytes` 16384 for all header fields together (431;
    h11's and so uvicorn's `max_incomplete_event_size` 16 KiB, Node's `--max-http-header-size`
    16 KiB); `max_headers` 100 fields (431; Apache `LimitRequestFields 100`); `header_timeout_s`
    60 for a whole request head and `body_timeout_s` 60 between two reads of a body (408;
    nginx `client_header_timeout` and `client_body_timeout`, both 60 s); `keepalive_timeout_s` 5
    idle between requests (uvicorn `--timeout-keep-alive` 5 s); `max_connections` 512 open at
    once (503 above; nginx `worker_connections 512`, which also fits the common `ulimit -n` of
    1024); `max_body_bytes` 8 MiB (413).
    """

    host: str = _flag("127.0.0.1", "Address to bind; 0.0.0.0 only in a container.")
    port: int = _flag(8000, "Port.")
    metrics_port: int | None = _flag(
        None,
        "Second port serving /metrics and /v2/health/* without the token (for Prometheus); "
        "off by default.",
        int,
    )
    registry: str | None = _flag(
        None,
        "Registry directory for models:/ URIs, whose versions not served the repository index "
        "lists (default $ANN_REGISTRY, else ./registry); 'off' (any case): none.",
        str,
    )
    max_batch_size: int = _flag(64, "Most rows per batch and request.")
    max_queue_delay_ms: float = _flag(2.0, "Longest a request waits for its batch.")
    batch_wait: str = _flag(
        "idle",
        "idle: run a batch as soon as no more requests are waiting to be read (at most "
        "max_queue_delay_ms); full: wait until it is full or max_queue_delay_ms has passed.",
        choices=["idle", "full"],
    )
    constant_weights_mb: float = _flag(
        256.0,
        "Compile the weights into each batch size's executable (faster small batches on CPU: "
        "no per-call weight repacking) while the copies, weights x batch sizes, total at most "
        "this many MiB for that model version; 0: always pass them on each call.",
    )
    compilation_cache_dir: str | None = _flag(
        None,
        "Directory for XLA's persistent compilation cache (made if missing): a restart reads "
        "each batch size's executable from it instead of compiling it again. Off by default (a "
        "server may run from a read-only image; 'off', any case: none, as when left out); "
        "$JAX_COMPILATION_CACHE_DIR, if set, wins.",
        str,
    )
    compilation_cache_max_mb: float = _flag(
        1024.0,  # compilation_cache.MAX_MB
        "Most MiB the compilation cache's directory keeps: past it, its least recently used "
        "executables are removed (at the start, and as new ones are written; each model version "
        "adds some, about 6 MB for the digits CNN).",
    )
    max_queue_rows: int | None = _flag(None, "Rows queued before 503 (default 16 batches).", int)
    max_body_bytes: int = _flag(8 << 20, "Largest request body (413).")
    max_request_line_bytes: int = _flag(8192, "Longest request URL (414).")
    max_header_bytes: int = _flag(16 << 10, "Most bytes of header fields per request (431).")
    max_headers: int = _flag(100, "Most header fields per request (431).")
    header_timeout_s: float = _flag(60.0, "Seconds to receive a whole request head (408).")
    body_timeout_s: float = _flag(60.0, "Seconds between two reads of a body (408).")
    keepalive_timeout_s: float = _flag(5.0, "Seconds an idle connection stays open.")
    max_connections: int = _flag(512, "Connections open at once (503 above).")
    token: str | None = _flag(
        None,
        "Bearer token required (except health); default $ANN_SERVE_TOKEN. Prefer --token_file "
        "or the variable: a command line is visible to other users.",
        str,
        env="ANN_SERVE_TOKEN",
    )
    admin_token: str | None = _flag(
        None,
        "Bearer token for the repository's load and unload (POST /v2/repository/models/NAME/"
        "load|unload); without it they are refused. Default $ANN_SERVE_ADMIN_TOKEN; prefer "
        "--admin_token_file or the variable.",
        str,
        env="ANN_SERVE_ADMIN_TOKEN",
    )
    request_log: str | None = _flag(None, "File for sampled request/response JSON lines.", str)
    request_log_sample: float = _flag(0.01, "Share of requests logged; 0 (none) is refused.")
    request_log_max_bytes: int = _flag(50 << 20, "Size at which the request log rotates.")
    request_log_backups: int = _flag(3, "Rotated request log files kept.")
    monitor: str = _flag(
        "on",
        "on: served inputs and outputs are collected into windows and tested for drift in a "
        "background thread, and late labels are joined by request id (/monitor, /feedback, "
        "ann_drift_*, ann_realized_accuracy_ratio); off: nothing is recorded.",
        choices=["on", "off"],
    )
    monitor_window_rows: int = _flag(
        1000, "A monitoring window closes after this many rows (one-row requests: requests)."
    )
    monitor_window_seconds: float = _flag(
        60.0,
        "... or after this many seconds, once it holds at least min(max(100, "
        "--monitor_min_rows), --monitor_window_rows) rows.",
    )
    monitor_min_rows: int = _flag(
        DRIFT_MIN_ROWS,
        "Fewest rows of a window that drift is judged on (25: the chi-square rule of 5 "
        "expected counts a bin, Cochran 1954, over up to 5 values; ann.monitor.MIN_ROWS); at "
        "most --monitor_window_rows, and a window closed by time holds at least this many. A "
        "window of fewer would not be tested: drift state too_few_rows, ann_drift_share_ratio and "
        "ann_drift_detected NaN (the drift alert cannot fire).",
    )
    monitor_multivariate: str = _flag(
        "off",
        "on: each window also gets the multivariate test of all input features together (MMD "
        "with a permutation p-value, Gretton et al. 2012; ann/monitor/drift.py), in the drift "
        'process: ann_drift_score{feature="multivariate"} and /monitor\'s drift.multivariate.',
        choices=["on", "off"],
    )
    monitor_correction: str = _flag(
        "none",
        "Multiple-testing correction of a window's per-feature p-values (and, apart, of each "
        "output of many values; as `ann monitor drift "
        "--correction`): none (Evidently's: about 5% of unmoved features flagged a window), "
        "bonferroni, fdr_bh or fdr_by; the share and ann_drift_detected count the corrected "
        "verdicts.",
        choices=list(CORRECTIONS),
    )
    monitor_min_labels: int = _flag(
        MIN_LABELS,
        "Fewest labelled rows a window's realized accuracy is judged on (and the total's): "
        "fewer give ann_realized_accuracy_ratio NaN (the accuracy alert cannot fire). At 100, a "
        "model of true accuracy 0.95 reads below 0.9 in 1.1% of windows (binomial); at 25, in "
        "13%; at 2, one wrong label of two read 0.5.",
    )
    monitor_feedback_capacity: int = _flag(
        100_000,
        "Predictions kept per model version for joining late labels by request id: the last "
        "half of it always, up to all of it (two generations; about 200 bytes each).",
    )
    shutdown_timeout: float = _flag(30.0, "Seconds SIGTERM waits for queued requests.")
    retry_after_seconds: int = _flag(1, "Retry-After of a 503.", flag=False)

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def url_host(self) -> str:
        """`host` as a URL writes it: an IPv6 address in brackets (RFC 3986 section 3.2.2:
        `http://[::1]:8000`), anything else as given."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def queue_rows(self) -> int:
        return self.max_queue_rows or 16 * self.max_batch_size

    def problem(self) -> str | None:
        """The first setting that cannot work, as one line naming the flag and the fix."""
        for name, low, high, _ in RANGES:
            value = getattr(self, name)
            if value is None and name in _UNSET:  # unset: its default follows another flag
                continue
            if value == -1 and name in _NO_BOUND:  # -1: no bound at all
                continue
            above = name in _ABOVE  # the range said [0, 1] of a share that refuses 0
            outside = not isinstance(value, (int, float)) or isinstance(value, bool)
            if outside or not ((low < value if above else low <= value) and value <= high):
                shown = arguments.number(value) if not outside else repr(value)  # also NaN
                return out_of_range(f"--{name}={shown}", name)
        if not self.host:
            return "--host: expected an address to bind, got an empty string"
        host = self.host
        if host.startswith("[") and host.endswith("]"):  # a URL's IPv6 spelling
            return f"--host={host}: give the IPv6 address without brackets, --host={host[1:-1]}"
        name, _, port = host.rpartition(":")
        if arguments.digits(port) and name and ":" not in name:  # localhost:8000
            return f"--host={host}: give the port apart, --host={name} --port={port}"
        why = host_problem(host)
        if why:
            return f"--host={host} {why}; give an address of this machine, e.g. {_HOSTS}"
        if self.compilation_cache_dir is not None:
            from ann import compilation_cache  # the rule `ann train`'s config key follows too

            try:
                compilation_cache.directory(
                    self.compilation_cache_dir, "--compilation_cache_dir", CACHE_OFF_FIX
                )
            except ValueError as e:
                return str(e)
        for field in dataclasses.fields(self):  # the flags check these; a Settings(...) did not
            choices = field.metadata.get("choices")
            if choices and getattr(self, field.name) not in choices:
                value = getattr(self, field.name)
                return f"--{field.name}={value}: expected one of {', '.join(choices)}"
        if self.monitor_min_rows > self.monitor_window_rows:
            return (
                f"--monitor_window_rows={self.monitor_window_rows} is below --monitor_min_rows="
                f"{self.monitor_min_rows}, the fewest rows drift is judged on: no window would "
                f"be; raise --monitor_window_rows to at least {self.monitor_min_rows}, or lower "
                "--monitor_min_rows"
            )
        if self.queue_rows < self.max_batch_size:
            return (
                f"--max_queue_rows={self.queue_rows} is below --max_batch_size="
                f"{self.max_batch_size}: a full batch could never be queued; raise "
                f"--max_queue_rows to at least {self.max_batch_size} or leave it unset"
            )
        if self.metrics_port is not None and self.metrics_port == self.port:
            return (
                f"--metrics_port={self.metrics_port} is --port too; give the metrics listener "
                "a port of its own"
            )
        for flag, token in (("token", self.token), ("admin_token", self.admin_token)):
            problem = token_problem(flag, token)
            if problem:
                return problem
        if self.admin_token is not None and self.admin_token == self.token:
            return (
                "admin_token: expected a token other than --token (the admin token may load and "
                "unload models; a client's token must not); give each its own"
            )
        return self._request_log_problem()

    def _request_log_problem(self) -> str | None:
        """What is wrong with `--request_log`'s path, if anything."""
        return None if self.request_log is None else request_log_problem(self.request_log)

    def file_descriptors(self) -> int:
        """File descriptors the server may need: its connections and a reserve for the rest."""
        listeners = 2 if self.metrics_port is not None else 1
        return listeners * self.max_connections + 256


# The file a refusal of a folder suggests in it (or beside what owns it).
_LOG_NAME = "requests.jsonl"


def request_log_problem(given: str, suggest: bool = True) -> str | None:
    """What is wrong with `--request_log=GIVEN` as a path, as one line with a fix that is
    accepted: a folder gets a file in it, or beside what refuses files in it (a run's
    checkpoints folder said "give a file in it", then refused that file). `suggest`: False
    when checking a suggestion (no suggestion of its own)."""
    path = os.path.abspath(given)
    folder = os.path.dirname(path)
    # Below a file: in `atomic.below_a_file`'s words, as every other reader of a path says it
    # (it said "its folder /etc/hostname is a file, not a folder").
    if (above := atomic.below_a_file(path)) is not None:
        return (
            f"--request_log={given} cannot be created: {above}; give a file in a folder this "
            "user may write"
        )
    if not os.path.isdir(folder):
        return f"--request_log={given}: its folder {folder} does not exist"
    if os.path.isdir(path):
        inner = os.path.join(given, _LOG_NAME)
        if request_log_problem(inner, False) is None:
            return (
                f"--request_log={given} is a folder; give a file in it, e.g. "
                f"{arguments.flag('request_log', inner)}"
            )
        owner = _owner(os.path.join(path, _LOG_NAME))
        if owner is None:
            return f"--request_log={given} is a folder; give a file in a folder it may write"
        why, outside, _ = owner
        return (
            f"--request_log={given} is a folder, and a file in it would be {why}; give a file "
            f"outside {outside}{_beside(outside, suggest)}"
        )
    owner = _owner(path)
    if owner is not None:
        why, _, outside = owner
        return f"--request_log={given} is {why}; give a path outside {outside}"
    if not os.access(path if os.path.exists(path) else folder, os.W_OK):
        return f"--request_log={given} is not writable; give a writable path"
    return None


def _beside(outside: str, suggest: bool) -> str:
    """`, e.g. --request_log=FILE` for a file beside the folder `outside` that is accepted."""
    if not suggest:
        return ""
    candidate = os.path.join(os.path.dirname(outside), _LOG_NAME)
    if request_log_problem(candidate, False):
        return ""
    return f", e.g. {arguments.flag('request_log', candidate)}"


def _owner(path: str) -> tuple[str, str, str] | None:
    """(why no file may be written at `path`, the folder to stay outside of, that folder as
    the refusal of a file names it) when `path` lies inside an export or registry (its files
    are fixed), a training run's checkpoints (the run manages them, as `ann.cli.check_out`
    refuses an --out there) or a report (its next run replaces it whole, as every --out); else
    None."""
    found = directory_kind.inside(path)
    if found and found[0] in (directory_kind.EXPORT, directory_kind.REGISTRY):
        # An export holds the files its manifest lists, and nothing else (README, Layout).
        kind = directory_kind.NAMES[found[0]]
        return f"inside {kind} at {found[1]}, whose files are fixed", found[1], "it"
    managed = (
        found and found[0] == directory_kind.RUN and directory_kind.run_managed(path, found[1])
    )
    if managed:
        why = f"inside the checkpoints of the training run at {found[1]}, which the run manages"
        return why, managed, managed
    if (report := directory_kind.report_above(path)) is not None:
        return f"inside the report at {report}, which its next run replaces whole", report, "it"
    return None


# Settings whose range excludes its lower bound: a request log sampling a share of 0 would
# stay empty, a flag that does nothing.
_ABOVE = ("request_log_sample", "compilation_cache_max_mb")
# Settings that also take -1, for no bound (their range says so in its note).
_NO_BOUND = ("compilation_cache_max_mb",)

# Each numeric flag's range, (its name, low, high, the unit or a note), checked in this order.
RANGES: list[tuple[str, float, float, str]] = [
    ("port", 1, 65535, ""),
    ("max_batch_size", 1, 1 << 16, "rows per batch; each size up to it is compiled"),
    ("max_queue_delay_ms", 0, 60_000, "milliseconds"),
    ("constant_weights_mb", 0, 1 << 20, "MiB"),
    ("max_body_bytes", 1024, 1 << 31, "bytes; a body is held in memory"),
    ("max_request_line_bytes", 256, 1 << 20, "bytes"),
    ("max_header_bytes", 1024, 1 << 20, "bytes"),
    ("max_headers", 8, 10_000, "header fields"),
    ("header_timeout_s", 0.01, 3600, "seconds"),
    ("body_timeout_s", 0.01, 3600, "seconds"),
    ("keepalive_timeout_s", 0.01, 3600, "seconds"),
    ("max_connections", 1, 1 << 20, "connections"),
    ("request_log_sample", 0, 1, "a share of requests: 1 logs every one"),
    ("request_log_max_bytes", 1024, 1 << 40, "bytes"),
    # 0 would disable the size cap: RotatingFileHandler never rotates without a backup.
    ("request_log_backups", 1, 1000, "files"),
    ("monitor_window_rows", 10, 1_000_000, "rows"),
    ("monitor_min_rows", MIN_TEST_ROWS, 1_000_000, "rows"),
    ("monitor_window_seconds", 0.1, 86_400, "seconds"),
    ("monitor_min_labels", 1, 1_000_000, "labelled rows"),
    # 0 kept nothing: every label was counted unknown.
    ("monitor_feedback_capacity", 1, 100_000_000, "predictions"),
    ("shutdown_timeout", 0, 3600, "seconds"),
    ("retry_after_seconds", 0, 3600, "seconds"),
    ("metrics_port", 1, 65535, ""),
    ("max_queue_rows", 1, 1 << 30, "rows"),
    # Its help said no range, 1e12 was taken and 1e400 was said as inf.
    ("compilation_cache_max_mb", 0, 1 << 24, "MiB; or -1 for no bound"),
]

_UNSET = ("metrics_port", "max_queue_rows")  # None: no metrics listener; 16 batches


def expected(name: str) -> str | None:
    """What the numeric flag `name` takes, as its refusals say it: "an integer in [1, 65535]",
    the unit or a note after it in parentheses (`arguments.expected`, the words of every
    command's numeric flags); None for a flag without a range."""
    for flag, low, high, unit in RANGES:
        if flag == name:
            kind = next(f for f in dataclasses.fields(Settings) if f.name == name).metadata["kind"]
            return arguments.expected(kind, low, high, unit, above=name in _ABOVE)
    return None


# Examples of the flags whose default is None (unset), for their refusals.
_EXAMPLES = {"metrics_port": 9100, "max_queue_rows": 1024}


def example(name: str) -> Any:
    """A value of the flag `name` its refusals show: its default, else one of `_EXAMPLES`."""
    default = next(f for f in dataclasses.fields(Settings) if f.name == name).default
    return _EXAMPLES.get(name) if default is None else default


def out_of_range(typed: str, name: str) -> str:
    """The refusal of `typed` (`--port=70000`, as given) for the numeric flag `name`: "--port=
    70000 must be an integer in [1, 65535]; e.g. --port=8000", the flag's default as the
    example (as `cli` words a value that is no number at all: one style for both)."""
    return arguments.refusal(typed, expected(name), name, example(name))


_HOSTS = "--host=127.0.0.1 (this machine only) or --host=0.0.0.0 (every address)"


def flag_fields() -> list[dataclasses.Field]:
    """The fields that are flags of `ann serve`, in order."""
    return [f for f in dataclasses.fields(Settings) if f.metadata.get("flag", True)]


def flag_default(field: dataclasses.Field) -> Any:
    """A flag's default: its field's, or the environment variable that overrides it."""
    env = field.metadata.get("env")
    if env is not None and env in os.environ:
        return os.environ[env]
    return field.default


def file_error(name: str, error: OSError | UnicodeDecodeError, wanted: str) -> str:
    """Why the file a flag names cannot be read, in one line with the fix: `name` is the flag
    as given (`--token_file=/x`) or a path, `wanted` what the flag takes ("the file holding the
    token"). It said "cannot read it ([Errno 2] No such file or directory: '/x')", and of a path
    below a file "cannot read it (Not a directory)": that one is `atomic.absent`'s "cannot exist:
    F is a file, so nothing can be below it"."""
    if isinstance(error, UnicodeDecodeError):
        return f"{name} is not UTF-8 text (byte 0x{error.object[error.start]:02x}); give {wanted}"
    if isinstance(error, FileNotFoundError | NotADirectoryError):  # below a file: ENOTDIR
        return f"{name} {atomic.absent(error.filename or '')}; give {wanted}"
    if isinstance(error, IsADirectoryError):
        return f"{name} is a folder; give {wanted}"
    if isinstance(error, PermissionError):
        return f"{name} is not readable by this user; make it readable or give another file"
    return f"{name}: cannot read it ({error.strerror or error})"


# What a token may not hold, by name (others: their code point and Unicode name).
_NAMED_CHARACTERS = {" ": "a space", "\t": "a tab", "\n": "a newline", "\r": "a carriage return"}


def token_text(raw: str) -> str:
    """A token as a secret holds it, whatever its source (`--token_file`, `$ANN_SERVE_TOKEN`):
    without the whitespace around it. A file ends in a newline (LF, or CRLF), and so does a
    Kubernetes Secret made `--from-file`, which kserve.yaml passes as the variable: the file
    was stripped and the variable refused, a crash loop. No whitespace can be part of a Bearer
    token (RFC 6750), so none is lost."""
    return raw.strip()


def token_problem(flag: str, token: str | None, source: str | None = None) -> str | None:
    """Why `token` (the `flag` "token" or "admin_token"; None: none) is no Bearer token (RFC
    6750: printable ASCII without spaces), as one line that names where it came from (`source`:
    "--token", "$ANN_SERVE_TOKEN", "--token_file=PATH"; default `flag`), the first character
    it may not hold and where (it said only "other characters"), and the fix; None when it is
    one."""
    if token is None:
        return None
    if not token:
        got = "an empty one"
    else:
        at = next((i for i, c in enumerate(token) if not 33 <= ord(c) <= 126), None)
        if at is None:
            return None
        import unicodedata

        c = token[at]
        name = _NAMED_CHARACTERS.get(c) or unicodedata.name(c, "a control character")
        got = f"{name} (U+{ord(c):04X}) at character {at + 1} of {len(token)}"
    return (
        f"{source or flag}: expected printable ASCII without spaces (a Bearer token, RFC 6750), "
        f"got {got}; set --{flag}_file or ${'ANN_SERVE_' + flag.upper()} to a real token, or "
        "unset both for none"
    )


def read_token_file(flag: str, path: str) -> str:
    """The token in the file `--FLAG=PATH` names (`token_text`: without the whitespace around
    it); ValueError (`file_error`), also for a device or a pipe (read whole: /dev/zero ate the
    memory, a FIFO blocked the start)."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        raise ValueError(
            f"--{flag}={path} is not a regular file (a device, a pipe or a socket); give the "
            "file that holds the token"
        )
    try:
        with open(path, encoding="utf-8") as f:
            return token_text(f.read())
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(
            file_error(f"--{flag}={path}", e, "the file that holds the token")
        ) from None


# A host name's labels (RFC 1123 section 2.1, relaxing RFC 952: letters, digits and hyphens,
# 1 to 63 characters, no hyphen at either end); "_" too, which resolvers accept and container
# service names use.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_EXAMPLE_V4 = "four numbers from 0 to 255, as 127.0.0.1"


def host_problem(host: str) -> str | None:
    """Why `host` is neither an IP address nor a host name, as the end of a refusal that names
    the flag (`is not an IPv4 address (...)`), or None. Checked by its spelling alone, before
    any lookup: "999.1.1.1" was said to be "not an address of this machine", and a non-ASCII
    or empty label ("hôst", "a..b") reached Python's IDNA codec ("encoding with 'idna' codec
    failed"). IPv4: dotted decimal (`ipaddress.IPv4Address`: inet_aton's shorthands such as
    "1.2.3" are refused); IPv6: RFC 4291 text (`ipaddress.IPv6Address`); a name: RFC 1123
    labels of at most 63 characters, 253 in all (RFC 1035 section 2.3.4)."""
    import ipaddress

    if host and all(c.isdigit() or c == "." for c in host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"is not an IPv4 address ({_EXAMPLE_V4})"
        return None
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "is not an IPv6 address (hexadecimal groups between colons, as ::1)"
        return None
    if not host.isascii():
        try:
            ascii_form = f", {host.encode('idna').decode()}"
        except UnicodeError:
            ascii_form = ""
        return (
            "is not an ASCII host name (a host name is letters, digits, - and .; an "
            f"internationalized one goes in its ASCII form{ascii_form})"
        )
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return (
            "is not a host name (labels of 1 to 63 letters, digits and -, not starting or "
            "ending with -, between dots)"
        )
    return None


def listen_error(flag: str, port: int, host: str, error: OSError) -> str:
    """Why `ann serve` cannot listen on `host:port` (`flag` names the port: --port or
    --metrics_port), in one line naming the flag and the fix: it said "cannot listen ([Errno 98]
    error while attempting to bind on address ('127.0.0.1', 18431): address already in use)"."""
    import errno
    import socket

    if isinstance(error, socket.gaierror):  # a well-formed name that does not resolve
        return (
            f"--host={host}: no address found for that name ({error.strerror or error}); "
            f"give an address of this machine, e.g. {_HOSTS}"
        )
    if error.errno == errno.EADDRNOTAVAIL:
        return (
            f"--host={host} is not an address of this machine; give one of its addresses, "
            f"e.g. {_HOSTS}"
        )
    if error.errno == errno.EADDRINUSE:
        return f"{flag}={port} is in use by another process; choose another {flag}"
    if error.errno == errno.EACCES and port < 1024:
        return (
            f"{flag}={port} is a privileged port (below 1024) this user may not open; choose "
            f"a {flag} of 1024 or more"
        )
    return f"{flag}={port} on --host={host}: cannot listen ({error.strerror or error})"


def exposure_warning(settings: Settings) -> str | None:
    """A warning when the client routes listen beyond this machine without a token: anyone who
    reaches the port may infer and read the models' metadata. None on a loopback host
    (127.0.0.0/8, ::1, localhost) or with a token."""
    import ipaddress

    if settings.token is not None or settings.host == "localhost":
        return None
    try:
        if ipaddress.ip_address(settings.host).is_loopback:
            return None
    except ValueError:  # a host name: it may resolve to any address
        pass
    return (
        f"--host={settings.host} listens beyond this machine without a token: anyone who "
        f"reaches port {settings.port} may infer and read the models' metadata; give "
        "--token_file (a mounted secret) or $ANN_SERVE_TOKEN"
    )


def listen_problem(settings: Settings) -> str | None:
    """Why `ann serve` could not listen on `--host` at `--port` (and `--metrics_port`), found by
    binding each address for a moment, as the server will (SO_REUSEADDR, IPv6 sockets
    IPv6-only), before the models are loaded: loading a large one takes minutes, and a port in
    use was said only after. None when it can; `listen_error`'s line otherwise. The server's
    own bind (ann/serve/http.py) says the same if the port is taken in between."""
    import socket

    for flag, port in (("--port", settings.port), ("--metrics_port", settings.metrics_port)):
        if port is None:
            continue
        try:
            found = socket.getaddrinfo(
                settings.host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            for family, kind, proto, _, address in found:
                with socket.socket(family, kind, proto) as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if family == socket.AF_INET6:
                        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s.bind(address)
        except OSError as e:
            return listen_error(flag, port, settings.host, e)
    return None
