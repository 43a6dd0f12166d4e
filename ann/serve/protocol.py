"""Open Inference Protocol v2 (KServe v2) codec: decode and check requests, encode replies.

JSON, and the binary tensor data extension (as in Triton and KServe): with the header
`Inference-Header-Content-Length: N` the first N bytes of the body are the JSON request and the
rest holds raw tensors, little-endian, row-major, one after another in the order of the inputs
whose `parameters.binary_data_size` gives their size. Outputs come back binary the same way
when the request asks (`parameters.binary_data_output: true`, or an output's
`parameters.binary_data: true`).

Every check that fails raises `errors.ServeError` with the HTTP status and a message that names the
field, what was expected and what came, e.g.
`inputs[0].shape: expected [-1, 8, 8, 1] (batch first), got [1, 8, 8]`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import orjson

from ann import artifact
from ann.serve.errors import ServeError

# numpy dtype name <-> v2 datatype
DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "bfloat16": "BF16",
    "float32": "FP32",
    "float64": "FP64",
}


_BY_DTYPE = {np.dtype(k): v for k, v in DATATYPES.items() if k != "bfloat16"}


def tensor_metadata(signature: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """v2 metadata tensors: name, datatype, shape with -1 for the batch axis."""
    return [
        {"name": name, "datatype": DATATYPES[spec["dtype"]], "shape": list(spec["shape"])}
        for name, spec in signature.items()
    ]


def clip(text: str, limit: int = 100) -> str:
    """A client's text as a refusal quotes it (a path, a value), cut to `limit` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short(value: Any, limit: int = 60) -> str:
    """A client's value as a refusal quotes it, in JSON spelling (`null`, `true`, `"text"`,
    `[1,null]`: what came, not Python's `None` or `True`), cut to `limit` characters."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # not from JSON (a tuple of bytes, say): Python's spelling
        text = repr(value)
    else:  # orjson reads an integer past 64 bits as a float: said as the integer sent
        text = _HUGE_INTEGRAL.sub(lambda m: str(int(float(m[0]))), text)
    return clip(text, limit)


# A float orjson writes in exponent form that is a whole number just past a 64-bit integer
# (18446744073709551616 came back as 1.8446744073709552e+19). Up to 1e22 every power of ten
# and 2**64 are exact doubles; past it a float's integer is not what was written (1e23 is
# 99999999999999991611392), so it is left as orjson writes it.
_HUGE_INTEGRAL = re.compile(r"(?<![\w.])-?[1-9](?:\.[0-9]+)?e\+(?:19|2[0-2])\b")


def names(values: Any) -> str:
    """The server's names (inputs, outputs, models) as a refusal lists them beside what came:
    sorted, in JSON spelling like `short`'s (`["image"]`), whole."""
    return listed(sorted(values))


def listed(values: list[str]) -> str:
    """`values` in the order given (a model's versions: `dataplane.listed`, numbers by number)
    in `names`'s spelling."""
    return orjson.dumps(values).decode()


# A JSON number as a body writes it, and as a refusal's text shows one (not inside a word such
# as UINT8 or 0x8b). Those orjson reads as floats: a fraction, an exponent, an integer past 64
# bits. A refusal shows such a float in its own spelling (1e+30 for 1e30; 1e29, and
# 99999999999999991433150857216 as an integer, for 99999999999999999999999999999).
_LITERAL = re.compile(rb"(?<![\w.])-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?![\w.])")
_SHOWN = re.compile(r"(?<![\w.])-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?(?![\w.])")
# Float-form numbers in a refusal: a fraction, an exponent, or more digits than a double holds
# exactly (a float's integer as `_plain` and `short` write it). 8 is never one (the server's
# own "[-1, 8, 8, 1]" stays as it is beside a client's 8.0).
_FLOAT_FORM = re.compile(r"[.e]|[0-9]{17}")
# The most of a body looked through for what a refusal quotes: a bounded cost on a refused
# body (measured 36 ms for 1.2 MB of JSON floats, the regex half of it: about 2 ms at this
# size); a number past it is quoted in the server's spelling.
AS_SENT_LIMIT = 64 << 10


def as_sent(message: str, text: bytes) -> str:
    """`message` (a refusal of the JSON `text`) with every number it quotes in float form
    (`_FLOAT_FORM`) spelled as `text` wrote it: `1e30`, not 1e+30; 99999999999999999999999999999,
    not 99999999999999991433150857216 (orjson reads an integer past 64 bits as a float). A
    number that `text` spells two ways, or does not hold (the server's own), stays as it is.
    Only on the error path: one regex pass over `text` (at most `AS_SENT_LIMIT` bytes)."""
    shown = [m for m in _SHOWN.finditer(message) if _FLOAT_FORM.search(m.group())]
    if not shown:
        return message
    wanted = {float(m.group()) for m in shown} - {math.inf, -math.inf}  # 1.8e308 is the limit
    spelled: dict[float, str | None] = {}
    for literal in _LITERAL.findall(text, 0, AS_SENT_LIMIT):
        if not (b"." in literal or b"e" in literal or b"E" in literal) and (
            len(literal) < 20 or (len(literal) < 22 and -(1 << 63) <= int(literal) < 1 << 64)
        ):
            continue  # orjson read it as an integer: shown exactly already
        value = float(literal)
        if value in wanted:
            before = spelled.setdefault(value, literal.decode())
            if before is not None and before != literal.decode():
                spelled[value] = None  # spelled two ways: which one is meant is unknown
    if not spelled:
        return message
    out, end = [], 0
    for m in shown:
        literal = spelled.get(float(m.group()))
        if literal is not None:
            out += [message[end : m.start()], literal]
            end = m.end()
    return "".join(out) + message[end:]


# Text at an invalid JSON value that means a non-finite number (NaN, nan, Infinity, -inf, ...).
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf(?:inity)?)\b", re.IGNORECASE)
# A JSON number's text (what came at a "number is infinity" error).
_NUMBER = re.compile(r"-?[0-9.]+(?:[eE][+-]?[0-9]+)?")


