"""harness::band_mix: per-head bands applied to (B, n, d) in place (MKL's grouped GEMM) or
through head-major copies and one bmm; both compute the same products, forward and backward.
Nothing here is timed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.layers import band_mix as bm
from harness.layers.lightconv import band_matrix

needs_grouped = pytest.mark.skipif(bm.grouped_gemm() is None,
                                   reason="this torch build exports no MKL grouped GEMM")


def _bands(b: int, n: int, d: int, h: int, k: int, causal: bool,
           dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(b * 1000 + n * 10 + k)
    x = torch.randn(b, n, d, generator=gen, dtype=dtype)
    kernels = torch.randn(b, n, h, k, generator=gen, dtype=dtype).softmax(-1)
    return band_matrix(kernels.permute(0, 2, 1, 3), causal), x  # band: a strided view


@needs_grouped
@pytest.mark.parametrize(("b", "n", "d", "h", "k", "causal"), [
    (2, 11, 15, 3, 4, False), (3, 9, 12, 4, 5, True), (1, 1, 4, 2, 3, False),
    (8, 64, 1024, 8, 31, False)])
@pytest.mark.parametrize("transposed", [False, True])
def test_grouped_gemm_equals_the_bmm_path(b: int, n: int, d: int, h: int, k: int,
                                          causal: bool, transposed: bool) -> None:
    band, x = _bands(b, n, d, h, k, causal)
    if transposed:  # as the backward passes it: unit stride along rows
        band = band.transpose(-1, -2)
    out = bm._grouped(band, x, bm.grouped_gemm())
    assert out is not None  # float32, CPU, contiguous x: the grouped GEMM ran
    assert out.shape == x.shape and out.is_contiguous()
    torch.testing.assert_close(out, bm.band_bmm(band, x), rtol=1e-5, atol=1e-5)


def test_the_bmm_path_is_per_head_band_times_columns() -> None:
    band, x = _bands(2, 7, 6, 3, 3, False, torch.float64)
    out = bm.band_mix(band, x)  # float64: the bmm path
    c = 2
    for s in range(2):
        for head in range(3):
            cols = slice(head * c, (head + 1) * c)
            torch.testing.assert_close(out[s, :, cols], band[s, head] @ x[s, :, cols])


@needs_grouped
def test_gradients_match_the_bmm_path() -> None:
    band, x = _bands(2, 9, 12, 3, 5, True)
    band = band.detach().requires_grad_(True)
    x = x.requires_grad_(True)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    got = torch.autograd.grad(bm.band_mix(band, x), (band, x), grad)
    want = torch.autograd.grad(bm.band_bmm(band, x), (band, x), grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_gradcheck_in_float64() -> None:
    band, x = _bands(2, 5, 6, 2, 3, False, torch.float64)
    inputs = (band.detach().clone().requires_grad_(True), x.requires_grad_(True))
    assert torch.autograd.gradcheck(bm.band_mix, inputs)


def test_operands_the_grouped_gemm_cannot_take_fall_back() -> None:
    band, x = _bands(2, 6, 8, 2, 3, False)
    gemm = bm.grouped_gemm() or (lambda *args: pytest.fail("called"))
    assert bm._grouped(band, x.transpose(1, 2).contiguous().transpose(1, 2), gemm) is None
    assert bm._grouped(band.double(), x.double(), gemm) is None
    strided = torch.zeros(2, 2, 12, 12)[..., ::2, ::2]  # no unit stride in either dim
    assert bm._grouped(strided, x, gemm) is None
    torch.testing.assert_close(bm.band_mix(band, x.transpose(1, 2).contiguous().transpose(1, 2)),
                               bm.band_bmm(band, x))


def test_a_library_without_the_symbol_means_no_grouped_gemm(tmp_path: Path) -> None:
    assert bm.load_grouped_gemm(tmp_path / "missing.so") is None
    libc = Path("/lib/x86_64-linux-gnu/libc.so.6")
    if libc.exists():  # a real library that has no such symbol
        assert bm.load_grouped_gemm(libc) is None


def test_shapes_that_do_not_fit_are_value_errors() -> None:
    band, x = _bands(2, 6, 8, 2, 3, False)
    with pytest.raises(ValueError, match="does not fit"):
        bm.band_mix(band, x[:, :5])
    with pytest.raises(ValueError, match="takes band"):
        bm.band_mix(band[0], x)


def test_flops_are_the_products_multiply_adds() -> None:
    assert bm.band_mix_flops((2, 3, 5, 5), (2, 5, 12)) == 2 * 2 * 3 * 5 * 5 * 4
