"""LightConv and DynamicConv: variants vs the definition, softmax/DropConnect, costs vs counters."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import build_double, count_flops, random_input
from probes import dependency_depth
from torch import nn

from harness import registry
from harness.layers import dynamicconv
from harness.spec import LayerCase

LIGHT = ["auto", "channels_last", "conv1d", "strided", "unfold", "band"]
DYNAMIC = ["auto", "strided", "unfold", "band", "shift"]
SHIFT_MAX_K = dynamicconv.SHIFT_MAX_K
ALL = [("lightconv", v) for v in LIGHT] + [("dynamicconv", v) for v in DYNAMIC]


def _case(n: int = 11, d: int = 12, heads: int = 3, kernel: int = 3, causal: bool = False,
          block: bool = False, batch: int = 2) -> LayerCase:
    return LayerCase(seq_len=n, d_model=d, heads=heads, kernel=kernel, causal=causal,
                     block=block, batch=batch)


def _window(t: int, k: int, causal: bool) -> range:
    """Input positions feeding output t, written out from Wu et al. / the padding rule."""
    start = t - (k - 1) if causal else t - (k - 1) // 2
    return range(start, start + k)


def _reference(module: nn.Module, x: torch.Tensor, case: LayerCase) -> torch.Tensor:
    """y[t, ch] = sum_j w_t[head(ch), j] x[t - pad + j, ch], zero outside, as a plain loop."""
    h, k = case.heads, case.kernel
    b, n, d = x.shape
    if case.block:
        x = nn.functional.glu(module.glu_proj(x), dim=-1)
    if hasattr(module, "kernel_proj"):  # DynamicConv: kernel from the current step
        w = module.kernel_proj(x).view(b, n, h, k).softmax(-1)  # (B, n, H, k)
    else:
        w = module.weight.softmax(-1).expand(b, n, h, k)
    y = torch.zeros_like(x)
    for t in range(n):
        for j, s in enumerate(_window(t, k, case.causal)):
            if 0 <= s < n:
                tap = w[:, t, :, j].repeat_interleave(d // h, dim=-1)  # (B, d)
                y[:, t] += tap * x[:, s]
    return module.out_proj(y) if case.block else y


# --------------------------------------------------------------------------- registry


def test_registered_entries() -> None:
    light = registry.get("lightconv")
    assert light.family == "lightconv"
    assert light.params == {"heads", "kernel", "causal", "block"}
    assert light.required == {"heads", "kernel"}
    assert set(light.variants) == set(LIGHT)
    assert (light.default_variant, light.reference_variant) == ("auto", "unfold")
    assert light.theory.complexity == "O(k n d)" and light.theory.path_length == "O(n/k)"
    dyn = registry.get("dynamicconv")
    assert dyn.family == "dynamicconv" and set(dyn.variants) == set(DYNAMIC)
    assert (dyn.default_variant, dyn.reference_variant) == ("auto", "unfold")
    assert "O(n d H k)" in dyn.summary


@pytest.mark.parametrize("name", ["lightconv", "dynamicconv"])
def test_invalid_cases_are_reported(name: str) -> None:
    entry = registry.get(name)
    assert "not divisible" in entry.problem(_case(d=10, heads=3))
    with pytest.raises(ValueError, match="kernel"):
        entry.build(_case(kernel=None))
    with pytest.raises(ValueError, match="no variant"):
        entry.cost_of(_case(), "cuda")


# --------------------------------------------------------------------------- function


@pytest.mark.parametrize(("name", "variant"), ALL)
@pytest.mark.parametrize("block", [False, True])
def test_shape(name: str, variant: str, block: bool) -> None:
    case = _case(block=block)
    y = build_double(name, variant, case)(random_input(case))
    assert y.shape == (case.batch, case.n, case.d)


@pytest.mark.parametrize("name", ["lightconv", "dynamicconv"])
@pytest.mark.parametrize("block", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5, 7])
def test_variants_match_definition(name: str, kernel: int, causal: bool, block: bool) -> None:
    case = _case(n=11, kernel=kernel, causal=causal, block=block)
    x = random_input(case)
    entry = registry.get(name)
    first = build_double(name, entry.reference_variant, case)
    expected = _reference(first, x, case)
    for seed, variant in enumerate(entry.variants, start=3):
        module = build_double(name, variant, case, seed=seed)
        module.load_state_dict(first.state_dict())
        assert torch.allclose(module(x), expected, atol=1e-12), variant


@pytest.mark.parametrize("name", ["lightconv", "dynamicconv"])
@pytest.mark.parametrize(("batch", "n", "d", "heads", "kernel", "causal", "block"), [
    (3, 13, 15, 5, 5, False, True),
    (1, 9, 21, 3, 4, True, False),
    (2, 5, 14, 7, 9, False, False),  # kernel wider than the sequence
    (2, 7, 9, 3, 9, True, True),
])
def test_variants_agree_forward_and_backward(name: str, batch: int, n: int, d: int, heads: int,
                                             kernel: int, causal: bool, block: bool) -> None:
    """Same weights -> same output, same input gradient and same weight gradients, at odd
    sizes (odd n and d, d/H odd, k > n, B = 1 and B > 1)."""
    case = _case(n=n, d=d, heads=heads, kernel=kernel, causal=causal, block=block, batch=batch)
    entry = registry.get(name)
    first = build_double(name, entry.reference_variant, case)
    x = random_input(case)
    grad_out = random_input(case, seed=2)
    results = {}
    for seed, variant in enumerate(entry.variants, start=3):
        module = build_double(name, variant, case, seed=seed)
        module.load_state_dict(first.state_dict())
        xi = x.clone().requires_grad_(True)
        y = module(xi)
        y.backward(grad_out)
        grads = {key: p.grad for key, p in module.named_parameters()}
        results[variant] = (y.detach(), xi.grad, grads)
    y0, gx0, gw0 = results[entry.reference_variant]
    for variant, (y, gx, gw) in results.items():
        assert torch.allclose(y, y0, atol=1e-12), variant
        assert torch.allclose(gx, gx0, atol=1e-12), variant
        assert gw.keys() == gw0.keys()
        for key in gw0:
            assert torch.allclose(gw[key], gw0[key], atol=1e-12), (variant, key)


def _auto_matches_the_reference(name: str, case: LayerCase) -> tuple[nn.Module, torch.Tensor]:
    """"auto" and the reference variant from the same weights: same output, input gradient
    and weight gradients. Returns the auto module and the input."""
    reference = build_double(name, "unfold", case)
    auto = build_double(name, "auto", case, seed=5)
    auto.load_state_dict(reference.state_dict())
    x, grad_out = random_input(case), random_input(case, seed=2)
    grads = []
    for module in (reference, auto):
        xi = x.clone().requires_grad_(True)
        y = module(xi)
        y.backward(grad_out)
        grads.append((y.detach(), xi.grad, [p.grad for p in module.parameters()]))
    (y0, gx0, gw0), (y1, gx1, gw1) = grads
    assert torch.allclose(y1, y0, atol=1e-12)
    assert torch.allclose(gx1, gx0, atol=1e-12)
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(gw1, gw0, strict=True))
    return auto, x


@pytest.mark.parametrize(("d", "heads", "kernel", "causal"), [
    (15, 5, SHIFT_MAX_K + 2, False), (15, 5, SHIFT_MAX_K + 2, True),  # small products: 160
    (85, 1, SHIFT_MAX_K + 2, True),  # k d/H >= 400: threshold 64
    (54, 2, 15, False),  # k d/H = 405: threshold 5 (k + 1) = 80
    (15, 5, SHIFT_MAX_K, True), (15, 5, SHIFT_MAX_K, False),  # shifted multiply-adds, any n
])
@pytest.mark.parametrize("offset", [0, 1])
def test_dynamicconv_auto_agrees_on_both_sides_of_its_threshold(
        d: int, heads: int, kernel: int, causal: bool, offset: int) -> None:
    """"auto" runs shifted multiply-adds up to SHIFT_MAX_K taps, wider the band up to
    band_max_n steps and the strided windows above: on either side of each switch, same
    output, input gradient and weight gradients as the reference."""
    from harness.layers.dynamicconv import auto_path, band_max_n

    case = _case(n=band_max_n(kernel, d // heads) + offset, d=d, heads=heads, kernel=kernel,
                 causal=causal, block=True, batch=2)
    expected = "shift" if kernel <= SHIFT_MAX_K else ("band" if offset == 0 else "strided")
    assert auto_path(case.n, kernel, d // heads) == expected
    _auto_matches_the_reference("dynamicconv", case)


@pytest.mark.parametrize(("kernel", "causal"), [(4, False), (5, True), (3, True)])
@pytest.mark.parametrize("offset", [0, 1])
def test_lightconv_auto_agrees_on_both_sides_of_its_threshold(
        kernel: int, causal: bool, offset: int) -> None:
    """"auto" runs the band up to n = BAND_SPAN (k + 1) and channels_last above: on either
    side, the reference's output and gradients, and the cost and FLOPs of the path it runs."""
    from harness.layers.lightconv import BAND_SPAN, lightconv_path

    case = _case(n=BAND_SPAN * (kernel + 1) + offset, d=15, heads=5, kernel=kernel,
                 causal=causal, block=True)
    expected = "band" if offset == 0 else "channels_last"
    assert lightconv_path(case.n, kernel) == expected
    entry = registry.get("lightconv")
    assert entry.cost_of(case, "auto") == entry.cost_of(case, expected)
    auto, x = _auto_matches_the_reference("lightconv", case)
    assert count_flops(auto, x) == entry.cost_of(case, "auto").flops