def json_error(error: orjson.JSONDecodeError, text: bytes | str) -> str:
    """What came, as a refusal says it, for `text` that orjson refused with `error`: its fault
    and place (column, and line past the first), e.g. `invalid JSON (unexpected end of data at
    column 14)`; `a number out of range (1e400 at column 9; ...)`, valid JSON that no 64-bit
    float holds; `text that is not UTF-8 (byte 0xff at column 8)`; `nothing (it is empty)`.
    "NaN and Infinity are not JSON" is added only where such a token is what failed, and
    orjson's "invalid literal, expected 'null'" (text that starts like a literal: `nan`, `not
    json`) becomes "expected a JSON value": it names the parser's guess, not the fault."""
    raw = text.encode() if isinstance(text, str) else bytes(text)
    if not raw.strip():
        return "nothing (it is empty)"
    if error.msg.startswith("str is not valid UTF-8"):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            before = raw[: e.start]
            line = before.count(b"\n") + 1
            column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8")) + 1
            return f"text that is not UTF-8 (byte 0x{raw[e.start]:02x} at {_place(line, column)})"
        return "text that is not UTF-8"
    doc, pos = error.doc, error.pos
    if error.msg.startswith("number is infinity"):
        number = _NUMBER.match(doc, pos)
        token = clip(number.group(), 30) + " " if number else ""
        return (
            f"a number out of range ({token}at {_place(error.lineno, error.colno)}; JSON numbers "
            "here are 64-bit floats, at most about 1.8e308 in size)"
        )
    reason = "expected a JSON value" if error.msg.startswith("invalid literal") else error.msg
    start = pos - 1 if pos > 0 and doc[pos - 1 : pos] in ("+", "-") else pos
    aside = "; NaN and Infinity are not JSON" if _NON_FINITE.match(doc, start) else ""
    return f"invalid JSON ({reason} at {_place(error.lineno, error.colno)}{aside})"


def _place(line: int, column: int) -> str:
    return f"line {line} column {column}" if line > 1 else f"column {column}"


# Tries at a body whose out-of-range numbers are each replaced to find the first one's place:
# past this many, the refusal gives its column instead (a bounded cost on a refused body).
_OUT_OF_RANGE_TRIES = 8
# What a refusal expects there: JSON numbers are read as IEEE 754 doubles (RFC 8259 section 6).
# A request id is kept per prediction for the feedback join (ann/serve/feedback.py, 1.5 x
# capacity of them): unbounded, 300 ids of a million characters took 380 MB. UUIDs are 36
# characters, W3C trace ids 32.
MAX_ID_LENGTH = 256
OUT_OF_RANGE = "a number within a 64-bit float's range (at most about 1.8e308 in size)"


def out_of_range(error: orjson.JSONDecodeError) -> tuple[list[str | int], str] | None:
    """For orjson's refusal of a number no 64-bit float holds (`1e400`, valid JSON): (the keys
    and indices that lead to it from the top of the document, the number's text cut to 30
    characters); None for another error, or where the path cannot be found cheaply (more than
    a few such numbers). The text is parsed again with that number replaced by a marker (and
    later ones by 0), and the marker looked for in document order: one or a few more parses, on
    a body that is refused anyway."""
    if not error.msg.startswith("number is infinity"):
        return None
    doc, pos = error.doc, error.pos
    number = _NUMBER.match(doc, pos)
    if number is None:
        return None
    marker = "\ue000ann:out-of-range\ue000"  # a private-use character: no client's text
    text = doc[:pos] + orjson.dumps(marker).decode() + doc[number.end() :]
    for _ in range(_OUT_OF_RANGE_TRIES):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            later = _NUMBER.match(e.doc, e.pos) if e.msg.startswith("number is infinity") else None
            if later is None:
                return None
            text = e.doc[: e.pos] + "0" + e.doc[later.end() :]
            continue
        path = _path_to(value, marker)
        return (path, clip(number.group(), 30)) if path else None
    return None


