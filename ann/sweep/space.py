"""Sweep definitions: the `h` that a config file's `get_sweep(h)` builds its search space with.

    def get_sweep(h):
        return h.product(
            h.sweep("optimizer.learning_rate", [1e-3, 3e-3, 1e-2]),
            h.zip(h.sweep("model.features", [(128,), (256, 256)]),
                  h.sweep("model.dropout", [0.0, 0.1])),
        )

Keys are dotted config paths. `h.sweep` lists values; `h.product` crosses sweeps, `h.zip` pairs
them row by row; `h.uniform`, `h.loguniform`, `h.randint` and `h.choice` declare draws, which a
grid sweep takes `n` of with `h.random(n, ...)` and `--search=tpe` searches directly. The same
definition gives both: `rows()` yields its trials' override dicts one at a time (`size()` counts
them by arithmetic, building none; `h.random`'s rows are distinct, a repeated row drawn again),
`params()` gives Optuna distributions.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections

from ann import config as config_lib

NoneType = type(None)


class SweepError(ValueError):
    """A mistake in a sweep definition or the sweep command; the message names it and the fix."""


Overrides = dict[str, Any]  # dotted config key -> value, in declaration order


def _plain(value: Any) -> Any:
    """Lists become tuples: that is how ConfigDicts and `--config.k=(a, b)` hold sequences."""
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


class Node:
    """A piece of a sweep: something that expands to trials and declares search parameters."""

    def keys(self) -> list[str]:
        raise NotImplementedError

    def size(self) -> int:
        """How many trials `rows` yields, by arithmetic (nothing is drawn or built). Raises
        SweepError where the grid cannot list them (a bare draw, an h.zip of unequal parts)."""
        raise NotImplementedError

    def rows(self) -> Iterator[Overrides]:
        """The trials' overrides, one at a time, in definition order (`h.product`'s last part
        varying fastest, as `itertools.product`), each built as it is asked for. An `h.random`
        gives distinct rows (`Random`); a SweepError where it cannot give its `n`."""
        return self._rows(zipped=False)

    def _rows(self, zipped: bool) -> Iterator[Overrides]:
        """`rows`; `zipped`: below an `h.zip`, where an `h.random` keeps a repeated draw (there
        a repeat pairs with another part's row, a distinct trial: such sweeps exist; a zip's row
        repeated as a whole is drawn again, `Zip._distinct`)."""
        raise NotImplementedError

    def check_distinct(self) -> None:
        """A SweepError where an `h.random` of it (not below an `h.zip`, where repeats are
        kept) asks for more distinct rows than its draws hold, by arithmetic (`Random.distinct`):
        the real limit, said before `check_size`'s bound on the trials a grid lists."""

    def trials(self) -> list[Overrides]:
        """Every row, as a list: `size()` first, so a space too large to list is refused
        (`check_size`) before any of it is built."""
        check_size(self)
        return list(self.rows())

    def params(self) -> list[Param]:
        raise NotImplementedError


@dataclasses.dataclass
class Param:
    """One Optuna parameter and how its value becomes overrides."""

    name: str
    distribution: Any  # an optuna.distributions.BaseDistribution
    decode: Any  # value -> Overrides
    searchable: bool  # more than one possible value


@dataclasses.dataclass
class Sweep(Node):
    key: str
    values: list[Any]

    def keys(self) -> list[str]:
        return [self.key]

    def size(self) -> int:
        return len(self.values)

    def _rows(self, zipped: bool) -> Iterator[Overrides]:
        return ({self.key: v} for v in self.values)

    def params(self) -> list[Param]:
        return [_categorical(self.key, [{self.key: v} for v in self.values])]


def _categorical(name: str, rows: list[Overrides]) -> Param:
    """Choices are the values themselves when they are distinct Optuna scalars (readable in
    the study), else row indices (tuples, zipped rows)."""
    import optuna

    scalars = (NoneType, bool, int, float, str)
    values = [next(iter(r.values())) for r in rows] if all(len(r) == 1 for r in rows) else []
    if (
        values
        and all(isinstance(v, scalars) for v in values)
        and len({repr(v) for v in values}) == len(values)
    ):
        by_repr = {repr(v): r for v, r in zip(values, rows)}
        return Param(
            name,
            optuna.distributions.CategoricalDistribution(values),
            lambda v: dict(by_repr[repr(v)]),
            len(rows) > 1,
        )
    return Param(
        name,
        optuna.distributions.CategoricalDistribution(list(range(len(rows)))),
        lambda i: dict(rows[int(i)]),
        len(rows) > 1,
    )


