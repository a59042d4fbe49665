"""Facts about the two FLOP counters (2 FLOPs per multiply-add), their filled holes, and
their agreement with every registered layer's analytic cost model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from harness.flops import FlopCount, count_fvcore, count_layer, count_torch, is_flop_free
from harness.flops.torch_counter import _count, to_meta, torch_formulas
from harness.registry import get, names
from harness.spec import LayerCase

B, N, D_IN, H = 2, 5, 8, 16  # tiny recurrence: batch, steps, input size, hidden size


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny real-CPU passes: a second OpenMP thread only adds spin-wait on a busy machine
    (counts do not depend on threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def within(a: int, b: int, rel: float = 0.01) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


class Core(nn.Module):
    """Return only the sequence output of an nn.RNN / LSTM / GRU."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


class Sdpa(nn.Module):
    def __init__(self, causal: bool = False) -> None:
        super().__init__()
        self.causal = causal

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, q, q, is_causal=self.causal)


# --------------------------------------------------------------------------- recurrences

# forward = 2 * gates * B * n * (d_in*h + h*h) with B=2, n=5, d_in=8, h=16
LSTM_FWD = 2 * 4 * 2 * 5 * (8 * 16 + 16 * 16)  # 30720
GRU_FWD = 2 * 3 * 2 * 5 * (8 * 16 + 16 * 16)  # 23040
RNN_FWD = 2 * 1 * 2 * 5 * (8 * 16 + 16 * 16)  # 7680


@pytest.mark.parametrize("device", ["native", "meta"])
def test_lstm_fused_cpu_closed_form(device: str) -> None:
    torch.manual_seed(0)
    model, x = Core(nn.LSTM(D_IN, H, batch_first=True)), torch.randn(B, N, D_IN)
    forward = count_torch(model, x, device=device)
    train = count_torch(model, x, train=True, device=device)
    assert LSTM_FWD == 30720
    assert forward.total == LSTM_FWD and forward.uncounted == ()
    # oneDNN's layer backward computes every gradient (input, h0/c0, W_ih, W_hh): 2x forward
    assert train.total == 3 * LSTM_FWD == 92160
    if device == "native":  # the real CPU path is the fused oneDNN kernel
        assert forward.device == "cpu"
        assert forward.by_op == {"aten.mkldnn_rnn_layer": LSTM_FWD}
        assert train.by_op["aten.mkldnn_rnn_layer_backward"] == 2 * LSTM_FWD
    else:
        assert forward.device == "meta"
        assert forward.by_op == {"harness_flops.rnn": LSTM_FWD}


@pytest.mark.parametrize("device", ["native", "meta"])
@pytest.mark.parametrize(
    ("cls", "gates", "closed"), [(nn.GRU, 3, GRU_FWD), (nn.RNN, 1, RNN_FWD)]
)
def test_gru_rnn_closed_form(device: str, cls: type[nn.Module], gates: int, closed: int) -> None:
    torch.manual_seed(0)
    model, x = Core(cls(D_IN, H, batch_first=True)), torch.randn(B, N, D_IN)
    forward = count_torch(model, x, device=device)
    train = count_torch(model, x, train=True, device=device)
    assert forward.total == closed and forward.uncounted == ()
    # the step-by-step backward never computes the zero initial state's gradient:
    # one h x h product per gate fewer than 2x forward
    assert train.total == 3 * closed - 2 * gates * B * H * H
    assert (GRU_FWD, 3 * GRU_FWD - 2 * 3 * B * H * H) == (23040, 66048)
    assert (RNN_FWD, 3 * RNN_FWD - 2 * 1 * B * H * H) == (7680, 22016)