def _path_to(value: Any, marker: str) -> list[str | int] | None:
    """The keys and indices that lead to the string `marker` in a parsed JSON `value`, or None.
    A list is searched for it at C speed (`list.index`) before its elements are visited."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            children = list(node.items())
        elif isinstance(node, list):
            try:
                return [*path, node.index(marker)]
            except ValueError:
                children = list(enumerate(node))
        else:
            continue
        for key, child in reversed(children):  # the first child is searched first
            if isinstance(child, (dict, list)):
                stack.append((child, [*path, key]))
            elif child == marker:
                return [*path, key]
    return None


def field_name(prefix: str, path: list[str | int]) -> str:
    """A place in a request as refusals name it: `inputs[0].data[3]` (`prefix` "", a body's
    own fields), `feedback[2].label` (`prefix` "feedback")."""
    name = prefix
    for step in path:
        name += f"[{step}]" if isinstance(step, int) else (f".{step}" if name else str(step))
    return name


def loads(
    body: bytes, field: str, expected: str, prefix: str | None = None, unique_keys: bool = True
) -> Any:
    """A request body parsed as JSON; ServeError 400 (reason `json`) otherwise, one line:
    `FIELD: expected EXPECTED, got ...` with what came (`json_error`; "an empty body"). A
    number no 64-bit float holds inside the body is named by its place instead (it said `body:
    expected a JSON object, got a number out of range (...)` of an object):
    `inputs[0].data[0]: expected a number within a 64-bit float's range (...), got 1e400`, the
    place after `prefix` (default `field`; "" where the body's fields are named bare, as
    `inputs[0]`). A key given twice in an object is refused (`refuse_duplicate_keys`), as on
    every JSON body the server reads; `unique_keys=False` leaves that to the caller (an infer
    request, which checks it more cheaply)."""
    value = _loads(body, field, expected, prefix)
    if unique_keys:
        refuse_duplicate_keys(field, body, value)
    return value


def _loads(body: bytes, field: str, expected: str, prefix: str | None) -> Any:
    """`loads` without its check of keys given twice (an infer's own is cheaper)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        found = out_of_range(e)
        if found and found[0]:
            where = field_name(field if prefix is None else prefix, found[0])
            message = f"{where}: expected {OUT_OF_RANGE}, got {found[1]}"
            raise ServeError(400, message, "json") from None
        got = "an empty body" if not body.strip() else json_error(e, body)
        raise ServeError(400, f"{field}: expected {expected}, got {got}", "json") from None


_MISSING = object()


def given(tensor: Mapping[str, Any], key: str) -> str:
    """What a request gave for `key`: `short(value)`, or "no 'key' field" when it is absent
    (a refusal that said "got None" read as if null had been sent)."""
    value = tensor.get(key, _MISSING)
    return f"no {key!r} field" if value is _MISSING else short(value)


class _Spec:
    """What one input's signature entry means, worked out once, not per request."""

    __slots__ = (
        "dtype", "datatype", "expected", "kind", "floating", "low", "high", "ids", "pad", "framing"
    )  # fmt: skip

    def __init__(
        self,
        dtype: str,
        shape: tuple[int, ...],
        names: int | None = None,
        pad: int | None = None,
        framing: artifact.Framing | None = None,
    ):
        self.dtype = np.dtype(dtype)
        self.datatype = DATATYPES[self.dtype.name]
        self.expected = [-1, *shape]
        self.kind = self.dtype.kind
        # bfloat16 (ml_dtypes) has kind "V", not "f": floating all the same, checked the same.
        self.floating = self.kind == "f" or self.datatype == "BF16"
        # An integer input that indexes `names` entries (a token vocabulary): ids in
        # [0, names); the model would read past its embedding (NaN, or garbage) on any other.
        self.ids = names if self.kind in "iu" else None
        # Token rows padded on the right with this id (`artifact.pad_id`), else None.
        self.pad = pad if self.kind in "iu" else None
        # How such rows are framed beyond their padding (`artifact.Framing`: seq2seq's source).
        self.framing = framing if self.pad is not None else None
        if self.kind in "iu":
            info = np.iinfo(self.dtype)
            self.low, self.high = int(info.min), int(info.max)
            if names is not None:
                self.low, self.high = max(self.low, 0), min(self.high, names - 1)
        else:
            self.low = self.high = 0


_SPECS: dict[
    tuple[str, tuple[int, ...], int | None, int | None, artifact.Framing | None], _Spec
] = {}


def _spec(entry: Mapping[str, Any]) -> _Spec:
    """The `_Spec` of a signature entry given as a plain mapping (a reader of the request log,
    a test), shared between equal entries. A served model's are made once, at load
    (`Signature`): making the key built the entry's `artifact.Framing` again on every call,
    11-20 us of a one-row seq2seq request (docs/benchmarks.md)."""
    names = entry.get("names")
    key = (
        str(entry["dtype"]),
        tuple(entry["shape"]),
        None if names is None else len(names),
        artifact.pad_id(entry),
        artifact.framing(entry) if "framing" in entry else None,
    )
    spec = _SPECS.get(key)
    if spec is None:
        spec = _SPECS[key] = _Spec(*key)
    return spec


class Signature(dict):
    """A served model's inputs, name -> signature entry without the batch axis (a dict, as
    `decode_infer` takes any mapping of entries), with each entry's `_Spec` worked out once,
    when the model is loaded (`specs`): its dtype, range, padding and `artifact.Framing` (the
    loaded model's own, `artifact.Model.framings`, where given: built once per load, its
    automaton too). Each loaded model keeps its own, whatever another model holds."""

    def __init__(
        self,
        entries: Mapping[str, Mapping[str, Any]],
        framings: Mapping[str, artifact.Framing] | None = None,
    ):
        super().__init__(entries)
        self.specs: dict[str, _Spec] = {}
        for name, entry in self.items():
            names = entry.get("names")
            pad = artifact.pad_id(entry)
            if framings is not None:
                framing = framings.get(name)
            else:
                framing = artifact.framing(entry) if "framing" in entry else None
            self.specs[name] = _Spec(
                str(entry["dtype"]),
                tuple(entry["shape"]),
                None if names is None else len(names),
                pad,
                framing,
            )


def _padded(field: str, array: np.ndarray, spec: _Spec) -> np.ndarray:
    """`array` if its rows keep their right padding (`artifact.padding_fault`: a pad before
    a token, or a row of pads alone, was answered 200 for the wrong position, or for nothing)
    and, where the signature states one, their framing (`artifact.Framing`: a seq2seq source
    without its <eos> was answered 200 with a meaningless text); else a refusal naming the row
    and what it needs."""
    if spec.pad is not None:
        fault = artifact.padding_fault(array, spec.pad)
        if fault is not None:
            raise ServeError(400, f"{field}: {fault}", "padding")
        if spec.framing is not None and (fault := spec.framing.fault(array)) is not None:
            raise ServeError(400, f"{field}: {fault}", "framing")
    return array


def _out_of_range(field: str, flat: np.ndarray, spec: _Spec) -> ServeError:
    """The refusal of the first of `flat`'s values outside [spec.low, spec.high]."""
    i = int(np.argmax((flat < spec.low) | (flat > spec.high)))
    ids = f" (ids of its {spec.ids} names: the model metadata's labels)" if spec.ids else ""
    return ServeError(
        400,
        f"{field}: expected {spec.datatype} values in [{spec.low}, {spec.high}]{ids}, got "
        f"{_plain(flat[i])} at flat index {i}",
        "data",
    )


_min, _max = np.minimum.reduce, np.maximum.reduce


def _decode_data(
    field: str,
    tensor: Mapping[str, Any],
    shape: list[int],
    spec: _Spec,
    booleans: bool,
    any_nesting: bool = False,
) -> np.ndarray:
    """The input's JSON numbers (`tensor["data"]`) -> an array of its dtype; one C conversion,
    a few whole-array checks (range, integrality, finiteness), no work per element in Python.
    The values come flat (row-major) or nested as `shape`, as the v2 protocol has them ("in
    their natural multi-dimensional representation, or as a flattened one-dimensional
    representation"): other nesting ([[32 values], [32 values]] for [1, 8, 8, 1]) is refused.
    JSON's true and false are refused for every datatype but BOOL (NumPy reads them as 1 and 0);
    `booleans`: whether the body may hold any (it has the text `true` or `false`), else that
    check (per element) is skipped. `any_nesting`: any nesting of the right count is taken (a
    request log's records, served before the nesting was checked)."""
    dtype, datatype = spec.dtype, spec.datatype
    data = tensor.get("data")
    if not isinstance(data, list):
        raise ServeError(
            400, f"{field}: expected a JSON array of numbers, got {given(tensor, 'data')}", "data"
        )
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):
        raise ServeError(
            400,
            f"{field}: expected the values of input {tensor.get('name')!r} flat or nested as its "
            f"shape {shape}, got ragged lists",
            "data",
        ) from None
    count = math.prod(shape)
    if array.size == 0 and count == 0:
        array = array.astype(dtype)
    kind = array.dtype.kind
    if kind not in "biuf":
        raise ServeError(
            400, f"{field}: expected numbers for {datatype}, got {not_a_number(data)}", "data"
        )
    target = spec.kind
    if target != "b" and (kind == "b" or (booleans and _holds_booleans(data))):
        raise ServeError(
            400,
            f"{field}: expected numbers for {datatype} input {tensor['name']!r}, got true or "
            "false (JSON booleans are for BOOL inputs only)",
            "data",
        )
    if array.size != count:
        raise ServeError(
            400,
            f"{field}: expected {count} values for shape {shape}, got {array.size} "
            f"value{'s' * (array.size != 1)}",
            "data",
        )
    if array.ndim != 1 and list(array.shape) != shape and not any_nesting:  # v2's rule
        raise ServeError(
            400,
            f"{field}: expected the values of input {tensor['name']!r} flat or nested as its shape "
            f"{shape}, got them nested as {list(array.shape)}",
            "data",
        )
    if target in "iu":
        flat = array.reshape(-1)
        if kind == "f":
            bad = ~np.isfinite(flat) | (flat != np.round(flat))
            if bad.any():  # the first one and where (it said only "got fractions")
                i = int(np.argmax(bad))
                raise ServeError(
                    400,
                    f"{field}: expected integers for {datatype}, got {_plain(flat[i])} at flat "
                    f"index {i}",
                    "data",
                )
        if array.size:
            low, high = _min(array, axis=None), _max(array, axis=None)
            if low < spec.low or high > spec.high:
                raise _out_of_range(field, flat, spec)
        return _padded(field, array.astype(dtype).reshape(shape), spec)
    if target == "b":
        if kind != "b" and not np.isin(array, (0, 1)).all():
            raise ServeError(400, f"{field}: expected true/false or 0/1 for BOOL", "data")
        return array.astype(dtype).reshape(shape)
    with np.errstate(over="ignore", invalid="ignore"):
        result = array.astype(dtype).reshape(shape)
    return _finite(field, result, datatype, array)


