"""``harness compare``: per-case verdicts between a baseline and a candidate run.

The rules, with the measurements behind them, are written for users in docs/ci.md ("2.
``harness compare``": the verdict table, "Time: what counts as slower", "Contended time",
"Noise"). In short (:class:`Rules` holds the knobs):

* **Time.** The size of a change is the ratio of the fastest calls; it counts when it is at
  least ``1 + threshold`` and significant: with :data:`MIN_RUNS` runs (else passes) a side,
  by an exact permutation test over their fastest calls *against the threshold*
  (:func:`harness.bench.stats.fastest_run_p`; runs are the independent repetitions, the
  passes of one process share its fate); otherwise by the bootstrap interval of the ratio
  of medians, and with summary statistics only the interquartile ranges must not overlap.
* **Contended time.** Passes disturbed by other processes or a throttled CPU
  (:func:`contended`) are dropped when each side keeps a clean pass and the test keeps its
  basis; otherwise the time is :data:`INCONCLUSIVE`, never slower or faster.
* **Memory** more than ``mem_threshold`` and :data:`MEM_FLOOR_BYTES`, **any FLOP** change,
  and a case failing in the candidate only are regressions; their mirror images improve.
* **One verdict per case**: a memory or FLOP regression whatever the time, else an
  inconclusive time, else improved or unchanged. Cases on one side only, or measured on
  another device or dtype (unless ``allow_mismatch``), are listed, never an error.

The exit code is 1 when a case regressed or failed, else 0 (an inconclusive case never
makes it 1: contention says nothing about the code).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from harness.bench.loaders import FLOP_SOURCES, CaseRecord, Key, PassStats, RunRecord
from harness.bench.stats import (
    RatioCI,
    bootstrap_ratio,
    fastest_run_p,
    median_se,
    summary_ratio,
)

#: Memory changes smaller than this are allocator noise (alignment, small buffers).
MEM_FLOOR_BYTES = 4096
#: Runs (or, failing that, passes) a side needs before significance is tested across them
#: instead of across samples.
MIN_RUNS = 3

REGRESSED, IMPROVED, UNCHANGED = "regressed", "improved", "unchanged"
INCONCLUSIVE = "inconclusive (contended)"
FAILED, FIXED, NOT_MEASURED = "failed", "fixed", "not measured"
BASELINE_ONLY, CANDIDATE_ONLY, MISMATCH = "baseline only", "candidate only", "not compared"
BAD_VERDICTS = (REGRESSED, FAILED)


@dataclass(frozen=True)
class Rules:
    threshold: float = 0.10  # relative time change that matters
    mem_threshold: float = 0.10  # relative peak-memory change that matters
    level: float = 0.95  # confidence level of the time interval
    allow_mismatch: bool = False  # compare cases measured on different devices / dtypes
    n_boot: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("threshold", "mem_threshold"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not 0 < self.level < 1:
            raise ValueError(f"level must be in (0, 1), got {self.level}")


def contended(unreliable: bool, note: str | None) -> bool:
    """Whether a pass's time was disturbed by other processes or a throttled CPU.

    ``time_unreliable`` is also set by a plain spread rule (IQR / median above 10 %); such a
    pass is still compared, because the runs test and the fastest call already allow for
    spread. Contention and throttling slow a whole pass by an amount its own samples cannot
    reveal, so such a pass cannot speak for the code. ``time_note`` says which: a reason
    (notes may join several with "; ") that starts with "contended", or any mention of
    throttling. A note without the flag is ignored: the producer judged the time usable.
    """
    if not unreliable or not note:
        return False
    text = note.lower()
    return "throttl" in text or any(
        part.strip().startswith("contended") for part in text.split(";"))


@dataclass(frozen=True)
class Contention:
    """The contended passes of one side of a case: how many, and the first one's note."""

    note: str
    passes: int  # contended passes
    of: int  # all passes of the side
    runs_left: int  # runs (processes) that keep at least one clean pass
    of_runs: int

    def describe(self, side: str) -> str:
        count = "" if self.of == 1 else f" ({self.passes} of {self.of} passes)"
        return f"{side}: {self.note}{count}"


