"""Typed, frozen models of a suite file (README.md, "Suites").

Pydantic checks shapes and types here; rules that need the layer registry or the machine
(layer and variant names, axes a layer does not take, CUDA availability) live in
``harness.suite.check``. Error *messages* are not written here: ``harness.suite.messages``
turns pydantic's first error into the one line the user sees. That is also why scalars are
wrapped into 1-tuples before validation (``batch: 8`` and ``batch: [8]`` mean the same) and
why no field is a union of two shapes, only ``X | None`` (pydantic would add branch names to
error locations).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    StrictBool,
    create_model,
    model_validator,
)

from harness import schema

DTYPES = schema.axis("dtype").choices
MODES = schema.axis("mode").choices
VARIANT_CHOICES = ("default", "all")
#: Integer sweep axes (``sweep`` keys), in the fixed order ``expand`` crosses them.
AXES = tuple(a for a in schema.PLAN_ORDER if schema.axis(a).kind == "size")
#: Axes that only some layers take (``LayerEntry.params`` says which).
OPTIONAL_AXES = schema.axis_names("size", optional=True)
#: Boolean settings that only some layers take (top-level and per-layer keys).
FLAGS = schema.axis_names("flag", optional=True)
#: Booleans every layer takes, how a case runs (``sweep`` keys, crossed like sizes: compile).
SWEEP_FLAGS = schema.axis_names("flag", optional=False)

_DEVICE = re.compile(r"(auto|cpu|cuda(:\d+)?)")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or ``""`` when none is close."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _choice(what: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            hint = did_you_mean(value, choices)
            raise ValueError(f"is not a known {what} (one of {', '.join(choices)}){hint}")
        return value

    return check


def _positive(value: float) -> float:
    if not value > 0:
        raise ValueError("is not a positive number")
    return value


def _non_negative(value: float) -> float:
    if not value >= 0:
        raise ValueError("is negative (must be 0 or more)")
    return value


def _top_variants(value: str) -> str:
    if value not in VARIANT_CHOICES:
        raise ValueError(
            "is not 'default' or 'all' (to pick variants by name, list them per layer: "
            "{name: lstm, variants: [fused, unrolled]})"
        )
    return value


def _device(value: str) -> str:
    if not _DEVICE.fullmatch(value):
        gpu = value.lower().startswith(("gpu", "cuda", "nvidia"))
        hint = " (did you mean 'cuda'?)" if gpu else did_you_mean(value, ("auto", "cpu", "cuda"))
        raise ValueError(f"is not a device (one of auto, cpu, cuda, cuda:N){hint}")
    return value


def _threads(value: Any) -> Any:
    """``auto`` or a positive int; one rule and one message for both shapes."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return value
    raise ValueError("is not 'auto' or a positive number of threads")


def _suite_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            "is not a valid suite name (letters, digits, '.', '_' and '-'; it names result files)"
        )
    return value


def _as_tuple(value: Any) -> Any:
    """A scalar means a one-value sweep; ``None`` stays None (the key is then 'not given')."""
    if value is None or isinstance(value, tuple):
        return value
    if isinstance(value, list):
        return tuple(value)
    return (value,)


def _variants_shape(value: Any) -> Any:
    """Per-layer ``variants``: 'default', 'all' or a non-empty list of names (checked later)."""
    if value is None or value in VARIANT_CHOICES:
        return value
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError("is not 'default', 'all' or a non-empty list of variant names")


PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
PositiveFloat = Annotated[float, Strict(), AfterValidator(_positive)]
NonNegativeFloat = Annotated[float, Strict(), AfterValidator(_non_negative)]
Text = Annotated[str, Strict()]
Axis = Annotated[tuple[PositiveInt, ...], BeforeValidator(_as_tuple), Field(min_length=1)]
Flags = Annotated[tuple[StrictBool, ...], BeforeValidator(_as_tuple), Field(min_length=1)]
Dtype = Annotated[str, Strict(), AfterValidator(_choice("dtype", DTYPES))]
Mode = Annotated[str, Strict(), AfterValidator(_choice("mode", MODES))]
Device = Annotated[str, Strict(), AfterValidator(_device)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SweepAxes(_Frozen):
    """A ``sweep`` mapping: one field per size axis and per sweep flag (:data:`SWEEP_FLAGS`)
    of :mod:`harness.schema` (column order)."""

    if TYPE_CHECKING:  # the fields are made from the schema: an axis's values, or None

        def __getattr__(self, axis: str) -> tuple[int, ...] | None: ...

    def given(self) -> dict[str, tuple[Any, ...]]:
        """The axes given, in column order."""
        return {axis: getattr(self, axis) for axis in _SWEPT if getattr(self, axis) is not None}


_SIZES = schema.axis_names("size")
_SWEPT = tuple(a.name for a in schema.AXES if a.name in _SIZES or a.name in SWEEP_FLAGS)
_SETTINGS = schema.axis_names("setting")

if TYPE_CHECKING:  # for type checkers: the models below, made from the schema
    LayerSweep = SweepAxes
    Sweep = SweepAxes
else:
    LayerSweep = create_model(
        "LayerSweep", __base__=SweepAxes, __module__=__name__,
        __doc__="Sweep axes; in a layer override every axis is optional and replaces the "
        "suite's.",
        **{axis: (Axis | None, None) for axis in _SIZES},
        **{flag: (Flags | None, None) for flag in SWEEP_FLAGS},
    )
    Sweep = create_model(
        "Sweep", __base__=LayerSweep, __module__=__name__,
        __doc__="The suite's sweep: the required axes (n, d) must be given.",
        **{a.name: (Axis, ...) for a in schema.AXES if a.required},
    )


class Measure(_Frozen):
    """How each case is measured; the sweep reads these, the suite layer only validates them.

    Defaults match ``harness.measure.timing.TimingConfig`` and
    ``harness.measure_case.ExecSettings``.
    """

    time_budget_s: PositiveFloat = 1.0  # sampled time per case, warm-up excluded
    min_samples: PositiveInt = 5  # at least this many samples, whatever the budget
    max_samples: PositiveInt = 10_000  # never more than this many samples
    warmup_s: NonNegativeFloat = 0.1  # warm-up time per case, excluded from samples
    min_warmup: NonNegativeInt = 3  # at least this many warm-up calls
    min_block_s: PositiveFloat = 0.002  # one sample times calls lasting at least this long
    spread_threshold: PositiveFloat = 0.1  # IQR / median above this marks a time unreliable
    timeout_s: PositiveFloat = 120.0  # a case running longer becomes a 'timeout' row
    flops: StrictBool = True  # count FLOPs (fvcore, torch) beside the analytic model
    memory: StrictBool = True  # measure peak memory of the call
    structure: StrictBool = True  # measure path length and sequential ops
    structure_max_n: PositiveInt = 512  # structure is measured only for n <= this
    # clock of CPU cases: perf_counter (wall) or process_time (CPU time of the process:
    # steadier on a shared machine, for one thread); CUDA cases always use CUDA events
    timer: Literal["perf_counter", "process_time"] = "perf_counter"
    # CUDA: flush L2 before each sample: auto (while inputs + parameters fit in L2), or
    # always / never; pin it in an n-sweep so the method does not change along the sweep
    flush_l2: Literal["auto"] | StrictBool = "auto"
    # CUDA float32: false forces IEEE (matmuls, cuDNN convolutions and RNNs) and holds FLOP/s
    # against the float32 peak; true allows TF32 everywhere and holds it against the TF32 peak
    tf32: StrictBool = False
    # timing rounds per case, interleaved across the sweep (the budget is split between them)
    rounds: PositiveInt = 3
    # extra rounds at the end for a case whose threads waited for a CPU in every round
    retries: NonNegativeInt = 2
    # torch intra-op threads: 'auto' (the CPUs free at the start of the run) or a count
    threads: Annotated[str | int, BeforeValidator(_threads)] = "auto"


class LayerSpec(_Frozen):
    """One ``layers`` item: a bare name, or a mapping that overrides settings for that layer."""

    name: Text
    variants: Annotated[Any, BeforeValidator(_variants_shape)] = None
    causal: Flags | None = None
    block: Flags | None = None
    #: the suite's modes replaced for this layer (a few decode cases in a forward suite)
    mode: Annotated[tuple[Mode, ...] | None, BeforeValidator(_as_tuple)] = None
    sweep: LayerSweep = LayerSweep()

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if not isinstance(value, dict):
            raise ValueError("is not a layer name or a mapping like {name: lstm, ...}")
        return value

    def is_bare(self) -> bool:
        return (self.variants is None and self.mode is None
                and all(getattr(self, f) is None for f in FLAGS) and not self.sweep.given())


class Suite(_Frozen):
    """A validated suite. ``expand(suite)`` turns it into planned cases."""

    name: Annotated[str, Strict(), AfterValidator(_suite_name)]
    description: Text = ""
    device: Annotated[tuple[Device, ...], BeforeValidator(_as_tuple), Field(min_length=1)] = (
        "auto",
    )
    dtype: Annotated[tuple[Dtype, ...], BeforeValidator(_as_tuple), Field(min_length=1)] = (
        "float32",
    )
    mode: Annotated[tuple[Mode, ...], BeforeValidator(_as_tuple), Field(min_length=1)] = (
        "forward",
    )
    batch: Axis | None = None  # or sweep.batch; neither: 1
    seed: NonNegativeInt = 0
    causal: Flags = (False,)
    block: Flags = (False,)
    variants: Annotated[str, Strict(), AfterValidator(_top_variants)] = "default"
    layers: Annotated[tuple[LayerSpec, ...], BeforeValidator(_as_tuple), Field(min_length=1)]
    sweep: Sweep
    measure: Measure = Measure()

    _source: str = PrivateAttr(default="<suite>")

    @property
    def source(self) -> str:
        """Where the suite came from (a file path), for messages."""
        return self._source

    def batches(self) -> tuple[int, ...]:
        """The suite-wide batch values: top-level ``batch`` or ``sweep.batch``, else (1,)."""
        return self.batch or self.sweep.batch or (1,)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML/JSON-safe) that loads back into an equal suite: 'the suite as run'."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        for key in _SETTINGS:
            out[key] = scalar_or_list(getattr(self, key))
        if self.sweep.batch is None:
            out["batch"] = scalar_or_list(self.batches())
        out["seed"] = self.seed
        for key in FLAGS:
            out[key] = scalar_or_list(getattr(self, key))
        out["variants"] = self.variants
        out["layers"] = [_layer_dict(spec) for spec in self.layers]
        out["sweep"] = {axis: list(values) for axis, values in self.sweep.given().items()}
        out["measure"] = self.measure.model_dump(mode="json")
        return out

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


def scalar_or_list(values: tuple[Any, ...]) -> Any:
    """A one-value sweep as its value, a longer one as a list (as a user writes it)."""
    return values[0] if len(values) == 1 else list(values)


def _layer_dict(spec: LayerSpec) -> Any:
    if spec.is_bare():
        return spec.name
    out: dict[str, Any] = {"name": spec.name}
    if spec.variants is not None:
        out["variants"] = spec.variants if isinstance(spec.variants, str) else list(spec.variants)
    for key in FLAGS:
        if getattr(spec, key) is not None:
            out[key] = scalar_or_list(getattr(spec, key))
    if spec.mode is not None:
        out["mode"] = scalar_or_list(spec.mode)
    if spec.sweep.given():
        out["sweep"] = {axis: list(values) for axis, values in spec.sweep.given().items()}
    return out
