"""One registry of layers: each entry carries its module builders, its analytic cost model
and its Table-1 theory (harness.theory), all declared in the layer's own module.

A layer has one or more *variants* (fused vs unrolled RNN, grouped-conv vs unfold vs band
LightConv, ...). Variants of one layer compute the same function and share parameter names
and shapes, so ``other.load_state_dict(one.state_dict())`` gives both the same weights.

Layers come from two places, loaded on first use (also in spawned worker processes):
every module of the package ``harness.layers`` that defines ``LAYERS`` (a sequence of
:class:`LayerEntry`), and every installed package that declares an entry point in the group
``harness.layers`` naming such a module (docs/extending.md). A plugin that fails (import
error, duplicate name, malformed definition) is left out with one line on stderr naming it.
"""

from __future__ import annotations

import importlib
import multiprocessing
import pkgutil
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any

from harness import schema
from harness.costs import Cost, StepCost
from harness.spec import LayerCase
from harness.theory import FAMILIES, Theory, family_rank, per_token_terms

if TYPE_CHECKING:  # the registry itself needs no torch: only the builders do
    from torch import nn

#: Builder signature: ``build(case, depth)`` -> module mapping (B, n, d) -> (B, n, d).
#: ``depth`` is the layer's index in a stack; only layers whose shape changes with depth
#: (dilated convolutions: dilation k**depth) use it.
Builder = Callable[[LayerCase, int], "nn.Module"]
CostModel = Callable[[LayerCase, str], Cost]
#: ``step_cost(case, variant)``: one decode step after case.seq_len positions
StepCostModel = Callable[[LayerCase, str], StepCost]
Check = Callable[[LayerCase], "str | None"]
#: ``inputs(case)``: the shapes of the inputs a layer's modules take after x, in order
#: (cross attention: the encoder output (B, m, d)); every consumer draws them at random
#: like x (harness.layers.inputs) and passes them as ``module(x, *extra)``
InputShapes = Callable[[LayerCase], "tuple[tuple[int, ...], ...]"]

OPTIONAL_PARAMS = schema.axis_names(optional=True)
#: The entry-point group third-party packages declare their layer modules in.
ENTRY_POINT_GROUP = "harness.layers"

