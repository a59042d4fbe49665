"""Tests for harness.report: HTML and PDF reports built from results files only.

Most tests use synthetic results written with RunDirectory (fast, known content); one
module-scoped real run of a tiny suite checks that every section with content appears for
real rows.
PDF rendering is the slow part, so only a few tests render a PDF.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CONTENDED, REPO
from pypdf import PdfReader

from harness.errors import HarnessInputError
from harness.report import add_parser, default_out_dir, parse_formats, write_report
from harness.report.build import SECTIONS, build_report
from harness.report.charts_sections import roofline_chart, scaling_charts
from harness.report.command import main as report_main
from harness.report.inputs import load_runs
from harness.report.model import Table
from harness.report.style import layer_colours, make_look
from harness.results import RunDirectory

TITLES = ("Summary", "Runs compared", "What was run", "Table 1, measured vs theory",
          "Scaling plots", "Fitted exponents", "Crossovers", "Table 1, decoding",
          "Compiled vs eager", "Other attention forms: relative, local 2D, cross",
          "FLOP reconciliation", "Memory and OOM frontier", "Roofline", "Environment",
          "Per-case results")
#: Sections only results that hold something for them get: several runs, decode cases,
#: compiled cases, relative / local 2D / cross attention.
OPTIONAL = ("Runs compared", "Table 1, decoding", "Compiled vs eager",
            "Other attention forms: relative, local 2D, cross")
ONE_RUN = [t for t in TITLES if t not in OPTIONAL]

# --------------------------------------------------------------------------- synthetic data

_LAYERS = {  # layer -> (variant, extra params, FLOPs(n, d), activation bytes(n, d), path(n))
    "lstm": ("fused", {}, lambda n, d: 16 * n * d * d, lambda n, d: 16 * n * d, lambda n: n),
    "attention": ("matmul", {"heads": 4}, lambda n, d: 8 * n * d * d + 4 * n * n * d,
                  lambda n, d: 4 * n * n * 4 + 16 * n * d, lambda n: 1),
    "lightconv": ("conv1d", {"heads": 4, "kernel": 7}, lambda n, d: 14 * n * d,
                  lambda n, d: 8 * n * d, lambda n: -(-(n - 1) // 3)),
}


def _row(layer: str, n: int, d: int, index: int, *, device_name: str, slow: float,
         status: str = "ok", message: str | None = None, **extra: object) -> dict:
    variant, params, flops, mem, path = _LAYERS[layer]
    f = float(flops(n, d))
    ok = status == "ok"
    row: dict = {
        "case_index": index, "case_id": f"{layer}-{n}-{d}-{index}", "label": f"{layer}-n{n}-d{d}",
        "status": status, "message": message, "layer": layer, "variant": variant,
        "seq_len": n, "d_model": d, "heads": params.get("heads"), "kernel": params.get("kernel"),
        "window": None, "causal": False, "block": False, "batch": 1, "dtype": "float32",
        "device": "cpu", "mode": "forward", "seed": 0,
        "time_ms_median": f / 1e10 * 1e3 * slow + 0.01 if ok else None,
        "time_ms_iqr": 0.001 if ok else None, "time_samples": 9 if ok else None,
        "flops_analytic": f, "flops_useful_analytic": f, "flops_torch": f if ok else None,
        "flops_fvcore": f if ok else None,
        "peak_mem_bytes": float(mem(n, d) * 4) if ok else None,
        "act_mem_analytic_bytes": float(mem(n, d) * 4),
        "path_length_analytic": float(path(n)),
        "path_length_measured": float(path(n)) if ok and n <= 128 else None,
        "seq_ops_analytic": float(n if layer == "lstm" else 1),
        "seq_ops_measured": float(n if layer == "lstm" else 1) if ok and n <= 128 else None,
        "flops_per_s": f / (f / 1e10 * slow + 1e-5) if ok else None,
        "arithmetic_intensity": f / (mem(n, d) * 4 + 3 * n * d * 4) if ok else None,
        "env_device_name": device_name, "env_torch_version": "2.13.0+cpu",
        "env_torch_threads": 2, "env_time_utc": "2026-01-02T03:04:05+00:00",
        "env_peak_flops": 1e11, "env_peak_bytes_per_s": 3.8e10,
        "env_peak_source": "probe (test)",
    }
    row.update(extra)
    return row


def synthetic_rows(*, device_name: str = "Test CPU", slow: float = 1.0, failures: bool = True,
                   layers: tuple[str, ...] = tuple(_LAYERS), ds: tuple[int, ...] = (64, 256),
                   ns: tuple[int, ...] = (64, 128, 256, 512)) -> list[dict]:
    rows = []
    for layer in layers:
        for d in ds:
            for n in ns:
                rows.append(_row(layer, n, d, len(rows), device_name=device_name, slow=slow))
    if failures:
        rows.append(_row("attention", 4096, 256, len(rows), device_name=device_name,
                         slow=slow, status="oom", message="CUDA out of memory (synthetic)"))
        rows.append(_row("lightconv", 1024, 64, len(rows), device_name=device_name,
                         slow=slow, status="error", message="RuntimeError: synthetic failure"))
    return rows


def write_run(path: Path, rows: list[dict], suite: str | None = "synthetic") -> Path:
    run = RunDirectory(path)
    run.create()
    for row in rows:
        run.write_case(row, [0.001, 0.0011])
    run.merge()
    if suite:
        (path / "suite.yaml").write_text(f"name: {suite}\ndescription: synthetic test rows\n")
    return path


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    return write_run(tmp_path / "results" / "synthetic" / "20260102T030405Z", synthetic_rows())


def _html(paths, out: Path) -> str:
    written = write_report(paths, out, formats=("html",))
    assert written == [out / "report.html"]
    return written[0].read_text(encoding="utf-8")


def _sections(text: str) -> list[str]:
    return re.findall(r"<h2>\d+\. ([^<]+)</h2>", text)


def data_of(spec: dict, layer: dict) -> list[dict]:
    """The rows a layer of a chart spec draws: its named data set (or inline values)."""
    data = layer.get("data", {})
    return list(spec.get("datasets", {}).get(data.get("name"), data.get("values", [])))


def panels_of(spec: dict) -> list[dict]:
    """The panels of a chart, row by row."""
    if "vconcat" in spec:
        return [p for row in spec["vconcat"] for p in row["hconcat"]]
    return list(spec["hconcat"])


def points_of(spec: dict, panel: dict) -> list[dict]:
    """The series points of a panel (the data of its layers that carry ``hollow``)."""
    for layer in panel["layer"]:
        rows = data_of(spec, layer)
        if rows and "hollow" in rows[0] and layer["mark"]["type"] == "point":
            return rows
    return []


# --------------------------------------------------------------------------- a real small run

TINY = """\
name: tiny-report
device: cpu
dtype: float32
mode: forward
batch: 1
seed: 0
layers: [lstm, attention]
sweep:
  seq_len: [8, 16, 32]
  d_model: [8]
  heads: [2]
  kernel: [3]
