"""Headline sentences for a report summary, generated from the numbers only.

Each sentence states a number the analysis computed and the rule that produced it; where a
fit is inconclusive the sentence says so instead of quoting a slope. Order: case counts,
scaling exponents (FLOPs, then time), crossovers, structure verdicts, FLOP counters,
memory frontier, efficiency.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import pandas as pd

from harness import schema
from harness.analysis.crossovers import crossovers
from harness.analysis.efficiency import efficiency, memory_frontier
from harness.analysis.flops import flop_reconciliation
from harness.analysis.frame import fmt_num, require, unreliable_phrase
from harness.analysis.table1 import table1_measured
from harness.values import count, plain

_METRIC_WORDS = {"flops_analytic": "FLOPs", "time_ms_median": "time"}
_CONTEXT = (*schema.axis_names("setting"), "seed")
_FLAG_WORDS = {"interval too wide": "95% interval wider than ±0.25",
               "too few reliable points": "fewer than 3 sequence lengths with reliable "
                                          "timing once unreliable timings are left out",
               "too few points": "fewer than 3 sequence lengths"}


def _shortener(df: pd.DataFrame) -> Callable[..., str]:
    """Drop dtype/device/mode/seed from a description when the whole run shares one value."""
    constant = {c for c in _CONTEXT
                if c in df.columns and len({plain(v) for v in df[c].tolist()}) <= 1}

    def short(*descriptions: str) -> str:
        parts = [p for d in descriptions for p in d.split(", ") if p]
        kept = [p for p in parts if p.split("=")[0] not in constant]
        return ", ".join(dict.fromkeys(kept))

    return short


class _Namer:
    """Names for a layer's variants: the bare layer when the set is all of its variants."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.variants = {str(k): {str(v) for v in vs} for k, vs in
                         df.groupby(df["layer"].astype(str))["variant"].unique().items()}

    def __call__(self, layer: str, variants: Iterable[str]) -> str:
        chosen = list(dict.fromkeys(str(v) for v in variants))
        if set(chosen) == self.variants.get(str(layer), set(chosen)):
            return str(layer)
        return f"{layer} ({', '.join(chosen)})"


def _merged(items: list[tuple[tuple, str, str]]) -> dict[tuple, tuple[str, list[str]]]:
    """(text key, layer, variant) -> {text key: (layer, [variants])}, first-seen order."""
    out: dict[tuple, tuple[str, list[str]]] = {}
    for key, layer, variant in items:
        out.setdefault((layer, *key), (layer, []))[1].append(variant)
    return out


def _counts(df: pd.DataFrame) -> str:
    counts = df["status"].astype(object).fillna("missing").value_counts()
    parts = [f"{int(counts[s])} {s}" for s in ("ok", "oom", "timeout", "error", "skipped",
                                               "missing") if s in counts]
    return f"{len(df)} cases: " + ", ".join(parts) + "."


def _exponent_sentences(t1: pd.DataFrame, name: _Namer, short: Callable[..., str]) -> list[str]:
    """One sentence per judged exponent (variants with the same numbers merged), then one
    sentence per metric listing the inconclusive fits."""
    out: list[str] = []
    for prefix, what in (("flops_n", "FLOPs"), ("time_n", "time")):
        judged: list[tuple[tuple, str, str]] = []
        unsure: dict[str, list[tuple[tuple, str, str]]] = {}
        for _, row in t1.iterrows():
            verdict = row.get(f"{prefix}_verdict")
            if verdict in (None, "n/a"):
                continue
            slope = row[f"{prefix}_exp"]
            dropped = unreliable_phrase(count(row.get(f"{prefix}_unreliable")))
            if verdict == "inconclusive":
                flag = row[f"{prefix}_reason"].split(" (")[0]
                found = f"n^{slope:.2f}" if not math.isnan(slope) else "no slope"
                unsure.setdefault(flag, []).append(
                    ((f"{found} ({dropped})" if dropped else found,),
                     row["layer"], row["variant"]))
                continue
            theory = row[f"{prefix}_theory"]
            theory_txt = f", theory {fmt_num(theory)}" if not math.isnan(theory) else ""
            source = f" ({row['flops_source']})" if what == "FLOPs" else ""
            verb = "grow" if what == "FLOPs" else "grows"
            text = (f"{what}{source} {verb} as n^{slope:.2f} ± {row[f'{prefix}_ci']:.2f} "
                    f"(model {row[f'{prefix}_model']:.2f}{theory_txt}; "
                    f"{short(row[f'{prefix}_at'], dropped)}): {verdict}.")
            judged.append(((text,), row["layer"], row["variant"]))
        for (_, text), (layer, variants) in _merged(judged).items():
            out.append(f"{name(layer, variants)}'s {text}")
        for flag, items in unsure.items():
            listed = ", ".join(f"{name(layer, variants)} {slope}" for (_, slope), (layer, variants)
                               in _merged(items).items())
            out.append(f"The {what} exponent in n is inconclusive "
                       f"({_FLAG_WORDS.get(flag, flag)}) for: {listed}.")
    return out


