"""Measured complexity of sequence-mixing layers (Vaswani et al. 2017, Table 1; Wu et al. 2019).

What a layer author needs (docs/extending.md); none of it imports torch:
``from harness import Cost, LayerCase, LayerEntry, StepCost, Theory, register``.
"""

__version__ = "0.1.0"

from harness.costs import Cost, StepCost
from harness.registry import LayerEntry, register
from harness.spec import LayerCase
from harness.theory import Theory

__all__ = ["Cost", "LayerCase", "LayerEntry", "StepCost", "Theory", "__version__", "register"]