@dataclass(frozen=True)
class TimeChange:
    baseline_s: float  # median of the baseline's fastest pass
    candidate_s: float
    ci: RatioCI  # ratio of those medians, with its interval
    min_ratio: float | None  # ratio of the fastest calls (the size of the change)
    p_value: float | None  # exact test over the runs' (or passes') fastest calls
    basis: str  # "runs", "passes", "samples" or "stats-only": what significance rests on
    significant: bool
    direction: str  # "slower", "faster" or "same"

    @property
    def ratio(self) -> float:
        """The ratio that sizes the change: of the fastest calls, else of the medians."""
        return self.min_ratio if self.min_ratio is not None else self.ci.ratio


@dataclass
class CaseVerdict:
    label: str
    key: Key
    verdict: str
    reasons: list[str] = field(default_factory=list)
    baseline: CaseRecord | None = None
    candidate: CaseRecord | None = None
    time: TimeChange | None = None
    memory: tuple[float, float] | None = None  # (baseline, candidate) bytes
    flops: dict[str, tuple[float, float]] = field(default_factory=dict)
    contended: dict[str, Contention] = field(default_factory=dict)  # by side, when any
    time_inconclusive: bool = False  # contention left too little clean time to judge

    @property
    def bad(self) -> bool:
        return self.verdict in BAD_VERDICTS


@dataclass
class Comparison:
    baseline: RunRecord
    candidate: RunRecord
    rules: Rules
    cases: list[CaseVerdict]
    warnings: list[str]

    def count(self, verdict: str) -> int:
        return sum(1 for case in self.cases if case.verdict == verdict)

    @property
    def regressed(self) -> list[CaseVerdict]:
        return [case for case in self.cases if case.bad]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressed else 0

    def summary(self) -> dict[str, int]:
        order = (REGRESSED, FAILED, INCONCLUSIVE, IMPROVED, FIXED, UNCHANGED, NOT_MEASURED,
                 MISMATCH, BASELINE_ONLY, CANDIDATE_ONLY)
        return {name: self.count(name) for name in order if self.count(name)}


def _time_change(base: CaseRecord, cand: CaseRecord, rules: Rules) -> TimeChange | None:
    b_best, c_best = base.best, cand.best
    if b_best is None or c_best is None or b_best.median <= 0 or c_best.median <= 0:
        return None
    if base.raw and cand.raw:
        ci = bootstrap_ratio([p.samples for p in base.passes],
                             [p.samples for p in cand.passes],
                             level=rules.level, n_boot=rules.n_boot, seed=rules.seed)
    else:
        ci = summary_ratio(
            b_best.median, median_se(b_best.median, max(b_best.count, 1), b_best.iqr,
                                     b_best.stddev),
            c_best.median, median_se(c_best.median, max(c_best.count, 1), c_best.iqr,
                                     c_best.stddev),
            level=rules.level,
        )
    b_min, c_min = base.minimum, cand.minimum
    min_ratio = c_min / b_min if b_min and c_min is not None else None
    size = min_ratio if min_ratio is not None else ci.ratio
    big_slower = size >= 1 + rules.threshold
    big_faster = size <= 1 / (1 + rules.threshold)
    b_units, c_units, basis = _units(base, cand)
    p_value = None
    if basis in ("runs", "passes"):
        # test the repetitions, not the correlated samples; and test against the threshold,
        # not against "no change": is the candidate slower than the baseline made
        # (1 + threshold) x slower? Exact under that null, conservative below it.
        margin = 1 + rules.threshold
        p_slow = fastest_run_p([b * margin for b in b_units], c_units)
        p_fast = fastest_run_p([c * margin for c in c_units], b_units)
        alpha = 1 - rules.level + 1e-9
        slower, faster = big_slower and p_slow <= alpha, big_faster and p_fast <= alpha
        p_value = p_slow if size >= 1 else p_fast  # the test in the direction observed
    else:
        basis = "samples" if ci.method == "bootstrap" else "stats-only"
        slower = big_slower and ci.ratio >= 1 + rules.threshold and ci.low > 1
        faster = big_faster and ci.ratio <= 1 / (1 + rules.threshold) and ci.high < 1
        if basis == "stats-only":  # conservative: the interquartile ranges must not overlap
            b_lo, b_hi = _quartile_range(b_best)
            c_lo, c_hi = _quartile_range(c_best)
            slower, faster = slower and c_lo > b_hi, faster and c_hi < b_lo
    direction = "slower" if slower else "faster" if faster else "same"
    significant = slower or faster or (p_value is None and ci.excludes_one())
    return TimeChange(b_best.median, c_best.median, ci, min_ratio, p_value, basis,
                      significant, direction)


