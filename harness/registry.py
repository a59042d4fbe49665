"""One registry of layers: each entry carries its module builders and its analytic cost model.

A layer has one or more *variants* (fused vs unrolled RNN, grouped-conv vs unfold vs band
LightConv, ...). Variants of one layer compute the same function and share parameter names
and shapes, so ``other.load_state_dict(one.state_dict())`` gives both the same weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from torch import nn

from harness import schema
from harness.costs import Cost
from harness.spec import LayerCase

#: Builder signature: ``build(case, depth)`` -> module mapping (B, n, d) -> (B, n, d).
#: ``depth`` is the layer's index in a stack; only layers whose shape changes with depth
#: (dilated convolutions: dilation k**depth) use it.
Builder = Callable[[LayerCase, int], nn.Module]
CostModel = Callable[[LayerCase, str], Cost]
Check = Callable[[LayerCase], "str | None"]

FAMILIES = ("recurrent", "convolution", "self-attention", "lightconv", "dynamicconv")
OPTIONAL_PARAMS = schema.axis_names(optional=True)


@dataclass(frozen=True)
class Theory:
    """The layer's row of Vaswani et al. 2017 Table 1 (or Wu et al. 2019), as text."""

    complexity: str  # FLOPs per layer, e.g. "O(n^2 d)"
    seq_ops: str  # e.g. "O(1)"
    path_length: str  # e.g. "O(n/k)"


def _no_check(case: LayerCase) -> str | None:
    return None


@dataclass(frozen=True)
class LayerEntry:
    name: str
    family: str
    summary: str
    params: frozenset[str]  # which optional parameters apply (subset of OPTIONAL_PARAMS)
    required: frozenset[str]  # which of them must be given
    variants: Mapping[str, Builder]
    default_variant: str
    reference_variant: str  # the unfused one: path length and sequential ops are measured on it
    cost: CostModel  # cost(case, variant) -> Cost
    theory: Theory
    check: Check = field(default=_no_check)  # extra rules: reason the case cannot exist, or None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"layer {self.name!r}: unknown family {self.family!r}")
        unknown = set(self.params) - set(OPTIONAL_PARAMS)
        if unknown:
            raise ValueError(f"layer {self.name!r}: unknown parameters {sorted(unknown)}")
        if not set(self.required) <= set(self.params):
            raise ValueError(f"layer {self.name!r}: required params must be a subset of params")
        for variant in (self.default_variant, self.reference_variant):
            if variant not in self.variants:
                raise ValueError(f"layer {self.name!r}: no variant {variant!r}")
        object.__setattr__(self, "variants", MappingProxyType(dict(self.variants)))
        object.__setattr__(self, "params", frozenset(self.params))
        object.__setattr__(self, "required", frozenset(self.required))

    def normalize(self, case: LayerCase) -> LayerCase:
        """The case with parameters that do not apply to this layer cleared (None/False)."""
        changes: dict[str, Any] = {a.name: False if a.kind == "flag" else None
                                   for a in schema.AXES if a.optional and a.name not in self.params}
        return replace(case, **changes)

    def problem(self, case: LayerCase) -> str | None:
        """Why this case cannot be built for this layer, or None when it can."""
        missing = [p for p in sorted(self.required) if getattr(case, p) is None]
        if missing:
            return f"{self.name} needs {', '.join(missing)}"
        if case.heads is not None and "heads" in self.params and case.d_model % case.heads:
            return f"d_model={case.d_model} is not divisible by heads={case.heads}"
        return self.check(case)

    def build(self, case: LayerCase, variant: str | None = None, depth: int = 0) -> nn.Module:
        variant = self.default_variant if variant is None else variant
        if variant not in self.variants:
            known = ", ".join(self.variants)
            raise ValueError(f"layer {self.name!r} has no variant {variant!r} (known: {known})")
        case = self.normalize(case)
        reason = self.problem(case)
        if reason:
            raise ValueError(f"cannot build {self.name}: {reason}")
        return self.variants[variant](case, depth)

    def cost_of(self, case: LayerCase, variant: str | None = None) -> Cost:
        variant = self.default_variant if variant is None else variant
        if variant not in self.variants:
            raise ValueError(f"layer {self.name!r} has no variant {variant!r}")
        case = self.normalize(case)
        reason = self.problem(case)
        if reason:
            raise ValueError(f"no cost for {self.name}: {reason}")
        return self.cost(case, variant)


_REGISTRY: dict[str, LayerEntry] = {}


def register(entry: LayerEntry) -> LayerEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"layer {entry.name!r} registered twice")
    _REGISTRY[entry.name] = entry
    return entry


def _load() -> None:
    import harness.layers  # noqa: F401  (registers every shipped layer on import)


def get(name: str) -> LayerEntry:
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown layer {name!r} (known: {known})") from None


def names() -> list[str]:
    return [e.name for e in entries()]


def entries() -> list[LayerEntry]:
    """Every layer, in the order of FAMILIES (Table 1 order), then registration order."""
    _load()
    return sorted(_REGISTRY.values(), key=lambda e: FAMILIES.index(e.family))
