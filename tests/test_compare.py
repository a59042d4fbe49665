"""harness compare: reading both formats, the statistics, verdicts, output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import CONTENDED

from harness.bench.command import main
from harness.bench.compare import (
    BASELINE_ONLY,
    CANDIDATE_ONLY,
    IMPROVED,
    INCONCLUSIVE,
    MISMATCH,
    REGRESSED,
    UNCHANGED,
    Rules,
    compare_runs,
    contended,
    to_dict,
)
from harness.bench.loaders import CaseRecord, PassStats, RunRecord, identity, load
from harness.bench.render import markdown, table
from harness.bench.stats import bootstrap_ratio, summary_ratio, z_value
from harness.errors import HarnessInputError
from harness.results import RunDirectory

# --- helpers ---------------------------------------------------------------------------------


def _samples(median: float, spread: float, n: int = 40, seed: int = 0) -> np.ndarray:
    """Positive, skewed timing-like samples around ``median`` (log-normal noise)."""
    rng = np.random.default_rng(seed)
    return median * np.exp(rng.normal(0.0, spread, n))


def _row(index: int, layer: str, seq_len: int, **extra: object) -> dict[str, object]:
    row: dict[str, object] = {
        "case_index": index, "case_id": f"{layer}{seq_len}", "label": f"{layer}-n{seq_len}-d8",
        "status": "ok", "message": "", "layer": layer, "variant": "fused", "seq_len": seq_len,
        "d_model": 8, "heads": None, "kernel": None, "window": None, "causal": False,
        "block": False, "batch": 1, "dtype": "float32", "device": "cpu", "mode": "forward",
        "seed": 0, "peak_mem_bytes": 100_000, "flops_analytic": 4096, "flops_fvcore": 4096,
        "flops_torch": 4096, "env_time_utc": "2025-01-01T00:00:00+00:00",
    }
    row.update(extra)
    return row


def write_run(path: Path, cases: dict[tuple[str, int], np.ndarray | None],
              **extra: object) -> Path:
    """A harness run folder with one case per (layer, seq_len) and its raw samples."""
    run = RunDirectory(path)
    run.create()
    for index, ((layer, n), samples) in enumerate(cases.items()):
        row = _row(index, layer, n, **extra)
        if samples is not None:
            row["time_ms_median"] = float(np.median(samples)) * 1e3
        run.write_case(row, [] if samples is None else samples)
    run.merge()
    return path


TRIVIAL_BENCH = textwrap.dedent("""
    import time
    import pytest

    @pytest.mark.parametrize("seq_len", [16, 32])
    def test_layer(benchmark, seq_len):
        benchmark.extra_info.update(
            harness=1, layer="lstm", variant="fused", seq_len=seq_len, d_model=8,
            heads=None, kernel=None, window=None, causal=False, block=False, batch=1,
            dtype="float32", device="cpu", mode="forward", label=f"lstm-n{seq_len}-d8",
            peak_mem_bytes=100000, flops_analytic=4096, flops_fvcore=4096, flops_torch=4096,
        )
        benchmark(time.sleep, 0)

    def test_plain(benchmark):
        benchmark(sum, range(10))
