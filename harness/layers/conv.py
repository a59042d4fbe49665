"""Convolutions over time: contiguous, dilated (WaveNet / ByteNet) and depthwise-separable.

Every layer maps (B, n, d) -> (B, n, d): the input is padded on the time axis with
:func:`harness.layers.common.pad_left` (causal: the window ends at t; otherwise centred,
the extra tap of an even kernel on the right) so the output has length n.

Variants of one layer share parameter names and shapes (those of nn.Conv1d):

* ``conv1d``: ``F.pad`` + ``F.conv1d`` (the library kernel).
* ``unfold``: the padded time axis unfolded into (B, n, d, k) windows, then a matmul /
  bmm - the unfused reference, which materialises the B*n*d*k window buffer.
* ``channels_last`` (the default of conv and conv_separable): the conv (separable: its
  depthwise part) as an F.conv2d on the (B, n, d) activations viewed as a channels-last
  (B, d, n, 1) image, as LightConv's default: no transposed copy in or out (the separable
  pointwise Linear reads the result as it lies). Not for the dilated layer (see
  :class:`ConvChannelsLast`).

``flops`` count every tap, including taps that fall on padding: that is what the variants
and every counter execute. ``flops_useful`` counts only the taps that read inside the
sequence (``window_macs``), as for LightConv and DynamicConv.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.costs import Cost, StepCost
from harness.layers.common import conv_channels_last, pad_left, reach
from harness.layers.decoding import WindowDecoder
from harness.layers.pathlen import stacked_path_length
from harness.layers.window_mix import window_macs
from harness.registry import Builder, LayerEntry
from harness.spec import LayerCase
from harness.theory import Theory

# --------------------------------------------------------------------------- helpers


def _check_input(x: Tensor, d: int) -> None:
    if x.dim() != 3 or x.shape[-1] != d:
        raise ValueError(f"expected input (B, n, {d}), got {tuple(x.shape)}")


def _pads(kernel: int, causal: bool, dilation: int) -> tuple[int, int]:
    """(left, right) zero padding that keeps the output length equal to the input's."""
    left = pad_left(kernel, causal, dilation)
    return left, (kernel - 1) * dilation - left


def _windows(x: Tensor, kernel: int, causal: bool, dilation: int) -> Tensor:
    """Sliding windows over time: (B, n, d) -> (B, n, d, k), a view of a padded copy.

    Window t holds the inputs t - left + j*dilation, j = 0..k-1 (zeros off the sequence).
    """
    left, right = _pads(kernel, causal, dilation)
    xp = F.pad(x, (0, 0, left, right))  # (B, n + span, d)
    span = (kernel - 1) * dilation
    return xp.unfold(1, span + 1, 1)[..., ::dilation]  # (B, n, d, k)


