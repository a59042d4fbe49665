"""The theory the measurements are judged against, hardcoded here on purpose.

The registry holds the same facts as text, but importing it imports torch; a report must
be rebuilt on a machine without torch (DESIGN.md), so the analysis carries its own copy.
Sources: Vaswani et al. 2017 Table 1 and section 4, Wu et al. 2019, DESIGN.md "The layers".

FLOPs per layer are written as a sum of monomials in the axes (constants dropped). Along
one axis, with every other parameter fixed, the local log-log slope of such a sum lies
between the smallest and the largest power of that axis among its terms, and tends to the
largest as the axis grows: :func:`theory_exponent` returns both. Example: attention is
n^2 d (scores, p v) + n d^2 (projections), so along n the slope is in [1, 2] and tends to
2, and along d it is in [1, 2] and tends to 2 as well (the projections win for d >> n;
Table 1's "O(n^2 d)" leaves the projections out). Batch enters every term linearly.
The LightConv / DynamicConv "block" (Linear d->2d, GLU, conv, Linear d->d) adds n d^2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Analysis axis (a results column) -> the symbol used in the theory terms.
AXIS_SYMBOL = {"seq_len": "n", "d_model": "d", "heads": "h", "kernel": "k", "window": "r",
               "batch": "b"}

Term = dict[str, int]


@dataclass(frozen=True)
class LayerTheory:
    """One layer's theory: FLOP terms, the paper's strings and the classes they imply."""

    family: str
    complexity: str  # FLOPs per layer as the paper / DESIGN.md writes it
    terms: tuple[Term, ...]  # FLOPs as a sum of monomials (constants dropped)
    axes: frozenset[str]  # symbols that apply to the layer (others are not parameters of it)
    seq_ops: str  # "O(1)" or "O(n)"
    path_length: str  # as written, e.g. "O(n/k)", "O(log_k n)"
    path_class: str  # its growth in n alone: "O(1)", "O(log n)" or "O(n)"


def _t(**powers: int) -> Term:
    return dict(powers)


_RECURRENT = LayerTheory("recurrent", "O(n d^2)", (_t(n=1, d=2),), frozenset("ndb"),
                         "O(n)", "O(n)", "O(n)")
_CONV = LayerTheory("convolution", "O(k n d^2)", (_t(k=1, n=1, d=2),), frozenset("ndkb"),
                    "O(1)", "O(n/k)", "O(n)")
_DENSE = LayerTheory("self-attention", "O(n^2 d) + O(n d^2) projections",
                     (_t(n=2, d=1), _t(n=1, d=2)), frozenset("ndhb"), "O(1)", "O(1)", "O(1)")

#: layer name -> its theory. Layers not listed get family "unknown" and no theory.
THEORY: dict[str, LayerTheory] = {
    "rnn": _RECURRENT,
    "lstm": _RECURRENT,
    "gru": _RECURRENT,
    "conv": _CONV,
    "conv_dilated": LayerTheory("convolution", "O(k n d^2)", _CONV.terms, _CONV.axes,
                                "O(1)", "O(log_k n)", "O(log n)"),
    "conv_separable": LayerTheory("convolution", "O(k n d + n d^2)",
                                  (_t(k=1, n=1, d=1), _t(n=1, d=2)), _CONV.axes,
                                  "O(1)", "O(n/k)", "O(n)"),
    "attention": _DENSE,
    "attention_sdpa": _DENSE,
    "attention_local": LayerTheory("self-attention", "O(r n d) + O(n d^2) projections",
                                   (_t(r=1, n=1, d=1), _t(n=1, d=2)), frozenset("ndhrb"),
                                   "O(1)", "O(n/r)", "O(n)"),
    "lightconv": LayerTheory("lightconv", "O(k n d)", (_t(k=1, n=1, d=1),),
                             frozenset("ndhkb"), "O(1)", "O(n/k)", "O(n)"),
    "dynamicconv": LayerTheory("dynamicconv", "O(k n d + n d H k)",
                               (_t(k=1, n=1, d=1), _t(n=1, d=1, h=1, k=1)),
                               frozenset("ndhkb"), "O(1)", "O(n/k)", "O(n)"),
}

#: layer name -> family (the registry's families).
LAYER_FAMILY: dict[str, str] = {name: theory.family for name, theory in THEORY.items()}

_BLOCK_LAYERS = frozenset({"lightconv", "dynamicconv"})
_BLOCK_TERM = _t(n=1, d=2)


def family_of(layer: object) -> str:
    """The layer's family, or "unknown" for a layer this table does not know."""
    return LAYER_FAMILY.get(str(layer), "unknown")


def theory_terms(layer: str, block: bool = False) -> tuple[Term, ...]:
    """FLOP terms of ``layer`` (with the block's n d^2 where ``block`` applies); () if unknown."""
    theory = THEORY.get(layer)
    if theory is None:
        return ()
    if block and layer in _BLOCK_LAYERS:
        return (*theory.terms, _BLOCK_TERM)
    return theory.terms


def theory_exponent(layer: str, axis: str, block: bool = False) -> tuple[float, float]:
    """(asymptotic, lowest) FLOP exponent of ``layer`` along ``axis``, every other axis fixed.

    The asymptotic exponent is the largest power of the axis among the terms (the slope as
    the axis grows without bound); the lowest is the smallest power, so a local slope
    measured at finite sizes lies in [lowest, asymptotic]. (nan, nan) for an unknown layer
    or an axis that is not a parameter of the layer (heads of an RNN); 0 for a parameter the
    FLOPs do not depend on (heads of dense attention).
    """
    symbol = AXIS_SYMBOL.get(axis)
    theory = THEORY.get(layer)
    if symbol is None or theory is None or symbol not in theory.axes:
        return math.nan, math.nan
    if symbol == "b":
        return 1.0, 1.0
    powers = [term.get(symbol, 0) for term in theory_terms(layer, block)]
    return float(max(powers)), float(min(powers))


def growth_class_of(text: str) -> str:
    """The growth in n of a complexity string: "O(n/k)" -> "O(n)", "O(log_k n)" -> "O(log n)"."""
    t = text.replace(" ", "")
    if t == "O(1)":
        return "O(1)"
    if t.startswith("O(log"):
        return "O(log n)"
    if t in {"O(n)", "O(n/k)", "O(n/r)"}:
        return "O(n)"
    raise ValueError(f"no growth class for {text!r}")
