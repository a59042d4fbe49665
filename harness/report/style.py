"""The one visual style of every report figure: rc parameters, layer colours, line styles.

A layer keeps its colour in every figure of every report: the mapping below is fixed by
layer name (families in related hues: recurrent blues, convolutions purples, attention
oranges), drawn from seaborn's colour-blind-safe "colorblind" palette, extended with black
and a darkened yellow for the 11th and a readable line on white. Layers the theory table
does not know get colours from seaborn's "dark" palette in name order. Variants of a layer
differ by line style, runs by marker.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from harness.analysis.theory import THEORY

#: layer -> index into seaborn's "colorblind" palette (or a hex colour of its own).
_LAYER_SLOT: dict[str, int | str] = {
    "rnn": 9,             # sky blue
    "lstm": 0,            # blue
    "gru": "#000000",     # black
    "conv": 4,            # purple
    "conv_dilated": 6,    # pink
    "conv_separable": 7,  # grey
    "attention": 1,       # orange
    "attention_sdpa": 3,  # vermillion
    "attention_local": "#b3a423",  # palette yellow, darkened to read on white
    "lightconv": 2,       # green
    "dynamicconv": 5,     # brown
}
_FAMILY_ORDER = ("recurrent", "convolution", "self-attention", "lightconv", "dynamicconv")
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
GUIDE_COLOUR = "#7f7f7f"

#: Page and figure geometry (inches).
FIG_WIDTH = 11.0
PANEL_HEIGHT = 3.0


def layer_order(layers: Iterable[Any]) -> list[str]:
    """Layers in report order: Table 1's families and the registry's order, then unknowns."""
    known = list(THEORY)
    names = {str(v) for v in layers}
    return [k for k in known if k in names] + sorted(names - set(known))


def family_rank(family: str) -> int:
    return _FAMILY_ORDER.index(family) if family in _FAMILY_ORDER else len(_FAMILY_ORDER)


@lru_cache(maxsize=1)
def _palette() -> tuple[str, ...]:
    import seaborn as sns

    return tuple(sns.color_palette("colorblind", 10).as_hex())


def layer_colours(layers: Iterable[Any]) -> dict[str, str]:
    """The fixed colour of every layer given (unknown layers: seaborn "dark", name order)."""
    import seaborn as sns

    palette = _palette()
    out: dict[str, str] = {}
    unknown = []
    for name in layer_order(layers):
        slot = _LAYER_SLOT.get(name)
        if slot is None:
            unknown.append(name)
        else:
            out[name] = palette[slot] if isinstance(slot, int) else slot
    if unknown:
        extra = sns.color_palette("dark", max(len(unknown), 1)).as_hex()
        for i, name in enumerate(unknown):
            out[name] = extra[i % len(extra)]
    return out


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
def rc() -> dict[str, Any]:
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
