"""The one visual style of every report figure: layer colours, variant dashes, run order,
and the matplotlib rc parameters of the PDF pages.

A layer keeps its colour in every figure of every report: the colour its definition
declares (``LayerEntry.colour``, written into the results rows; the built-ins use seaborn's
colour-blind-safe "colorblind" palette in related hues per family, plus black and a
darkened yellow). Layers without one get colours from seaborn's "dark" palette in report
order. Variants of a layer differ by dash (harness.report.charts), runs by point shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pandas as pd

from harness.analysis import layers as layer_info


def layer_order(df: pd.DataFrame) -> list[str]:
    """The results' layers in report order: Table 1's families and the registry's order,
    then layers without a known theory, by name."""
    return layer_info.layer_order(layer_info.layer_infos(df))


def layer_colours(df: pd.DataFrame) -> dict[str, str]:
    """The colour of every layer of the results (declared, else seaborn "dark" in order)."""
    import seaborn as sns

    infos = layer_info.layer_infos(df)
    out: dict[str, str] = {}
    undeclared = []
    for name in layer_info.layer_order(infos):
        if infos[name].colour:
            out[name] = str(infos[name].colour)
        else:
            undeclared.append(name)
    if undeclared:
        extra = sns.color_palette("dark", len(undeclared)).as_hex()
        out.update(zip(undeclared, extra, strict=True))
    return out


def layer_labels(df: pd.DataFrame) -> dict[str, str]:
    """The name of every layer in figure legends (its declared label, else its name)."""
    return {name: str(info.label or name) for name, info in layer_info.layer_infos(df).items()}


def variant_ranks(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Rank of each variant among its layer's variants in name order: its dash."""
    by_layer: dict[str, list[str]] = {}
    for layer, variant in sorted({(str(a), str(b)) for a, b in pairs}):
        by_layer.setdefault(layer, []).append(variant)
    return {(layer, v): i for layer, variants in by_layer.items() for i, v in enumerate(variants)}


@dataclass
class Look:
    """What every figure of one report shares: layer colours, order and names, the rank
    (dash) of each variant, the runs in the order given (a point shape each)."""

    colours: dict[str, str]
    variants: dict[tuple[str, str], int]
    runs: tuple[str, ...]
    order: dict[str, int] = field(default_factory=dict)  # layer -> report rank
    labels: dict[str, str] = field(default_factory=dict)  # layer -> legend name

    def rank(self, layer: str) -> tuple[int, str]:
        return self.order.get(layer, len(self.order)), layer

    def label(self, layer: str, variant: str) -> str:
        return f"{self.labels.get(layer, layer)} · {variant}"

    def dash(self, layer: str, variant: str) -> int:
        return self.variants.get((layer, variant), 0)

    @property
    def many_runs(self) -> bool:
        return len(self.runs) > 1


def make_look(df: pd.DataFrame, runs: Sequence[str]) -> Look:
    order = {name: i for i, name in enumerate(layer_order(df))}
    ranks = variant_ranks(zip(df["layer"].astype(str), df["variant"].astype(str), strict=True))
    return Look(layer_colours(df), ranks, tuple(dict.fromkeys(runs)), order, layer_labels(df))


@lru_cache(maxsize=1)
def rc() -> Any:  # matplotlib rcParams (its stub types the keys as literals)
    """rc parameters for every figure: seaborn's whitegrid/paper look, fixed fonts, no dates."""
    import seaborn as sns

    params: dict[str, Any] = {**sns.axes_style("whitegrid"),
                              **sns.plotting_context("paper", font_scale=1.05)}
    params.update({
        "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans"],
        "axes.titlesize": 9.5,
        "axes.labelsize": 9,
        "legend.fontsize": 8,
        "legend.title_fontsize": 8.5,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "lines.linewidth": 1.5,
        "lines.markersize": 4.5,
        "svg.hashsalt": "harness-report",
        "pdf.fonttype": 42,
        "path.simplify": False,
        "figure.dpi": 100,
    })
    return params