""")


@pytest.fixture(scope="module")
def bench_files(tmp_path_factory) -> dict[str, Path]:
    """pytest-benchmark's own files, from a real (tiny) run: --benchmark-json holds the raw
    data; --benchmark-save without --benchmark-save-data holds statistics only."""
    root = tmp_path_factory.mktemp("bench")
    (root / "test_trivial.py").write_text(TRIVIAL_BENCH)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_trivial.py",
         "--benchmark-json=with_data.json", "--benchmark-save=nodata",
         f"--benchmark-storage=file://{root / 'storage'}", "--benchmark-max-time=0.02",
         "--benchmark-min-rounds=5"],
        cwd=root, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    saved = sorted((root / "storage").rglob("*nodata.json"))
    assert len(saved) == 1
    return {"data": root / "with_data.json", "stats": saved[0]}


def run_cli(*argv: str) -> int:
    return main(["compare", *argv])


# --- statistics ------------------------------------------------------------------------------


def test_a_tight_25_percent_shift_is_a_significant_regression():
    base, cand = _samples(1e-3, 0.02), _samples(1.25e-3, 0.02, seed=1)
    ci = bootstrap_ratio(base, cand)
    assert ci.ratio == pytest.approx(1.25, rel=0.03)
    assert ci.low > 1.15 and ci.high < 1.35


def test_the_same_distribution_gives_an_interval_around_one():
    ci = bootstrap_ratio(_samples(1e-3, 0.05), _samples(1e-3, 0.05, seed=1))
    assert ci.low < 1 < ci.high


def test_a_25_percent_shift_in_huge_noise_is_not_significant():
    base, cand = _samples(1e-3, 1.0, n=8), _samples(1.25e-3, 1.0, n=8, seed=1)
    ci = bootstrap_ratio(base, cand)
    assert ci.low < 1 < ci.high


def test_the_bootstrap_is_reproducible():
    base, cand = _samples(1e-3, 0.3), _samples(1.1e-3, 0.3, seed=1)
    assert bootstrap_ratio(base, cand) == bootstrap_ratio(base, cand)


def test_passes_take_the_fastest_pass_median():
    clean, disturbed = _samples(1e-3, 0.02), _samples(2e-3, 0.02, seed=3)
    ci = bootstrap_ratio([clean, disturbed], [_samples(1e-3, 0.02, seed=4)])
    assert ci.ratio == pytest.approx(1.0, abs=0.03)
    assert ci.low < 1 < ci.high


@pytest.mark.parametrize(("level", "z"), [(0.8, 1.281552), (0.9, 1.644854), (0.95, 1.959964),
                                           (0.99, 2.575829), (0.999, 3.290527)])
def test_z_value_matches_normal_tables(level, z):
    assert z_value(level) == pytest.approx(z, abs=1e-6)


def test_summary_ratio_interval_from_standard_errors():
    ci = summary_ratio(1.0, 0.01, 1.2, 0.012)
    assert ci.ratio == pytest.approx(1.2)
    assert ci.low == pytest.approx(1.2 * np.exp(-1.96 * np.hypot(0.01, 0.01)), rel=1e-3)
    assert ci.method == "stats-only"


def test_bad_samples_are_rejected():
    with pytest.raises(ValueError, match="no samples"):
        bootstrap_ratio([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ratio([1.0, float("nan")], [1.0])


# --- verdicts on harness runs ----------------------------------------------------------------


def test_verdicts_regression_improvement_and_noise(tmp_path):
    base = write_run(tmp_path / "base", {
        ("lstm", 16): _samples(1e-3, 0.02, seed=1),
        ("conv", 16): _samples(1e-3, 0.02, seed=2),
        ("attention", 16): _samples(1e-3, 0.02, seed=3),
        ("gru", 16): _samples(1e-3, 1.0, n=8, seed=4),
    })
    cand = write_run(tmp_path / "cand", {
        ("lstm", 16): _samples(1.25e-3, 0.02, seed=5),  # slower, clearly
        ("conv", 16): _samples(0.75e-3, 0.02, seed=6),  # faster, clearly
        ("attention", 16): _samples(1.05e-3, 0.02, seed=7),  # inside the threshold
        ("gru", 16): _samples(1.25e-3, 1.0, n=8, seed=8),  # slower, but lost in the noise
    })
    result = compare_runs(load(base), load(cand))
    verdicts = {v.label: v.verdict for v in result.cases}
    assert verdicts == {"lstm-n16-d8": REGRESSED, "conv-n16-d8": IMPROVED,
                        "attention-n16-d8": UNCHANGED, "gru-n16-d8": UNCHANGED}
    assert result.exit_code == 1
    assert run_cli(str(base), str(cand)) == 1
    assert run_cli(str(base), str(base)) == 0


def test_threshold_is_settable(tmp_path):
    base = write_run(tmp_path / "b", {("lstm", 16): _samples(1e-3, 0.02)})
    cand = write_run(tmp_path / "c", {("lstm", 16): _samples(1.25e-3, 0.02, seed=1)})
    assert run_cli(str(base), str(cand)) == 1
    assert run_cli(str(base), str(cand), "--threshold", "30%") == 0
    assert compare_runs(load(base), load(cand), Rules(threshold=0.3)).exit_code == 0


def test_a_flop_change_is_a_change_not_noise(tmp_path):
    same = {("lstm", 16): _samples(1e-3, 0.02)}
    base = write_run(tmp_path / "b", same)
    cand = write_run(tmp_path / "c", same, flops_torch=4097)
    (verdict,) = compare_runs(load(base), load(cand)).cases
    assert verdict.verdict == REGRESSED
    assert verdict.flops["flops_torch"] == (4096, 4097)
    assert any("flops_torch +1" in r for r in verdict.reasons)


def test_memory_growth_beyond_threshold_regresses(tmp_path):
    same = {("lstm", 16): _samples(1e-3, 0.02)}
    base = write_run(tmp_path / "b", same)
    grown = write_run(tmp_path / "c", same, peak_mem_bytes=150_000)
    wobble = write_run(tmp_path / "d", same, peak_mem_bytes=100_500)  # below the floor
    assert compare_runs(load(base), load(grown)).cases[0].verdict == REGRESSED
    assert compare_runs(load(base), load(wobble)).cases[0].verdict == UNCHANGED


def test_a_case_failing_in_the_candidate_regresses(tmp_path):
    base = write_run(tmp_path / "b", {("lstm", 16): _samples(1e-3, 0.02)})
    cand = write_run(tmp_path / "c", {("lstm", 16): None}, status="error",
                     message="RuntimeError: boom")
    (verdict,) = compare_runs(load(base), load(cand)).cases
    assert verdict.verdict == "failed" and "boom" in verdict.reasons[0]


def test_cases_on_one_side_only_are_listed_not_errors(tmp_path):
    base = write_run(tmp_path / "b", {("lstm", 16): _samples(1e-3, 0.02),
                                      ("conv", 16): _samples(1e-3, 0.02, seed=1)})
    cand = write_run(tmp_path / "c", {("conv", 16): _samples(1e-3, 0.02, seed=2),
                                      ("gru", 16): _samples(1e-3, 0.02, seed=3)})
    result = compare_runs(load(base), load(cand))
    verdicts = {v.label: v.verdict for v in result.cases}
    assert verdicts == {"lstm-n16-d8": BASELINE_ONLY, "conv-n16-d8": UNCHANGED,
                        "gru-n16-d8": CANDIDATE_ONLY}
    assert result.exit_code == 0
    assert "baseline only" in table(result)


def test_mixed_devices_warn_and_are_not_compared_unless_allowed(tmp_path):
    base = write_run(tmp_path / "b", {("lstm", 16): _samples(1e-3, 0.02)})
    cand = write_run(tmp_path / "c", {("lstm", 16): _samples(2e-3, 0.02, seed=1)},
                     device="cuda")
    result = compare_runs(load(base), load(cand))
    assert [v.verdict for v in result.cases] == [MISMATCH]
    assert result.exit_code == 0
    assert any("different device or dtype" in w and "--allow-mismatch" in w
               for w in result.warnings)
    assert "warning:" in table(result) and ":warning:" in markdown(result)
    allowed = compare_runs(load(base), load(cand), Rules(allow_mismatch=True))
    assert [v.verdict for v in allowed.cases] == [REGRESSED]
    assert run_cli(str(base), str(cand)) == 0
    assert run_cli(str(base), str(cand), "--allow-mismatch") == 1


def test_a_folder_of_runs_is_one_side_with_passes(tmp_path):
    case = ("lstm", 16)
    write_run(tmp_path / "base" / "p0", {case: _samples(1e-3, 0.02)})
    write_run(tmp_path / "base" / "p1", {case: _samples(1.6e-3, 0.02, seed=1)})  # disturbed
    cand = write_run(tmp_path / "cand", {case: _samples(1e-3, 0.02, seed=2)})
    side = load(tmp_path / "base")
    (record,) = side.all_cases()
    assert len(record.passes) == 2 and side.runs == 2
    assert compare_runs(side, load(cand)).cases[0].verdict == UNCHANGED


# --- pytest-benchmark JSON -------------------------------------------------------------------


def test_benchmark_json_with_raw_data_is_read(bench_files):
    run = load(bench_files["data"])
    assert run.kind == "pytest-benchmark" and run.recorded_at is not None
    labels = sorted(c.label for c in run.all_cases())
    assert labels == ["lstm-n16-d8", "lstm-n32-d8", "test_plain"]
    lstm = next(c for c in run.all_cases() if c.label == "lstm-n16-d8")
    assert lstm.raw and lstm.passes[0].count >= 5
    assert lstm.key == identity({"layer": "lstm", "variant": "fused", "seq_len": 16,
                                 "d_model": 8, "batch": 1, "mode": "forward"})
    assert lstm.flops["flops_torch"] == 4096 and lstm.peak_mem_bytes == 100000


def test_benchmark_json_without_data_falls_back_to_summary_statistics(bench_files):
    run = load(bench_files["stats"])
    assert not any(c.raw for c in run.all_cases())
    result = compare_runs(run, run)
    assert {v.time.ci.method for v in result.cases} == {"stats-only"}
    assert any("summary statistics" in w for w in result.warnings)
    assert result.exit_code == 0


def test_json_and_parquet_match_by_case_identity(bench_files, tmp_path):
    run = load(bench_files["data"])
    median = next(c for c in run.all_cases() if c.label == "lstm-n16-d8").median
    parquet = write_run(tmp_path / "run", {("lstm", 16): _samples(median, 0.01)})
    result = compare_runs(load(parquet), run)
    verdicts = {v.label: v.verdict for v in result.cases}
    assert verdicts["lstm-n16-d8"] not in (BASELINE_ONLY, CANDIDATE_ONLY)
    assert verdicts["lstm-n32-d8"] == CANDIDATE_ONLY
    assert verdicts["test_plain"] == CANDIDATE_ONLY


def test_output_formats(bench_files, capsys):
    path = str(bench_files["data"])
    assert run_cli(path, path, "--format", "json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["exit_code"] == 0 and doc["regressed"] == 0
    assert {c["verdict"] for c in doc["cases"]} == {UNCHANGED}
    assert all(c["time"]["ratio"] == pytest.approx(1.0) for c in doc["cases"])
    assert run_cli(path, path, "--format", "markdown") == 0
    md = capsys.readouterr().out
    assert md.startswith("### :white_check_mark: no benchmark regressions")
    assert "| case | baseline | candidate |" in md
    assert to_dict(compare_runs(load(path), load(path)))["summary"] == {UNCHANGED: 3}


# --- bad input: one line, exit 2 -------------------------------------------------------------


@pytest.mark.parametrize("content, needle", [
    (b"", "empty file"),
    (b"hello, not a result\n", "neither a Parquet results file nor a pytest-benchmark JSON"),
    (b"{\"benchmarks\": [", "corrupt JSON"),
    (b"{\"version\": \"5.2\"}", "not a pytest-benchmark JSON file"),
    (b"{\"benchmarks\": [{\"name\": \"x\"}]}", "has no 'stats' mapping"),
    (b"PAR1 garbage that is no parquet", "not a readable Parquet"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, content, needle):
    bad = tmp_path / "bad.file"
    bad.write_bytes(content)
    with pytest.raises(HarnessInputError, match=needle):
        load(bad)
    good = write_run(tmp_path / "good", {("lstm", 16): _samples(1e-3, 0.02)})
    assert run_cli(str(good), str(bad)) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_missing_paths_and_empty_folders_exit_2(tmp_path, capsys):
    assert run_cli(str(tmp_path / "nope"), str(tmp_path / "nope")) == 2
    assert "no such file or directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run_cli(str(tmp_path / "empty"), str(tmp_path / "empty")) == 2
    assert "no results.parquet and no benchmark JSON" in capsys.readouterr().err


def test_three_runs_a_side_are_tested_across_runs(tmp_path):
    case = ("lstm", 16)
    for i in range(3):
        write_run(tmp_path / "base" / f"p{i}", {case: _samples(1e-3 * (1 + 0.02 * i), 0.02,
                                                               seed=i)})
        write_run(tmp_path / "slow" / f"p{i}", {case: _samples(1.25e-3 * (1 + 0.02 * i), 0.02,
                                                               seed=10 + i)})
    # one candidate run as fast as the baseline: the runs overlap, no verdict
    for i, scale in enumerate((1.25, 1.25, 1.0)):
        write_run(tmp_path / "mixed" / f"p{i}", {case: _samples(scale * 1e-3, 0.02,
                                                                seed=20 + i)})
    base = load(tmp_path / "base")
    (slower,) = compare_runs(base, load(tmp_path / "slow")).cases
    assert slower.verdict == REGRESSED
    assert slower.time.basis == "runs" and slower.time.p_value == pytest.approx(0.05)
    (mixed,) = compare_runs(base, load(tmp_path / "mixed")).cases
    assert mixed.verdict == UNCHANGED and mixed.time.p_value > 0.05


def _side(runs: list[list[float]]) -> RunRecord:
    """One case timed in ``len(runs)`` runs; each run's passes have the given fastest calls
    (seconds), each pass 30 samples: the fastest call twice, the rest just above it."""
    passes = []
    for run, fastest_calls in enumerate(runs):
        for fastest in fastest_calls:
            samples = fastest * (1 + np.r_[0.0, np.linspace(0.0, 0.05, 29)])
            passes.append(replace(PassStats.from_samples(samples), run=run))
    record = CaseRecord(key=(("layer", "lstm"),), label="lstm", device="cpu",
                        dtype="float32", status="ok", passes=tuple(passes))
    return RunRecord(path=Path("side"), kind="test", recorded_at=None,
                     cases={record.key: [record]}, runs=len(runs))


def test_passes_of_one_run_are_not_repetitions():
    """A process that runs slow as a whole (memory layout, allocator history) slows all of
    its passes: the test counts it once, as one run, and a 20 % gap that two of five
    baseline processes share is not significant - while nine passes would have called it."""
    base = _side([[1.0, 1.01, 1.02], [1.25, 1.26, 1.27], [1.0, 1.02, 1.01],
                  [1.24, 1.25, 1.26], [1.01, 1.0, 1.02]])
    cand = _side([[1.21, 1.22, 1.23]] * 5)
    assert base.all_cases()[0].run_minima == [1.0, 1.25, 1.0, 1.24, 1.0]
    (verdict,) = compare_runs(base, cand).cases
    assert verdict.time.basis == "runs"
    assert verdict.time.p_value == pytest.approx(21 / 252)  # 2 baseline runs above: k = 7
    assert verdict.verdict == UNCHANGED
    # the same numbers read as passes would be "significant" (6 of 15 baseline passes above)
    from harness.bench.stats import fastest_run_p

    flat = [p.min for p in base.all_cases()[0].passes]
    assert fastest_run_p(flat, [1.21] * 15) < 0.001
    # clean runs: every baseline run faster than every candidate run
    clean = _side([[1.0, 1.3], [1.01, 1.02], [1.0, 1.5], [1.02, 1.01], [1.0, 1.0]])
    (caught,) = compare_runs(clean, cand).cases
    assert caught.verdict == REGRESSED and caught.time.p_value == pytest.approx(1 / 252)


def test_one_session_with_passes_is_tested_across_passes_with_a_warning():
    base = _side([[1.0, 1.01, 1.02]])
    cand = _side([[1.3, 1.31, 1.32]])
    result = compare_runs(base, cand)
    (verdict,) = result.cases
    assert verdict.time.basis == "passes" and verdict.verdict == REGRESSED
    assert verdict.time.p_value == pytest.approx(1 / 20)
    assert any("fewer than 3 runs a side" in w for w in result.warnings)


def test_fastest_run_p_is_the_exact_permutation_probability():
    from harness.bench.stats import fastest_run_p

    assert fastest_run_p([1, 2, 3], [4, 5, 6]) == pytest.approx(1 / 20)
    assert fastest_run_p([1, 2, 5], [4, 5, 6]) == pytest.approx(4 / 20)  # one slow baseline run
    assert fastest_run_p([4, 5, 6], [1, 2, 3]) == pytest.approx(1.0)
    base, cand = [1, 1.1, 1.05, 1.02, 1.6], [1.3, 1.31, 1.4, 1.35, 1.32]
    assert fastest_run_p(base, cand) == pytest.approx(6 / 252)
    # brute force over every split of the pooled values
    import itertools

    pooled = base + cand
    splits = list(itertools.combinations(range(10), 5))
    hits = sum(1 for c in splits if min(pooled[i] for i in c) >= min(cand))
    assert fastest_run_p(base, cand) == pytest.approx(hits / len(splits))


def test_a_zero_sample_is_a_timer_glitch_not_the_fastest_call(tmp_path):
    glitch = _samples(1e-3, 0.02)
    glitch[3] = 0.0
    base = write_run(tmp_path / "b", {("lstm", 16): glitch})
    (case,) = load(base).all_cases()
    positive = np.sort(glitch[glitch > 0])
    assert case.minimum == pytest.approx(float(positive[1]))  # the second-fastest call


def test_one_glitched_reading_neither_sizes_nor_flags_a_change(tmp_path):
    """One sample far below every other (a clock glitch, seen in a CPU-time run) must not
    become the baseline's fastest call: read as one, an unchanged candidate is 50 % slower."""
    case = ("dynamicconv", 64)
    for i in range(5):
        samples = _samples(240e-6, 0.02, seed=i)
        if i == 2:
            samples[7] = 159e-6
        write_run(tmp_path / "base" / f"r{i}", {case: samples})
        write_run(tmp_path / "cand" / f"r{i}", {case: _samples(240e-6, 0.02, seed=10 + i)})
    (verdict,) = compare_runs(load(tmp_path / "base"), load(tmp_path / "cand")).cases
    assert verdict.verdict == UNCHANGED
    assert 0.9 < verdict.time.ratio < 1.1
    assert min(verdict.baseline.run_minima) > 200e-6


