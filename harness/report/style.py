"""The one visual style of every report figure: rc parameters, layer colours, line styles.

A layer keeps its colour in every figure of every report: the colour its definition
declares (``LayerEntry.colour``, written into the results rows; the built-ins use seaborn's
colour-blind-safe "colorblind" palette in related hues per family, plus black and a
darkened yellow). Layers without one get colours from seaborn's "dark" palette in report
order. Variants of a layer differ by line style, runs by marker.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import pandas as pd

from harness.analysis import layers as layer_info

LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
GUIDE_COLOUR = "#7f7f7f"

#: Page and figure geometry (inches).
FIG_WIDTH = 11.0
PANEL_HEIGHT = 3.0


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


def variant_styles(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    """Line style per (layer, variant): a layer's variants in name order get -, --, :, ..."""
    by_layer: dict[str, list[str]] = {}
    for layer, variant in sorted({(str(a), str(b)) for a, b in pairs}):
        by_layer.setdefault(layer, []).append(variant)
    return {(layer, v): LINESTYLES[i % len(LINESTYLES)]
            for layer, variants in by_layer.items() for i, v in enumerate(variants)}


def run_markers(runs: Iterable[str]) -> dict[str, str]:
    """Marker per run, in the order the runs were given."""
    return {r: MARKERS[i % len(MARKERS)] for i, r in enumerate(dict.fromkeys(runs))}


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
