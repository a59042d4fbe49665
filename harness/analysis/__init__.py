"""Complexity analysis: pure functions over the results dataframe (no torch needed).

Every function takes the dataframe ``harness.results.read_results`` returns (one row per
case; parameters, ``status``, metrics, ``env_*``) and returns a new dataframe (or, for
:func:`headlines`, a list of sentences). Rows whose status is not "ok" are never fitted but
are counted. Reports build on this API; it imports only numpy and pandas (and
harness.results), so a report can be rebuilt on a machine without torch.

* :func:`tidy` - the long view for seaborn, with a ``family`` column.
* :func:`fit_exponents` - log-log slopes with 95% intervals, model and theory exponents.
* :func:`crossovers` - where one layer's curve passes another's along an axis.
* :func:`table1_measured` - Vaswani et al. Table 1, measured, with verdicts and reasons.
* :func:`flop_reconciliation` - analytic vs fvcore vs torch FLOPs, executed vs useful.
* :func:`efficiency`, :func:`memory_frontier`, :func:`memory_curve` - roofline, OOM edge.
* :func:`headlines` - summary sentences generated from the numbers.
* :func:`layer_infos` - each layer's family and theory, read from the rows (the
  measurement writes them; harness.theory) or, for older files, the registry.
* ``stats`` - ``t_quantile``, ``fit_loglog``, ``growth_class``.
"""

from harness.analysis.crossovers import crossovers
from harness.analysis.efficiency import efficiency, memory_curve, memory_frontier
from harness.analysis.exponents import fit_exponents
from harness.analysis.flops import flop_reconciliation
from harness.analysis.frame import tidy
from harness.analysis.headlines import headlines
from harness.analysis.layers import LayerInfo, layer_infos
from harness.analysis.stats import fit_loglog, growth_class, t_quantile
from harness.analysis.table1 import EXPONENT_TOL, exponent_verdict, table1_measured

__all__ = [
    "EXPONENT_TOL",
    "LayerInfo",
    "crossovers",
    "efficiency",
    "exponent_verdict",
    "fit_exponents",
    "fit_loglog",
    "flop_reconciliation",
    "growth_class",
    "headlines",
    "layer_infos",
    "memory_curve",
    "memory_frontier",
    "t_quantile",
    "table1_measured",
    "tidy",
]
