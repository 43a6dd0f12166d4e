"""Calibration: do predicted probabilities mean what they say? Metrics and temperature scaling.

Inputs everywhere: `probabilities` float [rows, classes] (each row a distribution over at least
2 classes; binary = 2 columns) and `labels` integer [rows] in [0, classes). Results are Python
floats (or numpy arrays for the per-bin data), computed in float64.

- `ece`, `mce`: expected / maximum calibration error of the top-class confidence over
  `BINS` = 15 equal-width bins (Naeini et al. 2015, "Obtaining Well Calibrated Probabilities
  Using Bayesian Binning"; 15 bins as in Guo et al. 2017, "On Calibration of Modern Neural
  Networks"). Bins are (lo, hi], with a confidence of exactly 0 in the first bin and of exactly 1
  in the last (a saturated float32 softmax gives 1.0 routinely), as scikit-learn's
  `calibration_curve(strategy="uniform")` bins.
- `classwise_ece`: the ECE of every class's own probability against "the label is that class",
  averaged over classes (Kull et al. 2019, "Beyond temperature scaling", classwise-ECE).
- `brier`: Brier (1950): the mean over rows of the summed squared difference between the
  probabilities and the one-hot label (range [0, 2]); for 2 classes, scikit-learn's binary
  `brier_score_loss` (class 1's probability against the 0/1 label, range [0, 1]), i.e. half of
  the multiclass formula. Both as `sklearn.metrics.brier_score_loss(scale_by_half="auto")`.
- `nll`: mean negative log-likelihood of the label, in nats (probabilities clipped below at the
  input dtype's machine epsilon, as scikit-learn's `log_loss`).
- `reliability`: the per-bin data of a reliability diagram (counts, mean confidence, accuracy,
  edges) for the top class or for one class.
- `fit_temperature`: temperature scaling (Guo et al. 2017): the one T > 0 that minimises the
  NLL of softmax(logits / T) on held-out rows; the predicted class never changes.
- `ece_change_interval`: a paired bootstrap interval of what a temperature did to the ECE, so a
  rise within the ECE's sampling noise is not taken for one.

Bad input (wrong shapes, one class, labels outside the columns, rows that are not
distributions, a class without rows where a per-class average needs it) raises ValueError with
one line naming the problem, never a NaN result.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import optimize, special, stats

BINS = 15  # Guo et al. 2017 use 15 bins
# ece_change_interval's resamples: over 8 seeds on 500 rows the interval's ends varied by a
# standard deviation of 0.0009-0.0011 at 2,000 (0.0013-0.0015 at 1,000), about 0.1 s a call.
BOOTSTRAP_RESAMPLES = 2_000
SUM_TOLERANCE = 1e-3  # |row sum - 1| of a probability row (float32 softmax is within ~1e-6)
# Bounds of the temperature search: T in [1/100, 100] covers any useful rescaling; a fit that
# ends on a bound did not find an optimum (e.g. a validation split with every row right).
TEMPERATURE_BOUNDS = (0.01, 100.0)


EVERY_ROW_RIGHT = "every row is already right"  # a fit's `short` where NLL falls as T -> 0


class CalibrationError(ValueError):
    """Inputs calibration cannot use, or a temperature fit without an optimum (one line).
    `short`: the reason in a few words, for a summary line (the message itself where none is
    given; a fit without an optimum gives "every row is already right", where the message
    says which way the NLL goes and where)."""

    def __init__(self, message: str, short: str | None = None):
        super().__init__(message)
        self.short = short or message


def _labels(labels: Any, rows: int, classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (rows,):
        raise CalibrationError(f"labels have shape {labels.shape}; expected ({rows},), one a row")
    if not np.issubdtype(labels.dtype, np.integer):
        raise CalibrationError(f"labels must be integers (class indices), not {labels.dtype}")
    if rows and (labels.min() < 0 or labels.max() >= classes):
        raise CalibrationError(
            f"labels must be class indices in [0, {classes}) (one per probability column); "
            f"got values in [{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int64)


def _scores(values: Any, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 2:
        raise CalibrationError(f"{what} have shape {values.shape}; expected (rows, classes)")
    if values.shape[1] < 2:
        raise CalibrationError(
            f"{what} have {values.shape[1]} class column(s); calibration needs at least 2 "
            "classes (binary: give both columns, [1 - p, p])"
        )
    if values.shape[0] == 0:
        raise CalibrationError(f"{what} have no rows; calibration needs at least one")
    if not np.issubdtype(values.dtype, np.floating):
        raise CalibrationError(f"{what} must be floating point, not {values.dtype}")
    if not np.all(np.isfinite(values)):
        raise CalibrationError(f"{what} contain NaN or infinite values")
    return values


def check(probabilities: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated (probabilities float64 [rows, classes], labels int64 [rows]).

    Raises CalibrationError (a ValueError) for a shape other than [rows, classes >= 2], no rows,
    non-float or non-finite probabilities, values outside [0, 1], a row that does not sum to 1
    (within SUM_TOLERANCE), or labels that are not integers in [0, classes)."""
    p = _scores(probabilities, "probabilities")
    if p.min() < 0 or p.max() > 1:
        raise CalibrationError(
            f"probabilities must lie in [0, 1]; got values in [{p.min():g}, {p.max():g}] "
            "(logits? apply a softmax first)"
        )
    sums = p.sum(axis=1, dtype=np.float64)
    worst = int(np.argmax(np.abs(sums - 1)))
    if abs(sums[worst] - 1) > SUM_TOLERANCE:
        raise CalibrationError(
            f"probability row {worst} sums to {sums[worst]:.6g}, not 1; each row must be a "
            "distribution over the classes"
        )
    return p.astype(np.float64), _labels(labels, p.shape[0], p.shape[1])


