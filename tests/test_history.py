"""harness history: step detection, run ordering, the HTML page, bad input."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from harness.bench.command import main
from harness.bench.history import build_history
from harness.bench.history_html import history_html
from harness.bench.steps import default_penalty, find_steps, fit_segments, noise_scale
from harness.errors import HarnessInputError
from harness.results import RunDirectory


def _series(n: int = 15, step_at: int = 7, factor: float = 1.3, noise: float = 0.02,
            seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    level = np.where(np.arange(n) < step_at, 1.0, factor)
    return level * np.exp(rng.normal(0.0, noise, n))


@pytest.mark.parametrize("seed", range(5))
def test_a_step_at_run_7_is_found_at_run_7(seed):
    steps = find_steps(np.log(_series(seed=seed)))
    assert [s.index for s in steps] == [7]
    assert steps[0].change == pytest.approx(0.3, abs=0.05)


def test_a_step_down_is_found_too():
    (step,) = find_steps(np.log(_series(factor=0.7)))
    assert step.index == 7 and step.change == pytest.approx(-0.3, abs=0.05)


@pytest.mark.parametrize("seed", range(5))
def test_noise_alone_has_no_step(seed):
    assert find_steps(np.log(_series(factor=1.0, noise=0.05, seed=seed))) == []


def test_a_single_outlier_is_not_a_step():
    y = np.ones(12)
    y[5] = 1.6
    assert find_steps(np.log(y)) == []


def test_fit_is_the_exact_l1_optimum_on_a_small_series():
    y = np.log([1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
    assert fit_segments(y, penalty=0.1) == [0, 3]
    # a penalty above the cost of ignoring the step keeps one segment
    assert fit_segments(y, penalty=10.0) == [0]


def test_penalty_grows_with_noise_and_length():
    quiet, noisy = np.log(_series(noise=0.001)), np.log(_series(noise=0.1))
    assert noise_scale(quiet) == pytest.approx(0.01)  # the floor
    assert default_penalty(noisy) > default_penalty(quiet)
    assert default_penalty(np.zeros(100)) > default_penalty(np.zeros(10))


def _write_run(path: Path, stamp: str, medians: dict[str, float], label_suffix: str = ""
               ) -> None:
    run = RunDirectory(path)
    run.create()
    for index, (layer, median) in enumerate(medians.items()):
        samples = median * np.exp(np.random.default_rng(index).normal(0, 0.01, 9))
        run.write_case({
            "case_index": index, "case_id": layer, "label": f"{layer}-n16{label_suffix}",
            "status": "ok", "message": "", "layer": layer, "variant": "fused", "seq_len": 16,
            "d_model": 8, "batch": 1, "dtype": "float32", "device": "cpu", "mode": "forward",
            "seed": 0, "time_ms_median": float(np.median(samples)) * 1e3,
            "env_time_utc": stamp,
        }, samples)
    run.merge()


@pytest.fixture(scope="module")
def history_dir(tmp_path_factory) -> Path:
    """15 runs, one a day; lstm steps up 30 % on day 7, conv stays flat. Folder names are
    shuffled so only the recorded time gives the right order."""
    root = tmp_path_factory.mktemp("history")
    lstm, conv = _series(seed=1), _series(factor=1.0, seed=2)
    names = [f"run-{k:02d}" for k in range(15)]
    random.Random(0).shuffle(names)
    for day in range(15):
        _write_run(root / names[day], f"2025-01-{day + 1:02d}T12:00:00+00:00",
                   {"lstm": 1e-3 * lstm[day], "conv": 2e-3 * conv[day]},
                   label_suffix="<b>" if day == 14 else "")
    return root


def test_history_orders_runs_by_recorded_time_and_finds_the_step(history_dir):
    hist = build_history(history_dir)
    assert len(hist.runs) == 15
    assert [r.recorded_at.day for r in hist.runs] == list(range(1, 16))
    by_layer = {c.layer: c for c in hist.cases}
    lstm = by_layer["lstm"]
    assert lstm.first_step is not None
    assert hist.runs[lstm.points[lstm.first_step.index][0]].recorded_at.day == 8  # run 7
    assert by_layer["conv"].first_step is None


def test_history_command_json_and_html(history_dir, tmp_path, capsys):
    out = tmp_path / "report" / "history.html"
    assert main(["history", str(history_dir), "--format", "json", "--out", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    lstm = next(c for c in doc["cases"] if c["identity"]["layer"] == "lstm")
    assert lstm["first_step"]["run_index"] == 7
    assert math.isclose(lstm["first_step"]["change"], 0.3, abs_tol=0.05)
    page = out.read_text()
    assert page.count("data:image/png;base64,") == 2  # one plot per layer, inline
    assert "<b>" not in page and "&lt;b&gt;" in page  # labels from files are escaped
    assert "http://" not in page and "https://" not in page  # self-contained


def test_history_reads_benchmark_json_too(history_dir, tmp_path):
    doc = {"datetime": "2025-02-01T00:00:00+00:00", "benchmarks": [
        {"name": "test_x", "fullname": "t.py::test_x",
         "stats": {"median": 1e-3, "min": 9e-4, "rounds": 5, "q1": 9e-4, "q3": 1.1e-3}}]}
    (tmp_path / "0001_x.json").write_text(json.dumps(doc))
    hist = build_history(tmp_path)
    assert [c.label for c in hist.cases] == ["test_x"]


def test_history_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["history", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("{\"not\": \"benchmarks\"}")
    with pytest.raises(HarnessInputError, match="no runs found"):
        build_history(tmp_path)
    assert main(["history", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no runs found" in err and err.count("\n") == 1


def test_history_html_escapes_run_names(history_dir):
    hist = build_history(history_dir)
    hist.runs[0] = type(hist.runs[0])(0, "<script>alert(1)</script>", hist.runs[0].path,
                                      hist.runs[0].recorded_at)
    page = history_html(hist)
    assert "<script>" not in page and "&lt;script&gt;" in page