def _units(base: CaseRecord, cand: CaseRecord) -> tuple[list[float], list[float], str]:
    """The repetitions to test: runs when both sides have enough, else passes, else none."""
    b_runs, c_runs = base.run_minima, cand.run_minima
    if len(b_runs) >= MIN_RUNS and len(c_runs) >= MIN_RUNS:
        return b_runs, c_runs, "runs"
    b_passes, c_passes = base.pass_minima, cand.pass_minima
    if len(b_passes) >= MIN_RUNS and len(c_passes) >= MIN_RUNS:
        return b_passes, c_passes, "passes"
    return [], [], "samples"


#: How much a comparison's significance rests on (see :func:`_units`): more is stronger.
_BASIS_STRENGTH = {"samples": 0, "passes": 1, "runs": 2}


def _side_contention(case: CaseRecord) -> Contention | None:
    bad = [p for p in case.passes if contended(p.unreliable, p.note)]
    if not bad:
        return None
    runs = {p.run for p in case.passes}
    clean_runs = {p.run for p in _without_contended(case).passes}
    return Contention(note=str(bad[0].note), passes=len(bad), of=len(case.passes),
                      runs_left=len(clean_runs), of_runs=len(runs))


def _without_contended(case: CaseRecord) -> CaseRecord:
    return replace(case, passes=tuple(p for p in case.passes
                                      if not contended(p.unreliable, p.note)))


def _clean_pair(base: CaseRecord, cand: CaseRecord) -> tuple[CaseRecord, CaseRecord] | None:
    """Both sides without their contended passes, or None when that leaves the time
    unjudgeable: a side without a clean pass, or a weaker basis than all passes had (see
    the module docstring)."""
    clean_b, clean_c = _without_contended(base), _without_contended(cand)
    if not clean_b.passes or not clean_c.passes:
        return None
    before, after = _units(base, cand)[2], _units(clean_b, clean_c)[2]
    if _BASIS_STRENGTH[after] < _BASIS_STRENGTH[before]:
        return None
    return clean_b, clean_c


def _quartile_range(timing: PassStats) -> tuple[float, float]:
    lo = timing.q1 if timing.q1 is not None else timing.median
    hi = timing.q3 if timing.q3 is not None else timing.median
    return float(lo), float(hi)


def _time_reason(t: TimeChange) -> str:
    ci = t.ci
    median = f"median {_pct(ci.ratio)} (CI {_pct(ci.low)} .. {_pct(ci.high)})"
    if t.p_value is not None:
        return f"fastest call {_pct(t.ratio)}, {median}, {t.basis} p={t.p_value:.3f}"
    if t.min_ratio is not None:
        return f"fastest call {_pct(t.ratio)}, {median}"
    return f"time {median}"


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


def judge(base: CaseRecord, cand: CaseRecord, rules: Rules) -> CaseVerdict:
    """The verdict for one case measured on both sides (same device and dtype, or allowed)."""
    out = CaseVerdict(label=cand.label or base.label, key=base.key, verdict=UNCHANGED,
                      baseline=base, candidate=cand)
    if base.status != "ok" or cand.status != "ok":
        if base.status == "ok":
            out.verdict = FAILED
            out.reasons.append(f"candidate {cand.status}: {cand.message}".rstrip(": "))
        elif cand.status == "ok":
            out.verdict = FIXED
            out.reasons.append(f"baseline was {base.status}")
        else:
            out.verdict = NOT_MEASURED
            out.reasons.append(f"baseline {base.status}, candidate {cand.status}")
        return out
    worse: list[str] = []
    better: list[str] = []
    notes: list[str] = []
    sides = {"baseline": _side_contention(base), "candidate": _side_contention(cand)}
    out.contended = {side: c for side, c in sides.items() if c is not None}
    timed: tuple[CaseRecord, CaseRecord] | None = (base, cand)
    if out.contended:
        described = "; ".join(c.describe(side) for side, c in out.contended.items())
        timed = _clean_pair(base, cand)
        if timed is None:
            out.time_inconclusive = True
            notes.append(f"time {INCONCLUSIVE}: {described}")
        else:
            notes.append(f"time judged without the contended passes: {described}")
    if timed is not None:
        out.time = _time_change(*timed, rules)
    if out.time is not None and out.time.direction != "same":
        (worse if out.time.direction == "slower" else better).append(_time_reason(out.time))
    if base.peak_mem_bytes is not None and cand.peak_mem_bytes is not None:
        b, c = base.peak_mem_bytes, cand.peak_mem_bytes
        out.memory = (b, c)
        if abs(c - b) >= MEM_FLOOR_BYTES:
            if c > b * (1 + rules.mem_threshold):
                worse.append(f"peak memory {_bytes(c - b, signed=True)}")
            elif c < b / (1 + rules.mem_threshold):
                better.append(f"peak memory {_bytes(c - b, signed=True)}")
    for source in FLOP_SOURCES:
        b_f, c_f = base.flops.get(source), cand.flops.get(source)
        if b_f is None or c_f is None:
            continue
        out.flops[source] = (b_f, c_f)
        if c_f != b_f:
            text = f"{source} {c_f - b_f:+,.0f}"
            (worse if c_f > b_f else better).append(text)
    out.reasons = worse + better + notes
    out.verdict = (REGRESSED if worse else INCONCLUSIVE if out.time_inconclusive
                   else IMPROVED if better else UNCHANGED)
    return out