def decode_data(
    field: str, tensor: Mapping[str, Any], shape: list[int], entry: Mapping[str, Any]
) -> np.ndarray:
    """A tensor's JSON numbers as the signature `entry` ({"dtype", "shape"}) takes them, with
    every check a request's get (range and whole numbers of an integer type, finiteness,
    booleans); ServeError 400 naming `field` otherwise. For readers of what was served (the
    request log), which must refuse what the server would, except data nested otherwise than
    its shape: a log written before the server checked the nesting holds such records, served
    (their values are read row-major)."""
    return _decode_data(field, tensor, shape, _spec(entry), booleans=True, any_nesting=True)


def not_a_number(data: list) -> str:
    """The first value of a JSON array (flat or nested) that is not a number, as a refusal
    says it: `null at flat index 3` (the index of the row-major flat data); the whole array
    (`short`) if every value is one. Only on the error path: it walks the values in Python."""
    index = 0
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if type(value) is list:
                stack.append(iter(value))
                break
            if type(value) not in (int, float, bool):
                return f"{short(value, 30)} at flat index {index}"
            index += 1
        else:
            stack.pop()
    return short(data)


def _may_hold_booleans(body: bytes) -> bool:
    """Whether the JSON text `body` has `true` or `false` in it: JSON booleans among an input's
    numbers are refused (`_decode_data`), and looking at the values costs more than this byte
    search (0.6 us for a digits request, as fast as the letter-by-letter search it replaced)."""
    return b"true" in body or b"false" in body


def _holds_booleans(data: list) -> bool:
    """Whether a JSON array (flat or nested) holds true or false: NumPy reads `[true, 2]` as
    `[1, 2]`, so the values themselves are looked at (one C pass a level)."""
    stack = [data]
    while stack:
        items = stack.pop()
        types = set(map(type, items))
        if bool in types:
            return True
        if list in types:
            stack.extend(v for v in items if type(v) is list)
    return False


def _finite(
    field: str, array: np.ndarray, datatype: str, sent: np.ndarray | None = None
) -> np.ndarray:
    """`array` if every value is finite; else a refusal naming the first one that is not
    (`artifact.finite_fault`, the loader's words: as `sent`, the JSON numbers before the cast,
    when they were finite: out of the type's range)."""
    fault = artifact.finite_fault(array, datatype, sent)
    if fault is not None:
        raise ServeError(400, f"{field}: {fault}", "data")
    return array


def _decode_binary(field: str, raw: memoryview, shape: list[int], spec: _Spec) -> np.ndarray:
    """Raw little-endian bytes -> the input's array, with the same checks as JSON numbers."""
    array = np.frombuffer(raw, spec.dtype.newbyteorder("<")).astype(spec.dtype, copy=False)
    array = array.reshape(shape)
    if spec.kind == "b" and array.size and _max(array.view(np.uint8), axis=None) > 1:
        raise ServeError(400, f"{field}: expected bytes 0 or 1 for BOOL", "data")
    if spec.floating:
        return _finite(field, array, spec.datatype)
    if spec.ids is not None and array.size:
        if _min(array, axis=None) < spec.low or _max(array, axis=None) > spec.high:
            raise _out_of_range(field, array.reshape(-1), spec)
    return _padded(field, array, spec)