measure:
  time_budget_s: 0.01
  min_samples: 3
  warmup_s: 0.0
  timeout_s: 60
  structure_max_n: 16
"""


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from harness.measure.env import environment
    from harness.run_command import exec_settings
    from harness.suite import expand, load_suite
    from harness.sweep import run_cases

    root = tmp_path_factory.mktemp("real")
    (root / "tiny.yaml").write_text(TINY)
    suite = load_suite(root / "tiny.yaml")
    run = RunDirectory(root / "run")
    run.create()
    (run.path / "suite.yaml").write_text(suite.to_yaml())
    settings = replace(exec_settings(suite), env=environment("cpu"))
    run_cases(expand(suite), run, lambda planned: settings, timeout_s=60, isolate=False)
    run.merge()
    return run.path


@pytest.fixture(scope="module")
def real_report(real_run: Path) -> list[Path]:
    return write_report([real_run], real_run.parent / "report")


def test_every_section_with_content_appears_for_a_real_small_run(real_report):
    paths = real_report
    assert [p.name for p in paths] == ["report.html", "report.pdf"]
    text = paths[0].read_text(encoding="utf-8")
    assert _sections(text) == ONE_RUN and len(SECTIONS) == len(TITLES)
    assert "Complexity report: tiny-report" in text
    assert "data:image/png" not in text  # every figure is a chart
    for layer in ("lstm", "attention"):
        assert f"<td>{layer}</td>" in text
    assert "6 cases (6 ran) of 2 layers" in text  # the first screen's answer
    # headline, crossovers, scaling along n, memory, roofline
    assert text.count('class="vl"') == 5
    pdf = paths[1].read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF")


# --------------------------------------------------------------------------- HTML contract


def _outside_scripts(text: str) -> str:
    return re.sub(r"<script\b[^>]*>.*?</script>", "", text, flags=re.S | re.I)


def test_html_is_self_contained_with_no_network_reference(real_report):
    text = real_report[0].read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", text, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:|//)", text, re.I)
    assert "<link" not in text.lower() and "@import" not in text
    tags = re.findall(r"<script\b[^>]*>", text, re.I)
    assert tags and all("src" not in t.lower() for t in tags)  # every script is inline
    page = _outside_scripts(text)
    assert "http://" not in page and "https://" not in page
    assert not re.findall(r"""src=""", page)  # no image: every figure is a chart
    hrefs = re.findall(r"""href="([^"]*)\"""", page)
    assert hrefs and all(h.startswith("#") for h in hrefs)  # the table of contents only
    specs = re.findall(r'<script type="application/json" id="[^"]+">(.*?)</script>', text, re.S)
    assert len(specs) == text.count('class="vl"') == 5
    for spec in specs:  # data inlined as named data sets, never loaded from a URL
        assert '"url"' not in spec and "http" not in spec and '"datasets"' in spec


EVIL = "<script>alert('x')</script>"


@pytest.fixture(scope="module")
def tiny_reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Path]]:
    """A small run whose strings try to inject HTML (and mathtext), rendered twice."""
    root = tmp_path_factory.mktemp("tiny")
    rows = synthetic_rows(layers=("lstm", "lightconv"), ds=(64,), ns=(64, 128, 256))
    for row in rows:
        if row["layer"] == "lightconv":
            row.update(variant="a&b<i>$x$</i>", label=f"{EVIL}-{row['case_index']}")
    rows[0].update(status="error", message=f"boom {EVIL} \"quoted\" $\\alpha$",
                   env_device_name="<img src=x onerror=alert(1)>")
    run = write_run(root / "evil", rows, suite=None)
    return write_report([run], root / "a"), write_report([run], root / "b")


def test_every_string_from_the_results_is_escaped(tiny_reports):
    paths = tiny_reports[0]  # the PDF must survive '$' (mathtext) too
    text = paths[0].read_text(encoding="utf-8")
    assert "<script>alert" not in text.lower() and "<img src=x" not in text and "<i>" not in text
    assert "<script" not in _outside_scripts(text).lower()  # only the report's own scripts
    assert "\\u003cscript\\u003ealert(" in text  # inside the chart specs: JSON escapes
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in text
    assert "a&amp;b&lt;i&gt;$x$&lt;/i&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert paths[1].read_bytes().startswith(b"%PDF")


def test_two_renders_of_the_same_results_are_identical(tiny_reports):
    first, second = ([p.read_bytes() for p in paths] for paths in tiny_reports)
    assert first[0] == second[0]  # HTML, PNGs included
    assert first[1] == second[1]  # PDF


# --------------------------------------------------------------------------- PDF


def test_pdf_has_pages_that_poppler_renders(real_report, tmp_path):
    pdf = real_report[1]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    assert b"/CreationDate" not in data  # no date: renders are reproducible
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) not installed")
    proc = subprocess.run(["pdftoppm", "-r", "20", "-png", str(pdf), str(tmp_path / "page")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) >= 4 and all(p.stat().st_size > 500 for p in pages)


# --------------------------------------------------------------------------- content


@pytest.fixture
def failed_only(tmp_path: Path) -> Path:
    rows = [_row(layer, n, 64, i, device_name="x", slow=1.0, status="error",
                 message=f"RuntimeError: broken {layer}")
            for i, (layer, n) in enumerate((name, n) for name in _LAYERS for n in (64, 128))]
    rows[0].update(status="oom", message="out of memory")
    return write_run(tmp_path / "results" / "failing" / "20260101T000000Z", rows)


def test_failed_only_results_still_give_a_report_that_says_so(failed_only, tmp_path):
    html_path, pdf_path = write_report([failed_only], tmp_path / "out")
    text = html_path.read_text(encoding="utf-8")
    assert "No case succeeded: all 6 cases ended without status ok (1 oom, 5 error)" in text
    assert _sections(text) == ONE_RUN
    assert "data:image/png" not in text and 'class="vl"' not in text  # nothing ran: no chart
    assert "there is no scaling to plot" in text
    assert "nothing was fitted" in text.lower()
    for layer in _LAYERS:  # the per-case table shows every failed case with its message
        assert f"RuntimeError: broken {layer}" in text
    assert pdf_path.read_bytes().startswith(b"%PDF")


def test_failed_rows_are_listed_never_plotted(tmp_path, tiny_reports):
    rows = synthetic_rows()
    rows[-1].update(time_ms_median=1e9, peak_mem_bytes=1e15)  # an error row with numbers
    df, _ = load_runs([write_run(tmp_path / "r", rows)])
    (chart,) = scaling_charts(df, "seq_len", make_look(df, ["r"]))
    drawn = [p for panel in panels_of(chart.spec) for p in points_of(chart.spec, panel)
             if panel["title"]["text"].startswith(("time", "memory"))]
    assert {p["layer"] for p in drawn} == {"lstm", "attention", "lightconv"}
    assert max(p["value"] for p in drawn) < 1e8  # the error row's numbers are not drawn
    assert all(p["n"] != 1024 for p in drawn if p["layer"] == "lightconv")
    text = tiny_reports[0][0].read_text(encoding="utf-8")
    assert 'class="t-failed">error</td>' in text and "boom &lt;script&gt;" in text


def test_two_results_files_compare_in_one_report(tmp_path):
    small = {"layers": ("lstm", "attention"), "ds": (64,), "ns": (64, 128, 256)}
    a = write_run(tmp_path / "results" / "synthetic" / "20260101T000000Z",
                  synthetic_rows(device_name="CPU A", failures=False, **small))
    b = write_run(tmp_path / "results" / "synthetic" / "20260102T000000Z",
                  synthetic_rows(device_name="GPU B", slow=0.25, failures=False, **small))
    df, runs = load_runs([a, b])
    names = ["synthetic/20260101T000000Z", "synthetic/20260102T000000Z"]
    assert [r.name for r in runs] == names and list(df["run"].unique()) == names
    report = build_report(df, runs)
    t1 = next(s for s in report.sections if s.id == "table1")
    table = next(b for b in t1.blocks if isinstance(b, Table))
    assert table.columns[0] == "run" and len(table.rows) == 4  # 2 layers x 2 runs, not mixed
    assert {r[0].text for r in table.rows} == set(names)
    text = _html([a, b], tmp_path / "out")
    assert "<th>run</th>" in text and "Findings for synthetic/20260102T000000Z" in text
    assert "CPU A" in text and "GPU B" in text
    same = load_runs([a, a])[1]
    assert [r.name for r in same] == [names[0], f"{names[0]} #2"]  # names stay distinct


def test_missing_metric_columns_still_render(tmp_path):
    keep = ["case_index", "case_id", "label", "status", "message", "layer", "variant",
            "seq_len", "d_model", "heads", "kernel", "window", "causal", "block", "batch",
            "dtype", "device", "mode", "seed", "time_ms_median"]
    df = pd.DataFrame(synthetic_rows(ds=(64,)))[keep]
    df.insert(0, "schema_version", 1)
    text = _html([df], tmp_path / "out")
    assert _sections(text) == ONE_RUN
    assert "No analytic FLOP count is recorded" in text
    assert "there is no roofline to draw" in text


# --------------------------------------------------------------------------- unreliable timings



def disturbed_rows(flag: dict[str, str | None], **kwargs: object) -> list[dict]:
    """synthetic_rows with the cases labelled in ``flag`` marked unreliable (value: the
    time_note, or None for a file written before time_note existed; then no row has one)."""
    rows = synthetic_rows(**kwargs)
    notes = any(v is not None for v in flag.values())
    for row in rows:
        if row["status"] != "ok":
            continue
        row["time_unreliable"] = row["label"] in flag
        if notes:
            row["time_note"] = flag.get(row["label"])
    return rows


def _summary(html: str, sid: str = "runs") -> str:
    """A section's HTML: by default 'What was run', where disturbed cases are listed."""
    start = html.index(f'<section id="{sid}">')
    return html[start:html.index("</section>", start)]


