"""Late labels: ground truth joined to served predictions by the v2 request `id`.

A client that sends `{"id": "r-17", "inputs": [...]}` to `/infer` may later send the true
label to `/feedback` as `{"id": "r-17", "label": 3}` (a class index, or a class name of the
model's categorical output; a list of them for a request of several rows), one such object or
a JSON list of them (a batch). Each joined row counts toward realized accuracy: of the window
its prediction was made in (`ann_realized_accuracy_ratio{window="last"}`: the latest closed window
with at least `--monitor_min_labels` labelled rows) and since the server started
(`window="total"`, once that many are labelled).

Memory is bounded: `Predictions` keeps the predicted classes of the requests that carried an
id in two generations of `capacity / 2` each (`--monitor_feedback_capacity`, default 100,000):
when the young one is full, the old one is dropped and the young one becomes old. So the last
`capacity / 2` requests are always joinable, and up to `capacity`; the dropped generation's ids
are remembered until the next turn, so a label that comes too late is counted as `evicted`
rather than `unknown`. At most 1.5 x capacity entries, ids of at most 256 characters
(`protocol.MAX_ID_LENGTH`): by tracemalloc after 250,000 requests at the default capacity,
31 MB with 36-character ids (UUIDs), 53 MB with every id 256 characters;
a request costs one dict insert (an LRU evicting one entry per request took 3.4 µs per request
past capacity, this 0.9 µs; 0.3 µs for ids seen before). A label that cannot
be joined is not an error: the reply and `ann_feedback_unmatched_total{reason}` count it by
reason: `unknown` (no request with that id, or evicted long ago; the reply's
`unknown_held_by` counts, per other version of the model, the unknown ids that version holds,
so a client can tell labels sent to the wrong version from ids never served), `evicted` (its
prediction
was dropped to stay within capacity: raise the capacity or send labels sooner), `duplicate`
(that id was already labelled; the first label counts). A request that is wrong in itself is
a 400 naming the field, and nothing of its batch is applied.

Not thread-safe: `ann.serve.monitoring.ModelMonitor` calls it under its lock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ann.serve import protocol
from ann.serve.errors import ServeError

REASONS = ("unknown", "evicted", "duplicate")
WINDOWS_KEPT = 1000  # per-window label counts kept (the oldest windows are forgotten)


class Predictions:
    """The predicted classes of recent requests by id, and the realized accuracy of those
    that got their label.

    `capacity`: requests kept (0: no joins); `names`: the class names of the model's
    categorical output (labels may be given by name or index); `min_labelled`: the fewest
    labelled rows an accuracy is given on (`--monitor_min_labels`); `padding`: the class that
    is the padding token of a language model's next token (`padding_class`), refused as a
    label, by index or name (it is never the true next token; it was joined as one), or None."""

    def __init__(
        self,
        capacity: int,
        names: Sequence[str],
        min_labelled: int = 1,
        padding: int | None = None,
    ):
        self.capacity = capacity
        self.min_labelled = min_labelled
        self.names = list(names)
        self.padding = padding
        self._index = {name: i for i, name in enumerate(self.names)}
        self._half = max(1, capacity // 2)
        # Generations: id -> (predicted classes int [rows], window index, labelled?); `_gone`
        # only says that an id was evicted.
        self._young: dict[str, tuple[np.ndarray, int, bool]] = {}
        self._old: dict[str, tuple[np.ndarray, int, bool]] = {}
        self._gone: dict[str, tuple[np.ndarray, int, bool]] = {}
        self.windows: dict[int, list[int]] = {}  # window index -> [correct, labelled] rows
        self.total = [0, 0]
        self.unmatched = dict.fromkeys(REASONS, 0)

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def record(self, request_id: str, predicted: np.ndarray, window: int) -> None:
        """Keeps one request's predicted classes (int [rows], kept by reference: the server
        never changes them) under its id; a later request with the same id wins."""
        if self.capacity <= 0:
            return
        young = self._young
        young[request_id] = (predicted, window, False)
        if len(young) >= self._half:
            self._gone, self._old, self._young = self._old, young, {}

    def _find(self, request_id: str) -> tuple[tuple | None, dict]:
        """(the kept entry or None, the generation holding it)."""
        found = self._young.get(request_id)
        if found is not None:
            return found, self._young
        return self._old.get(request_id), self._old

    def unknown(self, ids: Sequence[str]) -> list[str]:
        """Those of `ids` this store knows nothing of (neither kept nor evicted): what `join`
        counts as `unknown`."""
        return [
            i for i in ids if i not in self._young and i not in self._old and i not in self._gone
        ]

    def holds(self, ids: Sequence[str]) -> int:
        """How many of `ids` name a kept request of this store (labelled or not): for a
        label another version of the model did not know, whether this one served it."""
        return sum(1 for i in ids if i in self._young or i in self._old)

    def parse(self, body: Any) -> list[tuple[str, list[int]]]:
        """The (id, class indices) of a feedback body: one `{"id", "label"}` object or a list
        of them; ServeError 400 naming the first field that is wrong."""
        items = body if isinstance(body, list) else [body]
        where = (lambda i: f"feedback[{i}]") if isinstance(body, list) else (lambda i: "feedback")
        if not items:
            raise ServeError(400, 'feedback: expected at least one {"id", "label"}, got []')
        parsed = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or item.keys() != _FIELDS:
                raise ServeError(
                    400,
                    f'{where(i)}: expected an object with "id" and "label" (and nothing else), '
                    f"got {_fields(item)}",
                    "feedback",
                )
            request_id = item["id"]
            if not isinstance(request_id, str) or not request_id:
                raise ServeError(
                    400,
                    f"{where(i)}.id: expected the infer request's id (a non-empty string), got "
                    f"{protocol.short(request_id)}",
                    "feedback",
                )
            if len(request_id) > protocol.MAX_ID_LENGTH:  # no infer kept one
                raise ServeError(
                    400, protocol.id_too_long(f"{where(i)}.id", request_id), "feedback"
                )
            label, field = item["label"], f"{where(i)}.label"
            if isinstance(label, list):  # each by its place, as `inputs[0].data[1]` is
                classes = [self._class(f"{field}[{j}]", v) for j, v in enumerate(label)]
            else:
                classes = [self._class(field, label)]
            parsed.append((request_id, classes))
        return parsed

    def _class(self, field: str, value: Any) -> int:
        """A class index from an index or a class name; ServeError 400 otherwise, and for the
        padding token's class (`padding`)."""
        found = None
        if isinstance(value, str) and value in self._index:
            found = self._index[value]
        elif isinstance(value, int) and not isinstance(value, bool):
            found = value if 0 <= value < len(self.names) else None
        if found is not None and found == self.padding:
            raise ServeError(
                400,
                f"{field}: got {protocol.short(value)}, the padding token "
                f"({protocol.short(self.names[found])}, class {found}), which is never a label; "
                "give the true next token's class index or name",
                "feedback",
            )
        if found is not None:
            return found
        raise ServeError(
            400,
            f"{field}: expected a class index in [0, {len(self.names) - 1}] or a class name "
            f"({listed(self.names)}), got {protocol.short(value)}",
            "feedback",
        )

    def join(self, items: list[tuple[str, list[int]]], listed: bool = False) -> dict[str, Any]:
        """Joins parsed labels (`parse`) to their predictions; returns `{"matched": rows,
        "unmatched": {reason: count}}` for this batch. ServeError 400 (nothing applied) when a
        label list's length is not its request's rows, naming the item as `parse` does
        (`feedback[i]` when the body was a list, `listed`: a client finds the item's line by
        it; `ann monitor feedback` does)."""
        for i, (request_id, labels) in enumerate(items):
            found, _ = self._find(request_id)
            if found is not None and len(labels) != len(found[0]):
                raise ServeError(
                    400,
                    f"{f'feedback[{i}]' if listed else 'feedback'}.label (id "
                    f"{protocol.short(request_id)}): expected "
                    f"{_count(len(found[0]), 'label')} (its request had "
                    f"{_count(len(found[0]), 'row')}), got {_count(len(labels), 'label')}",
                    "feedback",
                )
        matched, unmatched = 0, dict.fromkeys(REASONS, 0)
        for request_id, labels in items:
            found, generation = self._find(request_id)
            if found is None:
                unmatched["evicted" if request_id in self._gone else "unknown"] += 1
                continue
            if found[2]:
                unmatched["duplicate"] += 1
                continue
            generation[request_id] = (found[0], found[1], True)
            correct = int(np.count_nonzero(np.asarray(found[0]) == np.asarray(labels)))
            counts = self.windows.setdefault(found[1], [0, 0])
            for c in (counts, self.total):
                c[0] += correct
                c[1] += len(labels)
            matched += len(labels)
        while len(self.windows) > WINDOWS_KEPT:
            del self.windows[min(self.windows)]
        for reason, n in unmatched.items():
            self.unmatched[reason] += n
        return {"matched": matched, "unmatched": unmatched}

    def realized(self, closed: int) -> dict[str, Any]:
        """Realized accuracy: `last`, of the latest window before `closed` (the first window
        still open) with at least `min_labelled` labelled rows, and `total`, since the start;
        None where no window has that many; the total's `accuracy` None (its counts given)
        while fewer rows than that are labelled."""
        least = self.min_labelled
        done = [w for w in self.windows if w < closed and self.windows[w][1] >= least]
        last = max(done) if done else None
        total = _accuracy(self.total, None) if self.total[1] else None
        if total is not None and self.total[1] < least:  # a label or two: not a rate yet
            total["accuracy"] = None
        return {
            "last": _accuracy(self.windows[last], last) if last is not None else None,
            "total": total,
        }


