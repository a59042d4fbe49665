"""Facts about the measured structural metrics: max path length and sequential operations.

Stand-in modules with hand-computable answers first, then every registered layer against
its analytic cost model (Vaswani et al. 2017, Table 1; Wu et al. 2019).
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import registry
from harness.layers.common import pad_left
from harness.measure import structure as S
from harness.spec import LayerCase

D = 4  # channels of the stand-ins


# --------------------------------------------------------------------------- stand-ins


class DepthwiseConv(nn.Module):
    """Depthwise conv over time with the project's padding convention."""

    def __init__(self, d: int, kernel: int, causal: bool, dilation: int = 1) -> None:
        super().__init__()
        self.kernel, self.causal, self.dilation = kernel, causal, dilation
        self.weight = nn.Parameter(torch.randn(d, 1, kernel))  # (d, 1, k)
        self.d = d

    def forward(self, x: Tensor) -> Tensor:  # (B, n, d) -> (B, n, d)
        left = pad_left(self.kernel, self.causal, self.dilation)
        right = (self.kernel - 1) * self.dilation - left
        xp = F.pad(x.transpose(1, 2), (left, right))  # (B, d, n + span)
        y = F.conv1d(xp, self.weight, groups=self.d, dilation=self.dilation)  # (B, d, n)
        return y.transpose(1, 2)


class DenseMixer(nn.Module):
    """Attention-like: every output mixes every input."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, d)

    def forward(self, x: Tensor) -> Tensor:  # (B, n, d) -> (B, n, d)
        weights = (x @ x.transpose(1, 2)).softmax(dim=-1)  # (B, n, n)
        return self.proj(weights @ x)


class IgnoresFirst(nn.Module):
    """A centred conv that never reads input position 0."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.conv = DepthwiseConv(d, 3, causal=False)

    def forward(self, x: Tensor) -> Tensor:
        mask = torch.ones_like(x)
        mask[:, 0] = 0
        return self.conv(x * mask)