@pytest.mark.parametrize(("name", "variant"), ALL)
def test_causal_outputs_ignore_the_future(name: str, variant: str) -> None:
    case = _case(kernel=4, causal=True, block=True)
    module = build_double(name, variant, case)
    x = random_input(case)
    t = 5
    x2 = x.clone()
    x2[:, t + 1:] += 1.0
    y, y2 = module(x), module(x2)
    assert torch.allclose(y[:, : t + 1], y2[:, : t + 1], atol=1e-12)
    assert not torch.allclose(y[:, t + 1:], y2[:, t + 1:])


@pytest.mark.parametrize(("name", "variant"), ALL)
@pytest.mark.parametrize(("kernel", "causal", "lo", "hi"), [
    (3, False, 4, 6),
    (4, False, 4, 7),  # even k: the extra tap is on the right
    (4, True, 2, 5),
])
def test_output_ignores_inputs_outside_its_window(
        name: str, variant: str, kernel: int, causal: bool, lo: int, hi: int) -> None:
    case = _case(kernel=kernel, causal=causal)
    module = build_double(name, variant, case)
    x = random_input(case)
    t = 5
    x_out = x.clone()
    x_out[:, [s for s in range(case.n) if not lo <= s <= hi]] += 1.0
    assert torch.allclose(module(x)[:, t], module(x_out)[:, t], atol=1e-12)
    for s in (lo, hi):
        x_in = x.clone()
        x_in[:, s] += 1.0
        assert not torch.allclose(module(x)[:, t], module(x_in)[:, t])