@pytest.mark.parametrize("device", ["native", "meta"])
@pytest.mark.parametrize(
    ("cls", "closed"), [(nn.LSTM, LSTM_FWD), (nn.GRU, GRU_FWD), (nn.RNN, RNN_FWD)]
)
def test_fvcore_recurrence_closed_form(device: str, cls: type[nn.Module], closed: int) -> None:
    result = count_fvcore(Core(cls(D_IN, H, batch_first=True)), torch.randn(B, N, D_IN),
                          device=device)
    assert result.total == closed and result.uncounted == ()


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.LSTM(6, 10, num_layers=2, bidirectional=True, batch_first=True),
        lambda: nn.LSTM(6, 10, num_layers=2, proj_size=4, bias=False),
        lambda: nn.GRU(6, 10, num_layers=3, bidirectional=True, batch_first=True),
        lambda: nn.RNN(6, 10, num_layers=2, nonlinearity="relu", bidirectional=True),
    ],
    ids=["lstm-bi", "lstm-proj", "gru-bi", "rnn-relu-bi"],
)
def test_meta_recurrence_equals_cpu_and_decomposition(make) -> None:
    """The one-op meta stand-in counts exactly what the CPU runs, and its forward equals
    the meta decomposition's (CpuMirror off); where the CPU also decomposes, so does train."""
    torch.manual_seed(0)
    model, x = Core(make()), torch.randn(3, 7, 6)
    for train in (False, True):
        native = count_torch(model, x, train=train, device="native")
        meta = count_torch(model, x, train=train, device="meta")
        assert meta.total == native.total, (train, meta, native)
        meta_model, meta_x = to_meta(model, (x,))
        decomposed = _count(meta_model, meta_x, train, False, "meta")
        cpu_fused = "aten.mkldnn_rnn_layer" in native.by_op
        if not train or not cpu_fused:
            assert decomposed.total == meta.total, (train, decomposed, meta)
        assert meta.uncounted == () and native.uncounted == ()
        if train:
            for p in model.parameters():
                assert p.grad is None  # the module's .grad fields are left as they were


def test_gru_long_sequence_is_one_op_on_meta() -> None:
    """At n=4096 the meta count is one rerouted op, not n decomposed steps (hence fast)."""
    model, x = Core(nn.GRU(64, 64, batch_first=True)), torch.randn(8, 4096, 64)
    result = count_torch(model, x)
    assert result.device == "meta"
    assert result.by_op == {"harness_flops.rnn": 2 * 3 * 8 * 4096 * (64 * 64 + 64 * 64)}
    assert count_fvcore(model, x).total == result.total


def test_cudnn_formulas_from_shapes() -> None:
    """aten._cudnn_rnn lists every layer's weights; forward = 2*T*sum(matrix sizes)."""
    formulas = torch_formulas()
    w = [(64, 8), (64, 16), (64,), (64,)]  # one LSTM layer, h=16
    cudnn = formulas[torch.ops.aten._cudnn_rnn]
    assert cudnn((N, B, D_IN), w, 4, None, (1, B, H), (1, B, H), 2, H, 0, 1, False, 0.0,
                 True, False, [], None) == LSTM_FWD
    backward = formulas[torch.ops.aten._cudnn_rnn_backward]
    args = ((N, B, D_IN), w, 4, (1,), (1, B, H), (1, B, H), (N, B, H), (N, B, H), None,
            None, 2, H, 0, 1, False, 0.0, True, False, [], None, (1,))
    assert backward(*args, [True, True, True, True]) == 2 * LSTM_FWD
    assert backward(*args, [True, True, True, False]) == LSTM_FWD


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cudnn_lstm_counts() -> None:
    model = Core(nn.LSTM(D_IN, H, batch_first=True)).cuda()
    x = torch.randn(B, N, D_IN, device="cuda")
    forward = count_torch(model, x)
    train = count_torch(model, x, train=True)
    assert forward.device.startswith("cuda") and forward.total == LSTM_FWD
    assert train.total == 3 * LSTM_FWD and train.uncounted == ()


# --------------------------------------------------------------------------- attention

SDPA_B, SDPA_H, SDPA_N, SDPA_DH = 2, 3, 7, 4
SDPA_FWD = 4 * SDPA_B * SDPA_H * SDPA_N * SDPA_N * SDPA_DH  # 4704


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("device", ["native", "meta"])
def test_cpu_sdpa_flash_convention(device: str, causal: bool) -> None:
    q = torch.randn(SDPA_B, SDPA_H, SDPA_N, SDPA_DH)
    forward = count_torch(Sdpa(causal), q, device=device)
    train = count_torch(Sdpa(causal), q, train=True, device=device)
    assert SDPA_FWD == 4704
    # q k^T and p v, causal not discounted (torch's convention for the CUDA kernels)
    assert forward.by_op == {"aten._scaled_dot_product_flash_attention_for_cpu": SDPA_FWD}
    # the CPU flash backward recomputes q k^T: 5 products, 2.5x forward
    assert train.total == SDPA_FWD + 5 * SDPA_FWD // 2
    assert forward.uncounted == () and train.uncounted == ()
    assert count_fvcore(Sdpa(causal), q, device=device).total == SDPA_FWD