def test_a_pass_with_one_sample_uses_it():
    only = PassStats.from_samples(np.array([2e-3]))
    assert only.min == pytest.approx(2e-3)
    assert PassStats.from_samples(np.array([0.0, 0.0])).min is None


def test_significance_is_tested_against_the_threshold_not_against_no_change():
    """Runs that vary by ~8 % from process to process, and a candidate whose fastest run is
    12 % above the baseline's fastest: "slower at all" would be significant (p = 6/252), but
    "slower by more than 10 %" is not (p = 126/252) - no verdict. A clean 12 % shift on
    steady runs is both."""
    from harness.bench.stats import fastest_run_p

    spread = [1.0, 1.04, 1.06, 1.08, 1.3]
    cand = [1.12, 1.15, 1.2, 1.25, 1.3]
    assert fastest_run_p(spread, cand) == pytest.approx(6 / 252)
    (noisy,) = compare_runs(_side([[v] * 3 for v in spread]), _side([[v] * 3 for v in cand])).cases
    assert noisy.time.ratio == pytest.approx(1.12)
    assert noisy.time.p_value == pytest.approx(126 / 252) and noisy.verdict == UNCHANGED
    steady = _side([[1.0, 1.01, 1.0]] * 5)
    (clean,) = compare_runs(steady, _side([[1.12, 1.13, 1.12]] * 5)).cases
    assert clean.verdict == REGRESSED and clean.time.p_value == pytest.approx(1 / 252)
    (faster,) = compare_runs(_side([[1.12, 1.13, 1.12]] * 5), steady).cases
    assert faster.verdict == IMPROVED and faster.time.p_value == pytest.approx(1 / 252)