def _binary_size(field: str, tensor: Mapping[str, Any], available: int) -> int | None:
    """`parameters.binary_data_size` of a request input, if it is sent as binary (`available`:
    the bytes of binary data after the JSON)."""
    parameters = tensor.get("parameters")
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise ServeError(
            400, f"{field}.parameters: expected an object, got {short(parameters)}", "field"
        )
    known_keys(f"{field}.parameters", parameters, ("binary_data_size",))
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if type(size) is float and size >= 1 << 64:  # an integer past 64 bits reads as a float
        raise ServeError(
            400,
            f"{field}.parameters.binary_data_size: expected at most the body's {available} bytes "
            f"of binary data, got {short(size)} bytes",
            "binary",
        )
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ServeError(
            400,
            f"{field}.parameters.binary_data_size: expected a byte count (an integer >= 0), got "
            + short(size),
            "field",
        )
    return size


# Triton's tensor parameters of extensions ann does not implement, and why not to send them.
_UNSUPPORTED = {
    "shared_memory_region": "ann has no shared-memory extension: send the tensor in the body",
    "shared_memory_byte_size": "ann has no shared-memory extension: send the tensor in the body",
    "shared_memory_offset": "ann has no shared-memory extension: send the tensor in the body",
    # Not "ask for the probabilities output": an anomaly detector's classes are in `flagged`.
    "classification": (
        "ann has no classification extension: ask for the model's class output (its metadata's "
        "parameters.labels names each output's classes)"
    ),
}


# The v2 protocol's keys (KServe's open inference protocol, REST): of a request, an input
# tensor and a requested output. Any other was ignored: a misspelled `outputs` returned every
# output, a misspelled `parameters` JSON instead of binary.
REQUEST_KEYS = ("id", "parameters", "inputs", "outputs")
TENSOR_KEYS = ("name", "shape", "datatype", "parameters", "data")
OUTPUT_KEYS = ("name", "parameters")
_REQUEST, _TENSOR, _OUTPUT = map(frozenset, (REQUEST_KEYS, TENSOR_KEYS, OUTPUT_KEYS))


def known_keys(field: str, parameters: Mapping[str, Any], known: tuple[str, ...]) -> None:
    """ServeError 400 for a key of `parameters` (an object of a request) outside `known` (a
    typo such as binary_dat was ignored, and the output came back as JSON), with the known key
    it is closest to."""
    for key in parameters:
        if key not in known:
            why = _UNSUPPORTED.get(key)
            if why is None:
                from ann.config import did_you_mean  # the error path only: not the server's start

                why = f"expected {', '.join(known)}{did_you_mean(str(key), known)}"
            raise ServeError(400, f"{field}: unknown key {short(key)}; {why}", "field")


def _flag(field: str, parameters: Any, key: str) -> bool:
    if parameters is None:
        return False
    value = parameters.get(key, False) if isinstance(parameters, dict) else None
    if not isinstance(value, bool):
        raise ServeError(
            400,
            f"{field}: expected an object whose {key!r} is true or false, got {short(parameters)}",
            "field",
        )
    return value


def _plain(value: Any) -> str:
    """A number as a client wrote it, as near as a float allows: 18446744073709551616, not
    1.8446744073709552e+19; 1.5 as 1.5."""
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value.item() if isinstance(value, np.generic) else value)


class InferRequest(NamedTuple):
    """A decoded v2 infer request."""

    inputs: dict[str, np.ndarray]  # by input name, each [rows, *signature shape], its dtype
    rows: int  # the batch axis, the same for every input
    id: str | None  # the request's `id`, echoed in the reply
    outputs: list[str]  # output names to return, in the order asked
    binary: frozenset[str]  # those of them to return as binary tensor data
    timeout: float | None = None  # seconds it may wait in the queue (`parameters.timeout`)


def decode_infer(
    body: bytes,
    signature: Mapping[str, Mapping[str, Any]],
    outputs: Mapping[str, Any],
    max_rows: int,
    header_length: bytes | None = None,
) -> InferRequest:
    """A v2 infer request -> `InferRequest`; `ServeError` (400, or 413 for more than
    `max_rows` rows) naming the field otherwise. `header_length`: the
    Inference-Header-Content-Length header's value, when the body carries binary tensors
    after its JSON."""
    binary = memoryview(b"")
    whole = None
    if header_length is not None:
        whole = body
        body, binary = _split_binary(body, header_length)
    request = _parse_json(body, whole)
    request_id = None
    try:  # free unless raised: the fast path pays nothing
        if not _REQUEST.issuperset(request):
            known_keys("body", request, REQUEST_KEYS)
        request_id = request.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise ServeError(400, f"id: expected a string, got {short(request_id)}", "field")
        if request_id is not None and len(request_id) > MAX_ID_LENGTH:
            raise ServeError(400, id_too_long("id", request_id), "field")
        all_binary, timeout = request_parameters(request.get("parameters"))
        booleans = _may_hold_booleans(body)
        arrays, rows = _decode_inputs(request, signature, max_rows, binary, booleans)
        wanted, as_binary = _wanted_outputs(request, outputs, all_binary)
        colons = body.count(b":")
        if colons > _keys_in(request) and colons > _keys_in(request) + _colons_in_names(request):
            refuse_duplicate_keys("body", body, request)
    except ServeError as e:
        # A key given twice first: which of its values the other checks read is left open.
        if not isinstance(e, DuplicateKey):
            refuse_duplicate_keys("body", body, request)
        e.message = as_sent(e.message, body)
        e.request_id = request_id if isinstance(request_id, str) else None  # the request log's
        raise
    return InferRequest(arrays, rows, request_id, wanted, as_binary, timeout)


