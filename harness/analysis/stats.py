"""Small statistics the analysis needs.

* :func:`t_quantile` - Student's t quantile (scipy).
* :func:`fit_loglog` - ordinary least squares of log(y) on log(x) with a t-based interval.
* :func:`growth_class` - the growth of a structural quantity (sequential ops, path length)
  with n, as a Table-1 style class: "O(1)", "O(log n)", "O(n)".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import stdtrit


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (df may be fractional).

    ``scipy.special.stdtrit``, the function behind ``scipy.stats.t.ppf`` (scipy.stats itself
    takes half a second to import and fails where a test stubs torch out); arguments outside
    the domain raise instead of returning NaN. ``t_quantile(0.975, 5) == 2.5706...``.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    return float(stdtrit(df, p))


@dataclass(frozen=True)
class LogLogFit:
    """OLS of log(y) on log(x): y ~ exp(intercept) * x**slope."""

    slope: float
    intercept: float
    ci_low: float  # confidence interval of the slope (NaN with fewer than 3 points)
    ci_high: float
    ci_half_width: float
    r2: float  # 1.0 for an exact fit, NaN with fewer than 3 points
    n_points: int


def fit_loglog(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> LogLogFit:
    """Fit log(y) = a + b log(x) by least squares; the slope's interval uses t(n - 2).

    Raises ValueError on non-positive or non-finite values, or fewer than 2 distinct x.
    With 2 points the slope is exact but the interval and R^2 are NaN (no residual dof).
    R^2 is 1.0 when the residuals vanish, including the constant-y case (slope 0).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-D arrays of the same length")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))
            and np.all(x > 0) and np.all(y > 0)):
        raise ValueError("log-log fit needs finite, positive x and y")
    if len(np.unique(x)) < 2:
        raise ValueError("log-log fit needs at least 2 distinct x values")
    lx, ly = np.log(x), np.log(y)
    xm, ym = lx.mean(), ly.mean()
    sxx = float(np.sum((lx - xm) ** 2))
    slope = float(np.sum((lx - xm) * (ly - ym)) / sxx)
    intercept = float(ym - slope * xm)
    n = len(lx)
    if n < 3:
        return LogLogFit(slope, intercept, math.nan, math.nan, math.nan, math.nan, n)
    resid = ly - (intercept + slope * lx)
    ssr = float(np.sum(resid**2))
    sst = float(np.sum((ly - ym) ** 2))
    # residuals at rounding level count as an exact fit
    exact = ssr <= 1e-24 * max(sst, 1.0) * n
    r2 = 1.0 if exact or sst == 0 else 1.0 - ssr / sst
    se = 0.0 if exact else math.sqrt(ssr / (n - 2) / sxx)
    half = t_quantile(0.5 + level / 2.0, n - 2) * se
    return LogLogFit(slope, intercept, slope - half, slope + half, half, r2, n)


def loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """OLS log-log slope, or NaN where it is undefined (non-positive values, < 2 distinct x)."""
    try:
        return fit_loglog(x, y).slope
    except ValueError:
        return math.nan


def growth_class(n: np.ndarray, values: np.ndarray) -> str:
    """How ``values`` grow with ``n``, as a Table-1 class.

    Rules (documented because a report quotes them):

    * fewer than 2 distinct n with a value: "unknown" (growth is not visible at one n);
    * every value inf: "unbounded" (some pair is never connected); some inf: "mixed finite/inf";
    * all equal: "O(1)"; smaller at the largest n than at the smallest: "decreasing";
    * log-log slope above 1.5: "superlinear";
    * otherwise "O(n)" when the log-log slope is >= 0.6, else "O(log n)"; O(n/k) and O(n/r)
      are "O(n)" here. (A slope, not a fit of v against n vs log n: integer path lengths
      such as ceil(log_k n) are step functions that a straight line in n can fit better.)

    Two distinct n give a class here (a description of what was seen), but Table 1 judges a
    class only from three or more (harness.analysis.table1): with two it is inconclusive.
    """
    n = np.asarray(n, dtype=float)
    v = np.asarray(values, dtype=float)
    keep = np.isfinite(n) & ~np.isnan(v)
    n, v = n[keep], v[keep]
    if len(np.unique(n)) < 2:
        return "unknown"
    inf = np.isinf(v)
    if inf.all():
        return "unbounded"
    if inf.any():
        return "mixed finite/inf"
    if np.all(v == v[0]):
        return "O(1)"
    order = np.argsort(n, kind="stable")
    n, v = n[order], v[order]
    if v[n == n[-1]].mean() < v[n == n[0]].mean():
        return "decreasing"
    if np.any(n <= 0):
        raise ValueError("growth_class needs positive n")
    slope = loglog_slope(n, v)
    if slope > 1.5:
        return "superlinear"
    return "O(n)" if slope >= 0.6 else "O(log n)"