# --- contended time: inconclusive, never a verdict -------------------------------------------

CONTENDED_ROW = {"time_unreliable": True, "time_note": CONTENDED}


@pytest.mark.parametrize("unreliable, note, expected", [
    (True, CONTENDED, True),
    (True, "spread: IQR / median 15% > 10%; contended: waited in 40% of samples", True),
    (True, "CPU throttled: clock fell to 60% of nominal", True),
    (True, "spread: IQR / median 15% > 10%", False),  # spread alone: compared as before
    (True, None, False),
    (False, CONTENDED, False),  # the producer judged the time usable
])
def test_only_contention_or_throttling_makes_a_pass_contended(unreliable, note, expected):
    assert contended(unreliable, note) is expected


def test_a_contended_candidate_is_inconclusive_not_a_regression(tmp_path, capsys):
    base = write_run(tmp_path / "b", {("lstm", 16): _samples(1e-3, 0.02)})
    slow = {("lstm", 16): _samples(1.5e-3, 0.02, seed=1)}
    clean = write_run(tmp_path / "clean", slow)
    busy = write_run(tmp_path / "busy", slow, **CONTENDED_ROW)
    assert compare_runs(load(base), load(clean)).cases[0].verdict == REGRESSED  # the control
    (record,) = load(busy).all_cases()
    assert record.passes[0].unreliable and record.passes[0].note == CONTENDED
    result = compare_runs(load(base), load(busy))
    (verdict,) = result.cases
    assert verdict.verdict == INCONCLUSIVE and verdict.time is None
    assert verdict.time_inconclusive and set(verdict.contended) == {"candidate"}
    assert any(f"candidate: {CONTENDED}" in r for r in verdict.reasons)
    assert result.exit_code == 0 and result.summary() == {INCONCLUSIVE: 1}
    assert any(INCONCLUSIVE in w for w in result.warnings)
    assert run_cli(str(base), str(busy)) == 0
    out = capsys.readouterr().out
    assert INCONCLUSIVE in out and f"candidate: {CONTENDED}" in out


