"""What the analyses know about each layer, read from the results dataframe (no torch).

Every results row carries its layer's family and Table-1 theory (harness.theory.
THEORY_COLUMNS, written at measurement time from the layer's registry entry), so a report
is rebuilt from a results file alone. Files written before those columns existed fall back
to the registry when torch is importable (the layer modules need it), else their layers
have no theory: family "unknown", exponents nan, Table-1 cells "n/a".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pandas as pd

from harness.theory import family_rank, parse_terms

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


@dataclass(frozen=True)
class _Registered:
    info: LayerInfo
    theory: Any  # harness.theory.Theory


@lru_cache(maxsize=1)
def _registry() -> dict[str, _Registered] | None:
    """The registry's layers, or None where they cannot be imported (no torch)."""
    try:
        from harness import registry

        entries = registry.entries()
    except ImportError:
        return None
    return {e.name: _Registered(
        LayerInfo(e.name, e.family, e.theory.complexity, e.theory.seq_ops,
                  e.theory.path_length, e.theory.path_class, e.label, e.colour, float(i)),
        e.theory) for i, e in enumerate(entries)}


def _registered(layer: str) -> _Registered | None:
    known = _registry()
    return None if known is None else known.get(layer)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _first(rows: pd.DataFrame, column: str) -> Any:
    if column not in rows.columns:
        return None
    return next((v for v in rows[column].astype(object).tolist() if not _missing(v)), None)


def layer_infos(df: pd.DataFrame) -> dict[str, LayerInfo]:
    """Every layer of ``df``: from its rows' theory columns, else the registry, else unknown."""
    out: dict[str, LayerInfo] = {}
    if "layer" not in df.columns:
        return out
    layers = df["layer"].astype(str)
    for name in dict.fromkeys(layers.tolist()):
        rows = df[layers == name]
        complexity = _first(rows, "theory_complexity")
        registered = _registered(name) if complexity is None else None
        if registered is not None:
            out[name] = registered.info
        elif complexity is None:
            out[name] = LayerInfo(name, family=str(_first(rows, "family") or UNKNOWN))
        else:
            rank = _first(rows, "layer_rank")
            out[name] = LayerInfo(
                name, str(_first(rows, "family") or UNKNOWN), str(complexity),
                str(_first(rows, "theory_seq_ops") or UNKNOWN),
                str(_first(rows, "theory_path_length") or UNKNOWN),
                str(_first(rows, "theory_path_class") or UNKNOWN),
                _first(rows, "layer_label"), _first(rows, "layer_colour"),
                math.inf if rank is None else float(rank))
    return out


def families(df: pd.DataFrame) -> pd.Series:
    """The family of every row of ``df`` ("unknown" where no theory is known)."""
    infos = layer_infos(df)
    return df["layer"].astype(str).map(lambda name: infos[name].family)


def family_of(infos: Mapping[str, LayerInfo], layer: Any) -> str:
    info = infos.get(str(layer))
    return info.family if info is not None else UNKNOWN


def layer_order(infos: Mapping[str, LayerInfo], layers: Iterable[Any] | None = None
                ) -> list[str]:
    """Layers in report order: Table 1's families, the registry's order, then unknowns."""
    names = {str(v) for v in (infos if layers is None else layers)}
    return sorted(names, key=lambda n: infos[n].sort_key if n in infos else
                  LayerInfo(n).sort_key)


def row_terms(df: pd.DataFrame) -> list[tuple[dict[str, int], ...]]:
    """Every row's FLOP terms (its ``theory_terms``, else the registry's for its layer and
    flags); () where none is known."""
    texts = (df["theory_terms"].astype(object).tolist() if "theory_terms" in df.columns
             else [None] * len(df))
    out = []
    records = None
    for i, (text, layer) in enumerate(zip(texts, df["layer"].astype(str), strict=True)):
        if not _missing(text):
            out.append(parse_terms(str(text)))
            continue
        registered = _registered(layer)
        if registered is None:
            out.append(())
            continue
        if records is None:
            records = df.to_dict("records")
        flags = {f: not _missing(records[i].get(f)) and bool(records[i].get(f))
                 for f in registered.theory.flag_terms}
        out.append(registered.theory.terms_for(flags))
    return out
