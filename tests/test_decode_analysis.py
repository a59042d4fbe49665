"""Table 1 for decoding: per-token exponents in n, state growth, attention vs DynamicConv
crossover (harness.analysis.decoding) and the report's section."""

from __future__ import annotations

import pandas as pd

from harness.analysis.decoding import decode_crossovers, decode_ratios, decode_table
from harness.registry import theory_columns
from harness.report.build import build_report
from harness.report.inputs import RunInfo
from harness.report.model import Bullets, Table
from harness.theory import per_token_terms

D, B = 1024, 4
NS = (64, 256, 1024, 2048, 4096)


def _row(layer: str, variant: str, n: int, flops: int, state: int, ms: float,
         **params: object) -> dict[str, object]:
    row: dict[str, object] = dict(
        layer=layer, variant=variant, seq_len=n, d_model=D, heads=16, kernel=None,
        window=None, causal=True, block=False, batch=B, dtype="float32", device="cpu",
        mode="decode", seed=0, status="ok", message="", label=f"{layer}-{n}",
        flops_analytic=flops, flops_torch=flops, state_bytes=state,
        state_bytes_analytic=state, time_ms_median=ms, time_unreliable=False)
    row.update(params)
    row.update(theory_columns(layer, decode=True, causal=True))
    return row


def decode_frame() -> pd.DataFrame:
    rows = []
    for n in NS:
        att = 8 * B * D * D + 4 * B * (n + 1) * D
        rows.append(_row("attention_sdpa", "sdpa", n, att, 2 * B * n * D * 4, att / 4e7))
        dyn = 2 * B * 7 * D + 2 * B * D * 16 * 7
        rows.append(_row("dynamicconv", "unfold", n, dyn, B * 6 * D * 4, 1.2, kernel=7))
        rows.append(_row("lstm", "fused", n, 16 * B * D * D, 2 * B * D * 4,
                         16 * B * D * D / 4e7, heads=None))
    df = pd.DataFrame(rows)
    df.insert(0, "case_index", range(len(df)))
    df.insert(1, "case_id", [f"c{i}" for i in range(len(df))])
    for name in ("seq_len", "d_model", "heads", "kernel", "window", "batch", "seed"):
        df[name] = pd.array([None if pd.isna(v) else int(v) for v in df[name]], dtype="Int64")
    return df


def test_per_token_terms_lose_one_power_of_n() -> None:
    assert per_token_terms("n^2 d + n d^2") == "n d + d^2"
    assert per_token_terms("k n d + n d h k") == "k d + d h k"
    assert per_token_terms("r n d + n d^2") == "r d + d^2"
    assert theory_columns("attention", decode=True)["theory_terms"] == "n d + d^2"
    assert theory_columns("lightconv", decode=True, block=True)["theory_terms"] == "k d + d^2"


def test_decode_table_judges_per_token_exponents_and_state() -> None:
    table = decode_table(decode_frame()).set_index("layer")
    att = table.loc["attention_sdpa"]
    assert att["state_theory"] == 1 and abs(att["state_exp"] - 1) < 1e-9
    assert att["state_verdict"] == "agrees"
    # 8 d^2 + 4 n d bends from slope 0 to 1 across these n: the fit may be too curved to be
    # sure, but it never disagrees with its own model
    assert 0 < att["flops_exp"] < 1 and att["flops_verdict"] in ("agrees", "inconclusive")
    assert att["time_verdict"] in ("agrees", "inconclusive")
    assert abs(att["time_exp"] - att["flops_exp"]) < 1e-9  # time ~ FLOPs here
    for layer in ("dynamicconv", "lstm"):
        row = table.loc[layer]
        assert abs(row["state_exp"]) < 1e-9 and row["state_theory"] == 0
        assert row["state_verdict"] == row["flops_verdict"] == row["time_verdict"] == "agrees"


def test_attention_crosses_dynamicconv_where_its_step_gets_slower() -> None:
    df = decode_frame()
    found = decode_crossovers(df)
    assert len(found) == 1
    c = found.iloc[0]
    assert (c["layer_a"], c["layer_b"]) == ("attention_sdpa", "dynamicconv")
    # attention: (8 B d^2 + 4 B (n+1) d) / 4e7 ms == 1.2 ms at n ~ 880
    assert 256 < c["crossover_at"] < 1024
    assert c["cheaper_below"] == "attention_sdpa/sdpa"


def test_report_has_the_decoding_section() -> None:
    df = decode_frame().assign(run="r")
    report = build_report(df, [RunInfo("r", "dataframe", None, None)])
    section = next(s for s in report.sections if s.id == "decoding")
    table = next(b for b in section.blocks if isinstance(b, Table))
    assert len(table.rows) == 3
    assert any(isinstance(b, Bullets) and "n ≈" in b.items[0] for b in section.blocks)


def test_forward_only_results_have_no_decoding_section() -> None:
    df = decode_frame().assign(mode="forward", run="r")
    report = build_report(df, [RunInfo("r", "dataframe", None, None)])
    assert "decoding" not in [s.id for s in report.sections]


def test_without_a_crossover_the_section_says_which_step_is_slower() -> None:
    df = decode_frame()
    dyn = df["layer"] == "dynamicconv"
    df.loc[dyn, "time_ms_median"] = 0.08  # a bare DynamicConv: faster than attention at any n
    ratios = decode_ratios(df)
    assert set(ratios["layer_b"]) == {"dynamicconv"} and (ratios["ratio"] > 1).all()
    assert decode_crossovers(df).empty
    report = build_report(df.assign(run="r"), [RunInfo("r", "dataframe", None, None)])
    section = next(s for s in report.sections if s.id == "decoding")
    bullets = next(b for b in section.blocks if isinstance(b, Bullets))
    assert "no crossover; attention_sdpa's step is slower at every measured n" in bullets.items[0]
    blocked = df.assign(block=df["layer"].eq("dynamicconv"))
    assert set(decode_ratios(blocked)["layer_b"]) == {"dynamicconv (block)"}
