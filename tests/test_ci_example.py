"""The CI example and the README repeat the protocol that verdict_check verified.

The verdict's numbers in docs/ci.md hold for one protocol (sessions a side, passes, time per
pass, timer, threads, malloc thresholds): the workflow and the README's loop must time the
candidate the same way, or their verdicts inherit none of that evidence.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from harness.bench.compare import MIN_RUNS
from harness.bench.verdict_check import FIXED_MALLOC, build_parser

WORKFLOW = REPO / ".github" / "workflows" / "bench.yml"
README = REPO / "README.md"


def _options(script: str) -> dict[str, str]:
    """``--name value`` / ``--name=value`` pairs of the pytest command in a shell script."""
    words = shlex.split(script.replace("\\\n", " "), comments=True)
    if "pytest" not in words:
        raise ValueError(f"no pytest command in {script!r}")
    rest = words[words.index("pytest") + 1:]
    options: dict[str, str] = {}
    for index, word in enumerate(rest):
        if not word.startswith("--"):
            continue
        name, eq, value = word.partition("=")
        if eq:
            options[name] = value
        elif index + 1 < len(rest) and not rest[index + 1].startswith("-"):
            options[name] = rest[index + 1]
        else:
            options[name] = ""
    return options


def _assert_times_like(options: dict[str, str], protocol) -> None:
    """Passes, time per pass and timer of a pytest command are verdict_check's defaults."""
    assert options["--harness-passes"] == str(protocol.passes)
    assert float(options["--benchmark-max-time"]) == protocol.max_time
    assert options["--benchmark-timer"] == protocol.timer


@pytest.fixture(scope="module")
def protocol():
    return build_parser().parse_args([])


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _timing_step(workflow: dict) -> dict:
    steps = workflow["jobs"]["bench"]["steps"]
    found = [s for s in steps if "--benchmark-only" in s.get("run", "")]
    if len(found) != 1:
        raise ValueError(f"expected one timing step in {WORKFLOW}, found {len(found)}")
    return found[0]


def test_workflow_times_as_many_sessions_as_were_verified(workflow, protocol) -> None:
    runs = int(workflow["env"]["RUNS"])
    assert runs == protocol.runs
    assert runs >= MIN_RUNS  # fewer and compare falls back to passes, with a warning
    assert 'seq 1 "$RUNS"' in _timing_step(workflow)["run"]


def test_workflow_environment_matches_the_protocol(workflow, protocol) -> None:
    env = {k: str(v) for k, v in workflow["env"].items()}
    assert env["OMP_NUM_THREADS"] == str(protocol.threads)
    for name, value in FIXED_MALLOC.items():
        assert env[name] == value
    assert protocol.fixed_malloc


def test_workflow_pytest_options_match_the_protocol(workflow, protocol) -> None:
    options = _options(_timing_step(workflow)["run"])
    _assert_times_like(options, protocol)
    assert Path(options["--harness-suite"]).name == Path(protocol.suite).name


def test_readme_loop_matches_the_protocol(protocol) -> None:
    text = README.read_text()
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "for i in" in b]
    if len(blocks) != 1:
        raise ValueError(f"expected one benchmark loop in the README, found {len(blocks)}")
    block = blocks[0]
    loop = re.search(r"for i in \$\(seq 1 (\d+)\)", block)
    assert loop is not None and int(loop.group(1)) == protocol.runs
    assert f"OMP_NUM_THREADS={protocol.threads}" in block
    for name, value in FIXED_MALLOC.items():
        assert f"{name}={value}" in block
    _assert_times_like(_options(block.split("; do", 1)[1]), protocol)