def test_a_contended_baseline_is_inconclusive_whichever_way_the_time_moved(tmp_path):
    busy_slow = write_run(tmp_path / "bs", {("lstm", 16): _samples(1.5e-3, 0.02)},
                          **CONTENDED_ROW)
    busy_fast = write_run(tmp_path / "bf", {("lstm", 16): _samples(1e-3, 0.02)},
                          **CONTENDED_ROW)
    cand_fast = write_run(tmp_path / "cf", {("lstm", 16): _samples(1e-3, 0.02, seed=1)})
    cand_slow = write_run(tmp_path / "cs", {("lstm", 16): _samples(1.5e-3, 0.02, seed=2)})
    for base, cand in ((busy_slow, cand_fast), (busy_fast, cand_slow)):
        (verdict,) = compare_runs(load(base), load(cand)).cases
        assert verdict.verdict == INCONCLUSIVE, verdict.reasons
        assert set(verdict.contended) == {"baseline"}
        assert any(f"baseline: {CONTENDED}" in r for r in verdict.reasons)
        assert run_cli(str(base), str(cand)) == 0


def test_a_row_unreliable_for_spread_only_is_compared_as_before(tmp_path):
    base = write_run(tmp_path / "b", {("lstm", 16): _samples(1e-3, 0.02)})
    spread = write_run(tmp_path / "c", {("lstm", 16): _samples(1.5e-3, 0.02, seed=1)},
                       time_unreliable=True, time_note="spread: IQR / median 12% > 10%")
    (verdict,) = compare_runs(load(base), load(spread)).cases
    assert verdict.verdict == REGRESSED and not verdict.contended
    assert load(spread).all_cases()[0].passes[0].unreliable  # read, but not contention
    assert run_cli(str(base), str(spread)) == 1


