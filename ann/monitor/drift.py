"""Drift tests: does a window of traffic look like the export's reference sample?

Per feature (`ann.monitor.features`), Evidently's data-drift defaults (evidentlyai/evidently,
src/evidently/legacy/calculations/stattests/registry.py `_get_default_stattest`, and the test
files beside it), with two changes: the test is chosen by the smaller of the two samples, where
Evidently looks at the reference's rows only, and a sparse table gets an exact p-value (below).
With `n` the distinct values of reference and current together:

| smaller sample's rows | n <= 2 | 3 <= n <= 5 | n > 5 |
|---|---|---|---|
| <= 1,000 | two-proportion z-test, p < 0.05 | chi-square, p < 0.05 | two-sample KS, p <= 0.05 |
| > 1,000 | Jensen-Shannon >= 0.1 | Jensen-Shannon >= 0.1 | Wasserstein / std >= 0.1 |

Why: a distance has no sample size in its threshold. Between two samples of one population,
Wasserstein / std is about 1.3 / sqrt(n) for n current rows (a normal feature against 1,221
reference rows: 0.26 at 25 rows, 0.14 at 100, 0.10 at 200) and the Jensen-Shannon distance of
10 equal class shares about sqrt(9 / 8n) (0.11 at 100 rows); with Evidently's choice, every
one of 20 windows of 25-47 unshifted test digits against the 1,221 training digits was "drift
DETECTED" (share 0.60-0.76). The p-value tests account for the window's size (0 of 20 windows, share
0.01-0.03) and still find a one-pixel shift in 25 rows. For a window and a reference both above
1,000 rows, the choice is Evidently's.

Where a categorical test's approximation does not hold (an expected count below 5 in the table
of reference and current counts, Cochran 1954; scipy.stats.chisquare's notes), the p-value is
exact instead: Fisher's exact test for 2 values (`fisher_exact`), the chi-square statistic of the
2 x k table with a Monte Carlo p-value over random tables of the same margins for more
(`chisquare_montecarlo`; 9,999 seeded tables, so p >= 1e-4; R's `chisq.test(simulate.p.value =
TRUE)`). A value the reference never holds made Evidently's chi-square infinite (its expected
count is 0): one clean test digit of 200 with a 2 where 1,220 of 1,221 reference digits had a 0
was "drifted" (p = 0; exact: 0.26), and one nonzero pixel of 200 against none of 1,221 was z =
2.47, p = 0.013 (exact: 0.14). Where the rule holds, the numbers are Evidently's.

- `ks`: `scipy.stats.ks_2samp`, two-sided (ks_stattest.py: drift when p <= threshold).
- `chisquare`: expected counts are the reference's counts per value times current rows /
  reference rows, over the values seen in either (chisquare_stattest.py); where the current
  holds a value the reference never does (there Evidently's statistic is infinite), the
  chi-square of the 2 x k table of counts (`scipy.stats.chi2_contingency`).
- `z`: the share of rows different from the smallest value, pooled two-proportion z statistic,
  two-sided p (z_stattest.py); p = 1 when both sides hold the same single value.
- `wasserstein`: `scipy.stats.wasserstein_distance` divided by max(reference std, 0.001), the
  population std (wasserstein_distance_norm.py).
- `jensenshannon`: `scipy.spatial.distance.jensenshannon` (natural log, so at most
  sqrt(ln 2) = 0.83) of the two value shares; binning as Evidently's `get_binned_data`
  (utils.py): a feature whose reference holds more than 20 distinct values is cut into
  Sturges' bins of reference and current together (`np.histogram_bin_edges(..., "sturges")`),
  otherwise each distinct value is a bin; no zero filling.
- `psi` (`method="psi"`, not a default): sum of (ref% - cur%) * ln(ref% / cur%) over the same
  bins, empty bins filled with 0.0001 (or the smallest share / 1e6 when that is <= 0.0001), as
  Evidently's psi.py; drift when PSI >= 0.1.

Non-finite values are dropped first, as Evidently does. Dataset drift: the share of drifted
input features >= 0.5 (Evidently's `drift_share`, data_drift.py `get_dataset_drift`).

Multiple testing (`correction`, not Evidently's, which has none): each of F features tested at
p < 0.05 flags about 5% of unmoved features in every window (20 windows of 50 unmoved rows of
the 30 breast-cancer features: 16 features flagged, in 7 windows; of 200 test digits, 64 pixels:
12, in 9). Bonferroni, Benjamini-Hochberg or Benjamini-Yekutieli (`correct`) over the input
features' p-values bound the family-wise error or the false discovery rate instead (none of
those windows flagged a feature; a feature moved by one std in 50 rows was still found in 20 of
20). The share, and so dataset drift, counts the corrected verdicts, so a correction also makes
dataset drift harder to reach: digits moved one pixel or brightened by 2, in 25 rows, drifted
56-77% of their pixels uncorrected, 53-75% under fdr_bh, 42-53% under Bonferroni (5 of 10 below
the 0.5 of dataset drift). Distances and single tests (an output of one test, MMD) are not
corrected; an output of many values (an embedding's 32, a forecast's 72: each value a test) is
as many tests, corrected together, apart from the inputs (its verdicts are not in the share),
by `correction`, and by Bonferroni (OUTPUT_CORRECTION) where that is "none": uncorrected, a
clean window of a 32-value output showed a drifted value 81% of the time.

Too few rows: a window of fewer than `min_rows` rows (`ann.monitor.MIN_ROWS`, 25: the chi-square
rule of 5 expected counts a bin over Evidently's categorical tests of up to 5 values; see there)
is not tested at all: its state is "too_few_rows", neither detected nor not (Evidently tests
whatever it is given; 2 rows were "drift DETECTED").

Every test here takes a window's rows as independent draws. Rows grouped in the data are not:
a forecaster's windows of one series are near copies (78-91% of the sensor_series inputs'
variance is between series), so its clean traffic is flagged against a reference of 22 series
(README, Drift: grouped traffic); no test here knows which rows share a group.

Output drift (not counted in the share, nor in the state: a verdict on the inputs), against the
model's outputs on the reference's own rows, so a window's inputs and its outputs are both
compared with one sample (an export's: rows held out of training, `ann.export.held_out_rows`;
inputs of training rows beside the validation split's outputs made a forecaster's own training
rows output drift in 72 of 72 forecast values, and the training rows' outputs alone drifted on
healthy traffic: a model is more confident on the rows it fit): a categorical output (an
integer output with class `names`: predicted classes, next tokens, a seq2seq output's tokens)
as a categorical input is
(`test_categorical`, below: its class frequencies, each class its own category; chi-square with
rare classes pooled, an exact test where pooling leaves nothing to test, or Jensen-Shannon per
class above 1,000 values: Evidently's Jensen-Shannon cut more than 20 class ids into Sturges'
ranges, pooling unrelated classes); a `probabilities` output by KS on the confidence (each
row's largest probability; p <= 0.05); any other output value by the default test as an input
feature is (`output:NAME[i]`).

Categorical inputs (an integer input with `names`: the classes or the vocabulary its values
index, e.g. token ids) are no numbers: a KS test or a distance between ids means nothing (the
pydoc character LM's clean held-out windows were "tokens[87] ks 0.209" and MMD "DRIFT"). Each
is one feature, its category (token) frequencies over all positions, padding excluded
(`test_categorical`: chi-square with rare categories pooled, or Jensen-Shannon for more than
1,000 values), counted in the share and the correction as any input feature, and left out of
the multivariate test. `DriftResult.tested_as` says how each input was tested.

Multivariate (`multivariate=True`): maximum mean discrepancy over all numeric input features
together (none: no multivariate test),
standardized by the reference's mean and std, unbiased MMD^2 with a Gaussian kernel
exp(-d^2 / (2 sigma^2)), sigma^2 = median(d^2) / 2 over distinct pairs of the pooled sample
(Gretton et al. 2012's median heuristic; Evidently's mmd_stattest.py uses the same kernel and
estimator on one column), and a permutation p-value (Phipson and Smyth 2010:
(1 + #{permuted >= observed}) / (1 + permutations)) computed in jax. At most MMD_ROWS rows of
each side take part (a seeded subsample). Drift when p < 0.05. A permutation p-value holds its
level whatever the data: windows of 40 unshifted test digits drawn at random had p <= 0.05 in
13 of 200 (and 6 of 200 of the validation split); 40 *consecutive* test digits, mostly one or
two writers' (the digits are stored writer by writer), in 103 of 200: a real difference from
the 13 writers of the reference, not a false alarm (README, Drift).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from scipy import spatial, stats

from ann.config import did_you_mean
from ann.monitor import CORRECTIONS, METHODS, MIN_ROWS, MIN_TEST_ROWS
from ann.monitor.features import example_shape, feature_matrix, feature_names

ALPHA = 0.05  # p-value tests: Evidently's default threshold
DISTANCE = 0.1  # distance tests (Wasserstein normed, Jensen-Shannon, PSI)
DRIFT_SHARE = 0.5  # dataset drift: share of drifted input features >= this
SMALL_REFERENCE = 1_000  # reference rows <= this: statistical tests, else distances
FEW_VALUES = 5  # distinct values <= this: a categorical test
BINARY = 2
BIN_VALUES = 20  # reference distinct values > this: Sturges' bins for JS and PSI
WASSERSTEIN_STD_FLOOR = 0.001
MIN_EXPECTED = 5  # Cochran's rule for the chi-square and z approximations
MONTE_CARLO_TABLES = 9_999
MMD_ROWS = 1_000
HISTOGRAM_BINS = 10  # bins of `histogram` (the dashboard's input histograms)
MMD_PERMUTATIONS = 200


class DriftUnavailable(ValueError):
    """The export holds no reference sample (exported before reference.safetensors), or the
    traffic cannot be compared with it."""


@dataclasses.dataclass(frozen=True)
class FeatureDrift:
    """One test's result. `score`: the test statistic (KS D, chi-square, |z|, MMD^2) or the
    distance; `p_value`: None for distances; `threshold`: on p (drift when below, KS: at or
    below) or on the distance (drift at or above)."""

    feature: str
    method: str
    score: float
    p_value: float | None
    threshold: float
    drifted: bool
    # A Monte Carlo p at its floor (every random table below the statistic) says only p <=
    # 1 / (tables + 1): the chi-square distribution's p of the same statistic ranks it instead.
    asymptotic_p: float | None = None
    # p after a multiple-testing correction over the window's input features (`correct`), which
    # `drifted` then judges; None: not corrected.
    p_adjusted: float | None = None

    @property
    def strength(self) -> float:
        """How far past its threshold, comparable across methods (>= 1: drifted): the
        distance / threshold, or log(p) / log(threshold) for p-value tests, p floored at 1e-300
        and, for a Monte Carlo p at its floor, the smaller of it and `asymptotic_p` (the floor,
        1e-4, capped a table of 36 in 40 rows moved off a value 97% of the reference holds at
        3.07, below a KS test's 5 for a mean shift of one std in 40 rows); a corrected test by
        its `p_adjusted`, which its verdict reads."""
        return self._strength(corrected=True)

    @property
    def raw_strength(self) -> float:
        """`strength` of the uncorrected p (`p_adjusted` ignored): the same as `strength` for a
        test no correction touched. Under a correction most unmoved features' adjusted p is 1
        (strength 0); this still says how far each got on its own."""
        return self._strength(corrected=False)

    def _strength(self, corrected: bool) -> float:
        if self.p_value is None:
            return self.score / self.threshold if math.isfinite(self.score) else 0.0
        p = min(self.p_value, self.asymptotic_p if self.asymptotic_p is not None else 1.0)
        if corrected and self.p_adjusted is not None:
            p = self.p_adjusted
        return max(0.0, math.log(max(p, 1e-300)) / math.log(self.threshold))  # p = 1: not -0.0

    @property
    def moved(self) -> bool:
        """Whether the traffic differs from the reference at all on this test (`moved`)."""
        return moved(self.method, self.score)

    def p_text(self) -> str:
        """`format_p` of this test's p (and its corrected p)."""
        return format_p(self.p_value, self.asymptotic_p, self.p_adjusted)

    def to_json(self) -> dict[str, Any]:
        """The fields and the strength; NaN and infinities as null."""
        fields = {
            **dataclasses.asdict(self),
            "strength": self.strength,
            "raw_strength": self.raw_strength,
        }
        return {k: _finite(v) for k, v in fields.items()}


# A test's statistic where its two samples do not differ at all: Fisher's odds ratio is 1 (the
# same shares), every other statistic and distance 0 (psi 0, KS D 0).
UNMOVED = {"fisher_exact": 1.0}


def moved(method: str, score: float | None) -> bool:
    """Whether a `method` test's `score` (None: an infinite one, as JSON holds it) says its
    feature's traffic differs from the reference at all (`UNMOVED`). The printed `top:` and
    the report's "Top features" table list only features that moved: five features all
    `psi 0` were listed as the top ones."""
    return score is None or score != UNMOVED.get(method, 0.0)


def none_moved(methods: Iterable[str]) -> str:
    """What is said where no feature moved, each of `methods` (the window's tests) by its
    unmoved score: `none moved (psi 0 for every feature)`."""
    by_score: dict[float, set[str]] = {}
    for method in methods:
        by_score.setdefault(UNMOVED.get(method, 0.0), set()).add(method)
    said = ", ".join(f"{'/'.join(sorted(m))} {v:g}" for v, m in sorted(by_score.items()))
    return f"none moved ({said} for every feature)"


def by_chance(features: Sequence[FeatureDrift], noun: str = "features") -> str | None:
    """What a page says beside tests flagged one by one, uncorrected: `5 of 64 features
    flagged DRIFT, each alone at p <= 0.05 (no correction): about 3.2 of 64 would be on traffic
    like the reference's, by chance; the inputs' verdict is the share flagged (dataset drift at
    >= 0.5), not one feature's flag` for input features (`noun` "features"); for outputs
    ("outputs") without the verdict's clause, as each output's own test is its verdict. None
    where no uncorrected p-value test flagged (a distance's threshold is no false-alarm rate, and a
    correction's flags are family-wise). The expected count is the sum of the tests'
    thresholds (each test's false-alarm rate on unchanged traffic; Evidently's per-column
    tests, ALPHA)."""
    tests = [f for f in features if f.p_value is not None and f.p_adjusted is None]
    flagged = sum(f.drifted for f in tests)
    if not flagged:
        return None
    thresholds = {f.threshold for f in tests}
    at = f"p <= {thresholds.pop():g}" if len(thresholds) == 1 else "its threshold"
    expected = sum(f.threshold for f in tests)
    about = f"{expected:.2g}" if expected < 10 else f"{round(expected):,}"  # not 1.2e+02
    said = (
        f"{flagged} of {len(tests)} {noun} flagged DRIFT, each alone at {at} (no "
        f"correction): about {about} of {len(tests)} would be on traffic like the "
        "reference's, by chance"
    )
    if noun == "features":
        said += (
            f"; the inputs' verdict is the share flagged (dataset drift at >= {DRIFT_SHARE:g}), "
            "not one feature's flag"
        )
    return said


def rank(strength: float, p_value: float | None, score: float | None) -> tuple[float, ...]:
    """The sort key of a test among a window's (most past its threshold first): its strength,
    ties broken by the uncorrected p (smaller first), then the score (larger first; None: an
    infinite one, as JSON holds it). Under a correction every unmoved feature's adjusted p is
    1, its strength 0: the raw p still ranks them."""
    score = math.inf if score is None else score
    return (-strength, 1.0 if p_value is None else p_value, -score)


def format_p(
    p_value: float | None, asymptotic_p: float | None = None, p_adjusted: float | None = None
) -> str:
    """p as printed: `p=0.013`, `p<=0.0001` for a Monte Carlo p at its floor (`asymptotic_p`
    set), `p<1e-300` below that (underflowed to 0, or a subnormal such as 1.48e-323: the two
    read apart in one summary), then ` adjusted p=0.21` where a multiple-testing correction
    gave one; "" for a distance (None)."""
    if p_value is None:
        return ""
    if asymptotic_p is not None:
        text = f"p<={p_value:.2g}"
    else:
        text = f"p={p_value:.3g}" if p_value >= P_FLOOR else "p<1e-300"
    if p_adjusted is not None:
        text += f" adjusted p={p_adjusted:.3g}" if p_adjusted >= P_FLOOR else " adjusted p<1e-300"
    return text


P_FLOOR = 1e-300  # a smaller p-value prints as `p<1e-300`
# An output of several values (a forecast, a reconstruction: a test each) is corrected as its
# own family by this where `correction` is "none": its family-wise error <= the tests'
# threshold (Dunn 1961), so a healthy window flags none of its values 95% of the time.
OUTPUT_CORRECTION = "bonferroni"
OUTPUT_VALUES_SHOWN = 4  # an output of more values is one line in the summary, grouped on the page


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def reference_words(split: str | None, held_out: str | None) -> str | None:
    """Which rows a reference is, for the printed summary, the page and the pictures' legends:
    `held_out`, the export's words for rows held out of training ("validation split, held out
    of training", "train's normal calibration rows, held out of the loss"), else (an export of
    before 2026-12-06, whose sample is of rows it trained on) `train split`; None where the
    split is not known either."""
    return held_out or (f"{split} split" if split else None)


def beside_verdict(
    detected: bool,
    multivariate: bool | None,
    outputs: Sequence[tuple[str, bool]],
    verdicts: Mapping[str, bool],
) -> str:
    """What the verdict (`detected`: the share of drifted input features) leaves out, said
    beside it: the multivariate test where it disagrees (`; multivariate MMD, not in the
    verdict: drifted`) and the outputs' count (`; outputs, not in the verdict: 1 of 2
    drifted`, with the values where an output has several: `1 of 1 drifted (72 of 72
    values)`); "" where there is neither. "drift not detected" stood alone beside a forecast
    whose 72 of 72 values drifted, and beside an MMD test that rejected (p 0.001).
    `multivariate`: that test's verdict, None where it was not run; `outputs`: each output
    test's (feature, drifted), `output:NAME` or `output:NAME[i, ...]` for a value of one;
    `verdicts`: each output's own (`DriftResult.output_verdicts`)."""
    said = ""
    if multivariate is not None and multivariate != detected:
        said += f"; multivariate MMD, not in the verdict: {'drifted' if multivariate else 'ok'}"
    if outputs:
        said += f"; outputs, not in the verdict: {outputs_drifted(outputs, verdicts)}"
    return said


T = TypeVar("T")


def by_output(tests: Iterable[T], feature: Callable[[T], str]) -> dict[str, list[T]]:
    """Output tests grouped by the output they test, in order: `output:NAME` for a test of a
    whole output, and each `output:NAME[i, ...]` of an output of several values under
    `output:NAME`; `feature` gives a test's feature name."""
    groups: dict[str, list[T]] = {}
    for test in tests:
        groups.setdefault(feature(test).split("[", 1)[0], []).append(test)
    return groups


def output_drifted(tests: Sequence[FeatureDrift]) -> bool:
    """Whether an output drifted, from its `tests`: its one test's verdict; for an output of
    several values (a reconstruction, a forecast: a test each, corrected as a family by
    `detect`: `--correction`, else OUTPUT_CORRECTION), whether any value drifted, but for
    distances (no p-value to correct), whether at least DRIFT_SHARE of them did, the inputs'
    rule. Counted drifted where any uncorrected value did, a sensor autoencoder's 256-value
    reconstruction drifted in 17 of 20 windows of 200 normal rows (a median 2% of its values
    at p <= 0.05: chance)."""
    if len(tests) == 1 or any(t.p_value is not None for t in tests):
        return any(t.drifted for t in tests)
    return sum(t.drifted for t in tests) / len(tests) >= DRIFT_SHARE


def outputs_drifted(outputs: Sequence[tuple[str, bool]], verdicts: Mapping[str, bool]) -> str:
    """`1 of 2 drifted`, outputs counted whole (`verdicts`, each output's own:
    `output_drifted`), and `(14 of 256 values)` after it where an output has several
    (`beside_verdict`'s `outputs`): the 258 values of 3 outputs read "14 of 258 drifted"."""
    groups = by_output(outputs, lambda test: test[0])
    moved = sum(bool(verdicts.get(name)) for name in groups)
    said = f"{moved} of {len(groups)} drifted"
    if len(outputs) > len(groups):
        said += f" ({sum(d for _, d in outputs)} of {len(outputs)} values)"
    return said


@dataclasses.dataclass(frozen=True)
class DriftResult:
    """A window's drift: per input feature, per output, and (optionally) multivariate. A window
    of fewer than `min_rows` rows is not tested: no features or outputs, `share` and `detected`
    None, `state` "too_few_rows"."""

    rows: int
    reference_rows: int
    features: list[FeatureDrift]
    share: float | None  # drifted input features / input features; None: too few rows
    detected: bool | None  # share >= DRIFT_SHARE; None: too few rows to judge
    outputs: list[FeatureDrift]
    multivariate: FeatureDrift | None
    min_rows: int = MIN_ROWS
    correction: str = "none"  # of the input features' p-values (`correct`)
    # input name -> how it was tested (`Reference.tested_as`): categorical or numeric
    tested_as: dict[str, str] = dataclasses.field(default_factory=dict)
    # the split the reference rows (inputs, and the outputs on them) are of; None: not known
    reference_split: str | None = None
    # which rows of it, held out of training, in words (an export's `reference.sample.
    # held_out`); None: not known, or an export from before it, whose rows were trained on
    reference_held_out: str | None = None

    @property
    def state(self) -> str:
        """The verdict, as a gate or an alert reads it: "detected", "not_detected" or
        "too_few_rows" (`ann.monitor.STATES`)."""
        if self.detected is None:
            return "too_few_rows"
        return "detected" if self.detected else "not_detected"

    def verdict(self) -> str:
        """The state in words: `drift DETECTED`, `drift not detected`, or `too few rows to judge
        drift (2 rows < 25)`."""
        if self.detected is None:
            rows = f"{self.rows} row{'s' * (self.rows != 1)}"
            return f"too few rows to judge drift ({rows} < {self.min_rows})"
        said = "drift DETECTED" if self.detected else "drift not detected"
        mmd = self.multivariate.drifted if self.multivariate else None
        outputs = [(f.feature, f.drifted) for f in self.outputs]
        beside = beside_verdict(self.detected, mmd, outputs, self.output_verdicts)
        return f"{said} (inputs){beside}"

    @functools.cached_property  # read by the verdict, report.json and the page's table
    def output_verdicts(self) -> dict[str, bool]:
        """Each output's verdict (`output_drifted`), by its name as tested: `output:NAME`."""
        groups = by_output(self.outputs, lambda f: f.feature)
        return {name: output_drifted(tests) for name, tests in groups.items()}

    def top(self, k: int = 10, moved_only: bool = False) -> list[FeatureDrift]:
        """The `k` input features most past their thresholds (`rank`); `moved_only`: only
        those whose traffic differs from the reference at all (`FeatureDrift.moved`)."""
        features = [f for f in self.features if f.moved or not moved_only]
        return sorted(features, key=lambda f: rank(f.strength, f.p_value, f.score))[:k]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: NaN and infinities become null."""
        return {
            "state": self.state,
            "rows": self.rows,
            "min_rows": self.min_rows,
            "reference_rows": self.reference_rows,
            "share": self.share,
            "detected": self.detected,
            "drift_share": DRIFT_SHARE,
            "correction": self.correction,
            "drifted": sum(f.drifted for f in self.features),
            "features": [f.to_json() for f in self.features],
            "outputs": [f.to_json() for f in self.outputs],
            "outputs_drifted": sum(f.drifted for f in self.outputs),
            "output_verdicts": self.output_verdicts,
            "reference_split": self.reference_split,
            "reference_held_out": self.reference_held_out,
            "multivariate": self.multivariate.to_json() if self.multivariate else None,
            "tested_as": self.tested_as,
        }


# -- the tests, each on two 1-D float arrays of finite values --------------------------------


def ks(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float | None, float, bool]:
    """Two-sample KS: (D, p, 0.05, p <= 0.05)."""
    result = stats.ks_2samp(ref, cur)
    return float(result.statistic), float(result.pvalue), ALPHA, rejects("ks", result.pvalue, ALPHA)


def _counts(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of each value seen in either, reference and current (same order)."""
    keys = np.union1d(ref, cur)
    return (
        np.bincount(np.searchsorted(keys, ref), minlength=len(keys)),
        np.bincount(np.searchsorted(keys, cur), minlength=len(keys)),
    )


def chisquare(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float | None, float, bool]:
    """Chi-square goodness of fit of current counts to the reference's shares, scaled; where
    the current holds a value the reference never does (its expected count 0 made the
    statistic infinite, shown as inf and written as null), the chi-square of the 2 x k table
    of counts instead (`scipy.stats.chi2_contingency`, no continuity correction): both sides
    counted, finite."""
    r, c = _counts(ref, cur)
    if not r.all():
        result = stats.chi2_contingency(np.stack([r, c]), correction=False)
        p = float(result.pvalue)
        return float(result.statistic), p, ALPHA, rejects("chisquare", p, ALPHA)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.chisquare(c, r * (len(cur) / len(ref)))
    p = float(result.pvalue) if np.isfinite(result.pvalue) else 0.0
    return float(result.statistic), p, ALPHA, rejects("chisquare", p, ALPHA)


def z_test(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float | None, float, bool]:
    """Two-proportion z-test on the share of rows that differ from the smallest value."""
    keys = np.union1d(ref, cur)
    if len(keys) == 1:
        return 0.0, 1.0, ALPHA, False
    p1, p2 = np.mean(ref != keys[0]), np.mean(cur != keys[0])
    pooled = (p1 * len(ref) + p2 * len(cur)) / (len(ref) + len(cur))
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / len(ref) + 1 / len(cur)))
    p = float(2 * stats.norm.sf(abs(z)))
    return abs(float(z)), p, ALPHA, rejects("z", p, ALPHA)


