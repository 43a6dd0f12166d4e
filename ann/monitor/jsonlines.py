"""The JSON lines files `ann monitor` reads: the server's request log (`drift --requests`) and a
file of late labels (`feedback --labels`), one JSON object a line, blank lines skipped.

Both read the same way: a last line cut short (no end of line, not JSON: the file was read while
being written, or its writer was stopped mid-line) is skipped with a `warning: ...` line on
stderr, as metrics.jsonl's torn last line is (ann/train/writers.py). So is a torn line that has
lines after it: a line that stops inside its JSON value (the start of an object, cut), ended by
a writer that went on appending (a server restarted on its torn log ends that line and warns:
`ann.serve.request_log`); it was refused as damage, which made the whole log unreadable for
one lost record. Any other line that is not JSON is damage, refused, naming the file, the line
and what is there as the server words a bad body (`protocol.json_error`: the reason and the
column on that line; a number no 64-bit float holds inside a line's object by its place, as
`label`). A UTF-8 byte order mark before the first line is read past, as `utf-8-sig` does.

What is not a JSON lines file is refused before a line is read, in one line with its fix
(`not_a_file`, `not_text`): a FIFO, device or socket (a FIFO blocked the read until a writer
came, forever; `--requests` refused it at once, `--labels` hung), a folder, a compressed file
(gzip, bzip2, xz, zstd, zip: decompress it first, e.g. `gunzip -k FILE.gz`, or for a name
without the suffix, which `gunzip -k` refuses, `gunzip -c FILE > FILE.jsonl`; it was called damaged,
"delete that line") and a binary file (null bytes: it was read as one torn line, then "holds no
requests"; or more than a third of its first bytes not text, `BINARY_SHARE`: it was told "line
1: got text that is not UTF-8 ...; the file is damaged (delete that line ...)").

A log that is not there, or empty, beside the files a rotation left (`rotated_beside`:
logrotate's FILE.1, FILE.2.gz, FILE-20261205.gz; the server's own FILE.1) is refused naming
them and how to read them (`read_rotated`: `zcat -f FILE.2.gz FILE.1 > FILE.all.jsonl`, or
the plain files as they are); it was "is not a file" and "holds no requests; log them with
`ann serve --request_log=FILE`".
"""

from __future__ import annotations

import codecs
import os
import re
import shlex
from collections.abc import Iterator
from typing import Any

import orjson

from ann import arguments, atomic, directory_kind

# The UTF-8 byte order mark some editors begin a file with: it was refused as damage ("BOM is
# not supported at column 1 ... delete that line"), and deleting the line lost a record.
BOM = b"\xef\xbb\xbf"