@dataclasses.dataclass
class Product(Node):
    nodes: list[Node]

    def keys(self) -> list[str]:
        return [k for n in self.nodes for k in n.keys()]

    def size(self) -> int:
        return math.prod([n.size() for n in self.nodes])  # each part's refusal, in order

    def _rows(self, zipped: bool) -> Iterator[Overrides]:
        self.size()
        return _combinations(self.nodes, zipped)

    def check_distinct(self) -> None:
        for node in self.nodes:
            node.check_distinct()

    def params(self) -> list[Param]:
        return [p for n in self.nodes for p in n.params()]


@dataclasses.dataclass
class Zip(Node):
    nodes: list[Node]

    def keys(self) -> list[str]:
        return [k for n in self.nodes for k in n.keys()]

    def size(self) -> int:
        sizes = [n.size() for n in self.nodes]
        # Two h.random parts of one seed draw the same stream: each trial's values were the
        # same fraction of their ranges (h.uniform('a', 0, 1) and h.uniform('b', 0, 10): b =
        # 10 a, every trial), or the same index of their choices.
        randoms = [n for n in self.nodes if isinstance(n, Random)]
        for i, later in enumerate(randoms):
            if (first := next((r for r in randoms[:i] if r.seed == later.seed), None)) is not None:
                raise SweepError(
                    f"h.zip pairs {first} with {later}, of the same seed ({later.seed}): their "
                    "draws come from one stream and move together (each the same fraction of "
                    "its range); give one of them another seed=..., or draw their keys in one "
                    "h.random(n, ...)"
                )
        if len(set(sizes)) > 1:
            said = ", ".join(f"{'+'.join(n.keys())}: {s}" for n, s in zip(self.nodes, sizes))
            raise SweepError(
                f"h.zip of unequal lengths ({said}); give each part the same number of values"
            )
        return sizes[0]

    def _rows(self, zipped: bool) -> Iterator[Overrides]:
        self.size()
        if zipped or not any(isinstance(n, Random) for n in self.nodes):
            return self._paired()
        return self._distinct()

    def _paired(self) -> Iterator[Overrides]:
        """The parts' rows side by side, as drawn: an `h.random` part's repeat kept."""
        parts = zip(*(n._rows(zipped=True) for n in self.nodes))
        return (_merged(row) for row in parts)

    def _distinct(self) -> Iterator[Overrides]:
        """The parts' rows side by side, each distinct: where one repeats an earlier row as a
        whole, its `h.random` parts draw again (the next draws of their streams, the others'
        rows kept), as a lone `h.random` draws a repeated row again. An `h.random` part's own
        repeat beside another part's new row is kept (a distinct trial, as ever): only a sweep
        refused before (`trials`: "gives the trial ... twice") draws anything else. A
        SweepError, as `Random._distinct`'s, where its draws stop giving new rows."""
        streams = [n._stream() if isinstance(n, Random) else n._rows(True) for n in self.nodes]
        redrawn = [i for i, n in enumerate(self.nodes) if isinstance(n, Random)]
        seen: set[str] = set()
        drawn = stalled = 0
        for _ in range(self.size()):
            parts = [next(stream) for stream in streams]
            drawn += 1
            while (key := _identity(row := _merged(parts))) in seen:
                if stalled >= STALL_DRAWS_PER_ROW * len(seen) + 1000:
                    floats = any(self.nodes[i].distinct() is None for i in redrawn)
                    raise SweepError(
                        f"h.zip of {'+'.join(self.keys())} asks for {self.size()} distinct "
                        f"trials, but {drawn} draws of its h.random parts gave only {len(seen)}"
                        f"{' (floats are rounded to 4 significant digits)' if floats else ''}; "
                        f"give h.random n <= {len(seen)}, or "
                        f"{'wider ranges' if floats else 'more values to draw from'}"
                    )
                for i in redrawn:
                    parts[i] = next(streams[i])
                drawn, stalled = drawn + 1, stalled + 1
            seen.add(key)
            stalled = 0
            yield row

    def params(self) -> list[Param]:
        # TPE cannot keep zipped keys together as separate parameters: one choice of a row.
        if (size := self.size()) > MAX_TRIALS:
            raise SweepError(
                f"h.zip of {'+'.join(self.keys())} gives {size} rows, one choice among them for "
                f"--search=tpe (at most {MAX_TRIALS}); zip fewer values, or search the keys apart"
            )
        # As drawn (a repeat a choice twice): a study's parameters are indices into these rows,
        # which must stay what its trials were drawn from.
        return [_categorical("+".join(self.keys()), list(self._paired()))]