def sparse(ref: np.ndarray, cur: np.ndarray) -> bool:
    """Whether the 2 x k table of reference and current counts per value has an expected count
    (row total x column total / rows, under the same distribution) below MIN_EXPECTED."""
    table = np.stack(_counts(ref, cur))
    return table.shape[1] > 1 and stats.contingency.expected_freq(table).min() < MIN_EXPECTED


def fisher_exact(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float | None, float, bool]:
    """Fisher's exact test of the 2 x 2 table of counts (2 values): (odds ratio, p, 0.05,
    p < 0.05). `scipy.stats.fisher_exact`, two-sided. The score is the sample odds ratio, with
    the Haldane-Anscombe correction where a cell is 0 (0.5 added to every cell, as statsmodels'
    `Table2x2(shift_zeros=True)`): the reference always one value and one current row of the
    other made it infinite (1221 x 1 / (0 x 199)), printed as the `top:` feature's "fisher_exact
    inf" for a feature that did not drift (p = 0.14) and written as null; it is 18.4 there. A
    table without a 0 keeps its plain ratio (the same shares: exactly 1, `UNMOVED`)."""
    table = np.stack(_counts(ref, cur)).astype(np.float64)
    p = float(stats.fisher_exact(table.astype(np.int64)).pvalue)
    if not table.all():
        table += 0.5
    (a, b), (c, d) = table
    return float(a * d / (b * c)), p, ALPHA, rejects("fisher_exact", p, ALPHA)