def test_disturbed_timings_are_said_first_with_the_cases_and_their_notes(tmp_path):
    flag = {"lstm-n512-d64": CONTENDED, "attention-n512-d256": CONTENDED}
    run = write_run(tmp_path / "r", disturbed_rows(flag, failures=False))
    report = build_report(*load_runs([run]))
    said = report.sections[0].blocks[1]  # the first screen, right below the answer
    assert said.text.startswith("2 of 24 timings were disturbed") and "hollow" in said.text
    first = _section(report, "runs").blocks[0]  # the details: first in 'What was run'
    assert first.kind == "alert" and first.text == (
        "Timings disturbed: 2 of 24 cases were measured while other processes competed for "
        "the CPU; they are drawn hollow and excluded from fits and crossovers of time:")
    assert _section(report, "runs").blocks[1].items == tuple(f"{k}: {v}" for k, v in flag.items())
    summary = _summary(_html([run], tmp_path / "out"))
    assert summary.index("Timings disturbed") < summary.index("This report checks")
    assert "<li>lstm-n512-d64: contended: threads waited" in summary
    assert "<li>attention-n512-d256: contended:" in summary
    text = _html([run], tmp_path / "again")
    assert "1 unreliable point excluded" in text  # Table 1, exponents, findings


def test_no_banner_and_no_hollow_note_when_every_timing_is_reliable(tmp_path):
    run = write_run(tmp_path / "r", disturbed_rows({}, failures=False))
    assert "time_unreliable" in load_runs([run])[0].columns
    text = _html([run], tmp_path / "out")
    assert "Timings disturbed" not in text and "unreliable" not in _summary(text)
    assert "disturbed" not in _summary(text, "summary")
    assert "Hollow markers" not in text and "unreliable point" not in text


