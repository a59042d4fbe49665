"""What the analyses know about each layer, read from the results dataframe (no torch).

Every results row carries its layer's family and Table-1 theory (harness.theory.
THEORY_COLUMNS, written at measurement time from the layer's registry entry), so a report
is rebuilt from a results file alone. Files written before those columns existed fall back
to the registry when torch is importable (the layer modules need it), else their layers
have no theory: family "unknown", exponents nan, Table-1 cells "n/a".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from harness.theory import THEORY_COLUMNS, family_rank, parse_terms
from harness.values import missing

UNKNOWN = "unknown"


@dataclass(frozen=True)
class LayerInfo:
    """One layer's family, theory and look, as the results (or the registry) give them."""

    name: str
    family: str = UNKNOWN
    complexity: str = UNKNOWN
    seq_ops: str = UNKNOWN
    path_length: str = UNKNOWN
    path_class: str = UNKNOWN
    label: str | None = None
    colour: str | None = None
    rank: float = math.inf  # position in the registry's order when measured

    @property
    def known(self) -> bool:
        """Whether a theory is known for this layer."""
        return self.complexity != UNKNOWN

    @property
    def sort_key(self) -> tuple:
        return (self.family == UNKNOWN, family_rank(self.family), self.rank, self.name)


@lru_cache(maxsize=1)
def _registered() -> frozenset[str]:
    """The registry's layers, or none where they cannot be imported (no torch)."""
    try:
        from harness import registry

        return frozenset(registry.names())
    except ImportError:
        return frozenset()


def theory_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df``'s theory columns (harness.theory.THEORY_COLUMNS), filled from the registry for
    rows written without them, as the measurement would have written them."""
    out = pd.DataFrame({c: df[c].astype(object) if c in df.columns else None
                        for c in THEORY_COLUMNS}, index=df.index, dtype=object)
    lacking = np.flatnonzero(out["theory_complexity"].map(missing).to_numpy(dtype=bool))
    layers = df["layer"].astype(str).tolist()
    if len(lacking) and any(layers[i] in _registered() for i in lacking):
        from harness import registry

        for i in lacking:
            if layers[i] in _registered():
                flags = {f: not missing(df[f].iloc[i]) and bool(df[f].iloc[i])
                         for f in ("causal", "block") if f in df.columns}
                decode = "mode" in df.columns and str(df["mode"].iloc[i]) == "decode"
                row = registry.theory_columns(layers[i], decode=decode, **flags)
                out.iloc[i] = [row[c] for c in THEORY_COLUMNS]
    return out


def layer_infos(df: pd.DataFrame) -> dict[str, LayerInfo]:
    """Every layer of ``df`` with its family, theory and look ("unknown" where none)."""
    if "layer" not in df.columns:
        return {}
    columns = theory_columns(df)
    out: dict[str, LayerInfo] = {}
    for name, rows in columns.groupby(df["layer"].astype(str).to_numpy(), sort=False):
        first = {c: next((v for v in rows[c].tolist() if not missing(v)), None)
                 for c in THEORY_COLUMNS}
        known = first["theory_complexity"] is not None
        text = {c: str(first[c]) if known and first[c] is not None else UNKNOWN
                for c in THEORY_COLUMNS}

        out[str(name)] = LayerInfo(
            name=str(name), family=str(first["family"] or UNKNOWN),
            complexity=text["theory_complexity"], seq_ops=text["theory_seq_ops"],
            path_length=text["theory_path_length"], path_class=text["theory_path_class"],
            label=first["layer_label"], colour=first["layer_colour"],
            rank=math.inf if first["layer_rank"] is None else float(first["layer_rank"]))
    return out


def families(df: pd.DataFrame) -> pd.Series:
    """The family of every row of ``df`` ("unknown" where no theory is known)."""
    infos = layer_infos(df)
    return df["layer"].astype(str).map(lambda name: infos[name].family)


def family_of(infos: Mapping[str, LayerInfo], layer: Any) -> str:
    info = infos.get(str(layer))
    return info.family if info is not None else UNKNOWN


def layer_order(infos: Mapping[str, LayerInfo]) -> list[str]:
    """Layers in report order: Table 1's families, the registry's order, then unknowns."""
    return sorted(infos, key=lambda name: infos[name].sort_key)


def row_terms(df: pd.DataFrame) -> list[tuple[dict[str, int], ...]]:
    """Every row's FLOP terms (harness.theory.parse_terms); () where none is known."""
    return [() if missing(text) else parse_terms(str(text))
            for text in theory_columns(df)["theory_terms"].tolist()]