def _bytes(n: float, *, signed: bool = False) -> str:
    sign = ("+" if n >= 0 else "-") if signed else ("-" if n < 0 else "")
    value = abs(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.1f} {unit}"
        value /= 1024
    return f"{sign}{value:.1f} GiB"  # pragma: no cover


def _pair(bases: list[CaseRecord], cands: list[CaseRecord]) -> tuple[
    list[tuple[CaseRecord, CaseRecord]], list[tuple[CaseRecord, CaseRecord]],
    list[CaseRecord], list[CaseRecord],
]:
    """Pair records of one identity: same device and dtype first, then any leftovers."""
    bases, cands = list(bases), list(cands)
    same = []
    for b in list(bases):
        for c in cands:
            if (b.device, b.dtype) == (c.device, c.dtype):
                same.append((b, c))
                bases.remove(b)
                cands.remove(c)
                break
    crossed = list(zip(bases, cands, strict=False))
    return same, crossed, bases[len(crossed):], cands[len(crossed):]


def _where(case: CaseRecord) -> str:
    return f"{case.device or '?'}/{case.dtype or '?'}"


def compare_runs(baseline: RunRecord, candidate: RunRecord, rules: Rules | None = None
                 ) -> Comparison:
    """Match cases by identity and judge each pair (see the module docstring)."""
    rules = rules or Rules()
    keys = list(dict.fromkeys([*baseline.cases, *candidate.cases]))
    verdicts: list[CaseVerdict] = []
    mismatched: list[str] = []
    for key in keys:
        same, crossed, base_left, cand_left = _pair(baseline.cases.get(key, []),
                                                    candidate.cases.get(key, []))
        for b, c in same:
            verdicts.append(judge(b, c, rules))
        for b, c in crossed:
            mismatched.append(f"{c.label} ({_where(b)} vs {_where(c)})")
            if rules.allow_mismatch:
                verdict = judge(b, c, rules)
                verdict.reasons.append(f"compared across {_where(b)} vs {_where(c)}")
            else:
                verdict = CaseVerdict(c.label, key, MISMATCH,
                                      [f"device/dtype {_where(b)} vs {_where(c)}"], b, c)
            verdicts.append(verdict)
        verdicts += [CaseVerdict(b.label, key, BASELINE_ONLY, [], b, None) for b in base_left]
        verdicts += [CaseVerdict(c.label, key, CANDIDATE_ONLY, [], None, c) for c in cand_left]
    return Comparison(baseline, candidate, rules, verdicts,
                      _warnings(baseline, candidate, verdicts, mismatched, rules))