def test_the_banner_lists_at_most_ten_cases_and_counts_each_cause(tmp_path):
    labels = [f"{layer}-n{n}-d{d}" for layer in ("lstm", "attention") for d in (64, 256)
              for n in (64, 128, 256)]
    flag = {label: CONTENDED for label in labels}
    flag["lstm-n64-d64"] = "spread: IQR/median 0.23"
    flag["lstm-n128-d64"] = "throttled: GPU clock 40% below its base"
    df, runs = load_runs([pd.DataFrame(disturbed_rows(flag)).assign(schema_version=1)])
    alert, listed = _section(build_report(df, runs), "runs").blocks[:2]
    assert alert.text.startswith(
        "Timings disturbed: 12 of 24 cases had unreliable timings (1 with samples spread too "
        "widely, 1 measured while the GPU was throttled, 10 measured while other processes "
        "competed for the CPU); they are drawn hollow")
    assert len(listed.items) == 11 and listed.items[0] == "lstm-n64-d64: spread: IQR/median 0.23"
    assert listed.items[-1].startswith("and 2 more")


def test_old_results_without_time_note_still_name_the_disturbed_cases(tmp_path):
    rows = disturbed_rows({"lstm-n256-d64": None, "lstm-n512-d64": None}, failures=False)
    spread = next(r for r in rows if r["label"] == "lstm-n256-d64")
    spread.update(time_ms_median=2.0, time_ms_iqr=0.5)
    next(r for r in rows if r["label"] == "lstm-n512-d64").update(time_ms_iqr=None)
    run = write_run(tmp_path / "r", rows)
    df, runs = load_runs([run])
    # files written before time_note existed lack it; newer ones hold None where no reason
    assert ("time_note" not in df.columns or df["time_note"].isna().all())
    assert df["time_unreliable"].sum() == 2
    alert, listed = _section(build_report(df, runs), "runs").blocks[:2]
    assert alert.text.startswith("Timings disturbed: 2 of 24 cases had timings flagged "
                                 "unreliable with no reason recorded; they are drawn hollow")
    assert listed.items == ("lstm-n256-d64: no reason recorded (IQR/median 0.25)",
                            "lstm-n512-d64: no reason recorded")
    assert "<li>lstm-n512-d64: no reason recorded</li>" in _html([run], tmp_path / "out")