_FIELDS = {"id", "label"}
NAMES_LISTED = 12  # class names a refusal lists, then how many there are


def listed(names: Sequence[str]) -> str:
    """Class names as a refusal lists them: each quoted in JSON spelling (`protocol.short`),
    so that a space or a newline is seen (a language model's `(<pad>, <unk>, \n,  , !, ...`
    hid its space name), the first NAMES_LISTED, then how many there are: `"<pad>", "<unk>",
    "\n", " ", ... (98 in all)`."""
    shown = ", ".join(protocol.short(n) for n in names[:NAMES_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > NAMES_LISTED else "")


def padding_class(
    inputs: Mapping[str, Mapping[str, Any]], outputs: Mapping[str, Mapping[str, Any]], label: str
) -> int | None:
    """The class of the categorical output `label` that is the padding token, or None: the pad
    id of an input of right-padded token ids (`artifact.pad_id`: a language model's `tokens`)
    whose names are the output's (the next token is a token of the same vocabulary). `inputs`,
    `outputs`: the manifest's signature."""
    from ann import artifact

    names = outputs[label].get("names")
    for spec in inputs.values():
        pad = artifact.pad_id(spec)
        if pad is not None and spec.get("names") == names and 0 <= pad < len(names or []):
            return pad
    return None


def _fields(item: Any) -> str:
    """What a feedback item that is not `{"id", "label"}` has instead: `no 'id' field` (as
    `protocol.given` says a missing field), the other fields, or the value that came (it said
    `got ["label"]` for an object without its id)."""
    if not isinstance(item, dict):
        return protocol.short(item)
    missing = [k for k in ("id", "label") if k not in item]
    others = sorted(set(item) - _FIELDS)
    said = []
    if missing:
        said.append("no " + " and no ".join(f"{k!r} field" for k in missing))
    if others:
        said.append(f"other fields {protocol.names(others)}")
    return " and ".join(said)


def _accuracy(counts: list[int], window: int | None) -> dict[str, Any]:
    correct, labelled = counts
    reply = {"accuracy": correct / labelled, "correct": correct, "labelled": labelled}
    return reply if window is None else {"window": window, **reply}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
