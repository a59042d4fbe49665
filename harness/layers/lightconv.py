"""LightConv (Wu et al. 2019): depthwise convolution over time, H shared softmax-normalised kernels.

The kernel is an (H, k) weight, softmax-normalised over the k taps; the d/H contiguous
channels of head h (channel c -> head c // (d/H)) share row h, so the layer has H*k weights
(d=1024, k=7, H=16: 112, against d*k = 7168 for a plain depthwise conv). DropConnect drops
normalised weights in training mode only. ``block=True`` wraps it in Wu et al.'s block:
Linear d -> 2d, GLU, the convolution, Linear d -> d.

Three variants compute the same function from the same parameters:
"conv1d" (grouped F.conv1d, the default), "unfold" (the reference: unfolded time axis and a
bmm, linear in n) and "band" (an (n x n) band matrix per head and a bmm, as fairseq does
for short inputs: O(n^2) executed work, O(k) of it useful per row).
This module also holds the helpers DynamicConv shares (block wrapper, unfold, band index).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from harness.costs import Cost, StepCost
from harness.layers.common import pad_left
from harness.layers.decoding import WindowDecoder
from harness.layers.pathlen import stacked_path_length
from harness.registry import Builder, LayerEntry
from harness.spec import LayerCase
from harness.theory import Theory

# --------------------------------------------------------------------------- shared helpers


def unfold_time(x: torch.Tensor, kernel: int, causal: bool) -> torch.Tensor:
    """(B, n, d) -> (B, n, d, k): slot j of step t holds x[t - pad_left + j] (0 outside)."""
    left = pad_left(kernel, causal)
    padded = F.pad(x, (0, 0, left, kernel - 1 - left))  # (B, n + k - 1, d)
    return padded.unfold(1, kernel, 1)  # (B, n, d, k)


def band_index(n: int, kernel: int, causal: bool, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Tap of input s for output t, clamped to [0, k), and whether it is a real tap.

    Returns (tap (n, n) long, inside (n, n) bool): output t uses input s with weight
    w[tap[t, s]] when inside[t, s], else 0.
    """
    t = torch.arange(n, device=device)
    tap = t[None, :] - t[:, None] + pad_left(kernel, causal)  # (n, n)
    inside = (tap >= 0) & (tap < kernel)
    return tap.clamp(0, kernel - 1), inside


def band_matmul(band: torch.Tensor, x: torch.Tensor, heads: int) -> torch.Tensor:
    """Apply per-head (B, H, n, n) band matrices to x (B, n, d) with one bmm -> (B, n, d)."""
    b, n, d = x.shape
    c = d // heads
    xh = x.view(b, n, heads, c).permute(0, 2, 1, 3).reshape(b * heads, n, c)  # (B*H, n, c)
    out = torch.bmm(band.reshape(b * heads, n, n), xh)  # (B*H, n, c)
    return out.view(b, heads, n, c).permute(0, 2, 1, 3).reshape(b, n, d)


