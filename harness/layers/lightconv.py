"""LightConv (Wu et al. 2019): depthwise convolution over time, H shared softmax-normalised kernels.

The kernel is an (H, k) weight, softmax-normalised over the k taps; the d/H contiguous
channels of head h (channel c -> head c // (d/H)) share row h, so the layer has H*k weights
(d=1024, k=7, H=16: 112, against d*k = 7168 for a plain depthwise conv). DropConnect drops
normalised weights in training mode only. ``block=True`` wraps it in Wu et al.'s block:
Linear d -> 2d, GLU, the convolution, Linear d -> d.

Six variants compute the same function from the same parameters: "auto" (the default: "band"
where the window spans about half the sequence or more, n <= 2 (k + 1), else
"channels_last"), "channels_last" (a depthwise F.conv2d on the (B, n, d) activations viewed
as a channels-last (B, d, n, 1) image, so no transpose is copied), "conv1d" (depthwise F.conv1d on
a transposed (B, d, n) copy), "strided" (fairseq's unfolded formulation without its copy:
each sequence's padded window is a strided view that one bmm consumes), "unfold" (the
reference: the unfolded windows copied, then a bmm, as a (B, n, d) layout forces) and "band"
(an (n x n) band matrix per head, applied by one grouped GEMM, ``band_mix``; fairseq's
expanded path for short inputs: O(n^2) executed work, O(k) of it useful per row).
This module also holds the helpers DynamicConv shares (block wrapper, windows, band).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from harness.costs import Cost, StepCost
from harness.layers.band_mix import band_mix
from harness.layers.common import conv_channels_last, pad_left
from harness.layers.decoding import WindowDecoder
from harness.layers.pathlen import stacked_path_length
from harness.layers.window_mix import window_macs
from harness.registry import Builder, LayerEntry
from harness.spec import LayerCase
from harness.theory import Theory

# --------------------------------------------------------------------------- shared helpers


def unfold_time(x: torch.Tensor, kernel: int, causal: bool) -> torch.Tensor:
    """(B, n, d) -> (B, n, d, k): slot j of step t holds x[t - pad_left + j] (0 outside)."""
    return pad_time(x, kernel, causal).unfold(1, kernel, 1)  # (B, n, d, k)


def pad_time(x: torch.Tensor, kernel: int, causal: bool) -> torch.Tensor:
    """(B, n, d) -> (B, n + k - 1, d): zeros before and after, as ``pad_left`` says."""
    left = pad_left(kernel, causal)
    return F.pad(x, (0, 0, left, kernel - 1 - left))


def strided_conv(x: torch.Tensor, kernels: torch.Tensor, causal: bool) -> torch.Tensor:
    """y[b, t, head h's channels] = sum_j kernels[b, t, h, j] x[b, t - pad + j, same channels].

    x (B, n, d); kernels (B, n, H, k), or (1, n, H, k) when every sequence shares them.
    Each padded sequence (n + k - 1, d) is unfolded into an (n*H, k, d/H) strided view (row
    t*H + h starts at element (t*H + h) * d/H, taps d apart): one bmm per sequence contracts
    it with the (n*H, 1, k) kernels, so the B n d k window is never copied (fairseq gets the
    same from its time-major layout; in (B, n, d) the batch stride breaks the view, hence a
    bmm per sequence).
    """
    b, n, d = x.shape
    shared, _, h, k = kernels.shape
    padded = pad_time(x, k, causal)  # (B, n + k - 1, d)
    rows = kernels.reshape(shared, n * h, 1, k)  # (B or 1, n*H, 1, k)
    outs = []
    for i in range(b):
        win = padded[i].unfold(0, k, 1).view(n, h, d // h, k)  # (n, H, c, k), a view
        win = win.transpose(2, 3).reshape(n * h, k, d // h)  # (n*H, k, c), still a view
        outs.append(torch.bmm(rows[i if shared > 1 else 0], win))  # (n*H, 1, c)
    return torch.stack(outs).view(b, n, d)  # (B, n*H, 1, c) -> (B, n, d)


def band_matrix(rows: torch.Tensor, causal: bool) -> torch.Tensor:
    """Scatter per-step kernels rows (..., n, k) into bands (..., n, n): entry (t, s) is
    rows[t, s - t + pad] inside the window, 0 outside.

    Row t of a zeroed (n, n + k - 1) buffer takes its k taps at columns t .. t + k - 1
    through one strided view (row stride n + k: one step right per row), and the n columns
    from ``pad_left`` on are the band. No index tensors, one write, as fairseq builds it.
    """
    *lead, n, k = rows.shape
    width = n + k - 1
    buf = rows.new_zeros(*lead, n, width)  # (..., n, n + k - 1)
    diagonal = buf.as_strided((*lead, n, k), (*buf.stride()[:-2], width + 1, 1))
    diagonal.copy_(rows)
    return buf.narrow(-1, pad_left(k, causal), n)  # (..., n, n), a view


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


class ChannelsLastLightConv(_LightConv):
    """Depthwise F.conv2d on the padded (B, n + k - 1, d) activations seen as a channels-last
    (B, d, n + k - 1, 1) image: a view, so neither input nor output is transposed (oneDNN's
    channels-last depthwise kernel vectorises over the d contiguous channels)."""

    def _convolve(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return channels_last_conv(x, w, self.causal)


def channels_last_conv(x: torch.Tensor, w: torch.Tensor, causal: bool) -> torch.Tensor:
    """x (B, n, d) through the (H, k) weight, each row repeated for its head's d/H channels."""
    full = w.repeat_interleave(x.shape[2] // w.shape[0], dim=0).unsqueeze(1)  # (d, 1, k)
    return conv_channels_last(x, full, None, w.shape[1], causal, groups=x.shape[2])


class Conv1dLightConv(_LightConv):
    """Expand (H, k) to (d, 1, k) and run a depthwise F.conv1d (groups = d) on (B, d, n)."""

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


class StridedLightConv(_LightConv):
    """fairseq's unfolded formulation without the copy: strided windows, one bmm per sequence."""

    def _convolve(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        return strided_conv(x, w.expand(1, n, -1, -1), self.causal)  # kernels (1, n, H, k)


class UnfoldLightConv(_LightConv):
    """Unfold the padded time axis, copy the windows, contract the k taps per head with a bmm.

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


def shared_band_conv(x: torch.Tensor, w: torch.Tensor, causal: bool) -> torch.Tensor:
    """x (B, n, d) through the H (n x n) bands of the (H, k) weight, shared by the batch:
    one grouped GEMM over the input where it lies (``band_mix``; the B sequences read the
    same H bands, which are built once, not B times)."""
    b, n, _ = x.shape
    band = band_matrix(w.unsqueeze(1).expand(-1, n, -1), causal)  # (H, n, n)
    return band_mix(band.unsqueeze(0).expand(b, -1, -1, -1), x)


class BandLightConv(_LightConv):
    """One (n x n) band per head, shared by the batch, times each sequence: O(n^2) executed."""

    def _convolve(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return shared_band_conv(x, w, self.causal)


#: "auto" runs the band where the window spans at least about half the sequence
#: (n <= BAND_SPAN (k + 1)): the band's n^2 multiply-adds per channel are then at most ~2x the
#: convolution's n k, and a GEMM runs them several times faster than oneDNN's depthwise
#: kernel. Measured (paired rounds, 2 threads, batch 8, d = 512 and 1024; docs/metrics.md):
#: at n = 64 the band is 0.69-0.91x of channels_last's time with k = 31, 0.94-1.34x with
#: k = 15; at n = 128, k = 31 1.04-1.25x.
BAND_SPAN = 2


def lightconv_path(n: int, kernel: int) -> str:
    """The fixed variant "auto" runs at sequence length n and kernel width k."""
    return "band" if n <= BAND_SPAN * (kernel + 1) else "channels_last"


class AutoLightConv(_LightConv):
    """The band where the window spans about half the sequence or more, else channels_last."""

    def _convolve(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if lightconv_path(x.shape[1], self.kernel) == "band":
            return shared_band_conv(x, w, self.causal)
        return channels_last_conv(x, w, self.causal)


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
    """Analytic cost; ``flops`` counts what the kernels execute, padded taps included.

    ``flops``: 2 B n d k for "channels_last", "conv1d", "strided" and "unfold" (a conv or bmm
    multiplies the zero padding too); "band" multiplies the full (n x n) band, 2 B n^2 d.
    ``flops_useful``: only the taps that read inside the sequence, 2 B d sum_j (n - |j -
    pad|)+ (``window_macs``): a multiply by a padded zero is not needed. The block adds
    6 B n d^2.
    ``flops_other``: softmax over the (H, k) weight (5 H k) plus the block's biases and GLU.
    ``train_flops``: every variant's backward runs two contractions per forward one (grad of
    input and of weight; the input requires grad), so train = 3x forward. Note: torch's
    FlopCounterMode ignores ``groups`` in the conv grad-weight formula and counts the
    "conv1d" and "channels_last" variants' grad weight d times too high (2 B n d^2 k instead
    of 2 B n d k); harness.flops fixes it.
    ``activation_elements`` (estimate): padded input B (n+k-1) d (none for "channels_last"
    with a centred odd kernel, which F.conv2d pads itself) and output B n d, plus the
    unfolded copy the bmm needs (B n d k) for "unfold"; for "strided" the per-step kernels
    expanded for the bmm (n H k) and the per-sequence outputs before they are stacked (B n d);
    for "band" the zeroed band buffer H n (n+k-1) beside the output (the grouped GEMM of
    ``band_mix``; its bmm fallback adds copies); "auto" is the path ``lightconv_path`` picks;
    the block's 4 B n d.
    """
    b, n, d, h, k = case.batch, case.n, case.d, case.h, case.k
    conv = 2 * b * n * d * k
    padded_io = b * (n + k - 1) * d + b * n * d
    if variant == "auto":
        variant = lightconv_path(n, k)
    if variant == "channels_last":  # a centred odd kernel is padded by the conv itself
        padded = 0 if 2 * pad_left(k, case.causal) == k - 1 else b * (n + k - 1) * d
        executed, act = conv, padded + b * n * d
    elif variant == "conv1d":
        executed, act = conv, padded_io
    elif variant == "strided":
        executed, act = conv, padded_io + n * h * k + b * n * d
    elif variant == "unfold":
        executed, act = conv, padded_io + b * n * d * k
    elif variant == "band":
        executed, act = 2 * b * n * n * d, h * n * (n + k - 1) + b * n * d
    else:
        raise ValueError(f"lightconv has no variant {variant!r}")
    extra = block_flops(case)
    return Cost(
        flops=executed + extra,
        flops_useful=2 * window_macs(b, n, d, k, pad_left(k, case.causal)) + extra,
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
        "auto": builder(AutoLightConv),
        "channels_last": builder(ChannelsLastLightConv),
        "conv1d": builder(Conv1dLightConv),
        "strided": builder(StridedLightConv),
        "unfold": builder(UnfoldLightConv),
        "band": builder(BandLightConv),
    },
    default_variant="auto",
    reference_variant="unfold",
    cost=lightconv_cost,
    step_cost=lightconv_step_cost,
    theory=Theory(complexity="O(k n d)", seq_ops="O(1)", path_length="O(n/k)",
                  terms=("k n d",), flag_terms=BLOCK_TERMS),
    colour="#029e73",  # green
)]
