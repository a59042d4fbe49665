"""Reports from results: one self-contained HTML file and a PDF, from the dataframe only.

``write_report(results, out_dir, formats)`` writes ``report.html`` / ``report.pdf``;
``add_parser(subparsers)`` registers ``harness report``. A report reads only results files
(no torch, no GPU needed) and computes every number with :mod:`harness.analysis`.

Modules: ``inputs`` (results -> one frame with a ``run`` column), ``build`` and the
``sec_*`` modules (the content, once, as :mod:`~harness.report.model` blocks;
``sec_overview`` is the first screen, ``sec_compare`` runs side by side), ``charts``
and ``charts_sections`` (every figure: an interactive Vega-Lite spec, data inlined) and
``vega`` (the inlined bundle, static renders for the PDF), ``style`` (fixed colours, the
PDF's matplotlib style), ``html`` and
``pdf`` (the renderers), ``fmt`` (numbers and units), ``command`` (the CLI).
"""

from harness.report.command import add_parser, default_out_dir, parse_formats, write_report

__all__ = ["add_parser", "default_out_dir", "parse_formats", "write_report"]