@dataclasses.dataclass(frozen=True)
class Reliability:
    """Reliability-diagram data over `bins` equal-width bins of [0, 1], bins (lo, hi].

    edges: float64 [bins + 1]; counts: int64 [bins] rows per bin; confidence: float64 [bins]
    mean predicted probability in the bin; accuracy: float64 [bins] fraction of the bin's rows
    whose label is the predicted (top) class, or is `class_index`. Empty bins have NaN
    confidence and accuracy (nothing to plot); `to_json` writes them as null."""

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    class_index: int | None  # None: the top class of each row

    @property
    def gaps(self) -> np.ndarray:
        """|accuracy - confidence| per bin, 0 for empty bins; float64 [bins]."""
        return np.where(self.counts > 0, np.abs(self.accuracy - self.confidence), 0.0)

    @property
    def ece(self) -> float:
        """Expected calibration error: the bins' gaps weighted by their share of rows."""
        return float(np.sum(self.counts / self.counts.sum() * self.gaps))

    @property
    def mce(self) -> float:
        """Maximum calibration error: the largest gap of a non-empty bin."""
        return float(self.gaps.max())

    def to_json(self) -> dict[str, Any]:
        """JSON-able lists; NaN (empty bins) becomes None."""

        def clean(a: np.ndarray) -> list:
            return [None if math.isnan(v) else float(v) for v in a.tolist()]

        return {
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
            "confidence": clean(self.confidence),
            "accuracy": clean(self.accuracy),
            "class_index": self.class_index,
        }


def _bin(scores: np.ndarray, hits: np.ndarray, bins: int, class_index: int | None) -> Reliability:
    edges = np.linspace(0.0, 1.0, bins + 1)
    # searchsorted's "left" side puts a score equal to an inner edge in the bin below: (lo, hi];
    # 0 lands in bin 0 and 1 in the last bin (scikit-learn's calibration_curve does the same).
    index = np.searchsorted(edges[1:-1], scores, side="left")
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=scores, minlength=bins) / counts
        accuracy = np.bincount(index, weights=hits, minlength=bins) / counts
    return Reliability(edges, counts.astype(np.int64), confidence, accuracy, class_index)


def reliability(
    probabilities: Any, labels: Any, bins: int = BINS, class_index: int | None = None
) -> Reliability:
    """Reliability-diagram data: per bin of the top-class confidence (or of class
    `class_index`'s probability), the row count, mean confidence and accuracy; see Reliability.

    probabilities float [rows, classes], labels int [rows]; raises CalibrationError on bad
    input (see `check`) or a `class_index` outside the columns."""
    p, y = check(probabilities, labels)
    if not isinstance(bins, int) or bins < 1:
        raise CalibrationError(f"bins={bins!r} must be a positive integer")
    if class_index is None:
        return _bin(p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64), bins, None)
    if not 0 <= class_index < p.shape[1]:
        raise CalibrationError(f"class_index={class_index} is not a column of {p.shape[1]}")
    return _bin(p[:, class_index], (y == class_index).astype(np.float64), bins, class_index)