class TanhRNN(nn.Module):
    """A hand-written recurrent cell with the unrolled interface (initial_state / step)."""

    def __init__(self, d: int, reverse_forward: bool = False) -> None:
        super().__init__()
        self.ih = nn.Linear(d, d)
        self.hh = nn.Linear(d, d)
        self.d = d
        self.reverse_forward = reverse_forward  # a broken loop: runs time backwards

    def initial_state(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], self.d)  # (B, d)

    def step(self, x_t: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.tanh(self.ih(x_t) + self.hh(h))  # (B, d)
        return h, h

    def forward(self, x: Tensor) -> Tensor:  # (B, n, d) -> (B, n, d)
        n = x.shape[1]
        order = range(n - 1, -1, -1) if self.reverse_forward else range(n)
        h = self.initial_state(x)
        outs: dict[int, Tensor] = {}
        for t in order:
            outs[t], h = self.step(x[:, t], h)
        return torch.stack([outs[t] for t in range(n)], dim=1)


def band(n: int, back: int, ahead: int) -> Tensor:
    """D[t, s] = t - back <= s <= t + ahead."""
    t = torch.arange(n)[:, None]
    s = torch.arange(n)[None, :]
    return (s >= t - back) & (s <= t + ahead)


def identical(module: nn.Module):
    return lambda depth: module


# --------------------------------------------------------------------------- stand-in facts


def test_causal_conv_matrix_and_path_length() -> None:
    conv = DepthwiseConv(D, 3, causal=True)
    assert torch.equal(S.dependency_matrix(conv, 10, D), band(10, 2, 0))
    assert S.stack_path_length(identical(conv), 10, D, causal=True) == 5  # ceil(9 / 2)


def test_centred_conv_matrix_and_path_length() -> None:
    conv = DepthwiseConv(D, 3, causal=False)
    assert torch.equal(S.dependency_matrix(conv, 10, D), band(10, 1, 1))
    assert S.stack_path_length(identical(conv), 10, D, causal=False) == 9
    even = DepthwiseConv(D, 4, causal=False)  # extra tap on the right: back 1, ahead 2
    assert torch.equal(S.dependency_matrix(even, 10, D), band(10, 1, 2))
    assert S.stack_path_length(identical(even), 10, D, causal=False) == 9


def test_dense_mixer_is_one() -> None:
    mixer = DenseMixer(D)
    assert bool(S.dependency_matrix(mixer, 9, D).all())
    assert S.stack_path_length(identical(mixer), 9, D, causal=False) == 1


def test_rnn_standin_is_n() -> None:
    rnn = TanhRNN(D)
    graph = S.step_graph(rnn, 12, D)
    assert bool(graph.from_input.all()) and bool(graph.from_state[1:].all())
    dist = S.chain_distances(graph)  # dist[s, t] = t - s + 1 hops for s <= t
    s, t = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    expected = torch.where(s <= t, (t - s + 1).double(), torch.tensor(math.inf))
    assert torch.equal(dist, expected)
    assert S.recurrent_path_length(rnn, 12, D) == 12
    assert torch.equal(S.dependency_matrix(rnn, 12, D), band(12, 12, 0))


def test_rnn_whose_forward_breaks_the_chain_is_caught() -> None:
    with pytest.raises(RuntimeError, match="step graph"):
        S.recurrent_path_length(TanhRNN(D, reverse_forward=True), 6, D)


def test_dilated_standin_stack() -> None:
    def build(depth: int) -> nn.Module:
        return DepthwiseConv(D, 3, causal=True, dilation=3**depth)

    # offsets reached after L layers: base-3 numbers with L digits; 9 needs the third
    assert S.stack_path_length(build, 10, D, causal=True) == 3
    assert S.stack_path_length(build, 9, D, causal=True) == 2
    assert S.stack_path_length(build, 28, D, causal=True) == 4


def test_ignoring_position_zero_is_inf() -> None:
    ignores = IgnoresFirst(D)
    matrix = S.dependency_matrix(ignores, 10, D)
    assert torch.equal(matrix[:, 1:], band(10, 1, 1)[:, 1:]) and not bool(matrix[:, 0].any())
    assert S.stack_path_length(identical(ignores), 10, D, causal=False) == math.inf


def test_real_stack_equals_composed_matrices() -> None:
    torch.manual_seed(0)
    layers = [DepthwiseConv(D, 3, causal=True, dilation=3**i) for i in range(3)]
    mats = [S.dependency_matrix(layer, 12, D) for layer in layers]
    assert torch.equal(S.dependency_matrix(nn.Sequential(*layers), 12, D), S.compose(mats))
    # order matters once one layer drops an input: first layer first
    first, second = IgnoresFirst(D), DepthwiseConv(D, 3, causal=True)
    mats = [S.dependency_matrix(m, 12, D) for m in (first, second)]
    stack = S.dependency_matrix(nn.Sequential(first, second), 12, D)
    assert torch.equal(stack, S.compose(mats)) and not bool(stack[:, 0].any())
    assert not torch.equal(stack, S.compose(mats[::-1]))


def test_forward_and_reverse_probing_agree() -> None:
    for module in (DepthwiseConv(D, 3, causal=True), DenseMixer(D), IgnoresFirst(D), TanhRNN(D)):
        fwd = S.dependency_matrix(module, 9, D, mode="forward")
        rev = S.dependency_matrix(module, 9, D, mode="reverse")
        assert torch.equal(fwd, rev)
        assert torch.equal(S.dependency_matrix(module, 9, D, chunk=2), fwd)


# --------------------------------------------------------------------------- matrix algebra


def test_least_power_monotone_and_closure() -> None:
    n = 20
    assert S.least_power(band(n, 1, 1), S.coverage_target(n, False)) == 19
    assert S.least_power(band(n, 3, 0), S.coverage_target(n, True)) == 7  # ceil(19 / 3)
    assert S.least_power(torch.eye(n, dtype=torch.bool), S.coverage_target(n, False)) == math.inf
    # causal layer, non-causal target: the upper triangle is never reached
    assert S.least_power(band(n, 2, 0), S.coverage_target(n, False)) == math.inf


def test_least_power_without_self_dependence() -> None:
    swap = torch.tensor([[False, True], [True, True]])  # output 0 reads only input 1
    assert S.least_power(swap, S.coverage_target(2, False)) == 2
    strictly_past = band(6, 2, 0) & ~torch.eye(6, dtype=torch.bool)  # nilpotent
    assert S.least_power(strictly_past, S.coverage_target(6, True)) == math.inf


def test_least_power_from_a_start_matrix() -> None:
    n = 16
    start = band(n, 4, 4)  # as if earlier layers already reach 4 each way
    assert S.least_power(band(n, 1, 1), S.coverage_target(n, False), start) == 11


# --------------------------------------------------------------------------- graph depth


def test_autograd_depth_counts_nodes_iteratively() -> None:
    x = torch.randn(3, requires_grad=True)
    y = x
    for _ in range(5000):  # far past Python's recursion limit if walked recursively
        y = y * 1.0001
    assert S.autograd_depth(y) == 5001  # 5000 MulBackward0 + x's AccumulateGrad
    assert S.autograd_depth(torch.randn(3)) == 0
    branchy = (x * 2).sum() + x.exp().sin().sum()  # longest: Add <- Sum <- Sin <- Exp <- Acc
    assert S.autograd_depth(branchy) == 5


def test_graph_depth_of_standins() -> None:
    conv = DepthwiseConv(D, 3, causal=True)
    depths = [S.graph_depth(conv, torch.randn(1, n, D)) for n in (5, 9, 17)]
    assert len(set(depths)) == 1
    rnn = TanhRNN(D)
    r = [S.graph_depth(rnn, torch.randn(1, n, D)) for n in (5, 9, 13)]
    assert r[1] - r[0] == r[2] - r[1] > 0


# --------------------------------------------------------------------------- registry

SETTINGS = [  # (n, kernel, window, heads, causal)
    (n, k, r, h, causal)
    for n in (7, 16, 33)
    for (k, r, h) in ((3, 3, 2), (5, 4, 3))
    for causal in (False, True)
]


def case_for(entry: registry.LayerEntry, n: int, k=3, r=4, h=2, causal=False) -> LayerCase:
    return entry.normalize(
        LayerCase(seq_len=n, d_model=2 * h, heads=h, kernel=k, window=r, src_len=5, height=1,
                  width=n, causal=causal)
    )


def all_cases() -> list[tuple[str, LayerCase]]:
    seen: dict[tuple[str, LayerCase], None] = {}
    for entry in registry.entries():
        for n, k, r, h, causal in SETTINGS:
            case = case_for(entry, n, k, r, h, causal)
            if entry.problem(case) is None:
                seen[(entry.name, case)] = None
    return list(seen)


@pytest.mark.parametrize(("name", "case"), all_cases(), ids=lambda v: str(v))
def test_measured_path_length_equals_analytic(name: str, case: LayerCase) -> None:
    entry = registry.get(name)
    analytic = entry.cost_of(case, entry.reference_variant).path_length
    assert S.measure_path_length(name, case) == analytic


def test_every_shipped_layer_is_covered() -> None:
    names = {name for name, _ in all_cases()}
    assert names == set(registry.names())
    assert {"rnn", "lstm", "gru", "conv", "attention"} <= names


@pytest.mark.parametrize("name", registry.names())
def test_batch_elements_are_independent(name: str) -> None:
    """The probing puts one probe per batch element: that needs no mixing across the batch."""
    entry = registry.get(name)
    case = case_for(entry, 8)
    module = S._build(entry, case, 0, 0).double().eval()
    x = torch.randn(3, 8, case.d_model, dtype=torch.float64, requires_grad=True)
    extra = [torch.randn((3, *s[1:]), dtype=torch.float64, requires_grad=True)
             for s in entry.extra_shapes(case)]  # cross attention's source
    module(x, *extra)[1].sum().backward()
    for t in (x, *extra):
        assert t.grad is not None and bool(t.grad[1].abs().sum() > 0)
        assert float(t.grad[0].abs().sum()) == 0.0 and float(t.grad[2].abs().sum()) == 0.0


@pytest.mark.parametrize("name", registry.names())
def test_causal_variants_never_read_the_future(name: str) -> None:
    entry = registry.get(name)
    causal = "causal" in entry.params or entry.family == "recurrent"
    if not causal:
        pytest.skip("no causal form")
    case = case_for(entry, 11, causal=True)
    matrix = S.dependency_matrix(S._build(entry, case, 0, 0), 11, case.d_model)
    assert not bool(torch.triu(matrix, 1).any())
    assert bool(matrix.diagonal().all())


def test_real_registry_stack_matches_composition() -> None:
    entry = registry.get("conv_dilated")
    case = case_for(entry, 12, k=3, causal=True)
    layers = [S._build(entry, case, depth, 0) for depth in range(3)]
    mats = [S.dependency_matrix(layer, 12, case.d_model) for layer in layers]
    target = S.coverage_target(12, causal=True)
    stack = S.dependency_matrix(nn.Sequential(*layers), 12, case.d_model)
    assert torch.equal(stack, S.compose(mats))
    assert S.covers(stack, target) and not S.covers(S.compose(mats[:2]), target)
    assert S.measure_path_length("conv_dilated", case) == 3


def test_local_attention_stack_of_path_length_layers_connects_all() -> None:
    entry = registry.get("attention_local")
    case = case_for(entry, 9, r=3)
    length = int(S.measure_path_length("attention_local", case))
    layers = [S._build(entry, case, depth, 0) for depth in range(length)]
    target = S.coverage_target(9, causal=False)
    assert S.covers(S.dependency_matrix(nn.Sequential(*layers), 9, case.d_model), target)
    short = nn.Sequential(*layers[:-1])
    assert not S.covers(S.dependency_matrix(short, 9, case.d_model), target)


# --------------------------------------------------------------------------- Table 1 growth


def path(name: str, n: int, **kw) -> float:
    return S.measure_path_length(name, case_for(registry.get(name), n, **kw))


def test_growth_attention_constant_recurrent_linear() -> None:
    for name in ("attention", "attention_sdpa"):
        assert [path(name, n) for n in (8, 16, 32)] == [1, 1, 1]
        assert [path(name, n, causal=True) for n in (8, 16, 32)] == [1, 1, 1]
    for name in ("rnn", "lstm", "gru"):
        assert [path(name, n) for n in (8, 16, 32)] == [8, 16, 32]


@pytest.mark.parametrize("name", ["conv", "conv_separable", "lightconv", "dynamicconv"])
def test_growth_contiguous_conv_like_n_over_k(name: str) -> None:
    for k, causal in ((3, True), (5, True), (3, False)):
        small, large = path(name, 33, k=k, causal=causal), path(name, 65, k=k, causal=causal)
        assert large == 2 * small  # (n - 1) / reach: doubling n - 1 doubles it
    assert path(name, 33, k=5, causal=True) == 8  # ceil(32 / 4)
    assert path(name, 33, k=3, causal=True) == 16  # ceil(32 / 2)


def test_growth_dilated_conv_like_log_k_n() -> None:
    def ceil_log(n: int, k: int) -> int:
        layers, covered = 1, k
        while covered < n:
            layers, covered = layers + 1, covered * k
        return layers

    for k in (2, 3):
        for n in (7, 9, 10, 27, 28, 64):
            assert path("conv_dilated", n, k=k, causal=True) == ceil_log(n, k)
    assert path("conv_dilated", 16, k=3, causal=False) == math.inf  # gridding, by design


def test_growth_local_attention_like_n_over_r() -> None:
    for r in (3, 5):
        small = path("attention_local", 33, r=r, causal=True)
        assert path("attention_local", 65, r=r, causal=True) == 2 * small
        assert small == math.ceil(32 / (r - 1))


# --------------------------------------------------------------------------- seq ops


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_seq_ops_recurrent_is_n(name: str) -> None:
    entry = registry.get(name)
    ops = [S.measure_seq_ops(name, case_for(entry, n)) for n in (8, 16, 24)]
    depths = [o.depth for o in ops]
    assert depths[1] - depths[0] == depths[2] - depths[1] > 0  # collinear, growing
    assert [o.seq_ops for o in ops] == [8, 16, 24]
    assert ops[0].depth_n0_next > ops[0].depth_n0


@pytest.mark.parametrize("name", [n for n in registry.names() if n not in ("rnn", "lstm", "gru")])
def test_seq_ops_parallel_is_one(name: str) -> None:
    entry = registry.get(name)
    for causal in (False, True):
        small = S.measure_seq_ops(name, case_for(entry, 16, causal=causal))
        large = S.measure_seq_ops(name, case_for(entry, 48, causal=causal))
        assert small.depth == large.depth == small.depth_n0 == small.depth_n0_next
        assert small.seq_ops == large.seq_ops == 1
        assert large.seq_ops == entry.cost_of(case_for(entry, 48, causal=causal)).seq_ops


# --------------------------------------------------------------------------- API behaviour


def test_too_long_is_nan_and_invalid_raises() -> None:
    assert math.isnan(S.measure_path_length("conv", LayerCase(64, 8, kernel=3), max_n=32))
    with pytest.raises(ValueError, match="kernel"):
        S.measure_path_length("conv", LayerCase(16, 8))
    with pytest.raises(ValueError, match="kernel"):
        S.measure_seq_ops("conv", LayerCase(16, 8))


def test_measurement_ignores_d_and_batch_and_is_cached() -> None:
    base = LayerCase(seq_len=13, d_model=8, kernel=3, causal=True)
    first = S.measure_path_length("conv", base)
    hits = S._path_length_cached.cache_info().hits
    assert S.measure_path_length("conv", replace(base, d_model=64, batch=5, heads=4)) == first
    assert S._path_length_cached.cache_info().hits == hits + 1
    assert S.structural_case("conv", base) == S.structural_case("conv", replace(base, d_model=6))


def test_measurement_leaves_global_state_alone() -> None:
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    S.clear_cache()
    S.measure_path_length("lstm", LayerCase(seq_len=6, d_model=8))
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads
