"""The one exception type for bad user input.

Anything a user can get wrong (a suite file, a CLI flag, an override, a results path) raises
``HarnessInputError``; the CLI prints ``str(error)`` - always a single line saying what is
wrong, where, and how to fix it - and exits with ``EXIT_CODE``. Bugs in the harness itself
stay ordinary exceptions, so they keep their tracebacks.
"""

from __future__ import annotations

#: The process exit status for bad input (DESIGN.md "Errors and faults").
EXIT_CODE = 2


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