# Compressed files by their first bytes: (magic, what it is, the suffix its tool takes off the
# name, the tool). The server's own rotation (`--request_log_backups`) writes plain FILE.1,
# FILE.2; logrotate's `compress` writes FILE.1.gz.
COMPRESSED = (
    (b"\x1f\x8b", "gzip-compressed", ".gz", "gunzip"),
    (b"BZh", "bzip2-compressed", ".bz2", "bunzip2"),
    (b"\xfd7zXZ\x00", "xz-compressed", ".xz", "unxz"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", ".zst", "unzstd"),
    (b"PK\x03\x04", "a zip archive", "", "unzip"),
)
HEAD_BYTES = 1 << 16  # what `not_text` reads of a file
# A head whose bytes are more than this share not text (`_not_text_share`) is a binary file,
# unless one of its lines is a JSON object (a log with a damaged line, however short the log:
# that line is refused by its number, with its fix): Perl's -B file test's rule (perlfunc, -X:
# "more than a third of the characters are strange"; a null byte makes a file binary there
# too). Random bytes are about half so (invalid UTF-8, control characters); a log of many
# records with one damaged line, a fraction of a percent.
BINARY_SHARE = 1 / 3
# The control characters text holds (tab, line feed, form feed, carriage return, escape: ANSI
# colours); any other C0 character, or DEL, is not text.
_TEXT_CONTROLS = frozenset("\t\n\f\r\x1b")


def not_a_file(path: str) -> str | None:
    """What `path` is when it exists but is not a regular file (`atomic.file_kind`: "a FIFO (a
    named pipe)", "a directory", ...; links followed), else None (a regular file, or nothing
    there: its refusal is `file_error`'s). Asked before the file is opened: opening a FIFO
    waits for a writer, forever."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return atomic.file_kind(mode)


def decompress_command(head: bytes, path: str) -> str:
    """The shell command that decompresses the file `path`, which begins with `head` (one of
    `COMPRESSED`'s magics), keeping it: `gunzip -k FILE.gz` (writes FILE) where the name ends in
    the suffix its tool takes off, else `gunzip -c FILE > OUT` (`gunzip -k` refuses any other
    name: "unknown suffix -- ignored"; so do unxz and unzstd), OUT being FILE with `.plain`
    before a `.jsonl` suffix (`req.plain.jsonl`), else FILE.jsonl; `unzip FILE` for a zip
    archive (it takes any name and writes its members). The names are quoted for the shell
    where they need it. Raises ValueError for a `head` that is none of them."""
    found = [(suffix, tool) for magic, _, suffix, tool in COMPRESSED if head.startswith(magic)]
    if not found:
        raise ValueError(f"{head[:8]!r} is not the start of a compressed file")
    suffix, tool = found[0]
    if not suffix:
        return f"{tool} {shlex.quote(path)}"
    if path.endswith(suffix) and os.path.basename(path) != suffix:
        return f"{tool} -k {shlex.quote(path)}"
    root, ext = os.path.splitext(path)
    out = f"{root}.plain.jsonl" if ext == ".jsonl" else f"{path}.jsonl"
    return f"{tool} -c {shlex.quote(path)} > {shlex.quote(out)}"


def not_text(head: bytes, path: str, wanted: str) -> str | None:
    """Why a file that begins with `head` (its first bytes) is not JSON lines text, with the
    fix, as the end of a sentence naming it ("is gzip-compressed; decompress it first (gunzip -k
    FILE.gz) and give the file it writes": `decompress_command`; "is a binary file (it holds
    null bytes), not JSON lines text; give WANTED", or "(52% of its first 1,995 bytes are not
    UTF-8 text)" where more than `BINARY_SHARE` of them are not and no line is a JSON object),
    else None. `path`: the file, for the command."""
    for magic, what, _, _ in COMPRESSED:
        if head.startswith(magic):
            return (
                f"is {what}; decompress it first ({decompress_command(head, path)}) and give the "
                "file it writes"
            )
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # Windows' "Unicode" (Notepad, PowerShell)
        return (
            f"is UTF-16 text; save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8 {shlex.quote(path)})"
        )
    if b"\0" in head:
        return f"is a binary file (it holds null bytes), not JSON lines text; give {wanted}"
    share = _not_text_share(head)
    if share > BINARY_SHARE and not _holds_an_object(head):  # it was "line N: got text that
        # is not UTF-8 ...; the file is damaged (delete that line to use the rest)"
        return (
            f"is a binary file ({share:.0%} of its first {len(head):,} bytes are not UTF-8 "
            f"text), not JSON lines text; give {wanted}"
        )
    return None


def _holds_an_object(head: bytes) -> bool:
    """Whether a line of `head` is a JSON object (a record: the file is a log, damaged)."""
    for line in head.split(b"\n"):
        try:
            if isinstance(orjson.loads(line.removeprefix(BOM)), dict):
                return True
        except orjson.JSONDecodeError:
            continue
    return False


def _not_text_share(head: bytes) -> float:
    """The share of the bytes of `head` (a file's first bytes) that are not text: bytes that
    are not UTF-8 and control characters other than `_TEXT_CONTROLS` (0.0 for an empty head).
    A UTF-8 character cut at the end of the head counts as text."""
    if not head:
        return 0.0
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(head, final=False)
    bad = sum(c == "\ufffd" or (c < " " and c not in _TEXT_CONTROLS) or c == "\x7f" for c in text)
    # A replacement stands for one to three bytes: counted as bytes of the head, `bad` is at
    # least this share (an undecodable byte is one replacement, as Python's decoder makes it).
    return bad / len(head)


def cut_short(error: orjson.JSONDecodeError, text: bytes) -> bool:
    """Whether `text`, which orjson refused with `error`, is the start of a JSON value cut
    short: the parser ran out of data, or the cut fell inside a UTF-8 character (then what is
    before that character is such a start). Any other fault (a stray character, a bad literal)
    is not a cut."""
    if error.msg.startswith("unexpected end of data"):
        return True
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.reason != "unexpected end of data":  # bad bytes before the end
            return False
        try:
            orjson.loads(text[: e.start])
        except orjson.JSONDecodeError as inner:
            return inner.msg.startswith("unexpected end of data")
    return False


def check_file(path: str, name: str, wanted: str, error: type[Exception]) -> None:
    """Raises `error` with one line, `NAME is a FIFO (a named pipe), not a file; give WANTED`,
    for a `path` that exists but is not a regular file (`not_a_file`); nothing else is
    checked (a missing file is `file_error`'s). `name`: the flag as given (`--labels=FILE`)."""
    kind = not_a_file(path)
    if kind is not None:
        raise error(f"{name} is {kind}, not a file; give {wanted}")


def check_readable(path: str, name: str, wanted: str, error: type[Exception]) -> None:
    """`check_file`, and `settings.file_error`'s one line for a `path` that does not exist (or
    `missing`'s: below a file, or rotated away), is a folder or cannot be opened (`NAME does
    not exist; give WANTED`): the checks of a file
    flag that read nothing, made before anything slow (a model resolved or loaded, a server
    reached), where they came after it. Raises `error`."""
    from ann.serve.settings import file_error

    check_file(path, name, wanted, error)
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise error(missing(path, name, wanted) or file_error(name, e, wanted)) from None


def objects(
    path: str,
    name: str,
    expected: str,
    error: type[Exception],
    torn: str,
    damaged: str = "",
    wanted: str = "a JSON lines file",
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of the file `path`. `name`: the file as a
    refusal and a warning name it (`--labels=FILE`, or the path); `expected`: what a line should be
    (`expected a request record (...)`); `torn`: why a last line may be cut short, for the
    warning of a last line; `damaged`: the fix a refusal of a line that is not JSON ends with;
    `wanted`: what the file should be, for the refusal of one that is not (`check_file`,
    `not_text`: a FIFO, a folder, a compressed or binary file, refused before a line is read:
    `NAME is gzip-compressed; decompress it first (...)`). A line cut short (`cut_short`) is
    skipped with a warning wherever it is. Raises `error` with one line, `NAME line N:
    EXPECTED, got ...`, for any other line that is not a JSON object, or `NAME ...` for a file
    that cannot be read (`file_error`)."""
    from ann import cli
    from ann.serve.protocol import OUT_OF_RANGE, field_name, json_error, out_of_range, short
    from ann.serve.settings import file_error

    check_file(path, name, wanted, error)  # before open: a FIFO's waits for a writer
    try:
        f = open(path, "rb")
    except OSError as e:
        raise error(missing(path, name, wanted) or file_error(name, e, wanted)) from None
    with f:
        try:
            why = not_text(f.read(HEAD_BYTES), path, wanted)
            if why is not None:
                raise error(f"{name} {why}")
            f.seek(0)
            first = True  # the first line that is not blank
            for number, line in enumerate(f, 1):
                if number == 1:  # a UTF-8 byte order mark (Notepad, PowerShell, Excel) is
                    line = line.removeprefix(BOM)  # read as Python's utf-8-sig and jq do
                if not line.strip():
                    continue
                opening, first = first, False
                # Parsed without its end of line, so that orjson's place is on this line (it
                # said "unexpected end of data at line 2 column 1" for line 101).
                ended = line.endswith(b"\n")  # only a file's last line can lack it
                text = line[:-1] if ended else line
                try:
                    value = orjson.loads(text)
                except orjson.JSONDecodeError as e:
                    if opening and json_document(path):  # not a torn record: no records
                        raise error(
                            f"{name} is one JSON document over several lines (its line "
                            f"{number} is no record), not JSON lines; give {wanted}"
                        ) from None
                    if not ended:
                        cli.warn(
                            f"{name} line {number}: skipping it, torn (no end of line: {torn})"
                        )
                        continue
                    if cut_short(e, text):  # a torn record its writer went on after
                        cli.warn(
                            # Ended by a newline: lines may follow, or none (a restarted
                            # server ends a torn last line before it writes: it said "later
                            # lines were added" of a last line).
                            f"{name} line {number}: skipping it, torn (a record cut short: its "
                            "writer was stopped while writing it, and the line was ended later)"
                        )
                        continue
                    found = out_of_range(e)
                    if found and found[0]:  # the line is an object: the number is named
                        where = field_name("", found[0])
                        raise error(
                            f"{name} line {number}: {where}: expected {OUT_OF_RANGE}, got "
                            f"{found[1]}"
                        ) from None
                    raise error(
                        f"{name} line {number}: {expected}, got {json_error(e, text)}{damaged}"
                    ) from None
                if not isinstance(value, dict):
                    raise error(f"{name} line {number}: {expected}, got {short(value)}")
                yield number, value
        except OSError as e:  # a folder (EISDIR shows on the first read), a failing disk
            raise error(file_error(name, e, wanted)) from None


# The largest file `json_document` reads whole.
DOCUMENT_BYTES = 16 << 20


def json_document(path: str) -> bool:
    """Whether the file `path` is one JSON value written over several lines (a pretty-printed
    document: an export's manifest.json, a report.json), which JSON lines reading took for a
    torn first line ("skipping it, torn (a record cut short ...)") and damage after it. Files
    above DOCUMENT_BYTES are not read (False)."""
    try:
        if os.path.getsize(path) > DOCUMENT_BYTES:
            return False
        with open(path, "rb") as f:
            text = f.read().removeprefix(BOM)
        orjson.loads(text)
    except (OSError, orjson.JSONDecodeError):
        return False
    return len([line for line in text.splitlines() if line.strip()]) > 1


# What a rotated file's name ends in when compressed (logrotate's `compress`: gzip unless its
# compresscmd says otherwise), and the tool that writes its text to stdout.
_CAT = {".gz": "zcat", ".bz2": "bzcat", ".xz": "xzcat", ".zst": "zstdcat"}
_SUFFIX = "(" + "|".join(re.escape(s) for s in _CAT) + ")?"


def rotated_beside(path: str) -> list[str]:
    """The files beside `path` that a rotation of it left, oldest first, named with `path`'s
    folder as given: the server's own (`--request_log_backups`: FILE.1, FILE.2, ...) and
    logrotate's, which may compress them (FILE.1.gz, or FILE.1 and FILE.2.gz with
    `delaycompress`), date them (`dateext`: FILE-20261205, FILE-20261205.gz) or keep the
    extension last (`extension .jsonl`: NAME-20261205.jsonl.gz); [] where there are none or
    the folder cannot be listed. Numbered files are oldest by their number (FILE.3 before
    FILE.1), dated ones by name."""
    folder, base = os.path.split(path)
    if not base:
        return []
    stem, ext = os.path.splitext(base)
    tail = r"[.-](\d[\d.-]*?)"
    patterns = [re.compile(re.escape(base) + tail + _SUFFIX)]
    if ext:
        patterns.append(re.compile(re.escape(stem) + tail + re.escape(ext) + _SUFFIX))
    found = []
    for name in directory_kind.listing(folder or "."):
        for pattern in patterns:
            match = pattern.fullmatch(name)
            if match and os.path.isfile(os.path.join(folder, name)):
                mark = match[1]
                # FILE.N (N up to the server's 1,000 backups), not a date: FILE.20261205.
                numbered = pattern is patterns[0] and name[len(base)] == "."
                numbered = numbered and mark.isdigit() and len(mark) <= 4
                found.append(((0, -int(mark), "") if numbered else (1, 0, mark), name))
                break
    return [os.path.join(folder, name) for _, name in sorted(found)]


def read_rotated(path: str, flag: str, several: bool = True) -> str | None:
    """For a log `path` that is not there or is empty: where its lines went and how to read
    them, as the end of a refusal ("it was rotated: its lines are in ... beside it; ..."),
    from the files a rotation left beside it (`rotated_beside`); None where there are none.
    Plain files are given as they are (`--FLAG=FILE.1,FILE.2`, newest first, as the server's
    rotation numbers them); compressed ones are joined into one file, oldest first (`zcat -f
    FILE.2.gz FILE.1 > FILE.all.jsonl`: gzip's -f passes a plain file through; another
    compression gets its own tool), given as `--FLAG=FILE.all.jsonl`; so are plain ones for a
    flag that takes one file (`several` False: --labels)."""
    files = rotated_beside(path)
    if not files:
        return None
    said = f"it was rotated: its lines are in {', '.join(files)} beside it"
    if not any(map(compressed, files)) and several:
        return f"{said}; give them ({arguments.flag(flag, ','.join(reversed(files)))})"
    out = joined_name(path)
    return (
        f"{said}; join them into one file ({join_command(files, out)}) and give "
        f"{arguments.flag(flag, out)}"
    )


def compressed(path: str) -> bool:
    """Whether `path`'s name ends as a compressed rotated file's (.gz, .bz2, .xz, .zst)."""
    return path.endswith(tuple(_CAT))


def joined_name(path: str) -> str:
    """The file a log `path`'s files are joined into: `req.all.jsonl` for `req.jsonl`,
    `FILE.all.jsonl` for another name."""
    root, ext = os.path.splitext(path)
    return f"{root}.all.jsonl" if ext == ".jsonl" else f"{path}.all.jsonl"


def join_command(files: list[str], out: str) -> str:
    """The shell command that writes the text of `files` (oldest first; plain or compressed)
    into `out`: `zcat -f FILE.2.gz FILE.1 > OUT` (gzip's -f passes a plain file through), or
    each file by its own tool (`(xzcat FILE.2.xz; cat FILE.1) > OUT`)."""
    tools = [next((t for s, t in _CAT.items() if f.endswith(s)), "cat") for f in files]
    quoted = [shlex.quote(f) for f in files]
    if set(tools) <= {"zcat", "cat"}:
        join = f"zcat -f {' '.join(quoted)}"
    else:
        join = "(" + "; ".join(f"{t} {f}" for t, f in zip(tools, quoted, strict=True)) + ")"
    return f"{join} > {shlex.quote(out)}"


def flag_of(name: str) -> str:
    """The flag of `name` as a refusal names a file (`--requests=PATH`: "requests"); "FILE" for
    a bare path."""
    flag, sep, _ = name.partition("=")
    return flag.removeprefix("--") if sep and flag.startswith("--") else "FILE"


def missing(path: str, name: str, wanted: str) -> str | None:
    """The refusal of a `path` that is not there, with what to give: `NAME does not exist; it was
    rotated: ...` where a rotation left files beside it (`read_rotated`), `NAME cannot exist:
    F is a file, so nothing can be below it; give WANTED` below a file (`atomic.absent`); None
    where it exists or neither holds (the caller's own refusal: "does not exist", a name near
    it). `name`: the flag as given (`--requests=PATH`)."""
    if os.path.lexists(path):
        return None
    flag = flag_of(name)  # --requests takes several files; --labels one
    if (rotated := read_rotated(path, flag, several=flag == "requests")) is not None:
        return f"{name} does not exist; {rotated}"
    if (above := atomic.below_a_file(path)) is not None:
        return f"{name} cannot exist: {above}; give {wanted}"
    return None