def test_memory_and_flop_verdicts_ignore_contention(tmp_path):
    base = write_run(tmp_path / "b", {("lstm", 16): _samples(1e-3, 0.02)})
    grown = write_run(tmp_path / "c", {("lstm", 16): _samples(1.5e-3, 0.02, seed=1)},
                      peak_mem_bytes=150_000, flops_torch=4097, **CONTENDED_ROW)
    result = compare_runs(load(base), load(grown))
    (verdict,) = result.cases
    assert verdict.verdict == REGRESSED and verdict.time_inconclusive
    assert any("peak memory" in r for r in verdict.reasons)
    assert any("flops_torch +1" in r for r in verdict.reasons)
    assert any(INCONCLUSIVE in r for r in verdict.reasons)
    assert not any(r.startswith("fastest call") for r in verdict.reasons)  # no time verdict
    assert result.exit_code == 1


def test_the_inconclusive_verdict_in_json_and_markdown(tmp_path, capsys):
    base = write_run(tmp_path / "b", {("lstm", 16): _samples(1e-3, 0.02)})
    busy = write_run(tmp_path / "c", {("lstm", 16): _samples(1.5e-3, 0.02, seed=1)},
                     **CONTENDED_ROW)
    assert run_cli(str(base), str(busy), "--format", "json") == 0
    doc = json.loads(capsys.readouterr().out)
    (case,) = doc["cases"]
    assert case["verdict"] == INCONCLUSIVE and case["time_inconclusive"] is True
    assert "time" not in case
    assert case["contended"] == {"candidate": {"note": CONTENDED, "passes": 1, "of": 1,
                                               "runs_left": 0, "of_runs": 1}}
    assert case["candidate"]["pass_unreliable"] == [True]
    assert case["candidate"]["pass_notes"] == [CONTENDED]
    assert case["baseline"]["pass_unreliable"] == [False]
    assert doc["exit_code"] == 0 and doc["summary"] == {INCONCLUSIVE: 1}
    assert run_cli(str(base), str(busy), "--format", "markdown") == 0
    md = capsys.readouterr().out
    assert md.startswith(f"### :grey_question: no benchmark regressions found, but 1 case "
                         f"{INCONCLUSIVE}")
    assert f"| `lstm-n16-d8` | :grey_question: {INCONCLUSIVE} |" in md
    assert f"candidate: {CONTENDED}" in md


