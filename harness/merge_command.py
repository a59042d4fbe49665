"""``harness merge DIR... --out DIR``: the run folders of one suite's shards as one run.

A shard (``harness run --shard I/N``) writes a run folder like any other; merging copies their
per-case parts into one folder and rebuilds ``results.parquet`` and ``samples.parquet`` from
them, exactly as a run does at its end. It refuses, with one line, folders of different
suites (their ``suite.yaml`` differ) and a case found in two folders (a shard given twice,
or folders of two runs).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from harness.errors import HarnessInputError
from harness.results import RunDirectory


def _parts(folder: Path) -> list[Path]:
    parts = sorted((folder / "parts").glob("*.parquet"))
    if not parts:
        raise HarnessInputError(f"{folder}: no results of a harness run (no parts/*.parquet)")
    return parts


def _suite(folder: Path) -> str:
    path = folder / "suite.yaml"
    if not path.is_file():
        raise HarnessInputError(f"{folder}: no suite.yaml; not the folder of a harness run")
    return path.read_text()


def merge_runs(sources: list[Path], out: Path, *, force: bool = False) -> RunDirectory:
    """Copy the parts of ``sources`` into ``out`` and merge them; bad input (one line) for
    mismatched suites, duplicate cases, or an ``out`` that holds results (without force)."""
    if len({s.resolve() for s in sources}) != len(sources):
        raise HarnessInputError("merge: a folder is given twice")
    suite = _suite(sources[0])
    for folder in sources[1:]:
        if _suite(folder) != suite:
            raise HarnessInputError(
                f"{folder}: its suite.yaml differs from {sources[0]}'s; merge only the "
                "shards of one suite, run with the same settings")
    owner: dict[str, Path] = {}
    parts: list[Path] = []
    for folder in sources:
        for part in _parts(folder):
            if part.stem in owner:
                raise HarnessInputError(
                    f"case {part.stem} is in both {owner[part.stem]} and {folder}; merge each "
                    "shard once, and only shards of one run")
            owner[part.stem] = folder
            parts.append(part)
    if out.resolve() in {s.resolve() for s in sources}:
        raise HarnessInputError(f"--out {out}: is one of the folders to merge; choose another")
    run = RunDirectory(out)
    if (run.results_file.exists() or any(run.parts.glob("*.parquet"))) and not force:
        raise HarnessInputError(f"{out}: already holds results; use --force to replace them, "
                                "or another --out")
    run.create()
    for old in run.parts.glob("*.parquet"):
        old.unlink()
    for part in parts:
        tmp = run.parts / f".{part.name}.tmp-{os.getpid()}"
        shutil.copyfile(part, tmp)
        os.replace(tmp, run.parts / part.name)
    (out / "suite.yaml").write_text(suite)
    run.merge()
    return run


def _cmd_merge(args: argparse.Namespace) -> int:
    run = merge_runs([Path(p) for p in args.dirs], Path(args.out), force=args.force)
    count = len(list(run.parts.glob("*.parquet")))
    print(f"results: {run.results_file} ({count} cases from {len(args.dirs)} folders)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="combine the run folders of a suite's shards into one",
        description="Combine run folders written by `harness run --shard I/N` (one per job "
        "of an array) into one run folder with one results.parquet and samples.parquet. "
        "Refuses folders of different suites and a case found in two folders (exit 2).",
        epilog="example:\n  harness merge results/gpu-scale/shard-* --out results/gpu-scale/all\n"
        "  harness report results/gpu-scale/all",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run folders of the shards")
    p.add_argument("--out", required=True, metavar="DIR", help="the merged run folder")
    p.add_argument("--force", action="store_true", help="replace the results already in --out")
    p.set_defaults(func=_cmd_merge)
