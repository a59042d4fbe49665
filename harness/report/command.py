"""``harness report RESULTS... --out DIR [--format html,pdf]`` and :func:`write_report`.

Kept light at import (argparse and pathlib only) because the CLI imports it to build its
parser; pandas, matplotlib and seaborn are imported when a report is written.

``harness run`` calls :func:`write_report` at its end; the CLI wires :func:`add_parser`.
Defaults: ``--out reports/<suite>/`` where <suite> is the first results' suite (the name in
the suite.yaml beside it, else the folder above a timestamped run folder, else the run
folder's name); ``--format html,pdf``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessInputError, run_parser, writable_dir

FORMATS = ("html", "pdf")
REPORTS_ROOT = Path("reports")

_EPILOG = """\
examples:
  harness report results/quick/20260101T120000Z
  harness report results/table1/*/results.parquet --out reports/table1 --format html
  harness report results/cpu-run results/gpu-run --out reports/compare   # compare runs
"""


def parse_formats(value: str | Iterable[str]) -> tuple[str, ...]:
    """"html,pdf" (or a sequence) -> ("html", "pdf"); anything else is bad input."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out = []
    for item in (str(i).strip().lower() for i in items):
        if not item:
            continue
        if item not in FORMATS:
            raise HarnessInputError(
                f"--format: unknown report format {item!r}; choose from {', '.join(FORMATS)} "
                "(comma-separated, e.g. --format html,pdf)"
            )
        if item not in out:
            out.append(item)
    if not out:
        raise HarnessInputError("--format: no format given; use html, pdf or html,pdf")
    return tuple(out)


def default_out_dir(sources: Sequence[Any], root: Path = REPORTS_ROOT) -> Path:
    """reports/<suite of the first results>/ (see the module docstring)."""
    from harness.report.inputs import suite_name

    first = sources[0] if sources else None
    if isinstance(first, (str, os.PathLike)):
        path = Path(first)
        name = suite_name(path)
        if not name:
            run_dir = path if path.is_dir() or path.suffix != ".parquet" else path.parent
            name = run_dir.name or "report"
        return root / name
    return root / "report"


def write_report(results: Any, out_dir: str | os.PathLike,
                 formats: str | Iterable[str] = FORMATS) -> list[Path]:
    """Write report.html and/or report.pdf for ``results`` into ``out_dir``.

    ``results``: a results file, a run directory, a results dataframe, or a sequence of
    them (several compare runs). Returns the files written. Each file is written to a
    temporary name and renamed, so a failed render never leaves half a report. Bad input
    raises HarnessInputError (one line).
    """
    chosen = parse_formats(formats)
    from harness.report.build import build_report
    from harness.report.html import render_html
    from harness.report.inputs import load_runs
    from harness.report.pdf import render_pdf

    df, runs = load_runs(results)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise HarnessInputError(f"{out}: exists and is not a directory; choose another --out")
    writable_dir(out, "the report there")
    report = build_report(df, runs)
    written = []
    for kind in FORMATS:
        if kind in chosen:
            tmp = out / f".report.{kind}.tmp-{os.getpid()}"
            if kind == "html":
                tmp.write_text(render_html(report), encoding="utf-8")
            else:
                render_pdf(report, tmp)
            written.append(out / f"report.{kind}")
            os.replace(tmp, written[-1])
    return written


def run_report(args: argparse.Namespace) -> int:
    """The ``harness report`` command: write the report, print where it is."""
    formats = parse_formats(args.format)
    out = Path(args.out) if args.out else default_out_dir(args.results)
    for path in write_report(args.results, out, formats):
        print(path)
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``report`` on the CLI's subparsers (``parser.add_subparsers()``)."""
    p = subparsers.add_parser(
        "report",
        help="write an HTML and PDF report from results files",
        description="Build a report from one or more results files (or run directories): "
        "a first screen with the answer (what ran, what it shows, time and memory vs n, "
        "Table 1 as marks, crossovers, ten findings), then Table 1 measured against the "
        "theory, scaling plots with theory slopes, fitted exponents, crossovers, FLOP "
        "reconciliation, memory and OOM frontier, roofline, environment and every case. "
        "Several results are set side by side (per layer, time and memory ratio vs n, who "
        "wins, each run's device, commit and date). The HTML is one self-contained file with "
        "interactive charts (no network); the PDF needs no LaTeX. Reads only the results, so "
        "it works without torch or a GPU.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="a results.parquet file or a run directory holding one; repeatable")
    p.add_argument("--out", metavar="DIR",
                   help="output directory (default: reports/<suite of the first results>/)")
    p.add_argument("--format", default="html,pdf", metavar="FORMATS",
                   help="comma-separated: html, pdf (default: html,pdf)")
    p.set_defaults(func=run_report)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (``python -m harness.report.command``), same as ``harness report``."""
    parser = argparse.ArgumentParser(prog="harness")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run_parser(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