def _contend(side: RunRecord, runs: set[int], note: str = CONTENDED) -> RunRecord:
    """``side`` with every pass of the given runs marked contended."""
    (record,) = side.all_cases()
    passes = tuple(replace(p, unreliable=True, note=note) if p.run in runs else p
                   for p in record.passes)
    return replace(side, cases={record.key: [replace(record, passes=passes)]})


def test_contended_runs_are_dropped_while_enough_clean_runs_remain():
    """Eight runs a side, two baseline runs contended (and slow): judged on the six clean
    ones, the 25 % slowdown is still caught. Three runs a side with one contended leave two,
    too few for the runs test: inconclusive, not a weaker verdict."""
    steady = [[1.0, 1.01, 1.02]] * 8
    base = _contend(_side([*steady[:6], [1.6, 1.6, 1.6], [1.7, 1.7, 1.7]]), {6, 7})
    cand = _side([[1.25, 1.26, 1.27]] * 8)
    (judged,) = compare_runs(base, cand).cases
    assert judged.verdict == REGRESSED and judged.time.basis == "runs"
    assert judged.time.p_value == pytest.approx(1 / 3003)  # C(14, 8): 6 baseline runs vs 8
    assert judged.contended["baseline"].runs_left == 6
    assert any("without the contended passes" in r and "(6 of 24 passes)" in r
               for r in judged.reasons)
    few = _contend(_side(steady[:3]), {2})
    (unsure,) = compare_runs(few, _side([[1.25, 1.26, 1.27]] * 3)).cases
    assert unsure.verdict == INCONCLUSIVE and unsure.time is None


