"""Rules a suite must pass beyond its types: known layers and variants, axes a layer takes,
settings that contradict each other, and devices this machine has."""

from __future__ import annotations

from typing import Any

from harness import registry, schema
from harness.errors import HarnessInputError
from harness.suite.messages import Loc, display_loc, locate, show
from harness.suite.model import FLAGS, OPTIONAL_AXES, Suite, did_you_mean, scalar_or_list


def check_suite(suite: Suite, raw: Any, notes: dict[Loc, str], *, check_device: bool) -> None:
    """Raise HarnessInputError (one line) for the first rule ``suite`` breaks."""

    def fail(loc: Loc, text: str) -> None:
        raise HarnessInputError(locate(suite.source, display_loc(loc, raw), text, notes))

    _check_layers(suite, fail)
    if suite.batch is not None and suite.sweep.batch is not None:
        loc: Loc = ("batch",) if ("batch",) in notes else ("sweep", "batch")
        fail(loc, "batch is given both at the top level and in sweep; keep one")
    measure = suite.measure
    if measure.max_samples < measure.min_samples:
        fail(
            ("measure", "max_samples"),
            f"{measure.max_samples} is below measure.min_samples ({measure.min_samples})",
        )
    if check_device:
        for i, device in enumerate(suite.device):
            reason = device_problem(device)
            if reason:
                fail(("device", i), f"{device!r} {reason}")


def _check_layers(suite: Suite, fail: Any) -> None:
    known = registry.names()
    for i, spec in enumerate(suite.layers):
        if spec.name not in known:
            hint = did_you_mean(spec.name, known) or f" (known: {', '.join(known)})"
            fail(("layers", i, "name"), f"{spec.name!r} is not a registered layer{hint}")
        entry = registry.get(spec.name)
        if isinstance(spec.variants, tuple):
            for j, variant in enumerate(spec.variants):
                if variant not in entry.variants:
                    choices = list(entry.variants)
                    hint = did_you_mean(variant, choices)
                    fail(
                        ("layers", i, "variants", j),
                        f"{variant!r} is not a variant of {spec.name} "
                        f"(one of {', '.join(choices)}, or 'all'){hint}",
                    )
        takes = [p for p in (*OPTIONAL_AXES, *FLAGS) if p in entry.params]
        takes_text = ", ".join([*schema.axis_names("size", optional=False), *takes])
        for axis, values in spec.sweep.given().items():
            if axis in OPTIONAL_AXES and axis not in entry.params:
                fail(
                    ("layers", i, "sweep", axis),
                    f"{show(list(values))} does not apply to {spec.name} "
                    f"(it takes {takes_text})",
                )
        for flag in FLAGS:
            if getattr(spec, flag) is not None and flag not in entry.params:
                fail(
                    ("layers", i, flag),
                    f"{show(scalar_or_list(getattr(spec, flag)))} does not apply to {spec.name} "
                    f"(it takes {takes_text})",
                )


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot run here, or None (``auto`` always can)."""
    if not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return "is not available: this machine has no CUDA device (use device=cpu or auto)"
    count = torch.cuda.device_count()
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        last = f"cuda:{count - 1}"
        return f"is not available: this machine has {count} CUDA device(s), cuda:0..{last}"
    return None


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` if a CUDA device is present, else ``cpu``; others unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