def test_unreliable_time_points_are_drawn_hollow_in_the_layer_colour(tmp_path):
    flag = {"lstm-n512-d64": CONTENDED}
    df, runs = load_runs([write_run(tmp_path / "r", disturbed_rows(flag, failures=False))])
    look = make_look(df, [r.name for r in runs])
    (chart, *_) = scaling_charts(df, "seq_len", look)
    assert "Hollow points: unreliable timing" in chart.caption
    hollow = [(panel["title"]["text"], p) for panel in panels_of(chart.spec)
              for p in points_of(chart.spec, panel) if p["hollow"]]
    assert len(hollow) == 1  # the time panel only: FLOPs and memory are not disturbed
    ((title, point),) = hollow
    assert title.startswith("time vs n · d_model=64")
    assert (point["layer"], point["n"]) == ("lstm", 512.0) and "unreliable" in point["time"]
    time_panel = panels_of(chart.spec)[0]
    marks = [lay for lay in time_panel["layer"] if lay["mark"]["type"] == "point"]
    drawn_hollow = [lay for lay in marks if lay["mark"].get("fill") == "white"]
    assert len(drawn_hollow) == 1 and drawn_hollow[0]["mark"]["filled"] is False
    colour = drawn_hollow[0]["encoding"]["color"]["scale"]
    assert colour["range"][colour["domain"].index(point["label"])] == look.colours["lstm"]
    roof = roofline_chart(df, look)
    assert roof is not None and "Hollow points" in roof.caption
    shaky = [p for panel in panels_of(roof.spec) for p in points_of(roof.spec, panel)
             if p["hollow"]]
    assert [p["case"] for p in shaky] == ["lstm-n512-d64"]
    clean = disturbed_rows({}, failures=False)
    df, runs = load_runs([write_run(tmp_path / "c", clean)])
    (chart, *_) = scaling_charts(df, "seq_len", make_look(df, [r.name for r in runs]))
    assert not [p for panel in panels_of(chart.spec) for p in points_of(chart.spec, panel)
                if p["hollow"]]
    assert "Hollow" not in chart.caption