def _keys_in(request: dict[str, Any]) -> int:
    """The keys of a decoded request's objects: the body, its `parameters`, each input and
    output and their `parameters`. Its JSON text has as many colons when no object repeats a
    key and no string holds one; more: a key given twice (the parser kept the last in silence),
    or a colon inside a string (`_colons_in_names`) or a nested parameter, which
    `refuse_duplicate_keys` tells apart. With the body's byte count: 0.2-0.4 us of a one-row
    digits request's ~10-15 us decode (docs/benchmarks.md)."""
    n = len(request)
    own = request.get("parameters")
    if type(own) is dict:
        n += len(own)
    for tensor in request["inputs"]:
        n += len(tensor)
        own = tensor.get("parameters")
        if type(own) is dict:
            n += len(own)
    for tensor in request.get("outputs") or ():
        n += len(tensor)
        own = tensor.get("parameters")
        if type(own) is dict:
            n += len(own)
    return n


def _colons_in_names(request: dict[str, Any]) -> int:
    """Colons inside the strings a request may well hold one in (its id, tensor names such as
    TensorFlow's `input:0`): counted only when the text has more colons than keys."""
    tensors = [*request["inputs"], *(request.get("outputs") or ())]
    return (request.get("id") or "").count(":") + sum(t["name"].count(":") for t in tensors)


class DuplicateKey(ServeError):
    """The refusal of a JSON body with a key given twice in one object (reason `json`)."""


def _keys_and_colons(value: Any) -> int:
    """The keys of every object in a decoded JSON `value` plus the colons in its strings (keys
    and values): its text has this many colons unless an object gave a key twice (the parser
    kept the last in silence). Counted in `value` written again by orjson (C speed: 0.5 ms for
    10,000 feedback items, where a walk in Python took 10 ms), whose only colons are those."""
    try:
        return orjson.dumps(value).count(b":")
    except (TypeError, orjson.JSONEncodeError):  # not orjson's own output: assume a repeat
        return -1


def refuse_duplicate_keys(field: str, body: bytes, value: Any = _MISSING) -> None:
    """`DuplicateKey` (a ServeError 400) naming a key that an object of the JSON `body`
    gives twice, if any: JSON leaves a repeated key's meaning open (RFC 8259 section 4), parsers
    differ on which one counts, and `{"inputs": [], "inputs": [...]}` was answered from the last
    in silence. With `value` (the body decoded), only a body with more colons than `value` has
    keys and colons in strings is parsed again to name the key; without, any body is."""
    import json

    if value is not _MISSING and body.count(b":") <= _keys_and_colons(value):
        return

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen = {}
        for key, value in items:
            if key in seen:
                raise DuplicateKey(
                    400,
                    f"{field}: expected each key once in an object, got {short(key)} twice "
                    "(which one counts is left open by JSON; send it once)",
                    "json",
                )
            seen[key] = value
        return seen

    try:
        json.loads(body, object_pairs_hook=pairs)
    except (ValueError, RecursionError):  # not JSON for Python's parser: nothing to name
        pass


# A request's `parameters` (Triton's HTTP/REST protocol names them): its own, then those of
# Triton's scheduling a stateless, single-priority batcher takes only at their defaults.
REQUEST_PARAMETERS = ("binary_data_output", "timeout")
_DEFAULT_ONLY = {
    "priority": (0, "ann's batcher has one priority level and serves in arrival order"),
    "sequence_id": (0, "ann serves stateless models (no sequence batching)"),
    "sequence_start": (False, "ann serves stateless models (no sequence batching)"),
    "sequence_end": (False, "ann serves stateless models (no sequence batching)"),
}


# The longest `parameters.timeout`, in microseconds: Triton's (a uint64).
MAX_TIMEOUT = (1 << 64) - 1


def request_parameters(parameters: Any) -> tuple[bool, float | None]:
    """(binary_data_output, timeout in seconds or None) of an infer request's `parameters`.

    `timeout`: Triton's request timeout, an integer number of microseconds the request may wait
    in the queue before its batch starts (0: no limit). `priority`, `sequence_id`,
    `sequence_start` and `sequence_end` (Triton's) are taken at their defaults (0, 0 or "",
    false) and refused otherwise, as is a key none of these: a client counting on them must not
    be served as if they held. `ServeError` 400 naming the key."""
    if parameters is None:
        return False, None
    if not isinstance(parameters, dict):
        raise ServeError(400, f"parameters: expected an object, got {short(parameters)}", "field")
    known_keys("parameters", parameters, (*REQUEST_PARAMETERS, *_DEFAULT_ONLY))
    for key, value in parameters.items():
        if key in REQUEST_PARAMETERS:
            continue
        default, why = _DEFAULT_ONLY[key]
        # By type too: `priority: false` or `sequence_end: 0` passed as the defaults.
        is_default = type(value) is type(default) and value == default
        if not is_default and not (key == "sequence_id" and value == ""):
            raise ServeError(
                400,
                f"parameters.{key}: expected {str(default).lower()} or no {key}, got "
                f"{short(value)}: {why}",
                "field",
            )
    timeout = parameters.get("timeout", 0)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 <= timeout <= MAX_TIMEOUT:
        got = f"{short(timeout)} microseconds" if type(timeout) in (int, float) else short(timeout)
        raise ServeError(
            400,
            f"parameters.timeout: expected microseconds as an integer in [0, {MAX_TIMEOUT}] (0: no "
            f"limit), got {got}",
            "field",
        )
    return _flag("parameters", parameters, "binary_data_output"), timeout / 1e6 or None


def id_too_long(field: str, request_id: str) -> str:
    """The refusal of an id over MAX_ID_LENGTH characters, naming `field`."""
    return (
        f"{field}: expected at most {MAX_ID_LENGTH} characters (a UUID is 36), got "
        f"{len(request_id)} characters"
    )