def _merged(parts: Sequence[Overrides]) -> Overrides:
    """One row of the parts' rows, side by side."""
    return {k: v for part in parts for k, v in part.items()}


@dataclasses.dataclass
class Draw(Node):
    """A value drawn per trial: uniform, log-uniform, integer or a choice."""

    kind: str  # uniform | loguniform | randint | choice
    key: str
    low: Any = None
    high: Any = None
    values: list[Any] | None = None

    def __str__(self) -> str:
        args = self.values if self.kind == "choice" else f"{self.low}, {self.high}"
        return f"h.{self.kind}({self.key!r}, {args})"

    def keys(self) -> list[str]:
        return [self.key]

    def size(self) -> int:
        raise SweepError(
            f"{self} draws values, so a grid cannot list them: wrap it in "
            "h.random(n, ...) for n random draws, or search it with --search=tpe"
        )

    def _rows(self, zipped: bool) -> Iterator[Overrides]:
        self.size()  # refused
        return iter(())

    def distinct(self) -> int | None:
        """How many distinct values the draw gives, by arithmetic: an h.choice's distinct
        values, an h.randint's integers; None for a float (rounded to 4 significant digits:
        only drawing tells how many a range holds, and how likely each is)."""
        if self.kind == "choice":
            return len({_identity(v) for v in self.values or []})
        if self.kind == "randint":
            return self.high - self.low + 1
        return None

    def draw(self, rng: random.Random) -> Any:
        if self.kind == "choice":
            return rng.choice(self.values)
        if self.kind == "randint":
            return rng.randint(self.low, self.high)
        if self.kind == "loguniform":
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        # 4 significant digits: readable commands and workdir names, and no loss that matters.
        return float(f"{value:.4g}")

    def params(self) -> list[Param]:
        import optuna

        if self.kind == "choice":
            return [_categorical(self.key, [{self.key: v} for v in self.values])]
        if self.kind == "randint" and self.low == self.high:  # one value: fixed, not searched
            return [_categorical(self.key, [{self.key: self.low}])]
        if self.kind == "randint":
            dist = optuna.distributions.IntDistribution(self.low, self.high)
        else:
            dist = optuna.distributions.FloatDistribution(
                self.low, self.high, log=self.kind == "loguniform"
            )
        return [Param(self.key, dist, lambda v, k=self.key: {k: v}, True)]


