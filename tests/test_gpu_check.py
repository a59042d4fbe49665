"""The GPU check (scripts/gpu-check.sh, suites/gpu-check.yaml) works before a GPU is lent.

A GPU loan is short, so the check must not fail for reasons a CPU machine can find: the
suite's OOM point is where its header says (from the cost model, not from a GPU), the
summary passes and fails the right runs, and the script's control flow (time-limited
steps, merging a cut-off run, rebuilding its report, exit status) is run here with a
stand-in ``python`` that fakes only the GPU steps.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

from harness import registry
from harness.results import RunDirectory
from harness.suite import expand, load_suite

SCRIPT = REPO / "scripts" / "gpu-check.sh"
SUITE = REPO / "suites" / "gpu-check.yaml"
H200_BYTES = 139 * 2**30
EVERY_LAYER = (
    "rnn", "lstm", "gru", "conv", "conv_dilated", "conv_separable", "attention",
    "attention_sdpa", "attention_local", "lightconv", "dynamicconv",
)

sys.path.insert(0, str(REPO / "scripts"))
from gpu_check_summary import summarize  # noqa: E402


def _activation_bytes(planned: object) -> int:
    entry = registry.get(planned.layer)  # type: ignore[attr-defined]
    case = entry.normalize(planned.case)  # type: ignore[attr-defined]
    return entry.cost_of(case, planned.variant).activation_bytes(2)  # type: ignore[attr-defined]


def test_suite_ooms_only_where_meant() -> None:
    """Naive attention: the next-to-largest n fits an H200 with room, the largest does not
    (but needs less than 4 cards' worth); every other case fits in half the card."""
    planned = expand(load_suite(SUITE, check_device=False))
    assert {p.device for p in planned} == {"cuda"} and {p.dtype for p in planned} == {"float16"}
    assert {p.layer for p in planned} == set(EVERY_LAYER)
    attention = sorted((p for p in planned if p.layer == "attention"), key=lambda p: p.case.seq_len)
    *fitting, largest = attention
    assert _activation_bytes(fitting[-1]) < 0.6 * H200_BYTES
    assert H200_BYTES < _activation_bytes(largest) < 4 * H200_BYTES
    others = [p for p in planned if p.layer != "attention"]
    assert all(_activation_bytes(p) < 0.5 * H200_BYTES for p in others)


def test_suite_is_sized_for_a_loan() -> None:
    """Two or three n per layer, one short round each, nothing counted on the CPU: the
    sampled time of the whole suite is seconds, the rest is per-case overhead."""
    suite = load_suite(SUITE, check_device=False)
    planned = expand(suite)
    m = suite.measure
    per_layer: dict[str, int] = {}
    for p in planned:
        per_layer[p.layer] = per_layer.get(p.layer, 0) + 1
    assert set(per_layer.values()) <= {2, 3} and len(planned) <= 30
    assert m.rounds == 1 and m.retries == 0 and not m.flops and not m.structure
    assert m.flush_l2 is True
    assert len(planned) * (m.time_budget_s + m.warmup_s) <= 5.0


def _rows(statuses: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        "layer": ["attention"] * len(statuses),
        "seq_len": [1024 * (i + 1) for i in range(len(statuses))],
        "status": statuses,
        "time_ms_median": [1.5] * len(statuses),
        "peak_mem_bytes": [2**30] * len(statuses),
    })


def test_summary_passes_ok_and_oom_only() -> None:
    text, passed = summarize(_rows(["ok", "ok", "oom"]))
    assert passed and "status: ok 2, oom 1" in text and "peak_mem_gib" in text
    assert not summarize(_rows(["ok", "error"]))[1]
    assert not summarize(_rows(["ok", "timeout"]))[1]
    assert not summarize(_rows([]))[1]


FAKE_PYTHON = r"""#!/usr/bin/env bash
# Stand-in for python: fakes CUDA, pytest and `harness run`; everything else is real.
case "$*" in
  *torch.cuda.is_available*) exit "${FAKE_CUDA_RC:-0}" ;;
  "-m pytest"*) echo "fake pytest"; exit "${FAKE_PYTEST_RC:-0}" ;;
  "-m harness run"*)
    args="$*"; out=${args##*--out }; out=${out%% *}
    "$REAL_PYTHON" - "$out" <<'EOF'
import os, sys
from harness.results import RunDirectory
run = RunDirectory(sys.argv[1]); run.create()
for i, status in enumerate(os.environ["FAKE_STATUSES"].split(",")):
    run.write_case({"case_id": f"c{i}", "label": f"c{i}", "status": status, "message": "",
                    "layer": "attention", "seq_len": 1024 << i}, [0.001])
if os.environ.get("FAKE_RUN_RC", "0") == "0":
    run.merge()
    (run.path / "report.html").write_text("report")
EOF
    exit "${FAKE_RUN_RC:-0}" ;;
  "-m harness report"*) echo "fake report"; touch "$3/report.html"; exit 0 ;;
  *) exec "$REAL_PYTHON" "$@" ;;
esac
"""


def _script(tmp_path: Path, **env: str) -> tuple[int, str, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    out = tmp_path / "out"
    environ = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               "REAL_PYTHON": sys.executable, "FAKE_STATUSES": "ok,ok,oom", **env}
    done = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True,
                          env=environ, timeout=120, check=False)
    return done.returncode, done.stdout + done.stderr, out


pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None,
    reason="needs bash and coreutils timeout",
)


def test_script_passes_a_good_run(tmp_path: Path) -> None:
    rc, log, out = _script(tmp_path)
    assert rc == 0, log
    assert "gpu-check: passed" in log
    assert (out / "pytest-gpu.log").read_text().strip() == "fake pytest"
    assert "status: ok 2, oom 1" in (out / "summary.txt").read_text()
    assert f"{out}/run/results.parquet" in log and f"{out}/run/report.html" in log


@pytest.mark.parametrize("env, why", [
    ({"FAKE_PYTEST_RC": "1"}, "pytest exit status 1"),
    ({"FAKE_STATUSES": "ok,error"}, "neither ok nor oom"),
])
def test_script_fails_a_bad_run_but_finishes(tmp_path: Path, env: dict[str, str],
                                             why: str) -> None:
    rc, log, out = _script(tmp_path, **env)
    assert rc == 1, log
    assert why in log and "gpu-check: FAILED" in log
    assert (out / "run" / "results.parquet").exists()  # a failed test does not stop the run


def test_script_merges_and_reports_a_cut_off_run(tmp_path: Path) -> None:
    rc, log, out = _script(tmp_path, FAKE_RUN_RC="130")
    assert rc == 1, log
    assert "harness run exit status 130" in log
    assert "fake report" in log  # the report is rebuilt from the merged rows
    merged = pd.read_parquet(out / "run" / "results.parquet")
    assert list(merged["status"]) == ["ok", "ok", "oom"]
    assert RunDirectory(out / "run").results_file.exists()


def test_script_without_cuda_or_outdir_is_usage_error(tmp_path: Path) -> None:
    assert _script(tmp_path, FAKE_CUDA_RC="1")[0] == 2
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "usage" in done.stderr