def test_layer_colours_are_fixed_and_distinct():
    def colours(*layers: str, **columns: object) -> dict[str, str]:
        return layer_colours(pd.DataFrame({"layer": list(layers), **columns}))

    alone = colours("lstm")
    many = colours("dynamicconv", "attention", "lstm", "rnn", "gru", "conv", "conv_dilated",
                   "conv_separable", "attention_sdpa", "attention_local", "lightconv")
    assert alone["lstm"] == many["lstm"] == "#0173b2"  # seaborn colorblind's blue, as before
    assert len(set(many.values())) == 11
    assert colours("zeta", "alpha").keys() == {"alpha", "zeta"}
    declared = colours("zeta", "alpha", theory_complexity=["O(n)", None],
                       layer_colour=["#123456", None])
    assert declared["zeta"] == "#123456" and declared["alpha"] != "#123456"


# --------------------------------------------------------------------------- bad input and CLI


def _write_table(path: Path, metadata: dict | None) -> Path:
    table = pa.table({"a": [1]})
    if metadata is not None:
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, path)
    return path


def test_bad_results_raise_one_line_input_errors(tmp_path, synthetic):
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    foreign = _write_table(tmp_path / "foreign.parquet", None)
    newer = _write_table(tmp_path / "newer.parquet", {b"harness.schema_version": b"99"})
    old = _write_table(tmp_path / "cols.parquet", {b"harness.schema_version": b"1"})
    cases = {tmp_path / "missing.parquet": "no such results file", empty: "empty file",
             corrupt: "not a readable Parquet", foreign: "no schema version",
             newer: "newer than this harness", old: "missing columns"}
    for path, needle in cases.items():
        with pytest.raises(HarnessInputError, match=needle) as info:
            write_report([synthetic, path], tmp_path / "out")
        assert "\n" not in str(info.value)
    assert not (tmp_path / "out" / "report.html").exists()  # nothing half-written
    with pytest.raises(HarnessInputError, match="unknown report format 'docx'"):
        write_report([synthetic], tmp_path / "out", formats="html,docx")
    (tmp_path / "file").write_text("x")
    with pytest.raises(HarnessInputError, match="not a directory"):
        write_report([synthetic], tmp_path / "file")
    with pytest.raises(HarnessInputError, match="no results given"):
        write_report([], tmp_path / "out")


