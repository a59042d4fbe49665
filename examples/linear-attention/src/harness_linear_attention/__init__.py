"""Linear attention for the sequence-layer harness: installs the layer ``linear_attention``.

The harness finds it through the entry point in pyproject.toml (group ``harness.layers``),
which names this package: its ``LAYERS`` are registered beside the built-in layers.
"""

from harness_linear_attention.layer import (
    LAYERS,
    LinearAttention,
    ParallelLinearAttention,
    RecurrentLinearAttention,
    feature_map,
    linear_attention_cost,
)

__all__ = ["LAYERS", "LinearAttention", "ParallelLinearAttention", "RecurrentLinearAttention",
           "feature_map", "linear_attention_cost"]
