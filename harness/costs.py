"""Analytic cost of one layer instance, and the conventions behind every number.

FLOP convention (docs/metrics.md, "FLOPs"): one multiply-add = 2 FLOPs. ``flops`` counts only the
multiply-adds of matmuls, convolutions and their batched forms - exactly what fvcore
(times 2) and ``torch.utils.flop_counter`` count - so the three sources are comparable.
Everything else a layer does (bias additions, softmax, activations, gating, masking) is
counted in ``flops_other`` with one FLOP per elementwise arithmetic operation
(softmax: 5 per element - max, subtract, exp, sum, divide; sigmoid/tanh: 1 each).

``flops`` is what the variant *executes*; ``flops_useful`` is what the layer's math needs.
They differ where an implementation does wasted work: the band-matrix LightConv /
DynamicConv paths multiply an (n x n) matrix that is zero outside a band of width k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Cost:
    """Analytic cost of one forward (and train) pass of one layer instance."""

    flops: int  # forward matmul/conv FLOPs executed by this variant (2 per multiply-add)
    flops_useful: int  # forward FLOPs the math needs (== flops unless the variant wastes work)
    flops_other: int  # forward elementwise FLOPs (bias, softmax, activations), 1 per op
    train_flops: int  # forward + backward matmul/conv FLOPs executed (input requires grad)
    params: int  # trainable parameter count; tests check it equals the module's
    activation_elements: int  # elements of the largest set of forward intermediates alive at once
    seq_ops: int  # sequential operations (Vaswani et al. Table 1): 1 or n
    path_length: float  # max path length; math.inf when some pair is never connected,
    # math.nan where the model does not say (a layer's docstring says when)

    def __post_init__(self) -> None:
        for name in ("flops", "flops_useful", "flops_other", "train_flops", "params",
                     "activation_elements", "seq_ops"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Cost.{name} must be a non-negative int, got {value!r}")
        if not (self.path_length >= 1 or math.isinf(self.path_length)
                or math.isnan(self.path_length)):
            raise ValueError(f"Cost.path_length must be >= 1, inf or nan, got "
                             f"{self.path_length!r}")

    def activation_bytes(self, itemsize: int) -> int:
        return self.activation_elements * itemsize


@dataclass(frozen=True)
class StepCost:
    """Analytic cost of one decode step (``mode: decode``): B new tokens, one per sequence,
    after ``seq_len`` positions held in the layer's state (docs/metrics.md, "Decoding")."""

    flops: int  # matmul/conv FLOPs of the step (2 per multiply-add), all B tokens
    flops_other: int  # elementwise FLOPs of the step, 1 per op
    state_elements: int  # elements the state holds for the seq_len positions (live part)

    def __post_init__(self) -> None:
        for name in ("flops", "flops_other", "state_elements"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"StepCost.{name} must be a non-negative int, got {value!r}")
