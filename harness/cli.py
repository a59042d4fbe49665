"""Command line: ``harness layers | validate | run | merge | doctor`` (and report, compare,
history).

Bad input (a malformed suite, an impossible request, a corrupt results file) is reported
as one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from harness import __version__
from harness.errors import HarnessInputError, run_parser

EXIT_OK = 0

_EPILOG = """\
examples:
  harness layers                          # the layer zoo and its Table-1 theory
  harness validate suites/quick.yaml      # cases per layer, impossible combinations listed
  harness run suites/quick.yaml           # sweep on CPU, write results/quick/<timestamp>/
  harness run suites/table1.yaml --set sweep.seq_len=[128,256] --device cpu
  harness run suites/gpu-scale.yaml --executor ray --ray-address auto   # every GPU of a cluster
  harness run suites/seeds.yaml --shard 2/8 --out results/seeds/2   # one job of an array
  harness merge results/seeds/* --out results/seeds-all
  harness report results/quick/<run> --out reports/quick
  harness compare results/main/results.parquet results/pr/results.parquet --format markdown
  harness doctor --device cuda            # is this machine quiet enough to time layers now?
"""


def _cmd_layers(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from harness import registry

    rows = [
        {
            "name": e.name,
            "family": e.family,
            "variants": list(e.variants),
            "default_variant": e.default_variant,
            "reference_variant": e.reference_variant,
            "params": sorted(e.params),
            "complexity": e.theory.complexity,
            "seq_ops": e.theory.seq_ops,
            "path_length": e.theory.path_length,
            "summary": e.summary,
        }
        for e in registry.entries()
    ]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    headers = ("layer", "family", "applies", "complexity", "seq ops", "path", "variants")
    table = [
        (
            r["name"],
            r["family"],
            ",".join(r["params"]) or "-",
            r["complexity"],
            r["seq_ops"],
            r["path_length"],
            ",".join(r["variants"]),
        )
        for r in rows
    ]
    print(tabulate(table, headers, disable_numparse=True))
    return EXIT_OK


def _load(args: argparse.Namespace, *, check_device: bool):
    from harness.suite import expand, load_suite

    overrides = list(args.set or [])
    if getattr(args, "device", None):
        overrides.append(f"device={args.device}")
    if getattr(args, "dtype", None):
        overrides.append(f"dtype={args.dtype}")
    suite = load_suite(args.suite, overrides=overrides, check_device=check_device)
    return suite, expand(suite)


def _cmd_validate(args: argparse.Namespace) -> int:
    from harness.suite import summarize

    suite, plan = _load(args, check_device=False)
    print(summarize(plan, title=f"{args.suite}: suite {suite.name!r}"))
    return EXIT_OK


def _cmd_doctor(args: argparse.Namespace) -> int:
    from harness import doctor

    try:
        device = doctor.parse_device(args.device)
    except ValueError as exc:
        raise HarnessInputError(f"--device: {exc}") from None
    verdicts = doctor.checks(device)
    print(doctor.as_json(verdicts) if args.format == "json" else doctor.render(verdicts))
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from harness.run_command import run_suite

    # on Ray the devices are the workers': the cluster is checked, not this machine
    suite, plan = _load(args, check_device=args.executor != "ray")
    return run_suite(suite, plan, args)


def _add_suite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="a suite file, e.g. suites/quick.yaml")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="override a suite key for this run (YAML value), e.g. "
        "--set sweep.seq_len=[128,256]; repeatable",
    )
    p.add_argument("--device", help="shortcut for --set device=... (cpu, cuda, cuda:1, auto)")
    p.add_argument("--dtype", help="shortcut for --set dtype=... (float32, bfloat16, ...)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Measure FLOPs, memory, time, sequential ops and path length of "
        "sequence-mixing layers (Vaswani et al. 2017, Table 1; Wu et al. 2019).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "layers",
        help="list the layer registry with its theory rows",
        description="List every registered layer: family, the parameters that apply, the "
        "theory row of Table 1 (complexity, sequential ops, max path length) and variants.",
        epilog="example:\n  harness layers --format json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_cmd_layers)

    p = sub.add_parser(
        "validate",
        help="check a suite and count its cases per layer",
        description="Load and validate a suite, expand it, and print the number of cases "
        "per layer; impossible combinations (d not divisible by h, ...) are listed with "
        "their reasons. Exit 0 when the suite is valid, 2 with one line when it is not. "
        "CUDA suites validate on machines without CUDA.",
        epilog="examples:\n  harness validate suites/table1.yaml\n"
        "  harness validate suites/heads.yaml --set sweep.heads=[3,5]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_suite_args(p)
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser(
        "run",
        help="sweep a suite, measure every case, write results",
        description="Measure every case of a suite (time, memory, FLOPs from three sources, "
        "path length, sequential ops) and write results.parquet, samples.parquet and the "
        "suite as run into --out. Each case is saved as it finishes; a failing case is a row "
        "with its status (oom, timeout, error, skipped) and the sweep goes on. Ctrl-C stops "
        "after saving; --resume finishes only the missing cases.",
        epilog="examples:\n  harness run suites/quick.yaml\n"
        "  harness run suites/table1.yaml --out results/t1 --resume\n"
        "  harness run suites/lightconv.yaml --set sweep.seq_len=[256] --device cpu\n"
        "  harness run suites/gpu-scale.yaml --executor ray --ray-address auto\n"
        "  harness run suites/seeds.yaml --shard 2/8 --out results/seeds/2 --resume",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_suite_args(p)
    p.add_argument(
        "--out", metavar="DIR",
        help="output directory (default: results/<suite name>/<UTC timestamp>)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume", action="store_true",
        help="continue a run in --out (default: the newest run of this suite): only cases "
        "without a final row are measured",
    )
    mode.add_argument(
        "--force", action="store_true", help="replace the results already in --out"
    )
    p.add_argument(
        "--no-isolate", action="store_true",
        help="measure in this process (no per-case timeout; for debugging)",
    )
    p.add_argument(
        "--no-report", action="store_true",
        help="do not write report.html / report.pdf into the run folder at the end",
    )
    p.add_argument(
        "--shard", metavar="I/N",
        help="run only shard I of N (a deterministic share balanced by estimated cost, for "
        "job arrays); its default folder ends in shard-I-of-N; combine with 'harness merge'",
    )
    p.add_argument(
        "--executor", choices=("local", "ray"), default="local",
        help="local: one worker process on this machine (default); ray: every device of a "
        "Ray cluster at once (pip install -e \".[ray]\"; docs/scale-out.md)",
    )
    p.add_argument(
        "--ray-address", metavar="ADDR",
        help="with --executor ray: the cluster to join (e.g. 10.0.0.1:6379, or 'auto'); "
        "default: a local Ray instance on this machine",
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "doctor",
        help="check whether this machine is fit to time layers right now",
        description="Pre-flight checks before timing: other processes busy on this process's "
        "CPUs (sampled over 0.3 s), load average, CPU governor and turbo, clock, torch threads "
        "and OMP/MKL_NUM_THREADS; on CUDA also GPU clocks vs maximum, persistence mode, other "
        "processes on the GPU and temperature (via NVML). Each check is ok, warn or info with "
        "advice; what cannot be read is 'unknown'. Always exits 0 (2 only for bad arguments).",
        epilog="examples:\n  harness doctor\n  harness doctor --device cuda:1\n"
        "  harness doctor --device cpu --format json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--device", default="auto",
        help="device to check: cpu, cuda, cuda:N or auto (default: cuda if present, else cpu)",
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_cmd_doctor)

    from harness.merge_command import add_parser as add_merge_parser

    add_merge_parser(sub)

    from harness.report.command import add_parser as add_report_parser

    add_report_parser(sub)

    from harness.bench.command import add_compare_parser, add_history_parser

    add_compare_parser(sub)
    add_history_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_parser(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