def _warnings(baseline: RunRecord, candidate: RunRecord, verdicts: list[CaseVerdict],
              mismatched: list[str], rules: Rules) -> list[str]:
    out = []
    if mismatched:
        shown = ", ".join(mismatched[:5]) + (" ..." if len(mismatched) > 5 else "")
        action = ("compared anyway (--allow-mismatch): their ratios include the device or "
                  "dtype change" if rules.allow_mismatch
                  else "not compared; pass --allow-mismatch to compare them anyway")
        out.append(f"{len(mismatched)} cases were measured on a different device or dtype: "
                   f"{shown}; {action}")
    inconclusive = [v.label for v in verdicts if v.time_inconclusive]
    if inconclusive:
        shown = ", ".join(inconclusive[:5]) + (" ..." if len(inconclusive) > 5 else "")
        out.append(
            f"{len(inconclusive)} cases were timed while other processes took their CPUs "
            f"(or the CPU was throttled), with too few clean passes left to judge: {shown}; "
            f"their time is {INCONCLUSIVE}, neither a regression nor an improvement; time "
            "them again on a quieter machine, or with more runs a side"
        )
    stats_only = [v.label for v in verdicts
                  if v.time is not None and v.time.ci.method == "stats-only"]
    if stats_only:
        out.append(
            f"{len(stats_only)} cases have no raw timing samples on one side (pytest-benchmark "
            "files saved without --benchmark-save-data, or a results file without "
            "samples.parquet): their intervals come from summary statistics, and a change "
            "counts only when the interquartile ranges do not overlap as well"
        )
    advice = (f"give each side as a folder of {MIN_RUNS} or more separate runs (5 on a "
              "shared machine)")
    for basis, unit, rests_on in (
        ("samples", "passes", "the samples of one run, which cannot show drift between runs "
         "(the usual cause of false alarms on shared machines)"),
        ("passes", "runs", "passes inside one process, which share its memory layout and "
         "cannot show differences between processes"),
    ):
        weak = [v.label for v in verdicts if v.time is not None and v.time.basis == basis]
        if weak:
            out.append(f"{len(weak)} cases were timed in fewer than {MIN_RUNS} {unit} a side: "
                       f"their significance rests on {rests_on}; {advice}")
    for key, what in (("env_cpu_model", "CPU"), ("env_device_name", "device"),
                      ("env_torch_version", "torch"), ("env_torch_threads", "torch threads"),
                      ("timer", "timer")):
        b, c = baseline.machine.get(key), candidate.machine.get(key)
        if b is not None and c is not None and b != c:
            out.append(f"baseline and candidate differ in {what} ({b} vs {c}): time ratios "
                       "include that difference")
    return out


def to_dict(comparison: Comparison) -> dict[str, Any]:
    """The ``--format json`` document."""
    rules = comparison.rules

    def side(case: CaseRecord | None) -> dict[str, Any] | None:
        if case is None:
            return None
        return {
            "label": case.label, "device": case.device, "dtype": case.dtype,
            "status": case.status, "median_s": case.median, "min_s": case.minimum,
            "pass_medians_s": [p.median for p in case.passes],
            "pass_unreliable": [p.unreliable for p in case.passes],
            "pass_notes": [p.note for p in case.passes],
            "run_minima_s": case.run_minima,
            "samples": case.count, "raw_samples": case.raw,
            "peak_mem_bytes": case.peak_mem_bytes,
            "flops": dict(case.flops),
        }

    cases = []
    for v in comparison.cases:
        item: dict[str, Any] = {
            "label": v.label, "identity": dict(v.key), "verdict": v.verdict,
            "reasons": v.reasons, "baseline": side(v.baseline), "candidate": side(v.candidate),
            "time_inconclusive": v.time_inconclusive,
        }
        if v.contended:
            item["contended"] = {name: asdict(c) for name, c in v.contended.items()}
        if v.time is not None:
            item["time"] = {
                "ratio": v.time.ratio, "min_ratio": v.time.min_ratio,
                "median_ratio": v.time.ci.ratio, "ci_low": v.time.ci.low,
                "ci_high": v.time.ci.high, "level": v.time.ci.level,
                "ci_method": v.time.ci.method, "basis": v.time.basis,
                "p_value": v.time.p_value, "significant": v.time.significant,
                "direction": v.time.direction,
            }
        if v.memory is not None:
            item["memory"] = {"baseline_bytes": v.memory[0], "candidate_bytes": v.memory[1],
                              "delta_bytes": v.memory[1] - v.memory[0]}
        if v.flops:
            item["flops"] = {k: {"baseline": b, "candidate": c, "delta": c - b}
                             for k, (b, c) in v.flops.items()}
        cases.append(item)
    return {
        "baseline": str(comparison.baseline.path),
        "candidate": str(comparison.candidate.path),
        "rules": {"threshold": rules.threshold, "mem_threshold": rules.mem_threshold,
                  "level": rules.level, "allow_mismatch": rules.allow_mismatch,
                  "bootstrap_resamples": rules.n_boot, "seed": rules.seed},
        "summary": comparison.summary(),
        "regressed": len(comparison.regressed),
        "exit_code": comparison.exit_code,
        "warnings": comparison.warnings,
        "cases": cases,
    }
