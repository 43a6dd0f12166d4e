"""Generated multichannel sensor data: `sensor_series` (forecasting), `sensor_faults` (anomalies).

Numpy only, from fixed seeds; each builds in a few seconds. Both model a machine whose sensors
follow one daily-like cycle of PERIOD steps, each sensor with its own gain, phase lag and level,
so the channels are correlated but not copies of each other.

`sensor_series`: long series (SERIES_LEN steps, SERIES_CHANNELS channels). A shared latent
signal (the cycle: a fundamental plus a second harmonic, a per-series "day profile"; a piecewise
linear trend; AR(1) noise) drives every channel, which adds its own AR(1) and white noise.
Regime changes come at random times (on average every REGIME_EVERY steps): the level jumps, the
cycle's amplitude changes, its phase slips and the trend bends. Windows of HISTORY steps
(`history`) and the next HORIZON steps (`future`) are cut with a stride; `series` and `start`
say where from. `train` and `test` are cut from different series (different seeds), so no test
point was ever in a training window; `validation` is the last splits.VALIDATION_FRACTION of the
training series (cut with the test stride), so it shares no series with train either. The
seasonal period, which the seasonal-naive baseline needs, is the module constant PERIOD and
`info.metadata["period"]` (with `history`, `horizon`).

`sensor_faults`: independent windows of FAULT_WINDOW steps x FAULT_CHANNELS channels: the cycle
(its length jitters by 10% from window to window), a shared slow AR(1) wander, white noise of
std 0.08, and a fourth sensor whose response is nonlinear (saturating), so normal windows do not
lie in a linear subspace. `train` holds normal windows only; `validation` is the last
splits.VALIDATION_FRACTION of the training stream's windows with faults injected as in `test`
(from its own seed), to choose checkpoints on; `test` has about FAULT_RATE of its windows with
one injected fault in one channel, labelled "fault": a spike (+-0.6-1.0 on 1-3
steps), a level shift (0.35-0.6), a drift (a ramp to 0.5-0.9), a stuck sensor (a flat line of 16+
steps), a noise burst (noise 3-5x larger for 12-24 steps) or a broken correlation (one channel's
cycle slips by a quarter to half a period). Against a cycle of amplitude ~1 these are moderate:
fault windows stay within the normal range of values, and a detector has to model the shape and
the channels jointly (a PCA reconstruction-error detector on standardized windows reaches an
AUROC of about 0.92 with 16 components). The kind of each fault is not a feature;
`fault_kinds(windows)` recovers it (an index into FAULT_KINDS, 0 = none) for per-kind analysis.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from ann.data import splits

PERIOD = 24  # steps per "day": the seasonal period of both data sets

# sensor_series
HISTORY = 96
HORIZON = 24
SERIES_CHANNELS = 3
SERIES_LEN = 800
REGIME_EVERY = 300
SERIES_COUNT = {"train": 150, "test": 30}
STRIDE = {"train": 12, "validation": 24, "test": 24}  # validation's windows are cut as test's
SERIES_SEEDS = {"train": 100, "test": 200}
# split -> (series stream, series [first, stop) of it)
SERIES_ROWS = splits.stream_splits(SERIES_COUNT)

# sensor_faults
FAULT_WINDOW = 64
FAULT_CHANNELS = 4
FAULT_SIZES = {"train": 2_000, "test": 1_000}  # train: before carving validation
FAULT_SEEDS = {"train": 10, "test": 20, "validation": 30}  # validation's: its faults only
# split -> (window stream, windows [start, stop) of it)
FAULT_ROWS = splits.stream_splits(FAULT_SIZES)
FAULT_RATE = 0.18
FAULT_KINDS = ("none", "spike", "level_shift", "drift", "stuck", "noise_burst", "decorrelation")


def _ar1(rng: np.random.Generator, n: int, phi: float, scale: float, channels: int) -> np.ndarray:
    """(n, channels) AR(1) noise with stationary standard deviation `scale`."""
    shocks = rng.normal(0.0, scale * np.sqrt(1.0 - phi**2), (n, channels))
    shocks[0] = rng.normal(0.0, scale, channels)  # start in the stationary distribution
    # x[t] = phi^(t-t0+1) x[t0-1] + sum_{t0<=s<=t} phi^(t-s) shock[s], a block of 64 steps at a
    # time: small matrix products instead of a Python loop over every step.
    block = min(n, 64)
    lags = np.arange(block)[:, None] - np.arange(block)[None, :]
    kernel = np.tril(phi ** np.maximum(lags, 0))
    carry = phi ** np.arange(1, block + 1)[:, None]
    out = np.empty_like(shocks)
    last = np.zeros(channels)
    for t0 in range(0, n, block):
        m = min(block, n - t0)
        out[t0 : t0 + m] = kernel[:m, :m] @ shocks[t0 : t0 + m] + carry[:m] * last
        last = out[t0 + m - 1]
    return out


def generate_series(rng: np.random.Generator, length: int, channels: int) -> np.ndarray:
    """One (length, channels) float32 series with trend, seasonality, noise and regime changes."""
    t = np.arange(length, dtype=np.float64)
    # Regime boundaries: a Poisson process; each regime redraws level offsets, amplitude, phase
    # slip and trend slope, so the past period is not always a good guide to the next.
    n_changes = rng.poisson(length / REGIME_EVERY)
    cuts = np.sort(rng.integers(PERIOD, length - PERIOD, n_changes))
    regime = np.searchsorted(cuts, t, side="right")
    n_regimes = n_changes + 1
    amplitude = rng.uniform(0.6, 1.4, n_regimes)
    phase = np.cumsum(rng.uniform(-0.8, 0.8, n_regimes))  # radians, slips at each change
    slope = rng.normal(0.0, 1.5e-3, n_regimes)  # level units per step
    jump = np.cumsum(np.r_[0.0, rng.normal(0.0, 0.8, n_changes)])
    # Trend: continuous and piecewise linear (the slope changes at each regime boundary).
    trend = np.cumsum(slope[regime])
    # Seasonal shape: fundamental plus a second harmonic, a random "day profile" per series.
    h2, h2_phase = rng.uniform(0.2, 0.5), rng.uniform(0, 2 * np.pi)

    def cycle(shift: float) -> np.ndarray:
        angle = 2 * np.pi * t / PERIOD + phase[regime] + shift
        return amplitude[regime] * (np.sin(angle) + h2 * np.sin(2 * angle + h2_phase))

    latent_noise = _ar1(rng, length, 0.8, 0.25, 1)[:, 0]
    gain = rng.uniform(0.6, 1.6, channels) * rng.choice([-1.0, 1.0], channels)
    lag = rng.uniform(-0.6, 0.6, channels)  # each channel sees the cycle slightly shifted
    level = rng.normal(0.0, 2.0, channels)
    out = np.empty((length, channels))
    for c in range(channels):
        common = cycle(lag[c]) + trend + jump[regime] + latent_noise
        own = _ar1(rng, length, 0.5, 0.15, 1)[:, 0] + rng.normal(0.0, 0.15, length)
        out[:, c] = level[c] + gain[c] * common + own
    return out.astype(np.float32)


# One machine's sensor physics: the gains and lags are the same in every window, so the channels
# keep a stable relationship a model can learn (a fault breaks it); levels vary a little.
_GAIN = np.array([1.0, 0.8, -0.7, 0.5])
_LAG = np.array([0.0, 0.3, -0.5, 0.9])  # radians
_LEVEL = np.array([0.0, 1.0, -0.5, 2.0])
_NOISE = 0.08  # white measurement noise per channel


def _normal_window(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """One normal (FAULT_WINDOW, FAULT_CHANNELS) window and the parameters faults reuse."""
    n, c = FAULT_WINDOW, FAULT_CHANNELS
    t = np.arange(n, dtype=np.float64)[:, None]
    phase, amplitude = rng.uniform(0, 2 * np.pi), rng.uniform(0.7, 1.3)
    period = PERIOD * rng.uniform(0.9, 1.1)  # the "day" length jitters from window to window
    cycle = amplitude * np.sin(2 * np.pi * t / period + phase + _LAG)  # (n, c)
    # A shared operating point and slow AR(1) wander move every channel together.
    common = rng.normal(0.0, 0.4) + _ar1(rng, n, 0.8, 0.15, 1)
    signal = _GAIN * (cycle + common)
    # The last sensor saturates (a nonlinear response), so the normal windows do not lie in a
    # linear subspace and a linear detector is not enough.
    signal[:, 3] = _GAIN[3] * 1.2 * np.tanh((cycle[:, 3] + common[:, 0]) / 1.2) ** 2
    level = _LEVEL + rng.normal(0.0, 0.2, c)
    window = level + signal + rng.normal(0.0, _NOISE, (n, c))
    return window.astype(np.float32), {"phase": phase, "amplitude": amplitude, "period": period}


def _inject(
    rng: np.random.Generator, window: np.ndarray, parts: dict[str, float], kind: str
) -> np.ndarray:
    """`window` with one fault of `kind` in one channel (moderate sizes: see the docstring)."""
    n = FAULT_WINDOW
    out = window.astype(np.float64).copy()
    ch = int(rng.integers(FAULT_CHANNELS))
    sign = rng.choice([-1.0, 1.0])
    start = int(rng.integers(8, n - 16))
    if kind == "spike":  # one to three consecutive points, 0.6-1.0 (about 8-12 noise std)
        width = int(rng.integers(1, 4))
        out[start : start + width, ch] += sign * rng.uniform(0.6, 1.0)
    elif kind == "level_shift":  # a step of 0.35-0.6 that stays to the end
        out[start:, ch] += sign * rng.uniform(0.35, 0.6)
    elif kind == "drift":  # a ramp from `start` reaching 0.5-0.9 at the end of the window
        ramp = np.clip((np.arange(n) - start) / (n - start), 0.0, None)
        out[:, ch] += sign * rng.uniform(0.5, 0.9) * ramp
    elif kind == "stuck":  # the sensor repeats its last reading for 16+ steps
        length = int(rng.integers(16, n - start + 1))
        out[start : start + length, ch] = out[start, ch]
    elif kind == "noise_burst":  # noise 3-5x larger for 12-24 steps
        length = int(rng.integers(12, 25))
        extra = rng.normal(0.0, _NOISE * rng.uniform(3.0, 5.0), length)
        out[start : start + length, ch] += extra[: n - start]
    elif kind == "decorrelation":  # one channel's cycle slips by a quarter to half a period
        angle = 2 * np.pi * np.arange(n) / parts["period"] + parts["phase"] + _LAG[ch]
        slip = sign * rng.uniform(0.25, 0.5) * 2 * np.pi
        out[:, ch] += _GAIN[ch] * parts["amplitude"] * (np.sin(angle + slip) - np.sin(angle))
    else:
        raise ValueError(f"unknown fault kind {kind!r}")
    return out.astype(np.float32)


def fault_windows(split: str) -> Iterator[tuple[np.ndarray, int]]:
    """(window, fault kind) of each `sensor_faults` row of `split`, in order (kind 0 = normal)."""
    stream, start, stop = FAULT_ROWS[split]
    rng = np.random.default_rng(FAULT_SEEDS[stream])
    rate = FAULT_RATE if stream == "test" else 0.0  # the train stream is normal windows only
    # Validation's faults come from their own generator: the train stream stays as it was.
    faults = np.random.default_rng(FAULT_SEEDS["validation"]) if split == "validation" else rng
    for i in range(stop):
        window, parts = _normal_window(rng)
        kind = 0
        if rng.random() < rate:
            kind = 1 + int(rng.integers(len(FAULT_KINDS) - 1))
            window = _inject(rng, window, parts, FAULT_KINDS[kind])
        if i < start:
            continue
        if split == "validation" and faults.random() < FAULT_RATE:
            kind = 1 + int(faults.integers(len(FAULT_KINDS) - 1))
            window = _inject(faults, window, parts, FAULT_KINDS[kind])
        yield window, kind


def fault_kinds(windows: np.ndarray, split: str = "test") -> np.ndarray:
    """The fault kind (index into FAULT_KINDS, 0 = normal) of each row of `windows`, rows of
    `sensor_faults` split `split` in any order (TFDS stores them shuffled), matched by content
    against the regenerated split."""
    kinds = {window.tobytes(): kind for window, kind in fault_windows(split)}
    out = np.empty(len(windows), np.int64)
    for i, window in enumerate(np.asarray(windows, np.float32)):
        if window.tobytes() not in kinds:
            raise ValueError(f"row {i} is not a window of sensor_faults split {split!r}")
        out[i] = kinds[window.tobytes()]
    return out


class SensorSeries(tfds.core.GeneratorBasedBuilder):
    """Forecasting windows (history -> future) from generated multichannel sensor series."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "96-step history, 24-step future, 3 channels, period 24.",
        "1.1.0": "validation: the last 15% of the train series (stride 24); test unchanged.",
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "history": tfds.features.Tensor(
                        shape=(HISTORY, SERIES_CHANNELS), dtype=np.float32
                    ),
                    "future": tfds.features.Tensor(
                        shape=(HORIZON, SERIES_CHANNELS), dtype=np.float32
                    ),
                    "series": tfds.features.Scalar(dtype=np.int32),
                    "start": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            supervised_keys=("history", "future"),
            metadata=tfds.core.MetadataDict(period=PERIOD, history=HISTORY, horizon=HORIZON),
            description="Generated sensor series: trend, period-24 seasonality, regime changes.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # generated
        return {split: self._generate_examples(split) for split in SERIES_ROWS}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
        stream, first, stop = SERIES_ROWS[split]
        stride = STRIDE[split]
        rng = np.random.default_rng(SERIES_SEEDS[stream])
        key = 0
        for s in range(stop):
            series = generate_series(rng, SERIES_LEN, SERIES_CHANNELS)
            if s < first:
                continue  # the stream's series before this split's
            for start in range(0, SERIES_LEN - HISTORY - HORIZON + 1, stride):
                cut = start + HISTORY
                yield (
                    key,
                    {
                        "history": series[start:cut],
                        "future": series[cut : cut + HORIZON],
                        "series": s,
                        "start": start,
                    },
                )
                key += 1


class SensorFaults(tfds.core.GeneratorBasedBuilder):
    """Multichannel sensor windows; `test` has injected faults (anomaly detection)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "64x4 windows; six fault kinds in ~18% of test windows.",
        "1.1.0": "validation: the last 15% of the train windows, with faults injected as in "
        "test; test unchanged.",
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "window": tfds.features.Tensor(
                        shape=(FAULT_WINDOW, FAULT_CHANNELS), dtype=np.float32
                    ),
                    "label": tfds.features.ClassLabel(names=["normal", "fault"]),
                }
            ),
            supervised_keys=("window", "label"),
            metadata=tfds.core.MetadataDict(period=PERIOD, fault_rate=FAULT_RATE),
            description="Generated 4-channel sensor windows; test has injected faults.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # generated
        return {split: self._generate_examples(split) for split in FAULT_ROWS}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
        for i, (window, kind) in enumerate(fault_windows(split)):
            yield i, {"window": window, "label": int(kind > 0)}