def _pair_rank(row: pd.Series) -> tuple:
    """Attention vs recurrence first (the paper's comparison), then attention vs the rest."""
    families = {row["family_a"], row["family_b"]}
    return (families != {"self-attention", "recurrent"}, "self-attention" not in families)


def _crossover_sentences(df: pd.DataFrame, name: _Namer, limit: int,
                         short: Callable[..., str]) -> list[str]:
    """One sentence per crossover between families along n (variants with the same crossing
    merged); a pair whose curves cross more than once gets one sentence saying so."""
    out: list[str] = []
    for metric, words in _METRIC_WORDS.items():
        if metric not in df.columns or "seq_len" not in df.columns:
            continue
        found = crossovers(df, metric, "seq_len")
        found = found[found["family_a"] != found["family_b"]]
        if found.empty:
            continue
        found = found.assign(_rank=[_pair_rank(r) for _, r in found.iterrows()])
        found = found.sort_values("_rank", kind="stable")
        pair_cols = ["layer_a", "variant_a", "layer_b", "variant_b", "params_a", "params_b",
                     "fixed"]
        times = found.groupby(pair_cols, sort=False, dropna=False)["crossover_at"]
        found = found.assign(_count=times.transform("size"), _low=times.transform("min"),
                             _high=times.transform("max"))
        order: list[str | tuple] = []  # a finished sentence, or the key of merged crossings
        single: dict[tuple, list[tuple[str, str, str, str]]] = {}
        seen: set[tuple] = set()
        for _, c in found.iterrows():
            dropped = unreliable_phrase(count(c.get("excluded_unreliable")))
            extra = short(c["fixed"], c["params_a"], c["params_b"], dropped)
            if c["_count"] > 1:
                pair = tuple(c[col] for col in pair_cols)
                if pair not in seen:
                    seen.add(pair)
                    order.append(
                        f"{name(c['layer_a'], [c['variant_a']])} and "
                        f"{name(c['layer_b'], [c['variant_b']])} cross {c['_count']} times in "
                        f"{words} between n ≈ {fmt_num(c['_low'])} and "
                        f"{fmt_num(c['_high'])} ({extra}): no single crossover.")
                continue
            a_first = c["cheaper_below"] == f"{c['layer_a']}/{c['variant_a']}"
            up, down = ("a", "b") if a_first else ("b", "a")  # `up` becomes costlier above
            where = (f"at n = {fmt_num(c['crossover_at'])}" if c["exact"] else
                     f"at n ≈ {fmt_num(c['crossover_at'])} (interpolated between "
                     f"{fmt_num(c['bracket_low'])} and {fmt_num(c['bracket_high'])})")
            key = (c[f"layer_{up}"], c[f"layer_{down}"], where,
                   short(c["fixed"], c[f"params_{up}"], c[f"params_{down}"], dropped))
            if key not in single:
                order.append(key)
            single.setdefault(key, []).append(
                (c[f"layer_{up}"], c[f"variant_{up}"], c[f"layer_{down}"], c[f"variant_{down}"]))
        sentences: list[str] = []
        for item in order:
            if isinstance(item, str):
                sentences.append(item)
                continue
            up_layer, down_layer, where, extra = item
            members = single[item]
            ups = list(dict.fromkeys(m[1] for m in members))
            downs = list(dict.fromkeys(m[3] for m in members))
            # merge variants only when every combination crossed at the same point
            parts = [(ups, downs)] if len(members) == len(ups) * len(downs) else \
                [([m[1]], [m[3]]) for m in members]
            for u, d in parts:
                sentences.append(f"{name(up_layer, u)} becomes costlier than "
                                 f"{name(down_layer, d)} in {words} {where} ({extra}).")
        out += sentences[:limit]
        if len(sentences) > limit:
            out.append(f"... and {len(sentences) - limit} more {words} crossovers between "
                       "families (see crossovers()).")
    return out


