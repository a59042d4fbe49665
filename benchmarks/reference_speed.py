"""Reference speed: every variant of a layer against the fastest known formulation of it.

``python benchmarks/reference_speed.py [--quick] [--layers lightconv dynamicconv ...]``

A harness that compares layers is only fair if each layer runs about as fast as a competent
implementation of it. For every size this script builds each registered variant of a layer
and a few *reference formulations* of the same function, bound to the same weights, checks
that all outputs agree, then times them side by side in one process with
``torch.utils.benchmark`` (2 threads by default), in ``--rounds`` interleaved rounds so a
busy machine's drift hits every candidate alike. It prints, per layer, each candidate's time
as a ratio to the fastest reference (the default variant is starred) and a verdict line.
A benchmark that prints, not a test: it asserts nothing about this machine's speed.

Reference formulations (written here, not imported: each gets its native input layout,
prepared outside the timed call, as its authors' code would receive it):

* LightConv / DynamicConv (Wu et al. 2019; fairseq's ``LightweightConv1dTBC`` and
  ``DynamicConv1dTBC`` without CUDA kernels): ``fairseq-unfold`` - time-major (T, B, C)
  input, the padded window is a strided view consumed by one bmm without a copy;
  ``fairseq-band`` - the kernels written into (B*H, T, T + k - 1) band matrices, one bmm
  (fairseq's path for short inputs); LightConv also ``depthwise-conv1d`` - F.conv1d with
  groups = d on a channels-first (B, d, n) input, the (H, k) weights repeated per channel.
* attention: ``sdpa`` (Linear -> F.scaled_dot_product_attention -> Linear) and
  ``nn.MultiheadAttention`` (batch_first, need_weights=False: its fused fast path).
* rnn / lstm / gru: ``torch-fused`` (nn.RNN / nn.LSTM / nn.GRU: oneDNN on CPU) and
  ``hoisted-loop`` (a Python loop over time whose input projection is one GEMM for all steps
  before the loop: what separates a careful unrolled loop from the fused kernel).
* conv / conv_dilated / conv_separable: ``nn.Conv1d`` equivalents on a (B, d, n) input
  (dilated: the layer at depth 1, dilation k; separable: depthwise Conv1d(groups=d) then a
  1x1 Conv1d).

Statistic: ``--stat paired`` (default) divides, in every round, each candidate's fastest
block by the fastest reference's fastest block of the same round and takes the median of
those per-round ratios (its ms columns: the median over rounds of each round's fastest
block). The same call's time moved by up to 2x between runs minutes apart on this host
with nothing else runnable (1.0 ms, then 2.1 ms, 2026-12-02; part of it was later traced to
page faults that depend on allocation history, see the heap below, the rest is the shared
host's): a minimum over all rounds then turns on which candidate met a fast minute, while
two candidates timed within a second share the drift; the candidate order rotates each
round, so none is always first. ``--stat min`` takes each candidate's fastest block over
all rounds (contention only ever adds time), ``--stat median`` the median of the per-round
medians; both are divided by the fastest reference's. Only blocks whose threads did not
wait for a CPU count (the run-queue wait of harness.measure.contention, read around every block): a
candidate with no such block in any round is marked ``?`` (disturbed: re-run on a quiet
machine) and a closing line counts those sizes. Absolute times go to stderr as each size ends.
Heap: ``--malloc steady`` (default) sets glibc's trim threshold to 1 GiB and its mmap threshold
to 32 MiB first, so freed buffers are reused without page faults whatever ran before
(harness.measure.heap, as in the harness's measuring processes); ``--malloc default`` leaves
glibc as it is.
Sizes: the defaults are Wu et al.'s grid for LightConv / DynamicConv (d in {512, 1024},
H in {8, 16}, k in {3, 7, 15, 31}, n = 64 .. 4096, batch 8) and small grids for the other
families; ``--quick`` is a subset that runs in a few minutes; ``--n/--d/--heads/--kernel/
--batch`` override any axis for every layer. Candidates whose estimated working set exceeds
``--max-gb``, and band formulations above ``--band-max-n``, are skipped (shown as "-").
``--variants default`` (or any variant names) times only those of the project's variants
beside every reference: the whole Wu et al. grid for the default in half the time.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch import Tensor, nn
from torch.utils import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's harness
from harness import registry
from harness.layers.common import pad_left
from harness.measure.contention import (
    ContentionRule,
    WaitCounter,
    disturbed_flags,
    wait_counter,
)
from harness.measure.heap import DEFAULT, steady_heap
from harness.spec import LayerCase

Call = Callable[[], Tensor]
FLOAT_BYTES = 4  # float32
RULE = ContentionRule()  # the harness's: a block is disturbed above 5 % run-queue wait

CONV_LAYERS = ("lightconv", "dynamicconv")
RECURRENT = ("rnn", "lstm", "gru")
CONVS = ("conv", "conv_dilated", "conv_separable")
ALL_LAYERS = (*CONV_LAYERS, "attention", *RECURRENT, *CONVS)


@dataclass(frozen=True)
class Grid:
    """The sizes one layer is timed at (cross product)."""

    n: tuple[int, ...]
    d: tuple[int, ...]
    heads: tuple[int | None, ...] = (None,)
    kernel: tuple[int | None, ...] = (None,)
    batch: int = 8


WU = Grid(n=(64, 128, 256, 512, 1024, 2048, 4096), d=(512, 1024), heads=(8, 16),
          kernel=(3, 7, 15, 31))
WU_QUICK = Grid(n=(64, 256, 1024, 4096), d=(512,), heads=(8,), kernel=(3, 7, 31))
GRIDS: dict[str, tuple[Grid, Grid]] = {  # layer family -> (full, quick)
    "conv_layers": (WU, WU_QUICK),
    "attention": (Grid(n=(64, 256, 1024, 2048), d=(512,), heads=(8,)),
                  Grid(n=(64, 512), d=(512,), heads=(8,))),
    "recurrent": (Grid(n=(64, 256), d=(256, 512)), Grid(n=(128,), d=(512,))),
    "conv": (Grid(n=(256, 1024), d=(512,), kernel=(3, 7)),
             Grid(n=(256,), d=(512,), kernel=(3,))),
}


def family_of(layer: str) -> str:
    if layer in CONV_LAYERS:
        return "conv_layers"
    if layer in RECURRENT:
        return "recurrent"
    return "conv" if layer in CONVS else "attention"


@dataclass(frozen=True)
class Candidate:
    """One timed formulation: a registered variant or a reference written in this script."""

    name: str
    reference: bool
    default: bool
    call: Call  # the timed call (its input bound)
    elements: int  # estimated float32 working set, for --max-gb
    to_bnd: Callable[[Tensor], Tensor] = lambda y: y  # native output -> (B, n, d), unchecked time


# --------------------------------------------------------------------------- references


def tbc_windows(x_tbc: Tensor, kernel: int, causal: bool, heads: int) -> Tensor:
    """(T, B, C) -> (T*B*H, C/H, k) windows as a strided view of the padded input.

    Time-major, consecutive (t, b) pairs are C apart and a window step is B*C, so the batch
    index (t, b, h) has the single stride C/H and nothing is copied.
    """
    t, b, c = x_tbc.shape
    left = pad_left(kernel, causal)
    padded = F.pad(x_tbc, (0, 0, 0, 0, left, kernel - 1 - left))  # (T + k - 1, B, C)
    r = c // heads
    return padded.as_strided((t * b * heads, r, kernel), (r, 1, b * c))


def tbc_band(rows: Tensor, kernel: int, causal: bool) -> Tensor:
    """rows (B*H, T, k) -> (B*H, T, T) band: taps of row t at columns t - pad .. t - pad + k - 1."""
    g, t, k = rows.shape
    wide = rows.new_zeros(g, t, t + k - 1)
    wide.as_strided((g, t, k), (t * (t + k - 1), t + k, 1)).copy_(rows)
    return wide.narrow(2, pad_left(kernel, causal), t)


def lightconv_references(module: Any, x: Tensor, case: LayerCase) -> Iterator[Candidate]:
    b, n, d = x.shape
    h, k, causal = case.h, case.k, case.causal
    x_tbc = x.transpose(0, 1).contiguous()  # (T, B, C), prepared outside the timed call
    x_bdn = x.transpose(1, 2).contiguous()  # (B, d, n)
    weight = module.weight  # (H, k), the module's own parameter: --train computes its grad
    from_tbc = lambda y: y.transpose(0, 1)  # noqa: E731

    def unfolded() -> Tensor:
        w = weight.softmax(-1).view(1, h, k).expand(n * b, h, k).reshape(n * b * h, k, 1)
        return torch.bmm(tbc_windows(x_tbc, k, causal, h), w).view(n, b, d)

    def banded() -> Tensor:
        w = weight.softmax(-1).view(1, h, k).expand(n * b, h, k).reshape(n, b * h, k)
        band = tbc_band(w.transpose(0, 1), k, causal)  # (B*H, T, T)
        out = torch.bmm(band, x_tbc.view(n, b * h, d // h).transpose(0, 1))  # (B*H, T, C/H)
        return out.transpose(0, 1).contiguous().view(n, b, d)

    left = pad_left(k, causal)
    symmetric = 2 * left == k - 1  # the conv pads itself, no padded copy

    def depthwise() -> Tensor:
        w = weight.softmax(-1).repeat_interleave(d // h, dim=0).unsqueeze(1)  # (d, 1, k)
        if symmetric:
            return F.conv1d(x_bdn, w, padding=left, groups=d)  # (B, d, n)
        return F.conv1d(F.pad(x_bdn, (left, k - 1 - left)), w, groups=d)

    io = 2 * b * n * d + b * (n + k - 1) * d
    yield Candidate("fairseq-unfold", True, False, unfolded, io, from_tbc)
    yield Candidate("fairseq-band", True, False, banded, io + b * h * n * (n + k), from_tbc)
    yield Candidate("depthwise-conv1d", True, False, depthwise, io,
                    lambda y: y.transpose(1, 2))


def dynamicconv_references(module: Any, x: Tensor, case: LayerCase
                           ) -> Iterator[Candidate]:
    b, n, d = x.shape
    h, k, causal = case.h, case.k, case.causal
    x_tbc = x.transpose(0, 1).contiguous()  # (T, B, C)
    proj = module.kernel_proj.weight  # (H*k, d)
    from_tbc = lambda y: y.transpose(0, 1)  # noqa: E731

    def unfolded() -> Tensor:
        kernels = F.linear(x_tbc, proj).view(n * b * h, k).softmax(-1)  # (T*B*H, k)
        out = torch.bmm(tbc_windows(x_tbc, k, causal, h), kernels.unsqueeze(2))
        return out.view(n, b, d)

    def banded() -> Tensor:
        kernels = F.linear(x_tbc, proj).view(n, b * h, k).softmax(-1)  # (T, B*H, k)
        band = tbc_band(kernels.transpose(0, 1), k, causal)  # (B*H, T, T)
        out = torch.bmm(band, x_tbc.view(n, b * h, d // h).transpose(0, 1))
        return out.transpose(0, 1).contiguous().view(n, b, d)

    io = 2 * b * n * d + b * (n + k - 1) * d + 2 * b * n * h * k
    yield Candidate("fairseq-unfold", True, False, unfolded, io, from_tbc)
    yield Candidate("fairseq-band", True, False, banded, io + b * h * n * (n + k), from_tbc)


def attention_references(module: Any, x: Tensor, case: LayerCase
                         ) -> Iterator[Candidate]:
    b, n, d = x.shape
    h, causal = case.h, case.causal
    w_in, b_in = module.in_proj.weight, module.in_proj.bias
    w_out, b_out = module.out_proj.weight, module.out_proj.bias

    def sdpa() -> Tensor:
        q, k, v = F.linear(x, w_in, b_in).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        ctx = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, h, n, dh)
        return F.linear(ctx.transpose(1, 2).reshape(b, n, d), w_out, b_out)

    mha = nn.MultiheadAttention(d, h, batch_first=True).eval()
    with torch.no_grad():  # q, k, v rows stacked as the harness's in_proj stacks them
        mha.in_proj_weight.copy_(w_in)
        mha.in_proj_bias.copy_(b_in)
        mha.out_proj.weight.copy_(w_out)
        mha.out_proj.bias.copy_(b_out)
    mask = nn.Transformer.generate_square_subsequent_mask(n) if causal else None

    def multihead() -> Tensor:
        return mha(x, x, x, need_weights=False, attn_mask=mask, is_causal=causal)[0]

    yield Candidate("sdpa", True, False, sdpa, 6 * b * n * d)
    yield Candidate("nn.MultiheadAttention", True, False, multihead, 6 * b * n * d + b * h * n * n)


def _gates(kind: str, gi: Tensor, gh: Tensor, h: Tensor, c: Tensor | None
           ) -> tuple[Tensor, Tensor | None]:
    """One step's new (h, c) from the input and hidden projections (torch's gate order)."""
    if kind == "rnn":
        return torch.tanh(gi + gh), None
    if kind == "lstm":
        i, f, g, o = (gi + gh).chunk(4, dim=-1)
        assert c is not None
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    return (1 - z) * torch.tanh(i_n + r * h_n) + z * h, None


def recurrent_references(kind: str, module: Any, x: Tensor) -> Iterator[Candidate]:
    b, n, d = x.shape
    state = dict(module.named_parameters())  # torch's names: weight_ih_l0, ...
    cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
    fused = cls(d, d, batch_first=True).eval()
    fused.load_state_dict(module.state_dict())

    def torch_fused() -> Tensor:
        return fused(x)[0]

    def hoisted() -> Tensor:
        gi_all = F.linear(x, state["weight_ih_l0"], state["bias_ih_l0"])  # (B, n, g*d), 1 GEMM
        h = x.new_zeros(b, d)
        c = x.new_zeros(b, d) if kind == "lstm" else None
        outs = []
        for t in range(n):
            gh = F.linear(h, state["weight_hh_l0"], state["bias_hh_l0"])  # (B, g*d)
            h, c = _gates(kind, gi_all[:, t], gh, h, c)
            outs.append(h)
        return torch.stack(outs, dim=1)

    gates = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    yield Candidate("torch-fused", True, False, torch_fused, (gates + 2) * b * n * d)
    yield Candidate("hoisted-loop", True, False, hoisted, (gates + 2) * b * n * d)


def conv_references(layer: str, module: Any, x: Tensor, case: LayerCase
                    ) -> Iterator[Candidate]:
    b, n, d = x.shape
    k, causal = case.k, case.causal
    dilation = k if layer == "conv_dilated" else 1
    left = pad_left(k, causal, dilation)
    right = (k - 1) * dilation - left
    x_bdn = x.transpose(1, 2).contiguous()  # (B, d, n), prepared outside the timed call
    to_bnd = lambda y: y.transpose(1, 2)  # noqa: E731
    symmetric = left == right  # nn.Conv1d's own padding applies; else one F.pad first
    pad = left if symmetric else 0
    io = b * n * d * 2 + b * (n + left + right) * d
    if layer == "conv_separable":
        depthwise = nn.Conv1d(d, d, k, groups=d, padding=pad).eval()
        pointwise = nn.Conv1d(d, d, 1).eval()
        depthwise.load_state_dict({"weight": module.depthwise_weight,
                                   "bias": module.depthwise_bias})
        pointwise.load_state_dict({"weight": module.pointwise_weight.unsqueeze(-1),
                                   "bias": module.pointwise_bias})

        def separable() -> Tensor:
            xin = x_bdn if symmetric else F.pad(x_bdn, (left, right))
            return pointwise(depthwise(xin))

        yield Candidate("nn.Conv1d", True, False, separable, io + b * n * d, to_bnd)
        return
    conv = nn.Conv1d(d, d, k, dilation=dilation, padding=pad).eval()
    conv.load_state_dict({"weight": module.weight, "bias": module.bias})

    def dense() -> Tensor:
        return conv(x_bdn if symmetric else F.pad(x_bdn, (left, right)))

    yield Candidate("nn.Conv1d", True, False, dense, io, to_bnd)


# --------------------------------------------------------------------------- candidates


def layer_case(layer: str, n: int, d: int, heads: int | None, kernel: int | None, batch: int,
               causal: bool) -> LayerCase | None:
    """The registry's case for this size, or None when the layer cannot take it."""
    entry = registry.get(layer)
    case = entry.normalize(LayerCase(seq_len=n, d_model=d, heads=heads, kernel=kernel,
                                     causal=causal, batch=batch))
    return None if entry.problem(case) else case


