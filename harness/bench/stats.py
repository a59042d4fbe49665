"""The statistics behind a verdict: a ratio of medians and its confidence interval, and the
exact runs test (docs/ci.md, "Time: what counts as slower").

A side's statistic is the lowest of its passes' medians (:func:`location`: interference only
slows a pass down). With raw samples on both sides the interval is a percentile bootstrap
(each pass resampled separately, fixed seed, passes above ``max_n`` samples subsampled);
with summary statistics only, a normal approximation on the log scale from the standard
error of a median (``1.2533 * sigma / sqrt(n)``, ``sigma = IQR / 1.349`` or the standard
deviation), which :mod:`harness.bench.compare` makes conservative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RatioCI:
    """candidate / baseline of a location statistic, with a two-sided interval."""

    ratio: float
    low: float
    high: float
    level: float
    method: str  # "bootstrap" or "stats-only"

    def excludes_one(self) -> bool:
        return self.low > 1.0 or self.high < 1.0


def z_value(level: float) -> float:
    """Two-sided normal quantile for ``level`` (1.959964 for 0.95)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    return NormalDist().inv_cdf(0.5 + level / 2)


def as_passes(values: Any, side: str) -> list[np.ndarray]:
    """One array of samples, or a sequence of them (one per pass), as a list of arrays."""
    if isinstance(values, np.ndarray) and values.ndim == 1:
        groups = [values]
    elif isinstance(values, (list, tuple)) and values and all(np.ndim(v) == 0 for v in values):
        groups = [np.asarray(values, dtype=float)]
    else:
        groups = [np.asarray(v, dtype=float).ravel() for v in values]
    if not groups or any(g.size == 0 for g in groups):
        raise ValueError(f"{side}: no samples")
    for g in groups:
        if not np.all(np.isfinite(g)) or np.any(g < 0):
            raise ValueError(f"{side}: samples must be finite and >= 0")
    return groups


def location(passes: Sequence[np.ndarray]) -> float:
    """The statistic of a side: the lowest median over its passes (the median, for one)."""
    return float(min(np.median(p) for p in passes))


def bootstrap_ratio(
    baseline: Any,
    candidate: Any,
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    max_n: int = 4000,
) -> RatioCI:
    """candidate / baseline of :func:`location`, with a percentile-bootstrap interval.

    Each side is an array of per-call seconds, or a sequence of such arrays (one per pass).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    if n_boot < 100:
        raise ValueError(f"n_boot must be >= 100, got {n_boot}")
    base = as_passes(baseline, "baseline")
    cand = as_passes(candidate, "candidate")
    base_loc, cand_loc = location(base), location(cand)
    if base_loc <= 0:
        raise ValueError("baseline median is 0: no ratio")
    rng = np.random.default_rng(seed)
    base_boot = np.min([_boot_medians(_thin(p, max_n, rng), n_boot, rng) for p in base], axis=0)
    cand_boot = np.min([_boot_medians(_thin(p, max_n, rng), n_boot, rng) for p in cand], axis=0)
    ratios = cand_boot / np.maximum(base_boot, np.finfo(float).tiny)
    alpha = (1.0 - level) / 2
    low, high = np.quantile(ratios, [alpha, 1.0 - alpha])
    return RatioCI(cand_loc / base_loc, float(low), float(high), level, "bootstrap")


def _thin(values: np.ndarray, max_n: int, rng: np.random.Generator) -> np.ndarray:
    if values.size <= max_n:
        return values
    return rng.choice(values, size=max_n, replace=False)


def _boot_medians(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty(n_boot)
    chunk = max(1, 2_000_000 // values.size)  # bound the (chunk, n) index array's memory
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, values.size, size=(stop - start, values.size))
        out[start:stop] = np.median(values[idx], axis=1)
    return out


def median_se(median: float, count: int, iqr: float | None, stddev: float | None) -> float:
    """Approximate standard error of a sample median from summary statistics."""
    if count < 1:
        raise ValueError("no samples behind the statistics")
    if iqr is not None and iqr > 0:
        sigma = iqr / 1.349
    elif stddev is not None and stddev > 0:
        sigma = stddev
    else:
        sigma = 0.0
    return 1.2533 * sigma / math.sqrt(count)


def summary_ratio(
    base_median: float, base_se: float, cand_median: float, cand_se: float,
    *, level: float = 0.95,
) -> RatioCI:
    """Ratio of medians with a log-normal-approximation interval from standard errors."""
    if base_median <= 0 or cand_median <= 0:
        raise ValueError("medians must be > 0 for a ratio")
    z = z_value(level)
    log_ratio = math.log(cand_median / base_median)
    se = math.hypot(base_se / base_median, cand_se / cand_median)
    return RatioCI(
        math.exp(log_ratio), math.exp(log_ratio - z * se), math.exp(log_ratio + z * se),
        level, "stats-only",
    )



def fastest_run_p(baseline: Sequence[float], candidate: Sequence[float]) -> float:
    """Exact one-sided p-value that the candidate's fastest run is slower by chance.

    The values are the fastest call of each run (pass) of each side. Under the null
    hypothesis the runs of both sides are exchangeable: every way of dealing the pooled
    ``m + n`` values into a baseline and a candidate group is equally likely. The statistic
    is the candidate's fastest value; it is at least as large as observed exactly when all
    ``n`` candidate values come from the ``k`` pooled values at or above it, so

        p = C(k, n) / C(m + n, n).

    A baseline run that a burst of load made slower than the candidate's fastest run raises
    ``k`` by one - the test tolerates disturbed runs up to what the p-value allows: with
    three runs a side, none (p = 1/20); with five, one (p = 6/252 = 0.024).
    """
    m, n = len(baseline), len(candidate)
    if m == 0 or n == 0:
        raise ValueError("the test needs runs on both sides")
    fastest = min(candidate)
    k = n + sum(1 for b in baseline if b >= fastest)
    return math.comb(k, n) / math.comb(m + n, n)