def _structure_sentences(t1: pd.DataFrame, name: _Namer) -> list[str]:
    out = []
    for what, column, cls in (("sequential ops", "seq_ops_verdict", "seq_ops_class"),
                              ("max path length", "path_class_verdict", "path_class")):
        if column not in t1.columns:
            continue
        judged = t1[t1[column].isin(["agrees", "disagrees"])]
        if judged.empty:
            continue
        bad = judged[judged[column] == "disagrees"]
        if bad.empty:
            out.append(f"The growth class of the measured {what} matches the theory for all "
                       f"{len(judged)} layer variants measured at 3+ sequence lengths.")
        for _, row in bad.iterrows():
            theory = row["seq_ops_theory"] if column == "seq_ops_verdict" else row["path_theory"]
            out.append(f"{name(row['layer'], [row['variant']])}: measured {what} "
                       f"grows as {row[cls]}, theory {theory}: disagrees.")
    if "path_verdict" in t1.columns:
        bad = t1[t1["path_verdict"] == "disagrees"]
        judged = t1[t1["path_verdict"].isin(["agrees", "disagrees"])]
        if len(judged) and bad.empty:
            out.append(f"Measured max path length equals the analytic value at every "
                       f"measured n for all {len(judged)} layer variants.")
        for _, row in bad.iterrows():
            out.append(f"{name(row['layer'], [row['variant']])}: measured max "
                       "path length differs from the analytic value.")
    return out


def _flop_sentences(df: pd.DataFrame) -> list[str]:
    if "flops_analytic" not in df.columns:
        return []
    rec = flop_reconciliation(df)
    counted = rec[rec["fvcore_agrees"].notna() | rec["torch_agrees"].notna()]
    if counted.empty:
        return []
    bad = counted[counted["flag"] != "ok"]
    if bad.empty:
        return [f"Counted FLOPs agree with the analytic model within 1% in all "
                f"{len(counted)} counted cases."]
    layers = ", ".join(sorted(bad["layer"].astype(str).unique()))
    return [f"FLOP counters disagree with the analytic model (beyond 1%) or leave ops "
            f"uncounted in {len(bad)} of {len(counted)} counted cases (layers: {layers})."]


def _frontier_sentences(df: pd.DataFrame, name: _Namer, short: Callable[..., str]) -> list[str]:
    if "seq_len" not in df.columns:
        return []
    frontier = memory_frontier(df)
    out = []
    for _, row in frontier[frontier["n_oom"] > 0].iterrows():
        ok_txt = (f"; largest n that ran: {fmt_num(row['largest_ok'])}"
                  if not math.isnan(row["largest_ok"]) else "; no n ran")
        out.append(f"{name(row['layer'], [row['variant']])} ran out of memory from n = "
                   f"{fmt_num(row['smallest_oom'])}{ok_txt} ({short(row['fixed'])}).")
    return out


