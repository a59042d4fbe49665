"""A layer's Table-1 theory as data, and the results columns that carry it (no torch here).

Each layer declares its :class:`Theory` beside its builders and cost model (one definition,
in its own module). The measurement writes it into every results row
(:data:`THEORY_COLUMNS`), so analyses and reports read the theory from the dataframe and a
report can be rebuilt on a machine without torch (harness.analysis.layers reads it back).
Sources of the built-in theories: Vaswani et al. 2017 Table 1 and section 4, Wu et al. 2019.

FLOPs per layer are written as a sum of monomials in the axis symbols (constants dropped):
``terms=("n^2 d", "n d^2")`` is dense attention's scores and p v (n^2 d) plus its projections
(n d^2). Along one axis, with every other parameter fixed, the local log-log slope of such a
sum lies between the smallest and the largest power of that axis among its terms, and tends
to the largest as the axis grows: :func:`exponent` returns both. Batch enters every term
linearly. A term may apply only when a boolean case parameter is set (LightConv's
``block=True`` adds the block's Linear layers, n d^2): ``flag_terms={"block": ("n d^2",)}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from harness import schema

#: Built-in families in Table-1 order; a third-party layer may name another (sorted after).
FAMILIES = ("recurrent", "convolution", "self-attention", "lightconv", "dynamicconv")

#: Results column (a swept size) -> its symbol in the theory terms (harness.schema).
AXIS_SYMBOL = {a.name: a.symbol for a in schema.AXES if a.kind == "size"}
SYMBOLS = frozenset(AXIS_SYMBOL.values())

#: Columns the measurement writes into every results row (``registry.theory_columns``).
THEORY_COLUMNS = schema.column_names("theory")

Term = Mapping[str, int]  # symbol -> power, e.g. {"n": 2, "d": 1}

_FACTOR = re.compile(r"([a-z])(?:\^(-?\d+))?")


def family_rank(family: str) -> int:
    """Position of a family in Table-1 order; families not built in come after them."""
    return FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)


def parse_terms(text: str) -> tuple[dict[str, int], ...]:
    """"n^2 d + n d^2" -> ({"n": 2, "d": 1}, {"n": 1, "d": 2}); "" -> (). ValueError if bad."""
    if not text.strip():
        return ()
    terms = []
    for part in (p.strip() for p in text.split("+")):
        term: dict[str, int] = {}
        for factor in part.split():
            m = _FACTOR.fullmatch(factor)
            if m is None or m.group(1) not in SYMBOLS or m.group(1) in term:
                raise ValueError(f"bad FLOP term {part!r} in {text!r}: write factors like "
                                 f"n^2 d over the symbols {' '.join(sorted(SYMBOLS))}")
            term[m.group(1)] = int(m.group(2) or 1)
        if not term:
            raise ValueError(f"empty FLOP term in {text!r}")
        terms.append(term)
    return tuple(terms)


def exponent(terms: Sequence[Term], axis: str) -> tuple[float, float]:
    """(asymptotic, lowest) FLOP exponent along ``axis`` (a results column), others fixed.

    The asymptotic exponent is the largest power of the axis among the terms (the slope as
    the axis grows without bound); the lowest is the smallest, so a local slope measured at
    finite sizes lies in [lowest, asymptotic]. (nan, nan) without terms or for an axis that
    has no symbol; 0 along a parameter the FLOPs do not depend on (heads of dense attention).
    """
    symbol = AXIS_SYMBOL.get(axis)
    if symbol is None or not terms:
        return math.nan, math.nan
    if symbol == "b":
        return 1.0, 1.0
    powers = [term.get(symbol, 0) for term in terms]
    return float(max(powers)), float(min(powers))


def per_token_terms(text: str) -> str:
    """The FLOP terms of one decode step from those of a whole-sequence pass: a step does
    the work of one of the n positions, so each term loses one power of n (n^2 d -> n d,
    n d^2 -> d^2, k n d -> k d); a term without n keeps its form. Duplicates dropped."""
    out: list[str] = []
    for term in parse_terms(text):
        factors = []
        for symbol, power in term.items():
            if symbol == "n":
                power = max(power - 1, 0)
                if power == 0:
                    continue
            factors.append(symbol if power == 1 else f"{symbol}^{power}")
        piece = " ".join(factors) or "1"
        if piece != "1" and piece not in out:
            out.append(piece)
    return " + ".join(out)


def growth_class_of(text: str) -> str:
    """The growth in n of a complexity: "O(n/k)" -> "O(n)", "O(log_k n)" -> "O(log n)"."""
    t = text.replace(" ", "")
    if t == "O(1)":
        return "O(1)"
    if t.startswith("O(log"):
        return "O(log n)"
    if t == "O(n)" or re.fullmatch(r"O\(n/[a-z]\)", t):
        return "O(n)"
    if re.fullmatch(r"O\(H/[a-z]_?[a-z]?\)", t):  # image height over a block: n at fixed width
        return "O(n)"
    raise ValueError(f"no growth class for {text!r}: write O(1), O(log_k n), O(n), O(n/k) "
                     "or O(H/q_h)")


@dataclass(frozen=True)
class Theory:
    """A layer's row of Vaswani et al. 2017 Table 1 (or Wu et al. 2019), as data.

    ``complexity``, ``seq_ops`` and ``path_length`` are the text a reader sees;
    ``terms`` the FLOPs as monomials (what exponents are judged against), ``flag_terms``
    terms added when a boolean case parameter is true. ``path_class`` (the growth of the
    path length in n alone) is derived from ``path_length``.
    """

    complexity: str  # FLOPs per layer, e.g. "O(n^2 d) + O(n d^2) projections"
    seq_ops: str  # "O(1)" or "O(n)"
    path_length: str  # e.g. "O(n/k)", "O(log_k n)"
    terms: tuple[str, ...] = ()  # e.g. ("n^2 d", "n d^2")
    flag_terms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("complexity", "seq_ops", "path_length"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"Theory.{name} must be non-empty text")
        if isinstance(self.terms, str):
            raise ValueError("Theory.terms must be a tuple of terms, e.g. ('n^2 d', 'n d^2')")
        object.__setattr__(self, "terms", tuple(self.terms))
        object.__setattr__(self, "flag_terms", MappingProxyType(
            {k: tuple(v) for k, v in self.flag_terms.items()}))
        for text in (*self.terms, *(t for v in self.flag_terms.values() for t in v)):
            parse_terms(text)  # raises on a malformed term
        if growth_class_of(self.seq_ops) not in ("O(1)", "O(n)"):
            raise ValueError(f"Theory.seq_ops must be O(1) or O(n), got {self.seq_ops!r}")
        growth_class_of(self.path_length)

    @property
    def path_class(self) -> str:
        return growth_class_of(self.path_length)

    def terms_for(self, flags: Mapping[str, Any]) -> str:
        """FLOP terms of one case as text: ``terms`` plus those of every flag set in
        ``flags`` ("k n d + n d^2" for a LightConv block); "" without terms."""
        extra = [t for flag, ts in self.flag_terms.items() if flags.get(flag) is True
                 for t in ts]
        return " + ".join([*self.terms, *extra])

    def exponent(self, axis: str, **flags: Any) -> tuple[float, float]:
        return exponent(parse_terms(self.terms_for(flags)), axis)