def _split_binary(body: bytes, header_length: bytes) -> tuple[bytes, memoryview]:
    """(the JSON part, the binary tensor data after it) by Inference-Header-Content-Length."""
    text = header_length.strip()
    # Bounded before int(): a body's length has at most as many digits as len(body).
    if len(text) > len(str(len(body))) or not text.isdigit() or not 0 <= int(text) <= len(body):
        raise ServeError(
            400,
            f"body: expected Inference-Header-Content-Length between 0 and the body's "
            f"{len(body)} bytes, got {short(text.decode('latin-1'))}" + _length_hint(body, None),
            "binary",
        )
    length = int(text)
    if length == 0 and body:  # it said "got an empty body" of a body of 179 bytes
        raise ServeError(
            400,
            "body: expected Inference-Header-Content-Length to be the JSON request's length in "
            f"bytes, got 0, which leaves none before the {len(body)} bytes of binary data"
            + _length_hint(body, 0),
            "binary",
        )
    return body[:length], memoryview(body)[length:]


def json_length(body: bytes) -> int | None:
    """The length in bytes of the JSON document `body` starts with (leading whitespace
    included), or None where it starts with none. For refusals only (the standard library's
    parser, on the text read as latin-1: one character a byte, and UTF-8's multi-byte
    characters are never JSON's structure)."""
    import json

    text = body.decode("latin-1")
    start = len(text) - len(text.lstrip(" \t\n\r"))
    try:
        return json.JSONDecoder().raw_decode(text, start)[1]
    except (ValueError, RecursionError):
        return None


def _length_hint(body: bytes, length: int | None) -> str:
    """ "; the JSON request is N bytes: send Inference-Header-Content-Length: N" where `body`
    starts with a JSON document whose length is not `length` (the header's value; None when
    it is none), else ""."""
    actual = json_length(body)
    if actual is None or actual == length:
        return ""
    return f"; the JSON request is {actual} bytes: send Inference-Header-Content-Length: {actual}"


def _parse_json(body: bytes, whole: bytes | None) -> dict[str, Any]:
    """`body` (the JSON part) parsed; `whole`: the whole body when it carries binary data after
    its JSON (Inference-Header-Content-Length), else None. A refusal says what the header should
    be when it does not match the JSON's length (more: "unexpected content after document",
    fewer: the JSON cut short), or that binary data needs it."""
    try:
        request = _loads(body, "body", "a JSON object", "")
    except ServeError as e:
        if whole is not None:  # the JSON may be whole and the header wrong
            actual = json_length(whole)
            if actual is None or actual == len(body):
                raise
            raise ServeError(
                400,
                "body: expected Inference-Header-Content-Length to be the JSON request's length, "
                f"{actual} bytes, got {len(body)} (the binary data starts after the JSON)",
                "binary",
            ) from None
        if b"binary_data_size" not in body:
            raise
        hint = "; binary data after the JSON needs the Inference-Header-Content-Length header"
        raise ServeError(e.status, e.message + hint, e.reason) from None
    if not isinstance(request, dict):
        raise ServeError(
            400, f"body: expected a JSON object with 'inputs', got {short(request)}", "json"
        )
    return request


def _decode_inputs(
    request: dict[str, Any],
    signature: Mapping[str, Mapping[str, Any]],
    max_rows: int,
    binary: memoryview,
    booleans: bool,
) -> tuple[dict[str, np.ndarray], int]:
    """The request's `inputs` -> (arrays by name, rows): every input of the signature once,
    with the same rows, binary ones taking their bytes from `binary` in order (`booleans`: see
    `_decode_data`)."""
    tensors = request.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise ServeError(
            400,
            "inputs: expected a non-empty list of tensors {name, shape, datatype, data}, got "
            + given(request, "inputs"),
            "field",
        )
    arrays: dict[str, np.ndarray] = {}
    rows = None
    offset = 0  # into the binary part
    for i, tensor in enumerate(tensors):
        field = f"inputs[{i}]"
        name, spec = _input_spec(field, tensor, signature, arrays)
        shape = _shape(field, tensor, name, spec, max_rows, rows)
        rows = shape[0]
        size = _binary_size(field, tensor, len(binary))
        if size is None:
            arrays[name] = _decode_data(f"{field}.data", tensor, shape, spec, booleans)
            continue
        raw = _binary_slice(field, tensor, shape, spec, size, binary, offset)
        offset += size
        arrays[name] = _decode_binary(f"{field} (binary)", raw, shape, spec)
    if offset != len(binary):
        raise ServeError(
            400,
            f"body: expected {offset} bytes of binary tensor data after the JSON header (the "
            f"inputs' binary_data_size), got {len(binary)} bytes",
            "binary",
        )
    missing = set(signature) - set(arrays) if len(arrays) != len(signature) else None
    if missing:
        raise ServeError(
            400, f"inputs: expected also {names(missing)}, got only {names(arrays)}", "name"
        )
    return arrays, int(rows or 0)


def _input_spec(
    field: str, tensor: Any, signature: Mapping[str, Mapping[str, Any]], seen: Mapping
) -> tuple[str, _Spec]:
    """The input's name (one of the signature's, not seen before) and its checked datatype."""
    if not isinstance(tensor, dict):
        raise ServeError(400, f"{field}: expected an object, got {short(tensor)}", "field")
    if not _TENSOR.issuperset(tensor):  # one C pass; the refusal names the key
        known_keys(field, tensor, TENSOR_KEYS)
    name = tensor.get("name")
    if not isinstance(name, str) or name not in signature:
        raise ServeError(
            400,
            f"{field}.name: expected one of {names(signature)}, got {given(tensor, 'name')}",
            "name",
        )
    if name in seen:
        raise ServeError(400, f"{field}.name: expected each input once, got {name!r} again", "name")
    specs = getattr(signature, "specs", None)  # a served model's: made once, at load
    spec = specs[name] if specs is not None else _spec(signature[name])
    datatype = tensor.get("datatype")
    if datatype != spec.datatype:
        raise ServeError(
            400,
            f"{field}.datatype: expected {spec.datatype} for input {name!r}, got "
            + given(tensor, "datatype"),
            "datatype",
        )
    return name, spec


