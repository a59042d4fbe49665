"""The inputs of a case beyond x: random tensors of the shapes its layer declares
(``LayerEntry.inputs``; cross attention's encoder output), drawn like x.

Every consumer (the case runner, the FLOP counters, the structure probe, decoding) calls
a layer's module as ``module(x, *extra)``; a layer without extra inputs gets ``()``.
"""

from __future__ import annotations

import torch

from harness.registry import LayerEntry
from harness.spec import LayerCase


def extra_inputs(entry: LayerEntry, case: LayerCase, *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
    """One standard-normal tensor per declared shape, from ``generator`` (None: the global
    RNG, as x is drawn), in the order the module takes them after x."""
    return tuple(torch.randn(shape, generator=generator, device=device, dtype=dtype)
                 for shape in entry.extra_shapes(case))
