"""The one exception type for bad user input, and the one place that turns it into an exit.

Anything a user can get wrong (a suite file, a CLI flag, an override, a results path) raises
``HarnessInputError``; :func:`run_parser` (the CLI and every ``python -m`` entry) prints
``str(error)`` - always a single line saying what is wrong, where, and how to fix it - and
exits with ``EXIT_CODE``. Bugs in the harness itself stay ordinary exceptions, so they keep
their tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

#: The process exit status for bad input.
EXIT_CODE = 2
EXIT_BROKEN_PIPE = 141  # stdout closed by the reader


class HarnessInputError(Exception):
    """Bad user input; ``str()`` is the one line shown to the user before exit code 2."""

    exit_code = EXIT_CODE

    def __init__(self, message: object) -> None:
        # Collapse any newline a caller let through: the contract is exactly one line.
        line = " ".join(str(message).split())
        super().__init__(line)

    @property
    def message(self) -> str:
        return str(self)


def writable_dir(path: Path, what: str, shown: Path | None = None) -> None:
    """Create the folder ``path`` and check that a file can be written in it; bad input (one
    line naming ``shown``, default ``path``) when not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise HarnessInputError(f"{shown or path}: cannot write {what} ({exc.strerror or exc}); "
                                "choose another with --out") from None


def run_parser(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse, run the chosen command, and turn bad input and a closed pipe into exit codes."""
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not in Python's exit-time flush
        return code
    except HarnessInputError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # the reader went away (`harness compare ... | head`): no traceback, and no second
        # error when Python flushes stdout at exit; 141 is what a shell reports for SIGPIPE
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