def ece(probabilities: Any, labels: Any, bins: int = BINS) -> float:
    """Expected calibration error of the top-class confidence (Naeini et al. 2015; Guo et al.
    2017, eq. 3): sum over bins of |B|/rows * |accuracy(B) - confidence(B)|, in [0, 1]."""
    return reliability(probabilities, labels, bins).ece


def mce(probabilities: Any, labels: Any, bins: int = BINS) -> float:
    """Maximum calibration error (Naeini et al. 2015; Guo et al. 2017, eq. 5): the largest
    |accuracy(B) - confidence(B)| over non-empty bins, in [0, 1]."""
    return reliability(probabilities, labels, bins).mce


def classwise_ece(probabilities: Any, labels: Any, bins: int = BINS) -> float:
    """Class-wise ECE (Kull et al. 2019): the mean over classes c of the ECE of column c's
    probability against [label == c], each over all rows, in [0, 1].

    Raises CalibrationError when a class has no rows: its term would say only how close to 0
    the model keeps that class's probability, and the average would silently mix it in."""
    p, y = check(probabilities, labels)
    absent = np.setdiff1d(np.arange(p.shape[1]), y)
    if absent.size:
        raise CalibrationError(
            f"class-wise ECE averages over the {p.shape[1]} classes, but class"
            f"{'es' * (absent.size > 1)} {', '.join(map(str, absent.tolist()))} "
            f"{'has' if absent.size == 1 else 'have'} no rows here; use a split with every class, "
            "or the top-class ece()"
        )
    return float(np.mean([reliability(p, y, bins, c).ece for c in range(p.shape[1])]))


def brier(probabilities: Any, labels: Any) -> float:
    """Brier score (Brier 1950). Several classes: mean over rows of sum_c (p_c - [y = c])^2,
    in [0, 2]. Two classes: mean of (p_1 - y)^2, in [0, 1] (scikit-learn's binary
    `brier_score_loss`: half the multiclass formula). Lower is better."""
    p, y = check(probabilities, labels)
    if p.shape[1] == 2:
        return float(np.mean((p[:, 1] - y) ** 2))
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def nll(probabilities: Any, labels: Any) -> float:
    """Mean negative log-likelihood of the labels in nats: -mean(log p[row, label]), with p
    clipped below at the input dtype's machine epsilon (as scikit-learn's `log_loss`, so a
    probability of exactly 0 costs ~16 nats in float32, not infinity)."""
    eps = np.finfo(np.asarray(probabilities).dtype).eps
    p, y = check(probabilities, labels)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], eps, 1.0))))


def summary(probabilities: Any, labels: Any, bins: int = BINS) -> dict[str, float]:
    """ECE, MCE, Brier and NLL of one split: {"ece", "mce", "brier", "nll"} floats."""
    r = reliability(probabilities, labels, bins)
    return {
        "ece": r.ece,
        "mce": r.mce,
        "brier": brier(probabilities, labels),
        "nll": nll(probabilities, labels),
    }


# --- temperature scaling ---------------------------------------------------------------------


def check_logits(logits: Any) -> np.ndarray:
    """Validated logits float64 [rows, classes >= 2]. Raises CalibrationError when every row is
    non-negative and sums to 1 (within SUM_TOLERANCE): those are probabilities, and scaling them
    as logits would fit a meaningless temperature."""
    z = _scores(logits, "logits")
    sums = z.sum(axis=1, dtype=np.float64)
    if np.all(z >= 0) and np.all(np.abs(sums - 1) <= SUM_TOLERANCE):
        raise CalibrationError(
            "logits look like probabilities (every row non-negative and summing to 1); "
            "temperature scaling needs the pre-softmax logits"
        )
    return z.astype(np.float64)


def scaled_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean NLL in nats of softmax(logits / temperature) (log-softmax: exact for any logits)."""
    log_p = special.log_softmax(logits / temperature, axis=1)
    return float(-np.mean(log_p[np.arange(len(labels)), labels]))


def softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) over the last axis, float64 (scipy.special.softmax)."""
    return special.softmax(np.asarray(logits, np.float64) / temperature, axis=-1)