def _uniform_(param: Tensor, fan_in: int) -> None:
    """nn.Conv1d / nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(param, -bound, bound)


# --------------------------------------------------------------------------- dense conv


class _DenseConv(WindowDecoder, nn.Module):
    """Parameters of Conv1d(d, d, k, bias=True) and the geometry of the padding.

    Decoding (causal): a ring of the last (k - 1) * dilation inputs (WindowDecoder).
    """

    def __init__(self, d: int, kernel: int, causal: bool, dilation: int = 1) -> None:
        super().__init__()
        if d <= 0 or kernel <= 0 or dilation <= 0:
            raise ValueError(
                f"d, kernel and dilation must be positive, got {d}, {kernel}, {dilation}"
            )
        self.d, self.kernel, self.causal, self.dilation = d, kernel, causal, dilation
        self.weight = nn.Parameter(torch.empty(d, d, kernel))  # (d_out, d_in, k)
        self.bias = nn.Parameter(torch.empty(d))  # (d_out,)
        _uniform_(self.weight, d * kernel)
        _uniform_(self.bias, d * kernel)

    def extra_repr(self) -> str:
        return f"d={self.d}, kernel={self.kernel}, causal={self.causal}, dilation={self.dilation}"

    @property
    def d_model(self) -> int:  # type: ignore[override]
        return self.d

    @property
    def _dilation(self) -> int:
        return self.dilation


class Conv1dTime(_DenseConv):
    """F.pad + F.conv1d on the channels-first view."""

    def forward(self, x: Tensor) -> Tensor:  # (B, n, d) -> (B, n, d)
        _check_input(x, self.d)
        left, right = _pads(self.kernel, self.causal, self.dilation)
        xp = F.pad(x.transpose(1, 2), (left, right))  # (B, d, n + span)
        y = F.conv1d(xp, self.weight, self.bias, dilation=self.dilation)  # (B, d, n)
        return y.transpose(1, 2)  # (B, n, d)

    def _window_out(self, win: Tensor) -> Tensor:  # (B, k, d) -> (B, 1, d)
        return F.conv1d(win.transpose(1, 2), self.weight, self.bias).transpose(1, 2)


class ConvChannelsLast(Conv1dTime):
    """F.conv2d on the channels-last (B, d, n, 1) view of (B, n, d): no transposed copy in or
    out (``conv1d`` makes both; 1.06-1.23x of nn.Conv1d on a channels-first input at d = 512,
    this 0.85-1.01x; paired A/B, 1 thread). Dilation 1 only: oneDNN's channels-last dilated
    conv measured 3.6x slower than channels-first, so the dilated layer keeps ``conv1d``.
    Decoding as ``conv1d`` (one window)."""

    def __init__(self, d: int, kernel: int, causal: bool, dilation: int = 1) -> None:
        if dilation != 1:
            raise ValueError(f"channels_last runs dilation 1 only, got {dilation}")
        super().__init__(d, kernel, causal, dilation)

    def forward(self, x: Tensor) -> Tensor:  # (B, n, d) -> (B, n, d)
        _check_input(x, self.d)
        return conv_channels_last(x, self.weight, self.bias, self.kernel, self.causal)


class UnfoldConvTime(_DenseConv):
    """Unfolded windows (B*n, d*k) times the flattened kernel (d, d*k): one matmul."""

    def forward(self, x: Tensor) -> Tensor:  # (B, n, d) -> (B, n, d)
        _check_input(x, self.d)
        b, n, d = x.shape
        cols = _windows(x, self.kernel, self.causal, self.dilation)  # (B, n, d, k)
        cols = cols.reshape(b * n, d * self.kernel)  # (B*n, d*k), copies
        y = F.linear(cols, self.weight.reshape(d, d * self.kernel), self.bias)  # (B*n, d)
        return y.reshape(b, n, d)

    def _window_out(self, win: Tensor) -> Tensor:  # (B, k, d) -> (B, 1, d)
        b, k, d = win.shape
        cols = win.transpose(1, 2).reshape(b, 1, d * k)  # (B, 1, d*k), d_in major
        return F.linear(cols, self.weight.reshape(d, d * k), self.bias)


# --------------------------------------------------------------------------- separable


class _SeparableConv(WindowDecoder, nn.Module):
    """Depthwise Conv1d(d, d, k, groups=d) then pointwise Linear(d, d), both with bias.

    Decoding (causal): a ring of the last k - 1 inputs (WindowDecoder).
    """

    def __init__(self, d: int, kernel: int, causal: bool) -> None:
        super().__init__()
        if d <= 0 or kernel <= 0:
            raise ValueError(f"d and kernel must be positive, got {d}, {kernel}")
        self.d, self.kernel, self.causal = d, kernel, causal
        self.depthwise_weight = nn.Parameter(torch.empty(d, 1, kernel))  # (d, 1, k)
        self.depthwise_bias = nn.Parameter(torch.empty(d))  # (d,)
        self.pointwise_weight = nn.Parameter(torch.empty(d, d))  # (d_out, d_in)
        self.pointwise_bias = nn.Parameter(torch.empty(d))  # (d_out,)
        _uniform_(self.depthwise_weight, kernel)
        _uniform_(self.depthwise_bias, kernel)
        _uniform_(self.pointwise_weight, d)
        _uniform_(self.pointwise_bias, d)

    def extra_repr(self) -> str:
        return f"d={self.d}, kernel={self.kernel}, causal={self.causal}"

    def pointwise(self, h: Tensor) -> Tensor:  # (B, n, d) -> (B, n, d)
        return F.linear(h, self.pointwise_weight, self.pointwise_bias)

    @property
    def d_model(self) -> int:  # type: ignore[override]
        return self.d


class SeparableConv1d(_SeparableConv):
    def forward(self, x: Tensor) -> Tensor:  # (B, n, d) -> (B, n, d)
        _check_input(x, self.d)
        left, right = _pads(self.kernel, self.causal, 1)
        xp = F.pad(x.transpose(1, 2), (left, right))  # (B, d, n + k - 1)
        h = F.conv1d(xp, self.depthwise_weight, self.depthwise_bias, groups=self.d)  # (B, d, n)
        return self.pointwise(h.transpose(1, 2))

    def _window_out(self, win: Tensor) -> Tensor:  # (B, k, d) -> (B, 1, d)
        h = F.conv1d(win.transpose(1, 2), self.depthwise_weight, self.depthwise_bias,
                     groups=self.d)  # (B, d, 1)
        return self.pointwise(h.transpose(1, 2))


class SeparableChannelsLast(SeparableConv1d):
    """The depthwise conv as F.conv2d on the channels-last (B, d, n, 1) view of (B, n, d):
    oneDNN's depthwise kernel vectorises over the d contiguous channels, and neither the
    input nor the depthwise output is transposed. Decoding as ``conv1d`` (one window)."""

    def forward(self, x: Tensor) -> Tensor:  # (B, n, d) -> (B, n, d)
        _check_input(x, self.d)
        h = conv_channels_last(x, self.depthwise_weight, self.depthwise_bias, self.kernel,
                               self.causal, groups=self.d)  # (B, n, d)
        return self.pointwise(h)


class SeparableUnfold(_SeparableConv):
    def forward(self, x: Tensor) -> Tensor:  # (B, n, d) -> (B, n, d)
        _check_input(x, self.d)
        win = _windows(x, self.kernel, self.causal, 1)  # (B, n, d, k)
        b, n, d, k = win.shape
        # an explicit bmm, not einsum: at k = 1 einsum becomes a multiply counters miss
        taps = win.permute(2, 0, 1, 3).reshape(d, b * n, k)  # (d, B*n, k)
        h = torch.bmm(taps, self.depthwise_weight[:, 0].unsqueeze(-1))  # (d, B*n, 1)
        h = h.reshape(d, b, n).permute(1, 2, 0)  # (B, n, d)
        return self.pointwise(h + self.depthwise_bias)

    def _window_out(self, win: Tensor) -> Tensor:  # (B, k, d) -> (B, 1, d)
        b, k, d = win.shape
        taps = win.permute(2, 0, 1).reshape(d, b, k)  # (d, B, k)
        h = torch.bmm(taps, self.depthwise_weight[:, 0].unsqueeze(-1))  # (d, B, 1)
        return self.pointwise(h.permute(1, 2, 0) + self.depthwise_bias)  # (B, 1, d)


# --------------------------------------------------------------------------- path length


def dilated_path_length(n: int, kernel: int, causal: bool) -> float:
    """Path length of a stack with dilations 1, k, k^2, ... (layer `depth` has k**depth).

    Causal: L layers reach every offset 0..k^L - 1 behind (base-k digits), so L is the
    smallest L >= 1 with k^L >= n.

    Non-causal: each layer's tap offsets form a complete residue system mod k, so the
    offset taken by the first layer is forced (≡ j - i mod k). For some pair that first hop
    lands off the sequence (e.g. k=3: i=0 -> j=2 needs offsets -1 then +3), and the pair is
    never connected however deep the stack ("gridding"). Hence 1 when one layer already
    covers the sequence, else inf. Suites should use the causal form for this layer.
    """
    if n == 1:
        return 1
    if causal:
        if kernel == 1:
            return math.inf
        layers, covered = 1, kernel
        while covered < n:
            layers, covered = layers + 1, covered * kernel
        return layers
    back, ahead = reach(kernel, causal)
    return 1 if n - 1 <= min(back, ahead) else math.inf


# --------------------------------------------------------------------------- costs


def conv_cost(case: LayerCase, variant: str, *, dilation: int = 1) -> Cost:
    """Dense Conv1d(d, d, k): 2*B*n*d*d*k FLOPs (padding taps included; ``flops_useful`` only
    the taps inside the sequence); train = 3x (grad input + grad weight, each one conv of the
    same size, as FlopCounterMode counts).

    Activations: the padded input copy B*d*(n + span) and the output B*n*d; the unfold
    variant also materialises the window buffer B*n*d*k; channels_last with a centred odd
    kernel has no padded copy (the conv pads itself). ``dilation`` is that of the layer at
    depth 0 (1) unless given.
    """
    b, n, d, k = case.batch, case.seq_len, case.d_model, case.k
    flops = 2 * b * n * d * d * k
    span = (k - 1) * dilation
    activations = b * d * (n + span) + b * n * d
    if variant == "channels_last" and 2 * pad_left(k, case.causal) == k - 1:
        activations = b * n * d
    elif variant == "unfold":
        activations += b * n * d * k
    return Cost(
        flops=flops,
        flops_useful=2 * window_macs(b, n, d * d, k, pad_left(k, case.causal)),
        flops_other=b * n * d,  # bias add
        train_flops=3 * flops,
        params=d * d * k + d,
        activation_elements=activations,
        seq_ops=1,
        path_length=stacked_path_length(n, k, case.causal),
    )


def dilated_cost(case: LayerCase, variant: str) -> Cost:
    """As :func:`conv_cost` (the FLOPs do not depend on the dilation; activations are those
    of the first layer, dilation 1), with the dilated stack's path length."""
    path = dilated_path_length(case.seq_len, case.k, case.causal)
    return replace(conv_cost(case, variant), path_length=path)


def separable_cost(case: LayerCase, variant: str) -> Cost:
    """Depthwise 2*B*n*d*k + pointwise 2*B*n*d*d FLOPs; train = 3x what is executed.

    Note: torch 2.13's FlopCounterMode ignores ``groups`` in the conv weight-gradient
    formula and counts the depthwise grad-weight as 2*B*n*d*d*k (d times what runs); the
    analytic model keeps what is executed. The unfold variant materialises the window
    buffer (B*n*d*k, einsum copies it into its bmm layout) instead of the padded copy;
    channels_last with a centred odd kernel needs neither (the conv pads itself).
    ``flops_useful``: the depthwise taps inside the sequence plus the pointwise product.
    """
    b, n, d, k = case.batch, case.seq_len, case.d_model, case.k
    flops = 2 * b * n * (d * k + d * d)
    left = pad_left(k, case.causal)
    if variant == "unfold":
        activations = b * d * (n + k - 1) + b * n * d * k + 3 * b * n * d
    elif variant == "channels_last" and 2 * left == k - 1:  # the conv pads: no padded copy
        activations = 2 * b * n * d  # depthwise output, output
    else:
        activations = b * d * (n + k - 1) + 2 * b * n * d  # padded input, depthwise, output
    return Cost(
        flops=flops,
        flops_useful=2 * window_macs(b, n, d, k, left) + 2 * b * n * d * d,
        flops_other=2 * b * n * d,  # two bias adds
        train_flops=3 * flops,
        params=d * k + d + d * d + d,
        activation_elements=activations,
        seq_ops=1,
        path_length=stacked_path_length(n, k, case.causal),
    )


