"""Send a file of late labels to a running server: `ann monitor feedback`.

    ann monitor feedback --url=http://127.0.0.1:8000 --model=digits --labels=labels.jsonl
        [--version=3] [--batch=1000] [--token_file=FILE]

`--labels` holds one JSON object per line, `{"id": "r-17", "label": 3}` (the infer request's
`id`; a class index or name, or a list of them for a request of several rows): the body the
server's `POST /v2/models/NAME[/versions/V]/feedback` takes, sent `--batch` lines at a time.
Prints what the server joined: rows matched, labels not joined by reason (unknown, evicted,
duplicate), and the realized accuracy since the server started. The token: `--token_file` or
`$ANN_SERVE_TOKEN`, as `ann serve` takes it.

--url is checked first, by its spelling and then by asking the server whether it is live (a
server that does not answer, or answers but not as ann does: one line, before the labels file is
read, and nothing is sent to it). Every line is checked
before anything is sent (a line that is not a JSON object: one line naming the file and line
number, exit 1); a batch the server refuses stops the ingest with the server's own message, the
file lines of that batch and of the label it names, and the lines applied before it (the
server applies a batch whole or not at all), so the rest of the file can be sent on its own.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson
from absl import flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags of `ann monitor feedback` besides `--model` (which `ann monitor` defines for
    every command: here the served model's name)."""
    flags.DEFINE_string(
        "url",
        "http://127.0.0.1:8000",
        "feedback: the server's root URL, http://HOST:PORT (or https://); the route is added.",
    )
    flags.DEFINE_string(
        "version", None, "feedback: the model's version (default: its unversioned path's)."
    )
    flags.DEFINE_string(
        "labels",
        None,
        'feedback, performance: the late labels, JSON lines of {"id": ..., "label": ...} (the '
        "infer request's id; a class index or name, a list of them for a request of several "
        "rows).",
    )
    from ann import cli

    cli.define_bounded("batch", 1000, "feedback: labels per request.", 1, 100_000)
    flags.DEFINE_string(
        "token_file", None, "feedback: file holding the bearer token (else $ANN_SERVE_TOKEN)."
    )


# What --labels takes, as a refusal of a file that is not one ends ("give ...").
LABELS_WANTED = 'the late labels file, {"id": ..., "label": ...} a line'


