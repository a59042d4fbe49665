"""Text for reports: numbers with units, exponents, parameter descriptions.

Every renderer (HTML, PDF) shows the same strings, so formatting lives here once. Values
from a results file are only formatted here, never trusted as markup: the HTML renderer
escapes whatever these functions return, and :func:`mpl` protects matplotlib's mathtext.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from harness import schema, theory
from harness.values import missing, plain

_SI = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_BINARY = ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"))

#: Results column -> the words a reader sees (units included).
METRIC_LABEL = {
    "time_ms_median": "median time (ms)",
    "flops_analytic": "FLOPs (analytic, executed)",
    "flops_torch": "FLOPs (torch counter)",
    "flops_fvcore": "FLOPs (fvcore)",
    "peak_mem_bytes": "peak memory (bytes)",
    "act_mem_analytic_bytes": "activation memory, analytic (bytes)",
    "state_bytes": "decoding state (bytes)",
}
METRIC_SHORT = {
    "time_ms_median": "time", "flops_analytic": "FLOPs", "flops_torch": "FLOPs (torch)",
    "flops_fvcore": "FLOPs (fvcore)", "peak_mem_bytes": "memory", "state_bytes": "state",
}
AXIS_LABEL = {a.name: a.label for a in schema.AXES if a.kind == "size"}
AXIS_SYMBOL = theory.AXIS_SYMBOL
VERDICT_MARK = {"agrees": "✓ agrees", "disagrees": "✗ disagrees",
                "inconclusive": "? inconclusive", "n/a": "– n/a"}


def text(value: Any, empty: str = "") -> str:
    """Any cell as text: missing -> ``empty``; 8.0 -> "8"; strings as they are."""
    value = plain(value)
    if value is None:
        return empty
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return num(value)
    return str(value)


def num(value: Any, digits: int = 3) -> str:
    """A number to ``digits`` significant digits; integers exactly below 1e6."""
    value = plain(value)
    if value is None:
        return "–"
    value = float(value)
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value.is_integer() and abs(value) < 1e6:
        return str(int(value))
    if value != 0 and not 1e-3 <= abs(value) < 1e6:
        return f"{value:.{digits - 1}e}"
    out = f"{value:.{digits}g}"
    return f"{float(out):f}".rstrip("0").rstrip(".") if "e" not in out else out


def si(value: Any, unit: str = "") -> str:
    """1234567 -> "1.23 M" (decimal prefixes: FLOPs, FLOP/s, tokens)."""
    value = plain(value)
    if value is None:
        return "–"
    value = float(value)
    for scale, prefix in _SI:
        if abs(value) >= scale:
            return f"{num(value / scale)} {prefix}{unit}".rstrip()
    return f"{num(value)} {unit}".rstrip()


def nbytes(value: Any) -> str:
    """3670016 -> "3.5 MiB" (binary prefixes for memory)."""
    value = plain(value)
    if value is None:
        return "–"
    value = float(value)
    for scale, unit in _BINARY:
        if abs(value) >= scale:
            return f"{num(value / scale)} {unit}"
    return f"{num(value)} B"


def ms(value: Any) -> str:
    """Milliseconds to 3 significant digits."""
    return "–" if missing(value) else f"{num(value)} ms"


def pct(fraction: Any) -> str:
    """0.0123 -> "1.23%"; tiny fractions as "< 0.001%" rather than in exponent notation."""
    if missing(fraction):
        return "–"
    value = 100 * float(fraction)
    if 0 < abs(value) < 1e-3:
        return "< 0.001%"
    return f"{num(value)}%"


def slope(value: Any, half: Any = None) -> str:
    """"1.98 ± 0.04" (or "1.98" without an interval)."""
    if missing(value):
        return "–"
    if missing(half):
        return f"{float(value):.2f}"
    return f"{float(value):.2f} ± {float(half):.2f}"


def exponent(value: Any) -> str:
    """A theory exponent: 2.0 -> "2", 1.5 -> "1.5"."""
    return "–" if missing(value) else num(float(value))


def verdict(value: Any) -> str:
    """A verdict word with its mark (the mark survives black-and-white print)."""
    return VERDICT_MARK.get(str(value), text(value, "–"))


def power(symbol: str, value: Any) -> str:
    """n^2 written with a superscript where one exists: "n²"; else "n^1.5"."""
    sup = {"0": "⁰", "1": "¹", "2": "²", "3": "³", "4": "⁴", "-": "⁻"}
    raw = exponent(value)
    if all(ch in sup for ch in raw):
        return symbol + "".join(sup[ch] for ch in raw)
    return f"{symbol}^{raw}"


def shorten(description: str, constant: Iterable[str]) -> str:
    """Drop "key=value" parts whose key is constant over the report (said once elsewhere)."""
    drop = set(constant)
    kept = [p for p in str(description).split(", ")
            if p and p.split("=")[0] not in drop]
    return ", ".join(kept)


def value_list(values: Iterable[Any], limit: int = 8) -> str:
    """"64, 128, 256" - distinct values, sorted where they sort, at most ``limit`` shown."""
    seen = list(dict.fromkeys(text(v) for v in values if not missing(v)))
    try:
        seen.sort(key=float)
    except ValueError:
        seen.sort()
    if len(seen) > limit:
        return ", ".join(seen[:limit]) + f" (+{len(seen) - limit} more)"
    return ", ".join(seen)


def mpl(value: Any) -> str:
    """Text for matplotlib: a '$' from a results file must not start mathtext."""
    return text(value).replace("$", r"\$")