def _shape(
    field: str, tensor: dict, name: str, spec: _Spec, max_rows: int, rows: int | None
) -> list[int]:
    """The input's shape: the signature's, batch first, at most `max_rows` rows (413), the
    same rows as the inputs before it (`rows`)."""
    shape = tensor.get("shape")
    expected = spec.expected
    if (
        not isinstance(shape, list)
        or len(shape) != len(expected)
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or shape[1:] != expected[1:]
        or shape[0] < 1
    ):
        if isinstance(shape, list) and len(shape) == len(expected) and type(shape[0]) is float:
            if shape[0] > max_rows:  # 1e20, or an integer past 64 bits (a float to orjson)
                raise _too_many_rows(field, max_rows, shape[0])
        got = shape[1:] if isinstance(shape, list) and len(shape) == len(expected) else None
        how = artifact.padding_hint(spec.pad, expected[1:], got)  # a token input: how to pad
        if isinstance(shape, list) and any(type(d) is float for d in shape):
            how += "; dimensions are integers, written without a fraction or an exponent"
        raise ServeError(
            400,
            f"{field}.shape: expected {expected} (batch first, at least 1 row) for input "
            f"{name!r}, got {given(tensor, 'shape')}{how}",
            "shape",
        )
    if shape[0] > max_rows:
        raise _too_many_rows(field, max_rows, shape[0])
    if rows is not None and shape[0] != rows:
        raise ServeError(
            400,
            f"{field}.shape[0]: expected {rows} rows like the first input, got {shape[0]} rows",
            "shape",
        )
    return shape


def _too_many_rows(field: str, max_rows: int, rows: float) -> ServeError:
    return ServeError(
        413,
        f"{field}.shape[0]: expected at most {max_rows} rows per request (the server's "
        f"--max_batch_size), got {_plain(rows)} rows; split the request",
        "too_many_rows",
    )


def _binary_slice(
    field: str,
    tensor: dict,
    shape: list[int],
    spec: _Spec,
    size: int,
    binary: memoryview,
    offset: int,
) -> memoryview:
    """The input's `size` bytes of binary data at `offset`, checked against its shape."""
    expected_size = math.prod(shape) * spec.dtype.itemsize
    if size != expected_size:
        raise ServeError(
            400,
            f"{field}.parameters.binary_data_size: expected {expected_size} bytes for "
            f"{spec.datatype} {shape}, got {size} bytes",
            "binary",
        )
    if "data" in tensor:
        raise ServeError(
            400, f"{field}.data: expected none with binary_data_size, got some", "binary"
        )
    if offset + size > len(binary):
        raise ServeError(
            400,
            f"{field}.parameters.binary_data_size: expected {size} bytes of binary data at "
            f"byte offset {offset}, got {max(len(binary) - offset, 0)} bytes (is the "
            "Inference-Header-Content-Length header set?)",
            "binary",
        )
    return binary[offset : offset + size]


def _wanted_outputs(
    request: dict[str, Any], outputs: Mapping[str, Any], all_binary: bool
) -> tuple[list[str], frozenset[str]]:
    """(output names to return, those to return binary): every output unless `outputs` names
    some (an empty list names none: every output, as when it is absent); binary as the
    output's own `binary_data` says, else as `all_binary` (`parameters.binary_data_output`)
    does (Triton's precedence: an output's `binary_data: false` under `binary_data_output:
    true` came back binary). An output named twice is refused (it came back once)."""
    requested = request.get("outputs")
    if requested is None or requested == []:
        return list(outputs), frozenset(outputs) if all_binary else frozenset()
    if not isinstance(requested, list):
        raise ServeError(
            400,
            f"outputs: expected a list of {{name}} with names in {names(outputs)}, got "
            f"{short(requested)}",
            "field",
        )
    wanted: list[str] = []
    as_binary = set()
    for i, o in enumerate(requested):
        field = f"outputs[{i}]"
        if not isinstance(o, dict):
            raise ServeError(400, f"{field}: expected an object {{name}}, got {short(o)}", "field")
        if not _OUTPUT.issuperset(o):  # before the name: `nmae` is named, not "no name"
            known_keys(field, o, OUTPUT_KEYS)
        name = o.get("name")
        if not isinstance(name, str) or name not in outputs:
            raise ServeError(
                400,
                f"{field}.name: expected one of {names(outputs)}, got {given(o, 'name')}",
                "field",
            )
        if name in wanted:
            raise ServeError(
                400,
                f"{field}.name: {short(name)} is asked for already (outputs"
                f"[{wanted.index(name)}]); name each output once",
                "field",
            )
        wanted.append(name)
        own = o.get("parameters")
        if isinstance(own, dict):
            known_keys(f"{field}.parameters", own, ("binary_data",))
        if own is None or (isinstance(own, dict) and "binary_data" not in own):
            binary = all_binary
        else:
            binary = _flag(f"{field}.parameters", own, "binary_data")
        if binary:
            as_binary.add(name)
    return wanted, frozenset(as_binary)


def encode_infer(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    binary: frozenset[str] = frozenset(),
) -> tuple[bytes, int | None]:
    """A v2 infer response and, when some outputs are `binary`, its JSON header's length (for
    Inference-Header-Content-Length; None for plain JSON). JSON arrays go straight from NumPy
    (orjson); binary ones as little-endian bytes after the JSON."""
    body: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        body["id"] = request_id
    tensors, raw = [], []
    for name, value in outputs.items():
        tensor = {
            "name": name,
            "datatype": _BY_DTYPE.get(value.dtype) or DATATYPES[value.dtype.name],
            "shape": list(value.shape),
        }
        if name in binary:
            data = np.ascontiguousarray(value, value.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(data)}
            raw.append(data)
        else:
            tensor["data"] = np.ascontiguousarray(value).reshape(-1)
        tensors.append(tensor)
    body["outputs"] = tensors
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not raw:
        return header, None
    return b"".join([header, *raw]), len(header)