__all__ = ["FAMILIES", "OPTIONAL_PARAMS", "Builder", "Check", "CostModel", "InputShapes",
           "LayerEntry", "Theory", "entries", "get", "names", "plugin_errors", "register",
           "theory_columns"]


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
    colour: str | None = None  # "#rrggbb" in every figure (None: one from seaborn's "dark")
    label: str | None = None  # name in figure legends (None: the layer's name)
    step_cost: StepCostModel | None = None  # decode step (mode: decode); None: not modelled
    inputs: InputShapes | None = None  # inputs after x (None: x alone)
    #: rules for a decode case (mode: decode, seq_len = positions held) in place of
    #: ``check``; None: ``check`` (2D local attention: seq_len < H W instead of == H W)
    decode_check: Check | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise ValueError(f"layer name must be an identifier, got {self.name!r}")
        if not (isinstance(self.family, str) and self.family.strip()):
            raise ValueError(f"layer {self.name!r}: family must be non-empty text")
        if not isinstance(self.theory, Theory):
            raise ValueError(f"layer {self.name!r}: theory must be a harness.Theory")
        if not callable(self.cost) or not callable(self.check):
            raise ValueError(f"layer {self.name!r}: cost and check must be callables")
        if self.decode_check is not None and not callable(self.decode_check):
            raise ValueError(f"layer {self.name!r}: decode_check must be a callable or None")
        if self.colour is not None and not re.fullmatch(r"#[0-9a-fA-F]{6}", str(self.colour)):
            raise ValueError(f"layer {self.name!r}: colour must be '#rrggbb', not {self.colour!r}")
        unknown = set(self.params) - set(OPTIONAL_PARAMS)
        if unknown:
            raise ValueError(f"layer {self.name!r}: unknown parameters {sorted(unknown)}")
        if not set(self.required) <= set(self.params):
            raise ValueError(f"layer {self.name!r}: required params must be a subset of params")
        for variant in (self.default_variant, self.reference_variant):
            if variant not in self.variants:
                raise ValueError(f"layer {self.name!r}: no variant {variant!r}")
        if not all(callable(b) for b in self.variants.values()):
            raise ValueError(f"layer {self.name!r}: every variant must be a builder function")
        object.__setattr__(self, "variants", MappingProxyType(dict(self.variants)))
        object.__setattr__(self, "params", frozenset(self.params))
        object.__setattr__(self, "required", frozenset(self.required))

    def normalize(self, case: LayerCase) -> LayerCase:
        """The case with parameters that do not apply to this layer cleared (None/False)."""
        changes: dict[str, Any] = {a.name: False if a.kind == "flag" else None
                                   for a in schema.AXES if a.optional and a.name not in self.params}
        return replace(case, **changes)

    def problem(self, case: LayerCase, *, decode: bool = False) -> str | None:
        """Why this case cannot be built for this layer, or None when it can (``decode``:
        as a decode case, whose seq_len counts the positions held before the step)."""
        missing = [p for p in sorted(self.required) if getattr(case, p) is None]
        if missing:
            return f"{self.name} needs {', '.join(missing)}"
        if case.heads is not None and "heads" in self.params and case.d_model % case.heads:
            return f"d_model={case.d_model} is not divisible by heads={case.heads}"
        if decode and self.decode_check is not None:
            return self.decode_check(case)
        return self.check(case)

    def decode_problem(self, case: LayerCase) -> str | None:
        """Why this case cannot run in ``mode: decode`` (a non-causal setting), or None.
        A layer whose modules have no decoding state is found when the case is built."""
        if "causal" in self.params and not case.causal:
            return (f"{self.name} cannot decode with causal: false (output t reads later "
                    "positions, which a token-by-token decoder does not have); set causal: true")
        return None

    def build(self, case: LayerCase, variant: str | None = None, depth: int = 0, *,
              decode: bool = False) -> nn.Module:
        variant = self.default_variant if variant is None else variant
        if variant not in self.variants:
            known = ", ".join(self.variants)
            raise ValueError(f"layer {self.name!r} has no variant {variant!r} (known: {known})")
        case = self.normalize(case)
        reason = self.problem(case, decode=decode)
        if reason:
            raise ValueError(f"cannot build {self.name}: {reason}")
        return self.variants[variant](case, depth)

    def extra_shapes(self, case: LayerCase) -> tuple[tuple[int, ...], ...]:
        """Shapes of the inputs the modules take after x for this case (none for most)."""
        return () if self.inputs is None else tuple(self.inputs(self.normalize(case)))

    def step_cost_of(self, case: LayerCase, variant: str | None = None) -> StepCost | None:
        """The cost of one decode step of the case, or None without a step cost model."""
        variant = self.default_variant if variant is None else variant
        if self.step_cost is None:
            return None
        self.cost_of(case, variant, decode=True)  # the same checks
        return self.step_cost(self.normalize(case), variant)

    def cost_of(self, case: LayerCase, variant: str | None = None, *,
                decode: bool = False) -> Cost:
        variant = self.default_variant if variant is None else variant
        if variant not in self.variants:
            raise ValueError(f"layer {self.name!r} has no variant {variant!r}")
        case = self.normalize(case)
        reason = self.problem(case, decode=decode)
        if reason:
            raise ValueError(f"no cost for {self.name}: {reason}")
        return self.cost(case, variant)


_REGISTRY: dict[str, LayerEntry] = {}
_PLUGIN_ERRORS: list[str] = []
_loaded = False


def register(entry: LayerEntry) -> LayerEntry:
    """Add a layer (a notebook's or a test's; layer modules list theirs in ``LAYERS``)."""
    _load()
    _add_all([entry])
    return entry


