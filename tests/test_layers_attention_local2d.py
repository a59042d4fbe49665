"""2D local attention: the full-mask reference and the blocked form agree with a per-pair
definition; path length measured on raster positions equals the analytic one."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import build_double, random_input, write_suite

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


def test_bad_images_are_skipped_with_one_line(tmp_path: Path) -> None:
    from harness.suite import load_suite
    from harness.suite.plan import expand

    path = write_suite(tmp_path, """\
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


#: (height, width, query rows, query columns, flange rows, flange columns) decoded: a 5 x 7
#: image with 2 x 3 query blocks (ring of 3 rows: it wraps), a wide flange, a 1-row image
DECODE_SHAPES = [(5, 7, 2, 3, 1, 2), (5, 7, 2, 3, 2, 4), (6, 5, 3, 2, 2, 1), (1, 11, 1, 3, 1, 2)]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", DECODE_SHAPES, ids=str)
def test_decoding_pixel_by_pixel_equals_causal_forward(shape: tuple[int, ...],
                                                       variant: str) -> None:
    from harness.layers.decoding import decode_sequence

    case = _case(shape, True)
    module = build_double(NAME, variant, case)
    x = random_input(case)
    with torch.no_grad():
        full = module(x)
        stepped = decode_sequence(module, x, 0)
        for start in (1, shape[1] + 2, case.n - 1):  # a prefill, then pixel by pixel
            torch.testing.assert_close(decode_sequence(module, x, start), stepped[:, start:],
                                       rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(stepped, full, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(full, _definition(module, x, shape, True))


def test_repeated_step_in_a_wrapped_ring_leaves_state_unchanged() -> None:
    from harness.layers.attention_local2d import ring_rows
    from harness.layers.decoding import prefill

    case = _case(DECODE_SHAPES[0], True)
    module = build_double(NAME, "blocked", case)
    x = random_input(case)
    pos = case.n - 1  # row 4 of a 3-row ring: written over row 1
    assert pos // 7 >= ring_rows(Geometry.of(case))
    with torch.no_grad():
        state = prefill(module, x[:, :pos], pos + 1)
        first = module.decode_step(x[:, pos:], state, pos)
        after = {k: v.clone() for k, v in state.items()}
        again = module.decode_step(x[:, pos:], state, pos)
        full = module(x)[:, pos:]
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    for key, value in state.items():
        torch.testing.assert_close(value, after[key], rtol=0, atol=0)
    torch.testing.assert_close(first, full, rtol=1e-10, atol=1e-12)


def _decode_case(shape: tuple[int, ...], n: int, d: int = 12, heads: int = 3,
                 batch: int = 3) -> LayerCase:
    return replace(_case(shape, True, d=d, heads=heads, batch=batch), seq_len=n)


@pytest.mark.parametrize("variant", VARIANTS)
def test_step_flops_three_sources_and_state_bytes(variant: str) -> None:
    from harness.flops import count_step
    from harness.layers.decoding import DecodeCall

    entry = registry.get(NAME)
    for shape in DECODE_SHAPES[:2]:
        for n in (1, 9, 20, 34):  # first row, inside, a block's first pixel, the last pixel
            case = _decode_case(shape, n)
            counts = count_step(entry, case, variant)
            assert counts["flops_analytic"] == counts["flops_fvcore"] == counts["flops_torch"]
            assert not counts["uncounted_fvcore"] and not counts["uncounted_torch"]
            step = entry.step_cost_of(case, variant)
            assert step is not None
            torch.manual_seed(0)
            module = entry.build(case, variant, decode=True)
            call = DecodeCall(module, torch.randn(3, n + 1, 12))
            assert call.state_bytes == step.state_elements * 4
            call()


def test_step_flops_and_state_do_not_grow_with_the_image() -> None:
    """The last pixel of 8 x 8 and 24 x 24 images (4 x 4 blocks, flange 2): the counted step
    FLOPs are equal (it reads its memory block only); the state grows with the width only
    (a ring of qh + fh = 6 rows), while attention's grows with the pixels held."""
    from harness.flops import count_step

    entry = registry.get(NAME)
    counted, states = [], []
    for side in (8, 24):
        case = _decode_case((side, side, 4, 4, 2, 2), side * side - 1, d=8, heads=2, batch=1)
        counted.append(count_step(entry, case)["flops_torch"])
        step = entry.step_cost_of(case)
        assert step is not None
        states.append(step.state_elements)
    assert counted[0] == counted[1]
    assert states == [2 * 6 * side * 8 for side in (8, 24)]


def test_decode_cases_in_a_suite(tmp_path: Path) -> None:
    """Derived: the step that generates the last pixel; given: any pixel inside the image;
    outside it, or not causal: a skipped row with its reason."""
    from harness.suite import load_suite
    from harness.suite.plan import expand

    path = write_suite(tmp_path, """\
        name: s
        device: cpu
        mode: decode
        layers:
          - {name: attention_local2d, causal: [true, false], sweep: {height: [5], width: [7]}}
          - {name: attention_local2d, causal: true, sweep: {seq_len: [20, 35], height: [5],
                                                             width: [7]}}
        sweep: {seq_len: [64], d_model: [12], heads: [3], query_height: [2], query_width: [3]}
    """)
    reasons = {p.label: p.skip_reason for p in expand(load_suite(path))}
    assert reasons["attention_local2d-n34-d12-h3-H5-W7-qh2-qw3-causal"] is None
    assert reasons["attention_local2d-n20-d12-h3-H5-W7-qh2-qw3-causal"] is None
    assert reasons["attention_local2d-n35-d12-h3-H5-W7-qh2-qw3-causal"] == (
        "decode: pixel seq_len = 35 is outside the 5 x 7 image (give seq_len < 35, or leave "
        "seq_len out of the layer's sweep: the plan derives 34, the last pixel)")
    assert "causal: true" in (reasons["attention_local2d-n34-d12-h3-H5-W7-qh2-qw3"] or "")


def test_decode_row_measures_one_step() -> None:
    from harness.measure.timing import TimingConfig
    from harness.measure_case import ExecSettings, execute
    from harness.suite.plan import PlannedCase

    case = _decode_case(DECODE_SHAPES[0], 34, batch=2)
    planned = PlannedCase(layer=NAME, variant="blocked", case=case, dtype="float32",
                          device="cpu", mode="decode", seed=0, label="l")
    timing = TimingConfig(budget_s=0.01, min_samples=3, warmup_s=0.0)
    row, _ = execute(planned, ExecSettings(timing=timing, structure=True))
    assert row["status"] == "ok", row["message"]
    # 34 pixels held: no forward case has that seq_len (the image is 35), so no structure
    assert row["structure_note"].startswith("not measured: no forward case of this seq_len")
    step = registry.get(NAME).step_cost_of(case)
    assert step is not None
    assert row["flops_analytic"] == step.flops == row["flops_torch"] == row["flops_fvcore"]
    assert row["state_bytes"] == row["state_bytes_analytic"] == step.state_elements * 4
