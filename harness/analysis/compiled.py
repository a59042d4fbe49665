"""Compiled against eager: each compiled case beside the same case run eager.

A case with ``compile`` true is paired with the row that has every other parameter equal
(layer, variant, sizes, flags, dtype, device, mode, seed) and ``compile`` false. The ratio
is compiled median / eager median (below 1: compiling made the call faster).
"""

from __future__ import annotations

import pandas as pd

from harness import schema
from harness.analysis.frame import ok_mask, params_in, require, unreliable_mask

#: Columns of :func:`compile_pairs`.
PAIR_COLUMNS = ("layer", "variant", "case", "eager_ms", "compiled_ms", "ratio", "compile_s",
                "compile_graphs", "recompiles", "unreliable", "status", "message")


def _compiled(df: pd.DataFrame) -> pd.Series:
    return df["compile"].astype(object).eq(True).fillna(False).astype(bool)


def compile_pairs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per compiled case (ok or failed): its eager twin's median, its own, the ratio,
    the compile time and recompiles; ``unreliable`` when either time is flagged; a failed
    compiled case keeps its ``status`` and ``message`` with no times."""
    require(df, ("layer", "variant", "status", "time_ms_median"), "compile_pairs")
    if "compile" not in df.columns or not _compiled(df).any():
        return pd.DataFrame(columns=list(PAIR_COLUMNS))
    keys = [p for p in params_in(df) if p != "compile"]
    shown = [a.name for a in schema.AXES if a.kind == "size" and a.name in df.columns]
    modes = df["mode"].nunique() > 1 if "mode" in df.columns else False
    eager = df[~_compiled(df) & ok_mask(df)]
    eager_by_key = {_key(row, keys): row for _, row in eager.iterrows()}
    flagged = unreliable_mask(df)
    rows = []
    for index, row in df[_compiled(df)].iterrows():
        twin = eager_by_key.get(_key(row, keys))
        ok = row["status"] == "ok"
        compiled_ms = float(row["time_ms_median"]) if ok else None
        eager_ms = float(twin["time_ms_median"]) if twin is not None else None
        ratio = compiled_ms / eager_ms if compiled_ms is not None and eager_ms else None
        rows.append({
            "layer": row["layer"], "variant": row["variant"],
            "case": " ".join([*(f"{schema.axis(a).symbol}={_plain(row[a])}" for a in shown
                                if not pd.isna(row[a])), *([str(row["mode"])] if modes else [])]),
            "eager_ms": eager_ms, "compiled_ms": compiled_ms, "ratio": ratio,
            "compile_s": row.get("compile_s"), "compile_graphs": row.get("compile_graphs"),
            "recompiles": row.get("compile_recompiles"),
            "unreliable": bool(flagged.loc[index]) or (
                twin is not None and bool(flagged.loc[twin.name])),
            "status": row["status"], "message": row.get("message") or "",
        })
    return pd.DataFrame(rows, columns=list(PAIR_COLUMNS))


def _key(row: pd.Series, keys: list[str]) -> tuple[object, ...]:
    return tuple(None if pd.isna(row[k]) else _plain(row[k]) for k in keys)


def _plain(value: object) -> object:
    """A numpy scalar as Python's; a whole float (a size in a column with gaps) as an int."""
    value = value.item() if hasattr(value, "item") else value
    return int(value) if isinstance(value, float) and value.is_integer() else value