def fit_temperature(logits: Any, labels: Any, tolerance: float = 1e-6) -> float:
    """Temperature scaling (Guo et al. 2017, section 4.2): the T > 0 minimising the mean NLL of
    softmax(logits / T) against `labels`, found by a bounded scalar search over log T
    (scipy.optimize.minimize_scalar, method="bounded", T in TEMPERATURE_BOUNDS): T > 0 by
    construction, and dividing by T never changes a row's argmax.

    logits float [rows, classes >= 2] (pre-softmax), labels int [rows] with at least 2 distinct
    classes. Returns T as a float. Raises CalibrationError for bad input, probabilities given as
    logits (see `check_logits`), a search that did not converge, or an optimum on a bound of
    TEMPERATURE_BOUNDS (no interior optimum: every row already right, where NLL falls without
    end as T -> 0; or logits no better than chance, where it falls as T -> infinity)."""
    z = check_logits(logits)
    y = _labels(labels, z.shape[0], z.shape[1])
    if np.unique(y).size < 2:
        raise CalibrationError(
            "temperature scaling needs labels of at least 2 classes; "
            + (f"all {len(y)} rows are" if len(y) > 1 else "its one row is")
            + f" class {y[0]}"
        )
    lo, hi = np.log(TEMPERATURE_BOUNDS)

    def objective(log_t: float) -> float:
        return scaled_nll(z, y, float(np.exp(log_t)))

    result = optimize.minimize_scalar(
        objective, bounds=(lo, hi), method="bounded", options={"xatol": tolerance}
    )
    if not result.success:
        raise CalibrationError(f"temperature search did not converge: {result.message}")
    # An interior optimum is strictly below both ends; a flat or falling end (the NLL of a
    # split with every row right underflows to 0 as T -> 0) means there is none.
    if min(objective(lo), objective(hi)) <= result.fun or min(result.x - lo, hi - result.x) < 1e-3:
        # Which end says why: at the small one the logits are never too sharp (every row right);
        # at the large one any sharpness costs, so uniform probabilities beat the model's.
        low, high = TEMPERATURE_BOUNDS
        inside = f"no temperature minimises the NLL inside T in {low:g}..{high:g}: it falls as T"
        if objective(lo) <= objective(hi):
            # The search stops anywhere on a flat stretch: with every row right by a margin,
            # each row's probability of its label rounds to 1 below some T and the NLL to 0
            # (it said "stopped at T=0.088", a T inside the range, as if that were the fault).
            floor = min(result.fun, objective(lo)) + 0.0  # + 0.0: -0.0 printed as "-0"
            if floor == 0 and result.x - lo >= 1e-3:
                where = (
                    f"falls, to {floor:.3g} nats already at T={np.exp(result.x):.3g} (float64 "
                    f"rounds each row's probability of its label to 1), no lower down to {low:g}"
                )
            else:
                where = f"falls, to {floor:.3g} nats at T={low:g}, the range's low end"
            why = "every row is already right, so sharper is always better"
            short = EVERY_ROW_RIGHT
        else:
            where = f"rises, to {objective(hi):.3g} nats at T={high:g}, the range's high end"
            why = (
                "the model's ranking of the classes is no better than chance on this split (a "
                "collapsed or untrained model), so uniform probabilities are best"
            )
            short = "the model ranks the classes no better than chance"
        raise CalibrationError(f"{inside} {where}: {why}", short)
    return float(np.exp(result.x))


def ece_change_interval(
    logits: Any,
    labels: Any,
    temperature: float,
    bins: int = BINS,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """(low, high): a `confidence` percentile bootstrap interval of ECE(softmax(logits / T)) -
    ECE(softmax(logits)), rows resampled with replacement jointly for both (a paired bootstrap:
    scipy.stats.bootstrap, `paired=True`, BOOTSTRAP_RESAMPLES resamples, seeded by `seed`, so
    the same inputs give the same interval). Both ECEs bin the top-class confidence; the hits
    are the same for both since T never changes a row's argmax. An interval above 0: the
    temperature raised the ECE beyond the ECE's own sampling noise on these rows.

    logits float [rows, classes >= 2], labels int [rows]; raises CalibrationError on bad input
    (see `check_logits`) or fewer than 2 rows."""
    z = check_logits(logits)
    y = _labels(labels, z.shape[0], z.shape[1])
    if len(y) < 2:
        raise CalibrationError(f"a bootstrap interval needs at least 2 rows, not {len(y)}")
    before = softmax(z).max(axis=1)
    after = softmax(z, temperature).max(axis=1)
    hits = (z.argmax(axis=1) == y).astype(np.float64)

    def change(b: np.ndarray, a: np.ndarray, h: np.ndarray) -> float:
        return _bin(a, h, bins, None).ece - _bin(b, h, bins, None).ece

    result = stats.bootstrap(
        (before, after, hits),
        change,
        paired=True,
        vectorized=False,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)