def chisquare_montecarlo(
    ref: np.ndarray, cur: np.ndarray
) -> tuple[float, float | None, float, bool]:
    """The chi-square statistic of the 2 x k table of counts, its p-value from 9,999 random
    tables with the same margins (`scipy.stats.chi2_contingency` with a seeded
    `MonteCarloMethod`): (chi-square, p, 0.05, p < 0.05)."""
    method = stats.MonteCarloMethod(n_resamples=MONTE_CARLO_TABLES, rng=np.random.default_rng(0))
    table = np.stack(_counts(ref, cur))
    result = stats.chi2_contingency(table, correction=False, method=method)
    p = float(result.pvalue)
    return float(result.statistic), p, ALPHA, rejects("chisquare_montecarlo", p, ALPHA)


def wasserstein(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float | None, float, bool]:
    """Wasserstein-1 distance over max(reference std, 0.001)."""
    norm = max(float(np.std(ref)), WASSERSTEIN_STD_FLOOR)
    score = float(stats.wasserstein_distance(ref, cur)) / norm
    return score, None, DISTANCE, score >= DISTANCE


def binned(ref: np.ndarray, cur: np.ndarray, fill_zeroes: bool) -> tuple[np.ndarray, np.ndarray]:
    """Evidently's `get_binned_data`: reference and current shares per bin."""
    if len(np.unique(ref)) > BIN_VALUES:
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        r = np.histogram(ref, edges)[0] / len(ref)
        c = np.histogram(cur, edges)[0] / len(cur)
    else:
        rc, cc = _counts(ref, cur)
        r, c = rc / len(ref), cc / len(cur)
    if fill_zeroes:
        for shares in (r, c):
            smallest = shares[shares > 0].min()
            shares[shares == 0] = smallest / 1e6 if smallest <= 0.0001 else 0.0001
    return r, c


