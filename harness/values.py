"""Missing, numeric and plain cell values, one definition for results, analysis, reports,
bench and the machine readers.

Imports neither numpy nor pandas (the pytest plugin imports this in every session): a numpy
scalar, pd.NA or pd.NaT can only exist once its library is imported, so they are looked up
in ``sys.modules``.
"""

from __future__ import annotations

import math
import sys
from typing import Any


def missing(value: Any) -> bool:
    """None, NaN (Python or numpy float), pd.NA and pd.NaT are all "not recorded"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.floating):
        return bool(np.isnan(value))
    pd = sys.modules.get("pandas")
    return pd is not None and (value is pd.NA or value is pd.NaT)


def number(value: Any) -> float | None:
    """A finite number from a cell or text, else None (missing, not a number, NaN, inf)."""
    if missing(value):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def count(value: Any) -> int:
    """A count from a table cell; missing (a table from before the column existed) is 0."""
    return 0 if missing(value) else int(value)


def plain(value: Any) -> Any:
    """A cell value as plain Python: numpy scalars unwrapped, missing as None."""
    if missing(value):
        return None
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.generic):
        return value.item()
    return value