class SdpaVariant(nn.Module):
    """SDPA calls for which the CPU picks different kernels (flash or math)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, h, L, E)
        q = k = v = x
        kwargs: dict = {}
        if self.kind == "bool-mask":
            n = x.shape[-2]
            kwargs["attn_mask"] = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        elif self.kind == "dropout":
            kwargs["dropout_p"] = 0.3
        elif self.kind == "gqa":
            k = v = x[:, : x.shape[1] // 2]
            kwargs["enable_gqa"] = True
        elif self.kind == "wide-v":
            v = torch.cat([x, x], dim=-1)
        elif self.kind == "strided":
            q = x.transpose(-1, -2).contiguous().transpose(-1, -2)  # last-dim stride != 1
        return F.scaled_dot_product_attention(q, k, v, **kwargs)[..., : x.shape[-1]]


@pytest.mark.parametrize("kind", ["bool-mask", "dropout", "gqa", "wide-v", "strided"])
def test_meta_sdpa_follows_the_cpu_kernel_choice(kind: str) -> None:
    """Meta reroutes SDPA to the kernel the CPU would pick (flash: backward 2.5x forward;
    math: 2x), so meta and real CPU counts agree forward and backward."""
    model, x = SdpaVariant(kind), torch.randn(2, 4, 7, 6)
    e_v = 12 if kind == "wide-v" else 6
    for train in (False, True):
        meta = count_torch(model, x, train=train, device="meta")
        real = count_torch(model, x, train=train, device="native")
        assert meta.total == real.total and meta.by_op == real.by_op, (kind, train, meta, real)
        assert meta.uncounted == real.uncounted == ()
        if not train:
            assert meta.total == 2 * 2 * 4 * 7 * 7 * (6 + e_v)


# --------------------------------------------------------------------------- plain modules


class BmmEinsum(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, n, d)
        scores = torch.einsum("bnd,bmd->bnm", x, x)  # b*n*n*d multiply-adds
        return torch.bmm(scores, x)  # b*n*n*d multiply-adds


class UnfoldMatmul(nn.Module):
    def __init__(self, d: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.weight = nn.Parameter(torch.randn(d * k, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, n, d)
        windows = F.pad(x, (0, 0, self.k - 1, 0)).unfold(1, self.k, 1)  # (b, n, d, k)
        return windows.flatten(2) @ self.weight  # (b, n, d): b*n*d*k*d multiply-adds


class Vectors(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(6, 5))
        self.y = nn.Parameter(torch.randn(6))

    def forward(self, v: torch.Tensor) -> torch.Tensor:  # (5,)
        return torch.mv(self.a, v).sum() + torch.addmv(self.y, self.a, v).sum() + v.dot(v)


@pytest.mark.parametrize(
    ("make", "shape", "forward_flops"),
    [
        (lambda: nn.Linear(12, 7), (3, 5, 12), 2 * 15 * 12 * 7),
        (lambda: nn.Conv1d(12, 9, 3, groups=3, padding=1), (2, 12, 10), 2 * 2 * 9 * 4 * 3 * 10),
        (lambda: nn.Conv1d(6, 6, 5, groups=6), (2, 6, 11), 2 * 2 * 6 * 5 * 7),
        (BmmEinsum, (2, 6, 5), 2 * 2 * (2 * 6 * 6 * 5)),
        (lambda: UnfoldMatmul(6, 3), (2, 9, 6), 2 * 2 * 9 * 18 * 6),
    ],
    ids=["linear", "conv1d-groups", "conv1d-depthwise", "bmm-einsum", "unfold-matmul"],
)
def test_plain_modules_closed_forms(make, shape, forward_flops: int) -> None:
    torch.manual_seed(0)
    model, x = make(), torch.randn(*shape)
    for device in ("auto", "native"):  # fvcore cannot trace a conv on meta: "auto" falls back
        assert count_torch(model, x, device=device).total == forward_flops
        assert count_fvcore(model, x, device=device).total == forward_flops
        # backward: each product has one partner per operand that requires grad
        assert count_torch(model, x, train=True, device=device).total == 3 * forward_flops


def test_vector_products() -> None:
    """mv / addmv / dot have formulas (torch 2.13 has none). Their backward computes the
    matrix gradient as an outer product, an elementwise multiply (FLOP-free, as torch
    counts it); only the two vector gradients are products: 2 more mv of 2*6*5."""
    model, v = Vectors(), torch.randn(5)
    forward = 2 * (6 * 5 + 6 * 5 + 5)
    assert count_torch(model, v).total == count_fvcore(model, v).total == forward == 130
    train = count_torch(model, v, train=True)
    assert train.total == forward + 2 * (2 * 6 * 5) == 250 and train.uncounted == ()


def test_grouped_conv_backward_fixes_torch() -> None:
    """torch 2.13's own formula counts a depthwise weight gradient `groups` times too high."""
    model, x = nn.Conv1d(6, 6, 5, groups=6), torch.randn(2, 6, 11, requires_grad=True)
    forward = 2 * 2 * 6 * 5 * 7
    with FlopCounterMode(display=False) as stock:
        model(x).sum().backward()
    assert stock.get_total_flops() == forward + forward + 6 * forward
    assert count_torch(model, x, train=True).total == 3 * forward