def jensenshannon(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float | None, float, bool]:
    """Jensen-Shannon distance (natural log) of the binned shares."""
    score = float(spatial.distance.jensenshannon(*binned(ref, cur, fill_zeroes=False)))
    return score, None, DISTANCE, score >= DISTANCE


def psi(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float | None, float, bool]:
    """Population stability index of the binned shares (empty bins filled)."""
    r, c = binned(ref, cur, fill_zeroes=True)
    score = float(np.sum((r - c) * np.log(r / c)))
    return score, None, DISTANCE, score >= DISTANCE


def histogram(
    ref: np.ndarray, cur: np.ndarray, bins: int = HISTOGRAM_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference and current on the same bins, to be read side by side (not a drift test):
    (edges float64 [bins + 1], reference shares [bins], current shares [bins]). `bins` equal
    bins over the range of both together (`np.histogram_bin_edges`; a constant feature gets
    NumPy's range of value +- 0.5), the last bin closed; non-finite values dropped, so a side
    left empty has shares of 0. Raises ValueError when both sides are empty."""
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    both = np.concatenate([ref, cur])
    if not len(both):
        raise ValueError("histogram: no finite value in the reference or the current rows")
    edges = np.histogram_bin_edges(both, bins=bins)
    shares = [np.histogram(x, edges)[0] / max(len(x), 1) for x in (ref, cur)]
    return edges, shares[0], shares[1]


TESTS: dict[str, Callable[[np.ndarray, np.ndarray], tuple[float, float | None, float, bool]]] = {
    "ks": ks,
    "chisquare": chisquare,
    "z": z_test,
    "fisher_exact": fisher_exact,
    "chisquare_montecarlo": chisquare_montecarlo,
    "wasserstein": wasserstein,
    "jensenshannon": jensenshannon,
    "psi": psi,
}


def default_test(rows: int, distinct: int, categorical: bool = False) -> str:
    """Evidently's choice (`_get_default_stattest`) for a numeric feature, or a categorical one
    (any number of values: chi-square / z, or Jensen-Shannon), made by `rows`: the smaller of the
    reference and the current sample (Evidently: the reference's; see the module docstring)."""
    if rows <= SMALL_REFERENCE:
        if categorical or distinct <= FEW_VALUES:
            return "chisquare" if distinct > BINARY else "z"
        return "ks"
    return "jensenshannon" if categorical or distinct <= FEW_VALUES else "wasserstein"


def test_feature(
    name: str, ref: np.ndarray, cur: np.ndarray, method: str = "auto", categorical: bool = False
) -> FeatureDrift:
    """One feature's drift: `method` "auto" (`default_test`, then an exact p-value where the
    z-test's or chi-square's approximation does not hold: `sparse`) or a name in TESTS. Values
    that are not finite are dropped; a side left empty gives method "empty", not drifted."""
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if not len(ref) or not len(cur):
        return FeatureDrift(name, "empty", 0.0, None, DISTANCE, False)
    if method == "auto":
        distinct = len(np.union1d(ref, cur))
        method = default_test(min(len(ref), len(cur)), distinct, categorical)
        if method in ("z", "chisquare") and sparse(ref, cur):
            method = "fisher_exact" if distinct == BINARY else "chisquare_montecarlo"
    score, p, threshold, drifted = TESTS[method](ref, cur)
    asymptotic = None
    if method == "chisquare_montecarlo" and p <= 1 / (MONTE_CARLO_TABLES + 1):
        asymptotic = float(stats.chi2.sf(score, len(np.union1d(ref, cur)) - 1))
    return FeatureDrift(name, method, score, p, threshold, bool(drifted), asymptotic)


def rejects(method: str, p: float, threshold: float) -> bool:
    """A p-value test's verdict: KS drifts at p <= threshold (Evidently's ks_stattest.py), the
    others below it."""
    return bool(p <= threshold if method == "ks" else p < threshold)


def correct(features: list[FeatureDrift], correction: str) -> list[FeatureDrift]:
    """`features` with the p-values of their p-value tests corrected for being tested together
    (distances are left as they are): each such test gets `p_adjusted` and its `drifted` judged
    on it. `correction`: "none" (`features` unchanged), "bonferroni" (p x tests, at most 1:
    family-wise error <= the threshold, Dunn 1961), "fdr_bh" (Benjamini and Hochberg 1995:
    false discovery rate <= the threshold for independent or positively dependent tests) or
    "fdr_by" (Benjamini and Yekutieli 2001: under any dependence), the last two
    `scipy.stats.false_discovery_control`. Raises ValueError for another name."""
    if correction not in CORRECTIONS:
        raise ValueError(f"correction={correction!r} must be one of {', '.join(CORRECTIONS)}")
    tested = [i for i, f in enumerate(features) if f.p_value is not None]
    if correction == "none" or not tested:
        return features
    p = np.array([features[i].p_value for i in tested])
    if correction == "bonferroni":
        adjusted = np.minimum(p * len(p), 1.0)
    else:
        adjusted = stats.false_discovery_control(p, method=correction.removeprefix("fdr_"))
    out = list(features)
    for i, q in zip(tested, adjusted.tolist(), strict=True):
        f = features[i]
        out[i] = dataclasses.replace(f, p_adjusted=q, drifted=rejects(f.method, q, f.threshold))
    return out


def categorical(spec: Mapping[str, Any]) -> bool:
    """Whether an input signature entry is categorical: an integer input with `names` (the
    classes or the vocabulary its values index, `experiments.common.spec`), e.g. token ids."""
    return "names" in spec and np.issubdtype(np.dtype(spec["dtype"]), np.integer)


def category_values(x: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """A categorical input's values [rows, ...] as one float64 sample of categories: every
    position of every row (token ids: the unigram sample), without padding (the entry's
    `padding` id), which is no token of the text."""
    values = np.asarray(x).reshape(-1)
    pad = spec.get("padding")
    if pad is not None:
        values = values[values != pad["id"]]
    return values.astype(np.float64)


def _example_size(spec: Mapping[str, Any]) -> int:
    return int(np.prod(example_shape(spec), dtype=np.int64))


def _rows(inputs: Mapping[str, np.ndarray], spec: Mapping[str, Any]) -> int:
    return len(np.asarray(inputs[next(iter(spec))])) if spec else 0


def pooled_counts(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """The 2 x k table of reference and current counts per category, rare categories pooled
    into one column so that every expected count (row total x column total / total) is at least
    MIN_EXPECTED (Cochran 1954): categories whose column total is below MIN_EXPECTED x total /
    the smaller row total go into one "other" column, and where that column is still short it
    joins the smallest of the rest. One column is left where nothing can be tested."""
    table = np.stack(_counts(ref, cur))
    need = MIN_EXPECTED * table.sum() / table.sum(1).min()
    totals = table.sum(0)
    kept, other = table[:, totals >= need], table[:, totals < need].sum(1)
    if other.sum():
        if other.sum() < need and kept.shape[1]:
            smallest = int(np.argmin(kept.sum(0)))
            other = other + kept[:, smallest]
            kept = np.delete(kept, smallest, axis=1)
        kept = np.concatenate([kept, other[:, None]], axis=1)
    return kept


def chisquare_pooled(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float | None, float, bool]:
    """Chi-square test of homogeneity of the 2 x k table of category counts, rare categories
    pooled (`pooled_counts`), `scipy.stats.chi2_contingency` without continuity correction:
    (chi-square, p, 0.05, p < 0.05); p = 1 where pooling leaves one column."""
    table = pooled_counts(ref, cur)
    if table.shape[1] < BINARY:
        return 0.0, 1.0, ALPHA, False
    result = stats.chi2_contingency(table, correction=False)
    p = float(result.pvalue)
    return float(result.statistic), p, ALPHA, rejects("chisquare_pooled", p, ALPHA)


def category_shares(ref: np.ndarray, cur: np.ndarray, fill_zeroes: bool) -> tuple[np.ndarray, ...]:
    """Reference and current shares per category (each category its own bin: `binned` cuts a
    feature of more than BIN_VALUES values into ranges, which for ids would pool unrelated
    tokens); empty ones filled as `binned` fills them for PSI."""
    r, c = (counts / counts.sum() for counts in _counts(ref, cur))
    if fill_zeroes:
        for shares in (r, c):
            smallest = shares[shares > 0].min()
            shares[shares == 0] = smallest / 1e6 if smallest <= 0.0001 else 0.0001
    return r, c


def test_categorical(
    name: str, ref: np.ndarray, cur: np.ndarray, method: str = "auto"
) -> FeatureDrift:
    """A categorical input's or output's drift, on its category frequencies (`category_values`;
    predicted classes and next tokens: one a row; a seq2seq output: every position): for token
    ids, the token (unigram) frequencies over all positions, padding excluded, the usual way
    to compare two samples of text (Kilgarriff 2001, "Comparing corpora", International
    Journal of Corpus Linguistics 6(1): the chi-square of word frequency lists); one test per
    input, where a test per position of a window of text is noisy and says nothing of the
    text, whose words move from position to position.

    By the smaller side's count of values, as Evidently chooses a categorical feature's test
    (`default_test`): at most SMALL_REFERENCE values, the chi-square test of the 2 x k table of
    counts, rare categories pooled so every expected count is >= 5 (`chisquare_pooled`;
    Cochran 1954); above it, the Jensen-Shannon distance of the category shares >= 0.1
    (`jensenshannon` with one bin per category). Why a distance for many values: the
    chi-square counts every token as an independent draw, and the tokens of a text are not
    (Kilgarriff 2005, "Language is never, ever, ever, random": between corpora of any size
    it rejects): 100 windows of the pydoc corpus's training split drawn at random,
    against 5,000 others of it, had chi-square 117 on 71 degrees of freedom (p = 0.0005), and
    100 of those 5,000 against 2,500 others 671 on 74 (p ~ 1e-96): a window of clean text was
    "drift" every time (20 of 20 random windows, p < 0.05). The distance holds still on clean
    text (100 test-split windows of held-out modules: JS 0.07 median, >= 0.1 in 1 of 200
    random windows) and moves on a shift (10% of the characters turned into digits: 0.20).
    Rare categories pooled, not an exact p over all of them (`chisquare_montecarlo`, which
    test_feature gives a sparse table): the exact p takes each rare category's reference share
    as known, and a few dozen documents do not tell it (rare tokens come in bursts within a
    text: Church and Gale 1995, "Poisson mixtures", Natural Language Engineering 1(2)). The
    pydoc LM's next_token on 100 clean test rows was decided by characters the 1,265
    validation rows predict 0-3 times (one '=' added 12.6 to the statistic): 8 of 40 random
    windows flagged, pooled 2; a class moving among the common ones is found more often
    (pooled 20 of 20 windows, Monte Carlo 6), one spread over rare classes less.
    `method` "psi": PSI of the category shares; any other method (ks, wasserstein: distances
    between ids, meaningless) takes "auto"'s choice."""
    if not len(ref) or not len(cur):
        return FeatureDrift(name, "empty", 0.0, None, DISTANCE, False)
    if method == "psi":
        r, c = category_shares(ref, cur, fill_zeroes=True)
        score = float(np.sum((r - c) * np.log(r / c)))
        return FeatureDrift(name, "psi", score, None, DISTANCE, score >= DISTANCE)
    if min(len(ref), len(cur)) <= SMALL_REFERENCE:
        if pooled_counts(ref, cur).shape[1] < BINARY and len(np.union1d(ref, cur)) >= BINARY:
            # Pooling left one column, nothing to test: a class rare on both sides (a binary
            # classifier's 1% class at 10% of 100 rows) was p = 1. The exact test instead.
            return test_feature(name, ref, cur, "auto", categorical=True)
        return FeatureDrift(name, "chisquare_pooled", *chisquare_pooled(ref, cur))
    score = float(spatial.distance.jensenshannon(*category_shares(ref, cur, fill_zeroes=False)))
    return FeatureDrift(name, "jensenshannon", score, None, DISTANCE, score >= DISTANCE)


def _output_drift(
    name: str, spec: Mapping[str, Any], ref: np.ndarray, cur: np.ndarray, method: str
) -> list[FeatureDrift]:
    """Categorical outputs (predicted classes, next tokens: `categorical`) as categorical
    inputs are, by `test_categorical` on their category frequencies (each class its own
    category: Evidently's `get_binned_data` cut a feature of more than 20 values into Sturges'
    ranges of ids, pooling unrelated classes); probabilities: KS of the confidence; other
    outputs: each value as a feature."""
    if categorical(spec):
        r, c = (category_values(x, spec) for x in (ref, cur))
        return [test_categorical(f"output:{name}", r, c, method)]
    if name == "probabilities" and ref.ndim == 2:
        r, c = ref.max(-1).astype(np.float64), cur.max(-1).astype(np.float64)
        return [test_feature(f"output:{name}", r, c, "ks")]
    r, names = feature_matrix({name: ref}, {name: spec})
    c, _ = feature_matrix({name: cur}, {name: spec})
    return [test_feature(f"output:{n}", r[:, i], c[:, i], method) for i, n in enumerate(names)]


# What a categorical input's or output's test is, in words (`Reference.tested_as`).
CATEGORICAL_TESTS = {
    "chisquare_pooled": "chi-square of the counts, rare ones pooled",
    "jensenshannon": "Jensen-Shannon distance of the shares, each its own bin",
    "psi": "PSI of the shares",
    "fisher_exact": "Fisher's exact test (pooling left nothing to test)",
    "chisquare_montecarlo": "chi-square, Monte Carlo p (pooling left nothing to test)",
    "chisquare": "chi-square (pooling left nothing to test)",
    "z": "two-proportion z-test (pooling left nothing to test)",
    "empty": "not tested: no values",
}


def _categorical_how(method: str, test: FeatureDrift | None) -> str:
    """`Reference.tested_as`'s words for a categorical test: the one that ran (`test`), else
    the one `method` runs; a note where `method` (ks, wasserstein, jensenshannon: chosen for
    every feature) was not used, as `test_categorical` takes "auto"'s choice for them."""
    if test is not None:
        how = f"{test.method}: {CATEGORICAL_TESTS.get(test.method, test.method)}"
    elif method == "psi":
        how = f"psi: {CATEGORICAL_TESTS['psi']}"
    else:
        how = (
            "chisquare_pooled: chi-square, rare ones pooled (<= 1,000 values a side), else "
            "jensenshannon per category"
        )
    if method not in ("auto", "psi"):
        how += (
            f" (--method={method} is not used for categories: a test between category ids "
            "means nothing; auto's choice)"
        )
    return how


def _category_name(name: Any) -> str:
    """A category as a label: its name, quoted where it is whitespace (a space, a newline)."""
    name = str(name)
    return repr(name) if not name or name.isspace() else name


class Reference:
    """The reference sample of an export (rows held out of training and the model's outputs on
    them) and the tests of a window of traffic against it (`detect`)."""

    def __init__(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
        input_spec: Mapping[str, Mapping[str, Any]],
        output_spec: Mapping[str, Mapping[str, Any]],
        split: str | None = None,
        held_out: str | None = None,
    ):
        """`inputs`, `outputs`: name -> [rows, ...] arrays (outputs may be a subset of
        `output_spec`, or empty; where given, the model's outputs on these `inputs`, row for
        row, so a window's inputs and outputs meet one sample); specs as the manifest's
        `inputs` and `outputs`; `split`: the split the rows are of (`validation`), which the
        report names; `held_out`: which rows of it, held out of training, in words (None: not
        known, or rows the model was trained on). Raises DriftUnavailable for fewer than 2
        rows, ValueError for outputs of another number of rows than `inputs`."""
        self.input_spec = dict(input_spec)
        self.categorical_spec = {k: v for k, v in input_spec.items() if categorical(v)}
        self.numeric_spec = {k: v for k, v in input_spec.items() if k not in self.categorical_spec}
        self.output_spec = {k: v for k, v in output_spec.items() if k in outputs}
        self.model_outputs = list(output_spec)  # a window may give these (untested if absent)
        self.features, self.names = feature_matrix(inputs, self.numeric_spec)
        self.categories = {
            k: category_values(inputs[k], v) for k, v in self.categorical_spec.items()
        }
        self.outputs = {k: np.asarray(outputs[k]) for k in self.output_spec}
        self.rows = _rows(inputs, self.input_spec)
        self.split, self.held_out = split, held_out
        if self.rows < 2:
            raise DriftUnavailable(f"the reference sample has {self.rows} rows; at least 2 needed")
        for name, values in self.outputs.items():
            if len(values) != self.rows:
                raise ValueError(
                    f"the reference's output {name!r} holds {len(values)} rows, its inputs "
                    f"{self.rows}: outputs must be the model's on those inputs, row for row"
                )

    @classmethod
    def from_model(cls, model: Any) -> Reference:
        """The reference of a loaded export (`ann.artifact.Model`), read from its
        reference.safetensors through the manifest's sha256 check (IntegrityError when it
        fails): the sampled rows' inputs (`inputs/NAME`) and the model's outputs on those same
        rows (`outputs/NAME`), one sample for both. They are rows held out of training
        (`ann.export.held_out_rows`: the validation split, an anomaly detector's calibration
        rows; the manifest's `reference.sample.held_out`); an export made before 2026-12-06
        sampled its training rows, on which a model is more confident than on anything new,
        and is read as it is (`held_out` None). The file's `validation/NAME` of such an export
        (the outputs on other rows) is not used: output drift against them while inputs were
        tested against the training rows flagged 72 of 72 forecast values of the forecaster's
        own training rows. Raises DriftUnavailable for an export without one, TypeError for a
        `model` that is no loaded export (a path: `from_model(artifact.load(path))`)."""
        from ann import artifact

        if not (hasattr(model, "directory") and hasattr(model, "manifest")):
            raise TypeError(
                f"model: expected a loaded export, ann.artifact.load(directory), got "
                f"{type(model).__name__}"
                + (
                    ": from_model(artifact.load(path))"
                    if isinstance(model, str | os.PathLike)
                    else ""
                )
            )

        sample = artifact.load_reference(model.directory, model.manifest)
        if sample is None:
            raise DriftUnavailable(
                f"{model.directory} holds no {artifact.REFERENCE} (exported before reference "
                "samples were written); drift is unavailable: re-export the run with `ann export`"
            )
        entry = model.manifest.get("reference", {}).get("sample", {})
        return cls(
            sample["inputs"],
            sample["outputs"],
            model.inputs,
            model.outputs,
            entry.get("split"),
            entry.get("held_out"),
        )

    def current_features(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Traffic as the reference's numeric features (`feature_matrix`; categorical inputs
        are not among them): float64 [rows, F], columns in the order of `self.names`. Raises
        ValueError for inputs that do not match the spec."""
        return feature_matrix(inputs, self.numeric_spec)[0]

    def tested_as(
        self, method: str = "auto", tests: Mapping[str, FeatureDrift] | None = None
    ) -> dict[str, str]:
        """How each input is tested, in words: input name -> "categorical: ..." (its category
        or token frequencies, one test, not in the MMD test) or "numeric: ..."; each
        categorical output, "output:NAME" -> "categorical: ..." (its class frequencies); a
        probabilities output -> "confidence: ...". `tests`: the window's tests by feature name
        (`detect`'s), whose methods are said (`chisquare_pooled: chi-square, rare ones
        pooled`); without them (too few rows: none ran), what `method` would run. Where
        `method` does not apply (ks, wasserstein between category ids; any method but ks on the
        confidence), the test run instead is said, and why: --method=psi printed `output:label:
        psi 0.01476` beside "chi-square (rare ones pooled) or Jensen-Shannon per class"."""
        tests = tests or {}
        out = {}
        for name, spec in self.input_spec.items():
            if name in self.categorical_spec:
                over = "all positions" if _example_size(spec) > 1 else "rows"
                pad = spec.get("padding")
                said = f", padding (id {pad['id']}) excluded" if pad else ""
                how = _categorical_how(method, tests.get(name))
                out[name] = (
                    f"categorical: {len(spec['names'])} categories, frequencies over {over}{said}; "
                    f"{how}; not in the MMD test"
                )
            else:
                values = feature_names({name: spec})
                by = "" if method == "auto" else f" by {method}"
                out[name] = (
                    f"numeric: {len(values)} feature{'s' * (len(values) != 1)}, each tested{by}"
                )
        for name, spec in self.output_spec.items():
            if categorical(spec):
                over = "all positions" if _example_size(spec) > 1 else "rows"
                pad = spec.get("padding")
                said = f", padding (id {pad['id']}) excluded" if pad else ""
                how = _categorical_how(method, tests.get(f"output:{name}"))
                out[f"output:{name}"] = (
                    f"categorical: {len(spec['names'])} classes, frequencies over {over}{said}; "
                    f"{how}"
                )
            elif name == "probabilities" and len(spec.get("shape", ())) == 2:
                note = (
                    ""
                    if method in ("auto", "ks")
                    else f" (--method={method} is not used here: the confidence is always "
                    "KS-tested)"
                )
                out[f"output:{name}"] = f"confidence (each row's largest probability); ks{note}"
        return out

    def histograms(
        self, inputs: Mapping[str, np.ndarray], features: list[str], bins: int = HISTOGRAM_BINS
    ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """`histogram` of each named input feature of the reference and of `inputs` (a window
        of traffic, as `detect` takes it): feature -> (edges, reference shares, current shares).
        Features without a finite value on either side are left out, and so are categorical
        inputs (no numeric bins; the drift report draws their category shares); raises
        ValueError naming a feature the reference does not have."""
        columns = {name: i for i, name in enumerate(self.names)}
        features = [f for f in features if f not in self.categorical_spec]
        missing = [f for f in features if f not in columns]
        if missing:
            raise ValueError(
                f"histograms: no input feature {missing[0]!r} in the reference; features are "
                f"named as Reference.names ({self.names[0]!r}, ...)"
            )
        current = self.current_features(inputs)
        out = {}
        for name in features:
            ref, cur = self.features[:, columns[name]], current[:, columns[name]]
            if np.isfinite(ref).any() or np.isfinite(cur).any():
                out[name] = histogram(ref, cur, bins)
        return out

    def category_histograms(
        self, inputs: Mapping[str, np.ndarray], features: list[str], bins: int = HISTOGRAM_BINS
    ) -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
        """The categorical inputs among `features` as `histograms` gives numeric ones, for the
        dashboard: input -> (bin names, reference shares, current shares) over the values
        drift tests (`category_values`: all positions, padding excluded). Bins: the `bins` - 1
        categories whose shares differ most (then the most common), in id order, each named
        by its ordinal and category (`"03 'e'"`; a whitespace category by its repr), and
        `"NN (others)"` holding the rest where there are more, so each side sums to 1 (or 0
        for a side without values). Other names in `features` are ignored."""
        out = {}
        for name in features:
            spec = self.categorical_spec.get(name)
            if spec is None:
                continue
            ref, cur = self.categories[name], category_values(inputs[name], spec)
            size = len(spec["names"])
            r, c = (
                np.bincount(x.astype(np.int64), minlength=size) / max(len(x), 1) for x in (ref, cur)
            )
            held = np.flatnonzero(r + c > 0)
            order = held[np.lexsort((-(r + c)[held], -np.abs(c - r)[held]))]
            many = len(held) > bins
            shown = np.sort(order[: bins - 1] if many else order)
            names = [f"{i + 1:02d} {_category_name(spec['names'][k])}" for i, k in enumerate(shown)]
            ref_shares, cur_shares = r[shown], c[shown]
            if many:
                names.append(f"{len(shown) + 1:02d} (others)")
                ref_shares = np.append(ref_shares, r.sum() - ref_shares.sum())
                cur_shares = np.append(cur_shares, c.sum() - cur_shares.sum())
            out[name] = (names, ref_shares, cur_shares)
        return out

    def detect(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
        *,
        method: str = "auto",
        multivariate: bool = False,
        min_rows: int = MIN_ROWS,
        correction: str = "none",
    ) -> DriftResult:
        """Tests a window of traffic: `inputs` as the model takes them (name -> [rows, ...]),
        `outputs` the model's outputs on them (those absent are not tested). `method`: "auto"
        (Evidently's defaults, adapted: the module docstring), "psi", or one test for every input
        feature ("ks", "wasserstein", "jensenshannon"). A window of fewer than `min_rows` rows
        (`ann.monitor.MIN_ROWS`, 25, by default) is not tested: state "too_few_rows".
        `correction`: of the input features' p-values, tested together (`correct`), and of
        each output's values where it has many (an embedding, a forecast), as their own family;
        an output of one test and the multivariate test are left as they are. Raises
        TypeError for `inputs` or `outputs` that are no dict, ValueError for an unknown method
        or correction, inputs that do not match the signature (a name missing, a per-row
        shape; any numeric dtype is read as numbers), an output the model does not have, of
        another number of rows than the inputs or holding a non-finite value (the server
        answers those 422), or a `min_rows` below 2 (what the tests need to run). Each was
        taken silently (`{"probs": ...}` untested; all-NaN probabilities "not drifted"), or
        named the first input "missing" of an array given alone."""
        for argument, given, spec in (("inputs", inputs, self.input_spec),
                                      ("outputs", outputs, self.model_outputs)):  # fmt: skip
            if not isinstance(given, Mapping):
                example = f"{{{next(iter(spec), 'name')!r}: array, ...}}"
                raise TypeError(
                    f"{argument}: expected a dict of name -> array ({example}), got "
                    f"{type(given).__name__}"
                )
        if method not in METHODS:
            raise ValueError(f"method={method!r} must be one of {', '.join(METHODS)}")
        if correction not in CORRECTIONS:
            raise ValueError(f"correction={correction!r} must be one of {', '.join(CORRECTIONS)}")
        if min_rows < MIN_TEST_ROWS:
            raise ValueError(f"min_rows={min_rows}: the drift tests need at least {MIN_TEST_ROWS}")
        current = self.current_features(inputs)
        for name, spec in self.categorical_spec.items():  # their shapes checked, as the others'
            feature_matrix(inputs, {name: spec})
        rows = _rows(inputs, self.input_spec)
        if rows == 0:  # NumPy's "cannot reshape array of size 0" came of it
            raise ValueError("the window holds no rows; give at least one")
        if not np.isfinite(current).all():  # each feature "empty", and "not drifted"
            column = int(np.argwhere(~np.isfinite(current))[0][1])
            raise ValueError(
                f"input feature {self.names[column]} holds a non-finite value; drift tests the "
                "inputs a model takes (the server refuses such a request)"
            )
        self._check_outputs(rows, outputs)
        if rows < min_rows:  # no verdict: it would be noise (2 rows were "drift DETECTED")
            tested_as = self.tested_as(method)
            return DriftResult(
                rows,
                self.rows,
                [],
                None,
                None,
                [],
                None,
                min_rows,
                correction,
                tested_as,
                self.split,
                self.held_out,
            )
        features = [
            test_feature(name, self.features[:, i], current[:, i], method)
            for i, name in enumerate(self.names)
        ]
        features += [
            test_categorical(
                name, self.categories[name], category_values(inputs[name], spec), method
            )
            for name, spec in self.categorical_spec.items()
        ]
        features = correct(features, correction)
        out: list[FeatureDrift] = []
        for name, spec in self.output_spec.items():
            if name in outputs:
                cur = np.asarray(outputs[name])
                tests = _output_drift(name, spec, self.outputs[name], cur, method)
                # One test per value of an embedding or a forecast: a family, always corrected
                # (`OUTPUT_CORRECTION` where none was asked for): uncorrected, a healthy window's
                # 256-value reconstruction showed 40 values "DRIFT" beside the output's "ok".
                family = correction if correction != "none" else OUTPUT_CORRECTION
                out += correct(tests, family) if len(tests) > 1 else tests
        share = sum(f.drifted for f in features) / max(len(features), 1)
        # Numeric features only: a category's id is no quantity to measure distances on.
        numeric = multivariate and self.features.shape[1] > 0
        mmd = mmd_test(self.features, current) if numeric else None
        detected = share >= DRIFT_SHARE
        tested_as = self.tested_as(method, {f.feature: f for f in [*features, *out]})
        return DriftResult(
            rows,
            self.rows,
            features,
            share,
            detected,
            out,
            mmd,
            min_rows,
            correction,
            tested_as,
            self.split,
            self.held_out,
        )

    def _check_outputs(self, rows: int, outputs: Mapping[str, np.ndarray]) -> None:
        """ValueError for an output of `outputs` the model does not have, or one tested here
        of another number of rows than the window's `rows`, another per-row shape than its
        signature's, or holding a non-finite value."""
        for name in outputs:
            if name not in self.model_outputs:
                raise ValueError(
                    f"outputs: {name!r} is not an output of the model"
                    f"{did_you_mean(name, self.model_outputs)}; its outputs are "
                    f"{', '.join(self.model_outputs)}"
                )
        for name, spec in self.output_spec.items():
            if name not in outputs:
                continue
            values = np.asarray(outputs[name])
            if len(values) != rows:
                raise ValueError(
                    f"output {name!r} holds {len(values)} rows, the inputs {rows}: outputs are "
                    "the model's on those inputs, row for row"
                )
            if values.shape[1:] != example_shape(spec):
                raise ValueError(
                    f"output {name!r} has the shape {list(values.shape)}, expected [rows, "
                    f"{', '.join(map(str, example_shape(spec)))}], the model's"
                )
            bad = ~np.isfinite(values) if np.issubdtype(values.dtype, np.floating) else None
            if bad is not None and bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise ValueError(
                    f"output {name!r} holds a non-finite value (row {row}: "
                    f"{values[bad][0]}); drift tests a model's finite outputs (the server answers "
                    "such a request 422 non_finite_output)"
                )


def mmd_test(
    reference: np.ndarray,
    current: np.ndarray,
    permutations: int = MMD_PERMUTATIONS,
    seed: int = 0,
) -> FeatureDrift:
    """Multivariate MMD test of two float arrays [rows, F] (see the module docstring):
    FeatureDrift("multivariate", "mmd", MMD^2, p, 0.05, p < 0.05). MMD^2 is the unbiased
    estimate (Gretton et al. 2012, eq. 3), whose mean is 0 where nothing moved: often a little
    negative there; the permutation p-value decides."""
    rng = np.random.default_rng(seed)
    x, y = (_subsample(a, MMD_ROWS, rng) for a in (reference, current))
    mean, std = x.mean(0), x.std(0)
    std = np.where(std > 0, std, 1.0)
    z = np.nan_to_num((np.concatenate([x, y]) - mean) / std).astype(np.float32)
    observed, permuted = _mmd_permutations(
        jnp.asarray(z), len(x), permutations, jax.random.key(seed)
    )
    observed, permuted = float(observed), np.asarray(permuted)
    p = float((1 + np.sum(permuted >= observed)) / (1 + permutations))
    return FeatureDrift("multivariate", "mmd", observed, p, ALPHA, rejects("mmd", p, ALPHA))


def _subsample(a: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray:
    return a if len(a) <= rows else a[np.sort(rng.choice(len(a), rows, replace=False))]


@functools.partial(jax.jit, static_argnums=(1, 2))
def _mmd_permutations(
    z: jax.Array, n: int, permutations: int, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(observed MMD^2, MMD^2 of `permutations` random relabellings) of the pooled rows `z`
    float32 [rows, F], the first `n` being the reference. One matrix product scores every
    labelling: with K0 the kernel matrix with a zero diagonal and a the reference indicator,
    the reference's sum is a'K0a, the current's b'K0b (b = 1 - a) and the cross sum a'K0b."""
    total = z.shape[0]
    m = total - n
    sq = jnp.sum(z * z, axis=1)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    off = ~jnp.eye(total, dtype=bool)
    median = jnp.nanmedian(jnp.where(off, d2, jnp.nan))
    kernel = jnp.where(off, jnp.exp(-d2 / jnp.maximum(median, 1e-12)), 0.0)
    labels = (jnp.arange(total) < n).astype(jnp.float32)
    keys = jax.random.split(key, permutations)
    shuffled = jax.vmap(lambda k: jax.random.permutation(k, labels))(keys)
    a = jnp.concatenate([labels[None], shuffled]).T  # [total, 1 + permutations]
    b = 1.0 - a
    ka, kb = kernel @ a, kernel @ b
    mmd2 = (
        jnp.sum(a * ka, 0) / (n * (n - 1))
        + jnp.sum(b * kb, 0) / (m * (m - 1))
        - 2 * jnp.sum(a * kb, 0) / (n * m)
    )
    return mmd2[0], mmd2[1:]