def _efficiency_sentences(df: pd.DataFrame, name: _Namer) -> list[str]:
    """The best achieved throughput among cases with reliable timing (all cases, said so,
    when none is reliable): a disturbed timing makes its FLOP/s as doubtful as its time."""
    eff = efficiency(df)
    eff = eff[eff["flops_per_s"].notna()]
    if eff.empty:
        return []
    reliable = eff[~eff["time_unreliable"]]
    pool = reliable if len(reliable) else eff
    best = pool.loc[pool["flops_per_s"].idxmax()]
    sentence = (f"Highest achieved throughput: {best['flops_per_s'] / 1e9:.3g} GFLOP/s "
                f"({name(best['layer'], [best['variant']])}, "
                f"n = {fmt_num(best.get('seq_len'))}, d = {fmt_num(best.get('d_model'))})")
    if not pd.isna(best["fraction_of_peak"]):
        source = f", {best['peak_source']} peak" if isinstance(best["peak_source"], str) else ""
        sentence += f", {100 * best['fraction_of_peak']:.3g}% of peak{source}"
        if best["fraction_of_peak"] > 1:
            sentence += (" - above the peak, which cannot be: that peak does not describe "
                         "how the case ran (TF32? see the tf32_* columns)")
    if reliable.empty:
        sentence += "; every timing was flagged unreliable"
    elif len(reliable) < len(eff):
        sentence += f" ({len(eff) - len(reliable)} case(s) with unreliable timing not considered)"
    return [sentence + "."]


def headlines(df: pd.DataFrame, *, max_crossovers: int = 10) -> list[str]:
    """Summary sentences for a report, every one backed by a number computed here.

    Exponents come from :func:`table1_measured` (with its verdicts), crossovers from
    :func:`crossovers` along seq_len between layers of different families (at most
    ``max_crossovers`` per metric, then a count of the rest), failures from the status
    column and :func:`memory_frontier`.
    """
    require(df, ("status", "layer", "variant"), "headlines")
    if df.empty:
        return ["No cases in the results."]
    name, short = _Namer(df), _shortener(df)
    sentences = [_counts(df)]
    t1 = table1_measured(df)
    sentences += _exponent_sentences(t1, name, short)
    sentences += _crossover_sentences(df, name, max_crossovers, short)
    sentences += _structure_sentences(t1, name)
    sentences += _flop_sentences(df)
    sentences += _frontier_sentences(df, name, short)
    sentences += _efficiency_sentences(df, name)
    return sentences


#: Table 1 cells a finding may name, in the order a reader cares about them.
_CELL_WORDS = (("flops_n", "FLOPs vs n"), ("time_n", "time vs n"), ("flops_d", "FLOPs vs d"),
               ("time_d", "time vs d"), ("seq_ops", "sequential ops"),
               ("path", "max path length = analytic"), ("path_class", "max path length growth"))


def _disagreements(t1: pd.DataFrame, name: _Namer) -> list[str]:
    out = []
    for _, row in t1.iterrows():
        for prefix, words in _CELL_WORDS:
            if row.get(f"{prefix}_verdict") == "disagrees":
                out.append(f"{name(row['layer'], [row['variant']])}, {words}: disagrees "
                           f"({row[f'{prefix}_reason']}).")
    return out


def findings(df: pd.DataFrame, *, limit: int = 10) -> tuple[list[str], int]:
    """At most ``limit`` findings, most important first, and how many there were in all.

    Rank: cases that did not run and memory frontiers; Table 1 disagreements;
    attention-vs-recurrence crossovers (the paper's comparison); the notes (time not
    following FLOPs, work beyond the useful FLOPs); FLOP counter disagreements; inconclusive fits;
    throughput. Agreements are not findings here: the Table 1 marks show them.
    """
    require(df, ("status", "layer", "variant"), "findings")
    if df.empty:
        return ["No cases in the results."], 1
    name, short = _Namer(df), _shortener(df)
    t1 = table1_measured(df)
    ranked: list[str] = []
    failed = int((df["status"].astype(object) != "ok").sum())
    if failed:
        ranked.append(f"{failed} of {len(df)} cases did not run: {_counts(df)[:-1]} "
                      "(per-case table).")
    ranked += _frontier_sentences(df, name, short)
    ranked += _disagreements(t1, name)
    ranked += [s for s in _crossover_sentences(df, name, 3, short) if not s.startswith("...")]
    if "note" in t1.columns:
        ranked += [f"{name(r['layer'], [r['variant']])}: {r['note']}."
                   for _, r in t1.iterrows() if str(r.get("note") or "")]
    flops = _flop_sentences(df)
    ranked += [s for s in flops if "disagree" in s]
    ranked += [s for s in _exponent_sentences(t1, name, short) if "inconclusive" in s]
    ranked += _efficiency_sentences(df, name)
    return ranked[:limit], len(ranked)