def test_lightconv_weights_are_softmax_over_kernel() -> None:
    module = build_double("lightconv", "conv1d", _case(kernel=5))
    w = module.normalized_weight()
    assert w.shape == (3, 5)
    assert torch.allclose(w.sum(-1), torch.ones(3, dtype=w.dtype))
    assert bool((w > 0).all())


def test_dynamicconv_kernels_are_softmax_per_step() -> None:
    case = _case(kernel=5)
    module = build_double("dynamicconv", "unfold", case)
    kernels = module.kernels(random_input(case))
    assert kernels.shape == (case.batch, case.n, case.heads, 5)
    assert torch.allclose(kernels.sum(-1), torch.ones(kernels.shape[:-1], dtype=kernels.dtype))
    assert not torch.allclose(kernels[:, 0], kernels[:, 1])  # the kernel depends on the step


@pytest.mark.parametrize(("name", "variant"), ALL)
def test_dropconnect_only_in_training(name: str, variant: str) -> None:
    case = _case(kernel=5)
    entry = registry.get(name)
    plain = build_double(name, variant, case)
    module = type(plain)(case.d, case.heads, case.kernel, case.causal, case.block, dropout=0.5)
    module = module.double()
    module.load_state_dict(plain.state_dict())
    x = random_input(case)
    module.eval()
    assert torch.equal(module(x), module(x))
    assert torch.allclose(module(x), plain(x), atol=1e-12)
    module.train()
    torch.manual_seed(0)
    assert not torch.allclose(module(x), plain(x))
    assert entry.build(case, variant).dropout == 0.0  # registry builds without DropConnect


