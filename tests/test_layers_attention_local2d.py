"""2D local attention: the full-mask reference and the blocked form agree with a per-pair
definition; path length measured on raster positions equals the analytic one."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import build_double, random_input

from harness import registry
from harness.flops import count_layer
from harness.layers.attention_local2d import Geometry, path_length, visible_pairs
from harness.measure import structure as S
from harness.spec import LayerCase

NAME = "attention_local2d"
VARIANTS = ("reference", "blocked")
#: (height, width, query rows, query columns, flange rows, flange columns)
SHAPES = [(7, 9, 2, 4, 1, 2), (7, 9, 3, 3, 2, 1), (7, 9, 7, 9, 1, 1), (1, 11, 1, 3, 1, 2),
          (5, 5, 1, 1, 1, 1)]


def _case(shape: tuple[int, ...], causal: bool = False, d: int = 12, heads: int = 3,
          batch: int = 2) -> LayerCase:
    h, w, qh, qw, fh, fw = shape
    return LayerCase(seq_len=h * w, d_model=d, heads=heads, height=h, width=w, query_height=qh,
                     query_width=qw, flange_height=fh, flange_width=fw, causal=causal,
                     batch=batch)


def _sees(shape: tuple[int, ...], causal: bool, t: int, s: int) -> bool:
    """The visibility rule written out for one (query, key) pair."""
    _, w, qh, qw, fh, fw = shape
    (rt, ct), (rs, cs) = divmod(t, w), divmod(s, w)
    top, left = rt - rt % qh, ct - ct % qw
    below = 0 if causal else fh
    rows = top - fh <= rs <= top + qh - 1 + below
    cols = left - fw <= cs <= left + qw - 1 + fw
    return rows and cols and (s <= t or not causal)


def _definition(module: torch.nn.Module, x: torch.Tensor, shape: tuple[int, ...],
                causal: bool) -> torch.Tensor:
    b, n, d = x.shape
    hd, dh = module.heads, module.d_head
    q, k, v = (z.view(b, n, hd, dh) for z in module.in_proj(x).split(d, dim=-1))
    out = torch.zeros(b, n, hd, dh, dtype=x.dtype)
    for t in range(n):
        keys = [s for s in range(n) if _sees(shape, causal, t, s)]
        logits = torch.stack([(q[:, t] * k[:, s]).sum(-1) for s in keys], 1) / math.sqrt(dh)
        out[:, t] = (logits.softmax(dim=1)[..., None] * v[:, keys]).sum(1)
    return module.out_proj(out.reshape(b, n, d))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_variants_equal_definition_forward_and_backward(shape: tuple[int, ...],
                                                        causal: bool) -> None:
    case = _case(shape, causal)
    ref = build_double(NAME, "reference", case)
    blk = build_double(NAME, "blocked", case, seed=5)
    blk.load_state_dict(ref.state_dict())
    x = random_input(case)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = ref(xa), blk(xb)
    torch.testing.assert_close(ya, yb)
    torch.testing.assert_close(ya, _definition(ref, x, shape, causal))
    w = torch.randn_like(ya)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    for pa, pb in zip(ref.parameters(), blk.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES[:2], ids=str)
def test_visible_pairs_count_the_rule(shape: tuple[int, ...], causal: bool) -> None:
    n = shape[0] * shape[1]
    expected = sum(_sees(shape, causal, t, s) for t in range(n) for s in range(n))
    assert visible_pairs(Geometry.of(_case(shape, causal))) == expected


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("causal", [False, True])
def test_three_flop_sources_agree(variant: str, causal: bool) -> None:
    for shape in SHAPES[:2]:
        row = count_layer(NAME, _case(shape, causal), variant, train=True)
        assert row["flops_analytic"] == row["flops_fvcore"] == row["flops_torch"], row
        assert row["train_flops_analytic"] == row["train_flops_torch"]
        assert not row["uncounted_fvcore"] and not row["uncounted_torch"]
        assert not row["uncounted_torch_train"]


def test_blocked_flops_by_hand() -> None:
    """7 x 9, query 2 x 4, flange 1 x 2, B = 2, d = 12: padded 8 x 12 = 96 queries, memory
    (2 + 1 + 1) x (4 + 2 + 2) = 32 keys each: core 4 * 2 * 96 * 32 * 12; projections
    8 * 2 * 63 * 144. Causal: memory 3 x 8 = 24."""
    entry = registry.get(NAME)
    proj = 8 * 2 * 63 * 144
    assert entry.cost_of(_case(SHAPES[0]), "blocked").flops == proj + 4 * 2 * 96 * 32 * 12
    assert entry.cost_of(_case(SHAPES[0], True), "blocked").flops == proj + 4 * 2 * 96 * 24 * 12
    assert entry.cost_of(_case(SHAPES[0]), "reference").flops == proj + 4 * 2 * 63 * 63 * 12


def test_blocked_cost_is_linear_in_the_image_reference_quadratic() -> None:
    entry = registry.get(NAME)
    flops = {v: [entry.cost_of(_case((s, s, 8, 8, 8, 8), d=64, heads=4, batch=1), v)
                 for s in (32, 64)] for v in VARIANTS}
    proj = [8 * (s * s) * 64 * 64 for s in (32, 64)]
    blocked = [c.flops - p for c, p in zip(flops["blocked"], proj, strict=True)]
    reference = [c.flops - p for c, p in zip(flops["reference"], proj, strict=True)]
    assert blocked[1] == 4 * blocked[0] and reference[1] == 16 * reference[0]  # n x4
    act = [c.activation_elements for c in flops["blocked"]]
    assert act[1] == 4 * act[0]


CAUSAL_SHAPES = [(4, 6, 2, 3, 1, 3), (6, 4, 2, 2, 2, 2), (5, 7, 1, 7, 1, 1), (7, 9, 2, 4, 1, 2)]


@pytest.mark.parametrize(("shape", "causal"),
                         [(s, False) for s in SHAPES] + [(s, True) for s in CAUSAL_SHAPES],
                         ids=str)
def test_path_length_measured_equals_analytic(shape: tuple[int, ...], causal: bool) -> None:
    case = _case(shape, causal, d=4, heads=2, batch=1)
    cost = registry.get(NAME).cost_of(case)
    assert S.measure_path_length(NAME, case) == cost.path_length
    assert S.measure_seq_ops(NAME, case).seq_ops == cost.seq_ops == 1


def test_path_length_grows_with_height_over_block() -> None:
    """Not causal, flange half a block: one block per layer, about H / q_h layers."""
    lengths = [path_length(Geometry.of(_case((s, s, 4, 4, 2, 2)))) for s in (8, 16, 32, 64)]
    assert lengths == [2, 4, 8, 16]
    assert S.measure_path_length(NAME, _case((16, 16, 4, 4, 2, 2), d=4, heads=2)) == 4


def test_causal_needs_the_whole_row_in_memory() -> None:
    """Causal: the last pixel of a row must reach the first of the next in one layer (no
    raster position lies between them), so a memory narrower than the image never connects
    every earlier pixel (Image Transformer's local 2D attention is not fully connected)."""
    assert path_length(Geometry.of(_case((7, 9, 2, 4, 1, 2), True))) == math.inf
    assert path_length(Geometry.of(_case((7, 9, 2, 4, 1, 8), True))) < math.inf


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_bad_images_are_skipped_with_one_line(tmp_path: Path) -> None:
    from harness.suite import load_suite
    from harness.suite.plan import expand

    path = _write(tmp_path, """\
        name: s
        device: cpu
        layers:
          - {name: attention_local2d, sweep: {height: [8], width: [4]}}
          - {name: attention_local2d, sweep: {seq_len: [60], height: [8]}}
          - {name: attention_local2d, sweep: {height: [4], query_height: [8]}}
          - attention_local2d
        sweep: {seq_len: [64], d_model: [8], heads: [2]}
    """)
    reasons = {p.label: p.skip_reason for p in expand(load_suite(path))}
    assert reasons["attention_local2d-n32-d8-h2-H8-W4"] is None  # seq_len derived: 8 x 4
    assert reasons["attention_local2d-n60-d8-h2-H8-W8"] == (
        "height x width = 8 x 8 = 64 does not match seq_len = 60 (give seq_len = height x "
        "width, or leave seq_len out of the layer's sweep: the plan derives it)")
    assert reasons["attention_local2d-n16-d8-h2-H4-W4-qh8"] == (
        "query block 8x4 is larger than the image 4x4")
    assert reasons["attention_local2d-n64-d8-h2"] == "attention_local2d needs height"


def test_no_decoding_state_is_a_skipped_row() -> None:
    from harness.measure.timing import TimingConfig
    from harness.measure_case import ExecSettings, execute
    from harness.suite.plan import PlannedCase

    planned = PlannedCase(layer=NAME, variant="blocked", case=_case(SHAPES[0], True),
                          dtype="float32", device="cpu", mode="decode", seed=0, label="l")
    row, _ = execute(planned, ExecSettings(timing=TimingConfig(budget_s=0.01)))
    assert row["status"] == "skipped" and "no decoding state" in row["message"]