#: ``--variants`` name for the registry's default variant of each layer.
DEFAULT_VARIANT = "default"


class Registered(NamedTuple):
    name: str  # registry layer
    variant: str
    label: str  # the table's column
    default: bool


def registered(layer: str) -> Iterator[Registered]:
    """Every variant timed for a layer; attention also times attention_sdpa (whose default
    is the family's default)."""
    names = ("attention", "attention_sdpa") if layer == "attention" else (layer,)
    for name in names:
        entry = registry.get(name)
        for variant in entry.variants:
            label = variant if name == layer else f"{name}:{variant}"
            is_default = variant == entry.default_variant and (
                layer != "attention" or name == "attention_sdpa")
            yield Registered(name, variant, label, is_default)


def selected(layer: str, only: Sequence[str] | None) -> list[Registered]:
    """The registered variants ``--variants`` keeps (all without it; "default": the default)."""
    return [r for r in registered(layer)
            if only is None or r.label in only or (r.default and DEFAULT_VARIANT in only)]


def candidates(layer: str, case: LayerCase, x: Tensor,
               only: Sequence[str] | None = None) -> list[Candidate]:
    """The kept variants, built with one set of weights, then the layer's references (bound
    to the first module's weights: the reference formulations read them)."""
    depth = 1 if layer == "conv_dilated" else 0  # dilation k: the interesting dilated layer
    out: list[Candidate] = []
    first: nn.Module | None = None
    for name, variant, label, is_default in selected(layer, only):
        entry = registry.get(name)
        torch.manual_seed(0)
        module = entry.build(case, variant, depth=depth).eval()
        if first is None:
            first = module
        else:
            module.load_state_dict(first.state_dict())  # same weights, same function
        out.append(Candidate(label, False, is_default, _bind(module, x),
                             entry.cost_of(case, variant).activation_elements))
    if first is None:
        raise ValueError(f"--variants keeps no variant of {layer}")
    if layer == "lightconv":
        out += lightconv_references(first, x, case)
    elif layer == "dynamicconv":
        out += dynamicconv_references(first, x, case)
    elif layer == "attention":
        out += attention_references(first, x, case)
    elif layer in RECURRENT:
        out += recurrent_references(layer, first, x)
    else:
        out += conv_references(layer, first, x, case)
    return out