# --------------------------------------------------------------------------- costs


@pytest.mark.parametrize(("name", "variant"), ALL)
@pytest.mark.parametrize("block", [False, True])
def test_params_match_module(name: str, variant: str, block: bool) -> None:
    case = _case(n=13, d=24, heads=3, kernel=5, block=block)
    module = build_double(name, variant, case)
    count = sum(p.numel() for p in module.parameters())
    assert registry.get(name).cost_of(case, variant).params == count


def test_paper_weight_counts() -> None:
    # Wu et al. 2019: d=1024, k=7, H=16 -> 7*16 = 112 LightConv weights vs 7168 depthwise.
    case = LayerCase(seq_len=4, d_model=1024, heads=16, kernel=7)
    assert registry.get("lightconv").cost_of(case).params == 112
    light = registry.get("lightconv").build(case)
    assert sum(p.numel() for p in light.parameters()) == 112
    depthwise = nn.Conv1d(1024, 1024, 7, groups=1024, bias=False)
    assert depthwise.weight.numel() == 7168
    # DynamicConv's W has shape (H*k, d): 112 * 1024 weights.
    dyn = registry.get("dynamicconv").build(case)
    assert tuple(dyn.kernel_proj.weight.shape) == (112, 1024)
    assert dyn.kernel_proj.bias is None
    assert registry.get("dynamicconv").cost_of(case).params == 1024 * 16 * 7 == 114688


def test_flops_by_hand() -> None:
    # B=1, n=5, d=4, H=2, k=3.
    case = LayerCase(seq_len=5, d_model=4, heads=2, kernel=3, batch=1)
    light = registry.get("lightconv")
    # centred k = 3: taps inside the sequence 4 + 5 + 4 = 13 of 15 (one padded zero per end)
    conv = light.cost_of(case, "conv1d")
    assert (conv.flops, conv.flops_useful, conv.train_flops) == (120, 104, 360)  # 2*5*4*3
    band = light.cost_of(case, "band")
    assert (band.flops, band.flops_useful) == (200, 104)  # 2*5*5*4 executed
    assert conv.params == 6 and conv.flops_other == 30  # 5 per softmax element, 2*3 of them
    # block: Linear 4->8 (2*5*4*8 = 320) + Linear 4->4 (2*5*4*4 = 160)
    blocked = light.cost_of(LayerCase(5, 4, heads=2, kernel=3, block=True), "unfold")
    assert (blocked.flops, blocked.params) == (600, 6 + 40 + 20)
    dyn = registry.get("dynamicconv")
    unfold = dyn.cost_of(case, "unfold")  # projection 2*5*4*(2*3) = 240, conv 120
    assert (unfold.flops, unfold.flops_useful, unfold.train_flops) == (360, 344, 1080)
    dband = dyn.cost_of(case, "band")
    assert (dband.flops, dband.flops_useful) == (440, 344)
    shift = dyn.cost_of(case, "shift")  # executes only the 13 taps inside, x 4 channels
    assert (shift.flops, shift.flops_useful) == (240 + 2 * 4 * 13, 344)
    assert unfold.params == 24


@pytest.mark.parametrize(("name", "variant"), ALL)
@pytest.mark.parametrize("block", [False, True])
@pytest.mark.parametrize(("kernel", "causal"), [(1, False), (4, True), (5, False)])
def test_flops_match_flop_counter(name: str, variant: str, block: bool, kernel: int,
                                  causal: bool) -> None:
    case = _case(n=13, d=24, heads=3, kernel=kernel, causal=causal, block=block)
    module = build_double(name, variant, case)
    cost = registry.get(name).cost_of(case, variant)
    x = random_input(case)
    assert count_flops(module, x, train=False) == cost.flops
    counted_train = count_flops(module, x, train=True)
    from harness.layers.lightconv import lightconv_path

    path = lightconv_path(case.n, kernel) if (name, variant) == ("lightconv", "auto") else variant
    if path in ("conv1d", "channels_last"):
        # torch's conv-backward formula ignores groups: grad weight of the depthwise conv is
        # counted as 2 B n d^2 k instead of 2 B n d k. Pin the hole so a fix shows up here.
        b, n, d = case.batch, case.n, case.d
        assert counted_train == cost.train_flops + 2 * b * n * d * (d - 1) * kernel
    else:
        assert counted_train == cost.train_flops