class ConvBlock(WindowDecoder, nn.Module):
    """Optional Wu et al. block around a time-mixing core: Linear d->2d, GLU, core, Linear d->d.

    Decoding (causal): a ring of the last k - 1 inputs of the convolution (after the GLU
    with ``block``); ``_step_mix(x_t, win)`` is the convolution's output for one position.
    """

    def __init__(self, d_model: int, heads: int, kernel: int, causal: bool, block: bool,
                 dropout: float) -> None:
        super().__init__()
        if heads < 1 or d_model % heads:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        if kernel < 1:
            raise ValueError(f"kernel must be >= 1, got {kernel}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.d_model, self.heads, self.kernel = d_model, heads, kernel
        self.causal, self.block, self.dropout = causal, block, dropout
        if block:
            self.glu_proj = nn.Linear(d_model, 2 * d_model, bias=True)
            self.out_proj = nn.Linear(d_model, d_model, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, n, d) -> (B, n, d)
        if self.block:
            x = F.glu(self.glu_proj(x), dim=-1)  # (B, n, d)
        y = self._mix(x)  # (B, n, d)
        return self.out_proj(y) if self.block else y

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode_in(self, x_t: torch.Tensor) -> torch.Tensor:
        return F.glu(self.glu_proj(x_t), dim=-1) if self.block else x_t

    def _decode_out(self, y_t: torch.Tensor) -> torch.Tensor:
        return self.out_proj(y_t) if self.block else y_t

    def _window_out(self, win: torch.Tensor) -> torch.Tensor:  # (B, k, d) -> (B, 1, d)
        return self._step_mix(win, win[:, -1:])

    def _step_mix(self, win: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, heads={self.heads}, kernel={self.kernel}, "
                f"causal={self.causal}, block={self.block}, dropout={self.dropout}")


# --------------------------------------------------------------------------- LightConv


class _LightConv(ConvBlock):
    def __init__(self, d_model: int, heads: int, kernel: int, causal: bool = False,
                 block: bool = False, dropout: float = 0.0) -> None:
        super().__init__(d_model, heads, kernel, causal, block, dropout)
        self.weight = nn.Parameter(torch.empty(heads, kernel))  # (H, k)
        nn.init.xavier_uniform_(self.weight)

    def normalized_weight(self) -> torch.Tensor:
        """softmax over the k taps, then DropConnect (training only) -> (H, k)."""
        w = self.weight.softmax(dim=-1)
        return F.dropout(w, self.dropout, self.training)

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        return self._convolve(x, self.normalized_weight())

    def _convolve(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _step_mix(self, win: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        return window_bmm(win, self.normalized_weight().expand(win.shape[0], -1, -1))


def window_bmm(win: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """One position's output (B, 1, d) of windows (B, k, d) and per-head kernels (B, H, k):
    one bmm, the k taps of each head's d/H channels."""
    b, k, d = win.shape
    h = kernels.shape[1]
    taps = win.view(b, k, h, d // h).permute(0, 2, 3, 1).reshape(b * h, d // h, k)
    out = torch.bmm(taps, kernels.reshape(b * h, k, 1))  # (B*H, c, 1)
    return out.view(b, 1, d)


class Conv1dLightConv(_LightConv):
    """Expand (H, k) to (d, 1, k) and run a depthwise F.conv1d (groups = d)."""

    def _convolve(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        d, k = self.d_model, self.kernel
        left = pad_left(k, self.causal)
        full = w.repeat_interleave(d // self.heads, dim=0).unsqueeze(1)  # (d, 1, k)
        xt = F.pad(x.transpose(1, 2), (left, k - 1 - left))  # (B, d, n + k - 1)
        return F.conv1d(xt, full, groups=d).transpose(1, 2)  # (B, n, d)

    def _step_mix(self, win: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        d = self.d_model
        full = self.normalized_weight().repeat_interleave(d // self.heads, dim=0)  # (d, k)
        return F.conv1d(win.transpose(1, 2), full.unsqueeze(1), groups=d).transpose(1, 2)


class UnfoldLightConv(_LightConv):
    """Unfold the padded time axis and contract the k taps per head with one bmm.

    An explicit bmm (not einsum, which turns a size-1 contraction into an uncounted
    elementwise multiply) keeps the work visible to FLOP counters.
    """

    def _convolve(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h, c, k = self.heads, d // self.heads, self.kernel
        xu = unfold_time(x, k, self.causal).reshape(b, n, h, c, k)  # (B, n, H, c, k)
        xu = xu.permute(2, 0, 1, 3, 4).reshape(h, b * n * c, k)  # (H, B*n*c, k)
        out = torch.bmm(xu, w.unsqueeze(-1))  # (H, B*n*c, 1)
        return out.view(h, b, n, c).permute(1, 2, 0, 3).reshape(b, n, d)


class BandLightConv(_LightConv):
    """Scatter the taps into an (n x n) band per head and multiply: O(n^2) executed."""

    def _convolve(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        tap, inside = band_index(n, self.kernel, self.causal, x.device)
        band = torch.where(inside, w[:, tap], w.new_zeros(()))  # (H, n, n)
        return band_matmul(band.expand(b, -1, -1, -1), x, self.heads)


# --------------------------------------------------------------------------- cost model


def block_flops(case: LayerCase) -> int:
    """Matmul FLOPs of the block's Linear d->2d and Linear d->d (0 without block)."""
    b, n, d = case.batch, case.n, case.d
    return (2 * b * n * d * 2 * d + 2 * b * n * d * d) if case.block else 0


def block_other_flops(case: LayerCase) -> int:
    """Block elementwise FLOPs: biases (2 B n d + B n d) and GLU (sigmoid + multiply, 2 B n d)."""
    return 5 * case.batch * case.n * case.d if case.block else 0


def block_params(case: LayerCase) -> int:
    d = case.d
    return (2 * d * d + 2 * d + d * d + d) if case.block else 0


def block_activations(case: LayerCase) -> int:
    """Linear d->2d output, GLU output and the final Linear output (4 B n d)."""
    return 4 * case.batch * case.n * case.d if case.block else 0


def lightconv_cost(case: LayerCase, variant: str) -> Cost:
    """Analytic cost; conv FLOPs count every tap, padded ones included (zero padding is the math).

    ``flops``: 2 B n d k for "conv1d" and "unfold"; "band" multiplies the full (n x n) band,
    2 B n^2 d. ``flops_useful`` = 2 B n d k for all three. The block adds 6 B n d^2.
    ``flops_other``: softmax over the (H, k) weight (5 H k) plus the block's biases and GLU.
    ``train_flops``: every variant's backward runs two contractions per forward one (grad of
    input and of weight; the input requires grad), so train = 3x forward. Note: torch's
    FlopCounterMode ignores ``groups`` in the conv grad-weight formula and counts the conv1d
    variant's grad weight d times too high (2 B n d^2 k instead of 2 B n d k).
    ``activation_elements`` (estimate): padded input B (n+k-1) d and output B n d, plus the
    unfolded copy the bmm needs (B n d k) for "unfold", or the band (B H n^2) and a permuted
    input copy (B n d) for "band"; the block's 4 B n d.
    """
    b, n, d, h, k = case.batch, case.n, case.d, case.h, case.k
    conv = 2 * b * n * d * k
    padded_io = b * (n + k - 1) * d + b * n * d
    if variant == "conv1d":
        executed, act = conv, padded_io
    elif variant == "unfold":
        executed, act = conv, padded_io + b * n * d * k
    elif variant == "band":
        executed, act = 2 * b * n * n * d, b * h * n * n + 2 * b * n * d
    else:
        raise ValueError(f"lightconv has no variant {variant!r}")
    extra = block_flops(case)
    return Cost(
        flops=executed + extra,
        flops_useful=conv + extra,
        flops_other=5 * h * k + block_other_flops(case),
        train_flops=3 * (executed + extra),
        params=h * k + block_params(case),
        activation_elements=act + block_activations(case),
        seq_ops=1,
        path_length=stacked_path_length(n, k, case.causal),
    )


# --------------------------------------------------------------------------- registration


def builder(cls: type[nn.Module]) -> Builder:
    """A variant's ``build(case, depth)`` (LightConv's and DynamicConv's take the same)."""

    def build(case: LayerCase, depth: int) -> nn.Module:
        return cls(case.d_model, case.h, case.k, case.causal, case.block)

    return build


#: The block (Linear d->2d, GLU, conv, Linear d->d) adds n d^2 to either layer's FLOPs.
BLOCK_TERMS = {"block": ("n d^2",)}

def conv_block_step_cost(case: LayerCase, conv_flops: int, other: int) -> StepCost:
    """One decode step of LightConv / DynamicConv: the convolution's ``conv_flops`` and
    ``other``, plus the block's 6 B d^2 (and 5 B d elementwise); state: the last k - 1
    inputs of the convolution, B min(n, k - 1) d."""
    step = replace(case, seq_len=1)  # the block's Linear layers see one position
    return StepCost(flops=conv_flops + block_flops(step),
                    flops_other=other + block_other_flops(step),
                    state_elements=case.batch * min(case.n, case.k - 1) * case.d)


def lightconv_step_cost(case: LayerCase, variant: str) -> StepCost:
    """2 B k d for the convolution of one position (+ the block)."""
    return conv_block_step_cost(case, 2 * case.batch * case.k * case.d, 0)


LAYERS = [LayerEntry(
    name="lightconv",
    family="lightconv",
    summary="LightConv (Wu et al. 2019): depthwise conv, H softmax-normalised kernels shared "
            "by the d/H channels of a head; block=True adds Linear-GLU ... Linear",
    params=frozenset({"heads", "kernel", "causal", "block"}),
    required=frozenset({"heads", "kernel"}),
    variants={
        "conv1d": builder(Conv1dLightConv),
        "unfold": builder(UnfoldLightConv),
        "band": builder(BandLightConv),
    },
    default_variant="conv1d",
    reference_variant="unfold",
    cost=lightconv_cost,
    step_cost=lightconv_step_cost,
    theory=Theory(complexity="O(k n d)", seq_ops="O(1)", path_length="O(n/k)",
                  terms=("k n d",), flag_terms=BLOCK_TERMS),
    colour="#029e73",  # green
)]
