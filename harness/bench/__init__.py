"""Benchmarks in CI: the pytest-benchmark plugin, regression verdicts and history.

* :mod:`harness.bench.plugin` - a pytest plugin (entry point ``pytest11``): the cases of a
  suite as pytest-benchmark benchmarks with FLOPs / memory / structure in ``extra_info``,
  and the ``layer_benchmark`` fixture for a user's own ``nn.Module``.
* :mod:`harness.bench.loaders` reads either side (results.parquet / run folder, benchmark
  JSON, or a folder of several runs); :mod:`harness.bench.stats` holds the bootstrap and the
  exact test over runs; :mod:`harness.bench.compare` turns them into per-case verdicts
  (``harness compare``), :mod:`harness.bench.render` into a table or a Markdown comment.
* :mod:`harness.bench.history` (``harness history DIR``): per-case trends and the first run
  of a step change (:mod:`harness.bench.steps`), plotted by :mod:`harness.bench.history_html`.
* :mod:`harness.bench.command`: the two subcommands' parsers; :mod:`harness.bench.verdict_check`
  measures how often the verdict is wrong (A/A and A/B repetitions).

Nothing here imports torch at module level: the plugin is loaded by every pytest session of
a project that installs the harness, and compare / history read files only.
"""