def read_labels(path: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of each line of a JSON lines file (blank lines skipped); ValueError
    naming the file and
    line, and what is wrong there as the server words it (`protocol.json_error`: the reason and
    column), for a line that is not a JSON object. A torn line (the last without its end of
    line, not JSON: the file is still being written; or any line cut short) is skipped with a
    warning, as the request log's is (`ann.monitor.jsonlines`). A FIFO, device or folder, a
    compressed or binary file is refused before a line is read (`jsonlines.objects`)."""
    from ann.monitor.jsonlines import objects, read_rotated

    expected = 'expected a JSON object {"id": ..., "label": ...}'
    torn = "the file was read while being written, or its writer was stopped"
    items = list(
        objects(path, f"--labels={path}", expected, ValueError, torn, wanted=LABELS_WANTED)
    )
    if not items:  # rotated a moment ago (logrotate): its lines are beside it
        moved = read_rotated(path, "labels", several=False)
        raise ValueError(f"--labels={path}: holds no labels" + (f"; {moved}" if moved else ""))
    return items


def _shown(url: str) -> str:
    """`url` as a refusal quotes it: control characters (a tab, a newline) escaped as JSON
    escapes them, so that the refusal stays one line."""
    if all(32 <= ord(c) != 127 for c in url):
        return url
    return orjson.dumps(url).decode()[1:-1]


def check_url(url: str) -> None:
    """ValueError unless `url` is the server's http:// or https:// root URL: a host (an IP
    address or a host name, `settings.host_problem`) and port with no space or control
    character in it, no route (`/v2/...`: feedback adds the route),
    no query or fragment. `localhost:8000` reached urllib as the unknown scheme "localhost", and
    the refusal said the server was not running; `http://local host:1` was a traceback
    (http.client.InvalidURL); `http://host:1/v2` a 404 from the server for /v2/v2/models/..."""
    shown = _shown(url)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # urllib's "Invalid IPv6 URL": a [ without its ]
        raise ValueError(
            f"--url={shown}: expected an IPv6 host closed by ], e.g. --url=http://[::1]:8000"
        ) from None
    if parts.scheme in ("http", "https") and not parts.netloc:  # "http://": no host
        raise ValueError(
            f"--url={shown}: expected a host after {parts.scheme}://, e.g. "
            f"--url={parts.scheme}://127.0.0.1:8000"
        )
    if parts.scheme not in ("http", "https"):
        rest = url.split("://", 1)[-1]  # localhost:8000, or the host after another scheme
        example = f"http://{rest}" if rest and ":/" not in rest else "http://127.0.0.1:8000"
        raise ValueError(
            f"--url={shown}: expected the server's URL starting with http:// or https://, e.g. "
            f"--url={_shown(example)}"
        )
    bad = next((c for c in url if ord(c) <= 32 or ord(c) == 127), None)
    if bad is not None:
        what = "a space" if bad == " " else f"the control character {orjson.dumps(bad).decode()}"
        raise ValueError(
            f"--url={shown}: expected the server's URL, got {what} in it at character "
            f"{url.index(bad) + 1}; a URL has none (remove it)"
        )
    if not parts.hostname:
        raise ValueError(
            f"--url={shown}: expected a host after {parts.scheme}://, e.g. "
            f"--url={parts.scheme}://127.0.0.1:8000"
        )
    from ann.serve.settings import host_problem

    why = host_problem(parts.hostname)
    if why:  # "hôst", "a..b" ended in Python's "encoding with 'idna' codec failed"
        raise ValueError(
            f"--url={shown}: the host {parts.hostname} {why}; e.g. "
            f"--url={parts.scheme}://127.0.0.1:8000"
        )
    try:
        port = parts.port
    except ValueError:  # urllib's "Port could not be cast to integer value as 'abc'"
        port = 0
    if port == 0:
        raise ValueError(
            f"--url={shown}: expected a port in [1, 65535] after the host, got "
            f"{parts.netloc.rpartition(':')[2]}"
        )
    root = f"{parts.scheme}://{parts.netloc}"
    segments = parts.path.split("/")
    if "v2" in segments:  # the route's own prefix: sent to /v2/v2/models/...
        prefix = "/".join(segments[: segments.index("v2")])
        raise ValueError(
            f"--url={shown}: expected the server's root URL, without a route (feedback adds "
            f"/v2/models/NAME/feedback), e.g. --url={root}{prefix}"
        )
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError(
            f"--url={shown}: expected the server's root URL, without a query (?...) or "
            f"fragment (#...), e.g. --url={root}{parts.path.rstrip('/')}"
        )


REACH_TIMEOUT_S = 10.0  # the reachability check's wait for a connection and a reply


_NOT_ANN = "not an ann server's answer; is --url the root URL of `ann serve`?"


def check_reachable(url: str, timeout: float = REACH_TIMEOUT_S, token: str | None = None) -> None:
    """ValueError (one line naming --url and the fix) unless an ann server answers at `url`:
    a GET of its liveness route (`/v2/health/live`, Open Inference Protocol v2, which needs no
    token) must answer 200 with ann's `{"live": true}`, so that a wrong --url fails in seconds,
    before a labels file of any size is read, and no label is ever sent to a server that is not
    ann (a 404 or an HTML page was taken for a live server, and the labels were POSTed to it).
    An error status with ann's `{"error": ...}` body (a draining server's 503) is said with the
    server's words; no answer is said as `_unreachable` says it. `token`: sent as the feedback
    requests send it (ann's route needs none; a gateway in front of it may)."""
    endpoint = url.rstrip("/") + "/v2/health/live"
    asked = f"--url={_shown(url)}: GET /v2/health/live"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        request = urllib.request.Request(endpoint, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise ValueError(f"--url={_shown(url)}: {_unreachable(url, e)}") from None
    try:
        reply = json.loads(body)
    except ValueError:
        reply = None
    if status == 200 and isinstance(reply, dict) and reply.get("live") is True:
        return
    if isinstance(reply, dict) and isinstance(reply.get("error"), str) and status != 200:
        raise ValueError(f"{asked} answered {status}: {reply['error']}")
    got = "a body that is not JSON" if reply is None else f"{_clipped(body)}"
    raise ValueError(f'{asked} answered {status} with {got}, not {{"live": true}}: {_NOT_ANN}')


def _clipped(body: bytes, limit: int = 60) -> str:
    """A reply body as a refusal quotes it: one line, at most `limit` characters."""
    text = _shown(body.decode("utf-8", "replace"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reply_problem(reply: Any) -> str | None:
    """What makes a feedback reply not ann's (`{"matched": int, "unmatched": {reason: int},
    "accuracy": ...}`), or None for one that is."""
    if not isinstance(reply, dict):
        return f"a JSON {type(reply).__name__}, not an object"
    for key, kind in (("matched", int), ("unmatched", dict)):
        if not isinstance(reply.get(key), kind) or isinstance(reply.get(key), bool):
            return f'no "{key}" {"count" if kind is int else "object"}'
    if "accuracy" not in reply:
        return 'no "accuracy"'
    return None


def send(
    url: str,
    model: str,
    items: list[dict[str, Any]],
    version: str | None = None,
    batch: int = 1000,
    token: str | None = None,
    lines: list[int] | None = None,
    token_from: str = "",
) -> dict[str, Any]:
    """POSTs `items` to the model's feedback route, `batch` at a time; returns the sums:
    `{"matched", "unmatched": {reason: n}, "held_by": {version: n} (the unknown labels' ids
    each other version of the model holds; None from a server that does not say), "accuracy",
    "min_labels": the last reply's}`.
    `lines`: each item's line in the labels file (default: its position, from 1). ValueError
    with the server's message, the file lines of the refused batch and of the item it names,
    and what was applied before it (a 401: how this command gives the token; `token_from`: where
    the token sent came from); why the server could not be reached; or for a `url` that is not
    http:// or https:// (`check_url`)."""
    lines = lines or list(range(1, len(items) + 1))
    check_url(url)
    path = f"/v2/models/{urllib.parse.quote(model, safe='')}"
    if version is not None:
        path += f"/versions/{urllib.parse.quote(version, safe='')}"
    endpoint = url.rstrip("/") + path + "/feedback"
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    total: dict[str, Any] = {"matched": 0, "unmatched": {}, "accuracy": None, "held_by": {}}
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        body = json.dumps(chunk).encode()
        request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
        where = _lines(lines[start], lines[start + len(chunk) - 1])
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = response.read()
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error", "")
            except (ValueError, AttributeError):
                message = ""
            if not isinstance(message, str) or not message:  # not ann's {"error": ...}
                message = f"{e.reason}, {_NOT_ANN}"
            path = urllib.parse.urlsplit(url).path.rstrip("/")
            if e.code == 404 and path and message.startswith("no route"):
                # A path in --url is put before the route (a proxy's prefix); not this one.
                message += f" (--url is the server's root URL: {path} is put before the route)"
            if e.code == 401:  # the server's words name a header; this command's fix is a flag
                message = (
                    f"the token sent ({token_from or 'given'}) is not the server's; give its "
                    "token with --token_file=FILE or $ANN_SERVE_TOKEN"
                    if token
                    else "the server wants its token; give it with --token_file=FILE or "
                    "$ANN_SERVE_TOKEN"
                )
            raise ValueError(
                f"{endpoint}: {where} refused ({e.code}): "
                f"{_at_line(message, start, lines) or e.reason}; "
                + (
                    f"{_lines(lines[0], lines[start - 1], 'applied')} before "
                    f"{'them' if len(chunk) > 1 else 'it'}: send the file from line "
                    f"{lines[start]} on to go on"
                    if start
                    else "nothing was applied"
                )
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise ValueError(f"{endpoint}: {_unreachable(url, e)}") from None
        except KeyboardInterrupt:  # where it stopped, as a refused batch says it
            raise KeyboardInterrupt(_stopped_at(lines, start, len(chunk))) from None
        try:
            reply = json.loads(body)
        except ValueError:
            reply = None
        problem = "not JSON" if reply is None else _reply_problem(reply)
        if problem is not None:  # a KeyError traceback, or "Expecting value: line 1 ..."
            before = f" ({_lines(lines[0], lines[start - 1], 'applied')} before)" if start else ""
            raise ValueError(
                f"{endpoint}: {where} answered {_clipped(body)} ({problem}): {_NOT_ANN}{before}"
            )
        total["matched"] += reply["matched"]
        for reason, n in reply["unmatched"].items():
            total["unmatched"][reason] = total["unmatched"].get(reason, 0) + n
        held = reply.get("unknown_held_by")  # None: a server that does not say
        if held is None or total["held_by"] is None:
            total["held_by"] = None
        else:
            for other, n in held.items():
                total["held_by"][other] = total["held_by"].get(other, 0) + n
        total["accuracy"], total["min_labels"] = reply["accuracy"], reply.get("min_labels")
        total["version"] = reply.get("model_version")  # the version the labels went to
    return total


def _stopped_at(lines: list[int], start: int, size: int) -> str:
    """What a Ctrl-C during the batch at `start` (of `size` items) leaves applied: the batches
    before it; the one in flight may or may not be (the server applies a batch whole)."""
    first, last = lines[start], lines[start + size - 1]
    applied = _lines(lines[0], lines[start - 1], "applied") if start else "none applied"
    return (
        f"interrupted (Ctrl-C): {applied}; {_lines(first, last, 'in flight')} (applied whole or "
        f"not at all): send the file from line {first} on to go on (an id labelled twice is "
        "counted as a duplicate, not twice)"
    )


def _lines(first: int, last: int, state: str = "") -> str:
    """`lines 7-9`, or `line 1` for one (it said `lines 1-1`); with `state`, `lines 7-9 were
    applied` / `line 1 was applied`."""
    if first == last:
        return f"line {first}" + (f" was {state}" if state else "")
    return f"lines {first}-{last}" + (f" were {state}" if state else "")


def served_versions(url: str, model: str, token: str | None) -> list[str]:
    """The versions of `model` the server serves (its metadata's `versions`); [] when it
    cannot say (only for a warning's wording: never an error)."""
    endpoint = f"{url.rstrip('/')}/v2/models/{urllib.parse.quote(model, safe='')}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        request = urllib.request.Request(endpoint, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            versions = json.loads(response.read()).get("versions")
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError):
        return []
    return [str(v) for v in versions] if isinstance(versions, list) else []


def realized_text(reply: dict[str, Any]) -> str:
    """The realized accuracy since the server started, as the summary says it, from a
    feedback reply (`send`'s total): "realized accuracy 0.9725 over 400 labelled rows", or why
    there is none (no labels yet; fewer than the server's --monitor_min_labels)."""
    realized = (reply["accuracy"] or {}).get("total")
    if not realized:
        return "no labelled rows yet"
    labelled = realized["labelled"]
    if realized["accuracy"] is None:  # fewer than the server's --monitor_min_labels
        return (
            f"{labelled} labelled row{'s' * (labelled != 1)}, too few for a realized accuracy "
            f"(the server's --monitor_min_labels: {reply.get('min_labels')})"
        )
    return f"realized accuracy {realized['accuracy']:.4f} over {labelled} labelled rows"


def _at_line(message: str, start: int, lines: list[int]) -> str:
    """The server's message with its `feedback[i]` (the item's place in the batch) followed by
    that item's line in the file."""
    found = re.match(r"feedback\[(\d+)\]", message)
    if found is None or start + int(found.group(1)) >= len(lines):
        return message
    line = lines[start + int(found.group(1))]
    return f"{found.group(0)} (line {line}){message[found.end() :]}"


# OpenSSL's reasons for a reply that is not TLS (1.1 and 3.0: "wrong version number"; 3.2 on:
# "record layer failure"; a long reply read as a record's length: "packet length too long").
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG")


def _unreachable(url: str, error: Exception) -> str:
    """Why the server at `url` did not answer, in the project's words: the OS's reason
    ("Connection refused"), not urllib's "<urlopen error [Errno 111] ...>"; a plain-HTTP
    server asked over https:// says so (it said "[SSL: WRONG_VERSION_NUMBER] wrong version
    number (_ssl.c:1006)"); what answers but not in HTTP is named as such."""
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    parts = urllib.parse.urlsplit(url)
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (
            f"cannot reach the server over HTTPS: its certificate is not trusted "
            f"({reason.verify_message})"
        )
    if isinstance(reason, ssl.SSLError):
        if reason.reason in _NOT_TLS:  # a plain-HTTP reply where TLS's was expected
            plain = urllib.parse.urlunsplit(parts._replace(scheme="http"))
            return (
                f"the server at {parts.netloc} does not speak HTTPS (`ann serve` serves plain "
                f"HTTP); use --url={plain}"
            )
        return f"the HTTPS handshake with {parts.netloc} failed ({reason.reason or reason})"
    if isinstance(reason, http.client.HTTPException):  # BadStatusLine, RemoteDisconnected
        said = (
            "it closed the connection without a reply"
            if isinstance(reason, http.client.RemoteDisconnected)
            else "its reply is not HTTP"
        )
        return (
            f"what listens at {parts.netloc} did not answer the request ({said}); is --url "
            "the server's?"
        )
    why = getattr(reason, "strerror", None) or str(reason)
    return f"cannot reach the server ({why}); is it running?"


def read_token() -> str | None:
    """`--token_file`'s content, else `$ANN_SERVE_TOKEN`, as `ann serve` reads them (without
    the whitespace around the token: a Secret's trailing newline went out in the header);
    ValueError, naming where it came from, for a token that is no Bearer token. An empty
    one is none (no header), as before."""
    from ann.serve.settings import read_token_file, token_problem, token_text

    if FLAGS.token_file is None:
        token, source = token_text(os.environ.get("ANN_SERVE_TOKEN", "")), "$ANN_SERVE_TOKEN"
    else:
        token = read_token_file("token_file", FLAGS.token_file)
        source = f"--token_file={FLAGS.token_file}"
    if not token:
        return None
    problem = token_problem("token", token, source)
    if problem:
        raise ValueError(problem)
    return token


def feedback(args: list[str]) -> None:
    """`ann monitor feedback`: reads `--labels`, sends them to the server, prints what was
    joined; one `error: ...` line and exit 1 for a bad flag, file or refused batch."""
    from ann import cli

    cli.check_no_arguments(args)
    if not FLAGS.model or not FLAGS.labels:
        raise cli.FlagError(
            "feedback needs --model (the served model's name) and --labels=FILE.jsonl"
        )
    from ann.monitor.jsonlines import check_readable

    try:
        check_url(FLAGS.url)  # before the labels are read, and so is the server's answer
        # The local files before the server is reached: a missing --labels or --token_file
        # was said only after the reach (seconds, or an unreachable --url said instead).
        check_readable(FLAGS.labels, f"--labels={FLAGS.labels}", LABELS_WANTED, ValueError)
        token = read_token()
        check_reachable(FLAGS.url, token=token)
        numbered = read_labels(FLAGS.labels)
        lines, items = [n for n, _ in numbered], [item for _, item in numbered]
        token_from = (
            f"--token_file={FLAGS.token_file}"
            if FLAGS.token_file is not None
            else "$ANN_SERVE_TOKEN"
        )
        total = send(
            FLAGS.url, FLAGS.model, items, FLAGS.version, FLAGS.batch, token, lines, token_from
        )
    except ValueError as e:
        cli.fail(str(e))
    unmatched = ", ".join(f"{k} {v}" for k, v in total["unmatched"].items())
    accuracy = realized_text(total)
    sent = f"{len(items)} label{'s' * (len(items) != 1)} sent"
    joined = f"{total['matched']} row{'s' * (total['matched'] != 1)} joined"
    print(f"{sent}: {joined}; not joined: {unmatched}; "
          f"{accuracy} (since the server started)")  # fmt: skip
    versions = []
    if total["unmatched"].get("unknown"):  # an explicit --version too: it may be the wrong one
        versions = served_versions(FLAGS.url, FLAGS.model, token)
    said = unjoined_warnings(
        total["unmatched"],
        len(items),
        versions,
        total.get("version"),
        FLAGS.version,
        FLAGS.labels,
        FLAGS.model,
        total["held_by"],
    )
    for line in said:
        cli.warn(line)


def unjoined_warnings(
    unmatched: dict[str, int],
    sent: int,
    versions: list[str] | None = None,
    version: str | None = None,
    named: str | None = None,
    labels: str = "LABELS.jsonl",
    model: str | None = None,
    held_by: dict[str, int] | None = None,
) -> list[str]:
    """Why labels did not join, where the counts alone left a user guessing (0 joined, exit 0):
    the server holds its predictions in memory, per process, and per model version.
    `versions`: the versions the server serves of the model ([]: not known); `version`: the
    one that answered; `named`: the one `--version` named (None: the unversioned path);
    `labels`: the labels file sent, and `model` the served model's name, for the offline join's
    command; `held_by`: how many of the unknown labels' ids each other version holds (the
    reply's `unknown_held_by`; None: the server does not say). Another version is named only
    where it holds some: version 2 said to send the labels with --version=1, and version 1
    with --version=2, of ids neither had served."""
    said = []
    unknown, duplicate = unmatched.get("unknown", 0), unmatched.get("duplicate", 0)
    versions = versions or []
    others = [v for v in versions if v != version]
    held = {v: n for v, n in (held_by or {}).items() if n and v != version}
    this = f"version {version}" if version is not None else "the version that answered"
    if named is not None:
        this = f"version {named} (--version={named})"
    if unknown and held:
        # Each version keeps its own predictions: it blamed a restart or replicas.
        best = max(held, key=lambda v: held[v])
        more = [v for v in held if v != best]
        said.append(
            f"{unknown} of {sent} labels name{'s' * (unknown == 1)} request ids {this} does not "
            f"hold; version {best} holds {held[best]} of them (the model serves versions "
            f"{', '.join(versions or [best])}, each joining labels only to its own requests): "
            f"send them with --version={best}"
            + (
                f" (version{'s' * (len(more) > 1)} {', '.join(more)} hold{'s' * (len(more) == 1)}"
                " some too)"
                if more
                else ""
            )
        )
    elif unknown:
        # The command was cut off (`--requests=` every ...), with FILE for the file just sent
        # and no --model; and ids never sent to this server, the simplest cause, went unsaid.
        served = f"serves as {model}" if model else "serves"
        where = "this server does not hold"
        if others and held_by is not None:  # asked: no other version holds them either
            where = (
                f"no version of the model this server serves holds ({', '.join(versions)}: "
                "each joins labels only to its own requests)"
            )
        elif others:  # a server that does not say which version holds them
            where = (
                f"{this} does not hold (the model serves versions {', '.join(versions)}, each "
                "joining labels only to its own requests: if another served them, give it with "
                "--version)"
            )
        said.append(
            f"{unknown} of {sent} labels name{'s' * (unknown == 1)} request ids {where}. The "
            "simplest "
            "cause: ids never sent to this server (a typo, or requests to another model). Else: "
            "it keeps "
            "predictions in memory, per process, so a restart (or a reload of the model) forgets "
            "them, and behind several replicas a label joins only on the replica that served its "
            "request: join the labels offline with `ann monitor performance --model=MODEL "
            f"--labels={labels} --requests=LOG[,LOG...]` (MODEL: the export directory or "
            f"models:/ URI this server {served}; LOG: every replica's request log, rotated files "
            "too; README: Realized performance offline)"
        )
    if duplicate:
        said.append(
            f"{duplicate} of {sent} labels {'is' if duplicate == 1 else 'are'} for rows labelled "
            "before (the first label counts): was this file sent already?"
        )
    return said
