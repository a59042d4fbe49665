"""Step detection in a benchmark's history: an L1 piecewise-constant fit with a penalty.

The model is the one airspeed velocity (asv) uses to find the commit where a benchmark
changed: the series ``y`` (here: log of the per-run median time, so a step is a relative
change) is approximated by a piecewise-constant function, choosing the segments that
minimise

    sum over segments S of  sum_{i in S} |y_i - median(y_S)|   +   beta * (number of steps)

(a Potts model with an absolute-deviation cost: robust to single outliers, unlike least
squares). asv solves it approximately; a history is short (tens to hundreds of runs), so
here it is solved exactly by dynamic programming over segment ends ("optimal
partitioning", Jackson et al. 2005), O(n^2) segment costs.

``beta`` defaults to ``gamma * ln(n) * sigma`` where ``sigma`` is a robust noise scale of
``y`` - ``1.4826 * median(|y_{i+1} - y_i|) / sqrt(2)``: first differences are blind to
the steps themselves, the MAD to outliers - floored at ``min_sigma`` (1 %) so that a
near-constant series is not cut at every wobble. Each segment holds at least
``min_size`` runs (default 2): one slow run is an outlier until the next run confirms it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Step:
    index: int  # first run of the new level
    before: float  # level (median of the segment) before, in the series' units
    after: float  # level after

    @property
    def change(self) -> float:
        """Relative change of the original (exp) values: after / before - 1."""
        return math.exp(self.after - self.before) - 1.0


def noise_scale(y: Sequence[float] | np.ndarray, min_sigma: float = 0.01) -> float:
    """Robust noise scale of a series from its first differences (see module docstring)."""
    values = np.asarray(y, dtype=float)
    if values.size < 3:
        return min_sigma
    diffs = np.abs(np.diff(values))
    return max(float(1.4826 * np.median(diffs) / math.sqrt(2.0)), min_sigma)


def default_penalty(y: Sequence[float] | np.ndarray, gamma: float = 2.0,
                    min_sigma: float = 0.01) -> float:
    n = max(len(y), 2)
    return gamma * math.log(n) * noise_scale(y, min_sigma)


def segment_cost(values: np.ndarray) -> float:
    return float(np.abs(values - np.median(values)).sum())


def fit_segments(y: Sequence[float] | np.ndarray, penalty: float | None = None,
                 min_size: int = 2) -> list[int]:
    """Start indices of the optimal segments (always begins with 0)."""
    values = np.asarray(y, dtype=float)
    n = values.size
    if n == 0:
        return []
    if not np.all(np.isfinite(values)):
        raise ValueError("the series holds a missing or infinite value")
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    beta = default_penalty(values) if penalty is None else float(penalty)
    if beta < 0:
        raise ValueError(f"penalty must be >= 0, got {beta}")
    best = np.full(n + 1, math.inf)  # best[j]: optimal cost of values[:j]
    best[0] = -beta  # the first segment is not a step
    start = np.zeros(n + 1, dtype=int)
    for j in range(1, n + 1):
        for i in range(0, j - min_size + 1):
            if not math.isfinite(best[i]):
                continue
            cost = best[i] + segment_cost(values[i:j]) + beta
            if cost < best[j]:
                best[j], start[j] = cost, i
    if not math.isfinite(best[n]):  # the series is shorter than min_size: one segment
        return [0]
    starts = []
    j = n
    while j > 0:
        starts.append(int(start[j]))
        j = int(start[j])
    return sorted(starts)


def find_steps(y: Sequence[float], penalty: float | None = None, min_size: int = 2
               ) -> list[Step]:
    """The steps between consecutive fitted segments, in order."""
    values = np.asarray(y, dtype=float)
    starts = fit_segments(values, penalty, min_size)
    bounds = [*starts, values.size]
    levels = [float(np.median(values[a:b])) for a, b in itertools.pairwise(bounds)]
    return [Step(index=starts[k], before=levels[k - 1], after=levels[k])
            for k in range(1, len(starts))]