# --------------------------------------------------------------------------- path length


@pytest.mark.parametrize("name", ["lightconv", "dynamicconv"])
@pytest.mark.parametrize(("kernel", "causal", "n", "expected"), [
    (3, False, 10, 9),
    (3, True, 10, 5),
    (7, False, 13, 4),
    (7, True, 13, 2),
    (31, False, 10, 1),
    (2, False, 10, math.inf),  # centred even kernel never looks back
    (1, True, 10, math.inf),
    (1, False, 1, 1),
])
def test_path_length_by_hand(name: str, kernel: int, causal: bool, n: int,
                             expected: float) -> None:
    cost = registry.get(name).cost_of(_case(n=n, kernel=kernel, causal=causal))
    assert cost.path_length == expected
    assert cost.seq_ops == 1


@pytest.mark.parametrize(("name", "variant"), [("lightconv", "unfold"), ("dynamicconv", "unfold")])
@pytest.mark.parametrize(("kernel", "causal"), [(3, False), (3, True), (4, False), (2, False)])
def test_measured_path_length_matches_analytic(name: str, variant: str, kernel: int,
                                               causal: bool) -> None:
    n, d = 8, 4
    case = _case(n=n, d=d, heads=2, kernel=kernel, causal=causal, batch=1)
    entry = registry.get(name)
    measured = dependency_depth(lambda: entry.build(case, variant), n, d, causal, n)
    assert measured == entry.cost_of(case).path_length


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "kernel"), [(1, 1), (5, 3), (4, 9), (13, 6), (2, 31)])
def test_shift_counts_the_taps_inside_the_sequence(n: int, kernel: int, causal: bool) -> None:
    """window_macs (the shift path's FLOPs, analytic and counted) == the (step, tap) pairs
    whose input lies inside the sequence, enumerated from the window definition."""
    from harness.layers.common import pad_left
    from harness.layers.window_mix import window_macs

    inside = sum(0 <= s < n for t in range(n) for s in _window(t, kernel, causal))
    assert window_macs(2, n, 3, kernel, pad_left(kernel, causal)) == 2 * 3 * inside


@pytest.mark.parametrize("kernel", [1, 3, 7, 15, 31])  # short rows take the passes, long torch's
def test_row_softmax_is_softmax_with_and_without_grad(kernel: int) -> None:
    from harness.layers.dynamicconv import row_softmax

    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 5, 2, kernel, generator=gen, dtype=torch.float64) * 50  # big
    expected = logits.softmax(-1)
    with torch.no_grad():
        assert torch.allclose(row_softmax(logits.clone()), expected, atol=1e-15)
    leaf = logits.clone().requires_grad_(True)
    weights = torch.randn(3, 5, 2, kernel, generator=gen, dtype=torch.float64)
    (row_softmax(leaf) * weights).sum().backward()
    ref = logits.clone().requires_grad_(True)
    (ref.softmax(-1) * weights).sum().backward()
    assert torch.allclose(leaf.grad, ref.grad, atol=1e-12)


@pytest.mark.parametrize(("name", "n", "kernel", "path"), [
    ("dynamicconv", 11, 3, "shift"), ("dynamicconv", 11, 9, "band"),
    ("dynamicconv", 161, 9, "strided"),
    ("lightconv", 11, 9, "band"), ("lightconv", 40, 3, "channels_last"),
])
def test_auto_compiles_as_one_graph(name: str, n: int, kernel: int, path: str) -> None:
    """torch.compile captures every path "auto" runs whole (fullgraph: a graph break raises;
    a query returning a string in the softmax once split DynamicConv into 4 graphs)."""
    from harness.layers.lightconv import lightconv_path

    case = _case(n=n, kernel=kernel, causal=True)
    runs = (dynamicconv.auto_path(n, kernel, case.d // case.heads) if name == "dynamicconv"
            else lightconv_path(n, kernel))
    assert runs == path
    module, x = build_double(name, "auto", case), random_input(case)
    torch.compiler.reset()
    compiled = torch.compile(module, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x))
