"""Facts about the convolution layers: shapes, padding, variants agree, costs, path lengths."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import count_flops
from torch import nn

from harness import registry
from harness.layers.common import pad_left
from harness.layers.conv import dilated_path_length
from harness.layers.pathlen import stacked_path_length as conv_path_length
from harness.spec import LayerCase

LAYERS = ("conv", "conv_dilated", "conv_separable")
KERNELS = (1, 2, 3, 4, 5)


def _variants(name: str) -> list[str]:
    return list(registry.get(name).variants)


def _cases() -> list[tuple[str, str, int, bool, int]]:
    out = []
    for name in LAYERS:
        for variant in _variants(name):
            for k in KERNELS:
                for causal in (False, True):
                    for depth in (0, 1, 2) if name == "conv_dilated" else (0,):
                        out.append((name, variant, k, causal, depth))
    return out


def _build(name, variant, case, depth=0, dtype=torch.float64) -> nn.Module:
    return registry.get(name).build(case, variant, depth).to(dtype)


def _dependence(module: nn.Module, n: int, d: int) -> torch.Tensor:
    """(n, n) bool: [j, i] is True when output position j changes when input i changes.

    One batched forward: row 0 is a random input, row i + 1 the same with position i
    perturbed by 1. With float64 and random weights a real dependence moves the output by
    far more than 1e-9, and rounding differences between batch rows by far less.
    """
    base = torch.randn(1, n, d, dtype=torch.float64)
    x = base.repeat(n + 1, 1, 1)  # (n + 1, n, d)
    for i in range(n):
        x[i + 1, i] += 1.0
    with torch.no_grad():
        y = module(x)  # (n + 1, n, d)
    return ((y[1:] - y[:1]).abs() > 1e-9).any(dim=-1).T  # (n outputs, n inputs)


# --------------------------------------------------------------------------- metadata


def test_entries() -> None:
    for name in LAYERS:
        entry = registry.get(name)
        assert entry.family == "convolution"
        assert entry.params == {"kernel", "causal"} and entry.required == {"kernel"}
        assert entry.reference_variant == "unfold"
        assert entry.default_variant == ("conv1d" if name == "conv_dilated"
                                         else "channels_last")
        assert entry.theory.seq_ops == "O(1)"
    assert registry.get("conv").theory.complexity == "O(k n d^2)"
    assert registry.get("conv_dilated").theory.path_length == "O(log_k n)"
    assert registry.get("conv_separable").theory.complexity == "O(k n d + n d^2)"


@pytest.mark.parametrize("name", LAYERS)
def test_kernel_is_required(name: str) -> None:
    with pytest.raises(ValueError, match="kernel"):
        registry.get(name).build(LayerCase(seq_len=5, d_model=3))


# --------------------------------------------------------------------------- function


@pytest.mark.parametrize(("name", "variant", "k", "causal", "depth"), _cases())
def test_shape(name: str, variant: str, k: int, causal: bool, depth: int) -> None:
    case = LayerCase(seq_len=7, d_model=3, kernel=k, causal=causal, batch=2)
    y = _build(name, variant, case, depth, torch.float32)(torch.randn(2, 7, 3))
    assert y.shape == (2, 7, 3)


@pytest.mark.parametrize(("name", "variant", "k", "causal", "depth"), _cases())
def test_variants_agree(name: str, variant: str, k: int, causal: bool, depth: int) -> None:
    torch.manual_seed(k + 10 * depth + causal)
    case = LayerCase(seq_len=9, d_model=4, kernel=k, causal=causal, batch=2)
    ref = _build(name, registry.get(name).reference_variant, case, depth)
    other = _build(name, variant, case, depth)
    other.load_state_dict(ref.state_dict())
    x = torch.randn(2, 9, 4, dtype=torch.float64)
    torch.testing.assert_close(other(x), ref(x), rtol=1e-12, atol=1e-12)


def _torch_conv(weight, bias, k, causal, dilation, groups=1) -> nn.Module:
    """nn.Conv1d with symmetric padding = the total span; we then slice the n outputs."""
    d = weight.shape[0]
    conv = nn.Conv1d(d, d, k, bias=True, dilation=dilation, groups=groups,
                     padding=(k - 1) * dilation).double()
    conv.load_state_dict({"weight": weight, "bias": bias})
    return conv


@pytest.mark.parametrize("variant", ["conv1d", "unfold"])
@pytest.mark.parametrize("k", [2, 3, 4, 5])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dilation_depth", [0, 1])
def test_dense_conv_matches_nn_conv1d(variant, k, causal, dilation_depth) -> None:
    """Output t = sum_j W[:, :, j] x[t - pad_left + j*dil] + b, as nn.Conv1d computes it."""
    torch.manual_seed(k)
    n, d = 11, 3
    dil = k**dilation_depth
    case = LayerCase(seq_len=n, d_model=d, kernel=k, causal=causal, batch=2)
    m = _build("conv_dilated", variant, case, dilation_depth)
    conv = _torch_conv(m.weight.detach(), m.bias.detach(), k, causal, dil)
    x = torch.randn(2, n, d, dtype=torch.float64)
    full = conv(x.transpose(1, 2))  # (B, d, n + span): output s has window start s - span
    start = (k - 1) * dil - pad_left(k, causal, dil)
    expected = full[:, :, start : start + n].transpose(1, 2)
    torch.testing.assert_close(m(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", ["channels_last", "conv1d", "unfold"])
@pytest.mark.parametrize("k", [2, 3, 4, 5])  # odd centred: the conv pads itself
@pytest.mark.parametrize("causal", [False, True])
def test_separable_matches_depthwise_then_linear(variant, k, causal) -> None:
    torch.manual_seed(k)
    n, d = 9, 4
    case = LayerCase(seq_len=n, d_model=d, kernel=k, causal=causal, batch=2)
    m = _build("conv_separable", variant, case)
    dw = _torch_conv(m.depthwise_weight.detach(), m.depthwise_bias.detach(), k, causal, 1, d)
    pw = nn.Linear(d, d).double()
    pw.load_state_dict({"weight": m.pointwise_weight.detach(), "bias": m.pointwise_bias.detach()})
    x = torch.randn(2, n, d, dtype=torch.float64)
    start = (k - 1) - pad_left(k, causal)
    expected = pw(dw(x.transpose(1, 2))[:, :, start : start + n].transpose(1, 2))
    torch.testing.assert_close(m(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("name", "variant", "k", "causal", "depth"), _cases())
def test_receptive_field(name: str, variant: str, k: int, causal: bool, depth: int) -> None:
    """Output t depends on exactly the inputs t - pad_left + j*dilation (j < k) in range."""
    torch.manual_seed(5)
    n = 9
    dil = k**depth
    case = LayerCase(seq_len=n, d_model=2, kernel=k, causal=causal)
    dep = _dependence(_build(name, variant, case, depth), n, 2)
    left = pad_left(k, causal, dil)
    expected = torch.zeros(n, n, dtype=torch.bool)
    for t in range(n):
        for j in range(k):
            i = t - left + j * dil
            if 0 <= i < n:
                expected[t, i] = True
    assert torch.equal(dep, expected)


def test_padding_convention_by_hand() -> None:
    """n=8, output 3: k=4 centred sees 2..5 (extra tap right); causal k=4 sees 0..3;
    dilated causal k=2 at depth 2 (dilation 4) sees -1 (padding) and 3; k=3 centred at
    depth 1 (dilation 3) sees 0, 3, 6."""
    cases = [("conv", 4, False, 0, [2, 3, 4, 5]), ("conv", 4, True, 0, [0, 1, 2, 3]),
             ("conv_dilated", 2, True, 2, [3]), ("conv_dilated", 3, False, 1, [0, 3, 6]),
             ("conv_separable", 2, False, 0, [3, 4])]
    for name, k, causal, depth, inputs in cases:
        case = LayerCase(seq_len=8, d_model=2, kernel=k, causal=causal)
        for variant in _variants(name):
            dep = _dependence(_build(name, variant, case, depth), 8, 2)
            assert dep[3].nonzero().flatten().tolist() == inputs, (name, variant)


@pytest.mark.parametrize(("name", "variant", "k", "depth"),
                         [(c[0], c[1], c[2], c[4]) for c in _cases() if c[3]])
def test_causal_outputs_ignore_the_future(name: str, variant: str, k: int, depth: int) -> None:
    torch.manual_seed(6)
    case = LayerCase(seq_len=9, d_model=3, kernel=k, causal=True, batch=2)
    m = _build(name, variant, case, depth)
    x = torch.randn(2, 9, 3, dtype=torch.float64)
    for t in (0, 4, 7):
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :])
        torch.testing.assert_close(m(x)[:, : t + 1], m(x2)[:, : t + 1], rtol=0, atol=0)


# --------------------------------------------------------------------------- cost


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "d", "k"), [(13, 24, 5), (7, 5, 2), (11, 3, 1)])
def test_params_equal_module(name: str, causal: bool, n: int, d: int, k: int) -> None:
    case = LayerCase(seq_len=n, d_model=d, kernel=k, causal=causal, batch=3)
    entry = registry.get(name)
    for variant in entry.variants:
        for depth in (0, 1):
            module = _build(name, variant, case, depth)
            assert entry.cost_of(case, variant).params == sum(
                p.numel() for p in module.parameters()
            )


# B=2, n=5, d=3, k=3
#   dense:     2*B*n*d*d*k = 2*2*5*3*3*3 = 540;   train 3*540 = 1620
#   separable: 2*B*n*(d*k + d*d) = 2*2*5*(9 + 9) = 360;   train 3*360 = 1080
# B = 2, n = 5, d = 3, k = 3 centred: 13 of the 15 (step, tap) pairs read inside the sequence
HAND = {
    "conv": {"flops": 540, "useful": 2 * 2 * 9 * 13, "train": 1620, "params": 3 * 3 * 3 + 3,
             "other": 30},
    "conv_dilated": {"flops": 540, "useful": 2 * 2 * 9 * 13, "train": 1620, "params": 30,
                     "other": 30},
    "conv_separable": {"flops": 360, "useful": 2 * 2 * 3 * 13 + 2 * 2 * 5 * 9, "train": 1080,
                       "params": 9 + 3 + 9 + 3, "other": 60},
}


@pytest.mark.parametrize("name", LAYERS)
def test_hand_computed_cost(name: str) -> None:
    case = LayerCase(seq_len=5, d_model=3, kernel=3, batch=2)
    entry = registry.get(name)
    for variant in entry.variants:
        cost = entry.cost_of(case, variant)
        assert cost.flops == HAND[name]["flops"]
        assert cost.flops_useful == HAND[name]["useful"]
        assert cost.train_flops == HAND[name]["train"]
        assert cost.params == HAND[name]["params"]
        assert cost.flops_other == HAND[name]["other"]  # one add per bias element: B*n*d = 30
        assert cost.seq_ops == 1


def test_hand_computed_activations() -> None:
    case = LayerCase(seq_len=5, d_model=3, kernel=3, batch=2)
    conv = registry.get("conv")
    # padded copy B*d*(n + k - 1) = 42, output B*n*d = 30; unfold adds windows B*n*d*k = 90
    assert conv.cost_of(case, "conv1d").activation_elements == 72
    # channels_last, centred odd k: the conv pads itself, only the output; causal: padded too
    assert conv.cost_of(case, "channels_last").activation_elements == 30
    causal = LayerCase(seq_len=5, d_model=3, kernel=3, batch=2, causal=True)
    assert conv.cost_of(causal, "channels_last").activation_elements == 72
    assert conv.cost_of(case, "unfold").activation_elements == 162


@pytest.mark.parametrize(("name", "variant", "depth"), [
    ("conv", "conv1d", 0), ("conv", "unfold", 0), ("conv", "channels_last", 0),
    ("conv_dilated", "conv1d", 1), ("conv_dilated", "unfold", 2),
    ("conv_separable", "conv1d", 0), ("conv_separable", "unfold", 0),
    ("conv_separable", "channels_last", 0),
])
@pytest.mark.parametrize("causal", [False, True])
def test_flop_counter_agrees(name: str, variant: str, depth: int, causal: bool) -> None:
    torch.manual_seed(7)
    case = LayerCase(seq_len=5, d_model=3, kernel=3, causal=causal, batch=2)
    m = _build(name, variant, case, depth, torch.float32)
    x = torch.randn(2, 5, 3)
    assert count_flops(m, x) == HAND[name]["flops"]
    train = count_flops(m, x.clone().requires_grad_(True), train=True)
    if name == "conv_separable" and variant in ("conv1d", "channels_last"):
        # torch 2.13's conv backward formula ignores groups: the depthwise weight gradient
        # (2*B*n*d*k = 180 executed) is counted as 2*B*n*d*d*k = 540.
        assert train == HAND[name]["train"] - 180 + 540
    else:
        assert train == HAND[name]["train"]


# --------------------------------------------------------------------------- path length


def test_path_length_hand_values() -> None:
    assert conv_path_length(10, 3, causal=False) == 9  # reach 1 each way: ceil(9/1)
    assert conv_path_length(10, 3, causal=True) == 5  # reach 2 back: ceil(9/2)
    assert conv_path_length(10, 4, causal=False) == 9  # back 1, ahead 2
    assert conv_path_length(10, 5, causal=False) == 5  # ceil(9/2)
    assert conv_path_length(10, 4, causal=True) == 3  # ceil(9/3)
    assert conv_path_length(10, 2, causal=True) == 9
    assert conv_path_length(10, 2, causal=False) == math.inf  # never looks back
    assert conv_path_length(10, 1, causal=True) == math.inf
    assert conv_path_length(1, 1, causal=False) == 1
    assert conv_path_length(3, 7, causal=False) == 1
    assert dilated_path_length(10, 3, causal=True) == 3  # 3^2 = 9 < 10 <= 27 = 3^3
    assert dilated_path_length(9, 3, causal=True) == 2
    assert dilated_path_length(10, 2, causal=True) == 4  # 8 < 10 <= 16
    assert dilated_path_length(10, 1, causal=True) == math.inf
    assert dilated_path_length(10, 3, causal=False) == math.inf  # gridding
    assert dilated_path_length(2, 3, causal=False) == 1
    assert dilated_path_length(3, 5, causal=False) == 1
    assert dilated_path_length(4, 5, causal=False) == math.inf


def test_cost_reports_path_length() -> None:
    case = LayerCase(seq_len=10, d_model=2, kernel=3, causal=True)
    assert registry.get("conv").cost_of(case).path_length == 5
    assert registry.get("conv_separable").cost_of(case).path_length == 5
    assert registry.get("conv_dilated").cost_of(case).path_length == 3


def _brute_path_length(n: int, k: int, causal: bool, dilated: bool) -> float:
    """Min stack depth connecting every (input i, output j) pair (j >= i if causal), walking
    the position graph layer by layer; positions off the sequence are padding, not nodes."""
    left = pad_left(k, causal)
    offsets = [j - left for j in range(k)]
    reached = [{i} for i in range(n)]
    needed = [{j for j in range(n) if j >= i or not causal} for i in range(n)]
    for depth in range(n + 3):
        dil = k**depth if dilated else 1
        # output t reads input t + o*dil, so input position p feeds output p - o*dil
        reached = [{p - o * dil for p in r for o in offsets if 0 <= p - o * dil < n}
                   for r in reached]
        if all(needed[i] <= reached[i] for i in range(n)):
            return depth + 1
    return math.inf


@pytest.mark.parametrize("k", KERNELS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dilated", [False, True])
def test_path_length_matches_brute_force(k: int, causal: bool, dilated: bool) -> None:
    formula = dilated_path_length if dilated else conv_path_length
    for n in range(1, 14):
        assert formula(n, k, causal) == _brute_path_length(n, k, causal, dilated), n


@pytest.mark.parametrize(("name", "k", "causal", "n", "layers"), [
    ("conv", 3, False, 10, 9),
    ("conv", 4, True, 10, 3),
    ("conv_separable", 3, True, 10, 5),
    ("conv_dilated", 3, True, 10, 3),
    ("conv_dilated", 2, True, 9, 4),
])
def test_stacked_modules_connect_after_path_length_layers(name, k, causal, n, layers) -> None:
    """A real stack (depth 0..L-1) connects every pair at L = path_length, not at L - 1."""
    torch.manual_seed(8)
    case = LayerCase(seq_len=n, d_model=2, kernel=k, causal=causal)
    assert registry.get(name).cost_of(case).path_length == layers
    want = torch.ones(n, n, dtype=torch.bool)
    if causal:
        want = torch.tril(want)
    for depth, connected in ((layers - 1, False), (layers, True)):
        stack = nn.Sequential(*[_build(name, "conv1d", case, i) for i in range(depth)])
        dep = _dependence(stack, n, 2)
        assert bool((dep | ~want).all()) is connected