@dataclasses.dataclass
class Random(Node):
    n: int
    draws: list[Draw]
    seed: int = 0

    def keys(self) -> list[str]:
        return [d.key for d in self.draws]

    def __str__(self) -> str:
        seed = f", seed={self.seed}" if self.seed else ""
        return f"h.random({self.n}, {', '.join(str(d) for d in self.draws)}{seed})"

    def size(self) -> int:
        return self.n

    def distinct(self) -> int | None:
        """How many distinct rows the draws hold, by arithmetic, where every one is discrete
        (`Draw.distinct`); None where one draws floats."""
        held = [d.distinct() for d in self.draws]
        return None if None in held else math.prod(held)

    def _rows(self, zipped: bool) -> Iterator[Overrides]:
        # One seeded stream, draw after draw: row i is every part's next draw, as the sweeps
        # before lazy rows drew them (their trials keep their values and names). A row equal to
        # an earlier one is drawn again from the same stream: that sweep had a trial twice and
        # was refused, so no existing sweep changes. Below an h.zip a repeat is kept (paired
        # with another part's row it is a distinct trial, and such sweeps exist).
        if zipped:
            return itertools.islice(self._stream(), self.n)
        self.check_distinct()
        return self._distinct(random.Random(self.seed))

    def _stream(self) -> Iterator[Overrides]:
        """Its draws, row after row, without end: every part's next draw from one seeded
        stream (an `h.zip` takes more where its row repeats: `Zip._distinct`)."""
        rng = random.Random(self.seed)
        while True:
            yield {d.key: d.draw(rng) for d in self.draws}

    def check_distinct(self) -> None:
        held = self.distinct()
        if held is not None and held < self.n:
            raise SweepError(
                f"{self} asks for {self.n} distinct trials, but its draws hold only {held}; give "
                f"h.random n <= {held}, or list every value with h.sweep"
            )

    def _distinct(self, rng: random.Random) -> Iterator[Overrides]:
        """`n` distinct rows from `rng`; a SweepError naming what it found once
        `STALL_DRAWS_PER_ROW` draws per row found (plus 1,000) in a row bring no new one (a
        float range holds only the values its 4 significant digits give: h.uniform(k, 0.1,
        0.2) holds 1001)."""
        seen: set[str] = set()
        drawn = stalled = 0
        while len(seen) < self.n:
            if stalled >= STALL_DRAWS_PER_ROW * len(seen) + 1000:
                raise SweepError(
                    f"{self} asks for {self.n} distinct trials, but {drawn} draws gave only "
                    f"{len(seen)} (floats are rounded to 4 significant digits); give h.random "
                    f"n <= {len(seen)}, or wider ranges"
                )
            row = {d.key: d.draw(rng) for d in self.draws}
            drawn, stalled = drawn + 1, stalled + 1
            if (key := _identity(row)) not in seen:
                seen.add(key)
                stalled = 0
                yield row

    def params(self) -> list[Param]:
        return [p for d in self.draws for p in d.params()]


def _combinations(nodes: list[Node], zipped: bool = False) -> Iterator[Overrides]:
    """`h.product`'s rows, the last part varying fastest: each later part's rows are drawn
    again for each row of the earlier ones (seeded draws give the same values each time), so
    nothing but the current row is held."""
    first, rest = nodes[0], nodes[1:]
    for row in first._rows(zipped):
        if not rest:
            yield dict(row)
            continue
        for more in _combinations(rest, zipped):
            yield {**row, **more}


def _identity(value: Any) -> str:
    """What makes two rows (or drawn values) one trial: equal JSON, as sweep.json has them."""
    return json.dumps(value, sort_keys=True)


def _nodes(parts: tuple, what: str) -> list[Node]:
    if len(parts) == 1 and isinstance(parts[0], list | tuple):
        parts = tuple(parts[0])
    if not parts:
        raise SweepError(f"h.{what}() has nothing to combine; give it h.sweep(...) parts")
    for p in parts:
        if not isinstance(p, Node):
            raise SweepError(
                f"h.{what}() takes sweep parts such as h.sweep(key, values), got {p!r}"
            )
    return list(parts)


class Builder:
    """The `h` handed to `get_sweep(h)`."""

    def sweep(self, key: str, values: Sequence[Any]) -> Node:
        """One key over listed values: a grid axis (a categorical choice for TPE)."""
        _check_key(key)
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            raise SweepError(f"h.sweep({key!r}, {values!r}): values must be a list, e.g. [1, 2]")
        if not values:
            raise SweepError(f"h.sweep({key!r}, []) has no values; give at least one")
        return Sweep(key, [_plain(v) for v in values])

    def product(self, *parts: Node) -> Node:
        """Every combination of the parts' trials."""
        return Product(_nodes(parts, "product"))

    def zip(self, *parts: Node) -> Node:
        """The parts' trials side by side: the i-th values of each together (same lengths).
        Its rows are distinct: one repeated as a whole has its `h.random` parts draw again
        (`Zip._distinct`). SweepError (on use) for parts of unequal lengths, or two `h.random`
        parts of one seed (one stream: their draws moved together)."""
        return Zip(_nodes(parts, "zip"))

    def _range(self, kind: str, key: str, low: float, high: float) -> Draw:
        _check_key(key)
        if kind == "randint" and not low <= high:  # [low, high], both included: 5, 5 is 5
            raise SweepError(f"h.randint({key!r}, {low}, {high}): low must be at most high")
        if kind != "randint" and not low < high:
            raise SweepError(f"h.{kind}({key!r}, {low}, {high}): low must be below high")
        if kind == "loguniform" and low <= 0:
            raise SweepError(f"h.loguniform({key!r}, {low}, {high}): low must be > 0")
        return Draw(kind, key, low, high)

    def uniform(self, key: str, low: float, high: float) -> Draw:
        return self._range("uniform", key, float(low), float(high))

    def loguniform(self, key: str, low: float, high: float) -> Draw:
        """Uniform in log space: learning rates, weight decay."""
        return self._range("loguniform", key, float(low), float(high))

    def randint(self, key: str, low: int, high: int) -> Draw:
        """An integer in [low, high], both included (low == high: that one value). Raises
        SweepError where low is above high."""
        return self._range("randint", key, int(low), int(high))

    def choice(self, key: str, values: Sequence[Any]) -> Draw:
        """One of the values, drawn at random (unlike h.sweep, which lists them all)."""
        self.sweep(key, values)  # same checks
        return Draw("choice", key, values=[_plain(v) for v in values])

    def random(self, n: int, *draws: Draw, seed: int = 0) -> Node:
        """`n` distinct trials, each with a fresh draw of every part (seeded: the same every
        time; a row equal to an earlier one is skipped and drawn again). Its rows raise a
        SweepError where the draws hold fewer than `n` distinct rows (`Random.distinct`, or
        found drawing); below an h.zip a repeat is kept (`Node._rows`)."""
        if len(draws) == 1 and isinstance(draws[0], list | tuple):
            draws = tuple(draws[0])
        if not isinstance(n, int) or n < 1:
            raise SweepError(f"h.random({n!r}, ...): n must be a positive number of trials")
        if not draws or not all(isinstance(d, Draw) for d in draws):
            raise SweepError(
                "h.random(n, ...) takes draws such as h.loguniform(key, low, high), "
                "h.uniform, h.randint or h.choice"
            )
        return Random(n, list(draws), seed)


def _check_key(key: Any) -> None:
    if not isinstance(key, str) or not key or " " in key:
        raise SweepError(f"sweep key {key!r} must be a dotted config path, e.g. 'model.dropout'")


def check_keys(node: Node, config: ml_collections.ConfigDict, source: str) -> None:
    """Each key once, each a settable key of `config` (what `--config.KEY=VALUE` can set). A
    key `config` does not hold is judged as the command line judges it: each trial's config is
    parsed and checked as `ann train` does (`definition.check_trial`), which takes a key the
    file does not set where the config's check does (model.norm of the model's arguments) and
    refuses an unknown one with its near spellings; refused here, it was swept only once set
    in get_config, where `--config.model.norm=layer` ran."""
    seen: set[str] = set()
    for key in node.keys():
        if key in seen:
            raise SweepError(f"sweep key {key!r} is swept twice; sweep each key once")
        seen.add(key)
        try:
            section = config_lib.lookup(config, key)
        except config_lib.KeyLookupError:
            continue  # new to the file's config: the trials' check, the command line's, judges
        if config_lib.is_section(section):
            raise SweepError(
                f"sweep key {key!r} is a section; sweep one of its keys, e.g. "
                f"{key}.{next(iter(section), 'name')}"
            )
        if section is None:
            raise SweepError(
                f"sweep key {key!r} is None in the config from {source}, and --config.{key} "
                "cannot set a key that is None; give it a value in get_config first"
            )


# The most trials a grid lists: each is checked before the first starts (about 2 ms each),
# and sweep.json and the results list every one. A space larger than this (h.random(10**8,
# ...), a product of 10**9) built its trials for minutes and gigabytes before saying anything.
MAX_TRIALS = 10_000


# How many draws in a row `h.random` makes without a new row, per row found (plus 1,000),
# before it says its ranges hold no more: the rarest of C equally likely rows takes C draws on
# average, a 4-digit log-uniform value of a decade's 9,001 about 2.5 C, so a space that holds
# its n rows is not refused (odds under e^-19), and one that holds 1,001 is refused after
# about 50,000 draws (0.3 s).
STALL_DRAWS_PER_ROW = 50


