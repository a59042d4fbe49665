#!/usr/bin/env bash
# gpu-check.sh OUTDIR - everything that needs a GPU, sized for a short GPU loan.
#
#   1. the tests marked gpu (pytest -m gpu)            -> OUTDIR/pytest-gpu.log
#   2. suites/gpu-check.yaml on cuda (24 cases)        -> OUTDIR/run/ (results.parquet,
#      samples.parquet, suite.yaml, report.html, report.pdf)
#   3. a short summary of the run                      -> stdout and OUTDIR/summary.txt
#
# Each step has a hard time limit (150 + 150 + 45 s, plus at most 30 s of grace to stop),
# so the whole check ends within 6.5 minutes on one H100/H200 (expected about 3: ~1.5 for
# the tests, ~1 for the suite, its report and the worker's start): a hung step is cut off,
# the cases it finished are kept, and the report is rebuilt from the saved rows.
# The suite is suites/gpu-check.yaml, or suites/gpu-scale.yaml where a checkout lacks it.
# Exit status: 0 when the tests pass and every
# case is ok or oom (naive attention at n = 32768 is meant to run out of memory); 1 when
# something failed; 2 for bad usage or no CUDA device.
set -euo pipefail

if [[ $# -ne 1 || $1 == -* ]]; then
    echo "usage: $0 OUTDIR   (runs the GPU tests and suites/gpu-check.yaml on cuda)" >&2
    exit 2
fi
mkdir -p "$1"
out=$(cd "$1" && pwd)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, installed or not

if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu-check: torch sees no CUDA device here; nothing to check" >&2
    exit 2
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true
fi

failed=0
run="$out/run"

echo "== 1/3 pytest -m gpu (limit 150 s)"
tests_rc=0
timeout -s INT -k 10 150 python -m pytest -m gpu -q -raP -p no:cacheprovider 2>&1 \
    | tee "$out/pytest-gpu.log" || tests_rc=$?
[[ $tests_rc -eq 0 ]] || { echo "gpu-check: pytest exit status $tests_rc" >&2; failed=1; }

suite=suites/gpu-check.yaml
[[ -f $suite ]] || suite=suites/gpu-scale.yaml
echo "== 2/3 harness run $suite --device cuda (limit 150 s)"
run_rc=0
timeout -s INT -k 15 150 python -m harness run "$suite" --device cuda \
    --out "$run" --force || run_rc=$?
if [[ $run_rc -ne 0 ]]; then
    echo "gpu-check: harness run exit status $run_rc" >&2
    failed=1
fi
if [[ $run_rc -ne 0 && -d "$run/parts" ]]; then  # cut off: merge the cases it finished
    python -c 'import sys; from harness.results import RunDirectory as R; R(sys.argv[1]).merge()' \
        "$run" || true
fi
if [[ -f "$run/results.parquet" && ! -f "$run/report.html" ]]; then
    echo "gpu-check: no report written; building it from the saved rows (limit 45 s)"
    timeout -k 5 45 python -m harness report "$run" --out "$run" || failed=1
fi

echo "== 3/3 summary"
summary_rc=0
python scripts/gpu_check_summary.py "$run/results.parquet" | tee "$out/summary.txt" \
    || summary_rc=$?
[[ $summary_rc -eq 0 ]] || { echo "gpu-check: cases missing, or neither ok nor oom" >&2; failed=1; }

echo "== where things are"
echo "  pytest log:    $out/pytest-gpu.log"
echo "  results:       $run/results.parquet (samples: $run/samples.parquet)"
echo "  report:        $run/report.html, $run/report.pdf"
echo "  summary:       $out/summary.txt"
if [[ -f "$out/nvidia-smi.txt" ]]; then
    echo "  nvidia-smi:    $out/nvidia-smi.txt"
fi
if [[ $failed -ne 0 ]]; then
    echo "gpu-check: FAILED (see above)"
    exit 1
fi
echo "gpu-check: passed"
