"""DynamicConv (Wu et al. 2019): LightConv whose kernel is predicted at every time step.

The kernel at step t is softmax over k of (W x_t) viewed as (H, k), with W of shape
(H*k, d) (``kernel_proj``, no bias): a cost linear in n, O(k n d) for the convolution plus
O(n d H k) for predicting the kernels. Channels of one head are contiguous, padding follows
``pad_left``, DropConnect acts on the normalised kernels in training mode only, and
``block=True`` wraps the convolution in Wu et al.'s Linear-GLU ... Linear block.

Variants: "auto" (the default: "shift" up to SHIFT_MAX_K taps; wider kernels "band" up to
``band_max_n`` steps (5 (k + 1), at least 160 where k d/H < 400, else at least 64) and
"strided" above, as fairseq picks its expanded path for short inputs; the thresholds are
measured, see docs/metrics.md),
"shift" (k shifted multiply-adds over the whole (B, n, d) input, a custom op counted by both
FLOP counters: no copy, no bmm, only the taps inside the sequence; linear in n and k),
"strided" (each padded sequence's windows are a strided view that one bmm per sequence
contracts with the per-step kernels, no copy; linear in n), "unfold" (the reference: the
unfolded windows copied, then one bmm; linear in n, but the B n d k copy a (B, n, d) layout
forces costs more than the bmm) and "band" (scatter each step's kernel into a row of an
(n x n) band per head, all B H bands applied by one grouped GEMM, ``band_mix``; quadratic
executed work, but large GEMMs beat many (1 x k)(k x d/H) products at short n).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.costs import Cost, StepCost
from harness.layers.band_mix import band_mix
from harness.layers.common import pad_left
from harness.layers.lightconv import (
    BLOCK_TERMS,
    ConvBlock,
    band_matrix,
    block_activations,
    block_flops,
    block_other_flops,
    block_params,
    builder,
    conv_block_step_cost,
    strided_conv,
    unfold_time,
    window_bmm,
)
from harness.layers.pathlen import stacked_path_length
from harness.layers.window_mix import window_macs, window_mix
from harness.registry import LayerEntry
from harness.spec import LayerCase
from harness.theory import Theory

#: float32 lanes of one SIMD vector per torch CPU capability: torch's CPU softmax over the
#: last dim vectorises rows at least this long and runs shorter ones element by element.
_FLOAT_LANES = {"AVX512": 16, "AVX2": 8}
#: Read once at import: torch.compile cannot trace the capability query (a string-returning
#: torch call breaks the graph), and the CPU does not change while the process runs.
SHORT_ROW_LIMIT = _FLOAT_LANES.get(torch.backends.cpu.get_cpu_capability(), 4)


def row_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim, for many short rows (one row of k logits per step and head).

    On CPU, torch's softmax spends ~120 ns on each row shorter than a SIMD vector (k < 16
    with AVX-512): 0.5 ms of a 1.5 ms call at B = 8, n = 64, H = 8, k = 15, where k = 16
    takes 0.04 ms. For such rows max, exp and sum as passes over the whole tensor take a
    quarter of that (docs/metrics.md "Default variants"); longer rows and other devices keep
    torch's kernel. In place where no gradient needs the intermediate values.
    """
    if logits.device.type != "cpu" or logits.shape[-1] >= SHORT_ROW_LIMIT:
        return logits.softmax(dim=-1)
    shifted = logits - logits.amax(dim=-1, keepdim=True)  # (..., k), largest 0
    if torch.is_grad_enabled() and logits.requires_grad:
        e = shifted.exp()
        return e / e.sum(dim=-1, keepdim=True)
    e = shifted.exp_()
    return e.div_(e.sum(dim=-1, keepdim=True))


