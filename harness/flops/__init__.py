"""FLOP counting by torch's FlopCounterMode and by fvcore, holes filled, side by side.

Both counters report FLOPs with one multiply-add = 2 FLOPs (fvcore's own 1-per-multiply-add
counts are doubled) and list every op they could not count; see :class:`FlopCount`.
"""

from harness.flops.classify import is_flop_free
from harness.flops.fvcore_counter import count_fvcore
from harness.flops.layer import count_layer, count_step
from harness.flops.result import FlopCount
from harness.flops.torch_counter import count_torch

__all__ = ["FlopCount", "count_fvcore", "count_layer", "count_step", "count_torch", "is_flop_free"]