def _layers_of(module: Any) -> list[LayerEntry]:
    """A layer module's ``LAYERS`` (or the sequence an entry point names) as a list."""
    found = getattr(module, "LAYERS", None) if isinstance(module, ModuleType) else module
    if found is None:
        raise ValueError(f"module {module.__name__} defines no LAYERS")
    if not isinstance(found, Sequence) or isinstance(found, str):
        raise ValueError(f"LAYERS must be a sequence of LayerEntry, got {type(found).__name__}")
    return list(found)


def _add_all(found: Sequence[LayerEntry]) -> None:
    """Register every entry or none (a bad one anywhere leaves the registry as it was)."""
    names = [getattr(entry, "name", None) for entry in found]
    for entry, name in zip(found, names, strict=True):
        if not isinstance(entry, LayerEntry):
            raise ValueError(f"LAYERS holds a {type(entry).__name__}, not a LayerEntry")
        if name in _REGISTRY or names.count(name) > 1:
            raise ValueError(f"layer {name!r} registered twice")
    _REGISTRY.update({entry.name: entry for entry in found})


def _builtin_modules() -> list[str]:
    import harness.layers as package

    return [f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)
            if not m.name.startswith("_")]


def _plugin_failed(ep: Any, exc: BaseException) -> None:
    dist = getattr(ep, "dist", None)
    package = dist.name if dist is not None else ep.value.split(":")[0].split(".")[0]
    text = str(exc).strip().splitlines()
    reason = f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
    line = (f"harness: layer plugin {package!r} (entry point {ep.name} = {ep.value}) "
            f"not loaded: {reason}")
    _PLUGIN_ERRORS.append(line)
    if multiprocessing.parent_process() is None:  # workers: the parent has said it
        print(line, file=sys.stderr)


def _load_plugins() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        before = set(_REGISTRY)
        try:
            _add_all(_layers_of(ep.load()))
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the harness
            for name in set(_REGISTRY) - before:  # what it registered by itself on import
                del _REGISTRY[name]
            _plugin_failed(ep, exc)


def _load() -> None:
    """Register the built-in layers, then the plugins' (once per process; a failure to
    import a built-in - torch missing - is raised, and the next call tries again)."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # first: a module may call register() while it is imported
    try:
        for name in _builtin_modules():  # helpers (common, pathlen) have no LAYERS
            _add_all(list(getattr(importlib.import_module(name), "LAYERS", ())))
    except BaseException:
        _loaded = False
        _REGISTRY.clear()
        raise
    _load_plugins()


def plugin_errors() -> list[str]:
    """One line per plugin that could not be loaded (also printed once on stderr)."""
    _load()
    return list(_PLUGIN_ERRORS)


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
    """Every layer, in Table-1 family order (others after), then registration order."""
    _load()
    return sorted(_REGISTRY.values(), key=lambda e: family_rank(e.family))


def theory_columns(name: str, *, decode: bool = False, **flags: bool) -> dict[str, Any]:
    """The theory columns (harness.theory.THEORY_COLUMNS) of a results row of the layer,
    for a case with these boolean parameters (``block=True``). ``decode``: a row of
    ``mode: decode``, whose FLOPs are one step's: the terms per token
    (harness.theory.per_token_terms), the complexity prefixed "per token:"."""
    entry = get(name)
    theory = entry.theory
    terms = theory.terms_for(flags)
    complexity = theory.complexity
    if decode:
        terms = per_token_terms(terms) if terms else terms
        complexity = f"per token: O({terms})" if terms else f"per token (full: {complexity})"
    return {
        "family": entry.family,
        "theory_complexity": complexity,
        "theory_terms": terms or None,
        "theory_seq_ops": theory.seq_ops,
        "theory_path_length": theory.path_length,
        "theory_path_class": theory.path_class,
        "layer_label": entry.label,
        "layer_colour": entry.colour,
        "layer_rank": names().index(name),
    }
