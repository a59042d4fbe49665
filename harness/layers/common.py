"""Helpers shared by the convolution-like layers (conv, local attention, LightConv, DynamicConv)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def conv_channels_last(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       kernel: int, causal: bool, groups: int = 1) -> torch.Tensor:
    """Conv over time of x (B, n, d) with ``weight`` (d_out, d / groups, k), as an F.conv2d
    on the (B, d, n, 1) channels-last *view* of the activations: neither input nor output is
    transposed (oneDNN's channels-last kernels vectorise over the contiguous channels;
    depthwise with groups = d). A centred odd kernel is padded by the conv itself, any other
    by one F.pad. -> (B, n, d_out)."""
    b, n, _ = x.shape
    left = pad_left(kernel, causal)
    right = kernel - 1 - left
    w = weight.unsqueeze(-1)  # (d_out, d / groups, k, 1)
    if left == right:  # no padded copy
        image = x.unsqueeze(2).permute(0, 3, 1, 2)  # (B, d, n, 1), a view
        out = F.conv2d(image, w, bias, padding=(left, 0), groups=groups)
    else:
        image = F.pad(x, (0, 0, left, right)).unsqueeze(2).permute(0, 3, 1, 2)
        out = F.conv2d(image, w, bias, groups=groups)  # (B, d_out, n, 1), channels-last memory
    return out.permute(0, 2, 3, 1).reshape(b, n, weight.shape[0])  # a view when channels-last