def _bind(module: nn.Module, x: Tensor) -> Call:
    return lambda: module(x)


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timed:
    name: str
    seconds: float | None  # None: skipped (too large) or failed
    note: str = ""
    rounds: tuple[float | None, ...] = ()  # each round's statistic; None: disturbed round


def _timed_call(call: Call, train: bool, x: Tensor) -> Call:
    if not train:
        def forward() -> Tensor:
            with torch.no_grad():
                return call()
        return forward

    def forward_backward() -> Tensor:
        y = call()
        y.backward(torch.ones_like(y))
        return y

    return forward_backward


BLOCK_SECONDS = 0.01  # a timed block runs at least this long (as blocked_autorange's)


def _clean(blocks: list[tuple[float, float]], rule: ContentionRule) -> list[float]:
    """Per-call times of the blocks whose threads did not wait for a CPU (all if unknown)."""
    flags = disturbed_flags([t for t, _ in blocks], [w for _, w in blocks], rule)
    return [t for (t, _), bad in zip(blocks, flags, strict=True) if not bad]


DISTURBED = "disturbed"


def _mark(note: str) -> str:
    """A table cell's suffix: ? disturbed timing, ! another note (on stderr), else none."""
    if not note:
        return ""
    return " ?" if note.startswith(DISTURBED) else " !"


def time_blocks(call: Call, budget: float, samples: int, threads: int,
                wait: WaitCounter | None) -> list[tuple[float, float]]:
    """Blocks of ``call``: (seconds per call, run-queue wait per call) each, for ``budget``
    seconds and at least ``samples`` blocks; the wait is read around every block, so a block
    another process slowed down is known (wait 0.0 where the kernel keeps no counter)."""
    timer = benchmark.Timer("fn()", globals={"fn": call}, num_threads=threads)
    once = timer.timeit(1).median  # also a warm-up
    number = max(1, math.ceil(BLOCK_SECONDS / max(once, 1e-9)))
    blocks: list[tuple[float, float]] = []
    spent = 0.0
    while spent < max(budget, samples * once) or len(blocks) < samples:
        before = wait() if wait else 0.0
        seconds = timer.timeit(number).median  # per call, over one block of `number` calls
        after = wait() if wait else 0.0
        blocks.append((seconds, max(0.0, after - before) / number))
        spent += seconds * number
    return blocks


def measure(cands: Sequence[Candidate], x: Tensor, args: argparse.Namespace) -> list[Timed]:
    """Check every output against the first reference, then time all in interleaved rounds.

    A candidate's statistic uses only its undisturbed blocks (harness.measure.contention's
    rule on the run-queue wait); with none in any round it uses all of them and carries a
    "disturbed" note: its ratio is then not to be trusted.
    """
    limit = args.max_gb * 2**30 / FLOAT_BYTES
    n = x.shape[1]
    live = [c for c in cands
            if c.elements <= limit and (n <= args.band_max_n or "band" not in c.name)]
    notes: dict[str, str] = {}
    with torch.no_grad():
        outputs = {}
        for c in list(live):
            try:
                outputs[c.name] = c.to_bnd(c.call())
            except (RuntimeError, ValueError) as exc:
                notes[c.name] = f"failed: {type(exc).__name__}: {str(exc)[:60]}"
                live.remove(c)
        refs = [c for c in live if c.reference]
        if refs:
            expected = outputs[refs[0].name]
            scale = float(expected.abs().max()) or 1.0
            for c in live:
                if not torch.allclose(outputs[c.name], expected, rtol=1e-3, atol=1e-4 * scale):
                    notes[c.name] = "OUTPUT DIFFERS"
    x.requires_grad_(args.train)
    blocks: dict[str, list[list[tuple[float, float]]]] = {c.name: [] for c in live}
    for r in range(args.rounds):
        shift = r % max(1, len(live))
        for c in live[shift:] + live[:shift]:  # rotated: no candidate always runs first
            blocks[c.name].append(time_blocks(_timed_call(c.call, args.train, x),
                                              args.min_run_time, args.samples, args.threads,
                                              args.wait))
    x.requires_grad_(False)
    pick = statistics.median if args.stat == "median" else min
    timed: dict[str, Timed] = {}
    for c in live:
        per_round: list[float | None] = [
            pick(kept) if kept else None for kept in (_clean(r, RULE) for r in blocks[c.name])]
        if all(v is None for v in per_round):
            every = [b for r in blocks[c.name] for b in r]
            frac = sum(w for _, w in every) / sum(t for t, _ in every)
            notes.setdefault(c.name, f"{DISTURBED}: every block waited for a CPU "
                                     f"({frac:.0%} of its time on average)")
            per_round = [pick([t for t, _ in r]) for r in blocks[c.name]]
        clean = [v for v in per_round if v is not None]
        overall = statistics.median(clean) if args.stat == "paired" else pick(clean)
        timed[c.name] = Timed(c.name, overall, notes.get(c.name, ""), tuple(per_round))
    return [timed.get(c.name) or Timed(c.name, None, notes.get(
                c.name, "skipped: --max-gb / --band-max-n")) for c in cands]


