"""Expanding a suite into planned cases, and the ``harness validate`` summary of a plan.

Crossing order is fixed so plans (and result files) are reproducible: layers as written, then
variant, then the axes in ``harness.schema.PLAN_ORDER`` (device, dtype, mode, causal, block,
batch, d_model, heads, kernel, window, and ``seq_len`` innermost: a sweep over n runs as one
stretch, smallest n first as written).
Axes a layer does not take are not crossed for it: they stay None (flags False), so an RNN in
a suite sweeping four head counts gets one case per (n, d), not four identical ones.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from tabulate import tabulate

from harness import registry, schema
from harness.registry import LayerEntry
from harness.spec import LayerCase
from harness.suite.check import resolve_device
from harness.suite.model import FLAGS, OPTIONAL_AXES, SWEEP_FLAGS, LayerSpec, Suite

#: Bump when the meaning of a case's parameters changes: every case_id changes with it.
CASE_ID_VERSION = 1


@dataclass(frozen=True)
class PlannedCase:
    """One case to run (or to report as skipped, with ``skip_reason``)."""

    layer: str
    variant: str
    case: LayerCase  # normalised: parameters the layer does not take are None / False
    dtype: str
    device: str  # resolved: never 'auto'
    mode: str
    seed: int
    skip_reason: str | None = None  # why the case cannot exist (d % h != 0, ...), else None
    label: str = ""  # readable and unique within its plan, e.g. 'lstm-n512-d256'

    @property
    def runnable(self) -> bool:
        return self.skip_reason is None

    def params(self) -> dict[str, Any]:
        """The case's parameters as flat columns (results-dataframe names)."""
        return {name: getattr(self.case if name in schema.LAYER_AXES else self, name)
                for name in schema.CASE_COLUMNS}

    @property
    def case_id(self) -> str:
        """A short, stable hash of ``params()``: same parameters, same id, on any run.

        An axis added after the ids were first issued (``schema.ADDED_AXES``) is left out
        at the value older cases had, so a case that does not use it keeps the id it always
        had (resume and compare of older results still match it).
        """
        added = schema.ADDED_AXES
        params = {k: v for k, v in self.params().items()
                  if not (k in added and v == added[k])}
        text = json.dumps({"v": CASE_ID_VERSION, **params}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _variants(spec: LayerSpec, suite: Suite, entry: LayerEntry) -> tuple[str, ...]:
    chosen = suite.variants if spec.variants is None else spec.variants
    if chosen == "all":
        return tuple(entry.variants)
    if chosen == "default":
        return (entry.default_variant,)
    return tuple(dict.fromkeys(chosen))


def _axis(axis: str, spec: LayerSpec, suite: Suite, entry: LayerEntry,
          devices: tuple[str, ...]) -> tuple[Any, ...]:
    if axis == "device":
        return devices
    if axis == "mode" and spec.mode is not None:
        return tuple(dict.fromkeys(spec.mode))
    if schema.axis(axis).kind == "setting":
        return tuple(dict.fromkeys(getattr(suite, axis)))
    if axis in OPTIONAL_AXES and axis not in entry.params:
        return (None,)
    if axis in FLAGS:
        if axis not in entry.params:
            return (False,)
        values = getattr(spec, axis) or getattr(suite, axis)
    elif axis in SWEEP_FLAGS:  # a layer's sweep replaces the suite's; neither: off
        values = spec.sweep.given().get(axis) or getattr(suite.sweep, axis) or (False,)
    else:
        values = spec.sweep.given().get(axis)
        if values is None:
            values = suite.batches() if axis == "batch" else getattr(suite.sweep, axis)
    return tuple(dict.fromkeys(values)) if values is not None else (None,)


def _image_sizes(point: dict[str, Any], spec: LayerSpec) -> None:
    """An image layer's case (2D local attention): width defaults to height (square), and
    seq_len is height x width unless the layer's own sweep gives it (then the layer's
    check reports a mismatch). A decode case holds seq_len positions and times the step
    that generates the next: derived, it is the image's last pixel (height x width - 1
    held)."""
    if point.get("height") is None:
        return
    if point.get("width") is None:
        point["width"] = point["height"]
    if "seq_len" not in spec.sweep.given():
        last = 1 if point["mode"] == "decode" else 0
        point["seq_len"] = point["height"] * point["width"] - last


def _layer_cases(spec: LayerSpec, suite: Suite, devices: tuple[str, ...]) -> list[PlannedCase]:
    entry = registry.get(spec.name)
    grid = itertools.product(
        _variants(spec, suite, entry),
        *(_axis(axis, spec, suite, entry, devices) for axis in schema.PLAN_ORDER),
    )
    out = []
    for variant, *values in grid:
        point = dict(zip(schema.PLAN_ORDER, values, strict=True))
        _image_sizes(point, spec)
        case = entry.normalize(LayerCase(**{a: point.pop(a) for a in schema.LAYER_AXES}))
        out.append(
            PlannedCase(
                layer=spec.name, variant=variant, case=case, **point, seed=suite.seed,
                skip_reason=entry.problem(case, decode=point["mode"] == "decode") or (
                    entry.decode_problem(case) if point["mode"] == "decode" else None) or (
                    _compile_problem(point["mode"], point["device"]) if case.compile else None),
            )
        )
    return out


def _compile_problem(mode: str, device: str) -> str | None:
    """Why a compiled case cannot run (decode, or no compiler for the device), or None."""
    from harness.measure.compiled import DECODE_REASON, compile_problem

    return DECODE_REASON if mode == "decode" else compile_problem(device)


def expand(suite: Suite) -> list[PlannedCase]:
    """Every case of ``suite`` in a fixed order, duplicates removed, each with a unique label.

    Impossible cases are kept with ``skip_reason`` set, so a report can list them.
    """
    devices = tuple(dict.fromkeys(resolve_device(d) for d in suite.device))
    seen: set[tuple[Any, ...]] = set()
    planned: list[PlannedCase] = []
    for spec in suite.layers:
        for item in _layer_cases(spec, suite, devices):
            key = tuple(item.params().values())
            if key not in seen:
                seen.add(key)
                planned.append(item)
    return _labelled(planned)


def _labelled(planned: list[PlannedCase]) -> list[PlannedCase]:
    """Each case named by its layer (and variant, where the layer has several), then its
    axes: a required size always, an optional one where the layer takes it, a flag when set,
    and a size every layer takes (batch) or a setting only where the plan varies it."""
    variants: dict[str, set[str]] = {}
    for item in planned:
        variants.setdefault(item.layer, set()).add(item.variant)
    params = [item.params() for item in planned]
    varying = {a.name for a in schema.AXES if len({p[a.name] for p in params}) > 1}
    out = []
    for item, values in zip(planned, params, strict=True):
        parts = [item.layer]
        if len(variants[item.layer]) > 1:
            parts.append(item.variant)
        for a in schema.AXES:
            value = values[a.name]
            if a.kind == "flag" and value:
                parts.append(a.name)
            elif a.kind == "setting" and a.name in varying:
                parts.append(str(value))
            elif a.kind == "size" and value is not None and (
                    a.required or a.optional or a.name in varying):
                parts.append(f"{a.symbol}{value}")
        out.append(replace(item, label="-".join(parts)))
    return out


def summarize(planned: list[PlannedCase], title: str | None = None) -> str:
    """The ``harness validate`` text: cases per layer (runnable, skipped), skips with reasons."""
    layers = list(dict.fromkeys(item.layer for item in planned))
    runnable = Counter(item.layer for item in planned if item.runnable)
    skipped = Counter(item.layer for item in planned if not item.runnable)
    rows = [(name, runnable[name] + skipped[name], runnable[name], skipped[name])
            for name in layers]
    n_run, n_skip = sum(runnable.values()), sum(skipped.values())
    rows.append(("total", n_run + n_skip, n_run, n_skip))
    lines = [title] if title else []
    lines.append(tabulate(rows, ("layer", "cases", "runnable", "skipped")))
    skips = [item for item in planned if not item.runnable]
    if skips:
        lines.append("")
        lines.append(f"skipped ({len(skips)}):")
        lines += [f"  {item.label}: {item.skip_reason}" for item in skips]
    return "\n".join(lines)
