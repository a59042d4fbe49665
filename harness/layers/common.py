"""Helpers shared by the convolution-like layers (conv, local attention, LightConv, DynamicConv)."""

from __future__ import annotations


def pad_left(kernel: int, causal: bool, dilation: int = 1) -> int:
    """Left padding so output t sees inputs t - pad_left + j*dilation, j = 0..k-1.

    Causal: the window ends at t. Otherwise centred; for even k the extra tap is on the
    right (as fairseq's LightConv does): left (k-1)//2, right k//2.
    """
    span = (kernel - 1) * dilation
    return span if causal else ((kernel - 1) // 2) * dilation


def reach(kernel: int, causal: bool) -> tuple[int, int]:
    """(positions looked back, positions looked ahead) by one layer of width ``kernel``."""
    if causal:
        return kernel - 1, 0
    return (kernel - 1) // 2, kernel // 2