# --------------------------------------------------------------------------- registry

def conv_step_cost(case: LayerCase, variant: str) -> StepCost:
    """One decode step: 2 B k d^2 (the k taps of one window, bias in flops_other); state:
    the last k - 1 inputs, B min(n, k - 1) d."""
    b, n, d, k = case.batch, case.n, case.d, case.k
    return StepCost(flops=2 * b * k * d * d, flops_other=b * d,
                    state_elements=b * min(n, k - 1) * d)


def dilated_step_cost(case: LayerCase, variant: str) -> StepCost:
    """As :func:`conv_step_cost` for the first layer of the stack (dilation 1); a layer at
    depth l holds (k - 1) k^l inputs (the whole stack: sum over its layers)."""
    return conv_step_cost(case, variant)


def separable_step_cost(case: LayerCase, variant: str) -> StepCost:
    """One decode step: depthwise 2 B k d, pointwise 2 B d^2; state B min(n, k - 1) d."""
    b, n, d, k = case.batch, case.n, case.d, case.k
    return StepCost(flops=2 * b * k * d + 2 * b * d * d, flops_other=2 * b * d,
                    state_elements=b * min(n, k - 1) * d)


def _builder(cls: type[nn.Module], dilated: bool = False) -> Builder:
    """A variant's ``build(case, depth)``; a dilated layer's dilation is k**depth."""

    def build(case: LayerCase, depth: int) -> nn.Module:
        if dilated and depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        dilation = (case.k**depth,) if dilated else ()
        return cls(case.d_model, case.k, case.causal, *dilation)

    return build