def test_a_contended_pass_of_a_run_leaves_its_clean_passes():
    base = _side([[1.0, 1.01, 1.02]] * 3)
    cand = _side([[1.3, 1.31, 1.32]] * 3)
    (record,) = cand.all_cases()
    first = replace(record.passes[0], unreliable=True, note=CONTENDED)
    cand = replace(cand, cases={record.key: [replace(record,
                                                     passes=(first, *record.passes[1:]))]})
    (verdict,) = compare_runs(base, cand).cases
    assert verdict.verdict == REGRESSED and verdict.time.basis == "runs"
    assert verdict.contended["candidate"].runs_left == 3


def test_benchmark_json_extra_info_carries_the_contention(tmp_path):
    def bench(seconds: float, **info: object) -> dict[str, object]:
        data = list(_samples(seconds, 0.02))
        return {"name": "test_x", "fullname": "test_x.py::test_x", "extra_info": info,
                "stats": {"median": float(np.median(data)), "min": min(data),
                          "rounds": len(data), "data": data}}

    def write(path: Path, entry: dict[str, object]) -> Path:
        path.write_text(json.dumps({"benchmarks": [entry],
                                    "datetime": "2025-01-01T00:00:00"}))
        return path

    base = write(tmp_path / "b.json", bench(1e-3, time_unreliable=False, time_note=None))
    busy = write(tmp_path / "c.json", bench(1.5e-3, **CONTENDED_ROW))
    (record,) = load(busy).all_cases()
    assert record.passes[0].unreliable and record.passes[0].note == CONTENDED
    assert not load(base).all_cases()[0].passes[0].unreliable
    assert compare_runs(load(base), load(busy)).cases[0].verdict == INCONCLUSIVE
    plain = write(tmp_path / "d.json", bench(1.5e-3))  # a file from before: reliable
    assert compare_runs(load(base), load(plain)).cases[0].verdict == REGRESSED
