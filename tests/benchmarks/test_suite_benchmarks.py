"""The cases of a suite (default suites/quick.yaml) as pytest-benchmark benchmarks.

    pytest --benchmark-only                                   # the quick suite
    pytest --benchmark-only --harness-suite suites/table1.yaml --benchmark-json=out.json
    pytest --benchmark-only --benchmark-group-by=param:seq_len

The ``harness_case`` fixture (plugin ``harness.bench.plugin``) parametrizes this test with
one case per id (``test_layer[lstm-fused-n64-d64]``). FLOPs, memory, parameter count, path
length and sequential ops land in each benchmark's ``extra_info``. A plain ``pytest`` skips
these tests, so the project's test command stays fast.

``pytest_plugins`` loads the plugin for this module when no installed ``pytest11`` entry
point does (a fresh clone without ``pip install -e .``); the command-line options
``--harness-suite`` / ``--harness-passes`` need the entry point (or ``-p harness.bench.plugin``).
"""

import os
from importlib.metadata import entry_points


def _plugin_installed() -> bool:
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(ep.value.split(":")[0] == "harness.bench.plugin"
               for ep in entry_points(group="pytest11"))


pytest_plugins = [] if _plugin_installed() else ["harness.bench.plugin"]


def test_layer(benchmark, harness_case):
    harness_case.run(benchmark)
