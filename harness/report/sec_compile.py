"""The "Compiled vs eager" section: each compiled case's time over its eager twin's, the
compile time, recompiles, and the layers that failed to compile with the reason."""

from __future__ import annotations

from harness.analysis.compiled import compile_pairs
from harness.report import fmt
from harness.report.context import Context
from harness.report.model import Block, Bullets, Cell, Paragraph, Section, Table

_ID, _TITLE = "compile", "Compiled vs eager"


def compiled(ctx: Context) -> Section | None:
    """Compiled cases against their eager twins; none when no case was compiled."""
    pairs = ctx.sort(ctx.per_run(compile_pairs))
    if pairs.empty:
        return None
    blocks: list[Block] = [Paragraph(
        "Cases run under torch.compile (sweep.compile; docs/compile.md) beside the same case "
        "run eager: compiled median / eager median (below 1: compiling made the call faster), "
        "the compile time of the case's first call (never in the samples) and the "
        "compilations seen while timing (above 0 marks the time unreliable). FLOPs and "
        "structure of a compiled case are the eager module's.")]
    ran = pairs[pairs["status"] == "ok"]
    if not ran.empty:
        columns = [*ctx.lead_columns(), "layer", "variant", "case", "eager", "compiled",
                   "compiled / eager", "compile", "graphs", "recompiles"]
        rows = []
        for _, row in ran.iterrows():
            ratio = "–" if fmt.missing(row["ratio"]) else f"{row['ratio']:.2f}x"
            rows.append([
                *ctx.lead(row), Cell(fmt.text(row["layer"])), Cell(fmt.text(row["variant"])),
                Cell(fmt.text(row["case"])), Cell(fmt.ms(row["eager_ms"])),
                Cell(fmt.ms(row["compiled_ms"])),
                Cell(ratio + (" (unreliable)" if row["unreliable"] else "")),
                Cell("–" if fmt.missing(row["compile_s"]) else f"{row['compile_s']:.2f} s"),
                Cell(fmt.num(row["compile_graphs"])), Cell(fmt.num(row["recompiles"])),
            ])
        blocks.append(Table(columns, rows, "Times are medians per call; a ratio marked "
                            "unreliable has a flagged time on either side (contention, "
                            "spread or a recompile)."))
    failed = pairs[pairs["status"] != "ok"]
    if not failed.empty:
        blocks.append(Paragraph(f"{len(failed)} compiled case(s) did not run:"))
        blocks.append(Bullets(tuple(
            f"{row['layer']} ({row['variant']}, {row['case']}): {row['status']}: "
            f"{fmt.text(row['message'])}" for _, row in failed.iterrows())))
    return Section(_ID, _TITLE, blocks)
