"""Relative attention: Shaw's materialized form and Music Transformer's skew agree."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import build_double, count_flops, random_input
from probes import dependency_depth

from harness import registry
from harness.flops import count_layer
from harness.layers.attention_relative import SkewedRelativeAttention
from harness.measure.structure import measure_path_length, measure_seq_ops
from harness.spec import LayerCase

NAME = "attention_relative"
VARIANTS = ("materialized", "skewed")


def _case(n: int = 37, d: int = 12, heads: int = 3, causal: bool = False,
          batch: int = 2) -> LayerCase:
    return LayerCase(seq_len=n, d_model=d, heads=heads, causal=causal, batch=batch)


def _definition(module: torch.nn.Module, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """One (query, key) pair at a time from the module's weights."""
    b, n, d = x.shape
    h, dh, kmax = module.heads, module.d_head, module.max_relative
    q, k, v = (z.view(b, n, h, dh) for z in module.in_proj(x).split(d, dim=-1))
    out = torch.zeros(b, n, h, dh, dtype=x.dtype)
    for t in range(n):
        keys = range(t + 1) if causal else range(n)
        logits = torch.stack([
            (q[:, t] * (k[:, s] + module.rel[max(-kmax, min(kmax, s - t)) + kmax])).sum(-1)
            for s in keys], dim=1) / math.sqrt(dh)  # (B, keys, h)
        p = logits.softmax(dim=1)
        out[:, t] = (p[..., None] * v[:, list(keys)]).sum(1)
    return module.out_proj(out.reshape(b, n, d))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", [1, 2, 37])
def test_variants_equal_definition_forward_and_backward(causal: bool, n: int) -> None:
    case = _case(n=n, causal=causal)
    mat = build_double(NAME, "materialized", case)
    skew = build_double(NAME, "skewed", case, seed=5)
    skew.load_state_dict(mat.state_dict())
    x = random_input(case)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = mat(xa), skew(xb)
    torch.testing.assert_close(ya, yb)
    torch.testing.assert_close(ya, _definition(mat, x, causal))
    w = torch.randn_like(ya)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    for pa, pb in zip(mat.parameters(), skew.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad)


def test_clip_distance_matches_definition() -> None:
    torch.manual_seed(0)
    for cls_name in VARIANTS:
        entry = registry.get(NAME)
        module = entry.variants[cls_name](_case(n=9), 0)
        assert module.max_relative == 8
    clipped = SkewedRelativeAttention(12, 3, 9, causal=False, max_relative=2).double()
    x = random_input(_case(n=9))
    torch.testing.assert_close(clipped(x), _definition(clipped, x, False))
    assert clipped.rel.shape == (5, 4)


@pytest.mark.parametrize("causal", [False, True])
def test_max_relative_axis_reaches_both_variants(causal: bool) -> None:
    """``max_relative`` (a suite size) clips both variants alike: they agree with each other
    and with the per-pair definition; the table has 2K + 1 rows, counted into params."""
    entry = registry.get(NAME)
    case = entry.normalize(LayerCase(seq_len=11, d_model=12, heads=3, causal=causal,
                                     max_relative=3, batch=2))
    mat = build_double(NAME, "materialized", case)
    skew = build_double(NAME, "skewed", case, seed=5)
    skew.load_state_dict(mat.state_dict())
    x = random_input(case)
    assert mat.max_relative == skew.max_relative == 3
    torch.testing.assert_close(mat(x), skew(x))
    torch.testing.assert_close(mat(x), _definition(mat, x, causal))
    for v in VARIANTS:
        assert entry.cost_of(case, v).params == sum(p.numel() for p in
                                                     entry.build(case, v).parameters())
    unclipped = dataclasses.replace(case, max_relative=None)
    assert entry.cost_of(unclipped, "skewed").params - entry.cost_of(case, "skewed").params \
        == 2 * (10 - 3) * 4  # (2 (n - 1) + 1) - (2 K + 1) table rows of d_h = 4
    assert registry.get("attention").normalize(case).max_relative is None  # not its axis


def test_max_relative_is_a_sweep_size(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from harness.suite import load_suite
    from harness.suite.plan import expand

    path = tmp_path / "s.yaml"
    path.write_text("name: s\ndevice: cpu\nlayers: [attention_relative, attention]\n"
                    "sweep: {seq_len: [16], d_model: [8], heads: [2], max_relative: [4]}\n")
    cases = {p.layer: p.case for p in expand(load_suite(path))}
    assert cases["attention_relative"].max_relative == 4
    assert cases["attention"].max_relative is None


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("causal", [False, True])
def test_three_flop_sources_agree(variant: str, causal: bool) -> None:
    case = _case(n=13, d=24, heads=3, causal=causal)
    row = count_layer(NAME, case, variant, train=True)
    assert row["flops_analytic"] == row["flops_fvcore"] == row["flops_torch"]
    assert row["train_flops_analytic"] == row["train_flops_torch"]
    assert not row["uncounted_fvcore"] and not row["uncounted_torch"]
    module = build_double(NAME, variant, case)
    assert count_flops(module, random_input(case)) == row["flops_analytic"]


def test_flops_and_params_by_hand() -> None:
    """B=2, n=3, d=4, h=2: proj 8*2*3*16 = 768, core 4*2*9*4 = 288, relative
    materialized 2*2*9*4 = 144, skewed 2*2*3*5*4 = 240; params 4*16+16 + 5*2 = 90."""
    case = _case(n=3, d=4, heads=2)
    entry = registry.get(NAME)
    assert entry.cost_of(case, "materialized").flops == 768 + 288 + 144
    assert entry.cost_of(case, "skewed").flops == 768 + 288 + 240
    for v in VARIANTS:
        assert entry.cost_of(case, v).params == 90
        module = entry.build(case, v)
        assert sum(p.numel() for p in module.parameters()) == 90


@pytest.mark.parametrize("causal", [False, True])
def test_path_length_and_seq_ops_measured_equal_analytic(causal: bool) -> None:
    case = _case(n=9, d=4, heads=2, causal=causal, batch=1)
    entry = registry.get(NAME)
    cost = entry.cost_of(case)
    assert measure_path_length(NAME, case) == cost.path_length == 1
    assert measure_seq_ops(NAME, case).seq_ops == cost.seq_ops == 1
    depth = dependency_depth(lambda: entry.build(case, "skewed"), 9, 4, causal, 9)
    assert depth == 1


def test_extra_memory_materialized_vs_skewed() -> None:
    """Beyond plain attention: materialized n^2 dh + B n d, skewed B h n (4n - 1) + (2n-1) dh.
    dh = 64, h = 4: materialized larger; dh = 4, h = 16: skewing's buffer is the larger."""
    entry = registry.get(NAME)
    wide = _case(n=64, d=256, heads=4, batch=1)
    assert (entry.cost_of(wide, "materialized").activation_elements
            > entry.cost_of(wide, "skewed").activation_elements)
    narrow = _case(n=64, d=64, heads=16, batch=1)
    assert (entry.cost_of(narrow, "materialized").activation_elements
            < entry.cost_of(narrow, "skewed").activation_elements)
