"""Benchmarks in CI: the pytest-benchmark plugin, regression verdicts and history.

* :mod:`harness.bench.plugin` - a pytest plugin (entry point ``pytest11``): the cases of a
  suite as pytest-benchmark benchmarks with FLOPs / memory / structure in ``extra_info``,
  and the ``layer_benchmark`` fixture for a user's own ``nn.Module``.
* :mod:`harness.bench.compare` - ``harness compare BASELINE CANDIDATE``: per-case verdicts
  that separate a real slowdown from the noise of a shared runner.
* :mod:`harness.bench.history` - ``harness history DIR``: per-case trends and the first run
  of a step change.

Nothing here imports torch at module level: the plugin is loaded by every pytest session of
a project that installs the harness, and compare / history read files only.
"""