def test_op_without_formula_is_reported_uncounted() -> None:
    """F.bilinear runs aten._trilinear: multiply-adds that neither counter has a formula for."""

    class Bilinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 5, 5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.bilinear(x, x, self.w).softmax(-1) + x.sum()

    model, x = Bilinear(), torch.randn(4, 5)
    torch_result, fvcore_result = count_torch(model, x), count_fvcore(model, x)
    assert torch_result.uncounted == ("aten._trilinear",) and torch_result.total == 0
    assert fvcore_result.uncounted == ("aten::bilinear",) and fvcore_result.total == 0


def test_module_that_fails_on_meta_falls_back_to_cpu() -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            steps = int(x.abs().sum().item() > 0) + 1  # needs real data
            for _ in range(steps):
                x = self.lin(x)
            return x

    model, x = DataDependent(), torch.ones(3, 4)
    result = count_torch(model, x)
    assert result.device == "cpu" and "meta pass failed" in result.note
    assert result.total == 2 * 2 * 3 * 4 * 4
    with pytest.raises((RuntimeError, NotImplementedError)):
        count_torch(model, x, device="meta")
    assert next(model.parameters()).device.type == "cpu"  # the module was not moved


def test_flop_free_classification() -> None:
    for name in ("aten.mul.Tensor", "aten::add", "aten.sigmoid_.default", "aten::softmax",
                 "aten._softmax", "aten.view", "aten::unfold", "aten.native_layer_norm",
                 "aten::constant_pad_nd", "aten.where.self", "prim::ListConstruct"):
        assert is_flop_free(name), name
    for name in ("aten.mm", "aten::matmul", "aten._trilinear", "aten::lstm",
                 "aten.mkldnn_rnn_layer", "aten::scaled_dot_product_attention",
                 "aten.convolution_backward", "mylib.mystery_op"):
        assert not is_flop_free(name), name


def test_flop_count_validates() -> None:
    assert FlopCount(total=6, by_op={"a": 2, "b": 4}, uncounted=("z", "y", "z")).uncounted == (
        "y", "z")
    with pytest.raises(ValueError, match="sum of by_op"):
        FlopCount(total=5, by_op={"a": 2})
    with pytest.raises(ValueError, match="non-negative"):
        FlopCount(total=-1, by_op={"a": -1})
    with pytest.raises(ValueError, match="device"):
        count_torch(nn.Linear(2, 2), torch.randn(1, 2), device="gpu")


# --------------------------------------------------------------------------- every layer

CASES = [
    LayerCase(seq_len=37, d_model=60, heads=5, kernel=5, window=7, src_len=23, height=1,
              width=37, causal=causal, block=block, batch=2)
    for causal in (False, True)
    for block in (False, True)
] + [LayerCase(seq_len=23, d_model=48, heads=3, kernel=3, window=4, src_len=9, height=1,
               width=23),
     # short n: per-sequence terms (an RNN's initial-state gradient) exceed 1% here
     LayerCase(seq_len=5, d_model=12, heads=3, kernel=3, window=3, src_len=3, height=1,
               width=5, causal=True)]


def _layer_cases(name: str) -> list[LayerCase]:
    """The CASES this layer can build, deduplicated after clearing inapplicable parameters."""
    entry = get(name)
    seen: list[LayerCase] = []
    for case in CASES:
        case = entry.normalize(case)
        if entry.problem(case) is None and case not in seen:
            seen.append(case)
    return seen


