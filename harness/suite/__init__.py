"""Declarative suites: YAML -> validated, frozen ``Suite`` -> list of ``PlannedCase``.

    suite = load_suite("suites/quick.yaml", overrides=["sweep.seq_len=[64]", "device=cpu"])
    planned = expand(suite)
    print(summarize(planned))

Every problem with the user's input - file, YAML, keys, values, overrides, devices - is a
``HarnessInputError`` whose message is one line: ``<file>: <key path>: <bad value> <rule>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness import registry
from harness.errors import HarnessInputError
from harness.suite.check import check_suite
from harness.suite.messages import translate
from harness.suite.model import AXES, DTYPES, MODES, LayerSpec, LayerSweep, Measure, Suite, Sweep
from harness.suite.plan import CASE_ID_VERSION, PlannedCase, expand, summarize
from harness.suite.source import apply_overrides, read_suite_file

__all__ = [
    "AXES",
    "CASE_ID_VERSION",
    "DTYPES",
    "MODES",
    "HarnessInputError",
    "LayerSpec",
    "LayerSweep",
    "Measure",
    "PlannedCase",
    "Suite",
    "Sweep",
    "expand",
    "load_suite",
    "parse_suite",
    "summarize",
]


def load_suite(
    path: str | Path, overrides: Iterable[str] = (), *, check_device: bool = True
) -> Suite:
    """Read, override and validate the suite at ``path``.

    ``overrides`` are ``KEY=VALUE`` strings (``sweep.seq_len=[128,256]``, ``device=cpu``,
    ``layers[0].variants=all``); each VALUE is parsed as YAML and set before validation.
    ``check_device=False`` skips "is CUDA here?" so a GPU suite can be validated on a laptop.
    The suite's ``name`` defaults to the file's stem.
    """
    data = read_suite_file(path)
    return parse_suite(
        data, source=str(path), overrides=overrides, check_device=check_device,
        default_name=Path(path).stem,
    )


def parse_suite(
    data: Any,
    source: str = "<suite>",
    overrides: Iterable[str] = (),
    *,
    check_device: bool = True,
    default_name: str | None = None,
) -> Suite:
    """Validate plain data (a parsed YAML mapping) as a suite; ``source`` names it in errors."""
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"the value {data!r}"
        raise HarnessInputError(
            f"{source}: the top level must be a mapping of keys (name, layers, sweep, ...), "
            f"not {kind}"
        )
    data, notes = apply_overrides(data, tuple(overrides))
    if default_name is not None and "name" not in data:
        data = {"name": default_name, **data}
    if data.get("layers") == "all":
        data = {**data, "layers": registry.names()}
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise HarnessInputError(translate(exc, source, data, notes)) from None
    suite._source = source
    check_suite(suite, data, notes, check_device=check_device)
    return suite