def check_size(node: Node, at_most: int = MAX_TRIALS) -> int:
    """`node.size()`, counted without building a trial; a SweepError, at once, where an
    `h.random` of it asks for more distinct rows than its draws hold (`Node.check_distinct`),
    then where it is over `at_most` (`MAX_TRIALS`, or the trials a sweep listed before the
    bound: it resumes)."""
    size = node.size()
    node.check_distinct()  # h.random(10**6, h.choice(k, [1, 2])): 2 rows, not the bound, first
    if size > max(at_most, MAX_TRIALS):
        raise SweepError(
            f"get_sweep gives {size} trials, more than a grid lists (at most {MAX_TRIALS}: each "
            "is checked before the first starts, and the results list them all); give "
            "h.random a smaller n or h.sweep fewer values, or draw them as the search goes "
            "with --search=tpe --trials=N (--startup_trials=N: every one at random)"
        )
    return size


def trials(node: Node, at_most: int = MAX_TRIALS) -> list[Overrides]:
    """The grid (and random draws) a definition expands to; an error if it is empty or over
    `at_most` (`check_size`: said before any is built)."""
    if not check_size(node, at_most):
        raise SweepError("the sweep has no trials; give its h.sweep(...) parts some values")
    rows = list(node.rows())
    # Equal rows (h.sweep(k, [1e-3, 0.001]), or two parts giving one combination) were two
    # trials in one workdir: one refused for the other's lock, and the table said "2 done".
    seen: dict[str, Overrides] = {}
    for row in rows:
        key = _identity(row)
        if key in seen:
            given = ", ".join(f"{k}={v!r}" for k, v in row.items()) or "no overrides"
            raise SweepError(
                f"the sweep gives the trial {given} twice (a value listed twice in h.sweep, or "
                "two parts of the sweep that overlap); give each combination once"
            )
        seen[key] = row
    return rows


def spans_decades(values: Sequence[Any]) -> bool:
    """Whether `values` are all positive numbers (not booleans) spanning a decade or more:
    learning rates and weight decays swept by factors (1e-4, 3e-4, 1e-3)."""
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers or len(numbers) < len(values) or min(numbers) <= 0:
        return False
    return max(numbers) / min(numbers) >= 10


def _log_declared(node: Node) -> list[tuple[str, bool]]:
    """(key, log-distributed) for each place `node` declares a key."""
    if isinstance(node, Product | Zip):
        return [found for n in node.nodes for found in _log_declared(n)]
    if isinstance(node, Random):
        return [found for d in node.draws for found in _log_declared(d)]
    if isinstance(node, Draw):
        if node.kind == "choice":
            return [(node.key, spans_decades(node.values or []))]
        return [(node.key, node.kind == "loguniform")]
    if isinstance(node, Sweep):
        return [(node.key, spans_decades(node.values))]
    return [(k, False) for k in node.keys()]


def log_keys(node: Node) -> list[str]:
    """The keys `node` draws log-distributed: an `h.loguniform`, or values listed (`h.sweep`,
    `h.choice`) that are all positive and span a decade or more; what results.png draws on a
    log axis (a log-uniform learning rate whose few draws spanned less than a decade was
    drawn on a linear one)."""
    declared: dict[str, bool] = {}
    for key, log in _log_declared(node):
        declared[key] = declared.get(key, True) and log
    return [k for k, log in declared.items() if log]


def params(node: Node) -> tuple[list[Param], Overrides]:
    """(searchable parameters, fixed overrides) for `--search=tpe`; an error if none search."""
    found = node.params()
    searchable = [p for p in found if p.searchable]
    if not searchable:
        raise SweepError(
            "--search=tpe needs a search space, but every key of get_sweep has one value "
            f"({', '.join(node.keys())}); declare ranges with h.loguniform/h.uniform/h.randint "
            "or several values with h.sweep/h.choice"
        )
    fixed: Overrides = {}
    for p in found:
        if not p.searchable:
            fixed.update(p.decode(p.distribution.choices[0]))
    return searchable, fixed
