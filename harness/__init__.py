"""Measured complexity of sequence-mixing layers (Vaswani et al. 2017, Table 1; Wu et al. 2019).

The names a layer author needs (docs/extending.md)::

    from harness import Cost, LayerCase, LayerEntry, Theory, register, stacked_path_length

They are imported on first use, so ``import harness.analysis`` stays light (no torch).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_PUBLIC = {
    "Cost": "harness.costs",
    "LayerCase": "harness.spec",
    "LayerEntry": "harness.registry",
    "Theory": "harness.theory",
    "register": "harness.registry",
    "stacked_path_length": "harness.layers.pathlen",
}

__all__ = ["Cost", "LayerCase", "LayerEntry", "Theory", "__version__", "register",
           "stacked_path_length"]

if TYPE_CHECKING:
    from harness.costs import Cost
    from harness.layers.pathlen import stacked_path_length
    from harness.registry import LayerEntry, register
    from harness.spec import LayerCase
    from harness.theory import Theory


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