def test_command_exit_codes_and_parser(tmp_path, synthetic, failed_only, capsys):
    assert report_main(["report", str(tmp_path / "nope.parquet"), "--out",
                        str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness: error: ") and "\n" not in err and "no such" in err
    assert report_main(["report", str(failed_only), "--out", str(tmp_path / "o"),
                        "--format", "html"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "o" / "report.html")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", "a", "b", "--out", "x"])
    assert args.results == ["a", "b"] and args.format == "html,pdf" and callable(args.func)
    assert parse_formats("PDF, html,pdf") == ("pdf", "html")
    assert default_out_dir([str(synthetic)]) == Path("reports/synthetic")
    bare = tmp_path / "results" / "quick" / "20260101T000000Z"
    bare.mkdir(parents=True)
    assert default_out_dir([str(bare / "results.parquet")]) == Path("reports/quick")


def test_report_works_without_torch(tmp_path):
    """harness.report imports with torch made unimportable, and renders a report when
    torch is absent (a finder that refuses it: scipy, under seaborn, trips over the
    sys.modules['torch'] = None trick itself, so rendering is checked the real way)."""
    rows = synthetic_rows(layers=("attention",), ds=(64,), ns=(64, 128))
    run = write_run(tmp_path / "run", rows)
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None
        import harness.report, harness.report.command, harness.report.build
        import harness.report.html, harness.report.pdf, harness.report.inputs
        del sys.modules["torch"]

        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}")
                return None

        sys.meta_path.insert(0, NoTorch())
        paths = harness.report.write_report([{str(run)!r}], {str(tmp_path / "out")!r},
                                            formats=("html",))
        assert [p.name for p in paths] == ["report.html"], paths
        loaded = [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
        assert not loaded, loaded
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


# --------------------------------------------------------------------------- first screen


def _section(report, sid: str):
    return next(s for s in report.sections if s.id == sid)


def _charts(section) -> list:
    from harness.report.model import Chart

    return [b for b in section.blocks if isinstance(b, Chart)]


def test_the_quick_shape_gives_no_verdict_from_two_points(tmp_path):
    """Two sequence lengths and one d (the quick suite): every growth check is inconclusive
    in the first screen's marks and in the full Table 1; only measured == analytic path
    lengths (no growth claim) may agree."""
    rows = synthetic_rows(ds=(64,), ns=(64, 256), failures=False)
    report = build_report(*load_runs([write_run(tmp_path / "q", rows)]))
    summary = _section(report, "summary")
    compact = next(b for b in summary.blocks if isinstance(b, Table) and b.compact)
    for row in compact.rows:
        for title, cell in zip(compact.columns, row, strict=True):
            if title != "path = analytic":
                assert cell.tone not in ("agrees", "disagrees"), (title, cell)
    full = next(b for b in _section(report, "table1").blocks if isinstance(b, Table))
    judged = [(full.columns[i], c.text) for r in full.rows for i, c in enumerate(r)
              if c.tone in ("agrees", "disagrees")]
    assert all(col == "max path length" and "= analytic" in txt for col, txt in judged)
    answer = summary.blocks[0].text
    assert "0 disagree" in answer and "too few points" in answer  # the cause, counted
    # the same rows at three n are judged
    three = synthetic_rows(ds=(64,), ns=(64, 128, 256), failures=False)
    report = build_report(*load_runs([write_run(tmp_path / "t", three)]))
    compact = next(b for b in _section(report, "summary").blocks
                   if isinstance(b, Table) and b.compact)
    assert any(c.tone == "agrees" for r in compact.rows for c in r[2:4])


def test_first_screen_answers_with_a_chart_marks_and_at_most_ten_findings(tmp_path):
    from harness.report.model import Bullets, Chart

    rows = synthetic_rows()
    rows[7].update(time_unreliable=True, time_note="contended: synthetic")  # lstm n=512 d=256
    report = build_report(*load_runs([write_run(tmp_path / "r", rows)]))
    summary = _section(report, "summary")
    answer = summary.blocks[0]
    assert answer.kind == "answer" and 3 <= answer.text.count(". ") + 1 <= 6
    assert isinstance(summary.blocks[2], Chart)  # the headline right after the answer
    headline, cross = _charts(summary)
    spec = headline.spec
    assert [p["title"]["text"] for p in spec["hconcat"]] == ["Time vs n", "Peak memory vs n"]
    time_layers = spec["hconcat"][0]["layer"]
    guides = {v["guide"] for v in data_of(spec, time_layers[0])}
    assert guides == {"∝ n", "∝ n²"}  # lstm/lightconv linear, attention quadratic
    points = data_of(spec, time_layers[-1])
    hollow = [p for p in points if p["hollow"]]
    assert [(p["layer"], p["n"]) for p in hollow] == [("lstm", 512.0)]
    assert "unreliable" in hollow[0]["time"] and "case" in hollow[0]
    assert any(layer.get("params", [{}])[0].get("bind") == "legend" for layer in time_layers)
    rules = [data_of(cross.spec, lay)[0] for lay in cross.spec["hconcat"][0]["layer"]
             if lay["mark"]["type"] == "rule" and "n" in data_of(cross.spec, lay)[0]]
    assert {r["label"] for r in rules} == {"n = d", "n = 2d"}
    assert {r["n"] for r in rules} == {256.0, 512.0}  # d = 256 has as many n as d = 64
    bullets = [b for b in summary.blocks if isinstance(b, Bullets)]
    assert len(bullets) == 1 and 1 <= len(bullets[0].items) <= 10
    assert "did not run" in bullets[0].items[0]  # failures rank first


def test_chart_specs_cannot_break_out_of_their_script_element():
    from harness.report.html import spec_json
    from harness.report.model import Chart

    evil = "</script><script>alert(1)</script>&<!--"
    text = str(spec_json(Chart({"data": {"values": [{"a": evil}]}}, "", "")))
    assert "<" not in text and ">" not in text and "&" not in text
    import json

    assert json.loads(text)["data"]["values"][0]["a"] == evil


def test_runs_compared_side_by_side_with_identity_ratios_and_winner(tmp_path):
    small = {"layers": ("lstm", "attention"), "ds": (64,), "ns": (64, 128, 256),
             "failures": False}
    a = write_run(tmp_path / "a", synthetic_rows(device_name="CPU A", **small))
    b = write_run(tmp_path / "b", synthetic_rows(device_name="GPU B", slow=0.25, **small))
    report = build_report(*load_runs([a, b]))
    section = _section(report, "compare")
    assert "differ in device name" in section.blocks[0].text
    identity, ratios = (x for x in section.blocks if isinstance(x, Table))
    assert [r[1].text for r in identity.rows] == ["CPU A", "GPU B"]
    assert ratios.columns[:4] == ["run", "layer · variant", "time ratio (run ÷ baseline)",
                                  "faster"]
    assert {r[3].text for r in ratios.rows} == {"other run at every n"}
    assert all(r[2].text.endswith("(3 n)") for r in ratios.rows)
    assert {(r[4].text, r[5].text) for r in ratios.rows} == {("1× (3 n)",
                                                             "neither (within 1%)")}
    (chart,) = _charts(section)
    values = [v for lay in chart.spec["hconcat"][0]["layer"]
              for v in data_of(chart.spec, lay) if "series" in v]
    assert values and all(0.2 < v["value"] < 0.5 for v in values)  # 0.25x + fixed overhead
    answer = _section(report, "summary").blocks[0].text
    assert f"Against {a.name}, {b.name} is faster in time for 2 of 2 layer variants" in answer
    one = build_report(*load_runs([a]))
    assert "compare" not in [s.id for s in one.sections]  # one run: no such section


def _nav(text: str) -> list[str]:
    return re.findall(r'<a href="#[^"]+">\d+\. ([^<]+)</a>', text)


def test_sections_with_nothing_to_show_are_absent_from_nav_and_pdf(tmp_path):
    small = {"layers": ("lstm", "attention"), "ds": (64,), "ns": (64, 128, 256),
             "failures": False}
    plain = synthetic_rows(**small)
    extra = [dict(row, case_index=len(plain) + i, case_id=f"{row['case_id']}-x",
                  **({"compile": True} if i % 2 else {"mode": "decode"}))
             for i, row in enumerate(plain)]
    one = write_run(tmp_path / "one", plain)
    two = write_run(tmp_path / "two", plain + extra)
    expected = {"one": ONE_RUN, "both": [t for t in TITLES if not t.startswith("Other")]}
    for name, runs in (("one", [one]), ("both", [one, two])):
        html, pdf = write_report(runs, tmp_path / f"out-{name}")
        text = html.read_text(encoding="utf-8")
        assert _sections(text) == _nav(text) == expected[name]
        first = PdfReader(pdf).pages[0].extract_text()
        contents = first[first.index("Contents:"):].replace("\n", " ")
        for title in OPTIONAL:
            assert (title in contents) == (title in expected[name]), (name, title)


def test_the_table1_example_stays_one_file_under_5_mb(tmp_path):
    """The committed Table-1 baseline (140 cases) as HTML: charts and bundle inlined,
    still under the 5 MB a report may weigh."""
    baseline = REPO / "results" / "baselines" / "table1-cpu"
    (page,) = write_report([baseline], tmp_path, formats=("html",))
    size = page.stat().st_size
    assert 1_000_000 < size < 5_000_000, size
    text = page.read_text(encoding="utf-8")
    # headline, crossovers, scaling along n (d 128, 512), along d (4 of 5 n in two charts),
    # memory, roofline: all charts, no PNG
    assert text.count('class="vl"') == 7 and text.count("<script>") == 2
    assert "data:image/png" not in text
