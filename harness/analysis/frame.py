"""Dataframe plumbing shared by the analysis functions: validation, the ok mask, numeric
columns, grouping with missing keys, and the tidy (long) view.

Every analysis function takes the results dataframe (harness.results: one row per case)
and returns a new dataframe; nothing here mutates its input.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness import schema
from harness.analysis.layers import family_of, layer_infos
from harness.results import PARAM_COLUMNS, to_long
from harness.values import missing, plain


def require(df: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    """Raise ValueError naming every missing column (what, where, how to fix)."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{where}: the results dataframe lacks column(s) {', '.join(missing)}; "
            "pass the dataframe from harness.results.read_results"
        )


def params_in(df: pd.DataFrame) -> list[str]:
    """The parameter columns this dataframe has, in PARAM_COLUMNS order."""
    return [c for c in PARAM_COLUMNS if c in df.columns]


def ok_mask(df: pd.DataFrame) -> pd.Series:
    """True where the case ran (status "ok"); only these rows are ever fitted."""
    return df["status"].astype(object).eq("ok").fillna(False).astype(bool)


#: Metrics read off the clock or derived from it: ``time_unreliable`` applies to these only
#: (FLOPs, memory and path length are not disturbed by a busy machine).
TIMED_METRICS = frozenset(c.name for c in schema.COLUMNS if c.timed)


def timed(metric: str) -> bool:
    """Whether ``metric`` is a timing (or derived from one), so unreliable rows must not count."""
    return metric in TIMED_METRICS or metric.startswith("time_ms")


def unreliable_mask(df: pd.DataFrame) -> pd.Series:
    """True where the row's timing was flagged unreliable (contention, throttling, spread).

    Missing values and a missing ``time_unreliable`` column count as reliable: there is
    nothing to exclude on, and failed rows carry no timing anyway.
    """
    if "time_unreliable" not in df.columns:
        return pd.Series(False, index=df.index, dtype=bool)
    flags = [not missing(v) and bool(v) for v in df["time_unreliable"].astype(object).tolist()]
    return pd.Series(flags, index=df.index, dtype=bool)


def time_notes(df: pd.DataFrame) -> pd.Series:
    """``time_note`` per row as text or None; None everywhere for files written before the
    column existed (they have ``time_unreliable`` but no reason)."""
    raw = df["time_note"].astype(object).tolist() if "time_note" in df.columns else \
        [None] * len(df)
    notes = [None if missing(v) or not str(v).strip() else str(v).strip() for v in raw]
    return pd.Series(notes, index=df.index, dtype=object)


def unreliable_phrase(count: int) -> str:
    """"2 unreliable points excluded" (empty for 0): the words every table and sentence uses."""
    if not count:
        return ""
    return f"{count} unreliable point{'s' if count != 1 else ''} excluded"


def numeric(df: pd.DataFrame, column: str) -> pd.Series:
    """``column`` as float64 (NaN where missing or not a number); all-NaN if absent."""
    if column not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[column].astype(object), errors="coerce").astype(float)


def group_positions(df: pd.DataFrame, keys: Sequence[str]) -> dict[tuple, np.ndarray]:
    """Row positions of each group of ``df`` by ``keys``, first-seen order.

    Plain-Python grouping on cleaned values: a missing value (None, NaN, pd.NA) is one
    group of its own, whatever the column's dtype.
    """
    keys = list(keys)
    columns = [[plain(v) for v in df[k].astype(object).tolist()] for k in keys]
    found: dict[tuple, list[int]] = {}
    for i, values in enumerate(zip(*columns, strict=True) if keys else [()] * len(df)):
        found.setdefault(values, []).append(i)
    return {k: np.asarray(v, dtype=int) for k, v in found.items()}


def groups(df: pd.DataFrame, keys: Sequence[str]) -> Iterator[tuple[dict[str, Any], pd.DataFrame]]:
    """Groups of ``df`` by ``keys`` as (key dict, sub-frame); see :func:`group_positions`."""
    keys = list(keys)
    for values, pos in group_positions(df, keys).items():
        yield dict(zip(keys, values, strict=True)), df.iloc[pos]


def describe(fixed: dict[str, Any], skip: Iterable[str] = ("layer", "variant")) -> str:
    """"d_model=512, heads=8, causal, batch=8" - the fixed parameters a number belongs to.

    Missing parameters and false flags are left out; a true flag is its bare name.
    """
    skipped = set(skip)
    parts = []
    for key, value in fixed.items():
        if key in skipped or missing(value):
            continue
        if isinstance(value, (bool, np.bool_)):
            if value:
                parts.append(key)
        elif isinstance(value, float) and value.is_integer():
            parts.append(f"{key}={int(value)}")
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts)


def restore_dtypes(out: pd.DataFrame, like: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """Give ``out``'s parameter columns the dtypes they had in the input where possible."""
    for column in columns:
        if column in out.columns and column in like.columns:
            with contextlib.suppress(TypeError, ValueError):
                out[column] = out[column].astype(like[column].dtype)
    return out


def fmt_num(value: float, digits: int = 3) -> str:
    """A number for a sentence: integers exactly (65536 -> "65536"), others to ``digits``
    significant digits without exponent notation from 1e-3 to 1e15 (1019.6 -> "1020",
    92.77 -> "92.8")."""
    if missing(value):
        return "n/a"
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    rounded = float(f"{value:.{digits}g}")
    if rounded.is_integer() and abs(rounded) < 1e15:
        return str(int(rounded))
    if 1e-3 <= abs(rounded) < 1e15:
        return f"{rounded:f}".rstrip("0").rstrip(".")
    return f"{rounded:g}"


def tidy(df: pd.DataFrame, metrics: Iterable[str] | None = None, *,
         ok_only: bool = False) -> pd.DataFrame:
    """The long view for seaborn: one row per (case, metric), plus a ``family`` column.

    ``harness.results.to_long`` does the melting (every numeric metric by default);
    ``ok_only`` keeps only cases that ran. Example:
    ``sns.lineplot(data=tidy(df, ["time_ms_median"]), x="seq_len", y="value", hue="layer")``.
    """
    require(df, ("status", "layer"), "tidy")
    frame = df[ok_mask(df)] if ok_only else df
    long = to_long(frame, metrics)
    infos = layer_infos(frame)
    long.insert(long.columns.get_loc("layer"), "family",
                long["layer"].map(lambda layer: family_of(infos, layer)))
    return long