def test_layers_are_registered() -> None:
    assert len(names()) >= 5, names()


@pytest.mark.parametrize("name", names())
def test_layer_analytic_equals_both_counters(name: str) -> None:
    entry = get(name)
    cases = _layer_cases(name)
    assert cases, f"no test case builds {name}"
    for variant in entry.variants:
        for case in cases:
            row = count_layer(entry, case, variant, train=True)
            where = (name, variant, case, row)
            analytic = row["flops_analytic"]
            assert within(row["flops_torch"], analytic), where
            assert within(row["flops_fvcore"], analytic), where
            assert within(row["train_flops_torch"], row["train_flops_analytic"]), where
            assert row["train_flops_fvcore"] is None
            assert row["uncounted_torch"] == () and row["uncounted_fvcore"] == (), where
            assert row["uncounted_torch_train"] == (), where


META_VS_REAL = [
    (name, variant)
    for name, variant in [("gru", "fused"), ("lstm", "fused"), ("gru", "unrolled"),
                          ("attention_sdpa", "sdpa"),
                          ("conv_separable", "conv1d"), ("lightconv", "conv1d"),
                          ("lightconv", "channels_last"), ("lightconv", "strided"),
                          ("dynamicconv", "band"), ("dynamicconv", "strided"),
                          ("dynamicconv", "shift")]
    if name in names()
]


@pytest.mark.parametrize(("name", "variant"), META_VS_REAL)
def test_meta_count_equals_real_cpu_count(name: str, variant: str) -> None:
    entry = get(name)
    case = _layer_cases(name)[-1]
    model = entry.build(case, variant)
    x = torch.randn(case.batch, case.seq_len, case.d_model)
    for train in (False, True):
        meta = count_torch(model, x, train=train, device="meta")
        real = count_torch(model, x, train=train, device="native")
        assert (meta.device, real.device) == ("meta", "cpu")
        assert meta.total == real.total, (name, train, meta, real)


@pytest.mark.parametrize(("d", "heads", "wider", "causal"), [
    (15, 5, 2, False), (15, 5, 2, True),  # k d/H < 400: small products, threshold 160
    (85, 1, 2, True),  # k d/H >= 400: BLAS products, threshold 64
    (54, 2, 8, False),  # k = 15, k d/H = 405: threshold 5 (k + 1) = 80
    (15, 5, 0, True),  # k = SHIFT_MAX_K: shifted multiply-adds at every n
])
def test_dynamicconv_auto_counts_the_path_it_runs(d: int, heads: int, wider: int,
                                                  causal: bool) -> None:
    """"auto" runs shifted multiply-adds up to SHIFT_MAX_K taps, wider the O(n^2) band up to
    band_max_n steps and the strided windows above: the analytic model must switch with it,
    and both counters must see the switch (odd d, d/H, k; n on both sides of the threshold)."""
    from harness.layers.dynamicconv import SHIFT_MAX_K, band_max_n

    entry = get("dynamicconv")
    kernel = SHIFT_MAX_K + wider
    top = band_max_n(kernel, d // heads)
    paths = ["band", "band", "strided"] if wider else ["shift"] * 3
    for n, runs in zip([top - 1, top, top + 1], paths, strict=True):
        case = entry.normalize(LayerCase(seq_len=n, d_model=d, heads=heads, kernel=kernel,
                                         causal=causal, batch=2))
        row = count_layer(entry, case, "auto", train=True)
        where = (n, row)
        assert row["flops_torch"] == row["flops_analytic"], where
        assert row["flops_fvcore"] == row["flops_analytic"], where
        assert row["train_flops_torch"] == row["train_flops_analytic"], where
        fixed = count_layer(entry, case, runs)
        assert row["flops_torch"] == fixed["flops_torch"], where
        for other in {"band", "strided", "shift"} - {runs}:  # the paths' counts differ
            assert row["flops_torch"] != count_layer(entry, case, other)["flops_torch"], where
        auto, same = entry.cost_of(case, "auto"), entry.cost_of(case, runs)
        assert auto == same, where
        assert auto.flops_useful == entry.cost_of(case, "unfold").flops_useful
        # band and strided multiply padded taps too; shift only the taps inside
        assert (auto.flops > auto.flops_useful) == (runs != "shift"), where
