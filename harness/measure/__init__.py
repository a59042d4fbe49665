"""Measurement primitives: wall time (``timing``, ``contention``), peak memory (``memory``),
structure - path length and sequential ops (``structure``), the device's peak rates
(``peak_rates``), the environment record and the machine's state (``env``, ``system``,
``telemetry``).

Measurement returns data (frozen results with ``as_row()`` columns) and never renders or
plots; harness.measure_case turns them into result rows. The package re-exports nothing:
importing one module (``system`` for ``harness doctor``) does not import torch through the
others.
"""