#: A convolution's entry: what the three share (family, parameters, variant names) given.
_entry = partial(LayerEntry, family="convolution", params=frozenset({"kernel", "causal"}),
                 required=frozenset({"kernel"}), default_variant="conv1d",
                 reference_variant="unfold")

LAYERS = [
    _entry(
        name="conv",
        summary="contiguous Conv1d(d, d, k) over time",
        variants={"channels_last": _builder(ConvChannelsLast), "conv1d": _builder(Conv1dTime),
                  "unfold": _builder(UnfoldConvTime)},
        default_variant="channels_last",
        cost=conv_cost,
        step_cost=conv_step_cost,
        theory=Theory(complexity="O(k n d^2)", seq_ops="O(1)", path_length="O(n/k)",
                      terms=("k n d^2",)),
        colour="#cc78bc",  # purple
    ),
    _entry(
        name="conv_dilated",
        summary="Conv1d(d, d, k) with dilation k**depth (WaveNet/ByteNet); use causal",
        variants={"conv1d": _builder(Conv1dTime, dilated=True),
                  "unfold": _builder(UnfoldConvTime, dilated=True)},
        cost=dilated_cost,
        step_cost=dilated_step_cost,
        theory=Theory(complexity="O(k n d^2)", seq_ops="O(1)", path_length="O(log_k n)",
                      terms=("k n d^2",)),
        colour="#fbafe4",  # pink
    ),
    _entry(
        name="conv_separable",
        summary="depthwise Conv1d(d, d, k, groups=d) then pointwise Linear(d, d)",
        variants={"channels_last": _builder(SeparableChannelsLast),
                  "conv1d": _builder(SeparableConv1d), "unfold": _builder(SeparableUnfold)},
        default_variant="channels_last",
        cost=separable_cost,
        step_cost=separable_step_cost,
        theory=Theory(complexity="O(k n d + n d^2)", seq_ops="O(1)", path_length="O(n/k)",
                      terms=("k n d", "n d^2")),
        colour="#949494",  # grey
    ),
]
