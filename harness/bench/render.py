"""Text forms of a comparison: a terminal table and a Markdown CI comment."""

from __future__ import annotations

from tabulate import tabulate

from harness.bench.compare import (
    BASELINE_ONLY,
    CANDIDATE_ONLY,
    FAILED,
    IMPROVED,
    INCONCLUSIVE,
    REGRESSED,
    CaseVerdict,
    Comparison,
)

_MARK = {REGRESSED: "REGRESSED", FAILED: "FAILED", IMPROVED: "improved"}
_EMOJI = {REGRESSED: ":red_circle:", FAILED: ":x:", INCONCLUSIVE: ":grey_question:",
          IMPROVED: ":green_circle:"}


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _ratio(v: CaseVerdict) -> str:
    if v.time is None:
        return "-"
    ci = v.time.ci
    star = "" if ci.method == "bootstrap" else "~"
    return f"{ci.ratio:.3f} [{ci.low:.2f}, {ci.high:.2f}]{star}"


def _fastest(v: CaseVerdict) -> str:
    if v.time is None or v.time.min_ratio is None:
        return "-"
    p = f" p={v.time.p_value:.2f}" if v.time.p_value is not None else ""
    return f"{v.time.min_ratio:.3f}{p}"


def _mem(v: CaseVerdict) -> str:
    if v.memory is None:
        return "-"
    b, c = v.memory
    if b == c:
        return "="
    return f"{(c - b) / 2**10:+.1f} KiB"


def _flops(v: CaseVerdict) -> str:
    if not v.flops:
        return "-"
    changed = [f"{k.removeprefix('flops_')} {c - b:+.3g}" for k, (b, c) in v.flops.items()
               if b != c]
    return ", ".join(changed) if changed else "="


def _row(v: CaseVerdict) -> tuple[str, ...]:
    base = v.baseline.median if v.baseline else None
    cand = v.candidate.median if v.candidate else None
    verdict = _MARK.get(v.verdict, v.verdict)
    return (v.label, fmt_time(base), fmt_time(cand), _ratio(v), _fastest(v), _mem(v), _flops(v),
            verdict)


HEADERS = ("case", "baseline", "candidate", "median ratio [CI]", "fastest ratio", "peak mem",
           "FLOPs", "verdict")


def _headline(c: Comparison) -> str:
    summary = ", ".join(f"{n} {name}" for name, n in c.summary().items())
    rules = c.rules
    level = f"{rules.level:.0%}"
    rule = (f"regression = fastest call slower by more than {rules.threshold:.0%}, "
            f"significantly at {level}; peak memory +{rules.mem_threshold:.0%}; or any FLOP "
            "increase")
    return f"{len(c.cases)} cases: {summary or 'none'}  ({rule})"


def table(c: Comparison) -> str:
    """The terminal table: one line per case, reasons under regressions."""
    head, rule, *body = tabulate([_row(v) for v in c.cases], HEADERS,
                                 disable_numparse=True).splitlines()
    lines = [f"baseline:  {c.baseline.path}", f"candidate: {c.candidate.path}"]
    lines += [f"warning: {w}" for w in c.warnings]
    lines += [head, rule]
    for v, row in zip(c.cases, body, strict=True):
        lines.append(row)
        if v.reasons and v.verdict not in (BASELINE_ONLY, CANDIDATE_ONLY):
            lines.append("    " + "; ".join(v.reasons))
    lines.append(_headline(c))
    if any(v.time is not None and v.time.ci.method != "bootstrap" for v in c.cases):
        lines.append("~ interval from summary statistics (no raw samples)")
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(c: Comparison) -> str:
    """A CI comment: verdict first, regressions in full, every case in a folded table."""
    bad, unsure = c.regressed, c.count(INCONCLUSIVE)
    if bad:
        title = f"### :red_circle: {len(bad)} benchmark regression{'s' if len(bad) != 1 else ''}"
    elif unsure:
        title = (f"### :grey_question: no benchmark regressions found, but {unsure} "
                 f"case{'s' if unsure != 1 else ''} {INCONCLUSIVE}")
    else:
        title = "### :white_check_mark: no benchmark regressions"
    lines = [title, "", _md(_headline(c)), ""]
    lines += [f"> :warning: {_md(w)}" for w in c.warnings]
    if c.warnings:
        lines.append("")
    notable = [v for v in c.cases if v.verdict in _EMOJI]
    if notable:
        lines += ["| case | verdict | why |", "|---|---|---|"]
        lines += [f"| `{_md(v.label)}` | {_EMOJI[v.verdict]} {v.verdict} | "
                  f"{_md('; '.join(v.reasons))} |" for v in notable]
        lines.append("")
    lines += ["<details><summary>all cases</summary>", "",
              "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(_md(x) for x in _row(v)) + " |" for v in c.cases]
    lines += ["", "</details>", "",
              f"<sub>baseline `{_md(str(c.baseline.path))}` vs candidate "
              f"`{_md(str(c.candidate.path))}`; ratios are candidate / baseline: of the "
              f"fastest pass's median time with its {c.rules.level:.0%} bootstrap interval "
              "(~: from summary statistics), and of the fastest call (p: exact test over "
              f"the runs that it exceeds {c.rules.threshold:.0%})</sub>"]
    return "\n".join(lines)
