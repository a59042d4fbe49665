"""Measured complexity of sequence-mixing layers (Vaswani et al. 2017, Table 1; Wu et al. 2019)."""

__version__ = "0.1.0"