def ratio(cand: Timed, ref: Timed, stat: str) -> float:
    """cand's time over ref's: the median of same-round ratios for "paired" (rounds where
    both have an undisturbed value; the overall statistics where none do), else the ratio
    of the overall statistics."""
    if cand.seconds is None or ref.seconds is None:
        raise ValueError(f"{cand.name} or {ref.name} was not timed")
    if stat == "paired":
        pairs = [a / b for a, b in zip(cand.rounds, ref.rounds, strict=True)
                 if a is not None and b is not None]
        if pairs:
            return statistics.median(pairs)
    return cand.seconds / ref.seconds


# --------------------------------------------------------------------------- report


def sizes(layer: str, args: argparse.Namespace) -> Iterator[LayerCase]:
    full, quick = GRIDS[family_of(layer)]
    grid = quick if args.quick else full
    grid = replace(grid, n=tuple(args.n or grid.n), d=tuple(args.d or grid.d),
                   heads=tuple(args.heads or grid.heads),
                   kernel=tuple(args.kernel or grid.kernel), batch=args.batch or grid.batch)
    for d in grid.d:
        for heads in grid.heads:
            for kernel in grid.kernel:
                for n in grid.n:
                    case = layer_case(layer, n, d, heads, kernel, grid.batch, args.causal)
                    if case is not None:
                        yield case