class _DynamicConv(ConvBlock):
    def __init__(self, d_model: int, heads: int, kernel: int, causal: bool = False,
                 block: bool = False, dropout: float = 0.0) -> None:
        super().__init__(d_model, heads, kernel, causal, block, dropout)
        self.kernel_proj = nn.Linear(d_model, heads * kernel, bias=False)  # W: (H*k, d)

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step kernels (B, n, H, k): softmax over k of W x_t, then DropConnect."""
        b, n, _ = x.shape
        logits = self.kernel_proj(x).view(b, n, self.heads, self.kernel)  # (B, n, H, k)
        return F.dropout(row_softmax(logits), self.dropout, self.training)

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        return self._convolve(x, self.kernels(x))

    def _convolve(self, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _step_mix(self, win: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        return window_bmm(win, self.kernels(x_t)[:, 0])  # kernels (B, H, k) of step t


class StridedDynamicConv(_DynamicConv):
    """Strided (n*H, k, d/H) windows of each padded sequence, weighted by the steps' (H, k)
    kernels in one bmm per sequence: no window copy, linear in n."""

    def _convolve(self, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        return strided_conv(x, kernels, self.causal)


class UnfoldDynamicConv(_DynamicConv):
    """Unfolded (B, n, H, d/H, k) windows weighted by the step's (H, k) kernel: linear in n.

    One explicit bmm (einsum would turn k = 1 into an elementwise multiply FLOP counters miss).
    """

    def _convolve(self, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h, c, k = self.heads, d // self.heads, self.kernel
        xu = unfold_time(x, k, self.causal).reshape(b * n * h, c, k)  # (B*n*H, c, k)
        out = torch.bmm(xu, kernels.reshape(b * n * h, k, 1))  # (B*n*H, c, 1)
        return out.view(b, n, d)


class ShiftDynamicConv(_DynamicConv):
    """One multiply-add pass per tap over the whole (B, n, d) input, shifted in time
    (harness.layers.window_mix): no padded copy, no window copy, no bmm; linear in n and k."""

    def _convolve(self, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        return shift_conv(x, kernels, self.causal)


def batched_band_conv(x: torch.Tensor, kernels: torch.Tensor, causal: bool) -> torch.Tensor:
    """Per-step kernels (B, n, H, k) applied to x (B, n, d) through B H (n x n) bands.

    Row t of band (b, h) holds step t's kernel; the bands are one zeroed buffer (fairseq's
    expanded path). ``band_mix`` multiplies each by its head's (n, d/H) columns where they
    lie (one grouped GEMM) or, where that GEMM is absent, by one bmm over head-major copies.
    """
    band = band_matrix(kernels.permute(0, 2, 1, 3), causal)  # (B, H, n, n), a view
    return band_mix(band, x)


# Widest kernel "auto" runs as k shifted multiply-adds (harness.layers.window_mix): each tap is
# one memory-bound pass over the (B, n, d) input, so its time grows with k at any n, while the
# bmm formulations pay a fixed per-product cost; the measured crossover (benchmarks/
# reference_speed.py, 2 threads, batch 8; docs/metrics.md "Default variants").
SHIFT_MAX_K = 7
# Longest sequence "auto" sends through the band at wider kernels: the measured crossovers of
# band and strided (same benchmark, d = 512 and 1024, H = 8 and 16). The band's executed work
# grows as n^2 and the strided windows' as n k, so the crossover moves out with k: the band
# wins up to about BAND_SPAN (k + 1) steps (k = 23 and 31: band 0.97-1.03x of fairseq's band
# at n = 96, strided 1.10-1.24x; a tie at n = 160 for k = 31), and never below BAND_MAX_N
# (k = 9 and 11 at n = 64: band 0.65-0.77x, strided 0.84-0.94x). Where a strided
# (1 x k)(k x d/H) product has fewer than SMALL_PRODUCT multiply-adds, torch's CPU bmm runs it
# in its plain loop kernel instead of BLAS (ATen's small-matrix cut-off), and the band stays
# faster to BAND_MAX_N_SMALL.
SMALL_PRODUCT = 400
BAND_MAX_N_SMALL = 160
BAND_MAX_N = 64
BAND_SPAN = 5


def band_max_n(kernel: int, head_dim: int) -> int:
    """Longest sequence "auto" runs through the band at kernel width k and d/H channels."""
    floor = BAND_MAX_N_SMALL if kernel * head_dim < SMALL_PRODUCT else BAND_MAX_N
    return max(floor, BAND_SPAN * (kernel + 1))


def auto_path(n: int, kernel: int, head_dim: int) -> str:
    """The fixed variant "auto" runs at sequence length n, kernel width k and d/H channels."""
    if kernel <= SHIFT_MAX_K:
        return "shift"
    return "band" if n <= band_max_n(kernel, head_dim) else "strided"


def shift_conv(x: torch.Tensor, kernels: torch.Tensor, causal: bool) -> torch.Tensor:
    """Per-step kernels (B, n, H, k) applied to x (B, n, d) as k shifted multiply-adds."""
    return window_mix(x, kernels, pad_left(kernels.shape[-1], causal))


class BandDynamicConv(_DynamicConv):
    """Row t of head h's (n x n) band holds step t's kernel; one bmm: O(n^2) executed."""

    def _convolve(self, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        return batched_band_conv(x, kernels, self.causal)


PATHS = {"shift": shift_conv, "band": batched_band_conv, "strided": strided_conv}


class AutoDynamicConv(_DynamicConv):
    """Shifted multiply-adds up to SHIFT_MAX_K taps; wider, the band up to band_max_n steps
    and the strided windows above: each where it measured fastest."""

    def _convolve(self, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        path = auto_path(x.shape[1], self.kernel, self.d_model // self.heads)
        return PATHS[path](x, kernels, self.causal)


def dynamicconv_cost(case: LayerCase, variant: str) -> Cost:
    """Analytic cost; the kernel projection is 2 B n d H k, the convolution 2 B n d k.

    ``flops``: "strided" and "unfold" execute projection + 2 B n d k (padded taps included);
    "band" executes projection + 2 B n^2 d; "shift" only the taps inside the sequence, 2 B d
    sum_j (n - |j - pad|)+ (``window_macs``, counted through its custom op); "auto" is
    whichever path ``auto_path`` picks at this n. ``flops_useful`` is projection + shift's
    taps for all (a multiply by a padded zero is not needed). The block adds 6 B n d^2.
    ``flops_other``: softmax over the B n H k kernel logits (5 each) and the
    block's biases and GLU. ``train_flops`` = 3x forward: every contraction (projection,
    bmm, block linears) runs two more of the same size in backward.
    ``activation_elements`` (estimate): kernel logits and softmax (2 B n H k), padded input
    and output (B (n+k-1) d + B n d), with the unfolded copy (B n d k) for "unfold" or, for
    "strided", the per-sequence outputs before they are stacked (B n d); for "band" the zeroed
    band buffers B H n (n+k-1), the head-major copy of the input and the bmm output (2 B n d)
    beside the output (the bmm path; float32 on a CPU with MKL's grouped GEMM has neither,
    ``band_mix``); for "shift" input and output only; plus the block's 4 B n d.
    """
    b, n, d, h, k = case.batch, case.n, case.d, case.h, case.k
    proj = 2 * b * n * d * h * k
    conv = 2 * b * n * d * k
    inside = 2 * window_macs(b, n, d, k, pad_left(k, case.causal))  # taps inside the sequence
    kernel_act = 2 * b * n * h * k
    padded_io = b * (n + k - 1) * d + b * n * d
    if variant == "auto":
        variant = auto_path(n, k, d // h)
    if variant == "shift":
        executed = inside
        act = kernel_act + 2 * b * n * d  # input and output: nothing padded or copied
    elif variant == "strided":
        executed = conv
        act = kernel_act + padded_io + b * n * d
    elif variant == "unfold":
        executed = conv
        act = kernel_act + padded_io + b * n * d * k
    elif variant == "band":
        executed = 2 * b * n * n * d
        act = kernel_act + b * h * n * (n + k - 1) + 3 * b * n * d
    else:
        raise ValueError(f"dynamicconv has no variant {variant!r}")
    extra = proj + block_flops(case)
    return Cost(
        flops=executed + extra,
        flops_useful=inside + extra,
        flops_other=5 * b * n * h * k + block_other_flops(case),
        train_flops=3 * (executed + extra),
        params=d * h * k + block_params(case),
        activation_elements=act + block_activations(case),
        seq_ops=1,
        path_length=stacked_path_length(n, k, case.causal),
    )


def dynamicconv_step_cost(case: LayerCase, variant: str) -> StepCost:
    """2 B k d for the convolution of one position and 2 B d H k for its kernel, softmax
    over B H k logits (5 each) (+ the block)."""
    b, d, h, k = case.batch, case.d, case.h, case.k
    return conv_block_step_cost(case, 2 * b * k * d + 2 * b * d * h * k, 5 * b * h * k)


LAYERS = [LayerEntry(
    name="dynamicconv",
    family="dynamicconv",
    summary="DynamicConv (Wu et al. 2019): LightConv with a per-step kernel softmax(W x_t), "
            "W: d -> H*k (O(k n d) + O(n d H k) kernel projection)",
    params=frozenset({"heads", "kernel", "causal", "block"}),
    required=frozenset({"heads", "kernel"}),
    variants={
        "auto": builder(AutoDynamicConv),
        "strided": builder(StridedDynamicConv),
        "unfold": builder(UnfoldDynamicConv),
        "band": builder(BandDynamicConv),
        "shift": builder(ShiftDynamicConv),
    },
    default_variant="auto",
    reference_variant="unfold",
    cost=dynamicconv_cost,
    step_cost=dynamicconv_step_cost,
    theory=Theory(complexity="O(k n d + n d H k)", seq_ops="O(1)", path_length="O(n/k)",
                  terms=("k n d", "n d h k"), flag_terms=BLOCK_TERMS),
    colour="#ca9161",  # brown
)]