def run_layer(layer: str, args: argparse.Namespace) -> None:
    rows: list[list[object]] = []
    header: list[str] = []
    worst: list[float] = []
    shaky = 0  # sizes where the default or the fastest reference was disturbed throughout
    default_name = ""
    for case in sizes(layer, args):
        torch.manual_seed(1)
        x = torch.randn(case.batch, case.n, case.d)  # (B, n, d)
        cands = candidates(layer, case, x, args.variants)
        timed = measure(cands, x, args)
        refs = [t for c, t in zip(cands, timed, strict=True)
                if c.reference and t.seconds is not None]
        best = min(refs, key=lambda t: t.seconds or math.inf) if refs else None
        fastest = best.seconds if best and best.seconds else math.nan
        fastest_name = best.name if best else "-"
        noted = {t.name: t.note for t in timed}
        axes = [case.n, case.d, case.heads or "-", case.kernel or "-"]
        cells: list[object] = []
        for c, t in zip(cands, timed, strict=True):
            if t.seconds is None:
                cells.append("-" if t.note.startswith("skipped") else "fail")
                continue
            r = ratio(t, best, args.stat) if best else math.nan
            cells.append(f"{r:.2f}" + _mark(t.note))
            if c.default:
                worst.append(r)
                default_name = c.name
                shaky += any(DISTURBED in note for note in (t.note, noted.get(fastest_name, "")))
        rows.append([*axes, fastest_name, f"{fastest * 1e3:.2f}", *cells])
        times = " ".join(f"{t.name}={t.seconds * 1e3:.2f}ms" for t in timed if t.seconds)
        print(f"  {layer} n={case.n} d={case.d} H={case.heads} k={case.kernel}: {times}",
              file=sys.stderr, flush=True)  # progress, and the absolute times
        header = ["n", "d", "H", "k", "fastest ref", "ref ms",
                  *[(c.name + "*" if c.default else c.name) + (" (ref)" if c.reference else "")
                    for c in cands]]
        for c, t in zip(cands, timed, strict=True):
            if t.note and not t.note.startswith("skipped"):
                print(f"  note {layer} n={case.n} d={case.d} {c.name}: {t.note}", file=sys.stderr)
    mode = "forward+backward" if args.train else "forward, no grad"
    print(f"\n## {layer} ({mode}, batch {args.batch or GRIDS[family_of(layer)][0].batch}, "
          f"causal={args.causal}, {args.threads} threads, stat={args.stat}): "
          "time / fastest reference")
    print(tabulate(rows, headers=header, tablefmt=args.format, disable_numparse=True),
          flush=True)
    if worst:
        verdict = "within" if max(worst) <= args.target else "NOT within"
        print(f"default '{default_name}': worst {max(worst):.2f}x, best {min(worst):.2f}x "
              f"of the fastest reference over {len(worst)} sizes ({verdict} {args.target}x)",
              flush=True)
    if shaky:
        print(f"{shaky} of {len(worst)} sizes were measured while other processes held the "
              "CPUs (cells marked ?): re-run them on a quiet machine", flush=True)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", nargs="+", default=list(CONV_LAYERS), choices=ALL_LAYERS,
                   metavar="LAYER", help=f"layers to time (default: {' '.join(CONV_LAYERS)}; "
                   f"any of {', '.join(ALL_LAYERS)})")
    p.add_argument("--all", action="store_true", help="every layer family")
    p.add_argument("--quick", action="store_true", help="a subset of each grid (minutes)")
    p.add_argument("--n", type=int, nargs="+", help="sequence lengths (all layers)")
    p.add_argument("--d", type=int, nargs="+", help="model widths")
    p.add_argument("--heads", type=int, nargs="+", help="heads H")
    p.add_argument("--kernel", type=int, nargs="+", help="kernel widths k")
    p.add_argument("--batch", type=int, help="batch (default 8)")
    p.add_argument("--variants", nargs="+", metavar="VARIANT",
                   help="time only these variants of each layer ('default': the registry's "
                        "default; attention's sdpa layer as attention_sdpa:sdpa); the "
                        "references always run (default: every variant)")
    p.add_argument("--causal", action="store_true", help="causal layers (default: centred)")
    p.add_argument("--train", action="store_true", help="time forward + backward")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds")
    p.add_argument("--min-run-time", type=float, default=0.2,
                   help="seconds per candidate per round (blocked_autorange)")
    p.add_argument("--samples", type=int, default=5,
                   help="at least this many calls per candidate per round")
    p.add_argument("--stat", choices=("paired", "min", "median"), default="paired",
                   help="paired: median of same-round ratios (default); min; median")
    p.add_argument("--max-gb", type=float, default=1.5,
                   help="skip candidates whose estimated working set is larger")
    p.add_argument("--band-max-n", type=int, default=1024,
                   help="skip the O(n^2) band formulations above this n")
    p.add_argument("--target", type=float, default=1.1, help="ratio the default should meet")
    p.add_argument("--malloc", choices=("steady", "default"), default="steady",
                   help="steady: glibc keeps freed memory (no trim, no mmap < 32 MiB), so "
                        "no candidate pays page faults its neighbours caused (default)")
    p.add_argument("--format", default="simple", help="tabulate table format (github: markdown)")
    args = p.parse_args(argv)
    for key in ("n", "d", "heads", "kernel"):
        if any(v < 1 for v in getattr(args, key) or ()):
            p.error(f"--{key} values must be positive")
    if args.all:
        args.layers = list(ALL_LAYERS)
    if args.variants:
        for layer in args.layers:
            if not selected(layer, args.variants):
                known = ", ".join([DEFAULT_VARIANT, *(r.label for r in registered(layer))])
                p.error(f"--variants keeps no variant of {layer} (it has: {known})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    args.wait = wait_counter()
    torch.set_num_threads(args.threads)
    heap = steady_heap() if args.malloc == "steady" else DEFAULT
    print(f"torch {torch.__version__}, {args.threads} threads, heap {heap}; ratios > 1: slower "
          "than the fastest reference; * = the registry's default variant; ! = see note on "
          "stderr; ? = disturbed by other processes")
    for layer in args.layers:
        run_layer(layer, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
